//! One reader for the tables the `sqlite` and `mysql` sinks write: the queries (both stores
//! take `?` placeholders), their parameters and the decoding of their rows
//! (`sqlx::FromRow` on the answer types) are shared; a store is only its pool and how its
//! errors read (`sqlite.rs`, `mysql.rs`).
//!
//! The two pools are an enum, matched in one place ([`SqlReader::fetch`]), rather than a
//! reader generic over `sqlx::Database`: running a query generically takes bounds on sqlx's
//! executor, encoding and decoding traits for every type bound or read, repeated on every
//! method, which say more about sqlx than about the queries; sqlx's `Any` driver would erase
//! the types instead, converting every value at run time and needing its drivers installed.

use sqlx::mysql::{MySql, MySqlPool, MySqlRow};
use sqlx::query::QueryAs;
use sqlx::sqlite::{Sqlite, SqlitePool, SqliteRow};
use sqlx::{AssertSqlSafe, Database, Encode, FromRow, SqlSafeStr, Type};

use super::{AppActivity, AppEventRow, LogLine, LogPage, LogQuery, MetricPoint};
use super::{mysql, sqlite};
use crate::ApiError;
use crate::params::{Cursor, TimeRange};

/// The pool of a SQL store.
#[derive(Debug)]
pub(super) enum SqlPool {
    Sqlite(SqlitePool),
    Mysql(MySqlPool),
}

/// Reads a SQL store's tables.
#[derive(Debug)]
pub(super) struct SqlReader {
    pool: SqlPool,
    /// What messages name: the file, or `host:port/database` (never the credentials).
    store: String,
}

/// A value bound to a `?`.
#[derive(Debug, Clone, Copy)]
enum Param<'a> {
    Text(&'a str),
    Int(i64),
}

/// Every app with rollups, and what the directory (the `app` table, SPEC §11) calls it.
const APPS_SQL: &str = "SELECT r.app_id, r.last_activity, a.name, a.space_id, a.space_name, \
     a.org_id, a.org_name \
     FROM (SELECT app_id, MAX(minute) AS last_activity FROM app_metric_rollup GROUP BY app_id) r \
     LEFT JOIN app a ON a.app_id = r.app_id ORDER BY r.app_id";

/// The rollup columns after `minute`, in table order.
const ROLLUP_COLUMNS: &str = "minute, instances, cpu_avg, cpu_max, memory_avg, \
     memory_max, disk_avg, disk_max, requests, status_2xx, status_3xx, status_4xx, status_5xx, \
     response_bytes, latency_avg_ms, latency_max_ms, latency_p50_ms, latency_p95_ms, \
     latency_p99_ms, log_lines, log_err_lines, app_events";

/// An app's rollups of `[from, to)` from `table` (a name the API made, never user input).
fn rollups_sql(table: &str) -> String {
    format!(
        "SELECT {ROLLUP_COLUMNS} FROM {table} \
         WHERE app_id = ? AND minute >= ? AND minute < ? ORDER BY minute"
    )
}

const EVENTS_SQL: &str = "SELECT ts, event, source_type, source_instance, message \
     FROM app_event WHERE app_id = ? AND ts >= ? AND ts < ? ORDER BY ts, event";

impl SqlReader {
    /// A reader over `pool`; `store` names it in messages.
    pub(super) fn new(pool: SqlPool, store: String) -> SqlReader {
        SqlReader { pool, store }
    }

    /// Every app with rollups and its latest rollup minute, sorted by id.
    pub(super) async fn apps(&self) -> Result<Vec<AppActivity>, ApiError> {
        self.fetch(APPS_SQL, &[]).await
    }

    /// The app's rows of `range` from the rollup table `table`, ascending.
    pub(super) async fn rollups(
        &self,
        table: &str,
        app_id: &str,
        range: TimeRange,
    ) -> Result<Vec<MetricPoint>, ApiError> {
        let params = [
            Param::Text(app_id),
            Param::Int(range.from),
            Param::Int(range.to),
        ];
        self.fetch(AssertSqlSafe(rollups_sql(table)), &params).await
    }

    /// The app's events of `range`, ascending.
    pub(super) async fn events(
        &self,
        app_id: &str,
        range: TimeRange,
    ) -> Result<Vec<AppEventRow>, ApiError> {
        let (from, to) = range.ns();
        let params = [Param::Text(app_id), Param::Int(from), Param::Int(to)];
        self.fetch(EVENTS_SQL, &params).await
    }

    /// Newest first by (ts, id), walking the (app_id, ts) index backwards from the cursor and
    /// testing each line's message against the terms: a page costs the lines it skips, so a
    /// rare term over a long range reads much of the range (see the API benchmark). SQLite's
    /// SQL (`LIKE … ESCAPE '\'`): only a SQLite store is read for logs.
    pub(super) async fn logs(&self, query: LogQuery<'_>) -> Result<LogPage, ApiError> {
        let (from, to) = query.range.ns();
        let mut sql = String::from(
            "SELECT id, ts, source_type, source_instance, message_type, message \
             FROM log_message WHERE app_id = ? AND ts >= ? AND ts < ?",
        );
        let mut params = vec![Param::Text(query.app_id), Param::Int(from), Param::Int(to)];
        if let Some(cursor) = &query.cursor {
            // `ts <= ?` alone lets SQLite bound the index range; the OR picks the exact place.
            sql.push_str(" AND ts <= ? AND (ts < ? OR id < ?)");
            params.extend([
                Param::Int(cursor.time),
                Param::Int(cursor.time),
                Param::Text(&cursor.id),
            ]);
        }
        let terms = query.terms.unwrap_or_default();
        let patterns: Vec<String> = terms
            .iter()
            .map(|term| format!("%{}%", escape_like(term)))
            .collect();
        for pattern in &patterns {
            // LIKE is case-insensitive for ASCII letters (SQLite's default, no ICU).
            sql.push_str(" AND message LIKE ? ESCAPE '\\'");
            params.push(Param::Text(pattern));
        }
        sql.push_str(" ORDER BY ts DESC, id DESC LIMIT ?");
        // One more than the page: whether there is a next page, without counting.
        params.push(Param::Int(query.limit as i64 + 1));
        let mut logs: Vec<LogLine> = self.fetch(AssertSqlSafe(sql), &params).await?;
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

    /// Runs `sql` with `params` bound in order and decodes every row it returns.
    async fn fetch<T>(&self, sql: impl SqlSafeStr, params: &[Param<'_>]) -> Result<Vec<T>, ApiError>
    where
        T: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, MySqlRow> + Send + Unpin,
    {
        match &self.pool {
            SqlPool::Sqlite(pool) => bind::<Sqlite, T>(sqlx::query_as(sql), params)
                .fetch_all(pool)
                .await
                .map_err(|e| sqlite::error(&self.store, e)),
            SqlPool::Mysql(pool) => bind::<MySql, T>(sqlx::query_as(sql), params)
                .fetch_all(pool)
                .await
                .map_err(|e| mysql::error(&self.store, e)),
        }
    }
}

/// `query` with `params` bound in order.
fn bind<'q, DB, T>(
    mut query: QueryAs<'q, DB, T, DB::Arguments>,
    params: &[Param<'q>],
) -> QueryAs<'q, DB, T, DB::Arguments>
where
    DB: Database,
    &'q str: Encode<'q, DB> + Type<DB>,
    i64: Encode<'q, DB> + Type<DB>,
{
    for param in params {
        query = match *param {
            Param::Text(text) => query.bind(text),
            Param::Int(n) => query.bind(n),
        };
    }
    query
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
