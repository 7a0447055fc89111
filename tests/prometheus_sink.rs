//! `sluice run` with a `sqlite` and a `prometheus` sink side by side, against a real
//! Prometheus (Debian's, a private process per test): after the run, every sample Prometheus
//! holds is the SQLite rollups' value of its column, at its window's start, once — through a
//! replay, and through Prometheus killed (SIGKILL) and restarted while the run writes.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_test_support::prometheus::{PrometheusServer, parse_value};
use sluice_test_support::*;
use sqlx::{Row, SqlitePool, TypeInfo, ValueRef};

/// A column, the metric it becomes, its extra label, and whether the column is in ms (the
/// metric is in seconds).
type AppSeries = (
    &'static str,
    &'static str,
    Option<(&'static str, &'static str)>,
    bool,
);

/// SPEC §13, written out from the document.
const APP_SERIES: [AppSeries; 21] = [
    ("requests", "sluice_app_requests", None, false),
    (
        "status_2xx",
        "sluice_app_responses",
        Some(("status_class", "2xx")),
        false,
    ),
    (
        "status_3xx",
        "sluice_app_responses",
        Some(("status_class", "3xx")),
        false,
    ),
    (
        "status_4xx",
        "sluice_app_responses",
        Some(("status_class", "4xx")),
        false,
    ),
    (
        "status_5xx",
        "sluice_app_responses",
        Some(("status_class", "5xx")),
        false,
    ),
    ("response_bytes", "sluice_app_response_bytes", None, false),
    (
        "latency_p50_ms",
        "sluice_app_latency_seconds",
        Some(("quantile", "0.5")),
        true,
    ),
    (
        "latency_p95_ms",
        "sluice_app_latency_seconds",
        Some(("quantile", "0.95")),
        true,
    ),
    (
        "latency_p99_ms",
        "sluice_app_latency_seconds",
        Some(("quantile", "0.99")),
        true,
    ),
    (
        "latency_avg_ms",
        "sluice_app_latency_avg_seconds",
        None,
        true,
    ),
    (
        "latency_max_ms",
        "sluice_app_latency_max_seconds",
        None,
        true,
    ),
    ("instances", "sluice_app_instances", None, false),
    (
        "cpu_avg",
        "sluice_app_cpu_percent",
        Some(("stat", "avg")),
        false,
    ),
    (
        "cpu_max",
        "sluice_app_cpu_percent",
        Some(("stat", "max")),
        false,
    ),
    (
        "memory_avg",
        "sluice_app_memory_bytes",
        Some(("stat", "avg")),
        false,
    ),
    (
        "memory_max",
        "sluice_app_memory_bytes",
        Some(("stat", "max")),
        false,
    ),
    (
        "disk_avg",
        "sluice_app_disk_bytes",
        Some(("stat", "avg")),
        false,
    ),
    (
        "disk_max",
        "sluice_app_disk_bytes",
        Some(("stat", "max")),
        false,
    ),
    ("log_lines", "sluice_app_log_lines", None, false),
    ("log_err_lines", "sluice_app_log_error_lines", None, false),
    ("app_events", "sluice_app_events", None, false),
];

/// Platform rollup column → metric and its `stat`, by kind.
const GAUGE_SERIES: [(&str, &str, Option<&str>); 5] = [
    ("value_avg", "sluice_platform_gauge", Some("avg")),
    ("value_min", "sluice_platform_gauge", Some("min")),
    ("value_max", "sluice_platform_gauge", Some("max")),
    ("value_last", "sluice_platform_gauge", Some("last")),
    ("samples", "sluice_platform_samples", None),
];
const COUNTER_SERIES: [(&str, &str, Option<&str>); 3] = [
    ("delta_sum", "sluice_platform_counter_delta", None),
    ("total_last", "sluice_platform_counter_total", None),
    ("samples", "sluice_platform_samples", None),
];

/// Samples by series, keyed like `sluice_test_support::prometheus::series_key`.
type Samples = BTreeMap<String, Vec<(i64, f64)>>;

