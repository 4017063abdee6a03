//! Encryption at rest: every event's key, headers and value are sealed
//! with AES-256-GCM before they reach the store.
//!
//! **Envelope keys.** Each stream gets data keys (random, 256 bits). A data
//! key is stored only wrapped (AES-256-GCM) by a master key (the KEK), in
//! the keyring file `<keys-dir>/keyring.json`; master keys come from a file
//! of `<id> <hex>` lines (default `<keys-dir>/master.keys`, mode 0600), from
//! `SWITCHBOARD_MASTER_KEY`, or from a command (a KMS hook). Rotating the
//! master key adds a new one and wraps every data key under it too: no
//! data is rewritten and old data stays readable.
//!
//! **Nonces.** A data key is created by one process for one stream and
//! used only by that process: each start creates fresh data keys, and a
//! key is replaced after `rotate_ms` or `rotate_records`. Its nonces are a
//! 96-bit big-endian counter starting at 0, so no nonce repeats under a key
//! (and the record limit keeps well inside GCM's bounds).
//!
//! **Records.** A sealed record's value is the sealed plaintext (u32 key
//! length or `u32::MAX`, key, u32 headers length, headers, value) and the
//! 16-byte tag. Its record headers are `sb.f` (the value's form),
//! `sb.k` (the data key id, u64 LE) and `sb.n` (12 bytes). Its record
//! key is empty, unless the stream was created with `encrypt_keys: false`:
//! then the key stays in the clear (for compaction and tooling) and is
//! bound into the additional data instead. The additional data binds the
//! stream name, the partition, the key id, the form and any clear key, so
//! a record copied elsewhere or altered fails authentication. A missing or
//! wrong key is an error naming the key id, never garbage bytes. Records
//! of the previous format (value `0xE5`, u32 key id, nonce, sealed
//! plaintext with a tag byte before the value) are still opened. Key bytes held here are zeroized when dropped
//! (`Zeroizing`); records are sealed with ring's AES-256-GCM, whose
//! expanded key schedule ring does not wipe.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use base64::Engine;
use bytes::Bytes;
use parking_lot::Mutex;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use switchboard_store::{Headers, Record, Records};
use zeroize::Zeroizing;

use crate::codec::{plain_form, Form, FORM_HEADER};

use switchboard_rpc::keys::write_secret_file;

/// Header carrying a sealed record's data key id (u64 LE).
pub const KEY_ID_HEADER: &[u8] = b"sb.k";
/// Header carrying a sealed record's nonce.
pub const NONCE_HEADER: &[u8] = b"sb.n";
/// First byte of a sealed record's value in the previous format.
pub const LEGACY_SEALED: u8 = 0xE5;
const LEGACY_HEAD_LEN: usize = 1 + 4 + 12;
const TAG_LEN: usize = 16;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

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

/// Where master keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterSource {
    /// A file of `<id> <64 hex digits>` lines; the last is the newest.
    /// Created with one key if missing.
    File(PathBuf),
    /// One key, `<id>:<hex>` or `<hex>` (id `env`).
    Env(String),
    /// A command whose standard output has the file's format.
    Command(String),
}

/// Allowed data key lifetimes, ms: a minute to a year.
pub const ROTATE_MS_RANGE: std::ops::RangeInclusive<u64> = 60_000..=365 * 24 * 3_600_000;

/// Encryption settings.
#[derive(Debug, Clone)]
pub struct CryptoConfig {
    /// Directory of the keyring (and of the default master key file).
    pub keys_dir: PathBuf,
    /// Master keys.
    pub master: MasterSource,
    /// Replace a stream's data key after this long.
    pub rotate_ms: u64,
    /// Replace a stream's data key after this many records.
    pub rotate_records: u64,
}

type Key32 = Zeroizing<[u8; 32]>;

/// Parses master keys in the file format; newest last.
pub fn parse_master_keys(text: &str) -> Result<Vec<(String, Key32)>, CryptoError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (id, hex_key) = line.split_once(char::is_whitespace).ok_or_else(|| {
            CryptoError::Keys(format!("master keys line {}: expected `<id> <hex key>`", i + 1))
        })?;
        out.push((
            id.to_string(),
            decode_key(hex_key.trim(), &format!("master key {id:?}"))?,
        ));
    }
    if out.is_empty() {
        return Err(CryptoError::Keys("no master key configured".into()));
    }
    Ok(out)
}

