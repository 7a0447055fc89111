//! Sinks: tokio tasks that receive batches of stream records from the dataflow and write them
//! idempotently to a store (SPEC §3).
//!
//! A sink kind is its config type, implementing [`Sink`]: the [`Component`] checks (every
//! problem of its config, the resources it holds alone, a description), the streams it takes,
//! its buffer, and `build`, which makes the sink's task. Adding a kind is a folder (or a file)
//! here and one line in the pipeline's `SinkConfig` enum.
//!
//! Every sink runs as `async fn run(config, ctx: SinkContext) -> Result<(), XxxError>`: it
//! receives [`Records`](sluice_model::records::Records) from [`SinkContext::input`] until the
//! channel closes — which happens when the dataflow has finished and every worker dropped its
//! sender — writes them, counts through [`SinkContext::metrics`], and returns `Ok(())` only
//! once everything it received is written. A batch is written with insert-or-ignore (raw
//! streams) or upsert (rollups), so writing it twice after a retry or a replay changes
//! nothing.
//!
//! Layout:
//! - [`rows`] maps records to the columns of the tables of SPEC §3 (shared by every
//!   row-shaped sink).
//! - `batch` gathers received records into batches and runs the loop of a sink that writes
//!   whole batches (gather, flush, then commit the input); `retry` waits out a store that is
//!   down (one error, capped backoff, the shutdown decision of SPEC §8) for every sink.
//! - `sql` is the one SQL writer: multi-row INSERTs per table and size, the per-table
//!   grouping of a batch, the rollup tables of extra widths, over a small `Dialect` trait
//!   that SQLite and MySQL implement.
//! - [`retention`] is what the SQL sinks share of SPEC §10: the config, which tables are raw
//!   and which rollups, and the cutoff the watermark gives each.
//! - One module per sink kind: [`sqlite`] (the embedded store; `dialect.rs`), [`mysql`]
//!   (`config`, `error`, `store`, `dialect`, `retention`), [`elasticsearch`], [`prometheus`]
//!   (remote write), [`stdout`] (NDJSON), [`blackhole`] (counts and discards).

mod batch;
pub mod blackhole;
pub mod elasticsearch;
pub mod mysql;
pub mod prometheus;
pub mod retention;
mod retry;
pub mod rows;
mod sql;
pub mod sqlite;
pub mod stdout;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use std::sync::LazyLock;

use sluice_buffers::{BufferConfig, BufferError, BufferReceiver, BufferSender};
pub use sluice_common::component::{Claim, Component, ComponentError, ComponentTask, Problem};
use sluice_common::telemetry::SinkMetrics;
use sluice_model::records::{MINUTE, StreamName};
use tokio_util::sync::CancellationToken;

/// A sink kind, implemented by its config type: what the pipeline checks and wires before
/// running it, and the task that writes.
pub trait Sink: Component + Send + Sync {
    /// The streams it takes.
    fn streams(&self) -> &[StreamName];

    /// Where its records wait (`buffer = { ... }`); a memory buffer for kinds without one.
    fn buffer(&self) -> &BufferConfig {
        static MEMORY: LazyLock<BufferConfig> = LazyLock::new(BufferConfig::default);
        &MEMORY
    }

    /// The sink's task: it writes what `ctx.input` receives until the dataflow is done, and
    /// returns once everything received is stored.
    fn build(self: Box<Self>, ctx: SinkContext) -> ComponentTask;
}

/// Problems every SQL-shaped or record-shaped sink shares about its `streams`.
pub(crate) fn stream_problems(streams: &[StreamName]) -> Vec<Problem> {
    let mut problems = Vec::new();
    if streams.is_empty() {
        problems.push(Problem::new("streams", "names no stream"));
    }
    let mut seen = Vec::new();
    for stream in streams {
        if seen.contains(stream) {
            problems.push(Problem::new(
                "streams",
                format!("`{stream}` is listed twice"),
            ));
        }
        seen.push(*stream);
    }
    problems
}

/// Everything a running sink needs from the pipeline.
#[derive(Debug)]
pub struct SinkContext {
    pub name: Arc<str>,
    pub metrics: Arc<SinkMetrics>,
    /// Batches from the dataflow; `None` once the dataflow has finished.
    pub input: BufferReceiver,
    /// Cancelled on Ctrl-C / SIGTERM: a sink may stop retrying a store that is down (a disk
    /// buffer keeps the rest for the next run).
    pub shutdown: CancellationToken,
    /// The rollup window widths (seconds) the graph produces, [`MINUTE`] among them: SQL
    /// sinks create a table for each width beside the minute at start.
    pub windows: Arc<[u32]>,
    /// The pipeline's watermark (ns since the epoch; `i64::MIN` before the first record):
    /// retention measures age against it, never against the wall clock (SPEC §10).
    pub watermark: Arc<AtomicI64>,
}

impl SinkContext {
    /// A sink's context and the sender the dataflow writes into.
    pub fn new(
        name: impl Into<Arc<str>>,
        capacity: usize,
        shutdown: CancellationToken,
    ) -> (SinkContext, BufferSender) {
        let metrics = Arc::new(SinkMetrics::default());
        let (sender, input) = sluice_buffers::unbounded_memory(capacity, metrics.clone());
        let context = SinkContext {
            name: name.into(),
            metrics,
            input,
            shutdown,
            windows: Arc::new([MINUTE]),
            watermark: unknown_watermark(),
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

    /// The context of a sink whose retention follows `watermark` (the graph's, in ns).
    pub fn with_watermark(mut self, watermark: Arc<AtomicI64>) -> SinkContext {
        self.watermark = watermark;
        self
    }

    /// The pipeline's watermark in ns, `None` before the first record.
    pub fn watermark(&self) -> Option<i64> {
        read_watermark(&self.watermark)
    }

    /// A sink's context reading through the buffer `buffer` configures. A disk buffer is
    /// opened here (cutting a torn tail, keeping what an earlier run left) and filled by a
    /// thread of its own from a channel of `capacity` batches.
    pub fn with_buffer(
        name: impl Into<Arc<str>>,
        capacity: usize,
        buffer: &BufferConfig,
        shutdown: CancellationToken,
    ) -> Result<(SinkContext, BufferSender), BufferError> {
        let name: Arc<str> = name.into();
        let metrics = Arc::new(SinkMetrics::default());
        let (sender, input) = sluice_buffers::open(&name, capacity, buffer, metrics.clone())?;
        let context = SinkContext {
            name,
            metrics,
            input,
            shutdown,
            windows: Arc::new([MINUTE]),
            watermark: unknown_watermark(),
        };
        Ok((context, sender))
    }
}

/// A watermark no record has set yet.
fn unknown_watermark() -> Arc<AtomicI64> {
    Arc::new(AtomicI64::new(i64::MIN))
}

/// The watermark `shared` holds, `None` while it is unknown.
pub(crate) fn read_watermark(shared: &AtomicI64) -> Option<i64> {
    let ns = shared.load(Ordering::Relaxed);
    (ns != i64::MIN).then_some(ns)
}
