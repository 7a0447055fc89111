//! A scripted Firehose for unit tests: an axum server with a UAA token endpoint and the
//! WebSocket, whose every connection runs a test's script.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use sluice_model::event::{Header, ValueMetric};
use sluice_model::reference::encode_v1;
use sluice_model::{Event, Payload};

use super::FirehoseConfig;

/// What the server does with its `n`th WebSocket connection (0 is the first).
pub(crate) type Script = Arc<dyn Fn(u64, WebSocket) -> BoxFuture<'static, ()> + Send + Sync>;

pub(crate) struct Scripted {
    pub(crate) script: Script,
    /// Handshakes still to be answered 401.
    pub(crate) unauthorized: AtomicU64,
    pub(crate) refuse_credentials: bool,
    pub(crate) token_requests: AtomicU64,
    pub(crate) connections: AtomicU64,
}

pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    pub(crate) state: Arc<Scripted>,
}

impl TestServer {
    pub(crate) async fn start(script: Script) -> TestServer {
        TestServer::start_with(script, 0, false).await
    }

    pub(crate) async fn start_with(
        script: Script,
        unauthorized: u64,
        refuse_credentials: bool,
    ) -> TestServer {
        let state = Arc::new(Scripted {
            script,
            unauthorized: AtomicU64::new(unauthorized),
            refuse_credentials,
            token_requests: AtomicU64::new(0),
            connections: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/oauth/token", post(token))
            .route("/firehose/{subscription_id}", get(firehose))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a test port");
        let addr = listener.local_addr().expect("bound address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        TestServer { addr, state }
    }

    pub(crate) fn config(&self) -> FirehoseConfig {
        FirehoseConfig {
            url: format!("ws://{}", self.addr),
            subscription_id: "sub".into(),
            uaa_url: format!("http://{}", self.addr),
            client_id: "sluice".into(),
            client_secret: "secret".into(),
            skip_tls_verify: false,
            keepalive: Duration::from_secs(15),
            max_backoff: Duration::from_millis(200),
            batch_size: 1024,
            connections: 1,
            max_frame_size: super::DEFAULT_MAX_FRAME_SIZE,
        }
    }
}

async fn token(State(state): State<Arc<Scripted>>) -> Response {
    let n = state.token_requests.fetch_add(1, Ordering::SeqCst);
    if state.refuse_credentials {
        return (StatusCode::UNAUTHORIZED, "Bad credentials").into_response();
    }
    let body = format!(r#"{{"access_token":"token-{n}","expires_in":3600}}"#);
    ([("content-type", "application/json")], body).into_response()
}

async fn firehose(
    State(state): State<Arc<Scripted>>,
    Path(_subscription_id): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let rejected = state
        .unauthorized
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    if rejected.is_ok() {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let n = state.connections.fetch_add(1, Ordering::SeqCst);
    let script = state.script.clone();
    upgrade.on_upgrade(move |socket| script(n, socket))
}

pub(crate) fn events(range: std::ops::Range<u64>) -> Vec<Event> {
    range
        .map(|i| Event {
            timestamp: 1_700_000_000_000_000_000 + i as i64,
            header: Header {
                origin: "test".into(),
                ..Header::default()
            },
            payload: Payload::Value(ValueMetric {
                name: format!("metric.{i}").into(),
                value: i as f64,
                unit: "count".into(),
            }),
        })
        .collect()
}

pub(crate) async fn send_events(socket: &mut WebSocket, events: &[Event]) {
    for event in events {
        let frame = Bytes::from(encode_v1(event));
        if socket.send(Message::Binary(frame)).await.is_err() {
            return;
        }
    }
}

/// Keeps a connection open (answering pings) until the client goes away.
pub(crate) async fn drain(mut socket: WebSocket) {
    while let Some(Ok(_)) = socket.recv().await {}
}
