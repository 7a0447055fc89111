//! The reading end: frames handed out in order, across segments as the writer seals them;
//! a commit acknowledges all of them so far, frees their room and deletes the segments read
//! past.

use std::fs::{self, File};
use std::io::{BufReader, ErrorKind, Read, Seek, SeekFrom};
use std::sync::Arc;

use super::frame::Header;
use super::{Position, READ_BUFFER, Shared, ledger, remove_if_present};
use crate::BufferError;

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
    pub(super) shared: Arc<Shared>,
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
    /// The reader of a buffer just opened, whose first unacknowledged frame is at `at`.
    pub(super) fn new(shared: Arc<Shared>, at: Position) -> DiskReader {
        DiskReader {
            shared,
            at,
            file: None,
            sealed_len: None,
            handed_bytes: 0,
            handed_records: 0,
        }
    }

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
                return self.read_or_resync(sealed_len).map(Next::frame);
            }
            if self.at.offset < write_end.offset {
                return self.read_or_resync(write_end.offset).map(Next::frame);
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

    /// [`read_frame`](Self::read_frame), resynchronising past corrupt frames: a damaged frame
    /// followed by an intact one is skipped (its bytes count as handed out, so the next
    /// commit lets go of them, and in `buffer_skipped_bytes`); with no intact frame after it,
    /// the damage is returned.
    fn read_or_resync(&mut self, end: u64) -> Result<(Vec<u8>, u32), BufferError> {
        loop {
            match self.read_frame(end) {
                Err(BufferError::Corrupt {
                    path,
                    offset,
                    reason,
                }) => {
                    self.file = None;
                    let Some(next) = super::segment::resync_at(&path, offset, end)? else {
                        return Err(BufferError::Corrupt {
                            path,
                            offset,
                            reason,
                        });
                    };
                    let skipped = next - offset;
                    self.at.offset = next;
                    self.handed_bytes += skipped;
                    self.shared.metrics.buffer_skipped_bytes.add(skipped);
                    tracing::warn!(
                        file = %path.display(),
                        offset,
                        bytes_skipped = skipped,
                        reason,
                        "Skipped a corrupt disk buffer frame; reading resumed at the next intact one."
                    );
                }
                other => return other,
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
        let corrupt = |damage: super::frame::Damage| BufferError::Corrupt {
            path: path.clone(),
            offset: self.at.offset,
            reason: damage.reason(),
        };
        let header = Header::read(input, end - self.at.offset)
            .map_err(BufferError::io(&path))?
            .map_err(corrupt)?;
        let mut payload = vec![0u8; header.payload_len()];
        input
            .read_exact(&mut payload)
            .map_err(BufferError::io(&path))?;
        header.check(&payload).map_err(corrupt)?;
        let frame_len = header.frame_len();
        self.at.offset += frame_len;
        self.handed_bytes += frame_len;
        self.handed_records += u64::from(header.records());
        Ok((payload, header.records()))
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
        ledger::write_ack(&self.shared.dir, self.at)?;
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
            remove_if_present(self.shared.segment_path(segment))?;
        }
        self.remove_if_drained()
    }

    /// Once the writer finished and every frame was acknowledged, the files go: the next
    /// run starts empty.
    pub(super) fn remove_if_drained(&mut self) -> Result<(), BufferError> {
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
            remove_if_present(self.shared.segment_path(segment))?;
        }
        ledger::remove(&self.shared.dir)
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
