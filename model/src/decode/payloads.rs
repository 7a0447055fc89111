//! The payload messages of an envelope, each decoded by its own function into a partial
//! struct that keeps which fields were [`Seen`], so that occurrences merge and required fields
//! are checked once the selected payload is [finished](PartialLog::finish).
//!
//! The functions are kept out of line: inlined into the envelope's, their readers would live
//! in memory instead of registers.

use bytes::Bytes;
use uuid::Uuid;

use super::reader::{Decoded, Reader, empty_bytes, or_empty};
use super::{Seen, known};
use crate::event::{
    ContainerMetric, CounterEvent, ErrorEvent, HttpStartStop, LogMessage, MessageType, Method,
    PeerType, Str, ValueMetric, uuid_from_halves,
};

pub(super) const LOG_MESSAGE: &str = "LogMessage";

/// A `LogMessage` merged so far.
#[derive(Default)]
pub(super) struct PartialLog {
    seen: Seen,
    message: Option<Bytes>,
    message_type: i32,
    timestamp: i64,
    app_id: Option<Str>,
    source_type: Option<Str>,
    source_instance: Option<Str>,
}

/// Merges one `LogMessage` occurrence into the partial.
#[inline(never)]
pub(super) fn log_message(mut r: Reader<'_>, log: &mut PartialLog) -> Decoded<()> {
    while let Some(field) = r.next_field()? {
        log.seen.mark(field);
        match field {
            1 => r.bytes("message", &mut log.message)?,
            2 => log.message_type = r.int32("message_type")?,
            3 => log.timestamp = r.int64("timestamp")?,
            4 => r.recurring_string("app_id", &mut log.app_id)?,
            5 => r.recurring_string("source_type", &mut log.source_type)?,
            6 => r.recurring_string("source_instance", &mut log.source_instance)?,
            _ => r.skip()?,
        }
    }
    Ok(())
}

impl PartialLog {
    /// The message, once its required fields and enum values are checked.
    pub(super) fn finish(self) -> Decoded<LogMessage> {
        const M: &str = LOG_MESSAGE;
        let required = [(1, "message"), (2, "message_type"), (3, "timestamp")];
        self.seen.require(M, &required)?;
        Ok(LogMessage {
            names: None,
            message: self.message.unwrap_or_else(empty_bytes),
            message_type: known(MessageType::from_wire, self.message_type, M, "message_type")?,
            timestamp: self.timestamp,
            app_id: or_empty(self.app_id),
            source_type: or_empty(self.source_type),
            source_instance: or_empty(self.source_instance),
        })
    }
}

pub(super) const HTTP_START_STOP: &str = "HttpStartStop";

/// An `HttpStartStop` merged so far.
#[derive(Default)]
pub(super) struct PartialHttp {
    seen: Seen,
    start_timestamp: i64,
    stop_timestamp: i64,
    request_id: PartialUuid,
    peer_type: i32,
    method: i32,
    uri: Option<Str>,
    remote_address: Option<Str>,
    user_agent: Option<Str>,
    status_code: i32,
    content_length: i64,
    application_id: Option<PartialUuid>,
    instance_index: Option<i32>,
    instance_id: Option<Str>,
    forwarded: Vec<Str>,
}

/// Merges one `HttpStartStop` occurrence into the partial.
#[inline(never)]
pub(super) fn http_start_stop(mut r: Reader<'_>, http: &mut PartialHttp) -> Decoded<()> {
    while let Some(field) = r.next_field()? {
        http.seen.mark(field);
        match field {
            1 => http.start_timestamp = r.int64("startTimestamp")?,
            2 => http.stop_timestamp = r.int64("stopTimestamp")?,
            3 => uuid(r.message("requestId", UUID)?, &mut http.request_id)?,
            4 => http.peer_type = r.int32("peerType")?,
            5 => http.method = r.int32("method")?,
            6 => r.string("uri", &mut http.uri)?,
            7 => r.string("remoteAddress", &mut http.remote_address)?,
            8 => r.string("userAgent", &mut http.user_agent)?,
            9 => http.status_code = r.int32("statusCode")?,
            10 => http.content_length = r.int64("contentLength")?,
            12 => uuid(
                r.message("applicationId", UUID)?,
                http.application_id.get_or_insert_default(),
            )?,
            13 => http.instance_index = Some(r.int32("instanceIndex")?),
            14 => r.string("instanceId", &mut http.instance_id)?,
            15 => {
                let mut address = None;
                r.string("forwarded", &mut address)?;
                http.forwarded.push(or_empty(address));
            }
            _ => r.skip()?,
        }
    }
    Ok(())
}

