//! The timely side of a run: the bridge from the sources' channel into the graph, the graph
//! itself, and the bridges from its streams into the sinks' channels.
//!
//! Sources (tokio tasks) queue [`SourceBatch`](sluice_sources::SourceBatch)es on one bounded
//! channel and wake the `Ingest` operator through a `SyncActivator`. One worker of the process
//! (its first) drains that channel: it decides event time and lateness in arrival order (see
//! `sluice_operators::watermark`) and the graph's exchange spreads the work over every worker.
//! In a cluster every process does the same with its own sources; the rollups' samples cross
//! to the worker of the cluster that owns their window, whose frontier — the least watermark
//! of all processes — closes it.
//! When the channel closes (every source is done or stopped), Ingest drops its capability,
//! the frontier empties, the rollups close their windows, and the dataflow completes.
//!
//! Every stream ends in a forward operator that hands its batches to the sinks the
//! [`SinkRoutes`] table names for it now, so a live reload changes sinks without touching the
//! graph; for the same reason the allowed lateness is read by Ingest at every activation, the
//! flush interval by the rollups at theirs, and the app-event rules by Route for every batch.
//! App events and rollup rows also pass a [`LiveTap`] on their way (the API's live feed), so
//! its streams see them as the sinks do.
//!
//! With a state directory (SPEC §9) Ingest also ends an epoch every `checkpoint_interval`
//! (see `sluice_operators::time`): it records the watermark and where each source had read
//! to, and sends a cut through the graph; the rollups answer with snapshots of their windows;
//! `Checkpoint` puts the parts, and the epoch's rollup rows, together for the writer thread,
//! which hands the rows to the sinks once the checkpoint is on disk.
//!
//! Layout: [`ingest`](self) (the bridge, epochs and cuts), `forward` (streams to sinks),
//! `checkpoint` (restored windows in, snapshots out).

mod checkpoint;
mod commit;
mod forward;
mod ingest;

pub use ingest::IngestChannel;

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use sluice_model::records::{AppEvent, AppRollup, Records, StreamName};
use sluice_operators::app_events::LiveRules;
use sluice_operators::filter::Filters;
use sluice_operators::graph::{self, Placement, StateInputs};
use sluice_operators::rollup::WindowOptions;
use sluice_operators::time::Time;
use timely::dataflow::Scope;
use timely::dataflow::operators::Concatenate;

use crate::cluster::Network;
use crate::routing::SinkRoutes;
use crate::state::commit::CommitGate;
use crate::state::file::Checkpoint;
use crate::state::writer::PendingCheckpoint;
use crate::telemetry::GraphMetrics;

/// Where the graph shows app events and rollup rows on their way to the sinks: the read
/// path's live streams. Called on a worker thread for every batch, so it must be cheap when
/// nobody watches.
pub trait LiveTap: Send + Sync {
    fn app_events(&self, events: &[AppEvent]);
    fn app_rollups(&self, rows: &[AppRollup]);
}

/// Why the dataflow could not run to its end.
#[derive(Debug, thiserror::Error)]
#[error("the dataflow failed: {0}")]
pub struct DataflowError(String);

impl DataflowError {
    /// A dataflow thread panicked.
    pub fn panicked(panic: &dyn std::fmt::Display) -> DataflowError {
        DataflowError(format!("a worker panicked: {panic}"))
    }
}

/// What the dataflow needs, shared by every worker.
pub struct DataflowPlan {
    pub workers: usize,
    /// Where this process's workers stand in the cluster ([`Placement::single`] without one).
    pub placement: Placement,
    /// The allowed lateness in ns; a live reload may change it while the graph runs.
    pub allowed_lateness: Arc<AtomicU64>,
    /// The app-event rules; a live reload may replace them.
    pub rules: LiveRules,
    /// How often open windows are rewritten, ns; a live reload may change it.
    pub flush_interval: Arc<AtomicU64>,
    /// The rollup window widths in seconds, fixed for the life of the graph.
    pub windows: Vec<u32>,
    /// Set on Ctrl-C: windows still open at the end are emitted provisional.
    pub shutting_down: Arc<AtomicBool>,
    /// Which sinks take which streams; changed live by reloads.
    pub routes: Arc<SinkRoutes>,
    /// The filters on what enters, per source; swapped live by reloads.
    pub filters: Arc<RwLock<Arc<Filters>>>,
    pub ingest: Arc<IngestChannel>,
    pub metrics: Arc<GraphMetrics>,
    /// Where the API's live streams take rollup rows and app events from.
    pub live: Arc<dyn LiveTap>,
    /// Checkpoints (SPEC §9); `None` without a state directory.
    pub state: Option<StatePlan>,
    /// This process lists a Cloud Controller (`[metadata]`, process 0 of a cluster): Ingest
    /// takes its listings into the graph.
    pub listings: bool,
}

/// How the graph checkpoints.
pub struct StatePlan {
    /// How often Ingest ends an epoch (when records came in).
    pub interval: Duration,
    /// The checkpoint this run continues from.
    pub restored: Option<Arc<Checkpoint>>,
    /// Where assembled checkpoints go; taken by the worker that assembles them.
    pub writer: Mutex<Option<mpsc::Sender<PendingCheckpoint>>>,
    /// In a cluster: which epochs every process has on disk (the commit dataflow says).
    pub gate: Option<Arc<CommitGate>>,
}

