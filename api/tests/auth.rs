//! `auth = "uaa"` against a real `sluice simulate` server on loopback: sign-in, token checks,
//! the Cloud Controller's verdicts and their cache, UAA key rotation and outages.
//!
//! The token cases go through [`Auth`] directly; sign-in and one protected route go through
//! HTTP. The read endpoints' own answers (stores) are not this file's business: a request that
//! passes auth only has to get something other than 401/403.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sluice_api::auth::{Auth, Caller};
use sluice_api::live::LiveFeed;
use sluice_api::store::Stores;
use sluice_api::{ApiConfig, ApiError, ApiServer, ApiState, AuthMode};
use sluice_model::records::GroupKind;
use sluice_simulator::server::{
    SimulateConfig, SimulateError, SimulateHandle, SimulateServer, SimulateStats,
};
use sluice_simulator::{Generator, SimulatedApp, SimulatorConfig};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Generous: CI runs the suite on 2 shared cores.
const PATIENCE: Duration = Duration::from_secs(30);

/// The simulator's signing keys (TEST keys, public in this repository).
const TEST_KEY_1: &str = include_str!("../../connectors/simulator/src/server/keys/test-key-1.pem");
const TEST_KEY_2: &str = include_str!("../../connectors/simulator/src/server/keys/test-key-2.pem");

/// A `sluice simulate` server for the duration of a test.
struct Simulator {
    handle: SimulateHandle,
    addr: SocketAddr,
    generator: SimulatorConfig,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), SimulateError>>,
}

impl Simulator {
    async fn start() -> Simulator {
        Simulator::with_apps(6).await
    }

    async fn with_apps(apps: u32) -> Simulator {
        let generator = SimulatorConfig {
            apps,
            seed: 7,
            ..SimulatorConfig::default()
        };
        let config = SimulateConfig {
            generator: generator.clone(),
            ..SimulateConfig::default()
        };
        let server = SimulateServer::bind("127.0.0.1:0".parse().expect("an address"), config)
            .await
            .expect("binds a free port");
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = server.handle();
        let addr = server.local_addr();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Simulator {
            handle,
            addr,
            generator,
            stop,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The apps its Cloud Controller knows, in order: the developer sees the even positions.
    fn apps(&self) -> Vec<SimulatedApp> {
        Generator::new(&self.generator).apps()
    }

    fn stats(&self) -> SimulateStats {
        self.handle.stats()
    }

    /// A test user's token issued `age` ago, valid for an hour from then.
    fn token(&self, user: &str, age: Duration) -> String {
        let issued_at = SystemTime::now() - age;
        self.handle
            .user_token(user, issued_at, Duration::from_secs(3600))
            .expect("a test user")
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        timeout(PATIENCE, self.task)
            .await
            .expect("the simulator stops in time")
            .expect("the simulator does not panic")
            .expect("the simulator stops cleanly");
    }
}

fn config(uaa_url: &str, cc_url: &str) -> ApiConfig {
    ApiConfig {
        auth: AuthMode::Uaa,
        uaa_url: Some(uaa_url.to_owned()),
        cc_url: Some(cc_url.to_owned()),
        ..ApiConfig::open("127.0.0.1:0")
    }
}

fn auth_for(simulator: &Simulator) -> Auth {
    Auth::from_config(&config(&simulator.url(), &simulator.url())).expect("a valid [api]")
}

fn bearer(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).expect("a header value"),
    );
    headers
}

/// A 401 whose message contains `needle`.
fn assert_unauthorized(result: Result<Caller, ApiError>, needle: &str) {
    let error = result.expect_err("the token is refused");
    assert_eq!(error.status, StatusCode::UNAUTHORIZED, "{error}");
    assert!(
        error.message.contains(needle),
        "`{}` does not say `{needle}`",
        error.message
    );
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// A token with these claims, signed by `key` and naming `kid`.
fn sign(key_pem: &str, kid: &str, claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(key_pem.as_bytes()).expect("an RSA key");
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &key).expect("signs")
}

