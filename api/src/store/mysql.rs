//! The `mysql` sink's database as the API reads it (apps, metrics, events: it keeps no
//! logs), over the same connection options the sink builds from its URL, and what its errors
//! mean to a caller.

use std::time::Duration;

use sluice_common::telemetry::RateLimit;
use sluice_sinks::mysql::{DatabaseUrlError, MysqlSinkConfig, is_retriable};
use sqlx::mysql::MySqlPoolOptions;
use tracing::warn;

use sqlx::AssertSqlSafe;

use super::sql::{SqlPool, SqlReader};
use crate::ApiError;
use crate::limits::ApiLimits;

/// Failed queries are warned about ten times in ten seconds at most: a client repeating a
/// request that fails cannot flood the log.
static WARNINGS: std::sync::LazyLock<RateLimit> = std::sync::LazyLock::new(RateLimit::default);

/// MySQL's "table doesn't exist".
const ER_NO_SUCH_TABLE: &str = "42S02";
/// MariaDB's "max_statement_time exceeded" (1969) and MySQL's "maximum statement execution
/// time exceeded" (3024), as their numbers.
const STATEMENT_TIMEOUTS: [u32; 2] = [1969, 3024];

/// A pool of the API's own (the sink has its own) that connects on first use; fails only on
/// a URL the sink would refuse too. `limits.read_connections` connections at most; a query
/// waits at most `limits.acquire_timeout` for one (short, so a client hears about an outage
/// at once); every session carries the server's statement time limit set to
/// `limits.query_timeout`, so the server stops a query that runs out of it even after the
/// client left.
pub(super) fn open(
    config: &MysqlSinkConfig,
    limits: &ApiLimits,
) -> Result<SqlReader, DatabaseUrlError> {
    let options = config.url.connect_options()?;
    let timeout = limits.query_timeout;
    let pool = MySqlPoolOptions::new()
        .max_connections(limits.read_connections)
        .acquire_timeout(limits.acquire_timeout.min(config.connect_timeout))
        .after_connect(move |connection, _| {
            Box::pin(async move {
                set_statement_timeout(connection, timeout).await;
                Ok(())
            })
        })
        .connect_lazy_with(options);
    Ok(SqlReader::new(
        SqlPool::Mysql(pool),
        config.url.endpoint(),
        limits.query_timeout,
    ))
}

/// MariaDB's `max_statement_time` (seconds) or MySQL's `max_execution_time` (ms, SELECTs),
/// whichever the server has.
async fn set_statement_timeout(connection: &mut sqlx::MySqlConnection, timeout: Duration) {
    use sqlx::Executor as _;
    let mariadb = format!(
        "SET SESSION max_statement_time = {:.3}",
        timeout.as_secs_f64()
    );
    if connection.execute(AssertSqlSafe(mariadb)).await.is_ok() {
        return;
    }
    let mysql = format!("SET SESSION max_execution_time = {}", timeout.as_millis());
    if let Err(e) = connection.execute(AssertSqlSafe(mysql)).await {
        warn!(
            error = %e,
            "The MySQL server takes neither max_statement_time nor max_execution_time: the \
             API's queries run without a server-side time limit."
        );
    }
}

/// 503 while the server is unreachable, the sink has not created the tables yet, no reader
/// connection is free, or a query ran out of its budget; 500 for anything else.
pub(super) fn error(endpoint: &str, error: sqlx::Error, timeout: Duration) -> ApiError {
    if let sqlx::Error::Database(db) = &error
        && let Some(mysql) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
        && STATEMENT_TIMEOUTS.contains(&u32::from(mysql.number()))
    {
        ApiError::unavailable(format!(
            "the query of MySQL at {endpoint} ran out of its {} budget \
             (api.limits.query_timeout) and was stopped: ask for a shorter range",
            humantime::format_duration(timeout)
        ))
    } else if matches!(error, sqlx::Error::PoolTimedOut) {
        ApiError::unavailable(format!(
            "every reader connection of MySQL at {endpoint} is busy \
             (api.limits.read_connections): try again shortly"
        ))
    } else if is_retriable(&error) || matches!(error, sqlx::Error::Tls(_)) {
        ApiError::unavailable(format!("MySQL at {endpoint} is unreachable: {error}"))
    } else if let sqlx::Error::Database(db) = &error
        && db.code().as_deref() == Some(ER_NO_SUCH_TABLE)
    {
        ApiError::unavailable(format!(
            "MySQL database {endpoint} has no Sluice tables yet (the mysql sink creates them): {error}"
        ))
    } else {
        if let Some(held_back) = WARNINGS.check() {
            warn!(%endpoint, %error, held_back, "A query of the MySQL store failed.");
        }
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading MySQL at {endpoint} failed: {error}"),
        )
    }
}
