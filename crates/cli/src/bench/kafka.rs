//! `switchboard bench kafka-direct`: what a Kafka client gets from the
//! broker with no Switchboard in between, for the Kafka store's
//! comparisons. Writers are rdkafka producers (idempotent, `acks=all`) that
//! send blocks of `--batch` events to one partition each and wait for the
//! whole block to be acknowledged (with `--window` blocks in flight, as
//! `bench e2e`'s writers do); with `--transactional` each block is one
//! transaction. Readers are assign-based consumers (no consumer group
//! offsets), each on its share of the partitions, from the start.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use super::e2e::{ms, pct, Load};

/// Options of `switchboard bench kafka-direct`.
#[derive(Debug, Args)]
pub struct KafkaBench {
    /// Bootstrap brokers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    #[command(flatten)]
    load: Load,
    /// One transaction per block (a transactional id per writer), readers
    /// `read_committed`.
    #[arg(long)]
    transactional: bool,
    /// An extra producer property, `key=value` (repeatable).
    #[arg(long = "producer-property")]
    producer_properties: Vec<String>,
    /// An extra consumer property, `key=value` (repeatable): the readers
    /// with the settings a Switchboard node gives its own, for instance.
    #[arg(long = "consumer-property")]
    consumer_properties: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    bench: &'static str,
    transactional: bool,
    writers: usize,
    readers: usize,
    window: usize,
    event_size: usize,
    batch: usize,
    duration_s: f64,
    published: u64,
    consumed: u64,
    publish_events_s: f64,
    consume_events_s: f64,
    publish_mb_s: f64,
    /// From a block's first send to its last acknowledgement (or its
    /// transaction's commit).
    commit_p50_ms: f64,
    commit_p99_ms: f64,
}

