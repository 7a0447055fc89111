//! Sinks: tokio tasks that receive batches of stream records from the dataflow and write them
//! idempotently to a store (SPEC §3).
//!
//! Every sink runs as `async fn run(config, ctx: SinkContext) -> Result<(), XxxError>`: it
//! receives [`Records`] from [`SinkContext::input`] until the channel closes — which happens
//! when the dataflow has finished and every worker dropped its sender — writes them, counts
//! through [`SinkContext::metrics`], and returns `Ok(())` only once everything it received is
//! written. A batch is written with insert-or-ignore (raw streams) or upsert (rollups), so
//! writing it twice after a retry or a replay changes nothing.
//!
//! Layout: [`rows`] maps records to the columns of the tables of SPEC §3 (shared by every
//! row-shaped sink); [`sqlite`] is the embedded store; [`stdout`] prints NDJSON.

mod batch;
pub mod elasticsearch;
pub mod input;
pub mod mysql;
mod retry;
pub mod rows;
pub mod sqlite;
pub mod stdout;

pub mod blackhole;

pub use input::SinkInput;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_model::Event;
use sluice_operators::records::{AppEvent, AppRollup, MINUTE, PlatformRollup, StreamName};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::buffer::disk::DiskBufferConfig;
use crate::buffer::memory::{Admit, EventGate};
use crate::buffer::{BufferConfig, BufferError};
use crate::telemetry::Counter;

/// A batch of one stream's records.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Records {
    Logs(Vec<Event>),
    ContainerMetrics(Vec<Event>),
    Http(Vec<Event>),
    Errors(Vec<Event>),
    AppEvents(Vec<AppEvent>),
    AppRollups(Vec<AppRollup>),
    PlatformRollups(Vec<PlatformRollup>),
}

