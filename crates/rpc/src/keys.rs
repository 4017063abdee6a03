//! Server keys: what every node of a cluster shares so that a cursor
//! minted on one opens on any, and any API node checks the signature of a
//! call to a session held anywhere.
//!
//! The key file holds `<id> <64 hex digits>` lines, newest last (a file of
//! one bare hex line, as older versions wrote, is key `1`). From each key
//! come a cursor key and a session-secret key. New cursors and sessions use
//! the newest key and carry its id; older keys keep working until they are
//! retired (removed from the file). A running node notices a changed file:
//! it re-reads it at most once a second, and within a tenth of one when it meets a key id
//! it does not know.
//!
//! The API tier holds [`SessionSecrets`] only: it checks signatures and can
//! neither open cursors nor read data.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use hmac::{Hmac, Mac};
use parking_lot::{Mutex, RwLock};
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::id::SessionId;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
const RECHECK: Duration = Duration::from_secs(1);

type Key32 = Zeroizing<[u8; 32]>;

fn derive(master: &[u8], label: &str) -> Key32 {
    // HMAC takes keys of any length
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(master).unwrap_or_else(|_| unreachable!());
    mac.update(label.as_bytes());
    Zeroizing::new(mac.finalize().into_bytes().into())
}

struct ServerKey {
    id: u32,
    cursor: Key32,
    session: Key32,
}

impl ServerKey {
    fn new(id: u32, master: &[u8; 32]) -> ServerKey {
        ServerKey {
            id,
            cursor: derive(master, "switchboard cursor v1"),
            session: derive(master, "switchboard session secret v1"),
        }
    }
}

/// Parses a key file; the newest key is last.
pub fn parse_key_file(text: &str) -> Result<Vec<(u32, Key32)>, String> {
    let mut out: Vec<(u32, Key32)> = Vec::new();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    if let [only] = lines[..] {
        if !only.contains(char::is_whitespace) {
            return Ok(vec![(1, decode_hex(only, "key")?)]);
        }
    }
    for (i, line) in lines.iter().enumerate() {
        let (id, hex_key) = line
            .split_once(char::is_whitespace)
            .ok_or_else(|| format!("key line {}: expected `<id> <64 hex digits>`", i + 1))?;
        let id: u32 = id
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("key line {}: the id must be a whole number from 1", i + 1))?;
        if out.iter().any(|(k, _)| *k == id) {
            return Err(format!("key id {id} appears twice"));
        }
        out.push((id, decode_hex(hex_key.trim(), &format!("key {id}"))?));
    }
    if out.is_empty() {
        return Err("no key in the file".into());
    }
    Ok(out)
}

fn decode_hex(text: &str, what: &str) -> Result<Key32, String> {
    let mut k = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text, &mut *k).map_err(|_| format!("{what}: expected 64 hex digits"))?;
    Ok(k)
}

struct Inner {
    path: Option<PathBuf>,
    keys: RwLock<Arc<Vec<ServerKey>>>,
    /// When the file was last looked at, and its modification time then.
    checked: Mutex<(Instant, Option<Stamp>)>,
}

/// The server keys of a node. Cheap to clone.
#[derive(Clone)]
pub struct ServerKeys {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ServerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServerKeys(ids {:?})", self.ids())
    }
}

/// What tells a changed file: a rewrite renames a new file over the old
/// one (a new inode), and timestamps alone can be too coarse.
type Stamp = (SystemTime, u64, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.ino(), m.len()))
}

fn load(path: &Path) -> std::io::Result<Vec<ServerKey>> {
    let text = Zeroizing::new(std::fs::read_to_string(path)?);
    let keys = parse_key_file(&text).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })?;
    Ok(keys.iter().map(|(id, k)| ServerKey::new(*id, k)).collect())
}

impl ServerKeys {
    /// Keys from a file that must exist.
    pub fn from_file(path: &Path) -> std::io::Result<ServerKeys> {
        let keys = load(path)?;
        Ok(ServerKeys {
            inner: Arc::new(Inner {
                path: Some(path.to_path_buf()),
                keys: RwLock::new(Arc::new(keys)),
                checked: Mutex::new((Instant::now(), stamp(path))),
            }),
        })
    }

    /// Keys from `path`, created with one random key (mode 0600) if it is
    /// missing: the embedded default's `<data-dir>/server.key`.
    pub fn load_or_create(path: &Path) -> std::io::Result<ServerKeys> {
        if !path.exists() {
            let mut k = Zeroizing::new([0u8; 32]);
            rand::rngs::OsRng.fill_bytes(&mut *k);
            let text = Zeroizing::new(format!(
                "# switchboard server keys: <id> <hex>, newest last\n1 {}\n",
                hex::encode(*k)
            ));
            write_secret_file(path, text.as_bytes())?;
        }
        ServerKeys::from_file(path)
    }

    /// One key with id 1, held in memory (tests, tools).
    pub fn from_master(master: &[u8; 32]) -> ServerKeys {
        ServerKeys {
            inner: Arc::new(Inner {
                path: None,
                keys: RwLock::new(Arc::new(vec![ServerKey::new(1, master)])),
                checked: Mutex::new((Instant::now(), None)),
            }),
        }
    }

