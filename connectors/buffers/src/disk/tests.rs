//! The disk buffer end to end, through its public ends and the files it leaves: the order of
//! frames across segments, acknowledgement and deletion, redelivery after a crash, the
//! torn-tail cut, `when_full`, the sync policies and the format marker.
//!
//! Each test writes, breaks and reopens its own buffer in full rather than through a shared
//! fixture, so the setups repeat on purpose: what a test did to the files stays in the test.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sluice_common::telemetry::SinkMetrics;

use super::ledger::FORMAT_FILE;
use super::*;
use crate::{BufferError, SyncPolicy, WhenFull, codec};

fn config(dir: &Path, segment_size: u64, max_size: u64, when_full: WhenFull) -> DiskBufferConfig {
    DiskBufferConfig {
        path: dir.to_owned(),
        max_size,
        segment_size,
        when_full,
        sync: SyncPolicy::Batch,
    }
}

fn open_at(config: &DiskBufferConfig) -> (DiskWriter, DiskReader, OpenReport) {
    open(config.clone(), Arc::new(SinkMetrics::default())).expect("the buffer opens")
}

fn payload(i: usize) -> Vec<u8> {
    format!("frame number {i:04}").into_bytes()
}

fn append_all(writer: &mut DiskWriter, frames: std::ops::Range<usize>) {
    for i in frames {
        assert!(writer.append(&payload(i), 1).expect("appends"));
        if i % 3 == 0 {
            writer.flush().expect("flushes");
        }
    }
    writer.flush().expect("flushes");
}

/// Reads every frame available now, as frame numbers.
fn read_available(reader: &mut DiskReader) -> Vec<usize> {
    let mut read = Vec::new();
    while let Next::Frame { payload, records } = reader.try_next().expect("reads") {
        assert_eq!(records, 1);
        let text = String::from_utf8(payload).expect("utf-8");
        let number = text.strip_prefix("frame number ").expect("a test frame");
        read.push(number.parse().expect("a number"));
    }
    read
}

fn segment_files(dir: &Path) -> Vec<u64> {
    segment::list(dir).expect("lists")
}

#[test]
fn a_buffer_in_another_records_layout_is_refused_and_left_as_it_is() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config(dir.path(), 1 << 20, 1 << 30, WhenFull::Block);
    {
        let (mut writer, _reader, _) = open_at(&config);
        append_all(&mut writer, 0..3);
    }
    let format = dir.path().join(FORMAT_FILE);
    assert_eq!(
        fs::read_to_string(&format).expect("marked").trim(),
        codec::FORMAT
    );
    // Reopening in the same layout keeps every record.
    let (_writer, mut reader, report) = open_at(&config);
    assert_eq!(report.records, 3);
    assert_eq!(read_available(&mut reader), [0, 1, 2]);
    drop((_writer, reader));

    for marker in [Some("sluice-records 999"), None] {
        match marker {
            Some(text) => fs::write(&format, text).expect("written"),
            None => fs::remove_file(&format).expect("removed"),
        }
        let Err(error) = open(config.clone(), Arc::new(SinkMetrics::default())) else {
            panic!("a buffer in another layout opened");
        };
        let message = error.to_string();
        assert!(matches!(error, BufferError::Format { .. }), "{message}");
        assert!(message.contains(codec::FORMAT), "{message}");
        assert!(
            message.contains(marker.unwrap_or("sluice-records 1")),
            "{message}"
        );
        // Nothing was read, cut or deleted.
        assert_eq!(segment_files(dir.path()).len(), 1);
    }
}

#[test]
fn an_empty_buffer_of_another_layout_starts_over_in_this_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    fs::write(dir.path().join(FORMAT_FILE), "sluice-records 1\n").expect("written");
    let config = config(dir.path(), 1 << 20, 1 << 30, WhenFull::Block);
    let (_writer, _reader, report) = open_at(&config);
    assert_eq!(report.records, 0);
    assert_eq!(
        fs::read_to_string(dir.path().join(FORMAT_FILE))
            .expect("marked")
            .trim(),
        codec::FORMAT
    );
}

#[test]
fn frames_come_back_in_order_across_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 29-byte frames, 100-byte segments: three frames a segment.
    let config = config(dir.path(), 100, 1 << 20, WhenFull::Block);
    let (mut writer, mut reader, report) = open_at(&config);
    assert_eq!(
        report,
        OpenReport {
            segments: 0,
            ..OpenReport::default()
        }
    );
    append_all(&mut writer, 0..20);
    assert!(segment_files(dir.path()).len() >= 6);
    assert_eq!(read_available(&mut reader), (0..20).collect::<Vec<_>>());
    drop(writer);
    assert_eq!(reader.try_next().expect("reads"), Next::Finished);
}

