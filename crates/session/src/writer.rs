//! A writer session: the server half of `write -> commit`, with a bounded
//! queue of scheduled blocks published in order by a background task.
//!
//! Blocks are published one at a time, the next block only once the
//! previous one is durable in full. So at most one block of a producer can
//! be incomplete after a crash (the store completes it when it is replayed,
//! and does not count it in the producer's `last_block` until then).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use switchboard_proto::wire::{BlockStatus, CommitAnswer, PartitionRange, WriteAnswer, WriteIn};
use switchboard_store::{Appended, Block, BlockProducer, Store, StreamSettings};
use tokio::sync::{mpsc, watch};

use crate::budget::{Lease, MemoryBudget};
use crate::codec::{encode_events, EncodedBlock, Seal, OFF_RUNTIME_BYTES};
use crate::crypto::Sealer;
use crate::error::{Result, SessionError};

/// Written blocks remembered for retried writes and commits.
const REMEMBERED_BLOCKS: usize = 1024;

struct Staged {
    block: u64,
    enc: EncodedBlock,
    /// The block's bytes, claimed from the node's budget until it is stored.
    held: Lease,
}

/// Durable blocks whose offsets a commit still answers: at most this many
/// blocks, and beyond the newest one at most [`REMEMBERED_RANGES`] ranges
/// in all. Older durable blocks answer `durable` without offsets, so that a
/// writer's bookkeeping stays small on streams with many partitions (a
/// block over 1,024 partitions has 1,024 ranges).
const REMEMBERED_OFFSETS: usize = 64;
/// See [`REMEMBERED_OFFSETS`].
const REMEMBERED_RANGES: usize = 4096;

enum Status {
    Scheduled,
    Durable(Vec<PartitionRange>),
}

#[derive(Default)]
struct PubState {
    statuses: BTreeMap<u64, Status>,
    durable_through: u64,
    in_flight: usize,
    failed: Option<SessionError>,
}

/// Publisher state shared between the session and its task.
pub(crate) struct Shared {
    state: Mutex<PubState>,
    progress: watch::Sender<u64>,
    /// The store, asked whether it can serve while a commit waits.
    store: Arc<dyn Store>,
    /// Shutting down: blocks held back while the store cannot serve are
    /// handed back (to be spilled) instead of waiting for it.
    spilling: std::sync::atomic::AtomicBool,
}

struct Job {
    block: u64,
    data: Block,
    events: u64,
    bytes: u64,
    _held: Lease,
}

/// What a write needs to know of its session, borrowed.
struct View<'a> {
    stream: &'a str,
    partitions: u32,
    encrypt_keys: bool,
    seed: u32,
    producer: Option<&'a str>,
    epoch: u64,
    expected: u64,
    last_block: Option<u64>,
    written: &'a VecDeque<(u64, u128, u64)>,
}

/// What a write decided.
enum Prepared {
    /// A retry of a block already written: the same answer.
    Repeat(WriteAnswer),
    /// A new block, encoded.
    Staged {
        block: u64,
        hash: u128,
        enc: EncodedBlock,
    },
}

/// Parses, checks and encodes a write body against the session's state;
/// changes nothing.
fn prepare(v: &View<'_>, body: &[u8], now_ms: i64, sealer: Option<&Sealer>) -> Result<Prepared> {
    let req: WriteIn<'_> = crate::codec::parse_body(body, "write", r#"{"block": n, "events": [...]}"#)?;
    let block = req.block;
    let hash = xxhash_rust::xxh3::xxh3_128(body);
    if let Some(&(_, h, events)) = v.written.iter().find(|w| w.0 == block) {
        return if h == hash {
            Ok(Prepared::Repeat(WriteAnswer { block, events }))
        } else {
            Err(SessionError::Conflict(format!(
                "block {block} was already written with other events"
            )))
        };
    }
    if block == 0 {
        return Err(SessionError::bad("block: block numbers start at 1"));
    }
    if let Some(last) = v.last_block.filter(|&l| block <= l) {
        return Err(SessionError::Conflict(format!(
            "block {block} is at or below the producer's last block {last}"
        )));
    }
    if block != v.expected {
        return Err(SessionError::Conflict(format!(
            "block {block} is out of order: the next block is {}",
            v.expected
        )));
    }
    let unkeyed = (v.seed.wrapping_add(block as u32)) % v.partitions;
    let producer = v.producer.map(|p| BlockProducer {
        id: p.to_string(),
        epoch: v.epoch,
        block,
    });
    let seal = sealer.map(|sealer| Seal {
        sealer,
        stream: v.stream,
        encrypt_keys: v.encrypt_keys,
    });
    let enc = encode_events(
        &req.events,
        v.partitions,
        unkeyed,
        now_ms,
        producer,
        seal.as_ref(),
    )?;
    Ok(Prepared::Staged { block, hash, enc })
}

