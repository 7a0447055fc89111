//! The Cloud Foundry directory (SPEC §11): which app is called what and lives in which space
//! and org, as a differential-dataflow collection.
//!
//! ```text
//! records ─► Route (TagFacts) ──┐ (app_id, (Tags, info)) ±1, only when an app's tags change
//! listings ─► ListingFacts ─────┤ (app_id, (CloudController, info)): +this listing −the last
//!                               ▼
//!                     reduce by app_id: the Cloud Controller's fact wins, else the tags'
//!                               ▼
//!                 directory changes ((app_id, info), time, ±1) ─► AppRows ─► `apps` stream
//! ```
//!
//! With checkpoints (SPEC §9) `DirectorySnapshots` saves, at the end of every checkpointed
//! epoch, the facts as they stood then (each worker its own: its tags' last facts, and on the
//! worker that takes listings the last listing's); a restarted run sends them back into
//! `Route`'s [`TagFacts`] and `ListingFacts`, which continue from them and state them again in an epoch
//! before the run's first. The directory is then what it was, `Enrich` and `Names` label with
//! it from the first record on, and `AppRows` writes no row for it (the stores have them).
//!
//! A listing is the Cloud Controller's whole answer; it enters as itself minus the listing
//! before it, so differential's consolidation is what finds the apps that changed, and the
//! reduce emits changes only for those: an unchanged app costs nothing downstream and writes
//! no row. An app missing from a new listing loses its Cloud Controller fact; if no tag fact
//! remains, it leaves the directory (a delete of its row).

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};

use differential_dataflow::AsCollection;
use differential_dataflow::collection::VecCollection;
use rustc_hash::{FxHashMap, FxHasher};
use serde::{Deserialize, Serialize};
use sluice_model::Str;
use sluice_model::event::{AppId, AppTagValues, app_info};
use sluice_model::records::{AppInfo, AppRow};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use crate::checkpoint::{Cut, Snapshot, WindowState};
use crate::graph::Placement;
use crate::route::app_key_hash;
use crate::time::{GraphTime, frontier_bounds, stamp_join};
use crate::watermark::Stamped;

/// Where a fact about an app comes from. The Cloud Controller's sorts first: it wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Origin {
    CloudController,
    Tags,
}

/// One fact: an app and what a source says of it.
pub type Fact = (Str, (Origin, AppInfo));

/// A fact as a checkpoint keeps it, with how many times it holds on the worker that saved it
/// (once, unless a listing named an app twice).
pub type SavedFact = (Fact, isize);

/// A change of the directory: an app's entry, added (+1) or removed (−1), at a time.
pub type Change<T> = ((Str, AppInfo), T, isize);

/// One complete answer of the Cloud Controller: every app it lists, with its names.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Listing {
    pub apps: Vec<(Str, AppInfo)>,
}

/// The hash facts and directory entries of an app are exchanged by.
pub fn app_hash(app_id: &str) -> u64 {
    let mut hasher = FxHasher::default();
    app_id.hash(&mut hasher);
    hasher.finish()
}

/// What the directory makes: its changes (every worker's share), the `apps` rows, and (with
/// checkpoints) its facts at the end of every checkpointed epoch.
pub struct DirectoryStreams<'scope, T: GraphTime> {
    pub changes: Stream<'scope, T, Vec<Change<T>>>,
    pub rows: Stream<'scope, T, Vec<AppRow>>,
    pub snapshots: Option<Stream<'scope, T, Vec<Snapshot>>>,
}

/// What the directory starts from and saves (SPEC §9).
pub struct DirectoryState<'scope, T: GraphTime> {
    /// The facts of a restored checkpoint, on any worker, sent in an epoch before
    /// `first_epoch`; an empty stream without one.
    pub restored: Stream<'scope, T, Vec<SavedFact>>,
    /// The ingest points' cuts, on every worker; `None` without checkpoints.
    pub cuts: Option<Stream<'scope, T, Vec<Cut>>>,
    /// The epoch this run's records start in: changes of earlier epochs are the restored
    /// directory, whose `app` rows the stores already have. 0 without checkpoints.
    pub first_epoch: u64,
}

