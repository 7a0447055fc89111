//! The one way Sluice serves HTTP (the admin endpoint, the API, `sluice simulate`): bind a
//! `host:port`, serve an axum router until stopped, and stop cleanly, letting open requests
//! finish.

use std::future::Future;
use std::net::{AddrParseError, SocketAddr};

use axum::Router;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Why a listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("`{listen}` is not an IP address and port such as `{example}` ({source})")]
    Address {
        listen: String,
        example: &'static str,
        source: AddrParseError,
    },
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// `listen` (`127.0.0.1:9598`) as an address; `example` shows the form in the error.
pub fn listen_address(listen: &str, example: &'static str) -> Result<SocketAddr, ListenError> {
    listen.parse().map_err(|source| ListenError::Address {
        listen: listen.to_owned(),
        example,
        source,
    })
}

/// A running HTTP server.
#[derive(Debug)]
pub struct HttpServer {
    /// The bound address (the port chosen, for `:0`).
    pub address: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl HttpServer {
    /// Binds `address` and serves `router` until [`HttpServer::stop`] or `shutdown`
    /// resolves. `name` says which server it is in the log.
    pub async fn start(
        name: &'static str,
        address: SocketAddr,
        router: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<HttpServer, ListenError> {
        let bind_error = |source| ListenError::Bind { address, source };
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(bind_error)?;
        let address = listener.local_addr().map_err(bind_error)?;
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    tokio::select! {
                        () = stopped.cancelled() => {}
                        () = shutdown => {}
                    }
                })
                .await;
            if let Err(e) = served {
                warn!(server = name, %address, "The server stopped: {e}");
            }
        });
        Ok(HttpServer {
            address,
            stop,
            task,
        })
    }

    /// Stops accepting and waits for open requests to finish.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}
