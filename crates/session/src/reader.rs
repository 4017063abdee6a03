//! A reader session: the server half of `read -> ack` with a read-ahead
//! buffer filled by a background task.
//!
//! State machine: `pending` is the batch read and not yet acked. A read
//! with a pending batch returns its exact bytes again; otherwise it takes
//! events from the read-ahead buffer and makes them the pending batch. An
//! ack of the pending batch moves `acked` to the batch's end; an ack of the
//! previously acked batch repeats its answer; any other ack is a conflict.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use switchboard_proto::wire::AckAnswer;
use switchboard_store::{Fetched, Record, Store};
use tokio::sync::Notify;

use crate::budget::{Kind, Lease, MemoryBudget};
use crate::codec::{render_event, rendered_len, rendered_max, Form, OFF_RUNTIME_BYTES};
use crate::crypto::Crypto;
use crate::cursor::{Cursor, CursorCodec};
use crate::error::{Result, SessionError};

/// Longest a read without wait waits for the read-ahead to catch up.
const CATCH_UP_WAIT: Duration = Duration::from_secs(1);
/// The least read-ahead a reader that is read keeps.
const MIN_READAHEAD: usize = 16 * 1024;
/// What one buffered event costs beside its bytes (its place in the queue).
const ITEM_BYTES: usize = std::mem::size_of::<Item>();
/// What a reader with an empty buffer may fetch even when the node's
/// budget is spent: reads degrade to fetching on demand, they never fail.
const ON_DEMAND_BYTES: usize = 64 * 1024;

/// Read limits of one call, already validated.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    /// Most events.
    pub max_events: usize,
    /// About this many bytes at most (one event always fits).
    pub max_bytes: usize,
    /// Longest wait for the first event.
    pub wait: Duration,
}

struct Pending {
    batch: u64,
    body: Bytes,
    next: Vec<u64>,
    cursor: String,
    _held: Lease,
}

pub(crate) struct Reader {
    pub stream: String,
    incarnation: u64,
    parts: Vec<u32>,
    acked: Vec<u64>,
    acked_cursor: String,
    pending: Option<Pending>,
    last_ack: Option<AckAnswer>,
    next_batch: u64,
    /// A large batch being rendered on the blocking pool.
    rendering: Option<tokio::task::JoinHandle<Rendered>>,
    ra: Arc<ReadAhead>,
    task: tokio::task::JoinHandle<()>,
    codec: CursorCodec,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the read-ahead holds, in order: events, and the ranges retention
/// removed before they could be read (each partition in its order).
enum Item {
    Event(usize, Form, Record),
    /// (partition index, first offset skipped, where reading went on)
    Gap(usize, u64, u64),
}

struct Buffered {
    records: VecDeque<Item>,
    /// The buffered events' bytes, claimed from the node's budget.
    held: Lease,
    error: Option<SessionError>,
}

struct ReadAhead {
    buf: Mutex<Buffered>,
    /// The fetcher's last pass found nothing new: an empty buffer means
    /// there is nothing to read (as of that pass).
    caught_up: AtomicBool,
    data: Notify,
    space: Notify,
    /// Most bytes this reader buffers (its share).
    limit: usize,
    /// How far the buffer is filled: about one batch of the size the reads
    /// take, more for readers that outpace it (within `limit`), never
    /// `limit` at once.
    target: AtomicUsize,
    /// When the last read came, ms: a reader not read for a while gives its
    /// buffer back.
    last_read_ms: AtomicI64,
    /// A reader not read for this long gives its read-ahead back (and
    /// fetches again when it is next read).
    idle: Duration,
    budget: Arc<MemoryBudget>,
    /// Set by the first read: until then the session fetches nothing, so
    /// that readers allocated and not (yet) used hold no memory.
    wanted: AtomicBool,
    want: Notify,
}

/// Where a reader starts: the stream, its incarnation (sealed into every
/// cursor) and a position per partition.
pub(crate) struct Start {
    pub stream: String,
    pub incarnation: u64,
    pub positions: Vec<(u32, u64)>,
}

impl Reader {
    /// Starts a reader and its read-ahead task.
    pub fn start(
        store: Arc<dyn Store>,
        crypto: Option<Arc<Crypto>>,
        codec: CursorCodec,
        from: Start,
        (readahead_bytes, idle): (usize, Duration),
        budget: &Arc<MemoryBudget>,
        legacy: bool,
    ) -> Reader {
        let Start {
            stream,
            incarnation,
            positions,
        } = from;
        let parts: Vec<u32> = positions.iter().map(|p| p.0).collect();
        let acked: Vec<u64> = positions.iter().map(|p| p.1).collect();
        let ra = Arc::new(ReadAhead {
            buf: Mutex::new(Buffered {
                records: VecDeque::new(),
                held: budget.empty(Kind::ReadAhead),
                error: None,
            }),
            caught_up: AtomicBool::new(false),
            data: Notify::new(),
            space: Notify::new(),
            limit: readahead_bytes.max(MIN_READAHEAD),
            target: AtomicUsize::new(MIN_READAHEAD),
            last_read_ms: AtomicI64::new(0),
            idle,
            budget: budget.clone(),
            wanted: AtomicBool::new(false),
            want: Notify::new(),
        });
        let task = tokio::spawn(fetch_loop(
            store,
            crypto,
            stream.clone(),
            positions.clone(),
            ra.clone(),
            legacy,
        ));
        let acked_cursor = codec.seal(&Cursor {
            stream: stream.clone(),
            incarnation,
            positions,
        });
        Reader {
            stream,
            incarnation,
            parts,
            acked,
            acked_cursor,
            pending: None,
            last_ack: None,
            next_batch: 1,
            rendering: None,
            ra,
            task,
            codec,
        }
    }

