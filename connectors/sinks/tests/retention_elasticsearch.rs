//! Retention in Elasticsearch (SPEC §10) against `osmem-server` behind the fault proxy: four
//! days of daily indices with `logs = "2d"` leave exactly the indices whose day is younger,
//! and never touch an index of another pattern, nor one the sink did not create.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use serde_json::json;
use sluice_model::Payload;
use sluice_model::event::Event;
use sluice_model::records::Records;
use sluice_sinks::SinkContext;
use sluice_sinks::elasticsearch::{self, ElasticsearchSinkConfig, IndexRetentionConfig};
use sluice_test_support::fixtures::log_event;
use sluice_test_support::search::{FaultProxy, SearchServer};
use tokio_util::sync::CancellationToken;

const HOUR_NS: i64 = 3600 * 1_000_000_000;
/// 2026-01-01T00:00:00Z.
const JAN_1: i64 = 1_767_225_600 * 1_000_000_000;
const LINES: usize = 10;

/// `LINES` log lines at `t` (ns), distinct by `slot`.
fn lines(t: i64, slot: i64) -> Vec<Event> {
    (0..LINES)
        .map(|i| {
            let mut event = log_event();
            if let Payload::Log(log) = &mut event.payload {
                log.timestamp = t + i as i64;
                log.message = format!("slot {slot} line {i}").into_bytes().into();
            }
            event
        })
        .collect()
}

#[tokio::test]
async fn four_days_of_daily_indices_keep_two_days_and_nothing_the_sink_did_not_create() {
    let server = SearchServer::start();
    let proxy = FaultProxy::start(&server.url).await;
    // Indices another program made: one that fits the pattern and is older than anything
    // the sink writes, one of another pattern, one whose name only starts like the pattern.
    for index in [
        "logs-2025.12.30",
        "metrics-2025.12.30",
        "logs-2025.12.30-restored",
    ] {
        server
            .put(
                &format!("/{index}/_doc/1"),
                json!({ "message": "not Sluice's" }),
            )
            .await;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = ElasticsearchSinkConfig::new(&proxy.url);
    config.flush_interval = Duration::from_millis(5);
    config.dead_letter = Some(dir.path().join("dead-letter.ndjson"));
    config.retention = IndexRetentionConfig {
        enabled: true,
        logs: Duration::from_secs(2 * 24 * 3600),
        interval: Duration::ZERO,
    };
    let watermark = Arc::new(AtomicI64::new(i64::MIN));
    let (ctx, sender) = SinkContext::new("search", 4, CancellationToken::new());
    let ctx = ctx.with_watermark(watermark.clone());
    let metrics = ctx.metrics.clone();
    // Every 6 hours from 2026-01-01 00:00 to 2026-01-04 18:00: four days, 16 slots.
    let feeder = {
        let watermark = watermark.clone();
        std::thread::spawn(move || {
            for slot in 0..16 {
                let t = JAN_1 + slot * 6 * HOUR_NS;
                watermark.fetch_max(t + LINES as i64 - 1 - 60_000_000_000, Ordering::Relaxed);
                assert!(
                    sender.send_blocking(Records::Logs(lines(t, slot))),
                    "the sink stopped early"
                );
            }
        })
    };
    elasticsearch::run(config, ctx)
        .await
        .expect("the sink runs");
    feeder.join().expect("feeder");
    // The watermark ends at 2026-01-04 17:59: 2 d before it is 2026-01-02 17:59, so only
    // 2026-01-01's index is wholly older.
    assert_eq!(
        server.indices("*").await,
        [
            "logs-2025.12.30",
            "logs-2025.12.30-restored",
            "logs-2026.01.02",
            "logs-2026.01.03",
            "logs-2026.01.04",
            "metrics-2025.12.30",
        ]
    );
    for day in ["logs-2026.01.02", "logs-2026.01.03", "logs-2026.01.04"] {
        assert_eq!(server.count(day).await, 4 * LINES as u64, "{day} is intact");
    }
    for foreign in [
        "logs-2025.12.30",
        "metrics-2025.12.30",
        "logs-2025.12.30-restored",
    ] {
        assert_eq!(server.count(foreign).await, 1, "{foreign} is untouched");
    }
    assert_eq!(
        metrics.retention_deleted_by_table(),
        [("logs-%Y.%m.%d".to_owned(), 1)]
    );
}

#[tokio::test]
async fn a_capture_dated_years_ago_keeps_every_index() {
    let server = SearchServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = ElasticsearchSinkConfig::new(&server.url);
    config.flush_interval = Duration::from_millis(5);
    config.dead_letter = Some(dir.path().join("dead-letter.ndjson"));
    let watermark = Arc::new(AtomicI64::new(i64::MIN));
    let (ctx, sender) = SinkContext::new("search", 4, CancellationToken::new());
    let ctx = ctx.with_watermark(watermark.clone());
    let metrics = ctx.metrics.clone();
    // 2019-01-01, three days (under the default 14): everything stays.
    let start = 1_546_300_800 * 1_000_000_000;
    let feeder = std::thread::spawn(move || {
        for slot in 0..12 {
            let t = start + slot * 6 * HOUR_NS;
            watermark.fetch_max(t - 60_000_000_000, Ordering::Relaxed);
            assert!(sender.send_blocking(Records::Logs(lines(t, slot))));
        }
    });
    elasticsearch::run(config, ctx)
        .await
        .expect("the sink runs");
    feeder.join().expect("feeder");
    assert_eq!(server.count("logs-*").await, 12 * LINES as u64);
    assert_eq!(metrics.retention_deleted_total(), 0);
}
