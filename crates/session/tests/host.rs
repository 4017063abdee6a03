//! The session host against the embedded store, in process.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use switchboard_store::embedded::EmbeddedStore;
use switchboard_store::{Block, Store, StreamSettings};

/// A store whose appends wait for a permit, so a test controls when blocks
/// become durable.
struct GatedStore {
    inner: Arc<dyn Store>,
    gate: Arc<tokio::sync::Semaphore>,
}

#[async_trait::async_trait]
impl Store for GatedStore {
    async fn create_stream(&self, name: &str, s: StreamSettings) -> switchboard_store::Result<bool> {
        self.inner.create_stream(name, s).await
    }
    async fn delete_stream(&self, name: &str) -> switchboard_store::Result<()> {
        self.inner.delete_stream(name).await
    }
    async fn list_streams(&self) -> switchboard_store::Result<Vec<(String, StreamSettings)>> {
        self.inner.list_streams().await
    }
    async fn stream_settings(&self, name: &str) -> switchboard_store::Result<StreamSettings> {
        self.inner.stream_settings(name).await
    }
    async fn describe_stream(&self, name: &str) -> switchboard_store::Result<switchboard_store::StreamState> {
        self.inner.describe_stream(name).await
    }
    async fn append(
        &self,
        stream: &str,
        block: Block,
    ) -> switchboard_store::Result<switchboard_store::Appended> {
        if !stream.starts_with("__") {
            let permit = self.gate.acquire().await.unwrap();
            permit.forget();
        }
        self.inner.append(stream, block).await
    }
    async fn last_block(&self, stream: &str, producer: &str) -> switchboard_store::Result<u64> {
        self.inner.last_block(stream, producer).await
    }
    async fn fence_producer(
        &self,
        stream: &str,
        producer: &str,
    ) -> switchboard_store::Result<switchboard_store::Fencing> {
        self.inner.fence_producer(stream, producer).await
    }
    async fn offsets_for_time(&self, stream: &str, ts: i64) -> switchboard_store::Result<Vec<u64>> {
        self.inner.offsets_for_time(stream, ts).await
    }
    async fn open_reader(
        &self,
        stream: &str,
        positions: &[(u32, u64)],
    ) -> switchboard_store::Result<Box<dyn switchboard_store::StoreReader>> {
        self.inner.open_reader(stream, positions).await
    }
    async fn close(&self) -> switchboard_store::Result<()> {
        self.inner.close().await
    }
}

#[tokio::test]
async fn commits_past_the_in_flight_bound_get_backpressure_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for inner in both_stores(&dir) {
        in_flight_bound(inner).await;
    }
}

async fn in_flight_bound(inner: Arc<dyn Store>) {
    use switchboard_proto::wire::{BlockStatus, Commit, Mode};
    use switchboard_rpc::{Call, Request, Response};
    use switchboard_session::{HostConfig, SessionError};

    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let store: Arc<dyn Store> = Arc::new(GatedStore {
        inner,
        gate: gate.clone(),
    });
    let cfg = HostConfig {
        max_blocks_in_flight: 2,
        ..HostConfig::default()
    };
    let host = start_host(store, cfg).await;
    create(&host, "bp", 1, None).await;
    let a = allocate(&host, "bp", Mode::Write, None, None).await;
    let call = |call: Call| {
        host.handle(
            ctx(),
            Request::Session {
                id: a.session.clone(),
                call,
            },
        )
    };
    let commit = |block| {
        Call::Commit(Commit {
            block,
            durable: Some(false),
        })
    };
    for b in 1..=3u64 {
        let body = format!("{{\"block\":{b},\"events\":[{{\"value\":{b}}}]}}");
        call(Call::Write(body.into())).await.unwrap();
        if b < 3 {
            let Response::Committed(c) = call(commit(b)).await.unwrap() else {
                panic!()
            };
            assert_eq!(c.status, BlockStatus::Scheduled);
        }
    }
    match call(commit(3)).await {
        Err(SessionError::Backpressure { retry_after_ms, .. }) => assert!(retry_after_ms > 0),
        other => panic!("expected backpressure, got {other:?}"),
    }
    // nothing changed: block 3 is still staged and commits once there is room
    gate.add_permits(2);
    let Response::Committed(c) = call(Call::Commit(Commit {
        block: 2,
        durable: Some(true),
    }))
    .await
    .unwrap() else {
        panic!()
    };
    assert_eq!(c.status, BlockStatus::Durable);
    gate.add_permits(1);
    let Response::Committed(c) = call(Call::Commit(Commit {
        block: 3,
        durable: Some(true),
    }))
    .await
    .unwrap() else {
        panic!()
    };
    assert_eq!(c.status, BlockStatus::Durable);
    assert_eq!(c.offsets.unwrap()[0].first, 2);
}