/// What a commit call does next.
pub(crate) enum CommitPlan {
    /// Answer now.
    Now(CommitAnswer),
    /// Wait (outside the session lock) for the block to be durable.
    Wait(Arc<Shared>, u64),
}

pub(crate) struct Writer {
    pub stream: String,
    pub producer: Option<String>,
    /// The producer's epoch this session took at allocation.
    epoch: u64,
    pub last_block: Option<u64>,
    partitions: u32,
    encrypt_keys: bool,
    unkeyed_seed: u32,
    expected: u64,
    staged: Option<Staged>,
    written: VecDeque<(u64, u128, u64)>,
    shared: Arc<Shared>,
    tx: Option<mpsc::UnboundedSender<Job>>,
    task: Option<tokio::task::JoinHandle<Vec<(u64, Block)>>>,
    max_in_flight: usize,
    budget: Arc<MemoryBudget>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the queue lets the task finish what was scheduled: a
        // scheduled block belongs to the server, even if the session is gone.
        self.tx.take();
    }
}

impl Writer {
    pub fn start(
        store: Arc<dyn Store>,
        stream: String,
        settings: StreamSettings,
        producer: Option<(String, u64)>,
        last_block: Option<u64>,
        max_in_flight: usize,
        budget: Arc<MemoryBudget>,
    ) -> Writer {
        let (producer, epoch) = match producer {
            Some((p, e)) => (Some(p), e),
            None => (None, 0),
        };
        let base = last_block.unwrap_or(0);
        let (progress, _) = watch::channel(base);
        let shared = Arc::new(Shared {
            state: Mutex::new(PubState {
                durable_through: base,
                ..PubState::default()
            }),
            progress,
            store: store.clone(),
            spilling: std::sync::atomic::AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(publish_loop(store, stream.clone(), rx, shared.clone()));
        Writer {
            stream,
            producer,
            epoch,
            last_block,
            partitions: settings.partitions,
            encrypt_keys: settings.encrypt_keys,
            unkeyed_seed: rand::random(),
            expected: base + 1,
            staged: None,
            written: VecDeque::new(),
            shared,
            tx: Some(tx),
            task: Some(task),
            max_in_flight: max_in_flight.max(1),
            budget,
        }
    }

    pub fn durable_through(&self) -> u64 {
        self.shared.state.lock().durable_through
    }

    pub fn in_flight(&self) -> u64 {
        self.shared.state.lock().in_flight as u64
    }

    /// Blocks committed and not yet durable, in order.
    pub fn scheduled_blocks(&self) -> Vec<u64> {
        let st = self.shared.state.lock();
        st.statuses
            .iter()
            .filter(|(_, s)| matches!(s, Status::Scheduled))
            .map(|(b, _)| *b)
            .collect()
    }

    /// After a publish failure the session is over. A failure that may
    /// heal answers `session_gone`, so that the client allocates a new
    /// session and replays what it has not seen durable; one that cannot
    /// (the stream was deleted, the store refused the block) answers its
    /// own error, so that the client does not replay into it forever.
    fn check_failed(&self) -> Result<()> {
        match &self.shared.state.lock().failed {
            Some(e) if is_final(e) || matches!(e, SessionError::Fenced { .. }) => Err(e.clone()),
            Some(_) => Err(SessionError::SessionGone),
            None => Ok(()),
        }
    }

    /// A `write` call with its raw body. With `sealer`, the events are
    /// encrypted as they are staged. A large body is parsed, checked and
    /// encoded on the blocking pool, so that calls of other sessions on
    /// this runtime thread (acks, reads) do not wait behind it.
    pub async fn write(
        &mut self,
        body: &Bytes,
        now_ms: i64,
        sealer: Option<Arc<Sealer>>,
    ) -> Result<WriteAnswer> {
        self.check_failed()?;
        // the block will take about as much as its body: ask first
        let mut held = self.budget.take_for_write(body.len())?;
        let prepared = if body.len() < OFF_RUNTIME_BYTES {
            prepare(&self.view(), body, now_ms, sealer.as_deref())?
        } else {
            let (stream, producer, epoch) = (self.stream.clone(), self.producer.clone(), self.epoch);
            let written = self.written.clone();
            let (partitions, encrypt_keys, seed) = (self.partitions, self.encrypt_keys, self.unkeyed_seed);
            let (expected, last_block, body) = (self.expected, self.last_block, body.clone());
            tokio::task::spawn_blocking(move || {
                let view = View {
                    stream: &stream,
                    partitions,
                    encrypt_keys,
                    seed,
                    producer: producer.as_deref(),
                    epoch,
                    expected,
                    last_block,
                    written: &written,
                };
                prepare(&view, &body, now_ms, sealer.as_deref())
            })
            .await
            .map_err(|e| SessionError::Internal(format!("write task failed: {e}")))??
        };
        match prepared {
            Prepared::Repeat(answer) => Ok(answer),
            Prepared::Staged { block, hash, enc } => {
                let events = enc.events;
                // a staged block replaced by a retry with the same number is
                // caught in `prepare`; this one is new
                held.resize(enc.block.encoded_len());
                self.staged = Some(Staged { block, enc, held });
                if self.written.len() == REMEMBERED_BLOCKS {
                    self.written.pop_front();
                }
                self.written.push_back((block, hash, events));
                Ok(WriteAnswer { block, events })
            }
        }
    }

    fn view(&self) -> View<'_> {
        View {
            stream: &self.stream,
            partitions: self.partitions,
            encrypt_keys: self.encrypt_keys,
            seed: self.unkeyed_seed,
            producer: self.producer.as_deref(),
            epoch: self.epoch,
            expected: self.expected,
            last_block: self.last_block,
            written: &self.written,
        }
    }

    /// A `commit` call.
    pub fn commit(&mut self, block: u64, durable: bool) -> Result<CommitPlan> {
        self.check_failed()?;
        {
            let st = self.shared.state.lock();
            match st.statuses.get(&block) {
                Some(Status::Durable(offsets)) => {
                    return Ok(CommitPlan::Now(CommitAnswer {
                        block,
                        status: BlockStatus::Durable,
                        offsets: Some(offsets.clone()),
                    }))
                }
                Some(Status::Scheduled) if durable => {
                    return Ok(CommitPlan::Wait(self.shared.clone(), block))
                }
                Some(Status::Scheduled) => {
                    return Ok(CommitPlan::Now(CommitAnswer {
                        block,
                        status: BlockStatus::Scheduled,
                        offsets: None,
                    }))
                }
                None => {}
            }
            if block <= st.durable_through && self.written.iter().any(|w| w.0 == block) {
                // durable long ago; its offsets are no longer remembered
                return Ok(CommitPlan::Now(CommitAnswer {
                    block,
                    status: BlockStatus::Durable,
                    offsets: None,
                }));
            }
        }
        if self.staged.as_ref().map(|s| s.block) != Some(block) {
            return Err(SessionError::Conflict(format!("block {block} was not written")));
        }
        let mut st = self.shared.state.lock();
        if st.in_flight >= self.max_in_flight {
            metrics::counter!("switchboard_backpressure_total", "reason" => "blocks_in_flight").increment(1);
            return Err(SessionError::Backpressure {
                reason: format!("{} blocks are in flight", st.in_flight),
                retry_after_ms: 20,
            });
        }
        let Some(staged) = self.staged.take() else {
            unreachable!()
        };
        let Some(tx) = &self.tx else {
            return Err(SessionError::SessionGone);
        };
        st.statuses.insert(block, Status::Scheduled);
        st.in_flight += 1;
        while st.statuses.len() > REMEMBERED_BLOCKS {
            st.statuses.pop_first();
        }
        drop(st);
        let job = Job {
            block,
            data: staged.enc.block,
            events: staged.enc.events,
            bytes: staged.enc.bytes,
            _held: staged.held,
        };
        if tx.send(job).is_err() {
            return Err(SessionError::Unavailable(
                "the session's publisher stopped".into(),
            ));
        }
        self.expected = block + 1;
        if durable {
            Ok(CommitPlan::Wait(self.shared.clone(), block))
        } else {
            Ok(CommitPlan::Now(CommitAnswer {
                block,
                status: BlockStatus::Scheduled,
                offsets: None,
            }))
        }
    }

    /// Stops taking blocks and waits (up to `bound`) for the scheduled ones
    /// to be durable. Returns the durable-through block.
    pub async fn finish(&mut self, bound: Duration) -> u64 {
        self.tx.take();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(bound, task).await;
        }
        self.durable_through()
    }

