//! SQLite's dialect: `INSERT OR IGNORE` for raw streams, `ON CONFLICT (key) DO UPDATE` for
//! rollups, 64 rows a statement.

use std::sync::Arc;

use sqlx::error::BoxDynError;
use sqlx::sqlite::{Sqlite, SqliteArguments, SqliteConnection};
use sqlx::{Arguments, AssertSqlSafe};

use crate::rows::{Conflict, Table, Value};
use crate::sql::{Dialect, Limit, update_columns};

/// Rows per INSERT statement at most (a power of two). Each statement is a round trip to
/// sqlx's connection thread. Measured on container metrics (release, 2 busy cores): 1 row a
/// statement ~33 k rows/s, 64 ~155 k, 256 ~160 k (noise).
pub const MAX_ROWS_PER_STATEMENT: usize = 64;

/// SQLite's default cap on bound parameters in one statement (`SQLITE_MAX_VARIABLE_NUMBER`).
const MAX_PARAMETERS: usize = 32_766;

impl Dialect for Sqlite {
    const SCHEMA: &'static str = concat!(
        include_str!("../../migrations/sqlite/0001_tables.sql"),
        include_str!("../../migrations/sqlite/0002_metadata.sql")
    );
    const MAX_ROWS_PER_STATEMENT: usize = MAX_ROWS_PER_STATEMENT;
    const MAX_PARAMETERS: usize = MAX_PARAMETERS;

    fn insert_into(conflict: Conflict) -> &'static str {
        match conflict {
            Conflict::Ignore => "INSERT OR IGNORE INTO",
            Conflict::Delete => "DELETE FROM",
            Conflict::Update => "INSERT INTO",
        }
    }

    fn on_conflict(table: &Table) -> Option<String> {
        match table.conflict {
            Conflict::Ignore | Conflict::Delete => None,
            Conflict::Update => Some(format!(
                "ON CONFLICT ({}) DO UPDATE SET {}",
                table.key.join(", "),
                update_columns(table, |c| format!("excluded.{c}"))
            )),
        }
    }

    /// SQLite's `TEXT` takes any length.
    fn text_limit(_table: &str, _column: &str) -> Limit {
        Limit::None
    }

    /// As it is: SQLite stores a NaN as NULL by itself.
    fn bind(
        arguments: &mut SqliteArguments,
        value: &Value<'_>,
        _limit: Limit,
    ) -> Result<bool, BoxDynError> {
        match value {
            Value::Null => arguments.add(None::<i64>),
            Value::Int(n) => arguments.add(*n),
            Value::Real(x) => arguments.add(*x),
            Value::Text(s) => arguments.add(s.as_ref()),
        }?;
        Ok(false)
    }

    async fn execute(
        connection: &mut SqliteConnection,
        sql: Arc<str>,
        arguments: SqliteArguments,
    ) -> Result<(), sqlx::Error> {
        sqlx::query_with(AssertSqlSafe(sql), arguments)
            .execute(connection)
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::{self, TABLES};
    use crate::sql::{insert_sql, statement_sizes};
    use sluice_model::records::StreamName;

    #[test]
    fn statement_sizes_stay_within_the_parameter_limit() {
        for table in &TABLES {
            let sizes: Vec<usize> = statement_sizes::<Sqlite>(table).collect();
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
        let sql = insert_sql::<Sqlite>(table, 2);
        assert!(sql.starts_with("INSERT INTO platform_metric_rollup (origin, job,"));
        assert!(sql.contains(
            "ON CONFLICT (origin, job, instance, name, minute) DO UPDATE SET kind = excluded.kind"
        ));
        assert!(!sql.contains("minute = excluded.minute"));
        assert_eq!(sql.matches('?').count(), 2 * table.columns.len());
        let raw = insert_sql::<Sqlite>(rows::table(StreamName::Errors), 1);
        assert_eq!(
            raw,
            "INSERT OR IGNORE INTO platform_error (origin, ts, source, code, message) VALUES (?, ?, ?, ?, ?)"
        );
    }
}
