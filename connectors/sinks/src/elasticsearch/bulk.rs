//! One `_bulk` request and its answer read item by item, and the dead-letter file.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use elasticsearch::http::response::Response;
use elasticsearch::{BulkParts, Elasticsearch};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use sluice_common::time::rfc3339;

use super::document::Document;
use super::{ElasticsearchSinkError, SinkName};

/// 429 (too many requests) and the 5xx a restarting or overloaded cluster answers.
pub(super) fn is_retriable_status(status: u16) -> bool {
    status == 429 || (500..600).contains(&status)
}

/// What became of a bulk request's documents, by their position in it.
#[derive(Debug, Default)]
pub(super) struct BulkOutcome {
    pub(super) stored: usize,
    /// Items answered 429/5xx: send again.
    pub(super) retry: Vec<usize>,
    /// Items rejected for good (a mapping error): position, status and the cluster's error.
    pub(super) rejected: Vec<Rejected>,
}

#[derive(Debug)]
pub(super) struct Rejected {
    pub(super) position: usize,
    pub(super) status: u16,
    pub(super) error: Box<RawValue>,
}

#[derive(Deserialize)]
struct BulkResponse {
    #[serde(default)]
    errors: bool,
    items: Vec<std::collections::HashMap<String, BulkItem>>,
}

#[derive(Deserialize)]
struct BulkItem {
    status: u16,
    #[serde(default)]
    error: Option<Box<RawValue>>,
}

/// Sends `docs` as one `_bulk` of `index` actions. A transport failure or a whole-request
/// error status is an `Err`; per-item results are in the outcome.
pub(super) async fn send_bulk(
    client: &Elasticsearch,
    docs: &[Document],
    endpoint: &str,
) -> Result<BulkOutcome, ElasticsearchSinkError> {
    if docs.is_empty() {
        return Ok(BulkOutcome::default());
    }
    let mut lines: Vec<Bytes> = Vec::with_capacity(docs.len() * 2);
    for doc in docs {
        let action = serde_json::json!({ "index": { "_index": doc.index, "_id": doc.id } });
        lines.push(Bytes::from(action.to_string()));
        lines.push(Bytes::from(doc.source.clone()));
    }
    let response = client
        .bulk(BulkParts::None)
        .body(lines)
        .send()
        .await
        .map_err(|source| ElasticsearchSinkError::Unreachable {
            endpoint: endpoint.to_owned(),
            source,
        })?;
    let answer: BulkResponse = json_of(response, "a bulk request", endpoint).await?;
    if answer.items.len() != docs.len() {
        return Err(ElasticsearchSinkError::Answer {
            endpoint: endpoint.to_owned(),
            what: "a bulk request",
            detail: format!("{} items for {} documents", answer.items.len(), docs.len()),
        });
    }
    let mut outcome = BulkOutcome::default();
    if !answer.errors {
        outcome.stored = docs.len();
        return Ok(outcome);
    }
    for (position, item) in answer.items.into_iter().enumerate() {
        let Some(item) = item.into_values().next() else {
            continue;
        };
        match item.status {
            200..=299 => outcome.stored += 1,
            status if is_retriable_status(status) => outcome.retry.push(position),
            status => outcome.rejected.push(Rejected {
                position,
                status,
                error: item.error.unwrap_or_else(|| {
                    RawValue::from_string("null".to_owned()).unwrap_or_default()
                }),
            }),
        }
    }
    Ok(outcome)
}

/// The body of a successful response as JSON, or the status and body as an error.
pub(super) async fn json_of<T: DeserializeOwned>(
    response: Response,
    what: &'static str,
    endpoint: &str,
) -> Result<T, ElasticsearchSinkError> {
    let status = response.status_code().as_u16();
    let body = response
        .bytes()
        .await
        .map_err(|e| ElasticsearchSinkError::Answer {
            endpoint: endpoint.to_owned(),
            what,
            detail: e.to_string(),
        })?;
    if !(200..300).contains(&status) {
        // Enough of the body to say what went wrong, cut on a character boundary.
        let body: String = String::from_utf8_lossy(&body).chars().take(500).collect();
        return Err(ElasticsearchSinkError::Status {
            endpoint: endpoint.to_owned(),
            what,
            status,
            body,
        });
    }
    serde_json::from_slice(&body).map_err(|e| ElasticsearchSinkError::Answer {
        endpoint: endpoint.to_owned(),
        what,
        detail: e.to_string(),
    })
}

/// Documents the cluster refused, appended as JSON lines:
/// `{"time", "sink", "index", "id", "status", "error", "document"}`.
pub(super) struct DeadLetter {
    path: PathBuf,
    sink: SinkName,
    file: Option<std::fs::File>,
}

#[derive(serde::Serialize)]
struct DeadLetterLine<'a> {
    time: String,
    sink: &'a str,
    index: &'a str,
    id: &'a str,
    status: u16,
    error: &'a RawValue,
    document: &'a RawValue,
}

impl DeadLetter {
    pub(super) fn new(path: PathBuf, sink: SinkName) -> DeadLetter {
        DeadLetter {
            path,
            sink,
            file: None,
        }
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the rejected documents of `chunk`, flushed to the file before returning.
    pub(super) fn write(
        &mut self,
        chunk: &[Document],
        rejected: &[Rejected],
    ) -> Result<(), ElasticsearchSinkError> {
        let io_error = |source| ElasticsearchSinkError::DeadLetter {
            path: self.path.clone(),
            source,
        };
        if self.file.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(io_error)?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(io_error)?;
            self.file = Some(file);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        let mut out = Vec::new();
        for item in rejected {
            let Some(doc) = chunk.get(item.position) else {
                continue;
            };
            let source = std::str::from_utf8(&doc.source)
                .ok()
                .and_then(|s| serde_json::from_str::<&RawValue>(s).ok());
            let null = RawValue::from_string("null".to_owned()).map_err(|e| io_error(e.into()))?;
            let line = DeadLetterLine {
                time: rfc3339(now),
                sink: &self.sink,
                index: &doc.index,
                id: &doc.id,
                status: item.status,
                error: &item.error,
                document: source.unwrap_or(&null),
            };
            serde_json::to_writer(&mut out, &line).map_err(|e| io_error(e.into()))?;
            out.push(b'\n');
        }
        if let Some(file) = &mut self.file {
            file.write_all(&out).map_err(io_error)?;
            file.flush().map_err(io_error)?;
        }
        Ok(())
    }
}
