//! Request bodies: read within the size limit, then decompressed (gzip or
//! zstd, by `Content-Encoding`) within the same limit. Signatures are
//! checked over the body as sent, so decompression happens here, after the
//! signature check, not in a layer before it.

use std::io::Read;

use axum::body::Body;
use axum::http::HeaderMap;
use bytes::Bytes;
use switchboard_proto::wire::limits::MAX_BODY_BYTES;
use switchboard_proto::ErrorCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// Bodies larger than this are hashed and decompressed off the async
/// runtime (both take about 0.1 ms per 64 KiB).
pub const INLINE_WORK: usize = 64 * 1024;

fn too_large() -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("request body is larger than {MAX_BODY_BYTES} bytes"),
    )
}

/// The request bodies this tier holds at once, in bytes: every body
/// claims its size (as announced, or as it arrives) before it is read, and
/// keeps the claim until its request is answered. When the budget is spent
/// a request answers `backpressure`, so that many slow large bodies cannot
/// take the node's memory.
#[derive(Debug, Clone)]
pub struct BodyBudget(std::sync::Arc<Semaphore>);

/// A body's claim on the [`BodyBudget`], given back when it drops.
#[derive(Debug, Default)]
pub struct BodyClaim(Option<OwnedSemaphorePermit>);

impl BodyBudget {
    /// A budget of `bytes` (counted in KiB).
    pub fn new(bytes: usize) -> BodyBudget {
        BodyBudget(std::sync::Arc::new(Semaphore::new(
            bytes.div_ceil(1024).min(Semaphore::MAX_PERMITS),
        )))
    }

    /// Grows `claim` to cover a body of `bytes` in all (it never shrinks),
    /// or refuses with `backpressure`. Counted in whole KiB of the total,
    /// so that a body arriving in many small pieces claims what it holds,
    /// not a KiB per piece.
    pub fn cover(&self, claim: &mut BodyClaim, bytes: usize) -> Result<(), ApiError> {
        let held = claim.0.as_ref().map_or(0, OwnedSemaphorePermit::num_permits);
        let kib = bytes.div_ceil(1024).saturating_sub(held);
        if kib == 0 {
            return Ok(());
        }
        let kib = u32::try_from(kib).unwrap_or(u32::MAX);
        match self.0.clone().try_acquire_many_owned(kib) {
            Ok(p) => {
                match &mut claim.0 {
                    Some(held) => held.merge(p),
                    None => claim.0 = Some(p),
                }
                Ok(())
            }
            Err(_) => {
                metrics::counter!("switchboard_backpressure_total", "reason" => "request_bodies")
                    .increment(1);
                Err(ApiError {
                    retry_after_ms: Some(200),
                    ..ApiError::new(
                        ErrorCode::Backpressure,
                        "the server holds as many request bodies as it may: retry shortly",
                    )
                })
            }
        }
    }
}

/// Reads the raw body (as sent), at most the body limit, claiming its
/// bytes from `budget` before they are read. A body announced as larger
/// than the limit is refused before any of it is read.
pub async fn read_raw(
    headers: &HeaderMap,
    body: Body,
    timeout: std::time::Duration,
    budget: &BodyBudget,
) -> Result<(Bytes, BodyClaim), ApiError> {
    let announced = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let mut claim = BodyClaim::default();
    let announced = announced.map_or(0, |n| n as usize);
    budget.cover(&mut claim, announced)?;
    let read = async {
        use http_body_util::BodyExt;
        let mut body = body;
        let mut buf = bytes::BytesMut::new();
        let mut first: Option<Bytes> = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ApiError::bad(format!("could not read the request body: {e}")))?;
            let Ok(data) = frame.into_data() else { continue };
            let len = first.as_ref().map_or(0, Bytes::len) + buf.len() + data.len();
            if len > MAX_BODY_BYTES {
                return Err(too_large());
            }
            budget.cover(&mut claim, len)?;
            // one chunk is kept as it came; only a second one is copied
            match first.take() {
                None if buf.is_empty() => first = Some(data),
                None => buf.extend_from_slice(&data),
                Some(f) => {
                    buf.reserve(announced.max(len));
                    buf.extend_from_slice(&f);
                    buf.extend_from_slice(&data);
                }
            }
        }
        Ok(first.unwrap_or_else(|| buf.freeze()))
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(read) => Ok((read?, claim)),
        Err(_) => {
            metrics::counter!("switchboard_connections_timed_out_total", "reason" => "body").increment(1);
            Err(ApiError::bad(format!(
                "the request body did not arrive within {} s",
                timeout.as_secs()
            )))
        }
    }
}

