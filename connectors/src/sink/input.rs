//! What a sink reads from: its buffer's records, in the order the dataflow sent them.

use tokio::sync::mpsc;

use super::Records;
use crate::buffer::BufferError;

/// A sink's input. A sink calls [`SinkInput::commit`] after the records it received are in its
/// store; a durable buffer keeps them until then, so nothing accepted is lost to a crash or
/// an outage.
#[derive(Debug)]
pub struct SinkInput {
    channel: mpsc::Receiver<Records>,
}

impl SinkInput {
    pub(crate) fn memory(channel: mpsc::Receiver<Records>) -> SinkInput {
        SinkInput { channel }
    }

    /// True if what this input holds survives the process (a disk buffer): a sink may then
    /// stop at shutdown with records undelivered, and the next run delivers them.
    pub fn is_durable(&self) -> bool {
        false
    }

    /// The next batch; `None` once the dataflow has finished and everything was received.
    pub async fn recv(&mut self) -> Option<Records> {
        self.channel.recv().await
    }

    /// The next batch if one is ready now.
    pub fn try_recv(&mut self) -> Option<Records> {
        // Empty and closed alike: `recv` tells the two apart when the sink waits.
        self.channel.try_recv().ok()
    }

    /// Acknowledges everything received so far as written to the store: the buffer may let
    /// go of it.
    pub async fn commit(&mut self) -> Result<(), BufferError> {
        Ok(())
    }
}
