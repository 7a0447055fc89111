//! Reads of the `mysql` sink's database (apps, metrics, events: it keeps no logs), over the
//! same connection options the sink builds from its URL.

use std::time::Duration;

use sluice_sinks::mysql::{MysqlSinkConfig, is_retriable};
use sqlx::AssertSqlSafe;
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use tracing::warn;

use super::rows::{self, APPS_SQL, EVENTS_SQL};
use super::{AppActivity, AppEventRow, MetricPoint};
use crate::ApiError;
use crate::params::TimeRange;

/// Connections at most: the API's reads are short, and the sink has a pool of its own.
const CONNECTIONS: u32 = 4;
/// How long a query waits for a connection before the API answers 503: short, so a client
/// hears about an outage at once rather than after the sink's connect timeout.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// MySQL's "table doesn't exist".
const ER_NO_SUCH_TABLE: &str = "42S02";

#[derive(Debug)]
pub(super) struct MysqlReader {
    /// `host:port/database`, never the credentials.
    endpoint: String,
    pool: MySqlPool,
}

impl MysqlReader {
    /// A pool that connects on first use; fails only on a URL the sink would refuse too.
    pub(super) fn open(config: &MysqlSinkConfig) -> Result<MysqlReader, String> {
        let options = config.url.connect_options().map_err(|e| e.to_string())?;
        let pool = MySqlPoolOptions::new()
            .max_connections(CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT.min(config.connect_timeout))
            .connect_lazy_with(options);
        Ok(MysqlReader {
            endpoint: config.url.endpoint(),
            pool,
        })
    }

    fn error(&self, error: sqlx::Error) -> ApiError {
        let endpoint = &self.endpoint;
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
}
