//! The Grafana dashboards of `dashboards/` against a real Prometheus that a `sluice run` fed
//! for ten seconds, through its `prometheus` sink and its `[admin]` endpoint (scraped every
//! second): every file is a dashboard with a Prometheus data-source variable, every PromQL
//! expression in it (panels and variables, template variables replaced by real values) parses
//! and returns data, and the `sluice_app_*` / `sluice_platform_*` metrics the dashboards name
//! are exactly the ones the sink writes.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use regex::Regex;
use serde_json::Value;
use sluice_common::time::rfc3339;
use sluice_simulator::SimulatorConfig;
use sluice_simulator::server::SimulateConfig;
use sluice_sinks::prometheus::series::Names;
use sluice_test_support::prometheus::{Options, PrometheusServer};
use sluice_test_support::simulate;
use sluice_test_support::*;

fn dashboards() -> Vec<(PathBuf, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    let mut found: Vec<(PathBuf, Value)> = std::fs::read_dir(&dir)
        .expect("dashboards/ exists")
        .map(|entry| entry.expect("an entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("readable");
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            (path, json)
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    let mut stack: Vec<&Value> = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    while let Some(panel) = stack.pop() {
        stack.extend(panel["panels"].as_array().into_iter().flatten());
        out.push(panel);
    }
    out
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

#[test]
fn every_dashboard_is_a_grafana_model_on_a_prometheus_data_source_variable() {
    let found = dashboards();
    let names: Vec<String> = found
        .iter()
        .map(|(path, _)| {
            path.file_name()
                .expect("a name")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(names, ["apps.json", "platform.json", "sluice.json"]);
    let mut uids = BTreeSet::new();
    for (path, dashboard) in &found {
        let file = path.display();
        assert!(
            uids.insert(dashboard["uid"].as_str().expect("a uid")),
            "{file}: uid twice"
        );
        assert!(
            dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
            "{file}"
        );
        let variables = dashboard["templating"]["list"]
            .as_array()
            .expect("variables");
        assert!(
            variables.iter().any(|v| v["name"] == "datasource"
                && v["type"] == "datasource"
                && v["query"] == "prometheus"),
            "{file}: no Prometheus data-source variable"
        );
        let panels = panels(dashboard);
        assert!(panels.len() >= 8, "{file}");
        let mut ids = BTreeSet::new();
        for panel in panels {
            assert!(
                ids.insert(panel["id"].as_u64().expect("an id")),
                "{file}: id twice"
            );
            if panel["type"] == "row" {
                continue;
            }
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{file}: {}",
                panel["title"]
            );
            let targets = panel["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{file}: {}", panel["title"]);
            for target in targets {
                assert_eq!(target["datasource"]["uid"], "${datasource}");
                assert!(target["expr"].as_str().is_some_and(|e| !e.is_empty()));
            }
        }
    }
}

/// What the dashboards' expressions give: the `sluice_*` sink metrics they name, and the
/// first expression without data (or how many were checked).
struct Checked {
    named: BTreeSet<String>,
    outcome: Result<usize, String>,
}

/// Runs every expression of every dashboard against `server` over `[from, to]`, with `$app`
/// an app that has container metrics. A query that does not parse, or whose
/// `label_values` series lack the label, is a failure of the dashboards: it panics.
async fn check_dashboards(server: &PrometheusServer, from: f64, to: f64) -> Checked {
    let has_data = async |expr: &str| -> Result<Vec<Value>, String> {
        server.query_range(expr, from, to, 15.0).await
    };
    let mut named = BTreeSet::new();
    // An app with container metrics (every series of the apps dashboard).
    let cpu = has_data(r#"sluice_app_cpu_percent{window="1m"}"#)
        .await
        .expect("a query");
    let Some(app) = cpu
        .first()
        .and_then(|s| s["metric"]["app_id"].as_str())
        .map(str::to_owned)
    else {
        return Checked {
            named,
            outcome: Err("no app with container metrics yet".to_owned()),
        };
    };
    let variable = Regex::new(r"\$\{?(\w+)").expect("regex");
    let label_values = Regex::new(r"^label_values\((.+),\s*(\w+)\)$").expect("regex");
    let sink_metric = Regex::new(r"\bsluice_(?:app|platform)_[a-z_]+\b").expect("regex");
    let mut checked = 0;
    let mut first_missing = None;
    for (path, dashboard) in dashboards() {
        let file = path
            .file_name()
            .expect("a name")
            .to_string_lossy()
            .into_owned();
        let mut exprs: Vec<(String, String)> = Vec::new();
        for panel in panels(&dashboard) {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().expect("an expression");
                exprs.push((format!("{file}: {}", panel["title"]), expr.to_owned()));
            }
        }
        for var in dashboard["templating"]["list"]
            .as_array()
            .expect("variables")
        {
            if var["type"] == "query" {
                let definition = var["definition"].as_str().expect("a definition");
                exprs.push((
                    format!("{file}: variable {}", var["name"]),
                    definition.to_owned(),
                ));
            }
        }
        for (place, expr) in exprs {
            let expr = expr
                .replace("$__rate_interval", "1m")
                .replace("$app", &app)
                .replace("$window", "1m")
                .replace("$instance", ".*");
            assert!(
                !variable.is_match(&expr),
                "{place}: a variable the test does not know in {expr}"
            );
            named.extend(sink_metric.find_iter(&expr).map(|m| m.as_str().to_owned()));
            // Grafana's label_values(selector, label): the selector must select series that
            // carry the label.
            let (query, label) = match label_values.captures(&expr) {
                Some(c) => (c[1].to_owned(), Some(c[2].to_owned())),
                None => (expr.clone(), None),
            };
            if let Err(e) = server.format_query(&query).await {
                panic!("{place}: {query} does not parse: {e}");
            }
            let result = has_data(&query)
                .await
                .unwrap_or_else(|e| panic!("{place}: {query}: {e}"));
            let any = result
                .iter()
                .any(|s| s["values"].as_array().is_some_and(|v| !v.is_empty()));
            if !any {
                first_missing.get_or_insert_with(|| format!("{place}: {query} returns no data"));
            }
            if let Some(label) = label {
                assert!(
                    result.iter().all(|s| s["metric"][&label].is_string()),
                    "{place}: {query} has series without `{label}`"
                );
            }
            checked += 1;
        }
    }
    Checked {
        named,
        outcome: first_missing.map_or(Ok(checked), Err),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_parses_and_returns_data_after_a_run() {
    let admin = free_port();
    let server = PrometheusServer::start_with(Options {
        scrape: vec![format!("127.0.0.1:{admin}")],
        ..Options::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    // Event time starts 35 minutes ago, so the rollups' samples and the scrapes share the
    // recent past (Prometheus takes samples up to an hour behind its newest); 40 000
    // envelopes at 4 000 a second cover about 33 minutes of it. A second source, a Firehose
    // that sends nothing, keeps the run (and its admin endpoint, which Prometheus scrapes)
    // alive until every dashboard has its data, however slowly a loaded machine scrapes.
    let silent = simulate::Running::start(SimulateConfig {
        client_id: "sluice".to_owned(),
        client_secret: "s3cret".to_owned(),
        generator: SimulatorConfig {
            limit: Some(0),
            ..SimulatorConfig::default()
        },
        ..SimulateConfig::default()
    })
    .await;
    let began = now();
    let start = ((began as i64 - 35 * 60) / 60 * 60) * 1_000_000_000;
    let config = write_config(
        dir.path(),
        "dashboards.toml",
        &format!(
            r#"
[sources.simulated]
type = "simulator"
apps = 20
seed = 9
rate = 4000
limit = 40000
clock = "simulated"
start = "{start}"
density = 20

[sources.keep_alive]
type = "firehose"
url = "ws://{firehose}"
subscription_id = "dashboards"
uaa_url = "http://{firehose}"
client_id = "sluice"
client_secret = "s3cret"

[sinks.prometheus]
type = "prometheus"
url = "{url}"
flush_interval = "100ms"
dead_letter = {dead:?}

[admin]
listen = "127.0.0.1:{admin}"
"#,
            start = rfc3339(start),
            url = server.write_url(),
            dead = dir.path().join("dead-letter.ndjson"),
            firehose = silent.addr,
        ),
    );
    let log_path = dir.path().join("run.log");
    let log = std::fs::File::create(&log_path).expect("a log file");
    let mut run = Reaper(
        sluice()
            .args(["run", "--no-status", "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("sluice starts"),
    );

    // Everything the dashboards could show lies between the first window and now: polled
    // until every expression has data (or a deadline), while the run goes on.
    let from = (start / 1_000_000_000) as f64 - 300.0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let checked = loop {
        let checked = check_dashboards(&server, from, now() + 60.0).await;
        if checked.outcome.is_ok() || std::time::Instant::now() > deadline {
            break checked;
        }
        assert!(
            run.0.try_wait().expect("status").is_none(),
            "the run ended before the dashboards had their data"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    let interrupt = std::process::Command::new("kill")
        .args(["-INT", &run.0.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(interrupt.success());
    let status = run.0.wait().expect("sluice ran");
    silent.stop().await;
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(status.success(), "the run failed ({status}):\n{log}");
    assert!(
        !dir.path().join("dead-letter.ndjson").exists(),
        "the receiver refused samples:\n{log}"
    );

    let scraped = server
        .query_range("sluice_graph_records_total", from, now() + 60.0, 1.0)
        .await
        .expect("a query");
    assert!(
        scraped
            .first()
            .and_then(|s| s["values"].as_array())
            .is_some_and(|v| v.len() >= 2),
        "the admin endpoint was scraped too rarely: {scraped:?}"
    );
    let count = checked
        .outcome
        .unwrap_or_else(|missing| panic!("{missing}"));
    assert!(count >= 50, "{count} expressions");
    let written: BTreeSet<String> = Names::new("sluice_").all().iter().cloned().collect();
    let unknown: Vec<&String> = checked.named.difference(&written).collect();
    assert!(
        unknown.is_empty(),
        "metrics the sink does not write: {unknown:?}"
    );
    let unshown: Vec<&String> = written.difference(&checked.named).collect();
    assert!(
        unshown.is_empty(),
        "metrics no dashboard shows: {unshown:?}"
    );
}
