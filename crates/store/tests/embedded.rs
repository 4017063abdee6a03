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
