//! The embedded store: `switchboard-log` on local disk, one process, no
//! services. Blocking log calls run on tokio's blocking pool; waits for new
//! data use the log's async listeners.
//!
//! How a block maps onto the log: each part is one log batch carrying the
//! producer id, the block number and how many partitions the block spans.
//! The log refuses a batch whose producer already has that block in that
//! partition (atomically with the write), so a replayed block stores only
//! the parts that were missing. Blocks of one producer are appended one at
//! a time, each durable in full before the next is written, so only its
//! newest block can be partial; counting the partitions that hold it
//! against its span tells whether it is complete. One exception keeps that
//! true: under `interval` and `never`, a producer's consecutive blocks to
//! one and the same partition may be written before the earlier ones are
//! durable ([`Store::submit`]), as a partition's durable records are a
//! prefix of what was written to it.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::RwLock;
use switchboard_log::{AppendOutcome, Durability, Log, LogConfig, Partition, ProducerState};

use crate::{
    Appended, Block, Error, Fencing, Fetched, Gap, Headers, PartRange, Record, Result, Store, StoreReader,
    StreamSettings, StreamState,
};

/// Attempts at appending one part before the append fails.
const APPEND_ATTEMPTS: u32 = 5;
/// Most bytes one partition read takes at a time.
const READ_CHUNK: usize = 1 << 20;

/// [`Store`] over the embedded segmented log.
pub struct EmbeddedStore {
    log: RwLock<Option<Arc<Log>>>,
    /// Producers' epochs, by (stream, producer). An append holds its
    /// producer's lock for reading while it checks the epoch and runs; a
    /// fence holds it for writing, so it waits for the appends under way
    /// and none of an older epoch starts after it. (They live in memory: a
    /// session never outlives the process that holds the log, which no
    /// other process can open meanwhile.) Only producers that were fenced
    /// have one, and one idle for longer than the log keeps producer state
    /// goes (see [`EmbeddedStore::forget_idle_epochs`]).
    epochs: parking_lot::Mutex<Epochs>,
}

/// Producers' epochs, and the size at which to look for idle ones next.
#[derive(Default)]
struct Epochs {
    by_producer: HashMap<(String, String), Arc<Epoch>>,
    prune_at: usize,
}

/// A producer's epoch, held for reading by its appends, and when it was
/// last used.
#[derive(Default)]
struct Epoch {
    lock: Arc<tokio::sync::RwLock<u64>>,
    used_ms: std::sync::atomic::AtomicI64,
    /// Blocks written and not yet durable ([`Store::submit`]).
    unsynced: parking_lot::Mutex<Unsynced>,
    /// Signalled when `unsynced` empties.
    synced: tokio::sync::Notify,
}

/// A producer's blocks written and not yet durable: how many, and the one
/// partition they all went to (`None` while a block of several parts is
/// among them: nothing may join that).
#[derive(Default)]
struct Unsynced {
    blocks: usize,
    partition: Option<u32>,
    /// A block failed: later ones written after it would leave a hole
    /// before them, so none is, until a fence (a new session replays).
    poisoned: bool,
}

/// Counts a written block as not yet durable until dropped.
struct UnsyncedGuard(Arc<Epoch>);

impl Drop for UnsyncedGuard {
    fn drop(&mut self) {
        let mut u = self.0.unsynced.lock();
        u.blocks = u.blocks.saturating_sub(1);
        if u.blocks == 0 {
            u.partition = None;
            drop(u);
            self.0.synced.notify_waiters();
        }
    }
}

/// A part's partition, and what became of its write with the offset below
/// which it must be durable.
type WrittenPart = (Arc<Partition>, Result<(PartOutcome, u64)>);

/// A block's parts as written, not yet known durable.
struct Written {
    parts: Vec<WrittenPart>,
    durability: Durability,
    block_no: u64,
}

impl Written {
    /// Waits until every part is durable and says what became of the block.
    async fn finish(self) -> Result<Appended> {
        let d = self.durability;
        let synced = self.parts.into_iter().map(|(p, r)| async move {
            let (outcome, through) = r?;
            make_durable(&p, through, d).await?;
            Ok(outcome)
        });
        let outcomes = futures::future::join_all(synced).await;
        combine(outcomes, self.block_no)
    }
}

