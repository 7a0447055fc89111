//! What Sluice's sources, sinks and read path share.
//!
//! Layout:
//! - [`component`] — the interface every source and sink kind offers the pipeline: its
//!   config's [`Problem`](component::Problem)s, the [`Resource`](component::Resource)s it must
//!   hold alone, a description, and [`ComponentError`](component::ComponentError).
//! - [`config`] — value formats of the TOML config: durations and byte sizes (and
//!   [`ByteSizeError`](config::ByteSizeError), why a size does not parse).
//! - [`telemetry`] — counters and rate-limited warnings, and the counters of a source's and a
//!   sink's run ([`SinkMetrics`](telemetry::SinkMetrics)).
//! - [`backoff`] — capped exponential backoff for everything that retries.
//! - [`http`] — serving an axum router on a `host:port` until stopped.
//! - [`time`] — now, and RFC 3339 times of event times.
//! - [`tls`] and [`uaa`] — the rustls client config and HTTP client, and UAA tokens (client
//!   credentials and password grants), for every component that talks to Cloud Foundry.

pub mod backoff;
pub mod component;
pub mod config;
pub mod http;
pub mod telemetry;
pub mod time;
pub mod tls;
pub mod uaa;
