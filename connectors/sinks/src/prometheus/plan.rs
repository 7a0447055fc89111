//! A flush's rows as remote-write requests, in an order the receiver accepts.
//!
//! Prometheus takes a series' samples only in time order (an older one is "out of order", a
//! different value at the same time a "duplicate", and either refuses the whole request), and
//! a request it stored but whose answer was lost must be safe to send again. So:
//! - rows go to one of `concurrency` lanes by their key (app and width; platform series and
//!   width), each lane sending its requests one after the other: a series lives in one lane,
//!   and its samples leave in the order the rows came;
//! - within a lane, rows are sent in rounds: a key's first row in this flush in round 0, its
//!   second in round 1, … so a request holds at most one sample per series. Sending such a
//!   request again after it was stored repeats each series' newest sample with the same value,
//!   which Prometheus accepts silently: resends are idempotent;
//! - a newer version of a window (same key and start) supersedes an older one in the same
//!   flush: only the last is sent;
//! - a round is cut into requests of at most `batch_size` samples, never splitting a row.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hash};

use bytes::Bytes;
use rustc_hash::{FxBuildHasher, FxHashMap};
use sluice_model::records::{AppRollup, PlatformRollup};

use super::proto::{self, TimeSeries, WriteRequest};
use super::series::{self, Names};

/// One row of either rollup stream.
#[derive(Clone, Copy, Debug)]
pub(super) enum Row<'a> {
    App(&'a AppRollup),
    Platform(&'a PlatformRollup),
}

/// What identifies a row's series (without the window start) and its window.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Key<'a> {
    App(&'a str, u32),
    Platform(&'a str, &'a str, &'a str, &'a str, u32),
}

impl<'a> Row<'a> {
    fn key(self) -> Key<'a> {
        match self {
            Row::App(r) => Key::App(&r.app_id, r.window),
            Row::Platform(r) => Key::Platform(&r.origin, &r.job, &r.instance, &r.name, r.window),
        }
    }

    fn start(self) -> i64 {
        match self {
            Row::App(r) => r.minute,
            Row::Platform(r) => r.minute,
        }
    }

    fn samples(self) -> usize {
        match self {
            Row::App(r) => series::app_samples(r),
            Row::Platform(r) => series::platform_samples(r),
        }
    }

    fn push_series(self, names: &Names, out: &mut Vec<TimeSeries>) {
        match self {
            Row::App(r) => series::app_series(r, names, out),
            Row::Platform(r) => series::platform_series(r, names, out),
        }
    }
}

/// One remote-write request, ready to send.
#[derive(Clone, Debug)]
pub(super) struct Request {
    /// The Snappy-compressed `WriteRequest`.
    pub(super) body: Bytes,
    pub(super) samples: usize,
    /// Rows it carries, by stream.
    pub(super) app_rows: usize,
    pub(super) platform_rows: usize,
}

impl Request {
    pub(super) fn rows(&self) -> usize {
        self.app_rows + self.platform_rows
    }
}

/// The requests of a flush, per lane in sending order; and how many rows were superseded by
/// a newer version of their window in the same flush, per stream (app, platform).
pub(super) struct Plan {
    pub(super) lanes: Vec<VecDeque<Request>>,
    pub(super) superseded: (usize, usize),
}

