//! `sluice run` as a three-process timely cluster on loopback (SPEC §12): a replay split
//! between the processes lands exactly as one process writes it, in SQLite and MariaDB;
//! three Firehose consumers of one subscription count every envelope once; a lost process
//! stops the others with an error naming it.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use sluice_test_support::mariadb::{Cell, TABLE_KEYS, TestDatabase, dump_mysql, dump_sqlite};
use sluice_test_support::simulate;
use sluice_test_support::*;

const PROCESSES: usize = 3;

/// Loopback addresses for a cluster of `n` processes.
fn addresses(n: usize) -> Vec<String> {
    (0..n)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect()
}

/// `[cluster]` of `addresses`.
fn cluster_section(addresses: &[String]) -> String {
    format!(
        "[cluster]\naddresses = {addresses:?}\nstartup_timeout = \"60s\"\n",
        addresses = addresses
    )
}

/// `sluice run --process N` of `config`, with `SLUICE_PART=N` for per-process paths.
fn start_process(config: &Path, process: usize) -> Child {
    start_process_logging(config, process, Stdio::piped())
}

/// [`start_process`] with its log going to `stderr`.
fn start_process_logging(config: &Path, process: usize, stderr: Stdio) -> Child {
    sluice()
        .args(["run", "--no-status", "--process", &process.to_string()])
        .arg("--config")
        .arg(config)
        .env("SLUICE_PART", process.to_string())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("sluice starts")
}

/// Waits for every process to exit, with its stderr.
fn wait_all(children: Vec<Child>) -> Vec<std::process::Output> {
    children
        .into_iter()
        .map(|child| child.wait_with_output().expect("sluice ran"))
        .collect()
}

/// The replay sinks: SQLite at `sqlite`, and MariaDB at `mysql` when given.
fn sinks(sqlite: &Path, mysql: Option<&str>) -> String {
    let mut text = format!(
        r#"
[sinks.local]
type = "sqlite"
path = {sqlite:?}
"#
    );
    if let Some(url) = mysql {
        text.push_str(&format!(
            r#"
[sinks.db]
type = "mysql"
url = "{url}"
batch_size = 2000
# The capture's clock is in the past: keep its rows.
retention = {{ enabled = false }}
"#
        ));
    }
    text
}

/// Lateness generous enough that no record of the test's traffic is late anywhere: then a
/// cluster writes what one process writes (SPEC §12).
const PIPELINE: &str = "[pipeline]\nworkers = 2\nallowed_lateness = \"1h\"\n";

fn dump_all_sqlite(path: &Path) -> Vec<Vec<Vec<Cell>>> {
    dump_sqlite_tables(path, TABLE_KEYS.iter().map(|(table, _)| *table))
}

fn dump_sqlite_tables<'a>(
    path: &Path,
    tables: impl IntoIterator<Item = &'a str>,
) -> Vec<Vec<Vec<Cell>>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut dumped = Vec::new();
        for table in tables {
            dumped.push(dump_sqlite(path, table).await);
        }
        dumped
    })
}

fn dump_all_mysql(db: &TestDatabase) -> Vec<Vec<Vec<Cell>>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut connection = db.connect().await;
        let mut tables = Vec::new();
        for (table, _) in TABLE_KEYS {
            tables.push(dump_mysql(&mut connection, table).await);
        }
        tables
    })
}

fn assert_same_tables(what: &str, actual: &[Vec<Vec<Cell>>], expected: &[Vec<Vec<Cell>>]) {
    for (((table, _), got), want) in TABLE_KEYS.iter().zip(actual).zip(expected) {
        // `app.updated` is when the directory changed, in the event time of the process that
        // read the app's first tags: it differs between one process and a cluster by design.
        let comparable = |rows: &Vec<Vec<Cell>>| -> Vec<Vec<Cell>> {
            rows.iter()
                .map(|row| {
                    let mut row = row.clone();
                    if *table == "app" {
                        row.pop();
                    }
                    row
                })
                .collect()
        };
        let (got, want) = (&comparable(got), &comparable(want));
        assert_eq!(
            got.len(),
            want.len(),
            "{what}: {table} has {} rows, one process wrote {}",
            got.len(),
            want.len()
        );
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g, w, "{what}: a row of {table} differs from one process's");
        }
    }
}

