//! Who is calling, and which apps they may see.
//!
//! `auth = "uaa"` works as PCF Metrics did: the caller sends a UAA bearer token; its signature is
//! verified against UAA's `/token_keys`, its expiry and audience checked, and an app is shown
//! only if the Cloud Controller answers `GET /v3/apps/{guid}` for that token (cached briefly).
//! The token's `iss` is not compared with `uaa_url`: UAA's issuer is its public URL, which need
//! not be the address the API reaches it at, and the signature already ties the token to the
//! keys of the configured UAA.
//!
//! - `keys` — UAA's signing keys, cached, fetched again when a token names an unknown key id.
//! - `access` — the Cloud Controller's verdicts per (token, app), cached for
//!   [`ACCESS_TTL`].
//! - `cloud_controller` — asking the Cloud Controller about apps with the caller's token.

mod access;
mod cloud_controller;
mod keys;

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::{Deserialize, Serialize};
use sluice_common::uaa::{self, UaaError};
use tracing::{debug, warn};

use crate::{ApiConfig, ApiError, ApiState, AuthMode};
use sluice_model::records::GroupKind;

use access::{AccessCache, Verdict};
use keys::{KeyError, KeySet};

/// How long a Cloud Controller verdict about a (token, app) pair is reused.
pub const ACCESS_TTL: Duration = Duration::from_secs(30);

/// Verdicts cached at most; the oldest go first.
const ACCESS_CAPACITY: usize = 4096;

/// A token naming an unknown key id makes the API fetch UAA's keys again at most this often.
pub const KEY_REFETCH_INTERVAL: Duration = Duration::from_secs(30);

/// UAA's keys are fetched again when older than this, so a key UAA withdrew stops verifying.
pub const KEY_MAX_AGE: Duration = Duration::from_secs(600);

/// Clock skew allowed between UAA and this host when checking `exp`.
const EXPIRY_LEEWAY: Duration = Duration::from_secs(30);

/// App guids per `GET /v3/apps?guids=` request: keeps the URL short (about 2 kB).
const CC_LIST_CHUNK: usize = 50;

/// Why `[api]` describes no authenticator.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// A URL `auth = "uaa"` needs: `uaa_url` or `cc_url`.
    #[error("api.{0} is required when auth = \"uaa\"")]
    Missing(&'static str),
    #[error("api: {0}")]
    HttpClient(#[from] sluice_common::tls::TlsError),
}

/// The authenticator of a running API.
#[derive(Debug)]
pub struct Auth {
    mode: AuthMode,
    /// `None` under `auth = "none"`.
    uaa: Option<Uaa>,
}

/// What `auth = "uaa"` needs.
struct Uaa {
    http: reqwest::Client,
    uaa_url: String,
    cc_url: String,
    client_id: String,
    client_secret: String,
    audience: String,
    keys: KeySet,
    access: AccessCache,
}

/// Without the client secret.
impl std::fmt::Debug for Uaa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uaa")
            .field("uaa_url", &self.uaa_url)
            .field("cc_url", &self.cc_url)
            .field("client_id", &self.client_id)
            .field("audience", &self.audience)
            .field("keys", &self.keys)
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

/// The claims of a UAA access token the API reads (the signature, `exp` and `aud` are checked
/// by the JWT library).
#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    user_name: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    /// Epoch seconds; required by the validation, so always there once verified.
    #[serde(default)]
    exp: Option<u64>,
}

impl Auth {
    /// Everyone sees everything.
    pub fn none() -> Auth {
        Auth {
            mode: AuthMode::None,
            uaa: None,
        }
    }

    /// The authenticator `[api]` describes; nothing is fetched from UAA until a request needs it.
    pub fn from_config(config: &ApiConfig) -> Result<Auth, AuthConfigError> {
        if config.auth == AuthMode::None {
            return Ok(Auth::none());
        }
        let required = |url: &Option<String>, key| match url {
            Some(url) => Ok(url.trim_end_matches('/').to_owned()),
            None => Err(AuthConfigError::Missing(key)),
        };
        let uaa_url = required(&config.uaa_url, "uaa_url")?;
        let cc_url = required(&config.cc_url, "cc_url")?;
        let http = sluice_common::tls::http_client(config.skip_tls_verify)?;
        Ok(Auth {
            mode: AuthMode::Uaa,
            uaa: Some(Uaa {
                keys: KeySet::new(http.clone(), &uaa_url, KEY_REFETCH_INTERVAL, KEY_MAX_AGE),
                access: AccessCache::new(ACCESS_TTL, ACCESS_CAPACITY),
                http,
                uaa_url,
                cc_url,
                client_id: config.client_id.clone(),
                client_secret: config.client_secret.clone(),
                audience: config.audience.clone(),
            }),
        })
    }

