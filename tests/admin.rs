//! The admin endpoint of `sluice run`: `/metrics` parsed by a Prometheus text-format parser
//! agrees with what the store holds, `/health` follows an Elasticsearch outage, and
//! `sluice top --once` shows a running instance.

use sluice_test_support::search;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use prometheus_parse::{Scrape, Value};
use search::{FaultProxy, SearchServer};
use sluice_model::reference::encode_v1;
use sluice_sinks::rows::TABLES;
use sluice_test_support::*;

/// A loopback port nothing listens on now.
fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("bound")
}

/// Samples by metric name and sorted labels.
type Samples = BTreeMap<(String, Vec<(String, String)>), f64>;

fn scrape(address: SocketAddr) -> Option<Samples> {
    let (status, body) = http_get(address, "/metrics")?;
    assert_eq!(status, 200, "{body}");
    let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("parses");
    assert!(
        scrape
            .docs
            .contains_key("sluice_sink_records_written_total"),
        "no HELP for the written counter"
    );
    let mut samples = Samples::new();
    for sample in scrape.samples {
        let value = match sample.value {
            Value::Counter(v) | Value::Gauge(v) => v,
            other => panic!("{} is not a counter or gauge: {other:?}", sample.metric),
        };
        let mut labels: Vec<(String, String)> = sample
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.sort();
        samples.insert((sample.metric, labels), value);
    }
    Some(samples)
}

fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    labels.sort();
    samples.get(&(name.to_owned(), labels)).copied()
}