    /// The cursor after the last acked batch.
    pub fn cursor(&self) -> &str {
        &self.acked_cursor
    }

    /// The pending batch number, if any.
    pub fn pending_batch(&self) -> Option<u64> {
        self.pending.as_ref().map(|p| p.batch)
    }

    /// Takes buffered events into a new pending batch, if there are any.
    /// Returns the answer body, or `None` if nothing is buffered. A large
    /// answer is rendered on the blocking pool; if the call is dropped
    /// meanwhile, the next one picks the rendering up (events taken from
    /// the buffer are never lost).
    async fn take(&mut self, limits: ReadLimits) -> Result<Option<Bytes>> {
        if let Some(p) = &self.pending {
            return Ok(Some(p.body.clone()));
        }
        if self.rendering.is_none() {
            let Some(job) = self.select(limits)? else {
                return Ok(None);
            };
            if job.room < OFF_RUNTIME_BYTES {
                return Ok(Some(self.install(job.render())));
            }
            self.rendering = Some(tokio::task::spawn_blocking(move || job.render()));
        }
        let Some(handle) = self.rendering.as_mut() else {
            unreachable!()
        };
        let rendered = handle
            .await
            .map_err(|e| SessionError::Internal(format!("rendering task failed: {e}")));
        self.rendering = None;
        Ok(Some(self.install(rendered?)))
    }