    /// Changes how soon an unknown key id may make the API fetch UAA's keys again (tests of
    /// key rotation use zero).
    pub fn with_key_refetch_interval(mut self, interval: Duration) -> Auth {
        if let Some(uaa) = &mut self.uaa {
            uaa.keys.set_refetch_interval(interval);
        }
        self
    }

    /// Changes how old UAA's cached keys may grow before they are fetched again.
    pub fn with_key_max_age(mut self, max_age: Duration) -> Auth {
        if let Some(uaa) = &mut self.uaa {
            uaa.keys.set_max_age(max_age);
        }
        self
    }

    /// Changes how long a Cloud Controller verdict is reused.
    pub fn with_access_ttl(mut self, ttl: Duration) -> Auth {
        if let Some(uaa) = &mut self.uaa {
            uaa.access.set_ttl(ttl);
        }
        self
    }

    /// How many times UAA's key set was fetched (0 under `auth = "none"`).
    pub async fn key_fetches(&self) -> u64 {
        match &self.uaa {
            Some(uaa) => uaa.keys.fetches().await,
            None => 0,
        }
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// The caller of a request: 401 when a token is required and missing or invalid, 503 when
    /// UAA's keys cannot be fetched to check it.
    pub async fn caller(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let Some(uaa) = &self.uaa else {
            return Ok(Caller {
                token: None,
                user: None,
                expires_at: None,
            });
        };
        let token = bearer_token(headers)?;
        let claims = uaa.verify(token).await?;
        Ok(Caller {
            token: Some(token.to_owned()),
            user: claims.user_name.or(claims.sub),
            expires_at: claims.exp,
        })
    }

    /// Whether `caller` may see `app_id` (403 if not), with the app's name when known.
    pub async fn app_access(&self, caller: &Caller, app_id: &str) -> Result<AppAccess, ApiError> {
        let Some(uaa) = &self.uaa else {
            return Ok(AppAccess { name: None });
        };
        let Some(token) = caller.token.as_deref() else {
            return Err(ApiError::unauthorized(
                "no bearer token: send `Authorization: Bearer <token>`",
            ));
        };
        if !is_guid(app_id) {
            return Err(ApiError::bad_request(format!(
                "app id `{app_id}` is not a GUID"
            )));
        }
        let app_id = app_id.to_ascii_lowercase();
        let verdict = uaa
            .access
            .verdict(token, &app_id, || uaa.ask_cloud_controller(token, &app_id))
            .await?;
        match verdict {
            Verdict::Allowed(name) => Ok(AppAccess { name }),
            Verdict::Denied => Err(ApiError::forbidden(format!(
                "you may not see app {app_id}: the Cloud Controller does not show it to you"
            ))),
        }
    }

    /// Whether `caller` may see the space or org `id` (403 if not), with its name when known:
    /// the Cloud Controller's answer to `GET /v3/spaces/{guid}` (`/v3/organizations/{guid}`)
    /// with the caller's token, cached as app verdicts are.
    pub async fn group_access(
        &self,
        caller: &Caller,
        kind: GroupKind,
        id: &str,
    ) -> Result<AppAccess, ApiError> {
        let Some(uaa) = &self.uaa else {
            return Ok(AppAccess { name: None });
        };
        let Some(token) = caller.token.as_deref() else {
            return Err(ApiError::unauthorized(
                "no bearer token: send `Authorization: Bearer <token>`",
            ));
        };
        let (resource, what) = match kind {
            GroupKind::Space => ("spaces", "space"),
            GroupKind::Org => ("organizations", "org"),
        };
        if !is_guid(id) {
            return Err(ApiError::bad_request(format!(
                "{what} id `{id}` is not a GUID"
            )));
        }
        let guid = id.to_ascii_lowercase();
        // Keyed apart from apps (whose keys are bare guids) in the same cache.
        let key = format!("{resource}/{guid}");
        let verdict = uaa
            .access
            .verdict(token, &key, || {
                uaa.ask_cloud_controller_about(token, resource, &guid)
            })
            .await?;
        match verdict {
            Verdict::Allowed(name) => Ok(AppAccess { name }),
            Verdict::Denied => Err(ApiError::forbidden(format!(
                "you may not see {what} {guid}: the Cloud Controller does not show it to you"
            ))),
        }
    }

    /// Which of `app_ids` the caller may see, with their names: for listing many apps, one
    /// Cloud Controller request (`GET /v3/apps?guids=`) per 50 ids not already cached, and the
    /// verdicts cached as [`app_access`](Self::app_access)'s are. Ids that are not GUIDs are
    /// not visible. Keys of the answer are the ids as given.
    pub async fn visible_apps(
        &self,
        caller: &Caller,
        app_ids: &[String],
    ) -> Result<HashMap<String, AppAccess>, ApiError> {
        let Some(uaa) = &self.uaa else {
            return Ok(app_ids
                .iter()
                .map(|id| (id.clone(), AppAccess { name: None }))
                .collect());
        };
        let Some(token) = caller.token.as_deref() else {
            return Err(ApiError::unauthorized(
                "no bearer token: send `Authorization: Bearer <token>`",
            ));
        };
        let mut visible = HashMap::new();
        let mut unknown: Vec<(&String, String)> = Vec::new();
        for id in app_ids {
            if !is_guid(id) {
                continue;
            }
            let canonical = id.to_ascii_lowercase();
            match uaa.access.cached(token, &canonical) {
                Some(Verdict::Allowed(name)) => {
                    visible.insert(id.clone(), AppAccess { name });
                }
                Some(Verdict::Denied) => {}
                None => unknown.push((id, canonical)),
            }
        }
        for chunk in unknown.chunks(CC_LIST_CHUNK) {
            let guids: Vec<&str> = chunk.iter().map(|(_, guid)| guid.as_str()).collect();
            let names = uaa.list_cloud_controller(token, &guids).await?;
            for (id, guid) in chunk {
                match names.get(guid) {
                    Some(name) => {
                        uaa.access
                            .remember(token, guid, Verdict::Allowed(name.clone()));
                        visible.insert((*id).clone(), AppAccess { name: name.clone() });
                    }
                    None => uaa.access.remember(token, guid, Verdict::Denied),
                }
            }
        }
        Ok(visible)
    }

    /// A UAA password grant for `username` (`POST /api/v1/login`).
    pub async fn login(&self, username: &str, password: &str) -> Result<LoginToken, ApiError> {
        let Some(uaa) = &self.uaa else {
            return Err(ApiError::not_found(
                "this API has auth = \"none\": there is nothing to sign in to",
            ));
        };
        let grant = uaa::password_grant(
            &uaa.http,
            &uaa.uaa_url,
            &uaa.client_id,
            &uaa.client_secret,
            username,
            password,
        )
        .await
        .map_err(|e| match e {
            UaaError::Refused { url, .. } => {
                debug!(url, username, "UAA refused a sign-in.");
                ApiError::unauthorized(format!(
                    "UAA refused the sign-in of `{username}`: wrong username or password (or \
                     the API's client `{}` is not allowed the password grant)",
                    uaa.client_id
                ))
            }
            other => {
                warn!("Sign-in failed: {other}");
                ApiError::unavailable(other.to_string())
            }
        })?;
        Ok(LoginToken {
            access_token: grant.access_token,
            expires_in: grant.expires_in.unwrap_or_default(),
        })
    }
}

impl Uaa {
    /// Checks a token's signature against UAA's keys, its expiry and its audience.
    async fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| {
            ApiError::unauthorized(format!("the bearer token is not a well-formed JWT: {e}"))
        })?;
        if header.alg != Algorithm::RS256 {
            return Err(ApiError::unauthorized(format!(
                "the bearer token is signed with {:?}; UAA tokens are RS256",
                header.alg
            )));
        }
        let kid = header.kid.as_deref();
        let key = self.keys.key_for(kid).await.map_err(|e| match e {
            KeyError::Unknown => ApiError::unauthorized(format!(
                "the bearer token is signed with key id {}, which UAA ({}) does not publish",
                kid.map_or_else(|| "(none)".to_owned(), |kid| format!("`{kid}`")),
                self.keys.url()
            )),
            KeyError::Unavailable(why) => ApiError::unavailable(why.to_string()),
        })?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "aud"]);
        validation.leeway = EXPIRY_LEEWAY.as_secs();
        // A token not valid yet is refused like an expired one (within the same leeway).
        validation.validate_nbf = true;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| {
            ApiError::unauthorized(match e.kind() {
                ErrorKind::ExpiredSignature => {
                    "the bearer token has expired: sign in again".to_owned()
                }
                ErrorKind::ImmatureSignature => {
                    "the bearer token is not valid yet (its `nbf` is in the future)".to_owned()
                }
                ErrorKind::InvalidSignature => {
                    "the bearer token's signature does not verify with UAA's key".to_owned()
                }
                ErrorKind::InvalidAudience => format!(
                    "the bearer token is not meant for this API: its `aud` lacks `{}`",
                    self.audience
                ),
                ErrorKind::MissingRequiredClaim(claim) => {
                    format!("the bearer token has no `{claim}` claim")
                }
                _ => format!("the bearer token is not a valid UAA token: {e}"),
            })
        })?;
        Ok(data.claims)
    }
}

