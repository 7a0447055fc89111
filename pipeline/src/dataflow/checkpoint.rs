//! The graph's side of checkpoints (SPEC §9): the windows and directory facts a restored
//! checkpoint holds, sent to the rollup operators and the directory at start; and `Checkpoint`, which puts each epoch's parts — Ingest's
//! and every rollup operator's snapshot — together once no part of it can still arrive, and
//! hands the whole to the writer thread.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use sluice_model::Str;
use sluice_model::records::{AppRollup, GroupRollup, PlatformRollup, Records};
use sluice_operators::checkpoint::{Cut, OpenWindow, Snapshot, WindowState};
use sluice_operators::directory::SavedFact;
use sluice_operators::groups::{GroupKey, GroupWindow};
use sluice_operators::rollup::app::AppWindow;
use sluice_operators::rollup::platform::PlatformWindow;
use sluice_operators::route::PlatformKey;
use sluice_operators::time::{GraphTime, Time, frontier_bounds};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::{Scope, Stream};

use super::StatePlan;
use super::ingest::{IngestPart, IngestParts};
use crate::routing::SinkRoutes;
use crate::state::file::Checkpoint;
use crate::state::writer::PendingCheckpoint;
use tracing::warn;

type Restored<'scope, K, S> = Stream<'scope, Time, Vec<OpenWindow<K, S>>>;

/// What a restored checkpoint gives the graph, as streams.
pub(super) struct RestoredState<'scope> {
    pub(super) app: Restored<'scope, Str, AppWindow>,
    pub(super) platform: Restored<'scope, PlatformKey, PlatformWindow>,
    pub(super) group: Restored<'scope, GroupKey, GroupWindow>,
    pub(super) directory: Stream<'scope, Time, Vec<SavedFact>>,
}

/// The restored checkpoint's windows, sent once by the process's leader at the start of
/// `first_epoch` (the rollup operators exchange them to the workers of the cluster that own
/// their keys); and its directory facts, sent in the epoch before (the checkpoint's own), so
/// that the directory's changes they make are told apart from this run's: they write no
/// `app` rows.
pub(super) fn restored_state<'scope>(
    scope: Scope<'scope, Time>,
    restored: Option<Arc<Checkpoint>>,
    first_epoch: u64,
    leader: usize,
) -> RestoredState<'scope> {
    let windows = restored
        .filter(|_| scope.index() == leader)
        .map(|checkpoint| checkpoint.windows.clone());
    let (app, platform, group, directory) = match windows {
        Some(WindowState {
            app,
            platform,
            group,
            directory,
        }) => (Some(app), Some(platform), Some(group), Some(directory)),
        None => (None, None, None, None),
    };
    RestoredState {
        app: send_once(scope, "RestoredAppWindows", app, first_epoch),
        platform: send_once(scope, "RestoredPlatformWindows", platform, first_epoch),
        group: send_once(scope, "RestoredGroupWindows", group, first_epoch),
        directory: send_once(
            scope,
            "RestoredDirectory",
            directory,
            first_epoch.saturating_sub(1),
        ),
    }
}

/// A source that sends `data` (if any) once, in `epoch`, and ends.
fn send_once<'scope, D: Clone + 'static>(
    scope: Scope<'scope, Time>,
    name: &str,
    data: Option<Vec<D>>,
    epoch: u64,
) -> Stream<'scope, Time, Vec<D>> {
    source::<_, CapacityContainerBuilder<Vec<D>>, _, _>(scope, name, move |capability, _info| {
        let mut capability = Some(capability);
        let mut data = data;
        move |output| {
            if let (Some(held), Some(mut windows)) = (capability.take(), data.take()) {
                let at = held.delayed(&Time::at(0, epoch));
                output.session(&at).give_container(&mut windows);
            }
            capability = None;
        }
    })
}

