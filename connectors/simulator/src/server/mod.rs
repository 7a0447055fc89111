//! `sluice simulate`: the simulator served as a real Firehose on one address (SPEC §7).
//!
//! Layout:
//! - this file — [`SimulateConfig`], the [`SimulateServer`] (bind, run until a shutdown future
//!   resolves) and its [`SimulateHandle`] (revoke tokens, read [`SimulateStats`]).
//! - `auth` — `POST /oauth/token`: UAA's client-credentials grant and the opaque bearer tokens
//!   the Firehose takes, and the password grant of the test users.
//! - `identity` — UAA's `GET /token_keys` (checked-in TEST keys), the test users `admin`/`admin`
//!   (sees every app) and `developer`/`developer` (the apps at even positions), their RS256
//!   JWTs, and the Cloud Controller's `GET /v3/apps/{guid}` and `GET /v3/apps?guids=`.
//! - `directory` — the Cloud Controller's listing for the configured client,
//!   `GET /v3/apps?include=space.organization` paged, and its apps renamed, moved and deleted
//!   over time (`directory_churn`).
//! - `stream` — `GET /firehose/{subscription_id}`: one [`Generator`](crate::Generator)
//!   per subscription id, its envelopes dealt round-robin to the WebSocket connections that
//!   share the id, and the Traffic Controller's slow-consumer rule.
//!
//! Like mini-redis, the server takes its shutdown as a future, so tests bind `127.0.0.1:0`,
//! run it, and stop it cleanly.

mod auth;
mod directory;
mod identity;
mod places;
mod stream;

pub use directory::DirectoryChange;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::SimulatorConfig;

/// What `sluice simulate` serves and to whom.
#[derive(Clone, Debug, PartialEq)]
pub struct SimulateConfig {
    /// The UAA client id that may fetch tokens (`--client-id`).
    pub client_id: String,
    /// Its secret (`--client-secret`).
    pub client_secret: String,
    /// The traffic every subscription id gets, each from its own generator (`--apps`, `--rate`,
    /// `--seed` set these fields). `rate` is per subscription id; at `rate = 0` the stream goes
    /// as fast as its connections read and nobody is closed as slow. `limit` ends each
    /// subscription's stream after that many envelopes (its connections then stay open, idle).
    pub generator: SimulatorConfig,
    /// How long a client-credentials token is accepted (UAA's `expires_in`).
    pub token_ttl: Duration,
    /// How long a test user's token (password grant) is valid: its `exp` is `iat` plus this.
    pub user_token_ttl: Duration,
    /// Envelopes queued for one connection before it is closed as a slow consumer (1008).
    pub max_pending: usize,
    /// Every this long one app of the Cloud Controller's listing is renamed, moved to another
    /// space or deleted (in turn); `None`: the directory stays as the topology drew it.
    pub directory_churn: Option<Duration>,
}

impl Default for SimulateConfig {
    fn default() -> SimulateConfig {
        SimulateConfig {
            client_id: "sluice".to_owned(),
            client_secret: "sluice".to_owned(),
            generator: SimulatorConfig::default(),
            // UAA's default access-token validity.
            token_ttl: Duration::from_secs(43_199),
            user_token_ttl: Duration::from_secs(3600),
            max_pending: 10_000,
            directory_churn: None,
        }
    }
}

/// Why the server could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    /// The address is taken, not local, or not permitted.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// Accepting connections failed.
    #[error("serving the simulated Firehose on {addr} failed: {source}")]
    Serve {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A snapshot of what the server has done.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimulateStats {
    /// Tokens issued by `POST /oauth/token` (both grants).
    pub tokens_issued: u64,
    /// Requests answered 401: bad client or user credentials, or a stream request without a
    /// valid token.
    pub unauthorized: u64,
    /// `GET /token_keys` requests.
    pub token_keys_requests: u64,
    /// Cloud Controller `GET /v3/apps` and `GET /v3/apps/{guid}` requests, whatever the answer.
    pub cc_requests: u64,
    /// Pages of the client's listing (`GET /v3/apps` with the client-credentials token).
    pub cc_listing_pages: u64,
    /// WebSocket connections open now.
    pub connections_open: u64,
    /// WebSocket connections accepted since the start.
    pub connections_total: u64,
    /// Connections closed with 1008 for not reading fast enough.
    pub slow_consumer_closes: u64,
    /// Envelopes written to the sockets of each subscription id.
    pub envelopes_per_subscription: BTreeMap<String, u64>,
    /// Every connection since the start, in the order they were accepted.
    pub connections: Vec<ConnectionStats>,
}

/// One WebSocket connection's share of its subscription's stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Numbered from 1 in the order connections were accepted.
    pub id: u64,
    pub subscription_id: String,
    /// Envelopes written to its socket.
    pub envelopes: u64,
    /// Whether it is still open.
    pub open: bool,
    /// Whether it was closed with 1008 as a slow consumer.
    pub slow_consumer: bool,
}

