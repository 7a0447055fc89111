//! `[sinks.NAME]` with `type = "prometheus"`: the keys, their defaults, and the problems
//! `sluice validate` reports.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use sluice_buffers::BufferConfig;
use sluice_model::records::StreamName;

use crate::{Claim, Component, Problem};

/// The streams a remote-write receiver can hold: the rollups, as samples.
pub const PROMETHEUS_STREAMS: [StreamName; 2] =
    [StreamName::AppRollups, StreamName::PlatformRollups];

/// Headers the sink sets itself; `headers` may not replace them.
const RESERVED_HEADERS: [&str; 4] = [
    "content-type",
    "content-encoding",
    "x-prometheus-remote-write-version",
    "content-length",
];

/// `[sinks.<name>]` with `type = "prometheus"`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusSinkConfig {
    /// The receiver's remote-write endpoint: `http://127.0.0.1:9090/api/v1/write`
    /// (Prometheus with `--web.enable-remote-write-receiver`), `…/api/v1/push` (Mimir,
    /// Grafana Cloud), `…/api/v1/receive` (Thanos), `…/api/v1/write` (VictoriaMetrics).
    pub url: String,
    /// `app_rollups`, `platform_rollups` (default both).
    #[serde(default = "default_streams")]
    pub streams: Vec<StreamName>,
    /// `{ type = "basic", username, password }` or `{ type = "bearer", token }`.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// Extra headers on every request, e.g. `{ "X-Scope-OrgID" = "cf-prod" }` for Mimir.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Accept any TLS certificate (testing only).
    #[serde(default)]
    pub skip_tls_verify: bool,
    /// Samples per request at most; a row's samples are never split, so a request holds at
    /// least one row.
    #[serde(default = "default_batch_size")]
    pub batch_size: NonZeroUsize,
    /// Requests in flight at most. Series are spread over this many lanes by app (platform
    /// series by their key), each lane sending in order, so every series' samples arrive in
    /// time order.
    #[serde(default = "default_concurrency")]
    pub concurrency: NonZeroUsize,
    /// Prepended to every metric name (SPEC §13's names have the default, `sluice_`).
    #[serde(default = "default_metric_prefix")]
    pub metric_prefix: String,
    /// `false`: only closed windows are sent, one sample per series per window, in time
    /// order. `true`: provisional rows of open windows too (the receiver needs an
    /// out-of-order window, and keeps whichever version of a window it took first: see the
    /// README).
    #[serde(default)]
    pub write_provisional: bool,
    /// How long a received row may wait for a fuller batch (`"1s"`).
    #[serde(
        default = "default_flush_interval",
        with = "sluice_common::config::duration"
    )]
    pub flush_interval: Duration,
    /// How long one request may take before it counts as failed (`"30s"`).
    #[serde(
        default = "default_request_timeout",
        with = "sluice_common::config::duration"
    )]
    pub request_timeout: Duration,
    /// On Ctrl-C, how long a sink whose receiver is down keeps trying before it abandons
    /// what its memory buffer holds (a disk buffer keeps it for the next run instead).
    #[serde(
        default = "default_shutdown_timeout",
        with = "sluice_common::config::duration"
    )]
    pub shutdown_timeout: Duration,
    /// Where requests the receiver refuses (a 4xx other than 429) are written, one JSON line
    /// each with the receiver's message. Default: `sluice-data/dead-letter/<sink name>.ndjson`.
    #[serde(default)]
    pub dead_letter: Option<PathBuf>,
    /// Where rows wait while the receiver is slow or down.
    #[serde(default)]
    pub buffer: BufferConfig,
}

fn default_streams() -> Vec<StreamName> {
    PROMETHEUS_STREAMS.to_vec()
}

fn default_batch_size() -> NonZeroUsize {
    NonZeroUsize::new(2000).unwrap_or(NonZeroUsize::MIN)
}

fn default_concurrency() -> NonZeroUsize {
    NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN)
}

fn default_metric_prefix() -> String {
    "sluice_".to_owned()
}

