//! `sluice run`: starts the sinks, the dataflow and the sources of a config, carries reloads
//! out, and stops everything in the order that loses nothing.
//!
//! Shutdown, when the `shutdown` future given to [`run`] resolves (the CLI resolves it on
//! Ctrl-C / SIGTERM) or when every source is finite and done: sources stop and drop their
//! channel ends → Ingest sees the channel close and releases the input → rollup windows are
//! emitted (provisional on a requested stop, final otherwise) → the dataflow completes and
//! drops the sinks' senders → each sink writes what it has and returns → the run returns.
//!
//! Layout: this file is the run's sequence; [`supervisor`](self) holds the live topology and
//! carries out a [`ConfigDiff`]; `reload` says when to read the config file again.

mod reload;
mod supervisor;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sluice_api::auth::Auth;
use sluice_api::live::LiveFeed;
use sluice_api::store::Stores;
use sluice_api::{ApiConfig, ApiServer, ApiState};
use sluice_common::telemetry::SinkMetrics;
use sluice_model::records::{AppEvent, AppRollup};
use sluice_operators::app_events::{AppEventRules, LiveRules};
use sluice_sources::{SourceMetrics, SourceOutput};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use self::reload::ReloadTrigger;
use self::supervisor::{LiveSettings, Supervisor, duration_ns};
use crate::admin::{AdminServer, Registry};
use crate::cluster::{ClusterInfo, Lost, Network};
use crate::config::{Config, ConfigDiff};
use crate::dataflow::{self, DataflowPlan, IngestChannel, LiveTap, StatePlan};
use crate::routing::SinkRoutes;
use crate::state::StateError;
use crate::state::commit::CommitGate;
use crate::state::file::Checkpoint;
use crate::state::writer::Target;
use crate::state::writer::{CheckpointWriter, Release};
use crate::state::{Layout, StateDir};
use crate::status::StatusLine;
use crate::telemetry::GraphMetrics;

/// How a run ended.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    Dataflow(#[from] dataflow::DataflowError),
    /// One or more components failed; each was logged as it happened.
    #[error("{}", .0.join("; "))]
    Components(Vec<String>),
    /// The state directory is held by another run, or its checkpoint cannot be used: refused
    /// before anything starts.
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot start the checkpoint writer: {0}")]
    Writer(#[source] std::io::Error),
    /// The cluster could not be formed (SPEC §12).
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A process of the cluster went away mid-run: this one stopped reading, wrote what it
    /// had, and ends too. Names every peer lost by then (`process 2 (10.0.0.3:7100, …)`).
    #[error(
        "lost {0} of the cluster: this process stopped; the records it had read are written, \
         open minutes as of their last flush; restart every process of the cluster"
    )]
    PeerLost(String),
}

/// Why this process could not join its cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "cluster.process is not set: give each process its index in cluster.addresses with \
         `sluice run --process N` (or cluster.process)"
    )]
    NoProcess,
    #[error(
        "--process {process} is not an index of cluster.addresses (0 to {})",
        .processes - 1
    )]
    BadProcess { process: usize, processes: usize },
    #[error(transparent)]
    Connect(#[from] crate::cluster::ConnectError),
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
    /// The config file, read again on a reload ([`RunOptions::reload`], `--watch`).
    /// `None` (the embedded default): reloads are not possible.
    pub config_path: Option<PathBuf>,
    /// Reload when the config file changes, and keep running when every source is done.
    pub watch: bool,
    /// Reloads the config file when notified (the CLI on SIGHUP, tests, the reload
    /// benchmark).
    pub reload: Option<Arc<Notify>>,
    /// Notified after every reload, applied or rejected (the reload benchmark).
    pub reloaded: Option<Arc<Notify>>,
    /// This process's index in `cluster.addresses` (`--process`); wins over
    /// `cluster.process`.
    pub process: Option<usize>,
    /// The graph's counters, when the caller reads them while the run goes (`sluice
    /// bench`); a fresh set otherwise.
    pub graph_metrics: Option<Arc<GraphMetrics>>,
}

/// What a finished run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub metrics: RunMetrics,
    pub elapsed: Duration,
    /// The run ended because `shutdown` resolved rather than because sources finished.
    pub interrupted: bool,
}

