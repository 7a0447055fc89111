//! API latency over a big SQLite store: p50/p99 of a 24-hour metrics query (step 1m and 5m)
//! and of log searches over 1 M lines, through HTTP on loopback, one request at a time.
//!
//! `cargo bench -p sluice-api --bench api_latency` fills 1 M log lines of one app (24 h) and
//! 24 h of minute rollups for 100 apps with the real `sqlite` sink. Under `cargo test` (no
//! `--bench` argument) it runs the same code on a tiny store, as a smoke test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_api::auth::Auth;
use sluice_api::live::LiveFeed;
use sluice_api::store::{LogStoreConfig, SqlStoreConfig, Stores};
use sluice_api::{ApiConfig, ApiServer, ApiState};
use sluice_model::Str;
use sluice_model::event::{Event, Header, LogMessage, MessageType, Payload};
use sluice_model::records::Records;
use sluice_model::records::{AppRollup, StreamName};
use sluice_sinks::SinkContext;
use sluice_sinks::sqlite::{self, SqliteSinkConfig};
use tokio_util::sync::CancellationToken;

/// The end of the day the store holds (2026-12-01T00:00:00Z), epoch seconds.
const END: i64 = 1_764_547_200;
const DAY: i64 = 86_400;

/// What a query's answer must hold, checked once before it is timed.
type Check = Box<dyn Fn(&serde_json::Value)>;

struct Size {
    logs: usize,
    apps: usize,
    minutes: i64,
    requests: usize,
}

fn app_id(i: usize) -> String {
    format!("{i:08x}-0000-4000-8000-000000000000")
}

/// A small deterministic generator (xorshift64*): the same store every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// `n` lines of app 0 spread over the day: a third mention an order, one in 10 000 a
/// "checksum mismatch" (the rare term).
fn log_lines(n: usize) -> Vec<Records> {
    let mut rng = Rng(7);
    let header = Header {
        origin: Str::from("rep"),
        deployment: Str::from("cf"),
        job: Str::from("diego_cell"),
        index: Str::from("3"),
        ip: Str::from("10.0.16.4"),
        tags: Default::default(),
    };
    let app = Str::from(app_id(0));
    let start_ns = (END - DAY) * 1_000_000_000;
    let step_ns = DAY * 1_000_000_000 / n as i64;
    let events: Vec<Event> = (0..n)
        .map(|i| {
            let r = rng.next();
            let message = match (i % 10_000, r % 3) {
                (0, _) => format!("checksum mismatch in block {r}"),
                (_, 0) => format!("Processed order {} in {} ms", r % 100_000, r % 900),
                (_, 1) => format!("GET /api/items/{} 200 {} bytes", r % 5000, r % 20_000),
                _ => format!("Heartbeat ok (uptime {}s)", i),
            };
            let at = start_ns + i as i64 * step_ns + (r % 1000) as i64;
            Event {
                timestamp: at,
                header: header.clone(),
                payload: Payload::Log(LogMessage {
                    names: None,
                    message: Bytes::from(message),
                    message_type: if r.is_multiple_of(20) {
                        MessageType::Err
                    } else {
                        MessageType::Out
                    },
                    timestamp: at,
                    app_id: app.clone(),
                    source_type: Str::from("APP/PROC/WEB"),
                    source_instance: Str::from(format!("{}", r % 4)),
                }),
            }
        })
        .collect();
    events
        .chunks(5000)
        .map(|c| Records::Logs(c.to_vec()))
        .collect()
}

/// `minutes` minute rollups ending at END for each of `apps` apps.
fn rollups(apps: usize, minutes: i64) -> Vec<Records> {
    let mut rng = Rng(11);
    let mut rows = Vec::new();
    for app in 0..apps {
        let id = Str::from(app_id(app));
        for m in 0..minutes {
            let r = rng.next();
            let requests = r % 500;
            rows.push(AppRollup {
                names: None,
                app_id: id.clone(),
                minute: END - (minutes - m) * 60,
                window: 60,
                instances: 2,
                cpu_avg: Some((r % 100) as f64 / 2.0),
                cpu_max: Some((r % 100) as f64),
                memory_avg: Some(2.0e8),
                memory_max: Some(3 << 28),
                disk_avg: Some(1.0e9),
                disk_max: Some(1 << 30),
                requests,
                status_2xx: requests * 9 / 10,
                status_3xx: 0,
                status_4xx: requests / 20,
                status_5xx: requests - requests * 9 / 10 - requests / 20,
                response_bytes: requests as i64 * 1500,
                latency_avg_ms: (requests > 0).then_some(12.0),
                latency_max_ms: (requests > 0).then_some(250.0),
                latency_p50_ms: (requests > 0).then_some(9.0),
                latency_p95_ms: (requests > 0).then_some(60.0),
                latency_p99_ms: (requests > 0).then_some(120.0),
                log_lines: r % 300,
                log_err_lines: r % 7,
                app_events: u64::from(r.is_multiple_of(97)),
                is_final: true,
            });
        }
    }
    rows.chunks(5000)
        .map(|c| Records::AppRollups(c.to_vec()))
        .collect()
}