/// Writes `events` to `whole.bin` in `dir`, and round-robin to `part-N.bin` for each process
/// (every app's records are spread over every process); the whole file's path.
fn split_capture(dir: &Path, events: &[sluice_model::Event]) -> PathBuf {
    let whole = dir.join("whole.bin");
    write_capture(&whole, events);
    for part in 0..PROCESSES {
        let share: Vec<_> = events
            .iter()
            .skip(part)
            .step_by(PROCESSES)
            .cloned()
            .collect();
        write_capture(&dir.join(format!("part-{part}.bin")), &share);
    }
    whole
}

#[test]
fn a_replay_split_over_three_processes_writes_the_tables_of_one_process() {
    let dir = tempfile::tempdir().expect("temp dir");
    let whole = split_capture(dir.path(), &simulated_events(21, 40, 24_000, 0.0));

    // One process, the whole file.
    let alone_db = dir.path().join("alone.db");
    let alone = write_config(
        dir.path(),
        "alone.toml",
        &format!(
            "{PIPELINE}\n[sources.replay]\ntype = \"file\"\npath = {whole:?}\n{}",
            sinks(&alone_db, None)
        ),
    );
    assert_success(&run_config(&alone));
    let expected = dump_all_sqlite(&alone_db);
    for ((table, _), rows) in TABLE_KEYS.iter().zip(&expected) {
        assert!(
            !rows.is_empty() || *table == "platform_error",
            "{table} is empty: the comparison would prove nothing"
        );
    }

    // Three processes, each its own part (`${SLUICE_PART}`), into one SQLite file and one
    // MariaDB database.
    let db = TestDatabase::shared("cluster_replay");
    let cluster_db = dir.path().join("cluster.db");
    let part = dir.path().join("part-${SLUICE_PART}.bin");
    let config = write_config(
        dir.path(),
        "cluster.toml",
        &format!(
            "{PIPELINE}\n{}\n[sources.replay]\ntype = \"file\"\npath = \"{}\"\n{}",
            cluster_section(&addresses(PROCESSES)),
            part.display(),
            sinks(&cluster_db, Some(&db.url()))
        ),
    );
    let children: Vec<Child> = (0..PROCESSES)
        .map(|process| start_process(&config, process))
        .collect();
    for (process, output) in wait_all(children).iter().enumerate() {
        assert!(
            output.status.success(),
            "process {process} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert_same_tables("SQLite", &dump_all_sqlite(&cluster_db), &expected);
    assert_same_tables("MariaDB", &dump_all_mysql(&db), &expected);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(db.drop_database());
}

/// A config whose source never ends: each process simulates its own traffic.
fn endless_config(dir: &Path, addresses: &[String]) -> PathBuf {
    write_config(
        dir,
        "endless.toml",
        &format!(
            "{PIPELINE}\n{}\n[sources.sim]\ntype = \"simulator\"\napps = 20\nrate = 500\n\n\
             [sinks.local]\ntype = \"sqlite\"\npath = \"{}\"\n",
            cluster_section(addresses),
            dir.join("endless-${SLUICE_PART}.db").display()
        ),
    )
}

#[test]
fn a_lost_process_stops_the_others_with_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let addresses = addresses(PROCESSES);
    let config = endless_config(dir.path(), &addresses);
    let mut children: Vec<Reaper> = (0..PROCESSES)
        .map(|process| Reaper(start_process(&config, process)))
        .collect();
    // Every process has joined and runs before one is lost.
    let mut logs = Vec::new();
    for child in &mut children {
        let stderr = child.0.stderr.take().expect("stderr piped");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        logs.push(receiver);
    }
    let mut seen: Vec<Vec<String>> = vec![Vec::new(); PROCESSES];
    for (process, log) in logs.iter().enumerate() {
        loop {
            let line = log
                .recv_timeout(Duration::from_secs(90))
                .unwrap_or_else(|_| panic!("process {process} never ran: {:?}", seen[process]));
            let running = line.contains("Pipeline running.");
            seen[process].push(line);
            if running {
                break;
            }
        }
    }
    // Records cross between the processes before the loss.
    wait_for_rows(
        &mut children[0].0,
        &dir.path().join("endless-0.db"),
        "app_metric_rollup",
        1,
    );

    children[2].0.kill().expect("kill -9 process 2");
    children[2].0.wait().expect("process 2 reaped");
    let deadline = Instant::now() + Duration::from_secs(60);
    for process in 0..2 {
        let status = loop {
            if let Some(status) = children[process].0.try_wait().expect("status") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "process {process} still runs a minute after process 2 was lost"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(status.code(), Some(1), "process {process} exits 1");
        // The rest of its stderr, to its end.
        while let Ok(line) = logs[process].recv_timeout(Duration::from_secs(10)) {
            seen[process].push(line);
        }
        // The others stop too and may be noticed first: the dead one is named among them.
        let dead = format!("process 2 ({},", addresses[2]);
        let named = seen[process]
            .iter()
            .any(|line| line.contains("Run failed: lost ") && line.contains(&dead));
        assert!(
            named,
            "process {process} does not name the lost peer:\n{}",
            seen[process].join("\n")
        );
    }
}

/// A Firehose of `limit` envelopes on a simulated clock, the same for the same seed.
fn simulated_firehose(runtime: &tokio::runtime::Runtime, limit: u64) -> simulate::Running {
    use sluice_simulator::server::SimulateConfig;
    use sluice_simulator::{Clock, SimulatorConfig};
    let generator = SimulatorConfig {
        apps: 30,
        seed: 33,
        rate: 0,
        limit: Some(limit),
        clock: Clock::Simulated,
        density: 10,
        ..SimulatorConfig::default()
    };
    runtime.block_on(simulate::Running::start(SimulateConfig {
        client_id: "sluice".to_owned(),
        client_secret: "s3cret".to_owned(),
        generator,
        ..SimulateConfig::default()
    }))
}

fn firehose_config(
    dir: &Path,
    name: &str,
    firehose: std::net::SocketAddr,
    connections: usize,
    cluster: Option<&[String]>,
    db: &Path,
) -> PathBuf {
    let cluster = cluster.map(cluster_section).unwrap_or_default();
    write_config(
        dir,
        name,
        &format!(
            r#"{PIPELINE}
{cluster}
[admin]
listen = "127.0.0.1:${{ADMIN_PORT}}"

[sources.cf]
type = "firehose"
url = "ws://{firehose}"
subscription_id = "one-subscription"
uaa_url = "http://{firehose}"
client_id = "sluice"
client_secret = "s3cret"
connections = {connections}

[sinks.local]
type = "sqlite"
path = {db:?}
"#
        ),
    )
}

/// A figure of a process's `/metrics` (0 while it does not answer yet).
fn figure(admin: u16, name: &str) -> f64 {
    metric(admin, name).unwrap_or(0.0)
}

/// Runs `processes` (index, admin port) of `config` until their sources have read `limit`
/// envelopes in all, then stops them with Ctrl-C; returns how many each read.
fn run_until_read(config: &Path, processes: &[(Option<usize>, u16)], limit: u64) -> Vec<f64> {
    let mut children: Vec<Reaper> = processes
        .iter()
        .map(|(process, admin)| {
            let mut command = sluice();
            command
                .args(["run", "--no-status", "--config"])
                .arg(config)
                .env("ADMIN_PORT", admin.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if let Some(process) = process {
                command.args(["--process", &process.to_string()]);
            }
            Reaper(command.spawn().expect("sluice starts"))
        })
        .collect();
    let read = |name: &str| -> Vec<f64> {
        processes
            .iter()
            .map(|(_, admin)| figure(*admin, name))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let events = "sluice_source_events_total{source=\"cf\"}";
    while read(events).iter().sum::<f64>() < limit as f64 {
        assert!(
            Instant::now() < deadline,
            "the processes read {:?} of {limit} envelopes in two minutes",
            read(events)
        );
        for child in &mut children {
            assert!(
                child.0.try_wait().expect("status").is_none(),
                "a process ended early"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let counts = read(events);
    for child in &children {
        let interrupted = std::process::Command::new("kill")
            .args(["-INT", &child.0.id().to_string()])
            .status()
            .expect("kill");
        assert!(interrupted.success());
    }
    for child in &mut children {
        let status = child.0.wait().expect("sluice exits");
        assert!(status.success(), "a process exited with {status}");
    }
    counts
}

#[test]
fn three_processes_on_one_subscription_count_every_envelope_once() {
    const LIMIT: u64 = 12_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");

    // One process, one connection.
    let firehose = simulated_firehose(&runtime, LIMIT);
    let alone_db = dir.path().join("alone.db");
    let alone = firehose_config(dir.path(), "alone.toml", firehose.addr, 1, None, &alone_db);
    let read = run_until_read(&alone, &[(None, free_port())], LIMIT);
    assert_eq!(read, [LIMIT as f64]);
    let sent = runtime.block_on(firehose.stop());
    assert_eq!(sent.envelopes_per_subscription["one-subscription"], LIMIT);
    let expected = dump_all_sqlite(&alone_db);

    // Three processes of two connections each, on the same subscription of the same traffic.
    let firehose = simulated_firehose(&runtime, LIMIT);
    let cluster_db = dir.path().join("cluster.db");
    let addresses = addresses(PROCESSES);
    let config = firehose_config(
        dir.path(),
        "cluster.toml",
        firehose.addr,
        2,
        Some(&addresses),
        &cluster_db,
    );
    let processes: Vec<(Option<usize>, u16)> =
        (0..PROCESSES).map(|p| (Some(p), free_port())).collect();
    let read = run_until_read(&config, &processes, LIMIT);
    let stats = runtime.block_on(firehose.stop());
    assert_eq!(stats.envelopes_per_subscription["one-subscription"], LIMIT);
    assert_eq!(stats.connections_total, 2 * PROCESSES as u64);
    assert!(
        stats.connections.iter().all(|c| c.envelopes > 0),
        "the subscription was dealt over every connection: {:?}",
        stats.connections
    );
    assert_eq!(
        read.iter().sum::<f64>(),
        LIMIT as f64,
        "read once: {read:?}"
    );
    assert!(
        read.iter().all(|&n| n > 0.0),
        "every process had its share: {read:?}"
    );
    assert_same_tables("SQLite", &dump_all_sqlite(&cluster_db), &expected);
}

#[test]
fn a_peer_that_never_starts_is_an_error_naming_it_after_the_startup_timeout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let addresses = addresses(2);
    let capture = dir.path().join("capture.bin");
    write_capture(&capture, &simulated_events(5, 5, 100, 0.0));
    let config = write_config(
        dir.path(),
        "lonely.toml",
        &format!(
            "{PIPELINE}\n[cluster]\naddresses = {addresses:?}\nstartup_timeout = \"1s\"\n\n\
             [sources.replay]\ntype = \"file\"\npath = {capture:?}\n{}",
            sinks(&dir.path().join("lonely.db"), None)
        ),
    );
    let output = start_process(&config, 0)
        .wait_with_output()
        .expect("sluice ran");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "no answer from process 1 ({}) within cluster.startup_timeout (1s)",
            addresses[1]
        )),
        "{stderr}"
    );
    assert!(
        !dir.path().join("lonely.db").exists(),
        "nothing starts before the cluster is formed"
    );

    // Without its index a process cannot know which address is its own.
    let output = sluice()
        .args(["run", "--no-status", "--config"])
        .arg(&config)
        .output()
        .expect("sluice ran");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cluster.process is not set"), "{stderr}");
}

/// A simulated Firehose whose subscription never carries anything.
fn silent_firehose(runtime: &tokio::runtime::Runtime) -> simulate::Running {
    use sluice_simulator::SimulatorConfig;
    use sluice_simulator::server::SimulateConfig;
    runtime.block_on(simulate::Running::start(SimulateConfig {
        client_id: "sluice".to_owned(),
        client_secret: "s3cret".to_owned(),
        generator: SimulatorConfig {
            limit: Some(0),
            ..SimulatorConfig::default()
        },
        ..SimulateConfig::default()
    }))
}

#[test]
fn a_process_that_reads_nothing_follows_the_others_and_windows_close() {
    const LIMIT: u64 = 20_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    // Process 0 reads ~33 minutes of event time; process 1's subscription stays silent.
    let busy = simulated_firehose(&runtime, LIMIT);
    let silent = silent_firehose(&runtime);
    let db = dir.path().join("idle.db");
    let config = write_config(
        dir.path(),
        "idle.toml",
        &format!(
            r#"[pipeline]
workers = 1
allowed_lateness = "60s"

{}
[admin]
listen = "127.0.0.1:${{ADMIN_PORT}}"

[sources.cf]
type = "firehose"
url = "ws://${{FIREHOSE}}"
subscription_id = "one-subscription"
uaa_url = "http://${{FIREHOSE}}"
client_id = "sluice"
client_secret = "s3cret"

[sinks.local]
type = "sqlite"
path = {db:?}
"#,
            cluster_section(&addresses(2))
        ),
    );
    let admins = [free_port(), free_port()];
    let firehoses = [busy.addr, silent.addr];
    let mut children: Vec<Reaper> = (0..2)
        .map(|process| {
            Reaper(
                sluice()
                    .args(["run", "--no-status", "--process", &process.to_string()])
                    .arg("--config")
                    .arg(&config)
                    .env("ADMIN_PORT", admins[process].to_string())
                    .env("FIREHOSE", firehoses[process].to_string())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("sluice starts"),
            )
        })
        .collect();
    let open_windows = || -> f64 {
        admins
            .iter()
            .map(|admin| figure(*admin, "sluice_graph_open_windows"))
            .sum()
    };
    let events = "sluice_source_events_total{source=\"cf\"}";
    let deadline = Instant::now() + Duration::from_secs(120);
    while figure(admins[0], events) < LIMIT as f64 {
        assert!(
            Instant::now() < deadline,
            "process 0 did not read its share"
        );
        assert!(children[0].0.try_wait().expect("status").is_none());
        std::thread::sleep(Duration::from_millis(100));
    }
    // Every minute read has a row by now or soon (provisional rows are flushed every second):
    // without following, every one of those windows would stay open, held by process 1.
    let rows = || count_rows(&db, "app_metric_rollup") + count_rows(&db, "platform_metric_rollup");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (open, written) = (open_windows(), rows() as f64);
        if written > 0.0 && open <= written * 0.25 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "windows stay open behind the idle process: {open} open of {written} written"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for child in &mut children {
        let _ = child.0.kill();
    }
    runtime.block_on(busy.stop());
    runtime.block_on(silent.stop());
}

/// The checkpoint files process `process` keeps under `state`.
fn checkpoints_of(state: &Path, process: usize) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(state.join(format!("process-{process}"))) else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("checkpoint-") && !name.ends_with(".tmp"))
        .collect()
}

#[test]
fn a_cluster_killed_mid_replay_continues_from_its_checkpoints_exactly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let whole = split_capture(dir.path(), &simulated_events(23, 40, 90_000, 0.0));
    let alone_db = dir.path().join("alone.db");
    // Lateness long enough that nothing is late, short enough that minutes close during the
    // run: then a restart needs the windows each process saved, not only its rows.
    let pipeline = "[pipeline]\nworkers = 2\nallowed_lateness = \"5m\"\nchannel_capacity = 1\n";
    // With a state directory too: minutes the watermark has not closed when the replay ends
    // stay open for a next run, and their space and org rows are not written (they have no
    // provisional rows).
    let alone_state = dir.path().join("alone-state");
    let alone = write_config(
        dir.path(),
        "alone.toml",
        &format!(
            "{pipeline}state_dir = {alone_state:?}\n\n[sources.replay]\ntype = \"file\"\n\
             path = {whole:?}\n{}",
            sinks(&alone_db, None)
        ),
    );
    assert_success(&run_config(&alone));
    // Every table: a restart continues each exactly (SPEC §9), the directory and the space and
    // org rollups too (the checkpoints hold the directory's facts and the open group minutes).
    let expected = dump_all_sqlite(&alone_db);

    // Each process keeps its part of every checkpoint under `state/process-N`; small
    // batches and buffers keep the source close behind its sink, so the kills land mid-way.
    let state = dir.path().join("state");
    let cluster_db = dir.path().join("cluster.db");
    let config = write_config(
        dir.path(),
        "cluster.toml",
        &format!(
            "{pipeline}state_dir = {state:?}\ncheckpoint_interval = \"1s\"\n\n{}\n\
             [sources.replay]\ntype = \"file\"\npath = \"{}\"\n\n\
             [sinks.local]\ntype = \"sqlite\"\npath = {cluster_db:?}\nbatch_size = 100\n\
             buffer = {{ type = \"memory\", max_events = 500 }}\n",
            cluster_section(&addresses(PROCESSES)),
            dir.path().join("part-${SLUICE_PART}.bin").display(),
        ),
    );
    let mut killed = 0;
    for round in 0..2 {
        let mut children: Vec<Reaper> = (0..PROCESSES)
            // Nothing reads the log of a run that is killed.
            .map(|process| Reaper(start_process_logging(&config, process, Stdio::null())))
            .collect();
        // Every process has a checkpoint of this round on disk, then all die at once.
        let before: Vec<Vec<String>> = (0..PROCESSES)
            .map(|process| checkpoints_of(&state, process))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut finished = false;
        loop {
            let fresh = (0..PROCESSES).all(|process| {
                checkpoints_of(&state, process)
                    .iter()
                    .any(|name| !before[process].contains(name))
            });
            if fresh {
                break;
            }
            if children
                .iter_mut()
                .any(|child| child.0.try_wait().expect("status").is_some())
            {
                finished = true;
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: no new checkpoint on every process within two minutes"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        for child in &mut children {
            if child.0.try_wait().expect("status").is_none() {
                child.0.kill().expect("kill -9");
                finished = false;
            }
            child.0.wait().expect("reaped");
        }
        if finished {
            break;
        }
        killed += 1;
    }
    assert!(killed >= 1, "the cluster finished before any kill");

    // Restarted together, the processes agree on the newest checkpoint all of them have and
    // finish the replay.
    let children: Vec<Child> = (0..PROCESSES)
        .map(|process| start_process(&config, process))
        .collect();
    let mut endings = Vec::new();
    for (process, output) in wait_all(children).iter().enumerate() {
        let log = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "process {process} failed after {killed} kills ({}):\n{log}",
            output.status,
        );
        assert!(
            log.contains("Continuing from the checkpoint"),
            "process {process} did not continue from a checkpoint:\n{log}"
        );
        endings.extend(
            log.lines()
                .filter(|line| line.contains("Continuing") || line.contains("Run finished"))
                .map(|line| format!("process {process}: {line}")),
        );
    }
    let endings = endings.join("\n");
    let actual = dump_all_sqlite(&cluster_db);
    for (((table, _), got), want) in TABLE_KEYS.iter().zip(&actual).zip(&expected) {
        assert!(
            !want.is_empty() || *table == "platform_error",
            "{table} is empty: the comparison would prove nothing"
        );
        assert_eq!(
            got.len(),
            want.len(),
            "{table} has {} rows after {killed} kills, an uninterrupted process wrote {}\n{endings}",
            got.len(),
            want.len()
        );
        for (g, w) in got.iter().zip(want) {
            assert_eq!(
                g, w,
                "a row of {table} differs after {killed} kills\n{endings}"
            );
        }
    }
    // Each process keeps at most its two newest checkpoints.
    for process in 0..PROCESSES {
        let kept = checkpoints_of(&state, process);
        assert!(
            !kept.is_empty() && kept.len() <= 2,
            "process {process} keeps {kept:?}"
        );
    }
}
