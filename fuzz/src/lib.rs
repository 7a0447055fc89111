//! Fuzz targets for every decoder and parser that reads input Sluice does not control, and a
//! small mutational fuzzer that runs them on the stable toolchain (see the README, "Ingest
//! limits, truncation and fuzzing").
//!
//! Each target takes arbitrary bytes and must neither panic nor ask for an allocation larger
//! than [`MAX_ALLOCATION`] (checked by the counting allocator below). It returns a signature of
//! what it found (an error reason, a count): an input whose signature is new joins the
//! in-memory corpus, a cheap stand-in for coverage feedback.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use sluice_model::framing::{split_frame, truncation};

/// The largest single allocation any target may ask for: far above any legitimate record
/// (frames are capped at 16 MiB), far below what a hostile length prefix could request.
pub const MAX_ALLOCATION: usize = 64 << 20;

/// The system allocator, noting the largest request since [`take_largest`].
pub struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The largest allocation requested since the last call.
pub fn take_largest() -> usize {
    LARGEST.swap(0, Ordering::Relaxed)
}

/// One fuzz target.
pub struct Target {
    /// Its name, and its corpus folder under `fuzz/corpus/`.
    pub name: &'static str,
    /// The largest input the fuzzer makes for it.
    pub max_input: usize,
    pub run: fn(&[u8]) -> u64,
}

/// Every target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "envelope_v1",
        max_input: 64 << 10,
        run: envelope_v1,
    },
    Target {
        name: "envelope_v2",
        max_input: 64 << 10,
        run: envelope_v2,
    },
    Target {
        name: "v2_json",
        max_input: 64 << 10,
        run: v2_json,
    },
    Target {
        name: "replay_frames",
        max_input: 256 << 10,
        run: replay_frames,
    },
    Target {
        name: "disk_segment",
        max_input: 16 << 10,
        run: disk_segment,
    },
    Target {
        name: "config",
        max_input: 16 << 10,
        run: config,
    },
];

fn signature(parts: impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    parts.hash(&mut hasher);
    hasher.finish()
}

/// A dropsonde envelope through the hot-path decoder (and the prost reference).
fn envelope_v1(data: &[u8]) -> u64 {
    let ours = sluice_model::decode::decode_v1(Bytes::copy_from_slice(data));
    let reference = sluice_model::reference::decode_v1(data);
    signature((
        ours.as_ref()
            .map(|e| e.event_type() as u8)
            .map_err(|e| e.reason()),
        reference.is_ok(),
    ))
}

/// A Loggregator v2 protobuf envelope.
fn envelope_v2(data: &[u8]) -> u64 {
    let mut out = Vec::new();
    let result = sluice_model::v2::decode_v2(data, &mut out);
    signature((result.map_err(|e| e.reason()), out.len().min(4)))
}

/// An RLP gateway batch in proto3 JSON.
fn v2_json(data: &[u8]) -> u64 {
    let Ok(json) = std::str::from_utf8(data) else {
        return 0;
    };
    let mut out = Vec::new();
    match sluice_model::v2::parse_sse_batch(json, &mut out) {
        Ok(batch) => signature((
            batch.events.min(4),
            batch.unmapped.min(4),
            batch
                .rejected
                .iter()
                .map(|r| r.error.reason())
                .collect::<Vec<_>>(),
        )),
        Err(e) => signature(e.reason()),
    }
}

/// A replay file read the way the `file` source reads it: chunks of a size taken from the
/// first byte, records split off with the framing, each decoded, the tail checked.
fn replay_frames(data: &[u8]) -> u64 {
    let Some((&first, data)) = data.split_first() else {
        return 0;
    };
    let chunk = usize::from(first % 64) + 1;
    let mut buf = BytesMut::new();
    let mut reasons = Vec::new();
    let mut records = 0usize;
    'chunks: for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match split_frame(&mut buf, 1 << 20) {
                Ok(Some(record)) => {
                    records += 1;
                    if let Err(e) = sluice_model::decode::decode_v1(record) {
                        reasons.push(e.reason());
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    reasons.push(e.reason());
                    break 'chunks;
                }
            }
        }
    }
    if !buf.is_empty() {
        reasons.push(truncation(&buf).reason());
    }
    let reasons: std::collections::BTreeSet<_> = reasons.into_iter().collect();
    signature((records.min(8), reasons))
}

/// A disk buffer segment as left on disk: opened (the scan, the cut, the resync) and read to
/// its end, each payload decoded.
fn disk_segment(data: &[u8]) -> u64 {
    use sluice_buffers::disk::{DiskBufferConfig, Next, open};
    let Ok(dir) = tempfile::tempdir() else {
        return 0;
    };
    let format = format!("{}\n", sluice_buffers::codec::FORMAT);
    let segment = dir.path().join(format!("{:020}.seg", 0));
    if std::fs::write(dir.path().join("format"), format).is_err()
        || std::fs::write(&segment, data).is_err()
    {
        return 0;
    }
    let config = DiskBufferConfig {
        path: dir.path().to_owned(),
        max_size: 1 << 30,
        segment_size: 1 << 20,
        when_full: sluice_buffers::WhenFull::DropNewest,
        sync: sluice_buffers::SyncPolicy::None,
    };
    let metrics = std::sync::Arc::new(sluice_common::telemetry::SinkMetrics::default());
    let Ok((writer, mut reader, report)) = open(config, metrics.clone()) else {
        return 1;
    };
    let mut frames = 0usize;
    let mut decoded = 0usize;
    let mut errors = 0usize;
    for _ in 0..100_000 {
        match reader.try_next() {
            Ok(Next::Frame { payload, .. }) => {
                frames += 1;
                decoded += usize::from(sluice_buffers::codec::decode(&payload).is_ok());
            }
            Ok(Next::Empty | Next::Finished) => break,
            Err(_) => {
                errors += 1;
                reader.skip_segment();
            }
        }
    }
    drop(writer);
    signature((
        frames.min(8),
        decoded.min(8),
        errors,
        report.cut.len(),
        report.skipped.len(),
        metrics.buffer_skipped_bytes.get() > 0,
    ))
}

