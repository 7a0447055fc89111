//! Writing checkpoints off the dataflow's threads, and releasing each epoch's rollup rows to
//! the sinks once its checkpoint is on disk (SPEC §9).
//!
//! The order, one checkpoint after the other on this thread, is what makes a restart
//! invisible in the stores:
//! 1. wait until the sinks have safe (stored, or in a disk buffer) every raw record the
//!    checkpoint covers, and every rollup row released after the checkpoint before it — a
//!    restart neither reads those records again nor re-emits those rows;
//! 2. write the checkpoint, which carries its epoch's rollup rows;
//! 3. hand those rows to the sinks. A crash before they are stored loses nothing: the
//!    restart sends the rows of the checkpoint it restores again, and a store never holds a
//!    row a restart could not rebuild (rows only follow the checkpoint that covers them).
//!
//! In a cluster (SPEC §12) each process writes its part of every epoch to a file of its own
//! and releases the epoch's rows only once every process has written it (see
//! [`super::commit`]); a process never skips an epoch there, so that all of them keep the
//! same ones.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use sluice_model::records::Records;
use tracing::{debug, error, warn};

use super::commit::CommitGate;
use super::file::{self, Checkpoint};
use crate::dataflow::LiveTap;
use crate::routing::{HandedOver, SinkRoutes};
use crate::telemetry::GraphMetrics;

/// A checkpoint assembled, and what the sinks had been handed when it was: the raw records it
/// covers are among those.
pub struct PendingCheckpoint {
    pub checkpoint: Checkpoint,
    pub sinks: Vec<HandedOver>,
}

/// How often the writer looks whether the sinks have caught up.
const SINK_POLL: Duration = Duration::from_millis(20);

/// The thread that writes checkpoints as the graph assembles them and releases their rows;
/// when several are ready, only the newest is written (it covers the others, rows included).
pub struct CheckpointWriter {
    thread: std::thread::JoinHandle<()>,
}

/// Where checkpoints are written.
pub enum Target {
    /// One process: one file, replaced by each newer checkpoint (older ones still waiting
    /// for their sinks are skipped: the newer covers them).
    File(PathBuf),
    /// One process of a cluster: a file per epoch in `dir`, every epoch written, the last two
    /// kept; an epoch's rows are released once `gate` says every process has it.
    PerEpoch { dir: PathBuf, gate: Arc<CommitGate> },
}

impl Target {
    fn path(&self, epoch: u64) -> PathBuf {
        match self {
            Target::File(path) => path.clone(),
            Target::PerEpoch { dir, .. } => super::epoch_path(dir, epoch),
        }
    }

    /// After `epoch` is written: what the rows must wait for, and old files go.
    fn written(&self, epoch: u64) {
        let Target::PerEpoch { dir, gate } = self else {
            return;
        };
        // Only the two newest are ever needed (see `super::commit`).
        if let Ok(kept) = super::kept_epochs(dir) {
            for old in kept.into_iter().filter(|old| *old + 1 < epoch) {
                if let Err(e) = std::fs::remove_file(super::epoch_path(dir, old)) {
                    warn!(epoch = old, "An old checkpoint could not be removed: {e}");
                }
            }
        }
        gate.written(epoch);
        while !gate.is_committed(epoch) {
            std::thread::sleep(SINK_POLL);
        }
    }

    fn finished(&self) {
        if let Target::PerEpoch { gate, .. } = self {
            gate.finish();
        }
    }
}

/// Where released rollup rows go.
pub struct Release {
    pub routes: Arc<SinkRoutes>,
    pub live: Arc<dyn LiveTap>,
}

impl Release {
    /// Hands rollup rows to the sinks (and the live feed), blocking while a sink is behind.
    pub fn send(&self, rows: Vec<Records>) {
        for records in rows {
            if let Records::AppRollups(rows) = &records {
                self.live.app_rollups(rows);
            }
            self.routes.send(records.stream(), records);
        }
    }
}

impl CheckpointWriter {
    /// Starts writing to `path`; the writer ends once every sender is dropped and everything
    /// it was sent is written and released.
    pub fn start(
        target: Target,
        release: Release,
        metrics: Arc<GraphMetrics>,
    ) -> std::io::Result<(mpsc::Sender<PendingCheckpoint>, CheckpointWriter)> {
        let (sender, checkpoints) = mpsc::channel::<PendingCheckpoint>();
        let thread = std::thread::Builder::new()
            .name("sluice-checkpoint".to_owned())
            .spawn(move || {
                write_as_sinks_catch_up(&checkpoints, &target, &release, &metrics);
                target.finished();
            })?;
        Ok((sender, CheckpointWriter { thread }))
    }

