//! Signing of session calls (docs/PROTOCOL.md, "Authentication and signing").
//!
//! `X-Switchboard-Signature: t=<unix ms>,v1=<hex HMAC-SHA256(secret, string to sign)>`
//! where the string to sign is `t "\n" METHOD "\n" path "\n" hex(SHA-256(body))`:
//! `path` with its query string as sent, the body as sent (compressed, if it
//! was), hex in lowercase, and the HMAC key the bytes of the session secret.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Name of the signature header.
pub const HEADER: &str = "x-switchboard-signature";
/// Largest distance between a signature's `t` and the server's clock.
pub const MAX_SKEW_MS: u64 = 5 * 60 * 1000;
/// Longest header value accepted; real ones are about 90 bytes.
const MAX_HEADER_LEN: usize = 512;

type HmacSha256 = Hmac<Sha256>;

/// Why a signature was refused. Every variant maps to `bad_signature`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header does not have the documented form.
    #[error("malformed signature header: {0}")]
    Malformed(&'static str),
    /// `t` is further than the allowed skew from the server's clock.
    #[error("signature timestamp {t} is more than {max_skew_ms} ms from the server clock {now}")]
    Stale {
        /// The signed time.
        t: u64,
        /// The server's time.
        now: u64,
        /// The allowed distance.
        max_skew_ms: u64,
    },
    /// The MAC does not match the request.
    #[error("signature does not match the request")]
    Mismatch,
}

/// A parsed signature header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature {
    /// Signing time, ms since the epoch.
    pub t: u64,
    /// The HMAC-SHA256.
    pub v1: [u8; 32],
}

impl Signature {
    /// Parses `t=<digits>,v1=<64 lowercase hex>`. Pairs may come in any
    /// order; unknown keys are ignored (room for `v2`); repeated keys,
    /// missing keys and anything else are malformed.
    pub fn parse(header: &str) -> Result<Signature, SignatureError> {
        if header.len() > MAX_HEADER_LEN {
            return Err(SignatureError::Malformed("header too long"));
        }
        let (mut t, mut v1) = (None, None);
        for pair in header.split(',') {
            let (k, v) = pair
                .trim()
                .split_once('=')
                .ok_or(SignatureError::Malformed("expected key=value pairs"))?;
            match k {
                "t" => {
                    if t.is_some() {
                        return Err(SignatureError::Malformed("repeated t"));
                    }
                    if v.is_empty() || v.len() > 19 || !v.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(SignatureError::Malformed("t must be unix milliseconds"));
                    }
                    t = Some(
                        v.parse::<u64>()
                            .map_err(|_| SignatureError::Malformed("t out of range"))?,
                    );
                }
                "v1" => {
                    if v1.is_some() {
                        return Err(SignatureError::Malformed("repeated v1"));
                    }
                    if v.len() != 64 || !v.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                        return Err(SignatureError::Malformed("v1 must be 64 lowercase hex digits"));
                    }
                    let mut mac = [0u8; 32];
                    hex::decode_to_slice(v, &mut mac)
                        .map_err(|_| SignatureError::Malformed("v1 is not hex"))?;
                    v1 = Some(mac);
                }
                _ => {}
            }
        }
        match (t, v1) {
            (Some(t), Some(v1)) => Ok(Signature { t, v1 }),
            (None, _) => Err(SignatureError::Malformed("missing t")),
            (_, None) => Err(SignatureError::Malformed("missing v1")),
        }
    }

    /// Formats the header value.
    pub fn to_header(&self) -> String {
        format!("t={},v1={}", self.t, hex::encode(self.v1))
    }
}

/// The exact string that is signed.
pub fn string_to_sign(t: u64, method: &str, path: &str, body: &[u8]) -> String {
    format!("{t}\n{method}\n{path}\n{}", hex::encode(Sha256::digest(body)))
}

fn mac(secret: &[u8], t: u64, method: &str, path: &str, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length
    let mut m = <HmacSha256 as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    m.update(string_to_sign(t, method, path, body).as_bytes());
    m
}

/// Signs a request; returns the header value.
pub fn sign(secret: &[u8], t: u64, method: &str, path: &str, body: &[u8]) -> String {
    let v1: [u8; 32] = mac(secret, t, method, path, body).finalize().into_bytes().into();
    Signature { t, v1 }.to_header()
}

/// Checks a request's signature header against the session secret, in
/// constant time, and its timestamp against `now_ms` within `max_skew_ms`.
pub fn verify(
    header: &str,
    secret: &[u8],
    method: &str,
    path: &str,
    body: &[u8],
    now_ms: u64,
    max_skew_ms: u64,
) -> Result<Signature, SignatureError> {
    let sig = Signature::parse(header)?;
    mac(secret, sig.t, method, path, body)
        .verify_slice(&sig.v1)
        .map_err(|_| SignatureError::Mismatch)?;
    if sig.t.abs_diff(now_ms) > max_skew_ms {
        return Err(SignatureError::Stale {
            t: sig.t,
            now: now_ms,
            max_skew_ms,
        });
    }
    Ok(sig)
}