impl Records {
    pub fn stream(&self) -> StreamName {
        match self {
            Records::Logs(_) => StreamName::Logs,
            Records::ContainerMetrics(_) => StreamName::ContainerMetrics,
            Records::Http(_) => StreamName::Http,
            Records::Errors(_) => StreamName::Errors,
            Records::AppEvents(_) => StreamName::AppEvents,
            Records::AppRollups(_) => StreamName::AppRollups,
            Records::PlatformRollups(_) => StreamName::PlatformRollups,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Records::Logs(r)
            | Records::ContainerMetrics(r)
            | Records::Http(r)
            | Records::Errors(r) => r.len(),
            Records::AppEvents(r) => r.len(),
            Records::AppRollups(r) => r.len(),
            Records::PlatformRollups(r) => r.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A sink's counters. Shared with the status line and the admin endpoint.
#[derive(Debug, Default)]
pub struct SinkMetrics {
    /// Records written, per stream (indexed like [`StreamName::ALL`]).
    written: [Counter; 7],
    /// Write attempts that failed and will be retried.
    pub retries: Counter,
    /// Records given up on (non-retriable errors, `when_full = "drop_newest"`, shutdown).
    pub dropped: Counter,
    /// Records received and not yet written.
    pub pending: AtomicI64,
    /// Records the store refused for good and the sink set aside (Elasticsearch's
    /// dead-letter file).
    pub dead_lettered: Counter,
    /// Records in the sink's buffer (a disk buffer: not yet acknowledged).
    pub buffered_records: AtomicI64,
    /// Bytes in the sink's disk buffer not yet acknowledged (0 for a memory buffer).
    pub buffered_bytes: AtomicI64,
    /// When the pending records arrived, oldest first: the age of the oldest one.
    arrivals: Mutex<Arrivals>,
    /// Why the store is unavailable: the error of the last failed attempt, cleared by a
    /// successful one. `None` until an attempt fails.
    unavailable: Mutex<Option<String>>,
}

/// Pending records as `(count, arrived)` runs, oldest first. Sinks settle records in about the
/// order they arrived, so settling takes from the front; it is a gauge, not an account.
#[derive(Debug, Default)]
struct Arrivals(VecDeque<(u64, Instant)>);

impl Arrivals {
    fn arrived(&mut self, n: u64, at: Instant) {
        if n > 0 {
            self.0.push_back((n, at));
        }
    }

    fn settled(&mut self, mut n: u64) {
        while n > 0 {
            let Some(front) = self.0.front_mut() else {
                return;
            };
            let taken = front.0.min(n);
            front.0 -= taken;
            n -= taken;
            if front.0 == 0 {
                self.0.pop_front();
            }
        }
    }

    /// Takes back the newest `n` (a send that failed).
    fn unsent(&mut self, mut n: u64) {
        while n > 0 {
            let Some(back) = self.0.back_mut() else {
                return;
            };
            let taken = back.0.min(n);
            back.0 -= taken;
            n -= taken;
            if back.0 == 0 {
                self.0.pop_back();
            }
        }
    }
}

impl SinkMetrics {
    /// Counts records as written (and no longer pending).
    pub fn written(&self, stream: StreamName, n: usize) {
        self.written[stream.index()].add(n as u64);
        self.settle(n);
    }

    /// Counts records as received by the sink's input (pending until settled).
    pub fn received(&self, n: usize) {
        self.pending.fetch_add(n as i64, Ordering::Relaxed);
        self.arrivals().arrived(n as u64, Instant::now());
    }

    fn settle(&self, n: usize) {
        self.pending.fetch_sub(n as i64, Ordering::Relaxed);
        self.arrivals().settled(n as u64);
    }

    fn arrivals(&self) -> std::sync::MutexGuard<'_, Arrivals> {
        // The queue is consistent after every operation: a panic elsewhere cannot tear it.
        self.arrivals.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long the oldest record not yet written (or given up) has waited; `None` when
    /// nothing is pending.
    pub fn oldest_pending_age(&self) -> Option<Duration> {
        self.arrivals().0.front().map(|(_, at)| at.elapsed())
    }

    /// The store failed an attempt that will be retried: `reason` says why.
    pub fn set_unavailable(&self, reason: impl ToString) {
        *self.unavailable.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.to_string());
    }

    /// An attempt succeeded: the store is available.
    pub fn set_available(&self) {
        *self.unavailable.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Why the store is unavailable, or `None` if its last attempt succeeded.
    pub fn unavailable_reason(&self) -> Option<String> {
        self.unavailable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn written_of(&self, stream: StreamName) -> u64 {
        self.written[stream.index()].get()
    }

    pub fn written_total(&self) -> u64 {
        self.written.iter().map(Counter::get).sum()
    }

    /// Counts records as set aside in a dead-letter file (and no longer pending).
    pub fn dead_lettered(&self, n: usize) {
        self.dead_lettered.add(n as u64);
        self.settle(n);
    }

    /// Counts records as given up on (and no longer pending).
    pub fn dropped(&self, n: usize) {
        self.dropped.add(n as u64);
        self.settle(n);
    }
}

/// The sending side of a sink's input, held by the dataflow's output operators.
#[derive(Clone, Debug)]
pub struct SinkSender {
    tx: mpsc::Sender<Records>,
    metrics: Arc<SinkMetrics>,
    /// A memory buffer's `max_events`.
    gate: Option<Arc<EventGate>>,
}

impl SinkSender {
    /// Queues a batch, blocking the calling (timely worker) thread while the sink is behind:
    /// backpressure travels from a slow store through the dataflow to the sources. Returns
    /// false if the sink has stopped.
    pub fn send_blocking(&self, records: Records) -> bool {
        if records.is_empty() {
            return true;
        }
        let n = records.len() as i64;
        if let Some(gate) = &self.gate {
            match gate.take(records.len()) {
                Admit::Queued => {
                    self.metrics
                        .buffered_records
                        .fetch_add(n, Ordering::Relaxed);
                }
                Admit::Dropped => {
                    self.metrics.dropped.add(n as u64);
                    return true;
                }
                Admit::Closed => {
                    self.metrics.dropped.add(n as u64);
                    return false;
                }
            }
        }
        self.metrics.received(n as usize);
        if self.tx.blocking_send(records).is_err() {
            // The sink stopped on a non-retriable error (and said so): count what it misses.
            self.metrics.pending.fetch_sub(n, Ordering::Relaxed);
            self.metrics.arrivals().unsent(n as u64);
            self.metrics.dropped.add(n as u64);
            if let Some(gate) = &self.gate {
                gate.release(n as usize);
                self.metrics
                    .buffered_records
                    .fetch_sub(n, Ordering::Relaxed);
            }
            return false;
        }
        true
    }
}

/// Everything a running sink needs from the pipeline.
#[derive(Debug)]
pub struct SinkContext {
    pub name: Arc<str>,
    pub metrics: Arc<SinkMetrics>,
    /// Batches from the dataflow; `None` once the dataflow has finished.
    pub input: SinkInput,
    /// Cancelled on Ctrl-C / SIGTERM: a sink may stop retrying a store that is down (a disk
    /// buffer keeps the rest for the next run).
    pub shutdown: CancellationToken,
    /// The rollup window widths (seconds) the graph produces, [`MINUTE`] among them: SQL
    /// sinks create a table for each width beside the minute at start.
    pub windows: Arc<[u32]>,
}

impl SinkContext {
    /// A sink's context and the sender the dataflow writes into.
    pub fn new(
        name: impl Into<Arc<str>>,
        capacity: usize,
        shutdown: CancellationToken,
    ) -> (SinkContext, SinkSender) {
        let (tx, input) = mpsc::channel(capacity);
        let metrics = Arc::new(SinkMetrics::default());
        let sender = SinkSender {
            tx,
            metrics: metrics.clone(),
            gate: None,
        };
        let context = SinkContext {
            name: name.into(),
            metrics,
            input: SinkInput::memory(input),
            shutdown,
            windows: Arc::new([MINUTE]),
        };
        (context, sender)
    }

    /// The context for a graph rolling up windows of `windows` (seconds) besides the minute.
    pub fn with_windows(mut self, windows: &[u32]) -> SinkContext {
        let mut widths = vec![MINUTE];
        widths.extend(windows.iter().filter(|w| **w != MINUTE));
        self.windows = widths.into();
        self
    }

    /// A sink's context reading through the buffer `buffer` configures. A disk buffer is
    /// opened here (cutting a torn tail, keeping what an earlier run left) and filled by a
    /// thread of its own from a channel of `capacity` batches.
    pub fn with_buffer(
        name: impl Into<Arc<str>>,
        capacity: usize,
        buffer: &BufferConfig,
        shutdown: CancellationToken,
    ) -> Result<(SinkContext, SinkSender), BufferError> {
        let name: Arc<str> = name.into();
        let (tx, rx) = mpsc::channel(capacity);
        let metrics = Arc::new(SinkMetrics::default());
        let (input, gate) = match buffer {
            BufferConfig::Memory {
                max_events,
                when_full,
            } => {
                let gate = Arc::new(EventGate::new(*max_events, *when_full));
                let input = SinkInput::memory_capped(rx, gate.clone(), metrics.clone());
                (input, Some(gate))
            }
            BufferConfig::Disk {
                path,
                max_size,
                when_full,
                sync,
                segment_size,
            } => {
                let config = DiskBufferConfig {
                    path: path.clone(),
                    max_size: max_size.0,
                    segment_size: segment_size.0,
                    when_full: *when_full,
                    sync: *sync,
                };
                let input = SinkInput::disk(name.clone(), rx, config, metrics.clone())?;
                (input, None)
            }
        };
        let sender = SinkSender {
            tx,
            metrics: metrics.clone(),
            gate,
        };
        let context = SinkContext {
            name,
            metrics,
            input,
            shutdown,
            windows: Arc::new([MINUTE]),
        };
        Ok((context, sender))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_pending_age_follows_what_is_settled() {
        let metrics = SinkMetrics::default();
        assert_eq!(metrics.oldest_pending_age(), None);
        let mut arrivals = Arrivals::default();
        let start = Instant::now();
        let later = start + Duration::from_secs(5);
        arrivals.arrived(3, start);
        arrivals.arrived(2, later);
        arrivals.settled(2);
        assert_eq!(arrivals.0.front(), Some(&(1, start)));
        arrivals.settled(1);
        assert_eq!(arrivals.0.front(), Some(&(2, later)));
        arrivals.arrived(4, later);
        arrivals.unsent(5);
        assert_eq!(arrivals.0.iter().collect::<Vec<_>>(), vec![&(1, later)]);
        // Settling more than is pending (records from before a restart) empties it.
        arrivals.settled(10);
        assert!(arrivals.0.is_empty());

        metrics.received(4);
        assert!(metrics.oldest_pending_age().is_some());
        metrics.written(StreamName::Logs, 3);
        metrics.dropped(1);
        assert_eq!(metrics.oldest_pending_age(), None);
        assert_eq!(metrics.pending.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn availability_holds_the_last_failure_until_a_success() {
        let metrics = SinkMetrics::default();
        assert_eq!(metrics.unavailable_reason(), None);
        metrics.set_unavailable("connection refused");
        assert_eq!(
            metrics.unavailable_reason().as_deref(),
            Some("connection refused")
        );
        metrics.set_available();
        assert_eq!(metrics.unavailable_reason(), None);
    }
}
