//! Sources: tokio tasks that read envelopes from somewhere, decode them, and hand batches of
//! [`Event`]s to the pipeline through a bounded channel.
//!
//! A source kind is its config type, implementing [`Source`]: the [`Component`] checks (every
//! problem of its config, the resources it holds alone, a description) and `build`, which
//! makes the source's task. Every task runs as `async fn run(config, ctx: SourceContext) ->
//! Result<(), XxxError>`: it sends through [`SourceContext::send`], counts through
//! [`SourceContext::metrics`] and the `SourceContext` reporting methods, stops when
//! [`SourceContext::shutdown`] is cancelled, and returns `Ok(())` when a finite source is
//! exhausted. Dropping the context closes the source's side of the channel, which is how the
//! pipeline learns that a finite source has finished.
//!
//! Layout:
//! - this file — the [`Source`] interface and what every source shares ([`SourceContext`],
//!   [`SourceBatch`], [`SourceMetrics`]), and the checks of config values they share;
//! - `reconnect` — the reconnect loop of the network sources: a UAA token, the source's
//!   connection attempt, a fresh token after a refused one, capped backoff;
//! - [`metadata`] — `[metadata]`: the Cloud Controller's app listings (SPEC §11), not a
//!   source of records but of names;
//! - one module per kind: [`firehose`] (v1 WebSocket, and `capture`), [`rlp`] (v2
//!   Server-Sent Events), [`file`](mod@file) (replay files). The `simulator` kind lives with the
//!   traffic generator in `sluice-simulator`.

pub mod file;
pub mod firehose;
pub mod metadata;
mod reconnect;
pub mod rlp;

pub use sluice_common::component::{Component, ComponentError, ComponentTask, Problem};

/// A source kind, implemented by its config type: what the pipeline checks before running
/// it, and the task that reads with it.
pub trait Source: Component + Send + Sync {
    /// Whether the source ends on its own (a replay file, a simulator with a limit), rather
    /// than running until it is stopped.
    fn is_finite(&self) -> bool;

