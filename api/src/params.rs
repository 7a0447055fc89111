//! Query parameters: app ids, time ranges, steps, limits and cursors. Every parse error is a
//! 400 whose message names the parameter and the value given.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::ApiError;

/// The default time range: the hour before `to`.
pub const DEFAULT_RANGE_SECS: i64 = 3600;
/// `limit` of `/logs` when absent, and its maximum.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

/// The query string, as given.
pub type Query = HashMap<String, String>;

/// An app id in canonical lowercase 8-4-4-4-12 form, as the sinks write them (SPEC §3).
pub fn app_id(raw: &str) -> Result<String, ApiError> {
    uuid::Uuid::parse_str(raw)
        .map(|id| id.hyphenated().to_string())
        .map_err(|_| {
            ApiError::bad_request(format!(
                "app id: {raw:?} is not a UUID such as \"f47ac10b-58cc-4372-a567-0e02b2c3d479\""
            ))
        })
}

/// `[from, to)` in epoch seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub from: i64,
    pub to: i64,
}

impl TimeRange {
    /// `from` and `to` of the query: `to` defaults to now, `from` to an hour before `to`.
    pub fn parse(query: &Query) -> Result<TimeRange, ApiError> {
        TimeRange::parse_at(query, now_secs())
    }

    fn parse_at(query: &Query, now: i64) -> Result<TimeRange, ApiError> {
        let to = match query.get("to") {
            Some(raw) => time("to", raw)?,
            None => now,
        };
        let from = match query.get("from") {
            Some(raw) => time("from", raw)?,
            None => to - DEFAULT_RANGE_SECS,
        };
        if from >= to {
            return Err(ApiError::bad_request(format!(
                "from: {from} is not before to ({to}); the range is [from, to)"
            )));
        }
        Ok(TimeRange { from, to })
    }

