//! Retention in the SQL sinks (SPEC §10): raw rows are kept for `raw` (2 days), rollups of
//! every width and app events for `rollups` (14 days), as PCF Metrics kept them.
//!
//! Age is measured against the pipeline's watermark (event time), never the wall clock: a
//! replay of a capture from years ago keeps everything it writes, and a live job keeps
//! exactly the window it promises. Each sink deletes in slices of about `batch_size` rows per
//! table (SQLite between two of its write transactions, MySQL on a connection of its own),
//! so ingestion never waits for more than a slice, and counts every deleted row per table in
//! `sluice_sink_retention_deleted_total{sink,table}`.

use std::num::NonZeroUsize;
use std::time::Duration;

use serde::Deserialize;

use crate::rows::{Conflict, Table};

/// `retention = { ... }` of a `sqlite` or `mysql` sink.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Off, the tables keep everything (an external job deletes, or nothing does).
    pub enabled: bool,
    /// How long raw rows are kept: `log_message`, `container_metric`, `http_start_stop`,
    /// `platform_error`.
    #[serde(with = "sluice_common::config::duration")]
    pub raw: Duration,
    /// How long rollups of every width and `app_event` rows are kept.
    #[serde(with = "sluice_common::config::duration")]
    pub rollups: Duration,
    /// How often (wall clock) expired rows are looked for once none are left; while some are,
    /// the sink keeps deleting slice after slice.
    #[serde(with = "sluice_common::config::duration")]
    pub interval: Duration,
    /// Rows deleted per table and statement, about (rows sharing the last time deleted go
    /// with it).
    pub batch_size: NonZeroUsize,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            enabled: true,
            raw: Duration::from_secs(2 * 24 * 3600),
            rollups: Duration::from_secs(14 * 24 * 3600),
            interval: Duration::from_secs(10),
            batch_size: NonZeroUsize::new(5000).unwrap_or(NonZeroUsize::MIN),
        }
    }
}

impl RetentionConfig {
    /// Retention switched off.
    pub fn disabled() -> RetentionConfig {
        RetentionConfig {
            enabled: false,
            ..RetentionConfig::default()
        }
    }

    /// The problems of its values, each naming its key under `retention.`.
    pub(crate) fn problems(&self) -> Vec<crate::Problem> {
        let mut problems = Vec::new();
        if self.enabled && self.raw.is_zero() {
            problems.push(crate::Problem::new(
                "retention.raw",
                "must be longer than 0s (set enabled = false to keep everything)",
            ));
        }
        if self.enabled && self.rollups.is_zero() {
            problems.push(crate::Problem::new(
                "retention.rollups",
                "must be longer than 0s (set enabled = false to keep everything)",
            ));
        }
        problems
    }

    /// The oldest time `table` keeps at `watermark` (ns), in the unit of its
    /// [`time_column`]: rows older than it are expired.
    pub fn cutoff(&self, table: &Table, watermark: i64) -> i64 {
        let keep = if is_rollup(table) {
            self.rollups
        } else {
            self.raw
        };
        let keep = i64::try_from(keep.as_nanos()).unwrap_or(i64::MAX);
        let cutoff = watermark.saturating_sub(keep);
        if time_column(table) == "minute" {
            // Epoch seconds; a window is kept while its start is within the period.
            cutoff.div_euclid(1_000_000_000)
        } else {
            cutoff
        }
    }
}

/// Whether retention applies to `table` at all: the directory (`app`, SPEC §11) is not
/// history — its rows live as long as their apps, and leave when the Cloud Controller says so.
pub fn has_history(table: &Table) -> bool {
    table.stream != sluice_model::records::StreamName::Apps
}

/// Whether `table` is kept for `rollups` (rollups of every width, and `app_event`, SPEC §10)
/// rather than `raw`.
pub fn is_rollup(table: &Table) -> bool {
    table.conflict == Conflict::Update || table.name == "app_event"
}

/// The column whose age retention measures: event time in ns (`ts`, `stop_ts` for HTTP),
/// or a rollup's `minute` (epoch seconds of the window's start).
pub fn time_column(table: &Table) -> &'static str {
    match (table.name, table.conflict) {
        ("http_start_stop", _) => "stop_ts",
        (_, Conflict::Update) => "minute",
        _ => "ts",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows;
    use sluice_model::records::StreamName;

    const DAY: i64 = 24 * 3600;

    #[test]
    fn cutoffs_follow_the_watermark_in_each_tables_unit() {
        let config = RetentionConfig::default();
        let watermark = 30 * DAY * 1_000_000_000;
        let raw = config.cutoff(rows::table(StreamName::ContainerMetrics), watermark);
        assert_eq!(raw, 28 * DAY * 1_000_000_000);
        let rollups = config.cutoff(rows::table(StreamName::AppRollups), watermark);
        assert_eq!(rollups, 16 * DAY);
        let events = config.cutoff(rows::table(StreamName::AppEvents), watermark);
        assert_eq!(events, 16 * DAY * 1_000_000_000);
        let hourly = rows::window_table(StreamName::PlatformRollups, 3600);
        assert_eq!(config.cutoff(hourly, watermark), 16 * DAY);
    }

    #[test]
    fn the_spec_says_which_tables_are_raw_and_which_rollups() {
        let tables = rows::tables_for(&[60]);
        let rollups: Vec<&str> = tables
            .iter()
            .filter(|t| has_history(t) && is_rollup(t))
            .map(|t| t.name)
            .collect();
        assert_eq!(
            rollups,
            [
                "app_event",
                "app_metric_rollup",
                "platform_metric_rollup",
                "space_metric_rollup",
                "org_metric_rollup"
            ]
        );
        let kept: Vec<&str> = tables
            .iter()
            .filter(|t| !has_history(t))
            .map(|t| t.name)
            .collect();
        assert_eq!(kept, ["app"], "the directory is not history (SPEC §11)");
        assert_eq!(
            time_column(rows::table(StreamName::Http)),
            "stop_ts",
            "HTTP events are timed by their stop (SPEC §2)"
        );
    }

    #[test]
    fn retention_reads_durations_and_rejects_zero() {
        let config: RetentionConfig =
            toml::from_str("raw = \"1h\"\ninterval = \"10s\"").expect("a retention config");
        assert_eq!(config.raw, Duration::from_secs(3600));
        assert_eq!(config.rollups, RetentionConfig::default().rollups);
        assert!(config.enabled);
        let zero: RetentionConfig = toml::from_str("raw = \"0s\"").expect("parses");
        assert_eq!(zero.problems().len(), 1);
        let unknown = toml::from_str::<RetentionConfig>("logs = \"1d\"");
        assert!(unknown.is_err_and(|e| e.to_string().contains("logs")));
    }
}
