//! The last operator of every stream: hands its batches to the sinks that take it now,
//! blocking while one is behind (backpressure reaches the sources). Rollup rows of a
//! checkpointed run wait for their epoch's checkpoint to be durable first (SPEC §9).

use std::collections::BTreeMap;
use std::sync::Arc;

use sluice_model::records::{Records, StreamName};
use sluice_operators::time::{GraphTime, Time};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use tracing::error;

use crate::routing::SinkRoutes;
use crate::state::writer::Durable;

/// Hands every batch of a stream to the sinks that take it, blocking while one is behind.
/// Returns a stream with no records whose frontier says what has been handed over.
pub(super) fn forward<'scope, T: Clone + 'static>(
    stream: Stream<'scope, Time, Vec<T>>,
    routes: &Arc<SinkRoutes>,
    name: StreamName,
    wrap: fn(Vec<T>) -> Records,
) -> Stream<'scope, Time, Vec<()>> {
    forward_tapped(stream, routes, name, wrap, |_| {})
}

/// [`forward`], showing every batch to `tap` first.
pub(super) fn forward_tapped<'scope, T: Clone + 'static>(
    stream: Stream<'scope, Time, Vec<T>>,
    routes: &Arc<SinkRoutes>,
    name: StreamName,
    wrap: fn(Vec<T>) -> Records,
    mut tap: impl FnMut(&[T]) + 'static,
) -> Stream<'scope, Time, Vec<()>> {
    let routes = routes.clone();
    stream.unary::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
        Pipeline,
        "Forward",
        move |_capability, _info| {
            move |input, _output| {
                input.for_each(|_time, data| {
                    tap(data);
                    routes.send(name, wrap(std::mem::take(data)));
                });
            }
        },
    )
}

/// [`forward_tapped`] for rows that may go out only once the checkpoint of their epoch (their
/// time's epoch) is durable: they wait here until then, and the operator keeps the dataflow
/// alive while any wait.
pub(super) fn forward_durable<T: Clone + 'static>(
    stream: Stream<'_, Time, Vec<T>>,
    routes: &Arc<SinkRoutes>,
    name: StreamName,
    wrap: fn(Vec<T>) -> Records,
    mut tap: impl FnMut(&[T]) + 'static,
    durable: Arc<Durable>,
) {
    let scope = stream.scope();
    let routes = routes.clone();
    let mut builder = OperatorBuilder::new("Forward".to_owned(), scope);
    let info = builder.operator_info();
    let mut input = builder.new_input(stream, Pipeline);
    durable.watch(scope.worker().sync_activator_for(info.address.to_vec()));
    builder.build_reschedule(move |_capabilities| {
        let mut waiting: BTreeMap<u64, Vec<Vec<T>>> = BTreeMap::new();
        move |frontiers| {
            input.for_each_stamp(|time, data| {
                let epoch = time.stamp().iter().map(GraphTime::epoch).max().unwrap_or(0);
                let batches = waiting.entry(epoch).or_default();
                batches.extend(data.map(std::mem::take));
            });
            let on_disk = durable.epoch();
            while let Some(entry) = waiting.first_entry() {
                if *entry.key() > on_disk {
                    break;
                }
                for mut batch in entry.remove() {
                    tap(&batch);
                    routes.send(name, wrap(std::mem::take(&mut batch)));
                }
            }
            let input_done = frontiers[0].frontier().is_empty();
            if input_done && !waiting.is_empty() && durable.is_closed() {
                let rows: usize = waiting.values().flatten().map(Vec::len).sum();
                error!(stream = %name, rows,
                    "No checkpoint covers these rollup rows, so they are not written: the next run rebuilds them from the last checkpoint.");
                waiting.clear();
            }
            // Rows still waiting keep the dataflow (and this operator) alive.
            !waiting.is_empty()
        }
    });
}
