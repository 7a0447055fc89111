//! `GET /api/v1/apps/{id}/stream` over real HTTP: what the graph publishes arrives as SSE, a
//! reconnect with `Last-Event-ID` gets what it missed, and closing the feed ends the stream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use sluice_api::auth::Auth;
use sluice_api::live::LiveFeed;
use sluice_api::store::Stores;
use sluice_api::{ApiConfig, ApiServer, ApiState};
use sluice_model::records::AppRollup;

const APP: &str = "6a3a2a1e-7b55-4c61-9d0b-0a6e4f9c1b2d";

fn rollup(minute: i64, requests: u64, is_final: bool) -> AppRollup {
    AppRollup {
        names: None,
        app_id: APP.into(),
        minute,
        window: 60,
        instances: 2,
        cpu_avg: Some(12.5),
        cpu_max: Some(20.0),
        memory_avg: Some(1024.0),
        memory_max: Some(2048),
        disk_avg: None,
        disk_max: None,
        requests,
        status_2xx: requests,
        status_3xx: 0,
        status_4xx: 0,
        status_5xx: 0,
        response_bytes: 100,
        latency_avg_ms: Some(3.0),
        latency_max_ms: Some(9.0),
        latency_p50_ms: Some(2.0),
        latency_p95_ms: Some(8.0),
        latency_p99_ms: Some(9.0),
        log_lines: 4,
        log_err_lines: 1,
        app_events: 0,
        is_final,
    }
}

async fn start() -> (ApiServer, Arc<LiveFeed>) {
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
    (server, live)
}

/// One SSE message: its fields, as `(name, value)` in order.
type Message = Vec<(String, String)>;

/// Reads SSE messages off a response, skipping comments (heartbeats).
struct SseReader {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl SseReader {
    fn new(response: reqwest::Response) -> SseReader {
        SseReader {
            body: response.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    /// The next message, or `None` when the stream ends.
    async fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let message: Message = block
                    .lines()
                    .filter(|line| !line.is_empty() && !line.starts_with(':'))
                    .map(|line| {
                        let (name, value) = line.split_once(':').unwrap_or((line, ""));
                        (name.to_owned(), value.trim_start().to_owned())
                    })
                    .collect();
                if message.is_empty() {
                    continue;
                }
                return Some(message);
            }
            let chunk = tokio::time::timeout(Duration::from_secs(20), self.body.next())
                .await
                .expect("the stream sends within 20 s")?
                .expect("the stream reads");
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        }
    }
}

fn field<'a>(message: &'a Message, name: &str) -> &'a str {
    message
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no `{name}` in {message:?}"))
}

async fn wait_for_streams(live: &LiveFeed, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while live.stream_count() != count {
        assert!(
            Instant::now() < deadline,
            "expected {count} open streams, have {}",
            live.stream_count()
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn open(
    client: &reqwest::Client,
    server: &ApiServer,
    last_event_id: Option<&str>,
) -> SseReader {
    let mut request = client.get(format!(
        "http://{}/api/v1/apps/{}/stream",
        server.address,
        APP.to_uppercase()
    ));
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    let response = request.send().await.expect("the stream opens");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream",
        "an SSE response"
    );
    SseReader::new(response)
}

fn client() -> reqwest::Client {
    sluice_common::tls::http_client(false).expect("a client")
}

#[tokio::test]
async fn rollups_arrive_as_sse_and_a_reconnect_resumes_after_its_last_event_id() {
    let (server, live) = start().await;
    let client = client();

    let mut stream = open(&client, &server, None).await;
    wait_for_streams(&live, 1).await;
    live.publish_rollups(&[rollup(60, 5, false), rollup(60, 7, true)]);
    let first = stream.next().await.expect("a message");
    assert_eq!(field(&first, "event"), "rollup");
    let point: serde_json::Value = serde_json::from_str(field(&first, "data")).expect("json");
    assert_eq!(point["app_id"], APP);
    assert_eq!(point["time"], 60);
    assert_eq!(point["requests"], 5);
    assert_eq!(point["latency_p95_ms"], 8.0);
    assert_eq!(point["disk_avg"], serde_json::Value::Null);
    assert_eq!(point["final"], false);
    let second = stream.next().await.expect("a message");
    let last_id = field(&second, "id").to_owned();
    assert_ne!(field(&first, "id"), last_id);

    // The client goes away; a row is published meanwhile; it comes back with its last id.
    drop(stream);
    wait_for_streams(&live, 0).await;
    live.publish_rollups(&[rollup(120, 1, false)]);
    let mut resumed = open(&client, &server, Some(&last_id)).await;
    wait_for_streams(&live, 1).await;
    live.publish_rollups(&[rollup(120, 2, false)]);
    let missed = resumed.next().await.expect("the missed row");
    let next = resumed.next().await.expect("the new row");
    let requests = |message: &Message| {
        serde_json::from_str::<serde_json::Value>(field(message, "data")).expect("json")["requests"]
            .as_u64()
            .expect("requests")
    };
    assert_eq!((requests(&missed), requests(&next)), (1, 2));

    // Shutting down ends open streams, so the server can stop.
    live.close();
    assert!(resumed.next().await.is_none(), "the stream ends");
    server.stop().await;
}

#[tokio::test]
async fn an_unknown_last_event_id_gets_a_reset_and_a_bad_app_id_a_json_400() {
    let (server, live) = start().await;
    let client = client();
    let mut stream = open(&client, &server, Some("0-42")).await;
    let reset = stream.next().await.expect("a message");
    assert_eq!(field(&reset, "event"), "reset");

    let response = client
        .get(format!(
            "http://{}/api/v1/apps/not-an-app/stream",
            server.address
        ))
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.expect("a JSON error");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|message| message.contains("not-an-app")),
        "{body}"
    );
    live.close();
    server.stop().await;
}
