//! The `file` source on real files: golden captures plain and gzipped, damaged ones, and the
//! ways a file can fail to be read.
//!
//! Each test writes and damages its own file in full: the setups repeat on purpose, so
//! that what a test did to the file stays beside what it asserts.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use sluice_model::Event;
use sluice_model::framing::{frames, write_frame};
use sluice_model::proto::events as v1;
use sluice_sources::file::{FileError, FileSourceConfig, ReplayFormat, run};
use sluice_sources::{SourceContext, SourceMetrics, SourceOutput, SourcePosition};
use tokio_util::sync::CancellationToken;

fn golden(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testdata")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn records(data: &[u8]) -> Vec<Bytes> {
    frames(data)
        .map(|(offset, r)| r.unwrap_or_else(|e| panic!("golden record at {offset}: {e}")))
        .collect()
}

fn golden_v1_events() -> Vec<Event> {
    records(&golden("golden-v1.bin"))
        .into_iter()
        .map(|r| sluice_model::decode::decode_v1(r).expect("golden record decodes"))
        .collect()
}

fn write(dir: &tempfile::TempDir, name: &str, data: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, data).expect("temp file is writable");
    path
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).expect("gzip into memory");
    encoder.finish().expect("gzip into memory")
}

struct Replayed {
    result: Result<(), FileError>,
    events: Vec<Event>,
    batches: usize,
    /// The batches' bytes, as the channel's byte budget counted them.
    bytes: usize,
    metrics: Arc<SourceMetrics>,
}

/// Runs the source over `path` and collects everything it sends until it returns.
async fn replay(path: &Path, format: ReplayFormat) -> Replayed {
    let (output, mut rx) = SourceOutput::channel(2);
    let ctx = SourceContext::new("replay", output, CancellationToken::new());
    let metrics = ctx.metrics.clone();
    let config = FileSourceConfig {
        path: path.to_owned(),
        format,
    };
    let source = tokio::spawn(run(config, ctx));
    let mut events = Vec::new();
    let mut batches = 0;
    let mut bytes = 0;
    let collect = async {
        // The channel closes when the source drops its context, i.e. when it is done.
        while let Some(batch) = rx.recv().await {
            assert!(
                batch.events.len() <= 1024 + 8,
                "batches stay near 1024 events"
            );
            assert_eq!(&*batch.source, "replay");
            batches += 1;
            bytes += batch.bytes;
            events.extend(batch.events);
        }
    };
    tokio::time::timeout(Duration::from_secs(30), collect)
        .await
        .expect("the source finishes");
    let result = source.await.expect("the source task does not panic");
    Replayed {
        result,
        events,
        batches,
        bytes,
        metrics,
    }
}

#[tokio::test]
async fn golden_v1_gives_every_event_plain_and_gzipped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = golden("golden-v1.bin");
    let expected = golden_v1_events();
    assert_eq!(expected.len(), 213);
    for path in [
        write(&dir, "capture.bin", &data),
        write(&dir, "capture.bin.gz", &gzip(&data)),
    ] {
        let replayed = replay(&path, ReplayFormat::Dropsonde).await;
        replayed.result.expect("reads to the end");
        assert_eq!(replayed.events, expected, "{}", path.display());
        assert_eq!(replayed.metrics.events.get(), 213);
        assert_eq!(replayed.metrics.bad_records.total(), 0);
        let frames: usize = records(&data).iter().map(Bytes::len).sum();
        assert_eq!(replayed.metrics.bytes.get(), frames as u64);
        // The events are views into the frames: the budget counts those, and what each
        // event allocated besides.
        let allocated: usize = replayed.events.iter().map(Event::view_bytes).sum();
        assert_eq!(replayed.bytes, frames + allocated, "{}", path.display());
    }
}

#[tokio::test]
async fn records_spanning_read_chunks_and_gzip_members_all_arrive() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = golden("golden-v1.bin");
    // Well over the 1 MiB read size, so records straddle chunk boundaries; written as
    // several gzip members, as `cat a.gz b.gz` produces.
    let copies = 1 + (3 << 20) / data.len();
    let mut gz = Vec::new();
    for _ in 0..copies {
        gz.extend(gzip(&data));
    }
    let plain = data.repeat(copies);
    let mut expected = Vec::new();
    for _ in 0..copies {
        expected.extend(golden_v1_events());
    }
    for path in [
        write(&dir, "big.bin", &plain),
        write(&dir, "big.bin.gz", &gz),
    ] {
        let replayed = replay(&path, ReplayFormat::Dropsonde).await;
        replayed.result.expect("reads to the end");
        assert_eq!(replayed.events.len(), expected.len());
        assert!(replayed.events == expected, "{}", path.display());
        assert!(replayed.batches >= expected.len() / 1100, "sent in batches");
    }
}

