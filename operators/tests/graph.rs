//! The whole graph on timely workers: windows close on the frontier, late records stay out of
//! rollups but reach raw streams, and any number of workers gives the same rows.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use sluice_model::event::{
    ContainerMetric, CounterEvent, Header, HttpStartStop, LogMessage, MessageType, Method,
    PeerType, ValueMetric,
};
use sluice_model::records::{AppEvent, AppRollup, PlatformRollup};
use sluice_model::{Event, Payload, Str};
use sluice_operators::app_events::{AppEventRule, AppEventRules, LiveRules};
use sluice_operators::graph::{self, Placement};
use sluice_operators::rollup::WindowOptions;
use sluice_operators::watermark::{LateCounts, Watermark, stamp_batch};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::InputHandle;
use timely::dataflow::operators::{Input, Inspect};

const MIN: i64 = 60_000_000_000;
const APP_A: &str = "84c69290-764b-4018-94b0-62ae88c88ad1";
const APP_B: &str = "221c4e00-3f99-41ee-baf2-7f802dc5fd3d";

fn header(origin: &str) -> Header {
    Header {
        origin: Str::from(origin),
        job: Str::from("diego_cell"),
        index: Str::from("0"),
        ..Header::default()
    }
}

fn log(app: &str, at: i64, source_type: &str, message: &str, err: bool) -> Event {
    Event {
        timestamp: at,
        header: header("rep"),
        payload: Payload::Log(LogMessage {
            names: None,
            message: Bytes::from(message.to_owned()),
            message_type: if err {
                MessageType::Err
            } else {
                MessageType::Out
            },
            timestamp: at,
            app_id: Str::from(app),
            source_type: Str::from(source_type),
            source_instance: Str::from("0"),
        }),
    }
}

fn container(app: &str, at: i64, instance: i32, cpu: f64, memory: u64) -> Event {
    Event {
        timestamp: at,
        header: header("rep"),
        payload: Payload::Container(ContainerMetric {
            application_id: Str::from(app),
            instance_index: instance,
            cpu_percentage: cpu,
            memory_bytes: memory,
            disk_bytes: 1000,
            memory_bytes_quota: None,
            disk_bytes_quota: None,
        }),
    }
}

fn http(app: &str, stop: i64, latency_ms: i64, status: i32) -> Event {
    Event {
        timestamp: stop,
        header: header("gorouter"),
        payload: Payload::Http(HttpStartStop {
            start_timestamp: stop - latency_ms * 1_000_000,
            stop_timestamp: stop,
            request_id: uuid::Uuid::from_u128(stop as u128),
            peer_type: PeerType::Client,
            method: Method::GET,
            uri: Str::from("/"),
            remote_address: Str::new(),
            user_agent: Str::new(),
            status_code: status,
            content_length: 100,
            application_id: Some(uuid::Uuid::parse_str(app).expect("uuid")),
            instance_index: Some(0),
            instance_id: Str::new(),
            forwarded: Vec::new(),
        }),
    }
}

fn gauge(at: i64, value: f64) -> Event {
    Event {
        timestamp: at,
        header: header("gorouter"),
        payload: Payload::Value(ValueMetric {
            name: Str::from("latency"),
            value,
            unit: Str::from("ms"),
        }),
    }
}

fn counter(at: i64, delta: u64, total: u64) -> Event {
    Event {
        timestamp: at,
        header: header("gorouter"),
        payload: Payload::Counter(CounterEvent {
            name: Str::from("requests"),
            delta,
            total: Some(total),
        }),
    }
}

#[derive(Default)]
struct Output {
    app_rollups: Vec<AppRollup>,
    platform_rollups: Vec<PlatformRollup>,
    app_events: Vec<AppEvent>,
    logs: usize,
    http: usize,
}

/// Feeds `batches` through the graph on `workers` workers, as the pipeline does: worker 0
/// stamps each batch and sends it at the watermark before it.
fn run(workers: usize, batches: Vec<Vec<Event>>) -> (Output, LateCounts) {
    run_windows(workers, batches, vec![60])
}

