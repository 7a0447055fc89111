//! One Firehose WebSocket kept up: token, handshake, keep-alive, reconnects, and the raw frames
//! it carries. The source decodes them; `sluice capture` writes them to a file.
//!
//! The handshake is this source's attempt in the reconnect loop it shares with `rlp`
//! (`reconnect`); slow-consumer disconnects (close code 1008) are the Firehose's own.
//! A token the Firehose refuses (401) is replaced at once; if the fresh one is refused too,
//! that is logged as an error, counted, and the same token tried again after the backoff.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, Interval, MissedTickBehavior, interval_at, timeout, timeout_at};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{
    Connector, MaybeTlsStream, WebSocketStream, connect_async_tls_with_config,
};
use tracing::{debug, error, info};

use super::{FirehoseConfig, FirehoseError};
use sluice_common::backoff::Backoff;
use sluice_common::tls;
use sluice_common::uaa::TokenSource;

use crate::reconnect::{AfterRefusal, Attempt, Endpoint, Reconnect, Refusal};
use crate::{Component, SourceContext};

/// How long the TCP connect, TLS and WebSocket handshakes may take together.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a close frame may take to leave on shutdown before the socket is simply dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The first reconnection delay; doubles up to `max_backoff`.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One binary WebSocket message: one encoded `events.Envelope`, not yet decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirehoseFrame {
    /// The message payload, shared with the receive buffer (not copied).
    pub payload: Bytes,
    /// The message's number, counting every data message since the stream was created (1 is
    /// the first): with [`FirehoseStream::location`] it says where a bad record was.
    pub number: u64,
}

/// Where a message was received, for bad-record warnings:
/// `ws://host:port/firehose/id message #N`. Formatted only when a warning is written.
#[derive(Clone, Copy, Debug)]
pub struct MessageLocation<'a> {
    endpoint: &'a str,
    number: u64,
}

impl fmt::Display for MessageLocation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} message #{}", self.endpoint, self.number)
    }
}

/// The Firehose as a sequence of frames: connects on first use, and reconnects — with a fresh
/// token after a 401, with capped backoff after anything else — until shutdown.
///
/// Reports through its [`SourceContext`] (reconnects, slow-consumer disconnects, text
/// messages skipped, bytes received, connected) but never sends batches through it.
pub struct FirehoseStream {
    ctx: SourceContext,
    endpoint: Arc<str>,
    handshake: Handshake,
    reconnect: Reconnect,
    keepalive: Duration,
    connection: Option<Connection>,
    /// A disconnect seen by [`ready_frame`](Self::ready_frame), which cannot wait to handle it.
    pending: Option<Disconnect>,
    messages: u64,
}

impl fmt::Debug for FirehoseStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FirehoseStream")
            .field("endpoint", &self.endpoint)
            .field("connected", &self.connection.is_some())
            .field("messages", &self.messages)
            .finish_non_exhaustive()
    }
}

struct Connection {
    socket: Socket,
    ping: Interval,
    /// When anything last arrived (or when the reader last came back to listen).
    heard: Instant,
}

/// Why a connection ended.
#[derive(Debug)]
enum Disconnect {
    Closed(Option<CloseFrame>),
    Ended,
    Failed(WsError),
    Silent(Duration),
}

impl fmt::Display for Disconnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Disconnect::Closed(Some(frame)) => write!(
                f,
                "the server closed the stream with code {} ({})",
                u16::from(frame.code),
                frame.reason.as_str()
            ),
            Disconnect::Closed(None) => write!(f, "the server closed the stream"),
            Disconnect::Ended => write!(f, "the connection ended without a close frame"),
            Disconnect::Failed(e) => write!(f, "{e}"),
            Disconnect::Silent(quiet) => {
                write!(f, "nothing arrived for {quiet:?}, not even a pong")
            }
        }
    }
}

/// The WebSocket handshake with a token: the Firehose's connection attempt.
struct Handshake {
    request_url: String,
    endpoint: Arc<str>,
    client_id: String,
    connector: Connector,
    /// `max_frame_size` as the message and frame limits.
    limits: WebSocketConfig,
}

