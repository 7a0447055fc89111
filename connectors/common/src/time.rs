//! Event times (ns since the epoch) as people read them: one formatter for the whole
//! workspace, so a log document, a generated access log line and an API query agree.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in ns since the epoch.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// UTC (year, month, day) and hour of `ns` since the epoch.
pub fn civil(ns: i64) -> ((i64, u32, u32), u32) {
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
}
