//! A cursor over the fields of one protobuf message inside a frame.
//!
//! A [`Reader`] walks the bytes of one message (the whole frame for the envelope, a sub-range for
//! an embedded message) once, front to back. Strings and bytes come out as slices of the frame
//! (a reference-count bump, no copy) or, for recurring values, as [interned](super::intern)
//! strings; numbers are decoded in place. Every problem is reported as a [`DecodeError`] naming
//! the message and field it was found in.

use std::ops::Range;

use bytes::Bytes;

use super::intern;
use crate::DecodeError;
use crate::event::Str;

/// What the decoding functions return. The error is boxed so that results travel in registers:
/// a `DecodeError` is five words, and errors are the rare path.
pub(super) type Decoded<T> = Result<T, Box<DecodeError>>;

/// Protobuf wire types (the low three bits of a field key).
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;
/// Bit `w` set for each wire type `w` this decoder reads (groups, 3 and 4, are not).
const SUPPORTED_WIRE_TYPES: u8 = 1 << VARINT | 1 << FIXED64 | 1 << LEN | 1 << FIXED32;

/// Reads the fields of one message. Call [`next_field`](Reader::next_field), then exactly one
/// value method (or [`skip`](Reader::skip)) for the field it returned.
pub(super) struct Reader<'f> {
    frame: &'f Bytes,
    /// The frame up to the end of this message: indexing past it is running out of bytes.
    data: &'f [u8],
    pos: usize,
    /// The schema name of the message, for errors.
    message: &'static str,
    /// The number and wire type of the field being read (0 while reading a key).
    field: u32,
    wire_type: u8,
}