impl PartialHttp {
    /// The message, once its required fields and enum values are checked.
    pub(super) fn finish(self) -> Decoded<HttpStartStop> {
        const M: &str = HTTP_START_STOP;
        #[rustfmt::skip]
        let required = [
            (1, "startTimestamp"), (2, "stopTimestamp"), (3, "requestId"), (4, "peerType"),
            (5, "method"), (6, "uri"), (7, "remoteAddress"), (8, "userAgent"),
            (9, "statusCode"), (10, "contentLength"),
        ];
        self.seen.require(M, &required)?;
        Ok(HttpStartStop {
            start_timestamp: self.start_timestamp,
            stop_timestamp: self.stop_timestamp,
            request_id: self.request_id.finish()?,
            peer_type: known(PeerType::from_wire, self.peer_type, M, "peerType")?,
            method: known(Method::from_wire, self.method, M, "method")?,
            uri: or_empty(self.uri),
            remote_address: or_empty(self.remote_address),
            user_agent: or_empty(self.user_agent),
            status_code: self.status_code,
            content_length: self.content_length,
            application_id: self
                .application_id
                .as_ref()
                .map(PartialUuid::finish)
                .transpose()?,
            instance_index: self.instance_index,
            instance_id: or_empty(self.instance_id),
            forwarded: self.forwarded,
        })
    }
}

const UUID: &str = "UUID";

/// A `UUID` merged so far.
#[derive(Default)]
struct PartialUuid {
    seen: Seen,
    low: u64,
    high: u64,
}

/// Merges one `UUID` occurrence into the partial.
#[inline(never)]
fn uuid(mut r: Reader<'_>, id: &mut PartialUuid) -> Decoded<()> {
    while let Some(field) = r.next_field()? {
        id.seen.mark(field);
        match field {
            1 => id.low = r.uint64("low")?,
            2 => id.high = r.uint64("high")?,
            _ => r.skip()?,
        }
    }
    Ok(())
}

impl PartialUuid {
    fn finish(&self) -> Decoded<Uuid> {
        self.seen.require(UUID, &[(1, "low"), (2, "high")])?;
        Ok(uuid_from_halves(self.low, self.high))
    }
}

pub(super) const VALUE_METRIC: &str = "ValueMetric";

/// A `ValueMetric` merged so far.
#[derive(Default)]
pub(super) struct PartialValue {
    seen: Seen,
    name: Option<Str>,
    value: f64,
    unit: Option<Str>,
}

/// Merges one `ValueMetric` occurrence into the partial.
#[inline(never)]
pub(super) fn value_metric(mut r: Reader<'_>, metric: &mut PartialValue) -> Decoded<()> {
    while let Some(field) = r.next_field()? {
        metric.seen.mark(field);
        match field {
            1 => r.recurring_string("name", &mut metric.name)?,
            2 => metric.value = r.double("value")?,
            3 => r.recurring_string("unit", &mut metric.unit)?,
            _ => r.skip()?,
        }
    }
    Ok(())
}

impl PartialValue {
    /// The message, once its required fields and enum values are checked.
    pub(super) fn finish(self) -> Decoded<ValueMetric> {
        let required = [(1, "name"), (2, "value"), (3, "unit")];
        self.seen.require(VALUE_METRIC, &required)?;
        Ok(ValueMetric {
            name: or_empty(self.name),
            value: self.value,
            unit: or_empty(self.unit),
        })
    }
}

pub(super) const COUNTER_EVENT: &str = "CounterEvent";

/// A `CounterEvent` merged so far.
#[derive(Default)]
pub(super) struct PartialCounter {
    seen: Seen,
    name: Option<Str>,
    delta: u64,
    total: Option<u64>,
}

