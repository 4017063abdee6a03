//! Idempotency keys of one-shot publishes. The answer to each key is kept
//! in memory and in an internal single-partition stream, so that keys
//! outlive restarts for at least the configured time (24 h by default).
//!
//! A second request with a key that is still in flight waits for the
//! first; a request that reuses a key with another body is a conflict.
//! Known gap: a crash after the events are durable but before the key's
//! record is makes a retry publish the events again.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use switchboard_store::{Block, Store, StreamSettings};
use tokio::sync::Notify;

use crate::error::{Result, SessionError};

/// The internal stream that holds the keys.
pub const STREAM: &str = "__idempotency";

type Key = (String, String);

enum Entry {
    InFlight(Arc<Notify>),
    Done { hash: u128, answer: Bytes, at_ms: i64 },
}

#[derive(Serialize, Deserialize)]
struct Stored {
    s: String,
    k: String,
    h: String,
    a: Box<serde_json::value::RawValue>,
}

pub(crate) struct Idempotency {
    store: Arc<dyn Store>,
    ttl_ms: u64,
    table: Mutex<HashMap<Key, Entry>>,
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
    pub async fn load(store: Arc<dyn Store>, ttl_ms: u64, now_ms: i64) -> Result<Idempotency> {
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
        let mut table = HashMap::new();
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
                table.insert(
                    (s.s, s.k),
                    Entry::Done {
                        hash,
                        answer: Bytes::from(s.a.get().to_string()),
                        at_ms: r.timestamp_ms,
                    },
                );
            }
        }
        tracing::info!(keys = table.len(), "idempotency keys loaded");
        Ok(Idempotency {
            store,
            ttl_ms,
            table: Mutex::new(table),
        })
    }

    /// Claims `key` for a request whose body hashes to `hash`.
    pub async fn begin(self: &Arc<Self>, stream: &str, key: &str, hash: u128, now_ms: i64) -> Result<Begin> {
        let k = (stream.to_string(), key.to_string());
        loop {
            let notify = {
                let mut t = self.table.lock();
                match t.get(&k) {
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
                        t.insert(k.clone(), Entry::InFlight(Arc::new(Notify::new())));
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
            if matches!(self.table.lock().get(&k), Some(Entry::InFlight(m)) if Arc::ptr_eq(m, &notify)) {
                n.await;
            }
        }
    }

    fn prune(&self, now_ms: i64) {
        let cutoff = now_ms - self.ttl_ms as i64;
        self.table
            .lock()
            .retain(|_, e| !matches!(e, Entry::Done { at_ms, .. } if *at_ms < cutoff));
    }
}

impl Guard {
    /// Stores the answer durably, then publishes it to waiters.
    pub async fn complete(mut self, answer: Bytes, now_ms: i64) -> Result<()> {
        let Some(k) = self.key.take() else { return Ok(()) };
        let rec = Stored {
            s: k.0.clone(),
            k: k.1.clone(),
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
            tracing::warn!(stream = %k.0, error = %e, "could not store an idempotency key");
        }
        let entry = Entry::Done {
            hash: self.hash,
            answer,
            at_ms: now_ms,
        };
        let old = self.idem.table.lock().insert(k, entry);
        if let Some(Entry::InFlight(n)) = old {
            n.notify_waiters();
        }
        if rand::random::<u16>() == 0 {
            self.idem.prune(now_ms);
        }
        Ok(())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(k) = self.key.take() {
            if let Some(Entry::InFlight(n)) = self.idem.table.lock().remove(&k) {
                n.notify_waiters();
            }
        }
    }
}
