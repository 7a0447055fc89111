//! Retention in MySQL (SPEC §10, see `crate::retention`): a background task on the pool
//! deletes expired rows with `DELETE … WHERE time < cutoff LIMIT batch_size`, statement after
//! statement while some are left, then looks again every `interval`. Each statement is its
//! own short transaction on an indexed time column, so the row locks and undo it holds last a
//! slice while the sink keeps writing on the other connections.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use sqlx::AssertSqlSafe;
use sqlx::mysql::MySqlPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::read_watermark;
use crate::retention::{RetentionConfig, has_history, time_column};
use crate::rows::Table;
use sluice_common::telemetry::SinkMetrics;

/// What the task needs.
pub(super) struct Retention {
    pub(super) config: RetentionConfig,
    pub(super) pool: MySqlPool,
    pub(super) tables: Vec<&'static Table>,
    pub(super) sink: Arc<str>,
    pub(super) metrics: Arc<SinkMetrics>,
    pub(super) watermark: Arc<AtomicI64>,
}

/// The running retention task.
pub(super) struct RetentionTask {
    stop: CancellationToken,
    task: Option<JoinHandle<Retention>>,
}

impl RetentionTask {
    /// Stops the task between two statements and waits for it; gives back what it ran on.
    pub(super) async fn stop(self) -> Option<Retention> {
        self.stop.cancel();
        self.task?.await.ok()
    }
}

impl Retention {
    /// Starts the task (unless retention is disabled). It stops at shutdown or on
    /// [`RetentionTask::stop`].
    pub(super) fn spawn(self, shutdown: &CancellationToken) -> RetentionTask {
        let stop = shutdown.child_token();
        if !self.config.enabled {
            return RetentionTask { stop, task: None };
        }
        let token = stop.clone();
        let task = tokio::spawn(async move {
            loop {
                self.pass(&token).await;
                tokio::select! {
                    () = tokio::time::sleep(self.config.interval) => {}
                    () = token.cancelled() => return self,
                }
            }
        });
        RetentionTask {
            stop,
            task: Some(task),
        }
    }

    /// One pass over every table, logged; errors are retried at the next pass.
    pub(super) async fn pass(&self, stop: &CancellationToken) {
        if !self.config.enabled {
            return;
        }
        let sink = &self.sink;
        match self.delete_expired(stop).await {
            Ok(0) => debug!(%sink, "Retention: nothing to delete."),
            Ok(rows) => info!(%sink, rows, "Retention: deleted expired rows."),
            Err(error) => {
                self.metrics.retries.incr();
                warn!(%sink, %error, "Retention: cannot delete expired rows; trying again next interval.");
            }
        }
    }

    /// Deletes every row older than its table's cutoff at the current watermark, a slice at
    /// a time; returns the rows deleted. Nothing before the first record.
    async fn delete_expired(&self, stop: &CancellationToken) -> Result<u64, sqlx::Error> {
        let Some(watermark) = read_watermark(&self.watermark) else {
            return Ok(0);
        };
        let limit = self.config.batch_size.get() as u64;
        let mut deleted = 0;
        for table in self.tables.iter().filter(|table| has_history(table)) {
            let cutoff = self.config.cutoff(table, watermark);
            let sql = retention_sql(table);
            loop {
                if stop.is_cancelled() {
                    return Ok(deleted);
                }
                let result = sqlx::query(AssertSqlSafe(sql.as_str()))
                    .bind(cutoff)
                    .bind(limit)
                    .execute(&self.pool)
                    .await?;
                let rows = result.rows_affected();
                if rows > 0 {
                    self.metrics.retention_deleted(table.name, rows);
                }
                deleted += rows;
                if rows < limit {
                    break;
                }
            }
        }
        Ok(deleted)
    }
}

/// Deletes at most `limit` rows of `table` older than `cutoff`: small batches keep each
/// transaction (and the locks and undo it holds) short while the sink keeps writing.
fn retention_sql(table: &Table) -> String {
    let column = time_column(table);
    format!("DELETE FROM {} WHERE {column} < ? LIMIT ?", table.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows;
    use sluice_model::records::StreamName;

    #[test]
    fn deletes_go_by_each_tables_time_column() {
        assert_eq!(
            retention_sql(rows::table(StreamName::Http)),
            "DELETE FROM http_start_stop WHERE stop_ts < ? LIMIT ?"
        );
        assert_eq!(
            retention_sql(rows::window_table(StreamName::AppRollups, 3600)),
            "DELETE FROM app_metric_rollup_1h WHERE minute < ? LIMIT ?"
        );
    }
}
