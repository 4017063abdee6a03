//! One partition: a directory of segments with one writer and any number of
//! concurrent readers.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use event_listener::{Event, EventListener, Listener};
use parking_lot::{Mutex, RwLock};

use crate::config::{Durability, LogConfig, StreamSettings};
use crate::error::{Error, Result};
use crate::format::{compact, decode_records, BatchBuilder, BatchHeader, Record, HEADER_LEN};
use crate::producer::{self, ProducerState, Producers};
use crate::segment::{self, FileCache, Segment};

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The batch was appended.
    Appended(Appended),
    /// The batch's producer already has this block or a later one in this
    /// partition: nothing was written. Carries the producer's latest block.
    Duplicate(ProducerState),
}

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the first record.
    pub base_offset: u64,
    /// Offset of the last record.
    pub last_offset: u64,
    /// True if the batch was on disk when the append returned (always so
    /// with [`Durability::Always`]). Otherwise compare with
    /// [`Partition::durable_end`] or call [`Partition::sync`].
    pub durable: bool,
}

/// Records read from a partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadBatch {
    /// Consecutive records, first at the offset asked for.
    pub records: Vec<Record>,
    /// Where the next read should start.
    pub next_offset: u64,
}

/// The active segment's index lives in memory: it is written to its files
/// when the segment is sealed, and rebuilt by the scan that recovery runs
/// over the active segment anyway. So a partition holds one descriptor for
/// good (its active segment), whatever else it has.
struct Writer {
    active: Arc<Segment>,
    producers: Producers,
}

/// One partition of a stream. All methods take `&self`: appends are
/// serialized inside, reads run concurrently with them and with each other.
pub struct Partition {
    stream: String,
    id: u32,
    dir: PathBuf,
    cfg: Arc<LogConfig>,
    /// Read handles of sealed segments, shared with the log's other partitions.
    files: Arc<FileCache>,
    writer: Mutex<Writer>,
    segments: RwLock<Vec<Arc<Segment>>>,
    start: AtomicU64,
    written: AtomicU64,
    durable: AtomicU64,
    sync_lock: Mutex<()>,
    /// A fresh partition's first segment file is not yet durable in its
    /// directory: synced before the first append is acknowledged durable.
    dir_unsynced: AtomicBool,
    failed: AtomicBool,
    closed: AtomicBool,
    visible_event: Event,
    /// Fires when the durable end moves.
    durable_event: Event,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition")
            .field("stream", &self.stream)
            .field("id", &self.id)
            .field("start", &self.start_offset())
            .field("end", &self.end_offset())
            .finish_non_exhaustive()
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Partition {
    /// Opens a partition directory, running recovery (see the crate docs).
    pub(crate) fn open(
        stream: &str,
        id: u32,
        dir: PathBuf,
        cfg: Arc<LogConfig>,
        files: Arc<FileCache>,
    ) -> Result<Partition> {
        let mut bases = Vec::new();
        let mut others = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(Error::io("list", &dir))? {
            let e = e.map_err(Error::io("list", &dir))?;
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".tmp") {
                std::fs::remove_file(e.path()).map_err(Error::io("remove", e.path()))?;
            } else if let Some(b) = name.strip_suffix(".log").and_then(|s| s.parse::<u64>().ok()) {
                bases.push(b);
            } else if let Some((stem, _)) = name.split_once('.') {
                if let Ok(b) = stem.parse::<u64>() {
                    others.push((b, e.path()));
                }
            }
        }
        bases.sort_unstable();
        // index files left behind by a segment deletion that a crash cut short
        for (b, p) in others {
            let is_index = p.extension().is_some_and(|x| x == "index" || x == "timeindex");
            if is_index && bases.binary_search(&b).is_err() {
                std::fs::remove_file(&p).map_err(Error::io("remove", &p))?;
            }
        }
        let fresh = bases.is_empty();
        if fresh {
            Segment::create(&dir, 0, &files)?;
            bases.push(0);
        }
        let interval = cfg.index_interval_bytes;
        let mut segments = Vec::with_capacity(bases.len());
        for &b in &bases[..bases.len() - 1] {
            segments.push(Arc::new(Segment::open_sealed(&dir, b, interval, &files)?));
        }
        let last = bases[bases.len() - 1];
        // producer batches of the active segment, replayed over the snapshot below
        let mut active_batches: Vec<(String, ProducerState)> = Vec::new();
        let active = Segment::open_active(&dir, last, interval, &files, |h, batch| {
            if let Some(id) = h.producer_id(batch) {
                active_batches.push((id.to_string(), state_of(h)));
            }
        })?;
        segments.push(Arc::new(active));
        let start = segments[0].base;
        let end = segments[segments.len() - 1].next_offset();
        let producers = recover_producers(&dir, &segments, active_batches, start, end, &cfg)?;
        let active = segments[segments.len() - 1].clone();
        let writer = Writer { active, producers };
        Ok(Partition {
            stream: stream.to_string(),
            id,
            dir,
            cfg,
            files,
            writer: Mutex::new(writer),
            segments: RwLock::new(segments),
            start: AtomicU64::new(start),
            written: AtomicU64::new(end),
            // everything recovery kept was read back from disk
            durable: AtomicU64::new(end),
            sync_lock: Mutex::new(()),
            dir_unsynced: AtomicBool::new(fresh),
            failed: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            visible_event: Event::new(),
            durable_event: Event::new(),
        })
    }

