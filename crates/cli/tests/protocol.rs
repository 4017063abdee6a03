//! docs/PROTOCOL.md end to end: the real binary over real HTTP. Every error
//! code the embedded service can produce is provoked, and each failed call
//! is shown to change nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Server, TOKEN};
use reqwest::Method;
use serde_json::{json, Value};

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// A stream's end offsets (unchanged: nothing was written).
async fn ends(raw: &common::Raw, stream: &str) -> Value {
    raw.get(&format!("/v1/streams/{stream}")).await.body["end_offsets"].clone()
}

/// How many events each partition of a stream holds: its end offsets on
/// the stores whose offsets count events; on Kafka (whose transaction
/// markers take offsets too) the events are counted by reading them.
async fn counts(raw: &common::Raw, stream: &str) -> Value {
    let d = raw.get(&format!("/v1/streams/{stream}")).await.body;
    if common::kafka_store().is_none() {
        return d["end_offsets"].clone();
    }
    let Some(n) = d["partitions"].as_u64() else {
        return Value::Null;
    };
    let mut counts = vec![0u64; n as usize];
    for e in common::read_everything(raw, stream).await {
        counts[e.partition as usize] += 1;
    }
    json!(counts)
}

#[tokio::test]
async fn stream_admin_and_publish() {
    let d = dir();
    let s = Server::start(&d.path().join("data"), &[]);
    let raw = s.raw();
    let a = raw
        .json(
            Method::POST,
            "/v1/streams",
            json!({"name": "orders", "partitions": 4}),
        )
        .await;
    assert_eq!(a.status, 201);
    assert_eq!(
        a.body,
        json!({"name": "orders", "partitions": 4, "retention_ms": null, "retention_bytes": null, "encrypt_keys": true})
    );
    // keys in the clear are a setting of the stream: another value conflicts
    let a = raw
        .json(
            Method::POST,
            "/v1/streams",
            json!({"name": "orders", "partitions": 4, "encrypt_keys": false}),
        )
        .await;
    assert_eq!((a.status, a.code()), (409, "conflict"));
    let a = raw
        .json(
            Method::POST,
            "/v1/streams",
            json!({"name": "clear-keys", "encrypt_keys": false}),
        )
        .await;
    assert_eq!((a.status, a.body["encrypt_keys"].as_bool()), (201, Some(false)));
    let a = raw
        .send(
            Method::DELETE,
            "/v1/streams/clear-keys",
            None,
            &[],
            Some(common::TOKEN),
        )
        .await;
    assert_eq!(a.status, 204);
    let a = raw
        .json(
            Method::POST,
            "/v1/streams",
            json!({"name": "orders", "partitions": 4}),
        )
        .await;
    assert_eq!(a.status, 200);
    let a = raw
        .json(
            Method::POST,
            "/v1/streams",
            json!({"name": "orders", "partitions": 2}),
        )
        .await;
    assert_eq!((a.status, a.code()), (409, "conflict"));
    assert_eq!(a.body["error"]["retryable"], false);
    assert_eq!(raw.get("/v1/streams/orders").await.body["partitions"], 4);
    for bad in [
        json!({"name": "bad name"}),
        json!({"name": "__internal"}),
        json!({"name": ""}),
        json!({"name": "x", "partitions": 0}),
        json!({"name": "x", "partitions": 1025}),
        json!({"name": "x", "partitions": -1}),
        json!({"name": "x", "partitions": 1.5}),
        json!({"name": "x", "retention_ms": 0}),
        json!({"name": "x", "colour": "blue"}),
        json!({"name": "x", "encrypt_keys": "no"}),
        json!({"partitions": 1}),
    ] {
        let a = raw.json(Method::POST, "/v1/streams", bad.clone()).await;
        assert_eq!((a.status, a.code()), (400, "bad_request"), "{bad}");
    }
    let a = raw.post_bytes("/v1/streams", b"{not json").await;
    assert_eq!((a.status, a.code()), (400, "bad_request"));
    let list = raw.get("/v1/streams").await.body;
    assert_eq!(
        list["streams"].as_array().unwrap().len(),
        1,
        "failed creates left nothing: {list}"
    );

    // keyed events land where Kafka's partitioner puts them
    let events = json!({"events": [
        {"key": "user-1", "value": {"n": 1}},
        {"key": "user-2", "value": [1, 2, 3], "headers": {"h": "v"}},
        {"value_b64": "AAEC"},
    ]});
    let a = raw
        .json(Method::POST, "/v1/streams/orders/events", events.clone())
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let offsets = a.body["offsets"].as_array().unwrap().clone();
    assert_eq!(offsets.len(), 3);
    for (i, key) in ["user-1", "user-2"].iter().enumerate() {
        let p = switchboard_proto::partition::partition_for_key(key.as_bytes(), 4);
        assert_eq!(offsets[i]["partition"], p);
    }
    // idempotency key: same answer, nothing written twice
    let with_key = |body: &Value, key: &str| {
        let body = serde_json::to_vec(body).unwrap();
        let key = key.to_string();
        let raw = &raw;
        async move {
            raw.send(
                Method::POST,
                "/v1/streams/orders/events",
                Some(body),
                &[("idempotency-key", key)],
                Some(TOKEN),
            )
            .await
        }
    };
    let first = with_key(&events, "order-42").await;
    assert_eq!(first.status, 200);
    let before = ends(&raw, "orders").await;
    let again = with_key(&events, "order-42").await;
    assert_eq!(again.status, 200);
    assert_eq!(again.bytes, first.bytes);
    assert_eq!(ends(&raw, "orders").await, before);
    let other = with_key(&json!({"events": [{"value": 1}]}), "order-42").await;
    assert_eq!((other.status, other.code()), (409, "conflict"));
    assert_eq!(ends(&raw, "orders").await, before);

    for bad in [
        json!({"events": []}),
        json!({"events": [{"key": "k"}]}),
        json!({"events": [{"value": 1, "value_b64": "AA=="}]}),
        json!({"events": [{"value_b64": "%%%"}]}),
        json!({"events": [{"value": 1, "extra": true}]}),
        json!({"events": [{"value": 1}], "more": 1}),
    ] {
        let a = raw
            .json(Method::POST, "/v1/streams/orders/events", bad.clone())
            .await;
        assert_eq!((a.status, a.code()), (400, "bad_request"), "{bad}");
    }
    assert_eq!(
        ends(&raw, "orders").await,
        before,
        "failed publishes wrote nothing"
    );
    let a = raw
        .json(
            Method::POST,
            "/v1/streams/nope/events",
            json!({"events": [{"value": 1}]}),
        )
        .await;
    assert_eq!((a.status, a.code()), (404, "stream_not_found"));

    // auth
    let a = raw.send(Method::GET, "/v1/streams", None, &[], None).await;
    assert_eq!((a.status, a.code()), (401, "unauthorized"));
    assert_eq!(a.headers["www-authenticate"], "Bearer");
    let a = raw
        .send(
            Method::GET,
            "/v1/streams",
            None,
            &[],
            Some("wrong-token-123456789"),
        )
        .await;
    assert_eq!((a.status, a.code()), (401, "unauthorized"));
    let a = raw
        .send(
            Method::POST,
            "/v1/streams/orders/events",
            Some(serde_json::to_vec(&events).unwrap()),
            &[],
            None,
        )
        .await;
    assert_eq!(a.status, 401);
    assert_eq!(ends(&raw, "orders").await, before);

    // describe, delete
    let d = raw.get("/v1/streams/orders").await;
    assert_eq!(d.body["start_offsets"], json!([0, 0, 0, 0]));
    let total: u64 = counts(&raw, "orders")
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total, 6);
    assert_eq!(
        raw.get("/v1/streams/__idempotency").await.code(),
        "stream_not_found"
    );
    let a = raw
        .send(Method::DELETE, "/v1/streams/orders", None, &[], Some(TOKEN))
        .await;
    assert_eq!(a.status, 204);
    assert_eq!(raw.get("/v1/streams/orders").await.code(), "stream_not_found");
    let a = raw
        .send(Method::DELETE, "/v1/streams/orders", None, &[], Some(TOKEN))
        .await;
    assert_eq!((a.status, a.code()), (404, "stream_not_found"));
}

