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

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use sqlx::mysql::{MySql, MySqlPool, MySqlRow};
use sqlx::query::QueryAs;
use sqlx::sqlite::{Sqlite, SqlitePool, SqliteRow};
use sqlx::{AssertSqlSafe, Database, Encode, FromRow, SqlSafeStr, Type};

use super::{AppActivity, AppEventRow, GroupPoint, LogLine, LogPage, LogQuery, MetricPoint};
use super::{mysql, sqlite};
use crate::ApiError;
use crate::params::{Cursor, TimeRange};
use sluice_model::records::GroupKind;

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
    /// How long one query may run (`api.limits.query_timeout`).
    timeout: Duration,
}

/// SQLite virtual-machine instructions between two looks at a query's budget: a few
/// microseconds of work, so a query is stopped within milliseconds of its deadline.
const PROGRESS_OPS: i32 = 4000;

/// Sets its flag when dropped: the request's future was dropped (the client left) or the
/// query ended, and the connection's progress handler stops whatever still runs.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
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

/// An app's minutes of `[from, to)` merged into buckets of `step` seconds aligned to the
/// epoch (as the window tables are), by the database as it reads them: the answer is a row
/// per bucket, whatever the minutes behind it. Counts summed (cast: MySQL sums to DECIMAL);
/// `latency_avg_ms` weighted by requests; the other averages the mean of the minutes that have
/// one (the tables keep no sample counts); maxima, percentiles and `instances` the maximum
/// over the minutes (a percentile of the bucket is at most that, the only bound the minute
/// rows give). Parameters: step, app_id, from, to.
const MERGED_MINUTES_SQL: &str = "SELECT minute - minute % ? AS minute, \
     MAX(instances) AS instances, \
     AVG(cpu_avg) AS cpu_avg, MAX(cpu_max) AS cpu_max, \
     AVG(memory_avg) AS memory_avg, MAX(memory_max) AS memory_max, \
     AVG(disk_avg) AS disk_avg, MAX(disk_max) AS disk_max, \
     CAST(SUM(requests) AS SIGNED) AS requests, \
     CAST(SUM(status_2xx) AS SIGNED) AS status_2xx, \
     CAST(SUM(status_3xx) AS SIGNED) AS status_3xx, \
     CAST(SUM(status_4xx) AS SIGNED) AS status_4xx, \
     CAST(SUM(status_5xx) AS SIGNED) AS status_5xx, \
     CAST(SUM(response_bytes) AS SIGNED) AS response_bytes, \
     SUM(CASE WHEN requests > 0 THEN latency_avg_ms * requests END) \
       / SUM(CASE WHEN requests > 0 AND latency_avg_ms IS NOT NULL THEN requests END) \
       AS latency_avg_ms, \
     MAX(latency_max_ms) AS latency_max_ms, MAX(latency_p50_ms) AS latency_p50_ms, \
     MAX(latency_p95_ms) AS latency_p95_ms, MAX(latency_p99_ms) AS latency_p99_ms, \
     CAST(SUM(log_lines) AS SIGNED) AS log_lines, \
     CAST(SUM(log_err_lines) AS SIGNED) AS log_err_lines, \
     CAST(SUM(app_events) AS SIGNED) AS app_events \
     FROM app_metric_rollup WHERE app_id = ? AND minute >= ? AND minute < ? \
     GROUP BY 1 ORDER BY 1";

/// A space's or an org's minutes of `[from, to)` (SPEC §11's `space_metric_rollup`,
/// `org_metric_rollup`) in buckets of `step` seconds aligned to the epoch, merged by the
/// database as [`MERGED_MINUTES_SQL`] merges an app's: counts summed, `apps` and `instances`
/// the maximum over the minutes, the totals (gauges) the mean of the minutes that have one. A
/// bucket of one minute is that minute's row. Parameters: step, group id, from, to.
fn group_minutes_sql(kind: GroupKind) -> String {
    let (table, id) = match kind {
        GroupKind::Space => ("space_metric_rollup", "space_id"),
        GroupKind::Org => ("org_metric_rollup", "org_id"),
    };
    format!(
        "SELECT minute - minute % ? AS minute, \
         MAX(apps) AS apps, MAX(instances) AS instances, \
         CAST(SUM(requests) AS SIGNED) AS requests, \
         CAST(SUM(status_2xx) AS SIGNED) AS status_2xx, \
         CAST(SUM(status_3xx) AS SIGNED) AS status_3xx, \
         CAST(SUM(status_4xx) AS SIGNED) AS status_4xx, \
         CAST(SUM(status_5xx) AS SIGNED) AS status_5xx, \
         CAST(SUM(log_lines) AS SIGNED) AS log_lines, \
         CAST(SUM(log_err_lines) AS SIGNED) AS log_err_lines, \
         CAST(SUM(app_events) AS SIGNED) AS app_events, \
         AVG(cpu_total) AS cpu_total, AVG(memory_bytes_total) AS memory_bytes_total, \
         AVG(disk_bytes_total) AS disk_bytes_total \
         FROM {table} WHERE {id} = ? AND minute >= ? AND minute < ? \
         GROUP BY 1 ORDER BY 1"
    )
}

