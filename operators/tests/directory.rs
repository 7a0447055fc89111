//! The directory of SPEC §11 on timely workers: the `app` table follows the Cloud
//! Controller's listings with one row per changed app, tags fill in what the Cloud Controller
//! does not list, and the space and org rollups equal a naive sum of the final app rollups
//! by the mapping in force when each window closed, with any number of workers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use sluice_model::event::{ContainerMetric, Header, LogMessage, MessageType, Tags};
use sluice_model::records::{AppInfo, AppRollup, AppRow, GroupKind, GroupRollup};
use sluice_model::{Event, Payload, Str};
use sluice_operators::app_events::{AppEventRules, LiveRules};
use sluice_operators::directory::Listing;
use sluice_operators::graph::{self, Placement, StateInputs};
use sluice_operators::rollup::WindowOptions;
use sluice_operators::watermark::{LateCounts, Watermark, stamp_batch};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::InputHandle;
use timely::dataflow::operators::generic::operator::empty;
use timely::dataflow::operators::{Input, Inspect, Probe};

const SEC: i64 = 1_000_000_000;

fn app(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

fn info(name: &str, space: &str, org: &str) -> AppInfo {
    AppInfo {
        name: Str::from(name),
        space_id: Str::from(space),
        space_name: Str::from(format!("{space}-name")),
        org_id: Str::from(org),
        org_name: Str::from(format!("{org}-name")),
    }
}

fn log(app: &str, at: i64, tags: Option<&AppInfo>) -> Event {
    let tags = tags.map_or_else(Tags::default, |info| {
        Tags::from_pairs(vec![
            (Str::from("app_name"), info.name.clone()),
            (Str::from("space_id"), info.space_id.clone()),
            (Str::from("space_name"), info.space_name.clone()),
            (Str::from("organization_id"), info.org_id.clone()),
            (Str::from("organization_name"), info.org_name.clone()),
        ])
    });
    Event {
        timestamp: at,
        header: Header {
            origin: Str::from("rep"),
            tags,
            ..Header::default()
        },
        payload: Payload::Log(LogMessage {
            names: None,
            message: Bytes::from_static(b"line"),
            message_type: if at % 3 == 0 {
                MessageType::Err
            } else {
                MessageType::Out
            },
            timestamp: at,
            app_id: Str::from(app),
            source_type: Str::from("APP/PROC/WEB"),
            source_instance: Str::from("0"),
        }),
    }
}

fn container(app: &str, at: i64, instance: i32, cpu: f64) -> Event {
    Event {
        timestamp: at,
        header: Header {
            origin: Str::from("rep"),
            ..Header::default()
        },
        payload: Payload::Container(ContainerMetric {
            application_id: Str::from(app),
            instance_index: instance,
            cpu_percentage: cpu,
            memory_bytes: 1000 + instance as u64,
            disk_bytes: 500,
            memory_bytes_quota: None,
            disk_bytes_quota: None,
        }),
    }
}

/// One step of a scenario: records, or a Cloud Controller listing.
#[derive(Clone)]
enum Step {
    Records(Vec<Event>),
    Listing(Listing),
}

#[derive(Default)]
struct Output {
    /// `apps` rows, by the step after which they came out.
    apps: BTreeMap<usize, Vec<AppRow>>,
    app_rollups: Vec<AppRollup>,
    groups: Vec<GroupRollup>,
}

/// When the workers run while a scenario is fed in.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Pace {
    /// After each step, until everything it caused has come out.
    EachStep,
    /// Only once every step is in: each operator sees all its input at once, so a rollup
    /// operator still holds the capability of the first batch when its windows close.
    AtEnd,
}

/// Runs `steps` through the graph on `workers` workers; after each step, waits until
/// everything it caused has come out.
fn run(workers: usize, steps: Vec<Step>) -> Output {
    run_paced(workers, steps, Pace::EachStep)
}

