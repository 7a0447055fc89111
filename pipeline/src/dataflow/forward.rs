//! The last operator of every stream: hands its batches to the sinks that take it now,
//! blocking while one is behind (backpressure reaches the sources). (Rollup rows of a run
//! with checkpoints take another way: with their checkpoint, see `checkpoint`.)

use std::sync::Arc;

use sluice_model::records::{Records, StreamName};
use sluice_operators::time::Time;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use crate::routing::SinkRoutes;

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
