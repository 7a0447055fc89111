//! The TOML config (SPEC §7): loading, `${VAR}` interpolation, and validation that reports
//! every problem at once, each naming the file and the key.
//!
//! Loading is pure apart from reading the file and the environment: nothing connects to
//! anything, so `sluice validate` and the start of `sluice run` find the same problems, and
//! never half-way through a run.

mod components;
mod diff;
mod interpolate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sluice_api::ApiConfig;
use sluice_api::store::{LogStoreConfig, SqlStoreConfig};
use sluice_buffers::BufferConfig;
use sluice_common::component::{Claim, Problem, conflicts};
use sluice_common::config::ByteSize;
pub use sluice_model::records::StreamName;
use sluice_model::records::{DAY, MINUTE};
use sluice_operators::app_events::{AppEventRule, AppEventRules};
use sluice_operators::filter::{Filter, FilterConfig, Filters};

pub use components::{SinkConfig, SourceConfig};
pub use diff::{Changes, ConfigDiff};
pub use interpolate::interpolate;

/// The whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Pipeline-wide settings.
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// Named sources (`[sources.NAME]`).
    #[serde(default)]
    pub sources: BTreeMap<String, SourceConfig>,
    /// Named sinks (`[sinks.NAME]`).
    #[serde(default)]
    pub sinks: BTreeMap<String, SinkConfig>,
    /// Named filters on what enters the graph (`[filters.NAME]`).
    #[serde(default)]
    pub filters: BTreeMap<String, FilterConfig>,
    /// The admin endpoint (`[admin]`); absent: off.
    #[serde(default)]
    pub admin: Option<crate::admin::AdminConfig>,
    /// The read path: metrics API and web UI (`[api]`); absent: off.
    #[serde(default)]
    pub api: Option<ApiConfig>,
    /// One process of a timely cluster (`[cluster]`, SPEC §12); absent: a process on its own.
    #[serde(default)]
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// The Cloud Controller that names apps, spaces and orgs (`[metadata]`, SPEC §11);
    /// absent: names come from envelope tags only.
    #[serde(default)]
    pub metadata: Option<sluice_sources::metadata::MetadataConfig>,
}

/// `[pipeline]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// timely worker threads; default: the number of cores.
    #[serde(default)]
    pub workers: Option<usize>,
    /// How far behind the greatest event time seen a record may be and still count in its
    /// minute's rollup (SPEC §2).
    #[serde(
        default = "default_allowed_lateness",
        with = "sluice_common::config::duration"
    )]
    pub allowed_lateness: Duration,
    /// How often an open window's rollup row is rewritten provisionally.
    #[serde(
        default = "default_flush_interval",
        with = "sluice_common::config::duration"
    )]
    pub flush_interval: Duration,
    /// Batches queued between the sources and the dataflow before sources wait.
    #[serde(default = "default_channel_capacity")]
    pub channel_capacity: usize,
    /// Bytes queued between the sources and the dataflow before sources wait, whatever the
    /// number of batches: `"128MiB"` by default, at most `"4GiB"`.
    #[serde(default = "default_channel_max_bytes")]
    pub channel_max_bytes: ByteSize,
    /// App-event rules (SPEC §4), in order; the first match wins. Absent: the defaults.
    #[serde(default)]
    pub app_events: Option<Vec<AppEventRule>>,
    /// Rollup window widths (`["1m", "1h"]`): `1m` (the SPEC's minute tables) and extra
    /// widths, each rolled up from the samples into tables of its own.
    #[serde(default = "default_windows")]
    pub windows: Vec<String>,
    /// Where the run keeps its dataflow state across stops and crashes (SPEC §9); without it
    /// every run starts fresh.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// How often a consistent checkpoint is taken while records come in (SPEC §9).
    #[serde(
        default = "default_checkpoint_interval",
        with = "sluice_common::config::duration"
    )]
    pub checkpoint_interval: Duration,
}

const fn default_checkpoint_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_windows() -> Vec<String> {
    vec!["1m".to_owned()]
}

