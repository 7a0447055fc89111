//! `sluice run`: starts the sinks, the dataflow and the sources of a config, and stops them in
//! the order that loses nothing.
//!
//! Shutdown, on Ctrl-C / SIGTERM or when every source is finite and done: sources stop and drop
//! their channel ends → Ingest sees the channel close and releases the input → rollup windows
//! are emitted (provisional on a signal, final otherwise) → the dataflow completes and drops the
//! sinks' senders → each sink writes what it has and returns → the run returns.

use std::collections::BTreeMap;
use std::error::Error;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sluice_common::telemetry::SinkMetrics;
use sluice_operators::app_events::{AppEventRules, LiveRules};
use sluice_operators::filter::Filters;
use sluice_sinks::{self as sink, SinkContext};
use sluice_sources::{self as source, SourceContext, SourceMetrics, SourceOutput};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::admin::{AdminServer, Registry};
use crate::config::{Config, SinkConfig, SourceConfig};
use crate::dataflow::{self, DataflowPlan, IngestChannel};
use crate::routing::SinkRoutes;
use crate::status::StatusLine;
use crate::telemetry::GraphMetrics;
use sluice_api::auth::Auth;
use sluice_api::live::LiveFeed;
use sluice_api::store::Stores;
use sluice_api::{ApiConfig, ApiServer, ApiState};

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
    /// Don't install the Ctrl-C / SIGTERM / SIGHUP handlers (tests run several pipelines in
    /// one process).
    pub no_signal_handler: bool,
    /// The config file, read again on a reload (SIGHUP, `--watch`, [`RunOptions::reload`]).
    /// `None` (the embedded default): reloads are not possible.
    pub config_path: Option<PathBuf>,
    /// Reload when the config file changes, and keep running when every source is done.
    pub watch: bool,
    /// Reloads the config file when notified (tests, embedding, the reload benchmark).
    pub reload: Option<Arc<tokio::sync::Notify>>,
    /// Notified after every reload, applied or rejected (the reload benchmark).
    pub reloaded: Option<Arc<tokio::sync::Notify>>,
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

/// A running source or sink: which start of it this is (its generation), and for a source
/// the token that stops it.
#[derive(Debug)]
struct Component {
    generation: u64,
    stop: Option<CancellationToken>,
}

type TaskResult = (String, u64, Result<(), BoxError>);

/// The live topology: starts, stops and replaces components, and tells the tasks of the
/// current ones from those a reload retired.
struct Supervisor {
    config: Config,
    shutdown: CancellationToken,
    routes: Arc<SinkRoutes>,
    /// Held while sources may still be started; its drop (with every source's) closes the
    /// dataflow's input.
    keeper: Option<SourceOutput>,
    allowed_lateness_ns: Arc<AtomicU64>,
    flush_interval_ns: Arc<AtomicU64>,
    rules: LiveRules,
    filters: Arc<RwLock<Arc<Filters>>>,
    /// The rollup widths the graph was built with: sinks started by a reload get these, not
    /// the new file's (a change of `pipeline.windows` needs a restart).
    windows: Vec<u32>,
    sources: BTreeMap<String, Component>,
    sinks: BTreeMap<String, Component>,
    /// Replacements waiting for their predecessor to finish (a store never has two writers).
    waiting_sources: BTreeMap<String, SourceConfig>,
    waiting_sinks: BTreeMap<String, SinkConfig>,
    /// Instances of a sink name that were removed or replaced and are still writing what
    /// they hold; a successor of that name waits for them.
    draining_sinks: BTreeMap<String, usize>,
    source_tasks: JoinSet<TaskResult>,
    sink_tasks: JoinSet<TaskResult>,
    next_generation: u64,
    metrics: RunMetrics,
    /// What the admin endpoint shows: the components of the current config.
    registry: Arc<Registry>,
    failures: Vec<String>,
    /// `--watch`: the run goes on when every source is done, waiting for a new config.
    watch: bool,
}

impl Supervisor {
    fn generation(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }

    fn start_sink(&mut self, name: &str, config: SinkConfig) -> Result<(), String> {
        let (ctx, sender) = SinkContext::with_buffer(
            name,
            SINK_CHANNEL_CAPACITY,
            config.buffer(),
            self.shutdown.clone(),
        )
        .map_err(|e| format!("sink {name}: {e}"))?;
        let ctx = ctx.with_windows(&self.windows);
        let generation = self.generation();
        self.metrics
            .sinks
            .push((name.to_owned(), ctx.metrics.clone()));
        self.registry
            .add_sink(name, config.type_name(), ctx.metrics.clone());
        self.routes.insert(name, config.streams().to_vec(), sender);
        let task_name = name.to_owned();
        self.sink_tasks
            .spawn(async move { (task_name, generation, run_sink(config, ctx).await) });
        self.sinks.insert(
            name.to_owned(),
            Component {
                generation,
                stop: None,
            },
        );
        Ok(())
    }

    fn start_source(&mut self, name: &str, config: SourceConfig) {
        let Some(keeper) = &self.keeper else {
            warn!(source = %name, "Not starting the source: the run is stopping.");
            return;
        };
        let stop = self.shutdown.child_token();
        let ctx = SourceContext::new(name, keeper.clone(), stop.clone());
        let generation = self.generation();
        self.metrics
            .sources
            .push((name.to_owned(), ctx.metrics.clone()));
        self.registry.add_source(name, ctx.metrics.clone());
        let task_name = name.to_owned();
        self.source_tasks
            .spawn(async move { (task_name, generation, run_source(config, ctx).await) });
        self.sources.insert(
            name.to_owned(),
            Component {
                generation,
                stop: Some(stop),
            },
        );
    }

    /// Stops everything: sources stop reading, the input closes once they are gone.
    fn stop(&mut self) {
        self.shutdown.cancel();
        self.keeper = None;
        self.waiting_sources.clear();
    }

    /// Records a failure that makes the run's output incomplete and stops the run cleanly.
    fn fail(&mut self, failure: String, shutting_down: &AtomicBool) {
        error!("Stopping the run: {failure}");
        self.failures.push(failure);
        shutting_down.store(true, Ordering::Relaxed);
        self.stop();
    }

    /// Lets the input close once no source runs or waits to run (unless `--watch`).
    fn release_input_if_idle(&mut self) {
        if !self.watch && self.sources.is_empty() && self.waiting_sources.is_empty() {
            self.keeper = None;
        }
    }

    fn source_ended(&mut self, ended: TaskResult, shutting_down: &AtomicBool) {
        let (name, generation, result) = ended;
        let current = self
            .sources
            .get(&name)
            .is_some_and(|c| c.generation == generation);
        if current {
            self.sources.remove(&name);
        }
        match result {
            Ok(()) if current => info!(source = %name, "Source finished."),
            Ok(()) => info!(source = %name, "The source's previous instance stopped."),
            Err(e) if current && !self.shutdown.is_cancelled() => {
                self.fail(format!("source {name}: {e}"), shutting_down);
            }
            Err(e) => warn!(source = %name, "The source's previous instance stopped: {e}"),
        }
        if !current && let Some(config) = self.waiting_sources.remove(&name) {
            self.start_source(&name, config);
            info!(source = %name, "Source restarted with its new config.");
        }
        self.release_input_if_idle();
    }