    /// The source's task: it reads until its input ends (a finite source) or
    /// `ctx.shutdown` is cancelled.
    fn build(self: Box<Self>, ctx: SourceContext) -> ComponentTask;
}

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_common::telemetry::{Counter, RateLimit, ReasonCounters};
use sluice_model::{DecodeError, Event};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// What is wrong with `url` as a URL of one of `schemes` with a host and no query.
pub(crate) fn check_url(url: &str, schemes: &[&str]) -> Result<(), String> {
    let uri = url
        .parse::<Uri>()
        .map_err(|e| format!("'{url}' is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some(scheme) if schemes.contains(&scheme) => {}
        _ => {
            return Err(format!(
                "'{url}' must start with {}",
                schemes
                    .iter()
                    .map(|s| format!("{s}://"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            ));
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("'{url}' names no host"));
    }
    if uri.query().is_some() {
        return Err(format!("'{url}' must not carry a query"));
    }
    Ok(())
}

/// What is wrong with `id` as one segment of a URL path (a subscription or shard id).
pub(crate) fn check_path_segment(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("must not be empty".into());
    }
    match id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-._~".contains(*c)))
    {
        Some(c) => Err(format!(
            "'{c}' cannot appear in a URL path; use letters, digits, '-', '.', '_', '~'"
        )),
        None => Ok(()),
    }
}

/// The problems of what every network source names, in this order: its `url` (of one of
/// `schemes`), `uaa_url`, its stream's id under `id_key` (a subscription or shard id) and
/// `client_id`. A source adds the problems of its own settings after these.
pub(crate) fn network_problems(
    url: &str,
    schemes: &[&str],
    uaa_url: &str,
    (id_key, id): (&str, &str),
    client_id: &str,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let Err(e) = check_url(url, schemes) {
        problems.push(Problem::new("url", e));
    }
    if let Err(e) = check_url(uaa_url, &["http", "https"]) {
        problems.push(Problem::new("uaa_url", e));
    }
    if let Err(e) = check_path_segment(id) {
        problems.push(Problem::new(id_key, e));
    }
    if client_id.is_empty() {
        problems.push(Problem::new("client_id", "must not be empty"));
    }
    problems
}

/// Problems as one line.
pub(crate) fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Where a source that can rewind has read to, as a checkpoint saves it (SPEC §9): a restart
/// from the checkpoint resumes there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourcePosition {
    File(file::FilePosition),
}

/// Decoded events from one source, and when they arrived.
#[derive(Debug)]
pub struct SourceBatch {
    /// The name of the source component (`[sources.NAME]`).
    pub source: Arc<str>,
    pub events: Vec<Event>,
    /// When the batch was received, ns since the epoch: the event time of events that carry
    /// none (SPEC §2).
    pub received_at: i64,
    /// Where the source has read to once this batch is in, for a source that can rewind.
    pub position: Option<SourcePosition>,
    /// The bytes the batch holds (frames kept alive, or [`Event::approx_bytes`]), as the
    /// channel's byte budget counts them.
    pub bytes: usize,
    /// The batch's share of the channel's byte budget, given back when the batch is dropped
    /// (once the dataflow has taken its events).
    _queued: Queued,
}

/// A batch's bytes in the channel: held in the budget and in its source's `queued_bytes`
/// until the batch is dropped.
#[derive(Debug)]
struct Queued {
    _permit: OwnedSemaphorePermit,
    bytes: i64,
    metrics: Arc<SourceMetrics>,
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.metrics
            .queued_bytes
            .fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// The default cap on the bytes queued between the sources and the dataflow.
pub const DEFAULT_CHANNEL_BYTES: u64 = 128 << 20;

/// A batch holding this much is sent even if the source could take more: it bounds what a
/// source collects before it waits for room (see [`SourceContext::max_batch_bytes`]).
pub const MAX_BATCH_BYTES: usize = 4 << 20;

/// Why a record was skipped: every `DecodeError` reason and the framing problems of streams.
pub const BAD_RECORD_REASONS: &[&str] = &[
    "truncated",
    "malformed",
    "wire_type",
    "missing_field",
    "invalid_utf8",
    "unknown_enum",
    "type_mismatch",
    "invalid",
    "truncated_frame",
    "oversized_frame",
    "invalid_json",
];

/// Why a well-formed record produced no event (not an error in the input, but counted).
pub const SKIP_REASONS: &[&str] = &["unmapped_v2", "non_binary_message"];

/// A source's counters. Shared with the status line and the admin endpoint.
#[derive(Debug)]
pub struct SourceMetrics {
    /// Events handed to the pipeline.
    pub events: Counter,
    /// Bytes of envelopes received (frame payloads, before decoding).
    pub bytes: Counter,
    /// Records skipped as bad, per reason of [`BAD_RECORD_REASONS`].
    pub bad_records: ReasonCounters,
    /// Well-formed records that carry nothing Sluice stores, per reason of [`SKIP_REASONS`].
    pub skipped: ReasonCounters,
    /// Connection attempts after the first (network sources).
    pub reconnects: Counter,
    /// Disconnects by the Traffic Controller for consuming too slowly (close code 1008).
    pub slow_consumer_disconnects: Counter,
    /// Bytes of input given up on: the rest of a replay file after a broken length prefix,
    /// or its cut last record.
    pub abandoned_bytes: Counter,
    /// Bytes of this source's batches queued for the dataflow now (a gauge; the channel's
    /// byte budget bounds their sum over every source).
    pub queued_bytes: AtomicI64,
    /// The wait before the latest reconnect attempt, in ms (a gauge): how far the backoff
    /// has grown.
    pub reconnect_delay_ms: AtomicU64,
    /// Whether a network source is connected now; finite sources report `true` while reading.
    pub connected: AtomicBool,
    bad_record_log: RateLimit,
    reconnect_log: RateLimit,
}

impl Default for SourceMetrics {
    fn default() -> SourceMetrics {
        SourceMetrics {
            events: Counter::default(),
            bytes: Counter::default(),
            bad_records: ReasonCounters::new(BAD_RECORD_REASONS),
            skipped: ReasonCounters::new(SKIP_REASONS),
            reconnects: Counter::default(),
            slow_consumer_disconnects: Counter::default(),
            abandoned_bytes: Counter::default(),
            queued_bytes: AtomicI64::new(0),
            reconnect_delay_ms: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            bad_record_log: RateLimit::default(),
            reconnect_log: RateLimit::default(),
        }
    }
}

/// The channel end a source sends into. The pipeline wraps a bounded channel and a wake-up of
/// the dataflow (timely's `SyncActivator`); tests use [`SourceOutput::channel`].
#[derive(Clone)]
pub struct SourceOutput {
    // Field order matters: the sender must be dropped before the guard wakes the reader.
    tx: mpsc::Sender<SourceBatch>,
    budget: ByteBudget,
    wake: Arc<dyn Fn() + Send + Sync>,
    _closed: Arc<WakeOnDrop>,
}

/// The bytes the channel may hold, over every source: a batch takes its bytes before it is
/// queued (a batch larger than the whole budget takes all of it, so it waits for an empty
/// channel rather than for ever) and gives them back when the dataflow has taken it.
#[derive(Clone, Debug)]
struct ByteBudget {
    permits: Arc<Semaphore>,
    max: u32,
}

impl ByteBudget {
    fn new(max_bytes: u64) -> ByteBudget {
        let max = u32::try_from(max_bytes.max(1)).unwrap_or(u32::MAX);
        ByteBudget {
            permits: Arc::new(Semaphore::new(max as usize)),
            max,
        }
    }
}

/// Wakes the reader once the last clone of a [`SourceOutput`] is gone, so it sees the channel
/// closed however the source ended (returned, failed, or a clone held by a reader thread went
/// last). Without it the dataflow could sleep forever after its last source finished.
struct WakeOnDrop(Arc<dyn Fn() + Send + Sync>);

impl Drop for WakeOnDrop {
    fn drop(&mut self) {
        (self.0)();
    }
}

impl fmt::Debug for SourceOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceOutput").finish_non_exhaustive()
    }
}

