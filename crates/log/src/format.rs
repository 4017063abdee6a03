//! The record-batch format: encoding (by [`BatchBuilder`]) and validation and
//! decoding (by [`BatchHeader::parse`] and [`decode_records`]). Pure code, no I/O.
//!
//! See the crate documentation for the byte layout.

use bytes::Bytes;

/// `SBL1` as a little-endian u32: the first four bytes of every batch.
pub const BATCH_MAGIC: u32 = u32::from_le_bytes(*b"SBL1");
/// Current batch format version.
pub const BATCH_VERSION: u8 = 1;
/// Size of the fixed batch header.
pub const HEADER_LEN: usize = 64;
/// Fixed part of an encoded record: length, timestamp, key length, value
/// length, headers length.
pub const RECORD_OVERHEAD: usize = 4 + 8 + 4 + 4 + 4;
/// Longest producer id a batch can carry.
pub const MAX_PRODUCER_LEN: usize = 255;

const OFF_LEN: usize = 4;
const OFF_CRC: usize = 8;
const OFF_VERSION: usize = 12;
const OFF_ATTRIBUTES: usize = 13;
const OFF_PRODUCER_LEN: usize = 14;
const OFF_BASE: usize = 16;
const OFF_COUNT: usize = 24;
const OFF_BLOCK_PARTS: usize = 28;
const OFF_FIRST_TS: usize = 32;
const OFF_MAX_TS: usize = 40;
const OFF_BLOCK: usize = 48;
const OFF_APPEND_TIME: usize = 56;
/// The CRC covers the header from the version byte on.
const CRC_HEADER_FROM: usize = OFF_VERSION;

