//! `sluice run` against a deliberately naive reference written straight from SPEC §2–§6.
//!
//! The reference shares no code with the operators: it decodes the capture with prost, walks the
//! records in file order keeping the watermark by hand, keeps every value of every window, and
//! computes each column the obvious way (exact nearest-rank percentiles). The tables `sluice
//! run` writes must match it with 1, 2 and 4 workers, and again after replaying the capture a
//! second time into the same store; the hourly tables of `windows = ["1m", "1h"]` must match
//! the reference computed over hours (lateness still decided by the minute).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use regex::bytes::Regex;
use sluice_model::event::{MessageType, PeerType};
use sluice_model::framing::frames;
use sluice_model::{Event, Payload};
use sluice_test_support::*;
use sqlx::{Row, SqlitePool};

const LATENESS_NS: i64 = 60_000_000_000;

fn minute(ns: i64) -> i64 {
    ns.div_euclid(60_000_000_000) * 60
}

fn event_time(event: &Event) -> i64 {
    match &event.payload {
        Payload::Log(log) => log.timestamp,
        Payload::Http(http) => http.stop_timestamp,
        _ => event.timestamp,
    }
}

#[derive(Default, Debug)]
struct AppMinute {
    instances: BTreeSet<i32>,
    cpu: Vec<f64>,
    memory: Vec<u64>,
    disk: Vec<u64>,
    statuses: Vec<i32>,
    bytes: i64,
    latencies_ms: Vec<f64>,
    logs: u64,
    err_logs: u64,
    events: u64,
}

#[derive(Default, Debug)]
struct SeriesMinute {
    kind: Option<&'static str>,
    unit: String,
    values: Vec<(i64, f64)>,
    deltas: Vec<u64>,
    totals: Vec<(i64, Option<u64>)>,
}

