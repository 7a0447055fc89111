//! The reconnect loop of the network sources (`firehose`, `rlp`): a UAA token, an attempt the
//! source makes with it, and what each failure costs, until a stream is open.
//!
//! - UAA refusing the credentials ends the loop: retrying cannot help. Any other token
//!   failure is counted and retried after the backoff.
//! - A server refusing the token (the source's [`Attempt::Refused`]) means it was revoked or
//!   expired early: it is dropped and the attempt made again at once with a fresh one. If the
//!   fresh token is refused too, the server does not accept this client (a missing scope,
//!   say): the source reports it, and the loop waits out the backoff, so that fixing the
//!   client in UAA heals the source. What then happens to the token is the source's
//!   [`AfterRefusal`].
//! - Anything else is counted and retried after the backoff.
//!
//! The backoff starts over only once a connection has stayed up for [`HEALTHY`] (30 s): a
//! server that accepts, sends a message (or an oversized frame) and hangs up is met with a
//! growing wait, not a reconnect every 100 ms. A lost connection goes through
//! [`Reconnect::lost`] (or [`Reconnect::back_off`]) before the next [`Reconnect::connect`].
//! Shutdown ends every wait at once.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use sluice_common::backoff::Backoff;
use sluice_common::uaa::{TokenSource, UaaError};
use tokio::time::Instant;

use crate::SourceContext;

/// How long a connection must have stayed up for the backoff to start over when it ends.
pub(crate) const HEALTHY: Duration = Duration::from_secs(30);

/// What one attempt came to.
pub(crate) enum Attempt<C> {
    /// The stream is open.
    Connected(C),
    /// The server refused the token.
    Refused(StatusCode),
    /// Anything else: network, handshake, an unexpected status. Retried after the backoff.
    Failed(String),
}

/// A refused token, as the loop hands it to the source to count and log.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Refusal {
    /// The token is dropped and the attempt made again at once with a fresh one.
    Refreshing { status: StatusCode },
    /// A fresh token was refused too: the attempt is made again after `delay`.
    Again { status: StatusCode, delay: Duration },
}

/// What a source does with a fresh token refused too, once the backoff has passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AfterRefusal {
    /// Tries it again; if it is refused then, it is replaced at once as the first one was
    /// (refresh, back off, refresh, back off, ...).
    KeepToken,
    /// Replaces it: until a stream opens, every refused token is replaced and backed off.
    FreshToken,
}

/// What a network source supplies to the loop: its attempt and how it reports refusals.
pub(crate) trait Endpoint: Sync {
    /// What an attempt opens (a WebSocket, a streaming response).
    type Connection: Send;

    /// One attempt with a UAA access token, up to an open stream.
    fn attempt(&self, token: &str) -> impl Future<Output = Attempt<Self::Connection>> + Send;

    /// Counts and logs a refused token.
    fn refused(&self, ctx: &SourceContext, refusal: Refusal);
}

/// One network source's reconnects: its token source, its backoff and where it logs them.
#[derive(Debug)]
pub(crate) struct Reconnect {
    ctx: SourceContext,
    tokens: TokenSource,
    backoff: Backoff,
    /// What the source connects to, as its log lines name it.
    url: Arc<str>,
    /// What a failed token request is logged under.
    token_failure_url: Arc<str>,
    after_refusal: AfterRefusal,
    /// The token in use was fetched because the one before it was refused.
    refreshed: bool,
    /// When the open connection (if any) was opened.
    connected_at: Option<Instant>,
    /// See [`HEALTHY`].
    healthy: Duration,
}

impl Reconnect {
    pub(crate) fn new(
        ctx: SourceContext,
        tokens: TokenSource,
        backoff: Backoff,
        url: Arc<str>,
        token_failure_url: Arc<str>,
        after_refusal: AfterRefusal,
    ) -> Reconnect {
        Reconnect {
            ctx,
            tokens,
            backoff,
            url,
            token_failure_url,
            after_refusal,
            refreshed: false,
            connected_at: None,
            healthy: HEALTHY,
        }
    }

    /// Sets how long a connection must stay up for the backoff to start over (tests).
    #[cfg(test)]
    pub(crate) fn healthy_after(mut self, healthy: Duration) -> Reconnect {
        self.healthy = healthy;
        self
    }

