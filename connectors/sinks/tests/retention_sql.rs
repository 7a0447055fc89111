//! Retention in the SQL sinks (SPEC §10): four days of event time, every stream, with
//! `raw = "2d"` and `rollups = "3d"`, through SQLite and MySQL. Afterwards no raw row is older
//! than watermark − 2 d, no rollup or app event older than watermark − 3 d, and everything
//! younger is intact (exact counts); the SQLite file stops growing once retention is in
//! steady state; a capture dated years ago keeps every row.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sluice_model::records::StreamName;
use sluice_sinks::SinkContext;
use sluice_sinks::mysql::{self, MysqlSinkConfig};
use sluice_sinks::retention::RetentionConfig;
use sluice_sinks::sqlite::{self, SqliteSinkConfig};
use sluice_test_support::mariadb::TestDatabase;
use sluice_test_support::retention::{DAY_NS, expected_tables, records_in, send_slots};
use tokio_util::sync::CancellationToken;

/// Slots (10 minutes each) in a day.
const SLOTS_PER_DAY: i64 = 144;
/// 2026-01-01T00:00:00Z.
const START: i64 = 1_767_225_600 * 1_000_000_000;

fn retention() -> RetentionConfig {
    RetentionConfig {
        raw: Duration::from_secs(2 * 24 * 3600),
        rollups: Duration::from_secs(3 * 24 * 3600),
        // Look after every flush: the test pushes days through in a second.
        interval: Duration::ZERO,
        batch_size: std::num::NonZeroUsize::new(200).expect("non-zero"),
        enabled: true,
    }
}

fn sqlite_config(path: &Path) -> SqliteSinkConfig {
    let mut config = SqliteSinkConfig::new(path, StreamName::all());
    config.batch_size = std::num::NonZeroUsize::new(500).expect("non-zero");
    config.flush_interval = Duration::from_millis(5);
    config.retention = retention();
    config
}

/// Runs an SQLite sink over slots `range` (the watermark continuing from `watermark`) until
/// its input closes; returns the rows retention deleted.
async fn sqlite_run(
    config: SqliteSinkConfig,
    watermark: &Arc<AtomicI64>,
    start: i64,
    range: std::ops::Range<i64>,
) -> u64 {
    let (ctx, sender) = SinkContext::new("test", 4, CancellationToken::new());
    let ctx = ctx.with_watermark(watermark.clone());
    let metrics = ctx.metrics.clone();
    let sent = records_in(range.clone());
    let feeder = send_slots(sender, watermark.clone(), start, range);
    sqlite::run(config, ctx).await.expect("the sink runs");
    feeder.join().expect("feeder");
    assert_eq!(metrics.written_total(), sent, "every record written");
    metrics.retention_deleted_total()
}

/// The database file and its WAL, in bytes.
fn file_size(path: &Path) -> u64 {
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    size(path) + size(&path.with_extension("db-wal"))
}

fn assert_counts(counts: &[(&str, i64)], expected: &[(&str, i64)]) {
    assert_eq!(counts, expected, "rows per table after retention");
}

#[tokio::test]
async fn four_days_through_sqlite_keep_exactly_two_days_raw_and_three_of_rollups() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sluice.db");
    let watermark = Arc::new(AtomicI64::new(i64::MIN));
    // Days 0–3, then day 3–4 on the same file, like a restart: the first run reaches
    // steady state (2 d of raw rows, 3 d of rollups), the second adds a day and deletes one.
    let deleted_first = sqlite_run(
        sqlite_config(&path),
        &watermark,
        START,
        0..3 * SLOTS_PER_DAY,
    )
    .await;
    let kept = |slots| -> u64 {
        expected_tables(START, slots, 2 * DAY_NS, 3 * DAY_NS)
            .iter()
            .map(|(_, n)| *n as u64)
            .sum()
    };
    let kept_first = kept(3 * SLOTS_PER_DAY);
    assert_eq!(
        deleted_first,
        records_in(0..3 * SLOTS_PER_DAY) - kept_first,
        "every expired row deleted and counted"
    );
    let steady = file_size(&path);
    let deleted = sqlite_run(
        sqlite_config(&path),
        &watermark,
        START,
        3 * SLOTS_PER_DAY..4 * SLOTS_PER_DAY,
    )
    .await;
    let slots = 4 * SLOTS_PER_DAY;
    let expected = expected_tables(START, slots, 2 * DAY_NS, 3 * DAY_NS);
    let mut counts = Vec::new();
    for (table, _) in &expected {
        counts.push((*table, count_rows(&path, table).await));
    }
    assert_counts(&counts, &expected);
    // Rows of the fourth day went in and as many went out (the last day's rollups, a day of
    // raw rows): the file holds the same amount as after day three.
    assert_eq!(
        deleted,
        kept_first + records_in(0..SLOTS_PER_DAY) - kept(slots),
        "about a day's rows deleted"
    );
    let grown = file_size(&path);
    eprintln!("SQLite file: {steady} bytes after three days, {grown} after four");
    assert!(
        grown <= steady + steady / 10,
        "the file keeps growing: {steady} bytes after three days, {grown} after four"
    );
    // No raw row older than watermark − 2 d, checked in SQL, not only counted.
    let final_watermark = watermark.load(Ordering::Relaxed);
    let oldest_log = min_time(&path, "SELECT MIN(ts) FROM log_message").await;
    assert!(oldest_log >= final_watermark - 2 * DAY_NS);
    let oldest_rollup = min_time(&path, "SELECT MIN(minute) FROM app_metric_rollup").await;
    assert!(oldest_rollup >= (final_watermark - 3 * DAY_NS) / 1_000_000_000);
}

