//! Encryption at rest: every event's value and headers (and its key,
//! unless the stream keeps keys in the clear) are sealed with AES-256-GCM
//! before they reach the store.
//!
//! - [`master`]: master keys (key-encryption keys) from a file of
//!   `<id> <hex>` lines (default `<keys-dir>/master.keys`, mode 0600), from
//!   `SWITCHBOARD_MASTER_KEY`, or from a command (a KMS hook).
//! - `keyring`: data keys, random 256-bit keys with random 64-bit ids,
//!   stored wrapped by the master keys in the store's internal stream
//!   `__keys`, so any node holding a master key opens any event. Adding a
//!   master key wraps every data key under it too (running nodes notice
//!   the file change within seconds): no data is rewritten.
//! - `sealing`: sealing and opening records.
//!
//! **Nonces.** A data key is created by one process for one stream and
//! used for sealing only by that process, for its lifetime: each start
//! makes new data keys (a random id no other process picks), and a key is
//! replaced after `rotate_ms` or `rotate_records`. Its nonces are a 96-bit
//! big-endian counter starting at 0, so no nonce repeats under a key (and
//! the record limit keeps well inside GCM's bounds). Other processes only
//! open with it.
//!
//! A missing or wrong key is an error naming the key id, never garbage
//! bytes. Key bytes held here are zeroized when dropped (`Zeroizing`);
//! records are sealed with ring's AES-256-GCM, whose expanded key schedule
//! ring does not wipe.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use switchboard_store::{Record, Store};
use zeroize::Zeroizing;

use crate::record::{plain_form, sealed_key_id, Form};

mod keyring;
pub mod master;
mod sealing;

pub use keyring::STREAM as KEYS_STREAM;
pub use master::{add_master, ensure_master_file, parse_master_keys, MasterSource};
pub use sealing::Sealer;

use sealing::RecordKey;

const TAG_LEN: usize = 16;
type Key32 = Zeroizing<[u8; 32]>;

/// Errors of key handling and sealing. Messages name the key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// A data key is not in the keyring, or no configured master key
    /// unwraps it.
    #[error("data key {id}: {reason}")]
    DataKey {
        /// Key id.
        id: u64,
        /// Why it is unavailable.
        reason: String,
    },
    /// A record failed authentication under its key.
    #[error(
        "record at offset {offset} does not authenticate under data key {id} (wrong key or altered data)"
    )]
    Corrupt {
        /// Key id.
        id: u64,
        /// Record offset.
        offset: u64,
    },
    /// Master keys or the keyring could not be read or written.
    #[error("{0}")]
    Keys(String),
}

/// Allowed data key lifetimes, ms: a minute to a year.
pub const ROTATE_MS_RANGE: std::ops::RangeInclusive<u64> = 60_000..=365 * 24 * 3_600_000;

/// Encryption settings.
#[derive(Debug, Clone)]
pub struct CryptoConfig {
    /// Directory of the default master key file, and of the keyring file
    /// of older versions (imported into the store at start).
    pub keys_dir: PathBuf,
    /// Master keys.
    pub master: MasterSource,
    /// Replace a stream's data key after this long.
    pub rotate_ms: u64,
    /// Replace a stream's data key after this many records.
    pub rotate_records: u64,
}

#[derive(Default)]
struct State {
    sealers: HashMap<String, Arc<Sealer>>,
    openers: HashMap<u64, Arc<RecordKey>>,
}

/// Keys of one node: master keys, the keyring in the store, and the
/// ciphers in use.
pub struct Crypto {
    cfg: CryptoConfig,
    keyring: keyring::Keyring,
    state: Mutex<State>,
    /// New data keys are made one at a time.
    creating: tokio::sync::Mutex<()>,
}

