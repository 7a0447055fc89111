use std::collections::BTreeMap;

use prost::Message;

use super::*;
use crate::event::{AppId, ErrorEvent};

const APP: &str = "84c69290-764b-4018-94b0-62ae88c88ad1";
const REQUEST: &str = "59fa4c87-6655-4d0a-825a-0693418a2b7d";

fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn http_timer() -> pb::Envelope {
    pb::Envelope {
        timestamp: 1_710_234_017_622_995_896,
        source_id: APP.into(),
        instance_id: "2".into(),
        tags: tags(&[
            ("origin", "gorouter"),
            ("deployment", "cf"),
            ("job", "router"),
            ("index", "1"),
            ("ip", "10.0.4.11"),
            ("request_id", REQUEST),
            ("peer_type", "Client"),
            ("method", "POST"),
            ("uri", "https://a.example.com/login"),
            ("remote_address", "10.0.0.6:44749"),
            ("user_agent", "curl/8.4.0"),
            ("status_code", "200"),
            ("content_length", "958"),
            ("instance_index", "2"),
            ("instance_id", "af11c1e7-7946-4a34-abd2-ed1c05f73dba"),
            ("forwarded", "203.0.113.178,10.0.0.2"),
            ("zone", "z1"),
        ]),
        message: Some(pb::envelope::Message::Timer(pb::Timer {
            name: "http".into(),
            start: 1_710_234_017_590_207_647,
            stop: 1_710_234_017_616_926_673,
        })),
        ..Default::default()
    }
}

fn map(envelope: &pb::Envelope) -> Result<Vec<Event>, DecodeError> {
    let mut out = Vec::new();
    let n = map_envelope(envelope, &mut out)?;
    assert_eq!(n, out.len(), "the count returned is the count pushed");
    Ok(out)
}

fn one(envelope: &pb::Envelope) -> Event {
    let mut events = map(envelope).expect("maps");
    assert_eq!(events.len(), 1);
    events.remove(0)
}

#[test]
fn an_http_timer_becomes_an_http_start_stop_and_consumes_its_tags() {
    let event = one(&http_timer());
    assert_eq!(&*event.header.origin, "gorouter");
    assert_eq!(&*event.header.index, "1");
    let left: Vec<_> = event.header.tags.iter().collect();
    assert_eq!(left, vec![(&Str::from("zone"), &Str::from("z1"))]);
    let Payload::Http(http) = &event.payload else {
        panic!("not http: {event:?}");
    };
    assert_eq!(http.request_id.to_string(), REQUEST);
    assert_eq!(http.peer_type, PeerType::Client);
    assert_eq!(http.method.as_str(), "POST");
    assert_eq!(http.status_code, 200);
    assert_eq!(http.content_length, 958);
    assert_eq!(http.instance_index, Some(2));
    assert_eq!(&*http.instance_id, "af11c1e7-7946-4a34-abd2-ed1c05f73dba");
    assert_eq!(
        http.forwarded,
        vec![Str::from("203.0.113.178"), "10.0.0.2".into()]
    );
    assert_eq!(
        event.app_id().map(|a| a.to_canonical()),
        Some(Str::from(APP)),
        "source_id is the app: {:?}",
        event.app_id().map(|a| matches!(a, AppId::Uuid(_)))
    );
    assert_eq!(event.event_time(), Some(1_710_234_017_616_926_673));
}

#[test]
fn http_timer_errors_name_the_tag() {
    let mut envelope = http_timer();
    envelope.tags.remove("request_id");
    let error = map(&envelope).expect_err("no request id");
    assert_eq!(error.reason(), "missing_field");
    assert!(error.to_string().contains("request_id"), "{error}");

    let mut envelope = http_timer();
    envelope.tags.insert("status_code".into(), "OK".into());
    let error = map(&envelope).expect_err("bad status");
    assert!(error.to_string().contains("status_code \"OK\""), "{error}");

    let mut envelope = http_timer();
    envelope.tags.insert("method".into(), "FETCH".into());
    assert!(
        map(&envelope)
            .expect_err("bad method")
            .to_string()
            .contains("method")
    );
}