/// A bound, not yet running simulated Firehose.
#[derive(Debug)]
pub struct SimulateServer {
    listener: TcpListener,
    handle: SimulateHandle,
}

/// Controls a running server from outside: tests and the CLI's status line.
#[derive(Clone, Debug)]
pub struct SimulateHandle {
    shared: Arc<Shared>,
}

/// State shared by the handlers, the producers and the handle.
#[derive(Debug)]
struct Shared {
    config: SimulateConfig,
    local_addr: SocketAddr,
    tokens: Mutex<auth::Tokens>,
    identity: identity::Identity,
    token_keys_requests: AtomicU64,
    cc_requests: AtomicU64,
    cc_listings: AtomicU64,
    /// The apps the Cloud Controller lists to the configured client, changing over time.
    directory: Mutex<directory::Directory>,
    subscriptions: Mutex<HashMap<String, Arc<stream::Subscription>>>,
    connections: Mutex<Vec<Arc<stream::ConnectionCounters>>>,
    tokens_issued: AtomicU64,
    unauthorized: AtomicU64,
    connections_total: AtomicU64,
    slow_consumer_closes: AtomicU64,
    /// Woken whenever a token, a connection or a close changes the stats (not per envelope).
    changed: Notify,
    shutdown: CancellationToken,
    /// Producers and upgraded connections, which outlive axum's own connection tracking.
    tasks: TaskTracker,
}

impl Shared {
    fn notify(&self) {
        self.changed.notify_waiters();
    }
}

