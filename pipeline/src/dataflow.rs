//! The timely side of a run: the bridge from the sources' channel into the graph, the graph
//! itself, and the bridges from its streams into the sinks' channels.
//!
//! Sources (tokio tasks) queue [`SourceBatch`]es on one bounded channel and wake the `Ingest`
//! operator through a `SyncActivator`. Worker 0 alone drains that channel: it decides event
//! time and lateness in arrival order (see `sluice_operators::watermark`) and the graph's
//! exchange spreads the work over every worker. When the channel closes (every source is done
//! or stopped), Ingest drops its capability, the frontier empties, the rollups close their
//! windows, and the dataflow completes.
//!
//! Every stream ends in a forward operator that hands its batches to the sinks the
//! [`SinkRoutes`] table names for it now, so a live reload changes sinks without touching the
//! graph; for the same reason the allowed lateness is read by Ingest at every activation, the
//! flush interval by the rollups at theirs, and the app-event rules by Route for every batch.
//! App events and rollup rows also pass a [`LiveTap`] on their way (the API's live feed), so
//! its streams see them as the sinks do.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use sluice_model::records::{AppEvent, AppRollup, Records, StreamName};
use sluice_operators::app_events::LiveRules;
use sluice_operators::filter::Filters;
use sluice_operators::graph;
use sluice_operators::rollup::WindowOptions;
use sluice_operators::watermark::{LateCounts, Stamped, Watermark, stamp_batch};
use sluice_sources::SourceBatch;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::{Scope, Stream};
use timely::scheduling::SyncActivator;
use tokio::sync::mpsc::{self, error::TryRecvError};

use crate::routing::SinkRoutes;
use crate::telemetry::GraphMetrics;

/// Batches Ingest takes from the channel before it yields to the rest of the graph.
const INGEST_BUDGET: usize = 32;

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

/// The receiving end of the sources' channel and the activator that wakes its reader.
#[derive(Debug)]
pub struct IngestChannel {
    receiver: Mutex<Option<mpsc::Receiver<SourceBatch>>>,
    activator: Mutex<Option<SyncActivator>>,
}

impl IngestChannel {
    pub fn new(receiver: mpsc::Receiver<SourceBatch>) -> Arc<IngestChannel> {
        Arc::new(IngestChannel {
            receiver: Mutex::new(Some(receiver)),
            activator: Mutex::new(None),
        })
    }

