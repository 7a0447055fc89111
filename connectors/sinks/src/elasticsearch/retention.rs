//! Retention in Elasticsearch (SPEC §10): whole indices of the sink's own pattern are deleted
//! once the period their name covers (a day for `logs-%Y.%m.%d`) ended more than `logs`
//! before the pipeline's watermark. Nothing else is ever deleted:
//!
//! - the sink creates each index itself before its first document (`PUT /<index>` with
//!   `_meta.created_by = "sluice"` and the pattern in the index's mapping), so an index some
//!   other program created — even one whose name fits the pattern — lacks the mark; an index
//!   that already exists is left as it is (marked if an earlier run of the sink made it);
//! - only names the pattern produces exactly are considered (`logs-2026.01.01`, not
//!   `logs-2026.01.01-restored` nor `logs-old`), found with `GET /<prefix>*/_mapping`.
//!
//! Every deleted index is counted in `sluice_sink_retention_deleted_total{table=<pattern>}`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use elasticsearch::Elasticsearch;
use elasticsearch::indices::{IndicesCreateParts, IndicesDeleteParts, IndicesGetMappingParts};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use super::IndexPattern;
use sluice_common::telemetry::SinkMetrics;

/// `retention = { ... }` of an `elasticsearch` sink.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndexRetentionConfig {
    /// Off, indices are kept (an ILM policy or a curator deletes them, or nothing does).
    pub enabled: bool,
    /// How long log lines are kept: an index goes once its whole period is older.
    #[serde(with = "sluice_common::config::duration")]
    pub logs: Duration,
    /// How often (wall clock) the sink lists its indices for expired ones.
    #[serde(with = "sluice_common::config::duration")]
    pub interval: Duration,
}

impl Default for IndexRetentionConfig {
    fn default() -> Self {
        IndexRetentionConfig {
            enabled: true,
            logs: Duration::from_secs(14 * 24 * 3600),
            interval: Duration::from_secs(60),
        }
    }
}

/// The mark the sink puts in the mapping of every index it creates.
const CREATED_BY: &str = "sluice";

/// One sink's index retention: which indices it made sure exist, and when it last looked.
pub(super) struct IndexRetention {
    config: IndexRetentionConfig,
    pattern: IndexPattern,
    /// Indices known to exist (created now, or found existing).
    known: HashSet<String>,
    checked: Option<Instant>,
}

impl IndexRetention {
    pub(super) fn new(config: IndexRetentionConfig, pattern: IndexPattern) -> IndexRetention {
        IndexRetention {
            config,
            pattern,
            known: HashSet::new(),
            checked: None,
        }
    }

    /// Creates, marked as the sink's, every index of `indices` not known to exist yet. An
    /// index that exists already is left alone. A cluster that is down or busy is an error to
    /// wait out like a failed bulk request (the reason); any other refusal is logged and
    /// left to the bulk request, which creates the index unmarked: never deleted, the safe
    /// side.
    pub(super) async fn create_indices<'a>(
        &mut self,
        client: &Elasticsearch,
        indices: impl Iterator<Item = &'a str>,
        sink: &str,
    ) -> Result<(), String> {
        if !self.config.enabled {
            return Ok(());
        }
        let mut new: Vec<String> = indices
            .filter(|i| !self.known.contains(*i))
            .map(str::to_owned)
            .collect();
        new.sort();
        new.dedup();
        for index in new {
            let body = json!({
                "mappings": { "_meta": { "created_by": CREATED_BY, "pattern": self.pattern.as_str() } }
            });
            let response = client
                .indices()
                .create(IndicesCreateParts::Index(&index))
                .body(body)
                .send()
                .await
                .map_err(|e| format!("cannot create index {index}: {e}"))?;
            let status = response.status_code().as_u16();
            let text = response.text().await.unwrap_or_default();
            if (200..300).contains(&status) {
                debug!(%sink, %index, "Created the index.");
                self.known.insert(index);
            } else if text.contains("resource_already_exists_exception") {
                self.known.insert(index);
            } else if super::bulk::is_retriable_status(status) {
                return Err(format!("creating index {index} answered HTTP {status}"));
            } else {
                warn!(%sink, %index, status, body = %text.chars().take(300).collect::<String>(),
                    "Cannot create the index; the bulk request will, and retention will leave it alone.");
                self.known.insert(index);
            }
        }
        Ok(())
    }

    /// Whether a pass is due.
    pub(super) fn due(&self) -> bool {
        self.config.enabled
            && self
                .checked
                .is_none_or(|at| at.elapsed() >= self.config.interval)
    }

    /// Deletes the sink's indices whose period ended before `watermark − logs`. Failures are
    /// logged and tried again at the next pass; they never stop the sink.
    pub(super) async fn pass(
        &mut self,
        client: &Elasticsearch,
        watermark: Option<i64>,
        sink: &str,
        metrics: &SinkMetrics,
    ) {
        let Some(watermark) = watermark.filter(|_| self.config.enabled) else {
            return;
        };
        self.checked = Some(Instant::now());
        let keep = i64::try_from(self.config.logs.as_nanos()).unwrap_or(i64::MAX);
        let cutoff = watermark.saturating_sub(keep);
        let expired = match self.expired(client, cutoff).await {
            Ok(expired) => expired,
            Err(error) => {
                metrics.retries.incr();
                warn!(%sink, %error, "Retention: cannot list the indices; trying again next interval.");
                return;
            }
        };
        for index in expired {
            let response = client
                .indices()
                .delete(IndicesDeleteParts::Index(&[index.as_str()]))
                .send()
                .await;
            match response.map(|r| r.status_code().as_u16()) {
                Ok(status) if (200..300).contains(&status) || status == 404 => {
                    metrics.retention_deleted(self.pattern.as_str(), 1);
                    self.known.remove(&index);
                    info!(%sink, %index, "Retention: deleted an expired index.");
                }
                Ok(status) => {
                    metrics.retries.incr();
                    warn!(%sink, %index, status, "Retention: cannot delete the index; trying again next interval.");
                }
                Err(error) => {
                    metrics.retries.incr();
                    warn!(%sink, %index, %error, "Retention: cannot delete the index; trying again next interval.");
                }
            }
        }
    }

    /// The sink's indices (marked, named by its pattern) whose period ended at or before
    /// `cutoff`.
    async fn expired(
        &self,
        client: &Elasticsearch,
        cutoff: i64,
    ) -> Result<Vec<String>, elasticsearch::Error> {
        let wildcard = self.pattern.wildcard();
        let response = client
            .indices()
            .get_mapping(IndicesGetMappingParts::Index(&[wildcard.as_str()]))
            .send()
            .await?;
        let mappings: Value = response.json().await?;
        let Some(indices) = mappings.as_object() else {
            return Ok(Vec::new());
        };
        let mut expired: Vec<String> = indices
            .iter()
            .filter(|(_, mapping)| {
                let meta = &mapping["mappings"]["_meta"];
                meta["created_by"] == CREATED_BY && meta["pattern"] == self.pattern.as_str()
            })
            .filter(|(name, _)| {
                self.pattern
                    .period_end(name)
                    .is_some_and(|end| end <= cutoff)
            })
            .map(|(name, _)| name.clone())
            .collect();
        expired.sort();
        Ok(expired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_reads_its_keys() {
        let config: IndexRetentionConfig =
            toml::from_str("logs = \"2d\"").expect("a retention config");
        assert_eq!(config.logs, Duration::from_secs(2 * 24 * 3600));
        assert!(config.enabled);
        assert!(toml::from_str::<IndexRetentionConfig>("raw = \"2d\"").is_err());
    }
}
