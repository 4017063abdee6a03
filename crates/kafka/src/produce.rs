//! Writing records: the delivery reports of librdkafka gathered per block
//! (an `Arc` per record, no allocation), the node's idempotent producer for
//! blocks without a producer id, and the transactional lanes that write
//! producer blocks exactly once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Message};
use switchboard_store::{BlockProducer, Error, PartRange, Records, Result};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::error::{blocking, map};

/// Reserved header carrying a producer block's producer id.
pub const PRODUCER_HEADER: &str = "sb.p";
/// Reserved header carrying a producer block's epoch (u64 LE).
pub const EPOCH_HEADER: &str = "sb.e";
/// Reserved header carrying a producer block's number (u64 LE).
pub const BLOCK_HEADER: &str = "sb.b";

/// Delivery reports of one block's records.
#[derive(Default)]
pub(crate) struct Ack {
    /// Records handed to librdkafka (counted without the lock: only the
    /// sending task adds, before it waits).
    sent: AtomicUsize,
    state: Mutex<AckState>,
    done: Notify,
}

#[derive(Default)]
struct AckState {
    acked: usize,
    sealed: bool,
    offsets: Vec<(u32, u64)>,
    error: Option<KafkaError>,
}

impl Ack {
    pub(crate) fn with_capacity(records: usize) -> Arc<Ack> {
        Arc::new(Ack {
            sent: AtomicUsize::new(0),
            state: Mutex::new(AckState {
                offsets: Vec::with_capacity(records),
                ..AckState::default()
            }),
            done: Notify::new(),
        })
    }

    pub(crate) fn sent(&self) {
        self.sent.fetch_add(1, Ordering::Release);
    }

    fn delivered(&self, r: std::result::Result<(u32, u64), KafkaError>) {
        let mut st = self.state.lock();
        st.acked += 1;
        match r {
            Ok(o) => st.offsets.push(o),
            Err(e) => {
                st.error.get_or_insert(e);
            }
        }
        let done = st.sealed && st.acked == self.sent.load(Ordering::Acquire);
        drop(st);
        if done {
            self.done.notify_one();
        }
    }

    /// No more records will be sent; waits for the reports of those sent.
    pub(crate) async fn wait(&self) -> std::result::Result<Vec<(u32, u64)>, KafkaError> {
        self.state.lock().sealed = true;
        loop {
            let n = self.done.notified();
            {
                let mut st = self.state.lock();
                if st.acked == self.sent.load(Ordering::Acquire) {
                    if let Some(e) = st.error.take() {
                        return Err(e);
                    }
                    return Ok(std::mem::take(&mut st.offsets));
                }
            }
            n.await;
        }
    }
}

/// The producers' context: delivery reports go to their block's [`Ack`].
pub(crate) struct Ctx;

impl ClientContext for Ctx {
    fn error(&self, error: KafkaError, reason: &str) {
        crate::client_error(&error, reason);
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::log_client(level, fac, log_message);
    }
}

impl ProducerContext for Ctx {
    type DeliveryOpaque = Arc<Ack>;

    fn delivery(&self, r: &DeliveryResult<'_>, ack: Arc<Ack>) {
        ack.delivered(match r {
            Ok(m) => Ok((m.partition() as u32, m.offset() as u64)),
            Err((e, _)) => Err(e.clone()),
        });
    }
}

pub(crate) use crate::polling::KProducer;

/// Ranges of consecutive offsets per partition, from delivery reports.
pub(crate) fn ranges(mut offsets: Vec<(u32, u64)>) -> Vec<PartRange> {
    offsets.sort_unstable();
    let mut out: Vec<PartRange> = Vec::new();
    for (partition, o) in offsets {
        match out.last_mut() {
            Some(r) if r.partition == partition && r.last + 1 == o => r.last = o,
            _ => out.push(PartRange {
                partition,
                first: o,
                last: o,
            }),
        }
    }
    out
}

