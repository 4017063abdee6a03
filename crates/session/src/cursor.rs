//! Cursors: opaque, authenticated positions. A cursor names a stream and an
//! offset in each of a set of partitions, sealed with AES-256-GCM under the
//! server's cursor key: clients cannot read offsets from it, and any change
//! fails authentication. Pure code, no I/O.
//!
//! Layout before base64url (no padding): version byte `1`, 12-byte random
//! nonce, then the sealed plaintext and its 16-byte tag. The plaintext is
//! u16 stream-name length, the name, u16 entry count, then per entry a
//! LEB128 partition and a LEB128 offset, partitions strictly increasing.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use rand::RngCore;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Longest cursor text accepted (1024 partitions of large offsets fit).
pub const MAX_CURSOR_LEN: usize = 32 * 1024;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A decoded cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// Stream name.
    pub stream: String,
    /// (partition, next offset), partitions strictly increasing.
    pub positions: Vec<(u32, u64)>,
}

/// Why a cursor was refused (all map to `bad_cursor`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    /// Not base64url, wrong version, too short or too long.
    #[error("cursor is malformed")]
    Malformed,
    /// Authentication failed: forged, altered, or sealed with another key.
    #[error("cursor is not authentic")]
    NotAuthentic,
}

/// Seals and opens cursors with one key.
#[derive(Clone)]
pub struct CursorCodec {
    cipher: std::sync::Arc<Aes256Gcm>,
}

impl CursorCodec {
    /// A codec with a 32-byte key.
    pub fn new(key: &[u8; 32]) -> CursorCodec {
        CursorCodec {
            cipher: std::sync::Arc::new(Aes256Gcm::new(key.into())),
        }
    }

    /// Seals a cursor.
    pub fn seal(&self, c: &Cursor) -> String {
        debug_assert!(c.positions.windows(2).all(|w| w[0].0 < w[1].0));
        let mut plain = Vec::with_capacity(4 + c.stream.len() + c.positions.len() * 8);
        plain.extend_from_slice(&(c.stream.len() as u16).to_le_bytes());
        plain.extend_from_slice(c.stream.as_bytes());
        plain.extend_from_slice(&(c.positions.len() as u16).to_le_bytes());
        for &(p, o) in &c.positions {
            put_varint(&mut plain, p as u64);
            put_varint(&mut plain, o);
        }
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        // encrypting a few hundred bytes in memory cannot fail
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plain.as_slice())
            .unwrap_or_default();
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        B64.encode(out)
    }

    /// Opens a cursor, checking its authenticity and structure.
    pub fn open(&self, text: &str) -> Result<Cursor, CursorError> {
        if text.len() > MAX_CURSOR_LEN {
            return Err(CursorError::Malformed);
        }
        let raw = B64.decode(text).map_err(|_| CursorError::Malformed)?;
        if raw.len() < 1 + NONCE_LEN + TAG_LEN || raw[0] != VERSION {
            return Err(CursorError::Malformed);
        }
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(&raw[1..1 + NONCE_LEN]), &raw[1 + NONCE_LEN..])
            .map_err(|_| CursorError::NotAuthentic)?;
        decode_plain(&plain).ok_or(CursorError::Malformed)
    }
}

fn decode_plain(b: &[u8]) -> Option<Cursor> {
    let n = u16::from_le_bytes(b.get(0..2)?.try_into().ok()?) as usize;
    let stream = std::str::from_utf8(b.get(2..2 + n)?).ok()?.to_string();
    let mut p = 2 + n;
    let count = u16::from_le_bytes(b.get(p..p + 2)?.try_into().ok()?) as usize;
    p += 2;
    let mut positions = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let part = u32::try_from(get_varint(b, &mut p)?).ok()?;
        let off = get_varint(b, &mut p)?;
        if positions.last().is_some_and(|&(q, _)| q >= part) {
            return None;
        }
        positions.push((part, off));
    }
    (p == b.len()).then_some(Cursor { stream, positions })
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(b: &[u8], p: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let c = *b.get(*p)?;
        *p += 1;
        v |= u64::from(c & 0x7f).checked_shl(shift)?;
        if c & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn codec() -> CursorCodec {
        CursorCodec::new(&[7u8; 32])
    }

    #[test]
    fn round_trip_and_opacity() {
        let c = Cursor {
            stream: "orders".into(),
            positions: vec![(0, 12345), (3, 0), (1023, u64::MAX)],
        };
        let t = codec().seal(&c);
        assert_eq!(codec().open(&t), Ok(c));
        assert!(!t.contains("orders"));
        assert!(t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        // another key refuses it
        assert_eq!(
            CursorCodec::new(&[8u8; 32]).open(&t),
            Err(CursorError::NotAuthentic)
        );
        assert_eq!(codec().open("earliest!"), Err(CursorError::Malformed));
        assert_eq!(codec().open(""), Err(CursorError::Malformed));
    }

    proptest! {
        #[test]
        fn any_change_is_refused(
            offsets in proptest::collection::vec(any::<u64>(), 1..20),
            at in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let c = Cursor {
                stream: "s".into(),
                positions: offsets.iter().enumerate().map(|(i, &o)| (i as u32, o)).collect(),
            };
            let t = codec().seal(&c);
            prop_assert_eq!(codec().open(&t), Ok(c));
            let mut raw = B64.decode(&t).unwrap();
            let i = at.index(raw.len());
            raw[i] ^= 1 << bit;
            prop_assert!(codec().open(&B64.encode(raw)).is_err());
        }

        #[test]
        fn garbage_never_panics(s in "\\PC{0,200}") {
            let _ = codec().open(&s);
        }
    }
}
