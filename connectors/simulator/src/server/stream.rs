//! `GET /firehose/{subscription_id}`: the Traffic Controller's side of the Firehose.
//!
//! Each subscription id has one producer task and one [`Generator`]; its envelopes are dealt
//! round-robin to the connections that share the id, each through a queue of at most
//! `max_pending` envelopes. When the rate is limited, a connection whose queue is full is
//! closed with 1008, as the Traffic Controller closes slow consumers; at `rate = 0` the
//! producer waits for queue space instead (as fast as the consumers read, never closing them).
//! An envelope is never skipped: one that no connection can take waits for the next one.

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use sluice_model::reference::encode_v1;
use tokio::sync::Notify;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::time::{MissedTickBehavior, timeout};
use tracing::{info, warn};

use super::{ConnectionStats, Shared, auth, lock};
use crate::Generator;
use crate::source::{PACING_TICK, Pacer, UNPACED_BATCH};

/// Envelopes written to a socket before one flush.
const WRITE_BATCH: usize = 256;

/// How long a closing connection may take to write what was queued for it at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long to wait for a close frame to be written and answered before dropping the socket.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The Traffic Controller's reason for closing a slow consumer.
const SLOW_CONSUMER_REASON: &str = "Client did not read fast enough";

/// The connections sharing one subscription id, and the cursor that deals envelopes to them.
#[derive(Debug)]
pub(super) struct Subscription {
    id: Arc<str>,
    members: std::sync::Mutex<Members>,
    /// Wakes the producer when a connection joins.
    joined: Notify,
}

#[derive(Debug, Default)]
struct Members {
    list: Vec<Member>,
    next: usize,
}

#[derive(Debug)]
struct Member {
    counters: Arc<ConnectionCounters>,
    queue: mpsc::Sender<Bytes>,
    slow: tokio_util::sync::CancellationToken,
}

/// One connection's counters, kept after it closes for [`super::SimulateStats`].
#[derive(Debug)]
pub(super) struct ConnectionCounters {
    id: u64,
    subscription_id: Arc<str>,
    envelopes: AtomicU64,
    open: AtomicBool,
    slow_consumer: AtomicBool,
}

impl ConnectionCounters {
    pub(super) fn snapshot(&self) -> ConnectionStats {
        ConnectionStats {
            id: self.id,
            subscription_id: self.subscription_id.to_string(),
            envelopes: self.envelopes.load(Ordering::Relaxed),
            open: self.open.load(Ordering::Relaxed),
            slow_consumer: self.slow_consumer.load(Ordering::Relaxed),
        }
    }
}

impl Subscription {
    fn join(&self, member: Member) {
        lock(&self.members).list.push(member);
        self.joined.notify_one();
    }

    fn leave(&self, connection: u64) {
        lock(&self.members)
            .list
            .retain(|m| m.counters.id != connection);
    }

    fn is_empty(&self) -> bool {
        lock(&self.members).list.is_empty()
    }

    /// The next connection's queue, round-robin.
    fn next_member(&self) -> Option<(u64, mpsc::Sender<Bytes>)> {
        let mut members = lock(&self.members);
        if members.list.is_empty() {
            return None;
        }
        let i = members.next % members.list.len();
        members.next = i + 1;
        let member = &members.list[i];
        Some((member.counters.id, member.queue.clone()))
    }

    /// Queues `envelope` for the next connection that has room, closing the full ones as slow
    /// consumers; gives it back when no connection is left.
    fn offer(&self, shared: &Shared, mut envelope: Bytes) -> Result<(), Bytes> {
        let mut members = lock(&self.members);
        while !members.list.is_empty() {
            let i = members.next % members.list.len();
            match members.list[i].queue.try_send(envelope) {
                Ok(()) => {
                    members.next = i + 1;
                    return Ok(());
                }
                Err(TrySendError::Full(back)) => {
                    envelope = back;
                    let member = members.list.remove(i);
                    member.counters.slow_consumer.store(true, Ordering::Relaxed);
                    member.slow.cancel();
                    shared.slow_consumer_closes.fetch_add(1, Ordering::Relaxed);
                    shared.notify();
                    warn!(
                        subscription = %self.id,
                        connection = member.counters.id,
                        max_pending = shared.config.max_pending,
                        "Closing a slow consumer with 1008: its queue is full."
                    );
                }
                Err(TrySendError::Closed(back)) => {
                    envelope = back;
                    members.list.remove(i);
                }
            }
            members.next = i;
        }
        Err(envelope)
    }
}