fn claims(user: &str, aud: Value) -> Value {
    json!({ "user_name": user, "sub": user, "aud": aud, "iat": now(), "exp": now() + 600 })
}

struct Api {
    server: ApiServer,
    http: reqwest::Client,
}

impl Api {
    async fn start(config: &ApiConfig, auth: Auth) -> Api {
        let state = ApiState {
            auth: Arc::new(auth),
            stores: Arc::new(Stores::open(None, None, vec![]).expect("no stores")),
            live: Arc::new(LiveFeed::default()),
            limits: Default::default(),
        };
        let server = ApiServer::start(config, state)
            .await
            .expect("the API starts");
        let http = sluice_common::tls::http_client(false).expect("an HTTP client");
        Api { server, http }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.address)
    }

    async fn login(&self, username: &str, password: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.url("/api/v1/login"))
            .json(&json!({ "username": username, "password": password }))
            .send()
            .await
            .expect("the API answers");
        let status = response.status();
        (status, response.json().await.expect("a JSON body"))
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut request = self.http.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("the API answers");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn a_developer_signs_in_and_sees_only_the_apps_at_even_positions() {
    let simulator = Simulator::start().await;
    let config = config(&simulator.url(), &simulator.url());
    let api = Api::start(&config, auth_for(&simulator)).await;
    let apps = simulator.apps();

    let (status, answer) = api.login("developer", "developer").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["expires_in"], 3600);
    let token = answer["access_token"].as_str().expect("a token").to_owned();

    // Through HTTP: the token passes auth (what the handler answers after that is the
    // stores' business), and no token is a JSON 401.
    let events = format!("/api/v1/apps/{}/events", apps[0].guid);
    let (status, body) = api.get(&events, Some(&token)).await;
    assert!(
        status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
        "{status} {body}"
    );
    // An app the Cloud Controller does not show this user: a JSON 403 from every endpoint of
    // that app, its live stream included.
    for endpoint in ["metrics", "events", "logs", "stream"] {
        let path = format!("/api/v1/apps/{}/{endpoint}", apps[1].guid);
        let (status, body) = api.get(&path, Some(&token)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{endpoint}: {body}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("you may not see app")),
            "{endpoint}: {body}"
        );
    }
    let (status, body) = api.get(&events, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("Authorization")),
        "{body}"
    );

    let auth = auth_for(&simulator);
    let caller = auth.caller(&bearer(&token)).await.expect("a valid token");
    assert_eq!(caller.user.as_deref(), Some("developer"));
    for (position, app) in apps.iter().enumerate() {
        let access = auth.app_access(&caller, &app.guid.to_string()).await;
        if position % 2 == 0 {
            let access = access.expect("an even app is visible");
            assert_eq!(access.name.as_deref(), Some(app.name.as_str()));
        } else {
            let error = access.expect_err("an odd app is not");
            assert_eq!(error.status, StatusCode::FORBIDDEN);
            assert!(error.message.contains("you may not see app"), "{error}");
        }
    }
    let admin = auth
        .caller(&bearer(&simulator.token("admin", Duration::ZERO)))
        .await
        .expect("a valid token");
    let odd = apps[1].guid.to_string();
    let access = auth.app_access(&admin, &odd).await.expect("admin sees all");
    assert_eq!(access.name.as_deref(), Some(apps[1].name.as_str()));
    // Not a GUID: refused before the Cloud Controller hears of it.
    let cc_requests = simulator.stats().cc_requests;
    let error = auth
        .app_access(&admin, "../v2/info")
        .await
        .expect_err("bad id");
    assert_eq!(error.status, StatusCode::BAD_REQUEST);
    assert_eq!(simulator.stats().cc_requests, cc_requests);

    api.server.stop().await;
    simulator.stop().await;
}

/// Distinct values in first-appearance order.
fn distinct(values: impl Iterator<Item = String>) -> Vec<String> {
    let mut seen = Vec::new();
    for value in values {
        if !seen.contains(&value) {
            seen.push(value);
        }
    }
    seen
}

