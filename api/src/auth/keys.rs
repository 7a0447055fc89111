//! UAA's token-signing keys: `GET {uaa_url}/token_keys`, cached, fetched again when a token
//! names a key id the cache lacks (UAA rotated its key), at most once per refetch interval so
//! tokens with made-up key ids cannot make the API hammer UAA.

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
    /// The key set could not be fetched: what went wrong, naming the URL.
    Unavailable(String),
}

/// The keys UAA published, by key id.
pub(super) struct KeySet {
    http: reqwest::Client,
    url: String,
    refetch_interval: Duration,
    keys: RwLock<HashMap<String, DecodingKey>>,
    /// Held while fetching, so concurrent requests with a new key id fetch once.
    fetch: tokio::sync::Mutex<FetchState>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<String> = self
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
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

#[derive(Debug, Default)]
struct FetchState {
    last_attempt: Option<Instant>,
    /// The error of the last attempt, when it failed.
    last_error: Option<String>,
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
    pub(super) fn new(http: reqwest::Client, uaa_url: &str, refetch_interval: Duration) -> KeySet {
        KeySet {
            http,
            url: format!("{}/token_keys", uaa_url.trim_end_matches('/')),
            refetch_interval,
            keys: RwLock::new(HashMap::new()),
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

    /// How many times the key set was fetched (successfully or not).
    pub(super) async fn fetches(&self) -> u64 {
        self.fetch.lock().await.fetches
    }

    /// The key a token's `kid` names. A token without `kid` is verified with the only key
    /// when UAA publishes exactly one (UAAs before key rotation existed).
    pub(super) async fn key_for(&self, kid: Option<&str>) -> Result<DecodingKey, KeyError> {
        if let Some(key) = self.lookup(kid) {
            return Ok(key);
        }
        let mut fetch = self.fetch.lock().await;
        // Another request may have fetched while this one waited for the lock.
        if let Some(key) = self.lookup(kid) {
            return Ok(key);
        }
        if let Some(last) = fetch.last_attempt {
            let wait = match fetch.last_error {
                Some(_) => FAILED_FETCH_BACKOFF,
                None => self.refetch_interval,
            };
            if last.elapsed() < wait {
                return Err(match &fetch.last_error {
                    Some(error) => KeyError::Unavailable(error.clone()),
                    None => KeyError::Unknown,
                });
            }
        }
        fetch.last_attempt = Some(Instant::now());
        fetch.fetches += 1;
        match self.fetch_keys().await {
            Ok(keys) => {
                let kids: Vec<&String> = keys.keys().collect();
                info!(url = %self.url, ?kids, "Fetched UAA's token keys.");
                fetch.last_error = None;
                *self.keys.write().unwrap_or_else(PoisonError::into_inner) = keys;
            }
            Err(error) => {
                warn!(url = %self.url, "Cannot fetch UAA's token keys: {error}");
                fetch.last_error = Some(error.clone());
                return Err(KeyError::Unavailable(error));
            }
        }
        self.lookup(kid).ok_or(KeyError::Unknown)
    }

    fn lookup(&self, kid: Option<&str>) -> Option<DecodingKey> {
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        match kid {
            Some(kid) => keys.get(kid).cloned(),
            None if keys.len() == 1 => keys.values().next().cloned(),
            None => None,
        }
    }

    async fn fetch_keys(&self) -> Result<HashMap<String, DecodingKey>, String> {
        let url = &self.url;
        let response = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(FETCH_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("cannot reach UAA at {url}: {}", super::error_chain(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("UAA at {url} answered HTTP {}", status.as_u16()));
        }
        let jwks: Jwks = response
            .json()
            .await
            .map_err(|e| format!("UAA at {url} sent no key set: {}", super::error_chain(&e)))?;
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
            return Err(format!("UAA at {url} publishes no usable RSA signing key"));
        }
        Ok(keys)
    }
}

fn decoding_key(jwk: &Jwk) -> Result<DecodingKey, String> {
    match (&jwk.n, &jwk.e, &jwk.value) {
        (Some(n), Some(e), _) => DecodingKey::from_rsa_components(n, e)
            .map_err(|e| format!("its `n`/`e` are not an RSA key: {e}")),
        (_, _, Some(pem)) => DecodingKey::from_rsa_pem(pem.as_bytes())
            .map_err(|e| format!("its `value` is not an RSA public key PEM: {e}")),
        _ => Err("it has neither `n` and `e` nor `value`".to_owned()),
    }
}
