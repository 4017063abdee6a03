//! The store-neutral record types: what the session layer appends and
//! what it reads back. Payloads are `Bytes` slices: no copies on the way
//! out, one copy (into [`Records`]) on the way in.

use bytes::Bytes;
use switchboard_log::BatchBuilder;

use crate::{Error, Result};

/// Longest producer id a block can carry, bytes.
pub const MAX_PRODUCER_LEN: usize = 255;

/// A record as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Offset in its partition.
    pub offset: u64,
    /// Timestamp given at append, ms since the epoch.
    pub timestamp_ms: i64,
    /// Key, if one was given.
    pub key: Option<Bytes>,
    /// Value.
    pub value: Bytes,
    /// Headers.
    pub headers: Headers,
}

impl Record {
    /// Payload size: key, value and headers.
    pub fn payload_len(&self) -> usize {
        self.key.as_ref().map_or(0, |k| k.len()) + self.value.len() + self.headers.encoded().len()
    }
}

/// A record's headers in their encoded form: (u32 LE length, bytes) name
/// and value pairs, in the order they were written. (The encoding is the
/// embedded log's, so its records' headers are taken as they are.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(switchboard_log::Headers);

/// Iterator over [`Headers`]: (name, value) pairs.
pub type HeaderIter<'a> = switchboard_log::HeaderIter<'a>;

impl Headers {
    /// Headers from their encoded form; `None` if malformed.
    pub fn from_encoded(b: Bytes) -> Option<Headers> {
        switchboard_log::Headers::from_encoded(b).map(Headers)
    }

    /// Encodes `pairs`.
    pub fn encode<'a>(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Headers {
        Headers(switchboard_log::Headers::encode(pairs))
    }

    /// Headers of a record read from the embedded log.
    pub(crate) fn from_log(h: switchboard_log::Headers) -> Headers {
        Headers(h)
    }

    /// The encoded form.
    pub fn encoded(&self) -> &[u8] {
        self.0.encoded()
    }

    /// (name, value) pairs in order.
    pub fn iter(&self) -> HeaderIter<'_> {
        self.0.iter()
    }

    /// The first value of header `name`.
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A record of [`Records`], borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Timestamp, ms since the epoch.
    pub timestamp_ms: i64,
    /// Key, if any.
    pub key: Option<&'a [u8]>,
    /// Value.
    pub value: &'a [u8],
    /// Encoded headers (see [`Headers`]).
    pub headers: &'a [u8],
}

/// Records for one partition, encoded once as they are pushed. (The
/// encoding is the embedded log's, so that adapter appends them without
/// another copy; other adapters read them with [`Records::iter`].)
#[derive(Debug, Clone)]
pub struct Records {
    batch: BatchBuilder,
}

impl Records {
    fn new(producer: Option<(&str, u64)>) -> Result<Records> {
        let mut batch = BatchBuilder::with_capacity(1024);
        batch.reset(producer).map_err(|e| Error::Invalid(e.to_string()))?;
        Ok(Records { batch })
    }