#[tokio::test]
async fn a_developer_sees_only_the_spaces_and_orgs_the_cloud_controller_shows_them() {
    // 40 apps: spaces of 8 (5 spaces), orgs of 3 spaces (2 orgs).
    let simulator = Simulator::with_apps(40).await;
    let config = config(&simulator.url(), &simulator.url());
    let api = Api::start(&config, auth_for(&simulator)).await;
    let apps = simulator.apps();
    let spaces = distinct(apps.iter().map(|a| a.space_id.to_string()));
    let orgs = distinct(apps.iter().map(|a| a.org_id.to_string()));
    assert!(spaces.len() >= 2 && orgs.len() >= 2, "{spaces:?} {orgs:?}");
    let developer = simulator.token("developer", Duration::ZERO);
    let admin = simulator.token("admin", Duration::ZERO);

    for (endpoint, ids, what) in [("spaces", &spaces, "space"), ("orgs", &orgs, "org")] {
        for (position, id) in ids.iter().enumerate() {
            let path = format!("/api/v1/{endpoint}/{id}/metrics");
            let (status, body) = api.get(&path, Some(&developer)).await;
            if position % 2 == 0 {
                // Past auth: what the handler answers then is the stores' business (none
                // here: 503).
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{path}: {status} {body}"
                );
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
                assert!(
                    body["error"]
                        .as_str()
                        .is_some_and(|e| e.contains(&format!("you may not see {what}"))),
                    "{path}: {body}"
                );
            }
            let (status, body) = api.get(&path, Some(&admin)).await;
            assert!(
                status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                "admin {path}: {status} {body}"
            );
            let (status, _) = api.get(&path, None).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} without a token");
        }
    }

    // The verdicts are cached per token and space, as an app's are.
    let cc_requests = simulator.stats().cc_requests;
    let path = format!("/api/v1/spaces/{}/metrics", spaces[1]);
    let (status, _) = api.get(&path, Some(&developer)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        simulator.stats().cc_requests,
        cc_requests,
        "answered from the cache"
    );

    // Names come with the verdict.
    let auth = auth_for(&simulator);
    let caller = auth.caller(&bearer(&admin)).await.expect("a valid token");
    let access = auth
        .group_access(&caller, GroupKind::Org, &orgs[1])
        .await
        .expect("admin sees every org");
    let org_name = apps
        .iter()
        .find(|a| *a.org_id == *orgs[1])
        .map(|a| a.org_name.to_string());
    assert_eq!(access.name, org_name);

    api.server.stop().await;
    simulator.stop().await;
}

#[tokio::test]
async fn sign_in_refusals_are_json_errors() {
    let simulator = Simulator::start().await;
    let config = config(&simulator.url(), &simulator.url());
    let api = Api::start(&config, auth_for(&simulator)).await;

    let (status, body) = api.login("developer", "wrong").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("wrong username or password")),
        "{body}"
    );
    let response = api
        .http
        .post(api.url("/api/v1/login"))
        .header(header::CONTENT_TYPE, "application/json")
        .body("{\"username\": 1}")
        .send()
        .await
        .expect("the API answers");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.expect("a JSON error");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("username"))
    );
    api.server.stop().await;

    // An API whose client UAA does not know cannot sign anyone in.
    let unknown_client = ApiConfig {
        client_id: "nobody".to_owned(),
        ..config.clone()
    };
    let auth = Auth::from_config(&unknown_client).expect("a valid [api]");
    let error = auth.login("admin", "admin").await.expect_err("refused");
    assert_eq!(error.status, StatusCode::UNAUTHORIZED);

    let open = Api::start(&ApiConfig::open("127.0.0.1:0"), Auth::none()).await;
    let (status, body) = open.login("admin", "admin").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    open.server.stop().await;
    simulator.stop().await;
}

