//! `sluice capture`: the Firehose's envelopes written, undecoded, to a replay file (SPEC §1.3:
//! varint length + envelope bytes per record; gzip when the path ends in `.gz`).
//!
//! The connection is the Firehose source's own ([`FirehoseStream`]), so a capture reconnects,
//! refreshes its token and survives slow-consumer disconnects exactly as `sluice run` does.
//! The file is written on a blocking thread fed by a bounded channel (compression must not
//! stall the socket's task), and is finished — gzip trailer included — however the capture
//! ends, so a file cut short by Ctrl-C still replays.

use std::io;
use std::path::{Path, PathBuf};

use sluice_model::framing::{ReplayWriter, write_frame};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::{FirehoseConfig, FirehoseError, FirehoseStream};
use crate::{SourceContext, SourceOutput};

/// Chunks of framed records in flight to the writer thread.
const WRITE_QUEUE: usize = 8;

/// How far a capture has come; passed to the progress callback after every chunk written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CaptureProgress {
    /// Envelopes written so far.
    pub envelopes: u64,
    /// Envelope bytes written so far (before framing and compression).
    pub bytes: u64,
    /// Connection attempts after the first.
    pub reconnects: u64,
    /// Disconnects for reading too slowly (close code 1008).
    pub slow_consumer_disconnects: u64,
}

/// Why a capture ended without an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptureEnd {
    /// `limit` envelopes were written.
    Limit,
    /// Shutdown was requested (Ctrl-C).
    Shutdown,
}

/// What a finished capture wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureSummary {
    /// The file written.
    pub path: PathBuf,
    /// Envelopes written: exactly the records a replay of the file reads.
    pub envelopes: u64,
    /// Envelope bytes written (before framing and compression).
    pub bytes: u64,
    /// The file's size on disk.
    pub file_bytes: u64,
    /// Why the capture stopped.
    pub end: CaptureEnd,
}

/// Why a capture failed.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The output file could not be created.
    #[error("cannot create the capture file {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Writing, compressing or finishing the output file failed (disk full, ...).
    #[error("cannot write the capture file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The Firehose connection cannot be made: bad config, TLS setup, credentials refused.
    /// What was captured before is finished and valid.
    #[error(transparent)]
    Firehose(#[from] FirehoseError),
}

/// Captures the Firehose of `config` into `output` until `limit` envelopes are written (if
/// given), `shutdown` is cancelled, or a non-retriable error. The file is valid in every case.
///
/// `progress` is called after every chunk handed to the writer: on a busy stream that is
/// often, so a progress display should throttle its redraws.
pub async fn capture(
    config: FirehoseConfig,
    output: &Path,
    limit: Option<u64>,
    shutdown: CancellationToken,
    mut progress: impl FnMut(&CaptureProgress),
) -> Result<CaptureSummary, CaptureError> {
    // The context only carries counters and shutdown: no batch is ever sent through it.
    let (unused_output, _) = SourceOutput::channel(1);
    let ctx = SourceContext::new("capture", unused_output, shutdown);
    let mut stream = FirehoseStream::new(&config, ctx.clone())?;
    let file = ReplayWriter::create(output).map_err(|source| CaptureError::Create {
        path: output.to_path_buf(),
        source,
    })?;
    let (chunks, queued) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
    let path = output.to_path_buf();
    let writer = tokio::task::spawn_blocking(move || write_file(file, queued, &path));

    let limit = limit.unwrap_or(u64::MAX);
    let mut done = CaptureProgress::default();
    let mut outcome = Ok(());
    while done.envelopes < limit {
        let first = match stream.next_frame().await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                outcome = Err(e);
                break;
            }
        };
        let mut chunk = Vec::new();
        let mut next = Some(first);
        let mut in_chunk = 0;
        while let Some(frame) = next {
            write_frame(&mut chunk, &frame.payload);
            done.envelopes += 1;
            done.bytes += frame.payload.len() as u64;
            in_chunk += 1;
            next = if done.envelopes < limit && in_chunk < config.batch_size {
                stream.ready_frame()
            } else {
                None
            };
        }
        if chunks.send(chunk).await.is_err() {
            // The writer stopped on an error; joining it below reports that error.
            break;
        }
        done.reconnects = ctx.metrics.reconnects.get();
        done.slow_consumer_disconnects = ctx.metrics.slow_consumer_disconnects.get();
        progress(&done);
    }
    stream.close().await;
    drop(chunks);
    let file_bytes = match writer.await {
        Ok(written) => written?,
        Err(join) => {
            return Err(CaptureError::Write {
                path: output.to_path_buf(),
                source: io::Error::other(join),
            });
        }
    };
    outcome?;
    let end = if done.envelopes >= limit {
        CaptureEnd::Limit
    } else {
        CaptureEnd::Shutdown
    };
    info!(
        path = %output.display(),
        envelopes = done.envelopes,
        file_bytes,
        ?end,
        "Capture finished."
    );
    Ok(CaptureSummary {
        path: output.to_path_buf(),
        envelopes: done.envelopes,
        bytes: done.bytes,
        file_bytes,
        end,
    })
}