impl Epoch {
    /// A block failed: none of the producer's later blocks is written
    /// until a fence.
    fn poison(&self) {
        self.unsynced.lock().poisoned = true;
    }

    fn touch(&self) {
        self.used_ms.store(
            switchboard_proto::time::now_ms(),
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the log under `root`. Blocks: call before serving
    /// or from a blocking context.
    pub fn open(root: impl AsRef<Path>, cfg: LogConfig) -> Result<EmbeddedStore> {
        let log = Log::open(root, cfg)?;
        Ok(EmbeddedStore {
            log: RwLock::new(Some(Arc::new(log))),
            epochs: parking_lot::Mutex::new(Epochs::default()),
        })
    }

    /// Producers whose epoch this store holds (the fenced ones, until idle
    /// for longer than the log keeps producer state).
    pub fn fenced_producers(&self) -> usize {
        self.epochs.lock().by_producer.len()
    }

    /// Per partition of `stream`, one past the last offset on stable
    /// storage (what a crash cannot take back).
    pub fn durable_end_offsets(&self, stream: &str) -> Result<Vec<u64>> {
        let s = self.log()?.stream(stream)?;
        Ok(s.partitions().iter().map(|p| p.durable_end()).collect())
    }

    /// The producer's epoch, if it was ever fenced (marked used).
    fn find_epoch(&self, stream: &str, producer: &str) -> Option<Arc<Epoch>> {
        let key = (stream.to_string(), producer.to_string());
        let epoch = self.epochs.lock().by_producer.get(&key).cloned()?;
        epoch.touch();
        Some(epoch)
    }

    /// The producer's epoch, made (at 0) if it has none (marked used).
    fn make_epoch(&self, stream: &str, producer: &str) -> Arc<Epoch> {
        let key = (stream.to_string(), producer.to_string());
        let epoch = self.epochs.lock().by_producer.entry(key).or_default().clone();
        epoch.touch();
        epoch
    }

    /// Forgets the epochs of producers nobody holds that were idle for
    /// longer than the log keeps producer state (by then no session of
    /// theirs is alive: leases are far shorter), looking each time the map
    /// has doubled since the last look.
    fn forget_idle_epochs(&self, idle_ms: u64) {
        let mut e = self.epochs.lock();
        if e.by_producer.len() < e.prune_at {
            return;
        }
        let cutoff = switchboard_proto::time::now_ms().saturating_sub(idle_ms.min(i64::MAX as u64) as i64);
        e.by_producer.retain(|_, x| {
            Arc::strong_count(x) > 1 || x.used_ms.load(std::sync::atomic::Ordering::Relaxed) >= cutoff
        });
        e.prune_at = (e.by_producer.len() * 2).max(1024);
    }

    /// Appends a block's parts, each to its partition, at once.
    async fn append_parts(&self, stream: &str, block: Block) -> Result<Appended> {
        self.write_parts(stream, block).await?.finish().await
    }

    /// Writes a block's parts, each to its partition, at once; making them
    /// durable is left to [`Written::finish`].
    async fn write_parts(&self, stream: &str, block: Block) -> Result<Written> {
        let log = self.log()?;
        let durability = log.config().durability;
        let s = log.stream(stream)?;
        let (producer, parts) = block.into_parts();
        let span = parts.len() as u32;
        let mut writes = Vec::with_capacity(parts.len());
        for (partition, records) in parts {
            let p = s.partition(partition)?.clone();
            let mut batch = records.into_batch();
            batch.set_block_parts(span);
            writes.push(async move {
                let r = write_part(p.clone(), batch, stream).await;
                (p, r)
            });
        }
        Ok(Written {
            parts: futures::future::join_all(writes).await,
            durability,
            block_no: producer.as_ref().map_or(0, |p| p.block),
        })
    }

    fn log(&self) -> Result<Arc<Log>> {
        self.log
            .read()
            .clone()
            .ok_or_else(|| Error::Unavailable("store is closed".into()))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Log) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let log = self.log()?;
        tokio::task::spawn_blocking(move || f(&log))
            .await
            .map_err(|e| Error::Unavailable(format!("store task failed: {e}")))?
    }
}

fn settings_of(s: &switchboard_log::StreamSettings) -> StreamSettings {
    StreamSettings {
        partitions: s.partitions,
        retention_ms: s.retention_ms,
        retention_bytes: s.retention_bytes,
        encrypt_keys: s.encrypt_keys,
    }
}

fn record_of(r: switchboard_log::Record) -> Record {
    Record {
        offset: r.offset,
        timestamp_ms: r.timestamp_ms,
        key: r.key,
        value: r.value,
        // the log validated them, and encodes them as the store does
        headers: Headers::from_log(r.headers),
    }
}

/// One part's outcome.
enum PartOutcome {
    Stored(PartRange),
    Duplicate(u32, ProducerState),
}

/// What became of a block, from what became of its parts.
fn combine(outcomes: Vec<Result<PartOutcome>>, block_no: u64) -> Result<Appended> {
    let mut ranges = Vec::with_capacity(outcomes.len());
    let (mut stored, mut newest_dup) = (false, None::<u64>);
    let mut first_err = None;
    for o in outcomes {
        match o {
            Ok(PartOutcome::Stored(r)) => {
                stored = true;
                ranges.push(r);
            }
            Ok(PartOutcome::Duplicate(partition, st)) => {
                newest_dup = Some(newest_dup.unwrap_or(0).max(st.last_block));
                if st.last_block == block_no {
                    ranges.push(PartRange {
                        partition,
                        first: st.first_offset,
                        last: st.last_offset,
                    });
                }
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    ranges.sort_by_key(|r| r.partition);
    Ok(match newest_dup {
        Some(last_block) if !stored => Appended::Duplicate {
            last_block,
            ranges: (last_block == block_no).then_some(ranges),
        },
        _ => Appended::Stored(ranges),
    })
}

/// Returns once every offset below `through` is on stable storage: at once
/// with `fsync = always`; under `interval` after the background sync (or a
/// forced one if it is late); under `never` after a forced sync. An append
/// is never answered before its records are durable, whatever the policy.
async fn make_durable(p: &Arc<Partition>, through: u64, durability: Durability) -> Result<()> {
    if p.durable_end() >= through {
        return Ok(());
    }
    if let Durability::Interval { ms } = durability {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ms + 50);
        loop {
            let l = p.listen_durable();
            if p.durable_end() >= through {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, l).await.is_err() {
                break;
            }
        }
    }
    let p = p.clone();
    tokio::task::spawn_blocking(move || p.sync())
        .await
        .map_err(|e| Error::Unavailable(format!("store task failed: {e}")))??;
    Ok(())
}

/// Writes one part (retrying a failed write a few times); returns what
/// became of it and the offset below which it must be durable.
async fn write_part(
    p: Arc<Partition>,
    mut batch: switchboard_log::BatchBuilder,
    stream: &str,
) -> Result<(PartOutcome, u64)> {
    let partition = p.id();
    let mut attempt = 0;
    loop {
        let bytes = batch.encoded_len() as u64;
        let started = Instant::now();
        let p2 = p.clone();
        let (r, b) = tokio::task::spawn_blocking(move || {
            let r = p2.append(&mut batch);
            (r, batch)
        })
        .await
        .map_err(|e| Error::Unavailable(format!("store task failed: {e}")))?;
        batch = b;
        metrics::histogram!("switchboard_log_append_seconds").record(started.elapsed().as_secs_f64());
        match r {
            Ok(AppendOutcome::Appended(a)) => {
                metrics::counter!("switchboard_log_appended_bytes_total").increment(bytes);
                let range = PartRange {
                    partition,
                    first: a.base_offset,
                    last: a.last_offset,
                };
                return Ok((PartOutcome::Stored(range), a.last_offset + 1));
            }
            Ok(AppendOutcome::Duplicate(s)) => {
                // what is stored may not be durable yet (another session's
                // append of the same block)
                let through = s.last_offset + 1;
                return Ok((PartOutcome::Duplicate(partition, s), through));
            }
            Err(e) => match Error::from(e) {
                Error::Unavailable(m) if attempt + 1 < APPEND_ATTEMPTS => {
                    attempt += 1;
                    tracing::warn!(%stream, partition, attempt, error = %m, "append failed, retrying");
                    tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                }
                e => return Err(e),
            },
        }
    }
}

/// The producer's last block stored in full and durable, from what each
/// partition holds. A part not yet on stable storage does not count: the
/// block before it is then the last (blocks are appended one at a time,
/// each durable in full before the next; or, one partition's blocks, in
/// the order they were written, which its durable prefix keeps).
fn last_block_of(s: &switchboard_log::Stream, producer: &str) -> u64 {
    let mut newest: Option<(u64, u32, u32)> = None; // block, parts, durable holders
    for p in s.partitions() {
        let Some(st) = p.producer(producer) else {
            continue;
        };
        let held = u32::from(st.last_offset < p.durable_end());
        newest = match newest {
            Some((b, parts, n)) if b == st.last_block => Some((b, parts.max(st.block_parts), n + held)),
            Some((b, _, _)) if b > st.last_block => newest,
            _ => Some((st.last_block, st.block_parts, held)),
        };
    }
    match newest {
        None => 0,
        Some((b, parts, holders)) if holders > 0 && (parts == 0 || holders >= parts) => b,
        Some((b, _, _)) => b - 1,
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn create_stream(&self, name: &str, settings: StreamSettings) -> Result<bool> {
        let name = name.to_string();
        self.blocking(move |log| {
            let s = switchboard_log::StreamSettings {
                partitions: settings.partitions,
                retention_ms: settings.retention_ms,
                retention_bytes: settings.retention_bytes,
                encrypt_keys: settings.encrypt_keys,
            };
            Ok(log.create_stream(&name, s)?.1)
        })
        .await
    }

    async fn delete_stream(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        self.blocking(move |log| Ok(log.delete_stream(&name)?)).await
    }

    async fn list_streams(&self) -> Result<Vec<(String, StreamSettings)>> {
        let log = self.log()?;
        let mut out: Vec<_> = log
            .streams()
            .iter()
            .map(|s| (s.name().to_string(), settings_of(&s.settings())))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    async fn stream_settings(&self, name: &str) -> Result<StreamSettings> {
        Ok(settings_of(&self.log()?.stream(name)?.settings()))
    }

    async fn describe_stream(&self, name: &str) -> Result<StreamState> {
        let s = self.log()?.stream(name)?;
        Ok(StreamState {
            name: s.name().to_string(),
            settings: settings_of(&s.settings()),
            incarnation: s.incarnation(),
            start_offsets: s.partitions().iter().map(|p| p.start_offset()).collect(),
            end_offsets: s.partitions().iter().map(|p| p.end_offset()).collect(),
        })
    }

    async fn append(&self, stream: &str, block: Block) -> Result<Appended> {
        // a producer's block is checked against its epoch, and holds the
        // epoch while it is appended (a fence waits for it). Blocks of epoch
        // 0 of a producer never fenced (the producers of keyed publishes)
        // need no epoch, and make none.
        let epoch = block.producer().and_then(|p| {
            let e = if p.epoch > 0 {
                Some(self.make_epoch(stream, &p.id))
            } else {
                self.find_epoch(stream, &p.id)
            };
            e.map(|e| (e, p.epoch))
        });
        let Some((epoch, mine)) = epoch else {
            return self.append_parts(stream, block).await;
        };
        let current = epoch.lock.read().await;
        if mine < *current {
            return Ok(Appended::Fenced { epoch: *current });
        }
        self.append_parts(stream, block).await
    }

    /// Under `interval` and `never`, writes the block at once and leaves
    /// waiting for its sync to the future, so that a writer's blocks do not
    /// wait one sync interval each. A producer's blocks keep the rule that
    /// makes `last_block` exact after a crash: a block is written only when
    /// the producer's earlier blocks are durable, unless it and all of them
    /// are single parts of one partition (its durable records are a prefix
    /// of what was written). A fence waits for the blocks written until
    /// they are durable, as it does for appends.
    async fn submit(&self, stream: &str, block: Block) -> crate::Submitted {
        let durability = match self.log() {
            Ok(l) => l.config().durability,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        // under `always`, writing is syncing: nothing to gain
        let producer = block.producer().map(|p| (p.id.clone(), p.epoch));
        let (producer, mine) = match (durability, producer) {
            (Durability::Always, _) | (_, Some((_, 0))) => {
                let r = self.append(stream, block).await;
                return Box::pin(std::future::ready(r));
            }
            (_, None) => {
                // no producer: no order to keep across a crash
                return match self.write_parts(stream, block).await {
                    Ok(w) => Box::pin(w.finish()),
                    Err(e) => Box::pin(std::future::ready(Err(e))),
                };
            }
            (_, Some(p)) => p,
        };
        let epoch = self.make_epoch(stream, &producer);
        let current = epoch.lock.clone().read_owned().await;
        if mine < *current {
            let fenced = Appended::Fenced { epoch: *current };
            return Box::pin(std::future::ready(Ok(fenced)));
        }
        let single = match block.parts() {
            [(partition, _)] => Some(*partition),
            _ => None,
        };
        loop {
            let synced = epoch.synced.notified();
            {
                let mut u = epoch.unsynced.lock();
                if u.poisoned {
                    let e = Error::Unavailable(format!(
                        "an earlier block of producer {producer:?} failed: a new session replays from its last block"
                    ));
                    return Box::pin(std::future::ready(Err(e)));
                }
                if u.blocks == 0 || (single.is_some() && u.partition == single) {
                    u.blocks += 1;
                    u.partition = single;
                    break;
                }
            }
            synced.await;
        }
        let unsynced = UnsyncedGuard(epoch.clone());
        let written = match self.write_parts(stream, block).await {
            Ok(w) if w.parts.iter().all(|(_, r)| r.is_ok()) => w,
            Ok(w) => {
                epoch.poison();
                return Box::pin(w.finish());
            }
            Err(e) => {
                epoch.poison();
                return Box::pin(std::future::ready(Err(e)));
            }
        };
        // the sync is waited for by a task of its own, not by whoever polls
        // the answer: a later block of the producer may be waiting for this
        // one to be durable while its writer has not polled this answer yet
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let r = written.finish().await;
            if r.is_err() {
                unsynced.0.poison();
            }
            drop(unsynced);
            drop(current);
            let _ = tx.send(r);
        });
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(Error::Unavailable("the store's sync task stopped".into())))
        })
    }

    async fn fence_producer(&self, stream: &str, producer: &str) -> Result<Fencing> {
        self.forget_idle_epochs(self.log()?.config().producer_ttl_ms);
        let epoch = self.make_epoch(stream, producer);
        let mut current = epoch.lock.write().await;
        *current += 1;
        // the blocks written under the old epoch are durable or failed: the
        // new session starts clean
        *epoch.unsynced.lock() = Unsynced::default();
        let last_block = self.last_block(stream, producer).await?;
        Ok(Fencing {
            epoch: *current,
            last_block,
        })
    }

    async fn last_block(&self, stream: &str, producer: &str) -> Result<u64> {
        let s = self.log()?.stream(stream)?;
        let producer = producer.to_string();
        // producer state waits on each partition's writer lock
        tokio::task::spawn_blocking(move || last_block_of(&s, &producer))
            .await
            .map_err(|e| Error::Unavailable(format!("store task failed: {e}")))
    }

    async fn offsets_for_time(&self, stream: &str, timestamp_ms: i64) -> Result<Vec<u64>> {
        let s = self.log()?.stream(stream)?;
        // the time index is read from files
        tokio::task::spawn_blocking(move || {
            s.partitions()
                .iter()
                .map(|p| Ok(p.offset_for_timestamp(timestamp_ms)?))
                .collect()
        })
        .await
        .map_err(|e| Error::Unavailable(format!("store task failed: {e}")))?
    }

    async fn open_reader(&self, stream: &str, positions: &[(u32, u64)]) -> Result<Box<dyn StoreReader>> {
        let s = self.log()?.stream(stream)?;
        let mut parts = Vec::with_capacity(positions.len());
        for &(p, o) in positions {
            parts.push((s.partition(p)?.clone(), o));
        }
        Ok(Box::new(EmbeddedReader { parts, rr: 0 }))
    }

    async fn close(&self) -> Result<()> {
        let Some(log) = self.log.write().take() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || match Arc::try_unwrap(log) {
            Ok(log) => Ok(log.close()?),
            // In-flight calls still hold it: sync now, and the last of them
            // closes it on drop.
            Err(log) => Ok(log.sync_all()?),
        })
        .await
        .map_err(|e| Error::Unavailable(format!("store task failed: {e}")))?
    }
}

