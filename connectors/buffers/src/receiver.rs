//! The receiving end of a sink's buffer: its records, in the order the dataflow sent them,
//! and the acknowledgement that lets the buffer release them.
//!
//! A memory input is the channel itself. A disk input puts a thread between the channel
//! and the [`DiskWriter`]: it gathers what the dataflow sent into groups (one write and,
//! under `sync = "batch"`, one fsync each) while the sink reads frames back from the
//! [`DiskReader`] and acknowledges them with `commit`.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::runtime::RuntimeFlavor;
use tokio::sync::mpsc;
use tracing::{error, info};

use sluice_common::telemetry::SinkMetrics;

use crate::Queued;
use sluice_model::records::Records;

use crate::disk::{self, DiskBufferConfig, DiskReader, DiskWriter, Next};
use crate::memory::EventGate;
use crate::{BufferError, codec};

/// The writer thread stops gathering a group past this many payload bytes.
const GROUP_BYTES: usize = 4 << 20;

/// A sink's input. A sink calls [`BufferReceiver::commit`] after the records it received are in its
/// store; a durable buffer keeps them until then, so nothing accepted is lost to a crash or
/// an outage.
#[derive(Debug)]
pub struct BufferReceiver {
    source: Source,
    /// Records handed to the sink so far; at a commit they are all settled (SPEC §9 waits
    /// for that before a checkpoint).
    pulled: u64,
    metrics: Arc<SinkMetrics>,
}

#[derive(Debug)]
enum Source {
    Memory {
        channel: mpsc::Receiver<Queued>,
        /// `max_events`: room is given back as batches are received.
        gate: Option<(Arc<EventGate>, Arc<SinkMetrics>)>,
    },
    Disk(DiskInput),
}

/// A disk buffer's reading end, and the sink it reads for (named in errors, counting drops).
#[derive(Debug)]
struct DiskInput {
    reader: DiskReader,
    name: Arc<str>,
    metrics: Arc<SinkMetrics>,
}

impl BufferReceiver {
    pub(crate) fn memory(
        channel: mpsc::Receiver<Queued>,
        metrics: Arc<SinkMetrics>,
    ) -> BufferReceiver {
        BufferReceiver {
            pulled: 0,
            metrics,
            source: Source::Memory {
                channel,
                gate: None,
            },
        }
    }

    pub(crate) fn memory_capped(
        channel: mpsc::Receiver<Queued>,
        gate: Arc<EventGate>,
        metrics: Arc<SinkMetrics>,
    ) -> BufferReceiver {
        BufferReceiver {
            pulled: 0,
            metrics: metrics.clone(),
            source: Source::Memory {
                channel,
                gate: Some((gate, metrics)),
            },
        }
    }

    /// Opens the disk buffer and starts the thread that moves batches from `channel` into it.
    pub(crate) fn disk(
        name: Arc<str>,
        channel: mpsc::Receiver<Queued>,
        config: DiskBufferConfig,
        metrics: Arc<SinkMetrics>,
        in_flight: Arc<EventGate>,
    ) -> Result<BufferReceiver, BufferError> {
        let path = config.path.clone();
        let (writer, reader, report) = disk::open(config, metrics.clone())?;
        if report.records > 0 || !report.cut.is_empty() {
            info!(
                sink = %name,
                path = %path.display(),
                records = report.records,
                bytes = report.bytes,
                segments = report.segments,
                tails_cut = report.cut.len(),
                "Opened a disk buffer holding records from an earlier run."
            );
        }
        // Records from an earlier run are pending like the ones the dataflow will send (their
        // age in the oldest-record gauge counts from now).
        let held = usize::try_from(report.records).unwrap_or(usize::MAX);
        metrics.received(held);
        metrics.on_disk(held);
        let thread_name = name.clone();
        let thread_metrics = metrics.clone();
        std::thread::Builder::new()
            .name(format!("buffer-{name}"))
            .spawn(move || {
                fill_disk_buffer(&thread_name, channel, writer, &thread_metrics, &in_flight);
                // Nobody takes batches any more: senders waiting for room give up.
                in_flight.close();
            })
            .map_err(BufferError::io(&path))?;
        Ok(BufferReceiver {
            pulled: 0,
            metrics: metrics.clone(),
            source: Source::Disk(DiskInput {
                reader,
                name,
                metrics,
            }),
        })
    }

    /// True if what this input holds survives the process (a disk buffer): a sink may then
    /// stop at shutdown with records undelivered, and the next run delivers them.
    pub fn is_durable(&self) -> bool {
        matches!(self.source, Source::Disk(_))
    }

    /// The next batch; `None` once the dataflow has finished and everything was received.
    pub async fn recv(&mut self) -> Option<Records> {
        let records = self.next().await;
        self.pulled += records.as_ref().map_or(0, |r| r.len() as u64);
        records
    }

    async fn next(&mut self) -> Option<Records> {
        match &mut self.source {
            Source::Memory { channel, gate } => {
                let queued = channel.recv().await?;
                release(gate, &queued);
                Some(queued.records)
            }
            Source::Disk(input) => loop {
                let read = input.reader.next().await;
                if let ControlFlow::Break(records) = input.take(read) {
                    return records;
                }
            },
        }
    }

