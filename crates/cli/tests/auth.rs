//! OAuth2 end to end: a small identity provider in the test serves a JWKS
//! and an RFC 7662 introspection endpoint; the real server checks tokens
//! against it. Every rejected call is shown to change nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::routing::{get, post};
use base64::Engine;
use common::{Server, TOKEN};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{json, Value};

const ISS: &str = "https://idp.test";
const AUD: &str = "switchboard";

#[derive(Default)]
struct Idp {
    jwks: Mutex<Vec<Value>>,
    active: Mutex<HashMap<String, Value>>,
    introspections: AtomicUsize,
}

struct SigningKey {
    kid: String,
    alg: Algorithm,
    enc: EncodingKey,
    jwk: Value,
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn es256(kid: &str) -> SigningKey {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = kp.public_key_raw();
    SigningKey {
        kid: kid.into(),
        alg: Algorithm::ES256,
        enc: EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap(),
        jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(&raw[1..33]), "y": b64(&raw[33..65])}),
    }
}

fn ed25519(kid: &str) -> SigningKey {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    SigningKey {
        kid: kid.into(),
        alg: Algorithm::EdDSA,
        enc: EncodingKey::from_ed_pem(kp.serialize_pem().as_bytes()).unwrap(),
        jwk: json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(kp.public_key_raw())}),
    }
}

fn rs256(kid: &str) -> SigningKey {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::traits::PublicKeyParts;
    let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
    let der = key.to_pkcs1_der().unwrap();
    SigningKey {
        kid: kid.into(),
        alg: Algorithm::RS256,
        enc: EncodingKey::from_rsa_der(der.as_bytes()),
        jwk: json!({"kty": "RSA", "kid": kid, "n": b64(&key.n().to_bytes_be()), "e": b64(&key.e().to_bytes_be())}),
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn token(k: &SigningKey, claims: Value) -> String {
    let mut h = Header::new(k.alg);
    h.kid = Some(k.kid.clone());
    jsonwebtoken::encode(&h, &claims, &k.enc).unwrap()
}

fn claims(sub: &str, scope: &str) -> Value {
    json!({"iss": ISS, "aud": AUD, "sub": sub, "exp": now() + 600, "nbf": now() - 5, "scope": scope})
}

async fn start_idp(idp: Arc<Idp>) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let app = axum::Router::new()
        .route(
            "/jwks.json",
            get(
                |axum::extract::State(i): axum::extract::State<Arc<Idp>>| async move {
                    axum::Json(json!({"keys": *i.jwks.lock().unwrap()}))
                },
            ),
        )
        .route(
            "/introspect",
            post(
                |axum::extract::State(i): axum::extract::State<Arc<Idp>>,
                 headers: axum::http::HeaderMap,
                 body: String| async move {
                    i.introspections.fetch_add(1, Ordering::SeqCst);
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    let expect = format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode("client:secret")
                    );
                    if auth != expect {
                        return (axum::http::StatusCode::UNAUTHORIZED, axum::Json(json!({})));
                    }
                    let token = body
                        .split('&')
                        .find_map(|kv| kv.strip_prefix("token="))
                        .unwrap_or("")
                        .to_string();
                    let a = i
                        .active
                        .lock()
                        .unwrap()
                        .get(&token)
                        .cloned()
                        .unwrap_or(json!({"active": false}));
                    (axum::http::StatusCode::OK, axum::Json(a))
                },
            ),
        )
        .with_state(idp);
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}")
}

