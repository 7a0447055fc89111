//! The simulated foundation's identity side: UAA's signing keys (`GET /token_keys`), its test
//! users and the RS256 JWTs their password grants get, and the Cloud Controller's
//! `GET /v3/apps/{guid}`, which answers only for apps the bearer's user may see.
//!
//! # The signing keys are TEST KEYS
//!
//! `keys/test-key-*.pem` are RSA private keys checked into this repository: anyone can read
//! them, so anyone can sign tokens this simulator (and an API pointed at it) accepts. They exist
//! because the simulator is a development and test tool and tests need tokens with the same
//! key across runs (expired ones, forged ones). Generating a key at start would need an RSA
//! key-generation crate (`rsa` and its big-number stack) that nothing else in Sluice uses;
//! ring, which signs here, cannot generate RSA keys. Never configure a real API to trust a
//! UAA that serves these keys.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::debug;
use uuid::Uuid;

use super::places::Place;
use super::{Shared, auth::bearer_token};
use crate::{Generator, SimulatedApp, SimulatorConfig};

/// One of the checked-in test keys: its key id, private key, public key and modulus.
struct TestKey {
    kid: &'static str,
    private_pem: &'static str,
    public_pem: &'static str,
    /// The modulus, base64url without padding, as a JWKS `n` (computed from the key with
    /// `openssl rsa -modulus`; a test checks it against the PEM).
    modulus: &'static str,
}

/// The exponent of both keys, 65537, as a JWKS `e`.
const EXPONENT: &str = "AQAB";

/// The first key signs from the start; [`Identity::rotate`] switches to the second.
const TEST_KEYS: [TestKey; 2] = [
    TestKey {
        kid: "sluice-simulator",
        private_pem: include_str!("keys/test-key-1.pem"),
        public_pem: include_str!("keys/test-key-1.pub.pem"),
        modulus: "ygmmGhSKm_W4GtV8Iuv_oT5lzz86wxhPDsnrhDTL42QPpma1sBtk1oGcIhJ6IC1jUpuv-k6b100I4kcdAJCdxXLnfMymip7V8hxs_6fJXupz5RfKL58rTnMB2KQzfQLR4bZuq63jKRkR_mWzRV_14lVhmwln9oQXGRqxCQ2w2qrhH7Ymvw91sdENR-G-m5Wz69Q00ucnCSJ9h8Mr5-MMGfWgMzFI1Gk0Kum-JUWlGDQMbEb0yjCnofI8lk2TjTuYT2CeEDX6AQ5p3YrrguXNTgERbDPHdQDrvyiEgknd4BcNNZZ7ZLHEh-NCUnMf70Y-5Yjc_uGj82fkEzte73WQHQ",
    },
    TestKey {
        kid: "sluice-simulator-2",
        private_pem: include_str!("keys/test-key-2.pem"),
        public_pem: include_str!("keys/test-key-2.pub.pem"),
        modulus: "lynP2zZI89ARYBdXfyN8aeP_ikiI0vZvsYHWELzC8hIbQHI69VH_5B0PuAzD_VvklAqKRS8-x6hgIQ14jdWYVQA5hJ_s-dDtNvETJb_SJra95oi0p96iEwHJ0A5aNI7D-X1wrpuIQmweAiF9VQhxHfaRO53jZaRLBfWyotRuWFRAKWr95MYCQmyCi7t9VdO1BXkPhfHbhNS-VQJl7hil3YSiGX5Pst-oL-0lW2ysLxwX3VHt_wFvRPTOlnI5G4vNHffBKakx83KaFlNvRpDm97S8NV3JBI_p-F4-6L_xd0gFmPgo1vx21KQQynte12jkDQbWtRcWiWyY7ATwVqsHqQ",
    },
];

/// The password grant's test users.
const USERS: [User; 2] = [
    User {
        name: "admin",
        password: "admin",
        id: "4a0b3a9e-0d6b-4a2e-9c55-7f6d3c1e0a01",
        sees: Visibility::Every,
    },
    User {
        name: "developer",
        password: "developer",
        id: "4a0b3a9e-0d6b-4a2e-9c55-7f6d3c1e0a02",
        sees: Visibility::EvenPositions,
    },
];

/// The UAA client the cf CLI signs in with: `cf`, empty secret, password grant only.
pub(super) const CF_CLIENT: (&str, &str) = ("cf", "");

