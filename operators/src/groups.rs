//! Space and org rollups (SPEC §11): the final minute rows of the apps, each counted under
//! the space and the org its app belonged to when its window closed.
//!
//! ```text
//! app_rollups (final, minute) ─► Enrich ─► (space | org, group id, minute) parts
//! directory changes ─broadcast─┘    └─exchange(group)─► GroupWindows ─► group_rollups
//!                          restored minutes, cuts ─┘ (checkpoints)  └─► snapshots
//! ```
//!
//! `Enrich` keeps the directory as a map on every worker (one entry per app, fed by the
//! directory's changes) and labels a row of the minute ending at `E` once the directory's
//! frontier has passed `E`: with every change stated at a watermark below `E`, whatever the
//! scheduling (the time a row is emitted at is not: see `enrich`). `GroupWindows` sums the parts
//! of a minute and emits the group's row once the frontier's watermark reaches the minute's
//! end — by then every final row of that minute has been emitted upstream (a rollup operator
//! holds a capability below a window's end while it is open) — and frees it: nothing per
//! minute outlives its window. `GroupWindows` is a [`crate::rollup::Windowed`] operator of
//! the minute without provisional rows, so with checkpoints (SPEC §9) it takes the same cuts,
//! puts its open minutes into every snapshot, continues restored ones, and stamps its rows
//! with the epoch whose checkpoint they follow. These are plain timely operators for the same reason the
//! minute windows are: a window is appended to, closed once and forgotten, which a
//! differential arrangement would keep (every minute's inputs, until compacted away).

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHasher};
use serde::{Deserialize, Serialize};
use sluice_model::Str;
use sluice_model::records::{AppInfo, AppRollup, GroupKind, GroupRollup, MINUTE};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::CapabilitySet;
use timely::dataflow::operators::generic::Operator;

use crate::checkpoint::{Cut, OpenWindow, WindowState};
use crate::directory::Change;
use crate::rollup::{
    RestoredWindows, WindowAggregate, WindowOptions, WindowedStreams, windowed_by_key,
};
use crate::sum::ExactSum;
use crate::time::{GraphTime, frontier_bounds};

/// Where the group minutes start from and end their epochs (SPEC §9), as the app windows do.
pub struct GroupState<'scope, T: GraphTime> {
    pub options: WindowOptions,
    /// Group minutes restored from a checkpoint (exchanged to the workers that own them).
    pub restored: RestoredWindows<'scope, T, GroupKey, GroupWindow>,
    /// The ingest points' cuts, on every worker.
    pub cuts: Stream<'scope, T, Vec<Cut>>,
}

/// The group rollups of the final minute rows among `app_rollups`, labelled with the
/// directory whose changes are `changes` (all of them on every worker: broadcast); and the
/// snapshots of the open group minutes at the end of each checkpointed epoch.
pub fn group_rollups<'scope, T: GraphTime>(
    app_rollups: Stream<'scope, T, Vec<AppRollup>>,
    changes: Stream<'scope, T, Vec<Change<T>>>,
    state: GroupState<'scope, T>,
) -> WindowedStreams<'scope, T, GroupRollup> {
    let parts = enrich(app_rollups, changes);
    group_windows(parts, state)
}

/// An app's place: its space and org ids.
type Place = (Str, Str);

fn place(info: &AppInfo) -> Place {
    (info.space_id.clone(), info.org_id.clone())
}

/// Changes of one app not yet applied to the map, sorted by time (removals first).
type Pending<T> = Vec<(T, isize, Place)>;

/// Final minute rows waiting for the directory, by the end of their minute: those of each
/// message with its capabilities and the time to emit them at.
type Waiting<T> = BTreeMap<u64, Vec<(CapabilitySet<T>, T, Vec<AppRollup>)>>;