async fn setup_stream(raw: &common::Raw, name: &str, partitions: u32, events: usize) {
    let a = raw
        .json(
            Method::POST,
            "/v1/streams",
            json!({"name": name, "partitions": partitions}),
        )
        .await;
    assert_eq!(a.status, 201);
    if events > 0 {
        let evs: Vec<Value> = (0..events)
            .map(|i| json!({"key": format!("k{i}"), "value": i}))
            .collect();
        let a = raw
            .json(
                Method::POST,
                &format!("/v1/streams/{name}/events"),
                json!({"events": evs}),
            )
            .await;
        assert_eq!(a.status, 200);
    }
}

async fn allocate(raw: &common::Raw, body: Value) -> (String, String, Value) {
    let a = raw.json(Method::POST, "/v1/sessions", body).await;
    assert_eq!(a.status, 201, "{}", a.body);
    (
        a.body["session"].as_str().unwrap().to_string(),
        a.body["secret"].as_str().unwrap().to_string(),
        a.body,
    )
}

#[tokio::test]
async fn reader_protocol() {
    let d = dir();
    let s = Server::start(&d.path().join("data"), &[]);
    let raw = s.raw();
    setup_stream(&raw, "r", 3, 10).await;
    setup_stream(&raw, "other", 1, 0).await;
    let (id, secret, alloc) =
        allocate(&raw, json!({"stream": "r", "mode": "read", "cursor": "earliest"})).await;
    assert_eq!(alloc["mode"], "read");
    assert_eq!(alloc["lease_ms"], 30000);
    let start_cursor = alloc["cursor"].as_str().unwrap().to_string();
    let path = |op: &str| format!("/v1/sessions/{id}{op}");
    let read = |body: Value| {
        let p = path("/read");
        let secret = secret.clone();
        let raw = &raw;
        async move {
            raw.signed(
                Method::POST,
                &p,
                &secret,
                Some(serde_json::to_vec(&body).unwrap()),
            )
            .await
        }
    };
    let r1 = read(json!({"max_events": 4})).await;
    assert_eq!(r1.status, 200, "{}", r1.body);
    assert_eq!(r1.body["batch"], 1);
    assert_eq!(r1.body["events"].as_array().unwrap().len(), 4);
    let ev = &r1.body["events"][0];
    assert!(
        ev["partition"].is_u64() && ev["offset"].is_u64() && ev["timestamp"].as_str().unwrap().ends_with('Z')
    );
    // a retried read returns the pending batch byte for byte, whatever its limits
    let r1b = read(json!({"max_events": 1})).await;
    assert_eq!(r1b.bytes, r1.bytes);

    // bad limits change nothing
    for bad in [
        json!({"max_events": 0}),
        json!({"max_events": 10001}),
        json!({"max_bytes": 0}),
        json!({"max_bytes": 16777217}),
        json!({"wait_ms": 30001}),
        json!({"wait_ms": -1}),
        json!({"max_events": 5, "colour": 1}),
    ] {
        let a = read(bad.clone()).await;
        assert_eq!((a.status, a.code()), (400, "bad_request"), "{bad}");
    }
    // bad signatures change nothing
    let body = serde_json::to_vec(&json!({"batch": 1})).unwrap();
    let a = raw
        .send(Method::POST, &path("/ack"), Some(body.clone()), &[], Some(TOKEN))
        .await;
    assert_eq!((a.status, a.code()), (401, "bad_signature"));
    let a = raw
        .signed(Method::POST, &path("/ack"), "not-the-secret", Some(body.clone()))
        .await;
    assert_eq!((a.status, a.code()), (401, "bad_signature"));
    let stale = switchboard_proto::signing::sign(secret.as_bytes(), 1_000, "POST", &path("/ack"), &body);
    let a = raw
        .send(
            Method::POST,
            &path("/ack"),
            Some(body.clone()),
            &[("x-switchboard-signature", stale)],
            Some(TOKEN),
        )
        .await;
    assert_eq!((a.status, a.code()), (401, "bad_signature"));
    // signed over another body
    let now = common::now_ms();
    let other =
        switchboard_proto::signing::sign(secret.as_bytes(), now, "POST", &path("/ack"), b"{\"batch\":2}");
    let a = raw
        .send(
            Method::POST,
            &path("/ack"),
            Some(body.clone()),
            &[("x-switchboard-signature", other)],
            Some(TOKEN),
        )
        .await;
    assert_eq!((a.status, a.code()), (401, "bad_signature"));
    let info = raw.signed(Method::GET, &path(""), &secret, None).await;
    assert_eq!(info.body["pending_batch"], 1, "{}", info.body);
    assert_eq!(info.body["cursor"], start_cursor.as_str());

    // ack: wrong batch is a conflict, the right one moves, a repeat answers the same
    let a = raw.post_signed(&path("/ack"), &secret, b"{\"batch\":2}").await;
    assert_eq!((a.status, a.code()), (409, "conflict"));
    assert_eq!(
        read(json!({})).await.bytes,
        r1.bytes,
        "still pending after the failed ack"
    );
    let ack = raw
        .signed(Method::POST, &path("/ack"), &secret, Some(body.clone()))
        .await;
    assert_eq!(ack.status, 200);
    assert_eq!(ack.body["batch"], 1);
    assert_eq!(ack.body["cursor"], r1.body["cursor"]);
    let ack2 = raw
        .signed(Method::POST, &path("/ack"), &secret, Some(body.clone()))
        .await;
    assert_eq!(ack2.bytes, ack.bytes);
    let r2 = read(json!({"max_events": 100})).await;
    assert_eq!(r2.body["batch"], 2);
    assert_eq!(r2.body["events"].as_array().unwrap().len(), 6);
    // batch 1 is still the last acked one: its ack answers the same
    let a = raw.post_signed(&path("/ack"), &secret, b"{\"batch\":1}").await;
    assert_eq!(a.bytes, ack.bytes);
    let a = raw.post_signed(&path("/ack"), &secret, b"{\"batch\":3}").await;
    assert_eq!((a.status, a.code()), (409, "conflict"));
    let a = raw.post_signed(&path("/ack"), &secret, b"{\"batch\":2}").await;
    assert_eq!(a.status, 200);
    // nothing left: an empty answer with the current cursor, no batch
    let e = read(json!({})).await;
    assert_eq!(e.body["batch"], 0);
    assert_eq!(e.body["events"], json!([]));
    assert_eq!(e.body["cursor"], a.body["cursor"]);
    // writes on a reader are a conflict
    let w = raw
        .post_signed(
            &path("/write"),
            &secret,
            b"{\"block\":1,\"events\":[{\"value\":1}]}",
        )
        .await;
    assert_eq!((w.status, w.code()), (409, "conflict"));

    // long poll: a read waits for events published meanwhile
    let started = Instant::now();
    let publisher = {
        let raw2 = s.raw();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            raw2.json(
                Method::POST,
                "/v1/streams/r/events",
                json!({"events": [{"value": "late"}]}),
            )
            .await
        })
    };
    let lp = read(json!({"wait_ms": 10000})).await;
    assert_eq!(lp.body["events"][0]["value"], "late", "{}", lp.body);
    assert!(started.elapsed() < Duration::from_secs(5));
    publisher.await.unwrap();

    // cursors: forged, altered, other stream
    for c in ["garbage", "AAAA", &start_cursor[..start_cursor.len() - 2]] {
        let a = raw
            .json(
                Method::POST,
                "/v1/sessions",
                json!({"stream": "r", "mode": "read", "cursor": c}),
            )
            .await;
        assert_eq!((a.status, a.code()), (400, "bad_cursor"), "{c}");
    }
    let mut altered = start_cursor.clone().into_bytes();
    let i = altered.len() / 2;
    altered[i] = if altered[i] == b'A' { b'B' } else { b'A' };
    let a = raw
        .json(
            Method::POST,
            "/v1/sessions",
            json!({"stream": "r", "mode": "read", "cursor": String::from_utf8(altered).unwrap()}),
        )
        .await;
    assert_eq!((a.status, a.code()), (400, "bad_cursor"));
    let a = raw
        .json(
            Method::POST,
            "/v1/sessions",
            json!({"stream": "other", "mode": "read", "cursor": start_cursor}),
        )
        .await;
    assert_eq!((a.status, a.code()), (400, "bad_cursor"));
    for bad in [
        json!({"stream": "r", "mode": "read", "partitions": [3]}),
        json!({"stream": "r", "mode": "read", "partitions": [0, 0]}),
        json!({"stream": "r", "mode": "read", "partitions": []}),
        json!({"stream": "r", "mode": "read", "producer": "p"}),
        json!({"stream": "r", "mode": "write", "cursor": "earliest"}),
        json!({"stream": "r", "mode": "sideways"}),
    ] {
        let a = raw.json(Method::POST, "/v1/sessions", bad.clone()).await;
        assert_eq!((a.status, a.code()), (400, "bad_request"), "{bad}");
    }
    let a = raw
        .json(
            Method::POST,
            "/v1/sessions",
            json!({"stream": "none", "mode": "read"}),
        )
        .await;
    assert_eq!((a.status, a.code()), (404, "stream_not_found"));

    // a reader on some partitions, from the start cursor
    let (_, _, part) = allocate(
        &raw,
        json!({"stream": "r", "mode": "read", "cursor": start_cursor, "partitions": [1]}),
    )
    .await;
    assert!(part["cursor"].is_string());

    // dispose, then everything is gone
    let disp = raw.signed(Method::DELETE, &path(""), &secret, None).await;
    assert_eq!(disp.status, 200);
    assert!(disp.body["cursor"].is_string());
    for (m, op) in [(Method::POST, "/read"), (Method::GET, ""), (Method::DELETE, "")] {
        let b = if m == Method::POST {
            Some(b"{}".to_vec())
        } else {
            None
        };
        let a = raw.signed(m, &path(op), &secret, b).await;
        assert_eq!((a.status, a.code()), (410, "session_gone"), "{op}");
    }
}

