//! The `sqlite` sink's file as the API reads it: opened read-only (in WAL mode readers and
//! the sink's writer do not block each other), and what its errors mean to a caller.

use std::time::Duration;

use sluice_common::telemetry::RateLimit;
use sluice_sinks::sqlite::SqliteSinkConfig;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use tracing::warn;

use super::sql::{SqlPool, SqlReader};
use crate::ApiError;
use crate::limits::ApiLimits;

/// Failed queries are warned about ten times in ten seconds at most: a client repeating a
/// request that fails cannot flood the log.
static WARNINGS: std::sync::LazyLock<RateLimit> = std::sync::LazyLock::new(RateLimit::default);

/// A pool of the API's own (never the sink's writer connection) that opens the file on first
/// use: the sink may not have created it yet. `limits.read_connections` readers at most, each
/// waiting at most `limits.acquire_timeout` for a free connection.
pub(super) fn open(config: &SqliteSinkConfig, limits: &ApiLimits) -> SqlReader {
    let options = SqliteConnectOptions::new()
        .filename(&config.path)
        .read_only(true)
        // A reader waits for a lock no longer than its own budget.
        .busy_timeout(config.busy_timeout.min(limits.query_timeout));
    let pool = SqlitePoolOptions::new()
        .max_connections(limits.read_connections)
        .acquire_timeout(limits.acquire_timeout)
        .connect_lazy_with(options);
    SqlReader::new(
        SqlPool::Sqlite(pool),
        config.path.display().to_string(),
        limits.query_timeout,
    )
}

/// SQLite's "interrupted": the progress handler stopped the statement.
const SQLITE_INTERRUPT: &str = "9";

/// 503 while the file is missing, has no tables yet, or is locked, when no reader connection
/// is free, or when a query ran out of its budget; 500 for a query that fails on a readable
/// file.
pub(super) fn error(path: &str, error: sqlx::Error, timeout: Duration) -> ApiError {
    let message = error.to_string();
    if let sqlx::Error::Database(db) = &error
        && db.code().as_deref() == Some(SQLITE_INTERRUPT)
    {
        ApiError::unavailable(format!(
            "the query of the SQLite store {path} ran out of its {} budget \
             (api.limits.query_timeout) and was stopped: ask for a shorter range or fewer terms",
            humantime::format_duration(timeout)
        ))
    } else if matches!(error, sqlx::Error::PoolTimedOut) {
        ApiError::unavailable(format!(
            "every reader connection of the SQLite store {path} is busy \
             (api.limits.read_connections): try again shortly"
        ))
    } else if message.contains("no such table") {
        ApiError::unavailable(format!(
            "the SQLite store {path} has no tables yet (the sqlite sink creates them): {message}"
        ))
    } else if matches!(error, sqlx::Error::Database(_))
        && !message.contains("unable to open")
        && !message.contains("locked")
        && !message.contains("busy")
    {
        if let Some(held_back) = WARNINGS.check() {
            warn!(%path, error = %message, held_back, "A query of the SQLite store failed.");
        }
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading the SQLite store {path} failed: {message}"),
        )
    } else {
        ApiError::unavailable(format!("the SQLite store {path} cannot be read: {message}"))
    }
}
