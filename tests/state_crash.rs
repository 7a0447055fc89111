//! SPEC §9: `kill -9` at any moment of a replay that keeps its state, then a restart with the
//! same config, ends with exactly the tables of an uninterrupted run — in SQLite and MySQL,
//! with memory and disk buffers. The kills land at varied moments after checkpoints exist,
//! one of them while a checkpoint is being written.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use sluice_simulator::SimulatedApp;
use sluice_test_support::cloud_controller::{App, StandIn};
use sluice_test_support::mariadb::{Cell, TestDatabase, dump_mysql, dump_sqlite};
use sluice_test_support::*;

const TABLES: [&str; 7] = sluice_test_support::mariadb::SECTION_3_TABLES;

/// Where a run writes.
enum Store {
    Sqlite(PathBuf),
    Mysql(String),
}

impl Store {
    fn sink(&self) -> String {
        match self {
            Store::Sqlite(path) => format!("type = \"sqlite\"\npath = {path:?}\n"),
            // Retention by the wall clock would delete a 2024 capture as it is written.
            Store::Mysql(url) => {
                format!("type = \"mysql\"\nurl = {url:?}\nretention = {{ enabled = false }}\n")
            }
        }
    }

    async fn dump(&self) -> Vec<Vec<Vec<Cell>>> {
        let mut tables = Vec::new();
        for table in TABLES {
            tables.push(match self {
                Store::Sqlite(path) => dump_sqlite(path, table).await,
                Store::Mysql(url) => {
                    let mut connection = sluice_test_support::mariadb::connect(url).await;
                    dump_mysql(&mut connection, table).await
                }
            });
        }
        tables
    }
}

fn config(dir: &Path, name: &str, capture: &Path, store: &Store, disk_buffer: bool) -> PathBuf {
    let state = dir.join(format!("{name}-state"));
    // Small buffers keep the sink close behind the source, so checkpoints come often and
    // the kills land mid-way.
    let buffer = if disk_buffer {
        format!(
            "buffer = {{ type = \"disk\", path = {:?} }}\n",
            dir.join(format!("{name}-buffer"))
        )
    } else {
        "buffer = { type = \"memory\", max_events = 2000 }\n".to_owned()
    };
    write_config(
        dir,
        &format!("{name}.toml"),
        &format!(
            "[pipeline]\nworkers = 2\nstate_dir = {state:?}\ncheckpoint_interval = \"1s\"\n\n\
             [sources.replay]\ntype = \"file\"\npath = {capture:?}\n\n\
             [sinks.store]\n{}{buffer}",
            store.sink()
        ),
    )
}

fn start(config: &Path) -> Reaper {
    Reaper(
        sluice()
            .args([
                "run",
                "--no-status",
                "--config",
                config.to_str().expect("utf-8"),
            ])
            .env("SLUICE_LOG", "warn")
            .stderr(Stdio::null())
            .spawn()
            .expect("sluice starts"),
    )
}

/// Waits up to `limit` for `path` to exist; whether it does.
fn appears(path: &Path, limit: Duration, run: &mut Reaper) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        if run.0.try_wait().expect("status").is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

/// Runs `config` to completion through `kills` kills: each after the run has written a
/// checkpoint and then `delay` more, or (for `None`) as soon as a checkpoint is being
/// written. Returns how many runs were killed.
fn crash_through(config: &Path, state: &Path, kills: &[Option<Duration>]) -> usize {
    let mut killed = 0;
    for kill in kills {
        let mut run = start(config);
        let checkpoint = state.join("checkpoint");
        let ready = match kill {
            Some(delay) => {
                let seen = appears(&checkpoint, Duration::from_secs(60), &mut run);
                std::thread::sleep(*delay);
                seen
            }
            None => appears(
                &state.join("checkpoint.tmp"),
                Duration::from_secs(30),
                &mut run,
            ),
        };
        match run.0.try_wait().expect("status") {
            // It finished before the kill: the capture is done.
            Some(status) => {
                assert!(status.success(), "a run failed on its own: {status}");
                return killed;
            }
            None => {
                run.0.kill().expect("kill -9");
                run.0.wait().expect("reaped");
                killed += usize::from(ready);
            }
        }
    }
    assert_success(&run_config(config));
    killed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_any_moment_then_a_restart_ends_with_the_tables_of_an_uninterrupted_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let capture = dir.path().join("capture.bin");
    // About 100 minutes of event time, 2 % of it minutes late.
    write_capture(&capture, &simulated_events(23, 300, 300_000, 0.02));

    let reference = Store::Sqlite(dir.path().join("reference.db"));
    assert_success(&run_config(&config(
        dir.path(),
        "reference",
        &capture,
        &reference,
        false,
    )));
    let expected = reference.dump().await;
    assert!(
        expected.iter().all(|rows| !rows.is_empty()),
        "every table has rows"
    );

    let kills = [
        Some(Duration::from_millis(700)),
        None,
        Some(Duration::from_millis(1900)),
        Some(Duration::from_millis(150)),
    ];
    let mysql_memory = TestDatabase::shared("state_crash_memory");
    let mysql_disk = TestDatabase::shared("state_crash_disk");
    let stores = [
        (
            "sqlite-memory",
            Store::Sqlite(dir.path().join("memory.db")),
            false,
        ),
        (
            "sqlite-disk",
            Store::Sqlite(dir.path().join("disk.db")),
            true,
        ),
        ("mysql-memory", Store::Mysql(mysql_memory.url()), false),
        ("mysql-disk", Store::Mysql(mysql_disk.url()), true),
    ];
    for (name, store, disk) in &stores {
        let config = config(dir.path(), name, &capture, store, *disk);
        let killed = crash_through(&config, &dir.path().join(format!("{name}-state")), &kills);
        assert!(
            killed >= 2,
            "{name}: only {killed} runs were killed mid-way"
        );
        assert!(
            store.dump().await == expected,
            "{name}: the tables differ from an uninterrupted run's"
        );
    }
    mysql_memory.drop_database().await;
    mysql_disk.drop_database().await;
}

