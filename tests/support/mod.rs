//! Helpers shared by the whole-program tests: captures, configs, running the binary, reading
//! the SQLite store.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sluice_connectors::source::simulator::{Clock, Generator, SimulatorConfig};
use sluice_model::Event;
use sluice_model::framing::write_frame;
use sluice_model::reference::encode_v1;

/// The `sluice` binary built for these tests.
pub fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

/// Runs `sluice` with `args`, returning its output; stderr is kept for failure messages.
pub fn run_sluice(args: &[&str]) -> Output {
    sluice()
        .args(args)
        .env("SLUICE_LOG", "warn")
        .output()
        .expect("the sluice binary runs")
}

/// `count` simulated envelopes on a simulated clock: out of order by up to `jitter`, with a
/// share of very late records.
pub fn simulated_events(seed: u64, apps: u32, count: usize, late_fraction: f64) -> Vec<Event> {
    let config = SimulatorConfig {
        apps,
        seed,
        rate: 0,
        clock: Clock::Simulated,
        density: 200,
        jitter: std::time::Duration::from_secs(20),
        late_fraction,
        ..SimulatorConfig::default()
    };
    let mut generator = Generator::new(&config);
    let mut events = Vec::with_capacity(count);
    generator.fill(count, &mut events);
    events
}

/// Writes events as a dropsonde replay file (SPEC §1.3).
pub fn write_capture(path: &Path, events: &[Event]) {
    let mut bytes = Vec::new();
    for event in events {
        write_frame(&mut bytes, &encode_v1(event));
    }
    std::fs::write(path, bytes).expect("capture written");
}

/// A config replaying `capture` into the SQLite file `db` with `workers` workers.
pub fn replay_config(dir: &Path, capture: &Path, db: &Path, workers: usize) -> PathBuf {
    let path = dir.join(format!("replay-{workers}.toml"));
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
path = {db:?}
streams = ["logs", "container_metrics", "http", "app_events", "app_rollups", "platform_rollups", "errors"]
"#
    );
    std::fs::write(&path, text).expect("config written");
    path
}

/// Asserts a finished `sluice` run exited 0, showing its stderr otherwise.
pub fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "sluice failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}
