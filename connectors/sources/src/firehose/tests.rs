//! The source and its connection layer against a scripted in-test server. Whole-program
//! behaviour against `sluice simulate` is in `tests/firehose.rs`.
//!
//! Each test sets up its own server and source in full rather than through a shared fixture:
//! the setups repeat on purpose, so that what a test scripts stays beside what it asserts.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message};
use bytes::Bytes;
use sluice_model::Event;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::test_server::{TestServer, drain, events, send_events};
use super::*;
use sluice_common::config::ByteSize;
use sluice_common::uaa::UaaError;

use crate::Component;

use crate::{SourceBatch, SourceOutput};

const WAIT: Duration = Duration::from_secs(10);

fn context(capacity: usize) -> (SourceContext, mpsc::Receiver<SourceBatch>) {
    let (output, rx) = SourceOutput::channel(capacity);
    (
        SourceContext::new("cf", output, CancellationToken::new()),
        rx,
    )
}

async fn receive(rx: &mut mpsc::Receiver<SourceBatch>, count: usize) -> Vec<SourceBatch> {
    let mut batches = Vec::new();
    let mut got = 0;
    while got < count {
        let batch = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("events within the deadline")
            .expect("the source is still running");
        got += batch.events.len();
        batches.push(batch);
    }
    batches
}

async fn until(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn config_applies_defaults_and_rejects_unknown_keys() {
    let config: FirehoseConfig = serde_json::from_str(
        r#"{"url":"wss://doppler.example.com","subscription_id":"sluice",
            "uaa_url":"https://uaa.example.com","client_id":"sluice","client_secret":"s3cret"}"#,
    )
    .expect("minimal config");
    assert_eq!(config.keepalive, Duration::from_secs(15));
    assert_eq!(config.max_backoff, Duration::from_secs(30));
    assert_eq!(config.batch_size, 1024);
    assert!(!config.skip_tls_verify);
    assert_eq!(config.problems(), []);
    assert_eq!(
        config.endpoint(),
        "wss://doppler.example.com:443/firehose/sluice"
    );
    assert!(
        !format!("{config:?}").contains("s3cret"),
        "Debug hides the secret"
    );

    let unknown = serde_json::from_str::<FirehoseConfig>(
        r#"{"url":"ws://a","subscription_id":"s","uaa_url":"http://u","client_id":"c",
            "client_secret":"","keepalives":"1s"}"#,
    )
    .expect_err("unknown key");
    assert!(unknown.to_string().contains("keepalives"), "{unknown}");
    let bad_duration = serde_json::from_str::<FirehoseConfig>(
        r#"{"url":"ws://a","subscription_id":"s","uaa_url":"http://u","client_id":"c",
            "client_secret":"","keepalive":"soon"}"#,
    )
    .expect_err("bad duration");
    assert!(bad_duration.to_string().contains("soon"), "{bad_duration}");
}

#[test]
fn validate_reports_every_bad_value_by_key() {
    let config = FirehoseConfig {
        url: "https://doppler.example.com".into(),
        subscription_id: "a/b".into(),
        uaa_url: "uaa.example.com".into(),
        client_id: String::new(),
        client_secret: String::new(),
        skip_tls_verify: false,
        keepalive: Duration::ZERO,
        max_backoff: Duration::from_secs(1),
        batch_size: 0,
        connections: 0,
        max_frame_size: ByteSize(16),
    };
    let keys: Vec<_> = config.problems().into_iter().map(|e| e.key).collect();
    assert_eq!(
        keys,
        [
            "url",
            "uaa_url",
            "subscription_id",
            "client_id",
            "keepalive",
            "batch_size",
            "connections",
            "max_frame_size"
        ]
    );
}