/// [`run`] with rollups of every width of `windows` (seconds).
fn run_windows(
    workers: usize,
    batches: Vec<Vec<Event>>,
    windows: Vec<u32>,
) -> (Output, LateCounts) {
    run_placed(workers, 1, batches, windows)
}

/// [`run_windows`] with the workers placed as `processes` processes of a cluster (SPEC §12):
/// records stay among the workers of the process that read them (process 0 here), and only
/// samples cross to the other processes' workers.
fn run_placed(
    workers: usize,
    processes: usize,
    batches: Vec<Vec<Event>>,
    windows: Vec<u32>,
) -> (Output, LateCounts) {
    let output = Arc::new(Mutex::new(Output::default()));
    let late = Arc::new(Mutex::new(LateCounts::default()));
    let (out, late_out) = (output.clone(), late.clone());
    let batches = Arc::new(batches);
    timely::execute(timely::Config::process(workers), move |worker| {
        let mut input = InputHandle::<u64, CapacityContainerBuilder<Vec<_>>>::new();
        let options = WindowOptions {
            // An hour: no provisional rows in these tests.
            flush_interval: Arc::new(AtomicU64::new(3_600_000_000_000)),
            shutting_down: Arc::new(AtomicBool::new(false)),
            open_windows: Arc::new(AtomicI64::new(0)),
            windows: windows.clone(),
            checkpoints: false,
            first_epoch: 0,
            placement: Placement {
                process: worker.index() / (workers / processes),
                processes,
                workers: workers / processes,
            },
        };
        let out = out.clone();
        worker.dataflow::<u64, _, _>(|scope| {
            let streams = graph::build(
                scope.input_from(&mut input),
                LiveRules::new(AppEventRules::default()),
                options,
            );
            let o = out.clone();
            streams
                .app_rollups
                .inspect(move |row| o.lock().expect("lock").app_rollups.push(row.clone()));
            let o = out.clone();
            streams
                .platform_rollups
                .inspect(move |row| o.lock().expect("lock").platform_rollups.push(row.clone()));
            let o = out.clone();
            streams
                .app_events
                .inspect(move |row| o.lock().expect("lock").app_events.push(row.clone()));
            let o = out.clone();
            streams
                .logs
                .inspect(move |_| o.lock().expect("lock").logs += 1);
            let o = out.clone();
            streams
                .http
                .inspect(move |_| o.lock().expect("lock").http += 1);
        });
        if worker.index() == 0 {
            let mut watermark = Watermark::new(Duration::from_secs(60));
            let mut counts = LateCounts::default();
            for batch in batches.iter() {
                let mut stamped = Vec::new();
                let time = stamp_batch(&mut watermark, batch.clone(), 1, &mut stamped, &mut counts);
                if time > *input.time() {
                    input.advance_to(time);
                }
                input.send_batch(&mut stamped);
                input.advance_to(watermark.epoch().max(*input.time()));
                worker.step();
            }
            *late_out.lock().expect("lock") = counts;
        }
    })
    .expect("timely runs");
    let output = std::mem::take(&mut *output.lock().expect("lock"));
    let late = *late.lock().expect("lock");
    (output, late)
}

