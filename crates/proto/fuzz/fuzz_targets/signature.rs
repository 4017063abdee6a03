//! The signature header parser and verifier on arbitrary headers and bodies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_proto::signing;

fuzz_target!(|data: &[u8]| {
    let (header, body) = data.split_at(data.len().min(200));
    if let Ok(h) = std::str::from_utf8(header) {
        if let Ok(sig) = signing::Signature::parse(h) {
            // a parsed header renders back to something that parses the same
            assert_eq!(signing::Signature::parse(&sig.to_header()).ok(), Some(sig));
        }
        let _ = signing::verify(h, b"secret", "POST", "/v1/sessions/x/read", body, 1_700_000_000_000, signing::MAX_SKEW_MS);
    }
});
