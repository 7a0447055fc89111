//! `Names`: logs and app rollup rows leave the graph carrying their app's names (SPEC §11:
//! Elasticsearch documents; SPEC §13: Prometheus labels).
//!
//! ```text
//! logs / app_rollups ─────────────────► Names ─► the same records, named
//! directory changes ─broadcast─────────┘ (one map entry per app, on every worker)
//! ```
//!
//! Every worker keeps the directory as a map (app id → shared names), fed by the directory's
//! changes, broadcast: in a cluster too, each worker knows every app, so a record is named on
//! the worker that holds it and nothing is exchanged for it. A record costs one lookup and,
//! when found, one reference count.
//!
//! Logs are not held back for the directory's frontier: a log is named with what the worker
//! knows when it passes (live logs keep their latency), and a log whose app the directory does
//! not know yet is named from its own envelope's tags (Diego's `app_name`, `space_name`, … —
//! the facts the directory will hold a moment later), so a tagged app's logs carry names from
//! its first line. Final rollup rows wait until the directory's frontier has passed their time
//! ([`Wait::ForDirectory`]), so a row is named with every change up to it whatever the
//! scheduling, and a Prometheus series does not lose or gain labels by chance; a change later
//! than the row that has already arrived is applied too (names are "once known", SPEC §13).

use std::sync::Arc;

use rustc_hash::FxHashMap;
use sluice_model::event::{Payload, app_info};
use sluice_model::records::{AppInfo, AppNames, AppRollup};
use sluice_model::{Event, Str};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::CapabilitySet;
use timely::dataflow::operators::generic::Operator;

use crate::directory::Change;
use crate::time::GraphTime;

/// A record that can carry its app's names.
pub trait Named {
    /// The app the record belongs to (canonical id), if any.
    fn app_id(&self) -> Option<&Str>;
    /// The names the record states itself (envelope tags), for an app the directory does
    /// not know yet.
    fn own_names(&self) -> Option<AppInfo> {
        None
    }
    fn set_names(&mut self, names: AppNames);
    /// Whether the record waits for the directory under [`Wait::ForDirectory`].
    fn waits(&self) -> bool {
        true
    }
}

impl Named for Event {
    fn app_id(&self) -> Option<&Str> {
        match &self.payload {
            Payload::Log(log) if !log.app_id.is_empty() => Some(&log.app_id),
            _ => None,
        }
    }

    fn own_names(&self) -> Option<AppInfo> {
        // One pass over the tags; an envelope without an app name names nothing.
        let values = self.header.tags.app_tag_values()?;
        values[0]?;
        app_info(values)
    }

    fn set_names(&mut self, names: AppNames) {
        if let Payload::Log(log) = &mut self.payload {
            log.names = Some(names);
        }
    }
}

impl Named for AppRollup {
    fn app_id(&self) -> Option<&Str> {
        Some(&self.app_id)
    }

    fn set_names(&mut self, names: AppNames) {
        self.names = Some(names);
    }

    /// Final rows only: a provisional row is shown as soon as it is flushed.
    fn waits(&self) -> bool {
        self.is_final
    }
}

/// The directory as one worker knows it.
#[derive(Default)]
pub struct NameMap {
    apps: FxHashMap<Str, AppNames>,
}

impl NameMap {
    /// Applies one change of the directory. A removal removes only the entry it names, so
    /// a move's removal and addition (same time) may arrive in either order.
    pub fn apply(&mut self, app: Str, info: AppInfo, diff: isize) {
        if diff > 0 {
            self.apps.insert(app, Arc::new(info));
        } else if self.apps.get(&app).is_some_and(|known| **known == info) {
            self.apps.remove(&app);
        }
    }

    /// Names `record` with the directory's entry of its app, else with its own names.
    pub fn name<R: Named>(&self, record: &mut R) {
        let Some(app) = record.app_id() else {
            return;
        };
        let names = match self.apps.get(app) {
            Some(names) => names.clone(),
            None => match record.own_names() {
                Some(info) => Arc::new(info),
                None => return,
            },
        };
        record.set_names(names);
    }

    pub fn len(&self) -> usize {
        self.apps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.apps.is_empty()
    }
}

/// Whether records wait for the directory before they are named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Named at once, with what the worker knows (logs: live latency matters most).
    No,
    /// Held until the directory's frontier has passed their time, so they are named with
    /// every change up to it (final rollup rows: a Prometheus series' labels should not
    /// depend on scheduling; they wait at most one advance of the watermark). Provisional
    /// rows are not held: they are named at once.
    ForDirectory,
}

