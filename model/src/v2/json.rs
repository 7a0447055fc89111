//! The RLP gateway's JSON: proto3's JSON mapping of `loggregator.v2` envelopes.
//!
//! Parsing is as lenient as proto3 JSON parsers are: int64/uint64 as strings or numbers,
//! doubles as numbers or strings (`"NaN"`, `"Infinity"`), bytes in standard or URL-safe
//! base64 with or without padding, enums by name or number, snake_case or camelCase field
//! names, `null` for a default value, unknown fields ignored. Writing follows the canonical
//! form (snake_case, 64-bit integers as strings, default values left out), which is also the
//! form of `shared/testdata/golden-v2.jsonl`.

use std::collections::BTreeMap;

use base64::Engine;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::map_envelope;
use crate::error::DecodeError;
use crate::event::Event;
use crate::proto::loggregator::v2 as pb;

mod scalars;

use scalars::{Base64, Double, Int, LogType, nullable};

/// What became of the envelopes of one SSE batch.
///
/// A batch is parsed envelope by envelope, so a bad one costs only itself: it is listed in
/// [`rejected`](SseBatch::rejected) (for the source to count and log) and the others are
/// mapped as usual.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SseBatch {
    /// Envelopes in the batch.
    pub envelopes: usize,
    /// Events pushed onto `out`.
    pub events: usize,
    /// Well-formed envelopes v1 has no equivalent for (counted as skipped `unmapped_v2`).
    pub unmapped: usize,
    /// Envelopes that could not be parsed or mapped, in batch order.
    pub rejected: Vec<RejectedEnvelope>,
}

/// One envelope of a batch that produced no event because it is bad.
#[derive(Clone, Debug, PartialEq)]
pub struct RejectedEnvelope {
    /// Its position in the batch, from 0.
    pub index: usize,
    /// Why it was rejected; its `reason()` is the bad-record counter label.
    pub error: DecodeError,
}

#[derive(Deserialize)]
struct JsonBatch<'a> {
    #[serde(borrow, default)]
    batch: Option<Vec<&'a RawValue>>,
}

/// Parses the `data:` of one RLP gateway event, `{"batch":[Envelope, …]}`, maps each envelope
/// and pushes the events onto `out`.
///
/// `Err` means the payload as a whole is not a batch (not JSON, or `batch` not an array);
/// nothing was pushed. Otherwise each envelope's fate is in the returned [`SseBatch`]: bad
/// envelopes are listed there and skipped without losing the good ones.
pub fn parse_sse_batch(json: &str, out: &mut Vec<Event>) -> Result<SseBatch, DecodeError> {
    let batch: JsonBatch<'_> = serde_json::from_str(json).map_err(|e| DecodeError::Invalid {
        message: "EnvelopeBatch JSON",
        detail: e.to_string(),
    })?;
    let mut report = SseBatch::default();
    for (index, raw) in batch.batch.unwrap_or_default().into_iter().enumerate() {
        report.envelopes += 1;
        match parse_envelope_json(raw.get()).and_then(|envelope| map_envelope(&envelope, out)) {
            Ok(0) => report.unmapped += 1,
            Ok(events) => report.events += events,
            Err(error) => report.rejected.push(RejectedEnvelope { index, error }),
        }
    }
    Ok(report)
}

