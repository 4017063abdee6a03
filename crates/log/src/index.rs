//! Sparse offset and time indexes of one segment: the in-memory form and the
//! encoding of the `.index` and `.timeindex` files. Pure code, no I/O.

use crate::format::{i64_at, u32_at, u64_at, BatchHeader};

/// Bytes of one `.index` entry: relative offset (u32), position (u32).
pub(crate) const OFFSET_ENTRY: usize = 8;
/// Bytes of one `.timeindex` entry: timestamp (i64), relative offset (u32).
pub(crate) const TIME_ENTRY: usize = 12;
const OFFSET_MAGIC: u32 = u32::from_le_bytes(*b"SBIX");
const TIME_MAGIC: u32 = u32::from_le_bytes(*b"SBTI");
/// `.index` footer: magic, count, segment bytes, next offset, max timestamp, crc.
pub(crate) const OFFSET_FOOTER: usize = 4 + 4 + 8 + 8 + 8 + 4;
/// `.timeindex` footer: magic, count, crc.
pub(crate) const TIME_FOOTER: usize = 4 + 4 + 4;

/// What the index knows of one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentIndex {
    /// Base offset of the segment (from its file name).
    pub base: u64,
    /// (offset - base, byte position of a batch starting at that offset),
    /// strictly increasing in both.
    pub offsets: Vec<(u32, u32)>,
    /// (largest timestamp of every batch before, offset - base of a batch):
    /// every record before that offset has a timestamp at most the first.
    pub times: Vec<(i64, u32)>,
    /// One past the last offset in the segment.
    pub next_offset: u64,
    /// Largest timestamp in the segment (`i64::MIN` when empty).
    pub max_timestamp: i64,
    /// Byte length of the segment's valid batches.
    pub size: u64,
    bytes_since_entry: u64,
}

impl SegmentIndex {
    pub fn new(base: u64) -> Self {
        SegmentIndex {
            base,
            offsets: Vec::new(),
            times: Vec::new(),
            next_offset: base,
            max_timestamp: i64::MIN,
            size: 0,
            bytes_since_entry: 0,
        }
    }

    /// Records a batch appended at `pos`; returns the entries it added, so the
    /// caller can append them to the active segment's index files.
    pub fn on_batch(&mut self, h: &BatchHeader, pos: u64, interval: u64) -> Option<((u32, u32), (i64, u32))> {
        debug_assert_eq!(h.base_offset, self.next_offset);
        debug_assert_eq!(pos, self.size);
        let mut added = None;
        if pos > 0 && self.bytes_since_entry >= interval {
            let rel = (h.base_offset - self.base) as u32;
            let e = (rel, pos as u32);
            let t = (self.max_timestamp, rel);
            self.offsets.push(e);
            self.times.push(t);
            self.bytes_since_entry = 0;
            added = Some((e, t));
        }
        self.bytes_since_entry += h.len as u64;
        self.next_offset = h.next_offset();
        self.max_timestamp = self.max_timestamp.max(h.max_timestamp);
        self.size = pos + h.len as u64;
        added
    }

    /// Byte position of a batch that starts at or before `offset`.
    pub fn position_for(&self, offset: u64) -> u64 {
        let rel = offset.saturating_sub(self.base).min(u32::MAX as u64) as u32;
        let i = self.offsets.partition_point(|e| e.0 <= rel);
        if i == 0 {
            0
        } else {
            self.offsets[i - 1].1 as u64
        }
    }

    /// An offset at or before the first record with a timestamp at or after `ts`.
    pub fn offset_for_time(&self, ts: i64) -> u64 {
        let i = self.times.partition_point(|e| e.0 < ts);
        if i == 0 {
            self.base
        } else {
            self.base + self.times[i - 1].1 as u64
        }
    }

