//! The `mysql` sink against a real MariaDB: the same rows as the SQLite sink, idempotence,
//! chunked writes, retention, and every way the server can fail (down at start, down
//! mid-run, wrong credentials, a schema changed by hand).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_common::telemetry::SinkMetrics;
use sluice_model::Payload;
use sluice_model::event::Event;
use sluice_model::records::Records;
use sluice_model::records::StreamName;
use sluice_sinks::SinkContext;
use sluice_sinks::mysql::{self, MysqlSinkConfig, MysqlSinkError, RetentionConfig};
use sluice_sinks::sqlite::{self, SqliteSinkConfig};
use sluice_test_support::fixtures::*;
use sluice_test_support::mariadb::{
    PrivateServer, TABLE_KEYS, TestDatabase, dump_mysql, dump_sqlite,
};
use tokio_util::sync::CancellationToken;

fn config(url: &str) -> MysqlSinkConfig {
    let mut config = MysqlSinkConfig::new(url, StreamName::all());
    config.flush_interval = Duration::from_millis(10);
    // Most tests write timestamps from 2024 or earlier: only the retention test deletes.
    config.retention.enabled = false;
    config
}

/// Runs the sink over `batches` until its input closes.
async fn run_sink(config: MysqlSinkConfig, batches: Vec<Records>) -> Result<(), MysqlSinkError> {
    let (ctx, feeder) = feed(batches);
    let result = mysql::run(config, ctx).await;
    feeder.join().expect("feeder thread");
    result
}

/// `n` container metrics with distinct keys, `ts_base` plus one ns per instance step.
fn container_metrics(n: usize, ts_base: i64) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let mut event = container_event((i % 1000) as i32, i % 2 == 0);
            event.timestamp = ts_base + (i / 1000) as i64;
            event
        })
        .collect()
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as i64
}

#[tokio::test]
async fn every_stream_matches_the_sqlite_sink_cell_for_cell_and_a_replay_changes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db_path = dir.path().join("sluice.db");
    sqlite::run(
        SqliteSinkConfig::new(&db_path, StreamName::all()),
        feed(every_stream()).0,
    )
    .await
    .expect("sqlite sink");

    let db = TestDatabase::shared("cells");
    let config = config(&db.url());
    run_sink(config.clone(), every_stream())
        .await
        .expect("mysql sink");
    let mut connection = db.connect().await;
    let mut first = Vec::new();
    for (table, _) in TABLE_KEYS {
        let mysql = dump_mysql(&mut connection, table).await;
        let sqlite = dump_sqlite(&db_path, table).await;
        // `every_stream()` has no directory rows: SPEC §11's tables are compared (both empty)
        // here and filled in `sink_sqlite` and the whole-program tests.
        let directory = ["app", "space_metric_rollup", "org_metric_rollup"].contains(&table);
        assert!(!mysql.is_empty() || directory, "{table} is empty");
        assert_eq!(mysql, sqlite, "{table} differs between MySQL and SQLite");
        first.push(mysql);
    }
    // Provisional then final in one batch: the final row is the one kept.
    let requests = sqlx::query_scalar::<_, i64>("SELECT requests FROM app_metric_rollup")
        .fetch_one(&mut connection)
        .await
        .expect("one app rollup");
    assert_eq!(requests, app_rollup(true).requests as i64);

    run_sink(config, every_stream()).await.expect("replayed");
    for ((table, _), before) in TABLE_KEYS.iter().zip(first) {
        assert_eq!(
            dump_mysql(&mut connection, table).await,
            before,
            "{table} changed"
        );
    }
    drop(connection);
    db.drop_database().await;
}