struct EmbeddedReader {
    parts: Vec<(Arc<Partition>, u64)>,
    rr: usize,
}

impl EmbeddedReader {
    fn readable(&self) -> bool {
        self.parts
            .iter()
            .any(|(p, o)| p.end_offset() > *o || *o < p.start_offset())
    }
}

#[async_trait]
impl StoreReader for EmbeddedReader {
    async fn fetch(&mut self, max_records: usize, max_bytes: usize, wait: Duration) -> Result<Fetched> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if self.readable() {
                let n = self.parts.len();
                let order: Vec<(usize, Arc<Partition>, u64)> = (0..n)
                    .map(|k| (self.rr + k) % n)
                    .filter(|&i| {
                        let (p, o) = &self.parts[i];
                        p.end_offset() > *o || *o < p.start_offset()
                    })
                    .map(|i| (i, self.parts[i].0.clone(), self.parts[i].1))
                    .collect();
                self.rr = self.rr.wrapping_add(1);
                // one hop to the blocking pool for the whole pass
                let pass = tokio::task::spawn_blocking(move || read_pass(order, max_records, max_bytes))
                    .await
                    .map_err(|e| Error::Unavailable(format!("store task failed: {e}")))??;
                for (i, next) in pass.1 {
                    self.parts[i].1 = next;
                }
                if !pass.0.records.is_empty() || !pass.0.gaps.is_empty() {
                    return Ok(pass.0);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(Fetched::default());
            }
            let listeners: Vec<_> = self.parts.iter().map(|(p, _)| p.listen()).collect();
            if self.readable() {
                continue;
            }
            if tokio::time::timeout_at(deadline, any_of(listeners))
                .await
                .is_err()
            {
                return Ok(Fetched::default());
            }
        }
    }

    fn positions(&self) -> Vec<(u32, u64)> {
        self.parts.iter().map(|(p, o)| (p.id(), *o)).collect()
    }
}

