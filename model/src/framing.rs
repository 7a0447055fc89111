//! The replay file framing of SPEC §1.3: each record is a protobuf varint length followed by
//! that many bytes (protobuf's standard "length-delimited" framing), and [`ReplayWriter`],
//! the one writer of replay files (plain, or gzip for a `.gz` name).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use bytes::{Buf, Bytes, BytesMut};
use flate2::Compression;
use flate2::write::GzEncoder;

/// The largest record accepted by default: far above any real envelope (the Firehose drops
/// envelopes over 64 KiB), small enough that a corrupt length cannot make us buffer gigabytes.
pub const DEFAULT_MAX_RECORD: usize = 16 * 1024 * 1024;

/// A framing problem at a record boundary.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix is not a valid varint (more than 10 bytes).
    #[error("malformed length prefix")]
    MalformedLength,
    /// The length prefix announces more than the limit: corrupt data, most likely.
    #[error("record length {len} exceeds the limit of {max} bytes")]
    Oversized { len: u64, max: usize },
    /// The data ends inside a record (or its length prefix).
    #[error("the data ends inside a record: {missing} more bytes were expected")]
    Truncated { missing: usize },
}

impl FrameError {
    /// The reason label used in the bad-record counters.
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::MalformedLength | FrameError::Oversized { .. } => "oversized_frame",
            FrameError::Truncated { .. } => "truncated_frame",
        }
    }
}

/// Appends one record to `out`: its varint length, then its bytes.
pub fn write_frame(out: &mut Vec<u8>, record: &[u8]) {
    prost::encoding::encode_varint(record.len() as u64, out);
    out.extend_from_slice(record);
}

/// A replay file being written: framed records in, gzip-compressed when the file's name ends
/// in `.gz`. [`ReplayWriter::finish`] completes the file (the gzip trailer), flushes it and
/// fsyncs it, so a file a capture reports as written survives a crash; a writer dropped
/// without it leaves a file that may lack its tail.
pub struct ReplayWriter {
    out: Output,
}

enum Output {
    Plain(BufWriter<File>),
    Gzip(GzEncoder<BufWriter<File>>),
}

impl ReplayWriter {
    /// Creates (or truncates) the file at `path`.
    pub fn create(path: &Path) -> io::Result<ReplayWriter> {
        let file = BufWriter::with_capacity(1 << 20, File::create(path)?);
        let out = if path.extension().is_some_and(|e| e == "gz") {
            // Captures are large and written while a Firehose streams: favour speed.
            Output::Gzip(GzEncoder::new(file, Compression::fast()))
        } else {
            Output::Plain(file)
        };
        Ok(ReplayWriter { out })
    }

    /// Appends one record, framed.
    pub fn write_record(&mut self, record: &[u8]) -> io::Result<()> {
        let mut frame = Vec::with_capacity(record.len() + 10);
        write_frame(&mut frame, record);
        self.write_framed(&frame)
    }

    /// Appends bytes that are already whole frames (see [`write_frame`]).
    pub fn write_framed(&mut self, frames: &[u8]) -> io::Result<()> {
        match &mut self.out {
            Output::Plain(w) => w.write_all(frames),
            Output::Gzip(w) => w.write_all(frames),
        }
    }

    /// Completes, flushes and fsyncs the file; returns its size on disk.
    pub fn finish(self) -> io::Result<u64> {
        let buffered = match self.out {
            Output::Plain(w) => w,
            Output::Gzip(w) => w.finish()?,
        };
        let file = buffered
            .into_inner()
            .map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        Ok(file.metadata()?.len())
    }
}

/// Splits the next complete record off the front of `buf`.
///
/// `Ok(None)` means more data is needed (`buf` is left as it was). An error leaves `buf` as it
/// was too: after a bad length there is no way to find the next record boundary, so a reader
/// reports it and stops.
pub fn split_frame(buf: &mut BytesMut, max_len: usize) -> Result<Option<Bytes>, FrameError> {
    let mut len: u64 = 0;
    let mut prefix = 0;
    loop {
        let Some(&byte) = buf.get(prefix) else {
            return Ok(None);
        };
        if prefix == 10 {
            return Err(FrameError::MalformedLength);
        }
        len |= u64::from(byte & 0x7f) << (7 * prefix);
        prefix += 1;
        if byte & 0x80 == 0 {
            break;
        }
    }
    if len > max_len as u64 {
        return Err(FrameError::Oversized { len, max: max_len });
    }
    let len = len as usize;
    if buf.len() < prefix + len {
        return Ok(None);
    }
    buf.advance(prefix);
    Ok(Some(buf.split_to(len).freeze()))
}

/// The records of a complete buffer, in order; a damaged tail ends the iteration with its error.
/// Each item carries the byte offset of the record's length prefix.
pub fn frames(data: &[u8]) -> Frames {
    Frames {
        buf: BytesMut::from(data),
        offset: 0,
        done: false,
    }
}

