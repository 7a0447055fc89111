//! The `sqlite` sink against real files: the rows SPEC §3 promises, idempotence, upserts,
//! the schema, and the errors.

use std::path::Path;
use std::time::Duration;

use sluice_model::Payload;
use sluice_model::event::log_id;
use sluice_model::records::Records;
use sluice_model::records::StreamName;
use sluice_sinks::SinkContext;
use sluice_sinks::sqlite::{self, SqliteSinkConfig, SqliteSinkError};
use sluice_test_support::fixtures::*;
use sluice_test_support::mariadb::{Cell, dump_sqlite};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{AssertSqlSafe, ConnectOptions, Row};
use tokio_util::sync::CancellationToken;

use Cell::{Int, Null, Real};

fn t(s: &str) -> Cell {
    Cell::Text(s.to_owned())
}

async fn connect(path: &Path) -> SqliteConnection {
    SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .expect("the sink created the database")
}

async fn dump_all(path: &Path) -> Vec<Vec<Vec<Cell>>> {
    let mut all = Vec::new();
    for (table, _, _) in SPEC_TABLES {
        all.push(dump_sqlite(path, table).await);
    }
    all
}

/// Runs the sink over `batches` until its input closes.
async fn run_sink(config: SqliteSinkConfig, batches: Vec<Records>) -> Result<(), SqliteSinkError> {
    let (ctx, feeder) = feed(batches);
    let result = sqlite::run(config, ctx).await;
    feeder.join().expect("feeder thread");
    result
}

fn config(path: &Path) -> SqliteSinkConfig {
    SqliteSinkConfig::new(path, StreamName::all())
}

#[tokio::test]
async fn every_stream_lands_in_its_table_with_spec_values() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The parent directory does not exist yet: the sink creates it.
    let path = dir.path().join("nested/sluice.db");
    run_sink(config(&path), every_stream())
        .await
        .expect("written");
    // Closing checkpointed the write-ahead log into the file and removed it.
    assert!(!dir.path().join("nested/sluice.db-wal").exists());

    let Payload::Log(log) = log_event().payload else {
        unreachable!("a log fixture")
    };
    assert_eq!(
        dump_sqlite(&path, "log_message").await,
        vec![vec![
            t(&log_id(&log)),
            Int(TS),
            t(APP),
            t("APP/PROC/WEB"),
            t("0"),
            t("ERR"),
            t("boom \u{FFFD} done"),
            t("rep"),
            t("cf"),
            t("diego_cell"),
            t("3"),
            t("10.0.16.4"),
        ]]
    );
    let metric = |index, memory_quota, disk_quota| {
        vec![
            t(APP),
            Int(index),
            Int(TS),
            Real(12.5),
            Int(1024),
            Int(2048),
            memory_quota,
            disk_quota,
        ]
    };
    assert_eq!(
        dump_sqlite(&path, "container_metric").await,
        vec![metric(0, Int(4096), Int(8192)), metric(1, Null, Null)]
    );
    let http = |peer, app_id, instance_index| {
        vec![
            t("f47ac10b-58cc-4372-a567-0e02b2c3d479"),
            t(peer),
            app_id,
            instance_index,
            t("abc-123"),
            Int(TS - 3_000_000),
            Int(TS),
            t("POST"),
            t("http://app.example.com/x"),
            Int(201),
            Int(77),
            t("10.0.0.9:5000"),
            t("curl/8"),
        ]
    };
    assert_eq!(
        dump_sqlite(&path, "http_start_stop").await,
        vec![http("Client", Null, Null), http("Server", t(APP), Int(2))]
    );
    assert_eq!(
        dump_sqlite(&path, "app_event").await,
        vec![vec![
            t(APP),
            Int(TS),
            t("crash"),
            t("API"),
            t("1"),
            t("App instance exited")
        ]]
    );
    assert_eq!(
        dump_sqlite(&path, "platform_error").await,
        vec![vec![
            t("doppler"),
            Int(TS),
            t("tc"),
            Int(42),
            t("slow consumer")
        ]]
    );
    // The final rollups arrived after the provisional ones and replaced them.
    assert_eq!(
        dump_sqlite(&path, "app_metric_rollup").await,
        vec![final_app_rollup()]
    );
    assert_eq!(
        dump_sqlite(&path, "platform_metric_rollup").await,
        vec![
            vec![
                t("doppler"),
                t(""),
                t(""),
                t("dropped"),
                Int(MINUTE),
                t("counter"),
                t(""),
                Int(2),
                Null,
                Null,
                Null,
                Null,
                Int(7),
                Int(107),
            ],
            vec![
                t("gorouter"),
                t("router"),
                t("0"),
                t("latency"),
                Int(MINUTE),
                t("gauge"),
                t("ms"),
                Int(3),
                Real(2.0),
                Real(1.0),
                Real(3.0),
                Real(3.0),
                Null,
                Null,
            ],
        ]
    );
}

