//! The normalized events the dataflow carries: one type per dropsonde payload, whichever
//! wire format (v1 dropsonde, v2 Loggregator) they arrived in.
//!
//! Strings are [`Str`]s: UTF-8 views into the frame they were decoded from, or for header
//! values that recur (origins, IPs, tags, app ids...) shared interned copies, so decoding
//! copies no string and allocates nothing per field. An absent optional string is empty.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::records::AppInfo;

/// A UTF-8 string sharing the storage of the frame it was decoded from.
pub type Str = bytestring::ByteString;

/// One decoded Firehose event: the envelope's header and its payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `Envelope.timestamp` in ns since the epoch; 0 when absent.
    pub timestamp: i64,
    pub header: Header,
    pub payload: Payload,
}

/// Where an envelope came from (`Envelope` fields 1, 13–17).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub origin: Str,
    pub deployment: Str,
    pub job: Str,
    pub index: Str,
    pub ip: Str,
    pub tags: Tags,
}

/// The payload of an envelope, by event type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Payload {
    Log(LogMessage),
    Http(HttpStartStop),
    Container(ContainerMetric),
    Value(ValueMetric),
    Counter(CounterEvent),
    Error(ErrorEvent),
}

/// The dropsonde `EventType` of a payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventType {
    HttpStartStop = 4,
    LogMessage = 5,
    ValueMetric = 6,
    CounterEvent = 7,
    Error = 8,
    ContainerMetric = 9,
}

impl EventType {
    pub const ALL: [EventType; 6] = [
        EventType::HttpStartStop,
        EventType::LogMessage,
        EventType::ValueMetric,
        EventType::CounterEvent,
        EventType::Error,
        EventType::ContainerMetric,
    ];

    /// The wire value of `Envelope.eventType`, or `None` for retired and unknown values.
    pub fn from_wire(value: i32) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| *t as i32 == value)
    }

    /// The name used in metrics labels and config filters (`log_message`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::HttpStartStop => "http_start_stop",
            EventType::LogMessage => "log_message",
            EventType::ValueMetric => "value_metric",
            EventType::CounterEvent => "counter_event",
            EventType::Error => "error",
            EventType::ContainerMetric => "container_metric",
        }
    }
}

impl Event {
    pub fn event_type(&self) -> EventType {
        self.payload.event_type()
    }

    /// About how many bytes this event holds: its own size plus the text it carries. Bounds
    /// what queues measure in bytes; a view into a larger frame is counted at its own length
    /// (a source that keeps frames alive counts the frames instead).
    pub fn approx_bytes(&self) -> usize {
        let header = &self.header;
        let mut bytes = std::mem::size_of::<Event>()
            + header.origin.len()
            + header.deployment.len()
            + header.job.len()
            + header.index.len()
            + header.ip.len()
            + header
                .tags
                .iter()
                .map(|(k, v)| k.len() + v.len() + 2 * std::mem::size_of::<Str>())
                .sum::<usize>();
        bytes += match &self.payload {
            Payload::Log(log) => {
                log.message.len()
                    + log.app_id.len()
                    + log.source_type.len()
                    + log.source_instance.len()
            }
            Payload::Http(http) => {
                http.uri.len()
                    + http.remote_address.len()
                    + http.user_agent.len()
                    + http.instance_id.len()
                    + http
                        .forwarded
                        .iter()
                        .map(|f| f.len() + std::mem::size_of::<Str>())
                        .sum::<usize>()
            }
            Payload::Container(metric) => metric.application_id.len(),
            Payload::Value(metric) => metric.name.len() + metric.unit.len(),
            Payload::Counter(counter) => counter.name.len(),
            Payload::Error(error) => error.source.len() + error.message.len(),
        };
        bytes
    }

    /// What an event decoded from a frame holds besides the frame its text is a view into (or
    /// interned): its own size and the vectors it allocated. A source that counts its frames
    /// adds this instead of [`Event::approx_bytes`], which reads the length of every string.
    pub fn view_bytes(&self) -> usize {
        let forwarded = match &self.payload {
            Payload::Http(http) => http.forwarded.len(),
            _ => 0,
        };
        std::mem::size_of::<Event>()
            + (2 * self.header.tags.len() + forwarded) * std::mem::size_of::<Str>()
    }

