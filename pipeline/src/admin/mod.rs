//! The admin endpoint (`[admin]`): the pipeline's own telemetry over HTTP.
//!
//! - `GET /metrics` — every component's counters in the Prometheus text format
//!   ([`prometheus`]).
//! - `GET /health` — 200 `{"status":"ok"}` while every source is connected and every sink's
//!   store takes writes; 503 naming each component that is not, and why.
//!
//! The figures come from a [`Registry`] the runtime fills as it starts components (and empties
//! as they stop), so the endpoint always shows what runs now.

pub mod prometheus;
pub mod registry;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use sluice_common::http::{HttpServer, ListenError, listen_address};
use tracing::{info, warn};

pub use registry::{Registry, Snapshot};

/// The default `admin.listen`: loopback only, since the endpoint has no authentication.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9598";

/// `[admin]`. Absent: no endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `host:port` to serve on.
    #[serde(default = "default_listen")]
    pub listen: String,
}

fn default_listen() -> String {
    DEFAULT_LISTEN.to_owned()
}

impl AdminConfig {
    /// The address to bind, or what is wrong with `listen`.
    pub fn address(&self) -> Result<SocketAddr, ListenError> {
        listen_address(&self.listen, DEFAULT_LISTEN)
    }
}

/// A running admin endpoint.
#[derive(Debug)]
pub struct AdminServer {
    server: HttpServer,
}

impl AdminServer {
    /// Binds `config.listen` and serves until [`AdminServer::stop`].
    pub async fn start(
        config: &AdminConfig,
        registry: Arc<Registry>,
    ) -> Result<AdminServer, ListenError> {
        let address = config.address()?;
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/health", get(health))
            .with_state(registry);
        // No authentication: on loopback, only loopback names (DNS rebinding); and the same
        // headers and JSON errors as the API.
        let hosts = sluice_api::hygiene::HostCheck::for_listener(address, true, &[]);
        let app = sluice_api::hygiene::harden(app, hosts);
        let server = HttpServer::start("admin", address, app, std::future::pending()).await?;
        let address = server.address;
        if !address.ip().is_loopback() {
            warn!(%address, "The admin endpoint is reachable from other hosts and has no authentication.");
        }
        info!(%address, "Admin endpoint serving /metrics and /health.");
        Ok(AdminServer { server })
    }

    /// The bound address (the port chosen, for `:0`).
    pub fn address(&self) -> SocketAddr {
        self.server.address
    }

    /// Stops serving and waits for open requests to finish.
    pub async fn stop(self) {
        self.server.stop().await;
    }
}

type State = axum::extract::State<Arc<Registry>>;

async fn metrics(axum::extract::State(registry): State) -> Response {
    let body = prometheus::encode(&registry.snapshot());
    ([(header::CONTENT_TYPE, prometheus::CONTENT_TYPE)], body).into_response()
}

/// The body of `/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `ok` or `unavailable`.
    pub status: String,
    /// What is failing, absent when nothing is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failing: Vec<Failing>,
}

/// One component that is not working.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failing {
    /// Its config key: `sources.NAME` or `sinks.NAME`.
    pub component: String,
    pub reason: String,
}

impl Health {
    pub fn of(snapshot: &Snapshot) -> Health {
        let mut failing = Vec::new();
        if !snapshot.started {
            failing.push(Failing {
                component: "pipeline".to_owned(),
                reason: "starting".to_owned(),
            });
        }
        for source in &snapshot.sources {
            if !source.connected {
                failing.push(Failing {
                    component: format!("sources.{}", source.name),
                    reason: "not connected".to_owned(),
                });
            }
        }
        for sink in &snapshot.sinks {
            if let Some(reason) = &sink.unavailable {
                failing.push(Failing {
                    component: format!("sinks.{}", sink.name),
                    reason: format!("{} is unavailable: {reason}", sink.type_name),
                });
            }
        }
        let status = if failing.is_empty() {
            "ok"
        } else {
            "unavailable"
        };
        Health {
            status: status.to_owned(),
            failing,
        }
    }

    pub fn is_ok(&self) -> bool {
        self.failing.is_empty()
    }
}

async fn health(axum::extract::State(registry): State) -> Response {
    let health = Health::of(&registry.snapshot());
    let code = if health.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(health)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_common::telemetry::SinkMetrics;
    use sluice_sources::SourceMetrics;
    use std::sync::atomic::Ordering;

    #[test]
    fn health_names_each_failing_component_and_why() {
        let registry = Registry::new(crate::telemetry::GraphMetrics::new());
        let source = Arc::new(SourceMetrics::default());
        let sink = Arc::new(SinkMetrics::default());
        registry.add_source("cf", source.clone());
        registry.add_sink("search", "elasticsearch", sink.clone());
        let health = Health::of(&registry.snapshot());
        assert_eq!(health.failing[0].component, "pipeline", "{health:?}");
        assert_eq!(health.failing[0].reason, "starting");

        registry.mark_started();
        let health = Health::of(&registry.snapshot());
        assert_eq!(health.status, "unavailable");
        assert_eq!(health.failing.len(), 1);
        assert_eq!(health.failing[0].component, "sources.cf");

        source.connected.store(true, Ordering::Relaxed);
        sink.set_unavailable("connection refused");
        let health = Health::of(&registry.snapshot());
        assert_eq!(health.failing.len(), 1);
        assert_eq!(health.failing[0].component, "sinks.search");
        assert!(health.failing[0].reason.contains("connection refused"));

        sink.set_available();
        let health = Health::of(&registry.snapshot());
        assert!(health.is_ok());
        assert_eq!(
            serde_json::to_string(&health).expect("json"),
            r#"{"status":"ok"}"#
        );
    }

    #[test]
    fn listen_must_be_an_address_and_port() {
        let config = |listen: &str| AdminConfig {
            listen: listen.to_owned(),
        };
        assert!(config("127.0.0.1:9598").address().is_ok());
        assert!(config("[::1]:0").address().is_ok());
        let problem = config("localhost").address().expect_err("no port");
        let problem = problem.to_string();
        assert!(problem.contains("`localhost`"), "{problem}");
    }
}
