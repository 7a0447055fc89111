//! Sluice's connectors: where events come from and where records go.
//!
//! Layout:
//! - [`source`] — the [`SourceOutput`](source::SourceOutput) a source hands its batches to,
//!   its counters, and one module per source type: `firehose` (v1 WebSocket), `rlp` (v2 SSE
//!   from the RLP gateway), `file` (replay files), `simulator` (in-process traffic).
//! - [`capture`] — `sluice capture`: the Firehose's raw frames written to a replay file.
//! - [`sink`] — the [`Records`](sink::Records) batches sinks receive from the dataflow, their
//!   counters, and one module per sink type: `sqlite` (the embedded store), `stdout` (NDJSON).
//! - [`simulate`] — `sluice simulate`: the simulator served as a real Firehose (UAA token
//!   endpoint and WebSocket) on one address.
//! - [`uaa`] and [`tls`] — the UAA client-credentials token and the rustls client config the
//!   network sources share.
//! - [`telemetry`] — counters and rate-limited warnings: every drop, retry and reconnect is
//!   counted where it is logged.

pub mod buffer;
pub mod capture;
pub mod config;
pub mod simulate;
pub mod sink;
pub mod source;
pub mod telemetry;
pub mod tls;
pub mod uaa;