#[tokio::test]
async fn binary_messages_arrive_decoded_and_text_and_garbage_are_counted() {
    let sent = events(0..50);
    let script_events = sent.clone();
    let server = TestServer::start(Arc::new(move |_, mut socket| {
        let events = script_events.clone();
        Box::pin(async move {
            send_events(&mut socket, &events[..20]).await;
            let _ = socket.send(Message::Text("hello".into())).await;
            let _ = socket
                .send(Message::Binary(Bytes::from_static(b"\x0a\x03ab")))
                .await;
            send_events(&mut socket, &events[20..]).await;
            drain(socket).await;
        })
    }))
    .await;
    let (ctx, mut rx) = context(64);
    let metrics = ctx.metrics.clone();
    let shutdown = ctx.shutdown.clone();
    let source = tokio::spawn(run(server.config(), ctx));

    let batches = receive(&mut rx, sent.len()).await;
    let received: Vec<Event> = batches.into_iter().flat_map(|b| b.events).collect();
    assert_eq!(received, sent);
    assert_eq!(metrics.skipped.get("non_binary_message"), 1);
    assert_eq!(metrics.bad_records.total(), 1);
    assert_eq!(metrics.events.get(), 50);
    assert!(metrics.connected.load(Ordering::Relaxed));
    assert_eq!(metrics.reconnects.get(), 0);

    shutdown.cancel();
    let stopped = tokio::time::timeout(WAIT, source).await.expect("stops");
    assert!(matches!(stopped, Ok(Ok(()))), "{stopped:?}");
}

#[tokio::test]
async fn batches_never_exceed_batch_size() {
    let sent = events(0..25);
    let script_events = sent.clone();
    let server = TestServer::start(Arc::new(move |_, mut socket| {
        let events = script_events.clone();
        Box::pin(async move {
            send_events(&mut socket, &events).await;
            drain(socket).await;
        })
    }))
    .await;
    let (ctx, mut rx) = context(64);
    let mut config = server.config();
    config.batch_size = 4;
    tokio::spawn(run(config, ctx));
    let batches = receive(&mut rx, sent.len()).await;
    assert!(batches.iter().all(|b| (1..=4).contains(&b.events.len())));
    let received: Vec<Event> = batches.into_iter().flat_map(|b| b.events).collect();
    assert_eq!(received, sent);
}

#[tokio::test]
async fn the_location_of_a_message_names_the_endpoint_and_number() {
    let server = TestServer::start(Arc::new(|_, socket| Box::pin(drain(socket)))).await;
    let (ctx, _rx) = context(1);
    let stream = FirehoseStream::new(&server.config(), ctx).expect("valid config");
    assert_eq!(
        stream.location(7).to_string(),
        format!("ws://{}/firehose/sub message #7", server.addr)
    );
}

#[tokio::test]
async fn a_401_is_retried_at_once_with_a_fresh_token() {
    let server = TestServer::start_with(
        Arc::new(|_, mut socket| {
            Box::pin(async move {
                send_events(&mut socket, &events(0..3)).await;
                drain(socket).await;
            })
        }),
        1,
        false,
    )
    .await;
    let (ctx, mut rx) = context(8);
    let metrics = ctx.metrics.clone();
    tokio::spawn(run(server.config(), ctx));
    receive(&mut rx, 3).await;
    assert_eq!(server.state.token_requests.load(Ordering::SeqCst), 2);
    assert_eq!(
        metrics.reconnects.get(),
        0,
        "a token refresh is no reconnect"
    );
}

#[tokio::test]
async fn a_fresh_token_refused_too_is_retried_after_a_backoff() {
    let server = TestServer::start_with(
        Arc::new(|_, mut socket| {
            Box::pin(async move {
                send_events(&mut socket, &events(0..1)).await;
                drain(socket).await;
            })
        }),
        2,
        false,
    )
    .await;
    let (ctx, mut rx) = context(8);
    let metrics = ctx.metrics.clone();
    tokio::spawn(run(server.config(), ctx));
    receive(&mut rx, 1).await;
    // 401, fresh token, 401 again: logged, counted, retried with the fresh token.
    assert_eq!(server.state.token_requests.load(Ordering::SeqCst), 2);
    assert_eq!(metrics.reconnects.get(), 1);
}