impl FirehoseStream {
    /// Checks the config and sets up TLS and the token source; connects on the first
    /// [`next_frame`](Self::next_frame).
    pub fn new(
        config: &FirehoseConfig,
        ctx: SourceContext,
    ) -> Result<FirehoseStream, FirehoseError> {
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(FirehoseError::Config(problems));
        }
        let http = tls::http_client(config.skip_tls_verify)?;
        let connector = if config.url.starts_with("wss://") {
            Connector::Rustls(Arc::new(tls::client_config(config.skip_tls_verify)?))
        } else {
            Connector::Plain
        };
        let endpoint: Arc<str> = config.endpoint().into();
        let tokens = TokenSource::new(
            http,
            &config.uaa_url,
            config.client_id.clone(),
            config.client_secret.clone(),
        );
        // A token that UAA would not give is logged under UAA's URL.
        let token_url = tokens.token_url().into();
        let reconnect = Reconnect::new(
            ctx.clone(),
            tokens,
            Backoff::new(INITIAL_BACKOFF, config.max_backoff.max(INITIAL_BACKOFF)),
            endpoint.clone(),
            token_url,
            AfterRefusal::KeepToken,
        );
        Ok(FirehoseStream {
            ctx,
            endpoint: endpoint.clone(),
            handshake: Handshake {
                request_url: config.firehose_url(),
                endpoint,
                client_id: config.client_id.clone(),
                connector,
                limits: {
                    let max = usize::try_from(config.max_frame_size.0).unwrap_or(usize::MAX);
                    WebSocketConfig::default()
                        .max_message_size(Some(max))
                        .max_frame_size(Some(max))
                },
            },
            reconnect,
            keepalive: config.keepalive,
            connection: None,
            pending: None,
            messages: 0,
        })
    }

    /// The WebSocket URL with its port spelled out, as logs name it.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Where message `number` was received, for a bad-record warning.
    pub fn location(&self, number: u64) -> MessageLocation<'_> {
        MessageLocation {
            endpoint: &self.endpoint,
            number,
        }
    }

    /// The next binary message, (re)connecting as often as it takes. `Ok(None)` once shutdown
    /// is cancelled (a close frame has then been sent); `Err` only when UAA refuses the
    /// credentials.
    pub async fn next_frame(&mut self) -> Result<Option<FirehoseFrame>, FirehoseError> {
        // Time spent away (the pipeline applying backpressure) is not silence on the line.
        if let Some(connection) = &mut self.connection {
            connection.heard = Instant::now();
        }
        loop {
            if self.ctx.shutdown.is_cancelled() {
                self.close().await;
                return Ok(None);
            }
            if let Some(disconnect) = self.pending.take() {
                self.disconnected(disconnect).await;
                continue;
            }
            let Some(connection) = &mut self.connection else {
                self.connect().await?;
                continue;
            };
            match connection.receive(&self.ctx, self.keepalive).await {
                Ok(Some(message)) => {
                    if let Some(frame) = self.accept(message) {
                        return Ok(Some(frame));
                    }
                }
                Ok(None) => {}
                Err(disconnect) => self.pending = Some(disconnect),
            }
        }
    }

    /// A binary message that has already arrived, without waiting: `None` when nothing is
    /// ready (or the connection just ended; the next [`next_frame`](Self::next_frame) deals
    /// with that).
    pub fn ready_frame(&mut self) -> Option<FirehoseFrame> {
        while self.pending.is_none() {
            let connection = self.connection.as_mut()?;
            // `StreamExt::next` is cancel-safe: dropping it unfinished loses nothing.
            match connection.socket.next().now_or_never()? {
                Some(Ok(message)) => {
                    if let Some(frame) = self.accept(message) {
                        return Some(frame);
                    }
                }
                Some(Err(e)) => self.pending = Some(Disconnect::Failed(e)),
                None => self.pending = Some(Disconnect::Ended),
            }
        }
        None
    }

    /// Sends a close frame (briefly: a dead peer does not hold up shutdown) and drops the
    /// connection.
    pub async fn close(&mut self) {
        if let Some(mut connection) = self.connection.take() {
            let frame = CloseFrame {
                code: CloseCode::Normal,
                reason: "sluice stopped reading".into(),
            };
            let closed = timeout(CLOSE_TIMEOUT, connection.socket.close(Some(frame))).await;
            debug!(source = %self.ctx.name, url = %self.endpoint, ?closed, "Closed the Firehose stream.");
            self.ctx.set_connected(false);
        }
    }

    /// Handles one message; returns it when it is a frame for the caller.
    fn accept(&mut self, message: Message) -> Option<FirehoseFrame> {
        let connection = self.connection.as_mut()?;
        connection.heard = Instant::now();
        match message {
            Message::Binary(payload) => {
                self.messages += 1;
                self.ctx.metrics.bytes.add(payload.len() as u64);
                Some(FirehoseFrame {
                    payload,
                    number: self.messages,
                })
            }
            Message::Text(_) => {
                self.messages += 1;
                self.ctx.skipped("non_binary_message");
                None
            }
            Message::Close(frame) => {
                self.pending = Some(Disconnect::Closed(frame));
                None
            }
            // Pongs only prove the line alive; pings are answered by tungstenite itself.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => None,
        }
    }

    /// Counts and logs a lost connection, then waits out the backoff (or shutdown).
    async fn disconnected(&mut self, disconnect: Disconnect) {
        self.connection = None;
        if let Disconnect::Failed(WsError::Capacity(error @ CapacityError::MessageTooLong { .. })) =
            &disconnect
        {
            // The message the server was sending is lost with the connection: a bad record.
            self.messages += 1;
            let location = self.location(self.messages);
            self.ctx
                .bad_record_reason(&location, "oversized_frame", error);
        }
        match &disconnect {
            Disconnect::Closed(Some(frame)) if frame.code == CloseCode::Policy => {
                let endpoint = &self.endpoint;
                self.reconnect
                    .back_off(|ctx, _| {
                        ctx.slow_consumer_disconnect(endpoint, frame.reason.as_str());
                        ctx.set_connected(false);
                        ctx.metrics.reconnects.incr();
                    })
                    .await;
            }
            _ => self.reconnect.lost(&disconnect).await,
        }
    }

    /// Attempts connections until one succeeds, shutdown is cancelled (`Ok` with no
    /// connection), or UAA refuses the credentials.
    async fn connect(&mut self) -> Result<(), FirehoseError> {
        let connected = self.reconnect.connect(&self.handshake).await;
        if let Some(socket) = connected.map_err(FirehoseError::Uaa)? {
            info!(source = %self.ctx.name, url = %self.endpoint, "Connected to the Firehose.");
            self.connection = Some(Connection::new(socket, self.keepalive));
        }
        Ok(())
    }
}