/// Runs a config to completion, or until `shutdown` resolves. Blocks the calling thread.
pub fn run(
    config: Config,
    options: RunOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RunSummary, RunError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sluice-io")
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    runtime.block_on(run_async(config, options, shutdown))
}

/// The API's live streams see app events and rollup rows on their way to the sinks.
impl LiveTap for LiveFeed {
    fn app_events(&self, events: &[AppEvent]) {
        self.publish_events(events);
    }

    fn app_rollups(&self, rows: &[AppRollup]) {
        self.publish_rollups(rows);
    }
}

/// Checks a restored checkpoint against this run's config, logs what it continues from, and
/// counts the restore.
fn restore(mut checkpoint: Checkpoint, widths: &[u32], metrics: &GraphMetrics) -> Checkpoint {
    let before = checkpoint.windows.len();
    checkpoint.windows.app.retain(|w| widths.contains(&w.width));
    checkpoint
        .windows
        .platform
        .retain(|w| widths.contains(&w.width));
    let dropped = before - checkpoint.windows.len();
    if dropped > 0 {
        warn!(
            dropped,
            "The checkpoint holds windows of widths pipeline.windows no longer lists: they are \
             not continued."
        );
    }
    metrics.checkpoint.restores.incr();
    metrics
        .checkpoint
        .last_epoch
        .store(checkpoint.epoch, Ordering::Relaxed);
    info!(
        epoch = checkpoint.epoch,
        taken_at = %sluice_common::time::rfc3339(checkpoint.taken_at),
        windows = checkpoint.windows.len(),
        directory_facts = checkpoint.windows.directory.len(),
        sources = checkpoint.sources.len(),
        "Continuing from the checkpoint in the state directory."
    );
    checkpoint
}

/// A live source cannot rewind: what it sent between the checkpoint and now is missing from
/// the restored windows. Logged with its span, and counted.
fn note_restored_gap(source: &str, checkpoint: &Checkpoint, metrics: &GraphMetrics) {
    let now = sluice_common::time::now_ns();
    let seconds = (now.saturating_sub(checkpoint.taken_at)).max(0) as f64 / 1e9;
    warn!(
        source,
        from = %sluice_common::time::rfc3339(checkpoint.taken_at),
        to = %sluice_common::time::rfc3339(now),
        seconds,
        "Records the source delivered between the checkpoint and this start are missing from \
         the restored windows: a live stream cannot be rewound."
    );
    metrics
        .checkpoint
        .restored_gaps
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((source.to_owned(), seconds));
}

/// Serves `[api]`: its stores are the sinks it names (or the first that fit), read lazily, so
/// a store that is down answers 503 and never stops the run.
async fn start_api(
    config: &Config,
    api: &ApiConfig,
    live: Arc<LiveFeed>,
) -> Result<ApiServer, RunError> {
    let problem = |e: String| RunError::Components(vec![e]);
    let auth = Auth::from_config(api).map_err(|e| problem(format!("api: {e}")))?;
    let (sql, logs) = config.api_stores();
    let stores = Stores::open_limited(sql, logs, config.pipeline.window_widths(), &api.limits)
        .map_err(|e| problem(format!("api: {e}")))?
        .with_allowed_lateness(config.pipeline.allowed_lateness);
    let state = ApiState {
        auth: Arc::new(auth),
        stores: Arc::new(stores),
        live,
        limits: Arc::new(api.limits.clone()),
    };
    ApiServer::start(api, state)
        .await
        .map_err(|e| problem(format!("api.listen: {e}")))
}