    /// Like [`Writer::finish`] at shutdown: blocks the store cannot take
    /// now (it reports itself unhealthy) come back, (block, data), for the
    /// caller to spill, instead of waiting for the store.
    pub async fn finish_or_hand_back(&mut self, bound: Duration) -> Vec<(u64, Block)> {
        self.shared
            .spilling
            .store(true, std::sync::atomic::Ordering::Release);
        self.tx.take();
        match self.task.take() {
            Some(task) => match tokio::time::timeout(bound, task).await {
                Ok(Ok(left)) => left,
                _ => Vec::new(),
            },
            None => Vec::new(),
        }
    }
}

impl Shared {
    /// Waits until `block` is durable; answers its status.
    pub async fn wait_durable(&self, block: u64) -> Result<CommitAnswer> {
        let mut rx = self.progress.subscribe();
        let mut down_since: Option<std::time::Instant> = None;
        loop {
            {
                let st = self.state.lock();
                if let Some(Status::Durable(offsets)) = st.statuses.get(&block) {
                    return Ok(CommitAnswer {
                        block,
                        status: BlockStatus::Durable,
                        offsets: Some(offsets.clone()),
                    });
                }
                if st.durable_through >= block {
                    return Ok(CommitAnswer {
                        block,
                        status: BlockStatus::Durable,
                        offsets: None,
                    });
                }
                if let Some(e) = &st.failed {
                    return Err(e.clone());
                }
            }
            match tokio::time::timeout(Duration::from_secs(1), rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    return Err(SessionError::Unavailable(
                        "the session's publisher stopped".into(),
                    ))
                }
                // the block stays scheduled while the store cannot serve;
                // the caller learns so within a bound
                Err(_) => match self.store.health() {
                    Some(why) => {
                        let since = *down_since.get_or_insert_with(std::time::Instant::now);
                        if since.elapsed() >= STORE_DOWN_WAIT {
                            return Err(SessionError::Unavailable(format!(
                                "block {block} is scheduled, not yet durable: {why}; commit it again to learn when it is"
                            )));
                        }
                    }
                    None => down_since = None,
                },
            }
        }
    }
}