/// Whether `id` has only a GUID's characters: ids go into the Cloud Controller's URLs.
fn is_guid(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// The token of `Authorization: Bearer <token>` (the scheme in any case), or a 401 saying
/// what is missing.
fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::unauthorized(
            "no Authorization header: send `Authorization: Bearer <token>` (a UAA token; \
             POST /api/v1/login gets one)",
        )
    })?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not printable ASCII"))?;
    match value.trim().split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(ApiError::unauthorized(
            "the Authorization header is not `Bearer <token>`",
        )),
    }
}

/// An error and its causes, `: `-separated (reqwest's own message omits the cause).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// An authenticated caller. Its `Debug` output leaves the token out.
#[derive(Clone)]
pub struct Caller {
    /// The bearer token, to ask the Cloud Controller with; `None` under `auth = "none"`.
    pub token: Option<String>,
    /// The token's `user_name` (else `sub`); `None` under `auth = "none"`.
    pub user: Option<String>,
    /// The token's `exp` (epoch seconds): a live stream ends then, and none is opened after
    /// it, so a client must come back with a new token. `None` under `auth = "none"`.
    pub expires_at: Option<u64>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("user", &self.user)
            .field("expires_at", &self.expires_at)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// What the Cloud Controller told about an app the caller may see.
#[derive(Debug, Clone, Default)]
pub struct AppAccess {
    pub name: Option<String>,
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        state.auth.caller(&parts.headers).await
    }
}

