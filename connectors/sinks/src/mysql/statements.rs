//! The SQL of the `mysql` sink: multi-row `INSERT … ON DUPLICATE KEY UPDATE`, a no-op for
//! raw streams and an overwrite for rollups, built once per table and size and reused
//! from sqlx's per-connection statement cache; the column limits of the MySQL schema; and the
//! retention `DELETE`s.

use std::sync::Arc;

use sqlx::mysql::{MySqlArguments, MySqlConnection};
use sqlx::{Arguments, AssertSqlSafe};

use crate::rows::{Conflict, Table, Value};

/// The migration the rollup tables of extra widths are made from (`rows::window_table_ddl`).
pub(super) const SCHEMA: &str = include_str!("../../migrations/mysql/0001_tables.sql");

/// Rows per INSERT statement at most (a power of two). A statement is a round trip and a
/// parse; more rows per statement amortise both until the packet grows large. Measured on
/// container metrics against a local MariaDB: 1024 rows is within noise of 4096.
pub const MAX_ROWS_PER_STATEMENT: usize = 1024;

/// MySQL's cap on placeholders in one prepared statement.
const MAX_PARAMETERS: usize = 65_535;

/// How long a text value may be in a column of the MySQL schema
/// (`migrations/mysql/0001_tables.sql`; a test keeps the two in step).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Limit {
    /// `CHAR(n)` / `VARCHAR(n)`: characters.
    Chars(usize),
    /// `TEXT` / `MEDIUMTEXT`: bytes.
    Bytes(usize),
}

const TEXT_BYTES: usize = 65_535;
const MEDIUMTEXT_BYTES: usize = 16_777_215;

/// The limit of a text column; `VARCHAR(255)` unless the schema says otherwise.
pub(super) fn limit(table: &str, column: &str) -> Limit {
    match (table, column) {
        ("log_message" | "app_event", "message") => Limit::Bytes(MEDIUMTEXT_BYTES),
        ("http_start_stop", "uri" | "user_agent") | ("platform_error", "message") => {
            Limit::Bytes(TEXT_BYTES)
        }
        ("log_message", "id") => Limit::Chars(32),
        ("log_message", "message_type") => Limit::Chars(3),
        ("http_start_stop", "request_id" | "app_id") => Limit::Chars(36),
        ("http_start_stop", "peer_type") | ("platform_metric_rollup", "kind") => Limit::Chars(8),
        ("http_start_stop", "method") => Limit::Chars(24),
        ("app_event", "event") => Limit::Chars(16),
        ("platform_metric_rollup", "origin" | "job" | "instance" | "name") => Limit::Chars(191),
        _ => Limit::Chars(255),
    }
}

/// `text` cut to `limit` on a character boundary; borrowed, so the common case costs a
/// length check.
pub(super) fn fit(text: &str, limit: Limit) -> (&str, bool) {
    match limit {
        // A string of at most n bytes has at most n characters.
        Limit::Chars(n) if text.len() > n => match text.char_indices().nth(n) {
            Some((end, _)) => (&text[..end], true),
            None => (text, false),
        },
        Limit::Bytes(n) if text.len() > n => {
            let mut end = n;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            (&text[..end], true)
        }
        _ => (text, false),
    }
}

