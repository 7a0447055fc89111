//! `sluice bench`: the pipeline's throughput and memory, measured end to end.
//!
//! `--source file` (the default) first writes a simulated capture (not timed), then times a
//! run of it through decode → Ingest → Route → both rollups → a blackhole sink: every stage a
//! Firehose envelope goes through except the network and the store. `--source simulator`
//! feeds the generator's events straight in (no decode) and suits long memory runs: e.g.
//! `--event-time 6h --apps 5000` covers six hours of event time and reports how resident
//! memory moves from start to end.
//!
//! `--sink sqlite|mysql` replaces the blackhole with the real store (a fresh file, or a
//! fresh database on the server) with its retention on (`--raw`, `--rollups`), and prints
//! the rate of every tenth of the run, resident memory and the store's size as it goes: with
//! `--source simulator --event-time 4d` days of event time pass in minutes, so retention
//! reaches its steady state within the run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use sluice_simulator::{Clock, SimulatorConfig};
use sluice_sinks::blackhole::BlackholeSinkConfig;
use sluice_sinks::mysql::{DatabaseUrl, MysqlSinkConfig};
use sluice_sinks::retention::RetentionConfig;
use sluice_sinks::sqlite::SqliteSinkConfig;
use sluice_sources::file::{FileSourceConfig, ReplayFormat};
use tracing::error;

use super::capture::write_simulated;
use crate::config::{Config, PipelineConfig, SinkConfig, SourceConfig, StreamName};
use crate::runtime::{self, RunOptions};
use crate::status::human;
use crate::telemetry::{GraphMetrics, memory};

