//! Query parameters: time ranges, steps, limits.
