//! Counters and rate-limited warnings.
//!
//! Every noteworthy event is one method that both logs and bumps its counter, so nothing is
//! dropped, retried or reconnected without being counted. Counters are plain atomics so the
//! hot path pays one relaxed add; the status line and the admin endpoint read them.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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
}
