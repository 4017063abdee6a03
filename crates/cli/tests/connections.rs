//! Hostile clients: a request head sent slowly, a connection opened and
//! left silent, a body that never arrives, and a flood of connections past
//! the cap. Each is ended on time, and other clients are served meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Waits for the server to close `c` (EOF or an error), returning how long
/// that took and what it sent first.
async fn closed_within(c: &mut TcpStream, limit: Duration) -> (Duration, String) {
    let t = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(t.elapsed()), c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (t.elapsed(), String::from_utf8_lossy(&got).into_owned()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "still open after {limit:?}; got {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
}

#[tokio::test]
async fn slow_and_silent_clients_are_closed_while_others_are_served() {
    let d = tempfile::tempdir().unwrap();
    let s = Server::start(
        &d.path().join("data"),
        &["--header-timeout-ms", "600", "--body-timeout-ms", "1000"],
    );
    let c = s.client();
    // a crowd of slow clients: half say nothing, half send half a request line
    let mut slow = Vec::new();
    for i in 0..40 {
        let mut t = TcpStream::connect(&s.addr).await.unwrap();
        if i % 2 == 0 {
            t.write_all(b"GET /v1/stre").await.unwrap();
        }
        slow.push(t);
    }
    // served meanwhile
    assert!(c.list_streams().await.is_ok());
    for t in &mut slow {
        let (took, _) = closed_within(t, Duration::from_secs(5)).await;
        assert!(took < Duration::from_secs(3), "{took:?}");
    }
    // a head sent a byte at a time is cut at the header timeout
    let mut t = TcpStream::connect(&s.addr).await.unwrap();
    let started = Instant::now();
    let mut cut = false;
    for b in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
        if t.write_all(&[*b]).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !cut {
        closed_within(&mut t, Duration::from_secs(5)).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // a body that never comes in full is answered with an error in time
    let mut t = TcpStream::connect(&s.addr).await.unwrap();
    let head = format!(
        "POST /v1/streams HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":",
        common::TOKEN
    );
    t.write_all(head.as_bytes()).await.unwrap();
    let (took, answer) = closed_within(&mut t, Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(answer.is_empty() || answer.contains("did not arrive"), "{answer}");
    assert!(c.list_streams().await.is_ok());
}

#[tokio::test]
async fn connections_past_the_cap_are_closed_at_once() {
    let d = tempfile::tempdir().unwrap();
    let s = Server::start(
        &d.path().join("data"),
        &["--max-connections", "8", "--header-timeout-ms", "800"],
    );
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(TcpStream::connect(&s.addr).await.unwrap());
    }
    // give the server a moment to take them all
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(&s.addr).await.unwrap();
    let (took, _) = closed_within(&mut extra, Duration::from_secs(2)).await;
    assert!(took < Duration::from_millis(500), "{took:?}");
    // the silent ones time out, and their places serve clients again
    for t in &mut held {
        closed_within(t, Duration::from_secs(5)).await;
    }
    assert!(s.client().list_streams().await.is_ok());
    let m = s.raw().get("/metrics").await;
    let text = String::from_utf8_lossy(&m.bytes);
    assert!(text.contains("switchboard_connections_refused_total"), "{text}");
    assert!(text.contains("switchboard_connections_open"));
    assert!(text.contains("switchboard_connections_timed_out_total"));
}

/// Slow large bodies claim the node's body budget as they are announced:
/// past it, another request answers `backpressure` at once (JSON, with
/// `Retry-After`, status 429) instead of taking more memory, and is served again once
/// the budget is given back.
#[tokio::test]
async fn slow_large_bodies_cannot_take_the_memory() {
    let d = tempfile::tempdir().unwrap();
    let s = Server::start(&d.path().join("data"), &["--body-buffer-bytes", "16777216"]);
    let head = |len: usize| {
        format!(
            "POST /v1/streams HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n",
            common::TOKEN
        )
    };
    let mut slow = TcpStream::connect(&s.addr).await.unwrap();
    slow.write_all(head(16 << 20).as_bytes()).await.unwrap();
    slow.write_all(&[b' '; 1000]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut other = TcpStream::connect(&s.addr).await.unwrap();
    other.write_all(head(20).as_bytes()).await.unwrap();
    other.write_all(br#"{"name":"s"}        "#).await.unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    while !got.ends_with(b"}}") {
        let n = tokio::time::timeout(Duration::from_secs(2), other.read(&mut buf))
            .await
            .expect("answered at once")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&got).to_string();
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer:?}");
    assert!(answer.contains("\"backpressure\""), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("retry-after"), "{answer}");
    drop(slow);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(s.client().list_streams().await.is_ok());
    common::create_stream(&s.client(), "after", 1).await;
}
