//! UAA's token-signing keys: `GET {uaa_url}/token_keys`, cached, fetched again when a token
//! names a key id the cache lacks (UAA rotated its key), at most once per refetch interval so
//! tokens with made-up key ids cannot make the API hammer UAA. Keys older than the maximum age
//! are fetched again too, so a key UAA withdrew stops being trusted; while UAA cannot answer
//! that refresh, the cached keys go on verifying (an outage of UAA does not stop the API).

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use serde::Deserialize;
use tracing::{info, warn};

/// After a failed fetch, how long requests wait before the next attempt (they get 503 meanwhile).
const FAILED_FETCH_BACKOFF: Duration = Duration::from_secs(2);

/// How long one fetch of the key set may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why no key verifies a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum KeyError {
    /// UAA does not publish the key id (after a refetch, or a refetch was too recent).
    Unknown,
    /// The key set could not be fetched.
    Unavailable(FetchError),
}

/// Why UAA's key set could not be fetched; each names the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum FetchError {
    #[error("cannot reach UAA at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("UAA at {url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("UAA at {url} sent no key set: {detail}")]
    NoKeySet { url: String, detail: String },
    #[error("UAA at {url} publishes no usable RSA signing key")]
    NoUsableKey { url: String },
}

/// Why a key UAA published is not used.
#[derive(Debug, thiserror::Error)]
enum BadKey {
    #[error("its `n`/`e` are not an RSA key: {0}")]
    Components(jsonwebtoken::errors::Error),
    #[error("its `value` is not an RSA public key PEM: {0}")]
    Pem(jsonwebtoken::errors::Error),
    #[error("it has neither `n` and `e` nor `value`")]
    Missing,
}

/// The keys UAA published, by key id.
pub(super) struct KeySet {
    http: reqwest::Client,
    url: String,
    refetch_interval: Duration,
    max_age: Duration,
    keys: RwLock<Keys>,
    /// Held while fetching, so concurrent requests with a new key id fetch once.
    fetch: tokio::sync::Mutex<FetchState>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<String> = self
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .by_kid
            .keys()
            .cloned()
            .collect();
        f.debug_struct("KeySet")
            .field("url", &self.url)
            .field("refetch_interval", &self.refetch_interval)
            .field("kids", &kids)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, DecodingKey>,
    fetched_at: Option<Instant>,
}

#[derive(Debug, Default)]
struct FetchState {
    last_attempt: Option<Instant>,
    /// The error of the last attempt, when it failed.
    last_error: Option<FetchError>,
    fetches: u64,
}

/// UAA's `/token_keys` answer.
#[derive(Debug, Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

/// One key of it: RSA keys carry `n`/`e` (base64url) and `value` (PEM); older UAAs only
/// `value`.
#[derive(Debug, Deserialize)]
struct Jwk {
    #[serde(default)]
    kty: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    value: Option<String>,
}

impl KeySet {
    /// The key set of the UAA at `uaa_url`; nothing is fetched until a token needs a key.
    pub(super) fn new(
        http: reqwest::Client,
        uaa_url: &str,
        refetch_interval: Duration,
        max_age: Duration,
    ) -> KeySet {
        KeySet {
            http,
            url: format!("{}/token_keys", uaa_url.trim_end_matches('/')),
            refetch_interval,
            max_age,
            keys: RwLock::new(Keys::default()),
            fetch: tokio::sync::Mutex::new(FetchState::default()),
        }
    }

    /// The URL keys come from, for messages.
    pub(super) fn url(&self) -> &str {
        &self.url
    }

    pub(super) fn set_refetch_interval(&mut self, interval: Duration) {
        self.refetch_interval = interval;
    }

    pub(super) fn set_max_age(&mut self, max_age: Duration) {
        self.max_age = max_age;
    }

    /// How many times the key set was fetched (successfully or not).
    pub(super) async fn fetches(&self) -> u64 {
        self.fetch.lock().await.fetches
    }