#[tokio::test]
async fn many_rows_are_written_in_chunks_without_loss() {
    let db = TestDatabase::shared("chunks");
    // 5 000 rows: statements of 1 024, then the binary decomposition of the rest.
    let batches = container_metrics(5_000, 1_000)
        .chunks(700)
        .map(|c| Records::ContainerMetrics(c.to_vec()))
        .collect();
    let (ctx, feeder) = feed(batches);
    let metrics = ctx.metrics.clone();
    mysql::run(config(&db.url()), ctx)
        .await
        .expect("mysql sink");
    feeder.join().expect("feeder");
    assert_eq!(db.count("container_metric").await, 5_000);
    assert_eq!(metrics.written_of(StreamName::ContainerMetrics), 5_000);
    assert_eq!(metrics.pending.load(Ordering::Relaxed), 0);
    db.drop_database().await;
}

#[tokio::test]
async fn a_wider_windows_rollups_land_in_their_own_table_made_like_the_minutes() {
    let db = TestDatabase::shared("windows");
    for _ in 0..2 {
        let (ctx, feeder) = hourly_sink(rollups_of_three_widths());
        let metrics = ctx.metrics.clone();
        mysql::run(config(&db.url()), ctx).await.expect("written");
        feeder.join().expect("feeder");
        assert_eq!(metrics.written_of(StreamName::AppRollups), 3);
        assert_eq!(metrics.written_of(StreamName::PlatformRollups), 1);
        assert_eq!(metrics.dropped.get(), 1, "the 5-minute row has no table");
    }
    let mut connection = db.connect().await;
    let minute = dump_mysql(&mut connection, "app_metric_rollup").await;
    assert_eq!(minute.len(), 1);
    let hour = dump_mysql(&mut connection, "app_metric_rollup_1h").await;
    assert_eq!(hour.len(), 1);
    assert_eq!(hour[0][1], sluice_test_support::mariadb::Cell::Int(HOUR));
    assert_eq!(hour[0][9], sluice_test_support::mariadb::Cell::Int(40));
    assert_eq!(db.count("platform_metric_rollup").await, 0);
    assert_eq!(db.count("platform_metric_rollup_1h").await, 1);

    // The same columns, types and keys as the minute tables.
    for (minute, hour) in [
        ("app_metric_rollup", "app_metric_rollup_1h"),
        ("platform_metric_rollup", "platform_metric_rollup_1h"),
    ] {
        let mut shapes = Vec::new();
        for table in [minute, hour] {
            let columns: Vec<(String, String, String, String)> = sqlx::query_as(
                "SELECT CAST(column_name AS CHAR), CAST(column_type AS CHAR), \
                 CAST(is_nullable AS CHAR), CAST(column_key AS CHAR) \
                 FROM information_schema.columns \
                 WHERE table_schema = DATABASE() AND table_name = ? ORDER BY ordinal_position",
            )
            .bind(table)
            .fetch_all(&mut connection)
            .await
            .expect("columns");
            let indexes: Vec<(String, String)> = sqlx::query_as(
                "SELECT CAST(REPLACE(index_name, ?, '') AS CHAR), \
                 CAST(GROUP_CONCAT(column_name ORDER BY seq_in_index) AS CHAR) \
                 FROM information_schema.statistics \
                 WHERE table_schema = DATABASE() AND table_name = ? \
                 GROUP BY index_name ORDER BY index_name",
            )
            .bind(table)
            .bind(table)
            .fetch_all(&mut connection)
            .await
            .expect("indexes");
            assert!(
                !columns.is_empty() && indexes.len() == 2,
                "{table}: {indexes:?}"
            );
            shapes.push((columns, indexes));
        }
        assert_eq!(shapes[0], shapes[1], "{hour} is shaped like {minute}");
    }
    drop(connection);
    db.drop_database().await;
}

#[tokio::test]
async fn a_column_missing_from_the_schema_is_named_at_start() {
    let db = TestDatabase::shared("missing");
    run_sink(config(&db.url()), vec![])
        .await
        .expect("schema created");
    sqlx::raw_sql("ALTER TABLE container_metric DROP COLUMN disk_bytes_quota")
        .execute(&mut db.connect().await)
        .await
        .expect("column dropped");
    let error = run_sink(config(&db.url()), vec![])
        .await
        .expect_err("a schema mismatch");
    assert!(!error.is_retriable());
    let message = error.to_string();
    assert!(
        message.contains("table container_metric has no column disk_bytes_quota"),
        "{message}"
    );
    assert!(message.contains(&db.name), "{message}");
    db.drop_database().await;
}

