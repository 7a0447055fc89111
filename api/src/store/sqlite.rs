//! The `sqlite` sink's file as the API reads it: opened read-only (in WAL mode readers and
//! the sink's writer do not block each other), and what its errors mean to a caller.

use std::time::Duration;

use sluice_sinks::sqlite::SqliteSinkConfig;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use tracing::warn;

use super::sql::{SqlPool, SqlReader};
use crate::ApiError;

/// Readers at most: SQLite serves reads in parallel, the machine's cores bound the benefit.
const CONNECTIONS: u32 = 4;

/// A pool that opens the file on first use: the sink may not have created it yet.
pub(super) fn open(config: &SqliteSinkConfig) -> SqlReader {
    let options = SqliteConnectOptions::new()
        .filename(&config.path)
        .read_only(true)
        .busy_timeout(config.busy_timeout);
    let pool = SqlitePoolOptions::new()
        .max_connections(CONNECTIONS)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options);
    SqlReader::new(SqlPool::Sqlite(pool), config.path.display().to_string())
}

/// 503 while the file is missing, has no tables yet, or is locked; 500 for a query that
/// fails on a readable file.
pub(super) fn error(path: &str, error: sqlx::Error) -> ApiError {
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
