//! The fast decoder against the golden dropsonde envelopes of `shared/testdata` (encoded by
//! Google's protobuf from the official schema): every record decodes, and every field equals
//! the record's protobuf-JSON rendering in `golden-v1.jsonl`.

use std::path::PathBuf;

use base64::Engine;
use bytes::Bytes;
use serde_json::{Map, Value};
use sluice_model::decode::decode_v1;
use sluice_model::event::{
    ContainerMetric, CounterEvent, ErrorEvent, Event, Header, HttpStartStop, LogMessage,
    MessageType, Method, Payload, PeerType, Str, Tags, ValueMetric, uuid_from_halves,
};
use sluice_model::framing::frames;

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/testdata")
        .join(name)
}

#[test]
fn every_golden_envelope_decodes_to_its_json_fields() {
    let bin = std::fs::read(testdata("golden-v1.bin")).expect("golden-v1.bin is readable");
    let jsonl =
        std::fs::read_to_string(testdata("golden-v1.jsonl")).expect("golden-v1.jsonl is readable");
    let records: Vec<Bytes> = frames(&bin)
        .map(|(offset, record)| record.unwrap_or_else(|e| panic!("record at {offset}: {e}")))
        .collect();
    let lines: Vec<&str> = jsonl.lines().collect();
    assert_eq!(records.len(), 213);
    assert_eq!(lines.len(), records.len());
    for (i, (record, line)) in records.into_iter().zip(lines).enumerate() {
        let json: Value = serde_json::from_str(line).expect("golden JSON parses");
        let decoded = decode_v1(record).unwrap_or_else(|e| panic!("record {i}: {e}"));
        assert_eq!(decoded, expected_event(json), "record {i}");
    }
}

/// The fields of one JSON object, taken one by one; [`Fields::done`] fails on any left over,
/// so no field of the golden data goes unchecked.
struct Fields(Map<String, Value>);

impl Fields {
    fn of(value: Value) -> Fields {
        match value {
            Value::Object(map) => Fields(map),
            other => panic!("expected an object, got {other}"),
        }
    }

    fn take(&mut self, key: &str) -> Option<Value> {
        self.0.remove(key)
    }

    fn get(&mut self, key: &str) -> Value {
        self.take(key)
            .unwrap_or_else(|| panic!("required field {key} is absent"))
    }

    fn string(&mut self, key: &str) -> Str {
        as_str(self.get(key))
    }

    fn opt_string(&mut self, key: &str) -> Str {
        self.take(key).map(as_str).unwrap_or_default()
    }

    fn int64(&mut self, key: &str) -> i64 {
        as_int(self.get(key))
    }

    fn uint64(&mut self, key: &str) -> u64 {
        as_int(self.get(key))
    }

    fn opt_uint64(&mut self, key: &str) -> Option<u64> {
        self.take(key).map(as_int)
    }

    fn int32(&mut self, key: &str) -> i32 {
        as_int(self.get(key))
    }

    fn double(&mut self, key: &str) -> f64 {
        match self.get(key) {
            Value::Number(n) => n.as_f64().expect("a double"),
            Value::String(s) => s.parse().expect("NaN, Infinity or -Infinity"),
            other => panic!("{key}: expected a double, got {other}"),
        }
    }

    fn uuid(&mut self, key: &str) -> Option<uuid::Uuid> {
        self.take(key).map(|id| {
            let mut id = Fields::of(id);
            let uuid = uuid_from_halves(id.uint64("low"), id.uint64("high"));
            id.done();
            uuid
        })
    }

    fn done(self) {
        assert!(self.0.is_empty(), "unchecked JSON fields: {:?}", self.0);
    }
}

fn as_str(value: Value) -> Str {
    match value {
        Value::String(s) => Str::from(s),
        other => panic!("expected a string, got {other}"),
    }
}

/// protobuf JSON writes 64-bit integers as strings and 32-bit ones as numbers.
fn as_int<T: std::str::FromStr>(value: Value) -> T
where
    T::Err: std::fmt::Debug,
{
    match value {
        Value::String(s) => s.parse().expect("an integer string"),
        Value::Number(n) => n.to_string().parse().expect("an integer"),
        other => panic!("expected an integer, got {other}"),
    }
}