const fn default_allowed_lateness() -> Duration {
    Duration::from_secs(60)
}

const fn default_flush_interval() -> Duration {
    Duration::from_secs(1)
}

const fn default_channel_capacity() -> usize {
    64
}

const fn default_channel_max_bytes() -> ByteSize {
    ByteSize(sluice_sources::DEFAULT_CHANNEL_BYTES)
}

impl Default for PipelineConfig {
    fn default() -> PipelineConfig {
        PipelineConfig {
            workers: None,
            allowed_lateness: default_allowed_lateness(),
            flush_interval: default_flush_interval(),
            channel_capacity: default_channel_capacity(),
            channel_max_bytes: default_channel_max_bytes(),
            app_events: None,
            windows: default_windows(),
            state_dir: None,
            checkpoint_interval: default_checkpoint_interval(),
        }
    }
}

impl PipelineConfig {
    /// The configured app-event rules, or SPEC §4's defaults.
    pub fn app_event_rules(&self) -> Vec<AppEventRule> {
        self.app_events
            .clone()
            .unwrap_or_else(AppEventRule::defaults)
    }

    /// The rollup window widths in seconds, the minute first; entries that do not validate
    /// (see [`PipelineConfig::window_problems`]) are left out.
    pub fn window_widths(&self) -> Vec<u32> {
        let mut widths = vec![MINUTE];
        for text in &self.windows {
            if let Ok(width) = window_width(text)
                && !widths.contains(&width)
            {
                widths.push(width);
            }
        }
        widths
    }

    /// What is wrong with `windows`, each problem naming the key and the entry.
    fn window_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut seen: Vec<(u32, &str)> = Vec::new();
        for text in &self.windows {
            match window_width(text) {
                Err(problem) => problems.push(format!("pipeline.windows: `{text}` {problem}")),
                Ok(width) => match seen.iter().find(|(w, _)| *w == width) {
                    Some((_, first)) => problems.push(format!(
                        "pipeline.windows: `{text}` is listed twice (as `{first}` before)"
                    )),
                    None => seen.push((width, text)),
                },
            }
        }
        if !seen.iter().any(|(w, _)| *w == MINUTE) {
            problems.push(
                "pipeline.windows: must include \"1m\" (the minute tables of SPEC §5 and §6)"
                    .to_owned(),
            );
        }
        problems
    }

    /// The worker count to run with.
    pub fn workers(&self) -> usize {
        self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(1)
        })
    }
}

/// The most `pipeline.workers` accepted: each worker is a thread that every exchange talks
/// to, so thousands of them only make a run hang. More than 4 per core is a warning.
pub const MAX_WORKERS: usize = 1024;

/// Whether two `host:port` listen addresses would take the same port: the same port, and the
/// same host, a wildcard host (`0.0.0.0`, `[::]`, empty) on either, or both loopback names.
fn listens_overlap(a: &str, b: &str) -> bool {
    fn split(address: &str) -> Option<(String, &str)> {
        let (host, port) = address.trim().rsplit_once(':')?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        Some((host, port))
    }
    let (Some((host_a, port_a)), Some((host_b, port_b))) = (split(a), split(b)) else {
        return false;
    };
    if port_a != port_b || port_a == "0" {
        return false;
    }
    let wildcard = |h: &str| matches!(h, "" | "0.0.0.0" | "::");
    let loopback = |h: &str| matches!(h, "localhost" | "::1") || h.starts_with("127.");
    host_a == host_b
        || wildcard(&host_a)
        || wildcard(&host_b)
        || (loopback(&host_a) && loopback(&host_b))
}

/// A window width in seconds: a whole number of minutes that divides a day.
fn window_width(text: &str) -> Result<u32, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("is not a duration ({e}); write e.g. \"1m\", \"5m\", \"1h\""))?;
    let seconds = duration.as_secs();
    if duration.subsec_nanos() != 0 || !seconds.is_multiple_of(60) || seconds == 0 {
        return Err("is not a whole number of minutes".to_owned());
    }
    if !u64::from(DAY).is_multiple_of(seconds) {
        return Err("does not divide a day (windows start at UTC midnight)".to_owned());
    }
    u32::try_from(seconds).map_err(|_| "does not divide a day".to_owned())
}