const fn default_flush_interval() -> Duration {
    Duration::from_secs(1)
}

const fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}

const fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}

/// How the sink authenticates. Prints without its secrets.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    Basic { username: String, password: String },
    Bearer { token: String },
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthConfig::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            AuthConfig::Bearer { .. } => f.write_str("Bearer(***)"),
        }
    }
}

impl PrometheusSinkConfig {
    /// A config with the defaults for `url`.
    pub fn new(url: impl Into<String>) -> PrometheusSinkConfig {
        PrometheusSinkConfig {
            url: url.into(),
            streams: default_streams(),
            auth: None,
            headers: BTreeMap::new(),
            skip_tls_verify: false,
            batch_size: default_batch_size(),
            concurrency: default_concurrency(),
            metric_prefix: default_metric_prefix(),
            write_provisional: false,
            flush_interval: default_flush_interval(),
            request_timeout: default_request_timeout(),
            shutdown_timeout: default_shutdown_timeout(),
            dead_letter: None,
            buffer: BufferConfig::default(),
        }
    }

    /// `host:port/path` for messages (never the credentials a URL may carry).
    pub fn endpoint(&self) -> String {
        match url::Url::parse(&self.url) {
            Ok(url) => format!(
                "{}:{}{}",
                url.host_str().unwrap_or(""),
                url.port_or_known_default().unwrap_or(80),
                url.path()
            ),
            Err(_) => "(invalid URL)".to_owned(),
        }
    }
}

