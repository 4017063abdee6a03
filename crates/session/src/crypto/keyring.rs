//! Data keys, kept with the data: each is a random AES-256 key with a
//! random 64-bit id, stored only wrapped by master keys, as a record of the
//! store's internal stream `__keys`. So any backend node that holds a
//! master key opens any event, whichever node wrote it, and the keys
//! travel with the data (backups, Kafka replication).
//!
//! A record of `__keys` is one data key's JSON: id, stream, creation time
//! and its wrappings by master key id. A key gains wrappings (a master key
//! was added) by a newer record for the same id; readers merge them.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use base64::Engine;
use parking_lot::Mutex;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use switchboard_store::{Block, Store, StoreReader, StreamSettings};
use zeroize::Zeroizing;

use super::master::{self, MasterSource, Masters};
use super::{CryptoError, Key32, TAG_LEN};

/// The internal stream of data keys.
pub const STREAM: &str = "__keys";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// One data key as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub id: u64,
    pub stream: String,
    pub created_ms: i64,
    /// master key id -> base64(nonce || sealed key || tag)
    pub wrapped: BTreeMap<String, String>,
}

type Stamp = Option<(std::time::SystemTime, u64, u64)>;

pub(crate) struct Keyring {
    store: Arc<dyn Store>,
    source: MasterSource,
    masters: Mutex<(Arc<Masters>, Stamp)>,
    entries: Mutex<HashMap<u64, Entry>>,
    /// Positioned after the records read so far; refreshes take turns.
    reader: tokio::sync::Mutex<Box<dyn StoreReader>>,
}

fn wrap_aad(id: u64, stream: &str) -> Vec<u8> {
    // keys made before ids were 64-bit are bound to their 32-bit id
    let mut aad = match u32::try_from(id) {
        Ok(small) => {
            let mut a = b"switchboard data key v1\0".to_vec();
            a.extend_from_slice(&small.to_le_bytes());
            a
        }
        Err(_) => {
            let mut a = b"switchboard data key v2\0".to_vec();
            a.extend_from_slice(&id.to_le_bytes());
            a
        }
    };
    aad.extend_from_slice(stream.as_bytes());
    aad
}

fn wrap(master: &Key32, id: u64, stream: &str, key: &Key32) -> String {
    let cipher = Aes256Gcm::new((&**master).into());
    let mut nonce = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let mut buf = Zeroizing::new(key.to_vec());
    // sealing 32 bytes in memory cannot fail
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(&nonce), &wrap_aad(id, stream), &mut buf)
        .unwrap_or_default();
    let mut out = nonce.to_vec();
    out.extend_from_slice(&buf);
    out.extend_from_slice(&tag);
    B64.encode(out)
}

fn unwrap_any(dk: &Entry, masters: &Masters) -> Result<Key32, CryptoError> {
    let mut tried = Vec::new();
    for (mid, wrapped) in &dk.wrapped {
        tried.push(mid.clone());
        let Some((_, mk)) = masters.iter().find(|(m, _)| m == mid) else {
            continue;
        };
        let raw = B64.decode(wrapped).map_err(|_| CryptoError::DataKey {
            id: dk.id,
            reason: format!("wrapping under master key {mid} is not base64"),
        })?;
        if raw.len() != 12 + 32 + TAG_LEN {
            continue;
        }
        let mut buf = Zeroizing::new(raw[12..44].to_vec());
        let cipher = Aes256Gcm::new((&**mk).into());
        if cipher
            .decrypt_in_place_detached(
                Nonce::from_slice(&raw[..12]),
                &wrap_aad(dk.id, &dk.stream),
                &mut buf,
                Tag::from_slice(&raw[44..]),
            )
            .is_ok()
        {
            let mut k = Zeroizing::new([0u8; 32]);
            k.copy_from_slice(&buf);
            return Ok(k);
        }
        return Err(CryptoError::DataKey {
            id: dk.id,
            reason: format!("master key {mid} does not unwrap it (wrong master key?)"),
        });
    }
    Err(CryptoError::DataKey {
        id: dk.id,
        reason: format!("wrapped only under master keys {tried:?}, none of which is configured"),
    })
}

fn store_err(e: switchboard_store::Error) -> CryptoError {
    CryptoError::Keys(format!("data keys in the store: {e}"))
}