async fn min_time(path: &Path, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&mut connect(path).await)
        .await
        .expect("a time")
}

async fn count_rows(path: &Path, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(&mut connect(path).await)
        .await
        .expect("table readable")
}

async fn connect(path: &Path) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("database opens")
}

#[tokio::test]
async fn a_capture_dated_years_ago_keeps_every_row_in_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sluice.db");
    // 2019, a day and a half of event time: older than any retention measured against the
    // wall clock, younger than 2 d behind its own watermark.
    let start = 1_546_300_800 * 1_000_000_000;
    let mut config = sqlite_config(&path);
    config.retention = RetentionConfig::default();
    let watermark = Arc::new(AtomicI64::new(i64::MIN));
    let deleted = sqlite_run(config, &watermark, start, 0..216).await;
    assert_eq!(deleted, 0);
    for (table, rows) in expected_tables(start, 216, i64::MAX / 2, i64::MAX / 2) {
        assert_eq!(count_rows(&path, table).await, rows, "{table}");
    }
}

fn mysql_config(url: &str) -> MysqlSinkConfig {
    let mut config = MysqlSinkConfig::new(url, StreamName::all());
    config.batch_size = std::num::NonZeroUsize::new(500).expect("non-zero");
    config.flush_interval = Duration::from_millis(5);
    config.retention = retention();
    config
}

#[tokio::test]
async fn four_days_through_mysql_keep_exactly_two_days_raw_and_three_of_rollups() {
    let db = TestDatabase::shared("retention_days");
    let watermark = Arc::new(AtomicI64::new(i64::MIN));
    let (ctx, sender) = SinkContext::new("test", 4, CancellationToken::new());
    let ctx = ctx.with_watermark(watermark.clone());
    let metrics = ctx.metrics.clone();
    let slots = 4 * SLOTS_PER_DAY;
    let feeder = send_slots(sender, watermark.clone(), START, 0..slots);
    mysql::run(mysql_config(&db.url()), ctx)
        .await
        .expect("the sink runs");
    feeder.join().expect("feeder");
    assert_eq!(metrics.written_total(), records_in(0..slots));
    let expected = expected_tables(START, slots, 2 * DAY_NS, 3 * DAY_NS);
    let mut counts = Vec::new();
    for (table, _) in &expected {
        counts.push((*table, db.count(table).await));
    }
    assert_counts(&counts, &expected);
    let sent = records_in(0..slots) as i64;
    let kept: i64 = expected.iter().map(|(_, n)| n).sum();
    assert_eq!(metrics.retention_deleted_total() as i64, sent - kept);
    let by_table = metrics.retention_deleted_by_table();
    assert!(
        by_table.iter().any(|(t, n)| t == "log_message" && *n > 0),
        "deletions are counted per table: {by_table:?}"
    );
    db.drop_database().await;
}

#[tokio::test]
async fn a_capture_dated_years_ago_keeps_every_row_in_mysql() {
    let db = TestDatabase::shared("retention_old");
    let start = 1_546_300_800 * 1_000_000_000;
    let watermark = Arc::new(AtomicI64::new(i64::MIN));
    let (ctx, sender) = SinkContext::new("test", 4, CancellationToken::new());
    let ctx = ctx.with_watermark(watermark.clone());
    let metrics = ctx.metrics.clone();
    let mut config = mysql_config(&db.url());
    config.retention = RetentionConfig::default();
    let feeder = send_slots(sender, watermark.clone(), start, 0..216);
    mysql::run(config, ctx).await.expect("the sink runs");
    feeder.join().expect("feeder");
    assert_eq!(metrics.retention_deleted_total(), 0);
    for (table, rows) in expected_tables(start, 216, i64::MAX / 2, i64::MAX / 2) {
        assert_eq!(db.count(table).await, rows, "{table}");
    }
    db.drop_database().await;
}
