//! The fast decoder against the prost reference on random envelopes: equal events on every
//! valid encoding (and on concatenations, which protobuf defines as merges), and on randomly
//! damaged encodings never a panic, never an event the reference disagrees with.

use bytes::Bytes;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, RngSeed, TestRng, TestRunner};
use prost::Message;
use sluice_model::DecodeError;
use sluice_model::proto::events as pb;
use sluice_model::{decode, reference};

/// Fixed seed and no regression files: the suite is deterministic.
fn config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0x5107_ced0),
        failure_persistence: None,
        ..Config::default()
    }
}

/// Strings as the Firehose carries them (mostly ASCII), empty ones, and any Unicode.
fn text() -> BoxedStrategy<String> {
    prop_oneof![
        1 => Just(String::new()),
        4 => "[a-zA-Z0-9./:_ -]{1,24}",
        1 => any::<String>(),
        1 => "[\u{e9}\u{4e2d}\u{1f680}a]{1,8}",
    ]
    .boxed()
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(text())
}

fn int64() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i64>(),
        Just(0),
        Just(-1),
        Just(i64::MIN),
        Just(i64::MAX),
        1_700_000_000_000_000_000..1_800_000_000_000_000_000i64,
    ]
}

fn uint64() -> impl Strategy<Value = u64> {
    prop_oneof![any::<u64>(), Just(0), Just(u64::MAX), 0..10_000_000_000u64]
}

fn int32() -> impl Strategy<Value = i32> {
    prop_oneof![
        any::<i32>(),
        Just(0),
        Just(-1),
        Just(i32::MIN),
        Just(i32::MAX)
    ]
}

/// Any double but NaN (events compare with `==`), with the special values made likely.
fn double() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("NaN never equals itself", |v| !v.is_nan()),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-0.0),
        Just(f64::MIN_POSITIVE / 2.0),
        Just(f64::MAX),
        0.0..100.0f64,
    ]
}

fn uuid() -> BoxedStrategy<pb::Uuid> {
    (uint64(), uint64())
        .prop_map(|(low, high)| pb::Uuid { low, high })
        .boxed()
}

fn log_message() -> BoxedStrategy<pb::LogMessage> {
    (
        vec(any::<u8>(), 0..200),
        1..=2i32,
        int64(),
        opt_text(),
        opt_text(),
        opt_text(),
    )
        .prop_map(
            |(message, message_type, timestamp, app_id, source_type, source_instance)| {
                pb::LogMessage {
                    message: message.into(),
                    message_type,
                    timestamp,
                    app_id,
                    source_type,
                    source_instance,
                }
            },
        )
        .boxed()
}

fn http_start_stop() -> BoxedStrategy<pb::HttpStartStop> {
    (
        (int64(), int64(), uuid(), 1..=2i32, 1..=44i32),
        (text(), text(), text(), int32(), int64()),
        (
            proptest::option::of(uuid()),
            proptest::option::of(int32()),
            opt_text(),
            vec(text(), 0..5),
        ),
    )
        .prop_map(|(a, b, c)| pb::HttpStartStop {
            start_timestamp: a.0,
            stop_timestamp: a.1,
            request_id: a.2,
            peer_type: a.3,
            method: a.4,
            uri: b.0,
            remote_address: b.1,
            user_agent: b.2,
            status_code: b.3,
            content_length: b.4,
            application_id: c.0,
            instance_index: c.1,
            instance_id: c.2,
            forwarded: c.3,
        })
        .boxed()
}

fn value_metric() -> BoxedStrategy<pb::ValueMetric> {
    (text(), double(), text())
        .prop_map(|(name, value, unit)| pb::ValueMetric { name, value, unit })
        .boxed()
}

fn counter_event() -> BoxedStrategy<pb::CounterEvent> {
    (text(), uint64(), proptest::option::of(uint64()))
        .prop_map(|(name, delta, total)| pb::CounterEvent { name, delta, total })
        .boxed()
}

fn error() -> BoxedStrategy<pb::Error> {
    (text(), int32(), text())
        .prop_map(|(source, code, message)| pb::Error {
            source,
            code,
            message,
        })
        .boxed()
}