/// The scopes of a user token.
const SCOPES: [&str; 2] = ["cloud_controller.read", "openid"];

/// The audience of a user token; the Cloud Controller wants `cloud_controller`.
const AUDIENCE: [&str; 2] = ["cloud_controller", "openid"];

#[derive(Clone, Copy, Debug)]
enum Visibility {
    Every,
    /// Apps at even positions (0, 2, 4, ...) of the simulator's app list.
    EvenPositions,
}

/// A test user of the password grant.
#[derive(Debug)]
pub(super) struct User {
    pub(super) name: &'static str,
    password: &'static str,
    id: &'static str,
    sees: Visibility,
}

impl User {
    fn sees(&self, position: usize) -> bool {
        match self.sees {
            Visibility::Every => true,
            Visibility::EvenPositions => position.is_multiple_of(2),
        }
    }
}

/// The test user with this name and password.
pub(super) fn user(name: &str, password: &str) -> Option<&'static User> {
    USERS
        .iter()
        .find(|user| user.name == name && user.password == password)
}

pub(super) fn user_named(name: &str) -> Option<&'static User> {
    USERS.iter().find(|user| user.name == name)
}

/// A key the simulator signs with or has signed with.
struct Key {
    kid: &'static str,
    encoding: EncodingKey,
    decoding: DecodingKey,
    public_pem: &'static str,
    modulus: &'static str,
}

/// The keys, the users' view of the apps, and which key signs now.
pub(super) struct Identity {
    keys: Vec<Key>,
    /// Index into `keys` of the signing key; the keys up to it are published.
    active: std::sync::atomic::AtomicUsize,
    apps: Vec<SimulatedApp>,
    /// Position of each app in `apps`.
    positions: HashMap<Uuid, usize>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("active_kid", &self.active_key().kid)
            .field("apps", &self.apps.len())
            .finish_non_exhaustive()
    }
}

/// The claims of a user token, as UAA writes them (the ones Sluice and the CC read, and a few
/// more so the tokens look like UAA's).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct UserClaims {
    pub(super) jti: String,
    pub(super) sub: String,
    pub(super) user_id: String,
    pub(super) user_name: String,
    pub(super) origin: String,
    pub(super) client_id: String,
    pub(super) cid: String,
    pub(super) grant_type: String,
    pub(super) zid: String,
    pub(super) aud: Vec<String>,
    pub(super) scope: Vec<String>,
    pub(super) iss: String,
    pub(super) iat: u64,
    pub(super) exp: u64,
}

impl Identity {
    /// The identity of a simulator serving `generator`'s foundation.
    ///
    /// # Panics
    /// If a checked-in test key does not parse: a build defect, caught by the unit tests.
    pub(super) fn new(generator: &SimulatorConfig) -> Identity {
        let keys = TEST_KEYS
            .iter()
            .map(|key| Key {
                kid: key.kid,
                encoding: EncodingKey::from_rsa_pem(key.private_pem.as_bytes())
                    .expect("the checked-in private test key is a valid RSA PEM"),
                decoding: DecodingKey::from_rsa_pem(key.public_pem.as_bytes())
                    .expect("the checked-in public test key is a valid RSA PEM"),
                public_pem: key.public_pem,
                modulus: key.modulus,
            })
            .collect();
        // The in-process simulator source draws the same apps for the same config, so a
        // pipeline reading the simulated Firehose and this Cloud Controller agree on guids.
        let apps = Generator::new(generator).apps();
        let positions = apps
            .iter()
            .enumerate()
            .map(|(position, app)| (app.guid, position))
            .collect();
        Identity {
            keys,
            active: std::sync::atomic::AtomicUsize::new(0),
            apps,
            positions,
        }
    }

    fn active_key(&self) -> &Key {
        &self.keys[self.active.load(Ordering::Relaxed).min(self.keys.len() - 1)]
    }

    /// The keys `/token_keys` publishes: every key up to the signing one, as UAA keeps
    /// publishing the old key while tokens it signed are still valid.
    fn published(&self) -> &[Key] {
        let active = self.active.load(Ordering::Relaxed).min(self.keys.len() - 1);
        &self.keys[..=active]
    }

    /// Switches signing to the next test key (published from now on); false when there is
    /// none left.
    pub(super) fn rotate(&self) -> bool {
        let next = self.active.load(Ordering::Relaxed) + 1;
        if next >= self.keys.len() {
            return false;
        }
        self.active.store(next, Ordering::Relaxed);
        true
    }

