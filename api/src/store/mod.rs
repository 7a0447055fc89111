//! The stores the API reads: the SQL sink's tables for apps, metrics and events, and the SQLite
//! table or Elasticsearch indices for logs.
//!
//! Every store connects lazily: opening never touches the network or the file, so the API
//! starts while a database is down, answers 503 (naming the host and port, or the file) while
//! it stays down, and recovers by itself when it is back — the pools reconnect per query.
//!
//! Layout: `sql.rs` is the one reader of the SQL sinks' tables (queries, parameters, rows);
//! `sqlite.rs` and `mysql.rs` open its pool for their store and say what its errors mean;
//! `elasticsearch.rs` searches logs; `rows.rs` holds the answers.
//!
//! Every query runs within `[api.limits]` (see `limits.rs`): rows are handed on as they are
//! read, minutes merged into buckets by the store's query, and a query out of time, or whose
//! client left, is stopped.

mod elasticsearch;
mod mysql;
mod rows;
mod sql;
mod sqlite;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_sinks::elasticsearch::{
    ElasticsearchSinkConfig, ElasticsearchSinkError, IndexPatternError,
};
use sluice_sinks::mysql::{DatabaseUrlError, MysqlSinkConfig};
use sluice_sinks::sqlite::SqliteSinkConfig;

use tokio::sync::Semaphore;

use self::sql::SqlReader;
use crate::ApiError;
use crate::limits::ApiLimits;
use crate::params::{Cursor, TimeRange};

pub use rows::{AppActivity, AppEventRow, GroupPoint, LogLine, LogPage, MetricPoint};
use sluice_model::records::GroupKind;

/// The base table of per-minute rollups (SPEC §5).
pub const ROLLUP_TABLE: &str = "app_metric_rollup";

/// The default `allowed_lateness` (SPEC §2): how long after its end a window may still change.
pub const DEFAULT_ALLOWED_LATENESS: Duration = Duration::from_secs(60);

/// Where apps, metrics and events are read from.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlStoreConfig {
    Sqlite(SqliteSinkConfig),
    Mysql(MysqlSinkConfig),
}

