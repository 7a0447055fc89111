//! The hot-path dropsonde decoder: one pass over the frame's bytes, straight into an [`Event`].
//!
//! Strings are validated as UTF-8 and shared, never copied per envelope: a slice of the frame
//! (a reference-count bump), or for the fields whose values recur (origins, jobs, IPs, tags,
//! app ids...) an interned `'static` string (see [`intern`]). Only the tags and `forwarded`
//! vectors allocate (and the first sighting of a string worth interning).
//!
//! It agrees with prost (and so with [`crate::reference::decode_v1`]) wherever prost defines the
//! outcome: the last occurrence of a field wins, an embedded message that occurs twice is merged,
//! map entries default a missing key or value to "", unknown fields are skipped, `int32` and enum
//! varints are truncated to 32 bits. It is stricter where the real Firehose (gogoproto) is: proto2
//! `required` fields must be present, and groups are rejected. Every payload present is decoded,
//! so a malformed payload fails the envelope even when `eventType` selects another one; only the
//! selected payload's required fields and enum values are checked.
//!
//! Layout: this file decodes the envelope and its tags; [`payloads`] the six payload messages;
//! [`reader`] is the cursor over a message's fields; [`intern`] the table of recurring strings.

mod intern;
mod payloads;
mod reader;

use bytes::Bytes;

use self::payloads::{
    CONTAINER_METRIC, COUNTER_EVENT, ERROR, HTTP_START_STOP, LOG_MESSAGE, PartialContainer,
    PartialCounter, PartialError, PartialHttp, PartialLog, PartialValue, VALUE_METRIC,
    container_metric, counter_event, error, http_start_stop, log_message, value_metric,
};
use self::reader::{Decoded, Reader, fail, or_empty};
use crate::DecodeError;
use crate::event::{Event, EventType, Header, Payload, Str, Tags};
use crate::reference::event_type_name;

/// Decodes one dropsonde envelope (one WebSocket message or one replay record).
pub fn decode_v1(frame: Bytes) -> Result<Event, DecodeError> {
    envelope(&frame)
}

const ENVELOPE: &str = "Envelope";

// Returns the public error type so that the event is built in place in the caller's result
// (the `?`s unbox the internal errors on the way out).
fn envelope(frame: &Bytes) -> Result<Event, DecodeError> {
    let mut r = Reader::new(frame, ENVELOPE);
    let mut seen = Seen::default();
    let mut event_type = 0;
    let mut timestamp = 0;
    let (mut origin, mut deployment, mut job, mut index, mut ip) = (None, None, None, None, None);
    let mut tags = Vec::new();
    let mut payloads = Payloads::default();
    while let Some(field) = r.next_field()? {
        seen.mark(field);
        match field {
            1 => r.recurring_string("origin", &mut origin)?,
            2 => event_type = r.int32("eventType")?,
            6 => timestamp = r.int64("timestamp")?,
            7 => http_start_stop(
                r.message("httpStartStop", HTTP_START_STOP)?,
                payloads.http.get_or_insert_default(),
            )?,
            8 => log_message(
                r.message("logMessage", LOG_MESSAGE)?,
                payloads.log.get_or_insert_default(),
            )?,
            9 => value_metric(
                r.message("valueMetric", VALUE_METRIC)?,
                payloads.value.get_or_insert_default(),
            )?,
            10 => counter_event(
                r.message("counterEvent", COUNTER_EVENT)?,
                payloads.counter.get_or_insert_default(),
            )?,
            11 => error(
                r.message("error", ERROR)?,
                payloads.error.get_or_insert_default(),
            )?,
            12 => container_metric(
                r.message("containerMetric", CONTAINER_METRIC)?,
                payloads.container.get_or_insert_default(),
            )?,
            13 => r.recurring_string("deployment", &mut deployment)?,
            14 => r.recurring_string("job", &mut job)?,
            15 => r.recurring_string("index", &mut index)?,
            16 => r.recurring_string("ip", &mut ip)?,
            17 => tag(r.message("tags", "Envelope.TagsEntry")?, &mut tags)?,
            _ => r.skip()?,
        }
    }
    seen.require(ENVELOPE, &[(1, "origin"), (2, "eventType")])?;
    let event_type = known(EventType::from_wire, event_type, ENVELOPE, "eventType")?;
    let payload = payloads.select(event_type)?;
    Ok(Event {
        timestamp,
        header: Header {
            origin: or_empty(origin),
            deployment: or_empty(deployment),
            job: or_empty(job),
            index: or_empty(index),
            ip: or_empty(ip),
            tags: Tags::from_pairs(tags),
        },
        payload,
    })
}

