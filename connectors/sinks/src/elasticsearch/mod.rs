//! The `elasticsearch` sink: log lines as documents (SPEC §3), through the official
//! `elasticsearch` client's `_bulk` API.
//!
//! At start it asks the cluster for its version (`GET /`) and installs an index template with
//! a fixed mapping: keywords for ids and names, `text` for the message, `date` for
//! `@timestamp`, and dynamic mapping off (tags are kept in `_source` but never mapped, so no
//! mapping explosion). Received logs are gathered up to `batch_size × concurrency` documents
//! or `flush_interval`, then sent as bulk requests of `batch_size` documents, at most
//! `concurrency` at a time. Every document's `_id` is the deterministic log id, so sending it
//! again overwrites it with itself: retries and replays never duplicate a line.
//!
//! Bulk results are read item by item: items answered 429 or 5xx are sent again (only they)
//! after a backoff; other 4xx items (a mapping error) go to the dead-letter file with the
//! reason and are counted, never retried. A whole request answered 429/5xx, or a connection
//! that fails, pauses the sink with capped backoff while its buffer (a disk buffer, for logs
//! that must survive anything) absorbs the stream; once the cluster answers the backlog
//! drains in batches of `batch_size` while new logs keep arriving. The input is committed
//! only after every document of a flush is stored or dead-lettered.

mod bulk;
mod document;
mod retention;

pub use document::{IndexPattern, IndexPatternError};
pub use retention::IndexRetentionConfig;

use self::retention::IndexRetention;

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use elasticsearch::Elasticsearch;
use elasticsearch::auth::Credentials;
use elasticsearch::cert::{Certificate, CertificateValidation};
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::indices::IndicesPutIndexTemplateParts;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;
use sluice_model::records::StreamName;
use tracing::{debug, info, warn};

use self::bulk::{BulkOutcome, DeadLetter, send_bulk};
use self::document::{Document, document};
use crate::batch::gather;
use crate::retry::{Retriable, Retry, Stop};
use sluice_model::records::Records;

use crate::{Claim, Component, ComponentError, ComponentTask, Problem, SinkContext};
use sluice_buffers::{BufferConfig, BufferError};

/// The sink's name, as the dead-letter file records it.
type SinkName = Arc<str>;

/// `[sinks.<name>]` with `type = "elasticsearch"`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchSinkConfig {
    /// The cluster: `http://127.0.0.1:9200` or `https://…`.
    pub url: String,
    /// Index name pattern, from each line's event time (UTC): `%Y`, `%m`, `%d`, `%H`.
    #[serde(default = "default_index")]
    pub index: String,
    /// Only `logs` can be stored here.
    #[serde(default = "logs_only")]
    pub streams: Vec<StreamName>,
    /// `{ type = "basic", username, password }`, `{ type = "api_key", id, secret }`,
    /// `{ type = "api_key", encoded }` or `{ type = "bearer", token }`.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// A PEM file of the CA that signed the cluster's certificate.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate (testing only).
    #[serde(default)]
    pub skip_tls_verify: bool,
    /// Gzip request bodies.
    #[serde(default)]
    pub gzip: bool,
    /// Documents per bulk request.
    #[serde(default = "default_batch_size")]
    pub batch_size: NonZeroUsize,
    /// Bulk requests in flight at most.
    #[serde(default = "default_concurrency")]
    pub concurrency: NonZeroUsize,
    /// How long a received line may wait for a fuller batch (`"1s"`).
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
    /// On Ctrl-C, how long a sink whose cluster is down keeps trying before it abandons what
    /// its memory buffer holds (a disk buffer keeps it for the next run instead).
    #[serde(
        default = "default_shutdown_timeout",
        with = "sluice_common::config::duration"
    )]
    pub shutdown_timeout: Duration,
    /// The name of the index template installed at start.
    #[serde(default = "default_template")]
    pub template: String,
    /// Where documents the cluster rejects are written, one JSON line each with the reason.
    /// Default: `sluice-data/dead-letter/<sink name>.ndjson`.
    #[serde(default)]
    pub dead_letter: Option<PathBuf>,
    /// Deleting whole indices of `index` by event time (SPEC §10):
    /// `retention = { enabled = true, logs = "14d" }`.
    #[serde(default)]
    pub retention: IndexRetentionConfig,
    /// Where records wait while the cluster is slow or down.
    #[serde(default)]
    pub buffer: BufferConfig,
}

