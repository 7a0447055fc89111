//! The process's signals, which only the command line handles: the library's run takes its
//! shutdown as a future and its reloads as requests.
//!
//! - SIGINT / SIGTERM: the first stops the run cleanly (everything read is written); a second,
//!   while the run is still finishing, exits at once with 130, as the operator asked twice.
//! - SIGHUP: reload the config file.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::Notify;
use tracing::{info, warn};

/// Resolves on the first SIGINT or SIGTERM, and from then on exits the process on the next.
pub(super) async fn shutdown_on_signal() {
    let signal = wait_for_signal().await;
    info!(signal, "Stopping: finishing what was read, then exiting.");
    tokio::spawn(async {
        let _ = wait_for_signal().await;
        warn!("Second signal: exiting without waiting for the sinks.");
        std::process::exit(130);
    });
}

/// `shutdown`, notifying `reload` on every SIGHUP meanwhile. Its future must be polled inside
/// the run's runtime, as the run does.
pub(super) async fn reload_on_hangup(
    reload: Arc<Notify>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut hangup) = signal(SignalKind::hangup()) {
            tokio::spawn(async move {
                while hangup.recv().await.is_some() {
                    info!("SIGHUP: reloading the config.");
                    reload.notify_one();
                }
            });
        }
    }
    #[cfg(not(unix))]
    drop(reload);
    shutdown.await;
}

/// Waits for SIGINT or SIGTERM and names it.
pub(super) async fn wait_for_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}
