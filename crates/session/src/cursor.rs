//! Cursors: opaque, authenticated positions. A cursor names a stream and an
//! offset in each of a set of partitions (and the stream's incarnation),
//! sealed with AES-256-GCM under the
//! server's cursor key: clients cannot read offsets from it, and any change
//! fails authentication. Pure code, no I/O.
//!
//! Layout before base64url (no padding): version byte `2`, the LEB128 id
//! of the server key it is sealed under, 12-byte random nonce, then the
//! sealed plaintext and its 16-byte tag (version `1`, written before keys
//! had ids, has no key id and opens under key 1). The key id is also part
//! of the additional data. After a rotation, new cursors use the newest
//! key and old ones open until their key is retired. The plaintext is
//! u16 stream-name length, the name, the u64 incarnation (not in version
//! 1), u16 entry count, then per entry a LEB128 partition and a LEB128
//! offset, partitions strictly increasing.

use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use parking_lot::Mutex;
use rand::RngCore;
use switchboard_rpc::keys::ServerKeys;

const VERSION: u8 = 2;
const VERSION_NO_KEY_ID: u8 = 1;
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
    /// The stream's incarnation: a cursor of a stream deleted and created
    /// again under the same name does not fit the new one (0: minted
    /// before incarnations existed).
    pub incarnation: u64,
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
    /// Sealed under a server key this node does not have (retired, or
    /// from another cluster).
    #[error("cursor is sealed under server key {0}, which this node does not have (retired?)")]
    UnknownKey(u32),
}

type KeyedCipher = (u32, Arc<Aes256Gcm>);

/// Seals and opens cursors under the server keys.
#[derive(Clone)]
pub struct CursorCodec {
    keys: ServerKeys,
    /// Ciphers by key id (a handful: the keys not yet retired).
    ciphers: Arc<Mutex<Vec<KeyedCipher>>>,
}