fn default_index() -> String {
    "logs-%Y.%m.%d".to_owned()
}

fn logs_only() -> Vec<StreamName> {
    vec![StreamName::Logs]
}

fn default_batch_size() -> NonZeroUsize {
    NonZeroUsize::new(1000).unwrap_or(NonZeroUsize::MIN)
}

fn default_concurrency() -> NonZeroUsize {
    NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN)
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

fn default_template() -> String {
    "sluice-logs".to_owned()
}

impl ElasticsearchSinkConfig {
    /// A config with the defaults for `url`.
    pub fn new(url: impl Into<String>) -> ElasticsearchSinkConfig {
        ElasticsearchSinkConfig {
            url: url.into(),
            index: default_index(),
            streams: logs_only(),
            auth: None,
            ca_file: None,
            skip_tls_verify: false,
            gzip: false,
            batch_size: default_batch_size(),
            concurrency: default_concurrency(),
            flush_interval: default_flush_interval(),
            request_timeout: default_request_timeout(),
            shutdown_timeout: default_shutdown_timeout(),
            template: default_template(),
            dead_letter: None,
            retention: IndexRetentionConfig::default(),
            buffer: BufferConfig::default(),
        }
    }

    /// `host:port` for messages.
    pub fn endpoint(&self) -> String {
        match url::Url::parse(&self.url) {
            Ok(url) => format!(
                "{}:{}",
                url.host_str().unwrap_or(""),
                url.port_or_known_default().unwrap_or(9200)
            ),
            Err(_) => "(invalid URL)".to_owned(),
        }
    }
}

impl Component for ElasticsearchSinkConfig {
    fn kind(&self) -> &'static str {
        "elasticsearch"
    }

    fn problems(&self) -> Vec<Problem> {
        let mut problems = crate::stream_problems(&self.streams);
        if let Err(e) = url::Url::parse(&self.url) {
            problems.push(Problem::new(
                "url",
                format!("invalid URL `{}`: {e}", self.url),
            ));
        }
        if let Err(e) = IndexPattern::parse(&self.index) {
            problems.push(Problem::new("index", e.to_string()));
        }
        if self.retention.enabled && self.retention.logs.is_zero() {
            problems.push(Problem::new(
                "retention.logs",
                "must be longer than 0s (set enabled = false to keep every index)",
            ));
        }
        if let Some(stream) = self.streams.iter().find(|s| **s != StreamName::Logs) {
            problems.push(Problem::new(
                "streams",
                format!("`{stream}` cannot be stored in Elasticsearch: only `logs` can"),
            ));
        }
        problems
    }

    fn resources(&self) -> Vec<Claim> {
        self.dead_letter
            .iter()
            .map(|path| Claim::path("dead_letter", "the dead-letter file", path))
            .collect()
    }

    fn describe(&self) -> String {
        format!("{} (index {})", self.endpoint(), self.index)
    }
}

impl crate::Sink for ElasticsearchSinkConfig {
    fn streams(&self) -> &[StreamName] {
        &self.streams
    }

    fn buffer(&self) -> &BufferConfig {
        &self.buffer
    }

    fn build(self: Box<Self>, ctx: SinkContext) -> ComponentTask {
        Box::pin(async move { run(*self, ctx).await.map_err(ComponentError::new) })
    }
}

/// How the sink authenticates. Prints without its secrets.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    Basic {
        username: String,
        password: String,
    },
    ApiKey {
        #[serde(default)]
        id: Option<String>,
        #[serde(default)]
        secret: Option<String>,
        #[serde(default)]
        encoded: Option<String>,
    },
    Bearer {
        token: String,
    },
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthConfig::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            AuthConfig::ApiKey { .. } => f.write_str("ApiKey(***)"),
            AuthConfig::Bearer { .. } => f.write_str("Bearer(***)"),
        }
    }
}

