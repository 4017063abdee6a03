//! Settings of a log and of its streams.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Most partitions a stream may have.
pub const MAX_PARTITIONS: u32 = 1024;

/// When appended bytes are forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum Durability {
    /// An append returns once its bytes are on disk. Concurrent appends to a
    /// partition share one `fdatasync` (group commit). Readers see only
    /// durable records, so no reader ever sees a record a crash takes back.
    Always,
    /// A background thread syncs dirty partitions every `ms` milliseconds;
    /// appends return at once, not yet durable.
    Interval {
        /// Milliseconds between syncs (1 to 60 000).
        ms: u64,
    },
    /// Syncs only when a segment is sealed, on [`crate::Partition::sync`] and
    /// on close: a crash may take back recent appends (never corrupt older ones).
    Never,
}

impl std::str::FromStr for Durability {
    type Err = Error;

    /// Parses `always`, `never`, `interval` (100 ms) or `interval:MS`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "always" => Ok(Durability::Always),
            "never" => Ok(Durability::Never),
            "interval" => Ok(Durability::Interval { ms: 100 }),
            _ => s
                .strip_prefix("interval:")
                .and_then(|ms| ms.parse().ok())
                .map(|ms| Durability::Interval { ms })
                .ok_or_else(|| Error::invalid("fsync", "expected always, never, interval or interval:MS")),
        }
    }
}

/// Settings shared by every partition of a [`crate::Log`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A segment is sealed and a new one started once the next batch would
    /// take it past this size (a single larger batch gets a segment of its own).
    pub segment_bytes: u64,
    /// Bytes of batches between two sparse index entries.
    pub index_interval_bytes: u64,
    /// When appends reach the disk.
    pub durability: Durability,
    /// Largest encoded batch an append accepts.
    pub max_batch_bytes: u64,
    /// How long a producer's state is kept after its last append.
    pub producer_ttl_ms: u64,
    /// The same for short-lived producers (ids starting with `~`).
    pub short_producer_ttl_ms: u64,
    /// How often the background thread applies retention.
    pub retention_check_ms: u64,
    /// Most sealed segments' files open at once for reads (each active
    /// segment holds its own for good): beyond it, the least recently read
    /// is closed.
    pub max_open_segments: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 128 << 20,
            index_interval_bytes: 4096,
            durability: Durability::Always,
            max_batch_bytes: 64 << 20,
            producer_ttl_ms: 7 * 24 * 3600 * 1000,
            short_producer_ttl_ms: 25 * 3600 * 1000,
            retention_check_ms: 30_000,
            max_open_segments: 1024,
        }
    }
}

/// Allowed `max_open_segments`.
pub const MAX_OPEN_SEGMENTS_RANGE: std::ops::RangeInclusive<u64> = 16..=1_000_000;
/// Allowed `retention_check_ms`.
pub const RETENTION_CHECK_MS_RANGE: std::ops::RangeInclusive<u64> = 10..=3_600_000;
/// Allowed `segment_bytes`: 4 KiB to 2 GiB (positions in a segment are u32).
pub const SEGMENT_BYTES_RANGE: std::ops::RangeInclusive<u64> = 4096..=1 << 31;

impl LogConfig {
    /// Checks every bound; errors name the setting.
    pub fn validate(&self) -> Result<()> {
        if !SEGMENT_BYTES_RANGE.contains(&self.segment_bytes) {
            return Err(Error::invalid("segment_bytes", "must be 4 KiB to 2 GiB"));
        }
        if !(64..=1 << 20).contains(&self.index_interval_bytes) {
            return Err(Error::invalid("index_interval_bytes", "must be 64 B to 1 MiB"));
        }
        if !(1024..=1 << 30).contains(&self.max_batch_bytes) {
            return Err(Error::invalid("max_batch_bytes", "must be 1 KiB to 1 GiB"));
        }
        if let Durability::Interval { ms } = self.durability {
            if !(1..=60_000).contains(&ms) {
                return Err(Error::invalid("durability", "interval must be 1 to 60000 ms"));
            }
        }
        if self.producer_ttl_ms < 60_000 {
            return Err(Error::invalid("producer_ttl_ms", "must be at least 60000"));
        }
        if !RETENTION_CHECK_MS_RANGE.contains(&self.retention_check_ms) {
            return Err(Error::invalid("retention_check_ms", "must be 10 to 3600000"));
        }
        Ok(())
    }
}

/// Settings of one stream, fixed at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSettings {
    /// Number of partitions, 1 to [`MAX_PARTITIONS`].
    pub partitions: u32,
    /// Sealed segments whose newest record is older than this are deleted.
    pub retention_ms: Option<u64>,
    /// Oldest sealed segments are deleted while the partition stays at least
    /// this large without them.
    pub retention_bytes: Option<u64>,
    /// Whether the layers above encrypt event keys. The log stores bytes as
    /// given; it only keeps this with the stream (and compares it when a
    /// stream is created again).
    pub encrypt_keys: bool,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            partitions: 1,
            retention_ms: None,
            retention_bytes: None,
            encrypt_keys: true,
        }
    }
}

impl StreamSettings {
    /// Checks the bounds; errors name the setting.
    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_PARTITIONS).contains(&self.partitions) {
            return Err(Error::invalid(
                "partitions",
                format!("must be 1 to {MAX_PARTITIONS}, got {}", self.partitions),
            ));
        }
        if self.retention_ms == Some(0) || self.retention_ms.is_some_and(|ms| ms > i64::MAX as u64) {
            return Err(Error::invalid(
                "retention_ms",
                format!("must be 1 to {} (i64::MAX)", i64::MAX),
            ));
        }
        if self.retention_bytes == Some(0) {
            return Err(Error::invalid("retention_bytes", "must be at least 1"));
        }
        Ok(())
    }
}

/// True if `name` is a valid stream name: `^[A-Za-z0-9._-]{1,200}$`.
pub fn is_valid_stream_name(name: &str) -> bool {
    (1..=200).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}