/// Polls `check` until it returns `Ok`, failing with its last complaint after a minute.
fn until<T>(child: &mut Child, what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match check() {
            Ok(value) => return value,
            Err(complaint) => {
                if let Some(status) = child.try_wait().expect("child status") {
                    panic!("sluice exited ({status}) while waiting for {what}: {complaint}");
                }
                assert!(
                    Instant::now() < deadline,
                    "no {what} after 60 s: {complaint}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Kills the child when dropped, so a failing test leaves no process behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(config: &Path) -> Running {
    Running(
        sluice()
            .args([
                "run",
                "--no-status",
                "--config",
                config.to_str().expect("utf-8"),
            ])
            .env("SLUICE_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("sluice starts"),
    )
}

const RAW_STREAMS: [&str; 5] = ["logs", "container_metrics", "http", "errors", "app_events"];

/// Records of the raw streams the sink `local` has written, by its counters.
fn raw_written(samples: &Samples) -> f64 {
    RAW_STREAMS
        .iter()
        .filter_map(|s| {
            value(
                samples,
                "sluice_sink_records_written_total",
                &[("sink", "local"), ("stream", s)],
            )
        })
        .sum()
}

#[test]
fn metrics_agree_with_the_rows_stored_and_top_shows_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let events = simulated_events(11, 10, 6_000, 0.0);
    let envelope_bytes: usize = events.iter().map(|e| encode_v1(e).len()).sum();
    let capture = dir.path().join("capture.bin");
    write_capture(&capture, &events);
    // A second source reads a FIFO that stays open, empty, until the test has scraped: the
    // run (and its endpoint) stays up after the replay's last record, every counter settled.
    let fifo = dir.path().join("idle.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success(), "mkfifo failed");
    let db = dir.path().join("store.db");
    let admin = free_port();
    let config = write_config(
        dir.path(),
        "admin.toml",
        &format!(
            r#"
[admin]
listen = "{admin}"

[sources.replay]
type = "file"
path = {capture:?}

[sources.idle]
type = "file"
path = {fifo:?}

[sinks.local]
type = "sqlite"
path = {db:?}
streams = {streams:?}
"#,
            streams = RAW_STREAMS,
        ),
    );
    let mut sluice = start(&config);
    let (release, released) = std::sync::mpsc::channel::<()>();
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let pipe = std::fs::OpenOptions::new()
                .write(true)
                .open(&fifo)
                .expect("fifo opened");
            // Closing the pipe ends the idle source, and with it the run.
            let _ = released.recv();
            drop(pipe);
        })
    };

    let n = events.len() as f64;
    let samples = until(&mut sluice.0, "counters matching the store", || {
        let samples = scrape(admin).ok_or("the endpoint does not answer")?;
        let events_total = value(
            &samples,
            "sluice_source_events_total",
            &[("source", "replay")],
        );
        if events_total != Some(n) {
            return Err(format!("source events {events_total:?} of {n}"));
        }
        let pending = value(
            &samples,
            "sluice_sink_pending_records",
            &[("sink", "local")],
        );
        if pending != Some(0.0) {
            return Err(format!("sink pending {pending:?}"));
        }
        // Records counted by the source may still be in the graph, not yet at the sink:
        // wait for (nearly) all of them to be written before comparing.
        let written = raw_written(&samples);
        if written < n * 0.9 {
            return Err(format!("only {written} of {n} records written so far"));
        }
        for table in TABLES
            .iter()
            .filter(|t| RAW_STREAMS.contains(&t.stream.as_str()))
        {
            let stream = table.stream.as_str();
            let written = value(
                &samples,
                "sluice_sink_records_written_total",
                &[("sink", "local"), ("stream", stream)],
            );
            let rows = count_rows(&db, table.name) as f64;
            if written != Some(rows) {
                return Err(format!(
                    "{stream}: written {written:?}, {rows} rows in {}",
                    table.name
                ));
            }
        }
        Ok(samples)
    });
    let written = raw_written(&samples);
    assert!(written >= n * 0.9, "only {written} of {n} records written");
    assert_eq!(
        value(
            &samples,
            "sluice_source_bytes_total",
            &[("source", "replay")]
        ),
        Some(envelope_bytes as f64)
    );
    assert_eq!(value(&samples, "sluice_graph_records_total", &[]), Some(n));
    // The process's memory, read from /proc: a running process has some, and never more
    // now than at its peak.
    let resident = value(&samples, "process_resident_memory_bytes", &[]).expect("resident memory");
    let peak = value(&samples, "sluice_process_resident_memory_max_bytes", &[]).expect("peak");
    assert!(
        resident > 1_000_000.0 && resident <= peak,
        "{resident} of {peak}"
    );
    assert_eq!(
        value(&samples, "sluice_sink_available", &[("sink", "local")]),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "sluice_sink_buffer_oldest_age_seconds",
            &[("sink", "local")]
        ),
        Some(0.0),
        "nothing is pending"
    );
    let dropped = value(&samples, "sluice_sink_dropped_total", &[("sink", "local")]);
    assert_eq!(dropped, Some(0.0));
    assert!(
        value(&samples, "sluice_graph_watermark_lag_seconds", &[]).is_some(),
        "the watermark lag appears with the first record"
    );

    // `sluice top --once` reads the same endpoint.
    let top = run_sluice(&["top", "--once", "--url", &format!("http://{admin}")]);
    assert!(
        top.status.success(),
        "{}",
        String::from_utf8_lossy(&top.stderr)
    );
    let screen = String::from_utf8(top.stdout).expect("utf-8");
    let replay_line = screen
        .lines()
        .find(|l| l.starts_with("replay "))
        .unwrap_or_else(|| panic!("no source line:\n{screen}"));
    assert!(
        replay_line.contains(&events.len().to_string()),
        "{replay_line}"
    );
    let local_line = screen
        .lines()
        .find(|l| l.starts_with("local "))
        .unwrap_or_else(|| panic!("no sink line:\n{screen}"));
    assert!(local_line.ends_with("yes"), "{local_line}");

    // End the replay: the run finishes and exits 0.
    drop(release);
    writer.join().expect("writer thread");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = sluice.0.try_wait().expect("child status") {
            break status;
        }
        assert!(Instant::now() < deadline, "sluice did not finish");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "sluice exited {status}");
}

