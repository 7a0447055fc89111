//! SPEC §9 with a source that cannot rewind: `sluice simulate` → `sluice run` (Firehose,
//! checkpoints every second) → `kill -9` → restart with the same config. While that happens a
//! reader polls the rollup table: no row may ever hold fewer records than a version of it seen
//! before. The restart logs the gap since the checkpoint and exposes it in `/metrics`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sluice_test_support::*;
use sqlx::Row;

/// The counts of one `app_metric_rollup` row that only ever grow with more records.
type Counts = [i64; 4];

/// What the reader saw: the greatest version of each row, and how often rows grew.
#[derive(Default)]
struct Observed {
    rows: HashMap<(String, i64), Counts>,
    polls: u64,
    growths: u64,
}

impl Observed {
    /// Takes one reading of the table; panics if any row went back.
    fn take(&mut self, reading: Vec<((String, i64), Counts)>) {
        self.polls += 1;
        for (key, counts) in reading {
            match self.rows.get_mut(&key) {
                None => {
                    self.rows.insert(key, counts);
                }
                Some(seen) => {
                    for (column, (now, before)) in counts.iter().zip(seen.iter()).enumerate() {
                        assert!(
                            now >= before,
                            "row {key:?} regressed in column {column}: {counts:?} after {seen:?}"
                        );
                    }
                    if counts != *seen {
                        self.growths += 1;
                        *seen = counts;
                    }
                }
            }
        }
    }

    fn total_log_lines(&self) -> i64 {
        self.rows.values().map(|counts| counts[1]).sum()
    }
}

async fn read_rollups(db: &Path) -> Vec<((String, i64), Counts)> {
    let url = format!("sqlite://{}?mode=ro", db.display());
    let Ok(pool) = sqlx::SqlitePool::connect(&url).await else {
        return Vec::new();
    };
    let rows = sqlx::query(
        "SELECT app_id, minute, requests, log_lines, log_err_lines, app_events \
         FROM app_metric_rollup",
    )
    .fetch_all(&pool)
    .await
    .unwrap_or_default();
    pool.close().await;
    rows.iter()
        .map(|row| {
            let key = (row.get::<String, _>(0), row.get::<i64, _>(1));
            (key, [2, 3, 4, 5].map(|i| row.get::<i64, _>(i)))
        })
        .collect()
}

fn start_run(config: &Path) -> Reaper {
    Reaper(
        sluice()
            .args(["run", "--no-status", "--config"])
            .arg(config)
            .env("SLUICE_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("run starts"),
    )
}

/// Drains `child`'s stderr on a thread; the returned flag is set once a line has `needle`.
fn watch_stderr(child: &mut Child, needle: &'static str) -> Arc<AtomicBool> {
    let seen = Arc::new(AtomicBool::new(false));
    let flag = seen.clone();
    let stderr = child.stderr.take().expect("stderr piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(needle) {
                flag.store(true, Ordering::SeqCst);
            }
        }
    });
    seen
}

/// Polls until `done` holds, taking a reading of the table each time.
async fn poll_until(
    observed: &mut Observed,
    db: &Path,
    run: &mut Reaper,
    what: &str,
    mut done: impl FnMut(&Observed) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        observed.take(read_rollups(db).await);
        if done(observed) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        if let Some(status) = run.0.try_wait().expect("status") {
            panic!("sluice exited while waiting for {what}: {status}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_a_live_run_restarts_from_its_checkpoint_and_no_rollup_row_regresses() {
    let port = free_port();
    let mut simulator = Reaper(
        sluice()
            .args(["simulate", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--rate", "3000", "--apps", "10"])
            .env("SLUICE_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("simulate starts"),
    );
    wait_for_line(&mut simulator.0, "Serving a simulated Firehose");

    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("live.db");
    let state = dir.path().join("state");
    let admin = free_port();
    let config = write_config(
        dir.path(),
        "live.toml",
        &format!(
            r#"
[pipeline]
state_dir = {state:?}
checkpoint_interval = "1s"

[admin]
listen = "127.0.0.1:{admin}"

[sources.cf]
type = "firehose"
url = "ws://127.0.0.1:{port}"
subscription_id = "sluice-live"
uaa_url = "http://127.0.0.1:{port}"
client_id = "sluice"
client_secret = "sluice"

[sinks.local]
type = "sqlite"
path = {db:?}
"#
        ),
    );

    let mut observed = Observed::default();
    let mut first = start_run(&config);
    drop(watch_stderr(&mut first.0, "Pipeline running"));
    poll_until(
        &mut observed,
        &db,
        &mut first,
        "rollup rows to grow",
        |seen| seen.growths >= 20,
    )
    .await;
    let before_kill = observed.total_log_lines();
    let kill = Command::new("kill")
        .args(["-KILL", &first.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    first.0.wait().expect("the first run is gone");
    // What the killed run left must hold as well.
    observed.take(read_rollups(&db).await);

    let mut second = start_run(&config);
    let gap_logged = watch_stderr(&mut second.0, "a live stream cannot be rewound");
    poll_until(
        &mut observed,
        &db,
        &mut second,
        "the restarted run to add records",
        |seen| seen.total_log_lines() > before_kill + 2_000,
    )
    .await;
    assert!(
        gap_logged.load(Ordering::SeqCst),
        "the restart logs the gap since the checkpoint"
    );
    let gap = metric(admin, "sluice_state_restored_gap_seconds{source=\"cf\"}")
        .expect("the gap is in /metrics");
    assert!(gap > 0.0 && gap < 120.0, "gap {gap}s");
    assert_eq!(metric(admin, "sluice_state_restores_total"), Some(1.0));

    let interrupt = Command::new("kill")
        .args(["-INT", &second.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(interrupt.success());
    let status = second.0.wait().expect("the second run ends");
    assert!(status.success(), "{status}");
    observed.take(read_rollups(&db).await);
    assert!(observed.polls > 10, "{} readings", observed.polls);
}
