//! The Cloud Foundry directory (SPEC §11): which app is called what and lives in which space
//! and org, as a differential-dataflow collection.
//!
//! ```text
//! records ─► TagFacts ──────────┐ (app_id, (Tags, info)) ±1, only when an app's tags change
//! listings ─► ListingFacts ─────┤ (app_id, (CloudController, info)): +this listing −the last
//!                               ▼
//!                     reduce by app_id: the Cloud Controller's fact wins, else the tags'
//!                               ▼
//!                 directory changes ((app_id, info), time, ±1) ─► AppRows ─► `apps` stream
//! ```
//!
//! A listing is the Cloud Controller's whole answer; it enters as itself minus the listing
//! before it, so differential's consolidation is what finds the apps that changed, and the
//! reduce emits changes only for those: an unchanged app costs nothing downstream and writes
//! no row. An app missing from a new listing loses its Cloud Controller fact; if no tag fact
//! remains, it leaves the directory (a delete of its row).

use std::collections::BTreeMap;
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
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::{Operator, OutputBuilder};

use crate::time::{GraphTime, stamp_join};
use crate::watermark::Stamped;

/// Where a fact about an app comes from. The Cloud Controller's sorts first: it wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Origin {
    CloudController,
    Tags,
}

/// One fact: an app and what a source says of it.
pub type Fact = (Str, (Origin, AppInfo));

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

/// What the directory makes: its changes (every worker's share) and the `apps` rows.
pub struct DirectoryStreams<'scope, T: GraphTime> {
    pub changes: Stream<'scope, T, Vec<Change<T>>>,
    pub rows: Stream<'scope, T, Vec<AppRow>>,
}

/// Builds the directory from the records' tags and the Cloud Controller's listings. The
/// records pass through unchanged (moved, not copied) and come back with the directory.
pub fn directory<'scope, T: GraphTime>(
    records: Stream<'scope, T, Vec<Stamped>>,
    listings: Stream<'scope, T, Vec<Listing>>,
) -> (Stream<'scope, T, Vec<Stamped>>, DirectoryStreams<'scope, T>) {
    let (records, tags) = tag_facts(records);
    let changes = resolve(tags.concat(listing_facts(listings))).inner;
    let rows = app_rows(changes.clone());
    (records, DirectoryStreams { changes, rows })
}

/// The facts the records' tags state, as changes: an app's first tagged record adds its
/// fact, a record whose tags differ from the last ones replaces it. The map of last tags is
/// one entry per tagged app seen. The records pass through.
pub fn tag_facts<'scope, T: GraphTime>(
    records: Stream<'scope, T, Vec<Stamped>>,
) -> (
    Stream<'scope, T, Vec<Stamped>>,
    VecCollection<'scope, T, Fact>,
) {
    let scope = records.scope();
    let mut builder = OperatorBuilder::new("TagFacts".to_owned(), scope);
    let mut input = builder.new_input(records, Pipeline);
    let (records_out, records) = builder.new_output();
    let (facts_out, facts) = builder.new_output();
    let mut records_out =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<Stamped>>>::from(records_out);
    let mut facts_out =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<(Fact, T, isize)>>>::from(facts_out);
    builder.build(move |_capabilities| {
        let mut last: FxHashMap<Str, AppInfo> = FxHashMap::default();
        move |_frontiers| {
            let mut records_out = records_out.activate();
            let mut facts_out = facts_out.activate();
            input.for_each(|time, data| {
                if let Some(at) = stamp_join(time.stamp().iter()) {
                    let cap = time.delayed(&at, 1);
                    let mut session = facts_out.session(&cap);
                    for record in data.iter() {
                        if let Some(fact) = tag_fact(&mut last, record) {
                            for (fact, diff) in fact {
                                session.give((fact, at, diff));
                            }
                        }
                    }
                }
                records_out.session(&time).give_container(data);
            });
        }
    });
    (records, facts.as_collection())
}

/// The fact changes one record's tags make: none when they are what its app had.
///
/// Half the envelopes of a foundation may carry tags, and almost all of them say what the
/// app's last ones said: that case is decided without allocating or cloning anything (the
/// app id looked up as it is, a UUID formatted on the stack, each tag compared in place).
fn tag_fact(
    last: &mut FxHashMap<Str, AppInfo>,
    record: &Stamped,
) -> Option<impl Iterator<Item = (Fact, isize)>> {
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
/// it retracted, at the listing's time.
pub fn listing_facts<'scope, T: GraphTime>(
    listings: Stream<'scope, T, Vec<Listing>>,
) -> VecCollection<'scope, T, Fact> {
    listings
        .unary::<CapacityContainerBuilder<Vec<(Fact, T, isize)>>, _, _, _>(
            Pipeline,
            "ListingFacts",
            |_capability, _info| {
                let mut previous: Vec<(Str, AppInfo)> = Vec::new();
                move |input, output| {
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
/// removal when it left the directory.
pub fn app_rows<'scope, T: GraphTime>(
    changes: Stream<'scope, T, Vec<Change<T>>>,
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
                    for ((app, info), at, diff) in data.flat_map(|batch| batch.drain(..)) {
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
