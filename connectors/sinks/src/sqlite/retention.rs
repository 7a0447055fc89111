//! Retention in SQLite (SPEC §10, see `crate::retention`). SQLite has one writer, so deleting
//! happens on the sink's own connection between two write transactions: after a flush, when
//! `interval` has passed or expired rows were left over, each table loses its oldest rows in
//! slices of about `batch_size` (each slice a range delete on the table's time index, its own
//! short transaction), up to twice the rows the flush wrote, so retention keeps up with
//! ingestion and never holds it for more than about a batch.
//!
//! A slice finds the time of the `batch_size`-th oldest expired row through the time index
//! and deletes every row up to it (`DELETE … WHERE time <= ?`): one index range, the same
//! statement for rowid and `WITHOUT ROWID` tables, and never a scan of what is kept.
//!
//! Deleted pages go to the file's freelist and later inserts take them from there, so once
//! retention is in steady state the file stops growing without `VACUUM` (measured in the
//! sink's tests; see the README's "Retention" section).

use std::time::Instant;

use sqlx::AssertSqlSafe;
use sqlx::sqlite::SqliteConnection;
use tracing::{debug, info, warn};

use crate::retention::{RetentionConfig, has_history, time_column};
use crate::rows::Table;
use sluice_common::telemetry::SinkMetrics;

/// The statements and progress of one sink's retention.
pub(super) struct Retention {
    config: RetentionConfig,
    tables: Vec<TableRetention>,
    /// When expired rows were last looked for; `None` before the first time.
    checked: Option<Instant>,
    /// Some table had more expired rows than the last round deleted.
    backlog: bool,
}

struct TableRetention {
    table: &'static Table,
    /// The time of the `n`-th oldest expired row (`?1` cutoff, `?2` n − 1).
    boundary: String,
    /// Deletes every row at or before a time.
    delete_through: String,
    /// Deletes every row before the cutoff.
    delete_before: String,
}

