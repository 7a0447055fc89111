//! The dataflow's own counters, and the process's memory, for the status line, the bench and
//! (later) the admin endpoint.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_common::telemetry::{Counter, RateLimit};
use sluice_model::EventType;
use sluice_operators::watermark::LateCounts;

/// Counters of the graph as a whole.
#[derive(Debug, Default)]
pub struct GraphMetrics {
    /// Records that entered the graph.
    pub records_in: Counter,
    /// Records removed by filters before entering.
    pub filtered: Counter,
    /// Config reloads applied, and rejected (a file with problems).
    pub reloads: Counter,
    pub reload_failures: Counter,
    /// How long the last reload took, from the request to the new topology running.
    pub last_reload_micros: AtomicU64,
    /// Late records per event kind, indexed like [`EventType::ALL`].
    late: [Counter; 6],
    /// The watermark in ns; `i64::MIN` before the first record. Shared with the sinks,
    /// whose retention measures age against it (SPEC §10).
    pub watermark_ns: Arc<AtomicI64>,
    /// Rollup windows open now, across workers.
    pub open_windows: Arc<AtomicI64>,
    /// Checkpoints written, failed and restored (SPEC §9).
    pub checkpoint: CheckpointMetrics,
    /// The Cloud Controller's listings (`[metadata]`, SPEC §11); all zero without one.
    pub metadata: Arc<sluice_sources::metadata::MetadataMetrics>,
}

/// What the admin endpoint and the status line show of checkpoints.
#[derive(Debug, Default)]
pub struct CheckpointMetrics {
    pub written: Counter,
    pub failures: Counter,
    /// Runs that started from a checkpoint (0 or 1 for one process).
    pub restores: Counter,
    /// Epoch, wall-clock time (ns), size (bytes) and duration (µs) of the last checkpoint
    /// written; 0 before the first.
    pub last_epoch: AtomicU64,
    pub last_at_ns: AtomicI64,
    pub last_bytes: AtomicU64,
    pub last_micros: AtomicU64,
    /// Time spent writing every checkpoint (µs), for the mean.
    pub total_micros: Counter,
    /// How long the last checkpoint waited for the sinks to store what it covers.
    pub last_wait_micros: AtomicU64,
    /// Seconds of a live source's input missing from the restored windows, per source.
    pub restored_gaps: Mutex<Vec<(String, f64)>>,
    pub(crate) failure_log: RateLimit,
    pub(crate) wait_log: RateLimit,
}

impl CheckpointMetrics {
    pub(crate) fn written(&self, epoch: u64, bytes: u64, took: Duration) {
        self.written.incr();
        self.last_epoch.store(epoch, Ordering::Relaxed);
        self.last_at_ns
            .store(sluice_common::time::now_ns(), Ordering::Relaxed);
        self.last_bytes.store(bytes, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.last_micros.store(micros, Ordering::Relaxed);
        self.total_micros.add(micros);
    }

    /// How long ago the last checkpoint was written, if one was.
    pub fn age(&self) -> Option<Duration> {
        let at = self.last_at_ns.load(Ordering::Relaxed);
        (at > 0).then(|| {
            Duration::from_nanos(
                u64::try_from(sluice_common::time::now_ns().saturating_sub(at)).unwrap_or(0),
            )
        })
    }

    pub fn restored_gaps(&self) -> Vec<(String, f64)> {
        self.restored_gaps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl GraphMetrics {
    pub fn new() -> Arc<GraphMetrics> {
        let metrics = GraphMetrics::default();
        metrics.watermark_ns.store(i64::MIN, Ordering::Relaxed);
        metrics.metadata.apps.store(-1, Ordering::Relaxed);
        Arc::new(metrics)
    }

    /// Counts one ingested batch.
    pub fn ingested(&self, records: usize, late: &LateCounts, watermark: Option<i64>) {
        self.records_in.add(records as u64);
        for (i, kind) in EventType::ALL.iter().enumerate() {
            self.late[i].add(late.get(*kind));
        }
        if let Some(watermark) = watermark {
            self.watermark_ns.store(watermark, Ordering::Relaxed);
        }
    }

    pub fn late(&self, kind: EventType) -> u64 {
        EventType::ALL
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |i| self.late[i].get())
    }

    pub fn late_total(&self) -> u64 {
        self.late.iter().map(Counter::get).sum()
    }
}

/// The process's resident set and its peak, in bytes, from `/proc/self/status` (Linux);
/// `None` elsewhere.
pub fn memory() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}