fn final_app_rollup() -> Vec<Cell> {
    vec![
        t(APP),
        Int(MINUTE),
        Int(2),
        Real(12.5),
        Real(20.0),
        Real(1024.0),
        Int(2000),
        Real(2048.0),
        Int(3000),
        Int(4),
        Int(3),
        Int(0),
        Int(0),
        Int(1),
        Int(308),
        Real(2.5),
        Real(4.0),
        Real(3.0),
        Real(4.0),
        Real(4.0),
        Int(10),
        Int(1),
        Int(1),
    ]
}

#[tokio::test]
async fn writing_the_same_batches_twice_changes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sluice.db");
    run_sink(config(&path), every_stream())
        .await
        .expect("first run");
    let first = dump_all(&path).await;
    // A replay after a crash: the same records again, into the existing file.
    let (ctx, feeder) = feed(every_stream());
    let metrics = ctx.metrics.clone();
    sqlite::run(config(&path), ctx).await.expect("second run");
    feeder.join().expect("feeder thread");
    assert_eq!(dump_all(&path).await, first);
    assert_eq!(first.iter().map(Vec::len).sum::<usize>(), 10);
    // Every record received is counted as written, duplicates included.
    assert_eq!(metrics.written_of(StreamName::ContainerMetrics), 2);
    assert_eq!(metrics.written_of(StreamName::AppRollups), 2);
    assert_eq!(metrics.written_total(), 12);
    assert_eq!(
        metrics.pending.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[tokio::test]
async fn a_final_rollup_replaces_its_provisional_row_within_and_across_batches() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sluice.db");
    // Provisional and final in the same batch, then a provisional one in its own batch.
    run_sink(
        config(&path),
        vec![Records::AppRollups(vec![
            app_rollup(false),
            app_rollup(true),
        ])],
    )
    .await
    .expect("written");
    assert_eq!(
        dump_sqlite(&path, "app_metric_rollup").await,
        vec![final_app_rollup()]
    );
    run_sink(
        config(&path),
        vec![
            Records::AppRollups(vec![app_rollup(false)]),
            Records::AppRollups(vec![app_rollup(true)]),
        ],
    )
    .await
    .expect("written");
    assert_eq!(
        dump_sqlite(&path, "app_metric_rollup").await,
        vec![final_app_rollup()]
    );
}

#[tokio::test]
async fn many_rows_are_written_in_chunks_without_loss() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sluice.db");
    // 1000 distinct rows in batches of 300: full statements and a binary remainder.
    let batches = (0..1000)
        .map(|i| container_event(i, i % 2 == 0))
        .collect::<Vec<_>>()
        .chunks(300)
        .map(|c| Records::ContainerMetrics(c.to_vec()))
        .collect();
    let mut config = config(&path);
    config.batch_size = std::num::NonZeroUsize::new(450).expect("non-zero");
    run_sink(config, batches).await.expect("written");
    let rows = dump_sqlite(&path, "container_metric").await;
    assert_eq!(rows.len(), 1000);
    assert!(rows.iter().all(|r| r[1] != Null));
}