/// Runs `steps` through the graph on `workers` workers, stepping the workers at `pace`.
fn run_paced(workers: usize, steps: Vec<Step>, pace: Pace) -> Output {
    let output = Arc::new(Mutex::new(Output::default()));
    let out = output.clone();
    let steps = Arc::new(steps);
    let step_index = Arc::new(Mutex::new(0usize));
    timely::execute(timely::Config::process(workers), move |worker| {
        let mut records = InputHandle::<u64, CapacityContainerBuilder<Vec<_>>>::new();
        let mut listings = InputHandle::<u64, CapacityContainerBuilder<Vec<Listing>>>::new();
        let options = WindowOptions {
            flush_interval: Arc::new(AtomicU64::new(3_600_000_000_000)),
            shutting_down: Arc::new(AtomicBool::new(false)),
            open_windows: Arc::new(AtomicI64::new(0)),
            windows: vec![60],
            checkpoints: false,
            first_epoch: 0,
            placement: Placement::single(workers),
        };
        let (out, index) = (out.clone(), step_index.clone());
        let probe = worker.dataflow::<u64, _, _>(|scope| {
            let state = StateInputs {
                app_windows: empty(scope),
                platform_windows: empty(scope),
                group_windows: empty(scope),
                directory: empty(scope),
                cuts: empty(scope),
                listings: scope.input_from(&mut listings),
            };
            let streams = graph::build_with_state(
                scope.input_from(&mut records),
                LiveRules::new(AppEventRules::default()),
                options,
                state,
            );
            let (o, i) = (out.clone(), index.clone());
            let (probe, apps) = streams.apps.probe();
            apps.inspect(move |row| {
                let step = *i.lock().expect("lock");
                let mut o = o.lock().expect("lock");
                o.apps.entry(step).or_default().push(row.clone());
            });
            let o = out.clone();
            streams
                .app_rollups
                .inspect(move |row| o.lock().expect("lock").app_rollups.push(row.clone()));
            let o = out.clone();
            streams
                .group_rollups
                .inspect(move |row| o.lock().expect("lock").groups.push(row.clone()));
            probe
        });
        if worker.index() != 0 {
            return;
        }
        let mut watermark = Watermark::new(Duration::from_secs(60));
        let mut late = LateCounts::default();
        for (i, step) in steps.iter().enumerate() {
            *step_index.lock().expect("lock") = i;
            let time = *records.time();
            match step {
                Step::Records(batch) => {
                    let mut stamped = Vec::new();
                    let at = stamp_batch(&mut watermark, batch.clone(), 1, &mut stamped, &mut late);
                    let at = at.max(time);
                    records.advance_to(at);
                    listings.advance_to(at);
                    records.send_batch(&mut stamped);
                }
                Step::Listing(listing) => listings.send(listing.clone()),
            }
            // Each step ends at a time of its own, so what it caused can be waited for.
            let next = watermark.epoch().max(*records.time()) + 1;
            records.advance_to(next);
            listings.advance_to(next);
            while pace == Pace::EachStep && probe.less_than(&next) {
                worker.step();
            }
        }
        *step_index.lock().expect("lock") = steps.len();
        // The inputs close as the closure returns, and the workers run to the end.
    })
    .expect("timely runs");
    std::mem::take(&mut *output.lock().expect("lock"))
}

fn listing(apps: &[(usize, AppInfo)]) -> Listing {
    Listing {
        apps: apps
            .iter()
            .map(|(i, info)| (Str::from(app(*i)), info.clone()))
            .collect(),
    }
}

/// The `app` table after applying `rows` to `table`.
fn apply(table: &mut BTreeMap<Str, AppInfo>, rows: &[AppRow]) {
    for row in rows {
        match &row.info {
            Some(info) => table.insert(row.app_id.clone(), info.clone()),
            None => table.remove(&row.app_id),
        };
    }
}