    fn sink_ended(&mut self, ended: TaskResult, shutting_down: &AtomicBool) {
        let (name, generation, result) = ended;
        let current = self
            .sinks
            .get(&name)
            .is_some_and(|c| c.generation == generation);
        if current {
            // A sink only ends early on an error it cannot retry: what it would have written
            // is lost from here on, so the run stops cleanly rather than read on for nothing.
            self.sinks.remove(&name);
            self.routes.remove(&name);
            let failure = match result {
                Ok(()) => format!("sink {name} stopped before the pipeline did"),
                Err(e) => format!("sink {name}: {e}"),
            };
            self.fail(failure, shutting_down);
            return;
        }
        match result {
            Ok(()) => {
                info!(sink = %name, "The sink's previous instance wrote everything it had and closed.")
            }
            Err(e) => {
                error!(sink = %name, "The sink's previous instance failed: {e}");
                self.failures
                    .push(format!("sink {name} (before reload): {e}"));
            }
        }
        if let Some(draining) = self.draining_sinks.get_mut(&name) {
            *draining = draining.saturating_sub(1);
            if *draining > 0 {
                return;
            }
            self.draining_sinks.remove(&name);
        }
        if let Some(config) = self.waiting_sinks.remove(&name) {
            match self.start_sink(&name, config) {
                Ok(()) => info!(sink = %name, "Sink restarted with its new config."),
                Err(failure) => {
                    self.routes.remove(&name);
                    self.fail(failure, shutting_down);
                }
            }
        }
    }

