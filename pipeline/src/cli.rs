//! The `sluice` command line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio::sync::Notify;
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

use crate::config::Config;
use crate::runtime::{self, RunOptions};
use crate::status::LogWriter;
use crate::topology;

mod bench;
mod capture;
mod signals;
mod simulate;
mod top;

/// Sluice consumes the Cloud Foundry Loggregator Firehose and keeps what it carries in stores
/// people query: app logs, container metrics, HTTP requests, app lifecycle events and
/// per-minute rollups, in SQLite (embedded, the default), MySQL or Elasticsearch.
#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter, in tracing's EnvFilter syntax (`info`, `sluice=debug,warn`).
    #[arg(long, global = true, env = "SLUICE_LOG", default_value = "info")]
    log: String,
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the pipeline: read the configured sources, keep rollups, write the sinks.
    ///
    /// Without --config it runs the embedded default: the built-in Firehose simulator into
    /// ./sluice-data/sluice.db. A run whose sources are all finite (replay files, a simulator
    /// with a limit) exits 0 once everything is written and every window closed. Ctrl-C or
    /// SIGTERM stops reading, writes everything already read, flushes open windows as
    /// provisional rows and exits 0; a second Ctrl-C exits at once. SIGHUP (or a change of
    /// the file, with --watch) reloads the config live: unchanged sources and sinks keep
    /// running, added ones start, removed ones stop (sinks after writing what they hold),
    /// changed ones are replaced; a file with problems is rejected and logged.
    Run(RunArgs),
    /// Check a config file and print the topology it describes. Exits 2 when it has problems,
    /// listing every one with the key it concerns.
    Validate(ValidateArgs),
    /// Serve simulated traffic as a real Firehose (UAA token endpoint and WebSocket), so the
    /// `firehose` source can be tried and tested without a Cloud Foundry. Also serves UAA's
    /// `/token_keys` and a Cloud Controller's `/v3/apps/{guid}` for the API's `auth = "uaa"`,
    /// with TEST users: `admin`/`admin` sees every app, `developer`/`developer` only the apps
    /// at even positions of the app list (password grant with client `cf`, empty secret, as the
    /// cf CLI, or --client-id). Their tokens are signed with test keys checked into the source:
    /// anyone can forge them, so never let anything real trust this server.
    Simulate(simulate::SimulateArgs),
    /// Record a Firehose (or the built-in simulator) into a replay file (SPEC §1.3), for
    /// `type = "file"` sources and benchmarks. `.gz` output is gzip-compressed.
    Capture(capture::CaptureArgs),
    /// Measure the pipeline: simulator → full graph → a discarding sink. Reports envelopes/s
    /// and memory.
    Bench(bench::BenchArgs),
    /// A live view of a running instance's own figures, from its admin endpoint (`[admin]`):
    /// per source, sink and the graph — rates, errors, buffers, availability. Ctrl-C exits.
    Top(top::TopArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The config file (TOML, SPEC §7). Default: the embedded default config.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Override `pipeline.workers` (timely worker threads).
    #[arg(long)]
    workers: Option<usize>,
    /// Don't show the live status line.
    #[arg(long)]
    no_status: bool,
    /// Reload the config when the file changes (SIGHUP always reloads it), and keep running
    /// when every source is done, waiting for a new config, until Ctrl-C.
    #[arg(long, requires = "config")]
    watch: bool,
    /// This process's index in `cluster.addresses` (SPEC §12): every process of a cluster
    /// runs the same config and says which one it is here. Wins over `cluster.process`.
    #[arg(long, value_name = "N")]
    process: Option<usize>,
}

#[derive(Debug, Args)]
struct ValidateArgs {
    /// The config file to check.
    #[arg(long, short)]
    config: PathBuf,
}

/// Parses the command line, runs the command, and says how it went.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log, cli.log_format);
    match cli.command {
        Command::Run(args) => run(args),
        Command::Validate(args) => validate(args),
        Command::Simulate(args) => simulate::main(args),
        Command::Capture(args) => capture::main(args),
        Command::Bench(args) => bench::main(args),
        Command::Top(args) => top::main(args),
    }
}

fn init_logging(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("invalid --log filter `{filter}` ({e}); using `info`");
        EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(LogWriter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn load(path: Option<&PathBuf>) -> Result<Config, ExitCode> {
    match path {
        None => Ok(Config::embedded_default()),
        Some(path) => Config::load(path).map_err(|e| {
            eprintln!("{e}");
            ExitCode::from(2)
        }),
    }
}

fn run(args: RunArgs) -> ExitCode {
    let mut config = match load(args.config.as_ref()) {
        Ok(config) => config,
        Err(code) => return code,
    };
    if let Some(workers) = args.workers {
        config.pipeline.workers = Some(workers.max(1));
    }
    if args.config.is_none() {
        info!(
            "No --config given: running the embedded default, the built-in simulator into ./sluice-data/sluice.db. Stop with Ctrl-C."
        );
    }
    let reload = Arc::new(Notify::new());
    let options = RunOptions {
        status: !args.no_status,
        config_path: args.config.clone(),
        watch: args.watch,
        reload: Some(reload.clone()),
        reloaded: None,
        process: args.process,
        graph_metrics: None,
    };
    // SIGHUP reloads a config file; the embedded default has none to read again.
    let shutdown = signals::shutdown_on_signal();
    let result = if args.config.is_some() {
        runtime::run(config, options, signals::reload_on_hangup(reload, shutdown))
    } else {
        runtime::run(config, options, shutdown)
    };
    match result {
        Ok(summary) => {
            let graph = &summary.metrics.graph;
            let written: u64 = summary
                .metrics
                .sinks
                .iter()
                .map(|(_, m)| m.written_total())
                .sum();
            info!(
                records = graph.records_in.get(),
                written,
                late = graph.late_total(),
                seconds = summary.elapsed.as_secs_f64(),
                interrupted = summary.interrupted,
                "Run finished."
            );
            ExitCode::SUCCESS
        }
        // A state directory that another run holds, or whose checkpoint cannot be used, and a
        // cluster process that does not know its index, are refused before anything runs,
        // like a config with problems.
        Err(
            e @ (runtime::RunError::State(_)
            | runtime::RunError::Cluster(
                runtime::ClusterError::NoProcess | runtime::ClusterError::BadProcess { .. },
            )),
        ) => {
            error!("{e}");
            ExitCode::from(2)
        }
        Err(e) => {
            error!("Run failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn validate(args: ValidateArgs) -> ExitCode {
    match Config::load(&args.config) {
        Ok(config) => {
            println!("{} is valid.\n", args.config.display());
            print!("{}", topology::describe(&config));
            if config.sinks.is_empty() {
                warn!("No sinks: the pipeline will compute everything and store nothing.");
            }
            for warning in config.warnings() {
                warn!("{warning}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}