#[test]
fn the_app_table_follows_every_listing_with_one_row_per_changed_app() {
    let mut listings = Vec::new();
    // 40 apps; each refresh renames a few, moves a few, deletes one and adds one.
    let mut apps: BTreeMap<usize, AppInfo> = (0..40)
        .map(|i| {
            let space = format!("space-{}", i % 4);
            let org = format!("org-{}", i % 2);
            (i, info(&format!("app-{i}"), &space, &org))
        })
        .collect();
    listings.push(apps.clone());
    for refresh in 1..6usize {
        let mut next = apps.clone();
        let keys: Vec<usize> = next.keys().copied().collect();
        let pick = |k: usize| keys[(refresh * 7 + k * 5) % keys.len()];
        next.get_mut(&pick(0)).expect("app").name = Str::from(format!("renamed-{refresh}"));
        let moved = next.get_mut(&pick(1)).expect("app");
        moved.space_id = Str::from(format!("space-new-{refresh}"));
        moved.space_name = Str::from(format!("space-new-{refresh}-name"));
        next.remove(&pick(2));
        next.insert(
            100 + refresh,
            info(&format!("new-{refresh}"), "space-0", "org-0"),
        );
        // A refresh where nothing changes writes nothing.
        listings.push(next.clone());
        listings.push(next.clone());
        apps = next;
    }
    let steps: Vec<Step> = listings
        .iter()
        .map(|apps| {
            let apps: Vec<(usize, AppInfo)> =
                apps.iter().map(|(i, info)| (*i, info.clone())).collect();
            Step::Listing(listing(&apps))
        })
        .collect();
    for workers in [1, 2, 4] {
        let output = run(workers, steps.clone());
        let mut table = BTreeMap::new();
        let mut before: BTreeMap<Str, AppInfo> = BTreeMap::new();
        for (i, expected) in listings.iter().enumerate() {
            let rows = output.apps.get(&i).cloned().unwrap_or_default();
            apply(&mut table, &rows);
            let expected: BTreeMap<Str, AppInfo> = expected
                .iter()
                .map(|(i, info)| (Str::from(app(*i)), info.clone()))
                .collect();
            assert_eq!(table, expected, "{workers} workers, refresh {i}");
            let changed = expected
                .iter()
                .filter(|(id, info)| before.get(*id) != Some(info))
                .count()
                + before
                    .keys()
                    .filter(|id| !expected.contains_key(*id))
                    .count();
            assert_eq!(rows.len(), changed, "{workers} workers, refresh {i}");
            before = expected;
        }
    }
}

#[test]
fn tags_name_apps_the_cloud_controller_does_not_list_and_lose_to_it() {
    let tagged = info("from-tags", "space-t", "org-t");
    let listed = info("from-cc", "space-c", "org-c");
    let steps = vec![
        Step::Records(vec![
            log(&app(1), 600 * SEC, Some(&tagged)),
            log(&app(2), 600 * SEC, Some(&tagged)),
            log(&app(3), 600 * SEC, None),
        ]),
        Step::Listing(listing(&[(2, listed.clone())])),
        // The same tags again change nothing; new tags for app 1 rename it.
        Step::Records(vec![
            log(&app(1), 601 * SEC, Some(&tagged)),
            log(&app(2), 601 * SEC, Some(&tagged)),
            log(
                &app(1),
                602 * SEC,
                Some(&info("renamed", "space-t", "org-t")),
            ),
        ]),
        // Deleted from the Cloud Controller: the tags' fact is what remains.
        Step::Listing(listing(&[])),
    ];
    let output = run(2, steps);
    let mut table = BTreeMap::new();
    let at = |step: usize| output.apps.get(&step).cloned().unwrap_or_default();
    apply(&mut table, &at(0));
    assert_eq!(table.len(), 2, "app 3 has no tags and is not listed");
    assert_eq!(table[&Str::from(app(2))], tagged);
    apply(&mut table, &at(1));
    assert_eq!(at(1).len(), 1);
    assert_eq!(
        table[&Str::from(app(2))],
        listed,
        "the Cloud Controller wins"
    );
    apply(&mut table, &at(2));
    assert_eq!(at(2).len(), 1, "only the rename is written");
    assert_eq!(&*table[&Str::from(app(1))].name, "renamed");
    apply(&mut table, &at(3));
    assert_eq!(table[&Str::from(app(2))], tagged);
}