/// A filter that does not compile (validation reports it; a config that passed it compiles).
#[derive(Debug, thiserror::Error)]
#[error("filters.{name}.{key}: {problem}")]
pub struct FilterError {
    pub name: String,
    pub key: &'static str,
    pub problem: String,
}

/// Everything wrong with a config file. Displayed one problem a line, each naming the file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub path: PathBuf,
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "{}: {n} problem{}",
            self.path.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for problem in &self.problems {
            write!(f, "\n  - {}: {problem}", self.path.display())?;
        }
        Ok(())
    }
}

impl Config {
    /// Reads, interpolates, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let error = |problems| ConfigError {
            path: path.to_owned(),
            problems,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| error(vec![format!("cannot read the file: {e}")]))?;
        Config::parse(&text, |name| std::env::var(name).ok()).map_err(error)
    }

    /// Parses config text, taking `${VAR}` values from `env`. Problems are returned all at once.
    pub fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Config, Vec<String>> {
        let text = interpolate(text, env)?;
        let config: Config =
            toml::from_str(&text).map_err(|e| vec![describe_toml_error(&text, &e)])?;
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }

    /// The embedded default: the built-in simulator into `./sluice-data/sluice.db`.
    pub fn embedded_default() -> Config {
        let text = include_str!("../../../config/default.toml");
        Config::parse(text, |_| None).unwrap_or_else(|problems| {
            // The file is compiled in and covered by a test, so this cannot happen at run time.
            unreachable!("config/default.toml is invalid: {problems:?}")
        })
    }

    /// Cross-field checks serde cannot express. Pure: no I/O.
    /// The compiled filters; a config that passed [`Config::validate`] always has them.
    pub fn compiled_filters(&self) -> Result<Filters, FilterError> {
        let mut filters = Vec::new();
        for (name, config) in &self.filters {
            let filter = Filter::new(name, config).map_err(|(key, problem)| FilterError {
                name: name.clone(),
                key,
                problem,
            })?;
            filters.push(filter);
        }
        Ok(Filters::new(filters))
    }

    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (name, filter) in &self.filters {
            if let Err((key, problem)) = Filter::new(name, filter) {
                problems.push(format!("filters.{name}.{key}: {problem}"));
            }
            for source in &filter.sources {
                if !self.sources.contains_key(source) {
                    problems.push(format!(
                        "filters.{name}.sources: no source is named `{source}`"
                    ));
                }
            }
        }
        match self.pipeline.workers {
            Some(0) => problems.push("pipeline.workers: must be at least 1".to_owned()),
            Some(n) if n > MAX_WORKERS => problems.push(format!(
                "pipeline.workers: {n} is more than {MAX_WORKERS} (each worker is a thread; \
                 leave it out for one per core)"
            )),
            _ => {}
        }
        if self.pipeline.channel_capacity == 0 {
            problems.push("pipeline.channel_capacity: must be at least 1".to_owned());
        }
        let channel_bytes = self.pipeline.channel_max_bytes.0;
        if !((1 << 20)..=(4 << 30)).contains(&channel_bytes) {
            problems.push(format!(
                "pipeline.channel_max_bytes: must be between 1MiB and 4GiB, not {channel_bytes} bytes"
            ));
        }
        if self.pipeline.flush_interval.is_zero() {
            problems.push("pipeline.flush_interval: must be greater than 0".to_owned());
        }
        if self.pipeline.checkpoint_interval < Duration::from_secs(1) {
            problems.push("pipeline.checkpoint_interval: must be at least 1s".to_owned());
        }
        if self
            .pipeline
            .state_dir
            .as_ref()
            .is_some_and(|dir| dir.as_os_str().is_empty())
        {
            problems.push("pipeline.state_dir: is empty".to_owned());
        }
        if let Err(e) = AppEventRules::new(&self.pipeline.app_event_rules()) {
            problems.push(format!("pipeline.app_events: {e}"));
        }
        problems.extend(self.pipeline.window_problems());
        if let Some(cluster) = &self.cluster {
            problems.extend(cluster.problems());
        }
        if let Some(metadata) = &self.metadata {
            for (key, problem) in metadata.problems() {
                problems.push(format!("metadata.{key}: {problem}"));
            }
        }
        if let Some(admin) = &self.admin
            && let Err(problem) = admin.address()
        {
            problems.push(format!("admin.listen: {problem}"));
        }
        if let (Some(admin), Some(api)) = (&self.admin, &self.api)
            && admin.listen != api.listen
            && listens_overlap(&admin.listen, &api.listen)
        {
            problems.push(format!(
                "api.listen: `{}` takes the port of admin.listen `{}`; give them different ports",
                api.listen, admin.listen
            ));
        }
        if let Some(api) = &self.api {
            for (key, problem) in api.problems() {
                problems.push(format!("api.{key}: {problem}"));
            }
            problems.extend(self.api_store_problems(api));
        }
        if self.sources.is_empty() {
            problems.push("sources: at least one source is needed".to_owned());
        }
        let keyed = |prefix: &str, found: Vec<Problem>| {
            found
                .into_iter()
                .map(|problem| format!("{prefix}.{problem}"))
                .collect::<Vec<_>>()
        };
        // Port 0 asks the system for any free port: never the same one twice.
        let fixed_port = |listen: &str| !listen.ends_with(":0");
        let mut claims = Vec::new();
        if let Some(admin) = self.admin.as_ref().filter(|a| fixed_port(&a.listen)) {
            claims.push(Claim::listen("admin.listen", &admin.listen));
        }
        if let Some(api) = self.api.as_ref().filter(|a| fixed_port(&a.listen)) {
            claims.push(Claim::listen("api.listen", &api.listen));
        }
        for (name, source) in &self.sources {
            let prefix = format!("sources.{name}");
            problems.extend(keyed(&prefix, source.component().problems()));
            claims.extend(
                source
                    .component()
                    .resources()
                    .into_iter()
                    .map(|claim| claim.under(&prefix)),
            );
        }
        for (name, sink) in &self.sinks {
            let prefix = format!("sinks.{name}");
            problems.extend(keyed(&prefix, sink.component().problems()));
            for (key, problem) in sink.buffer().problems() {
                problems.push(format!("{prefix}.buffer.{key}: {problem}"));
            }
            claims.extend(
                sink.component()
                    .resources()
                    .into_iter()
                    .map(|claim| claim.under(&prefix)),
            );
            // Two writers in one disk buffer would interleave and delete each other's segments.
            if let BufferConfig::Disk { path, .. } = sink.buffer() {
                claims.push(Claim::path(
                    format!("{prefix}.buffer.path"),
                    "the disk buffer",
                    path,
                ));
            }
        }
        problems.extend(conflicts(&claims).iter().map(ToString::to_string));
        problems
    }
}

