//! The one place where errors become wire errors: every failure of this
//! tier and of the ones below it turns into an [`ApiError`], which renders
//! as docs/PROTOCOL.md's JSON error body with its status.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use switchboard_proto::{ErrorBody, ErrorCode};
use switchboard_rpc::RpcError;

/// A wire error.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// Code.
    pub code: ErrorCode,
    /// Message, lowercase.
    pub message: String,
    /// With `backpressure`.
    pub retry_after_ms: Option<u64>,
    /// With `session_gone`: the epoch of the producer's session that fenced
    /// this one.
    pub fenced_by_epoch: Option<u64>,
}

impl ApiError {
    /// An error with `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            retry_after_ms: None,
            fenced_by_epoch: None,
        }
    }

    /// `bad_request`.
    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::BadRequest, message)
    }
}

impl From<RpcError> for ApiError {
    fn from(e: RpcError) -> Self {
        ApiError {
            code: e.code,
            message: e.message,
            retry_after_ms: e.retry_after_ms,
            fenced_by_epoch: e.fenced_by_epoch,
        }
    }
}

/// What an error response said, kept in the response's extensions so that
/// the request's log line can say why it failed.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if self.code == ErrorCode::Internal {
            tracing::error!(message = %self.message, "internal error");
        }
        let failure = Failure {
            code: self.code,
            message: self.message.clone(),
        };
        let mut body = ErrorBody::new(self.code, self.message);
        body.error.retry_after_ms = self
            .retry_after_ms
            .filter(|_| self.code == ErrorCode::Backpressure);
        body.error.fenced_by_epoch = self
            .fenced_by_epoch
            .filter(|_| self.code == ErrorCode::SessionGone);
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut resp = (status, json).into_response();
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(ms) = self.retry_after_ms {
            if let Ok(v) = HeaderValue::from_str(&ms.div_ceil(1000).max(1).to_string()) {
                h.insert(header::RETRY_AFTER, v);
            }
        }
        if matches!(self.code, ErrorCode::Unauthorized) {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp.extensions_mut().insert(failure);
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_keeps_why_it_failed_for_the_log_line() {
        let resp = ApiError::new(ErrorCode::Unavailable, "the store is down").into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        let f = resp.extensions().get::<Failure>().cloned();
        assert!(
            matches!(&f, Some(f) if f.code == ErrorCode::Unavailable && f.message == "the store is down"),
            "{f:?}"
        );
    }
}