#[tokio::test]
async fn writer_protocol() {
    let d = dir();
    let s = Server::start(&d.path().join("data"), &[]);
    let raw = s.raw();
    setup_stream(&raw, "w", 2, 0).await;
    let (id, secret, _) = allocate(&raw, json!({"stream": "w", "mode": "write"})).await;
    let path = |op: &str| format!("/v1/sessions/{id}{op}");
    let call = |op: &str, body: Value| {
        let p = path(op);
        let secret = secret.clone();
        let raw = &raw;
        async move {
            raw.signed(
                Method::POST,
                &p,
                &secret,
                Some(serde_json::to_vec(&body).unwrap()),
            )
            .await
        }
    };
    let b1 =
        json!({"block": 1, "events": [{"key": "a", "value": 1}, {"key": "b", "value": 2}, {"value": 3}]});
    let w = call("/write", b1.clone()).await;
    assert_eq!(w.body, json!({"block": 1, "events": 3}));
    assert_eq!(
        call("/write", b1.clone()).await.bytes,
        w.bytes,
        "a retried write answers the same"
    );
    let a = call("/write", json!({"block": 1, "events": [{"value": 9}]})).await;
    assert_eq!((a.status, a.code()), (409, "conflict"));
    let a = call("/write", json!({"block": 3, "events": [{"value": 9}]})).await;
    assert_eq!((a.status, a.code()), (409, "conflict"));
    let a = call("/write", json!({"block": 0, "events": [{"value": 9}]})).await;
    assert_eq!((a.status, a.code()), (400, "bad_request"));
    let a = call("/commit", json!({"block": 2})).await;
    assert_eq!((a.status, a.code()), (409, "conflict"));
    let a = call("/read", json!({})).await;
    assert_eq!((a.status, a.code()), (409, "conflict"));
    assert_eq!(
        ends(&raw, "w").await,
        json!([0, 0]),
        "nothing published before commit"
    );
    let c = call("/commit", json!({"block": 1, "durable": true})).await;
    assert_eq!(c.status, 200, "{}", c.body);
    assert_eq!(c.body["status"], "durable");
    let ranges = c.body["offsets"].as_array().unwrap();
    let n: u64 = ranges
        .iter()
        .map(|r| r["last"].as_u64().unwrap() - r["first"].as_u64().unwrap() + 1)
        .sum();
    assert_eq!(n, 3);
    assert_eq!(
        call("/commit", json!({"block": 1, "durable": true})).await.bytes,
        c.bytes
    );
    assert_eq!(call("/commit", json!({"block": 1})).await.bytes, c.bytes);
    let sum = |v: Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(sum(counts(&raw, "w").await), 3);
    // the answer of a retried write after commit is the same too
    assert_eq!(call("/write", b1.clone()).await.bytes, w.bytes);
    assert_eq!(sum(counts(&raw, "w").await), 3, "retries published nothing twice");
    let info = raw.signed(Method::GET, &path(""), &secret, None).await;
    assert_eq!(info.body["durable_through_block"], 1);
    assert_eq!(info.body["blocks_in_flight"], 0);
    // scheduled commits become durable
    for b in 2..=5u64 {
        assert_eq!(
            call("/write", json!({"block": b, "events": [{"value": b}]}))
                .await
                .status,
            200
        );
        let c = call("/commit", json!({"block": b, "durable": false})).await;
        assert_eq!(c.status, 200);
        assert!(c.body["status"] == "scheduled" || c.body["status"] == "durable");
    }
    let disp = raw.signed(Method::DELETE, &path(""), &secret, None).await;
    assert_eq!(disp.body, json!({"durable_through_block": 5}));
    assert_eq!(sum(counts(&raw, "w").await), 7);

    // producers: block numbers belong to the producer
    let (pid, psecret, alloc) = allocate(
        &raw,
        json!({"stream": "w", "mode": "write", "producer": "prod-1"}),
    )
    .await;
    assert_eq!(alloc["last_block"], 0);
    let p = |op: &str| format!("/v1/sessions/{pid}{op}");
    let body =
        serde_json::to_vec(&json!({"block": 1, "events": [{"value": "p1"}, {"key": "z", "value": "p2"}]}))
            .unwrap();
    assert_eq!(
        raw.signed(Method::POST, &p("/write"), &psecret, Some(body))
            .await
            .status,
        200
    );
    let c = raw
        .post_signed(&p("/commit"), &psecret, b"{\"block\":1,\"durable\":true}")
        .await;
    assert_eq!(c.body["status"], "durable");
    let (pid2, psecret2, alloc) = allocate(
        &raw,
        json!({"stream": "w", "mode": "write", "producer": "prod-1"}),
    )
    .await;
    assert_eq!(alloc["last_block"], 1);
    // the old session of the producer is fenced
    let a = raw.signed(Method::GET, &p(""), &psecret, None).await;
    assert_eq!(a.code(), "session_gone");
    let p2 = |op: &str| format!("/v1/sessions/{pid2}{op}");
    let a = raw
        .post_signed(
            &p2("/write"),
            &psecret2,
            b"{\"block\":1,\"events\":[{\"value\":1}]}",
        )
        .await;
    assert_eq!((a.status, a.code()), (409, "conflict"));
    let a = raw
        .post_signed(
            &p2("/write"),
            &psecret2,
            b"{\"block\":2,\"events\":[{\"value\":1}]}",
        )
        .await;
    assert_eq!(a.status, 200);
    let info = raw.signed(Method::GET, &p2(""), &psecret2, None).await;
    assert_eq!(info.body["last_block"], 1);
    for bad in ["", "has space", &"x".repeat(129)] {
        let a = raw
            .json(
                Method::POST,
                "/v1/sessions",
                json!({"stream": "w", "mode": "write", "producer": bad}),
            )
            .await;
        assert_eq!((a.status, a.code()), (400, "bad_request"), "{bad:?}");
    }
}