#[derive(Debug, Args)]
pub(super) struct BenchArgs {
    /// Envelopes to push through.
    #[arg(long, default_value_t = 5_000_000)]
    envelopes: u64,
    /// Apps in the simulated foundation.
    #[arg(long, default_value_t = 5000)]
    apps: u32,
    /// timely worker threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// How much event time the envelopes span (sets how many windows open and close).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    event_time: Duration,
    /// Where the envelopes come from.
    #[arg(long, value_enum, default_value_t = BenchSource::File)]
    source: BenchSource,
    /// The capture file for `--source file`; written when absent, reused when present.
    #[arg(long)]
    capture: Option<PathBuf>,
    /// Keep state (SPEC §9) in a temporary directory with a checkpoint every INTERVAL, to
    /// measure what checkpoints cost; reports their count, size and duration.
    #[arg(long, value_name = "INTERVAL", value_parser = humantime::parse_duration)]
    checkpoint_interval: Option<Duration>,
    /// Where the rows go: discarded, or the real store.
    #[arg(long, value_enum, default_value_t = BenchSink::Blackhole)]
    sink: BenchSink,
    /// `--sink sqlite`: the database file (default: in a temporary directory). An existing
    /// file is written on, so a second run measures a grown store.
    #[arg(long)]
    db: Option<PathBuf>,
    /// `--sink mysql`: the database (dropped and created afresh at the start).
    #[arg(
        long,
        env = "SLUICE_BENCH_MYSQL_URL",
        default_value = "mysql://root@127.0.0.1:3306/sluice_bench"
    )]
    mysql_url: String,
    /// How long raw rows are kept, behind the watermark (`0s`: retention off).
    #[arg(long, default_value = "2d", value_parser = humantime::parse_duration)]
    raw: Duration,
    /// How long rollups and app events are kept, behind the watermark.
    #[arg(long, default_value = "14d", value_parser = humantime::parse_duration)]
    rollups: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BenchSink {
    /// Counts and discards: the graph's own speed.
    Blackhole,
    /// The embedded store.
    Sqlite,
    /// MySQL / MariaDB.
    Mysql,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum BenchSource {
    /// A pre-generated replay file: includes decoding.
    File,
    /// The in-process generator: no decoding, no file; for long memory runs.
    Simulator,
}

pub(super) fn main(args: BenchArgs) -> ExitCode {
    match bench(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("Bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench(args: &BenchArgs) -> Result<(), String> {
    let density = (args.envelopes as f64 / args.event_time.as_secs_f64().max(1.0)).ceil() as u64;
    let simulator = SimulatorConfig {
        apps: args.apps,
        rate: 0,
        limit: Some(args.envelopes),
        clock: Clock::Simulated,
        density: density.max(1),
        ..SimulatorConfig::default()
    };
    let mut _temporary = None;
    let source = match args.source {
        BenchSource::Simulator => SourceConfig::Simulator(simulator),
        BenchSource::File => {
            let path = match &args.capture {
                Some(path) => path.clone(),
                None => {
                    let dir =
                        tempfile::tempdir().map_err(|e| format!("no temporary directory: {e}"))?;
                    let path = dir.path().join("bench.bin");
                    _temporary = Some(dir);
                    path
                }
            };
            if !path.exists() {
                eprintln!(
                    "Writing {} simulated envelopes to {} (not timed)…",
                    args.envelopes,
                    path.display()
                );
                write_simulated(&simulator, args.envelopes, &path)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            }
            let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            eprintln!(
                "Capture: {} ({:.1} MiB).",
                path.display(),
                bytes as f64 / (1 << 20) as f64
            );
            SourceConfig::File(FileSourceConfig {
                path,
                format: ReplayFormat::Dropsonde,
            })
        }
    };
    let state = match args.checkpoint_interval {
        Some(_) => Some(tempfile::tempdir().map_err(|e| format!("no temporary directory: {e}"))?),
        None => None,
    };
    let mut pipeline = PipelineConfig {
        workers: Some(args.workers),
        ..PipelineConfig::default()
    };
    if let (Some(interval), Some(dir)) = (args.checkpoint_interval, &state) {
        pipeline.state_dir = Some(dir.path().join("state"));
        pipeline.checkpoint_interval = interval;
    }
    let retention = if args.raw.is_zero() {
        RetentionConfig::disabled()
    } else {
        RetentionConfig {
            raw: args.raw,
            rollups: args.rollups,
            ..RetentionConfig::default()
        }
    };
    let mut store_dir = None;
    let (sink_name, sink) = match args.sink {
        BenchSink::Blackhole => (
            "discard",
            SinkConfig::Blackhole(BlackholeSinkConfig {
                streams: StreamName::all(),
            }),
        ),
        BenchSink::Sqlite => {
            let path = match &args.db {
                Some(path) => path.clone(),
                None => {
                    let dir =
                        tempfile::tempdir().map_err(|e| format!("no temporary directory: {e}"))?;
                    let path = dir.path().join("bench.db");
                    store_dir = Some(dir);
                    path
                }
            };
            let mut config = SqliteSinkConfig::new(path, StreamName::all());
            config.retention = retention;
            ("sqlite", SinkConfig::Sqlite(config))
        }
        BenchSink::Mysql => {
            drop_database(&args.mysql_url)?;
            let mut config = MysqlSinkConfig::new(args.mysql_url.clone(), StreamName::all());
            config.retention = retention;
            ("mysql", SinkConfig::Mysql(config))
        }
    };
    let store_path = match &sink {
        SinkConfig::Sqlite(config) => Some(config.path.clone()),
        _ => None,
    };
    let config = Config {
        pipeline,
        sources: BTreeMap::from([("bench".to_owned(), source)]),
        sinks: BTreeMap::from([(sink_name.to_owned(), sink)]),
        filters: BTreeMap::new(),
        admin: None,
        api: None,
        cluster: None,
        metadata: None,
    };

    // Resident memory, envelopes in and the store's size, sampled while the run goes.
    let graph = GraphMetrics::new();
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        let graph = graph.clone();
        let store_path = store_path.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut samples = Vec::new();
            while sampling.load(Ordering::Relaxed) {
                samples.push(Sample {
                    at: started.elapsed(),
                    rss: memory().map_or(0, |(rss, _)| rss),
                    envelopes: graph.records_in.get(),
                    store: store_path.as_deref().map_or(0, sqlite_size),
                });
                std::thread::sleep(Duration::from_millis(100));
            }
            samples
        })
    };
    let started = Instant::now();
    let summary = runtime::run(
        config,
        RunOptions {
            status: true,
            graph_metrics: Some(graph.clone()),
            ..RunOptions::default()
        },
        super::signals::shutdown_on_signal(),
    )
    .map_err(|e| e.to_string())?;
    let elapsed = started.elapsed();
    sampling.store(false, Ordering::Relaxed);
    let samples = sampler.join().unwrap_or_default();

    let records = summary.metrics.graph.records_in.get();
    let written: u64 = summary
        .metrics
        .sinks
        .iter()
        .map(|(_, m)| m.written_total())
        .sum();
    let rate = records as f64 / elapsed.as_secs_f64();
    println!(
        "sluice bench: {:?} source, {} workers, {} apps, {} of event time",
        args.source,
        args.workers,
        args.apps,
        humantime::format_duration(args.event_time)
    );
    println!("  envelopes      {records}");
    println!("  rows out       {written}");
    println!("  elapsed        {:.2} s", elapsed.as_secs_f64());
    println!("  throughput     {} envelopes/s", human(rate));
    if let Some(interval) = args.checkpoint_interval {
        let checkpoints = &summary.metrics.graph.checkpoint;
        let written = checkpoints.written.get();
        let mean_ms = checkpoints.total_micros.get() as f64 / written.max(1) as f64 / 1e3;
        println!(
            "  checkpoints    {written} (every {}), {} failed; mean {mean_ms:.1} ms to write, \
             last {} KiB",
            humantime::format_duration(interval),
            checkpoints.failures.get(),
            checkpoints.last_bytes.load(Ordering::Relaxed) / 1024,
        );
    }
    if let Some((_, peak)) = memory() {
        println!("  peak RSS       {} MiB", peak / (1 << 20));
    }
    if !samples.is_empty() {
        let at = |fraction: f64| &samples[((samples.len() - 1) as f64 * fraction) as usize];
        let curve: Vec<String> = [0.1, 0.25, 0.5, 0.75, 1.0]
            .iter()
            .map(|f| {
                let sample = at(*f);
                format!(
                    "{:.0}s {} MiB",
                    sample.at.as_secs_f64(),
                    sample.rss / (1 << 20)
                )
            })
            .collect();
        println!("  RSS over time  {}", curve.join(" → "));
    }
    if args.sink != BenchSink::Blackhole {
        let deleted: u64 = summary
            .metrics
            .sinks
            .iter()
            .map(|(_, m)| m.retention_deleted_total())
            .sum();
        println!("  retention      {deleted} rows deleted");
        let size = match &store_path {
            Some(path) => sqlite_size(path),
            None => mysql_size(&args.mysql_url)?,
        };
        println!("  store size     {} MiB at the end", size / (1 << 20));
        print_tenths(&samples, records, elapsed, store_path.is_some());
    }
    drop(store_dir);
    Ok(())
}

