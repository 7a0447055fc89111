//! The live set of components whose counters the admin endpoint shows. Components are added
//! and removed while the pipeline runs (a reloaded source or sink replaces its entry).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use sluice_common::telemetry::ReasonCounters;
use sluice_common::telemetry::SinkMetrics;
use sluice_model::EventType;
use sluice_model::records::StreamName;
use sluice_sources::{BAD_RECORD_REASONS, SKIP_REASONS, SourceMetrics};

use crate::cluster::ClusterInfo;
use crate::telemetry::GraphMetrics;

/// Every running component's counters, by name.
#[derive(Debug)]
pub struct Registry {
    graph: Arc<GraphMetrics>,
    sources: RwLock<BTreeMap<String, Arc<SourceMetrics>>>,
    sinks: RwLock<BTreeMap<String, (&'static str, Arc<SinkMetrics>)>>,
    /// The API's live streams, when `[api]` serves.
    live: RwLock<Option<Arc<sluice_api::live::LiveFeed>>>,
    /// Every component of the first topology has been started: until then an empty or partial
    /// registry must not read as healthy.
    started: AtomicBool,
    /// This process's place in its cluster, once joined.
    cluster: RwLock<Option<Arc<ClusterInfo>>>,
}

impl Registry {
    pub fn new(graph: Arc<GraphMetrics>) -> Arc<Registry> {
        Arc::new(Registry {
            graph,
            sources: RwLock::default(),
            sinks: RwLock::default(),
            live: RwLock::default(),
            started: AtomicBool::new(false),
            cluster: RwLock::default(),
        })
    }

    /// The process has joined its cluster: `/metrics` shows it and its peers.
    pub fn set_cluster(&self, cluster: Arc<ClusterInfo>) {
        *write(&self.cluster) = Some(cluster);
    }

    /// The runtime has started every component of its config.
    pub fn mark_started(&self) {
        self.started.store(true, Ordering::Relaxed);
    }

    /// Adds (or replaces) the source `name`.
    pub fn add_source(&self, name: &str, metrics: Arc<SourceMetrics>) {
        write(&self.sources).insert(name.to_owned(), metrics);
    }

    /// Removes the source `name`; its counters leave `/metrics` and `/health`.
    pub fn remove_source(&self, name: &str) -> Option<Arc<SourceMetrics>> {
        write(&self.sources).remove(name)
    }

    /// Adds (or replaces) the sink `name` of type `type_name` (`"sqlite"`, ...).
    pub fn add_sink(&self, name: &str, type_name: &'static str, metrics: Arc<SinkMetrics>) {
        write(&self.sinks).insert(name.to_owned(), (type_name, metrics));
    }

    /// Removes the sink `name`; its counters leave `/metrics` and `/health`.
    pub fn remove_sink(&self, name: &str) -> Option<Arc<SinkMetrics>> {
        write(&self.sinks).remove(name).map(|(_, m)| m)
    }

    /// The API's live streams, counted in `/metrics`.
    pub fn set_live(&self, live: Arc<sluice_api::live::LiveFeed>) {
        *write(&self.live) = Some(live);
    }

