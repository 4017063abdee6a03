//! The shared test vectors (copies of `shared/vectors/*.json`, the public
//! contract) against this crate, plus properties of the signature parser.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use serde::Deserialize;
use switchboard_proto::partition::{murmur2, partition_for_key};
use switchboard_proto::signing::{self, Signature, SignatureError, MAX_SKEW_MS};

#[derive(Deserialize)]
struct Murmur {
    cases: Vec<MurmurCase>,
}

#[derive(Deserialize)]
struct MurmurCase {
    key: String,
    murmur2_i32: i32,
    partition_of_3: u32,
    partition_of_12: u32,
}

#[derive(Deserialize)]
struct Signing {
    cases: Vec<SigningCase>,
}

#[derive(Deserialize)]
struct SigningCase {
    secret: String,
    t: u64,
    method: String,
    path: String,
    body: String,
    string_to_sign: String,
    header: String,
}

fn load<T: for<'a> Deserialize<'a>>(name: &str) -> T {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn murmur2_matches_kafka() {
    let v: Murmur = load("murmur2.json");
    assert!(!v.cases.is_empty());
    for c in v.cases {
        assert_eq!(murmur2(c.key.as_bytes()), c.murmur2_i32, "{:?}", c.key);
        assert_eq!(partition_for_key(c.key.as_bytes(), 3), c.partition_of_3);
        assert_eq!(partition_for_key(c.key.as_bytes(), 12), c.partition_of_12);
    }
}

#[test]
fn signing_matches_vectors() {
    let v: Signing = load("signing.json");
    assert!(!v.cases.is_empty());
    for c in v.cases {
        let body = c.body.as_bytes();
        assert_eq!(
            signing::string_to_sign(c.t, &c.method, &c.path, body),
            c.string_to_sign
        );
        assert_eq!(
            signing::sign(c.secret.as_bytes(), c.t, &c.method, &c.path, body),
            c.header
        );
        let check = |secret: &[u8], method: &str, path: &str, body: &[u8], now: u64| {
            signing::verify(&c.header, secret, method, path, body, now, MAX_SKEW_MS)
        };
        let secret = c.secret.as_bytes();
        assert_eq!(check(secret, &c.method, &c.path, body, c.t).unwrap().t, c.t);
        // any change to what is signed is a mismatch
        let bad = [
            check(b"other", &c.method, &c.path, body, c.t),
            check(secret, "PUT", &c.path, body, c.t),
            check(secret, &c.method, "/v1/sessions/x", body, c.t),
            check(secret, &c.method, &c.path, b"{}x", c.t),
        ];
        for b in bad {
            assert_eq!(b, Err(SignatureError::Mismatch));
        }
        let stale = check(secret, &c.method, &c.path, body, c.t + MAX_SKEW_MS + 1);
        assert!(matches!(stale, Err(SignatureError::Stale { .. })));
    }
}

#[test]
fn malformed_headers_are_refused() {
    let mac = "a".repeat(64);
    for h in [
        String::new(),
        "t=1".into(),
        format!("v1={mac}"),
        format!("t=,v1={mac}"),
        format!("t=-1,v1={mac}"),
        format!("t=1,t=2,v1={mac}"),
        format!("t=1,v1={mac},v1={mac}"),
        format!("t=1,v1={}", "A".repeat(64)),
        format!("t=1,v1={}", "a".repeat(63)),
        format!("t=99999999999999999999,v1={mac}"),
        format!("t=1;v1={mac}"),
        "x".repeat(600),
    ] {
        assert!(
            matches!(Signature::parse(&h), Err(SignatureError::Malformed(_))),
            "{h:?}"
        );
    }
    let s = Signature::parse(&format!("v1={mac}, t=7, v2=zzz")).unwrap();
    assert_eq!(s.t, 7);
}

proptest! {
    #[test]
    fn parser_never_panics(h in ".{0,200}") {
        let _ = Signature::parse(&h);
    }

    #[test]
    fn headers_round_trip(t in any::<u64>().prop_map(|t| t % 10_000_000_000_000), v1 in any::<[u8; 32]>()) {
        let s = Signature { t, v1 };
        prop_assert_eq!(Signature::parse(&s.to_header()), Ok(s));
    }
}