    /// Partition number.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// First offset still held (moves forward with retention).
    pub fn start_offset(&self) -> u64 {
        self.start.load(Ordering::Acquire)
    }

    /// One past the last offset readers can see. With [`Durability::Always`]
    /// this is the durable end; otherwise every completed append counts.
    pub fn end_offset(&self) -> u64 {
        match self.cfg.durability {
            Durability::Always => self.durable.load(Ordering::Acquire),
            _ => self.written.load(Ordering::Acquire),
        }
    }

    /// One past the last offset known to be on disk.
    pub fn durable_end(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Bytes held in all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.read().iter().map(|s| s.size()).sum()
    }

    /// The latest block of `producer` in this partition, if known. It is on
    /// disk once `last_offset < durable_end()` (with [`Durability::Always`],
    /// as soon as the append that wrote it has returned). After a crash this
    /// is exactly the last block the recovered log holds.
    pub fn producer(&self, producer: &str) -> Option<ProducerState> {
        self.writer.lock().producers.get(producer).copied()
    }

    fn check_usable(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if self.failed.load(Ordering::Acquire) {
            return Err(Error::Failed {
                stream: self.stream.clone(),
                partition: self.id,
            });
        }
        Ok(())
    }

    fn fail<T>(&self, e: Error) -> Result<T> {
        tracing::error!(stream = %self.stream, partition = self.id, error = %e, "partition failed");
        self.failed.store(true, Ordering::Release);
        Err(e)
    }

