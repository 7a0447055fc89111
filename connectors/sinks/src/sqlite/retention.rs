//! Retention in SQLite (SPEC §10, see `crate::retention`). SQLite has one writer, so deleting
//! happens on the sink's own connection, inside its write transaction: after a flush, when
//! `interval` has passed or expired rows were left over, each table loses its oldest rows in
//! slices of about `batch_size` (each slice a range delete), up to twice the rows the flush
//! wrote, so retention keeps up with ingestion and never holds it for more than about a
//! batch.
//!
//! A slice finds the age key of the `batch_size`-th oldest expired row and deletes every row
//! up to it (`DELETE … WHERE key >= start AND key <= ?`): one index range, the same
//! statement for rowid and `WITHOUT ROWID` tables, and never a scan of what is kept. The key
//! is a table's time column, through an index on it, except for `log_message`, whose ids
//! lead with the line's time: its primary key serves, in two ranges (see [`Age::LogId`]).
//!
//! Deleted pages go to the file's freelist and later inserts take them from there, so once
//! retention is in steady state the file stops growing without `VACUUM` (measured in the
//! sink's tests; see the README's "Retention" section).

use std::time::Instant;

use sqlx::sqlite::SqliteConnection;
use sqlx::{AssertSqlSafe, Row};
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
    /// What orders the table's rows by age.
    age: Age,
    /// The age key of the `n`-th oldest expired row (`?1` the end of the expired range,
    /// `?2` n − 1, `?3` its start).
    boundary: String,
    /// Deletes every row from a range's start (`?2`) to an age key (`?1`), inclusive.
    delete_through: String,
    /// Deletes the rest of a range (`?2` its start, `?1` its end, exclusive).
    delete_before: String,
}

/// What a table's rows are ordered by age with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Age {
    /// The table's time column, through an index on it.
    Time,
    /// `log_message`'s primary key: a log id leads with the line's timestamp (16 hex digits
    /// of its two's complement, `sluice_model::event::log_id`), so the key orders lines by
    /// time within each sign and no index on `ts` is needed (one b-tree fewer per line
    /// written, measured in README "Retention", part 5).
    LogId,
}

/// The expired range of a table's age key, `[start, end)`.
#[derive(Clone, Debug, PartialEq)]
enum Range {
    Time(i64, i64),
    Id(String, String),
}

impl Age {
    fn of(table: &Table) -> Age {
        if table.name == "log_message" {
            Age::LogId
        } else {
            Age::Time
        }
    }

    fn column(self, table: &Table) -> &'static str {
        match self {
            Age::Time => time_column(table),
            Age::LogId => "id",
        }
    }

    /// The ranges of the key holding every row older than `cutoff`.
    fn expired(self, cutoff: i64) -> Vec<Range> {
        match self {
            Age::Time => vec![Range::Time(i64::MIN, cutoff)],
            Age::LogId => {
                let end = format!("{:016x}", cutoff as u64);
                // Ids of negative timestamps start at "8" (their two's complement) and sort
                // after every positive one; "g" is above every hex digit.
                let negative = "8".to_owned();
                if cutoff >= 0 {
                    vec![
                        Range::Id(negative, "g".to_owned()),
                        Range::Id(String::new(), end),
                    ]
                } else {
                    vec![Range::Id(negative, end)]
                }
            }
        }
    }
}

