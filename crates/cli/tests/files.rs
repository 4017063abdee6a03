//! Open files: a server started with the usual low soft limit on open
//! files (1024, hard 4096) serves a thousand partitions whose data spans
//! thousands of segment files, across a restart: it raises its soft limit,
//! keeps one file per partition open for good, and opens sealed segments
//! through a bounded cache.
#![allow(clippy::unwrap_used)]

mod common;

use common::Server;
use switchboard_client::wire::{Allocate, Mode, Read};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_file_limit_serves_a_thousand_partitions() {
    if common::memory_store() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let flags = [
        "--segment-bytes",
        "4096",
        "--fsync",
        "never",
        "--max-connections",
        "256",
        "--max-open-segments",
        "256",
    ];
    let mut s = Server::start_with_file_limit(&d.path().join("data"), &flags, (1024, 4096));
    let c = s.client();
    common::create_stream(&c, "wide", 1000).await;
    let value = "v".repeat(1000);
    let mut total = 0u64;
    for round in 0..5 {
        let events: Vec<String> = (0..5000)
            .map(|i| format!(r#"{{"key":"k{round}-{i}","value":"{value}"}}"#))
            .collect();
        let body = format!(r#"{{"events":[{}]}}"#, events.join(","));
        c.publish_raw("wide", bytes::Bytes::from(body), None)
            .await
            .unwrap();
        total += 5000;
    }
    let segments = walk_count(&d.path().join("data"), "log");
    assert!(
        segments > 4096,
        "the data spans more segment files than the hard limit: {segments}"
    );
    s.restart();
    let c = s.client();
    let a = c
        .allocate(&Allocate {
            stream: "wide".into(),
            mode: Mode::Read,
            cursor: Some("earliest".into()),
            partitions: None,
            producer: None,
        })
        .await
        .unwrap();
    let session = switchboard_client::Session::new(&a);
    let mut read = 0u64;
    while read < total {
        let b = c
            .read(
                &session,
                &Read {
                    max_events: Some(10_000),
                    max_bytes: Some(16 << 20),
                    wait_ms: Some(1000),
                },
            )
            .await
            .unwrap();
        assert!(!b.events.is_empty(), "read {read} of {total}");
        read += b.events.len() as u64;
        c.ack(&session, b.batch).await.unwrap();
    }
    assert_eq!(read, total);
    // and it still takes writes and creates streams
    common::create_stream(&c, "more", 8).await;
    c.publish_raw(
        "more",
        bytes::Bytes::from_static(br#"{"events":[{"value":1}]}"#),
        None,
    )
    .await
    .unwrap();
}

fn walk_count(dir: &std::path::Path, ext: &str) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            n += walk_count(&p, ext);
        } else if p.extension().is_some_and(|x| x == ext) {
            n += 1;
        }
    }
    n
}
