//! Spill files: the last resort of a graceful shutdown. Blocks committed
//! with `durable: false` that the store could not take before the drain
//! bound are written here (one file per block, already sealed by the
//! session layer, checksummed, fsynced) and appended again at the next
//! start, before the node serves.
//!
//! A block keeps its producer block (`producer`, `epoch`, `block`), so its
//! re-injection is idempotent; a block without one is given a short-lived
//! producer of its own when spilled (`~spill.<random>`, block 1), so that a
//! re-injection interrupted and started again stores it once too.
//!
//! Format (little endian): `SBSPILL1`, stream (u32 length, bytes), producer
//! flag (u8) and then id (u32 length, bytes), epoch (u64), block (u64);
//! parts (u32), each partition (u32), records (u32), each timestamp
//! (i64), key flag (u8) then key (u32 length, bytes), value (u32 length,
//! bytes), encoded headers (u32 length, bytes); then CRC-32C of all that.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use switchboard_store::{Appended, Block, BlockProducer, Error as StoreError, Store};

const MAGIC: &[u8; 8] = b"SBSPILL1";
const QUARANTINE: &str = "quarantine";

/// Writes `block` of `stream` to a new spill file in `dir`.
pub fn write(dir: &Path, stream: &str, block: Block) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let (producer, parts) = block.into_parts();
    let producer = producer.unwrap_or_else(|| BlockProducer {
        id: format!("~spill.{:032x}", rand::random::<u128>()),
        epoch: 0,
        block: 1,
    });
    let mut b = Vec::with_capacity(parts.iter().map(|p| p.1.encoded_len() + 64).sum::<usize>() + 512);
    b.extend_from_slice(MAGIC);
    put_bytes(&mut b, stream.as_bytes());
    b.push(1);
    put_bytes(&mut b, producer.id.as_bytes());
    b.extend_from_slice(&producer.epoch.to_le_bytes());
    b.extend_from_slice(&producer.block.to_le_bytes());
    b.extend_from_slice(&(parts.len() as u32).to_le_bytes());
    for (partition, records) in &parts {
        b.extend_from_slice(&partition.to_le_bytes());
        b.extend_from_slice(&records.len().to_le_bytes());
        for r in records.iter() {
            b.extend_from_slice(&r.timestamp_ms.to_le_bytes());
            match r.key {
                Some(k) => {
                    b.push(1);
                    put_bytes(&mut b, k);
                }
                None => b.push(0),
            }
            put_bytes(&mut b, r.value);
            put_bytes(&mut b, r.headers);
        }
    }
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    // names sort in the order blocks were spilled (a producer's blocks
    // must go back in order: a later one first would make the earlier a
    // duplicate)
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let name = format!(
        "{:013}-{:010}-{:08x}.spill",
        switchboard_proto::time::now_ms(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        rand::random::<u32>()
    );
    let path = dir.join(&name);
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&b)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(path)
}

fn put_bytes(b: &mut Vec<u8>, v: &[u8]) {
    b.extend_from_slice(&(v.len() as u32).to_le_bytes());
    b.extend_from_slice(v);
}

struct Cur<'a>(&'a [u8]);

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (a, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

/// Reads a spill file back: (stream, block); `None` if it is damaged.
pub fn read(data: &[u8]) -> Option<(String, Block)> {
    let (body, crc) = data.split_at_checked(data.len().checked_sub(4)?)?;
    if crc32c::crc32c(body).to_le_bytes() != crc || !body.starts_with(MAGIC) {
        return None;
    }
    let mut c = Cur(&body[MAGIC.len()..]);
    let stream = String::from_utf8(c.bytes()?.to_vec()).ok()?;
    let producer = match c.u8()? {
        1 => Some(BlockProducer {
            id: String::from_utf8(c.bytes()?.to_vec()).ok()?,
            epoch: c.u64()?,
            block: c.u64()?,
        }),
        _ => None,
    };
    let mut block = Block::new(producer).ok()?;
    for _ in 0..c.u32()? {
        let partition = c.u32()?;
        let n = c.u32()?;
        let records = block.records(partition);
        for _ in 0..n {
            let ts = c.u64()? as i64;
            let key = match c.u8()? {
                1 => Some(c.bytes()?),
                _ => None,
            };
            let value = c.bytes()?;
            let headers = c.bytes()?;
            records.push(ts, key, &[value], switchboard_store::HeaderIter::over(headers));
        }
    }
    c.0.is_empty().then_some((stream, block))
}

/// What [`reinject`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reinjected {
    /// Blocks appended (or found already stored).
    pub stored: usize,
    /// Blocks dropped: their stream is gone, or a newer session of their
    /// producer took over (and replays what it needs itself).
    pub dropped: usize,
    /// Damaged files moved to `quarantine/`.
    pub quarantined: usize,
    /// Files left for the next start (the store refused them for now).
    pub left: usize,
}