#[test]
fn commit_deletes_fully_acknowledged_segments_and_a_drained_buffer_leaves_no_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), 100, 1 << 20, WhenFull::Block);
    let (mut writer, mut reader, _) = open_at(&config);
    append_all(&mut writer, 0..20);
    let before = segment_files(dir.path());
    for _ in 0..10 {
        assert!(matches!(reader.try_next(), Ok(Next::Frame { .. })));
    }
    reader.commit().expect("commits");
    let after = segment_files(dir.path());
    assert!(after.len() < before.len(), "{before:?} -> {after:?}");
    assert_eq!(after.last(), before.last());
    // Frames 0..9 filled the first three segments (9 frames) and began the fourth.
    assert_eq!(after.first(), Some(&(before[0] + 3)));

    assert_eq!(read_available(&mut reader), (10..20).collect::<Vec<_>>());
    drop(writer);
    reader.commit().expect("commits");
    assert_eq!(reader.try_next().expect("reads"), Next::Finished);
    reader.remove_if_drained().expect("removes");
    let left: Vec<_> = fs::read_dir(dir.path()).expect("lists").collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn reopening_redelivers_what_was_not_committed_and_only_that() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), 100, 1 << 20, WhenFull::Block);
    {
        let (mut writer, mut reader, _) = open_at(&config);
        append_all(&mut writer, 0..12);
        assert_eq!(read_available(&mut reader).len(), 12);
        // Acknowledge 0..12, hand out 12..15 without acknowledging, then "crash".
        reader.commit().expect("commits");
        append_all(&mut writer, 12..15);
        assert_eq!(read_available(&mut reader), vec![12, 13, 14]);
    }
    let (mut writer, mut reader, report) = open_at(&config);
    assert_eq!(report.records, 3);
    assert!(report.cut.is_empty());
    append_all(&mut writer, 15..17);
    assert_eq!(read_available(&mut reader), vec![12, 13, 14, 15, 16]);
}

/// The newest segment and where its last frame starts.
fn last_frame(dir: &Path) -> (PathBuf, u64, u64) {
    let last = *segment_files(dir).last().expect("a segment");
    let path = segment::path(dir, last);
    let len = fs::metadata(&path).expect("metadata").len();
    let frame = (FRAME_HEADER + payload(0).len()) as u64;
    (path, len - frame, len)
}

#[test]
fn a_corrupt_tail_is_cut_at_its_offset_and_the_good_records_are_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), 100, 1 << 20, WhenFull::Block);
    {
        let (mut writer, _, _) = open_at(&config);
        append_all(&mut writer, 0..8);
    }
    let (path, offset, len) = last_frame(dir.path());
    let mut bytes = fs::read(&path).expect("reads");
    let flip = bytes.len() - 2;
    bytes[flip] ^= 0x40;
    fs::write(&path, bytes).expect("writes");

    let (_writer, mut reader, report) = open_at(&config);
    assert_eq!(
        report.cut,
        vec![CutTail {
            file: path.clone(),
            offset,
            bytes_cut: len - offset,
            reason: "checksum mismatch",
        }]
    );
    assert_eq!(report.records, 7);
    assert_eq!(fs::metadata(&path).expect("metadata").len(), offset);
    assert_eq!(read_available(&mut reader), (0..7).collect::<Vec<_>>());
}

#[test]
fn a_torn_tail_is_cut_and_appending_continues_after_the_good_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), 100, 1 << 20, WhenFull::Block);
    {
        let (mut writer, _, _) = open_at(&config);
        append_all(&mut writer, 0..8);
    }
    let (path, offset, _) = last_frame(dir.path());
    let file = OpenOptions::new().write(true).open(&path).expect("opens");
    file.set_len(offset + 5).expect("truncates");

    let (mut writer, mut reader, report) = open_at(&config);
    assert_eq!(report.cut.len(), 1);
    assert_eq!(report.cut[0].file, path);
    assert_eq!(report.cut[0].offset, offset);
    assert_eq!(report.cut[0].bytes_cut, 5);
    append_all(&mut writer, 8..10);
    assert_eq!(read_available(&mut reader), vec![0, 1, 2, 3, 4, 5, 6, 8, 9]);
}

#[test]
fn drop_newest_refuses_frames_past_the_cap_until_a_commit_frees_room() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Room for three 29-byte frames.
    let config = config(dir.path(), 1 << 20, 95, WhenFull::DropNewest);
    let (mut writer, mut reader, _) = open_at(&config);
    let taken: Vec<bool> = (0..5)
        .map(|i| writer.append(&payload(i), 1).expect("appends"))
        .collect();
    assert_eq!(taken, vec![true, true, true, false, false]);
    writer.flush().expect("flushes");
    assert_eq!(read_available(&mut reader), vec![0, 1, 2]);
    assert!(!writer.append(&payload(5), 1).expect("appends"));
    reader.commit().expect("commits");
    assert!(writer.append(&payload(6), 1).expect("appends"));
}