#[tokio::test]
async fn refused_credentials_stop_the_source_naming_uaa_and_the_client() {
    let server =
        TestServer::start_with(Arc::new(|_, socket| Box::pin(drain(socket))), 0, true).await;
    let (ctx, _rx) = context(1);
    let result = tokio::time::timeout(WAIT, run(server.config(), ctx))
        .await
        .expect("the source gives up at once");
    let error = result.expect_err("refused");
    assert!(matches!(
        error,
        FirehoseError::Uaa(UaaError::Refused { .. })
    ));
    let message = error.to_string();
    assert!(
        message.contains(&format!("http://{}/oauth/token", server.addr)),
        "{message}"
    );
    assert!(message.contains("'sluice'"), "{message}");
}

#[tokio::test]
async fn a_policy_close_counts_a_slow_consumer_disconnect_and_reconnects() {
    let server = TestServer::start(Arc::new(|n, mut socket| {
        Box::pin(async move {
            send_events(&mut socket, &events(n..n + 1)).await;
            if n == 0 {
                let close = CloseFrame {
                    code: 1008,
                    reason: "Client did not respond to ping before keep-alive timeout expired."
                        .into(),
                };
                let _ = socket.send(Message::Close(Some(close))).await;
            }
            drain(socket).await;
        })
    }))
    .await;
    let (ctx, mut rx) = context(8);
    let metrics = ctx.metrics.clone();
    tokio::spawn(run(server.config(), ctx));
    let received: Vec<Event> = receive(&mut rx, 2)
        .await
        .into_iter()
        .flat_map(|b| b.events)
        .collect();
    assert_eq!(received, events(0..2));
    assert_eq!(metrics.slow_consumer_disconnects.get(), 1);
    assert_eq!(metrics.reconnects.get(), 1);
}

#[tokio::test]
async fn a_silent_connection_is_replaced() {
    let server = TestServer::start(Arc::new(|n, mut socket| {
        Box::pin(async move {
            if n == 0 {
                // Never read, so never answer a ping: the line looks dead from the client.
                std::future::pending::<()>().await;
            }
            send_events(&mut socket, &events(0..1)).await;
            drain(socket).await;
        })
    }))
    .await;
    let (ctx, mut rx) = context(8);
    let metrics = ctx.metrics.clone();
    let mut config = server.config();
    config.keepalive = Duration::from_millis(200);
    tokio::spawn(run(config, ctx));
    receive(&mut rx, 1).await;
    assert!(metrics.reconnects.get() >= 1);
    assert!(server.state.connections.load(Ordering::SeqCst) >= 2);
}