#[tokio::test]
async fn a_truncated_tail_keeps_every_good_record_and_is_counted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = golden("golden-v1.bin");
    let path = write(&dir, "cut.bin", &data[..data.len() - 3]);
    let replayed = replay(&path, ReplayFormat::Dropsonde).await;
    replayed.result.expect("a truncated tail is not an error");
    assert_eq!(replayed.events, golden_v1_events()[..212]);
    assert_eq!(replayed.metrics.bad_records.get("truncated_frame"), 1);
    assert_eq!(replayed.metrics.bad_records.total(), 1);
}

#[tokio::test]
async fn a_corrupted_record_in_the_middle_is_counted_and_the_rest_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = records(&golden("golden-v1.bin"));
    // A LogMessage envelope without its LogMessage: its type disagrees with its payload.
    let bad = v1::Envelope {
        origin: "rep".into(),
        event_type: 5,
        ..Default::default()
    }
    .encode_to_vec();
    let mut data = Vec::new();
    for (i, record) in good.iter().enumerate() {
        if i == 100 {
            write_frame(&mut data, &bad);
        }
        write_frame(&mut data, record);
    }
    let path = write(&dir, "damaged.bin", &data);
    let replayed = replay(&path, ReplayFormat::Dropsonde).await;
    replayed.result.expect("a bad record is not an error");
    assert_eq!(replayed.events, golden_v1_events());
    assert_eq!(replayed.metrics.bad_records.get("type_mismatch"), 1);
    assert_eq!(replayed.metrics.bad_records.total(), 1);
}

#[tokio::test]
async fn a_broken_length_prefix_ends_the_file_after_the_records_before_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = records(&golden("golden-v1.bin"));
    let mut data = Vec::new();
    for record in &good[..10] {
        write_frame(&mut data, record);
    }
    data.extend_from_slice(&[0xff; 12]);
    for record in &good[10..] {
        write_frame(&mut data, record);
    }
    let path = write(&dir, "garbled.bin", &data);
    let replayed = replay(&path, ReplayFormat::Dropsonde).await;
    replayed.result.expect("counted, not an error");
    assert_eq!(replayed.events, golden_v1_events()[..10]);
    assert_eq!(replayed.metrics.bad_records.get("oversized_frame"), 1);
}

#[tokio::test]
async fn a_4_gib_length_prefix_ends_the_file_saying_how_many_bytes_were_abandoned() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = records(&golden("golden-v1.bin"));
    let mut data = Vec::new();
    for record in &good[..10] {
        write_frame(&mut data, record);
    }
    let cut = data.len();
    prost::encoding::encode_varint(4 << 30, &mut data);
    for record in &good[10..] {
        write_frame(&mut data, record);
    }
    for name in ["prefix.bin", "prefix.bin.gz"] {
        let bytes = if name.ends_with(".gz") {
            gzip(&data)
        } else {
            data.clone()
        };
        let path = write(&dir, name, &bytes);
        let replayed = replay(&path, ReplayFormat::Dropsonde).await;
        replayed.result.expect("counted, not an error");
        assert_eq!(replayed.events, golden_v1_events()[..10], "{name}");
        assert_eq!(
            replayed.metrics.bad_records.get("oversized_frame"),
            1,
            "{name}"
        );
        assert_eq!(
            replayed.metrics.abandoned_bytes.get(),
            (data.len() - cut) as u64,
            "{name}: every byte from the bad prefix on"
        );
    }
}

#[tokio::test]
async fn a_cut_file_ends_the_same_way_plain_or_gzip() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = golden("golden-v1.bin");
    let all = golden_v1_events();
    let gz = gzip(&data);
    for (name, bytes) in [
        ("cut.bin", data[..data.len() / 2].to_vec()),
        ("cut.bin.gz", gz[..gz.len() / 2].to_vec()),
        ("cut-trailer.bin.gz", gz[..gz.len() - 3].to_vec()),
    ] {
        let path = write(&dir, name, &bytes);
        let replayed = replay(&path, ReplayFormat::Dropsonde).await;
        replayed
            .result
            .unwrap_or_else(|e| panic!("{name}: a cut file is not an error: {e}"));
        assert!(replayed.events.len() <= all.len(), "{name}");
        assert_eq!(replayed.events, all[..replayed.events.len()], "{name}");
        assert_eq!(
            replayed.metrics.bad_records.get("truncated_frame"),
            1,
            "{name}: the cut is counted once"
        );
        assert_eq!(replayed.metrics.bad_records.total(), 1, "{name}");
        if name != "cut-trailer.bin.gz" {
            assert!(replayed.events.len() < all.len(), "{name}");
            assert!(replayed.metrics.abandoned_bytes.get() > 0, "{name}");
        }
    }
}

