//! Config value formats every component shares (SPEC §7): durations and sizes.

use serde::Deserialize;

/// Durations as humantime strings (`"60s"`, `"1m 30s"`, `"250ms"`), for
/// `#[serde(with = "sluice_common::config::duration")]`.
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

/// A size in bytes, written `"2GiB"`, `"512MiB"`, `"100MB"` or a plain number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

/// Why a text is not a [`ByteSize`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ByteSizeError {
    /// The text does not start with a number that fits a `u64`.
    #[error("invalid size `{0}` (write e.g. \"2GiB\", \"512MiB\")")]
    NoNumber(String),
    /// The unit after the number is none of the known ones.
    #[error(
        "invalid size `{text}`: unknown unit `{unit}` (use B, KB, MB, GB, KiB, MiB, GiB or TiB)"
    )]
    UnknownUnit { text: String, unit: String },
    /// More bytes than a `u64` holds.
    #[error("invalid size `{0}`: too large")]
    TooLarge(String),
}

impl std::str::FromStr for ByteSize {
    type Err = ByteSizeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(trimmed.len());
        let (digits, unit) = trimmed.split_at(split);
        let number: u64 = digits
            .parse()
            .map_err(|_| ByteSizeError::NoNumber(text.to_owned()))?;
        let multiplier: u64 = match unit.trim() {
            "" | "B" => 1,
            "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            other => {
                return Err(ByteSizeError::UnknownUnit {
                    text: text.to_owned(),
                    unit: other.to_owned(),
                });
            }
        };
        number
            .checked_mul(multiplier)
            .map(ByteSize)
            .ok_or_else(|| ByteSizeError::TooLarge(text.to_owned()))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!("2GiB".parse(), Ok(ByteSize(2 << 30)));
        assert_eq!("100MB".parse(), Ok(ByteSize(100_000_000)));
        assert_eq!("4096".parse(), Ok(ByteSize(4096)));
        assert!("2 GiBs".parse::<ByteSize>().is_err());
        assert!("GiB".parse::<ByteSize>().is_err());
    }

    #[test]
    fn size_errors_say_what_is_wrong_with_the_text() {
        let message = |text: &str| match text.parse::<ByteSize>() {
            Ok(size) => panic!("{text} parsed as {size:?}"),
            Err(e) => e.to_string(),
        };
        assert_eq!(
            message("GiB"),
            r#"invalid size `GiB` (write e.g. "2GiB", "512MiB")"#
        );
        assert_eq!(
            message("2 GiBs"),
            "invalid size `2 GiBs`: unknown unit `GiBs` (use B, KB, MB, GB, KiB, MiB, GiB or TiB)"
        );
        assert_eq!(
            message("20000000TiB"),
            "invalid size `20000000TiB`: too large"
        );
    }
}
