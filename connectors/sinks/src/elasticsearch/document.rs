//! Log lines as Elasticsearch documents (SPEC §3): the fields of `log_message` with the time
//! as `@timestamp` (RFC 3339, nanoseconds), `_id` the deterministic log id, and the index
//! named from the event time by a pattern such as `logs-%Y.%m.%d`. The log id is also the
//! `id` field (as in `log_message`), a keyword the read path sorts on to break ties between
//! lines of the same millisecond: Elasticsearch 8 refuses to sort on `_id`.

use sluice_common::time::{civil, rfc3339};
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
    /// The app's names when the graph knew them (SPEC §11); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    app_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    space_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    org_name: Option<&'a str>,
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
        app_name: known(log.names.as_ref().map(|n| &*n.name)),
        space_name: known(log.names.as_ref().map(|n| &*n.space_name)),
        org_name: known(log.names.as_ref().map(|n| &*n.org_name)),
    };
    // Serializing borrowed strings into a Vec cannot fail.
    let source = serde_json::to_vec(&source).unwrap_or_default();
    Some(Document {
        id,
        index: pattern.index(log.timestamp),
        source,
    })
}

/// A name, unless it is unknown (empty).
fn known(name: Option<&str>) -> Option<&str> {
    name.filter(|name| !name.is_empty())
}

/// An index name pattern: `%Y`, `%m`, `%d` and `%H` are the UTC year, month, day and hour
/// of the event; `%%` is a percent sign; everything else is literal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexPattern(String);

/// What is wrong with an index name pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexPatternError {
    #[error("the index pattern is empty")]
    Empty,
    #[error("invalid index pattern `{0}`: only %Y, %m, %d, %H and %% may follow %")]
    Escape(String),
    #[error("invalid index pattern `{0}`: index names are lowercase")]
    Uppercase(String),
}

impl IndexPattern {
    pub fn parse(pattern: &str) -> Result<IndexPattern, IndexPatternError> {
        if pattern.is_empty() {
            return Err(IndexPatternError::Empty);
        }
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            if c == '%' {
                if !matches!(chars.next(), Some('Y' | 'm' | 'd' | 'H' | '%')) {
                    return Err(IndexPatternError::Escape(pattern.to_owned()));
                }
            } else if c.is_uppercase() {
                return Err(IndexPatternError::Uppercase(pattern.to_owned()));
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

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// When the period an index `name` of this pattern covers ends (ns since the epoch): the
    /// end of its day for `%Y.%m.%d`, of its hour with `%H`, of its month without `%d`.
    /// `None` for a name the pattern does not produce, or a pattern without `%Y`.
    pub(super) fn period_end(&self, name: &str) -> Option<i64> {
        let (mut year, mut month, mut day, mut hour) = (None, None, None, None);
        let mut rest = name;
        let mut chars = self.0.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                rest = rest.strip_prefix(c)?;
                continue;
            }
            let escape = chars.next()?;
            if escape == '%' {
                rest = rest.strip_prefix('%')?;
                continue;
            }
            let width = if escape == 'Y' { 4 } else { 2 };
            let digits = rest.get(..width)?;
            if !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let value: i64 = digits.parse().ok()?;
            rest = &rest[width..];
            match escape {
                'Y' => year = Some(value),
                'm' => month = Some(value),
                'd' => day = Some(value),
                _ => hour = Some(value),
            }
        }
        if !rest.is_empty() {
            return None;
        }
        let year = year?;
        const HOUR: i64 = 3600 * 1_000_000_000;
        const DAY: i64 = 24 * HOUR;
        let start = days_from_civil(year, month.unwrap_or(1), day.unwrap_or(1)) * DAY
            + hour.unwrap_or(0) * HOUR;
        let end = match (month, day, hour) {
            (_, Some(_), Some(_)) | (_, None, Some(_)) => start + HOUR,
            (_, Some(_), None) => start + DAY,
            (Some(m), None, None) => {
                let (y, m) = if m == 12 {
                    (year + 1, 1)
                } else {
                    (year, m + 1)
                };
                days_from_civil(y, m, 1) * DAY
            }
            (None, None, None) => days_from_civil(year + 1, 1, 1) * DAY,
        };
        // The name must be exactly the one the pattern gives its period (no 2026.02.31).
        (self.index(start) == name).then_some(end)
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

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_name_gives_the_end_of_its_period() {
        const DAY: i64 = 24 * 3600 * 1_000_000_000;
        let daily = IndexPattern::parse("logs-%Y.%m.%d").expect("valid");
        // 2024-03-12 ends at 2024-03-13T00:00:00Z.
        assert_eq!(
            daily.period_end("logs-2024.03.12"),
            Some(1_710_288_000 * 1_000_000_000)
        );
        assert_eq!(
            daily.period_end("logs-2024.03.12"),
            daily.period_end("logs-2024.03.13").map(|end| end - DAY)
        );
        for other in [
            "logs-2024.03.12-restored",
            "logs-old",
            "logs-2024.02.31",
            "metrics-2024.03.12",
            "logs-2024.3.12",
        ] {
            assert_eq!(daily.period_end(other), None, "{other}");
        }
        let hourly = IndexPattern::parse("cf-%Y%m%d-%H").expect("valid");
        assert_eq!(
            hourly.period_end("cf-20240312-09"),
            Some(1_710_234_000 * 1_000_000_000 + 3600 * 1_000_000_000)
        );
        let monthly = IndexPattern::parse("logs-%Y.%m").expect("valid");
        assert_eq!(
            monthly.period_end("logs-2024.12"),
            Some(1_735_689_600 * 1_000_000_000)
        );
        assert_eq!(
            IndexPattern::parse("all-logs")
                .expect("valid")
                .period_end("all-logs"),
            None
        );
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
