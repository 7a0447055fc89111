//! Loggregator v2 mapping (to be written).