async fn run_async(
    config: Config,
    options: RunOptions,
    shutdown_requested: impl Future<Output = ()> + Send + 'static,
) -> Result<RunSummary, RunError> {
    let started = Instant::now();
    // Polled once before anything starts, so whatever it listens to (the CLI's signal
    // handlers) is in place for the whole run; a stop asked this early ends the run at once.
    let mut shutdown_requested = Box::pin(shutdown_requested);
    let mut interrupted = tokio::select! {
        biased;
        () = &mut shutdown_requested => true,
        () = std::future::ready(()) => false,
    };
    let shutdown = CancellationToken::new();
    let shutting_down = Arc::new(AtomicBool::new(false));
    // Not `Default`: a fresh set starts with the watermark unknown (`i64::MIN`), not 0.
    let graph_metrics = match &options.graph_metrics {
        Some(metrics) => metrics.clone(),
        None => GraphMetrics::new(),
    };
    for warning in config.warnings() {
        warn!("{warning}");
    }
    let process = match &config.cluster {
        Some(cluster) => Some(cluster_process(cluster, options.process)?),
        None => None,
    };
    // The state directory first: a run that may not use it must not touch anything else. A
    // process of a cluster keeps its own, under the configured one.
    let mut state_dir = match (&config.pipeline.state_dir, process) {
        (Some(dir), None) => Some(StateDir::open(dir)?),
        (Some(dir), Some(process)) => Some(StateDir::open_for_process(dir, process)?),
        (None, _) => None,
    };
    // Admin endpoint: the supervisor registers every component it starts.
    let registry = Registry::new(graph_metrics.clone());
    let admin = match &config.admin {
        Some(admin) => Some(
            AdminServer::start(admin, registry.clone())
                .await
                .map_err(|e| RunError::Components(vec![format!("admin.listen: {e}")]))?,
        ),
        None => None,
    };
    let live = Arc::new(LiveFeed::new());
    registry.set_live(live.clone());
    let api = match &config.api {
        Some(api) => Some(start_api(&config, api, live.clone()).await?),
        None => None,
    };
    // Every process of the cluster connected before any sink or source starts: a cluster
    // that cannot form has touched nothing.
    let (cluster, network) = match &config.cluster {
        Some(cluster_config) => {
            let kept = match &state_dir {
                Some(state) => state.kept()?,
                None => Vec::new(),
            };
            let (cluster, network) = tokio::select! {
                joined = join_cluster(&config, cluster_config, process.unwrap_or_default(), kept) => joined?,
                () = &mut shutdown_requested => {
                    info!("Stopped while waiting for the cluster's other processes.");
                    return Ok(RunSummary {
                        metrics: RunMetrics { graph: graph_metrics, sources: Vec::new(), sinks: Vec::new() },
                        elapsed: started.elapsed(),
                        interrupted: true,
                    });
                }
            };
            registry.set_cluster(cluster.clone());
            (Some(cluster), Some(network))
        }
        None => (None, None),
    };
    // A cluster continues from the newest checkpoint every process has (SPEC §9, §12): each
    // process said which it keeps, so each makes the same choice.
    if let (Some(state), Some(cluster)) = (state_dir.as_mut(), &cluster) {
        let epoch = crate::state::common_epoch(&cluster.checkpoints)?;
        state.continue_from(epoch)?;
    }
    let restored = state_dir.as_ref().and_then(|state| {
        let checkpoint = state.restored.clone()?;
        Some(Arc::new(restore(
            checkpoint,
            &config.pipeline.window_widths(),
            &graph_metrics,
        )))
    });
    let placement = network.as_ref().map_or(
        sluice_operators::graph::Placement::single(config.pipeline.workers()),
        |network| network.placement,
    );
    let routes = Arc::new(SinkRoutes::default());

    let (batches, receiver) = mpsc::channel(config.pipeline.channel_capacity);
    let ingest = IngestChannel::new(receiver);
    let wake_channel = ingest.clone();
    let keeper = SourceOutput::new(batches, Arc::new(move || wake_channel.wake()))
        .max_bytes(config.pipeline.channel_max_bytes.0);
    let settings = LiveSettings {
        allowed_lateness_ns: Arc::new(AtomicU64::new(duration_ns(
            config.pipeline.allowed_lateness,
        ))),
        flush_interval_ns: Arc::new(AtomicU64::new(duration_ns(config.pipeline.flush_interval))),
        rules: LiveRules::new(
            AppEventRules::new(&config.pipeline.app_event_rules())
                .map_err(|e| RunError::Components(vec![format!("pipeline.app_events: {e}")]))?,
        ),
        filters: Arc::new(RwLock::new(Arc::new(
            config
                .compiled_filters()
                .map_err(|problem| RunError::Components(vec![problem.to_string()]))?,
        ))),
    };
    let (state_plan, writer) = match &state_dir {
        Some(dir) => {
            let release = Release {
                routes: routes.clone(),
                live: live.clone(),
            };
            let (target, gate) = match dir.layout() {
                Layout::Single => (Target::File(dir.checkpoint_path()), None),
                Layout::PerEpoch => {
                    let gate = Arc::new(CommitGate::default());
                    let target = Target::PerEpoch {
                        dir: dir.dir().to_owned(),
                        gate: gate.clone(),
                    };
                    (target, Some(gate))
                }
            };
            let (sender, writer) = CheckpointWriter::start(target, release, graph_metrics.clone())
                .map_err(RunError::Writer)?;
            let plan = StatePlan {
                interval: config.pipeline.checkpoint_interval,
                restored: restored.clone(),
                writer: std::sync::Mutex::new(Some(sender)),
                gate,
            };
            (Some(plan), Some(writer))
        }
        None => (None, None),
    };
    let plan = DataflowPlan {
        workers: config.pipeline.workers(),
        placement,
        allowed_lateness: settings.allowed_lateness_ns.clone(),
        rules: settings.rules.clone(),
        flush_interval: settings.flush_interval_ns.clone(),
        windows: config.pipeline.window_widths(),
        shutting_down: shutting_down.clone(),
        routes: routes.clone(),
        filters: settings.filters.clone(),
        ingest: ingest.clone(),
        metrics: graph_metrics.clone(),
        live: live.clone(),
        state: state_plan,
        listings: config.metadata.is_some() && placement.process == 0,
    };
    let metrics = RunMetrics {
        graph: graph_metrics.clone(),
        sources: Vec::new(),
        sinks: Vec::new(),
    };
    let mut supervisor = Supervisor::new(
        config.clone(),
        shutdown.clone(),
        routes.clone(),
        keeper,
        settings,
        metrics,
        registry,
        options.watch,
        shutting_down.clone(),
    );

    // Sinks first, so the dataflow has somewhere to write from its first record on.
    for (name, sink_config) in &config.sinks {
        if let Err(failure) = supervisor.start_sink(name, sink_config.clone()) {
            routes.clear();
            return Err(RunError::Components(vec![failure]));
        }
    }

    // The restored checkpoint's rollup rows may not have reached the stores before the last
    // run ended: they go again, before anything newer.
    if let Some(checkpoint) = &restored
        && !checkpoint.rows.is_empty()
    {
        let release = Release {
            routes: routes.clone(),
            live: live.clone(),
        };
        let rows = checkpoint.rows.clone();
        tokio::task::spawn_blocking(move || release.send(rows))
            .await
            .map_err(|e| RunError::Dataflow(dataflow::DataflowError::panicked(&e)))?;
    }

    // The Cloud Controller's listings (SPEC §11), on process 0 of a cluster only: one worker
    // takes them into the graph, so one process lists.
    let metadata_stop = CancellationToken::new();
    let first_listing = config
        .metadata
        .as_ref()
        .filter(|_| placement.process == 0)
        .map(|metadata| {
            start_metadata(
                metadata.clone(),
                ingest.clone(),
                graph_metrics.clone(),
                metadata_stop.clone(),
            )
        });

    // The dataflow, on its own threads: not the runtime's blocking pool, which a run that
    // lost a peer (and with it the dataflow) could not shut down.
    let mut dataflow = Box::pin(spawn_dataflow(plan, network)?);

    // The first listing before any record, so a replay is named from its first minute.
    // `startup_timeout = "0s"`: records enter at once, the listing whenever it comes.
    if let Some((first, timeout)) = first_listing
        && !interrupted
        && !timeout.is_zero()
    {
        tokio::select! {
            () = &mut shutdown_requested => interrupted = true,
            waited = tokio::time::timeout(timeout, first) => if waited.is_err() {
                error!(startup_timeout = ?timeout,
                    "The Cloud Controller gave no listing within metadata.startup_timeout: \
                     records enter the graph named by envelope tags until it does.");
            }
        }
    }

    // Sources last, those that can rewind from where the restored checkpoint left them.
    for (name, source_config) in &config.sources {
        let resume = restored
            .as_ref()
            .and_then(|checkpoint| checkpoint.sources.get(name).cloned());
        if let Some(checkpoint) = &restored
            && !source_config.component().is_finite()
        {
            note_restored_gap(name, checkpoint, &graph_metrics);
        }
        supervisor.start_source_resuming(name, source_config.clone(), resume);
    }
    supervisor.release_input_if_idle();
    supervisor.registry.mark_started();

    info!(
        sources = config.sources.len(),
        sinks = config.sinks.len(),
        workers = config.pipeline.workers(),
        "Pipeline running."
    );
    let status = options.status.then(|| {
        StatusLine::start(
            supervisor.metrics.clone(),
            cluster.clone(),
            shutdown.clone(),
        )
    });
    let health = cluster.as_ref().map(|cluster| cluster.health.clone());
    let mut lost: Option<(Lost, Instant)> = None;

    if interrupted {
        supervisor.stop();
    }
    let mut reloads = ReloadTrigger::new(
        options.config_path.clone(),
        options.watch,
        options.reload.clone(),
    );

    // Run until every source is done and the input released, or a stop. A sink replacement
    // still waiting for its predecessor keeps the loop going: its stream is paused, and the
    // dataflow cannot finish before the successor takes it.
    while supervisor.keeper.is_some()
        || !supervisor.source_tasks.is_empty()
        || !supervisor.waiting_sinks.is_empty()
    {
        tokio::select! {
            () = &mut shutdown_requested, if !shutdown.is_cancelled() => {
                interrupted = true;
                supervisor.stop();
            }
            peer = wait_for_loss(health.as_deref()), if lost.is_none() => {
                let address = address_of(cluster.as_deref(), peer.peer);
                error!(peer = peer.peer, %address, reason = %peer.reason,
                    "Lost a process of the cluster: stopping this one.");
                lost = Some((peer, Instant::now()));
                supervisor.stop();
                // The dataflow cannot finish without the lost process: release the sinks so
                // they write what they were given and end.
                routes.clear();
            }
            path = reloads.next(), if !shutdown.is_cancelled() => {
                let asked = Instant::now();
                match Config::load(&path) {
                    Ok(new) => {
                        let diff = ConfigDiff::between(&supervisor.config, &new);
                        supervisor.apply(new, &diff);
                        graph_metrics.reloads.incr();
                    }
                    Err(e) => {
                        graph_metrics.reload_failures.incr();
                        error!(path = %path.display(),
                            "The new config is rejected; the running topology carries on unchanged.");
                        for problem in &e.problems {
                            error!("  {problem}");
                        }
                    }
                }
                graph_metrics.last_reload_micros.store(
                    u64::try_from(asked.elapsed().as_micros()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
                if let Some(done) = &options.reloaded {
                    done.notify_one();
                }
            }
            Some(finished) = supervisor.source_tasks.join_next(), if !supervisor.source_tasks.is_empty() => {
                match finished {
                    Ok(ended) => supervisor.source_ended(ended),
                    Err(panic) => supervisor.fail(format!("a source panicked: {panic}")),
                }
            }
            Some(finished) = supervisor.sink_tasks.join_next(), if !supervisor.sink_tasks.is_empty() => {
                match finished {
                    Ok(ended) => supervisor.sink_ended(ended),
                    Err(panic) => supervisor.fail(format!("a sink panicked: {panic}")),
                }
            }
        }
    }

    // No record enters any more: no listing is needed.
    metadata_stop.cancel();
    // The loop may have ended for another reason a loss caused (a source whose batches the
    // stopped dataflow no longer takes): that is the loss, not the source. Every source is
    // done: the dataflow drains and completes, then the sinks finish.
    let lost = lost.or_else(|| {
        let peer = health.as_ref()?.lost()?;
        Some((peer, Instant::now()))
    });
    let dataflow_result = match lost {
        Some(lost) => Err(lost),
        None => dataflow_or_loss(dataflow.as_mut(), health.as_deref())
            .await
            .map_err(|peer| (peer, Instant::now())),
    };
    let dataflow_result = match dataflow_result {
        Ok(result) => result,
        Err(lost) => {
            routes.clear();
            return Err(finish_after_loss(
                &mut supervisor,
                cluster.as_deref(),
                lost,
                (&shutdown, status),
            )
            .await);
        }
    };
    if let Some(writer) = writer {
        // The last checkpoint is on disk before the run reports how it ended.
        tokio::task::spawn_blocking(move || writer.finish())
            .await
            .ok();
    }
    drop(state_dir);
    routes.clear();
    dataflow_result?;
    while let Some(finished) = supervisor.sink_tasks.join_next().await {
        match finished {
            Ok((name, generation, result)) => {
                let current = supervisor.is_current_sink(&name, generation);
                match result {
                    Ok(()) if current => info!(sink = %name, "Sink finished."),
                    Ok(()) => info!(sink = %name, "The sink's previous instance finished."),
                    Err(e) => {
                        error!(sink = %name, "Sink stopped: {e}");
                        supervisor.failures.push(format!("sink {name}: {e}"));
                    }
                }
            }
            Err(panic) => supervisor
                .failures
                .push(format!("a sink panicked: {panic}")),
        }
    }
    shutdown.cancel();
    if let Some(status) = status {
        status.finish().await;
    }
    if let Some(admin) = admin {
        admin.stop().await;
    }
    // Open streams end, so the server can stop.
    live.close();
    if let Some(api) = api {
        api.stop().await;
    }
    if let Some(cluster) = &cluster {
        let (sent, received) = cluster.bytes();
        info!(
            sent_bytes = sent,
            received_bytes = received,
            "Bytes exchanged with the cluster's other processes."
        );
    }
    if !supervisor.failures.is_empty() {
        return Err(RunError::Components(supervisor.failures));
    }
    Ok(RunSummary {
        metrics: supervisor.metrics,
        elapsed: started.elapsed(),
        interrupted,
    })
}

/// Starts the Cloud Controller's listings into the graph; the future resolves once the first
/// attempt has ended (a listing delivered, or a failure logged), to be awaited up to the
/// returned `startup_timeout`.
fn start_metadata(
    config: sluice_sources::metadata::MetadataConfig,
    ingest: Arc<IngestChannel>,
    metrics: Arc<GraphMetrics>,
    stop: CancellationToken,
) -> (impl Future<Output = ()>, Duration) {
    let timeout = config.startup_timeout;
    let (done, first) = tokio::sync::oneshot::channel::<()>();
    info!(cc_url = %config.cc_url, refresh = ?config.refresh,
        "Listing the Cloud Controller's apps for the directory.");
    tokio::spawn(sluice_sources::metadata::run(
        config,
        metrics.metadata.clone(),
        stop,
        move |apps| ingest.send_listing(sluice_operators::directory::Listing { apps }),
        move || {
            let _ = done.send(());
        },
    ));
    (
        async move {
            let _ = first.await;
        },
        timeout,
    )
}

/// Joins the cluster of `[cluster]`: connects to every other process (on a thread of its
/// own, as it may wait up to `startup_timeout`) and starts timely's communication.
async fn join_cluster(
    config: &Config,
    cluster: &crate::cluster::ClusterConfig,
    process: usize,
    checkpoints: Vec<u64>,
) -> Result<(Arc<ClusterInfo>, Network), RunError> {
    let processes = cluster.addresses.len();
    let workers = config.pipeline.workers();
    // What every process's graph must agree on beyond the worker count.
    let shape = format!(
        "windows {:?}, checkpoints {}",
        config.pipeline.window_widths(),
        if config.pipeline.state_dir.is_some() {
            "on"
        } else {
            "off"
        }
    );
    let cluster = cluster.clone();
    let (info, network) = tokio::task::spawn_blocking(move || {
        crate::cluster::join(&cluster, process, workers, shape, checkpoints)
    })
    .await
    .map_err(|e| RunError::Dataflow(dataflow::DataflowError::panicked(&e)))?
    .map_err(ClusterError::from)?;
    info!(
        process,
        processes,
        workers,
        "Joined the cluster: {} workers in all.",
        workers * processes
    );
    Ok((Arc::new(info), network))
}

/// This process's index in the cluster: `--process`, else `cluster.process`.
fn cluster_process(
    cluster: &crate::cluster::ClusterConfig,
    process: Option<usize>,
) -> Result<usize, RunError> {
    let processes = cluster.addresses.len();
    let process = process.or(cluster.process).ok_or(ClusterError::NoProcess)?;
    if process >= processes {
        return Err(ClusterError::BadProcess { process, processes }.into());
    }
    Ok(process)
}

/// Starts the dataflow on a thread of its own; the future resolves with how it ended.
fn spawn_dataflow(
    plan: DataflowPlan,
    network: Option<Network>,
) -> Result<impl Future<Output = Result<(), dataflow::DataflowError>>, RunError> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(crate::cluster::DATAFLOW_THREAD.to_owned())
        .spawn(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                dataflow::run(plan, network)
            }));
            let outcome = outcome.unwrap_or_else(|panic| {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "unknown panic".to_owned());
                Err(dataflow::DataflowError::panicked(&message))
            });
            let _ = done.send(outcome);
        })
        .map_err(RunError::Runtime)?;
    Ok(async move {
        result.await.unwrap_or_else(|_| {
            Err(dataflow::DataflowError::panicked(
                &"the dataflow thread ended without a result",
            ))
        })
    })
}

