//! Replay framing (to be written).