    /// The kid of the key that signs now.
    pub(super) fn active_kid(&self) -> &'static str {
        self.active_key().kid
    }

    /// A token for `user`, issued at `issued_at` and valid for `ttl`, signed by the active key.
    pub(super) fn sign(
        &self,
        user: &User,
        client_id: &str,
        issuer: &str,
        jti: String,
        issued_at: SystemTime,
        ttl: Duration,
    ) -> String {
        let iat = issued_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = UserClaims {
            jti,
            sub: user.id.to_owned(),
            user_id: user.id.to_owned(),
            user_name: user.name.to_owned(),
            origin: "uaa".to_owned(),
            client_id: client_id.to_owned(),
            cid: client_id.to_owned(),
            grant_type: "password".to_owned(),
            zid: "uaa".to_owned(),
            aud: AUDIENCE.iter().map(|a| (*a).to_owned()).collect(),
            scope: SCOPES.iter().map(|s| (*s).to_owned()).collect(),
            iss: issuer.to_owned(),
            iat,
            exp: iat.saturating_add(ttl.as_secs()),
        };
        let key = self.active_key();
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(key.kid.to_owned());
        jsonwebtoken::encode(&header, &claims, &key.encoding)
            .expect("RS256 signing with a valid RSA key does not fail")
    }

    /// The user a token names, if it is signed by a published key, unexpired and meant for
    /// the Cloud Controller; otherwise why not.
    pub(super) fn verify(&self, token: &str) -> Result<&'static User, TokenRejected> {
        let header = jsonwebtoken::decode_header(token)?;
        let key = self
            .published()
            .iter()
            .find(|key| header.kid.as_deref() == Some(key.kid))
            .ok_or(TokenRejected::UnknownKey(header.kid))?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&["cloud_controller"]);
        validation.set_required_spec_claims(&["exp", "aud"]);
        validation.leeway = 0;
        let data = jsonwebtoken::decode::<UserClaims>(token, &key.decoding, &validation)?;
        user_named(&data.claims.user_name).ok_or(TokenRejected::NoUser(data.claims.user_name))
    }

    /// The apps `user` may see, in list order; only those among `guids` when given.
    fn visible_apps(&self, user: &User, guids: Option<&[Uuid]>) -> Vec<&SimulatedApp> {
        self.apps
            .iter()
            .enumerate()
            .filter(|(position, app)| {
                user.sees(*position) && guids.is_none_or(|guids| guids.contains(&app.guid))
            })
            .map(|(_, app)| app)
            .collect()
    }

    /// The name of the space (org) `guid` if `user` may see it (see [`super::places`]).
    pub(super) fn visible_place(&self, user: &User, place: Place, guid: &str) -> Option<String> {
        let mut seen: Vec<&str> = Vec::new();
        for app in &self.apps {
            let (id, name) = match place {
                Place::Space => (&app.space_id, &app.space_name),
                Place::Org => (&app.org_id, &app.org_name),
            };
            if seen.last() != Some(&&**id) && !seen.contains(&&**id) {
                seen.push(id);
            }
            if **id == *guid {
                return user.sees(seen.len() - 1).then(|| name.to_string());
            }
        }
        None
    }

    /// The app with this guid if `user` may see it.
    fn visible_app(&self, user: &User, guid: &str) -> Option<&SimulatedApp> {
        let guid = Uuid::parse_str(guid).ok()?;
        let position = *self.positions.get(&guid)?;
        user.sees(position).then(|| &self.apps[position])
    }
}

/// `GET /token_keys`: UAA's JSON Web Key Set.
pub(super) async fn token_keys(State(shared): State<Arc<Shared>>) -> Response {
    shared.token_keys_requests.fetch_add(1, Ordering::Relaxed);
    shared.notify();
    let keys: Vec<_> = shared
        .identity
        .published()
        .iter()
        .map(|key| {
            json!({
                "kty": "RSA",
                "alg": "RS256",
                "use": "sig",
                "kid": key.kid,
                "e": EXPONENT,
                "n": key.modulus,
                "value": key.public_pem.trim_end(),
            })
        })
        .collect();
    Json(json!({ "keys": keys })).into_response()
}

