//! The `stdout` sink: one JSON object per record per line, columns named as the tables.

use sluice_model::records::StreamName;
use sluice_sinks::stdout::{self, StdoutSinkConfig, StdoutSinkError};
use sluice_test_support::fixtures::*;
use tokio::io::AsyncReadExt;

#[tokio::test]
async fn lines_parse_as_json_with_their_stream_and_the_table_columns() {
    let (ctx, feeder) = feed(every_stream());
    let metrics = ctx.metrics.clone();
    let (writer, mut reader) = tokio::io::duplex(1 << 20);
    let config = StdoutSinkConfig {
        streams: StreamName::all(),
        buffer: Default::default(),
    };
    stdout::run_with_writer(config, ctx, writer)
        .await
        .expect("written");
    feeder.join().expect("feeder thread");
    let mut output = String::new();
    reader
        .read_to_string(&mut output)
        .await
        .expect("utf-8 output");

    let lines: Vec<serde_json::Value> = output
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 12);
    assert_eq!(metrics.written_total(), 12);
    let tables = [
        ("logs", "log_message"),
        ("container_metrics", "container_metric"),
        ("http", "http_start_stop"),
        ("app_events", "app_event"),
        ("app_rollups", "app_metric_rollup"),
        ("platform_rollups", "platform_metric_rollup"),
        ("errors", "platform_error"),
    ];
    for line in &lines {
        let object = line.as_object().expect("an object");
        let stream = object["stream"].as_str().expect("a stream name");
        let (_, table) = tables
            .iter()
            .find(|(s, _)| *s == stream)
            .expect("a known stream");
        let (_, columns, _) = SPEC_TABLES
            .iter()
            .find(|(name, _, _)| name == table)
            .expect("a SPEC table");
        let keys: Vec<&str> = object.keys().map(String::as_str).collect();
        let mut expected: Vec<&str> = columns.to_vec();
        expected.push("stream");
        if stream.ends_with("_rollups") {
            // The window's width in seconds: the minute tables' rows here.
            assert_eq!(object["window"], 60, "{line}");
            expected.push("window");
        }
        expected.sort_unstable();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, expected, "columns of a {stream} line");
    }

    let of = |stream: &str| -> Vec<&serde_json::Value> {
        lines.iter().filter(|l| l["stream"] == stream).collect()
    };
    let http = of("http");
    assert_eq!(
        http[0]["request_id"],
        "f47ac10b-58cc-4372-a567-0e02b2c3d479"
    );
    assert_eq!(http[0]["app_id"], APP);
    assert_eq!(http[0]["peer_type"], "Server");
    assert_eq!(http[0]["method"], "POST");
    assert!(http[1]["app_id"].is_null() && http[1]["instance_index"].is_null());
    let logs = of("logs");
    assert_eq!(logs[0]["message"], "boom \u{FFFD} done");
    assert_eq!(logs[0]["message_type"], "ERR");
    assert_eq!(logs[0]["ts"], TS);
    assert_eq!(logs[0]["id"].as_str().map(str::len), Some(32));
    let metrics_lines = of("container_metrics");
    assert!(metrics_lines[1]["memory_bytes_quota"].is_null());
    assert_eq!(metrics_lines[0]["disk_bytes_quota"], 8192);
    // Rollups are printed as they come: provisional, then final.
    let rollups = of("app_rollups");
    assert_eq!(
        (
            rollups[0]["requests"].clone(),
            rollups[1]["requests"].clone()
        ),
        (1.into(), 4.into())
    );
    assert!(rollups[0]["cpu_avg"].is_null());
    let counter = of("platform_rollups")
        .into_iter()
        .find(|l| l["kind"] == "counter")
        .expect("the counter rollup");
    assert_eq!(counter["instance"], "");
    assert_eq!(counter["total_last"], 107);
    assert!(counter["value_avg"].is_null());
}

#[tokio::test]
async fn rollups_of_every_width_are_printed_with_their_width() {
    let (ctx, feeder) = hourly_sink(rollups_of_three_widths());
    let (writer, mut reader) = tokio::io::duplex(1 << 20);
    let config = StdoutSinkConfig {
        streams: StreamName::all(),
        buffer: Default::default(),
    };
    stdout::run_with_writer(config, ctx, writer)
        .await
        .expect("written");
    feeder.join().expect("feeder thread");
    let mut output = String::new();
    reader.read_to_string(&mut output).await.expect("utf-8");
    let widths: Vec<(String, i64, i64)> = output
        .lines()
        .map(|line| {
            let line: serde_json::Value = serde_json::from_str(line).expect("JSON");
            let stream = line["stream"].as_str().expect("a stream").to_owned();
            (
                stream,
                line["window"].as_i64().expect("a width"),
                line["minute"].as_i64().expect("a start"),
            )
        })
        .collect();
    assert_eq!(
        widths,
        [
            ("app_rollups".to_owned(), 60, MINUTE),
            ("app_rollups".to_owned(), 3600, HOUR),
            ("app_rollups".to_owned(), 300, MINUTE),
            ("platform_rollups".to_owned(), 3600, HOUR),
            ("app_rollups".to_owned(), 60, MINUTE),
        ]
    );
}

#[tokio::test]
async fn a_closed_stdout_ends_the_sink_with_an_error() {
    let (ctx, sender) =
        sluice_sinks::SinkContext::new("test", 4, tokio_util::sync::CancellationToken::new());
    let metrics = ctx.metrics.clone();
    let (writer, reader) = tokio::io::duplex(64);
    // The reading end of the pipe goes away.
    drop(reader);
    let feeder = send_all(
        sender,
        vec![sluice_model::records::Records::Errors(vec![error_event()])],
    );
    let config = StdoutSinkConfig {
        streams: StreamName::all(),
        buffer: Default::default(),
    };
    let error = stdout::run_with_writer(config, ctx, writer)
        .await
        .expect_err("a broken pipe");
    let StdoutSinkError::Write { source } = &error else {
        panic!("expected a write error, got {error}");
    };
    assert_eq!(source.kind(), std::io::ErrorKind::BrokenPipe);
    assert_eq!(metrics.dropped.get(), 1);
    // The sink is gone: the feeder's send fails rather than blocking forever.
    let _ = feeder.join();
}
