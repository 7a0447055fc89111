//! The read path: what people query the stores through.
//!
//! ```text
//!              ┌────────────── /api/v1/apps, /metrics, /events, /logs ──► stores (SQLite, MySQL, Elasticsearch)
//!              ├────────────── /api/v1/spaces|orgs/{id}/metrics ───────► group rollup tables (SPEC §11)
//! HTTP ─ auth ─┤
//!   (UAA JWT + │
//!    CC check) └────────────── /api/v1/apps/{id}/stream (SSE) ◄──────── LiveFeed ◄── the dataflow
//! ```
//!
//! Layout:
//! - [`handlers`]: the JSON endpoints; [`params`]: their query parameters; [`error`]: how a
//!   failure is answered (a status and `{"error": "..."}`).
//! - [`auth`]: bearer tokens verified against UAA's `/token_keys`, app, space and org
//!   visibility asked of the Cloud Controller (cached briefly), or `auth = "none"`.
//! - [`store`]: the reads: one SQL reader for the `sqlite` and `mysql` sinks' tables (shared
//!   queries and row decoding, a pool per store kind), log search in Elasticsearch.
//! - [`live`]: rollup rows and app events as the graph emits them, fanned out per app.
//! - [`ui`]: the single-page web UI, embedded in the binary.

pub mod auth;
pub mod error;
pub mod handlers;
pub mod hygiene;
pub mod limits;
pub mod live;
pub mod params;
pub mod store;
pub mod ui;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use error::ApiError;
pub use limits::ApiLimits;

/// The default `api.listen`: loopback.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// How callers prove who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Every caller sees every app: for the embedded default and local use.
    None,
    /// UAA bearer tokens, and the Cloud Controller decides which apps a user sees.
    #[default]
    Uaa,
}

/// `[api]`. Absent: no API.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// `host:port` to serve on.
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default)]
    pub auth: AuthMode,
    /// UAA: `/token_keys` and the password grant of `/api/v1/login`.
    #[serde(default)]
    pub uaa_url: Option<String>,
    /// The Cloud Controller: `/v3/apps/{guid}` says whether a user may see an app.
    #[serde(default)]
    pub cc_url: Option<String>,
    /// The UAA client `/api/v1/login` uses for the password grant.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    #[serde(default)]
    pub client_secret: String,
    /// A token's `aud` must contain this.
    #[serde(default = "default_audience")]
    pub audience: String,
    /// Accept UAA and Cloud Controller certificates that do not verify (test foundations only).
    #[serde(default)]
    pub skip_tls_verify: bool,
    /// The SQL sink whose tables answer metrics, apps and events; default: the first SQL sink.
    #[serde(default)]
    pub store: Option<String>,
    /// The sink whose store answers log queries (SQLite or Elasticsearch); default: the first
    /// that takes `logs`.
    #[serde(default)]
    pub log_store: Option<String>,
    /// Host names (besides `localhost`, `127.0.0.1`, `[::1]`) a loopback listener with
    /// `auth = "none"` answers to: a reverse proxy's name, say. `["*"]`: any.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// `[api.limits]`: what one request, and all of them together, may cost.
    #[serde(default)]
    pub limits: ApiLimits,
}

fn default_listen() -> String {
    DEFAULT_LISTEN.to_owned()
}

fn default_client_id() -> String {
    "cf".to_owned()
}

fn default_audience() -> String {
    "cloud_controller".to_owned()
}

impl ApiConfig {
    /// An API on `listen` with no authentication.
    pub fn open(listen: impl Into<String>) -> ApiConfig {
        ApiConfig {
            listen: listen.into(),
            auth: AuthMode::None,
            uaa_url: None,
            cc_url: None,
            client_id: default_client_id(),
            client_secret: String::new(),
            audience: default_audience(),
            skip_tls_verify: false,
            store: None,
            log_store: None,
            allowed_hosts: Vec::new(),
            limits: ApiLimits::default(),
        }
    }

    /// The address to bind, or what is wrong with `listen`.
    pub fn address(&self) -> Result<SocketAddr, ListenAddressError> {
        self.listen.parse().map_err(|source| ListenAddressError {
            listen: self.listen.clone(),
            source,
        })
    }

    /// Every problem with the section, as (key, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if let Err(e) = self.address() {
            problems.push(("listen", e.to_string()));
        }
        if self.auth == AuthMode::Uaa {
            if self.uaa_url.is_none() {
                problems.push(("uaa_url", "is required when auth = \"uaa\"".to_owned()));
            }
            if self.cc_url.is_none() {
                problems.push(("cc_url", "is required when auth = \"uaa\"".to_owned()));
            }
        }
        problems.extend(self.limits.problems());
        problems
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn descriptors_are_counted_against_the_soft_limit() {
        let (open, allowed) = super::descriptors().expect("Linux /proc");
        assert!(open >= 3, "stdin, stdout and stderr at least: {open}");
        assert!(allowed > open, "{open} of {allowed}");
    }
}

