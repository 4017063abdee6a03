//! `kafka://host:9092[,host2:9092]`: Apache Kafka as Switchboard's storage
//! core, behind the same [`Store`] trait as the embedded log.
//!
//! - A stream is a topic of the same name (after an optional prefix),
//!   created through the admin API with its partition count and retention;
//!   the catalog topic (`__switchboard_streams`, compacted) keeps what Kafka
//!   does not: key encryption and the incarnation.
//! - An event is a record: its key is the event's key, its headers the
//!   event's headers, then Switchboard's own (`sb.` prefix). Placement is
//!   the session layer's murmur2, the Java client's.
//! - Blocks without a producer id go through the node's idempotent
//!   producer (`acks=all`). Producer blocks go through transactional
//!   [lanes](produce::Lanes): each transaction carries the blocks that came
//!   while the previous one committed, and a record per block in the
//!   producer state topic (`__switchboard_producers`), so a block and its
//!   producer's `last_block` are visible together or not at all.
//! - A new session of a producer writes a fence marker to the state topic
//!   (its offset is the epoch) and fences the transactional ids of the
//!   node that held the producer before, which aborts anything that node
//!   still had open; that node catches up with the state topic before its
//!   lanes write again, and finds its session fenced.
//! - Readers share a small pool of assign-based `read_committed` consumers
//!   ([`read`]): no consumer groups, nothing stored on the broker.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};
use switchboard_store::{
    Appended, Block, Error, Fencing, Result, Store, StoreReader, StreamSettings, StreamState, Submitted,
};

mod catalog;
mod error;
mod polling;
mod produce;
mod read;
mod state;
mod tail;

pub use produce::{BLOCK_HEADER, EPOCH_HEADER, PRODUCER_HEADER};

use crate::catalog::Catalog;
use crate::error::{blocking, map};
use crate::produce::{Job, Lanes, Plain};
use crate::state::{Producers, StateRecord};
use crate::tail::Tail;

/// Settings of the Kafka store.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port[,host:port]`.
    pub brokers: String,
    /// This node's id: names its transactional ids, so it must be unique
    /// among the nodes on one cluster and kept across restarts.
    pub node_id: String,
    /// Prefix of the topics of streams and of the internal topics.
    pub topic_prefix: String,
    /// Replication factor of new topics (-1: the broker's default).
    pub replication_factor: i32,
    /// Idempotent producers of this node for blocks without a producer id.
    pub producers: usize,
    /// Transactional producers of this node.
    pub lanes: u32,
    /// Consumers lent to readers.
    pub fetchers: usize,
    /// Most KiB each lent consumer prefetches.
    pub fetcher_buffer_kib: usize,
    /// Partitions of the producer state topic.
    pub state_partitions: u32,
    /// How long an idle producer's state is kept, ms (the state topic's
    /// retention too).
    pub producer_ttl_ms: u64,
    /// The same for short-lived producers (ids starting with `~`: keyed
    /// publishes, spilled blocks), ms.
    pub short_producer_ttl_ms: u64,
    /// Longest wait for the brokers to acknowledge a write, then
    /// `unavailable`.
    pub commit_timeout: Duration,
    /// Kafka's `transaction.timeout.ms`: how long an open transaction of a
    /// node that stopped answering holds back `read_committed` readers.
    pub transaction_timeout: Duration,
    /// librdkafka properties for every client (TLS, SASL, tuning).
    pub properties: Vec<(String, String)>,
}

impl KafkaConfig {
    /// Defaults for `brokers` and `node_id`.
    pub fn new(brokers: &str, node_id: &str) -> KafkaConfig {
        KafkaConfig {
            brokers: brokers.to_string(),
            node_id: node_id.to_string(),
            topic_prefix: String::new(),
            replication_factor: -1,
            producers: 4,
            lanes: 4,
            fetchers: 8,
            fetcher_buffer_kib: 8 << 10,
            state_partitions: 8,
            producer_ttl_ms: 7 * 24 * 3_600_000,
            short_producer_ttl_ms: 25 * 3_600_000,
            commit_timeout: Duration::from_secs(10),
            transaction_timeout: Duration::from_secs(15),
            properties: Vec::new(),
        }
    }
}

