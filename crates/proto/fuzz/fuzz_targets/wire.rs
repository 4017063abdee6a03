//! Request bodies as the server parses them: never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_proto::wire;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<wire::WriteIn<'_>>(data);
    let _ = serde_json::from_slice::<wire::PublishIn<'_>>(data);
    let _ = serde_json::from_slice::<wire::Allocate>(data);
    let _ = serde_json::from_slice::<wire::Read>(data);
    let _ = switchboard_proto::value::check(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = switchboard_proto::time::parse_rfc3339_ms(s);
    }
});
