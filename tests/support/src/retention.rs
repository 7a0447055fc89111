//! Days of event time for the retention tests (SPEC §10): every stream, a slot of records
//! every [`SLOT`], each row's time known so a test can say exactly which rows a cutoff keeps.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use bytes::Bytes;
use sluice_buffers::BufferSender;
use sluice_model::Str;
use sluice_model::event::{Payload, uuid_from_halves};
use sluice_model::records::Records;

use crate::fixtures::{
    app_event, app_rollup, container_event, error_event, gauge_rollup, http_event, log_event,
};

/// Nanoseconds in a day.
pub const DAY_NS: i64 = 24 * 3600 * 1_000_000_000;
/// Event time between two slots: 10 minutes.
pub const SLOT: i64 = 600 * 1_000_000_000;
/// The pipeline's default allowed lateness: the watermark trails the newest record by it.
pub const LATENESS: i64 = 60 * 1_000_000_000;

/// What one slot holds per table.
pub const LOGS: usize = 20;
pub const CONTAINERS: usize = 4;
pub const REQUESTS: usize = 4;
pub const APPS: usize = 2;
pub const SERIES: usize = 2;

/// The records of slot `i` after `start` (ns), one batch per stream, and the slot's time.
pub fn slot(start: i64, i: i64) -> (i64, Vec<Records>) {
    let t = start + i * SLOT;
    let logs = (0..LOGS)
        .map(|n| {
            let mut event = log_event();
            if let Payload::Log(log) = &mut event.payload {
                log.timestamp = t + n as i64;
                // About 200 bytes a line, so pages fill as a foundation's logs fill them.
                log.message = Bytes::from(format!(
                    "slot {i} line {n}: GET /v2/apps/{i}/summary 200 {}",
                    "x".repeat(150)
                ));
            }
            event.timestamp = t;
            event
        })
        .collect();
    let containers = (0..CONTAINERS)
        .map(|n| {
            let mut event = container_event(n as i32, true);
            event.timestamp = t;
            event
        })
        .collect();
    let requests = (0..REQUESTS)
        .map(|n| {
            let mut event = http_event(true);
            if let Payload::Http(http) = &mut event.payload {
                http.stop_timestamp = t;
                http.start_timestamp = t - 1_000_000;
                http.request_id = uuid_from_halves(i as u64, n as u64 + 1);
            }
            event.timestamp = t;
            event
        })
        .collect();
    let mut error = error_event();
    error.timestamp = t;
    let mut lifecycle = app_event();
    lifecycle.ts = t;
    let minute = t.div_euclid(60_000_000_000) * 60;
    let apps = (0..APPS)
        .map(|n| {
            let mut row = app_rollup(true);
            row.app_id = Str::from(format!("app-{n}").as_str());
            row.minute = minute;
            row
        })
        .collect();
    let series = (0..SERIES)
        .map(|n| {
            let mut row = gauge_rollup(true);
            row.name = Str::from(format!("series-{n}").as_str());
            row.minute = minute;
            row
        })
        .collect();
    let batches = vec![
        Records::Logs(logs),
        Records::ContainerMetrics(containers),
        Records::Http(requests),
        Records::Errors(vec![error]),
        Records::AppEvents(vec![lifecycle]),
        Records::AppRollups(apps),
        Records::PlatformRollups(series),
    ];
    (t, batches)
}

/// Rows one slot puts in `table`.
pub fn rows_per_slot(table: &str) -> i64 {
    (match table {
        "log_message" => LOGS,
        "container_metric" => CONTAINERS,
        "http_start_stop" => REQUESTS,
        "platform_error" | "app_event" => 1,
        "app_metric_rollup" => APPS,
        "platform_metric_rollup" => SERIES,
        _ => 0,
    }) as i64
}

/// Records in slots `range`.
pub fn records_in(range: std::ops::Range<i64>) -> u64 {
    let per_slot = LOGS + CONTAINERS + REQUESTS + 2 + APPS + SERIES;
    (range.end - range.start) as u64 * per_slot as u64
}

/// Sends slots `range` after `start` from a blocking thread, moving `watermark` before each
/// slot the way the pipeline's Ingest does (newest event time − [`LATENESS`]), then closes
/// the input (the sender is dropped).
pub fn send_slots(
    sender: BufferSender,
    watermark: Arc<AtomicI64>,
    start: i64,
    range: std::ops::Range<i64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for i in range {
            let (t, batches) = slot(start, i);
            // The newest record of the slot is its last log line.
            watermark.fetch_max(t + LOGS as i64 - 1 - LATENESS, Ordering::Relaxed);
            for batch in batches {
                assert!(sender.send_blocking(batch), "the sink stopped early");
            }
        }
    })
}

/// How many rows of `table` slots `0..slots` leave once the oldest kept time is `cutoff`
/// (ns; rollup tables compare their minute in seconds, as the stores do).
pub fn expected_rows(table: &str, start: i64, slots: i64, cutoff_ns: i64) -> i64 {
    (0..slots)
        .filter(|i| {
            let t = start + i * SLOT;
            match table {
                "app_metric_rollup" | "platform_metric_rollup" => {
                    t.div_euclid(60_000_000_000) * 60 >= cutoff_ns.div_euclid(1_000_000_000)
                }
                // Log lines of a slot are t .. t + LOGS − 1 ns; the cutoff never falls inside.
                _ => t >= cutoff_ns,
            }
        })
        .count() as i64
        * rows_per_slot(table)
}

/// Rows every table of SPEC §3 holds after slots `0..slots`, with raw rows kept `raw` and
/// rollups (and app events) `rollups` (ns) behind the final watermark.
pub fn expected_tables(start: i64, slots: i64, raw: i64, rollups: i64) -> Vec<(&'static str, i64)> {
    let last = start + (slots - 1) * SLOT;
    let watermark = last + LOGS as i64 - 1 - LATENESS;
    [
        ("log_message", raw),
        ("container_metric", raw),
        ("http_start_stop", raw),
        ("platform_error", raw),
        ("app_event", rollups),
        ("app_metric_rollup", rollups),
        ("platform_metric_rollup", rollups),
    ]
    .into_iter()
    .map(|(table, keep)| (table, expected_rows(table, start, slots, watermark - keep)))
    .collect()
}