type Pass = (Fetched, Vec<(usize, u64)>);

fn read_pass(order: Vec<(usize, Arc<Partition>, u64)>, max_records: usize, max_bytes: usize) -> Result<Pass> {
    let mut out = Fetched::default();
    let mut moved = Vec::new();
    let mut room = max_bytes;
    for (i, p, mut at) in order {
        if out.records.len() >= max_records || (room == 0 && !out.records.is_empty()) {
            break;
        }
        if at < p.start_offset() {
            let to = p.start_offset();
            out.gaps.push(Gap {
                partition: p.id(),
                from: at,
                to,
            });
            at = to;
            moved.push((i, at));
        }
        if at >= p.end_offset() {
            continue;
        }
        let r = match p.read(at, max_records - out.records.len(), room.clamp(1, READ_CHUNK)) {
            Ok(r) => r,
            Err(switchboard_log::Error::OffsetOutOfRange { requested, start, .. }) if requested < start => {
                // retention ran between the check and the read
                out.gaps.push(Gap {
                    partition: p.id(),
                    from: requested,
                    to: start,
                });
                moved.push((i, start));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        for rec in r.records {
            let rec = record_of(rec);
            room = room.saturating_sub(rec.payload_len() + 24);
            out.records.push((p.id(), rec));
        }
        moved.push((i, r.next_offset));
    }
    Ok((out, moved))
}

/// Resolves when any listener fires.
async fn any_of(listeners: Vec<switchboard_log::EventListener>) {
    let mut listeners: Vec<_> = listeners.into_iter().map(Box::pin).collect();
    std::future::poll_fn(move |cx| {
        for l in listeners.iter_mut() {
            if l.as_mut().poll(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Epochs idle for longer than the bound go once the map has grown to
    /// the next look; those in use stay.
    #[tokio::test]
    async fn idle_epochs_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), LogConfig::default()).unwrap();
        for i in 0..1024 {
            store.make_epoch("s", &format!("p{i}"));
        }
        let held = store.make_epoch("s", "held");
        std::thread::sleep(Duration::from_millis(5));
        store.forget_idle_epochs(1);
        assert_eq!(store.fenced_producers(), 1, "only the one in use is left");
        drop(held);
        // below the next look's size nothing is scanned
        store.forget_idle_epochs(1);
        assert_eq!(store.fenced_producers(), 1);
    }
}