/// `POST /api/v1/login` body.
#[derive(Debug, Deserialize)]
pub struct Login {
    pub username: String,
    pub password: String,
}

/// `POST /api/v1/login` answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct LoginToken {
    pub access_token: String,
    pub expires_in: u64,
}

/// `POST /api/v1/login`: a UAA password grant on the user's behalf.
pub async fn login(
    State(state): State<ApiState>,
    body: Result<Json<Login>, JsonRejection>,
) -> Result<Json<LoginToken>, ApiError> {
    if state.auth.mode() == AuthMode::None {
        return Err(ApiError::not_found(
            "this API has auth = \"none\": there is nothing to sign in to",
        ));
    }
    let Json(login) = body.map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be JSON {{\"username\": \"..\", \"password\": \"..\"}}: {}",
            e.body_text()
        ))
    })?;
    state
        .auth
        .login(&login.username, &login.password)
        .await
        .map(Json)
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderValue, StatusCode};

    use super::*;

    fn headers(authorization: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(value).expect("a header value"),
            );
        }
        headers
    }

    #[tokio::test]
    async fn debug_output_shows_neither_the_client_secret_nor_tokens() {
        let config = ApiConfig {
            auth: AuthMode::Uaa,
            uaa_url: Some("http://127.0.0.1:9".to_owned()),
            cc_url: Some("http://127.0.0.1:9".to_owned()),
            client_secret: "very-secret".to_owned(),
            ..ApiConfig::open("127.0.0.1:0")
        };
        let auth = Auth::from_config(&config).expect("valid");
        let uaa = auth.uaa.as_ref().expect("uaa");
        uaa.access
            .remember("bearer-token-text", "app", Verdict::Denied);
        let debug = format!("{auth:?}");
        let caller = Caller {
            token: Some("bearer-token-text".to_owned()),
            user: Some("developer".to_owned()),
            expires_at: None,
        };
        let debug = format!("{debug} {caller:?}");
        assert!(debug.contains("developer"), "{debug}");
        assert!(!debug.contains("very-secret"), "{debug}");
        assert!(!debug.contains("bearer-token-text"), "{debug}");
        assert!(debug.contains("127.0.0.1:9"), "{debug}");
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_required() {
        assert_eq!(bearer_token(&headers(Some("Bearer abc"))), Ok("abc"));
        assert_eq!(bearer_token(&headers(Some("bearer  abc "))), Ok("abc"));
        assert_eq!(bearer_token(&headers(Some("BEARER abc"))), Ok("abc"));
        for bad in [None, Some("Basic abc"), Some("Bearer"), Some("abc")] {
            let error = bearer_token(&headers(bad)).expect_err("refused");
            assert_eq!(error.status, StatusCode::UNAUTHORIZED, "{bad:?}");
        }
        let missing = bearer_token(&headers(None)).expect_err("refused");
        assert!(missing.message.contains("no Authorization header"));
    }
}