    /// Adds a record whose value is the concatenation of `value_parts`.
    pub fn push<'h>(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value_parts: &[&[u8]],
        headers: impl IntoIterator<Item = (&'h [u8], &'h [u8])>,
    ) {
        self.batch.push_parts(timestamp_ms, key, value_parts, headers);
    }

    /// Adds a record whose value `fill` builds in place by appending to
    /// the buffer it is given (`fill` must only append).
    pub fn push_with<'h>(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        headers: impl IntoIterator<Item = (&'h [u8], &'h [u8])>,
        fill: impl FnOnce(&mut Vec<u8>),
    ) {
        self.batch.push_with(timestamp_ms, key, headers, fill);
    }

    /// Makes room for about `bytes` more bytes of records (keys, values,
    /// headers and some overhead each), so pushing them never moves the
    /// buffer.
    pub fn reserve(&mut self, bytes: usize) {
        self.batch.reserve(bytes);
    }

    /// Number of records.
    pub fn len(&self) -> u32 {
        self.batch.record_count()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    /// Bytes held.
    pub fn encoded_len(&self) -> usize {
        self.batch.encoded_len()
    }

    /// The records, in order.
    pub fn iter(&self) -> impl Iterator<Item = RecordRef<'_>> {
        self.batch.records().map(|r| RecordRef {
            timestamp_ms: r.timestamp_ms,
            key: r.key,
            value: r.value,
            headers: r.headers,
        })
    }

    /// The records as [`Record`]s numbered from `first`, sliced out of
    /// this buffer (one allocation for the lot).
    pub(crate) fn into_records(self, first: u64) -> Vec<Record> {
        let base = self.batch.as_bytes().as_ptr() as usize;
        let span = |s: &[u8]| {
            let at = s.as_ptr() as usize - base;
            at..at + s.len()
        };
        let spans: Vec<_> = self
            .batch
            .records()
            .map(|r| (r.timestamp_ms, r.key.map(span), span(r.value), span(r.headers)))
            .collect();
        let buf = Bytes::from(self.batch.into_vec());
        spans
            .into_iter()
            .zip(first..)
            .map(|((ts, k, v, h), offset)| Record {
                offset,
                timestamp_ms: ts,
                key: k.map(|k| buf.slice(k)),
                value: buf.slice(v),
                // the builder wrote them: they are well formed
                headers: Headers::from_encoded(buf.slice(h)).unwrap_or_default(),
            })
            .collect()
    }

    pub(crate) fn into_batch(self) -> BatchBuilder {
        self.batch
    }
}

/// Collects records an adapter reads from its backend into one buffer,
/// then hands them out as [`Record`]s sliced from it: one allocation per
/// fetch, not one per record.
#[derive(Debug, Default)]
pub struct ReadBuffer {
    buf: Vec<u8>,
    spans: Vec<Span>,
}

#[derive(Debug)]
struct Span {
    partition: u32,
    offset: u64,
    timestamp_ms: i64,
    key: Option<(usize, usize)>,
    value: (usize, usize),
    headers: (usize, usize),
}

impl ReadBuffer {
    /// A buffer for about `bytes` of payload in `records` records.
    pub fn with_capacity(bytes: usize, records: usize) -> ReadBuffer {
        ReadBuffer {
            buf: Vec::with_capacity(bytes),
            spans: Vec::with_capacity(records),
        }
    }

    /// Copies one record in.
    pub fn push<'h>(
        &mut self,
        partition: u32,
        offset: u64,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: &[u8],
        headers: impl IntoIterator<Item = (&'h [u8], &'h [u8])>,
    ) {
        let mut put = |b: &[u8]| {
            let at = self.buf.len();
            self.buf.extend_from_slice(b);
            (at, at + b.len())
        };
        let key = key.map(&mut put);
        let value = put(value);
        let start = self.buf.len();
        for (name, val) in headers {
            // the log's header encoding: (u32 LE length, bytes) pairs
            for part in [name, val] {
                self.buf.extend_from_slice(&(part.len() as u32).to_le_bytes());
                self.buf.extend_from_slice(part);
            }
        }
        self.spans.push(Span {
            partition,
            offset,
            timestamp_ms,
            key,
            value,
            headers: (start, self.buf.len()),
        });
    }

    /// Records pushed.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// True when none was pushed.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// The records, (partition, record), in the order pushed.
    pub fn finish(self) -> Vec<(u32, Record)> {
        let buf = Bytes::from(self.buf);
        self.spans
            .into_iter()
            .map(|s| {
                (
                    s.partition,
                    Record {
                        offset: s.offset,
                        timestamp_ms: s.timestamp_ms,
                        key: s.key.map(|(a, b)| buf.slice(a..b)),
                        value: buf.slice(s.value.0..s.value.1),
                        // written above in the encoding `from_encoded` checks
                        headers: Headers::from_encoded(buf.slice(s.headers.0..s.headers.1))
                            .unwrap_or_default(),
                    },
                )
            })
            .collect()
    }
}