#[tokio::test]
async fn records_without_their_key_are_an_error_naming_it_never_garbage() {
    use switchboard_proto::wire::{Mode, Read};
    use switchboard_rpc::{Call, Request};
    use switchboard_session::crypto::{Crypto, CryptoConfig, MasterSource};
    use switchboard_session::{HostConfig, SessionError, SessionHost};

    let dir = tempfile::tempdir().unwrap();
    let keys_dir = dir.path().join("keys");
    let crypto = |master: MasterSource, store: Arc<dyn Store>| {
        let keys_dir = keys_dir.clone();
        async move {
            Crypto::open(
                CryptoConfig {
                    keys_dir,
                    master,
                    rotate_ms: 3_600_000,
                    rotate_records: 1 << 32,
                },
                store,
            )
            .await
            .unwrap()
        }
    };
    let keys = switchboard_rpc::keys::ServerKeys::from_master(&[1; 32]);
    let master = MasterSource::Command(format!("echo m1 {}", "ab".repeat(32)));
    {
        let store: Arc<dyn Store> =
            Arc::new(EmbeddedStore::open(dir.path().join("log"), Default::default()).unwrap());
        let host = SessionHost::start(
            store.clone(),
            keys.clone(),
            HostConfig::default(),
            Some(crypto(master.clone(), store.clone()).await),
        )
        .await
        .unwrap();
        create(&host, "k", 1, None).await;
        host.handle(
            ctx(),
            Request::Publish {
                stream: "k".into(),
                idempotency_key: None,
                body: r#"{"events":[{"value":"secret"}]}"#.into(),
            },
        )
        .await
        .unwrap();
        store.close().await.unwrap();
    }
    // the keyring is lost: the data key cannot be found
    let store: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(dir.path().join("log"), Default::default()).unwrap());
    store
        .delete_stream(switchboard_session::crypto::KEYS_STREAM)
        .await
        .unwrap();
    let host = SessionHost::start(
        store.clone(),
        keys,
        HostConfig::default(),
        Some(crypto(master, store).await),
    )
    .await
    .unwrap();
    let a = allocate(&host, "k", Mode::Read, Some("earliest"), None).await;
    let read = Call::Read(Read {
        max_events: None,
        max_bytes: None,
        wait_ms: Some(3000),
    });
    let r = host
        .handle(
            ctx(),
            Request::Session {
                id: a.session,
                call: read,
            },
        )
        .await;
    match r {
        Err(SessionError::Internal(m)) => {
            assert!(m.contains("data key ") && m.contains("not in the keyring"), "{m}")
        }
        other => panic!("expected an error naming the key, got {other:?}"),
    }
}

fn ctx() -> switchboard_rpc::Context {
    switchboard_rpc::Context {
        caller: "test".into(),
        ..Default::default()
    }
}