fn key(labels: &BTreeMap<&str, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A column's value as a number; `None` for NULL.
fn number(row: &sqlx::sqlite::SqliteRow, column: &str) -> Option<f64> {
    let raw = row.try_get_raw(column).expect("a column");
    if raw.is_null() {
        return None;
    }
    match raw.type_info().name() {
        "INTEGER" => Some(row.get::<i64, _>(column) as f64),
        _ => Some(row.get::<f64, _>(column)),
    }
}

/// What Prometheus must hold: every rollup row of every width in the SQLite store at `db`,
/// as SPEC §13's series, with the names the store's `app` table (the directory, SPEC §11)
/// has for the app.
async fn expected_samples(db: &Path, widths: &[(&str, &str)]) -> Samples {
    let pool = SqlitePool::connect(&format!("sqlite://{}?mode=ro", db.display()))
        .await
        .expect("the SQLite store");
    let names: BTreeMap<String, [String; 3]> =
        sqlx::query("SELECT app_id, name, space_name, org_name FROM app")
            .fetch_all(&pool)
            .await
            .expect("the app table")
            .iter()
            .map(|row| {
                let text = |column: &str| row.get::<String, _>(column);
                (
                    text("app_id"),
                    [text("name"), text("space_name"), text("org_name")],
                )
            })
            .collect();
    let mut expected = Samples::new();
    for (suffix, window) in widths {
        let apps = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT * FROM app_metric_rollup{suffix} ORDER BY minute"
        )))
        .fetch_all(&pool)
        .await
        .expect("app rollups");
        for row in &apps {
            let ms = row.get::<i64, _>("minute") * 1000;
            for (column, metric, extra, in_ms) in APP_SERIES {
                let Some(value) = number(row, column) else {
                    continue;
                };
                let mut labels = BTreeMap::from([
                    ("__name__", metric.to_owned()),
                    ("app_id", row.get::<String, _>("app_id")),
                    ("window", (*window).to_owned()),
                ]);
                if let Some((name, label)) = extra {
                    labels.insert(name, label.to_owned());
                }
                let app: String = row.get("app_id");
                for (label, value) in ["app_name", "space_name", "org_name"]
                    .into_iter()
                    .zip(names.get(&app).into_iter().flatten())
                {
                    // An unknown name is no label.
                    if !value.is_empty() {
                        labels.insert(label, value.clone());
                    }
                }
                let value = if in_ms { value / 1000.0 } else { value };
                expected.entry(key(&labels)).or_default().push((ms, value));
            }
        }
        let platform = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT * FROM platform_metric_rollup{suffix} ORDER BY minute"
        )))
        .fetch_all(&pool)
        .await
        .expect("platform rollups");
        for row in &platform {
            let ms = row.get::<i64, _>("minute") * 1000;
            let series: &[(&str, &str, Option<&str>)] = if row.get::<String, _>("kind") == "gauge" {
                &GAUGE_SERIES
            } else {
                &COUNTER_SERIES
            };
            for (column, metric, stat) in series {
                let Some(value) = number(row, column) else {
                    continue;
                };
                let mut labels = BTreeMap::from([
                    ("__name__", (*metric).to_owned()),
                    ("window", (*window).to_owned()),
                ]);
                for name in ["origin", "job", "instance", "name", "unit"] {
                    let text: String = row.get(name);
                    // An empty label is no label.
                    if !text.is_empty() {
                        labels.insert(name, text);
                    }
                }
                if let Some(stat) = stat {
                    labels.insert("stat", (*stat).to_owned());
                }
                expected.entry(key(&labels)).or_default().push((ms, value));
            }
        }
    }
    pool.close().await;
    expected
}

/// Epoch seconds just after the newest window start in the store.
async fn after_last_window(db: &Path) -> f64 {
    let pool = SqlitePool::connect(&format!("sqlite://{}?mode=ro", db.display()))
        .await
        .expect("the SQLite store");
    let last: i64 = sqlx::query_scalar("SELECT MAX(minute) FROM app_metric_rollup")
        .fetch_one(&pool)
        .await
        .expect("a newest minute");
    pool.close().await;
    (last + 1) as f64
}

/// Rows in `app_metric_rollup` of a store a running `sluice` writes (0 before it exists).
async fn app_rows(db: &Path) -> i64 {
    let Ok(pool) = SqlitePool::connect(&format!("sqlite://{}?mode=ro", db.display())).await else {
        return 0;
    };
    let rows = sqlx::query_scalar("SELECT COUNT(*) FROM app_metric_rollup")
        .fetch_one(&pool)
        .await
        .unwrap_or(0);
    pool.close().await;
    rows
}

