//! The catalog of streams: a compacted topic with one record per stream
//! (its settings and incarnation; a tombstone once deleted), read by every
//! node into memory.

use std::collections::BTreeMap;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use switchboard_store::StreamSettings;

use crate::tail::Apply;

/// Key of the markers a node writes to catch up with the catalog.
pub(crate) const SYNC_KEY: &[u8] = b"\0sync";

/// A stream as the catalog records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) partitions: u32,
    pub(crate) retention_ms: Option<u64>,
    pub(crate) retention_bytes: Option<u64>,
    pub(crate) encrypt_keys: bool,
    pub(crate) incarnation: u64,
}

impl Entry {
    pub(crate) fn settings(&self) -> StreamSettings {
        StreamSettings {
            partitions: self.partitions,
            retention_ms: self.retention_ms,
            retention_bytes: self.retention_bytes,
            encrypt_keys: self.encrypt_keys,
        }
    }

    pub(crate) fn new(s: StreamSettings, incarnation: u64) -> Entry {
        Entry {
            partitions: s.partitions,
            retention_ms: s.retention_ms,
            retention_bytes: s.retention_bytes,
            encrypt_keys: s.encrypt_keys,
            incarnation,
        }
    }
}

/// The catalog as read so far.
#[derive(Default)]
pub(crate) struct Catalog {
    streams: RwLock<BTreeMap<String, Entry>>,
}

impl Catalog {
    pub(crate) fn get(&self, name: &str) -> Option<Entry> {
        self.streams.read().get(name).copied()
    }

    pub(crate) fn list(&self) -> Vec<(String, StreamSettings)> {
        self.streams
            .read()
            .iter()
            .map(|(n, e)| (n.clone(), e.settings()))
            .collect()
    }
}

impl Apply for Catalog {
    fn apply(&self, _partition: u32, _offset: u64, key: &[u8], value: Option<&[u8]>) {
        if key == SYNC_KEY {
            return;
        }
        let Ok(name) = std::str::from_utf8(key) else {
            return;
        };
        match value {
            None => {
                self.streams.write().remove(name);
            }
            Some(v) => match serde_json::from_slice::<Entry>(v) {
                Ok(e) => {
                    self.streams.write().insert(name.to_string(), e);
                }
                Err(e) => {
                    tracing::warn!(stream = name, error = %e, "kafka catalog: unreadable record skipped")
                }
            },
        }
    }
}