fn scenario() -> Vec<Vec<Event>> {
    let m10 = 10 * MIN;
    vec![
        vec![
            container(APP_A, m10 + 1_000, 0, 10.0, 100),
            container(APP_A, m10 + 2_000, 1, 30.0, 300),
            http(APP_A, m10 + 3_000, 10, 200),
            http(APP_A, m10 + 4_000, 30, 503),
            log(APP_A, m10 + 5_000, "APP/PROC/WEB", "hello", false),
            log(APP_A, m10 + 6_000, "APP/PROC/WEB", "oops", true),
            log(
                APP_A,
                m10 + 7_000,
                "API/0",
                r#"Updated app with guid x ({"state"=>"STARTED"})"#,
                false,
            ),
            log(APP_B, m10 + 8_000, "APP/PROC/WEB", "b", false),
            gauge(m10 + 1_000, 5.0),
            gauge(m10 + 9_000, 7.0),
            gauge(m10 + 5_000, 9.0),
            counter(m10 + 1_000, 3, 103),
            counter(m10 + 2_000, 4, 107),
        ],
        // Minute 11 for app B; the watermark reaches 10:30.
        vec![log(
            APP_B,
            11 * MIN + 30_000_000_000,
            "APP/PROC/WEB",
            "b2",
            false,
        )],
        // 12:05 moves the watermark to 11:05, closing minute 10.
        vec![http(APP_B, 12 * MIN + 5_000_000_000, 1, 201)],
        // A record for minute 10 now is late: raw streams only.
        vec![
            http(APP_A, m10 + 50_000_000_000, 99, 200),
            log(APP_A, m10 + 50_000_000_000, "APP/PROC/WEB", "late", false),
        ],
    ]
}

fn sorted(mut rows: Vec<AppRollup>) -> Vec<AppRollup> {
    rows.retain(|r| r.is_final && r.window == 60);
    rows.sort_by(|a, b| (a.minute, &a.app_id).cmp(&(b.minute, &b.app_id)));
    rows
}

#[test]
fn rollups_close_on_the_watermark_and_skip_late_records() {
    let (output, late) = run(1, scenario());
    let rows = sorted(output.app_rollups);
    assert_eq!(rows.len(), 4, "{rows:#?}");
    let find = |app: &str, minute: i64| {
        rows.iter()
            .find(|r| &*r.app_id == app && r.minute == minute)
            .unwrap_or_else(|| panic!("no final row for {app} at {minute}: {rows:#?}"))
    };
    let a10 = find(APP_A, 600);
    assert_eq!(a10.instances, 2);
    assert_eq!(a10.cpu_avg, Some(20.0));
    assert_eq!(a10.cpu_max, Some(30.0));
    assert_eq!(a10.memory_avg, Some(200.0));
    assert_eq!(a10.memory_max, Some(300));
    assert_eq!(a10.requests, 2, "the late request is not counted");
    assert_eq!((a10.status_2xx, a10.status_5xx), (1, 1));
    assert_eq!(a10.response_bytes, 200);
    assert_eq!(a10.latency_avg_ms, Some(20.0));
    assert_eq!(a10.latency_max_ms, Some(30.0));
    assert_eq!(a10.latency_p50_ms, Some(10.0));
    assert_eq!(a10.latency_p99_ms, Some(30.0));
    assert_eq!(
        (a10.log_lines, a10.log_err_lines, a10.app_events),
        (3, 1, 1)
    );
    let b10 = find(APP_B, 600);
    assert_eq!(b10.log_lines, 1);
    assert_eq!(b10.cpu_avg, None, "no container metrics: NULL columns");
    assert_eq!(b10.latency_p50_ms, None);
    assert_eq!(find(APP_B, 660).log_lines, 1);
    assert_eq!(find(APP_B, 720).requests, 1);

    assert_eq!(late.total(), 2);
    assert_eq!(output.logs, 6, "late logs still reach the raw stream");
    assert_eq!(output.http, 4);
    assert_eq!(output.app_events.len(), 1);
    assert_eq!(&*output.app_events[0].event, "start");

    let mut platform = output.platform_rollups;
    platform.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(platform.len(), 2);
    let gauge = &platform[0];
    assert_eq!(
        (&*gauge.name, gauge.kind.as_str(), gauge.samples),
        ("latency", "gauge", 3)
    );
    assert_eq!(
        (gauge.value_min, gauge.value_max, gauge.value_last),
        (Some(5.0), Some(9.0), Some(7.0))
    );
    assert_eq!(gauge.value_avg, Some(7.0));
    assert_eq!((gauge.delta_sum, gauge.total_last), (None, None));
    let counter = &platform[1];
    assert_eq!(
        (&*counter.name, counter.kind.as_str(), counter.samples),
        ("requests", "counter", 2)
    );
    assert_eq!(
        (counter.delta_sum, counter.total_last),
        (Some(7), Some(107))
    );
    assert_eq!((&*counter.unit, counter.value_avg), ("", None));
}