    /// Wakes the Ingest operator: sources call it after every batch they queue.
    pub fn wake(&self) {
        if let Some(activator) = lock(&self.activator).as_ref() {
            // An error means the dataflow is gone; the batch's send already failed or will.
            let _ = activator.activate();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What the dataflow needs, shared by every worker.
pub struct DataflowPlan {
    pub workers: usize,
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
}

/// Runs the dataflow on `plan.workers` threads until the sources' channel closes and every
/// record has been handed to the sinks. Blocks the calling thread.
pub fn run(plan: DataflowPlan) -> Result<(), DataflowError> {
    let workers = plan.workers;
    let plan = Arc::new(plan);
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let plan = plan.clone();
        worker.dataflow::<u64, _, _>(move |scope| build(scope, &plan));
    })
    .map_err(DataflowError)?;
    for result in guards.join() {
        result.map_err(DataflowError)?;
    }
    Ok(())
}

fn build(scope: Scope<'_, u64>, plan: &DataflowPlan) {
    let options = WindowOptions {
        flush_interval: plan.flush_interval.clone(),
        shutting_down: plan.shutting_down.clone(),
        open_windows: plan.metrics.open_windows.clone(),
        windows: plan.windows.clone(),
    };
    let input = ingest(scope, plan);
    let streams = graph::build(input, plan.rules.clone(), options);
    forward(streams.logs, &plan.routes, StreamName::Logs, Records::Logs);
    forward(
        streams.container_metrics,
        &plan.routes,
        StreamName::ContainerMetrics,
        Records::ContainerMetrics,
    );
    forward(streams.http, &plan.routes, StreamName::Http, Records::Http);
    forward(
        streams.errors,
        &plan.routes,
        StreamName::Errors,
        Records::Errors,
    );
    let live = plan.live.clone();
    forward_tapped(
        streams.app_events,
        &plan.routes,
        StreamName::AppEvents,
        Records::AppEvents,
        move |events| live.app_events(events),
    );
    let live = plan.live.clone();
    forward_tapped(
        streams.app_rollups,
        &plan.routes,
        StreamName::AppRollups,
        Records::AppRollups,
        move |rows| live.app_rollups(rows),
    );
    forward(
        streams.platform_rollups,
        &plan.routes,
        StreamName::PlatformRollups,
        Records::PlatformRollups,
    );
}

/// The Ingest operator; see the module doc.
fn ingest<'scope>(
    scope: Scope<'scope, u64>,
    plan: &DataflowPlan,
) -> Stream<'scope, u64, Vec<Stamped>> {
    let channel = plan.ingest.clone();
    let metrics = plan.metrics.clone();
    let lateness = plan.allowed_lateness.clone();
    let filters = plan.filters.clone();
    source::<_, CapacityContainerBuilder<Vec<Stamped>>, _, _>(
        scope,
        "Ingest",
        move |capability, info| {
            let mut receiver = if scope.index() == 0 {
                lock(&channel.receiver).take()
            } else {
                None
            };
            let myself = scope.activator_for(info.address.clone());
            if receiver.is_some() {
                let activator = scope.worker().sync_activator_for(info.address.to_vec());
                *lock(&channel.activator) = Some(activator);
                // Batches queued before the activator was registered woke nobody.
                myself.activate();
            }
            let mut capability = receiver.is_some().then_some(capability);
            let mut lateness_ns = lateness.load(Ordering::Relaxed);
            let mut watermark = Watermark::new(Duration::from_nanos(lateness_ns));
            move |output| {
                let (Some(rx), Some(held)) = (receiver.as_mut(), capability.as_mut()) else {
                    return;
                };
                let now_ns = lateness.load(Ordering::Relaxed);
                if now_ns != lateness_ns {
                    lateness_ns = now_ns;
                    watermark.set_allowed_lateness(Duration::from_nanos(now_ns));
                }
                for _ in 0..INGEST_BUDGET {
                    match rx.try_recv() {
                        Ok(mut batch) => {
                            // Before event time: a filtered record never moves the watermark.
                            let current = filters
                                .read()
                                .unwrap_or_else(|poisoned| poisoned.into_inner())
                                .clone();
                            let removed = current.apply(&batch.source, &mut batch.events);
                            if removed > 0 {
                                metrics.filtered.add(removed as u64);
                            }
                            let mut late = LateCounts::default();
                            let mut stamped = Vec::with_capacity(batch.events.len());
                            let time = stamp_batch(
                                &mut watermark,
                                batch.events,
                                batch.received_at,
                                &mut stamped,
                                &mut late,
                            );
                            metrics.ingested(stamped.len(), &late, watermark.current());
                            let at = held.delayed(&time);
                            output.session(&at).give_container(&mut stamped);
                            let next = watermark.epoch();
                            if next > *held.time() {
                                held.downgrade(&next);
                            }
                        }
                        Err(TryRecvError::Empty) => return,
                        Err(TryRecvError::Disconnected) => {
                            // Every source has finished: release the input so windows close.
                            capability = None;
                            receiver = None;
                            return;
                        }
                    }
                }
                // More may be queued: continue after the rest of the graph had its turn.
                myself.activate();
            }
        },
    )
}

/// Hands every batch of a stream to the sinks that take it, blocking while one is behind.
fn forward<T: Clone + 'static>(
    stream: Stream<'_, u64, Vec<T>>,
    routes: &Arc<SinkRoutes>,
    name: StreamName,
    wrap: fn(Vec<T>) -> Records,
) {
    forward_tapped(stream, routes, name, wrap, |_| {});
}

/// [`forward`], showing every batch to `tap` first.
fn forward_tapped<T: Clone + 'static>(
    stream: Stream<'_, u64, Vec<T>>,
    routes: &Arc<SinkRoutes>,
    name: StreamName,
    wrap: fn(Vec<T>) -> Records,
    mut tap: impl FnMut(&[T]) + 'static,
) {
    let routes = routes.clone();
    stream.sink(Pipeline, "Forward", move |(input, _frontier)| {
        input.for_each(|_time, data| {
            tap(data);
            routes.send(name, wrap(std::mem::take(data)));
        });
    });
}