/// Why a store cannot be read at all: its config is one the sink would refuse too.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    MysqlUrl(#[from] DatabaseUrlError),
    #[error("index: {0}")]
    IndexPattern(#[from] IndexPatternError),
    #[error(transparent)]
    Elasticsearch(#[from] ElasticsearchSinkError),
}

/// Where logs are read from.
#[derive(Debug, Clone, PartialEq)]
pub enum LogStoreConfig {
    Sqlite(SqliteSinkConfig),
    Elasticsearch(ElasticsearchSinkConfig),
}

#[derive(Debug)]
enum LogStore {
    Sqlite(SqlReader),
    Elasticsearch(elasticsearch::EsReader),
}

/// The stores of a running API.
#[derive(Debug)]
pub struct Stores {
    /// The SQL sink whose tables answer apps, metrics and events.
    sql: Option<SqlReader>,
    logs: Option<LogStore>,
    /// Rollup window widths (s) with tables of their own, the minute's included.
    windows: Vec<i64>,
    allowed_lateness: Duration,
    /// `api.limits.max_events`.
    max_events: usize,
    /// `api.limits.max_points`: checked again as points are merged.
    max_points: usize,
    /// Log searches with terms running now; one reader connection stays free for the rest.
    searches: Semaphore,
    /// Reads (and the encoding of their answers) running now: `read_connections` at most, so
    /// readers never take more of the machine than that, whatever number of clients ask.
    reads: Semaphore,
    max_reads: usize,
}

impl Stores {
    /// Connects lazily: a store that is down answers 503 until it is back, and never stops the
    /// API. `windows`: the rollup window widths (seconds) the topology writes (the minute is
    /// always among them). Synchronous because nothing is connected here; it fails only on a
    /// config the sink itself would refuse (an invalid URL, an unreadable CA file).
    pub fn open(
        sql: Option<SqlStoreConfig>,
        logs: Option<LogStoreConfig>,
        windows: Vec<u32>,
    ) -> Result<Stores, StoreError> {
        Stores::open_limited(sql, logs, windows, &ApiLimits::default())
    }

    /// [`Stores::open`] held to `limits` (`[api.limits]`): pool sizes, acquire and query
    /// timeouts, answer sizes.
    pub fn open_limited(
        sql: Option<SqlStoreConfig>,
        logs: Option<LogStoreConfig>,
        windows: Vec<u32>,
        limits: &ApiLimits,
    ) -> Result<Stores, StoreError> {
        let sql = match sql {
            None => None,
            Some(SqlStoreConfig::Sqlite(config)) => Some(sqlite::open(&config, limits)),
            Some(SqlStoreConfig::Mysql(config)) => Some(mysql::open(&config, limits)?),
        };
        let logs = match logs {
            None => None,
            Some(LogStoreConfig::Sqlite(config)) => {
                Some(LogStore::Sqlite(sqlite::open(&config, limits)))
            }
            Some(LogStoreConfig::Elasticsearch(config)) => Some(LogStore::Elasticsearch(
                elasticsearch::EsReader::open(&config, limits.query_timeout)?,
            )),
        };
        Ok(Stores {
            sql,
            logs,
            // The minute is always written, whatever the caller passed.
            windows: windows.into_iter().map(i64::from).chain([60]).collect(),
            allowed_lateness: DEFAULT_ALLOWED_LATENESS,
            max_events: limits.max_events,
            max_points: limits.max_points,
            searches: Semaphore::new(limits.concurrent_searches()),
            reads: Semaphore::new(limits.read_connections as usize),
            max_reads: limits.read_connections as usize,
        })
    }

    /// The pipeline's `allowed_lateness`, which decides when a stored point counts as final.
    pub fn with_allowed_lateness(mut self, allowed_lateness: Duration) -> Stores {
        self.allowed_lateness = allowed_lateness;
        self
    }

    /// A place among the reads running now, held while a request reads and encodes its
    /// answer; 503 at once when every place is taken (a client retries; nobody queues).
    pub fn read_permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, ApiError> {
        self.reads.try_acquire().map_err(|_| {
            ApiError::unavailable(format!(
                "{} reads are running, the most this API runs at once \
                 (api.limits.read_connections): try again shortly",
                self.max_reads
            ))
        })
    }

    fn sql(&self) -> Result<&SqlReader, ApiError> {
        self.sql.as_ref().ok_or_else(|| {
            ApiError::not_found(
                "no SQL store is configured for apps, metrics and events (api.store)",
            )
        })
    }

    /// Every app with rollups and its latest rollup minute, sorted by id.
    pub async fn apps(&self) -> Result<Vec<AppActivity>, ApiError> {
        self.sql()?.apps().await
    }

    /// The app's rollup points of `range` in buckets of `step` seconds, ascending. Minutes are
    /// merged by the store as it reads them: the memory a request takes follows its points,
    /// not the minutes behind them.
    pub async fn metrics(
        &self,
        app_id: &str,
        range: TimeRange,
        step: i64,
    ) -> Result<Vec<MetricPoint>, ApiError> {
        let store = self.sql()?;
        // A window of exactly this width (the minute, or a configured one) has its own
        // table: read it as it is; any other step merges minutes.
        let merge = !self.windows.contains(&step);
        let table = window_table(if merge { 60 } else { step });
        let max_points = self.max_points;
        let too_many = || {
            ApiError::bad_request(format!(
                "step: more than {max_points} points in the range, the most one answer carries \
                 (api.limits.max_points): ask for a coarser step"
            ))
        };
        let mut points = Vec::new();
        let mut take = |row: MetricPoint| {
            if points.len() == max_points {
                return Err(too_many());
            }
            points.push(row);
            Ok(())
        };
        if merge {
            store.merged_minutes(app_id, range, step, &mut take).await?;
        } else {
            store.rollups(&table, app_id, range, &mut take).await?;
        }
        let now = now_secs();
        let lateness = self.allowed_lateness.as_secs() as i64;
        for point in &mut points {
            // The tables keep no "final" flag: a window is final once the watermark passed
            // its end, which by now it has if the pipeline keeps up with the clock.
            point.is_final = point.time + step + lateness <= now;
        }
        Ok(points)
    }

    /// A space's or an org's points of `range` in buckets of `step` seconds, ascending (SPEC
    /// §11's group tables hold minutes only: any wider step merges them in the store's query).
    /// Held to `max_points` as [`metrics`](Self::metrics) is.
    pub async fn group_metrics(
        &self,
        kind: GroupKind,
        group_id: &str,
        range: TimeRange,
        step: i64,
    ) -> Result<Vec<GroupPoint>, ApiError> {
        let store = self.sql()?;
        let max_points = self.max_points;
        let mut points = Vec::new();
        store
            .group_minutes(kind, group_id, range, step, |row| {
                if points.len() == max_points {
                    return Err(ApiError::bad_request(format!(
                        "step: more than {max_points} points in the range, the most one answer \
                         carries (api.limits.max_points): ask for a coarser step"
                    )));
                }
                points.push(row);
                Ok(())
            })
            .await?;
        let now = now_secs();
        let lateness = self.allowed_lateness.as_secs() as i64;
        for point in &mut points {
            // As for apps: a group's minute is final once the watermark passed its end.
            point.is_final = point.time + step + lateness <= now;
        }
        Ok(points)
    }

    /// The app's events of `range`, ascending.
    pub async fn events(
        &self,
        app_id: &str,
        range: TimeRange,
    ) -> Result<Vec<AppEventRow>, ApiError> {
        self.sql()?.events(app_id, range, self.max_events).await
    }

    /// A page of the app's log lines, newest first: those of `range` containing every term,
    /// after `cursor`.
    pub async fn logs(&self, query: LogQuery<'_>) -> Result<LogPage, ApiError> {
        let Some(logs) = &self.logs else {
            return Err(ApiError::not_found(
                "no log store is configured (api.log_store)",
            ));
        };
        // A search may read much of the range; a page without terms is cheap.
        let _permit = match query.terms {
            Some(_) => Some(self.searches.try_acquire().map_err(|_| {
                ApiError::unavailable(
                    "as many log searches as the store takes at once are running \
                     (api.limits.read_connections - 1): try again shortly",
                )
            })?),
            None => None,
        };
        match logs {
            LogStore::Sqlite(store) => store.logs(query).await,
            LogStore::Elasticsearch(store) => store.logs(query).await,
        }
    }
}

/// What `/logs` asks for.
#[derive(Debug, Clone)]
pub struct LogQuery<'a> {
    pub app_id: &'a str,
    pub range: TimeRange,
    /// Case-insensitive; every one must occur in the message.
    pub terms: Option<&'a [String]>,
    pub limit: usize,
    pub cursor: Option<Cursor>,
}

