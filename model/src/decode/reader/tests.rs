//! The cursor on hand-made bytes: varints, keys, lengths, skipping, wire types.
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

use super::*;

proptest! {
    #![proptest_config(Config {
        cases: 2000,
        rng_seed: RngSeed::Fixed(7),
        failure_persistence: None,
        ..Config::default()
    })]

    #[test]
    fn varints_of_every_length_decode_like_prost(
        value in (0..64u32, any::<u64>()).prop_map(|(shift, v)| v >> shift),
        trailing in 0..12usize,
    ) {
        // Field 1, the varint, then other bytes: the one-byte, word-at-a-time and
        // near-the-end paths all get their turn.
        let mut bytes = vec![0x08];
        prost::encoding::encode_varint(value, &mut bytes);
        let end = bytes.len();
        bytes.resize(end + trailing, 0x08);
        let frame = Bytes::from(bytes);
        let mut r = Reader::new(&frame, "Test");
        prop_assert_eq!(r.next_field().map_err(|e| *e), Ok(Some(1)));
        prop_assert_eq!(r.uint64("v").map_err(|e| *e), Ok(value));
        prop_assert_eq!(r.pos, end);
        // Cut short, the same varint is a truncation.
        let cut = frame.slice(..end - 1);
        let mut r = Reader::new(&cut, "Test");
        prop_assert_eq!(r.next_field().map_err(|e| *e), Ok(Some(1)));
        prop_assert_eq!(
            r.uint64("v").map_err(|e| *e),
            Err(DecodeError::Truncated { message: "Test", field: 1 })
        );
    }
}

fn reader(bytes: &'static [u8]) -> (Bytes, &'static str) {
    (Bytes::from_static(bytes), "Test")
}

#[test]
fn varints_decode_up_to_64_bits_and_no_further() {
    let (frame, name) = reader(&[
        0x08, 0x96, 0x01, // field 1 = 150
        0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0x01, // field 2 = u64::MAX
        0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, // 65 bits
    ]);
    let mut r = Reader::new(&frame, name);
    assert_eq!(r.next_field().map_err(|e| *e), Ok(Some(1)));
    assert_eq!(r.uint64("a").map_err(|e| *e), Ok(150));
    assert_eq!(r.next_field().map_err(|e| *e), Ok(Some(2)));
    assert_eq!(r.uint64("b").map_err(|e| *e), Ok(u64::MAX));
    assert_eq!(r.next_field().map_err(|e| *e), Ok(Some(3)));
    assert!(matches!(
        r.uint64("c").map_err(|e| *e),
        Err(DecodeError::Malformed { .. })
    ));
}

#[test]
fn int32_keeps_the_low_32_bits_like_prost() {
    // 2^32 + 5, then -1 as a 10-byte varint.
    let (frame, name) = reader(&[
        0x08, 0x85, 0x80, 0x80, 0x80, 0x10, 0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x01,
    ]);
    let mut r = Reader::new(&frame, name);
    assert_eq!(r.next_field().map_err(|e| *e), Ok(Some(1)));
    assert_eq!(r.int32("a").map_err(|e| *e), Ok(5));
    assert_eq!(r.next_field().map_err(|e| *e), Ok(Some(2)));
    assert_eq!(r.int32("b").map_err(|e| *e), Ok(-1));
    assert_eq!(r.next_field().map_err(|e| *e), Ok(None));
}

#[test]
fn a_length_past_the_frame_is_truncation_and_past_a_sub_message_is_malformed() {
    // field 1: a 4-byte message holding field 1 with a 5-byte string; then 3 more bytes.
    let (frame, name) = reader(&[0x0a, 0x04, 0x0a, 0x05, b'a', b'b', b'c', b'd', b'e']);
    let mut r = Reader::new(&frame, name);
    assert_eq!(r.next_field().map_err(|e| *e), Ok(Some(1)));
    let mut inner = r.message("inner", "Inner").expect("in bounds");
    assert_eq!(inner.next_field().map_err(|e| *e), Ok(Some(1)));
    assert!(matches!(
        inner.string("s", &mut None).map_err(|e| *e),
        Err(DecodeError::Malformed {
            message: "Inner",
            ..
        })
    ));
    let (frame, name) = reader(&[0x0a, 0x05, b'a', b'b']);
    let mut r = Reader::new(&frame, name);
    assert_eq!(r.next_field().map_err(|e| *e), Ok(Some(1)));
    assert_eq!(
        r.string("s", &mut None).map_err(|e| *e),
        Err(DecodeError::Truncated {
            message: "Test",
            field: 1
        })
    );
}

