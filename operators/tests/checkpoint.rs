//! Checkpoints in the graph alone (SPEC §9): a run split at a cut and continued from the
//! snapshot of that cut emits, in the end, exactly the rows an uninterrupted run emits, for
//! any number of workers and wherever the cut falls — late records included.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use sluice_model::event::{
    ContainerMetric, CounterEvent, Header, HttpStartStop, LogMessage, MessageType, Method,
    PeerType, ValueMetric,
};
use sluice_model::records::{AppInfo, AppRollup, GroupKind, GroupRollup, PlatformRollup};
use sluice_model::{Event, Payload, Str};
use sluice_operators::app_events::{AppEventRules, LiveRules};
use sluice_operators::checkpoint::{Cut, OpenWindow, Snapshot, WindowState};
use sluice_operators::graph::{self, StateInputs};
use sluice_operators::groups::{GroupKey, GroupState, GroupWindow, group_rollups};
use sluice_operators::rollup::WindowOptions;
use sluice_operators::time::{GraphTime, Time};
use sluice_operators::watermark::{LateCounts, Watermark, stamp_batch};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::core::{UnorderedHandle, UnorderedInput};
use timely::dataflow::operators::{ActivateCapability, Inspect};

const MIN: i64 = 60_000_000_000;

/// A deterministic mix of every record kind for six apps and two platform series over about
/// ten minutes, a tenth of it minutes late, in batches of 40.
fn traffic() -> Vec<Vec<Event>> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let apps: Vec<String> = (0..6)
        .map(|i| uuid::Uuid::from_u128(0x1000 + i).to_string())
        .collect();
    let header = |origin: &str, index: u64| Header {
        origin: Str::from(origin),
        job: Str::from("diego_cell"),
        index: Str::from(index.to_string()),
        ..Header::default()
    };
    let mut events = Vec::new();
    for i in 0..2400i64 {
        let jitter = (next() % 20_000_000_000) as i64;
        let late = if next() % 10 == 0 { 3 * MIN } else { 0 };
        let at = 100 * MIN + i * 250_000_000 - jitter - late;
        let app = &apps[(next() % 6) as usize];
        let event = match next() % 6 {
            0 => Event {
                timestamp: at,
                header: header("rep", next() % 2),
                payload: Payload::Container(ContainerMetric {
                    application_id: Str::from(app.as_str()),
                    instance_index: (next() % 3) as i32,
                    cpu_percentage: (next() % 1000) as f64 / 7.0,
                    memory_bytes: next() % (1 << 30),
                    disk_bytes: next() % (1 << 28),
                    memory_bytes_quota: None,
                    disk_bytes_quota: None,
                }),
            },
            1 => Event {
                timestamp: at,
                header: header("gorouter", 0),
                payload: Payload::Http(HttpStartStop {
                    start_timestamp: at - (next() % 900_000_000) as i64,
                    stop_timestamp: at,
                    request_id: uuid::Uuid::from_u128(u128::from(next())),
                    peer_type: PeerType::Client,
                    method: Method::GET,
                    uri: Str::from("/"),
                    remote_address: Str::new(),
                    user_agent: Str::new(),
                    status_code: [200, 201, 302, 404, 503][(next() % 5) as usize],
                    content_length: (next() % 5000) as i64,
                    application_id: Some(uuid::Uuid::parse_str(app).expect("a uuid")),
                    instance_index: Some(0),
                    instance_id: Str::new(),
                    forwarded: Vec::new(),
                }),
            },
            2 | 3 => Event {
                timestamp: at,
                header: header("rep", 0),
                payload: Payload::Log(LogMessage {
                    names: None,
                    message: Bytes::from(if next() % 50 == 0 {
                        r#"Updated app with guid x ({"state"=>"STARTED"})"#
                    } else {
                        "GET / 200"
                    }),
                    message_type: if next() % 7 == 0 {
                        MessageType::Err
                    } else {
                        MessageType::Out
                    },
                    timestamp: at,
                    app_id: Str::from(app.as_str()),
                    source_type: Str::from(if next() % 50 == 0 {
                        "API"
                    } else {
                        "APP/PROC/WEB"
                    }),
                    source_instance: Str::from("0"),
                }),
            },
            4 => Event {
                timestamp: at,
                header: header("gorouter", next() % 2),
                payload: Payload::Value(ValueMetric {
                    name: Str::from("latency"),
                    value: (next() % 10_000) as f64 / 3.0,
                    unit: Str::from("ms"),
                }),
            },
            _ => Event {
                timestamp: at,
                header: header("doppler", 0),
                payload: Payload::Counter(CounterEvent {
                    name: Str::from("ingress"),
                    delta: next() % 100,
                    total: Some(i as u64 * 50),
                }),
            },
        };
        events.push(event);
    }
    events.chunks(40).map(<[_]>::to_vec).collect()
}