#[tokio::test]
async fn a_write_the_server_rejects_stops_the_sink_naming_table_and_column() {
    let db = TestDatabase::shared("rejected");
    run_sink(config(&db.url()), vec![])
        .await
        .expect("schema created");
    // A column narrowed by hand: the error code 500 no longer fits.
    sqlx::raw_sql("ALTER TABLE platform_error MODIFY code TINYINT NOT NULL")
        .execute(&mut db.connect().await)
        .await
        .expect("column narrowed");
    let mut error = error_event();
    if let Payload::Error(e) = &mut error.payload {
        e.code = 500;
    }
    let (ctx, feeder) = feed(vec![Records::Errors(vec![error])]);
    let metrics = ctx.metrics.clone();
    let error = mysql::run(config(&db.url()), ctx)
        .await
        .expect_err("an out-of-range value");
    let _ = feeder.join();
    let message = error.to_string();
    assert!(message.contains("table platform_error"), "{message}");
    assert!(message.contains("'code'"), "{message}");
    assert_eq!(
        metrics.retries.get(),
        0,
        "a non-retriable error is not retried"
    );
    assert_eq!(metrics.dropped.get(), 1);
    db.drop_database().await;
}

#[tokio::test]
async fn wrong_credentials_stop_the_sink_without_retrying() {
    let server = sluice_test_support::mariadb::server_url();
    let host = server.rsplit('@').next().expect("host:port");
    let url = format!("mysql://sluice_no_such_user:wrong@{host}/sluice_never_created");
    let (ctx, _sender) = SinkContext::new("test", 4, CancellationToken::new());
    let metrics = ctx.metrics.clone();
    let error = mysql::run(config(&url), ctx)
        .await
        .expect_err("access denied");
    assert!(!error.is_retriable(), "{error}");
    assert!(error.to_string().contains("Access denied"), "{error}");
    assert_eq!(metrics.retries.get(), 0);
}

#[tokio::test]
async fn an_unreachable_server_is_named_retried_and_abandoned_after_the_shutdown_timeout() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let shutdown = CancellationToken::new();
    let (ctx, sender) = SinkContext::new("test", 4, shutdown.clone());
    let metrics = ctx.metrics.clone();
    let mut config = config(&format!("mysql://root@127.0.0.1:{port}/sluice"));
    config.shutdown_timeout = Duration::from_millis(200);
    config.connect_timeout = Duration::from_millis(500);
    let sink = tokio::spawn(mysql::run(config, ctx));
    let feeder = send_all(sender, vec![Records::Errors(vec![error_event()])]);
    wait_for("two failed attempts", || metrics.retries.get() >= 2).await;
    feeder.join().expect("the record was accepted");
    shutdown.cancel();
    let error = sink
        .await
        .expect("sink task")
        .expect_err("abandoned at shutdown");
    let message = error.to_string();
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(message.contains("abandoned 1 records"), "{message}");
    assert_eq!(metrics.dropped.get(), 1);
}

