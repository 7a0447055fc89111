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
            r#type: 1,
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
fn an_error_travels_as_a_log_tagged_v1_type_error_as_loggregator_sends_it() {
    let event = Event {
        timestamp: 3,
        header: Header {
            origin: "doppler".into(),
            job: "doppler".into(),
            ..Default::default()
        },
        payload: Payload::Error(ErrorEvent {
            source: "doppler".into(),
            code: 1,
            message: "message too large".into(),
        }),
    };
    let envelope = event_to_v2(&event);
    let Some(pb::envelope::Message::Log(log)) = &envelope.message else {
        panic!("an Error becomes a log: {envelope:?}");
    };
    assert_eq!(&log.payload[..], b"message too large");
    assert_eq!(
        envelope.tags.get("__v1_type").map(String::as_str),
        Some("Error")
    );
    assert_eq!(one(&envelope), event);

    let mut bad_code = envelope.clone();
    bad_code.tags.insert("code".into(), "E42".into());
    let error = map(&bad_code).expect_err("code is not a number");
    assert!(error.to_string().contains("code \"E42\""), "{error}");
}

#[test]
fn http_timers_as_loggregator_converts_them_from_v1_map_too() {
    // Loggregator's own v1→v2 conversion: deprecated tags, `routing_instance_id`, and
    // forwarded addresses joined with newlines.
    let mut envelope = http_timer();
    let mut tags = std::mem::take(&mut envelope.tags);
    let routing = tags.remove("instance_id").expect("set above");
    tags.insert("routing_instance_id".into(), routing.clone());
    tags.insert("forwarded".into(), "6.6.6.6\n8.8.8.8".into());
    tags.insert("__v1_type".into(), "HttpStartStop".into());
    envelope.deprecated_tags = tags
        .into_iter()
        .map(|(k, v)| {
            (
                k,
                pb::Value {
                    data: Some(pb::value::Data::Text(v)),
                },
            )
        })
        .collect();
    let event = one(&envelope);
    let Payload::Http(http) = &event.payload else {
        panic!("not http: {event:?}");
    };
    assert_eq!(http.instance_id.to_string(), routing);
    assert_eq!(http.forwarded, vec![Str::from("6.6.6.6"), "8.8.8.8".into()]);
    let left: Vec<_> = event
        .header
        .tags
        .iter()
        .map(|(k, _)| k.to_string())
        .collect();
    assert_eq!(left, ["zone"], "every conversion tag is consumed");
}

#[test]
fn cf_name_tags_survive_the_mapping_as_app_tags() {
    let mut envelope = http_timer();
    for (key, value) in [
        ("app_name", "billing"),
        ("space_id", "s-1"),
        ("space_name", "prod"),
        ("organization_id", "o-1"),
        ("organization_name", "acme"),
    ] {
        envelope.tags.insert(key.into(), value.into());
    }
    let event = one(&envelope);
    let tags = event.header.tags.app_tags().expect("names are tagged");
    assert_eq!(&*tags.name, "billing");
    assert_eq!(&*tags.space_id, "s-1");
    assert_eq!(&*tags.space_name, "prod");
    assert_eq!(&*tags.org_id, "o-1");
    assert_eq!(&*tags.org_name, "acme");
    assert_eq!(one(&http_timer()).header.tags.app_tags(), None);
}
