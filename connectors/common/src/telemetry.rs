//! Counters and rate-limited warnings.
//!
//! Every noteworthy event is one method that both logs and bumps its counter, so nothing is
//! dropped, retried or reconnected without being counted. Counters are plain atomics so the
//! hot path pays one relaxed add; the status line and the admin endpoint read them.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sluice_model::records::StreamName;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn incr(&self) {
        self.add(1);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counts per reason, for a closed set of reasons known at compile time (the reasons of
/// `DecodeError` and friends). Unknown reasons land in `other` rather than being lost.
#[derive(Debug)]
pub struct ReasonCounters {
    reasons: &'static [&'static str],
    counts: Box<[Counter]>,
    other: Counter,
}

impl ReasonCounters {
    pub fn new(reasons: &'static [&'static str]) -> ReasonCounters {
        ReasonCounters {
            reasons,
            counts: reasons.iter().map(|_| Counter::default()).collect(),
            other: Counter::default(),
        }
    }

    pub fn incr(&self, reason: &str) {
        match self.reasons.iter().position(|r| *r == reason) {
            Some(i) => self.counts[i].incr(),
            None => self.other.incr(),
        }
    }

    pub fn get(&self, reason: &str) -> u64 {
        match self.reasons.iter().position(|r| *r == reason) {
            Some(i) => self.counts[i].get(),
            None => 0,
        }
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().map(Counter::get).sum::<u64>() + self.other.get()
    }

    /// `(reason, count)` for every reason seen at least once.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let mut out: Vec<_> = self
            .reasons
            .iter()
            .zip(self.counts.iter())
            .map(|(r, c)| (*r, c.get()))
            .filter(|(_, c)| *c > 0)
            .collect();
        if self.other.get() > 0 {
            out.push(("other", self.other.get()));
        }
        out
    }
}

/// Lets at most `burst` warnings through per `period` and says how many it held back, so a
/// flood of bad input cannot flood the log (or slow the pipeline down by logging).
#[derive(Debug)]
pub struct RateLimit {
    period: Duration,
    burst: u32,
    state: Mutex<RateLimitState>,
}

#[derive(Debug)]
struct RateLimitState {
    window_start: Instant,
    emitted: u32,
    suppressed: u64,
}

impl RateLimit {
    pub fn new(burst: u32, period: Duration) -> RateLimit {
        RateLimit {
            period,
            burst,
            state: Mutex::new(RateLimitState {
                window_start: Instant::now(),
                emitted: 0,
                suppressed: 0,
            }),
        }
    }

    /// `Some(n)` when this warning may be logged, `n` being how many were held back since the
    /// last one that was; `None` when it must be held back.
    pub fn check(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if now.duration_since(state.window_start) >= self.period {
            state.window_start = now;
            state.emitted = 0;
        }
        if state.emitted < self.burst {
            state.emitted += 1;
            Some(std::mem::take(&mut state.suppressed))
        } else {
            state.suppressed += 1;
            None
        }
    }
}

impl Default for RateLimit {
    /// Ten warnings every ten seconds.
    fn default() -> RateLimit {
        RateLimit::new(10, Duration::from_secs(10))
    }
}

/// A sink's counters. Shared with the status line and the admin endpoint.
#[derive(Debug, Default)]
pub struct SinkMetrics {
    /// Records written, per stream (indexed like [`StreamName::ALL`]).
    written: [Counter; StreamName::ALL.len()],
    /// Write attempts that failed and will be retried.
    pub retries: Counter,
    /// Records given up on (non-retriable errors, `when_full = "drop_newest"`, shutdown).
    pub dropped: Counter,
    /// Records received and not yet written.
    pub pending: AtomicI64,
    /// Records the store refused for good and the sink set aside (Elasticsearch's
    /// dead-letter file).
    pub dead_lettered: Counter,
    /// Bytes of corrupt frames a disk buffer's reader skipped to resynchronise on the next
    /// intact frame.
    pub buffer_skipped_bytes: Counter,
    /// Records in the sink's buffer (a disk buffer: not yet acknowledged).
    pub buffered_records: AtomicI64,
    /// Bytes in the sink's buffer (a disk buffer: not yet acknowledged; a memory buffer: as
    /// `Records::approx_bytes` counts them).
    pub buffered_bytes: AtomicI64,
    /// When the pending records arrived, oldest first: the age of the oldest one.
    arrivals: Mutex<Arrivals>,
    /// Why the store is unavailable: the error of the last failed attempt, cleared by a
    /// successful one. `None` until an attempt fails.
    unavailable: Mutex<Option<String>>,
    /// Records handed to the sink so far, committed by it so far (stored or given up on, all
    /// of them up to the commit), and put on disk by a disk buffer so far: what a checkpoint
    /// waits for (SPEC §9).
    received_total: Counter,
    committed_total: AtomicU64,
    on_disk_total: Counter,
    /// The sink's task has ended: it settles nothing more.
    finished: std::sync::atomic::AtomicBool,
    /// Rows (SQL sinks) or indices (Elasticsearch) retention deleted, per table or index
    /// pattern, in the order first seen (SPEC §10).
    retention_deleted: Mutex<Vec<(String, u64)>>,
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