/// `GET /v3/apps/{guid}`: the Cloud Controller. 401 without a valid token, 404 for an app the
/// user may not see (the CC does not reveal that it exists), else the app.
pub(super) async fn app(
    State(shared): State<Arc<Shared>>,
    Path(guid): Path<String>,
    headers: HeaderMap,
) -> Response {
    let user = match cc_request(&shared, &headers) {
        Ok(user) => user,
        Err(response) => return *response,
    };
    match shared.identity.visible_app(user, &guid) {
        Some(app) => Json(json!({
            "guid": app.guid,
            "name": app.name,
            "state": "STARTED",
        }))
        .into_response(),
        None => cc_error(
            StatusCode::NOT_FOUND,
            10010,
            "CF-ResourceNotFound",
            "App not found",
        ),
    }
}

/// `GET /v3/apps` query: the filters and paging of the Cloud Controller the API uses.
#[derive(Debug, Deserialize)]
pub(super) struct AppsQuery {
    /// Comma-separated app guids.
    #[serde(default)]
    guids: Option<String>,
    #[serde(default)]
    per_page: Option<usize>,
    #[serde(default)]
    page: Option<usize>,
    /// `space.organization`: the spaces and orgs of the page's apps under `included`.
    #[serde(default)]
    include: Option<String>,
}

/// `GET /v3/apps?guids=..`: the apps the bearer's user may see (among `guids`), paged as the
/// Cloud Controller pages (`per_page` 1 to 5000, default 50). With the configured client's
/// token (client credentials, as `[metadata]` lists) every app the foundation has now, with
/// `include=space.organization` (see `directory`).
pub(super) async fn apps(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<AppsQuery>,
    headers: HeaderMap,
) -> Response {
    let client =
        bearer_token(&headers).is_some_and(|token| super::lock(&shared.tokens).accepts(token));
    if client {
        shared.cc_requests.fetch_add(1, Ordering::Relaxed);
        shared.notify();
        let per_page = query.per_page.unwrap_or(50);
        if !(1..=5000).contains(&per_page) {
            return cc_error(
                StatusCode::BAD_REQUEST,
                10005,
                "CF-BadQueryParameter",
                "The query parameter is invalid: Per page must be between 1 and 5000",
            );
        }
        let include = query.include.as_deref() == Some("space.organization");
        return super::directory::listing(
            &shared,
            per_page,
            query.page.unwrap_or(1).max(1),
            include,
        );
    }
    let user = match cc_request(&shared, &headers) {
        Ok(user) => user,
        Err(response) => return *response,
    };
    let guids: Option<Vec<Uuid>> = query.guids.as_deref().map(|guids| {
        guids
            .split(',')
            .filter_map(|guid| Uuid::parse_str(guid.trim()).ok())
            .collect()
    });
    let per_page = query.per_page.unwrap_or(50);
    if !(1..=5000).contains(&per_page) {
        return cc_error(
            StatusCode::BAD_REQUEST,
            10005,
            "CF-BadQueryParameter",
            "The query parameter is invalid: Per page must be between 1 and 5000",
        );
    }
    let visible = shared.identity.visible_apps(user, guids.as_deref());
    let total = visible.len();
    let pages = total.div_ceil(per_page).max(1);
    let page = query.page.unwrap_or(1).max(1);
    let resources: Vec<_> = visible
        .iter()
        .skip((page - 1).saturating_mul(per_page))
        .take(per_page)
        .map(|app| json!({ "guid": app.guid, "name": app.name, "state": "STARTED" }))
        .collect();
    let base = format!("http://{}/v3/apps", shared.local_addr);
    let link = |page: usize| format!("{base}?page={page}&per_page={per_page}");
    Json(json!({
        "pagination": pagination(total, pages, page, link),
        "resources": resources,
    }))
    .into_response()
}

/// The Cloud Controller's `pagination` object for page `page` of `pages` (`total`
/// resources), with `link(n)` the URL of page `n`.
pub(super) fn pagination(
    total: usize,
    pages: usize,
    page: usize,
    link: impl Fn(usize) -> String,
) -> serde_json::Value {
    let href = |page: usize| json!({ "href": link(page) });
    json!({
        "total_results": total,
        "total_pages": pages,
        "first": href(1),
        "last": href(pages),
        "next": if page < pages { href(page + 1) } else { serde_json::Value::Null },
        "previous": if page > 1 { href(page - 1) } else { serde_json::Value::Null },
    })
}