/// What a run emitted and where it stopped.
#[derive(Default)]
struct Outcome {
    app: Vec<AppRollup>,
    platform: Vec<PlatformRollup>,
    groups: Vec<GroupRollup>,
    snapshots: Vec<Snapshot>,
    late: u64,
}

/// Runs `batches` on `workers` workers with a cut after every batch, starting from
/// `restored` (windows and the watermark) and starting at epoch `first_epoch`.
fn run(
    workers: usize,
    batches: Vec<Vec<Event>>,
    restored: Option<(WindowState, Watermark)>,
    first_epoch: u64,
) -> (Outcome, Watermark) {
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let end = Arc::new(Mutex::new(None));
    let (out, end_out) = (outcome.clone(), end.clone());
    let batches = Arc::new(batches);
    let restored = Arc::new(restored);
    timely::execute(timely::Config::process(workers), move |worker| {
        let options = WindowOptions {
            flush_interval: Arc::new(AtomicU64::new(u64::MAX)),
            shutting_down: Arc::new(AtomicBool::new(false)),
            open_windows: Arc::new(AtomicI64::new(0)),
            windows: vec![60, 300],
            checkpoints: true,
            first_epoch,
            placement: graph::Placement::single(workers),
        };
        let out = out.clone();
        let (mut input, mut app_in, mut platform_in, mut group_in, mut directory_in, mut cuts_in) =
            worker.dataflow::<Time, _, _>(|scope| {
                let (input, records) = scope.new_unordered_input();
                let (app_in, app_windows) = scope.new_unordered_input();
                let (platform_in, platform_windows) = scope.new_unordered_input();
                let (group_in, group_windows) = scope.new_unordered_input();
                let (directory_in, directory) = scope.new_unordered_input();
                let (cuts_in, cuts) = scope.new_unordered_input();
                let state = StateInputs {
                    app_windows,
                    platform_windows,
                    group_windows,
                    directory,
                    cuts,
                    listings: timely::dataflow::operators::generic::operator::empty(scope),
                };
                let streams = graph::build_with_state(
                    records,
                    LiveRules::new(AppEventRules::default()),
                    options,
                    state,
                );
                let o = out.clone();
                streams
                    .app_rollups
                    .inspect(move |row| o.lock().expect("lock").app.push(row.clone()));
                let o = out.clone();
                streams
                    .platform_rollups
                    .inspect(move |row| o.lock().expect("lock").platform.push(row.clone()));
                let o = out.clone();
                streams
                    .group_rollups
                    .inspect(move |row| o.lock().expect("lock").groups.push(row.clone()));
                let o = out.clone();
                streams
                    .snapshots
                    .inspect(move |s| o.lock().expect("lock").snapshots.push(s.clone()));
                (
                    Feed::new(input),
                    Feed::new(app_in),
                    Feed::new(platform_in),
                    Feed::new(group_in),
                    Feed::new(directory_in),
                    Feed::new(cuts_in),
                )
            });
        let start = Time::at(0, first_epoch);
        let mut watermark = Watermark::new(Duration::from_secs(60));
        if worker.index() == 0
            && let Some((windows, saved)) = restored.as_ref()
        {
            watermark = saved.clone();
            app_in.send(start, windows.app.clone());
            platform_in.send(start, windows.platform.clone());
            group_in.send(start, windows.group.clone());
            // The directory in the checkpoint's own epoch, as the pipeline sends it.
            directory_in.send(Time::at(0, first_epoch - 1), windows.directory.clone());
        }
        app_in.close();
        platform_in.close();
        group_in.close();
        directory_in.close();
        input.advance(start);
        cuts_in.advance(start);
        if worker.index() == 0 {
            let mut late = LateCounts::default();
            let mut epoch = first_epoch;
            for batch in batches.iter() {
                let mut stamped = Vec::new();
                let time = stamp_batch(&mut watermark, batch.clone(), 1, &mut stamped, &mut late);
                let at = Time::at(time.max(input.time().watermark), epoch);
                input.send(at, stamped);
                let now = Time::at(watermark.epoch().max(at.watermark), epoch);
                // The end of the epoch: a cut with the watermark reached.
                cuts_in.send(
                    now,
                    vec![Cut {
                        epoch,
                        watermark: now.watermark,
                    }],
                );
                epoch += 1;
                input.advance(Time::at(now.watermark, epoch));
                cuts_in.advance(Time::at(now.watermark, epoch));
                worker.step();
            }
            out.lock().expect("lock").late = late.total();
            *end_out.lock().expect("lock") = Some(watermark);
        }
        input.close();
        cuts_in.close();
    })
    .expect("timely runs");
    let outcome = std::mem::take(&mut *outcome.lock().expect("lock"));
    let watermark = end
        .lock()
        .expect("lock")
        .take()
        .unwrap_or_else(|| Watermark::new(Duration::from_secs(60)));
    (outcome, watermark)
}

