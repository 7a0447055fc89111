//! The `elasticsearch` sink against a real OpenSearch-compatible server (`osmem-server`),
//! with a fault-injecting proxy in between: documents per SPEC §3, idempotence, outages
//! absorbed by the disk buffer and drained in batches of 1000, items retried alone, mapping
//! errors dead-lettered.

use std::path::Path;
use std::time::Duration;

use sluice_buffers::BufferConfig;
use sluice_model::Payload;
use sluice_model::event::{Event, log_id};
use sluice_model::records::Records;
use sluice_sinks::Component;
use sluice_sinks::SinkContext;
use sluice_sinks::elasticsearch::{self, ElasticsearchSinkConfig, ElasticsearchSinkError};
use sluice_test_support::fixtures::*;
use sluice_test_support::search::{FaultProxy, SearchServer, assert_same_ids};
use tokio_util::sync::CancellationToken;

const DAY_NS: i64 = 24 * 3600 * 1_000_000_000;

/// `n` distinct log lines: the first half on 2024-03-12, the rest on 2024-03-13.
fn logs(n: usize, tag: &str) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let mut event = log_event();
            if let Payload::Log(log) = &mut event.payload {
                log.timestamp = TS + (i >= n / 2) as i64 * DAY_NS + i as i64;
                log.message = format!("{tag} line {i}").into_bytes().into();
            }
            event
        })
        .collect()
}

fn ids(events: &[Event]) -> Vec<String> {
    let mut ids: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.payload {
            Payload::Log(log) => Some(log_id(log)),
            _ => None,
        })
        .collect();
    ids.sort();
    ids
}

fn config(url: &str, dir: &Path) -> ElasticsearchSinkConfig {
    let mut config = ElasticsearchSinkConfig::new(url);
    config.flush_interval = Duration::from_millis(10);
    config.dead_letter = Some(dir.join("dead-letter.ndjson"));
    config
}

async fn run_sink(
    config: ElasticsearchSinkConfig,
    batches: Vec<Records>,
) -> Result<(), ElasticsearchSinkError> {
    let (ctx, feeder) = feed(batches);
    let result = elasticsearch::run(config, ctx).await;
    feeder.join().expect("feeder thread");
    result
}

fn batches(events: &[Event], size: usize) -> Vec<Records> {
    events
        .chunks(size)
        .map(|c| Records::Logs(c.to_vec()))
        .collect()
}

