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

/// A stream of `partitions` with `n` records in each.
async fn fill(s: &KafkaStore, stream: &str, partitions: u32, n: usize) {
    s.create_stream(
        stream,
        StreamSettings {
            partitions,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut b = Block::new(None).unwrap();
    for p in 0..partitions {
        for i in 0..n {
            b.records(p).push(1, None, &[format!("{i:03}").as_bytes()], []);
        }
    }
    s.append(stream, b).await.unwrap();
}

/// One consumer for every reader: after the stream it last read is
/// deleted (its reader gone, or still there), what the consumer heard of
/// that topic is not taken for news of the next reader's stream, which
/// exists and is read in full.
#[tokio::test]
async fn a_deleted_stream_is_not_blamed_on_the_next_reader_of_its_consumer() {
    let Some(s) = store(1).await else { return };
    for keep in [false, true] {
        let (gone, next) = (format!("gone{keep}"), format!("next{keep}"));
        fill(&s, &gone, 4, 5).await;
        let mut a = s
            .open_reader(&gone, &[(0, 0), (1, 0), (2, 0), (3, 0)])
            .await
            .unwrap();
        assert_eq!(values(&mut *a).await.len(), 20);
        let a = if keep { Some(a) } else { None };
        s.delete_stream(&gone).await.unwrap();
        // the consumer's fetches of the deleted topic fail meanwhile
        tokio::time::sleep(Duration::from_secs(3)).await;
        fill(&s, &next, 4, 7).await;
        let mut b = s.open_reader(&next, &[(3, 0)]).await.unwrap();
        let mut got = 0;
        while got < 7 {
            match b.fetch(1000, 1 << 20, Duration::from_millis(200)).await {
                Ok(f) => got += f.records.len(),
                Err(e) => panic!("reading {next} (reader of {gone} kept: {keep}): {e}"),
            }
        }
        // the deleted stream's reader is told its stream is gone
        if let Some(mut a) = a {
            let e = a.fetch(1000, 1 << 20, Duration::from_secs(2)).await;
            assert!(
                matches!(&e, Err(switchboard_store::Error::NotFound(_))),
                "{:?}",
                e.map(|f| f.records.len())
            );
        }
    }
}