/// Builds one batch of records in its on-disk encoding, ready to append.
///
/// Records are encoded straight into one reusable buffer: appending a batch
/// copies each payload exactly once (into the builder) before the single
/// `write` to the segment. Reuse a builder with [`BatchBuilder::reset`].
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    records: u32,
    first_ts: i64,
    max_ts: i64,
    block: u64,
    block_parts: u32,
    body_start: usize,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchBuilder {
    /// An empty batch without a producer.
    pub fn new() -> Self {
        Self::with_capacity(4096)
    }

    /// An empty batch whose buffer starts with room for `bytes`.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut b = BatchBuilder {
            buf: Vec::with_capacity(bytes.max(HEADER_LEN)),
            records: 0,
            first_ts: 0,
            max_ts: i64::MIN,
            block: 0,
            block_parts: 0,
            body_start: HEADER_LEN,
        };
        b.buf.resize(HEADER_LEN, 0);
        b
    }

    /// Clears the batch for reuse, keeping its buffer, and sets (or clears)
    /// the producer id and block number it carries. Fails if the id is empty
    /// or longer than [`MAX_PRODUCER_LEN`] bytes, or the block is 0.
    pub fn reset(&mut self, producer: Option<(&str, u64)>) -> crate::Result<()> {
        self.buf.clear();
        self.buf.resize(HEADER_LEN, 0);
        self.records = 0;
        self.first_ts = 0;
        self.max_ts = i64::MIN;
        self.block = 0;
        self.block_parts = 0;
        self.body_start = HEADER_LEN;
        if let Some((id, block)) = producer {
            if id.is_empty() || id.len() > MAX_PRODUCER_LEN {
                return Err(crate::Error::invalid(
                    "producer",
                    format!("length must be 1 to {MAX_PRODUCER_LEN} bytes"),
                ));
            }
            if block == 0 {
                return Err(crate::Error::invalid("block", "producer blocks start at 1"));
            }
            self.buf.extend_from_slice(id.as_bytes());
            self.body_start = HEADER_LEN + id.len();
            self.block = block;
        }
        Ok(())
    }

    /// An empty batch carrying a producer id and block number.
    pub fn for_producer(id: &str, block: u64) -> crate::Result<Self> {
        let mut b = Self::new();
        b.reset(Some((id, block)))?;
        Ok(b)
    }

    /// Records how many partitions the producer block this batch belongs to
    /// was split over (stored with the batch, so that a reader of the log
    /// can tell whether every part of the block is present). Ignored
    /// without a producer.
    pub fn set_block_parts(&mut self, parts: u32) {
        self.block_parts = parts;
    }

    /// Adds a record. `headers` are (name, value) byte pairs.
    pub fn push<'h>(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: &[u8],
        headers: impl IntoIterator<Item = (&'h [u8], &'h [u8])>,
    ) {
        self.push_parts(timestamp_ms, key, &[value], headers)
    }

    /// Adds a record whose value is the concatenation of `value_parts`
    /// (written straight into the batch: no intermediate buffer).
    pub fn push_parts<'h>(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value_parts: &[&[u8]],
        headers: impl IntoIterator<Item = (&'h [u8], &'h [u8])>,
    ) {
        let start = self.begin_record(timestamp_ms, key);
        let value_len: usize = value_parts.iter().map(|p| p.len()).sum();
        self.buf.extend_from_slice(&(value_len as u32).to_le_bytes());
        for p in value_parts {
            self.buf.extend_from_slice(p);
        }
        self.push_headers(headers);
        self.finish_record(start, timestamp_ms);
    }

    /// Writes a record's length placeholder, timestamp and key; returns
    /// where the record starts.
    fn begin_record(&mut self, timestamp_ms: i64, key: Option<&[u8]>) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0u8; 4]); // record length, filled by finish_record
        self.buf.extend_from_slice(&timestamp_ms.to_le_bytes());
        match key {
            Some(k) => {
                self.buf.extend_from_slice(&(k.len() as u32).to_le_bytes());
                self.buf.extend_from_slice(k);
            }
            None => self.buf.extend_from_slice(&u32::MAX.to_le_bytes()),
        }
        start
    }

    /// Writes a record's headers: their total length, then (u32 length,
    /// bytes) name and value pairs.
    fn push_headers<'h>(&mut self, headers: impl IntoIterator<Item = (&'h [u8], &'h [u8])>) {
        let headers_at = self.buf.len();
        self.buf.extend_from_slice(&[0u8; 4]);
        put_headers(&mut self.buf, headers);
        let headers_len = (self.buf.len() - headers_at - 4) as u32;
        self.buf[headers_at..headers_at + 4].copy_from_slice(&headers_len.to_le_bytes());
    }

    /// Fills in the record's length and counts it.
    fn finish_record(&mut self, start: usize, timestamp_ms: i64) {
        let record_len = (self.buf.len() - start - 4) as u32;
        self.buf[start..start + 4].copy_from_slice(&record_len.to_le_bytes());
        if self.records == 0 {
            self.first_ts = timestamp_ms;
        }
        self.max_ts = self.max_ts.max(timestamp_ms);
        self.records += 1;
    }

    /// Adds a record without headers whose value `fill` writes by
    /// appending to the buffer it is given (the batch's own buffer: the
    /// value is built in place, with no copy). `fill` must only append.
    pub fn push_appending(&mut self, timestamp_ms: i64, key: Option<&[u8]>, fill: impl FnOnce(&mut Vec<u8>)) {
        self.push_with(timestamp_ms, key, [], fill)
    }

    /// Adds a record with `headers` whose value `fill` builds in place (see
    /// [`BatchBuilder::push_appending`]).
    pub fn push_with<'h>(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        headers: impl IntoIterator<Item = (&'h [u8], &'h [u8])>,
        fill: impl FnOnce(&mut Vec<u8>),
    ) {
        let start = self.begin_record(timestamp_ms, key);
        let value_at = self.buf.len();
        self.buf.extend_from_slice(&[0u8; 4]); // value length, filled below
        fill(&mut self.buf);
        debug_assert!(self.buf.len() >= value_at + 4);
        let value_len = (self.buf.len() - value_at - 4) as u32;
        self.buf[value_at..value_at + 4].copy_from_slice(&value_len.to_le_bytes());
        self.push_headers(headers);
        self.finish_record(start, timestamp_ms);
    }

    /// Makes room for `additional` more bytes of records, so that pushing
    /// them copies each payload once and never moves the batch.
    pub fn reserve(&mut self, additional: usize) {
        self.buf.reserve(additional);
    }

    /// The whole encoded batch (header included), as it would be written.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The encoded batch's buffer (for stores that keep it and slice the
    /// records out of it; see [`BatchBuilder::records`]).
    pub fn into_vec(self) -> Vec<u8> {
        self.buf
    }

    /// The records pushed so far, as written (for stores that take records
    /// one by one rather than as an encoded batch).
    pub fn records(&self) -> PushedRecords<'_> {
        PushedRecords {
            rest: &self.buf[self.body_start..],
        }
    }

    /// Number of records pushed.
    pub fn record_count(&self) -> u32 {
        self.records
    }

    /// True when no record was pushed.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Size of the batch as it will be written, header included.
    pub fn encoded_len(&self) -> usize {
        self.buf.len()
    }

    /// Producer id and block, if the batch carries one.
    pub fn producer(&self) -> Option<(&str, u64)> {
        if self.body_start == HEADER_LEN {
            return None;
        }
        // Only ever filled from a `&str` in `reset`.
        std::str::from_utf8(&self.buf[HEADER_LEN..self.body_start])
            .ok()
            .map(|id| (id, self.block))
    }

    /// CRC32C of everything after the fixed header. Independent of the
    /// offsets the log assigns, so it is computed before the writer lock.
    pub(crate) fn body_crc(&self) -> u32 {
        crc32c::crc32c(&self.buf[HEADER_LEN..])
    }

    /// Fills the header for `base_offset`; returns it, parsed, and the bytes
    /// to write.
    pub(crate) fn seal(
        &mut self,
        base_offset: u64,
        append_time_ms: i64,
        body_crc: u32,
    ) -> (BatchHeader, &[u8]) {
        let len = self.buf.len() as u32;
        let producer_len = (self.body_start - HEADER_LEN) as u16;
        let h = &mut self.buf[..HEADER_LEN];
        h[0..4].copy_from_slice(&BATCH_MAGIC.to_le_bytes());
        h[OFF_LEN..OFF_LEN + 4].copy_from_slice(&len.to_le_bytes());
        h[OFF_VERSION] = BATCH_VERSION;
        h[OFF_ATTRIBUTES] = 0;
        h[OFF_PRODUCER_LEN..OFF_PRODUCER_LEN + 2].copy_from_slice(&producer_len.to_le_bytes());
        h[OFF_BASE..OFF_BASE + 8].copy_from_slice(&base_offset.to_le_bytes());
        h[OFF_COUNT..OFF_COUNT + 4].copy_from_slice(&self.records.to_le_bytes());
        let parts = if self.block == 0 { 0 } else { self.block_parts };
        h[OFF_BLOCK_PARTS..OFF_FIRST_TS].copy_from_slice(&parts.to_le_bytes());
        h[OFF_FIRST_TS..OFF_FIRST_TS + 8].copy_from_slice(&self.first_ts.to_le_bytes());
        h[OFF_MAX_TS..OFF_MAX_TS + 8].copy_from_slice(&self.max_ts.to_le_bytes());
        h[OFF_BLOCK..OFF_BLOCK + 8].copy_from_slice(&self.block.to_le_bytes());
        h[OFF_APPEND_TIME..OFF_APPEND_TIME + 8].copy_from_slice(&append_time_ms.to_le_bytes());
        let crc = crc32c::crc32c_append(body_crc, &h[CRC_HEADER_FROM..HEADER_LEN]);
        h[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        let header = BatchHeader {
            len,
            crc,
            producer_len,
            base_offset,
            record_count: self.records,
            first_timestamp: self.first_ts,
            max_timestamp: self.max_ts,
            block: self.block,
            block_parts: parts,
            append_time_ms,
        };
        debug_assert_eq!(BatchHeader::parse(&self.buf), Ok(header));
        (header, &self.buf)
    }
}