const EVENTS_SQL: &str = "SELECT ts, event, source_type, source_instance, message \
     FROM app_event WHERE app_id = ? AND ts >= ? AND ts < ? ORDER BY ts, event LIMIT ?";

impl SqlReader {
    /// A reader over `pool`; `store` names it in messages.
    pub(super) fn new(pool: SqlPool, store: String, timeout: Duration) -> SqlReader {
        SqlReader {
            pool,
            store,
            timeout,
        }
    }

    /// Every app with rollups and its latest rollup minute, sorted by id.
    pub(super) async fn apps(&self) -> Result<Vec<AppActivity>, ApiError> {
        self.fetch(APPS_SQL, &[]).await
    }

    /// The app's rows of `range` from the rollup table `table`, ascending, handed to `each`
    /// as they are read (never all held at once).
    pub(super) async fn rollups(
        &self,
        table: &str,
        app_id: &str,
        range: TimeRange,
        each: impl FnMut(MetricPoint) -> Result<(), ApiError> + Send,
    ) -> Result<(), ApiError> {
        let params = [
            Param::Text(app_id),
            Param::Int(range.from),
            Param::Int(range.to),
        ];
        self.for_each(AssertSqlSafe(rollups_sql(table)), &params, each)
            .await
    }

    /// The app's minutes of `range` merged into buckets of `step` seconds (see
    /// [`MERGED_MINUTES_SQL`]), ascending, handed to `each` as they are read.
    pub(super) async fn merged_minutes(
        &self,
        app_id: &str,
        range: TimeRange,
        step: i64,
        each: impl FnMut(MetricPoint) -> Result<(), ApiError> + Send,
    ) -> Result<(), ApiError> {
        let params = [
            Param::Int(step),
            Param::Text(app_id),
            Param::Int(range.from),
            Param::Int(range.to),
        ];
        self.for_each(MERGED_MINUTES_SQL, &params, each).await
    }

    /// The group's minutes of `range` in buckets of `step` seconds (see
    /// [`group_minutes_sql`]), ascending, handed to `each` as they are read.
    pub(super) async fn group_minutes(
        &self,
        kind: GroupKind,
        group_id: &str,
        range: TimeRange,
        step: i64,
        each: impl FnMut(GroupPoint) -> Result<(), ApiError> + Send,
    ) -> Result<(), ApiError> {
        let params = [
            Param::Int(step),
            Param::Text(group_id),
            Param::Int(range.from),
            Param::Int(range.to),
        ];
        self.for_each(AssertSqlSafe(group_minutes_sql(kind)), &params, each)
            .await
    }

    /// The app's events of `range`, ascending; at most `max` (400 beyond it).
    pub(super) async fn events(
        &self,
        app_id: &str,
        range: TimeRange,
        max: usize,
    ) -> Result<Vec<AppEventRow>, ApiError> {
        let (from, to) = range.ns();
        let params = [
            Param::Text(app_id),
            Param::Int(from),
            Param::Int(to),
            Param::Int(i64::try_from(max).unwrap_or(i64::MAX).saturating_add(1)),
        ];
        let events: Vec<AppEventRow> = self.fetch(EVENTS_SQL, &params).await?;
        if events.len() > max {
            return Err(ApiError::bad_request(format!(
                "from, to: the range holds more than {max} events, the most one answer carries \
                 (api.limits.max_events): ask for a shorter range"
            )));
        }
        Ok(events)
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
        let mut rows = Vec::new();
        self.for_each(sql, params, |row| {
            rows.push(row);
            Ok(())
        })
        .await?;
        Ok(rows)
    }

