//! One process at a time per state directory (SPEC §9): an exclusive lock on its `LOCK` file,
//! held for the life of the run and released by the system however the process ends. The
//! file names the holder, so a refused run can say who has it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock on a state directory; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

/// Why a state directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "the state directory {} is in use by another Sluice ({holder}); one run at a time may \
         use a state directory",
        dir.display()
    )]
    Held { dir: PathBuf, holder: String },
    #[error("cannot lock the state directory {}: {source}", dir.display())]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
}

impl StateLock {
    /// Locks `dir` (creating it), or says who holds it.
    pub fn acquire(dir: &Path) -> Result<StateLock, LockError> {
        let io = |source| LockError::Io {
            dir: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("LOCK"))
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(LockError::Held {
                    dir: dir.to_owned(),
                    holder: if holder.is_empty() {
                        "a process that has not said who it is".to_owned()
                    } else {
                        holder.to_owned()
                    },
                });
            }
            Err(TryLockError::Error(source)) => return Err(io(source)),
        }
        let holder = format!(
            "pid {} on {}, since {}",
            std::process::id(),
            hostname(),
            sluice_common::time::rfc3339(sluice_common::time::now_ns())
        );
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(holder.as_bytes()).map_err(io)?;
        Ok(StateLock { _file: file })
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "this host".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_first_and_given_after_release() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let state = dir.path().join("state");
        let first = StateLock::acquire(&state).expect("free");
        let refused = StateLock::acquire(&state).expect_err("held").to_string();
        assert!(
            refused.contains(&format!("pid {}", std::process::id())),
            "{refused}"
        );
        assert!(refused.contains("in use by another Sluice"), "{refused}");
        drop(first);
        StateLock::acquire(&state).expect("free again");
    }
}