#[tokio::test]
async fn schema_columns_and_keys_match_the_spec() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sluice.db");
    run_sink(config(&path), Vec::new()).await.expect("created");
    let mut connection = connect(&path).await;
    for (table, columns, key) in SPEC_TABLES {
        let info = sqlx::query(AssertSqlSafe(format!("PRAGMA table_info({table})")))
            .fetch_all(&mut connection)
            .await
            .expect("table_info");
        let names: Vec<String> = info.iter().map(|r| r.get("name")).collect();
        assert_eq!(names, columns, "columns of {table}");
        let mut pk: Vec<(i64, String)> = info
            .iter()
            .map(|r| (r.get::<i64, _>("pk"), r.get::<String, _>("name")))
            .filter(|(position, _)| *position > 0)
            .collect();
        pk.sort();
        let pk: Vec<String> = pk.into_iter().map(|(_, name)| name).collect();
        assert_eq!(pk, key, "primary key of {table}");
    }
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut connection)
        .await
        .expect("journal mode");
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn a_wider_windows_rollups_land_in_their_own_table_made_like_the_minutes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sluice.db");
    // Twice: the second start finds its tables there, and the rows are upserted.
    for _ in 0..2 {
        let (ctx, feeder) = hourly_sink(rollups_of_three_widths());
        let metrics = ctx.metrics.clone();
        sqlite::run(config(&path), ctx).await.expect("written");
        feeder.join().expect("feeder");
        assert_eq!(metrics.written_of(StreamName::AppRollups), 3);
        assert_eq!(metrics.written_of(StreamName::PlatformRollups), 1);
        assert_eq!(metrics.dropped.get(), 1, "the 5-minute row has no table");
    }
    let minute = dump_sqlite(&path, "app_metric_rollup").await;
    assert_eq!(minute.len(), 1);
    assert_eq!(minute[0][9], Int(app_rollup(true).requests as i64));
    let hour = dump_sqlite(&path, "app_metric_rollup_1h").await;
    assert_eq!(hour.len(), 1);
    assert_eq!((&hour[0][0], &hour[0][1]), (&t(APP), &Int(HOUR)));
    assert_eq!(hour[0][9], Int(40));
    assert!(
        dump_sqlite(&path, "platform_metric_rollup")
            .await
            .is_empty()
    );
    let gauges = dump_sqlite(&path, "platform_metric_rollup_1h").await;
    assert_eq!(gauges.len(), 1);
    assert_eq!((&gauges[0][4], &gauges[0][7]), (&Int(HOUR), &Int(180)));

    let mut connection = connect(&path).await;
    for (minute, hour) in [
        ("app_metric_rollup", "app_metric_rollup_1h"),
        ("platform_metric_rollup", "platform_metric_rollup_1h"),
    ] {
        let mut shapes = Vec::new();
        for table in [minute, hour] {
            let info = sqlx::query(AssertSqlSafe(format!("PRAGMA table_info({table})")))
                .fetch_all(&mut connection)
                .await
                .expect("table_info");
            let shape: Vec<(String, String, i64, i64)> = info
                .iter()
                .map(|r| (r.get("name"), r.get("type"), r.get("notnull"), r.get("pk")))
                .collect();
            shapes.push(shape);
        }
        assert_eq!(shapes[0], shapes[1], "{hour} is shaped like {minute}");
    }
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE name LIKE '%rollup_5m'")
            .fetch_all(&mut connection)
            .await
            .expect("tables");
    assert!(tables.is_empty(), "no table for a width not configured");
}

#[tokio::test]
async fn an_unusable_path_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A directory cannot be created under a regular file, whoever runs the test.
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").expect("file");
    let path = file.join("sluice.db");
    let error = run_sink(config(&path), Vec::new())
        .await
        .expect_err("cannot be created");
    assert!(matches!(error, SqliteSinkError::CreateDir { .. }));
    assert!(!error.is_retriable());
    assert!(
        error.to_string().contains(&*file.to_string_lossy()),
        "{error}"
    );

    // A file that is not a database.
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![b'g'; 8192]).expect("file");
    let error = run_sink(config(&garbage), Vec::new())
        .await
        .expect_err("not a database");
    assert!(
        error.to_string().contains(&*garbage.to_string_lossy()),
        "{error}"
    );
}

#[tokio::test]
async fn streams_not_configured_are_counted_and_not_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sluice.db");
    let (ctx, feeder) = feed(every_stream());
    let metrics = ctx.metrics.clone();
    let config = SqliteSinkConfig::new(&path, vec![StreamName::Errors]);
    sqlite::run(config, ctx).await.expect("written");
    feeder.join().expect("feeder thread");
    assert_eq!(dump_sqlite(&path, "platform_error").await.len(), 1);
    assert!(dump_sqlite(&path, "container_metric").await.is_empty());
    assert_eq!(metrics.written_total(), 1);
    assert_eq!(metrics.dropped.get(), 11);
}

#[tokio::test]
async fn a_locked_database_is_retried_until_the_lock_is_released() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sluice.db");
    run_sink(config(&path), Vec::new()).await.expect("created");

    // Another process holds the write lock.
    let mut other = connect(&path).await;
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .expect("lock");

    let (ctx, sender) = SinkContext::new("test", 4, CancellationToken::new());
    let metrics = ctx.metrics.clone();
    let mut config = config(&path);
    config.busy_timeout = Duration::from_millis(10);
    config.flush_interval = Duration::ZERO;
    let sink = tokio::spawn(sqlite::run(config, ctx));
    let feeder = send_all(sender, vec![Records::Errors(vec![error_event()])]);
    wait_for("a retry", || metrics.retries.get() > 0).await;
    assert_eq!(metrics.written_total(), 0);

    sqlx::query("COMMIT")
        .execute(&mut other)
        .await
        .expect("unlock");
    feeder.join().expect("feeder thread");
    sink.await
        .expect("sink task")
        .expect("written after the lock");
    assert_eq!(metrics.written_of(StreamName::Errors), 1);
    assert_eq!(dump_sqlite(&path, "platform_error").await.len(), 1);
}