/// Builds the directory from the records' tag facts (stated by `Route`, see [`TagFacts`])
/// and the Cloud Controller's listings.
pub fn directory<'scope, T: GraphTime>(
    tags: Stream<'scope, T, Vec<(Fact, T, isize)>>,
    listings: Stream<'scope, T, Vec<Listing>>,
    state: DirectoryState<'scope, T>,
) -> DirectoryStreams<'scope, T> {
    let facts = tags
        .as_collection()
        .concat(listing_facts(listings, state.restored));
    let snapshots = state
        .cuts
        .map(|cuts| directory_snapshots(facts.inner.clone(), cuts));
    let changes = resolve(facts).inner;
    let rows = app_rows(changes.clone(), state.first_epoch);
    DirectoryStreams {
        changes,
        rows,
        snapshots,
    }
}

/// What `Route` needs to state the records' tag facts: the restored ones, and where an app's
/// records are.
pub struct TagInputs<'scope, T: GraphTime> {
    /// The facts of a restored checkpoint, on any worker (see [`DirectoryState::restored`]).
    pub restored: Stream<'scope, T, Vec<SavedFact>>,
    pub placement: Placement,
}

/// The worker a restored fact goes to: a tag fact where its app's records go (see
/// `graph::build_with_state`); the Cloud Controller's to worker 0, whose `Route` drops it
/// (`ListingFacts` takes those).
pub(crate) fn restored_worker(placement: Placement, fact: &SavedFact) -> u64 {
    let ((app, (origin, _)), _) = fact;
    match origin {
        Origin::Tags => placement.record_worker(app_key_hash(app)),
        Origin::CloudController => 0,
    }
}

/// The facts the records' tags state, as changes: an app's first tagged record adds its
/// fact, a record whose tags differ from the last ones replaces it. The map of last tags is
/// one entry per tagged app seen. `Route` keeps one per worker and shows it every record as
/// it routes it (a pass of its own over the records cost an operator hop for each batch):
/// restored tag facts fill the map before any record is looked at, and are stated again at
/// their time.
#[derive(Default)]
pub(crate) struct TagFacts {
    last: FxHashMap<Str, AppInfo>,
}

impl TagFacts {
    /// A restored fact: kept if it is the tags' (to be stated again), else dropped.
    pub(crate) fn restore(&mut self, (fact, count): SavedFact) -> Option<SavedFact> {
        let (app, (origin, info)) = fact;
        if origin != Origin::Tags {
            return None;
        }
        self.last.insert(app.clone(), info.clone());
        Some(((app, (origin, info)), count))
    }

    /// The fact changes one record's tags make: none when they are what its app had.
    ///
    /// Half the envelopes of a foundation may carry tags, and almost all of them say what the
    /// app's last ones said: that case is decided without allocating or cloning anything (the
    /// app id looked up as it is, a UUID formatted on the stack, each tag compared in place).
    pub(crate) fn observe(
        &mut self,
        record: &Stamped,
    ) -> Option<impl Iterator<Item = (Fact, isize)> + use<>> {
        let last = &mut self.last;
        let event = &record.event;
        let tags = &event.header.tags;
        // Most envelopes carry no names.
        let values = tags.app_tag_values()?;
        if values[0].is_none() && values[1].is_none() {
            return None;
        }
        let app = event.app_id()?;
        let mut buffer = [0u8; 36];
        let id: &str = match &app {
            AppId::Str(id) => id,
            AppId::Uuid(uuid) => uuid.hyphenated().encode_lower(&mut buffer),
        };
        if last.get(id).is_some_and(|known| same_names(known, &values)) {
            return None;
        }
        let info = app_info(values)?;
        let app = app.to_canonical();
        let old = last.insert(app.clone(), info.clone());
        let removed = old.map(|old| ((app.clone(), (Origin::Tags, old)), -1));
        Some(
            removed
                .into_iter()
                .chain(std::iter::once(((app, (Origin::Tags, info)), 1))),
        )
    }
}

/// Whether the tags name the app as `known` does (an absent tag is an empty name).
fn same_names(known: &AppInfo, values: &AppTagValues<'_>) -> bool {
    let known = [
        &known.name,
        &known.space_id,
        &known.space_name,
        &known.org_id,
        &known.org_name,
    ];
    known
        .iter()
        .zip(values)
        .all(|(known, value)| value.map_or("", |tag| &**tag) == &***known)
}

