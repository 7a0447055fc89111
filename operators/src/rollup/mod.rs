//! Tumbling windows (the minute, and the extra widths of `pipeline.windows`) that close on
//! the frontier.
//!
//! [`Windowed`] is the operator (one per rollup kind and width); [`WindowAggregate`] says what
//! a window keeps and how it becomes a row. Each sample updates its window in amortised O(1);
//! a window is emitted final once the frontier (the watermark, see [`crate::watermark`])
//! passes its end, and then freed. Lateness is decided by the minute (SPEC §2) before
//! samples get here: a sample whose minute is open belongs to a window of any width that
//! ends no earlier, so it is open too.
//!
//! Without checkpoints, a changed open window is emitted provisionally at most every
//! `flush_interval`. With checkpoints (SPEC §9), everything happens at the end of an epoch
//! (see [`crate::time`]): once the input holds no more of epoch `e`, the operator closes the
//! windows the epoch's [`Cut`] watermark closes, hands its open windows over as a
//! [`Snapshot`] of `e`, and emits the changed ones provisionally — so that every row it emits
//! is one a restart from checkpoint `e` can rebuild, and rows are stamped with `e` so the
//! pipeline can hold them until that checkpoint is durable. Samples of a later epoch that
//! arrive before the snapshot wait until it is taken. Windows restored from a checkpoint
//! arrive on their own input, exchanged to the worker their key's records go to, before any
//! sample is applied.

pub mod app;
pub mod platform;

use std::collections::BTreeMap;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use sluice_model::records::window_start;
use timely::ExchangeData;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, ParallelizationContract, Pipeline};
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::{Capability, CapabilitySet};
use timely::dataflow::{Scope, Stream};

use crate::checkpoint::{Cut, OpenWindow, Snapshot, WindowState};
use crate::time::{GraphTime, frontier_bounds};

/// How one kind of rollup aggregates.
pub trait WindowAggregate: 'static {
    type Sample: ExchangeData;
    type Key: Hash + Eq + Clone + ExchangeData;
    type State: Default + Clone + ExchangeData;
    type Row: 'static;

    /// A sample's key and minute (epoch seconds): the window of any width it belongs to
    /// follows from the minute.
    fn window(sample: &Self::Sample) -> (Self::Key, i64);
    /// Adds a sample to its window's state.
    fn update(state: &mut Self::State, sample: Self::Sample);
    /// The row for a window of `width` seconds starting at `start` (epoch seconds) as it stands.
    fn row(
        key: &Self::Key,
        start: i64,
        width: u32,
        state: &Self::State,
        is_final: bool,
    ) -> Self::Row;
    /// The hash the graph exchanges this key's records by, so that a restored window reaches
    /// the worker its records go to.
    fn key_hash(key: &Self::Key) -> u64;
    /// The same hash, of a sample's key: in a cluster, samples are exchanged by it.
    fn sample_hash(sample: &Self::Sample) -> u64;
    /// Puts open windows of this kind into a checkpoint's state.
    fn save(windows: Vec<OpenWindow<Self::Key, Self::State>>, into: &mut WindowState);
    /// Whether open windows are also written as provisional rows (at flushes, at the end of
    /// epochs). The space and org rollups are not: their rows are sums of final rows, written
    /// once (SPEC §11).
    const PROVISIONAL_ROWS: bool = true;
}

/// Shared settings and gauges of the rollup operators.
#[derive(Clone, Debug)]
pub struct WindowOptions {
    /// At most this often (ns) a changed open window is emitted provisionally, without
    /// checkpoints. Read at every activation, so a live reload changes it from the next flush
    /// on.
    pub flush_interval: Arc<AtomicU64>,
    /// Set when the run is stopping on a signal: windows still open when the input ends are
    /// emitted provisional rather than final (SPEC §7).
    pub shutting_down: Arc<AtomicBool>,
    /// Open windows across all rollup operators and workers.
    pub open_windows: Arc<AtomicI64>,
    /// The window widths rolled up, in seconds ([`sluice_model::records::MINUTE`] is always
    /// among them): whole minutes that divide a day.
    pub windows: Vec<u32>,
    /// Checkpoints are taken (SPEC §9): see the module doc. When the input ends, windows the
    /// watermark has not closed stay open (the next run continues them) and their rows are
    /// provisional.
    pub checkpoints: bool,
    /// The epoch the graph's ingest starts in (ignored without checkpoints).
    pub first_epoch: u64,
    /// Where the workers are (SPEC §12): in a cluster, samples reach their window's worker
    /// through an exchange of their own.
    pub placement: crate::graph::Placement,
}

