//! Behaviour of the public API on a real directory.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{appended, read_all};
use switchboard_log::{
    AppendOutcome, BatchBuilder, Durability, Error, Log, LogConfig, Partition, StreamSettings,
};

fn small_config(durability: Durability) -> LogConfig {
    LogConfig {
        segment_bytes: 8 * 1024,
        index_interval_bytes: 256,
        durability,
        ..LogConfig::default()
    }
}

fn settings(partitions: u32) -> StreamSettings {
    StreamSettings {
        partitions,
        ..StreamSettings::default()
    }
}

fn batch(first: u64, n: u64, size: usize) -> BatchBuilder {
    let mut b = BatchBuilder::new();
    for i in first..first + n {
        let key = format!("key-{i}");
        let value = format!("{i:0>width$}", width = size);
        b.push(
            1_000 + i as i64,
            Some(key.as_bytes()),
            value.as_bytes(),
            [(&b"n"[..], key.as_bytes())],
        );
    }
    b
}

#[test]
fn streams_are_created_listed_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let (s, created) = log.create_stream("orders.eu_1-x", settings(3)).unwrap();
    assert!(created);
    assert_eq!(s.partitions().len(), 3);
    let (_, created) = log.create_stream("orders.eu_1-x", settings(3)).unwrap();
    assert!(!created, "same settings is not a new stream");
    assert!(matches!(
        log.create_stream("orders.eu_1-x", settings(4)),
        Err(Error::StreamSettingsConflict(_))
    ));
    for bad in ["", "a/b", "a b", "ü", &"x".repeat(201)] {
        assert!(
            matches!(
                log.create_stream(bad, settings(1)),
                Err(Error::InvalidStreamName(_))
            ),
            "{bad:?}"
        );
    }
    for n in [0, 1025] {
        assert!(matches!(
            log.create_stream("p", settings(n)),
            Err(Error::InvalidArgument {
                name: "partitions",
                ..
            })
        ));
    }
    assert!(log.stream("p").is_err(), "a failed create leaves nothing");
    // names that are special to the filesystem are still just names
    for odd in [".", "..", "-", "_.."] {
        log.create_stream(odd, settings(1)).unwrap();
    }
    let (big, _) = log.create_stream("wide", settings(1024)).unwrap();
    assert_eq!(big.partitions().len(), 1024);
    drop(log);

    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let names: Vec<_> = log.streams().iter().map(|s| s.name().to_string()).collect();
    assert_eq!(names, vec!["-", ".", "..", "_..", "orders.eu_1-x", "wide"]);
    let p = log.stream("..").unwrap().partition(0).unwrap().clone();
    appended(p.append(&mut batch(0, 3, 10)).unwrap());
    log.delete_stream("..").unwrap();
    assert!(
        matches!(p.read(0, 10, 1000), Err(Error::Closed)),
        "deleted partitions refuse calls"
    );
    assert!(matches!(log.delete_stream(".."), Err(Error::StreamNotFound(_))));
    assert!(
        !dir.path().join("streams").join("%2E%2E").exists(),
        "delete removes the files"
    );
    assert!(dir.path().join("streams").join("%2E").exists());
    log.create_stream("..", settings(2)).unwrap();
    assert_eq!(log.stream("..").unwrap().partition(0).unwrap().end_offset(), 0);
}

