//! What the stores answer — each a row of the SQL stores as well (`sqlx::FromRow`, by
//! column name, for SQLite and MySQL alike) — and merging minutes into wider buckets.

use serde::Serialize;
use sluice_model::records::AppRollup;

/// An app and its latest rollup minute.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct AppActivity {
    #[sqlx(rename = "app_id")]
    pub id: String,
    /// Epoch seconds of its newest `app_metric_rollup` minute.
    pub last_activity: i64,
    /// Its name, space and org from the `app` table (SPEC §11), when the directory knows it.
    pub name: Option<String>,
    pub space_id: Option<String>,
    pub space_name: Option<String>,
    pub org_id: Option<String>,
    pub org_name: Option<String>,
}

/// One point of a metrics series: a rollup row, or minutes merged into a bucket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, sqlx::FromRow)]
pub struct MetricPoint {
    /// The bucket's start, epoch seconds.
    #[sqlx(rename = "minute")]
    pub time: i64,
    pub instances: i64,
    pub cpu_avg: Option<f64>,
    pub cpu_max: Option<f64>,
    pub memory_avg: Option<f64>,
    pub memory_max: Option<i64>,
    pub disk_avg: Option<f64>,
    pub disk_max: Option<i64>,
    pub requests: i64,
    pub status_2xx: i64,
    pub status_3xx: i64,
    pub status_4xx: i64,
    pub status_5xx: i64,
    pub response_bytes: i64,
    pub latency_avg_ms: Option<f64>,
    pub latency_max_ms: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub log_lines: i64,
    pub log_err_lines: i64,
    pub app_events: i64,
    /// Whether the window is closed (its row will not change again). Not a column: the
    /// store decides it from the time.
    #[serde(rename = "final")]
    #[sqlx(skip)]
    pub is_final: bool,
}

impl From<&AppRollup> for MetricPoint {
    /// A row as the graph emits it, before any store: what the live stream sends.
    fn from(row: &AppRollup) -> MetricPoint {
        // Counts beyond i64 would take longer than the universe has to accumulate.
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        MetricPoint {
            time: row.minute,
            instances: i64::from(row.instances),
            cpu_avg: row.cpu_avg,
            cpu_max: row.cpu_max,
            memory_avg: row.memory_avg,
            memory_max: row.memory_max.map(count),
            disk_avg: row.disk_avg,
            disk_max: row.disk_max.map(count),
            requests: count(row.requests),
            status_2xx: count(row.status_2xx),
            status_3xx: count(row.status_3xx),
            status_4xx: count(row.status_4xx),
            status_5xx: count(row.status_5xx),
            response_bytes: row.response_bytes,
            latency_avg_ms: row.latency_avg_ms,
            latency_max_ms: row.latency_max_ms,
            latency_p50_ms: row.latency_p50_ms,
            latency_p95_ms: row.latency_p95_ms,
            latency_p99_ms: row.latency_p99_ms,
            log_lines: count(row.log_lines),
            log_err_lines: count(row.log_err_lines),
            app_events: count(row.app_events),
            is_final: row.is_final,
        }
    }
}

/// One `app_event` row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct AppEventRow {
    #[sqlx(rename = "ts")]
    pub time_ns: i64,
    pub event: String,
    pub source_type: String,
    pub source_instance: String,
    pub message: String,
}

/// One log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct LogLine {
    pub id: String,
    #[sqlx(rename = "ts")]
    pub time_ns: i64,
    pub source_type: String,
    pub source_instance: String,
    pub message_type: String,
    pub message: String,
}

/// A page of log lines and where the next one starts (`None`: this was the last).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogPage {
    pub logs: Vec<LogLine>,
    pub next_cursor: Option<String>,
}

/// Minute rows (ascending) merged into buckets of `step` seconds aligned to the epoch (as the
/// window tables are): counts summed; `latency_avg_ms` weighted by requests; the other
/// averages the mean of the minutes that have one (the tables keep no sample counts);
/// maxima, percentiles and `instances` the maximum over the minutes (a percentile of the
/// bucket is at most that, the only bound the minute rows give).
pub(super) fn merge(minutes: Vec<MetricPoint>, step: i64) -> Vec<MetricPoint> {
    let mut buckets: Vec<Bucket> = Vec::new();
    for row in minutes {
        let time = row.time - row.time.rem_euclid(step);
        match buckets.last_mut() {
            Some(bucket) if bucket.point.time == time => bucket.add(&row),
            _ => buckets.push(Bucket::new(time, row)),
        }
    }
    buckets.into_iter().map(Bucket::finish).collect()
}

/// Sums and counts of the averages while a bucket fills.
struct Bucket {
    point: MetricPoint,
    cpu: Mean,
    memory: Mean,
    disk: Mean,
    /// Σ latency_avg × requests over minutes with requests, and Σ requests of those.
    latency: (f64, i64),
}