struct Window<S> {
    state: S,
    dirty: bool,
}

/// Windows by start, so closing pops the oldest windows instead of scanning all.
type Windows<K, S> = BTreeMap<i64, FxHashMap<K, Window<S>>>;

/// Windows restored from a checkpoint, on their way to the workers that own their keys.
pub type RestoredWindows<'scope, T, K, S> = Stream<'scope, T, Vec<OpenWindow<K, S>>>;

/// What a `Windowed` operator makes: its rows, and its snapshots at the end of epochs.
pub type WindowedStreams<'scope, T, R> =
    (Stream<'scope, T, Vec<R>>, Stream<'scope, T, Vec<Snapshot>>);

/// The windowing operator; see the module doc.
pub trait Windowed<'scope, T: GraphTime, S> {
    /// Rolls samples up in tumbling windows of `width` seconds (a whole number of minutes),
    /// starting from the windows of this width in `restored` (exchanged to their owners) and
    /// ending epochs at the `cuts` (broadcast to every worker). Returns the rows and the
    /// snapshots taken at the end of every epoch.
    fn windowed<A: WindowAggregate<Sample = S>>(
        self,
        name: &str,
        width: u32,
        options: WindowOptions,
        restored: RestoredWindows<'scope, T, A::Key, A::State>,
        cuts: Stream<'scope, T, Vec<Cut>>,
    ) -> WindowedStreams<'scope, T, A::Row>;
}

impl<'scope, T: GraphTime, S: ExchangeData> Windowed<'scope, T, S> for Stream<'scope, T, Vec<S>> {
    fn windowed<A: WindowAggregate<Sample = S>>(
        self,
        name: &str,
        width: u32,
        options: WindowOptions,
        restored: RestoredWindows<'scope, T, A::Key, A::State>,
        cuts: Stream<'scope, T, Vec<Cut>>,
    ) -> WindowedStreams<'scope, T, A::Row> {
        // One process: Route's input is exchanged by the same key, so samples are already on
        // their window's worker. A cluster routes records in the process that read them and
        // exchanges only the (small) samples between processes.
        if options.placement.processes > 1 {
            windowed_by_key::<A, T>(self, name, width, options, restored, cuts)
        } else {
            windowed_over::<A, T, S, _>(self, Pipeline, name, width, options, restored, cuts)
        }
    }
}

/// [`Windowed`] over samples that are not on their window's worker yet, in one process or
/// several: they are exchanged by [`WindowAggregate::sample_hash`].
pub(crate) fn windowed_by_key<'scope, A, T>(
    samples: Stream<'scope, T, Vec<A::Sample>>,
    name: &str,
    width: u32,
    options: WindowOptions,
    restored: RestoredWindows<'scope, T, A::Key, A::State>,
    cuts: Stream<'scope, T, Vec<Cut>>,
) -> WindowedStreams<'scope, T, A::Row>
where
    A: WindowAggregate,
    T: GraphTime,
{
    let by_key = Exchange::new(|sample: &A::Sample| A::sample_hash(sample));
    windowed_over::<A, T, A::Sample, _>(samples, by_key, name, width, options, restored, cuts)
}