fn container_metric() -> BoxedStrategy<pb::ContainerMetric> {
    (
        text(),
        int32(),
        double(),
        uint64(),
        uint64(),
        proptest::option::of(uint64()),
        proptest::option::of(uint64()),
    )
        .prop_map(|m| pb::ContainerMetric {
            application_id: m.0,
            instance_index: m.1,
            cpu_percentage: m.2,
            memory_bytes: m.3,
            disk_bytes: m.4,
            memory_bytes_quota: m.5,
            disk_bytes_quota: m.6,
        })
        .boxed()
}

/// A valid envelope of any type: its payload is always there, other payloads (which decoders
/// must ignore) only sometimes.
fn envelope() -> BoxedStrategy<pb::Envelope> {
    let header = (
        text(),
        proptest::option::of(int64()),
        (opt_text(), opt_text(), opt_text(), opt_text()),
        prop_oneof![
            4 => btree_map(text(), text(), 0..4),
            1 => btree_map(text(), text(), 0..40),
        ],
    );
    let other = 0.1;
    let payloads = (
        proptest::option::weighted(other, http_start_stop()),
        proptest::option::weighted(other, log_message()),
        proptest::option::weighted(other, value_metric()),
        proptest::option::weighted(other, counter_event()),
        proptest::option::weighted(other, error()),
        proptest::option::weighted(other, container_metric()),
    );
    (4..=9i32, header, payloads)
        .prop_flat_map(|(event_type, header, payloads)| {
            let (origin, timestamp, (deployment, job, index, ip), tags) = header;
            let envelope = pb::Envelope {
                origin,
                event_type,
                timestamp,
                deployment,
                job,
                index,
                ip,
                tags,
                http_start_stop: payloads.0,
                log_message: payloads.1,
                value_metric: payloads.2,
                counter_event: payloads.3,
                error: payloads.4,
                container_metric: payloads.5,
            };
            // The selected payload is always present.
            match event_type {
                4 => http_start_stop()
                    .prop_map(move |p| pb::Envelope {
                        http_start_stop: Some(p),
                        ..envelope.clone()
                    })
                    .boxed(),
                5 => log_message()
                    .prop_map(move |p| pb::Envelope {
                        log_message: Some(p),
                        ..envelope.clone()
                    })
                    .boxed(),
                6 => value_metric()
                    .prop_map(move |p| pb::Envelope {
                        value_metric: Some(p),
                        ..envelope.clone()
                    })
                    .boxed(),
                7 => counter_event()
                    .prop_map(move |p| pb::Envelope {
                        counter_event: Some(p),
                        ..envelope.clone()
                    })
                    .boxed(),
                8 => error()
                    .prop_map(move |p| pb::Envelope {
                        error: Some(p),
                        ..envelope.clone()
                    })
                    .boxed(),
                _ => container_metric()
                    .prop_map(move |p| pb::Envelope {
                        container_metric: Some(p),
                        ..envelope.clone()
                    })
                    .boxed(),
            }
        })
        .boxed()
}

/// One way of damaging an encoding.
#[derive(Clone, Debug)]
enum Damage {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    Truncate(Index),
    /// Copies a piece of the encoding itself elsewhere: plausible keys and lengths.
    Splice {
        from: Index,
        len: usize,
        to: Index,
    },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<Index>(), 0..8u8).prop_map(|(i, bit)| Damage::FlipBit(i, bit)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Damage::SetByte(i, b)),
        (any::<Index>(), vec(any::<u8>(), 1..6)).prop_map(|(i, b)| Damage::Insert(i, b)),
        (any::<Index>(), 1..20usize).prop_map(|(i, n)| Damage::Delete(i, n)),
        any::<Index>().prop_map(Damage::Truncate),
        (any::<Index>(), 1..40usize, any::<Index>()).prop_map(|(from, len, to)| Damage::Splice {
            from,
            len,
            to
        }),
    ]
}

fn apply(bytes: &mut Vec<u8>, damage: &Damage) {
    if bytes.is_empty() {
        return;
    }
    let len = bytes.len();
    match damage {
        Damage::FlipBit(i, bit) => bytes[i.index(len)] ^= 1 << bit,
        Damage::SetByte(i, b) => bytes[i.index(len)] = *b,
        Damage::Insert(i, new) => {
            let at = i.index(len + 1);
            bytes.splice(at..at, new.iter().copied());
        }
        Damage::Delete(i, n) => {
            let at = i.index(len);
            bytes.drain(at..(at + n).min(len));
        }
        Damage::Truncate(i) => bytes.truncate(i.index(len)),
        Damage::Splice { from, len: n, to } => {
            let start = from.index(len);
            let piece = bytes[start..(start + n).min(len)].to_vec();
            let at = to.index(len + 1);
            bytes.splice(at..at, piece);
        }
    }
}

