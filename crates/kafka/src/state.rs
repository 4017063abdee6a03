//! Producer state: the compacted topic where each producer block commits
//! its number in the same transaction as its records, and where a new
//! session of a producer writes a fence marker whose offset is its epoch.
//! Every node reads it into memory; appends and fences consult that view
//! after catching up to a marker of their own where it matters.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use switchboard_store::PartRange;

use crate::tail::Apply;

/// Key of the markers a node writes to catch up with a partition.
pub(crate) const SYNC_KEY: &[u8] = b"\0sync";

/// A state record's value.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StateRecord {
    /// Block committed (block records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) b: Option<u64>,
    /// Its epoch (block records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) e: Option<u64>,
    /// Node that wrote it.
    pub(crate) n: String,
    /// Transactional lanes of that node.
    #[serde(default)]
    pub(crate) l: u32,
    /// A fence marker: the epoch is the record's offset + 1.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) f: bool,
}

/// A node that opened a session of the producer: (marker offset, node,
/// its lanes).
pub(crate) type Holder = (u64, String, u32);

/// What this node knows of one producer.
pub(crate) struct Producer {
    pub(crate) last_block: u64,
    pub(crate) epoch: u64,
    /// Where the last block is, when this node wrote it.
    pub(crate) ranges: Option<Vec<PartRange>>,
    /// An append failed with an unknown outcome: catch up before the next.
    pub(crate) uncertain: bool,
    /// Held by appends and fences of the producer on this node.
    pub(crate) lock: Arc<tokio::sync::Mutex<()>>,
    /// The last few nodes that opened a session of it, oldest first.
    pub(crate) holders: Vec<Holder>,
    /// Its blocks queued on this node and not yet answered.
    pub(crate) in_flight: usize,
    /// Woken when `in_flight` goes down.
    pub(crate) idle: Arc<tokio::sync::Notify>,
    /// When this node last wrote, fenced or read a record of it, ms.
    touched_ms: i64,
}

/// The producers of every stream, keyed by [`key`]. A producer not heard
/// of for its time to live is forgotten, as the embedded log forgets it
/// (the state topic deletes its records after the same time): keyed
/// publishes make a producer each, and would otherwise pile up.
pub(crate) struct Producers {
    pub(crate) partitions: u32,
    ttl: ProducerTtl,
    map: Mutex<ProducerMap>,
}

/// How long producers are remembered, ms: short-lived ones (ids starting
/// with `~`: keyed publishes, spilled blocks) and the others.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProducerTtl {
    pub(crate) short_ms: u64,
    pub(crate) long_ms: u64,
}

struct ProducerMap {
    entries: HashMap<Vec<u8>, Producer>,
    pruned_ms: i64,
}

/// Time between sweeps of forgotten producers, ms.
const SWEEP_MS: i64 = 60_000;

/// A producer's key in the state topic: stream, incarnation, producer.
pub(crate) fn key(stream: &str, incarnation: u64, producer: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(stream.len() + producer.len() + 18);
    k.extend_from_slice(stream.as_bytes());
    k.push(0);
    k.extend_from_slice(format!("{incarnation:016x}").as_bytes());
    k.push(0);
    k.extend_from_slice(producer.as_bytes());
    k
}

impl Producers {
    pub(crate) fn new(partitions: u32, ttl: ProducerTtl) -> Producers {
        Producers {
            partitions,
            ttl,
            map: Mutex::new(ProducerMap {
                entries: HashMap::new(),
                pruned_ms: switchboard_proto::time::now_ms(),
            }),
        }
    }

    /// The state partition of a key (Kafka's own placement).
    pub(crate) fn partition(&self, key: &[u8]) -> u32 {
        switchboard_proto::partition::partition_for_key(key, self.partitions)
    }

    /// Runs `f` on the producer's entry, made empty if there is none.
    pub(crate) fn with<T>(&self, key: &[u8], f: impl FnOnce(&mut Producer) -> T) -> T {
        let now = switchboard_proto::time::now_ms();
        let mut m = self.map.lock();
        if now - m.pruned_ms >= SWEEP_MS {
            m.pruned_ms = now;
            let ttl = self.ttl;
            m.entries.retain(|k, p| {
                let ms = if short_lived(k) { ttl.short_ms } else { ttl.long_ms };
                // one in use (an append or fence holds its lock) stays
                p.in_flight > 0
                    || Arc::strong_count(&p.lock) > 1
                    || now - p.touched_ms < ms.min(i64::MAX as u64) as i64
            });
        }
        if let Some(p) = m.entries.get_mut(key) {
            p.touched_ms = now;
            return f(p);
        }
        let p = m.entries.entry(key.to_vec()).or_insert_with(|| Producer {
            last_block: 0,
            epoch: 0,
            ranges: None,
            uncertain: false,
            lock: Arc::new(tokio::sync::Mutex::new(())),
            holders: Vec::new(),
            in_flight: 0,
            idle: Arc::new(tokio::sync::Notify::new()),
            touched_ms: now,
        });
        f(p)
    }

    /// Producers known.
    pub(crate) fn len(&self) -> usize {
        self.map.lock().entries.len()
    }
}

/// Whether the producer of a [`key`] is short-lived (its id starts with
/// `~`).
fn short_lived(key: &[u8]) -> bool {
    key.rsplit(|&b| b == 0)
        .next()
        .is_some_and(|id| id.first() == Some(&b'~'))
}

impl Apply for Producers {
    fn apply(&self, _partition: u32, offset: u64, key: &[u8], value: Option<&[u8]>) {
        if key == SYNC_KEY {
            return;
        }
        let Some(v) = value else {
            self.map.lock().entries.remove(key);
            return;
        };
        let Ok(r) = serde_json::from_slice::<StateRecord>(v) else {
            tracing::warn!(offset, "kafka producer state: unreadable record skipped");
            return;
        };
        self.with(key, |p| {
            if r.f {
                p.epoch = p.epoch.max(offset + 1);
                if p.holders.len() == 4 {
                    p.holders.remove(0);
                }
                p.holders.push((offset, r.n.clone(), r.l));
            }
            if let Some(b) = r.b {
                if b > p.last_block {
                    p.last_block = b;
                    p.ranges = None;
                }
                p.epoch = p.epoch.max(r.e.unwrap_or(0));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_producers_are_forgotten_after_their_time_to_live() {
        let ps = Producers::new(
            1,
            ProducerTtl {
                short_ms: 1,
                long_ms: 3_600_000,
            },
        );
        let (short, long) = (key("s", 1, "~idem.x"), key("s", 1, "p"));
        assert!(short_lived(&short) && !short_lived(&long));
        ps.with(&short, |p| p.last_block = 1);
        ps.with(&long, |p| p.last_block = 1);
        let held = ps.with(&short, |p| p.lock.clone());
        ps.map.lock().pruned_ms = 0;
        std::thread::sleep(std::time::Duration::from_millis(5));
        ps.with(&long, |_| ());
        // held by an append: kept
        assert_eq!(ps.len(), 2);
        drop(held);
        ps.map.lock().pruned_ms = 0;
        std::thread::sleep(std::time::Duration::from_millis(5));
        ps.with(&long, |_| ());
        assert_eq!(ps.len(), 1);
        assert_eq!(ps.with(&long, |p| p.last_block), 1);
    }
}
