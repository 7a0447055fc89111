//! The INSERT statements of the `sqlite` sink: built once per table and size, then reused
//! from sqlx's statement cache.

use std::sync::Arc;

use sqlx::sqlite::{SqliteArguments, SqliteConnection};
use sqlx::{Arguments, AssertSqlSafe};

use crate::rows::{Conflict, Table, Value};

/// Rows per INSERT statement at most (a power of two; see [`statement_sizes`]). Each
/// statement is a round trip to sqlx's connection thread. Measured on container metrics
/// (release, 2 busy cores): 1 row a statement ~33 k rows/s, 64 ~155 k, 256 ~160 k (noise).
pub const MAX_ROWS_PER_STATEMENT: usize = 64;

/// SQLite's default cap on bound parameters in one statement (`SQLITE_MAX_VARIABLE_NUMBER`).
const MAX_PARAMETERS: usize = 32_766;

/// Inserts rows in statements of the sizes of `sql`: as many of the largest as fit, then
/// the binary decomposition of the rest, so a table needs at most a handful of statements.
pub(super) async fn insert(
    connection: &mut SqliteConnection,
    table: &Table,
    sql: &[Arc<str>],
    values: &[Value<'_>],
) -> Result<(), sqlx::Error> {
    let columns = table.columns.len();
    let mut rest = values;
    while !rest.is_empty() {
        let rows = rest.len() / columns;
        if rows == 0 {
            break;
        }
        // sql[i] inserts 2^i rows; take the largest that fits.
        let size = (sql.len() - 1).min(rows.ilog2() as usize);
        let (chunk, tail) = rest.split_at((1 << size) * columns);
        let mut arguments = SqliteArguments::default();
        arguments.reserve(chunk.len(), 0);
        for value in chunk {
            match value {
                Value::Null => arguments.add(None::<i64>),
                Value::Int(n) => arguments.add(*n),
                Value::Real(x) => arguments.add(*x),
                Value::Text(s) => arguments.add(s.as_ref()),
            }
            .map_err(sqlx::Error::Encode)?;
        }
        sqlx::query_with(AssertSqlSafe(sql[size].clone()), arguments)
            .execute(&mut *connection)
            .await?;
        rest = tail;
    }
    Ok(())
}

/// The statement sizes of a table: 1, 2, 4, ... rows, up to [`MAX_ROWS_PER_STATEMENT`] and
/// SQLite's parameter limit.
pub(super) fn statement_sizes(table: &Table) -> impl Iterator<Item = usize> {
    let max = MAX_ROWS_PER_STATEMENT.min(MAX_PARAMETERS / table.columns.len());
    (0..=max.ilog2()).map(|i| 1 << i)
}

/// `INSERT` of `rows` rows into `table`: or-ignore for raw streams, an upsert for rollups.
/// Only static table and column names go into the text; values are bound.
pub(super) fn insert_sql(table: &Table, rows: usize) -> String {
    let columns = table.columns.join(", ");
    let placeholders = format!("({})", vec!["?"; table.columns.len()].join(", "));
    let values = vec![placeholders; rows].join(", ");
    match table.conflict {
        Conflict::Ignore => format!(
            "INSERT OR IGNORE INTO {} ({columns}) VALUES {values}",
            table.name
        ),
        Conflict::Update => {
            let updates = table
                .columns
                .iter()
                .filter(|c| !table.key.contains(c))
                .map(|c| format!("{c} = excluded.{c}"))
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "INSERT INTO {} ({columns}) VALUES {values} ON CONFLICT ({}) DO UPDATE SET {updates}",
                table.name,
                table.key.join(", ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::{self, TABLES};
    use sluice_model::records::StreamName;

    #[test]
    fn statement_sizes_stay_within_the_parameter_limit() {
        for table in &TABLES {
            let sizes: Vec<usize> = statement_sizes(table).collect();
            assert_eq!(sizes.first(), Some(&1));
            assert!(
                sizes
                    .iter()
                    .all(|n| n * table.columns.len() <= MAX_PARAMETERS)
            );
            assert_eq!(sizes.last(), Some(&MAX_ROWS_PER_STATEMENT));
        }
    }

    #[test]
    fn rollups_upsert_every_column_but_the_key() {
        let table = rows::table(StreamName::PlatformRollups);
        let sql = insert_sql(table, 2);
        assert!(sql.starts_with("INSERT INTO platform_metric_rollup (origin, job,"));
        assert!(sql.contains(
            "ON CONFLICT (origin, job, instance, name, minute) DO UPDATE SET kind = excluded.kind"
        ));
        assert!(!sql.contains("minute = excluded.minute"));
        assert_eq!(sql.matches('?').count(), 2 * table.columns.len());
        let raw = insert_sql(rows::table(StreamName::Errors), 1);
        assert_eq!(
            raw,
            "INSERT OR IGNORE INTO platform_error (origin, ts, source, code, message) VALUES (?, ?, ?, ?, ?)"
        );
    }
}
