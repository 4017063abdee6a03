//! The session host against the embedded store, in process.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use switchboard_session::host::producer_last_block;
use switchboard_store::embedded::EmbeddedStore;
use switchboard_store::{RecordBatch, Store, StreamSettings};

fn batch(producer: &str, block: u64, parts: u32) -> RecordBatch {
    let mut b = RecordBatch::for_producer(producer, block).unwrap();
    b.set_block_parts(parts);
    b.push(1, None, b"v", []);
    b
}

#[tokio::test]
async fn last_block_counts_only_complete_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path(), Default::default()).unwrap());
    let settings = StreamSettings {
        partitions: 3,
        ..StreamSettings::default()
    };
    store.create_stream("s", settings).await.unwrap();
    assert_eq!(producer_last_block(&*store, "s", 3, "p").await.unwrap(), 0);
    // block 1 in partitions 0 and 2, complete
    store.append("s", 0, batch("p", 1, 2)).await.0.unwrap();
    store.append("s", 2, batch("p", 1, 2)).await.0.unwrap();
    assert_eq!(producer_last_block(&*store, "s", 3, "p").await.unwrap(), 1);
    // block 2 spans all three partitions; a crash left one part
    store.append("s", 1, batch("p", 2, 3)).await.0.unwrap();
    assert_eq!(producer_last_block(&*store, "s", 3, "p").await.unwrap(), 1);
    store.append("s", 0, batch("p", 2, 3)).await.0.unwrap();
    assert_eq!(producer_last_block(&*store, "s", 3, "p").await.unwrap(), 1);
    // the replay completes it; the part already stored is a duplicate
    let (r, _) = store.append("s", 1, batch("p", 2, 3)).await;
    assert!(matches!(r.unwrap(), switchboard_store::Appended::Duplicate(_)));
    store.append("s", 2, batch("p", 2, 3)).await.0.unwrap();
    assert_eq!(producer_last_block(&*store, "s", 3, "p").await.unwrap(), 2);
    // a block in one partition is complete by itself
    store.append("s", 1, batch("p", 3, 1)).await.0.unwrap();
    assert_eq!(producer_last_block(&*store, "s", 3, "p").await.unwrap(), 3);
    assert_eq!(producer_last_block(&*store, "s", 3, "other").await.unwrap(), 0);
}
