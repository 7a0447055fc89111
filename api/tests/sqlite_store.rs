//! The API over a SQLite store the real `sqlite` sink filled from a simulator capture run
//! through the operators' graph: every endpoint's numbers against the tables, read
//! independently with SQL.

mod support;

use std::collections::HashSet;

use sluice_api::store::{LogStoreConfig, SqlStoreConfig, Stores};
use sluice_model::records::StreamName;
use sluice_sinks::sqlite::SqliteSinkConfig;
use sluice_test_support::mariadb::{Cell, dump_sqlite};
use sqlx::ConnectOptions;
use support::*;

struct Fixture {
    _dir: tempfile::TempDir,
    config: SqliteSinkConfig,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let records = run_graph(capture(11, 4, 20_000));
    let config = fill_sqlite(&dir.path().join("sluice.db"), records).await;
    Fixture { _dir: dir, config }
}

fn stores(config: &SqliteSinkConfig) -> Stores {
    Stores::open(
        Some(SqlStoreConfig::Sqlite(config.clone())),
        Some(LogStoreConfig::Sqlite(config.clone())),
        vec![],
    )
    .expect("stores open")
}

#[tokio::test]
async fn apps_metrics_and_events_agree_with_the_tables() {
    let fixture = fixture().await;
    let path = &fixture.config.path;
    let (server, base) = start_api(stores(&fixture.config)).await;
    let rollups = dump_sqlite(path, "app_metric_rollup").await;
    let app_events = dump_sqlite(path, "app_event").await;
    check_against_tables(&base, &rollups, &app_events).await;
    server.stop().await;
}

/// `(ts, id, message)` of an app's stored lines in `[START, TO)`, newest first.
async fn stored_logs(path: &std::path::Path, app: &str) -> Vec<(i64, String, String)> {
    let mut lines: Vec<(i64, String, String)> = dump_sqlite(path, "log_message")
        .await
        .iter()
        .filter(|r| text(&r[2]) == app)
        .map(|r| (int(&r[1]), text(&r[0]).to_owned(), text(&r[6]).to_owned()))
        .filter(|(ts, _, _)| (START * 1_000_000_000..TO * 1_000_000_000).contains(ts))
        .collect();
    lines.sort_by(|a, b| (b.0, &b.1).cmp(&(a.0, &a.1)));
    lines
}

/// Every page of `/logs` from the first, following `next_cursor`; the ids in order.
async fn page_through(base: &str, app: &str, query: &str) -> (Vec<String>, usize) {
    let mut ids = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/apps/{app}/logs?{RANGE}&{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let body = get_ok(base, &path).await;
        pages += 1;
        let logs = body["logs"].as_array().expect("logs");
        ids.extend(
            logs.iter()
                .map(|l| l["id"].as_str().expect("id").to_owned()),
        );
        match body["next_cursor"].as_str() {
            Some(next) => {
                assert!(!logs.is_empty(), "a page with a next cursor has lines");
                cursor = Some(next.to_owned());
            }
            None => return (ids, pages),
        }
        assert!(pages < 10_000, "paging does not end");
    }
}

