//! An Elasticsearch-compatible server for tests, and a fault-injecting proxy in front of it.
//!
//! The server is `osmem-server` (PyPI; an in-memory OpenSearch-compatible server that
//! answers like Elasticsearch), installed by `scripts/test.sh`; `OSMEM_SERVER_BIN` names the
//! binary if it is elsewhere. The proxy forwards everything to it and, on demand, refuses
//! connections (an outage), answers whole requests with an error status, or fails chosen
//! documents of a `_bulk` request without forwarding them — so the server's data stays
//! exact throughout and a test can check the final document set. Test helpers only.
use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::watch;

/// A plain-HTTP client (reqwest is built without a default crypto provider).
fn http_client() -> reqwest::Client {
    sluice_common::tls::http_client(false).expect("an HTTP client")
}

/// A running `osmem-server` on a free loopback port; stopped when dropped.
pub struct SearchServer {
    pub url: String,
    child: Child,
    // Held open: the server exits when its stdin closes, so it never outlives the test.
    _stdin: ChildStdin,
}

fn osmem_binary() -> String {
    if let Ok(binary) = std::env::var("OSMEM_SERVER_BIN") {
        return binary;
    }
    let output = Command::new("python3")
        .args([
            "-c",
            "import osmem_server; print(osmem_server.resolve_binary())",
        ])
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "osmem-server is not installed (scripts/test.sh installs it with pip): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

impl SearchServer {
    pub fn start() -> SearchServer {
        let mut child = Command::new(osmem_binary())
            .args(["-addr", "127.0.0.1:0", "-no-ja"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("osmem-server starts");
        let stdin = child.stdin.take().expect("stdin");
        let mut first = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut first)
            .expect("osmem-server announces itself");
        let announced: Value = serde_json::from_str(&first)
            .unwrap_or_else(|e| panic!("osmem-server printed {first:?}: {e}"));
        let url = announced["url"].as_str().expect("a url").to_owned();
        SearchServer {
            url,
            child,
            _stdin: stdin,
        }
    }

    /// Makes everything indexed searchable, then counts the documents of `index` (a pattern).
    pub async fn count(&self, index: &str) -> u64 {
        let client = http_client();
        client
            .post(format!("{}/{index}/_refresh", self.url))
            .send()
            .await
            .expect("refresh");
        let answer: Value = client
            .get(format!("{}/{index}/_count", self.url))
            .send()
            .await
            .expect("count")
            .json()
            .await
            .expect("json");
        answer["count"].as_u64().unwrap_or(0)
    }

    /// Every `_id` in the indices matching `pattern`, sorted. Each index is read in one
    /// search, so it must hold at most 10 000 documents (the default result window).
    pub async fn ids(&self, pattern: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .hits(pattern, false)
            .await
            .iter()
            .filter_map(|h| h["_id"].as_str().map(str::to_owned))
            .collect();
        ids.sort();
        ids
    }

    /// Every document in the indices matching `pattern` (each hit's `_source`), read as
    /// [`SearchServer::ids`] reads them.
    pub async fn documents(&self, pattern: &str) -> Vec<Value> {
        self.hits(pattern, true)
            .await
            .into_iter()
            .map(|mut hit| hit["_source"].take())
            .collect()
    }

    /// The search hits of every index matching `pattern`, after a refresh; with their
    /// `_source` or without.
    async fn hits(&self, pattern: &str, source: bool) -> Vec<Value> {
        let client = http_client();
        client
            .post(format!("{}/{pattern}/_refresh", self.url))
            .send()
            .await
            .expect("refresh");
        let mut hits = Vec::new();
        for index in self.indices(pattern).await {
            let mut answer: Value = client
                .post(format!("{}/{index}/_search", self.url))
                .json(&json!({ "size": 10000, "_source": source, "query": { "match_all": {} } }))
                .send()
                .await
                .expect("search")
                .json()
                .await
                .expect("json");
            let total = answer["hits"]["total"]["value"].as_u64().unwrap_or(0);
            assert!(
                total <= 10_000,
                "{index} holds {total} documents: too many to list"
            );
            if let Value::Array(page) = answer["hits"]["hits"].take() {
                hits.extend(page);
            }
        }
        hits
    }

    /// PUT `body` (JSON) to `path`, as another program would (to create an index the sink
    /// did not create, or index a document in it); panics unless answered 2xx.
    pub async fn put(&self, path: &str, body: Value) {
        let response = http_client()
            .put(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .expect("put");
        assert!(
            response.status().is_success(),
            "PUT {path} answered {}",
            response.status()
        );
    }

    /// The names of the indices matching `pattern`, sorted.
    pub async fn indices(&self, pattern: &str) -> Vec<String> {
        let mappings = self.get(&format!("/{pattern}/_mapping")).await;
        let mut names: Vec<String> = mappings
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    /// GET `path` as JSON.
    pub async fn get(&self, path: &str) -> Value {
        http_client()
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json")
    }
}

impl Drop for SearchServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How the proxy fails a chosen document of a bulk request.
#[derive(Clone, Copy, Debug)]
pub struct ItemFault {
    pub status: u16,
    /// How many more times; `u32::MAX` for always.
    pub times: u32,
}

#[derive(Default)]
struct Faults {
    /// Statuses for the next whole requests, answered without forwarding.
    statuses: VecDeque<u16>,
    /// Bulk documents by `_id`.
    items: HashMap<String, ItemFault>,
    /// Documents per bulk request forwarded, in order.
    bulk_sizes: Vec<usize>,
    /// Every `_id` seen in bulk requests, with repeats.
    bulk_ids: Vec<String>,
    /// The `Authorization` header of every request, in order (`None` when absent).
    authorizations: Vec<Option<String>>,
}

/// The proxy. `url` stays the same across outages.
pub struct FaultProxy {
    pub url: String,
    addr: SocketAddr,
    faults: Arc<Mutex<Faults>>,
    up: watch::Sender<bool>,
}

#[derive(Clone)]
struct Shared {
    upstream: String,
    client: reqwest::Client,
    faults: Arc<Mutex<Faults>>,
}

impl FaultProxy {
    /// A proxy to `upstream`, accepting connections.
    pub async fn start(upstream: &str) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let addr = listener.local_addr().expect("address");
        let faults = Arc::new(Mutex::new(Faults::default()));
        let shared = Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: http_client(),
            faults: faults.clone(),
        };
        let (up, mut up_rx) = watch::channel(true);
        tokio::spawn(async move {
            let mut listener = Some(listener);
            loop {
                let current = match listener.take() {
                    Some(l) => l,
                    None => loop {
                        // Down: wait to be brought up, then listen on the same port again.
                        if up_rx.wait_for(|up| *up).await.is_err() {
                            return;
                        }
                        if let Ok(l) = tokio::net::TcpListener::bind(addr).await {
                            break l;
                        }
                    },
                };
                let app = axum::Router::new()
                    .fallback(forward)
                    .with_state(shared.clone());
                let mut down = up_rx.clone();
                let _ = axum::serve(current, app)
                    .with_graceful_shutdown(async move {
                        let _ = down.wait_for(|up| !*up).await;
                    })
                    .await;
                if up_rx.has_changed().is_err() {
                    return;
                }
            }
        });
        FaultProxy {
            url: format!("http://{addr}"),
            addr,
            faults,
            up,
        }
    }

    /// Stops listening: connections are refused until [`FaultProxy::set_up`].
    pub fn set_down(&self) {
        self.up.send_replace(false);
        // Refused means refused: wait until the port no longer accepts.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(self.addr).is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "the proxy kept listening"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    pub fn set_up(&self) {
        self.up.send_replace(true);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(self.addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the proxy did not listen again"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// The next `n` requests are answered `status` without reaching the server.
    pub fn fail_requests(&self, n: usize, status: u16) {
        let mut faults = self.faults.lock().expect("faults");
        faults.statuses.extend(std::iter::repeat_n(status, n));
    }

    /// The document `id` is answered `status` in bulk requests (`times` times).
    pub fn fail_item(&self, id: &str, status: u16, times: u32) {
        let mut faults = self.faults.lock().expect("faults");
        faults
            .items
            .insert(id.to_owned(), ItemFault { status, times });
    }

    /// Documents per bulk request that reached the proxy, in order.
    pub fn bulk_sizes(&self) -> Vec<usize> {
        self.faults.lock().expect("faults").bulk_sizes.clone()
    }

    /// The `Authorization` header of every request the proxy received.
    pub fn authorizations(&self) -> Vec<Option<String>> {
        self.faults.lock().expect("faults").authorizations.clone()
    }

    /// Every `_id` the proxy saw in bulk requests, repeats included.
    pub fn bulk_ids(&self) -> Vec<String> {
        self.faults.lock().expect("faults").bulk_ids.clone()
    }
}

async fn forward(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.faults.lock().expect("faults").authorizations.push(
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    );
    if let Some(status) = shared.faults.lock().expect("faults").statuses.pop_front() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let body = json!({ "error": { "type": "injected", "reason": "injected by the test proxy" }, "status": status.as_u16() });
        return (status, axum::Json(body)).into_response();
    }
    let mut body = body.to_vec();
    let gzipped = headers
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes() == b"gzip");
    if gzipped {
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut plain)
            .expect("a gzip body");
        body = plain;
    }
    if uri.path().ends_with("/_bulk") {
        return bulk(&shared, &uri, &body).await;
    }
    let url = format!(
        "{}{}",
        shared.upstream,
        uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    );
    let mut request = shared.client.request(method, url).body(body);
    if let Some(content_type) = headers.get("content-type") {
        request = request.header("content-type", content_type);
    }
    relay(request.send().await).await
}

async fn relay(answer: Result<reqwest::Response, reqwest::Error>) -> Response {
    match answer {
        Ok(answer) => {
            let status = answer.status();
            let mut headers = HeaderMap::new();
            for name in ["content-type", "x-elastic-product"] {
                if let Some(value) = answer.headers().get(name) {
                    headers.insert(name, value.clone());
                }
            }
            let body = answer.bytes().await.unwrap_or_default();
            (status, headers, body).into_response()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

/// A bulk request: chosen documents are answered by the proxy, the rest forwarded, and the
/// two answers merged in request order.
async fn bulk(shared: &Shared, uri: &Uri, body: &[u8]) -> Response {
    let lines: Vec<&[u8]> = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let mut forwarded = Vec::new();
    // Per document: Some(injected item) or None (forwarded).
    let mut plan: Vec<Option<Value>> = Vec::new();
    {
        let mut faults = shared.faults.lock().expect("faults");
        faults.bulk_sizes.push(lines.len() / 2);
        for pair in lines.chunks(2) {
            let action: Value = serde_json::from_slice(pair[0]).expect("a bulk action line");
            let meta = &action["index"];
            let id = meta["_id"].as_str().unwrap_or("").to_owned();
            faults.bulk_ids.push(id.clone());
            let fault = faults.items.get_mut(&id).filter(|f| f.times > 0);
            match fault {
                Some(fault) => {
                    fault.times = fault.times.saturating_sub(1);
                    let kind = if fault.status == 429 {
                        "es_rejected_execution_exception"
                    } else {
                        "mapper_parsing_exception"
                    };
                    plan.push(Some(json!({ "index": {
                        "_index": meta["_index"], "_id": id, "status": fault.status,
                        "error": { "type": kind, "reason": format!("injected {kind}") }
                    }})));
                }
                None => {
                    plan.push(None);
                    for line in pair {
                        forwarded.extend_from_slice(line);
                        forwarded.push(b'\n');
                    }
                }
            }
        }
    }
    let mut upstream_items: VecDeque<Value> = VecDeque::new();
    let mut errors = plan.iter().any(Option::is_some);
    if !forwarded.is_empty() {
        let url = format!(
            "{}{}",
            shared.upstream,
            uri.path_and_query().map(|p| p.as_str()).unwrap_or("/_bulk")
        );
        let answer = shared
            .client
            .post(url)
            .header("content-type", "application/x-ndjson")
            .body(forwarded)
            .send()
            .await;
        let answer = match answer {
            Ok(a) if a.status().is_success() => a,
            other => return relay(other).await,
        };
        let answer: Value = answer.json().await.expect("a bulk answer");
        errors |= answer["errors"].as_bool().unwrap_or(false);
        upstream_items.extend(answer["items"].as_array().cloned().unwrap_or_default());
    }
    let items: Vec<Value> = plan
        .into_iter()
        .map(|p| {
            p.or_else(|| upstream_items.pop_front())
                .unwrap_or(Value::Null)
        })
        .collect();
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-elastic-product",
        HeaderValue::from_static("Elasticsearch"),
    );
    (
        StatusCode::OK,
        headers,
        axum::Json(json!({ "took": 1, "errors": errors, "items": items })),
    )
        .into_response()
}

/// Asserts two sorted id lists are equal, showing counts and a few differences (not 10 000 ids).
pub fn assert_same_ids(actual: &[String], expected: &[String]) {
    if actual == expected {
        return;
    }
    let missing: Vec<&String> = expected
        .iter()
        .filter(|id| actual.binary_search(id).is_err())
        .take(5)
        .collect();
    let extra: Vec<&String> = actual
        .iter()
        .filter(|id| expected.binary_search(id).is_err())
        .take(5)
        .collect();
    panic!(
        "{} documents stored, {} expected; missing e.g. {missing:?}; unexpected e.g. {extra:?}",
        actual.len(),
        expected.len()
    );
}