/// The fixed header of a batch, parsed and checked for internal consistency
/// (not yet against its CRC: see [`BatchHeader::verify_crc`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Total encoded length, header included.
    pub len: u32,
    /// Stored CRC32C.
    pub crc: u32,
    /// Length of the producer id that follows the header (0: none).
    pub producer_len: u16,
    /// Offset of the first record.
    pub base_offset: u64,
    /// Number of records (at least 1).
    pub record_count: u32,
    /// Timestamp of the first record.
    pub first_timestamp: i64,
    /// Largest record timestamp.
    pub max_timestamp: i64,
    /// Producer block number (0 without producer).
    pub block: u64,
    /// Number of partitions the producer block was split over (0 when not
    /// recorded, always 0 without producer).
    pub block_parts: u32,
    /// Wall-clock time of the append, in ms since the epoch.
    pub append_time_ms: i64,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[at..at + 2]);
    u16::from_le_bytes(a)
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

pub(crate) fn i64_at(b: &[u8], at: usize) -> i64 {
    u64_at(b, at) as i64
}

impl BatchHeader {
    /// Parses the first [`HEADER_LEN`] bytes of `b`. Errors name the failed check.
    pub fn parse(b: &[u8]) -> Result<BatchHeader, &'static str> {
        if b.len() < HEADER_LEN {
            return Err("short batch header");
        }
        if u32_at(b, 0) != BATCH_MAGIC {
            return Err("bad batch magic");
        }
        if b[OFF_VERSION] != BATCH_VERSION {
            return Err("unknown batch version");
        }
        let h = BatchHeader {
            len: u32_at(b, OFF_LEN),
            crc: u32_at(b, OFF_CRC),
            producer_len: u16_at(b, OFF_PRODUCER_LEN),
            base_offset: u64_at(b, OFF_BASE),
            record_count: u32_at(b, OFF_COUNT),
            first_timestamp: i64_at(b, OFF_FIRST_TS),
            max_timestamp: i64_at(b, OFF_MAX_TS),
            block: u64_at(b, OFF_BLOCK),
            block_parts: u32_at(b, OFF_BLOCK_PARTS),
            append_time_ms: i64_at(b, OFF_APPEND_TIME),
        };
        if h.record_count == 0 {
            return Err("batch with no records");
        }
        let min_len =
            HEADER_LEN as u64 + h.producer_len as u64 + h.record_count as u64 * RECORD_OVERHEAD as u64;
        if (h.len as u64) < min_len {
            return Err("batch length too small for its record count");
        }
        if (h.producer_len == 0) != (h.block == 0)
            || h.producer_len as usize > MAX_PRODUCER_LEN
            || (h.block == 0 && h.block_parts != 0)
        {
            return Err("inconsistent producer fields");
        }
        if h.base_offset.checked_add(h.record_count as u64).is_none() {
            return Err("offset overflow");
        }
        Ok(h)
    }

    /// One past the last offset of the batch.
    pub fn next_offset(&self) -> u64 {
        self.base_offset + self.record_count as u64
    }

    /// Checks the CRC over `batch` (exactly `len` bytes, header included).
    pub fn verify_crc(&self, batch: &[u8]) -> bool {
        if batch.len() != self.len as usize {
            return false;
        }
        let body = crc32c::crc32c(&batch[HEADER_LEN..]);
        crc32c::crc32c_append(body, &batch[CRC_HEADER_FROM..HEADER_LEN]) == self.crc
    }

    /// The producer id of a CRC-checked batch.
    pub fn producer_id<'a>(&self, batch: &'a [u8]) -> Option<&'a str> {
        if self.producer_len == 0 {
            return None;
        }
        batch
            .get(HEADER_LEN..HEADER_LEN + self.producer_len as usize)
            .and_then(|b| std::str::from_utf8(b).ok())
    }
}