impl Crypto {
    /// Loads the master keys (creating the default file if the source is
    /// a missing file), opens the keyring in `store`, and starts watching
    /// the master key file.
    pub async fn open(cfg: CryptoConfig, store: Arc<dyn Store>) -> Result<Arc<Crypto>, CryptoError> {
        if let MasterSource::File(p) = &cfg.master {
            let p = p.clone();
            tokio::task::spawn_blocking(move || ensure_master_file(&p))
                .await
                .map_err(|e| CryptoError::Keys(format!("key task failed: {e}")))??;
        }
        let keyring = keyring::Keyring::open(store, cfg.master.clone(), Some(&cfg.keys_dir)).await?;
        let crypto = Arc::new(Crypto {
            cfg,
            keyring,
            state: Mutex::new(State::default()),
            creating: tokio::sync::Mutex::new(()),
        });
        let weak = Arc::downgrade(&crypto);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tick.tick().await;
                let Some(c) = weak.upgrade() else { return };
                if let Err(e) = c.keyring.maintain().await {
                    tracing::error!(error = %e, "wrapping data keys under a new master key failed; retrying");
                }
            }
        });
        Ok(crypto)
    }

    /// The stream's data key if it is fresh enough to use.
    pub fn current(&self, stream: &str) -> Option<Arc<Sealer>> {
        let st = self.state.lock();
        st.sealers
            .get(stream)
            .filter(|s| {
                s.used() < self.cfg.rotate_records
                    && (s.created.elapsed().as_millis() as u64) < self.cfg.rotate_ms
            })
            .cloned()
    }

    /// The data key to seal new records of `stream` with: made (and stored,
    /// wrapped) on first use and when it is due for rotation.
    pub async fn sealer(&self, stream: &str) -> Result<Arc<Sealer>, CryptoError> {
        if let Some(s) = self.current(stream) {
            return Ok(s);
        }
        let _one = self.creating.lock().await;
        if let Some(s) = self.current(stream) {
            return Ok(s);
        }
        let (id, key) = self.keyring.create(stream).await?;
        let cipher = Arc::new(sealing::record_key(&key));
        let sealer = Arc::new(Sealer {
            id,
            cipher: cipher.clone(),
            counter: AtomicU64::new(0),
            created: Instant::now(),
        });
        let mut st = self.state.lock();
        st.openers.insert(id, cipher);
        st.sealers.insert(stream.to_string(), sealer.clone());
        tracing::info!(%stream, key_id = id, "new data key");
        Ok(sealer)
    }

    /// Whether opening `records` needs a data key not yet unwrapped (call
    /// [`Crypto::load_keys`] first).
    pub fn needs_keys(&self, records: &[Record], legacy: bool) -> bool {
        let st = self.state.lock();
        records
            .iter()
            .any(|r| sealed_key_id(r, legacy).is_some_and(|id| !st.openers.contains_key(&id)))
    }

    /// Unwraps the data keys `records` need (from the store's keyring).
    pub async fn load_keys(&self, records: &[Record], legacy: bool) -> Result<(), CryptoError> {
        let mut ids: Vec<u64> = {
            let st = self.state.lock();
            records
                .iter()
                .filter_map(|r| sealed_key_id(r, legacy))
                .filter(|id| !st.openers.contains_key(id))
                .collect()
        };
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            let key = self.keyring.unwrap(id).await?;
            let cipher = Arc::new(sealing::record_key(&key));
            self.state.lock().openers.insert(id, cipher);
        }
        Ok(())
    }

    /// Opens sealed records read from `stream`/`partition` (records that
    /// are not sealed pass through) and tells each value's form. The keys
    /// must be loaded ([`Crypto::load_keys`]).
    pub fn open_records(
        &self,
        stream: &str,
        partition: u32,
        records: Vec<Record>,
        legacy: bool,
    ) -> Result<Vec<(Form, Record)>, CryptoError> {
        // the keys these records name, looked up once (a handful per call)
        let mut keys: Vec<(u64, Arc<RecordKey>)> = Vec::new();
        {
            let st = self.state.lock();
            for id in records.iter().filter_map(|r| sealed_key_id(r, legacy)) {
                if !keys.iter().any(|k| k.0 == id) {
                    if let Some(c) = st.openers.get(&id) {
                        keys.push((id, c.clone()));
                    }
                }
            }
        }
        let key_of = |id: u64| {
            keys.iter()
                .find(|k| k.0 == id)
                .map(|k| k.1.clone())
                .ok_or_else(|| CryptoError::DataKey {
                    id,
                    reason: "not loaded".into(),
                })
        };
        sealing::open(&key_of, stream, partition, records, legacy)
    }
}

