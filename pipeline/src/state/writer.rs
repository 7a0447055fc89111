//! Writing checkpoints off the dataflow's threads, and telling the graph which epoch is
//! durable: rollup rows of an epoch reach the sinks only once its checkpoint is on disk, so a
//! store never holds a row a restart could not rebuild (SPEC §9).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use timely::scheduling::SyncActivator;
use tracing::{debug, error, warn};

use super::file::{self, Checkpoint};
use crate::routing::HandedOver;
use crate::telemetry::GraphMetrics;

/// The newest epoch whose checkpoint is durable, and who to wake when it moves.
#[derive(Debug, Default)]
pub struct Durable {
    epoch: Mutex<u64>,
    moved: Condvar,
    watchers: Mutex<Vec<SyncActivator>>,
    /// The writer has written everything it will: the epoch will not move again.
    closed: AtomicBool,
}

impl Durable {
    /// Every epoch counts as durable: for runs without checkpoints.
    pub fn always() -> Arc<Durable> {
        Arc::new(Durable {
            epoch: Mutex::new(u64::MAX),
            ..Durable::default()
        })
    }

    pub fn epoch(&self) -> u64 {
        *self.epoch.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes `activator` whenever the durable epoch moves.
    pub fn watch(&self, activator: SyncActivator) {
        self.watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(activator);
    }

    /// Whether the epoch can still move.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake();
    }

    fn advance(&self, epoch: u64) {
        {
            let mut durable = self.epoch.lock().unwrap_or_else(|e| e.into_inner());
            *durable = (*durable).max(epoch);
        }
        self.wake();
    }

    fn wake(&self) {
        self.moved.notify_all();
        for watcher in self
            .watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            // An error means that worker is gone.
            let _ = watcher.activate();
        }
    }

    /// Waits up to `timeout` for `epoch` to be durable; whether it is.
    pub fn wait_for(&self, epoch: u64, timeout: Duration) -> bool {
        let durable = self.epoch.lock().unwrap_or_else(|e| e.into_inner());
        let (durable, _) = self
            .moved
            .wait_timeout_while(durable, timeout, |durable| *durable < epoch)
            .unwrap_or_else(|e| e.into_inner());
        *durable >= epoch
    }
}

/// A checkpoint assembled, and the sinks that must have what they were handed safe before it
/// may be written: a restart does not read those records again.
pub struct PendingCheckpoint {
    pub checkpoint: Checkpoint,
    pub sinks: Vec<HandedOver>,
}

/// How often the writer looks whether the sinks have caught up.
const SINK_POLL: Duration = Duration::from_millis(20);

/// The thread that writes checkpoints as the graph assembles them, once the sinks have
/// stored (or put in a disk buffer) the records each covers; when several wait, only the
/// newest is written (it covers the others).
pub struct CheckpointWriter {
    thread: std::thread::JoinHandle<()>,
}

impl CheckpointWriter {
    /// Starts writing to `path`; the writer ends once every sender is dropped.
    pub fn start(
        path: PathBuf,
        durable: Arc<Durable>,
        metrics: Arc<GraphMetrics>,
    ) -> std::io::Result<(mpsc::Sender<PendingCheckpoint>, CheckpointWriter)> {
        let (sender, checkpoints) = mpsc::channel::<PendingCheckpoint>();
        let thread = std::thread::Builder::new()
            .name("sluice-checkpoint".to_owned())
            .spawn(move || {
                while let Ok(mut pending) = checkpoints.recv() {
                    wait_for_sinks(&pending, &metrics);
                    // Newer checkpoints assembled meanwhile cover this one.
                    while let Ok(newer) = checkpoints.try_recv() {
                        pending = newer;
                        wait_for_sinks(&pending, &metrics);
                    }
                    write(&path, &pending.checkpoint, &durable, &metrics);
                }
                durable.close();
            })?;
        Ok((sender, CheckpointWriter { thread }))
    }

    /// Waits for the last checkpoint to be written.
    pub fn finish(self) {
        let _ = self.thread.join();
    }
}

/// Waits until every sink has safe what it had been handed when the checkpoint was taken.
fn wait_for_sinks(pending: &PendingCheckpoint, metrics: &GraphMetrics) {
    let started = Instant::now();
    let mut warned = false;
    while let Some(behind) = pending.sinks.iter().find(|sink| !sink.is_safe()) {
        if !warned && started.elapsed() > Duration::from_secs(30) {
            warn!(sink = %behind.sink, epoch = pending.checkpoint.epoch,
                "A checkpoint waits for this sink to store what it was handed; rollup rows wait \
                 with it (a disk buffer lets checkpoints go on while a store is down).");
            warned = true;
        }
        std::thread::sleep(SINK_POLL);
    }
    metrics
        .checkpoint
        .last_wait_micros
        .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
}

fn write(path: &Path, checkpoint: &Checkpoint, durable: &Durable, metrics: &GraphMetrics) {
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
                "Checkpoint written."
            );
            durable.advance(checkpoint.epoch);
        }
        Err(e) => {
            metrics.checkpoint.failures.incr();
            // Rows of this epoch wait for a later checkpoint that succeeds.
            if let Some(held_back) = metrics.checkpoint.failure_log.check() {
                error!(path = %path.display(), epoch = checkpoint.epoch, held_back,
                    "A checkpoint could not be written; rollup rows wait until one is: {e}");
            }
        }
    }
}
