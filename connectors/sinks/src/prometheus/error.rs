//! Why the `prometheus` sink stopped, or why an attempt failed.

use std::path::PathBuf;

use sluice_buffers::BufferError;

#[derive(Debug, thiserror::Error)]
pub enum PrometheusSinkError {
    #[error("invalid Prometheus sink config: {0}")]
    Config(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    /// The connection failed or timed out.
    #[error("cannot reach the remote-write receiver at {endpoint}: {detail}")]
    Unreachable { endpoint: String, detail: String },
    /// 429 or 5xx: overloaded or restarting, worth trying again.
    #[error("the remote-write receiver at {endpoint} answered HTTP {status}: {message}")]
    Unavailable {
        endpoint: String,
        status: u16,
        message: String,
    },
    /// 401, 403, 404, 405 or another answer that refuses this sink as a whole (credentials,
    /// a wrong URL, a Prometheus without its receiver enabled): every request would fail.
    #[error(
        "the remote-write receiver at {endpoint} refused the sink with HTTP {status}: {message}"
    )]
    Refused {
        endpoint: String,
        status: u16,
        message: String,
    },
    #[error("cannot write the dead-letter file {}: {source}", path.display())]
    DeadLetter {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the remote-write receiver at {endpoint} stayed unavailable for the shutdown timeout: abandoned {records} rows held in memory"
    )]
    Abandoned { endpoint: String, records: u64 },
    #[error(transparent)]
    Buffer(#[from] BufferError),
}

impl PrometheusSinkError {
    /// A connection that failed or timed out, or a receiver answering 429/5xx.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            PrometheusSinkError::Unreachable { .. } | PrometheusSinkError::Unavailable { .. }
        )
    }
}
