//! One behaviour, every adapter: the same cases run against the embedded
//! log (`file://`) and the memory store (`memory://`).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use switchboard_store::{Appended, Block, BlockProducer, Error, Store, StreamSettings};

struct Case {
    name: &'static str,
    /// Offsets are consecutive (Kafka's transaction markers take offsets).
    dense: bool,
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

/// Kafka too when `SWITCHBOARD_KAFKA` names brokers (`scripts/test`
/// starts one): each case on topics of its own prefix, as a node of its own.
async fn kafka() -> Option<Case> {
    let brokers = std::env::var("SWITCHBOARD_KAFKA").ok()?;
    let id = rand::random::<u64>();
    let mut cfg = switchboard_kafka::KafkaConfig::new(&brokers, &format!("test-{id:x}"));
    cfg.topic_prefix = format!("t{id:x}.");
    cfg.state_partitions = 2;
    Some(Case {
        name: "kafka",
        dense: false,
        store: Arc::new(switchboard_kafka::KafkaStore::open(cfg).await.unwrap()),
        _dir: None,
    })
}

async fn stores() -> Vec<Case> {
    let mut v = local_stores();
    v.extend(kafka().await);
    v
}

fn local_stores() -> Vec<Case> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("log").display());
    vec![
        Case {
            name: "file",
            dense: true,
            store: switchboard_store::open(&url, Default::default()).unwrap(),
            _dir: Some(dir),
        },
        Case {
            name: "memory",
            dense: true,
            store: switchboard_store::open("memory://", Default::default()).unwrap(),
            _dir: None,
        },
    ]
}

fn settings(partitions: u32) -> StreamSettings {
    StreamSettings {
        partitions,
        ..Default::default()
    }
}

fn block(producer: Option<(&str, u64)>, events: &[(u32, &str)]) -> Block {
    let mut b = Block::new(producer.map(|(id, block)| BlockProducer {
        id: id.into(),
        epoch: 0,
        block,
    }))
    .unwrap();
    for (p, v) in events {
        b.records(*p)
            .push(7, Some(v.as_bytes()), &[v.as_bytes()], [(&b"h"[..], &b"x"[..])]);
    }
    b
}

