//! The `mysql` sink: the production store for everything but logs, as PCF Metrics had it,
//! over the MySQL protocol (MariaDB and MySQL alike).
//!
//! Received batches are gathered up to `batch_size` rows or `flush_interval`, then each
//! table's share is written in one transaction on its own pooled connection, the tables in
//! parallel, with multi-row `INSERT … ON DUPLICATE KEY UPDATE`: a no-op for raw streams
//! (insert-or-ignore without `INSERT IGNORE`'s silent clamping of bad values, see
//! `statements.rs`) and an overwrite for rollups. So a retry or a replay changes nothing and a
//! provisional rollup row becomes the final one in place. Only after a flush is in the
//! database does the sink commit its input, so a durable buffer lets go of nothing unwritten.
//!
//! The store going away is expected: the sink says so once (naming host and port), retries
//! with capped backoff while its buffer holds the data, and says when it is back. Errors that
//! waiting cannot fix (bad credentials, a schema that does not match) stop the sink loudly.
//!
//! `statements.rs` builds the SQL; `retention.rs` deletes old rows in the background; the
//! schema lives in the migrations under `connectors/migrations/mysql/`, and the rollup tables
//! of the extra widths of `pipeline.windows` (`app_metric_rollup_1h`, ...) are created at
//! start like their minute tables.

mod retention;
mod statements;

pub use retention::RetentionConfig;
pub use statements::MAX_ROWS_PER_STATEMENT;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::num::{NonZeroU32, NonZeroUsize};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use serde::Deserialize;
use sluice_model::records::StreamName;
use sqlx::mysql::{MySqlConnectOptions, MySqlDatabaseError, MySqlPool, MySqlPoolOptions};
use sqlx::{Connection, Row};
use tracing::{debug, error, info, warn};

use self::statements::{Limit, SCHEMA, insert, insert_sql, limits, statement_sizes};
use crate::batch::{Batch, gather};
use crate::retry::{Retriable, Retry, Stop};
use crate::rows::{self, Table, Value};
use crate::{Component, ComponentError, ComponentTask, Problem, Sink, SinkContext};
use sluice_buffers::{BufferConfig, BufferError};

/// `[sinks.<name>]` with `type = "mysql"`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlSinkConfig {
    /// `mysql://user:password@host:3306/database` (sqlx's URL syntax, e.g. `?ssl-mode=required`).
    /// Put the password in the environment: `"mysql://sluice:${MYSQL_PASSWORD}@db:3306/sluice"`.
    pub url: DatabaseUrl,
    /// The streams written, each to its table of SPEC §3. Default: all of them.
    #[serde(default = "StreamName::all")]
    pub streams: Vec<StreamName>,
    /// Connections at most; tables of one flush are written in parallel on separate ones.
    #[serde(default = "default_pool_size")]
    pub pool_size: NonZeroU32,
    /// Rows gathered at most before they are written.
    #[serde(default = "default_batch_size")]
    pub batch_size: NonZeroUsize,
    /// How long a received row may wait for a fuller batch before it is written (`"1s"`).
    #[serde(
        default = "default_flush_interval",
        with = "sluice_common::config::duration"
    )]
    pub flush_interval: Duration,
    /// How long connecting may take before the attempt counts as failed (`"10s"`).
    #[serde(
        default = "default_connect_timeout",
        with = "sluice_common::config::duration"
    )]
    pub connect_timeout: Duration,
    /// On Ctrl-C, how long a sink whose store is down keeps trying before it abandons what
    /// its memory buffer holds (a disk buffer keeps it for the next run instead).
    #[serde(
        default = "default_shutdown_timeout",
        with = "sluice_common::config::duration"
    )]
    pub shutdown_timeout: Duration,
    /// Deleting old rows: `retention = { raw = "2d", rollups = "14d" }`.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// Where records wait while the store is slow or down.
    #[serde(default)]
    pub buffer: BufferConfig,
}

fn default_pool_size() -> NonZeroU32 {
    NonZeroU32::new(4).unwrap_or(NonZeroU32::MIN)
}

fn default_batch_size() -> NonZeroUsize {
    NonZeroUsize::new(5000).unwrap_or(NonZeroUsize::MIN)
}