/// Minutes 10–14 with the first mapping, a jump that closes them, a listing that moves
/// app 0 to another space, then minutes 30–34.
fn group_scenario() -> (Vec<Step>, AppInfo, AppInfo) {
    let before = info("a0", "space-a", "org-1");
    let after = info("a0", "space-b", "org-1");
    let others = |i: usize| info(&format!("a{i}"), &format!("space-{}", i % 3), "org-2");
    let mapping = |first: &AppInfo| {
        let mut apps = vec![(0, first.clone())];
        // Apps 1–5 are listed; 6 and 7 are known by neither listing nor tags.
        apps.extend((1..6).map(|i| (i, others(i))));
        listing(&apps)
    };
    let mut steps = vec![Step::Listing(mapping(&before))];
    let records = |minutes: std::ops::Range<i64>| {
        let mut steps = Vec::new();
        for minute in minutes {
            for second in (0..60).step_by(10) {
                let at = (minute * 60 + second) * SEC;
                let batch: Vec<Event> = (0..8)
                    .flat_map(|i| {
                        let id = app(i);
                        let mut events = vec![log(&id, at + i as i64, None)];
                        if i % 2 == 0 {
                            events.push(container(&id, at, (second / 10) as i32 % 3, i as f64));
                        }
                        events
                    })
                    .collect();
                steps.push(Step::Records(batch));
            }
        }
        steps
    };
    steps.extend(records(10..15));
    // Closes minutes 10–14 under the first mapping.
    steps.push(Step::Records(vec![log(&app(7), 29 * 60 * SEC, None)]));
    steps.push(Step::Listing(mapping(&after)));
    steps.extend(records(30..35));
    (steps, before, after)
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0),
        (None, None) => true,
        _ => false,
    }
}

#[test]
fn group_rollups_equal_a_naive_sum_by_the_mapping_when_each_window_closed() {
    let (steps, before, after) = group_scenario();
    let mut reference_rows: Option<Vec<GroupRollup>> = None;
    for workers in [1, 2, 4] {
        let output = run(workers, steps.clone());
        // The naive reference: every final minute row, under its app's space and org.
        let mut expected: BTreeMap<(GroupKind, Str, i64), GroupRollup> = BTreeMap::new();
        let place = |app_id: &str, minute: i64| -> (Str, Str) {
            let index: usize = app_id[24..].parse().expect("test app id");
            let info = match index {
                0 if minute < 30 * 60 => before.clone(),
                0 => after.clone(),
                1..=5 => info(
                    &format!("a{index}"),
                    &format!("space-{}", index % 3),
                    "org-2",
                ),
                _ => AppInfo::default(),
            };
            (info.space_id, info.org_id)
        };
        for row in output.app_rollups.iter().filter(|r| r.is_final) {
            let (space, org) = place(&row.app_id, row.minute);
            for (kind, group_id) in [(GroupKind::Space, space), (GroupKind::Org, org)] {
                let sum = expected
                    .entry((kind, group_id.clone(), row.minute))
                    .or_insert_with(|| GroupRollup {
                        kind,
                        group_id,
                        minute: row.minute,
                        ..GroupRollup::default()
                    });
                sum.add(row);
            }
        }
        let mut got: BTreeMap<(GroupKind, Str, i64), GroupRollup> = BTreeMap::new();
        for row in &output.groups {
            let key = (row.kind, row.group_id.clone(), row.minute);
            assert!(
                got.insert(key, row.clone()).is_none(),
                "one row per group and minute: {row:?}"
            );
        }
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "{workers} workers"
        );
        for (key, want) in &expected {
            let have = &got[key];
            let counts = |r: &GroupRollup| {
                (
                    r.apps,
                    r.instances,
                    r.requests,
                    r.log_lines,
                    r.log_err_lines,
                    r.app_events,
                )
            };
            assert_eq!(counts(have), counts(want), "{workers} workers, {key:?}");
            assert!(close(have.cpu_total, want.cpu_total), "{key:?}");
            assert!(close(have.memory_bytes_total, want.memory_bytes_total));
            assert!(close(have.disk_bytes_total, want.disk_bytes_total));
        }
        // The move shows: space-a has app 0 before minute 30, space-b after.
        let space = |id: &str, minute: i64| got.get(&(GroupKind::Space, Str::from(id), minute));
        assert_eq!(space("space-a", 600).map(|r| r.apps), Some(1));
        assert!(space("space-a", 1800).is_none());
        assert_eq!(space("space-b", 1800).map(|r| r.apps), Some(1));
        assert_eq!(space("", 600).map(|r| r.apps), Some(2), "apps 6 and 7");
        let mut rows: Vec<GroupRollup> = got.into_values().collect();
        rows.iter_mut().for_each(|r| {
            r.cpu_total = r.cpu_total.map(|x| (x * 1e6).round());
            r.memory_bytes_total = r.memory_bytes_total.map(|x| (x * 1e6).round());
            r.disk_bytes_total = r.disk_bytes_total.map(|x| (x * 1e6).round());
        });
        match &reference_rows {
            None => reference_rows = Some(rows),
            Some(first) => assert_eq!(&rows, first, "{workers} workers agree with 1"),
        }
    }
}

