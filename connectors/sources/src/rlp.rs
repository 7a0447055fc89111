//! The `rlp` source: Loggregator v2 envelopes from the RLP gateway (SPEC §1.2).
//!
//! `GET {url}/v2/read?log&counter&gauge&timer&event&shard_id={id}` with a UAA bearer token
//! answers a Server-Sent Events stream whose events carry `{"batch":[Envelope, …]}` in proto3
//! JSON (`sse` parses the stream, [`sluice_model::v2`] the batches). The gateway also sends
//! `heartbeat` events, which are skipped, and a `closing` event before it ends a stream
//! (every 14 minutes by default), after which the source reconnects like after any other
//! end of stream or network error: with capped exponential backoff, counted.
//!
//! A 401/403 means the token was revoked or expired early: it is dropped and the request
//! retried at once with a fresh one. If the fresh one is refused too, the gateway does not
//! accept this client (missing `doppler.firehose` or `logs.admin` scope, say): that is logged
//! as an error and retried with backoff, each time with a fresh token, so fixing the client
//! in UAA heals the source. UAA refusing the credentials themselves stops the source:
//! retrying cannot help. The loop that does this is shared with the Firehose
//! (`reconnect`); the gateway's read request is this source's attempt in it.

mod sse;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, CACHE_CONTROL};
use serde::Deserialize;
use sluice_common::config::ByteSize;
use sluice_model::v2::parse_sse_batch;
use tracing::{error, info};

use self::sse::{SseEvent, SseParser};
use sluice_common::backoff::Backoff;
use sluice_common::time::now_ns;
use sluice_common::tls::{TlsError, http_client};
use sluice_common::uaa::{TokenSource, UaaError};

use crate::reconnect::{AfterRefusal, Attempt, Endpoint, Reconnect, Refusal};
use crate::{
    Component, ComponentError, ComponentTask, Problem, Source, SourceContext, network_problems,
};

/// The default [`RlpConfig::max_frame_size`]: a gateway batch holds at most a few hundred
/// envelopes of at most 64 KiB each.
pub const DEFAULT_MAX_FRAME_SIZE: ByteSize = ByteSize(32 << 20);

const fn default_max_frame_size() -> ByteSize {
    DEFAULT_MAX_FRAME_SIZE
}

/// `[sources.NAME]` with `type = "rlp"`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RlpConfig {
    /// The RLP gateway's base URL, `https://log-stream.sys.example.com`.
    pub url: String,
    /// Instances with the same shard id split the stream between them; different ids each
    /// get everything.
    pub shard_id: String,
    /// UAA's base URL, `https://uaa.sys.example.com`.
    pub uaa_url: String,
    /// A UAA client with the `doppler.firehose` (or `logs.admin`) authority.
    pub client_id: String,
    /// The client's secret (never logged: `Debug` redacts it).
    pub client_secret: String,
    /// Accept any TLS certificate from the gateway and UAA (self-signed foundations).
    #[serde(default)]
    pub skip_tls_verify: bool,
    /// Reconnect when nothing, not even a heartbeat, arrived for this long: the connection
    /// is dead without having been closed. Default `"60s"` (the gateway beats every 10 s).
    #[serde(
        default = "default_idle_timeout",
        with = "sluice_common::config::duration"
    )]
    pub idle_timeout: Duration,
    /// The longest wait between reconnect attempts. Default `"30s"`.
    #[serde(
        default = "default_max_backoff",
        with = "sluice_common::config::duration"
    )]
    pub max_backoff: Duration,
    /// The largest Server-Sent Event (one batch of envelopes) accepted, `"32MiB"` by
    /// default. A larger one is counted as a bad record (`oversized_frame`) and ends the
    /// connection, which is then reconnected with backoff.
    #[serde(default = "default_max_frame_size")]
    pub max_frame_size: ByteSize,
}

impl fmt::Debug for RlpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RlpConfig")
            .field("url", &self.url)
            .field("shard_id", &self.shard_id)
            .field("uaa_url", &self.uaa_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("skip_tls_verify", &self.skip_tls_verify)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_backoff", &self.max_backoff)
            .field("max_frame_size", &self.max_frame_size)
            .finish()
    }
}

const fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}

const fn default_max_backoff() -> Duration {
    Duration::from_secs(30)
}

impl Component for RlpConfig {
    fn kind(&self) -> &'static str {
        "rlp"
    }

    fn problems(&self) -> Vec<Problem> {
        let mut problems = network_problems(
            &self.url,
            &["http", "https"],
            &self.uaa_url,
            ("shard_id", &self.shard_id),
            &self.client_id,
        );
        let mut problem = |key: &str, message: String| problems.push(Problem::new(key, message));
        if self.idle_timeout.is_zero() {
            problem("idle_timeout", "must be longer than 0s".into());
        }
        if self.max_backoff.is_zero() {
            problem("max_backoff", "must be longer than 0s".into());
        }
        if let Some(why) = crate::firehose::frame_size_problem(self.max_frame_size) {
            problem("max_frame_size", why);
        }
        problems
    }

    fn describe(&self) -> String {
        format!("{}/v2/read shard_id={}", self.url, self.shard_id)
    }
}

