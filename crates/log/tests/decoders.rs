//! The decoders of on-disk bytes (batches, index files, producer
//! checkpoints) on arbitrary and on mutated valid input: never a panic.
//! The same entry point backs the cargo-fuzz target in `crates/log/fuzz`.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use switchboard_log::fuzzing::decode_all;
use switchboard_log::BatchBuilder;

fn valid_batch() -> Vec<u8> {
    static BATCH: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BATCH.get_or_init(write_batch).clone()
}

fn write_batch() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let log = switchboard_log::Log::open(dir.path(), switchboard_log::LogConfig::default()).unwrap();
    let (s, _) = log
        .create_stream("d", switchboard_log::StreamSettings::default())
        .unwrap();
    let mut b = BatchBuilder::for_producer("p", 1).unwrap();
    b.push(1, Some(b"key"), b"value", [(&b"h"[..], &b"v"[..])]);
    b.push(2, None, b"", []);
    s.partition(0).unwrap().append(&mut b).unwrap();
    log.close().unwrap();
    std::fs::read(dir.path().join("streams/d/0/00000000000000000000.log")).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_all(&data);
    }

    #[test]
    fn mutated_batches(edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6), cut in any::<prop::sample::Index>()) {
        let mut data = valid_batch();
        for (at, byte) in edits {
            let i = at.index(data.len());
            data[i] = byte;
        }
        let keep = cut.index(data.len() + 1);
        decode_all(&data[..keep]);
        decode_all(&data);
    }
}
