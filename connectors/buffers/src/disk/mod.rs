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

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::Notify;
use tracing::warn;

use sluice_common::telemetry::SinkMetrics;

use crate::{BufferError, SyncPolicy, WhenFull, codec};

/// Bytes before a frame's payload.
pub const FRAME_HEADER: usize = 12;
const ACK_FILE: &str = "ack";
const FORMAT_FILE: &str = "format";
const ACK_TMP: &str = "ack.tmp";
const SEGMENT_SUFFIX: &str = ".seg";
/// `interval` fsyncs at most this often.
const SYNC_INTERVAL: Duration = Duration::from_secs(1);
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
        segment_path(&self.dir, segment)
    }

    fn publish_gauges(&self, state: &State) {
        let m = &self.metrics;
        m.buffered_records
            .store(state.held_records as i64, Ordering::Relaxed);
        m.buffered_bytes
            .store(state.held_bytes as i64, Ordering::Relaxed);
    }
}

/// Refuses a buffer whose records are in another layout than this build's, and marks a new
/// (or empty) one with this build's. A buffer from before the marker holds the first layout.
fn check_format(dir: &Path, holds_segments: bool) -> Result<(), BufferError> {
    let path = dir.join(FORMAT_FILE);
    let found = match fs::read_to_string(&path) {
        Ok(text) => Some(text.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
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

fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:020}{SEGMENT_SUFFIX}"))
}

/// Opens (or creates) the buffer in `config.path`: cuts torn tails, deletes acknowledged
/// segments, and returns its two ends.
pub fn open(
    config: DiskBufferConfig,
    metrics: Arc<SinkMetrics>,
) -> Result<(DiskWriter, DiskReader, OpenReport), BufferError> {
    let dir = config.path.clone();
    fs::create_dir_all(&dir).map_err(BufferError::io(&dir))?;
    let mut segments = list_segments(&dir)?;
    check_format(&dir, !segments.is_empty())?;
    let ack = read_ack(&dir);

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
        let path = segment_path(&dir, *segment);
        fs::remove_file(&path).map_err(BufferError::io(&path))?;
    }
    segments.retain(|s| *s >= start.segment);

    let mut report = OpenReport {
        segments: segments.len(),
        ..OpenReport::default()
    };
    let mut start = start;
    for segment in &segments {
        let path = segment_path(&dir, *segment);
        let from = if *segment == start.segment {
            start.offset
        } else {
            0
        };
        let scan = scan_segment(&path, from)?;
        if scan.skipped_to_end {
            // The ack pointed past the segment's end (it was cut on an earlier open).
            start.offset = scan.good_end;
        }
        report.records += scan.records;
        report.bytes += scan.good_end - from.min(scan.good_end);
        if let Some(cut) = scan.cut {
            warn!(
                file = %cut.file.display(),
                offset = cut.offset,
                bytes_cut = cut.bytes_cut,
                reason = cut.reason,
                "Cut a torn or corrupt disk buffer tail; the records before it are kept."
            );
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(BufferError::io(&path))?;
            file.set_len(cut.offset).map_err(BufferError::io(&path))?;
            file.sync_all().map_err(BufferError::io(&path))?;
            report.cut.push(cut);
        }
    }

    // The writer appends to the last segment, or starts the first.
    let (write_segment, file, size) = match segments.last() {
        Some(last) => {
            let path = segment_path(&dir, *last);
            let file = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(BufferError::io(&path))?;
            let size = file.metadata().map_err(BufferError::io(&path))?.len();
            (*last, file, size)
        }
        None => {
            let path = segment_path(&dir, start.segment);
            let file = create_segment(&path, config.sync)?;
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
    let syncer = if config.sync == SyncPolicy::Interval {
        let shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("buffer-sync".to_owned())
            .spawn(move || sync_every_interval(&shared));
        Some(spawned.map_err(BufferError::io(&config.path))?)
    } else {
        None
    };
    shared.publish_gauges(&shared.lock());
    let writer = DiskWriter {
        shared: shared.clone(),
        config,
        segment: write_segment,
        file,
        size,
        group: Vec::new(),
        group_records: 0,
        unsynced: false,
        syncer,
    };
    let reader = DiskReader {
        shared,
        at: start,
        file: None,
        sealed_len: None,
        handed_bytes: 0,
        handed_records: 0,
    };
    Ok((writer, reader, report))
}

fn list_segments(dir: &Path) -> Result<Vec<u64>, BufferError> {
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

fn read_ack(dir: &Path) -> Option<Position> {
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

fn write_ack(dir: &Path, at: Position) -> Result<(), BufferError> {
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

fn create_segment(path: &Path, sync: SyncPolicy) -> Result<File, BufferError> {
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

fn frame_checksum(header: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[..8]);
    hasher.update(payload);
    hasher.finalize()
}

fn parse_header(header: &[u8; FRAME_HEADER]) -> (u32, u32, u32) {
    let word =
        |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    (word(0), word(4), word(8))
}

struct Scan {
    records: u64,
    good_end: u64,
    cut: Option<CutTail>,
    skipped_to_end: bool,
}

/// Checks every frame of a segment from `from`, one at a time.
fn scan_segment(path: &Path, from: u64) -> Result<Scan, BufferError> {
    let file = File::open(path).map_err(BufferError::io(path))?;
    let len = file.metadata().map_err(BufferError::io(path))?.len();
    if from >= len {
        return Ok(Scan {
            records: 0,
            good_end: len,
            cut: None,
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
    let cut = |at: u64, reason| CutTail {
        file: path.to_owned(),
        offset: at,
        bytes_cut: len - at,
        reason,
    };
    while at < len {
        if len - at < FRAME_HEADER as u64 {
            return Ok(Scan {
                records,
                good_end: at,
                cut: Some(cut(at, "torn frame header")),
                skipped_to_end: false,
            });
        }
        let mut header = [0u8; FRAME_HEADER];
        input
            .read_exact(&mut header)
            .map_err(BufferError::io(path))?;
        let (payload_len, count, crc) = parse_header(&header);
        if u64::from(payload_len) > len - at - FRAME_HEADER as u64 {
            return Ok(Scan {
                records,
                good_end: at,
                cut: Some(cut(at, "torn frame (its length runs past the end)")),
                skipped_to_end: false,
            });
        }
        payload.resize(payload_len as usize, 0);
        input
            .read_exact(&mut payload)
            .map_err(BufferError::io(path))?;
        if frame_checksum(&header, &payload) != crc {
            return Ok(Scan {
                records,
                good_end: at,
                cut: Some(cut(at, "checksum mismatch")),
                skipped_to_end: false,
            });
        }
        records += u64::from(count);
        at += FRAME_HEADER as u64 + u64::from(payload_len);
    }
    Ok(Scan {
        records,
        good_end: at,
        cut: None,
        skipped_to_end: false,
    })
}

/// The appending end. Frames are gathered into a group by [`DiskWriter::append`] and
/// written, fsynced (per the policy) and made readable together by [`DiskWriter::flush`].
#[derive(Debug)]
pub struct DiskWriter {
    shared: Arc<Shared>,
    config: DiskBufferConfig,
    segment: u64,
    file: File,
    /// Bytes in the segment file.
    size: u64,
    group: Vec<u8>,
    group_records: u64,
    unsynced: bool,
    /// `sync = "interval"`: the thread that fsyncs once a second what was appended.
    syncer: Option<JoinHandle<()>>,
}

impl DiskWriter {
    /// Adds one batch's payload to the group. Returns false when the buffer is full and
    /// `when_full = "drop_newest"` (the caller counts the drop); under `"block"` waits until
    /// a commit frees room, after flushing what the group holds.
    pub fn append(&mut self, payload: &[u8], records: u32) -> Result<bool, BufferError> {
        let frame_len = FRAME_HEADER + payload.len();
        if u32::try_from(payload.len()).is_err() {
            return Err(BufferError::FrameTooLarge {
                path: self.config.path.clone(),
                bytes: payload.len(),
            });
        }
        let frame_len64 = frame_len as u64;
        let max_size = self.config.max_size;
        let fits = |held: u64, group: u64| {
            // A frame larger than the whole cap is let into an empty buffer rather than never.
            held + group == 0 || held + group + frame_len64 <= max_size
        };
        if !fits(self.shared.lock().held_bytes, self.group.len() as u64) {
            match self.config.when_full {
                WhenFull::DropNewest => return Ok(false),
                WhenFull::Block => {
                    self.flush()?;
                    let mut state = self.shared.lock();
                    while !fits(state.held_bytes, 0) {
                        if state.reader_gone {
                            return Err(BufferError::ReaderGone {
                                path: self.config.path.clone(),
                            });
                        }
                        state = self
                            .shared
                            .room
                            .wait(state)
                            .unwrap_or_else(PoisonError::into_inner);
                    }
                }
            }
        }
        let in_segment = self.size + self.group.len() as u64;
        if in_segment > 0 && in_segment + frame_len64 > self.config.segment_size {
            self.flush()?;
            self.roll()?;
        }
        let mut header = [0u8; FRAME_HEADER];
        header[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        header[4..8].copy_from_slice(&records.to_le_bytes());
        let crc = frame_checksum(&header, payload);
        header[8..].copy_from_slice(&crc.to_le_bytes());
        self.group.extend_from_slice(&header);
        self.group.extend_from_slice(payload);
        self.group_records += u64::from(records);
        Ok(true)
    }

    /// Records gathered and not yet flushed.
    pub fn group_records(&self) -> u64 {
        self.group_records
    }

    /// Writes the group, fsyncs it under `sync = "batch"` (under `"interval"` the syncer
    /// thread does within a second), then lets the reader see it. On a failed write the segment is cut back
    /// to its last good end and the group's records are counted as dropped.
    pub fn flush(&mut self) -> Result<(), BufferError> {
        if self.group.is_empty() {
            return Ok(());
        }
        let written = self.file.write_all(&self.group).and_then(|()| {
            match self.config.sync {
                SyncPolicy::Batch => self.file.sync_data()?,
                SyncPolicy::Interval => {
                    self.unsynced = true;
                    self.shared.dirty.store(true, Ordering::Release);
                }
                SyncPolicy::None => self.unsynced = true,
            }
            Ok(())
        });
        let bytes = self.group.len() as u64;
        let records = self.group_records;
        self.group.clear();
        self.group_records = 0;
        if let Err(source) = written {
            // Leaves no half frame behind for the reader or the next open.
            let _ = self.file.set_len(self.size);
            self.shared.metrics.dropped(records as usize);
            return Err(BufferError::Io {
                path: self.shared.segment_path(self.segment),
                source,
            });
        }
        self.size += bytes;
        let mut state = self.shared.lock();
        state.write_end = Position {
            segment: self.segment,
            offset: self.size,
        };
        state.held_bytes += bytes;
        state.held_records += records;
        self.shared.publish_gauges(&state);
        drop(state);
        self.shared.appended.notify_one();
        Ok(())
    }

    /// Seals the current segment and starts the next.
    fn roll(&mut self) -> Result<(), BufferError> {
        let path = self.shared.segment_path(self.segment);
        if self.config.sync != SyncPolicy::None {
            self.file.sync_data().map_err(BufferError::io(&path))?;
        }
        let next = self.segment + 1;
        let file = create_segment(&self.shared.segment_path(next), self.config.sync)?;
        self.file = file;
        self.segment = next;
        self.size = 0;
        self.unsynced = false;
        let mut state = self.shared.lock();
        state.write_end = Position {
            segment: next,
            offset: 0,
        };
        drop(state);
        self.shared.appended.notify_one();
        Ok(())
    }

    /// Flushes, fsyncs whatever an `interval` policy left unsynced, and tells the reader that
    /// nothing more will come.
    pub fn finish(mut self) -> Result<(), BufferError> {
        self.flush()?;
        if self.unsynced && self.config.sync == SyncPolicy::Interval {
            let path = self.shared.segment_path(self.segment);
            self.file.sync_data().map_err(BufferError::io(&path))?;
        }
        Ok(())
    }
}

impl Drop for DiskWriter {
    fn drop(&mut self) {
        self.shared.lock().writer_done = true;
        self.shared.appended.notify_one();
        self.shared.writer_finished.notify_all();
        if let Some(syncer) = self.syncer.take() {
            let _ = syncer.join();
        }
    }
}

/// `sync = "interval"`: once a second, fsyncs the segment being appended to if anything was
/// appended since (a sealed segment was fsynced when the writer moved on). fsync applies to
/// the file, not the descriptor, so opening the segment by name is enough.
fn sync_every_interval(shared: &Shared) {
    let mut state = shared.lock();
    loop {
        let done = state.writer_done;
        if !done {
            state = shared
                .writer_finished
                .wait_timeout(state, SYNC_INTERVAL)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        if shared.dirty.swap(false, Ordering::AcqRel) {
            let path = shared.segment_path(state.write_end.segment);
            drop(state);
            if let Err(e) = File::open(&path).and_then(|f| f.sync_data()) {
                warn!(file = %path.display(), error = %e, "Could not fsync a disk buffer segment.");
            }
            state = shared.lock();
        }
        if done {
            return;
        }
    }
}

/// What the reader found.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// A frame's payload and its record count.
    Frame { payload: Vec<u8>, records: u32 },
    /// Nothing yet.
    Empty,
    /// The writer finished and everything was read.
    Finished,
}

impl Next {
    fn frame((payload, records): (Vec<u8>, u32)) -> Next {
        Next::Frame { payload, records }
    }
}

/// The reading end: hands frames out in order; [`DiskReader::commit`] acknowledges all of
/// them so far.
#[derive(Debug)]
pub struct DiskReader {
    shared: Arc<Shared>,
    /// The next frame to read.
    at: Position,
    file: Option<BufReader<File>>,
    /// The length of the current segment once the writer has moved past it.
    sealed_len: Option<u64>,
    /// Read and not yet acknowledged.
    handed_bytes: u64,
    handed_records: u64,
}

impl DiskReader {
    /// The next frame if one is there now.
    pub fn try_next(&mut self) -> Result<Next, BufferError> {
        loop {
            let (write_end, writer_done) = {
                let state = self.shared.lock();
                (state.write_end, state.writer_done)
            };
            if self.at.segment < write_end.segment {
                let sealed_len = match self.sealed_len {
                    Some(len) => len,
                    None => {
                        let path = self.shared.segment_path(self.at.segment);
                        let len = match fs::metadata(&path) {
                            Ok(meta) => meta.len(),
                            // A segment missing from the middle: nothing to read in it.
                            Err(e) if e.kind() == ErrorKind::NotFound => 0,
                            Err(source) => return Err(BufferError::Io { path, source }),
                        };
                        *self.sealed_len.insert(len)
                    }
                };
                if self.at.offset >= sealed_len {
                    self.at = Position {
                        segment: self.at.segment + 1,
                        offset: 0,
                    };
                    self.file = None;
                    self.sealed_len = None;
                    continue;
                }
                return self.read_frame(sealed_len).map(Next::frame);
            }
            if self.at.offset < write_end.offset {
                return self.read_frame(write_end.offset).map(Next::frame);
            }
            return Ok(if writer_done {
                Next::Finished
            } else {
                Next::Empty
            });
        }
    }

    /// The next frame, waiting for the writer; `None` once it finished and all was read.
    pub async fn next(&mut self) -> Result<Option<(Vec<u8>, u32)>, BufferError> {
        loop {
            match self.try_next()? {
                Next::Frame { payload, records } => return Ok(Some((payload, records))),
                Next::Finished => {
                    if self.handed_bytes == 0 {
                        self.remove_if_drained()?;
                    }
                    return Ok(None);
                }
                Next::Empty => self.shared.appended.notified().await,
            }
        }
    }

    /// Reads the frame at `self.at`, which ends at or before `end`.
    fn read_frame(&mut self, end: u64) -> Result<(Vec<u8>, u32), BufferError> {
        let path = self.shared.segment_path(self.at.segment);
        let input = match &mut self.file {
            Some(input) => input,
            None => {
                let mut file = File::open(&path).map_err(BufferError::io(&path))?;
                file.seek(SeekFrom::Start(self.at.offset))
                    .map_err(BufferError::io(&path))?;
                self.file
                    .insert(BufReader::with_capacity(READ_BUFFER, file))
            }
        };
        let corrupt = |reason| BufferError::Corrupt {
            path: path.clone(),
            offset: self.at.offset,
            reason,
        };
        if end - self.at.offset < FRAME_HEADER as u64 {
            return Err(corrupt("torn frame header"));
        }
        let mut header = [0u8; FRAME_HEADER];
        input
            .read_exact(&mut header)
            .map_err(BufferError::io(&path))?;
        let (payload_len, records, crc) = parse_header(&header);
        let frame_len = FRAME_HEADER as u64 + u64::from(payload_len);
        if frame_len > end - self.at.offset {
            return Err(corrupt("torn frame (its length runs past the end)"));
        }
        let mut payload = vec![0u8; payload_len as usize];
        input
            .read_exact(&mut payload)
            .map_err(BufferError::io(&path))?;
        if frame_checksum(&header, &payload) != crc {
            return Err(corrupt("checksum mismatch"));
        }
        self.at.offset += frame_len;
        self.handed_bytes += frame_len;
        self.handed_records += u64::from(records);
        Ok((payload, records))
    }

    /// Gives up on the rest of the current segment after [`BufferError::Corrupt`] while
    /// reading: its bytes count as handed out, so the next commit lets go of them.
    pub fn skip_segment(&mut self) {
        let write_end = self.shared.lock().write_end;
        let end = if self.at.segment < write_end.segment {
            self.sealed_len.unwrap_or(self.at.offset)
        } else {
            write_end.offset
        };
        self.handed_bytes += end.saturating_sub(self.at.offset);
        self.at.offset = end;
        self.file = None;
        if self.at.segment < write_end.segment {
            self.at = Position {
                segment: self.at.segment + 1,
                offset: 0,
            };
            self.sealed_len = None;
        }
    }

    /// Acknowledges every frame read so far: persists the position, frees their room and
    /// deletes the segments before it.
    pub fn commit(&mut self) -> Result<(), BufferError> {
        if self.handed_bytes == 0 {
            return Ok(());
        }
        if self.shared.lock().removed {
            return Ok(());
        }
        write_ack(&self.shared.dir, self.at)?;
        let first_segment = {
            let mut state = self.shared.lock();
            state.held_bytes = state.held_bytes.saturating_sub(self.handed_bytes);
            state.held_records = state.held_records.saturating_sub(self.handed_records);
            self.shared.publish_gauges(&state);
            let first = state.first_segment;
            state.first_segment = first.max(self.at.segment);
            first
        };
        self.handed_bytes = 0;
        self.handed_records = 0;
        self.shared.room.notify_all();
        for segment in first_segment..self.at.segment {
            let path = self.shared.segment_path(segment);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(source) => return Err(BufferError::Io { path, source }),
            }
        }
        self.remove_if_drained()
    }

    /// Once the writer finished and every frame was acknowledged, the files go: the next
    /// run starts empty.
    fn remove_if_drained(&mut self) -> Result<(), BufferError> {
        let mut state = self.shared.lock();
        let drained = state.writer_done
            && !state.removed
            && self.handed_bytes == 0
            && self.at >= state.write_end;
        if !drained {
            return Ok(());
        }
        state.removed = true;
        let last = state.write_end.segment;
        let first = state.first_segment;
        drop(state);
        for segment in first..=last {
            let path = self.shared.segment_path(segment);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(source) => return Err(BufferError::Io { path, source }),
            }
        }
        // The format marker last: without segments, a directory's layout does not matter.
        for file in [ACK_FILE, FORMAT_FILE] {
            let path = self.shared.dir.join(file);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(source) => return Err(BufferError::Io { path, source }),
            }
        }
        Ok(())
    }

    /// Records read and not yet acknowledged.
    pub fn handed_records(&self) -> u64 {
        self.handed_records
    }
}

impl Drop for DiskReader {
    fn drop(&mut self) {
        self.shared.lock().reader_gone = true;
        self.shared.room.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(
        dir: &Path,
        segment_size: u64,
        max_size: u64,
        when_full: WhenFull,
    ) -> DiskBufferConfig {
        DiskBufferConfig {
            path: dir.to_owned(),
            max_size,
            segment_size,
            when_full,
            sync: SyncPolicy::Batch,
        }
    }

    fn open_at(config: &DiskBufferConfig) -> (DiskWriter, DiskReader, OpenReport) {
        open(config.clone(), Arc::new(SinkMetrics::default())).expect("the buffer opens")
    }

    fn payload(i: usize) -> Vec<u8> {
        format!("frame number {i:04}").into_bytes()
    }

    fn append_all(writer: &mut DiskWriter, frames: std::ops::Range<usize>) {
        for i in frames {
            assert!(writer.append(&payload(i), 1).expect("appends"));
            if i % 3 == 0 {
                writer.flush().expect("flushes");
            }
        }
        writer.flush().expect("flushes");
    }

    /// Reads every frame available now, as frame numbers.
    fn read_available(reader: &mut DiskReader) -> Vec<usize> {
        let mut read = Vec::new();
        while let Next::Frame { payload, records } = reader.try_next().expect("reads") {
            assert_eq!(records, 1);
            let text = String::from_utf8(payload).expect("utf-8");
            let number = text.strip_prefix("frame number ").expect("a test frame");
            read.push(number.parse().expect("a number"));
        }
        read
    }

    fn segment_files(dir: &Path) -> Vec<u64> {
        list_segments(dir).expect("lists")
    }

    #[test]
    fn a_buffer_in_another_records_layout_is_refused_and_left_as_it_is() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = config(dir.path(), 1 << 20, 1 << 30, WhenFull::Block);
        {
            let (mut writer, _reader, _) = open_at(&config);
            append_all(&mut writer, 0..3);
        }
        let format = dir.path().join(FORMAT_FILE);
        assert_eq!(
            fs::read_to_string(&format).expect("marked").trim(),
            codec::FORMAT
        );
        // Reopening in the same layout keeps every record.
        let (_writer, mut reader, report) = open_at(&config);
        assert_eq!(report.records, 3);
        assert_eq!(read_available(&mut reader), [0, 1, 2]);
        drop((_writer, reader));

        for marker in [Some("sluice-records 999"), None] {
            match marker {
                Some(text) => fs::write(&format, text).expect("written"),
                None => fs::remove_file(&format).expect("removed"),
            }
            let Err(error) = open(config.clone(), Arc::new(SinkMetrics::default())) else {
                panic!("a buffer in another layout opened");
            };
            let message = error.to_string();
            assert!(matches!(error, BufferError::Format { .. }), "{message}");
            assert!(message.contains(codec::FORMAT), "{message}");
            assert!(
                message.contains(marker.unwrap_or("sluice-records 1")),
                "{message}"
            );
            // Nothing was read, cut or deleted.
            assert_eq!(segment_files(dir.path()).len(), 1);
        }
    }

    #[test]
    fn an_empty_buffer_of_another_layout_starts_over_in_this_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::write(dir.path().join(FORMAT_FILE), "sluice-records 1\n").expect("written");
        let config = config(dir.path(), 1 << 20, 1 << 30, WhenFull::Block);
        let (_writer, _reader, report) = open_at(&config);
        assert_eq!(report.records, 0);
        assert_eq!(
            fs::read_to_string(dir.path().join(FORMAT_FILE))
                .expect("marked")
                .trim(),
            codec::FORMAT
        );
    }

    #[test]
    fn frames_come_back_in_order_across_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        // 29-byte frames, 100-byte segments: three frames a segment.
        let config = config(dir.path(), 100, 1 << 20, WhenFull::Block);
        let (mut writer, mut reader, report) = open_at(&config);
        assert_eq!(
            report,
            OpenReport {
                segments: 0,
                ..OpenReport::default()
            }
        );
        append_all(&mut writer, 0..20);
        assert!(segment_files(dir.path()).len() >= 6);
        assert_eq!(read_available(&mut reader), (0..20).collect::<Vec<_>>());
        drop(writer);
        assert_eq!(reader.try_next().expect("reads"), Next::Finished);
    }

    #[test]
    fn commit_deletes_fully_acknowledged_segments_and_a_drained_buffer_leaves_no_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config(dir.path(), 100, 1 << 20, WhenFull::Block);
        let (mut writer, mut reader, _) = open_at(&config);
        append_all(&mut writer, 0..20);
        let before = segment_files(dir.path());
        for _ in 0..10 {
            assert!(matches!(reader.try_next(), Ok(Next::Frame { .. })));
        }
        reader.commit().expect("commits");
        let after = segment_files(dir.path());
        assert!(after.len() < before.len(), "{before:?} -> {after:?}");
        assert_eq!(after.last(), before.last());
        // Frames 0..9 filled the first three segments (9 frames) and began the fourth.
        assert_eq!(after.first(), Some(&(before[0] + 3)));

        assert_eq!(read_available(&mut reader), (10..20).collect::<Vec<_>>());
        drop(writer);
        reader.commit().expect("commits");
        assert_eq!(reader.try_next().expect("reads"), Next::Finished);
        reader.remove_if_drained().expect("removes");
        let left: Vec<_> = fs::read_dir(dir.path()).expect("lists").collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn reopening_redelivers_what_was_not_committed_and_only_that() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config(dir.path(), 100, 1 << 20, WhenFull::Block);
        {
            let (mut writer, mut reader, _) = open_at(&config);
            append_all(&mut writer, 0..12);
            assert_eq!(read_available(&mut reader).len(), 12);
            // Acknowledge 0..12, hand out 12..15 without acknowledging, then "crash".
            reader.commit().expect("commits");
            append_all(&mut writer, 12..15);
            assert_eq!(read_available(&mut reader), vec![12, 13, 14]);
        }
        let (mut writer, mut reader, report) = open_at(&config);
        assert_eq!(report.records, 3);
        assert!(report.cut.is_empty());
        append_all(&mut writer, 15..17);
        assert_eq!(read_available(&mut reader), vec![12, 13, 14, 15, 16]);
    }

    /// The newest segment and where its last frame starts.
    fn last_frame(dir: &Path) -> (PathBuf, u64, u64) {
        let last = *segment_files(dir).last().expect("a segment");
        let path = segment_path(dir, last);
        let len = fs::metadata(&path).expect("metadata").len();
        let frame = (FRAME_HEADER + payload(0).len()) as u64;
        (path, len - frame, len)
    }

    #[test]
    fn a_corrupt_tail_is_cut_at_its_offset_and_the_good_records_are_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config(dir.path(), 100, 1 << 20, WhenFull::Block);
        {
            let (mut writer, _, _) = open_at(&config);
            append_all(&mut writer, 0..8);
        }
        let (path, offset, len) = last_frame(dir.path());
        let mut bytes = fs::read(&path).expect("reads");
        let flip = bytes.len() - 2;
        bytes[flip] ^= 0x40;
        fs::write(&path, bytes).expect("writes");

        let (_writer, mut reader, report) = open_at(&config);
        assert_eq!(
            report.cut,
            vec![CutTail {
                file: path.clone(),
                offset,
                bytes_cut: len - offset,
                reason: "checksum mismatch",
            }]
        );
        assert_eq!(report.records, 7);
        assert_eq!(fs::metadata(&path).expect("metadata").len(), offset);
        assert_eq!(read_available(&mut reader), (0..7).collect::<Vec<_>>());
    }

    #[test]
    fn a_torn_tail_is_cut_and_appending_continues_after_the_good_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config(dir.path(), 100, 1 << 20, WhenFull::Block);
        {
            let (mut writer, _, _) = open_at(&config);
            append_all(&mut writer, 0..8);
        }
        let (path, offset, _) = last_frame(dir.path());
        let file = OpenOptions::new().write(true).open(&path).expect("opens");
        file.set_len(offset + 5).expect("truncates");

        let (mut writer, mut reader, report) = open_at(&config);
        assert_eq!(report.cut.len(), 1);
        assert_eq!(report.cut[0].file, path);
        assert_eq!(report.cut[0].offset, offset);
        assert_eq!(report.cut[0].bytes_cut, 5);
        append_all(&mut writer, 8..10);
        assert_eq!(read_available(&mut reader), vec![0, 1, 2, 3, 4, 5, 6, 8, 9]);
    }

    #[test]
    fn drop_newest_refuses_frames_past_the_cap_until_a_commit_frees_room() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Room for three 29-byte frames.
        let config = config(dir.path(), 1 << 20, 95, WhenFull::DropNewest);
        let (mut writer, mut reader, _) = open_at(&config);
        let taken: Vec<bool> = (0..5)
            .map(|i| writer.append(&payload(i), 1).expect("appends"))
            .collect();
        assert_eq!(taken, vec![true, true, true, false, false]);
        writer.flush().expect("flushes");
        assert_eq!(read_available(&mut reader), vec![0, 1, 2]);
        assert!(!writer.append(&payload(5), 1).expect("appends"));
        reader.commit().expect("commits");
        assert!(writer.append(&payload(6), 1).expect("appends"));
    }

    #[test]
    fn block_waits_for_a_commit_to_free_room() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config(dir.path(), 1 << 20, 95, WhenFull::Block);
        let (mut writer, mut reader, _) = open_at(&config);
        append_all(&mut writer, 0..3);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let blocked = std::thread::spawn(move || {
            let taken = writer.append(&payload(3), 1).expect("appends");
            writer.flush().expect("flushes");
            done_tx.send(taken).expect("the test waits");
        });
        assert_eq!(read_available(&mut reader), vec![0, 1, 2]);
        assert!(done_rx.try_recv().is_err(), "appended into a full buffer");
        reader.commit().expect("commits");
        let taken = done_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the commit unblocks the writer");
        assert!(taken);
        blocked.join().expect("the writer thread ends");
        assert_eq!(read_available(&mut reader), vec![3]);
    }

    #[test]
    fn interval_sync_leaves_nothing_unsynced_once_the_writer_is_gone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = config(dir.path(), 100, 1 << 20, WhenFull::Block);
        config.sync = SyncPolicy::Interval;
        let (mut writer, mut reader, _) = open_at(&config);
        append_all(&mut writer, 0..5);
        // Dropping the writer wakes its syncer, which fsyncs and ends (the drop joins it).
        drop(writer);
        assert!(!reader.shared.dirty.load(Ordering::Acquire));
        assert_eq!(read_available(&mut reader), (0..5).collect::<Vec<_>>());
        assert_eq!(reader.try_next().expect("reads"), Next::Finished);
    }

    #[test]
    fn a_stale_ack_past_a_cut_tail_starts_at_the_segment_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config(dir.path(), 1 << 20, 1 << 20, WhenFull::Block);
        {
            let (mut writer, mut reader, _) = open_at(&config);
            append_all(&mut writer, 0..4);
            assert_eq!(read_available(&mut reader).len(), 4);
            reader.commit().expect("commits");
        }
        let (path, offset, _) = last_frame(dir.path());
        OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(offset))
            .expect("truncates");
        let (mut writer, mut reader, report) = open_at(&config);
        assert_eq!(report.records, 0);
        append_all(&mut writer, 4..6);
        assert_eq!(read_available(&mut reader), vec![4, 5]);
    }
}
