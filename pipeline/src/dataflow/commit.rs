//! In a cluster with checkpoints: a dataflow of its own whose frontier says which epochs
//! every process has on disk (see `crate::state::commit`). Each process's leader holds a
//! capability at one past the newest epoch its writer has written and moves it up as the
//! writer goes on; the least of them over the cluster, as timely's progress tracking reports
//! it to every process, is one past the newest epoch the whole cluster has. A leader lets go
//! once its writer is done, so the dataflow — and the run — ends once every process is.

use std::sync::Arc;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::generic::operator::source;

use crate::state::commit::CommitGate;

/// Builds the commit dataflow on `worker`; `leader` is this process's leader.
pub(super) fn build(worker: &mut timely::worker::Worker, gate: Arc<CommitGate>, leader: usize) {
    worker.dataflow::<u64, _, _>(move |scope| {
        let is_leader = scope.index() == leader;
        let writer = gate.clone();
        let written = source::<_, CapacityContainerBuilder<Vec<()>>, _, _>(
            scope,
            "Written",
            move |capability, info| {
                let mut held = None;
                if is_leader {
                    writer.register(scope.worker().sync_activator_for(info.address.to_vec()));
                    held = Some(capability);
                }
                move |_output| {
                    let Some(capability) = held.as_mut() else {
                        return;
                    };
                    match writer.bound() {
                        Some(bound) if *capability.time() < bound => capability.downgrade(&bound),
                        Some(_) => {}
                        None => held = None,
                    }
                }
            },
        );
        written.sink(Pipeline, "Committed", move |(input, frontier)| {
            input.for_each(|_time, _data| {});
            if is_leader {
                gate.set_committed(
                    frontier
                        .frontier()
                        .iter()
                        .min()
                        .copied()
                        .unwrap_or(u64::MAX),
                );
            }
        });
    });
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// Waits up to a minute for `condition`.
    fn eventually(what: &str, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !condition() {
            assert!(Instant::now() < deadline, "never: {what}");
            std::thread::yield_now();
        }
    }

    #[test]
    fn an_epoch_is_committed_once_every_leader_has_written_it() {
        // Two workers, each the leader of a process of its own, each with its writer's gate.
        let gates = [
            Arc::new(CommitGate::default()),
            Arc::new(CommitGate::default()),
        ];
        let shared = gates.clone();
        let guards = timely::execute(timely::Config::process(2), move |worker| {
            let index = worker.index();
            build(worker, shared[index].clone(), index);
        })
        .expect("timely starts");
        let [first, second] = &gates;
        first.written(3);
        second.written(1);
        eventually("epoch 1 committed on both", || {
            first.is_committed(1) && second.is_committed(1)
        });
        assert!(!first.is_committed(2), "the second has only epoch 1");
        second.written(5);
        eventually("epoch 3 committed", || {
            first.is_committed(3) && second.is_committed(3)
        });
        assert!(!second.is_committed(4), "the first has only epoch 3");
        // Once both writers are done (each has written every epoch there will be) the
        // dataflow ends, and with it the workers.
        first.finish();
        second.finish();
        for result in guards.join() {
            result.expect("a worker ended well");
        }
        assert!(first.is_committed(u64::MAX - 1) && second.is_committed(u64::MAX - 1));
    }
}