#[tokio::test]
async fn log_pages_see_every_matching_line_once_newest_first() {
    let fixture = fixture().await;
    let path = &fixture.config.path;
    let (server, base) = start_api(stores(&fixture.config)).await;
    let apps = get_ok(&base, "/api/v1/apps").await;
    let app = apps["apps"][0]["id"].as_str().expect("an app").to_owned();
    let stored = stored_logs(path, &app).await;
    assert!(stored.len() > 200, "enough lines to page: {}", stored.len());

    // Every line, 37 at a time, in (ts, id) descending order, each exactly once.
    let (ids, pages) = page_through(&base, &app, "limit=37").await;
    let expected: Vec<String> = stored.iter().map(|(_, id, _)| id.clone()).collect();
    assert_eq!(ids, expected);
    assert_eq!(pages, expected.len().div_ceil(37));

    // A line carries the columns of its row.
    let body = get_ok(&base, &format!("/api/v1/apps/{app}/logs?{RANGE}&limit=1")).await;
    let first = &body["logs"][0];
    let row = dump_sqlite(path, "log_message")
        .await
        .into_iter()
        .find(|r| text(&r[0]) == stored[0].1)
        .expect("the newest line is stored");
    assert_eq!(first["time_ns"], int(&row[1]));
    assert_eq!(first["source_type"], text(&row[3]));
    assert_eq!(first["source_instance"], text(&row[4]));
    assert_eq!(first["message_type"], text(&row[5]));
    assert_eq!(first["message"], text(&row[6]));

    // q: every term, in any case, somewhere in the message.
    let matching = |terms: &[&str]| -> Vec<String> {
        stored
            .iter()
            .filter(|(_, _, m)| {
                let m = m.to_lowercase();
                terms.iter().all(|t| m.contains(&t.to_lowercase()))
            })
            .map(|(_, id, _)| id.clone())
            .collect()
    };
    let mut tried = 0;
    for terms in [
        &["HEARTBEAT", "ok"][..],
        &["Processed", "ORDER"],
        &["gc", "pause"],
    ] {
        let expected = matching(terms);
        if expected.is_empty() {
            continue;
        }
        tried += 1;
        assert!(
            expected.len() < stored.len(),
            "{terms:?} filters something out"
        );
        let q = encode(&terms.join(" "));
        let (ids, _) = page_through(&base, &app, &format!("q={q}&limit=10")).await;
        assert_eq!(ids, expected, "q={terms:?}");
    }
    assert!(tried > 0, "some query term occurs in the capture");
    // LIKE's wildcards are literal in q.
    let (ids, _) = page_through(&base, &app, "q=%25_%25&limit=1000").await;
    assert_eq!(ids, matching(&["%_%"]));
    let unique: HashSet<&String> = expected.iter().collect();
    assert_eq!(unique.len(), expected.len(), "log ids are unique");
    server.stop().await;
}

#[tokio::test]
async fn bad_parameters_are_400s_naming_the_parameter() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = SqliteSinkConfig::new(dir.path().join("never.db"), StreamName::all());
    let (server, base) = start_api(stores(&config)).await;
    let app = "f47ac10b-58cc-4372-a567-0e02b2c3d479";
    for (path, parameter) in [
        (
            format!("/api/v1/apps/{app}/metrics?from=abc"),
            "from: \"abc\" is not RFC 3339",
        ),
        (
            format!("/api/v1/apps/{app}/metrics?to=2024-13-01T00:00:00Z"),
            "to: ",
        ),
        (
            format!("/api/v1/apps/{app}/metrics?from=100&to=50"),
            "from: 100 is not before to",
        ),
        (
            format!("/api/v1/apps/{app}/metrics?step=30s"),
            "step: \"30s\"",
        ),
        (
            format!("/api/v1/apps/{app}/metrics?step=often"),
            "step: \"often\"",
        ),
        (
            format!("/api/v1/apps/{app}/events?from=yesterday"),
            "from: ",
        ),
        (format!("/api/v1/apps/{app}/logs?limit=0"), "limit: \"0\""),
        (
            format!("/api/v1/apps/{app}/logs?limit=5000"),
            "limit: \"5000\"",
        ),
        (
            format!("/api/v1/apps/{app}/logs?cursor=nonsense"),
            "cursor: \"nonsense\"",
        ),
        (
            "/api/v1/apps/not-a-uuid/metrics".to_owned(),
            "app id: \"not-a-uuid\"",
        ),
        ("/api/v1/apps/not-a-uuid/logs".to_owned(), "app id: "),
    ] {
        let (status, body) = get(&base, &path).await;
        assert_eq!(status, 400, "{path}: {body}");
        let message = body["error"].as_str().expect("an error message");
        assert!(message.starts_with(parameter), "{path}: {message}");
    }
    // Upper-case ids are the same app (canonical form): the store, not the id, fails here.
    let (status, _) = get(
        &base,
        &format!("/api/v1/apps/{}/metrics", app.to_uppercase()),
    )
    .await;
    assert_eq!(status, 503);
    server.stop().await;
}

