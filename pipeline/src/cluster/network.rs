//! Connecting the processes of a cluster, then handing the sockets to timely.
//!
//! timely's own `Config::Cluster` connects by retrying for ever and says so on stdout; a job
//! must instead give up after `startup_timeout` with an error naming the peers that never
//! answered, and refuse a peer that runs with another config. So the sockets are made here,
//! as timely makes them (process `i` connects to every lower index and accepts every higher
//! one), each opened with a [`Hello`] both sides check, and then given to timely's
//! `initialize_networking_from_sockets`: the exchange and progress protocol are timely's.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use timely::communication::allocator::zero_copy::initialize::{
    CommsGuard, initialize_networking_from_sockets,
};
use timely::communication::allocator::zero_copy::stream::Stream;
use timely::communication::allocator::{AllocatorBuilder, ProcessBuilder};
use timely::communication::initialize::Hooks;
use tracing::{debug, info};

/// What opens every connection: marks it as Sluice's, and carries what both ends must agree on.
const MAGIC: &[u8; 15] = b"SLUICE-CLUSTER\n";
/// The layout of [`Hello`] and of what the processes exchange; any change needs a new number.
pub const PROTOCOL: u32 = 2;
/// A hello is a few hundred bytes; anything much larger is not a Sluice peer.
const MAX_HELLO: u32 = 1 << 20;
/// How long one side of the handshake may take once connected.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a process says about itself when it connects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    /// Which process this is.
    pub process: usize,
    /// `cluster.addresses`, which every process must list alike.
    pub addresses: Vec<String>,
    /// `pipeline.workers`: every process runs as many.
    pub workers: usize,
    /// What else shapes the graph (rollup widths, checkpoints on or off): must match.
    pub shape: String,
    /// The epochs of the checkpoints this process keeps (SPEC §9): the cluster continues
    /// from the newest one every process has.
    pub checkpoints: Vec<u64>,
}

/// Why the cluster could not be formed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot listen on cluster.addresses[{process}] ({address}): {source}")]
    Listen {
        process: usize,
        address: String,
        source: io::Error,
    },
    #[error(
        "no answer from {} within cluster.startup_timeout ({}); start every process of the \
         cluster, and check that each can reach the others",
        describe(missing), humantime::format_duration(*waited)
    )]
    Unreachable {
        missing: Vec<(usize, String)>,
        waited: Duration,
    },
    #[error("process {peer} ({address}) {reason}")]
    Refused {
        peer: usize,
        address: String,
        reason: String,
    },
    #[error("cannot start the cluster's communication: {0}")]
    Timely(io::Error),
}

fn describe(peers: &[(usize, String)]) -> String {
    let names: Vec<String> = peers
        .iter()
        .map(|(index, address)| format!("process {index} ({address})"))
        .collect();
    names.join(", ")
}

/// Bytes sent to and received from one peer.
#[derive(Debug, Default)]
pub struct PeerTraffic {
    pub sent: AtomicU64,
    pub received: AtomicU64,
}

/// A peer's socket as timely uses it, counting what crosses it.
pub(super) struct CountedStream {
    stream: TcpStream,
    traffic: Arc<PeerTraffic>,
}

impl Read for CountedStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.stream.read(buf)?;
        self.traffic
            .received
            .fetch_add(read as u64, Ordering::Relaxed);
        Ok(read)
    }
}

impl Write for CountedStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.stream.write(buf)?;
        self.traffic
            .sent
            .fetch_add(written as u64, Ordering::Relaxed);
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

impl Stream for CountedStream {
    fn try_clone(&self) -> io::Result<Self> {
        Ok(CountedStream {
            stream: self.stream.try_clone()?,
            traffic: self.traffic.clone(),
        })
    }

    fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.stream.set_nonblocking(nonblocking)
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.stream.shutdown(how)
    }
}

/// Every peer connected and agreed: what timely needs to run the workers, and what the
/// processes said.
pub(super) struct Connected {
    /// Traffic with each peer, by process index (zero for this process).
    pub traffic: Vec<Arc<PeerTraffic>>,
    /// The checkpoints each process keeps, by process index (this one's included).
    pub checkpoints: Vec<Vec<u64>>,
    sockets: Vec<Option<CountedStream>>,
}

impl Connected {
    /// Starts timely's communication threads over the sockets: the builders of this
    /// process's `workers` workers, and the guard that keeps the threads.
    pub(super) fn start(
        self,
        process: usize,
        workers: usize,
    ) -> Result<(Vec<AllocatorBuilder>, CommsGuard), ConnectError> {
        let hooks = Hooks::default();
        let allocators =
            ProcessBuilder::new_typed_vector(workers, hooks.refill.clone(), hooks.spill.clone());
        let (builders, guard) =
            initialize_networking_from_sockets(allocators, self.sockets, process, workers, hooks)
                .map_err(ConnectError::Timely)?;
        Ok((
            builders.into_iter().map(AllocatorBuilder::Tcp).collect(),
            guard,
        ))
    }
}

