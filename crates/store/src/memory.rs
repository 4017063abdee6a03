//! `memory://`: a store that keeps everything in this process's memory,
//! with the embedded log's semantics (producer blocks stored once, atomic
//! blocks, retention by age and size, waits for new records). For tests,
//! demos and trying the API without a disk; nothing survives a restart,
//! and memory is bounded only by each stream's retention.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use switchboard_proto::time::now_ms;
use tokio::sync::Notify;

use crate::{
    Appended, Block, Error, Fencing, Fetched, Gap, PartRange, Record, Result, Store, StoreReader,
    StreamSettings, StreamState,
};

struct Partition {
    /// Offset of `records[0]` (the first held).
    start: u64,
    records: VecDeque<Record>,
    bytes: u64,
}

impl Partition {
    fn end(&self) -> u64 {
        self.start + self.records.len() as u64
    }

    fn apply_retention(&mut self, s: &StreamSettings, now_ms: i64) {
        while let Some(front) = self.records.front() {
            let too_big = s.retention_bytes.is_some_and(|max| self.bytes > max);
            let too_old = s
                .retention_ms
                .is_some_and(|ms| now_ms.saturating_sub(front.timestamp_ms) > ms.min(i64::MAX as u64) as i64);
            // like the log, keep at least the newest record
            if !(too_big || too_old) || self.records.len() == 1 {
                break;
            }
            self.bytes -= front.payload_len() as u64;
            self.records.pop_front();
            self.start += 1;
        }
    }
}

struct ProducerState {
    last_block: u64,
    epoch: u64,
    ranges: Vec<PartRange>,
}

struct Stream {
    name: String,
    settings: StreamSettings,
    incarnation: u64,
    /// One lock for the stream: a block is appended atomically.
    state: Mutex<StreamData>,
    appended: Notify,
}

struct StreamData {
    partitions: Vec<Partition>,
    producers: HashMap<String, ProducerState>,
}

/// [`Store`] in memory.
pub struct MemoryStore {
    streams: RwLock<BTreeMap<String, Arc<Stream>>>,
    closed: std::sync::atomic::AtomicBool,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore {
            streams: RwLock::new(BTreeMap::new()),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn stream(&self, name: &str) -> Result<Arc<Stream>> {
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(Error::Unavailable("store is closed".into()));
        }
        self.streams
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NotFound(name.to_string()))
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn create_stream(&self, name: &str, settings: StreamSettings) -> Result<bool> {
        crate::check_stream(name, &settings)?;
        let mut streams = self.streams.write();
        if let Some(s) = streams.get(name) {
            return if s.settings == settings {
                Ok(false)
            } else {
                Err(Error::Conflict(name.to_string()))
            };
        }
        let partitions = (0..settings.partitions)
            .map(|_| Partition {
                start: 0,
                records: VecDeque::new(),
                bytes: 0,
            })
            .collect();
        streams.insert(
            name.to_string(),
            Arc::new(Stream {
                name: name.to_string(),
                settings,
                incarnation: rand::random::<u64>() | 1,
                state: Mutex::new(StreamData {
                    partitions,
                    producers: HashMap::new(),
                }),
                appended: Notify::new(),
            }),
        );
        Ok(true)
    }

    async fn delete_stream(&self, name: &str) -> Result<()> {
        let s = self
            .streams
            .write()
            .remove(name)
            .ok_or_else(|| Error::NotFound(name.to_string()))?;
        s.appended.notify_waiters();
        Ok(())
    }

    async fn list_streams(&self) -> Result<Vec<(String, StreamSettings)>> {
        Ok(self
            .streams
            .read()
            .values()
            .map(|s| (s.name.clone(), s.settings))
            .collect())
    }

    async fn stream_settings(&self, name: &str) -> Result<StreamSettings> {
        Ok(self.stream(name)?.settings)
    }

    async fn describe_stream(&self, name: &str) -> Result<StreamState> {
        let s = self.stream(name)?;
        let mut d = s.state.lock();
        let now = now_ms();
        for p in &mut d.partitions {
            p.apply_retention(&s.settings, now);
        }
        Ok(StreamState {
            name: s.name.clone(),
            settings: s.settings,
            incarnation: s.incarnation,
            start_offsets: d.partitions.iter().map(|p| p.start).collect(),
            end_offsets: d.partitions.iter().map(Partition::end).collect(),
        })
    }