    /// Appends a batch, assigning it consecutive offsets. With a producer on
    /// the batch, appends only if its block is above the producer's latest
    /// block here (atomically with the write). With [`Durability::Always`]
    /// returns once the batch is on disk, sharing the `fdatasync` with
    /// concurrent appends. The builder keeps its contents; reuse it with
    /// [`BatchBuilder::reset`].
    pub fn append(&self, batch: &mut BatchBuilder) -> Result<AppendOutcome> {
        if batch.is_empty() {
            return Err(Error::EmptyBatch);
        }
        let size = batch.encoded_len() as u64;
        if size > self.cfg.max_batch_bytes {
            return Err(Error::BatchTooLarge {
                size,
                max: self.cfg.max_batch_bytes,
            });
        }
        let crc = batch.body_crc();
        let mut w = self.writer.lock();
        self.check_usable()?;
        if let Some((id, block)) = batch.producer() {
            if let Some(s) = w.producers.get(id).filter(|s| s.last_block >= block).copied() {
                drop(w);
                if self.cfg.durability == Durability::Always {
                    self.sync_through(s.last_offset + 1)?;
                }
                return Ok(AppendOutcome::Duplicate(s));
            }
        }
        let base = self.written.load(Ordering::Acquire);
        let count = batch.record_count() as u64;
        let active_size = w.active.size();
        let span = base + count - w.active.base;
        if active_size > 0 && (active_size + size > self.cfg.segment_bytes || span > u32::MAX as u64) {
            self.roll(&mut w)?;
        }
        let active = w.active.clone();
        let pos = active.size();
        let append_time = now_ms();
        let (h, bytes) = batch.seal(base, append_time, crc);
        let file = active.file()?;
        if let Err(e) = file.write_all_at(bytes, pos) {
            // take back whatever part of the batch reached the file
            let err = Error::io("write", &active.path)(e);
            if file.set_len(pos).is_err() {
                return self.fail(err);
            }
            return Err(err);
        }
        active
            .index
            .write()
            .on_batch(&h, pos, self.cfg.index_interval_bytes);
        let next = base + count;
        if let Some((id, block)) = batch.producer() {
            let state = ProducerState {
                last_block: block,
                first_offset: base,
                last_offset: next - 1,
                last_seen_ms: append_time,
                block_parts: h.block_parts,
            };
            match w.producers.get_mut(id) {
                Some(s) => *s = state,
                None => {
                    w.producers.insert(id.to_string(), state);
                }
            }
        }
        active.set_size(pos + size);
        self.written.store(next, Ordering::Release);
        drop(w);
        let durable = match self.cfg.durability {
            Durability::Always => {
                self.sync_through(next)?;
                true
            }
            _ => {
                self.visible_event.notify(usize::MAX);
                false
            }
        };
        Ok(AppendOutcome::Appended(Appended {
            base_offset: base,
            last_offset: next - 1,
            durable,
        }))
    }

    /// Makes every offset below `target` durable. Callers that arrive while
    /// another one syncs wait for it, and usually find their data covered:
    /// that is the group commit.
    fn sync_through(&self, target: u64) -> Result<()> {
        if self.durable_end() >= target {
            return Ok(());
        }
        let _g = self.sync_lock.lock();
        if self.durable_end() >= target {
            return Ok(());
        }
        self.check_usable()?;
        let (seg, end) = {
            let w = self.writer.lock();
            (w.active.clone(), self.written.load(Ordering::Acquire))
        };
        if self.dir_unsynced.swap(false, Ordering::AcqRel) {
            if let Err(e) = crate::fsync_dir(&self.dir) {
                return self.fail(e);
            }
        }
        // Offsets below `end` are in `seg` or in sealed segments, which were
        // synced when sealed.
        let started = Instant::now();
        let len = seg.size();
        let file = match seg.file() {
            Ok(f) => f,
            Err(e) => return self.fail(e),
        };
        if let Err(e) = file.sync_data() {
            return self.fail(Error::io("fsync", &seg.path)(e));
        }
        crate::sync_probe::synced(&seg.path, len);
        metrics::histogram!("switchboard_log_fsync_seconds").record(started.elapsed().as_secs_f64());
        self.mark_durable(end);
        Ok(())
    }

    fn mark_durable(&self, end: u64) {
        self.durable.fetch_max(end, Ordering::AcqRel);
        if self.cfg.durability == Durability::Always {
            self.visible_event.notify(usize::MAX);
        }
        self.durable_event.notify(usize::MAX);
    }

    /// A listener that fires when the durable end moves. For async callers:
    /// take a listener, check [`Partition::durable_end`], then await it.
    pub fn listen_durable(&self) -> EventListener {
        self.durable_event.listen()
    }

    /// Forces every appended batch to disk.
    pub fn sync(&self) -> Result<()> {
        self.sync_through(self.written.load(Ordering::Acquire))
    }

    /// True if some appended batch is not yet known durable.
    pub(crate) fn is_dirty(&self) -> bool {
        self.written.load(Ordering::Acquire) > self.durable_end()
    }

