//! `sluice simulate` over real loopback sockets: UAA tokens, bearer checks, the stream, its
//! split between connections, slow consumers and shutdown.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use sluice_connectors::simulate::SimulateConfig;
use sluice_connectors::source::simulator::{Clock, Generator, SimulatorConfig};
use sluice_model::EventType;
use sluice_model::reference::encode_v1;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

mod simulated;
use simulated::{PATIENCE, Running};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

impl Running {
    async fn start(config: SimulateConfig) -> Running {
        Running::start_on("127.0.0.1:0".parse().expect("an address"), config).await
    }

    async fn token_response(&self, basic: Option<(&str, &str)>, grant: &str) -> reqwest::Response {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::new();
        let mut request = client
            .post(format!("http://{}/oauth/token", self.addr))
            .form(&[("grant_type", grant)]);
        if let Some((id, secret)) = basic {
            request = request.basic_auth(id, Some(secret));
        }
        request.send().await.expect("the token endpoint answers")
    }

    async fn token(&self) -> String {
        let response = self.token_response(Some(("sluice", "s3cret")), "client_credentials");
        let answer: serde_json::Value = response.await.json().await.expect("JSON");
        answer["access_token"]
            .as_str()
            .expect("an access token")
            .to_owned()
    }

    async fn connect(
        &self,
        subscription: &str,
        authorization: Option<String>,
    ) -> Result<Client, tungstenite::Error> {
        let url = format!("ws://{}/firehose/{subscription}", self.addr);
        let mut request = url.into_client_request().expect("a valid URL");
        if let Some(value) = authorization {
            request
                .headers_mut()
                .insert("authorization", value.parse().expect("a header value"));
        }
        tokio_tungstenite::connect_async(request)
            .await
            .map(|(client, _)| client)
    }

    async fn stream(&self, subscription: &str) -> Client {
        let token = self.token().await;
        self.connect(subscription, Some(format!("bearer {token}")))
            .await
            .expect("a valid token opens the stream")
    }
}

fn config(generator: SimulatorConfig) -> SimulateConfig {
    SimulateConfig {
        client_id: "sluice".to_owned(),
        client_secret: "s3cret".to_owned(),
        generator,
        token_ttl: Duration::from_secs(3600),
        max_pending: 100_000,
    }
}

/// Simulated time, so every stream of a seed is byte-for-byte the same.
fn traffic(rate: u64) -> SimulatorConfig {
    SimulatorConfig {
        rate,
        seed: 9,
        clock: Clock::Simulated,
        ..SimulatorConfig::default()
    }
}

/// The first `n` envelopes any stream of `generator` carries, encoded.
fn reference(generator: &SimulatorConfig, n: usize) -> Vec<Bytes> {
    let mut events = Vec::new();
    Generator::new(generator).fill(n, &mut events);
    events.iter().map(|e| Bytes::from(encode_v1(e))).collect()
}

