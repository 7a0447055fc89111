//! `Ingest`: the bridge from the sources' channel into the graph, on the process's first
//! worker (worker 0 of one process; each process's own in a cluster).
//!
//! Each batch is filtered, its records' event times and lateness decided in arrival order
//! against the watermark, and it is sent at the watermark from before it in the current
//! epoch. With checkpoints, Ingest ends the epoch every `checkpoint_interval` in which
//! records came in (and once more when the input ends): it records its part of the
//! checkpoint — the watermark and where each source had read to — sends a [`Cut`] carrying
//! the watermark reached, and moves on to the next epoch.
//!
//! The Cloud Controller's listings (`[metadata]`, SPEC §11) come in on a channel of their own
//! and leave on their own output, at the time records would be sent at then; only the first
//! worker of the cluster (process 0's leader) takes them, so each listing is retracted by the
//! next in one place. A listing queued before the first record (the run awaits the first one)
//! goes out before any record.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_operators::checkpoint::Cut;
use sluice_operators::directory::Listing;
use sluice_operators::time::{GraphTime, Time};
use sluice_operators::watermark::{LateCounts, Stamped, Watermark, WatermarkState, stamp_batch};
use sluice_sources::{SourceBatch, SourcePosition};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::{Scope, Stream};
use timely::order::PartialOrder;
use timely::scheduling::SyncActivator;
use tokio::sync::mpsc::{self, error::TryRecvError};

use super::DataflowPlan;
use crate::telemetry::GraphMetrics;

/// Batches Ingest takes from the channel before it yields to the rest of the graph.
const INGEST_BUDGET: usize = 32;

/// In a cluster, how often each process tells the others its watermark.
const BEAT_INTERVAL: Duration = Duration::from_secs(1);
/// In a cluster, how long a process reads nothing before it follows the others' watermark
/// (as Flink's idle sources do): otherwise one idle process would hold every window of the
/// cluster open.
const IDLE_AFTER: Duration = Duration::from_secs(5);

/// The receiving end of the sources' channel and the activator that wakes its reader.
#[derive(Debug)]
pub struct IngestChannel {
    receiver: Mutex<Option<mpsc::Receiver<SourceBatch>>>,
    activator: Mutex<Option<SyncActivator>>,
    /// The Cloud Controller's listings, taken by the cluster's first worker.
    listings: Mutex<Option<std::sync::mpsc::Receiver<Listing>>>,
    listing_sender: std::sync::mpsc::Sender<Listing>,
}

impl IngestChannel {
    pub fn new(receiver: mpsc::Receiver<SourceBatch>) -> Arc<IngestChannel> {
        let (listing_sender, listings) = std::sync::mpsc::channel();
        Arc::new(IngestChannel {
            receiver: Mutex::new(Some(receiver)),
            activator: Mutex::new(None),
            listings: Mutex::new(Some(listings)),
            listing_sender,
        })
    }