/// What a checkpoint is made of, as streams of the graph.
pub(super) struct Parts<'scope> {
    /// Every rollup operator's open windows at the end of each epoch.
    pub(super) snapshots: Stream<'scope, Time, Vec<Snapshot>>,
    /// No records: its frontier says which epochs' raw records the sinks have been handed.
    pub(super) handed_over: Stream<'scope, Time, Vec<()>>,
    /// The rollup rows, stamped with the epoch whose checkpoint they follow.
    pub(super) app_rollups: Stream<'scope, Time, Vec<AppRollup>>,
    pub(super) platform_rollups: Stream<'scope, Time, Vec<PlatformRollup>>,
    /// The space and org rows (SPEC §11), likewise.
    pub(super) group_rollups: Stream<'scope, Time, Vec<GroupRollup>>,
    /// Ingest's parts, by epoch (on the same worker).
    pub(super) ingest: IngestParts,
    /// Every ingest point's cuts: which epochs the cluster ends.
    pub(super) cuts: Stream<'scope, Time, Vec<Cut>>,
    /// The worker that assembles this process's checkpoints: its leader, which runs Ingest.
    pub(super) leader: usize,
}

/// What one epoch's checkpoint gathers on the leader before Ingest's part completes it.
#[derive(Default)]
struct Gathered {
    windows: WindowState,
    app_rollups: Chunks<AppRollup>,
    platform_rollups: Chunks<PlatformRollup>,
    group_rollups: Chunks<GroupRollup>,
}

/// Rows kept in chunks of at most [`Chunks::ROWS`]: an epoch of a fast replay holds hundreds
/// of thousands, and one growing vector would copy them all again at every doubling. Each
/// chunk becomes one `Records` batch for the sinks.
struct Chunks<R> {
    chunks: Vec<Vec<R>>,
}

impl<R> Default for Chunks<R> {
    fn default() -> Self {
        Chunks { chunks: Vec::new() }
    }
}

impl<R> Chunks<R> {
    const ROWS: usize = 4096;

    fn extend(&mut self, rows: impl IntoIterator<Item = R>) {
        for row in rows {
            match self.chunks.last_mut() {
                Some(chunk) if chunk.len() < Self::ROWS => chunk.push(row),
                _ => {
                    let mut chunk = Vec::with_capacity(Self::ROWS);
                    chunk.push(row);
                    self.chunks.push(chunk);
                }
            }
        }
    }

    fn append(&mut self, mut other: Chunks<R>) {
        self.chunks.append(&mut other.chunks);
    }

    fn into_records(self, records: impl Fn(Vec<R>) -> Records) -> impl Iterator<Item = Records> {
        self.chunks.into_iter().map(records)
    }
}

