//! Encryption at rest and key rotation, end to end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{read_all, Server};
use switchboard_client::wire::{CreateStream, Event};
use switchboard_client::{Client, Writer, WriterOptions};

async fn create(c: &Client, name: &str) {
    common::create_stream(c, name, 2).await;
}

fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    hits.push(p.display().to_string());
                }
            }
        }
    }
    hits
}

#[tokio::test]
async fn no_event_byte_reaches_the_disk_in_the_clear() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let mut s = Server::start(&data, &[]);
    let c = s.client();
    create(&c, "secrets").await;
    let marker = |what: &str, i: usize| format!("MARKER-{what}-{i}-7f3a9c");
    // one-shot publish and a producer session, values as JSON and as bytes
    let events: Vec<Event> = (0..50)
        .map(|i| {
            Event::json(&marker("value", i))
                .unwrap()
                .with_key(marker("key", i))
                .with_header("h", marker("header", i))
        })
        .collect();
    c.publish("secrets", &events, None).await.unwrap();
    let opts = WriterOptions {
        producer: Some("p".into()),
        ..WriterOptions::default()
    };
    let mut w = Writer::open(c.clone(), "secrets", opts).await.unwrap();
    let bytes: Vec<Event> = (50..100)
        .map(|i| Event::bytes(marker("bytes", i).as_bytes()))
        .collect();
    w.send(&bytes).await.unwrap();
    w.close().await.unwrap();

    let got = read_all(&c, "secrets").await;
    assert_eq!(got.len(), 100);
    assert!(got
        .iter()
        .any(|e| e.key.as_deref() == Some(marker("key", 7).as_str())
            && e.headers["h"] == marker("header", 7)
            && e.value.as_ref().unwrap().get() == format!("\"{}\"", marker("value", 7))));
    // everything on disk, after a clean stop
    assert!(s.terminate().success());
    // values, keys, header values and byte values all carry the marker
    let hits = files_containing(&data, b"7f3a9c");
    assert!(hits.is_empty(), "markers found in {hits:?}");
    // the data keys live with the data, wrapped, in the store's own stream
    assert!(data.join("log/streams/__keys").is_dir());
    assert!(!data.join("keys/keyring.json").exists());
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(data.join("keys/master.keys"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

fn rotate(data: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["keys", "rotate", "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn rotation_keeps_old_data_readable_and_a_wrong_key_is_named() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let mut s = Server::start(&data, &[]);
    let c = s.client();
    create(&c, "rot").await;
    let batch = |tag: &str| {
        (0..10)
            .map(|i| Event::json(&format!("{tag}-{i}")).unwrap())
            .collect::<Vec<_>>()
    };
    c.publish("rot", &batch("before"), None).await.unwrap();
    // rotate while the server runs, publish more
    assert!(rotate(&data).contains("m2"));
    c.publish("rot", &batch("during"), None).await.unwrap();
    // rotate again while stopped, then restart: old and new data readable
    assert!(s.terminate().success());
    assert!(rotate(&data).contains("m3"));
    s.restart();
    let c = s.client();
    c.publish("rot", &batch("after"), None).await.unwrap();
    let got = read_all(&c, "rot").await;
    assert_eq!(got.len(), 30);
    let masters = std::fs::read_to_string(data.join("keys/master.keys")).unwrap();
    assert_eq!(masters.lines().filter(|l| l.starts_with('m')).count(), 3);
    assert!(s.terminate().success());

    // a master key that is not the one the data keys are wrapped under: the
    // server refuses to start, naming the data key
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--token",
            common::TOKEN,
            "--data-dir",
        ])
        .arg(&data)
        .env("SWITCHBOARD_MASTER_KEY", format!("m3:{}", "11".repeat(32)))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("data key") && err.contains("m3"), "{err}");
}

fn tls_client(s: &Server, ca: &Path) -> Client {
    let opts = switchboard_client::ClientOptions {
        ca_cert_pem: Some(std::fs::read(ca).unwrap()),
        ..Default::default()
    };
    Client::with_options(&s.url, common::TOKEN, opts).unwrap()
}