    async fn append(&self, stream: &str, block: Block) -> Result<Appended> {
        let s = self.stream(stream)?;
        let (producer, parts) = block.into_parts();
        if let Some(&(p, _)) = parts.iter().find(|(p, _)| *p >= s.settings.partitions) {
            return Err(Error::Invalid(format!("stream {stream:?} has no partition {p}")));
        }
        let mut d = s.state.lock();
        if let Some(pb) = &producer {
            if let Some(st) = d.producers.get(&pb.id) {
                if pb.epoch < st.epoch {
                    return Ok(Appended::Fenced { epoch: st.epoch });
                }
                if pb.block <= st.last_block {
                    return Ok(Appended::Duplicate {
                        last_block: st.last_block,
                        ranges: (pb.block == st.last_block).then(|| st.ranges.clone()),
                    });
                }
            }
        }
        let now = now_ms();
        let mut ranges = Vec::with_capacity(parts.len());
        for (partition, records) in parts {
            if records.is_empty() {
                continue;
            }
            // one buffer per part, records sliced out of it
            let p = &mut d.partitions[partition as usize];
            let first = p.end();
            let recs = records.into_records(first);
            let at = first + recs.len() as u64;
            for rec in recs {
                p.bytes += rec.payload_len() as u64;
                p.records.push_back(rec);
            }
            ranges.push(PartRange {
                partition,
                first,
                last: at - 1,
            });
            p.apply_retention(&s.settings, now);
        }
        if let Some(pb) = producer {
            d.producers.insert(
                pb.id,
                ProducerState {
                    last_block: pb.block,
                    epoch: pb.epoch,
                    ranges: ranges.clone(),
                },
            );
        }
        drop(d);
        s.appended.notify_waiters();
        Ok(Appended::Stored(ranges))
    }

    async fn last_block(&self, stream: &str, producer: &str) -> Result<u64> {
        let s = self.stream(stream)?;
        let d = s.state.lock();
        Ok(d.producers.get(producer).map_or(0, |p| p.last_block))
    }

    async fn fence_producer(&self, stream: &str, producer: &str) -> Result<Fencing> {
        let s = self.stream(stream)?;
        // appends take the same lock: none is under way
        let mut d = s.state.lock();
        let st = d.producers.entry(producer.to_string()).or_insert(ProducerState {
            last_block: 0,
            epoch: 0,
            ranges: Vec::new(),
        });
        st.epoch += 1;
        Ok(Fencing {
            epoch: st.epoch,
            last_block: st.last_block,
        })
    }

    async fn offsets_for_time(&self, stream: &str, timestamp_ms: i64) -> Result<Vec<u64>> {
        let s = self.stream(stream)?;
        let d = s.state.lock();
        Ok(d.partitions
            .iter()
            .map(|p| {
                p.records
                    .iter()
                    .find(|r| r.timestamp_ms >= timestamp_ms)
                    .map_or(p.end(), |r| r.offset)
            })
            .collect())
    }

    async fn open_reader(&self, stream: &str, positions: &[(u32, u64)]) -> Result<Box<dyn StoreReader>> {
        let s = self.stream(stream)?;
        if let Some(&(p, _)) = positions.iter().find(|(p, _)| *p >= s.settings.partitions) {
            return Err(Error::Invalid(format!("stream {stream:?} has no partition {p}")));
        }
        Ok(Box::new(MemoryReader {
            stream: s,
            positions: positions.to_vec(),
            rr: 0,
        }))
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }
}

struct MemoryReader {
    stream: Arc<Stream>,
    positions: Vec<(u32, u64)>,
    rr: usize,
}

impl MemoryReader {
    fn take(&mut self, max_records: usize, max_bytes: usize) -> Fetched {
        let mut out = Fetched::default();
        let mut d = self.stream.state.lock();
        let now = now_ms();
        let n = self.positions.len();
        let mut room = max_bytes;
        for k in 0..n {
            let i = (self.rr + k) % n;
            if out.records.len() >= max_records || (room == 0 && !out.records.is_empty()) {
                break;
            }
            let (partition, at) = &mut self.positions[i];
            let p = &mut d.partitions[*partition as usize];
            p.apply_retention(&self.stream.settings, now);
            if *at < p.start {
                out.gaps.push(Gap {
                    partition: *partition,
                    from: *at,
                    to: p.start,
                });
                *at = p.start;
            }
            while *at < p.end() && out.records.len() < max_records {
                let r = &p.records[(*at - p.start) as usize];
                let len = r.payload_len() + 24;
                if len > room && !out.records.is_empty() {
                    break;
                }
                room = room.saturating_sub(len);
                out.records.push((*partition, r.clone()));
                *at += 1;
            }
        }
        self.rr = self.rr.wrapping_add(1);
        out
    }
}

#[async_trait]
impl StoreReader for MemoryReader {
    async fn fetch(&mut self, max_records: usize, max_bytes: usize, wait: Duration) -> Result<Fetched> {
        let deadline = tokio::time::Instant::now() + wait;
        let stream = self.stream.clone();
        loop {
            let notified = stream.appended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let f = self.take(max_records, max_bytes);
            if !f.records.is_empty() || !f.gaps.is_empty() {
                return Ok(f);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Fetched::default());
            }
        }
    }

    fn positions(&self) -> Vec<(u32, u64)> {
        self.positions.clone()
    }
}
