//! The `file` source: replays a capture of length-delimited envelopes (SPEC §1.3).
//!
//! A finite source: it reads the file once, from a blocking thread in large chunks (through
//! gzip when the name ends in `.gz`), splits records with the replay framing, decodes them,
//! and returns `Ok(())` at the end. Bad records are counted and skipped with their offset (in
//! the uncompressed stream).
//!
//! One rule for a file that ends early, plain or gzip: a cut inside a record (or inside the
//! gzip stream, as a capture killed while writing leaves it) ends the file normally after
//! every whole record before it; the partial record is one `truncated_frame` bad record, and
//! a warning says where the file ends and how many bytes were abandoned (also counted in
//! `abandoned_bytes`). A broken length prefix ends the file the same way (`oversized_frame`),
//! since no record boundary can be found after it: the rest of the file is read (not kept)
//! to say how many bytes that abandons. Damage that is not a cut (a corrupt gzip stream, a
//! disk error) is an error: the run exits 1.

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek};
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use sluice_common::component::Claim;
use sluice_common::time::now_ns;
use sluice_model::Event;
use sluice_model::framing::{DEFAULT_MAX_RECORD, split_frame, truncation};
use tokio::runtime::Handle;
use tracing::{debug, info, warn};

use crate::{
    Component, ComponentError, ComponentTask, Problem, Source, SourceContext, SourcePosition,
};

/// How much is read at a time: big reads keep syscalls and gzip calls off the profile.
const CHUNK: usize = 1 << 20;

/// Events per batch handed to the pipeline.
const BATCH: usize = 1024;

/// `[sources.NAME]` with `type = "file"`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// The replay file; a name ending in `.gz` is gunzipped while reading (concatenated
    /// gzip members are read one after another, as `gzip -d` does).
    pub path: PathBuf,
    /// The envelope format of its records.
    #[serde(default)]
    pub format: ReplayFormat,
}

/// Which file a position is in: the same path may name another file after a rotation or a
/// rewrite, so the file's device and inode and the checksum of its first bytes are kept too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIdentity {
    /// Device and inode (0 where the platform has none).
    pub device: u64,
    pub inode: u64,
    /// CRC-32 of the file's first `head_len` bytes (at most [`HEAD_BYTES`]).
    pub head_crc: u32,
    pub head_len: u32,
}

/// How many of a file's first bytes its identity checks.
pub const HEAD_BYTES: usize = 4096;

impl FileIdentity {
    /// The identity of the file open as `file`, read from its start (whatever its cursor).
    fn of(mut file: &File, head_len: usize) -> io::Result<FileIdentity> {
        let meta = file.metadata()?;
        #[cfg(unix)]
        let (device, inode) = {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino())
        };
        #[cfg(not(unix))]
        let (device, inode) = (0, 0);
        let mut head = Vec::with_capacity(head_len);
        file.seek(io::SeekFrom::Start(0))?;
        file.take(head_len as u64).read_to_end(&mut head)?;
        Ok(FileIdentity {
            device,
            inode,
            head_crc: crc32fast::hash(&head),
            head_len: head.len() as u32,
        })
    }
}

/// Where a replay has read to: the offset of the next frame in the decompressed stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePosition {
    pub path: PathBuf,
    pub identity: FileIdentity,
    pub offset: u64,
}

/// What a replay file's records are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayFormat {
    /// Dropsonde v1 `events.Envelope`s, as the Firehose sends them (the default).
    #[default]
    Dropsonde,
    /// Loggregator v2 `loggregator.v2.Envelope`s, mapped onto v1 events (SPEC §1.2).
    LoggregatorV2,
}

impl Component for FileSourceConfig {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn problems(&self) -> Vec<Problem> {
        if self.path.as_os_str().is_empty() {
            vec![Problem::new("path", "is empty")]
        } else {
            Vec::new()
        }
    }

    fn resources(&self) -> Vec<Claim> {
        Vec::new()
    }

    fn describe(&self) -> String {
        format!("{} ({:?})", self.path.display(), self.format)
    }
}