impl<'f> Reader<'f> {
    /// A reader over the whole frame.
    pub(super) fn new(frame: &'f Bytes, message: &'static str) -> Reader<'f> {
        Reader::over(frame, 0..frame.len(), message)
    }

    fn over(frame: &'f Bytes, range: Range<usize>, message: &'static str) -> Reader<'f> {
        Reader {
            frame,
            data: &frame[..range.end],
            pos: range.start,
            message,
            field: 0,
            wire_type: 0,
        }
    }

    /// The number of the next field, or `None` at the end of the message.
    #[inline(always)]
    pub(super) fn next_field(&mut self) -> Decoded<Option<u32>> {
        let Some(&byte) = self.data.get(self.pos) else {
            return Ok(None);
        };
        // The common case inline: a one-byte key (fields 1 to 15) of a supported wire type.
        let wire_type = byte & 7;
        if (8..0x80).contains(&byte) && SUPPORTED_WIRE_TYPES >> wire_type & 1 == 1 {
            self.pos += 1;
            self.field = u32::from(byte >> 3);
            self.wire_type = wire_type;
            return Ok(Some(self.field));
        }
        self.long_key()
    }

    #[inline(never)]
    fn long_key(&mut self) -> Decoded<Option<u32>> {
        self.field = 0;
        let key = self.varint()?;
        let Ok(key) = u32::try_from(key) else {
            return Err(self.malformed("a field key is larger than 32 bits"));
        };
        let wire_type = (key & 7) as u8;
        match wire_type {
            VARINT | FIXED64 | LEN | FIXED32 => {}
            3 | 4 => return Err(self.malformed("groups (wire types 3 and 4) are not supported")),
            _ => return Err(self.malformed("invalid wire type 6 or 7")),
        }
        let field = key >> 3;
        if field == 0 {
            return Err(self.malformed("field number 0"));
        }
        self.field = field;
        self.wire_type = wire_type;
        Ok(Some(field))
    }

    /// Skips the value of a field this schema does not know.
    pub(super) fn skip(&mut self) -> Decoded<()> {
        match self.wire_type {
            VARINT => self.varint().map(drop),
            FIXED64 => self.take(8).map(drop),
            LEN => self.len_delimited().map(drop),
            _ => self.take(4).map(drop),
        }
    }

    /// An `int64` field.
    #[inline]
    pub(super) fn int64(&mut self, name: &'static str) -> Decoded<i64> {
        self.expect(VARINT, name)?;
        Ok(self.varint()? as i64)
    }

    /// An `int32` or enum field: like prost and Go, the varint truncated to its low 32 bits.
    #[inline]
    pub(super) fn int32(&mut self, name: &'static str) -> Decoded<i32> {
        self.expect(VARINT, name)?;
        Ok(self.varint()? as i32)
    }

    /// A `uint64` field.
    #[inline]
    pub(super) fn uint64(&mut self, name: &'static str) -> Decoded<u64> {
        self.expect(VARINT, name)?;
        self.varint()
    }

    /// A `double` field.
    #[inline]
    pub(super) fn double(&mut self, name: &'static str) -> Decoded<f64> {
        self.expect(FIXED64, name)?;
        let bytes = self.take(8)?;
        let mut le = [0u8; 8];
        le.copy_from_slice(&self.data[bytes]);
        Ok(f64::from_le_bytes(le))
    }

    // Strings and bytes are written to their destination rather than returned: a returned
    // `Str` is reloaded from memory in halves that the CPU cannot forward from the word-sized
    // stores that wrote it, a stall per field that cost more than the rest of the parsing. The
    // destination is an `Option`: overwriting `None` drops nothing, overwriting a `Str` would
    // cost an indirect call.

    /// A `bytes` field into `out`, sharing the frame's storage.
    #[inline(always)]
    pub(super) fn bytes(&mut self, name: &'static str, out: &mut Option<Bytes>) -> Decoded<()> {
        self.expect(LEN, name)?;
        let range = self.len_delimited()?;
        *out = Some(if range.is_empty() {
            empty_bytes()
        } else {
            self.frame.slice(range)
        });
        Ok(())
    }

    /// A `string` field into `out`, validated as UTF-8, sharing the frame's storage.
    #[inline(always)]
    pub(super) fn string(&mut self, name: &'static str, out: &mut Option<Str>) -> Decoded<()> {
        self.expect(LEN, name)?;
        let range = self.len_delimited()?;
        *out = Some(self.shared_str(range, name)?);
        Ok(())
    }

    /// A `string` field whose values recur (origins, IPs, tags, app ids...) into `out`: an
    /// interned `'static` copy when there is one or room for one, else shared like
    /// [`Reader::string`].
    #[inline(always)]
    pub(super) fn recurring_string(
        &mut self,
        name: &'static str,
        out: &mut Option<Str>,
    ) -> Decoded<()> {
        self.expect(LEN, name)?;
        let range = self.len_delimited()?;
        if let Some(interned) = intern::lookup(&self.data[range.clone()]) {
            *out = Some(Str::from_static(interned));
        } else {
            *out = Some(self.shared_str(range, name)?);
        }
        Ok(())
    }

    /// The string at `range` of the frame, sharing its storage.
    #[inline(never)]
    fn shared_str(&self, range: Range<usize>, name: &'static str) -> Decoded<Str> {
        if range.is_empty() {
            return Ok(empty());
        }
        Str::try_from(self.frame.slice(range)).map_err(|_| {
            fail(DecodeError::InvalidUtf8 {
                message: self.message,
                field: name,
            })
        })
    }

    /// An embedded message field: a reader over its bytes, named `message` in errors.
    #[inline]
    pub(super) fn message(
        &mut self,
        name: &'static str,
        message: &'static str,
    ) -> Decoded<Reader<'f>> {
        self.expect(LEN, name)?;
        let range = self.len_delimited()?;
        Ok(Reader::over(self.frame, range, message))
    }

    fn expect(&self, wire_type: u8, name: &'static str) -> Decoded<()> {
        if self.wire_type == wire_type {
            Ok(())
        } else {
            Err(fail(DecodeError::WireType {
                message: self.message,
                field: name,
                wire_type: self.wire_type,
                expected: wire_type,
            }))
        }
    }

    /// A base-128 varint of at most 10 bytes whose value fits 64 bits (prost rejects the
    /// others too).
    #[inline(always)]
    fn varint(&mut self) -> Decoded<u64> {
        // Keys, enums, short lengths: one byte, decoded inline.
        if let Some(&byte) = self.data.get(self.pos)
            && byte < 0x80
        {
            self.pos += 1;
            return Ok(u64::from(byte));
        }
        self.long_varint()
    }

    #[inline(never)]
    fn long_varint(&mut self) -> Decoded<u64> {
        let pos = self.pos;
        // Eight bytes at once: the first byte without its continuation bit ends the varint.
        let Some(first8) = self.data.get(pos..pos + 8) else {
            return self.varint_near_end();
        };
        let word = le64(first8);
        let ends = !word & 0x8080_8080_8080_8080;
        if ends != 0 {
            let len = ends.trailing_zeros() as usize / 8 + 1;
            self.pos = pos + len;
            let value_bytes = if len == 8 {
                word
            } else {
                word & ((1 << (8 * len)) - 1)
            };
            return Ok(seven_bit_groups(value_bytes));
        }
        // Nine or ten bytes (nanosecond timestamps take nine).
        let mut value = seven_bit_groups(word);
        match (self.data.get(pos + 8), self.data.get(pos + 9)) {
            (Some(&ninth), _) if ninth < 0x80 => {
                self.pos = pos + 9;
                Ok(value | u64::from(ninth) << 56)
            }
            (Some(&ninth), Some(&tenth)) if tenth <= 1 => {
                value |= u64::from(ninth & 0x7f) << 56 | u64::from(tenth) << 63;
                self.pos = pos + 10;
                Ok(value)
            }
            (Some(_), Some(_)) => Err(self.malformed("a varint is longer than 64 bits")),
            _ => Err(self.ran_out(self.data.len() + 1)),
        }
    }

    /// A varint within eight bytes of the end of the message, byte by byte.
    #[cold]
    fn varint_near_end(&mut self) -> Decoded<u64> {
        let mut value = 0u64;
        for (i, &byte) in self.data[self.pos..].iter().enumerate() {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                self.pos += i + 1;
                return Ok(value);
            }
        }
        Err(self.ran_out(self.data.len() + 1))
    }

    /// The range of a length-delimited value (its length prefix is consumed).
    #[inline(always)]
    fn len_delimited(&mut self) -> Decoded<Range<usize>> {
        let len = self.varint()?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        self.take(len)
    }

    /// The range of the next `len` bytes, which are consumed.
    #[inline]
    fn take(&mut self, len: usize) -> Decoded<Range<usize>> {
        let start = self.pos;
        let remaining = self.data.len() - start;
        if len > remaining {
            return Err(self.ran_out(start.saturating_add(len)));
        }
        self.pos = start + len;
        Ok(start..self.pos)
    }

    /// The error for a field that needs the bytes up to `needed_end`, past this message's end:
    /// truncation if the frame ends first, a length inconsistent with the enclosing message
    /// otherwise.
    #[cold]
    fn ran_out(&self, needed_end: usize) -> Box<DecodeError> {
        if needed_end > self.frame.len() {
            fail(DecodeError::Truncated {
                message: self.message,
                field: self.field,
            })
        } else {
            self.malformed("a field runs past the end of its enclosing message")
        }
    }

    #[cold]
    fn malformed(&self, detail: &'static str) -> Box<DecodeError> {
        fail(DecodeError::Malformed {
            message: self.message,
            detail,
        })
    }
}

