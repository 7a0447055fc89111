//! Ingestion under hostile reads (issue #18): the `sqlite` sink writing log lines into its
//! file as fast as it takes them, alone and then while twenty clients send the worst requests
//! the API allows, over and over, to the API reading the same file. Reports the ingestion rate
//! of both runs and what the readers got (status counts, latency percentiles).
//!
//! `cargo bench -p sluice-api --bench hostile_load` stores a year of minute rows for one app
//! and 200 000 log lines of another, then writes 300 000 more lines per run. Under
//! `cargo test` (no `--bench` argument) it runs the same code on a tiny store, as a smoke test.
//!
//! The worst requests: metrics over the whole year at the most points an answer carries
//! (step 1h 46m) and at step 7d (every minute read and merged), log searches over the whole
//! store with the most terms allowed (16, none of which occur: every line is read) and with
//! one term of the longest length allowed.
//!
//! `SLUICE_BENCH_RATE=20000` offers the lines at that rate (a live foundation's pace) instead of
//! as fast as the sink takes them: the question is then whether ingestion keeps up.
//!
//! Each reader keeps one request in flight; after a 503 (the API is busy) it waits
//! `SLUICE_BENCH_RETRY_MS` (default 1000, as a client honouring "try again shortly" would)
//! before the next. `SLUICE_BENCH_RETRY_MS=0` retries at once: a request flood, which only a
//! rate limit in front of the API can stop.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_api::auth::Auth;
use sluice_api::live::LiveFeed;
use sluice_api::store::{LogStoreConfig, SqlStoreConfig, Stores};
use sluice_api::{ApiConfig, ApiServer, ApiState};
use sluice_model::Str;
use sluice_model::event::{Event, Header, LogMessage, MessageType, Payload};
use sluice_model::records::{Records, StreamName};
use sluice_sinks::SinkContext;
use sluice_sinks::sqlite::{self, SqliteSinkConfig};
use sqlx::ConnectOptions;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// 2025-01-01T00:00:00Z.
const YEAR_START: i64 = 1_735_689_600;
const YEAR: i64 = 365 * 86_400;
const READERS: usize = 20;
const METRICS_APP: &str = "00000001-0000-4000-8000-000000000000";
const LOGS_APP: &str = "00000002-0000-4000-8000-000000000000";
const INGEST_APP: &str = "00000003-0000-4000-8000-000000000000";

struct Size {
    minutes: i64,
    stored_lines: usize,
    ingested_lines: usize,
}

/// `n` log lines of `app` from `start_ns`, a second apart.
fn lines(app: &str, start_ns: i64, n: usize, salt: u64) -> Vec<Records> {
    let header = Header {
        origin: Str::from("rep"),
        deployment: Str::from("cf"),
        job: Str::from("diego_cell"),
        index: Str::from("3"),
        ip: Str::from("10.0.16.4"),
        tags: Default::default(),
    };
    let app = Str::from(app);
    let events: Vec<Event> = (0..n)
        .map(|i| {
            let at = start_ns + i as i64 * 1_000_000_000;
            let r = (i as u64 ^ salt).wrapping_mul(0x2545_f491_4f6c_dd1d);
            Event {
                timestamp: at,
                header: header.clone(),
                payload: Payload::Log(LogMessage {
                    names: None,
                    message: Bytes::from(format!(
                        "Processed order {} in {} ms for customer {}",
                        r % 100_000,
                        r % 900,
                        r % 7919
                    )),
                    message_type: MessageType::Out,
                    timestamp: at,
                    app_id: app.clone(),
                    source_type: Str::from("APP/PROC/WEB"),
                    source_instance: Str::from(format!("{}", r % 4)),
                }),
            }
        })
        .collect();
    events
        .chunks(1000)
        .map(|c| Records::Logs(c.to_vec()))
        .collect()
}

/// Runs the sink over `records` until they are all written; the seconds it took. `rate`
/// (lines/s): the feeder offers batches no faster than that, as a live source does; 0: as
/// fast as the sink takes them.
async fn ingest(config: &SqliteSinkConfig, records: Vec<Records>, rate: u64) -> f64 {
    let (ctx, sender) = SinkContext::new("bench", 16, CancellationToken::new());
    let started = Instant::now();
    let feeder = std::thread::spawn(move || {
        let mut offered = 0u64;
        for batch in records {
            if rate > 0 {
                // Pacing the offer, not waiting for anything: the bench's input clock.
                let due = started + Duration::from_secs_f64(offered as f64 / rate as f64);
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
            offered += batch.len() as u64;
            assert!(sender.send_blocking(batch), "the sink stopped early");
        }
    });
    sqlite::run(config.clone(), ctx).await.expect("written");
    feeder.join().expect("feeder");
    started.elapsed().as_secs_f64()
}

/// A year (or `minutes`) of minute rows for METRICS_APP, straight into the sink's table.
async fn minutes(config: &SqliteSinkConfig, minutes: i64) {
    let mut connection = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&config.path)
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
         SELECT '{METRICS_APP}', minute, 2, 12.5, 40.0, 1.5e8, 200000000, 3.0e8, 400000000, \
         600, 590, 4, 5, 1, 123456, 12.0, 250.0, 10.0, 40.0, 90.0, 700, 3, 0 FROM m",
        end = YEAR_START + minutes * 60
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut connection)
        .await
        .expect("minute rows");
}

