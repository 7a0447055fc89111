//! Sluice's dataflow operators: everything between ingested envelopes and the named streams
//! sinks take. No I/O: sources and sinks live in `connectors/`, the assembly in
//! `sluice-pipeline`; the rows the operators produce are `sluice_model::records`.
//!
//! Layout:
//! - [`time`] — the graph's timely time: the watermark in seconds and the checkpoint epoch.
//! - [`watermark`] — event time, the watermark and lateness, decided where records enter
//!   ([`Stamped`](watermark::Stamped) records).
//! - [`filter`] — the config's `[filters]`, applied before routing.
//! - [`route`] — `Route`: raw streams, app events and rollup samples from each record.
//! - [`app_events`] — the ordered rule list of SPEC §4.
//! - [`rollup`] — `Windowed`, tumbling minute windows closed on the frontier, with
//!   [`rollup::app`] (SPEC §5) and [`rollup::platform`] (SPEC §6).
//! - [`sketch`] — latency percentiles within 1 % in bounded memory; [`sum`] — sums of
//!   `f64` that do not depend on the order of the samples.
//! - [`checkpoint`] — the window state a checkpoint saves, and the cuts that end epochs.
//! - [`directory`] — the app → name, space, org directory of SPEC §11 (differential);
//!   [`groups`] — space and org rollups of closed minutes; [`names`] — the directory's
//!   names on logs and app rollup rows.
//! - [`graph`] — the whole graph, wired, and its [`Placement`](graph::Placement) in a cluster.

pub mod app_events;
pub mod checkpoint;
pub mod directory;
pub mod filter;
pub mod graph;
pub mod groups;
pub mod names;
pub mod rollup;
pub mod route;
pub mod sketch;
pub mod sum;
pub mod time;
pub mod watermark;
