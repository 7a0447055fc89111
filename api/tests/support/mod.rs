//! A store filled the way `sluice run` fills it: a deterministic simulator capture through the
//! operators' graph (watermark, routing, rollups) into the real sinks; and the API over it.

#![allow(dead_code, unreachable_pub)]

use sluice_test_support::mariadb;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::collections::BTreeMap;

use mariadb::Cell;
use serde_json::Value;
use sluice_api::auth::Auth;
use sluice_api::live::LiveFeed;
use sluice_api::store::Stores;
use sluice_api::{ApiConfig, ApiServer, ApiState};
use sluice_model::Event;
use sluice_model::records::Records;
use sluice_model::records::StreamName;
use sluice_operators::app_events::{AppEventRules, LiveRules};
use sluice_operators::graph;
use sluice_operators::rollup::WindowOptions;
use sluice_operators::watermark::{LateCounts, Watermark, stamp_batch};
use sluice_simulator::{Clock, Generator, SimulatorConfig};
use sluice_sinks::SinkContext;
use sluice_sinks::sqlite::{self, SqliteSinkConfig};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::InputHandle;
use timely::dataflow::operators::{Input, Inspect};
use tokio_util::sync::CancellationToken;

/// The simulator's first event time (its default `start`), epoch seconds.
pub const START: i64 = 1_710_234_000;
/// The end of the range the tests query: two hours after the start, past the capture's end.
pub const TO: i64 = START + 7200;
/// `from` and `to` of the tests' queries.
pub const RANGE: &str = "from=1710234000&to=1710241200";

/// `count` envelopes of `apps` simulated apps on the simulated clock, a few of them late.
pub fn capture(seed: u64, apps: u32, count: usize) -> Vec<Event> {
    let config = SimulatorConfig {
        apps,
        seed,
        rate: 0,
        clock: Clock::Simulated,
        density: 10,
        jitter: Duration::from_secs(20),
        late_fraction: 0.01,
        ..SimulatorConfig::default()
    };
    let mut generator = Generator::new(&config);
    let mut events = Vec::with_capacity(count);
    generator.fill(count, &mut events);
    events
}

#[derive(Default)]
struct Collected {
    logs: Vec<Event>,
    container_metrics: Vec<Event>,
    http: Vec<Event>,
    errors: Vec<Event>,
    app_events: Vec<sluice_model::records::AppEvent>,
    app_rollups: Vec<sluice_model::records::AppRollup>,
    platform_rollups: Vec<sluice_model::records::PlatformRollup>,
    apps: Vec<sluice_model::records::AppRow>,
    group_rollups: Vec<sluice_model::records::GroupRollup>,
}

