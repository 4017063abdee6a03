//! The one error that crosses between tiers: a wire code, its message and
//! whether retrying can help. Every layer below maps its own errors into
//! it once (the session layer in `switchboard-session`); the API tier maps
//! it to an HTTP answer once.

use serde::{Deserialize, Serialize};
use switchboard_proto::ErrorCode;

/// An error answered by the backend tier (or by a router on its behalf).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct RpcError {
    /// Wire code.
    pub code: ErrorCode,
    /// For people: lowercase, names the field or the cause.
    pub message: String,
    /// Whether the same call may succeed later.
    pub retryable: bool,
    /// How long to wait first, when the answer says.
    pub retry_after_ms: Option<u64>,
    /// With `session_gone`: the epoch of the producer's newer session that
    /// fenced this one.
    pub fenced_by_epoch: Option<u64>,
}

impl RpcError {
    /// An error with `code`; retryable as the code is.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
            retryable: code.retryable(),
            retry_after_ms: None,
            fenced_by_epoch: None,
        }
    }

    /// `unavailable`: retry later or elsewhere.
    pub fn unavailable(message: impl Into<String>) -> RpcError {
        RpcError::new(ErrorCode::Unavailable, message).after(1000)
    }

    /// `session_gone`: allocate a new session.
    pub fn session_gone(message: impl Into<String>) -> RpcError {
        RpcError::new(ErrorCode::SessionGone, message)
    }

    /// With a suggested wait before retrying.
    pub fn after(mut self, ms: u64) -> RpcError {
        self.retry_after_ms = Some(ms);
        self
    }
}
