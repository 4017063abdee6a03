//! Master keys (key-encryption keys): where they come from and how a new
//! one is added. They only ever wrap data keys.

use std::path::{Path, PathBuf};

use switchboard_rpc::keys::write_secret_file;
use zeroize::Zeroizing;

use super::{CryptoError, Key32};

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

/// Master keys, newest last.
pub(crate) type Masters = Vec<(String, Key32)>;

/// Parses master keys in the file format; newest last.
pub fn parse_master_keys(text: &str) -> Result<Masters, CryptoError> {
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

/// Reads the master keys (blocking: a file or a command).
pub(crate) fn load(src: &MasterSource) -> Result<Masters, CryptoError> {
    match src {
        MasterSource::File(p) => {
            let text = Zeroizing::new(
                std::fs::read_to_string(p)
                    .map_err(|e| CryptoError::Keys(format!("reading master keys {}: {e}", p.display())))?,
            );
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
            parse_master_keys(&Zeroizing::new(String::from_utf8_lossy(&out.stdout).into_owned()))
        }
    }
}

/// What tells a changed master file (a rewrite renames a new file over it).
pub(crate) fn stamp(src: &MasterSource) -> Option<(std::time::SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    match src {
        MasterSource::File(p) => {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.ino(), m.len()))
        }
        _ => None,
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

/// Adds a new master key to a master key file and returns its id. Nodes
/// that use the file wrap every data key under it as well: running ones
/// within seconds, stopped ones when they start.
pub fn add_master(master_file: &Path) -> Result<String, CryptoError> {
    let masters = load(&MasterSource::File(master_file.to_path_buf()))?;
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
    write_secret_file(master_file, text.as_bytes())
        .map_err(|e| CryptoError::Keys(format!("writing {}: {e}", master_file.display())))?;
    Ok(next)
}
