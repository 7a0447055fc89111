//! The graph's side of checkpoints (SPEC §9): the windows a restored checkpoint holds, sent
//! to the rollup operators at start; and `Checkpoint`, which puts each epoch's parts — Ingest's
//! and every rollup operator's snapshot — together once no part of it can still arrive, and
//! hands the whole to the writer thread.

use std::collections::BTreeMap;
use std::sync::Arc;

use sluice_model::Str;
use sluice_operators::checkpoint::{OpenWindow, Snapshot, WindowState};
use sluice_operators::rollup::app::AppWindow;
use sluice_operators::rollup::platform::PlatformWindow;
use sluice_operators::route::PlatformKey;
use sluice_operators::time::{GraphTime, Time, frontier_bounds};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::{Scope, Stream};

use super::StatePlan;
use super::ingest::IngestParts;
use crate::routing::SinkRoutes;
use crate::state::file::Checkpoint;
use crate::state::writer::PendingCheckpoint;

type Restored<'scope, K, S> = Stream<'scope, Time, Vec<OpenWindow<K, S>>>;

/// The restored checkpoint's windows, sent once by worker 0 at the start of `first_epoch`
/// (the rollup operators exchange them to the workers that own their keys).
pub(super) fn restored_windows<'scope>(
    scope: Scope<'scope, Time>,
    restored: Option<Arc<Checkpoint>>,
    first_epoch: u64,
) -> (
    Restored<'scope, Str, AppWindow>,
    Restored<'scope, PlatformKey, PlatformWindow>,
) {
    let windows = restored
        .filter(|_| scope.index() == 0)
        .map(|checkpoint| checkpoint.windows.clone());
    let (app, platform) = match windows {
        Some(WindowState { app, platform }) => (Some(app), Some(platform)),
        None => (None, None),
    };
    (
        send_once(scope, "RestoredAppWindows", app, first_epoch),
        send_once(scope, "RestoredPlatformWindows", platform, first_epoch),
    )
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

/// Puts each epoch's checkpoint together on worker 0 and hands it to the writer, with how
/// many records each sink had been handed by then: the raw records of the epoch are among
/// them (`handed_over` says when), and the writer waits until the sinks have them safe.
pub(super) fn assemble<'scope>(
    snapshots: Stream<'scope, Time, Vec<Snapshot>>,
    handed_over: Stream<'scope, Time, Vec<()>>,
    parts: IngestParts,
    state: &StatePlan,
    widths: Vec<u32>,
    routes: Arc<SinkRoutes>,
) {
    let scope = snapshots.scope();
    // Worker 0 assembles (it also runs Ingest, whose parts it needs).
    let mut writer = if scope.index() == 0 {
        state
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    } else {
        None
    };
    let mut builder = OperatorBuilder::new("Checkpoint".to_owned(), scope);
    let mut snapshots_in = builder.new_input(snapshots, Exchange::new(|_: &Snapshot| 0));
    let mut handed_in = builder.new_input(handed_over, Exchange::new(|_: &()| 0));
    let mut windows: BTreeMap<u64, WindowState> = BTreeMap::new();
    builder.build(move |_capabilities| {
        move |frontiers| {
            snapshots_in.for_each(|_time, data| {
                for snapshot in data.drain(..) {
                    windows
                        .entry(snapshot.epoch)
                        .or_default()
                        .extend(snapshot.windows);
                }
            });
            handed_in.for_each(|_time, _data| {});
            let Some(sender) = writer.as_ref() else {
                return;
            };
            // An epoch is complete once no input has a time of it (or earlier) left.
            let complete = frontiers
                .iter()
                .filter_map(|f| frontier_bounds(&f.frontier()))
                .map(|(_, epoch)| epoch)
                .min();
            let ready: Vec<u64> = parts
                .borrow()
                .keys()
                .copied()
                .filter(|epoch| complete.is_none_or(|c| *epoch < c))
                .collect();
            for epoch in ready {
                let Some(part) = parts.borrow_mut().remove(&epoch) else {
                    continue;
                };
                let checkpoint = Checkpoint {
                    epoch,
                    taken_at: sluice_common::time::now_ns(),
                    records: part.records,
                    watermark: part.watermark,
                    sources: part.sources,
                    widths: widths.clone(),
                    windows: windows.remove(&epoch).unwrap_or_default(),
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