#[test]
fn a_container_gauge_needs_a_numeric_instance_id() {
    let mut metrics = BTreeMap::new();
    for (name, value) in [("cpu", 12.5), ("memory", 1024.0), ("disk", 2048.0)] {
        metrics.insert(
            name.to_owned(),
            pb::GaugeValue {
                unit: "bytes".into(),
                value,
            },
        );
    }
    let mut envelope = pb::Envelope {
        timestamp: 5,
        source_id: APP.into(),
        instance_id: "3".into(),
        tags: tags(&[("origin", "rep")]),
        message: Some(pb::envelope::Message::Gauge(pb::Gauge { metrics })),
        ..Default::default()
    };
    let event = one(&envelope);
    let Payload::Container(metric) = &event.payload else {
        panic!("not a container metric: {event:?}");
    };
    assert_eq!((metric.instance_index, metric.memory_bytes), (3, 1024));
    assert_eq!(
        (metric.memory_bytes_quota, metric.disk_bytes_quota),
        (None, None)
    );

    envelope.instance_id = "web-0".into();
    let error = map(&envelope).expect_err("instance id is not a number");
    assert_eq!(error.reason(), "invalid");
    assert!(
        error.to_string().contains("instance_id \"web-0\""),
        "{error}"
    );
}

#[test]
fn a_gauge_splits_into_value_metrics_in_name_order() {
    let metrics = [("zeta", 1.0), ("alpha", 2.0), ("mid", 3.0)]
        .into_iter()
        .map(|(n, v)| {
            (
                n.to_owned(),
                pb::GaugeValue {
                    unit: "u".into(),
                    value: v,
                },
            )
        })
        .collect();
    let envelope = pb::Envelope {
        timestamp: 7,
        source_id: "doppler".into(),
        tags: tags(&[("origin", "doppler"), ("job", "doppler")]),
        message: Some(pb::envelope::Message::Gauge(pb::Gauge { metrics })),
        ..Default::default()
    };
    let events = map(&envelope).expect("maps");
    let names: Vec<_> = events
        .iter()
        .map(|e| match &e.payload {
            Payload::Value(v) => v.name.to_string(),
            other => panic!("not a value metric: {other:?}"),
        })
        .collect();
    assert_eq!(names, ["alpha", "mid", "zeta"]);
    assert!(
        events
            .iter()
            .all(|e| e.timestamp == 7 && &*e.header.job == "doppler")
    );
    assert!(
        events[0].header.tags.is_empty(),
        "source_id equal to origin adds no tag"
    );
}

#[test]
fn deprecated_tags_become_strings_and_tags_win() {
    let mut envelope = pb::Envelope {
        source_id: "custom-app".into(),
        instance_id: "4".into(),
        tags: tags(&[("shared", "from tags")]),
        message: Some(pb::envelope::Message::Counter(pb::Counter {
            name: "requests".into(),
            delta: 3,
            total: 0,
        })),
        ..Default::default()
    };
    for (name, data) in [
        ("shared", pb::value::Data::Text("deprecated".into())),
        ("origin", pb::value::Data::Text("legacy".into())),
        ("count", pb::value::Data::Integer(-12)),
        ("ratio", pb::value::Data::Decimal(0.25)),
    ] {
        envelope
            .deprecated_tags
            .insert(name.into(), pb::Value { data: Some(data) });
    }
    let event = one(&envelope);
    assert_eq!(&*event.header.origin, "legacy");
    let tag = |name: &str| event.header.tags.get(name).map(|s| s.to_string());
    assert_eq!(tag("shared").as_deref(), Some("from tags"));
    assert_eq!(tag("count").as_deref(), Some("-12"));
    assert_eq!(tag("ratio").as_deref(), Some("0.25"));
    assert_eq!(tag("source_id").as_deref(), Some("custom-app"));
    assert_eq!(tag("instance_id").as_deref(), Some("4"));
    let Payload::Counter(counter) = &event.payload else {
        panic!("not a counter");
    };
    assert_eq!((counter.delta, counter.total), (3, Some(0)));
}

