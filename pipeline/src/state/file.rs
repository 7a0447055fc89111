//! The checkpoint file: what a run saves and the next one restores (SPEC §9), written so that
//! it is never half there and never misread.
//!
//! ```text
//! "SLUICE-STATE\n"  format u32 LE  length u64 LE  crc32 u32 LE  postcard(Checkpoint)
//! ```
//!
//! A new checkpoint is written to `checkpoint.tmp`, fsynced, renamed over `checkpoint`, and
//! the directory fsynced: a crash leaves the previous checkpoint or the new one, whole.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sluice_model::records::Records;
use sluice_operators::checkpoint::WindowState;
use sluice_operators::watermark::WatermarkState;
use sluice_sources::SourcePosition;

/// The file's first bytes.
const MAGIC: &[u8; 13] = b"SLUICE-STATE\n";
/// The layout of [`Checkpoint`]; postcard has no field names, so any change to it (or to a
/// window's state) needs a new number.
/// (3: the rows of `Records` carry their app's names, SPEC §11. 4: the directory's facts and
/// the open space and org minutes, SPEC §11, are in the windows; a format-3 file is refused
/// like any other, since it has neither and a run continued from it would name and group the
/// minutes it continues differently.)
pub const FORMAT: u32 = 4;
// (The rows are `Records`, whose layout the disk buffer's codec also versions.)
const HEADER: usize = MAGIC.len() + 4 + 8 + 4;

/// Everything a restart needs, as of the end of one epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The epoch whose end this is.
    pub epoch: u64,
    /// When it was taken (wall clock, ns since the epoch).
    pub taken_at: i64,
    /// Records ingested by the run that took it, up to its end.
    pub records: u64,
    pub watermark: WatermarkState,
    /// Where each source that can rewind had read to, by source name.
    pub sources: BTreeMap<String, SourcePosition>,
    /// The rollup widths the windows are of (`pipeline.windows`, in seconds).
    pub widths: Vec<u32>,
    pub windows: WindowState,
    /// The rollup rows of this epoch: they reach the stores only once this checkpoint is on
    /// disk, so a restart from it sends them again (upserts: the same rows twice are one).
    pub rows: Vec<Records>,
}

/// A state file that cannot be used, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("cannot read the state file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the state file {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{} is not a Sluice state file (it does not start with Sluice's marker); move it away, \
         or set pipeline.state_dir to a directory of Sluice's own",
        path.display()
    )]
    Foreign { path: PathBuf },
    #[error(
        "{} was written by a Sluice with state format {found}, and this Sluice reads format \
         {FORMAT}; finish with the version that wrote it, or move {} away to start without \
         the open windows",
        path.display(), path.parent().unwrap_or(Path::new(".")).display()
    )]
    Format { path: PathBuf, found: u32 },
    #[error(
        "{} is damaged ({reason}); nothing of it is used: move it away to start without the \
         open windows (the stores keep everything written so far)",
        path.display()
    )]
    Corrupt { path: PathBuf, reason: String },
}

/// The encoding of `checkpoint`, header and all.
pub fn encode(checkpoint: &Checkpoint) -> Result<Vec<u8>, postcard::Error> {
    let payload = postcard::to_stdvec(checkpoint)?;
    let mut bytes = Vec::with_capacity(HEADER + payload.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&FORMAT.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    bytes.extend_from_slice(&payload);
    Ok(bytes)
}

/// The checkpoint in `bytes`, read from `path` (for messages); refused whole if anything is
/// off.
pub fn decode(path: &Path, bytes: &[u8]) -> Result<Checkpoint, StateFileError> {
    let corrupt = |reason: String| StateFileError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(StateFileError::Foreign {
            path: path.to_owned(),
        });
    }
    if bytes.len() < HEADER {
        return Err(corrupt(format!(
            "it is {} bytes long, shorter than its header",
            bytes.len()
        )));
    }
    let field = |at: usize, n: usize| &bytes[at..at + n];
    let found = u32::from_le_bytes(field(13, 4).try_into().unwrap_or_default());
    if found != FORMAT {
        return Err(StateFileError::Format {
            path: path.to_owned(),
            found,
        });
    }
    let length = u64::from_le_bytes(field(17, 8).try_into().unwrap_or_default());
    let crc = u32::from_le_bytes(field(25, 4).try_into().unwrap_or_default());
    let payload = &bytes[HEADER..];
    if payload.len() as u64 != length {
        return Err(corrupt(format!(
            "truncated: {} of {length} bytes of state",
            payload.len()
        )));
    }
    if crc32fast::hash(payload) != crc {
        return Err(corrupt("its checksum does not match".to_owned()));
    }
    postcard::from_bytes(payload).map_err(|e| corrupt(format!("it does not decode: {e}")))
}

