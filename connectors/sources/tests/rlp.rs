//! The `rlp` source against a small RLP gateway of our own (axum on 127.0.0.1:0) that also
//! plays UAA. Each stream the gateway opens is handed to the test, which writes the SSE text
//! and decides when the stream ends, so nothing here waits on a clock.
//!
//! Each test drives its own gateway in full: the streams it writes repeat on purpose, so
//! that what a test sends stays beside what it asserts.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use bytes::Bytes;
use sluice_model::Event;
use sluice_model::framing::frames;
use sluice_model::v2::decode_v2;
use sluice_sources::rlp::{RlpConfig, RlpError, run};
use sluice_sources::{SourceBatch, SourceContext, SourceMetrics, SourceOutput};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const CLIENT_ID: &str = "sluice";
const CLIENT_SECRET: &str = "s3cret";
const WAIT: Duration = Duration::from_secs(20);

/// One stream the gateway opened: what the client asked with, and the pipe to its body.
struct Connection {
    uri: Uri,
    authorization: String,
    body: mpsc::UnboundedSender<Bytes>,
}

impl Connection {
    fn send(&self, text: &str) {
        self.body
            .send(Bytes::copy_from_slice(text.as_bytes()))
            .expect("the stream is open");
    }
}

struct Gateway {
    tokens_issued: AtomicU32,
    /// `/v2/read` refuses tokens numbered below this (revoked ones, say).
    first_valid_token: u32,
    connections: mpsc::UnboundedSender<Connection>,
}

async fn token(State(gateway): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(&expected)
    {
        return (StatusCode::UNAUTHORIZED, r#"{"error":"unauthorized"}"#).into_response();
    }
    let n = gateway.tokens_issued.fetch_add(1, Ordering::SeqCst) + 1;
    axum::Json(serde_json::json!({
        "access_token": format!("token-{n}"),
        "token_type": "bearer",
        "expires_in": 3600,
    }))
    .into_response()
}

async fn read(State(gateway): State<Arc<Gateway>>, uri: Uri, headers: HeaderMap) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let number = authorization
        .strip_prefix("bearer token-")
        .and_then(|n| n.parse::<u32>().ok());
    if number.is_none_or(|n| n < gateway.first_valid_token) {
        return (StatusCode::UNAUTHORIZED, "bad token").into_response();
    }
    let (body, rx) = mpsc::unbounded_channel::<Bytes>();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::convert::Infallible>(chunk), rx))
    });
    let connection = Connection {
        uri,
        authorization,
        body,
    };
    if gateway.connections.send(connection).is_err() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

struct Harness {
    gateway: Arc<Gateway>,
    connections: mpsc::UnboundedReceiver<Connection>,
    batches: mpsc::Receiver<SourceBatch>,
    metrics: Arc<SourceMetrics>,
    shutdown: CancellationToken,
    source: JoinHandle<Result<(), RlpError>>,
    uaa_url: String,
}

async fn start(first_valid_token: u32, client_secret: &str) -> Harness {
    start_with(
        first_valid_token,
        client_secret,
        sluice_sources::rlp::DEFAULT_MAX_FRAME_SIZE,
    )
    .await
}

async fn start_with(
    first_valid_token: u32,
    client_secret: &str,
    max_frame_size: sluice_common::config::ByteSize,
) -> Harness {
    let (connections_tx, connections) = mpsc::unbounded_channel();
    let gateway = Arc::new(Gateway {
        tokens_issued: AtomicU32::new(0),
        first_valid_token,
        connections: connections_tx,
    });
    let app = Router::new()
        .route("/oauth/token", post(token))
        .route("/v2/read", get(read))
        .with_state(gateway.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a test port");
    let addr = listener.local_addr().expect("bound");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let url = format!("http://{addr}");
    let config = RlpConfig {
        url: url.clone(),
        shard_id: "sluice-test".into(),
        uaa_url: url.clone(),
        client_id: CLIENT_ID.into(),
        client_secret: client_secret.into(),
        skip_tls_verify: false,
        idle_timeout: Duration::from_secs(60),
        max_backoff: Duration::from_secs(1),
        max_frame_size,
    };
    let (output, batches) = SourceOutput::channel(16);
    let shutdown = CancellationToken::new();
    let ctx = SourceContext::new("rlp", output, shutdown.clone());
    let metrics = ctx.metrics.clone();
    Harness {
        gateway,
        connections,
        batches,
        metrics,
        shutdown,
        source: tokio::spawn(run(config, ctx)),
        uaa_url: url,
    }
}

impl Harness {
    async fn connection(&mut self) -> Connection {
        tokio::time::timeout(WAIT, self.connections.recv())
            .await
            .expect("the source connects")
            .expect("the gateway is running")
    }

    async fn events(&mut self, count: usize) -> Vec<Event> {
        let mut events = Vec::new();
        while events.len() < count {
            let batch = tokio::time::timeout(WAIT, self.batches.recv())
                .await
                .unwrap_or_else(|_| panic!("{count} events arrive, got {}", events.len()))
                .expect("the source is running");
            assert_eq!(&*batch.source, "rlp");
            events.extend(batch.events);
        }
        assert_eq!(events.len(), count, "no more events than sent");
        events
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.source)
            .await
            .expect("the source stops on shutdown")
            .expect("no panic")
            .expect("shutdown is not an error");
    }
}

