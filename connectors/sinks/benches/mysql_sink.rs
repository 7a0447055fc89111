//! Rows per second the `mysql` sink writes into a real MariaDB, side by side with
//! `LOAD DATA LOCAL INFILE` of the same rows into the same server in the same run: raw
//! container metrics (inserts into an empty table) and app rollups (upserts over existing
//! rows; `LOAD DATA … REPLACE` for the comparison).
//!
//! `cargo bench -p sluice-sinks --bench mysql_sink` (server: `SLUICE_TEST_MYSQL_URL`,
//! default `mysql://root@127.0.0.1:3306`; the `mariadb` client must be installed). Under
//! `cargo test` it runs once on a few rows and checks the counts.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use sluice_model::Str;
use sluice_model::event::{ContainerMetric, Event, Header, Payload};
use sluice_model::records::Records;
use sluice_model::records::{AppRollup, StreamName};
use sluice_sinks::SinkContext;
use sluice_sinks::mysql::{self, MysqlSinkConfig};
use sluice_sinks::rows::{self, Value};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection};
use tokio_util::sync::CancellationToken;

const BATCH: usize = 5_000;

fn container_metrics(rows: usize) -> Vec<Event> {
    let header = Header {
        origin: Str::from("rep"),
        deployment: Str::from("cf"),
        job: Str::from("diego_cell"),
        index: Str::from("3"),
        ip: Str::from("10.0.16.4"),
        tags: Default::default(),
    };
    (0..rows)
        .map(|i| Event {
            timestamp: 1_710_234_017_448_058_219 + i as i64 * 1_000,
            header: header.clone(),
            payload: Payload::Container(ContainerMetric {
                application_id: Str::from(format!("{:08x}-58cc-4372-a567-0e02b2c3d479", i % 5000)),
                instance_index: (i % 4) as i32,
                cpu_percentage: 12.5 + (i % 100) as f64,
                memory_bytes: 1 << 28,
                disk_bytes: 1 << 29,
                memory_bytes_quota: Some(1 << 30),
                disk_bytes_quota: Some(1 << 31),
            }),
        })
        .collect()
}

fn app_rollups(rows: usize, requests: u64) -> Vec<AppRollup> {
    (0..rows)
        .map(|i| AppRollup {
            names: None,
            app_id: Str::from(format!("{:08x}-58cc-4372-a567-0e02b2c3d479", i % 5000)),
            minute: 1_710_234_000 + (i / 5000) as i64 * 60,
            window: 60,
            instances: 4,
            cpu_avg: Some(12.5),
            cpu_max: Some(40.0),
            memory_avg: Some(2.5e8),
            memory_max: Some(1 << 28),
            disk_avg: Some(5.0e8),
            disk_max: Some(1 << 29),
            requests,
            status_2xx: requests,
            status_3xx: 0,
            status_4xx: 0,
            status_5xx: 0,
            response_bytes: 1000,
            latency_avg_ms: Some(3.5),
            latency_max_ms: Some(20.0),
            latency_p50_ms: Some(3.0),
            latency_p95_ms: Some(9.0),
            latency_p99_ms: Some(15.0),
            log_lines: 10,
            log_err_lines: 1,
            app_events: 0,
            is_final: true,
        })
        .collect()
}

/// Runs the sink over `batches` to the end; returns the time from the first batch on.
async fn run_sink(url: &str, batches: Vec<Records>) -> Duration {
    let mut config = MysqlSinkConfig::new(url, StreamName::all());
    config.retention.enabled = false;
    config.batch_size = std::num::NonZeroUsize::new(BATCH).expect("non-zero");
    let (ctx, sender) = SinkContext::new("bench", 16, CancellationToken::new());
    let started = Instant::now();
    let feeder = std::thread::spawn(move || {
        for batch in batches {
            assert!(sender.send_blocking(batch), "the sink stopped");
        }
    });
    mysql::run(config, ctx).await.expect("mysql sink");
    feeder.join().expect("feeder");
    started.elapsed()
}

/// The rows as `LOAD DATA`'s default format: tab-separated, `\N` for NULL.
fn tsv(records: &Records) -> Vec<u8> {
    let table = rows::table(records.stream());
    let mut values = Vec::new();
    rows::push_rows(records, &mut values);
    let mut out = String::new();
    for row in values.chunks_exact(table.columns.len()) {
        for (i, value) in row.iter().enumerate() {
            if i > 0 {
                out.push('\t');
            }
            match value {
                Value::Null => out.push_str("\\N"),
                Value::Int(n) => write!(out, "{n}").expect("string"),
                Value::Real(x) => write!(out, "{x:?}").expect("string"),
                Value::Text(text) => {
                    for c in text.chars() {
                        match c {
                            '\t' => out.push_str("\\t"),
                            '\n' => out.push_str("\\n"),
                            '\\' => out.push_str("\\\\"),
                            c => out.push(c),
                        }
                    }
                }
            }
        }
        out.push('\n');
    }
    out.into_bytes()
}