impl Config {
    /// Things that work but that an operator should know, for `sluice validate` and the start
    /// of a run.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        if let Some(workers) = self.pipeline.workers
            && workers > 4 * cores
            && workers <= MAX_WORKERS
        {
            warnings.push(format!(
                "pipeline.workers: {workers} workers on {cores} cores; more than 4 per core only \
                 adds threads that wait for each other"
            ));
        }
        if self.pipeline.state_dir.is_none() {
            for (name, source) in &self.sources {
                if matches!(source, SourceConfig::Firehose(_) | SourceConfig::Rlp(_)) {
                    warnings.push(format!(
                        "sources.{name}: a {} source runs without pipeline.state_dir: a \
                         restart loses the open minutes",
                        source.type_name()
                    ));
                }
            }
        }
        warnings
    }

    /// The stores `[api]` reads: `store` / `log_store` when named, else the first sink of a
    /// kind that can answer (SQL for metrics and events; SQLite or Elasticsearch taking `logs`
    /// for logs). A config that passed [`Config::validate`] names only such sinks.
    pub fn api_stores(&self) -> (Option<SqlStoreConfig>, Option<LogStoreConfig>) {
        let (sql, logs) = self.api_store_names();
        let sql = sql.and_then(|name| sql_store(&self.sinks[name]));
        let logs = logs.and_then(|name| log_store(&self.sinks[name]));
        (sql, logs)
    }

    /// The names of the sinks [`Config::api_stores`] reads.
    pub fn api_store_names(&self) -> (Option<&str>, Option<&str>) {
        let Some(api) = &self.api else {
            return (None, None);
        };
        let pick = |named: &Option<String>, fits: &dyn Fn(&SinkConfig) -> bool| match named {
            Some(name) => self
                .sinks
                .get_key_value(name)
                .filter(|(_, sink)| fits(sink))
                .map(|(name, _)| name.as_str()),
            None => self
                .sinks
                .iter()
                .find(|(_, sink)| fits(sink))
                .map(|(name, _)| name.as_str()),
        };
        (
            pick(&api.store, &|sink| sql_store(sink).is_some()),
            pick(&api.log_store, &|sink| log_store(sink).is_some()),
        )
    }

    fn api_store_problems(&self, api: &ApiConfig) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(name) = &api.store {
            match self.sinks.get(name) {
                None => problems.push(format!("api.store: no sink is named `{name}`")),
                Some(SinkConfig::Sqlite(_) | SinkConfig::Mysql(_)) => {}
                Some(other) => problems.push(format!(
                    "api.store: sink `{name}` is of type `{}`; the API reads metrics from a `sqlite` or `mysql` sink",
                    other.type_name()
                )),
            }
        }
        if let Some(name) = &api.log_store {
            match self.sinks.get(name) {
                None => problems.push(format!("api.log_store: no sink is named `{name}`")),
                Some(sink @ (SinkConfig::Sqlite(_) | SinkConfig::Elasticsearch(_))) => {
                    if !sink.streams().contains(&StreamName::Logs) {
                        problems.push(format!(
                            "api.log_store: sink `{name}` does not take the `logs` stream"
                        ));
                    }
                }
                Some(other) => problems.push(format!(
                    "api.log_store: sink `{name}` is of type `{}`; the API reads logs from a `sqlite` or `elasticsearch` sink",
                    other.type_name()
                )),
            }
        }
        problems
    }
}