    /// Seals the active segment and starts a new one at the next offset.
    /// Order matters for recovery: the sealed data and its index are synced
    /// and the producer snapshot written before the new segment exists.
    fn roll(&self, w: &mut Writer) -> Result<()> {
        let old = w.active.clone();
        let next = self.written.load(Ordering::Acquire);
        let started = Instant::now();
        let len = old.size();
        let file = match old.file() {
            Ok(f) => f,
            Err(e) => return self.fail(e),
        };
        if let Err(e) = file.sync_data() {
            return self.fail(Error::io("fsync", &old.path)(e));
        }
        crate::sync_probe::synced(&old.path, len);
        metrics::histogram!("switchboard_log_fsync_seconds").record(started.elapsed().as_secs_f64());
        self.mark_durable(next);
        segment::write_index_files(&self.dir, &old.index.read(), true)?;
        producer::expire(&mut w.producers, now_ms(), &self.cfg);
        producer::write_snapshot(&self.dir, next, &w.producers, next)?;
        let seg = Segment::create(&self.dir, next, &self.files)?;
        crate::fsync_dir(&self.dir)?;
        self.dir_unsynced.store(false, Ordering::Release);
        let seg = Arc::new(seg);
        self.segments.write().push(seg.clone());
        w.active = seg;
        // the sealed segment's handle goes: its reads use the log's cache
        old.seal();
        Ok(())
    }

    /// Reads records from `offset` on: at most `max_records`, and at most
    /// `max_bytes` of encoded records except that the first record is always
    /// returned whole. An offset equal to the end gives an empty batch; one
    /// below the start or above the end is [`Error::OffsetOutOfRange`].
    /// Every batch is checked against its CRC before any record of it is
    /// returned.
    pub fn read(&self, offset: u64, max_records: usize, max_bytes: usize) -> Result<ReadBatch> {
        self.check_open()?;
        let start = self.start_offset();
        let end = self.end_offset();
        if offset < start || offset > end {
            return Err(Error::OffsetOutOfRange {
                requested: offset,
                start,
                end,
            });
        }
        let mut out = Vec::new();
        let mut budget = (max_records, max_bytes);
        let mut want = offset;
        if want == end || max_records == 0 {
            return Ok(ReadBatch {
                records: out,
                next_offset: want,
            });
        }
        out.reserve(max_records.min(1024));
        let mut seg = self.segment_for(want)?;
        let mut pos = seg.index.read().position_for(want);
        let mut read = 0usize;
        // slack: the index may place us up to one interval before `want`
        let slack = (self.cfg.index_interval_bytes as usize + HEADER_LEN).max(64 << 10);
        'read: while want < end && budget.0 > 0 && (budget.1 > 0 || out.is_empty()) {
            let size = seg.size();
            if pos >= size {
                let Some(next) = self.segment_after(seg.base) else {
                    break;
                };
                if next.base != want {
                    let (at, why) = seg
                        .damage
                        .clone()
                        .unwrap_or((size, format!("offsets {} to {} are missing", want, next.base)));
                    return Err(Error::corrupt(&seg.path, at, why));
                }
                seg = next;
                pos = 0;
                continue;
            }
            let chunk = (size - pos).min((budget.1.saturating_add(slack)) as u64) as usize;
            let mut buf = seg.read_exact(pos, chunk)?;
            read += chunk;
            let mut p = 0usize;
            while buf.len() - p >= HEADER_LEN {
                let at = pos + p as u64;
                let h = BatchHeader::parse(&buf[p..]).map_err(|why| Error::corrupt(&seg.path, at, why))?;
                if h.len as u64 > size - at {
                    return Err(Error::corrupt(
                        &seg.path,
                        at,
                        "batch runs past the end of the segment",
                    ));
                }
                if h.len as usize > buf.len() - p {
                    if p > 0 {
                        break;
                    }
                    // one batch larger than the chunk: read exactly that batch
                    buf = seg.read_exact(at, h.len as usize)?;
                    read += h.len as usize;
                }
                let batch = buf.slice(p..p + h.len as usize);
                if !h.verify_crc(&batch) {
                    return Err(Error::corrupt(&seg.path, at, "batch checksum mismatch"));
                }
                if h.base_offset > want {
                    return Err(Error::corrupt(
                        &seg.path,
                        at,
                        format!("expected offset {want}, found {}", h.base_offset),
                    ));
                }
                if h.base_offset >= end {
                    break 'read;
                }
                p += h.len as usize;
                if h.next_offset() <= want {
                    continue;
                }
                let before = out.len();
                decode_records(&h, &batch, want, &mut out, &mut budget)
                    .map_err(|why| Error::corrupt(&seg.path, at, why))?;
                if out.len() > before {
                    want = out[out.len() - 1].offset + 1;
                }
                if want < h.next_offset() || budget.0 == 0 || budget.1 == 0 {
                    break 'read;
                }
            }
            if p == 0 {
                return Err(Error::corrupt(&seg.path, pos, "torn batch"));
            }
            pos += p as u64;
        }
        // records slice the chunks read: when much of what was read goes
        // unused, they get a buffer of their own, so that a reader holding
        // them holds what it asked for, not up to twice as much
        let used: usize = out.iter().map(Record::encoded_len).sum();
        if read - used.min(read) > used / 4 + (16 << 10) {
            compact(&mut out);
        }
        Ok(ReadBatch {
            records: out,
            next_offset: want,
        })
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    fn segment_for(&self, offset: u64) -> Result<Arc<Segment>> {
        let segs = self.segments.read();
        let i = segs.partition_point(|s| s.base <= offset);
        if i == 0 {
            return Err(Error::OffsetOutOfRange {
                requested: offset,
                start: self.start_offset(),
                end: self.end_offset(),
            });
        }
        Ok(segs[i - 1].clone())
    }

