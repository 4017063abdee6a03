//! Apache Kafka with no Switchboard in between: a topic with a partition
//! per lane (`sync`: `flush.messages=1`, every record fsynced before it is
//! acknowledged; `async`: the broker's defaults); idempotent producers
//! (`acks=all`) send a batch to their partition and wait for every
//! delivery; consumers are assigned their lanes' partitions and commit
//! their position once per batch.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::stats::{self, InFlight, Sampler, Stats};
use crate::{Class, Load, Peer, Server};

/// Ports of the benchmark's broker (apart from the tests' 9092).
const PORT: u16 = 9192;
const TOPIC: &str = "bench";

pub fn brokers() -> String {
    format!("127.0.0.1:{PORT}")
}

/// Starts a Kafka broker with scripts/kafka; `sync`: it fsyncs every
/// record before acknowledging it (`log.flush.interval.messages=1`, for
/// the topics Switchboard creates too).
pub fn start_broker(scripts: &Path, dir: &Path, class: Class) -> Result<Server> {
    let script = scripts.join("kafka");
    let dir = dir.join("kafka");
    let out = std::process::Command::new(&script)
        .arg("start")
        .arg(&dir)
        .env("KAFKA_PORT", PORT.to_string())
        .env("KAFKA_CONTROLLER_PORT", (PORT + 1).to_string())
        .env(
            "KAFKA_FLUSH_MESSAGES",
            if class == Class::Sync { "1" } else { "" },
        )
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "scripts/kafka start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid: u32 = std::fs::read_to_string(dir.join("kafka.pid"))?.trim().parse()?;
    Ok(Server::new(
        vec![pid],
        format!(
            "Kafka 4.1.2 (one KRaft node, -Xmx512m, {})",
            if class == Class::Sync {
                "log.flush.interval.messages=1"
            } else {
                "default flush: page cache"
            }
        ),
        move || {
            let _ = std::process::Command::new(script).arg("stop").arg(dir).output();
        },
    ))
}

pub struct Kafka {
    load: Load,
}

/// Starts the broker and creates the topic.
pub async fn start(scripts: &Path, dir: &Path, class: Class, load: &Load) -> Result<(Server, Arc<dyn Peer>)> {
    let mut server = start_broker(scripts, dir, class)?;
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers()).create()?;
    let mut topic = NewTopic::new(TOPIC, load.lanes() as i32, TopicReplication::Fixed(1));
    if class == Class::Sync {
        topic = topic.set("flush.messages", "1");
    }
    for r in admin
        .create_topics(
            &[topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await?
    {
        r.map_err(|(t, e)| anyhow::anyhow!("creating topic {t}: {e}"))?;
    }
    server.config = format!(
        "{}{}, idempotent producers with acks=all",
        server.config,
        if class == Class::Sync {
            ", topic flush.messages=1"
        } else {
            ""
        }
    );
    Ok((server, Arc::new(Kafka { load: load.clone() })))
}

impl Peer for Kafka {
    fn produce(self: Arc<Self>, p: usize, stats: Arc<Stats>) -> tokio::task::JoinHandle<Result<()>> {
        tokio::spawn(async move {
            let producer: FutureProducer = ClientConfig::new()
                .set("bootstrap.servers", brokers())
                .set("enable.idempotence", "true")
                .set("acks", "all")
                .set("linger.ms", "5")
                .set("batch.num.messages", self.load.batch.to_string())
                .set(
                    "batch.size",
                    (self.load.batch * (self.load.event_size + 64))
                        .clamp(16_384, 16 << 20)
                        .to_string(),
                )
                .create()?;
            let partition = (p % self.load.lanes()) as i32;
            let mut in_flight = InFlight::new(self.load.window, self.load.batch as u64);
            // librdkafka copies the payload: one buffer serves every event
            let mut ev = stats::binary_event(self.load.event_size);
            while !stats.stopped() {
                let t = Instant::now();
                let mut acks = Vec::with_capacity(self.load.batch);
                for _ in 0..self.load.batch {
                    stats::stamp(&mut ev);
                    let record = FutureRecord::<(), _>::to(TOPIC).partition(partition).payload(&ev);
                    let d = producer
                        .send_result(record)
                        .map_err(|(e, _)| anyhow::anyhow!("send: {e}"))?;
                    acks.push(async move {
                        d.await
                            .map_err(|_| anyhow::anyhow!("a delivery was cancelled"))?
                            .map(drop)
                            .map_err(|(e, _)| anyhow::anyhow!("delivery failed: {e}"))
                    });
                }
                in_flight.push(t, acks, &stats).await?;
            }
            in_flight.drain(&stats).await?;
            Ok(())
        })
    }

    fn consume(
        self: Arc<Self>,
        c: usize,
        stats: Arc<Stats>,
        done: Arc<AtomicBool>,
    ) -> tokio::task::JoinHandle<Result<()>> {
        tokio::spawn(async move {
            let consumer: StreamConsumer = ClientConfig::new()
                .set("bootstrap.servers", brokers())
                .set("group.id", format!("bench-c{c}"))
                .set("enable.auto.commit", "false")
                .set("fetch.queue.backoff.ms", "5")
                .create()?;
            let mut tpl = TopicPartitionList::new();
            for lane in self.load.lanes_of(c) {
                tpl.add_partition_offset(TOPIC, lane as i32, Offset::Beginning)?;
            }
            consumer.assign(&tpl)?;
            let mut sampler = Sampler::default();
            let mut positions: Vec<(i32, i64)> = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let m = tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await;
                if let Ok(m) = m {
                    let m = m?;
                    sampler.see(|| m.payload().and_then(stats::binary_sent));
                    match positions.iter_mut().find(|(p, _)| *p == m.partition()) {
                        Some(pos) => pos.1 = m.offset() + 1,
                        None => positions.push((m.partition(), m.offset() + 1)),
                    }
                    if sampler.pending() < self.load.batch as u64 {
                        continue;
                    }
                }
                // a batch, or what came before a pause: its position committed
                if sampler.pending() > 0 {
                    let mut done_tpl = TopicPartitionList::new();
                    for (p, o) in &positions {
                        done_tpl.add_partition_offset(TOPIC, *p, Offset::Offset(*o))?;
                    }
                    consumer.commit(&done_tpl, CommitMode::Async)?;
                    sampler.acked(&stats);
                }
            }
            Ok(())
        })
    }
}
