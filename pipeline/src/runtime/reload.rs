//! Where reloads come from: a request (the CLI turns SIGHUP into one; tests and the reload
//! benchmark ask directly), and with `--watch` a change of the config file (its modification
//! time or size, checked every second).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tracing::info;

pub(super) struct ReloadTrigger {
    path: Option<PathBuf>,
    watch: bool,
    last_seen: Option<(Option<SystemTime>, u64)>,
    requests: Option<Arc<Notify>>,
}

impl ReloadTrigger {
    pub(super) fn new(
        path: Option<PathBuf>,
        watch: bool,
        requests: Option<Arc<Notify>>,
    ) -> ReloadTrigger {
        let last_seen = path.as_deref().map(file_stamp);
        ReloadTrigger {
            path,
            watch,
            last_seen,
            requests,
        }
    }

    /// The config file to load, when a reload is asked for; pending forever without a file.
    pub(super) async fn next(&mut self) -> PathBuf {
        let Some(path) = self.path.clone() else {
            return std::future::pending().await;
        };
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let requested = async {
                match &self.requests {
                    Some(notify) => notify.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = requested => return path,
                _ = tick.tick(), if self.watch => {
                    let stamp = file_stamp(&path);
                    if self.last_seen.as_ref() != Some(&stamp) {
                        let first = self.last_seen.is_none();
                        self.last_seen = Some(stamp);
                        if !first {
                            info!(path = %path.display(), "The config file changed: reloading it.");
                            return path;
                        }
                    }
                }
            }
        }
    }
}

fn file_stamp(path: &Path) -> (Option<SystemTime>, u64) {
    match std::fs::metadata(path) {
        Ok(meta) => (meta.modified().ok(), meta.len()),
        Err(_) => (None, 0),
    }
}
