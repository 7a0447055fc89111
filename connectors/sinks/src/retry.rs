//! Waiting out a store that is down: capped backoff between attempts, one error when the
//! outage starts and one line when it ends, and the decision to stop trying at shutdown.

use std::fmt::Display;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::SinkContext;
use sluice_common::backoff::Backoff;

/// How a sink stops early: at shutdown while its store is down.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The input is durable: what was not written stays in the disk buffer for the next run.
    LeftInBuffer,
    /// The records held in memory were given up (and counted as dropped).
    Abandoned { records: u64 },
}

impl Stop {
    /// How the sink's run ends: fine when the buffer keeps what was not written, the error
    /// `abandoned` makes of the number of records given up otherwise.
    pub(crate) fn end<E>(self, abandoned: impl FnOnce(u64) -> E) -> Result<(), E> {
        match self {
            Stop::LeftInBuffer => Ok(()),
            Stop::Abandoned { records } => Err(abandoned(records)),
        }
    }
}

/// A sink's error that waiting may fix (the store is down, busy or restarting).
pub(crate) trait Retriable: Display + Sync {
    fn is_retriable(&self) -> bool;
}

/// One per sink; `store` and `endpoint` name what is down in messages.
pub(crate) struct Retry {
    store: &'static str,
    endpoint: String,
    backoff: Backoff,
    shutdown_timeout: Duration,
    /// When shutdown was first seen while the store was failing.
    give_up_at: Option<Instant>,
    /// Failed attempts since the last success: the first is logged as an error, the rest
    /// at debug level (the sink's `retries` counter shows them).
    failures: u64,
}

impl Retry {
    pub(crate) fn new(store: &'static str, endpoint: &str, shutdown_timeout: Duration) -> Retry {
        Retry {
            store,
            endpoint: endpoint.to_owned(),
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(10)),
            shutdown_timeout,
            give_up_at: None,
            failures: 0,
        }
    }

    /// After a failed attempt that may succeed later: `Some(stop)` if the sink should stop
    /// (shutdown), or `None` after waiting for the next attempt. `unwritten` is how many
    /// records the failed attempt holds.
    pub(crate) async fn wait(
        &mut self,
        error: &(dyn Display + Sync),
        unwritten: usize,
        ctx: &mut SinkContext,
    ) -> Option<Stop> {
        self.failures += 1;
        ctx.metrics.retries.incr();
        ctx.metrics.set_unavailable(error);
        if self.failures == 1 {
            error!(sink = %ctx.name, endpoint = %self.endpoint, %error,
                "{} is unavailable; retrying with backoff while the buffer holds the data.",
                self.store);
        } else {
            debug!(sink = %ctx.name, %error, attempt = self.failures,
                "{} is still unavailable.", self.store);
        }
        let now = Instant::now();
        if ctx.shutdown.is_cancelled() {
            if ctx.input.is_durable() {
                warn!(sink = %ctx.name, endpoint = %self.endpoint,
                    "Stopping while {} is unavailable; undelivered records stay in the disk buffer for the next run.",
                    self.store);
                return Some(Stop::LeftInBuffer);
            }
            let give_up_at = *self.give_up_at.get_or_insert(now + self.shutdown_timeout);
            if now >= give_up_at {
                let mut abandoned = unwritten as u64;
                ctx.metrics.dropped(unwritten);
                while let Some(records) = ctx.input.try_recv() {
                    abandoned += records.len() as u64;
                    ctx.metrics.dropped(records.len());
                }
                return Some(Stop::Abandoned { records: abandoned });
            }
        }
        let delay = self.backoff.next_delay();
        let wake_at = match self.give_up_at {
            Some(give_up_at) => (now + delay).min(give_up_at),
            None => now + delay,
        };
        tokio::select! {
            () = tokio::time::sleep_until(wake_at) => {}
            // Shutdown shortens the wait: the decision above is taken again at once.
            () = ctx.shutdown.cancelled(), if self.give_up_at.is_none() => {}
        }
        None
    }

    /// After a failed attempt: an error waiting cannot fix is returned, and the `unwritten`
    /// records it holds are counted as dropped; any other is waited out as [`Retry::wait`]
    /// does.
    pub(crate) async fn wait_or_fail<E: Retriable>(
        &mut self,
        error: E,
        unwritten: usize,
        ctx: &mut SinkContext,
    ) -> Result<Option<Stop>, E> {
        if !error.is_retriable() {
            ctx.metrics.dropped(unwritten);
            return Err(error);
        }
        Ok(self.wait(&error, unwritten, ctx).await)
    }

    /// After a successful attempt.
    pub(crate) fn recovered(&mut self, ctx: &SinkContext) {
        ctx.metrics.set_available();
        if self.failures > 0 {
            info!(sink = %ctx.name, endpoint = %self.endpoint, attempts = self.failures,
                "{} is available again.", self.store);
        }
        self.failures = 0;
        self.backoff.reset();
        self.give_up_at = None;
    }
}