#[tokio::test]
async fn logs_are_indexed_by_day_with_the_spec_fields_and_a_replay_duplicates_nothing() {
    let server = SearchServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let events = logs(100, "spec");
    run_sink(config(&server.url, dir.path()), batches(&events, 30))
        .await
        .expect("sink");
    assert_eq!(server.count("logs-2024.03.12").await, 50);
    assert_eq!(server.count("logs-2024.03.13").await, 50);
    assert_same_ids(&server.ids("logs-*").await, &ids(&events));

    let Payload::Log(first) = &events[0].payload else {
        panic!("a log");
    };
    let doc = server
        .get(&format!("/logs-2024.03.12/_doc/{}", log_id(first)))
        .await;
    let source = &doc["_source"];
    assert_eq!(source["@timestamp"], "2024-03-12T09:00:17.448058219Z");
    assert_eq!(source["id"], log_id(first).as_str());
    assert_eq!(source["app_id"], APP);
    assert_eq!(source["source_type"], "APP/PROC/WEB");
    assert_eq!(source["source_instance"], "0");
    assert_eq!(source["message_type"], "ERR");
    assert_eq!(source["message"], "spec line 0");
    assert_eq!(source["origin"], "rep");
    assert_eq!(source["job"], "diego_cell");
    assert_eq!(source["instance"], "3");
    assert_eq!(source["tags"]["k"], "v");

    // The template's mapping: keywords, text, date, and no dynamic fields.
    let mapping = server.get("/logs-2024.03.12/_mapping").await;
    let mappings = &mapping["logs-2024.03.12"]["mappings"];
    assert_eq!(mappings["dynamic"], "false");
    assert_eq!(mappings["properties"]["message"]["type"], "text");
    assert_eq!(mappings["properties"]["app_id"]["type"], "keyword");
    assert_eq!(mappings["properties"]["@timestamp"]["type"], "date");

    run_sink(config(&server.url, dir.path()), batches(&events, 7))
        .await
        .expect("replayed");
    assert_eq!(server.count("logs-*").await, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_fills_the_disk_buffer_and_the_backlog_drains_in_batches_of_1000() {
    let server = SearchServer::start();
    let proxy = FaultProxy::start(&server.url).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = config(&proxy.url, dir.path());
    let buffer = BufferConfig::Disk {
        path: dir.path().join("buffer"),
        max_size: "1GiB".parse().expect("a size"),
        when_full: Default::default(),
        sync: Default::default(),
        segment_size: "1MiB".parse().expect("a size"),
    };
    config.buffer = buffer.clone();
    let (ctx, sender) =
        SinkContext::with_buffer("search", 4, &buffer, CancellationToken::new()).expect("buffer");
    let metrics = ctx.metrics.clone();
    let sink = tokio::spawn(elasticsearch::run(config, ctx));

    let before = logs(300, "before");
    send_all(sender.clone(), batches(&before, 100))
        .join()
        .expect("sent");
    wait_for("the first lines stored", || metrics.written_total() == 300).await;

    proxy.set_down();
    let during = logs(6_000, "during");
    send_all(sender.clone(), batches(&during, 250))
        .join()
        .expect("accepted while the server is down");
    wait_for("the backlog on disk", || {
        metrics
            .buffered_records
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 6_000
    })
    .await;
    wait_for("retries", || metrics.retries.get() >= 2).await;
    assert_eq!(
        metrics.written_total(),
        300,
        "nothing got through the outage"
    );
    let sizes_before_recovery = proxy.bulk_sizes().len();

    proxy.set_up();
    let after = logs(500, "after");
    let feeder = send_all(sender, batches(&after, 100));
    feeder.join().expect("sent");
    sink.await.expect("sink task").expect("sink");

    let mut expected = ids(&before);
    expected.extend(ids(&during));
    expected.extend(ids(&after));
    expected.sort();
    assert_same_ids(&server.ids("logs-*").await, &expected);
    // The backlog went in requests of at most 1000 documents, most of them full.
    let drained = &proxy.bulk_sizes()[sizes_before_recovery..];
    assert!(drained.iter().all(|n| *n <= 1000), "{drained:?}");
    assert!(
        drained.iter().filter(|n| **n == 1000).count() >= 5,
        "{drained:?}"
    );
    assert_eq!(metrics.dropped.get(), 0);
}

#[tokio::test]
async fn documents_answered_429_are_retried_alone() {
    let server = SearchServer::start();
    let proxy = FaultProxy::start(&server.url).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let events = logs(50, "partial");
    let all = ids(&events);
    let chosen = [&all[3], &all[17], &all[40]];
    for id in chosen {
        proxy.fail_item(id, 429, 1);
    }
    let (ctx, feeder) = feed(vec![Records::Logs(events)]);
    let metrics = ctx.metrics.clone();
    elasticsearch::run(config(&proxy.url, dir.path()), ctx)
        .await
        .expect("sink");
    feeder.join().expect("feeder");
    assert_same_ids(&server.ids("logs-*").await, &all);
    assert_eq!(
        proxy.bulk_sizes(),
        vec![50, 3],
        "the retry carries the 3 alone"
    );
    let mut retried: Vec<String> = proxy.bulk_ids()[50..].to_vec();
    retried.sort();
    let mut chosen: Vec<String> = chosen.iter().map(|s| s.to_string()).collect();
    chosen.sort();
    assert_eq!(retried, chosen);
    assert_eq!(metrics.retries.get(), 1);
}

#[tokio::test]
async fn mapping_errors_go_to_the_dead_letter_file_once_with_their_reason() {
    let server = SearchServer::start();
    let proxy = FaultProxy::start(&server.url).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let events = logs(20, "mapping");
    let all = ids(&events);
    proxy.fail_item(&all[5], 400, u32::MAX);
    proxy.fail_item(&all[6], 400, u32::MAX);
    let (ctx, feeder) = feed(vec![Records::Logs(events)]);
    let metrics = ctx.metrics.clone();
    elasticsearch::run(config(&proxy.url, dir.path()), ctx)
        .await
        .expect("a mapping error does not stop the sink");
    feeder.join().expect("feeder");
    assert_eq!(server.count("logs-*").await, 18);
    assert_eq!(metrics.dead_lettered.get(), 2);
    assert_eq!(
        metrics.retries.get(),
        0,
        "rejected documents are not retried"
    );
    assert_eq!(proxy.bulk_sizes(), vec![20]);
    let text =
        std::fs::read_to_string(dir.path().join("dead-letter.ndjson")).expect("dead letters");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2);
    let mut dead: Vec<&str> = lines.iter().filter_map(|l| l["id"].as_str()).collect();
    dead.sort();
    assert_eq!(dead, vec![all[5].as_str(), all[6].as_str()]);
    for line in &lines {
        assert_eq!(line["status"], 400);
        assert_eq!(line["error"]["type"], "mapper_parsing_exception");
        assert_eq!(line["sink"], "test");
        assert!(
            line["document"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("mapping line"))
        );
    }
}

#[tokio::test]
async fn whole_requests_answered_503_pause_the_sink_until_the_cluster_answers() {
    let server = SearchServer::start();
    let proxy = FaultProxy::start(&server.url).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let events = logs(40, "busy");
    let (ctx, sender) = SinkContext::new("test", 4, CancellationToken::new());
    let metrics = ctx.metrics.clone();
    let sink = tokio::spawn(elasticsearch::run(config(&proxy.url, dir.path()), ctx));
    // After the healthcheck and the template: the first bulk requests meet a busy cluster.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while server.get("/_index_template/sluice-logs").await["index_templates"]
        .as_array()
        .is_none_or(|t| t.is_empty())
    {
        assert!(tokio::time::Instant::now() < deadline, "no index template");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.fail_requests(3, 503);
    send_all(sender, vec![Records::Logs(events.clone())])
        .join()
        .expect("sent");
    sink.await.expect("sink task").expect("sink");
    assert_same_ids(&server.ids("logs-*").await, &ids(&events));
    assert_eq!(metrics.retries.get(), 3, "each 503 is one failed attempt");
    assert_eq!(
        proxy.bulk_sizes(),
        vec![40],
        "only the fourth request reached the server"
    );
}

#[tokio::test]
async fn an_unreachable_cluster_is_named_and_memory_is_abandoned_after_the_shutdown_timeout() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = config(&format!("http://127.0.0.1:{port}"), dir.path());
    config.shutdown_timeout = Duration::from_millis(100);
    let shutdown = CancellationToken::new();
    let (ctx, sender) = SinkContext::new("test", 4, shutdown.clone());
    let metrics = ctx.metrics.clone();
    let sink = tokio::spawn(elasticsearch::run(config, ctx));
    send_all(sender, vec![Records::Logs(logs(3, "lost"))])
        .join()
        .expect("accepted");
    wait_for("retries", || metrics.retries.get() >= 2).await;
    shutdown.cancel();
    let error = sink.await.expect("sink task").expect_err("abandoned");
    let message = error.to_string();
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(message.contains("abandoned 3 records"), "{message}");
    assert_eq!(metrics.dropped.get(), 3);
}

#[tokio::test]
async fn other_streams_are_a_config_error() {
    let mut config = ElasticsearchSinkConfig::new("http://127.0.0.1:9200");
    config
        .streams
        .push(sluice_model::records::StreamName::AppRollups);
    let problems = config.problems();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].key, "streams");
}

