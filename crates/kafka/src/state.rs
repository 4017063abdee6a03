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
}

/// The producers of every stream, keyed by [`key`].
pub(crate) struct Producers {
    pub(crate) partitions: u32,
    map: Mutex<HashMap<Vec<u8>, Producer>>,
}

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
    pub(crate) fn new(partitions: u32) -> Producers {
        Producers {
            partitions,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The state partition of a key (Kafka's own placement).
    pub(crate) fn partition(&self, key: &[u8]) -> u32 {
        switchboard_proto::partition::partition_for_key(key, self.partitions)
    }

    /// Runs `f` on the producer's entry, made empty if there is none.
    pub(crate) fn with<T>(&self, key: &[u8], f: impl FnOnce(&mut Producer) -> T) -> T {
        let mut m = self.map.lock();
        if let Some(p) = m.get_mut(key) {
            return f(p);
        }
        let p = m.entry(key.to_vec()).or_insert_with(|| Producer {
            last_block: 0,
            epoch: 0,
            ranges: None,
            uncertain: false,
            lock: Arc::new(tokio::sync::Mutex::new(())),
            holders: Vec::new(),
            in_flight: 0,
            idle: Arc::new(tokio::sync::Notify::new()),
        });
        f(p)
    }

    /// Producers known.
    pub(crate) fn len(&self) -> usize {
        self.map.lock().len()
    }
}

impl Apply for Producers {
    fn apply(&self, _partition: u32, offset: u64, key: &[u8], value: Option<&[u8]>) {
        if key == SYNC_KEY {
            return;
        }
        let Some(v) = value else {
            self.map.lock().remove(key);
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
