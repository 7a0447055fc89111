//! Event time, the watermark and lateness (SPEC §2), decided once, where records enter.
//!
//! The graph's timely timestamp is the watermark in whole seconds. Records enter on one worker
//! in arrival order: each is classified against the watermark of the records before it, then
//! moves it. A batch is sent at the (floored) watermark from before its first record, so every
//! non-late record in it belongs to a window ending after the batch's time — which is why a
//! window ending at `E` may close once the frontier reaches `E`. Deciding lateness in arrival
//! order at one place is what makes results identical for any number of workers.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_model::records::minute_of;
use sluice_model::{Event, EventType};

/// An event as the graph carries it: with its event time resolved and its lateness decided.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stamped {
    pub event: Event,
    /// ns since the epoch: the event's own time, or when it was received (SPEC §2).
    pub event_time: i64,
    /// Its minute window had closed when it arrived: it reaches raw streams, not rollups.
    pub late: bool,
}

/// What a [`Watermark`] is made of, as a checkpoint saves it (SPEC §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatermarkState {
    pub lateness_ns: i64,
    pub max_event_time: Option<i64>,
    pub floor: Option<i64>,
}

/// The greatest event time seen so far, less the allowed lateness.
#[derive(Clone, Debug)]
pub struct Watermark {
    lateness_ns: i64,
    max_event_time: Option<i64>,
    /// The watermark when the lateness last changed: it never moves back, because the
    /// windows it closed are gone (a live reload may allow more lateness than before).
    floor: Option<i64>,
}

impl Watermark {
    pub fn new(allowed_lateness: Duration) -> Watermark {
        Watermark {
            lateness_ns: i64::try_from(allowed_lateness.as_nanos()).unwrap_or(i64::MAX),
            max_event_time: None,
            floor: None,
        }
    }

    /// What to save in a checkpoint.
    pub fn state(&self) -> WatermarkState {
        WatermarkState {
            lateness_ns: self.lateness_ns,
            max_event_time: self.max_event_time,
            floor: self.floor,
        }
    }

    /// The watermark a checkpoint saved, going on with `allowed_lateness` (the run's config):
    /// where that differs from the saved lateness it changes as a live reload would, so the
    /// watermark never moves back.
    pub fn restored(state: WatermarkState, allowed_lateness: Duration) -> Watermark {
        let mut watermark = Watermark {
            lateness_ns: state.lateness_ns,
            max_event_time: state.max_event_time,
            floor: state.floor,
        };
        let lateness = Watermark::new(allowed_lateness).lateness_ns;
        if lateness != watermark.lateness_ns {
            watermark.set_allowed_lateness(allowed_lateness);
        }
        watermark
    }

    /// Changes the allowed lateness from now on. Less lateness moves the watermark forward at
    /// once; more lets it wait longer for the next records, but never moves it back.
    pub fn set_allowed_lateness(&mut self, allowed_lateness: Duration) {
        self.floor = self.current();
        self.lateness_ns = i64::try_from(allowed_lateness.as_nanos()).unwrap_or(i64::MAX);
    }

    /// The watermark in ns since the epoch; `None` before the first record.
    pub fn current(&self) -> Option<i64> {
        let moving = self
            .max_event_time
            .map(|t| t.saturating_sub(self.lateness_ns));
        moving.max(self.floor)
    }

    /// Whether a record with this event time is late now, i.e. its minute window has closed.
    pub fn is_late(&self, event_time: i64) -> bool {
        self.current()
            .is_some_and(|w| window_end_ns(event_time) <= w)
    }

    /// Classifies a record, then lets it move the watermark. Returns whether it was late.
    pub fn observe(&mut self, event_time: i64) -> bool {
        let late = self.is_late(event_time);
        if self.max_event_time.is_none_or(|max| event_time > max) {
            self.max_event_time = Some(event_time);
        }
        late
    }

    /// Raises the watermark to at least `watermark` (another process's, SPEC §12), as if
    /// records up to it had been read here; never moves it back. Returns whether it moved.
    pub fn follow(&mut self, watermark: i64) -> bool {
        if self.current().is_some_and(|current| current >= watermark) {
            return false;
        }
        self.floor = Some(watermark);
        true
    }

    /// The timely time for data sent now: the watermark in whole seconds, floored; 0 before
    /// the first record or before the epoch.
    pub fn epoch(&self) -> u64 {
        self.current().map_or(0, |w| {
            u64::try_from(w.div_euclid(1_000_000_000)).unwrap_or(0)
        })
    }
}

/// The end of the minute window an event time falls in, ns.
pub fn window_end_ns(event_time: i64) -> i64 {
    (minute_of(event_time) + 60).saturating_mul(1_000_000_000)
}

/// Late records per event kind, as the input counts them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LateCounts {
    counts: [u64; 6],
}

impl LateCounts {
    fn slot(kind: EventType) -> usize {
        EventType::ALL.iter().position(|k| *k == kind).unwrap_or(0)
    }

