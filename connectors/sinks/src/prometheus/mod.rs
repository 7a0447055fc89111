//! The `prometheus` sink: rollups as samples, sent with the Prometheus remote-write protocol
//! (1.0: protobuf `WriteRequest`, Snappy, `X-Prometheus-Remote-Write-Version: 0.1.0`) to any
//! receiver — Prometheus with `--web.enable-remote-write-receiver`, Mimir, Thanos receive,
//! VictoriaMetrics, Grafana Cloud (SPEC §13).
//!
//! Each closed window's row becomes one sample per series, timestamped at the window's start
//! ([`series`]); provisional rows of open windows are left out unless `write_provisional`.
//! Received rows are gathered up to `batch_size × concurrency` rows or `flush_interval`, then
//! planned into requests (`plan`): lanes by key so a series' samples go out in time order,
//! rounds so a request holds one sample per series and can be sent again harmlessly. Lanes
//! send side by side, each in order.
//!
//! At start the sink sends an empty request: a receiver that refuses it as a whole (401, 403,
//! 404 — e.g. a Prometheus without its receiver enabled) stops the sink at once, with the
//! receiver's message. A connection that fails and a 429/5xx pause the sink with capped
//! backoff (the shared `Retry`) while its buffer (a disk buffer, for rows that must survive
//! anything) absorbs the stream; the requests not yet stored are sent again, in order. Any
//! other 4xx (out-of-order or duplicate samples, invalid labels, a request too large) refuses
//! that request only: it goes to the dead-letter file with the receiver's message and is
//! counted. The input is committed once every request of a flush is stored or dead-lettered.
//!
//! Layout: [`config`] (keys, validation, description), [`series`] (the metric and label
//! scheme), `plan` (requests in a safe order), [`proto`] (the wire messages), `client`
//! (one HTTP request and its answer), `dead_letter`, `error`.

mod client;
pub mod config;
mod dead_letter;
mod error;
mod plan;
pub mod proto;
pub mod series;

pub use config::{AuthConfig, PROMETHEUS_STREAMS, PrometheusSinkConfig};
pub use error::PrometheusSinkError;

use std::collections::VecDeque;
use std::path::PathBuf;

use sluice_model::records::StreamName;
use tracing::{debug, info, warn};

use self::client::{Answer, Client};
use self::dead_letter::DeadLetter;
use self::plan::{Request, Row, plan};
use self::series::Names;
use crate::batch::gather;
use crate::retry::{Retry, Stop};
use crate::{Component, ComponentError, ComponentTask, SinkContext};
use sluice_common::telemetry::RateLimit;
use sluice_model::records::Records;

impl crate::Sink for PrometheusSinkConfig {
    fn streams(&self) -> &[StreamName] {
        &self.streams
    }

    fn buffer(&self) -> &sluice_buffers::BufferConfig {
        &self.buffer
    }

    fn build(self: Box<Self>, ctx: SinkContext) -> ComponentTask {
        Box::pin(async move { run(*self, ctx).await.map_err(ComponentError::new) })
    }
}

/// Runs the sink until its input closes: every row received is stored, dead-lettered, or
/// (a provisional row with `write_provisional = false`) left to its window's final row.
pub async fn run(
    config: PrometheusSinkConfig,
    mut ctx: SinkContext,
) -> Result<(), PrometheusSinkError> {
    if let Some(problem) = config.problems().into_iter().next() {
        return Err(PrometheusSinkError::Config(problem.to_string()));
    }
    let endpoint = config.endpoint();
    let client = Client::new(&config)?;
    let dead_letter_path = config.dead_letter.clone().unwrap_or_else(|| {
        PathBuf::from("sluice-data/dead-letter").join(format!("{}.ndjson", ctx.name))
    });
    let mut sink = Sink {
        client,
        dead_letter: DeadLetter::new(dead_letter_path, ctx.name.clone()),
        rejections: RateLimit::default(),
        samples_written: 0,
    };
    let mut retry = Retry::new(
        "The remote-write receiver",
        &endpoint,
        config.shutdown_timeout,
    );

    // The healthcheck: an empty request.
    let empty = proto::encode(
        &proto::WriteRequest::default(),
        &mut snap::raw::Encoder::new(),
    );
    loop {
        match sink.client.send(empty.clone()).await {
            // A receiver that reads requests; one refusing an empty one is still there.
            Ok(_) => break,
            Err(error) if error.is_retriable() => {
                if let Some(stop) = retry.wait(&error, 0, &mut ctx).await {
                    return finish(stop, &endpoint);
                }
            }
            Err(error) => return Err(error),
        }
    }
    retry.recovered(&ctx);
    info!(sink = %ctx.name, %endpoint, "The remote-write receiver answers.");

    let names = Names::new(&config.metric_prefix);
    let gather_rows = config.batch_size.get() * config.concurrency.get();
    loop {
        let (batch, closed) = gather(
            &mut ctx,
            &config.streams,
            gather_rows,
            config.flush_interval,
        )
        .await;
        let mut rows = Vec::with_capacity(batch.rows);
        let (mut open_app, mut open_platform) = (0, 0);
        for records in batch.by_stream.iter().flatten() {
            match records {
                Records::AppRollups(r) => {
                    for row in r {
                        if row.is_final || config.write_provisional {
                            rows.push(Row::App(row));
                        } else {
                            open_app += 1;
                        }
                    }
                }
                Records::PlatformRollups(r) => {
                    for row in r {
                        if row.is_final || config.write_provisional {
                            rows.push(Row::Platform(row));
                        } else {
                            open_platform += 1;
                        }
                    }
                }
                // `gather` passes only the configured streams, which are these two.
                _ => {}
            }
        }
        let planned = plan(
            &rows,
            config.concurrency.get(),
            config.batch_size.get(),
            &names,
        );
        // Rows this sink does not send for their window — still open, or superseded by a
        // newer version in the same flush — are settled as written: the row that is sent
        // for that window covers them.
        ctx.metrics
            .written(StreamName::AppRollups, open_app + planned.superseded.0);
        ctx.metrics.written(
            StreamName::PlatformRollups,
            open_platform + planned.superseded.1,
        );
        drop(rows);
        if let Some(stop) = sink.flush(planned.lanes, &mut ctx, &mut retry).await? {
            return finish(stop, &endpoint);
        }
        ctx.input.commit().await?;
        if closed {
            break;
        }
    }
    info!(sink = %ctx.name, samples = sink.samples_written,
        rows = ctx.metrics.written_total(), dead_lettered = ctx.metrics.dead_lettered.get(),
        "The Prometheus sink is done.");
    Ok(())
}