/// `records` with their apps' names, from the directory whose changes (every one of them, on
/// every worker: broadcast) are `changes`.
pub fn names<'scope, T: GraphTime, R: Named + Clone + 'static>(
    records: Stream<'scope, T, Vec<R>>,
    changes: Stream<'scope, T, Vec<Change<T>>>,
    wait: Wait,
    name: &str,
) -> Stream<'scope, T, Vec<R>> {
    records.binary_frontier::<_, CapacityContainerBuilder<Vec<R>>, _, _, _, _>(
        changes,
        Pipeline,
        Pipeline,
        name,
        move |_capability, _info| {
            let mut map = NameMap::default();
            let mut waiting: Vec<(CapabilitySet<T>, Vec<R>)> = Vec::new();
            move |(records_in, _), (changes_in, changes_frontier), output| {
                // Changes first, so records of this activation see them.
                changes_in.for_each(|_time, data| {
                    for ((app, info), _at, diff) in data.drain(..) {
                        map.apply(app, info, diff);
                    }
                });
                records_in.for_each(|time, data| {
                    // A batch that waits for nothing, or whose every record waits (the usual
                    // cases: logs, a rollup's final rows), is named or held whole, without
                    // moving its records into new vectors.
                    if wait == Wait::No || !data.iter().any(R::waits) {
                        for record in data.iter_mut() {
                            map.name(record);
                        }
                        output.session(&time).give_container(data);
                    } else if data.iter().all(R::waits) {
                        waiting.push((time.retain_stamp(0), std::mem::take(data)));
                    } else {
                        let (held, mut now): (Vec<R>, Vec<R>) =
                            data.drain(..).partition(|record| record.waits());
                        for record in now.iter_mut() {
                            map.name(record);
                        }
                        output.session(&time).give_container(&mut now);
                        waiting.push((time.retain_stamp(0), held));
                    }
                });
                let frontier = changes_frontier.frontier();
                waiting.retain_mut(|(caps, records)| {
                    if caps.iter().any(|cap| frontier.less_equal(cap.time())) {
                        return true;
                    }
                    for record in records.iter_mut() {
                        map.name(record);
                    }
                    output.session(&*caps).give_container(records);
                    false
                });
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use timely::container::CapacityContainerBuilder;
    use timely::dataflow::InputHandle;
    use timely::dataflow::operators::{Input, Inspect, Probe};

    use super::*;

    /// A row that left `Names`: its app, whether it was final, and the name it carried.
    type NamedRow = (String, bool, Option<String>);

    fn row(app: &str, is_final: bool) -> AppRollup {
        AppRollup {
            app_id: Str::from(app),
            minute: 0,
            window: sluice_model::records::MINUTE,
            instances: 0,
            cpu_avg: None,
            cpu_max: None,
            memory_avg: None,
            memory_max: None,
            disk_avg: None,
            disk_max: None,
            requests: 0,
            status_2xx: 0,
            status_3xx: 0,
            status_4xx: 0,
            status_5xx: 0,
            response_bytes: 0,
            latency_avg_ms: None,
            latency_max_ms: None,
            latency_p50_ms: None,
            latency_p95_ms: None,
            latency_p99_ms: None,
            log_lines: 0,
            log_err_lines: 0,
            app_events: 0,
            is_final,
            names: None,
        }
    }

    /// Final rows, in a batch of their own or beside provisional ones, are named with a change
    /// of the directory at their time that arrives after them; provisional rows go at once.
    #[test]
    fn final_rows_wait_for_the_directory_and_provisional_rows_do_not() {
        timely::execute_directly(|worker| {
            let mut rows = InputHandle::<u64, CapacityContainerBuilder<Vec<AppRollup>>>::new();
            let mut changes = InputHandle::<u64, CapacityContainerBuilder<Vec<Change<u64>>>>::new();
            let named: Rc<RefCell<Vec<NamedRow>>> = Rc::default();
            let out = named.clone();
            let probe = worker.dataflow::<u64, _, _>(|scope| {
                names(
                    scope.input_from(&mut rows),
                    scope.input_from(&mut changes),
                    Wait::ForDirectory,
                    "Names",
                )
                .inspect(move |row| {
                    let name = row.names.as_ref().map(|names| names.name.to_string());
                    out.borrow_mut()
                        .push((row.app_id.to_string(), row.is_final, name));
                })
                .probe()
                .0
            });
            rows.advance_to(5);
            changes.advance_to(5);
            // A mixed batch, then one of final rows only, both before the change.
            rows.send_batch(&mut vec![row("a", true), row("a", false)]);
            rows.send_batch(&mut vec![row("b", true)]);
            rows.advance_to(6);
            // Until the provisional row is out (a bound, should it never be).
            for _ in 0..1000 {
                if !named.borrow().is_empty() {
                    break;
                }
                worker.step();
            }
            assert_eq!(
                *named.borrow(),
                vec![("a".to_owned(), false, None)],
                "only the provisional row, named with what was known"
            );
            for app in ["a", "b"] {
                let info = AppInfo {
                    name: Str::from(format!("{app}-web")),
                    ..AppInfo::default()
                };
                changes.send(((Str::from(app), info), 5, 1));
            }
            changes.advance_to(6);
            worker.step_while(|| probe.less_than(&6));
            let mut finals: Vec<_> = named.borrow().iter().filter(|r| r.1).cloned().collect();
            finals.sort();
            assert_eq!(
                finals,
                vec![
                    ("a".to_owned(), true, Some("a-web".to_owned())),
                    ("b".to_owned(), true, Some("b-web".to_owned())),
                ]
            );
        });
    }

    fn info(name: &str, space: &str) -> AppInfo {
        AppInfo {
            name: Str::from(name),
            space_id: Str::from(space),
            ..AppInfo::default()
        }
    }

    #[test]
    fn a_move_is_followed_whichever_half_comes_first() {
        let mut map = NameMap::default();
        let app = Str::from("a");
        map.apply(app.clone(), info("web", "s1"), 1);
        // The addition of the new place before the removal of the old one.
        map.apply(app.clone(), info("web", "s2"), 1);
        map.apply(app.clone(), info("web", "s1"), -1);
        assert_eq!(
            map.apps.get(&app).map(|n| n.space_id.clone()),
            Some(Str::from("s2"))
        );
        // A deletion.
        map.apply(app.clone(), info("web", "s2"), -1);
        assert!(map.is_empty());
    }
}
