//! Buffers between the dataflow and a sink's store (SPEC §8).
//!
//! Every sink reads its records through a [`SinkInput`](crate::sink::SinkInput) and calls
//! `commit` once what it received is in its store. With a `memory` buffer (the default) the
//! records wait in a bounded channel; with a `disk` buffer they wait in a durable segmented
//! queue and leave it only when committed, so a store outage or `kill -9` loses nothing that
//! was accepted.
//!
//! Layout: [`disk`] is the segmented on-disk queue (frames, segments, acknowledgement, the
//! torn-tail cut on open); [`codec`] turns [`Records`](crate::sink::Records) into frame
//! payloads; [`memory`] caps a memory buffer by records.

pub mod codec;
pub mod disk;
pub mod memory;

use std::path::PathBuf;

use serde::Deserialize;

/// `buffer = { type = "memory" | "disk", ... }` of a sink.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum BufferConfig {
    /// Records wait in memory; lost on a crash.
    Memory {
        /// Records held at most before `when_full` applies.
        #[serde(default = "default_max_events")]
        max_events: usize,
        #[serde(default)]
        when_full: WhenFull,
    },
    /// Records wait in an append-only segmented queue on disk until the sink commits them.
    Disk {
        /// The buffer's directory; created when absent. One sink per directory.
        path: PathBuf,
        /// The cap on the bytes held (`"2GiB"`).
        #[serde(default = "default_max_size")]
        max_size: ByteSize,
        #[serde(default)]
        when_full: WhenFull,
        /// When appended records are fsynced.
        #[serde(default)]
        sync: SyncPolicy,
        /// A segment file is closed and a new one begun past this size; a segment is deleted
        /// once every record in it is acknowledged.
        #[serde(default = "default_segment_size")]
        segment_size: ByteSize,
    },
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig::Memory {
            max_events: default_max_events(),
            when_full: WhenFull::default(),
        }
    }
}

const fn default_max_events() -> usize {
    100_000
}

const fn default_max_size() -> ByteSize {
    ByteSize(2 << 30)
}

const fn default_segment_size() -> ByteSize {
    ByteSize(64 << 20)
}

/// What a full buffer does with more records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Waits for room: backpressure travels to the sources.
    #[default]
    Block,
    /// Drops the records that do not fit, and counts them.
    DropNewest,
}

/// When a disk buffer fsyncs what it appended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncPolicy {
    /// After every appended batch, before the batch counts as accepted.
    #[default]
    Batch,
    /// At most once a second.
    Interval,
    /// Left to the operating system.
    None,
}

/// A size in bytes, written `"2GiB"`, `"512MiB"`, `"100MB"` or a plain number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl std::str::FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(trimmed.len());
        let (digits, unit) = trimmed.split_at(split);
        let number: u64 = digits
            .parse()
            .map_err(|_| format!("invalid size `{text}` (write e.g. \"2GiB\", \"512MiB\")"))?;
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
                return Err(format!(
                    "invalid size `{text}`: unknown unit `{other}` (use B, KB, MB, GB, KiB, MiB, GiB or TiB)"
                ));
            }
        };
        number
            .checked_mul(multiplier)
            .map(ByteSize)
            .ok_or_else(|| format!("invalid size `{text}`: too large"))
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

/// Why a buffer could not take, give or release records.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("disk buffer {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A frame whose checksum or length is wrong, found while reading (open cuts such tails).
    #[error("disk buffer {}: corrupt frame at offset {offset}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: &'static str,
    },
    #[error("disk buffer {}: a batch of {bytes} bytes does not fit in a frame", path.display())]
    FrameTooLarge { path: PathBuf, bytes: usize },
    #[error("records could not be encoded for the disk buffer: {0}")]
    Encode(postcard::Error),
    #[error("disk buffer {}: the sink stopped reading; the buffer keeps what it holds", path.display())]
    ReaderGone { path: PathBuf },
    /// The buffer holds records in another layout than this build's (see
    /// [`codec::FORMAT`]): reading them would decode garbage, so nothing is read or deleted.
    #[error(
        "disk buffer {}: it holds records written in {found}, and this Sluice reads {expected}; \
         deliver them with the version that wrote them, or move the directory away to start empty",
        path.display()
    )]
    Format {
        path: PathBuf,
        found: String,
        expected: &'static str,
    },
}

impl BufferError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> BufferError {
        let path = path.into();
        move |source| BufferError::Io { path, source }
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
    fn buffer_config_defaults_to_memory_and_reads_disk() {
        let config: BufferConfig = toml::from_str(
            r#"type = "disk"
path = "buffers/db"
max_size = "1GiB"
when_full = "drop_newest""#,
        )
        .expect("a disk buffer config");
        assert_eq!(
            config,
            BufferConfig::Disk {
                path: "buffers/db".into(),
                max_size: ByteSize(1 << 30),
                when_full: WhenFull::DropNewest,
                sync: SyncPolicy::Batch,
                segment_size: ByteSize(64 << 20),
            }
        );
        assert!(matches!(
            BufferConfig::default(),
            BufferConfig::Memory { .. }
        ));
    }
}
