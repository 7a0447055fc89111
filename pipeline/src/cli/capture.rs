//! `sluice capture`: a Firehose, or the built-in simulator, recorded into a replay file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use sluice_model::framing::{ReplayWriter, write_frame};
use sluice_model::reference::encode_v1;
use sluice_simulator::{Clock, Generator, SimulatorConfig};
use sluice_sources::firehose::FirehoseConfig;
use sluice_sources::firehose::capture::{CaptureProgress, capture};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::status::{finish_spinner, human, spinner};

#[derive(Debug, Args)]
pub(super) struct CaptureArgs {
    /// The replay file to write; a name ending in `.gz` is gzip-compressed.
    #[arg(long, short)]
    output: PathBuf,
    /// Stop after this many envelopes (a Firehose capture otherwise runs until Ctrl-C).
    #[arg(long)]
    limit: Option<u64>,
    /// Record the built-in simulator instead of a Firehose: deterministic for a --seed, with
    /// simulated event time. Needs --limit.
    #[arg(long, requires = "limit", conflicts_with = "url")]
    simulator: bool,
    /// Simulator: how many apps.
    #[arg(long, default_value_t = 50, requires = "simulator")]
    apps: u32,
    /// Simulator: the seed.
    #[arg(long, default_value_t = 1, requires = "simulator")]
    seed: u64,
    /// Simulator: envelopes per simulated second (how much event time the capture spans).
    #[arg(long, default_value_t = 2000, requires = "simulator")]
    density: u64,
    /// Simulator: share of records minutes in the past (late), 0.0–1.0.
    #[arg(long, default_value_t = 0.0, requires = "simulator")]
    late_fraction: f64,
    /// Firehose: the Traffic Controller (`wss://doppler.sys.example.com:443`).
    #[arg(long, required_unless_present = "simulator")]
    url: Option<String>,
    /// Firehose: UAA's base URL (`https://uaa.sys.example.com`).
    #[arg(long, required_unless_present = "simulator")]
    uaa_url: Option<String>,
    /// Firehose: the subscription id (use one no other consumer uses, or you split its stream).
    #[arg(long, default_value = "sluice-capture")]
    subscription_id: String,
    /// Firehose: the UAA client id (needs the doppler.firehose scope).
    #[arg(long, default_value = "sluice")]
    client_id: String,
    /// Firehose: the UAA client secret.
    #[arg(
        long,
        env = "UAA_CLIENT_SECRET",
        default_value = "",
        hide_default_value = true
    )]
    client_secret: String,
    /// Firehose: accept any TLS certificate.
    #[arg(long)]
    skip_tls_verify: bool,
}

pub(super) fn main(args: CaptureArgs) -> ExitCode {
    let result = if args.simulator {
        capture_simulator(&args).map_err(|e| format!("cannot write {}: {e}", args.output.display()))
    } else {
        capture_firehose(&args)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("Capture failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The simulator's envelopes, encoded as a Firehose sends them, into a replay file.
pub(super) fn capture_simulator(args: &CaptureArgs) -> std::io::Result<()> {
    let config = SimulatorConfig {
        apps: args.apps,
        seed: args.seed,
        rate: 0,
        clock: Clock::Simulated,
        density: args.density.max(1),
        late_fraction: args.late_fraction,
        ..SimulatorConfig::default()
    };
    write_simulated(&config, args.limit.unwrap_or(0), &args.output)
}

/// Writes `count` simulated envelopes to `path` with a progress line.
pub(super) fn write_simulated(
    config: &SimulatorConfig,
    count: u64,
    path: &Path,
) -> std::io::Result<()> {
    let started = Instant::now();
    let bar = spinner();
    let mut writer = ReplayWriter::create(path)?;
    let mut generator = Generator::new(config);
    let mut events = Vec::with_capacity(4096);
    let mut frames = Vec::with_capacity(1 << 20);
    let mut written = 0u64;
    while written < count {
        let n = (count - written).min(4096) as usize;
        events.clear();
        generator.fill(n, &mut events);
        frames.clear();
        for event in &events {
            write_frame(&mut frames, &encode_v1(event));
        }
        writer.write_framed(&frames)?;
        written += n as u64;
        bar.set_message(format!("captured {written} of {count} simulated envelopes"));
    }
    writer.finish()?;
    finish_spinner(&bar);
    info!(path = %path.display(), envelopes = written, seconds = started.elapsed().as_secs_f64(), "Capture written.");
    Ok(())
}

fn capture_firehose(args: &CaptureArgs) -> Result<(), String> {
    let (Some(url), Some(uaa_url)) = (args.url.clone(), args.uaa_url.clone()) else {
        return Err("--url and --uaa-url are needed to capture a Firehose".to_owned());
    };
    let config: FirehoseConfig = toml::from_str(&format!(
        "url = {url:?}\nuaa_url = {uaa_url:?}\nsubscription_id = {:?}\nclient_id = {:?}\nclient_secret = {:?}\nskip_tls_verify = {}\n",
        args.subscription_id, args.client_id, args.client_secret, args.skip_tls_verify
    ))
    .map_err(|e| format!("invalid Firehose settings: {e}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let output = args.output.clone();
    let limit = args.limit;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let on_signal = shutdown.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            info!("Stopping the capture; finishing the file.");
            on_signal.cancel();
        });
        let bar = spinner();
        let started = Instant::now();
        let mut last_draw = Instant::now() - Duration::from_secs(1);
        let summary = capture(config, &output, limit, shutdown, |p: &CaptureProgress| {
            if last_draw.elapsed() >= Duration::from_millis(200) {
                let rate = p.envelopes as f64 / started.elapsed().as_secs_f64().max(1e-3);
                bar.set_message(format!(
                    "captured {} envelopes ({} MiB) at {}/s, reconnects {}",
                    p.envelopes,
                    p.bytes / (1024 * 1024),
                    human(rate),
                    p.reconnects
                ));
                last_draw = Instant::now();
            }
        })
        .await;
        finish_spinner(&bar);
        let summary = summary.map_err(|e| e.to_string())?;
        info!(
            path = %summary.path.display(),
            envelopes = summary.envelopes,
            file_bytes = summary.file_bytes,
            end = ?summary.end,
            "Capture written."
        );
        Ok(())
    })
}
