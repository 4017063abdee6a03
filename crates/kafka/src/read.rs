//! Readers: a node-wide pool of assign-based consumers (`read_committed`,
//! no consumer group offsets, nothing committed), lent to one reader's
//! fetch at a time. A consumer stays assigned to the reader that used it
//! last, so a busy reader keeps librdkafka's prefetched records; another
//! reader re-assigns it. The number of Kafka clients does not grow with the
//! number of sessions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers as _;
use rdkafka::{Message, Offset, TopicPartitionList};
use switchboard_store::{Error, Fetched, Gap, ReadBuffer, Result, StoreReader};
use tokio::sync::{Notify, Semaphore};

use crate::error::{is_unknown_topic, map};

/// A pooled consumer and what it is assigned to.
pub(crate) struct Fetcher {
    consumer: BaseConsumer<crate::Quiet>,
    /// The current assignment.
    assigned: Option<Assignment>,
    /// What is known of each assigned partition, in assignment order.
    parts: Vec<Assigned>,
}

/// One assigned partition, since its assignment.
#[derive(Debug, Clone, Copy)]
struct Assigned {
    /// Its first record is still to come (and is checked for skipped
    /// offsets).
    first_pending: bool,
    /// The high watermark the brokers answered at the assignment.
    high: i64,
    /// The consumer's position right after the assignment: it may still be
    /// an earlier assignment's, so the position counts once it has moved.
    position_at_assign: Option<u64>,
}

impl Assigned {
    /// The consumer's position `now`, if it can be believed.
    fn trusted(&self, now: Option<u64>) -> Option<u64> {
        now.filter(|_| !self.first_pending || now != self.position_at_assign)
    }
}

impl Fetcher {
    /// Unassigns the consumer and drops what is still queued (librdkafka
    /// drops the records of partitions no longer assigned as they are
    /// polled; errors, which name no topic, come out): blocking.
    fn release(&mut self) {
        self.assigned = None;
        self.parts.clear();
        if let Err(e) = self.consumer.unassign() {
            tracing::debug!(error = %e, "kafka: unassigning a consumer");
        }
        for _ in 0..DRAIN_MAX {
            if self.consumer.poll(Duration::ZERO).is_none() {
                break;
            }
        }
    }
}

/// Most queued events a consumer drops when it is released (a guard: with
/// nothing assigned, only stray events are left).
const DRAIN_MAX: usize = 10_000;

/// (reader, topic, next offsets) a consumer is assigned to.
type Assignment = (u64, Arc<str>, Vec<(u32, u64)>);

/// The pool.
pub(crate) struct Pool {
    free: Mutex<Vec<Fetcher>>,
    permits: Semaphore,
    waiting: std::sync::atomic::AtomicUsize,
    next_reader: AtomicU64,
    /// Woken when this node appends, so readers waiting at the tail look
    /// again at once (appends of other nodes are seen within a poll).
    pub(crate) appended: Notify,
}

impl Pool {
    pub(crate) fn new(mut cfg: ClientConfig, size: usize, buffer_kib: usize, group: &str) -> Result<Pool> {
        cfg.set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("fetch.wait.max.ms", "100")
            .set("queued.max.messages.kbytes", buffer_kib.to_string())
            // with the queue full librdkafka waits this long before it
            // fetches again (1 s by default): a reader taking records
            // frees room much sooner
            .set("fetch.queue.backoff.ms", "5")
            .set("fetch.max.bytes", (buffer_kib.min(50 << 10) * 1024).to_string())
            .set("max.partition.fetch.bytes", (1 << 20).to_string());
        let mut free = Vec::with_capacity(size);
        for _ in 0..size {
            let consumer: BaseConsumer<crate::Quiet> = cfg
                .create_with_context(crate::Quiet)
                .map_err(|e| Error::Unavailable(format!("kafka consumer: {e}")))?;
            free.push(Fetcher {
                consumer,
                assigned: None,
                parts: Vec::new(),
            });
        }
        Ok(Pool {
            free: Mutex::new(free),
            permits: Semaphore::new(size),
            waiting: std::sync::atomic::AtomicUsize::new(0),
            next_reader: AtomicU64::new(1),
            appended: Notify::new(),
        })
    }

