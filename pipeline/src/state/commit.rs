//! Which checkpoints every process of a cluster has on disk (SPEC §9 across SPEC §12).
//!
//! Each process writes its own part of every epoch's checkpoint (its sources' positions, its
//! workers' windows, the rollup rows its workers made). A row may reach a store only once the
//! checkpoint that covers it is durable on *every* process: otherwise a restart, which
//! continues the whole cluster from the newest epoch all processes have, could write the row
//! again from older windows, smaller. So each process's writer says which epoch it has
//! written, a small dataflow of its own turns that into timely's frontier — its least time
//! over every process is one past the epoch the whole cluster has — and the writer releases
//! an epoch's rows once the frontier is past it.
//!
//! A process writes epoch `e + 1` only after releasing the rows of `e`, which needs every
//! process to have `e`: the processes' newest epochs never differ by more than one, and each
//! keeping its last two files always keeps the newest they all have.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use timely::scheduling::SyncActivator;

/// Shared by this process's checkpoint writer and the commit dataflow.
#[derive(Debug, Default)]
pub struct CommitGate {
    /// One past the newest epoch this process has written; 0 before the first.
    written: AtomicU64,
    /// This process's writer is done: it will write nothing more.
    finished: AtomicBool,
    /// The commit dataflow's frontier: one past the newest epoch every process has written
    /// (`u64::MAX` once every process is done).
    committed: AtomicU64,
    activator: Mutex<Option<SyncActivator>>,
}

impl CommitGate {
    /// The writer has `epoch` on disk.
    pub fn written(&self, epoch: u64) {
        self.written.fetch_max(epoch + 1, Ordering::AcqRel);
        self.wake();
    }

    /// The writer has written and released everything.
    pub fn finish(&self) {
        self.finished.store(true, Ordering::Release);
        self.wake();
    }

    /// Whether every process of the cluster has `epoch` on disk.
    pub fn is_committed(&self, epoch: u64) -> bool {
        self.committed.load(Ordering::Acquire) > epoch
    }

    /// The time the commit dataflow's input may advance to; `None` once the writer is done.
    pub(crate) fn bound(&self) -> Option<u64> {
        if self.finished.load(Ordering::Acquire) {
            None
        } else {
            Some(self.written.load(Ordering::Acquire))
        }
    }

    /// The commit dataflow's frontier moved.
    pub(crate) fn set_committed(&self, frontier: u64) {
        self.committed.store(frontier, Ordering::Release);
    }

    /// Where the writer's news goes: the commit dataflow's source on this process's leader.
    pub(crate) fn register(&self, activator: SyncActivator) {
        *self.activator.lock().unwrap_or_else(|e| e.into_inner()) = Some(activator);
        // Whatever was written before the source was there woke nobody.
        self.wake();
    }

    fn wake(&self) {
        if let Some(activator) = self
            .activator
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            // An error means the dataflow is gone (the run is failing).
            let _ = activator.activate();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_epoch_is_committed_once_the_frontier_is_past_it() {
        let gate = CommitGate::default();
        assert_eq!(gate.bound(), Some(0));
        gate.written(3);
        assert_eq!(gate.bound(), Some(4));
        assert!(!gate.is_committed(3));
        gate.set_committed(4);
        assert!(gate.is_committed(3));
        assert!(!gate.is_committed(4));
        gate.finish();
        assert_eq!(gate.bound(), None);
    }
}
