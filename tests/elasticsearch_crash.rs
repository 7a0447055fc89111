//! `sluice run` into Elasticsearch through an outage and a `kill -9`: logs accepted into the
//! disk buffer while the cluster is unreachable are all indexed by the next run, each once.

use sluice_test_support::search;

use std::path::Path;
use std::process::Stdio;

use search::{FaultProxy, SearchServer, assert_same_ids};
use sluice_model::event::{Payload, log_id};
use sluice_test_support::*;

fn config(dir: &Path, name: &str, capture: &Path, url: &str, buffer: &Path) -> std::path::PathBuf {
    write_config(
        dir,
        name,
        &format!(
            r#"
[sources.replay]
type = "file"
path = {capture:?}

[sinks.search]
type = "elasticsearch"
url = "{url}"
index = "logs-%Y.%m.%d"
streams = ["logs"]
dead_letter = {dead:?}
buffer = {{ type = "disk", path = {buffer:?}, max_size = "1GiB", when_full = "block" }}
"#,
            dead = dir.join("dead.ndjson"),
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_buffered_during_an_outage_survive_kill_9_and_are_indexed_once() {
    let server = SearchServer::start();
    let proxy = FaultProxy::start(&server.url).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let events = simulated_events(5, 20, 8_000, 0.0);
    let mut expected: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.payload {
            Payload::Log(log) => Some(log_id(log)),
            _ => None,
        })
        .collect();
    expected.sort();
    expected.dedup();
    assert!(expected.len() > 1_000, "{} logs", expected.len());
    let capture = dir.path().join("capture.bin");
    write_capture(&capture, &events);
    let empty = dir.path().join("empty.bin");
    write_capture(&empty, &[]);
    let buffer = dir.path().join("buffer");

    // The cluster is unreachable for the whole first run: everything waits on disk.
    proxy.set_down();
    let crash = config(dir.path(), "crash.toml", &capture, &proxy.url, &buffer);
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
    let seen = tokio::task::spawn_blocking(move || {
        read_stderr_until(stderr, "Everything the dataflow sent is in the disk buffer")
    })
    .await
    .expect("stderr read");
    assert!(
        seen.last()
            .is_some_and(|l| l.contains("in the disk buffer")),
        "sluice ended before filling its buffer:\n{}",
        seen.join("\n")
    );
    assert!(
        seen.iter()
            .any(|l| l.contains("Elasticsearch is unavailable") && l.contains(&proxy.url[7..])),
        "the outage was not reported with host and port:\n{}",
        seen.join("\n")
    );
    child.kill().expect("kill -9");
    child.wait().expect("reaped");
    assert_eq!(server.count("logs-*").await, 0);

    // The cluster is back; the next run reads nothing new: every document comes from the buffer.
    proxy.set_up();
    let restart = config(dir.path(), "restart.toml", &empty, &proxy.url, &buffer);
    let output = tokio::task::spawn_blocking(move || run_config(&restart))
        .await
        .expect("sluice ran");
    assert_success(&output);
    assert_same_ids(&server.ids("logs-*").await, &expected);
    assert!(
        !dir.path().join("dead.ndjson").exists(),
        "nothing was rejected"
    );
}
