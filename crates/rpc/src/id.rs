//! Session ids. An id tells a router where the session lives (its node
//! and shard) and which server key its signing secret comes from, and it
//! stays unguessable: 128 random bits. Ids are opaque to clients.
//!
//! Layout before base64url (no padding): version byte `1`, LEB128 server
//! key id, u16 shard (big-endian), u8 node id length, the node id, then 16
//! random bytes.

use base64::Engine;
use rand::RngCore;

use crate::codec::{get_varint, put_varint};

const VERSION: u8 = 1;
const RANDOM: usize = 16;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
/// Longest node id, bytes.
pub const MAX_NODE_ID: usize = 64;
/// Longest session id text.
pub const MAX_ID_LEN: usize = 128;

/// Whether `id` can name a node: 1 to 64 of `A-Z a-z 0-9 . _ -`.
pub fn is_valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_NODE_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A decoded session id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionId {
    /// Server key the session's secret is derived from.
    pub key_id: u32,
    /// The node holding the session.
    pub node: String,
    /// The shard (phone-switch broker) the node listens on.
    pub shard: u16,
    /// Random part.
    pub random: [u8; RANDOM],
}

impl SessionId {
    /// A new id for a session on `node`, `shard`, signed under `key_id`.
    pub fn generate(key_id: u32, node: &str, shard: u16) -> SessionId {
        let mut random = [0u8; RANDOM];
        rand::rngs::OsRng.fill_bytes(&mut random);
        SessionId {
            key_id,
            node: node.to_string(),
            shard,
            random,
        }
    }

    /// The id as clients see it.
    pub fn to_text(&self) -> String {
        let mut b = Vec::with_capacity(4 + 2 + 1 + self.node.len() + RANDOM);
        b.push(VERSION);
        put_varint(&mut b, u64::from(self.key_id));
        b.extend_from_slice(&self.shard.to_be_bytes());
        b.push(self.node.len() as u8);
        b.extend_from_slice(self.node.as_bytes());
        b.extend_from_slice(&self.random);
        B64.encode(b)
    }

    /// Reads an id; `None` if it is not one this server could have made.
    pub fn parse(text: &str) -> Option<SessionId> {
        if text.len() > MAX_ID_LEN {
            return None;
        }
        let b = B64.decode(text).ok()?;
        if b.first() != Some(&VERSION) {
            return None;
        }
        let mut p = 1;
        let key_id = u32::try_from(get_varint(&b, &mut p).ok()?).ok()?;
        let shard = u16::from_be_bytes(b.get(p..p + 2)?.try_into().ok()?);
        p += 2;
        let n = *b.get(p)? as usize;
        p += 1;
        let node = std::str::from_utf8(b.get(p..p + n)?).ok()?;
        if !is_valid_node_id(node) {
            return None;
        }
        p += n;
        let random: [u8; RANDOM] = b.get(p..)?.try_into().ok()?;
        let id = SessionId {
            key_id,
            node: node.to_string(),
            shard,
            random,
        };
        // one text per id: no second spelling reaches the same session
        (id.to_text() == text).then_some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let id = SessionId::generate(7, "node-a.1", 513);
        let text = id.to_text();
        assert_eq!(SessionId::parse(&text), Some(id.clone()));
        assert_ne!(SessionId::generate(7, "node-a.1", 513), id);
        for bad in ["", "x", "AAAA", &text[..text.len() - 1], &format!("{text}A")] {
            assert_eq!(SessionId::parse(bad), None, "{bad}");
        }
        assert!(!is_valid_node_id("a b"));
        assert!(!is_valid_node_id(&"n".repeat(65)));
    }
}