/// The brokers of a `kafka://` store URL, if it is one.
pub fn brokers_of(url: &str) -> Option<&str> {
    url.strip_prefix("kafka://")
        .map(|b| b.trim_end_matches('/'))
        .filter(|b| !b.is_empty())
}

const STREAMS_TOPIC: &str = "__switchboard_streams";
const PRODUCERS_TOPIC: &str = "__switchboard_producers";

/// Logs a client error, at most one a second at `warn` (librdkafka
/// reports "all brokers down" from every client, every 100 ms); the rest
/// at `debug`.
pub(crate) fn client_error(error: &rdkafka::error::KafkaError, reason: &str) {
    static LAST_MS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
    let now = switchboard_proto::time::now_ms();
    let last = LAST_MS.load(std::sync::atomic::Ordering::Relaxed);
    if now - last >= 1000
        && LAST_MS
            .compare_exchange(
                last,
                now,
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
            )
            .is_ok()
    {
        tracing::warn!(%error, reason, "kafka client");
    } else {
        tracing::debug!(%error, reason, "kafka client");
    }
}

/// The context of this crate's consumers and admin client: logs through
/// `tracing`, errors rate-limited.
pub(crate) struct Quiet;

impl rdkafka::ClientContext for Quiet {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_client(level, fac, log_message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        client_error(&error, reason);
    }
}

impl rdkafka::consumer::ConsumerContext for Quiet {}

pub(crate) fn log_client(level: RDKafkaLogLevel, fac: &str, msg: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => {
            tracing::error!(target: "librdkafka", fac, "{msg}")
        }
        RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", fac, "{msg}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => tracing::info!(target: "librdkafka", fac, "{msg}"),
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", fac, "{msg}"),
    }
}

/// [`Store`] on Kafka.
pub struct KafkaStore {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: KafkaConfig,
    /// `client` with the producers' settings.
    producing: ClientConfig,
    admin: AdminClient<Quiet>,
    meta: Arc<BaseConsumer<Quiet>>,
    plain: Plain,
    lanes: tokio::sync::OnceCell<Lanes>,
    catalog: Arc<Catalog>,
    catalog_tail: Arc<Tail>,
    producers: Arc<Producers>,
    producers_tail: Arc<Tail>,
    pool: Arc<read::Pool>,
    streams_topic: String,
    producers_topic: Arc<str>,
    closed: std::sync::atomic::AtomicBool,
    /// Why the brokers cannot serve now (checked every second).
    health: parking_lot::Mutex<Option<String>>,
}

fn invalid(e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("kafka: {e}"))
}

