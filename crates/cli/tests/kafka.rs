//! What only the Kafka store does, against the real broker at
//! `SWITCHBOARD_KAFKA` (scripts/test starts one; without it these tests
//! pass at once): placement as Kafka's own producers place keys, and a
//! zombie node that wakes up after its producer moved to another node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::Server;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use reqwest::Method;
use serde_json::{json, Value};

fn brokers() -> Option<String> {
    std::env::var("SWITCHBOARD_KAFKA").ok()
}

/// Flags of a node on `brokers` with topics under `prefix`.
fn node_args(brokers: &str, prefix: &str, node: &str) -> Vec<String> {
    [
        "--store",
        &format!("kafka://{brokers}"),
        "--kafka-topic-prefix",
        prefix,
        "--kafka-state-partitions",
        "2",
        "--node-id",
        node,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn start(dir: &Path, args: &[String]) -> Server {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start(dir, &a)
}

fn prefix() -> String {
    format!("k{:08x}.", rand::random::<u32>())
}

/// A node on a broker of the test's own, under `prefix`, whose writes to
/// the broker give up after 3 s; `extra` flags after.
fn own_node(broker: &Broker, data: &Path, prefix: &str, extra: &[&str]) -> Server {
    let mut args = node_args(&broker.brokers(), prefix, "a");
    args.extend(
        ["--kafka-commit-timeout-ms", "3000"]
            .iter()
            .chain(extra)
            .map(|s| s.to_string()),
    );
    start(data, &args)
}

/// Creates stream `name` of `partitions` partitions.
async fn create(raw: &common::Raw, name: &str, partitions: u32) {
    let c = raw
        .json(
            Method::POST,
            "/v1/streams",
            json!({"name": name, "partitions": partitions}),
        )
        .await;
    assert_eq!(c.status, 201, "{}", c.body);
}

#[tokio::test]
async fn keys_land_where_kafka_producers_put_them() {
    let Some(brokers) = brokers() else { return };
    let d = tempfile::tempdir().unwrap();
    let prefix = prefix();
    let s = start(&d.path().join("a"), &node_args(&brokers, &prefix, "a"));
    let raw = s.raw();
    let a = raw
        .json(
            Method::POST,
            "/v1/streams",
            json!({"name": "placed", "partitions": 7, "encrypt_keys": false}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let keys: Vec<String> = (0..120).map(|i| format!("user-{i}")).collect();
    let events: Vec<Value> = keys
        .iter()
        .map(|k| json!({"key": k, "value": {"k": k}}))
        .collect();
    let a = raw
        .json(
            Method::POST,
            "/v1/streams/placed/events",
            json!({ "events": events }),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let placed: Vec<i32> = a.body["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["partition"].as_i64().unwrap() as i32)
        .collect();
    let topic = format!("{prefix}placed");
    // a Kafka producer with the Java client's partitioner puts each key in
    // the same partition
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap();
    for (k, want) in keys.iter().zip(&placed) {
        let delivered = producer
            .send(
                FutureRecord::<str, str>::to(&topic).key(k).payload("from kafka"),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        assert_eq!(delivered.partition, *want, "key {k}");
    }
    // and a plain consumer sees Switchboard's records with their keys, in
    // the partitions they were placed in
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "test")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..7 {
        tpl.add_partition_offset(&topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut seen = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while seen < keys.len() * 2 && std::time::Instant::now() < deadline {
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.unwrap();
        let key = std::str::from_utf8(m.key().unwrap()).unwrap();
        let i: usize = key.trim_start_matches("user-").parse().unwrap();
        assert_eq!(m.partition(), placed[i], "{key}");
        let from_switchboard = m.headers().is_some_and(|h| h.iter().any(|h| h.key == "sb.f"));
        if from_switchboard {
            assert!(m.payload().is_some());
        }
        seen += 1;
    }
    assert_eq!(seen, keys.len() * 2);
}

async fn allocate_producer(raw: &common::Raw, stream: &str, producer: &str) -> (String, String, Value) {
    let a = raw
        .json(
            Method::POST,
            "/v1/sessions",
            json!({"stream": stream, "mode": "write", "producer": producer}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    (
        a.body["session"].as_str().unwrap().to_string(),
        a.body["secret"].as_str().unwrap().to_string(),
        a.body.clone(),
    )
}

/// Writes block `block` with one event `value` and commits it (durably
/// or not); answers the write when it failed, else the commit.
async fn commit_one(
    raw: &common::Raw,
    id: &str,
    secret: &str,
    block: u64,
    value: &str,
    durable: bool,
) -> common::Answer {
    let w = raw
        .post_signed(
            &format!("/v1/sessions/{id}/write"),
            secret,
            json!({"block": block, "events": [{"value": value}]})
                .to_string()
                .as_bytes(),
        )
        .await;
    if w.status != 200 {
        return w;
    }
    raw.post_signed(
        &format!("/v1/sessions/{id}/commit"),
        secret,
        json!({"block": block, "durable": durable}).to_string().as_bytes(),
    )
    .await
}

/// Writes and durably commits `block` with one event `value`.
async fn put(raw: &common::Raw, id: &str, secret: &str, block: u64, value: &str) -> common::Answer {
    commit_one(raw, id, secret, block, value, true).await
}

async fn stored_values(raw: &common::Raw, stream: &str) -> Vec<String> {
    let mut out: Vec<String> = common::read_everything(raw, stream)
        .await
        .iter()
        .map(|e| serde_json::from_str::<String>(e.value.as_ref().unwrap().get()).unwrap())
        .collect();
    out.sort();
    out
}

/// A node stopped (SIGSTOP) while it held a producer's session; the
/// producer moves to another node on the same Kafka and writes; the old
/// node wakes up (SIGCONT) and its client goes on writing there: nothing
/// it writes from then on is stored, and every block is stored once.
#[tokio::test]
async fn a_zombie_node_stores_nothing_after_its_producer_moved() {
    let Some(brokers) = brokers() else { return };
    let d = tempfile::tempdir().unwrap();
    let prefix = prefix();
    let a_dir = d.path().join("a");
    let a = start(&a_dir, &node_args(&brokers, &prefix, "a"));
    // both nodes share the keys (data keys are in Kafka, wrapped by the
    // master key)
    let mut b_args = node_args(&brokers, &prefix, "b");
    for (flag, file) in [
        ("--master-key-file", a_dir.join("keys/master.keys")),
        ("--server-key-file", a_dir.join("server.key")),
    ] {
        b_args.push(flag.into());
        b_args.push(file.display().to_string());
    }
    let b = start(&d.path().join("b"), &b_args);
    let (ra, rb) = (a.raw(), b.raw());
    create(&ra, "z", 2).await;
    let (ida, sa, _) = allocate_producer(&ra, "z", "p").await;
    let r = put(&ra, &ida, &sa, 1, "a1").await;
    assert_eq!(r.body["status"], "durable", "{}", r.body);
    // block 2 on its way when the node stops: it may or may not land
    let w = ra
        .post_signed(
            &format!("/v1/sessions/{ida}/write"),
            &sa,
            json!({"block": 2, "events": [{"value": "a2"}]})
                .to_string()
                .as_bytes(),
        )
        .await;
    assert_eq!(w.status, 200, "{}", w.body);
    let ra2 = ra.clone_ref();
    let (ida2, sa2) = (ida.clone(), sa.clone());
    let in_flight = tokio::spawn(async move {
        ra2.post_signed(
            &format!("/v1/sessions/{ida2}/commit"),
            &sa2,
            json!({"block": 2, "durable": true}).to_string().as_bytes(),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(5)).await;
    a.freeze();
    // the producer moves to node b: its last block is whatever landed
    let (idb, sb, body) = allocate_producer(&rb, "z", "p").await;
    let last = body["last_block"].as_u64().unwrap();
    assert!(last == 1 || last == 2, "{body}");
    let r = put(&rb, &idb, &sb, last + 1, "b-next").await;
    assert_eq!(r.body["status"], "durable", "{}", r.body);
    a.send_signal(libc::SIGCONT);
    let first = in_flight.await.unwrap();
    // the old node's session is fenced from now on
    for block in [last + 1, last + 2] {
        let r = put(&ra, &ida, &sa, block, "zombie").await;
        assert_ne!(r.body["status"], "durable", "block {block}: {}", r.body);
    }
    let stored = stored_values(&rb, "z").await;
    let mut want = vec!["a1".to_string(), "b-next".to_string()];
    if last == 2 {
        want.push("a2".into());
    }
    want.sort();
    assert_eq!(
        stored, want,
        "the commit on the stopped node answered {}",
        first.body
    );
    if first.body["status"] == "durable" {
        assert_eq!(
            last, 2,
            "a block answered durable was not seen by the new session"
        );
    }
}

/// The tests with a broker of their own run one at a time (each broker
/// takes a JVM).
static PRIVATE_BROKER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A broker of this test's own (scripts/kafka on other ports), stopped
/// when dropped.
struct Broker {
    dir: tempfile::TempDir,
    port: u16,
}

fn kafka_script(args: &[&str], port: u16, dir: &Path) -> std::process::ExitStatus {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kafka");
    std::process::Command::new(script)
        .args(args)
        .arg(dir)
        .env("KAFKA_PORT", port.to_string())
        .env("KAFKA_CONTROLLER_PORT", (port + 1).to_string())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap()
}

impl Broker {
    fn start() -> Broker {
        let dir = tempfile::tempdir().unwrap();
        // a port pair unlikely to be taken: 19000 + 2k
        let port = 19_000 + 2 * (rand::random::<u16>() % 400);
        let b = Broker { dir, port };
        b.up();
        b
    }

    fn up(&self) {
        assert!(kafka_script(&["start"], self.port, self.dir.path()).success());
    }

    fn down(&self) {
        assert!(kafka_script(&["stop"], self.port, self.dir.path()).success());
    }

    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = kafka_script(&["stop"], self.port, self.dir.path());
    }
}

/// The broker stops under load and comes back: `/readyz` says so, durable
/// commits answer `unavailable` within the commit timeout (never
/// `durable`), and a producer that goes on afterwards stores every event
/// exactly once.
#[tokio::test]
async fn the_broker_stopped_and_restarted_under_load() {
    if brokers().is_none() {
        return;
    }
    let _one_at_a_time = PRIVATE_BROKER.lock().await;
    let broker = Broker::start();
    let d = tempfile::tempdir().unwrap();
    let s = own_node(&broker, &d.path().join("a"), &prefix(), &[]);
    let raw = s.raw();
    create(&raw, "z", 3).await;
    assert_eq!(raw.get("/readyz").await.status, 200);
    // a producer writing all along, through the client's retries
    let client = s.client();
    const BLOCKS: u64 = 200;
    let writer = tokio::spawn(async move {
        let opts = switchboard_client::WriterOptions {
            producer: Some("steady".into()),
            window: 2,
            backoff: switchboard_client::Backoff::new(Duration::from_millis(25), Duration::from_secs(2), 200),
        };
        let mut w = switchboard_client::Writer::open(client, "z", opts).await?;
        while w.next_block() <= BLOCKS {
            let b = w.next_block();
            let events: Vec<switchboard_client::wire::Event> = (0..20)
                .map(|i| switchboard_client::wire::Event::json(&format!("b{b}-{i}")).unwrap())
                .collect();
            w.send(&events).await?;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        w.close().await
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    broker.down();
    // the node notices within a few seconds
    wait_ready(&raw, 503).await;
    // a durable commit of another writer fails within the timeout
    let a = raw
        .json(
            Method::POST,
            "/v1/sessions",
            json!({"stream": "z", "mode": "write"}),
        )
        .await;
    if a.status == 201 {
        let (id, secret) = (
            a.body["session"].as_str().unwrap().to_string(),
            a.body["secret"].as_str().unwrap().to_string(),
        );
        let t = std::time::Instant::now();
        let r = put(&raw, &id, &secret, 1, "while down").await;
        assert_ne!(r.body["status"], "durable", "{}", r.body);
        assert!(t.elapsed() < Duration::from_secs(20), "took {:?}", t.elapsed());
        assert_eq!(r.code(), "unavailable", "{}", r.body);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.up();
    wait_ready(&raw, 200).await;
    let last = tokio::time::timeout(Duration::from_secs(180), writer)
        .await
        .expect("the writer did not finish")
        .unwrap()
        .unwrap();
    assert_eq!(last, BLOCKS);
    let stored = stored_values(&raw, "z").await;
    let mut want: Vec<String> = (1..=BLOCKS)
        .flat_map(|b| (0..20).map(move |i| format!("b{b}-{i}")))
        .collect();
    want.sort();
    let stored: Vec<String> = stored.into_iter().filter(|v| v != "while down").collect();
    assert_eq!(stored.len(), want.len(), "events stored (duplicates or losses)");
    assert_eq!(stored, want);
}

/// Commits `durable: false` blocks `blocks` of one event each
/// (`{tag}-{b}`) and answers their statuses.
async fn schedule(
    raw: &common::Raw,
    id: &str,
    secret: &str,
    tag: &str,
    blocks: std::ops::RangeInclusive<u64>,
) -> Vec<String> {
    let mut statuses = Vec::new();
    for b in blocks {
        let c = commit_one(raw, id, secret, b, &format!("{tag}-{b}"), false).await;
        assert_eq!(c.status, 200, "{}", c.body);
        statuses.push(c.body["status"].as_str().unwrap_or("?").to_string());
    }
    statuses
}

async fn wait_ready(raw: &common::Raw, want: u16) {
    for _ in 0..300 {
        if raw.get("/readyz").await.status == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("/readyz never answered {want}");
}

fn spill_files(data: &Path) -> usize {
    std::fs::read_dir(data.join("spill"))
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "spill"))
            })
            .count()
        })
        .unwrap_or(0)
}

/// The broker is down; blocks are committed with `durable: false`; the
/// node is stopped (SIGTERM): it spills them. With the broker back, the
/// node starts again and re-injects them before it serves: every block
/// is stored, none twice.
#[tokio::test]
async fn scheduled_blocks_are_spilled_at_shutdown_and_stored_at_the_next_start() {
    if brokers().is_none() {
        return;
    }
    let _one_at_a_time = PRIVATE_BROKER.lock().await;
    let broker = Broker::start();
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("a");
    let mut s = own_node(&broker, &data, &prefix(), &["--shutdown-timeout-ms", "8000"]);
    let raw = s.raw();
    create(&raw, "z", 2).await;
    let (idp, sp, _) = allocate_producer(&raw, "z", "p").await;
    let a = raw
        .json(
            Method::POST,
            "/v1/sessions",
            json!({"stream": "z", "mode": "write"}),
        )
        .await;
    let (ida, sa) = (
        a.body["session"].as_str().unwrap().to_string(),
        a.body["secret"].as_str().unwrap().to_string(),
    );
    // the stream's data key is made (and stored) by its first write
    let w = raw
        .json(
            Method::POST,
            "/v1/streams/z/events",
            json!({"events": [{"value": "warm"}]}),
        )
        .await;
    assert_eq!(w.status, 200, "{}", w.body);
    broker.down();
    wait_ready(&raw, 503).await;
    assert_eq!(schedule(&raw, &idp, &sp, "p", 1..=5).await, vec!["scheduled"; 5]);
    assert_eq!(
        schedule(&raw, &ida, &sa, "plain", 1..=4).await,
        vec!["scheduled"; 4]
    );
    assert!(s.terminate().success());
    assert_eq!(spill_files(&data), 9);
    broker.up();
    s.restart();
    let raw = s.raw();
    assert_eq!(spill_files(&data), 0, "re-injected before serving");
    let stored = stored_values(&raw, "z").await;
    let mut want: Vec<String> = (1..=5)
        .map(|b| format!("p-{b}"))
        .chain((1..=4).map(|b| format!("plain-{b}")))
        .chain(["warm".to_string()])
        .collect();
    want.sort();
    assert_eq!(stored, want);
    // the producer's blocks count: a new session of it continues after 5
    let (_, _, body) = allocate_producer(&raw, "z", "p").await;
    assert_eq!(body["last_block"], 5);
    // a damaged spill file is quarantined and does not stop the start
    std::fs::create_dir_all(data.join("spill")).unwrap();
    std::fs::write(data.join("spill/0000000000001-00.spill"), b"SBSPILL1 torn").unwrap();
    s.restart();
    assert_eq!(s.raw().get("/readyz").await.status, 200);
    assert!(data.join("spill/quarantine/0000000000001-00.spill").exists());
}

/// As above, but the node is killed (SIGKILL): `durable: false` blocks
/// the store never took are lost, as docs/ARCHITECTURE.md says; a producer
/// that kept them replays them after `last_block`, once each.
#[tokio::test]
async fn scheduled_blocks_are_lost_on_sigkill_and_producers_replay_them() {
    if brokers().is_none() {
        return;
    }
    let _one_at_a_time = PRIVATE_BROKER.lock().await;
    let broker = Broker::start();
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("a");
    let mut s = own_node(&broker, &data, &prefix(), &[]);
    let raw = s.raw();
    create(&raw, "z", 2).await;
    let (idp, sp, _) = allocate_producer(&raw, "z", "p").await;
    let r = put(&raw, &idp, &sp, 1, "p-1").await;
    assert_eq!(r.body["status"], "durable", "{}", r.body);
    broker.down();
    wait_ready(&raw, 503).await;
    assert_eq!(schedule(&raw, &idp, &sp, "p", 2..=4).await, vec!["scheduled"; 3]);
    s.kill();
    assert_eq!(spill_files(&data), 0);
    broker.up();
    s.restart();
    let raw = s.raw();
    assert_eq!(stored_values(&raw, "z").await, vec!["p-1"]);
    // the producer replays what it kept after last_block
    let (id, secret, body) = allocate_producer(&raw, "z", "p").await;
    assert_eq!(body["last_block"], 1);
    for b in 2..=4u64 {
        let r = put(&raw, &id, &secret, b, &format!("p-{b}")).await;
        assert_eq!(r.body["status"], "durable", "{}", r.body);
    }
    let want: Vec<String> = (1..=4).map(|b| format!("p-{b}")).collect();
    assert_eq!(stored_values(&raw, "z").await, want);
}

/// Encryption at rest works unchanged on Kafka: a scan of the broker's
/// log directory finds no event value in the clear (and finds the marker
/// of a plain Kafka record, so the scan would see one).
#[tokio::test]
async fn no_event_value_reaches_kafkas_disk_in_the_clear() {
    if brokers().is_none() {
        return;
    }
    let _one_at_a_time = PRIVATE_BROKER.lock().await;
    let broker = Broker::start();
    let d = tempfile::tempdir().unwrap();
    let prefix = prefix();
    let s = own_node(&broker, &d.path().join("a"), &prefix, &[]);
    let raw = s.raw();
    create(&raw, "secret", 2).await;
    let marker = format!("plaintext-marker-{:016x}", rand::random::<u64>());
    let events: Vec<Value> = (0..50)
        .map(|i| json!({"key": format!("k{i}"), "value": {"m": marker}, "headers": {"h": "x"}}))
        .collect();
    let a = raw
        .json(
            Method::POST,
            "/v1/streams/secret/events",
            json!({ "events": events }),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    // a writer with a producer id goes through the transactional lanes
    let (id, secret, _) = allocate_producer(&raw, "secret", "p").await;
    let c = put(&raw, &id, &secret, 1, &marker).await;
    assert_eq!(c.body["status"], "durable", "{}", c.body);
    // the events read back
    let stored = common::read_everything(&raw, "secret").await;
    assert_eq!(stored.len(), 51);
    // a control: the same marker written by a plain Kafka producer is found
    let control = format!("{marker}-control");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::<str, str>::to(&format!("{prefix}secret"))
                .key("c")
                .payload(&control),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    // the records are in the segment files (`*.log`) of the topics'
    // partition directories; the index files are large and sparse
    let mut segments = Vec::new();
    let mut stack = vec![broker.dir.path().join("data")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "log") {
                segments.push(std::fs::read(&p).unwrap_or_default());
            }
        }
    }
    let count = |needle: &[u8]| -> usize {
        segments
            .iter()
            .map(|b| memchr::memmem::find_iter(b, needle).count())
            .sum()
    };
    assert_eq!(
        count(control.as_bytes()),
        1,
        "the scan does not see Kafka's records"
    );
    // the control holds the marker as its prefix: every other sighting
    // would be an event value in the clear
    assert_eq!(
        count(marker.as_bytes()),
        1,
        "event values in the clear on Kafka's disk"
    );
}

/// A node pointed at no Kafka says so within its commit timeout, naming
/// the brokers, instead of waiting a minute for an admin call (this one
/// needs no broker).
#[test]
fn a_node_pointed_at_no_kafka_says_so_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let started = std::time::Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(["--store", &format!("kafka://127.0.0.1:{port}")])
        .args(["--kafka-commit-timeout-ms", "3000"])
        .output()
        .unwrap();
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(took < Duration::from_secs(20), "took {took:?}: {err}");
    assert!(
        err.contains(&format!(
            "no answer from the brokers at 127.0.0.1:{port} within 3 s"
        )),
        "{err}"
    );
}