    /// The range in ns since the epoch, as `ts` columns hold time.
    pub fn ns(&self) -> (i64, i64) {
        (
            self.from.saturating_mul(1_000_000_000),
            self.to.saturating_mul(1_000_000_000),
        )
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A time: integer epoch seconds or RFC 3339 (`2026-12-02T05:00:00Z`, `…+02:00`); fractions
/// of a second are dropped.
pub fn time(name: &str, raw: &str) -> Result<i64, ApiError> {
    let bad = || {
        ApiError::bad_request(format!(
            "{name}: {raw:?} is not RFC 3339 (such as \"2026-12-02T05:00:00Z\") or epoch seconds"
        ))
    };
    if let Ok(secs) = raw.parse::<i64>() {
        return if secs >= 0 { Ok(secs) } else { Err(bad()) };
    }
    let (utc, offset_secs) = split_offset(raw).ok_or_else(bad)?;
    let at = humantime::parse_rfc3339(&utc).map_err(|_| bad())?;
    let secs = at.duration_since(UNIX_EPOCH).map_err(|_| bad())?.as_secs() as i64;
    Ok(secs - offset_secs)
}

/// `…Z` as is; `…+HH:MM` / `…-HH:MM` as the same wall time with `Z` and the offset in seconds
/// (humantime reads only UTC).
fn split_offset(raw: &str) -> Option<(String, i64)> {
    if raw.ends_with('Z') || raw.ends_with('z') {
        return Some((format!("{}Z", &raw[..raw.len() - 1]), 0));
    }
    let at = raw.len().checked_sub(6)?;
    let (wall, offset) = (raw.get(..at)?, raw.get(at..)?);
    let sign = match offset.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (hours, minutes) = offset[1..].split_once(':')?;
    let (hours, minutes) = (hours.parse::<i64>().ok()?, minutes.parse::<i64>().ok()?);
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some((format!("{wall}Z"), sign * (hours * 3600 + minutes * 60)))
}

/// `step` in seconds: a duration of whole minutes (`1m` default, `5m`, `1h`, `1d`).
pub fn step(query: &Query) -> Result<i64, ApiError> {
    let Some(raw) = query.get("step") else {
        return Ok(60);
    };
    let bad = |why: &str| ApiError::bad_request(format!("step: {raw:?} {why}"));
    let step = humantime::parse_duration(raw)
        .map_err(|_| bad("is not a duration such as \"1m\", \"5m\" or \"1h\""))?;
    if step < Duration::from_secs(60) || step.as_secs() % 60 != 0 || step.subsec_nanos() != 0 {
        return Err(bad("is not a whole number of minutes (at least \"1m\")"));
    }
    Ok(step.as_secs() as i64)
}

/// `limit` of `/logs`: 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] when absent.
pub fn limit(query: &Query) -> Result<usize, ApiError> {
    let Some(raw) = query.get("limit") else {
        return Ok(DEFAULT_LIMIT);
    };
    match raw.parse::<usize>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(ApiError::bad_request(format!(
            "limit: {raw:?} is not a whole number from 1 to {MAX_LIMIT}"
        ))),
    }
}

/// `q`: the terms every returned message contains; `None` when absent or blank.
pub fn search_terms(query: &Query) -> Option<Vec<String>> {
    let terms: Vec<String> = query
        .get("q")?
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    (!terms.is_empty()).then_some(terms)
}

/// Where the next page of logs starts: after the line of time `time` and id `id`, in the
/// store's own sort values (ns and the log id for SQLite, the search's sort values for
/// Elasticsearch). Opaque to clients: base64url of a JSON array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub time: i64,
    pub id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        let json = serde_json::json!([self.time, self.id]);
        URL_SAFE_NO_PAD.encode(json.to_string())
    }

    /// `cursor` of the query, if any.
    pub fn parse(query: &Query) -> Result<Option<Cursor>, ApiError> {
        let Some(raw) = query.get("cursor") else {
            return Ok(None);
        };
        let bad = || {
            ApiError::bad_request(format!(
                "cursor: {raw:?} is not a cursor this API returned as next_cursor"
            ))
        };
        let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| bad())?;
        let (time, id): (i64, String) = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        Ok(Some(Cursor { time, id }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> Query {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn times_are_rfc3339_or_epoch_seconds() {
        assert_eq!(time("from", "1764651600"), Ok(1_764_651_600));
        assert_eq!(time("from", "2025-12-02T05:00:00Z"), Ok(1_764_651_600));
        assert_eq!(time("from", "2025-12-02T05:00:00.75Z"), Ok(1_764_651_600));
        assert_eq!(time("from", "2025-12-02T07:00:00+02:00"), Ok(1_764_651_600));
        assert_eq!(time("from", "2025-12-02T04:30:00-00:30"), Ok(1_764_651_600));
        let error = time("from", "abc").expect_err("not a time");
        assert_eq!(error.status, axum::http::StatusCode::BAD_REQUEST);
        assert_eq!(
            error.message,
            "from: \"abc\" is not RFC 3339 (such as \"2026-12-02T05:00:00Z\") or epoch seconds"
        );
        assert!(time("to", "-5").is_err());
        assert!(time("to", "2025-12-02T05:00:00+25:00").is_err());
        assert!(time("to", "2025-13-02T05:00:00Z").is_err());
    }

    #[test]
    fn ranges_default_to_the_last_hour_and_must_not_be_empty() {
        let now = 1_764_651_600;
        assert_eq!(
            TimeRange::parse_at(&query(&[]), now),
            Ok(TimeRange {
                from: now - 3600,
                to: now
            })
        );
        assert_eq!(
            TimeRange::parse_at(&query(&[("to", "1000")]), now),
            Ok(TimeRange {
                from: 1000 - 3600,
                to: 1000
            })
        );
        let error = TimeRange::parse_at(&query(&[("from", "10"), ("to", "10")]), now)
            .expect_err("empty range");
        assert!(error.message.starts_with("from: "), "{}", error.message);
    }

    #[test]
    fn steps_are_whole_minutes() {
        assert_eq!(step(&query(&[])), Ok(60));
        assert_eq!(step(&query(&[("step", "5m")])), Ok(300));
        assert_eq!(step(&query(&[("step", "1h")])), Ok(3600));
        assert_eq!(step(&query(&[("step", "1d")])), Ok(86_400));
        for bad in ["30s", "90s", "abc", "0m", ""] {
            let error = step(&query(&[("step", bad)])).expect_err(bad);
            assert!(error.message.starts_with("step: "), "{}", error.message);
        }
    }

    #[test]
    fn limits_are_bounded() {
        assert_eq!(limit(&query(&[])), Ok(100));
        assert_eq!(limit(&query(&[("limit", "1000")])), Ok(1000));
        for bad in ["0", "1001", "-1", "x"] {
            let error = limit(&query(&[("limit", bad)])).expect_err(bad);
            assert!(error.message.starts_with("limit: "), "{}", error.message);
        }
    }

    #[test]
    fn app_ids_are_canonical_uuids() {
        assert_eq!(
            app_id("F47AC10B-58CC-4372-A567-0E02B2C3D479"),
            Ok("f47ac10b-58cc-4372-a567-0e02b2c3d479".to_owned())
        );
        let error = app_id("my-app").expect_err("not a uuid");
        assert!(error.message.starts_with("app id: "), "{}", error.message);
    }

    #[test]
    fn cursors_round_trip_and_bad_ones_are_named() {
        let cursor = Cursor {
            time: 1_710_234_017_448_058_219,
            id: "abc".to_owned(),
        };
        let encoded = cursor.encode();
        assert_eq!(
            Cursor::parse(&query(&[("cursor", &encoded)])),
            Ok(Some(cursor))
        );
        assert_eq!(Cursor::parse(&query(&[])), Ok(None));
        for bad in ["!!", "e30", "WzEsMl0"] {
            let error = Cursor::parse(&query(&[("cursor", bad)])).expect_err(bad);
            assert!(error.message.starts_with("cursor: "), "{}", error.message);
        }
    }

    #[test]
    fn search_terms_split_on_whitespace() {
        assert_eq!(
            search_terms(&query(&[("q", " Order  processed ")])),
            Some(vec!["Order".to_owned(), "processed".to_owned()])
        );
        assert_eq!(search_terms(&query(&[("q", "  ")])), None);
        assert_eq!(search_terms(&query(&[])), None);
    }
}
