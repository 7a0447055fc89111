//! The `prometheus` sink against a real Prometheus (Debian's, a private process per test),
//! and against a scripted receiver of the test's own where Prometheus cannot be made to
//! answer what a test needs (429, 503, 401, a lost answer): SPEC §13 series at the window
//! start, idempotent resends, refused requests dead-lettered with the receiver's message,
//! retries in order, a receiver that refuses the sink stopping it loudly.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use sluice_buffers::{BufferConfig, SyncPolicy, WhenFull};
use sluice_common::config::ByteSize;
use sluice_common::telemetry::SinkMetrics;
use sluice_model::Str;
use sluice_model::records::{AppRollup, PlatformRollup, Records, StreamName};
use sluice_sinks::prometheus::proto::{self, WriteRequest};
use sluice_sinks::prometheus::{self, AuthConfig, PrometheusSinkConfig, PrometheusSinkError};
use sluice_sinks::{Component, SinkContext};
use sluice_test_support::fixtures::*;
use sluice_test_support::prometheus::{Options, PrometheusServer};
use tokio_util::sync::CancellationToken;

/// The app id of app `i`.
fn app_id(i: usize) -> String {
    format!("{i:08x}-58cc-4372-a567-0e02b2c3d479")
}

/// A final row of app `app` for minute number `m` after [`MINUTE`], its values made from both.
fn app_row(app: usize, m: i64) -> AppRollup {
    let mut row = app_rollup(true);
    row.app_id = Str::from(app_id(app));
    row.minute = MINUTE + 60 * m;
    row.requests = (app as u64) * 100 + m as u64;
    row.latency_p95_ms = Some(10.0 + app as f64 + m as f64 / 8.0);
    row.memory_max = Some(1 << 30 | (app as u64) << 8 | m as u64);
    row
}

fn gauge_row(m: i64) -> PlatformRollup {
    let mut row = gauge_rollup(true);
    row.minute = MINUTE + 60 * m;
    row.value_max = Some(3.0 + m as f64);
    row
}

fn counter_row(m: i64) -> PlatformRollup {
    let mut row = counter_rollup();
    row.minute = MINUTE + 60 * m;
    row.total_last = Some(100 + 7 * m as u64);
    row
}

/// `apps` apps over `minutes` minutes, one batch per minute as the graph sends them, a gauge
/// and a counter beside.
fn minutes(apps: usize, minutes: i64) -> Vec<Records> {
    let mut batches = Vec::new();
    for m in 0..minutes {
        batches.push(Records::AppRollups(
            (0..apps).map(|a| app_row(a, m)).collect(),
        ));
        batches.push(Records::PlatformRollups(vec![gauge_row(m), counter_row(m)]));
    }
    batches
}

fn config(url: &str, dir: &Path) -> PrometheusSinkConfig {
    let mut config = PrometheusSinkConfig::new(url);
    config.flush_interval = Duration::from_millis(10);
    config.dead_letter = Some(dir.join("dead-letter.ndjson"));
    config
}

/// Runs the sink over `batches` (fed from a thread, as the dataflow does) to the end.
async fn run_sink(
    config: PrometheusSinkConfig,
    batches: Vec<Records>,
) -> (Result<(), PrometheusSinkError>, Arc<SinkMetrics>) {
    let (ctx, feeder) = feed(batches);
    let metrics = ctx.metrics.clone();
    let result = prometheus::run(config, ctx).await;
    tokio::task::spawn_blocking(move || feeder.join().expect("feeder thread"))
        .await
        .expect("joined");
    (result, metrics)
}

/// Epoch seconds a little after the test minutes, to evaluate range selectors at.
const AFTER: f64 = (MINUTE + 3600) as f64;

