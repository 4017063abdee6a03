//! Readers never skip silently: cursors belong to one incarnation of a
//! stream, a cursor past a partition's end is refused, and `at:` cursors
//! start at a time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Server;
use reqwest::Method;
use serde_json::{json, Value};

async fn publish(raw: &common::Raw, stream: &str, values: &[&str]) {
    let events: Vec<Value> = values.iter().map(|v| json!({"value": v})).collect();
    let a = raw
        .json(
            Method::POST,
            &format!("/v1/streams/{stream}/events"),
            json!({ "events": events }),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
}

/// Allocates a reader from `cursor`; returns the error code or the events
/// of its first read, then disposes it.
async fn first_read(raw: &common::Raw, stream: &str, cursor: &str) -> Result<(Vec<Value>, String), String> {
    let a = raw
        .json(
            Method::POST,
            "/v1/sessions",
            json!({"stream": stream, "mode": "read", "cursor": cursor}),
        )
        .await;
    if a.status != 201 {
        return Err(format!("{} {}", a.code(), a.body["error"]["message"]));
    }
    let (id, secret) = (
        a.body["session"].as_str().unwrap(),
        a.body["secret"].as_str().unwrap(),
    );
    let r = raw
        .post_signed(&format!("/v1/sessions/{id}/read"), secret, br#"{"wait_ms":1000}"#)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let ack = format!("{{\"batch\":{}}}", r.body["batch"]);
    let cursor = if r.body["batch"] != 0 {
        let k = raw
            .post_signed(&format!("/v1/sessions/{id}/ack"), secret, ack.as_bytes())
            .await;
        k.body["cursor"].as_str().unwrap().to_string()
    } else {
        r.body["cursor"].as_str().unwrap().to_string()
    };
    Ok((r.body["events"].as_array().unwrap().clone(), cursor))
}

fn values(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["value"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn an_old_cursor_does_not_fit_a_new_stream_of_the_same_name() {
    let d = tempfile::tempdir().unwrap();
    let s = Server::start(&d.path().join("data"), &[]);
    let raw = s.raw();
    let create = || raw.json(Method::POST, "/v1/streams", json!({"name": "re"}));
    assert_eq!(create().await.status, 201);
    publish(&raw, "re", &["a", "b", "c"]).await;
    let (evs, cursor) = first_read(&raw, "re", "earliest").await.unwrap();
    assert_eq!(values(&evs), ["a", "b", "c"]);
    // delete, create again, publish more than before
    let del = raw
        .send(Method::DELETE, "/v1/streams/re", None, &[], Some(common::TOKEN))
        .await;
    assert_eq!(del.status, 204);
    assert_eq!(create().await.status, 201);
    publish(&raw, "re", &["n1", "n2", "n3", "n4", "n5"]).await;
    let e = first_read(&raw, "re", &cursor).await.unwrap_err();
    assert!(e.starts_with("bad_cursor") && e.contains("deleted"), "{e}");
    // the new stream reads from its start
    let (evs, _) = first_read(&raw, "re", "earliest").await.unwrap();
    assert_eq!(values(&evs), ["n1", "n2", "n3", "n4", "n5"]);
}

#[tokio::test]
async fn a_cursor_past_the_end_is_refused() {
    // a store that lost its tail: the data directory as it was before the
    // last events, with a cursor minted after them
    if common::kafka_store().is_some() {
        // Kafka's data is not in the data directory
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let snapshot = d.path().join("snapshot");
    let mut s = Server::start(&data, &[]);
    let raw = s.raw();
    assert_eq!(
        raw.json(Method::POST, "/v1/streams", json!({"name": "t"}))
            .await
            .status,
        201
    );
    publish(&raw, "t", &["1", "2"]).await;
    assert!(s.terminate().success());
    common::copy_dir(&data, &snapshot);
    s.restart();
    let raw = s.raw();
    publish(&raw, "t", &["3", "4"]).await;
    let (_, cursor) = first_read(&raw, "t", "earliest").await.unwrap();
    assert!(s.terminate().success());
    std::fs::remove_dir_all(&data).unwrap();
    common::copy_dir(&snapshot, &data);
    s.restart();
    let raw = s.raw();
    let e = first_read(&raw, "t", &cursor).await.unwrap_err();
    assert!(e.starts_with("bad_cursor") && e.contains("past the end"), "{e}");
}

#[tokio::test]
async fn at_cursors_start_at_a_time() {
    let d = tempfile::tempdir().unwrap();
    let s = Server::start(&d.path().join("data"), &[]);
    let raw = s.raw();
    assert_eq!(
        raw.json(
            Method::POST,
            "/v1/streams",
            json!({"name": "at", "partitions": 2})
        )
        .await
        .status,
        201
    );
    publish(&raw, "at", &["early-1", "early-2"]).await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let mid = common::now_ms();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    publish(&raw, "at", &["late-1", "late-2", "late-3"]).await;
    let at = |ms: u64, offset: &str| {
        // the time with an offset from UTC, as RFC 3339 allows
        let t = switchboard_proto::time::rfc3339_ms(ms as i64 + 3_600_000);
        format!("at:{}{offset}", t.trim_end_matches('Z'))
    };
    let (evs, _) = first_read(&raw, "at", &at(mid, "+01:00")).await.unwrap();
    let mut got = values(&evs);
    got.sort_unstable();
    assert_eq!(got, ["late-1", "late-2", "late-3"]);
    // before everything: all; after everything: nothing yet
    let (evs, _) = first_read(&raw, "at", "at:2000-01-01T00:00:00Z").await.unwrap();
    assert_eq!(evs.len(), 5);
    let (evs, _) = first_read(&raw, "at", "at:2999-01-01T00:00:00Z").await.unwrap();
    assert!(evs.is_empty());
    for bad in [
        "at:",
        "at:yesterday",
        "at:2026-13-01T00:00:00Z",
        "at:2026-01-01 00:00:00Z",
    ] {
        let e = first_read(&raw, "at", bad).await.unwrap_err();
        assert!(e.starts_with("bad_request"), "{bad}: {e}");
    }
}

fn gauge(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Readers that were allocated and never read from hold no read-ahead: a
/// session fills its buffer once it is read from.
#[tokio::test]
async fn unread_readers_hold_no_read_ahead() {
    let d = tempfile::tempdir().unwrap();
    let s = Server::start(&d.path().join("data"), &[]);
    let raw = s.raw();
    assert_eq!(
        raw.json(Method::POST, "/v1/streams", json!({"name": "m"}))
            .await
            .status,
        201
    );
    let big = "x".repeat(10_000);
    for _ in 0..10 {
        let events: Vec<&str> = (0..50).map(|_| big.as_str()).collect();
        publish(&raw, "m", &events).await;
    }
    let mut sessions = Vec::new();
    for _ in 0..20 {
        let a = raw
            .json(
                Method::POST,
                "/v1/sessions",
                json!({"stream": "m", "mode": "read", "cursor": "earliest"}),
            )
            .await;
        assert_eq!(a.status, 201);
        sessions.push((
            a.body["session"].as_str().unwrap().to_string(),
            a.body["secret"].as_str().unwrap().to_string(),
        ));
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let m = raw.get("/metrics").await;
    let held = gauge(&String::from_utf8_lossy(&m.bytes), "switchboard_readahead_bytes");
    assert_eq!(held, 0.0, "idle readers fetched ahead");
    // one reader reads: only it fills its buffer
    let (id, secret) = &sessions[0];
    let r = raw
        .post_signed(&format!("/v1/sessions/{id}/read"), secret, br#"{"max_events":1}"#)
        .await;
    assert_eq!(r.body["events"].as_array().unwrap().len(), 1);
    let grown = common::eventually(std::time::Duration::from_secs(5), || async {
        let m = raw.get("/metrics").await;
        gauge(&String::from_utf8_lossy(&m.bytes), "switchboard_readahead_bytes") > 0.0
    })
    .await;
    assert!(grown);
    let m = raw.get("/metrics").await;
    let held = gauge(&String::from_utf8_lossy(&m.bytes), "switchboard_readahead_bytes");
    assert!(held <= 5.0 * 1024.0 * 1024.0, "{held}");
}