/// Decodes `raw` per `Content-Encoding`, growing `claim` to cover what
/// decompression made of it.
pub async fn decode_within(
    headers: &HeaderMap,
    raw: Bytes,
    claim: &mut BodyClaim,
    budget: &BodyBudget,
) -> Result<Bytes, ApiError> {
    let decoded = decode(headers, raw).await?;
    budget.cover(claim, decoded.len())?;
    Ok(decoded)
}

/// Decodes `raw` per `Content-Encoding`.
pub async fn decode(headers: &HeaderMap, raw: Bytes) -> Result<Bytes, ApiError> {
    let enc = headers
        .get(axum::http::header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    let kind = match enc.as_deref() {
        None | Some("") | Some("identity") => return Ok(raw),
        Some("gzip") | Some("x-gzip") => Kind::Gzip,
        Some("zstd") => Kind::Zstd,
        Some(other) => {
            return Err(ApiError::bad(format!(
                "Content-Encoding {other:?} is not supported: use gzip, zstd or none"
            )))
        }
    };
    if raw.len() <= INLINE_WORK {
        return inflate(kind, &raw);
    }
    tokio::task::spawn_blocking(move || inflate(kind, &raw))
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("decompression task failed: {e}")))?
}

#[derive(Clone, Copy)]
enum Kind {
    Gzip,
    Zstd,
}

fn inflate(kind: Kind, raw: &[u8]) -> Result<Bytes, ApiError> {
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(MAX_BODY_BYTES));
    let limit = MAX_BODY_BYTES as u64 + 1;
    let r = match kind {
        Kind::Gzip => flate2::read::MultiGzDecoder::new(raw)
            .take(limit)
            .read_to_end(&mut out),
        Kind::Zstd => match zstd::stream::read::Decoder::new(raw) {
            Ok(d) => d.take(limit).read_to_end(&mut out),
            Err(e) => Err(e),
        },
    };
    r.map_err(|e| ApiError::bad(format!("could not decompress the request body: {e}")))?;
    if out.len() > MAX_BODY_BYTES {
        return Err(too_large());
    }
    Ok(Bytes::from(out))
}

/// Parses a JSON object body; an empty body parses as `{}` when
/// `empty_ok`. Only an object is a request: serde would also fill a
/// struct from an array of its fields in order, which no client means.
pub fn json<T: serde::de::DeserializeOwned>(body: &[u8], empty_ok: bool) -> Result<T, ApiError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let body = match first {
        None if empty_ok => b"{}".as_slice(),
        Some(b'{') => body,
        Some(b'[') => {
            return Err(ApiError::bad(
                "invalid request body: expected a JSON object, got an array",
            ))
        }
        _ => body,
    };
    serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("invalid request body: {e}")))
}

#[cfg(test)]
mod budget_tests {
    use super::*;

    /// A claim covers the body's total in whole KiB, however many pieces
    /// it came in, and past the budget the answer is `backpressure`.
    #[test]
    fn claims_cover_totals_not_pieces() {
        let budget = BodyBudget::new(4096);
        let mut claim = BodyClaim::default();
        for len in 1..=3000 {
            budget.cover(&mut claim, len).unwrap();
        }
        assert_eq!(claim.0.as_ref().map(OwnedSemaphorePermit::num_permits), Some(3));
        budget.cover(&mut claim, 1000).unwrap();
        assert_eq!(
            claim.0.as_ref().map(OwnedSemaphorePermit::num_permits),
            Some(3),
            "never shrinks"
        );
        let mut other = BodyClaim::default();
        let e = budget.cover(&mut other, 2048).unwrap_err();
        assert_eq!(e.code, ErrorCode::Backpressure);
        drop(claim);
        budget.cover(&mut other, 2048).unwrap();
    }
}
