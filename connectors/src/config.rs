//! Config value formats every component shares (SPEC §7).

/// Durations as humantime strings (`"60s"`, `"1m 30s"`, `"250ms"`), for
/// `#[serde(with = "sluice_connectors::config::duration")]`.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(*value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map_err(|e| {
            de::Error::custom(format!(
                "invalid duration `{text}`: {e} (write e.g. \"60s\", \"1m\", \"250ms\")"
            ))
        })
    }
}