impl Source for RlpConfig {
    fn is_finite(&self) -> bool {
        false
    }

    fn build(self: Box<Self>, ctx: SourceContext) -> ComponentTask {
        Box::pin(async move { run(*self, ctx).await.map_err(ComponentError::new) })
    }
}

/// Why the source stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum RlpError {
    /// `url` is not an http(s) URL.
    #[error("invalid RLP gateway URL {url:?}: {detail}")]
    Url { url: String, detail: String },
    /// No TLS configuration (the platform's trust store could not be loaded).
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// UAA refused the client's credentials.
    #[error("cannot get a token for the RLP gateway: {0}")]
    Credentials(#[source] UaaError),
}

/// Reads the gateway until `ctx.shutdown` is cancelled (or the pipeline stops taking
/// batches), reconnecting whenever the stream ends.
pub async fn run(config: RlpConfig, ctx: SourceContext) -> Result<(), RlpError> {
    let url = read_url(&config.url, &config.shard_id)?;
    let http = http_client(config.skip_tls_verify)?;
    let tokens = TokenSource::new(
        http.clone(),
        &config.uaa_url,
        config.client_id.clone(),
        config.client_secret.clone(),
    );
    // Everything, a token that UAA would not give included, is logged under the read URL.
    let logged_url: Arc<str> = url.as_str().into();
    let reconnect = Reconnect::new(
        ctx.clone(),
        tokens,
        Backoff::new(Duration::from_millis(100), config.max_backoff),
        logged_url.clone(),
        logged_url,
        AfterRefusal::FreshToken,
    );
    let mut stream = Stream {
        gateway: Gateway { http, url },
        idle_timeout: config.idle_timeout,
        max_event: usize::try_from(config.max_frame_size.0).unwrap_or(usize::MAX),
        ctx,
        reconnect,
        messages: 0,
    };
    let result = stream.run().await;
    stream.ctx.set_connected(false);
    result
}

/// `{base}/v2/read?log&counter&gauge&timer&event&shard_id={id}`, the shard id encoded.
fn read_url(base: &str, shard_id: &str) -> Result<reqwest::Url, RlpError> {
    let invalid = |detail: String| RlpError::Url {
        url: base.to_owned(),
        detail,
    };
    let mut url = reqwest::Url::parse(&format!("{}/v2/read", base.trim_end_matches('/')))
        .map_err(|e| invalid(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https".to_owned()));
    }
    url.set_query(Some("log&counter&gauge&timer&event"));
    url.query_pairs_mut().append_pair("shard_id", shard_id);
    Ok(url)
}

/// How an open stream ended.
enum Ended {
    /// Shutdown, or the pipeline closed: the source returns.
    Stop,
    /// Anything else: network errors, end of stream, idle timeout, a `closing` event.
    Lost(String),
}

/// The gateway's read request with a token: the source's connection attempt.
struct Gateway {
    http: reqwest::Client,
    url: reqwest::Url,
}

impl Endpoint for Gateway {
    type Connection = reqwest::Response;

    /// The read request; 401 and 403 are refusals, any other status but success a failure.
    async fn attempt(&self, token: &str) -> Attempt<reqwest::Response> {
        let request = self
            .http
            .get(self.url.clone())
            .header(AUTHORIZATION, format!("bearer {token}"))
            .header(ACCEPT, "text/event-stream")
            .header(CACHE_CONTROL, "no-cache");
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return Attempt::Failed(error.to_string()),
        };
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Attempt::Refused(status);
        }
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let body: String = body.chars().take(300).collect();
            return Attempt::Failed(format!("HTTP {status}: {body}"));
        }
        Attempt::Connected(response)
    }

    fn refused(&self, ctx: &SourceContext, refusal: Refusal) {
        let url = self.url.as_str();
        match refusal {
            Refusal::Refreshing { status } => {
                let why = format!("HTTP {status}: the token was refused, fetching a new one");
                ctx.reconnecting(url, &why, Duration::ZERO);
            }
            Refusal::Again { status, delay } => {
                error!(
                    source = %ctx.name,
                    %url,
                    %status,
                    retry_in = ?delay,
                    "The RLP gateway refused a fresh UAA token: does the client have the doppler.firehose or logs.admin authority?"
                );
                ctx.reconnecting(url, &format!("HTTP {status}"), delay);
            }
        }
    }
}

struct Stream {
    gateway: Gateway,
    idle_timeout: Duration,
    /// `max_frame_size`: the most bytes one SSE event may hold.
    max_event: usize,
    ctx: SourceContext,
    reconnect: Reconnect,
    /// SSE events received over all connections: where a bad one is found.
    messages: u64,
}

/// Where a bad batch or envelope was: `url message N [envelope I]`.
struct At<'a> {
    url: &'a reqwest::Url,
    message: u64,
    envelope: Option<usize>,
}

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} message {}", self.url, self.message)?;
        if let Some(index) = self.envelope {
            write!(f, " envelope {index}")?;
        }
        Ok(())
    }
}

