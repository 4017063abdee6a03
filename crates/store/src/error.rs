//! The store layer's error type.

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a [`crate::Store`] reports. The session layer maps these to
/// its own errors; nothing above it sees a backend's error types.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such stream.
    #[error("stream {0:?} not found")]
    StreamNotFound(String),
    /// The stream exists with other settings.
    #[error("stream {0:?} already exists with other settings")]
    SettingsConflict(String),
    /// An argument was refused; the message names it.
    #[error("{0}")]
    Invalid(String),
    /// A read below the partition's first held offset.
    #[error("offset {requested} is out of range {start}..{end}")]
    OffsetOutOfRange {
        /// Requested offset.
        requested: u64,
        /// First held offset.
        start: u64,
        /// End offset.
        end: u64,
    },
    /// The store cannot serve now (closed, failed partition, I/O error):
    /// retry later or elsewhere.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data failed its checks.
    #[error("corrupt data: {0}")]
    Corrupt(String),
}

impl From<switchboard_log::Error> for Error {
    fn from(e: switchboard_log::Error) -> Self {
        use switchboard_log::Error as L;
        match e {
            L::StreamNotFound(s) => Error::StreamNotFound(s),
            L::StreamSettingsConflict(s) => Error::SettingsConflict(s),
            L::InvalidStreamName(_)
            | L::InvalidArgument { .. }
            | L::PartitionNotFound { .. }
            | L::EmptyBatch
            | L::BatchTooLarge { .. } => Error::Invalid(e.to_string()),
            L::OffsetOutOfRange {
                requested,
                start,
                end,
            } => Error::OffsetOutOfRange {
                requested,
                start,
                end,
            },
            L::Corrupt { .. } => Error::Corrupt(e.to_string()),
            other => Error::Unavailable(other.to_string()),
        }
    }
}