/// A record of a [`BatchBuilder`], borrowed from its buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushedRecord<'a> {
    /// Timestamp, ms since the epoch.
    pub timestamp_ms: i64,
    /// Key, if any.
    pub key: Option<&'a [u8]>,
    /// Value.
    pub value: &'a [u8],
    /// Headers in their encoded form (see [`Headers`]).
    pub headers: &'a [u8],
}

/// Iterator over the records of a [`BatchBuilder`].
#[derive(Debug)]
pub struct PushedRecords<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for PushedRecords<'a> {
    type Item = PushedRecord<'a>;

    fn next(&mut self) -> Option<PushedRecord<'a>> {
        // the builder wrote these bytes itself: they are well formed
        let len = u32_at(self.rest.get(..4)?, 0) as usize;
        let rec = self.rest.get(4..4 + len)?;
        self.rest = &self.rest[4 + len..];
        let timestamp_ms = i64::from_le_bytes(rec.get(..8)?.try_into().ok()?);
        let mut b = &rec[8..];
        let klen = u32_at(b.get(..4)?, 0);
        let key = if klen == u32::MAX {
            b = &b[4..];
            None
        } else {
            Some(take_prefixed(&mut b)?)
        };
        let value = take_prefixed(&mut b)?;
        let headers = take_prefixed(&mut b)?;
        Some(PushedRecord {
            timestamp_ms,
            key,
            value,
            headers,
        })
    }
}

