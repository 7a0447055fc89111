//! Sluice's runtime: the config, the assembly of sources, dataflow and sinks, and the command
//! line.
//!
//! Layout:
//! - [`cli`] — the `sluice` command and its subcommands (`run`, `validate`, `simulate`,
//!   `capture`, `bench`, `top`).
//! - [`config`] — the TOML config of SPEC §7: `${VAR}` interpolation, parsing, validation that
//!   reports every problem at once; [`topology`] prints what a config describes.
//! - [`runtime`] — `sluice run`: starts sinks, the dataflow and sources, and stops them in the
//!   order that loses nothing.
//! - [`dataflow`] — the timely side: the `Ingest` bridge from the sources' channel into the
//!   graph of `sluice-operators`, and the bridges from its streams into the sinks.
//! - [`routing`] — which sinks take which streams, changed live by reloads.
//! - [`cluster`] — `[cluster]` (SPEC §12): joining the other processes of a timely cluster,
//!   and noticing one that is lost.
//! - [`state`] — state across runs (SPEC §9): the locked state directory, the checkpoint
//!   file, and the thread that writes checkpoints.
//! - [`status`] — the live status line; [`telemetry`] — the graph's counters and memory;
//!   [`admin`] — the admin endpoint (`/metrics`, `/health`) over a registry of the running
//!   components' counters, read by `sluice top`.

pub mod admin;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod dataflow;
pub mod routing;
pub mod runtime;
pub mod state;
pub mod status;
pub mod telemetry;
pub mod topology;
