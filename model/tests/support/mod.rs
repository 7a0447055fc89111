//! Shared by the decoder's hand-built tests: sample envelopes and a wire-format editor.
// Each test crate that includes this module uses part of it.
#![allow(dead_code)]

pub(crate) mod wire;

use bytes::Bytes;
use prost::Message;
use sluice_model::DecodeError;
use sluice_model::proto::events as pb;

/// Decodes with the fast decoder.
pub(crate) fn decode(bytes: &[u8]) -> Result<sluice_model::Event, DecodeError> {
    sluice_model::decode::decode_v1(Bytes::copy_from_slice(bytes))
}

/// A full envelope of each type, every optional field set.
pub(crate) fn samples() -> Vec<pb::Envelope> {
    let header = pb::Envelope {
        origin: "gorouter".into(),
        timestamp: Some(1_710_234_017_622_995_896),
        deployment: Some("cf".into()),
        job: Some("router".into()),
        index: Some("0".into()),
        ip: Some("10.0.4.10".into()),
        tags: [("product", "TAS"), ("system_domain", "sys.example.com")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into(),
        ..Default::default()
    };
    let uuid = |low, high| pb::Uuid { low, high };
    vec![
        pb::Envelope {
            event_type: 4,
            http_start_stop: Some(pb::HttpStartStop {
                start_timestamp: 1_710_234_017_590_207_647,
                stop_timestamp: 1_710_234_017_616_926_673,
                request_id: uuid(742_343_412_430_994_009, 9_019_454_692_983_724_674),
                peer_type: 1,
                method: 2,
                uri: "https://billing.apps.example.com/login".into(),
                remote_address: "10.0.0.6:44749".into(),
                user_agent: "curl/8.4.0".into(),
                status_code: 200,
                content_length: 958,
                application_id: Some(uuid(1_747_479_628_023_514_756, 15_099_101_190_079_819_924)),
                instance_index: Some(0),
                instance_id: Some("af11c1e7-7946-4a34-abd2-ed1c05f73dba".into()),
                forwarded: vec!["203.0.113.178".into(), "10.0.0.2".into()],
            }),
            ..header.clone()
        },
        pb::Envelope {
            event_type: 5,
            log_message: Some(pb::LogMessage {
                message: Bytes::from_static(b"GET /static/main.css HTTP/1.1 200"),
                message_type: 1,
                timestamp: 1_710_234_019_085_086_325,
                app_id: Some("84c69290-764b-4018-94b0-62ae88c88ad1".into()),
                source_type: Some("APP/PROC/WEB".into()),
                source_instance: Some("0".into()),
            }),
            ..header.clone()
        },
        pb::Envelope {
            event_type: 6,
            value_metric: Some(pb::ValueMetric {
                name: "numGoRoutines".into(),
                value: 95.0,
                unit: "Metric".into(),
            }),
            ..header.clone()
        },
        pb::Envelope {
            event_type: 7,
            counter_event: Some(pb::CounterEvent {
                name: "responses.5xx".into(),
                delta: 3,
                total: Some(3_243_290_180),
            }),
            ..header.clone()
        },
        pb::Envelope {
            event_type: 8,
            error: Some(pb::Error {
                source: "metron".into(),
                code: 2,
                message: "dropped 120 envelopes".into(),
            }),
            ..header.clone()
        },
        pb::Envelope {
            event_type: 9,
            container_metric: Some(pb::ContainerMetric {
                application_id: "20588857-c388-4083-933b-f8206770fa78".into(),
                instance_index: 0,
                cpu_percentage: 25.245_697_098_180_088,
                memory_bytes: 179_079_375,
                disk_bytes: 284_871_302,
                memory_bytes_quota: Some(536_870_912),
                disk_bytes_quota: Some(2_147_483_648),
            }),
            ..header
        },
    ]
}

/// The encoded sample carrying the given payload field (7 = httpStartStop ... 12 = containerMetric).
pub(crate) fn sample(payload_field: u32) -> Vec<u8> {
    samples()[payload_field as usize - 7].encode_to_vec()
}