    /// Applies a new config: unchanged components keep running untouched, removed ones stop
    /// (sinks drain first), added ones start, changed ones are replaced once their
    /// predecessor has finished.
    fn apply(&mut self, new: Config, shutting_down: &AtomicBool) {
        let started = Instant::now();
        let old = std::mem::replace(&mut self.config, new.clone());
        let (mut added, mut removed, mut replaced) = (Vec::new(), Vec::new(), Vec::new());

        if new.pipeline.allowed_lateness != old.pipeline.allowed_lateness {
            self.allowed_lateness_ns.store(
                duration_ns(new.pipeline.allowed_lateness),
                Ordering::Relaxed,
            );
            info!(from = ?old.pipeline.allowed_lateness, to = ?new.pipeline.allowed_lateness,
                "Allowed lateness changed.");
        }
        if new.pipeline.flush_interval != old.pipeline.flush_interval {
            self.flush_interval_ns
                .store(duration_ns(new.pipeline.flush_interval), Ordering::Relaxed);
            info!(from = ?old.pipeline.flush_interval, to = ?new.pipeline.flush_interval,
                "Flush interval changed.");
        }
        if new.pipeline.app_event_rules() != old.pipeline.app_event_rules() {
            match AppEventRules::new(&new.pipeline.app_event_rules()) {
                Ok(rules) => {
                    self.rules.replace(rules);
                    info!(
                        rules = new.pipeline.app_event_rules().len(),
                        "App-event rules changed."
                    );
                }
                // Validation compiled them already; this cannot happen.
                Err(problem) => error!("App-event rules not changed: {problem}"),
            }
        }
        if new.filters != old.filters {
            match new.compiled_filters() {
                Ok(filters) => {
                    *self
                        .filters
                        .write()
                        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(filters);
                    info!(filters = new.filters.len(), "Filters changed.");
                }
                // Validation compiled them already; this cannot happen.
                Err(problem) => error!("Filters not changed: {problem}"),
            }
        }
        let mut needs_restart = Vec::new();
        if new.pipeline.workers != old.pipeline.workers {
            needs_restart.push("pipeline.workers");
        }
        if new.pipeline.channel_capacity != old.pipeline.channel_capacity {
            needs_restart.push("pipeline.channel_capacity");
        }
        if new.pipeline.window_widths() != old.pipeline.window_widths() {
            needs_restart.push("pipeline.windows");
        }
        if new.admin != old.admin {
            needs_restart.push("admin");
        }
        if new.api != old.api || new.api_stores() != old.api_stores() {
            needs_restart.push("api");
        }
        for key in needs_restart {
            warn!(
                key,
                "This change takes effect at the next start; the running graph keeps its value."
            );
        }

        for (name, _) in old
            .sinks
            .iter()
            .filter(|(n, _)| !new.sinks.contains_key(*n))
        {
            self.routes.remove(name);
            if self.sinks.remove(name).is_some() {
                *self.draining_sinks.entry(name.clone()).or_default() += 1;
            }
            self.waiting_sinks.remove(name);
            self.registry.remove_sink(name);
            removed.push(format!("sink {name}"));
        }
        for (name, config) in &new.sinks {
            match old.sinks.get(name) {
                Some(previous) if previous == config => {}
                Some(_)
                    if self.waiting_sinks.contains_key(name) || !self.sinks.contains_key(name) =>
                {
                    // Its predecessor is still draining: start this config instead.
                    self.waiting_sinks.insert(name.clone(), config.clone());
                    replaced.push(format!("sink {name}"));
                }
                Some(_) => {
                    self.routes.pause(name);
                    self.sinks.remove(name);
                    *self.draining_sinks.entry(name.clone()).or_default() += 1;
                    self.waiting_sinks.insert(name.clone(), config.clone());
                    replaced.push(format!("sink {name}"));
                }
                None if self.draining_sinks.contains_key(name) => {
                    // A removed sink of this name is still writing: this one waits for it.
                    self.routes.insert_paused(name, config.streams().to_vec());
                    self.waiting_sinks.insert(name.clone(), config.clone());
                    added.push(format!("sink {name}"));
                }
                None => {
                    if let Err(failure) = self.start_sink(name, config.clone()) {
                        self.fail(failure, shutting_down);
                        return;
                    }
                    added.push(format!("sink {name}"));
                }
            }
        }

        for (name, _) in old
            .sources
            .iter()
            .filter(|(n, _)| !new.sources.contains_key(*n))
        {
            if let Some(component) = self.sources.remove(name)
                && let Some(stop) = component.stop
            {
                stop.cancel();
            }
            self.waiting_sources.remove(name);
            self.registry.remove_source(name);
            removed.push(format!("source {name}"));
        }
        for (name, config) in &new.sources {
            match old.sources.get(name) {
                Some(previous) if previous == config => {}
                Some(_) if self.waiting_sources.contains_key(name) => {
                    // Its predecessor is still stopping: start this config instead.
                    self.waiting_sources.insert(name.clone(), config.clone());
                    replaced.push(format!("source {name}"));
                }
                Some(_) => {
                    if let Some(component) = self.sources.remove(name)
                        && let Some(stop) = component.stop
                    {
                        stop.cancel();
                        self.waiting_sources.insert(name.clone(), config.clone());
                    } else {
                        // It had finished: run the new config now.
                        self.start_source(name, config.clone());
                    }
                    replaced.push(format!("source {name}"));
                }
                None => {
                    self.start_source(name, config.clone());
                    added.push(format!("source {name}"));
                }
            }
        }
        self.release_input_if_idle();
        info!(
            added = ?added,
            removed = ?removed,
            replaced = ?replaced,
            micros = started.elapsed().as_micros() as u64,
            "Config reloaded."
        );
    }
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
    let stores = Stores::open(sql, logs, config.pipeline.window_widths())
        .map_err(|e| problem(format!("api: {e}")))?
        .with_allowed_lateness(config.pipeline.allowed_lateness);
    let state = ApiState {
        auth: Arc::new(auth),
        stores: Arc::new(stores),
        live,
    };
    ApiServer::start(api, state)
        .await
        .map_err(|e| problem(format!("api.listen: {e}")))
}

fn duration_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

