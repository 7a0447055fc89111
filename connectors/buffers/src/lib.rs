//! Buffers between the dataflow and a sink's store (SPEC §8).
//!
//! A buffer has two ends, both here: the dataflow queues batches into a [`BufferSender`]
//! (waiting while the sink is behind), and a sink reads them from a [`BufferReceiver`] and
//! calls `commit` once what it received is in its store. With a `memory` buffer (the default) the
//! records wait in a bounded channel; with a `disk` buffer they wait in a durable segmented
//! queue and leave it only when committed, so a store outage or `kill -9` loses nothing that
//! was accepted.
//!
//! Layout:
//! - this file — [`open`], which makes both ends from a sink's `buffer = { ... }`
//!   ([`BufferConfig`]), and [`BufferError`];
//! - [`sender`] and [`receiver`] — the two ends;
//! - [`disk`] — the segmented on-disk queue, a folder split along its seams: `frame` (the
//!   frame layout and checksum), `segment` (segment files and the torn-tail cut on open),
//!   `ledger` (the `ack` and `format` files), `writer` and `reader` (its two ends);
//! - [`codec`] — [`Records`](sluice_model::records::Records) to and from frame payloads;
//! - [`memory`] — the cap on a memory buffer's records.

pub mod codec;
pub mod disk;
pub mod memory;
pub mod receiver;
pub mod sender;

pub use receiver::BufferReceiver;
pub use sender::BufferSender;

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use sluice_common::config::ByteSize;
use sluice_common::telemetry::SinkMetrics;
use sluice_model::records::Records;
use tokio::sync::mpsc;

use crate::disk::DiskBufferConfig;
use crate::memory::EventGate;

/// `buffer = { type = "memory" | "disk", ... }` of a sink.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum BufferConfig {
    /// Records wait in memory; lost on a crash.
    Memory {
        /// Records held at most before `when_full` applies.
        #[serde(default = "default_max_events")]
        max_events: usize,
        /// Bytes held at most (as the records' approximate size) before `when_full` applies:
        /// big log lines fill it long before `max_events`. Default `"64MiB"`.
        #[serde(default = "default_max_bytes")]
        max_bytes: ByteSize,
        #[serde(default)]
        when_full: WhenFull,
    },
    /// Records wait in an append-only segmented queue on disk until the sink commits them.
    Disk {
        /// The buffer's directory; created when absent. One sink per directory.
        path: PathBuf,
        /// The cap on the bytes held (`"2GiB"`).
        #[serde(default = "default_max_size")]
        max_size: ByteSize,
        #[serde(default)]
        when_full: WhenFull,
        /// When appended records are fsynced.
        #[serde(default)]
        sync: SyncPolicy,
        /// A segment file is closed and a new one begun past this size; a segment is deleted
        /// once every record in it is acknowledged.
        #[serde(default = "default_segment_size")]
        segment_size: ByteSize,
    },
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig::Memory {
            max_events: default_max_events(),
            max_bytes: default_max_bytes(),
            when_full: WhenFull::default(),
        }
    }
}

impl BufferConfig {
    /// What is wrong with the buffer's sizes, each with its key: a zero-sized buffer holds
    /// nothing (every batch would wait for ever or be dropped).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        match self {
            BufferConfig::Memory {
                max_events,
                max_bytes,
                ..
            } => {
                if *max_events == 0 {
                    problems.push(("max_events", "must be at least 1".to_owned()));
                }
                if max_bytes.0 < 1 << 10 {
                    problems.push(("max_bytes", "must be at least 1KiB".to_owned()));
                }
            }
            BufferConfig::Disk {
                path,
                max_size,
                segment_size,
                ..
            } => {
                if path.as_os_str().is_empty() {
                    problems.push(("path", "must not be empty".to_owned()));
                }
                if max_size.0 < 1 << 20 {
                    problems.push(("max_size", "must be at least 1MiB".to_owned()));
                }
                if segment_size.0 < 1 << 10 {
                    problems.push(("segment_size", "must be at least 1KiB".to_owned()));
                } else if segment_size > max_size {
                    problems.push((
                        "segment_size",
                        format!("must not exceed max_size ({} bytes)", max_size.0),
                    ));
                }
            }
        }
        problems
    }
}

