//! What one caller may cost the process (issue #18): bounded log searches, capped live
//! streams, and the web hygiene of every answer.

mod support;

use sluice_api::store::{LogStoreConfig, SqlStoreConfig, Stores};
use sluice_api::{ApiConfig, ApiLimits};
use support::*;

async fn sqlite_stores() -> (tempfile::TempDir, Stores, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = fill_sqlite(
        &dir.path().join("sluice.db"),
        run_graph(capture(5, 2, 3000)),
    )
    .await;
    let app =
        text(&sluice_test_support::mariadb::dump_sqlite(&config.path, "log_message").await[0][2])
            .to_owned();
    let stores = Stores::open(
        Some(SqlStoreConfig::Sqlite(config.clone())),
        Some(LogStoreConfig::Sqlite(config)),
        vec![],
    )
    .expect("stores open");
    (dir, stores, app)
}

#[tokio::test]
async fn log_searches_with_too_many_or_too_long_terms_are_a_400_naming_the_limit() {
    let (_dir, stores, app) = sqlite_stores().await;
    let (server, base) = start_api(stores).await;
    let logs = format!("/api/v1/apps/{app}/logs?{RANGE}");
    // What once was a 500 ("Expression tree is too large", "LIKE or GLOB pattern too
    // complex") or a 45 s scan.
    let many = vec!["order"; 990].join("+");
    let long = "x".repeat(60_000);
    for (q, limit) in [
        (many.as_str(), "api.limits.max_search_terms"),
        (long.as_str(), "api.limits.max_term_bytes"),
    ] {
        let (status, body) = get(&base, &format!("{logs}&q={q}")).await;
        assert_eq!(status, 400, "{body}");
        let error = body["error"].as_str().expect("a JSON error");
        assert!(error.starts_with("q: ") && error.contains(limit), "{error}");
        assert!(error.len() < 400, "the query is not echoed back: {error}");
    }
    // Within the limits, a search answers.
    let sixteen = vec!["e"; 16].join("+");
    get_ok(&base, &format!("{logs}&q={sixteen}")).await;
    server.stop().await;
}

fn limited(limits: ApiLimits) -> ApiConfig {
    ApiConfig {
        limits,
        ..ApiConfig::open("127.0.0.1:0")
    }
}

#[tokio::test]
async fn live_streams_past_the_caps_are_refused_with_429_naming_the_limit() {
    let config = limited(ApiLimits {
        max_streams: 3,
        max_streams_per_caller: 2,
        ..ApiLimits::default()
    });
    let stores = Stores::open(None, None, vec![]).expect("no stores");
    let (server, base) = start_api_with(stores, &config).await;
    let client = sluice_common::tls::http_client(false).expect("a client");
    let url = format!("{base}/api/v1/apps/6a3a2a1e-7b55-4c61-9d0b-0a6e4f9c1b2d/stream");
    let open = |client: reqwest::Client, url: String| async move {
        client.get(url).send().await.expect("an answer")
    };
    let first = open(client.clone(), url.clone()).await;
    let second = open(client.clone(), url.clone()).await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    // Every stream here comes from 127.0.0.1: one caller under auth = "none".
    let third = open(client.clone(), url.clone()).await;
    assert_eq!(third.status(), 429);
    let body: serde_json::Value = third.json().await.expect("a JSON error");
    let error = body["error"].as_str().expect("an error message");
    assert!(
        error.contains("api.limits.max_streams_per_caller"),
        "{error}"
    );
    // A closed stream makes room again (the server notices the client left).
    drop(first);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let again = open(client.clone(), url.clone()).await;
        if again.status() == 200 {
            break;
        }
        assert_eq!(again.status(), 429);
        assert!(
            std::time::Instant::now() < deadline,
            "the closed stream still counts"
        );
        tokio::task::yield_now().await;
    }
    drop(second);
    server.stop().await;
}

#[tokio::test]
async fn every_answer_has_the_security_headers_and_every_error_is_json() {
    let stores = Stores::open(None, None, vec![]).expect("no stores");
    let (server, base) = start_api(stores).await;
    let client = sluice_common::tls::http_client(false).expect("a client");
    let app = "/api/v1/apps/6a3a2a1e-7b55-4c61-9d0b-0a6e4f9c1b2d";
    let cases = [
        ("GET", "/".to_owned(), 200),
        ("GET", "/api/v1/info".to_owned(), 200),
        ("GET", "/nowhere".to_owned(), 404),
        // No store: 404 from the handler.
        ("GET", format!("{app}/metrics"), 404),
        // Once an empty 405 and a text/plain 400.
        ("DELETE", format!("{app}/metrics"), 405),
        ("POST", "/api/v1/info".to_owned(), 405),
        ("GET", "/api/v1/apps/%FF%FE/metrics".to_owned(), 400),
        ("GET", format!("{app}/metrics?from=%FF"), 400),
    ];
    for (method, path, expected) in cases {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        let response = client
            .request(method.clone(), format!("{base}{path}"))
            .send()
            .await
            .expect("an answer");
        let status = response.status().as_u16();
        assert_eq!(status, expected, "{method} {path}");
        let headers = response.headers();
        assert_eq!(headers["x-frame-options"], "DENY", "{method} {path}");
        assert_eq!(
            headers["x-content-type-options"], "nosniff",
            "{method} {path}"
        );
        let csp = headers["content-security-policy"].to_str().expect("ASCII");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        if status >= 400 {
            let content_type = headers["content-type"].to_str().expect("ASCII").to_owned();
            let body: serde_json::Value = response.json().await.unwrap_or_else(|e| {
                panic!("{method} {path}: {status} with {content_type} is not JSON: {e}")
            });
            let error = body["error"].as_str().expect("an error message");
            assert!(!error.is_empty(), "{method} {path}");
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn a_loopback_api_without_auth_answers_only_to_loopback_host_names() {
    let stores = Stores::open(None, None, vec![]).expect("no stores");
    let (server, base) = start_api(stores).await;
    let client = sluice_common::tls::http_client(false).expect("a client");
    let port = server.address.port();
    for (host, expected) in [
        (format!("localhost:{port}"), 200),
        (format!("127.0.0.1:{port}"), 200),
        // A page of another site whose name was re-pointed at 127.0.0.1.
        (format!("rebind.attacker.example:{port}"), 403),
        ("localhost.attacker.example".to_owned(), 403),
    ] {
        let response = client
            .get(format!("{base}/api/v1/info"))
            .header(reqwest::header::HOST, &host)
            .send()
            .await
            .expect("an answer");
        assert_eq!(response.status().as_u16(), expected, "Host: {host}");
        if expected == 403 {
            let body: serde_json::Value = response.json().await.expect("a JSON error");
            let error = body["error"].as_str().expect("an error message");
            assert!(error.contains("api.allowed_hosts"), "{error}");
        }
    }
    server.stop().await;

    // Listed names pass.
    let config = ApiConfig {
        allowed_hosts: vec!["sluice.internal".to_owned()],
        ..ApiConfig::open("127.0.0.1:0")
    };
    let stores = Stores::open(None, None, vec![]).expect("no stores");
    let (server, base) = start_api_with(stores, &config).await;
    let response = client
        .get(format!("{base}/api/v1/info"))
        .header(reqwest::header::HOST, "sluice.internal")
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status().as_u16(), 200);
    server.stop().await;
}
