//! The metrics endpoint over a year of minute rows for one app (issue #18): the largest
//! requests it allows answer with the process's RSS growing by less than 64 MiB, because
//! minutes are merged into buckets as they are read; larger ones are refused with a 400
//! naming the limit.
//!
//! One test in its own binary: it measures the process's peak RSS (`VmHWM`, reset through
//! `/proc/self/clear_refs`), which other tests running beside it would disturb.

mod support;

use std::time::{Duration, Instant};

use sluice_api::store::{SqlStoreConfig, Stores};
use sluice_api::{ApiConfig, ApiLimits};
use sqlx::ConnectOptions;
use support::*;

const APP: &str = "6a3a2a1e-7b55-4c61-9d0b-0a6e4f9c1b2d";
/// 2025-01-01T00:00:00Z.
const YEAR_START: i64 = 1_735_689_600;
const YEAR: i64 = 365 * 86_400;
const MIB: u64 = 1024 * 1024;

/// `VmRSS` and `VmHWM` (peak) of this process, in bytes.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kib| kib * 1024)
            .unwrap_or_else(|| panic!("{name} in /proc/self/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Makes `VmHWM` start again from the current RSS.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
}

/// A year of minute rows for `APP` (and a day for another app), in the table the sink made.
async fn year_of_minutes(path: &std::path::Path) {
    let mut connection = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .expect("open the store");
    let sql = format!(
        "WITH RECURSIVE m(minute) AS (SELECT {YEAR_START} UNION ALL \
         SELECT minute + 60 FROM m WHERE minute + 60 < {end}) \
         INSERT INTO app_metric_rollup (app_id, minute, instances, cpu_avg, cpu_max, \
         memory_avg, memory_max, disk_avg, disk_max, requests, status_2xx, status_3xx, \
         status_4xx, status_5xx, response_bytes, latency_avg_ms, latency_max_ms, latency_p50_ms, \
         latency_p95_ms, latency_p99_ms, log_lines, log_err_lines, app_events) \
         SELECT '{APP}', minute, 2, 12.5, 40.0, 1.5e8, 200000000, 3.0e8, 400000000, 600, 590, \
         4, 5, 1, 123456, 12.0, 250.0, 10.0, 40.0, 90.0, 700, 3, 0 FROM m",
        end = YEAR_START + YEAR
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut connection)
        .await
        .expect("a year of minutes");
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM app_metric_rollup")
        .fetch_one(&mut connection)
        .await
        .expect("count");
    assert_eq!(count, YEAR / 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_year_of_minutes_answers_the_largest_allowed_request_in_bounded_memory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = fill_sqlite(&dir.path().join("sluice.db"), Vec::new()).await;
    year_of_minutes(&config.path).await;
    // Unoptimised test builds read a year of rows slower than a release build: a budget
    // that leaves room for that (the time is measured by the benchmark, not here).
    let api = ApiConfig {
        limits: ApiLimits {
            query_timeout: Duration::from_secs(300),
            ..ApiLimits::default()
        },
        ..ApiConfig::open("127.0.0.1:0")
    };
    let stores = Stores::open_limited(
        Some(SqlStoreConfig::Sqlite(config.clone())),
        None,
        vec![],
        &api.limits,
    )
    .expect("stores open");
    let (server, base) = start_api_with(stores, &api).await;
    let app = format!("/api/v1/apps/{APP}/metrics");
    let year = format!("from={YEAR_START}&to={}", YEAR_START + YEAR);

    // Too many points: refused before anything is read, naming the limit and a step that fits.
    let (status, body) = get(&base, &format!("{app}?{year}&step=1m")).await;
    assert_eq!(status, 400, "{body}");
    let error = body["error"].as_str().expect("an error message");
    assert!(error.contains("api.limits.max_points"), "{error}");
    assert!(error.contains("step=1h 46m"), "{error}");
    // Whatever way a step or a time is written, the same rules hold.
    for query in [
        format!("{year}&step=99999999999999999m"),
        format!("{year}&step=9223372036854775807s"),
        "from=1970-01-01T00:00:00%2B23:59&to=100000".to_owned(),
        "from=-1&to=100000".to_owned(),
    ] {
        let (status, body) = get(&base, &format!("{app}?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body["error"].is_string(), "{query}: {body}");
    }

    // Warm up pools, threads and allocator arenas with a small answer first.
    get_ok(
        &base,
        &format!("{app}?from={YEAR_START}&to={}", YEAR_START + 3600),
    )
    .await;
    let (before, _) = rss();
    reset_peak();
    // The largest answers allowed (5000 points: 1h 46m steps over the year), and the
    // widest merges: every one of the year's 525 600 minutes read and merged.
    for step in ["1h%2046m", "1d", "7d"] {
        let started = Instant::now();
        let body = get_ok(&base, &format!("{app}?{year}&step={step}")).await;
        let points = body["points"].as_array().expect("points");
        assert!(!points.is_empty() && points.len() <= 5000, "{step}");
        let requests: i64 = points
            .iter()
            .map(|p| p["requests"].as_i64().expect("requests"))
            .sum();
        assert_eq!(
            requests,
            600 * YEAR / 60,
            "{step}: every minute is counted once"
        );
        eprintln!(
            "step={step}: {} points in {:?}",
            points.len(),
            started.elapsed()
        );
    }
    let (_, peak) = rss();
    let growth = peak.saturating_sub(before);
    eprintln!(
        "RSS before {} MiB, peak {} MiB, growth {} MiB",
        before / MIB,
        peak / MIB,
        growth / MIB
    );
    assert!(
        growth < 64 * MIB,
        "the largest allowed requests grew RSS by {} MiB (from {} MiB)",
        growth / MIB,
        before / MIB
    );
    server.stop().await;
}
