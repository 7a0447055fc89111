//! The sending end of a sink's buffer: the dataflow queues batches here, waiting while the
//! sink is behind, so backpressure reaches the sources.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use sluice_common::telemetry::SinkMetrics;
use sluice_model::records::Records;
use tokio::sync::mpsc;

use crate::Queued;
use crate::memory::{Admit, EventGate};

/// The sending end of a sink's buffer, held by the dataflow's output operators.
#[derive(Clone, Debug)]
pub struct BufferSender {
    tx: mpsc::Sender<Queued>,
    metrics: Arc<SinkMetrics>,
    /// A memory buffer's `max_events` and `max_bytes`; a disk buffer's bytes in flight.
    gate: Option<Arc<EventGate>>,
    /// Whether the gate's records and bytes are the sink's buffer gauges (a memory buffer);
    /// a disk buffer publishes its own.
    gauges: bool,
}

impl BufferSender {
    /// Queues a batch, blocking the calling (timely worker) thread while the sink is behind:
    /// backpressure travels from a slow store through the dataflow to the sources. Returns
    /// false if the sink has stopped.
    pub fn send_blocking(&self, records: Records) -> bool {
        if records.is_empty() {
            return true;
        }
        let n = records.len() as i64;
        let gauges = self.gauges;
        let bytes = if self.gate.is_some() {
            records.approx_bytes() as u64
        } else {
            0
        };
        if let Some(gate) = &self.gate {
            match gate.take(records.len(), bytes) {
                Admit::Queued if gauges => {
                    self.metrics
                        .buffered_records
                        .fetch_add(n, Ordering::Relaxed);
                    self.metrics
                        .buffered_bytes
                        .fetch_add(bytes as i64, Ordering::Relaxed);
                }
                Admit::Queued => {}
                Admit::Dropped => {
                    self.metrics.dropped.add(n as u64);
                    return true;
                }
                Admit::Closed => {
                    self.metrics.dropped.add(n as u64);
                    return false;
                }
            }
        }
        self.metrics.received(n as usize);
        if self.tx.blocking_send(Queued { records, bytes }).is_err() {
            // The sink stopped on a non-retriable error (and said so): count what it misses.
            self.metrics.unsent(n as usize);
            if let Some(gate) = &self.gate {
                gate.release(n as usize, bytes);
            }
            if self.gate.is_some() && gauges {
                self.metrics
                    .buffered_records
                    .fetch_sub(n, Ordering::Relaxed);
                self.metrics
                    .buffered_bytes
                    .fetch_sub(bytes as i64, Ordering::Relaxed);
            }
            return false;
        }
        true
    }
}

impl BufferSender {
    /// The counters of the sink this buffer feeds.
    pub fn metrics(&self) -> &Arc<SinkMetrics> {
        &self.metrics
    }

    pub(crate) fn new(
        tx: mpsc::Sender<Queued>,
        metrics: Arc<SinkMetrics>,
        gate: Option<Arc<EventGate>>,
    ) -> BufferSender {
        BufferSender {
            tx,
            metrics,
            gate,
            gauges: true,
        }
    }

    /// The gate bounds what is in flight but is not the buffer's gauges (a disk buffer).
    pub(crate) fn without_gauges(mut self) -> BufferSender {
        self.gauges = false;
        self
    }
}