/// Puts each epoch's checkpoint together on the process's leader — windows, Ingest's part,
/// the epoch's rollup rows — once no part of it can still arrive, and hands it to the writer
/// with how many records each sink had been handed by then (the epoch's raw records are
/// among them: the writer waits until the sinks have them safe).
///
/// In a cluster every process assembles its own part of every epoch the cluster ends: its
/// workers' windows and rows, its Ingest's part — or, once its input is over, Ingest's last
/// part, which no later epoch changes — so that every process has a checkpoint of every
/// epoch.
pub(super) fn assemble(
    parts: Parts<'_>,
    state: &StatePlan,
    widths: Vec<u32>,
    routes: Arc<SinkRoutes>,
) {
    let scope = parts.snapshots.scope();
    // The leader assembles (it also runs Ingest, whose parts it needs); each worker's parts
    // go to its own process's leader.
    let leader = parts.leader;
    let to_leader = leader as u64;
    let mut writer = if scope.index() == leader {
        state
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    } else {
        None
    };
    let ingest = parts.ingest;
    let mut builder = OperatorBuilder::new("Checkpoint".to_owned(), scope);
    let mut snapshots_in = builder.new_input(
        parts.snapshots,
        Exchange::new(move |_: &Snapshot| to_leader),
    );
    let mut handed_in =
        builder.new_input(parts.handed_over, Exchange::new(move |_: &()| to_leader));
    let mut app_in = builder.new_input(
        parts.app_rollups,
        Exchange::new(move |_: &AppRollup| to_leader),
    );
    let mut platform_in = builder.new_input(
        parts.platform_rollups,
        Exchange::new(move |_: &PlatformRollup| to_leader),
    );
    let mut group_in = builder.new_input(
        parts.group_rollups,
        Exchange::new(move |_: &GroupRollup| to_leader),
    );
    let mut cuts_in = builder.new_input(parts.cuts.broadcast(), Pipeline);
    let mut gathered: BTreeMap<u64, Gathered> = BTreeMap::new();
    // The epochs some ingest point ended, not yet assembled; and this process's last part.
    let mut ended: BTreeSet<u64> = BTreeSet::new();
    let mut last_part: Option<IngestPart> = None;
    builder.build(move |_capabilities| {
        move |frontiers| {
            snapshots_in.for_each(|_time, data| {
                for snapshot in data.drain(..) {
                    gathered
                        .entry(snapshot.epoch)
                        .or_default()
                        .windows
                        .extend(snapshot.windows);
                }
            });
            handed_in.for_each(|_time, _data| {});
            cuts_in.for_each(|_time, data| {
                // Every worker receives the cuts; only the one assembling keeps them.
                if writer.is_some() {
                    ended.extend(data.drain(..).map(|cut| cut.epoch));
                }
            });
            app_in.for_each_stamp(|time, data| {
                let epoch = stamp_epoch(&time);
                let rows = &mut gathered.entry(epoch).or_default().app_rollups;
                rows.extend(data.flat_map(|batch| batch.drain(..)));
            });
            platform_in.for_each_stamp(|time, data| {
                let epoch = stamp_epoch(&time);
                let rows = &mut gathered.entry(epoch).or_default().platform_rollups;
                rows.extend(data.flat_map(|batch| batch.drain(..)));
            });
            group_in.for_each_stamp(|time, data| {
                let epoch = stamp_epoch(&time);
                let rows = &mut gathered.entry(epoch).or_default().group_rollups;
                rows.extend(data.flat_map(|batch| batch.drain(..)));
            });
            let Some(sender) = writer.as_ref() else {
                return;
            };
            // An epoch is complete once no input has a time of it (or earlier) left.
            let complete = frontiers
                .iter()
                .filter_map(|f| frontier_bounds(&f.frontier()))
                .map(|(_, epoch)| epoch)
                .min();
            let ready: Vec<u64> = ended
                .iter()
                .copied()
                .filter(|epoch| complete.is_none_or(|c| *epoch < c))
                .collect();
            for epoch in ready {
                ended.remove(&epoch);
                // This process's own cut of the epoch, or (its input over before the epoch
                // ended elsewhere) its last, which nothing has changed since.
                let part = match ingest.borrow_mut().remove(&epoch) {
                    Some(part) => part,
                    None => match &last_part {
                        Some(part) => part.clone(),
                        None => {
                            warn!(epoch, "An epoch ended before this process's first cut; it has no checkpoint here.");
                            continue;
                        }
                    },
                };
                last_part = Some(part.clone());
                // Rows of epochs without a cut of their own (before the first) go with this one.
                let mut epoch_parts = Gathered::default();
                while let Some(entry) = gathered.first_entry() {
                    if *entry.key() > epoch {
                        break;
                    }
                    let earlier = entry.remove();
                    epoch_parts.windows.extend(earlier.windows);
                    epoch_parts.app_rollups.append(earlier.app_rollups);
                    epoch_parts
                        .platform_rollups
                        .append(earlier.platform_rollups);
                    epoch_parts.group_rollups.append(earlier.group_rollups);
                }
                let rows: Vec<Records> = epoch_parts
                    .app_rollups
                    .into_records(Records::AppRollups)
                    .chain(
                        epoch_parts
                            .platform_rollups
                            .into_records(Records::PlatformRollups),
                    )
                    .chain(
                        epoch_parts
                            .group_rollups
                            .into_records(Records::GroupRollups),
                    )
                    .collect();
                let checkpoint = Checkpoint {
                    epoch,
                    taken_at: sluice_common::time::now_ns(),
                    records: part.records,
                    watermark: part.watermark,
                    sources: part.sources,
                    widths: widths.clone(),
                    windows: epoch_parts.windows,
                    rows,
                };
                let pending = PendingCheckpoint {
                    checkpoint,
                    sinks: routes.handed_over(),
                };
                if sender.send(pending).is_err() {
                    // The writer is gone (the run is failing): nothing more to write.
                    writer = None;
                    return;
                }
            }
            if complete.is_none() {
                // The last epoch is assembled: closing the channel lets the writer finish.
                writer = None;
            }
        }
    });
}

/// The epoch a message belongs to: the latest of its stamp's.
fn stamp_epoch(time: &timely::dataflow::operators::InputCapability<Time>) -> u64 {
    time.stamp().iter().map(GraphTime::epoch).max().unwrap_or(0)
}
