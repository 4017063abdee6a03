//! The error codes of docs/PROTOCOL.md and the one place that maps them to HTTP
//! statuses and to the JSON error body.

use serde::{Deserialize, Serialize};

/// Every error code a Switchboard server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Malformed JSON, unknown field, out-of-range number.
    BadRequest,
    /// Cursor forged, altered, or for another stream.
    BadCursor,
    /// No or invalid bearer token.
    Unauthorized,
    /// Session call not signed correctly.
    BadSignature,
    /// The token lacks the scope for this stream.
    Forbidden,
    /// No such stream.
    StreamNotFound,
    /// No such endpoint.
    NotFound,
    /// The endpoint exists, not with this method.
    MethodNotAllowed,
    /// Session expired, disposed, or its node is gone.
    SessionGone,
    /// Batch not pending, block mismatch, settings mismatch.
    Conflict,
    /// Request body too large.
    PayloadTooLarge,
    /// Slow down and retry after `retry_after_ms`.
    Backpressure,
    /// Node draining or store unreachable.
    Unavailable,
    /// A bug.
    Internal,
}

impl ErrorCode {
    /// Every code, in the order of docs/PROTOCOL.md.
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::BadRequest,
        ErrorCode::BadCursor,
        ErrorCode::Unauthorized,
        ErrorCode::BadSignature,
        ErrorCode::Forbidden,
        ErrorCode::StreamNotFound,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Conflict,
        ErrorCode::SessionGone,
        ErrorCode::PayloadTooLarge,
        ErrorCode::Backpressure,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    /// The HTTP status of the code.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BadRequest | ErrorCode::BadCursor => 400,
            ErrorCode::Unauthorized | ErrorCode::BadSignature => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::StreamNotFound | ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::SessionGone => 410,
            ErrorCode::Conflict => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::Backpressure => 429,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::BadCursor => "bad_cursor",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::BadSignature => "bad_signature",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::StreamNotFound => "stream_not_found",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::SessionGone => "session_gone",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::Backpressure => "backpressure",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// Whether repeating the same call later can succeed. `session_gone` is
    /// not: the client allocates a new session instead.
    pub fn retryable(self) -> bool {
        matches!(self, ErrorCode::Backpressure | ErrorCode::Unavailable)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON body of every error answer: `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// Human-readable message, lowercase, no trailing dot.
    pub message: String,
    /// Whether the same call may succeed later.
    pub retryable: bool,
    /// With `backpressure`: how long to wait before retrying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// With `session_gone`: a newer session of the writer's producer took
    /// over with this epoch, so this writer must stop rather than allocate
    /// again (which would fence the other in turn).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fenced_by_epoch: Option<u64>,
}

impl ErrorBody {
    /// An error body for `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            error: ErrorDetail {
                code,
                message: message.into(),
                retryable: code.retryable(),
                retry_after_ms: None,
                fenced_by_epoch: None,
            },
        }
    }
}
