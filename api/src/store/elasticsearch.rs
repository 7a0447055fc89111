//! Log search in the `elasticsearch` sink's indices, through the client the sink builds (its
//! auth, CA and TLS settings), over every index the sink's pattern names (`logs-*`).

use std::time::UNIX_EPOCH;

use elasticsearch::{Elasticsearch, SearchParts};
use serde_json::{Value, json};
use sluice_common::time::rfc3339;
use sluice_sinks::elasticsearch::{ElasticsearchSinkConfig, IndexPattern, client};
use tracing::warn;

use super::{LogLine, LogPage, LogQuery, StoreError};
use crate::ApiError;
use crate::params::Cursor;

#[derive(Debug)]
pub(super) struct EsReader {
    client: Elasticsearch,
    /// `logs-*` for `logs-%Y.%m.%d`.
    indices: String,
    /// `host:port`, for messages.
    endpoint: String,
    /// `api.limits.query_timeout`: a search not answered by then is abandoned (503).
    timeout: std::time::Duration,
}

impl EsReader {
    /// Builds the client; nothing is sent until a query.
    pub(super) fn open(
        config: &ElasticsearchSinkConfig,
        timeout: std::time::Duration,
    ) -> Result<EsReader, StoreError> {
        let pattern = IndexPattern::parse(&config.index)?;
        Ok(EsReader {
            client: client(config)?,
            indices: pattern.wildcard(),
            endpoint: config.endpoint(),
            timeout,
        })
    }

    /// Filters (app, time range, every term as a word of the analysed message), newest first by
    /// `@timestamp` then the log id, paged with `search_after`.
    ///
    /// A term must match a whole word here (the message is a `text` field), where SQLite's
    /// LIKE matches any substring: `order` finds "Processed order 7" in both, `ord` only in
    /// SQLite. Both ignore case.
    pub(super) async fn logs(&self, query: LogQuery<'_>) -> Result<LogPage, ApiError> {
        let (from, to) = query.range.ns();
        let mut filter = vec![
            json!({ "term": { "app_id": query.app_id } }),
            json!({ "range": { "@timestamp": { "gte": rfc3339(from), "lt": rfc3339(to) } } }),
        ];
        if let Some(terms) = query.terms {
            filter.push(json!({ "match": { "message": {
                "query": terms.join(" "),
                "operator": "and",
            } } }));
        }
        let mut body = json!({
            "size": query.limit + 1,
            "track_total_hits": false,
            "query": { "bool": { "filter": filter } },
            "sort": [
                { "@timestamp": { "order": "desc" } },
                { "id": { "order": "desc", "missing": "_last", "unmapped_type": "keyword" } },
            ],
        });
        if let Some(cursor) = &query.cursor {
            body["search_after"] = json!([cursor.time, cursor.id]);
        }
        let unreachable = |e: &dyn std::fmt::Display| {
            ApiError::unavailable(format!(
                "Elasticsearch at {} is unreachable: {e}",
                self.endpoint
            ))
        };
        let search = async {
            let response = self
                .client
                .search(SearchParts::Index(&[&self.indices]))
                .ignore_unavailable(true)
                .allow_no_indices(true)
                .body(body)
                .send()
                .await?;
            let status = response.status_code();
            Ok::<_, elasticsearch::Error>((status, response.text().await))
        };
        let (status, text) = tokio::time::timeout(self.timeout, search)
            .await
            .map_err(|_| {
                ApiError::unavailable(format!(
                    "the search of Elasticsearch at {} ran out of its {} budget \
                     (api.limits.query_timeout) and was abandoned: ask for a shorter range or \
                     fewer terms",
                    self.endpoint,
                    humantime::format_duration(self.timeout)
                ))
            })?
            .map_err(|e| unreachable(&e))?;
        let answer: Value = match text {
            Ok(text) if status.is_success() => {
                serde_json::from_str(&text).map_err(|e| self.bad_answer(&e))?
            }
            Ok(text) => return Err(self.status_error(status.as_u16(), &text)),
            Err(e) => return Err(unreachable(&e)),
        };
        let hits = answer["hits"]["hits"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut logs = Vec::with_capacity(hits.len());
        let mut sorts = Vec::with_capacity(hits.len());
        for hit in &hits {
            logs.push(self.line(hit)?);
            sorts.push(&hit["sort"]);
        }
        let next_cursor = if logs.len() > query.limit {
            logs.truncate(query.limit);
            let sort = sorts[query.limit - 1];
            match (sort[0].as_i64(), sort[1].as_str()) {
                (Some(time), Some(id)) => Some(
                    Cursor {
                        time,
                        id: id.to_owned(),
                    }
                    .encode(),
                ),
                _ => return Err(self.bad_answer(&format!("unexpected sort values {sort}"))),
            }
        } else {
            None
        };
        Ok(LogPage { logs, next_cursor })
    }

    fn line(&self, hit: &Value) -> Result<LogLine, ApiError> {
        let source = &hit["_source"];
        let text = |field: &str| source[field].as_str().unwrap_or_default().to_owned();
        let timestamp = source["@timestamp"].as_str().unwrap_or_default();
        let time_ns = humantime::parse_rfc3339(timestamp)
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .and_then(|d| i64::try_from(d.as_nanos()).ok())
            .ok_or_else(|| {
                self.bad_answer(&format!(
                    "a document's @timestamp {timestamp:?} is not RFC 3339"
                ))
            })?;
        Ok(LogLine {
            id: hit["_id"].as_str().unwrap_or_default().to_owned(),
            time_ns,
            source_type: text("source_type"),
            source_instance: text("source_instance"),
            message_type: text("message_type"),
            message: text("message"),
        })
    }

    fn bad_answer(&self, detail: &dyn std::fmt::Display) -> ApiError {
        warn!(endpoint = %self.endpoint, %detail, "Elasticsearch answered a log search oddly.");
        ApiError::new(
            axum::http::StatusCode::BAD_GATEWAY,
            format!(
                "Elasticsearch at {} answered the log search with something unexpected: {detail}",
                self.endpoint
            ),
        )
    }

    fn status_error(&self, status: u16, body: &str) -> ApiError {
        let body: String = body.chars().take(500).collect();
        let message = format!(
            "Elasticsearch at {} answered the log search with HTTP {status}: {body}",
            self.endpoint
        );
        if status == 429 || status >= 500 {
            ApiError::unavailable(message)
        } else {
            warn!(endpoint = %self.endpoint, status, %body, "Elasticsearch refused a log search.");
            ApiError::new(axum::http::StatusCode::BAD_GATEWAY, message)
        }
    }
}
