//! The whole graph from ingested records to the named streams of SPEC §3.
//!
//! ```text
//! Stamped ─exchange(app / series)─► Route ─┬─ logs, container_metrics, http, errors (raw)
//!                                          ├─ app_events
//!                                          ├─ app samples ───► Windowed<AppRollups> ─► app_rollups
//!                                          └─ platform samples ► Windowed<PlatformRollups> ─► platform_rollups
//!                              restored windows, cuts ─┘ (checkpoints)          └─► snapshots
//! ```
//!
//! Route also states the facts the records' name tags make (the directory's `TagFacts`, SPEC
//! §11, see [`crate::directory`]); the directory's changes become the `apps` stream, label the
//! final minute rows for the space and org rollups ([`crate::groups`], stream
//! `group_rollups`), and name the logs and app rollup rows on their way out
//! ([`crate::names`]).
//!
//! Each width of [`WindowOptions::windows`] has its own pair of `Windowed` operators fed by
//! the same samples (percentiles need the sketch, so wider windows cannot be merged from
//! minute rows); their rows are concatenated into the one stream of each kind, each row
//! carrying its width, and so are their snapshots.

use sluice_model::records::{
    AppEvent, AppRollup, AppRow, GroupRollup, MINUTE, PlatformRollup, window_suffix,
};
use sluice_model::{Event, Str};
use timely::dataflow::operators::generic::operator::empty;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Concatenate, Exchange};
use timely::dataflow::{Scope, Stream};

use crate::app_events::LiveRules;
use crate::checkpoint::{Cut, OpenWindow, Snapshot};
use crate::directory::{self, DirectoryState, Listing, SavedFact, TagInputs};
use crate::groups::{GroupKey, GroupState, GroupWindow};
use crate::names::Wait;
use crate::rollup::app::{AppRollups, AppWindow};
use crate::rollup::platform::{PlatformRollups, PlatformWindow};
use crate::rollup::{WindowOptions, Windowed};
use crate::route::{PlatformKey, Route, exchange_key};
use crate::time::GraphTime;
use crate::watermark::Stamped;

/// The named output streams, per worker.
pub struct GraphStreams<'scope, T: GraphTime> {
    pub logs: Stream<'scope, T, Vec<Event>>,
    pub container_metrics: Stream<'scope, T, Vec<Event>>,
    pub http: Stream<'scope, T, Vec<Event>>,
    pub errors: Stream<'scope, T, Vec<Event>>,
    pub app_events: Stream<'scope, T, Vec<AppEvent>>,
    pub app_rollups: Stream<'scope, T, Vec<AppRollup>>,
    pub platform_rollups: Stream<'scope, T, Vec<PlatformRollup>>,
    /// Changes of the `app` table (SPEC §11).
    pub apps: Stream<'scope, T, Vec<AppRow>>,
    /// Space and org rollups of closed minutes (SPEC §11).
    pub group_rollups: Stream<'scope, T, Vec<GroupRollup>>,
    /// Every rollup operator's open windows at the end of each checkpointed epoch.
    pub snapshots: Stream<'scope, T, Vec<Snapshot>>,
}

/// What a checkpointing graph starts from and ends its epochs with (SPEC §9).
pub struct StateInputs<'scope, T: GraphTime> {
    /// App windows restored from a checkpoint (any worker may send them: they are exchanged
    /// to their owners).
    pub app_windows: Stream<'scope, T, Vec<OpenWindow<Str, AppWindow>>>,
    /// Platform windows restored from a checkpoint, likewise.
    pub platform_windows: Stream<'scope, T, Vec<OpenWindow<PlatformKey, PlatformWindow>>>,
    /// Space and org minutes restored from a checkpoint, likewise.
    pub group_windows: Stream<'scope, T, Vec<OpenWindow<GroupKey, GroupWindow>>>,
    /// The directory's facts restored from a checkpoint, sent in an epoch before
    /// [`WindowOptions::first_epoch`] (any worker: they are exchanged to where they belong).
    pub directory: Stream<'scope, T, Vec<SavedFact>>,
    /// The ingest points' cuts, one per checkpointed epoch each (broadcast here).
    pub cuts: Stream<'scope, T, Vec<Cut>>,
    /// The Cloud Controller's listings (SPEC §11), on any worker; empty without one.
    pub listings: Stream<'scope, T, Vec<Listing>>,
}

/// Where a worker's process stands among the processes of a cluster (SPEC §12).
///
/// In one process, Route's input is exchanged by app id (series, origin) across the
/// workers and the samples stay where they are. In a cluster, records are exchanged only
/// among the workers of the process that read them — raw rows are written by that process
/// — and the rollup samples, a few dozen bytes each, are what crosses to the worker of the
/// whole cluster that owns their window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// This process's index.
    pub process: usize,
    /// Processes in the cluster (1: no cluster).
    pub processes: usize,
    /// Workers per process.
    pub workers: usize,
}

