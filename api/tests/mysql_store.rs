//! The API over the `mysql` sink's database (apps, metrics, events) filled from a simulator
//! capture run through the graph, against the tables; and 503 while the server is down.
//! Needs MariaDB: `SLUICE_TEST_MYSQL_URL` (scripts/test.sh starts one).

mod support;

use sluice_api::store::{SqlStoreConfig, Stores};
use sluice_model::records::StreamName;
use sluice_sinks::mysql::{self, MysqlSinkConfig};
use sluice_test_support::mariadb::{TestDatabase, dump_mysql};
use support::*;

#[tokio::test]
async fn apps_metrics_and_events_agree_with_the_mysql_tables() {
    let db = TestDatabase::shared("api_read");
    let streams = vec![StreamName::AppEvents, StreamName::AppRollups];
    let mut config = MysqlSinkConfig::new(db.url(), streams);
    // The capture is from 2024: retention would delete it as it lands.
    config.retention.enabled = false;
    let (ctx, feeder) = feed(run_graph(capture(11, 4, 20_000)));
    mysql::run(config.clone(), ctx)
        .await
        .expect("the mysql sink wrote everything");
    feeder.join().expect("feeder thread");

    let stores = Stores::open(Some(SqlStoreConfig::Mysql(config)), None, vec![]).expect("open");
    let (server, base) = start_api(stores).await;
    let mut connection = db.connect().await;
    let rollups = dump_mysql(&mut connection, "app_metric_rollup").await;
    let app_events = dump_mysql(&mut connection, "app_event").await;
    assert!(!rollups.is_empty());
    check_against_tables(&base, &rollups, &app_events).await;

    // The MySQL store keeps no logs, and this API has no log store.
    let app = text(&rollups[0][0]);
    let (status, body) = get(&base, &format!("/api/v1/apps/{app}/logs")).await;
    assert_eq!(status, 404, "{body}");
    server.stop().await;
    drop(connection);
    db.drop_database().await;
}

#[tokio::test]
async fn a_server_that_is_down_is_a_503_naming_host_and_port() {
    // A port nothing listens on: bound, then released.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        listener.local_addr().expect("address").port()
    };
    let config = MysqlSinkConfig::new(
        format!("mysql://sluice:secret@127.0.0.1:{port}/sluice"),
        StreamName::all(),
    );
    let stores = Stores::open(Some(SqlStoreConfig::Mysql(config)), None, vec![])
        .expect("opening connects nothing, so it succeeds while the server is down");
    let (server, base) = start_api(stores).await;
    let app = "f47ac10b-58cc-4372-a567-0e02b2c3d479";
    for endpoint in [
        "/api/v1/apps".to_owned(),
        format!("/api/v1/apps/{app}/metrics"),
        format!("/api/v1/apps/{app}/events"),
    ] {
        let (status, body) = get(&base, &endpoint).await;
        assert_eq!(status, 503, "{endpoint}: {body}");
        let message = body["error"].as_str().expect("an error message");
        assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
        assert!(!message.contains("secret"), "no credentials in {message}");
    }
    server.stop().await;
}