    /// The event time of SPEC §2 in ns: the log's own timestamp for LogMessages, the stop
    /// timestamp for HttpStartStop, the envelope's otherwise. `None` when that is absent (0):
    /// the pipeline then uses the time it received the event.
    pub fn event_time(&self) -> Option<i64> {
        let ns = match &self.payload {
            Payload::Log(log) => log.timestamp,
            Payload::Http(http) => http.stop_timestamp,
            _ => self.timestamp,
        };
        (ns != 0).then_some(ns)
    }

    /// The application this event belongs to, if any.
    pub fn app_id(&self) -> Option<AppId<'_>> {
        match &self.payload {
            Payload::Log(log) if !log.app_id.is_empty() => Some(AppId::Str(&log.app_id)),
            Payload::Container(metric) => Some(AppId::Str(&metric.application_id)),
            Payload::Http(http) => http.application_id.map(AppId::Uuid),
            _ => None,
        }
    }
}

/// The Cloud Foundry name tags Diego stamps on an app's envelopes (SPEC §11), v1 and v2
/// alike — `app_name`, `space_id`, `space_name`, `organization_id`, `organization_name` — as
/// they are on the envelope, in [`AppInfo`]'s field order; an absent tag is `None`.
pub type AppTagValues<'a> = [Option<&'a Str>; 5];

/// The names the tags give (an absent tag is an empty name); `None` when all are empty.
pub fn app_info(values: AppTagValues<'_>) -> Option<AppInfo> {
    let [name, space_id, space_name, org_id, org_name] =
        values.map(|value| value.cloned().unwrap_or_default());
    let info = AppInfo {
        name,
        space_id,
        space_name,
        org_id,
        org_name,
    };
    (info != AppInfo::default()).then_some(info)
}

impl Tags {
    /// The app's names, if the envelope carries any of their tags.
    pub fn app_tags(&self) -> Option<AppInfo> {
        app_info(self.app_tag_values()?)
    }

    /// The five name tags, found in one pass over the tags (this runs for every envelope of
    /// a tagged app, so no lookups by key); `None` when the envelope carries none of them.
    pub fn app_tag_values(&self) -> Option<AppTagValues<'_>> {
        let mut values: AppTagValues<'_> = [None; 5];
        let mut found = false;
        for (key, value) in &self.0 {
            let slot = match &**key {
                "app_name" => 0,
                "space_id" => 1,
                "space_name" => 2,
                "organization_id" => 3,
                "organization_name" => 4,
                _ => continue,
            };
            values[slot] = Some(value);
            found = true;
        }
        found.then_some(values)
    }
}

/// An app id as it appears on the wire: a string in logs and container metrics, a UUID
/// in HTTP events. Both compare equal through [`AppId::to_canonical`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AppId<'a> {
    Str(&'a Str),
    Uuid(Uuid),
}

impl AppId<'_> {
    /// The app id in canonical lowercase 8-4-4-4-12 form (SPEC §3).
    pub fn to_canonical(&self) -> Str {
        match self {
            AppId::Str(s) => (*s).clone(),
            AppId::Uuid(u) => Str::from(u.hyphenated().to_string()),
        }
    }
}

impl Payload {
    pub fn event_type(&self) -> EventType {
        match self {
            Payload::Log(_) => EventType::LogMessage,
            Payload::Http(_) => EventType::HttpStartStop,
            Payload::Container(_) => EventType::ContainerMetric,
            Payload::Value(_) => EventType::ValueMetric,
            Payload::Counter(_) => EventType::CounterEvent,
            Payload::Error(_) => EventType::Error,
        }
    }
}

/// Envelope tags, sorted by key, one value per key (the last one on the wire wins, as
/// with protobuf maps).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tags(Vec<(Str, Str)>);