    /// Takes the next batch's events (and the gaps before them) out of the
    /// read-ahead, within `limits`.
    fn select(&mut self, limits: ReadLimits) -> Result<Option<RenderJob>> {
        let mut buf = self.ra.buf.lock();
        if buf.records.is_empty() {
            if let Some(e) = buf.error.take() {
                return Err(e);
            }
            return Ok(None);
        }
        let mut items = Vec::new();
        let (mut n, mut bytes, mut taken_bytes) = (0usize, 0usize, 0usize);
        // the answer's size, so that rendering never moves it
        let mut room = 256 + self.acked_cursor.len() * 2;
        while let Some(item) = buf.records.front() {
            if let Item::Event(_, form, r) = item {
                if n == limits.max_events {
                    break;
                }
                let len = rendered_len(r);
                if n > 0 && bytes + len > limits.max_bytes {
                    break;
                }
                bytes += len;
                room += rendered_max(*form, r);
                taken_bytes += r.payload_len() + ITEM_BYTES;
                n += 1;
            } else {
                room += 64;
            }
            if let Some(item) = buf.records.pop_front() {
                items.push(item);
            }
        }
        buf.held.shrink(taken_bytes);
        // read-ahead of about one batch like this one (fetched while the
        // client works on this one); twice as much when this one took all
        // there was (the reader outpaces the fetches)
        let starved = buf.records.is_empty() && n < limits.max_events && bytes < limits.max_bytes;
        drop(buf);
        let target = self.ra.target.load(Ordering::Acquire);
        let fill = if starved {
            target.saturating_mul(2).max(taken_bytes)
        } else {
            taken_bytes
        };
        self.ra
            .target
            .store(fill.clamp(MIN_READAHEAD, self.ra.limit), Ordering::Release);
        self.ra.space.notify_one();
        let batch = self.next_batch;
        self.next_batch += 1;
        Ok(Some(RenderJob {
            batch,
            items,
            events: n,
            room,
            parts: self.parts.clone(),
            next: self.acked.clone(),
            stream: self.stream.clone(),
            incarnation: self.incarnation,
            codec: self.codec.clone(),
        }))
    }

    /// Makes a rendered batch the pending one; returns its body.
    fn install(&mut self, r: Rendered) -> Bytes {
        // the answer is kept until its ack: a read must answer, so it may
        // overdraw the budget
        let held = self.ra.budget.force(Kind::Pending, r.body.len());
        metrics::counter!("switchboard_events_out_total").increment(r.events as u64);
        metrics::counter!("switchboard_bytes_out_total").increment(r.body.len() as u64);
        self.pending = Some(Pending {
            batch: r.batch,
            body: r.body.clone(),
            next: r.next,
            cursor: r.cursor,
            _held: held,
        });
        r.body
    }

    fn empty_answer(&self) -> Bytes {
        let mut out = Vec::with_capacity(self.acked_cursor.len() + 40);
        out.extend_from_slice(b"{\"batch\":0,\"events\":[],\"cursor\":");
        let _ = serde_json::to_writer(&mut out, &self.acked_cursor);
        out.push(b'}');
        Bytes::from(out)
    }

    /// A `read` call: the pending batch, or a new one, waiting up to
    /// `limits.wait` for the first event. Even without a wait, a read does
    /// not answer empty while the read-ahead has not yet looked at what the
    /// store holds (just after allocation, or just after new data).
    pub async fn read(&mut self, limits: ReadLimits) -> Result<Bytes> {
        self.ra
            .last_read_ms
            .store(switchboard_proto::time::now_ms(), Ordering::Release);
        if !self.ra.wanted.swap(true, Ordering::AcqRel) {
            self.ra.want.notify_one();
        }
        if let Some(b) = self.take(limits).await? {
            return Ok(b);
        }
        let start = tokio::time::Instant::now();
        loop {
            let ra = self.ra.clone();
            let notified = ra.data.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(b) = self.take(limits).await? {
                return Ok(b);
            }
            let until = if ra.caught_up.load(Ordering::Acquire) {
                start + limits.wait
            } else {
                start + limits.wait.max(CATCH_UP_WAIT)
            };
            if tokio::time::Instant::now() >= until {
                break;
            }
            let _ = tokio::time::timeout_at(until, notified).await;
        }
        Ok(self.empty_answer())
    }

