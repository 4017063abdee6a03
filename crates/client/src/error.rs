//! The client's error type.

use switchboard_proto::ErrorCode;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error body.
    #[error("{code} ({status}): {message}{}", request_id.as_deref().map(|r| format!(" [request {r}]")).unwrap_or_default())]
    Api {
        /// HTTP status.
        status: u16,
        /// Error code.
        code: ErrorCode,
        /// Message.
        message: String,
        /// Whether the same call may succeed later.
        retryable: bool,
        /// With `backpressure`.
        retry_after_ms: Option<u64>,
        /// With `session_gone`: a newer session of this writer's producer
        /// took over, with this epoch.
        fenced_by_epoch: Option<u64>,
        /// The answer's `X-Request-Id`, to find the call in the server's log.
        request_id: Option<String>,
    },
    /// The request did not get an answer (connection refused, reset, timeout).
    #[error("transport: {0}")]
    Transport(#[from] reqwest::Error),
    /// The answer was not what the protocol says.
    #[error("unexpected answer: {0}")]
    Protocol(String),
    /// Retries ran out; carries the last error.
    #[error("gave up after {attempts} attempts: {last}")]
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// Last failure.
        last: Box<Error>,
    },
    /// A local I/O failure (cursor file, stdin).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The request id of the server's answer, if it answered.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Error::Api { request_id, .. } => request_id.as_deref(),
            Error::GaveUp { last, .. } => last.request_id(),
            _ => None,
        }
    }

    /// The server's error code, if the server answered.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Api { code, .. } => Some(*code),
            Error::GaveUp { last, .. } => last.code(),
            _ => None,
        }
    }

    /// Worth retrying the same call: transport failures, and answers the
    /// server marks `retryable` (`unavailable`, `backpressure`). Not
    /// `internal`: a bug, or data that cannot be opened, does not heal by
    /// sending the same call again, and a loop of retries would hide it.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Api { code, retryable, .. } => {
                *retryable || matches!(code, ErrorCode::Unavailable | ErrorCode::Backpressure)
            }
            Error::Transport(_) => true,
            _ => false,
        }
    }

    /// No connection could be made (refused, unreachable, DNS): the server
    /// is not there, as opposed to one that answered or broke off.
    pub fn is_connect(&self) -> bool {
        match self {
            Error::Transport(e) => e.is_connect(),
            Error::GaveUp { last, .. } => last.is_connect(),
            _ => false,
        }
    }

    /// The call got no usable answer at the HTTP level (connection refused,
    /// reset, timeout, or bytes that are not HTTP).
    pub fn is_transport(&self) -> bool {
        match self {
            Error::Transport(_) => true,
            Error::GaveUp { last, .. } => last.is_transport(),
            _ => false,
        }
    }

    /// The session is gone: allocate a new one.
    pub fn is_session_gone(&self) -> bool {
        self.code() == Some(ErrorCode::SessionGone)
    }

    /// A writer session fenced by a newer session of its producer (a
    /// `session_gone` with `fenced_by_epoch`): another process writes as
    /// this producer now. Allocating again would fence that one in turn, so
    /// the writer stops with this error instead.
    pub fn is_fenced(&self) -> bool {
        match self {
            Error::Api { fenced_by_epoch, .. } => fenced_by_epoch.is_some(),
            Error::GaveUp { last, .. } => last.is_fenced(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: ErrorCode) -> Error {
        Error::Api {
            status: code.status(),
            code,
            message: String::new(),
            retryable: code.retryable(),
            retry_after_ms: None,
            fenced_by_epoch: None,
            request_id: None,
        }
    }

    #[test]
    fn fencing_is_told_by_its_field_not_its_text() {
        let mut e = api(ErrorCode::SessionGone);
        assert!(!e.is_fenced(), "a plain session_gone is not a fencing");
        if let Error::Api { fenced_by_epoch, .. } = &mut e {
            *fenced_by_epoch = Some(3);
        }
        assert!(e.is_fenced());
        let gave_up = Error::GaveUp {
            attempts: 2,
            last: Box::new(e),
        };
        assert!(gave_up.is_fenced());
    }

    #[test]
    fn retries_only_what_can_heal() {
        assert!(api(ErrorCode::Unavailable).is_retryable());
        assert!(api(ErrorCode::Backpressure).is_retryable());
        for code in ErrorCode::ALL {
            if !code.retryable() {
                assert!(!api(code).is_retryable(), "{code} would be retried");
            }
        }
        let gave_up = Error::GaveUp {
            attempts: 3,
            last: Box::new(api(ErrorCode::Unavailable)),
        };
        assert!(!gave_up.is_retryable());
        assert_eq!(gave_up.code(), Some(ErrorCode::Unavailable));
    }
}