fn decode_key(hex_key: &str, what: &str) -> Result<Key32, CryptoError> {
    let mut k = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(hex_key, &mut *k)
        .map_err(|_| CryptoError::Keys(format!("{what}: expected 64 hex digits")))?;
    Ok(k)
}

fn load_masters(src: &MasterSource) -> Result<Vec<(String, Key32)>, CryptoError> {
    match src {
        MasterSource::File(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| CryptoError::Keys(format!("reading master keys {}: {e}", p.display())))?;
            parse_master_keys(&text)
        }
        MasterSource::Env(v) => {
            let (id, k) = v.split_once(':').unwrap_or(("env", v.as_str()));
            Ok(vec![(
                id.to_string(),
                decode_key(k.trim(), "SWITCHBOARD_MASTER_KEY")?,
            )])
        }
        MasterSource::Command(c) => {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(c)
                .output()
                .map_err(|e| CryptoError::Keys(format!("running master key command: {e}")))?;
            if !out.status.success() {
                return Err(CryptoError::Keys(format!(
                    "master key command failed with {}",
                    out.status
                )));
            }
            parse_master_keys(&String::from_utf8_lossy(&out.stdout))
        }
    }
}

/// Creates the master key file with one random key if it does not exist.
pub fn ensure_master_file(path: &Path) -> Result<bool, CryptoError> {
    if path.exists() {
        return Ok(false);
    }
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)
            .map_err(|e| CryptoError::Keys(format!("creating {}: {e}", d.display())))?;
    }
    let key = Zeroizing::new(rand::random::<[u8; 32]>());
    let text = Zeroizing::new(format!(
        "# switchboard master keys: <id> <hex>; newest last; keep a backup\nm1 {}\n",
        hex::encode(*key)
    ));
    write_secret_file(path, text.as_bytes())
        .map_err(|e| CryptoError::Keys(format!("writing {}: {e}", path.display())))?;
    Ok(true)
}