async fn fill(config: &SqliteSinkConfig, records: Vec<Records>) {
    let (ctx, sender) = SinkContext::new("bench", 16, CancellationToken::new());
    let feeder = std::thread::spawn(move || {
        for batch in records {
            assert!(sender.send_blocking(batch), "the sink stopped early");
        }
    });
    sqlite::run(config.clone(), ctx).await.expect("written");
    feeder.join().expect("feeder");
}

/// Latencies of `n` GETs of `path`, after one unmeasured request; checks each answers 200
/// with what `check` expects.
async fn measure(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    n: usize,
    check: impl Fn(&serde_json::Value),
) -> Vec<Duration> {
    let get = || async {
        let response = client
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("the API answers");
        assert_eq!(response.status(), 200, "{path}");
        response.json::<serde_json::Value>().await.expect("JSON")
    };
    check(&get().await);
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let body = get().await;
        latencies.push(start.elapsed());
        std::hint::black_box(body);
    }
    latencies.sort();
    latencies
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1000.0
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let size = if full {
        Size {
            logs: 1_000_000,
            apps: 100,
            minutes: 1440,
            requests: 200,
        }
    } else {
        Size {
            logs: 20_000,
            apps: 3,
            minutes: 1440,
            requests: 3,
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(run(size));
}

async fn run(size: Size) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = SqliteSinkConfig::new(dir.path().join("bench.db"), StreamName::all());
    let started = Instant::now();
    let mut records = rollups(size.apps, size.minutes);
    records.extend(log_lines(size.logs));
    fill(&config, records).await;
    let db_bytes = std::fs::metadata(&config.path).map_or(0, |m| m.len());
    println!(
        "filled {} log lines and {} rollup rows ({} apps x {} minutes) with the sqlite sink in {:.1} s; file {} MiB",
        size.logs,
        size.apps as i64 * size.minutes,
        size.apps,
        size.minutes,
        started.elapsed().as_secs_f64(),
        db_bytes >> 20
    );

    let stores = Stores::open(
        Some(SqlStoreConfig::Sqlite(config.clone())),
        Some(LogStoreConfig::Sqlite(config.clone())),
        vec![],
    )
    .expect("stores");
    let state = ApiState {
        auth: Arc::new(Auth::none()),
        stores: Arc::new(stores),
        live: Arc::new(LiveFeed::default()),
        limits: Default::default(),
    };
    let server = ApiServer::start(&ApiConfig::open("127.0.0.1:0"), state)
        .await
        .expect("the API starts");
    let base = format!("http://{}", server.address);
    let client = sluice_common::tls::http_client(false).expect("an HTTP client");
    let app = app_id(size.apps / 2);
    let logs_app = app_id(0);
    let day = format!("from={}&to={END}", END - DAY);
    let points = |n: usize| {
        move |body: &serde_json::Value| {
            assert_eq!(body["points"].as_array().map(Vec::len), Some(n), "{body}");
        }
    };
    let page = |body: &serde_json::Value| {
        assert_eq!(
            body["logs"].as_array().map(Vec::len),
            Some(100),
            "a full page"
        );
    };
    let rare_lines = (size.logs / 10_000).min(100);
    let rare = move |body: &serde_json::Value| {
        let expected = rare_lines;
        assert_eq!(body["logs"].as_array().map(Vec::len), Some(expected));
    };
    let queries: Vec<(String, String, Check)> = vec![
        (
            "metrics 24 h, step=1m (1440 points)".to_owned(),
            format!("/api/v1/apps/{app}/metrics?{day}&step=1m"),
            Box::new(points(1440)),
        ),
        (
            "metrics 24 h, step=5m (288 points)".to_owned(),
            format!("/api/v1/apps/{app}/metrics?{day}&step=5m"),
            Box::new(points(288)),
        ),
        (
            "logs 24 h, newest 100, no q".to_owned(),
            format!("/api/v1/apps/{logs_app}/logs?{day}&limit=100"),
            Box::new(page),
        ),
        (
            "logs 24 h, q=\"processed order\" (1/3 match), 100".to_owned(),
            format!("/api/v1/apps/{logs_app}/logs?{day}&q=processed%20order&limit=100"),
            Box::new(page),
        ),
        (
            "logs 24 h, q=\"checksum\" (1/10000 match), 100".to_owned(),
            format!("/api/v1/apps/{logs_app}/logs?{day}&q=checksum&limit=100"),
            Box::new(rare),
        ),
    ];
    println!(
        "\n{:<52} {:>6} {:>10} {:>10}",
        "request (SQLite, loopback HTTP, sequential)", "n", "p50 ms", "p99 ms"
    );
    for (name, path, check) in &queries {
        // The rare-term search reads every line of the day: fewer rounds keep the run short.
        let n = if name.contains("checksum") {
            (size.requests / 4).max(1)
        } else {
            size.requests
        };
        let latencies = measure(&client, &base, path, n, check).await;
        println!(
            "{name:<52} {n:>6} {:>10.2} {:>10.2}",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99)
        );
    }
    server.stop().await;
}
