//! The `sluice` command line as a user meets it: help, validation, finite runs, bad input and
//! Ctrl-C.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use sluice_test_support::*;

#[test]
fn help_explains_every_command() {
    let output = run_sluice(&["--help"]);
    assert_success(&output);
    let help = String::from_utf8_lossy(&output.stdout);
    for command in ["run", "validate", "simulate", "capture", "bench", "top"] {
        assert!(help.contains(command), "--help lists `{command}`:\n{help}");
    }
    let output = run_sluice(&["run", "--help"]);
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(
        help.contains("embedded default") && help.contains("--config"),
        "{help}"
    );
    let output = run_sluice(&["simulate", "--help"]);
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(
        help.contains("admin`/`admin") && help.contains("developer`/`developer"),
        "simulate --help names the test users:\n{help}"
    );
    assert!(help.contains("--token-ttl"), "{help}");
}

#[test]
fn validate_prints_the_topology_or_every_problem_with_exit_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = write_config(
        dir.path(),
        "good.toml",
        "[sources.sim]\ntype = \"simulator\"\nlimit = 10\n\n[sinks.out]\ntype = \"blackhole\"\nstreams = [\"logs\", \"app_rollups\"]\n",
    );
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

    let bad = write_config(
        dir.path(),
        "bad.toml",
        "[pipeline]\nworkers = 0\n\n[sources.sim]\ntype = \"simulator\"\napps = 0\n",
    );
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
    let config = write_config(
        dir.path(),
        "missing.toml",
        "[sources.replay]\ntype = \"file\"\npath = \"/nonexistent/capture.bin\"\n\n[sinks.out]\ntype = \"blackhole\"\n",
    );
    let output = run_config(&config);
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("/nonexistent/capture.bin"), "{text}");
}

#[test]
fn a_sink_that_cannot_start_stops_an_endless_run_with_exit_1() {
    let dir = tempfile::tempdir().expect("temp dir");
    let blocker = dir.path().join("not-a-directory");
    std::fs::write(&blocker, "a file").expect("write");
    let config = write_config(
        dir.path(),
        "unwritable.toml",
        &format!(
            "[sources.sim]\ntype = \"simulator\"\nrate = 1000\n\n[sinks.local]\ntype = \"sqlite\"\npath = {:?}\n",
            blocker.join("x.db")
        ),
    );
    let output = run_config(&config);
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("not-a-directory"), "{text}");
}

#[test]
fn a_finite_run_exits_0_after_writing_everything_it_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(
        dir.path(),
        "finite.toml",
        "[sources.sim]\ntype = \"simulator\"\nrate = 0\nlimit = 5000\nclock = \"simulated\"\n\n[sinks.out]\ntype = \"stdout\"\nstreams = [\"logs\", \"container_metrics\", \"http\", \"errors\"]\n",
    );
    let output = run_config(&config);
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
    let config = write_config(
        dir.path(),
        "endless.toml",
        &format!(
            "[sources.sim]\ntype = \"simulator\"\nrate = 5000\n\n[sinks.local]\ntype = \"sqlite\"\npath = {db:?}\n"
        ),
    );
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
    wait_for_rows(&mut child, &db, "log_message", 1);
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
    let logs = count_rows(&db, "log_message");
    let rollups = count_rows(&db, "app_metric_rollup");
    assert!(logs > 0, "{logs} log lines stored");
    assert!(
        rollups > 0,
        "open windows were flushed: {rollups} rollup rows"
    );
}