/// The facts the Cloud Controller's listings state: each listing added, and the one before
/// it retracted, at the listing's time. The listings arrive on one worker (worker 0); a
/// restored listing's facts (from `restored`) are the one before the first, stated again at
/// their time.
pub fn listing_facts<'scope, T: GraphTime>(
    listings: Stream<'scope, T, Vec<Listing>>,
    restored: Stream<'scope, T, Vec<SavedFact>>,
) -> VecCollection<'scope, T, Fact> {
    listings
        .binary_frontier::<_, CapacityContainerBuilder<Vec<(Fact, T, isize)>>, _, _, _, _>(
            restored,
            Pipeline,
            Exchange::new(|_: &SavedFact| 0),
            "ListingFacts",
            |_capability, _info| {
                let mut previous: Vec<(Str, AppInfo)> = Vec::new();
                move |(input, _), (restored, restored_frontier), output| {
                    restored.for_each(|time, data| {
                        let Some(at) = stamp_join(time.stamp().iter()) else {
                            return;
                        };
                        let cap = time.delayed(&at, 0);
                        let mut session = output.session(&cap);
                        for ((app, (origin, info)), count) in data.drain(..) {
                            if origin != Origin::CloudController {
                                continue;
                            }
                            for _ in 0..count {
                                previous.push((app.clone(), info.clone()));
                            }
                            session.give(((app, (origin, info)), at, count));
                        }
                    });
                    // A listing waits until the one it retracts is known.
                    if !restored_frontier.frontier().is_empty() {
                        return;
                    }
                    input.for_each_stamp(|time, data| {
                        let Some(at) = stamp_join(time.stamp().iter()) else {
                            return;
                        };
                        let cap = time.delayed(&at, 0);
                        let mut session = output.session(&cap);
                        for listing in data.flat_map(|batch| batch.drain(..)) {
                            for (app, info) in previous.drain(..) {
                                session.give(((app, (Origin::CloudController, info)), at, -1));
                            }
                            for (app, info) in &listing.apps {
                                let fact = (Origin::CloudController, info.clone());
                                session.give(((app.clone(), fact), at, 1));
                            }
                            previous = listing.apps;
                        }
                    });
                }
            },
        )
        .as_collection()
}

/// The directory: per app, the Cloud Controller's fact if there is one, else the tags'.
pub fn resolve<'scope, T: GraphTime>(
    facts: VecCollection<'scope, T, Fact>,
) -> VecCollection<'scope, T, (Str, AppInfo)> {
    facts.reduce_named("Directory", |_app, facts, out| {
        // Facts come sorted: the Cloud Controller's first.
        if let Some(((_, info), _)) = facts.iter().find(|(_, count)| *count > 0) {
            out.push(((*info).clone(), 1));
        }
    })
}

/// The `app` table's changes: for each app that changed at a time, its new row, or its
/// removal when it left the directory. Changes of epochs before `first_epoch` are the
/// restored directory: the stores have its rows.
pub fn app_rows<'scope, T: GraphTime>(
    changes: Stream<'scope, T, Vec<Change<T>>>,
    first_epoch: u64,
) -> Stream<'scope, T, Vec<AppRow>> {
    changes.unary::<CapacityContainerBuilder<Vec<AppRow>>, _, _, _>(
        Exchange::new(|change: &Change<T>| app_hash(&change.0.0)),
        "AppRows",
        |_capability, _info| {
            move |input, output| {
                input.for_each_stamp(|time, data| {
                    // An app's changes at one time: at most one addition (its new entry)
                    // and one removal (its old one).
                    let mut by_app: BTreeMap<(Str, T), (Option<AppInfo>, bool)> = BTreeMap::new();
                    let changes = data
                        .flat_map(|batch| batch.drain(..))
                        .filter(|(_, at, _)| at.epoch() >= first_epoch);
                    for ((app, info), at, diff) in changes {
                        let entry = by_app.entry((app, at)).or_default();
                        if diff > 0 {
                            entry.0 = Some(info);
                        } else {
                            entry.1 = true;
                        }
                    }
                    let mut rows: Vec<AppRow> = by_app
                        .into_iter()
                        .map(|((app_id, at), (info, _))| AppRow {
                            app_id,
                            info,
                            updated: i64::try_from(at.watermark()).unwrap_or(i64::MAX),
                        })
                        .collect();
                    rows.sort_by(|a, b| (a.updated, &a.app_id).cmp(&(b.updated, &b.app_id)));
                    output.session(&time).give_iterator(rows.into_iter());
                });
            }
        },
    )
}