#[tokio::test]
async fn leases_expire_and_heartbeats_renew() {
    let d = dir();
    let s = Server::start(&d.path().join("data"), &["--lease-ms", "1000"]);
    let raw = s.raw();
    setup_stream(&raw, "l", 1, 1).await;
    let (id, secret, alloc) = allocate(&raw, json!({"stream": "l", "mode": "read"})).await;
    assert_eq!(alloc["lease_ms"], 1000);
    let (id2, secret2, _) = allocate(&raw, json!({"stream": "l", "mode": "write"})).await;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let a = raw
            .signed(Method::GET, &format!("/v1/sessions/{id2}"), &secret2, None)
            .await;
        assert_eq!(a.status, 200, "heartbeats keep the writer alive");
    }
    let a = raw
        .signed(Method::GET, &format!("/v1/sessions/{id}"), &secret, None)
        .await;
    assert_eq!((a.status, a.code()), (410, "session_gone"));
    assert_eq!(a.body["error"]["retryable"], false);
    // a long poll longer than the lease does not end its session: the
    // lease runs from the end of a call
    let (id3, secret3, _) = allocate(&raw, json!({"stream": "l", "mode": "read"})).await;
    let body = br#"{"wait_ms":2500}"#.to_vec();
    let a = raw
        .signed(
            Method::POST,
            &format!("/v1/sessions/{id3}/read"),
            &secret3,
            Some(body),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = raw
        .signed(Method::GET, &format!("/v1/sessions/{id3}"), &secret3, None)
        .await;
    assert_eq!(a.status, 200, "the session outlived its lease inside a long poll");
}