/// Inserts rows in statements of the sizes of `sql` (`sql[i]` inserts 2^i rows): as many of
/// the largest as fit, then the binary decomposition of the rest. Returns how many text
/// values were cut to their column's length.
pub(super) async fn insert(
    connection: &mut MySqlConnection,
    table: &Table,
    limits: &[Limit],
    sql: &[Arc<str>],
    values: &[Value<'_>],
) -> Result<u64, sqlx::Error> {
    let columns = table.columns.len();
    let mut truncated = 0;
    let mut rest = values;
    while rest.len() >= columns {
        let rows = rest.len() / columns;
        let size = (sql.len() - 1).min(rows.ilog2() as usize);
        let (chunk, tail) = rest.split_at((1 << size) * columns);
        let mut arguments = MySqlArguments::default();
        arguments.reserve(chunk.len(), chunk.len() * 8);
        for (value, limit) in chunk.iter().zip(limits.iter().cycle()) {
            match value {
                Value::Null => arguments.add(None::<i64>),
                Value::Int(n) => arguments.add(*n),
                // MySQL has no NaN or infinity; SQLite stores a NaN as NULL, and so does this.
                Value::Real(x) if !x.is_finite() => arguments.add(None::<f64>),
                Value::Real(x) => arguments.add(*x),
                Value::Text(text) => {
                    let (text, cut) = fit(text, *limit);
                    truncated += u64::from(cut);
                    arguments.add(text)
                }
            }
            .map_err(sqlx::Error::Encode)?;
        }
        sqlx::query_with(AssertSqlSafe(sql[size].clone()), arguments)
            .execute(&mut *connection)
            .await?;
        rest = tail;
    }
    Ok(truncated)
}

/// The statement sizes of a table: 1, 2, 4, ... rows, up to [`MAX_ROWS_PER_STATEMENT`] and
/// MySQL's placeholder limit.
pub(super) fn statement_sizes(table: &Table) -> impl Iterator<Item = usize> {
    let max = MAX_ROWS_PER_STATEMENT.min(MAX_PARAMETERS / table.columns.len());
    (0..=max.ilog2()).map(|i| 1 << i)
}

/// A multi-row INSERT of `rows` rows. Raw streams keep the row already stored under a key
/// (`ON DUPLICATE KEY UPDATE key = key`, a no-op); rollups overwrite every column but the key.
/// Not `INSERT IGNORE`: besides duplicate keys it turns every data error into a warning and
/// stores a clamped or cut value, so a schema changed by hand would corrupt rows silently
/// instead of stopping the sink. Only static table and column names go into the text;
/// values are bound.
pub(super) fn insert_sql(table: &Table, rows: usize) -> String {
    let columns = table.columns.join(", ");
    let placeholders = format!("({})", vec!["?"; table.columns.len()].join(", "));
    let values = vec![placeholders; rows].join(", ");
    let updates = match table.conflict {
        Conflict::Ignore => {
            let key = table.key[0];
            format!("{key} = {key}")
        }
        // `VALUES(col)` is understood by MariaDB and MySQL alike (MySQL 8 merely deprecates
        // it in favour of a row alias MariaDB lacks).
        Conflict::Update => table
            .columns
            .iter()
            .filter(|c| !table.key.contains(c))
            .map(|c| format!("{c} = VALUES({c})"))
            .collect::<Vec<_>>()
            .join(", "),
    };
    format!(
        "INSERT INTO {} ({columns}) VALUES {values} ON DUPLICATE KEY UPDATE {updates}",
        table.name
    )
}

/// The text limits of a table's columns, in column order; a rollup table of an extra width
/// has its minute table's.
pub(super) fn limits(table: &Table) -> Vec<Limit> {
    let schema_table = crate::rows::table(table.stream).name;
    table
        .columns
        .iter()
        .map(|column| limit(schema_table, column))
        .collect()
}

/// The column retention compares with a cutoff: nanoseconds in raw tables, epoch seconds
/// (`minute`) in rollups.
pub(super) fn time_column(table: &Table) -> &'static str {
    match (table.name, table.conflict) {
        ("http_start_stop", _) => "stop_ts",
        (_, Conflict::Update) => "minute",
        _ => "ts",
    }
}

/// Deletes at most `limit` rows of `table` older than `cutoff`: small batches keep each
/// transaction (and the locks and undo it holds) short while the sink keeps writing.
pub(super) fn retention_sql(table: &Table) -> String {
    let column = time_column(table);
    format!("DELETE FROM {} WHERE {column} < ? LIMIT ?", table.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::{self, TABLES};
    use sluice_model::records::StreamName;

    #[test]
    fn statement_sizes_stay_within_the_placeholder_limit() {
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
    fn rollups_upsert_every_column_but_the_key_and_raw_rows_keep_the_stored_one() {
        let table = rows::table(StreamName::AppRollups);
        let sql = insert_sql(table, 2);
        assert!(sql.starts_with("INSERT INTO app_metric_rollup (app_id, minute, instances,"));
        assert!(sql.contains("ON DUPLICATE KEY UPDATE instances = VALUES(instances),"));
        assert!(!sql.contains("minute = VALUES(minute)"));
        assert_eq!(sql.matches('?').count(), 2 * table.columns.len());
        assert_eq!(
            insert_sql(rows::table(StreamName::Errors), 1),
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
            assert_eq!(limits(hour), limits(rows::table(stream)));
            assert!(insert_sql(hour, 1).starts_with(&format!("INSERT INTO {} (", hour.name)));
        }
    }

    #[test]
    fn values_are_cut_on_character_boundaries() {
        assert_eq!(fit("abc", Limit::Chars(3)), ("abc", false));
        assert_eq!(fit("abcd", Limit::Chars(3)), ("abc", true));
        // Four 2-byte characters are 8 bytes but only 4 characters: no cut.
        assert_eq!(fit("éééé", Limit::Chars(4)), ("éééé", false));
        assert_eq!(fit("ééééé", Limit::Chars(4)), ("éééé", true));
        assert_eq!(fit("éé", Limit::Bytes(3)), ("é", true));
    }

    /// The limits above must be those of the migration: parse its column definitions.
    #[test]
    fn limits_agree_with_the_migration() {
        let schema = SCHEMA;
        let mut checked = 0;
        for table in &TABLES {
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
                    limit(table.name, column),
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