/// One record as read back. Payloads are slices of the read buffer: no copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Offset in the partition.
    pub offset: u64,
    /// Timestamp given at append, ms since the epoch.
    pub timestamp_ms: i64,
    /// Key, if one was given.
    pub key: Option<Bytes>,
    /// Value bytes.
    pub value: Bytes,
    /// Encoded headers; iterate with [`Headers::iter`].
    pub headers: Headers,
}

impl Record {
    /// Encoded size of the record in the batch.
    pub fn encoded_len(&self) -> usize {
        RECORD_OVERHEAD + self.key.as_ref().map_or(0, |k| k.len()) + self.value.len() + self.headers.0.len()
    }
}

/// Moves the records' bytes into one buffer of their own, so that they no
/// longer keep alive the (larger) chunks they were read from: worth it when
/// a read used a small part of what it read, and its records are held.
pub(crate) fn compact(records: &mut [Record]) {
    let bytes: usize = records
        .iter()
        .map(|r| r.key.as_ref().map_or(0, Bytes::len) + r.value.len() + r.headers.0.len())
        .sum();
    let mut buf = bytes::BytesMut::with_capacity(bytes);
    for r in records.iter() {
        if let Some(k) = &r.key {
            buf.extend_from_slice(k);
        }
        buf.extend_from_slice(&r.value);
        buf.extend_from_slice(&r.headers.0);
    }
    let buf = buf.freeze();
    let mut at = 0;
    let mut take = |len: usize| {
        at += len;
        buf.slice(at - len..at)
    };
    for r in records.iter_mut() {
        if let Some(k) = &mut r.key {
            *k = take(k.len());
        }
        r.value = take(r.value.len());
        r.headers = Headers(take(r.headers.0.len()));
    }
}

/// Appends `headers` in their encoded form: (u32 length, bytes) name and
/// value pairs.
fn put_headers<'h>(buf: &mut Vec<u8>, headers: impl IntoIterator<Item = (&'h [u8], &'h [u8])>) {
    for (name, val) in headers {
        buf.extend_from_slice(&(name.len() as u32).to_le_bytes());
        buf.extend_from_slice(name);
        buf.extend_from_slice(&(val.len() as u32).to_le_bytes());
        buf.extend_from_slice(val);
    }
}

/// A record's headers in their encoded form: (u32 length, bytes) name and
/// value pairs, already validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Bytes);

impl Headers {
    /// Headers from their encoded form ((u32 length, bytes) name and value
    /// pairs, the form [`BatchBuilder::push`] writes); `None` if malformed.
    pub fn from_encoded(b: Bytes) -> Option<Headers> {
        valid_headers(&b).then_some(Headers(b))
    }