    fn segment_after(&self, base: u64) -> Option<Arc<Segment>> {
        let segs = self.segments.read();
        let i = segs.partition_point(|s| s.base <= base);
        segs.get(i).cloned()
    }

    /// Blocks until a record at `offset` is readable or `timeout` passes;
    /// true if it is readable. No polling: woken by appends (or syncs).
    pub fn wait_for(&self, offset: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.end_offset() > offset || self.closed.load(Ordering::Acquire) {
                return self.end_offset() > offset;
            }
            let l = self.visible_event.listen();
            if self.end_offset() > offset {
                return true;
            }
            if l.wait_deadline(deadline).is_none() {
                return self.end_offset() > offset;
            }
        }
    }

    /// A listener that fires when the readable end moves. For async callers:
    /// take a listener, check [`Partition::end_offset`], then await it.
    pub fn listen(&self) -> EventListener {
        self.visible_event.listen()
    }

    /// The first offset whose record timestamp is at or after `ts`, or the
    /// end offset if there is none.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<u64> {
        let candidate = {
            let segs = self.segments.read();
            segs.iter()
                .find(|s| s.index.read().max_timestamp >= ts)
                .map(|s| s.index.read().offset_for_time(ts))
        };
        let end = self.end_offset();
        let Some(mut at) = candidate else { return Ok(end) };
        at = at.max(self.start_offset());
        while at < end {
            let batch = self.read(at, 1000, 1 << 20)?;
            if let Some(r) = batch.records.iter().find(|r| r.timestamp_ms >= ts) {
                return Ok(r.offset);
            }
            if batch.records.is_empty() {
                break;
            }
            at = batch.next_offset;
        }
        Ok(end)
    }

    /// Deletes whole sealed segments past the stream's retention; by age, the
    /// active segment is sealed first when all of it has expired. Returns the
    /// number of segments deleted.
    pub(crate) fn apply_retention(&self, settings: &StreamSettings, now: i64) -> Result<usize> {
        if settings.retention_ms.is_none() && settings.retention_bytes.is_none() {
            return Ok(0);
        }
        let mut w = self.writer.lock();
        self.check_usable()?;
        let mut by_age = 0;
        if let Some(ms) = settings.retention_ms {
            let cutoff = now.saturating_sub(ms as i64);
            let expired = |s: &Segment| s.size() > 0 && s.index.read().max_timestamp < cutoff;
            let segs = self.segments.read().clone();
            by_age = segs.iter().take_while(|s| expired(s)).count();
            if by_age == segs.len() {
                self.roll(&mut w)?;
            }
        }
        let segs = self.segments.read().clone();
        let mut by_size = 0;
        if let Some(limit) = settings.retention_bytes {
            let mut total: u64 = segs.iter().map(|s| s.size()).sum();
            for s in &segs[..segs.len() - 1] {
                if total - s.size() < limit {
                    break;
                }
                total -= s.size();
                by_size += 1;
            }
        }
        let n = by_age.max(by_size).min(segs.len() - 1);
        if n == 0 {
            return Ok(0);
        }
        // Readers learn the new start before files go, so a read below it is
        // an out-of-range error, never a missing file.
        self.start.store(segs[n].base, Ordering::Release);
        self.segments.write().drain(..n);
        drop(w);
        for s in &segs[..n] {
            for p in [
                s.path.clone(),
                segment::index_path(&self.dir, s.base),
                segment::time_index_path(&self.dir, s.base),
            ] {
                match std::fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("remove", &p)(e)),
                }
            }
        }
        tracing::debug!(stream = %self.stream, partition = self.id, segments = n, start = segs[n].base, "retention deleted segments");
        Ok(n)
    }

    /// Syncs, checkpoints producer state, and refuses further calls.
    pub(crate) fn close(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        let res = if self.failed.load(Ordering::Acquire) {
            Ok(())
        } else {
            self.sync().and_then(|()| {
                let mut w = self.writer.lock();
                if w.producers.is_empty() {
                    return Ok(());
                }
                producer::expire(&mut w.producers, now_ms(), &self.cfg);
                let end = self.written.load(Ordering::Acquire);
                producer::write_snapshot(&self.dir, end, &w.producers, w.active.base)
            })
        };
        self.closed.store(true, Ordering::Release);
        self.visible_event.notify(usize::MAX);
        res
    }

    /// Marks the partition deleted: every later call fails with [`Error::Closed`].
    pub(crate) fn mark_deleted(&self) {
        self.closed.store(true, Ordering::Release);
        self.visible_event.notify(usize::MAX);
    }
}

