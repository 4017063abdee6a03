//! Helpers shared by the log's integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use switchboard_log::{AppendOutcome, Partition};

/// The append's result; a duplicate is a test failure.
pub fn appended(o: AppendOutcome) -> switchboard_log::Appended {
    match o {
        AppendOutcome::Appended(a) => a,
        AppendOutcome::Duplicate(s) => panic!("unexpected duplicate {s:?}"),
    }
}

/// Every record of `p` from `from` on, read in small pieces.
pub fn read_all(p: &Partition, from: u64) -> Vec<switchboard_log::Record> {
    let mut out = Vec::new();
    let mut at = from;
    loop {
        let b = p.read(at, 37, 3000).unwrap();
        if b.records.is_empty() {
            return out;
        }
        at = b.next_offset;
        out.extend(b.records);
    }
}