    /// The sealed `.index` file: entries then a checked footer.
    pub fn encode_offsets(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.offsets.len() * OFFSET_ENTRY + OFFSET_FOOTER);
        for e in &self.offsets {
            push_offset_entry(&mut b, *e);
        }
        b.extend_from_slice(&OFFSET_MAGIC.to_le_bytes());
        b.extend_from_slice(&(self.offsets.len() as u32).to_le_bytes());
        b.extend_from_slice(&self.size.to_le_bytes());
        b.extend_from_slice(&self.next_offset.to_le_bytes());
        b.extend_from_slice(&self.max_timestamp.to_le_bytes());
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// The sealed `.timeindex` file: entries then a checked footer.
    pub fn encode_times(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.times.len() * TIME_ENTRY + TIME_FOOTER);
        for e in &self.times {
            push_time_entry(&mut b, *e);
        }
        b.extend_from_slice(&TIME_MAGIC.to_le_bytes());
        b.extend_from_slice(&(self.times.len() as u32).to_le_bytes());
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes sealed index files; `None` unless both are complete, their
    /// checksums hold, and they agree with a segment of `segment_len` bytes.
    pub fn decode_sealed(base: u64, offsets: &[u8], times: &[u8], segment_len: u64) -> Option<SegmentIndex> {
        let ob = checked_body(offsets, OFFSET_FOOTER, OFFSET_MAGIC, OFFSET_ENTRY)?;
        let tb = checked_body(times, TIME_FOOTER, TIME_MAGIC, TIME_ENTRY)?;
        let f = &offsets[ob.len()..];
        let size = u64_at(f, 8);
        let next_offset = u64_at(f, 16);
        let max_timestamp = i64_at(f, 24);
        if size != segment_len || next_offset < base || (size == 0) != (next_offset == base) {
            return None;
        }
        let offs: Vec<(u32, u32)> = ob
            .chunks_exact(OFFSET_ENTRY)
            .map(|e| (u32_at(e, 0), u32_at(e, 4)))
            .collect();
        let times: Vec<(i64, u32)> = tb
            .chunks_exact(TIME_ENTRY)
            .map(|e| (i64_at(e, 0), u32_at(e, 8)))
            .collect();
        let span = next_offset - base;
        let increasing = offs.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1);
        let in_range = offs.iter().all(|e| (e.0 as u64) < span && (e.1 as u64) < size);
        let times_ok = times.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 < w[1].1)
            && times.iter().all(|e| (e.1 as u64) < span);
        if !(increasing && in_range && times_ok) {
            return None;
        }
        Some(SegmentIndex {
            base,
            offsets: offs,
            times,
            next_offset,
            max_timestamp,
            size,
            bytes_since_entry: 0,
        })
    }
}

fn checked_body(file: &[u8], footer: usize, magic: u32, entry: usize) -> Option<&[u8]> {
    let body_len = file.len().checked_sub(footer)?;
    let f = &file[body_len..];
    if u32_at(f, 0) != magic {
        return None;
    }
    let count = u32_at(f, 4) as usize;
    if count.checked_mul(entry)? != body_len {
        return None;
    }
    let crc = u32_at(f, footer - 4);
    if crc32c::crc32c(&file[..file.len() - 4]) != crc {
        return None;
    }
    Some(&file[..body_len])
}

pub(crate) fn push_offset_entry(b: &mut Vec<u8>, e: (u32, u32)) {
    b.extend_from_slice(&e.0.to_le_bytes());
    b.extend_from_slice(&e.1.to_le_bytes());
}

pub(crate) fn push_time_entry(b: &mut Vec<u8>, e: (i64, u32)) {
    b.extend_from_slice(&e.0.to_le_bytes());
    b.extend_from_slice(&e.1.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::BatchBuilder;

    fn header(base: u64, n: u32, ts: i64, size: usize) -> BatchHeader {
        let mut b = BatchBuilder::new();
        for i in 0..n {
            b.push(ts + i as i64, None, &vec![0u8; size], []);
        }
        let crc = b.body_crc();
        b.seal(base, 0, crc).0
    }

    fn sample() -> SegmentIndex {
        let mut ix = SegmentIndex::new(100);
        let mut pos = 0;
        for i in 0..50u64 {
            let h = header(ix.next_offset, 3, 1000 + i as i64 * 10, 500);
            ix.on_batch(&h, pos, 4096);
            pos += h.len as u64;
        }
        ix
    }

    #[test]
    fn lookups_never_overshoot() {
        let ix = sample();
        assert!(!ix.offsets.is_empty());
        for off in 100..ix.next_offset {
            let pos = ix.position_for(off);
            // the entry found must start at or before `off`
            let e = ix.offsets.iter().find(|e| e.1 as u64 == pos);
            assert!(pos == 0 || e.is_some_and(|e| 100 + e.0 as u64 <= off));
        }
        for ts in [0, 1000, 1200, 1490, 1500, 99_999] {
            let off = ix.offset_for_time(ts);
            // batch i holds timestamps 1000 + 10 i .. +2, at offsets 100 + 3 i ..
            let first = (100..ix.next_offset)
                .find(|o| 1000 + ((o - 100) / 3) as i64 * 10 + ((o - 100) % 3) as i64 >= ts);
            assert!(first.is_none_or(|f| off <= f), "ts {ts}: {off} > {first:?}");
        }
    }

    #[test]
    fn sealed_round_trip_and_damage() {
        let ix = sample();
        let o = ix.encode_offsets();
        let t = ix.encode_times();
        let back = SegmentIndex::decode_sealed(100, &o, &t, ix.size).unwrap();
        assert_eq!(back.offsets, ix.offsets);
        assert_eq!(back.times, ix.times);
        assert_eq!(back.next_offset, ix.next_offset);
        assert!(SegmentIndex::decode_sealed(100, &o, &t, ix.size + 1).is_none());
        for i in 0..o.len() {
            let mut c = o.clone();
            c[i] ^= 0x10;
            assert!(SegmentIndex::decode_sealed(100, &c, &t, ix.size).is_none());
            assert!(SegmentIndex::decode_sealed(100, &o[..i], &t, ix.size).is_none());
        }
        for i in 0..t.len() {
            let mut c = t.clone();
            c[i] ^= 0x01;
            assert!(SegmentIndex::decode_sealed(100, &o, &c, ix.size).is_none());
        }
    }
}
