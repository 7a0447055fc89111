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
    lost: watch::Sender<Option<Lost>>,
    /// Every peer lost, in the order noticed: when one process dies, the others' exits
    /// follow, and any of them may be noticed first.
    all_lost: Mutex<Vec<Lost>>,
}

impl Health {
    /// The peer lost first, if any.
    pub fn lost(&self) -> Option<Lost> {
        self.lost.borrow().clone()
    }

    /// Every peer lost so far, in the order noticed.
    pub fn all_lost(&self) -> Vec<Lost> {
        self.all_lost
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Resolves once a peer is lost.
    pub async fn wait_for_loss(&self) -> Lost {
        let mut receiver = self.lost.subscribe();
        loop {
            if let Some(lost) = receiver.borrow_and_update().clone() {
                return lost;
            }
            if receiver.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    fn record(&self, lost: Lost) {
        {
            let mut all = self.all_lost.lock().unwrap_or_else(|e| e.into_inner());
            if !all.iter().any(|known| known.peer == lost.peer) {
                all.push(lost.clone());
            }
        }
        self.lost.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(lost);
                true
            } else {
                false
            }
        });
    }
}

/// The thread the runtime runs the dataflow on, whose end after a loss is expected too.
pub const DATAFLOW_THREAD: &str = "sluice-dataflow";

static HEALTH: OnceLock<Arc<Health>> = OnceLock::new();
static HOOK: Mutex<bool> = Mutex::new(false);

/// This process's health, with the panic hook that feeds it installed (once).
pub(super) fn watch() -> Arc<Health> {
    let health = HEALTH
        .get_or_init(|| {
            let (lost, _) = watch::channel(None);
            Arc::new(Health {
                lost,
                all_lost: Mutex::default(),
            })
        })
        .clone();
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
        let (lost, _) = watch::channel(None);
        let health = Health {
            lost,
            all_lost: Mutex::default(),
        };
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