    /// Waits for the last checkpoint to be written and its rows released.
    pub fn finish(self) {
        let _ = self.thread.join();
    }
}

/// Writes, each time the sinks have caught up with one, the newest checkpoint they have
/// caught up with, then releases its rows; until the graph has sent the last.
fn write_as_sinks_catch_up(
    checkpoints: &mpsc::Receiver<PendingCheckpoint>,
    target: &Target,
    release: &Release,
    metrics: &GraphMetrics,
) {
    let mut waiting: VecDeque<(PendingCheckpoint, Instant)> = VecDeque::new();
    // What the sinks had been handed once the last checkpoint's rows were released.
    let mut released: Vec<HandedOver> = Vec::new();
    let mut assembling = true;
    while assembling || !waiting.is_empty() {
        if waiting.is_empty() {
            match checkpoints.recv() {
                Ok(pending) => waiting.push_back((pending, Instant::now())),
                Err(_) => break,
            }
        }
        loop {
            match checkpoints.try_recv() {
                Ok(pending) => waiting.push_back((pending, Instant::now())),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    assembling = false;
                    break;
                }
            }
        }
        let rows_safe = released.iter().all(HandedOver::is_safe);
        let safe = |(pending, _): &(PendingCheckpoint, Instant)| {
            pending.sinks.iter().all(HandedOver::is_safe)
        };
        let ready = match target {
            Target::File(_) => waiting.iter().rposition(safe),
            Target::PerEpoch { .. } => waiting.front().filter(|w| safe(w)).map(|_| 0),
        };
        match ready.filter(|_| rows_safe) {
            Some(newest) => {
                let mut taken = waiting.drain(..=newest);
                let (mut pending, since) = taken.next_back().expect("at least one");
                // Older checkpoints are covered; their rows are not, so they go along.
                let mut rows: Vec<Records> =
                    taken.flat_map(|(older, _)| older.checkpoint.rows).collect();
                rows.append(&mut pending.checkpoint.rows);
                pending.checkpoint.rows = rows;
                metrics.checkpoint.last_wait_micros.store(
                    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
                if write(
                    &target.path(pending.checkpoint.epoch),
                    &pending.checkpoint,
                    metrics,
                ) {
                    target.written(pending.checkpoint.epoch);
                    release.send(std::mem::take(&mut pending.checkpoint.rows));
                    released = release.routes.handed_over();
                } else {
                    // Nothing released: the rows wait for the next checkpoint, which carries
                    // them.
                    waiting.push_front((pending, since));
                    std::thread::sleep(SINK_POLL);
                }
            }
            None => {
                warn_if_stuck(&waiting, &released, metrics);
                std::thread::sleep(SINK_POLL);
            }
        }
    }
}

/// Says, now and then, which sink a checkpoint has been waiting for too long.
fn warn_if_stuck(
    waiting: &VecDeque<(PendingCheckpoint, Instant)>,
    released: &[HandedOver],
    metrics: &GraphMetrics,
) {
    let Some((pending, since)) = waiting.front() else {
        return;
    };
    let behind = released
        .iter()
        .chain(&pending.sinks)
        .find(|sink| !sink.is_safe());
    if let Some(behind) = behind
        && since.elapsed() > Duration::from_secs(30)
        && let Some(held_back) = metrics.checkpoint.wait_log.check()
    {
        warn!(sink = %behind.sink, epoch = pending.checkpoint.epoch, held_back,
            "A checkpoint waits for this sink to store what it was handed; rollup rows wait \
             with it (a disk buffer lets checkpoints go on while a store is down).");
    }
}

/// Writes one checkpoint; whether it is on disk.
fn write(path: &Path, checkpoint: &Checkpoint, metrics: &GraphMetrics) -> bool {
    let started = Instant::now();
    let written = file::encode(checkpoint)
        .map_err(|e| e.to_string())
        .and_then(|bytes: Vec<u8>| {
            file::write_atomically(path, &bytes)
                .map(|()| bytes.len())
                .map_err(|e| e.to_string())
        });
    match written {
        Ok(size) => {
            let took = started.elapsed();
            metrics
                .checkpoint
                .written(checkpoint.epoch, size as u64, took);
            debug!(
                epoch = checkpoint.epoch,
                size,
                micros = took.as_micros() as u64,
                windows = checkpoint.windows.len(),
                rows = checkpoint.rows.iter().map(Records::len).sum::<usize>(),
                "Checkpoint written."
            );
            true
        }
        Err(e) => {
            metrics.checkpoint.failures.incr();
            if let Some(held_back) = metrics.checkpoint.failure_log.check() {
                error!(path = %path.display(), epoch = checkpoint.epoch, held_back,
                    "A checkpoint could not be written; rollup rows wait until one is: {e}");
            }
            false
        }
    }
}