impl KafkaStore {
    /// Connects, creates the internal topics if needed (a clear error if
    /// they exist with other settings), reads them, and fences what this
    /// node's previous run left open.
    pub async fn open(cfg: KafkaConfig) -> Result<KafkaStore> {
        if cfg.lanes == 0 || cfg.fetchers == 0 || cfg.state_partitions == 0 {
            return Err(Error::Invalid(
                "kafka: lanes, fetchers and state_partitions must be positive".into(),
            ));
        }
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &cfg.brokers)
            .set("client.id", format!("switchboard.{}", cfg.node_id))
            .set_log_level(RDKafkaLogLevel::Warning);
        for (k, v) in &cfg.properties {
            client.set(k, v);
        }
        let admin: AdminClient<Quiet> = client.create_with_context(Quiet).map_err(invalid)?;
        let meta: BaseConsumer<Quiet> = client.create_with_context(Quiet).map_err(invalid)?;
        let meta = Arc::new(meta);
        let streams_topic = format!("{}{STREAMS_TOPIC}", cfg.topic_prefix);
        let producers_topic = format!("{}{PRODUCERS_TOPIC}", cfg.topic_prefix);
        tracing::info!(brokers = %cfg.brokers, "kafka store: connecting");
        reach(&meta, &streams_topic, &cfg).await?;
        ensure_internal(&admin, &meta, &cfg, &streams_topic, 1, None).await?;
        // producers are forgotten after their time to live, here too
        let ttl = cfg.producer_ttl_ms.max(cfg.short_producer_ttl_ms);
        ensure_internal(
            &admin,
            &meta,
            &cfg,
            &producers_topic,
            cfg.state_partitions,
            Some(ttl),
        )
        .await?;
        let mut producing = client.clone();
        producing
            .set("message.timeout.ms", cfg.commit_timeout.as_millis().to_string())
            .set("linger.ms", "5");
        let plain = Plain::new(producing.clone(), cfg.producers)?;
        let catalog = Arc::new(Catalog::default());
        let catalog_tail = Tail::start(client.clone(), &streams_topic, 1, catalog.clone())?;
        let producers = Arc::new(Producers::new(
            cfg.state_partitions,
            state::ProducerTtl {
                short_ms: cfg.short_producer_ttl_ms,
                long_ms: cfg.producer_ttl_ms,
            },
        ));
        let producers_tail = Tail::start(
            client.clone(),
            &producers_topic,
            cfg.state_partitions,
            producers.clone(),
        )?;
        let pool = Arc::new(read::Pool::new(
            client.clone(),
            cfg.fetchers,
            cfg.fetcher_buffer_kib,
            &format!("switchboard.{}", cfg.node_id),
        )?);
        let inner = Arc::new(Inner {
            producing,
            admin,
            meta,
            plain,
            lanes: tokio::sync::OnceCell::new(),
            catalog,
            catalog_tail,
            producers,
            producers_tail,
            pool,
            streams_topic,
            producers_topic: producers_topic.into(),
            closed: std::sync::atomic::AtomicBool::new(false),
            health: parking_lot::Mutex::new(None),
            cfg,
        });
        inner.sync_catalog().await?;
        // the lanes fence this node's earlier transactions, then the view
        // of producer state catches up past them
        let weak = Arc::downgrade(&inner);
        let resync: produce::Resync = Arc::new(move || {
            let weak = weak.clone();
            Box::pin(async move {
                match weak.upgrade() {
                    Some(i) => i.sync_all_state().await,
                    None => Ok(()),
                }
            }) as Pin<Box<dyn Future<Output = Result<()>> + Send>>
        });
        let lanes = Lanes::start(
            &inner.producing,
            &inner.txn_prefix(&inner.cfg.node_id),
            inner.cfg.lanes,
            inner.producers_topic.clone(),
            inner.cfg.transaction_timeout,
            inner.cfg.commit_timeout,
            resync,
        )
        .await?;
        let _ = inner.lanes.set(lanes);
        inner.sync_all_state().await?;
        watch_health(&inner)?;
        tracing::info!(
            brokers = %inner.cfg.brokers,
            streams = inner.catalog.list().len(),
            producers = inner.producers.len(),
            "kafka store open"
        );
        Ok(KafkaStore { inner })
    }
}

/// Waits (up to the commit timeout) for the brokers to answer at all, so
/// that a node pointed at no Kafka says so at once, not after an admin
/// call's minute.
async fn reach(meta: &Arc<BaseConsumer<Quiet>>, topic: &str, cfg: &KafkaConfig) -> Result<()> {
    let (m, t, wait) = (meta.clone(), topic.to_string(), cfg.commit_timeout);
    let answer = blocking(move || Ok(m.fetch_metadata(Some(&t), wait).map(|md| md.brokers().len()))).await?;
    match answer {
        Ok(n) if n > 0 => Ok(()),
        Ok(_) => Err(Error::Unavailable(format!(
            "kafka: the brokers at {} know no brokers",
            cfg.brokers
        ))),
        Err(e) => Err(Error::Unavailable(format!(
            "kafka: no answer from the brokers at {} within {} s ({e}): check the store URL, that Kafka listens there, and its TLS and SASL settings",
            cfg.brokers,
            wait.as_secs()
        ))),
    }
}

/// Asks the brokers for the catalog topic's metadata every second, for
/// [`Store::health`].
fn watch_health(inner: &Arc<Inner>) -> Result<()> {
    let weak = Arc::downgrade(inner);
    std::thread::Builder::new()
        .name("kafka-health".into())
        .spawn(move || loop {
            let Some(i) = weak.upgrade() else { return };
            if i.closed.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            let r = i
                .meta
                .fetch_metadata(Some(&i.streams_topic), Duration::from_secs(2));
            let now = match r {
                Ok(md) if md.topics().first().is_some_and(|t| t.error().is_none()) => None,
                Ok(_) => Some(format!("kafka: {} is missing", i.streams_topic)),
                Err(e) => Some(format!("kafka brokers unreachable: {e}")),
            };
            let was = std::mem::replace(&mut *i.health.lock(), now.clone());
            if was != now {
                match &now {
                    Some(why) => tracing::warn!(reason = %why, "kafka store cannot serve"),
                    None => tracing::info!("kafka store serves again"),
                }
            }
            drop(i);
            std::thread::sleep(Duration::from_secs(1));
        })
        .map_err(|e| Error::Unavailable(format!("cannot start a thread: {e}")))?;
    Ok(())
}

