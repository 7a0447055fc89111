//! The live topology: starts, stops and replaces components, tells the tasks of the current
//! ones from those a reload retired, and carries a [`ConfigDiff`] out.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sluice_operators::app_events::{AppEventRules, LiveRules};
use sluice_operators::filter::Filters;
use sluice_sinks::{ComponentError, SinkContext};
use sluice_sources::{SourceContext, SourceOutput, SourcePosition};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::RunMetrics;
use crate::admin::Registry;
use crate::config::{Config, ConfigDiff, SinkConfig, SourceConfig};
use crate::routing::SinkRoutes;

/// Batches a sink may have queued before the dataflow waits for it.
const SINK_CHANNEL_CAPACITY: usize = 256;

/// A running source or sink: which start of it this is (its generation), and for a source
/// the token that stops it.
#[derive(Debug)]
struct Component {
    generation: u64,
    stop: Option<CancellationToken>,
}

/// A finished component task: its name, generation and outcome.
pub(super) type TaskResult = (String, u64, Result<(), ComponentError>);

/// What the graph reads live, changed in place by reloads.
pub(super) struct LiveSettings {
    pub(super) allowed_lateness_ns: Arc<AtomicU64>,
    pub(super) flush_interval_ns: Arc<AtomicU64>,
    pub(super) rules: LiveRules,
    pub(super) filters: Arc<RwLock<Arc<Filters>>>,
}

pub(super) struct Supervisor {
    pub(super) config: Config,
    shutdown: CancellationToken,
    routes: Arc<SinkRoutes>,
    /// Held while sources may still be started; its drop (with every source's) closes the
    /// dataflow's input.
    pub(super) keeper: Option<SourceOutput>,
    live: LiveSettings,
    /// The rollup widths the graph was built with: sinks started by a reload get these, not
    /// the new file's (a change of `pipeline.windows` needs a restart).
    windows: Vec<u32>,
    sources: BTreeMap<String, Component>,
    sinks: BTreeMap<String, Component>,
    /// Replacements waiting for their predecessor to finish (a store never has two writers).
    waiting_sources: BTreeMap<String, SourceConfig>,
    pub(super) waiting_sinks: BTreeMap<String, SinkConfig>,
    /// Instances of a sink name that were removed or replaced and are still writing what
    /// they hold; a successor of that name waits for them.
    draining_sinks: BTreeMap<String, usize>,
    pub(super) source_tasks: JoinSet<TaskResult>,
    pub(super) sink_tasks: JoinSet<TaskResult>,
    next_generation: u64,
    pub(super) metrics: RunMetrics,
    /// What the admin endpoint shows: the components of the current config.
    pub(super) registry: Arc<Registry>,
    pub(super) failures: Vec<String>,
    /// `--watch`: the run goes on when every source is done, waiting for a new config.
    watch: bool,
    /// Set once the run is stopping: windows still open at the end are written provisional.
    shutting_down: Arc<AtomicBool>,
}

