//! State across runs (SPEC §9): the state directory a run locks, the checkpoint it restores
//! from, and the writer that keeps the next one on disk.
//!
//! Layout: [`file`] is the checkpoint file (format, checksum, atomic write); [`lock`] keeps
//! one process per directory; [`writer`] writes checkpoints off the dataflow's threads and
//! says which epoch is durable; [`commit`] tells it, in a cluster, which epochs every
//! process has on disk. The graph's side — ending epochs, snapshots, holding rollup
//! rows until their checkpoint is durable — is in `crate::dataflow`.

pub mod commit;
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
    #[error(
        "the cluster's processes keep no checkpoint in common ({}): a process's state \
         directory was removed, or belongs to another cluster; restore it, or remove every \
         process's state directory to start over",
        describe_kept(.0)
    )]
    NoCommonCheckpoint(Vec<Vec<u64>>),
}

fn describe_kept(kept: &[Vec<u64>]) -> String {
    let each: Vec<String> = kept
        .iter()
        .enumerate()
        .map(|(process, epochs)| match epochs.as_slice() {
            [] => format!("process {process}: none"),
            epochs => format!("process {process}: epochs {epochs:?}"),
        })
        .collect();
    each.join(", ")
}

/// The checkpoint a cluster continues from, given the epochs each process keeps: the newest
/// every process has. None when no process has one, or when the only ones are of a first
/// epoch that never became the cluster's (a process stopped before writing it: no rollup row
/// of it reached a store, so starting over is exact).
pub fn common_epoch(kept: &[Vec<u64>]) -> Result<Option<u64>, StateError> {
    let mut all = kept.iter();
    let Some(first) = all.next() else {
        return Ok(None);
    };
    let common = first
        .iter()
        .copied()
        .filter(|epoch| kept.iter().all(|epochs| epochs.contains(epoch)))
        .max();
    if common.is_some() {
        return Ok(common);
    }
    let newest = kept.iter().flatten().copied().max();
    match newest {
        None => Ok(None),
        Some(epoch) if epoch <= FIRST_EPOCH => Ok(None),
        Some(_) => Err(StateError::NoCommonCheckpoint(kept.to_vec())),
    }
}

/// The epoch a run without a checkpoint starts in.
const FIRST_EPOCH: u64 = 1;

/// How checkpoints are kept: one file replaced each time (one process), or in a cluster a
/// file per epoch, the last two, so every process still has the newest they all have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Single,
    PerEpoch,
}

/// A state directory, locked for the life of the run, and the checkpoint found in it.
#[derive(Debug)]
pub struct StateDir {
    dir: PathBuf,
    _lock: StateLock,
    layout: Layout,
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
            layout: Layout::Single,
            restored,
        })
    }

    /// Locks process `process`'s own directory under `dir` (a cluster's processes may share
    /// one file system, and each keeps its own part of every checkpoint). Nothing is read
    /// until the cluster has agreed on the epoch to continue from ([`StateDir::continue_from`]).
    pub fn open_for_process(dir: &Path, process: usize) -> Result<StateDir, StateError> {
        let dir = dir.join(format!("process-{process}"));
        let lock = StateLock::acquire(&dir)?;
        Ok(StateDir {
            dir,
            _lock: lock,
            layout: Layout::PerEpoch,
            restored: None,
        })
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The epochs of the checkpoints kept here, oldest first (a cluster's processes tell each
    /// other at start).
    pub fn kept(&self) -> Result<Vec<u64>, StateError> {
        kept_epochs(&self.dir).map_err(|source| {
            StateError::File(StateFileError::Read {
                path: self.dir.clone(),
                source,
            })
        })
    }

    /// Reads the checkpoint of `epoch` (the cluster's choice) and removes those of later
    /// epochs, which the cluster will write again.
    pub fn continue_from(&mut self, epoch: Option<u64>) -> Result<(), StateError> {
        for kept in self.kept()? {
            if epoch.is_none_or(|epoch| kept > epoch) {
                let path = epoch_path(&self.dir, kept);
                std::fs::remove_file(&path)
                    .map_err(|source| StateError::File(StateFileError::Write { path, source }))?;
            }
        }
        self.restored = match epoch {
            Some(epoch) => {
                let path = epoch_path(&self.dir, epoch);
                let checkpoint = file::read(&path)?.ok_or_else(|| StateFileError::Read {
                    path: path.clone(),
                    source: std::io::Error::from(std::io::ErrorKind::NotFound),
                })?;
                Some(checkpoint)
            }
            None => None,
        };
        Ok(())
    }

    /// Where checkpoints are written (one process: the one file).
    pub fn checkpoint_path(&self) -> PathBuf {
        self.dir.join("checkpoint")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The file of the checkpoint of `epoch` in a per-epoch directory.
pub fn epoch_path(dir: &Path, epoch: u64) -> PathBuf {
    dir.join(format!("checkpoint-{epoch}"))
}

/// The epochs of the per-epoch checkpoint files in `dir`, oldest first.
pub fn kept_epochs(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut epochs = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(epoch) = name
            .to_str()
            .and_then(|name| name.strip_prefix("checkpoint-"))
            .and_then(|epoch| epoch.parse::<u64>().ok())
        {
            epochs.push(epoch);
        }
    }
    epochs.sort_unstable();
    Ok(epochs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_continues_from_the_newest_checkpoint_every_process_has() {
        assert_eq!(
            common_epoch(&[vec![], vec![], vec![]]).expect("a choice"),
            None
        );
        assert_eq!(
            common_epoch(&[vec![4, 5], vec![5, 6], vec![4, 5]]).expect("a choice"),
            Some(5)
        );
        assert_eq!(
            common_epoch(&[vec![7], vec![6, 7]]).expect("a choice"),
            Some(7)
        );
        // A first epoch only some wrote never released a row: start over.
        assert_eq!(
            common_epoch(&[vec![1], vec![], vec![1]]).expect("a choice"),
            None
        );
        let refused = common_epoch(&[vec![5, 6], vec![], vec![5, 6]])
            .expect_err("a process without the others' state")
            .to_string();
        assert!(refused.contains("process 1: none"), "{refused}");
        assert!(refused.contains("process 0: epochs [5, 6]"), "{refused}");
    }

    #[test]
    fn a_process_keeps_its_epochs_and_continues_from_the_one_chosen() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut state = StateDir::open_for_process(dir.path(), 2).expect("opens");
        assert_eq!(state.kept().expect("listed"), Vec::<u64>::new());
        let process_dir = dir.path().join("process-2");
        for epoch in [3, 4, 5] {
            let checkpoint = Checkpoint {
                epoch,
                taken_at: 0,
                records: epoch * 10,
                watermark: sluice_operators::watermark::WatermarkState {
                    lateness_ns: 0,
                    max_event_time: None,
                    floor: None,
                },
                sources: Default::default(),
                widths: vec![60],
                windows: Default::default(),
                rows: Vec::new(),
            };
            let bytes = file::encode(&checkpoint).expect("encodes");
            file::write_atomically(&epoch_path(&process_dir, epoch), &bytes).expect("written");
        }
        assert_eq!(state.kept().expect("listed"), vec![3, 4, 5]);
        state.continue_from(Some(4)).expect("continues");
        assert_eq!(state.restored.as_ref().map(|c| c.records), Some(40));
        assert_eq!(
            state.kept().expect("listed"),
            vec![3, 4],
            "the later epoch is gone"
        );
        assert!(StateDir::open_for_process(dir.path(), 2).is_err(), "locked");
    }
}
