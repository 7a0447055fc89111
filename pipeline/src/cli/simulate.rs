//! `sluice simulate`: the built-in simulator served as a real Firehose, with the UAA and Cloud
//! Controller endpoints the API's auth needs.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use sluice_simulator::SimulatorConfig;
use sluice_simulator::server::{SimulateConfig, SimulateServer};
use tracing::{error, info};

#[derive(Debug, Args)]
pub(super) struct SimulateArgs {
    /// The address to serve on: `POST /oauth/token` (client credentials, and the password grant
    /// of the test users), `GET /token_keys`, `GET /v3/apps` (the client's paged listing with
    /// `include=space.organization`, and the users' `?guids=`), `GET /v3/apps/{guid}` and the
    /// WebSocket `/firehose/{subscription_id}`.
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// The UAA client id the token endpoint accepts.
    #[arg(long, default_value = "sluice")]
    client_id: String,
    /// The UAA client secret the token endpoint accepts.
    #[arg(long, default_value = "sluice", env = "SLUICE_SIMULATE_CLIENT_SECRET")]
    client_secret: String,
    /// How many apps the simulated foundation runs.
    #[arg(long, default_value_t = 50)]
    apps: u32,
    /// Envelopes per second per subscription id (0 = as fast as the consumer reads).
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    /// Seed of the traffic: the same seed serves the same envelopes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How long the test users' tokens are valid (`1h`, `30s`): short for trying expiry.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    token_ttl: Duration,
    /// Every this long (`30s`, `5m`) one app of the Cloud Controller's listing is renamed,
    /// moved to another space or deleted, in turn, so a `[metadata]` directory changes during
    /// a run. Off when absent.
    #[arg(long, value_parser = humantime::parse_duration)]
    directory_churn: Option<Duration>,
}

pub(super) fn main(args: SimulateArgs) -> ExitCode {
    let config = SimulateConfig {
        client_id: args.client_id,
        client_secret: args.client_secret,
        generator: SimulatorConfig {
            apps: args.apps,
            rate: args.rate,
            seed: args.seed,
            ..SimulatorConfig::default()
        },
        user_token_ttl: args.token_ttl,
        directory_churn: args.directory_churn,
        ..SimulateConfig::default()
    };
    let client_id = config.client_id.clone();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            error!("Cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let server = SimulateServer::bind(args.listen, config).await?;
        let addr = server.local_addr();
        info!(%addr, apps = args.apps, rate = args.rate, seed = args.seed, "Serving a simulated Firehose. Stop with Ctrl-C.");
        eprintln!(
            "\nPoint a firehose source at it:\n\n  [sources.sim]\n  type = \"firehose\"\n  url = \"ws://{addr}\"\n  uaa_url = \"http://{addr}\"\n  subscription_id = \"sluice\"\n  client_id = \"{client_id}\"\n  client_secret = \"...\"\n\nOr an API with UAA auth (test users admin/admin and developer/developer):\n\n  [api]\n  auth = \"uaa\"\n  uaa_url = \"http://{addr}\"\n  cc_url = \"http://{addr}\"\n\nOr app names from its Cloud Controller:\n\n  [metadata]\n  cc_url = \"http://{addr}\"\n  uaa_url = \"http://{addr}\"\n  client_id = \"{client_id}\"\n  client_secret = \"...\"\n"
        );
        server
            .run(async {
                let _ = tokio::signal::ctrl_c().await;
                info!("Stopping the simulated Firehose.");
            })
            .await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}