fn golden_v2() -> (Vec<String>, Vec<Event>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata");
    let jsonl = std::fs::read_to_string(dir.join("golden-v2.jsonl")).expect("golden JSON");
    let bin = std::fs::read(dir.join("golden-v2.bin")).expect("golden records");
    let mut events = Vec::new();
    for (offset, record) in frames(&bin) {
        let record = record.unwrap_or_else(|e| panic!("golden record at {offset}: {e}"));
        decode_v2(&record, &mut events).expect("golden v2 decodes");
    }
    (jsonl.lines().map(str::to_owned).collect(), events)
}

/// The gateway's own rendering: protojson with lowerCamelCase field names (tag names, which
/// are map keys, stay as they are).
fn camel_case(line: &str) -> String {
    let serde_json::Value::Object(mut envelope) = serde_json::from_str(line).expect("JSON") else {
        panic!("an envelope is an object: {line}");
    };
    for (snake, camel) in [("source_id", "sourceId"), ("instance_id", "instanceId")] {
        if let Some(value) = envelope.remove(snake) {
            envelope.insert(camel.to_owned(), value);
        }
    }
    serde_json::Value::Object(envelope).to_string()
}

fn batch(envelopes: &[String]) -> String {
    format!("data: {{\"batch\":[{}]}}\n\n", envelopes.join(","))
}

#[tokio::test]
async fn golden_events_arrive_and_heartbeats_are_ignored() {
    let mut harness = start(1, CLIENT_SECRET).await;
    let connection = harness.connection().await;
    assert_eq!(connection.authorization, "bearer token-1");
    assert_eq!(
        connection.uri.query(),
        Some("log&counter&gauge&timer&event&shard_id=sluice-test")
    );
    let (lines, expected) = golden_v2();
    for (i, chunk) in lines.chunks(25).enumerate() {
        let envelopes: Vec<String> = if i % 2 == 0 {
            chunk.to_vec()
        } else {
            chunk.iter().map(|l| camel_case(l)).collect()
        };
        connection.send(": keep-alive\n\n");
        connection.send("event: heartbeat\ndata: 1710234017\n\n");
        // Cut the event mid-line: the parser must carry the partial line over.
        let text = batch(&envelopes);
        let (head, tail) = text.split_at(text.len() / 2);
        connection.send(head);
        connection.send(tail);
    }
    let events = harness.events(expected.len()).await;
    for (i, (got, want)) in events.iter().zip(&expected).enumerate() {
        assert_eq!(got, want, "event {i}");
    }
    assert_eq!(harness.metrics.bad_records.total(), 0);
    assert_eq!(harness.metrics.skipped.total(), 0);
    assert_eq!(harness.metrics.reconnects.get(), 0);
    assert!(harness.metrics.connected.load(Ordering::Relaxed));
    harness.stop().await;
}

#[tokio::test]
async fn a_refused_token_is_replaced_with_a_fresh_one() {
    // token-1 is refused by the gateway (revoked, say); token-2 is good.
    let mut harness = start(2, CLIENT_SECRET).await;
    let connection = harness.connection().await;
    assert_eq!(connection.authorization, "bearer token-2");
    assert_eq!(harness.gateway.tokens_issued.load(Ordering::SeqCst), 2);
    let (lines, expected) = golden_v2();
    connection.send(&batch(&lines[..5]));
    let first_five: usize = lines[..5]
        .iter()
        .map(|l| {
            let mut out = Vec::new();
            sluice_model::v2::parse_sse_batch(&format!("{{\"batch\":[{l}]}}"), &mut out)
                .expect("golden line parses")
                .events
        })
        .sum();
    assert_eq!(harness.events(first_five).await, expected[..first_five]);
    assert_eq!(harness.metrics.reconnects.get(), 1);
    harness.stop().await;
}