#[tokio::test]
async fn rows_of_a_transaction_held_open_for_a_backlog_are_committed_once_the_input_is_quiet() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sluice.db");
    let (ctx, sender) = SinkContext::new("test", 4, CancellationToken::new());
    let metrics = ctx.metrics.clone();
    let mut config = config(&path);
    // Every record is a full batch (a backlog), and the transaction could stay open an hour.
    config.batch_size = 1.try_into().expect("non-zero");
    config.commit_interval = Duration::from_secs(3600);
    config.flush_interval = Duration::from_millis(50);
    let sink = tokio::spawn(sqlite::run(config, ctx));
    // The input stays open (the sender is kept) after three records.
    let sender = std::thread::spawn(move || {
        for _ in 0..3 {
            assert!(sender.send_blocking(Records::Errors(vec![error_event()])));
        }
        sender
    })
    .join()
    .expect("sent");
    wait_for("the rows committed", || {
        metrics.written_of(StreamName::Errors) == 3
    })
    .await;
    let mut reader = connect(&path).await;
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM platform_error")
        .fetch_one(&mut reader)
        .await
        .expect("count");
    // error_event() is one row however often it is sent (its key is the same).
    assert_eq!(count, 1);
    assert_eq!(
        metrics.safe_total(),
        3,
        "the input was told they are stored"
    );
    drop(sender);
    sink.await.expect("sink task").expect("written");
}

#[tokio::test]
async fn a_database_locked_at_shutdown_is_abandoned_after_the_shutdown_timeout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sluice.db");
    run_sink(config(&path), Vec::new()).await.expect("created");
    let mut other = connect(&path).await;
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .expect("lock");

    let shutdown = CancellationToken::new();
    let (ctx, sender) = SinkContext::new("test", 4, shutdown.clone());
    let metrics = ctx.metrics.clone();
    let mut config = config(&path);
    config.busy_timeout = Duration::from_millis(10);
    config.flush_interval = Duration::ZERO;
    config.shutdown_timeout = Duration::from_millis(200);
    let sink = tokio::spawn(sqlite::run(config, ctx));
    let feeder = send_all(sender, vec![Records::Errors(vec![error_event()])]);
    wait_for("two failed attempts", || metrics.retries.get() >= 2).await;
    feeder.join().expect("the record was accepted");
    shutdown.cancel();
    let error = sink
        .await
        .expect("sink task")
        .expect_err("abandoned at shutdown");
    assert!(matches!(
        error,
        SqliteSinkError::Abandoned { records: 1, .. }
    ));
    assert!(
        error.to_string().contains(&*path.to_string_lossy()),
        "{error}"
    );
    assert_eq!(metrics.dropped.get(), 1);
    assert_eq!(metrics.written_total(), 0);
}

#[tokio::test]
async fn the_directory_upserts_and_deletes_app_rows_and_group_rollups_fill_two_tables() {
    use sluice_model::records::{AppInfo, AppRow, GroupKind, GroupRollup};
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sluice.db");
    let info = |name: &str, space: &str| AppInfo {
        name: name.into(),
        space_id: space.into(),
        space_name: format!("{space}-name").into(),
        org_id: "o1".into(),
        org_name: "acme".into(),
    };
    let row = |app: &str, info: Option<AppInfo>, updated| AppRow {
        app_id: app.into(),
        info,
        updated,
    };
    let group = |kind, id: &str, apps| GroupRollup {
        kind,
        group_id: id.into(),
        minute: 600,
        apps,
        instances: 3,
        requests: 10,
        cpu_total: Some(7.5),
        ..GroupRollup::default()
    };
    let batches = vec![
        Records::Apps(vec![
            row("a1", Some(info("web", "s1")), 100),
            row("a2", Some(info("worker", "s1")), 100),
            row("a3", Some(info("old", "s2")), 100),
        ]),
        // a1 renamed, a3 deleted, a2 unchanged (no row).
        Records::Apps(vec![
            row("a1", Some(info("web-2", "s2")), 160),
            row("a3", None, 160),
        ]),
        Records::GroupRollups(vec![
            group(GroupKind::Space, "s1", 2),
            group(GroupKind::Org, "o1", 3),
            group(GroupKind::Space, "", 1),
        ]),
    ];
    run_sink(config(&path), batches).await.expect("written");
    let app = |id: &str, name: &str, space: &str, updated| {
        vec![
            t(id),
            t(name),
            t(space),
            t(&format!("{space}-name")),
            t("o1"),
            t("acme"),
            Int(updated),
        ]
    };
    assert_eq!(
        dump_sqlite(&path, "app").await,
        vec![
            app("a1", "web-2", "s2", 160),
            app("a2", "worker", "s1", 100)
        ]
    );
    let group_row = |id: &str, apps| {
        let mut row = vec![t(id), Int(600), Int(apps), Int(3), Int(10)];
        row.extend(std::iter::repeat_n(Int(0), 7));
        row.extend([Real(7.5), Null, Null]);
        row
    };
    assert_eq!(
        dump_sqlite(&path, "space_metric_rollup").await,
        vec![group_row("", 1), group_row("s1", 2)]
    );
    assert_eq!(
        dump_sqlite(&path, "org_metric_rollup").await,
        vec![group_row("o1", 3)]
    );
}