#[tokio::test]
async fn shutdown_sends_a_close_frame_and_returns_ok() {
    let (closed_tx, mut closed_rx) = mpsc::channel(1);
    let server = TestServer::start(Arc::new(move |_, mut socket| {
        let closed_tx = closed_tx.clone();
        Box::pin(async move {
            send_events(&mut socket, &events(0..1)).await;
            while let Some(Ok(message)) = socket.recv().await {
                if let Message::Close(frame) = message {
                    let _ = closed_tx.send(frame.map(|f| f.code)).await;
                }
            }
        })
    }))
    .await;
    let (ctx, mut rx) = context(8);
    let shutdown = ctx.shutdown.clone();
    let metrics = ctx.metrics.clone();
    let source = tokio::spawn(run(server.config(), ctx));
    receive(&mut rx, 1).await;
    shutdown.cancel();
    let stopped = tokio::time::timeout(WAIT, source).await.expect("stops");
    assert!(matches!(stopped, Ok(Ok(()))), "{stopped:?}");
    let code = tokio::time::timeout(WAIT, closed_rx.recv())
        .await
        .expect("a close frame reaches the server");
    assert_eq!(code, Some(Some(1000)));
    until("disconnected", || {
        !metrics.connected.load(Ordering::Relaxed)
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_firehose_is_retried_and_counted() {
    // Bind then drop a listener: nothing listens on that port any more.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    drop(listener);
    let uaa = TestServer::start(Arc::new(|_, socket| Box::pin(drain(socket)))).await;
    let mut config = uaa.config();
    config.url = format!("ws://{addr}");
    config.max_backoff = Duration::from_millis(20);
    let (ctx, _rx) = context(1);
    let metrics = ctx.metrics.clone();
    let shutdown = ctx.shutdown.clone();
    let source = tokio::spawn(run(config, ctx));
    until("three reconnects", || metrics.reconnects.get() >= 3).await;
    assert!(!metrics.connected.load(Ordering::Relaxed));
    shutdown.cancel();
    let stopped = tokio::time::timeout(WAIT, source).await.expect("stops");
    assert!(matches!(stopped, Ok(Ok(()))), "{stopped:?}");
}

/// A Firehose that sends one good message on every connection and then `then` does its
/// worst: the source must count it and back off further each time, never reconnecting every
/// 100 ms for ever.
async fn hostile_after_one_message(oversized: bool) {
    let server = TestServer::start(Arc::new(move |_, mut socket| {
        Box::pin(async move {
            send_events(&mut socket, &events(0..1)).await;
            if oversized {
                let frame = Bytes::from(vec![0x0a; 8 << 10]);
                let _ = socket.send(Message::Binary(frame)).await;
                drain(socket).await;
            }
            // Otherwise the socket is dropped: the TCP connection ends without a close frame.
        })
    }))
    .await;
    let (ctx, mut rx) = context(64);
    let metrics = ctx.metrics.clone();
    let shutdown = ctx.shutdown.clone();
    let mut config = server.config();
    config.max_backoff = Duration::from_secs(60);
    config.max_frame_size = ByteSize(4 << 10);
    let source = tokio::spawn(run(config, ctx));

    // Each connection delivered its message, and still the waits grew: 100, 200, 400 ms...
    let state = server.state.clone();
    until("a fourth connection", || {
        state.connections.load(Ordering::SeqCst) >= 4
    })
    .await;
    assert!(
        metrics.reconnect_delay_ms.load(Ordering::Relaxed) >= 400,
        "the backoff started over after a message: {} ms",
        metrics.reconnect_delay_ms.load(Ordering::Relaxed)
    );
    let received = receive(&mut rx, 3).await;
    assert!(received.iter().all(|b| b.events.len() == 1));
    if oversized {
        assert!(metrics.bad_records.get("oversized_frame") >= 3);
    } else {
        assert_eq!(metrics.bad_records.total(), 0);
    }
    shutdown.cancel();
    let stopped = tokio::time::timeout(WAIT, source).await.expect("stops");
    assert!(matches!(stopped, Ok(Ok(()))), "{stopped:?}");
}

#[tokio::test]
async fn an_oversized_frame_after_a_good_message_is_a_bad_record_and_backs_off() {
    hostile_after_one_message(true).await;
}

#[tokio::test]
async fn an_abrupt_close_after_a_good_message_backs_off() {
    hostile_after_one_message(false).await;
}

/// Events whose metric names are `size` bytes long, so each frame is about that big.
fn big_events(n: u64, size: usize) -> Vec<Event> {
    let mut sent = events(0..n);
    for event in &mut sent {
        if let sluice_model::Payload::Value(metric) = &mut event.payload {
            metric.name = "x".repeat(size).into();
        }
    }
    sent
}

#[tokio::test]
async fn big_frames_wait_for_room_in_the_channel_s_byte_budget() {
    const BUDGET: u64 = 1 << 20;
    const FRAME: usize = 200 << 10;
    let sent = big_events(40, FRAME);
    let script_events = sent.clone();
    let server = TestServer::start(Arc::new(move |_, mut socket| {
        let events = script_events.clone();
        Box::pin(async move {
            send_events(&mut socket, &events).await;
            drain(socket).await;
        })
    }))
    .await;
    // Room for 64 batches, but only for 1 MiB: about five of these frames.
    let (output, mut rx) = SourceOutput::channel(64);
    let output = output.max_bytes(BUDGET);
    let ctx = SourceContext::new("cf", output.clone(), CancellationToken::new());
    let metrics = ctx.metrics.clone();
    let shutdown = ctx.shutdown.clone();
    let source = tokio::spawn(run(server.config(), ctx));

    // Nothing is read yet: the source fills the budget and waits.
    until("the budget to fill", || output.queued_bytes() > BUDGET / 2).await;
    let queued_events = metrics.events.get();
    assert!(
        queued_events <= BUDGET / FRAME as u64,
        "{queued_events} big events queued in a 1 MiB budget"
    );
    assert!(metrics.queued_bytes.load(Ordering::Relaxed) as u64 <= BUDGET);

    // Reading makes room; every event arrives, and the queue never held more than the budget.
    let mut received = Vec::new();
    while received.len() < sent.len() {
        assert!(output.queued_bytes() <= BUDGET);
        let batch = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("events within the deadline")
            .expect("the source is running");
        assert!(batch.bytes >= batch.events.len() * FRAME);
        received.extend(batch.events);
    }
    assert_eq!(received, sent);
    until("the queue to empty", || output.queued_bytes() == 0).await;
    assert_eq!(metrics.queued_bytes.load(Ordering::Relaxed), 0);

    shutdown.cancel();
    let stopped = tokio::time::timeout(WAIT, source).await.expect("stops");
    assert!(matches!(stopped, Ok(Ok(()))), "{stopped:?}");
}

/// The peak resident memory of this process, from `/proc/self/status` (Linux).
fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// A soak, not a default test (it moves 3 GiB over loopback):
/// `cargo test -p sluice-sources --lib -- --ignored --exact firehose::tests::soak_big_frames_keep_memory_bounded --nocapture`.
/// A Firehose sends 200 log envelopes of 15 MiB to a source with the default byte budget,
/// read by a consumer slower than the socket; the process's peak RSS must stay far below
/// what the frames add up to.
#[tokio::test]
#[ignore = "a soak: moves 3 GiB"]
async fn soak_big_frames_keep_memory_bounded() {
    const FRAMES: u64 = 200;
    const SIZE: usize = 15 << 20;
    let event = Event {
        timestamp: 1_700_000_000_000_000_000,
        header: sluice_model::event::Header {
            origin: "soak".into(),
            ..sluice_model::event::Header::default()
        },
        payload: sluice_model::Payload::Log(sluice_model::event::LogMessage {
            names: None,
            message: Bytes::from(vec![b'x'; SIZE]),
            message_type: sluice_model::event::MessageType::Out,
            timestamp: 1_700_000_000_000_000_000,
            app_id: "app".into(),
            source_type: "APP/PROC/WEB".into(),
            source_instance: "0".into(),
        }),
    };
    let frame = Bytes::from(sluice_model::reference::encode_v1(&event));
    let server = TestServer::start(Arc::new(move |_, mut socket| {
        let frame = frame.clone();
        Box::pin(async move {
            for _ in 0..FRAMES {
                if socket.send(Message::Binary(frame.clone())).await.is_err() {
                    return;
                }
            }
            drain(socket).await;
        })
    }))
    .await;
    let before = peak_rss_mib().expect("Linux");
    let (output, mut rx) = SourceOutput::channel(64);
    let ctx = SourceContext::new("cf", output.clone(), CancellationToken::new());
    let shutdown = ctx.shutdown.clone();
    let source = tokio::spawn(run(server.config(), ctx));
    // Nothing is read until the budget is nearly full: the worst case for the queue.
    until("the byte budget to fill", || {
        output.queued_bytes() > crate::DEFAULT_CHANNEL_BYTES - 2 * SIZE as u64
    })
    .await;
    let mut received = 0;
    let mut most_queued = output.queued_bytes();
    while received < FRAMES {
        let batch = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .expect("events within a minute")
            .expect("the source is running");
        most_queued = most_queued.max(output.queued_bytes());
        received += batch.events.len() as u64;
        // A dataflow slower than the socket: the queue fills up to its budget.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = peak_rss_mib().expect("Linux");
    println!(
        "{FRAMES} frames of {} MiB: peak RSS {before} MiB -> {after} MiB; most queued {} MiB",
        SIZE >> 20,
        most_queued >> 20
    );
    assert!(most_queued <= crate::DEFAULT_CHANNEL_BYTES);
    assert!(
        after - before < 512,
        "peak RSS grew by {} MiB",
        after - before
    );
    shutdown.cancel();
    let _ = tokio::time::timeout(WAIT, source).await;
}
