//! Hand-built encodings for the cases the fast decoder must get exactly right: required
//! fields, unknown fields, wire types, enums, UTF-8 and merged payloads.

mod support;

use sluice_model::DecodeError;
use sluice_model::event::Payload;
use sluice_model::reference;
use support::wire::{Field, Value, edit, fields, write};
use support::{decode, sample};

fn missing(message: &'static str, field: &'static str) -> DecodeError {
    DecodeError::MissingField { message, field }
}

#[test]
fn every_missing_required_field_is_named() {
    #[rustfmt::skip]
    let table: &[(u32, &[u32], u32, &str, &str)] = &[
        // (sample, path to the message, field removed, message, field)
        (8, &[], 1, "Envelope", "origin"),
        (8, &[], 2, "Envelope", "eventType"),
        (7, &[7], 1, "HttpStartStop", "startTimestamp"),
        (7, &[7], 2, "HttpStartStop", "stopTimestamp"),
        (7, &[7], 3, "HttpStartStop", "requestId"),
        (7, &[7], 4, "HttpStartStop", "peerType"),
        (7, &[7], 5, "HttpStartStop", "method"),
        (7, &[7], 6, "HttpStartStop", "uri"),
        (7, &[7], 7, "HttpStartStop", "remoteAddress"),
        (7, &[7], 8, "HttpStartStop", "userAgent"),
        (7, &[7], 9, "HttpStartStop", "statusCode"),
        (7, &[7], 10, "HttpStartStop", "contentLength"),
        (7, &[7, 3], 1, "UUID", "low"),
        (7, &[7, 3], 2, "UUID", "high"),
        (7, &[7, 12], 1, "UUID", "low"),
        (7, &[7, 12], 2, "UUID", "high"),
        (8, &[8], 1, "LogMessage", "message"),
        (8, &[8], 2, "LogMessage", "message_type"),
        (8, &[8], 3, "LogMessage", "timestamp"),
        (9, &[9], 1, "ValueMetric", "name"),
        (9, &[9], 2, "ValueMetric", "value"),
        (9, &[9], 3, "ValueMetric", "unit"),
        (10, &[10], 1, "CounterEvent", "name"),
        (10, &[10], 2, "CounterEvent", "delta"),
        (11, &[11], 1, "Error", "source"),
        (11, &[11], 2, "Error", "code"),
        (11, &[11], 3, "Error", "message"),
        (12, &[12], 1, "ContainerMetric", "applicationId"),
        (12, &[12], 2, "ContainerMetric", "instanceIndex"),
        (12, &[12], 3, "ContainerMetric", "cpuPercentage"),
        (12, &[12], 4, "ContainerMetric", "memoryBytes"),
        (12, &[12], 5, "ContainerMetric", "diskBytes"),
    ];
    for &(payload, path, field, message, name) in table {
        let bytes = edit(&sample(payload), path, |fields| {
            fields.retain(|f| f.number != field)
        });
        assert_eq!(
            decode(&bytes),
            Err(missing(message, name)),
            "{message}.{name}"
        );
    }
}

#[test]
fn optional_fields_may_be_absent() {
    #[rustfmt::skip]
    let table: &[(u32, &[u32], &[u32])] = &[
        (8, &[], &[6, 13, 14, 15, 16, 17]),
        (7, &[7], &[12, 13, 14, 15]),
        (8, &[8], &[4, 5, 6]),
        (10, &[10], &[3]),
        (12, &[12], &[6, 7]),
    ];
    for &(payload, path, optional) in table {
        let bytes = edit(&sample(payload), path, |fields| {
            fields.retain(|f| !optional.contains(&f.number))
        });
        let event = decode(&bytes).expect("optional fields are optional");
        assert_eq!(Ok(&event), reference::decode_v1(&bytes).as_ref());
        assert_ne!(Ok(event), decode(&sample(payload)), "{path:?} lost fields");
    }
}

/// One unknown field of each wire type (numbers no message of the schema uses).
fn unknown_fields() -> Vec<Field> {
    vec![
        Field::new(100, Value::Varint(u64::MAX)),
        Field::new(101, Value::Fixed64(7)),
        Field::new(102, Value::Len(b"\xff not UTF-8, not checked".to_vec())),
        Field::new(103, Value::Fixed32(9)),
        // The largest field number: a 5-byte key.
        Field::new((1 << 29) - 1, Value::Len(Vec::new())),
    ]
}

fn interleave_unknown(fields: &mut Vec<Field>) {
    let known = std::mem::take(fields);
    for field in known {
        fields.extend(unknown_fields());
        fields.push(field);
    }
    fields.extend(unknown_fields());
}

#[test]
fn unknown_fields_of_every_wire_type_between_known_ones_are_skipped() {
    let paths: &[&[u32]] = &[
        &[],
        &[7],
        &[7, 3],
        &[7, 12],
        &[17],
        &[8],
        &[9],
        &[10],
        &[11],
        &[12],
    ];
    for payload in 7..=12 {
        let original = decode(&sample(payload)).expect("a valid sample");
        let mut bytes = sample(payload);
        for path in paths {
            bytes = edit(&bytes, path, interleave_unknown);
        }
        assert!(
            bytes.len() > sample(payload).len() + 100,
            "unknown fields added"
        );
        assert_eq!(decode(&bytes), Ok(original.clone()));
        assert_eq!(reference::decode_v1(&bytes), Ok(original));
    }
}