impl CursorCodec {
    /// A codec over the node's server keys.
    pub fn new(keys: ServerKeys) -> CursorCodec {
        CursorCodec {
            keys,
            ciphers: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn cipher(&self, id: u32) -> Option<Arc<Aes256Gcm>> {
        // a retired key stops opening cursors even if its cipher is cached
        if !self.keys.has(id) {
            return None;
        }
        if let Some((_, c)) = self.ciphers.lock().iter().find(|(i, _)| *i == id) {
            return Some(c.clone());
        }
        let key = self.keys.cursor_key(id)?;
        let c = Arc::new(Aes256Gcm::new((&*key).into()));
        let mut cache = self.ciphers.lock();
        cache.retain(|(i, _)| *i != id);
        if cache.len() >= 8 {
            cache.remove(0);
        }
        cache.push((id, c.clone()));
        Some(c)
    }

    /// Seals a cursor under the newest key.
    pub fn seal(&self, c: &Cursor) -> String {
        debug_assert!(c.positions.windows(2).all(|w| w[0].0 < w[1].0));
        let mut plain = Vec::with_capacity(4 + c.stream.len() + c.positions.len() * 8);
        plain.extend_from_slice(&(c.stream.len() as u16).to_le_bytes());
        plain.extend_from_slice(c.stream.as_bytes());
        plain.extend_from_slice(&c.incarnation.to_le_bytes());
        plain.extend_from_slice(&(c.positions.len() as u16).to_le_bytes());
        for &(p, o) in &c.positions {
            put_varint(&mut plain, p as u64);
            put_varint(&mut plain, o);
        }
        let id = self.keys.current_id();
        let mut out = Vec::with_capacity(6 + NONCE_LEN + plain.len() + TAG_LEN);
        out.push(VERSION);
        put_varint(&mut out, u64::from(id));
        let head = out.len();
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        out.extend_from_slice(&nonce);
        // the current key is always known, and sealing a few hundred bytes
        // in memory cannot fail
        let sealed = self
            .cipher(id)
            .and_then(|cipher| {
                cipher
                    .encrypt(
                        Nonce::from_slice(&nonce),
                        Payload {
                            msg: &plain,
                            aad: &out[..head],
                        },
                    )
                    .ok()
            })
            .unwrap_or_default();
        out.extend_from_slice(&sealed);
        B64.encode(out)
    }

    /// Opens a cursor, checking its authenticity and structure.
    pub fn open(&self, text: &str) -> Result<Cursor, CursorError> {
        if text.len() > MAX_CURSOR_LEN {
            return Err(CursorError::Malformed);
        }
        let raw = B64.decode(text).map_err(|_| CursorError::Malformed)?;
        let (id, head) = match raw.first() {
            Some(&VERSION) => {
                let mut p = 1;
                let id = get_varint(&raw, &mut p)
                    .and_then(|v| u32::try_from(v).ok())
                    .ok_or(CursorError::Malformed)?;
                (id, p)
            }
            Some(&VERSION_NO_KEY_ID) => (1, 1),
            _ => return Err(CursorError::Malformed),
        };
        if raw.len() < head + NONCE_LEN + TAG_LEN {
            return Err(CursorError::Malformed);
        }
        let cipher = self.cipher(id).ok_or(CursorError::UnknownKey(id))?;
        let aad = if raw[0] == VERSION { &raw[..head] } else { &[][..] };
        let plain = cipher
            .decrypt(
                Nonce::from_slice(&raw[head..head + NONCE_LEN]),
                Payload {
                    msg: &raw[head + NONCE_LEN..],
                    aad,
                },
            )
            .map_err(|_| CursorError::NotAuthentic)?;
        decode_plain(&plain, raw[0] == VERSION).ok_or(CursorError::Malformed)
    }
}

fn decode_plain(b: &[u8], with_incarnation: bool) -> Option<Cursor> {
    let n = u16::from_le_bytes(b.get(0..2)?.try_into().ok()?) as usize;
    let stream = std::str::from_utf8(b.get(2..2 + n)?).ok()?.to_string();
    let mut p = 2 + n;
    let incarnation = if with_incarnation {
        let i = u64::from_le_bytes(b.get(p..p + 8)?.try_into().ok()?);
        p += 8;
        i
    } else {
        0
    };
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
    (p == b.len()).then_some(Cursor {
        stream,
        incarnation,
        positions,
    })
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
        CursorCodec::new(ServerKeys::from_master(&[7u8; 32]))
    }

    #[test]
    fn round_trip_and_opacity() {
        let c = Cursor {
            stream: "orders".into(),
            incarnation: 77,
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
            CursorCodec::new(ServerKeys::from_master(&[8u8; 32])).open(&t),
            Err(CursorError::NotAuthentic)
        );
        assert_eq!(codec().open("earliest!"), Err(CursorError::Malformed));
        assert_eq!(codec().open(""), Err(CursorError::Malformed));
    }

    #[test]
    fn cursors_from_before_key_ids_open_under_key_one() {
        let keys = ServerKeys::from_master(&[7u8; 32]);
        let key = keys.cursor_key(1).unwrap();
        let mut plain = Vec::new();
        plain.extend_from_slice(&1u16.to_le_bytes());
        plain.push(b's');
        plain.extend_from_slice(&1u16.to_le_bytes());
        put_varint(&mut plain, 0);
        put_varint(&mut plain, 42);
        let nonce = [5u8; NONCE_LEN];
        let sealed = Aes256Gcm::new((&*key).into())
            .encrypt(Nonce::from_slice(&nonce), plain.as_slice())
            .unwrap();
        let mut raw = vec![VERSION_NO_KEY_ID];
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&sealed);
        let c = CursorCodec::new(keys).open(&B64.encode(raw)).unwrap();
        assert_eq!(c.positions, vec![(0, 42)]);
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
                incarnation: 5,
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
