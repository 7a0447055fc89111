//! A store filled the way `sluice run` fills it: a deterministic simulator capture through the
//! operators' graph (watermark, routing, rollups) into the real sinks; and the API over it.

#![allow(dead_code, unreachable_pub)]

#[path = "../../../connectors/tests/common/mariadb.rs"]
pub mod mariadb;
#[path = "../../../connectors/tests/common/search.rs"]
pub mod search;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use sluice_api::auth::Auth;
use sluice_api::live::LiveFeed;
use sluice_api::store::Stores;
use sluice_api::{ApiConfig, ApiServer, ApiState};
use sluice_connectors::sink::sqlite::{self, SqliteSinkConfig};
use sluice_connectors::sink::{Records, SinkContext};
use sluice_connectors::source::simulator::{Clock, Generator, SimulatorConfig};
use sluice_model::Event;
use sluice_operators::app_events::AppEventRules;
use sluice_operators::graph;
use sluice_operators::records::StreamName;
use sluice_operators::rollup::WindowOptions;
use sluice_operators::watermark::{LateCounts, Watermark, stamp_batch};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::InputHandle;
use timely::dataflow::operators::{Input, Inspect};
use tokio_util::sync::CancellationToken;

/// The simulator's first event time (its default `start`), epoch seconds.
pub const START: i64 = 1_710_234_000;

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
    app_events: Vec<sluice_operators::records::AppEvent>,
    app_rollups: Vec<sluice_operators::records::AppRollup>,
    platform_rollups: Vec<sluice_operators::records::PlatformRollup>,
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
    let state = ApiState {
        auth: Arc::new(Auth::none()),
        stores: Arc::new(stores),
        live: Arc::new(LiveFeed::default()),
    };
    let server = ApiServer::start(&ApiConfig::open("127.0.0.1:0"), state)
        .await
        .expect("the API starts");
    let base = format!("http://{}", server.address);
    (server, base)
}

/// GET `base` + `path`: the status and the JSON body.
pub async fn get(base: &str, path: &str) -> (u16, Value) {
    let client = sluice_connectors::tls::http_client(false).expect("an HTTP client");
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
