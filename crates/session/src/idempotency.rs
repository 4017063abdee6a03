//! Idempotency keys of one-shot publishes. The answer to each key is kept
//! in memory and in an internal single-partition stream, so that keys
//! outlive restarts for at least the configured time (24 h by default).
//!
//! Keys are scoped by the caller's identity and the stream, and bounded in
//! number (`max_keys`; the oldest go first; `switchboard_idempotency_keys`
//! shows the count). A second request with a key that is still in flight
//! waits for the first; a request that reuses a key with another body is a
//! conflict.
//!
//! The events of a keyed publish are one producer block of a short-lived
//! producer named after the key (see [`producer_id`]), so the store keeps
//! each part at most once: a publish that failed half-way and is retried
//! completes the block instead of storing its events twice, and a crash
//! between the events becoming durable and the key's record does the same
//! (the store answers where the block is).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use switchboard_store::{Block, Store, StreamSettings};
use tokio::sync::Notify;

use crate::error::{Result, SessionError};

/// The internal stream that holds the keys.
pub const STREAM: &str = "__idempotency";

/// (caller identity, stream, key)
type Key = (String, String, String);

/// The producer whose block 1 holds the events of `key`'s publish: named
/// by a hash of the caller, the stream and the key, behind `~`, which no
/// client producer id can start with (short-lived producers in the log).
pub fn producer_id(identity: &str, stream: &str, key: &str) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for part in [identity, stream, key] {
        h.update(part.as_bytes());
        h.update(&[0]);
    }
    format!("~idem.{:032x}", h.digest128())
}

enum Entry {
    InFlight(Arc<Notify>),
    Done { hash: u128, answer: Bytes, at_ms: i64 },
}

#[derive(Serialize, Deserialize)]
struct Stored {
    /// The caller's identity (records of older versions have none).
    #[serde(default)]
    i: String,
    s: String,
    k: String,
    h: String,
    a: Box<serde_json::value::RawValue>,
}

pub(crate) struct Idempotency {
    store: Arc<dyn Store>,
    ttl_ms: u64,
    max_keys: usize,
    table: Mutex<Table>,
}

/// Answered keys, and the order they were answered in (for expiry and the
/// bound).
#[derive(Default)]
struct Table {
    entries: HashMap<Key, Entry>,
    order: VecDeque<(Key, i64)>,
    /// Bytes of the answers in `entries`.
    answer_bytes: usize,
}

/// Most bytes of answers kept in memory (an answer lists an offset per
/// event: up to about 400 KB for 10,000 events); past it the oldest keys go
/// first, as past `max_keys`. A retry of a key gone from memory is still
/// stored once: the store keeps the key's block once and says where it is.
const MAX_ANSWER_BYTES: usize = 128 << 20;

impl Table {
    /// Records the answer of `k` (a body hashing to `hash`, answered at
    /// `at_ms`), then drops expired keys and the oldest beyond `max_keys`.
    /// Returns what the key held before (its in-flight marker, if any).
    fn done(
        &mut self,
        k: Key,
        (hash, answer): (u128, Bytes),
        at_ms: i64,
        cutoff_ms: i64,
        max_keys: usize,
    ) -> Option<Entry> {
        self.order.push_back((k.clone(), at_ms));
        self.answer_bytes += answer.len();
        let old = self.entries.insert(k, Entry::Done { hash, answer, at_ms });
        if let Some(Entry::Done { answer, .. }) = &old {
            self.answer_bytes -= answer.len();
        }
        while self.order.front().is_some_and(|(_, at)| {
            *at < cutoff_ms || self.order.len() > max_keys || self.answer_bytes > MAX_ANSWER_BYTES
        }) {
            let Some((k, at)) = self.order.pop_front() else {
                break;
            };
            // only the entry this place was kept for (a key used again has a newer one)
            if matches!(self.entries.get(&k), Some(Entry::Done { at_ms, .. }) if *at_ms == at) {
                if let Some(Entry::Done { answer, .. }) = self.entries.remove(&k) {
                    self.answer_bytes -= answer.len();
                }
            }
        }
        metrics::gauge!("switchboard_idempotency_keys").set(self.order.len() as f64);
        old
    }
}

