//! The v2 mapping against the golden envelopes of `shared/testdata`, which carry the same
//! records in v1 (`golden-v1.*`) and v2 (`golden-v2.*`) form, encoded by Google's protobuf.

use std::path::PathBuf;

use bytes::Bytes;
use prost::Message;
use serde_json::Value;
use sluice_model::event::{Event, EventType, Payload};
use sluice_model::framing::frames;
use sluice_model::proto::loggregator::v2 as pb;
use sluice_model::reference::decode_v1;
use sluice_model::v2::{decode_v2, envelope_to_json, event_to_v2, parse_sse_batch};

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/testdata")
        .join(name)
}

fn records(name: &str) -> Vec<Bytes> {
    let bin = std::fs::read(testdata(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    frames(&bin)
        .map(|(offset, record)| record.unwrap_or_else(|e| panic!("{name} at {offset}: {e}")))
        .collect()
}

fn json_lines(name: &str) -> Vec<String> {
    std::fs::read_to_string(testdata(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The events of each golden v2 record, in order.
fn v2_events() -> Vec<Vec<Event>> {
    records("golden-v2.bin")
        .iter()
        .enumerate()
        .map(|(i, record)| {
            let mut events = Vec::new();
            let n = decode_v2(record, &mut events).unwrap_or_else(|e| panic!("record {i}: {e}"));
            assert!(n > 0, "record {i} maps to no event");
            events
        })
        .collect()
}

#[test]
fn every_golden_v2_record_decodes() {
    let events = v2_events();
    assert_eq!(events.len(), 200);
    let count = |t: EventType| {
        events
            .iter()
            .flatten()
            .filter(|e| e.event_type() == t)
            .count()
    };
    assert_eq!(count(EventType::LogMessage), 40);
    assert_eq!(count(EventType::CounterEvent), 40);
    assert_eq!(count(EventType::HttpStartStop), 40);
    assert_eq!(count(EventType::ContainerMetric), 40);
    // 40 gauges that are not container metrics, with one to six entries each.
    assert_eq!(count(EventType::ValueMetric), 111);
    assert_eq!(count(EventType::Error), 0);
}

#[test]
fn each_json_line_parsed_as_a_batch_gives_the_same_events_as_its_record() {
    let lines = json_lines("golden-v2.jsonl");
    let expected = v2_events();
    assert_eq!(lines.len(), expected.len());
    for (i, (line, expected)) in lines.iter().zip(expected).enumerate() {
        let mut events = Vec::new();
        let report = parse_sse_batch(&format!(r#"{{"batch":[{line}]}}"#), &mut events)
            .unwrap_or_else(|e| panic!("line {i}: {e}"));
        assert!(
            report.rejected.is_empty(),
            "line {i}: {:?}",
            report.rejected
        );
        assert_eq!(report.events, events.len());
        assert_eq!(events, expected, "line {i}");
    }
}

#[test]
fn envelope_to_json_reproduces_each_golden_json_line() {
    let lines = json_lines("golden-v2.jsonl");
    for (i, (record, line)) in records("golden-v2.bin").iter().zip(lines).enumerate() {
        let envelope = pb::Envelope::decode(record.clone()).expect("golden record decodes");
        let expected: Value = serde_json::from_str(&line).expect("golden JSON parses");
        assert_eq!(envelope_to_json(&envelope), expected, "line {i}");
    }
}

/// The v1 events of golden-v1.bin without its Errors (v2 has none), by type, in file order.
fn v1_events_of(t: EventType) -> Vec<Event> {
    records("golden-v1.bin")
        .iter()
        .map(|record| decode_v1(record).expect("golden v1 record decodes"))
        .filter(|e| e.event_type() == t)
        .collect()
}

fn v2_events_of(t: EventType) -> Vec<Event> {
    v2_events()
        .into_iter()
        .flatten()
        .filter(|e| e.event_type() == t)
        .collect()
}

/// Both files list the same records in the same order, except that golden-v1 stops after 40
/// envelopes of each type (and adds 13 Errors, which v2 cannot carry). So the k-th v1 event
/// of a type is the k-th v2 event of that type, and whole events are compared: header, tags,
/// timestamps and every payload field — with one exception, the envelope timestamp of
/// logs, which v2 does not carry (the mapping uses the log's own timestamp, checked here).
#[test]
fn v1_and_v2_golden_records_agree_field_by_field() {
    for t in [
        EventType::LogMessage,
        EventType::CounterEvent,
        EventType::HttpStartStop,
        EventType::ContainerMetric,
    ] {
        let (v1, v2) = (v1_events_of(t), v2_events_of(t));
        assert_eq!((v1.len(), v2.len()), (40, 40), "{t:?}");
        for (k, (mut v1, v2)) in v1.into_iter().zip(v2).enumerate() {
            if let Payload::Log(log) = &v1.payload {
                assert_ne!(
                    v1.timestamp, log.timestamp,
                    "v1 log {k} has its own envelope time"
                );
                assert_eq!(v2.timestamp, log.timestamp, "v2 log {k}");
                v1.timestamp = log.timestamp;
            }
            assert_eq!(v1, v2, "{t:?} {k}");
        }
    }
}

/// ValueMetrics: v1 emitters send a gauge's metrics in their own order while v2 carries
/// them in a map (mapped in name order), and golden-v1 stops at the 40th ValueMetric, part
/// way through a gauge. So each v1 ValueMetric is compared, whole, with the v2 ValueMetric of
/// the same envelope timestamp, origin, index and name — of which there must be exactly one.
#[test]
fn v1_and_v2_golden_value_metrics_agree_field_by_field() {
    let v2 = v2_events_of(EventType::ValueMetric);
    let key = |e: &Event| match &e.payload {
        Payload::Value(metric) => (
            e.timestamp,
            e.header.origin.clone(),
            e.header.index.clone(),
            metric.name.clone(),
        ),
        other => panic!("not a value metric: {other:?}"),
    };
    let v1 = v1_events_of(EventType::ValueMetric);
    assert_eq!(v1.len(), 40);
    for (k, v1) in v1.iter().enumerate() {
        let same: Vec<&Event> = v2.iter().filter(|e| key(e) == key(v1)).collect();
        assert_eq!(same, vec![v1], "ValueMetric {k}");
    }
}

/// The inverse: v1 events turned into v2 envelopes render exactly as the golden v2 JSON of
/// the same record (gauges of several metrics excluded: one v1 event is one gauge entry).
#[test]
fn event_to_v2_of_golden_v1_events_reproduces_the_golden_v2_json() {
    let lines = json_lines("golden-v2.jsonl");
    for (t, key) in [
        (EventType::LogMessage, "log"),
        (EventType::CounterEvent, "counter"),
        (EventType::HttpStartStop, "timer"),
    ] {
        let expected = lines
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).expect("golden JSON parses"))
            .filter(|v| v.get(key).is_some());
        let v1 = v1_events_of(t);
        assert_eq!(v1.len(), 40);
        for (k, (event, expected)) in v1.iter().zip(expected).enumerate() {
            assert_eq!(envelope_to_json(&event_to_v2(event)), expected, "{t:?} {k}");
        }
    }
    let containers = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).expect("golden JSON parses"))
        .filter(|v| v.pointer("/gauge/metrics/cpu").is_some());
    for (k, (event, expected)) in v1_events_of(EventType::ContainerMetric)
        .iter()
        .zip(containers)
        .enumerate()
    {
        assert_eq!(
            envelope_to_json(&event_to_v2(event)),
            expected,
            "container {k}"
        );
    }
}

/// Every golden v1 event, Errors included, survives the trip through a v2 envelope
/// unchanged — except a log's envelope timestamp, which v2 does not carry.
#[test]
fn every_golden_v1_event_survives_a_trip_through_v2() {
    for (i, record) in records("golden-v1.bin").iter().enumerate() {
        let mut expected = decode_v1(record).expect("golden v1 record decodes");
        if let Payload::Log(log) = &expected.payload {
            expected.timestamp = log.timestamp;
        }
        let mut events = Vec::new();
        let envelope = event_to_v2(&expected).encode_to_vec();
        decode_v2(&envelope, &mut events).unwrap_or_else(|e| panic!("record {i}: {e}"));
        assert_eq!(events, vec![expected], "record {i}");
    }
}
