//! The Firehose source and `sluice capture` against the real `sluice simulate` server over
//! loopback: tokens, every event type, refused credentials, a Firehose that is down or
//! restarts, revoked tokens, shared subscriptions, slow consumers, capture files.
//!
//! Each test starts its own server and sources in full: the setups (and the waits for
//! reconnects) repeat on purpose, so that what a test arranges stays beside what it asserts.

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use sluice_common::uaa::UaaError;
use sluice_model::reference::encode_v1;
use sluice_model::{Event, EventType};
use sluice_simulator::server::SimulateConfig;
use sluice_simulator::{Clock, Generator, SimulatorConfig};
use sluice_sources::firehose::capture::{CaptureEnd, capture};
use sluice_sources::firehose::{FirehoseConfig, FirehoseError, run};
use sluice_sources::{SourceBatch, SourceContext, SourceMetrics, SourceOutput};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

use sluice_test_support::simulate::{PATIENCE, Running};

fn simulate(generator: SimulatorConfig) -> SimulateConfig {
    SimulateConfig {
        client_id: "sluice".to_owned(),
        client_secret: "s3cret".to_owned(),
        generator,
        token_ttl: Duration::from_secs(3600),
        user_token_ttl: Duration::from_secs(3600),
        max_pending: 256,
        directory_churn: None,
    }
}

/// Simulated time, so a seed always makes the same events.
fn traffic(seed: u64, rate: u64, limit: Option<u64>) -> SimulatorConfig {
    SimulatorConfig {
        rate,
        seed,
        limit,
        clock: Clock::Simulated,
        ..SimulatorConfig::default()
    }
}

fn reference(generator: &SimulatorConfig, n: usize) -> Vec<Event> {
    let mut events = Vec::new();
    Generator::new(generator).fill(n, &mut events);
    events
}

fn firehose(addr: SocketAddr, subscription_id: &str) -> FirehoseConfig {
    FirehoseConfig {
        url: format!("ws://{addr}"),
        subscription_id: subscription_id.to_owned(),
        uaa_url: format!("http://{addr}"),
        client_id: "sluice".to_owned(),
        client_secret: "s3cret".to_owned(),
        skip_tls_verify: false,
        keepalive: Duration::from_secs(15),
        max_backoff: Duration::from_millis(100),
        batch_size: 64,
        connections: 1,
        max_frame_size: sluice_sources::firehose::DEFAULT_MAX_FRAME_SIZE,
    }
}

/// A running source and the receiving end of its channel.
struct Source {
    rx: mpsc::Receiver<SourceBatch>,
    metrics: Arc<SourceMetrics>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), FirehoseError>>,
    events: Vec<Event>,
}

impl Source {
    fn start(config: FirehoseConfig, capacity: usize) -> Source {
        let (output, rx) = SourceOutput::channel(capacity);
        let ctx = SourceContext::new("cf", output, CancellationToken::new());
        Source {
            rx,
            metrics: ctx.metrics.clone(),
            shutdown: ctx.shutdown.clone(),
            task: tokio::spawn(run(config, ctx)),
            events: Vec::new(),
        }
    }

    /// Receives one batch into `events`.
    async fn receive(&mut self) {
        let batch = timeout(PATIENCE, self.rx.recv())
            .await
            .expect("a batch in time")
            .expect("the source is running");
        self.events.extend(batch.events);
    }

    async fn receive_at_least(&mut self, n: usize) {
        while self.events.len() < n {
            self.receive().await;
        }
    }

    /// Keeps receiving until `condition` holds.
    async fn receive_until(&mut self, what: &str, mut condition: impl FnMut(&Source) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !condition(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            self.receive().await;
        }
    }

    async fn stop(self) -> Result<(), FirehoseError> {
        self.shutdown.cancel();
        timeout(PATIENCE, self.task)
            .await
            .expect("the source stops in time")
            .expect("the source does not panic")
    }
}

/// Polls `condition` until it holds (for counters nobody can wait on).
async fn until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A port nothing listens on (until a test binds it again).
fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address")
}

#[tokio::test]
async fn events_of_every_type_arrive_as_the_generator_made_them() {
    let generator = traffic(9, 0, None);
    // How far into the stream every type has appeared (Errors are rare).
    let mut probe = Generator::new(&generator);
    let mut types = std::collections::BTreeSet::new();
    let mut needed = 0;
    while types.len() < EventType::ALL.len() {
        types.insert(probe.next_event().event_type());
        needed += 1;
    }
    let expected = reference(&generator, needed);
    let server = Running::start(simulate(generator)).await;
    let mut source = Source::start(firehose(server.addr, "sluice"), 16);
    source.receive_at_least(needed).await;
    assert_eq!(&source.events[..needed], &expected[..]);
    assert_eq!(source.metrics.bad_records.total(), 0);
    assert_eq!(source.metrics.reconnects.get(), 0);
    assert!(source.metrics.connected.load(Ordering::Relaxed));
    assert!(source.metrics.bytes.get() > 0);
    assert!(source.stop().await.is_ok());
    let stats = server.stop().await;
    assert_eq!(stats.tokens_issued, 1);
}

