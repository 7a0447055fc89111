//! SPEC §8: a record accepted into a `disk` buffer survives `kill -9`, and the next run with
//! the same buffer path delivers it.

use std::path::Path;
use std::process::Stdio;

use sluice_test_support::*;
use sqlx::Connection;

const TABLES: [&str; 7] = sluice_test_support::mariadb::SECTION_3_TABLES;

fn config(
    dir: &Path,
    name: &str,
    capture: &Path,
    db: &Path,
    buffer: Option<&Path>,
) -> std::path::PathBuf {
    let buffer = buffer
        .map(|b| format!("buffer = {{ type = \"disk\", path = {b:?} }}\n"))
        .unwrap_or_default();
    write_config(
        dir,
        name,
        &format!(
            "[sources.replay]\ntype = \"file\"\npath = {capture:?}\n\n[sinks.local]\ntype = \"sqlite\"\npath = {db:?}\nbusy_timeout = \"20ms\"\n{buffer}"
        ),
    )
}

fn counts(db: &Path) -> Vec<i64> {
    TABLES.iter().map(|t| count_rows(db, t)).collect()
}

#[test]
fn records_in_a_disk_buffer_survive_kill_9_and_the_next_run_stores_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let capture = dir.path().join("capture.bin");
    write_capture(&capture, &simulated_events(11, 20, 4000, 0.0));
    let empty = dir.path().join("empty.bin");
    write_capture(&empty, &[]);
    let buffer = dir.path().join("buffer");

    // What the capture stores when nothing goes wrong.
    let reference = dir.path().join("reference.db");
    assert_success(&run_config(&config(
        dir.path(),
        "reference.toml",
        &capture,
        &reference,
        None,
    )));
    let expected = counts(&reference);
    assert!(expected[0] > 0, "{expected:?}");

    // The store exists but another process holds its write lock: the sink cannot write, so
    // everything waits in the disk buffer when the process is killed.
    let db = dir.path().join("crash.db");
    assert_success(&run_config(&config(
        dir.path(),
        "create.toml",
        &empty,
        &db,
        None,
    )));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut lock = runtime.block_on(async {
        let mut connection = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
            .await
            .expect("the store opens");
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut connection)
            .await
            .expect("locked");
        connection
    });
    let crash = config(dir.path(), "crash.toml", &capture, &db, Some(&buffer));
    let mut child = sluice()
        .args([
            "run",
            "--no-status",
            "--config",
            crash.to_str().expect("utf-8"),
        ])
        .env("SLUICE_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("sluice starts");
    let stderr = child.stderr.take().expect("stderr");
    let seen = read_stderr_until(stderr, "Everything the dataflow sent is in the disk buffer");
    assert!(
        seen.last()
            .is_some_and(|l| l.contains("in the disk buffer")),
        "sluice ended before filling its buffer:\n{}",
        seen.join("\n")
    );
    child.kill().expect("kill -9");
    child.wait().expect("reaped");
    assert_eq!(
        count_rows(&db, "log_message"),
        0,
        "the lock kept the store empty"
    );
    runtime.block_on(async {
        sqlx::query("ROLLBACK")
            .execute(&mut lock)
            .await
            .expect("unlocked");
        lock.close().await.expect("closed");
    });

    // The next run reads nothing new: every row comes from the buffer.
    let restart = config(dir.path(), "restart.toml", &empty, &db, Some(&buffer));
    assert_success(&run_config(&restart));
    assert_eq!(counts(&db), expected);
    let left: Vec<_> = std::fs::read_dir(&buffer).expect("buffer dir").collect();
    assert!(left.is_empty(), "the drained buffer kept {left:?}");
}