/// Two backend nodes over one store (as over one Kafka cluster): events one
/// node sealed open on the other, which finds the data key in the store;
/// and each node seals with data keys of its own.
#[tokio::test]
async fn any_node_with_the_master_key_opens_what_another_sealed() {
    use switchboard_proto::wire::{Mode, Read, ReadAnswer};
    use switchboard_rpc::{Call, Request, Response};
    use switchboard_session::crypto::{Crypto, CryptoConfig, MasterSource};
    use switchboard_session::{HostConfig, SessionHost};

    let store: Arc<dyn Store> = Arc::new(switchboard_store::memory::MemoryStore::new());
    let keys = switchboard_rpc::keys::ServerKeys::from_master(&[1; 32]);
    let dir = tempfile::tempdir().unwrap();
    let mut hosts = Vec::new();
    let mut cryptos = Vec::new();
    for node in ["a", "b"] {
        let crypto = Crypto::open(
            CryptoConfig {
                keys_dir: dir.path().join(node),
                master: MasterSource::Env(format!("m1:{}", "5a".repeat(32))),
                rotate_ms: 3_600_000,
                rotate_records: 1 << 32,
            },
            store.clone(),
        )
        .await
        .unwrap();
        cryptos.push(crypto.clone());
        let cfg = HostConfig {
            node_id: node.into(),
            ..HostConfig::default()
        };
        hosts.push(
            SessionHost::start(store.clone(), keys.clone(), cfg, Some(crypto))
                .await
                .unwrap(),
        );
    }
    hosts[0]
        .handle(
            ctx(),
            Request::CreateStream(switchboard_proto::wire::CreateStream {
                name: "shared".into(),
                partitions: Some(2),
                retention_ms: None,
                retention_bytes: None,
                encrypt_keys: None,
            }),
        )
        .await
        .unwrap();
    for (i, h) in hosts.iter().enumerate() {
        let body =
            format!(r#"{{"events":[{{"key":"k{i}","headers":{{"n":"{i}"}},"value":{{"from":{i}}}}}]}}"#);
        h.handle(
            ctx(),
            Request::Publish {
                stream: "shared".into(),
                idempotency_key: None,
                body: body.into(),
            },
        )
        .await
        .unwrap();
    }
    let a = cryptos[0].current("shared").unwrap().key_id();
    let b = cryptos[1].current("shared").unwrap().key_id();
    assert_ne!(a, b, "each node seals with its own data key");
    // a reader on each node sees both nodes' events
    for h in &hosts {
        let al = allocate(h, "shared", Mode::Read, Some("earliest"), None).await;
        let read = Call::Read(Read {
            max_events: None,
            max_bytes: None,
            wait_ms: Some(1000),
        });
        let Response::Batch(b) = h
            .handle(
                ctx(),
                Request::Session {
                    id: al.session,
                    call: read,
                },
            )
            .await
            .unwrap()
        else {
            panic!()
        };
        let ans: ReadAnswer = serde_json::from_slice(&b).unwrap();
        let mut got: Vec<String> = ans
            .events
            .iter()
            .map(|e| {
                format!(
                    "{}={}",
                    e.key.as_deref().unwrap(),
                    e.value.as_ref().unwrap().get()
                )
            })
            .collect();
        got.sort();
        assert_eq!(got, vec![r#"k0={"from":0}"#, r#"k1={"from":1}"#]);
    }
}

/// Retention overtakes a slow reader: the read answer names the gap
/// exactly, the cursor moves past it, and reading goes on.
#[tokio::test]
async fn a_read_answer_names_what_retention_removed() {
    use switchboard_proto::wire::{Ack, Mode, Read, ReadAnswer};
    use switchboard_rpc::{Call, Request, Response};
    use switchboard_session::HostConfig;

    let store: Arc<dyn Store> = Arc::new(switchboard_store::memory::MemoryStore::new());
    let host = start_host(store.clone(), HostConfig::default()).await;
    create(&host, "r", 1, Some(2000)).await;
    let a = allocate(&host, "r", Mode::Read, Some("earliest"), None).await;
    let events: Vec<String> = (0..40).map(|i| format!(r#"{{"value":"{i:0>90}"}}"#)).collect();
    let body = format!(r#"{{"events":[{}]}}"#, events.join(","));
    host.handle(
        ctx(),
        Request::Publish {
            stream: "r".into(),
            idempotency_key: None,
            body: body.into(),
        },
    )
    .await
    .unwrap();
    let start = store.describe_stream("r").await.unwrap().start_offsets[0];
    assert!(start > 0, "retention removed the oldest events");
    let call = |call: Call| {
        host.handle(
            ctx(),
            Request::Session {
                id: a.session.clone(),
                call,
            },
        )
    };
    let Response::Batch(b) = call(Call::Read(Read {
        max_events: None,
        max_bytes: None,
        wait_ms: Some(1000),
    }))
    .await
    .unwrap() else {
        panic!()
    };
    let ans: ReadAnswer = serde_json::from_slice(&b).unwrap();
    assert_eq!(ans.gaps.len(), 1, "{}", String::from_utf8_lossy(&b));
    assert_eq!(
        (ans.gaps[0].partition, ans.gaps[0].from, ans.gaps[0].to),
        (0, 0, start)
    );
    assert_eq!(ans.events.first().map(|e| e.offset), Some(start));
    assert_eq!(ans.events.len() as u64, 40 - start);
    let Response::Acked(_) = call(Call::Ack(Ack { batch: ans.batch })).await.unwrap() else {
        panic!()
    };
}

/// Large bodies are handled off the runtime's threads, with the same
/// answers: a block written, its retry answered the same, a bad event
/// refused, and nothing staged by a refused write.
#[tokio::test]
async fn large_writes_and_publishes_answer_as_small_ones() {
    use switchboard_proto::wire::{Commit, Mode};
    use switchboard_rpc::{Call, Request, Response};
    use switchboard_session::{HostConfig, SessionError};

    let store: Arc<dyn Store> = Arc::new(switchboard_store::memory::MemoryStore::new());
    let host = start_host(store.clone(), HostConfig::default()).await;
    create(&host, "big", 3, None).await;
    let a = allocate(&host, "big", Mode::Write, None, Some("p")).await;
    let call = |call: Call| {
        host.handle(
            ctx(),
            Request::Session {
                id: a.session.clone(),
                call,
            },
        )
    };
    let value = "v".repeat(3000);
    let events = |bad: bool| -> String {
        (0..400)
            .map(|i| {
                if bad && i == 399 {
                    r#"{"key":"k","value_b64":"***"}"#.to_string()
                } else {
                    format!(r#"{{"key":"k{i}","value":"{value}"}}"#)
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    let bad = format!(r#"{{"block":1,"events":[{}]}}"#, events(true));
    assert!(bad.len() > 1 << 20);
    match call(Call::Write(bad.into())).await {
        Err(SessionError::BadRequest(m)) => assert!(m.contains("events[399].value_b64"), "{m}"),
        other => panic!("{other:?}"),
    }
    let good = bytes::Bytes::from(format!(r#"{{"block":1,"events":[{}]}}"#, events(false)));
    let Response::Written(w) = call(Call::Write(good.clone())).await.unwrap() else {
        panic!()
    };
    assert_eq!((w.block, w.events), (1, 400));
    let Response::Written(again) = call(Call::Write(good)).await.unwrap() else {
        panic!()
    };
    assert_eq!((again.block, again.events), (1, 400));
    let Response::Committed(c) = call(Call::Commit(Commit {
        block: 1,
        durable: Some(true),
    }))
    .await
    .unwrap() else {
        panic!()
    };
    let stored: u64 = c.offsets.unwrap().iter().map(|r| r.last - r.first + 1).sum();
    assert_eq!(stored, 400);
    // and a large one-shot publish
    let body = format!(r#"{{"events":[{}]}}"#, events(false));
    let Response::Published(p) = host
        .handle(
            ctx(),
            Request::Publish {
                stream: "big".into(),
                idempotency_key: None,
                body: body.into(),
            },
        )
        .await
        .unwrap()
    else {
        panic!()
    };
    let p: serde_json::Value = serde_json::from_slice(&p).unwrap();
    assert_eq!(p["offsets"].as_array().unwrap().len(), 400);
}

/// Two sessions of one producer on one node: the newer one fences the
/// older, which stores nothing more (its later calls are `session_gone`);
/// what the older one had scheduled is stored before the newer one learns
/// its `last_block`, so nothing is dropped or doubled.
#[tokio::test]
async fn a_newer_session_of_a_producer_fences_the_older() {
    use switchboard_proto::wire::{Allocate, Commit, Mode};
    use switchboard_rpc::{Call, Request, Response};
    use switchboard_session::{HostConfig, SessionError};

    let dir = tempfile::tempdir().unwrap();
    for store in both_stores(&dir) {
        let host = start_host(store.clone(), HostConfig::default()).await;
        create(&host, "f", 2, None).await;
        let alloc = || {
            host.handle(
                ctx(),
                Request::Allocate(Allocate {
                    stream: "f".into(),
                    mode: Mode::Write,
                    cursor: None,
                    partitions: None,
                    producer: Some("p".into()),
                }),
            )
        };
        let call = |id: String, call: Call| host.handle(ctx(), Request::Session { id, call });
        let write = |b: u64, tag: &str| {
            Call::Write(format!(r#"{{"block":{b},"events":[{{"key":"k{b}","value":"{tag}"}}]}}"#).into())
        };
        let commit = |b: u64| {
            Call::Commit(Commit {
                block: b,
                durable: Some(false),
            })
        };
        let Response::Allocated(old) = alloc().await.unwrap() else {
            panic!()
        };
        call(old.session.clone(), write(1, "old")).await.unwrap();
        call(old.session.clone(), commit(1)).await.unwrap();
        call(old.session.clone(), write(2, "old")).await.unwrap();
        // the newer session: block 1 is in, block 2 (only staged) is not
        let Response::Allocated(new) = alloc().await.unwrap() else {
            panic!()
        };
        assert_eq!(new.last_block, Some(1));
        // the older one can do nothing more
        for c in [commit(2), write(3, "old")] {
            assert_eq!(
                call(old.session.clone(), c).await.unwrap_err(),
                SessionError::SessionGone
            );
        }
        call(new.session.clone(), write(2, "new")).await.unwrap();
        let Response::Committed(c) = call(
            new.session.clone(),
            Call::Commit(Commit {
                block: 2,
                durable: Some(true),
            }),
        )
        .await
        .unwrap() else {
            panic!()
        };
        assert_eq!(c.status, switchboard_proto::wire::BlockStatus::Durable);
        assert_eq!(store.last_block("f", "p").await.unwrap(), 2);
        let d = store.describe_stream("f").await.unwrap();
        assert_eq!(
            d.end_offsets.iter().sum::<u64>(),
            2,
            "block 1 of the old, block 2 of the new"
        );
    }
}

/// Two nodes over one store (as over one Kafka cluster), a producer's
/// session on each: the newer one's allocation fences the older at the
/// store. The older one's next block is refused, its commit answers
/// `session_gone` naming the fencing, and it stores nothing more; the
/// newer one stores its own block 2. Nothing is dropped silently, nothing
/// doubled.
#[tokio::test]
async fn a_newer_session_on_another_node_fences_the_older_at_the_store() {
    use switchboard_proto::wire::{BlockStatus, Commit, Mode};
    use switchboard_rpc::{Call, Request, Response};
    use switchboard_session::{HostConfig, SessionError, SessionHost};

    let dir = tempfile::tempdir().unwrap();
    for store in both_stores(&dir) {
        let node = |id: &str| {
            let cfg = HostConfig {
                node_id: id.into(),
                ..HostConfig::default()
            };
            start_host(store.clone(), cfg)
        };
        let (a, b) = (node("a").await, node("b").await);
        create(&a, "x", 2, None).await;
        let call = |host: &SessionHost, id: &str, call: Call| {
            let (host, id) = (host.clone(), id.to_string());
            async move { host.handle(ctx(), Request::Session { id, call }).await }
        };
        let write = |n: u64, tag: &str| {
            Call::Write(format!(r#"{{"block":{n},"events":[{{"key":"k{n}","value":"{tag}"}}]}}"#).into())
        };
        let commit = |n: u64| {
            Call::Commit(Commit {
                block: n,
                durable: Some(true),
            })
        };
        let old = allocate(&a, "x", Mode::Write, None, Some("p")).await;
        call(&a, &old.session, write(1, "old")).await.unwrap();
        call(&a, &old.session, commit(1)).await.unwrap();
        let new = allocate(&b, "x", Mode::Write, None, Some("p")).await;
        assert_eq!(new.last_block, Some(1));
        // the older session, on its own node, knows nothing yet: its block 2
        // is refused by the store
        call(&a, &old.session, write(2, "old")).await.unwrap();
        match call(&a, &old.session, commit(2)).await {
            Err(e @ SessionError::Fenced { .. }) => {
                let m = e.to_string();
                assert!(m.contains("fenced") && m.contains("\"p\""), "{m}");
                assert!(matches!(&e, SessionError::Fenced { producer, .. } if producer == "p"));
            }
            other => panic!("expected fencing, got {other:?}"),
        }
        match call(&a, &old.session, write(3, "old")).await {
            Err(e @ SessionError::Fenced { .. }) => {
                let SessionError::Fenced { epoch, .. } = e.clone() else {
                    unreachable!()
                };
                // on the wire: `session_gone`, saying which epoch took over
                let wire = switchboard_rpc::RpcError::from(e);
                assert_eq!(wire.code, switchboard_proto::ErrorCode::SessionGone);
                assert_eq!(wire.fenced_by_epoch, Some(epoch));
            }
            other => panic!("expected fencing, got {other:?}"),
        }
        call(&b, &new.session, write(2, "new")).await.unwrap();
        let Response::Committed(c) = call(&b, &new.session, commit(2)).await.unwrap() else {
            panic!()
        };
        assert_eq!(c.status, BlockStatus::Durable);
        let d = store.describe_stream("x").await.unwrap();
        assert_eq!(
            d.end_offsets.iter().sum::<u64>(),
            2,
            "block 1 of the old, block 2 of the new"
        );
        let mut reader = store.open_reader("x", &[(0, 0), (1, 0)]).await.unwrap();
        let f = reader
            .fetch(100, 1 << 20, std::time::Duration::ZERO)
            .await
            .unwrap();
        let values: Vec<String> = f
            .records
            .iter()
            .map(|(_, r)| String::from_utf8_lossy(&r.value).into_owned())
            .collect();
        assert!(values.iter().any(|v| v.contains("new")), "{values:?}");
        assert!(
            !values.iter().any(|v| v.contains("old") && v.contains("2")),
            "{values:?}"
        );
    }
}

/// The embedded store (in `dir`) and the memory store, for cases that
/// run on both.
fn both_stores(dir: &tempfile::TempDir) -> [Arc<dyn Store>; 2] {
    let url = format!("file://{}", dir.path().display());
    [
        switchboard_store::open(&url, Default::default()).unwrap(),
        switchboard_store::open("memory://", Default::default()).unwrap(),
    ]
}

/// A session host over `store` with the tests' server key, without encryption.
async fn start_host(
    store: Arc<dyn Store>,
    cfg: switchboard_session::HostConfig,
) -> switchboard_session::SessionHost {
    let keys = switchboard_rpc::keys::ServerKeys::from_master(&[1; 32]);
    switchboard_session::SessionHost::start(store, keys, cfg, None)
        .await
        .unwrap()
}

/// Creates a stream through `host`.
async fn create(
    host: &switchboard_session::SessionHost,
    name: &str,
    partitions: u32,
    retention_bytes: Option<u64>,
) {
    host.handle(
        ctx(),
        switchboard_rpc::Request::CreateStream(switchboard_proto::wire::CreateStream {
            name: name.into(),
            partitions: Some(partitions),
            retention_ms: None,
            retention_bytes,
            encrypt_keys: None,
        }),
    )
    .await
    .unwrap();
}

/// Allocates a session through `host`.
async fn allocate(
    host: &switchboard_session::SessionHost,
    stream: &str,
    mode: switchboard_proto::wire::Mode,
    cursor: Option<&str>,
    producer: Option<&str>,
) -> switchboard_proto::wire::Allocated {
    let r = host
        .handle(
            ctx(),
            switchboard_rpc::Request::Allocate(switchboard_proto::wire::Allocate {
                stream: stream.into(),
                mode,
                cursor: cursor.map(str::to_string),
                partitions: None,
                producer: producer.map(str::to_string),
            }),
        )
        .await
        .unwrap();
    match r {
        switchboard_rpc::Response::Allocated(a) => a,
        other => panic!("not allocated: {other:?}"),
    }
}

/// A small node budget: readers fill it, a write then answers
/// `backpressure` (and changes nothing); reads keep answering; readers
/// left idle give their read-ahead back, the write goes through, and every
/// reader goes on exactly where it was (nothing skipped, nothing twice).
#[tokio::test]
async fn a_spent_budget_degrades_to_backpressure_never_to_failure() {
    use std::time::Duration;
    use switchboard_proto::wire::{Ack, Mode, Read, ReadAnswer};
    use switchboard_rpc::{Call, Request, Response};
    use switchboard_session::{HostConfig, SessionError};

    const BUDGET: usize = 512 << 10;
    let store: Arc<dyn Store> = Arc::new(switchboard_store::memory::MemoryStore::new());
    let cfg = HostConfig {
        memory_budget: BUDGET,
        readahead_idle: Duration::from_millis(300),
        ..HostConfig::default()
    };
    let host = start_host(store, cfg).await;
    create(&host, "m", 4, None).await;
    let value = "x".repeat(1000);
    for chunk in 0..10 {
        let events: Vec<String> = (0..200)
            .map(|i| format!(r#"{{"key":"k{chunk}-{i}","value":"{value}"}}"#))
            .collect();
        let body = format!(r#"{{"events":[{}]}}"#, events.join(","));
        host.handle(
            ctx(),
            Request::Publish {
                stream: "m".into(),
                idempotency_key: None,
                body: body.into(),
            },
        )
        .await
        .unwrap();
    }
    let read = Read {
        max_events: None,
        max_bytes: Some(64 << 10),
        wait_ms: Some(1000),
    };
    let session = |id: &str, call: Call| {
        host.handle(
            ctx(),
            Request::Session {
                id: id.to_string(),
                call,
            },
        )
    };
    let mut readers = Vec::new();
    let mut seen: Vec<Vec<(u32, u64)>> = Vec::new();
    for _ in 0..40 {
        let a = allocate(&host, "m", Mode::Read, Some("earliest"), None).await;
        let Response::Batch(b) = session(&a.session, Call::Read(read)).await.unwrap() else {
            panic!()
        };
        let ans: ReadAnswer = serde_json::from_slice(&b).unwrap();
        assert!(
            !ans.events.is_empty(),
            "a read answers events when the budget is spent"
        );
        seen.push(ans.events.iter().map(|e| (e.partition, e.offset)).collect());
        session(&a.session, Call::Ack(Ack { batch: ans.batch }))
            .await
            .unwrap();
        readers.push(a.session);
    }
    // the readers' read-ahead spends the budget (by a bounded overdraft at most)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while host.memory_used() + (100 << 10) <= BUDGET {
        assert!(
            tokio::time::Instant::now() < deadline,
            "used {}",
            host.memory_used()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        host.memory_used() < BUDGET + 40 * (64 << 10) * 2,
        "used {}",
        host.memory_used()
    );
    let w = allocate(&host, "m", Mode::Write, None, Some("p")).await;
    let block = format!(
        r#"{{"block":1,"events":[{}]}}"#,
        vec![format!(r#"{{"value":"{}"}}"#, "y".repeat(1000)); 100].join(",")
    );
    match session(&w.session, Call::Write(block.clone().into())).await {
        Err(SessionError::Backpressure { retry_after_ms, .. }) => assert!(retry_after_ms > 0),
        other => panic!("expected backpressure, got {other:?}"),
    }
    // idle readers give their read-ahead back
    memory_released(&host, Duration::from_secs(5)).await;
    let Response::Written(_) = session(&w.session, Call::Write(block.into())).await.unwrap() else {
        panic!()
    };
    // every reader goes on from where it was, to the end
    for (id, seen) in readers.iter().zip(seen.iter_mut()) {
        loop {
            let Response::Batch(b) = session(
                id,
                Call::Read(Read {
                    wait_ms: Some(0),
                    ..read
                }),
            )
            .await
            .unwrap() else {
                panic!()
            };
            let ans: ReadAnswer = serde_json::from_slice(&b).unwrap();
            if ans.events.is_empty() {
                break;
            }
            seen.extend(ans.events.iter().map(|e| (e.partition, e.offset)));
            session(id, Call::Ack(Ack { batch: ans.batch })).await.unwrap();
        }
        assert_eq!(seen.len(), 2000);
        for p in 0..4u32 {
            let offsets: Vec<u64> = seen.iter().filter(|e| e.0 == p).map(|e| e.1).collect();
            assert!(
                offsets.iter().enumerate().all(|(i, &o)| o == i as u64),
                "partition {p}: {offsets:?}"
            );
        }
    }
}

/// A keyed publish is block 1 of a producer named after the caller and the
/// key. Retried after it failed half-way (the embedded log holds one part
/// of the block, as a crash or a failed append leaves it), the retry
/// completes the block: each event stored once. A host that lost the key's
/// record answers a retry from where the store holds the block, with the
/// same offsets; the same key from another caller is another publish.
#[tokio::test]
async fn a_keyed_publish_retried_after_a_partial_failure_stores_each_event_once() {
    use switchboard_log::{BatchBuilder, Log, StreamSettings as LogSettings};
    use switchboard_rpc::{Request, Response};
    use switchboard_session::{HostConfig, SessionHost};

    // every event keyed: where they go depends on the keys alone
    let events: Vec<String> = (0..40)
        .map(|i| format!(r#"{{"key":"k{i}","value":{i}}}"#))
        .collect();
    let body = bytes::Bytes::from(format!(r#"{{"events":[{}]}}"#, events.join(",")));
    let mut per_partition = [0u32; 4];
    for i in 0..40 {
        per_partition
            [switchboard_proto::partition::partition_for_key(format!("k{i}").as_bytes(), 4) as usize] += 1;
    }
    let span = per_partition.iter().filter(|n| **n > 0).count() as u32;
    let first = per_partition.iter().position(|n| *n > 0).unwrap() as u32;
    assert!(span > 1);
    let dir = tempfile::tempdir().unwrap();
    {
        // as a failed first attempt leaves it: one part of the block
        let log = Log::open(dir.path(), Default::default()).unwrap();
        let (s, _) = log
            .create_stream(
                "idem",
                LogSettings {
                    partitions: 4,
                    ..Default::default()
                },
            )
            .unwrap();
        let producer = switchboard_session::idempotency_producer_id("alice", "idem", "order-17");
        let mut b = BatchBuilder::for_producer(&producer, 1).unwrap();
        b.set_block_parts(span);
        for _ in 0..per_partition[first as usize] {
            b.push(1, None, b"1", []);
        }
        s.partition(first).unwrap().append(&mut b).unwrap();
        log.close().unwrap();
    }
    let url = format!("file://{}", dir.path().display());
    let store = switchboard_store::open(&url, Default::default()).unwrap();
    let start = || start_host(store.clone(), HostConfig::default());
    let host = start().await;
    let publish = |host: &SessionHost, caller: &str| {
        let host = host.clone();
        let (caller, body) = (caller.to_string(), body.clone());
        async move {
            let r = host
                .handle(
                    switchboard_rpc::Context {
                        caller,
                        ..Default::default()
                    },
                    Request::Publish {
                        stream: "idem".into(),
                        idempotency_key: Some("order-17".into()),
                        body,
                    },
                )
                .await
                .unwrap();
            let Response::Published(b) = r else { panic!() };
            b
        }
    };
    let stored = || async {
        store
            .describe_stream("idem")
            .await
            .unwrap()
            .end_offsets
            .iter()
            .sum::<u64>()
    };
    let answer = publish(&host, "alice").await;
    assert_eq!(
        stored().await,
        40,
        "the retry completed the block: each event once"
    );
    assert_eq!(publish(&host, "alice").await, answer);
    // the offsets answered hold the events (the part stored before holds
    // its own records)
    let offsets: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    let offsets = offsets["offsets"].as_array().unwrap();
    assert_eq!(offsets.len(), 40);
    let mut reader = store
        .open_reader("idem", &[(0, 0), (1, 0), (2, 0), (3, 0)])
        .await
        .unwrap();
    let f = reader
        .fetch(1000, 1 << 20, std::time::Duration::ZERO)
        .await
        .unwrap();
    let at: std::collections::HashSet<(u32, u64)> = f.records.iter().map(|(p, r)| (*p, r.offset)).collect();
    for o in offsets {
        let key = (
            o["partition"].as_u64().unwrap() as u32,
            o["offset"].as_u64().unwrap(),
        );
        assert!(at.contains(&key), "{key:?}");
    }
    // the key's record lost (as a crash between the events and the record
    // would lose it): the store still holds the block once
    drop(host);
    store.delete_stream("__idempotency").await.unwrap();
    let host = start().await;
    assert_eq!(publish(&host, "alice").await, answer);
    assert_eq!(stored().await, 40);
    // another caller's key of the same name is its own publish
    assert_ne!(publish(&host, "bob").await, answer);
    assert_eq!(stored().await, 80);
}

/// A reader caught up at the tail of its stream, with less than a batch
/// buffered, gives that back once idle too.
#[tokio::test]
async fn an_idle_reader_at_the_tail_holds_nothing() {
    use std::time::Duration;
    use switchboard_proto::wire::{Ack, Mode, Read, ReadAnswer};
    use switchboard_rpc::{Call, Request, Response};
    use switchboard_session::HostConfig;

    let store: Arc<dyn Store> = Arc::new(switchboard_store::memory::MemoryStore::new());
    let cfg = HostConfig {
        readahead_idle: Duration::from_millis(200),
        ..HostConfig::default()
    };
    let host = start_host(store, cfg).await;
    create(&host, "t", 1, None).await;
    let events: Vec<String> = (0..50).map(|i| format!(r#"{{"value":{i}}}"#)).collect();
    let body = format!(r#"{{"events":[{}]}}"#, events.join(","));
    host.handle(
        ctx(),
        Request::Publish {
            stream: "t".into(),
            idempotency_key: None,
            body: body.into(),
        },
    )
    .await
    .unwrap();
    let a = allocate(&host, "t", Mode::Read, Some("earliest"), None).await;
    let call = |call: Call| {
        host.handle(
            ctx(),
            Request::Session {
                id: a.session.clone(),
                call,
            },
        )
    };
    let read = |max_events| {
        Call::Read(Read {
            max_events: Some(max_events),
            max_bytes: None,
            wait_ms: Some(1000),
        })
    };
    let Response::Batch(b) = call(read(10)).await.unwrap() else {
        panic!()
    };
    let ans: ReadAnswer = serde_json::from_slice(&b).unwrap();
    assert_eq!(ans.events.len(), 10);
    call(Call::Ack(Ack { batch: ans.batch })).await.unwrap();
    memory_released(&host, Duration::from_secs(8)).await;
    // and the reader goes on where it was
    let Response::Batch(b) = call(read(100)).await.unwrap() else {
        panic!()
    };
    let ans: ReadAnswer = serde_json::from_slice(&b).unwrap();
    assert_eq!(ans.events.first().map(|e| e.offset), Some(10));
    assert_eq!(ans.events.len(), 40);
}

/// Waits (up to `bound`) until the host's readers and writers hold none
/// of its memory budget.
async fn memory_released(host: &switchboard_session::SessionHost, bound: std::time::Duration) {
    let deadline = tokio::time::Instant::now() + bound;
    while host.memory_used() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still held: {}",
            host.memory_used()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