    /// Re-reads the file if it changed, looking at most once a second
    /// (`force`: ten times). A file that became unreadable keeps the keys
    /// in use.
    fn refresh(&self, force: bool) {
        let Some(path) = &self.inner.path else { return };
        // one caller looks at the file; the others go on with the keys in use
        let Some(mut checked) = self.inner.checked.try_lock() else {
            return;
        };
        // forced looks (an unknown key id) still come at most ten times a
        // second: ids sent at random must not turn into a stat per request
        let wait = if force { RECHECK / 10 } else { RECHECK };
        if checked.0.elapsed() < wait {
            return;
        }
        let now = stamp(path);
        checked.0 = Instant::now();
        if now == checked.1 {
            return;
        }
        checked.1 = now;
        match load(path) {
            Ok(keys) => {
                tracing::info!(ids = ?keys.iter().map(|k| k.id).collect::<Vec<_>>(), "server keys reloaded");
                *self.inner.keys.write() = Arc::new(keys);
            }
            Err(e) => {
                tracing::error!(error = %e, "server key file changed but cannot be read; keeping the keys in use")
            }
        }
    }

    fn keys(&self) -> Arc<Vec<ServerKey>> {
        self.inner.keys.read().clone()
    }

    fn find<T>(&self, id: u32, f: impl Fn(&ServerKey) -> T) -> Option<T> {
        // a retired key stops working within a second
        self.refresh(false);
        if let Some(t) = self.keys().iter().find(|k| k.id == id).map(&f) {
            return Some(t);
        }
        self.refresh(true);
        self.keys().iter().find(|k| k.id == id).map(f)
    }

    /// Ids of the keys in use, newest last.
    pub fn ids(&self) -> Vec<u32> {
        self.keys().iter().map(|k| k.id).collect()
    }

    /// The id new cursors and sessions use.
    pub fn current_id(&self) -> u32 {
        self.refresh(false);
        self.keys().last().map_or(0, |k| k.id)
    }

    /// Whether key `id` is in use (not retired).
    pub fn has(&self, id: u32) -> bool {
        self.find(id, |_| ()).is_some()
    }

    /// The cursor key with id `id`.
    pub fn cursor_key(&self, id: u32) -> Option<Key32> {
        self.find(id, |k| k.cursor.clone())
    }

    /// What the API tier needs: the session-secret keys only.
    pub fn session_secrets(&self) -> SessionSecrets {
        SessionSecrets { keys: self.clone() }
    }
}

/// Derives session signing secrets; holds no cursor key.
#[derive(Clone, Debug)]
pub struct SessionSecrets {
    keys: ServerKeys,
}

impl SessionSecrets {
    /// The signing secret of a session, from the key its id names. `None`
    /// if the id is not a session id or its key is unknown or retired.
    pub fn secret(&self, session_id: &str) -> Option<String> {
        let id = SessionId::parse(session_id)?;
        self.keys
            .find(id.key_id, |k| B64.encode(*derive(&*k.session, session_id)))
    }
}

fn write_key_file(path: &Path, keys: &[(u32, Key32)]) -> std::io::Result<()> {
    let mut text = Zeroizing::new(String::from(
        "# switchboard server keys: <id> <hex>, newest last\n",
    ));
    for (id, k) in keys {
        text.push_str(&format!("{id} {}\n", hex::encode(**k)));
    }
    write_secret_file(path, text.as_bytes())
}

fn read_key_file(path: &Path) -> std::io::Result<Vec<(u32, Key32)>> {
    let text = Zeroizing::new(std::fs::read_to_string(path)?);
    parse_key_file(&text).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

/// Adds a new random key to the file; new cursors and sessions use it.
/// Returns its id.
pub fn rotate(path: &Path) -> std::io::Result<u32> {
    let mut keys = read_key_file(path)?;
    let id = keys.iter().map(|k| k.0).max().unwrap_or(0) + 1;
    let mut k = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(&mut *k);
    keys.push((id, k));
    write_key_file(path, &keys)?;
    Ok(id)
}

/// Removes key `id` from the file: cursors and sessions minted under it
/// stop working. The newest key cannot be retired.
pub fn retire(path: &Path, id: u32) -> std::io::Result<()> {
    let mut keys = read_key_file(path)?;
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
    if keys.last().map(|k| k.0) == Some(id) {
        return Err(invalid(format!(
            "key {id} is the newest: rotate first, then retire it"
        )));
    }
    let before = keys.len();
    keys.retain(|k| k.0 != id);
    if keys.len() == before {
        return Err(invalid(format!("no key {id} in {}", path.display())));
    }
    write_key_file(path, &keys)
}

/// Writes `bytes` to a file readable only by its owner, atomically and
/// durably (a temporary file renamed over it, then the directory synced).
pub fn write_secret_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_old_sessions_until_retired() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.key");
        let keys = ServerKeys::load_or_create(&path).unwrap();
        assert_eq!(keys.current_id(), 1);
        let old = SessionId::generate(1, "n1", 0).to_text();
        let secrets = keys.session_secrets();
        let before = secrets.secret(&old).unwrap();
        assert_eq!(rotate(&path).unwrap(), 2);
        // a key id the node does not know yet makes it look at the file
        // (no more than ten times a second)
        std::thread::sleep(RECHECK / 10);
        let new = SessionId::generate(2, "n1", 0).to_text();
        assert!(secrets.secret(&new).is_some());
        assert_eq!(secrets.secret(&old).unwrap(), before);
        assert!(retire(&path, 2).is_err(), "the newest key stays");
        retire(&path, 1).unwrap();
        // the reload is at most once a second unless an id is unknown
        std::thread::sleep(RECHECK);
        assert_eq!(keys.current_id(), 2);
        assert_eq!(secrets.secret(&old), None);
        assert_eq!(secrets.secret("not an id"), None);
    }

    #[test]
    fn a_bare_hex_file_is_key_one() {
        let k = parse_key_file(&"ab".repeat(32)).unwrap();
        assert_eq!(k[0].0, 1);
        assert!(parse_key_file("1 00\n").is_err());
        assert!(parse_key_file(&format!("1 {}\n1 {}\n", "00".repeat(32), "11".repeat(32))).is_err());
        assert!(parse_key_file("# nothing\n").is_err());
    }
}