impl SourceOutput {
    /// `wake` is called after every batch is queued, and once more when the last clone of
    /// this output is dropped.
    /// The channel holds at most [`DEFAULT_CHANNEL_BYTES`] (see [`SourceOutput::max_bytes`]).
    pub fn new(tx: mpsc::Sender<SourceBatch>, wake: Arc<dyn Fn() + Send + Sync>) -> SourceOutput {
        SourceOutput {
            tx,
            budget: ByteBudget::new(DEFAULT_CHANNEL_BYTES),
            _closed: Arc::new(WakeOnDrop(wake.clone())),
            wake,
        }
    }

    /// Caps the bytes queued in the channel, over every source, at `max_bytes` (at most
    /// 4 GiB): sources wait for room as they wait for a free slot.
    pub fn max_bytes(mut self, max_bytes: u64) -> SourceOutput {
        self.budget = ByteBudget::new(max_bytes);
        self
    }

    /// The bytes queued in the channel now, over every source.
    pub fn queued_bytes(&self) -> u64 {
        u64::from(self.budget.max) - self.budget.permits.available_permits() as u64
    }

    /// A bounded channel with nothing to wake: for tests and for consumers that poll.
    pub fn channel(capacity: usize) -> (SourceOutput, mpsc::Receiver<SourceBatch>) {
        let (tx, rx) = mpsc::channel(capacity);
        (SourceOutput::new(tx, Arc::new(|| {})), rx)
    }
}

/// The pipeline has stopped taking batches; the source should return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the pipeline stopped taking batches")]
pub struct PipelineClosed;

/// Everything a running source needs from the pipeline.
#[derive(Clone, Debug)]
pub struct SourceContext {
    pub name: Arc<str>,
    pub metrics: Arc<SourceMetrics>,
    /// Cancelled on Ctrl-C / SIGTERM and when the source is removed by a reload.
    pub shutdown: CancellationToken,
    /// Where a restored checkpoint says this source had read to: a source that can rewind
    /// resumes there if it still reads the same thing.
    pub resume: Option<SourcePosition>,
    output: SourceOutput,
}

impl SourceContext {
    pub fn new(
        name: impl Into<Arc<str>>,
        output: SourceOutput,
        shutdown: CancellationToken,
    ) -> Self {
        SourceContext {
            name: name.into(),
            metrics: Arc::new(SourceMetrics::default()),
            shutdown,
            resume: None,
            output,
        }
    }

    /// The context of a source resuming at `position` (see [`SourceContext::resume`]).
    pub fn resuming(mut self, position: Option<SourcePosition>) -> Self {
        self.resume = position;
        self
    }

    /// The bytes a source collects into one batch at most before sending it: a quarter of
    /// the channel's byte budget, at most [`MAX_BATCH_BYTES`] (a single larger record goes
    /// alone).
    pub fn max_batch_bytes(&self) -> usize {
        MAX_BATCH_BYTES
            .min(self.output.budget.max as usize / 4)
            .max(1)
    }

    /// Queues a batch of events, waiting while the channel is full (backpressure reaches the
    /// socket or file this way). Empty batches are not sent.
    pub async fn send(&self, events: Vec<Event>, received_at: i64) -> Result<(), PipelineClosed> {
        self.send_read_to(events, received_at, None).await
    }

    /// [`SourceContext::send`] for a source that can rewind: `position` is where it has read
    /// to once these events are in.
    pub async fn send_read_to(
        &self,
        events: Vec<Event>,
        received_at: i64,
        position: Option<SourcePosition>,
    ) -> Result<(), PipelineClosed> {
        let bytes = events.iter().map(Event::approx_bytes).sum();
        self.send_batch(events, received_at, position, bytes).await
    }

    /// [`SourceContext::send_read_to`] for events that keep `bytes` of received frames alive
    /// (views into them): the channel's byte budget counts those.
    pub async fn send_holding(
        &self,
        events: Vec<Event>,
        received_at: i64,
        position: Option<SourcePosition>,
        bytes: usize,
    ) -> Result<(), PipelineClosed> {
        self.send_batch(events, received_at, position, bytes).await
    }