#[tokio::test]
async fn a_missing_file_is_an_error_naming_its_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("no-such-capture.bin");
    let replayed = replay(&path, ReplayFormat::Dropsonde).await;
    let error = replayed.result.expect_err("cannot open");
    assert!(matches!(error, FileError::Open { .. }), "{error:?}");
    assert!(
        error.to_string().contains(&*path.to_string_lossy()),
        "{error}"
    );
    assert!(replayed.events.is_empty());
}

#[tokio::test]
async fn a_corrupt_gzip_stream_is_an_error_naming_path_and_offset() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = golden("golden-v1.bin");
    let mut gz = gzip(&data);
    let middle = gz.len() / 2;
    for byte in &mut gz[middle..middle + 64] {
        *byte ^= 0x5a;
    }
    let path = write(&dir, "corrupt.bin.gz", &gz);
    let replayed = replay(&path, ReplayFormat::Dropsonde).await;
    let error = replayed.result.expect_err("corrupt gzip");
    let FileError::Read { offset, .. } = &error else {
        panic!("expected a read error, got {error:?}");
    };
    let message = error.to_string();
    assert!(message.contains(&*path.to_string_lossy()), "{message}");
    assert!(message.contains(&format!("offset {offset}")), "{message}");
    // Whatever arrived before the damage is delivered, and is right.
    let expected = golden_v1_events();
    assert_eq!(replayed.events, expected[..replayed.events.len()]);
}

#[tokio::test]
async fn loggregator_v2_records_are_mapped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = golden("golden-v2.bin");
    let mut expected = Vec::new();
    for record in records(&data) {
        sluice_model::v2::decode_v2(&record, &mut expected).expect("golden v2 decodes");
    }
    assert_eq!(expected.len(), 271);
    let path = write(&dir, "capture-v2.bin", &data);
    let replayed = replay(&path, ReplayFormat::LoggregatorV2).await;
    replayed.result.expect("reads to the end");
    assert_eq!(replayed.events, expected);
    assert_eq!(replayed.metrics.skipped.total(), 0);
}

#[tokio::test]
async fn unmapped_v2_envelopes_are_counted_as_skipped() {
    use sluice_model::proto::loggregator::v2 as pb;
    let dir = tempfile::tempdir().expect("temp dir");
    let event = pb::Envelope {
        source_id: "cloud_controller".into(),
        message: Some(pb::envelope::Message::Event(pb::Event {
            title: "app restarted".into(),
            body: "".into(),
        })),
        ..Default::default()
    };
    let mut data = Vec::new();
    write_frame(&mut data, &event.encode_to_vec());
    let path = write(&dir, "events-v2.bin", &data);
    let replayed = replay(&path, ReplayFormat::LoggregatorV2).await;
    replayed.result.expect("reads to the end");
    assert!(replayed.events.is_empty());
    assert_eq!(replayed.metrics.skipped.get("unmapped_v2"), 1);
}

#[tokio::test]
async fn an_empty_file_gives_nothing_and_succeeds() {
    let dir = tempfile::tempdir().expect("temp dir");
    for path in [
        write(&dir, "empty.bin", b""),
        write(&dir, "empty.bin.gz", &gzip(b"")),
    ] {
        let replayed = replay(&path, ReplayFormat::Dropsonde).await;
        replayed.result.expect("an empty file is fine");
        assert_eq!((replayed.events.len(), replayed.batches), (0, 0));
        assert_eq!(replayed.metrics.bad_records.total(), 0);
    }
}

#[tokio::test]
async fn shutdown_stops_a_replay_blocked_on_a_full_channel() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = golden("golden-v1.bin").repeat(40);
    let path = write(&dir, "big.bin", &data);
    let (output, mut rx) = SourceOutput::channel(1);
    let shutdown = CancellationToken::new();
    let ctx = SourceContext::new("replay", output, shutdown.clone());
    let config = FileSourceConfig {
        path,
        format: ReplayFormat::Dropsonde,
    };
    let source = tokio::spawn(run(config, ctx));
    // The first batch fills the channel; the source then waits to send the second.
    let first = rx.recv().await.expect("a first batch");
    assert_eq!(first.events.len(), 1024);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), source)
        .await
        .expect("the source stops on shutdown")
        .expect("no panic")
        .expect("shutdown is not an error");
    let mut rest = 0;
    while let Ok(batch) = rx.try_recv() {
        rest += batch.events.len();
    }
    assert!(1024 + rest < 213 * 40, "it stopped before the end");
}

