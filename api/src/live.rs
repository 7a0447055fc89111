//! Rollup rows and app events pushed to clients the moment the dataflow emits them.
//!
//! The graph's forward operators call [`LiveFeed::publish_rollups`] and
//! [`LiveFeed::publish_events`] on their worker threads with every batch they hand to the
//! sinks. Only apps somebody watches cost anything: a row is serialised once, for the app's
//! channel, and every open stream of that app gets the same bytes.
//!
//! Each app channel keeps its last [`RECENT`] items, so a client that reconnects with
//! `Last-Event-ID` gets what it missed. Event ids are `{feed}-{sequence}`: the feed part changes
//! with every process (and every rebuilt feed), so an id from another run is recognised and the
//! client is told to `reset` (re-query the store) instead of being silently shown a gap. A
//! client too slow to keep up with its channel is told the same.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream, StreamExt};
use rustc_hash::FxHashMap;
use serde::Serialize;
use sluice_model::records::{AppEvent, AppRollup};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::auth::Caller;
use crate::limits::ApiLimits;
use crate::store::MetricPoint;
use crate::{ApiError, ApiState};

/// Items an app channel keeps for clients that reconnect.
pub const RECENT: usize = 512;
/// How long an app channel outlives its last stream, so a reconnect can resume.
pub const RETAIN: Duration = Duration::from_secs(300);
/// How often an idle stream sends a comment, so proxies and clients know it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// What an app's stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    Rollup,
    AppEvent,
}

impl ItemKind {
    /// The SSE `event:` name.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemKind::Rollup => "rollup",
            ItemKind::AppEvent => "app_event",
        }
    }
}

/// One pushed item, serialised once for every stream of its app.
#[derive(Debug)]
pub struct LiveItem {
    pub sequence: u64,
    pub kind: ItemKind,
    pub json: String,
}

#[derive(Debug)]
struct AppChannel {
    sender: broadcast::Sender<Arc<LiveItem>>,
    /// Guards the sequence too, so an item is numbered, kept and sent as one step: a new
    /// subscriber sees every item either in `recent` or on its receiver, never both or neither.
    state: Mutex<ChannelState>,
}

#[derive(Debug)]
struct ChannelState {
    next_sequence: u64,
    recent: VecDeque<Arc<LiveItem>>,
    /// When its last stream closed; `None` while one is open.
    idle_since: Option<Instant>,
}