#[tokio::test]
async fn missing_malformed_expired_forged_and_misaddressed_tokens_are_refused() {
    let simulator = Simulator::start().await;
    let auth = auth_for(&simulator);

    assert_unauthorized(
        auth.caller(&HeaderMap::new()).await,
        "no Authorization header",
    );
    let mut basic = HeaderMap::new();
    basic.insert(
        header::AUTHORIZATION,
        HeaderValue::from_static("Basic YTpi"),
    );
    assert_unauthorized(auth.caller(&basic).await, "Bearer <token>");
    assert_unauthorized(auth.caller(&bearer("not.a-jwt")).await, "well-formed JWT");

    let expired = simulator.token("developer", Duration::from_secs(2 * 3600));
    assert_unauthorized(auth.caller(&bearer(&expired)).await, "expired");

    // A valid token whose payload is swapped for one naming the admin.
    let valid = simulator.token("developer", Duration::ZERO);
    let parts: Vec<&str> = valid.split('.').collect();
    let payload = URL_SAFE_NO_PAD.decode(parts[1]).expect("base64url");
    let mut payload: Value = serde_json::from_slice(&payload).expect("JSON claims");
    payload["user_name"] = json!("admin");
    let forged_payload = URL_SAFE_NO_PAD.encode(payload.to_string());
    let tampered = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
    assert_unauthorized(auth.caller(&bearer(&tampered)).await, "signature");

    // Signed by another key under the simulator's key id.
    let audience = json!(["cloud_controller", "openid"]);
    let other_key = sign(
        TEST_KEY_2,
        "sluice-simulator",
        &claims("admin", audience.clone()),
    );
    assert_unauthorized(auth.caller(&bearer(&other_key)).await, "signature");

    let unknown_kid = sign(TEST_KEY_1, "elsewhere", &claims("admin", json!(["x"])));
    assert_unauthorized(
        auth.caller(&bearer(&unknown_kid)).await,
        "`elsewhere`, which UAA",
    );

    let for_uaa_only = sign(
        TEST_KEY_1,
        "sluice-simulator",
        &claims("admin", json!(["uaa"])),
    );
    assert_unauthorized(
        auth.caller(&bearer(&for_uaa_only)).await,
        "`aud` lacks `cloud_controller`",
    );
    let mut not_yet = claims("admin", audience.clone());
    not_yet["nbf"] = json!(now() + 3600);
    let not_yet = sign(TEST_KEY_1, "sluice-simulator", &not_yet);
    assert_unauthorized(auth.caller(&bearer(&not_yet)).await, "not valid yet");
    let no_audience = json!({ "user_name": "admin", "exp": now() + 600 });
    let no_audience = sign(TEST_KEY_1, "sluice-simulator", &no_audience);
    assert_unauthorized(auth.caller(&bearer(&no_audience)).await, "no `aud` claim");

    // The right key and claims pass: the refusals above were for what they say.
    let good = sign(
        TEST_KEY_1,
        "sluice-simulator",
        &claims("admin", audience.clone()),
    );
    let caller = auth.caller(&bearer(&good)).await.expect("accepted");
    assert_eq!(caller.user.as_deref(), Some("admin"));
    // One fetch of the keys served them all (the unknown kid is inside the refetch interval).
    assert_eq!(auth.key_fetches().await, 1);
    assert_eq!(simulator.stats().token_keys_requests, 1);
    simulator.stop().await;
}

#[tokio::test]
async fn cloud_controller_verdicts_are_cached_per_token_and_app() {
    let simulator = Simulator::start().await;
    let apps = simulator.apps();
    let auth = auth_for(&simulator);
    let token = simulator.token("developer", Duration::ZERO);
    let caller = auth.caller(&bearer(&token)).await.expect("a valid token");
    let (even, odd) = (apps[0].guid.to_string(), apps[1].guid.to_string());

    for _ in 0..5 {
        auth.app_access(&caller, &even).await.expect("visible");
        let error = auth.app_access(&caller, &odd).await.expect_err("hidden");
        assert_eq!(error.status, StatusCode::FORBIDDEN);
    }
    assert_eq!(simulator.stats().cc_requests, 2, "one question per app");
    // The same app in capitals is the same app.
    let upper = even.to_ascii_uppercase();
    auth.app_access(&caller, &upper).await.expect("visible");
    assert_eq!(simulator.stats().cc_requests, 2);

    // Another token is another question.
    let other = simulator.token("developer", Duration::from_secs(1));
    let other = auth.caller(&bearer(&other)).await.expect("a valid token");
    auth.app_access(&other, &even).await.expect("visible");
    assert_eq!(simulator.stats().cc_requests, 3);

    // Concurrent checks of one pair share one question.
    let fresh = auth_for(&simulator);
    let third = simulator.apps()[2].guid.to_string();
    let checks = (0..8).map(|_| fresh.app_access(&caller, &third));
    for access in futures_util::future::join_all(checks).await {
        access.expect("visible");
    }
    assert_eq!(simulator.stats().cc_requests, 4);

    // Without the cache every check asks.
    let uncached = auth_for(&simulator).with_access_ttl(Duration::ZERO);
    for _ in 0..3 {
        uncached.app_access(&caller, &even).await.expect("visible");
    }
    assert_eq!(simulator.stats().cc_requests, 7);
    simulator.stop().await;
}

