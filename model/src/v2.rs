//! Loggregator v2 envelopes (protobuf from replay files, JSON from the RLP gateway) mapped onto
//! the same [`Event`]s a v1 Firehose delivers (SPEC §1.2).
//!
//! The mapping was worked out from `shared/testdata/golden-v{1,2}.*`, which carry the same
//! records in both formats; `tests/golden_v2.rs` checks that the two agree.
//!
//! # Header
//! - `origin`, `deployment`, `job`, `index`, `ip` come from the tags of those names and are
//!   removed from [`Header::tags`]; a missing tag is an empty string, except that a missing
//!   `origin` falls back to `source_id` (v2-native emitters often set no `origin`, and the
//!   platform rollups are keyed by it).
//! - `deprecated_tags` become string tags (`text` as is, `integer` and `decimal` printed);
//!   `tags` win over a deprecated tag of the same name. The `__v1_type` tag, which Loggregator
//!   adds to envelopes it converted from v1, is consumed (it only matters for Errors, below).
//!
//! # Payloads
//! - `log` → LogMessage: `app_id` = `source_id`, `source_instance` = `instance_id`,
//!   `source_type` = tag `source_type` (consumed), `message_type` OUT/ERR from `type`. The
//!   envelope `timestamp` is both the log's timestamp and [`Event::timestamp`].
//! - `counter` → CounterEvent: `delta`, `total` (always `Some`: proto3 cannot tell an absent
//!   total from 0).
//! - `gauge` with `cpu`, `memory` and `disk` → ContainerMetric: `application_id` = `source_id`,
//!   `instance_index` = `instance_id` (which must then be a number), byte counts from the
//!   gauge values (negative or non-finite values are an error; a fraction of a byte is
//!   truncated), the quotas from `memory_quota`/`disk_quota` when present. Other entries of
//!   such a gauge have no place in a ContainerMetric and are dropped.
//! - any other `gauge` → one ValueMetric per entry, in name order, all sharing the header.
//! - `timer` named `http` → HttpStartStop: `start`/`stop`; `application_id` = `source_id` when
//!   it is a UUID (else `None`); `instance_index` = `instance_id` when set, else the tag
//!   `instance_index`, else `None`; `instance_id` = tag `instance_id` (or, as Loggregator's own
//!   v1→v2 conversion names it, `routing_instance_id`); `forwarded` = tag `forwarded` split at
//!   commas or newlines (Loggregator joins with `\n`). Tags `request_id`, `peer_type` and
//!   `method` are required;
//!   `uri`, `remote_address`, `user_agent` default to empty and `status_code`,
//!   `content_length` to 0. All these tags are consumed.
//! - For CounterEvents and ValueMetrics, a `source_id` that differs from the origin and a
//!   non-empty `instance_id` are kept as tags of those names (unless `tags` already has
//!   them), so app metrics sent by the metric registrar keep their app.
//! - A `log` tagged `__v1_type` = `Error` is how Loggregator carries a v1 Error in v2: it maps
//!   back to an Error (`source` and `code` from the tags of those names, the message from the
//!   payload) rather than to a LogMessage.
//! - Other timers, `event` envelopes and envelopes without a payload map to nothing (`Ok(0)`):
//!   v1 has no equivalent. The caller counts them as skipped (`unmapped_v2`).
//!
//! # Where a mapped v2 event differs from the v1 event of the same record
//! - LogMessage [`Event::timestamp`]: v1 carries a separate envelope timestamp (when the
//!   agent forwarded the log), which v2 does not have; here it equals the log's timestamp.
//!   The event time of SPEC §2 is the same.
//! - ValueMetric order: v1 emitters send a gauge's metrics in their own order, v2 carries them
//!   in a map, mapped here in name order.
//! - v2 has no Error envelope of its own (see the `__v1_type` convention above).
//!
//! A mapping error never pushes part of an envelope's events.

use std::borrow::Cow;
use std::collections::BTreeMap;

use prost::Message;
use uuid::Uuid;

