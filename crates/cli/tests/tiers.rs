//! The two tiers behind the phone switch: `switchboard api` and
//! `switchboard backend` processes that talk through the real RabbitMQ
//! brokers at `SWITCHBOARD_AMQP` (scripts/test starts two). Tests with
//! several backend nodes share a store, the Kafka at `SWITCHBOARD_KAFKA`.
//! Without those variables these tests pass at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Server, TOKEN};
use serde_json::Value;
use switchboard_client::wire::{Allocate, Event, Mode, Read};
use switchboard_client::{Client, Reader, ReaderOptions, Writer, WriterOptions};
use switchboard_proto::ErrorCode;

fn amqp() -> Option<Vec<String>> {
    let v = std::env::var("SWITCHBOARD_AMQP").ok()?;
    Some(v.split(',').map(str::to_string).collect())
}

fn kafka() -> Option<String> {
    std::env::var("SWITCHBOARD_KAFKA").ok()
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_switchboard")
}

/// A cluster of the test's own: shared server key, master key and store.
struct Tiers {
    dir: tempfile::TempDir,
    key: PathBuf,
    store: Vec<String>,
    /// The first backend's master key file, which the others share.
    master: Option<PathBuf>,
    /// Its queues' namespace on the shared brokers.
    namespace: String,
}

impl Tiers {
    /// Backends on `memory://` (one backend only: stores are not shared).
    fn memory() -> Tiers {
        Tiers::with_store(vec!["--store".into(), "memory://".into()])
    }