/// Parses one envelope in proto3 JSON.
pub fn parse_envelope_json(json: &str) -> Result<pb::Envelope, DecodeError> {
    let invalid = |detail: String| DecodeError::Invalid {
        message: "Envelope JSON",
        detail,
    };
    let parsed: JsonEnvelope = serde_json::from_str(json).map_err(|e| invalid(e.to_string()))?;
    let mut messages = Vec::with_capacity(1);
    if let Some(log) = parsed.log {
        messages.push(pb::envelope::Message::Log(pb::Log {
            payload: log.payload.0,
            r#type: log.r#type.0,
        }));
    }
    if let Some(counter) = parsed.counter {
        messages.push(pb::envelope::Message::Counter(pb::Counter {
            name: counter.name,
            delta: counter.delta.0,
            total: counter.total.0,
        }));
    }
    if let Some(gauge) = parsed.gauge {
        let metrics = gauge
            .metrics
            .into_iter()
            .map(|(name, v)| {
                let value = v.unwrap_or_default();
                let unit = value.unit;
                (
                    name,
                    pb::GaugeValue {
                        unit,
                        value: value.value.0,
                    },
                )
            })
            .collect();
        messages.push(pb::envelope::Message::Gauge(pb::Gauge { metrics }));
    }
    if let Some(timer) = parsed.timer {
        messages.push(pb::envelope::Message::Timer(pb::Timer {
            name: timer.name,
            start: timer.start.0,
            stop: timer.stop.0,
        }));
    }
    if let Some(event) = parsed.event {
        messages.push(pb::envelope::Message::Event(pb::Event {
            title: event.title,
            body: event.body,
        }));
    }
    if messages.len() > 1 {
        return Err(invalid(
            "more than one of log, counter, gauge, timer, event is set".to_owned(),
        ));
    }
    let mut deprecated_tags = BTreeMap::new();
    for (name, value) in parsed.deprecated_tags {
        let data = match value.unwrap_or_default() {
            JsonValue {
                text: Some(text), ..
            } => Some(pb::value::Data::Text(text)),
            JsonValue {
                integer: Some(n), ..
            } => Some(pb::value::Data::Integer(n.0)),
            JsonValue {
                decimal: Some(x), ..
            } => Some(pb::value::Data::Decimal(x.0)),
            _ => None,
        };
        deprecated_tags.insert(name, pb::Value { data });
    }
    Ok(pb::Envelope {
        timestamp: parsed.timestamp.0,
        source_id: parsed.source_id,
        instance_id: parsed.instance_id,
        deprecated_tags,
        tags: parsed
            .tags
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or_default()))
            .collect(),
        message: messages.pop(),
    })
}

