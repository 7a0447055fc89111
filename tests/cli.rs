//! The `sluice` command line as a user meets it: help, validation, finite runs, bad input and
//! Ctrl-C.

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::*;

#[test]
fn help_explains_every_command() {
    let output = run_sluice(&["--help"]);
    assert_success(&output);
    let help = String::from_utf8_lossy(&output.stdout);
    for command in ["run", "validate", "simulate", "capture", "bench"] {
        assert!(help.contains(command), "--help lists `{command}`:\n{help}");
    }
    let output = run_sluice(&["run", "--help"]);
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(
        help.contains("embedded default") && help.contains("--config"),
        "{help}"
    );
}

#[test]
fn validate_prints_the_topology_or_every_problem_with_exit_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[sources.sim]\ntype = \"simulator\"\nlimit = 10\n\n[sinks.out]\ntype = \"blackhole\"\nstreams = [\"logs\", \"app_rollups\"]\n",
    )
    .expect("write");
    let output = run_sluice(&["validate", "--config", good.to_str().expect("utf-8")]);
    assert_success(&output);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("sim (simulator)"), "{text}");
    assert!(
        text.contains("app_rollups") && text.contains("→ out"),
        "{text}"
    );
    assert!(
        text.contains("http") && text.contains("(not written)"),
        "{text}"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[pipeline]\nworkers = 0\n\n[sources.sim]\ntype = \"simulator\"\napps = 0\n",
    )
    .expect("write");
    let output = run_sluice(&["validate", "--config", bad.to_str().expect("utf-8")]);
    assert_eq!(output.status.code(), Some(2));
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("2 problems"), "{text}");
    assert!(
        text.contains("bad.toml")
            && text.contains("pipeline.workers")
            && text.contains("sources.sim.apps"),
        "{text}"
    );
}

#[test]
fn a_missing_replay_file_fails_the_run_naming_the_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("missing.toml");
    std::fs::write(
        &config,
        "[sources.replay]\ntype = \"file\"\npath = \"/nonexistent/capture.bin\"\n\n[sinks.out]\ntype = \"blackhole\"\n",
    )
    .expect("write");
    let output = run_sluice(&[
        "run",
        "--no-status",
        "--config",
        config.to_str().expect("utf-8"),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("/nonexistent/capture.bin"), "{text}");
}

#[test]
fn a_sink_that_cannot_start_stops_an_endless_run_with_exit_1() {
    let dir = tempfile::tempdir().expect("temp dir");
    let blocker = dir.path().join("not-a-directory");
    std::fs::write(&blocker, "a file").expect("write");
    let config = dir.path().join("unwritable.toml");
    std::fs::write(
        &config,
        format!(
            "[sources.sim]\ntype = \"simulator\"\nrate = 1000\n\n[sinks.local]\ntype = \"sqlite\"\npath = {:?}\n",
            blocker.join("x.db")
        ),
    )
    .expect("write");
    let output = run_sluice(&[
        "run",
        "--no-status",
        "--config",
        config.to_str().expect("utf-8"),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("not-a-directory"), "{text}");
}

#[test]
fn a_finite_run_exits_0_after_writing_everything_it_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("finite.toml");
    std::fs::write(
        &config,
        "[sources.sim]\ntype = \"simulator\"\nrate = 0\nlimit = 5000\nclock = \"simulated\"\n\n[sinks.out]\ntype = \"stdout\"\nstreams = [\"logs\", \"container_metrics\", \"http\", \"errors\"]\n",
    )
    .expect("write");
    let output = run_sluice(&[
        "run",
        "--no-status",
        "--config",
        config.to_str().expect("utf-8"),
    ]);
    assert_success(&output);
    let lines = String::from_utf8_lossy(&output.stdout);
    let raw = lines
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("NDJSON"))
        .filter(|v| v["stream"] != "platform_rollups")
        .count();
    // The simulator's ValueMetrics and CounterEvents feed only rollups; everything else is raw.
    assert!(
        raw > 4000 && raw <= 5000,
        "{raw} raw records of 5000 envelopes"
    );
}

#[test]
fn ctrl_c_writes_what_was_read_and_exits_0() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("interrupted.db");
    let config = dir.path().join("endless.toml");
    std::fs::write(
        &config,
        format!(
            "[sources.sim]\ntype = \"simulator\"\nrate = 5000\n\n[sinks.local]\ntype = \"sqlite\"\npath = {db:?}\n"
        ),
    )
    .expect("write");
    let mut child = sluice()
        .args([
            "run",
            "--no-status",
            "--config",
            config.to_str().expect("utf-8"),
        ])
        .env("SLUICE_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("sluice starts");
    // Wait until the pipeline says it runs, then until the store has rows.
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        if line.expect("utf-8").contains("Pipeline running") {
            break;
        }
    }
    // Committed transactions land in the write-ahead log first (WAL mode).
    let wal = dir.path().join("interrupted.db-wal");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0) < 64 * 1024 {
        assert!(Instant::now() < deadline, "no rows written within 60 s");
        if let Some(status) = child.try_wait().expect("child status") {
            panic!("sluice exited early ({status})");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = child.id().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill runs");
    assert!(kill.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().expect("sluice exits");
    assert!(status.success(), "exit {status}:\n{}", rest.join("\n"));
    let log = rest.join("\n");
    assert!(log.contains("SIGINT"), "{log}");
    assert!(log.contains("interrupted=true"), "{log}");

    // What was read is in the store, rollups included (open windows as provisional rows).
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (logs, rollups) = runtime.block_on(async {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
            .await
            .expect("store opens");
        let logs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM log_message")
            .fetch_one(&pool)
            .await
            .expect("count");
        let rollups: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM app_metric_rollup")
            .fetch_one(&pool)
            .await
            .expect("count");
        (logs, rollups)
    });
    assert!(logs > 0, "{logs} log lines stored");
    assert!(
        rollups > 0,
        "open windows were flushed: {rollups} rollup rows"
    );
}