async fn run_async(config: Config, options: RunOptions) -> Result<RunSummary, RunError> {
    let started = Instant::now();
    let shutdown = CancellationToken::new();
    let shutting_down = Arc::new(AtomicBool::new(false));
    let graph_metrics = GraphMetrics::new();
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
    let api = match &config.api {
        Some(api) => Some(start_api(&config, api, live.clone()).await?),
        None => None,
    };
    let routes = Arc::new(SinkRoutes::default());

    let (batches, receiver) = mpsc::channel(config.pipeline.channel_capacity);
    let ingest = IngestChannel::new(receiver);
    let wake_channel = ingest.clone();
    let keeper = SourceOutput::new(batches, Arc::new(move || wake_channel.wake()));
    let allowed_lateness_ns = Arc::new(AtomicU64::new(duration_ns(
        config.pipeline.allowed_lateness,
    )));
    let flush_interval_ns = Arc::new(AtomicU64::new(duration_ns(config.pipeline.flush_interval)));
    let rules = LiveRules::new(
        AppEventRules::new(&config.pipeline.app_event_rules())
            .map_err(|e| RunError::Components(vec![format!("pipeline.app_events: {e}")]))?,
    );
    let windows = config.pipeline.window_widths();
    let filters = Arc::new(RwLock::new(Arc::new(
        config
            .compiled_filters()
            .map_err(|problem| RunError::Components(vec![problem]))?,
    )));
    let mut supervisor = Supervisor {
        config: config.clone(),
        shutdown: shutdown.clone(),
        routes: routes.clone(),
        keeper: Some(keeper),
        allowed_lateness_ns: allowed_lateness_ns.clone(),
        flush_interval_ns: flush_interval_ns.clone(),
        rules: rules.clone(),
        filters: filters.clone(),
        windows: windows.clone(),
        sources: BTreeMap::new(),
        sinks: BTreeMap::new(),
        waiting_sources: BTreeMap::new(),
        waiting_sinks: BTreeMap::new(),
        draining_sinks: BTreeMap::new(),
        source_tasks: JoinSet::new(),
        sink_tasks: JoinSet::new(),
        next_generation: 0,
        metrics: RunMetrics {
            graph: graph_metrics.clone(),
            sources: Vec::new(),
            sinks: Vec::new(),
        },
        failures: Vec::new(),
        watch: options.watch,
        registry,
    };

    // Sinks first, so the dataflow has somewhere to write from its first record on.
    for (name, sink_config) in &config.sinks {
        if let Err(failure) = supervisor.start_sink(name, sink_config.clone()) {
            routes.clear();
            return Err(RunError::Components(vec![failure]));
        }
    }

    // The dataflow, on its own threads.
    let plan = DataflowPlan {
        workers: config.pipeline.workers(),
        allowed_lateness: allowed_lateness_ns,
        rules,
        flush_interval: flush_interval_ns,
        windows,
        shutting_down: shutting_down.clone(),
        routes: routes.clone(),
        filters,
        ingest: ingest.clone(),
        metrics: graph_metrics.clone(),
        live: live.clone(),
    };
    let dataflow = tokio::task::spawn_blocking(move || dataflow::run(plan));

    // Sources last.
    for (name, source_config) in &config.sources {
        supervisor.start_source(name, source_config.clone());
    }
    supervisor.release_input_if_idle();
    supervisor.registry.mark_started();

    info!(
        sources = config.sources.len(),
        sinks = config.sinks.len(),
        workers = config.pipeline.workers(),
        "Pipeline running."
    );
    let status = options
        .status
        .then(|| StatusLine::start(supervisor.metrics.clone(), shutdown.clone()));

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
    let mut reloads = ReloadTrigger::new(&options);

    // Run until every source is done and the input released, or a stop. A sink replacement
    // still waiting for its predecessor keeps the loop going: its stream is paused, and the
    // dataflow cannot finish before the successor takes it.
    while supervisor.keeper.is_some()
        || !supervisor.source_tasks.is_empty()
        || !supervisor.waiting_sinks.is_empty()
    {
        tokio::select! {
            _ = &mut stop_requested, if !shutdown.is_cancelled() => {
                interrupted.store(true, Ordering::Relaxed);
                shutting_down.store(true, Ordering::Relaxed);
                supervisor.stop();
            }
            path = reloads.next(), if !shutdown.is_cancelled() => {
                let asked = Instant::now();
                match Config::load(&path) {
                    Ok(new) => {
                        supervisor.apply(new, &shutting_down);
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
                    Ok(ended) => supervisor.source_ended(ended, &shutting_down),
                    Err(panic) => supervisor.fail(format!("a source panicked: {panic}"), &shutting_down),
                }
            }
            Some(finished) = supervisor.sink_tasks.join_next(), if !supervisor.sink_tasks.is_empty() => {
                match finished {
                    Ok(ended) => supervisor.sink_ended(ended, &shutting_down),
                    Err(panic) => supervisor.fail(format!("a sink panicked: {panic}"), &shutting_down),
                }
            }
        }
    }

    // Every source is done: the dataflow drains and completes, then the sinks finish.
    let dataflow_result = dataflow.await;
    routes.clear();
    match dataflow_result {
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
            finished = supervisor.sink_tasks.join_next() => match finished {
                None => break,
                Some(Ok((name, generation, result))) => {
                    let current = supervisor.sinks.get(&name).is_some_and(|c| c.generation == generation);
                    match result {
                        Ok(()) if current => info!(sink = %name, "Sink finished."),
                        Ok(()) => info!(sink = %name, "The sink's previous instance finished."),
                        Err(e) => {
                            error!(sink = %name, "Sink stopped: {e}");
                            supervisor.failures.push(format!("sink {name}: {e}"));
                        }
                    }
                }
                Some(Err(panic)) => supervisor.failures.push(format!("a sink panicked: {panic}")),
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
    // Open streams end, so the server can stop.
    live.close();
    if let Some(api) = api {
        api.stop().await;
    }
    if !supervisor.failures.is_empty() {
        return Err(RunError::Components(supervisor.failures));
    }
    Ok(RunSummary {
        metrics: supervisor.metrics,
        elapsed: started.elapsed(),
        interrupted: interrupted.load(Ordering::Relaxed),
    })
}

/// Where reloads come from: SIGHUP, and with `--watch` a change of the config file (its
/// modification time or size, checked every second).
struct ReloadTrigger {
    path: Option<PathBuf>,
    watch: bool,
    last_seen: Option<(Option<std::time::SystemTime>, u64)>,
    #[cfg(unix)]
    hangup: Option<tokio::signal::unix::Signal>,
    requests: Option<Arc<tokio::sync::Notify>>,
}

impl ReloadTrigger {
    fn new(options: &RunOptions) -> ReloadTrigger {
        let path = options.config_path.clone();
        #[cfg(unix)]
        let hangup = if options.no_signal_handler || path.is_none() {
            None
        } else {
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
        };
        let last_seen = path.as_deref().map(file_stamp);
        ReloadTrigger {
            path,
            watch: options.watch,
            last_seen,
            #[cfg(unix)]
            hangup,
            requests: options.reload.clone(),
        }
    }

    /// The config file to load, when a reload is asked for; pending forever without a file.
    async fn next(&mut self) -> PathBuf {
        let Some(path) = self.path.clone() else {
            return std::future::pending().await;
        };
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let hangup = async {
                match self.hangup.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<Option<()>>();
            let requested = async {
                match &self.requests {
                    Some(notify) => notify.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = hangup => {
                    info!(path = %path.display(), "SIGHUP: reloading the config.");
                    return path;
                }
                () = requested => return path,
                _ = tick.tick(), if self.watch => {
                    let stamp = file_stamp(&path);
                    if self.last_seen.as_ref() != Some(&stamp) {
                        let first = self.last_seen.is_none();
                        self.last_seen = Some(stamp);
                        if !first {
                            info!(path = %path.display(), "The config file changed: reloading it.");
                            return path;
                        }
                    }
                }
            }
        }
    }
}

fn file_stamp(path: &std::path::Path) -> (Option<std::time::SystemTime>, u64) {
    match std::fs::metadata(path) {
        Ok(meta) => (meta.modified().ok(), meta.len()),
        Err(_) => (None, 0),
    }
}

async fn run_source(config: SourceConfig, ctx: SourceContext) -> Result<(), BoxError> {
    match config {
        SourceConfig::File(c) => source::file::run(c, ctx).await?,
        SourceConfig::Firehose(c) => source::firehose::run(c, ctx).await?,
        SourceConfig::Rlp(c) => source::rlp::run(c, ctx).await?,
        SourceConfig::Simulator(c) => sluice_simulator::source::run(c, ctx).await?,
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