/// Turns records as stored into events as written: opens sealed ones
/// (with `crypto`; without it a sealed record is an error) and tells each
/// one's value form. `legacy`: the store may hold the older format.
pub fn open_records(
    crypto: Option<&Crypto>,
    stream: &str,
    partition: u32,
    records: Vec<Record>,
    legacy: bool,
) -> Result<Vec<(Form, Record)>, CryptoError> {
    match crypto {
        Some(c) => c.open_records(stream, partition, records, legacy),
        None => records.into_iter().map(|r| open_plain(r, legacy)).collect(),
    }
}

/// A record as written, on a node without encryption: its value form, or
/// an error if it is sealed (never ciphertext handed out as the event).
pub fn open_plain(mut r: Record, legacy: bool) -> Result<(Form, Record), CryptoError> {
    match sealed_key_id(&r, legacy) {
        Some(id) => Err(CryptoError::DataKey {
            id,
            reason: "the record is encrypted and this server runs without encryption".into(),
        }),
        None => Ok((plain_form(&mut r, legacy), r)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::FORM_HEADER;
    use switchboard_store::{Block, Headers};

    async fn sealed(encrypt_keys: bool) -> (Arc<Crypto>, Vec<Record>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(switchboard_store::memory::MemoryStore::new());
        let crypto = Crypto::open(
            CryptoConfig {
                keys_dir: dir.path().to_path_buf(),
                master: MasterSource::Env(format!("m1:{}", "cd".repeat(32))),
                rotate_ms: 3_600_000,
                rotate_records: 1 << 32,
            },
            store.clone(),
        )
        .await
        .unwrap();
        let sealer = crypto.sealer("s").await.unwrap();
        let mut block = Block::new(None).unwrap();
        let headers = Headers::encode([(&b"h"[..], &b"v"[..])]);
        sealer.push(
            block.records(0),
            &mut Vec::new(),
            "s",
            0,
            5,
            Some(b"the-key"),
            encrypt_keys,
            headers.encoded(),
            Form::Json,
            b"{\"a\":1}",
        );
        store.create_stream("s", Default::default()).await.unwrap();
        store.append("s", block).await.unwrap();
        let mut r = store.open_reader("s", &[(0, 0)]).await.unwrap();
        let f = r.fetch(10, 1 << 20, std::time::Duration::ZERO).await.unwrap();
        (crypto, f.records.into_iter().map(|(_, r)| r).collect(), dir)
    }

    #[tokio::test]
    async fn sealed_records_open_and_altered_ones_do_not() {
        for encrypt_keys in [true, false] {
            let (crypto, records, _dir) = sealed(encrypt_keys).await;
            assert_eq!(
                records[0].key.is_some(),
                !encrypt_keys,
                "the key in the clear or not"
            );
            assert!(!records[0].value.windows(5).any(|w| w == b"\"a\":1"));
            let opened = crypto.open_records("s", 0, records.clone(), false).unwrap();
            let (form, r) = &opened[0];
            assert_eq!(*form, Form::Json);
            assert_eq!(r.key.as_deref(), Some(&b"the-key"[..]));
            assert_eq!(r.headers.get(b"h"), Some(&b"v"[..]));
            assert_eq!(&r.value[..], b"{\"a\":1}");
            // elsewhere: another stream or partition
            assert!(crypto.open_records("t", 0, records.clone(), false).is_err());
            assert!(crypto.open_records("s", 1, records.clone(), false).is_err());
            // a swapped form header or an altered clear key
            let mut bad = records[0].clone();
            bad.headers = Headers::encode(bad.headers.iter().map(|(n, v)| {
                if n == FORM_HEADER {
                    (n, &b"b"[..])
                } else {
                    (n, v)
                }
            }));
            assert!(crypto.open_records("s", 0, vec![bad], false).is_err());
            if !encrypt_keys {
                let mut bad = records[0].clone();
                bad.key = Some(bytes::Bytes::from_static(b"other-key"));
                assert!(matches!(
                    crypto.open_records("s", 0, vec![bad], false),
                    Err(CryptoError::Corrupt { .. })
                ));
            }
            // without encryption configured, a sealed record is an error,
            // never bytes handed out as they are
            assert!(open_records(None, "s", 0, records, false).is_err());
        }
    }
}
