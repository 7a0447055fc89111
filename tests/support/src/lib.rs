//! Test helpers shared by the workspace's test suites (a dev-dependency only, never part of
//! the product). Tests repeat setup code on purpose where it reads better inline; what is here
//! is what several suites need the same way.
//!
//! Layout:
//! - this file — running the `sluice` binary (whole-program tests), captures and configs,
//!   reading a SQLite store, child processes and ports;
//! - [`fixtures`] — records made by hand, one of every kind, and SPEC §3's tables written out;
//! - [`mariadb`] — a fresh database per test on the shared MariaDB, private `mariadbd`s a test
//!   may kill, and table dumps comparable with SQLite's;
//! - [`search`] — `osmem-server` and a fault-injecting proxy in front of it;
//! - [`prometheus`] — private Prometheus servers (remote-write receiver on) and their API;
//! - [`retention`] — days of event time, every stream, and the rows a cutoff keeps;
//! - [`simulate`] — a `sluice simulate` server running inside a test;
//! - [`cloud_controller`] — a Cloud Controller and UAA stand-in serving app listings.

pub mod cloud_controller;
pub mod fixtures;
pub mod mariadb;
pub mod prometheus;
pub mod retention;
pub mod search;
pub mod simulate;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sluice_model::Event;
use sluice_model::framing::write_frame;
use sluice_model::reference::encode_v1;
use sluice_simulator::{Clock, Generator, SimulatorConfig};

/// The `sluice` binary cargo builds beside the whole-program tests (`target/<profile>/sluice`).
pub fn sluice_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut dir = exe
        .parent()
        .expect("the test binary's directory")
        .to_owned();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join(format!("sluice{}", std::env::consts::EXE_SUFFIX))
}

/// The `sluice` binary built for these tests.
pub fn sluice() -> Command {
    Command::new(sluice_binary())
}

/// Runs `sluice` with `args`, returning its output; stderr is kept for failure messages.
pub fn run_sluice(args: &[&str]) -> Output {
    sluice()
        .args(args)
        .env("SLUICE_LOG", "warn")
        .output()
        .expect("the sluice binary runs")
}

/// Writes a config file `name` into `dir`.
pub fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("config written");
    path
}

/// `sluice run --no-status --config <config>`, to completion.
pub fn run_config(config: &Path) -> Output {
    run_sluice(&[
        "run",
        "--no-status",
        "--config",
        config.to_str().expect("utf-8 path"),
    ])
}

/// `count` simulated envelopes on a simulated clock: out of order by up to `jitter`, with a
/// share of very late records.
pub fn simulated_events(seed: u64, apps: u32, count: usize, late_fraction: f64) -> Vec<Event> {
    let mut generator = Generator::new(&simulated_config(seed, apps, late_fraction));
    let mut events = Vec::with_capacity(count);
    generator.fill(count, &mut events);
    events
}

/// The apps of [`simulated_events`]'s foundation (ids, names, which are tagged).
pub fn simulated_apps(seed: u64, apps: u32) -> Vec<sluice_simulator::SimulatedApp> {
    Generator::new(&simulated_config(seed, apps, 0.0)).apps()
}

fn simulated_config(seed: u64, apps: u32, late_fraction: f64) -> SimulatorConfig {
    SimulatorConfig {
        apps,
        seed,
        rate: 0,
        clock: Clock::Simulated,
        // About 33 minutes of event time for 20 000 envelopes.
        density: 10,
        jitter: std::time::Duration::from_secs(20),
        late_fraction,
        ..SimulatorConfig::default()
    }
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
    write_config(dir, &format!("replay-{workers}.toml"), &text)
}

/// Rows in `table` of the SQLite store at `db` (0 while the file or table does not exist yet).
/// Read-only, so it can watch a store a running `sluice` writes (WAL mode).
pub fn count_rows(db: &Path, table: &'static str) -> i64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let Ok(pool) =
            sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", db.display())).await
        else {
            return 0;
        };
        // `table` is one of the SPEC's table names, written in the calling test.
        let count =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                .fetch_one(&pool)
                .await
                .unwrap_or(0);
        pool.close().await;
        count
    })
}

/// Waits until `table` of the store at `db` has at least `rows` rows, failing the test if
/// `child` exits first or a minute passes.
pub fn wait_for_rows(child: &mut std::process::Child, db: &Path, table: &'static str, rows: i64) {
    wait_for_rows_within(child, db, table, rows, 60);
}