#[tokio::test]
async fn retention_deletes_expired_rows_and_keeps_recent_ones() {
    let db = TestDatabase::shared("retention");
    let mut config = config(&db.url());
    config.retention = RetentionConfig {
        raw: Duration::from_secs(3600),
        rollups: Duration::from_secs(24 * 3600),
        interval: Duration::from_millis(20),
        batch_size: std::num::NonZeroUsize::new(1000).expect("non-zero"),
        enabled: true,
    };
    let old = now_ns() - 3 * 3600 * 1_000_000_000;
    let recent = now_ns();
    let mut old_rollup = app_rollup(true);
    old_rollup.minute = (old / 1_000_000_000) - 2 * 24 * 3600;
    let mut recent_rollup = app_rollup(true);
    recent_rollup.minute = recent / 1_000_000_000 / 60 * 60;
    let batches = vec![
        Records::ContainerMetrics(container_metrics(2_500, old)),
        Records::ContainerMetrics(container_metrics(10, recent)),
        Records::AppRollups(vec![old_rollup, recent_rollup]),
    ];
    let (ctx, sender) = SinkContext::new("test", 4, CancellationToken::new());
    // Age is measured against the pipeline's watermark (SPEC §10), here the newest row.
    let ctx = ctx.with_watermark(Arc::new(std::sync::atomic::AtomicI64::new(recent)));
    let metrics: Arc<SinkMetrics> = ctx.metrics.clone();
    let sink = tokio::spawn(mysql::run(config, ctx));
    let feeder = send_all(sender.clone(), batches);
    wait_for("all rows written", || metrics.written_total() == 2_512).await;
    // Rows are deleted while the sink keeps running: poll the table.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while db.count("container_metric").await > 10 || db.count("app_metric_rollup").await > 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "expired rows remain"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    feeder.join().expect("feeder");
    drop(sender);
    sink.await.expect("sink task").expect("sink");
    let mut connection = db.connect().await;
    let oldest: i64 = sqlx::query_scalar("SELECT MIN(ts) FROM container_metric")
        .fetch_one(&mut connection)
        .await
        .expect("recent rows remain");
    assert_eq!(oldest, recent);
    let minute: i64 = sqlx::query_scalar("SELECT minute FROM app_metric_rollup")
        .fetch_one(&mut connection)
        .await
        .expect("the recent rollup remains");
    assert_eq!(minute, recent / 1_000_000_000 / 60 * 60);
    drop(connection);
    db.drop_database().await;
}

/// The server is killed mid-run and started again while records keep coming: every row
/// arrives, and once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_mid_run_loses_and_duplicates_nothing() {
    let mut server = PrivateServer::start().await;
    let db = TestDatabase::new(&server.url(), "outage");
    let mut config = config(&db.url());
    config.batch_size = std::num::NonZeroUsize::new(500).expect("non-zero");
    config.connect_timeout = Duration::from_secs(1);
    const ROWS: usize = 40_000;
    let batches: Vec<Records> = container_metrics(ROWS, 7_000)
        .chunks(250)
        .map(|c| Records::ContainerMetrics(c.to_vec()))
        .chain([
            Records::AppRollups(vec![app_rollup(false)]),
            Records::AppRollups(vec![app_rollup(true)]),
        ])
        .collect();
    let (ctx, sender) = SinkContext::new("test", 4, CancellationToken::new());
    let metrics = ctx.metrics.clone();
    let sink = tokio::spawn(mysql::run(config, ctx));
    let feeder = send_all(sender, batches);

    wait_for("rows before the outage", || {
        metrics.written_total() >= 5_000
    })
    .await;
    server.kill();
    wait_for("the sink to notice the outage", || {
        metrics.retries.get() >= 2
    })
    .await;
    let written_during_outage = metrics.written_total();
    assert!(
        written_during_outage < ROWS as u64,
        "the outage came too late"
    );
    server.restart().await;

    feeder.join().expect("every batch accepted");
    sink.await.expect("sink task").expect("the sink recovers");
    assert_eq!(db.count("container_metric").await, ROWS as i64);
    let distinct: i64 = sqlx::query_scalar(
        "SELECT COUNT(DISTINCT app_id, instance_index, ts) FROM container_metric",
    )
    .fetch_one(&mut db.connect().await)
    .await
    .expect("count");
    assert_eq!(distinct, ROWS as i64);
    let requests: i64 = sqlx::query_scalar("SELECT requests FROM app_metric_rollup")
        .fetch_one(&mut db.connect().await)
        .await
        .expect("the final rollup");
    assert_eq!(requests, app_rollup(true).requests as i64);
    assert_eq!(metrics.written_total(), ROWS as u64 + 2);
    assert_eq!(metrics.dropped.get(), 0);
}