/// How the dataflow ended, or the peer whose loss means it never will (or failed because of
/// it: a failure followed within [`LOSS_SETTLE`] by a loss is the loss).
async fn dataflow_or_loss(
    dataflow: std::pin::Pin<&mut impl Future<Output = Result<(), dataflow::DataflowError>>>,
    health: Option<&crate::cluster::Health>,
) -> Result<Result<(), dataflow::DataflowError>, Lost> {
    let Some(health) = health else {
        return Ok(dataflow.await);
    };
    let result = tokio::select! {
        result = dataflow => result,
        peer = health.wait_for_loss() => return Err(peer),
    };
    if result.is_err()
        && let Ok(peer) = tokio::time::timeout(LOSS_SETTLE, health.wait_for_loss()).await
    {
        return Err(peer);
    }
    Ok(result)
}

/// Resolves when a peer of the cluster is lost; never without a cluster.
async fn wait_for_loss(health: Option<&crate::cluster::Health>) -> Lost {
    match health {
        Some(health) => health.wait_for_loss().await,
        None => std::future::pending().await,
    }
}

fn address_of(cluster: Option<&ClusterInfo>, peer: usize) -> String {
    cluster
        .and_then(|cluster| cluster.addresses.get(peer).cloned())
        .unwrap_or_default()
}

