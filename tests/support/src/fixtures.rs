//! Records made by hand for the sink tests, one of every kind, and the SPEC's column lists
//! written out literally so a test compares the code against the document, not itself.

use std::time::Duration;

use bytes::Bytes;
use sluice_buffers::BufferSender;
use sluice_model::Str;
use sluice_model::event::{
    ContainerMetric, ErrorEvent, Event, Header, HttpStartStop, LogMessage, MessageType, Method,
    Payload, PeerType, Tags, uuid_from_halves,
};
use sluice_model::records::Records;
use sluice_model::records::{AppEvent, AppRollup, MetricKind, PlatformRollup};
use sluice_sinks::SinkContext;
use tokio_util::sync::CancellationToken;

pub const APP: &str = "f47ac10b-58cc-4372-a567-0e02b2c3d479";
pub const TS: i64 = 1_710_234_017_448_058_219;
pub const MINUTE: i64 = 1_710_234_000;

/// `(table, columns in order, primary key columns)` exactly as SPEC §3, §5 and §6 list them.
pub const SPEC_TABLES: [(&str, &[&str], &[&str]); 7] = [
    (
        "log_message",
        &[
            "id",
            "ts",
            "app_id",
            "source_type",
            "source_instance",
            "message_type",
            "message",
            "origin",
            "deployment",
            "job",
            "instance",
            "ip",
        ],
        &["id"],
    ),
    (
        "container_metric",
        &[
            "app_id",
            "instance_index",
            "ts",
            "cpu_percentage",
            "memory_bytes",
            "disk_bytes",
            "memory_bytes_quota",
            "disk_bytes_quota",
        ],
        &["app_id", "instance_index", "ts"],
    ),
    (
        "http_start_stop",
        &[
            "request_id",
            "peer_type",
            "app_id",
            "instance_index",
            "instance_id",
            "start_ts",
            "stop_ts",
            "method",
            "uri",
            "status_code",
            "content_length",
            "remote_address",
            "user_agent",
        ],
        &["request_id", "peer_type"],
    ),
    (
        "app_event",
        &[
            "app_id",
            "ts",
            "event",
            "source_type",
            "source_instance",
            "message",
        ],
        &["app_id", "ts", "event"],
    ),
    (
        "app_metric_rollup",
        &[
            "app_id",
            "minute",
            "instances",
            "cpu_avg",
            "cpu_max",
            "memory_avg",
            "memory_max",
            "disk_avg",
            "disk_max",
            "requests",
            "status_2xx",
            "status_3xx",
            "status_4xx",
            "status_5xx",
            "response_bytes",
            "latency_avg_ms",
            "latency_max_ms",
            "latency_p50_ms",
            "latency_p95_ms",
            "latency_p99_ms",
            "log_lines",
            "log_err_lines",
            "app_events",
        ],
        &["app_id", "minute"],
    ),
    (
        "platform_metric_rollup",
        &[
            "origin",
            "job",
            "instance",
            "name",
            "minute",
            "kind",
            "unit",
            "samples",
            "value_avg",
            "value_min",
            "value_max",
            "value_last",
            "delta_sum",
            "total_last",
        ],
        &["origin", "job", "instance", "name", "minute"],
    ),
    (
        "platform_error",
        &["origin", "ts", "source", "code", "message"],
        &["origin", "ts", "source", "code"],
    ),
];

fn header(origin: &str, job: &str, index: &str) -> Header {
    Header {
        origin: Str::from(origin),
        deployment: Str::from("cf"),
        job: Str::from(job),
        index: Str::from(index),
        ip: Str::from("10.0.16.4"),
        tags: Tags::from_pairs(vec![(Str::from("k"), Str::from("v"))]),
    }
}

