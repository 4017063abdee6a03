//! Per-partition producer state (the last block of each producer) and its
//! checkpoint files.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::{i64_at, u32_at, u64_at};

const SNAPSHOT_MAGIC: u32 = u32::from_le_bytes(*b"SBPS");
const SNAPSHOT_VERSION: u32 = 2;
const ENTRY_FIELDS_LEN: usize = 36;
/// Snapshots kept per partition; older ones are deleted.
const SNAPSHOTS_KEPT: usize = 2;

/// What the log holds of one producer in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerState {
    /// The producer's highest block in this partition.
    pub last_block: u64,
    /// First offset of that block's batch.
    pub first_offset: u64,
    /// Last offset of that block's batch.
    pub last_offset: u64,
    /// Wall-clock time of that append, ms since the epoch.
    pub last_seen_ms: i64,
    /// How many partitions that block was split over (0: not recorded).
    pub block_parts: u32,
}

pub(crate) type Producers = HashMap<String, ProducerState>;

pub(crate) fn snapshot_path(dir: &Path, offset: u64) -> PathBuf {
    dir.join(format!("{offset:020}.producers"))
}

/// Snapshot files of a partition directory, newest first.
pub(crate) fn list_snapshots(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(Error::io("list", dir))? {
        let e = e.map_err(Error::io("list", dir))?;
        let name = e.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".producers")) else {
            continue;
        };
        if let Ok(off) = stem.parse::<u64>() {
            out.push((off, e.path()));
        }
    }
    out.sort_by_key(|s| std::cmp::Reverse(s.0));
    Ok(out)
}

/// Encodes a snapshot of `producers` covering every batch before `offset`.
pub(crate) fn encode_snapshot(offset: u64, producers: &Producers) -> Vec<u8> {
    let mut b = Vec::with_capacity(24 + producers.len() * 64);
    b.extend_from_slice(&SNAPSHOT_MAGIC.to_le_bytes());
    b.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    b.extend_from_slice(&offset.to_le_bytes());
    b.extend_from_slice(&(producers.len() as u32).to_le_bytes());
    // sorted, so that equal state gives equal bytes
    let mut ids: Vec<_> = producers.iter().collect();
    ids.sort_by(|a, b| a.0.cmp(b.0));
    for (id, s) in ids {
        b.push(id.len() as u8);
        b.extend_from_slice(id.as_bytes());
        b.extend_from_slice(&s.last_block.to_le_bytes());
        b.extend_from_slice(&s.first_offset.to_le_bytes());
        b.extend_from_slice(&s.last_offset.to_le_bytes());
        b.extend_from_slice(&s.last_seen_ms.to_le_bytes());
        b.extend_from_slice(&s.block_parts.to_le_bytes());
    }
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes a snapshot; `None` if anything about it is off.
pub(crate) fn decode_snapshot(b: &[u8]) -> Option<(u64, Producers)> {
    let body = b.len().checked_sub(4)?;
    if body < 20 || crc32c::crc32c(&b[..body]) != u32_at(b, body) {
        return None;
    }
    if u32_at(b, 0) != SNAPSHOT_MAGIC || u32_at(b, 4) != SNAPSHOT_VERSION {
        return None;
    }
    let offset = u64_at(b, 8);
    let count = u32_at(b, 16) as usize;
    let mut p = 20;
    let mut out = Producers::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let n = *b.get(p)? as usize;
        let id = std::str::from_utf8(b.get(p + 1..p + 1 + n)?).ok()?;
        let f = b.get(p + 1 + n..p + 1 + n + ENTRY_FIELDS_LEN)?;
        let s = ProducerState {
            last_block: u64_at(f, 0),
            first_offset: u64_at(f, 8),
            last_offset: u64_at(f, 16),
            last_seen_ms: i64_at(f, 24),
            block_parts: u32_at(f, 32),
        };
        if s.first_offset > s.last_offset || s.last_offset >= offset || s.last_block == 0 {
            return None;
        }
        out.insert(id.to_string(), s);
        p += 1 + n + ENTRY_FIELDS_LEN;
    }
    (p == body).then_some((offset, out))
}

/// Writes a snapshot durably (temp file, fsync, rename, fsync dir) and drops
/// all but the newest [`SNAPSHOTS_KEPT`] and the newest at or below
/// `active_base`. That one never needs data a torn active segment can lose,
/// so recovery always has a usable checkpoint.
pub(crate) fn write_snapshot(dir: &Path, offset: u64, producers: &Producers, active_base: u64) -> Result<()> {
    let path = snapshot_path(dir, offset);
    let tmp = path.with_extension("producers.tmp");
    let bytes = encode_snapshot(offset, producers);
    let mut f = File::create(&tmp).map_err(Error::io("create", &tmp))?;
    f.write_all(&bytes).map_err(Error::io("write", &tmp))?;
    f.sync_all().map_err(Error::io("fsync", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(Error::io("rename", &tmp))?;
    crate::fsync_dir(dir)?;
    let all = list_snapshots(dir)?;
    let floor = all.iter().position(|(o, _)| *o <= active_base);
    for (i, (_, old)) in all.iter().enumerate().skip(SNAPSHOTS_KEPT) {
        if Some(i) != floor {
            std::fs::remove_file(old).map_err(Error::io("remove", old))?;
        }
    }
    Ok(())
}

/// Drops producers unused for longer than `ttl_ms`.
pub(crate) fn expire(producers: &mut Producers, now_ms: i64, cfg: &crate::LogConfig) {
    let cutoff = |ttl: u64| now_ms.saturating_sub(ttl.min(i64::MAX as u64) as i64);
    let (long, short) = (cutoff(cfg.producer_ttl_ms), cutoff(cfg.short_producer_ttl_ms));
    producers.retain(|id, s| s.last_seen_ms >= if id.starts_with(SHORT_LIVED) { short } else { long });
}

/// Producer ids starting with this are short-lived (one block each, such as
/// the idempotency keys of one-shot publishes): their state is kept for
/// `short_producer_ttl_ms`, not `producer_ttl_ms`.
pub const SHORT_LIVED: char = '~';

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_round_trip_and_damage() {
        let mut p = Producers::new();
        for i in 0..20u64 {
            p.insert(
                format!("producer-{i}"),
                ProducerState {
                    last_block: i + 1,
                    first_offset: i * 10,
                    last_offset: i * 10 + 3,
                    last_seen_ms: 1_000 + i as i64,
                    block_parts: i as u32 % 3,
                },
            );
        }
        let b = encode_snapshot(500, &p);
        assert_eq!(decode_snapshot(&b), Some((500, p.clone())));
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x04;
            assert!(decode_snapshot(&c).is_none());
            assert!(decode_snapshot(&b[..i]).is_none());
        }
        let mut q = p.clone();
        let cfg = crate::LogConfig {
            producer_ttl_ms: 5,
            short_producer_ttl_ms: 1,
            ..crate::LogConfig::default()
        };
        expire(&mut q, 1_015, &cfg);
        assert_eq!(q.len(), 10);
        // short-lived producers go sooner
        let mut r = Producers::new();
        for (id, seen) in [("~k", 1_013), ("~j", 1_014), ("p", 1_013)] {
            r.insert(
                id.to_string(),
                ProducerState {
                    last_seen_ms: seen,
                    ..p["producer-0"]
                },
            );
        }
        expire(&mut r, 1_015, &cfg);
        let mut left: Vec<&str> = r.keys().map(String::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["p", "~j"]);
    }
}