/// Appends every spill file of `dir` to the store, oldest first, removing
/// each once stored. A damaged file is moved to `dir/quarantine` with an
/// error log line; a file the store cannot take now stays for next time.
pub async fn reinject(dir: &Path, store: &Arc<dyn Store>) -> Reinjected {
    let mut done = Reinjected::default();
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
        return done;
    };
    let mut files: Vec<PathBuf> = Vec::new();
    while let Ok(Some(e)) = entries.next_entry().await {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "spill") {
            files.push(p);
        }
    }
    files.sort();
    for path in files {
        let parsed = tokio::fs::read(&path).await.ok().and_then(|d| read(&d));
        let Some((stream, block)) = parsed else {
            let q = dir.join(QUARANTINE);
            let to = q.join(path.file_name().unwrap_or_default());
            let moved = match tokio::fs::create_dir_all(&q).await {
                Ok(()) => tokio::fs::rename(&path, &to).await,
                Err(e) => Err(e),
            };
            tracing::error!(file = %path.display(), moved_to = %to.display(), ok = moved.is_ok(),
                "spill file is damaged: quarantined, not re-injected");
            done.quarantined += 1;
            continue;
        };
        let producer = block.producer().cloned();
        match store.append(&stream, block).await {
            Ok(a) => {
                match a {
                    Appended::Fenced { epoch } => {
                        tracing::warn!(file = %path.display(), %stream, epoch, "spilled block dropped: a newer session of its producer took over");
                        done.dropped += 1;
                    }
                    _ => done.stored += 1,
                }
                let _ = tokio::fs::remove_file(&path).await;
            }
            Err(StoreError::NotFound(_)) => {
                tracing::warn!(file = %path.display(), %stream, "spilled block dropped: its stream is gone");
                done.dropped += 1;
                let _ = tokio::fs::remove_file(&path).await;
            }
            Err(e) => {
                tracing::error!(file = %path.display(), %stream, producer = ?producer.map(|p| p.id), error = %e,
                    "spilled block not re-injected now: kept for the next start");
                done.left += 1;
            }
        }
    }
    if let Ok(d) = tokio::fs::File::open(dir).await {
        let _ = d.sync_all().await;
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_read_back_and_damage_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = Block::new(None).unwrap();
        b.records(2)
            .push(5, Some(b"k"), &[b"v1"], [(&b"h"[..], &b"x"[..])]);
        b.records(0).push(6, None, &[b"v2"], []);
        let path = write(dir.path(), "s", b).unwrap();
        let data = std::fs::read(&path).unwrap();
        let (stream, back) = read(&data).unwrap();
        assert_eq!(stream, "s");
        let p = back.producer().unwrap();
        assert!(p.id.starts_with("~spill.") && p.block == 1);
        assert_eq!(back.parts().len(), 2);
        let r: Vec<_> = back.parts()[1].1.iter().collect();
        assert_eq!(
            (r[0].key, r[0].value, r[0].timestamp_ms),
            (Some(&b"k"[..]), &b"v1"[..], 5)
        );
        for i in [0, 9, data.len() / 2, data.len() - 1] {
            let mut bad = data.clone();
            bad[i] ^= 1;
            assert!(read(&bad).is_none(), "byte {i}");
        }
        assert!(read(&data[..data.len() - 3]).is_none());
    }
}
