//! Reads of the `sqlite` sink's file, opened read-only: in WAL mode readers and the sink's
//! writer do not block each other.

use std::path::PathBuf;
use std::time::Duration;

use sluice_sinks::sqlite::SqliteSinkConfig;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, Row};
use tracing::warn;

use super::rows::{self, APPS_SQL, EVENTS_SQL};
use super::{AppActivity, AppEventRow, LogLine, LogPage, LogQuery, MetricPoint};
use crate::ApiError;
use crate::params::{Cursor, TimeRange};

/// Readers at most: SQLite serves reads in parallel, the machine's cores bound the benefit.
const CONNECTIONS: u32 = 4;

#[derive(Debug)]
pub(super) struct SqliteReader {
    path: PathBuf,
    pool: SqlitePool,
}

impl SqliteReader {
    /// A pool that opens the file on first use: the sink may not have created it yet.
    pub(super) fn open(config: &SqliteSinkConfig) -> SqliteReader {
        let options = SqliteConnectOptions::new()
            .filename(&config.path)
            .read_only(true)
            .busy_timeout(config.busy_timeout);
        let pool = SqlitePoolOptions::new()
            .max_connections(CONNECTIONS)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(options);
        SqliteReader {
            path: config.path.clone(),
            pool,
        }
    }

    fn error(&self, error: sqlx::Error) -> ApiError {
        let path = self.path.display();
        let message = error.to_string();
        if message.contains("no such table") {
            ApiError::unavailable(format!(
                "the SQLite store {path} has no tables yet (the sqlite sink creates them): {message}"
            ))
        } else if matches!(error, sqlx::Error::Database(_))
            && !message.contains("unable to open")
            && !message.contains("locked")
            && !message.contains("busy")
        {
            warn!(%path, error = %message, "A query of the SQLite store failed.");
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading the SQLite store {path} failed: {message}"),
            )
        } else {
            ApiError::unavailable(format!("the SQLite store {path} cannot be read: {message}"))
        }
    }

    pub(super) async fn apps(&self) -> Result<Vec<AppActivity>, ApiError> {
        let rows = sqlx::query(APPS_SQL)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        rows.iter()
            .map(rows::app_activity)
            .collect::<Result<_, _>>()
            .map_err(|e| self.error(e))
    }

    pub(super) async fn rollups(
        &self,
        table: &str,
        app_id: &str,
        range: TimeRange,
    ) -> Result<Vec<MetricPoint>, ApiError> {
        let rows = sqlx::query(AssertSqlSafe(rows::rollups_sql(table)))
            .bind(app_id)
            .bind(range.from)
            .bind(range.to)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        rows.iter()
            .map(rows::metric_point)
            .collect::<Result<_, _>>()
            .map_err(|e| self.error(e))
    }

    pub(super) async fn events(
        &self,
        app_id: &str,
        range: TimeRange,
    ) -> Result<Vec<AppEventRow>, ApiError> {
        let (from, to) = range.ns();
        let rows = sqlx::query(EVENTS_SQL)
            .bind(app_id)
            .bind(from)
            .bind(to)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        rows.iter()
            .map(rows::app_event)
            .collect::<Result<_, _>>()
            .map_err(|e| self.error(e))
    }

    /// Newest first by (ts, id), walking the (app_id, ts) index backwards from the cursor and
    /// testing each line's message against the terms: a page costs the lines it skips, so a
    /// rare term over a long range reads much of the range (see the API benchmark).
    pub(super) async fn logs(&self, query: LogQuery<'_>) -> Result<LogPage, ApiError> {
        let (from, to) = query.range.ns();
        let mut sql = String::from(
            "SELECT id, ts, source_type, source_instance, message_type, message \
             FROM log_message WHERE app_id = ? AND ts >= ? AND ts < ?",
        );
        if query.cursor.is_some() {
            // `ts <= ?` alone lets SQLite bound the index range; the OR picks the exact place.
            sql.push_str(" AND ts <= ? AND (ts < ? OR id < ?)");
        }
        let terms = query.terms.unwrap_or_default();
        for _ in terms {
            // LIKE is case-insensitive for ASCII letters (SQLite's default, no ICU).
            sql.push_str(" AND message LIKE ? ESCAPE '\\'");
        }
        sql.push_str(" ORDER BY ts DESC, id DESC LIMIT ?");
        let mut select = sqlx::query(AssertSqlSafe(sql))
            .bind(query.app_id)
            .bind(from)
            .bind(to);
        if let Some(cursor) = &query.cursor {
            select = select
                .bind(cursor.time)
                .bind(cursor.time)
                .bind(cursor.id.clone());
        }
        for term in terms {
            select = select.bind(format!("%{}%", escape_like(term)));
        }
        // One more than the page: whether there is a next page, without counting.
        let rows = select
            .bind(query.limit as i64 + 1)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        let mut logs = rows
            .iter()
            .map(|row| {
                Ok(LogLine {
                    id: row.try_get("id")?,
                    time_ns: row.try_get("ts")?,
                    source_type: row.try_get("source_type")?,
                    source_instance: row.try_get("source_instance")?,
                    message_type: row.try_get("message_type")?,
                    message: row.try_get("message")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(|e| self.error(e))?;
        let next_cursor = if logs.len() > query.limit {
            logs.truncate(query.limit);
            logs.last().map(|last| {
                Cursor {
                    time: last.time_ns,
                    id: last.id.clone(),
                }
                .encode()
            })
        } else {
            None
        };
        Ok(LogPage { logs, next_cursor })
    }
}

/// `term` matched literally by LIKE: `%`, `_` and the escape character escaped.
fn escape_like(term: &str) -> String {
    let mut out = String::with_capacity(term.len());
    for c in term.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(escape_like("50%_a\\b"), "50\\%\\_a\\\\b");
        assert_eq!(escape_like("plain"), "plain");
    }
}