    /// An `ack` call.
    pub fn ack(&mut self, batch: u64) -> Result<AckAnswer> {
        if let Some(p) = &self.pending {
            if p.batch == batch {
                let Some(p) = self.pending.take() else {
                    unreachable!()
                };
                self.acked = p.next;
                self.acked_cursor = p.cursor;
                let answer = AckAnswer {
                    batch,
                    cursor: self.acked_cursor.clone(),
                };
                self.last_ack = Some(answer.clone());
                return Ok(answer);
            }
        }
        match &self.last_ack {
            Some(a) if a.batch == batch => Ok(a.clone()),
            _ => Err(SessionError::Conflict(match self.pending_batch() {
                Some(p) => format!("batch {batch} is not pending: batch {p} is"),
                None => format!("batch {batch} is not pending: no batch is"),
            })),
        }
    }
}

/// A batch to render: what it needs, owned, so that it can run anywhere.
struct RenderJob {
    batch: u64,
    items: Vec<Item>,
    events: usize,
    room: usize,
    parts: Vec<u32>,
    /// The acked positions, moved past what the batch holds as it renders.
    next: Vec<u64>,
    stream: String,
    incarnation: u64,
    codec: CursorCodec,
}

/// A rendered batch.
struct Rendered {
    batch: u64,
    body: Bytes,
    next: Vec<u64>,
    cursor: String,
    events: usize,
}

impl RenderJob {
    fn render(self) -> Rendered {
        let RenderJob {
            batch,
            items,
            events,
            room,
            parts,
            mut next,
            stream,
            incarnation,
            codec,
        } = self;
        let mut out = Vec::with_capacity(room);
        out.extend_from_slice(b"{\"batch\":");
        out.extend_from_slice(batch.to_string().as_bytes());
        out.extend_from_slice(b",\"events\":[");
        let mut gaps: Vec<(u32, u64, u64)> = Vec::new();
        let mut first = true;
        for item in &items {
            match item {
                Item::Gap(idx, from, to) => {
                    // the batch's cursor moves past what retention removed
                    gaps.push((parts[*idx], *from, *to));
                    next[*idx] = next[*idx].max(*to);
                }
                Item::Event(idx, form, r) => {
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    render_event(&mut out, parts[*idx], *form, r);
                    next[*idx] = r.offset + 1;
                }
            }
        }
        let cursor = codec.seal(&Cursor {
            stream,
            incarnation,
            positions: parts.iter().copied().zip(next.iter().copied()).collect(),
        });
        out.extend_from_slice(b"],\"cursor\":");
        let _ = serde_json::to_writer(&mut out, &cursor);
        if !gaps.is_empty() {
            use std::io::Write;
            out.extend_from_slice(b",\"gaps\":[");
            for (i, (p, from, to)) in gaps.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let _ = write!(out, "{{\"partition\":{p},\"from\":{from},\"to\":{to}}}");
            }
            out.push(b']');
        }
        out.push(b'}');
        Rendered {
            batch,
            body: Bytes::from(out),
            next,
            cursor,
            events,
        }
    }
}

/// Opens sealed records; large fetches are decrypted off the runtime.
async fn open_fetched(
    c: &Arc<Crypto>,
    stream: &str,
    partition: u32,
    records: Vec<Record>,
    legacy: bool,
) -> Result<Vec<(Form, Record)>> {
    if c.needs_keys(&records, legacy) {
        c.load_keys(&records, legacy).await?;
    }
    let bytes: usize = records.iter().map(|r| r.value.len()).sum();
    // small: cheaper here than a hop to the blocking pool
    if bytes <= 64 * 1024 {
        return Ok(c.open_records(stream, partition, records, legacy)?);
    }
    let (c, stream) = (c.clone(), stream.to_string());
    tokio::task::spawn_blocking(move || c.open_records(&stream, partition, records, legacy))
        .await
        .map_err(|e| SessionError::Internal(format!("decryption task failed: {e}")))?
        .map_err(SessionError::from)
}