// multi-threaded: the server's start blocks this thread while it fetches
// the JWKS from the identity provider running on another
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_tokens_and_the_rejection_matrix() {
    let idp = Arc::new(Idp::default());
    let ec = es256("ec-1");
    let ed = ed25519("ed-1");
    let rs = rs256("rs-1");
    let late = es256("late-1");
    idp.jwks
        .lock()
        .unwrap()
        .extend([ec.jwk.clone(), ed.jwk.clone(), rs.jwk.clone()]);
    let base = start_idp(idp.clone()).await;
    idp.active.lock().unwrap().insert(
        "opaque-good".into(),
        json!({"active": true, "sub": "svc-a", "exp": now() + 600, "scope": "switchboard:write:logs"}),
    );
    let d = tempfile::tempdir().unwrap();
    let s = Server::start(
        &d.path().join("data"),
        &[
            "--auth-jwks",
            &format!("{base}/jwks.json"),
            "--auth-issuer",
            ISS,
            "--auth-audience",
            AUD,
            "--auth-leeway-s",
            "5",
            "--auth-jwks-refresh-ms",
            "300",
            "--auth-introspect",
            &format!("{base}/introspect"),
            "--auth-client-id",
            "client",
            "--auth-client-secret",
            "secret",
        ],
    );
    let raw = s.raw();
    assert_eq!(
        raw.json(Method::POST, "/v1/streams", json!({"name": "logs"}))
            .await
            .status,
        201
    );
    let ends = || async { raw.get("/v1/streams/logs").await.body["end_offsets"].clone() };
    let before = ends().await;
    let publish = |tok: String| {
        let raw = raw.clone_ref();
        async move {
            let body = serde_json::to_vec(&json!({"events": [{"value": 1}]})).unwrap();
            raw.send(
                Method::POST,
                "/v1/streams/logs/events",
                Some(body),
                &[],
                Some(&tok),
            )
            .await
        }
    };

    // good tokens, both algorithms, and introspection
    let writer = token(&ec, claims("alice", "switchboard:write:logs openid"));
    assert_eq!(publish(writer.clone()).await.status, 200);
    let admin = token(&ed, claims("bob", "switchboard:admin"));
    assert_eq!(
        raw.send(Method::GET, "/v1/streams/logs", None, &[], Some(&admin))
            .await
            .status,
        200
    );
    assert_eq!(publish("opaque-good".into()).await.status, 200);
    let calls = idp.introspections.load(Ordering::SeqCst);
    assert_eq!(publish("opaque-good".into()).await.status, 200);
    assert_eq!(
        idp.introspections.load(Ordering::SeqCst),
        calls,
        "introspection answers are cached"
    );
    let before = {
        let _ = before;
        ends().await
    };

    // the rejection matrix: each is refused with the documented code
    let mut expired = claims("alice", "switchboard:write:logs");
    expired["exp"] = json!(now() - 60);
    let mut early = claims("alice", "switchboard:write:logs");
    early["nbf"] = json!(now() + 600);
    let mut wrong_iss = claims("alice", "switchboard:write:logs");
    wrong_iss["iss"] = json!("https://evil.test");
    let mut wrong_aud = claims("alice", "switchboard:write:logs");
    wrong_aud["aud"] = json!("other");
    let forged = {
        let t = token(&ec, claims("alice", "switchboard:write:logs"));
        let mut parts: Vec<&str> = t.split('.').collect();
        let admin_claims = b64(serde_json::to_string(&claims("alice", "switchboard:admin"))
            .unwrap()
            .as_bytes());
        parts[1] = &admin_claims;
        parts.join(".")
    };
    idp.active
        .lock()
        .unwrap()
        .insert("opaque-revoked".into(), json!({"active": false}));
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("no token", String::new(), 401, "unauthorized"),
        ("malformed", "a.b.c".into(), 401, "unauthorized"),
        ("expired", token(&ec, expired), 401, "unauthorized"),
        ("not yet valid", token(&ec, early), 401, "unauthorized"),
        ("wrong issuer", token(&ec, wrong_iss), 401, "unauthorized"),
        ("wrong audience", token(&ed, wrong_aud), 401, "unauthorized"),
        ("altered claims", forged, 401, "unauthorized"),
        (
            "unknown kid",
            token(&late, claims("alice", "switchboard:write:logs")),
            401,
            "unauthorized",
        ),
        ("revoked", "opaque-revoked".into(), 401, "unauthorized"),
        (
            "unknown opaque",
            "opaque-never-issued".into(),
            401,
            "unauthorized",
        ),
        (
            "missing scope",
            token(&ec, claims("carol", "switchboard:read:logs")),
            403,
            "forbidden",
        ),
        (
            "scope on another stream",
            token(&ec, claims("carol", "switchboard:write:other")),
            403,
            "forbidden",
        ),
    ];
    for (name, tok, status, code) in &cases {
        let a = if tok.is_empty() {
            let body = serde_json::to_vec(&json!({"events": [{"value": 1}]})).unwrap();
            raw.send(Method::POST, "/v1/streams/logs/events", Some(body), &[], None)
                .await
        } else {
            publish(tok.clone()).await
        };
        assert_eq!((a.status, a.code()), (*status, *code), "{name}: {}", a.body);
    }
    assert_eq!(ends().await, before, "no rejected call wrote anything");

    // a key published later is picked up on its first use (JWKS refresh)
    idp.jwks.lock().unwrap().push(late.jwk.clone());
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let t = token(&late, claims("dave", "switchboard:write:logs"));
    assert_eq!(publish(t).await.status, 200);

    // sessions are bound to the identity that allocated them
    let a = raw
        .send(
            Method::POST,
            "/v1/sessions",
            Some(serde_json::to_vec(&json!({"stream": "logs", "mode": "write"})).unwrap()),
            &[],
            Some(&writer),
        )
        .await;
    assert_eq!(a.status, 201);
    let id = a.body["session"].as_str().unwrap();
    let secret = a.body["secret"].as_str().unwrap();
    let path = format!("/v1/sessions/{id}");
    let ms = common::now_ms();
    let sig = switchboard_proto::signing::sign(secret.as_bytes(), ms, "GET", &path, b"");
    let other = token(&ec, claims("mallory", "switchboard:admin"));
    let a = raw
        .send(
            Method::GET,
            &path,
            None,
            &[("x-switchboard-signature", sig.clone())],
            Some(&other),
        )
        .await;
    assert_eq!((a.status, a.code()), (403, "forbidden"));
    let a = raw
        .send(
            Method::GET,
            &path,
            None,
            &[("x-switchboard-signature", sig)],
            Some(&writer),
        )
        .await;
    assert_eq!(a.status, 200);
    // the static token still works beside the identity provider
    assert_eq!(
        raw.send(Method::GET, "/v1/streams", None, &[], Some(TOKEN))
            .await
            .status,
        200
    );
}
