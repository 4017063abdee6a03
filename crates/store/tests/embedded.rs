//! What only the embedded adapter has to show: a producer block that a
//! crash left in some of its partitions is not counted, and a replay
//! completes it.
#![allow(clippy::unwrap_used)]

use switchboard_log::{BatchBuilder, Log, StreamSettings as LogSettings};
use switchboard_store::embedded::EmbeddedStore;
use switchboard_store::{Appended, Block, BlockProducer, Store};

fn part(producer: &str, block: u64, span: u32) -> BatchBuilder {
    let mut b = BatchBuilder::for_producer(producer, block).unwrap();
    b.set_block_parts(span);
    b.push(1, None, b"v", []);
    b
}

fn block(producer: &str, block: u64, partitions: &[u32]) -> Block {
    let mut b = Block::new(Some(BlockProducer {
        id: producer.into(),
        epoch: 0,
        block,
    }))
    .unwrap();
    for &p in partitions {
        b.records(p).push(1, None, &[b"v"], []);
    }
    b
}

#[tokio::test]
async fn last_block_counts_only_complete_blocks() {
    let dir = tempfile::tempdir().unwrap();
    {
        // as a crash would leave it: block 1 whole (two partitions), block
        // 2 (three partitions) in one of them
        let log = Log::open(dir.path(), Default::default()).unwrap();
        let (s, _) = log
            .create_stream(
                "s",
                LogSettings {
                    partitions: 3,
                    ..Default::default()
                },
            )
            .unwrap();
        s.partition(0).unwrap().append(&mut part("p", 1, 2)).unwrap();
        s.partition(2).unwrap().append(&mut part("p", 1, 2)).unwrap();
        s.partition(1).unwrap().append(&mut part("p", 2, 3)).unwrap();
        log.close().unwrap();
    }
    let store = EmbeddedStore::open(dir.path(), Default::default()).unwrap();
    assert_eq!(store.last_block("s", "p").await.unwrap(), 1);
    assert_eq!(store.last_block("s", "other").await.unwrap(), 0);
    // the replay stores the two missing parts; the third is a duplicate
    let Appended::Stored(ranges) = store.append("s", block("p", 2, &[0, 1, 2])).await.unwrap() else {
        panic!("not stored")
    };
    assert_eq!(
        ranges.iter().map(|r| r.partition).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert_eq!(store.last_block("s", "p").await.unwrap(), 2);
    // a block in one partition is complete by itself
    store.append("s", block("p", 3, &[1])).await.unwrap();
    assert_eq!(store.last_block("s", "p").await.unwrap(), 3);
    let d = store.describe_stream("s").await.unwrap();
    assert_eq!(d.end_offsets, vec![2, 2, 2], "no part was stored twice");
}

/// Under every fsync policy, an append answers only once its records are
/// on stable storage (as the log itself counts them: its durable end).
#[tokio::test]
async fn appends_answer_only_once_durable_whatever_the_policy() {
    use std::time::{Duration, Instant};
    use switchboard_log::{Durability, LogConfig};
    for (durability, least) in [
        (Durability::Interval { ms: 300 }, Duration::from_millis(1)),
        (Durability::Never, Duration::ZERO),
        (Durability::Always, Duration::ZERO),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            durability,
            ..Default::default()
        };
        let store = EmbeddedStore::open(dir.path(), cfg).unwrap();
        store
            .create_stream(
                "d",
                switchboard_store::StreamSettings {
                    partitions: 2,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        for b in 1..=3 {
            let t = Instant::now();
            let Appended::Stored(ranges) = store.append("d", block("p", b, &[0, 1])).await.unwrap() else {
                panic!("not stored")
            };
            assert!(t.elapsed() >= least, "{durability:?}");
            let durable = store.durable_end_offsets("d").unwrap();
            for r in &ranges {
                assert!(
                    durable[r.partition as usize] > r.last,
                    "{durability:?}: {durable:?} {r:?}"
                );
            }
            assert_eq!(store.last_block("d", "p").await.unwrap(), b);
        }
        // a replay of the last block is a duplicate, and durable too
        let again = store.append("d", block("p", 3, &[0, 1])).await.unwrap();
        assert!(
            matches!(again, Appended::Duplicate { last_block: 3, .. }),
            "{again:?}"
        );
    }
}

/// Retention in the embedded log removes whole segments; a reader whose
/// position fell below the oldest record held is told exactly which range
/// it lost.
#[tokio::test]
async fn a_reader_behind_retention_gets_the_gap() {
    use std::time::Duration;
    use switchboard_log::LogConfig;
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 4096,
        retention_check_ms: 50,
        ..Default::default()
    };
    let store = EmbeddedStore::open(dir.path(), cfg).unwrap();
    store
        .create_stream(
            "g",
            switchboard_store::StreamSettings {
                partitions: 1,
                retention_bytes: Some(8192),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut reader = store.open_reader("g", &[(0, 0)]).await.unwrap();
    for _ in 0..20 {
        let mut b = Block::new(None).unwrap();
        for _ in 0..10 {
            b.records(0).push(1, None, &[&[7u8; 100][..]], []);
        }
        store.append("g", b).await.unwrap();
    }
    let mut start = 0;
    for _ in 0..100 {
        start = store.describe_stream("g").await.unwrap().start_offsets[0];
        if start > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(start > 0, "retention ran");
    let f = reader.fetch(1000, 1 << 20, Duration::ZERO).await.unwrap();
    assert_eq!(f.gaps.len(), 1);
    assert_eq!((f.gaps[0].partition, f.gaps[0].from, f.gaps[0].to), (0, 0, start));
    assert_eq!(f.records.first().map(|r| r.1.offset), Some(start));
}

/// Blocks of never-fenced producers (epoch 0: keyed publishes) make no
/// epoch in the store; fenced producers do, one each (the unit tests of
/// the adapter show idle ones forgotten).
#[tokio::test]
async fn only_fenced_producers_hold_an_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), Default::default()).unwrap();
    store
        .create_stream(
            "s",
            switchboard_store::StreamSettings {
                partitions: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    for i in 0..100 {
        let appended = store
            .append("s", block(&format!("~key-{i}"), 1, &[0]))
            .await
            .unwrap();
        assert!(matches!(appended, Appended::Stored(_)));
    }
    assert_eq!(store.fenced_producers(), 0);
    for i in 0..10 {
        store.fence_producer("s", &format!("p{i}")).await.unwrap();
    }
    assert_eq!(store.fenced_producers(), 10);
}

/// Under `interval`, a producer's blocks to one partition are written while
/// the earlier ones wait for their sync, so a writer is not held to one
/// block per interval; a block of several partitions waits until the
/// earlier ones are durable, and later ones wait for it; every answer still
/// comes only once its records are durable; a fence waits for them all.
#[tokio::test]
async fn submitted_blocks_of_one_partition_share_a_sync_and_stay_exact() {
    use std::time::{Duration, Instant};
    use switchboard_log::{Durability, LogConfig};
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        durability: Durability::Interval { ms: 200 },
        ..Default::default()
    };
    let store = EmbeddedStore::open(dir.path(), cfg).unwrap();
    store
        .create_stream(
            "i",
            switchboard_store::StreamSettings {
                partitions: 2,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let fencing = store.fence_producer("i", "p").await.unwrap();
    let epoch = fencing.epoch;
    let mk = |b: u64, parts: &[u32]| {
        let mut blk = Block::new(Some(BlockProducer {
            id: "p".into(),
            epoch,
            block: b,
        }))
        .unwrap();
        for &p in parts {
            blk.records(p).push(1, None, &[b"v"], []);
        }
        blk
    };
    // eight blocks to partition 0: all written at once, one sync for all
    let t = Instant::now();
    let mut pending = Vec::new();
    for b in 1..=8 {
        pending.push(store.submit("i", mk(b, &[0])).await);
    }
    assert!(
        t.elapsed() < Duration::from_millis(150),
        "written without waiting: {:?}",
        t.elapsed()
    );
    for (i, f) in pending.into_iter().enumerate() {
        let Appended::Stored(r) = f.await.unwrap() else {
            panic!("not stored")
        };
        let durable = store.durable_end_offsets("i").unwrap();
        assert!(durable[0] > r[0].last, "block {} answered before its sync", i + 1);
    }
    assert!(
        t.elapsed() < Duration::from_millis(600),
        "one sync, not eight: {:?}",
        t.elapsed()
    );
    assert_eq!(store.last_block("i", "p").await.unwrap(), 8);
    // a block to the other partition, then one of both: each waits for
    // the producer's earlier blocks to be durable before it is written
    let a = store.submit("i", mk(9, &[1])).await;
    let b = store.submit("i", mk(10, &[0, 1])).await;
    let d = store.durable_end_offsets("i").unwrap();
    assert_eq!(
        d,
        vec![8, 1],
        "block 10 was written only after block 9 was durable"
    );
    let c = store.submit("i", mk(11, &[0])).await;
    for f in [a, b, c] {
        assert!(matches!(f.await.unwrap(), Appended::Stored(_)));
    }
    // a fence while blocks are on their way waits for them (nobody polls
    // their answers meanwhile)
    let mut pending = Vec::new();
    for b in 12..=14 {
        pending.push(store.submit("i", mk(b, &[0])).await);
    }
    let fenced = store.fence_producer("i", "p").await.unwrap();
    assert_eq!(fenced.last_block, 14);
    for f in pending {
        assert!(matches!(f.await.unwrap(), Appended::Stored(_)));
    }
    // the old epoch's blocks are fenced now
    let late = store.submit("i", mk(15, &[0])).await.await.unwrap();
    assert!(matches!(late, Appended::Fenced { .. }), "{late:?}");
}
