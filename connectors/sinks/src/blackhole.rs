//! `type = "blackhole"`: counts what it receives and writes nothing — for measuring the
//! pipeline without a store (`sluice bench`), and for trying a topology out.

use serde::Deserialize;
use sluice_model::records::StreamName;

use crate::{Component, ComponentError, ComponentTask, Problem, Sink, SinkContext};

/// `[sinks.NAME]` with `type = "blackhole"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlackholeSinkConfig {
    /// The streams taken (and discarded).
    #[serde(default = "StreamName::all")]
    pub streams: Vec<StreamName>,
}

impl Component for BlackholeSinkConfig {
    fn kind(&self) -> &'static str {
        "blackhole"
    }

    fn problems(&self) -> Vec<Problem> {
        crate::stream_problems(&self.streams)
    }

    fn describe(&self) -> String {
        "discarded".to_owned()
    }
}

impl Sink for BlackholeSinkConfig {
    fn streams(&self) -> &[StreamName] {
        &self.streams
    }

    fn build(self: Box<Self>, ctx: SinkContext) -> ComponentTask {
        Box::pin(async move { run(*self, ctx).await.map_err(ComponentError::new) })
    }
}

/// Drains the sink's input until the dataflow finishes, acknowledging every batch (so a
/// disk buffer empties and checkpoints see it keep up). Fails only if a disk buffer does.
pub async fn run(
    _config: BlackholeSinkConfig,
    mut ctx: SinkContext,
) -> Result<(), sluice_buffers::BufferError> {
    while let Some(records) = ctx.input.recv().await {
        ctx.metrics.written(records.stream(), records.len());
        ctx.input.commit().await?;
    }
    Ok(())
}