fn sql_store(sink: &SinkConfig) -> Option<SqlStoreConfig> {
    match sink {
        SinkConfig::Sqlite(c) => Some(SqlStoreConfig::Sqlite(c.clone())),
        SinkConfig::Mysql(c) => Some(SqlStoreConfig::Mysql(c.clone())),
        _ => None,
    }
}

fn log_store(sink: &SinkConfig) -> Option<LogStoreConfig> {
    match sink {
        SinkConfig::Sqlite(c) if c.streams.contains(&StreamName::Logs) => {
            Some(LogStoreConfig::Sqlite(c.clone()))
        }
        SinkConfig::Elasticsearch(c) if c.streams.contains(&StreamName::Logs) => {
            Some(LogStoreConfig::Elasticsearch(c.clone()))
        }
        _ => None,
    }
}

/// One readable line: where (line and column, and the text there) and what.
fn describe_toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim();
    let Some(span) = error.span() else {
        return message.to_owned();
    };
    // Inside a `type`-tagged table toml points at the table's header; an unknown key has a
    // line of its own below it, which is where the reader should look.
    let start = unknown_field(message)
        .and_then(|field| {
            let from = span.start.min(text.len());
            let body = &text[from..];
            let end = body[1..].find("\n[").map_or(body.len(), |at| at + 1);
            let table = &body[..end];
            table
                .find(&format!("\n{field} "))
                .or_else(|| table.find(&format!("\n{field}=")))
                .map(|at| from + at + 1)
        })
        .unwrap_or(span.start);
    let before = &text[..start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    let source_line = text.lines().nth(line - 1).unwrap_or("").trim();
    format!("line {line}, column {column} (`{source_line}`): {message}")
}

/// The field an "unknown field `x`" message is about.
fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

#[cfg(test)]
mod tests;
