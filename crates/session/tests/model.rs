//! Property tests of the session state machines against a simple model:
//! random sequences of reads, retried reads, acks (right, repeated, wrong),
//! writes (new, retried, conflicting, out of order) and commits, through the
//! session host, on the embedded store and on the memory store. Every answer must match the model,
//! every refused call must change nothing, and in the end the stream must
//! hold exactly the committed blocks and readers must have seen every event
//! once, in order.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use proptest::prelude::*;
use switchboard_proto::wire::{Ack, Allocate, Commit, CreateStream, Mode, Read, ReadAnswer};
use switchboard_rpc::keys::ServerKeys as Keys;
use switchboard_rpc::{Call, Request, Response};
use switchboard_session::{HostConfig, SessionError, SessionHost};

#[derive(Debug, Clone)]
enum W {
    Write,
    RetryWrite,
    WriteOther,
    WriteSkip,
    Commit,
    RetryCommit,
    CommitUnknown,
}

fn w_op() -> impl Strategy<Value = W> {
    prop_oneof![
        4 => Just(W::Write),
        1 => Just(W::RetryWrite),
        1 => Just(W::WriteOther),
        1 => Just(W::WriteSkip),
        4 => Just(W::Commit),
        1 => Just(W::RetryCommit),
        1 => Just(W::CommitUnknown),
    ]
}

#[derive(Debug, Clone)]
enum R {
    Read(u32),
    Ack,
    AckLast,
    AckWrong,
}

fn r_op() -> impl Strategy<Value = R> {
    prop_oneof![
        4 => (1u32..7).prop_map(R::Read),
        3 => Just(R::Ack),
        1 => Just(R::AckLast),
        1 => Just(R::AckWrong),
    ]
}

fn body(block: u64, tag: &str) -> bytes::Bytes {
    let events: Vec<String> = (0..3)
        .map(|i| {
            format!(
                "{{\"key\":\"k{}\",\"value\":\"{tag}-{block}-{i}\"}}",
                (block as usize + i) % 5
            )
        })
        .collect();
    format!("{{\"block\":{block},\"events\":[{}]}}", events.join(",")).into()
}

/// The model runs with encryption on: what it checks holds through sealing.
async fn crypto(
    dir: &tempfile::TempDir,
    store: Arc<dyn switchboard_store::Store>,
) -> Option<Arc<switchboard_session::crypto::Crypto>> {
    let keys_dir = dir.path().join("keys");
    let cfg = switchboard_session::crypto::CryptoConfig {
        master: switchboard_session::crypto::MasterSource::File(keys_dir.join("master.keys")),
        keys_dir,
        rotate_ms: 3_600_000,
        rotate_records: 7,
    };
    Some(
        switchboard_session::crypto::Crypto::open(cfg, store)
            .await
            .unwrap(),
    )
}

async fn setup(store: &str) -> (tempfile::TempDir, SessionHost) {
    let dir = tempfile::tempdir().unwrap();
    let url = match store {
        "file" => format!("file://{}", dir.path().join("log").display()),
        _ => "memory://".to_string(),
    };
    let store = switchboard_store::open(&url, Default::default()).unwrap();
    let crypto = crypto(&dir, store.clone()).await;
    let host = SessionHost::start(store, Keys::from_master(&[3; 32]), HostConfig::default(), crypto)
        .await
        .unwrap();
    host.handle(
        ctx(),
        Request::CreateStream(CreateStream {
            name: "m".into(),
            partitions: Some(3),
            retention_ms: None,
            retention_bytes: None,
            encrypt_keys: None,
        }),
    )
    .await
    .unwrap();
    (dir, host)
}

async fn alloc(host: &SessionHost, mode: Mode, cursor: Option<&str>) -> String {
    let r = host
        .handle(
            ctx(),
            Request::Allocate(Allocate {
                stream: "m".into(),
                mode,
                cursor: cursor.map(str::to_string),
                partitions: None,
                producer: None,
            }),
        )
        .await
        .unwrap();
    match r {
        Response::Allocated(a) => a.session,
        other => panic!("{other:?}"),
    }
}