impl Source for FileSourceConfig {
    fn is_finite(&self) -> bool {
        true
    }

    fn build(self: Box<Self>, ctx: SourceContext) -> ComponentTask {
        Box::pin(async move { run(*self, ctx).await.map_err(ComponentError::new) })
    }
}

/// Why a replay file could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file does not exist, is not readable, ...
    #[error("cannot open replay file {path}: {source}", path = path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Reading failed part way (a disk error, a corrupt gzip stream). `offset` is in the
    /// uncompressed stream; every record before it was delivered.
    #[error("cannot read replay file {path} at offset {offset}: {source}", path = path.display())]
    Read {
        path: PathBuf,
        offset: u64,
        #[source]
        source: io::Error,
    },
    /// The reading thread panicked or was cancelled with the runtime.
    #[error("the reader of replay file {path} stopped abnormally: {detail}", path = path.display())]
    Reader { path: PathBuf, detail: String },
}

/// Reads the whole file into the pipeline; returns at its end, or early when
/// `ctx.shutdown` is cancelled or the pipeline stops taking batches.
pub async fn run(config: FileSourceConfig, ctx: SourceContext) -> Result<(), FileError> {
    let path = config.path.clone();
    let handle = Handle::current();
    tokio::task::spawn_blocking(move || Replay::new(config, ctx, handle).run())
        .await
        .map_err(|e| FileError::Reader {
            path,
            detail: e.to_string(),
        })?
}

/// Where a record starts: `path:offset`, formatted only when a warning is logged.
struct At<'a>(&'a Path, u64);

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.0.display(), self.1)
    }
}

/// The state of one replay on its blocking thread.
struct Replay {
    config: FileSourceConfig,
    ctx: SourceContext,
    handle: Handle,
    batch: Vec<Event>,
    /// The bytes the batch holds: its frames (the events are views into them) and what
    /// each event allocated (see [`Event::view_bytes`]).
    batch_bytes: usize,
    records: u64,
    /// The file being read, for the positions a checkpoint saves.
    identity: Option<FileIdentity>,
}

/// Whether to keep reading after handing over a batch.
enum Flow {
    Continue,
    Stop,
}

impl Replay {
    fn new(config: FileSourceConfig, ctx: SourceContext, handle: Handle) -> Replay {
        Replay {
            config,
            ctx,
            handle,
            batch: Vec::with_capacity(BATCH),
            batch_bytes: 0,
            records: 0,
            identity: None,
        }
    }

    /// Where to start reading: the restored position if it is in this very file, else 0.
    ///
    /// Only a regular file has a position: a pipe or a device is read once as it comes (its
    /// head cannot be read twice), so a checkpoint saves no position for it and a restart
    /// reads whatever it then gives.
    fn start_offset(&mut self, file: &File) -> Result<u64, FileError> {
        let path = &self.config.path;
        let identity_error = |source| FileError::Read {
            path: path.clone(),
            offset: 0,
            source,
        };
        if !file.metadata().map_err(identity_error)?.is_file() {
            if self.ctx.resume.is_some() {
                info!(source = %self.ctx.name, path = %path.display(),
                    "Not a regular file: it cannot resume at a saved position, reading it as it comes.");
            }
            return Ok(0);
        }
        let mut offset = 0;
        let mut head_len = HEAD_BYTES;
        if let Some(SourcePosition::File(saved)) = &self.ctx.resume
            && saved.path == *path
        {
            head_len = saved.identity.head_len as usize;
            let current = FileIdentity::of(file, head_len).map_err(identity_error)?;
            if current == saved.identity {
                offset = saved.offset;
                info!(source = %self.ctx.name, path = %path.display(), offset,
                    "Resuming the replay where the restored checkpoint left it.");
            } else {
                info!(source = %self.ctx.name, path = %path.display(),
                    "The file is not the one the checkpoint read: replaying it from its start.");
                head_len = HEAD_BYTES;
            }
        }
        if offset == 0 {
            head_len = HEAD_BYTES;
        }
        self.identity = Some(FileIdentity::of(file, head_len).map_err(identity_error)?);
        Ok(offset)
    }