    /// Encodes `pairs`.
    pub fn encode<'h>(pairs: impl IntoIterator<Item = (&'h [u8], &'h [u8])>) -> Headers {
        let mut buf = Vec::new();
        put_headers(&mut buf, pairs);
        Headers(Bytes::from(buf))
    }

    /// The encoded form.
    pub fn encoded(&self) -> &[u8] {
        &self.0
    }

    /// The encoded form, as the shared buffer slice it is.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// Iterates (name, value) pairs in the order they were written.
    pub fn iter(&self) -> HeaderIter<'_> {
        HeaderIter { rest: &self.0 }
    }

    /// True when the record has no headers.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Iterator over [`Headers`].
#[derive(Debug)]
pub struct HeaderIter<'a> {
    rest: &'a [u8],
}

impl<'a> HeaderIter<'a> {
    /// Iterates headers in their encoded form; stops at the first malformed
    /// pair.
    pub fn over(encoded: &'a [u8]) -> HeaderIter<'a> {
        HeaderIter { rest: encoded }
    }
}

fn take_prefixed<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = b.get(..4).map(|l| u32_at(l, 0) as usize)?;
    let v = b.get(4..4usize.checked_add(len)?)?;
    *b = &b[4 + len..];
    Some(v)
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let name = take_prefixed(&mut self.rest)?;
        let value = take_prefixed(&mut self.rest)?;
        Some((name, value))
    }
}

fn valid_headers(mut b: &[u8]) -> bool {
    while !b.is_empty() {
        if take_prefixed(&mut b).is_none() || take_prefixed(&mut b).is_none() {
            return false;
        }
    }
    true
}

/// Decodes the records of a CRC-checked batch held in `batch` (exactly the
/// batch's bytes), pushing those at or after `from_offset` into `out` while
/// `budget` allows. Returns the number of records pushed, or the failed check.
///
/// `budget` is (records left, bytes left); the first record of a read is
/// always taken so that a record larger than `max_bytes` cannot stall a reader.
pub(crate) fn decode_records(
    h: &BatchHeader,
    batch: &Bytes,
    from_offset: u64,
    out: &mut Vec<Record>,
    budget: &mut (usize, usize),
) -> Result<(), &'static str> {
    let mut pos = HEADER_LEN + h.producer_len as usize;
    for i in 0..h.record_count as u64 {
        let rec = batch.get(pos..pos + 4).ok_or("record length beyond batch")?;
        let rec_len = u32_at(rec, 0) as usize;
        let end = pos
            .checked_add(4 + rec_len)
            .filter(|e| *e <= batch.len())
            .ok_or("record beyond batch")?;
        let offset = h.base_offset + i;
        if offset >= from_offset {
            if budget.0 == 0 || (budget.1 < 4 + rec_len && !out.is_empty()) {
                return Ok(());
            }
            let r = &batch[pos + 4..end];
            if r.len() < RECORD_OVERHEAD - 4 {
                return Err("record too short");
            }
            let ts = i64_at(r, 0);
            let key_len = u32_at(r, 8);
            let mut p: usize = 12;
            let key = if key_len == u32::MAX {
                None
            } else {
                let k = p..p.checked_add(key_len as usize).ok_or("key overflow")?;
                if k.end > r.len() {
                    return Err("key beyond record");
                }
                p = k.end;
                Some(batch.slice(pos + 4 + k.start..pos + 4 + k.end))
            };
            let vlen = r
                .get(p..p + 4)
                .map(|v| u32_at(v, 0) as usize)
                .ok_or("value length beyond record")?;
            let v = p + 4..(p + 4).checked_add(vlen).ok_or("value overflow")?;
            let hl_at = v.end;
            let hlen = r
                .get(hl_at..hl_at + 4)
                .map(|v| u32_at(v, 0) as usize)
                .ok_or("headers length beyond record")?;
            let hs = hl_at + 4..hl_at + 4 + hlen;
            if hs.end != r.len() {
                return Err("record length mismatch");
            }
            if !valid_headers(&r[hs.clone()]) {
                return Err("malformed headers");
            }
            let base = pos + 4;
            out.push(Record {
                offset,
                timestamp_ms: ts,
                key,
                value: batch.slice(base + v.start..base + v.end),
                headers: Headers(batch.slice(base + hs.start..base + hs.end)),
            });
            budget.0 -= 1;
            budget.1 = budget.1.saturating_sub(4 + rec_len);
        }
        pos = end;
    }
    if pos != batch.len() {
        return Err("trailing bytes after last record");
    }
    Ok(())
}