/// How long a durable commit waits while the store reports that it cannot
/// serve, before it answers `unavailable` (the block stays scheduled).
const STORE_DOWN_WAIT: Duration = Duration::from_secs(5);

/// Blocks of one writer submitted to the store and not yet answered: a
/// store that keeps a producer's blocks in order (Kafka's lanes) works on
/// several at once; the embedded log answers each before the next.
const PIPELINE: usize = 8;

/// A submitted block's bookkeeping while the store works on it.
struct Submitted {
    block: u64,
    producer: Option<String>,
    events: u64,
    bytes: u64,
    _held: Lease,
    result: switchboard_store::Submitted,
}

async fn publish_loop(
    store: Arc<dyn Store>,
    stream: String,
    mut rx: mpsc::UnboundedReceiver<Job>,
    shared: Arc<Shared>,
) -> Vec<(u64, Block)> {
    let mut pending: VecDeque<Submitted> = VecDeque::with_capacity(PIPELINE);
    let mut open = true;
    while open || !pending.is_empty() {
        let job = tokio::select! {
            biased;
            r = async { (&mut pending.front_mut().expect("not empty").result).await }, if !pending.is_empty() => {
                let Some(done) = pending.pop_front() else { continue };
                finish(&stream, &shared, &done, r.map_err(SessionError::from).and_then(|a| appended_ranges(a, &done.producer)));
                continue;
            }
            job = rx.recv(), if open && pending.len() < PIPELINE => job,
        };
        let Some(job) = job else {
            open = false;
            continue;
        };
        // the store says it cannot serve: hold the block rather than fail
        // it; at shutdown, hand it and the rest back to be spilled (those
        // already submitted are answered first)
        while store.health().is_some() {
            if shared.spilling.load(std::sync::atomic::Ordering::Acquire) {
                while let Some(mut done) = pending.pop_front() {
                    let r = (&mut done.result).await;
                    let r = r
                        .map_err(SessionError::from)
                        .and_then(|a| appended_ranges(a, &done.producer));
                    finish(&stream, &shared, &done, r);
                }
                let mut left = vec![(job.block, job.data)];
                while let Ok(j) = rx.try_recv() {
                    left.push((j.block, j.data));
                }
                let mut st = shared.state.lock();
                st.in_flight = st.in_flight.saturating_sub(left.len());
                return left;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        {
            // after a failure nothing more is published: the block is
            // dropped (it was never acknowledged durable)
            let mut st = shared.state.lock();
            if st.failed.is_some() {
                st.in_flight = st.in_flight.saturating_sub(1);
                continue;
            }
        }
        let producer = job.data.producer().map(|p| p.id.clone());
        let result = store.submit(&stream, job.data).await;
        pending.push_back(Submitted {
            block: job.block,
            producer,
            events: job.events,
            bytes: job.bytes,
            _held: job._held,
            result: Box::pin(async move {
                let started = std::time::Instant::now();
                let r = result.await;
                metrics::histogram!("switchboard_store_append_seconds")
                    .record(started.elapsed().as_secs_f64());
                r
            }),
        });
    }
    Vec::new()
}

/// A block's ranges from what the store answered.
fn appended_ranges(a: Appended, producer: &Option<String>) -> Result<Vec<PartitionRange>> {
    Ok(match a {
        Appended::Stored(r) => r,
        Appended::Duplicate { ranges, .. } => ranges.unwrap_or_default(),
        Appended::Fenced { epoch } => {
            return Err(SessionError::Fenced {
                producer: producer.clone().unwrap_or_default(),
                epoch,
            })
        }
    }
    .into_iter()
    .map(|r| PartitionRange {
        partition: r.partition,
        first: r.first,
        last: r.last,
    })
    .collect())
}

/// Records what became of a submitted block.
fn finish(stream: &str, shared: &Shared, done: &Submitted, result: Result<Vec<PartitionRange>>) {
    let mut st = shared.state.lock();
    st.in_flight = st.in_flight.saturating_sub(1);
    match result {
        Ok(ranges) if st.failed.is_none() => {
            metrics::counter!("switchboard_events_in_total").increment(done.events);
            metrics::counter!("switchboard_bytes_in_total").increment(done.bytes);
            st.statuses.insert(done.block, Status::Durable(ranges));
            st.durable_through = st.durable_through.max(done.block);
            forget_old_offsets(&mut st.statuses);
            let d = st.durable_through;
            drop(st);
            shared.progress.send_replace(d);
        }
        // an earlier block failed: a later one the store took anyway is
        // not counted durable here (the client replays after last_block)
        Ok(_) => {}
        Err(e) => {
            tracing::error!(%stream, block = done.block, error = %e, "publishing a block failed; the session stops");
            if st.failed.is_none() {
                st.failed = Some(if is_final(&e) || matches!(e, SessionError::Fenced { .. }) {
                    e
                } else {
                    SessionError::Unavailable(format!("publishing block {} failed: {e}", done.block))
                });
            }
            drop(st);
            shared.progress.send_modify(|_| {});
        }
    }
}

/// Keeps the offsets of the newest durable blocks, within
/// [`REMEMBERED_OFFSETS`] and [`REMEMBERED_RANGES`] (the scheduled ones are
/// few: `max_blocks_in_flight`).
fn forget_old_offsets(statuses: &mut BTreeMap<u64, Status>) {
    let ranges = |st: &BTreeMap<u64, Status>| {
        st.values()
            .map(|s| match s {
                Status::Durable(r) => r.len(),
                Status::Scheduled => 0,
            })
            .sum::<usize>()
    };
    let mut held = ranges(statuses);
    while statuses.len() > 1 && (statuses.len() > REMEMBERED_OFFSETS || held > REMEMBERED_RANGES) {
        match statuses.first_key_value() {
            Some((_, Status::Durable(r))) => {
                held -= r.len();
                statuses.pop_first();
            }
            _ => break,
        }
    }
}

/// Whether a publish failure is for good: retrying the block anywhere
/// would fail the same way.
fn is_final(e: &SessionError) -> bool {
    matches!(
        e,
        SessionError::StreamNotFound(_) | SessionError::BadRequest(_) | SessionError::Internal(_)
    )
}

/// Appends a block and returns where it is. A block the producer already
/// stored (a replay) counts as stored where the store holds it.
pub(crate) async fn publish_block(
    store: &dyn Store,
    stream: &str,
    block: Block,
) -> Result<Vec<PartitionRange>> {
    let started = std::time::Instant::now();
    let producer = block.producer().map(|p| p.id.clone());
    let appended = store.append(stream, block).await;
    metrics::histogram!("switchboard_store_append_seconds").record(started.elapsed().as_secs_f64());
    appended_ranges(appended?, &producer)
}