async fn load_masters(source: &MasterSource) -> Result<(Masters, Stamp), CryptoError> {
    let source = source.clone();
    tokio::task::spawn_blocking(move || Ok((master::load(&source)?, master::stamp(&source))))
        .await
        .map_err(|e| CryptoError::Keys(format!("key task failed: {e}")))?
}

/// The keyring file of versions that kept data keys beside the data
/// directory instead of in the store.
#[derive(Deserialize)]
struct LegacyFile {
    keys: Vec<LegacyEntry>,
}

#[derive(Deserialize)]
struct LegacyEntry {
    id: u32,
    stream: String,
    created_ms: i64,
    wrapped: BTreeMap<String, String>,
}

impl Keyring {
    /// Opens the keyring of `store`: creates `__keys` if needed, reads it,
    /// imports an older `keyring.json` from `legacy_dir`, wraps every key
    /// under the newest master key, and checks that the master keys open
    /// the newest data key (a wrong master key shows now, not at the first
    /// read).
    pub async fn open(
        store: Arc<dyn Store>,
        source: MasterSource,
        legacy_dir: Option<&Path>,
    ) -> Result<Keyring, CryptoError> {
        let settings = StreamSettings {
            partitions: 1,
            retention_ms: None,
            retention_bytes: None,
            encrypt_keys: false,
        };
        match store.create_stream(STREAM, settings).await {
            Ok(_) | Err(switchboard_store::Error::Conflict(_)) => {}
            Err(e) => return Err(store_err(e)),
        }
        let start = store
            .describe_stream(STREAM)
            .await
            .map_err(store_err)?
            .start_offsets[0];
        let reader = store
            .open_reader(STREAM, &[(0, start)])
            .await
            .map_err(store_err)?;
        let (masters, stamp) = load_masters(&source).await?;
        let ring = Keyring {
            store,
            source,
            masters: Mutex::new((Arc::new(masters), stamp)),
            entries: Mutex::new(HashMap::new()),
            reader: tokio::sync::Mutex::new(reader),
        };
        ring.refresh().await?;
        if let Some(dir) = legacy_dir {
            ring.import_legacy(dir).await?;
        }
        ring.rewrap().await?;
        let newest = ring
            .entries
            .lock()
            .values()
            .max_by_key(|e| (e.created_ms, e.id))
            .cloned();
        if let Some(e) = newest {
            let masters = ring.masters.lock().0.clone();
            unwrap_any(&e, &masters)?;
        }
        Ok(ring)
    }

    /// Reads the records added to `__keys` since the last look (by this
    /// node or another).
    async fn refresh(&self) -> Result<(), CryptoError> {
        let mut reader = self.reader.lock().await;
        loop {
            let f = reader
                .fetch(10_000, 8 << 20, std::time::Duration::ZERO)
                .await
                .map_err(store_err)?;
            if f.records.is_empty() && f.gaps.is_empty() {
                return Ok(());
            }
            let mut entries = self.entries.lock();
            for (_, r) in f.records {
                let Ok(e) = serde_json::from_slice::<Entry>(&r.value) else {
                    tracing::warn!(offset = r.offset, "skipping an unreadable data key record");
                    continue;
                };
                match entries.get_mut(&e.id) {
                    Some(known) => known.wrapped.extend(e.wrapped),
                    None => {
                        entries.insert(e.id, e);
                    }
                }
            }
        }
    }

    async fn append(&self, e: &Entry) -> Result<(), CryptoError> {
        let value = serde_json::to_vec(e).map_err(|err| CryptoError::Keys(err.to_string()))?;
        let mut block = Block::new(None).map_err(store_err)?;
        let id = e.id.to_string();
        block.records(0).push(
            switchboard_proto::time::now_ms(),
            Some(id.as_bytes()),
            &[&value],
            [],
        );
        self.store.append(STREAM, block).await.map_err(store_err)?;
        Ok(())
    }

