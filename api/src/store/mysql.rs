//! The `mysql` sink's database as the API reads it (apps, metrics, events: it keeps no
//! logs), over the same connection options the sink builds from its URL, and what its errors
//! mean to a caller.

use std::time::Duration;

use sluice_sinks::mysql::{DatabaseUrlError, MysqlSinkConfig, is_retriable};
use sqlx::mysql::MySqlPoolOptions;
use tracing::warn;

use super::sql::{SqlPool, SqlReader};
use crate::ApiError;

/// Connections at most: the API's reads are short, and the sink has a pool of its own.
const CONNECTIONS: u32 = 4;
/// How long a query waits for a connection before the API answers 503: short, so a client
/// hears about an outage at once rather than after the sink's connect timeout.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// MySQL's "table doesn't exist".
const ER_NO_SUCH_TABLE: &str = "42S02";

/// A pool that connects on first use; fails only on a URL the sink would refuse too.
pub(super) fn open(config: &MysqlSinkConfig) -> Result<SqlReader, DatabaseUrlError> {
    let options = config.url.connect_options()?;
    let pool = MySqlPoolOptions::new()
        .max_connections(CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT.min(config.connect_timeout))
        .connect_lazy_with(options);
    Ok(SqlReader::new(SqlPool::Mysql(pool), config.url.endpoint()))
}

/// 503 while the server is unreachable or the sink has not created the tables yet; 500 for
/// anything else.
pub(super) fn error(endpoint: &str, error: sqlx::Error) -> ApiError {
    if is_retriable(&error) || matches!(error, sqlx::Error::Tls(_)) {
        ApiError::unavailable(format!("MySQL at {endpoint} is unreachable: {error}"))
    } else if let sqlx::Error::Database(db) = &error
        && db.code().as_deref() == Some(ER_NO_SUCH_TABLE)
    {
        ApiError::unavailable(format!(
            "MySQL database {endpoint} has no Sluice tables yet (the mysql sink creates them): {error}"
        ))
    } else {
        warn!(%endpoint, %error, "A query of the MySQL store failed.");
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading MySQL at {endpoint} failed: {error}"),
        )
    }
}
