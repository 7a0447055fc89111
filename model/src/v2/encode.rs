//! Events back to v2 envelopes: what a v2 test server or simulator sends.

use std::collections::BTreeMap;

use crate::event::{Event, MessageType, Payload};
use crate::proto::loggregator::v2 as pb;

/// The v2 envelope that [`map_envelope`](super::map_envelope) maps back onto `event` — the
/// inverse of the mapping for every event that came from v2 (one ValueMetric becomes a gauge
/// with one entry).
///
/// Where v2 has less room than v1 the event is approximated: a LogMessage's envelope
/// timestamp is replaced by the log's own; a header field wins over a tag of the same name;
/// an Error (which v2 lacks) becomes what Loggregator makes of one: a `log` tagged
/// `__v1_type` = `Error` with tags `source` and `code`, which maps back to the Error.
pub fn event_to_v2(event: &Event) -> pb::Envelope {
    let header = &event.header;
    let mut tags: BTreeMap<String, String> = header
        .tags
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (name, value) in [
        ("origin", &header.origin),
        ("deployment", &header.deployment),
        ("job", &header.job),
        ("index", &header.index),
        ("ip", &header.ip),
    ] {
        if !value.is_empty() {
            tags.insert(name.to_owned(), value.to_string());
        }
    }
    let mut envelope = pb::Envelope {
        timestamp: event.timestamp,
        ..Default::default()
    };
    // Platform metrics name their source in the origin, unless the mapping kept a
    // `source_id`/`instance_id` tag (which stays, so mapping back restores it unchanged).
    let platform_source = |tags: &BTreeMap<String, String>| {
        (
            tags.get("source_id")
                .cloned()
                .unwrap_or_else(|| header.origin.to_string()),
            tags.get("instance_id").cloned().unwrap_or_default(),
        )
    };
    use pb::envelope::Message as M;
    envelope.message = Some(match &event.payload {
        Payload::Log(log) => {
            envelope.timestamp = log.timestamp;
            envelope.source_id = log.app_id.to_string();
            envelope.instance_id = log.source_instance.to_string();
            if !log.source_type.is_empty() {
                tags.insert("source_type".into(), log.source_type.to_string());
            }
            M::Log(pb::Log {
                payload: log.message.clone(),
                r#type: match log.message_type {
                    MessageType::Out => pb::log::Type::Out as i32,
                    MessageType::Err => pb::log::Type::Err as i32,
                },
            })
        }
        Payload::Counter(counter) => {
            (envelope.source_id, envelope.instance_id) = platform_source(&tags);
            M::Counter(pb::Counter {
                name: counter.name.to_string(),
                delta: counter.delta,
                total: counter.total.unwrap_or_default(),
            })
        }
        Payload::Value(metric) => {
            (envelope.source_id, envelope.instance_id) = platform_source(&tags);
            M::Gauge(pb::Gauge {
                metrics: BTreeMap::from([(
                    metric.name.to_string(),
                    pb::GaugeValue {
                        unit: metric.unit.to_string(),
                        value: metric.value,
                    },
                )]),
            })
        }
        Payload::Container(metric) => {
            envelope.source_id = metric.application_id.to_string();
            envelope.instance_id = metric.instance_index.to_string();
            let gauge = |unit: &str, value: f64| pb::GaugeValue {
                unit: unit.to_owned(),
                value,
            };
            let mut metrics = BTreeMap::from([
                ("cpu".to_owned(), gauge("percentage", metric.cpu_percentage)),
                (
                    "memory".to_owned(),
                    gauge("bytes", metric.memory_bytes as f64),
                ),
                ("disk".to_owned(), gauge("bytes", metric.disk_bytes as f64)),
            ]);
            if let Some(quota) = metric.memory_bytes_quota {
                metrics.insert("memory_quota".to_owned(), gauge("bytes", quota as f64));
            }
            if let Some(quota) = metric.disk_bytes_quota {
                metrics.insert("disk_quota".to_owned(), gauge("bytes", quota as f64));
            }
            M::Gauge(pb::Gauge { metrics })
        }
        Payload::Http(http) => {
            envelope.source_id = http
                .application_id
                .map(|id| id.hyphenated().to_string())
                .unwrap_or_default();
            envelope.instance_id = http
                .instance_index
                .map(|i| i.to_string())
                .unwrap_or_default();
            let mut tag = |name: &str, value: String| {
                tags.insert(name.to_owned(), value);
            };
            tag("request_id", http.request_id.hyphenated().to_string());
            tag("peer_type", http.peer_type.as_str().to_owned());
            tag("method", http.method.as_str().to_owned());
            tag("uri", http.uri.to_string());
            tag("remote_address", http.remote_address.to_string());
            tag("user_agent", http.user_agent.to_string());
            tag("status_code", http.status_code.to_string());
            tag("content_length", http.content_length.to_string());
            if let Some(index) = http.instance_index {
                tag("instance_index", index.to_string());
            }
            if !http.instance_id.is_empty() {
                tag("instance_id", http.instance_id.to_string());
            }
            if !http.forwarded.is_empty() {
                let forwarded: Vec<&str> = http.forwarded.iter().map(|f| &**f).collect();
                tag("forwarded", forwarded.join(","));
            }
            M::Timer(pb::Timer {
                name: "http".to_owned(),
                start: http.start_timestamp,
                stop: http.stop_timestamp,
            })
        }
        Payload::Error(error) => {
            envelope.source_id = header.origin.to_string();
            tags.insert("__v1_type".into(), "Error".into());
            tags.insert("source".into(), error.source.to_string());
            tags.insert("code".into(), error.code.to_string());
            M::Log(pb::Log {
                payload: error.message.as_bytes().clone(),
                r#type: pb::log::Type::Out as i32,
            })
        }
    });
    envelope.tags = tags;
    envelope
}