/// An input fed at times of our choosing: a handle and the capability to send under.
struct Feed<D: 'static> {
    handle: UnorderedHandle<Time, CapacityContainerBuilder<Vec<D>>>,
    capability: Option<ActivateCapability<Time>>,
}

impl<D: Clone + 'static> Feed<D> {
    fn new(
        (handle, capability): (
            UnorderedHandle<Time, CapacityContainerBuilder<Vec<D>>>,
            ActivateCapability<Time>,
        ),
    ) -> Self {
        Feed {
            handle,
            capability: Some(capability),
        }
    }

    fn time(&self) -> Time {
        *self.capability.as_ref().expect("open").time()
    }

    fn advance(&mut self, time: Time) {
        if let Some(capability) = self.capability.as_mut() {
            capability.downgrade(&time);
        }
    }

    fn send(&mut self, time: Time, mut data: Vec<D>) {
        self.advance(time);
        let capability = self.capability.as_ref().expect("open");
        self.handle
            .activate()
            .session(capability)
            .give_container(&mut data);
    }

    fn close(&mut self) {
        self.capability = None;
    }
}

/// The tables rows make when upserted in order: the last row of every key and window.
fn table(app: &[AppRollup], platform: &[PlatformRollup]) -> (Vec<String>, Vec<String>) {
    let mut apps = BTreeMap::new();
    for row in app {
        let mut row = row.clone();
        row.is_final = false;
        apps.insert(
            (row.app_id.to_string(), row.minute, row.window),
            format!("{row:?}"),
        );
    }
    let mut series = BTreeMap::new();
    for row in platform {
        let mut row = row.clone();
        row.is_final = false;
        series.insert(
            (
                row.origin.to_string(),
                row.instance.to_string(),
                row.name.to_string(),
                row.minute,
                row.window,
            ),
            format!("{row:?}"),
        );
    }
    (apps.into_values().collect(), series.into_values().collect())
}

/// The space and org tables rows make: the last row of every group and minute.
fn group_table(rows: &[GroupRollup]) -> Vec<String> {
    let mut table = BTreeMap::new();
    for row in rows {
        table.insert(
            (row.kind, row.group_id.to_string(), row.minute),
            format!("{row:?}"),
        );
    }
    table.into_values().collect()
}