impl DataflowPlan {
    /// The epoch this run's first records enter in: the one after the restored checkpoint's.
    fn first_epoch(&self) -> u64 {
        self.state
            .as_ref()
            .and_then(|state| state.restored.as_ref())
            .map_or(1, |checkpoint| checkpoint.epoch + 1)
    }
}

/// Runs the dataflow on `plan.workers` threads until the sources' channel closes and every
/// record has been handed to the sinks. Blocks the calling thread. With `network` (a
/// cluster, SPEC §12) the workers are this process's share of the cluster's, and the graph's
/// exchanges reach the other processes.
pub fn run(plan: DataflowPlan, network: Option<Network>) -> Result<(), DataflowError> {
    let workers = plan.workers;
    let plan = Arc::new(plan);
    let build_worker = move |worker: &mut timely::worker::Worker| {
        let gate = plan.state.as_ref().and_then(|state| state.gate.clone());
        let leader = plan.placement.leader();
        let plan = plan.clone();
        worker.dataflow::<Time, _, _>(move |scope| build(scope, &plan));
        if let Some(gate) = gate {
            commit::build(worker, gate, leader);
        }
    };
    let guards = match network {
        Some(network) => timely::execute::execute_from(
            network.builders,
            Box::new(network.guard),
            timely::WorkerConfig::default(),
            build_worker,
        ),
        None => timely::execute(timely::Config::process(workers), build_worker),
    }
    .map_err(DataflowError)?;
    for result in guards.join() {
        result.map_err(DataflowError)?;
    }
    Ok(())
}

fn build(scope: Scope<'_, Time>, plan: &DataflowPlan) {
    let first_epoch = plan.first_epoch();
    let options = WindowOptions {
        flush_interval: plan.flush_interval.clone(),
        shutting_down: plan.shutting_down.clone(),
        open_windows: plan.metrics.open_windows.clone(),
        windows: plan.windows.clone(),
        checkpoints: plan.state.is_some(),
        first_epoch,
        placement: plan.placement,
    };
    let ingested = ingest::ingest(scope, plan, first_epoch);
    let restored = plan.state.as_ref().and_then(|s| s.restored.clone());
    let leader = plan.placement.leader();
    let restored = checkpoint::restored_state(scope, restored, first_epoch, leader);
    let state = StateInputs {
        app_windows: restored.app,
        platform_windows: restored.platform,
        group_windows: restored.group,
        directory: restored.directory,
        cuts: ingested.cuts.clone(),
        // The Cloud Controller's listings (`[metadata]`), if any; tags name apps either way.
        listings: ingested.listings,
    };
    let streams = graph::build_with_state(ingested.records, plan.rules.clone(), options, state);
    let routes = &plan.routes;
    let live = plan.live.clone();
    // The raw streams: a restart does not read their records again, so a checkpoint is
    // written only once the sinks have them safe.
    let mut handed_over = vec![
        forward::forward(streams.logs, routes, StreamName::Logs, Records::Logs),
        forward::forward(
            streams.container_metrics,
            routes,
            StreamName::ContainerMetrics,
            Records::ContainerMetrics,
        ),
        forward::forward(streams.http, routes, StreamName::Http, Records::Http),
        forward::forward(streams.errors, routes, StreamName::Errors, Records::Errors),
        forward::forward_tapped(
            streams.app_events,
            routes,
            StreamName::AppEvents,
            Records::AppEvents,
            move |events| live.app_events(events),
        ),
        // SPEC §11: the directory's changes (a restart restores the directory, and writes
        // only what changes after it).
        forward::forward(streams.apps, routes, StreamName::Apps, Records::Apps),
    ];
    if plan.state.is_none() {
        handed_over.push(forward::forward(
            streams.group_rollups.clone(),
            routes,
            StreamName::GroupRollups,
            Records::GroupRollups,
        ));
    }
    match &plan.state {
        // Rollup rows go with their epoch's checkpoint, and to the sinks once it is on disk.
        Some(state) => checkpoint::assemble(
            checkpoint::Parts {
                snapshots: streams.snapshots,
                handed_over: scope.concatenate(handed_over),
                app_rollups: streams.app_rollups,
                platform_rollups: streams.platform_rollups,
                // The space and org rows too: a restart from an earlier checkpoint rebuilds
                // them from the minutes it restores, and a row it could not rebuild (its
                // apps' names or groups having changed since) must not be in a store.
                group_rollups: streams.group_rollups,
                ingest: ingested.parts,
                cuts: ingested.cuts,
                leader,
            },
            state,
            plan.windows.clone(),
            routes.clone(),
        ),
        None => {
            let live = plan.live.clone();
            forward::forward_tapped(
                streams.app_rollups,
                routes,
                StreamName::AppRollups,
                Records::AppRollups,
                move |rows| live.app_rollups(rows),
            );
            forward::forward(
                streams.platform_rollups,
                routes,
                StreamName::PlatformRollups,
                Records::PlatformRollups,
            );
        }
    }
}