/// What [`Idempotency::begin`] decided.
pub(crate) enum Begin {
    /// The key was answered before: here is the answer.
    Done(Bytes),
    /// Go ahead; complete or drop the guard.
    Go(Guard),
}

pub(crate) struct Guard {
    idem: Arc<Idempotency>,
    key: Option<Key>,
    hash: u128,
}

impl Idempotency {
    /// Creates the internal stream if needed and loads the keys younger
    /// than `ttl_ms`.
    pub async fn load(
        store: Arc<dyn Store>,
        ttl_ms: u64,
        max_keys: usize,
        now_ms: i64,
    ) -> Result<Idempotency> {
        let settings = StreamSettings {
            partitions: 1,
            retention_ms: Some(ttl_ms.saturating_add(3_600_000)),
            retention_bytes: None,
            encrypt_keys: false,
        };
        if let Err(e) = store.create_stream(STREAM, settings).await {
            if !matches!(e, switchboard_store::Error::Conflict(_)) {
                return Err(e.into());
            }
        }
        let mut table = Table::default();
        let state = store.describe_stream(STREAM).await?;
        let mut reader = store.open_reader(STREAM, &[(0, state.start_offsets[0])]).await?;
        let cutoff = now_ms - ttl_ms as i64;
        loop {
            let f = reader.fetch(10_000, 8 << 20, std::time::Duration::ZERO).await?;
            if f.records.is_empty() && f.gaps.is_empty() {
                break;
            }
            for (_, r) in &f.records {
                if r.timestamp_ms < cutoff {
                    continue;
                }
                let Ok(s) = serde_json::from_slice::<Stored>(&r.value) else {
                    tracing::warn!(offset = r.offset, "skipping an unreadable idempotency record");
                    continue;
                };
                let Ok(hash) = u128::from_str_radix(&s.h, 16) else {
                    continue;
                };
                let answer = Bytes::from(s.a.get().to_string());
                table.done(
                    (s.i, s.s, s.k),
                    (hash, answer),
                    r.timestamp_ms,
                    cutoff,
                    max_keys.max(1),
                );
            }
        }
        tracing::info!(keys = table.entries.len(), "idempotency keys loaded");
        metrics::gauge!("switchboard_idempotency_keys").set(table.order.len() as f64);
        Ok(Idempotency {
            store,
            ttl_ms,
            max_keys: max_keys.max(1),
            table: Mutex::new(table),
        })
    }

    /// Claims `key` for a request whose body hashes to `hash`.
    pub async fn begin(
        self: &Arc<Self>,
        identity: &str,
        stream: &str,
        key: &str,
        hash: u128,
        now_ms: i64,
    ) -> Result<Begin> {
        let k = (identity.to_string(), stream.to_string(), key.to_string());
        loop {
            let notify = {
                let mut t = self.table.lock();
                match t.entries.get(&k) {
                    Some(Entry::Done {
                        hash: h,
                        answer,
                        at_ms,
                    }) if now_ms - at_ms <= self.ttl_ms as i64 => {
                        if *h != hash {
                            return Err(SessionError::Conflict(format!(
                                "idempotency key {key:?} was used with another request body"
                            )));
                        }
                        return Ok(Begin::Done(answer.clone()));
                    }
                    Some(Entry::InFlight(n)) => n.clone(),
                    _ => {
                        t.entries
                            .insert(k.clone(), Entry::InFlight(Arc::new(Notify::new())));
                        return Ok(Begin::Go(Guard {
                            idem: self.clone(),
                            key: Some(k),
                            hash,
                        }));
                    }
                }
            };
            let n = notify.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if matches!(self.table.lock().entries.get(&k), Some(Entry::InFlight(m)) if Arc::ptr_eq(m, &notify))
            {
                n.await;
            }
        }
    }
}