/// [`wait_for_rows`] with a deadline of `secs` seconds.
pub fn wait_for_rows_within(
    child: &mut std::process::Child,
    db: &Path,
    table: &'static str,
    rows: i64,
    secs: u64,
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while count_rows(db, table) < rows {
        assert!(
            std::time::Instant::now() < deadline,
            "fewer than {rows} rows in {table} after {secs} s"
        );
        if let Some(status) = child.try_wait().expect("child status") {
            panic!("sluice exited early ({status})");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Reads stderr lines until one contains `text`, and returns every line read; the last is
/// the one with `text` unless the stream ended first (the process exited).
pub fn read_stderr_until(stderr: std::process::ChildStderr, text: &str) -> Vec<String> {
    use std::io::BufRead;
    let mut seen = Vec::new();
    for line in std::io::BufReader::new(stderr).lines() {
        let line = line.expect("utf-8");
        let done = line.contains(text);
        seen.push(line);
        if done {
            break;
        }
    }
    seen
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

/// Hand-built events for edge cases.
pub mod build {
    use bytes::Bytes;
    use sluice_model::event::{
        ContainerMetric, Header, HttpStartStop, LogMessage, MessageType, Method, PeerType,
    };
    use sluice_model::{Event, Payload, Str};

    fn header(origin: &str) -> Header {
        Header {
            origin: Str::from(origin),
            deployment: Str::from("cf"),
            job: Str::from("diego_cell"),
            index: Str::from("0"),
            ip: Str::from("10.0.16.10"),
            ..Header::default()
        }
    }

    pub fn log(app: &str, at: i64, message: &str) -> Event {
        Event {
            timestamp: at,
            header: header("rep"),
            payload: Payload::Log(LogMessage {
                names: None,
                message: Bytes::from(message.to_owned()),
                message_type: MessageType::Out,
                timestamp: at,
                app_id: Str::from(app),
                source_type: Str::from("APP/PROC/WEB"),
                source_instance: Str::from("0"),
            }),
        }
    }

    pub fn container(app: &str, at: i64, instance: i32, cpu: f64) -> Event {
        Event {
            timestamp: at,
            header: header("rep"),
            payload: Payload::Container(ContainerMetric {
                application_id: Str::from(app),
                instance_index: instance,
                cpu_percentage: cpu,
                memory_bytes: 1 << 28,
                disk_bytes: 1 << 27,
                memory_bytes_quota: Some(1 << 30),
                disk_bytes_quota: None,
            }),
        }
    }

    pub fn http(app: uuid::Uuid, start: i64, stop: i64, status: i32, id: u128) -> Event {
        Event {
            timestamp: stop,
            header: header("gorouter"),
            payload: Payload::Http(HttpStartStop {
                start_timestamp: start,
                stop_timestamp: stop,
                request_id: uuid::Uuid::from_u128(id),
                peer_type: PeerType::Client,
                method: Method::GET,
                uri: Str::from("https://app.example.com/"),
                remote_address: Str::from("10.0.0.1:5000"),
                user_agent: Str::from("curl/8.4.0"),
                status_code: status,
                content_length: 512,
                application_id: Some(app),
                instance_index: Some(0),
                instance_id: Str::new(),
                forwarded: Vec::new(),
            }),
        }
    }
}

/// Kills a child process if the test fails half-way.
pub struct Reaper(pub std::process::Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Waits until the child's stderr shows `needle`, then keeps draining it so the child never
/// blocks on a full pipe.
pub fn wait_for_line(child: &mut std::process::Child, needle: &str) {
    use std::io::BufRead;
    let stderr = child.stderr.take().expect("stderr piped");
    let mut lines = std::io::BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        if line.expect("utf-8").contains(needle) {
            std::thread::spawn(move || lines.for_each(drop));
            return;
        }
    }
    panic!("the process ended without logging `{needle}`");
}

/// The first sample of `/metrics` on the admin endpoint at `admin` whose line starts with
/// `name` (labels included, as the text format writes them); `None` while it does not answer.
pub fn metric(admin: u16, name: &str) -> Option<f64> {
    let (_, body) = http_get(([127, 0, 0, 1], admin).into(), "/metrics")?;
    body.lines()
        .find(|line| line.starts_with(name))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

/// `GET path` over HTTP/1.1: the status code and the body, or `None` while nothing listens.
pub fn http_get(address: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout set");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}
