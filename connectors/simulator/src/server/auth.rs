//! `POST /oauth/token`: UAA's client-credentials grant (opaque tokens for the Firehose) and its
//! password grant for the test users (RS256 JWTs, see `identity`).

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use axum::Json;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use serde_json::json;
use tracing::{debug, warn};

use super::identity::{self, CF_CLIENT};
use super::{Shared, lock};

/// The tokens issued and when each expires.
#[derive(Debug)]
pub(super) struct Tokens {
    rng: StdRng,
    live: HashMap<String, Instant>,
}

impl Tokens {
    pub(super) fn new() -> Tokens {
        // RandomState is seeded from the OS, so tokens differ between runs; a simulator
        // needs them unguessable by accident, not by a determined attacker.
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(0x5eed);
        Tokens {
            rng: StdRng::seed_from_u64(hasher.finish()),
            live: HashMap::new(),
        }
    }

    /// A random id for a token's `jti`.
    pub(super) fn random_id(&mut self) -> String {
        let bytes: [u8; 16] = self.rng.random();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn issue(&mut self, ttl: Duration) -> String {
        let now = Instant::now();
        self.live.retain(|_, expires| *expires > now);
        let bytes: [u8; 24] = self.rng.random();
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        self.live.insert(token.clone(), now + ttl);
        token
    }

    /// Whether `token` was issued, has not expired, and was not revoked.
    pub(super) fn accepts(&self, token: &str) -> bool {
        self.live
            .get(token)
            .is_some_and(|expires| Instant::now() < *expires)
    }

    pub(super) fn revoke_all(&mut self) {
        self.live.clear();
    }
}

/// The form of a token request; UAA also takes the client's credentials here.
#[derive(Debug, Deserialize)]
pub(super) struct TokenRequest {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// `POST /oauth/token`: checks the client (HTTP basic auth, or the form's `client_id` and
/// `client_secret`) first and the grant type second, as UAA does. The configured client may
/// use both grants; `cf` with an empty secret (the cf CLI's client) only the password grant.
pub(super) async fn token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    form: Result<Form<TokenRequest>, FormRejection>,
) -> Response {
    let Form(request) = match form {
        Ok(form) => form,
        Err(rejection) => {
            let description = rejection.body_text();
            return uaa_error(StatusCode::BAD_REQUEST, "invalid_request", &description);
        }
    };
    let credentials = basic_credentials(&headers).or_else(|| {
        Some((
            request.client_id.clone()?,
            request.client_secret.clone().unwrap_or_default(),
        ))
    });
    let config = &shared.config;
    let configured = credentials
        .as_ref()
        .is_some_and(|(id, secret)| *id == config.client_id && *secret == config.client_secret);
    let cf = credentials
        .as_ref()
        .is_some_and(|(id, secret)| (id.as_str(), secret.as_str()) == CF_CLIENT);
    if !configured && !cf {
        shared.unauthorized.fetch_add(1, Ordering::Relaxed);
        shared.notify();
        let client = credentials.map(|(id, _)| id).unwrap_or_default();
        warn!(client, "Refused a token request: bad client credentials.");
        let mut response = uaa_error(StatusCode::UNAUTHORIZED, "unauthorized", "Bad credentials");
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Basic realm="UAA/client", error="unauthorized""#),
        );
        return response;
    }
    let grant = request.grant_type.unwrap_or_default();
    let client_id = credentials.map(|(id, _)| id).unwrap_or_default();
    if grant == "password" {
        return password_grant(&shared, &client_id, request.username, request.password);
    }
    if !configured {
        shared.unauthorized.fetch_add(1, Ordering::Relaxed);
        shared.notify();
        let description = format!("Unauthorized grant type: {grant}");
        return uaa_error(StatusCode::UNAUTHORIZED, "invalid_client", &description);
    }
    if grant != "client_credentials" {
        let description = format!("Unsupported grant type: '{grant}'");
        return uaa_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            &description,
        );
    }
    let ttl = config.token_ttl;
    let access_token = lock(&shared.tokens).issue(ttl);
    shared.tokens_issued.fetch_add(1, Ordering::Relaxed);
    shared.notify();
    debug!(client = %config.client_id, "Issued a token.");
    Json(json!({
        "access_token": access_token,
        "token_type": "bearer",
        "expires_in": ttl.as_secs(),
        "scope": "doppler.firehose uaa.none",
    }))
    .into_response()
}

/// The password grant: a test user's name and password buy an RS256 JWT.
fn password_grant(
    shared: &Shared,
    client_id: &str,
    username: Option<String>,
    password: Option<String>,
) -> Response {
    let username = username.unwrap_or_default();
    let Some(user) = identity::user(&username, &password.unwrap_or_default()) else {
        shared.unauthorized.fetch_add(1, Ordering::Relaxed);
        shared.notify();
        warn!(
            username,
            "Refused a password grant: bad username or password."
        );
        return uaa_error(StatusCode::UNAUTHORIZED, "unauthorized", "Bad credentials");
    };
    let ttl = shared.config.user_token_ttl;
    let jti = lock(&shared.tokens).random_id();
    let issuer = format!("http://{}/oauth/token", shared.local_addr);
    let access_token = shared.identity.sign(
        user,
        client_id,
        &issuer,
        jti.clone(),
        SystemTime::now(),
        ttl,
    );
    shared.tokens_issued.fetch_add(1, Ordering::Relaxed);
    shared.notify();
    debug!(username, client_id, "Issued a user token.");
    Json(json!({
        "access_token": access_token,
        "token_type": "bearer",
        "expires_in": ttl.as_secs(),
        "scope": "cloud_controller.read openid",
        "jti": jti,
    }))
    .into_response()
}

/// `Authorization: Basic base64(id:secret)`, the scheme in any case.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

/// The token in `Authorization: bearer <token>`, the scheme in any case.
pub(super) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// UAA's JSON error answer.
fn uaa_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({ "error": error, "error_description": description })),
    )
        .into_response()
}