/// The named streams the graph makes of `events` (fed in batches of 500 as the pipeline's
/// ingest does, allowed lateness 60 s), as the batches a sink receives; every window is
/// closed (final) when the input ends.
pub fn run_graph(events: Vec<Event>) -> Vec<Records> {
    let collected = Arc::new(Mutex::new(Collected::default()));
    let out = collected.clone();
    let batches: Arc<Vec<Vec<Event>>> = Arc::new(events.chunks(500).map(<[_]>::to_vec).collect());
    timely::execute(timely::Config::process(1), move |worker| {
        let mut input = InputHandle::<u64, CapacityContainerBuilder<Vec<_>>>::new();
        let options = WindowOptions {
            flush_interval: Arc::new(AtomicU64::new(3_600_000_000_000)),
            shutting_down: Arc::new(AtomicBool::new(false)),
            open_windows: Arc::new(AtomicI64::new(0)),
            windows: vec![sluice_model::records::MINUTE],
            checkpoints: false,
            first_epoch: 0,
            placement: sluice_operators::graph::Placement::single(1),
        };
        let out = out.clone();
        worker.dataflow::<u64, _, _>(|scope| {
            let streams = graph::build(
                scope.input_from(&mut input),
                LiveRules::new(AppEventRules::default()),
                options,
            );
            macro_rules! collect {
                ($stream:ident) => {{
                    let o = out.clone();
                    streams
                        .$stream
                        .inspect(move |row| o.lock().expect("lock").$stream.push(row.clone()));
                }};
            }
            collect!(logs);
            collect!(container_metrics);
            collect!(http);
            collect!(errors);
            collect!(app_events);
            collect!(app_rollups);
            collect!(platform_rollups);
            collect!(apps);
            collect!(group_rollups);
        });
        let mut watermark = Watermark::new(Duration::from_secs(60));
        let mut late = LateCounts::default();
        for batch in batches.iter() {
            let mut stamped = Vec::new();
            let time = stamp_batch(&mut watermark, batch.clone(), 1, &mut stamped, &mut late);
            if time > *input.time() {
                input.advance_to(time);
            }
            input.send_batch(&mut stamped);
            input.advance_to(watermark.epoch().max(*input.time()));
            worker.step();
        }
    })
    .expect("timely runs");
    let c = std::mem::take(&mut *collected.lock().expect("lock"));
    let mut records = Vec::new();
    fn chunks<T: Clone>(rows: &[T], wrap: fn(Vec<T>) -> Records, out: &mut Vec<Records>) {
        out.extend(rows.chunks(1000).map(|c| wrap(c.to_vec())));
    }
    chunks(&c.logs, Records::Logs, &mut records);
    chunks(
        &c.container_metrics,
        Records::ContainerMetrics,
        &mut records,
    );
    chunks(&c.http, Records::Http, &mut records);
    chunks(&c.errors, Records::Errors, &mut records);
    chunks(&c.app_events, Records::AppEvents, &mut records);
    // In emission order: a provisional row before the final one that replaces it.
    chunks(&c.app_rollups, Records::AppRollups, &mut records);
    chunks(&c.platform_rollups, Records::PlatformRollups, &mut records);
    chunks(&c.apps, Records::Apps, &mut records);
    chunks(&c.group_rollups, Records::GroupRollups, &mut records);
    records
}

/// Feeds `records` to a sink from a thread, as the dataflow's workers do, then closes it.
pub fn feed(records: Vec<Records>) -> (SinkContext, std::thread::JoinHandle<()>) {
    let (ctx, sender) = SinkContext::new("test", 4, CancellationToken::new());
    let feeder = std::thread::spawn(move || {
        for batch in records {
            assert!(sender.send_blocking(batch), "the sink stopped early");
        }
    });
    (ctx, feeder)
}

/// Writes `records` with the real `sqlite` sink into the file at `path`.
pub async fn fill_sqlite(path: &Path, records: Vec<Records>) -> SqliteSinkConfig {
    let config = SqliteSinkConfig::new(path, StreamName::all());
    let (ctx, feeder) = feed(records);
    sqlite::run(config.clone(), ctx)
        .await
        .expect("the sqlite sink wrote everything");
    feeder.join().expect("feeder thread");
    config
}

/// The API on a free loopback port with `auth = "none"`.
pub async fn start_api(stores: Stores) -> (ApiServer, String) {
    start_api_with(stores, &ApiConfig::open("127.0.0.1:0")).await
}

/// The API of `config` (its limits, its listen address) with `auth = "none"`.
pub async fn start_api_with(stores: Stores, config: &ApiConfig) -> (ApiServer, String) {
    let state = ApiState {
        auth: Arc::new(Auth::none()),
        stores: Arc::new(stores),
        live: Arc::new(LiveFeed::default()),
        limits: Default::default(),
    };
    let server = ApiServer::start(config, state)
        .await
        .expect("the API starts");
    let base = format!("http://{}", server.address);
    (server, base)
}