/// Connects to every other process of `hello.addresses` (waiting up to `timeout` for them to
/// start) and checks that each runs with the same cluster, workers and graph shape.
pub(super) fn connect(hello: &Hello, timeout: Duration) -> Result<Connected, ConnectError> {
    let me = hello.process;
    let addresses = &hello.addresses;
    let deadline = Instant::now() + timeout;
    let listener = TcpListener::bind(&addresses[me]).map_err(|source| ConnectError::Listen {
        process: me,
        address: addresses[me].clone(),
        source,
    })?;
    info!(
        process = me,
        processes = addresses.len(),
        listen = %addresses[me],
        "Connecting to the cluster's other processes."
    );
    let (lower, higher) = std::thread::scope(|scope| {
        let lower = scope.spawn(|| connect_lower(hello, deadline, timeout));
        let higher = scope.spawn(|| accept_higher(hello, &listener, deadline, timeout));
        (lower.join(), higher.join())
    });
    let mut connected = lower.unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
    let accepted = higher.unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
    connected.push(None);
    connected.extend(accepted.into_iter().map(Some));
    let mut traffic = Vec::with_capacity(addresses.len());
    let mut sockets = Vec::with_capacity(addresses.len());
    let mut checkpoints = Vec::with_capacity(addresses.len());
    for slot in connected {
        let counters = Arc::new(PeerTraffic::default());
        match slot {
            Some((stream, theirs)) => {
                checkpoints.push(theirs.checkpoints);
                sockets.push(Some(CountedStream {
                    stream,
                    traffic: counters.clone(),
                }));
            }
            None => {
                checkpoints.push(hello.checkpoints.clone());
                sockets.push(None);
            }
        }
        traffic.push(counters);
    }
    info!(process = me, "Every process of the cluster is connected.");
    Ok(Connected {
        traffic,
        checkpoints,
        sockets,
    })
}