impl Retention {
    pub(super) fn new(config: RetentionConfig, tables: &[&'static Table]) -> Retention {
        let tables = tables
            .iter()
            .filter(|table| has_history(table))
            .map(|table| {
                let age = Age::of(table);
                let (name, column) = (table.name, age.column(table));
                TableRetention {
                    table,
                    age,
                    boundary: format!(
                        "SELECT {column} FROM {name} WHERE {column} >= ?3 AND {column} < ?1 \
                         ORDER BY {column} LIMIT 1 OFFSET ?2"
                    ),
                    delete_through: format!(
                        "DELETE FROM {name} WHERE {column} >= ?2 AND {column} <= ?1"
                    ),
                    delete_before: format!(
                        "DELETE FROM {name} WHERE {column} >= ?2 AND {column} < ?1"
                    ),
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

    /// The index each table's deletes go through (`CREATE INDEX IF NOT EXISTS`); none for
    /// `log_message`, whose primary key is that index.
    pub(super) fn index_ddl(table: &Table) -> Option<String> {
        let column = time_column(table);
        (Age::of(table) == Age::Time).then(|| {
            format!(
                "CREATE INDEX IF NOT EXISTS {name}_{column} ON {name} ({column})",
                name = table.name
            )
        })
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
        let mut deleted = 0;
        for range in self.age.expired(cutoff) {
            // A range's last statement may delete a slice past the budget.
            if deleted >= budget {
                return Ok((deleted, true));
            }
            let (rows, left) = self
                .delete_range(connection, config, &range, budget - deleted)
                .await?;
            deleted += rows;
            if left {
                return Ok((deleted, true));
            }
        }
        Ok((deleted, false))
    }

    /// [`TableRetention::delete`] within one expired range of the age key.
    async fn delete_range(
        &self,
        connection: &mut SqliteConnection,
        config: &RetentionConfig,
        range: &Range,
        budget: u64,
    ) -> Result<(u64, bool), sqlx::Error> {
        let slice = config.batch_size.get() as i64;
        let mut deleted = 0;
        while deleted < budget {
            let boundary = sqlx::query(AssertSqlSafe(self.boundary.as_str()));
            let boundary = match range {
                Range::Time(start, end) => boundary.bind(*end).bind(slice - 1).bind(*start),
                Range::Id(start, end) => boundary.bind(end).bind(slice - 1).bind(start),
            };
            let boundary = boundary.fetch_optional(&mut *connection).await?;
            let result = match (boundary, range) {
                (Some(row), Range::Time(start, _)) => {
                    sqlx::query(AssertSqlSafe(self.delete_through.as_str()))
                        .bind(row.try_get::<i64, _>(0)?)
                        .bind(*start)
                        .execute(&mut *connection)
                        .await?
                }
                (Some(row), Range::Id(start, _)) => {
                    sqlx::query(AssertSqlSafe(self.delete_through.as_str()))
                        .bind(row.try_get::<String, _>(0)?)
                        .bind(start)
                        .execute(&mut *connection)
                        .await?
                }
                (None, range) => {
                    let before = sqlx::query(AssertSqlSafe(self.delete_before.as_str()));
                    let before = match range {
                        Range::Time(start, end) => before.bind(*end).bind(*start),
                        Range::Id(start, end) => before.bind(end).bind(start),
                    };
                    let result = before.execute(&mut *connection).await?;
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
            "SELECT stop_ts FROM http_start_stop WHERE stop_ts >= ?3 AND stop_ts < ?1 \
             ORDER BY stop_ts LIMIT 1 OFFSET ?2"
        );
        assert_eq!(
            through,
            "DELETE FROM http_start_stop WHERE stop_ts >= ?2 AND stop_ts <= ?1"
        );
        assert_eq!(
            before,
            "DELETE FROM http_start_stop WHERE stop_ts >= ?2 AND stop_ts < ?1"
        );
        assert_eq!(
            Retention::index_ddl(rows::window_table(StreamName::AppRollups, 3600)).as_deref(),
            Some(
                "CREATE INDEX IF NOT EXISTS app_metric_rollup_1h_minute ON app_metric_rollup_1h (minute)"
            )
        );
    }

    /// A slice deletes the `batch_size` oldest expired rows and no more; the last, shorter
    /// slice takes the rest of the range; nothing younger than the cutoff goes. For a time
    /// column and for log ids alike.
    #[tokio::test]
    async fn slices_delete_the_oldest_expired_rows_a_batch_at_a_time() {
        use sqlx::Connection;
        let mut connection = SqliteConnection::connect("sqlite::memory:")
            .await
            .expect("in-memory SQLite");
        sqlx::raw_sql(
            "CREATE TABLE http_start_stop (stop_ts INTEGER NOT NULL); \
             CREATE INDEX http_start_stop_stop_ts ON http_start_stop (stop_ts); \
             CREATE TABLE log_message (id TEXT NOT NULL PRIMARY KEY, ts INTEGER NOT NULL);",
        )
        .execute(&mut connection)
        .await
        .expect("tables");
        // Ten rows a nanosecond apart in each (ts 1..=10), the log ids as `log_id` makes them.
        for ts in 1..=10_i64 {
            sqlx::query("INSERT INTO http_start_stop VALUES (?1)")
                .bind(ts)
                .execute(&mut connection)
                .await
                .expect("http row");
            sqlx::query("INSERT INTO log_message VALUES (?1, ?2)")
                .bind(format!("{:016x}{:016x}", ts as u64, ts * 7919))
                .bind(ts)
                .execute(&mut connection)
                .await
                .expect("log row");
        }
        let config = RetentionConfig {
            raw: std::time::Duration::from_nanos(3),
            batch_size: std::num::NonZeroUsize::new(3).expect("non-zero"),
            ..RetentionConfig::default()
        };
        let retention = Retention::new(
            config.clone(),
            &[rows::table(StreamName::Http), rows::table(StreamName::Logs)],
        );
        // At watermark 10 the cutoff is 7: rows 1..=6 are expired.
        for table in &retention.tables {
            let name = table.table.name;
            let left = async |connection: &mut SqliteConnection| -> i64 {
                sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {name}")))
                    .fetch_one(connection)
                    .await
                    .expect("count")
            };
            let first = table.delete(&mut connection, &config, 10, 3).await;
            assert_eq!(first.expect("first round"), (3, true), "{name}: one slice");
            assert_eq!(left(&mut connection).await, 7, "{name}");
            let second = table.delete(&mut connection, &config, 10, 100).await;
            assert_eq!(
                second.expect("second round"),
                (3, false),
                "{name}: the rest"
            );
            assert_eq!(left(&mut connection).await, 4, "{name}: 7..=10 kept");
        }
    }

    #[test]
    fn log_lines_expire_by_ranges_of_their_time_led_ids() {
        let logs = rows::table(StreamName::Logs);
        assert_eq!(Retention::index_ddl(logs), None);
        let [boundary, _, before] = statements(logs);
        assert_eq!(
            boundary,
            "SELECT id FROM log_message WHERE id >= ?3 AND id < ?1 ORDER BY id LIMIT 1 OFFSET ?2"
        );
        assert_eq!(before, "DELETE FROM log_message WHERE id >= ?2 AND id < ?1");
        // 2023-11-14T22:13:20Z: every positive id before it, and every negative timestamp.
        assert_eq!(
            Age::LogId.expired(1_700_000_000_000_000_000),
            [
                Range::Id("8".into(), "g".into()),
                Range::Id(String::new(), "17979cfe362a0000".into()),
            ]
        );
        // Before 1970 only ids of timestamps further back: 8000… (i64::MIN) up to the cutoff.
        assert_eq!(
            Age::LogId.expired(-1),
            [Range::Id("8".into(), "ffffffffffffffff".into())]
        );
        let line = |timestamp: i64| {
            sluice_model::event::log_id(&sluice_model::event::LogMessage {
                message: bytes::Bytes::from_static(b"line"),
                message_type: sluice_model::event::MessageType::Out,
                timestamp,
                app_id: "app".into(),
                source_type: "APP/PROC/WEB".into(),
                source_instance: "0".into(),
                names: None,
            })
        };
        // The ranges hold exactly the ids of older lines.
        for cutoff in [1_700_000_000_000_000_000, 1, 0, -1, -5_000] {
            for timestamp in [
                i64::MIN,
                -5_001,
                -5_000,
                -2,
                -1,
                0,
                1,
                1_699_999_999_999_999_999,
                1_700_000_000_000_000_000,
                i64::MAX,
            ] {
                let id = line(timestamp);
                let expired = Age::LogId.expired(cutoff).iter().any(|range| match range {
                    Range::Id(start, end) => {
                        id.as_str() >= start.as_str() && id.as_str() < end.as_str()
                    }
                    Range::Time(..) => false,
                });
                assert_eq!(
                    expired,
                    timestamp < cutoff,
                    "line at {timestamp}, cutoff {cutoff}"
                );
            }
        }
    }
}
