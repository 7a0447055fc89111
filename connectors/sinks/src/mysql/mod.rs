//! The `mysql` sink: the production store for everything but logs, as PCF Metrics had it,
//! over the MySQL protocol (MariaDB and MySQL alike).
//!
//! Received batches are gathered up to `batch_size` rows or `flush_interval`, then each
//! table's share is written in one transaction on its own pooled connection, the tables in
//! parallel, with multi-row `INSERT … ON DUPLICATE KEY UPDATE`: a no-op for raw streams
//! (insert-or-ignore without `INSERT IGNORE`'s silent clamping of bad values, see
//! `dialect.rs`) and an overwrite for rollups. So a retry or a replay changes nothing and a
//! provisional rollup row becomes the final one in place. Only after a flush is in the
//! database does the sink commit its input, so a durable buffer lets go of nothing unwritten.
//!
//! The store going away is expected: the sink says so once (naming host and port), retries
//! with capped backoff while its buffer holds the data, and says when it is back. Errors that
//! waiting cannot fix (bad credentials, a schema that does not match) stop the sink loudly.
//!
//! Layout: `config.rs` (the sink's settings and its database URL), `error.rs` (why it stops,
//! what it waits out), `store.rs` (the pool: opening, writing a batch split over the
//! connections), `dialect.rs` (how MySQL takes the shared SQL writer's INSERTs, and the
//! column lengths of its schema), `retention.rs` (deleting old rows in the background). The
//! schema lives in the migrations under `connectors/migrations/mysql/`, and the rollup tables
//! of the extra widths of `pipeline.windows` (`app_metric_rollup_1h`, ...) are created at
//! start like their minute tables.

mod config;
mod dialect;
mod error;
mod retention;
mod store;

pub use crate::retention::RetentionConfig;
pub use config::{DatabaseUrl, DatabaseUrlError, MysqlSinkConfig};
pub use dialect::MAX_ROWS_PER_STATEMENT;
pub use error::{MysqlSinkError, is_retriable};

use sluice_model::records::StreamName;
use tracing::{error, info};

use self::store::MysqlStore;
use crate::batch::write_batches;
use crate::retry::Retry;
use crate::{ComponentError, ComponentTask, Sink, SinkContext};
use sluice_buffers::BufferConfig;

impl Sink for MysqlSinkConfig {
    fn streams(&self) -> &[StreamName] {
        &self.streams
    }

    fn buffer(&self) -> &BufferConfig {
        &self.buffer
    }

    fn build(self: Box<Self>, ctx: SinkContext) -> ComponentTask {
        Box::pin(async move { run(*self, ctx).await.map_err(ComponentError::new) })
    }
}

/// Runs the sink until its input closes: writes everything received, then closes the pool.
pub async fn run(config: MysqlSinkConfig, mut ctx: SinkContext) -> Result<(), MysqlSinkError> {
    let options = config.url.connect_options()?;
    let endpoint = config::endpoint(&options);
    let abandoned = |records| MysqlSinkError::Abandoned {
        endpoint: endpoint.clone(),
        records,
    };
    let mut retry = Retry::new("MySQL", &endpoint, config.shutdown_timeout);
    let mut store = loop {
        match MysqlStore::open(&config, options.clone(), &endpoint, &ctx.windows).await {
            Ok(store) => break store,
            Err(error) => {
                if let Some(stop) = retry.wait_or_fail(error, 0, &mut ctx).await? {
                    return stop.end(abandoned);
                }
            }
        }
    };
    retry.recovered(&ctx);
    info!(sink = %ctx.name, %endpoint, "Connected to MySQL; the schema is up to date.");
    let retention = retention::Retention {
        config: config.retention.clone(),
        pool: store.pool.clone(),
        tables: store.tables.clone(),
        sink: ctx.name.clone(),
        metrics: ctx.metrics.clone(),
        watermark: ctx.watermark.clone(),
    }
    .spawn(&ctx.shutdown);

    let written = write_batches(
        &mut store,
        &mut ctx,
        &mut retry,
        &config.streams,
        config.batch_size.get(),
        config.flush_interval,
    )
    .await;
    let result = match written {
        Ok(Some(stop)) => stop.end(abandoned),
        Ok(None) => Ok(()),
        Err(error) => Err(error),
    };
    // A finite run ends with a last pass at the final watermark, so the tables hold exactly
    // the promised window; a run stopped by a signal leaves that to the next one.
    if let Some(retention) = retention.stop().await
        && result.is_ok()
        && !ctx.shutdown.is_cancelled()
    {
        retention.pass(&ctx.shutdown).await;
    }
    store.pool.close().await;
    match &result {
        Ok(()) => info!(sink = %ctx.name, rows = ctx.metrics.written_total(),
            "Closed the MySQL connections."),
        Err(error) => error!(sink = %ctx.name, %error, "The MySQL sink stopped."),
    }
    result
}

/// The bytes the tables of the database `url` names take on the server (data and indexes,
/// as `information_schema` reports them), for `sluice bench`.
pub async fn store_size(url: &DatabaseUrl) -> Result<u64, MysqlSinkError> {
    use sqlx::Connection;
    let options = url.connect_options()?;
    let database = options.get_database().unwrap_or("").to_owned();
    let connect_error = |source| MysqlSinkError::Connect {
        endpoint: config::endpoint(&options),
        source,
    };
    let mut connection = sqlx::MySqlConnection::connect_with(&options)
        .await
        .map_err(connect_error)?;
    let size: Option<i64> = sqlx::query_scalar(
        "SELECT CAST(SUM(data_length + index_length) AS SIGNED) \
         FROM information_schema.tables WHERE table_schema = ?",
    )
    .bind(&database)
    .fetch_one(&mut connection)
    .await
    .map_err(connect_error)?;
    Ok(size.unwrap_or(0).max(0) as u64)
}

/// Drops the database `url` names, if it exists (`sluice bench` starts from an empty store).
pub async fn drop_database(url: &DatabaseUrl) -> Result<(), MysqlSinkError> {
    use sqlx::Connection;
    let options = url.connect_options()?;
    let database = options.get_database().unwrap_or("").to_owned();
    let connect_error = |source| MysqlSinkError::Connect {
        endpoint: config::endpoint(&options),
        source,
    };
    if database.is_empty() || database.contains('`') {
        return Ok(());
    }
    let mut server_url = url::Url::parse(&url.0)
        .map_err(|e| connect_error(sqlx::Error::Configuration(Box::new(e))))?;
    server_url.set_path("");
    let server = std::str::FromStr::from_str(server_url.as_str()).map_err(connect_error)?;
    let mut connection = sqlx::MySqlConnection::connect_with(&server)
        .await
        .map_err(connect_error)?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS `{database}`"
    )))
    .execute(&mut connection)
    .await
    .map_err(connect_error)?;
    Ok(())
}
