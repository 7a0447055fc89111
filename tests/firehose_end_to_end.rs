//! The path a user takes on loopback: `sluice simulate` serves a Firehose, `sluice run` reads
//! it through the real `firehose` source (UAA token, WebSocket) into SQLite, and Ctrl-C stops
//! it with everything read written.

use std::process::Stdio;

use sluice_test_support::*;

#[test]
fn run_reads_a_simulated_firehose_into_sqlite_and_stops_on_ctrl_c() {
    let port = free_port();
    let mut simulator = Reaper(
        sluice()
            .args([
                "simulate",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--rate",
                "3000",
                "--apps",
                "20",
            ])
            .args(["--client-secret", "s3cr3t"])
            .env("SLUICE_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("simulate starts"),
    );
    wait_for_line(&mut simulator.0, "Serving a simulated Firehose");

    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("firehose.db");
    let config = dir.path().join("firehose.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[sources.cf]
type = "firehose"
url = "ws://127.0.0.1:{port}"
subscription_id = "sluice-test"
uaa_url = "http://127.0.0.1:{port}"
client_id = "sluice"
client_secret = "${{TEST_UAA_SECRET}}"

[sinks.local]
type = "sqlite"
path = {db:?}
"#
        ),
    )
    .expect("config written");
    let mut run = Reaper(
        sluice()
            .args([
                "run",
                "--no-status",
                "--config",
                config.to_str().expect("utf-8"),
            ])
            .env("SLUICE_LOG", "info")
            .env("TEST_UAA_SECRET", "s3cr3t")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("run starts"),
    );
    wait_for_line(&mut run.0, "Pipeline running");

    wait_for_rows(&mut run.0, &db, "log_message", 100);
    let pid = run.0.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let status = run.0.wait().expect("run exits");
    assert!(status.success(), "sluice run exited with {status}");

    let counts = [
        "log_message",
        "container_metric",
        "http_start_stop",
        "app_metric_rollup",
        "platform_metric_rollup",
    ]
    .map(|table| (table, count_rows(&db, table)));
    for (table, n) in counts {
        assert!(n > 0, "{table} is empty after reading the Firehose");
    }
}