/// What a client reads next: an envelope, or the close frame (`Err`) that ends the stream.
async fn next_envelope(client: &mut Client) -> Result<Bytes, Option<(CloseCode, String)>> {
    loop {
        let message = timeout(PATIENCE, client.next())
            .await
            .expect("the server sends something in time");
        match message {
            Some(Ok(Message::Binary(bytes))) => return Ok(bytes),
            Some(Ok(Message::Close(frame))) => {
                return Err(frame.map(|f| (f.code, f.reason.to_string())));
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Err(None),
        }
    }
}

fn status_of(error: tungstenite::Error) -> u16 {
    match error {
        tungstenite::Error::Http(response) => response.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

#[tokio::test]
async fn the_token_endpoint_checks_client_credentials_then_the_grant_type() {
    let server = Running::start(config(traffic(100))).await;

    let good = server
        .token_response(Some(("sluice", "s3cret")), "client_credentials")
        .await;
    assert_eq!(good.status(), 200);
    let answer: serde_json::Value = good.json().await.expect("JSON");
    assert_eq!(answer["token_type"], "bearer");
    assert_eq!(answer["expires_in"], 3600);
    assert!(
        answer["access_token"]
            .as_str()
            .is_some_and(|t| t.len() >= 20)
    );

    for basic in [Some(("sluice", "wrong")), Some(("other", "s3cret")), None] {
        let refused = server.token_response(basic, "client_credentials").await;
        assert_eq!(refused.status(), 401, "{basic:?}");
        let error: serde_json::Value = refused.json().await.expect("a JSON error");
        assert_eq!(error["error"], "unauthorized");
    }
    let password = server
        .token_response(Some(("sluice", "s3cret")), "password")
        .await;
    assert_eq!(password.status(), 400);
    let error: serde_json::Value = password.json().await.expect("a JSON error");
    assert_eq!(error["error"], "unsupported_grant_type");

    let stats = server.stop().await;
    assert_eq!((stats.tokens_issued, stats.unauthorized), (1, 3));
}

#[tokio::test]
async fn streams_need_a_token_the_server_issued_and_still_honours() {
    let server = Running::start(config(traffic(100))).await;
    let refused = server.connect("s", None).await.expect_err("no token");
    assert_eq!(status_of(refused), 401);
    let unknown = server.connect("s", Some("bearer made-up".to_owned())).await;
    assert_eq!(status_of(unknown.expect_err("unknown token")), 401);

    let token = server.token().await;
    // The scheme is case-insensitive.
    let open = server.connect("s", Some(format!("Bearer {token}"))).await;
    let mut open = open.expect("an issued token opens the stream");
    next_envelope(&mut open).await.expect("envelopes flow");

    server.handle.revoke_tokens();
    let revoked = server.connect("s", Some(format!("bearer {token}"))).await;
    assert_eq!(status_of(revoked.expect_err("a revoked token")), 401);
    // The open stream survives the revocation; a fresh token works.
    next_envelope(&mut open).await.expect("still streaming");
    drop(open);
    drop(server.stream("s").await);

    let stats = server.stop().await;
    assert_eq!(stats.unauthorized, 3);
    assert_eq!(stats.connections_total, 2);

    let expired = Running::start(SimulateConfig {
        token_ttl: Duration::ZERO,
        ..config(traffic(100))
    })
    .await;
    let token = expired.token().await;
    let refused = expired.connect("s", Some(format!("bearer {token}"))).await;
    assert_eq!(status_of(refused.expect_err("an expired token")), 401);
    expired.stop().await;
}

#[tokio::test]
async fn a_stream_carries_the_generators_envelopes_of_every_type() {
    let generator = traffic(0);
    // How far into the stream every type has appeared (Errors are rare).
    let mut seen = BTreeSet::new();
    let mut needed = 0;
    let mut probe = Generator::new(&generator);
    while seen.len() < EventType::ALL.len() {
        seen.insert(probe.next_event().event_type());
        needed += 1;
    }
    let expected = reference(&generator, needed);

    // Unpaced, the producer waits for queue space: keep the queue short.
    let server = Running::start(SimulateConfig {
        max_pending: 256,
        ..config(generator)
    })
    .await;
    let mut client = server.stream("everything").await;
    let mut types = BTreeSet::new();
    for (i, want) in expected.iter().enumerate() {
        let bytes = next_envelope(&mut client)
            .await
            .expect("the stream goes on");
        assert_eq!(&bytes, want, "envelope {i}");
        let event = sluice_model::decode::decode_v1(bytes).expect("a decodable envelope");
        types.insert(event.event_type());
    }
    assert_eq!(types.len(), EventType::ALL.len(), "{types:?}");

    // Pings are answered in the middle of the stream.
    client
        .send(Message::Ping(Bytes::from_static(b"still there?")))
        .await
        .expect("ping");
    loop {
        match timeout(PATIENCE, client.next()).await.expect("in time") {
            Some(Ok(Message::Pong(payload))) => {
                assert_eq!(&payload[..], b"still there?");
                break;
            }
            Some(Ok(_)) => continue,
            other => panic!("no pong: {other:?}"),
        }
    }
    drop(client);
    server.stop().await;
}

/// Reads a stream until its close frame; says when it has read `enough`.
fn read_all(mut client: Client, enough: usize) -> (oneshot::Receiver<()>, JoinHandle<Reading>) {
    let (reached, reached_rx) = oneshot::channel();
    let task = tokio::spawn(async move {
        let mut reached = Some(reached);
        let mut envelopes = Vec::new();
        let close = loop {
            match next_envelope(&mut client).await {
                Ok(bytes) => envelopes.push(bytes),
                Err(close) => break close,
            }
            if envelopes.len() >= enough
                && let Some(reached) = reached.take()
            {
                let _ = reached.send(());
            }
        };
        Reading { envelopes, close }
    });
    (reached_rx, task)
}

struct Reading {
    envelopes: Vec<Bytes>,
    close: Option<(CloseCode, String)>,
}

#[tokio::test]
async fn connections_sharing_a_subscription_id_split_its_stream() {
    let generator = traffic(20_000);
    let server = Running::start(config(generator.clone())).await;
    let first = server.stream("shared").await;
    let second = server.stream("shared").await;
    let (first_reached, first_task) = read_all(first, 20);
    let (second_reached, second_task) = read_all(second, 20);
    timeout(PATIENCE, async {
        first_reached.await.expect("the first reader runs");
        second_reached.await.expect("the second reader runs");
    })
    .await
    .expect("both connections get envelopes");

    // Shutdown writes what is queued, then closes with 1001: everything dealt is read.
    let stats = server.stop().await;
    let first = first_task.await.expect("first reader");
    let second = second_task.await.expect("second reader");
    for reading in [&first, &second] {
        let (code, _) = reading.close.clone().expect("a close frame");
        assert_eq!(code, CloseCode::Away);
    }

    let total = first.envelopes.len() + second.envelopes.len();
    let positions: HashMap<Bytes, usize> = reference(&generator, total)
        .into_iter()
        .enumerate()
        .map(|(i, bytes)| (bytes, i))
        .collect();
    let mut union = BTreeSet::new();
    for reading in [&first, &second] {
        let at: Vec<usize> = reading
            .envelopes
            .iter()
            .map(|bytes| {
                *positions
                    .get(bytes)
                    .expect("an envelope of the stream's prefix")
            })
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "in stream order");
        union.extend(at);
    }
    assert_eq!(
        union.len(),
        total,
        "disjoint, and together the whole prefix"
    );

    assert_eq!(stats.envelopes_per_subscription["shared"], total as u64);
    let per_connection: Vec<u64> = stats.connections.iter().map(|c| c.envelopes).collect();
    assert_eq!(
        per_connection,
        [first.envelopes.len() as u64, second.envelopes.len() as u64]
    );
    assert_eq!(stats.connections_open, 0);
}

#[tokio::test]
async fn each_subscription_id_gets_the_whole_stream() {
    let generator = traffic(20_000);
    let expected = reference(&generator, 300);
    let server = Running::start(config(generator)).await;
    for subscription in ["sluice-a", "sluice-b"] {
        let mut client = server.stream(subscription).await;
        for (i, want) in expected.iter().enumerate() {
            let bytes = next_envelope(&mut client)
                .await
                .expect("the stream goes on");
            assert_eq!(&bytes, want, "{subscription}: envelope {i}");
        }
    }
    let stats = server.stop().await;
    assert_eq!(stats.envelopes_per_subscription.len(), 2);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_as_a_slow_consumer() {
    let server = Running::start(SimulateConfig {
        max_pending: 16,
        ..config(traffic(1_000_000))
    })
    .await;
    // Connected, but not reading: socket buffers fill, then the queue.
    let mut client = server.stream("slow").await;
    let stats = server.wait_for(|s| s.slow_consumer_closes == 1).await;
    assert!(stats.connections[0].slow_consumer);

    let close = loop {
        match next_envelope(&mut client).await {
            Ok(_) => continue,
            Err(close) => break close,
        }
    };
    let (code, reason) = close.expect("a close frame");
    assert_eq!(code, CloseCode::Policy);
    assert_eq!(reason, "Client did not read fast enough");
    // Reading on sends the client's answer to the close frame, which ends the handshake.
    while timeout(PATIENCE, client.next())
        .await
        .expect("in time")
        .is_some()
    {}
    server.wait_for(|s| s.connections_open == 0).await;
    server.stop().await;
}