#[test]
fn keys_with_groups_bad_wire_types_or_field_zero_are_malformed() {
    for key in [
        &[0x0b][..],
        &[0x0c],
        &[0x0e],
        &[0x0f],
        &[0x00],
        &[0x80, 0x00],
    ] {
        let frame = Bytes::copy_from_slice(key);
        let mut r = Reader::new(&frame, "Test");
        assert!(
            matches!(
                r.next_field().map_err(|e| *e),
                Err(DecodeError::Malformed { .. })
            ),
            "key {key:?}"
        );
    }
    let frame = Bytes::from_static(&[0x80, 0x80, 0x80, 0x80, 0x10]);
    let mut r = Reader::new(&frame, "Test");
    assert!(matches!(
        r.next_field().map_err(|e| *e),
        Err(DecodeError::Malformed { .. })
    ));
}

#[test]
fn unknown_fields_of_every_wire_type_are_skipped() {
    let (frame, name) = reader(&[
        0x08, 0xac, 0x02, // varint
        0x11, 1, 2, 3, 4, 5, 6, 7, 8, // fixed64
        0x1a, 0x02, b'h', b'i', // length-delimited
        0x25, 1, 2, 3, 4, // fixed32
        0x28, 0x07,
    ]);
    let mut r = Reader::new(&frame, name);
    for field in 1..=4 {
        assert_eq!(r.next_field().map_err(|e| *e), Ok(Some(field)));
        assert_eq!(r.skip().map_err(|e| *e), Ok(()));
    }
    assert_eq!(r.next_field().map_err(|e| *e), Ok(Some(5)));
    assert_eq!(r.int64("e").map_err(|e| *e), Ok(7));
    assert_eq!(r.next_field().map_err(|e| *e), Ok(None));
}

#[test]
fn strings_and_bytes_share_the_frame_or_the_interned_copy() {
    let (frame, name) = reader(b"\x0a\x05hello\x12\x02hi\x1a\x03\xff\x00\x01");
    let mut r = Reader::new(&frame, name);
    let (mut shared, mut recurring, mut bytes) = (None, None, None);
    assert_eq!(r.next_field().map_err(|e| *e), Ok(Some(1)));
    r.string("a", &mut shared).expect("UTF-8");
    assert_eq!(r.next_field().map_err(|e| *e), Ok(Some(2)));
    r.recurring_string("b", &mut recurring).expect("UTF-8");
    assert_eq!(r.next_field().map_err(|e| *e), Ok(Some(3)));
    r.bytes("c", &mut bytes).expect("bytes are not checked");
    let (shared, recurring, bytes) = (
        shared.expect("read"),
        recurring.expect("read"),
        bytes.expect("read"),
    );
    assert_eq!(
        (&*shared, &*recurring, &bytes[..]),
        ("hello", "hi", &b"\xff\x00\x01"[..])
    );
    assert_eq!(
        shared.as_ptr(),
        frame[2..].as_ptr(),
        "a view into the frame"
    );
    assert_ne!(recurring.as_ptr(), frame[9..].as_ptr(), "the interned copy");
}

#[test]
fn a_value_read_with_the_wrong_wire_type_names_the_field() {
    let (frame, name) = reader(&[0x0a, 0x00]);
    let mut r = Reader::new(&frame, name);
    assert_eq!(r.next_field().map_err(|e| *e), Ok(Some(1)));
    assert_eq!(
        r.double("value").map_err(|e| *e),
        Err(DecodeError::WireType {
            message: "Test",
            field: "value",
            wire_type: LEN,
            expected: FIXED64,
        })
    );
}
