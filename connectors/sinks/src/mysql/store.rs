//! The `mysql` sink's pool: opening it (creating the database, migrating, checking the
//! columns) and writing a batch, each table's share split by key over the connections.

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use futures_util::future::join_all;
use sqlx::mysql::{MySql, MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::{Connection, Row};
use tracing::{debug, info, warn};

use super::error::{ER_BAD_DB_ERROR, error_number};
use super::{DatabaseUrl, MysqlSinkConfig, MysqlSinkError};
use crate::SinkContext;
use crate::batch::{Batch, BatchStore, Flow};
use crate::retry::{Retry, Stop};
use crate::rows::{self, Table, Value};
use crate::sql::{InsertError, SqlWriter, TableRows, WindowTableError, create_window_tables};

/// The pool and every table's statements.
pub(super) struct MysqlStore {
    pub(super) endpoint: String,
    pub(super) pool: MySqlPool,
    /// Every table written: SPEC §3's and the rollup tables of the extra widths.
    pub(super) tables: Vec<&'static Table>,
    writer: SqlWriter<MySql>,
    /// Parts a table's rows are split into by key, written in parallel on their own
    /// connections: one connection's round trips and commits leave the server idle.
    partitions: usize,
}

/// A part of a table's rows, and whether it is in the database yet.
struct Part<'a> {
    rows: TableRows<'a>,
    written: bool,
}

impl MysqlStore {
    /// Connects (`SELECT 1`), creates the database if it does not exist, migrates the schema,
    /// creates the rollup tables of the extra `windows`, and checks that every column the
    /// sink writes is there.
    pub(super) async fn open(
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
        migrate(&pool, &options, endpoint).await?;
        let tables = rows::tables_for(windows);
        let mut connection = pool.acquire().await.map_err(connect_error)?;
        create_window_tables::<MySql>(&mut connection, &tables)
            .await
            .map_err(|e| match e {
                WindowTableError::NotInSchema { table } => MysqlSinkError::UnknownTable { table },
                WindowTableError::Create { table, source } => MysqlSinkError::Write {
                    endpoint: endpoint.to_owned(),
                    table,
                    source,
                },
            })?;
        drop(connection);
        check_columns(&pool, endpoint, &tables).await?;
        Ok(MysqlStore {
            endpoint: endpoint.to_owned(),
            pool,
            writer: SqlWriter::new(&tables),
            tables,
            partitions: config.pool_size.get() as usize,
        })
    }

    /// One part in one transaction. Returns how many text values were cut.
    async fn write_part(&self, rows: &TableRows<'_>) -> Result<u64, MysqlSinkError> {
        let table = rows.table.name;
        let write_error = |source| MysqlSinkError::Write {
            endpoint: self.endpoint.clone(),
            table,
            source,
        };
        let mut connection = self.pool.acquire().await.map_err(write_error)?;
        let mut tx = connection.begin().await.map_err(write_error)?;
        let truncated = self
            .writer
            .insert(&mut tx, rows)
            .await
            .map_err(|e| match e {
                InsertError::UnknownTable => MysqlSinkError::UnknownTable { table },
                InsertError::Sql(source) => write_error(source),
            })?;
        tx.commit().await.map_err(write_error)?;
        Ok(truncated)
    }
}

impl BatchStore for MysqlStore {
    type Error = MysqlSinkError;

    /// Each table's share split by key into parts written in parallel; a part that failed
    /// is tried again alone.
    async fn flush(
        &mut self,
        batch: &mut Batch,
        ctx: &mut SinkContext,
        retry: &mut Retry,
        _flow: Flow,
    ) -> Result<Option<Stop>, MysqlSinkError> {
        if batch.rows == 0 {
            return Ok(None);
        }
        let taken = std::mem::take(batch);
        let mut parts = Vec::new();
        for TableRows { table, values } in taken.table_rows(ctx) {
            for values in partition(table, values, self.partitions) {
                parts.push(Part {
                    rows: TableRows { table, values },
                    written: false,
                });
            }
        }
        let rows: usize = parts.iter().map(|part| part.rows.rows()).sum();
        let store = &*self;
        loop {
            // Parts in parallel, each on its own connection; a part written before a failure
            // is not written again.
            let pending = parts.iter().enumerate().filter(|(_, p)| !p.written);
            let attempts =
                pending.map(|(i, p)| async move { (i, store.write_part(&p.rows).await) });
            let mut failure = None;
            for (i, result) in join_all(attempts).await {
                match result {
                    Ok(truncated) => {
                        let part = &mut parts[i];
                        part.written = true;
                        let table = part.rows.table;
                        ctx.metrics.written(table.stream, part.rows.rows());
                        if truncated > 0 {
                            warn!(sink = %ctx.name, table = table.name, values = truncated,
                                "Cut text values longer than their MySQL column.");
                        }
                    }
                    Err(error) => failure = failure.or(Some(error)),
                }
            }
            let Some(error) = failure else { break };
            let unwritten = parts
                .iter()
                .filter(|part| !part.written)
                .map(|part| part.rows.rows())
                .sum();
            if let Some(stop) = retry.wait_or_fail(error, unwritten, ctx).await? {
                return Ok(Some(stop));
            }
        }
        retry.recovered(ctx);
        debug!(sink = %ctx.name, rows, "Flushed rows to MySQL.");
        Ok(None)
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
/// A session lock held while the schema is migrated, so that the processes of a cluster
/// (SPEC §12) starting together on one database migrate it once. sqlx's own migration lock
/// waits with a negative timeout, which MariaDB does not take as "for ever": it returns at
/// once and two migrators race.
const MIGRATION_LOCK: &str = "sluice_schema_migration";
/// How long a sink waits for another process's migration.
const MIGRATION_LOCK_WAIT_SECONDS: i64 = 120;

/// Migrates the schema through `pool` while a session of its own (outside the pool, which
/// may have one connection) holds the migration lock.
async fn migrate(
    pool: &sqlx::MySqlPool,
    options: &MySqlConnectOptions,
    endpoint: &str,
) -> Result<(), MysqlSinkError> {
    let migrate_error = |source| MysqlSinkError::Migrate {
        endpoint: endpoint.to_owned(),
        source,
    };
    let mut lock = sqlx::mysql::MySqlConnection::connect_with(options)
        .await
        .map_err(|e| migrate_error(sqlx::migrate::MigrateError::Execute(e)))?;
    let connection = &mut lock;
    let locked: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(CONCAT(?, DATABASE()), ?)")
        .bind(MIGRATION_LOCK)
        .bind(MIGRATION_LOCK_WAIT_SECONDS)
        .fetch_one(&mut *connection)
        .await
        .map_err(|e| migrate_error(sqlx::migrate::MigrateError::Execute(e)))?;
    if locked != Some(1) {
        return Err(migrate_error(sqlx::migrate::MigrateError::Execute(
            sqlx::Error::Protocol(format!(
                "another process held the schema migration lock for {MIGRATION_LOCK_WAIT_SECONDS}s"
            )),
        )));
    }
    let migrated = sqlx::migrate!("migrations/mysql").run(pool).await;
    // Closing the session releases the lock too: a failure to release ends with it anyway.
    let _ = sqlx::query("SELECT RELEASE_LOCK(CONCAT(?, DATABASE()))")
        .bind(MIGRATION_LOCK)
        .execute(&mut *connection)
        .await;
    let _ = lock.close().await;
    migrated.map_err(migrate_error)
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_model::records::StreamName;

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
