//! Log lines as Elasticsearch documents (SPEC §3): the fields of `log_message` with the time
//! as `@timestamp` (RFC 3339, nanoseconds), `_id` the deterministic log id, and the index
//! named from the event time by a pattern such as `logs-%Y.%m.%d`. The log id is also the
//! `id` field (as in `log_message`), a keyword the read path sorts on to break ties between
//! lines of the same millisecond: Elasticsearch 8 refuses to sort on `_id`.

use std::fmt::Write as _;

use serde::Serialize;
use sluice_model::Event;
use sluice_model::event::{Payload, log_id};

/// One document, ready for a `_bulk` body.
#[derive(Clone, Debug)]
pub(super) struct Document {
    pub(super) id: String,
    pub(super) index: String,
    /// The document's JSON source, one line.
    pub(super) source: Vec<u8>,
}

#[derive(Serialize)]
struct Source<'a> {
    #[serde(rename = "@timestamp")]
    timestamp: &'a str,
    id: &'a str,
    app_id: &'a str,
    source_type: &'a str,
    source_instance: &'a str,
    message_type: &'a str,
    message: &'a str,
    origin: &'a str,
    deployment: &'a str,
    job: &'a str,
    instance: &'a str,
    ip: &'a str,
    tags: Tags<'a>,
}

struct Tags<'a>(&'a sluice_model::event::Tags);

impl Serialize for Tags<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| (&**k, &**v)))
    }
}

/// The document of a log event; `None` for an event of another type (never routed here).
pub(super) fn document(event: &Event, pattern: &IndexPattern) -> Option<Document> {
    let Payload::Log(log) = &event.payload else {
        return None;
    };
    let header = &event.header;
    let timestamp = rfc3339(log.timestamp);
    let message = String::from_utf8_lossy(&log.message);
    let id = log_id(log);
    let source = Source {
        timestamp: &timestamp,
        id: &id,
        app_id: &log.app_id,
        source_type: &log.source_type,
        source_instance: &log.source_instance,
        message_type: log.message_type.as_str(),
        message: &message,
        origin: &header.origin,
        deployment: &header.deployment,
        job: &header.job,
        instance: &header.index,
        ip: &header.ip,
        tags: Tags(&header.tags),
    };
    // Serializing borrowed strings into a Vec cannot fail.
    let source = serde_json::to_vec(&source).unwrap_or_default();
    Some(Document {
        id,
        index: pattern.index(log.timestamp),
        source,
    })
}

/// An index name pattern: `%Y`, `%m`, `%d` and `%H` are the UTC year, month, day and hour
/// of the event; `%%` is a percent sign; everything else is literal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexPattern(String);

impl IndexPattern {
    pub fn parse(pattern: &str) -> Result<IndexPattern, String> {
        if pattern.is_empty() {
            return Err("the index pattern is empty".to_owned());
        }
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            if c == '%' {
                if !matches!(chars.next(), Some('Y' | 'm' | 'd' | 'H' | '%')) {
                    return Err(format!(
                        "invalid index pattern `{pattern}`: only %Y, %m, %d, %H and %% may follow %"
                    ));
                }
            } else if c.is_uppercase() {
                return Err(format!(
                    "invalid index pattern `{pattern}`: index names are lowercase"
                ));
            }
        }
        Ok(IndexPattern(pattern.to_owned()))
    }

    /// The index of an event at `ns` since the epoch.
    pub(super) fn index(&self, ns: i64) -> String {
        let (date, hour) = civil(ns);
        let mut out = String::with_capacity(self.0.len() + 8);
        let mut chars = self.0.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            let _ = match chars.next() {
                Some('Y') => write!(out, "{:04}", date.0),
                Some('m') => write!(out, "{:02}", date.1),
                Some('d') => write!(out, "{:02}", date.2),
                Some('H') => write!(out, "{hour:02}"),
                _ => write!(out, "%"),
            };
        }
        out
    }

    /// The pattern as a wildcard for the index template and searches: `logs-%Y.%m.%d` →
    /// `logs-*`.
    pub fn wildcard(&self) -> String {
        match self.0.find('%') {
            Some(at) => format!("{}*", &self.0[..at]),
            None => self.0.clone(),
        }
    }
}

/// UTC (year, month, day) and hour of `ns` since the epoch.
fn civil(ns: i64) -> ((i64, u32, u32), u32) {
    let secs = ns.div_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let hour = (secs.rem_euclid(86_400) / 3600) as u32;
    (civil_from_days(days), hour)
}

/// Howard Hinnant's `civil_from_days`: the proleptic Gregorian date of a day number.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `2024-03-12T09:00:17.448058219Z`.
pub fn rfc3339(ns: i64) -> String {
    let ((year, month, day), hour) = civil(ns);
    let secs = ns.div_euclid(1_000_000_000);
    let minute = secs.rem_euclid(3600) / 60;
    let second = secs.rem_euclid(60);
    let nanos = ns.rem_euclid(1_000_000_000);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{nanos:09}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_in_utc_with_nanoseconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339(1_710_234_017_448_058_219),
            "2024-03-12T09:00:17.448058219Z"
        );
        // A leap day, and the last nanosecond of a year.
        assert_eq!(
            rfc3339(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000000Z"
        );
        assert_eq!(
            rfc3339(1_704_067_199_999_999_999),
            "2023-12-31T23:59:59.999999999Z"
        );
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999999999Z");
    }

    #[test]
    fn index_names_come_from_the_event_date() {
        let daily = IndexPattern::parse("logs-%Y.%m.%d").expect("valid");
        assert_eq!(daily.index(1_710_234_017_448_058_219), "logs-2024.03.12");
        assert_eq!(daily.wildcard(), "logs-*");
        let hourly = IndexPattern::parse("cf-%Y%m%d-%H").expect("valid");
        assert_eq!(hourly.index(1_710_234_017_448_058_219), "cf-20240312-09");
        assert_eq!(
            IndexPattern::parse("all-logs").expect("valid").wildcard(),
            "all-logs"
        );
        assert!(IndexPattern::parse("logs-%y").is_err());
        assert!(IndexPattern::parse("Logs-%Y").is_err());
        assert!(IndexPattern::parse("logs-%").is_err());
    }
}