impl Supervisor {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        config: Config,
        shutdown: CancellationToken,
        routes: Arc<SinkRoutes>,
        keeper: SourceOutput,
        live: LiveSettings,
        metrics: RunMetrics,
        registry: Arc<Registry>,
        watch: bool,
        shutting_down: Arc<AtomicBool>,
    ) -> Supervisor {
        Supervisor {
            windows: config.pipeline.window_widths(),
            config,
            shutdown,
            routes,
            keeper: Some(keeper),
            live,
            sources: BTreeMap::new(),
            sinks: BTreeMap::new(),
            waiting_sources: BTreeMap::new(),
            waiting_sinks: BTreeMap::new(),
            draining_sinks: BTreeMap::new(),
            source_tasks: JoinSet::new(),
            sink_tasks: JoinSet::new(),
            next_generation: 0,
            metrics,
            registry,
            failures: Vec::new(),
            watch,
            shutting_down,
        }
    }

    /// Whether the sink task of `name` and `generation` is the sink's current instance.
    pub(super) fn is_current_sink(&self, name: &str, generation: u64) -> bool {
        self.sinks
            .get(name)
            .is_some_and(|c| c.generation == generation)
    }

    fn generation(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }

    pub(super) fn start_sink(&mut self, name: &str, config: SinkConfig) -> Result<(), String> {
        let (ctx, sender) = SinkContext::with_buffer(
            name,
            SINK_CHANNEL_CAPACITY,
            config.buffer(),
            self.shutdown.clone(),
        )
        .map_err(|e| format!("sink {name}: {e}"))?;
        let ctx = ctx
            .with_windows(&self.windows)
            .with_watermark(self.metrics.graph.watermark_ns.clone());
        let generation = self.generation();
        self.metrics
            .sinks
            .push((name.to_owned(), ctx.metrics.clone()));
        self.registry
            .add_sink(name, config.type_name(), ctx.metrics.clone());
        self.routes.insert(name, config.streams().to_vec(), sender);
        let task_name = name.to_owned();
        let metrics = ctx.metrics.clone();
        let task = config.into_component().build(ctx);
        self.sink_tasks.spawn(async move {
            let result = task.await;
            metrics.finish();
            (task_name, generation, result)
        });
        self.sinks.insert(
            name.to_owned(),
            Component {
                generation,
                stop: None,
            },
        );
        Ok(())
    }

    pub(super) fn start_source(&mut self, name: &str, config: SourceConfig) {
        self.start_source_resuming(name, config, None);
    }

    /// Starts a source; one that can rewind starts from `resume` if it reads the same thing.
    pub(super) fn start_source_resuming(
        &mut self,
        name: &str,
        config: SourceConfig,
        resume: Option<SourcePosition>,
    ) {
        let Some(keeper) = &self.keeper else {
            warn!(source = %name, "Not starting the source: the run is stopping.");
            return;
        };
        let stop = self.shutdown.child_token();
        let ctx = SourceContext::new(name, keeper.clone(), stop.clone()).resuming(resume);
        let generation = self.generation();
        self.metrics
            .sources
            .push((name.to_owned(), ctx.metrics.clone()));
        self.registry.add_source(name, ctx.metrics.clone());
        let task_name = name.to_owned();
        let task = config.into_component().build(ctx);
        self.source_tasks
            .spawn(async move { (task_name, generation, task.await) });
        self.sources.insert(
            name.to_owned(),
            Component {
                generation,
                stop: Some(stop),
            },
        );
    }

    /// Stops everything: sources stop reading, the input closes once they are gone.
    pub(super) fn stop(&mut self) {
        self.shutting_down.store(true, Ordering::Relaxed);
        self.shutdown.cancel();
        self.keeper = None;
        self.waiting_sources.clear();
    }

    /// Records a failure that makes the run's output incomplete and stops the run cleanly.
    pub(super) fn fail(&mut self, failure: String) {
        error!("Stopping the run: {failure}");
        self.failures.push(failure);
        self.stop();
    }

    /// Lets the input close once no source runs or waits to run (unless `--watch`).
    pub(super) fn release_input_if_idle(&mut self) {
        if !self.watch && self.sources.is_empty() && self.waiting_sources.is_empty() {
            self.keeper = None;
        }
    }

    pub(super) fn source_ended(&mut self, ended: TaskResult) {
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
                self.fail(format!("source {name}: {e}"));
            }
            Err(e) => warn!(source = %name, "The source's previous instance stopped: {e}"),
        }
        if !current && let Some(config) = self.waiting_sources.remove(&name) {
            self.start_source(&name, config);
            info!(source = %name, "Source restarted with its new config.");
        }
        self.release_input_if_idle();
    }

    pub(super) fn sink_ended(&mut self, ended: TaskResult) {
        let (name, generation, result) = ended;
        let current = self.is_current_sink(&name, generation);
        if current {
            // A sink only ends early on an error it cannot retry: what it would have written
            // is lost from here on, so the run stops cleanly rather than read on for nothing.
            self.sinks.remove(&name);
            self.routes.remove(&name);
            let failure = match result {
                Ok(()) => format!("sink {name} stopped before the pipeline did"),
                Err(e) => format!("sink {name}: {e}"),
            };
            self.fail(failure);
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
                    self.fail(failure);
                }
            }
        }
    }

    /// Carries out `diff`, the difference between the running config and `new`: unchanged
    /// components keep running untouched, removed ones stop (sinks drain first), added ones
    /// start, changed ones are replaced once their predecessor has finished, and pipeline
    /// settings that can change in place do.
    pub(super) fn apply(&mut self, new: Config, diff: &ConfigDiff) {
        let started = Instant::now();
        let old = std::mem::replace(&mut self.config, new);
        self.apply_in_place(&old, diff);

        for name in &diff.sinks.removed {
            self.routes.remove(name);
            if self.sinks.remove(name).is_some() {
                *self.draining_sinks.entry(name.clone()).or_default() += 1;
            }
            self.waiting_sinks.remove(name);
            self.registry.remove_sink(name);
        }
        for name in &diff.sinks.changed {
            let config = self.config.sinks[name].clone();
            if self.waiting_sinks.contains_key(name) || !self.sinks.contains_key(name) {
                // Its predecessor is still draining: start this config instead.
                self.waiting_sinks.insert(name.clone(), config);
            } else {
                self.routes.pause(name);
                self.sinks.remove(name);
                *self.draining_sinks.entry(name.clone()).or_default() += 1;
                self.waiting_sinks.insert(name.clone(), config);
            }
        }
        for name in &diff.sinks.added {
            let config = self.config.sinks[name].clone();
            if self.draining_sinks.contains_key(name) {
                // A removed sink of this name is still writing: this one waits for it.
                self.routes.insert_paused(name, config.streams().to_vec());
                self.waiting_sinks.insert(name.clone(), config);
            } else if let Err(failure) = self.start_sink(name, config) {
                self.fail(failure);
                return;
            }
        }

        for name in &diff.sources.removed {
            if let Some(component) = self.sources.remove(name)
                && let Some(stop) = component.stop
            {
                stop.cancel();
            }
            self.waiting_sources.remove(name);
            self.registry.remove_source(name);
        }
        for name in &diff.sources.changed {
            let config = self.config.sources[name].clone();
            if self.waiting_sources.contains_key(name) {
                // Its predecessor is still stopping: start this config instead.
                self.waiting_sources.insert(name.clone(), config);
            } else if let Some(component) = self.sources.remove(name)
                && let Some(stop) = component.stop
            {
                stop.cancel();
                self.waiting_sources.insert(name.clone(), config);
            } else {
                // It had finished: run the new config now.
                self.start_source(name, config);
            }
        }
        for name in &diff.sources.added {
            let config = self.config.sources[name].clone();
            self.start_source(name, config);
        }
        self.release_input_if_idle();
        info!(
            sources = ?diff.sources,
            sinks = ?diff.sinks,
            micros = started.elapsed().as_micros() as u64,
            "Config reloaded."
        );
    }

    /// The settings the graph reads at every activation or batch.
    fn apply_in_place(&mut self, old: &Config, diff: &ConfigDiff) {
        if let Some(lateness) = diff.allowed_lateness {
            self.live
                .allowed_lateness_ns
                .store(duration_ns(lateness), Ordering::Relaxed);
            info!(from = ?old.pipeline.allowed_lateness, to = ?lateness, "Allowed lateness changed.");
        }
        if let Some(interval) = diff.flush_interval {
            self.live
                .flush_interval_ns
                .store(duration_ns(interval), Ordering::Relaxed);
            info!(from = ?old.pipeline.flush_interval, to = ?interval, "Flush interval changed.");
        }
        if let Some(rules) = &diff.app_events {
            match AppEventRules::new(rules) {
                Ok(compiled) => {
                    self.live.rules.replace(compiled);
                    info!(rules = rules.len(), "App-event rules changed.");
                }
                // Validation compiled them already; this cannot happen.
                Err(problem) => error!("App-event rules not changed: {problem}"),
            }
        }
        if diff.filters {
            match self.config.compiled_filters() {
                Ok(filters) => {
                    *self
                        .live
                        .filters
                        .write()
                        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(filters);
                    info!(filters = self.config.filters.len(), "Filters changed.");
                }
                // Validation compiled them already; this cannot happen.
                Err(problem) => error!("Filters not changed: {problem}"),
            }
        }
        for key in &diff.needs_restart {
            warn!(
                key,
                "This change takes effect at the next start; the running graph keeps its value."
            );
        }
    }
}

pub(super) fn duration_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}