    async fn take(&self, reader: u64) -> Result<Fetcher> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let permit = self.permits.acquire().await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        permit
            .map_err(|_| Error::Unavailable("kafka store is closed".into()))?
            .forget();
        let mut free = self.free.lock();
        // its own consumer if still there, else the least recently used
        let at = free
            .iter()
            .position(|f| f.assigned.as_ref().is_some_and(|a| a.0 == reader))
            .unwrap_or(0);
        Ok(free.remove(at))
    }

    fn give(&self, f: Fetcher) {
        self.free.lock().push(f);
        self.permits.add_permits(1);
    }

    pub(crate) fn close(&self) {
        self.permits.close();
    }

    /// Reader `reader` is gone: a free consumer still assigned to it stops
    /// fetching its partitions (which may be of a stream since deleted,
    /// whose errors it would otherwise report every second) on a blocking
    /// thread, then goes back to the pool.
    fn forget(self: &Arc<Self>, reader: u64) {
        let Ok(permit) = self.permits.try_acquire() else {
            // every consumer is lent: the next reader reassigns it
            return;
        };
        let f = {
            let mut free = self.free.lock();
            match free
                .iter()
                .position(|f| f.assigned.as_ref().is_some_and(|a| a.0 == reader))
            {
                Some(at) => free.remove(at),
                None => return,
            }
        };
        permit.forget();
        let pool = self.clone();
        let unassign = move || {
            let mut f = f;
            f.release();
            pool.give(f);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn_blocking(unassign);
            }
            Err(_) => unassign(),
        }
    }

    /// A new reader of `topic` at `positions`.
    pub(crate) fn reader(
        self: &Arc<Self>,
        topic: Arc<str>,
        stream: Arc<str>,
        positions: Vec<(u32, u64)>,
    ) -> KafkaReader {
        KafkaReader {
            pool: self.clone(),
            id: self.next_reader.fetch_add(1, Ordering::Relaxed),
            topic,
            stream,
            positions,
        }
    }
}

/// A reader of some partitions of one stream.
pub(crate) struct KafkaReader {
    pool: Arc<Pool>,
    id: u64,
    topic: Arc<str>,
    stream: Arc<str>,
    positions: Vec<(u32, u64)>,
}

/// Longest a fetch waits for records the brokers said are there (the high
/// watermark asked at the assignment is past the reader), whatever its
/// own wait: an empty answer would tell the reader it is at the end. A
/// partition at its end is known at once, so this is spent only on a
/// slow broker.
const FIRST_FETCH: Duration = Duration::from_secs(10);

/// How long a fetch that has records waits for partitions still behind.
const LINGER: Duration = Duration::from_millis(5);

/// Longest a lent consumer polls for a reader that waits, when no other
/// reader waits for a consumer.
const POLL_SLICE: Duration = Duration::from_millis(200);

#[async_trait]
impl StoreReader for KafkaReader {
    async fn fetch(&mut self, max_records: usize, max_bytes: usize, wait: Duration) -> Result<Fetched> {
        let deadline = Instant::now() + wait;
        loop {
            let appended = self.pool.appended.notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            let mut f = self.pool.take(self.id).await?;
            let left = deadline.saturating_duration_since(Instant::now());
            let slice = if self.pool.waiting.load(Ordering::Relaxed) > 0 {
                Duration::ZERO
            } else {
                left.min(POLL_SLICE)
            };
            let (id, topic, positions) = (self.id, self.topic.clone(), self.positions.clone());
            let joined = tokio::task::spawn_blocking(move || {
                let r = poll(&mut f, id, &topic, &positions, max_records, max_bytes, slice);
                (f, r)
            })
            .await
            .map_err(|e| Error::Unavailable(format!("kafka fetch task failed: {e}")))?;
            let (f, r) = joined;
            self.pool.give(f);
            let (fetched, positions) = r.map_err(|e| match e {
                PollError::Kafka(e) => map(&e, &self.stream),
                PollError::Store(e) => e,
            })?;
            self.positions = positions;
            if !fetched.records.is_empty() || !fetched.gaps.is_empty() || Instant::now() >= deadline {
                return Ok(fetched);
            }
            // nothing yet: wait for an append here, or look again soon
            let left = deadline.saturating_duration_since(Instant::now());
            let _ = tokio::time::timeout(left.min(Duration::from_millis(100)), appended).await;
        }
    }

    fn positions(&self) -> Vec<(u32, u64)> {
        self.positions.clone()
    }
}

impl Drop for KafkaReader {
    fn drop(&mut self) {
        self.pool.forget(self.id);
    }
}

enum PollError {
    Kafka(rdkafka::error::KafkaError),
    Store(Error),
}