/// Regression: a row was labelled with the directory as of the time its rollup operator
/// happened to emit it at — the capability of the first batch when the operator ran late —
/// so whether an app's first minutes counted under its space or under `''` changed from run
/// to run. A minute counts an app under the facts stated before the minute closed (by
/// batches sent at a watermark below its end), however the workers are scheduled.
#[test]
fn a_minute_is_grouped_by_the_facts_stated_before_it_closed_whatever_the_scheduling() {
    let two = info("a2", "space-x", "org-1");
    let three = info("a3", "space-y", "org-1");
    let minute = |m: i64, second: i64| (m * 60 + second) * SEC;
    let steps = vec![
        // Sent at watermark 0: apps 1 and 3, untagged, in minute 10.
        Step::Records(vec![
            log(&app(1), minute(10, 5), None),
            log(&app(3), minute(10, 6), None),
        ]),
        // Sent at a watermark of 545 s, before minute 10 ends (660 s): app 2's first tags.
        Step::Records(vec![log(&app(2), minute(10, 20), Some(&two))]),
        // Moves the watermark to 660 s, which closes minute 10.
        Step::Records(vec![log(&app(2), minute(12, 0), Some(&two))]),
        // Sent at 660 s: app 3's first tags come after minute 10 closed.
        Step::Records(vec![log(&app(3), minute(12, 1), Some(&three))]),
        Step::Records(vec![log(&app(1), minute(20, 0), None)]),
    ];
    for pace in [Pace::EachStep, Pace::AtEnd] {
        for workers in [1, 2] {
            let output = run_paced(workers, steps.clone(), pace);
            let apps = |group: &str, minute: i64| -> Option<u64> {
                output
                    .groups
                    .iter()
                    .find(|r| {
                        r.kind == GroupKind::Space && &*r.group_id == group && r.minute == minute
                    })
                    .map(|r| r.apps)
            };
            let case = format!("{pace:?}, {workers} workers");
            assert_eq!(
                apps("space-x", 600),
                Some(1),
                "{case}: app 2, named in time"
            );
            assert_eq!(apps("", 600), Some(2), "{case}: apps 1 and 3");
            assert_eq!(
                apps("space-y", 600),
                None,
                "{case}: app 3 was named too late"
            );
            assert_eq!(apps("space-x", 720), Some(1), "{case}");
            assert_eq!(apps("space-y", 720), Some(1), "{case}");
        }
    }
}
