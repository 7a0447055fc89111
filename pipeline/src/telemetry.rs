//! The dataflow's own counters, and the process's memory, for the status line, the bench and
//! (later) the admin endpoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use sluice_common::telemetry::Counter;
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
    /// The watermark in ns; `i64::MIN` before the first record.
    pub watermark_ns: AtomicI64,
    /// Rollup windows open now, across workers.
    pub open_windows: Arc<AtomicI64>,
}

impl GraphMetrics {
    pub fn new() -> Arc<GraphMetrics> {
        let metrics = GraphMetrics::default();
        metrics.watermark_ns.store(i64::MIN, Ordering::Relaxed);
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
