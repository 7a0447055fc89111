//! The buffer's two files beside its segments: `ack`, the position of the first
//! unacknowledged frame, and `format`, the layout of the records in the frames.
//!
//! `ack` is 20 bytes: the segment and the offset as little-endian `u64`s and the CRC-32 of
//! those 16 bytes. It is replaced atomically by rename on every commit and not fsynced: a lost
//! or stale one only redelivers (at least once). `format` holds [`codec::FORMAT`] and a
//! newline.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use tracing::warn;

use super::{Position, remove_if_present};
use crate::{BufferError, codec};

const ACK_FILE: &str = "ack";
const ACK_TMP: &str = "ack.tmp";
pub(super) const FORMAT_FILE: &str = "format";

/// The acknowledged position, if an intact `ack` file holds one.
pub(super) fn read_ack(dir: &Path) -> Option<Position> {
    let path = dir.join(ACK_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => return None,
        Err(e) => {
            warn!(file = %path.display(), error = %e, "Unreadable disk buffer ack; redelivering from the oldest segment.");
            return None;
        }
    };
    let valid = bytes.len() == 20 && crc32fast::hash(&bytes[..16]).to_le_bytes() == bytes[16..20];
    if !valid {
        warn!(file = %path.display(), "Corrupt disk buffer ack; redelivering from the oldest segment.");
        return None;
    }
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[i..i + 8]);
        u64::from_le_bytes(b)
    };
    Some(Position {
        segment: word(0),
        offset: word(8),
    })
}

/// Replaces the `ack` file with one holding `at`.
pub(super) fn write_ack(dir: &Path, at: Position) -> Result<(), BufferError> {
    let mut bytes = [0u8; 20];
    bytes[..8].copy_from_slice(&at.segment.to_le_bytes());
    bytes[8..16].copy_from_slice(&at.offset.to_le_bytes());
    let crc = crc32fast::hash(&bytes[..16]);
    bytes[16..].copy_from_slice(&crc.to_le_bytes());
    let tmp = dir.join(ACK_TMP);
    fs::write(&tmp, bytes).map_err(BufferError::io(&tmp))?;
    let path = dir.join(ACK_FILE);
    fs::rename(&tmp, &path).map_err(BufferError::io(&path))
}

/// Refuses a buffer whose records are in another layout than this build's, and marks a new
/// (or empty) one with this build's. A buffer from before the marker holds the first layout.
pub(super) fn check_format(dir: &Path, holds_segments: bool) -> Result<(), BufferError> {
    let path = dir.join(FORMAT_FILE);
    let found = match fs::read_to_string(&path) {
        Ok(text) => Some(text.trim().to_owned()),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(BufferError::io(&path)(e)),
    };
    match found {
        Some(found) if found == codec::FORMAT => Ok(()),
        Some(found) if holds_segments => Err(BufferError::Format {
            path: dir.to_owned(),
            found: format!("`{found}`"),
            expected: codec::FORMAT,
        }),
        None if holds_segments => Err(BufferError::Format {
            path: dir.to_owned(),
            found: "`sluice-records 1` (no format file)".to_owned(),
            expected: codec::FORMAT,
        }),
        // Nothing to read: the buffer starts over in this build's layout.
        _ => {
            let tmp = dir.join(format!("{FORMAT_FILE}.tmp"));
            fs::write(&tmp, format!("{}\n", codec::FORMAT)).map_err(BufferError::io(&tmp))?;
            fs::rename(&tmp, &path).map_err(BufferError::io(&path))
        }
    }
}

/// Removes both files of a drained buffer whose segments are gone, the format marker last:
/// without segments, a directory's layout does not matter.
pub(super) fn remove(dir: &Path) -> Result<(), BufferError> {
    for file in [ACK_FILE, FORMAT_FILE] {
        remove_if_present(dir.join(file))?;
    }
    Ok(())
}