/// The snapshot of `epoch`, every operator's part together.
fn snapshot_of(snapshots: &[Snapshot], epoch: u64) -> WindowState {
    let mut windows = WindowState::default();
    for part in snapshots.iter().filter(|s| s.epoch == epoch) {
        windows.extend(part.windows.clone());
    }
    windows
}

#[test]
fn a_run_continued_from_a_cut_emits_what_an_uninterrupted_run_emits() {
    let batches = traffic();
    let (whole, _) = run(2, batches.clone(), None, 7);
    let expected = table(&whole.app, &whole.platform);
    assert!(whole.late > 0, "the traffic has late records");
    assert!(
        expected.0.len() > 20 && expected.1.len() > 10,
        "enough rows to compare"
    );
    for workers in [1, 2, 4] {
        for split in [1, 17, 33, batches.len() - 1] {
            let (first, watermark) = run(workers, batches[..split].to_vec(), None, 7);
            // Epoch 7 + split - 1 was the first run's last cut.
            let last = 7 + split as u64 - 1;
            let saved = snapshot_of(&first.snapshots, last);
            let (second, _) = run(
                workers,
                batches[split..].to_vec(),
                Some((saved, watermark)),
                last + 1,
            );
            let mut app = first.app.clone();
            app.extend(second.app);
            let mut platform = first.platform.clone();
            platform.extend(second.platform);
            assert_eq!(
                table(&app, &platform),
                expected,
                "{workers} workers, split after batch {split}"
            );
            let mut groups = first.groups.clone();
            groups.extend(second.groups);
            assert_eq!(
                group_table(&groups),
                group_table(&whole.groups),
                "space and org rows, {workers} workers, split after batch {split}"
            );
            assert_eq!(first.late + second.late, whole.late, "late records");
        }
    }
}

#[test]
fn every_snapshot_holds_every_open_window_once_and_rows_follow_snapshots() {
    let (outcome, _) = run(2, traffic(), None, 1);
    let epochs: std::collections::BTreeSet<u64> =
        outcome.snapshots.iter().map(|s| s.epoch).collect();
    assert!(epochs.len() > 10);
    for epoch in epochs {
        let windows = snapshot_of(&outcome.snapshots, epoch);
        let mut keys: Vec<_> = windows
            .app
            .iter()
            .map(|w: &OpenWindow<Str, _>| (w.width, w.start, w.key.to_string()))
            .collect();
        let n = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), n, "a window is in one part only, epoch {epoch}");
    }
}

/// A log line of `app` at `seconds` of event time.
fn log_at(app: &str, seconds: i64) -> Event {
    let at = seconds * 1_000_000_000;
    Event {
        timestamp: at,
        header: Header {
            origin: Str::from("rep"),
            ..Header::default()
        },
        payload: Payload::Log(LogMessage {
            message: Bytes::from("GET / 200"),
            message_type: MessageType::Out,
            timestamp: at,
            app_id: Str::from(app),
            source_type: Str::from("APP/PROC/WEB"),
            source_instance: Str::from("0"),
            names: None,
        }),
    }
}