/// Runs the benchmark; prints progress to stderr and the report last.
pub fn run(b: KafkaBench) -> Result<()> {
    if b.load.writers == 0 || b.load.batch == 0 || b.load.duration == 0 || b.load.window == 0 {
        bail!("--writers, --batch, --window and --duration must be positive");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = rt.block_on(drive(&b))?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Sets `key=value` properties given with `flag`.
fn set_properties(c: &mut ClientConfig, properties: &[String], flag: &str) -> Result<()> {
    for p in properties {
        let (k, v) = p
            .split_once('=')
            .with_context(|| format!("{flag} {p:?}: expected key=value"))?;
        c.set(k, v);
    }
    Ok(())
}

fn producer(b: &KafkaBench, writer: usize, topic: &str) -> Result<FutureProducer> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &b.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("batch.num.messages", b.load.batch.max(1).to_string())
        .set(
            "batch.size",
            (b.load.batch * (b.load.event_size + 64))
                .clamp(16_384, 16 << 20)
                .to_string(),
        )
        .set("queue.buffering.max.kbytes", "1048576");
    if b.transactional {
        c.set("transactional.id", format!("{topic}-writer-{writer}"));
    }
    set_properties(&mut c, &b.producer_properties, "--producer-property")?;
    c.create().context("creating a Kafka producer")
}

/// Waits (blocking) until every record of a block is acknowledged.
fn delivered(acks: Vec<rdkafka::producer::DeliveryFuture>) -> Result<()> {
    for a in acks {
        futures::executor::block_on(a)
            .map_err(|_| anyhow::anyhow!("a delivery was cancelled"))?
            .map_err(|(e, _)| anyhow::anyhow!("delivery failed: {e}"))?;
    }
    Ok(())
}

/// `bench kafka-direct` with `load` on `brokers` (idempotent producers):
/// (publish, consume) events/s, for `bench e2e --store kafka://`.
pub(super) async fn direct(brokers: &str, load: &Load) -> Result<(f64, f64)> {
    let b = KafkaBench {
        brokers: brokers.to_string(),
        load: load.clone(),
        transactional: false,
        producer_properties: Vec::new(),
        consumer_properties: Vec::new(),
    };
    let r = drive(&b).await?;
    eprintln!("{}", serde_json::to_string(&r)?);
    Ok((r.publish_events_s, r.consume_events_s))
}

async fn drive(b: &KafkaBench) -> Result<Report> {
    let partitions = b
        .load
        .partitions
        .unwrap_or(b.load.writers.max(b.load.readers) as u32)
        .max(1);
    let topic = format!("bench-direct-{}", rand::random::<u32>());
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &b.brokers)
        .create()
        .context("creating a Kafka admin client")?;
    let created = admin
        .create_topics(
            &[NewTopic::new(
                &topic,
                partitions as i32,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .context("creating the benchmark topic")?;
    for r in created {
        if let Err((t, e)) = r {
            bail!("creating topic {t}: {e}");
        }
    }
    let value = vec![b'x'; b.load.event_size];
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let consumed = Arc::new(AtomicU64::new(0));

    let mut readers = Vec::new();
    for r in 0..b.load.readers {
        let parts: Vec<u32> = (0..partitions)
            .filter(|p| *p as usize % b.load.readers == r)
            .collect();
        if parts.is_empty() {
            continue;
        }
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &b.brokers)
            // librdkafka wants a group for `assign`; nothing is committed
            .set("group.id", format!("{topic}-reader-{r}"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set(
                "isolation.level",
                if b.transactional {
                    "read_committed"
                } else {
                    "read_uncommitted"
                },
            );
        set_properties(&mut c, &b.consumer_properties, "--consumer-property")?;
        let consumer: StreamConsumer = c.create().context("creating a Kafka consumer")?;
        let mut tpl = TopicPartitionList::new();
        for p in &parts {
            tpl.add_partition_offset(&topic, *p as i32, Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        let (consumed, stop) = (consumed.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            loop {
                match tokio::time::timeout(Duration::from_secs(3), consumer.recv()).await {
                    Ok(Ok(_)) => {
                        consumed.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Err(e)) => return Err(anyhow::anyhow!("consuming: {e}")),
                    // quiet for 3 s after the writers stopped: all is read
                    Err(_) if stop.load(Ordering::Acquire) => return Ok(()),
                    Err(_) => {}
                }
            }
        }));
    }

    let started = Instant::now();
    let mut writers = Vec::new();
    for w in 0..b.load.writers {
        let producer = producer(b, w, &topic)?;
        let (stop, published, topic, value) = (stop.clone(), published.clone(), topic.clone(), value.clone());
        let (batch, window, transactional) = (b.load.batch, b.load.window.max(1), b.transactional);
        let first_partition = (w as u32) % partitions;
        // transactions are driven by blocking calls: a thread per writer
        writers.push(tokio::task::spawn_blocking(move || -> Result<Vec<f64>> {
            let mut latencies = Vec::new();
            if transactional {
                producer.init_transactions(Duration::from_secs(30))?;
            }
            let mut in_flight: VecDeque<(Instant, Vec<rdkafka::producer::DeliveryFuture>)> = VecDeque::new();
            let mut partition = first_partition;
            while !stop.load(Ordering::Acquire) {
                let t = Instant::now();
                if transactional {
                    producer.begin_transaction()?;
                }
                let mut acks = Vec::with_capacity(batch);
                for _ in 0..batch {
                    let mut record = FutureRecord::<(), [u8]>::to(&topic)
                        .payload(&value)
                        .partition(partition as i32);
                    loop {
                        match producer.send_result(record) {
                            Ok(f) => {
                                acks.push(f);
                                break;
                            }
                            Err((e, r)) => {
                                // the local queue is full: let it drain
                                record = r;
                                if !matches!(
                                    e,
                                    rdkafka::error::KafkaError::MessageProduction(
                                        rdkafka::types::RDKafkaErrorCode::QueueFull
                                    )
                                ) {
                                    return Err(e.into());
                                }
                                producer.poll(Duration::from_millis(5));
                            }
                        }
                    }
                }
                partition = (partition + 1) % partitions;
                if transactional {
                    // every record acknowledged first: the rdkafka crate's
                    // commit flushes with a 100 ms poll whenever anything is
                    // still outstanding, and with a threaded producer that
                    // poll waits its full 100 ms, for every transaction
                    delivered(acks)?;
                    producer.commit_transaction(Duration::from_secs(30))?;
                    latencies.push(ms(t.elapsed()));
                    published.fetch_add(batch as u64, Ordering::Relaxed);
                    continue;
                }
                in_flight.push_back((t, acks));
                while in_flight.len() >= window {
                    let Some((t, acks)) = in_flight.pop_front() else {
                        break;
                    };
                    delivered(acks)?;
                    latencies.push(ms(t.elapsed()));
                    published.fetch_add(batch as u64, Ordering::Relaxed);
                }
            }
            for (t, acks) in in_flight {
                delivered(acks)?;
                latencies.push(ms(t.elapsed()));
                published.fetch_add(batch as u64, Ordering::Relaxed);
            }
            Ok(latencies)
        }));
    }
    tokio::time::sleep(Duration::from_secs(b.load.duration)).await;
    stop.store(true, Ordering::Release);
    let mut latencies = Vec::new();
    for w in writers {
        latencies.extend(w.await??);
    }
    let publish_s = started.elapsed().as_secs_f64();
    for r in readers {
        r.await??;
    }
    // the readers stop after 3 quiet seconds: that tail is not reading
    let consume_s = (started.elapsed().as_secs_f64() - 3.0).max(publish_s);
    let _ = admin.delete_topics(&[&topic], &AdminOptions::new()).await;
    let (published, consumed) = (
        published.load(Ordering::Relaxed),
        consumed.load(Ordering::Relaxed),
    );
    let rate = |n: u64, s: f64| (n as f64 / s).round();
    Ok(Report {
        bench: "kafka-direct",
        transactional: b.transactional,
        writers: b.load.writers,
        readers: b.load.readers,
        window: b.load.window,
        event_size: b.load.event_size,
        batch: b.load.batch,
        duration_s: publish_s,
        published,
        consumed,
        publish_events_s: rate(published, publish_s),
        consume_events_s: rate(consumed, consume_s),
        publish_mb_s: (published as f64 * b.load.event_size as f64 / publish_s / 1e6 * 10.0).round() / 10.0,
        commit_p50_ms: pct(&mut latencies, 0.50),
        commit_p99_ms: pct(&mut latencies, 0.99),
    })
}