    pub fn add(&mut self, kind: EventType) {
        self.counts[Self::slot(kind)] += 1;
    }

    pub fn get(&self, kind: EventType) -> u64 {
        self.counts[Self::slot(kind)]
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// Resolves event times and lateness for one batch from a source, in order.
///
/// Returns the timely time the batch must be sent at (the watermark before it).
pub fn stamp_batch(
    watermark: &mut Watermark,
    events: Vec<Event>,
    received_at: i64,
    out: &mut Vec<Stamped>,
    late: &mut LateCounts,
) -> u64 {
    let time = watermark.epoch();
    out.reserve(events.len());
    for mut event in events {
        // An envelope without a timestamp is stamped with its arrival, so raw rows keyed by
        // `ts` (container metrics, errors) get the same time the rollups use (SPEC §2).
        if event.timestamp == 0 {
            event.timestamp = received_at;
        }
        let event_time = event.event_time().unwrap_or(received_at);
        let is_late = watermark.observe(event_time);
        if is_late {
            late.add(event.event_type());
        }
        out.push(Stamped {
            event,
            event_time,
            late: is_late,
        });
    }
    time
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000_000_000;

    #[test]
    fn following_another_watermark_raises_it_and_never_lowers_it() {
        let mut watermark = Watermark::new(Duration::from_secs(60));
        assert!(watermark.follow(5 * MIN), "from nothing");
        assert_eq!(watermark.current(), Some(5 * MIN));
        assert!(
            watermark.is_late(4 * MIN),
            "its minutes are closed here too"
        );
        assert!(!watermark.follow(3 * MIN), "never back");
        assert_eq!(watermark.current(), Some(5 * MIN));
        // Records of its own move it on from there.
        watermark.observe(10 * MIN);
        assert_eq!(watermark.current(), Some(9 * MIN));
        assert!(!watermark.follow(8 * MIN));
        assert_eq!(watermark.current(), Some(9 * MIN));
    }

    #[test]
    fn a_restored_watermark_goes_on_as_the_saved_one_would() {
        let mut saved = Watermark::new(Duration::from_secs(60));
        saved.observe(10 * MIN);
        let mut restored = Watermark::restored(saved.state(), Duration::from_secs(60));
        assert_eq!(restored.current(), saved.current());
        assert_eq!(
            restored.observe(8 * MIN),
            saved.observe(8 * MIN),
            "late, as before"
        );
        // More lateness at restart never moves it back.
        let wider = Watermark::restored(saved.state(), Duration::from_secs(300));
        assert_eq!(wider.current(), Some(9 * MIN));
    }

    #[test]
    fn a_lateness_change_never_moves_the_watermark_back() {
        let mut watermark = Watermark::new(Duration::from_secs(60));
        watermark.observe(10 * MIN);
        assert_eq!(watermark.current(), Some(9 * MIN));
        // More lateness: the watermark stays until new records pass it.
        watermark.set_allowed_lateness(Duration::from_secs(180));
        assert_eq!(watermark.current(), Some(9 * MIN));
        assert!(watermark.is_late(8 * MIN));
        watermark.observe(12 * MIN + 30_000_000_000);
        assert_eq!(watermark.current(), Some(9 * MIN + 30_000_000_000));
        watermark.observe(13 * MIN);
        assert_eq!(watermark.current(), Some(10 * MIN));
        // Less lateness: it jumps forward at once.
        watermark.set_allowed_lateness(Duration::from_secs(0));
        assert_eq!(watermark.current(), Some(13 * MIN));
        assert!(watermark.is_late(12 * MIN));
    }

    #[test]
    fn a_window_closes_once_the_watermark_reaches_its_end() {
        let mut watermark = Watermark::new(Duration::from_secs(60));
        assert!(!watermark.observe(10 * MIN + 5));
        assert_eq!(watermark.current(), Some(9 * MIN + 5));
        // Minute 8 ended at 9 * MIN, before the watermark: late. Minute 9 is still open.
        assert!(watermark.is_late(8 * MIN + 30));
        assert!(!watermark.is_late(9 * MIN));
        // Exactly at the end counts as closed.
        watermark.observe(11 * MIN);
        assert_eq!(watermark.current(), Some(10 * MIN));
        assert!(watermark.is_late(9 * MIN + 59_999_999_999));
        assert!(!watermark.is_late(10 * MIN));
    }

    #[test]
    fn the_watermark_never_moves_back_and_epochs_are_whole_seconds() {
        let mut watermark = Watermark::new(Duration::from_secs(60));
        assert_eq!(watermark.epoch(), 0);
        watermark.observe(5 * MIN + 1_500_000_000);
        watermark.observe(2 * MIN);
        assert_eq!(watermark.current(), Some(4 * MIN + 1_500_000_000));
        assert_eq!(watermark.epoch(), 241);
    }
}