impl Guard {
    /// Stores the answer durably, then publishes it to waiters.
    pub async fn complete(mut self, answer: Bytes, now_ms: i64) -> Result<()> {
        let Some(k) = self.key.take() else { return Ok(()) };
        let rec = Stored {
            i: k.0.clone(),
            s: k.1.clone(),
            k: k.2.clone(),
            h: format!("{:032x}", self.hash),
            a: serde_json::value::RawValue::from_string(String::from_utf8_lossy(&answer).into_owned())
                .map_err(|e| SessionError::Internal(e.to_string()))?,
        };
        let value = serde_json::to_vec(&rec).map_err(|e| SessionError::Internal(e.to_string()))?;
        let mut block = Block::new(None).map_err(|e| SessionError::Internal(e.to_string()))?;
        block.records(0).push(now_ms, None, &[&value], []);
        let r = self.idem.store.append(STREAM, block).await;
        if let Err(e) = r {
            // the events are durable; the answer stays in memory only
            tracing::warn!(stream = %k.1, error = %e, "could not store an idempotency key");
        }
        let cutoff = now_ms - self.idem.ttl_ms as i64;
        let old = self
            .idem
            .table
            .lock()
            .done(k, (self.hash, answer), now_ms, cutoff, self.idem.max_keys);
        if let Some(Entry::InFlight(n)) = old {
            n.notify_waiters();
        }
        Ok(())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(k) = self.key.take() {
            if let Some(Entry::InFlight(n)) = self.idem.table.lock().entries.remove(&k) {
                n.notify_waiters();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Key {
        ("alice".into(), "s".into(), k.into())
    }

    fn answer(t: &Table, k: &str) -> Option<Bytes> {
        match t.entries.get(&key(k)) {
            Some(Entry::Done { answer, .. }) => Some(answer.clone()),
            _ => None,
        }
    }

    /// Keys go oldest first past the bound, and once expired; a key answered
    /// again keeps its newer answer when its older place goes.
    #[test]
    fn keys_are_bounded_and_expire() {
        let mut t = Table::default();
        let a = |s: &'static str| (1u128, Bytes::from_static(s.as_bytes()));
        t.done(key("k1"), a("1"), 10, 0, 2);
        t.done(key("k2"), a("2"), 11, 0, 2);
        t.done(key("k3"), a("3"), 12, 0, 2);
        assert_eq!(answer(&t, "k1"), None, "the oldest went past the bound");
        assert_eq!(answer(&t, "k2").as_deref(), Some(&b"2"[..]));
        // k2 answered again later: its first place going leaves the new answer
        t.done(key("k2"), a("2b"), 13, 0, 2);
        assert_eq!(answer(&t, "k2").as_deref(), Some(&b"2b"[..]));
        assert_eq!(answer(&t, "k3").as_deref(), Some(&b"3"[..]));
        // expiry: everything before 13 goes
        t.done(key("k4"), a("4"), 20, 13, 10);
        assert_eq!(answer(&t, "k3"), None);
        assert_eq!(answer(&t, "k2").as_deref(), Some(&b"2b"[..]));
        assert_eq!(t.order.len(), 2);
        assert_eq!(t.answer_bytes, 3, "\"2b\" and \"4\"");
        // past the bytes bound the oldest go too
        let big = Bytes::from(vec![b'x'; MAX_ANSWER_BYTES / 2 + 1]);
        t.done(key("b1"), (1, big.clone()), 21, 0, 10);
        t.done(key("b2"), (1, big), 22, 0, 10);
        assert_eq!(answer(&t, "k2"), None);
        assert_eq!(answer(&t, "b1"), None);
        assert!(answer(&t, "b2").is_some());
        assert_eq!(t.answer_bytes, MAX_ANSWER_BYTES / 2 + 1);
    }
}