    fn settled(&mut self, n: u64) {
        self.take(n, End::Oldest);
    }

    /// Takes back the newest `n` (a send that failed).
    fn unsent(&mut self, n: u64) {
        self.take(n, End::Newest);
    }

    /// Takes `n` records off the runs at one end, dropping the runs it empties.
    fn take(&mut self, mut n: u64, end: End) {
        while n > 0 {
            let run = match end {
                End::Oldest => self.0.front_mut(),
                End::Newest => self.0.back_mut(),
            };
            let Some(run) = run else {
                return;
            };
            let taken = run.0.min(n);
            run.0 -= taken;
            n -= taken;
            if run.0 == 0 {
                match end {
                    End::Oldest => self.0.pop_front(),
                    End::Newest => self.0.pop_back(),
                };
            }
        }
    }
}

/// Which end of [`Arrivals`] records are taken from.
#[derive(Clone, Copy, Debug)]
enum End {
    Oldest,
    Newest,
}

impl SinkMetrics {
    /// Counts records as written (and no longer pending).
    pub fn written(&self, stream: StreamName, n: usize) {
        self.written[stream.index()].add(n as u64);
        self.settle(n);
    }

    /// Counts records as received by the sink's input (pending until settled).
    pub fn received(&self, n: usize) {
        self.received_total.add(n as u64);
        self.pending.fetch_add(n as i64, Ordering::Relaxed);
        self.arrivals().arrived(n as u64, Instant::now());
    }

    /// Counts records a disk buffer has put on disk: a crash of the process no longer loses
    /// them.
    pub fn on_disk(&self, n: usize) {
        self.on_disk_total.add(n as u64);
    }

    /// The sink's task has ended (whatever the outcome): nothing it was handed will be
    /// settled from now on.
    pub fn finish(&self) {
        self.finished.store(true, Ordering::Release);
    }

    pub fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    /// Records handed to the sink so far.
    pub fn received_total(&self) -> u64 {
        self.received_total.get()
    }

    /// The sink committed: the first `pulled` records it took from its buffer are stored or
    /// given up on (and counted).
    pub fn committed(&self, pulled: u64) {
        self.committed_total.fetch_max(pulled, Ordering::Relaxed);
    }

    /// Of the records handed to the sink so far, how many a crash of the process can no
    /// longer lose: the sink has committed them, or its disk buffer has them on disk. Both
    /// count in the order the records were handed over.
    pub fn safe_total(&self) -> u64 {
        self.committed_total
            .load(Ordering::Relaxed)
            .max(self.on_disk_total.get())
    }

    /// Takes back `n` records counted as received whose send failed (the sink had stopped):
    /// they are counted as dropped instead.
    pub fn unsent(&self, n: usize) {
        self.pending.fetch_sub(n as i64, Ordering::Relaxed);
        self.arrivals().unsent(n as u64);
        self.dropped.add(n as u64);
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

    /// Counts `n` rows of `table` (or indices of a pattern) deleted by retention.
    pub fn retention_deleted(&self, table: &str, n: u64) {
        let mut deleted = self
            .retention_deleted
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match deleted.iter_mut().find(|(t, _)| t == table) {
            Some((_, count)) => *count += n,
            None => deleted.push((table.to_owned(), n)),
        }
    }

    /// What retention deleted so far, per table (or index pattern).
    pub fn retention_deleted_by_table(&self) -> Vec<(String, u64)> {
        self.retention_deleted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Everything retention deleted so far.
    pub fn retention_deleted_total(&self) -> u64 {
        self.retention_deleted_by_table()
            .iter()
            .map(|(_, n)| n)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_holds_back_past_the_burst_and_reports_how_many() {
        let limit = RateLimit::new(2, Duration::from_secs(3600));
        assert_eq!(limit.check(), Some(0));
        assert_eq!(limit.check(), Some(0));
        assert_eq!(limit.check(), None);
        assert_eq!(limit.check(), None);
        let mut state = limit.state.lock().expect("not poisoned");
        state.window_start -= Duration::from_secs(3601);
        drop(state);
        assert_eq!(limit.check(), Some(2));
    }

    #[test]
    fn reason_counters_count_unknown_reasons_as_other() {
        let counters = ReasonCounters::new(&["truncated", "malformed"]);
        counters.incr("truncated");
        counters.incr("truncated");
        counters.incr("nonsense");
        assert_eq!(counters.get("truncated"), 2);
        assert_eq!(counters.total(), 3);
        assert_eq!(counters.snapshot(), vec![("truncated", 2), ("other", 1)]);
    }

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
