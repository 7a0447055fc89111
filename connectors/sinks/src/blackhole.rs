//! `type = "blackhole"`: counts what it receives and writes nothing — for measuring the
//! pipeline without a store (`sluice bench`), and for trying a topology out.

use serde::Deserialize;
use sluice_model::records::StreamName;

use crate::SinkContext;

/// `[sinks.NAME]` with `type = "blackhole"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlackholeSinkConfig {
    /// The streams taken (and discarded).
    #[serde(default = "StreamName::all")]
    pub streams: Vec<StreamName>,
}

/// Drains the sink's input until the dataflow finishes. Never fails.
pub async fn run(
    _config: BlackholeSinkConfig,
    mut ctx: SinkContext,
) -> Result<(), std::convert::Infallible> {
    while let Some(records) = ctx.input.recv().await {
        ctx.metrics.written(records.stream(), records.len());
    }
    Ok(())
}