const fn default_flush_interval() -> Duration {
    Duration::from_secs(1)
}

const fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

const fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}

impl MysqlSinkConfig {
    /// A config with the defaults for `url` and `streams`.
    pub fn new(url: impl Into<String>, streams: Vec<StreamName>) -> MysqlSinkConfig {
        MysqlSinkConfig {
            url: DatabaseUrl(url.into()),
            streams,
            pool_size: default_pool_size(),
            batch_size: default_batch_size(),
            flush_interval: default_flush_interval(),
            connect_timeout: default_connect_timeout(),
            shutdown_timeout: default_shutdown_timeout(),
            retention: RetentionConfig::default(),
            buffer: BufferConfig::default(),
        }
    }
}

impl Component for MysqlSinkConfig {
    fn kind(&self) -> &'static str {
        "mysql"
    }

    fn problems(&self) -> Vec<Problem> {
        let mut problems = crate::stream_problems(&self.streams);
        if let Err(problem) = self.url.check() {
            problems.push(Problem::new("url", problem));
        }
        problems
    }

    fn describe(&self) -> String {
        format!("mysql://{}", self.url.endpoint())
    }
}

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

/// A database URL. It may carry a password, so it prints as its endpoint only.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(pub String);

impl DatabaseUrl {
    /// `host:port/database`, for messages: never the credentials.
    pub fn endpoint(&self) -> String {
        match MySqlConnectOptions::from_str(&self.0) {
            Ok(options) => endpoint(&options),
            Err(_) => "(invalid URL)".to_owned(),
        }
    }

    /// The connection options the URL gives (TLS included, from `ssl-mode` and friends): the
    /// sink and the API's reads connect the same way.
    pub fn connect_options(&self) -> Result<MySqlConnectOptions, String> {
        MySqlConnectOptions::from_str(&self.0).map_err(|e| format!("invalid MySQL URL: {e}"))
    }

    /// Checks the URL's syntax, for `sluice validate`.
    pub fn check(&self) -> Result<(), String> {
        let scheme = self.0.split_once("://").map(|(scheme, _)| scheme);
        if !matches!(scheme, Some("mysql" | "mariadb")) {
            return Err(
                "invalid MySQL URL: it must start with mysql:// (or mariadb://)".to_owned(),
            );
        }
        MySqlConnectOptions::from_str(&self.0)
            .map(drop)
            .map_err(|e| format!("invalid MySQL URL: {e}"))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.endpoint())
    }
}

fn endpoint(options: &MySqlConnectOptions) -> String {
    let database = options.get_database().unwrap_or("");
    match options.get_socket() {
        Some(socket) => format!("{}/{database}", socket.display()),
        None => format!("{}:{}/{database}", options.get_host(), options.get_port()),
    }
}

/// Why the `mysql` sink stopped.
#[derive(Debug, thiserror::Error)]
pub enum MysqlSinkError {
    #[error("invalid MySQL URL: {source}")]
    InvalidUrl { source: sqlx::Error },
    #[error("cannot connect to MySQL at {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: sqlx::Error,
    },
    #[error("cannot create database `{database}` at {endpoint}: {source}")]
    CreateDatabase {
        endpoint: String,
        database: String,
        source: sqlx::Error,
    },
    #[error("cannot migrate the schema of MySQL database {endpoint}: {source}")]
    Migrate {
        endpoint: String,
        source: sqlx::migrate::MigrateError,
    },
    #[error(
        "MySQL database {endpoint} does not match Sluice's schema: table {table} has no column {column}"
    )]
    MissingColumn {
        endpoint: String,
        table: &'static str,
        column: &'static str,
    },
    #[error("cannot write table {table} of MySQL database {endpoint}: {source}")]
    Write {
        endpoint: String,
        table: &'static str,
        source: sqlx::Error,
    },
    /// A rollup table of an extra width whose minute table the schema lacks, or a row for a
    /// table the sink did not prepare: a bug, not bad input.
    #[error("no statement for table {table}")]
    UnknownTable { table: &'static str },
    #[error(
        "MySQL at {endpoint} stayed unavailable for the shutdown timeout: abandoned {records} records held in memory"
    )]
    Abandoned { endpoint: String, records: u64 },
    #[error(transparent)]
    Buffer(#[from] BufferError),
}

