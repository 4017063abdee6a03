//! Failure and recovery end to end: readers resumed from cursors, the
//! server SIGKILLed during durable commits, producers and server killed
//! together. Real binary, real HTTP, the Rust client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use common::{create_stream as create, read_all, Server};
use rand::Rng;
use std::sync::Mutex;
use switchboard_client::wire::Event;
use switchboard_client::{Reader, ReaderOptions, Writer, WriterOptions};

fn values(events: Vec<switchboard_client::wire::ReadEvent>) -> Vec<String> {
    events
        .into_iter()
        .filter_map(|e| e.value.map(|v| v.get().to_string()))
        .collect()
}

#[tokio::test]
async fn reader_resumed_from_its_cursor_sees_every_later_event_once() {
    let d = tempfile::tempdir().unwrap();
    let s = Server::start(&d.path().join("data"), &[]);
    let c = s.client();
    create(&c, "feed", 4).await;
    let events: Vec<Event> = (0..3000)
        .map(|i| Event::json(&i).unwrap().with_key(format!("k{}", i % 97)))
        .collect();
    for chunk in events.chunks(500) {
        c.publish("feed", chunk, None).await.unwrap();
    }
    let opts = || ReaderOptions {
        wait_ms: 0,
        max_events: Some(137),
        ..ReaderOptions::default()
    };
    let mut seen: Vec<i64> = Vec::new();
    let mut r = Reader::open(c.clone(), "feed", "earliest", opts()).await.unwrap();
    for _ in 0..7 {
        let b = r.next().await.unwrap();
        seen.extend(
            b.events
                .iter()
                .map(|e| e.value.as_ref().unwrap().get().parse::<i64>().unwrap()),
        );
        r.ack().await.unwrap();
    }
    let saved = r.cursor().to_string();
    // one more batch read but never acked, then the reader "dies" without disposing
    let lost = r.next().await.unwrap();
    assert!(!lost.events.is_empty());
    drop(r);

    let mut r = Reader::open(c.clone(), "feed", &saved, opts()).await.unwrap();
    loop {
        let b = r.next().await.unwrap();
        if b.events.is_empty() {
            break;
        }
        seen.extend(
            b.events
                .iter()
                .map(|e| e.value.as_ref().unwrap().get().parse::<i64>().unwrap()),
        );
        r.ack().await.unwrap();
    }
    let mut sorted = seen.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..3000).collect::<Vec<_>>(), "every event exactly once");
    // per key, the order of publishing holds
    let mut last: HashMap<i64, i64> = HashMap::new();
    for v in seen {
        let prev = last.insert(v % 97, v);
        assert!(prev.is_none_or(|p| p < v));
    }
}

#[tokio::test]
async fn sigkill_during_durable_commits_loses_nothing_acknowledged() {
    sigkill_during_durable_commits(&[]).await;
}

/// The same under `fsync = interval`: a commit answers `durable` only after
/// the sync that covers it. (A kill keeps the page cache: the store tests
/// cut segments back to what was synced, see store/tests/power_loss.rs.)
#[tokio::test]
async fn sigkill_during_durable_commits_under_fsync_interval_loses_nothing_acknowledged() {
    sigkill_during_durable_commits(&["--fsync", "interval:100"]).await;
}