#[tokio::test]
async fn a_wrong_client_secret_stops_the_source_naming_uaa() {
    let server = Running::start(simulate(traffic(1, 100, None))).await;
    let mut config = firehose(server.addr, "sluice");
    config.client_secret = "wrong".to_owned();
    let source = Source::start(config, 1);
    let result = timeout(PATIENCE, source.task)
        .await
        .expect("the source gives up at once")
        .expect("no panic");
    let error = result.expect_err("credentials refused");
    assert!(
        matches!(
            &error,
            FirehoseError::Uaa(UaaError::Refused { status: 401, .. })
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains(&format!("http://{}/oauth/token", server.addr)),
        "{message}"
    );
    assert!(message.contains("'sluice'"), "{message}");
    assert_eq!(server.stop().await.connections_total, 0);
}

#[tokio::test]
async fn a_firehose_down_at_start_is_retried_until_it_appears() {
    let addr = free_port();
    let mut source = Source::start(firehose(addr, "sluice"), 16);
    let metrics = source.metrics.clone();
    until("two failed attempts", || metrics.reconnects.get() >= 2).await;
    assert!(!metrics.connected.load(Ordering::Relaxed));

    let generator = traffic(4, 0, None);
    let server = Running::start_on(addr, simulate(generator.clone())).await;
    source.receive_at_least(100).await;
    assert_eq!(&source.events[..100], &reference(&generator, 100)[..]);
    assert!(metrics.connected.load(Ordering::Relaxed));
    assert!(source.stop().await.is_ok());
    server.stop().await;
}

#[tokio::test]
async fn a_restarted_server_is_reconnected_and_its_new_stream_read() {
    let first_traffic = traffic(5, 5_000, None);
    let first = Running::start(simulate(first_traffic.clone())).await;
    let addr = first.addr;
    let mut source = Source::start(firehose(addr, "sluice"), 16);
    source.receive_at_least(50).await;
    // Shutdown writes what was dealt, then closes with 1001: the source reads all of it.
    let dealt = first.stop().await.envelopes_per_subscription["sluice"] as usize;

    let second_traffic = traffic(6, 0, Some(300));
    let second = Running::start_on(addr, simulate(second_traffic.clone())).await;
    source.receive_at_least(dealt + 300).await;
    assert_eq!(
        &source.events[..dealt],
        &reference(&first_traffic, dealt)[..]
    );
    assert_eq!(
        &source.events[dealt..],
        &reference(&second_traffic, 300)[..]
    );
    assert!(source.metrics.reconnects.get() >= 1);
    assert!(source.stop().await.is_ok());
    // The old server's token means nothing to the new one: 401, then a fresh token.
    let stats = second.stop().await;
    assert_eq!((stats.unauthorized, stats.tokens_issued), (1, 1));
}

/// Stops draining `source` until the server closes it as a slow consumer, then drains on
/// until the source has reconnected and received `more` events on its new connection.
async fn stall_until_slow_consumer_close(server: &Running, source: &mut Source, more: usize) {
    // The source's channel fills, it stops reading its socket, the socket buffers fill, then
    // the server's queue for the connection: 1008. Drain at once afterwards, so the close
    // frame behind the buffered envelopes can still be written.
    server.wait_for(|s| s.slow_consumer_closes >= 1).await;
    source
        .receive_until("a slow-consumer disconnect", |s| {
            s.metrics.slow_consumer_disconnects.get() >= 1
        })
        .await;
    server
        .wait_for(|s| s.connections_open == 1 && s.connections_total >= 2)
        .await;
    let before = source.events.len();
    source.receive_at_least(before + more).await;
}

#[tokio::test]
async fn a_consumer_that_stops_draining_is_disconnected_as_slow_and_counted() {
    let server = Running::start_on(
        "127.0.0.1:0".parse().expect("an address"),
        SimulateConfig {
            max_pending: 64,
            ..simulate(traffic(7, 10_000, None))
        },
    )
    .await;
    let mut source = Source::start(firehose(server.addr, "sluice"), 1);
    source.receive_at_least(10).await;
    stall_until_slow_consumer_close(&server, &mut source, 100).await;
    assert!(source.metrics.slow_consumer_disconnects.get() >= 1);
    assert!(source.metrics.reconnects.get() >= 1);
    assert!(source.stop().await.is_ok());
    let stats = server.stop().await;
    assert!(stats.connections[0].slow_consumer);
}

#[tokio::test]
async fn a_revoked_token_is_refused_refreshed_and_the_stream_continues() {
    let server = Running::start_on(
        "127.0.0.1:0".parse().expect("an address"),
        SimulateConfig {
            max_pending: 64,
            ..simulate(traffic(8, 10_000, None))
        },
    )
    .await;
    let mut source = Source::start(firehose(server.addr, "sluice"), 1);
    source.receive_at_least(10).await;
    server.handle.revoke_tokens();
    // Revoking leaves open streams open; the reconnect after the 1008 presents the old token.
    stall_until_slow_consumer_close(&server, &mut source, 100).await;
    assert!(source.stop().await.is_ok());
    let stats = server.stop().await;
    assert!(stats.unauthorized >= 1, "{stats:?}");
    assert!(stats.tokens_issued >= 2, "{stats:?}");
}

#[tokio::test]
async fn two_sources_sharing_a_subscription_split_its_stream() {
    let generator = traffic(10, 3_000, Some(3_000));
    let server = Running::start(simulate(generator.clone())).await;
    let mut first = Source::start(firehose(server.addr, "shared"), 16);
    let mut second = Source::start(firehose(server.addr, "shared"), 16);
    let deadline = Instant::now() + PATIENCE;
    while first.events.len() + second.events.len() < 3_000 {
        assert!(Instant::now() < deadline, "timed out reading the stream");
        tokio::select! {
            () = first.receive() => {}
            () = second.receive() => {}
        }
    }
    assert!(!first.events.is_empty() && !second.events.is_empty());
    // Each got a part of the stream, in order; together, all of it, once.
    let encoded = |events: &[Event]| -> Vec<Bytes> {
        events.iter().map(|e| Bytes::from(encode_v1(e))).collect()
    };
    let positions: HashMap<Bytes, usize> = encoded(&reference(&generator, 3_000))
        .into_iter()
        .enumerate()
        .map(|(i, bytes)| (bytes, i))
        .collect();
    assert_eq!(
        positions.len(),
        3_000,
        "the stream has no duplicate envelopes"
    );
    let mut seen = vec![0u8; 3_000];
    for source in [&first, &second] {
        let at: Vec<usize> = encoded(&source.events)
            .iter()
            .map(|bytes| *positions.get(bytes).expect("an envelope of the stream"))
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "in stream order");
        for i in at {
            seen[i] += 1;
        }
    }
    assert!(seen.iter().all(|&n| n == 1), "disjoint and complete");
    assert!(first.stop().await.is_ok());
    assert!(second.stop().await.is_ok());
    server.stop().await;
}

