//! `sluice bench`: the pipeline's throughput and memory, measured end to end.
//!
//! `--source file` (the default) first writes a simulated capture (not timed), then times a
//! run of it through decode → Ingest → Route → both rollups → a blackhole sink: every stage a
//! Firehose envelope goes through except the network and the store. `--source simulator`
//! feeds the generator's events straight in (no decode) and suits long memory runs: e.g.
//! `--event-time 6h --apps 5000` covers six hours of event time and reports how resident
//! memory moves from start to end.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use sluice_simulator::{Clock, SimulatorConfig};
use sluice_sinks::blackhole::BlackholeSinkConfig;
use sluice_sources::file::{FileSourceConfig, ReplayFormat};
use tracing::error;

use super::capture::write_simulated;
use crate::config::{Config, PipelineConfig, SinkConfig, SourceConfig, StreamName};
use crate::runtime::{self, RunOptions};
use crate::status::human;
use crate::telemetry::memory;

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
    let config = Config {
        pipeline,
        sources: BTreeMap::from([("bench".to_owned(), source)]),
        sinks: BTreeMap::from([(
            "discard".to_owned(),
            SinkConfig::Blackhole(BlackholeSinkConfig {
                streams: StreamName::all(),
            }),
        )]),
        filters: BTreeMap::new(),
        admin: None,
        api: None,
        cluster: None,
    };

    // Resident memory, sampled while the run goes.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut samples = Vec::new();
            while sampling.load(Ordering::Relaxed) {
                if let Some((rss, _)) = memory() {
                    samples.push((started.elapsed(), rss));
                }
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
        let at = |fraction: f64| samples[((samples.len() - 1) as f64 * fraction) as usize];
        let curve: Vec<String> = [0.1, 0.25, 0.5, 0.75, 1.0]
            .iter()
            .map(|f| {
                let (t, rss) = at(*f);
                format!("{:.0}s {} MiB", t.as_secs_f64(), rss / (1 << 20))
            })
            .collect();
        println!("  RSS over time  {}", curve.join(" → "));
    }
    Ok(())
}