impl Placement {
    /// One process of `workers` workers.
    pub fn single(workers: usize) -> Placement {
        Placement {
            process: 0,
            processes: 1,
            workers,
        }
    }

    /// The index of this process's first worker: it reads the process's sources.
    pub fn leader(&self) -> usize {
        self.process * self.workers
    }

    /// The worker of this process a record with `hash` goes to.
    fn local_worker(&self, hash: u64) -> u64 {
        (self.leader() as u64) + hash % (self.workers as u64)
    }

    /// The worker a record with `hash` is exchanged to before Route (see [`build_with_state`]),
    /// as an exchange's target: in one process `hash` itself, which the exchange takes modulo
    /// the workers.
    pub(crate) fn record_worker(&self, hash: u64) -> u64 {
        if self.processes > 1 {
            self.local_worker(hash)
        } else {
            hash
        }
    }
}

/// Builds the graph over a stream of ingested records (see [`crate::watermark::stamp_batch`]),
/// without checkpoints.
pub fn build<'scope, T: GraphTime>(
    input: Stream<'scope, T, Vec<Stamped>>,
    rules: LiveRules,
    options: WindowOptions,
) -> GraphStreams<'scope, T> {
    let scope = input.scope();
    let state = StateInputs {
        app_windows: empty(scope),
        platform_windows: empty(scope),
        group_windows: empty(scope),
        directory: empty(scope),
        cuts: empty(scope),
        listings: empty(scope),
    };
    build_with_state(input, rules, options, state)
}

/// Builds the graph starting from restored windows and taking snapshots at the cuts.
pub fn build_with_state<'scope, T: GraphTime>(
    input: Stream<'scope, T, Vec<Stamped>>,
    rules: LiveRules,
    options: WindowOptions,
    state: StateInputs<'scope, T>,
) -> GraphStreams<'scope, T> {
    let scope = input.scope();
    let placement = options.placement;
    let exchanged = if placement.processes > 1 {
        // A worker index below the peer count is taken as is by the exchange.
        input.exchange(move |record| placement.local_worker(exchange_key(record)))
    } else {
        input.exchange(exchange_key)
    };
    let cuts = state.cuts.broadcast();
    let tags = TagInputs {
        restored: state.directory.clone(),
        placement,
    };
    let routed = exchanged.route(rules, tags);
    let directory_state = DirectoryState {
        restored: state.directory,
        cuts: options.checkpoints.then(|| cuts.clone()),
        first_epoch: if options.checkpoints {
            options.first_epoch
        } else {
            0
        },
    };
    let directory = directory::directory(routed.tag_facts, state.listings, directory_state);
    let mut widths = options.windows.clone();
    if !widths.contains(&MINUTE) {
        // The minute tables are the SPEC's contract: always there.
        widths.insert(0, MINUTE);
    }
    let (mut app, mut platform, mut snapshots) = (Vec::new(), Vec::new(), Vec::new());
    for width in widths {
        let suffix = window_suffix(width);
        let (rows, snaps) = routed.app_samples.clone().windowed::<AppRollups>(
            &format!("AppRollups{suffix}"),
            width,
            options.clone(),
            state.app_windows.clone(),
            cuts.clone(),
        );
        app.push(rows);
        snapshots.push(snaps);
        let (rows, snaps) = routed.platform_samples.clone().windowed::<PlatformRollups>(
            &format!("PlatformRollups{suffix}"),
            width,
            options.clone(),
            state.platform_windows.clone(),
            cuts.clone(),
        );
        platform.push(rows);
        snapshots.push(snaps);
    }
    // Every worker keeps the whole directory: it names logs and rows where they are.
    let changes = directory.changes.broadcast();
    let app_rollups = crate::names::names(
        merged(scope, app),
        changes.clone(),
        Wait::ForDirectory,
        "NameRollups",
    );
    let groups = GroupState {
        options,
        restored: state.group_windows,
        cuts,
    };
    let (group_rollups, group_snapshots) =
        crate::groups::group_rollups(app_rollups.clone(), changes.clone(), groups);
    snapshots.push(group_snapshots);
    snapshots.extend(directory.snapshots);
    GraphStreams {
        app_rollups,
        apps: directory.rows,
        group_rollups,
        platform_rollups: merged(scope, platform),
        snapshots: merged(scope, snapshots),
        logs: crate::names::names(routed.logs, changes, Wait::No, "NameLogs"),
        container_metrics: routed.container_metrics,
        http: routed.http,
        errors: routed.errors,
        app_events: routed.app_events,
    }
}

/// One stream of the rows of every width; no extra operator when there is only the minute.
fn merged<'scope, T: GraphTime, R: 'static>(
    scope: Scope<'scope, T>,
    streams: Vec<Stream<'scope, T, Vec<R>>>,
) -> Stream<'scope, T, Vec<R>> {
    match <[_; 1]>::try_from(streams) {
        Ok([only]) => only,
        Err(streams) => scope.concatenate(streams),
    }
}