#[tokio::test]
async fn backpressure_limits_and_compression() {
    let d = dir();
    let s = Server::start(&d.path().join("data"), &["--max-sessions", "1"]);
    let raw = s.raw();
    setup_stream(&raw, "c", 2, 0).await;
    let (id, secret, _) = allocate(&raw, json!({"stream": "c", "mode": "write"})).await;
    let a = raw
        .json(
            Method::POST,
            "/v1/sessions",
            json!({"stream": "c", "mode": "read"}),
        )
        .await;
    assert_eq!((a.status, a.code()), (429, "backpressure"));
    assert!(a.body["error"]["retry_after_ms"].as_u64().unwrap() > 0);
    assert!(a.headers.contains_key("retry-after"));
    assert_eq!(a.body["error"]["retryable"], true);

    // bodies over 16 MiB, sent as is or compressed
    let big = vec![b' '; 17 << 20];
    let status = oversized_post(&s.addr, "/v1/streams/c/events", 17 << 20).await;
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    let gz = gzip(&big);
    let a = post_gzip(&raw, "/v1/streams/c/events", gz).await;
    assert_eq!((a.status, a.code()), (413, "payload_too_large"));
    let a = raw
        .send(
            Method::POST,
            "/v1/streams/c/events",
            Some(b"xx".to_vec()),
            &[("content-encoding", "br".into())],
            Some(TOKEN),
        )
        .await;
    assert_eq!((a.status, a.code()), (400, "bad_request"));
    assert_eq!(ends(&raw, "c").await, json!([0, 0]));

    // gzip and zstd request bodies, signed as sent
    let events: Vec<Value> = (0..200)
        .map(|i| json!({"key": format!("k{i}"), "value": "x".repeat(100)}))
        .collect();
    let body = serde_json::to_vec(&json!({"block": 1, "events": events})).unwrap();
    let z = zstd::bulk::compress(&body, 3).unwrap();
    let path = format!("/v1/sessions/{id}/write");
    let now = common::now_ms();
    let sig = switchboard_proto::signing::sign(secret.as_bytes(), now, "POST", &path, &z);
    let a = raw
        .send(
            Method::POST,
            &path,
            Some(z),
            &[
                ("content-encoding", "zstd".into()),
                ("x-switchboard-signature", sig),
            ],
            Some(TOKEN),
        )
        .await;
    assert_eq!(a.body, json!({"block": 1, "events": 200}));
    let c = raw
        .post_signed(
            &format!("/v1/sessions/{id}/commit"),
            &secret,
            b"{\"block\":1,\"durable\":true}",
        )
        .await;
    assert_eq!(c.body["status"], "durable");
    let pubbody = serde_json::to_vec(&json!({"events": [{"value": "y".repeat(5000)}]})).unwrap();
    let gz = gzip(&pubbody);
    let a = post_gzip(&raw, "/v1/streams/c/events", gz).await;
    assert_eq!(a.status, 200, "{}", a.body);

    // compressed answers
    raw.signed(Method::DELETE, &format!("/v1/sessions/{id}"), &secret, None)
        .await;
    for enc in ["gzip", "zstd"] {
        let (rid, rsecret, _) =
            allocate(&raw, json!({"stream": "c", "mode": "read", "cursor": "earliest"})).await;
        let p = format!("/v1/sessions/{rid}/read");
        let now = common::now_ms();
        let sig = switchboard_proto::signing::sign(rsecret.as_bytes(), now, "POST", &p, b"{}");
        let a = raw
            .send(
                Method::POST,
                &p,
                Some(b"{}".to_vec()),
                &[("accept-encoding", enc.into()), ("x-switchboard-signature", sig)],
                Some(TOKEN),
            )
            .await;
        assert_eq!(a.status, 200);
        assert_eq!(a.headers["content-encoding"], enc);
        let plain = match enc {
            "gzip" => {
                use std::io::Read;
                let mut s = Vec::new();
                flate2::read::GzDecoder::new(&a.bytes[..])
                    .read_to_end(&mut s)
                    .unwrap();
                s
            }
            _ => zstd::decode_all(&a.bytes[..]).unwrap(),
        };
        let v: Value = serde_json::from_slice(&plain).unwrap();
        assert!(!v["events"].as_array().unwrap().is_empty());
        raw.signed(Method::DELETE, &format!("/v1/sessions/{rid}"), &rsecret, None)
            .await;
    }
}