/// Merges one `CounterEvent` occurrence into the partial.
#[inline(never)]
pub(super) fn counter_event(mut r: Reader<'_>, counter: &mut PartialCounter) -> Decoded<()> {
    while let Some(field) = r.next_field()? {
        counter.seen.mark(field);
        match field {
            1 => r.recurring_string("name", &mut counter.name)?,
            2 => counter.delta = r.uint64("delta")?,
            3 => counter.total = Some(r.uint64("total")?),
            _ => r.skip()?,
        }
    }
    Ok(())
}

impl PartialCounter {
    /// The message, once its required fields and enum values are checked.
    pub(super) fn finish(self) -> Decoded<CounterEvent> {
        self.seen
            .require(COUNTER_EVENT, &[(1, "name"), (2, "delta")])?;
        Ok(CounterEvent {
            name: or_empty(self.name),
            delta: self.delta,
            total: self.total,
        })
    }
}

pub(super) const ERROR: &str = "Error";

/// An `Error` merged so far.
#[derive(Default)]
pub(super) struct PartialError {
    seen: Seen,
    source: Option<Str>,
    code: i32,
    message: Option<Str>,
}

/// Merges one `Error` occurrence into the partial.
#[inline(never)]
pub(super) fn error(mut r: Reader<'_>, error: &mut PartialError) -> Decoded<()> {
    while let Some(field) = r.next_field()? {
        error.seen.mark(field);
        match field {
            1 => r.recurring_string("source", &mut error.source)?,
            2 => error.code = r.int32("code")?,
            3 => r.string("message", &mut error.message)?,
            _ => r.skip()?,
        }
    }
    Ok(())
}

impl PartialError {
    /// The message, once its required fields and enum values are checked.
    pub(super) fn finish(self) -> Decoded<ErrorEvent> {
        let required = [(1, "source"), (2, "code"), (3, "message")];
        self.seen.require(ERROR, &required)?;
        Ok(ErrorEvent {
            source: or_empty(self.source),
            code: self.code,
            message: or_empty(self.message),
        })
    }
}

pub(super) const CONTAINER_METRIC: &str = "ContainerMetric";

/// A `ContainerMetric` merged so far.
#[derive(Default)]
pub(super) struct PartialContainer {
    seen: Seen,
    application_id: Option<Str>,
    instance_index: i32,
    cpu_percentage: f64,
    memory_bytes: u64,
    disk_bytes: u64,
    memory_bytes_quota: Option<u64>,
    disk_bytes_quota: Option<u64>,
}

/// Merges one `ContainerMetric` occurrence into the partial.
#[inline(never)]
pub(super) fn container_metric(mut r: Reader<'_>, metric: &mut PartialContainer) -> Decoded<()> {
    while let Some(field) = r.next_field()? {
        metric.seen.mark(field);
        match field {
            1 => r.recurring_string("applicationId", &mut metric.application_id)?,
            2 => metric.instance_index = r.int32("instanceIndex")?,
            3 => metric.cpu_percentage = r.double("cpuPercentage")?,
            4 => metric.memory_bytes = r.uint64("memoryBytes")?,
            5 => metric.disk_bytes = r.uint64("diskBytes")?,
            6 => metric.memory_bytes_quota = Some(r.uint64("memoryBytesQuota")?),
            7 => metric.disk_bytes_quota = Some(r.uint64("diskBytesQuota")?),
            _ => r.skip()?,
        }
    }
    Ok(())
}

impl PartialContainer {
    /// The message, once its required fields and enum values are checked.
    pub(super) fn finish(self) -> Decoded<ContainerMetric> {
        #[rustfmt::skip]
        let required = [
            (1, "applicationId"), (2, "instanceIndex"), (3, "cpuPercentage"),
            (4, "memoryBytes"), (5, "diskBytes"),
        ];
        self.seen.require(CONTAINER_METRIC, &required)?;
        Ok(ContainerMetric {
            application_id: or_empty(self.application_id),
            instance_index: self.instance_index,
            cpu_percentage: self.cpu_percentage,
            memory_bytes: self.memory_bytes,
            disk_bytes: self.disk_bytes,
            memory_bytes_quota: self.memory_bytes_quota,
            disk_bytes_quota: self.disk_bytes_quota,
        })
    }
}