    /// Attempts connections until one opens (`Ok(Some)`, the source counted as connected),
    /// shutdown is cancelled (`Ok(None)`), or UAA refuses the credentials (`Err`, the source
    /// counted as disconnected).
    pub(crate) async fn connect<E: Endpoint>(
        &mut self,
        endpoint: &E,
    ) -> Result<Option<E::Connection>, UaaError> {
        while !self.ctx.shutdown.is_cancelled() {
            let attempt: Result<Attempt<E::Connection>, UaaError> = tokio::select! {
                biased;
                () = self.ctx.shutdown.cancelled() => return Ok(None),
                attempt = async {
                    let token = self.tokens.token().await?;
                    Ok(endpoint.attempt(&token).await)
                } => attempt,
            };
            match attempt {
                Ok(Attempt::Connected(connection)) => {
                    self.refreshed = false;
                    self.connected_at = Some(Instant::now());
                    self.ctx.set_connected(true);
                    return Ok(Some(connection));
                }
                Err(error) if !error.is_retriable() => {
                    self.ctx.set_connected(false);
                    return Err(error);
                }
                Err(error) => {
                    let url = self.token_failure_url.clone();
                    self.back_off(|ctx, delay| ctx.reconnecting(&url, &error, delay))
                        .await;
                }
                Ok(Attempt::Refused(status)) if !self.refreshed => {
                    self.tokens.invalidate().await;
                    self.refreshed = true;
                    endpoint.refused(&self.ctx, Refusal::Refreshing { status });
                }
                Ok(Attempt::Refused(status)) => {
                    match self.after_refusal {
                        AfterRefusal::KeepToken => self.refreshed = false,
                        AfterRefusal::FreshToken => self.tokens.invalidate().await,
                    }
                    self.back_off(|ctx, delay| {
                        endpoint.refused(ctx, Refusal::Again { status, delay });
                    })
                    .await;
                }
                Ok(Attempt::Failed(why)) => self.lost(&why).await,
            }
        }
        Ok(None)
    }

    /// Counts and logs a lost connection or a failed attempt, then waits out the backoff (or
    /// shutdown).
    pub(crate) async fn lost(&mut self, why: &(dyn fmt::Display + Sync)) {
        let url = self.url.clone();
        self.back_off(|ctx, delay| ctx.reconnecting(&url, why, delay))
            .await;
    }

    /// Takes the next delay, lets `report` count and log the failure with it, then waits it
    /// out (or shutdown).
    /// A connection that ended after staying up for [`HEALTHY`] starts the backoff over.
    pub(crate) async fn back_off(&mut self, report: impl FnOnce(&SourceContext, Duration)) {
        if let Some(opened) = self.connected_at.take()
            && opened.elapsed() >= self.healthy
        {
            self.backoff.reset();
        }
        let delay = self.backoff.next_delay();
        report(&self.ctx, delay);
        tokio::select! {
            () = self.ctx.shutdown.cancelled() => {}
            () = tokio::time::sleep(delay) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    //! The loop against a scripted endpoint and the Firehose test server's UAA. Each test
    //! sets up its own loop and script: the setups repeat on purpose, so that a script stays
    //! beside the tokens and refusals it leads to.
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::sync::atomic::Ordering;

    use sluice_common::tls::http_client;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::SourceOutput;
    use crate::firehose::test_server::{TestServer, drain};

    /// An endpoint that answers from a script and notes the tokens and refusals it saw.
    #[derive(Default)]
    struct Scripted {
        outcomes: Mutex<VecDeque<Attempt<&'static str>>>,
        tokens: Mutex<Vec<String>>,
        refusals: Mutex<Vec<&'static str>>,
    }

    impl Scripted {
        fn new(outcomes: impl IntoIterator<Item = Attempt<&'static str>>) -> Scripted {
            Scripted {
                outcomes: Mutex::new(outcomes.into_iter().collect()),
                ..Scripted::default()
            }
        }

        fn tokens(&self) -> Vec<String> {
            self.tokens.lock().expect("not poisoned").clone()
        }

        fn refusals(&self) -> Vec<&'static str> {
            self.refusals.lock().expect("not poisoned").clone()
        }
    }

    impl Endpoint for Scripted {
        type Connection = &'static str;

        async fn attempt(&self, token: &str) -> Attempt<&'static str> {
            self.tokens
                .lock()
                .expect("not poisoned")
                .push(token.to_owned());
            let next = self.outcomes.lock().expect("not poisoned").pop_front();
            next.expect("the script has an outcome left")
        }

        fn refused(&self, _ctx: &SourceContext, refusal: Refusal) {
            let what = match refusal {
                Refusal::Refreshing { .. } => "refreshing",
                Refusal::Again { .. } => "again",
            };
            self.refusals.lock().expect("not poisoned").push(what);
        }
    }

    /// A loop against the test server's UAA, which numbers its tokens from `token-0`.
    fn reconnect(uaa: &TestServer, after_refusal: AfterRefusal) -> Reconnect {
        let (output, _rx) = SourceOutput::channel(1);
        let ctx = SourceContext::new("test", output, CancellationToken::new());
        let uaa_url = format!("http://{}", uaa.addr);
        let http = http_client(false).expect("an HTTP client");
        let tokens = TokenSource::new(http, &uaa_url, "sluice", "secret");
        let tick = Duration::from_millis(1);
        let url: Arc<str> = "ws://test".into();
        Reconnect::new(
            ctx,
            tokens,
            Backoff::new(tick, tick),
            url.clone(),
            url,
            after_refusal,
        )
    }

    const REFUSED: StatusCode = StatusCode::UNAUTHORIZED;

