//! The durable disk buffer: an append-only queue of frames in numbered segment files.
//!
//! A frame is `len: u32 | records: u32 | crc32: u32 | payload`, little-endian, the checksum
//! covering `len`, `records` and the payload. Segments are `00000000000000000001.seg`, ...;
//! the writer appends to the last one and starts the next past `segment_size`. The `ack` file
//! holds the position of the first unacknowledged frame (segment, offset) and is replaced
//! atomically by rename on every commit; segments before it are deleted. A lost or stale
//! `ack` only redelivers (at least once), so it is not fsynced.
//!
//! Opening scans the frames after the acknowledged position one at a time (never holding
//! more than one frame): a frame that is cut short or fails its checksum ends the good part
//! of its segment, and the rest is truncated and reported in [`OpenReport`].
//!
//! One [`DiskWriter`] (a plain thread: it fsyncs and may block on a full buffer) and one
//! [`DiskReader`] (the sink) share the published end of the queue and the held size.
//!
//! Layout, along the buffer's seams:
//! - this file — the config, what opening found ([`OpenReport`]), the state both ends share,
//!   and [`open`]: where reading starts, the removal of acknowledged segments, the torn-tail
//!   cut;
//! - `frame` — the frame layout: encoding, the header, the checksum, the damage a frame can
//!   have;
//! - `segment` — segment files: names, listing, creation, the scan on open and the cut;
//! - `ledger` — the `ack` and `format` files beside the segments;
//! - `writer` — the appending end, [`DiskWriter`]: groups, segment rolls, sync policies,
//!   `when_full`;
//! - `reader` — the reading end, [`DiskReader`]: frames in order, commits, segment deletion;
//! - `tests` — the buffer's unit tests.

mod frame;
mod ledger;
mod reader;
mod segment;
mod writer;

#[cfg(test)]
mod tests;

pub use frame::FRAME_HEADER;
pub use reader::{DiskReader, Next};
pub use writer::DiskWriter;

use std::fs::{self, OpenOptions};
use std::io::ErrorKind;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;
use tracing::warn;

use sluice_common::telemetry::SinkMetrics;

use crate::{BufferError, SyncPolicy, WhenFull};

/// The read buffer of the scan on open and of the reader.
const READ_BUFFER: usize = 256 << 10;

/// How a disk buffer is opened.
#[derive(Clone, Debug)]
pub struct DiskBufferConfig {
    pub path: PathBuf,
    /// The cap on unacknowledged bytes (frames included).
    pub max_size: u64,
    pub segment_size: u64,
    pub when_full: WhenFull,
    pub sync: SyncPolicy,
}

/// What opening an existing buffer found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Records waiting from an earlier run.
    pub records: u64,
    /// Their bytes, frames included.
    pub bytes: u64,
    pub segments: usize,
    /// Tails cut because they were torn or corrupt.
    pub cut: Vec<CutTail>,
    /// Corrupt frames with intact frames after them, which the reader skips.
    pub skipped: Vec<CutTail>,
}

/// A torn or corrupt segment tail, truncated on open.
#[derive(Debug, PartialEq, Eq)]
pub struct CutTail {
    pub file: PathBuf,
    /// Where the first bad frame began; the segment now ends here.
    pub offset: u64,
    pub bytes_cut: u64,
    pub reason: &'static str,
}

/// A place in the queue: a segment and a byte offset in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Position {
    segment: u64,
    offset: u64,
}

#[derive(Debug)]
struct State {
    /// The end of the frames the reader may read.
    write_end: Position,
    /// Unacknowledged frames.
    held_bytes: u64,
    held_records: u64,
    /// The oldest segment still on disk.
    first_segment: u64,
    writer_done: bool,
    reader_gone: bool,
    /// Everything was delivered and acknowledged after the writer finished: files removed.
    removed: bool,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    state: Mutex<State>,
    /// The writer waits here for a commit to free room.
    room: Condvar,
    /// The reader waits here for frames (one reader: `notify_one` keeps a permit).
    appended: Notify,
    /// `sync = "interval"`: appended since the last fsync.
    dirty: AtomicBool,
    /// The interval syncer waits here, woken early when the writer finishes.
    writer_finished: Condvar,
    metrics: Arc<SinkMetrics>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn segment_path(&self, segment: u64) -> PathBuf {
        segment::path(&self.dir, segment)
    }