/// Parses a batch and decodes its records whether or not its CRC holds, so
/// that a fuzzer reaches the record decoder.
pub(crate) fn fuzz_batch(data: &[u8]) {
    let Ok(h) = BatchHeader::parse(data) else { return };
    let Some(batch) = data.get(..h.len as usize) else {
        return;
    };
    let _ = h.verify_crc(batch);
    let _ = h.producer_id(batch);
    let bytes = Bytes::copy_from_slice(batch);
    let mut out = Vec::new();
    if decode_records(&h, &bytes, h.base_offset, &mut out, &mut (usize::MAX, usize::MAX)).is_ok() {
        for r in &out {
            let _ = r.headers.iter().count();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(producer: Option<(&str, u64)>) -> BatchBuilder {
        let mut b = BatchBuilder::new();
        b.reset(producer).unwrap();
        b.push(10, Some(b"k1"), b"v1", [(&b"h"[..], &b"x"[..])]);
        b.push(5, None, b"", []);
        b.push(
            20,
            Some(b""),
            b"value-3",
            [(&b"a"[..], &b""[..]), (&b""[..], &b"b"[..])],
        );
        b
    }

    #[test]
    fn round_trip() {
        for producer in [None, Some(("p-1", 7))] {
            let mut b = build(producer);
            let crc = b.body_crc();
            let (sealed, bytes) = b.seal(100, 1234, crc);
            let bytes = Bytes::copy_from_slice(bytes);
            let h = BatchHeader::parse(&bytes).unwrap();
            assert_eq!(h, sealed);
            assert!(h.verify_crc(&bytes));
            assert_eq!(h.base_offset, 100);
            assert_eq!(h.record_count, 3);
            assert_eq!(h.first_timestamp, 10);
            assert_eq!(h.max_timestamp, 20);
            assert_eq!(h.producer_id(&bytes), producer.map(|p| p.0));
            assert_eq!(h.block, producer.map_or(0, |p| p.1));
            let mut out = Vec::new();
            decode_records(&h, &bytes, 101, &mut out, &mut (10, 1 << 20)).unwrap();
            assert_eq!(out.len(), 2);
            assert_eq!(out[0].offset, 101);
            assert_eq!(out[0].key, None);
            assert_eq!(out[1].key.as_deref(), Some(&b""[..]));
            assert_eq!(out[1].value, Bytes::from_static(b"value-3"));
            let hs: Vec<_> = out[1].headers.iter().collect();
            assert_eq!(hs, vec![(&b"a"[..], &b""[..]), (&b""[..], &b"b"[..])]);
        }
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let mut b = build(Some(("p", 1)));
        let crc = b.body_crc();
        let bytes = b.seal(7, 1, crc).1.to_vec();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut c = bytes.clone();
                c[i] ^= 1 << bit;
                let ok = BatchHeader::parse(&c).map(|h| h.verify_crc(&c)).unwrap_or(false);
                assert!(!ok, "flip at byte {i} bit {bit} went unnoticed");
            }
        }
    }

    #[test]
    fn budget_always_takes_one_record() {
        let mut b = build(None);
        let crc = b.body_crc();
        let bytes = Bytes::copy_from_slice(b.seal(0, 1, crc).1);
        let h = BatchHeader::parse(&bytes).unwrap();
        let mut out = Vec::new();
        decode_records(&h, &bytes, 0, &mut out, &mut (10, 1)).unwrap();
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn producer_id_bounds() {
        let mut b = BatchBuilder::new();
        assert!(b.reset(Some(("", 1))).is_err());
        assert!(b.reset(Some(("x", 0))).is_err());
        assert!(b.reset(Some((&"x".repeat(256), 1))).is_err());
        assert!(b.reset(Some((&"x".repeat(255), 1))).is_ok());
    }
}