/// Takes a fetch into the read-ahead buffer, all at once, so that a read
/// never sees half of it. False if the records could not be opened.
async fn take_in(
    f: Fetched,
    crypto: &Option<Arc<Crypto>>,
    stream: &str,
    parts: &[u32],
    ra: &ReadAhead,
    legacy: bool,
) -> bool {
    // retention removed what the cursor points at: the read answer names
    // the range, and reading goes on from the oldest record left
    let mut gaps = Vec::with_capacity(f.gaps.len());
    for g in &f.gaps {
        tracing::info!(%stream, partition = g.partition, from = g.from, to = g.to, "retention removed events before they were read");
        metrics::counter!("switchboard_read_skipped_events_total").increment(g.to.saturating_sub(g.from));
        if let Ok(idx) = parts.binary_search(&g.partition) {
            gaps.push(Item::Gap(idx, g.from, g.to));
        }
    }
    let mut pass: Vec<(usize, Form, Record)> = Vec::with_capacity(f.records.len());
    let Some(c) = crypto else {
        // nothing to open: each record's form is in its headers
        for (p, r) in f.records {
            match crate::crypto::open_plain(r, legacy) {
                Ok((form, r)) => {
                    if let Ok(idx) = parts.binary_search(&p) {
                        pass.push((idx, form, r));
                    }
                }
                Err(e) => {
                    let e = SessionError::from(e);
                    tracing::error!(%stream, partition = p, error = %e, "cannot open stored events");
                    ra.buf.lock().error = Some(e);
                    ra.data.notify_waiters();
                    return false;
                }
            }
        }
        push_pass(ra, gaps, pass);
        return true;
    };
    // records arrive grouped by partition: open each group at once
    let mut group: Vec<Record> = Vec::new();
    let mut records = f.records.into_iter().peekable();
    while let Some((p, r)) = records.next() {
        group.push(r);
        if records.peek().is_some_and(|(q, _)| *q == p) {
            continue;
        }
        let Ok(idx) = parts.binary_search(&p) else {
            group.clear();
            continue;
        };
        match open_fetched(c, stream, p, std::mem::take(&mut group), legacy).await {
            Ok(opened) => pass.extend(opened.into_iter().map(|(form, r)| (idx, form, r))),
            Err(e) => {
                // never hand out what does not authenticate
                tracing::error!(%stream, partition = p, error = %e, "cannot open stored events");
                ra.buf.lock().error = Some(e);
                ra.data.notify_waiters();
                return false;
            }
        }
    }
    push_pass(ra, gaps, pass);
    true
}

fn push_pass(ra: &ReadAhead, gaps: Vec<Item>, pass: Vec<(usize, Form, Record)>) {
    if pass.is_empty() && gaps.is_empty() {
        return;
    }
    let mut added = 0;
    let mut buf = ra.buf.lock();
    // a fetch reports a partition's gap before the records after it
    buf.records.extend(gaps);
    for (i, form, r) in pass {
        added += r.payload_len() + ITEM_BYTES;
        buf.records.push_back(Item::Event(i, form, r));
    }
    // fetched within what the budget had, or on demand
    buf.held.grow(added);
}

