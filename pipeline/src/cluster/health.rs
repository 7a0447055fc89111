//! Noticing that a peer is gone (SPEC §12).
//!
//! timely's communication threads (`timely:send-N`, `timely:recv-N`) panic with a message
//! starting "timely communication error" when the socket to process `N` fails: that is the
//! one place a lost peer shows. A panic hook records the first such loss and wakes the
//! runtime, which stops this process cleanly with an error naming the peer; the panics that
//! follow from it on timely's threads are expected then and not printed.

use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::watch;

/// The first peer lost, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lost {
    pub peer: usize,
    pub reason: String,
}

/// Whether every peer is still there; one per process.
#[derive(Debug)]
pub struct Health {
    /// Every peer lost, in the order noticed: when one process dies, the others' exits
    /// follow, and any of them may be noticed first.
    lost: watch::Sender<Vec<Lost>>,
}

impl Health {
    fn new() -> Health {
        Health {
            lost: watch::Sender::new(Vec::new()),
        }
    }

    /// The peer lost first, if any.
    pub fn lost(&self) -> Option<Lost> {
        self.lost.borrow().first().cloned()
    }

    /// Every peer lost so far, in the order noticed.
    pub fn all_lost(&self) -> Vec<Lost> {
        self.lost.borrow().clone()
    }

    /// Resolves once a peer is lost, with the first.
    pub async fn wait_for_loss(&self) -> Lost {
        let mut receiver = self.lost.subscribe();
        match receiver.wait_for(|lost| !lost.is_empty()).await {
            Ok(lost) => lost[0].clone(),
            // The sender lives as long as `self`.
            Err(_) => std::future::pending().await,
        }
    }

    fn record(&self, lost: Lost) {
        self.lost.send_if_modified(|known| {
            let new = !known.iter().any(|seen| seen.peer == lost.peer);
            if new {
                known.push(lost);
            }
            new
        });
    }
}

/// The thread the runtime runs the dataflow on, whose end after a loss is expected too.
pub const DATAFLOW_THREAD: &str = "sluice-dataflow";

static HEALTH: OnceLock<Arc<Health>> = OnceLock::new();
static HOOK: Mutex<bool> = Mutex::new(false);

/// This process's health, with the panic hook that feeds it installed (once).
pub(super) fn watch() -> Arc<Health> {
    let health = HEALTH.get_or_init(|| Arc::new(Health::new())).clone();
    let mut installed = HOOK.lock().unwrap_or_else(|e| e.into_inner());
    if !*installed {
        *installed = true;
        let previous = std::panic::take_hook();
        let watched = health.clone();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            let name = thread.name().unwrap_or_default();
            let message = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or_default();
            if let Some(peer) = communication_peer(name)
                && message.starts_with("timely communication error")
            {
                watched.record(Lost {
                    peer,
                    reason: message.to_owned(),
                });
                return;
            }
            if watched.lost().is_some() && (name.starts_with("timely") || name == DATAFLOW_THREAD) {
                // A consequence of the loss already reported.
                return;
            }
            previous(info);
        }));
    }
    health
}

/// The peer a timely communication thread talks to, from its name.
fn communication_peer(thread: &str) -> Option<usize> {
    thread
        .strip_prefix("timely:send-")
        .or_else(|| thread.strip_prefix("timely:recv-"))?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_communication_thread_names_its_peer() {
        assert_eq!(communication_peer("timely:recv-2"), Some(2));
        assert_eq!(communication_peer("timely:send-0"), Some(0));
        assert_eq!(communication_peer("timely:work-1"), None);
    }

    #[test]
    fn the_first_loss_is_kept() {
        let health = Health::new();
        health.record(Lost {
            peer: 2,
            reason: "first".into(),
        });
        health.record(Lost {
            peer: 1,
            reason: "second".into(),
        });
        assert_eq!(health.lost().map(|l| l.peer), Some(2));
        let all: Vec<usize> = health.all_lost().iter().map(|l| l.peer).collect();
        assert_eq!(all, [2, 1]);
    }
}
