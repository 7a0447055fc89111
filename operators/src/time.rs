//! The graph's timely time. Its first coordinate is the watermark in whole seconds: a window
//! ending at `E` closes once every time of the frontier has a watermark of at least `E`. Its
//! second is the checkpoint epoch (SPEC §9): data entering between two checkpoints carries
//! the later one's epoch, so once every time of the frontier has a greater epoch, every
//! record of that epoch has been seen and its checkpoint is a consistent cut.
//!
//! The pipeline runs on [`Time`], ordered coordinate by coordinate (a product order), so that
//! several ingest points (the processes of a cluster) each move their own watermark and epoch
//! and the frontier still answers both questions. (timely's own `Product` is ordered so too,
//! but cannot be the time of a top-level dataflow.) Graphs without checkpoints (tests,
//! benchmarks) may run on plain `u64` watermarks, whose epoch is always 0.

use serde::{Deserialize, Serialize};
use timely::order::PartialOrder;
use timely::progress::Timestamp;
use timely::progress::timestamp::{PathSummary, Refines};

/// The pipeline's timely time: the watermark in whole seconds and the checkpoint epoch.
/// `a <= b` when both coordinates are; `Ord` (lexicographic) only sorts.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct Time {
    pub watermark: u64,
    pub epoch: u64,
}

impl PartialOrder for Time {
    fn less_equal(&self, other: &Time) -> bool {
        self.watermark <= other.watermark && self.epoch <= other.epoch
    }
}

impl Timestamp for Time {
    /// Operators of the graph do not advance time: the only summary is "no change", and
    /// summaries add coordinate-wise.
    type Summary = Time;

    fn minimum() -> Time {
        Time::default()
    }
}

impl PathSummary<Time> for Time {
    fn results_in(&self, src: &Time) -> Option<Time> {
        Some(Time {
            watermark: src.watermark.checked_add(self.watermark)?,
            epoch: src.epoch.checked_add(self.epoch)?,
        })
    }

    fn followed_by(&self, other: &Time) -> Option<Time> {
        other.results_in(self)
    }
}

impl Refines<()> for Time {
    fn to_inner(_: ()) -> Time {
        Time::default()
    }

    fn to_outer(self) {}

    fn summarize(_: Time) {}
}

/// Differential dataflow (the directory, SPEC §11) needs the least upper bound and the
/// greatest lower bound of two times: coordinate by coordinate, like the order.
impl differential_dataflow::lattice::Lattice for Time {
    fn join(&self, other: &Time) -> Time {
        Time {
            watermark: self.watermark.max(other.watermark),
            epoch: self.epoch.max(other.epoch),
        }
    }

    fn meet(&self, other: &Time) -> Time {
        Time {
            watermark: self.watermark.min(other.watermark),
            epoch: self.epoch.min(other.epoch),
        }
    }
}

/// A time of the graph: a watermark (whole seconds) and a checkpoint epoch.
pub trait GraphTime: Timestamp + Copy + differential_dataflow::lattice::Lattice {
    /// The time of data entering at `watermark` seconds in `epoch`.
    fn at(watermark: u64, epoch: u64) -> Self;
    /// Its watermark, in whole seconds.
    fn watermark(&self) -> u64;
    /// Its checkpoint epoch.
    fn epoch(&self) -> u64;
}

impl GraphTime for u64 {
    fn at(watermark: u64, _epoch: u64) -> u64 {
        watermark
    }

    fn watermark(&self) -> u64 {
        *self
    }

    fn epoch(&self) -> u64 {
        0
    }
}

impl GraphTime for Time {
    fn at(watermark: u64, epoch: u64) -> Time {
        Time { watermark, epoch }
    }

    fn watermark(&self) -> u64 {
        self.watermark
    }

    fn epoch(&self) -> u64 {
        self.epoch
    }
}

/// The least time at or after every time of a message's stamp: where what is made of the
/// message as a whole (not of one of its times) is emitted. `None` for an empty stamp.
pub fn stamp_join<'a, T: GraphTime + 'a>(mut times: impl Iterator<Item = &'a T>) -> Option<T> {
    let first = *times.next()?;
    Some(times.fold(first, |joined, time| {
        differential_dataflow::lattice::Lattice::join(&joined, time)
    }))
}

/// What a frontier says: the least watermark and the least epoch any of its times has, or
/// `None` when it is empty (the input has ended).
pub fn frontier_bounds<T: GraphTime>(frontier: &[T]) -> Option<(u64, u64)> {
    let watermark = frontier.iter().map(GraphTime::watermark).min()?;
    let epoch = frontier.iter().map(GraphTime::epoch).min()?;
    Some((watermark, epoch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frontier_bounds_both_coordinates_separately() {
        let frontier = [Time::at(10, 6), Time::at(20, 5)];
        assert_eq!(frontier_bounds(&frontier), Some((10, 5)));
        assert_eq!(frontier_bounds::<Time>(&[]), None);
        assert_eq!(frontier_bounds(&[42u64]), Some((42, 0)));
    }

    #[test]
    fn times_are_ordered_coordinate_by_coordinate() {
        assert!(Time::at(1, 1).less_equal(&Time::at(2, 1)));
        assert!(!Time::at(1, 2).less_equal(&Time::at(2, 1)));
        assert!(!Time::at(2, 1).less_equal(&Time::at(1, 2)));
        assert_eq!(
            Time::at(3, 4).results_in(&Time::default()),
            Some(Time::at(3, 4))
        );
    }
}