fn tpl(topic: &str, positions: &[(u32, u64)]) -> std::result::Result<TopicPartitionList, PollError> {
    let mut t = TopicPartitionList::with_capacity(positions.len());
    for &(p, o) in positions {
        t.add_partition_offset(topic, p as i32, Offset::Offset(o as i64))
            .map_err(PollError::Kafka)?;
    }
    Ok(t)
}

/// Polls the lent consumer (on a blocking thread): assigns it to the
/// reader's positions unless it is already there, then takes what is
/// there, waiting up to `wait` for the first record.
fn poll(
    f: &mut Fetcher,
    reader: u64,
    topic: &Arc<str>,
    positions: &[(u32, u64)],
    max_records: usize,
    max_bytes: usize,
    wait: Duration,
) -> std::result::Result<(Fetched, Vec<(u32, u64)>), PollError> {
    let fresh = !matches!(&f.assigned, Some((r, t, p)) if *r == reader && t == topic && p == positions);
    if fresh {
        // what it queued for its earlier reader is not this one's: records
        // of its partitions go with the unassignment, and errors (of a
        // topic deleted since, say) would be taken for this reader's
        f.release();
        f.consumer
            .assign(&tpl(topic, positions)?)
            .map_err(PollError::Kafka)?;
        // what the consumer cached of these partitions (positions, high
        // watermarks) may be from an earlier assignment: ask the brokers
        let pos = f.consumer.position().ok();
        let mut parts = Vec::with_capacity(positions.len());
        for &(p, _) in positions {
            let high = match f
                .consumer
                .fetch_watermarks(topic, p as i32, Duration::from_secs(5))
            {
                Ok((_, hi)) => hi,
                // the stream was deleted since the reader opened
                Err(e) if is_unknown_topic(&e) && !topic_exists(&f.consumer, topic) => {
                    return Err(PollError::Kafka(e));
                }
                Err(_) => -1,
            };
            parts.push(Assigned {
                first_pending: true,
                high,
                position_at_assign: position_of(pos.as_ref(), topic, p),
            });
        }
        f.parts = parts;
    }
    let mut next: Vec<(u32, u64)> = positions.to_vec();
    let mut buf = ReadBuffer::with_capacity(max_bytes.min(1 << 20), max_records.min(1024));
    let mut gaps = Vec::new();
    let started = Instant::now();
    // until the consumer has heard from the brokers, it cannot tell an
    // empty partition from one not fetched yet: give it a moment
    let hard = started + wait.max(FIRST_FETCH);
    let soft = started + wait;
    let mut first_at: Option<Instant> = None;
    let mut verified = false;
    while buf.len() < max_records && (buf.is_empty() || buf.bytes() < max_bytes) {
        // what is queued first, without asking how far the partitions are
        let m = match f.consumer.poll(Duration::ZERO) {
            Some(m) => m,
            None => {
                let now = Instant::now();
                let timeout = if !buf.is_empty() {
                    // what one fetch brought is queued at once; a partition
                    // still behind may have its records on the way
                    let until = *first_at.get_or_insert_with(Instant::now) + LINGER;
                    if now >= until || caught_up(f, topic, &next) {
                        break;
                    }
                    until - now
                } else if caught_up(f, topic, &next) {
                    if now >= soft {
                        break;
                    }
                    soft - now
                } else {
                    if now >= hard {
                        break;
                    }
                    (hard - now).min(Duration::from_millis(10))
                };
                match f.consumer.poll(whole_ms(timeout)) {
                    Some(m) => m,
                    None => continue,
                }
            }
        };
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                // the error does not name its topic: it may be of another
                // stream, deleted since this consumer read it, so only the
                // brokers can say whether this reader's topic is gone (once
                // a poll: the consumer repeats such errors every second)
                if is_unknown_topic(&e) && !verified {
                    verified = true;
                    if !topic_exists(&f.consumer, topic) {
                        f.assigned = None;
                        return Err(PollError::Kafka(e));
                    }
                }
                tracing::debug!(error = %e, "kafka fetch");
                continue;
            }
        };
        let (p, o) = (m.partition() as u32, m.offset() as u64);
        let Some(i) = next.iter().position(|x| x.0 == p) else {
            continue;
        };
        if let Some(a) = f.parts.get_mut(i).filter(|a| a.first_pending) {
            a.first_pending = false;
            let want = next[i].1;
            if o < want {
                // librdkafka reset an offset past the end to the start
                f.assigned = None;
                return Err(PollError::Store(Error::Invalid(format!(
                    "partition {p}: offset {want} is past the end of the stream"
                ))));
            }
            if o > want {
                // skipped offsets are transaction markers or aborted
                // records, or gone by retention: only the last is a gap
                if let Ok((low, _)) = f
                    .consumer
                    .fetch_watermarks(topic, p as i32, Duration::from_secs(5))
                {
                    let low = low.max(0) as u64;
                    if low > want {
                        gaps.push(Gap {
                            partition: p,
                            from: want,
                            to: low.min(o),
                        });
                    }
                }
            }
        }
        if o < next[i].1 {
            continue;
        }
        let headers = m.headers();
        buf.push(
            p,
            o,
            m.timestamp().to_millis().unwrap_or(0),
            m.key(),
            m.payload().unwrap_or_default(),
            headers
                .iter()
                .flat_map(|h| h.iter())
                .map(|h| (h.key.as_bytes(), h.value.unwrap_or_default())),
        );
        next[i].1 = o + 1;
    }
    // the consumer's position is past transaction markers the records
    // did not show (once it moved since the assignment: until then it may
    // be an earlier assignment's, and must not move the reader)
    if buf.is_empty() {
        let pos = f.consumer.position().ok();
        for (i, n) in next.iter_mut().enumerate() {
            let now = position_of(pos.as_ref(), topic, n.0);
            if let Some(o) = f.parts.get(i).and_then(|a| a.trusted(now)).filter(|&o| o > n.1) {
                n.1 = o;
            }
        }
    }
    f.assigned = Some((reader, topic.clone(), next.clone()));
    Ok((
        Fetched {
            records: buf.finish(),
            gaps,
        },
        next,
    ))
}