fn state_of(h: &BatchHeader) -> ProducerState {
    ProducerState {
        last_block: h.block,
        first_offset: h.base_offset,
        last_offset: h.next_offset() - 1,
        last_seen_ms: h.append_time_ms,
        block_parts: h.block_parts,
    }
}

/// Rebuilds producer state: the newest snapshot that is not ahead of the
/// recovered log, then every producer batch after it.
fn recover_producers(
    dir: &Path,
    segments: &[Arc<Segment>],
    active_batches: Vec<(String, ProducerState)>,
    start: u64,
    end: u64,
    cfg: &LogConfig,
) -> Result<Producers> {
    let mut from = start;
    let mut producers = Producers::new();
    for (off, path) in producer::list_snapshots(dir)? {
        if off > end {
            // The log lost its tail since (torn write, `never` durability):
            // this snapshot describes batches that are gone, and offsets it
            // names will be reused, so it must never be read again.
            tracing::warn!(snapshot = %path.display(), end, "producer snapshot is ahead of the log; removed");
            std::fs::remove_file(&path).map_err(Error::io("remove", &path))?;
            continue;
        }
        let decoded = std::fs::read(&path)
            .ok()
            .and_then(|b| producer::decode_snapshot(&b));
        match decoded {
            Some((o, p)) if o == off => {
                producers = p;
                from = off.max(start);
                break;
            }
            _ => tracing::warn!(snapshot = %path.display(), "producer snapshot is damaged; ignored"),
        }
    }
    let mut apply = |id: &str, s: ProducerState| {
        if s.first_offset >= from {
            match producers.get_mut(id) {
                Some(p) if p.last_block < s.last_block => *p = s,
                Some(_) => {}
                None => {
                    producers.insert(id.to_string(), s);
                }
            }
        }
    };
    // sealed segments after the snapshot (only when a roll's snapshot was lost)
    let last = segments.len() - 1;
    for seg in &segments[..last] {
        if seg.next_offset() <= from {
            continue;
        }
        let len = seg.size();
        segment::scan(&*seg.file()?, &seg.path, seg.base, len, |h, _, batch| {
            if let Some(id) = h.producer_id(batch) {
                apply(id, state_of(h));
            }
        })?;
    }
    for (id, s) in active_batches {
        apply(&id, s);
    }
    producer::expire(&mut producers, now_ms(), cfg);
    Ok(producers)
}