/// Why the `elasticsearch` sink stopped.
#[derive(Debug, thiserror::Error)]
pub enum ElasticsearchSinkError {
    #[error("invalid Elasticsearch sink config: {0}")]
    Config(String),
    #[error("cannot read the CA file {}: {source}", path.display())]
    CaFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot reach Elasticsearch at {endpoint}: {source}")]
    Unreachable {
        endpoint: String,
        source: elasticsearch::Error,
    },
    #[error("Elasticsearch at {endpoint} answered {what} with HTTP {status}: {body}")]
    Status {
        endpoint: String,
        what: &'static str,
        status: u16,
        body: String,
    },
    #[error("cannot read Elasticsearch's answer to {what} from {endpoint}: {detail}")]
    Answer {
        endpoint: String,
        what: &'static str,
        detail: String,
    },
    #[error("cannot write the dead-letter file {}: {source}", path.display())]
    DeadLetter {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "Elasticsearch at {endpoint} stayed unavailable for the shutdown timeout: abandoned {records} records held in memory"
    )]
    Abandoned { endpoint: String, records: u64 },
    #[error(transparent)]
    Buffer(#[from] BufferError),
}

impl ElasticsearchSinkError {
    /// A connection that failed or timed out, or an overloaded / restarting cluster.
    pub fn is_retriable(&self) -> bool {
        match self {
            ElasticsearchSinkError::Unreachable { .. } => true,
            ElasticsearchSinkError::Status { status, .. } => bulk::is_retriable_status(*status),
            _ => false,
        }
    }
}

impl Retriable for ElasticsearchSinkError {
    fn is_retriable(&self) -> bool {
        ElasticsearchSinkError::is_retriable(self)
    }
}

/// Runs the sink until its input closes: every log received is stored or dead-lettered.
pub async fn run(
    config: ElasticsearchSinkConfig,
    mut ctx: SinkContext,
) -> Result<(), ElasticsearchSinkError> {
    if let Some(problem) = config.problems().into_iter().next() {
        return Err(ElasticsearchSinkError::Config(problem.to_string()));
    }
    let pattern = IndexPattern::parse(&config.index)
        .map_err(|e| ElasticsearchSinkError::Config(e.to_string()))?;
    let endpoint = config.endpoint();
    let client = client(&config)?;
    let dead_letter_path = config.dead_letter.clone().unwrap_or_else(|| {
        PathBuf::from("sluice-data/dead-letter").join(format!("{}.ndjson", ctx.name))
    });
    let mut dead_letter = DeadLetter::new(dead_letter_path, ctx.name.clone());
    let mut retry = Retry::new("Elasticsearch", &endpoint, config.shutdown_timeout);
    loop {
        match prepare(&client, &config, &pattern, &endpoint).await {
            Ok(version) => {
                info!(sink = %ctx.name, %endpoint, %version,
                    "Connected to the cluster; the index template is installed.");
                break;
            }
            Err(error) => {
                if let Some(stop) = retry.wait_or_fail(error, 0, &mut ctx).await? {
                    return finish(stop, &endpoint);
                }
            }
        }
    }
    retry.recovered(&ctx);

    let mut retention = IndexRetention::new(config.retention.clone(), pattern.clone());
    let sink = Sink {
        config: &config,
        client,
        pattern,
        endpoint: endpoint.clone(),
    };
    // Enough documents for every request in flight to be a full one.
    let gather_rows = config.batch_size.get() * config.concurrency.get();
    loop {
        let (batch, closed) = gather(
            &mut ctx,
            &config.streams,
            gather_rows,
            config.flush_interval,
        )
        .await;
        let events = batch.by_stream[StreamName::Logs.index()]
            .iter()
            .flat_map(|records| match records {
                Records::Logs(events) => events.as_slice(),
                _ => &[],
            });
        let mut docs = Vec::with_capacity(batch.rows);
        let mut skipped = 0;
        for event in events {
            match document(event, &sink.pattern) {
                Some(doc) => docs.push(doc),
                None => skipped += 1,
            }
        }
        if skipped > 0 {
            warn!(sink = %ctx.name, records = skipped, "Dropped events that are not logs.");
            ctx.metrics.dropped(skipped);
        }
        while let Err(reason) = retention
            .create_indices(
                &sink.client,
                docs.iter().map(|d| d.index.as_str()),
                &ctx.name,
            )
            .await
        {
            if let Some(stop) = retry.wait(&reason, docs.len(), &mut ctx).await {
                return finish(stop, &endpoint);
            }
        }
        if let Some(stop) = sink
            .flush(docs, &mut ctx, &mut retry, &mut dead_letter)
            .await?
        {
            return finish(stop, &endpoint);
        }
        ctx.input.commit().await?;
        // After the flush, and at the end of a finite run at the final watermark (a run
        // stopped by a signal leaves that to the next one).
        if retention.due() || (closed && !ctx.shutdown.is_cancelled()) {
            retention
                .pass(&sink.client, ctx.watermark(), &ctx.name, &ctx.metrics)
                .await;
        }
        if closed {
            break;
        }
    }
    info!(sink = %ctx.name, documents = ctx.metrics.written_total(),
        dead_lettered = ctx.metrics.dead_lettered.get(), "The Elasticsearch sink is done.");
    Ok(())
}

