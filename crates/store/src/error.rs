//! The store layer's error type.

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a [`crate::Store`] reports. Each adapter maps its backend's
/// errors into these once; the session layer maps these to wire errors
/// once. Nothing above this crate sees a backend's error types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No such stream.
    #[error("stream {0:?} not found")]
    NotFound(String),
    /// The stream exists with other settings.
    #[error("stream {0:?} already exists with other settings")]
    Conflict(String),
    /// An argument was refused; the message names it.
    #[error("{0}")]
    Invalid(String),
    /// A newer epoch of the producer writes to the stream: this writer is
    /// a zombie and must stop.
    #[error("producer {producer:?} is fenced by epoch {epoch}")]
    Fenced {
        /// Producer id.
        producer: String,
        /// The epoch that fenced it.
        epoch: u64,
    },
    /// The store is full for now; retry later.
    #[error("store is busy: {0}")]
    Backpressure(String),
    /// The store did not answer in time; the outcome is unknown.
    #[error("store timed out: {0}")]
    Timeout(String),
    /// The store cannot serve now (closed, failed partition, I/O error,
    /// unreachable): retry later or elsewhere.
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
            L::StreamNotFound(s) => Error::NotFound(s),
            L::StreamSettingsConflict(s) => Error::Conflict(s),
            L::InvalidStreamName(_)
            | L::InvalidArgument { .. }
            | L::PartitionNotFound { .. }
            | L::EmptyBatch
            | L::BatchTooLarge { .. }
            | L::OffsetOutOfRange { .. } => Error::Invalid(e.to_string()),
            L::Corrupt { .. } => Error::Corrupt(e.to_string()),
            other => Error::Unavailable(other.to_string()),
        }
    }
}