#[test]
fn the_config_defaults_to_dropsonde_and_rejects_unknown_keys() {
    let config: FileSourceConfig =
        from_json(r#"{"path": "capture.bin.gz"}"#).expect("path alone is enough");
    assert_eq!(config.format, ReplayFormat::Dropsonde);
    let config: FileSourceConfig =
        from_json(r#"{"path": "c.bin", "format": "loggregator_v2"}"#).expect("v2");
    assert_eq!(config.format, ReplayFormat::LoggregatorV2);
    assert!(from_json::<FileSourceConfig>(r#"{"path": "c.bin", "fromat": "x"}"#).is_err());
    assert!(from_json::<FileSourceConfig>(r#"{"path": "c.bin", "format": "v3"}"#).is_err());
}

fn from_json<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, serde_json::Error> {
    serde_json::from_str(json)
}

/// Runs the source over `path` from `resume`, returning every batch's events and position.
async fn replay_from(
    path: &Path,
    resume: Option<SourcePosition>,
) -> Vec<(Vec<Event>, Option<SourcePosition>)> {
    let (output, mut rx) = SourceOutput::channel(2);
    let ctx = SourceContext::new("replay", output, CancellationToken::new()).resuming(resume);
    let config = FileSourceConfig {
        path: path.to_owned(),
        format: ReplayFormat::Dropsonde,
    };
    let source = tokio::spawn(run(config, ctx));
    let mut batches = Vec::new();
    while let Some(batch) = rx.recv().await {
        batches.push((batch.events, batch.position));
    }
    source
        .await
        .expect("no panic")
        .expect("the replay succeeds");
    batches
}

#[tokio::test]
async fn a_replay_resumes_at_its_saved_position_only_in_the_same_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let events: Vec<Event> = golden_v1_events().into_iter().cycle().take(3000).collect();
    let mut bytes = Vec::new();
    for event in &events {
        sluice_model::framing::write_frame(&mut bytes, &sluice_model::reference::encode_v1(event));
    }
    for name in ["capture.bin", "capture.bin.gz"] {
        let data = if name.ends_with(".gz") {
            gzip(&bytes)
        } else {
            bytes.clone()
        };
        let path = write(&dir, name, &data);
        let whole = replay_from(&path, None).await;
        assert!(whole.len() >= 2, "{name}: several batches");
        let Some(SourcePosition::File(first)) = whole[0].1.clone() else {
            panic!("{name}: a replay reports where it has read to");
        };
        let Some(SourcePosition::File(last)) = whole.last().and_then(|b| b.1.clone()) else {
            panic!("{name}: the last batch has a position");
        };
        assert_eq!(
            last.offset,
            bytes.len() as u64,
            "{name}: the end of the stream"
        );

        // Resumed after the first batch: exactly the records after it; and resumed again
        // from a position the resumed replay reported.
        let resumed = replay_from(&path, Some(SourcePosition::File(first.clone()))).await;
        let second = resumed[0].1.clone();
        let after: Vec<Event> = resumed.into_iter().flat_map(|(e, _)| e).collect();
        assert_eq!(after, events[whole[0].0.len()..], "{name}");
        let again = replay_from(&path, second).await;
        let skipped = whole[0].0.len() + whole[1].0.len();
        let rest: Vec<Event> = again.into_iter().flat_map(|(e, _)| e).collect();
        assert_eq!(rest, events[skipped..], "{name}: resumed twice");
        // Resumed at the end: nothing more.
        assert!(
            replay_from(&path, Some(SourcePosition::File(last)))
                .await
                .is_empty()
        );

        // The same path, rewritten: read from its start.
        let mut other = Vec::new();
        for event in events.iter().rev() {
            sluice_model::framing::write_frame(
                &mut other,
                &sluice_model::reference::encode_v1(event),
            );
        }
        let other = if name.ends_with(".gz") {
            gzip(&other)
        } else {
            other
        };
        let path = write(&dir, name, &other);
        let fresh = replay_from(&path, Some(SourcePosition::File(first))).await;
        assert_eq!(
            fresh.iter().map(|(e, _)| e.len()).sum::<usize>(),
            events.len(),
            "{name}"
        );
    }
}
