//! Recurring header strings as `'static` [`Str`](crate::Str)s.
//!
//! A `Str` sliced from the frame costs an atomic increment of the frame's reference count when
//! decoded and an atomic decrement when dropped; on x86 each is a full memory barrier, and they
//! were most of the decoder's time. But origins, jobs, deployments, IPs, indexes, tags, source
//! types, metric names and app ids take few distinct values, so the first sighting of each is
//! copied once into leaked memory, and every later one is a lookup in a lock-free table and a
//! `Str` over static memory, which clones and drops without touching any counter.
//!
//! Memory stays bounded: at most [`MAX_ENTRIES`] strings of at most [`MAX_LEN`] bytes are ever
//! leaked, process-wide. Once the table is full, unknown strings are sliced from the frame as
//! before, so the worst case is the plain decoder plus one failed lookup per string.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::reader::le64;

/// Longer strings are rarely repeated header values: slice them.
const MAX_LEN: usize = 64;
/// Table slots; a power of two.
const SLOTS: usize = 4096;
/// At most half the slots fill, so probe sequences stay short.
const MAX_ENTRIES: usize = SLOTS / 2;
/// Slots tried before giving up on a lookup or insertion.
const PROBES: usize = 8;

/// One interned string with its [`Key`].
type Entry = (Key, &'static str);

static TABLE: [OnceLock<Entry>; SLOTS] = [const { OnceLock::new() }; SLOTS];
/// Entries claimed so far (an upper bound: a lost insertion race claims without filling).
static CLAIMED: AtomicUsize = AtomicUsize::new(0);

/// The interned string equal to `bytes` (for `Str::from_static`), interning it if there is
/// room; `None` if `bytes` is empty (an empty slice costs nothing), too long, not UTF-8, or the
/// table is full: the caller then slices the frame.
#[inline(always)]
pub(super) fn lookup(bytes: &[u8]) -> Option<&'static str> {
    if bytes.is_empty() || bytes.len() > MAX_LEN {
        return None;
    }
    let key = Key::of(bytes);
    let start = key.slot();
    for probe in 0..PROBES {
        let slot = &TABLE[(start + probe) & (SLOTS - 1)];
        match slot.get() {
            Some(&(k, s)) if k == key && (bytes.len() <= Key::EXACT || s.as_bytes() == bytes) => {
                return Some(s);
            }
            Some(_) => continue,
            None => return insert(slot, key, bytes),
        }
    }
    None
}

/// Fills an empty slot with a leaked copy of `bytes`, if the budget allows.
#[cold]
fn insert(slot: &'static OnceLock<Entry>, key: Key, bytes: &[u8]) -> Option<&'static str> {
    // Once the table is full every miss comes here: a plain load keeps them from contending
    // for the counter's cache line.
    if CLAIMED.load(Ordering::Relaxed) >= MAX_ENTRIES {
        return None;
    }
    let text = std::str::from_utf8(bytes).ok()?;
    if CLAIMED.fetch_add(1, Ordering::Relaxed) >= MAX_ENTRIES {
        return None;
    }
    let leaked: &'static str = Box::leak(Box::from(text));
    // Another thread may have filled the slot meanwhile: then only its string can be used,
    // and ours stays leaked (bounded by the claim above).
    let &(k, s) = slot.get_or_init(|| (key, leaked));
    (k == key && s == text).then_some(s)
}

/// The first and last eight bytes of a string and its length, read without copying. Strings
/// of up to [`Key::EXACT`] bytes are equal iff their keys are (the two words cover every
/// byte); longer ones must also compare their bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key {
    head: u64,
    tail: u64,
    len: usize,
}

impl Key {
    const EXACT: usize = 16;

    #[inline]
    fn of(bytes: &[u8]) -> Key {
        let len = bytes.len();
        let (head, tail) = match len {
            8.. => (le64(&bytes[..8]), le64(&bytes[len - 8..])),
            4..=7 => (le32(&bytes[..4]) | le32(&bytes[len - 4..]) << 32, 0),
            1..=3 => {
                let (a, b, c) = (bytes[0], bytes[len / 2], bytes[len - 1]);
                (u64::from(a) | u64::from(b) << 8 | u64::from(c) << 16, 0)
            }
            0 => (0, 0),
        };
        Key { head, tail, len }
    }

    /// The first slot to probe: the top bits of a multiplicative hash.
    #[inline]
    fn slot(self) -> usize {
        let mixed = (self.head ^ self.tail.rotate_left(29) ^ self.len as u64)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (mixed >> (64 - SLOTS.trailing_zeros())) as usize
    }
}

#[inline]
fn le32(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 4];
    word.copy_from_slice(bytes);
    u64::from(u32::from_le_bytes(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interned_string_is_static_and_equal() {
        let first = lookup(b"diego_cell").expect("room in the table");
        let second = lookup(b"diego_cell").expect("found");
        assert_eq!(first, "diego_cell");
        assert_eq!(first.as_ptr(), second.as_ptr(), "one leaked copy");
    }

    #[test]
    fn strings_differing_anywhere_get_their_own_entry() {
        // Same first and last bytes, different middles: keys differ up to 16 bytes, bytes
        // are compared beyond.
        let words = [
            "ab",
            "abc",
            "abd",
            "a-c",
            "abcdefgh",
            "abcdXfgh",
            "0123456789abcdef",
        ];
        let long = [
            "0123456789abcdefg",
            "0123456789abXdefg",
            "0123456789aYcdefg",
        ];
        for text in words.iter().chain(&long) {
            let interned = lookup(text.as_bytes()).expect("room in the table");
            assert_eq!(interned, *text);
        }
    }

    #[test]
    fn empty_long_or_invalid_strings_are_not_interned() {
        assert_eq!(lookup(b""), None);
        assert_eq!(lookup(&[b'a'; MAX_LEN + 1]), None);
        assert_eq!(lookup(b"\xff\xfe"), None);
    }
}
