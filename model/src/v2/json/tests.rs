use std::collections::BTreeMap;

use super::*;
use crate::event::{MessageType, Payload};

#[test]
fn camel_case_and_numbers_as_numbers_parse_like_the_canonical_form() {
    let canonical = r#"{"batch":[{"timestamp":"1710234019085086325","source_id":"84c69290-764b-4018-94b0-62ae88c88ad1","instance_id":"0","tags":{"origin":"rep","source_type":"APP/PROC/WEB"},"log":{"payload":"aGk=","type":"ERR"}}]}"#;
    let camel = r#"{"batch":[{"timestamp":1710234019085086325,"sourceId":"84c69290-764b-4018-94b0-62ae88c88ad1","instanceId":"0","tags":{"origin":"rep","source_type":"APP/PROC/WEB"},"log":{"payload":"aGk","type":1}}]}"#;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let report = parse_sse_batch(canonical, &mut a).expect("canonical parses");
    assert_eq!(report.events, 1);
    parse_sse_batch(camel, &mut b).expect("camelCase parses");
    assert_eq!(a, b);
    let Payload::Log(log) = &a[0].payload else {
        panic!("not a log");
    };
    assert_eq!(
        (&log.message[..], log.message_type),
        (&b"hi"[..], MessageType::Err)
    );
    assert_eq!(log.timestamp, 1_710_234_019_085_086_325);
    assert_eq!(&*log.source_type, "APP/PROC/WEB");
    assert!(a[0].header.tags.is_empty(), "source_type is consumed");
}

#[test]
fn numeric_fields_accept_strings_numbers_and_null() {
    let json = r#"{"timestamp":null,"deprecatedTags":{"n":{"integer":5},"d":{"decimal":"Infinity"}},
        "gauge":{"metrics":{"a":{"unit":"x","value":"NaN"},"b":{"value":2},"c":null}}}"#;
    let envelope = parse_envelope_json(json).expect("parses");
    assert_eq!(envelope.timestamp, 0);
    let Some(pb::envelope::Message::Gauge(gauge)) = &envelope.message else {
        panic!("not a gauge");
    };
    assert!(gauge.metrics["a"].value.is_nan());
    assert_eq!(gauge.metrics["b"].value, 2.0);
    assert_eq!(gauge.metrics["c"], pb::GaugeValue::default());
    assert_eq!(
        envelope.deprecated_tags["n"].data,
        Some(pb::value::Data::Integer(5))
    );
    assert_eq!(
        envelope.deprecated_tags["d"].data,
        Some(pb::value::Data::Decimal(f64::INFINITY))
    );
}

#[test]
fn unknown_fields_are_ignored() {
    let json = r#"{"batch":[{"source_id":"gorouter","futureField":{"x":[1,2]},
        "counter":{"name":"total_requests","delta":"2","total":"9","newer":true}}],"extra":1}"#;
    let mut out = Vec::new();
    let report = parse_sse_batch(json, &mut out).expect("parses");
    assert_eq!((report.envelopes, report.events), (1, 1));
    assert!(report.rejected.is_empty());
}

#[test]
fn a_bad_envelope_costs_only_itself() {
    let json = r#"{"batch":[
        {"source_id":"a","counter":{"name":"one","delta":"1"}},
        {"source_id":"b","counter":{"name":"two","delta":"not a number"}},
        {"source_id":"c","event":{"title":"t"}},
        {"source_id":"d","log":{"payload":"aGk="},"counter":{"name":"both"}},
        {"source_id":"e","counter":{"name":"five","delta":"5"}},
        {"source_id":"f","gauge":{"metrics":{"cpu":{"value":1},"memory":{"value":1},"disk":{"value":1}}}}
    ]}"#;
    let mut out = Vec::new();
    let report = parse_sse_batch(json, &mut out).expect("the batch itself is fine");
    assert_eq!(
        (report.envelopes, report.events, report.unmapped),
        (6, 2, 1)
    );
    let rejected: Vec<usize> = report.rejected.iter().map(|r| r.index).collect();
    assert_eq!(rejected, [1, 3, 5]);
    assert!(
        report.rejected[0]
            .error
            .to_string()
            .contains("not a number")
    );
    assert!(report.rejected[2].error.to_string().contains("instance_id"));
    let origins: Vec<_> = out.iter().map(|e| e.header.origin.to_string()).collect();
    assert_eq!(origins, ["a", "e"]);
}

#[test]
fn a_payload_that_is_not_a_batch_is_an_error() {
    let mut out = Vec::new();
    for bad in ["", "not json", r#"{"batch":{}}"#, r#"{"batch":[1,"#] {
        let error = parse_sse_batch(bad, &mut out).expect_err(bad);
        assert_eq!(error.reason(), "invalid");
    }
    assert!(out.is_empty());
    let empty = parse_sse_batch("{}", &mut out).expect("an empty batch omits the field");
    assert_eq!(empty, SseBatch::default());
}

#[test]
fn envelope_json_uses_canonical_proto3_forms() {
    let envelope = pb::Envelope {
        timestamp: -5,
        source_id: "s".into(),
        message: Some(pb::envelope::Message::Gauge(pb::Gauge {
            metrics: BTreeMap::from([
                (
                    "inf".to_owned(),
                    pb::GaugeValue {
                        unit: String::new(),
                        value: f64::INFINITY,
                    },
                ),
                (
                    "zero".to_owned(),
                    pb::GaugeValue {
                        unit: "u".into(),
                        value: 0.0,
                    },
                ),
            ]),
        })),
        ..Default::default()
    };
    assert_eq!(
        envelope_to_json(&envelope),
        serde_json::json!({
            "timestamp": "-5",
            "source_id": "s",
            "gauge": {"metrics": {"inf": {"value": "Infinity"}, "zero": {"unit": "u"}}}
        })
    );
}
