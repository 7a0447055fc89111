//! Which sinks take which streams, as a table the dataflow reads for every batch, so sinks
//! can be added, removed and replaced while the graph runs (live reload) without rebuilding
//! it or losing its open windows.
//!
//! The dataflow's forward operators call [`SinkRoutes::send`] from worker threads. A sink
//! being replaced is *paused*: batches for it wait (backpressure, as when a sink is slow)
//! until its successor is in place, so nothing is lost and a store never has two writers
//! racing on the same rows.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use sluice_buffers::BufferSender;
use sluice_common::telemetry::SinkMetrics;
use sluice_model::records::Records;
use sluice_model::records::StreamName;

#[derive(Debug)]
enum Route {
    Active(BufferSender),
    Paused,
}

#[derive(Debug)]
struct Entry {
    streams: Vec<StreamName>,
    route: Route,
}

/// The table; shared by the runtime (writes) and every worker (reads).
#[derive(Debug, Default)]
pub struct SinkRoutes {
    table: Mutex<BTreeMap<String, Entry>>,
    resumed: Condvar,
    /// Every sink instance ever routed to in this run, current or retired by a reload.
    instances: Mutex<Vec<(String, Arc<SinkMetrics>)>>,
}

/// How many records one sink instance had been handed at some moment.
#[derive(Clone, Debug)]
pub struct HandedOver {
    pub sink: String,
    pub metrics: Arc<SinkMetrics>,
    pub records: u64,
}

impl HandedOver {
    /// Whether a crash of the process can no longer lose any of those records (or waiting
    /// for them is pointless: the sink has ended).
    pub fn is_safe(&self) -> bool {
        self.metrics.safe_total() >= self.records || self.metrics.is_finished()
    }
}

impl SinkRoutes {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Routes `streams` to a sink (replacing any route of that name).
    pub fn insert(&self, name: &str, streams: Vec<StreamName>, sender: BufferSender) {
        self.instances
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push((name.to_owned(), sender.metrics().clone()));
        self.lock().insert(
            name.to_owned(),
            Entry {
                streams,
                route: Route::Active(sender),
            },
        );
        self.resumed.notify_all();
    }

    /// Routes `streams` to a sink that cannot take them yet: its batches wait until
    /// [`SinkRoutes::insert`].
    pub fn insert_paused(&self, name: &str, streams: Vec<StreamName>) {
        self.lock().insert(
            name.to_owned(),
            Entry {
                streams,
                route: Route::Paused,
            },
        );
    }

    /// Holds back a sink's batches and lets go of its sender, so its channel closes once the
    /// batches already sent are drained; [`SinkRoutes::insert`] resumes it.
    pub fn pause(&self, name: &str) {
        if let Some(entry) = self.lock().get_mut(name) {
            entry.route = Route::Paused;
        }
    }

    /// Stops routing to a sink; its channel closes once drained.
    pub fn remove(&self, name: &str) {
        self.lock().remove(name);
        self.resumed.notify_all();
    }

    /// Removes every route: at the end of a run, so every sink sees its input close.
    pub fn clear(&self) {
        self.lock().clear();
        self.resumed.notify_all();
    }

    /// Hands a batch of `stream` to every sink that takes it, blocking while one of them is
    /// paused or behind. Records no sink takes are not stored anywhere.
    pub fn send(&self, stream: StreamName, records: Records) {
        let senders: Vec<BufferSender> = {
            let mut table = self.lock();
            loop {
                let paused = table
                    .values()
                    .any(|e| matches!(e.route, Route::Paused) && e.streams.contains(&stream));
                if !paused {
                    break;
                }
                table = self
                    .resumed
                    .wait(table)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            table
                .values()
                .filter(|e| e.streams.contains(&stream))
                .filter_map(|e| match &e.route {
                    Route::Active(sender) => Some(sender.clone()),
                    Route::Paused => None,
                })
                .collect()
        };
        // Sending outside the lock: a slow sink must not hold up a reload.
        let Some((last, others)) = senders.split_last() else {
            return;
        };
        for sender in others {
            sender.send_blocking(records.clone());
        }
        last.send_blocking(records);
    }

    /// How many records every sink instance of the run has been handed so far: a checkpoint
    /// of what has been read so far is safe once each has them safe (SPEC §9).
    pub fn handed_over(&self) -> Vec<HandedOver> {
        self.instances
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .map(|(sink, metrics)| HandedOver {
                sink: sink.clone(),
                metrics: metrics.clone(),
                records: metrics.received_total(),
            })
            .collect()
    }

    /// The sinks routed now, with their streams (for `validate`-style output and tests).
    pub fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use sluice_sinks::SinkContext;
    use tokio_util::sync::CancellationToken;

    use super::*;

    fn errors(n: usize) -> Records {
        Records::Errors(vec![
            sluice_model::Event {
                timestamp: 1,
                header: Default::default(),
                payload: sluice_model::Payload::Error(sluice_model::event::ErrorEvent {
                    source: "s".into(),
                    code: 1,
                    message: "m".into(),
                }),
            };
            n
        ])
    }

    #[test]
    fn a_paused_sink_holds_batches_until_its_successor_takes_them() {
        // `send` blocks like a timely worker does: it runs on this plain thread, the sinks'
        // inputs are read through a runtime of their own.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let routes = Arc::new(SinkRoutes::default());
        let (mut old, old_sender) = SinkContext::new("db", 4, CancellationToken::new());
        routes.insert("db", vec![StreamName::Errors], old_sender);
        routes.send(StreamName::Errors, errors(1));
        // Logs go nowhere: no sink takes them.
        routes.send(StreamName::Logs, Records::Logs(vec![]));
        assert_eq!(runtime.block_on(old.input.recv()).map(|r| r.len()), Some(1));

        routes.pause("db");
        // The old instance's input closes once its sender is gone from the table.
        assert_eq!(runtime.block_on(old.input.recv()), None);
        let sending = {
            let routes = routes.clone();
            std::thread::spawn(move || routes.send(StreamName::Errors, errors(2)))
        };
        // The batch waits for the successor (a wait that proves nothing if it is too short,
        // and cannot make the test fail by being slow).
        std::thread::sleep(Duration::from_millis(50));
        assert!(!sending.is_finished(), "a paused route let a batch through");
        let (mut new, new_sender) = SinkContext::new("db", 4, CancellationToken::new());
        routes.insert("db", vec![StreamName::Errors], new_sender);
        sending.join().expect("sent");
        assert_eq!(runtime.block_on(new.input.recv()).map(|r| r.len()), Some(2));

        routes.clear();
        assert_eq!(runtime.block_on(new.input.recv()), None);
        assert!(routes.names().is_empty());
    }
}