async fn fetch_loop(
    store: Arc<dyn Store>,
    crypto: Option<Arc<Crypto>>,
    stream: String,
    mut positions: Vec<(u32, u64)>,
    ra: Arc<ReadAhead>,
    legacy: bool,
) {
    let parts: Vec<u32> = positions.iter().map(|p| p.0).collect();
    let mut failures = 0u32;
    let fail = |failures: u32, e: switchboard_store::Error| {
        if failures >= 3 {
            ra.buf.lock().error = Some(SessionError::from(e));
            ra.data.notify_waiters();
        }
        Duration::from_millis(100 * u64::from(failures.min(10)))
    };
    loop {
        // nothing is fetched before the session's (next) read
        loop {
            let want = ra.want.notified();
            tokio::pin!(want);
            want.as_mut().enable();
            if ra.wanted.load(Ordering::Acquire) {
                break;
            }
            want.await;
        }
        let mut reader = loop {
            match store.open_reader(&stream, &positions).await {
                Ok(r) => break r,
                Err(e) => {
                    failures += 1;
                    tokio::time::sleep(fail(failures, e)).await;
                }
            }
        };
        'fill: loop {
            let room = loop {
                let space = ra.space.notified();
                tokio::pin!(space);
                space.as_mut().enable();
                if let Some(room) = room_to_fetch(&ra) {
                    break room;
                }
                if tokio::time::timeout(ra.idle, space).await.is_err() {
                    if let Some(at) = release_if_idle(&ra, &*reader) {
                        positions = at;
                        break 'fill;
                    }
                }
            };
            let mut f = reader.fetch(1000, room, Duration::ZERO).await;
            if matches!(&f, Ok(f) if f.records.is_empty() && f.gaps.is_empty()) {
                // nothing now: say so, then wait for more
                ra.caught_up.store(true, Ordering::Release);
                ra.data.notify_waiters();
                f = reader.fetch(1000, room, Duration::from_secs(5)).await;
            }
            match f {
                Ok(f) if f.records.is_empty() && f.gaps.is_empty() => {
                    // at the tail with part of a batch buffered: an idle
                    // reader gives it back here too
                    if let Some(at) = release_if_idle(&ra, &*reader) {
                        positions = at;
                        break 'fill;
                    }
                }
                Ok(f) => {
                    failures = 0;
                    if !take_in(f, &crypto, &stream, &parts, &ra, legacy).await {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    ra.caught_up.store(false, Ordering::Release);
                    // wake readers once per fetch, so that a batch spans partitions
                    ra.data.notify_waiters();
                }
                Err(e) => {
                    failures += 1;
                    tokio::time::sleep(fail(failures, e)).await;
                }
            }
        }
    }
}

/// How many bytes the read-ahead may fetch now, if any: up to its target,
/// within what the node's budget has left. A reader with nothing buffered
/// always gets a small fetch, so that reads work when the budget is spent.
fn room_to_fetch(ra: &ReadAhead) -> Option<usize> {
    let held = ra.buf.lock().held.bytes();
    let want = ra.target.load(Ordering::Acquire).saturating_sub(held);
    if want == 0 {
        return None;
    }
    let want = want.min(1 << 20);
    // read-ahead takes from the first half of the budget only: the rest is
    // for writes, which answer backpressure without it
    let available = ra.budget.available().saturating_sub(ra.budget.limit() / 2);
    if held == 0 {
        return Some(want.min(available.max(ON_DEMAND_BYTES)));
    }
    if available < ON_DEMAND_BYTES {
        // keep what is buffered; fetch again once it is read
        return None;
    }
    Some(want.min(available))
}

/// Gives the buffer back if the session has not been read for a while
/// (`ra.idle`): returns where reading goes on (the first buffered
/// position of each partition), for the next read to fetch from.
fn release_if_idle(ra: &ReadAhead, reader: &dyn switchboard_store::StoreReader) -> Option<Vec<(u32, u64)>> {
    let idle_ms = switchboard_proto::time::now_ms() - ra.last_read_ms.load(Ordering::Acquire);
    if idle_ms < ra.idle.as_millis() as i64 {
        return None;
    }
    let mut buf = ra.buf.lock();
    if buf.records.is_empty() {
        return None;
    }
    let mut at = reader.positions();
    let mut seen = vec![false; at.len()];
    for item in &buf.records {
        let (idx, offset) = match item {
            Item::Event(idx, _, r) => (*idx, r.offset),
            Item::Gap(idx, from, _) => (*idx, *from),
        };
        if let Some(s) = seen.get_mut(idx).filter(|s| !**s) {
            *s = true;
            at[idx].1 = offset;
        }
    }
    // a new queue: a cleared one keeps its capacity
    buf.records = VecDeque::new();
    buf.held.resize(0);
    ra.caught_up.store(false, Ordering::Release);
    ra.wanted.store(false, Ordering::Release);
    Some(at)
}