pub(super) fn plan(rows: &[Row<'_>], lanes: usize, batch_size: usize, names: &Names) -> Plan {
    let lanes = lanes.max(1);
    // The last version of each window wins.
    let mut latest: FxHashMap<(Key<'_>, i64), usize> = FxHashMap::default();
    for (i, row) in rows.iter().enumerate() {
        latest.insert((row.key(), row.start()), i);
    }
    let mut superseded = (0, 0);
    // rounds[lane][round] = rows, in arrival order.
    let mut rounds: Vec<Vec<Vec<Row<'_>>>> = vec![Vec::new(); lanes];
    let mut seen: FxHashMap<Key<'_>, usize> = FxHashMap::default();
    let hasher = FxBuildHasher;
    for (i, row) in rows.iter().enumerate() {
        let key = row.key();
        if latest.get(&(key, row.start())) != Some(&i) {
            match row {
                Row::App(_) => superseded.0 += 1,
                Row::Platform(_) => superseded.1 += 1,
            }
            continue;
        }
        let lane = (hasher.hash_one(key) % lanes as u64) as usize;
        let round = seen.entry(key).or_insert(0);
        let lane_rounds = &mut rounds[lane];
        if lane_rounds.len() <= *round {
            lane_rounds.resize_with(*round + 1, Vec::new);
        }
        lane_rounds[*round].push(*row);
        *round += 1;
    }

    let mut snappy = snap::raw::Encoder::new();
    let lanes = rounds
        .into_iter()
        .map(|lane_rounds| {
            let mut requests = VecDeque::new();
            for round in lane_rounds {
                let mut request = Builder::default();
                for row in round {
                    let samples = row.samples();
                    if request.rows > 0 && request.samples + samples > batch_size {
                        requests.push_back(request.finish(&mut snappy));
                        request = Builder::default();
                    }
                    request.add(row, samples, names);
                }
                if request.rows > 0 {
                    requests.push_back(request.finish(&mut snappy));
                }
            }
            requests
        })
        .collect();
    Plan { lanes, superseded }
}

#[derive(Default)]
struct Builder {
    timeseries: Vec<TimeSeries>,
    samples: usize,
    rows: usize,
    app_rows: usize,
}

impl Builder {
    fn add(&mut self, row: Row<'_>, samples: usize, names: &Names) {
        row.push_series(names, &mut self.timeseries);
        self.samples += samples;
        self.rows += 1;
        self.app_rows += usize::from(matches!(row, Row::App(_)));
    }

    fn finish(self, snappy: &mut snap::raw::Encoder) -> Request {
        let request = WriteRequest {
            timeseries: self.timeseries,
        };
        Request {
            body: proto::encode(&request, snappy),
            samples: self.samples,
            app_rows: self.app_rows,
            platform_rows: self.rows - self.app_rows,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use sluice_model::Str;
    use sluice_model::records::MetricKind;

    use super::*;

    fn app(id: &str, minute: i64, requests: u64) -> AppRollup {
        AppRollup {
            names: None,
            app_id: Str::from(id),
            minute,
            window: 60,
            instances: 0,
            cpu_avg: None,
            cpu_max: None,
            memory_avg: None,
            memory_max: None,
            disk_avg: None,
            disk_max: None,
            requests,
            status_2xx: 0,
            status_3xx: 0,
            status_4xx: 0,
            status_5xx: 0,
            response_bytes: 0,
            latency_avg_ms: None,
            latency_max_ms: None,
            latency_p50_ms: None,
            latency_p95_ms: None,
            latency_p99_ms: None,
            log_lines: 0,
            log_err_lines: 0,
            app_events: 0,
            is_final: true,
        }
    }

    fn counter(name: &str, minute: i64) -> PlatformRollup {
        PlatformRollup {
            origin: Str::from("doppler"),
            job: Str::from("doppler"),
            instance: Str::from("0"),
            name: Str::from(name),
            minute,
            window: 60,
            kind: MetricKind::Counter,
            unit: Str::new(),
            samples: 1,
            value_avg: None,
            value_min: None,
            value_max: None,
            value_last: None,
            delta_sum: Some(1),
            total_last: Some(2),
            is_final: true,
        }
    }

    /// Each request's `requests` samples as `app@minute=value`, per lane.
    fn requests_of(plan: &Plan) -> Vec<Vec<Vec<String>>> {
        plan.lanes
            .iter()
            .map(|lane| {
                lane.iter()
                    .map(|request| {
                        let decoded = proto::decode(&request.body).expect("decodes");
                        assert_eq!(
                            decoded
                                .timeseries
                                .iter()
                                .map(|s| s.samples.len())
                                .sum::<usize>(),
                            request.samples
                        );
                        decoded
                            .timeseries
                            .iter()
                            .filter(|s| s.label("__name__") == Some("sluice_app_requests"))
                            .map(|s| {
                                format!(
                                    "{}@{}={}",
                                    s.label("app_id").unwrap_or(""),
                                    s.samples[0].timestamp / 1000,
                                    s.samples[0].value
                                )
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_request_holds_one_sample_per_series_and_a_series_stays_in_order_in_one_lane() {
        let names = Names::new("sluice_");
        let rows = [
            app("a", 60, 1),
            app("b", 60, 2),
            app("a", 120, 3),
            app("a", 180, 4),
            app("b", 120, 5),
        ];
        let rows: Vec<Row<'_>> = rows.iter().map(Row::App).collect();
        let one_lane = plan(&rows, 1, 1000, &names);
        assert_eq!(
            requests_of(&one_lane),
            [[
                vec!["a@60=1", "b@60=2"],
                vec!["a@120=3", "b@120=5"],
                vec!["a@180=4"]
            ]]
        );
        assert_eq!(one_lane.superseded, (0, 0));

        // With lanes, every series' samples are in one lane, in time order.
        let many = plan(&rows, 4, 1000, &names);
        let mut lane_of: BTreeMap<String, usize> = BTreeMap::new();
        for (lane, requests) in requests_of(&many).iter().enumerate() {
            let mut last: BTreeMap<String, i64> = BTreeMap::new();
            for sample in requests.iter().flatten() {
                let (app, rest) = sample.split_once('@').expect("app@minute");
                let minute: i64 = rest
                    .split('=')
                    .next()
                    .and_then(|m| m.parse().ok())
                    .expect("minute");
                assert_eq!(*lane_of.entry(app.to_owned()).or_insert(lane), lane);
                let before = last.insert(app.to_owned(), minute);
                assert!(
                    before.is_none_or(|b| b < minute),
                    "{sample} after {before:?}"
                );
            }
        }
        let total: usize = many.lanes.iter().flatten().map(Request::rows).sum();
        assert_eq!(total, 5);
    }

    #[test]
    fn requests_are_cut_at_batch_size_samples_without_splitting_rows() {
        let names = Names::new("sluice_");
        // 10 samples per app row (no optional columns), 3 per counter row.
        let apps: Vec<AppRollup> = (0..5).map(|i| app(&format!("app{i}"), 60, i)).collect();
        let counters: Vec<PlatformRollup> = (0..2).map(|i| counter(&format!("c{i}"), 60)).collect();
        let mut rows: Vec<Row<'_>> = apps.iter().map(Row::App).collect();
        rows.extend(counters.iter().map(Row::Platform));
        let planned = plan(&rows, 1, 25, &names);
        let sizes: Vec<(usize, usize, usize)> = planned.lanes[0]
            .iter()
            .map(|r| (r.samples, r.app_rows, r.platform_rows))
            .collect();
        assert_eq!(sizes, [(20, 2, 0), (20, 2, 0), (16, 1, 2)]);
        // A row larger than the batch still goes, alone.
        let planned = plan(&rows[..2], 1, 4, &names);
        assert_eq!(
            planned.lanes[0]
                .iter()
                .map(|r| r.samples)
                .collect::<Vec<_>>(),
            [10, 10]
        );
    }

    #[test]
    fn a_newer_version_of_a_window_supersedes_the_older_in_the_same_flush() {
        let names = Names::new("sluice_");
        let mut provisional = app("a", 60, 1);
        provisional.is_final = false;
        let rows = [provisional, app("a", 60, 7), app("a", 120, 2)];
        let mut platform = counter("c", 60);
        let mut newer = counter("c", 60);
        newer.delta_sum = Some(5);
        platform.is_final = false;
        let platform_rows = [platform, newer];
        let mut rows: Vec<Row<'_>> = rows.iter().map(Row::App).collect();
        rows.extend(platform_rows.iter().map(Row::Platform));
        let planned = plan(&rows, 1, 1000, &names);
        assert_eq!(planned.superseded, (1, 1));
        assert_eq!(requests_of(&planned), [[vec!["a@60=7"], vec!["a@120=2"]]]);
        let decoded = proto::decode(&planned.lanes[0][0].body).expect("decodes");
        let delta = decoded
            .timeseries
            .iter()
            .find(|s| s.label("__name__") == Some("sluice_platform_counter_delta"))
            .expect("the counter's delta");
        assert_eq!(delta.samples[0].value, 5.0);
    }
}
