//! `sluice simulate` over real loopback sockets: UAA tokens, bearer checks, the stream, its
//! split between connections, slow consumers and shutdown.
//!
//! Each test asks the server in full: requests and the checks of their answers repeat on
//! purpose, so that every case reads on its own.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use sluice_model::EventType;
use sluice_model::reference::encode_v1;
use sluice_simulator::server::SimulateConfig;
use sluice_simulator::{Clock, Generator, SimulatorConfig};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use sluice_test_support::simulate::{PATIENCE, Running};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the tests ask of a running simulator, over HTTP and WebSocket.
trait SimulatorClient {
    async fn token_response(&self, basic: Option<(&str, &str)>, grant: &str) -> reqwest::Response;
    async fn token(&self) -> String;
    async fn connect(
        &self,
        subscription: &str,
        authorization: Option<String>,
    ) -> Result<Client, tungstenite::Error>;
    async fn stream(&self, subscription: &str) -> Client;
}

impl SimulatorClient for Running {
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
        user_token_ttl: Duration::from_secs(3600),
        max_pending: 100_000,
        directory_churn: None,
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
    let code = server
        .token_response(Some(("sluice", "s3cret")), "authorization_code")
        .await;
    assert_eq!(code.status(), 400);
    let error: serde_json::Value = code.json().await.expect("a JSON error");
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

/// A password grant at the simulator's UAA: status and JSON answer.
async fn password_grant(
    server: &Running,
    client: (&str, &str),
    username: &str,
    password: &str,
) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(format!("http://{}/oauth/token", server.addr))
        .basic_auth(client.0, Some(client.1))
        .form(&[
            ("grant_type", "password"),
            ("username", username),
            ("password", password),
        ])
        .send()
        .await
        .expect("the token endpoint answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

/// `GET /v3/{path}` at the simulator's Cloud Controller (`apps/{guid}` or a list).
async fn cc(server: &Running, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let mut request = reqwest::Client::new().get(format!("http://{}/v3/{path}", server.addr));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("the Cloud Controller answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

#[tokio::test]
async fn the_test_users_get_rs256_tokens_that_verify_with_the_published_keys() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = Running::start(SimulateConfig {
        user_token_ttl: Duration::from_secs(600),
        ..config(traffic(100))
    })
    .await;
    let keys: serde_json::Value = reqwest::get(format!("http://{}/token_keys", server.addr))
        .await
        .expect("token_keys answers")
        .json()
        .await
        .expect("a JSON key set");
    let key = &keys["keys"][0];
    assert_eq!(keys["keys"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        (
            &key["kty"],
            &key["alg"],
            &key["use"],
            &key["kid"],
            &key["e"]
        ),
        (
            &"RSA".into(),
            &"RS256".into(),
            &"sig".into(),
            &"sluice-simulator".into(),
            &"AQAB".into()
        )
    );
    let value = key["value"].as_str().expect("a PEM value");
    assert!(value.starts_with("-----BEGIN PUBLIC KEY-----"), "{value}");

    // The cf CLI's client and the configured one may both sign users in.
    for client in [("cf", ""), ("sluice", "s3cret")] {
        let (status, answer) = password_grant(&server, client, "developer", "developer").await;
        assert_eq!(status, 200, "{client:?}: {answer}");
        assert_eq!(answer["expires_in"], 600);
        let token = answer["access_token"].as_str().expect("a token");
        let header = jsonwebtoken::decode_header(token).expect("a JWT");
        assert_eq!(header.kid.as_deref(), Some("sluice-simulator"));
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_audience(&["cloud_controller"]);
        for decoding in [
            jsonwebtoken::DecodingKey::from_rsa_components(
                key["n"].as_str().expect("n"),
                key["e"].as_str().expect("e"),
            )
            .expect("n and e"),
            jsonwebtoken::DecodingKey::from_rsa_pem(value.as_bytes()).expect("a PEM"),
        ] {
            let claims = jsonwebtoken::decode::<serde_json::Value>(token, &decoding, &validation)
                .expect("verifies with the published key")
                .claims;
            assert_eq!(claims["user_name"], "developer");
            assert_eq!(
                claims["aud"],
                serde_json::json!(["cloud_controller", "openid"])
            );
            assert_eq!(claims["iss"], format!("http://{}/oauth/token", server.addr));
            let lifetime = claims["exp"].as_u64().zip(claims["iat"].as_u64());
            assert_eq!(lifetime.map(|(exp, iat)| exp - iat), Some(600));
        }
    }
    let (status, answer) = password_grant(&server, ("cf", ""), "developer", "admin").await;
    assert_eq!((status, &answer["error"]), (401, &"unauthorized".into()));
    let (status, _) = password_grant(&server, ("cf", "x"), "admin", "admin").await;
    assert_eq!(status, 401, "cf's secret is empty");
    // `cf` may not take client-credentials tokens (those open the Firehose).
    let cf = server
        .token_response(Some(("cf", "")), "client_credentials")
        .await;
    assert_eq!(cf.status(), 401);

    let stats = server.stop().await;
    assert_eq!(stats.tokens_issued, 2);
    assert_eq!(stats.token_keys_requests, 1);
    assert_eq!(stats.unauthorized, 3);
}

#[tokio::test]
async fn the_cloud_controller_shows_each_user_the_apps_they_may_see() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let generator = SimulatorConfig {
        apps: 5,
        ..traffic(100)
    };
    let apps = Generator::new(&generator).apps();
    assert_eq!(apps.len(), 5);
    let server = Running::start(config(generator)).await;
    let (_, developer) = password_grant(&server, ("cf", ""), "developer", "developer").await;
    let developer = developer["access_token"]
        .as_str()
        .expect("a token")
        .to_owned();
    let (_, admin) = password_grant(&server, ("cf", ""), "admin", "admin").await;
    let admin = admin["access_token"].as_str().expect("a token").to_owned();

    for (position, app) in apps.iter().enumerate() {
        let guid = app.guid.to_string();
        let (status, body) = cc(&server, &format!("apps/{guid}"), Some(&admin)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["guid"], guid.as_str());
        assert_eq!(body["name"], app.name.as_str());
        assert_eq!(body["state"], "STARTED");
        let (status, body) = cc(&server, &format!("apps/{guid}"), Some(&developer)).await;
        if position % 2 == 0 {
            assert_eq!((status, &body["name"]), (200, &app.name.as_str().into()));
        } else {
            assert_eq!(status, 404, "{body}");
            assert_eq!(body["errors"][0]["title"], "CF-ResourceNotFound");
        }
    }
    let unknown = "00000000-0000-0000-0000-000000000000";
    assert_eq!(
        cc(&server, &format!("apps/{unknown}"), Some(&admin))
            .await
            .0,
        404
    );
    let guid = apps[0].guid.to_string();
    let (status, body) = cc(&server, &format!("apps/{guid}"), None).await;
    assert_eq!((status, &body["errors"][0]["code"]), (401, &10002.into()));
    let (status, body) = cc(&server, &format!("apps/{guid}"), Some("made-up")).await;
    assert_eq!((status, &body["errors"][0]["code"]), (401, &1000.into()));
    // A client-credentials token is no user's token.
    let firehose_token = server.token().await;
    assert_eq!(
        cc(&server, &format!("apps/{guid}"), Some(&firehose_token))
            .await
            .0,
        401
    );
    let expired = server
        .handle
        .user_token(
            "admin",
            std::time::SystemTime::now() - Duration::from_secs(7200),
            Duration::from_secs(3600),
        )
        .expect("a test user");
    assert_eq!(
        cc(&server, &format!("apps/{guid}"), Some(&expired)).await.0,
        401
    );

    // The list: only the visible apps among the guids asked for, paged.
    let asked: Vec<String> = apps.iter().take(4).map(|a| a.guid.to_string()).collect();
    let list = format!("apps?guids={}&per_page=1", asked.join(","));
    let (status, body) = cc(&server, &list, Some(&developer)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pagination"]["total_results"], 2);
    assert_eq!(body["pagination"]["total_pages"], 2);
    assert_eq!(body["resources"][0]["guid"], asked[0].as_str());
    assert!(body["pagination"]["next"]["href"].is_string());
    let list = format!("apps?guids={}&per_page=50", asked.join(","));
    let (_, body) = cc(&server, &list, Some(&admin)).await;
    assert_eq!(body["pagination"]["total_results"], 4);
    let (status, _) = cc(&server, "apps", None).await;
    assert_eq!(status, 401);

    let stats = server.stop().await;
    assert_eq!(stats.cc_requests, 18);
}

#[test]
fn the_simulator_source_and_server_agree_on_the_apps() {
    let config = SimulatorConfig {
        apps: 23,
        seed: 4,
        ..SimulatorConfig::default()
    };
    let apps = Generator::new(&config).apps();
    assert_eq!(apps, Generator::new(&config).apps());
    assert_eq!(apps.len(), 23);
    assert_eq!(apps[0].name, "orders-api");
    assert_eq!(apps[20].name, "orders-api-2");
    // Container metrics of the in-process source carry the same guids.
    let mut events = Vec::new();
    Generator::new(&config).fill(5_000, &mut events);
    let guids: BTreeSet<String> = apps.iter().map(|a| a.guid.to_string()).collect();
    let seen: BTreeSet<String> = events
        .iter()
        .filter_map(|e| e.app_id().map(|id| id.to_canonical().to_string()))
        .collect();
    assert!(!seen.is_empty() && seen.is_subset(&guids), "{seen:?}");
}

/// The apps of `running`'s Cloud Controller as `[metadata]` joins them.
fn expected_listing(
    apps: &[sluice_simulator::SimulatedApp],
) -> Vec<(String, sluice_model::records::AppInfo)> {
    let mut expected: Vec<_> = apps
        .iter()
        .map(|app| {
            (
                app.guid.hyphenated().to_string(),
                sluice_model::records::AppInfo {
                    name: app.name.as_str().into(),
                    space_id: app.space_id.clone(),
                    space_name: app.space_name.clone(),
                    org_id: app.org_id.clone(),
                    org_name: app.org_name.clone(),
                },
            )
        })
        .collect();
    expected.sort();
    expected
}

#[tokio::test]
async fn the_cloud_controller_lists_every_app_paged_with_its_space_and_org_and_churns() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = Running::start(config(SimulatorConfig {
        apps: 23,
        ..traffic(0)
    }))
    .await;
    let token = server.token().await;
    let http = reqwest::Client::new();
    // Paged by hand: 5 a page, followed through pagination.next, includes on every page.
    let mut next = Some(format!(
        "http://{}/v3/apps?per_page=5&include=space.organization",
        server.addr
    ));
    let (mut pages, mut guids) = (0, BTreeSet::new());
    while let Some(url) = next {
        let page: serde_json::Value = http
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .expect("the CC answers")
            .json()
            .await
            .expect("JSON");
        pages += 1;
        let resources = page["resources"].as_array().expect("resources");
        for app in resources {
            let space = app["relationships"]["space"]["data"]["guid"].clone();
            assert!(
                page["included"]["spaces"]
                    .as_array()
                    .expect("included spaces")
                    .iter()
                    .any(|s| s["guid"] == space),
                "the page includes the space of {app}"
            );
            guids.insert(app["guid"].as_str().expect("guid").to_owned());
        }
        assert!(
            !page["included"]["organizations"]
                .as_array()
                .expect("orgs")
                .is_empty()
        );
        next = page["pagination"]["next"]["href"]
            .as_str()
            .map(str::to_owned);
    }
    assert_eq!((pages, guids.len()), (5, 23));

    // The metadata client joins the same pages into names.
    let metadata = sluice_sources::metadata::MetadataConfig {
        cc_url: format!("http://{}", server.addr),
        uaa_url: format!("http://{}", server.addr),
        client_id: "sluice".to_owned(),
        client_secret: "s3cret".to_owned(),
        skip_tls_verify: false,
        refresh: Duration::from_secs(60),
        startup_timeout: Duration::from_secs(5),
    };
    let cc = sluice_sources::metadata::CloudController::new(
        &metadata,
        Default::default(),
        tokio_util::sync::CancellationToken::new(),
    )
    .expect("a client");
    let listed = |apps: Vec<(sluice_model::Str, sluice_model::records::AppInfo)>| {
        apps.into_iter()
            .map(|(guid, info)| (guid.to_string(), info))
            .collect::<Vec<_>>()
    };
    let first = listed(cc.list().await.expect("a listing"));
    assert_eq!(first, expected_listing(&server.handle.directory()));
    assert_eq!(first.len(), 23);

    // A rename, a move, a delete: the next listing shows each.
    let changes: Vec<_> = (0..3)
        .map(|_| server.handle.churn_directory().expect("a change"))
        .collect();
    let second = listed(cc.list().await.expect("a listing"));
    assert_eq!(second, expected_listing(&server.handle.directory()));
    assert_eq!(second.len(), 22);
    let differing = first.iter().filter(|app| !second.contains(app)).count();
    assert_eq!(differing, 3, "{changes:?}");
    server.stop().await;
}