#[derive(Default)]
struct Mean(f64, u32);

impl Mean {
    fn add(&mut self, value: Option<f64>) {
        if let Some(v) = value {
            self.0 += v;
            self.1 += 1;
        }
    }

    fn get(&self) -> Option<f64> {
        (self.1 > 0).then(|| self.0 / f64::from(self.1))
    }
}

fn max_f(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn max_i(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    a.max(b)
}

impl Bucket {
    fn new(time: i64, first: MetricPoint) -> Bucket {
        let mut bucket = Bucket {
            point: MetricPoint {
                time,
                ..MetricPoint::default()
            },
            cpu: Mean::default(),
            memory: Mean::default(),
            disk: Mean::default(),
            latency: (0.0, 0),
        };
        bucket.add(&first);
        bucket
    }

    fn add(&mut self, row: &MetricPoint) {
        let p = &mut self.point;
        p.instances = p.instances.max(row.instances);
        self.cpu.add(row.cpu_avg);
        p.cpu_max = max_f(p.cpu_max, row.cpu_max);
        self.memory.add(row.memory_avg);
        p.memory_max = max_i(p.memory_max, row.memory_max);
        self.disk.add(row.disk_avg);
        p.disk_max = max_i(p.disk_max, row.disk_max);
        p.requests += row.requests;
        p.status_2xx += row.status_2xx;
        p.status_3xx += row.status_3xx;
        p.status_4xx += row.status_4xx;
        p.status_5xx += row.status_5xx;
        p.response_bytes += row.response_bytes;
        if let Some(avg) = row.latency_avg_ms
            && row.requests > 0
        {
            self.latency.0 += avg * row.requests as f64;
            self.latency.1 += row.requests;
        }
        p.latency_max_ms = max_f(p.latency_max_ms, row.latency_max_ms);
        p.latency_p50_ms = max_f(p.latency_p50_ms, row.latency_p50_ms);
        p.latency_p95_ms = max_f(p.latency_p95_ms, row.latency_p95_ms);
        p.latency_p99_ms = max_f(p.latency_p99_ms, row.latency_p99_ms);
        p.log_lines += row.log_lines;
        p.log_err_lines += row.log_err_lines;
        p.app_events += row.app_events;
    }

    fn finish(mut self) -> MetricPoint {
        self.point.cpu_avg = self.cpu.get();
        self.point.memory_avg = self.memory.get();
        self.point.disk_avg = self.disk.get();
        self.point.latency_avg_ms =
            (self.latency.1 > 0).then(|| self.latency.0 / self.latency.1 as f64);
        self.point
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minute(time: i64, requests: i64, latency_avg: Option<f64>, cpu: Option<f64>) -> MetricPoint {
        let mut bucket = Bucket::new(time, empty(time));
        bucket.point.requests = requests;
        bucket.point.status_2xx = requests;
        bucket.point.latency_avg_ms = latency_avg;
        bucket.point.latency_p99_ms = latency_avg.map(|l| l * 2.0);
        bucket.point.cpu_avg = cpu;
        bucket.point.cpu_max = cpu;
        bucket.point.memory_max = cpu.map(|c| c as i64);
        bucket.point.log_lines = 1;
        bucket.point
    }

    fn empty(time: i64) -> MetricPoint {
        MetricPoint {
            time,
            instances: 1,
            ..MetricPoint::default()
        }
    }

    #[test]
    fn minutes_merge_into_epoch_aligned_buckets() {
        let merged = merge(
            vec![
                minute(240, 1, Some(10.0), None),
                minute(300, 3, Some(2.0), Some(10.0)),
                minute(360, 0, None, Some(30.0)),
                minute(540, 1, Some(4.0), None),
                minute(600, 2, Some(1.0), Some(5.0)),
            ],
            300,
        );
        let times: Vec<i64> = merged.iter().map(|p| p.time).collect();
        assert_eq!(times, vec![0, 300, 600]);
        let b = &merged[1];
        assert_eq!(b.requests, 4);
        assert_eq!(b.status_2xx, 4);
        assert_eq!(b.log_lines, 3);
        // (3 × 2 + 1 × 4) / 4 requests.
        assert_eq!(b.latency_avg_ms, Some(2.5));
        assert_eq!(b.latency_p99_ms, Some(8.0));
        // The mean of the minutes that had container metrics.
        assert_eq!(b.cpu_avg, Some(20.0));
        assert_eq!(b.cpu_max, Some(30.0));
        assert_eq!(b.memory_max, Some(30));
        assert_eq!(merged[0].cpu_avg, None);
        assert_eq!(merged[0].latency_avg_ms, Some(10.0));
    }
}