/// A log line whose message is not valid UTF-8 (written lossily).
pub fn log_event() -> Event {
    Event {
        timestamp: TS - 5,
        header: header("rep", "diego_cell", "3"),
        payload: Payload::Log(LogMessage {
            names: None,
            message: Bytes::from_static(b"boom \xff done"),
            message_type: MessageType::Err,
            timestamp: TS,
            app_id: Str::from(APP),
            source_type: Str::from("APP/PROC/WEB"),
            source_instance: Str::from("0"),
        }),
    }
}

/// A container metric; `with_quotas: false` leaves both quotas absent (NULL).
pub fn container_event(instance_index: i32, with_quotas: bool) -> Event {
    Event {
        timestamp: TS,
        header: header("rep", "diego_cell", "3"),
        payload: Payload::Container(ContainerMetric {
            application_id: Str::from(APP),
            instance_index,
            cpu_percentage: 12.5,
            memory_bytes: 1024,
            disk_bytes: 2048,
            memory_bytes_quota: with_quotas.then_some(4096),
            disk_bytes_quota: with_quotas.then_some(8192),
        }),
    }
}

/// An HTTP event: a server one with the app known, or a client one without app or instance.
pub fn http_event(server: bool) -> Event {
    Event {
        timestamp: TS,
        header: header("gorouter", "router", "0"),
        payload: Payload::Http(HttpStartStop {
            start_timestamp: TS - 3_000_000,
            stop_timestamp: TS,
            request_id: uuid_from_halves(0x7243cc580bc17af4, 0x79d4c3b2020e67a5),
            peer_type: if server {
                PeerType::Server
            } else {
                PeerType::Client
            },
            method: Method::POST,
            uri: Str::from("http://app.example.com/x"),
            remote_address: Str::from("10.0.0.9:5000"),
            user_agent: Str::from("curl/8"),
            status_code: 201,
            content_length: 77,
            application_id: server
                .then(|| uuid_from_halves(0x7243cc580bc17af4, 0x79d4c3b2020e67a5)),
            instance_index: server.then_some(2),
            instance_id: Str::from("abc-123"),
            forwarded: vec![Str::from("1.2.3.4")],
        }),
    }
}

pub fn error_event() -> Event {
    Event {
        timestamp: TS,
        header: header("doppler", "doppler", "1"),
        payload: Payload::Error(ErrorEvent {
            source: Str::from("tc"),
            code: 42,
            message: Str::from("slow consumer"),
        }),
    }
}

pub fn app_event() -> AppEvent {
    AppEvent {
        app_id: Str::from(APP),
        ts: TS,
        event: Str::from("crash"),
        source_type: Str::from("API"),
        source_instance: Str::from("1"),
        message: Str::from("App instance exited"),
    }
}

/// An app rollup; the provisional one has fewer requests and no container metrics yet.
pub fn app_rollup(is_final: bool) -> AppRollup {
    AppRollup {
        names: None,
        app_id: Str::from(APP),
        minute: MINUTE,
        window: 60,
        instances: if is_final { 2 } else { 0 },
        cpu_avg: is_final.then_some(12.5),
        cpu_max: is_final.then_some(20.0),
        memory_avg: is_final.then_some(1024.0),
        memory_max: is_final.then_some(2000),
        disk_avg: is_final.then_some(2048.0),
        disk_max: is_final.then_some(3000),
        requests: if is_final { 4 } else { 1 },
        status_2xx: if is_final { 3 } else { 1 },
        status_3xx: 0,
        status_4xx: 0,
        status_5xx: u64::from(is_final),
        response_bytes: if is_final { 308 } else { 77 },
        latency_avg_ms: Some(if is_final { 2.5 } else { 3.0 }),
        latency_max_ms: Some(if is_final { 4.0 } else { 3.0 }),
        latency_p50_ms: Some(3.0),
        latency_p95_ms: Some(if is_final { 4.0 } else { 3.0 }),
        latency_p99_ms: Some(if is_final { 4.0 } else { 3.0 }),
        log_lines: if is_final { 10 } else { 5 },
        log_err_lines: 1,
        app_events: u64::from(is_final),
        is_final,
    }
}