fn gzip(b: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

async fn post_gzip(raw: &common::Raw, path: &str, body: Vec<u8>) -> common::Answer {
    raw.send(
        Method::POST,
        path,
        Some(body),
        &[("content-encoding", "gzip".into())],
        Some(TOKEN),
    )
    .await
}

/// Posts a body announced as `len` bytes but sends only the first MiB;
/// returns the status line.
async fn oversized_post(addr: &str, path: &str, len: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\ncontent-length: {len}\r\n\r\n"
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let _ = c.write_all(&vec![b' '; 1 << 20]).await;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn health_metrics_request_ids_and_openapi() {
    let d = dir();
    let s = Server::start(&d.path().join("data"), &[]);
    let raw = s.raw();
    assert_eq!(
        raw.send(Method::GET, "/healthz", None, &[], None).await.status,
        200
    );
    assert_eq!(
        raw.send(Method::GET, "/readyz", None, &[], None).await.status,
        200
    );
    setup_stream(&raw, "m", 1, 5).await;
    let a = raw
        .send(
            Method::GET,
            "/v1/streams",
            None,
            &[("x-request-id", "abc-123".into())],
            Some(TOKEN),
        )
        .await;
    assert_eq!(a.headers["x-request-id"], "abc-123");
    let b = raw.get("/v1/streams").await;
    assert_eq!(b.headers["x-request-id"].len(), 16);
    let m = raw.send(Method::GET, "/metrics", None, &[], None).await;
    let text = String::from_utf8(m.bytes.to_vec()).unwrap();
    for metric in [
        "switchboard_requests_total",
        "switchboard_request_duration_seconds_bucket",
        "switchboard_store_append_seconds",
        "switchboard_events_in_total",
        "switchboard_sessions_open",
        "switchboard_readahead_bytes",
        "switchboard_write_buffer_bytes",
        "switchboard_connections_open",
    ] {
        assert!(text.contains(metric), "{metric} missing:\n{text}");
    }
    if !common::memory_store() && common::kafka_store().is_none() {
        for metric in ["switchboard_log_append_seconds", "switchboard_log_fsync_seconds"] {
            assert!(text.contains(metric), "{metric} missing:\n{text}");
        }
    }
    assert!(text.contains("route=\"/v1/streams/{name}/events\""));

    // OpenAPI: every documented operation is routed, every route documented
    let doc = raw.get("/v1/openapi.json").await.body;
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, _) in item
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| *k != "parameters")
        {
            documented.push((method.clone(), path.clone()));
        }
    }
    let mut routed: Vec<(String, String)> = switchboard_api::openapi::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    documented.sort();
    routed.sort();
    assert_eq!(documented, routed);
    for (method, path) in &documented {
        let concrete = path.replace("{name}", "m").replace("{id}", "nosuchsession");
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let a = raw
            .send(m, &concrete, Some(b"{}".to_vec()), &[], Some(TOKEN))
            .await;
        assert!(
            !matches!(a.code(), "not_found" | "method_not_allowed"),
            "{method} {path} is documented but not routed"
        );
    }
    let a = raw.get("/v1/nothing").await;
    assert_eq!((a.status, a.code()), (404, "not_found"));
    let c = raw.get("/v1/cluster").await;
    assert_eq!(c.body["nodes"][0]["state"], "ready");
    // HTTP/2 (cleartext, prior knowledge) serves the same API
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = h2
        .get(format!("{}/v1/streams", s.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn graceful_shutdown_drains_and_keeps_scheduled_blocks() {
    let d = dir();
    let data = d.path().join("data");
    let mut s = Server::start(&data, &["--drain-delay-ms", "1500"]);
    let raw = s.raw();
    setup_stream(&raw, "g", 2, 0).await;
    let (id, secret, _) = allocate(&raw, json!({"stream": "g", "mode": "write"})).await;
    for b in 1..=20u64 {
        let evs: Vec<Value> = (0..50).map(|i| json!({"value": format!("{b}-{i}")})).collect();
        let body = serde_json::to_vec(&json!({"block": b, "events": evs})).unwrap();
        assert_eq!(
            raw.signed(
                Method::POST,
                &format!("/v1/sessions/{id}/write"),
                &secret,
                Some(body)
            )
            .await
            .status,
            200
        );
        let c = raw
            .signed(
                Method::POST,
                &format!("/v1/sessions/{id}/commit"),
                &secret,
                Some(format!("{{\"block\":{b}}}").into_bytes()),
            )
            .await;
        assert_eq!(c.status, 200, "{}", c.body);
    }
    let idem = |raw: &common::Raw| {
        let body = serde_json::to_vec(&json!({"events": [{"value": "once"}]})).unwrap();
        let raw = raw.clone_ref();
        async move {
            raw.send(
                Method::POST,
                "/v1/streams/g/events",
                Some(body),
                &[("idempotency-key", "restart-key".into())],
                Some(TOKEN),
            )
            .await
        }
    };
    let first = idem(&raw).await;
    assert_eq!(first.status, 200);
    s.send_signal(libc::SIGTERM);
    let not_ready = common::eventually(Duration::from_secs(5), || async {
        raw.send(Method::GET, "/readyz", None, &[], None).await.status == 503
    })
    .await;
    assert!(not_ready);
    let a = raw.get("/v1/streams").await;
    assert_eq!((a.status, a.code()), (503, "unavailable"));
    assert_eq!(a.body["error"]["retryable"], true);
    let st = s.terminate();
    assert!(st.success(), "exit status {st:?}");
    if common::memory_store() {
        // memory:// keeps nothing past the process
        return;
    }
    s.restart();
    let raw = s.raw();
    let e = counts(&raw, "g").await;
    let total: u64 = e.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(total, 1001, "every scheduled block is stored");
    // idempotency keys outlive the restart
    let again = idem(&raw).await;
    assert_eq!(again.bytes, first.bytes);
    assert_eq!(counts(&raw, "g").await, e);
}

#[tokio::test]
async fn scopes_forbid_and_sessions_belong_to_their_identity() {
    let d = dir();
    let reader = "reader-token-0123456789";
    let writer = "writer-token-0123456789";
    let s = Server::start(
        &d.path().join("data"),
        &[
            "--token",
            &format!("{reader}:switchboard:read:logs.*"),
            "--token",
            &format!("{writer}:switchboard:write:logs.a,switchboard:read:logs.a"),
        ],
    );
    let raw = s.raw();
    setup_stream(&raw, "logs.a", 1, 3).await;
    setup_stream(&raw, "other", 1, 0).await;
    let as_ = |token: &'static str, m: Method, path: &str, body: Value| {
        let raw = raw.clone_ref();
        let path = path.to_string();
        async move {
            raw.send(
                m,
                &path,
                Some(serde_json::to_vec(&body).unwrap()),
                &[],
                Some(token),
            )
            .await
        }
    };
    let reader: &'static str = "reader-token-0123456789";
    let writer: &'static str = "writer-token-0123456789";
    let forbidden = |a: &common::Answer| (a.status, a.code().to_string()) == (403, "forbidden".to_string());

    let a = as_(reader, Method::POST, "/v1/streams", json!({"name": "logs.new"})).await;
    assert!(forbidden(&a), "{}", a.body);
    assert_eq!(raw.get("/v1/streams/logs.new").await.code(), "stream_not_found");
    let a = as_(
        reader,
        Method::POST,
        "/v1/streams/logs.a/events",
        json!({"events": [{"value": 1}]}),
    )
    .await;
    assert!(forbidden(&a));
    assert_eq!(counts(&raw, "logs.a").await, json!([3]));
    let a = as_(
        writer,
        Method::POST,
        "/v1/streams/other/events",
        json!({"events": [{"value": 1}]}),
    )
    .await;
    assert!(forbidden(&a));
    let a = as_(
        writer,
        Method::POST,
        "/v1/streams/logs.a/events",
        json!({"events": [{"value": 1}]}),
    )
    .await;
    assert_eq!(a.status, 200);
    let a = as_(
        reader,
        Method::POST,
        "/v1/sessions",
        json!({"stream": "logs.a", "mode": "write"}),
    )
    .await;
    assert!(forbidden(&a));
    let a = as_(reader, Method::DELETE, "/v1/streams/logs.a", json!({})).await;
    assert!(forbidden(&a));
    let a = as_(reader, Method::GET, "/v1/streams/other", json!({})).await;
    assert!(forbidden(&a));
    let l = raw
        .send(Method::GET, "/v1/streams", None, &[], Some(reader))
        .await;
    assert_eq!(l.body["streams"].as_array().unwrap().len(), 1, "{}", l.body);

    // a session belongs to the identity that allocated it
    let a = as_(
        reader,
        Method::POST,
        "/v1/sessions",
        json!({"stream": "logs.a", "mode": "read", "cursor": "earliest"}),
    )
    .await;
    assert_eq!(a.status, 201);
    let (id, secret) = (
        a.body["session"].as_str().unwrap().to_string(),
        a.body["secret"].as_str().unwrap().to_string(),
    );
    let path = format!("/v1/sessions/{id}/read");
    let signed_as = |token: &'static str| {
        let now = common::now_ms();
        let sig = switchboard_proto::signing::sign(secret.as_bytes(), now, "POST", &path, b"{}");
        let raw = raw.clone_ref();
        let path = path.clone();
        async move {
            raw.send(
                Method::POST,
                &path,
                Some(b"{}".to_vec()),
                &[("x-switchboard-signature", sig)],
                Some(token),
            )
            .await
        }
    };
    let stolen = signed_as(writer).await;
    assert!(forbidden(&stolen), "{}", stolen.body);
    let own = signed_as(reader).await;
    assert_eq!(own.status, 200);
    assert_eq!(
        own.body["batch"], 1,
        "the stolen call changed nothing: the owner's first read is batch 1"
    );
}