/// The wall clock in epoch seconds.
fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The table of a rollup window `width` seconds wide, as the sinks name it.
pub fn window_table(width: i64) -> String {
    let width = u32::try_from(width).unwrap_or(u32::MAX);
    sluice_sinks::rows::window_table_name(ROLLUP_TABLE, width)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_beyond_read_connections_are_refused_at_once() {
        let limits = ApiLimits {
            read_connections: 2,
            ..ApiLimits::default()
        };
        let stores = Stores::open_limited(None, None, vec![], &limits).expect("no stores");
        let first = stores.read_permit().expect("a place");
        let _second = stores.read_permit().expect("a place");
        let error = stores.read_permit().expect_err("no place left");
        assert_eq!(error.status, axum::http::StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            error.message.contains("api.limits.read_connections"),
            "{}",
            error.message
        );
        drop(first);
        assert!(
            stores.read_permit().is_ok(),
            "a finished read frees its place"
        );
    }

    #[test]
    fn window_tables_are_named_by_their_width() {
        assert_eq!(window_table(300), "app_metric_rollup_5m");
        assert_eq!(window_table(3600), "app_metric_rollup_1h");
        assert_eq!(window_table(5400), "app_metric_rollup_90m");
        assert_eq!(window_table(7200), "app_metric_rollup_2h");
        assert_eq!(window_table(86_400), "app_metric_rollup_1d");
    }
}
