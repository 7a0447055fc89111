//! Gathering received records into the batches row-shaped sinks write in one go, and the
//! loop of a sink that writes whole batches.

use std::future::Future;
use std::time::Duration;

use sluice_model::records::StreamName;
use tokio::time::Instant;
use tracing::warn;

use crate::rows::{self, Conflict, TABLES};
use crate::sql::TableRows;
use sluice_model::records::Records;

use crate::SinkContext;
use crate::retry::{Retry, Stop};
use sluice_buffers::BufferError;

/// Records received and not yet written, grouped by stream so that each table's rows go in
/// arrival order (a final rollup after its provisional one).
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// Indexed like [`StreamName::ALL`].
    pub(crate) by_stream: [Vec<Records>; StreamName::ALL.len()],
    pub(crate) rows: usize,
}

impl Batch {
    pub(crate) fn push(&mut self, records: Records) {
        self.rows += records.len();
        self.by_stream[records.stream().index()].push(records);
    }

    /// Each stream's records as the rows of its table, in arrival order;
    /// rollups by width, each width's rows for its own table. Events whose type does not
    /// belong to their stream (never sent by a correct pipeline) and rollups of a width the
    /// sink has no table for (ditto: the widths are fixed when the graph is built) are counted
    /// as dropped.
    pub(crate) fn table_rows(&self, ctx: &SinkContext) -> Vec<TableRows<'_>> {
        let mut tables = Vec::new();
        for (table, records) in TABLES.iter().zip(&self.by_stream) {
            if records.is_empty() {
                continue;
            }
            // SPEC §11's streams: apps are upserted or deleted, group rollups go to two tables.
            if matches!(table.stream, StreamName::Apps | StreamName::GroupRollups) {
                let batches: Vec<&Records> = records.iter().collect();
                let (mut first, mut second) = (Vec::new(), Vec::new());
                let other = if table.stream == StreamName::Apps {
                    rows::push_app_rows(&batches, &mut first, &mut second);
                    &rows::APP_DELETES
                } else {
                    rows::push_group_rows(&batches, &mut first, &mut second);
                    &rows::ORG_ROLLUPS
                };
                for (table, values) in [(table, first), (other, second)] {
                    if !values.is_empty() {
                        tables.push(TableRows { table, values });
                    }
                }
                continue;
            }
            if table.conflict == Conflict::Update {
                let mut by_width = Vec::new();
                for batch in records {
                    rows::push_rollup_rows(batch, &mut by_width);
                }
                for (width, values) in by_width {
                    if ctx.windows.contains(&width) {
                        tables.push(TableRows {
                            table: rows::window_table(table.stream, width),
                            values,
                        });
                    } else {
                        let rows = values.len() / table.columns.len();
                        warn!(sink = %ctx.name, stream = %table.stream, width, rows,
                            "Dropped rollups of a window width this sink has no table for.");
                        ctx.metrics.dropped(rows);
                    }
                }
                continue;
            }
            let mut values = Vec::new();
            let skipped: usize = records
                .iter()
                .map(|r| rows::push_rows(r, &mut values))
                .sum();
            if skipped > 0 {
                warn!(sink = %ctx.name, stream = %table.stream, records = skipped,
                    "Dropped events whose type does not belong to their stream.");
                ctx.metrics.dropped(skipped);
            }
            tables.push(TableRows { table, values });
        }
        tables
    }
}

/// The next batch to write: waits for a first record, then takes more until `max_rows` or
/// until `flush_interval` has passed since the first. Records of streams the sink is not
/// configured for are counted as dropped. Also says whether the input has closed (the batch
/// then holds the last records, possibly none).
pub(crate) async fn gather(
    ctx: &mut SinkContext,
    streams: &[StreamName],
    max_rows: usize,
    flush_interval: Duration,
) -> (Batch, bool) {
    gather_until(ctx, streams, max_rows, flush_interval, None).await
}

/// [`gather`], except that with `first_by` it waits for a first record only until then and
/// returns an empty batch if none came (a store holding an open transaction commits it once
/// the input goes quiet).
async fn gather_until(
    ctx: &mut SinkContext,
    streams: &[StreamName],
    max_rows: usize,
    flush_interval: Duration,
    first_by: Option<Instant>,
) -> (Batch, bool) {
    let mut batch = Batch::default();
    let mut deadline = first_by.unwrap_or_else(Instant::now);
    loop {
        let received = if batch.rows == 0 && first_by.is_none() {
            ctx.input.recv().await
        } else {
            match tokio::time::timeout_at(deadline, ctx.input.recv()).await {
                Ok(received) => received,
                Err(_elapsed) => return (batch, false),
            }
        };
        let Some(records) = received else {
            return (batch, true);
        };
        if !streams.contains(&records.stream()) {
            // The pipeline sends only configured streams; anything else is counted, not written.
            warn!(sink = %ctx.name, stream = %records.stream(), rows = records.len(),
                "Dropped records of a stream this sink is not configured for.");
            ctx.metrics.dropped(records.len());
            continue;
        }
        if batch.rows == 0 {
            deadline = Instant::now() + flush_interval;
        }
        batch.push(records);
        if batch.rows >= max_rows {
            return (batch, false);
        }
    }
}