fn finish(stop: Stop, endpoint: &str) -> Result<(), ElasticsearchSinkError> {
    stop.end(|records| ElasticsearchSinkError::Abandoned {
        endpoint: endpoint.to_owned(),
        records,
    })
}

/// The client, with the config's auth and TLS settings (the API's log search uses it too).
pub fn client(config: &ElasticsearchSinkConfig) -> Result<Elasticsearch, ElasticsearchSinkError> {
    let config_error = |e: &dyn std::fmt::Display| ElasticsearchSinkError::Config(e.to_string());
    let url = url::Url::parse(&config.url).map_err(|e| config_error(&e))?;
    let mut builder = TransportBuilder::new(SingleNodeConnectionPool::new(url))
        .timeout(config.request_timeout)
        .request_body_compression(config.gzip);
    match &config.auth {
        None => {}
        Some(AuthConfig::Basic { username, password }) => {
            builder = builder.auth(Credentials::Basic(username.clone(), password.clone()));
        }
        Some(AuthConfig::Bearer { token }) => {
            builder = builder.auth(Credentials::Bearer(token.clone()));
        }
        Some(AuthConfig::ApiKey {
            id: Some(id),
            secret: Some(secret),
            encoded: None,
        }) => builder = builder.auth(Credentials::ApiKey(id.clone(), secret.clone())),
        Some(AuthConfig::ApiKey {
            id: None,
            secret: None,
            encoded: Some(encoded),
        }) => builder = builder.auth(Credentials::EncodedApiKey(encoded.clone())),
        Some(AuthConfig::ApiKey { .. }) => {
            return Err(ElasticsearchSinkError::Config(
                "auth: an api_key needs either `id` and `secret`, or `encoded`".to_owned(),
            ));
        }
    }
    if config.skip_tls_verify {
        builder = builder.cert_validation(CertificateValidation::None);
    } else if let Some(path) = &config.ca_file {
        let pem = std::fs::read(path).map_err(|source| ElasticsearchSinkError::CaFile {
            path: path.clone(),
            source,
        })?;
        let certificate = Certificate::from_pem(&pem).map_err(|e| config_error(&e))?;
        builder = builder.cert_validation(CertificateValidation::Full(certificate));
    }
    let transport = builder.build().map_err(|e| config_error(&e))?;
    Ok(Elasticsearch::new(transport))
}