#[test]
fn appends_read_back_across_segments_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut next = 0;
    {
        let log = Log::open(dir.path(), small_config(Durability::Always)).unwrap();
        let (s, _) = log.create_stream("s", settings(2)).unwrap();
        let p = s.partition(1).unwrap();
        for n in [1, 5, 17, 2, 40, 3, 9].repeat(3) {
            let a = appended(p.append(&mut batch(next, n, 100)).unwrap());
            assert_eq!(
                (a.base_offset, a.last_offset, a.durable),
                (next, next + n - 1, true)
            );
            next += n;
        }
        assert_eq!(p.end_offset(), next);
        assert!(matches!(s.partition(2), Err(Error::PartitionNotFound { .. })));
        log.close().unwrap();
    }
    let segments = std::fs::read_dir(dir.path().join("streams/s/1"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().unwrap() == "log")
        .count();
    assert!(segments > 3, "small segments roll: {segments}");
    let log = Log::open(dir.path(), small_config(Durability::Always)).unwrap();
    let p = log.stream("s").unwrap().partition(1).unwrap().clone();
    assert_eq!(p.end_offset(), next);
    for from in [0, 1, 6, 23, 24, 60, next - 1, next] {
        let recs = read_all(&p, from);
        assert_eq!(recs.len() as u64, next - from);
        for (i, r) in recs.iter().enumerate() {
            let o = from + i as u64;
            assert_eq!(r.offset, o);
            assert_eq!(r.timestamp_ms, 1_000 + o as i64);
            assert_eq!(r.key.as_deref(), Some(format!("key-{o}").as_bytes()));
            assert_eq!(r.value, format!("{o:0>100}").as_bytes());
            assert_eq!(
                r.headers.iter().collect::<Vec<_>>(),
                vec![(&b"n"[..], format!("key-{o}").as_bytes())]
            );
        }
    }
    assert!(matches!(
        p.read(next + 1, 1, 1),
        Err(Error::OffsetOutOfRange { .. })
    ));
    // limits: record count, bytes (but always one record)
    assert_eq!(p.read(0, 4, 1 << 20).unwrap().records.len(), 4);
    assert_eq!(p.read(0, 100, 1).unwrap().records.len(), 1);
    assert!(p.read(0, 0, 100).unwrap().records.is_empty());
    // appending continues after reopen
    let a = appended(p.append(&mut batch(next, 2, 100)).unwrap());
    assert_eq!(a.base_offset, next);
}

#[test]
fn bad_appends_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        max_batch_bytes: 4096,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), cfg).unwrap();
    let (s, _) = log.create_stream("s", settings(1)).unwrap();
    let p = s.partition(0).unwrap();
    assert!(matches!(
        p.append(&mut BatchBuilder::new()),
        Err(Error::EmptyBatch)
    ));
    assert!(matches!(
        p.append(&mut batch(0, 1, 5000)),
        Err(Error::BatchTooLarge { .. })
    ));
    assert_eq!(p.end_offset(), 0);
    assert_eq!(p.size_bytes(), 0);
}

#[test]
fn producers_are_deduplicated_exactly_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(Durability::Always);
    let produce = |p: &Partition, id: &str, block: u64| {
        let mut pb = BatchBuilder::for_producer(id, block).unwrap();
        for i in 0..3 {
            pb.push(i, None, format!("{id}-{block}-{i}").as_bytes(), []);
        }
        p.append(&mut pb).unwrap()
    };
    {
        let log = Log::open(dir.path(), cfg.clone()).unwrap();
        let (s, _) = log.create_stream("s", settings(1)).unwrap();
        let p = s.partition(0).unwrap();
        assert!(matches!(produce(p, "a", 1), AppendOutcome::Appended(_)));
        assert!(
            matches!(produce(p, "a", 3), AppendOutcome::Appended(_)),
            "gaps are allowed per partition"
        );
        assert!(matches!(produce(p, "a", 2), AppendOutcome::Duplicate(s) if s.last_block == 3));
        assert!(
            matches!(produce(p, "a", 3), AppendOutcome::Duplicate(s) if s.first_offset == 3 && s.last_offset == 5)
        );
        assert!(matches!(produce(p, "b", 1), AppendOutcome::Appended(_)));
        assert_eq!(p.producer("a").unwrap().last_block, 3);
        assert_eq!(p.producer("nobody"), None);
        // enough plain data to roll segments (snapshots) in between
        for k in 0..20 {
            p.append(&mut batch(100 + k * 10, 10, 100)).unwrap();
        }
        assert!(matches!(produce(p, "b", 2), AppendOutcome::Appended(_)));
        drop(log);
    }
    // without the checkpoint of the clean close, recovery rebuilds from the
    // checkpoint of the last segment roll plus a scan
    let mut snapshots: Vec<_> = std::fs::read_dir(dir.path().join("streams/s/0"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().unwrap() == "producers")
        .collect();
    snapshots.sort();
    assert_eq!(snapshots.len(), 2);
    std::fs::remove_file(snapshots.pop().unwrap()).unwrap();
    let log = Log::open(dir.path(), cfg.clone()).unwrap();
    let p = log.stream("s").unwrap().partition(0).unwrap().clone();
    assert_eq!(p.producer("a").unwrap().last_block, 3);
    assert_eq!(p.producer("b").unwrap().last_block, 2);
    assert!(matches!(produce(&p, "b", 2), AppendOutcome::Duplicate(_)));
    assert!(matches!(produce(&p, "a", 4), AppendOutcome::Appended(_)));
    drop(log);
    // damaged snapshots fall back to scanning the segments
    for e in std::fs::read_dir(dir.path().join("streams/s/0")).unwrap() {
        let path = e.unwrap().path();
        if path.extension().unwrap() == "producers" {
            std::fs::write(&path, b"garbage").unwrap();
        }
    }
    let log = Log::open(dir.path(), cfg).unwrap();
    let p = log.stream("s").unwrap().partition(0).unwrap().clone();
    assert_eq!(p.producer("a").unwrap().last_block, 4);
    assert_eq!(p.producer("b").unwrap().last_block, 2);
}