/// Two ingest points of a cluster (SPEC §12), driven from one worker so that the order is
/// exactly the one that matters: point A has ended epoch 1 and sends, in epoch 2, a line of
/// app X's minute [60 s, 120 s) at a watermark before it, then reads far ahead; point B, still
/// in epoch 1, reads far enough that the frontier passes that minute. The line waits for
/// epoch 1's snapshot; its window must wait for it too, or the minute is emitted without it
/// and then again from that line alone.
#[test]
fn a_window_stays_open_while_a_sample_of_it_waits_for_its_epoch() {
    let rows = Arc::new(Mutex::new(Vec::new()));
    let out = rows.clone();
    timely::execute(timely::Config::thread(), move |worker| {
        let options = WindowOptions {
            flush_interval: Arc::new(AtomicU64::new(u64::MAX)),
            shutting_down: Arc::new(AtomicBool::new(false)),
            open_windows: Arc::new(AtomicI64::new(0)),
            windows: vec![60],
            checkpoints: true,
            first_epoch: 1,
            // Two one-worker processes: the cluster's exchange of samples by key.
            placement: graph::Placement {
                process: 0,
                processes: 2,
                workers: 1,
            },
        };
        let out = out.clone();
        let (mut a, mut b, mut a_cuts, mut b_cuts) = worker.dataflow::<Time, _, _>(|scope| {
            use timely::dataflow::operators::Concatenate;
            let (a, a_records) = scope.new_unordered_input();
            let (b, b_records) = scope.new_unordered_input();
            let (a_cuts, a_cut_stream) = scope.new_unordered_input();
            let (b_cuts, b_cut_stream) = scope.new_unordered_input();
            use timely::dataflow::operators::generic::operator::empty;
            let state = StateInputs {
                app_windows: empty(scope),
                platform_windows: empty(scope),
                group_windows: empty(scope),
                directory: empty(scope),
                cuts: scope.concatenate([a_cut_stream, b_cut_stream]),
                listings: empty(scope),
            };
            let streams = graph::build_with_state(
                scope.concatenate([a_records, b_records]),
                LiveRules::new(AppEventRules::default()),
                options,
                state,
            );
            streams
                .app_rollups
                .inspect(move |row| out.lock().expect("lock").push(row.clone()));
            (
                Feed::new(a),
                Feed::new(b),
                Feed::new(a_cuts),
                Feed::new(b_cuts),
            )
        });
        let settle = |worker: &mut timely::worker::Worker| {
            for _ in 0..50 {
                worker.step();
            }
        };
        let lateness = Duration::from_secs(60);
        let (mut a_mark, mut b_mark) = (Watermark::new(lateness), Watermark::new(lateness));
        let mut late = LateCounts::default();
        let mut send = |feed: &mut Feed<_>, mark: &mut Watermark, epoch: u64, batch| {
            let mut stamped = Vec::new();
            let time = stamp_batch(mark, batch, 1, &mut stamped, &mut late);
            feed.send(Time::at(time.max(feed.time().watermark), epoch), stamped);
            feed.advance(Time::at(mark.epoch().max(feed.time().watermark), epoch));
        };
        let x = "00000000-0000-0000-0000-00000000000a";
        let other = "00000000-0000-0000-0000-00000000000b";
        // B, epoch 1: X's first line of the minute.
        send(&mut b, &mut b_mark, 1, vec![log_at(x, 90)]);
        // A ends epoch 1 before reading anything, then in epoch 2 sends X's second line and
        // reads on to 1 000 s.
        a_cuts.send(
            Time::at(0, 1),
            vec![Cut {
                epoch: 1,
                watermark: 0,
            }],
        );
        a_cuts.advance(Time::at(0, 2));
        a.advance(Time::at(0, 2));
        send(&mut a, &mut a_mark, 2, vec![log_at(x, 100)]);
        send(&mut a, &mut a_mark, 2, vec![log_at(other, 1_000)]);
        a_cuts.advance(Time::at(a.time().watermark, 2));
        // B reads on to 500 s: the frontier is past X's minute.
        send(&mut b, &mut b_mark, 1, vec![log_at(other, 500)]);
        settle(worker);
        // B ends epoch 1; both end epoch 2 as their inputs end, as Ingest does.
        let reached = b.time().watermark;
        b_cuts.send(
            Time::at(reached, 1),
            vec![Cut {
                epoch: 1,
                watermark: reached,
            }],
        );
        for (cuts, reached) in [(&mut a_cuts, a.time().watermark), (&mut b_cuts, reached)] {
            cuts.send(
                Time::at(reached, 2),
                vec![Cut {
                    epoch: 2,
                    watermark: reached,
                }],
            );
        }
        for feed in [&mut a, &mut b] {
            feed.close();
        }
        a_cuts.close();
        b_cuts.close();
        settle(worker);
        assert_eq!(late.total(), 0, "nothing in this scenario is late");
    })
    .expect("timely runs");
    let rows = rows.lock().expect("lock");
    let x_minute: Vec<u64> = rows
        .iter()
        .filter(|row| &*row.app_id == "00000000-0000-0000-0000-00000000000a" && row.minute == 60)
        .map(|row| row.log_lines)
        .collect();
    assert_eq!(
        x_minute.last(),
        Some(&2),
        "X's minute as last written: both lines (rows written: {x_minute:?})"
    );
}

