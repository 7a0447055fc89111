//! `sluice run` writing one capture to SQLite and to MariaDB side by side: the two stores
//! hold the same rows, cell for cell, with 1 and 2 workers, and a second replay of the
//! capture changes neither.

use sluice_test_support::mariadb;

use std::path::Path;

use mariadb::{Cell, TABLE_KEYS, TestDatabase, dump_mysql, dump_sqlite};
use sluice_test_support::{
    assert_success, run_config, simulated_events, write_capture, write_config,
};

fn config(
    dir: &Path,
    capture: &Path,
    sqlite: &Path,
    mysql_url: &str,
    workers: usize,
) -> std::path::PathBuf {
    let text = format!(
        r#"
[pipeline]
workers = {workers}
allowed_lateness = "60s"

[sources.replay]
type = "file"
path = {capture:?}

[sinks.local]
type = "sqlite"
path = {sqlite:?}

[sinks.db]
type = "mysql"
url = "{mysql_url}"
batch_size = 2000
# The capture's clock is in the past: keep its rows.
retention = {{ enabled = false }}
"#
    );
    write_config(dir, &format!("both-{workers}.toml"), &text)
}

async fn dump_both(sqlite: &Path, db: &TestDatabase) -> Vec<Vec<Vec<Cell>>> {
    let mut connection = db.connect().await;
    let mut tables = Vec::new();
    for (table, _) in TABLE_KEYS {
        let in_mysql = dump_mysql(&mut connection, table).await;
        let in_sqlite = dump_sqlite(sqlite, table).await;
        assert_eq!(
            in_mysql.len(),
            in_sqlite.len(),
            "{table}: row counts differ between MySQL and SQLite"
        );
        for (m, s) in in_mysql.iter().zip(&in_sqlite) {
            assert_eq!(m, s, "{table}: a row differs between MySQL and SQLite");
        }
        tables.push(in_mysql);
    }
    tables
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_lands_identically_in_sqlite_and_mysql_and_a_replay_changes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let capture = dir.path().join("capture.bin");
    write_capture(&capture, &simulated_events(11, 40, 20_000, 0.01));

    let mut by_workers = Vec::new();
    for workers in [1, 2] {
        let sqlite = dir.path().join(format!("sluice-{workers}.db"));
        let db = TestDatabase::shared(&format!("store{workers}"));
        let config = config(dir.path(), &capture, &sqlite, &db.url(), workers);
        let run = {
            let config = config.clone();
            tokio::task::spawn_blocking(move || run_config(&config))
        };
        assert_success(&run.await.expect("sluice ran"));
        let first = dump_both(&sqlite, &db).await;
        for ((table, _), rows) in TABLE_KEYS.iter().zip(&first) {
            // Every stream of the simulator reaches its table (errors are rare: skip them).
            assert!(
                !rows.is_empty() || *table == "platform_error",
                "{table} is empty with {workers} workers"
            );
        }

        let replay = tokio::task::spawn_blocking(move || run_config(&config));
        assert_success(&replay.await.expect("sluice ran again"));
        let second = dump_both(&sqlite, &db).await;
        assert!(
            first == second,
            "replaying the capture changed the stores ({workers} workers)"
        );
        by_workers.push(first);
        db.drop_database().await;
    }
    assert!(
        by_workers[0] == by_workers[1],
        "1 and 2 workers wrote different tables"
    );
}
