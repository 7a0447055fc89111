//! Realistic Firehose traffic, made in-process and deterministic for a seed.
//!
//! Layout:
//! - [`generator`] — [`Generator`]: the traffic mix, the simulated foundation (apps and their
//!   instances, Diego cells, routers, Dopplers and their platform series) and the text of its
//!   log lines, including the Cloud Controller and staging lines SPEC §4's rules recognise.
//! - [`source`] — the `simulator` source: [`SimulatorConfig`] and the task that paces a
//!   generator into the pipeline.
//! - [`server`] — `sluice simulate`: the generator served as a real Firehose (UAA token
//!   endpoint and WebSocket), with test users, a Cloud Controller and RS256 tokens signed with
//!   TEST keys checked into `server/keys/`.
//!
//! This crate is for development, tests and the embedded default's traffic. Nothing on the
//! read path depends on it: the keys it signs with must never verify anything real.

pub mod generator;
pub mod server;
pub mod source;

pub use generator::{Generator, SimulatedApp};
pub use source::{Clock, Instances, SimulatorConfig, SimulatorError};