    /// Hands a complete Cloud Controller listing to the graph. Dropped when the graph has
    /// stopped taking input.
    pub fn send_listing(&self, listing: Listing) {
        if self.listing_sender.send(listing).is_ok() {
            self.wake();
        }
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

/// Ingest's part of the checkpoint of one epoch.
#[derive(Clone, Debug)]
pub(super) struct IngestPart {
    pub(super) watermark: WatermarkState,
    pub(super) sources: BTreeMap<String, SourcePosition>,
    pub(super) records: u64,
}

/// Ingest's parts by epoch, read by the worker that assembles checkpoints (the same one).
pub(super) type IngestParts = Rc<RefCell<BTreeMap<u64, IngestPart>>>;

/// What Ingest makes: the records, the cuts, and its checkpoint parts.
pub(super) struct Ingested<'scope> {
    pub(super) records: Stream<'scope, Time, Vec<Stamped>>,
    pub(super) cuts: Stream<'scope, Time, Vec<Cut>>,
    /// The Cloud Controller's listings, on the cluster's first worker.
    pub(super) listings: Stream<'scope, Time, Vec<Listing>>,
    pub(super) parts: IngestParts,
}

/// The Ingest operator; see the module doc.
pub(super) fn ingest<'scope>(
    scope: Scope<'scope, Time>,
    plan: &DataflowPlan,
    first_epoch: u64,
) -> Ingested<'scope> {
    let mut builder = OperatorBuilder::new("Ingest".to_owned(), scope);
    let info = builder.operator_info();
    let (records_out, records) = builder.new_output();
    let (cuts_out, cuts) = builder.new_output();
    let (beats_out, beats) = builder.new_output();
    let (listings_out, listings) = builder.new_output();
    let mut records_out =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<Stamped>>>::from(records_out);
    let mut cuts_out = OutputBuilder::<_, CapacityContainerBuilder<Vec<Cut>>>::from(cuts_out);
    let mut beats_out = OutputBuilder::<_, CapacityContainerBuilder<Vec<i64>>>::from(beats_out);
    let mut listings_out =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<Listing>>>::from(listings_out);
    // The greatest watermark any process of the cluster has announced.
    let cluster_watermark: Rc<Cell<Option<i64>>> = Rc::default();
    let in_cluster = plan.placement.processes > 1;
    let parts: IngestParts = Rc::default();

    let channel = plan.ingest.clone();
    let metrics = plan.metrics.clone();
    let lateness = plan.allowed_lateness.clone();
    let filters = plan.filters.clone();
    let interval = plan.state.as_ref().map(|state| state.interval);
    let restored = plan.state.as_ref().and_then(|state| state.restored.clone());
    let my_parts = parts.clone();
    let leader = plan.placement.leader();
    let takes_listings = plan.listings;
    let announced = cluster_watermark.clone();
    builder.build(move |capabilities| {
        // One worker per process reads the process's sources: its leader.
        let mut receiver = if scope.index() == leader {
            lock(&channel.receiver).take()
        } else {
            None
        };
        // One worker of the cluster takes the listings: each retracts the one before it.
        let listing_rx = if takes_listings && scope.index() == 0 && receiver.is_some() {
            lock(&channel.listings).take()
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
        let mut lateness_ns = lateness.load(Ordering::Relaxed);
        let allowed = Duration::from_nanos(lateness_ns);
        let (watermark, sources) = match &restored {
            Some(checkpoint) => (
                Watermark::restored(checkpoint.watermark, allowed),
                checkpoint.sources.clone(),
            ),
            None => (Watermark::new(allowed), BTreeMap::new()),
        };
        if let Some(current) = watermark.current() {
            metrics.watermark_ns.store(current, Ordering::Relaxed);
        }
        let mut state = IngestState {
            capabilities: receiver.is_some().then(|| {
                let [records, cuts, beats, listings]: [Capability<Time>; 4] = capabilities
                    .try_into()
                    .unwrap_or_else(|_| unreachable!("Ingest has four outputs"));
                let start = Time::at(watermark.epoch(), first_epoch);
                (
                    records.delayed(&start),
                    cuts.delayed(&start),
                    in_cluster.then(|| beats.delayed(&start)),
                    listing_rx.is_some().then(|| listings.delayed(&start)),
                )
            }),
            watermark,
            epoch: first_epoch,
            sources,
            records: restored.as_ref().map_or(0, |c| c.records),
            since_cut: 0,
            interval,
            next_cut: interval.map(|i| Instant::now() + i),
            parts: my_parts,
            last_batch: Instant::now(),
            last_beat: None,
            in_cluster,
        };
        move |_frontiers| {
            let mut records_out = records_out.activate();
            let mut cuts_out = cuts_out.activate();
            let mut beats_out = beats_out.activate();
            let mut listings_out = listings_out.activate();
            let Some(rx) = receiver.as_mut() else {
                return;
            };
            if state.capabilities.is_none() {
                return;
            }
            // Listings first: one queued before the first record goes out before it.
            if let (Some(queued), Some((_, _, _, Some(held)))) =
                (listing_rx.as_ref(), &state.capabilities)
            {
                let mut session = listings_out.session(held);
                while let Ok(listing) = queued.try_recv() {
                    session.give(listing);
                }
            }
            let now_ns = lateness.load(Ordering::Relaxed);
            if now_ns != lateness_ns {
                lateness_ns = now_ns;
                state
                    .watermark
                    .set_allowed_lateness(Duration::from_nanos(now_ns));
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
                        if let Some(position) = batch.position.take() {
                            state.sources.insert(batch.source.to_string(), position);
                        }
                        let mut late = LateCounts::default();
                        let mut stamped = Vec::with_capacity(batch.events.len());
                        let time = stamp_batch(
                            &mut state.watermark,
                            batch.events,
                            batch.received_at,
                            &mut stamped,
                            &mut late,
                        );
                        metrics.ingested(stamped.len(), &late, state.watermark.current());
                        state.records += stamped.len() as u64;
                        state.since_cut += 1;
                        state.last_batch = Instant::now();
                        if let Some((held, _, _, _)) = &state.capabilities {
                            let at = held.delayed(&Time::at(time, state.epoch));
                            records_out.session(&at).give_container(&mut stamped);
                        }
                        state.advance();
                    }
                    Err(TryRecvError::Empty) => {
                        if state.cut_due() {
                            state.cut(&mut cuts_out);
                        }
                        state.beat(&mut beats_out, announced.get(), &metrics);
                        if in_cluster {
                            myself.activate_after(BEAT_INTERVAL);
                        }
                        if let Some(due) =
                            state.next_cut.filter(|_| state.since_cut > 0 || in_cluster)
                        {
                            myself.activate_after(due.saturating_duration_since(Instant::now()));
                        }
                        return;
                    }
                    Err(TryRecvError::Disconnected) => {
                        // Every source has finished: the last epoch ends (a graceful end
                        // saves state), and releasing the input lets windows close.
                        if state.next_cut.is_some() {
                            state.cut(&mut cuts_out);
                        }
                        state.capabilities = None;
                        receiver = None;
                        return;
                    }
                }
            }
            if state.cut_due() {
                state.cut(&mut cuts_out);
            }
            state.beat(&mut beats_out, announced.get(), &metrics);
            // More may be queued: continue after the rest of the graph had its turn.
            myself.activate();
        }
    });
    // Every process's beats reach every worker; the leader's Ingest reads the greatest.
    if in_cluster {
        beats
            .broadcast()
            .sink(Pipeline, "Beats", move |(input, _frontier)| {
                input.for_each(|_time, data| {
                    for watermark in data.drain(..) {
                        if cluster_watermark
                            .get()
                            .is_none_or(|known| watermark > known)
                        {
                            cluster_watermark.set(Some(watermark));
                        }
                    }
                });
            });
    }
    Ingested {
        records,
        cuts,
        listings,
        parts,
    }
}