/// `api.listen` is not an address to bind.
#[derive(Debug, thiserror::Error)]
#[error("`{listen}` is not an IP address and port such as `{DEFAULT_LISTEN}` ({source})")]
pub struct ListenAddressError {
    listen: String,
    source: std::net::AddrParseError,
}

/// Why the API did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Address(#[from] ListenAddressError),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    pub auth: Arc<auth::Auth>,
    pub stores: Arc<store::Stores>,
    pub live: Arc<live::LiveFeed>,
    /// `[api.limits]`.
    pub limits: Arc<ApiLimits>,
}

/// Every route of the API and the UI.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/info", get(handlers::info))
        .route("/api/v1/login", post(auth::login))
        .route("/api/v1/apps", get(handlers::apps))
        .route("/api/v1/apps/{id}/metrics", get(handlers::metrics))
        .route("/api/v1/apps/{id}/events", get(handlers::events))
        .route("/api/v1/apps/{id}/logs", get(handlers::logs))
        .route("/api/v1/apps/{id}/stream", get(live::stream))
        .route("/api/v1/spaces/{id}/metrics", get(handlers::space_metrics))
        .route("/api/v1/orgs/{id}/metrics", get(handlers::org_metrics))
        .fallback(ui::serve)
        .with_state(state)
}

/// File descriptors the API may need beyond its streams: its store connections, the
/// requests being answered, the sinks' and sources' sockets and files.
const DESCRIPTOR_MARGIN: u64 = 256;

/// Logs how many file descriptors are open and allowed, and warns when the limit leaves no
/// room for `max_streams` streams (each holds a socket): past it new connections fail with
/// nothing logged. Linux only (`/proc`); elsewhere, nothing.
fn check_descriptor_headroom(limits: &ApiLimits) {
    let Some((open, allowed)) = descriptors() else {
        return;
    };
    let wanted =
        limits.max_streams as u64 + 2 * u64::from(limits.read_connections) + DESCRIPTOR_MARGIN;
    let headroom = allowed.saturating_sub(open);
    if headroom < wanted {
        warn!(
            open,
            allowed,
            max_streams = limits.max_streams,
            "The file descriptor limit (ulimit -n) leaves room for {headroom} more, fewer than \
             the {wanted} that api.limits.max_streams and the stores may take: raise the \
             limit, or lower api.limits.max_streams."
        );
    } else {
        info!(
            open,
            allowed,
            max_streams = limits.max_streams,
            "File descriptors: room for {headroom} more."
        );
    }
}

/// (open, soft limit) of this process's file descriptors.
fn descriptors() -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let soft = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?;
    // "unlimited" is as good as no limit.
    let allowed = soft.parse().unwrap_or(u64::MAX);
    let open = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some((open, allowed))
}

/// A running API.
#[derive(Debug)]
pub struct ApiServer {
    /// The bound address (the port chosen, for `:0`).
    pub address: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl ApiServer {
    /// Binds `config.listen` and serves until [`ApiServer::stop`]; `config.limits` is the
    /// budget (whatever `state.limits` held).
    pub async fn start(config: &ApiConfig, mut state: ApiState) -> Result<ApiServer, StartError> {
        state.limits = Arc::new(config.limits.clone());
        let address = config.address()?;
        let listen_error = |source| StartError::Listen { address, source };
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(listen_error)?;
        let address = listener.local_addr().map_err(listen_error)?;
        if config.auth == AuthMode::None && !address.ip().is_loopback() {
            warn!(
                %address,
                "The API has auth = \"none\" and is reachable from other hosts: anyone who can \
                 connect reads every app's logs and metrics."
            );
        }
        check_descriptor_headroom(&config.limits);
        let stop = CancellationToken::new();
        let shutdown = stop.clone();
        let hosts = hygiene::HostCheck::for_listener(
            address,
            config.auth == AuthMode::None,
            &config.allowed_hosts,
        );
        let app = hygiene::harden(router(state), hosts);
        let task = tokio::spawn(async move {
            let served = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
            if let Err(e) = served {
                warn!("The API stopped: {e}");
            }
        });
        info!(url = %format!("http://{address}/"), "Serving the API and web UI.");
        Ok(ApiServer {
            address,
            stop,
            task,
        })
    }

    /// Stops accepting and waits for the server task (open streams end).
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}
