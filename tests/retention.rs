//! Retention end to end (SPEC §10): the binary replays a capture from 2024 — years before the
//! wall clock — into SQLite with retention on by default, and keeps every record, because age
//! is measured against the pipeline's watermark, not the wall clock.

use sluice_test_support::{
    assert_success, count_rows, replay_config, run_config, simulated_events, write_capture,
};

const TABLES: [&str; 7] = [
    "log_message",
    "container_metric",
    "http_start_stop",
    "platform_error",
    "app_event",
    "app_metric_rollup",
    "platform_metric_rollup",
];

#[test]
fn a_replay_of_a_capture_dated_years_ago_keeps_every_record() {
    let dir = tempfile::tempdir().expect("temp dir");
    let events = simulated_events(7, 20, 20_000, 0.0);
    let capture = dir.path().join("capture.bin");
    write_capture(&capture, &events);
    // The config names no retention: the default (2 d raw, 14 d rollups) applies.
    let kept = dir.path().join("kept.db");
    let output = run_config(&replay_config(dir.path(), &capture, &kept, 2));
    assert_success(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("Retention: deleted"),
        "nothing was deleted: {stderr}"
    );
    // The same capture with retention off: the reference.
    let all = dir.path().join("all.db");
    let config = replay_config(dir.path(), &capture, &all, 2);
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        format!("{text}retention = {{ enabled = false }}\n"),
    )
    .expect("written");
    assert_success(&run_config(&config));
    for table in TABLES {
        let rows = count_rows(&all, table);
        assert!(
            rows > 0 || matches!(table, "platform_error" | "app_event"),
            "{table} is empty"
        );
        assert_eq!(count_rows(&kept, table), rows, "{table}");
    }
}