fn damaged_envelope() -> BoxedStrategy<Vec<u8>> {
    (envelope(), vec(damage(), 1..4))
        .prop_map(|(envelope, damages)| {
            let mut bytes = envelope.encode_to_vec();
            for damage in &damages {
                apply(&mut bytes, damage);
            }
            bytes
        })
        .boxed()
}

/// What the fast decoder may reject although prost accepts it: absent `required` fields
/// (prost does not check them), groups (prost skips them as unknown fields), and a `tags` map
/// entry of another wire type than length-delimited (prost reads any as length-delimited).
fn stricter_than_prost(error: &DecodeError) -> bool {
    match error {
        DecodeError::MissingField { .. } => true,
        DecodeError::Malformed { detail, .. } => detail.contains("group"),
        DecodeError::WireType {
            message: "Envelope",
            field: "tags",
            ..
        } => true,
        _ => false,
    }
}

/// Decodes damaged bytes with both decoders and checks they agree; returns the fast decoder's
/// verdict.
fn check_damaged(bytes: &[u8]) -> Result<Result<(), DecodeError>, TestCaseError> {
    let fast = decode::decode_v1(Bytes::copy_from_slice(bytes));
    let reference = reference::decode_v1(bytes);
    match (&fast, &reference) {
        // Damage can make a NaN, which `==` never matches: compare the renderings, which
        // show every field.
        (Ok(fast), Ok(reference)) => {
            prop_assert_eq!(format!("{fast:?}"), format!("{reference:?}"))
        }
        (Ok(fast), Err(e)) => prop_assert!(false, "fast accepted {fast:?}, reference: {e}"),
        (Err(e), Ok(_)) => prop_assert!(stricter_than_prost(e), "fast rejected with {e:?}"),
        (Err(_), Err(_)) => {}
    }
    Ok(fast.map(drop))
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn fast_and_reference_decode_valid_envelopes_alike(envelope in envelope()) {
        let bytes = envelope.encode_to_vec();
        let reference = reference::decode_v1(&bytes).expect("a valid envelope");
        let fast = decode::decode_v1(Bytes::from(bytes)).expect("a valid envelope");
        prop_assert_eq!(&fast, &reference);
        prop_assert_eq!(fast, reference::event_from_v1(envelope).expect("a valid envelope"));
    }

    #[test]
    fn concatenated_envelopes_merge_alike(first in envelope(), second in envelope()) {
        // Protobuf defines a concatenation as a merge: last scalar wins, embedded messages
        // merge, repeated fields and maps accumulate.
        let mut bytes = first.encode_to_vec();
        second.encode(&mut bytes).expect("a Vec grows");
        let reference = reference::decode_v1(&bytes).expect("merged valid envelopes");
        let fast = decode::decode_v1(Bytes::from(bytes)).expect("merged valid envelopes");
        prop_assert_eq!(fast, reference);
    }

    #[test]
    fn damaged_envelopes_never_panic_nor_disagree_with_the_reference(
        bytes in damaged_envelope()
    ) {
        let _verdict = check_damaged(&bytes)?;
    }
}

#[test]
fn damage_leaves_both_decodable_and_rejected_envelopes() {
    // Guards the property above against vacuity: some damaged envelopes must still decode
    // (damage inside a string, an ignored field...), and the others must fail for many
    // different reasons.
    let mut runner =
        TestRunner::new_with_rng(config(1), TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let strategy = damaged_envelope();
    let mut verdicts = std::collections::BTreeMap::new();
    for _ in 0..400 {
        let bytes = strategy
            .new_tree(&mut runner)
            .expect("the strategy generates")
            .current();
        let verdict = match check_damaged(&bytes) {
            Ok(Ok(())) => "ok",
            Ok(Err(e)) => e.reason(),
            Err(e) => panic!("{e}"),
        };
        *verdicts.entry(verdict).or_insert(0) += 1;
    }
    assert!(verdicts.get("ok").is_some_and(|n| *n >= 20), "{verdicts:?}");
    assert!(verdicts.len() >= 6, "{verdicts:?}");
}