/// The `Windowed` operator, its samples arriving through `pact`.
fn windowed_over<'scope, A, T, S, P>(
    samples: Stream<'scope, T, Vec<S>>,
    pact: P,
    name: &str,
    width: u32,
    options: WindowOptions,
    restored: RestoredWindows<'scope, T, A::Key, A::State>,
    cuts: Stream<'scope, T, Vec<Cut>>,
) -> WindowedStreams<'scope, T, A::Row>
where
    A: WindowAggregate<Sample = S>,
    T: GraphTime,
    S: 'static,
    P: ParallelizationContract<T, Vec<S>>,
{
    {
        let this = samples;
        let scope: Scope<'scope, T> = this.scope();
        let mut builder = OperatorBuilder::new(name.to_owned(), scope);
        let info = builder.operator_info();
        let mut samples_in = builder.new_input(this, pact);
        let mut restored_in = builder.new_input(
            restored,
            Exchange::new(|window: &OpenWindow<A::Key, A::State>| A::key_hash(&window.key)),
        );
        let mut cuts_in = builder.new_input(cuts, Pipeline);
        let (rows_out, rows) = builder.new_output();
        let (snapshots_out, snapshots) = builder.new_output();
        let mut rows_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<A::Row>>>::from(rows_out);
        let mut snapshots_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<Snapshot>>>::from(snapshots_out);
        let activator = scope.activator_for(info.address);

        builder.build(move |_initial| {
            let mut core = WindowCore::<A, T>::new(width, options);
            move |frontiers| {
                let mut rows_out = rows_out.activate();
                let mut snapshots_out = snapshots_out.activate();
                restored_in.for_each_stamp(|time, data| {
                    core.hold(&time.retain_stamp(0), &time.retain_stamp(1));
                    for window in data.flat_map(|batch| batch.drain(..)) {
                        core.restore(window);
                    }
                });
                cuts_in.for_each_stamp(|_time, data| {
                    for cut in data.flat_map(|batch| batch.drain(..)) {
                        core.cut(cut);
                    }
                });
                // Samples wait while restored windows may still arrive.
                let restoring = !frontiers[1].frontier().is_empty();
                samples_in.for_each_stamp(|time, data| {
                    core.hold(&time.retain_stamp(0), &time.retain_stamp(1));
                    let epoch = time.stamp().iter().map(GraphTime::epoch).max().unwrap_or(0);
                    let watermark = time
                        .stamp()
                        .iter()
                        .map(GraphTime::watermark)
                        .min()
                        .unwrap_or(0);
                    for sample in data.flat_map(|batch| batch.drain(..)) {
                        core.sample(epoch, watermark, sample, restoring);
                    }
                });
                if restoring {
                    return;
                }
                core.apply_ready();
                let samples = frontier_bounds(&frontiers[0].frontier());
                let cuts = frontier_bounds(&frontiers[2].frontier());
                let emitted = core.step(samples, cuts);
                for (epoch, rows) in emitted.rows.into_iter().filter(|(_, r)| !r.is_empty()) {
                    let at = core.emit_at(&core.row_caps, epoch);
                    rows_out.session(&at).give_iterator(rows.into_iter());
                }
                for snapshot in emitted.snapshots {
                    let at = core.emit_at(&core.snapshot_caps, snapshot.epoch);
                    snapshots_out.session(&at).give(snapshot);
                }
                if let Some(due) = core.next_flush() {
                    activator.activate_after(due.saturating_duration_since(Instant::now()));
                }
                core.release(samples, cuts);
            }
        });
        (rows, snapshots)
    }
}

/// What one activation emits: rows, grouped by the epoch whose checkpoint covers them, and
/// snapshots.
struct Emitted<R> {
    rows: Vec<(u64, Vec<R>)>,
    snapshots: Vec<Snapshot>,
}

impl<R> Emitted<R> {
    fn rows(&mut self, epoch: u64) -> &mut Vec<R> {
        if self.rows.last().is_none_or(|(e, _)| *e != epoch) {
            self.rows.push((epoch, Vec::new()));
        }
        &mut self.rows.last_mut().expect("just pushed").1
    }
}

