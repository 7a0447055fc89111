//! The disk buffer's write and read throughput next to a plain sequential file write of the
//! same bytes, in the same run, on the same file system. Prints a table.
//!
//! `cargo bench -p sluice-buffers --bench disk_buffer` (set `SLUICE_BENCH_DIR` to measure
//! another file system than the temporary directory's).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_buffers::codec;
use sluice_buffers::disk::{self, DiskBufferConfig, FRAME_HEADER, Next};
use sluice_buffers::{SyncPolicy, WhenFull};
use sluice_common::telemetry::SinkMetrics;
use sluice_model::event::{Header, LogMessage, MessageType};
use sluice_model::records::Records;
use sluice_model::{Event, Payload, Str};

const RECORDS: usize = 400_000;
const BATCH: usize = 1_000;
/// What the buffer's writer thread gathers into one write (and one fsync) at most.
const GROUP_BYTES: usize = 4 << 20;

fn log_batches() -> Vec<Records> {
    let header = Header {
        origin: Str::from("rep"),
        deployment: Str::from("cf"),
        job: Str::from("diego_cell"),
        index: Str::from("3"),
        ip: Str::from("10.0.16.4"),
        tags: Default::default(),
    };
    let events: Vec<Event> = (0..RECORDS)
        .map(|i| Event {
            timestamp: 1_710_234_017_448_058_219 + i as i64 * 1_000,
            header: header.clone(),
            payload: Payload::Log(LogMessage {
                names: None,
                message: Bytes::from(format!(
                    "2024-03-12T09:00:17Z GET /api/v1/orders/{i} 200 12ms user-agent=curl/8"
                )),
                message_type: MessageType::Out,
                timestamp: 1_710_234_017_448_058_219 + i as i64 * 1_000,
                app_id: Str::from(format!("app-{:04}", i % 500)),
                source_type: Str::from("APP/PROC/WEB"),
                source_instance: Str::from("0"),
            }),
        })
        .collect();
    events
        .chunks(BATCH)
        .map(|c| Records::Logs(c.to_vec()))
        .collect()
}

struct Row {
    what: &'static str,
    bytes: u64,
    records: u64,
    took: Duration,
}

fn config(dir: &Path, sync: SyncPolicy) -> DiskBufferConfig {
    DiskBufferConfig {
        path: dir.to_owned(),
        max_size: u64::MAX,
        segment_size: 64 << 20,
        when_full: WhenFull::Block,
        sync,
    }
}

/// Appends every payload, flushing once `group_bytes` are gathered (and at the end).
fn write_buffer(
    dir: &Path,
    sync: SyncPolicy,
    payloads: &[Vec<u8>],
    group_bytes: usize,
) -> Duration {
    let started = Instant::now();
    let (mut writer, _reader, _) =
        disk::open(config(dir, sync), Arc::new(SinkMetrics::default())).expect("opens");
    let mut gathered = 0;
    for payload in payloads {
        assert!(writer.append(payload, BATCH as u32).expect("appends"));
        gathered += payload.len();
        if gathered >= group_bytes {
            writer.flush().expect("flushes");
            gathered = 0;
        }
    }
    writer.finish().expect("finishes");
    started.elapsed()
}

/// Reads every frame back, decodes it and commits it, as a sink does.
fn read_buffer(dir: &Path) -> (Duration, u64) {
    let started = Instant::now();
    let (writer, mut reader, _) = disk::open(
        config(dir, SyncPolicy::None),
        Arc::new(SinkMetrics::default()),
    )
    .expect("opens");
    drop(writer);
    let mut records = 0;
    while let Next::Frame { payload, .. } = reader.try_next().expect("reads") {
        let batch = codec::decode(&payload).expect("decodes");
        records += batch.len() as u64;
        reader.commit().expect("commits");
    }
    (started.elapsed(), records)
}

/// A plain sequential write of `frames` in chunks of `group_bytes`, fsynced after each chunk
/// or only once at the end.
fn write_plain(path: &Path, frames: &[u8], group_bytes: usize, fsync_each: bool) -> Duration {
    let started = Instant::now();
    let mut file = std::fs::File::create(path).expect("creates");
    for chunk in frames.chunks(group_bytes) {
        file.write_all(chunk).expect("writes");
        if fsync_each {
            file.sync_data().expect("fsyncs");
        }
    }
    file.sync_data().expect("fsyncs");
    started.elapsed()
}

fn main() {
    let base = std::env::var_os("SLUICE_BENCH_DIR")
        .map(Into::into)
        .unwrap_or_else(std::env::temp_dir);
    let scratch = tempfile::tempdir_in(&base).expect("scratch dir");
    let batches = log_batches();

    let started = Instant::now();
    let payloads: Vec<Vec<u8>> = batches
        .iter()
        .map(|b| {
            let mut out = Vec::new();
            codec::encode(b, &mut out).expect("encodes");
            out
        })
        .collect();
    let encode = started.elapsed();
    let bytes: u64 = payloads
        .iter()
        .map(|p| (p.len() + FRAME_HEADER) as u64)
        .sum();
    // The plain file gets the same number of bytes the buffer writes.
    let plain_bytes = vec![0x5a_u8; bytes as usize];
    let records = RECORDS as u64;
    let row = |what, took| Row {
        what,
        bytes,
        records,
        took,
    };

    let mut rows = vec![row("encode (postcard)", encode)];
    rows.push(row(
        "plain file write + 1 fsync",
        write_plain(
            &scratch.path().join("plain-1"),
            &plain_bytes,
            GROUP_BYTES,
            false,
        ),
    ));
    rows.push(row(
        "plain file write, fsync per 4 MiB",
        write_plain(
            &scratch.path().join("plain-n"),
            &plain_bytes,
            GROUP_BYTES,
            true,
        ),
    ));
    let batch_dir = scratch.path().join("batch");
    rows.push(row(
        "disk buffer write, sync=batch (4 MiB groups)",
        write_buffer(&batch_dir, SyncPolicy::Batch, &payloads, GROUP_BYTES),
    ));
    rows.push(row(
        "disk buffer write, sync=batch (1 batch a group)",
        write_buffer(
            &scratch.path().join("batch-1"),
            SyncPolicy::Batch,
            &payloads,
            1,
        ),
    ));
    rows.push(row(
        "disk buffer write, sync=none",
        write_buffer(
            &scratch.path().join("none"),
            SyncPolicy::None,
            &payloads,
            GROUP_BYTES,
        ),
    ));
    let (read, read_records) = read_buffer(&batch_dir);
    assert_eq!(read_records, records);
    rows.push(row("disk buffer read + decode + commit per batch", read));

    println!(
        "{} records in batches of {BATCH}, {:.1} MiB framed, in {}",
        RECORDS,
        bytes as f64 / (1 << 20) as f64,
        base.display()
    );
    println!("{:<48} {:>10} {:>12} {:>14}", "", "ms", "MB/s", "records/s");
    for row in rows {
        let secs = row.took.as_secs_f64();
        println!(
            "{:<48} {:>10.1} {:>12.1} {:>14.0}",
            row.what,
            secs * 1e3,
            row.bytes as f64 / secs / 1e6,
            row.records as f64 / secs
        );
    }
}
