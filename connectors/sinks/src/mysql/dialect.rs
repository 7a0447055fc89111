//! MySQL's dialect: multi-row `INSERT … ON DUPLICATE KEY UPDATE`, a no-op for raw streams
//! and an overwrite for rollups; 1 024 rows a statement; text cut to the columns of the
//! MySQL schema, and NaN or infinity stored as NULL.

use std::sync::Arc;

use sqlx::error::BoxDynError;
use sqlx::mysql::{MySql, MySqlArguments, MySqlConnection};
use sqlx::{Arguments, AssertSqlSafe};

use crate::rows::{Conflict, Table, Value};
use crate::sql::{Dialect, Limit, fit, update_columns};

/// The migration the tables are made from (the rollup tables of extra widths too).
const SCHEMA: &str = concat!(
    include_str!("../../migrations/mysql/0001_tables.sql"),
    include_str!("../../migrations/mysql/0002_metadata.sql")
);

/// Rows per INSERT statement at most (a power of two). A statement is a round trip and a
/// parse; more rows per statement amortise both until the packet grows large. Measured on
/// container metrics against a local MariaDB: 1024 rows is within noise of 4096.
pub const MAX_ROWS_PER_STATEMENT: usize = 1024;

/// MySQL's cap on placeholders in one prepared statement.
const MAX_PARAMETERS: usize = 65_535;

const TEXT_BYTES: usize = 65_535;
const MEDIUMTEXT_BYTES: usize = 16_777_215;

impl Dialect for MySql {
    const SCHEMA: &'static str = SCHEMA;
    const MAX_ROWS_PER_STATEMENT: usize = MAX_ROWS_PER_STATEMENT;
    const MAX_PARAMETERS: usize = MAX_PARAMETERS;