    async fn import_legacy(&self, dir: &Path) -> Result<(), CryptoError> {
        let path = dir.join("keyring.json");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(CryptoError::Keys(format!("reading {}: {e}", path.display()))),
        };
        let file: LegacyFile = serde_json::from_slice(&bytes)
            .map_err(|e| CryptoError::Keys(format!("keyring {}: {e}", path.display())))?;
        let mut n = 0;
        for k in file.keys {
            let id = u64::from(k.id);
            let known = self
                .entries
                .lock()
                .get(&id)
                .is_some_and(|e| k.wrapped.keys().all(|m| e.wrapped.contains_key(m)));
            if known {
                continue;
            }
            let e = Entry {
                id,
                stream: k.stream,
                created_ms: k.created_ms,
                wrapped: k.wrapped,
            };
            self.append(&e).await?;
            let mut entries = self.entries.lock();
            match entries.get_mut(&id) {
                Some(known) => known.wrapped.extend(e.wrapped),
                None => {
                    entries.insert(id, e);
                }
            }
            n += 1;
        }
        let done = path.with_extension("json.imported");
        std::fs::rename(&path, &done)
            .map_err(|e| CryptoError::Keys(format!("renaming {}: {e}", path.display())))?;
        tracing::info!(keys = n, file = %done.display(), "imported data keys of the older keyring file into the store");
        Ok(())
    }

    /// The master keys, re-read if their file changed. True if they did.
    async fn masters(&self) -> Result<(Arc<Masters>, bool), CryptoError> {
        let (current, stamp) = {
            let m = self.masters.lock();
            (m.0.clone(), m.1)
        };
        let now = {
            let source = self.source.clone();
            tokio::task::spawn_blocking(move || master::stamp(&source))
                .await
                .map_err(|e| CryptoError::Keys(format!("key task failed: {e}")))?
        };
        if now.is_none() || now == stamp {
            return Ok((current, false));
        }
        let (masters, stamp) = load_masters(&self.source).await?;
        let masters = Arc::new(masters);
        *self.masters.lock() = (masters.clone(), stamp);
        Ok((masters, true))
    }

    /// Wraps every data key that lacks a wrapping under the newest master
    /// key. Returns how many it wrapped.
    async fn rewrap(&self) -> Result<usize, CryptoError> {
        let masters = self.masters.lock().0.clone();
        let Some((mid, mk)) = masters.last() else {
            return Err(CryptoError::Keys("no master key".into()));
        };
        let todo: Vec<Entry> = self
            .entries
            .lock()
            .values()
            .filter(|e| !e.wrapped.contains_key(mid))
            .cloned()
            .collect();
        for mut e in todo.iter().cloned() {
            let key = unwrap_any(&e, &masters)?;
            e.wrapped.insert(mid.clone(), wrap(mk, e.id, &e.stream, &key));
            self.append(&e).await?;
            if let Some(known) = self.entries.lock().get_mut(&e.id) {
                known.wrapped.extend(e.wrapped);
            }
        }
        if !todo.is_empty() {
            tracing::info!(keys = todo.len(), master = %mid, "every data key is wrapped under the newest master key");
        }
        Ok(todo.len())
    }

    /// Picks up a changed master key file: wraps every data key under its
    /// newest key.
    pub async fn maintain(&self) -> Result<(), CryptoError> {
        if self.masters().await?.1 {
            self.rewrap().await?;
        }
        Ok(())
    }

    /// A new data key for `stream`: random key, random 64-bit id, stored
    /// wrapped before it is used.
    pub async fn create(&self, stream: &str) -> Result<(u64, Key32), CryptoError> {
        let (masters, _) = self.masters().await?;
        let (mid, mk) = masters
            .last()
            .ok_or_else(|| CryptoError::Keys("no master key".into()))?;
        let id = loop {
            // above 2^32, so never one of the older 32-bit ids
            let id = rand::rngs::OsRng.next_u64() | (1 << 63);
            if !self.entries.lock().contains_key(&id) {
                break id;
            }
        };
        let key = Zeroizing::new(rand::random::<[u8; 32]>());
        let mut wrapped = BTreeMap::new();
        wrapped.insert(mid.clone(), wrap(mk, id, stream, &key));
        let e = Entry {
            id,
            stream: stream.to_string(),
            created_ms: switchboard_proto::time::now_ms(),
            wrapped,
        };
        self.append(&e).await?;
        self.entries.lock().insert(id, e);
        Ok((id, key))
    }

    /// The data key `id`, unwrapped.
    pub async fn unwrap(&self, id: u64) -> Result<Key32, CryptoError> {
        if !self.entries.lock().contains_key(&id) {
            // another node may have made it since the last look
            self.refresh().await?;
        }
        let e = self
            .entries
            .lock()
            .get(&id)
            .cloned()
            .ok_or_else(|| CryptoError::DataKey {
                id,
                reason: "not in the keyring".into(),
            })?;
        let (masters, _) = self.masters().await?;
        unwrap_any(&e, &masters)
    }
}