fn finish(stop: Stop, endpoint: &str) -> Result<(), PrometheusSinkError> {
    match stop {
        Stop::LeftInBuffer => Ok(()),
        Stop::Abandoned { records } => Err(PrometheusSinkError::Abandoned {
            endpoint: endpoint.to_owned(),
            records,
        }),
    }
}

struct Sink {
    client: Client,
    dead_letter: DeadLetter,
    /// Refused requests are warned about at most ten times in ten seconds.
    rejections: RateLimit,
    samples_written: u64,
}

/// What one lane did with its requests.
#[derive(Default)]
struct LaneOutcome {
    app_rows: usize,
    platform_rows: usize,
    samples: usize,
    /// Refused requests with the status and the receiver's message.
    rejected: Vec<(Request, u16, String)>,
    /// Why the lane stopped with requests left.
    error: Option<PrometheusSinkError>,
}

impl Sink {
    /// Sends every lane's requests, lanes side by side; after a retriable failure waits and
    /// sends what is left, in order. `Some(stop)` if the sink must stop instead (shutdown
    /// while the receiver is down).
    async fn flush(
        &mut self,
        mut lanes: Vec<VecDeque<Request>>,
        ctx: &mut SinkContext,
        retry: &mut Retry,
    ) -> Result<Option<Stop>, PrometheusSinkError> {
        loop {
            let client = &self.client;
            let outcomes =
                futures_util::future::join_all(lanes.iter_mut().map(|lane| drain(client, lane)))
                    .await;
            let mut failure = None;
            let mut fatal = None;
            for outcome in outcomes {
                ctx.metrics
                    .written(StreamName::AppRollups, outcome.app_rows);
                ctx.metrics
                    .written(StreamName::PlatformRollups, outcome.platform_rows);
                self.samples_written += outcome.samples as u64;
                for (request, status, message) in &outcome.rejected {
                    self.dead_letter.write(request, *status, message)?;
                    ctx.metrics.dead_lettered(request.rows());
                    if let Some(held_back) = self.rejections.check() {
                        warn!(sink = %ctx.name, status, error = %message,
                            rows = request.rows(), samples = request.samples,
                            file = %self.dead_letter.path().display(), held_back,
                            "The receiver refused a request; it is in the dead-letter file.");
                    }
                }
                match outcome.error {
                    Some(error) if error.is_retriable() => failure = Some(error),
                    Some(error) => fatal = Some(error),
                    None => {}
                }
            }
            let unwritten: usize = lanes.iter().flatten().map(Request::rows).sum();
            if let Some(error) = fatal {
                ctx.metrics.dropped(unwritten);
                return Err(error);
            }
            match failure {
                None => {
                    retry.recovered(ctx);
                    debug!(sink = %ctx.name, samples = self.samples_written,
                        "Flushed samples to the remote-write receiver.");
                    return Ok(None);
                }
                Some(error) => {
                    if let Some(stop) = retry.wait(&error, unwritten, ctx).await {
                        return Ok(Some(stop));
                    }
                }
            }
        }
    }
}

/// Sends a lane's requests one after the other until they are done or one fails in a way
/// that stops the lane (the failed one stays at the front).
async fn drain(client: &Client, lane: &mut VecDeque<Request>) -> LaneOutcome {
    let mut outcome = LaneOutcome::default();
    while let Some(request) = lane.front() {
        match client.send(request.body.clone()).await {
            Ok(answer) => {
                let Some(request) = lane.pop_front() else {
                    break;
                };
                match answer {
                    Answer::Stored => {
                        outcome.app_rows += request.app_rows;
                        outcome.platform_rows += request.platform_rows;
                        outcome.samples += request.samples;
                    }
                    Answer::Rejected { status, message } => {
                        outcome.rejected.push((request, status, message));
                    }
                }
            }
            Err(error) => {
                outcome.error = Some(error);
                break;
            }
        }
    }
    outcome
}