/// Labels each final minute row with its app's space and org as the directory stood when the
/// minute closed: with every change stated at a watermark below the minute's end, and no
/// later one. Those are the facts of the records read before the watermark reached the end
/// (a batch is sent at the watermark before it), which is the same in every run of the same
/// records; the time a rollup operator emits a row at is not (it is a capability the
/// operator held, which the scheduling moves). A row waits until the directory's frontier is
/// past its minute's end.
fn enrich<'scope, T: GraphTime>(
    rows: Stream<'scope, T, Vec<AppRollup>>,
    changes: Stream<'scope, T, Vec<Change<T>>>,
) -> Stream<'scope, T, Vec<GroupRollup>> {
    rows.binary_frontier::<_, CapacityContainerBuilder<Vec<GroupRollup>>, _, _, _, _>(
        changes,
        Pipeline,
        Pipeline,
        "Enrich",
        |_capability, _info| {
            let mut map: FxHashMap<Str, Place> = FxHashMap::default();
            let mut pending: FxHashMap<Str, Pending<T>> = FxHashMap::default();
            let mut waiting: Waiting<T> = BTreeMap::new();
            move |(rows_in, rows_frontier), (changes_in, changes_frontier), output| {
                changes_in.for_each_stamp(|_time, data| {
                    for ((app, info), at, diff) in data.flat_map(|batch| batch.drain(..)) {
                        let changes = pending.entry(app).or_default();
                        changes.push((at, diff, place(&info)));
                        changes.sort_by_key(|change| (change.0, change.1));
                    }
                });
                rows_in.for_each_stamp(|time, data| {
                    let stamp = time.stamp();
                    // The message's least watermark in its latest epoch: at or after one
                    // of its times, below the end of each of its rows' minutes (see
                    // `rollup::WindowCore::release`), and in the epoch of its latest row.
                    let (Some(watermark), Some(epoch)) = (
                        stamp.iter().map(GraphTime::watermark).min(),
                        stamp.iter().map(GraphTime::epoch).max(),
                    ) else {
                        return;
                    };
                    let at = T::at(watermark, epoch);
                    let mut by_end: BTreeMap<u64, Vec<AppRollup>> = BTreeMap::new();
                    for row in data
                        .flat_map(|batch| batch.drain(..))
                        .filter(|row| row.is_final && row.window == MINUTE)
                    {
                        by_end.entry(minute_end(row.minute)).or_default().push(row);
                    }
                    if by_end.is_empty() {
                        return;
                    }
                    let caps = time.retain_stamp(0);
                    for (end, rows) in by_end {
                        waiting
                            .entry(end)
                            .or_default()
                            .push((caps.clone(), at, rows));
                    }
                });
                // Rows of minutes the directory has passed the end of.
                let changes_bound = frontier_bounds(&changes_frontier.frontier());
                while let Some(entry) = waiting.first_entry() {
                    let end = *entry.key();
                    if changes_bound.is_some_and(|(watermark, _)| watermark < end) {
                        break;
                    }
                    for (caps, at, rows) in entry.remove() {
                        let cap = caps.delayed(&at);
                        let mut session = output.session(&cap);
                        for row in rows {
                            let (space, org) = place_before(&map, &pending, &row.app_id, end);
                            for (kind, group_id) in
                                [(GroupKind::Space, space), (GroupKind::Org, org)]
                            {
                                let mut part = GroupRollup {
                                    kind,
                                    group_id,
                                    minute: row.minute,
                                    ..GroupRollup::default()
                                };
                                part.add(&row);
                                session.give(part);
                            }
                        }
                    }
                }
                // Changes below the end of every waiting and future row's minute: into the
                // map. A future row comes at a watermark at or above the rows' frontier and
                // below its minute's end.
                let rows_bound = frontier_bounds(&rows_frontier.frontier());
                let settled_below = rows_bound
                    .map(|(watermark, _)| watermark.saturating_add(1))
                    .into_iter()
                    .chain(waiting.keys().next().copied())
                    .min();
                pending.retain(|app, changes| {
                    while let Some((at, diff, place)) = changes.first() {
                        if settled_below.is_some_and(|below| at.watermark() >= below) {
                            break;
                        }
                        if *diff > 0 {
                            map.insert(app.clone(), place.clone());
                        } else if map.get(app) == Some(place) {
                            map.remove(app);
                        }
                        changes.remove(0);
                    }
                    !changes.is_empty()
                });
            }
        },
    )
}

/// The end of the minute starting at `minute` (epoch seconds), as a watermark.
fn minute_end(minute: i64) -> u64 {
    u64::try_from(minute.saturating_add(i64::from(MINUTE))).unwrap_or(0)
}

