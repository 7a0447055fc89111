//! `[sinks.<name>]` with `type = "mysql"`, and the database URL it names.

use std::fmt;
use std::num::{NonZeroU32, NonZeroUsize};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use sluice_model::records::StreamName;
use sqlx::mysql::MySqlConnectOptions;

use super::RetentionConfig;
use crate::{Component, Problem};
use sluice_buffers::BufferConfig;

/// `[sinks.<name>]` with `type = "mysql"`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlSinkConfig {
    /// `mysql://user:password@host:3306/database` (sqlx's URL syntax, e.g. `?ssl-mode=required`).
    /// Put the password in the environment: `"mysql://sluice:${MYSQL_PASSWORD}@db:3306/sluice"`.
    pub url: DatabaseUrl,
    /// The streams written, each to its table of SPEC §3. Default: all of them.
    #[serde(default = "StreamName::all")]
    pub streams: Vec<StreamName>,
    /// Connections at most; tables of one flush are written in parallel on separate ones.
    #[serde(default = "default_pool_size")]
    pub pool_size: NonZeroU32,
    /// Rows gathered at most before they are written.
    #[serde(default = "default_batch_size")]
    pub batch_size: NonZeroUsize,
    /// How long a received row may wait for a fuller batch before it is written (`"1s"`).
    #[serde(
        default = "default_flush_interval",
        with = "sluice_common::config::duration"
    )]
    pub flush_interval: Duration,
    /// How long connecting may take before the attempt counts as failed (`"10s"`).
    #[serde(
        default = "default_connect_timeout",
        with = "sluice_common::config::duration"
    )]
    pub connect_timeout: Duration,
    /// On Ctrl-C, how long a sink whose store is down keeps trying before it abandons what
    /// its memory buffer holds (a disk buffer keeps it for the next run instead).
    #[serde(
        default = "default_shutdown_timeout",
        with = "sluice_common::config::duration"
    )]
    pub shutdown_timeout: Duration,
    /// Deleting old rows: `retention = { raw = "2d", rollups = "14d" }`.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// Where records wait while the store is slow or down.
    #[serde(default)]
    pub buffer: BufferConfig,
}

fn default_pool_size() -> NonZeroU32 {
    NonZeroU32::new(4).unwrap_or(NonZeroU32::MIN)
}

fn default_batch_size() -> NonZeroUsize {
    NonZeroUsize::new(5000).unwrap_or(NonZeroUsize::MIN)
}

const fn default_flush_interval() -> Duration {
    Duration::from_secs(1)
}

const fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

const fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}

impl MysqlSinkConfig {
    /// A config with the defaults for `url` and `streams`.
    pub fn new(url: impl Into<String>, streams: Vec<StreamName>) -> MysqlSinkConfig {
        MysqlSinkConfig {
            url: DatabaseUrl(url.into()),
            streams,
            pool_size: default_pool_size(),
            batch_size: default_batch_size(),
            flush_interval: default_flush_interval(),
            connect_timeout: default_connect_timeout(),
            shutdown_timeout: default_shutdown_timeout(),
            retention: RetentionConfig::default(),
            buffer: BufferConfig::default(),
        }
    }
}

impl Component for MysqlSinkConfig {
    fn kind(&self) -> &'static str {
        "mysql"
    }

    fn problems(&self) -> Vec<Problem> {
        let mut problems = crate::stream_problems(&self.streams);
        problems.extend(self.retention.problems());
        if let Err(problem) = self.url.check() {
            problems.push(Problem::new("url", problem.to_string()));
        }
        problems
    }

    fn describe(&self) -> String {
        format!("mysql://{}", self.url.endpoint())
    }
}

/// A database URL. It may carry a password, so it prints as its endpoint only.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(pub String);

/// What is wrong with a [`DatabaseUrl`].
#[derive(Debug, thiserror::Error)]
pub enum DatabaseUrlError {
    #[error("invalid MySQL URL: it must start with mysql:// (or mariadb://)")]
    Scheme,
    #[error("invalid MySQL URL: {0}")]
    Invalid(#[source] sqlx::Error),
}

impl DatabaseUrl {
    /// `host:port/database`, for messages: never the credentials.
    pub fn endpoint(&self) -> String {
        match MySqlConnectOptions::from_str(&self.0) {
            Ok(options) => endpoint(&options),
            Err(_) => "(invalid URL)".to_owned(),
        }
    }

    /// The connection options the URL gives (TLS included, from `ssl-mode` and friends): the
    /// sink and the API's reads connect the same way.
    pub fn connect_options(&self) -> Result<MySqlConnectOptions, DatabaseUrlError> {
        MySqlConnectOptions::from_str(&self.0).map_err(DatabaseUrlError::Invalid)
    }

    /// Checks the URL's syntax, for `sluice validate`.
    pub fn check(&self) -> Result<(), DatabaseUrlError> {
        let scheme = self.0.split_once("://").map(|(scheme, _)| scheme);
        if !matches!(scheme, Some("mysql" | "mariadb")) {
            return Err(DatabaseUrlError::Scheme);
        }
        self.connect_options().map(drop)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.endpoint())
    }
}

/// `host:port/database` (or `socket/database`) of connection options.
pub(super) fn endpoint(options: &MySqlConnectOptions) -> String {
    let database = options.get_database().unwrap_or("");
    match options.get_socket() {
        Some(socket) => format!("{}/{database}", socket.display()),
        None => format!("{}:{}/{database}", options.get_host(), options.get_port()),
    }
}