/// A store that takes a batch at a time (the SQL sinks').
pub(crate) trait BatchStore {
    type Error: From<BufferError>;

    /// Writes and empties `batch`, waiting out what `retry` waits out: `Some(stop)` if the
    /// sink must stop instead (shutdown while the store is down). `more` says that the
    /// input has more waiting (the batch was gathered full), `last` that the input has
    /// closed: a store may then keep what it wrote uncommitted a while longer, or must not.
    fn flush(
        &mut self,
        batch: &mut Batch,
        ctx: &mut SinkContext,
        retry: &mut Retry,
        flow: Flow,
    ) -> impl Future<Output = Result<Option<Stop>, Self::Error>> + Send;

    /// Whether everything flushed so far is durable in the store (then the input may let go
    /// of it). A store that commits every flush always is.
    fn durable(&self) -> bool {
        true
    }
}

/// What the input looked like when a batch was gathered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    /// The batch filled up: more records are waiting.
    Backlog,
    /// The batch waited its flush interval, or the input has nothing now: it keeps up.
    Quiet,
    /// The input has closed: this is the last batch.
    Closed,
}

/// Writes what the input brings until it closes: batches as [`gather`] makes them, each
/// flushed to `store`, and the input committed whenever the store says all of it is
/// durable, so a durable buffer lets go of nothing unwritten. `Some(stop)` if the store
/// stopped the sink first.
pub(crate) async fn write_batches<S: BatchStore>(
    store: &mut S,
    ctx: &mut SinkContext,
    retry: &mut Retry,
    streams: &[StreamName],
    max_rows: usize,
    flush_interval: Duration,
) -> Result<Option<Stop>, S::Error> {
    loop {
        // A store holding uncommitted rows gets an empty batch once the input is quiet for
        // a flush interval, so that it commits them.
        let first_by = (!store.durable()).then(|| Instant::now() + flush_interval);
        let (mut batch, closed) =
            gather_until(ctx, streams, max_rows, flush_interval, first_by).await;
        let flow = if closed {
            Flow::Closed
        } else if batch.rows >= max_rows {
            Flow::Backlog
        } else {
            Flow::Quiet
        };
        if let Some(stop) = store.flush(&mut batch, ctx, retry, flow).await? {
            return Ok(Some(stop));
        }
        if store.durable() {
            ctx.input.commit().await?;
        }
        if closed {
            return Ok(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::Retry;
    use sluice_model::records::Records;
    use tokio_util::sync::CancellationToken;

    /// A store that keeps its transaction open while the input has a backlog, like SQLite's,
    /// and notes each flush: its flow, its rows, and how many records the input had been
    /// told were safe when it was called.
    #[derive(Default)]
    struct Recorder {
        open: usize,
        flushes: Vec<(Flow, usize, u64)>,
    }

    impl BatchStore for Recorder {
        type Error = BufferError;

        async fn flush(
            &mut self,
            batch: &mut Batch,
            ctx: &mut SinkContext,
            _retry: &mut Retry,
            flow: Flow,
        ) -> Result<Option<Stop>, BufferError> {
            let taken = std::mem::take(batch);
            self.flushes
                .push((flow, taken.rows, ctx.metrics.safe_total()));
            self.open += taken.rows;
            if flow != Flow::Backlog {
                self.open = 0;
            }
            Ok(None)
        }

        fn durable(&self) -> bool {
            self.open == 0
        }
    }

    fn one_error() -> Records {
        Records::Errors(vec![sluice_test_support::fixtures::error_event()])
    }

    #[tokio::test]
    async fn the_input_is_committed_only_once_the_store_has_committed_what_it_took() {
        let (mut ctx, sender) = SinkContext::new("test", 16, CancellationToken::new());
        let sender = std::thread::spawn(move || {
            for _ in 0..3 {
                assert!(sender.send_blocking(one_error()), "queued");
            }
            sender
        })
        .join()
        .expect("queued");
        let metrics = ctx.metrics.clone();
        let mut store = Recorder::default();
        let mut retry = Retry::new("test", "test", Duration::from_secs(1));
        let writing = async {
            write_batches(
                &mut store,
                &mut ctx,
                &mut retry,
                &[StreamName::Errors],
                1,
                Duration::from_millis(20),
            )
            .await
        };
        // The sender stays open while the three queued records are written and the input
        // then goes quiet; it closes once the store has committed them.
        let closing = async {
            sluice_test_support::fixtures::wait_for("the three records committed", || {
                metrics.safe_total() == 3
            })
            .await;
            drop(sender);
        };
        let (written, ()) = tokio::join!(writing, closing);
        assert!(matches!(written, Ok(None)));
        assert_eq!(
            store.flushes,
            vec![
                // Three full batches of one row: a backlog, nothing committed yet.
                (Flow::Backlog, 1, 0),
                (Flow::Backlog, 1, 0),
                (Flow::Backlog, 1, 0),
                // The input went quiet for a flush interval: an empty batch, so the store
                // commits what it holds (and only then is the input told).
                (Flow::Quiet, 0, 0),
                (Flow::Closed, 0, 3),
            ]
        );
    }
}
