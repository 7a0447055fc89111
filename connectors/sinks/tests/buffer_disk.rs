//! The disk buffer behind a sink's input: order, acknowledgement, redelivery after a crash,
//! the cap, and a sqlite sink that ends with every row stored and the buffer gone.

use std::path::Path;

use bytes::Bytes;
use sluice_buffers::{BufferConfig, BufferSender, SyncPolicy, WhenFull};
use sluice_common::config::ByteSize;
use sluice_model::Payload;
use sluice_model::records::Records;
use sluice_model::records::StreamName;
use sluice_sinks::SinkContext;
use sluice_sinks::sqlite::{self, SqliteSinkConfig};
use sluice_test_support::fixtures::*;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Row};
use tokio_util::sync::CancellationToken;

fn disk(path: &Path, max_size: u64, when_full: WhenFull) -> BufferConfig {
    BufferConfig::Disk {
        path: path.to_owned(),
        max_size: ByteSize(max_size),
        when_full,
        sync: SyncPolicy::Batch,
        // Small segments, so a few batches span several of them.
        segment_size: ByteSize(4096),
    }
}

fn context(buffer: &BufferConfig) -> (SinkContext, BufferSender) {
    SinkContext::with_buffer("test", 4, buffer, CancellationToken::new()).expect("the buffer opens")
}

/// `n` distinct log lines in batches of `per_batch`.
fn log_batches(n: usize, per_batch: usize) -> Vec<Records> {
    let events: Vec<_> = (0..n)
        .map(|i| {
            let mut event = log_event();
            event.timestamp += i as i64;
            if let Payload::Log(log) = &mut event.payload {
                log.timestamp += i as i64;
                log.message = Bytes::from(format!("line {i}"));
            }
            event
        })
        .collect();
    events
        .chunks(per_batch)
        .map(|chunk| Records::Logs(chunk.to_vec()))
        .collect()
}

fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("the buffer dir exists")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test]
async fn batches_come_out_in_order_and_a_drained_buffer_leaves_no_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let buffer = dir.path().join("buffer");
    let (mut ctx, sender) = context(&disk(&buffer, 1 << 30, WhenFull::Block));
    assert!(ctx.input.is_durable());
    let mut sent = log_batches(200, 7);
    sent.extend(every_stream());
    let feeder = send_all(sender, sent.clone());

    let mut received = Vec::new();
    while let Some(records) = ctx.input.recv().await {
        received.push(records);
        if received.len() % 5 == 0 {
            ctx.input.commit().await.expect("commits");
        }
    }
    ctx.input.commit().await.expect("commits");
    feeder.join().expect("feeder thread");
    assert_eq!(received, sent);
    assert_eq!(ctx.input.recv().await, None);
    assert_eq!(files_in(&buffer), Vec::<String>::new());
    assert_eq!(
        ctx.metrics
            .buffered_records
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[tokio::test]
async fn a_restart_redelivers_what_was_not_committed_and_not_what_was() {
    let dir = tempfile::tempdir().expect("temp dir");
    let buffer = dir.path().join("buffer");
    let config = disk(&buffer, 1 << 30, WhenFull::Block);
    let sent = log_batches(100, 10);
    {
        let (mut ctx, sender) = context(&config);
        let metrics = ctx.metrics.clone();
        send_all(sender, sent.clone())
            .join()
            .expect("feeder thread");
        wait_for("every batch on disk", || {
            metrics
                .buffered_records
                .load(std::sync::atomic::Ordering::Relaxed)
                == 100
        })
        .await;
        for batch in &sent[..4] {
            assert_eq!(ctx.input.recv().await.as_ref(), Some(batch));
        }
        ctx.input.commit().await.expect("commits");
        // Handed out, never committed: the store may not have it.
        assert_eq!(ctx.input.recv().await.as_ref(), Some(&sent[4]));
        // The sink dies here without a commit.
    }
    let (mut ctx, sender) = context(&config);
    assert_eq!(
        ctx.metrics
            .pending
            .load(std::sync::atomic::Ordering::Relaxed),
        60,
        "records from the earlier run count as pending"
    );
    drop(sender);
    let mut received = Vec::new();
    while let Some(records) = ctx.input.recv().await {
        received.push(records);
        ctx.input.commit().await.expect("commits");
    }
    assert_eq!(received, sent[4..]);
    assert_eq!(files_in(&buffer), Vec::<String>::new());
}

#[tokio::test]
async fn drop_newest_on_a_full_disk_buffer_counts_every_dropped_record() {
    let dir = tempfile::tempdir().expect("temp dir");
    let buffer = dir.path().join("buffer");
    let (mut ctx, sender) = context(&disk(&buffer, 2048, WhenFull::DropNewest));
    let metrics = ctx.metrics.clone();
    let sent = log_batches(200, 10);
    send_all(sender, sent.clone())
        .join()
        .expect("feeder thread");
    let mut received = Vec::new();
    while let Some(records) = ctx.input.recv().await {
        received.push(records);
    }
    let kept: usize = received.iter().map(Records::len).sum();
    assert!(kept > 0 && kept < 200, "kept {kept}");
    assert_eq!(metrics.dropped.get(), 200 - kept as u64);
    // What was kept is the oldest, in order.
    assert_eq!(received, sent[..received.len()]);
}

#[tokio::test]
async fn a_memory_buffer_drops_past_max_events_and_counts_it() {
    let buffer = BufferConfig::Memory {
        max_events: 25,
        max_bytes: sluice_common::config::ByteSize(64 << 20),
        when_full: WhenFull::DropNewest,
    };
    let (mut ctx, sender) = context(&buffer);
    assert!(!ctx.input.is_durable());
    let sent = log_batches(50, 10);
    send_all(sender, sent.clone())
        .join()
        .expect("feeder thread");
    let mut received = Vec::new();
    while let Some(records) = ctx.input.recv().await {
        received.push(records);
    }
    assert_eq!(received, sent[..2]);
    assert_eq!(ctx.metrics.dropped.get(), 30);
}

// Multi-threaded, as in `sluice run`: commits run in `block_in_place` there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_sink_behind_a_disk_buffer_stores_every_row_and_empties_the_buffer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("sluice.db");
    let buffer = dir.path().join("buffer");
    let mut config = SqliteSinkConfig::new(&db, StreamName::all());
    config.buffer = disk(&buffer, 1 << 30, WhenFull::Block);
    let (ctx, sender) = context(&config.buffer);
    let metrics = ctx.metrics.clone();
    let mut sent = log_batches(500, 20);
    sent.extend(every_stream());
    let feeder = send_all(sender, sent);
    sqlite::run(config, ctx).await.expect("written");
    feeder.join().expect("feeder thread");

    let mut connection = SqliteConnectOptions::new()
        .filename(&db)
        .connect()
        .await
        .expect("the database exists");
    let logs: i64 = sqlx::query("SELECT count(*) FROM log_message")
        .fetch_one(&mut connection)
        .await
        .expect("counted")
        .get(0);
    assert_eq!(logs, 501);
    let errors: i64 = sqlx::query("SELECT count(*) FROM platform_error")
        .fetch_one(&mut connection)
        .await
        .expect("counted")
        .get(0);
    assert_eq!(errors, 1);
    assert_eq!(metrics.written_of(StreamName::Logs), 501);
    assert_eq!(files_in(&buffer), Vec::<String>::new());
}

#[tokio::test]
async fn batches_on_their_way_to_disk_are_capped_in_bytes_and_all_arrive() {
    let dir = tempfile::tempdir().expect("temp dir");
    let buffer = dir.path().join("buffer");
    let mut config = disk(&buffer, 1 << 30, WhenFull::Block);
    if let BufferConfig::Disk { segment_size, .. } = &mut config {
        *segment_size = ByteSize(64 << 20);
    }
    let (mut ctx, sender) = context(&config);
    // Twenty batches of about 4 MiB: several times the bytes allowed in flight, so a batch
    // whose room was never given back would stop the feeder for good.
    let line = Bytes::from(vec![b'x'; 1 << 20]);
    let sent: Vec<Records> = (0..20)
        .map(|i| {
            let mut batch = log_batches(4, 4).remove(0);
            if let Records::Logs(events) = &mut batch {
                for (j, event) in events.iter_mut().enumerate() {
                    if let Payload::Log(log) = &mut event.payload {
                        log.message = line.clone();
                        log.timestamp += (i * 4 + j) as i64;
                    }
                }
            }
            batch
        })
        .collect();
    assert!(
        sent.iter().map(Records::approx_bytes).sum::<usize>()
            > 2 * sluice_buffers::DISK_IN_FLIGHT_BYTES as usize
    );
    let feeder = send_all(sender, sent.clone());
    let mut received = Vec::new();
    while let Some(records) = ctx.input.recv().await {
        received.push(records);
        ctx.input.commit().await.expect("commits");
    }
    feeder.join().expect("feeder thread");
    assert_eq!(received, sent);
}