/// Where `app` was before the watermark reached `end`: the map, then its pending changes
/// stated below `end`.
fn place_before<T: GraphTime>(
    map: &FxHashMap<Str, Place>,
    pending: &FxHashMap<Str, Pending<T>>,
    app: &Str,
    end: u64,
) -> Place {
    let mut place = map.get(app).cloned();
    for (time, diff, changed) in pending.get(app).into_iter().flatten() {
        if time.watermark() >= end {
            break;
        }
        if *diff > 0 {
            place = Some(changed.clone());
        } else if place.as_ref() == Some(changed) {
            place = None;
        }
    }
    place.unwrap_or_default()
}

/// A group: a space or an org, by id.
pub type GroupKey = (GroupKind, Str);

/// What an open group minute keeps: the sums so far (key fields unset) and its float sums,
/// kept exact.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupWindow {
    sums: GroupRollup,
    totals: Totals,
}

/// A group's float sums, kept exact: parts arrive from every worker (and, in a cluster, every
/// process) in no fixed order, and an `f64` sum would change in its last bits with it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Totals {
    cpu: Option<ExactSum>,
    memory: Option<ExactSum>,
    disk: Option<ExactSum>,
}

impl Totals {
    fn add(&mut self, part: &GroupRollup) {
        for (sum, value) in [
            (&mut self.cpu, part.cpu_total),
            (&mut self.memory, part.memory_bytes_total),
            (&mut self.disk, part.disk_bytes_total),
        ] {
            if let Some(value) = value {
                sum.get_or_insert_with(ExactSum::default).add(value);
            }
        }
    }

    /// The group's row with its float sums filled in.
    fn finish(&self, mut row: GroupRollup) -> GroupRollup {
        row.cpu_total = self.cpu.map(|sum| sum.value());
        row.memory_bytes_total = self.memory.map(|sum| sum.value());
        row.disk_bytes_total = self.disk.map(|sum| sum.value());
        row
    }
}

fn group_hash(kind: GroupKind, group_id: &str) -> u64 {
    let mut hasher = FxHasher::default();
    (kind, group_id).hash(&mut hasher);
    hasher.finish()
}

/// The space and org minutes as windows of the minute (see [`crate::rollup`]): parts are
/// summed by group, a minute is written once the frontier passes its end, and with
/// checkpoints the open ones go into every snapshot and rows follow their epoch's checkpoint.
pub struct GroupRollups;

impl WindowAggregate for GroupRollups {
    type Sample = GroupRollup;
    type Key = GroupKey;
    type State = GroupWindow;
    type Row = GroupRollup;

    const PROVISIONAL_ROWS: bool = false;

    fn window(part: &GroupRollup) -> (GroupKey, i64) {
        ((part.kind, part.group_id.clone()), part.minute)
    }

    fn update(state: &mut GroupWindow, part: GroupRollup) {
        state.totals.add(&part);
        state.sums.merge(&part);
    }

    fn row(
        (kind, group_id): &GroupKey,
        start: i64,
        _width: u32,
        state: &GroupWindow,
        _is_final: bool,
    ) -> GroupRollup {
        state.totals.finish(GroupRollup {
            kind: *kind,
            group_id: group_id.clone(),
            minute: start,
            ..state.sums.clone()
        })
    }

    fn key_hash((kind, group_id): &GroupKey) -> u64 {
        group_hash(*kind, group_id)
    }

    fn sample_hash(part: &GroupRollup) -> u64 {
        group_hash(part.kind, &part.group_id)
    }

    fn save(windows: Vec<OpenWindow<GroupKey, GroupWindow>>, into: &mut WindowState) {
        into.group.extend(windows);
    }
}

/// Sums the parts of each group's minute on the worker that owns the group.
fn group_windows<'scope, T: GraphTime>(
    parts: Stream<'scope, T, Vec<GroupRollup>>,
    state: GroupState<'scope, T>,
) -> WindowedStreams<'scope, T, GroupRollup> {
    let mut options = state.options;
    // The gauge of open windows counts the app and platform windows the SPEC's tables are
    // made of, as it always has; group minutes are counted apart (and not shown).
    options.open_windows = Arc::default();
    windowed_by_key::<GroupRollups, T>(
        parts,
        "GroupWindows",
        MINUTE,
        options,
        state.restored,
        state.cuts,
    )
}