#[derive(Default, Debug)]
struct Reference {
    apps: BTreeMap<(String, i64), AppMinute>,
    series: BTreeMap<(String, String, String, String, i64), SeriesMinute>,
    logs: BTreeSet<(String, i64, String, String, String, Vec<u8>)>,
    containers: BTreeSet<(String, i32, i64)>,
    http: BTreeSet<(String, &'static str)>,
    app_events: BTreeSet<(String, i64, String)>,
    errors: BTreeSet<(String, i64, String, i32)>,
}

fn spec_rules() -> Vec<(&'static str, &'static str, Regex)> {
    [
        (
            "crash",
            "API",
            r#"App instance exited with guid .* "reason"=>"CRASHED""#,
        ),
        ("start", "API", r#""state"=>"STARTED""#),
        ("stop", "API", r#""state"=>"STOPPED""#),
        ("scale", "API", r#""instances"=>\d+"#),
        ("staged", "STG", "Staging complete"),
    ]
    .into_iter()
    .map(|(event, prefix, pattern)| (event, prefix, Regex::new(pattern).expect("SPEC regex")))
    .collect()
}

/// The reference over windows of `width` seconds (60: SPEC §5's minutes).
fn reference(capture: &[u8], width: i64) -> Reference {
    let rules = spec_rules();
    let mut out = Reference::default();
    let mut max_seen: Option<i64> = None;
    for (_, frame) in frames(capture) {
        let event = sluice_model::reference::decode_v1(&frame.expect("intact capture"))
            .expect("decodable capture");
        let t = event_time(&event);
        let late =
            max_seen.is_some_and(|max| (minute(t) + 60) * 1_000_000_000 <= max - LATENESS_NS);
        max_seen = Some(max_seen.map_or(t, |m| m.max(t)));
        let m = minute(t).div_euclid(width) * width;
        match &event.payload {
            Payload::Log(log) => {
                out.logs.insert((
                    log.app_id.to_string(),
                    log.timestamp,
                    log.source_type.to_string(),
                    log.source_instance.to_string(),
                    log.message_type.as_str().to_owned(),
                    log.message.to_vec(),
                ));
                let app = log.app_id.to_lowercase();
                let matched = rules.iter().find(|(_, prefix, re)| {
                    log.source_type.starts_with(prefix) && re.is_match(&log.message)
                });
                if let Some((name, _, _)) = matched {
                    out.app_events
                        .insert((app.clone(), log.timestamp, name.to_string()));
                }
                if !late && !app.is_empty() {
                    let w = out.apps.entry((app, m)).or_default();
                    w.logs += 1;
                    w.err_logs += u64::from(log.message_type == MessageType::Err);
                    w.events += u64::from(matched.is_some());
                }
            }
            Payload::Container(c) => {
                out.containers.insert((
                    c.application_id.to_lowercase(),
                    c.instance_index,
                    event.timestamp,
                ));
                if !late {
                    let w = out
                        .apps
                        .entry((c.application_id.to_lowercase(), m))
                        .or_default();
                    w.instances.insert(c.instance_index);
                    w.cpu.push(c.cpu_percentage);
                    w.memory.push(c.memory_bytes);
                    w.disk.push(c.disk_bytes);
                }
            }
            Payload::Http(h) => {
                let peer = match h.peer_type {
                    PeerType::Client => "Client",
                    PeerType::Server => "Server",
                };
                out.http.insert((h.request_id.to_string(), peer));
                if let (false, Some(app)) = (late, h.application_id) {
                    let w = out.apps.entry((app.to_string(), m)).or_default();
                    w.statuses.push(h.status_code);
                    w.bytes += h.content_length;
                    w.latencies_ms
                        .push(((h.stop_timestamp - h.start_timestamp).max(0)) as f64 / 1e6);
                }
            }
            Payload::Value(v) if !late => {
                let key = series_key(&event, &v.name, m);
                let s = out.series.entry(key).or_default();
                if *s.kind.get_or_insert("gauge") == "gauge" {
                    if s.values.is_empty() {
                        s.unit = v.unit.to_string();
                    }
                    s.values.push((t, v.value));
                }
            }
            Payload::Counter(c) if !late => {
                let key = series_key(&event, &c.name, m);
                let s = out.series.entry(key).or_default();
                if *s.kind.get_or_insert("counter") == "counter" {
                    s.deltas.push(c.delta);
                    s.totals.push((t, c.total));
                }
            }
            Payload::Error(e) => {
                out.errors.insert((
                    event.header.origin.to_string(),
                    event.timestamp,
                    e.source.to_string(),
                    e.code,
                ));
            }
            _ => {}
        }
    }
    out
}

fn series_key(event: &Event, name: &str, minute: i64) -> (String, String, String, String, i64) {
    (
        event.header.origin.to_string(),
        event.header.job.to_string(),
        event.header.index.to_string(),
        name.to_owned(),
        minute,
    )
}

fn nearest_rank(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn mean<T: Copy + Into<f64>>(values: &[T]) -> Option<f64> {
    (!values.is_empty())
        .then(|| values.iter().map(|v| (*v).into()).sum::<f64>() / values.len() as f64)
}

fn close(actual: Option<f64>, expected: Option<f64>, tolerance: f64, what: &str) {
    match (actual, expected) {
        (None, None) => {}
        (Some(a), Some(e)) => {
            let scale = e.abs().max(1e-12);
            assert!(
                (a - e).abs() / scale <= tolerance || (a - e).abs() < 1e-9,
                "{what}: {a} vs expected {e}"
            );
        }
        _ => panic!("{what}: {actual:?} vs expected {expected:?}"),
    }
}

async fn count(pool: &SqlitePool, table: &'static str) -> usize {
    // `table` is one of the SPEC's table names, written in this file.
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(pool)
        .await
        .expect("count");
    n as usize
}

/// Checks the store against the reference: the raw tables, and the rollup tables whose names
/// end in `suffix` (`""` for the minute tables, `"_1h"`, ...).
async fn check_store(db: &Path, expected: &Reference, suffix: &str) {
    let pool = SqlitePool::connect(&format!("sqlite://{}?mode=ro", db.display()))
        .await
        .expect("store opens");
    assert_eq!(
        count(&pool, "log_message").await,
        expected.logs.len(),
        "log_message rows"
    );
    assert_eq!(
        count(&pool, "container_metric").await,
        expected.containers.len(),
        "container_metric rows"
    );
    assert_eq!(
        count(&pool, "http_start_stop").await,
        expected.http.len(),
        "http_start_stop rows"
    );
    assert_eq!(
        count(&pool, "app_event").await,
        expected.app_events.len(),
        "app_event rows"
    );
    assert_eq!(
        count(&pool, "platform_error").await,
        expected.errors.len(),
        "platform_error rows"
    );

    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT * FROM app_metric_rollup{suffix}"
    )))
    .fetch_all(&pool)
    .await
    .expect("rollups");
    let mut seen = BTreeSet::new();
    for row in &rows {
        let app: String = row.get("app_id");
        let m: i64 = row.get("minute");
        let what = format!("app {app} minute {m}");
        let w = expected
            .apps
            .get(&(app.clone(), m))
            .unwrap_or_else(|| panic!("unexpected row: {what}"));
        seen.insert((app, m));
        let int = |c: &str| row.get::<i64, _>(c);
        let float = |c: &str| row.get::<Option<f64>, _>(c);
        assert_eq!(
            int("instances") as usize,
            w.instances.len(),
            "{what} instances"
        );
        close(
            float("cpu_avg"),
            mean(&w.cpu),
            1e-9,
            &format!("{what} cpu_avg"),
        );
        close(
            float("cpu_max"),
            w.cpu.iter().copied().reduce(f64::max),
            1e-9,
            &format!("{what} cpu_max"),
        );
        let memory: Vec<f64> = w.memory.iter().map(|m| *m as f64).collect();
        close(
            float("memory_avg"),
            mean(&memory),
            1e-9,
            &format!("{what} memory_avg"),
        );
        assert_eq!(
            row.get::<Option<i64>, _>("memory_max"),
            w.memory.iter().max().map(|m| *m as i64),
            "{what} memory_max"
        );
        let disk: Vec<f64> = w.disk.iter().map(|m| *m as f64).collect();
        close(
            float("disk_avg"),
            mean(&disk),
            1e-9,
            &format!("{what} disk_avg"),
        );
        assert_eq!(
            row.get::<Option<i64>, _>("disk_max"),
            w.disk.iter().max().map(|m| *m as i64),
            "{what} disk_max"
        );
        assert_eq!(
            int("requests") as usize,
            w.statuses.len(),
            "{what} requests"
        );
        for (column, class) in [
            ("status_2xx", 2),
            ("status_3xx", 3),
            ("status_4xx", 4),
            ("status_5xx", 5),
        ] {
            let n = w.statuses.iter().filter(|s| **s / 100 == class).count();
            assert_eq!(int(column) as usize, n, "{what} {column}");
        }
        assert_eq!(int("response_bytes"), w.bytes, "{what} response_bytes");
        close(
            float("latency_avg_ms"),
            mean(&w.latencies_ms),
            1e-9,
            &format!("{what} latency_avg_ms"),
        );
        close(
            float("latency_max_ms"),
            w.latencies_ms.iter().copied().reduce(f64::max),
            1e-9,
            &format!("{what} latency_max_ms"),
        );
        for (column, p) in [
            ("latency_p50_ms", 0.5),
            ("latency_p95_ms", 0.95),
            ("latency_p99_ms", 0.99),
        ] {
            close(
                float(column),
                nearest_rank(&w.latencies_ms, p),
                0.01,
                &format!("{what} {column}"),
            );
        }
        assert_eq!(int("log_lines") as u64, w.logs, "{what} log_lines");
        assert_eq!(
            int("log_err_lines") as u64,
            w.err_logs,
            "{what} log_err_lines"
        );
        assert_eq!(int("app_events") as u64, w.events, "{what} app_events");
    }
    let missing: Vec<_> = expected
        .apps
        .keys()
        .filter(|k| !seen.contains(*k))
        .collect();
    assert!(missing.is_empty(), "rollup rows missing: {missing:?}");

    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT * FROM platform_metric_rollup{suffix}"
    )))
    .fetch_all(&pool)
    .await
    .expect("platform");
    assert_eq!(
        rows.len(),
        expected.series.len(),
        "platform_metric_rollup rows"
    );
    for row in &rows {
        let key = (
            row.get::<String, _>("origin"),
            row.get::<String, _>("job"),
            row.get::<String, _>("instance"),
            row.get::<String, _>("name"),
            row.get::<i64, _>("minute"),
        );
        let what = format!("series {key:?}");
        let s = expected
            .series
            .get(&key)
            .unwrap_or_else(|| panic!("unexpected {what}"));
        let kind = s.kind.expect("a kind");
        assert_eq!(row.get::<String, _>("kind"), kind, "{what} kind");
        let float = |c: &str| row.get::<Option<f64>, _>(c);
        let last_of = |v: &[(i64, f64)]| {
            v.iter()
                .copied()
                .reduce(|a, b| if b.0 >= a.0 { b } else { a })
                .map(|p| p.1)
        };
        if kind == "gauge" {
            let values: Vec<f64> = s.values.iter().map(|v| v.1).collect();
            assert_eq!(
                row.get::<i64, _>("samples") as usize,
                values.len(),
                "{what} samples"
            );
            assert_eq!(row.get::<String, _>("unit"), s.unit, "{what} unit");
            close(
                float("value_avg"),
                mean(&values),
                1e-9,
                &format!("{what} value_avg"),
            );
            close(
                float("value_min"),
                values.iter().copied().reduce(f64::min),
                1e-12,
                &format!("{what} value_min"),
            );
            close(
                float("value_max"),
                values.iter().copied().reduce(f64::max),
                1e-12,
                &format!("{what} value_max"),
            );
            close(
                float("value_last"),
                last_of(&s.values),
                1e-12,
                &format!("{what} value_last"),
            );
            assert_eq!(
                row.get::<Option<i64>, _>("delta_sum"),
                None,
                "{what} delta_sum"
            );
        } else {
            assert_eq!(
                row.get::<i64, _>("samples") as usize,
                s.deltas.len(),
                "{what} samples"
            );
            assert_eq!(row.get::<String, _>("unit"), "", "{what} unit");
            assert_eq!(
                row.get::<Option<i64>, _>("delta_sum"),
                Some(s.deltas.iter().sum::<u64>() as i64),
                "{what} delta_sum"
            );
            let total = s
                .totals
                .iter()
                .copied()
                .reduce(|a, b| if b.0 >= a.0 { b } else { a })
                .and_then(|t| t.1);
            assert_eq!(
                row.get::<Option<i64>, _>("total_last"),
                total.map(|t| t as i64),
                "{what} total_last"
            );
            assert_eq!(float("value_avg"), None, "{what} value_avg");
        }
    }
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_matches_the_reference_with_any_worker_count_and_on_replay() {
    let dir = tempfile::tempdir().expect("temp dir");
    let capture = dir.path().join("capture.bin");
    // Out of order by up to 20 s, 3 % of records minutes late; about 30 minutes of event time.
    let events = simulated_events(7, 40, 20_000, 0.03);
    write_capture(&capture, &events);
    let bytes = std::fs::read(&capture).expect("capture");
    let expected = reference(&bytes, 60);
    assert!(
        expected.apps.len() > 500,
        "the capture spans many app-minutes"
    );
    let hourly = reference(&bytes, 3600);
    assert!(hourly.apps.len() >= 40, "every app has an hour row");

    for workers in [1, 2, 4] {
        let db = dir.path().join(format!("workers-{workers}.db"));
        let config = replay_config(dir.path(), &capture, &db, workers);
        if workers == 2 {
            // With an hourly window beside the minute: its own tables, the minute's unchanged.
            let text = std::fs::read_to_string(&config).expect("config");
            let text = text.replace(
                "allowed_lateness = \"60s\"",
                "allowed_lateness = \"60s\"\nwindows = [\"1m\", \"1h\"]",
            );
            std::fs::write(&config, text).expect("config written");
        }
        assert_success(&run_config(&config));
        check_store(&db, &expected, "").await;
        if workers == 2 {
            check_store(&db, &hourly, "_1h").await;
            // Replaying the same capture into the same store changes nothing.
            assert_success(&run_config(&config));
            check_store(&db, &expected, "").await;
            check_store(&db, &hourly, "_1h").await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_cases_match_the_reference() {
    use sluice_test_support::build::{container, http, log};
    const MINUTE: i64 = 60_000_000_000;
    let t0 = 28_503_900 * MINUTE; // 2024-03-12T09:00:00Z
    let mut events = Vec::new();
    // 10 000 distinct apps in one minute; every other one has no container metrics (NULLs).
    for i in 0..10_000u128 {
        let app = uuid::Uuid::from_u128(0xa000_0000_0000_0000_0000_0000_0000_0000 + i).to_string();
        events.push(log(&app, t0 + i as i64 * 1000, "GET / 200"));
        if i % 2 == 0 {
            events.push(container(
                &app,
                t0 + i as i64 * 1000,
                (i % 3) as i32,
                i as f64 / 100.0,
            ));
        }
    }
    let app = uuid::Uuid::from_u128(0xbeef);
    let app_str = app.to_string();
    // Negative latency (stop before start) is clamped to 0.
    events.push(http(app, t0 + 5_000_000_000, t0 + 4_000_000_000, 200, 1));
    events.push(http(app, t0 + 5_000_000_000, t0 + 5_250_000_000, 404, 2));
    // Straddling the minute boundary: the last ns of minute 0 and the first of minute 1.
    events.push(log(&app_str, t0 + MINUTE - 1, "last"));
    events.push(http(app, t0 + MINUTE - 10_000_000, t0 + MINUTE, 500, 3));
    // Move the watermark to minute 4, then send a whole minute of records for minute 1 of a
    // new app: all late, so raw rows but no rollup row.
    events.push(log(&app_str, t0 + 5 * MINUTE + 30_000_000_000, "ahead"));
    let late_app = uuid::Uuid::from_u128(0x1a7e);
    for k in 0..20 {
        events.push(http(
            late_app,
            t0 + MINUTE + k,
            t0 + MINUTE + 1000 + k,
            200,
            100 + k as u128,
        ));
        events.push(log(&late_app.to_string(), t0 + MINUTE + k, "late"));
    }

    let dir = tempfile::tempdir().expect("temp dir");
    let capture = dir.path().join("edges.bin");
    write_capture(&capture, &events);
    let expected = reference(&std::fs::read(&capture).expect("capture"), 60);
    assert_eq!(
        expected
            .apps
            .keys()
            .filter(|(a, _)| *a == late_app.to_string())
            .count(),
        0,
        "the late app has no rollup row in the reference either"
    );
    assert!(expected.apps.len() > 10_000);
    let db = dir.path().join("edges.db");
    let config = replay_config(dir.path(), &capture, &db, 2);
    assert_success(&run_config(&config));
    check_store(&db, &expected, "").await;
}

/// `capture` cut into `parts` files at frame boundaries that fall mid-minute.
fn split_capture(dir: &Path, capture: &[u8], parts: usize) -> Vec<std::path::PathBuf> {
    let frames: Vec<bytes::Bytes> = frames(capture)
        .map(|(_, frame)| frame.expect("intact capture"))
        .collect();
    let mut paths = Vec::new();
    let mut start = 0;
    for part in 0..parts {
        // Cuts at 37 % and 71 % (or 37 % alone) of the records: never on a minute boundary
        // by more than chance, and checked below.
        let end = match (parts, part) {
            (_, p) if p + 1 == parts => frames.len(),
            (2, 0) => frames.len() * 37 / 100,
            (_, 0) => frames.len() * 37 / 100,
            _ => frames.len() * 71 / 100,
        };
        let mut bytes = Vec::new();
        for frame in &frames[start..end] {
            sluice_model::framing::write_frame(&mut bytes, frame);
        }
        let path = dir.join(format!("part-{part}-of-{parts}.bin"));
        std::fs::write(&path, bytes).expect("part written");
        paths.push(path);
        start = end;
    }
    paths
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_split_into_consecutive_runs_with_one_state_dir_matches_the_reference() {
    let dir = tempfile::tempdir().expect("temp dir");
    let capture = dir.path().join("capture.bin");
    let events = simulated_events(11, 40, 20_000, 0.03);
    write_capture(&capture, &events);
    let bytes = std::fs::read(&capture).expect("capture");
    let expected = reference(&bytes, 60);
    let hourly = reference(&bytes, 3600);
    for parts in [2, 3] {
        let files = split_capture(dir.path(), &bytes, parts);
        for workers in [1, 2, 4] {
            let db = dir.path().join(format!("split-{parts}-{workers}.db"));
            let state = dir.path().join(format!("state-{parts}-{workers}"));
            for (i, file) in files.iter().enumerate() {
                let config = replay_config(dir.path(), file, &db, workers);
                let text = std::fs::read_to_string(&config).expect("config").replace(
                    "allowed_lateness = \"60s\"",
                    &format!(
                        "allowed_lateness = \"60s\"\nwindows = [\"1m\", \"1h\"]\nstate_dir = {state:?}"
                    ),
                );
                std::fs::write(&config, text).expect("config written");
                assert_eq!(
                    state.join("checkpoint").exists(),
                    i > 0,
                    "part {i} of {parts}"
                );
                assert_success(&run_config(&config));
            }
            check_store(&db, &expected, "").await;
            check_store(&db, &hourly, "_1h").await;
        }
    }
}