#[tokio::test]
async fn captured_requests_replayed_later_are_harmless_or_rejected() {
    let d = dir();
    let s = Server::start(&d.path().join("data"), &[]);
    let raw = s.raw();
    setup_stream(&raw, "replay", 1, 0).await;
    let (id, secret, _) = allocate(&raw, json!({"stream": "replay", "mode": "write"})).await;
    let (id2, _, _) = allocate(&raw, json!({"stream": "replay", "mode": "write"})).await;
    // capture a signed write and commit exactly as sent
    let now = common::now_ms();
    let capture = |path: String, body: Vec<u8>| {
        let sig = switchboard_proto::signing::sign(secret.as_bytes(), now, "POST", &path, &body);
        (path, body, sig)
    };
    let write = capture(
        format!("/v1/sessions/{id}/write"),
        b"{\"block\":1,\"events\":[{\"value\":\"pay 10\"}]}".to_vec(),
    );
    let commit = capture(
        format!("/v1/sessions/{id}/commit"),
        b"{\"block\":1,\"durable\":true}".to_vec(),
    );
    let send = |c: &(String, Vec<u8>, String)| {
        let raw = raw.clone_ref();
        let c = c.clone();
        async move {
            raw.send(
                Method::POST,
                &c.0,
                Some(c.1),
                &[("x-switchboard-signature", c.2)],
                Some(TOKEN),
            )
            .await
        }
    };
    let w = send(&write).await;
    assert_eq!(w.status, 200);
    let c = send(&commit).await;
    assert_eq!(c.body["status"], "durable");
    // replayed within the skew window: the same answers, nothing stored twice
    for _ in 0..3 {
        assert_eq!(send(&write).await.bytes, w.bytes);
        assert_eq!(send(&commit).await.bytes, c.bytes);
    }
    assert_eq!(counts(&raw, "replay").await, json!([1]));
    // replayed against another session: the signature does not fit it
    let other = (write.0.replace(&id, &id2), write.1.clone(), write.2.clone());
    assert_eq!(send(&other).await.code(), "bad_signature");
    // replayed with its body altered: refused
    let altered = (
        write.0.clone(),
        b"{\"block\":1,\"events\":[{\"value\":\"pay 99\"}]}".to_vec(),
        write.2.clone(),
    );
    assert_eq!(send(&altered).await.code(), "bad_signature");
    // replayed after the window: refused as stale
    let old =
        switchboard_proto::signing::sign(secret.as_bytes(), now - 6 * 60 * 1000, "POST", &write.0, &write.1);
    let stale = (write.0.clone(), write.1.clone(), old);
    assert_eq!(send(&stale).await.code(), "bad_signature");
    // replayed after the session is gone: nothing to act on
    raw.signed(Method::DELETE, &format!("/v1/sessions/{id}"), &secret, None)
        .await;
    assert_eq!(send(&write).await.code(), "session_gone");
    assert_eq!(counts(&raw, "replay").await, json!([1]));
}

