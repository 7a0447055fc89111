//! A Prometheus of the test's own: Debian's `prometheus` (`SLUICE_TEST_PROMETHEUS_BIN`, else
//! `prometheus` on `PATH`; `scripts/test.sh` installs the package when missing) on a free
//! loopback port with the remote-write receiver on and a temporary TSDB, killed when dropped;
//! and the parts of its HTTP API the tests read (queries, raw samples, `format_query`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// How to start the server.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `storage.tsdb.out_of_order_time_window` (e.g. `"30m"`); none by default.
    pub out_of_order_window: Option<String>,
    /// Targets scraped every second as `job_name = "sluice"`: `127.0.0.1:PORT` of a `sluice
    /// run`'s `[admin]` endpoint.
    pub scrape: Vec<String>,
    /// Leave out `--web.enable-remote-write-receiver` (it then answers writes 404).
    pub without_receiver: bool,
}

pub struct PrometheusServer {
    pub port: u16,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
    http: reqwest::Client,
    receiver: bool,
}

/// The binary the tests run.
pub fn binary() -> PathBuf {
    if let Ok(path) = std::env::var("SLUICE_TEST_PROMETHEUS_BIN") {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("prometheus"))
        .find(|p| p.is_file())
        .expect(
            "prometheus is installed (scripts/test.sh installs Debian's package) or SLUICE_TEST_PROMETHEUS_BIN names it",
        )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl PrometheusServer {
    pub async fn start() -> PrometheusServer {
        PrometheusServer::start_with(Options::default()).await
    }

    /// Writes the config, starts the server and returns once it is ready.
    pub async fn start_with(options: Options) -> PrometheusServer {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut config = String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n");
        if let Some(window) = &options.out_of_order_window {
            config.push_str(&format!(
                "storage:\n  tsdb:\n    out_of_order_time_window: {window}\n"
            ));
        }
        if !options.scrape.is_empty() {
            let targets: Vec<String> = options.scrape.iter().map(|t| format!("'{t}'")).collect();
            config.push_str(&format!(
                "scrape_configs:\n  - job_name: sluice\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            ));
        }
        std::fs::write(dir.path().join("prometheus.yml"), config).expect("config written");
        let port = free_port();
        let mut server = PrometheusServer {
            port,
            url: format!("http://127.0.0.1:{port}"),
            dir,
            child: None,
            receiver: !options.without_receiver,
            http: reqwest::Client::builder()
                .tls_backend_preconfigured(
                    sluice_common::tls::client_config(false).expect("TLS config"),
                )
                .timeout(Duration::from_secs(30))
                .build()
                .expect("HTTP client"),
        };
        server.restart().await;
        server
    }

    /// The remote-write endpoint.
    pub fn write_url(&self) -> String {
        format!("{}/api/v1/write", self.url)
    }

    /// Starts the server on its port and data directory (after [`PrometheusServer::kill`]);
    /// returns once `/-/ready` answers 200.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "the test Prometheus is running");
        let dir = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("prometheus.log"))
            .expect("log file");
        let child = Command::new(binary())
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .args(
                self.receiver
                    .then_some("--web.enable-remote-write-receiver"),
            )
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let ready = self
                .http
                .get(format!("{}/-/ready", self.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("the test Prometheus exited ({status}):\n{}", self.log());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the test Prometheus was not ready within 60 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the server at once (SIGKILL), as a crash looks.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What the server logged (warnings and errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    async fn api(&self, path: &str, params: &[(&str, String)]) -> Result<Value, String> {
        let url = reqwest::Url::parse_with_params(
            &format!("{}{path}", self.url),
            params.iter().map(|(k, v)| (*k, v.as_str())),
        )
        .map_err(|e| format!("{path}: {e}"))?;
        let answer = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let body: Value = answer
            .json()
            .await
            .map_err(|e| format!("GET {path}: not JSON: {e}"))?;
        if body["status"] != "success" {
            return Err(format!(
                "{}: {}",
                body["errorType"].as_str().unwrap_or("error"),
                body["error"].as_str().unwrap_or("")
            ));
        }
        Ok(body["data"].clone())
    }

    /// `/api/v1/format_query`: the expression formatted, or why it does not parse.
    pub async fn format_query(&self, expr: &str) -> Result<String, String> {
        self.api("/api/v1/format_query", &[("query", expr.to_owned())])
            .await
            .map(|data| data.as_str().unwrap_or_default().to_owned())
    }

    /// `/api/v1/query` at `time` (epoch seconds): `data.result`.
    pub async fn query(&self, expr: &str, time: f64) -> Result<Vec<Value>, String> {
        let data = self
            .api(
                "/api/v1/query",
                &[("query", expr.to_owned()), ("time", time.to_string())],
            )
            .await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// `/api/v1/query_range`: `data.result`.
    pub async fn query_range(
        &self,
        expr: &str,
        start: f64,
        end: f64,
        step: f64,
    ) -> Result<Vec<Value>, String> {
        let data = self
            .api(
                "/api/v1/query_range",
                &[
                    ("query", expr.to_owned()),
                    ("start", start.to_string()),
                    ("end", end.to_string()),
                    ("step", step.to_string()),
                ],
            )
            .await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// Every raw sample of the series `selector` matches in the `range` before `time` (a
    /// range vector evaluated as an instant query returns them with their own timestamps),
    /// by series: `"__name__=…,label=value,…"` (see [`series_key`]) → `[(ms, value)]`.
    pub async fn raw_samples(
        &self,
        selector: &str,
        range: &str,
        time: f64,
    ) -> BTreeMap<String, Vec<(i64, f64)>> {
        let result = self
            .query(&format!("{selector}[{range}]"), time)
            .await
            .unwrap_or_else(|e| panic!("{selector}[{range}]: {e}"));
        result
            .iter()
            .map(|series| {
                let key = series_key(&series["metric"]);
                let values = series["values"]
                    .as_array()
                    .expect("a matrix")
                    .iter()
                    .map(|point| {
                        let ms = (point[0].as_f64().expect("a time") * 1000.0).round() as i64;
                        (ms, parse_value(&point[1]))
                    })
                    .collect();
                (key, values)
            })
            .collect()
    }
}

/// A series' labels as `name=value` joined by commas, sorted by name.
pub fn series_key(metric: &Value) -> String {
    let labels: BTreeMap<&str, &str> = metric
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A value as the API writes it (a string, `"+Inf"` and `"NaN"` included).
pub fn parse_value(value: &Value) -> f64 {
    match value.as_str().expect("a value string") {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        text => text.parse().expect("a number"),
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        self.kill();
    }
}