#[test]
fn any_number_of_workers_gives_the_same_rows() {
    let (one, _) = run(1, scenario());
    let (three, _) = run(3, scenario());
    assert_eq!(sorted(one.app_rollups), sorted(three.app_rollups));
    assert_eq!(one.platform_rollups.len(), three.platform_rollups.len());
}

#[test]
fn workers_placed_as_a_cluster_give_the_rows_of_one_process() {
    let (one, one_late) = run_windows(1, hours_of_traffic(), vec![60, 3600]);
    // Two processes of two workers, and three of one: records stay in process 0, where
    // they are read; samples are exchanged to whichever worker owns their window.
    for (workers, processes) in [(4, 2), (3, 3)] {
        let (cluster, late) = run_placed(workers, processes, hours_of_traffic(), vec![60, 3600]);
        assert_eq!(format!("{late:?}"), format!("{one_late:?}"));
        let app = |rows: &[AppRollup]| {
            let mut rows: Vec<String> = rows
                .iter()
                .filter(|r| r.is_final)
                .map(|r| format!("{r:?}"))
                .collect();
            rows.sort();
            rows
        };
        assert!(app(&one.app_rollups).len() > 10);
        assert_eq!(app(&cluster.app_rollups), app(&one.app_rollups));
        let platform = |rows: &[PlatformRollup]| {
            let mut keys: Vec<String> = rows
                .iter()
                .filter(|r| r.is_final)
                .map(|r| format!("{r:?}"))
                .collect();
            keys.sort();
            keys
        };
        let (theirs, ours) = (
            platform(&cluster.platform_rollups),
            platform(&one.platform_rollups),
        );
        let differ: Vec<_> = theirs
            .iter()
            .zip(&ours)
            .filter(|(a, b)| a != b)
            .take(2)
            .collect();
        assert!(
            differ.is_empty() && theirs.len() == ours.len(),
            "{} vs {} rows: {differ:#?}",
            theirs.len(),
            ours.len()
        );
        assert_eq!((cluster.logs, cluster.http), (one.logs, one.http));
    }
}

const HOUR: i64 = 60 * MIN;

