//! The whole graph on timely workers: windows close on the frontier, late records stay out of
//! rollups but reach raw streams, and any number of workers gives the same rows.

use std::sync::atomic::{AtomicBool, AtomicI64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use sluice_model::event::{
    ContainerMetric, CounterEvent, Header, HttpStartStop, LogMessage, MessageType, Method,
    PeerType, ValueMetric,
};
use sluice_model::{Event, Payload, Str};
use sluice_operators::app_events::AppEventRules;
use sluice_operators::graph;
use sluice_operators::records::{AppEvent, AppRollup, PlatformRollup};
use sluice_operators::rollup::WindowOptions;
use sluice_operators::watermark::{LateCounts, Watermark, stamp_batch};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::InputHandle;
use timely::dataflow::operators::{Input, Inspect};

const MIN: i64 = 60_000_000_000;
const APP_A: &str = "84c69290-764b-4018-94b0-62ae88c88ad1";
const APP_B: &str = "221c4e00-3f99-41ee-baf2-7f802dc5fd3d";

fn header(origin: &str) -> Header {
    Header {
        origin: Str::from(origin),
        job: Str::from("diego_cell"),
        index: Str::from("0"),
        ..Header::default()
    }
}

fn log(app: &str, at: i64, source_type: &str, message: &str, err: bool) -> Event {
    Event {
        timestamp: at,
        header: header("rep"),
        payload: Payload::Log(LogMessage {
            message: Bytes::from(message.to_owned()),
            message_type: if err {
                MessageType::Err
            } else {
                MessageType::Out
            },
            timestamp: at,
            app_id: Str::from(app),
            source_type: Str::from(source_type),
            source_instance: Str::from("0"),
        }),
    }
}

fn container(app: &str, at: i64, instance: i32, cpu: f64, memory: u64) -> Event {
    Event {
        timestamp: at,
        header: header("rep"),
        payload: Payload::Container(ContainerMetric {
            application_id: Str::from(app),
            instance_index: instance,
            cpu_percentage: cpu,
            memory_bytes: memory,
            disk_bytes: 1000,
            memory_bytes_quota: None,
            disk_bytes_quota: None,
        }),
    }
}

fn http(app: &str, stop: i64, latency_ms: i64, status: i32) -> Event {
    Event {
        timestamp: stop,
        header: header("gorouter"),
        payload: Payload::Http(HttpStartStop {
            start_timestamp: stop - latency_ms * 1_000_000,
            stop_timestamp: stop,
            request_id: uuid::Uuid::from_u128(stop as u128),
            peer_type: PeerType::Client,
            method: Method::GET,
            uri: Str::from("/"),
            remote_address: Str::new(),
            user_agent: Str::new(),
            status_code: status,
            content_length: 100,
            application_id: Some(uuid::Uuid::parse_str(app).expect("uuid")),
            instance_index: Some(0),
            instance_id: Str::new(),
            forwarded: Vec::new(),
        }),
    }
}

fn gauge(at: i64, value: f64) -> Event {
    Event {
        timestamp: at,
        header: header("gorouter"),
        payload: Payload::Value(ValueMetric {
            name: Str::from("latency"),
            value,
            unit: Str::from("ms"),
        }),
    }
}

fn counter(at: i64, delta: u64, total: u64) -> Event {
    Event {
        timestamp: at,
        header: header("gorouter"),
        payload: Payload::Counter(CounterEvent {
            name: Str::from("requests"),
            delta,
            total: Some(total),
        }),
    }
}

#[derive(Default)]
struct Output {
    app_rollups: Vec<AppRollup>,
    platform_rollups: Vec<PlatformRollup>,
    app_events: Vec<AppEvent>,
    logs: usize,
    http: usize,
}

/// Feeds `batches` through the graph on `workers` workers, as the pipeline does: worker 0
/// stamps each batch and sends it at the watermark before it.
fn run(workers: usize, batches: Vec<Vec<Event>>) -> (Output, LateCounts) {
    let output = Arc::new(Mutex::new(Output::default()));
    let late = Arc::new(Mutex::new(LateCounts::default()));
    let (out, late_out) = (output.clone(), late.clone());
    let batches = Arc::new(batches);
    timely::execute(timely::Config::process(workers), move |worker| {
        let mut input = InputHandle::<u64, CapacityContainerBuilder<Vec<_>>>::new();
        let options = WindowOptions {
            flush_interval: Duration::from_secs(3600),
            shutting_down: Arc::new(AtomicBool::new(false)),
            open_windows: Arc::new(AtomicI64::new(0)),
        };
        let out = out.clone();
        worker.dataflow::<u64, _, _>(|scope| {
            let streams = graph::build(
                scope.input_from(&mut input),
                AppEventRules::default(),
                options,
            );
            let o = out.clone();
            streams
                .app_rollups
                .inspect(move |row| o.lock().expect("lock").app_rollups.push(row.clone()));
            let o = out.clone();
            streams
                .platform_rollups
                .inspect(move |row| o.lock().expect("lock").platform_rollups.push(row.clone()));
            let o = out.clone();
            streams
                .app_events
                .inspect(move |row| o.lock().expect("lock").app_events.push(row.clone()));
            let o = out.clone();
            streams
                .logs
                .inspect(move |_| o.lock().expect("lock").logs += 1);
            let o = out.clone();
            streams
                .http
                .inspect(move |_| o.lock().expect("lock").http += 1);
        });
        if worker.index() == 0 {
            let mut watermark = Watermark::new(Duration::from_secs(60));
            let mut counts = LateCounts::default();
            for batch in batches.iter() {
                let mut stamped = Vec::new();
                let time = stamp_batch(&mut watermark, batch.clone(), 1, &mut stamped, &mut counts);
                if time > *input.time() {
                    input.advance_to(time);
                }
                input.send_batch(&mut stamped);
                input.advance_to(watermark.epoch().max(*input.time()));
                worker.step();
            }
            *late_out.lock().expect("lock") = counts;
        }
    })
    .expect("timely runs");
    let output = std::mem::take(&mut *output.lock().expect("lock"));
    let late = *late.lock().expect("lock");
    (output, late)
}

fn scenario() -> Vec<Vec<Event>> {
    let m10 = 10 * MIN;
    vec![
        vec![
            container(APP_A, m10 + 1_000, 0, 10.0, 100),
            container(APP_A, m10 + 2_000, 1, 30.0, 300),
            http(APP_A, m10 + 3_000, 10, 200),
            http(APP_A, m10 + 4_000, 30, 503),
            log(APP_A, m10 + 5_000, "APP/PROC/WEB", "hello", false),
            log(APP_A, m10 + 6_000, "APP/PROC/WEB", "oops", true),
            log(
                APP_A,
                m10 + 7_000,
                "API/0",
                r#"Updated app with guid x ({"state"=>"STARTED"})"#,
                false,
            ),
            log(APP_B, m10 + 8_000, "APP/PROC/WEB", "b", false),
            gauge(m10 + 1_000, 5.0),
            gauge(m10 + 9_000, 7.0),
            gauge(m10 + 5_000, 9.0),
            counter(m10 + 1_000, 3, 103),
            counter(m10 + 2_000, 4, 107),
        ],
        // Minute 11 for app B; the watermark reaches 10:30.
        vec![log(
            APP_B,
            11 * MIN + 30_000_000_000,
            "APP/PROC/WEB",
            "b2",
            false,
        )],
        // 12:05 moves the watermark to 11:05, closing minute 10.
        vec![http(APP_B, 12 * MIN + 5_000_000_000, 1, 201)],
        // A record for minute 10 now is late: raw streams only.
        vec![
            http(APP_A, m10 + 50_000_000_000, 99, 200),
            log(APP_A, m10 + 50_000_000_000, "APP/PROC/WEB", "late", false),
        ],
    ]
}

fn sorted(mut rows: Vec<AppRollup>) -> Vec<AppRollup> {
    rows.retain(|r| r.is_final);
    rows.sort_by(|a, b| (a.minute, &a.app_id).cmp(&(b.minute, &b.app_id)));
    rows
}

#[test]
fn rollups_close_on_the_watermark_and_skip_late_records() {
    let (output, late) = run(1, scenario());
    let rows = sorted(output.app_rollups);
    assert_eq!(rows.len(), 4, "{rows:#?}");
    let find = |app: &str, minute: i64| {
        rows.iter()
            .find(|r| &*r.app_id == app && r.minute == minute)
            .unwrap_or_else(|| panic!("no final row for {app} at {minute}: {rows:#?}"))
    };
    let a10 = find(APP_A, 600);
    assert_eq!(a10.instances, 2);
    assert_eq!(a10.cpu_avg, Some(20.0));
    assert_eq!(a10.cpu_max, Some(30.0));
    assert_eq!(a10.memory_avg, Some(200.0));
    assert_eq!(a10.memory_max, Some(300));
    assert_eq!(a10.requests, 2, "the late request is not counted");
    assert_eq!((a10.status_2xx, a10.status_5xx), (1, 1));
    assert_eq!(a10.response_bytes, 200);
    assert_eq!(a10.latency_avg_ms, Some(20.0));
    assert_eq!(a10.latency_max_ms, Some(30.0));
    assert_eq!(a10.latency_p50_ms, Some(10.0));
    assert_eq!(a10.latency_p99_ms, Some(30.0));
    assert_eq!(
        (a10.log_lines, a10.log_err_lines, a10.app_events),
        (3, 1, 1)
    );
    let b10 = find(APP_B, 600);
    assert_eq!(b10.log_lines, 1);
    assert_eq!(b10.cpu_avg, None, "no container metrics: NULL columns");
    assert_eq!(b10.latency_p50_ms, None);
    assert_eq!(find(APP_B, 660).log_lines, 1);
    assert_eq!(find(APP_B, 720).requests, 1);

    assert_eq!(late.total(), 2);
    assert_eq!(output.logs, 6, "late logs still reach the raw stream");
    assert_eq!(output.http, 4);
    assert_eq!(output.app_events.len(), 1);
    assert_eq!(&*output.app_events[0].event, "start");

    let mut platform = output.platform_rollups;
    platform.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(platform.len(), 2);
    let gauge = &platform[0];
    assert_eq!(
        (&*gauge.name, gauge.kind.as_str(), gauge.samples),
        ("latency", "gauge", 3)
    );
    assert_eq!(
        (gauge.value_min, gauge.value_max, gauge.value_last),
        (Some(5.0), Some(9.0), Some(7.0))
    );
    assert_eq!(gauge.value_avg, Some(7.0));
    assert_eq!((gauge.delta_sum, gauge.total_last), (None, None));
    let counter = &platform[1];
    assert_eq!(
        (&*counter.name, counter.kind.as_str(), counter.samples),
        ("requests", "counter", 2)
    );
    assert_eq!(
        (counter.delta_sum, counter.total_last),
        (Some(7), Some(107))
    );
    assert_eq!((&*counter.unit, counter.value_avg), ("", None));
}

#[test]
fn any_number_of_workers_gives_the_same_rows() {
    let (one, _) = run(1, scenario());
    let (three, _) = run(3, scenario());
    assert_eq!(sorted(one.app_rollups), sorted(three.app_rollups));
    assert_eq!(one.platform_rollups.len(), three.platform_rollups.len());
}
