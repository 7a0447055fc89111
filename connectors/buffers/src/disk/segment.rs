//! Segment files: `00000000000000000001.seg`, ... in the buffer's directory, each a run of
//! frames. The writer appends to the newest and starts the next past `segment_size`; the
//! reader deletes those it has been acknowledged past.
//!
//! On open, [`scan`] checks the frames of a segment after the acknowledged position, one at a
//! time (never holding more than one frame), and [`cut`] truncates a torn or corrupt tail.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::frame::Header;
use super::{CutTail, READ_BUFFER};
use crate::{BufferError, SyncPolicy};

const SEGMENT_SUFFIX: &str = ".seg";

/// The file of segment number `segment`.
pub(super) fn path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:020}{SEGMENT_SUFFIX}"))
}

/// The numbers of the segments in `dir`, oldest first.
pub(super) fn list(dir: &Path) -> Result<Vec<u64>, BufferError> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(BufferError::io(dir))? {
        let entry = entry.map_err(BufferError::io(dir))?;
        let name = entry.file_name();
        let Some(number) = name
            .to_str()
            .and_then(|n| n.strip_suffix(SEGMENT_SUFFIX))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        segments.push(number);
    }
    segments.sort_unstable();
    Ok(segments)
}

/// Creates a segment to append to; under `sync = "batch"` its name is made durable too.
pub(super) fn create(path: &Path, sync: SyncPolicy) -> Result<File, BufferError> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(BufferError::io(path))?;
    if sync == SyncPolicy::Batch {
        // The new file's name must survive a crash too, or its fsynced frames are lost.
        if let Some(dir) = path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(BufferError::io(dir))?;
        }
    }
    Ok(file)
}

/// What [`scan`] found in a segment.
pub(super) struct Scan {
    /// Records in the good frames.
    pub(super) records: u64,
    /// Where the good frames end.
    pub(super) good_end: u64,
    /// The torn or corrupt tail after them, to be cut.
    pub(super) cut: Option<CutTail>,
    /// Corrupt frames with intact frames after them: the reader skips them (`bytes_cut`
    /// here is what it skips), nothing is cut.
    pub(super) skipped: Vec<CutTail>,
    /// The scan was asked to start past the segment's end.
    pub(super) skipped_to_end: bool,
}

/// Checks every frame of a segment from `from`, one at a time.
pub(super) fn scan(path: &Path, from: u64) -> Result<Scan, BufferError> {
    let file = File::open(path).map_err(BufferError::io(path))?;
    let len = file.metadata().map_err(BufferError::io(path))?.len();
    if from >= len {
        return Ok(Scan {
            records: 0,
            good_end: len,
            cut: None,
            skipped: Vec::new(),
            skipped_to_end: from > len,
        });
    }
    let mut input = BufReader::with_capacity(READ_BUFFER, file);
    input
        .seek(SeekFrom::Start(from))
        .map_err(BufferError::io(path))?;
    let mut at = from;
    let mut records = 0;
    let mut payload = Vec::new();
    let mut skipped = Vec::new();
    while at < len {
        let damage = match Header::read(&mut input, len - at).map_err(BufferError::io(path))? {
            Ok(header) => {
                payload.resize(header.payload_len(), 0);
                input
                    .read_exact(&mut payload)
                    .map_err(BufferError::io(path))?;
                match header.check(&payload) {
                    Ok(()) => {
                        records += u64::from(header.records());
                        at += header.frame_len();
                        continue;
                    }
                    Err(damage) => damage,
                }
            }
            Err(damage) => damage,
        };
        // A damaged frame: if an intact one follows, only this one is lost.
        let damage_at = at;
        match resync_at(path, damage_at, len)? {
            Some(next) => {
                skipped.push(CutTail {
                    file: path.to_owned(),
                    offset: damage_at,
                    bytes_cut: next - damage_at,
                    reason: damage.reason(),
                });
                at = next;
                input
                    .seek(SeekFrom::Start(at))
                    .map_err(BufferError::io(path))?;
            }
            None => {
                return Ok(Scan {
                    records,
                    good_end: damage_at,
                    cut: Some(CutTail {
                        file: path.to_owned(),
                        offset: damage_at,
                        bytes_cut: len - damage_at,
                        reason: damage.reason(),
                    }),
                    skipped,
                    skipped_to_end: false,
                });
            }
        }
    }
    Ok(Scan {
        records,
        good_end: at,
        cut: None,
        skipped,
        skipped_to_end: false,
    })
}

/// Where the next intact frame after the damaged one at `from` starts, before `end`; reads
/// the rest of the segment (at most a segment) to find it.
pub(super) fn resync_at(path: &Path, from: u64, end: u64) -> Result<Option<u64>, BufferError> {
    let mut file = File::open(path).map_err(BufferError::io(path))?;
    file.seek(SeekFrom::Start(from))
        .map_err(BufferError::io(path))?;
    let mut rest = Vec::new();
    file.take(end.saturating_sub(from))
        .read_to_end(&mut rest)
        .map_err(BufferError::io(path))?;
    Ok(super::frame::resync(&rest).map(|skip| from + skip as u64))
}

/// Truncates a segment to `offset`, durably: the torn or corrupt tail after it is gone.
pub(super) fn cut(path: &Path, offset: u64) -> Result<(), BufferError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(BufferError::io(path))?;
    file.set_len(offset).map_err(BufferError::io(path))?;
    file.sync_all().map_err(BufferError::io(path))
}