/// Iterator returned by [`frames`].
#[derive(Debug)]
pub struct Frames {
    buf: BytesMut,
    offset: u64,
    done: bool,
}

impl Iterator for Frames {
    type Item = (u64, Result<Bytes, FrameError>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.buf.is_empty() {
            return None;
        }
        let offset = self.offset;
        let before = self.buf.len();
        match split_frame(&mut self.buf, DEFAULT_MAX_RECORD) {
            Ok(Some(record)) => {
                self.offset += (before - self.buf.len()) as u64;
                Some((offset, Ok(record)))
            }
            Ok(None) => {
                self.done = true;
                Some((offset, Err(truncation(&self.buf))))
            }
            Err(error) => {
                self.done = true;
                Some((offset, Err(error)))
            }
        }
    }
}

/// Describes the incomplete record at the front of `buf` (which `split_frame` left unsplit).
pub fn truncation(buf: &[u8]) -> FrameError {
    let mut cursor = buf;
    match prost::encoding::decode_varint(&mut cursor) {
        Ok(len) => {
            // Saturating: `len` may be anything a damaged prefix says (found by fuzzing).
            let prefix = (buf.len() - cursor.len()) as u64;
            let missing = (prefix.saturating_add(len)).saturating_sub(buf.len() as u64);
            FrameError::Truncated {
                missing: usize::try_from(missing).unwrap_or(usize::MAX),
            }
        }
        Err(_) => FrameError::Truncated { missing: 1 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_of_a_huge_length_prefix_does_not_overflow() {
        let mut buf = Vec::new();
        prost::encoding::encode_varint(u64::MAX, &mut buf);
        buf.push(1);
        let FrameError::Truncated { missing } = truncation(&buf) else {
            panic!("a truncation");
        };
        assert!(missing as u64 >= u64::from(u32::MAX), "{missing}");
    }

    #[test]
    fn a_replay_writer_writes_plain_and_gzip_files_that_read_back() {
        let dir = tempfile::tempdir().expect("a temp dir");
        for name in ["r.bin", "r.bin.gz"] {
            let path = dir.path().join(name);
            let mut writer = ReplayWriter::create(&path).expect("created");
            writer.write_record(b"one").expect("written");
            let mut framed = Vec::new();
            write_frame(&mut framed, b"two");
            writer.write_framed(&framed).expect("written");
            let size = writer.finish().expect("finished");
            let raw = std::fs::read(&path).expect("read");
            assert_eq!(size, raw.len() as u64);
            let data = if name.ends_with(".gz") {
                let mut plain = Vec::new();
                io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&raw[..]), &mut plain)
                    .expect("a complete gzip stream");
                plain
            } else {
                raw
            };
            let records: Vec<Bytes> = frames(&data).map(|(_, r)| r.expect("whole")).collect();
            assert_eq!(records, [&b"one"[..], &b"two"[..]], "{name}");
        }
    }

    #[test]
    fn records_round_trip_with_their_offsets() {
        let big = vec![7u8; 300];
        let mut data = Vec::new();
        write_frame(&mut data, b"one");
        write_frame(&mut data, &big);
        write_frame(&mut data, b"");
        let got: Vec<_> = frames(&data).collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], (0, Ok(Bytes::from_static(b"one"))));
        assert_eq!(got[1].0, 4);
        assert_eq!(got[1].1.as_ref().map(|b| b.len()), Ok(300));
        assert_eq!(got[2], (4 + 2 + 300, Ok(Bytes::new())));
    }

    #[test]
    fn a_truncated_tail_is_reported_after_the_good_records() {
        let mut data = Vec::new();
        write_frame(&mut data, b"good");
        write_frame(&mut data, b"cut short");
        data.truncate(data.len() - 4);
        let got: Vec<_> = frames(&data).collect();
        assert_eq!(got[0], (0, Ok(Bytes::from_static(b"good"))));
        assert_eq!(got[1], (5, Err(FrameError::Truncated { missing: 4 })));
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn split_frame_waits_for_more_data_and_rejects_huge_lengths() {
        let mut buf = BytesMut::from(&[0x85, 0x01][..]);
        assert_eq!(split_frame(&mut buf, 1024), Ok(None));
        assert_eq!(buf.len(), 2, "an incomplete record is left in place");
        let mut huge = BytesMut::new();
        let mut prefix = Vec::new();
        prost::encoding::encode_varint(1 << 40, &mut prefix);
        huge.extend_from_slice(&prefix);
        assert_eq!(
            split_frame(&mut huge, 1024),
            Err(FrameError::Oversized {
                len: 1 << 40,
                max: 1024
            })
        );
        let mut endless = BytesMut::from(&[0xff; 11][..]);
        assert_eq!(
            split_frame(&mut endless, 1024),
            Err(FrameError::MalformedLength)
        );
    }
}
