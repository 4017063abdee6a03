//! Readers sharing the node's consumers, against the real broker at
//! `SWITCHBOARD_KAFKA` (without it these tests pass at once).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use switchboard_kafka::{KafkaConfig, KafkaStore};
use switchboard_store::{Block, Store, StreamSettings};

async fn store(fetchers: usize) -> Option<KafkaStore> {
    let brokers = std::env::var("SWITCHBOARD_KAFKA").ok()?;
    let id = rand::random::<u64>();
    let mut cfg = KafkaConfig::new(&brokers, &format!("test-{id:x}"));
    cfg.topic_prefix = format!("r{id:x}.");
    cfg.state_partitions = 1;
    cfg.fetchers = fetchers;
    Some(KafkaStore::open(cfg).await.unwrap())
}

async fn values(r: &mut dyn switchboard_store::StoreReader) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let f = r.fetch(1000, 1 << 20, Duration::ZERO).await.unwrap();
        if f.records.is_empty() {
            return out;
        }
        out.extend(
            f.records
                .iter()
                .map(|(_, rec)| String::from_utf8(rec.value.to_vec()).unwrap()),
        );
    }
}

/// One consumer for every reader: a reader that takes it over after
/// another read to the end starts where it asked, not where the consumer
/// was (the consumer's position right after `assign` is the earlier one's).
#[tokio::test]
async fn a_reader_taking_over_a_consumer_starts_where_it_asked() {
    let Some(s) = store(1).await else { return };
    s.create_stream(
        "s",
        StreamSettings {
            partitions: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    for i in 0..10 {
        let mut b = Block::new(None).unwrap();
        for j in 0..10 {
            b.records(0)
                .push(1, None, &[format!("{:03}", i * 10 + j).as_bytes()], []);
        }
        s.append("s", b).await.unwrap();
    }
    let all: Vec<String> = (0..100).map(|i| format!("{i:03}")).collect();
    let mut a = s.open_reader("s", &[(0, 0)]).await.unwrap();
    assert_eq!(values(&mut *a).await, all);
    for start in [10u64, 0, 55] {
        let mut b = s.open_reader("s", &[(0, start)]).await.unwrap();
        let got = values(&mut *b).await;
        assert_eq!(got, all[start as usize..], "from {start}");
        // and back to the first reader, at its end: nothing, and no skip
        assert!(values(&mut *a).await.is_empty());
    }
}