/// The capabilities Ingest holds while its input is open: for records, for cuts, (in a
/// cluster) for beats, and (on the cluster's first worker) for listings.
type Held = (
    Capability<Time>,
    Capability<Time>,
    Option<Capability<Time>>,
    Option<Capability<Time>>,
);

/// Ingest's state between activations.
struct IngestState {
    /// For records, cuts and (in a cluster) beats; `None` once the input has ended (or on
    /// other workers).
    capabilities: Option<Held>,
    watermark: Watermark,
    epoch: u64,
    /// Where each source that can rewind has read to.
    sources: BTreeMap<String, SourcePosition>,
    /// Records ingested, in this run and the runs it continues.
    records: u64,
    /// Batches since the last cut.
    since_cut: u64,
    /// How often epochs end, and when the next cut is due; `None` without checkpoints.
    interval: Option<Duration>,
    next_cut: Option<Instant>,
    parts: IngestParts,
    /// When the last batch came in: a process idle for [`IDLE_AFTER`] follows the cluster.
    last_batch: Instant,
    /// When this process last announced its watermark.
    last_beat: Option<Instant>,
    /// One process of a cluster: epochs end on time even without records.
    in_cluster: bool,
}

impl IngestState {
    /// Moves the capabilities up to the watermark: later batches are sent at it or later.
    fn advance(&mut self) {
        let next = Time::at(self.watermark.epoch(), self.epoch);
        if let Some((records, cuts, beats, listings)) = self.capabilities.as_mut() {
            for capability in [Some(records), Some(cuts), beats.as_mut(), listings.as_mut()]
                .into_iter()
                .flatten()
            {
                if capability.time().less_than(&next) {
                    capability.downgrade(&next);
                }
            }
        }
    }

    /// In a cluster: announces this process's watermark every [`BEAT_INTERVAL`], and once
    /// the process has read nothing for [`IDLE_AFTER`], raises its watermark to the greatest
    /// any process announced.
    fn beat(
        &mut self,
        beats_out: &mut timely::dataflow::operators::generic::OutputBuilderSession<
            '_,
            Time,
            CapacityContainerBuilder<Vec<i64>>,
        >,
        cluster_watermark: Option<i64>,
        metrics: &GraphMetrics,
    ) {
        let Some((_, _, Some(beat_capability), _)) = &self.capabilities else {
            return;
        };
        let now = Instant::now();
        if self
            .last_beat
            .is_none_or(|last| now.duration_since(last) >= BEAT_INTERVAL)
            && let Some(watermark) = self.watermark.current()
        {
            beats_out.session(beat_capability).give(watermark);
            self.last_beat = Some(now);
        }
        let idle = now.duration_since(self.last_batch) >= IDLE_AFTER;
        if idle && cluster_watermark.is_some_and(|watermark| self.watermark.follow(watermark)) {
            // Nothing read: the records counted stay as they are, the watermark moves.
            metrics.ingested(0, &LateCounts::default(), self.watermark.current());
            self.advance();
        }
    }

    /// Whether the epoch ends now: its interval is over and records came in — or, in a
    /// cluster, whether or not any did, since every process must end every epoch for the
    /// cluster's checkpoint of it to be complete.
    fn cut_due(&self) -> bool {
        (self.since_cut > 0 || self.in_cluster)
            && self.next_cut.is_some_and(|due| Instant::now() >= due)
    }

    /// Ends the current epoch: its checkpoint part, and a cut with the watermark reached.
    fn cut(
        &mut self,
        cuts_out: &mut timely::dataflow::operators::generic::OutputBuilderSession<
            '_,
            Time,
            CapacityContainerBuilder<Vec<Cut>>,
        >,
    ) {
        let Some((_, cut_capability, _, _)) = &self.capabilities else {
            return;
        };
        let watermark = self.watermark.epoch();
        self.parts.borrow_mut().insert(
            self.epoch,
            IngestPart {
                watermark: self.watermark.state(),
                sources: self.sources.clone(),
                records: self.records,
            },
        );
        let at = cut_capability.delayed(&Time::at(
            watermark.max(cut_capability.time().watermark()),
            self.epoch,
        ));
        cuts_out.session(&at).give(Cut {
            epoch: self.epoch,
            watermark,
        });
        self.epoch += 1;
        self.since_cut = 0;
        self.next_cut = self.interval.map(|interval| Instant::now() + interval);
        self.advance();
    }
}