    /// The figures of every component now.
    pub fn snapshot(&self) -> Snapshot {
        let graph = &self.graph;
        let watermark = graph.watermark_ns.load(Ordering::Relaxed);
        let now_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        let graph = GraphSnapshot {
            records: graph.records_in.get(),
            filtered: graph.filtered.get(),
            reloads: graph.reloads.get(),
            reload_failures: graph.reload_failures.get(),
            late: EventType::ALL
                .iter()
                .map(|kind| (kind.as_str(), graph.late(*kind)))
                .collect(),
            open_windows: graph.open_windows.load(Ordering::Relaxed),
            watermark_lag_seconds: (watermark != i64::MIN)
                .then(|| now_ns.saturating_sub(watermark) as f64 / 1e9),
            checkpoint: CheckpointSnapshot {
                written: graph.checkpoint.written.get(),
                failures: graph.checkpoint.failures.get(),
                restores: graph.checkpoint.restores.get(),
                age_seconds: graph.checkpoint.age().map(|age| age.as_secs_f64()),
                duration_seconds: graph.checkpoint.last_micros.load(Ordering::Relaxed) as f64 / 1e6,
                size_bytes: graph.checkpoint.last_bytes.load(Ordering::Relaxed),
                restored_gaps: graph.checkpoint.restored_gaps(),
            },
            metadata: MetadataSnapshot {
                listings: graph.metadata.listings.get(),
                failures: graph.metadata.failures.get(),
                retries: graph.metadata.retries.get(),
                apps: u64::try_from(graph.metadata.apps.load(Ordering::Relaxed)).ok(),
            },
        };
        let sources = read(&self.sources)
            .iter()
            .map(|(name, m)| SourceSnapshot {
                name: name.clone(),
                events: m.events.get(),
                bytes: m.bytes.get(),
                bad_records: by_reason(&m.bad_records, BAD_RECORD_REASONS),
                skipped: by_reason(&m.skipped, SKIP_REASONS),
                reconnects: m.reconnects.get(),
                slow_consumer_disconnects: m.slow_consumer_disconnects.get(),
                connected: m.connected.load(Ordering::Relaxed),
                queued_bytes: m.queued_bytes.load(Ordering::Relaxed),
                abandoned_bytes: m.abandoned_bytes.get(),
                reconnect_delay_seconds: m.reconnect_delay_ms.load(Ordering::Relaxed) as f64 / 1e3,
            })
            .collect();
        let sinks = read(&self.sinks)
            .iter()
            .map(|(name, (type_name, m))| SinkSnapshot {
                name: name.clone(),
                type_name,
                written: StreamName::ALL
                    .iter()
                    .map(|s| (s.as_str(), m.written_of(*s)))
                    .collect(),
                retries: m.retries.get(),
                dropped: m.dropped.get(),
                dead_lettered: m.dead_lettered.get(),
                buffer_skipped_bytes: m.buffer_skipped_bytes.get(),
                pending: m.pending.load(Ordering::Relaxed),
                buffer_records: m.buffered_records.load(Ordering::Relaxed),
                buffer_bytes: m.buffered_bytes.load(Ordering::Relaxed),
                oldest_pending_seconds: m.oldest_pending_age().map_or(0.0, |d| d.as_secs_f64()),
                unavailable: m.unavailable_reason(),
                retention_deleted: m.retention_deleted_by_table(),
            })
            .collect();
        let cluster = read(&self.cluster).as_ref().map(|cluster| ClusterSnapshot {
            process: cluster.process,
            processes: cluster.processes(),
            lost: cluster.health.lost().map(|lost| lost.peer),
            peers: cluster
                .addresses
                .iter()
                .zip(&cluster.traffic)
                .enumerate()
                .filter(|(index, _)| *index != cluster.process)
                .map(|(index, (address, traffic))| PeerSnapshot {
                    process: index,
                    address: address.clone(),
                    sent_bytes: traffic.sent.load(Ordering::Relaxed),
                    received_bytes: traffic.received.load(Ordering::Relaxed),
                })
                .collect(),
        });
        let api = read(&self.live)
            .as_ref()
            .map_or_else(ApiSnapshot::default, |live| {
                let (overall, per_caller) = live.refused_streams();
                ApiSnapshot {
                    streams_open: live.stream_count() as u64,
                    streams_refused_overall: overall,
                    streams_refused_per_caller: per_caller,
                }
            });
        Snapshot {
            started: self.started.load(Ordering::Relaxed),
            graph,
            sources,
            sinks,
            cluster,
            api,
            memory: crate::telemetry::memory(),
        }
    }
}

/// Every known reason (so each series exists from the start), then `other` if seen.
fn by_reason(
    counters: &ReasonCounters,
    reasons: &'static [&'static str],
) -> Vec<(&'static str, u64)> {
    let mut out: Vec<_> = reasons.iter().map(|r| (*r, counters.get(r))).collect();
    out.extend(
        counters
            .snapshot()
            .into_iter()
            .filter(|(r, _)| *r == "other"),
    );
    out
}

// The maps are replaced whole under the lock, so a panic while holding it leaves them usable.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

/// The figures of a running pipeline at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// False while the runtime is still starting its components.
    pub started: bool,
    pub graph: GraphSnapshot,
    pub sources: Vec<SourceSnapshot>,
    pub sinks: Vec<SinkSnapshot>,
    /// `None` when the process runs on its own.
    pub cluster: Option<ClusterSnapshot>,
    pub api: ApiSnapshot,
    /// The process's resident memory now and at its peak, bytes (`None` without `/proc`).
    pub memory: Option<(u64, u64)>,
}