/// Adds a new master key to a master key file and wraps every data key of
/// the keyring under it. Works while a server runs (the keyring is locked
/// while it is rewritten; servers reload both on change). Returns the new
/// master key id.
pub fn rotate_master(master_file: &Path, keys_dir: &Path) -> Result<String, CryptoError> {
    let mut masters = load_masters(&MasterSource::File(master_file.to_path_buf()))?;
    let next = (1..)
        .map(|n| format!("m{n}"))
        .find(|id| masters.iter().all(|(m, _)| m != id))
        .unwrap_or_else(|| "m0".into());
    let key = Zeroizing::new(rand::random::<[u8; 32]>());
    let old = Zeroizing::new(
        std::fs::read_to_string(master_file)
            .map_err(|e| CryptoError::Keys(format!("reading {}: {e}", master_file.display())))?,
    );
    let text = Zeroizing::new(format!(
        "{}{}{next} {}\n",
        *old,
        if old.ends_with('\n') { "" } else { "\n" },
        hex::encode(*key)
    ));
    masters.push((next.clone(), key));
    let _lock = KeyringLock::take(keys_dir)?;
    let mut ring = read_keyring(keys_dir)?;
    for dk in &mut ring.keys {
        let plain = unwrap_any(dk, &masters)?;
        let (mid, mk) = masters
            .last()
            .map(|(i, k)| (i.clone(), k.clone()))
            .ok_or_else(|| CryptoError::Keys("no master key".into()))?;
        dk.wrapped.insert(mid, wrap(&mk, dk.id, &dk.stream, &plain));
    }
    // the new master key reaches the disk before anything wrapped under it
    write_secret_file(master_file, text.as_bytes())
        .map_err(|e| CryptoError::Keys(format!("writing {}: {e}", master_file.display())))?;
    write_keyring(keys_dir, &ring)?;
    Ok(next)
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct KeyringFile {
    version: u32,
    keys: Vec<DataKeyEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct DataKeyEntry {
    id: u32,
    stream: String,
    created_ms: i64,
    /// master key id -> base64(nonce || sealed key || tag)
    wrapped: std::collections::BTreeMap<String, String>,
}

fn keyring_path(dir: &Path) -> PathBuf {
    dir.join("keyring.json")
}

fn read_keyring(dir: &Path) -> Result<KeyringFile, CryptoError> {
    match std::fs::read(keyring_path(dir)) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| CryptoError::Keys(format!("keyring {}: {e}", keyring_path(dir).display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KeyringFile {
            version: 1,
            keys: Vec::new(),
        }),
        Err(e) => Err(CryptoError::Keys(format!(
            "reading {}: {e}",
            keyring_path(dir).display()
        ))),
    }
}

fn write_keyring(dir: &Path, ring: &KeyringFile) -> Result<(), CryptoError> {
    let bytes = serde_json::to_vec_pretty(ring).map_err(|e| CryptoError::Keys(e.to_string()))?;
    write_secret_file(&keyring_path(dir), &bytes)
        .map_err(|e| CryptoError::Keys(format!("writing keyring: {e}")))
}

/// An exclusive lock on the keyring while it is read and rewritten.
struct KeyringLock {
    _file: std::fs::File,
}

impl KeyringLock {
    fn take(dir: &Path) -> Result<KeyringLock, CryptoError> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::create_dir_all(dir)
            .map_err(|e| CryptoError::Keys(format!("creating {}: {e}", dir.display())))?;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(dir.join("keyring.lock"))
            .map_err(|e| CryptoError::Keys(format!("opening keyring lock: {e}")))?;
        // an exclusive advisory lock (flock), released when the file closes
        f.lock()
            .map_err(|e| CryptoError::Keys(format!("locking keyring: {e}")))?;
        Ok(KeyringLock { _file: f })
    }
}

fn wrap_aad(id: u32, stream: &str) -> Vec<u8> {
    let mut aad = b"switchboard data key v1\0".to_vec();
    aad.extend_from_slice(&id.to_le_bytes());
    aad.extend_from_slice(stream.as_bytes());
    aad
}

fn wrap(master: &Key32, id: u32, stream: &str, key: &Key32) -> String {
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

fn unwrap_any(dk: &DataKeyEntry, masters: &[(String, Key32)]) -> Result<Key32, CryptoError> {
    let mut tried = Vec::new();
    for (mid, wrapped) in &dk.wrapped {
        tried.push(mid.clone());
        let Some((_, mk)) = masters.iter().find(|(m, _)| m == mid) else {
            continue;
        };
        let raw = B64.decode(wrapped).map_err(|_| CryptoError::DataKey {
            id: u64::from(dk.id),
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
            id: u64::from(dk.id),
            reason: format!("master key {mid} does not unwrap it (wrong master key?)"),
        });
    }
    Err(CryptoError::DataKey {
        id: u64::from(dk.id),
        reason: format!("wrapped only under master keys {tried:?}, none of which is configured"),
    })
}

/// A data key ready for sealing and opening records (ring's AES-256-GCM,
/// several times faster than the portable implementation on this path).
type RecordKey = ring::aead::LessSafeKey;

fn record_key(key: &Key32) -> RecordKey {
    // a 32-byte key always fits AES-256
    let unbound =
        ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &key[..]).unwrap_or_else(|_| unreachable!());
    ring::aead::LessSafeKey::new(unbound)
}

/// The current data key of one stream, as this process uses it.
pub struct Sealer {
    id: u32,
    cipher: Arc<RecordKey>,
    counter: AtomicU64,
    created: Instant,
}

impl Sealer {
    /// Data key id.
    pub fn key_id(&self) -> u32 {
        self.id
    }

    /// Seals one event into `records`, built and encrypted in place in
    /// their buffer. `aad` is scratch space reused between calls; `headers`
    /// are the event's headers, encoded.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &self,
        records: &mut Records,
        aad: &mut Vec<u8>,
        stream: &str,
        partition: u32,
        ts: i64,
        key: Option<&[u8]>,
        encrypt_keys: bool,
        headers: &[u8],
        form: Form,
        value: &[u8],
    ) {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&n.to_be_bytes());
        let clear_key = if encrypt_keys { None } else { key };
        let kid = u64::from(self.id).to_le_bytes();
        record_aad(aad, stream, partition, u64::from(self.id), form, clear_key);
        let record_headers = [
            (FORM_HEADER, form.tag()),
            (KEY_ID_HEADER, &kid[..]),
            (NONCE_HEADER, &nonce[..]),
        ];
        records.push_with(ts, clear_key, record_headers, |buf| {
            let plain_at = buf.len();
            match key.filter(|_| encrypt_keys) {
                Some(k) => {
                    buf.extend_from_slice(&(k.len() as u32).to_le_bytes());
                    buf.extend_from_slice(k);
                }
                None => buf.extend_from_slice(&u32::MAX.to_le_bytes()),
            }
            buf.extend_from_slice(&(headers.len() as u32).to_le_bytes());
            buf.extend_from_slice(headers);
            buf.extend_from_slice(value);
            // sealing in memory cannot fail below GCM's size limit (64 GiB)
            let tag = self.cipher.seal_in_place_separate_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(&aad[..]),
                &mut buf[plain_at..],
            );
            match tag {
                Ok(t) => buf.extend_from_slice(t.as_ref()),
                Err(_) => buf.extend_from_slice(&[0u8; TAG_LEN]),
            }
        });
    }
}