    /// The next batch if one is ready now.
    pub fn try_recv(&mut self) -> Option<Records> {
        let records = self.try_next();
        self.pulled += records.as_ref().map_or(0, |r| r.len() as u64);
        records
    }

    fn try_next(&mut self) -> Option<Records> {
        match &mut self.source {
            Source::Memory { channel, gate } => {
                // Empty and closed alike: `recv` tells the two apart when the sink waits.
                let queued = channel.try_recv().ok()?;
                release(gate, &queued);
                Some(queued.records)
            }
            Source::Disk(input) => loop {
                let read = input.reader.try_next().map(|next| match next {
                    Next::Frame { payload, records } => Some((payload, records)),
                    Next::Empty | Next::Finished => None,
                });
                if let ControlFlow::Break(records) = input.take(read) {
                    return records;
                }
            },
        }
    }

    /// Acknowledges everything received so far as written to the store: the buffer may let
    /// go of it.
    pub async fn commit(&mut self) -> Result<(), BufferError> {
        self.metrics.committed(self.pulled);
        match &mut self.source {
            Source::Memory { .. } => Ok(()),
            Source::Disk(DiskInput { reader, .. }) => {
                // A commit renames the ack file and may unlink whole segments: off the async
                // workers when the runtime has others to run them.
                let multi_thread = tokio::runtime::Handle::try_current()
                    .is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
                if multi_thread {
                    tokio::task::block_in_place(|| reader.commit())
                } else {
                    reader.commit()
                }
            }
        }
    }
}

impl Drop for BufferReceiver {
    fn drop(&mut self) {
        // Senders blocked on a full memory buffer must not wait for a sink that is gone.
        if let Source::Memory {
            gate: Some((gate, _)),
            ..
        } = &self.source
        {
            gate.close();
        }
    }
}

/// Gives a received batch's room back: the bytes its sender counted, not counted again.
fn release(gate: &Option<(Arc<EventGate>, Arc<SinkMetrics>)>, queued: &Queued) {
    if let Some((gate, metrics)) = gate {
        let (records, bytes) = (&queued.records, queued.bytes);
        gate.release(records.len(), bytes);
        metrics
            .buffered_records
            .fetch_sub(records.len() as i64, Ordering::Relaxed);
        metrics
            .buffered_bytes
            .fetch_sub(bytes as i64, Ordering::Relaxed);
    }
}

impl DiskInput {
    /// What one read (a frame's payload and record count, or none) gives the sink: `Break`
    /// with the batch, or with `None` when no frame came; `Continue` (read on) after a
    /// batch that could not be decoded, which is dropped and counted, or a corrupt frame,
    /// after which the rest of its segment is skipped.
    fn take(
        &mut self,
        read: Result<Option<(Vec<u8>, u32)>, BufferError>,
    ) -> ControlFlow<Option<Records>> {
        let (payload, records) = match read {
            Ok(Some(frame)) => frame,
            Ok(None) => return ControlFlow::Break(None),
            Err(e) => {
                error!(sink = %self.name, error = %e, "Skipped the rest of a disk buffer segment.");
                self.reader.skip_segment();
                return ControlFlow::Continue(());
            }
        };
        match codec::decode(&payload) {
            Ok(decoded) => ControlFlow::Break(Some(decoded)),
            Err(e) => {
                error!(sink = %self.name, records, error = %e, "Dropped a batch the disk buffer could not decode.");
                self.metrics.dropped(records as usize);
                ControlFlow::Continue(())
            }
        }
    }
}

/// The disk input's writer thread: runs until every sender is gone, then lets the reader
/// finish.
fn fill_disk_buffer(
    name: &str,
    mut channel: mpsc::Receiver<Queued>,
    mut writer: DiskWriter,
    metrics: &SinkMetrics,
    in_flight: &EventGate,
) {
    let mut payload = Vec::new();
    while let Some(first) = channel.blocking_recv() {
        let mut next = Some(first);
        let mut gathered = 0;
        // Records of this group, appended or dropped: all accounted for once it is written.
        let mut group = 0;
        while let Some(Queued { records, bytes }) = next.take() {
            let n = records.len();
            in_flight.release(n, bytes);
            group += n;
            payload.clear();
            let appended = codec::encode(&records, &mut payload)
                .and_then(|()| writer.append(&payload, u32::try_from(n).unwrap_or(u32::MAX)));
            match appended {
                Ok(true) => {}
                // `when_full = "drop_newest"`.
                Ok(false) => metrics.dropped(n),
                Err(e) => {
                    error!(sink = %name, records = n, error = %e, "Dropped a batch the disk buffer could not take.");
                    metrics.dropped(n);
                }
            }
            gathered += payload.len();
            if gathered < GROUP_BYTES {
                next = channel.try_recv().ok();
            }
        }
        if let Err(e) = writer.flush() {
            error!(sink = %name, error = %e, "The disk buffer could not write a group of batches.");
        }
        // Past this point a crash of the process loses none of them (a failed write was
        // logged: waiting for it would stop checkpoints for good).
        metrics.on_disk(group);
    }
    match writer.finish() {
        Ok(()) => info!(sink = %name, "Everything the dataflow sent is in the disk buffer."),
        Err(e) => {
            error!(sink = %name, error = %e, "The disk buffer could not write its last group.");
        }
    }
}
