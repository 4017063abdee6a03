//! Data written by an earlier version (before records carried `sb.`
//! headers) stays readable: every event as it was written, beside events
//! written after the upgrade.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::{read_all, Server};
use switchboard_client::wire::Event;

async fn check(fixture: &str, extra: &[&str]) {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    common::copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(fixture),
        &data,
    );
    let s = Server::start(&data, extra);
    if data.join("keys/keyring.json").exists() {
        panic!("the older keyring file was not imported into the store");
    }
    let c = s.client();
    c.publish(
        "legacy",
        &[Event::json(&"after")
            .unwrap()
            .with_key("k9")
            .with_header("h", "new")],
        None,
    )
    .await
    .unwrap();
    let events = read_all(&c, "legacy").await;
    assert_eq!(events.len(), 5, "{fixture}: {events:?}");
    let by_key = |k: &str| events.iter().find(|e| e.key.as_deref() == Some(k)).unwrap();
    let k1 = by_key("k1");
    assert_eq!(
        k1.value.as_ref().unwrap().get(),
        r#"{"n":1,"s":"one"}"#,
        "{fixture}"
    );
    assert_eq!(k1.headers["h"], "v1");
    assert_eq!(by_key("k2").value_b64.as_deref(), Some("AAEC/w=="));
    let k3 = by_key("k3");
    assert_eq!(k3.value.as_ref().unwrap().get(), "[1,2,3]");
    assert_eq!((k3.headers["a"].as_str(), k3.headers["b"].as_str()), ("x", "y"));
    let unkeyed = events.iter().find(|e| e.key.is_none()).unwrap();
    assert_eq!(unkeyed.value.as_ref().unwrap().get(), r#""no key""#);
    let k9 = by_key("k9");
    assert_eq!(
        (k9.value.as_ref().unwrap().get(), k9.headers["h"].as_str()),
        (r#""after""#, "new")
    );
}

#[tokio::test]
async fn encrypted_data_of_the_previous_format_reads_back() {
    check("v0-encrypted", &[]).await;
}

#[tokio::test]
async fn plain_data_of_the_previous_format_reads_back() {
    check("v0-plain", &["--encryption", "false"]).await;
    // and with encryption turned on later: old records stay readable
    check("v0-plain", &[]).await;
}