fn record_aad(
    aad: &mut Vec<u8>,
    stream: &str,
    partition: u32,
    id: u64,
    form: Form,
    clear_key: Option<&[u8]>,
) {
    aad.clear();
    aad.extend_from_slice(b"sb record v2\0");
    aad.extend_from_slice(stream.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&partition.to_le_bytes());
    aad.extend_from_slice(&id.to_le_bytes());
    aad.extend_from_slice(form.tag());
    if let Some(k) = clear_key {
        aad.extend_from_slice(&(k.len() as u32).to_le_bytes());
        aad.extend_from_slice(k);
    }
}

fn legacy_record_aad(aad: &mut Vec<u8>, stream: &str, partition: u32, id: u32) {
    aad.clear();
    aad.extend_from_slice(stream.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&partition.to_le_bytes());
    aad.extend_from_slice(&id.to_le_bytes());
}

/// The data key id a sealed record names, if it is sealed (either format).
fn sealed_key_id(r: &Record, legacy: bool) -> Option<u64> {
    if let Some(id) = r.headers.get(KEY_ID_HEADER) {
        return Some(id.try_into().map(u64::from_le_bytes).unwrap_or(u64::MAX));
    }
    if legacy && r.value.first() == Some(&LEGACY_SEALED) && r.value.len() >= 5 {
        return Some(u64::from(u32::from_le_bytes([
            r.value[1], r.value[2], r.value[3], r.value[4],
        ])));
    }
    None
}

/// Turns records as stored into events as written: opens sealed ones
/// (with `crypto`; without it a sealed record is an error) and tells each
/// one's value form. `legacy`: the store may hold the previous format.
pub fn open_records(
    crypto: Option<&Crypto>,
    stream: &str,
    partition: u32,
    records: Vec<Record>,
    legacy: bool,
) -> Result<Vec<(Form, Record)>, CryptoError> {
    match crypto {
        Some(c) => c.open_records(stream, partition, records, legacy),
        None => records
            .into_iter()
            .map(|mut r| match sealed_key_id(&r, legacy) {
                Some(id) => Err(CryptoError::DataKey {
                    id,
                    reason: "the record is encrypted and this server runs without encryption".into(),
                }),
                None => Ok((plain_form(&mut r, legacy), r)),
            })
            .collect(),
    }
}

struct State {
    masters: Vec<(String, Key32)>,
    master_stamp: Option<std::time::SystemTime>,
    sealers: HashMap<String, Arc<Sealer>>,
    openers: HashMap<u32, Arc<RecordKey>>,
}

/// Keys of one node: the keyring, master keys, and ciphers in use.
pub struct Crypto {
    cfg: CryptoConfig,
    state: Mutex<State>,
}

impl Crypto {
    /// Loads the master keys (creating the default file if the source is
    /// a missing file) and checks that they unwrap the keyring.
    pub fn open(cfg: CryptoConfig) -> Result<Crypto, CryptoError> {
        if let MasterSource::File(p) = &cfg.master {
            ensure_master_file(p)?;
        }
        let masters = load_masters(&cfg.master)?;
        let stamp = master_stamp(&cfg.master);
        let crypto = Crypto {
            cfg,
            state: Mutex::new(State {
                masters,
                master_stamp: stamp,
                sealers: HashMap::new(),
                openers: HashMap::new(),
            }),
        };
        // a wrong master key shows now, not at the first read
        let ring = read_keyring(&crypto.cfg.keys_dir)?;
        let st = crypto.state.lock();
        for dk in ring.keys.iter().rev().take(1) {
            unwrap_any(dk, &st.masters)?;
        }
        drop(st);
        Ok(crypto)
    }

    fn reload_masters_if_changed(&self, st: &mut State) -> Result<(), CryptoError> {
        let stamp = master_stamp(&self.cfg.master);
        if stamp.is_some() && stamp != st.master_stamp {
            st.masters = load_masters(&self.cfg.master)?;
            st.master_stamp = stamp;
        }
        Ok(())
    }