/// A config file: interpolation, TOML, every check `sluice validate` makes.
fn config(data: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(data);
    let env = |name: &str| match name {
        "HOME" => Some("/home/sluice".to_owned()),
        "SECRET" => Some("s3\"cr\n[sinks.x]\n#t".to_owned()),
        _ => None,
    };
    match sluice_pipeline::config::Config::parse(&text, env) {
        Ok(config) => signature((config.sources.len(), config.sinks.len())),
        Err(problems) => signature(problems.len().min(4)),
    }
}

/// A small xorshift generator: the fuzzer needs speed and a seed to repeat a run, not quality.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Values that find length and bounds bugs: zero, one, sign bits, the limits of the framings.
const INTERESTING: &[u64] = &[
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0xffff,
    (16 << 20) + 1,
    1 << 30,
    4 << 30,
    u32::MAX as u64,
    u64::MAX,
];

/// `input` changed in one to four ways; `corpus` supplies splices.
pub fn mutate(input: &[u8], corpus: &[Vec<u8>], rng: &mut Rng, max: usize) -> Vec<u8> {
    let mut data = input.to_vec();
    for _ in 0..=rng.below(4) {
        let len = data.len();
        match rng.below(10) {
            0 if len > 0 => {
                let at = rng.below(len);
                data[at] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let at = rng.below(len);
                data[at] = rng.next_u64() as u8;
            }
            2 => {
                let at = rng.below(len + 1);
                let n = rng.below(16) + 1;
                let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                data.splice(at..at, bytes);
            }
            3 if len > 0 => {
                let at = rng.below(len);
                let n = rng.below((len - at).min(64)) + 1;
                data.drain(at..at + n);
            }
            4 if len > 0 => {
                let at = rng.below(len);
                let n = rng.below((len - at).min(256)) + 1;
                let copy = data[at..at + n].to_vec();
                let to = rng.below(len + 1);
                data.splice(to..to, copy);
            }
            5 if !corpus.is_empty() => {
                let other = &corpus[rng.below(corpus.len())];
                if !other.is_empty() {
                    let from = rng.below(other.len());
                    let n = rng.below(other.len() - from) + 1;
                    let at = rng.below(len + 1);
                    data.splice(at..at, other[from..from + n].iter().copied());
                }
            }
            6 if len > 0 => data.truncate(rng.below(len)),
            7 => {
                // A varint (a length prefix, a protobuf length or field value).
                let mut value = INTERESTING[rng.below(INTERESTING.len())];
                let mut varint = Vec::new();
                loop {
                    let byte = (value & 0x7f) as u8;
                    value >>= 7;
                    if value == 0 {
                        varint.push(byte);
                        break;
                    }
                    varint.push(byte | 0x80);
                }
                let at = rng.below(len + 1);
                data.splice(at..at, varint);
            }
            8 if len >= 4 => {
                // A little-endian u32 (a disk frame's length, count or checksum).
                let value = INTERESTING[rng.below(INTERESTING.len())] as u32;
                let at = rng.below(len - 3);
                data[at..at + 4].copy_from_slice(&value.to_le_bytes());
            }
            _ => {
                let at = rng.below(len + 1);
                let text =
                    ["${", "}", ":-", "$$", "\"", "\n", "[", "]", "=", "#", "'''"][rng.below(11)];
                data.splice(at..at, text.bytes());
            }
        }
    }
    data.truncate(max);
    data
}

/// The checked-in corpus of a target: `fuzz/corpus/<name>/*`.
pub fn corpus_dir(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(name)
}

/// The files of a corpus folder, in name order.
pub fn read_corpus(name: &str) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(corpus_dir(name)) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .filter_map(|e| {
            let data = std::fs::read(e.path()).ok()?;
            Some((e.file_name().to_string_lossy().into_owned(), data))
        })
        .collect();
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every checked-in input still runs cleanly: the corpus is a regression suite.
    #[test]
    fn every_corpus_input_runs_without_a_panic_or_a_huge_allocation() {
        for target in TARGETS {
            let corpus = read_corpus(target.name);
            assert!(!corpus.is_empty(), "{} has no corpus", target.name);
            for (file, data) in corpus {
                take_largest();
                (target.run)(&data);
                let largest = take_largest();
                assert!(
                    largest <= MAX_ALLOCATION,
                    "{}/{file} allocated {largest} bytes at once",
                    target.name
                );
            }
        }
    }

    #[test]
    fn mutations_stay_within_the_size_limit() {
        let mut rng = Rng::new(7);
        let corpus = vec![vec![1u8; 100]];
        for _ in 0..10_000 {
            let out = mutate(&corpus[0], &corpus, &mut rng, 120);
            assert!(out.len() <= 120);
        }
    }
}
