//! The log's error type: one enum for every failure the crate reports.

use std::io;
use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the embedded log.
///
/// Variants are matched by callers (the store layer maps them to wire errors),
/// so they carry structured fields; messages are lowercase without a trailing dot.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The stream name does not match `^[A-Za-z0-9._-]{1,200}$`.
    #[error("invalid stream name {0:?}: expected 1 to 200 characters of A-Z a-z 0-9 . _ -")]
    InvalidStreamName(String),
    /// A setting is out of its allowed range; names the setting.
    #[error("invalid {name}: {reason}")]
    InvalidArgument {
        /// The setting or argument at fault.
        name: &'static str,
        /// Why it is rejected.
        reason: String,
    },
    /// No stream with that name exists (or it was deleted).
    #[error("stream {0:?} not found")]
    StreamNotFound(String),
    /// The stream exists with other settings than requested.
    #[error("stream {0:?} already exists with other settings")]
    StreamSettingsConflict(String),
    /// The partition number is not below the stream's partition count.
    #[error("stream {stream:?} has no partition {partition}")]
    PartitionNotFound {
        /// Stream name.
        stream: String,
        /// Requested partition.
        partition: u32,
    },
    /// A read asked for an offset below the partition's start (deleted by
    /// retention) or above its end.
    #[error("offset {requested} is out of range: partition holds [{start}, {end})")]
    OffsetOutOfRange {
        /// The offset asked for.
        requested: u64,
        /// The first offset still held.
        start: u64,
        /// One past the last readable offset.
        end: u64,
    },
    /// An append carried no records.
    #[error("a batch must carry at least one record")]
    EmptyBatch,
    /// An append is larger than `max_batch_bytes`.
    #[error("batch of {size} bytes exceeds the limit of {max} bytes")]
    BatchTooLarge {
        /// Encoded size of the batch.
        size: u64,
        /// The configured limit.
        max: u64,
    },
    /// Stored data failed validation. Never served; names the file and byte position.
    #[error("corrupt data in {} at byte {position}: {reason}", path.display())]
    Corrupt {
        /// The file holding the bad bytes.
        path: PathBuf,
        /// Byte position of the bad batch or entry in that file.
        position: u64,
        /// What check failed.
        reason: String,
    },
    /// An operating-system call failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done (`open`, `write`, `fsync`, ...).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// An earlier write or fsync failed, so the in-memory view may not match
    /// the disk; the partition refuses appends until the log is reopened.
    #[error("partition {stream}/{partition} is failed after an earlier i/o error; reopen the log")]
    Failed {
        /// Stream name.
        stream: String,
        /// Partition number.
        partition: u32,
    },
    /// The log (or the stream) was closed or deleted while the call ran.
    #[error("log is closed")]
    Closed,
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, position: u64, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            path: path.into(),
            position,
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid(name: &'static str, reason: impl Into<String>) -> Error {
        Error::InvalidArgument {
            name,
            reason: reason.into(),
        }
    }
}