/// The state of one `Windowed` operator, apart from timely's handles.
struct WindowCore<A: WindowAggregate, T: GraphTime> {
    width: u32,
    options: WindowOptions,
    windows: Windows<A::Key, A::State>,
    /// Capabilities for rows and for snapshots, held while windows are open or samples wait.
    row_caps: CapabilitySet<T>,
    snapshot_caps: CapabilitySet<T>,
    /// Checkpoints: the epoch whose snapshot comes next; samples of later epochs wait here.
    next_epoch: u64,
    waiting: BTreeMap<u64, Vec<A::Sample>>,
    /// The least watermark the waiting samples of each epoch were sent at: their windows end
    /// after it, so no window ending later closes before they are in.
    waiting_floor: BTreeMap<u64, u64>,
    /// The least watermark each ending epoch reached at the ingest points, by epoch.
    cuts: BTreeMap<u64, u64>,
    last_flush: Instant,
}

impl<A: WindowAggregate, T: GraphTime> WindowCore<A, T> {
    fn new(width: u32, options: WindowOptions) -> Self {
        WindowCore {
            width,
            next_epoch: options.first_epoch,
            options,
            windows: BTreeMap::new(),
            row_caps: CapabilitySet::new(),
            snapshot_caps: CapabilitySet::new(),
            waiting: BTreeMap::new(),
            waiting_floor: BTreeMap::new(),
            cuts: BTreeMap::new(),
            last_flush: Instant::now(),
        }
    }

    fn hold(&mut self, rows: &CapabilitySet<T>, snapshots: &CapabilitySet<T>) {
        for cap in rows.iter() {
            self.row_caps.insert(cap.clone());
        }
        for cap in snapshots.iter() {
            self.snapshot_caps.insert(cap.clone());
        }
    }

    fn window(&mut self, start: i64, key: A::Key) -> &mut Window<A::State> {
        let open_windows = &self.options.open_windows;
        self.windows
            .entry(start)
            .or_default()
            .entry(key)
            .or_insert_with(|| {
                open_windows.fetch_add(1, Ordering::Relaxed);
                Window {
                    state: A::State::default(),
                    dirty: false,
                }
            })
    }

    fn restore(&mut self, window: OpenWindow<A::Key, A::State>) {
        if window.width == self.width {
            self.window(window.start, window.key).state = window.state;
        }
    }

    fn cut(&mut self, cut: Cut) {
        let least = self.cuts.entry(cut.epoch).or_insert(cut.watermark);
        *least = (*least).min(cut.watermark);
    }

    /// Takes a sample sent at `(watermark, epoch)`.
    fn sample(&mut self, epoch: u64, watermark: u64, sample: A::Sample, restoring: bool) {
        if restoring || (self.options.checkpoints && epoch > self.next_epoch) {
            self.waiting.entry(epoch).or_default().push(sample);
            let floor = self.waiting_floor.entry(epoch).or_insert(watermark);
            *floor = (*floor).min(watermark);
        } else {
            self.apply(sample);
        }
    }

    /// Applies, in order, the samples that waited for the restore and belong to the epoch
    /// being taken now (or an earlier one).
    fn apply_ready(&mut self) {
        let current = if self.options.checkpoints {
            self.next_epoch
        } else {
            u64::MAX
        };
        while let Some(entry) = self.waiting.first_entry() {
            if *entry.key() > current {
                break;
            }
            self.waiting_floor.remove(entry.key());
            for sample in entry.remove() {
                self.apply(sample);
            }
        }
    }

    fn apply(&mut self, sample: A::Sample) {
        let (key, minute) = A::window(&sample);
        let window = self.window(window_start(minute, self.width), key);
        A::update(&mut window.state, sample);
        window.dirty = true;
    }