/// What the contract says beyond the happy path: unknown endpoints and
/// methods, a public OpenAPI document, integers in any JSON number form,
/// `null` values, byte bounds, repeated signature headers, and writers of
/// a deleted stream. Each refused call changes nothing.
#[tokio::test]
async fn contract_edges() {
    let d = dir();
    let s = Server::start(&d.path().join("data"), &[]);
    let raw = s.raw();

    let a = raw.get("/v1/nothing").await;
    assert_eq!((a.status, a.code()), (404, "not_found"));
    let a = raw
        .send(Method::GET, "/v1/streams/x/nothing", None, &[], None)
        .await;
    assert_eq!((a.status, a.code()), (404, "not_found"));
    for (method, path) in [
        ("TRACE", "/v1/streams"),
        ("PUT", "/v1/streams/x"),
        ("DELETE", "/healthz"),
    ] {
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let a = raw.send(m, path, None, &[], Some(TOKEN)).await;
        assert_eq!(
            (a.status, a.code()),
            (405, "method_not_allowed"),
            "{method} {path}"
        );
        assert!(
            a.headers.contains_key("allow"),
            "{method} {path}: no Allow header"
        );
    }
    // malformed stream names in paths: bad_request, always a JSON body
    for (method, path) in [
        (Method::GET, "/v1/streams/%FF"),
        (Method::GET, "/v1/streams/a%20b"),
        (Method::DELETE, "/v1/streams/a%20b"),
        (Method::POST, "/v1/streams/%FF/events"),
    ] {
        let a = raw
            .send(
                method.clone(),
                path,
                Some(br#"{"events": [{"value": 1}]}"#.to_vec()),
                &[],
                Some(TOKEN),
            )
            .await;
        assert_eq!(
            (a.status, a.code()),
            (400, "bad_request"),
            "{method} {path}: {:?}",
            a.bytes
        );
    }
    let a = raw.send(Method::GET, "/v1/streams/a%20b", None, &[], None).await;
    assert_eq!(
        (a.status, a.code()),
        (401, "unauthorized"),
        "no token: nothing about the name"
    );
    let a = raw
        .json(
            Method::POST,
            "/v1/sessions",
            json!({"stream": "a b", "mode": "read"}),
        )
        .await;
    assert_eq!((a.status, a.code()), (400, "bad_request"));

    let a = raw.send(Method::GET, "/v1/openapi.json", None, &[], None).await;
    assert_eq!(a.status, 200, "the document needs no token");
    assert_eq!(a.body["openapi"], "3.1.0");

    // whole numbers in any form; fractions and overflow refused
    let a = raw
        .json(
            Method::POST,
            "/v1/streams",
            json!({"name": "nums", "partitions": 2.0, "retention_ms": 1e9, "retention_bytes": null}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.body["partitions"], 2);
    assert_eq!(a.body["retention_ms"], 1_000_000_000u64);
    let a = raw
        .json(
            Method::POST,
            "/v1/streams",
            json!({"name": "big", "retention_ms": 9_223_372_036_854_775_808u64}),
        )
        .await;
    assert_eq!((a.status, a.code()), (400, "bad_request"));
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1 to 9223372036854775807"),
        "{}",
        a.body
    );

    // null is a value; lenient base64 in, canonical base64 out
    let a = raw
        .json(
            Method::POST,
            "/v1/streams/nums/events",
            json!({"events": [{"key": "a", "value": null}, {"key": "a", "value_b64": "00=="}]}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = raw
        .json(
            Method::POST,
            "/v1/streams/nums/events",
            json!({"events": [{"value_b64": null}]}),
        )
        .await;
    assert_eq!((a.status, a.code()), (400, "bad_request"));
    let c = s.client();
    let got = common::read_all(&c, "nums").await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].value.as_ref().map(|v| v.get()), Some("null"));
    assert_eq!(got[1].value_b64.as_deref(), Some("0w=="));

    // the most common mistake gets a message that shows the shape
    let a = raw
        .post_bytes("/v1/streams/nums/events", br#"[{"value": 1}]"#)
        .await;
    assert_eq!((a.status, a.code()), (400, "bad_request"));
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(r#"expected an object {"events": [...]}"#),
        "{}",
        a.body
    );

    // serde would read a struct from an array of its fields: refused
    let a = raw
        .post_bytes("/v1/streams/nums/events", br#"[[{"value": 1}]]"#)
        .await;
    assert_eq!((a.status, a.code()), (400, "bad_request"));
    let a = raw.post_bytes("/v1/streams", br#"["arr", 1]"#).await;
    assert_eq!((a.status, a.code()), (400, "bad_request"));

    // values every reader can parse: bounded nesting, no lone surrogates
    let before = ends(&raw, "nums").await;
    let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
    for bad in [
        format!(r#"{{"events": [{{"value": 1}}, {{"value": {deep}}}]}}"#),
        r#"{"events": [{"value": 1}, {"value": {"s": "\ud800"}}]}"#.to_string(),
        r#"{"events": [{"value": 1}, {"key": "\udc00", "value": 1}]}"#.to_string(),
    ] {
        let a = raw.post_bytes("/v1/streams/nums/events", bad.as_bytes()).await;
        assert_eq!((a.status, a.code()), (400, "bad_request"), "{}", a.body);
    }
    assert_eq!(ends(&raw, "nums").await, before);
    let ok = format!(
        r#"{{"events": [{{"value": {}{}}}]}}"#,
        "[".repeat(64),
        "]".repeat(64)
    );
    let a = raw.post_bytes("/v1/streams/nums/events", ok.as_bytes()).await;
    assert_eq!(a.status, 200, "{}", a.body);

    // byte bounds are payload_too_large, and store nothing
    let before = ends(&raw, "nums").await;
    let long_key = "k".repeat(16 * 1024 + 1);
    let many: serde_json::Map<String, Value> = (0..65).map(|i| (format!("h{i}"), json!("v"))).collect();
    let long_name: serde_json::Map<String, Value> = [("n".repeat(257), json!("v"))].into_iter().collect();
    for bad in [
        json!({"events": [{"value": 1}, {"key": long_key, "value": 1}]}),
        json!({"events": [{"value": 1}, {"headers": many, "value": 1}]}),
        json!({"events": [{"value": 1}, {"headers": long_name, "value": 1}]}),
    ] {
        let a = raw.json(Method::POST, "/v1/streams/nums/events", bad).await;
        assert_eq!((a.status, a.code()), (413, "payload_too_large"), "{}", a.body);
    }
    assert_eq!(ends(&raw, "nums").await, before);

    // two signature headers: neither counts
    let (id, secret, _) = allocate(
        &raw,
        json!({"stream": "nums", "mode": "read", "cursor": "earliest"}),
    )
    .await;
    let path = format!("/v1/sessions/{id}/read");
    let now = common::now_ms();
    let good = switchboard_proto::signing::sign(secret.as_bytes(), now, "POST", &path, b"{}");
    let a = raw
        .send(
            Method::POST,
            &path,
            Some(b"{}".to_vec()),
            &[
                ("x-switchboard-signature", good.clone()),
                ("x-switchboard-signature", good),
            ],
            Some(TOKEN),
        )
        .await;
    assert_eq!((a.status, a.code()), (401, "bad_signature"));
    let a = raw.post_signed(&path, &secret, b"[]").await;
    assert_eq!((a.status, a.code()), (400, "bad_request"), "{}", a.body);
    let a = raw
        .signed(Method::GET, &format!("/v1/sessions/{id}"), &secret, None)
        .await;
    assert!(
        a.body.get("pending_batch").is_none(),
        "the refused read made a batch"
    );

    // sessions of a deleted stream answer stream_not_found, then
    // session_gone: a reader does not serve what it had buffered, a writer
    // stores nothing more
    setup_stream(&raw, "gone", 1, 5).await;
    let (rid, rsecret, _) = allocate(
        &raw,
        json!({"stream": "gone", "mode": "read", "cursor": "earliest"}),
    )
    .await;
    let read = format!("/v1/sessions/{rid}/read");
    let a = raw
        .post_signed(&read, &rsecret, br#"{"max_events": 1, "wait_ms": 1000}"#)
        .await;
    assert_eq!(a.body["events"].as_array().unwrap().len(), 1, "{}", a.body);
    let a = raw
        .post_signed(&format!("/v1/sessions/{rid}/ack"), &rsecret, br#"{"batch": 1}"#)
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let (id, secret, _) = allocate(&raw, json!({"stream": "gone", "mode": "write"})).await;
    let w = raw
        .post_signed(
            &format!("/v1/sessions/{id}/write"),
            &secret,
            br#"{"block": 1, "events": [{"value": 1}]}"#,
        )
        .await;
    assert_eq!(w.status, 200, "{}", w.body);
    let a = raw
        .send(Method::DELETE, "/v1/streams/gone", None, &[], Some(TOKEN))
        .await;
    assert_eq!(a.status, 204);
    let a = raw.post_signed(&read, &rsecret, b"{}").await;
    assert_eq!((a.status, a.code()), (404, "stream_not_found"), "{}", a.body);
    let a = raw.post_signed(&read, &rsecret, b"{}").await;
    assert_eq!((a.status, a.code()), (410, "session_gone"), "{}", a.body);
    let a = raw
        .post_signed(
            &format!("/v1/sessions/{id}/commit"),
            &secret,
            br#"{"block": 1, "durable": false}"#,
        )
        .await;
    assert_eq!((a.status, a.code()), (404, "stream_not_found"), "{}", a.body);
    let a = raw
        .post_signed(
            &format!("/v1/sessions/{id}/write"),
            &secret,
            br#"{"block": 2, "events": [{"value": 2}]}"#,
        )
        .await;
    assert_eq!((a.status, a.code()), (410, "session_gone"), "{}", a.body);
    // a new stream of the same name holds nothing of the old writer's
    setup_stream(&raw, "gone", 1, 0).await;
    assert_eq!(counts(&raw, "gone").await, json!([0]));
}

/// `GET /v1/config` shows the effective configuration to node admins only,
/// with every secret redacted.
#[tokio::test]
async fn configuration_is_redacted_and_for_node_admins() {
    let d = dir();
    let scoped = "scoped-admin-token-0123456789";
    let s = Server::start(
        &d.path().join("data"),
        &[
            "--token",
            &format!("{scoped}:switchboard:admin:orders-*"),
            "--auth-client-secret",
            "very-secret-client-secret",
        ],
    );
    let raw = s.raw();
    let a = raw.get("/v1/config").await;
    assert_eq!(a.status, 200, "{}", a.body);
    let text = String::from_utf8(a.bytes.to_vec()).unwrap();
    for secret in [TOKEN, scoped, "very-secret-client-secret"] {
        assert!(!text.contains(secret), "the configuration shows {secret}: {text}");
    }
    assert_eq!(a.body["auth"]["client_secret"], "<redacted>");
    let tokens: Vec<&str> = a.body["auth"]["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(
        tokens.contains(&"<redacted>:switchboard:admin:orders-*"),
        "{tokens:?}"
    );
    assert_eq!(a.body["log"]["fsync"], "always");
    // admin on a pattern is not admin of the node
    let a = raw.send(Method::GET, "/v1/config", None, &[], Some(scoped)).await;
    assert_eq!((a.status, a.code()), (403, "forbidden"));
    let a = raw.send(Method::GET, "/v1/config", None, &[], None).await;
    assert_eq!((a.status, a.code()), (401, "unauthorized"));
}