/// Sends one record, waiting while librdkafka's queue is full.
async fn send_one(
    p: &KProducer,
    mut rec: BaseRecord<'_, [u8], [u8], Arc<Ack>>,
    ack: &Ack,
) -> Result<(), KafkaError> {
    let mut waited = 0;
    loop {
        match p.send(rec) {
            Ok(()) => {
                ack.sent();
                return Ok(());
            }
            Err((e, back)) => {
                if crate::error::code(&e) != Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                    || waited > 10_000
                {
                    return Err(e);
                }
                rec = back;
                waited += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}

/// Sends a part's records to `topic` with the producer block's headers
/// (if any) after the record's own.
pub(crate) async fn send_part(
    p: &KProducer,
    topic: &str,
    partition: u32,
    records: &Records,
    producer: Option<&BlockProducer>,
    ack: &Arc<Ack>,
) -> Result<(), KafkaError> {
    let extra = producer.map(|b| (b.epoch.to_le_bytes(), b.block.to_le_bytes()));
    for r in records.iter() {
        let mut h = OwnedHeaders::new_with_capacity(8);
        for (name, value) in switchboard_log::HeaderIter::over(r.headers) {
            h = h.insert(Header {
                key: std::str::from_utf8(name).unwrap_or("?"),
                value: Some(value),
            });
        }
        if let (Some(b), Some((epoch, block))) = (producer, &extra) {
            h = h
                .insert(Header {
                    key: PRODUCER_HEADER,
                    value: Some(b.id.as_bytes()),
                })
                .insert(Header {
                    key: EPOCH_HEADER,
                    value: Some(&epoch[..]),
                })
                .insert(Header {
                    key: BLOCK_HEADER,
                    value: Some(&block[..]),
                });
        }
        let mut rec = BaseRecord::with_opaque_to(topic, ack.clone())
            .partition(partition as i32)
            .payload(r.value)
            .timestamp(r.timestamp_ms)
            .headers(h);
        if let Some(k) = r.key {
            rec = rec.key(k);
        }
        send_one(p, rec, ack).await?;
    }
    Ok(())
}

/// The node's idempotent producers (`acks=all`, `enable.idempotence`), for
/// blocks without a producer id and for internal records: a few, each
/// with its own connections, taken in turn by blocks.
pub(crate) struct Plain {
    producers: Vec<PlainProducer>,
    next: AtomicUsize,
}

struct PlainProducer {
    producer: KProducer,
    /// Held while one block's records are queued, so that each block is
    /// contiguous in every partition it writes.
    queueing: tokio::sync::Mutex<()>,
}

impl Plain {
    pub(crate) fn new(mut cfg: ClientConfig, n: usize) -> Result<Plain> {
        cfg.set("enable.idempotence", "true").set("acks", "all");
        let producers = (0..n.max(1))
            .map(|_| {
                let producer = KProducer::create(&cfg)?;
                Ok(PlainProducer {
                    producer,
                    queueing: tokio::sync::Mutex::new(()),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Plain {
            producers,
            next: AtomicUsize::new(0),
        })
    }

    fn take(&self) -> &PlainProducer {
        &self.producers[self.next.fetch_add(1, Ordering::Relaxed) % self.producers.len()]
    }

    /// Queues a block's parts; the answer tells when all are acknowledged.
    pub(crate) async fn queue(
        &self,
        topic: &str,
        stream: &str,
        parts: &[(u32, Records)],
    ) -> Result<Arc<Ack>> {
        let n: usize = parts.iter().map(|p| p.1.len() as usize).sum();
        let ack = Ack::with_capacity(n);
        let p = self.take();
        let _q = p.queueing.lock().await;
        for (partition, records) in parts {
            send_part(&p.producer, topic, *partition, records, None, &ack)
                .await
                .map_err(|e| map(&e, stream))?;
        }
        Ok(ack)
    }

    /// Writes one record and answers (partition, offset).
    pub(crate) async fn write_one(
        &self,
        topic: &str,
        partition: u32,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(u32, u64)> {
        let ack = Ack::with_capacity(1);
        let mut rec = BaseRecord::with_opaque_to(topic, ack.clone())
            .partition(partition as i32)
            .key(key);
        if let Some(v) = value {
            rec = rec.payload(v);
        }
        send_one(&self.take().producer, rec, &ack)
            .await
            .map_err(|e| map(&e, topic))?;
        let o = ack.wait().await.map_err(|e| map(&e, topic))?;
        o.first()
            .copied()
            .ok_or_else(|| Error::Unavailable("kafka: no delivery report".into()))
    }

    /// Waits until everything queued is acknowledged, up to `timeout`.
    pub(crate) fn flush(&self, timeout: Duration) -> Result<()> {
        for p in &self.producers {
            p.producer
                .flush(timeout)
                .map_err(|e| Error::Unavailable(format!("kafka flush: {e}")))?;
        }
        Ok(())
    }
}

/// A producer block to write in a transaction, with the record of the
/// producer's state that goes with it.
pub(crate) struct Job {
    pub(crate) topic: Arc<str>,
    pub(crate) stream: Arc<str>,
    pub(crate) producer: BlockProducer,
    pub(crate) parts: Vec<(u32, Records)>,
    /// (partition, key, value) of the state record.
    pub(crate) state: (u32, Vec<u8>, Vec<u8>),
    /// Set by [`Lanes::queue`].
    pub(crate) reply: Option<oneshot::Sender<Result<Vec<PartRange>>>>,
}

impl Job {
    fn answer(&mut self, r: Result<Vec<PartRange>>) {
        if let Some(tx) = self.reply.take() {
            let _ = tx.send(r);
        }
    }
}

/// Transactional producers of this node (`transactional.id`
/// `<topic prefix>switchboard.<node>.<lane>`). A lane writes the blocks that came while
/// its previous transaction committed, all in one transaction, with a
/// state record per block: a block and its producer's `last_block` become
/// visible together, or not at all.
pub(crate) struct Lanes {
    senders: Vec<mpsc::Sender<Job>>,
}

/// Catches the node's view of producer state up with the state topic (a
/// lane does it after it was fenced, before it writes again).
pub(crate) type Resync =
    Arc<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>> + Send + Sync>;

/// Most blocks in one transaction.
const MAX_GROUP: usize = 256;
/// Most bytes of blocks in one transaction.
const MAX_GROUP_BYTES: usize = 32 << 20;

impl Lanes {
    /// Starts `n` lanes; each fences the transactions its previous
    /// incarnation left open before it takes a block.
    pub(crate) async fn start(
        cfg: &ClientConfig,
        txn_prefix: &str,
        n: u32,
        state_topic: Arc<str>,
        txn_timeout: Duration,
        call_timeout: Duration,
        resync: Resync,
    ) -> Result<Lanes> {
        let mut senders = Vec::with_capacity(n as usize);
        for lane in 0..n {
            let mut c = cfg.clone();
            c.set("transactional.id", format!("{txn_prefix}{lane}"))
                .set("transaction.timeout.ms", txn_timeout.as_millis().to_string());
            let p = init(c.clone(), call_timeout).await?;
            let (tx, rx) = mpsc::channel(1024);
            tokio::spawn(run_lane(
                c,
                p,
                rx,
                state_topic.clone(),
                call_timeout,
                resync.clone(),
            ));
            senders.push(tx);
        }
        Ok(Lanes { senders })
    }

    /// Queues a job's block on its producer's lane (the same lane for every
    /// block of a producer, so they commit in order); the answer comes on
    /// the receiver.
    pub(crate) async fn queue(&self, mut job: Job) -> Result<oneshot::Receiver<Result<Vec<PartRange>>>> {
        let (tx, rx) = oneshot::channel();
        job.reply = Some(tx);
        let lane = switchboard_proto::partition::partition_for_key(&job.state.1, self.senders.len() as u32);
        self.senders[lane as usize]
            .send(job)
            .await
            .map_err(|_| Error::Unavailable("kafka store is closed".into()))?;
        Ok(rx)
    }
}

async fn init(c: ClientConfig, timeout: Duration) -> Result<Arc<KProducer>> {
    blocking(move || {
        let p = KProducer::create(&c)?;
        p.init_transactions(timeout)
            .map_err(|e| Error::Unavailable(format!("kafka init_transactions: {e}")))?;
        Ok(Arc::new(p))
    })
    .await
}

async fn run_lane(
    cfg: ClientConfig,
    mut p: Arc<KProducer>,
    mut rx: mpsc::Receiver<Job>,
    state_topic: Arc<str>,
    timeout: Duration,
    resync: Resync,
) {
    // producers (key, epoch) whose block failed here: their later blocks
    // fail too, so that none lands after a block that did not
    let mut failed: std::collections::HashMap<Vec<u8>, u64> = std::collections::HashMap::new();
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        let mut bytes: usize = jobs[0].parts.iter().map(|x| x.1.encoded_len()).sum();
        while jobs.len() < MAX_GROUP && bytes < MAX_GROUP_BYTES {
            match rx.try_recv() {
                Ok(j) => {
                    bytes += j.parts.iter().map(|x| x.1.encoded_len()).sum::<usize>();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        jobs.retain_mut(|j| {
            if failed.get(&j.state.1).is_some_and(|&e| e >= j.producer.epoch) {
                j.answer(Err(Error::Unavailable(
                    "an earlier block of this producer failed: replay from last_block".into(),
                )));
                return false;
            }
            failed.remove(&j.state.1);
            true
        });
        if jobs.is_empty() {
            continue;
        }
        let started = std::time::Instant::now();
        let r = transaction(&p, &jobs, &state_topic, timeout).await;
        metrics::histogram!("switchboard_kafka_transaction_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("switchboard_kafka_transaction_blocks").record(jobs.len() as f64);
        match r {
            Ok(ranges) => {
                for (mut job, r) in jobs.into_iter().zip(ranges) {
                    job.answer(Ok(r));
                }
            }
            Err((e, renew)) => {
                tracing::warn!(error = %e, blocks = jobs.len(), "kafka transaction failed");
                if failed.len() > 100_000 {
                    failed.clear();
                }
                for mut job in jobs {
                    failed.insert(job.state.1.clone(), job.producer.epoch);
                    let err = map(&e, &job.stream);
                    job.answer(Err(err));
                }
                if renew {
                    // fenced or fatal: a new instance (a new epoch) takes
                    // over, once this node has seen every fence written
                    // before (a producer fenced elsewhere must not be
                    // written again from here)
                    loop {
                        let renewed = match init(cfg.clone(), timeout).await {
                            Ok(np) => resync().await.map(|()| np),
                            Err(e) => Err(e),
                        };
                        match renewed {
                            Ok(np) => {
                                p = np;
                                break;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "kafka lane: cannot start a transactional producer");
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One transaction for `jobs`: their records, a state record each, then
/// the commit. On error, whether the producer must be replaced.
async fn transaction(
    p: &Arc<KProducer>,
    jobs: &[Job],
    state_topic: &str,
    timeout: Duration,
) -> std::result::Result<Vec<Vec<PartRange>>, (KafkaError, bool)> {
    let fatal = |e: &KafkaError| match e {
        KafkaError::Transaction(t) => t.is_fatal() || !t.txn_requires_abort(),
        _ => false,
    };
    p.begin_transaction().map_err(|e| {
        let f = fatal(&e);
        (e, f)
    })?;
    let mut acks = Vec::with_capacity(jobs.len());
    let control = Ack::with_capacity(jobs.len());
    let mut sent: std::result::Result<(), KafkaError> = Ok(());
    'jobs: for job in jobs {
        let n: usize = job.parts.iter().map(|x| x.1.len() as usize).sum();
        let ack = Ack::with_capacity(n);
        for (partition, records) in &job.parts {
            if let Err(e) = send_part(p, &job.topic, *partition, records, Some(&job.producer), &ack).await {
                sent = Err(e);
                acks.push(ack);
                break 'jobs;
            }
        }
        let (sp, key, value) = &job.state;
        let rec = BaseRecord::with_opaque_to(state_topic, control.clone())
            .partition(*sp as i32)
            .key(&key[..])
            .payload(&value[..]);
        if let Err(e) = send_one(p, rec, &control).await {
            sent = Err(e);
            acks.push(ack);
            break;
        }
        acks.push(ack);
    }
    let mut out = Vec::with_capacity(jobs.len());
    let mut failed = sent.err();
    for ack in &acks {
        match ack.wait().await {
            Ok(o) => out.push(ranges(o)),
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    if let Err(e) = control.wait().await {
        failed.get_or_insert(e);
    }
    let p2 = p.clone();
    if let Some(e) = failed {
        let aborted = tokio::task::spawn_blocking(move || p2.abort_transaction(timeout)).await;
        let renew = !matches!(aborted, Ok(Ok(())));
        return Err((e, renew));
    }
    // every record is acknowledged, so the commit does not wait on
    // rdkafka's flush (which polls in 100 ms steps while any is queued)
    let committed = tokio::task::spawn_blocking(move || p2.commit_transaction(timeout)).await;
    match committed {
        Ok(Ok(())) => Ok(out),
        Ok(Err(e)) => {
            let renew = match &e {
                KafkaError::Transaction(t) if t.txn_requires_abort() && !t.is_fatal() => {
                    let p3 = p.clone();
                    !matches!(
                        tokio::task::spawn_blocking(move || p3.abort_transaction(timeout)).await,
                        Ok(Ok(()))
                    )
                }
                _ => true,
            };
            Err((e, renew))
        }
        Err(e) => Err((KafkaError::Canceled, {
            tracing::warn!(error = %e, "kafka commit task failed");
            true
        })),
    }
}