    async fn send_batch(
        &self,
        events: Vec<Event>,
        received_at: i64,
        position: Option<SourcePosition>,
        bytes: usize,
    ) -> Result<(), PipelineClosed> {
        if events.is_empty() {
            return Ok(());
        }
        let count = events.len() as u64;
        let budget = &self.output.budget;
        let share = u32::try_from(bytes)
            .unwrap_or(u32::MAX)
            .clamp(1, budget.max);
        let permit = budget
            .permits
            .clone()
            .acquire_many_owned(share)
            .await
            .map_err(|_| PipelineClosed)?;
        self.metrics
            .queued_bytes
            .fetch_add(i64::from(share), Ordering::Relaxed);
        let batch = SourceBatch {
            source: self.name.clone(),
            events,
            received_at,
            position,
            bytes,
            _queued: Queued {
                _permit: permit,
                bytes: i64::from(share),
                metrics: self.metrics.clone(),
            },
        };
        self.output
            .tx
            .send(batch)
            .await
            .map_err(|_| PipelineClosed)?;
        self.metrics.events.add(count);
        (self.output.wake)();
        Ok(())
    }

    /// Counts a record that could not be decoded and warns (rate-limited) with where it was:
    /// a file offset, a connection and message number.
    pub fn bad_record(&self, location: &dyn fmt::Display, error: &DecodeError) {
        self.bad_record_reason(location, error.reason(), error);
    }

    /// Like [`bad_record`](Self::bad_record) for problems found outside the decoder (framing,
    /// JSON), with one of [`BAD_RECORD_REASONS`].
    pub fn bad_record_reason(
        &self,
        location: &dyn fmt::Display,
        reason: &'static str,
        error: &dyn fmt::Display,
    ) {
        self.metrics.bad_records.incr(reason);
        if let Some(held_back) = self.metrics.bad_record_log.check() {
            warn!(
                source = %self.name,
                at = %location,
                reason,
                held_back,
                "Skipped a bad record: {error}."
            );
        }
    }

    /// Counts a record that decoded but carries nothing to store.
    pub fn skipped(&self, reason: &'static str) {
        self.metrics.skipped.incr(reason);
    }

    /// Counts and logs a lost connection that will be retried after `delay`.
    /// Rate-limited like bad records: a server that fails every attempt cannot flood the log
    /// (the `reconnects` counter still counts every one).
    pub fn reconnecting(&self, url: &str, error: &dyn fmt::Display, delay: Duration) {
        self.metrics.connected.store(false, Ordering::Relaxed);
        self.metrics.reconnects.incr();
        self.metrics.reconnect_delay_ms.store(
            u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        if let Some(held_back) = self.metrics.reconnect_log.check() {
            warn!(
                source = %self.name,
                url,
                retry_in = ?delay,
                held_back,
                "Connection failed, retrying: {error}."
            );
        }
    }

    /// Counts and logs a disconnect for consuming too slowly (WebSocket close code 1008).
    pub fn slow_consumer_disconnect(&self, url: &str, reason: &str) {
        self.metrics.slow_consumer_disconnects.incr();
        warn!(
            source = %self.name,
            url,
            reason,
            "Disconnected as a slow consumer: the Traffic Controller closed the stream with 1008. \
             Add instances with the same subscription id or reduce downstream load."
        );
    }

    pub fn set_connected(&self, connected: bool) {
        self.metrics.connected.store(connected, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reader_is_woken_when_the_last_output_is_dropped_and_not_before() {
        use std::sync::atomic::AtomicUsize;
        let wakes = Arc::new(AtomicUsize::new(0));
        let counter = wakes.clone();
        let (tx, mut rx) = mpsc::channel(1);
        let output = SourceOutput::new(
            tx,
            Arc::new(move || {
                counter.fetch_add(1, Ordering::SeqCst);
            }),
        );
        let clone = output.clone();
        drop(output);
        assert_eq!(
            wakes.load(Ordering::SeqCst),
            0,
            "a clone still holds the channel"
        );
        drop(clone);
        assert_eq!(wakes.load(Ordering::SeqCst), 1);
        // By the time of the wake-up the channel is closed.
        assert!(matches!(
            rx.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
    }

    #[tokio::test]
    async fn send_counts_events_and_skips_empty_batches() {
        let (output, mut rx) = SourceOutput::channel(4);
        let ctx = SourceContext::new("test", output, CancellationToken::new());
        ctx.send(Vec::new(), 1).await.expect("open");
        assert!(rx.try_recv().is_err());
        assert_eq!(ctx.metrics.events.get(), 0);
        drop(rx);
        assert_eq!(ctx.send(Vec::new(), 1).await, Ok(()));
    }
}