    /// The data key to seal new records of `stream` with, creating (and
    /// storing, wrapped) a new one on first use and when it is due for
    /// rotation. Blocking file I/O when it creates one.
    pub fn sealer_blocking(&self, stream: &str) -> Result<Arc<Sealer>, CryptoError> {
        if let Some(s) = self.current(stream) {
            return Ok(s);
        }
        let _lock = KeyringLock::take(&self.cfg.keys_dir)?;
        let mut st = self.state.lock();
        self.reload_masters_if_changed(&mut st)?;
        let mut ring = read_keyring(&self.cfg.keys_dir)?;
        let id = ring.keys.iter().map(|k| k.id).max().unwrap_or(0) + 1;
        let key = Zeroizing::new(rand::random::<[u8; 32]>());
        let (mid, mk) = st
            .masters
            .last()
            .map(|(i, k)| (i.clone(), k.clone()))
            .ok_or_else(|| CryptoError::Keys("no master key".into()))?;
        let mut wrapped = std::collections::BTreeMap::new();
        wrapped.insert(mid, wrap(&mk, id, stream, &key));
        ring.version = 1;
        ring.keys.push(DataKeyEntry {
            id,
            stream: stream.to_string(),
            created_ms: switchboard_proto::time::now_ms(),
            wrapped,
        });
        write_keyring(&self.cfg.keys_dir, &ring)?;
        let cipher = Arc::new(record_key(&key));
        let sealer = Arc::new(Sealer {
            id,
            cipher: cipher.clone(),
            counter: AtomicU64::new(0),
            created: Instant::now(),
        });
        st.openers.insert(id, cipher);
        st.sealers.insert(stream.to_string(), sealer.clone());
        tracing::info!(%stream, key_id = id, "new data key");
        Ok(sealer)
    }

    /// The stream's data key if it is fresh enough to use.
    pub fn current(&self, stream: &str) -> Option<Arc<Sealer>> {
        let st = self.state.lock();
        st.sealers
            .get(stream)
            .filter(|s| {
                s.counter.load(Ordering::Relaxed) < self.cfg.rotate_records
                    && (s.created.elapsed().as_millis() as u64) < self.cfg.rotate_ms
            })
            .cloned()
    }

    /// Like [`Crypto::sealer_blocking`], off the async runtime when it
    /// must touch files.
    pub async fn sealer(self: &Arc<Self>, stream: &str) -> Result<Arc<Sealer>, CryptoError> {
        if let Some(s) = self.current(stream) {
            return Ok(s);
        }
        let (me, stream) = (self.clone(), stream.to_string());
        tokio::task::spawn_blocking(move || me.sealer_blocking(&stream))
            .await
            .map_err(|e| CryptoError::Keys(format!("key task failed: {e}")))?
    }

