//! Retention as PCF Metrics had it: raw rows are kept for `raw` (2 days), rollups of every
//! width for `rollups` (14 days). A background task deletes older rows every `interval`, in
//! batches of `batch_size` so each DELETE holds its locks briefly while the sink keeps writing.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use sqlx::AssertSqlSafe;
use sqlx::mysql::MySqlPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::rows::{Conflict, Table};
use sluice_common::telemetry::SinkMetrics;

/// `retention = { ... }` of a `mysql` sink.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Off, the tables keep everything (for replays of old captures, or an external job).
    pub enabled: bool,
    /// How long raw rows (container metrics, HTTP, app events, errors, logs) are kept.
    #[serde(with = "sluice_common::config::duration")]
    pub raw: Duration,
    /// How long per-minute rollups are kept.
    #[serde(with = "sluice_common::config::duration")]
    pub rollups: Duration,
    /// How often old rows are looked for.
    #[serde(with = "sluice_common::config::duration")]
    pub interval: Duration,
    /// Rows deleted per statement at most.
    pub batch_size: NonZeroUsize,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            enabled: true,
            raw: Duration::from_secs(2 * 24 * 3600),
            rollups: Duration::from_secs(14 * 24 * 3600),
            interval: Duration::from_secs(300),
            batch_size: NonZeroUsize::new(1000).unwrap_or(NonZeroUsize::MIN),
        }
    }
}

/// The running retention task.
pub(super) struct Retention {
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Retention {
    /// Stops the task between two statements and waits for it.
    pub(super) async fn stop(self) {
        self.stop.cancel();
        if let Some(task) = self.task {
            let _ = task.await;
        }
    }
}

/// Starts the task (unless retention is disabled). It stops at shutdown or on [`Retention::stop`].
pub(super) fn spawn(
    config: RetentionConfig,
    pool: MySqlPool,
    tables: Vec<&'static Table>,
    sink: Arc<str>,
    metrics: Arc<SinkMetrics>,
    shutdown: CancellationToken,
) -> Retention {
    let stop = shutdown.child_token();
    if !config.enabled {
        return Retention { stop, task: None };
    }
    let token = stop.clone();
    let task = tokio::spawn(async move {
        loop {
            match delete_expired(&config, &pool, &tables, &token).await {
                Ok(0) => debug!(%sink, "Retention: nothing to delete."),
                Ok(rows) => info!(%sink, rows, "Retention: deleted expired rows."),
                Err(error) => {
                    metrics.retries.incr();
                    warn!(%sink, %error, "Retention: cannot delete expired rows; trying again next interval.");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(config.interval) => {}
                () = token.cancelled() => return,
            }
        }
    });
    Retention {
        stop,
        task: Some(task),
    }
}

/// One pass over every table; returns the rows deleted.
async fn delete_expired(
    config: &RetentionConfig,
    pool: &MySqlPool,
    tables: &[&'static Table],
    stop: &CancellationToken,
) -> Result<u64, sqlx::Error> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut deleted = 0;
    // The directory (`app`) is not history: its rows live as long as their apps.
    for table in tables
        .iter()
        .filter(|t| t.stream != sluice_model::records::StreamName::Apps)
    {
        let cutoff = cutoff(config, table, now);
        let sql = retention_sql(table);
        loop {
            if stop.is_cancelled() {
                return Ok(deleted);
            }
            let result = sqlx::query(AssertSqlSafe(sql.as_str()))
                .bind(cutoff)
                .bind(config.batch_size.get() as u64)
                .execute(pool)
                .await?;
            deleted += result.rows_affected();
            if result.rows_affected() < config.batch_size.get() as u64 {
                break;
            }
        }
    }
    Ok(deleted)
}

/// The column retention compares with a cutoff: nanoseconds in raw tables, epoch seconds
/// (`minute`) in rollups.
fn time_column(table: &Table) -> &'static str {
    match (table.name, table.conflict) {
        ("http_start_stop", _) => "stop_ts",
        (_, Conflict::Update) => "minute",
        _ => "ts",
    }
}

/// Deletes at most `limit` rows of `table` older than `cutoff`: small batches keep each
/// transaction (and the locks and undo it holds) short while the sink keeps writing.
fn retention_sql(table: &Table) -> String {
    let column = time_column(table);
    format!("DELETE FROM {} WHERE {column} < ? LIMIT ?", table.name)
}

/// The oldest time kept in `table`, in the unit of its time column.
fn cutoff(config: &RetentionConfig, table: &Table, now: Duration) -> i64 {
    match table.conflict {
        Conflict::Update => {
            i64::try_from(now.saturating_sub(config.rollups).as_secs()).unwrap_or(i64::MAX)
        }
        Conflict::Ignore | Conflict::Delete => {
            i64::try_from(now.saturating_sub(config.raw).as_nanos()).unwrap_or(i64::MAX)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows;
    use sluice_model::records::StreamName;

    #[test]
    fn cutoffs_use_each_tables_unit() {
        let config = RetentionConfig::default();
        let now = Duration::from_secs(30 * 24 * 3600);
        let raw = cutoff(&config, rows::table(StreamName::ContainerMetrics), now);
        assert_eq!(raw, 28 * 24 * 3600 * 1_000_000_000);
        let rollups = cutoff(&config, rows::table(StreamName::AppRollups), now);
        assert_eq!(rollups, 16 * 24 * 3600);
    }

    #[test]
    fn retention_reads_durations() {
        let config: RetentionConfig =
            toml::from_str("raw = \"1h\"\ninterval = \"10s\"").expect("a retention config");
        assert_eq!(config.raw, Duration::from_secs(3600));
        assert_eq!(config.rollups, RetentionConfig::default().rollups);
        assert!(config.enabled);
    }
}