pub fn gauge_rollup(is_final: bool) -> PlatformRollup {
    PlatformRollup {
        origin: Str::from("gorouter"),
        job: Str::from("router"),
        instance: Str::from("0"),
        name: Str::from("latency"),
        minute: MINUTE,
        window: 60,
        kind: MetricKind::Gauge,
        unit: Str::from("ms"),
        samples: if is_final { 3 } else { 1 },
        value_avg: Some(2.0),
        value_min: Some(if is_final { 1.0 } else { 2.0 }),
        value_max: Some(if is_final { 3.0 } else { 2.0 }),
        value_last: Some(if is_final { 3.0 } else { 2.0 }),
        delta_sum: None,
        total_last: None,
        is_final,
    }
}

/// A counter rollup of an envelope without `index`: `instance` is ''.
pub fn counter_rollup() -> PlatformRollup {
    PlatformRollup {
        origin: Str::from("doppler"),
        job: Str::new(),
        instance: Str::new(),
        name: Str::from("dropped"),
        minute: MINUTE,
        window: 60,
        kind: MetricKind::Counter,
        unit: Str::new(),
        samples: 2,
        value_avg: None,
        value_min: None,
        value_max: None,
        value_last: None,
        delta_sum: Some(7),
        total_last: Some(107),
        is_final: true,
    }
}

/// The hour of [`MINUTE`] (epoch seconds of its start).
pub const HOUR: i64 = MINUTE - MINUTE % 3600;

/// Rollups of the minute, the hour and 5 minutes: the hour's with other values than the
/// minute's, the 5 minutes' a width [`hourly_sink`] has no table for.
pub fn rollups_of_three_widths() -> Vec<Records> {
    let mut hour = app_rollup(true);
    hour.window = 3600;
    hour.minute = HOUR;
    hour.requests = 40;
    let mut five = app_rollup(true);
    five.window = 300;
    let mut hour_gauge = gauge_rollup(true);
    hour_gauge.window = 3600;
    hour_gauge.minute = HOUR;
    hour_gauge.samples = 180;
    vec![
        Records::AppRollups(vec![app_rollup(false), hour.clone(), five]),
        Records::PlatformRollups(vec![hour_gauge]),
        Records::AppRollups(vec![app_rollup(true)]),
    ]
}

/// A sink context of a graph with windows of a minute and an hour, fed `batches`.
pub fn hourly_sink(batches: Vec<Records>) -> (SinkContext, std::thread::JoinHandle<()>) {
    let (ctx, sender) = SinkContext::new("test", 4, CancellationToken::new());
    (ctx.with_windows(&[60, 3600]), send_all(sender, batches))
}

/// One batch of every stream, rollups provisional then final.
pub fn every_stream() -> Vec<Records> {
    vec![
        Records::Logs(vec![log_event()]),
        Records::ContainerMetrics(vec![container_event(0, true), container_event(1, false)]),
        Records::Http(vec![http_event(true), http_event(false)]),
        Records::Errors(vec![error_event()]),
        Records::AppEvents(vec![app_event()]),
        Records::AppRollups(vec![app_rollup(false)]),
        Records::PlatformRollups(vec![gauge_rollup(false), counter_rollup()]),
        Records::AppRollups(vec![app_rollup(true)]),
        Records::PlatformRollups(vec![gauge_rollup(true)]),
    ]
}

/// A sink context and a sender that feeds it `batches` from a blocking thread (the way the
/// dataflow's workers do) and then closes it.
pub fn feed(batches: Vec<Records>) -> (SinkContext, std::thread::JoinHandle<()>) {
    let (ctx, sender) = SinkContext::new("test", 4, CancellationToken::new());
    (ctx, send_all(sender, batches))
}

pub fn send_all(sender: BufferSender, batches: Vec<Records>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for batch in batches {
            assert!(sender.send_blocking(batch), "the sink stopped early");
        }
    })
}

/// Waits for `condition` with a deadline; for conditions no channel announces.
pub async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