/// A final minute row of `app` for the minute starting at `minute` (seconds): `requests`
/// requests, one instance at `cpu` percent.
fn final_row(app: &str, minute: i64, requests: u64, cpu: f64) -> AppRollup {
    AppRollup {
        app_id: Str::from(app),
        minute,
        window: 60,
        instances: 1,
        cpu_avg: Some(cpu),
        cpu_max: Some(cpu),
        memory_avg: Some(1024.0),
        memory_max: Some(1024),
        disk_avg: None,
        disk_max: None,
        requests,
        status_2xx: requests,
        status_3xx: 0,
        status_4xx: 0,
        status_5xx: 0,
        response_bytes: 0,
        latency_avg_ms: None,
        latency_max_ms: None,
        latency_p50_ms: None,
        latency_p95_ms: None,
        latency_p99_ms: None,
        log_lines: 2,
        log_err_lines: 1,
        app_events: 0,
        is_final: true,
        names: None,
    }
}

/// One epoch of app rows for the space and org rollups: the rows, the watermark they are sent
/// at, and the watermark the epoch's cut reached.
struct GroupEpoch {
    rows: Vec<AppRollup>,
    sent_at: u64,
    cut_at: u64,
}

/// Runs the space and org rollups alone (SPEC §11) on `workers` workers, with checkpoints:
/// the apps' places known from the start, `epochs` from `first_epoch` on, each ended by a cut,
/// starting from the `restored` group minutes. Returns the group rows and the snapshots.
fn run_groups(
    workers: usize,
    epochs: Vec<GroupEpoch>,
    restored: Vec<OpenWindow<GroupKey, GroupWindow>>,
    first_epoch: u64,
) -> (Vec<GroupRollup>, Vec<Snapshot>) {
    let outcome = Arc::new(Mutex::new((Vec::new(), Vec::new())));
    let out = outcome.clone();
    let (epochs, restored) = (Arc::new(epochs), Arc::new(restored));
    timely::execute(timely::Config::process(workers), move |worker| {
        let options = WindowOptions {
            flush_interval: Arc::new(AtomicU64::new(u64::MAX)),
            shutting_down: Arc::new(AtomicBool::new(false)),
            open_windows: Arc::new(AtomicI64::new(0)),
            windows: vec![60],
            checkpoints: true,
            first_epoch,
            placement: graph::Placement::single(workers),
        };
        let out = out.clone();
        let (mut rows_in, mut changes_in, mut restored_in, mut cuts_in) = worker
            .dataflow::<Time, _, _>(|scope| {
                use timely::dataflow::operators::vec::Broadcast;
                let (rows_in, rows) = scope.new_unordered_input();
                let (changes_in, changes) =
                    scope.new_unordered_input::<CapacityContainerBuilder<Vec<_>>>();
                let (restored_in, restored) = scope.new_unordered_input();
                let (cuts_in, cuts) =
                    scope.new_unordered_input::<CapacityContainerBuilder<Vec<Cut>>>();
                let state = GroupState {
                    options,
                    restored,
                    cuts: cuts.broadcast(),
                };
                let (groups, snapshots) = group_rollups(rows, changes.broadcast(), state);
                let o = out.clone();
                groups.inspect(move |row| o.lock().expect("lock").0.push(row.clone()));
                let o = out.clone();
                snapshots.inspect(move |s| o.lock().expect("lock").1.push(s.clone()));
                (
                    Feed::new(rows_in),
                    Feed::new(changes_in),
                    Feed::new(restored_in),
                    Feed::new(cuts_in),
                )
            });
        let start = Time::at(0, first_epoch);
        if worker.index() == 0 {
            restored_in.send(start, restored.to_vec());
            let place = |space: &str, org: &str| AppInfo {
                name: Str::from("app"),
                space_id: Str::from(space),
                space_name: Str::from(space),
                org_id: Str::from(org),
                org_name: Str::from(org),
            };
            let changes = vec![
                ((Str::from("a"), place("s1", "o1")), start, 1isize),
                ((Str::from("b"), place("s1", "o1")), start, 1),
                ((Str::from("c"), place("s2", "o1")), start, 1),
            ];
            changes_in.send(start, changes);
        }
        restored_in.close();
        changes_in.close();
        rows_in.advance(start);
        cuts_in.advance(start);
        if worker.index() == 0 {
            for (i, epoch) in epochs.iter().enumerate() {
                let at = first_epoch + i as u64;
                rows_in.send(Time::at(epoch.sent_at, at), epoch.rows.clone());
                cuts_in.send(
                    Time::at(epoch.cut_at, at),
                    vec![Cut {
                        epoch: at,
                        watermark: epoch.cut_at,
                    }],
                );
                rows_in.advance(Time::at(epoch.cut_at, at + 1));
                cuts_in.advance(Time::at(epoch.cut_at, at + 1));
                worker.step();
            }
        }
        rows_in.close();
        cuts_in.close();
    })
    .expect("timely runs");
    std::mem::take(&mut *outcome.lock().expect("lock"))
}