#[tokio::test]
async fn a_file_made_by_the_first_migrations_opens_keeps_its_rows_and_loses_two_indexes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("old.db");
    // The schema as the releases before issue #14 left it: migrations 0001 and 0002 only.
    let old = dir.path().join("migrations");
    std::fs::create_dir(&old).expect("migrations dir");
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    for file in ["0001_tables.sql", "0002_metadata.sql"] {
        std::fs::copy(here.join(file), old.join(file)).expect("copy migration");
    }
    {
        let mut connection = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .connect()
            .await
            .expect("create");
        sqlx::migrate::Migrator::new(old.as_path())
            .await
            .expect("old migrations")
            .run(&mut connection)
            .await
            .expect("old schema");
        // A line stored under the old id (the whole 128-bit hash); one stored under its old
        // id and again under its time-led one (written again after issue #14 part 2); and
        // the index on `ts` that retention created at open until part 5.
        sqlx::raw_sql(
            "INSERT INTO log_message VALUES ('0123456789abcdef0123456789abcdef', 1, 'app', \
             'APP/PROC/WEB', '0', 'OUT', 'old line', 'rep', 'cf', 'cell', '0', '10.0.0.1'); \
             INSERT INTO log_message VALUES ('fedcba9876543210aaaaaaaaaaaaaaaa', 2, 'app', \
             'APP/PROC/WEB', '0', 'OUT', 'twice', 'rep', 'cf', 'cell', '0', '10.0.0.1'); \
             INSERT INTO log_message VALUES ('0000000000000002aaaaaaaaaaaaaaaa', 2, 'app', \
             'APP/PROC/WEB', '0', 'OUT', 'twice', 'rep', 'cf', 'cell', '0', '10.0.0.1'); \
             CREATE INDEX log_message_ts ON log_message (ts);",
        )
        .execute(&mut connection)
        .await
        .expect("old rows");
    }
    let indexes = |names: Vec<String>| {
        names
            .into_iter()
            .filter(|n| n.ends_with("_app_ts") || n == "log_message_ts")
            .collect::<Vec<_>>()
    };
    let before: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'index' ORDER BY name")
            .fetch_all(&mut connect(&path).await)
            .await
            .expect("indexes");
    assert_eq!(
        indexes(before),
        [
            "container_metric_app_ts",
            "http_start_stop_app_ts",
            "log_message_app_ts",
            "log_message_ts"
        ]
    );

    run_sink(config(&path), every_stream())
        .await
        .expect("the old file opens and takes rows");
    let after: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'index' ORDER BY name")
            .fetch_all(&mut connect(&path).await)
            .await
            .expect("indexes");
    // The per-app index the API reads logs through stays; the two nothing reads are gone,
    // and so is the time index, which log ids now serve as.
    assert_eq!(indexes(after), ["log_message_app_ts"]);
    let lines = dump_sqlite(&path, "log_message").await;
    assert_eq!(
        lines.len(),
        3,
        "the old line, the one stored twice, once, and the new one"
    );
    let id_of = |message: &str| {
        let ids: Vec<_> = lines
            .iter()
            .filter(|row| row[6] == t(message))
            .map(|row| row[0].clone())
            .collect();
        assert_eq!(ids.len(), 1, "{message}: {ids:?}");
        ids[0].clone()
    };
    // Old ids become time-led: the timestamp, then the hash's low 64 bits they ended with.
    assert_eq!(id_of("old line"), t("00000000000000010123456789abcdef"));
    assert_eq!(id_of("twice"), t("0000000000000002aaaaaaaaaaaaaaaa"));
    assert_eq!(dump_sqlite(&path, "container_metric").await.len(), 2);
    assert_eq!(dump_sqlite(&path, "http_start_stop").await.len(), 2);
}