#[tokio::test]
async fn listing_apps_asks_the_cloud_controller_once_per_chunk_and_shares_the_cache() {
    let simulator = Simulator::start().await;
    let apps = simulator.apps();
    let auth = auth_for(&simulator);
    let token = simulator.token("developer", Duration::ZERO);
    let caller = auth.caller(&bearer(&token)).await.expect("a valid token");
    let mut ids: Vec<String> = apps.iter().map(|app| app.guid.to_string()).collect();
    ids.push("not a guid".to_owned());
    ids.push("00000000-0000-0000-0000-000000000000".to_owned());

    let visible = auth.visible_apps(&caller, &ids).await.expect("an answer");
    let mut expected: Vec<(String, String)> = apps
        .iter()
        .step_by(2)
        .map(|app| (app.guid.to_string(), app.name.clone()))
        .collect();
    let mut got: Vec<(String, String)> = visible
        .into_iter()
        .map(|(id, access)| (id, access.name.expect("a name")))
        .collect();
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
    assert_eq!(simulator.stats().cc_requests, 1);

    // The verdicts are cached for both ways of asking.
    let again = auth.visible_apps(&caller, &ids).await.expect("an answer");
    assert_eq!(again.len(), expected.len());
    auth.app_access(&caller, &ids[0]).await.expect("visible");
    let error = auth.app_access(&caller, &ids[1]).await.expect_err("hidden");
    assert_eq!(error.status, StatusCode::FORBIDDEN);
    assert_eq!(simulator.stats().cc_requests, 1);

    // Under auth = "none" everything is visible, and nobody is asked.
    let open = Auth::none();
    let everyone = Caller {
        token: None,
        user: None,
        expires_at: None,
    };
    let all = open.visible_apps(&everyone, &ids).await.expect("an answer");
    assert_eq!(all.len(), ids.len());
    simulator.stop().await;
}

#[tokio::test]
async fn a_uaa_key_rotation_is_followed_within_the_refetch_interval() {
    let simulator = Simulator::start().await;
    let rotating = auth_for(&simulator).with_key_refetch_interval(Duration::ZERO);
    let patient = auth_for(&simulator);
    let before = simulator.token("admin", Duration::ZERO);
    rotating.caller(&bearer(&before)).await.expect("valid");
    patient.caller(&bearer(&before)).await.expect("valid");

    assert_eq!(
        simulator.handle.rotate_signing_key(),
        Some("sluice-simulator-2")
    );
    let after = simulator.token("admin", Duration::ZERO);
    let caller = rotating.caller(&bearer(&after)).await.expect("refetched");
    assert_eq!(caller.user.as_deref(), Some("admin"));
    assert_eq!(rotating.key_fetches().await, 2);
    // Tokens of the old key stay valid while UAA still publishes it.
    rotating.caller(&bearer(&before)).await.expect("valid");
    assert_eq!(rotating.key_fetches().await, 2);

    // Within the 30 s refetch interval the new key id is not fetched again.
    assert_unauthorized(patient.caller(&bearer(&after)).await, "does not publish");
    assert_eq!(patient.key_fetches().await, 1);
    assert_eq!(simulator.stats().token_keys_requests, 3);
    simulator.stop().await;
}