impl Stream {
    async fn run(&mut self) -> Result<(), RlpError> {
        let shutdown = self.ctx.shutdown.clone();
        loop {
            let connected = self.reconnect.connect(&self.gateway).await;
            let Some(response) = connected.map_err(RlpError::Credentials)? else {
                return Ok(());
            };
            info!(source = %self.ctx.name, url = %self.gateway.url, "Connected to the RLP gateway.");
            let ended = tokio::select! {
                ended = self.read(response) => ended,
                () = shutdown.cancelled() => Ended::Stop,
            };
            match ended {
                Ended::Stop => return Ok(()),
                Ended::Lost(why) => self.reconnect.lost(&why).await,
            }
        }
    }

    /// Reads one open stream to its end.
    async fn read(&mut self, response: reqwest::Response) -> Ended {
        let mut body = response.bytes_stream();
        let mut parser = SseParser::new(self.max_event);
        let mut sse_events = Vec::new();
        loop {
            let chunk = match tokio::time::timeout(self.idle_timeout, body.next()).await {
                Err(_) => {
                    return Ended::Lost(format!("nothing received for {:?}", self.idle_timeout));
                }
                Ok(None) => return Ended::Lost("the gateway ended the stream".to_owned()),
                Ok(Some(Err(error))) => return Ended::Lost(error.to_string()),
                Ok(Some(Ok(chunk))) => chunk,
            };
            if let Err(error) = parser.feed(&chunk, &mut sse_events) {
                // The event is lost with the connection (the stream cannot skip it): a bad record.
                self.messages += 1;
                let at = At {
                    url: &self.gateway.url,
                    message: self.messages,
                    envelope: None,
                };
                self.ctx.bad_record_reason(&at, "oversized_frame", &error);
                return Ended::Lost(error.to_string());
            }
            let mut events = Vec::new();
            let mut closing = None;
            for event in sse_events.drain(..) {
                match event.name.as_str() {
                    "heartbeat" => {}
                    "closing" => closing = Some(event),
                    _ => self.batch(&event, &mut events),
                }
            }
            if !events.is_empty() {
                let sent = self.ctx.send(events, now_ns()).await;
                if sent.is_err() {
                    return Ended::Stop;
                }
            }
            if let Some(event) = closing {
                let why = String::from_utf8_lossy(&event.data).into_owned();
                return Ended::Lost(format!("the gateway is closing the stream: {why}"));
            }
        }
    }

    /// Maps the batch of one SSE event onto `events`, counting what cannot be mapped.
    fn batch(&mut self, event: &SseEvent, events: &mut Vec<sluice_model::Event>) {
        self.messages += 1;
        self.ctx.metrics.bytes.add(event.data.len() as u64);
        let at = |envelope| At {
            url: &self.gateway.url,
            message: self.messages,
            envelope,
        };
        let json = match std::str::from_utf8(&event.data) {
            Ok(json) => json,
            Err(error) => {
                self.ctx
                    .bad_record_reason(&at(None), "invalid_json", &error);
                return;
            }
        };
        match parse_sse_batch(json, events) {
            Err(error) => self
                .ctx
                .bad_record_reason(&at(None), "invalid_json", &error),
            Ok(report) => {
                for rejected in &report.rejected {
                    self.ctx
                        .bad_record(&at(Some(rejected.index)), &rejected.error);
                }
                for _ in 0..report.unmapped {
                    self.ctx.skipped("unmapped_v2");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_read_url_asks_for_every_type_and_encodes_the_shard() {
        let url = read_url("https://log-stream.example.com/", "my shard&x").expect("valid");
        assert_eq!(
            url.as_str(),
            "https://log-stream.example.com/v2/read?log&counter&gauge&timer&event&shard_id=my+shard%26x"
        );
        assert!(matches!(
            read_url("ftp://gw", "s"),
            Err(RlpError::Url { .. })
        ));
        assert!(matches!(
            read_url("not a url", "s"),
            Err(RlpError::Url { .. })
        ));
    }

    #[test]
    fn the_config_has_defaults_and_hides_the_secret() {
        let config: RlpConfig = serde_json::from_str(
            r#"{"url":"https://gw","shard_id":"s","uaa_url":"https://uaa","client_id":"c","client_secret":"hunter2"}"#,
        )
        .expect("minimal config");
        assert_eq!(config.idle_timeout, Duration::from_secs(60));
        assert_eq!(config.max_backoff, Duration::from_secs(30));
        assert!(!config.skip_tls_verify);
        assert!(!format!("{config:?}").contains("hunter2"));
        let unknown = serde_json::from_str::<RlpConfig>(
            r#"{"url":"u","shard_id":"s","uaa_url":"u","client_id":"c","client_secret":"x","subscription":"y"}"#,
        );
        assert!(unknown.is_err());
        let short: RlpConfig = serde_json::from_str(
            r#"{"url":"u","shard_id":"s","uaa_url":"u","client_id":"c","client_secret":"x","idle_timeout":"5s"}"#,
        )
        .expect("durations as strings");
        assert_eq!(short.idle_timeout, Duration::from_secs(5));
    }
}