/// Creates an internal topic, or checks the one there.
async fn ensure_internal(
    admin: &AdminClient<Quiet>,
    meta: &Arc<BaseConsumer<Quiet>>,
    cfg: &KafkaConfig,
    topic: &str,
    partitions: u32,
    retention_ms: Option<u64>,
) -> Result<()> {
    let retention = retention_ms.map(|ms| ms.to_string());
    let t = NewTopic::new(
        topic,
        partitions as i32,
        TopicReplication::Fixed(cfg.replication_factor),
    );
    let t = match &retention {
        Some(ms) => t.set("cleanup.policy", "compact,delete").set("retention.ms", ms),
        None => t.set("cleanup.policy", "compact"),
    };
    let r = admin
        .create_topics(
            [&t],
            &AdminOptions::new().operation_timeout(Some(cfg.commit_timeout)),
        )
        .await
        .map_err(|e| Error::Unavailable(format!("kafka: creating {topic}: {e}")))?;
    match r.first() {
        Some(Ok(_)) => {
            tracing::info!(topic, partitions, "kafka: created internal topic");
            Ok(())
        }
        Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => {
            let have = topic_partitions(meta, topic, cfg.commit_timeout).await?;
            if have != Some(partitions) {
                return Err(Error::Conflict(format!(
                    "{topic}: exists with {have:?} partitions, this node is configured for {partitions} \
                     (internal topics must not change; set kafka.state_partitions to match)"
                )));
            }
            let policy = cleanup_policy(admin, topic, cfg.commit_timeout).await?;
            if !policy.split(',').any(|p| p == "compact") {
                return Err(Error::Conflict(format!(
                    "{topic}: exists with cleanup.policy={policy}, Switchboard needs compact"
                )));
            }
            Ok(())
        }
        Some(Err((_, code))) => Err(Error::Unavailable(format!("kafka: creating {topic}: {code}"))),
        None => Err(Error::Unavailable(format!("kafka: creating {topic}: no answer"))),
    }
}

async fn topic_partitions(
    meta: &Arc<BaseConsumer<Quiet>>,
    topic: &str,
    timeout: Duration,
) -> Result<Option<u32>> {
    let (meta, topic) = (meta.clone(), topic.to_string());
    blocking(move || {
        known_partitions(&meta, &topic, timeout)
            .map_err(|e| Error::Unavailable(format!("kafka metadata: {e}")))
    })
    .await
}

/// How many partitions the brokers know `topic` to have (`None`: they do
/// not know it). Blocking.
pub(crate) fn known_partitions(
    client: &BaseConsumer<Quiet>,
    topic: &str,
    timeout: Duration,
) -> std::result::Result<Option<u32>, rdkafka::error::KafkaError> {
    let md = client.fetch_metadata(Some(topic), timeout)?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .filter(|t| t.error().is_none())
        .map(|t| t.partitions().len() as u32))
}

async fn cleanup_policy(admin: &AdminClient<Quiet>, topic: &str, timeout: Duration) -> Result<String> {
    let r = admin
        .describe_configs(
            [&rdkafka::admin::ResourceSpecifier::Topic(topic)],
            &AdminOptions::new().request_timeout(Some(timeout)),
        )
        .await
        .map_err(|e| Error::Unavailable(format!("kafka: describing {topic}: {e}")))?;
    let res = r
        .into_iter()
        .next()
        .and_then(|x| x.ok())
        .ok_or_else(|| Error::Unavailable(format!("kafka: describing {topic}: no answer")))?;
    Ok(res
        .get("cleanup.policy")
        .and_then(|e| e.value.clone())
        .unwrap_or_default())
}