/// Every `sluice_*` sample Prometheus holds up to `time`.
async fn stored(server: &PrometheusServer, time: f64) -> Samples {
    server
        .raw_samples(r#"{__name__=~"sluice_(app|platform)_.+"}"#, "3h", time)
        .await
}

fn assert_same_samples(actual: &Samples, expected: &Samples) {
    let missing: Vec<&String> = expected
        .keys()
        .filter(|k| !actual.contains_key(*k))
        .collect();
    let extra: Vec<&String> = actual
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "series missing from Prometheus: {missing:#?}\nseries Prometheus has beyond SQLite: {extra:#?}"
    );
    for (series, samples) in expected {
        assert_eq!(&actual[series], samples, "{series}");
    }
}

fn sinks(db: &Path, url: &str, buffer: &str) -> String {
    format!(
        r#"
[sinks.local]
type = "sqlite"
path = {db:?}
streams = ["app_rollups", "platform_rollups", "apps"]

[sinks.prometheus]
type = "prometheus"
url = "{url}"
concurrency = 3
batch_size = 500
flush_interval = "100ms"
dead_letter = {dead:?}
{buffer}
"#,
        dead = db.with_file_name("dead-letter.ndjson"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_leaves_in_prometheus_exactly_the_rollups_sqlite_holds() {
    let server = PrometheusServer::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let capture = dir.path().join("capture.bin");
    write_capture(&capture, &simulated_events(11, 20, 20_000, 0.0));
    let db = dir.path().join("sluice.db");
    let config = write_config(
        dir.path(),
        "prometheus.toml",
        &format!(
            r#"
[pipeline]
workers = 2
windows = ["1m", "5m"]

[sources.replay]
type = "file"
path = {capture:?}
{}"#,
            sinks(&db, &server.write_url(), "")
        ),
    );
    let output = tokio::task::spawn_blocking(move || run_config(&config))
        .await
        .expect("sluice ran");
    assert_success(&output);
    assert!(
        !dir.path().join("dead-letter.ndjson").exists(),
        "nothing was refused"
    );

    let expected = expected_samples(&db, &[("", "1m"), ("_5m", "5m")]).await;
    let apps = expected
        .keys()
        .filter(|k| k.starts_with("__name__=sluice_app_requests,") && k.ends_with("window=1m"))
        .count();
    assert_eq!(apps, 20);
    // Half the simulated apps are tagged (SPEC §11): their series carry the names.
    let named = expected
        .keys()
        .filter(|k| {
            k.starts_with("__name__=sluice_app_requests,")
                && k.ends_with("window=1m")
                && k.contains(",app_name=")
                && k.contains(",org_name=")
                && k.contains(",space_name=")
        })
        .count();
    assert!(named > 0 && named < apps, "{named} of {apps} apps named");
    let after = after_last_window(&db).await;
    assert_same_samples(&stored(&server, after).await, &expected);

    // Through PromQL as a dashboard asks: for three apps, every minute SQLite has a row for,
    // query_range at a one-minute step answers that row's value.
    for series in expected
        .keys()
        .filter(|k| k.starts_with("__name__=sluice_app_requests,") && k.ends_with("window=1m"))
        .step_by(7)
    {
        let app = series
            .split(',')
            .find_map(|l| l.strip_prefix("app_id="))
            .expect("an app id");
        for (metric, selector, column) in [
            ("sluice_app_requests", "", "sluice_app_requests,"),
            (
                "sluice_app_latency_seconds",
                r#",quantile="0.95""#,
                "sluice_app_latency_seconds,",
            ),
        ] {
            let rows: BTreeMap<i64, f64> = expected
                .iter()
                .find(|(k, _)| {
                    k.starts_with(&format!("__name__={column}app_id={app},"))
                        && (selector.is_empty() || k.contains("quantile=0.95"))
                        && k.ends_with("window=1m")
                })
                .map(|(_, samples)| samples.iter().copied().collect())
                .expect("the app's series");
            let first = *rows.keys().next().expect("a row") as f64 / 1000.0;
            let last = *rows.keys().last().expect("a row") as f64 / 1000.0;
            let answer = server
                .query_range(
                    &format!(r#"{metric}{{app_id="{app}",window="1m"{selector}}}"#),
                    first,
                    last,
                    60.0,
                )
                .await
                .expect("query_range");
            assert_eq!(answer.len(), 1, "{metric} of {app}: {answer:?}");
            let points: BTreeMap<i64, f64> = answer[0]["values"]
                .as_array()
                .expect("values")
                .iter()
                .map(|p| {
                    let ms = (p[0].as_f64().expect("a time") * 1000.0) as i64;
                    (ms, parse_value(&p[1]))
                })
                .collect();
            for (ms, value) in &rows {
                assert_eq!(points.get(ms), Some(value), "{metric} of {app} at {ms}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_killed_and_restarted_mid_run_loses_nothing_and_duplicates_nothing() {
    let mut server = PrometheusServer::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("sluice.db");
    let buffer = dir.path().join("buffer");
    // 40 000 envelopes at 4 000 a second: ten seconds of writing, about 33 minutes of event
    // time, a few minutes closing every second.
    let config = write_config(
        dir.path(),
        "restart.toml",
        &format!(
            r#"
[sources.simulated]
type = "simulator"
apps = 20
seed = 5
rate = 4000
limit = 40000
clock = "simulated"
start = "2024-03-12T09:00:00Z"
density = 20
{}"#,
            sinks(
                &db,
                &server.write_url(),
                &format!(
                    r#"buffer = {{ type = "disk", path = {buffer:?}, max_size = "1GiB", when_full = "block" }}"#
                )
            )
        ),
    );
    let mut child = sluice()
        .args([
            "run",
            "--no-status",
            "--config",
            config.to_str().expect("utf-8"),
        ])
        .env("SLUICE_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("sluice starts");
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let stderr = child.stderr.take().expect("stderr");
    let reader = {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                lines.lock().expect("lines").push(line.expect("utf-8"));
            }
        })
    };
    let mut child = Reaper(child);
    let logged = |text: &str| {
        lines
            .lock()
            .expect("lines")
            .iter()
            .any(|l| l.contains(text))
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut check = |what: &str| {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}:\n{}",
            lines.lock().expect("lines").join("\n")
        );
        assert!(
            child.0.try_wait().expect("status").is_none(),
            "sluice ended before {what}"
        );
    };

    // The first samples are in: kill Prometheus.
    let later = (1_710_234_000 + 7200) as f64;
    while stored(&server, later).await.is_empty() {
        check("the first samples");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill();
    let rows_at_kill = app_rows(&db).await;
    // The run goes on into the disk buffer while Prometheus is down.
    while !logged("The remote-write receiver is unavailable")
        || app_rows(&db).await < rows_at_kill + 40
    {
        check("the outage to be noticed while rows go on being rolled up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.restart().await;

    let status = tokio::task::spawn_blocking(move || {
        let status = child.0.wait().expect("sluice exits");
        reader.join().expect("stderr read");
        status
    })
    .await
    .expect("joined");
    let lines = lines.lock().expect("lines").join("\n");
    assert!(status.success(), "sluice failed ({status}):\n{lines}");
    assert!(
        lines.contains(&format!("127.0.0.1:{}", server.port)),
        "the outage named the receiver:\n{lines}"
    );
    assert!(lines.contains("available again"), "{lines}");
    assert!(
        !dir.path().join("dead-letter.ndjson").exists(),
        "a request resent after the restart is taken, even one stored before the kill"
    );

    let expected = expected_samples(&db, &[("", "1m")]).await;
    let after = after_last_window(&db).await;
    assert_same_samples(&stored(&server, after).await, &expected);
    // As the issue asks it: every app's minutes counted once.
    let counts = server
        .query(
            r#"count_over_time(sluice_app_requests{window="1m"}[3h])"#,
            after,
        )
        .await
        .expect("a query");
    assert_eq!(counts.len(), 20);
    for series in &counts {
        let app = series["metric"]["app_id"].as_str().expect("app_id");
        // The key has the app's names too, when it has names.
        let prefix = format!("__name__=sluice_app_requests,app_id={app},");
        let rows = expected
            .iter()
            .find(|(k, _)| k.starts_with(&prefix) && k.ends_with("window=1m"))
            .map(|(_, samples)| samples.len())
            .expect("the app's series");
        assert_eq!(series["value"][1], rows.to_string(), "{app}");
    }
}
