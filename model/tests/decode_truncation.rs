//! Truncated and borderline encodings: every cut of a real envelope, groups, and the shape of
//! empty strings.

mod support;

use sluice_model::DecodeError;
use sluice_model::event::{Payload, Str};
use sluice_model::reference;
use support::wire::{self, Field, Value, edit};
use support::{decode, sample};

/// The golden records of `shared/testdata`: real envelopes, encoded by Google's protobuf.
fn golden_records() -> Vec<Vec<u8>> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/testdata/golden-v1.bin");
    let data = std::fs::read(&path).expect("golden-v1.bin is readable");
    sluice_model::framing::frames(&data)
        .map(|(_, record)| record.expect("a complete record").to_vec())
        .collect()
}

#[test]
fn truncation_at_every_offset_is_an_error_unless_it_falls_between_fields() {
    let envelopes: Vec<Vec<u8>> = (7..=12).map(sample).chain(golden_records()).collect();
    assert_eq!(envelopes.len(), 6 + 213);
    for bytes in envelopes {
        let boundaries = wire::boundaries(&bytes);
        for len in 0..bytes.len() {
            let prefix = &bytes[..len];
            let result = decode(prefix);
            if boundaries.contains(&len) {
                // The envelope minus its last fields: valid iff those were all optional.
                match &result {
                    Ok(event) => assert_eq!(Ok(event), reference::decode_v1(prefix).as_ref()),
                    Err(e) => assert!(
                        matches!(
                            e,
                            DecodeError::MissingField { .. } | DecodeError::TypeMismatch { .. }
                        ),
                        "cut at {len}: {e:?}"
                    ),
                }
            } else {
                assert!(
                    matches!(
                        result,
                        Err(DecodeError::Truncated {
                            message: "Envelope",
                            ..
                        })
                    ),
                    "cut at {len} of {}: {result:?}",
                    bytes.len()
                );
            }
        }
    }
}

#[test]
fn groups_are_malformed_although_prost_skips_them() {
    // An empty group, field 3 (start and end keys), at the end of a valid envelope.
    let mut bytes = sample(8);
    bytes.extend([0x1b, 0x1c]);
    assert!(reference::decode_v1(&bytes).is_ok());
    assert_eq!(
        decode(&bytes),
        Err(DecodeError::Malformed {
            message: "Envelope",
            detail: "groups (wire types 3 and 4) are not supported"
        })
    );
}

#[test]
fn empty_strings_point_at_a_real_address() {
    // `Str::new()` points at address 1, and comparing two of them costs glibc's AVX-512
    // `memcmp` a microcode assist (~300 ns): absent and empty strings must not look like that.
    let bytes = edit(&sample(8), &[], |fields| {
        fields.retain(|f| ![13, 14, 15, 16].contains(&f.number));
        fields.push(Field::new(1, Value::Len(Vec::new())));
    });
    let bytes = edit(&bytes, &[8], |fields| {
        fields.retain(|f| ![4, 5, 6].contains(&f.number));
        fields.push(Field::new(1, Value::Len(Vec::new())));
    });
    let event = decode(&bytes).expect("valid");
    let Payload::Log(log) = &event.payload else {
        panic!("a log");
    };
    let header = &event.header;
    let dangling = Str::new().as_ptr();
    for empty in [
        &header.origin,
        &header.deployment,
        &header.job,
        &header.index,
        &header.ip,
        &log.app_id,
        &log.source_type,
        &log.source_instance,
    ] {
        assert!(empty.is_empty());
        assert_ne!(empty.as_ptr(), dangling);
    }
    assert!(log.message.is_empty());
    assert_ne!(log.message.as_ptr(), dangling);
}