    fn refusals_then_connected(n: usize) -> Vec<Attempt<&'static str>> {
        let mut script: Vec<_> = (0..n).map(|_| Attempt::Refused(REFUSED)).collect();
        script.push(Attempt::Connected("open"));
        script
    }

    #[tokio::test]
    async fn keep_token_refreshes_then_backs_off_with_the_same_token_in_turn() {
        let uaa = TestServer::start(Arc::new(|_, socket| Box::pin(drain(socket)))).await;
        let mut reconnect = reconnect(&uaa, AfterRefusal::KeepToken);
        let endpoint = Scripted::new(refusals_then_connected(4));
        let connected = reconnect.connect(&endpoint).await.expect("no UAA refusal");
        assert_eq!(connected, Some("open"));
        assert_eq!(
            endpoint.tokens(),
            ["token-0", "token-1", "token-1", "token-2", "token-2"]
        );
        assert_eq!(
            endpoint.refusals(),
            ["refreshing", "again", "refreshing", "again"]
        );
        assert!(reconnect.ctx.metrics.connected.load(Ordering::Relaxed));

        // A connection that opened starts the refusals over.
        let endpoint = Scripted::new(refusals_then_connected(1));
        reconnect.connect(&endpoint).await.expect("no UAA refusal");
        assert_eq!(endpoint.refusals(), ["refreshing"]);
    }

    #[tokio::test]
    async fn fresh_token_replaces_every_refused_token_and_backs_off_until_connected() {
        let uaa = TestServer::start(Arc::new(|_, socket| Box::pin(drain(socket)))).await;
        let mut reconnect = reconnect(&uaa, AfterRefusal::FreshToken);
        let endpoint = Scripted::new(refusals_then_connected(4));
        let connected = reconnect.connect(&endpoint).await.expect("no UAA refusal");
        assert_eq!(connected, Some("open"));
        assert_eq!(
            endpoint.tokens(),
            ["token-0", "token-1", "token-2", "token-3", "token-4"]
        );
        assert_eq!(
            endpoint.refusals(),
            ["refreshing", "again", "again", "again"]
        );

        let endpoint = Scripted::new(refusals_then_connected(1));
        reconnect.connect(&endpoint).await.expect("no UAA refusal");
        assert_eq!(endpoint.refusals(), ["refreshing"]);
    }

    #[tokio::test]
    async fn failed_attempts_are_counted_and_retried_with_the_same_token() {
        let uaa = TestServer::start(Arc::new(|_, socket| Box::pin(drain(socket)))).await;
        let mut reconnect = reconnect(&uaa, AfterRefusal::KeepToken);
        let endpoint = Scripted::new([
            Attempt::Failed("connection refused".to_owned()),
            Attempt::Failed("connection refused".to_owned()),
            Attempt::Connected("open"),
        ]);
        let connected = reconnect.connect(&endpoint).await.expect("no UAA refusal");
        assert_eq!(connected, Some("open"));
        assert_eq!(endpoint.tokens(), ["token-0", "token-0", "token-0"]);
        assert_eq!(reconnect.ctx.metrics.reconnects.get(), 2);
    }

    #[tokio::test]
    async fn the_backoff_starts_over_only_after_a_connection_stayed_up_long_enough() {
        let uaa = TestServer::start(Arc::new(|_, socket| Box::pin(drain(socket)))).await;
        let delay = |reconnect: &Reconnect| {
            reconnect
                .ctx
                .metrics
                .reconnect_delay_ms
                .load(Ordering::Relaxed)
        };
        let mut reconnect = reconnect(&uaa, AfterRefusal::KeepToken);
        reconnect.backoff = Backoff::new(Duration::from_millis(1), Duration::from_secs(1));
        let mut reconnect = reconnect.healthy_after(Duration::from_secs(3600));
        // Connections that open and at once end (after a message, say) back off further.
        for expected in [1, 2, 4, 8] {
            let endpoint = Scripted::new([Attempt::Connected("open")]);
            reconnect.connect(&endpoint).await.expect("no UAA refusal");
            reconnect.lost(&"closed").await;
            assert_eq!(delay(&reconnect), expected);
        }
        // One that stayed up long enough starts the backoff over.
        let mut reconnect = reconnect.healthy_after(Duration::ZERO);
        let endpoint = Scripted::new([Attempt::Connected("open")]);
        reconnect.connect(&endpoint).await.expect("no UAA refusal");
        reconnect.lost(&"closed").await;
        assert_eq!(delay(&reconnect), 1);
        assert_eq!(reconnect.ctx.metrics.reconnects.get(), 5);
    }

    #[tokio::test]
    async fn credentials_uaa_refuses_end_the_loop_and_shutdown_stops_it() {
        let uaa =
            TestServer::start_with(Arc::new(|_, socket| Box::pin(drain(socket))), 0, true).await;
        let mut reconnect = reconnect(&uaa, AfterRefusal::KeepToken);
        let endpoint = Scripted::new([]);
        let refused = reconnect.connect(&endpoint).await;
        assert!(
            matches!(refused, Err(UaaError::Refused { .. })),
            "{refused:?}"
        );
        assert!(endpoint.tokens().is_empty(), "no attempt without a token");
        assert!(!reconnect.ctx.metrics.connected.load(Ordering::Relaxed));

        reconnect.ctx.shutdown.cancel();
        assert_eq!(reconnect.connect(&endpoint).await.ok(), Some(None));
    }
}