    /// Backends on the Kafka at `SWITCHBOARD_KAFKA`, on topics of its own.
    fn kafka(brokers: &str) -> Tiers {
        let prefix = format!("r{:08x}.", rand::random::<u32>());
        Tiers::with_store(
            [
                "--store",
                &format!("kafka://{brokers}"),
                "--kafka-topic-prefix",
                &prefix,
                "--kafka-state-partitions",
                "2",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        )
    }

    fn with_store(store: Vec<String>) -> Tiers {
        let mut dir = tempfile::tempdir().unwrap();
        if std::env::var_os("KEEP").is_some() {
            dir.disable_cleanup(true);
            eprintln!("dir {}", dir.path().display());
        }
        let key = dir.path().join("server.key");
        let out = std::process::Command::new(bin())
            .args(["keys", "init-server", "--file"])
            .arg(&key)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        Tiers {
            dir,
            key,
            store,
            master: None,
            namespace: format!("t{:08x}", rand::random::<u32>()),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A backend node `name` attached to `broker`.
    fn backend(&mut self, name: &str, broker: &str, extra: &[&str]) -> Server {
        let mut args: Vec<String> = vec![
            "--router".into(),
            broker.into(),
            "--node-id".into(),
            name.into(),
            "--server-key-file".into(),
            self.key.display().to_string(),
            "--router-call-timeout-ms".into(),
            "3000".into(),
            "--router-namespace".into(),
            self.namespace.clone(),
            "--shutdown-timeout-ms".into(),
            "10000".into(),
        ];
        if let Some(m) = &self.master {
            args.extend(["--master-key-file".into(), m.display().to_string()]);
        }
        args.extend(self.store.iter().cloned());
        args.extend(extra.iter().map(|s| s.to_string()));
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let s = Server::start_role("backend", &self.path(name), &a);
        if self.master.is_none() {
            self.master = Some(self.path(name).join("keys/master.keys"));
        }
        s
    }

    /// An API node `name` routing through `brokers`.
    fn api(&self, name: &str, brokers: &[String], extra: &[&str]) -> Server {
        let list = brokers.join(",");
        let key = self.key.display().to_string();
        let mut args = vec![
            "--router",
            &list,
            "--node-id",
            name,
            "--server-key-file",
            &key,
            "--router-namespace",
            &self.namespace,
        ];
        if !extra.contains(&"--router-call-timeout-ms") {
            args.extend(["--router-call-timeout-ms", "3000"]);
        }
        args.extend(extra);
        Server::start_role("api", &self.path(name), &args)
    }
}

/// The cluster as `api` sees it.
async fn cluster(api: &Server) -> Value {
    let a = api.raw().get("/v1/cluster").await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.body
}

/// Waits until `api` sees each of `nodes` as a ready backend.
async fn wait_backends(api: &Server, nodes: &[&str]) {
    let ok = common::eventually(Duration::from_secs(30), || async {
        let c = cluster(api).await;
        nodes.iter().all(|n| {
            c["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["id"] == *n && x["role"] == "backend" && x["state"] == "ready")
        })
    })
    .await;
    assert!(ok, "backends {nodes:?} not ready: {}", cluster(api).await);
}

fn node_of_session(s: &switchboard_client::Session) -> String {
    switchboard_rpc::id::SessionId::parse(&s.id).unwrap().node
}

fn node_of<'a>(c: &'a Value, id: &str) -> &'a Value {
    c["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == id)
        .unwrap_or_else(|| panic!("no node {id} in {c}"))
}

async fn create(c: &Client, name: &str, partitions: u32) {
    common::create_stream(c, name, partitions).await;
}

/// A writer with producer id `id`.
async fn producer(c: &Client, stream: &str, id: &str) -> Writer {
    let opts = WriterOptions {
        producer: Some(id.into()),
        ..Default::default()
    };
    Writer::open(c.clone(), stream, opts).await.unwrap()
}

fn reader_alloc(stream: &str) -> Allocate {
    Allocate {
        stream: stream.into(),
        mode: Mode::Read,
        cursor: Some("earliest".into()),
        partitions: None,
        producer: None,
    }
}

#[tokio::test]
async fn the_protocol_works_through_the_brokers() {
    let Some(brokers) = amqp() else { return };
    let mut t = Tiers::memory();
    let ops = format!("127.0.0.1:{}", common::free_port());
    let _b = t.backend("b1", &brokers[0], &["--metrics-listen", &ops]);
    let api = t.api("a1", &brokers, &[]);
    wait_backends(&api, &["b1"]).await;
    // the backend's own operations endpoints
    let http = reqwest::Client::new();
    let ready = http.get(format!("http://{ops}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert!(
        common::eventually(Duration::from_secs(10), || async {
            api.raw().get("/readyz").await.status == 200
        })
        .await
    );
    let c = api.client();
    create(&c, "orders", 2).await;
    for i in 0..10 {
        let e = Event {
            key: Some(format!("k{i}")),
            ..Event::json(&i).unwrap()
        };
        c.publish("orders", &[e], None).await.unwrap();
    }
    let mut w = producer(&c, "orders", "p1").await;
    for i in 10..20 {
        w.send(&[Event::json(&i).unwrap()]).await.unwrap();
    }
    w.close().await.unwrap();
    let mut seen: Vec<i64> = common::read_all(&c, "orders")
        .await
        .iter()
        .map(|e| serde_json::from_str(e.value.as_ref().unwrap().get()).unwrap())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..20).collect::<Vec<_>>());
    // the cluster: this API node, the backend with its broker, both brokers
    let cl = cluster(&api).await;
    let b1 = node_of(&cl, "b1");
    assert_eq!(b1["broker"], brokers[0].trim_start_matches("amqp://"));
    assert!(b1["memory_budget"].as_u64().unwrap() > 0, "{cl}");
    assert_eq!(node_of(&cl, "a1")["role"], "api");
    let b = cl["brokers"].as_array().unwrap();
    assert_eq!(b.len(), 2, "{cl}");
    assert!(b.iter().all(|b| b["state"] == "up"), "{cl}");
    let m = http
        .get(format!("http://{ops}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("switchboard_switch_broker_up"), "{m}");
    // the CLI shows the same
    let out = std::process::Command::new(bin())
        .args(["cluster", "--url", &api.url, "--token", TOKEN])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("b1") && text.contains("backend") && text.contains("SHARD"),
        "{text}"
    );
}

#[tokio::test]
async fn a_slow_node_is_unavailable_and_a_lost_or_dead_one_session_gone() {
    let Some(brokers) = amqp() else { return };
    let mut t = Tiers::memory();
    let mut b1 = t.backend("b1", &brokers[0], &[]);
    let api = t.api("a1", &brokers, &["--router-call-timeout-ms", "1500"]);
    wait_backends(&api, &["b1"]).await;
    let c = api.client();
    create(&c, "s", 1).await;
    let read = Read {
        wait_ms: Some(0),
        ..Default::default()
    };
    let session = switchboard_client::Session::new(&c.allocate(&reader_alloc("s")).await.unwrap());
    c.read(&session, &read).await.unwrap();
    // a node that does not answer in time, but is not lost: unavailable,
    // retryable, once the call timeout passes
    b1.freeze();
    let stopped = Instant::now();
    let e = c.read(&session, &read).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Unavailable), "{e}");
    let took = stopped.elapsed();
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_millis(3500),
        "{took:?}"
    );
    // silent for longer than the heartbeats allow: lost, its sessions gone
    // at once, so that clients move on (the zombie is fenced if it wakes)
    tokio::time::sleep(Duration::from_millis(4500).saturating_sub(stopped.elapsed())).await;
    let t0 = Instant::now();
    let e = c.read(&session, &read).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::SessionGone), "{e}");
    assert!(t0.elapsed() < Duration::from_millis(500), "{:?}", t0.elapsed());
    let cl = cluster(&api).await;
    assert_eq!(node_of(&cl, "b1")["state"], "lost", "{cl}");
    // awake again, it serves new sessions
    b1.send_signal(libc::SIGCONT);
    wait_backends(&api, &["b1"]).await;
    let session = switchboard_client::Session::new(&c.allocate(&reader_alloc("s")).await.unwrap());
    c.read(&session, &read).await.unwrap();
    // the node dies with a long poll in progress: the call is session_gone
    // once the API node finds the node's queue gone, long before its wait
    let pending = {
        let (c, session) = (c.clone(), session.clone());
        let poll = Read {
            wait_ms: Some(20_000),
            ..Default::default()
        };
        tokio::spawn(async move {
            let t0 = Instant::now();
            (c.read(&session, &poll).await, t0.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    b1.kill();
    let (r, took) = pending.await.unwrap();
    assert_eq!(r.unwrap_err().code(), Some(ErrorCode::SessionGone));
    assert!(took < Duration::from_secs(4), "{took:?}");
    // and later calls at once: the mandatory publish comes back unroutable
    let t0 = Instant::now();
    let e = c.read(&session, &read).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::SessionGone), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    // no backend left: allocations are unavailable, not hung
    let ok = common::eventually(Duration::from_secs(15), || async {
        matches!(c.allocate(&reader_alloc("s")).await, Err(e) if e.code() == Some(ErrorCode::Unavailable))
    })
    .await;
    assert!(ok);
    let unready = common::eventually(Duration::from_secs(5), || async {
        api.raw().get("/readyz").await.status == 503
    })
    .await;
    assert!(unready);
}

#[tokio::test]
async fn a_full_node_takes_no_allocations() {
    let (Some(brokers), Some(kafka)) = (amqp(), kafka()) else {
        return;
    };
    let mut t = Tiers::kafka(&kafka);
    let _b1 = t.backend("b1", &brokers[0], &["--max-sessions", "2"]);
    let _b2 = t.backend("b2", &brokers[0], &["--max-sessions", "6"]);
    let api = t.api("a1", &brokers[..1], &[]);
    wait_backends(&api, &["b1", "b2"]).await;
    let c = api.client();
    create(&c, "full", 1).await;
    let mut sessions = Vec::new();
    for _ in 0..8 {
        // a full node may answer backpressure in the moment before it stops
        // taking allocations: the client retries
        sessions.push(allocate_when_room(&c, "full").await.0);
    }
    let on_b1 = sessions.iter().filter(|s| s.node == "b1").count();
    let on_b2 = sessions.iter().filter(|s| s.node == "b2").count();
    assert!(on_b1 <= 2 && on_b1 + on_b2 == 8, "b1 {on_b1}, b2 {on_b2}");
    let ok = common::eventually(Duration::from_secs(5), || async {
        let c = cluster(&api).await;
        node_of(&c, "b1")["state"] == "full" && node_of(&c, "b2")["state"] == "full"
    })
    .await;
    assert!(ok, "{}", cluster(&api).await);
    // every node full: the API node stays ready (its clients' sessions are
    // served), allocations answer backpressure at once, as from one full
    // node, not after waiting for an answer nobody gives
    assert_eq!(api.raw().get("/readyz").await.status, 200);
    let t0 = Instant::now();
    let e = c.allocate(&reader_alloc("full")).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Backpressure), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    match &e {
        switchboard_client::Error::Api { retry_after_ms, .. } => assert_eq!(*retry_after_ms, Some(1000)),
        other => panic!("{other}"),
    }
    // counted where it is refused: no backend node sees it
    let m = api.raw().get("/metrics").await;
    let text = String::from_utf8_lossy(&m.bytes);
    assert!(
        text.contains(r#"switchboard_backpressure_total{reason="cluster_full"}"#),
        "{text}"
    );
    // room again: allocations go on
    let on_b2 = sessions.iter().find(|s| s.node == "b2").unwrap();
    c.dispose(&switchboard_client::Session::new(on_b2)).await.unwrap();
    let ok = common::eventually(Duration::from_secs(10), || async {
        c.allocate(&reader_alloc("full")).await.is_ok()
    })
    .await;
    assert!(ok);
}

/// A backend node that stops answers every call of its sessions that
/// reached it, `session_gone` once it drained: none is left to its
/// caller's call timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_node_leaves_no_call_unanswered() {
    let Some(brokers) = amqp() else { return };
    let mut t = Tiers::memory();
    let mut b1 = t.backend("b1", &brokers[0], &[]);
    let api = t.api("a1", &brokers[..1], &["--router-call-timeout-ms", "10000"]);
    wait_backends(&api, &["b1"]).await;
    let c = api.client();
    create(&c, "stops", 1).await;
    let read = Read {
        wait_ms: Some(0),
        ..Default::default()
    };
    // callers that go on calling through the stop, as clients that have
    // not heard yet do: calls reach the node while it drains, as its queue
    // goes, and after
    let stopped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (c, stopped) = (c.clone(), stopped.clone());
            tokio::spawn(async move {
                let s = switchboard_client::Session::new(&c.allocate(&reader_alloc("stops")).await.unwrap());
                let (mut slowest, mut gone) = (Duration::ZERO, 0);
                while !stopped.load(std::sync::atomic::Ordering::Acquire) {
                    let t0 = Instant::now();
                    let r = c.read(&s, &read).await;
                    slowest = slowest.max(t0.elapsed());
                    match r {
                        Ok(_) => {}
                        Err(e) if e.code() == Some(ErrorCode::SessionGone) => gone += 1,
                        Err(e) => panic!("after {:?}: {e}", t0.elapsed()),
                    }
                }
                (slowest, gone)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let st = tokio::task::block_in_place(|| b1.terminate());
    assert!(st.success(), "{st}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stopped.store(true, std::sync::atomic::Ordering::Release);
    for w in workers {
        let (slowest, gone) = w.await.unwrap();
        assert!(gone > 0);
        assert!(slowest < Duration::from_secs(5), "{slowest:?}");
    }
}

/// A full node that has room again says so at once, not at its next
/// heartbeat nor at its next look at its state: API nodes answer
/// `backpressure` only until then.
#[tokio::test]
async fn a_node_with_room_again_takes_allocations_at_once() {
    let Some(brokers) = amqp() else { return };
    let mut t = Tiers::memory();
    let _b1 = t.backend("b1", &brokers[0], &["--max-sessions", "1"]);
    let api = t.api("a1", &brokers[..1], &[]);
    wait_backends(&api, &["b1"]).await;
    let c = api.client();
    create(&c, "room", 1).await;
    // a heartbeat a second made this a second every time, a look at the
    // state four times a second a quarter of one; the session host wakes
    // the phone switch as the session goes (the fastest of three rounds,
    // as this machine is shared)
    let mut fastest = Duration::MAX;
    for _ in 0..3 {
        let (held, _) = allocate_when_room(&c, "room").await;
        let ok = common::eventually(Duration::from_secs(5), || async {
            node_of(&cluster(&api).await, "b1")["state"] == "full"
        })
        .await;
        assert!(ok, "{}", cluster(&api).await);
        c.dispose(&switchboard_client::Session::new(&held)).await.unwrap();
        let (again, took) = allocate_when_room(&c, "room").await;
        fastest = fastest.min(took);
        c.dispose(&switchboard_client::Session::new(&again))
            .await
            .unwrap();
    }
    assert!(fastest < Duration::from_millis(150), "{fastest:?}");
}

/// A reader of `stream`, allocated as soon as the cluster has room (every
/// 5 ms), and how long that took.
async fn allocate_when_room(c: &Client, stream: &str) -> (switchboard_client::wire::Allocated, Duration) {
    let t0 = Instant::now();
    loop {
        match c.allocate(&reader_alloc(stream)).await {
            Ok(a) => return (a, t0.elapsed()),
            Err(e) if e.code() == Some(ErrorCode::Backpressure) => {
                assert!(t0.elapsed() < Duration::from_secs(5), "{e}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// A node that fills and empties again and again stops and starts taking
/// allocations each time: the allocations it was handed just as it
/// stopped go to another node, none is left unanswered.
#[tokio::test]
async fn allocations_in_flight_when_a_node_fills_are_answered() {
    let (Some(brokers), Some(kafka)) = (amqp(), kafka()) else {
        return;
    };
    let mut t = Tiers::kafka(&kafka);
    let ops = format!("127.0.0.1:{}", common::free_port());
    let _b1 = t.backend(
        "b1",
        &brokers[0],
        &["--max-sessions", "1", "--metrics-listen", &ops],
    );
    let _b2 = t.backend("b2", &brokers[0], &[]);
    let api = t.api("a1", &brokers[..1], &[]);
    wait_backends(&api, &["b1", "b2"]).await;
    let c = api.client();
    create(&c, "flap", 1).await;
    let until = Instant::now() + Duration::from_secs(4);
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move {
                let (mut taken, mut refused) = (0, 0);
                while Instant::now() < until {
                    match c.allocate(&reader_alloc("flap")).await {
                        Ok(s) => {
                            taken += 1;
                            c.dispose(&switchboard_client::Session::new(&s)).await.unwrap();
                        }
                        Err(e) if e.code() == Some(ErrorCode::Backpressure) => refused += 1,
                        Err(e) => panic!("after {taken} allocations: {e}"),
                    }
                }
                (taken, refused)
            })
        })
        .collect();
    let mut taken = 0;
    for w in workers {
        taken += w.await.unwrap().0;
    }
    assert!(taken > 40, "{taken}");
    let metrics = reqwest::get(format!("http://{ops}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let requeued = metrics
        .lines()
        .find(|l| l.starts_with("switchboard_switch_requeued_total"));
    eprintln!("taken {taken}, {requeued:?}");
}

/// Values of every event of `stream`, read until `want` are seen (Kafka
/// makes a batch visible a little after its commit).
async fn values(c: &Client, stream: &str, want: usize) -> Vec<String> {
    let opts = ReaderOptions {
        wait_ms: 500,
        max_events: Some(5_000),
        ..Default::default()
    };
    let mut r = Reader::open(c.clone(), stream, "earliest", opts).await.unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut empty = 0;
    while Instant::now() < deadline {
        let b = r.next().await.unwrap();
        if b.events.is_empty() {
            empty += 1;
            if out.len() >= want && empty >= 3 {
                break;
            }
        } else {
            empty = 0;
        }
        out.extend(
            b.events
                .iter()
                .map(|e| e.value.as_ref().unwrap().get().to_string()),
        );
        r.ack().await.unwrap();
    }
    r.close().await.unwrap();
    out
}

/// Each of `values` exactly once; names what is missing or doubled.
fn exactly_once(values: &[String], expected: impl Iterator<Item = String>) {
    let mut count: HashMap<&str, usize> = HashMap::new();
    for v in values {
        *count.entry(v).or_default() += 1;
    }
    let mut missing = Vec::new();
    let mut n = 0;
    for e in expected {
        n += 1;
        match count.remove(e.as_str()) {
            Some(1) => {}
            Some(k) => panic!("{e} stored {k} times"),
            None => missing.push(e),
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {n} missing, first {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(
        count.is_empty(),
        "unexpected values {:?}",
        count.keys().take(5).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_draining_backend_hands_its_writers_over() {
    let (Some(brokers), Some(kafka)) = (amqp(), kafka()) else {
        return;
    };
    let mut t = Tiers::kafka(&kafka);
    let mut b1 = t.backend("b1", &brokers[0], &[]);
    let api = t.api("a1", &brokers[..1], &[]);
    wait_backends(&api, &["b1"]).await;
    let c = api.client();
    create(&c, "handover", 2).await;
    let mut w = producer(&c, "handover", "ho").await;
    for i in 0..50 {
        w.send(&[Event::json(&format!("e{i}")).unwrap()]).await.unwrap();
    }
    // a second node, then the first drains: the writer moves over
    let _b2 = t.backend("b2", &brokers[0], &[]);
    wait_backends(&api, &["b2"]).await;
    let stop = std::thread::spawn(move || {
        let st = b1.terminate();
        (b1, st)
    });
    for i in 50..150 {
        w.send(&[Event::json(&format!("e{i}")).unwrap()]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    w.close().await.unwrap();
    let (_b1, st) = stop.join().unwrap();
    assert!(st.success(), "{st:?}");
    let v = values(&c, "handover", 150).await;
    exactly_once(&v, (0..150).map(|i| format!("\"e{i}\"")));
}

/// RabbitMQ nodes of a test's own, on ports no other test uses.
struct OwnBrokers {
    dir: tempfile::TempDir,
    ports: Vec<u16>,
}

impl OwnBrokers {
    fn start(ports: &[u16]) -> OwnBrokers {
        OwnBrokers::start_with(ports, &[])
    }

    /// With `env` for scripts/rabbitmq (its TLS settings).
    fn start_with(ports: &[u16], env: &[(&str, &Path)]) -> OwnBrokers {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = std::process::Command::new(script());
        cmd.arg("start").arg(dir.path());
        cmd.envs(env.iter().map(|(k, v)| (*k, *v)));
        cmd.args(ports.iter().map(u16::to_string));
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        OwnBrokers {
            dir,
            ports: ports.to_vec(),
        }
    }

    fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("amqp://127.0.0.1:{p}"))
            .collect()
    }

    fn stop(&self, port: u16) {
        let out = std::process::Command::new(script())
            .arg("stop")
            .arg(self.dir.path())
            .arg(port.to_string())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for OwnBrokers {
    fn drop(&mut self) {
        let _ = std::process::Command::new(script())
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/rabbitmq")
}

#[tokio::test]
async fn a_broker_down_sends_its_sessions_to_another_shard() {
    let (Some(_), Some(kafka)) = (amqp(), kafka()) else {
        return;
    };
    let own = OwnBrokers::start(&[5690, 5691]);
    let urls = own.urls();
    let mut t = Tiers::kafka(&kafka);
    let _b1 = t.backend("b1", &urls[0], &[]);
    let _b2 = t.backend("b2", &urls[1], &[]);
    let api = t.api("a1", &urls, &[]);
    wait_backends(&api, &["b1", "b2"]).await;
    let c = api.client();
    create(&c, "moves", 1).await;
    for i in 0..20 {
        c.publish("moves", &[Event::json(&i).unwrap()], None)
            .await
            .unwrap();
    }
    let opts = ReaderOptions {
        wait_ms: 0,
        max_events: Some(5),
        ..Default::default()
    };
    let mut r = Reader::open(c.clone(), "moves", "earliest", opts).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 10 {
        let b = r.next().await.unwrap();
        got.extend(
            b.events
                .iter()
                .map(|e| e.value.as_ref().unwrap().get().to_string()),
        );
        r.ack().await.unwrap();
    }
    let node = node_of_session(r.session().unwrap());
    let (down, other) = if node == "b1" { (5690, "b2") } else { (5691, "b1") };
    own.stop(down);
    // the reader's next call finds its session gone and allocates again,
    // on the other shard, from its cursor
    let t0 = Instant::now();
    while got.len() < 20 {
        let b = r.next().await.unwrap();
        got.extend(
            b.events
                .iter()
                .map(|e| e.value.as_ref().unwrap().get().to_string()),
        );
        r.ack().await.unwrap();
        assert!(t0.elapsed() < Duration::from_secs(20), "stuck at {}", got.len());
    }
    assert_eq!(node_of_session(r.session().unwrap()), other);
    // the issue's bound: re-allocated on the other shard within 5 s
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    exactly_once(&got, (0..20).map(|i| i.to_string()));
    let cl = cluster(&api).await;
    let states: Vec<&Value> = cl["brokers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| &b["state"])
        .collect();
    assert!(states.contains(&&Value::from("down")), "{cl}");
}

/// A second caller: allocations spread over shards by caller.
const TOKEN2: &str = "second-caller-token-0123456789";

/// Writes blocks of 20 events `w<i>-<n>` as producer `p<i>` until `stop`;
/// returns how many events it wrote.
async fn keep_writing(c: Client, i: usize, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> usize {
    let opts = WriterOptions {
        producer: Some(format!("p{i}")),
        window: 4,
        ..Default::default()
    };
    let mut w = Writer::open(c, "roll", opts).await.unwrap();
    let mut n = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let events: Vec<Event> = (n..n + 20)
            .map(|k| Event {
                key: Some(format!("w{i}")),
                ..Event::json(&format!("w{i}-{k}")).unwrap()
            })
            .collect();
        w.send(&events).await.unwrap();
        n += 20;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w.close().await.unwrap();
    n
}

/// Reads from the start until `stop`, then until it has seen `want()`
/// events or 60 s pass; returns the values seen.
async fn keep_reading(
    c: Client,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    want: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> Vec<String> {
    let opts = ReaderOptions {
        wait_ms: 200,
        max_events: Some(500),
        ..Default::default()
    };
    let mut r = Reader::open(c, "roll", "earliest", opts).await.unwrap();
    let mut out = Vec::new();
    let mut deadline = None;
    loop {
        let b = r.next().await.unwrap();
        out.extend(
            b.events
                .iter()
                .map(|e| e.value.as_ref().unwrap().get().to_string()),
        );
        r.ack().await.unwrap();
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            let d = *deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(60));
            let want = want.load(std::sync::atomic::Ordering::Relaxed);
            if (want > 0 && out.len() >= want && b.events.is_empty()) || Instant::now() > d {
                break;
            }
        }
    }
    r.close().await.unwrap();
    out
}

/// What the failover suite does to its backend nodes under load.
#[derive(Debug, Clone, Copy)]
enum Disruption {
    /// SIGTERM and start again, each in turn.
    RollingRestart,
    /// SIGKILL two of them mid-stream, then start them again.
    Kill,
    /// SIGSTOP two of them until their sessions moved, then SIGCONT.
    Zombie,
}

/// Two brokers, Kafka, two API nodes and three backend nodes; four
/// producers and two readers through both API nodes; `d` done to the
/// backends meanwhile. Every event is then stored exactly once, and the
/// readers, which lived through it all, missed none.
async fn failover_suite(d: Disruption) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let (Some(brokers), Some(kafka)) = (amqp(), kafka()) else {
        return;
    };
    let mut t = Tiers::kafka(&kafka);
    let mut backends = [
        t.backend("b1", &brokers[0], &[]),
        t.backend("b2", &brokers[0], &[]),
        t.backend("b3", &brokers[1], &[]),
    ];
    let apis = [
        t.api("a1", &brokers, &["--token", TOKEN2]),
        t.api("a2", &brokers, &["--token", TOKEN2]),
    ];
    for a in &apis {
        wait_backends(a, &["b1", "b2", "b3"]).await;
    }
    let clients: Vec<Client> = apis
        .iter()
        .flat_map(|a| [a.client(), Client::new(&a.url, TOKEN2).unwrap()])
        .collect();
    create(&clients[0], "roll", 4).await;
    let stop = Arc::new(AtomicBool::new(false));
    let want = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..4)
        .map(|i| tokio::spawn(keep_writing(clients[i].clone(), i, stop.clone())))
        .collect();
    let readers: Vec<_> = [0, 3]
        .iter()
        .map(|&i| tokio::spawn(keep_reading(clients[i].clone(), stop.clone(), want.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    match d {
        Disruption::RollingRestart => {
            for b in backends.iter_mut() {
                let st = tokio::task::block_in_place(|| b.terminate());
                assert!(st.success(), "{st:?}");
                tokio::task::block_in_place(|| b.restart());
                for a in &apis {
                    wait_backends(a, &["b1", "b2", "b3"]).await;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Disruption::Kill => {
            for i in [0, 2] {
                backends[i].kill();
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            for i in [0, 2] {
                tokio::task::block_in_place(|| backends[i].restart());
            }
        }
        Disruption::Zombie => {
            for i in [0, 2] {
                backends[i].freeze();
            }
            // lost after four silent seconds: their sessions move
            tokio::time::sleep(Duration::from_secs(7)).await;
            for i in [0, 2] {
                backends[i].send_signal(libc::SIGCONT);
            }
        }
    }
    for a in &apis {
        wait_backends(a, &["b1", "b2", "b3"]).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut expected = Vec::new();
    for (i, w) in writers.into_iter().enumerate() {
        let n = w.await.unwrap();
        assert!(n > 0);
        expected.extend((0..n).map(|k| format!("\"w{i}-{k}\"")));
    }
    want.store(expected.len(), Ordering::Relaxed);
    eprintln!("{d:?}: {} events from 4 writers", expected.len());
    // the stream holds each event exactly once
    let stored = values(&clients[1], "roll", expected.len()).await;
    exactly_once(&stored, expected.iter().cloned());
    // readers saw every event (a batch whose ack was lost with its session
    // comes again: that is what at-least-once after the cursor allows)
    for r in readers {
        let seen = r.await.unwrap();
        let set: std::collections::HashSet<&String> = seen.iter().collect();
        let missing = expected.iter().filter(|e| !set.contains(e)).count();
        assert_eq!(missing, 0, "a reader missed {missing} of {}", expected.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_loses_and_duplicates_nothing() {
    failover_suite(Disruption::RollingRestart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_killed_mid_stream_lose_and_duplicate_nothing() {
    failover_suite(Disruption::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zombie_backends_store_nothing_after_their_sessions_moved() {
    failover_suite(Disruption::Zombie).await;
}

#[tokio::test]
async fn brokers_can_be_reached_over_tls() {
    if amqp().is_none() {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert, key) = (certs.path().join("broker.crt"), certs.path().join("broker.key"));
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, c.key_pair.serialize_pem()).unwrap();
    // AMQPS on the port + 1000
    let _own = OwnBrokers::start_with(
        &[5692],
        &[("RABBITMQ_TLS_CERT", &cert), ("RABBITMQ_TLS_KEY", &key)],
    );
    let url = "amqps://127.0.0.1:6692".to_string();
    let mut t = Tiers::memory();
    // without the broker's CA, the start fails and says why
    let out = std::process::Command::new(bin())
        .args([
            "backend",
            "--router",
            &url,
            "--store",
            "memory://",
            "--node-id",
            "x",
            "--data-dir",
        ])
        .arg(t.path("x"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("127.0.0.1:6692") && err.to_lowercase().contains("certificate"),
        "{err}"
    );
    let ca = cert.display().to_string();
    let _b = t.backend("b1", &url, &["--router-ca-cert", &ca]);
    let api = t.api("a1", std::slice::from_ref(&url), &["--router-ca-cert", &ca]);
    wait_backends(&api, &["b1"]).await;
    let c = api.client();
    create(&c, "tls", 1).await;
    c.publish("tls", &[Event::json("over tls").unwrap()], None)
        .await
        .unwrap();
    let got = common::read_all(&c, "tls").await;
    assert_eq!(got.len(), 1);
}

#[tokio::test]
async fn a_broker_added_to_the_config_is_used_after_a_reload() {
    let Some(brokers) = amqp() else { return };
    let mut t = Tiers::memory();
    let _b1 = t.backend("b1", &brokers[0], &[]);
    let _b2 = t.backend("b2", &brokers[1], &[]);
    let config = t.path("api.toml");
    let write = |list: &[&String]| {
        let quoted: Vec<String> = list.iter().map(|b| format!("{b:?}")).collect();
        std::fs::write(&config, format!("[router]\nbrokers = [{}]\n", quoted.join(", "))).unwrap();
    };
    write(&[&brokers[0]]);
    let key = t.key.display().to_string();
    let cfg = config.display().to_string();
    let api = Server::start_role(
        "api",
        &t.path("a1"),
        &[
            "--config",
            &cfg,
            "--node-id",
            "a1",
            "--server-key-file",
            &key,
            "--router-namespace",
            &t.namespace,
        ],
    );
    wait_backends(&api, &["b1"]).await;
    assert_eq!(cluster(&api).await["brokers"].as_array().unwrap().len(), 1);
    // reordering is refused: the known broker keeps its shard
    write(&[&brokers[1], &brokers[0]]);
    api.send_signal(libc::SIGHUP);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(cluster(&api).await["brokers"].as_array().unwrap().len(), 1);
    // appending is taken: the new shard's backend shows up
    write(&[&brokers[0], &brokers[1]]);
    api.send_signal(libc::SIGHUP);
    wait_backends(&api, &["b1", "b2"]).await;
    let cl = cluster(&api).await;
    assert_eq!(
        cl["brokers"][1]["address"],
        brokers[1].trim_start_matches("amqp://"),
        "{cl}"
    );
    assert_eq!(
        node_of(&cl, "b2")["broker"],
        brokers[1].trim_start_matches("amqp://")
    );
    let log = std::fs::read_to_string(t.path("a1").with_extension("server.log")).unwrap();
    assert!(log.contains("configuration reload refused"), "{log}");
}

/// A backend frozen with a producer's allocations taken off the queue (a
/// zombie) wakes after its client allocated again on another node: it
/// must not act on them, or it would fence the session the client writes
/// through now.
#[tokio::test]
async fn a_woken_zombie_does_not_act_on_allocations_it_took_before_it_froze() {
    let (Some(brokers), Some(k)) = (amqp(), kafka()) else {
        return;
    };
    let mut t = Tiers::kafka(&k);
    let b1 = t.backend("b1", &brokers[0], &[]);
    let _b2 = t.backend("b2", &brokers[0], &[]);
    let api = t.api("a1", &brokers[..1], &[]);
    wait_backends(&api, &["b1", "b2"]).await;
    let c = api.client();
    create(&c, "s", 2).await;
    b1.freeze();
    let frozen = Instant::now();
    // allocations of producer p at once: b1 takes some off the queue (up
    // to its prefetch) and sits on them; b2 answers the rest
    let alloc = Allocate {
        stream: "s".into(),
        mode: Mode::Write,
        cursor: None,
        partitions: None,
        producer: Some("p".into()),
    };
    let tries: Vec<_> = (0..8)
        .map(|_| {
            let (c, a) = (c.clone(), alloc.clone());
            tokio::spawn(async move { c.allocate(&a).await })
        })
        .collect();
    let mut stuck = 0;
    for t in tries {
        if let Err(e) = t.await.unwrap() {
            assert_eq!(e.code(), Some(ErrorCode::Unavailable), "{e}");
            stuck += 1;
        }
    }
    assert!(stuck > 0, "the frozen node took none of the allocations");
    // the client allocates again (on b2) and writes
    let mut w = producer(&c, "s", "p").await;
    assert_eq!(node_of_session(w.session().unwrap()), "b2");
    for i in 0..3 {
        w.send(&[Event::json(&format!("v{i}")).unwrap()]).await.unwrap();
    }
    w.flush().await.unwrap();
    // b1 wakes before the broker gave up on its connection, with the old
    // allocations in hand
    assert!(
        frozen.elapsed() < Duration::from_secs(8),
        "{:?}",
        frozen.elapsed()
    );
    b1.send_signal(libc::SIGCONT);
    tokio::time::sleep(Duration::from_secs(3)).await;
    for i in 3..6 {
        w.send(&[Event::json(&format!("v{i}")).unwrap()]).await.unwrap();
    }
    let d = w
        .flush()
        .await
        .unwrap_or_else(|e| panic!("the writer lost its session to the zombie: {e}"));
    assert_eq!(d, 6);
    let vals = values(&c, "s", 6).await;
    exactly_once(&vals, (0..6).map(|i| format!("\"v{i}\"")));
}
