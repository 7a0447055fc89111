//! `sluice run`: starts the sinks, the dataflow and the sources of a config, and stops them in
//! the order that loses nothing.
//!
//! Shutdown, on Ctrl-C / SIGTERM or when every source is finite and done: sources stop and drop
//! their channel ends → Ingest sees the channel close and releases the input → rollup windows
//! are emitted (provisional on a signal, final otherwise) → the dataflow completes and drops the
//! sinks' senders → each sink writes what it has and returns → the run returns.

use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sluice_connectors::sink::{self, SinkContext, SinkMetrics};
use sluice_connectors::source::{self, SourceContext, SourceMetrics, SourceOutput};
use sluice_operators::app_events::AppEventRules;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::admin::{AdminServer, Registry};
use crate::config::{Config, SinkConfig, SourceConfig};
use crate::dataflow::{self, DataflowPlan, IngestChannel};
use crate::status::StatusLine;
use crate::telemetry::GraphMetrics;

type BoxError = Box<dyn Error + Send + Sync>;

/// Batches a sink may have queued before the dataflow waits for it.
const SINK_CHANNEL_CAPACITY: usize = 256;

/// How a run ended.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("the dataflow failed: {0}")]
    Dataflow(String),
    /// One or more components failed; each was logged as it happened.
    #[error("{}", .0.join("; "))]
    Components(Vec<String>),
}

/// Live handles on a running pipeline's counters.
#[derive(Debug, Clone)]
pub struct RunMetrics {
    pub graph: Arc<GraphMetrics>,
    pub sources: Vec<(String, Arc<SourceMetrics>)>,
    pub sinks: Vec<(String, Arc<SinkMetrics>)>,
}

/// Options of `sluice run` beyond the config file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Show the live status line (on a terminal) or log status every few seconds.
    pub status: bool,
    /// Stop the run when this is cancelled, as Ctrl-C does (tests, embedding).
    pub stop: Option<CancellationToken>,
    /// Don't install the Ctrl-C / SIGTERM handler (tests run several pipelines in one process).
    pub no_signal_handler: bool,
}

/// What a finished run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub metrics: RunMetrics,
    pub elapsed: Duration,
    /// The run ended on a signal (or `RunOptions::stop`) rather than because sources finished.
    pub interrupted: bool,
}

/// Runs a config to completion. Blocks the calling thread.
pub fn run(config: Config, options: RunOptions) -> Result<RunSummary, RunError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sluice-io")
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    runtime.block_on(run_async(config, options))
}