#[test]
fn a_second_process_cannot_open_the_same_log() {
    let dir = tempfile::tempdir().unwrap();
    let _log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let err = Log::open(dir.path(), LogConfig::default()).unwrap_err();
    assert!(err.to_string().contains("in use"), "{err}");
}

#[test]
fn retention_by_size_and_age() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(Durability::Never)).unwrap();
    let by_size = StreamSettings {
        partitions: 1,
        retention_ms: None,
        retention_bytes: Some(20 * 1024),
        encrypt_keys: true,
    };
    let (s, _) = log.create_stream("sized", by_size).unwrap();
    let p = s.partition(0).unwrap().clone();
    let mut next = 0;
    for _ in 0..100 {
        p.append(&mut batch(next, 5, 100)).unwrap();
        next += 5;
    }
    let before = p.size_bytes();
    let deleted = log.apply_retention(0).unwrap();
    assert!(deleted > 0);
    let start = p.start_offset();
    assert!(start > 0);
    assert!(p.size_bytes() >= 20 * 1024 && p.size_bytes() < before);
    assert!(
        p.size_bytes() < 20 * 1024 + 8 * 1024 + 2048,
        "at most one segment over the limit"
    );
    match p.read(start - 1, 1, 100) {
        Err(Error::OffsetOutOfRange {
            requested,
            start: s,
            end,
        }) => {
            assert_eq!((requested, s, end), (start - 1, start, next));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(read_all(&p, start).len() as u64, next - start);

    let by_age = StreamSettings {
        partitions: 1,
        retention_ms: Some(1000),
        retention_bytes: None,
        encrypt_keys: true,
    };
    let (s, _) = log.create_stream("aged", by_age).unwrap();
    let q = s.partition(0).unwrap().clone();
    // timestamps are 1000 + offset; retention keeps 1000 ms
    for i in 0..50 {
        q.append(&mut batch(i * 5, 5, 100)).unwrap();
    }
    log.apply_retention(1_000 + 1_000 + 120).unwrap();
    let partial = q.start_offset();
    assert!(
        partial > 0 && partial < 250,
        "only segments entirely older go: {partial}"
    );
    log.apply_retention(100_000).unwrap();
    assert_eq!(
        q.start_offset(),
        250,
        "expired active segment is sealed and deleted too"
    );
    assert_eq!(q.end_offset(), 250);
    assert!(q.read(250, 10, 100).unwrap().records.is_empty());
    q.append(&mut batch(250, 1, 10)).unwrap();
    drop(log);
    let log = Log::open(dir.path(), small_config(Durability::Never)).unwrap();
    let q = log.stream("aged").unwrap().partition(0).unwrap().clone();
    assert_eq!((q.start_offset(), q.end_offset()), (250, 251));
    assert_eq!(
        log.stream("sized").unwrap().partition(0).unwrap().start_offset(),
        start
    );
}

#[test]
fn durability_modes_report_what_is_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(
        dir.path(),
        LogConfig {
            durability: Durability::Never,
            ..LogConfig::default()
        },
    )
    .unwrap();
    let (s, _) = log.create_stream("s", settings(1)).unwrap();
    let p = s.partition(0).unwrap();
    let a = appended(p.append(&mut batch(0, 3, 10)).unwrap());
    assert!(!a.durable);
    assert_eq!(p.end_offset(), 3, "readers see unsynced data in never mode");
    assert_eq!(p.durable_end(), 0);
    p.sync().unwrap();
    assert_eq!(p.durable_end(), 3);
    drop(log);

    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        durability: Durability::Interval { ms: 5 },
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), cfg).unwrap();
    let (s, _) = log.create_stream("s", settings(1)).unwrap();
    let p = s.partition(0).unwrap();
    p.append(&mut batch(0, 3, 10)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.durable_end() < 3 {
        assert!(Instant::now() < deadline, "interval sync never happened");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn readers_wait_for_new_records_without_polling() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let (s, _) = log.create_stream("s", settings(1)).unwrap();
    let p = s.partition(0).unwrap().clone();
    let t0 = Instant::now();
    assert!(!p.wait_for(0, Duration::from_millis(50)));
    assert!(t0.elapsed() >= Duration::from_millis(50));
    let writer = {
        let p = Arc::clone(&p);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            p.append(&mut batch(0, 1, 10)).unwrap();
        })
    };
    assert!(p.wait_for(0, Duration::from_secs(10)));
    assert_eq!(p.read(0, 10, 100).unwrap().records.len(), 1);
    writer.join().unwrap();
}

