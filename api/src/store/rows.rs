//! What the stores answer — each a row of the SQL stores as well (`sqlx::FromRow`, by
//! column name, for SQLite and MySQL alike). Minutes are merged into wider buckets by the
//! store's own query (`sql.rs`).

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

/// One point of a space's or an org's series (SPEC §11): a `space_metric_rollup` /
/// `org_metric_rollup` row, or minutes merged into a bucket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, sqlx::FromRow)]
pub struct GroupPoint {
    /// The bucket's start, epoch seconds.
    #[sqlx(rename = "minute")]
    pub time: i64,
    /// App rollup rows the group has in a minute (the most of the bucket's minutes).
    pub apps: i64,
    pub instances: i64,
    pub requests: i64,
    pub status_2xx: i64,
    pub status_3xx: i64,
    pub status_4xx: i64,
    pub status_5xx: i64,
    pub log_lines: i64,
    pub log_err_lines: i64,
    pub app_events: i64,
    /// Σ CPU % (100 = a core) over the group's app instances; `None` without container metrics.
    pub cpu_total: Option<f64>,
    pub memory_bytes_total: Option<f64>,
    pub disk_bytes_total: Option<f64>,
    /// See [`MetricPoint::is_final`].
    #[serde(rename = "final")]
    #[sqlx(skip)]
    pub is_final: bool,
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