use crate::error::DecodeError;
use crate::event::{
    ContainerMetric, CounterEvent, ErrorEvent, Event, Header, HttpStartStop, LogMessage,
    MessageType, Method, Payload, PeerType, Str, Tags, ValueMetric,
};
use crate::proto::loggregator::v2 as pb;

mod encode;
mod json;

pub use encode::event_to_v2;
pub use json::{
    RejectedEnvelope, SseBatch, envelope_to_json, parse_envelope_json, parse_sse_batch,
};

/// Decodes one protobuf v2 envelope (a replay file record) and maps it; returns how many
/// events were pushed onto `out` (0 for envelopes v1 has no equivalent for).
pub fn decode_v2(frame: &[u8], out: &mut Vec<Event>) -> Result<usize, DecodeError> {
    let envelope = pb::Envelope::decode(frame).map_err(|e| DecodeError::Invalid {
        message: "Envelope",
        detail: e.to_string(),
    })?;
    map_envelope(&envelope, out)
}

/// Maps one v2 envelope onto events (see the module doc) and pushes them onto `out`; returns
/// how many were pushed: 0 for envelopes v1 has no equivalent for (timers not named `http`,
/// `event` envelopes, no payload). On error nothing is pushed.
pub fn map_envelope(envelope: &pb::Envelope, out: &mut Vec<Event>) -> Result<usize, DecodeError> {
    use pb::envelope::Message as M;
    let Some(message) = &envelope.message else {
        return Ok(0);
    };
    if matches!(message, M::Event(_)) || matches!(message, M::Timer(t) if t.name != "http") {
        return Ok(0);
    }
    let mut tags = TagMap::of(envelope);
    let v1_type = tags.take("__v1_type");
    let header = |tags: &mut TagMap<'_>| Header {
        origin: tags
            .take("origin")
            .unwrap_or_else(|| envelope.source_id.as_str().into()),
        deployment: tags.take("deployment").unwrap_or_default(),
        job: tags.take("job").unwrap_or_default(),
        index: tags.take("index").unwrap_or_default(),
        ip: tags.take("ip").unwrap_or_default(),
        tags: Tags::default(),
    };
    let timestamp = envelope.timestamp;
    match message {
        M::Log(log) if v1_type.as_deref() == Some("Error") => {
            let mut header = header(&mut tags);
            let source = tags.take("source").unwrap_or_default();
            let code = tags.parsed::<i32>("code", "is not an error code")?;
            header.tags = tags.into_tags();
            let message =
                Str::try_from(log.payload.clone()).map_err(|_| DecodeError::InvalidUtf8 {
                    message: "Log",
                    field: "payload",
                })?;
            out.push(Event {
                timestamp,
                header,
                payload: Payload::Error(ErrorEvent {
                    source,
                    code: code.unwrap_or_default(),
                    message,
                }),
            });
            Ok(1)
        }
        M::Log(log) => {
            let mut header = header(&mut tags);
            let source_type = tags.take("source_type").unwrap_or_default();
            let message_type = match log.r#type {
                0 => MessageType::Out,
                1 => MessageType::Err,
                other => {
                    return Err(DecodeError::UnknownEnum {
                        message: "Log",
                        field: "type",
                        value: i64::from(other),
                    });
                }
            };
            header.tags = tags.into_tags();
            out.push(Event {
                timestamp,
                header,
                payload: Payload::Log(LogMessage {
                    names: None,
                    message: log.payload.clone(),
                    message_type,
                    timestamp,
                    app_id: envelope.source_id.as_str().into(),
                    source_type,
                    source_instance: envelope.instance_id.as_str().into(),
                }),
            });
            Ok(1)
        }
        M::Counter(counter) => {
            let mut header = header(&mut tags);
            tags.keep_source(envelope, &header.origin);
            header.tags = tags.into_tags();
            out.push(Event {
                timestamp,
                header,
                payload: Payload::Counter(CounterEvent {
                    name: counter.name.as_str().into(),
                    delta: counter.delta,
                    total: Some(counter.total),
                }),
            });
            Ok(1)
        }
        M::Gauge(gauge) if is_container_metric(gauge) => {
            let mut header = header(&mut tags);
            let metric = container_metric(envelope, gauge)?;
            header.tags = tags.into_tags();
            out.push(Event {
                timestamp,
                header,
                payload: Payload::Container(metric),
            });
            Ok(1)
        }
        M::Gauge(gauge) => {
            let mut header = header(&mut tags);
            tags.keep_source(envelope, &header.origin);
            header.tags = tags.into_tags();
            // BTreeMap iteration is in name order.
            out.extend(gauge.metrics.iter().map(|(name, metric)| Event {
                timestamp,
                header: header.clone(),
                payload: Payload::Value(ValueMetric {
                    name: name.as_str().into(),
                    value: metric.value,
                    unit: metric.unit.as_str().into(),
                }),
            }));
            Ok(gauge.metrics.len())
        }
        M::Timer(timer) => {
            let mut header = header(&mut tags);
            let http = http_start_stop(envelope, timer, &mut tags)?;
            header.tags = tags.into_tags();
            out.push(Event {
                timestamp,
                header,
                payload: Payload::Http(http),
            });
            Ok(1)
        }
        M::Event(_) => Ok(0),
    }
}

