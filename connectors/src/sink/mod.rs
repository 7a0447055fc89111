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

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use sluice_model::Event;
use sluice_operators::records::{AppEvent, AppRollup, PlatformRollup, StreamName};
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
}

impl SinkMetrics {
    fn slot(stream: StreamName) -> usize {
        StreamName::ALL
            .iter()
            .position(|s| *s == stream)
            .unwrap_or(0)
    }

    /// Counts records as written (and no longer pending).
    pub fn written(&self, stream: StreamName, n: usize) {
        self.written[Self::slot(stream)].add(n as u64);
        self.pending.fetch_sub(n as i64, Ordering::Relaxed);
    }

    pub fn written_of(&self, stream: StreamName) -> u64 {
        self.written[Self::slot(stream)].get()
    }

    pub fn written_total(&self) -> u64 {
        self.written.iter().map(Counter::get).sum()
    }

    /// Counts records as set aside in a dead-letter file (and no longer pending).
    pub fn dead_lettered(&self, n: usize) {
        self.dead_lettered.add(n as u64);
        self.pending.fetch_sub(n as i64, Ordering::Relaxed);
    }

    /// Counts records as given up on (and no longer pending).
    pub fn dropped(&self, n: usize) {
        self.dropped.add(n as u64);
        self.pending.fetch_sub(n as i64, Ordering::Relaxed);
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
        self.metrics.pending.fetch_add(n, Ordering::Relaxed);
        if self.tx.blocking_send(records).is_err() {
            // The sink stopped on a non-retriable error (and said so): count what it misses.
            self.metrics.pending.fetch_sub(n, Ordering::Relaxed);
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
        };
        (context, sender)
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
        };
        Ok((context, sender))
    }
}
