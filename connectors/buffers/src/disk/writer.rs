//! The appending end: frames gathered into groups, each written (and fsynced, per the sync
//! policy) at once, segments rolled past `segment_size`, and `when_full` applied against the
//! bytes still unacknowledged.

use std::fs::File;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::warn;

use super::frame::{self, FRAME_HEADER};
use super::{DiskBufferConfig, Position, Shared, segment};
use crate::{BufferError, SyncPolicy, WhenFull};

/// `interval` fsyncs at most this often.
const SYNC_INTERVAL: Duration = Duration::from_secs(1);

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
    /// The writer of a buffer just opened, appending to `file`, segment `segment`, which
    /// holds `size` bytes. Under `sync = "interval"` it starts its syncer thread.
    pub(super) fn new(
        shared: Arc<Shared>,
        config: DiskBufferConfig,
        segment: u64,
        file: File,
        size: u64,
    ) -> Result<DiskWriter, BufferError> {
        let syncer = if config.sync == SyncPolicy::Interval {
            let shared = shared.clone();
            let spawned = std::thread::Builder::new()
                .name("buffer-sync".to_owned())
                .spawn(move || sync_every_interval(&shared));
            Some(spawned.map_err(BufferError::io(&config.path))?)
        } else {
            None
        };
        Ok(DiskWriter {
            shared,
            config,
            segment,
            file,
            size,
            group: Vec::new(),
            group_records: 0,
            unsynced: false,
            syncer,
        })
    }

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
        frame::encode(payload, records, &mut self.group);
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
        let file = segment::create(&self.shared.segment_path(next), self.config.sync)?;
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
