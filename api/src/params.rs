//! Query parameters: app ids, time ranges, steps, limits and cursors. Every parse error is a
//! 400 whose message names the parameter and the value given.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::ApiError;

/// The default time range: the hour before `to`.
pub const DEFAULT_RANGE_SECS: i64 = 3600;
/// The widest `step`: 366 days.
pub const MAX_STEP_SECS: i64 = 366 * 86_400;
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

/// A space or org id from a path (SPEC §11): a UUID, canonical lowercase.
pub fn group_id(what: &str, raw: &str) -> Result<String, ApiError> {
    uuid::Uuid::parse_str(raw)
        .map(|id| id.hyphenated().to_string())
        .map_err(|_| {
            ApiError::bad_request(format!(
                "{what} id: {raw:?} is not a UUID such as \"f47ac10b-58cc-4372-a567-0e02b2c3d479\""
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
        return if secs >= 0 {
            Ok(secs)
        } else {
            Err(ApiError::bad_request(format!(
                "{name}: {raw:?} is before 1970-01-01T00:00:00Z, the earliest time"
            )))
        };
    }
    let (utc, offset_secs) = split_offset(raw).ok_or_else(bad)?;
    let at = humantime::parse_rfc3339(&utc).map_err(|_| bad())?;
    let secs = at.duration_since(UNIX_EPOCH).map_err(|_| bad())?.as_secs() as i64;
    // One rule however it is written: no time before the epoch (`-1`, or
    // `1970-01-01T00:00:00+23:59`).
    let secs = secs - offset_secs;
    if secs < 0 {
        return Err(ApiError::bad_request(format!(
            "{name}: {raw:?} is before 1970-01-01T00:00:00Z, the earliest time"
        )));
    }
    Ok(secs)
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

/// `step` in seconds: a duration of whole minutes (`1m` default, `5m`, `1h`, `1d`), at most
/// [`MAX_STEP_SECS`].
pub fn step(query: &Query) -> Result<i64, ApiError> {
    let Some(raw) = query.get("step") else {
        return Ok(60);
    };
    let bad = |why: &str| ApiError::bad_request(format!("step: {raw:?} {why}"));
    let step = humantime::parse_duration(raw)
        .map_err(|_| bad("is not a duration such as \"1m\", \"5m\" or \"1h\""))?;
    if step > Duration::from_secs(MAX_STEP_SECS as u64) {
        return Err(bad("is longer than 366 days, the widest step"));
    }
    if step < Duration::from_secs(60) || step.as_secs() % 60 != 0 || step.subsec_nanos() != 0 {
        return Err(bad("is not a whole number of minutes (at least \"1m\")"));
    }
    // At most MAX_STEP_SECS: fits.
    Ok(step.as_secs() as i64)
}

/// Epoch-aligned buckets of `step` seconds that `range` touches: the points of an answer at
/// most.
pub fn buckets(range: TimeRange, step: i64) -> i64 {
    (range.to - 1).div_euclid(step) - range.from.div_euclid(step) + 1
}

/// 400 when `range` in steps of `step` would take more than `max_points` points, naming the
/// limit and the finest step that fits.
pub fn check_points(range: TimeRange, step: i64, max_points: usize) -> Result<(), ApiError> {
    let max = i64::try_from(max_points).unwrap_or(i64::MAX);
    let points = buckets(range, step);
    if points <= max {
        return Ok(());
    }
    // The finest whole-minute step that fits: from the even share up, a minute at a time
    // (epoch alignment adds a bucket at most, so this takes a step or two).
    let span = range.to - range.from;
    let even_share = ((span + max - 1) / max).max(60);
    let mut fits = (even_share + 59) / 60 * 60;
    while fits <= MAX_STEP_SECS && buckets(range, fits) > max {
        fits += 60;
    }
    let advice = if fits <= MAX_STEP_SECS {
        format!(
            "ask for step={} or coarser, or a shorter range",
            humantime::format_duration(Duration::from_secs(fits as u64))
        )
    } else {
        "ask for a shorter range".to_owned()
    };
    Err(ApiError::bad_request(format!(
        "step: [from, to) in steps of {} is {points} points, more than the {max_points} one \
         answer carries (api.limits.max_points): {advice}",
        humantime::format_duration(Duration::from_secs(step as u64))
    )))
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

/// `q`: the terms every returned message contains; `None` when absent or blank. At most
/// `max_terms` terms of at most `max_term_bytes` bytes each (400 naming the limit beyond).
pub fn search_terms(
    query: &Query,
    max_terms: usize,
    max_term_bytes: usize,
) -> Result<Option<Vec<String>>, ApiError> {
    let Some(q) = query.get("q") else {
        return Ok(None);
    };
    let mut terms = Vec::new();
    for term in q.split_whitespace() {
        if terms.len() == max_terms {
            return Err(ApiError::bad_request(format!(
                "q: more than {max_terms} terms, the most one search takes \
                 (api.limits.max_search_terms)"
            )));
        }
        if term.len() > max_term_bytes {
            let start: String = term.chars().take(16).collect();
            return Err(ApiError::bad_request(format!(
                "q: the term starting {start:?} is {} bytes long, more than the \
                 {max_term_bytes} a term may have (api.limits.max_term_bytes)",
                term.len()
            )));
        }
        terms.push(term.to_owned());
    }
    Ok((!terms.is_empty()).then_some(terms))
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
            search_terms(&query(&[("q", " Order  processed ")]), 16, 256),
            Ok(Some(vec!["Order".to_owned(), "processed".to_owned()]))
        );
        assert_eq!(search_terms(&query(&[("q", "  ")]), 16, 256), Ok(None));
        assert_eq!(search_terms(&query(&[]), 16, 256), Ok(None));
    }

    #[test]
    fn search_terms_are_bounded_in_number_and_length() {
        let many = vec!["a"; 17].join(" ");
        let error = search_terms(&query(&[("q", &many)]), 16, 256).expect_err("17 terms");
        assert_eq!(error.status, axum::http::StatusCode::BAD_REQUEST);
        assert!(
            error.message.contains("api.limits.max_search_terms"),
            "{}",
            error.message
        );
        let sixteen = vec!["a"; 16].join(" ");
        assert!(search_terms(&query(&[("q", &sixteen)]), 16, 256).is_ok());
        let long = "x".repeat(60_000);
        let error = search_terms(&query(&[("q", &long)]), 16, 256).expect_err("long term");
        assert!(
            error.message.contains("60000 bytes") && error.message.contains("max_term_bytes"),
            "{}",
            error.message
        );
        assert!(error.message.len() < 300, "the term is not echoed whole");
    }

    #[test]
    fn times_before_the_epoch_are_refused_however_written() {
        for raw in [
            "-1",
            "1970-01-01T00:00:00+23:59",
            "1970-01-01T00:00:00+00:01",
        ] {
            let error = time("from", raw).expect_err(raw);
            assert_eq!(error.status, axum::http::StatusCode::BAD_REQUEST);
            assert!(error.message.contains("before 1970"), "{}", error.message);
        }
        assert_eq!(time("from", "1970-01-01T00:00:00-23:59"), Ok(86_340));
        assert_eq!(time("from", "1970-01-01T01:00:00+01:00"), Ok(0));
    }

    #[test]
    fn steps_that_would_overflow_are_refused() {
        for bad in [
            "99999999999999999m",
            "18446744073709551615s",
            "367d",
            "1000y",
        ] {
            let error = step(&query(&[("step", bad)])).expect_err(bad);
            assert_eq!(error.status, axum::http::StatusCode::BAD_REQUEST, "{bad}");
            assert!(error.message.starts_with("step: "), "{}", error.message);
        }
        assert_eq!(step(&query(&[("step", "366d")])), Ok(MAX_STEP_SECS));
    }

    #[test]
    fn points_per_answer_are_capped_and_a_step_that_fits_is_named() {
        let year = TimeRange {
            from: 1_735_689_600,
            to: 1_735_689_600 + 365 * 86_400,
        };
        assert_eq!(buckets(year, 86_400), 365);
        assert_eq!(check_points(year, 86_400, 5000), Ok(()));
        let error = check_points(year, 60, 5000).expect_err("525600 points");
        assert_eq!(error.status, axum::http::StatusCode::BAD_REQUEST);
        assert!(
            error.message.contains("525600 points")
                && error.message.contains("api.limits.max_points"),
            "{}",
            error.message
        );
        // The step it names fits, and the minute before it does not.
        let named = error
            .message
            .split("step=")
            .nth(1)
            .and_then(|rest| rest.split(" or coarser").next())
            .expect("a step is named");
        let named = humantime::parse_duration(named)
            .expect("a duration")
            .as_secs() as i64;
        assert_eq!(check_points(year, named, 5000), Ok(()));
        assert!(check_points(year, named - 60, 5000).is_err());
        // Unaligned ranges touch one bucket more.
        let unaligned = TimeRange { from: 30, to: 150 };
        assert_eq!(buckets(unaligned, 60), 3);
        assert!(check_points(unaligned, 60, 2).is_err());
        // Nothing fits a range of 5000 × 366 days in 2 points.
        let huge = TimeRange {
            from: 0,
            to: 4_000_000_000,
        };
        let error = check_points(huge, 60, 2).expect_err("too long");
        assert!(error.message.contains("shorter range"), "{}", error.message);
    }
}