    fn opener(&self, id: u32) -> Result<Arc<RecordKey>, CryptoError> {
        if let Some(c) = self.state.lock().openers.get(&id) {
            return Ok(c.clone());
        }
        let ring = read_keyring(&self.cfg.keys_dir)?;
        let dk = ring
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| CryptoError::DataKey {
                id: u64::from(id),
                reason: "not in the keyring".into(),
            })?;
        let mut st = self.state.lock();
        self.reload_masters_if_changed(&mut st)?;
        let key = unwrap_any(dk, &st.masters)?;
        let c = Arc::new(record_key(&key));
        st.openers.insert(id, c.clone());
        Ok(c)
    }

    /// Whether opening `records` needs a data key not yet unwrapped (which
    /// reads the keyring: call [`Crypto::open_records`] off the runtime).
    pub fn needs_keys(&self, records: &[Record], legacy: bool) -> bool {
        let st = self.state.lock();
        records.iter().any(|r| {
            sealed_key_id(r, legacy)
                .is_some_and(|id| !u32::try_from(id).is_ok_and(|id| st.openers.contains_key(&id)))
        })
    }

    fn opener_u64(&self, id: u64) -> Result<Arc<RecordKey>, CryptoError> {
        let small = u32::try_from(id).map_err(|_| CryptoError::DataKey {
            id,
            reason: "not in the keyring".into(),
        })?;
        self.opener(small)
    }

    /// Opens sealed records read from `stream`/`partition`; records that
    /// are not sealed pass through. Decrypts into one buffer; the records
    /// returned are slices of it.
    pub fn open_records(
        &self,
        stream: &str,
        partition: u32,
        records: Vec<Record>,
        legacy: bool,
    ) -> Result<Vec<(Form, Record)>, CryptoError> {
        let total: usize = records.iter().map(|r| r.value.len()).sum();
        let mut buf = Vec::with_capacity(total);
        // per record: (key id, plaintext span, form, legacy) when sealed
        let mut spans = Vec::with_capacity(records.len());
        let mut aad = Vec::with_capacity(stream.len() + 40);
        for r in &records {
            let Some(id) = sealed_key_id(r, legacy) else {
                spans.push(None);
                continue;
            };
            let bad = || CryptoError::Corrupt { id, offset: r.offset };
            let cipher = self.opener_u64(id)?;
            let start = buf.len();
            let (nonce, form, is_legacy): ([u8; 12], Form, bool) = match r.headers.get(KEY_ID_HEADER) {
                Some(_) => {
                    let nonce = r
                        .headers
                        .get(NONCE_HEADER)
                        .and_then(|n| <[u8; 12]>::try_from(n).ok())
                        .ok_or_else(bad)?;
                    let form = r
                        .headers
                        .get(FORM_HEADER)
                        .and_then(Form::of_tag)
                        .ok_or_else(bad)?;
                    record_aad(&mut aad, stream, partition, id, form, r.key.as_deref());
                    buf.extend_from_slice(&r.value);
                    (nonce, form, false)
                }
                None => {
                    if r.value.len() < LEGACY_HEAD_LEN + TAG_LEN {
                        return Err(bad());
                    }
                    let mut nonce = [0u8; 12];
                    nonce.copy_from_slice(&r.value[5..LEGACY_HEAD_LEN]);
                    legacy_record_aad(&mut aad, stream, partition, id as u32);
                    buf.extend_from_slice(&r.value[LEGACY_HEAD_LEN..]);
                    // the form is the tag byte before the value, read below
                    (nonce, Form::Bytes, true)
                }
            };
            // ciphertext and tag, opened in place; the tag is cut off after
            let plain_len = cipher
                .open_in_place(
                    ring::aead::Nonce::assume_unique_for_key(nonce),
                    ring::aead::Aad::from(&aad[..]),
                    &mut buf[start..],
                )
                .map_err(|_| bad())?
                .len();
            buf.truncate(start + plain_len);
            spans.push(Some((id, start, buf.len(), form, is_legacy)));
        }
        let buf = Bytes::from(buf);
        let mut out = Vec::with_capacity(records.len());
        for (mut r, span) in records.into_iter().zip(spans) {
            let Some((id, start, end, form, is_legacy)) = span else {
                let form = plain_form(&mut r, legacy);
                out.push((form, r));
                continue;
            };
            let bad = || CryptoError::Corrupt { id, offset: r.offset };
            let p = buf.slice(start..end);
            let klen = u32::from_le_bytes(p.get(0..4).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
            let mut at = 4;
            let key = if klen == u32::MAX {
                r.key.take()
            } else {
                let k = p.get(at..at + klen as usize).ok_or_else(bad)?;
                at += k.len();
                Some(p.slice(at - k.len()..at))
            };
            let hlen = u32::from_le_bytes(p.get(at..at + 4).ok_or_else(bad)?.try_into().map_err(|_| bad())?)
                as usize;
            at += 4;
            let headers = Headers::from_encoded(p.slice(at..(at + hlen).min(p.len()))).ok_or_else(bad)?;
            at += hlen;
            if at > p.len() {
                return Err(bad());
            }
            let mut rec = Record {
                offset: r.offset,
                timestamp_ms: r.timestamp_ms,
                key,
                value: p.slice(at..),
                headers,
            };
            let form = if is_legacy {
                plain_form(&mut rec, true)
            } else {
                form
            };
            out.push((form, rec));
        }
        Ok(out)
    }
}

fn master_stamp(src: &MasterSource) -> Option<std::time::SystemTime> {
    match src {
        MasterSource::File(p) => std::fs::metadata(p).and_then(|m| m.modified()).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_store::{Block, Store};

    async fn sealed(encrypt_keys: bool) -> (Crypto, Vec<Record>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let crypto = Crypto::open(CryptoConfig {
            keys_dir: dir.path().to_path_buf(),
            master: MasterSource::Env(format!("m1:{}", "cd".repeat(32))),
            rotate_ms: 3_600_000,
            rotate_records: 1 << 32,
        })
        .unwrap();
        let sealer = crypto.sealer_blocking("s").unwrap();
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
        let store = switchboard_store::memory::MemoryStore::new();
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