impl Component for PrometheusSinkConfig {
    fn kind(&self) -> &'static str {
        "prometheus"
    }

    /// Every problem of the config at once, each with its key; no I/O.
    fn problems(&self) -> Vec<Problem> {
        let mut problems = crate::stream_problems(&self.streams);
        match url::Url::parse(&self.url) {
            Err(e) => problems.push(Problem::new(
                "url",
                format!("invalid URL `{}`: {e}", self.url),
            )),
            Ok(url) if !matches!(url.scheme(), "http" | "https") => problems.push(Problem::new(
                "url",
                format!("`{}` is not an http:// or https:// URL", self.url),
            )),
            Ok(url) if url.path() == "/" => problems.push(Problem::new(
                "url",
                format!(
                    "`{}` names no path: a receiver's remote-write endpoint is e.g. `/api/v1/write` (Prometheus) or `/api/v1/push` (Mimir)",
                    self.url
                ),
            )),
            Ok(_) => {}
        }
        for stream in &self.streams {
            if !PROMETHEUS_STREAMS.contains(stream) {
                problems.push(Problem::new(
                    "streams",
                    format!(
                        "`{stream}` cannot be written to Prometheus: only `app_rollups` and `platform_rollups` can"
                    ),
                ));
            }
        }
        if !valid_metric_prefix(&self.metric_prefix) {
            problems.push(Problem::new(
                "metric_prefix",
                format!(
                    "`{}` cannot start a metric name: letters, digits, `_` and `:`, not starting with a digit",
                    self.metric_prefix
                ),
            ));
        }
        for (name, value) in &self.headers {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                problems.push(Problem::new(
                    "headers",
                    format!("`{name}` is not a valid header name"),
                ));
            } else if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                problems.push(Problem::new(
                    "headers",
                    format!("`{name}` is set by the sink (remote-write protocol)"),
                ));
            } else if name.eq_ignore_ascii_case("authorization") && self.auth.is_some() {
                problems.push(Problem::new(
                    "headers",
                    "`Authorization` is also set by `auth`: keep one of the two",
                ));
            }
            if reqwest::header::HeaderValue::from_str(value).is_err() {
                problems.push(Problem::new(
                    "headers",
                    format!("the value of `{name}` is not a valid header value"),
                ));
            }
        }
        if self.flush_interval.is_zero() {
            problems.push(Problem::new("flush_interval", "must be greater than 0"));
        }
        if self.request_timeout.is_zero() {
            problems.push(Problem::new("request_timeout", "must be greater than 0"));
        }
        problems
    }

    /// The dead-letter file, when named (the default is per sink name, so never shared).
    fn resources(&self) -> Vec<Claim> {
        self.dead_letter
            .iter()
            .map(|path| Claim::path("dead_letter", "the dead-letter file", path))
            .collect()
    }

    /// One line for the topology printout: where, what, and which windows.
    fn describe(&self) -> String {
        let streams: Vec<&str> = self.streams.iter().map(|s| s.as_str()).collect();
        format!(
            "remote write to {} ({}; {}, metrics {}*)",
            self.endpoint(),
            streams.join(", "),
            if self.write_provisional {
                "open windows too"
            } else {
                "closed windows only"
            },
            self.metric_prefix
        )
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`, or empty: what may come before `app_requests`.
fn valid_metric_prefix(prefix: &str) -> bool {
    let mut chars = prefix.chars();
    chars
        .next()
        .is_none_or(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PrometheusSinkConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn defaults_take_both_rollup_streams_and_closed_windows_only() {
        let config = parse(r#"url = "http://127.0.0.1:9090/api/v1/write""#).expect("parses");
        assert_eq!(
            config,
            PrometheusSinkConfig::new("http://127.0.0.1:9090/api/v1/write")
        );
        assert_eq!(config.streams, PROMETHEUS_STREAMS);
        assert_eq!(config.metric_prefix, "sluice_");
        assert!(!config.write_provisional);
        assert_eq!(config.batch_size.get(), 2000);
        assert!(config.problems().is_empty(), "{:?}", config.problems());
        assert!(config.resources().is_empty());
        assert_eq!(config.kind(), "prometheus");
        assert_eq!(
            config.describe(),
            "remote write to 127.0.0.1:9090/api/v1/write (app_rollups, platform_rollups; closed windows only, metrics sluice_*)"
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let config = parse(
            r#"
url = "ftp://example.com/"
streams = ["logs", "app_rollups", "http"]
metric_prefix = "9cf-"
headers = { "Content-Type" = "text/plain", "bad header" = "x", "Authorization" = "Bearer x", "X-Ok" = "line\nbreak" }
auth = { type = "bearer", token = "t" }
flush_interval = "0s"
"#,
        )
        .expect("parses");
        let problems = config.problems();
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "url",
                "streams",
                "streams",
                "metric_prefix",
                "headers",
                "headers",
                "headers",
                "headers",
                "flush_interval"
            ],
            "{problems:#?}"
        );
        assert!(
            problems[1]
                .message
                .contains("`logs` cannot be written to Prometheus")
        );
        assert!(
            problems[4]
                .message
                .contains("`Authorization` is also set by `auth`")
        );
        assert!(
            problems[5]
                .message
                .contains("`Content-Type` is set by the sink")
        );

        let pathless = PrometheusSinkConfig::new("http://127.0.0.1:9090");
        assert!(pathless.problems()[0].message.contains("/api/v1/write"));

        let twice = parse("url = \"http://h/w\"\nstreams = [\"app_rollups\", \"app_rollups\"]")
            .expect("parses");
        assert_eq!(
            twice.problems(),
            [Problem::new("streams", "`app_rollups` is listed twice")]
        );
    }

    #[test]
    fn unknown_keys_and_auth_kinds_are_refused() {
        assert!(parse("url = \"http://h/w\"\nbatchsize = 3").is_err());
        assert!(parse("url = \"http://h/w\"\nauth = { type = \"api_key\", id = \"x\" }").is_err());
        let config = parse(
            "url = \"http://h/w\"\nauth = { type = \"basic\", username = \"u\", password = \"secret\" }",
        )
        .expect("parses");
        assert!(!format!("{config:?}").contains("secret"));
    }

    #[test]
    fn metric_prefixes_follow_the_metric_name_syntax() {
        for good in ["", "sluice_", "cf:", "_x9"] {
            assert!(valid_metric_prefix(good), "{good}");
        }
        for bad in ["9x", "a-b", "é", "a b"] {
            assert!(!valid_metric_prefix(bad), "{bad}");
        }
    }
}