#[tokio::test]
async fn a_store_that_is_not_there_yet_is_a_503_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("later.db");
    let config = SqliteSinkConfig::new(&path, StreamName::all());
    let (server, base) = start_api(stores(&config)).await;
    let app = "f47ac10b-58cc-4372-a567-0e02b2c3d479";
    for endpoint in [
        "/api/v1/apps".to_owned(),
        format!("/api/v1/apps/{app}/metrics"),
        format!("/api/v1/apps/{app}/events"),
        format!("/api/v1/apps/{app}/logs"),
    ] {
        let (status, body) = get(&base, &endpoint).await;
        assert_eq!(status, 503, "{endpoint}: {body}");
        let message = body["error"].as_str().expect("an error message");
        assert!(
            message.contains(&path.display().to_string()),
            "{endpoint}: {message}"
        );
    }
    // Once the sink has written the file the same API answers, without a restart.
    fill_sqlite(&path, run_graph(capture(3, 2, 2_000))).await;
    let apps = get_ok(&base, "/api/v1/apps").await;
    assert_eq!(apps["apps"].as_array().map(Vec::len), Some(2));
    server.stop().await;
}

#[tokio::test]
async fn a_step_that_is_a_configured_window_reads_the_window_table() {
    let fixture = fixture().await;
    let path = &fixture.config.path;
    // The window table as the windowed sink writes it: the rollup columns, one row per hour.
    // Its values differ from the minutes merged, so the answer shows which was read.
    let mut connection = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .expect("writable");
    sqlx::raw_sql(
        "CREATE TABLE app_metric_rollup_1h AS SELECT * FROM app_metric_rollup WHERE 0;
         INSERT INTO app_metric_rollup_1h
         SELECT app_id, minute - minute % 3600, 7, NULL, NULL, NULL, NULL, NULL, NULL,
                12345, 0, 0, 0, 0, 0, NULL, NULL, NULL, NULL, NULL, 1, 0, 0
         FROM app_metric_rollup GROUP BY app_id, minute - minute % 3600;",
    )
    .execute(&mut connection)
    .await
    .expect("window table written");
    drop(connection);
    let app = text(&dump_sqlite(path, "app_metric_rollup").await[0][0]).to_owned();
    let hourly = format!(
        "/api/v1/apps/{app}/metrics?from={}&to={TO}&step=1h",
        START - 3600
    );

    let windowed = Stores::open(
        Some(SqlStoreConfig::Sqlite(fixture.config.clone())),
        None,
        vec![60, 3600],
    )
    .expect("stores open");
    let (server, base) = start_api(windowed).await;
    let body = get_ok(&base, &hourly).await;
    let points = body["points"].as_array().expect("points");
    assert!(!points.is_empty());
    for point in points {
        assert_eq!(point["requests"], 12345, "{point}");
        assert_eq!(point["instances"], 7);
    }
    server.stop().await;

    // Without that window configured, the same step merges the minutes.
    let (server, base) = start_api(stores(&fixture.config)).await;
    let body = get_ok(&base, &hourly).await;
    let merged = body["points"].as_array().expect("points");
    assert_eq!(merged.len(), points.len());
    assert!(merged.iter().all(|p| p["requests"] != 12345), "{body}");
    server.stop().await;
}

#[tokio::test]
async fn apps_carry_the_directorys_names_with_no_sign_in() {
    let fixture = fixture().await;
    let path = &fixture.config.path;
    let (server, base) = start_api(stores(&fixture.config)).await;
    let directory = dump_sqlite(path, "app").await;
    assert!(
        !directory.is_empty(),
        "tagged simulator apps are in the directory"
    );
    let body = get_ok(&base, "/api/v1/apps").await;
    let apps = body["apps"].as_array().expect("apps");
    let mut named = 0;
    for row in &directory {
        let app = apps
            .iter()
            .find(|a| a["id"] == text(&row[0]))
            .expect("a directory app with rollups is listed");
        assert_eq!(app["name"], text(&row[1]));
        assert_eq!(app["space_id"], text(&row[2]));
        assert_eq!(app["space_name"], text(&row[3]));
        assert_eq!(app["org_id"], text(&row[4]));
        assert_eq!(app["org_name"], text(&row[5]));
        named += 1;
    }
    assert_eq!(named, directory.len());
    server.stop().await;
}

