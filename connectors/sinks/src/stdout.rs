//! The `stdout` sink: every record as one JSON object per line (NDJSON) on standard output,
//! for piping into `jq` or a log shipper, and for seeing what a pipeline produces.
//!
//! Each line has a `"stream"` field (`"logs"`, `"app_rollups"`, ...) and the record's columns
//! named exactly as the columns of its table in SPEC §3, with the same values the SQL sinks
//! write (NULL is `null`; a NaN is `null` too, as JSON has no NaN). Rollup lines also have
//! a `"window"` field: the width in seconds (60, or an extra width of `pipeline.windows`).

use std::io::Write as _;

use serde::Deserialize;
use sluice_model::records::StreamName;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tracing::warn;

use sluice_buffers::BufferConfig;
use sluice_model::records::Records;

use crate::rows::{self, Value};
use crate::{Component, ComponentError, ComponentTask, Problem, Sink, SinkContext};

/// Output buffered before it is written, when several batches are already waiting.
const BUFFER_BYTES: usize = 256 * 1024;

/// `[sinks.<name>]` with `type = "stdout"`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutSinkConfig {
    /// The streams printed. Default: all of them.
    #[serde(default = "StreamName::all")]
    pub streams: Vec<StreamName>,
    /// Where records wait before they are printed (SPEC §8). Default: memory.
    #[serde(default)]
    pub buffer: BufferConfig,
}

impl Component for StdoutSinkConfig {
    fn kind(&self) -> &'static str {
        "stdout"
    }

    fn problems(&self) -> Vec<Problem> {
        crate::stream_problems(&self.streams)
    }

    fn describe(&self) -> String {
        "standard output (NDJSON)".to_owned()
    }
}

impl Sink for StdoutSinkConfig {
    fn streams(&self) -> &[StreamName] {
        &self.streams
    }

    fn buffer(&self) -> &BufferConfig {
        &self.buffer
    }

    fn build(self: Box<Self>, ctx: SinkContext) -> ComponentTask {
        Box::pin(async move { run(*self, ctx).await.map_err(ComponentError::new) })
    }
}