async fn run_case(wops: Vec<W>, rops: Vec<R>, store: &str) {
    let (_dir, host) = setup(store).await;
    let call = |id: &str, c: Call| {
        host.handle(
            ctx(),
            Request::Session {
                id: id.to_string(),
                call: c,
            },
        )
    };

    // writer: the model is (next block to write, staged block, committed blocks)
    let w = alloc(&host, Mode::Write, None).await;
    let mut staged: Option<u64> = None;
    let mut committed: Vec<u64> = Vec::new();
    let mut written: Vec<u64> = Vec::new();
    for op in wops {
        let next = committed.last().copied().unwrap_or(0) + 1;
        match op {
            W::Write => {
                let b = staged.unwrap_or(next);
                let r = call(&w, Call::Write(body(b, "a"))).await.unwrap();
                assert!(matches!(r, Response::Written(a) if a.block == b && a.events == 3));
                staged = Some(b);
                if !written.contains(&b) {
                    written.push(b);
                }
            }
            W::RetryWrite => {
                if let Some(&b) = written.last() {
                    let r = call(&w, Call::Write(body(b, "a"))).await.unwrap();
                    assert!(matches!(r, Response::Written(a) if a.block == b));
                }
            }
            W::WriteOther => {
                if let Some(&b) = written.last() {
                    let r = call(&w, Call::Write(body(b, "other"))).await;
                    assert!(matches!(r, Err(SessionError::Conflict(_))));
                }
            }
            W::WriteSkip => {
                let r = call(&w, Call::Write(body(next + 1, "a"))).await;
                assert!(matches!(r, Err(SessionError::Conflict(_))));
            }
            W::Commit => match staged.take() {
                Some(b) => {
                    let r = call(
                        &w,
                        Call::Commit(Commit {
                            block: b,
                            durable: Some(true),
                        }),
                    )
                    .await
                    .unwrap();
                    assert!(matches!(r, Response::Committed(c) if c.block == b));
                    committed.push(b);
                }
                None => {
                    let r = call(
                        &w,
                        Call::Commit(Commit {
                            block: next,
                            durable: None,
                        }),
                    )
                    .await;
                    assert!(matches!(r, Err(SessionError::Conflict(_))));
                }
            },
            W::RetryCommit => {
                if let Some(&b) = committed.last() {
                    let r = call(
                        &w,
                        Call::Commit(Commit {
                            block: b,
                            durable: Some(true),
                        }),
                    )
                    .await
                    .unwrap();
                    assert!(matches!(r, Response::Committed(c) if c.block == b));
                }
            }
            W::CommitUnknown => {
                let r = call(
                    &w,
                    Call::Commit(Commit {
                        block: next + 5,
                        durable: None,
                    }),
                )
                .await;
                assert!(matches!(r, Err(SessionError::Conflict(_))));
            }
        }
    }
    let expected: Vec<String> = committed
        .iter()
        .flat_map(|b| (0..3).map(move |i| format!("\"a-{b}-{i}\"")))
        .collect();

    // reader: the model is (events delivered and acked, pending batch)
    let r = alloc(&host, Mode::Read, Some("earliest")).await;
    let mut seen: Vec<String> = Vec::new();
    let mut pending: Option<(u64, bytes::Bytes, Vec<String>)> = None;
    let mut last_acked: Option<u64> = None;
    for op in rops
        .into_iter()
        .chain((0..200).flat_map(|_| [R::Read(50), R::Ack]))
    {
        match op {
            R::Read(n) => {
                let read = Read {
                    max_events: Some(n),
                    max_bytes: None,
                    wait_ms: Some(0),
                };
                let Response::Batch(b) = call(&r, Call::Read(read)).await.unwrap() else {
                    panic!()
                };
                match &pending {
                    Some((_, bytes, _)) => assert_eq!(&b, bytes, "a pending batch is returned byte for byte"),
                    None => {
                        let a: ReadAnswer = serde_json::from_slice(&b).unwrap();
                        assert!(a.events.len() <= n as usize);
                        if a.batch != 0 {
                            let vals = a
                                .events
                                .iter()
                                .map(|e| e.value.as_ref().unwrap().get().to_string())
                                .collect();
                            pending = Some((a.batch, b, vals));
                        }
                    }
                }
            }
            R::Ack => {
                if let Some((batch, _, vals)) = pending.take() {
                    let a = call(&r, Call::Ack(Ack { batch })).await.unwrap();
                    assert!(matches!(a, Response::Acked(x) if x.batch == batch));
                    seen.extend(vals);
                    last_acked = Some(batch);
                }
            }
            R::AckLast => {
                if let Some(b) = last_acked {
                    let a = call(&r, Call::Ack(Ack { batch: b })).await.unwrap();
                    assert!(matches!(a, Response::Acked(x) if x.batch == b));
                }
            }
            R::AckWrong => {
                let wrong = pending.as_ref().map_or(0, |p| p.0) + last_acked.unwrap_or(0) + 7;
                let a = call(&r, Call::Ack(Ack { batch: wrong })).await;
                assert!(matches!(a, Err(SessionError::Conflict(_))));
            }
        }
    }
    assert!(pending.is_none() || seen.len() < expected.len());
    let mut got = seen.clone();
    got.sort();
    let mut want = expected.clone();
    want.sort();
    assert_eq!(got, want, "every committed event once, nothing else");
    // per key, in block order
    for k in 0..5 {
        let order = |v: &Vec<String>| -> Vec<String> {
            v.iter()
                .filter(|e| {
                    let parts: Vec<&str> = e.trim_matches('"').split('-').collect();
                    let (b, i): (usize, usize) = (parts[1].parse().unwrap(), parts[2].parse().unwrap());
                    (b + i) % 5 == k
                })
                .cloned()
                .collect()
        };
        assert_eq!(order(&seen), order(&expected));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn sessions_follow_the_model(
        wops in proptest::collection::vec(w_op(), 0..40),
        rops in proptest::collection::vec(r_op(), 0..40),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        for store in ["file", "memory"] {
            rt.block_on(run_case(wops.clone(), rops.clone(), store));
        }
    }
}

fn ctx() -> switchboard_rpc::Context {
    switchboard_rpc::Context {
        caller: "test".into(),
        ..Default::default()
    }
}
