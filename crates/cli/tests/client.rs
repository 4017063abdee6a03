//! The Rust client against blocks that can never be stored: one clear
//! error, at once, never a replay loop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::Server;
use switchboard_client::wire::Event;
use switchboard_client::{Writer, WriterOptions};
use switchboard_proto::ErrorCode;

#[tokio::test]
async fn a_block_that_cannot_be_stored_ends_with_its_error() {
    let d = tempfile::tempdir().unwrap();
    let s = Server::start(&d.path().join("data"), &[]);
    let c = s.client();
    common::create_stream(&c, "poison", 2).await;
    let opts = WriterOptions {
        producer: Some("p".into()),
        ..WriterOptions::default()
    };
    // a value nested deeper than the protocol allows
    let mut w = Writer::open(c.clone(), "poison", opts.clone()).await.unwrap();
    let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
    let t = Instant::now();
    let e = w
        .send_encoded(format!(r#"[{{"value":{deep}}}]"#).into())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::BadRequest), "{e}");
    assert!(t.elapsed() < Duration::from_secs(2));
    // the stream deleted under a live writer
    let mut w = Writer::open(c.clone(), "poison", opts).await.unwrap();
    w.send(&[Event::json("before").unwrap()]).await.unwrap();
    w.flush().await.unwrap();
    let del = s
        .raw()
        .send(
            reqwest::Method::DELETE,
            "/v1/streams/poison",
            None,
            &[],
            Some(common::TOKEN),
        )
        .await;
    assert_eq!(del.status, 204);
    let t = Instant::now();
    let e = match w.send(&[Event::json("after").unwrap()]).await {
        Err(e) => e,
        Ok(_) => w.flush().await.unwrap_err(),
    };
    assert_eq!(e.code(), Some(ErrorCode::StreamNotFound), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[tokio::test]
async fn the_client_reads_readiness_the_contract_and_the_config() {
    let d = tempfile::tempdir().unwrap();
    let mut s = Server::start(&d.path().join("data"), &[]);
    let c = s.client();
    assert!(c.ready().await.unwrap());
    let doc = c.openapi().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{doc}");
    assert!(c.config().await.unwrap().get("session").is_some());
    s.kill();
    let e = c.ready().await.unwrap_err();
    assert!(e.is_transport() && e.is_retryable(), "{e}");
}