impl MysqlSinkError {
    /// Whether waiting and trying again may succeed: the server is down, restarting,
    /// overloaded or failing over; a lock wait timed out or a deadlock was broken.
    pub fn is_retriable(&self) -> bool {
        match self {
            MysqlSinkError::Connect { source, .. }
            | MysqlSinkError::CreateDatabase { source, .. }
            | MysqlSinkError::Write { source, .. } => is_retriable(source),
            MysqlSinkError::Migrate { source, .. } => match source {
                sqlx::migrate::MigrateError::Execute(e)
                | sqlx::migrate::MigrateError::ExecuteMigration(e, _) => is_retriable(e),
                _ => false,
            },
            MysqlSinkError::InvalidUrl { .. }
            | MysqlSinkError::MissingColumn { .. }
            | MysqlSinkError::UnknownTable { .. }
            | MysqlSinkError::Abandoned { .. }
            | MysqlSinkError::Buffer(_) => false,
        }
    }
}

impl Retriable for MysqlSinkError {
    fn is_retriable(&self) -> bool {
        MysqlSinkError::is_retriable(self)
    }
}

/// MySQL/MariaDB error numbers worth waiting out.
const RETRIABLE_ERRORS: &[u16] = &[
    1040, // too many connections
    1053, // server shutdown in progress
    1152, 1153, 1158, 1159, 1160, 1161, // aborted connection, packet and network errors
    1205, // lock wait timeout
    1213, // deadlock
    1290, // --read-only (a failover in progress)
    1317, // query interrupted
    1836, // read-only mode
    1927, // connection killed
    2002, 2003, 2006, 2013, // cannot connect, server gone, lost connection
    4031, // disconnected by the server for inactivity
];

/// Whether a sqlx error is transient: connection-level failures, and the server errors above.
pub fn is_retriable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<MySqlDatabaseError>()
            .is_some_and(|e| RETRIABLE_ERRORS.contains(&e.number())),
        _ => false,
    }
}

fn error_number(error: &sqlx::Error) -> Option<u16> {
    match error {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<MySqlDatabaseError>()
            .map(MySqlDatabaseError::number),
        _ => None,
    }
}

/// MySQL's "unknown database".
const ER_BAD_DB_ERROR: u16 = 1049;

/// Runs the sink until its input closes: writes everything received, then closes the pool.
pub async fn run(config: MysqlSinkConfig, mut ctx: SinkContext) -> Result<(), MysqlSinkError> {
    let options = MySqlConnectOptions::from_str(&config.url.0)
        .map_err(|source| MysqlSinkError::InvalidUrl { source })?;
    let endpoint = endpoint(&options);
    let mut retry = Retry::new("MySQL", &endpoint, config.shutdown_timeout);
    let store = loop {
        match MysqlStore::open(&config, options.clone(), &endpoint, &ctx.windows).await {
            Ok(store) => break store,
            Err(error) => {
                if let Some(stop) = retry.wait_or_fail(error, 0, &mut ctx).await? {
                    return finish(stop, &endpoint);
                }
            }
        }
    };
    retry.recovered(&ctx);
    info!(sink = %ctx.name, %endpoint, "Connected to MySQL; the schema is up to date.");
    let retention = retention::spawn(
        config.retention.clone(),
        store.pool.clone(),
        store.tables.clone(),
        ctx.name.clone(),
        ctx.metrics.clone(),
        ctx.shutdown.clone(),
    );

    let result = write_until_closed(&config, &mut ctx, &store, &mut retry).await;
    retention.stop().await;
    store.pool.close().await;
    match &result {
        Ok(()) => info!(sink = %ctx.name, rows = ctx.metrics.written_total(),
            "Closed the MySQL connections."),
        Err(error) => error!(sink = %ctx.name, %error, "The MySQL sink stopped."),
    }
    result
}