#[test]
fn block_waits_for_a_commit_to_free_room() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), 1 << 20, 95, WhenFull::Block);
    let (mut writer, mut reader, _) = open_at(&config);
    append_all(&mut writer, 0..3);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let blocked = std::thread::spawn(move || {
        let taken = writer.append(&payload(3), 1).expect("appends");
        writer.flush().expect("flushes");
        done_tx.send(taken).expect("the test waits");
    });
    assert_eq!(read_available(&mut reader), vec![0, 1, 2]);
    assert!(done_rx.try_recv().is_err(), "appended into a full buffer");
    reader.commit().expect("commits");
    let taken = done_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the commit unblocks the writer");
    assert!(taken);
    blocked.join().expect("the writer thread ends");
    assert_eq!(read_available(&mut reader), vec![3]);
}

#[test]
fn interval_sync_leaves_nothing_unsynced_once_the_writer_is_gone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(dir.path(), 100, 1 << 20, WhenFull::Block);
    config.sync = SyncPolicy::Interval;
    let (mut writer, mut reader, _) = open_at(&config);
    append_all(&mut writer, 0..5);
    // Dropping the writer wakes its syncer, which fsyncs and ends (the drop joins it).
    drop(writer);
    assert!(!reader.shared.dirty.load(Ordering::Acquire));
    assert_eq!(read_available(&mut reader), (0..5).collect::<Vec<_>>());
    assert_eq!(reader.try_next().expect("reads"), Next::Finished);
}

#[test]
fn a_stale_ack_past_a_cut_tail_starts_at_the_segment_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), 1 << 20, 1 << 20, WhenFull::Block);
    {
        let (mut writer, mut reader, _) = open_at(&config);
        append_all(&mut writer, 0..4);
        assert_eq!(read_available(&mut reader).len(), 4);
        reader.commit().expect("commits");
    }
    let (path, offset, _) = last_frame(dir.path());
    OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(offset))
        .expect("truncates");
    let (mut writer, mut reader, report) = open_at(&config);
    assert_eq!(report.records, 0);
    append_all(&mut writer, 4..6);
    assert_eq!(read_available(&mut reader), vec![4, 5]);
}

/// Flips a bit in the payload of frame `n` (all frames the size of `payload(0)`) of the only
/// segment, and returns that frame's offset and length.
fn flip_frame(dir: &Path, n: u64) -> (PathBuf, u64, u64) {
    let path = segment::path(dir, *segment_files(dir).first().expect("a segment"));
    let frame = (FRAME_HEADER + payload(0).len()) as u64;
    let offset = n * frame;
    let mut bytes = fs::read(&path).expect("reads");
    bytes[(offset + frame - 2) as usize] ^= 0x40;
    fs::write(&path, bytes).expect("writes");
    (path, offset, frame)
}

#[test]
fn a_corrupt_frame_mid_segment_is_skipped_and_reading_resynchronises() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), 1 << 20, 1 << 20, WhenFull::Block);
    {
        let (mut writer, _, _) = open_at(&config);
        append_all(&mut writer, 0..100);
    }
    let (path, offset, frame) = flip_frame(dir.path(), 40);

    // On open: counted and reported, nothing cut.
    let metrics = Arc::new(SinkMetrics::default());
    let (_writer, mut reader, report) =
        open(config.clone(), metrics.clone()).expect("the buffer opens");
    assert!(report.cut.is_empty(), "{:?}", report.cut);
    assert_eq!(
        report.skipped,
        vec![CutTail {
            file: path.clone(),
            offset,
            bytes_cut: frame,
            reason: "checksum mismatch",
        }]
    );
    assert_eq!(report.records, 99);
    let expected: Vec<usize> = (0..100).filter(|&i| i != 40).collect();
    assert_eq!(read_available(&mut reader), expected);
    assert_eq!(metrics.buffer_skipped_bytes.get(), frame);

    // A frame damaged while the buffer is open is skipped by the reader the same way.
    reader.commit().expect("commits");
    drop((reader, _writer));
    let dir2 = tempfile::tempdir().expect("tempdir");
    let config = super::tests::config(dir2.path(), 1 << 20, 1 << 20, WhenFull::Block);
    let metrics = Arc::new(SinkMetrics::default());
    let (mut writer, mut reader, _) = open(config, metrics.clone()).expect("opens");
    append_all(&mut writer, 0..10);
    flip_frame(dir2.path(), 3);
    let expected: Vec<usize> = (0..10).filter(|&i| i != 3).collect();
    assert_eq!(read_available(&mut reader), expected);
    assert_eq!(metrics.buffer_skipped_bytes.get(), frame);
}