/// The Cloud Controller's listing for the test below: every other untagged app, and every
/// fifth tagged one (the Cloud Controller wins over its tags), in spaces of its own.
fn cloud_controller_listing(apps: &[SimulatedApp]) -> Vec<App> {
    apps.iter()
        .enumerate()
        .filter(|(i, app)| if app.tagged { i % 5 == 0 } else { i % 2 == 0 })
        .map(|(i, app)| App {
            guid: app.guid.hyphenated().to_string(),
            name: format!("cc-{i}"),
            space_id: format!("cc-space-{}", i % 3),
            space_name: format!("cc-space-{}-name", i % 3),
            org_id: format!("cc-org-{}", i % 2),
            org_name: format!("cc-org-{}-name", i % 2),
        })
        .collect()
}

/// `config` with a `[metadata]` section naming the stand-in at `cc_url`.
fn with_metadata(config: PathBuf, cc_url: &str) -> PathBuf {
    let mut text = std::fs::read_to_string(&config).expect("config");
    // Listed once at each start: no refresh within a run.
    text.push_str(&format!(
        "\n[metadata]\ncc_url = {cc_url:?}\nuaa_url = {cc_url:?}\nclient_id = \"sluice\"\n\
         client_secret = \"s3cr3t\"\nrefresh = \"1h\"\nstartup_timeout = \"30s\"\n"
    ));
    std::fs::write(&config, text).expect("config written");
    config
}

/// SPEC §9 with §11: the directory (half the apps tagged, a Cloud Controller listing some
/// of the untagged ones and overriding some tagged ones) and the space and org minutes are in
/// every checkpoint, so a replay `kill -9`ed after checkpoints and restarted writes the `app`
/// table (`updated` included: a restored app is not written again at the restart's watermark)
/// and the space and org rollups of an uninterrupted run — every minute of them: an app's
/// minute counts under the facts stated before it closed, whatever the scheduling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_and_group_minutes_survive_kill_9_and_a_restart() {
    const GROUP_TABLES: [&str; 3] = ["app", "space_metric_rollup", "org_metric_rollup"];
    let dump = |path: PathBuf| async move {
        let mut tables = Vec::new();
        for table in GROUP_TABLES {
            tables.push(dump_sqlite(&path, table).await);
        }
        tables
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let capture = dir.path().join("capture.bin");
    // About 100 minutes of event time; 300 apps, half of them tagged (the simulator's default).
    write_capture(&capture, &simulated_events(29, 300, 300_000, 0.0));
    let cc = StandIn::start(vec![cloud_controller_listing(&simulated_apps(29, 300))]);

    let reference = dir.path().join("reference.db");
    assert_success(&run_config(&with_metadata(
        config(
            dir.path(),
            "reference",
            &capture,
            &Store::Sqlite(reference.clone()),
            false,
        ),
        &cc.url(),
    )));
    let expected = dump(reference).await;
    // Every kind of place is there: the Cloud Controller's spaces, the tags', and '' for
    // apps neither names.
    let spaces: BTreeSet<String> = expected[1]
        .iter()
        .filter_map(|row| match row.first() {
            Some(Cell::Text(space)) => Some(space.clone()),
            _ => None,
        })
        .collect();
    assert!(spaces.contains("cc-space-0"), "{spaces:?}");
    assert!(spaces.contains(""), "{spaces:?}");
    assert!(
        spaces
            .iter()
            .any(|s| !s.is_empty() && !s.starts_with("cc-")),
        "{spaces:?}"
    );

    let crashed = dir.path().join("crashed.db");
    let config = with_metadata(
        config(
            dir.path(),
            "crashed",
            &capture,
            &Store::Sqlite(crashed.clone()),
            false,
        ),
        &cc.url(),
    );
    let kills = [
        Some(Duration::from_millis(900)),
        Some(Duration::from_millis(1500)),
    ];
    let killed = crash_through(&config, &dir.path().join("crashed-state"), &kills);
    assert!(killed >= 1, "no run was killed mid-way");
    let tables = dump(crashed).await;
    for (i, table) in GROUP_TABLES.iter().enumerate() {
        assert!(expected[i].len() > 100, "{table}: enough rows to compare");
        let missing: Vec<_> = expected[i]
            .iter()
            .filter(|r| !tables[i].contains(r))
            .take(4)
            .collect();
        let extra: Vec<_> = tables[i]
            .iter()
            .filter(|r| !expected[i].contains(r))
            .take(4)
            .collect();
        assert!(
            tables[i] == expected[i],
            "{table} differs from an uninterrupted run's ({} rows against {}): missing \
             {missing:?}, not expected {extra:?}",
            tables[i].len(),
            expected[i].len()
        );
    }
}