/// A process of a cluster (SPEC §12) and what it exchanges with each peer.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSnapshot {
    pub process: usize,
    pub processes: usize,
    /// The peer lost, once one is.
    pub lost: Option<usize>,
    pub peers: Vec<PeerSnapshot>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PeerSnapshot {
    pub process: usize,
    pub address: String,
    pub sent_bytes: u64,
    pub received_bytes: u64,
}

/// The API's live streams; all zero without `[api]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApiSnapshot {
    pub streams_open: u64,
    /// Refused because `api.limits.max_streams` were open.
    pub streams_refused_overall: u64,
    /// Refused because the caller had `api.limits.max_streams_per_caller` open.
    pub streams_refused_per_caller: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GraphSnapshot {
    pub records: u64,
    /// Records removed by filters before entering the graph.
    pub filtered: u64,
    /// Config reloads applied, and rejected.
    pub reloads: u64,
    pub reload_failures: u64,
    /// Late records per event kind.
    pub late: Vec<(&'static str, u64)>,
    pub open_windows: i64,
    /// Wall clock minus the watermark; `None` before the first record.
    pub watermark_lag_seconds: Option<f64>,
    pub checkpoint: CheckpointSnapshot,
    pub metadata: MetadataSnapshot,
}

/// The Cloud Controller's listings (SPEC §11); all zero without `[metadata]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetadataSnapshot {
    pub listings: u64,
    pub failures: u64,
    pub retries: u64,
    /// Apps in the last complete listing; `None` before the first.
    pub apps: Option<u64>,
}

/// Checkpoints (SPEC §9); all zero without a state directory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckpointSnapshot {
    pub written: u64,
    pub failures: u64,
    pub restores: u64,
    /// Since the last checkpoint was written; `None` before the first.
    pub age_seconds: Option<f64>,
    /// How long the last one took to write, and its size.
    pub duration_seconds: f64,
    pub size_bytes: u64,
    /// Seconds of a live source's input missing from restored windows, per source.
    pub restored_gaps: Vec<(String, f64)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SourceSnapshot {
    pub name: String,
    pub events: u64,
    pub bytes: u64,
    pub bad_records: Vec<(&'static str, u64)>,
    pub skipped: Vec<(&'static str, u64)>,
    pub reconnects: u64,
    pub slow_consumer_disconnects: u64,
    pub connected: bool,
    /// Bytes of the source's batches waiting for the dataflow.
    pub queued_bytes: i64,
    /// Bytes of input given up on (a replay file's rest after a broken length prefix).
    pub abandoned_bytes: u64,
    /// The wait before the latest reconnect attempt.
    pub reconnect_delay_seconds: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SinkSnapshot {
    pub name: String,
    pub type_name: &'static str,
    /// Records written per stream.
    pub written: Vec<(&'static str, u64)>,
    pub retries: u64,
    pub dropped: u64,
    pub dead_lettered: u64,
    /// Bytes of corrupt disk-buffer frames skipped.
    pub buffer_skipped_bytes: u64,
    pub pending: i64,
    pub buffer_records: i64,
    pub buffer_bytes: i64,
    /// Age of the oldest record not yet written; 0 when none is pending.
    pub oldest_pending_seconds: f64,
    /// Why the store is unavailable; `None` when its last attempt succeeded.
    pub unavailable: Option<String>,
    /// Rows (indices) deleted by retention, per table (index pattern).
    pub retention_deleted: Vec<(String, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_come_and_go_at_run_time() {
        let registry = Registry::new(GraphMetrics::new());
        let source = Arc::new(SourceMetrics::default());
        source.events.add(5);
        registry.add_source("cf", source);
        registry.add_sink("db", "sqlite", Arc::new(SinkMetrics::default()));
        let snapshot = registry.snapshot();
        assert_eq!(snapshot.sources.len(), 1);
        assert_eq!(snapshot.sources[0].events, 5);
        assert_eq!(snapshot.sinks[0].type_name, "sqlite");
        assert_eq!(snapshot.graph.watermark_lag_seconds, None);

        assert!(registry.remove_source("cf").is_some());
        assert!(registry.remove_source("cf").is_none());
        assert!(registry.remove_sink("db").is_some());
        let snapshot = registry.snapshot();
        assert!(snapshot.sources.is_empty() && snapshot.sinks.is_empty());
    }
}