/// The columns of `space_metric_rollup` / `org_metric_rollup` after the group id, as a
/// point names them.
const GROUP_COLUMNS: [&str; 14] = [
    "minute",
    "apps",
    "instances",
    "requests",
    "status_2xx",
    "status_3xx",
    "status_4xx",
    "status_5xx",
    "log_lines",
    "log_err_lines",
    "app_events",
    "cpu_total",
    "memory_bytes_total",
    "disk_bytes_total",
];

#[tokio::test]
async fn space_and_org_metrics_agree_with_the_group_tables() {
    let fixture = fixture().await;
    let path = &fixture.config.path;
    let (server, base) = start_api(stores(&fixture.config)).await;
    for (table, endpoint) in [
        ("space_metric_rollup", "spaces"),
        ("org_metric_rollup", "orgs"),
    ] {
        let rows = dump_sqlite(path, table).await;
        let mut groups: std::collections::BTreeMap<&str, Vec<&Vec<Cell>>> = Default::default();
        for row in &rows {
            let minute = int(&row[1]);
            // The '' group (apps whose space is not known) has no id to ask for.
            if !text(&row[0]).is_empty() && (START..TO).contains(&minute) {
                groups.entry(text(&row[0])).or_default().push(row);
            }
        }
        assert!(!groups.is_empty(), "{table} has named groups");
        for (id, rows) in &groups {
            let body = get_ok(
                &base,
                &format!("/api/v1/{endpoint}/{id}/metrics?{RANGE}&step=1m"),
            )
            .await;
            assert_eq!(body["id"], *id);
            let points = body["points"].as_array().expect("points");
            assert_eq!(points.len(), rows.len(), "{endpoint}/{id}: {body}");
            for (point, row) in points.iter().zip(rows) {
                for (column, cell) in GROUP_COLUMNS.iter().zip(&row[1..]) {
                    assert_eq!(
                        point[point_field(column)],
                        json_of(cell),
                        "{endpoint}/{id} {column} at {}",
                        int(&row[1])
                    );
                }
            }
            // Five-minute buckets: counts summed, `apps` the most of a minute.
            let body = get_ok(
                &base,
                &format!("/api/v1/{endpoint}/{id}/metrics?{RANGE}&step=5m"),
            )
            .await;
            let mut buckets: std::collections::BTreeMap<i64, (i64, i64)> = Default::default();
            for row in rows {
                let bucket = buckets
                    .entry(int(&row[1]) - int(&row[1]) % 300)
                    .or_default();
                bucket.0 += int(&row[4]);
                bucket.1 = bucket.1.max(int(&row[2]));
            }
            let merged: Vec<(i64, (i64, i64))> = body["points"]
                .as_array()
                .expect("points")
                .iter()
                .map(|p| {
                    let n = |f: &str| p[f].as_i64().expect("an integer");
                    (n("time"), (n("requests"), n("apps")))
                })
                .collect();
            assert_eq!(
                merged,
                buckets.into_iter().collect::<Vec<_>>(),
                "{endpoint}/{id}"
            );
        }
    }
    // The parameters and budgets of an app's metrics.
    let (status, body) = get(&base, "/api/v1/spaces/not-a-guid/metrics").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("space id")),
        "{body}"
    );
    let org = "f47ac10b-58cc-4372-a567-0e02b2c3d479";
    let (status, body) = get(
        &base,
        &format!("/api/v1/orgs/{org}/metrics?from=0&to=31536000&step=1m"),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("max_points")),
        "{body}"
    );
    server.stop().await;
}