    /// The key a token's `kid` names. A token without `kid` is verified with the only key
    /// when UAA publishes exactly one (UAAs before key rotation existed).
    pub(super) async fn key_for(&self, kid: Option<&str>) -> Result<DecodingKey, KeyError> {
        let (cached, stale) = self.lookup(kid);
        let mut fetch = match (cached, stale) {
            (Some(key), false) => return Ok(key),
            // A stale key still verifies while another request refreshes the set: only one
            // request waits for UAA.
            (Some(key), true) => match self.fetch.try_lock() {
                Ok(fetch) => fetch,
                Err(_) => return Ok(key),
            },
            (None, _) => self.fetch.lock().await,
        };
        // Another request may have fetched while this one waited for the lock.
        let (cached, stale) = self.lookup(kid);
        if let (Some(key), false) = (&cached, stale) {
            return Ok(key.clone());
        }
        if let Some(last) = fetch.last_attempt {
            let wait = match (&fetch.last_error, &cached) {
                // Nothing to verify with until UAA answers: try again soon.
                (Some(_), None) => FAILED_FETCH_BACKOFF,
                _ => self.refetch_interval,
            };
            if last.elapsed() < wait {
                return match (cached, &fetch.last_error) {
                    (Some(key), _) => Ok(key),
                    (None, Some(error)) => Err(KeyError::Unavailable(error.clone())),
                    (None, None) => Err(KeyError::Unknown),
                };
            }
        }
        fetch.last_attempt = Some(Instant::now());
        fetch.fetches += 1;
        match self.fetch_keys().await {
            Ok(by_kid) => {
                let kids: Vec<&String> = by_kid.keys().collect();
                info!(url = %self.url, ?kids, "Fetched UAA's token keys.");
                fetch.last_error = None;
                *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Keys {
                    by_kid,
                    fetched_at: Some(Instant::now()),
                };
            }
            Err(error) => {
                fetch.last_error = Some(error.clone());
                if let Some(key) = cached {
                    warn!(
                        url = %self.url,
                        "Cannot refresh UAA's token keys; the cached ones go on verifying: {error}"
                    );
                    return Ok(key);
                }
                warn!(url = %self.url, "Cannot fetch UAA's token keys: {error}");
                return Err(KeyError::Unavailable(error));
            }
        }
        self.lookup(kid).0.ok_or(KeyError::Unknown)
    }

    /// The cached key for `kid`, and whether the cache is older than the maximum age.
    fn lookup(&self, kid: Option<&str>) -> (Option<DecodingKey>, bool) {
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        let stale = keys
            .fetched_at
            .is_none_or(|fetched| fetched.elapsed() >= self.max_age);
        let key = match kid {
            Some(kid) => keys.by_kid.get(kid).cloned(),
            None if keys.by_kid.len() == 1 => keys.by_kid.values().next().cloned(),
            None => None,
        };
        (key, stale)
    }

    async fn fetch_keys(&self) -> Result<HashMap<String, DecodingKey>, FetchError> {
        let url = &self.url;
        let response = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(FETCH_TIMEOUT)
            .send()
            .await
            .map_err(|e| FetchError::Unreachable {
                url: url.clone(),
                detail: super::error_chain(&e),
            })?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Status {
                url: url.clone(),
                status: status.as_u16(),
            });
        }
        let jwks: Jwks = response.json().await.map_err(|e| FetchError::NoKeySet {
            url: url.clone(),
            detail: super::error_chain(&e),
        })?;
        let mut keys = HashMap::new();
        for jwk in jwks.keys {
            let kid = jwk.kid.clone().unwrap_or_default();
            if jwk.kty.as_deref().is_some_and(|kty| kty != "RSA") {
                continue;
            }
            match decoding_key(&jwk) {
                Ok(key) => {
                    keys.insert(kid, key);
                }
                Err(e) => warn!(url, kid, "Skipping a token key UAA published: {e}"),
            }
        }
        if keys.is_empty() {
            return Err(FetchError::NoUsableKey { url: url.clone() });
        }
        Ok(keys)
    }
}

fn decoding_key(jwk: &Jwk) -> Result<DecodingKey, BadKey> {
    match (&jwk.n, &jwk.e, &jwk.value) {
        (Some(n), Some(e), _) => DecodingKey::from_rsa_components(n, e).map_err(BadKey::Components),
        (_, _, Some(pem)) => DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(BadKey::Pem),
        _ => Err(BadKey::Missing),
    }
}
