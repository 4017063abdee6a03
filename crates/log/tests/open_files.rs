//! Descriptors: a log with many partitions and segments holds a bounded
//! number of open files. (Its own test binary: other tests running in the
//! same process would open files of their own meanwhile.)
#![allow(clippy::unwrap_used)]

mod common;

use common::{appended, read_all};
use switchboard_log::{BatchBuilder, Durability, Log, LogConfig, StreamSettings};

fn batch(first: u64, n: u64, size: usize) -> BatchBuilder {
    let mut b = BatchBuilder::new();
    for i in first..first + n {
        let value = format!("{i:0>width$}", width = size);
        b.push(1_000 + i as i64, None, value.as_bytes(), []);
    }
    b
}

/// Descriptors open in this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Sealed segments' files are opened as they are read, through a bounded
/// cache: a log with many partitions and segments holds one descriptor per
/// partition for good (its active segment) plus at most the cache's bound,
/// and everything still reads back, before and after reopening.
#[test]
fn open_files_stay_bounded_however_many_segments() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        max_open_segments: 16,
        segment_bytes: 8 * 1024,
        index_interval_bytes: 256,
        durability: Durability::Never,
        ..LogConfig::default()
    };
    let parts = 40u32;
    let mut ends = vec![0u64; parts as usize];
    {
        let log = Log::open(dir.path(), cfg.clone()).unwrap();
        let (s, _) = log
            .create_stream(
                "s",
                StreamSettings {
                    partitions: parts,
                    ..StreamSettings::default()
                },
            )
            .unwrap();
        for round in 0..12 {
            for (p, end) in ends.iter_mut().enumerate() {
                let n = 10 + round;
                appended(
                    s.partition(p as u32)
                        .unwrap()
                        .append(&mut batch(*end, n, 100))
                        .unwrap(),
                );
                *end += n;
            }
        }
        log.close().unwrap();
    }
    let segments = std::fs::read_dir(dir.path().join("streams/s/0"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().unwrap() == "log")
        .count();
    assert!(segments >= 3, "small segments roll: {segments}");
    let before = open_fds();
    let log = Log::open(dir.path(), cfg).unwrap();
    let opened = open_fds() - before;
    // the active segments, the lock file and a few the log keeps
    assert!(opened <= parts as usize + 8, "{opened} descriptors after open");
    let s = log.stream("s").unwrap();
    for (p, end) in ends.iter().enumerate() {
        let recs = read_all(s.partition(p as u32).unwrap(), 0);
        assert_eq!(recs.len() as u64, *end);
        assert!(recs.iter().enumerate().all(|(i, r)| r.offset == i as u64));
        assert!(log.open_segment_files() <= 16);
    }
    let opened = open_fds() - before;
    assert!(
        opened <= parts as usize + 16 + 8,
        "{opened} descriptors after reading everything"
    );
}