async fn sigkill_during_durable_commits(flags: &[&str]) {
    let d = tempfile::tempdir().unwrap();
    let mut s = Server::start(&d.path().join("data"), flags);
    let c = s.client();
    create(&c, "acked", 3).await;
    c.publish("acked", &[Event::json("before").unwrap()], None)
        .await
        .unwrap();
    // a cursor minted before the crash
    let mut r = Reader::open(
        c.clone(),
        "acked",
        "earliest",
        ReaderOptions {
            wait_ms: 0,
            ..ReaderOptions::default()
        },
    )
    .await
    .unwrap();
    r.next().await.unwrap();
    let old_cursor = r.ack().await.unwrap().to_string();

    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut tasks = Vec::new();
    for w in 0..4 {
        let c = c.clone();
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            let a = c
                .allocate(&switchboard_client::wire::Allocate {
                    stream: "acked".into(),
                    mode: switchboard_client::wire::Mode::Write,
                    cursor: None,
                    partitions: None,
                    producer: None,
                })
                .await
                .unwrap();
            let session = switchboard_client::Session::new(&a);
            for b in 1u64.. {
                let events: Vec<Event> = (0..20)
                    .map(|i| {
                        Event::json(&format!("w{w}-b{b}-{i}"))
                            .unwrap()
                            .with_key(format!("{i}"))
                    })
                    .collect();
                let json = switchboard_client::encode_events(&events).unwrap();
                if c.write(&session, switchboard_client::write_body(b, &json))
                    .await
                    .is_err()
                {
                    return;
                }
                match c.commit(&session, b, true).await {
                    Ok(a) => {
                        assert_eq!(a.status, switchboard_client::wire::BlockStatus::Durable);
                        let mut g = acked.lock().unwrap();
                        for i in 0..20 {
                            g.insert(format!("\"w{w}-b{b}-{i}\""));
                        }
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(rand::thread_rng().gen_range(400..900))).await;
    s.kill();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 100, "the writers got going: {}", acked.len());
    s.restart();
    let c = s.client();
    let stored: HashSet<String> = values(read_all(&c, "acked").await).into_iter().collect();
    let missing: Vec<_> = acked.difference(&stored).take(5).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    // the cursor minted before the crash still works, and starts after "before"
    let mut r = Reader::open(
        c.clone(),
        "acked",
        &old_cursor,
        ReaderOptions {
            wait_ms: 0,
            max_events: Some(10_000),
            ..ReaderOptions::default()
        },
    )
    .await
    .unwrap();
    let b = r.next().await.unwrap();
    assert!(b
        .events
        .iter()
        .all(|e| e.value.as_ref().unwrap().get() != "\"before\""));
}

/// Blocks of a deterministic source: block `b` of producer `p` holds the
/// same events every time it is generated.
fn block_events(p: usize, b: u64) -> Vec<Event> {
    (0..25)
        .map(|i| {
            Event::json(&format!("p{p}-b{b}-{i}"))
                .unwrap()
                .with_key(format!("{}", (b as usize * 7 + i) % 13))
        })
        .collect()
}

#[tokio::test]
async fn producers_and_server_killed_together_store_every_event_once() {
    let d = tempfile::tempdir().unwrap();
    let mut s = Server::start(&d.path().join("data"), &[]);
    create(&s.client(), "exact", 4).await;
    const PRODUCERS: usize = 3;
    const BLOCKS: u64 = 60;
    let mut rng = rand::thread_rng();
    let mut rounds = 0;
    loop {
        rounds += 1;
        let c = s.client();
        let mut tasks = Vec::new();
        for p in 0..PRODUCERS {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                let opts = WriterOptions {
                    producer: Some(format!("producer-{p}")),
                    window: 4,
                    ..WriterOptions::default()
                };
                let mut w = Writer::open(c, "exact", opts).await?;
                // a restarted producer continues after what the server holds
                while w.next_block() <= BLOCKS {
                    let b = w.next_block();
                    w.send(&block_events(p, b)).await?;
                }
                w.close().await
            }));
        }
        let done = if rounds <= 4 {
            // kill the server and every producer at a random moment
            tokio::time::sleep(Duration::from_millis(rng.gen_range(150..600))).await;
            s.kill();
            for t in &tasks {
                t.abort();
            }
            for t in tasks {
                let _ = t.await;
            }
            s.restart();
            false
        } else {
            for t in tasks {
                t.await.unwrap().unwrap();
            }
            true
        };
        if done {
            break;
        }
    }
    let stored = values(read_all(&s.client(), "exact").await);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for v in stored {
        *counts.entry(v).or_default() += 1;
    }
    let dups: Vec<_> = counts.iter().filter(|(_, &n)| n > 1).take(5).collect();
    assert!(dups.is_empty(), "stored twice: {dups:?}");
    for p in 0..PRODUCERS {
        for b in 1..=BLOCKS {
            for e in block_events(p, b) {
                let v = e.value.unwrap().get().to_string();
                assert!(counts.contains_key(&v), "missing {v}");
            }
        }
    }
    assert_eq!(counts.len(), PRODUCERS * BLOCKS as usize * 25);
    // last_block is exact
    let a = s
        .client()
        .allocate(&switchboard_client::wire::Allocate {
            stream: "exact".into(),
            mode: switchboard_client::wire::Mode::Write,
            cursor: None,
            partitions: None,
            producer: Some("producer-0".into()),
        })
        .await
        .unwrap();
    assert_eq!(a.last_block, Some(BLOCKS));
}