/// True when every partition read is known to have nothing past its
/// position: from the high watermarks asked at the assignment and those
/// the consumer's fetches reported since, and, once a partition's first
/// record came, the consumer's position (past transaction markers).
fn caught_up(f: &Fetcher, topic: &str, next: &[(u32, u64)]) -> bool {
    let c = &f.consumer;
    let Ok(t) = std::ffi::CString::new(topic) else {
        return false;
    };
    let pos = c.position().ok();
    next.iter().enumerate().all(|(i, &(p, want))| {
        let (mut lo, mut hi) = (-1i64, -1i64);
        // SAFETY: the client pointer lives as long as `c`; the topic is a
        // NUL-terminated string; lo and hi are valid for writes.
        #[allow(unsafe_code)]
        unsafe {
            rdkafka::bindings::rd_kafka_get_watermark_offsets(
                c.client().native_ptr(),
                t.as_ptr(),
                p as i32,
                &mut lo,
                &mut hi,
            );
        }
        let part = f.parts.get(i);
        let hi = hi.max(part.map_or(-1, |a| a.high));
        let now = position_of(pos.as_ref(), topic, p);
        let at = part.and_then(|a| a.trusted(now)).map_or(want, |o| o.max(want));
        hi >= 0 && at >= hi as u64
    })
}

/// Whether the brokers know `topic`. When they cannot be asked, it is
/// taken to exist: an unknown topic is reported only when they say so.
fn topic_exists(c: &BaseConsumer<crate::Quiet>, topic: &str) -> bool {
    crate::known_partitions(c, topic, Duration::from_secs(5)).map_or_else(
        |e| {
            tracing::debug!(error = %e, topic, "kafka: asking whether a topic exists");
            true
        },
        |n| n.is_some_and(|n| n > 0),
    )
}

/// `d` rounded up to whole milliseconds. rdkafka hands librdkafka the time
/// left in whole milliseconds, rounded down, and polls through the rest
/// with zero timeouts: a busy loop of up to a millisecond per wait.
fn whole_ms(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_micros().div_ceil(1000)).unwrap_or(u64::MAX))
}

/// A partition's offset in a consumer's positions, if it has one.
fn position_of(pos: Option<&TopicPartitionList>, topic: &str, p: u32) -> Option<u64> {
    pos.and_then(|l| l.find_partition(topic, p as i32))
        .and_then(|e| match e.offset() {
            Offset::Offset(o) if o >= 0 => Some(o as u64),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_whole_milliseconds_rounded_up() {
        assert_eq!(whole_ms(Duration::ZERO), Duration::ZERO);
        assert_eq!(whole_ms(Duration::from_micros(1)), Duration::from_millis(1));
        assert_eq!(whole_ms(Duration::from_micros(9_200)), Duration::from_millis(10));
        assert_eq!(whole_ms(Duration::from_millis(10)), Duration::from_millis(10));
    }
}