/// One look at the run.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    rss: u64,
    envelopes: u64,
    /// The SQLite file and its WAL (0 for other sinks).
    store: u64,
}

/// The rate of every tenth of the envelopes, with memory and store size (SQLite; MySQL's
/// only at the end) at its end; the last tenth ends when the run does (the sink has written
/// everything).
fn print_tenths(samples: &[Sample], total: u64, elapsed: Duration, with_store: bool) {
    println!("  tenth   until    envelopes/s   RSS MiB   store MiB");
    let mut previous = (Duration::ZERO, 0u64);
    for tenth in 1..=10u64 {
        let goal = total * tenth / 10;
        let end = if tenth == 10 {
            samples.last().map(|s| Sample {
                at: elapsed,
                envelopes: total,
                ..*s
            })
        } else {
            samples.iter().find(|s| s.envelopes >= goal).copied()
        };
        let Some(end) = end else { break };
        let seconds = (end.at - previous.0).as_secs_f64().max(1e-9);
        let rate = (end.envelopes - previous.1) as f64 / seconds;
        let store = if with_store {
            (end.store / (1 << 20)).to_string()
        } else {
            "-".to_owned()
        };
        println!(
            "  {tenth:>5} {:>7.1}s {:>13} {:>9} {store:>11}",
            end.at.as_secs_f64(),
            human(rate),
            end.rss / (1 << 20),
        );
        previous = (end.at, end.envelopes);
    }
    // The last tenth ends with the run: after the last envelope entered the graph the store
    // still writes what its buffer holds, a finite run's final retention pass deletes what
    // the last watermark expired, and the store closes. Said apart, since a job that keeps
    // running never pays it at once.
    if let Some(last_in) = samples.iter().find(|s| s.envelopes >= total) {
        println!(
            "  of which {:.1} s after the last envelope entered (the buffer drained, the final \
             retention pass, the store closed)",
            (elapsed.saturating_sub(last_in.at)).as_secs_f64()
        );
    }
}

/// The SQLite file and its write-ahead log, in bytes.
fn sqlite_size(path: &std::path::Path) -> u64 {
    let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    size(path) + size(std::path::Path::new(&wal))
}

/// A small runtime for the MySQL calls the bench makes itself.
fn block_on<T>(future: impl std::future::Future<Output = T>) -> Result<T, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("no runtime: {e}"))?;
    Ok(runtime.block_on(future))
}

fn mysql_size(url: &str) -> Result<u64, String> {
    block_on(sluice_sinks::mysql::store_size(&DatabaseUrl(
        url.to_owned(),
    )))?
    .map_err(|e| e.to_string())
}

/// Drops the bench's database so every run starts from an empty store.
fn drop_database(url: &str) -> Result<(), String> {
    block_on(sluice_sinks::mysql::drop_database(&DatabaseUrl(
        url.to_owned(),
    )))?
    .map_err(|e| e.to_string())
}