/// `GET /firehose/{subscription_id}`: 401 before the upgrade without a valid bearer token.
pub(super) async fn firehose(
    State(shared): State<Arc<Shared>>,
    Path(subscription_id): Path<String>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let authorized =
        auth::bearer_token(&headers).is_some_and(|token| lock(&shared.tokens).accepts(token));
    if !authorized {
        shared.unauthorized.fetch_add(1, Ordering::Relaxed);
        shared.notify();
        warn!(subscription = %subscription_id, "Refused a stream: no valid bearer token.");
        let mut response = (
            StatusCode::UNAUTHORIZED,
            "You are not authorized. Error: Invalid authorization",
        )
            .into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    if shared.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    let subscription = subscription(&shared, &subscription_id);
    // axum forgets a connection once it is upgraded; this keeps `run` waiting for it.
    let task = shared.tasks.token();
    upgrade.on_upgrade(move |socket| async move {
        serve(socket, shared, subscription).await;
        drop(task);
    })
}

/// The subscription for `id`, created with its producer on first use.
fn subscription(shared: &Arc<Shared>, id: &str) -> Arc<Subscription> {
    let mut subscriptions = lock(&shared.subscriptions);
    if let Some(existing) = subscriptions.get(id) {
        return existing.clone();
    }
    let subscription = Arc::new(Subscription {
        id: id.into(),
        members: std::sync::Mutex::new(Members::default()),
        joined: Notify::new(),
    });
    subscriptions.insert(id.to_owned(), subscription.clone());
    shared
        .tasks
        .spawn(produce(shared.clone(), subscription.clone()));
    subscription
}

/// Makes one subscription's stream and deals it to its connections until shutdown.
async fn produce(shared: Arc<Shared>, subscription: Arc<Subscription>) {
    let config = &shared.config.generator;
    let shutdown = &shared.shutdown;
    let mut generator = Generator::new(config);
    let mut remaining = config.limit.unwrap_or(u64::MAX);
    let mut pacer = Pacer::new(config.rate);
    let mut ticks = tokio::time::interval(PACING_TICK);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut held: VecDeque<Bytes> = VecDeque::new();
    let mut batch = Vec::new();
    while !shutdown.is_cancelled() {
        if subscription.is_empty() {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                () = subscription.joined.notified() => {}
            }
            pacer.restart();
            continue;
        }
        if held.is_empty() {
            if remaining == 0 {
                // A finite stream has been dealt entirely; connections stay open, idle.
                shutdown.cancelled().await;
                return;
            }
            let due = if config.rate == 0 {
                UNPACED_BATCH as u64
            } else {
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return,
                    _ = ticks.tick() => pacer.due(Instant::now()),
                }
            };
            let count = due.min(remaining);
            generator.fill(count as usize, &mut batch);
            held.extend(batch.drain(..).map(|event| Bytes::from(encode_v1(&event))));
            pacer.sent(count);
            remaining -= count;
        }
        if config.rate == 0 {
            // Unpaced: wait for room in the next connection's queue.
            while let Some(envelope) = held.pop_front() {
                let Some((connection, queue)) = subscription.next_member() else {
                    held.push_front(envelope);
                    break;
                };
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return,
                    permit = queue.reserve() => match permit {
                        Ok(permit) => permit.send(envelope),
                        Err(_) => {
                            held.push_front(envelope);
                            subscription.leave(connection);
                        }
                    },
                }
            }
        } else {
            while let Some(envelope) = held.pop_front() {
                if let Err(back) = subscription.offer(&shared, envelope) {
                    held.push_front(back);
                    break;
                }
            }
        }
    }
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    SlowConsumer,
    Shutdown,
    ClientClosed,
}

