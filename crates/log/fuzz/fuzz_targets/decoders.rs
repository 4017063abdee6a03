//! Fuzz target: every decoder of bytes the log reads from disk.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    switchboard_log::fuzzing::decode_all(data);
});