async fn write_until_closed(
    config: &MysqlSinkConfig,
    ctx: &mut SinkContext,
    store: &MysqlStore,
    retry: &mut Retry,
) -> Result<(), MysqlSinkError> {
    loop {
        let (mut batch, closed) = gather(
            ctx,
            &config.streams,
            config.batch_size.get(),
            config.flush_interval,
        )
        .await;
        if let Some(stop) = store.flush(&mut batch, ctx, retry).await? {
            return finish(stop, &store.endpoint);
        }
        ctx.input.commit().await?;
        if closed {
            return Ok(());
        }
    }
}

/// One table's share of a batch, as column values, and whether it is in the database yet.
struct TableRows<'a> {
    table: &'static Table,
    values: Vec<Value<'a>>,
    written: bool,
}

impl TableRows<'_> {
    fn rows(&self) -> usize {
        self.values.len() / self.table.columns.len()
    }
}

/// The pool and the SQL of every table's statements.
struct MysqlStore {
    endpoint: String,
    pool: MySqlPool,
    /// Every table written: SPEC §3's and the rollup tables of the extra widths.
    tables: Vec<&'static Table>,
    /// `sql[table][log2(rows)]`, built once so the statement cache prepares each only once.
    sql: HashMap<&'static str, Vec<Arc<str>>>,
    limits: HashMap<&'static str, Vec<Limit>>,
    /// Parts a table's rows are split into by key, written in parallel on their own
    /// connections: one connection's round trips and commits leave the server idle.
    partitions: usize,
}

impl MysqlStore {
    /// Connects (`SELECT 1`), creates the database if it does not exist, migrates the schema,
    /// creates the rollup tables of the extra `windows`, and checks that every column the
    /// sink writes is there.
    async fn open(
        config: &MysqlSinkConfig,
        options: MySqlConnectOptions,
        endpoint: &str,
        windows: &[u32],
    ) -> Result<MysqlStore, MysqlSinkError> {
        let connect_error = |source| MysqlSinkError::Connect {
            endpoint: endpoint.to_owned(),
            source,
        };
        let pool = MySqlPoolOptions::new()
            .max_connections(config.pool_size.get())
            .acquire_timeout(config.connect_timeout)
            .connect_lazy_with(options.clone());
        match sqlx::query("SELECT 1").execute(&pool).await {
            Ok(_) => {}
            Err(error) if error_number(&error) == Some(ER_BAD_DB_ERROR) => {
                create_database(&config.url, &options, endpoint).await?;
                sqlx::query("SELECT 1")
                    .execute(&pool)
                    .await
                    .map_err(connect_error)?;
            }
            Err(error) => return Err(connect_error(error)),
        }
        sqlx::migrate!("migrations/mysql")
            .run(&pool)
            .await
            .map_err(|source| MysqlSinkError::Migrate {
                endpoint: endpoint.to_owned(),
                source,
            })?;
        let tables = rows::tables_for(windows);
        for table in tables
            .iter()
            .filter(|t| t.name != rows::table(t.stream).name)
        {
            // The migration has every minute table (a test checks it).
            let ddl = rows::window_table_ddl(SCHEMA, table)
                .ok_or(MysqlSinkError::UnknownTable { table: table.name })?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(ddl))
                .execute(&pool)
                .await
                .map_err(|source| MysqlSinkError::Write {
                    endpoint: endpoint.to_owned(),
                    table: table.name,
                    source,
                })?;
        }
        check_columns(&pool, endpoint, &tables).await?;
        Ok(MysqlStore {
            endpoint: endpoint.to_owned(),
            pool,
            sql: tables
                .iter()
                .map(|table| {
                    let sizes = statement_sizes(table);
                    let sql = sizes.map(|rows| Arc::from(insert_sql(table, rows)));
                    (table.name, sql.collect())
                })
                .collect(),
            limits: tables.iter().map(|t| (t.name, limits(t))).collect(),
            tables,
            partitions: config.pool_size.get() as usize,
        })
    }

    /// Writes and empties `batch`, retrying transient failures. `Some(stop)` if the sink must
    /// stop instead (shutdown while the store is down).
    async fn flush(
        &self,
        batch: &mut Batch,
        ctx: &mut SinkContext,
        retry: &mut Retry,
    ) -> Result<Option<Stop>, MysqlSinkError> {
        if batch.rows == 0 {
            return Ok(None);
        }
        let taken = std::mem::take(batch);
        let mut tables = Vec::new();
        for (table, values) in taken.table_values(ctx) {
            for values in partition(table, values, self.partitions) {
                tables.push(TableRows {
                    table,
                    values,
                    written: false,
                });
            }
        }
        let rows: usize = tables.iter().map(TableRows::rows).sum();
        loop {
            // Tables in parallel, each on its own connection; a table written before a
            // failure is not written again.
            let pending = tables.iter().enumerate().filter(|(_, t)| !t.written);
            let attempts = pending.map(|(i, t)| async move { (i, self.write_table(t).await) });
            let mut failure = None;
            for (i, result) in join_all(attempts).await {
                match result {
                    Ok(truncated) => {
                        let table = &mut tables[i];
                        table.written = true;
                        ctx.metrics.written(table.table.stream, table.rows());
                        if truncated > 0 {
                            warn!(sink = %ctx.name, table = table.table.name, values = truncated,
                                "Cut text values longer than their MySQL column.");
                        }
                    }
                    Err(error) => failure = failure.or(Some(error)),
                }
            }
            let Some(error) = failure else { break };
            let unwritten = tables
                .iter()
                .filter(|t| !t.written)
                .map(TableRows::rows)
                .sum();
            if let Some(stop) = retry.wait_or_fail(error, unwritten, ctx).await? {
                return Ok(Some(stop));
            }
        }
        retry.recovered(ctx);
        debug!(sink = %ctx.name, rows, "Flushed rows to MySQL.");
        Ok(None)
    }

    /// One table's rows in one transaction. Returns how many text values were cut.
    async fn write_table(&self, rows: &TableRows<'_>) -> Result<u64, MysqlSinkError> {
        let write_error = |source| MysqlSinkError::Write {
            endpoint: self.endpoint.clone(),
            table: rows.table.name,
            source,
        };
        let name = rows.table.name;
        let (Some(sql), Some(limits)) = (self.sql.get(name), self.limits.get(name)) else {
            // Batch::table_values only yields the tables of the sink's widths.
            return Err(MysqlSinkError::UnknownTable { table: name });
        };
        let mut connection = self.pool.acquire().await.map_err(write_error)?;
        let mut tx = connection.begin().await.map_err(write_error)?;
        let truncated = insert(&mut tx, rows.table, limits, sql, &rows.values)
            .await
            .map_err(write_error)?;
        tx.commit().await.map_err(write_error)?;
        Ok(truncated)
    }
}