/// Why the simulated Cloud Controller refused a bearer token.
#[derive(Debug, PartialEq, thiserror::Error)]
pub(super) enum TokenRejected {
    /// Not a JWT, not signed by its key, expired, or not meant for the Cloud Controller.
    #[error(transparent)]
    Invalid(#[from] jsonwebtoken::errors::Error),
    /// Signed with a key UAA does not publish.
    #[error("unknown key id {0:?}")]
    UnknownKey(Option<String>),
    /// It names a user the simulator does not have.
    #[error("no user {0:?}")]
    NoUser(String),
}

/// Counts a Cloud Controller request; then the user of its bearer token, or the Cloud
/// Controller's 401.
pub(super) fn cc_request(
    shared: &Shared,
    headers: &HeaderMap,
) -> Result<&'static User, Box<Response>> {
    shared.cc_requests.fetch_add(1, Ordering::Relaxed);
    shared.notify();
    let Some(token) = bearer_token(headers) else {
        return Err(Box::new(cc_error(
            StatusCode::UNAUTHORIZED,
            10002,
            "CF-NotAuthenticated",
            "Authentication error",
        )));
    };
    shared.identity.verify(token).map_err(|why| {
        debug!(%why, "Cloud Controller: refused a token.");
        Box::new(cc_error(
            StatusCode::UNAUTHORIZED,
            1000,
            "CF-InvalidAuthToken",
            "Invalid Auth Token",
        ))
    })
}

/// The Cloud Controller's v3 error answer.
pub(super) fn cc_error(status: StatusCode, code: u32, title: &str, detail: &str) -> Response {
    (
        status,
        Json(json!({ "errors": [{ "code": code, "title": title, "detail": detail }] })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity::new(&SimulatorConfig {
            apps: 5,
            ..SimulatorConfig::default()
        })
    }

    #[test]
    fn each_published_modulus_matches_its_pem() {
        for key in &TEST_KEYS {
            let from_components =
                DecodingKey::from_rsa_components(key.modulus, EXPONENT).expect("n and e decode");
            let signer = EncodingKey::from_rsa_pem(key.private_pem.as_bytes()).expect("a key");
            let token = jsonwebtoken::encode(
                &Header::new(Algorithm::RS256),
                &json!({ "exp": u64::MAX / 2 }),
                &signer,
            )
            .expect("signs");
            let mut validation = Validation::new(Algorithm::RS256);
            validation.validate_aud = false;
            jsonwebtoken::decode::<serde_json::Value>(&token, &from_components, &validation)
                .unwrap_or_else(|e| panic!("{}: n/e verify a token its key signed: {e}", key.kid));
        }
    }

    #[test]
    fn tokens_verify_until_they_expire_and_only_with_a_published_key() {
        let identity = identity();
        let developer = user("developer", "developer").expect("a test user");
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        let token = identity.sign(developer, "cf", "iss", "j".into(), now, hour);
        assert_eq!(identity.verify(&token).map(|u| u.name), Ok("developer"));
        let old = identity.sign(developer, "cf", "iss", "j".into(), now - 2 * hour, hour);
        assert!(
            identity
                .verify(&old)
                .is_err_and(|e| e.to_string().contains("Expired"))
        );

        assert!(identity.rotate());
        assert!(!identity.rotate(), "two test keys only");
        let rotated = identity.sign(developer, "cf", "iss", "j".into(), now, hour);
        assert_eq!(identity.verify(&rotated).map(|u| u.name), Ok("developer"));
        assert_eq!(identity.verify(&token).map(|u| u.name), Ok("developer"));
        assert_eq!(identity.published().len(), 2);
    }

    #[test]
    fn the_developer_sees_the_apps_at_even_positions() {
        let identity = identity();
        let admin = user("admin", "admin").expect("a test user");
        let developer = user("developer", "developer").expect("a test user");
        assert!(user("developer", "admin").is_none());
        for (position, app) in identity.apps.iter().enumerate() {
            let guid = app.guid.to_string();
            assert!(identity.visible_app(admin, &guid).is_some());
            assert_eq!(
                identity.visible_app(developer, &guid).is_some(),
                position % 2 == 0
            );
        }
        assert!(identity.visible_app(admin, "not-a-guid").is_none());
        assert!(
            identity
                .visible_app(admin, "00000000-0000-0000-0000-000000000000")
                .is_none()
        );
    }
}
