//! A Cloud Controller and UAA stand-in (SPEC §11) served by a test: a token for any client,
//! and `/v3/apps?include=space.organization` paged [`PAGE_SIZE`] apps a page through
//! `pagination.next`, with `included` spaces and orgs. The test says which listing is served
//! and can make it fail, revoke a token or answer slowly.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

/// The apps the stand-in pages through.
pub const PAGE_SIZE: usize = 4;

/// An app as the Cloud Controller lists it, and as the `app` table must hold it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct App {
    pub guid: String,
    pub name: String,
    pub space_id: String,
    pub space_name: String,
    pub org_id: String,
    pub org_name: String,
}

/// What the stand-in serves and has seen.
#[derive(Default)]
pub struct Foundation {
    /// Every listing the test will serve, by version; `current` is served now.
    pub listings: Vec<Vec<App>>,
    pub current: usize,
    /// Statuses to answer the next `/v3/apps` requests with, before serving again.
    pub faults: VecDeque<u16>,
    /// A token answered 401 (revoked).
    pub revoked: Option<String>,
    pub tokens_issued: u64,
    pub pages_served: u64,
    /// `http://host:port`, for the `next` links.
    base: String,
    /// How long every page takes: a slow Cloud Controller.
    pub delay: Duration,
}

type Shared = Arc<Mutex<Foundation>>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Foundation> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

async fn token(State(shared): State<Shared>) -> Response {
    let mut foundation = lock(&shared);
    foundation.tokens_issued += 1;
    Json(json!({
        "access_token": format!("token-{}", foundation.tokens_issued),
        "token_type": "bearer",
        "expires_in": 3600,
    }))
    .into_response()
}

async fn apps(
    State(shared): State<Shared>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let delay = lock(&shared).delay;
    tokio::time::sleep(delay).await;
    let mut foundation = lock(&shared);
    if let Some(status) = foundation.faults.pop_front() {
        let mut response = (
            StatusCode::from_u16(status).expect("a status"),
            "try again later",
        )
            .into_response();
        if status == 429 {
            response
                .headers_mut()
                .insert("retry-after", "1".parse().expect("a header"));
        }
        return response;
    }
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("bearer ")
                .or_else(|| v.strip_prefix("Bearer "))
        })
        .map(str::to_owned);
    if bearer.is_none() || bearer == foundation.revoked {
        return (StatusCode::UNAUTHORIZED, "Invalid Auth Token").into_response();
    }
    assert_eq!(
        query.get("include").map(String::as_str),
        Some("space.organization")
    );
    // A listing's pages come from one version: the first page's, carried in `next`.
    let version = query
        .get("v")
        .and_then(|v| v.parse().ok())
        .unwrap_or(foundation.current);
    let page: usize = query.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    let listing = foundation.listings[version].clone();
    foundation.pages_served += 1;
    let on_page: Vec<&App> = listing
        .iter()
        .skip((page - 1) * PAGE_SIZE)
        .take(PAGE_SIZE)
        .collect();
    let next = (page * PAGE_SIZE < listing.len()).then(|| {
        json!({ "href": format!(
            "{}/v3/apps?page={}&per_page={PAGE_SIZE}&include=space.organization&v={version}",
            foundation.base, page + 1) })
    });
    let mut spaces = BTreeMap::new();
    let mut orgs = BTreeMap::new();
    for app in &on_page {
        spaces.insert(
            &app.space_id,
            json!({ "guid": app.space_id, "name": app.space_name,
            "relationships": { "organization": { "data": { "guid": app.org_id } } } }),
        );
        orgs.insert(
            &app.org_id,
            json!({ "guid": app.org_id, "name": app.org_name }),
        );
    }
    Json(json!({
        "pagination": { "total_results": listing.len(), "next": next },
        "resources": on_page.iter().map(|app| json!({
            "guid": app.guid, "name": app.name, "state": "STARTED",
            "relationships": { "space": { "data": { "guid": app.space_id } } },
        })).collect::<Vec<_>>(),
        "included": {
            "spaces": spaces.into_values().collect::<Vec<_>>(),
            "organizations": orgs.into_values().collect::<Vec<_>>(),
        },
    }))
    .into_response()
}

/// The Cloud Controller and UAA stand-in, served on a runtime of its own until dropped (in
/// a synchronous test or an async one alike).
pub struct StandIn {
    addr: SocketAddr,
    shared: Shared,
    runtime: Option<tokio::runtime::Runtime>,
}

impl StandIn {
    /// Serves `listings[0]` on a free loopback port.
    pub fn start(listings: Vec<Vec<App>>) -> StandIn {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let shared: Shared = Arc::new(Mutex::new(Foundation {
            listings,
            ..Foundation::default()
        }));
        // Bound here, not in the runtime: `block_on` would refuse inside an async test.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("an address");
        lock(&shared).base = format!("http://{addr}");
        let router = Router::new()
            .route("/oauth/token", post(token))
            .route("/v3/apps", get(apps))
            .with_state(shared.clone());
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("a listener");
            axum::serve(listener, router).await
        });
        StandIn {
            addr,
            shared,
            runtime: Some(runtime),
        }
    }

    /// Its base URL, both the Cloud Controller's and UAA's.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn foundation(&self) -> std::sync::MutexGuard<'_, Foundation> {
        lock(&self.shared)
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which an async test's thread must not.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
