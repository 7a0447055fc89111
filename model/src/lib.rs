//! The Firehose envelope model: everything Sluice knows about the bytes it receives.
//!
//! Layout:
//! - `proto/*.proto` — the dropsonde v1 (`events`) and Loggregator v2 (`loggregator.v2`)
//!   schemas written from SPEC §1; [`proto`] holds the prost types generated from them at
//!   build time (by `protox`, no system `protoc`).
//! - [`event`] — the normalized [`Event`](event::Event)s the dataflow carries, the same
//!   whichever wire format they came in.
//! - [`decode`] — the hot path: a borrowing dropsonde decoder over `bytes::Bytes` that
//!   allocates nothing per field.
//! - [`reference`] — prost decode plus conversion: the fast decoder's test oracle, and the
//!   encoder the simulator and tests use.
//! - [`records`] — the named streams of SPEC §3, the rows of the derived ones, and
//!   [`Records`](records::Records), one stream's batch as sinks receive it.
//! - [`v2`] — Loggregator v2 (protobuf and the RLP gateway's JSON) mapped onto events.
//! - [`framing`] — the length-delimited replay file framing (SPEC §1.3).
//! - [`error`] — [`DecodeError`](error::DecodeError), with a stable reason per variant.

pub mod decode;
pub mod error;
pub mod event;
pub mod framing;
pub mod records;
pub mod reference;
pub mod v2;

pub use error::DecodeError;
pub use event::{Event, EventType, Payload, Str};

/// prost types generated from `proto/`.
#[allow(clippy::all, missing_docs, unreachable_pub)]
pub mod proto {
    /// Dropsonde v1.
    pub mod events {
        include!(concat!(env!("OUT_DIR"), "/events.rs"));
    }
    /// Loggregator v2.
    pub mod loggregator {
        pub mod v2 {
            include!(concat!(env!("OUT_DIR"), "/loggregator.v2.rs"));
        }
    }
}