/// The worst requests the API allows.
fn worst_requests() -> Vec<(&'static str, String)> {
    let year = format!("from={YEAR_START}&to={}", YEAR_START + YEAR);
    let absent: Vec<String> = (0..16).map(|i| format!("zq{i}xv")).collect();
    let long_term = "y".repeat(256);
    vec![
        (
            "metrics, a year at 5000 points",
            format!("/api/v1/apps/{METRICS_APP}/metrics?{year}&step=1h%2046m"),
        ),
        (
            "metrics, a year at step 7d",
            format!("/api/v1/apps/{METRICS_APP}/metrics?{year}&step=7d"),
        ),
        (
            "logs, 16 absent terms",
            format!(
                "/api/v1/apps/{LOGS_APP}/logs?from=0&to=4000000000&limit=1000&q={}",
                absent.join("+")
            ),
        ),
        (
            "logs, one 256-byte term",
            format!("/api/v1/apps/{LOGS_APP}/logs?from=0&to=4000000000&limit=1000&q={long_term}"),
        ),
    ]
}

#[derive(Default)]
struct Answers {
    /// (request, status) → latencies.
    by_kind: BTreeMap<(&'static str, u16), Vec<Duration>>,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1000.0
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let size = if full {
        Size {
            minutes: YEAR / 60,
            stored_lines: 200_000,
            ingested_lines: 300_000,
        }
    } else {
        Size {
            minutes: 1440,
            stored_lines: 2_000,
            ingested_lines: 3_000,
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(run(size));
}

async fn run(size: Size) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = SqliteSinkConfig::new(dir.path().join("bench.db"), StreamName::all());
    let started = Instant::now();
    ingest(
        &config,
        lines(LOGS_APP, YEAR_START * 1_000_000_000, size.stored_lines, 1),
        0,
    )
    .await;
    minutes(&config, size.minutes).await;
    println!(
        "stored {} minute rows and {} log lines in {:.1} s",
        size.minutes,
        size.stored_lines,
        started.elapsed().as_secs_f64()
    );

    let api = ApiConfig::open("127.0.0.1:0");
    let stores = Stores::open_limited(
        Some(SqlStoreConfig::Sqlite(config.clone())),
        Some(LogStoreConfig::Sqlite(config.clone())),
        vec![],
        &api.limits,
    )
    .expect("stores");
    let state = ApiState {
        auth: Arc::new(Auth::none()),
        stores: Arc::new(stores),
        live: Arc::new(LiveFeed::default()),
        limits: Default::default(),
    };
    let server = ApiServer::start(&api, state).await.expect("the API starts");
    let base = format!("http://{}", server.address);

    let rate: u64 = std::env::var("SLUICE_BENCH_RATE")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    if rate > 0 {
        println!("lines offered at {rate} lines/s");
    } else {
        println!("lines offered as fast as the sink takes them");
    }
    // Each run writes lines of its own time range, so both write the same kind of rows.
    let ingest_start = (YEAR_START + YEAR) * 1_000_000_000;
    let quiet = ingest(
        &config,
        lines(INGEST_APP, ingest_start, size.ingested_lines, 2),
        rate,
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Answers::default()));
    let requests = Arc::new(worst_requests());
    let retry = Duration::from_millis(
        std::env::var("SLUICE_BENCH_RETRY_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(1000),
    );
    println!("readers wait {retry:?} after a 503");
    let mut readers = Vec::new();
    for reader in 0..READERS {
        let (stop, answers, requests, base) = (
            stop.clone(),
            answers.clone(),
            requests.clone(),
            base.clone(),
        );
        readers.push(tokio::spawn(async move {
            let client = sluice_common::tls::http_client(false).expect("an HTTP client");
            let mut i = reader;
            while !stop.load(Ordering::Relaxed) {
                let (name, path) = &requests[i % requests.len()];
                i += 1;
                let started = Instant::now();
                let response = client
                    .get(format!("{base}{path}"))
                    .send()
                    .await
                    .expect("the API answers");
                let status = response.status().as_u16();
                let body = response.bytes().await.expect("a body");
                assert!(
                    matches!(status, 200 | 503),
                    "{name}: {status} {}",
                    String::from_utf8_lossy(&body)
                );
                answers
                    .lock()
                    .await
                    .by_kind
                    .entry((name, status))
                    .or_default()
                    .push(started.elapsed());
                if status == 503 && !retry.is_zero() {
                    tokio::time::sleep(retry).await;
                }
            }
        }));
    }
    let loaded = ingest(
        &config,
        lines(
            INGEST_APP,
            ingest_start + size.ingested_lines as i64 * 1_000_000_000,
            size.ingested_lines,
            3,
        ),
        rate,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await.expect("a reader");
    }
    server.stop().await;

    let rate = |secs: f64| size.ingested_lines as f64 / secs;
    println!(
        "\ningestion (sqlite sink, {} log lines):\n  alone:                    {:>10.0} lines/s ({quiet:.2} s)\n  with {READERS} hostile readers:  {:>10.0} lines/s ({loaded:.2} s), {:.0}% of alone",
        size.ingested_lines,
        rate(quiet),
        rate(loaded),
        100.0 * rate(loaded) / rate(quiet)
    );
    println!(
        "\n{:<36} {:>6} {:>7} {:>10} {:>10}",
        "reader request", "status", "n", "p50 ms", "p99 ms"
    );
    let mut answers = answers.lock().await;
    for ((name, status), latencies) in answers.by_kind.iter_mut() {
        latencies.sort();
        println!(
            "{name:<36} {status:>6} {:>7} {:>10.1} {:>10.1}",
            latencies.len(),
            percentile(latencies, 0.5),
            percentile(latencies, 0.99)
        );
    }
}
