//! The Firehose v1 source (SPEC §1.1): dropsonde envelopes from the Traffic Controller's
//! WebSocket `GET {url}/firehose/{subscription_id}`, authorised with a UAA client-credentials
//! token.
//!
//! Two layers: [`FirehoseStream`] (in `connection.rs`) keeps one WebSocket up — token,
//! handshake, keep-alive, reconnects with backoff, slow-consumer disconnects — and yields raw
//! frames; [`run`] decodes those frames and hands them to the pipeline in batches. [`capture`]
//! (`sluice capture`) shares the lower layer and writes the frames to a replay file instead.

pub mod capture;
mod connection;
#[cfg(test)]
pub(crate) mod test_server;
#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use sluice_common::config::ByteSize;
use sluice_common::time::now_ns;
use sluice_common::tls::TlsError;
use sluice_common::uaa::UaaError;
use sluice_model::decode::decode_v1;
use tokio_tungstenite::tungstenite::http::Uri;
use tracing::error;

use crate::{
    Component, ComponentError, ComponentTask, Problem, Source, SourceContext, network_problems,
};

/// What is wrong with `size` as a source's `max_frame_size`.
pub(crate) fn frame_size_problem(size: ByteSize) -> Option<String> {
    let (min, max) = FRAME_SIZE_RANGE;
    (size.0 < min || size.0 > max)
        .then(|| format!("must be between 1KiB and 1GiB, not {} bytes", size.0))
}

pub use connection::{FirehoseFrame, FirehoseStream, MessageLocation};

/// `[sources.NAME]` with `type = "firehose"` (the pipeline's config loader strips `type` and
/// expands `${ENV}` before this is deserialized).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirehoseConfig {
    /// The Traffic Controller, `ws://` or `wss://` (`wss://doppler.sys.example.com:443`).
    pub url: String,
    /// Instances sharing a subscription id split the stream between them; different ids each
    /// get everything.
    pub subscription_id: String,
    /// UAA's base URL (`https://uaa.sys.example.com`); the token comes from `/oauth/token`.
    pub uaa_url: String,
    /// The UAA client, which needs the `doppler.firehose` scope.
    pub client_id: String,
    /// The UAA client's secret (usually `"${UAA_CLIENT_SECRET}"`).
    pub client_secret: String,
    /// Accept any TLS certificate from the Traffic Controller and UAA (self-signed
    /// foundations). Default false.
    #[serde(default)]
    pub skip_tls_verify: bool,
    /// How often a ping is sent. A connection on which nothing at all (message or pong) arrives
    /// for twice this long is taken for dead and replaced. Default `"15s"`.
    #[serde(
        default = "default_keepalive",
        with = "sluice_common::config::duration"
    )]
    pub keepalive: Duration,
    /// The longest wait between reconnection attempts (the backoff starts at 100 ms and
    /// doubles). Default `"30s"`.
    #[serde(
        default = "default_max_backoff",
        with = "sluice_common::config::duration"
    )]
    pub max_backoff: Duration,
    /// The most events handed to the pipeline in one batch. A batch is also sent as soon as no
    /// further message is waiting, so a quiet stream adds no latency. Default 1024.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// WebSockets opened under the one subscription id (SPEC §12): the Traffic Controller
    /// deals the subscription's envelopes between them, as between nozzle instances.
    /// Default 1.
    #[serde(default = "default_connections")]
    pub connections: usize,
    /// The largest WebSocket message (one envelope) accepted, `"16MiB"` by default. A larger
    /// one is counted as a bad record (`oversized_frame`) and ends the connection (a
    /// WebSocket cannot skip it), which is then reconnected with backoff.
    #[serde(default = "default_max_frame_size")]
    pub max_frame_size: ByteSize,
}

/// More connections than this to one subscription is a typo, not a plan.
pub const MAX_CONNECTIONS: usize = 64;

const fn default_connections() -> usize {
    1
}

/// The default [`FirehoseConfig::max_frame_size`].
pub const DEFAULT_MAX_FRAME_SIZE: ByteSize = ByteSize(16 << 20);

/// The bounds of [`FirehoseConfig::max_frame_size`]: a real envelope is well under 64 KiB.
pub(crate) const FRAME_SIZE_RANGE: (u64, u64) = (1 << 10, 1 << 30);

const fn default_max_frame_size() -> ByteSize {
    DEFAULT_MAX_FRAME_SIZE
}

const fn default_keepalive() -> Duration {
    Duration::from_secs(15)
}

const fn default_max_backoff() -> Duration {
    Duration::from_secs(30)
}

const fn default_batch_size() -> usize {
    1024
}

// The secret must never reach a log line, so Debug is written by hand.
impl fmt::Debug for FirehoseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FirehoseConfig")
            .field("url", &self.url)
            .field("subscription_id", &self.subscription_id)
            .field("uaa_url", &self.uaa_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("skip_tls_verify", &self.skip_tls_verify)
            .field("keepalive", &self.keepalive)
            .field("max_backoff", &self.max_backoff)
            .field("batch_size", &self.batch_size)
            .field("connections", &self.connections)
            .field("max_frame_size", &self.max_frame_size)
            .finish()
    }
}