#[tokio::test]
async fn every_request_carries_the_configured_credentials() {
    use base64::Engine;
    use sluice_sinks::elasticsearch::AuthConfig;
    let server = SearchServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    for (auth, expected) in [
        (
            AuthConfig::Basic {
                username: "sluice".into(),
                password: "s3cret".into(),
            },
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("sluice:s3cret")
            ),
        ),
        (
            AuthConfig::ApiKey {
                id: Some("key-id".into()),
                secret: Some("key-secret".into()),
                encoded: None,
            },
            format!(
                "ApiKey {}",
                base64::engine::general_purpose::STANDARD.encode("key-id:key-secret")
            ),
        ),
        (
            AuthConfig::Bearer {
                token: "t0ken".into(),
            },
            "Bearer t0ken".to_owned(),
        ),
    ] {
        let proxy = FaultProxy::start(&server.url).await;
        let mut config = config(&proxy.url, dir.path());
        config.auth = Some(auth.clone());
        run_sink(config, vec![Records::Logs(logs(5, "auth"))])
            .await
            .expect("sink");
        let seen = proxy.authorizations();
        // The healthcheck, the template and the bulk request, each with the credentials.
        assert!(seen.len() >= 3, "{seen:?}");
        assert!(
            seen.iter().all(|a| a.as_deref() == Some(expected.as_str())),
            "{auth:?}: {seen:?}"
        );
        // Secrets never show in the config's Debug form.
        assert!(!format!("{auth:?}").contains("s3cret") && !format!("{auth:?}").contains("t0ken"));
    }
}
