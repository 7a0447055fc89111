//! A `sluice simulate` server running in a test, shared by the tests that talk to it.

use std::net::SocketAddr;
use std::time::Duration;

use sluice_simulator::server::{
    SimulateConfig, SimulateError, SimulateHandle, SimulateServer, SimulateStats,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Generous: CI runs the suite on 2 shared cores.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A running server, stopped by [`Running::stop`].
pub struct Running {
    pub handle: SimulateHandle,
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), SimulateError>>,
}

impl Running {
    /// Serves `config` on a free loopback port until stopped.
    pub async fn start(config: SimulateConfig) -> Running {
        Running::start_on("127.0.0.1:0".parse().expect("an address"), config).await
    }

    /// Binds `addr` (`127.0.0.1:0` for any free port) and serves until stopped.
    pub async fn start_on(addr: SocketAddr, config: SimulateConfig) -> Running {
        let server = SimulateServer::bind(addr, config)
            .await
            .expect("binds the port");
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = server.handle();
        let addr = server.local_addr();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Running {
            handle,
            addr,
            stop,
            task,
        }
    }

    /// Stops the server cleanly and returns its final stats.
    pub async fn stop(self) -> SimulateStats {
        let _ = self.stop.send(());
        timeout(PATIENCE, self.task)
            .await
            .expect("the server stops in time")
            .expect("the server does not panic")
            .expect("the server stops cleanly");
        self.handle.stats()
    }

    /// Waits until the server's stats satisfy `condition`.
    pub async fn wait_for(&self, condition: impl FnMut(&SimulateStats) -> bool) -> SimulateStats {
        timeout(PATIENCE, self.handle.wait_for(condition))
            .await
            .expect("the server reaches the expected state")
    }
}