/// A space's minute whose app rows come in two epochs, the checkpoint between them: the
/// snapshot of the first holds the open minute, and a fresh graph restored from it writes,
/// once the minute closes, exactly the row an uninterrupted graph writes — float sums to the
/// last bit (they are kept exact), app counts, and the org's row beside it.
#[test]
fn a_group_minute_restored_from_a_snapshot_continues_exactly() {
    let epochs = || {
        vec![
            // Epoch 1: app a's and c's rows of minute [60 s, 120 s); the cut does not close it.
            GroupEpoch {
                rows: vec![final_row("a", 60, 3, 10.1), final_row("c", 60, 4, 0.3)],
                sent_at: 100,
                cut_at: 110,
            },
            // Epoch 2: app b's row of the same minute; the cut closes it.
            GroupEpoch {
                rows: vec![final_row("b", 60, 5, 20.2)],
                sent_at: 115,
                cut_at: 130,
            },
        ]
    };
    for workers in [1, 3] {
        let (whole, _) = run_groups(workers, epochs(), Vec::new(), 5);
        let space = |rows: &[GroupRollup], id: &str| -> Vec<GroupRollup> {
            rows.iter()
                .filter(|r| r.kind == GroupKind::Space && &*r.group_id == id)
                .cloned()
                .collect()
        };
        let s1 = space(&whole, "s1");
        assert_eq!(s1.len(), 1, "one row for the space's minute: {whole:?}");
        assert_eq!((s1[0].apps, s1[0].requests), (2, 8));
        assert_eq!(whole.len(), 3, "spaces s1 and s2, org o1: {whole:?}");

        let mut first_epochs = epochs();
        let second = first_epochs.split_off(1);
        let (first_rows, first_snapshots) = run_groups(workers, first_epochs, Vec::new(), 5);
        assert!(
            first_rows.is_empty(),
            "the minute is open at the first run's end: {first_rows:?}"
        );
        let saved = snapshot_of(&first_snapshots, 5).group;
        assert_eq!(saved.len(), 3, "s1, s2 and o1 open: {saved:?}");
        let (second_rows, _) = run_groups(workers, second, saved, 6);
        let sorted = |mut rows: Vec<GroupRollup>| {
            rows.sort_by(|a, b| (a.kind, &a.group_id).cmp(&(b.kind, &b.group_id)));
            rows
        };
        assert_eq!(sorted(second_rows), sorted(whole), "{workers} workers");
    }
}
