//! Samples per second the `prometheus` sink writes end to end (rows received → requests
//! planned → protobuf + Snappy → HTTP), into a real Prometheus and into a receiver that reads
//! each body and discards it; and the ratio to the rate at which the graph produces rollup
//! samples in `sluice bench` (5 M envelopes, 5 000 apps, an hour of event time).
//!
//! `cargo bench -p sluice-sinks --bench prometheus_sink` (`SLUICE_TEST_PROMETHEUS_BIN` or
//! `prometheus` on `PATH`; `SLUICE_BENCH_GRAPH_RATE` = the envelopes/s `sluice bench` measured
//! on the machine, default 1.2 M). Under `cargo test` it runs once on a few rows and checks
//! what Prometheus holds.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::StatusCode;
use sluice_model::Str;
use sluice_model::event::{Event, Payload};
use sluice_model::records::{AppRollup, MetricKind, PlatformRollup, Records, minute_of};
use sluice_simulator::{Clock, Generator, SimulatorConfig};
use sluice_sinks::SinkContext;
use sluice_sinks::prometheus::{self as sink, PrometheusSinkConfig};
use sluice_test_support::prometheus::PrometheusServer;
use tokio_util::sync::CancellationToken;

const START: i64 = 1_710_234_000;

/// Final rows of `apps` apps and `series` platform series (two gauges to a counter) over
/// `minutes` minutes, every column present: 21 samples an app row, 5 a gauge's, 3 a
/// counter's. One batch per minute and stream, as the graph sends a closing minute.
fn rows(apps: usize, series: usize, minutes: i64) -> (Vec<Records>, usize) {
    let mut batches = Vec::new();
    let mut samples = 0;
    for m in 0..minutes {
        let minute = START + 60 * m;
        let app_rows: Vec<AppRollup> = (0..apps)
            .map(|a| AppRollup {
                names: None,
                app_id: Str::from(format!("{a:08x}-58cc-4372-a567-0e02b2c3d479")),
                minute,
                window: 60,
                instances: 1 + (a % 4) as u32,
                cpu_avg: Some(12.5 + a as f64 / 100.0),
                cpu_max: Some(40.0),
                memory_avg: Some(256e6 + m as f64),
                memory_max: Some(300_000_000),
                disk_avg: Some(1e9),
                disk_max: Some(1_100_000_000),
                requests: 40 + m as u64,
                status_2xx: 36,
                status_3xx: 2,
                status_4xx: 1,
                status_5xx: 1,
                response_bytes: 40 * 2048,
                latency_avg_ms: Some(12.25),
                latency_max_ms: Some(180.0),
                latency_p50_ms: Some(9.5),
                latency_p95_ms: Some(60.0),
                latency_p99_ms: Some(150.0),
                log_lines: 120,
                log_err_lines: 3,
                app_events: 0,
                is_final: true,
            })
            .collect();
        samples += app_rows.len() * 21;
        for chunk in app_rows.chunks(1024) {
            batches.push(Records::AppRollups(chunk.to_vec()));
        }
        let platform: Vec<PlatformRollup> = (0..series)
            .map(|s| {
                let gauge = s % 3 != 2;
                samples += if gauge { 5 } else { 3 };
                PlatformRollup {
                    origin: Str::from(["rep", "gorouter", "doppler", "bbs"][s % 4]),
                    job: Str::from("diego_cell"),
                    instance: Str::from((s % 20).to_string()),
                    name: Str::from(format!("metric_{s}")),
                    minute,
                    window: 60,
                    kind: if gauge {
                        MetricKind::Gauge
                    } else {
                        MetricKind::Counter
                    },
                    unit: Str::from(if gauge { "ms" } else { "" }),
                    samples: 6,
                    value_avg: gauge.then_some(10.0),
                    value_min: gauge.then_some(1.0),
                    value_max: gauge.then_some(20.0),
                    value_last: gauge.then_some(12.0),
                    delta_sum: (!gauge).then_some(100),
                    total_last: (!gauge).then_some(10_000 + m as u64),
                    is_final: true,
                }
            })
            .collect();
        batches.push(Records::PlatformRollups(platform));
    }
    (batches, samples)
}

/// Runs the sink over `batches` into `url`; the time from the first row to the last stored.
async fn run(url: &str, batches: Vec<Records>, concurrency: usize) -> Duration {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = PrometheusSinkConfig::new(url);
    config.concurrency = concurrency.try_into().expect("non-zero");
    config.dead_letter = Some(dir.path().join("dead.ndjson"));
    let (ctx, sender) = SinkContext::new("bench", 16, CancellationToken::new());
    let metrics = ctx.metrics.clone();
    let started = Instant::now();
    let feeder = std::thread::spawn(move || {
        for batch in batches {
            assert!(sender.send_blocking(batch), "the sink stopped");
        }
    });
    sink::run(config, ctx).await.expect("sink");
    let elapsed = started.elapsed();
    feeder.join().expect("feeder");
    assert_eq!(
        metrics.dead_lettered.get(),
        0,
        "the receiver refused requests"
    );
    elapsed
}