#[tokio::test]
async fn old_keys_are_fetched_again_and_outlive_a_uaa_outage() {
    let simulator = Simulator::start().await;
    let auth = auth_for(&simulator)
        .with_key_max_age(Duration::ZERO)
        .with_key_refetch_interval(Duration::ZERO);
    let token = simulator.token("developer", Duration::ZERO);
    auth.caller(&bearer(&token)).await.expect("valid");
    auth.caller(&bearer(&token)).await.expect("valid");
    assert_eq!(
        auth.key_fetches().await,
        2,
        "an old key set is fetched again"
    );
    assert_eq!(simulator.stats().token_keys_requests, 2);

    let patient = auth_for(&simulator);
    patient.caller(&bearer(&token)).await.expect("valid");
    patient.caller(&bearer(&token)).await.expect("valid");
    assert_eq!(
        patient.key_fetches().await,
        1,
        "within the maximum age: cached"
    );

    simulator.stop().await;
    // UAA is gone: the cached key goes on verifying, though a refresh was tried.
    let caller = auth.caller(&bearer(&token)).await.expect("still valid");
    assert_eq!(caller.user.as_deref(), Some("developer"));
    assert_eq!(auth.key_fetches().await, 3);
}

#[tokio::test]
async fn unreachable_uaa_or_cloud_controller_is_503_naming_the_url() {
    let simulator = Simulator::start().await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        listener.local_addr().expect("an address")
    };
    let down = format!("http://{closed}");

    let no_uaa = Auth::from_config(&config(&down, &simulator.url())).expect("valid");
    let token = simulator.token("developer", Duration::ZERO);
    let error = no_uaa.caller(&bearer(&token)).await.expect_err("no keys");
    assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        error.message.contains(&format!("{down}/token_keys")),
        "{error}"
    );
    let error = no_uaa.login("admin", "admin").await.expect_err("no UAA");
    assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(error.message.contains(&down), "{error}");

    let no_cc = Auth::from_config(&config(&simulator.url(), &down)).expect("valid");
    let caller = no_cc.caller(&bearer(&token)).await.expect("a valid token");
    let app = simulator.apps()[0].guid.to_string();
    let error = no_cc.app_access(&caller, &app).await.expect_err("no CC");
    assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(error.message.contains(&down), "{error}");
    simulator.stop().await;
}

#[test]
fn uaa_auth_needs_both_urls() {
    let mut missing = config("http://uaa", "http://cc");
    missing.cc_url = None;
    let error = Auth::from_config(&missing)
        .expect_err("no cc_url")
        .to_string();
    assert!(error.contains("cc_url"), "{error}");
    let auth = Auth::from_config(&ApiConfig::open("127.0.0.1:0")).expect("auth = none");
    assert_eq!(auth.mode(), AuthMode::None);
}

#[tokio::test]
async fn a_live_stream_ends_when_its_token_expires() {
    let simulator = Simulator::start().await;
    let config = config(&simulator.url(), &simulator.url());
    let api = Api::start(&config, auth_for(&simulator)).await;
    let apps = simulator.apps();
    // Valid for an hour from just under an hour ago: it expires in about three seconds.
    let token = simulator.token("developer", Duration::from_secs(3600 - 3));
    let response = api
        .http
        .get(api.url(&format!("/api/v1/apps/{}/stream", apps[0].guid)))
        .bearer_auth(&token)
        .send()
        .await
        .expect("the stream opens");
    assert_eq!(response.status(), StatusCode::OK);
    // Nothing is published: the body ends only because the token did.
    let body = timeout(Duration::from_secs(20), response.bytes())
        .await
        .expect("the stream ends within 20 s of its token's expiry")
        .expect("it ends cleanly");
    assert!(
        !String::from_utf8_lossy(&body).contains("event:"),
        "{body:?}"
    );
    // Coming back with the same token is refused, with a reason the UI can show.
    let (status, body) = api
        .get(
            &format!("/api/v1/apps/{}/stream", apps[0].guid),
            Some(&token),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("expired")),
        "{body}"
    );
    simulator.stop().await;
}
