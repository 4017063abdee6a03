//! The cursor decoder on arbitrary text: never a panic, never a cursor that
//! was not sealed with the key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_session::cursor::CursorCodec;

fuzz_target!(|data: &[u8]| {
    let codec = CursorCodec::new(switchboard_rpc::keys::ServerKeys::from_master(&[9u8; 32]));
    if let Ok(text) = std::str::from_utf8(data) {
        // random input cannot pass the AES-GCM tag
        assert!(codec.open(text).is_err());
    }
});