fn dead_letters(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("dead-letter.ndjson"))
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_windows_become_spec_13_series_at_their_start_and_a_replay_changes_nothing() {
    let server = PrometheusServer::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut batches = vec![Records::AppRollups(vec![app_rollup(false)])];
    batches.extend(minutes(30, 5));
    let mut config = config(&server.write_url(), dir.path());
    config.concurrency = 4.try_into().expect("non-zero");
    config.batch_size = 100.try_into().expect("non-zero");

    let (result, metrics) = run_sink(config.clone(), batches.clone()).await;
    result.expect("sink");
    // Every row is settled: the provisional one by its window's final row.
    assert_eq!(metrics.written_of(StreamName::AppRollups), 151);
    assert_eq!(metrics.written_of(StreamName::PlatformRollups), 10);
    assert_eq!(metrics.dead_lettered.get(), 0);
    assert_eq!(
        metrics.pending.load(std::sync::atomic::Ordering::Relaxed),
        0
    );

    let stored = server
        .raw_samples(r#"{__name__=~"sluice_.+"}"#, "2h", AFTER)
        .await;
    // 21 series per app (every column present), 5 per gauge, 3 per counter; one sample per
    // minute each, at the minute's start.
    assert_eq!(stored.len(), 30 * 21 + 5 + 3, "{:#?}", stored.keys());
    let starts: Vec<i64> = (0..5).map(|m| (MINUTE + 60 * m) * 1000).collect();
    for (series, samples) in &stored {
        let times: Vec<i64> = samples.iter().map(|(t, _)| *t).collect();
        assert_eq!(times, starts, "{series}");
    }
    for app in [0, 17, 29] {
        let id = app_id(app);
        let values = |name: &str, extra: &str| -> Vec<f64> {
            let key = format!("__name__={name},app_id={id}{extra},window=1m");
            stored[&key].iter().map(|(_, v)| *v).collect()
        };
        let rows: Vec<AppRollup> = (0..5).map(|m| app_row(app, m)).collect();
        assert_eq!(
            values("sluice_app_requests", ""),
            rows.iter().map(|r| r.requests as f64).collect::<Vec<_>>()
        );
        assert_eq!(
            values("sluice_app_latency_seconds", ",quantile=0.95"),
            rows.iter()
                .map(|r| r.latency_p95_ms.expect("set") / 1000.0)
                .collect::<Vec<_>>()
        );
        assert_eq!(
            values("sluice_app_memory_bytes", ",stat=max"),
            rows.iter()
                .map(|r| r.memory_max.expect("set") as f64)
                .collect::<Vec<_>>()
        );
        assert_eq!(
            values("sluice_app_responses", ",status_class=5xx"),
            [1.0; 5]
        );
        assert_eq!(values("sluice_app_cpu_percent", ",stat=avg"), [12.5; 5]);
        assert_eq!(values("sluice_app_latency_avg_seconds", ""), [0.0025; 5]);
    }
    // The provisional row of app_rollup(false) (an app with no final row) never reached the
    // receiver.
    assert!(!stored.keys().any(|series| series.contains(APP)));
    let gauge = "job=router,name=latency,origin=gorouter";
    assert_eq!(
        stored[&format!(
            "__name__=sluice_platform_gauge,instance=0,{gauge},stat=max,unit=ms,window=1m"
        )]
            .iter()
            .map(|(_, v)| *v)
            .collect::<Vec<_>>(),
        [3.0, 4.0, 5.0, 6.0, 7.0]
    );
    // The counter's envelope had no job and no index: no such labels.
    assert_eq!(
        stored["__name__=sluice_platform_counter_total,name=dropped,origin=doppler,window=1m"]
            .iter()
            .map(|(_, v)| *v)
            .collect::<Vec<_>>(),
        [100.0, 107.0, 114.0, 121.0, 128.0]
    );

    // The same rows again (a replay, a disk buffer read twice): Prometheus refuses samples
    // older than a series' newest as out of order, and takes the newest again silently.
    // Nothing changes.
    let (result, metrics) = run_sink(config, minutes(30, 1)).await;
    result.expect("replayed");
    assert_eq!(metrics.dead_lettered.get(), 32);
    assert!(
        dead_letters(dir.path())
            .iter()
            .all(|line| line["error"] == "out of order sample")
    );
    let last = minutes(30, 5).split_off(8);
    let (result, metrics) = run_sink(
        PrometheusSinkConfig {
            dead_letter: Some(dir.path().join("replay.ndjson")),
            ..PrometheusSinkConfig::new(server.write_url())
        },
        last,
    )
    .await;
    result.expect("replayed");
    assert_eq!(
        metrics.dead_lettered.get(),
        0,
        "the newest samples are taken again"
    );
    assert_eq!(
        server
            .raw_samples(r#"{__name__=~"sluice_.+"}"#, "2h", AFTER)
            .await,
        stored
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_is_dead_lettered_with_the_receivers_message_and_the_rest_is_stored() {
    let server = PrometheusServer::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (result, _) = run_sink(config(&server.write_url(), dir.path()), minutes(3, 3)).await;
    result.expect("stored");

    // One row a request: a changed value for a stored minute, an older minute than stored,
    // and a new minute.
    let mut changed = app_row(0, 2);
    changed.requests += 1;
    let mut config = config(&server.write_url(), dir.path());
    config.batch_size = 1.try_into().expect("non-zero");
    config.concurrency = 1.try_into().expect("non-zero");
    let batches = vec![Records::AppRollups(vec![
        changed,
        app_row(1, 0),
        app_row(2, 3),
    ])];
    let (result, metrics) = run_sink(config, batches).await;
    result.expect("the sink carries on past refused requests");
    assert_eq!(metrics.dead_lettered.get(), 2);
    assert_eq!(metrics.written_of(StreamName::AppRollups), 1);

    let lines = dead_letters(dir.path());
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert_eq!(lines[0]["status"], 400);
    assert_eq!(lines[0]["error"], "duplicate sample for timestamp");
    assert_eq!(lines[1]["error"], "out of order sample");
    assert_eq!(lines[0]["sink"], "test");
    assert_eq!(lines[0]["rows"], 1);
    assert_eq!(lines[0]["samples"], 21);
    let requests = lines[0]["series"]
        .as_array()
        .expect("series")
        .iter()
        .find(|s| s["labels"]["__name__"] == "sluice_app_requests")
        .expect("the requests series");
    assert_eq!(requests["labels"]["app_id"], app_id(0));
    assert_eq!(
        requests["samples"],
        serde_json::json!([[(MINUTE + 120) * 1000, "3"]])
    );

    let stored = server
        .raw_samples(r#"sluice_app_requests{window="1m"}"#, "2h", AFTER)
        .await;
    let of = |app: usize| {
        stored[&format!(
            "__name__=sluice_app_requests,app_id={},window=1m",
            app_id(app)
        )]
            .iter()
            .map(|(_, v)| *v)
            .collect::<Vec<_>>()
    };
    assert_eq!(of(0), [0.0, 1.0, 2.0], "the stored value stays");
    assert_eq!(of(2), [200.0, 201.0, 202.0, 203.0], "the new minute is in");
}

/// What a scripted receiver does with the next request that carries samples.
#[derive(Clone, Debug)]
enum Step {
    /// Answer this status and body without storing anything.
    Answer(u16, &'static str),
    /// Pass the request on to Prometheus, then answer this status instead of its answer:
    /// stored, but the sink does not know it.
    LoseAnswer(u16),
}

#[derive(Default)]
struct Script {
    steps: VecDeque<Step>,
    /// Every request: its headers and body.
    seen: Vec<(HeaderMap, Bytes)>,
}

/// A receiver of the test's own on a free loopback port: follows its script for requests
/// with samples, and otherwise passes them on to `upstream` (or answers 204).
struct ScriptedReceiver {
    url: String,
    script: Arc<Mutex<Script>>,
}

#[derive(Clone)]
struct ReceiverState {
    script: Arc<Mutex<Script>>,
    upstream: Option<String>,
    client: reqwest::Client,
}

impl ScriptedReceiver {
    async fn start(upstream: Option<String>, steps: Vec<Step>) -> ScriptedReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let address = listener.local_addr().expect("address");
        let script = Arc::new(Mutex::new(Script {
            steps: steps.into(),
            seen: Vec::new(),
        }));
        let state = ReceiverState {
            script: script.clone(),
            upstream,
            client: sluice_common::tls::http_client(false).expect("client"),
        };
        let app = axum::Router::new()
            .route("/api/v1/write", axum::routing::post(receive))
            .with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await });
        ScriptedReceiver {
            url: format!("http://{address}/api/v1/write"),
            script,
        }
    }

    fn seen(&self) -> Vec<(HeaderMap, Bytes)> {
        self.script.lock().expect("script").seen.clone()
    }

    /// The requests that carried samples, decoded.
    fn writes(&self) -> Vec<WriteRequest> {
        self.seen()
            .iter()
            .map(|(_, body)| proto::decode(body).expect("a remote-write body"))
            .filter(|r| !r.timeseries.is_empty())
            .collect()
    }
}

async fn receive(
    State(state): State<ReceiverState>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let has_samples = proto::decode(&body).is_ok_and(|r| !r.timeseries.is_empty());
    let step = {
        let mut script = state.script.lock().expect("script");
        script.seen.push((headers.clone(), body.clone()));
        if has_samples {
            script.steps.pop_front()
        } else {
            None
        }
    };
    let status = |code: u16| StatusCode::from_u16(code).expect("a status");
    let forward = async {
        let Some(upstream) = &state.upstream else {
            return (StatusCode::NO_CONTENT, String::new());
        };
        let mut request = state.client.post(upstream).body(body.clone());
        for (name, value) in &headers {
            if name != "host" && name != "content-length" {
                request = request.header(name, value);
            }
        }
        let answer = request.send().await.expect("upstream answers");
        let code = answer.status().as_u16();
        (status(code), answer.text().await.unwrap_or_default())
    };
    match step {
        None => forward.await,
        Some(Step::Answer(code, message)) => (status(code), message.to_owned()),
        Some(Step::LoseAnswer(code)) => {
            let (stored, _) = forward.await;
            assert_eq!(stored, StatusCode::NO_CONTENT, "the upstream stored it");
            (status(code), "the answer was lost".to_owned())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_sent_again_after_its_answer_was_lost_is_taken_and_stored_once() {
    let server = PrometheusServer::start().await;
    let receiver =
        ScriptedReceiver::start(Some(server.write_url()), vec![Step::LoseAnswer(502)]).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = config(&receiver.url, dir.path());
    config.concurrency = 1.try_into().expect("non-zero");
    let (ctx, sender) = SinkContext::new("test", 4, CancellationToken::new());
    let metrics = ctx.metrics.clone();
    let sink = tokio::spawn(prometheus::run(config, ctx));
    // One minute at a time, each stored before the next is sent: one request each.
    for m in 0..3 {
        let batch = Records::AppRollups((0..5).map(|a| app_row(a, m)).collect());
        let sent = send_all(sender.clone(), vec![batch]);
        tokio::task::spawn_blocking(move || sent.join().expect("sent"))
            .await
            .expect("joined");
        let rows = 5 * (m as u64 + 1);
        wait_for("the minute stored", || metrics.written_total() >= rows).await;
    }
    drop(sender);
    sink.await.expect("sink task").expect("sink");
    assert_eq!(
        metrics.retries.get(),
        1,
        "the lost answer was one failed attempt"
    );
    assert_eq!(
        metrics.dead_lettered.get(),
        0,
        "the same samples again are no conflict"
    );
    let writes = receiver.writes();
    assert_eq!(writes.len(), 4, "the first request twice, then two more");
    assert_eq!(writes[0], writes[1], "sent again as it was");
    let counts = server
        .query(
            r#"count_over_time(sluice_app_requests{window="1m"}[2h])"#,
            AFTER,
        )
        .await
        .expect("a query");
    assert_eq!(counts.len(), 5);
    for series in counts {
        assert_eq!(series["value"][1], "3", "{series}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_429_and_5xx_are_retried_in_order_and_401_stops_the_sink_loudly() {
    let receiver = ScriptedReceiver::start(
        None,
        vec![
            Step::Answer(503, "overloaded"),
            Step::Answer(429, "slow down"),
            Step::Answer(500, "WAL is stuck"),
        ],
    )
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = config(&receiver.url, dir.path());
    config.concurrency = 1.try_into().expect("non-zero");
    config.batch_size = 21.try_into().expect("non-zero");
    let (result, metrics) = run_sink(
        config,
        vec![Records::AppRollups(vec![app_row(0, 0), app_row(0, 1)])],
    )
    .await;
    result.expect("stored after the retries");
    assert_eq!(metrics.retries.get(), 3);
    assert_eq!(metrics.written_of(StreamName::AppRollups), 2);
    assert_eq!(metrics.unavailable_reason(), None);
    let minutes_sent: Vec<i64> = receiver
        .writes()
        .iter()
        .map(|w| w.timeseries[0].samples[0].timestamp / 1000 - MINUTE)
        .collect();
    assert_eq!(
        minutes_sent,
        [0, 0, 0, 0, 60],
        "the first minute until it is taken, then the next"
    );

    let refusing = ScriptedReceiver::start(None, vec![Step::Answer(401, "invalid token")]).await;
    let (result, metrics) = run_sink(
        PrometheusSinkConfig::new(&refusing.url),
        vec![Records::AppRollups(vec![app_row(0, 0)])],
    )
    .await;
    let error = result.expect_err("bad credentials stop the sink");
    assert!(
        matches!(error, PrometheusSinkError::Refused { status: 401, .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("invalid token"), "{message}");
    assert!(
        message.contains(refusing.url.trim_start_matches("http://")),
        "{message}"
    );
    assert_eq!(metrics.dropped.get(), 1);
}

#[tokio::test]
async fn a_prometheus_without_its_receiver_stops_the_sink_at_start_with_its_answer() {
    let server = PrometheusServer::start_with(Options {
        without_receiver: true,
        ..Options::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (result, _) = run_sink(config(&server.write_url(), dir.path()), minutes(1, 1)).await;
    let message = result.expect_err("refused").to_string();
    assert!(message.contains("HTTP 404"), "{message}");
    assert!(
        message.contains("remote write receiver needs to be enabled"),
        "{message}"
    );
}

#[tokio::test]
async fn requests_carry_the_protocol_headers_the_credentials_and_the_extra_headers() {
    for (auth, expected) in [
        (
            AuthConfig::Basic {
                username: "cf".to_owned(),
                password: "s3cret".to_owned(),
            },
            "Basic Y2Y6czNjcmV0",
        ),
        (
            AuthConfig::Bearer {
                token: "t0ken".to_owned(),
            },
            "Bearer t0ken",
        ),
    ] {
        let receiver = ScriptedReceiver::start(None, Vec::new()).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = config(&receiver.url, dir.path());
        config.auth = Some(auth);
        config
            .headers
            .insert("X-Scope-OrgID".to_owned(), "cf-prod".to_owned());
        let (result, _) = run_sink(config, minutes(2, 1)).await;
        result.expect("sink");
        let seen = receiver.seen();
        assert!(seen.len() >= 2, "the healthcheck and a write");
        for (headers, _) in &seen {
            let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
            assert_eq!(header("content-encoding"), Some("snappy"));
            assert_eq!(header("content-type"), Some("application/x-protobuf"));
            assert_eq!(header("x-prometheus-remote-write-version"), Some("0.1.0"));
            assert_eq!(header("authorization"), Some(expected));
            assert_eq!(header("x-scope-orgid"), Some("cf-prod"));
            assert!(header("user-agent").is_some_and(|a| a.starts_with("sluice/")));
        }
        for write in receiver.writes() {
            for series in &write.timeseries {
                let names: Vec<&str> = series.labels.iter().map(|l| l.name.as_str()).collect();
                let mut sorted = names.clone();
                sorted.sort_unstable();
                assert_eq!(names, sorted, "labels sorted by name");
                assert_eq!(series.samples.len(), 1);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_receiver_is_named_and_the_disk_buffer_holds_the_rows_until_it_answers() {
    let mut server = PrometheusServer::start().await;
    server.kill();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = config(&server.write_url(), dir.path());
    config.buffer = BufferConfig::Disk {
        path: dir.path().join("buffer"),
        max_size: ByteSize(1 << 30),
        when_full: WhenFull::Block,
        sync: SyncPolicy::Batch,
        segment_size: ByteSize(1 << 20),
    };
    let (ctx, sender) =
        SinkContext::with_buffer("test", 4, &config.buffer, CancellationToken::new())
            .expect("disk buffer");
    let metrics = ctx.metrics.clone();
    let sink = tokio::spawn(prometheus::run(config, ctx));
    let sent = send_all(sender, minutes(10, 4));
    tokio::task::spawn_blocking(move || sent.join().expect("sent"))
        .await
        .expect("joined");
    wait_for("two failed attempts", || metrics.retries.get() >= 2).await;
    let reason = metrics.unavailable_reason().expect("unavailable");
    assert!(
        reason.contains(&format!("127.0.0.1:{}", server.port)),
        "{reason}"
    );
    assert_eq!(metrics.written_total(), 0);

    server.restart().await;
    sink.await.expect("sink task").expect("sink");
    assert_eq!(metrics.written_total(), 48);
    let stored = server
        .raw_samples(r#"{__name__=~"sluice_.+"}"#, "2h", AFTER)
        .await;
    assert_eq!(stored.len(), 10 * 21 + 8);
    assert!(
        stored.values().all(|samples| samples.len() == 4),
        "{stored:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_provisional_sends_open_windows_but_prometheus_never_replaces_a_sample() {
    let server = PrometheusServer::start_with(Options {
        out_of_order_window: Some("30m".to_owned()),
        ..Options::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = config(&server.write_url(), dir.path());
    config.write_provisional = true;
    let version = |m: i64, requests: u64, is_final: bool| {
        let mut row = app_row(0, m);
        row.requests = requests;
        row.is_final = is_final;
        Records::AppRollups(vec![row])
    };
    let (ctx, sender) = SinkContext::new("test", 4, CancellationToken::new());
    let metrics = ctx.metrics.clone();
    let sink = tokio::spawn(prometheus::run(config, ctx));
    // As the graph sends them, each in a flush of its own: minute 0 and 1 open, then closed.
    let sequence = [
        version(0, 1, false),
        version(1, 2, false),
        version(0, 10, true),
        version(1, 20, true),
    ];
    for (n, batch) in sequence.into_iter().enumerate() {
        let sent = send_all(sender.clone(), vec![batch]);
        tokio::task::spawn_blocking(move || sent.join().expect("sent"))
            .await
            .expect("joined");
        let settled = n as u64 + 1;
        wait_for("the row settled", || {
            metrics.written_total() + metrics.dead_lettered.get() >= settled
        })
        .await;
    }
    drop(sender);
    sink.await.expect("sink task").expect("sink");
    let stored = server
        .raw_samples(r#"sluice_app_requests{window="1m"}"#, "2h", AFTER)
        .await;
    let values: Vec<f64> = stored[&format!(
        "__name__=sluice_app_requests,app_id={},window=1m",
        app_id(0)
    )]
        .iter()
        .map(|(_, v)| *v)
        .collect();
    // Open windows were sent. Then Prometheus never replaces a sample: minute 0's final row,
    // older than the series' newest, went to the out-of-order head beside the provisional
    // sample (queries answer it from there); minute 1's final row, at the series' newest
    // time, was refused as a duplicate, and its provisional value stays. Whether a window
    // ends final depends on timing: `write_provisional` is for receivers that replace.
    assert_eq!(values, [10.0, 2.0]);
    assert_eq!(metrics.dead_lettered.get(), 1);
    assert_eq!(
        dead_letters(dir.path())[0]["error"],
        "duplicate sample for timestamp"
    );
}

#[test]
fn only_rollup_streams_can_be_configured() {
    let mut config = PrometheusSinkConfig::new("http://127.0.0.1:9090/api/v1/write");
    config.streams = vec![StreamName::AppRollups, StreamName::Logs];
    let problems = config.problems();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].key, "streams");
}
