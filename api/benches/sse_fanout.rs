//! What live streams cost: N concurrent `GET /api/v1/apps/{id}/stream` clients over real HTTP,
//! fed rollup rows through the [`LiveFeed`] the way the dataflow feeds it.
//!
//! `cargo bench -p sluice-api --bench sse_fanout`
//!
//! Reports, for 100 streams (spread over 10 apps, so each row reaches 10 streams, and all on one
//! app, so each row reaches 100):
//! - the time the publishing (dataflow) thread spends per row, against no stream open;
//! - the delivery latency from publish to a client having parsed the event, p50 / p99;
//! - the process CPU time per delivered event (server and clients share the process).
//!
//! Under `cargo test` (no `--bench` argument) it runs a few rows through a few streams, to
//! prove the harness works.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use sluice_api::auth::Auth;
use sluice_api::live::LiveFeed;
use sluice_api::store::Stores;
use sluice_api::{ApiConfig, ApiServer, ApiState};
use sluice_model::records::AppRollup;
use tokio::sync::mpsc;

struct Scenario {
    streams: usize,
    apps: usize,
    rows: usize,
    rows_per_second: u64,
}

fn app_id(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012x}")
}

/// A row whose `response_bytes` carries its publish time (ns since `epoch`), for latency.
fn row(app: usize, sent_ns: i64) -> AppRollup {
    AppRollup {
        names: None,
        app_id: app_id(app).into(),
        minute: 1_796_190_240,
        window: 60,
        instances: 2,
        cpu_avg: Some(7.6),
        cpu_max: Some(11.6),
        memory_avg: Some(1.1e9),
        memory_max: Some(1_310_248_859),
        disk_avg: Some(4.9e8),
        disk_max: Some(508_838_178),
        requests: 23,
        status_2xx: 22,
        status_3xx: 0,
        status_4xx: 1,
        status_5xx: 0,
        response_bytes: sent_ns,
        latency_avg_ms: Some(40.2),
        latency_max_ms: Some(156.7),
        latency_p50_ms: Some(29.1),
        latency_p95_ms: Some(125.6),
        latency_p99_ms: Some(156.7),
        log_lines: 89,
        log_err_lines: 10,
        app_events: 0,
        is_final: false,
    }
}

/// User + system CPU time of this process.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Linux reports in clock ticks of 1/100 s on every platform Sluice supports.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

async fn run(scenario: &Scenario) {
    let live = Arc::new(LiveFeed::new());
    let state = ApiState {
        auth: Arc::new(Auth::none()),
        stores: Arc::new(Stores::open(None, None, Vec::new()).expect("no stores")),
        live: live.clone(),
        limits: Default::default(),
    };
    let server = ApiServer::start(&ApiConfig::open("127.0.0.1:0"), state)
        .await
        .expect("the API starts");
    let client = sluice_common::tls::http_client(false).expect("a client");
    let epoch = Instant::now();
    let (latencies_tx, mut latencies_rx) = mpsc::unbounded_channel::<Duration>();
    let mut clients = Vec::new();
    for i in 0..scenario.streams {
        let url = format!(
            "http://{}/api/v1/apps/{}/stream",
            server.address,
            app_id(i % scenario.apps)
        );
        let response = client.get(url).send().await.expect("the stream opens");
        let latencies = latencies_tx.clone();
        clients.push(tokio::spawn(async move {
            let mut body = response.bytes_stream();
            let mut buffer = String::new();
            while let Some(Ok(chunk)) = body.next().await {
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buffer.find("\n\n") {
                    let message: String = buffer.drain(..end + 2).collect();
                    let Some(data) = message.lines().find_map(|l| l.strip_prefix("data: ")) else {
                        continue;
                    };
                    let point: serde_json::Value = serde_json::from_str(data).expect("json");
                    let sent = point["response_bytes"].as_u64().expect("sent time");
                    let _ = latencies.send(epoch.elapsed() - Duration::from_nanos(sent));
                }
            }
        }));
    }
    drop(latencies_tx);
    let deadline = Instant::now() + Duration::from_secs(30);
    while live.stream_count() < scenario.streams {
        assert!(Instant::now() < deadline, "streams did not open");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // The graph side: publishing runs on a worker thread, paced like a flush.
    let publisher_live = live.clone();
    let rows = scenario.rows;
    let apps = scenario.apps;
    let pace = Duration::from_nanos(1_000_000_000 / scenario.rows_per_second.max(1));
    let cpu_before = cpu_time();
    let publisher = std::thread::spawn(move || {
        let mut publishing = Duration::ZERO;
        let started = Instant::now();
        for i in 0..rows {
            let due = pace * i as u32;
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
            let rollup = row(i % apps, epoch.elapsed().as_nanos() as i64);
            let before = Instant::now();
            publisher_live.publish_rollups(std::slice::from_ref(&rollup));
            publishing += before.elapsed();
        }
        publishing
    });
    let publishing = tokio::task::spawn_blocking(move || publisher.join().expect("publisher"))
        .await
        .expect("join");

    let expected = scenario.rows * scenario.streams / scenario.apps;
    let mut latencies = Vec::with_capacity(expected);
    while latencies.len() < expected {
        match tokio::time::timeout(Duration::from_secs(30), latencies_rx.recv()).await {
            Ok(Some(latency)) => latencies.push(latency),
            _ => panic!(
                "only {} of {expected} events were delivered",
                latencies.len()
            ),
        }
    }
    let cpu = cpu_time().saturating_sub(cpu_before);
    latencies.sort();
    println!(
        "{:>3} streams over {:>3} apps, {} rows at {}/s: publish {:>6.2} µs/row | delivery p50 {:>7.2} ms p99 {:>7.2} ms | CPU {:>6.1} µs/event ({} events)",
        scenario.streams,
        scenario.apps,
        scenario.rows,
        scenario.rows_per_second,
        publishing.as_secs_f64() * 1e6 / scenario.rows as f64,
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        cpu.as_secs_f64() * 1e6 / latencies.len() as f64,
        latencies.len(),
    );
    live.close();
    for client in clients {
        let _ = client.await;
    }
    server.stop().await;
}

/// Publishing with nobody watching: what every rollup batch costs the graph when the API is on.
fn unwatched(rows: usize) {
    let live = LiveFeed::new();
    let batch: Vec<AppRollup> = (0..1000).map(|i| row(i, 0)).collect();
    let batches = rows / batch.len();
    let started = Instant::now();
    for _ in 0..batches {
        live.publish_rollups(std::hint::black_box(&batch));
    }
    println!(
        "no stream open: publish {:.1} ns per batch of {}",
        started.elapsed().as_secs_f64() * 1e9 / batches as f64,
        batch.len()
    );
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let scenarios = if benching {
        vec![
            Scenario {
                streams: 100,
                apps: 10,
                rows: 20_000,
                rows_per_second: 2_000,
            },
            Scenario {
                streams: 100,
                apps: 1,
                rows: 5_000,
                rows_per_second: 500,
            },
        ]
    } else {
        vec![Scenario {
            streams: 4,
            apps: 2,
            rows: 20,
            rows_per_second: 1_000,
        }]
    };
    unwatched(if benching { 10_000_000 } else { 10_000 });
    for scenario in &scenarios {
        runtime.block_on(run(scenario));
    }
}