/// Connects to processes `0..me`, retrying each until the deadline.
fn connect_lower(
    hello: &Hello,
    deadline: Instant,
    timeout: Duration,
) -> Result<Vec<Option<(TcpStream, Hello)>>, ConnectError> {
    let mut connected = Vec::new();
    for (peer, address) in hello.addresses.iter().enumerate().take(hello.process) {
        let mut pause = Duration::from_millis(50);
        let mut said = false;
        let stream = loop {
            match try_connect(address) {
                Ok(stream) => break stream,
                Err(e) => {
                    if Instant::now() + pause > deadline {
                        let missing = hello.addresses[peer..hello.process]
                            .iter()
                            .enumerate()
                            .map(|(i, a)| (peer + i, a.clone()))
                            .collect();
                        return Err(ConnectError::Unreachable {
                            missing,
                            waited: timeout,
                        });
                    }
                    if !said {
                        info!(peer, %address, error = %e, "Waiting for a process of the cluster to start.");
                        said = true;
                    } else {
                        debug!(peer, %address, error = %e, "Still waiting for the process.");
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        };
        let refused = |reason: String| ConnectError::Refused {
            peer,
            address: address.clone(),
            reason,
        };
        let mut stream = stream;
        stream
            .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
            .map_err(|e| refused(format!("cannot be read: {e}")))?;
        write_hello(&mut stream, hello)
            .map_err(|e| refused(format!("did not take our hello: {e}")))?;
        let theirs = read_hello(&mut stream).map_err(refused)?;
        check(hello, &theirs, peer).map_err(refused)?;
        stream
            .set_read_timeout(None)
            .map_err(|e| refused(format!("cannot be read: {e}")))?;
        connected.push(Some((stream, theirs)));
    }
    Ok(connected)
}

fn try_connect(address: &str) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the address resolves to nothing");
    for resolved in address.to_socket_addrs()? {
        match TcpStream::connect_timeout(&resolved, Duration::from_secs(2)) {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Accepts processes `me+1..`, each identified by its hello, until the deadline.
fn accept_higher(
    hello: &Hello,
    listener: &TcpListener,
    deadline: Instant,
    timeout: Duration,
) -> Result<Vec<(TcpStream, Hello)>, ConnectError> {
    let me = hello.process;
    let expected = hello.addresses.len() - me - 1;
    let mut accepted: Vec<Option<(TcpStream, Hello)>> = (0..expected).map(|_| None).collect();
    let listen_error = |source| ConnectError::Listen {
        process: me,
        address: hello.addresses[me].clone(),
        source,
    };
    listener.set_nonblocking(true).map_err(listen_error)?;
    while accepted.iter().any(Option::is_none) {
        match listener.accept() {
            Ok((mut stream, from)) => {
                let setup = stream
                    .set_nonblocking(false)
                    .and_then(|()| stream.set_nodelay(true))
                    .and_then(|()| stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT)));
                if let Err(e) = setup {
                    debug!(%from, error = %e, "Dropped a connection that could not be set up.");
                    continue;
                }
                // Whoever connects says who it is first; something else is turned away.
                let theirs = match read_hello(&mut stream) {
                    Ok(theirs) => theirs,
                    Err(reason) => {
                        info!(%from, "Turned away a connection that is not a Sluice process: {reason}");
                        continue;
                    }
                };
                let peer = theirs.process;
                let address = hello.addresses.get(peer).cloned().unwrap_or_default();
                let refused = |reason: String| ConnectError::Refused {
                    peer,
                    address: address.clone(),
                    reason,
                };
                if peer <= me || peer >= hello.addresses.len() {
                    return Err(refused(format!(
                        "connected from {from} as process {peer}, which should not connect to \
                         process {me}; is cluster.process set alike in two processes?"
                    )));
                }
                write_hello(&mut stream, hello)
                    .map_err(|e| refused(format!("did not take our hello: {e}")))?;
                check(hello, &theirs, peer).map_err(&refused)?;
                stream
                    .set_read_timeout(None)
                    .map_err(|e| refused(format!("cannot be read: {e}")))?;
                if accepted[peer - me - 1].replace((stream, theirs)).is_some() {
                    return Err(refused(
                        "connected twice: is cluster.process set alike in two processes?".into(),
                    ));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    let missing = accepted
                        .iter()
                        .enumerate()
                        .filter(|(_, slot)| slot.is_none())
                        .map(|(i, _)| (me + 1 + i, hello.addresses[me + 1 + i].clone()))
                        .collect();
                    return Err(ConnectError::Unreachable {
                        missing,
                        waited: timeout,
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(listen_error(e)),
        }
    }
    Ok(accepted.into_iter().flatten().collect())
}

fn write_hello(stream: &mut TcpStream, hello: &Hello) -> io::Result<()> {
    let body = serde_json::to_vec(hello).map_err(io::Error::other)?;
    let mut bytes = Vec::with_capacity(MAGIC.len() + 4 + body.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&body);
    stream.write_all(&bytes)
}

fn read_hello(stream: &mut TcpStream) -> Result<Hello, String> {
    let mut magic = [0u8; MAGIC.len()];
    stream
        .read_exact(&mut magic)
        .map_err(|e| format!("sent no hello: {e}"))?;
    if &magic != MAGIC {
        return Err("is not a Sluice process (its first bytes are not Sluice's hello)".into());
    }
    let mut length = [0u8; 4];
    stream
        .read_exact(&mut length)
        .map_err(|e| format!("sent half a hello: {e}"))?;
    let length = u32::from_le_bytes(length);
    if length > MAX_HELLO {
        return Err(format!("sent a hello of {length} bytes"));
    }
    let mut body = vec![0u8; length as usize];
    stream
        .read_exact(&mut body)
        .map_err(|e| format!("sent half a hello: {e}"))?;
    serde_json::from_slice(&body).map_err(|e| {
        format!("sent a hello this Sluice cannot read ({e}); run the same version everywhere")
    })
}

/// Whether a peer may join: same protocol, cluster, workers and graph.
fn check(mine: &Hello, theirs: &Hello, expected: usize) -> Result<(), String> {
    if theirs.protocol != mine.protocol {
        return Err(format!(
            "speaks cluster protocol {}, this Sluice {}; run the same version everywhere",
            theirs.protocol, mine.protocol
        ));
    }
    if theirs.process != expected {
        return Err(format!(
            "says it is process {}; check cluster.process (or --process) on each",
            theirs.process
        ));
    }
    if theirs.addresses != mine.addresses {
        return Err(format!(
            "lists cluster.addresses {:?}, this process {:?}; every process needs the same list",
            theirs.addresses, mine.addresses
        ));
    }
    if theirs.workers != mine.workers {
        return Err(format!(
            "runs pipeline.workers = {}, this process {}; every process needs the same",
            theirs.workers, mine.workers
        ));
    }
    if theirs.shape != mine.shape {
        return Err(format!(
            "runs another graph ({}) than this process ({}); every process needs the same \
             pipeline settings",
            theirs.shape, mine.shape
        ));
    }
    Ok(())
}