/// The gauge names that make a gauge a container metric (SPEC §1.2).
const CONTAINER_METRICS: [&str; 3] = ["cpu", "memory", "disk"];

fn is_container_metric(gauge: &pb::Gauge) -> bool {
    CONTAINER_METRICS
        .iter()
        .all(|name| gauge.metrics.contains_key(*name))
}

fn container_metric(
    envelope: &pb::Envelope,
    gauge: &pb::Gauge,
) -> Result<ContainerMetric, DecodeError> {
    let instance_index = match envelope.instance_id.as_str() {
        "" => {
            return Err(DecodeError::MissingField {
                message: "Envelope",
                field: "instance_id",
            });
        }
        id => id.parse::<i32>().map_err(|_| DecodeError::Invalid {
            message: "Envelope",
            detail: format!(
                "instance_id {id:?} of a container metric gauge is not an instance index"
            ),
        })?,
    };
    let value = |name: &str| gauge.metrics.get(name).map(|m| m.value);
    let bytes = |name: &'static str| -> Result<Option<u64>, DecodeError> {
        match value(name) {
            None => Ok(None),
            Some(v) if v.is_finite() && v >= 0.0 => Ok(Some(v as u64)),
            Some(v) => Err(DecodeError::Invalid {
                message: "Gauge",
                detail: format!("container metric {name} = {v} is not a byte count"),
            }),
        }
    };
    Ok(ContainerMetric {
        application_id: envelope.source_id.as_str().into(),
        instance_index,
        cpu_percentage: value("cpu").unwrap_or_default(),
        memory_bytes: bytes("memory")?.unwrap_or_default(),
        disk_bytes: bytes("disk")?.unwrap_or_default(),
        memory_bytes_quota: bytes("memory_quota")?,
        disk_bytes_quota: bytes("disk_quota")?,
    })
}