impl Inner {
    /// Queues a block (its place among the producer's blocks is taken when
    /// this returns) and answers the future of its outcome.
    async fn submit(self: Arc<Self>, stream: &str, block: Block) -> Result<Submitted> {
        let i = self;
        let e = i.entry(stream)?;
        if let Some(&(p, _)) = block.parts().iter().find(|(p, _)| *p >= e.partitions) {
            return Err(Error::Invalid(format!("stream {stream:?} has no partition {p}")));
        }
        let topic = i.topic(stream);
        let Some(pb) = block.producer().cloned() else {
            let (_, parts) = block.into_parts();
            let acked = i.plain.queue(&topic, stream, &parts).await?;
            let stream = stream.to_string();
            return Ok(Box::pin(async move {
                let r = acked.wait().await.map_err(|e| map(&e, &stream))?;
                i.pool.appended.notify_waiters();
                Ok(Appended::Stored(produce::ranges(r)))
            }));
        };
        let key = state::key(stream, e.incarnation, &pb.id);
        let lock = i.producers.with(&key, |p| p.lock.clone());
        let held = lock.lock().await;
        let sp = i.producers.partition(&key);
        if i.producers.with(&key, |p| p.uncertain && p.in_flight == 0) {
            i.sync_state(sp).await?;
            i.producers.with(&key, |p| p.uncertain = false);
        }
        let seen = i.producers.with(&key, |p| {
            if pb.epoch < p.epoch {
                return Some(Appended::Fenced { epoch: p.epoch });
            }
            (pb.block <= p.last_block).then(|| Appended::Duplicate {
                last_block: p.last_block,
                ranges: (pb.block == p.last_block).then(|| p.ranges.clone()).flatten(),
            })
        });
        if let Some(a) = seen {
            return Ok(Box::pin(std::future::ready(Ok(a))));
        }
        let value = serde_json::to_vec(&StateRecord {
            b: Some(pb.block),
            e: Some(pb.epoch),
            n: i.cfg.node_id.clone(),
            l: i.cfg.lanes,
            f: false,
        })
        .map_err(|e| Error::Unavailable(e.to_string()))?;
        let (producer, parts) = block.into_parts();
        let producer = producer.unwrap_or_else(|| pb.clone());
        let (topic, stream_a): (Arc<str>, Arc<str>) = (topic.into(), stream.into());
        // a producer's blocks go through one lane, in order
        let reply = i
            .lanes()?
            .queue(Job {
                topic,
                stream: stream_a,
                producer,
                parts,
                state: (sp, key.clone(), value),
                reply: None,
            })
            .await?;
        i.producers.with(&key, |p| p.in_flight += 1);
        drop(held);
        Ok(Box::pin(async move {
            let r = reply
                .await
                .unwrap_or_else(|_| Err(Error::Unavailable("kafka lane stopped".into())));
            let idle = i.producers.with(&key, |p| {
                p.in_flight = p.in_flight.saturating_sub(1);
                match &r {
                    Ok(ranges) => {
                        if pb.block >= p.last_block {
                            p.last_block = pb.block;
                            p.ranges = Some(ranges.clone());
                        }
                    }
                    // the transaction may have committed: look before the
                    // next block
                    Err(_) => p.uncertain = true,
                }
                p.idle.clone()
            });
            idle.notify_waiters();
            let ranges = r?;
            i.pool.appended.notify_waiters();
            Ok(Appended::Stored(ranges))
        }))
    }

    /// The transactional ids of `node` start with this, then the lane.
    fn txn_prefix(&self, node: &str) -> String {
        format!("{}switchboard.{node}.", self.cfg.topic_prefix)
    }

    fn topic(&self, stream: &str) -> String {
        format!("{}{stream}", self.cfg.topic_prefix)
    }