    /// Runs `sql` with `params` bound in order, handing each row to `each` as it is read (an
    /// error from `each` stops the query), within the query budget: SQLite's progress
    /// handler stops the statement at the deadline or as soon as this future is dropped
    /// (the client left); MySQL's sessions carry a server-side statement time limit (see
    /// `mysql.rs`).
    async fn for_each<T>(
        &self,
        sql: impl SqlSafeStr,
        params: &[Param<'_>],
        mut each: impl FnMut(T) -> Result<(), ApiError> + Send,
    ) -> Result<(), ApiError>
    where
        T: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, MySqlRow> + Send + Unpin,
    {
        match &self.pool {
            SqlPool::Sqlite(pool) => {
                let error = |e| sqlite::error(&self.store, e, self.timeout);
                let mut connection = pool.acquire().await.map_err(error)?;
                let stop = Arc::new(AtomicBool::new(false));
                let deadline = Instant::now() + self.timeout;
                {
                    let stop = stop.clone();
                    let mut handle = connection.lock_handle().await.map_err(error)?;
                    handle.set_progress_handler(PROGRESS_OPS, move || {
                        !stop.load(Ordering::Relaxed) && Instant::now() < deadline
                    });
                }
                let _stop = CancelOnDrop(stop);
                let mut rows =
                    bind::<Sqlite, T>(sqlx::query_as(sql), params).fetch(&mut *connection);
                while let Some(row) = rows.try_next().await.map_err(error)? {
                    each(row)?;
                }
                Ok(())
            }
            SqlPool::Mysql(pool) => {
                let error = |e| mysql::error(&self.store, e, self.timeout);
                let mut rows = bind::<MySql, T>(sqlx::query_as(sql), params).fetch(pool);
                while let Some(row) = rows.try_next().await.map_err(error)? {
                    each(row)?;
                }
                Ok(())
            }
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
    use crate::limits::ApiLimits;
    use axum::http::StatusCode;
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

    /// Returns nothing and never ends: counts up for ever looking for a negative number.
    const ENDLESS: &str = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) \
         SELECT x FROM c WHERE x < 0";

    async fn sqlite_reader(dir: &tempfile::TempDir, timeout: Duration) -> (SqlReader, SqlitePool) {
        let path = dir.path().join("reader.db");
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_millis(500))
            .connect_with(options)
            .await
            .expect("a SQLite file");
        let reader = SqlReader::new(
            SqlPool::Sqlite(pool.clone()),
            path.display().to_string(),
            timeout,
        );
        (reader, pool)
    }

    async fn run(reader: &SqlReader, sql: &'static str) -> Result<Vec<(i64,)>, ApiError> {
        // A test that hangs fails instead.
        tokio::time::timeout(Duration::from_secs(120), reader.fetch(sql, &[]))
            .await
            .expect("the query returns")
    }

    #[tokio::test]
    async fn a_sqlite_query_out_of_time_is_stopped_with_a_503_naming_the_budget() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (reader, _pool) = sqlite_reader(&dir, Duration::from_millis(200)).await;
        let error = run(&reader, ENDLESS).await.expect_err("stopped");
        assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE, "{error}");
        assert!(
            error.message.contains("api.limits.query_timeout"),
            "{}",
            error.message
        );
        // The connection is clean for the next query, under a new budget.
        assert_eq!(run(&reader, "SELECT 7").await, Ok(vec![(7,)]));
    }

    #[tokio::test]
    async fn a_sqlite_query_whose_client_left_is_stopped_and_frees_its_connection() {
        let dir = tempfile::tempdir().expect("temp dir");
        // A budget far beyond the test: only the client leaving can stop the query.
        let (reader, pool) = sqlite_reader(&dir, Duration::from_secs(3600)).await;
        let reader = Arc::new(reader);
        let running = reader.clone();
        let request = tokio::spawn(async move { run(&running, ENDLESS).await });
        // The only connection is taken by the endless query.
        let deadline = Instant::now() + Duration::from_secs(60);
        while pool.num_idle() > 0 || pool.size() == 0 {
            assert!(Instant::now() < deadline, "the query never started");
            tokio::task::yield_now().await;
        }
        request.abort();
        let _ = request.await;
        // The one connection serves the next query: the endless one was stopped.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match run(&reader, "SELECT 7").await {
                Ok(rows) => {
                    assert_eq!(rows, vec![(7,)]);
                    break;
                }
                Err(e) => {
                    assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE, "{e}");
                    assert!(
                        Instant::now() < deadline,
                        "the connection stayed taken: {e}"
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn a_mysql_query_out_of_time_is_stopped_by_the_server() {
        let db = sluice_test_support::mariadb::TestDatabase::shared("api_budget");
        let mut server =
            sluice_test_support::mariadb::connect(&sluice_test_support::mariadb::server_url())
                .await;
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE `{}`", db.name)))
            .execute(&mut server)
            .await
            .expect("a test database");
        let config = sluice_sinks::mysql::MysqlSinkConfig::new(db.url(), Vec::new());
        let limits = ApiLimits {
            query_timeout: Duration::from_millis(300),
            ..ApiLimits::default()
        };
        let reader = mysql::open(&config, &limits).expect("a valid URL");
        let error = run(&reader, "SELECT SLEEP(30)").await.expect_err("stopped");
        assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE, "{error}");
        assert!(
            error.message.contains("api.limits.query_timeout"),
            "{}",
            error.message
        );
        assert_eq!(run(&reader, "SELECT 7").await, Ok(vec![(7,)]));
        db.drop_database().await;
    }

    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(escape_like("50%_a\\b"), "50\\%\\_a\\\\b");
        assert_eq!(escape_like("plain"), "plain");
    }
}