fn http_start_stop(
    envelope: &pb::Envelope,
    timer: &pb::Timer,
    tags: &mut TagMap<'_>,
) -> Result<HttpStartStop, DecodeError> {
    let request_id = tags.require("request_id")?;
    let request_id = Uuid::parse_str(&request_id)
        .map_err(|_| invalid_tag("request_id", &request_id, "is not a UUID"))?;
    let peer_type = tags.require("peer_type")?;
    let peer_type = PeerType::from_name(&peer_type)
        .or_else(|| match peer_type.to_ascii_lowercase().as_str() {
            "client" => Some(PeerType::Client),
            "server" => Some(PeerType::Server),
            _ => None,
        })
        .ok_or_else(|| invalid_tag("peer_type", &peer_type, "is neither Client nor Server"))?;
    let method = tags.require("method")?;
    let method = Method::from_name(&method.to_ascii_uppercase())
        .ok_or_else(|| invalid_tag("method", &method, "is not an HTTP method"))?;
    let status_code = tags.parsed::<i32>("status_code", "is not a status code")?;
    let content_length = tags.parsed::<i64>("content_length", "is not a length")?;
    let tag_index = tags.parsed::<i32>("instance_index", "is not an instance index")?;
    let instance_index = match envelope.instance_id.as_str() {
        "" => tag_index,
        id => Some(id.parse::<i32>().map_err(|_| DecodeError::Invalid {
            message: "Envelope",
            detail: format!("instance_id {id:?} of an http timer is not an instance index"),
        })?),
    };
    let forwarded = match tags.take("forwarded") {
        Some(list) if !list.trim().is_empty() => list
            .split([',', '\n'])
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(Str::from)
            .collect(),
        _ => Vec::new(),
    };
    let routing_instance_id = tags.take("routing_instance_id");
    Ok(HttpStartStop {
        start_timestamp: timer.start,
        stop_timestamp: timer.stop,
        request_id,
        peer_type,
        method,
        uri: tags.take("uri").unwrap_or_default(),
        remote_address: tags.take("remote_address").unwrap_or_default(),
        user_agent: tags.take("user_agent").unwrap_or_default(),
        status_code: status_code.unwrap_or_default(),
        content_length: content_length.unwrap_or_default(),
        application_id: Uuid::parse_str(&envelope.source_id).ok(),
        instance_index,
        instance_id: tags
            .take("instance_id")
            .or(routing_instance_id)
            .unwrap_or_default(),
        forwarded,
    })
}

fn invalid_tag(name: &str, value: &str, problem: &str) -> DecodeError {
    DecodeError::Invalid {
        message: "Envelope.tags",
        detail: format!("{name} {value:?} {problem}"),
    }
}

/// An envelope's tags and deprecated tags merged (tags win), from which the mapping takes
/// the ones a payload consumes; what is left becomes [`Header::tags`].
struct TagMap<'a>(BTreeMap<&'a str, Cow<'a, str>>);

impl<'a> TagMap<'a> {
    fn of(envelope: &'a pb::Envelope) -> TagMap<'a> {
        let mut map: BTreeMap<&'a str, Cow<'a, str>> = BTreeMap::new();
        for (name, value) in &envelope.deprecated_tags {
            let text = match &value.data {
                Some(pb::value::Data::Text(text)) => Cow::Borrowed(text.as_str()),
                Some(pb::value::Data::Integer(n)) => Cow::Owned(n.to_string()),
                Some(pb::value::Data::Decimal(x)) => Cow::Owned(x.to_string()),
                None => continue,
            };
            map.insert(name, text);
        }
        for (name, value) in &envelope.tags {
            map.insert(name, Cow::Borrowed(value));
        }
        TagMap(map)
    }

    fn take(&mut self, name: &str) -> Option<Str> {
        self.0.remove(name).map(cow_str)
    }

    fn require(&mut self, name: &'static str) -> Result<Str, DecodeError> {
        self.take(name).ok_or(DecodeError::MissingField {
            message: "Envelope.tags",
            field: name,
        })
    }

    fn parsed<T: std::str::FromStr>(
        &mut self,
        name: &str,
        problem: &str,
    ) -> Result<Option<T>, DecodeError> {
        match self.take(name) {
            None => Ok(None),
            Some(text) => text
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| invalid_tag(name, &text, problem)),
        }
    }

    /// Keeps `source_id` (when it says more than the origin) and `instance_id` as tags.
    fn keep_source(&mut self, envelope: &'a pb::Envelope, origin: &str) {
        if !envelope.source_id.is_empty() && envelope.source_id != origin {
            self.0
                .entry("source_id")
                .or_insert(Cow::Borrowed(&envelope.source_id));
        }
        if !envelope.instance_id.is_empty() {
            self.0
                .entry("instance_id")
                .or_insert(Cow::Borrowed(&envelope.instance_id));
        }
    }

    fn into_tags(self) -> Tags {
        Tags::from_pairs(
            self.0
                .into_iter()
                .map(|(k, v)| (Str::from(k), cow_str(v)))
                .collect(),
        )
    }
}

fn cow_str(text: Cow<'_, str>) -> Str {
    match text {
        Cow::Borrowed(text) => Str::from(text),
        Cow::Owned(text) => Str::from(text),
    }
}

#[cfg(test)]
mod tests;