/// Reads the checkpoint at `path`; `None` when there is none yet.
pub fn read(path: &Path) -> Result<Option<Checkpoint>, StateFileError> {
    match fs::read(path) {
        Ok(bytes) => decode(path, &bytes).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateFileError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Replaces the file at `path` with `bytes` atomically and durably: a temporary file beside
/// it, fsynced, renamed over it, and the directory fsynced.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StateFileError> {
    let failed = |source| StateFileError::Write {
        path: path.to_owned(),
        source,
    };
    let temporary = path.with_extension("tmp");
    let mut file = File::create(&temporary).map_err(failed)?;
    file.write_all(bytes).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    drop(file);
    fs::rename(&temporary, path).map_err(failed)?;
    let directory = path.parent().unwrap_or(Path::new("."));
    File::open(directory)
        .and_then(|d| d.sync_all())
        .map_err(failed)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            epoch: 42,
            taken_at: 1_710_234_017_448_058_219,
            records: 1000,
            watermark: WatermarkState {
                lateness_ns: 60_000_000_000,
                max_event_time: Some(1_710_234_017_448_058_219),
                floor: None,
            },
            sources: BTreeMap::new(),
            widths: vec![60],
            windows: WindowState::default(),
            rows: Vec::new(),
        }
    }

    #[test]
    fn a_checkpoint_round_trips_through_its_file() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("checkpoint");
        assert_eq!(read(&path).expect("no file is no state"), None);
        let bytes = encode(&checkpoint()).expect("encodes");
        write_atomically(&path, &bytes).expect("written");
        assert_eq!(read(&path).expect("reads"), Some(checkpoint()));
        assert!(!path.with_extension("tmp").exists());
    }

    #[test]
    fn a_foreign_truncated_corrupt_or_newer_file_is_refused_with_what_to_do() {
        let path = Path::new("state/checkpoint");
        let good = encode(&checkpoint()).expect("encodes");
        let message = |bytes: &[u8]| decode(path, bytes).expect_err("refused").to_string();

        let foreign = message(b"{\"epoch\": 42}");
        assert!(foreign.contains("not a Sluice state file"), "{foreign}");
        let truncated = message(&good[..good.len() - 3]);
        assert!(truncated.contains("truncated"), "{truncated}");
        assert!(truncated.contains("move it away"), "{truncated}");
        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        assert!(message(&flipped).contains("checksum"));
        let mut newer = good.clone();
        newer[13..17].copy_from_slice(&(FORMAT + 1).to_le_bytes());
        let newer = message(&newer);
        assert!(newer.contains(&format!("format {}", FORMAT + 1)), "{newer}");
        assert!(message(&good[..10]).contains("not a Sluice state file"));
    }

    /// What the directory adds to a checkpoint (SPEC §11): 5 000 apps, each with a tag fact
    /// and a Cloud Controller fact (ids as UUIDs, names of about ten characters).
    #[test]
    fn the_directory_of_5000_apps_adds_about_a_megabyte() {
        use sluice_model::Str;
        use sluice_model::records::AppInfo;
        use sluice_operators::directory::Origin;
        // A UUID's text: 36 characters.
        let uuid = |n: u128| Str::from(format!("{n:036x}"));
        let mut with_directory = checkpoint();
        for app in 0..5000u128 {
            let info = AppInfo {
                name: Str::from(format!("app-{app:06}")),
                space_id: uuid(1_000_000 + app / 8),
                space_name: Str::from(format!("space-{:04}", app / 8)),
                org_id: uuid(2_000_000 + app / 24),
                org_name: Str::from(format!("org-{:04}", app / 24)),
            };
            for origin in [Origin::Tags, Origin::CloudController] {
                let fact = ((uuid(app), (origin, info.clone())), 1);
                with_directory.windows.directory.push(fact);
            }
        }
        let bare = encode(&checkpoint()).expect("encodes").len();
        let grown = encode(&with_directory).expect("encodes").len() - bare;
        // 2 × 5 000 facts of 144 bytes: 1.44 MB (README, "Decisions and limits" of SPEC §11).
        assert!((1_000_000..2_000_000).contains(&grown), "{grown} bytes");
        println!("5000 apps, two facts each: {grown} bytes");
    }
}