    /// Ends every epoch the inputs hold no more of, closes the windows the frontier closes,
    /// and (without checkpoints) flushes changed windows when due.
    fn step(&mut self, samples: Option<(u64, u64)>, cuts: Option<(u64, u64)>) -> Emitted<A::Row> {
        let mut out = Emitted {
            rows: Vec::new(),
            snapshots: Vec::new(),
        };
        if self.options.checkpoints {
            self.end_epochs(samples, cuts, &mut out);
        }
        match samples {
            Some((watermark, _)) => {
                // In a cluster the frontier can pass a window while a sample of it, from a
                // process already in a later epoch, waits here for this epoch's snapshot:
                // the window stays open until the sample is in (its window ends after the
                // watermark it was sent at), or it would be emitted without it and then
                // again from that sample alone.
                let watermark = self
                    .waiting_floor
                    .values()
                    .copied()
                    .fold(watermark, u64::min);
                let current = self.next_epoch;
                self.close(Some(watermark), true, current, &mut out);
            }
            // With checkpoints, windows the watermark has not closed outlive the input: the
            // next run continues them, and the last snapshot emitted their rows.
            None if self.options.checkpoints => {}
            None => {
                let is_final = !self.options.shutting_down.load(Ordering::Relaxed);
                self.close(None, is_final, 0, &mut out);
            }
        }
        if !self.options.checkpoints && A::PROVISIONAL_ROWS && self.flush_due() {
            let rows = out.rows(0);
            flush_changed::<A>(&mut self.windows, self.width, rows);
            self.last_flush = Instant::now();
        }
        out
    }

    /// Ends, in order, the epochs no sample or cut of which can still arrive.
    fn end_epochs(
        &mut self,
        samples: Option<(u64, u64)>,
        cuts: Option<(u64, u64)>,
        out: &mut Emitted<A::Row>,
    ) {
        loop {
            let epoch = self.next_epoch;
            let ended = |bounds: Option<(u64, u64)>| bounds.is_none_or(|(_, e)| e > epoch);
            if !(ended(samples) && ended(cuts)) {
                return;
            }
            // A cut for this epoch means a checkpoint of it: snapshot as of its watermark.
            if let Some(watermark) = self.cuts.remove(&epoch) {
                self.close(Some(watermark), true, epoch, out);
                // An operator with nothing open has nothing to add to the checkpoint.
                if !self.windows.is_empty() {
                    let mut windows = WindowState::default();
                    A::save(open_windows::<A>(&self.windows, self.width), &mut windows);
                    out.snapshots.push(Snapshot { epoch, windows });
                }
                if A::PROVISIONAL_ROWS {
                    flush_changed::<A>(&mut self.windows, self.width, out.rows(epoch));
                }
            }
            // On to the next epoch anything is known of: still in an input, or waiting here.
            let next = [samples, cuts]
                .into_iter()
                .flatten()
                .map(|(_, e)| e)
                .chain(self.waiting.keys().next().copied())
                .chain(self.cuts.keys().next().copied())
                .min();
            let Some(next) = next else {
                self.next_epoch = epoch + 1;
                return;
            };
            self.next_epoch = next.max(epoch + 1);
            self.waiting_floor.remove(&self.next_epoch);
            for sample in self.waiting.remove(&self.next_epoch).unwrap_or_default() {
                self.apply(sample);
            }
        }
    }

    /// Emits and frees every window ending at or before `watermark` (every window for
    /// `None`), as rows of `epoch`.
    fn close(
        &mut self,
        watermark: Option<u64>,
        is_final: bool,
        epoch: u64,
        out: &mut Emitted<A::Row>,
    ) {
        let span = i64::from(self.width);
        while let Some(entry) = self.windows.first_entry() {
            let closes = watermark.is_none_or(|w| *entry.key() + span <= w as i64);
            if !closes {
                break;
            }
            let start = *entry.key();
            let closed = entry.remove();
            self.options
                .open_windows
                .fetch_sub(closed.len() as i64, Ordering::Relaxed);
            let rows = out.rows(epoch);
            for (key, window) in closed {
                rows.push(A::row(&key, start, self.width, &window.state, is_final));
            }
        }
    }