    /// Not `INSERT IGNORE`: besides duplicate keys it turns every data error into a warning
    /// and stores a clamped or cut value, so a schema changed by hand would corrupt rows
    /// silently instead of stopping the sink.
    fn insert_into(_conflict: Conflict) -> &'static str {
        "INSERT INTO"
    }

    /// Raw streams keep the row already stored under a key (`key = key`, a no-op); rollups
    /// overwrite every column but the key.
    fn on_conflict(table: &Table) -> Option<String> {
        let updates = match table.conflict {
            Conflict::Delete => return None,
            Conflict::Ignore => {
                let key = table.key[0];
                format!("{key} = {key}")
            }
            // `VALUES(col)` is understood by MariaDB and MySQL alike (MySQL 8 merely
            // deprecates it in favour of a row alias MariaDB lacks).
            Conflict::Update => update_columns(table, |c| format!("VALUES({c})")),
        };
        Some(format!("ON DUPLICATE KEY UPDATE {updates}"))
    }

    /// The limit of a text column of the MySQL schema (`migrations/mysql/0001_tables.sql`;
    /// a test keeps the two in step); `VARCHAR(255)` unless the schema says otherwise.
    fn text_limit(table: &str, column: &str) -> Limit {
        match (table, column) {
            ("log_message" | "app_event", "message") => Limit::Bytes(MEDIUMTEXT_BYTES),
            ("http_start_stop", "uri" | "user_agent") | ("platform_error", "message") => {
                Limit::Bytes(TEXT_BYTES)
            }
            ("log_message", "id") => Limit::Chars(32),
            ("log_message", "message_type") => Limit::Chars(3),
            ("http_start_stop", "request_id" | "app_id") => Limit::Chars(36),
            ("http_start_stop", "peer_type") | ("platform_metric_rollup", "kind") => {
                Limit::Chars(8)
            }
            ("http_start_stop", "method") => Limit::Chars(24),
            ("app_event", "event") => Limit::Chars(16),
            ("platform_metric_rollup", "origin" | "job" | "instance" | "name") => Limit::Chars(191),
            ("app", "app_id" | "space_id" | "org_id")
            | ("space_metric_rollup", "space_id")
            | ("org_metric_rollup", "org_id") => Limit::Chars(191),
            _ => Limit::Chars(255),
        }
    }

    fn bind(
        arguments: &mut MySqlArguments,
        value: &Value<'_>,
        limit: Limit,
    ) -> Result<bool, BoxDynError> {
        let mut cut = false;
        match value {
            Value::Null => arguments.add(None::<i64>),
            Value::Int(n) => arguments.add(*n),
            // MySQL has no NaN or infinity; SQLite stores a NaN as NULL, and so does this.
            Value::Real(x) if !x.is_finite() => arguments.add(None::<f64>),
            Value::Real(x) => arguments.add(*x),
            Value::Text(text) => {
                let (text, was_cut) = fit(text, limit);
                cut = was_cut;
                arguments.add(text)
            }
        }?;
        Ok(cut)
    }

    async fn execute(
        connection: &mut MySqlConnection,
        sql: Arc<str>,
        arguments: MySqlArguments,
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
    use crate::sql::{insert_sql, statement_sizes, text_limits};
    use sluice_model::records::StreamName;

    #[test]
    fn statement_sizes_stay_within_the_placeholder_limit() {
        for table in &TABLES {
            let sizes: Vec<usize> = statement_sizes::<MySql>(table).collect();
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
    fn rollups_upsert_every_column_but_the_key_and_raw_rows_keep_the_stored_one() {
        let table = rows::table(StreamName::AppRollups);
        let sql = insert_sql::<MySql>(table, 2);
        assert!(sql.starts_with("INSERT INTO app_metric_rollup (app_id, minute, instances,"));
        assert!(sql.contains("ON DUPLICATE KEY UPDATE instances = VALUES(instances),"));
        assert!(!sql.contains("minute = VALUES(minute)"));
        assert_eq!(sql.matches('?').count(), 2 * table.columns.len());
        assert_eq!(
            insert_sql::<MySql>(rows::table(StreamName::Errors), 1),
            "INSERT INTO platform_error (origin, ts, source, code, message) VALUES (?, ?, ?, ?, ?) \
             ON DUPLICATE KEY UPDATE origin = origin"
        );
    }

    #[test]
    fn wider_rollup_tables_are_their_minute_tables_renamed() {
        for stream in [StreamName::AppRollups, StreamName::PlatformRollups] {
            let hour = rows::window_table(stream, 3600);
            let ddl = rows::window_table_ddl(SCHEMA, hour).expect("the minute table is there");
            assert!(ddl.starts_with(&format!("CREATE TABLE IF NOT EXISTS {} (", hour.name)));
            assert!(
                ddl.contains(&format!("KEY {}_minute (minute)", hour.name)),
                "{ddl}"
            );
            assert!(ddl.contains("PRIMARY KEY ("), "{ddl}");
            assert_eq!(
                text_limits::<MySql>(hour),
                text_limits::<MySql>(rows::table(stream))
            );
            assert!(
                insert_sql::<MySql>(hour, 1).starts_with(&format!("INSERT INTO {} (", hour.name))
            );
        }
    }

    /// The limits above must be those of the migration: parse its column definitions.
    #[test]
    fn limits_agree_with_the_migration() {
        let schema = SCHEMA;
        let mut checked = 0;
        for table in TABLES.iter().chain([&rows::ORG_ROLLUPS]) {
            let start = schema
                .find(&format!("CREATE TABLE {} (", table.name))
                .expect("the table is in the migration");
            let body = &schema[start..];
            let body = &body[..body.find(") ENGINE").expect("end of the table")];
            for line in body.lines().skip(1) {
                let mut words = line.split_whitespace();
                let (Some(column), Some(kind)) = (words.next(), words.next()) else {
                    continue;
                };
                let expected = if let Some(n) = kind
                    .strip_prefix("VARCHAR(")
                    .or_else(|| kind.strip_prefix("CHAR("))
                {
                    Limit::Chars(n.trim_end_matches([')', ',']).parse().expect("a length"))
                } else if kind.starts_with("MEDIUMTEXT") {
                    Limit::Bytes(MEDIUMTEXT_BYTES)
                } else if kind.starts_with("TEXT") {
                    Limit::Bytes(TEXT_BYTES)
                } else {
                    continue;
                };
                assert!(table.columns.contains(&column), "{}.{column}", table.name);
                assert_eq!(
                    MySql::text_limit(table.name, column),
                    expected,
                    "{}.{column}",
                    table.name
                );
                checked += 1;
            }
        }
        assert!(checked > 30, "only {checked} text columns found");
    }
}
