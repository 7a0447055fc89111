//! `[api.limits]`: the budget every request is held to, so that a reader (a user who may see
//! one app, or a script) can never take the process -- ingestion included -- down.
//!
//! - Metrics: at most `max_points` points per answer (the range per step follows from it);
//!   minutes are merged into buckets as they are read, so a request costs memory for its
//!   points, never for the rows behind them.
//! - Every store query: at most `query_timeout`, cancelled when the client leaves; at most
//!   `read_connections` connections of the API's own pools (never the sinks'), and a caller
//!   that finds none free within `acquire_timeout` gets 503.
//! - Log search `q`: at most `max_search_terms` terms of at most `max_term_bytes` bytes, and at
//!   most `read_connections - 1` searches at once, so a cheap read always finds a connection.
//! - Events: at most `max_events` per answer.
//! - Live streams: at most `max_streams` open, `max_streams_per_caller` per token (per user
//!   under UAA, per client address under `auth = "none"`).

use std::time::Duration;

use serde::Deserialize;

/// `[api.limits]`; every key optional.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiLimits {
    /// Points per metrics answer: `(to - from) / step` may not exceed it.
    pub max_points: usize,
    /// Events per events answer.
    pub max_events: usize,
    /// How long one store query may run before it is cancelled (503).
    #[serde(with = "sluice_common::config::duration")]
    pub query_timeout: Duration,
    /// Connections of each of the API's own store pools.
    pub read_connections: u32,
    /// How long a request waits for a free connection before 503.
    #[serde(with = "sluice_common::config::duration")]
    pub acquire_timeout: Duration,
    /// Terms in a log search `q`.
    pub max_search_terms: usize,
    /// Bytes of one search term.
    pub max_term_bytes: usize,
    /// Live streams open at once, across callers.
    pub max_streams: usize,
    /// Live streams one caller (token, or client address without auth) may hold open.
    pub max_streams_per_caller: usize,
}

impl Default for ApiLimits {
    fn default() -> ApiLimits {
        ApiLimits {
            max_points: 5000,
            max_events: 10_000,
            query_timeout: Duration::from_secs(10),
            read_connections: 4,
            acquire_timeout: Duration::from_secs(1),
            max_search_terms: 16,
            max_term_bytes: 256,
            max_streams: 512,
            max_streams_per_caller: 16,
        }
    }
}

impl ApiLimits {
    /// Every problem with the section, as (key, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        let mut positive = |key: &'static str, value: u64| {
            if value == 0 {
                problems.push((key, "must be at least 1".to_owned()));
            }
        };
        positive("limits.max_points", self.max_points as u64);
        positive("limits.max_events", self.max_events as u64);
        positive("limits.read_connections", u64::from(self.read_connections));
        positive("limits.max_search_terms", self.max_search_terms as u64);
        positive("limits.max_term_bytes", self.max_term_bytes as u64);
        positive("limits.max_streams", self.max_streams as u64);
        positive(
            "limits.max_streams_per_caller",
            self.max_streams_per_caller as u64,
        );
        if self.query_timeout.is_zero() {
            problems.push(("limits.query_timeout", "must be more than 0s".to_owned()));
        }
        if self.read_connections > 64 {
            problems.push((
                "limits.read_connections",
                format!("{} is more than 64", self.read_connections),
            ));
        }
        problems
    }

    /// Log searches allowed at once: one connection is always left for cheap reads.
    pub fn concurrent_searches(&self) -> usize {
        (self.read_connections as usize).saturating_sub(1).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ApiConfig;

    #[test]
    fn limits_are_read_from_api_limits_with_defaults_for_what_is_absent() {
        let config: ApiConfig = serde_json::from_value(serde_json::json!({
            "listen": "127.0.0.1:0",
            "auth": "none",
            "limits": { "max_points": 100, "query_timeout": "2s" },
        }))
        .expect("a valid [api]");
        assert_eq!(config.limits.max_points, 100);
        assert_eq!(config.limits.query_timeout, Duration::from_secs(2));
        assert_eq!(config.limits.max_streams, ApiLimits::default().max_streams);
        assert!(config.problems().is_empty(), "{:?}", config.problems());
        let unknown = serde_json::from_value::<ApiConfig>(serde_json::json!({
            "limits": { "max_pointz": 1 },
        }));
        assert!(unknown.is_err(), "a misspelt key is refused");
    }

    #[test]
    fn zero_limits_are_problems_naming_the_key() {
        let limits = ApiLimits {
            max_points: 0,
            read_connections: 0,
            query_timeout: Duration::ZERO,
            ..ApiLimits::default()
        };
        let keys: Vec<&str> = limits.problems().iter().map(|(key, _)| *key).collect();
        assert_eq!(
            keys,
            [
                "limits.max_points",
                "limits.read_connections",
                "limits.query_timeout"
            ]
        );
    }
}