/// Why the `stdout` sink stopped.
#[derive(Debug, thiserror::Error)]
pub enum StdoutSinkError {
    /// Standard output is closed (the reader of a pipe went away) or failing.
    #[error("cannot write to standard output: {source}")]
    Write { source: std::io::Error },
    #[error(transparent)]
    Buffer(#[from] sluice_buffers::BufferError),
}

/// Runs the sink on the process's standard output until its input closes.
pub async fn run(config: StdoutSinkConfig, ctx: SinkContext) -> Result<(), StdoutSinkError> {
    run_with_writer(config, ctx, tokio::io::stdout()).await
}

/// Runs the sink on `out` until its input closes; flushes `out` after every batch so lines
/// appear as the pipeline produces them.
pub async fn run_with_writer<W: AsyncWrite + Unpin>(
    config: StdoutSinkConfig,
    mut ctx: SinkContext,
    mut out: W,
) -> Result<(), StdoutSinkError> {
    let mut buffer = Vec::with_capacity(BUFFER_BYTES);
    while let Some(first) = ctx.input.recv().await {
        // Take whatever else is already waiting, so a busy pipeline costs one write per
        // buffer rather than one per batch.
        let mut written = Vec::new();
        let mut next = Some(first);
        while let Some(records) = next.take() {
            match encode(&config, &ctx, &records, &mut buffer) {
                Ok(Some(counted)) => written.push(counted),
                Ok(None) => {}
                Err(source) => {
                    ctx.metrics.dropped(records.len());
                    return Err(StdoutSinkError::Write { source });
                }
            }
            if buffer.len() < BUFFER_BYTES {
                next = ctx.input.try_recv();
            }
        }
        let write = async {
            out.write_all(&buffer).await?;
            out.flush().await
        };
        if let Err(source) = write.await {
            let lost = written.iter().map(|(_, n)| n).sum();
            ctx.metrics.dropped(lost);
            return Err(StdoutSinkError::Write { source });
        }
        buffer.clear();
        for (stream, n) in written {
            ctx.metrics.written(stream, n);
        }
        ctx.input.commit().await?;
    }
    out.flush()
        .await
        .map_err(|source| StdoutSinkError::Write { source })
}

/// Appends a batch's lines to `buffer`; returns the stream and how many lines, or `None` if
/// the batch was dropped (a stream this sink is not configured for). Encoding into memory
/// does not fail in practice; an error is reported like a failed write.
fn encode(
    config: &StdoutSinkConfig,
    ctx: &SinkContext,
    records: &Records,
    buffer: &mut Vec<u8>,
) -> std::io::Result<Option<(StreamName, usize)>> {
    let stream = records.stream();
    if !config.streams.contains(&stream) {
        warn!(sink = %ctx.name, %stream, rows = records.len(),
            "Dropped records of a stream this sink is not configured for.");
        ctx.metrics.dropped(records.len());
        return Ok(None);
    }
    let table = rows::table(stream);
    let mut by_width = Vec::new();
    if matches!(
        records,
        Records::AppRollups(_) | Records::PlatformRollups(_)
    ) {
        rows::push_rollup_rows(records, &mut by_width);
    } else {
        let mut values = Vec::new();
        let skipped = rows::push_rows(records, &mut values);
        if skipped > 0 {
            warn!(sink = %ctx.name, %stream, records = skipped,
                "Dropped events whose type does not belong to their stream.");
            ctx.metrics.dropped(skipped);
        }
        by_width.push((0, values));
    }
    let mut lines = 0;
    for (width, values) in &by_width {
        let window = (*width > 0).then_some(*width);
        for row in values.chunks_exact(table.columns.len()) {
            write_line(buffer, stream, window, table.columns, row)?;
            lines += 1;
        }
    }
    Ok(Some((stream, lines)))
}

/// One JSON object and a newline. Column and stream names are static identifiers, written
/// as they are; text values go through serde_json's escaping.
fn write_line(
    buffer: &mut Vec<u8>,
    stream: StreamName,
    window: Option<u32>,
    columns: &[&str],
    row: &[Value<'_>],
) -> std::io::Result<()> {
    buffer.extend_from_slice(b"{\"stream\":\"");
    buffer.extend_from_slice(stream.as_str().as_bytes());
    buffer.push(b'"');
    if let Some(window) = window {
        write!(buffer, ",\"window\":{window}")?;
    }
    for (column, value) in columns.iter().zip(row) {
        buffer.extend_from_slice(b",\"");
        buffer.extend_from_slice(column.as_bytes());
        buffer.extend_from_slice(b"\":");
        write_value(buffer, value)?;
    }
    buffer.extend_from_slice(b"}\n");
    Ok(())
}

fn write_value(buffer: &mut Vec<u8>, value: &Value<'_>) -> std::io::Result<()> {
    match value {
        Value::Null => buffer.extend_from_slice(b"null"),
        Value::Int(n) => write!(buffer, "{n}")?,
        Value::Real(x) if x.is_finite() => serde_json::to_writer(&mut *buffer, x)?,
        Value::Real(_) => buffer.extend_from_slice(b"null"),
        Value::Text(s) => serde_json::to_writer(&mut *buffer, s.as_ref())?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    #[test]
    fn lines_are_json_with_escaped_text_and_null_for_nan() {
        let mut buffer = Vec::new();
        let row = [
            Value::Text(Cow::Borrowed("a\"b\n")),
            Value::Int(-3),
            Value::Real(f64::NAN),
            Value::Real(1.5),
            Value::Null,
        ];
        write_line(
            &mut buffer,
            StreamName::Errors,
            None,
            &["origin", "ts", "x", "y", "z"],
            &row,
        )
        .expect("writes into memory");
        let text = String::from_utf8(buffer).expect("utf-8");
        assert_eq!(
            text,
            "{\"stream\":\"errors\",\"origin\":\"a\\\"b\\n\",\"ts\":-3,\"x\":null,\"y\":1.5,\"z\":null}\n"
        );
        let parsed: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(parsed["origin"], "a\"b\n");
    }
}