#[test]
fn a_known_field_with_a_wrong_wire_type_is_rejected() {
    let wrong = |message, field, wire_type, expected| DecodeError::WireType {
        message,
        field,
        wire_type,
        expected,
    };
    let (varint, fixed64, len, fixed32) = (0, 1, 2, 5);
    #[rustfmt::skip]
    let table = [
        (8, &[][..], Field::new(1, Value::Varint(1)), wrong("Envelope", "origin", varint, len)),
        (8, &[], Field::new(2, Value::Len(vec![5])), wrong("Envelope", "eventType", len, varint)),
        (8, &[], Field::new(6, Value::Fixed64(1)), wrong("Envelope", "timestamp", fixed64, varint)),
        (8, &[], Field::new(8, Value::Fixed32(1)), wrong("Envelope", "logMessage", fixed32, len)),
        (8, &[8], Field::new(1, Value::Varint(1)), wrong("LogMessage", "message", varint, len)),
        (9, &[9], Field::new(2, Value::Fixed32(1)), wrong("ValueMetric", "value", fixed32, fixed64)),
        (12, &[12], Field::new(3, Value::Varint(1)),
            wrong("ContainerMetric", "cpuPercentage", varint, fixed64)),
        (7, &[7, 3], Field::new(1, Value::Fixed64(1)), wrong("UUID", "low", fixed64, varint)),
        (7, &[7], Field::new(15, Value::Varint(1)), wrong("HttpStartStop", "forwarded", varint, len)),
        (8, &[17], Field::new(2, Value::Varint(1)),
            wrong("Envelope.TagsEntry", "value", varint, len)),
    ];
    for (payload, path, field, want) in table {
        let bytes = edit(&sample(payload), path, |fields| fields.push(field.clone()));
        assert_eq!(decode(&bytes), Err(want.clone()));
        assert!(
            reference::decode_v1(&bytes).is_err(),
            "prost agrees: {want}"
        );
    }
}

#[test]
fn a_tags_entry_with_a_wrong_wire_type_is_rejected_although_prost_reads_it() {
    // Field 17 as a varint (19), then 19 bytes that happen to form a map entry: prost reads a
    // map field of any wire type as length-delimited and accepts this; gogoproto, like us,
    // rejects it.
    let entry = write(&[
        Field::new(1, Value::Len(b"product".to_vec())),
        Field::new(2, Value::Len(b"PAS-10.0".to_vec())),
    ]);
    assert_eq!(entry.len(), 19);
    let mut bytes = sample(8);
    bytes.extend(write(&[Field::new(17, Value::Varint(19))]));
    bytes.extend(entry);
    assert!(reference::decode_v1(&bytes).is_ok());
    assert_eq!(
        decode(&bytes),
        Err(DecodeError::WireType {
            message: "Envelope",
            field: "tags",
            wire_type: 0,
            expected: 2
        })
    );
}

fn set_event_type(bytes: &[u8], event_type: u64) -> Vec<u8> {
    edit(bytes, &[], |fields| {
        fields.push(Field::new(2, Value::Varint(event_type)))
    })
}

#[test]
fn an_event_type_without_its_payload_is_a_type_mismatch() {
    // A LogMessage payload only, announced as a ContainerMetric.
    let bytes = set_event_type(&sample(8), 9);
    assert_eq!(
        decode(&bytes),
        Err(DecodeError::TypeMismatch {
            event_type: "ContainerMetric"
        })
    );
    // Both payloads: the announced one counts, the other is ignored.
    let mut both = sample(12);
    both.extend(edit(&sample(8), &[], |f| f.retain(|f| f.number == 8)));
    let event = decode(&both).expect("the ContainerMetric is there");
    assert!(matches!(event.payload, Payload::Container(_)));
    assert_eq!(Ok(event), reference::decode_v1(&both));
}

#[test]
fn unknown_enum_values_are_rejected() {
    let unknown = |message, field, value| DecodeError::UnknownEnum {
        message,
        field,
        value,
    };
    let set = |payload: u32, path: &[u32], field: u32, value: u64| {
        edit(&sample(payload), path, |fields| {
            fields.push(Field::new(field, Value::Varint(value)))
        })
    };
    #[rustfmt::skip]
    let table = [
        (set_event_type(&sample(7), 2), unknown("Envelope", "eventType", 2)),
        (set_event_type(&sample(7), 10), unknown("Envelope", "eventType", 10)),
        (set(7, &[7], 5, 45), unknown("HttpStartStop", "method", 45)),
        (set(7, &[7], 5, 0), unknown("HttpStartStop", "method", 0)),
        (set(7, &[7], 4, 3), unknown("HttpStartStop", "peerType", 3)),
        (set(8, &[8], 2, u64::MAX), unknown("LogMessage", "message_type", -1)),
    ];
    for (bytes, want) in table {
        assert_eq!(decode(&bytes), Err(want.clone()));
        assert!(reference::decode_v1(&bytes).is_err(), "{want}");
    }
    // An unknown value in a payload of another type is ignored, as by the reference.
    let mut bytes = set(7, &[7], 5, 45);
    bytes.extend(sample(8));
    assert!(decode(&bytes).is_ok());
    assert_eq!(decode(&bytes), reference::decode_v1(&bytes));
}

