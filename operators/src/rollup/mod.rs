//! Tumbling windows (the minute, and the extra widths of `pipeline.windows`) that close on
//! the frontier.
//!
//! [`Windowed`] is the operator (one per rollup kind and width); [`WindowAggregate`] says what
//! a window keeps and how it becomes a row. Each sample updates its window in amortised O(1);
//! a window is emitted provisionally at most every `flush_interval` while it changes, emitted
//! final once the frontier (the watermark, see [`crate::watermark`]) passes its end, and then
//! freed. Lateness is decided by the minute (SPEC §2) before samples get here: a sample whose
//! minute is open belongs to a window of any width that ends no earlier, so it is open too.

pub mod app;
pub mod platform;

use std::collections::BTreeMap;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use sluice_model::records::window_start;

/// How one kind of rollup aggregates.
pub trait WindowAggregate: 'static {
    type Sample: 'static;
    type Key: Hash + Eq + Clone + 'static;
    type State: Default + 'static;
    type Row: 'static;

    /// A sample's key and minute (epoch seconds): the window of any width it belongs to
    /// follows from the minute.
    fn window(sample: &Self::Sample) -> (Self::Key, i64);
    /// Adds a sample to its window's state.
    fn update(state: &mut Self::State, sample: Self::Sample);
    /// The row for a window of `width` seconds starting at `start` (epoch seconds) as it stands.
    fn row(
        key: &Self::Key,
        start: i64,
        width: u32,
        state: &Self::State,
        is_final: bool,
    ) -> Self::Row;
}

/// Shared settings and gauges of the rollup operators.
#[derive(Clone, Debug)]
pub struct WindowOptions {
    /// At most this often (ns) a changed open window is emitted provisionally. Read at every
    /// activation, so a live reload changes it from the next flush on.
    pub flush_interval: Arc<AtomicU64>,
    /// Set when the run is stopping on a signal: windows still open when the input ends are
    /// emitted provisional rather than final (SPEC §7).
    pub shutting_down: Arc<AtomicBool>,
    /// Open windows across all rollup operators and workers.
    pub open_windows: Arc<AtomicI64>,
    /// The window widths rolled up, in seconds ([`sluice_model::records::MINUTE`] is always among
    /// them): whole minutes that divide a day.
    pub windows: Vec<u32>,
}

struct Window<S> {
    state: S,
    dirty: bool,
}

/// The windowing operator; see the module doc.
pub trait Windowed<'scope, S> {
    /// Rolls samples up in tumbling windows of `width` seconds (a whole number of minutes).
    fn windowed<A: WindowAggregate<Sample = S>>(
        self,
        name: &str,
        width: u32,
        options: WindowOptions,
    ) -> Stream<'scope, u64, Vec<A::Row>>;
}

impl<'scope, S: 'static> Windowed<'scope, S> for Stream<'scope, u64, Vec<S>> {
    fn windowed<A: WindowAggregate<Sample = S>>(
        self,
        name: &str,
        width: u32,
        options: WindowOptions,
    ) -> Stream<'scope, u64, Vec<A::Row>> {
        let scope = self.scope();
        let span = i64::from(width);
        self.unary_frontier(Pipeline, name, move |_capability, info| {
            let activator = scope.activator_for(info.address);
            // Windows by start, so closing pops the oldest windows instead of scanning all.
            let mut windows: BTreeMap<i64, FxHashMap<A::Key, Window<A::State>>> = BTreeMap::new();
            let mut capability: Option<Capability<u64>> = None;
            let mut last_flush = Instant::now();
            move |(input, frontier), output| {
                input.for_each_stamp(|time, data| {
                    // Hold the least time of any data whose windows are open: rows are emitted
                    // under it, and it is downgraded as the frontier moves.
                    let earlier = time
                        .least()
                        .is_some_and(|t| capability.as_ref().is_none_or(|c| t < c.time()));
                    if earlier {
                        capability = time.retain_least(output.output_index());
                    }
                    for sample in data.flat_map(|batch| batch.drain(..)) {
                        let (key, minute) = A::window(&sample);
                        let window = windows
                            .entry(window_start(minute, width))
                            .or_default()
                            .entry(key)
                            .or_insert_with(|| {
                                options.open_windows.fetch_add(1, Ordering::Relaxed);
                                Window {
                                    state: A::State::default(),
                                    dirty: false,
                                }
                            });
                        A::update(&mut window.state, sample);
                        window.dirty = true;
                    }
                });

                let Some(held) = capability.as_ref() else {
                    return;
                };
                let frontier_time = frontier.frontier().first().copied();
                let mut session = output.session(held);
                // Close every window whose end the frontier has reached.
                let input_done = frontier_time.is_none();
                let is_final = !input_done || !options.shutting_down.load(Ordering::Relaxed);
                while let Some(entry) = windows.first_entry() {
                    let closes = frontier_time.is_none_or(|f| *entry.key() + span <= f as i64);
                    if !closes {
                        break;
                    }
                    let start = *entry.key();
                    let closed = entry.remove();
                    options
                        .open_windows
                        .fetch_sub(closed.len() as i64, Ordering::Relaxed);
                    for (key, window) in closed {
                        session.give(A::row(&key, start, width, &window.state, is_final));
                    }
                }
                // Rewrite changed open windows, at most once per flush interval.
                let now = Instant::now();
                let interval = Duration::from_nanos(options.flush_interval.load(Ordering::Relaxed));
                // An interval too large for an `Instant` means never.
                if last_flush
                    .checked_add(interval)
                    .is_some_and(|due| now >= due)
                {
                    for (start, keyed) in &mut windows {
                        for (key, window) in keyed.iter_mut().filter(|(_, w)| w.dirty) {
                            session.give(A::row(key, *start, width, &window.state, false));
                            window.dirty = false;
                        }
                    }
                    last_flush = now;
                }
                let next_flush = last_flush.checked_add(interval);
                drop(session);

                match frontier_time {
                    Some(f) if !windows.is_empty() => {
                        if let Some(held) = capability.as_mut()
                            && *held.time() < f
                        {
                            held.downgrade(&f);
                        }
                        if let Some(due) = next_flush {
                            activator.activate_after(due.saturating_duration_since(now));
                        }
                    }
                    _ => capability = None,
                }
            }
        })
    }
}