    fn publish_gauges(&self, state: &State) {
        let m = &self.metrics;
        m.buffered_records
            .store(state.held_records as i64, Ordering::Relaxed);
        m.buffered_bytes
            .store(state.held_bytes as i64, Ordering::Relaxed);
    }
}

/// Opens (or creates) the buffer in `config.path`: cuts torn tails, deletes acknowledged
/// segments, and returns its two ends.
pub fn open(
    config: DiskBufferConfig,
    metrics: Arc<SinkMetrics>,
) -> Result<(DiskWriter, DiskReader, OpenReport), BufferError> {
    let dir = config.path.clone();
    fs::create_dir_all(&dir).map_err(BufferError::io(&dir))?;
    let mut segments = segment::list(&dir)?;
    ledger::check_format(&dir, !segments.is_empty())?;
    let ack = ledger::read_ack(&dir);

    // The first unacknowledged frame. A segment before the acknowledged one was deleted
    // or is about to be; an ack naming a missing segment means its frames were delivered.
    let start = match ack {
        Some(ack) if segments.contains(&ack.segment) => ack,
        Some(ack) => Position {
            segment: segments
                .iter()
                .copied()
                .find(|s| *s > ack.segment)
                .unwrap_or(ack.segment + 1),
            offset: 0,
        },
        None => Position {
            segment: segments.first().copied().unwrap_or(1),
            offset: 0,
        },
    };
    for segment in segments.iter().filter(|s| **s < start.segment) {
        let path = segment::path(&dir, *segment);
        fs::remove_file(&path).map_err(BufferError::io(&path))?;
    }
    segments.retain(|s| *s >= start.segment);

    let mut report = OpenReport {
        segments: segments.len(),
        ..OpenReport::default()
    };
    let mut start = start;
    for segment in &segments {
        let path = segment::path(&dir, *segment);
        let from = if *segment == start.segment {
            start.offset
        } else {
            0
        };
        let scan = segment::scan(&path, from)?;
        if scan.skipped_to_end {
            // The ack pointed past the segment's end (it was cut on an earlier open).
            start.offset = scan.good_end;
        }
        report.records += scan.records;
        report.bytes += scan.good_end - from.min(scan.good_end);
        for skipped in scan.skipped {
            warn!(
                file = %skipped.file.display(),
                offset = skipped.offset,
                bytes_skipped = skipped.bytes_cut,
                reason = skipped.reason,
                "A corrupt frame in a disk buffer segment: reading resynchronises on the next \
                 intact frame; the records of the damaged one are lost."
            );
            report.skipped.push(skipped);
        }
        if let Some(cut) = scan.cut {
            warn!(
                file = %cut.file.display(),
                offset = cut.offset,
                bytes_cut = cut.bytes_cut,
                reason = cut.reason,
                "Cut a torn or corrupt disk buffer tail; the records before it are kept."
            );
            segment::cut(&path, cut.offset)?;
            report.cut.push(cut);
        }
    }

    // The writer appends to the last segment, or starts the first.
    let (write_segment, file, size) = match segments.last() {
        Some(last) => {
            let path = segment::path(&dir, *last);
            let file = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(BufferError::io(&path))?;
            let size = file.metadata().map_err(BufferError::io(&path))?.len();
            (*last, file, size)
        }
        None => {
            let path = segment::path(&dir, start.segment);
            let file = segment::create(&path, config.sync)?;
            (start.segment, file, 0)
        }
    };

    let state = State {
        write_end: Position {
            segment: write_segment,
            offset: size,
        },
        held_bytes: report.bytes,
        held_records: report.records,
        first_segment: start.segment,
        writer_done: false,
        reader_gone: false,
        removed: false,
    };
    let shared = Arc::new(Shared {
        dir,
        state: Mutex::new(state),
        room: Condvar::new(),
        appended: Notify::new(),
        dirty: AtomicBool::new(false),
        writer_finished: Condvar::new(),
        metrics,
    });
    let writer = DiskWriter::new(shared.clone(), config, write_segment, file, size)?;
    shared.publish_gauges(&shared.lock());
    let reader = DiskReader::new(shared, start);
    Ok((writer, reader, report))
}

/// Removes a file that may already be gone.
fn remove_if_present(path: PathBuf) -> Result<(), BufferError> {
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(source) => Err(BufferError::Io { path, source }),
    }
}