/// Saves the facts at the end of every checkpointed epoch: on each worker, the facts it has
/// stated (its tags' last ones; the last listing's on the worker that takes listings) as of
/// that epoch — those of later epochs that arrive first wait — as a [`Snapshot`].
fn directory_snapshots<'scope, T: GraphTime>(
    facts: Stream<'scope, T, Vec<(Fact, T, isize)>>,
    cuts: Stream<'scope, T, Vec<Cut>>,
) -> Stream<'scope, T, Vec<Snapshot>> {
    facts.binary_frontier::<_, CapacityContainerBuilder<Vec<Snapshot>>, _, _, _, _>(
        cuts,
        Pipeline,
        Pipeline,
        "DirectorySnapshots",
        |capability, _info| {
            // The facts are kept from one checkpoint to the next, so a snapshot may be due at
            // any cut: the operator holds a capability at the first epoch not saved yet.
            let mut held: Option<Capability<T>> = Some(capability);
            let mut saved: FxHashMap<Fact, isize> = FxHashMap::default();
            let mut pending: BTreeMap<u64, Vec<(Fact, isize)>> = BTreeMap::new();
            let mut cut_epochs: BTreeSet<u64> = BTreeSet::new();
            let mut next_epoch = 0u64;
            move |(facts_in, facts_frontier), (cuts_in, cuts_frontier), output| {
                facts_in.for_each(|_time, data| {
                    for (fact, at, diff) in data.drain(..) {
                        pending.entry(at.epoch()).or_default().push((fact, diff));
                    }
                });
                cuts_in.for_each(|_time, data| {
                    cut_epochs.extend(data.drain(..).map(|cut| cut.epoch));
                });
                let Some(capability) = held.as_mut() else {
                    return;
                };
                let facts_bound = frontier_bounds(&facts_frontier.frontier());
                let cuts_bound = frontier_bounds(&cuts_frontier.frontier());
                loop {
                    let epoch = next_epoch;
                    let ended = |bound: Option<(u64, u64)>| bound.is_none_or(|(_, e)| e > epoch);
                    if !(ended(facts_bound) && ended(cuts_bound)) {
                        break;
                    }
                    while let Some(entry) = pending.first_entry() {
                        if *entry.key() > epoch {
                            break;
                        }
                        for (fact, diff) in entry.remove() {
                            let count = saved.entry(fact.clone()).or_default();
                            *count += diff;
                            if *count == 0 {
                                saved.remove(&fact);
                            }
                        }
                    }
                    if cut_epochs.remove(&epoch) && !saved.is_empty() {
                        let at = capability.delayed(&T::at(capability.time().watermark(), epoch));
                        let directory = saved.iter().map(|(f, c)| (f.clone(), *c)).collect();
                        let windows = WindowState {
                            directory,
                            ..WindowState::default()
                        };
                        output.session(&at).give(Snapshot { epoch, windows });
                    }
                    // On to the next epoch anything is known of.
                    let next = [facts_bound, cuts_bound]
                        .into_iter()
                        .flatten()
                        .map(|(_, e)| e)
                        .chain(pending.keys().next().copied())
                        .chain(cut_epochs.first().copied())
                        .min();
                    match next {
                        Some(next) => next_epoch = next.max(epoch + 1),
                        None => {
                            next_epoch = epoch + 1;
                            break;
                        }
                    }
                }
                if facts_bound.is_none() && cuts_bound.is_none() {
                    held = None;
                    return;
                }
                let watermark = [facts_bound, cuts_bound]
                    .into_iter()
                    .flatten()
                    .map(|(w, _)| w)
                    .min()
                    .unwrap_or(0)
                    .max(capability.time().watermark());
                let to = T::at(watermark, next_epoch.max(capability.time().epoch()));
                if to != *capability.time() {
                    capability.downgrade(&to);
                }
            }
        },
    )
}