impl AppChannel {
    fn new() -> AppChannel {
        AppChannel {
            sender: broadcast::channel(RECENT).0,
            state: Mutex::new(ChannelState {
                next_sequence: 1,
                recent: VecDeque::with_capacity(RECENT),
                idle_since: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ChannelState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn push(&self, kind: ItemKind, json: String) {
        let mut state = self.lock();
        let item = Arc::new(LiveItem {
            sequence: state.next_sequence,
            kind,
            json,
        });
        state.next_sequence += 1;
        if state.recent.len() == RECENT {
            state.recent.pop_front();
        }
        state.recent.push_back(item.clone());
        // No receiver is fine: the item waits in `recent` for a reconnect.
        let _ = self.sender.send(item);
    }
}

/// The fan-out from the graph to the open streams; see the module doc.
#[derive(Debug)]
pub struct LiveFeed {
    /// This feed's part of every event id.
    feed_id: String,
    /// Apps with a channel: checked before any work, so an unwatched graph pays one load.
    watched: AtomicUsize,
    channels: RwLock<FxHashMap<String, Arc<AppChannel>>>,
    streams: AtomicUsize,
    /// Open streams per caller (a token's hash, or a client address), for the caps.
    callers: Mutex<FxHashMap<String, usize>>,
    /// Streams refused because `max_streams` were open.
    refused_overall: AtomicU64,
    /// Streams refused because their caller had `max_streams_per_caller` open.
    refused_per_caller: AtomicU64,
    closed: CancellationToken,
}

/// Why a stream was not opened (429).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamRefused {
    /// `api.limits.max_streams` are open.
    Overall(usize),
    /// The caller has `api.limits.max_streams_per_caller` open.
    PerCaller(usize),
}

impl From<StreamRefused> for ApiError {
    fn from(refused: StreamRefused) -> ApiError {
        let message = match refused {
            StreamRefused::Overall(max) => format!(
                "{max} live streams are open, the most this API serves \
                 (api.limits.max_streams): try again later"
            ),
            StreamRefused::PerCaller(max) => format!(
                "you have {max} live streams open, the most one caller may \
                 (api.limits.max_streams_per_caller): close one first"
            ),
        };
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, message)
    }
}

impl Default for LiveFeed {
    fn default() -> LiveFeed {
        LiveFeed::new()
    }
}

impl LiveFeed {
    pub fn new() -> LiveFeed {
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        LiveFeed {
            feed_id: format!("{:x}", started.as_micros()),
            watched: AtomicUsize::new(0),
            channels: RwLock::new(FxHashMap::default()),
            streams: AtomicUsize::new(0),
            callers: Mutex::new(FxHashMap::default()),
            refused_overall: AtomicU64::new(0),
            refused_per_caller: AtomicU64::new(0),
            closed: CancellationToken::new(),
        }
    }

    /// Rollup rows as the graph emits them (any worker thread).
    pub fn publish_rollups(&self, rows: &[AppRollup]) {
        self.publish(rows, ItemKind::Rollup, |row| &row.app_id, LivePoint::from);
    }

    /// App events as the graph emits them (any worker thread).
    pub fn publish_events(&self, events: &[AppEvent]) {
        self.publish(
            events,
            ItemKind::AppEvent,
            |event| &event.app_id,
            LiveEvent::from,
        );
    }

    fn publish<'a, T: 'a, J: Serialize + 'a>(
        &self,
        items: &'a [T],
        kind: ItemKind,
        app_id: impl Fn(&T) -> &str,
        view: impl Fn(&'a T) -> J,
    ) {
        if self.watched.load(Ordering::Relaxed) == 0 {
            return;
        }
        let channels = self
            .channels
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for item in items {
            if let Some(channel) = channels.get(app_id(item)) {
                match serde_json::to_string(&view(item)) {
                    Ok(json) => channel.push(kind, json),
                    Err(e) => tracing::warn!("Cannot serialise a live {}: {e}", kind.as_str()),
                }
            }
        }
    }

    /// Open streams, across apps.
    pub fn stream_count(&self) -> usize {
        self.streams.load(Ordering::Relaxed)
    }

    /// Streams refused so far: (because `max_streams` were open, because the caller had
    /// `max_streams_per_caller` open).
    pub fn refused_streams(&self) -> (u64, u64) {
        (
            self.refused_overall.load(Ordering::Relaxed),
            self.refused_per_caller.load(Ordering::Relaxed),
        )
    }

    fn callers(&self) -> MutexGuard<'_, FxHashMap<String, usize>> {
        self.callers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// [`LiveFeed::subscribe`] within the caps of `limits`: `caller` (a key naming the token or
    /// the client) may hold `max_streams_per_caller`, everybody together `max_streams`.
    /// Refusals are counted ([`LiveFeed::refused_streams`]).
    pub fn try_subscribe(
        self: &Arc<Self>,
        app_id: &str,
        last_event_id: Option<&str>,
        caller: &str,
        limits: &ApiLimits,
    ) -> Result<Subscription, StreamRefused> {
        {
            let mut callers = self.callers();
            let open: usize = callers.values().sum();
            if open >= limits.max_streams {
                self.refused_overall.fetch_add(1, Ordering::Relaxed);
                return Err(StreamRefused::Overall(limits.max_streams));
            }
            let mine = callers.entry(caller.to_owned()).or_insert(0);
            if *mine >= limits.max_streams_per_caller {
                self.refused_per_caller.fetch_add(1, Ordering::Relaxed);
                return Err(StreamRefused::PerCaller(limits.max_streams_per_caller));
            }
            *mine += 1;
        }
        let mut subscription = self.subscribe(app_id, last_event_id);
        subscription.caller = Some(caller.to_owned());
        Ok(subscription)
    }

    /// Ends every open stream (at shutdown, so the server can stop).
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// Opens a stream of `app_id` (canonical), resuming after `last_event_id` when it can.
    pub fn subscribe(self: &Arc<Self>, app_id: &str, last_event_id: Option<&str>) -> Subscription {
        let channel = self.channel(app_id);
        let mut state = channel.lock();
        state.idle_since = None;
        let receiver = channel.sender.subscribe();
        let resume_after = last_event_id.map(|id| self.parse_id(id));
        let (replay, reset) = match resume_after {
            None => (Vec::new(), false),
            Some(None) => (Vec::new(), true),
            Some(Some(after)) => {
                let oldest = state
                    .recent
                    .front()
                    .map_or(state.next_sequence, |item| item.sequence);
                if after + 1 < oldest || after >= state.next_sequence {
                    // Missed items are gone, or the id is from the future: start over.
                    (Vec::new(), true)
                } else {
                    let replay = state
                        .recent
                        .iter()
                        .filter(|item| item.sequence > after)
                        .cloned()
                        .collect();
                    (replay, false)
                }
            }
        };
        drop(state);
        self.streams.fetch_add(1, Ordering::Relaxed);
        Subscription {
            feed: self.clone(),
            channel,
            receiver,
            replay: replay.into(),
            reset,
            caller: None,
        }
    }

    fn channel(&self, app_id: &str) -> Arc<AppChannel> {
        if let Some(channel) = self
            .channels
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(app_id)
        {
            return channel.clone();
        }
        let mut channels = self
            .channels
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Channels nobody has watched for a while go, so memory follows what is watched.
        channels.retain(|_, channel| {
            channel.sender.receiver_count() > 0
                || channel
                    .lock()
                    .idle_since
                    .is_none_or(|since| since.elapsed() < RETAIN)
        });
        let channel = channels
            .entry(app_id.to_owned())
            .or_insert_with(|| Arc::new(AppChannel::new()))
            .clone();
        self.watched.store(channels.len(), Ordering::Relaxed);
        channel
    }

    fn event_id(&self, sequence: u64) -> String {
        format!("{}-{sequence}", self.feed_id)
    }

    /// The sequence an id of this feed names; `None` for an id of another feed or garbage.
    fn parse_id(&self, id: &str) -> Option<u64> {
        let (feed, sequence) = id.trim().rsplit_once('-')?;
        (feed == self.feed_id).then(|| sequence.parse().ok())?
    }
}

/// An open stream of one app.
#[derive(Debug)]
pub struct Subscription {
    feed: Arc<LiveFeed>,
    channel: Arc<AppChannel>,
    receiver: broadcast::Receiver<Arc<LiveItem>>,
    replay: VecDeque<Arc<LiveItem>>,
    reset: bool,
    /// Whose stream this is, for the per-caller cap (`None`: not counted).
    caller: Option<String>,
}

/// What a subscription yields.
#[derive(Debug, Clone)]
pub enum Delivery {
    Item(Arc<LiveItem>),
    /// Items were missed and cannot be replayed: re-query the store.
    Reset,
}

impl Subscription {
    /// The next delivery; `None` once the feed is closed.
    pub async fn next(&mut self) -> Option<Delivery> {
        if std::mem::take(&mut self.reset) {
            return Some(Delivery::Reset);
        }
        if let Some(item) = self.replay.pop_front() {
            return Some(Delivery::Item(item));
        }
        // Subscribing and the replay's snapshot happened under one lock: the receiver holds
        // exactly the items after the replay.
        let received = tokio::select! {
            () = self.feed.closed.cancelled() => return None,
            received = self.receiver.recv() => received,
        };
        match received {
            Ok(item) => Some(Delivery::Item(item)),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(Delivery::Reset),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// The SSE id of an item of this stream.
    pub fn event_id(&self, item: &LiveItem) -> String {
        self.feed.event_id(item.sequence)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.feed.streams.fetch_sub(1, Ordering::Relaxed);
        if let Some(caller) = self.caller.take() {
            let mut callers = self.feed.callers();
            if let Some(open) = callers.get_mut(&caller) {
                *open = open.saturating_sub(1);
                if *open == 0 {
                    callers.remove(&caller);
                }
            }
        }
        // This receiver still counts until the field drops after this: one means "only us".
        if self.channel.sender.receiver_count() <= 1 {
            self.channel.lock().idle_since = Some(Instant::now());
        }
    }
}

/// A rollup row as the stream sends it: the metrics endpoint's point, with its app and window.
#[derive(Debug, Serialize)]
pub struct LivePoint<'a> {
    pub app_id: &'a str,
    /// The window's width in seconds (60 for the minute).
    pub window: u32,
    #[serde(flatten)]
    pub point: MetricPoint,
}

impl<'a> From<&'a AppRollup> for LivePoint<'a> {
    fn from(row: &'a AppRollup) -> LivePoint<'a> {
        LivePoint {
            app_id: &row.app_id,
            window: row.window,
            point: MetricPoint::from(row),
        }
    }
}

/// An app event as the stream sends it: as the events endpoint does.
#[derive(Debug, Serialize)]
pub struct LiveEvent<'a> {
    pub app_id: &'a str,
    pub time_ns: i64,
    pub event: &'a str,
    pub source_type: &'a str,
    pub source_instance: &'a str,
    pub message: &'a str,
}

impl<'a> From<&'a AppEvent> for LiveEvent<'a> {
    fn from(event: &'a AppEvent) -> LiveEvent<'a> {
        LiveEvent {
            app_id: &event.app_id,
            time_ns: event.ts,
            event: &event.event,
            source_type: &event.source_type,
            source_instance: &event.source_instance,
            message: &event.message,
        }
    }
}

/// Whom the per-caller cap counts a stream against: the bearer token (hashed: the text is not
/// kept), or the client's address when there is none (`auth = "none"`).
fn caller_key(caller: &Caller, client: SocketAddr) -> String {
    match &caller.token {
        Some(token) => {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            token.hash(&mut hasher);
            format!("token:{:016x}", hasher.finish())
        }
        None => format!("address:{}", client.ip()),
    }
}

/// `GET /api/v1/apps/{id}/stream`.
pub async fn stream(
    State(state): State<ApiState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let app_id = match crate::params::app_id(&id) {
        Ok(app_id) => app_id,
        Err(e) => return e.into_response(),
    };
    // The stream outlives no token: at expiry it ends, and the client's reconnect must
    // authenticate again (and is told to sign in if it cannot).
    // (Requests pass within the clock-skew leeway after `exp`; a stream would end at once.)
    let until_expiry = caller.expires_at.map(|exp| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Duration::from_secs(exp).saturating_sub(now)
    });
    if until_expiry.is_some_and(|left| left.is_zero()) {
        return ApiError::unauthorized("the bearer token has expired: sign in again")
            .into_response();
    }
    if let Err(e) = state.auth.app_access(&caller, &app_id).await {
        return e.into_response();
    }
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok());
    let subscription = match state.live.try_subscribe(
        &app_id,
        last_event_id,
        &caller_key(&caller, client),
        &state.limits,
    ) {
        Ok(subscription) => subscription,
        Err(refused) => return ApiError::from(refused).into_response(),
    };
    let expired = async move {
        match until_expiry {
            Some(left) => tokio::time::sleep(left).await,
            None => std::future::pending().await,
        }
    };
    Sse::new(events(subscription).take_until(expired))
        .keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat"))
        .into_response()
}