#[tokio::test]
async fn a_fresh_token_refused_again_is_retried_with_backoff() {
    let mut harness = start(3, CLIENT_SECRET).await;
    let connection = harness.connection().await;
    assert_eq!(connection.authorization, "bearer token-3");
    assert_eq!(harness.metrics.reconnects.get(), 2);
    harness.stop().await;
}

#[tokio::test]
async fn the_source_reconnects_when_the_stream_ends_or_closes() {
    let mut harness = start(1, CLIENT_SECRET).await;
    let (lines, _) = golden_v2();
    let counter = |name: &str| {
        format!(
            r#"{{"sourceId":"gorouter","tags":{{"origin":"gorouter"}},"counter":{{"name":"{name}","delta":"1","total":"5"}}}}"#
        )
    };

    let first = harness.connection().await;
    first.send(&batch(&[counter("before")]));
    assert_eq!(counter_names(harness.events(1).await), ["before"]);
    drop(first); // The gateway ends the stream.

    let second = harness.connection().await;
    second.send(&batch(&[counter("after")]));
    assert_eq!(counter_names(harness.events(1).await), ["after"]);
    assert_eq!(harness.metrics.reconnects.get(), 1);
    second.send("event: closing\ndata: closing due to stream timeout\n\n");

    let third = harness.connection().await;
    third.send(&batch(&lines[..1]));
    assert_eq!(harness.events(1).await.len(), 1);
    assert_eq!(harness.metrics.reconnects.get(), 2);
    drop(second);
    harness.stop().await;
}

fn counter_names(events: Vec<Event>) -> Vec<String> {
    events
        .into_iter()
        .map(|e| match e.payload {
            sluice_model::Payload::Counter(c) => c.name.to_string(),
            other => panic!("not a counter: {other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn bad_json_and_bad_envelopes_are_counted_and_later_data_arrives() {
    let mut harness = start(1, CLIENT_SECRET).await;
    let connection = harness.connection().await;
    let good = r#"{"source_id":"bbs","tags":{"origin":"bbs"},"counter":{"name":"ok","delta":"1"}}"#;
    let bad = r#"{"source_id":"bbs","timestamp":"yesterday","counter":{"name":"bad"}}"#;
    let event = r#"{"source_id":"cc","event":{"title":"app restarted"}}"#;
    connection.send("data: {not json\n\n");
    connection.send(&batch(&[good.into(), bad.into(), event.into()]));
    connection.send(&batch(&[good.into()]));
    assert_eq!(counter_names(harness.events(2).await), ["ok", "ok"]);
    assert_eq!(harness.metrics.bad_records.get("invalid_json"), 1);
    assert_eq!(harness.metrics.bad_records.get("invalid"), 1);
    assert_eq!(harness.metrics.bad_records.total(), 2);
    assert_eq!(harness.metrics.skipped.get("unmapped_v2"), 1);
    assert_eq!(
        harness.metrics.reconnects.get(),
        0,
        "bad data is no reason to reconnect"
    );
    harness.stop().await;
}

#[tokio::test]
async fn credentials_uaa_refuses_stop_the_source_with_an_error_naming_uaa() {
    let harness = start(1, "wrong secret").await;
    let result = tokio::time::timeout(WAIT, harness.source)
        .await
        .expect("the source gives up")
        .expect("no panic");
    let error = result.expect_err("refused credentials are fatal");
    assert!(matches!(error, RlpError::Credentials(_)), "{error:?}");
    let message = error.to_string();
    assert!(message.contains(&harness.uaa_url), "{message}");
    assert!(message.contains(CLIENT_ID), "{message}");
}

#[tokio::test]
async fn an_oversized_event_after_a_good_batch_is_a_bad_record_and_backs_off() {
    let mut harness = start_with(1, CLIENT_SECRET, sluice_common::config::ByteSize(4 << 10)).await;
    let (lines, expected) = golden_v2();
    let oversized = format!("data: {}\n\n", "x".repeat(8 << 10));
    // Every connection delivers a batch, then an event past max_frame_size: the backoff must
    // still grow (100, 200, 400 ms ...), not start over after each batch.
    for _ in 0..4 {
        let connection = harness.connection().await;
        connection.send(&batch(&lines[..1]));
        connection.send(&oversized);
    }
    let events = harness.events(4 * expected[..1].len()).await;
    assert_eq!(events[0], expected[0]);
    assert!(harness.metrics.bad_records.get("oversized_frame") >= 3);
    assert!(
        harness.metrics.reconnect_delay_ms.load(Ordering::Relaxed) >= 400,
        "the backoff started over after a batch: {} ms",
        harness.metrics.reconnect_delay_ms.load(Ordering::Relaxed)
    );
    harness.stop().await;
}
