//! What one caller may cost the process (issue #18): bounded log searches, capped live
//! streams, and the web hygiene of every answer.

mod support;

use sluice_api::store::{LogStoreConfig, SqlStoreConfig, Stores};
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