fn events(subscription: Subscription) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(subscription, |mut subscription| async move {
        let event = match subscription.next().await? {
            Delivery::Item(item) => Event::default()
                .id(subscription.event_id(&item))
                .event(item.kind.as_str())
                .data(&item.json),
            Delivery::Reset => Event::default()
                .event("reset")
                .data("{\"reason\":\"items were missed: query the store again\"}"),
        };
        Some((Ok(event), subscription))
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = "6a3a2a1e-7b55-4c61-9d0b-0a6e4f9c1b2d";
    const OTHER: &str = "0b0e0c1a-1111-4222-8333-944455556666";

    fn event(app_id: &str, ts: i64) -> AppEvent {
        AppEvent {
            app_id: app_id.into(),
            ts,
            event: "crash".into(),
            source_type: "API".into(),
            source_instance: "0".into(),
            message: "App instance exited".into(),
        }
    }

    async fn next_item(subscription: &mut Subscription) -> Arc<LiveItem> {
        match subscription.next().await {
            Some(Delivery::Item(item)) => item,
            other => panic!("expected an item, got {other:?}"),
        }
    }

    fn time_of(item: &Arc<LiveItem>) -> i64 {
        let value: serde_json::Value = serde_json::from_str(&item.json).expect("json");
        value["time_ns"].as_i64().expect("time_ns")
    }

    #[tokio::test]
    async fn a_stream_gets_its_apps_items_in_order_and_no_other_apps() {
        let feed = Arc::new(LiveFeed::new());
        let mut subscription = feed.subscribe(APP, None);
        feed.publish_events(&[event(OTHER, 1), event(APP, 2), event(APP, 3)]);
        assert_eq!(time_of(&next_item(&mut subscription).await), 2);
        let third = next_item(&mut subscription).await;
        assert_eq!(time_of(&third), 3);
        assert_eq!(third.kind, ItemKind::AppEvent);
        assert_eq!(feed.stream_count(), 1);
        drop(subscription);
        assert_eq!(feed.stream_count(), 0);
    }

    #[tokio::test]
    async fn nothing_is_kept_for_apps_nobody_watches() {
        let feed = Arc::new(LiveFeed::new());
        feed.publish_events(&[event(APP, 1)]);
        // A later stream starts from what arrives after it, not from before.
        let mut subscription = feed.subscribe(APP, None);
        feed.publish_events(&[event(APP, 2)]);
        assert_eq!(time_of(&next_item(&mut subscription).await), 2);
    }

    #[tokio::test]
    async fn a_reconnect_with_last_event_id_gets_exactly_what_it_missed() {
        let feed = Arc::new(LiveFeed::new());
        let mut first = feed.subscribe(APP, None);
        feed.publish_events(&[event(APP, 1), event(APP, 2)]);
        let seen = next_item(&mut first).await;
        let last_id = first.event_id(&seen);
        drop(first);
        // Published while the client was away.
        feed.publish_events(&[event(APP, 3)]);
        let mut second = feed.subscribe(APP, Some(&last_id));
        feed.publish_events(&[event(APP, 4)]);
        let times = [
            time_of(&next_item(&mut second).await),
            time_of(&next_item(&mut second).await),
            time_of(&next_item(&mut second).await),
        ];
        assert_eq!(times, [2, 3, 4]);
    }

    #[tokio::test]
    async fn an_id_of_another_run_or_too_old_asks_the_client_to_reset() {
        let feed = Arc::new(LiveFeed::new());
        let mut subscription = feed.subscribe(APP, Some("1234-5"));
        assert!(matches!(subscription.next().await, Some(Delivery::Reset)));

        let mut watcher = feed.subscribe(APP, None);
        let events: Vec<AppEvent> = (0..RECENT as i64 + 10).map(|t| event(APP, t)).collect();
        feed.publish_events(&events[..1]);
        let first = next_item(&mut watcher).await;
        let first_id = watcher.event_id(&first);
        feed.publish_events(&events[1..]);
        // The item after `first` has left the recent window.
        let mut late = feed.subscribe(APP, Some(&first_id));
        assert!(matches!(late.next().await, Some(Delivery::Reset)));
    }

    #[tokio::test]
    async fn a_stream_that_falls_behind_is_told_to_reset() {
        let feed = Arc::new(LiveFeed::new());
        let mut subscription = feed.subscribe(APP, None);
        let events: Vec<AppEvent> = (0..RECENT as i64 * 2).map(|t| event(APP, t)).collect();
        feed.publish_events(&events);
        assert!(matches!(subscription.next().await, Some(Delivery::Reset)));
        // Then it carries on with what is still there.
        assert!(matches!(subscription.next().await, Some(Delivery::Item(_))));
    }

    #[tokio::test]
    async fn streams_are_capped_per_caller_and_overall_and_refusals_counted() {
        let feed = Arc::new(LiveFeed::new());
        let limits = ApiLimits {
            max_streams: 3,
            max_streams_per_caller: 2,
            ..ApiLimits::default()
        };
        let a1 = feed.try_subscribe(APP, None, "a", &limits).expect("first");
        let a2 = feed
            .try_subscribe(OTHER, None, "a", &limits)
            .expect("second");
        assert_eq!(
            feed.try_subscribe(APP, None, "a", &limits).err(),
            Some(StreamRefused::PerCaller(2))
        );
        let b1 = feed
            .try_subscribe(APP, None, "b", &limits)
            .expect("b's first");
        assert_eq!(
            feed.try_subscribe(APP, None, "c", &limits).err(),
            Some(StreamRefused::Overall(3))
        );
        assert_eq!(feed.refused_streams(), (1, 1));
        // A closed stream makes room again, for its caller and overall.
        drop(a1);
        let a3 = feed
            .try_subscribe(APP, None, "a", &limits)
            .expect("room again");
        assert_eq!(feed.stream_count(), 3);
        drop((a2, a3, b1));
        assert_eq!(feed.stream_count(), 0);
        assert!(
            feed.callers().is_empty(),
            "no caller is remembered without streams"
        );
        let error = ApiError::from(StreamRefused::PerCaller(2));
        assert_eq!(error.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(error.message.contains("api.limits.max_streams_per_caller"));
    }

    #[tokio::test]
    async fn closing_the_feed_ends_every_stream() {
        let feed = Arc::new(LiveFeed::new());
        let mut subscription = feed.subscribe(APP, None);
        feed.close();
        assert!(subscription.next().await.is_none());
    }
}