async fn read_all(s: &dyn Store, stream: &str, partitions: u32) -> Vec<(u32, u64, String)> {
    let pos: Vec<(u32, u64)> = (0..partitions).map(|p| (p, 0)).collect();
    let mut r = s.open_reader(stream, &pos).await.unwrap();
    let mut out = Vec::new();
    loop {
        let f = r.fetch(1000, 1 << 20, Duration::ZERO).await.unwrap();
        if f.records.is_empty() {
            break;
        }
        for (p, rec) in f.records {
            assert_eq!(rec.headers.get(b"h"), Some(&b"x"[..]));
            assert_eq!(rec.key.as_deref(), Some(&rec.value[..]));
            out.push((p, rec.offset, String::from_utf8(rec.value.to_vec()).unwrap()));
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn streams_are_created_listed_described_and_deleted() {
    for c in stores().await {
        let s = &c.store;
        assert!(s.create_stream("a", settings(2)).await.unwrap(), "{}", c.name);
        assert!(!s.create_stream("a", settings(2)).await.unwrap());
        let other = StreamSettings {
            encrypt_keys: false,
            ..settings(2)
        };
        assert_eq!(
            s.create_stream("a", other).await,
            Err(Error::Conflict("a".into()))
        );
        s.create_stream("b", other).await.unwrap();
        let names: Vec<_> = s.list_streams().await.unwrap().into_iter().map(|x| x.0).collect();
        assert_eq!(names, vec!["a", "b"], "{}", c.name);
        assert!(!s.stream_settings("b").await.unwrap().encrypt_keys);
        let d = s.describe_stream("a").await.unwrap();
        assert_eq!((d.start_offsets, d.end_offsets), (vec![0, 0], vec![0, 0]));
        s.delete_stream("a").await.unwrap();
        assert!(matches!(s.describe_stream("a").await, Err(Error::NotFound(_))));
        assert!(matches!(
            s.append("a", block(None, &[(0, "x")])).await,
            Err(Error::NotFound(_))
        ));
        assert!(matches!(s.delete_stream("a").await, Err(Error::NotFound(_))));
        assert!(matches!(
            s.create_stream("bad name", settings(1)).await,
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            s.create_stream("z", settings(0)).await,
            Err(Error::Invalid(_))
        ));
    }
}

#[tokio::test]
async fn blocks_are_stored_once_and_read_back() {
    for c in stores().await {
        let s = &c.store;
        s.create_stream("s", settings(3)).await.unwrap();
        let Appended::Stored(r1) = s
            .append("s", block(Some(("p", 1)), &[(0, "a"), (2, "b"), (0, "c")]))
            .await
            .unwrap()
        else {
            panic!("{}", c.name)
        };
        assert_eq!(r1.len(), 2);
        assert_eq!((r1[0].partition, r1[0].first, r1[0].last), (0, 0, 1));
        // the same block again: nothing written, and where it is
        let again = s
            .append("s", block(Some(("p", 1)), &[(0, "a"), (2, "b"), (0, "c")]))
            .await
            .unwrap();
        assert_eq!(
            again,
            Appended::Duplicate {
                last_block: 1,
                ranges: Some(r1.clone())
            },
            "{}",
            c.name
        );
        s.append("s", block(Some(("p", 2)), &[(1, "d")])).await.unwrap();
        // an older block: a duplicate without ranges
        let old = s.append("s", block(Some(("p", 1)), &[(1, "a")])).await.unwrap();
        assert!(
            matches!(
                old,
                Appended::Duplicate {
                    last_block: 2,
                    ranges: None
                }
            ),
            "{}: {old:?}",
            c.name
        );
        assert_eq!(s.last_block("s", "p").await.unwrap(), 2);
        assert_eq!(s.last_block("s", "q").await.unwrap(), 0);
        // without a producer, every append stores
        s.append("s", block(None, &[(1, "e")])).await.unwrap();
        s.append("s", block(None, &[(1, "e")])).await.unwrap();
        let all = read_all(&**s, "s", 3).await;
        let values: Vec<_> = all.iter().map(|x| x.2.as_str()).collect();
        assert_eq!(values, vec!["a", "c", "d", "e", "e", "b"], "{}", c.name);
        let d = s.describe_stream("s").await.unwrap();
        if c.dense {
            assert_eq!(d.end_offsets, vec![2, 3, 1]);
        }
        assert!(matches!(
            s.append("s", block(None, &[(3, "x")])).await,
            Err(Error::Invalid(_))
        ));
    }
}

#[tokio::test]
async fn readers_keep_positions_and_wait_for_new_records() {
    for c in stores().await {
        let s = c.store.clone();
        s.create_stream("w", settings(2)).await.unwrap();
        s.append("w", block(None, &[(0, "a"), (1, "b")])).await.unwrap();
        let mut r = s.open_reader("w", &[(1, 0)]).await.unwrap();
        let f = r.fetch(10, 1 << 20, Duration::ZERO).await.unwrap();
        assert_eq!(f.records.len(), 1, "{}", c.name);
        assert_eq!(r.positions(), vec![(1, 1)]);
        // nothing yet: an empty answer at the deadline
        let t = std::time::Instant::now();
        let f = r.fetch(10, 1 << 20, Duration::from_millis(100)).await.unwrap();
        assert!(f.records.is_empty() && t.elapsed() >= Duration::from_millis(90));
        // a waiting reader wakes for an append to its partition
        let s2 = s.clone();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            s2.append("w", block(None, &[(1, "c")])).await.unwrap();
        });
        let t = std::time::Instant::now();
        let f = r.fetch(10, 1 << 20, Duration::from_secs(10)).await.unwrap();
        assert_eq!(f.records[0].1.value, &b"c"[..], "{}", c.name);
        assert!(t.elapsed() < Duration::from_secs(5));
        writer.await.unwrap();
        // limits: one record at a time
        s.append("w", block(None, &[(0, "d"), (0, "e")])).await.unwrap();
        let mut r = s.open_reader("w", &[(0, 0), (1, 0)]).await.unwrap();
        let mut n = 0;
        while !r
            .fetch(1, 1 << 20, Duration::ZERO)
            .await
            .unwrap()
            .records
            .is_empty()
        {
            n += 1;
        }
        assert_eq!(n, 5, "{}", c.name);
    }
}

#[tokio::test]
async fn a_closed_store_is_unavailable() {
    for c in stores().await {
        c.store.create_stream("c", settings(1)).await.unwrap();
        c.store.close().await.unwrap();
        assert!(
            matches!(c.store.describe_stream("c").await, Err(Error::Unavailable(_))),
            "{}",
            c.name
        );
    }
}

#[tokio::test]
async fn memory_retention_leaves_a_gap_readers_are_told_of() {
    let s = switchboard_store::open("memory://", Default::default()).unwrap();
    s.create_stream(
        "r",
        StreamSettings {
            retention_bytes: Some(10),
            ..settings(1)
        },
    )
    .await
    .unwrap();
    let mut r = s.open_reader("r", &[(0, 0)]).await.unwrap();
    for v in ["aaaa", "bbbb", "cccc", "dddd"] {
        s.append("r", block(None, &[(0, v)])).await.unwrap();
    }
    let f = r.fetch(100, 1 << 20, Duration::ZERO).await.unwrap();
    assert_eq!(f.gaps.len(), 1);
    assert_eq!((f.gaps[0].from, f.gaps[0].to), (0, 3));
    assert_eq!(f.records.len(), 1);
}

/// Fencing: each new session of a producer takes a higher epoch; blocks of
/// older epochs are refused from then on (nothing written); the newest
/// epoch's blocks are stored; `last_block` comes with the epoch.
#[tokio::test]
async fn a_fence_refuses_blocks_of_older_epochs() {
    for c in stores().await {
        let s = &*c.store;
        s.create_stream("f", settings(2)).await.unwrap();
        let with_epoch = |epoch: u64, n: u64, v: &str| {
            let mut b = Block::new(Some(BlockProducer {
                id: "p".into(),
                epoch,
                block: n,
            }))
            .unwrap();
            for p in 0..2 {
                b.records(p)
                    .push(7, Some(v.as_bytes()), &[v.as_bytes()], [(&b"h"[..], &b"x"[..])]);
            }
            b
        };
        let first = s.fence_producer("f", "p").await.unwrap();
        assert_eq!(first.last_block, 0, "{}", c.name);
        assert!(matches!(
            s.append("f", with_epoch(first.epoch, 1, "a")).await.unwrap(),
            Appended::Stored(_)
        ));
        let second = s.fence_producer("f", "p").await.unwrap();
        assert!(second.epoch > first.epoch, "{}", c.name);
        assert_eq!(second.last_block, 1, "{}", c.name);
        assert_eq!(
            s.append("f", with_epoch(first.epoch, 2, "old")).await.unwrap(),
            Appended::Fenced { epoch: second.epoch },
            "{}",
            c.name
        );
        assert!(matches!(
            s.append("f", with_epoch(second.epoch, 2, "new")).await.unwrap(),
            Appended::Stored(_)
        ));
        let values: Vec<String> = read_all(s, "f", 2).await.into_iter().map(|r| r.2).collect();
        assert_eq!(values.iter().filter(|v| *v == "old").count(), 0, "{}", c.name);
        assert_eq!(values.iter().filter(|v| *v == "new").count(), 2, "{}", c.name);
        assert_eq!(s.last_block("f", "p").await.unwrap(), 2, "{}", c.name);
    }
}