    fn run(mut self) -> Result<(), FileError> {
        let path = self.config.path.clone();
        let mut file = File::open(&path).map_err(|source| FileError::Open {
            path: path.clone(),
            source,
        })?;
        let start = self.start_offset(&file)?;
        if self.identity.is_some() {
            // Reading the identity moved the file's cursor.
            file.seek(io::SeekFrom::Start(0))
                .map_err(|source| FileError::Read {
                    path: path.clone(),
                    offset: 0,
                    source,
                })?;
        }
        let gzipped = path.extension().is_some_and(|ext| ext == "gz");
        let reader: Box<dyn Read> = if gzipped {
            Box::new(flate2::bufread::MultiGzDecoder::new(
                BufReader::with_capacity(CHUNK, file),
            ))
        } else {
            Box::new(file)
        };
        let (source, format) = (&self.ctx.name, self.config.format);
        info!(%source, path = %path.display(), ?format, gzipped, "Replaying a file.");
        self.ctx.set_connected(true);
        let result = self.read_all(reader, start);
        self.ctx.set_connected(false);
        let metrics = &self.ctx.metrics;
        info!(
            source = %self.ctx.name,
            path = %path.display(),
            records = self.records,
            events = metrics.events.get(),
            bad_records = metrics.bad_records.total(),
            skipped = metrics.skipped.total(),
            "Finished replaying the file."
        );
        result
    }

    fn read_all(&mut self, mut reader: Box<dyn Read>, start: u64) -> Result<(), FileError> {
        let mut buf = BytesMut::with_capacity(CHUNK);
        // The offset of `buf[0]` in the (uncompressed) stream.
        let mut offset: u64 = 0;
        if start > 0 {
            offset =
                io::copy(&mut (&mut reader).take(start), &mut io::sink()).map_err(|source| {
                    FileError::Read {
                        path: self.config.path.clone(),
                        offset: 0,
                        source,
                    }
                })?;
            if offset < start {
                info!(source = %self.ctx.name, path = %self.config.path.display(), offset, start,
                    "The file ends before the restored position: nothing more to replay.");
            }
        }
        loop {
            if self.ctx.shutdown.is_cancelled() {
                debug!(source = %self.ctx.name, offset, "Shutdown: stopped replaying the file.");
                return Ok(());
            }
            let (read, error) = fill(&mut reader, &mut buf, CHUNK);
            loop {
                let before = buf.len();
                match split_frame(&mut buf, DEFAULT_MAX_RECORD) {
                    Ok(Some(record)) => {
                        let at = offset;
                        offset += (before - buf.len()) as u64;
                        self.decode(record, at);
                        if self.batch.len() >= BATCH && matches!(self.flush(offset), Flow::Stop) {
                            return Ok(());
                        }
                    }
                    Ok(None) => break,
                    Err(error) => {
                        // No record boundary can be found after a broken length prefix.
                        let at = At(&self.config.path, offset);
                        self.ctx.bad_record_reason(&at, error.reason(), &error);
                        self.flush(offset);
                        let rest = io::copy(&mut reader, &mut io::sink()).unwrap_or(0);
                        self.abandon(offset, buf.len() as u64 + rest, &error);
                        return Ok(());
                    }
                }
            }
            if let Some(source) = error {
                self.flush(offset);
                if source.kind() == io::ErrorKind::UnexpectedEof {
                    // The gzip stream was cut: the same as a plain file that ends early.
                    let error = format!("the gzip stream ends early ({source})");
                    let at = At(&self.config.path, offset);
                    self.ctx.bad_record_reason(&at, "truncated_frame", &error);
                    self.abandon(offset, buf.len() as u64, &error);
                    return Ok(());
                }
                return Err(FileError::Read {
                    path: self.config.path.clone(),
                    offset: offset + buf.len() as u64,
                    source,
                });
            }
            if read == 0 {
                if !buf.is_empty() {
                    let error = truncation(&buf);
                    let at = At(&self.config.path, offset);
                    self.ctx.bad_record_reason(&at, error.reason(), &error);
                    self.abandon(offset, buf.len() as u64, &error);
                }
                self.flush(offset);
                return Ok(());
            }
        }
    }