/// `LOAD DATA LOCAL INFILE` of `data` through the `mariadb` client; returns its wall time.
fn load_data(url: &str, table: &str, replace: bool, data: &[u8]) -> Duration {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(data).expect("rows written");
    file.flush().expect("rows flushed");
    let options: sqlx::mysql::MySqlConnectOptions = url.parse().expect("a MySQL URL");
    let mode = if replace { "REPLACE" } else { "" };
    let sql = format!(
        "LOAD DATA LOCAL INFILE '{}' {mode} INTO TABLE {table} CHARACTER SET utf8mb4",
        file.path().display()
    );
    let started = Instant::now();
    let output = Command::new("mariadb")
        .arg("--local-infile=1")
        .arg("--protocol=tcp")
        .arg(format!("--host={}", options.get_host()))
        .arg(format!("--port={}", options.get_port()))
        .arg(format!("--user={}", options.get_username()))
        .arg(format!(
            "--database={}",
            options.get_database().expect("a database")
        ))
        .args(password_arg(url))
        .arg("-e")
        .arg(&sql)
        .output()
        .expect("the mariadb client runs");
    let elapsed = started.elapsed();
    assert!(
        output.status.success(),
        "LOAD DATA failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    elapsed
}

fn password_arg(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    parsed.password().map(|p| format!("--password={p}"))
}

async fn execute(url: &str, sql: &str) {
    let options: sqlx::mysql::MySqlConnectOptions = url.parse().expect("a MySQL URL");
    let mut connection = options.connect().await.expect("connected");
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
        .execute(&mut connection)
        .await
        .expect("statement");
    connection.close().await.expect("closed");
}

async fn count(url: &str, table: &str) -> i64 {
    let options: sqlx::mysql::MySqlConnectOptions = url.parse().expect("a MySQL URL");
    let mut connection = options.connect().await.expect("connected");
    sqlx::query_scalar(AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(&mut connection)
        .await
        .expect("count")
}

fn rate(rows: usize, elapsed: Duration) -> f64 {
    rows as f64 / elapsed.as_secs_f64()
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let (raw_rows, rollup_rows) = if benching {
        (500_000, 200_000)
    } else {
        (2_000, 1_000)
    };
    let server = std::env::var("SLUICE_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_owned());
    let server = server.trim_end_matches('/');
    let database = format!("sluice_bench_{}", std::process::id());
    let url = format!("{server}/{database}");
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        // Creates the database and schema.
        run_sink(&url, vec![]).await;

        let metrics = container_metrics(raw_rows);
        let batches: Vec<Records> = metrics
            .chunks(BATCH)
            .map(|c| Records::ContainerMetrics(c.to_vec()))
            .collect();
        let data = tsv(&Records::ContainerMetrics(metrics));
        let sink_raw = run_sink(&url, batches).await;
        assert_eq!(count(&url, "container_metric").await, raw_rows as i64);
        execute(&url, "TRUNCATE TABLE container_metric").await;
        let load_raw = load_data(&url, "container_metric", false, &data);
        assert_eq!(count(&url, "container_metric").await, raw_rows as i64);

        // Upserts: the rows exist (provisional), then are rewritten (final).
        let first: Vec<Records> = app_rollups(rollup_rows, 1)
            .chunks(BATCH)
            .map(|c| Records::AppRollups(c.to_vec()))
            .collect();
        run_sink(&url, first).await;
        let rollups = app_rollups(rollup_rows, 2);
        let data = tsv(&Records::AppRollups(rollups.clone()));
        let batches = rollups
            .chunks(BATCH)
            .map(|c| Records::AppRollups(c.to_vec()))
            .collect();
        let sink_upsert = run_sink(&url, batches).await;
        let load_upsert = load_data(&url, "app_metric_rollup", true, &data);
        assert_eq!(count(&url, "app_metric_rollup").await, rollup_rows as i64);

        execute(
            &format!("{server}/"),
            &format!("DROP DATABASE `{database}`"),
        )
        .await;

        println!(
            "mysql_sink against {}",
            server.rsplit('@').next().unwrap_or(server)
        );
        println!(
            "{:<34} {:>12} {:>12} {:>8}",
            "", "sink rows/s", "LOAD DATA", "ratio"
        );
        for (what, rows, sink, load) in [
            ("container_metric (insert)", raw_rows, sink_raw, load_raw),
            (
                "app_metric_rollup (upsert)",
                rollup_rows,
                sink_upsert,
                load_upsert,
            ),
        ] {
            println!(
                "{what:<34} {:>12.0} {:>12.0} {:>7.0}%",
                rate(rows, sink),
                rate(rows, load),
                100.0 * load.as_secs_f64() / sink.as_secs_f64()
            );
        }
    });
}
