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
//! directory's changes) and labels a row of time `t` once the directory's frontier has passed
//! `t`: with the directory as of `t`, whatever the scheduling. `GroupWindows` sums the parts
//! of a minute and emits the group's row once the frontier's watermark reaches the minute's
//! end — by then every final row of that minute has been emitted upstream (a rollup operator
//! holds a capability below a window's end while it is open) — and frees it: nothing per
//! minute outlives its window. `GroupWindows` is a [`crate::rollup::Windowed`] operator of
//! the minute without provisional rows, so with checkpoints (SPEC §9) it takes the same cuts,
//! puts its open minutes into every snapshot, continues restored ones, and stamps its rows
//! with the epoch whose checkpoint they follow. These are plain timely operators for the same reason the
//! minute windows are: a window is appended to, closed once and forgotten, which a
//! differential arrangement would keep (every minute's inputs, until compacted away).

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
use crate::time::{GraphTime, stamp_join};

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
            let mut waiting: Vec<(CapabilitySet<T>, T, Vec<AppRollup>)> = Vec::new();
            move |(rows_in, rows_frontier), (changes_in, changes_frontier), output| {
                changes_in.for_each_stamp(|_time, data| {
                    for ((app, info), at, diff) in data.flat_map(|batch| batch.drain(..)) {
                        let changes = pending.entry(app).or_default();
                        changes.push((at, diff, place(&info)));
                        changes.sort_by_key(|change| (change.0, change.1));
                    }
                });
                rows_in.for_each_stamp(|time, data| {
                    let rows: Vec<AppRollup> = data
                        .flat_map(|batch| batch.drain(..))
                        .filter(|row| row.is_final && row.window == MINUTE)
                        .collect();
                    if let (false, Some(at)) = (rows.is_empty(), stamp_join(time.stamp().iter())) {
                        let caps = CapabilitySet::from_elem(time.delayed(&at, 0));
                        waiting.push((caps, at, rows));
                    }
                });
                // Rows whose time the directory has passed: label them as of that time.
                let changes_frontier = changes_frontier.frontier();
                let mut i = 0;
                while i < waiting.len() {
                    if changes_frontier.less_equal(&waiting[i].1) {
                        i += 1;
                        continue;
                    }
                    let (caps, at, rows) = waiting.swap_remove(i);
                    let mut session = output.session(&caps);
                    for row in rows {
                        let (space, org) = place_at(&map, &pending, &row.app_id, &at);
                        for (kind, group_id) in [(GroupKind::Space, space), (GroupKind::Org, org)] {
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
                // Changes every waiting and future row comes at or after: into the map.
                let rows_frontier = rows_frontier.frontier();
                let settled = |at: &T| {
                    !rows_frontier.less_equal(at) && waiting.iter().all(|w| at.less_equal(&w.1))
                };
                pending.retain(|app, changes| {
                    while let Some((at, diff, place)) = changes.first() {
                        if !settled(at) {
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

/// Where `app` was at time `at`: the map, then its pending changes at or before `at`.
fn place_at<T: GraphTime>(
    map: &FxHashMap<Str, Place>,
    pending: &FxHashMap<Str, Pending<T>>,
    app: &Str,
    at: &T,
) -> Place {
    let mut place = map.get(app).cloned();
    for (time, diff, changed) in pending.get(app).into_iter().flatten() {
        if !time.less_equal(at) {
            continue;
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