    fn entry(&self, stream: &str) -> Result<catalog::Entry> {
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(Error::Unavailable("store is closed".into()));
        }
        self.catalog
            .get(stream)
            .ok_or_else(|| Error::NotFound(stream.to_string()))
    }

    fn sync_timeout(&self) -> Duration {
        self.cfg.transaction_timeout + self.cfg.commit_timeout
    }

    /// Waits until the catalog view holds everything written before now.
    async fn sync_catalog(&self) -> Result<()> {
        let (p, o) = self
            .plain
            .write_one(&self.streams_topic, 0, catalog::SYNC_KEY, Some(b"{}"))
            .await?;
        self.catalog_tail.wait_applied(p, o, self.sync_timeout()).await
    }

    /// Waits until the producer view holds everything committed in the
    /// state partition `partition` before now.
    async fn sync_state(&self, partition: u32) -> Result<()> {
        let (p, o) = self
            .plain
            .write_one(&self.producers_topic, partition, state::SYNC_KEY, Some(b"{}"))
            .await?;
        self.producers_tail.wait_applied(p, o, self.sync_timeout()).await
    }

    async fn sync_all_state(&self) -> Result<()> {
        let all = (0..self.cfg.state_partitions).map(|p| self.sync_state(p));
        futures::future::try_join_all(all).await.map(|_| ())
    }

    fn lanes(&self) -> Result<&Lanes> {
        self.lanes
            .get()
            .ok_or_else(|| Error::Unavailable("kafka store is starting".into()))
    }

    /// Fences every transactional id of `node` (`lanes` of them): what it
    /// had open is aborted, and its producers fail until it starts them
    /// again (and catches up with the state topic first).
    async fn fence_node(&self, node: &str, lanes: u32) -> Result<()> {
        tracing::info!(
            node,
            lanes,
            "kafka: fencing the transactions of the node that held a producer"
        );
        let all = (0..lanes.max(1)).map(|lane| {
            let mut c = self.producing.clone();
            c.set("transactional.id", format!("{}{lane}", self.txn_prefix(node)));
            let timeout = self.cfg.commit_timeout;
            blocking(move || {
                let p = produce::KProducer::create(&c)?;
                p.init_transactions(timeout)
                    .map_err(|e| Error::Unavailable(format!("kafka: fencing {e}")))
            })
        });
        futures::future::try_join_all(all).await.map(|_| ())
    }

    async fn watermarks(&self, topic: &str, stream: &str, partitions: u32) -> Result<Vec<(u64, u64)>> {
        let (meta, topic, stream) = (self.meta.clone(), topic.to_string(), stream.to_string());
        let timeout = self.cfg.commit_timeout;
        blocking(move || {
            (0..partitions)
                .map(|p| {
                    meta.fetch_watermarks(&topic, p as i32, timeout)
                        .map(|(lo, hi)| (lo.max(0) as u64, hi.max(0) as u64))
                        .map_err(|e| map(&e, &stream))
                })
                .collect()
        })
        .await
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or("-1".to_string(), |v| v.min(i64::MAX as u64).to_string())
}