/// A few apps over two and a half hours from 10:50, slightly out of order, with some records
/// minutes late; batches of 40 as a source would send them.
fn hours_of_traffic() -> Vec<Vec<Event>> {
    let mut seed = 7u64;
    let mut next = move |bound: u64| {
        // SplitMix64: deterministic, no dependency.
        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % bound
    };
    let start = 10 * HOUR + 50 * MIN;
    let mut events = Vec::new();
    let mut at = start;
    while at < start + 150 * MIN {
        at += 2_000_000_000 + next(6_000) as i64 * 1_000_000;
        // Out of order by up to 20 s; one record in 50 three minutes late.
        let mut t = at - next(20_000) as i64 * 1_000_000;
        if next(50) == 0 {
            t -= 3 * MIN;
        }
        let app = [APP_A, APP_B][next(2) as usize];
        events.push(match next(6) {
            0 => container(
                app,
                t,
                next(3) as i32,
                next(10_000) as f64 / 100.0,
                next(1 << 30),
            ),
            1 => http(
                app,
                t,
                next(900) as i64,
                [200, 201, 302, 404, 500][next(5) as usize],
            ),
            2 => log(app, t, "APP/PROC/WEB", "line", next(4) == 0),
            3 => log(app, t, "API/0", r#"{"state"=>"STOPPED"}"#, false),
            4 => gauge(t, next(1_000) as f64 / 10.0),
            _ => counter(t, next(10), next(1_000_000)),
        });
    }
    events.chunks(40).map(<[Event]>::to_vec).collect()
}

/// Everything a window of the independent computation keeps: every value, not a summary.
#[derive(Default, Debug)]
struct Naive {
    instances: Vec<i32>,
    cpu: Vec<f64>,
    memory: Vec<u64>,
    statuses: Vec<i32>,
    latencies_ms: Vec<f64>,
    logs: u64,
    err_logs: u64,
    events: u64,
    gauges: Vec<(i64, f64)>,
    deltas: Vec<u64>,
    totals: Vec<(i64, u64)>,
}

/// SPEC §2 by hand: a record is late when its minute ended at or before the greatest event
/// time seen before it, less a minute of lateness; the others count in the window of `width`
/// seconds their time falls in. App windows are keyed by app, platform ones by metric name.
fn naive_windows(batches: &[Vec<Event>], width: i64) -> BTreeMap<(String, i64), Naive> {
    let mut windows: BTreeMap<(String, i64), Naive> = BTreeMap::new();
    let mut max_seen: Option<i64> = None;
    for event in batches.iter().flatten() {
        let t = match &event.payload {
            Payload::Log(log) => log.timestamp,
            Payload::Http(http) => http.stop_timestamp,
            _ => event.timestamp,
        };
        let minute_end = (t.div_euclid(MIN) + 1) * MIN;
        let late = max_seen.is_some_and(|max| minute_end <= max - MIN);
        max_seen = Some(max_seen.map_or(t, |m| m.max(t)));
        if late {
            continue;
        }
        let start = t.div_euclid(width * 1_000_000_000) * width;
        let window = |key: &str| (key.to_owned(), start);
        match &event.payload {
            Payload::Container(c) => {
                let w = windows.entry(window(&c.application_id)).or_default();
                w.instances.push(c.instance_index);
                w.cpu.push(c.cpu_percentage);
                w.memory.push(c.memory_bytes);
            }
            Payload::Http(h) => {
                let app = h.application_id.expect("app").to_string();
                let w = windows.entry(window(&app)).or_default();
                w.statuses.push(h.status_code);
                w.latencies_ms
                    .push((h.stop_timestamp - h.start_timestamp).max(0) as f64 / 1e6);
            }
            Payload::Log(l) => {
                let w = windows.entry(window(&l.app_id)).or_default();
                w.logs += 1;
                w.err_logs += u64::from(l.message_type == MessageType::Err);
                w.events += u64::from(l.source_type.starts_with("API"));
            }
            Payload::Value(v) => windows
                .entry(window(&v.name))
                .or_default()
                .gauges
                .push((t, v.value)),
            Payload::Counter(c) => {
                let w = windows.entry(window(&c.name)).or_default();
                w.deltas.push(c.delta);
                w.totals.push((t, c.total.expect("total")));
            }
            Payload::Error(_) => {}
        }
    }
    windows
}

fn nearest_rank(values: &[f64], p: f64) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied()
}

fn mean(values: impl ExactSizeIterator<Item = f64>) -> Option<f64> {
    let n = values.len();
    (n > 0).then(|| values.sum::<f64>() / n as f64)
}

/// The value of the latest event time; a tie goes to the later arrival.
fn last<T: Copy>(values: &[(i64, T)]) -> Option<T> {
    values
        .iter()
        .copied()
        .reduce(|a, b| if b.0 >= a.0 { b } else { a })
        .map(|(_, v)| v)
}

fn assert_close(actual: Option<f64>, expected: Option<f64>, tolerance: f64, what: &str) {
    match (actual, expected) {
        (Some(a), Some(e)) => assert!(
            (a - e).abs() <= tolerance * e.abs().max(1e-9),
            "{what}: {a} vs {e}"
        ),
        _ => assert_eq!(actual, expected, "{what}"),
    }
}

