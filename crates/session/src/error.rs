//! The session layer's error type. Each variant corresponds to one wire
//! error code; the API tier maps them in one place.

use switchboard_proto::ErrorCode;

/// Result alias for this crate.
pub type Result<T, E = SessionError> = std::result::Result<T, E>;

/// Everything the backend tier answers instead of a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The request is malformed or out of range; the message says which field.
    #[error("{0}")]
    BadRequest(String),
    /// The cursor is forged, altered or for another stream.
    #[error("{0}")]
    BadCursor(String),
    /// The caller may not do this (another identity's session).
    #[error("{0}")]
    Forbidden(String),
    /// No such stream.
    #[error("stream {0:?} not found")]
    StreamNotFound(String),
    /// The session expired, was disposed, or never existed here.
    #[error("session is gone: allocate a new one")]
    SessionGone,
    /// A newer session of the writer's producer took over: this one stores
    /// nothing more (answered as `session_gone`, with the newer epoch).
    #[error("this session of producer {producer:?} is fenced: a newer session (epoch {epoch}) took over, and this one stores nothing more")]
    Fenced {
        /// The producer.
        producer: String,
        /// The newer session's epoch.
        epoch: u64,
    },
    /// The call contradicts the session's state or the stream's settings.
    #[error("{0}")]
    Conflict(String),
    /// A body or event is too large.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// Too much in flight: retry after the given time.
    #[error("{reason}: retry in {retry_after_ms} ms")]
    Backpressure {
        /// What is full.
        reason: String,
        /// Suggested wait.
        retry_after_ms: u64,
    },
    /// Draining, or the store cannot serve: retry or re-allocate.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected store failure.
    #[error("{0}")]
    Internal(String),
}

impl SessionError {
    /// The wire code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            SessionError::BadRequest(_) => ErrorCode::BadRequest,
            SessionError::BadCursor(_) => ErrorCode::BadCursor,
            SessionError::Forbidden(_) => ErrorCode::Forbidden,
            SessionError::StreamNotFound(_) => ErrorCode::StreamNotFound,
            SessionError::SessionGone | SessionError::Fenced { .. } => ErrorCode::SessionGone,
            SessionError::Conflict(_) => ErrorCode::Conflict,
            SessionError::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            SessionError::Backpressure { .. } => ErrorCode::Backpressure,
            SessionError::Unavailable(_) => ErrorCode::Unavailable,
            SessionError::Internal(_) => ErrorCode::Internal,
        }
    }

    pub(crate) fn bad(msg: impl Into<String>) -> Self {
        SessionError::BadRequest(msg.into())
    }
}

impl From<SessionError> for switchboard_rpc::RpcError {
    fn from(e: SessionError) -> Self {
        let retry_after_ms = match &e {
            SessionError::Backpressure { retry_after_ms, .. } => Some(*retry_after_ms),
            SessionError::Unavailable(_) => Some(1000),
            _ => None,
        };
        let mut r = switchboard_rpc::RpcError::new(e.code(), e.to_string());
        r.retry_after_ms = retry_after_ms;
        if let SessionError::Fenced { epoch, .. } = e {
            r.fenced_by_epoch = Some(epoch);
        }
        r
    }
}

impl From<crate::crypto::CryptoError> for SessionError {
    fn from(e: crate::crypto::CryptoError) -> Self {
        match e {
            // a record that does not authenticate, or a data key that is
            // missing or that no configured master key opens, cannot heal
            // by retrying: say so once instead of inviting a retry loop
            crate::crypto::CryptoError::Corrupt { .. } | crate::crypto::CryptoError::DataKey { .. } => {
                SessionError::Internal(e.to_string())
            }
            // reading master keys or the keyring failed: may heal
            crate::crypto::CryptoError::Keys(_) => SessionError::Unavailable(e.to_string()),
        }
    }
}

impl From<switchboard_store::Error> for SessionError {
    fn from(e: switchboard_store::Error) -> Self {
        use switchboard_store::Error as S;
        match e {
            S::NotFound(s) => SessionError::StreamNotFound(s),
            S::Conflict(s) => {
                SessionError::Conflict(format!("stream {s:?} already exists with other settings"))
            }
            S::Invalid(m) => SessionError::BadRequest(m),
            S::Fenced { producer, epoch } => SessionError::Fenced { producer, epoch },
            S::Backpressure(m) => SessionError::Backpressure {
                reason: m,
                retry_after_ms: 100,
            },
            S::Timeout(m) | S::Unavailable(m) => SessionError::Unavailable(m),
            S::Corrupt(m) => SessionError::Internal(m),
        }
    }
}