#[test]
fn envelopes_without_a_v1_equivalent_map_to_nothing() {
    let mut timer = http_timer();
    timer.message = Some(pb::envelope::Message::Timer(pb::Timer {
        name: "db_query".into(),
        start: 1,
        stop: 2,
    }));
    let event = pb::Envelope {
        message: Some(pb::envelope::Message::Event(pb::Event {
            title: "deploy".into(),
            body: "done".into(),
        })),
        ..Default::default()
    };
    for envelope in [timer, event, pb::Envelope::default()] {
        assert_eq!(map(&envelope).expect("not an error"), Vec::new());
    }
}

#[test]
fn a_missing_origin_falls_back_to_the_source_id() {
    let envelope = pb::Envelope {
        source_id: "syslog_agent".into(),
        message: Some(pb::envelope::Message::Counter(pb::Counter {
            name: "ingress".into(),
            delta: 1,
            total: 9,
        })),
        ..Default::default()
    };
    let event = one(&envelope);
    assert_eq!(&*event.header.origin, "syslog_agent");
    assert!(event.header.tags.is_empty());
}

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

fn sample_events() -> Vec<Event> {
    let mut events = map(&http_timer()).expect("maps");
    events.push(one(&pb::Envelope {
        timestamp: 11,
        source_id: APP.into(),
        instance_id: "1".into(),
        tags: tags(&[
            ("origin", "rep"),
            ("source_type", "STG"),
            ("ip", "10.0.0.1"),
        ]),
        message: Some(pb::envelope::Message::Log(pb::Log {
            payload: "Staging complete".into(),
            r#type: 0,
        })),
        ..Default::default()
    }));
    let mut metrics = BTreeMap::new();
    for (name, value) in [
        ("cpu", 1.5),
        ("memory", 10.0),
        ("disk", 20.0),
        ("disk_quota", 40.0),
    ] {
        metrics.insert(
            name.to_owned(),
            pb::GaugeValue {
                unit: "bytes".into(),
                value,
            },
        );
    }
    events.push(one(&pb::Envelope {
        timestamp: 12,
        source_id: APP.into(),
        instance_id: "0".into(),
        tags: tags(&[("origin", "rep")]),
        message: Some(pb::envelope::Message::Gauge(pb::Gauge { metrics })),
        ..Default::default()
    }));
    events.push(one(&pb::Envelope {
        timestamp: 13,
        source_id: "registrar-app".into(),
        instance_id: "5".into(),
        tags: tags(&[("origin", "metric_registrar"), ("team", "a")]),
        message: Some(pb::envelope::Message::Gauge(pb::Gauge {
            metrics: BTreeMap::from([(
                "queue_depth".to_owned(),
                pb::GaugeValue {
                    unit: "jobs".into(),
                    value: 4.0,
                },
            )]),
        })),
        ..Default::default()
    }));
    events.push(one(&pb::Envelope {
        timestamp: 14,
        source_id: "gorouter".into(),
        tags: tags(&[("origin", "gorouter")]),
        message: Some(pb::envelope::Message::Counter(pb::Counter {
            name: "total_requests".into(),
            delta: 2,
            total: 900,
        })),
        ..Default::default()
    }));
    events
}

#[test]
fn event_to_v2_round_trips_through_protobuf_and_json() {
    for event in sample_events() {
        let envelope = event_to_v2(&event);
        assert_eq!(one(&envelope), event, "mapped back from {envelope:?}");

        let mut decoded = Vec::new();
        decode_v2(&envelope.encode_to_vec(), &mut decoded).expect("protobuf decodes");
        assert_eq!(decoded, vec![event.clone()]);

        let json = envelope_to_json(&envelope).to_string();
        assert_eq!(
            parse_envelope_json(&json).expect("JSON parses"),
            envelope,
            "{json}"
        );
    }
}

#[test]
fn an_error_event_becomes_a_v2_event_that_maps_to_nothing() {
    let event = Event {
        timestamp: 3,
        header: Header {
            origin: "doppler".into(),
            ..Default::default()
        },
        payload: Payload::Error(ErrorEvent {
            source: "doppler".into(),
            code: 1,
            message: "message too large".into(),
        }),
    };
    let envelope = event_to_v2(&event);
    assert!(matches!(
        envelope.message,
        Some(pb::envelope::Message::Event(_))
    ));
    assert_eq!(map(&envelope).expect("no error"), Vec::new());
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
