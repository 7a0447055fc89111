//! Conversions between the prost-generated dropsonde types and [`Event`]s.
//!
//! [`decode_v1`] is the reference decoder: prost's generated code plus a plain conversion. It is
//! the oracle the fast decoder in [`crate::decode`] is tested against, and the baseline of the
//! decode benchmark. [`encode_v1`] is how the simulator and the tests produce wire bytes.
//!
//! prost does not enforce proto2 `required` fields (an absent one decodes as its default), so
//! the reference decoder cannot report them missing; the fast decoder does.

use prost::Message;

use crate::error::DecodeError;
use crate::event::{
    ContainerMetric, CounterEvent, ErrorEvent, Event, EventType, Header, HttpStartStop, LogMessage,
    MessageType, Method, Payload, PeerType, Str, Tags, ValueMetric, uuid_from_halves,
    uuid_to_halves,
};
use crate::proto::events as pb;

/// Decodes one dropsonde envelope with prost and converts it.
pub fn decode_v1(frame: &[u8]) -> Result<Event, DecodeError> {
    let envelope = pb::Envelope::decode(frame).map_err(|e| DecodeError::Invalid {
        message: "Envelope",
        detail: e.to_string(),
    })?;
    event_from_v1(envelope)
}

/// Converts a prost dropsonde envelope into an event.
pub fn event_from_v1(envelope: pb::Envelope) -> Result<Event, DecodeError> {
    let event_type = EventType::from_wire(envelope.event_type).ok_or(DecodeError::UnknownEnum {
        message: "Envelope",
        field: "eventType",
        value: i64::from(envelope.event_type),
    })?;
    let mismatch = || DecodeError::TypeMismatch {
        event_type: event_type_name(event_type),
    };
    let payload = match event_type {
        EventType::LogMessage => {
            let log = envelope.log_message.ok_or_else(mismatch)?;
            Payload::Log(LogMessage {
                names: None,
                message: log.message,
                message_type: MessageType::from_wire(log.message_type).ok_or(
                    DecodeError::UnknownEnum {
                        message: "LogMessage",
                        field: "message_type",
                        value: i64::from(log.message_type),
                    },
                )?,
                timestamp: log.timestamp,
                app_id: str_or_empty(log.app_id),
                source_type: str_or_empty(log.source_type),
                source_instance: str_or_empty(log.source_instance),
            })
        }
        EventType::HttpStartStop => {
            let http = envelope.http_start_stop.ok_or_else(mismatch)?;
            let request_id = http.request_id;
            Payload::Http(HttpStartStop {
                start_timestamp: http.start_timestamp,
                stop_timestamp: http.stop_timestamp,
                request_id: uuid_from_halves(request_id.low, request_id.high),
                peer_type: PeerType::from_wire(http.peer_type).ok_or(DecodeError::UnknownEnum {
                    message: "HttpStartStop",
                    field: "peerType",
                    value: i64::from(http.peer_type),
                })?,
                method: Method::from_wire(http.method).ok_or(DecodeError::UnknownEnum {
                    message: "HttpStartStop",
                    field: "method",
                    value: i64::from(http.method),
                })?,
                uri: http.uri.into(),
                remote_address: http.remote_address.into(),
                user_agent: http.user_agent.into(),
                status_code: http.status_code,
                content_length: http.content_length,
                application_id: http
                    .application_id
                    .map(|id| uuid_from_halves(id.low, id.high)),
                instance_index: http.instance_index,
                instance_id: str_or_empty(http.instance_id),
                forwarded: http.forwarded.into_iter().map(Str::from).collect(),
            })
        }
        EventType::ContainerMetric => {
            let metric = envelope.container_metric.ok_or_else(mismatch)?;
            Payload::Container(ContainerMetric {
                application_id: metric.application_id.into(),
                instance_index: metric.instance_index,
                cpu_percentage: metric.cpu_percentage,
                memory_bytes: metric.memory_bytes,
                disk_bytes: metric.disk_bytes,
                memory_bytes_quota: metric.memory_bytes_quota,
                disk_bytes_quota: metric.disk_bytes_quota,
            })
        }
        EventType::ValueMetric => {
            let metric = envelope.value_metric.ok_or_else(mismatch)?;
            Payload::Value(ValueMetric {
                name: metric.name.into(),
                value: metric.value,
                unit: metric.unit.into(),
            })
        }
        EventType::CounterEvent => {
            let counter = envelope.counter_event.ok_or_else(mismatch)?;
            Payload::Counter(CounterEvent {
                name: counter.name.into(),
                delta: counter.delta,
                total: counter.total,
            })
        }
        EventType::Error => {
            let error = envelope.error.ok_or_else(mismatch)?;
            Payload::Error(ErrorEvent {
                source: error.source.into(),
                code: error.code,
                message: error.message.into(),
            })
        }
    };
    Ok(Event {
        timestamp: envelope.timestamp.unwrap_or(0),
        header: Header {
            origin: envelope.origin.into(),
            deployment: str_or_empty(envelope.deployment),
            job: str_or_empty(envelope.job),
            index: str_or_empty(envelope.index),
            ip: str_or_empty(envelope.ip),
            tags: Tags::from_pairs(
                envelope
                    .tags
                    .into_iter()
                    .map(|(k, v)| (k.into(), v.into()))
                    .collect(),
            ),
        },
        payload,
    })
}

