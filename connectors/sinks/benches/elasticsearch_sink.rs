//! Documents per second the `elasticsearch` sink indexes into `osmem-server` (the
//! OpenSearch-compatible test server), end to end: records received → `_bulk` → stored.
//!
//! `cargo bench -p sluice-sinks --bench elasticsearch_sink` (`OSMEM_SERVER_BIN` or the
//! PyPI package `osmem-server`). Under `cargo test` it runs once on a few documents and checks
//! the count.

use sluice_test_support::search;

use std::time::{Duration, Instant};

use bytes::Bytes;
use search::SearchServer;
use sluice_model::Str;
use sluice_model::event::{Event, Header, LogMessage, MessageType, Payload};
use sluice_model::records::Records;
use sluice_sinks::SinkContext;
use sluice_sinks::elasticsearch::{self, ElasticsearchSinkConfig};
use tokio_util::sync::CancellationToken;

fn logs(n: usize) -> Vec<Event> {
    let header = Header {
        origin: Str::from("rep"),
        deployment: Str::from("cf"),
        job: Str::from("diego_cell"),
        index: Str::from("3"),
        ip: Str::from("10.0.16.4"),
        tags: Default::default(),
    };
    (0..n)
        .map(|i| Event {
            timestamp: 1_710_234_017_448_058_219 + i as i64,
            header: header.clone(),
            payload: Payload::Log(LogMessage { names: None,
                message: Bytes::from(format!(
                    "2024-03-12T09:00:17.448Z INFO [http-nio-8080-exec-{}] c.e.app.OrderController : order {i} accepted in 12 ms",
                    i % 10
                )),
                message_type: if i % 10 == 0 { MessageType::Err } else { MessageType::Out },
                timestamp: 1_710_234_017_448_058_219 + i as i64,
                app_id: Str::from(format!("{:08x}-58cc-4372-a567-0e02b2c3d479", i % 500)),
                source_type: Str::from("APP/PROC/WEB"),
                source_instance: Str::from((i % 4).to_string()),
            }),
        })
        .collect()
}

async fn run(url: &str, events: &[Event], gzip: bool) -> Duration {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = ElasticsearchSinkConfig::new(url);
    config.gzip = gzip;
    config.dead_letter = Some(dir.path().join("dead.ndjson"));
    let batches: Vec<Records> = events
        .chunks(1000)
        .map(|c| Records::Logs(c.to_vec()))
        .collect();
    let (ctx, sender) = SinkContext::new("bench", 16, CancellationToken::new());
    let started = Instant::now();
    let feeder = std::thread::spawn(move || {
        for batch in batches {
            assert!(sender.send_blocking(batch), "the sink stopped");
        }
    });
    elasticsearch::run(config, ctx).await.expect("sink");
    feeder.join().expect("feeder");
    started.elapsed()
}

/// The baseline: the same documents as pre-built `_bulk` bodies posted straight to the
/// server, two requests in flight — what the server can take, without the sink's work.
async fn raw_bulk(url: &str, events: &[Event]) -> Duration {
    let client = sluice_common::tls::http_client(false).expect("client");
    let bodies: Vec<Vec<u8>> = events
        .chunks(1000)
        .map(|chunk| {
            let mut body = Vec::new();
            for (i, event) in chunk.iter().enumerate() {
                let Payload::Log(log) = &event.payload else {
                    continue;
                };
                let action = serde_json::json!({ "index": { "_index": "logs-2024.03.12", "_id": format!("{}-{i}", log.timestamp) } });
                let doc = serde_json::json!({
                    "@timestamp": "2024-03-12T09:00:17.448058219Z",
                    "app_id": &*log.app_id, "source_type": &*log.source_type,
                    "source_instance": &*log.source_instance, "message_type": log.message_type.as_str(),
                    "message": String::from_utf8_lossy(&log.message), "origin": "rep", "deployment": "cf",
                    "job": "diego_cell", "instance": "3", "ip": "10.0.16.4", "tags": {}
                });
                body.extend_from_slice(action.to_string().as_bytes());
                body.push(b'\n');
                body.extend_from_slice(doc.to_string().as_bytes());
                body.push(b'\n');
            }
            body
        })
        .collect();
    let started = Instant::now();
    use futures_util::StreamExt;
    futures_util::stream::iter(bodies.into_iter().map(|body| {
        let client = client.clone();
        async move {
            let answer = client
                .post(format!("{url}/_bulk"))
                .header("content-type", "application/x-ndjson")
                .body(body)
                .send()
                .await
                .expect("bulk");
            assert!(answer.status().is_success());
        }
    }))
    .buffer_unordered(2)
    .collect::<Vec<()>>()
    .await;
    started.elapsed()
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let n = if benching { 200_000 } else { 2_000 };
    let events = logs(n);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        println!("elasticsearch_sink: {n} log lines, batches of 1000, 2 requests in flight");
        let server = SearchServer::start();
        let elapsed = raw_bulk(&server.url, &events).await;
        println!(
            "  raw _bulk   {:>9.0} documents/s (pre-built bodies posted directly: the server's pace)",
            n as f64 / elapsed.as_secs_f64()
        );
        drop(server);
        for gzip in [false, true] {
            // A fresh server each time: the second run would only overwrite.
            let server = SearchServer::start();
            let elapsed = run(&server.url, &events, gzip).await;
            assert_eq!(server.count("logs-*").await, n as u64);
            println!(
                "  gzip {gzip:<5}  {:>9.0} documents/s",
                n as f64 / elapsed.as_secs_f64()
            );
        }
    });
}