async fn run_async(config: Config, options: RunOptions) -> Result<RunSummary, RunError> {
    let started = Instant::now();
    let shutdown = CancellationToken::new();
    let shutting_down = Arc::new(AtomicBool::new(false));
    let graph_metrics = GraphMetrics::new();
    let mut failures: Vec<String> = Vec::new();
    // Admin endpoint: every component is registered as it starts.
    let registry = Registry::new(graph_metrics.clone());
    let admin = match &config.admin {
        Some(admin) => Some(
            AdminServer::start(admin, registry.clone())
                .await
                .map_err(|e| RunError::Components(vec![format!("admin.listen: {e}")]))?,
        ),
        None => None,
    };

    // Sinks first, so the dataflow has somewhere to write from its first record on.
    let mut sink_tasks = JoinSet::new();
    let mut sink_plan = Vec::new();
    let mut sink_metrics = Vec::new();
    for (name, sink_config) in &config.sinks {
        let (ctx, sender) = SinkContext::with_buffer(
            name.as_str(),
            SINK_CHANNEL_CAPACITY,
            sink_config.buffer(),
            shutdown.clone(),
        )
        .map_err(|e| RunError::Components(vec![format!("sinks.{name}.buffer: {e}")]))?;
        sink_metrics.push((name.clone(), ctx.metrics.clone()));
        registry.add_sink(name, sink_config.type_name(), ctx.metrics.clone());
        sink_plan.push((sink_config.streams().to_vec(), sender));
        let name = name.clone();
        let sink_config = sink_config.clone();
        sink_tasks.spawn(async move { (name, run_sink(sink_config, ctx).await) });
    }

    // The dataflow, on its own threads.
    let (batches, receiver) = mpsc::channel(config.pipeline.channel_capacity);
    let ingest = IngestChannel::new(receiver);
    let rules = AppEventRules::new(&config.pipeline.app_event_rules())
        .map_err(|e| RunError::Components(vec![format!("pipeline.app_events: {e}")]))?;
    let plan = DataflowPlan {
        workers: config.pipeline.workers(),
        allowed_lateness: config.pipeline.allowed_lateness,
        rules,
        flush_interval: config.pipeline.flush_interval,
        shutting_down: shutting_down.clone(),
        sinks: sink_plan,
        ingest: ingest.clone(),
        metrics: graph_metrics.clone(),
    };
    let dataflow = tokio::task::spawn_blocking(move || dataflow::run(plan));

    // Sources last.
    let mut source_tasks = JoinSet::new();
    let mut source_metrics = Vec::new();
    for (name, source_config) in &config.sources {
        let wake_channel = ingest.clone();
        let output = SourceOutput::new(batches.clone(), Arc::new(move || wake_channel.wake()));
        let ctx = SourceContext::new(name.as_str(), output, shutdown.child_token());
        source_metrics.push((name.clone(), ctx.metrics.clone()));
        registry.add_source(name, ctx.metrics.clone());
        let name = name.clone();
        let source_config = source_config.clone();
        source_tasks.spawn(async move { (name, run_source(source_config, ctx).await) });
    }
    // Only the sources hold the channel now: it closes when the last one finishes.
    drop(batches);

    let metrics = RunMetrics {
        graph: graph_metrics,
        sources: source_metrics,
        sinks: sink_metrics,
    };
    info!(
        sources = config.sources.len(),
        sinks = config.sinks.len(),
        workers = config.pipeline.workers(),
        "Pipeline running."
    );
    let status = options
        .status
        .then(|| StatusLine::start(metrics.clone(), shutdown.clone()));

    let interrupted = Arc::new(AtomicBool::new(false));
    let stop_requested = {
        let stop = options.stop.clone().unwrap_or_default();
        let handle_signals = !options.no_signal_handler;
        async move {
            if handle_signals {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    signal = wait_for_signal() => info!(signal, "Stopping: finishing what was read, then exiting."),
                }
            } else {
                stop.cancelled().await;
            }
        }
    };
    tokio::pin!(stop_requested);

    // Wait for the sources, or a stop.
    loop {
        tokio::select! {
            _ = &mut stop_requested, if !shutdown.is_cancelled() => {
                interrupted.store(true, Ordering::Relaxed);
                shutting_down.store(true, Ordering::Relaxed);
                shutdown.cancel();
            }
            finished = source_tasks.join_next() => match finished {
                None => break,
                Some(Ok((name, Ok(())))) => info!(source = %name, "Source finished."),
                Some(Ok((name, Err(e)))) => {
                    error!(source = %name, "Source stopped: {e}");
                    failures.push(format!("source {name}: {e}"));
                    // A source that cannot run makes the run's output incomplete: stop cleanly.
                    shutting_down.store(true, Ordering::Relaxed);
                    shutdown.cancel();
                }
                Some(Err(panic)) => {
                    error!("A source task panicked: {panic}");
                    failures.push(format!("a source panicked: {panic}"));
                    shutdown.cancel();
                }
            },
            // A sink only ends early on an error it cannot retry: what it would have written is
            // lost from here on, so the run stops cleanly rather than read on for nothing.
            Some(finished) = sink_tasks.join_next(), if !sink_tasks.is_empty() => {
                let failure = match finished {
                    Ok((name, Ok(()))) => format!("sink {name} stopped before the pipeline did"),
                    Ok((name, Err(e))) => format!("sink {name}: {e}"),
                    Err(panic) => format!("a sink panicked: {panic}"),
                };
                error!("Stopping the run: {failure}");
                failures.push(failure);
                shutting_down.store(true, Ordering::Relaxed);
                shutdown.cancel();
            }
        }
    }

    // Every source is done: the dataflow drains and completes, then the sinks finish.
    match dataflow.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(RunError::Dataflow(e)),
        Err(panic) => return Err(RunError::Dataflow(panic.to_string())),
    }
    // A second signal while sinks drain exits at once: the operator has asked twice.
    let second_signal = async {
        if !options.no_signal_handler && interrupted.load(Ordering::Relaxed) {
            let _ = wait_for_signal().await;
            warn!("Second signal: exiting without waiting for the sinks.");
            std::process::exit(130);
        }
        std::future::pending::<()>().await
    };
    tokio::pin!(second_signal);
    loop {
        tokio::select! {
            _ = &mut second_signal => {}
            finished = sink_tasks.join_next() => match finished {
                None => break,
                Some(Ok((name, Ok(())))) => info!(sink = %name, "Sink finished."),
                Some(Ok((name, Err(e)))) => {
                    error!(sink = %name, "Sink stopped: {e}");
                    failures.push(format!("sink {name}: {e}"));
                }
                Some(Err(panic)) => failures.push(format!("a sink panicked: {panic}")),
            },
        }
    }
    shutdown.cancel();
    if let Some(status) = status {
        status.finish().await;
    }
    if let Some(admin) = admin {
        admin.stop().await;
    }
    if !failures.is_empty() {
        return Err(RunError::Components(failures));
    }
    Ok(RunSummary {
        metrics,
        elapsed: started.elapsed(),
        interrupted: interrupted.load(Ordering::Relaxed),
    })
}

async fn run_source(config: SourceConfig, ctx: SourceContext) -> Result<(), BoxError> {
    match config {
        SourceConfig::File(c) => source::file::run(c, ctx).await?,
        SourceConfig::Firehose(c) => source::firehose::run(c, ctx).await?,
        SourceConfig::Rlp(c) => source::rlp::run(c, ctx).await?,
        SourceConfig::Simulator(c) => source::simulator::run(c, ctx).await?,
    }
    Ok(())
}

async fn run_sink(config: SinkConfig, ctx: SinkContext) -> Result<(), BoxError> {
    match config {
        SinkConfig::Sqlite(c) => sink::sqlite::run(c, ctx).await?,
        SinkConfig::Mysql(c) => sink::mysql::run(c, ctx).await?,
        SinkConfig::Elasticsearch(c) => sink::elasticsearch::run(c, ctx).await?,
        SinkConfig::Stdout(c) => sink::stdout::run(c, ctx).await?,
        SinkConfig::Blackhole(c) => sink::blackhole::run(c, ctx).await?,
    }
    Ok(())
}

/// Waits for SIGINT or SIGTERM and names it.
async fn wait_for_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}