#[tokio::test]
async fn tls_self_signed_reload_and_rejections() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let s = Server::start(&data, &["--tls-self-signed"]);
    assert!(s.url.starts_with("https://"), "{}", s.url);
    let fp = s.next_line().unwrap();
    assert!(fp.contains("fingerprint"), "{fp}");
    let ca = data.join("tls/self-signed.crt");
    let c = tls_client(&s, &ca);
    create(&c, "tls").await;
    c.publish("tls", &[Event::json("over tls").unwrap()], None)
        .await
        .unwrap();
    assert_eq!(read_all(&c, "tls").await.len(), 1);

    // a client that does not trust the certificate refuses it
    let untrusting = s.client();
    let e = untrusting.list_streams().await.unwrap_err();
    assert!(matches!(e, switchboard_client::Error::Transport(_)), "{e}");
    // plain HTTP to the TLS port fails, and the server goes on
    let plain = reqwest::Client::new()
        .get(format!("http://{}/v1/streams", s.addr))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    assert!(c.list_streams().await.is_ok());

    // a new certificate in the same files is served after SIGHUP
    let old_ca = std::fs::read(&ca).unwrap();
    let next = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    std::fs::write(data.join("tls/self-signed.key"), next.key_pair.serialize_pem()).unwrap();
    std::fs::write(&ca, next.cert.pem()).unwrap();
    s.send_signal(libc::SIGHUP);
    let fresh = tls_client(&s, &ca);
    let reloaded = common::eventually(std::time::Duration::from_secs(10), || async {
        fresh.list_streams().await.is_ok()
    })
    .await;
    assert!(reloaded, "the new certificate is served");
    let stale = Client::with_options(
        &s.url,
        common::TOKEN,
        switchboard_client::ClientOptions {
            ca_cert_pem: Some(old_ca),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(stale.list_streams().await.is_err(), "the old certificate is gone");

    // a changed file is noticed without a signal too
    let third = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    std::fs::write(data.join("tls/self-signed.key"), third.key_pair.serialize_pem()).unwrap();
    std::fs::write(&ca, third.cert.pem()).unwrap();
    let newest = tls_client(&s, &ca);
    let noticed = common::eventually(std::time::Duration::from_secs(15), || async {
        newest.list_streams().await.is_ok()
    })
    .await;
    assert!(noticed, "the changed certificate file is served");
}

struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

fn test_ca(name: &str) -> TestCa {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    TestCa { cert, key }
}

/// A client identity (certificate and key, PEM) named `cn`, signed by `ca`.
fn client_identity(ca: &TestCa, cn: &str) -> reqwest::Identity {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    reqwest::Identity::from_pem(format!("{}{}", cert.pem(), key.serialize_pem()).as_bytes()).unwrap()
}

#[tokio::test]
async fn client_certificates_identify_callers() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let ca = test_ca("switchboard test clients");
    let ca_file = d.path().join("clients-ca.pem");
    std::fs::write(&ca_file, ca.cert.pem()).unwrap();
    let s = Server::start(
        &data,
        &[
            "--tls-self-signed",
            "--tls-client-ca",
            ca_file.to_str().unwrap(),
            "--client-cert",
            "svc-a:switchboard:read:*",
        ],
    );
    let server_ca =
        reqwest::Certificate::from_pem(&std::fs::read(data.join("tls/self-signed.crt")).unwrap()).unwrap();
    let http = |id: Option<reqwest::Identity>| {
        let mut b = reqwest::Client::builder().add_root_certificate(server_ca.clone());
        if let Some(id) = id {
            b = b.identity(id);
        }
        b.build().unwrap()
    };
    let get = |c: reqwest::Client, path: &str| {
        let url = format!("{}{path}", s.url);
        async move { c.get(url).send().await }
    };
    // a mapped certificate is an identity with its scopes
    let a = http(Some(client_identity(&ca, "svc-a")));
    assert_eq!(get(a.clone(), "/v1/streams").await.unwrap().status(), 200);
    let create = a
        .post(format!("{}/v1/streams", s.url))
        .body(r#"{"name":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(create.status(), 403, "read scope only");
    // a certificate of the CA that is not mapped, and no certificate at all
    let x = http(Some(client_identity(&ca, "svc-x")));
    assert_eq!(get(x, "/v1/streams").await.unwrap().status(), 401);
    assert_eq!(get(http(None), "/v1/streams").await.unwrap().status(), 401);
    // a certificate from another CA fails the handshake
    let stranger = test_ca("someone else");
    let z = http(Some(client_identity(&stranger, "svc-a")));
    let r = get(z, "/v1/streams").await;
    assert!(r.is_err() || r.unwrap().status() != 200);
    // bearer tokens still work over the same listener
    let t = http(None)
        .get(format!("{}/v1/streams", s.url))
        .bearer_auth(common::TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(t.status(), 200);
}

#[tokio::test]
async fn keys_in_the_clear_only_where_the_stream_says_so() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let mut s = Server::start(&data, &[]);
    let c = s.client();
    c.create_stream(&CreateStream {
        name: "open-keys".into(),
        partitions: Some(3),
        retention_ms: None,
        retention_bytes: None,
        encrypt_keys: Some(false),
    })
    .await
    .unwrap();
    let events: Vec<Event> = (0..20)
        .map(|i| {
            Event::json(&format!("VALUE-{i}-5d1e"))
                .unwrap()
                .with_key(format!("KEY-{i}-4c2b"))
                .with_header("h", format!("HEADER-{i}-5d1e"))
        })
        .collect();
    c.publish("open-keys", &events, None).await.unwrap();
    let got = read_all(&c, "open-keys").await;
    assert_eq!(got.len(), 20);
    let e = got
        .iter()
        .find(|e| e.key.as_deref() == Some("KEY-3-4c2b"))
        .unwrap();
    assert_eq!(e.headers["h"], "HEADER-3-5d1e");
    assert_eq!(e.value.as_ref().unwrap().get(), "\"VALUE-3-5d1e\"");
    // placement is by the clear key, as on any stream
    let p = switchboard_proto::partition::partition_for_key(b"KEY-3-4c2b", 3);
    assert_eq!(e.partition, p);
    assert!(s.terminate().success());
    // keys are readable to the store; values and headers are not
    assert!(!files_containing(&data, b"KEY-3-4c2b").is_empty());
    let hits = files_containing(&data, b"5d1e");
    assert!(hits.is_empty(), "values or headers in the clear: {hits:?}");
}