/// Splits a table's rows into `parts` by a hash of their key, keeping arrival order within a
/// part: rows of one key (a provisional rollup and its final one) stay in order on one
/// connection, while different keys are written in parallel.
fn partition<'a>(table: &Table, values: Vec<Value<'a>>, parts: usize) -> Vec<Vec<Value<'a>>> {
    let columns = table.columns.len();
    if parts <= 1 || values.len() / columns < 2 * MIN_ROWS_PER_PART {
        return vec![values];
    }
    let key: Vec<usize> = table
        .key
        .iter()
        .filter_map(|k| table.columns.iter().position(|c| c == k))
        .collect();
    let mut split: Vec<Vec<Value<'a>>> = (0..parts)
        .map(|_| Vec::with_capacity(values.len() / parts + columns))
        .collect();
    let mut values = values.into_iter();
    let mut row = Vec::with_capacity(columns);
    loop {
        row.extend(values.by_ref().take(columns));
        if row.len() < columns {
            break;
        }
        let mut hasher = rustc_hash::FxHasher::default();
        for &i in &key {
            match &row[i] {
                Value::Text(text) => text.hash(&mut hasher),
                Value::Int(n) => n.hash(&mut hasher),
                Value::Real(x) => x.to_bits().hash(&mut hasher),
                Value::Null => 0u8.hash(&mut hasher),
            }
        }
        let part = (hasher.finish() % parts as u64) as usize;
        split[part].append(&mut row);
    }
    split.retain(|part| !part.is_empty());
    split
}

/// Fewer rows than this in a part would cost more in round trips than parallelism gains.
const MIN_ROWS_PER_PART: usize = 256;