#[test]
fn hourly_rows_equal_an_independent_computation_over_the_same_samples() {
    let batches = hours_of_traffic();
    let (output, late) = run_windows(2, batches.clone(), vec![60, 3600]);
    assert!(late.total() > 10, "the traffic has late records");
    let expected = naive_windows(&batches, 3600);
    let hours: Vec<&AppRollup> = output
        .app_rollups
        .iter()
        .filter(|r| r.window == 3600 && r.is_final)
        .collect();
    assert_eq!(hours.len(), 2 * 4, "two apps, 10:50 to 13:20: {hours:#?}");
    for row in &hours {
        let what = format!("{} hour {}", row.app_id, row.minute);
        let w = &expected[&(row.app_id.to_string(), row.minute)];
        let mut instances = w.instances.clone();
        instances.sort_unstable();
        instances.dedup();
        assert_eq!(row.instances as usize, instances.len(), "{what} instances");
        assert_close(row.cpu_avg, mean(w.cpu.iter().copied()), 1e-9, &what);
        assert_close(
            row.cpu_max,
            w.cpu.iter().copied().reduce(f64::max),
            0.0,
            &what,
        );
        assert_close(
            row.memory_avg,
            mean(w.memory.iter().map(|m| *m as f64)),
            1e-9,
            &what,
        );
        assert_eq!(row.memory_max, w.memory.iter().max().copied(), "{what}");
        assert_eq!(row.requests as usize, w.statuses.len(), "{what} requests");
        for (class, count) in [
            (2, row.status_2xx),
            (3, row.status_3xx),
            (4, row.status_4xx),
            (5, row.status_5xx),
        ] {
            let n = w.statuses.iter().filter(|s| **s / 100 == class).count();
            assert_eq!(count as usize, n, "{what} status {class}xx");
        }
        assert_eq!(row.response_bytes, 100 * w.statuses.len() as i64, "{what}");
        assert_close(
            row.latency_avg_ms,
            mean(w.latencies_ms.iter().copied()),
            1e-9,
            &what,
        );
        assert_close(
            row.latency_max_ms,
            w.latencies_ms.iter().copied().reduce(f64::max),
            0.0,
            &what,
        );
        for (actual, p) in [
            (row.latency_p50_ms, 0.5),
            (row.latency_p95_ms, 0.95),
            (row.latency_p99_ms, 0.99),
        ] {
            // Within the sketch's 1 %; a latency of 0 ms is exact.
            let expected = nearest_rank(&w.latencies_ms, p);
            assert_close(actual, expected, 0.01, &format!("{what} p{p}"));
        }
        assert_eq!(
            (row.log_lines, row.log_err_lines, row.app_events),
            (w.logs, w.err_logs, w.events),
            "{what} logs"
        );
    }

    let platform_hours: Vec<&PlatformRollup> = output
        .platform_rollups
        .iter()
        .filter(|r| r.window == 3600 && r.is_final)
        .collect();
    assert_eq!(platform_hours.len(), 2 * 4, "{platform_hours:#?}");
    for row in platform_hours {
        let what = format!("{} hour {}", row.name, row.minute);
        let w = &expected[&(row.name.to_string(), row.minute)];
        if row.kind.as_str() == "gauge" {
            let values: Vec<f64> = w.gauges.iter().map(|g| g.1).collect();
            assert_eq!(row.samples as usize, values.len(), "{what}");
            assert_close(row.value_avg, mean(values.iter().copied()), 1e-9, &what);
            assert_close(
                row.value_min,
                values.iter().copied().reduce(f64::min),
                0.0,
                &what,
            );
            assert_close(
                row.value_max,
                values.iter().copied().reduce(f64::max),
                0.0,
                &what,
            );
            assert_close(row.value_last, last(&w.gauges), 0.0, &what);
        } else {
            assert_eq!(row.samples as usize, w.deltas.len(), "{what}");
            assert_eq!(row.delta_sum, Some(w.deltas.iter().sum()), "{what}");
            assert_eq!(row.total_last, last(&w.totals), "{what}");
        }
    }

    // The minute rows are untouched by the extra width: the same as a minute-only run.
    let (minutes_only, _) = run(2, batches);
    assert_eq!(sorted(output.app_rollups), sorted(minutes_only.app_rollups));
}