#[async_trait]
impl Store for KafkaStore {
    async fn create_stream(&self, name: &str, settings: StreamSettings) -> Result<bool> {
        let i = &self.inner;
        switchboard_store::check_stream(name, &settings)?;
        if name.starts_with("__switchboard") {
            return Err(Error::Invalid(format!("stream name {name:?} is reserved")));
        }
        i.sync_catalog().await?;
        if let Some(e) = i.catalog.get(name) {
            return if e.settings() == settings {
                Ok(false)
            } else {
                Err(Error::Conflict(name.to_string()))
            };
        }
        let topic = i.topic(name);
        let (ms, bytes) = (opt(settings.retention_ms), opt(settings.retention_bytes));
        let t = NewTopic::new(
            &topic,
            settings.partitions as i32,
            TopicReplication::Fixed(i.cfg.replication_factor),
        )
        .set("retention.ms", &ms)
        .set("retention.bytes", &bytes);
        let r = i
            .admin
            .create_topics(
                [&t],
                &AdminOptions::new().operation_timeout(Some(i.cfg.commit_timeout)),
            )
            .await
            .map_err(|e| Error::Unavailable(format!("kafka: creating topic {topic}: {e}")))?;
        match r.first() {
            Some(Ok(_)) => {}
            Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => {
                // made by another node just now, or by someone else: only
                // a catalog record makes it a stream
                i.sync_catalog().await?;
                return match i.catalog.get(name) {
                    Some(e) if e.settings() == settings => Ok(false),
                    _ => {
                        tracing::warn!(topic, "kafka: a topic of this name exists and is not this stream");
                        Err(Error::Conflict(name.to_string()))
                    }
                };
            }
            Some(Err((_, RDKafkaErrorCode::InvalidReplicationFactor))) => {
                return Err(Error::Invalid(format!(
                    "kafka: replication factor {} is more than the brokers",
                    i.cfg.replication_factor
                )))
            }
            Some(Err((_, code))) => {
                return Err(Error::Unavailable(format!(
                    "kafka: creating topic {topic}: {code}"
                )))
            }
            None => {
                return Err(Error::Unavailable(format!(
                    "kafka: creating topic {topic}: no answer"
                )))
            }
        }
        // readers and describes of the new topic need its partitions known
        for _ in 0..100 {
            if topic_partitions(&i.meta, &topic, i.cfg.commit_timeout).await? == Some(settings.partitions) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let entry = catalog::Entry::new(settings, rand::random::<u64>() | 1);
        let value = serde_json::to_vec(&entry).map_err(|e| Error::Unavailable(e.to_string()))?;
        let (p, o) = i
            .plain
            .write_one(&i.streams_topic, 0, name.as_bytes(), Some(&value))
            .await?;
        i.catalog_tail.wait_applied(p, o, i.sync_timeout()).await?;
        Ok(true)
    }

    async fn delete_stream(&self, name: &str) -> Result<()> {
        let i = &self.inner;
        i.sync_catalog().await?;
        i.entry(name)?;
        let topic = i.topic(name);
        let r = i
            .admin
            .delete_topics(
                &[&topic],
                &AdminOptions::new().operation_timeout(Some(i.cfg.commit_timeout)),
            )
            .await
            .map_err(|e| Error::Unavailable(format!("kafka: deleting topic {topic}: {e}")))?;
        match r.first() {
            Some(Ok(_)) | Some(Err((_, RDKafkaErrorCode::UnknownTopicOrPartition))) => {}
            Some(Err((_, code))) => {
                return Err(Error::Unavailable(format!(
                    "kafka: deleting topic {topic}: {code}"
                )))
            }
            None => {
                return Err(Error::Unavailable(format!(
                    "kafka: deleting topic {topic}: no answer"
                )))
            }
        }
        // the broker deletes in the background: wait, so that the name can
        // be used again at once
        for _ in 0..300 {
            if topic_partitions(&i.meta, &topic, i.cfg.commit_timeout)
                .await?
                .is_none()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (p, o) = i
            .plain
            .write_one(&i.streams_topic, 0, name.as_bytes(), None)
            .await?;
        i.catalog_tail.wait_applied(p, o, i.sync_timeout()).await?;
        i.pool.appended.notify_waiters();
        Ok(())
    }

    async fn list_streams(&self) -> Result<Vec<(String, StreamSettings)>> {
        Ok(self.inner.catalog.list())
    }

    async fn stream_settings(&self, name: &str) -> Result<StreamSettings> {
        Ok(self.inner.entry(name)?.settings())
    }

    async fn describe_stream(&self, name: &str) -> Result<StreamState> {
        let i = &self.inner;
        let e = i.entry(name)?;
        let w = i.watermarks(&i.topic(name), name, e.partitions).await?;
        Ok(StreamState {
            name: name.to_string(),
            settings: e.settings(),
            incarnation: e.incarnation,
            start_offsets: w.iter().map(|x| x.0).collect(),
            end_offsets: w.iter().map(|x| x.1).collect(),
        })
    }

    async fn append(&self, stream: &str, block: Block) -> Result<Appended> {
        self.submit(stream, block).await.await
    }

    async fn submit(&self, stream: &str, block: Block) -> Submitted {
        match self.inner.clone().submit(stream, block).await {
            Ok(f) => f,
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    async fn last_block(&self, stream: &str, producer: &str) -> Result<u64> {
        let i = &self.inner;
        let e = i.entry(stream)?;
        let key = state::key(stream, e.incarnation, producer);
        i.sync_state(i.producers.partition(&key)).await?;
        Ok(i.producers.with(&key, |p| p.last_block))
    }

    async fn fence_producer(&self, stream: &str, producer: &str) -> Result<Fencing> {
        let i = &self.inner;
        let e = i.entry(stream)?;
        let key = state::key(stream, e.incarnation, producer);
        let lock = i.producers.with(&key, |p| p.lock.clone());
        let _held = lock.lock().await;
        // the blocks of this producer already on their way land first
        loop {
            let idle = i.producers.with(&key, |p| p.idle.clone());
            let n = idle.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if i.producers.with(&key, |p| p.in_flight == 0) {
                break;
            }
            n.await;
        }
        let sp = i.producers.partition(&key);
        let me = i.cfg.node_id.clone();
        // 1. the marker: its offset is the new epoch, and any node that
        //    catches up past it sees this session
        let marker = serde_json::to_vec(&StateRecord {
            b: None,
            e: None,
            n: me.clone(),
            l: i.cfg.lanes,
            f: true,
        })
        .map_err(|e| Error::Unavailable(e.to_string()))?;
        let before: Vec<state::Holder> = i.producers.with(&key, |p| p.holders.clone());
        let (_, at) = i
            .plain
            .write_one(&i.producers_topic, sp, &key, Some(&marker))
            .await?;
        // 2. the node that held it stops: its open transactions abort (so
        //    the catch-up below is not held back by them)
        let mut fenced: Vec<String> = Vec::new();
        if let Some((_, node, lanes)) = before.last() {
            if *node != me {
                i.fence_node(node, *lanes).await?;
                fenced.push(node.clone());
            }
        }
        // 3. catch up past the marker; a holder the view did not know yet
        //    is fenced too, then we catch up once more
        i.producers_tail.wait_applied(sp, at, i.sync_timeout()).await?;
        let missed: Vec<state::Holder> = i.producers.with(&key, |p| {
            p.holders
                .iter()
                .filter(|h| h.0 < at && h.1 != me && !fenced.contains(&h.1))
                .cloned()
                .collect()
        });
        if !missed.is_empty() {
            for (_, node, lanes) in &missed {
                i.fence_node(node, *lanes).await?;
            }
            i.sync_state(sp).await?;
        }
        let f = i.producers.with(&key, |p| {
            p.uncertain = false;
            Fencing {
                epoch: at + 1,
                last_block: p.last_block,
            }
        });
        Ok(f)
    }

    async fn offsets_for_time(&self, stream: &str, timestamp_ms: i64) -> Result<Vec<u64>> {
        let i = &self.inner;
        let e = i.entry(stream)?;
        let topic = i.topic(stream);
        let ends = i.watermarks(&topic, stream, e.partitions).await?;
        let (meta, s) = (i.meta.clone(), stream.to_string());
        let timeout = i.cfg.commit_timeout;
        blocking(move || {
            let mut tpl = TopicPartitionList::new();
            for p in 0..e.partitions {
                tpl.add_partition_offset(&topic, p as i32, Offset::Offset(timestamp_ms))
                    .map_err(invalid)?;
            }
            let r = meta.offsets_for_times(tpl, timeout).map_err(|e| map(&e, &s))?;
            Ok((0..e.partitions)
                .map(|p| {
                    let end = ends[p as usize].1;
                    match r.find_partition(&topic, p as i32).map(|x| x.offset()) {
                        Some(Offset::Offset(o)) if o >= 0 => (o as u64).min(end),
                        _ => end,
                    }
                })
                .collect())
        })
        .await
    }

    async fn open_reader(&self, stream: &str, positions: &[(u32, u64)]) -> Result<Box<dyn StoreReader>> {
        let i = &self.inner;
        let e = i.entry(stream)?;
        if let Some(&(p, _)) = positions.iter().find(|(p, _)| *p >= e.partitions) {
            return Err(Error::Invalid(format!("stream {stream:?} has no partition {p}")));
        }
        Ok(Box::new(i.pool.reader(
            i.topic(stream).into(),
            stream.into(),
            positions.to_vec(),
        )))
    }

    fn health(&self) -> Option<String> {
        self.inner.health.lock().clone()
    }

    async fn close(&self) -> Result<()> {
        let i = self.inner.clone();
        i.closed.store(true, std::sync::atomic::Ordering::Release);
        i.pool.close();
        let timeout = i.cfg.commit_timeout;
        let r = blocking(move || {
            let r = i.plain.flush(timeout);
            i.catalog_tail.stop();
            i.producers_tail.stop();
            r
        })
        .await;
        r
    }
}
