//! Reload latency: from the reload request to the new topology running, while the simulator
//! streams through the graph. Each reload adds or removes a sink and a source and changes a
//! filter, the kinds of change operators make.
//!
//! `cargo bench -p sluice-pipeline --bench reload`. Under `cargo test` it runs a few reloads
//! and checks they were applied.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_pipeline::config::Config;
use sluice_pipeline::runtime::{self, RunOptions};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

fn config(with_extra: bool) -> String {
    let mut text = String::from(
        r#"
[pipeline]
workers = 2

[sources.sim]
type = "simulator"
apps = 200
rate = 20000

[sinks.discard]
type = "blackhole"
"#,
    );
    if with_extra {
        text.push_str(
            r#"
[sources.extra]
type = "simulator"
apps = 10
rate = 1000
seed = 9

[sinks.extra]
type = "blackhole"
streams = ["logs", "app_rollups"]

[filters.quiet]
action = "drop"
message = "health"
"#,
        );
    }
    text
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let reloads = if benching { 40 } else { 4 };
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sluice.toml");
    std::fs::write(&path, config(false)).expect("config");
    let initial = Config::load(&path).expect("valid");
    let reload = Arc::new(Notify::new());
    let reloaded = Arc::new(Notify::new());
    let stop = CancellationToken::new();
    let options = RunOptions {
        status: false,
        config_path: Some(path.clone()),
        // Reloads come from `reload` alone, one at a time.
        watch: false,
        reload: Some(reload.clone()),
        reloaded: Some(reloaded.clone()),
        process: None,
        graph_metrics: None,
    };
    let stopped = stop.clone();
    let run = std::thread::spawn(move || {
        runtime::run(initial, options, async move { stopped.cancelled().await })
    });
    let waiter = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut latencies = Vec::with_capacity(reloads);
    waiter.block_on(async {
        // Let the graph warm up under load first.
        tokio::time::sleep(Duration::from_secs(1)).await;
        for i in 0..reloads {
            std::fs::write(&path, config(i % 2 == 0)).expect("config");
            let asked = Instant::now();
            reload.notify_one();
            tokio::time::timeout(Duration::from_secs(30), reloaded.notified())
                .await
                .expect("the reload was applied");
            latencies.push(asked.elapsed());
        }
    });
    stop.cancel();
    let summary = run.join().expect("run thread").expect("run");
    assert_eq!(summary.metrics.graph.reloads.get(), reloads as u64);
    assert_eq!(summary.metrics.graph.reload_failures.get(), 0);
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    println!(
        "reload latency over {reloads} reloads under 20k envelopes/s: p50 {:?}, p99 {:?}, max {:?}",
        at(0.5),
        at(0.99),
        latencies[latencies.len() - 1]
    );
}