impl Tags {
    /// Builds tags from wire-order pairs: sorts by key and keeps the last value of a key.
    pub fn from_pairs(mut pairs: Vec<(Str, Str)>) -> Tags {
        // Envelopes usually carry a handful of distinct, often already sorted keys: check
        // before sorting, and dedup in place (the decoder's hot path allocates nothing here).
        if !pairs.is_sorted_by(|a, b| a.0 < b.0) {
            // A stable sort keeps wire order among equal keys, so the last one is the winner.
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            // `dedup_by` keeps the first of a run and hands us (later, kept): move the later
            // value into the kept pair before the later one is dropped.
            pairs.dedup_by(|later, kept| {
                let same = later.0 == kept.0;
                if same {
                    std::mem::swap(&mut later.1, &mut kept.1);
                }
                same
            });
        }
        Tags(pairs)
    }

    pub fn get(&self, key: &str) -> Option<&Str> {
        self.0
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &self.0[i].1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Str, &Str)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `LogMessage.message_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MessageType {
    Out,
    Err,
}

impl MessageType {
    pub fn from_wire(value: i32) -> Option<MessageType> {
        match value {
            1 => Some(MessageType::Out),
            2 => Some(MessageType::Err),
            _ => None,
        }
    }

    /// `OUT` / `ERR`, as the stores write it.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Out => "OUT",
            MessageType::Err => "ERR",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogMessage {
    /// The log line; bytes on the wire, usually UTF-8.
    pub message: Bytes,
    pub message_type: MessageType,
    /// ns since the epoch.
    pub timestamp: i64,
    pub app_id: Str,
    pub source_type: Str,
    pub source_instance: Str,
    /// The app's names (SPEC §11), attached by the graph from the directory, or from the
    /// envelope's own tags while the directory does not know the app; `None` as decoded.
    pub names: Option<crate::records::AppNames>,
}

/// `HttpStartStop.peerType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PeerType {
    Client,
    Server,
}

impl PeerType {
    pub fn from_wire(value: i32) -> Option<PeerType> {
        match value {
            1 => Some(PeerType::Client),
            2 => Some(PeerType::Server),
            _ => None,
        }
    }

    pub fn from_name(name: &str) -> Option<PeerType> {
        match name {
            "Client" => Some(PeerType::Client),
            "Server" => Some(PeerType::Server),
            _ => None,
        }
    }

    /// `Client` / `Server`, as the stores write it.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerType::Client => "Client",
            PeerType::Server => "Server",
        }
    }
}

/// `HttpStartStop.method`: the wire value of the dropsonde `Method` enum, always valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Method(u8);

const METHOD_NAMES: [&str; 44] = [
    "GET",
    "POST",
    "PUT",
    "DELETE",
    "HEAD",
    "ACL",
    "BASELINE_CONTROL",
    "BIND",
    "CHECKIN",
    "CHECKOUT",
    "CONNECT",
    "COPY",
    "DEBUG",
    "LABEL",
    "LINK",
    "LOCK",
    "MERGE",
    "MKACTIVITY",
    "MKCALENDAR",
    "MKCOL",
    "MKREDIRECTREF",
    "MKWORKSPACE",
    "MOVE",
    "OPTIONS",
    "ORDERPATCH",
    "PATCH",
    "PRI",
    "PROPFIND",
    "PROPPATCH",
    "REBIND",
    "REPORT",
    "SEARCH",
    "SHOWMETHOD",
    "SPACEJUMP",
    "TEXTSEARCH",
    "TRACE",
    "TRACK",
    "UNBIND",
    "UNCHECKOUT",
    "UNLINK",
    "UNLOCK",
    "UPDATE",
    "UPDATEREDIRECTREF",
    "VERSION_CONTROL",
];

impl Method {
    pub const GET: Method = Method(1);
    pub const POST: Method = Method(2);

    pub fn from_wire(value: i32) -> Option<Method> {
        (1..=METHOD_NAMES.len() as i32)
            .contains(&value)
            .then_some(Method(value as u8))
    }