/// The fields of a message seen so far, over all its occurrences: bit `n` for field `n`.
#[derive(Clone, Copy, Default)]
struct Seen(u32);

impl Seen {
    #[inline(always)]
    fn mark(&mut self, field: u32) {
        // Every required field is numbered below 32.
        if field < 32 {
            self.0 |= 1 << field;
        }
    }

    /// Fails naming the first `required` field (number, name) that was not seen.
    fn require(self, message: &'static str, required: &[(u32, &'static str)]) -> Decoded<()> {
        match required.iter().find(|(field, _)| self.0 & 1 << field == 0) {
            Some(&(_, field)) => Err(fail(DecodeError::MissingField { message, field })),
            None => Ok(()),
        }
    }
}

/// The payloads an envelope carried, each merged over all its occurrences, kept until
/// `eventType` (which may come last) says which one counts.
#[derive(Default)]
struct Payloads {
    http: Option<PartialHttp>,
    log: Option<PartialLog>,
    value: Option<PartialValue>,
    counter: Option<PartialCounter>,
    error: Option<PartialError>,
    container: Option<PartialContainer>,
}

impl Payloads {
    /// The selected payload, its required fields and enums checked. (By reference: moving all
    /// the partials would copy them.)
    fn select(&mut self, event_type: EventType) -> Decoded<Payload> {
        let mismatch = || {
            fail(DecodeError::TypeMismatch {
                event_type: event_type_name(event_type),
            })
        };
        Ok(match event_type {
            EventType::HttpStartStop => {
                Payload::Http(self.http.take().ok_or_else(mismatch)?.finish()?)
            }
            EventType::LogMessage => Payload::Log(self.log.take().ok_or_else(mismatch)?.finish()?),
            EventType::ValueMetric => {
                Payload::Value(self.value.take().ok_or_else(mismatch)?.finish()?)
            }
            EventType::CounterEvent => {
                Payload::Counter(self.counter.take().ok_or_else(mismatch)?.finish()?)
            }
            EventType::Error => Payload::Error(self.error.take().ok_or_else(mismatch)?.finish()?),
            EventType::ContainerMetric => {
                Payload::Container(self.container.take().ok_or_else(mismatch)?.finish()?)
            }
        })
    }
}

/// One `tags` map entry, appended to `tags`; a missing key or value is empty, as in every
/// protobuf runtime. (Out of line, like the payloads': inlined into `envelope`, its reader
/// would live in memory instead of registers.)
#[inline(never)]
fn tag(mut r: Reader<'_>, tags: &mut Vec<(Str, Str)>) -> Decoded<()> {
    let (mut key, mut value) = (None, None);
    while let Some(field) = r.next_field()? {
        match field {
            1 => r.recurring_string("key", &mut key)?,
            2 => r.recurring_string("value", &mut value)?,
            _ => r.skip()?,
        }
    }
    tags.push((or_empty(key), or_empty(value)));
    Ok(())
}

/// An enum field's value if its schema defines it.
fn known<T>(
    from_wire: fn(i32) -> Option<T>,
    value: i32,
    message: &'static str,
    field: &'static str,
) -> Decoded<T> {
    from_wire(value).ok_or_else(|| {
        fail(DecodeError::UnknownEnum {
            message,
            field,
            value: i64::from(value),
        })
    })
}
