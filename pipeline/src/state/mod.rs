//! State across runs (SPEC §9): the state directory a run locks, the checkpoint it restores
//! from, and the writer that keeps the next one on disk.
//!
//! Layout: [`file`] is the checkpoint file (format, checksum, atomic write); [`lock`] keeps
//! one process per directory; [`writer`] writes checkpoints off the dataflow's threads and
//! says which epoch is durable. The graph's side — ending epochs, snapshots, holding rollup
//! rows until their checkpoint is durable — is in `crate::dataflow`.

pub mod file;
pub mod lock;
pub mod writer;

use std::path::{Path, PathBuf};

use self::file::{Checkpoint, StateFileError};
use self::lock::{LockError, StateLock};

/// Why a state directory cannot be used: another run holds it, or its checkpoint is unusable.
/// Both are refused at start, before anything runs.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    File(#[from] StateFileError),
}

/// A state directory, locked for the life of the run, and the checkpoint found in it.
#[derive(Debug)]
pub struct StateDir {
    dir: PathBuf,
    _lock: StateLock,
    /// The checkpoint this run continues from, if one was there.
    pub restored: Option<Checkpoint>,
}

impl StateDir {
    /// Locks `dir` (creating it) and reads its checkpoint.
    pub fn open(dir: &Path) -> Result<StateDir, StateError> {
        let lock = StateLock::acquire(dir)?;
        let restored = file::read(&dir.join("checkpoint"))?;
        Ok(StateDir {
            dir: dir.to_owned(),
            _lock: lock,
            restored,
        })
    }

    /// Where checkpoints are written.
    pub fn checkpoint_path(&self) -> PathBuf {
        self.dir.join("checkpoint")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