/// Steps `worker` until `done` holds, failing after 10 s.
fn step_until(worker: &mut timely::worker::Worker, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not after 10 s"
        );
        worker.step();
    }
}

#[test]
fn rules_and_the_flush_interval_change_while_the_graph_runs() {
    let output = Arc::new(Mutex::new(Output::default()));
    let out = output.clone();
    timely::execute(timely::Config::process(1), move |worker| {
        let mut input = InputHandle::<u64, CapacityContainerBuilder<Vec<_>>>::new();
        let flush_interval = Arc::new(AtomicU64::new(u64::MAX));
        let options = WindowOptions {
            flush_interval: flush_interval.clone(),
            shutting_down: Arc::new(AtomicBool::new(false)),
            open_windows: Arc::new(AtomicI64::new(0)),
            windows: vec![60],
            checkpoints: false,
            first_epoch: 0,
            placement: Placement::single(1),
        };
        let rules = LiveRules::new(
            AppEventRules::new(&[AppEventRule {
                event: "deploy".to_owned(),
                source_type: "API".to_owned(),
                message: "deployed".to_owned(),
            }])
            .expect("valid rule"),
        );
        let o = out.clone();
        let o2 = out.clone();
        worker.dataflow::<u64, _, _>(|scope| {
            let streams = graph::build(scope.input_from(&mut input), rules.clone(), options);
            streams
                .app_events
                .inspect(move |row| o.lock().expect("lock").app_events.push(row.clone()));
            streams
                .app_rollups
                .inspect(move |row| o2.lock().expect("lock").app_rollups.push(row.clone()));
        });
        let mut watermark = Watermark::new(Duration::from_secs(60));
        let mut send = |input: &mut InputHandle<u64, _>, events: Vec<Event>| {
            let mut stamped = Vec::new();
            let mut counts = LateCounts::default();
            stamp_batch(&mut watermark, events, 1, &mut stamped, &mut counts);
            input.send_batch(&mut stamped);
        };
        let m10 = 10 * MIN;
        let both = |at: i64| {
            vec![
                log(APP_A, at, "API/0", "deployed v2", false),
                log(APP_A, at + 1, "API/0", "released v2", false),
            ]
        };
        let events = || out.lock().expect("lock").app_events.len();
        send(&mut input, both(m10));
        step_until(worker, "the first batch's app event", || events() == 1);

        // New rules apply to the records routed after the swap, and only to them.
        rules.replace(
            AppEventRules::new(&[AppEventRule {
                event: "release".to_owned(),
                source_type: "API".to_owned(),
                message: "released".to_owned(),
            }])
            .expect("valid rule"),
        );
        send(&mut input, both(m10 + 1_000));
        step_until(worker, "the second batch's app event", || events() == 2);
        let names: Vec<(String, i64)> = out
            .lock()
            .expect("lock")
            .app_events
            .iter()
            .map(|e| (e.event.to_string(), e.ts))
            .collect();
        assert_eq!(
            names,
            [
                ("deploy".to_owned(), m10),
                ("release".to_owned(), m10 + 1_001)
            ]
        );
        // With the interval at "never", the open minute has not been written.
        assert!(out.lock().expect("lock").app_rollups.is_empty());

        // A shorter interval applies from the next activation: the open window is written.
        flush_interval.store(1, Ordering::Relaxed);
        send(
            &mut input,
            vec![log(APP_A, m10 + 2_000, "APP/PROC/WEB", "x", false)],
        );
        step_until(worker, "a provisional row", || {
            !out.lock().expect("lock").app_rollups.is_empty()
        });
        let rows = out.lock().expect("lock").app_rollups.clone();
        assert!(
            rows.iter().all(|r| !r.is_final && r.minute == 600),
            "{rows:#?}"
        );
        assert_eq!(rows.last().map(|r| r.log_lines), Some(5));
    })
    .expect("timely runs");
}