/// A sink's buffer as `config` describes it: the end the dataflow sends into, and the end the
/// sink named `name` reads from. A disk buffer is opened here (cutting a torn tail, keeping
/// what an earlier run left) and filled by a thread of its own from a channel of `capacity`
/// batches.
pub fn open(
    name: &Arc<str>,
    capacity: usize,
    config: &BufferConfig,
    metrics: Arc<SinkMetrics>,
) -> Result<(BufferSender, BufferReceiver), BufferError> {
    let (tx, rx) = mpsc::channel(capacity);
    let (receiver, gate) = match config {
        BufferConfig::Memory {
            max_events,
            max_bytes,
            when_full,
        } => {
            let gate = Arc::new(EventGate::new(*max_events, max_bytes.0, *when_full));
            let receiver = BufferReceiver::memory_capped(rx, gate.clone(), metrics.clone());
            (receiver, Some(gate))
        }
        BufferConfig::Disk {
            path,
            max_size,
            when_full,
            sync,
            segment_size,
        } => {
            let config = DiskBufferConfig {
                path: path.clone(),
                max_size: max_size.0,
                segment_size: segment_size.0,
                when_full: *when_full,
                sync: *sync,
            };
            // The batches on their way to the disk writer's thread are capped in bytes too.
            let gate = Arc::new(EventGate::new(
                usize::MAX,
                DISK_IN_FLIGHT_BYTES,
                WhenFull::Block,
            ));
            let receiver =
                BufferReceiver::disk(name.clone(), rx, config, metrics.clone(), gate.clone())?;
            return Ok((
                BufferSender::new(tx, metrics, Some(gate)).without_gauges(),
                receiver,
            ));
        }
    };
    Ok((BufferSender::new(tx, metrics, gate), receiver))
}

/// A memory buffer of `capacity` batches with no cap on records: for tests and benchmarks.
pub fn unbounded_memory(
    capacity: usize,
    metrics: Arc<SinkMetrics>,
) -> (BufferSender, BufferReceiver) {
    let (tx, rx) = mpsc::channel(capacity);
    (
        BufferSender::new(tx, metrics.clone(), None),
        BufferReceiver::memory(rx, metrics),
    )
}

/// A batch on its way from the dataflow to the sink, with the bytes its sender counted
/// against the buffer's cap: the receiver gives back exactly those, without counting again.
#[derive(Debug)]
pub(crate) struct Queued {
    records: Records,
    bytes: u64,
}

/// The bytes of batches on their way from the dataflow to a disk buffer's writer thread, at
/// most (then the dataflow waits, as for a full memory buffer).
pub const DISK_IN_FLIGHT_BYTES: u64 = 32 << 20;

const fn default_max_events() -> usize {
    100_000
}

const fn default_max_bytes() -> ByteSize {
    ByteSize(64 << 20)
}

const fn default_max_size() -> ByteSize {
    ByteSize(2 << 30)
}

const fn default_segment_size() -> ByteSize {
    ByteSize(64 << 20)
}

/// What a full buffer does with more records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Waits for room: backpressure travels to the sources.
    #[default]
    Block,
    /// Drops the records that do not fit, and counts them.
    DropNewest,
}

/// When a disk buffer fsyncs what it appended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncPolicy {
    /// After every appended batch, before the batch counts as accepted.
    #[default]
    Batch,
    /// At most once a second.
    Interval,
    /// Left to the operating system.
    None,
}

/// Why a buffer could not take, give or release records.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("disk buffer {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A frame whose checksum or length is wrong, found while reading (open cuts such tails).
    #[error("disk buffer {}: corrupt frame at offset {offset}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: &'static str,
    },
    #[error("disk buffer {}: a batch of {bytes} bytes does not fit in a frame", path.display())]
    FrameTooLarge { path: PathBuf, bytes: usize },
    #[error("records could not be encoded for the disk buffer: {0}")]
    Encode(postcard::Error),
    #[error("disk buffer {}: the sink stopped reading; the buffer keeps what it holds", path.display())]
    ReaderGone { path: PathBuf },
    /// The buffer holds records in another layout than this build's (see
    /// [`codec::FORMAT`]): reading them would decode garbage, so nothing is read or deleted.
    #[error(
        "disk buffer {}: it holds records written in {found}, and this Sluice reads {expected}; \
         deliver them with the version that wrote them, or move the directory away to start empty",
        path.display()
    )]
    Format {
        path: PathBuf,
        found: String,
        expected: &'static str,
    },
}

impl BufferError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> BufferError {
        let path = path.into();
        move |source| BufferError::Io { path, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_config_defaults_to_memory_and_reads_disk() {
        let config: BufferConfig = toml::from_str(
            r#"type = "disk"
path = "buffers/db"
max_size = "1GiB"
when_full = "drop_newest""#,
        )
        .expect("a disk buffer config");
        assert_eq!(
            config,
            BufferConfig::Disk {
                path: "buffers/db".into(),
                max_size: ByteSize(1 << 30),
                when_full: WhenFull::DropNewest,
                sync: SyncPolicy::Batch,
                segment_size: ByteSize(64 << 20),
            }
        );
        assert!(matches!(
            BufferConfig::default(),
            BufferConfig::Memory { .. }
        ));
    }
}