#[tokio::test]
async fn one_source_with_three_connections_reads_its_subscription_once_over_three_sockets() {
    let generator = traffic(12, 0, Some(3_000));
    let server = Running::start(simulate(generator.clone())).await;
    let mut config = firehose(server.addr, "wide");
    config.connections = 3;
    let mut source = Source::start(config, 16);
    source.receive_at_least(3_000).await;
    let stats = server.handle.stats();
    assert_eq!(stats.connections_total, 3, "one WebSocket per connection");
    assert_eq!(stats.connections_open, 3);
    // Every envelope of the subscription once, whichever socket carried it.
    let mut got: Vec<Bytes> = source
        .events
        .iter()
        .map(|e| Bytes::from(encode_v1(e)))
        .collect();
    let mut sent: Vec<Bytes> = reference(&generator, 3_000)
        .iter()
        .map(|e| Bytes::from(encode_v1(e)))
        .collect();
    got.sort();
    sent.sort();
    assert_eq!(got.len(), 3_000);
    assert!(got == sent, "the subscription's envelopes, each once");
    assert_eq!(source.metrics.events.get(), 3_000);
    assert!(source.stop().await.is_ok());
    server.stop().await;
}

fn replay_records(path: &Path) -> Vec<Bytes> {
    let raw = std::fs::read(path).expect("the capture file exists");
    let data = if path.extension().is_some_and(|e| e == "gz") {
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut plain)
            .expect("a complete gzip stream");
        plain
    } else {
        raw
    };
    sluice_model::framing::frames(&data)
        .map(|(offset, record)| record.unwrap_or_else(|e| panic!("bad record at {offset}: {e}")))
        .collect()
}

#[tokio::test]
async fn capture_writes_files_that_replay_exactly_the_captured_envelopes() {
    let generator = traffic(11, 0, None);
    let expected: Vec<Bytes> = reference(&generator, 500)
        .iter()
        .map(|e| Bytes::from(encode_v1(e)))
        .collect();
    let server = Running::start(simulate(generator)).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    for name in ["capture.bin", "capture.bin.gz"] {
        let path = dir.path().join(name);
        let mut last = None;
        let summary = capture(
            firehose(server.addr, name),
            &path,
            Some(500),
            CancellationToken::new(),
            |progress| last = Some(progress.envelopes),
        )
        .await
        .expect("the capture succeeds");
        assert_eq!(summary.end, CaptureEnd::Limit);
        assert_eq!(summary.envelopes, 500);
        assert_eq!(last, Some(500));
        let records = replay_records(&path);
        assert_eq!(records.len() as u64, summary.envelopes);
        assert_eq!(records, expected, "{name}");
    }
    server.stop().await;
}