#[test]
fn concurrent_appends_share_fsyncs_and_stay_dense() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(Durability::Always)).unwrap();
    let (s, _) = log.create_stream("s", settings(1)).unwrap();
    let p = s.partition(0).unwrap().clone();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let p = p.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                for i in 0..50 {
                    let mut b = BatchBuilder::new();
                    b.push(0, None, format!("{t}-{i}").as_bytes(), []);
                    b.push(0, None, format!("{t}-{i}").as_bytes(), []);
                    got.push(appended(p.append(&mut b).unwrap()).base_offset);
                }
                got
            })
        })
        .collect();
    let mut bases: Vec<u64> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    bases.sort_unstable();
    assert_eq!(bases, (0..200).map(|i| i * 2).collect::<Vec<_>>());
    let recs = read_all(&p, 0);
    assert_eq!(recs.len(), 400);
    for pair in recs.chunks(2) {
        assert_eq!(pair[0].value, pair[1].value, "a batch is never interleaved");
    }
}

#[test]
fn timestamps_find_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config(Durability::Always)).unwrap();
    let (s, _) = log.create_stream("s", settings(1)).unwrap();
    let p = s.partition(0).unwrap();
    let mut next = 0;
    for _ in 0..60 {
        p.append(&mut batch(next, 7, 80)).unwrap();
        next += 7;
    }
    // timestamp of offset o is 1000 + o
    for (ts, want) in [
        (0, 0),
        (1_000, 0),
        (1_001, 1),
        (1_200, 200),
        (1_000 + next as i64, next),
        (i64::MAX, next),
    ] {
        assert_eq!(p.offset_for_timestamp(ts).unwrap(), want, "ts {ts}");
    }
}

#[test]
fn block_parts_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig::default();
    {
        let log = Log::open(dir.path(), cfg.clone()).unwrap();
        let (s, _) = log.create_stream("parts", StreamSettings::default()).unwrap();
        let mut b = BatchBuilder::for_producer("p1", 7).unwrap();
        b.set_block_parts(3);
        b.push(1, None, b"v", []);
        s.partition(0).unwrap().append(&mut b).unwrap();
        assert_eq!(s.partition(0).unwrap().producer("p1").unwrap().block_parts, 3);
        log.close().unwrap();
    }
    let log = Log::open(dir.path(), cfg).unwrap();
    let p = log
        .stream("parts")
        .unwrap()
        .partition(0)
        .unwrap()
        .producer("p1")
        .unwrap();
    assert_eq!((p.last_block, p.block_parts), (7, 3));
}
