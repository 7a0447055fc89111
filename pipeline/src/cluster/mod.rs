//! Sluice as one process of a timely cluster (SPEC §12).
//!
//! `[cluster]` lists every process's address; each runs the same config. Before anything
//! else starts, [`join`] connects this process to every other one (`network`: our own
//! handshake, so a peer that never comes or runs another config is a clear error, then
//! timely's `initialize_networking_from_sockets`), and the dataflow runs on timely's
//! cluster allocators: the exchanges already in the graph span the processes. `health`
//! notices a peer that goes away mid-run, so the runtime can stop with an error naming it.
//!
//! Layout: `config` (the `[cluster]` section), `network` (sockets, handshake, traffic
//! counters), `health` (lost peers).

pub mod config;
mod health;
mod network;

use std::sync::Arc;
use std::sync::atomic::Ordering;

pub use config::ClusterConfig;
pub use health::{DATAFLOW_THREAD, Health, Lost};
pub use network::{ConnectError, Hello, PROTOCOL, PeerTraffic};
use sluice_operators::graph::Placement;
use timely::communication::allocator::AllocatorBuilder;
use timely::communication::allocator::zero_copy::initialize::CommsGuard;

/// This process's place in a running cluster: who the peers are and what crosses to them.
#[derive(Debug)]
pub struct ClusterInfo {
    pub process: usize,
    pub addresses: Vec<String>,
    /// Bytes exchanged with each process, by index (zero for this one).
    pub traffic: Vec<Arc<PeerTraffic>>,
    pub health: Arc<Health>,
    /// The epochs of the checkpoints each process keeps, by process index, as they said at
    /// start (SPEC §9: the cluster continues from the newest one they all have).
    pub checkpoints: Vec<Vec<u64>>,
}

impl ClusterInfo {
    pub fn processes(&self) -> usize {
        self.addresses.len()
    }

    /// Bytes sent to and received from every peer, in total.
    pub fn bytes(&self) -> (u64, u64) {
        self.traffic.iter().fold((0, 0), |(sent, received), peer| {
            (
                sent + peer.sent.load(Ordering::Relaxed),
                received + peer.received.load(Ordering::Relaxed),
            )
        })
    }

    /// `process 1 of 3`, for logs and the status line.
    pub fn describe(&self) -> String {
        format!("process {} of {}", self.process, self.processes())
    }
}

/// timely's side of the cluster: the allocators of this process's workers, and the guard
/// that keeps its communication threads.
pub struct Network {
    pub builders: Vec<AllocatorBuilder>,
    pub guard: CommsGuard,
    pub placement: Placement,
}

/// Connects this process (`process`, which a caller has checked is an index of
/// `config.addresses`) to every other process of the cluster and starts timely's
/// communication over the sockets.
pub fn join(
    config: &ClusterConfig,
    process: usize,
    workers: usize,
    shape: String,
    checkpoints: Vec<u64>,
) -> Result<(ClusterInfo, Network), ConnectError> {
    // Before the first socket: a peer lost at any point must be noticed.
    let health = health::watch();
    let hello = Hello {
        protocol: PROTOCOL,
        process,
        addresses: config.addresses.clone(),
        workers,
        shape,
        checkpoints,
    };
    let connected = network::connect(&hello, config.startup_timeout)?;
    let traffic = connected.traffic.clone();
    let checkpoints = connected.checkpoints.clone();
    let (builders, guard) = connected.start(process, workers)?;
    let info = ClusterInfo {
        process,
        addresses: config.addresses.clone(),
        traffic,
        health,
        checkpoints,
    };
    let placement = Placement {
        process,
        processes: config.addresses.len(),
        workers,
    };
    Ok((
        info,
        Network {
            builders,
            guard,
            placement,
        },
    ))
}
