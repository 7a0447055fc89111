//! The frame around one batch's payload, the unit the buffer writes, checks and reads:
//! `len: u32 | records: u32 | crc32: u32 | payload`, little-endian, the checksum covering
//! `len`, `records` and the payload.
//!
//! The writer frames with [`encode`]; the scan on open and the reader take a frame apart with
//! [`Header::read`] and [`Header::check`], so both find the same [`Damage`] in the same bytes.

use std::io::{self, Read};

/// Bytes before a frame's payload.
pub const FRAME_HEADER: usize = 12;

/// Why the bytes at a place are not a whole, intact frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Damage {
    /// Fewer bytes are left than a header takes.
    TornHeader,
    /// The header's length runs past the end.
    TornFrame,
    /// The checksum does not match the header and payload.
    Checksum,
}

impl Damage {
    /// As [`CutTail::reason`](super::CutTail::reason) and
    /// [`BufferError::Corrupt`](crate::BufferError::Corrupt) say it.
    pub(super) fn reason(self) -> &'static str {
        match self {
            Damage::TornHeader => "torn frame header",
            Damage::TornFrame => "torn frame (its length runs past the end)",
            Damage::Checksum => "checksum mismatch",
        }
    }
}

/// Appends the frame of `payload`, which holds `records` records, to `out`. The payload's
/// length must fit a `u32` (the writer refuses larger ones first).
pub(super) fn encode(payload: &[u8], records: u32, out: &mut Vec<u8>) {
    let mut header = [0u8; FRAME_HEADER];
    header[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    header[4..8].copy_from_slice(&records.to_le_bytes());
    let crc = checksum(&header, payload);
    header[8..].copy_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
}

/// A frame's header as read, not yet checked against its payload.
#[derive(Debug)]
pub(super) struct Header([u8; FRAME_HEADER]);

impl Header {
    /// Reads the header of the frame `input` is at, `remaining` bytes before the end of what
    /// may be read. `Ok(Err(_))` when those bytes cannot hold the frame: nothing past the
    /// header is read then.
    pub(super) fn read(
        input: &mut impl Read,
        remaining: u64,
    ) -> io::Result<Result<Header, Damage>> {
        if remaining < FRAME_HEADER as u64 {
            return Ok(Err(Damage::TornHeader));
        }
        let mut bytes = [0u8; FRAME_HEADER];
        input.read_exact(&mut bytes)?;
        let header = Header(bytes);
        if header.frame_len() > remaining {
            return Ok(Err(Damage::TornFrame));
        }
        Ok(Ok(header))
    }

    fn word(&self, i: usize) -> u32 {
        u32::from_le_bytes([self.0[i], self.0[i + 1], self.0[i + 2], self.0[i + 3]])
    }

    /// The payload's length.
    pub(super) fn payload_len(&self) -> usize {
        self.word(0) as usize
    }

    /// The records in the payload.
    pub(super) fn records(&self) -> u32 {
        self.word(4)
    }

    /// The whole frame's length, header included.
    pub(super) fn frame_len(&self) -> u64 {
        FRAME_HEADER as u64 + u64::from(self.word(0))
    }

    /// Whether `payload`, read after this header, is the one it was written with.
    pub(super) fn check(&self, payload: &[u8]) -> Result<(), Damage> {
        if checksum(&self.0, payload) == self.word(8) {
            Ok(())
        } else {
            Err(Damage::Checksum)
        }
    }
}

/// Where the next intact frame starts in `bytes` (which begin at a damaged frame): the first
/// offset past 0 holding a header whose length fits, whose record count is plausible (at
/// least one, at most one per payload byte) and whose checksum matches its payload. A
/// false match needs a 32-bit checksum to agree by chance.
pub(super) fn resync(bytes: &[u8]) -> Option<usize> {
    (1..bytes.len().saturating_sub(FRAME_HEADER - 1)).find(|&at| {
        let Ok(header) = <[u8; FRAME_HEADER]>::try_from(&bytes[at..at + FRAME_HEADER]) else {
            return false;
        };
        let header = Header(header);
        let len = header.payload_len();
        let records = header.records() as usize;
        let start = at + FRAME_HEADER;
        len <= bytes.len() - start
            && records >= 1
            && records <= len.max(1)
            && header.check(&bytes[start..start + len]).is_ok()
    })
}

/// The CRC-32 of a header's `len` and `records` and of the payload.
fn checksum(header: &[u8; FRAME_HEADER], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[..8]);
    hasher.update(payload);
    hasher.finalize()
}
