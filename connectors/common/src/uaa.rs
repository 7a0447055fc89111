//! UAA client-credentials tokens for the Firehose and the RLP gateway (SPEC §1.1).
//!
//! A [`TokenSource`] fetches `POST {uaa_url}/oauth/token` with `grant_type=client_credentials`
//! and HTTP basic auth, caches the token, refreshes it before it expires, and forgets it when a
//! server answers 401 ([`TokenSource::invalidate`]). [`password_grant`] signs a user in on the
//! same endpoint, as the cf CLI does (the API's login).

use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Mutex;
use tracing::{debug, info};

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum UaaError {
    /// No answer: DNS, connection refused, TLS failure, timeout. Retried with backoff.
    #[error("cannot reach UAA at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// UAA refused the client id or secret. Retrying cannot help: the source stops.
    #[error("UAA at {url} refused the credentials of client '{client_id}' (HTTP {status}): {body}")]
    Refused {
        url: String,
        client_id: String,
        status: u16,
        body: String,
    },
    /// Any other unexpected status (5xx while UAA restarts, ...). Retried with backoff.
    #[error("UAA at {url} answered HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    /// A 200 whose body is not a token answer.
    #[error("UAA at {url} sent an answer without an access_token: {detail}")]
    BadAnswer { url: String, detail: String },
}

impl UaaError {
    /// Whether trying again later can succeed.
    pub fn is_retriable(&self) -> bool {
        !matches!(self, UaaError::Refused { .. })
    }
}

#[derive(Debug, Deserialize)]
struct TokenAnswer {
    access_token: String,
    /// Seconds; UAA always sends it, but a missing one is treated as "refresh in a minute".
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Debug, Clone)]
struct CachedToken {
    bearer: String,
    refresh_at: Instant,
}

/// A cached, self-refreshing client-credentials token.
#[derive(Debug)]
pub struct TokenSource {
    http: reqwest::Client,
    token_url: String,
    client_id: String,
    client_secret: String,
    cached: Mutex<Option<CachedToken>>,
}

impl TokenSource {
    /// `uaa_url` is the UAA base URL (`https://uaa.sys.example.com`).
    pub fn new(
        http: reqwest::Client,
        uaa_url: &str,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> TokenSource {
        TokenSource {
            http,
            token_url: format!("{}/oauth/token", uaa_url.trim_end_matches('/')),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            cached: Mutex::new(None),
        }
    }

    /// The token endpoint's URL, for error messages.
    pub fn token_url(&self) -> &str {
        &self.token_url
    }

    /// A valid access token (without the `bearer ` prefix), fetched when the cached one is
    /// absent or close to expiry.
    pub async fn token(&self) -> Result<String, UaaError> {
        let mut cached = self.cached.lock().await;
        if let Some(token) = cached.as_ref().filter(|t| Instant::now() < t.refresh_at) {
            return Ok(token.bearer.clone());
        }
        let fresh = self.fetch().await?;
        let bearer = fresh.bearer.clone();
        *cached = Some(fresh);
        Ok(bearer)
    }

    /// Forgets the cached token: a server answered 401, so the next [`token`](Self::token)
    /// asks UAA again.
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    async fn fetch(&self) -> Result<CachedToken, UaaError> {
        let url = &self.token_url;
        let answer = request_token(
            &self.http,
            url,
            &self.client_id,
            &self.client_secret,
            &[("grant_type", "client_credentials")],
        )
        .await?;
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(60));
        // Refresh once 80 % of the lifetime has passed, so a stream never presents a token
        // that expires while the request is in flight.
        let refresh_at = Instant::now() + lifetime.mul_f64(0.8);
        debug!(url, expires_in = lifetime.as_secs(), "Fetched a UAA token.");
        if answer.expires_in.is_none() {
            info!(
                url,
                "UAA sent no expires_in; refreshing the token every 48 s."
            );
        }
        Ok(CachedToken {
            bearer: answer.access_token,
            refresh_at,
        })
    }
}

/// What UAA's token endpoint granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub access_token: String,
    /// Seconds the token is valid, when UAA says.
    pub expires_in: Option<u64>,
}

/// `POST {uaa_url}/oauth/token` with `grant_type=password`: a user's name and password for a
/// token, with the client's credentials as HTTP basic auth, the form the cf CLI sends (its
/// client is `cf` with an empty secret). A wrong username or password is
/// [`UaaError::Refused`].
pub async fn password_grant(
    http: &reqwest::Client,
    uaa_url: &str,
    client_id: &str,
    client_secret: &str,
    username: &str,
    password: &str,
) -> Result<Grant, UaaError> {
    let url = format!("{}/oauth/token", uaa_url.trim_end_matches('/'));
    let form = [
        ("grant_type", "password"),
        ("username", username),
        ("password", password),
    ];
    let answer = request_token(http, &url, client_id, client_secret, &form).await?;
    Ok(Grant {
        access_token: answer.access_token,
        expires_in: answer.expires_in,
    })
}

/// One token request: the form, the client's basic auth, and UAA's answer sorted into
/// refusals, other statuses and answers without a token.
async fn request_token(
    http: &reqwest::Client,
    url: &str,
    client_id: &str,
    client_secret: &str,
    form: &[(&str, &str)],
) -> Result<TokenAnswer, UaaError> {
    let response = http
        .post(url)
        .basic_auth(client_id, Some(client_secret))
        .header(reqwest::header::ACCEPT, "application/json")
        .form(form)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|source| UaaError::Unreachable {
            url: url.to_owned(),
            source,
        })?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        let body: String = body.chars().take(300).collect();
        return Err(if status.as_u16() == 401 || status.as_u16() == 403 {
            UaaError::Refused {
                url: url.to_owned(),
                client_id: client_id.to_owned(),
                status: status.as_u16(),
                body,
            }
        } else {
            UaaError::Status {
                url: url.to_owned(),
                status: status.as_u16(),
                body,
            }
        });
    }
    response.json().await.map_err(|e| UaaError::BadAnswer {
        url: url.to_owned(),
        detail: e.to_string(),
    })
}
