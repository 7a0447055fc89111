//! The one SQL writer of the `sqlite` and `mysql` sinks: each table's share of a batch
//! ([`TableRows`]) goes in through multi-row INSERTs built once per table and size
//! ([`SqlWriter`]), and the rollup tables of the extra widths are created at start like
//! their minute tables ([`create_window_tables`]). What differs between the stores — the
//! words that make an INSERT insert-or-ignore or an upsert, how many rows and parameters a
//! statement may hold, column lengths, how a value is bound — is a [`Dialect`], implemented
//! beside each sink (`sqlite/dialect.rs`, `mysql/dialect.rs`).
//!
//! A statement is a round trip (to SQLite's connection thread, or to the server), so rows go
//! many to a statement: as many statements of the largest size as fit, then the binary
//! decomposition of the rest, so a table needs at most a handful of distinct statements and
//! the store's statement cache (keyed by SQL text) prepares each only once.

mod dialect;

pub(crate) use dialect::{
    Dialect, Limit, fit, insert_sql, statement_sizes, text_limits, update_columns,
};

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use sqlx::Arguments;

use crate::rows::{self, Table, Value};

/// One table's share of a batch, as column values, row after row.
#[derive(Debug)]
pub(crate) struct TableRows<'a> {
    pub(crate) table: &'static Table,
    pub(crate) values: Vec<Value<'a>>,
}

impl TableRows<'_> {
    pub(crate) fn rows(&self) -> usize {
        self.values.len() / self.table.columns.len()
    }
}

/// Every table's INSERTs in dialect `D`, and writing a table's rows with them.
#[derive(Debug)]
pub(crate) struct SqlWriter<D> {
    tables: HashMap<&'static str, Inserts>,
    dialect: PhantomData<fn() -> D>,
}

/// One table's statements.
#[derive(Debug)]
struct Inserts {
    /// `sql[i]` inserts 2^i rows.
    sql: Vec<Arc<str>>,
    /// The text limit of each column, in column order.
    limits: Vec<Limit>,
}

/// Why rows were not inserted.
#[derive(Debug)]
pub(crate) enum InsertError {
    /// The writer has no statements for the table: a bug (the writer is made for the tables
    /// of the sink's widths, and a batch holds no others), not bad input.
    UnknownTable,
    Sql(sqlx::Error),
}

impl<D: Dialect> SqlWriter<D> {
    /// The statements of `tables`.
    pub(crate) fn new(tables: &[&'static Table]) -> SqlWriter<D> {
        let tables = tables
            .iter()
            .chain([&&rows::APP_DELETES])
            .map(|table| {
                let inserts = Inserts {
                    sql: statement_sizes::<D>(table)
                        .map(|rows| Arc::from(statement_sql::<D>(table, rows)))
                        .collect(),
                    limits: text_limits::<D>(table),
                };
                (key_of(table), inserts)
            })
            .collect();
        SqlWriter {
            tables,
            dialect: PhantomData,
        }
    }

    /// Inserts `rows` on `connection`, within the caller's transaction. Returns how many
    /// text values were cut to their column's length.
    pub(crate) async fn insert(
        &self,
        connection: &mut D::Connection,
        rows: &TableRows<'_>,
    ) -> Result<u64, InsertError> {
        let inserts = self
            .tables
            .get(key_of(rows.table))
            .ok_or(InsertError::UnknownTable)?;
        let columns = rows.table.columns.len();
        let mut truncated = 0;
        let mut rest = rows.values.as_slice();
        let mut next = inserts.bind::<D>(&mut rest, columns, &mut truncated)?;
        while let Some((size, arguments)) = next {
            // The statement goes to the store when its future is first polled; the next
            // one's values are bound meanwhile, so the store's thread (SQLite's) or the
            // server does not wait for them.
            let (executed, bound) = tokio::join!(
                D::execute(connection, inserts.sql[size].clone(), arguments),
                async { inserts.bind::<D>(&mut rest, columns, &mut truncated) }
            );
            executed.map_err(InsertError::Sql)?;
            next = bound?;
        }
        Ok(truncated)
    }
}

impl Inserts {
    /// The arguments of the next statement: as many of `rest`'s rows as the largest
    /// statement that fits takes (`sql[i]` inserts 2^i rows), and that statement's index;
    /// `None` when no row is left. Adds the text values it cut to `truncated`.
    fn bind<D: Dialect>(
        &self,
        rest: &mut &[Value<'_>],
        columns: usize,
        truncated: &mut u64,
    ) -> Result<Option<(usize, D::Arguments)>, InsertError> {
        if rest.len() < columns {
            return Ok(None);
        }
        let size = (self.sql.len() - 1).min((rest.len() / columns).ilog2() as usize);
        let (chunk, tail) = rest.split_at((1 << size) * columns);
        let mut arguments = D::Arguments::default();
        // The size hint is for MySQL's buffer of encoded values; SQLite ignores it.
        arguments.reserve(chunk.len(), chunk.len() * 8);
        for (value, limit) in chunk.iter().zip(self.limits.iter().cycle()) {
            let cut = D::bind(&mut arguments, value, *limit)
                .map_err(|e| InsertError::Sql(sqlx::Error::Encode(e)))?;
            *truncated += u64::from(cut);
        }
        *rest = tail;
        Ok(Some((size, arguments)))
    }
}

/// How the writer names a table's statements: a table's deletes are not its inserts.
fn key_of(table: &Table) -> &'static str {
    match table.conflict {
        rows::Conflict::Delete => "app (deletes)",
        _ => table.name,
    }
}

/// The statement that writes `rows` rows of `table`: an INSERT, or for [`rows::APP_DELETES`]
/// a DELETE of that many keys.
fn statement_sql<D: Dialect>(table: &Table, rows: usize) -> String {
    if table.conflict == rows::Conflict::Delete {
        let keys = vec!["?"; rows].join(", ");
        return format!(
            "DELETE FROM {} WHERE {} IN ({keys})",
            table.name, table.key[0]
        );
    }
    insert_sql::<D>(table, rows)
}

/// The database's error behind a failed migration, when one of its statements failed (not
/// a migration that is missing or whose checksum changed): what says whether to try again.
pub(crate) fn migration_cause(error: &sqlx::migrate::MigrateError) -> Option<&sqlx::Error> {
    match error {
        sqlx::migrate::MigrateError::Execute(e)
        | sqlx::migrate::MigrateError::ExecuteMigration(e, _) => Some(e),
        _ => None,
    }
}

/// Why a rollup table of an extra width was not created.
#[derive(Debug)]
pub(crate) enum WindowTableError {
    /// The migration lacks its minute table (a test checks it has them all): a bug.
    NotInSchema { table: &'static str },
    Create {
        table: &'static str,
        source: sqlx::Error,
    },
}

/// Creates the rollup tables of the extra widths among `tables` (`app_metric_rollup_1h`,
/// ...), each a copy of its minute table in `D`'s migration, unless they exist.
pub(crate) async fn create_window_tables<D: Dialect>(
    connection: &mut D::Connection,
    tables: &[&'static Table],
) -> Result<(), WindowTableError> {
    for table in tables
        .iter()
        .filter(|t| t.name != rows::table(t.stream).name)
    {
        let ddl = rows::window_table_ddl(D::SCHEMA, table)
            .ok_or(WindowTableError::NotInSchema { table: table.name })?;
        D::execute(connection, ddl.into(), D::Arguments::default())
            .await
            .map_err(|source| WindowTableError::Create {
                table: table.name,
                source,
            })?;
    }
    Ok(())
}