/// The canonical proto3 JSON of an envelope (snake_case names), as the RLP gateway sends it.
pub fn envelope_to_json(envelope: &pb::Envelope) -> Value {
    let mut object = Map::new();
    if envelope.timestamp != 0 {
        object.insert("timestamp".into(), envelope.timestamp.to_string().into());
    }
    put_str(&mut object, "source_id", &envelope.source_id);
    put_str(&mut object, "instance_id", &envelope.instance_id);
    if !envelope.deprecated_tags.is_empty() {
        let tags: Map<String, Value> = envelope
            .deprecated_tags
            .iter()
            .map(|(name, value)| {
                let value = match &value.data {
                    Some(pb::value::Data::Text(text)) => json!({ "text": text }),
                    Some(pb::value::Data::Integer(n)) => json!({ "integer": n.to_string() }),
                    Some(pb::value::Data::Decimal(x)) => json!({ "decimal": double(*x) }),
                    None => json!({}),
                };
                (name.clone(), value)
            })
            .collect();
        object.insert("deprecated_tags".into(), Value::Object(tags));
    }
    if !envelope.tags.is_empty() {
        let tags: Map<String, Value> = envelope
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect();
        object.insert("tags".into(), Value::Object(tags));
    }
    use pb::envelope::Message as M;
    let (name, message) = match &envelope.message {
        None => return Value::Object(object),
        Some(M::Log(log)) => {
            let mut m = Map::new();
            if !log.payload.is_empty() {
                let payload = base64::engine::general_purpose::STANDARD.encode(&log.payload);
                m.insert("payload".into(), payload.into());
            }
            match pb::log::Type::try_from(log.r#type) {
                Ok(pb::log::Type::Out) => {}
                Ok(known) => {
                    m.insert("type".into(), known.as_str_name().into());
                }
                Err(_) => {
                    m.insert("type".into(), log.r#type.into());
                }
            }
            ("log", m)
        }
        Some(M::Counter(counter)) => {
            let mut m = Map::new();
            put_str(&mut m, "name", &counter.name);
            put_u64(&mut m, "delta", counter.delta);
            put_u64(&mut m, "total", counter.total);
            ("counter", m)
        }
        Some(M::Gauge(gauge)) => {
            let metrics: Map<String, Value> = gauge
                .metrics
                .iter()
                .map(|(name, value)| {
                    let mut m = Map::new();
                    put_str(&mut m, "unit", &value.unit);
                    if value.value != 0.0 {
                        m.insert("value".into(), double(value.value));
                    }
                    (name.clone(), Value::Object(m))
                })
                .collect();
            let mut m = Map::new();
            if !metrics.is_empty() {
                m.insert("metrics".into(), Value::Object(metrics));
            }
            ("gauge", m)
        }
        Some(M::Timer(timer)) => {
            let mut m = Map::new();
            put_str(&mut m, "name", &timer.name);
            if timer.start != 0 {
                m.insert("start".into(), timer.start.to_string().into());
            }
            if timer.stop != 0 {
                m.insert("stop".into(), timer.stop.to_string().into());
            }
            ("timer", m)
        }
        Some(M::Event(event)) => {
            let mut m = Map::new();
            put_str(&mut m, "title", &event.title);
            put_str(&mut m, "body", &event.body);
            ("event", m)
        }
    };
    object.insert(name.into(), Value::Object(message));
    Value::Object(object)
}

fn put_str(object: &mut Map<String, Value>, name: &str, value: &str) {
    if !value.is_empty() {
        object.insert(name.into(), value.into());
    }
}

fn put_u64(object: &mut Map<String, Value>, name: &str, value: u64) {
    if value != 0 {
        object.insert(name.into(), value.to_string().into());
    }
}

/// A double as proto3 JSON writes it: a number, or a string for the non-finite values.
fn double(x: f64) -> Value {
    if x.is_nan() {
        "NaN".into()
    } else if x.is_infinite() {
        if x > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        x.into()
    }
}

// The JSON shapes, with every field optional and nullable as proto3 JSON allows.

#[derive(Deserialize, Default)]
#[serde(default)]
struct JsonEnvelope {
    timestamp: Int<i64>,
    #[serde(alias = "sourceId", deserialize_with = "nullable")]
    source_id: String,
    #[serde(alias = "instanceId", deserialize_with = "nullable")]
    instance_id: String,
    #[serde(alias = "deprecatedTags", deserialize_with = "nullable")]
    deprecated_tags: BTreeMap<String, Option<JsonValue>>,
    #[serde(deserialize_with = "nullable")]
    tags: BTreeMap<String, Option<String>>,
    log: Option<JsonLog>,
    counter: Option<JsonCounter>,
    gauge: Option<JsonGauge>,
    timer: Option<JsonTimer>,
    event: Option<JsonEvent>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JsonValue {
    text: Option<String>,
    integer: Option<Int<i64>>,
    decimal: Option<Double>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JsonLog {
    payload: Base64,
    r#type: LogType,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JsonCounter {
    #[serde(deserialize_with = "nullable")]
    name: String,
    delta: Int<u64>,
    total: Int<u64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JsonGauge {
    #[serde(deserialize_with = "nullable")]
    metrics: BTreeMap<String, Option<JsonGaugeValue>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JsonGaugeValue {
    #[serde(deserialize_with = "nullable")]
    unit: String,
    value: Double,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JsonTimer {
    #[serde(deserialize_with = "nullable")]
    name: String,
    start: Int<i64>,
    stop: Int<i64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JsonEvent {
    #[serde(deserialize_with = "nullable")]
    title: String,
    #[serde(deserialize_with = "nullable")]
    body: String,
}

#[cfg(test)]
mod tests;