    /// Says (once per file, not rate-limited) and counts that the file ends at `offset` with
    /// `bytes` read past it left unused.
    fn abandon(&self, offset: u64, bytes: u64, why: &dyn fmt::Display) {
        self.ctx.metrics.abandoned_bytes.add(bytes);
        warn!(
            source = %self.ctx.name,
            path = %self.config.path.display(),
            offset,
            abandoned_bytes = bytes,
            "The replay file ends at offset {offset}: {why}; the {bytes} bytes after it were abandoned."
        );
    }

    fn decode(&mut self, record: Bytes, offset: u64) {
        self.records += 1;
        self.ctx.metrics.bytes.add(record.len() as u64);
        let (frame, before) = (record.len(), self.batch.len());
        let result = match self.config.format {
            ReplayFormat::Dropsonde => {
                sluice_model::decode::decode_v1(record).map(|event| self.batch.push(event))
            }
            ReplayFormat::LoggregatorV2 => {
                match sluice_model::v2::decode_v2(&record, &mut self.batch) {
                    Ok(0) => {
                        self.ctx.skipped("unmapped_v2");
                        Ok(())
                    }
                    Ok(_) => Ok(()),
                    Err(error) => Err(error),
                }
            }
        };
        if let Err(error) = result {
            self.ctx.bad_record(&At(&self.config.path, offset), &error);
        }
        if self.batch.len() > before {
            let events = &self.batch[before..];
            self.batch_bytes += frame + events.iter().map(Event::view_bytes).sum::<usize>();
        }
    }

    /// Hands the pending events to the pipeline, waiting while its channel is full; `offset`
    /// is where the next frame starts.
    fn flush(&mut self, offset: u64) -> Flow {
        if self.batch.is_empty() {
            return Flow::Continue;
        }
        let events = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        let bytes = std::mem::take(&mut self.batch_bytes);
        let position = self.identity.clone().map(|identity| {
            SourcePosition::File(FilePosition {
                path: self.config.path.clone(),
                identity,
                offset,
            })
        });
        let ctx = &self.ctx;
        self.handle.block_on(async {
            tokio::select! {
                sent = ctx.send_holding(events, now_ns(), position, bytes) => match sent {
                    Ok(()) => Flow::Continue,
                    Err(closed) => {
                        debug!(source = %ctx.name, "Stopped replaying the file: {closed}.");
                        Flow::Stop
                    }
                },
                () = ctx.shutdown.cancelled() => Flow::Stop,
            }
        })
    }
}

/// Appends up to `want` bytes from `reader` to `buf`, reading until that many arrived, the
/// stream ended or reading failed; returns how many were appended (0 at the end of the
/// stream) and the error that stopped it, if any — after the bytes that came before it.
/// A gzip decoder hands out a few KiB per call, so one call is not enough for a big chunk.
///
/// The chunk goes into a new buffer, with what is left of `buf` (a partial frame) copied in
/// front: the frames split off the last one are still held by events in flight, so its
/// memory could not be reused anyway, and a `Vec`'s spare capacity is read into without
/// being zeroed first (resizing `buf` wrote a MiB of zeros per chunk, as much work as
/// decoding a tenth of its envelopes).
fn fill(reader: &mut dyn Read, buf: &mut BytesMut, want: usize) -> (usize, Option<io::Error>) {
    let mut chunk = Vec::with_capacity(buf.len() + want);
    chunk.extend_from_slice(buf);
    // `read_to_end` retries interrupted reads, and keeps what it read before an error.
    let error = reader.take(want as u64).read_to_end(&mut chunk).err();
    let filled = chunk.len() - buf.len();
    *buf = BytesMut::from(Bytes::from(chunk));
    (filled, error)
}
