//! What differs between the SQL stores: the words of an INSERT that meets a stored key, how
//! much one statement may carry, how long a text column may be, and how a value is bound.

use std::future::Future;
use std::sync::Arc;

use sqlx::error::BoxDynError;

use crate::rows::{Conflict, Table, Value};

/// A SQL store's dialect, implemented by its sqlx database type (`Sqlite`, `MySql`) beside
/// the sink that writes it. Everything else about writing rows is [`super::SqlWriter`]'s.
pub(crate) trait Dialect: sqlx::Database {
    /// The migration that creates the tables of SPEC §3; the rollup tables of extra widths
    /// are copies of its minute tables.
    const SCHEMA: &'static str;

    /// Rows per INSERT statement at most (a power of two).
    const MAX_ROWS_PER_STATEMENT: usize;

    /// Bound parameters per statement at most.
    const MAX_PARAMETERS: usize;

    /// How the statement starts for a table that takes a duplicate key as `conflict` says:
    /// `INSERT INTO`, or a variant of it.
    fn insert_into(conflict: Conflict) -> &'static str;

    /// What follows the rows: how a row whose key is already stored is taken (nothing when
    /// [`Dialect::insert_into`] said it).
    fn on_conflict(table: &Table) -> Option<String>;

    /// The longest text `column` of `table` (a table of SPEC §3) holds.
    fn text_limit(table: &str, column: &str) -> Limit;

    /// Adds `value` to `arguments` as the store takes it, text cut to `limit`; says whether
    /// it was cut.
    fn bind(
        arguments: &mut Self::Arguments,
        value: &Value<'_>,
        limit: Limit,
    ) -> Result<bool, BoxDynError>;

    /// Runs `sql` with `arguments` on `connection`. (Each store says it with its own types:
    /// the generic form needs bounds on sqlx's executor traits that hide what is going on.)
    fn execute(
        connection: &mut Self::Connection,
        sql: Arc<str>,
        arguments: Self::Arguments,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
}

/// How long a text value may be in a column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Limit {
    /// Any length (SQLite's `TEXT`).
    None,
    /// `CHAR(n)` / `VARCHAR(n)`: characters.
    Chars(usize),
    /// MySQL's `TEXT` / `MEDIUMTEXT`: bytes.
    Bytes(usize),
}

/// `text` cut to `limit` on a character boundary, and whether it was cut; borrowed, so the
/// common case costs a length check.
pub(crate) fn fit(text: &str, limit: Limit) -> (&str, bool) {
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

/// The INSERT of `rows` rows into `table` in dialect `D`. Only static table and column
/// names go into the text; values are bound.
pub(crate) fn insert_sql<D: Dialect>(table: &Table, rows: usize) -> String {
    let columns = table.columns.join(", ");
    let placeholders = format!("({})", vec!["?"; table.columns.len()].join(", "));
    let values = vec![placeholders; rows].join(", ");
    let mut sql = format!(
        "{} {} ({columns}) VALUES {values}",
        D::insert_into(table.conflict),
        table.name
    );
    if let Some(clause) = D::on_conflict(table) {
        sql.push(' ');
        sql.push_str(&clause);
    }
    sql
}

/// `column = f(column)` for every column but the key, joined: the SET list of an upsert.
pub(crate) fn update_columns(table: &Table, value: impl Fn(&str) -> String) -> String {
    table
        .columns
        .iter()
        .filter(|c| !table.key.contains(c))
        .map(|c| format!("{c} = {}", value(c)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The text limits of `table`'s columns in dialect `D`, in column order; a rollup table of
/// an extra width has its minute table's.
pub(crate) fn text_limits<D: Dialect>(table: &Table) -> Vec<Limit> {
    let schema_table = crate::rows::table(table.stream).name;
    table
        .columns
        .iter()
        .map(|column| D::text_limit(schema_table, column))
        .collect()
}

/// The sizes of a table's statements in dialect `D`: 1, 2, 4, ... rows, up to its rows per
/// statement and its parameter limit.
pub(crate) fn statement_sizes<D: Dialect>(table: &Table) -> impl Iterator<Item = usize> {
    let max = D::MAX_ROWS_PER_STATEMENT.min(D::MAX_PARAMETERS / table.columns.len());
    (0..=max.ilog2()).map(|i| 1 << i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_cut_on_character_boundaries() {
        assert_eq!(fit("abc", Limit::Chars(3)), ("abc", false));
        assert_eq!(fit("abcd", Limit::Chars(3)), ("abc", true));
        // Four 2-byte characters are 8 bytes but only 4 characters: no cut.
        assert_eq!(fit("éééé", Limit::Chars(4)), ("éééé", false));
        assert_eq!(fit("ééééé", Limit::Chars(4)), ("éééé", true));
        assert_eq!(fit("éé", Limit::Bytes(3)), ("é", true));
    }
}