impl Retention {
    pub(super) fn new(config: RetentionConfig, tables: &[&'static Table]) -> Retention {
        let tables = tables
            .iter()
            .filter(|table| has_history(table))
            .map(|table| {
                let (name, column) = (table.name, time_column(table));
                TableRetention {
                    table,
                    boundary: format!(
                        "SELECT {column} FROM {name} WHERE {column} < ?1 \
                         ORDER BY {column} LIMIT 1 OFFSET ?2"
                    ),
                    delete_through: format!("DELETE FROM {name} WHERE {column} <= ?1"),
                    delete_before: format!("DELETE FROM {name} WHERE {column} < ?1"),
                }
            })
            .collect();
        Retention {
            config,
            tables,
            checked: None,
            backlog: false,
        }
    }

    /// The index each table's deletes go through (`CREATE INDEX IF NOT EXISTS`).
    pub(super) fn index_ddl(table: &Table) -> String {
        let column = time_column(table);
        format!(
            "CREATE INDEX IF NOT EXISTS {name}_{column} ON {name} ({column})",
            name = table.name
        )
    }

    /// Whether a round is due after a flush.
    fn due(&self) -> bool {
        self.config.enabled
            && (self.backlog
                || self
                    .checked
                    .is_none_or(|at| at.elapsed() >= self.config.interval))
    }

    /// After a flush of `written` rows: one round if due, deleting up to about twice
    /// `written` rows per table (at least a slice). Failures are logged and retried at the
    /// next interval; they never stop the sink.
    pub(super) async fn after_flush(
        &mut self,
        connection: &mut SqliteConnection,
        watermark: Option<i64>,
        written: usize,
        sink: &str,
        metrics: &SinkMetrics,
    ) {
        if !self.due() {
            return;
        }
        let Some(watermark) = watermark else {
            return;
        };
        let budget = (2 * written).max(self.config.batch_size.get()) as u64;
        self.round(connection, watermark, budget, sink, metrics)
            .await;
    }

    /// At the end of a finite run: deletes everything expired at the final watermark.
    pub(super) async fn finish(
        &mut self,
        connection: &mut SqliteConnection,
        watermark: Option<i64>,
        sink: &str,
        metrics: &SinkMetrics,
    ) {
        let Some(watermark) = watermark.filter(|_| self.config.enabled) else {
            return;
        };
        self.backlog = true;
        while self.backlog {
            if !self
                .round(connection, watermark, u64::MAX, sink, metrics)
                .await
            {
                return;
            }
        }
    }

    /// Deletes up to `budget` expired rows per table; says whether it went without error.
    async fn round(
        &mut self,
        connection: &mut SqliteConnection,
        watermark: i64,
        budget: u64,
        sink: &str,
        metrics: &SinkMetrics,
    ) -> bool {
        self.checked = Some(Instant::now());
        let mut backlog = false;
        let mut deleted = 0;
        for table in &self.tables {
            match table
                .delete(connection, &self.config, watermark, budget)
                .await
            {
                Ok((rows, left)) => {
                    if rows > 0 {
                        metrics.retention_deleted(table.table.name, rows);
                    }
                    deleted += rows;
                    backlog |= left;
                }
                Err(error) => {
                    metrics.retries.incr();
                    warn!(%sink, table = table.table.name, %error,
                        "Retention: cannot delete expired rows; trying again next interval.");
                    self.backlog = false;
                    return false;
                }
            }
        }
        self.backlog = backlog;
        if deleted > 0 {
            info!(%sink, rows = deleted, backlog, "Retention: deleted expired rows.");
        } else {
            debug!(%sink, "Retention: nothing to delete.");
        }
        true
    }
}

impl TableRetention {
    /// Deletes slices of expired rows until none is left or `budget` rows are gone; returns
    /// the rows deleted and whether expired rows are left.
    async fn delete(
        &self,
        connection: &mut SqliteConnection,
        config: &RetentionConfig,
        watermark: i64,
        budget: u64,
    ) -> Result<(u64, bool), sqlx::Error> {
        let cutoff = config.cutoff(self.table, watermark);
        let slice = config.batch_size.get() as i64;
        let mut deleted = 0;
        while deleted < budget {
            let boundary: Option<i64> = sqlx::query_scalar(AssertSqlSafe(self.boundary.as_str()))
                .bind(cutoff)
                .bind(slice - 1)
                .fetch_optional(&mut *connection)
                .await?;
            let result = match boundary {
                Some(time) => {
                    sqlx::query(AssertSqlSafe(self.delete_through.as_str()))
                        .bind(time)
                        .execute(&mut *connection)
                        .await?
                }
                None => {
                    let result = sqlx::query(AssertSqlSafe(self.delete_before.as_str()))
                        .bind(cutoff)
                        .execute(&mut *connection)
                        .await?;
                    return Ok((deleted + result.rows_affected(), false));
                }
            };
            deleted += result.rows_affected();
        }
        Ok((deleted, true))
    }
}

/// The statements of a sink's retention, for the tests of this module.
#[cfg(test)]
pub(super) fn statements(table: &'static Table) -> [String; 3] {
    let r = Retention::new(RetentionConfig::default(), &[table]);
    let t = &r.tables[0];
    [
        t.boundary.clone(),
        t.delete_through.clone(),
        t.delete_before.clone(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows;
    use sluice_model::records::StreamName;

    #[test]
    fn slices_are_ranges_of_the_time_index() {
        let [boundary, through, before] = statements(rows::table(StreamName::Http));
        assert_eq!(
            boundary,
            "SELECT stop_ts FROM http_start_stop WHERE stop_ts < ?1 ORDER BY stop_ts LIMIT 1 OFFSET ?2"
        );
        assert_eq!(through, "DELETE FROM http_start_stop WHERE stop_ts <= ?1");
        assert_eq!(before, "DELETE FROM http_start_stop WHERE stop_ts < ?1");
        assert_eq!(
            Retention::index_ddl(rows::window_table(StreamName::AppRollups, 3600)),
            "CREATE INDEX IF NOT EXISTS app_metric_rollup_1h_minute ON app_metric_rollup_1h (minute)"
        );
    }
}