/// Encodes an event as one dropsonde envelope (without framing).
pub fn encode_v1(event: &Event) -> Vec<u8> {
    event_to_v1(event).encode_to_vec()
}

/// Converts an event into the prost dropsonde envelope that carries it. Empty optional
/// strings are left out, so `event_from_v1(event_to_v1(e)) == e`.
pub fn event_to_v1(event: &Event) -> pb::Envelope {
    let header = &event.header;
    let mut envelope = pb::Envelope {
        origin: header.origin.to_string(),
        event_type: event.event_type() as i32,
        timestamp: (event.timestamp != 0).then_some(event.timestamp),
        deployment: string_or_none(&header.deployment),
        job: string_or_none(&header.job),
        index: string_or_none(&header.index),
        ip: string_or_none(&header.ip),
        tags: header
            .tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    };
    match &event.payload {
        Payload::Log(log) => {
            envelope.log_message = Some(pb::LogMessage {
                message: log.message.clone(),
                message_type: match log.message_type {
                    MessageType::Out => 1,
                    MessageType::Err => 2,
                },
                timestamp: log.timestamp,
                app_id: string_or_none(&log.app_id),
                source_type: string_or_none(&log.source_type),
                source_instance: string_or_none(&log.source_instance),
            })
        }
        Payload::Http(http) => {
            let (low, high) = uuid_to_halves(http.request_id);
            envelope.http_start_stop = Some(pb::HttpStartStop {
                start_timestamp: http.start_timestamp,
                stop_timestamp: http.stop_timestamp,
                request_id: pb::Uuid { low, high },
                peer_type: match http.peer_type {
                    PeerType::Client => 1,
                    PeerType::Server => 2,
                },
                method: http.method.wire_value(),
                uri: http.uri.to_string(),
                remote_address: http.remote_address.to_string(),
                user_agent: http.user_agent.to_string(),
                status_code: http.status_code,
                content_length: http.content_length,
                application_id: http.application_id.map(|id| {
                    let (low, high) = uuid_to_halves(id);
                    pb::Uuid { low, high }
                }),
                instance_index: http.instance_index,
                instance_id: string_or_none(&http.instance_id),
                forwarded: http.forwarded.iter().map(|f| f.to_string()).collect(),
            })
        }
        Payload::Container(metric) => {
            envelope.container_metric = Some(pb::ContainerMetric {
                application_id: metric.application_id.to_string(),
                instance_index: metric.instance_index,
                cpu_percentage: metric.cpu_percentage,
                memory_bytes: metric.memory_bytes,
                disk_bytes: metric.disk_bytes,
                memory_bytes_quota: metric.memory_bytes_quota,
                disk_bytes_quota: metric.disk_bytes_quota,
            })
        }
        Payload::Value(metric) => {
            envelope.value_metric = Some(pb::ValueMetric {
                name: metric.name.to_string(),
                value: metric.value,
                unit: metric.unit.to_string(),
            })
        }
        Payload::Counter(counter) => {
            envelope.counter_event = Some(pb::CounterEvent {
                name: counter.name.to_string(),
                delta: counter.delta,
                total: counter.total,
            })
        }
        Payload::Error(error) => {
            envelope.error = Some(pb::Error {
                source: error.source.to_string(),
                code: error.code,
                message: error.message.to_string(),
            })
        }
    }
    envelope
}

/// The schema's name of an event type, as error messages show it.
pub(crate) fn event_type_name(event_type: EventType) -> &'static str {
    match event_type {
        EventType::HttpStartStop => "HttpStartStop",
        EventType::LogMessage => "LogMessage",
        EventType::ValueMetric => "ValueMetric",
        EventType::CounterEvent => "CounterEvent",
        EventType::Error => "Error",
        EventType::ContainerMetric => "ContainerMetric",
    }
}

fn str_or_empty(value: Option<String>) -> Str {
    value.map(Str::from).unwrap_or_default()
}

fn string_or_none(value: &Str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_string())
}