impl FirehoseConfig {
    /// The WebSocket URL requested: `{url}/firehose/{subscription_id}`.
    pub fn firehose_url(&self) -> String {
        format!(
            "{}/firehose/{}",
            self.url.trim_end_matches('/'),
            self.subscription_id
        )
    }

    /// The WebSocket URL with its port spelled out (`wss://host:443/firehose/id`), for logs
    /// and error messages: "cannot reach host:port" is what an operator checks first.
    pub fn endpoint(&self) -> String {
        let url = self.firehose_url();
        let Ok(uri) = url.parse::<Uri>() else {
            return url;
        };
        match (uri.scheme_str(), uri.host()) {
            (Some(scheme), Some(host)) => {
                let port = uri
                    .port_u16()
                    .unwrap_or(if scheme == "wss" { 443 } else { 80 });
                format!("{scheme}://{host}:{port}{}", uri.path())
            }
            _ => url,
        }
    }
}

impl Component for FirehoseConfig {
    fn kind(&self) -> &'static str {
        "firehose"
    }

    fn problems(&self) -> Vec<Problem> {
        let mut problems = network_problems(
            &self.url,
            &["ws", "wss"],
            &self.uaa_url,
            ("subscription_id", &self.subscription_id),
            &self.client_id,
        );
        let mut problem = |key: &str, message: String| problems.push(Problem::new(key, message));
        if self.keepalive.is_zero() {
            problem("keepalive", "must be longer than 0s".into());
        }
        if self.max_backoff.is_zero() {
            problem("max_backoff", "must be longer than 0s".into());
        }
        if self.batch_size == 0 {
            problem("batch_size", "must be at least 1".into());
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.connections) {
            problem(
                "connections",
                format!("must be from 1 to {MAX_CONNECTIONS}"),
            );
        }
        if let Some(why) = frame_size_problem(self.max_frame_size) {
            problem("max_frame_size", why);
        }
        problems
    }

    fn describe(&self) -> String {
        format!("{}/firehose/{}", self.url, self.subscription_id)
    }
}

impl Source for FirehoseConfig {
    fn is_finite(&self) -> bool {
        false
    }

    fn build(self: Box<Self>, ctx: SourceContext) -> ComponentTask {
        Box::pin(async move { run(*self, ctx).await.map_err(ComponentError::new) })
    }
}

/// Why the Firehose source (or capture) stopped. Network trouble is not here: it is retried.
#[derive(Debug, thiserror::Error)]
pub enum FirehoseError {
    /// The config has invalid values (normally caught by `sluice validate` before a run).
    #[error("invalid firehose source config: {}", crate::list(.0))]
    Config(Vec<Problem>),
    /// The TLS configuration could not be built.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// UAA refused the client id or secret: retrying cannot help.
    #[error("{0}; check client_id and client_secret")]
    Uaa(#[source] UaaError),
}

/// Runs the Firehose source until shutdown (then `Ok`), until the pipeline stops taking
/// batches (`Ok`), or until a non-retriable error: bad config, TLS setup, credentials refused.
pub async fn run(config: FirehoseConfig, ctx: SourceContext) -> Result<(), FirehoseError> {
    // Each connection keeps itself up; a refusal no retry can mend stops them all.
    let connections = (0..config.connections).map(|_| stream_events(&config, &ctx));
    let result = futures_util::future::try_join_all(connections)
        .await
        .map(|_| ());
    if let Err(e) = &result {
        error!(source = %ctx.name, "The Firehose source stopped: {e}.");
    }
    result
}

async fn stream_events(config: &FirehoseConfig, ctx: &SourceContext) -> Result<(), FirehoseError> {
    let mut stream = FirehoseStream::new(config, ctx.clone())?;
    let batch_size = config.batch_size;
    let max_batch_bytes = ctx.max_batch_bytes();
    while let Some(first) = stream.next_frame().await? {
        // Take what has already arrived, up to a batch, without waiting for more: a busy
        // stream gets big batches, a quiet one gets each envelope at once.
        // A batch also ends at its share of the byte budget, so big frames make small
        // batches.
        let mut events = Vec::new();
        let mut next = Some(first);
        let mut frames = 0;
        let mut bytes = 0;
        while let Some(frame) = next {
            let size = frame.payload.len();
            match decode_v1(frame.payload) {
                // The events are views into their frames: the frames are what they hold.
                Ok(event) => {
                    bytes += size.max(event.approx_bytes());
                    events.push(event);
                }
                Err(e) => ctx.bad_record(&stream.location(frame.number), &e),
            }
            frames += 1;
            next = if frames < batch_size && bytes < max_batch_bytes {
                stream.ready_frame()
            } else {
                None
            };
        }
        if ctx
            .send_holding(events, now_ns(), None, bytes)
            .await
            .is_err()
        {
            stream.close().await;
            return Ok(());
        }
    }
    Ok(())
}
