//! Log search over the `elasticsearch` sink's indices (osmem-server, an in-memory
//! OpenSearch-compatible server): paging sees every line once, newest first, and `q` keeps
//! the lines with every term.

mod support;

use std::collections::HashSet;

use sluice_api::store::{LogStoreConfig, Stores};
use sluice_model::Payload;
use sluice_model::event::log_id;
use sluice_model::records::Records;
use sluice_sinks::elasticsearch::{self, ElasticsearchSinkConfig};
use sluice_test_support::search::SearchServer;
use support::*;

/// `(ts, id, lowercase words of the message)` of `app`'s lines in the tests' range.
type Line = (i64, String, HashSet<String>);

fn lines_of(records: &[Records], app: &str) -> Vec<Line> {
    let mut lines = Vec::new();
    for batch in records {
        let Records::Logs(events) = batch else {
            continue;
        };
        for event in events {
            let Payload::Log(log) = &event.payload else {
                continue;
            };
            let in_range = (START * 1_000_000_000..TO * 1_000_000_000).contains(&log.timestamp);
            if &*log.app_id != app || !in_range {
                continue;
            }
            let words = String::from_utf8_lossy(&log.message)
                .to_lowercase()
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(str::to_owned)
                .collect();
            lines.push((log.timestamp, log_id(log), words));
        }
    }
    lines
}

async fn all_pages(base: &str, app: &str, query: &str) -> Vec<(i64, String)> {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10_000 {
        let mut path = format!("/api/v1/apps/{app}/logs?{RANGE}&{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let body = get_ok(base, &path).await;
        for line in body["logs"].as_array().expect("logs") {
            let time = line["time_ns"].as_i64().expect("time_ns");
            seen.push((time, line["id"].as_str().expect("id").to_owned()));
        }
        match body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return seen,
        }
    }
    panic!("paging does not end");
}

fn ids(lines: &[(i64, String)]) -> HashSet<String> {
    lines.iter().map(|(_, id)| id.clone()).collect()
}

#[tokio::test]
async fn log_search_pages_through_every_matching_line_once() {
    let server = SearchServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let records: Vec<Records> = run_graph(capture(5, 2, 6_000))
        .into_iter()
        .filter(|r| matches!(r, Records::Logs(_)))
        .collect();
    let total: usize = records.iter().map(Records::len).sum();
    let mut config = ElasticsearchSinkConfig::new(&server.url);
    config.dead_letter = Some(dir.path().join("dead-letter.ndjson"));
    let (ctx, feeder) = feed(records.clone());
    elasticsearch::run(config.clone(), ctx)
        .await
        .expect("the sink stored every line");
    feeder.join().expect("feeder thread");
    // Makes everything indexed searchable.
    assert_eq!(server.count("logs-*").await, total as u64);

    let stores =
        Stores::open(None, Some(LogStoreConfig::Elasticsearch(config)), vec![]).expect("open");
    let (api, base) = start_api(stores).await;
    let Some(Records::Logs(first)) = records.first() else {
        panic!("the capture has logs");
    };
    let Payload::Log(log) = &first[0].payload else {
        panic!("a log");
    };
    let app = log.app_id.to_string();
    let lines = lines_of(&records, &app);
    assert!(lines.len() > 100, "enough lines to page: {}", lines.len());

    // Every line once, newest first (Elasticsearch dates keep milliseconds, so order is by
    // millisecond, then id).
    let seen = all_pages(&base, &app, "limit=23").await;
    assert_eq!(seen.len(), lines.len(), "no line twice, none missing");
    let expected: HashSet<String> = lines.iter().map(|(_, id, _)| id.clone()).collect();
    assert_eq!(ids(&seen), expected);
    for pair in seen.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let (a_ms, b_ms) = (a.0.div_euclid(1_000_000), b.0.div_euclid(1_000_000));
        assert!(
            a_ms > b_ms || (a_ms == b_ms && a.1 > b.1),
            "{a:?} before {b:?}"
        );
    }

    // q: every term as a word of the message, in any case.
    let mut tried = 0;
    for terms in [
        &["HEARTBEAT", "ok"][..],
        &["Processed", "ORDER"],
        &["gc", "pause"],
    ] {
        let expected: HashSet<String> = lines
            .iter()
            .filter(|(_, _, words)| terms.iter().all(|t| words.contains(&t.to_lowercase())))
            .map(|(_, id, _)| id.clone())
            .collect();
        if expected.is_empty() {
            continue;
        }
        tried += 1;
        assert!(
            expected.len() < lines.len(),
            "{terms:?} filters something out"
        );
        let seen = all_pages(
            &base,
            &app,
            &format!("q={}&limit=7", encode(&terms.join(" "))),
        )
        .await;
        assert_eq!(seen.len(), expected.len(), "q={terms:?}: no line twice");
        assert_eq!(ids(&seen), expected, "q={terms:?}");
    }
    assert!(tried > 0, "some query term occurs in the capture");
    api.stop().await;
}

#[tokio::test]
async fn a_cluster_that_is_down_is_a_503_naming_host_and_port() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        listener.local_addr().expect("address").port()
    };
    let config = ElasticsearchSinkConfig::new(format!("http://127.0.0.1:{port}"));
    let stores = Stores::open(None, Some(LogStoreConfig::Elasticsearch(config)), vec![])
        .expect("opening connects nothing");
    let (api, base) = start_api(stores).await;
    let (status, body) = get(
        &base,
        "/api/v1/apps/f47ac10b-58cc-4372-a567-0e02b2c3d479/logs",
    )
    .await;
    assert_eq!(status, 503, "{body}");
    let message = body["error"].as_str().expect("an error message");
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    api.stop().await;
}