    fn flush_due(&self) -> bool {
        let interval = Duration::from_nanos(self.options.flush_interval.load(Ordering::Relaxed));
        // An interval too large for an `Instant` means never.
        self.last_flush
            .checked_add(interval)
            .is_some_and(|due| Instant::now() >= due)
    }

    /// When the next provisional flush is due, if windows are open and flushes happen.
    fn next_flush(&self) -> Option<Instant> {
        if self.options.checkpoints || !A::PROVISIONAL_ROWS || self.windows.is_empty() {
            return None;
        }
        let interval = Duration::from_nanos(self.options.flush_interval.load(Ordering::Relaxed));
        self.last_flush.checked_add(interval)
    }

    /// A capability to emit what belongs to `epoch` under: the held one of least watermark
    /// (see [`WindowCore::release`]), its epoch coordinate raised to `epoch`.
    fn emit_at(&self, caps: &CapabilitySet<T>, epoch: u64) -> Capability<T> {
        let least = caps
            .iter()
            .min_by_key(|cap| cap.time().watermark())
            .expect("a capability is held while windows are open");
        let time = T::at(least.time().watermark(), least.time().epoch().max(epoch));
        least.delayed(&time)
    }

    /// Lets go of what will not be emitted at: every capability when nothing is open or
    /// waiting (or the input is over), and otherwise epochs already ended and watermarks the
    /// frontier has passed.
    fn release(&mut self, samples: Option<(u64, u64)>, cuts: Option<(u64, u64)>) {
        let inputs_over = samples.is_none() && cuts.is_none();
        if inputs_over || (self.windows.is_empty() && self.waiting.is_empty()) {
            self.row_caps = CapabilitySet::new();
            self.snapshot_caps = CapabilitySet::new();
            return;
        }
        let (watermark, epoch) = (
            samples.map_or(0, |(w, _)| w),
            if self.options.checkpoints {
                self.next_epoch
            } else {
                0
            },
        );
        let raise = |caps: &CapabilitySet<T>, watermark: u64| -> CapabilitySet<T> {
            caps.iter()
                .map(|cap| {
                    let time = cap.time();
                    cap.delayed(&T::at(
                        time.watermark().max(watermark),
                        time.epoch().max(epoch),
                    ))
                })
                .collect()
        };
        // A window's row goes out at a time whose watermark is below the window's end, so that
        // what labels it by the directory as of its end (`crate::groups`) knows which of the
        // directory's changes came before it whatever the scheduling: a row capability stays
        // below the end of every open window, and of every window a waiting sample (sent
        // below its window's end) will open. The frontier may be past such an end while a
        // sample of a later epoch waits (see `step`).
        let open_end = self
            .windows
            .first_key_value()
            .map(|(start, _)| start.saturating_add(i64::from(self.width)));
        let row_watermark = open_end
            .map(|end| u64::try_from(end.saturating_sub(1)).unwrap_or(0))
            .into_iter()
            .chain(self.waiting_floor.values().copied())
            .fold(watermark, u64::min);
        self.row_caps = raise(&self.row_caps, row_watermark);
        self.snapshot_caps = raise(&self.snapshot_caps, watermark);
    }
}

/// The open windows of width `width`, copied.
fn open_windows<A: WindowAggregate>(
    windows: &Windows<A::Key, A::State>,
    width: u32,
) -> Vec<OpenWindow<A::Key, A::State>> {
    windows
        .iter()
        .flat_map(|(start, keyed)| {
            keyed.iter().map(move |(key, window)| OpenWindow {
                width,
                start: *start,
                key: key.clone(),
                state: window.state.clone(),
            })
        })
        .collect()
}

/// Provisional rows of the windows that changed since their last row.
fn flush_changed<A: WindowAggregate>(
    windows: &mut Windows<A::Key, A::State>,
    width: u32,
    rows: &mut Vec<A::Row>,
) {
    for (start, keyed) in windows.iter_mut() {
        for (key, window) in keyed.iter_mut().filter(|(_, w)| w.dirty) {
            rows.push(A::row(key, *start, width, &window.state, false));
            window.dirty = false;
        }
    }
}