/// Eight little-endian bytes as a word.
#[inline(always)]
pub(super) fn le64(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(bytes);
    u64::from_le_bytes(word)
}

/// The value of up to eight varint bytes: their low seven bits each, least significant first.
#[inline(always)]
fn seven_bit_groups(word: u64) -> u64 {
    let mut value = 0;
    for group in 0..8 {
        value |= (word >> (8 * group) & 0x7f) << (7 * group);
    }
    value
}

/// The empty string, pointing at a real address.
///
/// `Str::new()` points at address 1, and comparing two of them (as maps and sorts of events do)
/// makes glibc's AVX-512 `memcmp` take a microcode assist for a masked load from that unmapped
/// address: about 300 ns instead of 3 (measured on an AMD EPYC build machine). So the decoder
/// never produces one.
#[inline(always)]
pub(super) fn empty() -> Str {
    Str::from_static(&"\0"[..0])
}

/// A string field's value, empty if it was absent.
#[inline(always)]
pub(super) fn or_empty(value: Option<Str>) -> Str {
    value.unwrap_or_else(empty)
}

/// The empty byte string, pointing at a real address (see [`empty`]).
#[inline(always)]
pub(super) fn empty_bytes() -> Bytes {
    Bytes::from_static(&b"\0"[..0])
}

/// Boxes an error, out of the hot path.
#[cold]
#[inline(never)]
pub(super) fn fail(error: DecodeError) -> Box<DecodeError> {
    Box::new(error)
}

#[cfg(test)]
mod tests;