impl Endpoint for Handshake {
    type Connection = Socket;

    /// The WebSocket handshake with the token; a 401 is a refusal.
    async fn attempt(&self, token: &str) -> Attempt<Socket> {
        let mut request = match self.request_url.as_str().into_client_request() {
            Ok(request) => request,
            Err(e) => return Attempt::Failed(e.to_string()),
        };
        let Ok(bearer) = HeaderValue::from_str(&format!("bearer {token}")) else {
            return Attempt::Failed(
                "UAA sent a token that is not a valid HTTP header value".into(),
            );
        };
        request.headers_mut().insert(header::AUTHORIZATION, bearer);
        let handshake = connect_async_tls_with_config(
            request,
            Some(self.limits),
            true,
            Some(self.connector.clone()),
        );
        match timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Ok(Ok((socket, _response))) => Attempt::Connected(socket),
            Ok(Err(WsError::Http(response))) if response.status() == StatusCode::UNAUTHORIZED => {
                Attempt::Refused(response.status())
            }
            Ok(Err(WsError::Http(response))) => Attempt::Failed(format!(
                "the handshake was answered with HTTP {}",
                response.status()
            )),
            Ok(Err(e)) => Attempt::Failed(e.to_string()),
            Err(_) => Attempt::Failed(format!(
                "no WebSocket handshake within {HANDSHAKE_TIMEOUT:?}"
            )),
        }
    }

    fn refused(&self, ctx: &SourceContext, refusal: Refusal) {
        match refusal {
            Refusal::Refreshing { .. } => {
                debug!(source = %ctx.name, url = %self.endpoint, "The Firehose answered 401; fetching a fresh token.");
            }
            Refusal::Again { delay, .. } => {
                error!(
                    source = %ctx.name,
                    url = %self.endpoint,
                    client_id = %self.client_id,
                    retry_in = ?delay,
                    "The Firehose refused a fresh UAA token (HTTP 401): the client needs the doppler.firehose scope."
                );
                ctx.set_connected(false);
                ctx.metrics.reconnects.incr();
            }
        }
    }
}

impl Connection {
    fn new(socket: Socket, keepalive: Duration) -> Connection {
        let mut ping = interval_at(Instant::now() + keepalive, keepalive);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Connection {
            socket,
            ping,
            heard: Instant::now(),
        }
    }

    /// Waits for the next message, sending pings meanwhile. `Ok(None)`: a ping went out or
    /// shutdown was cancelled; the caller loops.
    async fn receive(
        &mut self,
        ctx: &SourceContext,
        keepalive: Duration,
    ) -> Result<Option<Message>, Disconnect> {
        let quiet = keepalive * 2;
        let deadline = self.heard + quiet;
        tokio::select! {
            biased;
            () = ctx.shutdown.cancelled() => Ok(None),
            message = self.socket.next() => match message {
                Some(Ok(message)) => Ok(Some(message)),
                Some(Err(e)) => Err(Disconnect::Failed(e)),
                None => Err(Disconnect::Ended),
            },
            () = tokio::time::sleep_until(deadline) => Err(Disconnect::Silent(quiet)),
            _ = self.ping.tick() => {
                match timeout_at(deadline, self.socket.send(Message::Ping(Bytes::new()))).await {
                    Ok(Ok(())) => Ok(None),
                    Ok(Err(e)) => Err(Disconnect::Failed(e)),
                    Err(_) => Err(Disconnect::Silent(quiet)),
                }
            }
        }
    }
}