    /// Parses an enum name (`GET`); v2 carries methods by name.
    pub fn from_name(name: &str) -> Option<Method> {
        METHOD_NAMES
            .iter()
            .position(|n| *n == name)
            .map(|i| Method(i as u8 + 1))
    }

    pub fn wire_value(self) -> i32 {
        i32::from(self.0)
    }

    /// The enum name (`GET`), as the stores write it.
    pub fn as_str(self) -> &'static str {
        METHOD_NAMES[usize::from(self.0) - 1]
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HttpStartStop {
    pub start_timestamp: i64,
    pub stop_timestamp: i64,
    pub request_id: Uuid,
    pub peer_type: PeerType,
    pub method: Method,
    pub uri: Str,
    pub remote_address: Str,
    pub user_agent: Str,
    pub status_code: i32,
    pub content_length: i64,
    pub application_id: Option<Uuid>,
    pub instance_index: Option<i32>,
    pub instance_id: Str,
    pub forwarded: Vec<Str>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContainerMetric {
    pub application_id: Str,
    pub instance_index: i32,
    pub cpu_percentage: f64,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    pub memory_bytes_quota: Option<u64>,
    pub disk_bytes_quota: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ValueMetric {
    pub name: Str,
    pub value: f64,
    pub unit: Str,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CounterEvent {
    pub name: Str,
    pub delta: u64,
    pub total: Option<u64>,
}

/// A dropsonde `Error` envelope's payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorEvent {
    pub source: Str,
    pub code: i32,
    pub message: Str,
}

/// Converts a dropsonde `UUID{low, high}`: the 16 bytes in little-endian order (SPEC §1.1).
pub fn uuid_from_halves(low: u64, high: u64) -> Uuid {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&low.to_le_bytes());
    bytes[8..].copy_from_slice(&high.to_le_bytes());
    Uuid::from_bytes(bytes)
}

/// The inverse of [`uuid_from_halves`]: `(low, high)`.
pub fn uuid_to_halves(uuid: Uuid) -> (u64, u64) {
    let bytes = uuid.as_bytes();
    let mut low = [0u8; 8];
    let mut high = [0u8; 8];
    low.copy_from_slice(&bytes[..8]);
    high.copy_from_slice(&bytes[8..]);
    (u64::from_le_bytes(low), u64::from_le_bytes(high))
}

/// The deterministic id of a log line (SPEC §3): the `log_message` primary key and the
/// Elasticsearch `_id`, so a retry or a replay never stores a line twice.
///
/// 32 lowercase hex characters: the line's timestamp (ns, as 16 hex digits of its two's
/// complement, so ids of one era sort by time) followed by the low 64 bits of xxh3-128 over
/// (app_id, timestamp, source_type, source_instance, message_type, message), each
/// length-prefixed so no two different tuples hash the same input. Leading with the time
/// makes the stores' id indexes append-like: a new line's id lands beside the last one
/// written instead of on a random page of an index that grows with the store (the cause of
/// SQLite's slowdown as its file grew, README "Retention"). Two lines share an id only if
/// they share their nanosecond and 64 bits of hash.
///
/// The algorithm is fixed: changing it would duplicate every stored line a replay writes
/// again, and SQLite's retention deletes log lines by ranges of these ids, so the time must
/// lead. (It changed once, in issue #14, from the whole 128-bit hash, whose low 64 bits are
/// kept: SQLite's migration 0004 rewrites old ids to the new form; in MySQL and
/// Elasticsearch lines stored before that and replayed after it are stored twice until
/// retention removes the old copies.)
pub fn log_id(log: &LogMessage) -> String {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let parts: [&[u8]; 6] = [
        log.app_id.as_bytes(),
        &log.timestamp.to_le_bytes(),
        log.source_type.as_bytes(),
        log.source_instance.as_bytes(),
        log.message_type.as_str().as_bytes(),
        &log.message,
    ];
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    // The low 64 bits of the 128-bit digest (the same hash as before, truncated).
    let hash = hasher.digest128() as u64;
    format!("{:016x}{hash:016x}", log.timestamp as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_halves_follow_the_spec_example() {
        let uuid = uuid_from_halves(0x7243cc580bc17af4, 0x79d4c3b2020e67a5);
        assert_eq!(uuid.to_string(), "f47ac10b-58cc-4372-a567-0e02b2c3d479");
        assert_eq!(
            uuid_to_halves(uuid),
            (0x7243cc580bc17af4, 0x79d4c3b2020e67a5)
        );
    }

    #[test]
    fn method_names_round_trip_through_wire_values() {
        assert_eq!(Method::from_wire(1).map(Method::as_str), Some("GET"));
        assert_eq!(
            Method::from_wire(44).map(Method::as_str),
            Some("VERSION_CONTROL")
        );
        assert_eq!(Method::from_wire(0), None);
        assert_eq!(Method::from_wire(45), None);
        for value in 1..=44 {
            let method = Method::from_wire(value).expect("valid");
            assert_eq!(Method::from_name(method.as_str()), Some(method));
        }
    }

    #[test]
    fn log_ids_are_stable_and_tell_fields_apart() {
        let log = LogMessage {
            names: None,
            message: Bytes::from_static(b"hello"),
            message_type: MessageType::Out,
            timestamp: 1_710_234_019_085_086_325,
            app_id: Str::from("84c69290-764b-4018-94b0-62ae88c88ad1"),
            source_type: Str::from("APP/PROC/WEB"),
            source_instance: Str::from("0"),
        };
        let id = log_id(&log);
        assert_eq!(id.len(), 32);
        assert_eq!(id, log_id(&log.clone()));
        // Moving a byte from one field to the next changes the id.
        let mut shifted = log.clone();
        shifted.source_type = Str::from("APP/PROC/WEB0");
        shifted.source_instance = Str::new();
        assert_ne!(log_id(&shifted), id);
        let mut err = log.clone();
        err.message_type = MessageType::Err;
        assert_ne!(log_id(&err), id);
        // The time leads, so ids of later lines sort after earlier ones.
        assert_eq!(&id[..16], "17bbf8c7765aee75");
        let mut later = log.clone();
        later.timestamp += 1;
        assert!(log_id(&later) > id);
    }

    #[test]
    fn tags_keep_the_last_value_of_a_repeated_key() {
        let tags = Tags::from_pairs(vec![
            ("b".into(), "1".into()),
            ("a".into(), "x".into()),
            ("b".into(), "2".into()),
            ("d".into(), "1".into()),
            ("d".into(), "2".into()),
            ("d".into(), "3".into()),
        ]);
        assert_eq!(tags.len(), 3);
        assert_eq!(tags.get("b").map(|s| &**s), Some("2"));
        assert_eq!(tags.get("d").map(|s| &**s), Some("3"));
        assert_eq!(tags.get("a").map(|s| &**s), Some("x"));
        assert_eq!(tags.get("c"), None);
    }
}

#[cfg(test)]
mod app_tag_tests {
    use super::*;

    #[test]
    fn v1_envelopes_carry_app_tags_through_the_decoder() {
        let event = Event {
            timestamp: 1,
            header: Header {
                origin: Str::from("rep"),
                tags: Tags::from_pairs(vec![
                    (Str::from("source_id"), Str::from("x")),
                    (Str::from("app_name"), Str::from("web")),
                    (Str::from("organization_name"), Str::from("acme")),
                ]),
                ..Header::default()
            },
            payload: Payload::Log(LogMessage {
                names: None,
                message: Bytes::from_static(b"hi"),
                message_type: MessageType::Out,
                timestamp: 2,
                app_id: Str::from("a"),
                source_type: Str::from("APP/PROC/WEB"),
                source_instance: Str::from("0"),
            }),
        };
        let frame = crate::reference::encode_v1(&event);
        let decoded = crate::decode::decode_v1(Bytes::from(frame)).expect("decodes");
        let tags = decoded.header.tags.app_tags().expect("tagged");
        assert_eq!(&*tags.name, "web");
        assert_eq!(&*tags.org_name, "acme");
        assert_eq!(&*tags.space_id, "");
    }
}