/// One WebSocket connection: writes what its queue receives until it ends, then closes.
async fn serve(socket: WebSocket, shared: Arc<Shared>, subscription: Arc<Subscription>) {
    let id = shared.connections_total.fetch_add(1, Ordering::Relaxed) + 1;
    let counters = Arc::new(ConnectionCounters {
        id,
        subscription_id: subscription.id.clone(),
        envelopes: AtomicU64::new(0),
        open: AtomicBool::new(true),
        slow_consumer: AtomicBool::new(false),
    });
    lock(&shared.connections).push(counters.clone());
    let (queue, mut pending) = mpsc::channel(shared.config.max_pending.max(1));
    let slow = tokio_util::sync::CancellationToken::new();
    subscription.join(Member {
        counters: counters.clone(),
        queue,
        slow: slow.clone(),
    });
    shared.notify();
    info!(subscription = %subscription.id, connection = id, "Firehose client connected.");

    let (mut sink, mut stream) = socket.split();
    let mut reader = pin!(read_until_close(&mut stream));
    let mut reader_done = false;
    let end = loop {
        tokio::select! {
            biased;
            () = slow.cancelled() => break End::SlowConsumer,
            () = shared.shutdown.cancelled() => break End::Shutdown,
            () = &mut reader => {
                reader_done = true;
                break End::ClientClosed;
            }
            next = pending.recv() => {
                let Some(first) = next else {
                    break End::SlowConsumer;
                };
                tokio::select! {
                    biased;
                    () = slow.cancelled() => break End::SlowConsumer,
                    written = write_batch(&mut sink, first, &mut pending) => match written {
                        Ok(count) => counters.envelopes.fetch_add(count, Ordering::Relaxed),
                        Err(_) => break End::ClientClosed,
                    },
                };
            }
        }
    };
    // Stop taking envelopes at once; what is already queued stays readable for the drain.
    pending.close();
    subscription.leave(id);
    match end {
        End::SlowConsumer => {
            drop(pending);
            send_close(&mut sink, close_code::POLICY, SLOW_CONSUMER_REASON).await;
        }
        End::Shutdown => {
            // The producer deals envelopes that find this queue closed to the other
            // connections, so what every connection wrote is still a prefix of the stream.
            let drained = timeout(DRAIN_TIMEOUT, async {
                while let Some(first) = pending.recv().await {
                    let count = write_batch(&mut sink, first, &mut pending).await?;
                    counters.envelopes.fetch_add(count, Ordering::Relaxed);
                }
                Ok::<(), axum::Error>(())
            })
            .await;
            if matches!(drained, Ok(Ok(()))) {
                send_close(&mut sink, close_code::AWAY, "Server shutting down").await;
            }
        }
        End::ClientClosed => {
            // Flushes tungstenite's answer to the client's close frame.
            let _ = timeout(CLOSE_TIMEOUT, sink.close()).await;
        }
    }
    if !reader_done {
        // Wait for the client's answer to our close frame, briefly.
        let _ = timeout(CLOSE_TIMEOUT, &mut reader).await;
    }
    counters.open.store(false, Ordering::Relaxed);
    shared.notify();
    info!(
        subscription = %subscription.id,
        connection = id,
        envelopes = counters.envelopes.load(Ordering::Relaxed),
        ?end,
        "Firehose client disconnected."
    );
}

/// Reads (answering pings) until the client closes or the connection fails.
async fn read_until_close(stream: &mut SplitStream<WebSocket>) {
    while let Some(Ok(message)) = stream.next().await {
        if let Message::Close(_) = message {
            return;
        }
    }
}

/// Writes `first` and whatever else is queued (up to [`WRITE_BATCH`]) with one flush.
async fn write_batch(
    sink: &mut SplitSink<WebSocket, Message>,
    first: Bytes,
    pending: &mut mpsc::Receiver<Bytes>,
) -> Result<u64, axum::Error> {
    sink.feed(Message::Binary(first)).await?;
    let mut count = 1;
    while count < WRITE_BATCH {
        let Ok(next) = pending.try_recv() else {
            break;
        };
        sink.feed(Message::Binary(next)).await?;
        count += 1;
    }
    sink.flush().await?;
    Ok(count as u64)
}

async fn send_close(sink: &mut SplitSink<WebSocket, Message>, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    let _ = timeout(CLOSE_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
}