/// GET `base` + `path`: the status and the JSON body.
pub async fn get(base: &str, path: &str) -> (u16, Value) {
    let client = sluice_common::tls::http_client(false).expect("an HTTP client");
    let response = client
        .get(format!("{base}{path}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = response.status().as_u16();
    let body = response
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {path} answered {status} without JSON: {e}"));
    (status, body)
}

/// GET that must answer 200.
pub async fn get_ok(base: &str, path: &str) -> Value {
    let (status, body) = get(base, path).await;
    assert_eq!(status, 200, "GET {path} answered {status}: {body}");
    body
}

/// A cell of a table dump as the API writes it in JSON.
pub fn json_of(cell: &mariadb::Cell) -> Value {
    match cell {
        mariadb::Cell::Null => Value::Null,
        mariadb::Cell::Int(i) => Value::from(*i),
        mariadb::Cell::Real(f) => Value::from(*f),
        mariadb::Cell::Text(t) => Value::from(t.clone()),
    }
}

/// Percent-encodes a query value.
pub fn encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// A rollup column as the API names it in a point: `minute` is the point's `time`.
pub fn point_field(column: &str) -> &str {
    if column == "minute" { "time" } else { column }
}

pub fn text(cell: &Cell) -> &str {
    match cell {
        Cell::Text(t) => t,
        other => panic!("not text: {other:?}"),
    }
}

pub fn int(cell: &Cell) -> i64 {
    match cell {
        Cell::Int(i) => *i,
        other => panic!("not an integer: {other:?}"),
    }
}

pub fn real(cell: &Cell) -> Option<f64> {
    match cell {
        Cell::Real(f) => Some(*f),
        Cell::Int(i) => Some(*i as f64),
        Cell::Null => None,
        other => panic!("not a number: {other:?}"),
    }
}

/// Checks `/apps`, `/metrics` (1m and 5m) and `/events` of the API at `base` against the
/// dumps of `app_metric_rollup` and `app_event` (rows ordered by primary key).
pub async fn check_against_tables(base: &str, rollups: &[Vec<Cell>], app_events: &[Vec<Cell>]) {
    // Apps: every app_id with its latest minute, sorted (names, from the directory, are
    // checked against the `app` table by `apps_carry_the_directorys_names_with_no_sign_in`).
    let mut latest: BTreeMap<String, i64> = BTreeMap::new();
    for row in rollups {
        let minute = latest.entry(text(&row[0]).to_owned()).or_default();
        *minute = (*minute).max(int(&row[1]));
    }
    assert!(
        latest.len() >= 3,
        "the capture has several apps: {latest:?}"
    );
    let apps = get_ok(base, "/api/v1/apps").await;
    let expected: Vec<Value> = latest
        .iter()
        .map(|(id, minute)| serde_json::json!({"id": id, "last_activity": minute}))
        .collect();
    let listed: Vec<Value> = apps["apps"]
        .as_array()
        .expect("apps")
        .iter()
        .map(|a| serde_json::json!({"id": a["id"], "last_activity": a["last_activity"]}))
        .collect();
    assert_eq!(listed, expected);

    let mut events_seen = 0;
    for app in latest.keys() {
        // The app's minutes in [from, to): jitter puts a few events before START.
        let rows: Vec<&Vec<Cell>> = rollups
            .iter()
            .filter(|r| text(&r[0]) == app && (START..TO).contains(&int(&r[1])))
            .collect();

        // step=1m: the rows themselves, every column, ascending.
        let body = get_ok(base, &format!("/api/v1/apps/{app}/metrics?{RANGE}")).await;
        assert_eq!(body["app_id"], app.as_str());
        assert_eq!(
            (body["from"].as_i64(), body["to"].as_i64()),
            (Some(START), Some(TO))
        );
        assert_eq!(body["step"], 60);
        let points = body["points"].as_array().expect("points");
        assert_eq!(
            points.len(),
            rows.len(),
            "one point per stored minute of {app}"
        );
        for (point, row) in points.iter().zip(&rows) {
            // Every column after `app_id`, as the sink's own table lists them.
            let columns = &sluice_sinks::rows::table(StreamName::AppRollups).columns;
            for (column, cell) in columns[1..].iter().zip(&row[1..]) {
                let field = point_field(column);
                assert_eq!(
                    point[field],
                    json_of(cell),
                    "{field} of {app} at {}",
                    point["time"]
                );
            }
            // The capture is from 2024: every window closed long ago.
            assert_eq!(point["final"], true);
        }

        // step=5m: minutes merged into 5-minute buckets, checked against sums of the rows.
        let body = get_ok(base, &format!("/api/v1/apps/{app}/metrics?{RANGE}&step=5m")).await;
        assert_eq!(body["step"], 300);
        let mut buckets: BTreeMap<i64, Vec<&Vec<Cell>>> = BTreeMap::new();
        for row in &rows {
            let minute = int(&row[1]);
            buckets.entry(minute - minute % 300).or_default().push(row);
        }
        let points = body["points"].as_array().expect("points");
        assert_eq!(points.len(), buckets.len());
        for (point, (time, minutes)) in points.iter().zip(&buckets) {
            assert_eq!(point["time"], *time);
            let sum = |column: usize| minutes.iter().map(|r| int(&r[column])).sum::<i64>();
            for (field, column) in [
                ("requests", 9),
                ("status_2xx", 10),
                ("status_3xx", 11),
                ("status_4xx", 12),
                ("status_5xx", 13),
                ("response_bytes", 14),
                ("log_lines", 20),
                ("log_err_lines", 21),
                ("app_events", 22),
            ] {
                assert_eq!(point[field], sum(column), "{field} of {app} at {time}");
            }
            let max = |column: usize| {
                minutes
                    .iter()
                    .filter_map(|r| real(&r[column]))
                    .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
            };
            assert_eq!(point["cpu_max"].as_f64(), max(4), "cpu_max at {time}");
            assert_eq!(point["latency_p99_ms"].as_f64(), max(19), "p99 at {time}");
            assert_eq!(point["memory_max"].as_f64(), max(6), "memory_max at {time}");
            let (weighted, requests) = minutes
                .iter()
                .filter_map(|r| real(&r[15]).map(|avg| (avg * int(&r[9]) as f64, int(&r[9]))))
                .fold((0.0, 0), |(s, n), (v, r)| (s + v, n + r));
            match point["latency_avg_ms"].as_f64() {
                Some(avg) => assert!((avg - weighted / requests as f64).abs() < 1e-9),
                None => assert_eq!(requests, 0),
            }
        }

        // Events: the app's rows of the range, ascending by time.
        let expected: Vec<Value> = app_events
            .iter()
            .filter(|r| {
                text(&r[0]) == app
                    && (START * 1_000_000_000..TO * 1_000_000_000).contains(&int(&r[1]))
            })
            .map(|r| {
                serde_json::json!({
                    "time_ns": int(&r[1]), "event": text(&r[2]), "source_type": text(&r[3]),
                    "source_instance": text(&r[4]), "message": text(&r[5]),
                })
            })
            .collect();
        events_seen += expected.len();
        let body = get_ok(base, &format!("/api/v1/apps/{app}/events?{RANGE}")).await;
        assert_eq!(body["events"], Value::from(expected), "events of {app}");
    }
    assert!(events_seen > 0, "the capture has app events");

    // A narrower range keeps [from, to): the first and last minutes only when inside.
    let app = latest.keys().next().expect("an app");
    let from = START + 600;
    let body = get_ok(
        base,
        &format!("/api/v1/apps/{app}/metrics?from={from}&to=2024-03-12T09:20:00Z"),
    )
    .await;
    let times: Vec<i64> = body["points"]
        .as_array()
        .expect("points")
        .iter()
        .filter_map(|p| p["time"].as_i64())
        .collect();
    let expected: Vec<i64> = rollups
        .iter()
        .filter(|r| text(&r[0]) == app)
        .map(|r| int(&r[1]))
        .filter(|m| (from..START + 1200).contains(m))
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(times, expected);
}