/// Writes every chunk received, then finishes the file (gzip trailer, flush, sync) once the
/// sender is dropped. Returns the file's size.
fn write_file(
    mut file: ReplayWriter,
    mut chunks: mpsc::Receiver<Vec<u8>>,
    path: &Path,
) -> Result<u64, CaptureError> {
    let failed = |source| CaptureError::Write {
        path: path.to_path_buf(),
        source,
    };
    while let Some(chunk) = chunks.blocking_recv() {
        file.write_framed(&chunk).map_err(failed)?;
    }
    file.finish().map_err(failed)
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::sync::Arc;

    use bytes::Bytes;
    use flate2::read::GzDecoder;
    use sluice_model::framing::frames;
    use sluice_model::reference::encode_v1;

    use super::*;
    use crate::firehose::test_server::{TestServer, drain, events, send_events};

    fn read_records(path: &Path) -> Vec<Bytes> {
        let raw = std::fs::read(path).expect("capture file exists");
        let data = if path.extension().is_some_and(|e| e == "gz") {
            let mut plain = Vec::new();
            GzDecoder::new(&raw[..])
                .read_to_end(&mut plain)
                .expect("a complete gzip stream");
            plain
        } else {
            raw
        };
        frames(&data)
            .map(|(offset, record)| {
                record.unwrap_or_else(|e| panic!("bad record at {offset}: {e}"))
            })
            .collect()
    }

    async fn server_sending(count: u64) -> TestServer {
        TestServer::start(Arc::new(move |_, mut socket| {
            Box::pin(async move {
                send_events(&mut socket, &events(0..count)).await;
                drain(socket).await;
            })
        }))
        .await
    }

    #[tokio::test]
    async fn a_limited_capture_writes_exactly_limit_records_plain_and_gzip() {
        let server = server_sending(40).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let expected: Vec<Bytes> = events(0..25).iter().map(|e| encode_v1(e).into()).collect();
        for name in ["capture.bin", "capture.bin.gz"] {
            let path = dir.path().join(name);
            let mut calls = 0;
            let summary = capture(
                server.config(),
                &path,
                Some(25),
                CancellationToken::new(),
                |_| calls += 1,
            )
            .await
            .expect("capture succeeds");
            assert_eq!(summary.end, CaptureEnd::Limit);
            assert_eq!(summary.envelopes, 25);
            assert!(calls >= 1);
            assert_eq!(read_records(&path), expected, "{name}");
            let on_disk = std::fs::metadata(&path).expect("file").len();
            assert_eq!(summary.file_bytes, on_disk);
        }
    }

    #[tokio::test]
    async fn a_capture_stopped_by_shutdown_leaves_a_complete_gzip_file() {
        let server = server_sending(30).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("stopped.bin.gz");
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let summary = capture(server.config(), &path, None, shutdown, |progress| {
            if progress.envelopes >= 30 {
                stop.cancel();
            }
        })
        .await
        .expect("capture succeeds");
        assert_eq!(summary.end, CaptureEnd::Shutdown);
        assert_eq!(summary.envelopes, 30);
        assert_eq!(read_records(&path).len(), 30);
    }

    #[tokio::test]
    async fn an_uncreatable_output_is_an_error_naming_the_path() {
        let server = server_sending(1).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("missing-dir").join("capture.bin");
        let error = capture(
            server.config(),
            &path,
            Some(1),
            CancellationToken::new(),
            |_| {},
        )
        .await
        .expect_err("no such directory");
        assert!(matches!(error, CaptureError::Create { .. }));
        assert!(error.to_string().contains("missing-dir"), "{error}");
    }
}