fn expected_event(json: Value) -> Event {
    let mut envelope = Fields::of(json);
    let event_type = envelope.string("eventType");
    let payload = match &*event_type {
        "LogMessage" => Payload::Log(log_message(Fields::of(envelope.get("logMessage")))),
        "HttpStartStop" => Payload::Http(http(Fields::of(envelope.get("httpStartStop")))),
        "ContainerMetric" => {
            Payload::Container(container(Fields::of(envelope.get("containerMetric"))))
        }
        "ValueMetric" => {
            let mut m = Fields::of(envelope.get("valueMetric"));
            let metric = ValueMetric {
                name: m.string("name"),
                value: m.double("value"),
                unit: m.string("unit"),
            };
            m.done();
            Payload::Value(metric)
        }
        "CounterEvent" => {
            let mut c = Fields::of(envelope.get("counterEvent"));
            let counter = CounterEvent {
                name: c.string("name"),
                delta: c.uint64("delta"),
                total: c.opt_uint64("total"),
            };
            c.done();
            Payload::Counter(counter)
        }
        "Error" => {
            let mut e = Fields::of(envelope.get("error"));
            let error = ErrorEvent {
                source: e.string("source"),
                code: e.int32("code"),
                message: e.string("message"),
            };
            e.done();
            Payload::Error(error)
        }
        other => panic!("unexpected eventType {other}"),
    };
    let tags = match envelope.take("tags") {
        Some(Value::Object(map)) => map
            .into_iter()
            .map(|(k, v)| (Str::from(k), as_str(v)))
            .collect(),
        Some(other) => panic!("tags: expected an object, got {other}"),
        None => Vec::new(),
    };
    let event = Event {
        timestamp: envelope.take("timestamp").map(as_int).unwrap_or(0),
        header: Header {
            origin: envelope.string("origin"),
            deployment: envelope.opt_string("deployment"),
            job: envelope.opt_string("job"),
            index: envelope.opt_string("index"),
            ip: envelope.opt_string("ip"),
            tags: Tags::from_pairs(tags),
        },
        payload,
    };
    envelope.done();
    event
}

fn log_message(mut log: Fields) -> LogMessage {
    let message = match log.get("message") {
        Value::String(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("message is base64"),
        other => panic!("message: expected base64, got {other}"),
    };
    let message_type = match &*log.string("message_type") {
        "OUT" => MessageType::Out,
        "ERR" => MessageType::Err,
        other => panic!("unexpected message_type {other}"),
    };
    let decoded = LogMessage {
        names: None,
        message: Bytes::from(message),
        message_type,
        timestamp: log.int64("timestamp"),
        app_id: log.opt_string("app_id"),
        source_type: log.opt_string("source_type"),
        source_instance: log.opt_string("source_instance"),
    };
    log.done();
    decoded
}

fn http(mut http: Fields) -> HttpStartStop {
    let decoded = HttpStartStop {
        start_timestamp: http.int64("startTimestamp"),
        stop_timestamp: http.int64("stopTimestamp"),
        request_id: http.uuid("requestId").expect("requestId is required"),
        peer_type: PeerType::from_name(&http.string("peerType")).expect("a peer type name"),
        method: Method::from_name(&http.string("method")).expect("a method name"),
        uri: http.string("uri"),
        remote_address: http.string("remoteAddress"),
        user_agent: http.string("userAgent"),
        status_code: http.int32("statusCode"),
        content_length: http.int64("contentLength"),
        application_id: http.uuid("applicationId"),
        instance_index: http.take("instanceIndex").map(as_int),
        instance_id: http.opt_string("instanceId"),
        forwarded: match http.take("forwarded") {
            Some(Value::Array(items)) => items.into_iter().map(as_str).collect(),
            Some(other) => panic!("forwarded: expected an array, got {other}"),
            None => Vec::new(),
        },
    };
    http.done();
    decoded
}

fn container(mut metric: Fields) -> ContainerMetric {
    let decoded = ContainerMetric {
        application_id: metric.string("applicationId"),
        instance_index: metric.int32("instanceIndex"),
        cpu_percentage: metric.double("cpuPercentage"),
        memory_bytes: metric.uint64("memoryBytes"),
        disk_bytes: metric.uint64("diskBytes"),
        memory_bytes_quota: metric.opt_uint64("memoryBytesQuota"),
        disk_bytes_quota: metric.opt_uint64("diskBytesQuota"),
    };
    metric.done();
    decoded
}