/// `CREATE DATABASE IF NOT EXISTS` for the URL's database, over a connection to no database.
async fn create_database(
    url: &DatabaseUrl,
    options: &MySqlConnectOptions,
    endpoint: &str,
) -> Result<(), MysqlSinkError> {
    let database = options.get_database().unwrap_or("").to_owned();
    let create_error = |source| MysqlSinkError::CreateDatabase {
        endpoint: endpoint.to_owned(),
        database: database.clone(),
        source,
    };
    if database.is_empty() || database.contains('`') {
        return Err(create_error(sqlx::Error::Configuration(
            format!("unusable database name `{database}`").into(),
        )));
    }
    let mut server_url = url::Url::parse(&url.0)
        .map_err(|e| create_error(sqlx::Error::Configuration(Box::new(e))))?;
    server_url.set_path("");
    let server = MySqlConnectOptions::from_str(server_url.as_str()).map_err(create_error)?;
    let mut connection = sqlx::mysql::MySqlConnection::connect_with(&server)
        .await
        .map_err(create_error)?;
    let sql = format!(
        "CREATE DATABASE IF NOT EXISTS `{database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut connection)
        .await
        .map_err(create_error)?;
    info!(%endpoint, "Created the MySQL database.");
    connection.close().await.map_err(create_error)?;
    Ok(())
}

/// Every column the sink writes must exist: a table changed by hand is reported by name at
/// start, not as a failed write hours later.
async fn check_columns(
    pool: &MySqlPool,
    endpoint: &str,
    tables: &[&'static Table],
) -> Result<(), MysqlSinkError> {
    let rows = sqlx::query(
        "SELECT CAST(table_name AS CHAR), CAST(column_name AS CHAR) \
         FROM information_schema.columns WHERE table_schema = DATABASE()",
    )
    .fetch_all(pool)
    .await
    .map_err(|source| MysqlSinkError::Connect {
        endpoint: endpoint.to_owned(),
        source,
    })?;
    let present: BTreeSet<(String, String)> = rows
        .iter()
        .filter_map(|row| Some((row.try_get(0).ok()?, row.try_get(1).ok()?)))
        .collect();
    for table in tables {
        for column in table.columns {
            if !present.contains(&(table.name.to_owned(), (*column).to_owned())) {
                return Err(MysqlSinkError::MissingColumn {
                    endpoint: endpoint.to_owned(),
                    table: table.name,
                    column,
                });
            }
        }
    }
    Ok(())
}

/// Ends the run after a [`Stop`].
fn finish(stop: Stop, endpoint: &str) -> Result<(), MysqlSinkError> {
    stop.end(|records| MysqlSinkError::Abandoned {
        endpoint: endpoint.to_owned(),
        records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows;

    #[test]
    fn partitions_keep_every_row_and_the_order_of_each_key() {
        let table = rows::table(StreamName::PlatformRollups);
        let columns = table.columns.len();
        // 2 000 rows over 50 keys; column 7 (`samples`) numbers the rows in arrival order.
        let values: Vec<Value<'static>> = (0..2_000i64)
            .flat_map(|i| {
                let mut row = vec![Value::Null; columns];
                row[0] = Value::Text(format!("origin-{}", i % 50).into());
                row[1] = Value::Text("job".into());
                row[2] = Value::Text("0".into());
                row[3] = Value::Text("name".into());
                row[4] = Value::Int(60);
                row[7] = Value::Int(i);
                row
            })
            .collect();
        let parts = partition(table, values, 4);
        assert_eq!(parts.len(), 4);
        let mut seen = Vec::new();
        for part in &parts {
            let mut last_of_key = std::collections::HashMap::new();
            for row in part.chunks_exact(columns) {
                let (Value::Text(origin), Value::Int(i)) = (&row[0], &row[7]) else {
                    panic!("row shape");
                };
                if let Some(previous) = last_of_key.insert(origin.clone(), *i) {
                    assert!(previous < *i, "rows of {origin} out of order");
                }
                seen.push(*i);
            }
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..2_000).collect::<Vec<_>>());
        // Few rows stay in one part.
        let few = vec![Value::Null; columns * 10];
        assert_eq!(partition(table, few, 4).len(), 1);
    }
}