/// A receiver that reads each request's body to the end and discards it.
async fn discarding_receiver() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let address = listener.local_addr().expect("address");
    let app = axum::Router::new().route(
        "/api/v1/write",
        axum::routing::post(|body: Bytes| async move {
            drop(body);
            StatusCode::NO_CONTENT
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}/api/v1/write")
}

/// Rollup samples the graph writes per envelope of `sluice bench`'s traffic (5 000 apps, 5 M
/// envelopes over an hour): each (app, minute) with records is a row of 10 samples, 5 more
/// with HTTP requests, 6 more with container metrics; each platform series' minute 5 samples
/// (gauge) or 3 (counter).
fn rollup_samples_per_envelope(apps: u32, envelopes: u64) -> (f64, usize) {
    let config = SimulatorConfig {
        apps,
        rate: 0,
        limit: Some(envelopes),
        clock: Clock::Simulated,
        density: envelopes.div_ceil(3600),
        ..SimulatorConfig::default()
    };
    let mut generator = Generator::new(&config);
    // (has http, has container metrics) per app minute; gauge or counter per series minute.
    let mut app_minutes: HashMap<(Str, i64), (bool, bool)> = HashMap::new();
    let mut series_minutes: HashMap<(Str, Str, Str, Str, i64), bool> = HashMap::new();
    let mut events: Vec<Event> = Vec::with_capacity(100_000);
    let mut left = envelopes;
    while left > 0 {
        let n = left.min(100_000);
        events.clear();
        generator.fill(n as usize, &mut events);
        left -= n;
        for event in &events {
            let header = &event.header;
            match &event.payload {
                Payload::Log(log) => {
                    app_minutes
                        .entry((log.app_id.clone(), minute_of(log.timestamp)))
                        .or_default();
                }
                Payload::Http(http) => {
                    if let Some(app) = http.application_id {
                        let key = (Str::from(app.to_string()), minute_of(http.stop_timestamp));
                        app_minutes.entry(key).or_default().0 = true;
                    }
                }
                Payload::Container(c) => {
                    let key = (c.application_id.clone(), minute_of(event.timestamp));
                    app_minutes.entry(key).or_default().1 = true;
                }
                Payload::Value(v) => {
                    let key = (
                        header.origin.clone(),
                        header.job.clone(),
                        header.index.clone(),
                        v.name.clone(),
                        minute_of(event.timestamp),
                    );
                    series_minutes.entry(key).or_insert(true);
                }
                Payload::Counter(c) => {
                    let key = (
                        header.origin.clone(),
                        header.job.clone(),
                        header.index.clone(),
                        c.name.clone(),
                        minute_of(event.timestamp),
                    );
                    series_minutes.entry(key).or_insert(false);
                }
                Payload::Error(_) => {}
            }
        }
    }
    let app_samples: usize = app_minutes
        .values()
        .map(|(http, container)| 10 + 5 * usize::from(*http) + 6 * usize::from(*container))
        .sum();
    let platform_samples: usize = series_minutes
        .values()
        .map(|gauge| if *gauge { 5 } else { 3 })
        .sum();
    let rows = app_minutes.len() + series_minutes.len();
    (
        (app_samples + platform_samples) as f64 / envelopes as f64,
        rows,
    )
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let (apps, series, minutes) = if benching {
        (5000, 300, 10)
    } else {
        (50, 10, 3)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let (_, samples) = rows(apps, series, minutes);
        println!(
            "prometheus_sink: {apps} apps and {series} platform series over {minutes} minutes: {samples} samples"
        );
        let mut rates = Vec::new();
        let discard = discarding_receiver().await;
        for concurrency in [2, 4] {
            let elapsed = run(&discard, rows(apps, series, minutes).0, concurrency).await;
            let rate = samples as f64 / elapsed.as_secs_f64();
            println!("  discarding receiver, concurrency {concurrency}: {rate:>10.0} samples/s");
            rates.push((format!("discard, concurrency {concurrency}"), rate));
        }
        for concurrency in [2, 4] {
            // A fresh Prometheus each time: the second run would only repeat samples.
            let server = PrometheusServer::start().await;
            let elapsed = run(&server.write_url(), rows(apps, series, minutes).0, concurrency).await;
            let rate = samples as f64 / elapsed.as_secs_f64();
            println!("  Prometheus 2.x,      concurrency {concurrency}: {rate:>10.0} samples/s");
            rates.push((format!("Prometheus, concurrency {concurrency}"), rate));
            let stored = server
                .query(
                    r#"count({__name__=~"sluice_.+"})"#,
                    (START + 60 * (minutes - 1) + 1) as f64,
                )
                .await
                .expect("a query");
            let series_stored = stored[0]["value"][1].as_str().expect("a count");
            assert_eq!(
                series_stored,
                (samples / minutes as usize).to_string(),
                "series in Prometheus"
            );
        }
        if !benching {
            return;
        }
        // The graph's side: rollup samples per envelope of the same traffic `sluice bench`
        // replays, at the envelope rate it measured.
        let graph_rate: f64 = std::env::var("SLUICE_BENCH_GRAPH_RATE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1.2e6);
        let (per_envelope, rows) = rollup_samples_per_envelope(5000, 5_000_000);
        let graph_samples = graph_rate * per_envelope;
        println!(
            "  graph (sluice bench, 5 M envelopes, 5 000 apps, 1 h): {rows} rollup rows, {per_envelope:.3} samples an envelope; at {graph_rate:.0} envelopes/s {graph_samples:.0} samples/s"
        );
        for (what, rate) in rates {
            println!("  {what}: {:.2} × the graph's rollup output", rate / graph_samples);
        }
    });
}
