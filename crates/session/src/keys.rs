//! Server keys. One random master key lives in `<data-dir>/server.key`
//! (mode 0600); the cursor key and the session-secret key are derived from
//! it, so every node that shares the file accepts the others' cursors and
//! can check the signatures of their sessions' calls.

use std::io::Write;
use std::path::Path;

use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Keys derived from the master key.
#[derive(Clone)]
pub struct Keys {
    cursor: [u8; 32],
    session: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

fn derive(master: &[u8], label: &str) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(master).unwrap_or_else(|_| unreachable!());
    mac.update(label.as_bytes());
    mac.finalize().into_bytes().into()
}

impl Keys {
    /// Keys from a master key.
    pub fn from_master(master: &[u8; 32]) -> Keys {
        Keys {
            cursor: derive(master, "switchboard cursor v1"),
            session: derive(master, "switchboard session secret v1"),
        }
    }

    /// Loads `<dir>/server.key`, creating it (random, 0600) if missing.
    pub fn load_or_create(dir: &Path) -> std::io::Result<Keys> {
        let path = dir.join("server.key");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let bytes = hex::decode(text.trim()).map_err(|_| bad_key(&path))?;
                let master: [u8; 32] = bytes.try_into().map_err(|_| bad_key(&path))?;
                Ok(Keys::from_master(&master))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut master = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut master);
                write_secret_file(&path, hex::encode(master).as_bytes())?;
                Ok(Keys::from_master(&master))
            }
            Err(e) => Err(e),
        }
    }

    /// The AES-256 key of cursors.
    pub fn cursor_key(&self) -> &[u8; 32] {
        &self.cursor
    }

    /// The signing secret of a session: derived from its id, so any API
    /// node can check a call's signature without asking the session's node.
    pub fn session_secret(&self, session_id: &str) -> String {
        B64.encode(derive(&self.session, session_id))
    }
}

fn bad_key(path: &Path) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("{} must hold 64 hex digits", path.display()),
    )
}

/// Writes `bytes` to a new file readable only by its owner, durably.
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
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// A new random id, URL-safe (128 bits).
pub fn random_id() -> String {
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    B64.encode(b)
}
