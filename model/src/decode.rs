//! The hot-path dropsonde decoder. Until the borrowing decoder lands this delegates to the
//! reference decoder so the rest of the workspace can build against the final signature.

use bytes::Bytes;

use crate::{DecodeError, Event};

/// Decodes one dropsonde envelope (one WebSocket message or one replay record).
pub fn decode_v1(frame: Bytes) -> Result<Event, DecodeError> {
    crate::reference::decode_v1(&frame)
}