/// A poisoned lock only means another task panicked while holding it; the data is counters
/// and lists that stay consistent, so carry on.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SimulateServer {
    /// Listens on `addr` (port 0 picks a free port; see [`local_addr`](Self::local_addr)).
    pub async fn bind(
        addr: SocketAddr,
        config: SimulateConfig,
    ) -> Result<SimulateServer, SimulateError> {
        let bind_error = |source| SimulateError::Bind { addr, source };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let directory = directory::Directory::new(
            crate::Generator::new(&config.generator).apps(),
            config.directory_churn,
            config.generator.seed,
        );
        let shared = Arc::new(Shared {
            identity: identity::Identity::new(&config.generator),
            directory: Mutex::new(directory),
            cc_listings: AtomicU64::new(0),
            config,
            local_addr,
            tokens: Mutex::new(auth::Tokens::new()),
            token_keys_requests: AtomicU64::new(0),
            cc_requests: AtomicU64::new(0),
            subscriptions: Mutex::new(HashMap::new()),
            connections: Mutex::new(Vec::new()),
            tokens_issued: AtomicU64::new(0),
            unauthorized: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            slow_consumer_closes: AtomicU64::new(0),
            changed: Notify::new(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        Ok(SimulateServer {
            listener,
            handle: SimulateHandle { shared },
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// A handle that stays usable while [`run`](Self::run) owns the server.
    pub fn handle(&self) -> SimulateHandle {
        self.handle.clone()
    }

    /// Serves until `shutdown` resolves; then stops accepting, stops every stream (what is
    /// queued for a connection is written, then a 1001 close frame), and returns once every
    /// connection has closed (a client that reads nothing is dropped after a few seconds).
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), SimulateError> {
        let shared = self.handle.shared;
        let addr = shared.local_addr;
        let router = Router::new()
            .route("/oauth/token", post(auth::token))
            .route("/token_keys", get(identity::token_keys))
            .route("/v3/apps", get(identity::apps))
            .route("/v3/apps/{guid}", get(identity::app))
            .route("/v3/spaces/{guid}", get(places::space))
            .route("/v3/organizations/{guid}", get(places::organization))
            .route("/firehose/{subscription_id}", get(stream::firehose))
            .with_state(shared.clone());
        info!(
            %addr,
            client_id = %shared.config.client_id,
            rate = shared.config.generator.rate,
            apps = shared.config.generator.apps,
            "Serving a simulated Firehose: POST /oauth/token, GET /token_keys, GET /v3/apps, GET /v3/apps/{{guid}}, \
             GET /firehose/{{subscription_id}}."
        );
        let stop = shared.shutdown.clone();
        let served = axum::serve(self.listener, router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                stop.cancel();
            })
            .await;
        // `serve` can also end by failing; stop the streams either way.
        shared.shutdown.cancel();
        shared.tasks.close();
        shared.tasks.wait().await;
        info!(%addr, "Simulated Firehose stopped.");
        served.map_err(|source| SimulateError::Serve { addr, source })
    }

    /// See [`SimulateHandle::revoke_tokens`].
    pub fn revoke_tokens(&self) {
        self.handle.revoke_tokens();
    }

    /// See [`SimulateHandle::stats`].
    pub fn stats(&self) -> SimulateStats {
        self.handle.stats()
    }
}

impl SimulateHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// Forgets every issued client-credentials token: the next stream request with one of them
    /// gets 401, as after a UAA key rotation, so clients must fetch a new token. Open streams
    /// stay open. The test users' JWTs are not affected (see
    /// [`rotate_signing_key`](Self::rotate_signing_key)).
    pub fn revoke_tokens(&self) {
        lock(&self.shared.tokens).revoke_all();
        info!(addr = %self.shared.local_addr, "Revoked every token.");
    }

    /// Signs a token for the test user `username` as the password grant would, but issued at
    /// `issued_at`: tests make expired tokens with it (`issued_at` more than `ttl` ago).
    /// `None` for a name that is not a test user.
    pub fn user_token(
        &self,
        username: &str,
        issued_at: SystemTime,
        ttl: Duration,
    ) -> Option<String> {
        let user = identity::user_named(username)?;
        let jti = lock(&self.shared.tokens).random_id();
        let issuer = format!("http://{}/oauth/token", self.shared.local_addr);
        Some(
            self.shared
                .identity
                .sign(user, identity::CF_CLIENT.0, &issuer, jti, issued_at, ttl),
        )
    }

    /// Starts signing user tokens with the second test key, which `/token_keys` publishes
    /// from now on next to the first, as UAA does in a key rotation. Returns the new key id,
    /// or `None` when the keys are used up (one rotation per server).
    pub fn rotate_signing_key(&self) -> Option<&'static str> {
        let identity = &self.shared.identity;
        identity.rotate().then(|| identity.active_kid())
    }

    /// Renames, moves or deletes one app of the Cloud Controller's listing now (the next
    /// change in turn, as `directory_churn` makes them); `None` once no app is left.
    pub fn churn_directory(&self) -> Option<DirectoryChange> {
        lock(&self.shared.directory).change()
    }

    /// The apps the Cloud Controller lists now.
    pub fn directory(&self) -> Vec<crate::SimulatedApp> {
        lock(&self.shared.directory).current()
    }

    /// What the server has done so far.
    pub fn stats(&self) -> SimulateStats {
        let shared = &self.shared;
        let connections: Vec<ConnectionStats> = lock(&shared.connections)
            .iter()
            .map(|c| c.snapshot())
            .collect();
        let mut envelopes_per_subscription = BTreeMap::new();
        for connection in &connections {
            *envelopes_per_subscription
                .entry(connection.subscription_id.clone())
                .or_insert(0) += connection.envelopes;
        }
        SimulateStats {
            tokens_issued: shared.tokens_issued.load(Ordering::Relaxed),
            unauthorized: shared.unauthorized.load(Ordering::Relaxed),
            token_keys_requests: shared.token_keys_requests.load(Ordering::Relaxed),
            cc_requests: shared.cc_requests.load(Ordering::Relaxed),
            cc_listing_pages: shared.cc_listings.load(Ordering::Relaxed),
            connections_open: connections.iter().filter(|c| c.open).count() as u64,
            connections_total: shared.connections_total.load(Ordering::Relaxed),
            slow_consumer_closes: shared.slow_consumer_closes.load(Ordering::Relaxed),
            envelopes_per_subscription,
            connections,
        }
    }

    /// Waits until `condition` holds for the stats, re-checking whenever a token is issued or
    /// refused or a connection opens or closes (not on every envelope). Wrap it in a timeout.
    pub async fn wait_for(
        &self,
        mut condition: impl FnMut(&SimulateStats) -> bool,
    ) -> SimulateStats {
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let stats = self.stats();
            if condition(&stats) {
                return stats;
            }
            changed.await;
        }
    }
}
