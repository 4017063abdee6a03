//! Server keys shared by several nodes: signatures checked anywhere,
//! rotation without breaking what was minted before, retirement.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::Server;
use reqwest::Method;
use serde_json::json;

fn keys(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("keys")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

async fn allocate(s: &Server, cursor: Option<&str>) -> (String, String, String) {
    let raw = s.raw();
    let mut body = json!({"stream": "shared", "mode": "read", "cursor": "earliest"});
    if let Some(c) = cursor {
        body["cursor"] = json!(c);
    }
    let a = raw.json(Method::POST, "/v1/sessions", body).await;
    assert_eq!(a.status, 201, "{}", a.body);
    (
        a.body["session"].as_str().unwrap().to_string(),
        a.body["secret"].as_str().unwrap().to_string(),
        a.body["cursor"].as_str().unwrap().to_string(),
    )
}

async fn get_session(s: &Server, id: &str, secret: &str) -> (u16, String) {
    let a = s
        .raw()
        .signed(Method::GET, &format!("/v1/sessions/{id}"), secret, None)
        .await;
    (a.status, a.code().to_string())
}

fn start(dir: &Path, key_file: Option<&Path>) -> Server {
    match key_file {
        Some(k) => Server::start(dir, &["--server-key-file", k.to_str().unwrap()]),
        None => Server::start(dir, &[]),
    }
}

#[tokio::test]
async fn nodes_sharing_a_key_file_check_each_others_signatures() {
    let d = tempfile::tempdir().unwrap();
    let key = d.path().join("cluster.key");
    assert!(keys(&["init-server", "--file", key.to_str().unwrap()]).contains("server key 1"));
    let a = start(&d.path().join("a"), Some(&key));
    let b = start(&d.path().join("b"), Some(&key));
    let loner = start(&d.path().join("c"), None);
    for s in [&a, &b, &loner] {
        let r = s
            .raw()
            .json(Method::POST, "/v1/streams", json!({"name": "shared"}))
            .await;
        assert_eq!(r.status, 201);
    }
    let (id, secret, cursor) = allocate(&a, None).await;
    assert_eq!(get_session(&a, &id, &secret).await.0, 200);
    // B checks the signature with the shared key: the session is simply
    // not there
    assert_eq!(get_session(&b, &id, &secret).await, (410, "session_gone".into()));
    // a node with its own keys cannot tell the signature is right
    assert_eq!(
        get_session(&loner, &id, &secret).await,
        (401, "bad_signature".into())
    );

    // rotation: new sessions and cursors use key 2, older ones keep working
    let out = keys(&["rotate-server", "--server-key-file", key.to_str().unwrap()]);
    assert!(out.contains("new server key 2"), "{out}");
    // running nodes look at the file at most once a second
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (id2, secret2, cursor2) = allocate(&a, Some(&cursor)).await;
    assert_ne!(id2, id);
    assert_eq!(get_session(&a, &id2, &secret2).await.0, 200);
    assert_eq!(get_session(&a, &id, &secret).await.0, 200, "pre-rotation session");
    assert_eq!(
        get_session(&b, &id2, &secret2).await,
        (410, "session_gone".into())
    );
    allocate(&a, Some(&cursor)).await;

    // retiring key 1 ends what was minted under it, and only that
    keys(&[
        "retire-server",
        "--server-key-file",
        key.to_str().unwrap(),
        "--id",
        "1",
    ]);
    assert!(
        common::eventually(std::time::Duration::from_secs(5), || async {
            get_session(&a, &id, &secret).await == (410, "session_gone".to_string())
        })
        .await
    );
    assert_eq!(get_session(&a, &id2, &secret2).await.0, 200);
    let old = a
        .raw()
        .json(
            Method::POST,
            "/v1/sessions",
            json!({"stream": "shared", "mode": "read", "cursor": cursor}),
        )
        .await;
    assert_eq!(old.code(), "bad_cursor", "{}", old.body);
    allocate(&a, Some(&cursor2)).await;
}

#[tokio::test]
async fn a_missing_configured_key_file_is_a_clear_start_error() {
    let d = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(d.path().join("data"))
        .arg("--server-key-file")
        .arg(d.path().join("nope.key"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server_key_file") && err.contains("init-server"),
        "{err}"
    );
    // the newest key cannot be retired
    let key = d.path().join("k");
    keys(&["init-server", "--file", key.to_str().unwrap()]);
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["keys", "retire-server", "--server-key-file"])
        .arg(&key)
        .args(["--id", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("newest"));
}