/// A producer's block: who writes it and its number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockProducer {
    /// Producer id (1 to 255 bytes).
    pub id: String,
    /// The producer's epoch: a newer session of the producer has a higher
    /// one, and a store refuses blocks of older epochs once it saw a newer.
    pub epoch: u64,
    /// Block number, from 1.
    pub block: u64,
}

/// One block to append: its records by partition, written all or (after
/// a failure) partly, never twice for one producer block.
#[derive(Debug)]
pub struct Block {
    producer: Option<BlockProducer>,
    parts: Vec<(u32, Records)>,
}

impl Block {
    /// An empty block, with the producer block it is (if any).
    pub fn new(producer: Option<BlockProducer>) -> Result<Block> {
        if let Some(p) = &producer {
            if p.id.is_empty() || p.id.len() > MAX_PRODUCER_LEN {
                return Err(Error::Invalid(format!(
                    "producer: length must be 1 to {MAX_PRODUCER_LEN} bytes"
                )));
            }
            if p.block == 0 {
                return Err(Error::Invalid("block: producer blocks start at 1".into()));
            }
        }
        Ok(Block {
            producer,
            parts: Vec::new(),
        })
    }

    /// The records for `partition`, created on first use.
    pub fn records(&mut self, partition: u32) -> &mut Records {
        let at = match self.parts.binary_search_by_key(&partition, |p| p.0) {
            Ok(i) => i,
            Err(i) => {
                let producer = self.producer.as_ref().map(|p| (p.id.as_str(), p.block));
                // validated in `new`
                let r = Records::new(producer).unwrap_or_else(|_| unreachable!());
                self.parts.insert(i, (partition, r));
                i
            }
        };
        &mut self.parts[at].1
    }

    /// Parts by partition, increasing.
    pub fn parts(&self) -> &[(u32, Records)] {
        &self.parts
    }

    /// The producer block, if any.
    pub fn producer(&self) -> Option<&BlockProducer> {
        self.producer.as_ref()
    }

    /// Records in all parts.
    pub fn len(&self) -> u64 {
        self.parts.iter().map(|p| u64::from(p.1.len())).sum()
    }

    /// True when no record was pushed.
    pub fn is_empty(&self) -> bool {
        self.parts.iter().all(|p| p.1.is_empty())
    }

    /// Bytes held by the block's buffers.
    pub fn encoded_len(&self) -> usize {
        self.parts.iter().map(|p| p.1.encoded_len()).sum()
    }

    /// The producer block and the parts, taken apart (for adapters).
    pub fn into_parts(self) -> (Option<BlockProducer>, Vec<(u32, Records)>) {
        (self.producer, self.parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_iterate_as_pushed() {
        let mut b = Block::new(None).unwrap();
        b.records(3)
            .push(5, Some(b"k"), &[b"v", b"w"], [(&b"h"[..], &b"x"[..])]);
        b.records(1)
            .push_with(6, None, [], |buf| buf.extend_from_slice(b"filled"));
        assert_eq!(b.parts().iter().map(|p| p.0).collect::<Vec<_>>(), vec![1, 3]);
        let r: Vec<_> = b.records(3).iter().collect();
        assert_eq!(r[0].key, Some(&b"k"[..]));
        assert_eq!(r[0].value, b"vw");
        let h = Headers::from_encoded(Bytes::copy_from_slice(r[0].headers)).unwrap();
        assert_eq!(h.get(b"h"), Some(&b"x"[..]));
        assert_eq!(b.records(1).iter().next().unwrap().value, b"filled");
        assert_eq!(b.len(), 2);
        assert!(Block::new(Some(BlockProducer {
            id: String::new(),
            epoch: 0,
            block: 1
        }))
        .is_err());
    }
}