/// How long sinks get, after a peer is lost, to write what they were handed.
const SINK_DRAIN_AFTER_LOSS: Duration = Duration::from_secs(30);
/// When one process dies the others stop too, and a survivor may notice one of those exits
/// before the death that caused them: every peer lost this soon after the first is named.
const LOSS_SETTLE: Duration = Duration::from_secs(1);

/// After a lost peer: the sources are stopped and the sinks released; waits (a bounded time)
/// for the sinks to write what they have, and says why the run ends. The dataflow is not
/// waited for: without the lost process it cannot complete, and the process exits.
async fn finish_after_loss(
    supervisor: &mut Supervisor,
    cluster: Option<&ClusterInfo>,
    (peer, noticed): (Lost, Instant),
    (shutdown, status): (&CancellationToken, Option<StatusLine>),
) -> RunError {
    let drained = tokio::time::timeout(SINK_DRAIN_AFTER_LOSS, async {
        while let Some(finished) = supervisor.sink_tasks.join_next().await {
            if let Ok((name, _, Err(e))) = finished {
                error!(sink = %name, "Sink stopped: {e}");
            }
        }
    })
    .await;
    if drained.is_err() {
        warn!(
            "Sinks still writing {}s after the peer was lost: ending without them.",
            SINK_DRAIN_AFTER_LOSS.as_secs()
        );
    }
    shutdown.cancel();
    if let Some(status) = status {
        status.finish().await;
    }
    tokio::time::sleep(LOSS_SETTLE.saturating_sub(noticed.elapsed())).await;
    let mut lost = cluster.map(|c| c.health.all_lost()).unwrap_or_default();
    if lost.is_empty() {
        lost.push(peer);
    }
    let named: Vec<String> = lost
        .iter()
        .map(|lost| {
            format!(
                "process {} ({}, {})",
                lost.peer,
                address_of(cluster, lost.peer),
                lost.reason
            )
        })
        .collect();
    RunError::PeerLost(named.join(" and "))
}