#[test]
fn invalid_utf8_in_a_string_is_rejected_but_not_in_the_log_bytes() {
    let replace = |path: &[u32], number: u32, value: &[u8]| {
        edit(&sample(8), path, |fields| {
            fields.push(Field::new(number, Value::Len(value.to_vec())))
        })
    };
    let bytes = replace(&[], 1, b"gorouter\xc3");
    assert_eq!(
        decode(&bytes),
        Err(DecodeError::InvalidUtf8 {
            message: "Envelope",
            field: "origin"
        })
    );
    let bytes = replace(&[17], 1, b"\xff");
    assert_eq!(
        decode(&bytes),
        Err(DecodeError::InvalidUtf8 {
            message: "Envelope.TagsEntry",
            field: "key"
        })
    );
    let bytes = replace(&[8], 1, b"binary \xff\xfe log");
    let event = decode(&bytes).expect("LogMessage.message is bytes");
    match &event.payload {
        Payload::Log(log) => assert_eq!(&log.message[..], b"binary \xff\xfe log"),
        other => panic!("expected a log, got {other:?}"),
    }
}

#[test]
fn a_payload_split_in_two_occurrences_is_merged() {
    for payload in 7..=12 {
        let original = decode(&sample(payload)).expect("a valid sample");
        // Split the payload's fields (and for HTTP the requestId's) over two occurrences, with
        // header fields in between.
        let bytes = edit(&sample(payload), &[payload], |fields| {
            if payload == 7 {
                fields.push(Field::new(
                    3,
                    Value::Len(write(&[Field::new(2, Value::Varint(0))])),
                ));
            }
        });
        let mut top = fields(&bytes);
        let at = top
            .iter()
            .position(|f| f.number == payload)
            .expect("payload");
        let Value::Len(inner) = top.remove(at).value else {
            panic!("payload is length-delimited");
        };
        let inner = fields(&inner);
        let (first, second) = inner.split_at(inner.len() / 2);
        top.insert(0, Field::new(payload, Value::Len(write(first))));
        top.push(Field::new(payload, Value::Len(write(second))));
        let bytes = write(&top);
        let merged = decode(&bytes).expect("merged payload");
        assert_eq!(Ok(&merged), reference::decode_v1(&bytes).as_ref());
        if payload == 7 {
            let Payload::Http(http) = &merged.payload else {
                panic!("an HTTP event");
            };
            assert_eq!(
                sluice_model::event::uuid_to_halves(http.request_id),
                (742_343_412_430_994_009, 0),
                "the second requestId occurrence merges into the first"
            );
        } else {
            assert_eq!(merged, original);
        }
    }
}

#[test]
fn the_last_occurrence_of_a_scalar_wins_and_map_entries_default_to_empty() {
    let bytes = edit(&sample(9), &[], |fields| {
        fields.push(Field::new(6, Value::Varint(42)));
        fields.push(Field::new(1, Value::Len(b"rep".to_vec())));
        // An entry without value, one without key, and a repeated key.
        fields.push(Field::new(
            17,
            Value::Len(write(&[Field::new(1, Value::Len(b"k".to_vec()))])),
        ));
        fields.push(Field::new(
            17,
            Value::Len(write(&[Field::new(2, Value::Len(b"v".to_vec()))])),
        ));
        fields.push(Field::new(
            17,
            Value::Len(write(&[
                Field::new(1, Value::Len(b"product".to_vec())),
                Field::new(2, Value::Len(b"PAS".to_vec())),
            ])),
        ));
    });
    let event = decode(&bytes).expect("valid");
    assert_eq!(event.timestamp, 42);
    assert_eq!(&*event.header.origin, "rep");
    let tags = &event.header.tags;
    assert_eq!(tags.get("k").map(|s| &**s), Some(""));
    assert_eq!(tags.get("").map(|s| &**s), Some("v"));
    assert_eq!(tags.get("product").map(|s| &**s), Some("PAS"));
    assert_eq!(tags.len(), 4);
    assert_eq!(Ok(event), reference::decode_v1(&bytes));
}

#[test]
fn int32_fields_keep_the_low_32_bits_like_prost() {
    // statusCode = 2^32 + 200; instanceIndex = -1 as a sign-extended 10-byte varint.
    let bytes = edit(&sample(7), &[7], |fields| {
        fields.push(Field::new(9, Value::Varint((1 << 32) + 200)));
        fields.push(Field::new(13, Value::Varint(u64::MAX)));
    });
    let event = decode(&bytes).expect("valid");
    let Payload::Http(http) = &event.payload else {
        panic!("an HTTP event");
    };
    assert_eq!((http.status_code, http.instance_index), (200, Some(-1)));
    assert_eq!(Ok(event), reference::decode_v1(&bytes));
}