/// The healthcheck (`GET /`, returning the cluster's product and version) and the index
/// template.
async fn prepare(
    client: &Elasticsearch,
    config: &ElasticsearchSinkConfig,
    pattern: &IndexPattern,
    endpoint: &str,
) -> Result<String, ElasticsearchSinkError> {
    let unreachable = |source| ElasticsearchSinkError::Unreachable {
        endpoint: endpoint.to_owned(),
        source,
    };
    let response = client.info().send().await.map_err(unreachable)?;
    let info: serde_json::Value = bulk::json_of(response, "GET /", endpoint).await?;
    let number = info["version"]["number"].as_str().unwrap_or("unknown");
    let product = match info["version"]["distribution"].as_str() {
        Some("opensearch") => "OpenSearch",
        _ => "Elasticsearch",
    };
    let template = json!({
        "index_patterns": [pattern.wildcard()],
        "priority": 200,
        "_meta": { "managed_by": "sluice" },
        "template": {
            "mappings": {
                "dynamic": false,
                "properties": {
                    "@timestamp": { "type": "date" },
                    "id": { "type": "keyword" },
                    "app_id": { "type": "keyword" },
                    "source_type": { "type": "keyword" },
                    "source_instance": { "type": "keyword" },
                    "message_type": { "type": "keyword" },
                    "message": { "type": "text" },
                    "origin": { "type": "keyword" },
                    "deployment": { "type": "keyword" },
                    "job": { "type": "keyword" },
                    "instance": { "type": "keyword" },
                    "ip": { "type": "keyword" },
                    "app_name": { "type": "keyword" },
                    "space_name": { "type": "keyword" },
                    "org_name": { "type": "keyword" },
                    "tags": { "type": "object", "dynamic": false }
                }
            }
        }
    });
    let response = client
        .indices()
        .put_index_template(IndicesPutIndexTemplateParts::Name(&config.template))
        .body(template)
        .send()
        .await
        .map_err(unreachable)?;
    let _: serde_json::Value = bulk::json_of(response, "the index template", endpoint).await?;
    Ok(format!("{product} {number}"))
}

struct Sink<'a> {
    config: &'a ElasticsearchSinkConfig,
    client: Elasticsearch,
    pattern: IndexPattern,
    endpoint: String,
}

impl Sink<'_> {
    /// Stores `docs`: bulk requests of `batch_size`, `concurrency` at a time; items to retry
    /// go again after a backoff, rejected ones to the dead-letter file. `Some(stop)` if the
    /// sink must stop instead (shutdown while the cluster is down).
    async fn flush(
        &self,
        docs: Vec<Document>,
        ctx: &mut SinkContext,
        retry: &mut Retry,
        dead_letter: &mut DeadLetter,
    ) -> Result<Option<Stop>, ElasticsearchSinkError> {
        let total = docs.len();
        let mut pending = docs;
        while !pending.is_empty() {
            let chunks: Vec<Vec<Document>> = chunked(pending, self.config.batch_size.get());
            let requests = chunks.into_iter().map(|chunk| async move {
                let outcome = send_bulk(&self.client, &chunk, &self.endpoint).await;
                (chunk, outcome)
            });
            let results: Vec<_> = futures_util::stream::iter(requests)
                .buffer_unordered(self.config.concurrency.get())
                .collect()
                .await;
            let mut again = Vec::new();
            let mut failure = None;
            for (chunk, outcome) in results {
                match outcome {
                    Ok(BulkOutcome {
                        stored,
                        retry: retry_items,
                        rejected,
                    }) => {
                        ctx.metrics.written(StreamName::Logs, stored);
                        if !rejected.is_empty() {
                            dead_letter.write(&chunk, &rejected)?;
                            ctx.metrics.dead_lettered(rejected.len());
                            warn!(sink = %ctx.name, documents = rejected.len(),
                                file = %dead_letter.path().display(),
                                "The cluster rejected documents; they are in the dead-letter file.");
                        }
                        if !retry_items.is_empty() {
                            failure.get_or_insert_with(|| {
                                format!("{} documents answered 429/5xx", retry_items.len())
                            });
                        }
                        let mut chunk: Vec<Option<Document>> =
                            chunk.into_iter().map(Some).collect();
                        again.extend(retry_items.into_iter().filter_map(|i| chunk[i].take()));
                    }
                    Err(error) if error.is_retriable() => {
                        failure = Some(error.to_string());
                        again.extend(chunk);
                    }
                    Err(error) => {
                        ctx.metrics.dropped(chunk.len() + again.len());
                        return Err(error);
                    }
                }
            }
            pending = again;
            if let Some(reason) = failure
                && let Some(stop) = retry.wait(&reason, pending.len(), ctx).await
            {
                return Ok(Some(stop));
            }
        }
        retry.recovered(ctx);
        debug!(sink = %ctx.name, documents = total, "Flushed documents to Elasticsearch.");
        Ok(None)
    }
}

fn chunked(docs: Vec<Document>, size: usize) -> Vec<Vec<Document>> {
    let mut chunks = Vec::with_capacity(docs.len().div_ceil(size));
    let mut docs = docs.into_iter().peekable();
    while docs.peek().is_some() {
        chunks.push(docs.by_ref().take(size).collect());
    }
    chunks
}