#[test]
fn top_says_which_endpoint_it_cannot_reach() {
    let admin = free_port();
    let url = format!("http://{admin}");
    let top = run_sluice(&["top", "--once", "--url", &url]);
    assert!(!top.status.success());
    let stderr = String::from_utf8_lossy(&top.stderr);
    assert!(stderr.contains(&url), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_turns_503_while_elasticsearch_is_down_and_200_when_it_returns() {
    let server = SearchServer::start();
    let proxy = FaultProxy::start(&server.url).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let admin = free_port();
    let config = write_config(
        dir.path(),
        "health.toml",
        &format!(
            r#"
[admin]
listen = "{admin}"

[sources.sim]
type = "simulator"
rate = 500
apps = 3

[sinks.search]
type = "elasticsearch"
url = "{url}"
index = "logs-%Y.%m.%d"
streams = ["logs"]
flush_interval = "100ms"
request_timeout = "2s"
dead_letter = {dead:?}
"#,
            url = proxy.url,
            dead = dir.path().join("dead.ndjson"),
        ),
    );
    let health = move |want: u16| {
        move || match http_get(admin, "/health") {
            Some((status, body)) if status == want => Ok(body),
            Some((status, body)) => Err(format!("{status} {body}")),
            None => Err("the endpoint does not answer".to_owned()),
        }
    };
    let proxy = std::sync::Arc::new(proxy);
    let watch = {
        let proxy = proxy.clone();
        tokio::task::spawn_blocking(move || {
            let mut sluice = start(&config);
            let ok = until(&mut sluice.0, "a healthy pipeline", health(200));
            assert_eq!(ok, r#"{"status":"ok"}"#);

            proxy.set_down();
            let down = until(&mut sluice.0, "503 during the outage", health(503));
            let body: serde_json::Value = serde_json::from_str(&down).expect("json");
            assert_eq!(body["status"], "unavailable");
            let failing = body["failing"]
                .as_array()
                .expect("a list of failing components");
            assert_eq!(failing.len(), 1, "{body}");
            assert_eq!(failing[0]["component"], "sinks.search");
            assert!(
                failing[0]["reason"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("elasticsearch is unavailable")),
                "{body}"
            );
            let samples = scrape(admin).expect("metrics during the outage");
            assert_eq!(
                value(&samples, "sluice_sink_available", &[("sink", "search")]),
                Some(0.0)
            );
            assert!(
                value(&samples, "sluice_sink_retries_total", &[("sink", "search")])
                    .is_some_and(|r| r >= 1.0)
            );

            let written = |samples: &Samples| {
                value(
                    samples,
                    "sluice_sink_records_written_total",
                    &[("sink", "search"), ("stream", "logs")],
                )
                .unwrap_or(0.0)
            };
            let before = written(&samples);

            proxy.set_up();
            until(&mut sluice.0, "200 after the outage", health(200));
            // And the sink writes again.
            until(&mut sluice.0, "logs written after the outage", || {
                let samples = scrape(admin).ok_or("the endpoint does not answer")?;
                let after = written(&samples);
                if after > before {
                    Ok(())
                } else {
                    Err(format!("{after} logs written, {before} before the outage"))
                }
            });
        })
    };
    watch.await.expect("the health checks passed");
    drop(server);
}

#[test]
fn a_reload_adds_and_removes_components_on_the_endpoint() {
    let dir = tempfile::tempdir().expect("temp dir");
    let admin = free_port();
    let text = |source: &str, sink: &str| {
        format!(
            "[admin]\nlisten = \"{admin}\"\n\n[sources.{source}]\ntype = \"simulator\"\nrate = 100\n\n[sinks.{sink}]\ntype = \"blackhole\"\nstreams = [\"logs\"]\n"
        )
    };
    let config = write_config(dir.path(), "reload.toml", &text("first", "old"));
    let mut sluice = Running(
        sluice()
            .args([
                "run",
                "--watch",
                "--no-status",
                "--config",
                config.to_str().expect("utf-8"),
            ])
            .env("SLUICE_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("sluice starts"),
    );
    let shows = |source: &str, sink: &str| {
        let (source, sink) = (source.to_owned(), sink.to_owned());
        move || {
            let samples = scrape(admin).ok_or("the endpoint does not answer")?;
            let sources: Vec<&str> = samples
                .keys()
                .filter(|(name, _)| name == "sluice_source_events_total")
                .flat_map(|(_, labels)| labels.iter().map(|(_, v)| v.as_str()))
                .collect();
            let sinks: Vec<&str> = samples
                .keys()
                .filter(|(name, _)| name == "sluice_sink_available")
                .flat_map(|(_, labels)| labels.iter().map(|(_, v)| v.as_str()))
                .collect();
            if sources == [source.as_str()] && sinks == [sink.as_str()] {
                Ok(())
            } else {
                Err(format!("sources {sources:?}, sinks {sinks:?}"))
            }
        }
    };
    until(&mut sluice.0, "the first topology", shows("first", "old"));

    write_config(dir.path(), "reload.toml", &text("second", "new"));
    let hangup = std::process::Command::new("kill")
        .args(["-HUP", &sluice.0.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(hangup.success());
    until(
        &mut sluice.0,
        "the reloaded topology",
        shows("second", "new"),
    );
    let samples = scrape(admin).expect("metrics after the reload");
    assert!(
        value(&samples, "sluice_reloads_total", &[]).is_some_and(|n| n >= 1.0),
        "the reload is counted"
    );
}
