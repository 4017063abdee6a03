//! Property test: random sequences of appends (plain and by producers),
//! reads, reopens, torn tails and retention, checked against a simple
//! in-memory model of a partition.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use switchboard_log::{AppendOutcome, BatchBuilder, Durability, Error, Log, LogConfig, StreamSettings};

const PARTITIONS: u32 = 2;
const RETENTION_BYTES: u64 = 12 * 1024;

#[derive(Debug, Clone)]
enum Op {
    Append {
        partition: u32,
        records: Vec<(Option<Vec<u8>>, Vec<u8>)>,
    },
    Produce {
        partition: u32,
        producer: u8,
        step: i8,
        records: u8,
    },
    Read {
        partition: u32,
        at: i64,
        max_records: usize,
        max_bytes: usize,
    },
    Reopen,
    TearTail {
        partition: u32,
        cut: u64,
    },
    Retention,
}

fn op() -> impl Strategy<Value = Op> {
    let record = (
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
        proptest::collection::vec(any::<u8>(), 0..300),
    );
    prop_oneof![
        6 => (0..PARTITIONS, proptest::collection::vec(record, 1..6)).prop_map(|(partition, records)| Op::Append { partition, records }),
        3 => (0..PARTITIONS, 0u8..3, -1i8..3, 1u8..4).prop_map(|(partition, producer, step, records)| Op::Produce { partition, producer, step, records }),
        5 => (0..PARTITIONS, -2i64..200, 1usize..40, 1usize..4000).prop_map(|(partition, at, max_records, max_bytes)| Op::Read { partition, at, max_records, max_bytes }),
        1 => Just(Op::Reopen),
        1 => (0..PARTITIONS, 1u64..400).prop_map(|(partition, cut)| Op::TearTail { partition, cut }),
        1 => Just(Op::Retention),
    ]
}

#[derive(Debug, Clone)]
struct MBatch {
    base: u64,
    len: u64,
    producer: Option<(String, u64)>,
    records: Vec<(i64, Option<Vec<u8>>, Vec<u8>)>,
}

#[derive(Debug, Default)]
struct MPartition {
    batches: Vec<MBatch>,
    start: u64,
}

impl MPartition {
    fn end(&self) -> u64 {
        self.batches
            .last()
            .map_or(self.start, |b| b.base + b.records.len() as u64)
    }

    fn record(&self, offset: u64) -> &(i64, Option<Vec<u8>>, Vec<u8>) {
        let b = self.batches.iter().rev().find(|b| b.base <= offset).unwrap();
        &b.records[(offset - b.base) as usize]
    }

    fn last_block(&self, producer: &str, forgotten: &[(String, u64)]) -> u64 {
        self.batches
            .iter()
            .filter_map(|b| b.producer.as_ref())
            .chain(forgotten.iter())
            .filter(|(p, _)| p == producer)
            .map(|(_, b)| *b)
            .max()
            .unwrap_or(0)
    }
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 64,
        durability: Durability::Never,
        ..LogConfig::default()
    }
}

fn active_segment(dir: &Path) -> (u64, PathBuf) {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .map(|p| {
            (
                p.file_stem().unwrap().to_str().unwrap().parse::<u64>().unwrap(),
                p,
            )
        })
        .max()
        .unwrap()
}

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let settings = StreamSettings {
        partitions: PARTITIONS,
        retention_ms: None,
        retention_bytes: Some(RETENTION_BYTES),
        encrypt_keys: true,
    };
    let mut log = Some(Log::open(dir.path(), config()).unwrap());
    log.as_ref().unwrap().create_stream("m", settings).unwrap();
    let mut model: Vec<MPartition> = (0..PARTITIONS).map(|_| MPartition::default()).collect();
    // producer blocks whose batches retention deleted: the log must remember them
    let mut retained: Vec<Vec<(String, u64)>> = vec![Vec::new(); PARTITIONS as usize];
    let mut ts = 0i64;
    for op in ops {
        let l = log.as_ref().unwrap();
        let stream = l.stream("m").unwrap();
        match op {
            Op::Append { partition, records } => {
                let mut b = BatchBuilder::new();
                let mut recs = Vec::new();
                for (k, v) in records {
                    ts += 1;
                    b.push(ts, k.as_deref(), &v, []);
                    recs.push((ts, k, v));
                }
                let m = &mut model[partition as usize];
                let len = b.encoded_len() as u64;
                match stream.partition(partition).unwrap().append(&mut b).unwrap() {
                    AppendOutcome::Appended(a) => assert_eq!(a.base_offset, m.end()),
                    AppendOutcome::Duplicate(_) => panic!("plain batch reported duplicate"),
                }
                let base = m.end();
                m.batches.push(MBatch {
                    base,
                    len,
                    producer: None,
                    records: recs,
                });
            }
            Op::Produce {
                partition,
                producer,
                step,
                records,
            } => {
                let id = format!("p{producer}");
                let m = &mut model[partition as usize];
                let last = m.last_block(&id, &retained[partition as usize]);
                let block = (last as i64 + step as i64).max(1) as u64;
                let mut b = BatchBuilder::for_producer(&id, block).unwrap();
                let mut recs = Vec::new();
                for i in 0..records {
                    ts += 1;
                    let v = format!("{id}/{block}/{i}").into_bytes();
                    b.push(ts, None, &v, []);
                    recs.push((ts, None, v));
                }
                let len = b.encoded_len() as u64;
                let p = stream.partition(partition).unwrap();
                match p.append(&mut b).unwrap() {
                    AppendOutcome::Appended(a) => {
                        assert!(block > last, "block {block} accepted at or below last {last}");
                        assert_eq!(a.base_offset, m.end());
                        let base = m.end();
                        m.batches.push(MBatch {
                            base,
                            len,
                            producer: Some((id.clone(), block)),
                            records: recs,
                        });
                    }
                    AppendOutcome::Duplicate(s) => {
                        assert!(block <= last, "block {block} refused above last {last}");
                        assert_eq!(s.last_block, last);
                    }
                }
                assert_eq!(
                    p.producer(&id).map_or(0, |s| s.last_block),
                    m.last_block(&id, &retained[partition as usize])
                );
            }
            Op::Read {
                partition,
                at,
                max_records,
                max_bytes,
            } => {
                let m = &model[partition as usize];
                let at = (m.start as i64 + at).max(0) as u64;
                let res = stream
                    .partition(partition)
                    .unwrap()
                    .read(at, max_records, max_bytes);
                if at < m.start || at > m.end() {
                    assert!(matches!(res, Err(Error::OffsetOutOfRange { .. })), "{res:?}");
                    continue;
                }
                let batch = res.unwrap();
                if at < m.end() {
                    assert!(
                        !batch.records.is_empty(),
                        "read at {at} below end {} returned nothing",
                        m.end()
                    );
                }
                assert!(batch.records.len() <= max_records);
                let bytes: usize = batch.records.iter().map(|r| r.encoded_len()).sum();
                assert!(batch.records.len() <= 1 || bytes <= max_bytes);
                for (i, r) in batch.records.iter().enumerate() {
                    let o = at + i as u64;
                    assert_eq!(r.offset, o);
                    let (ts, k, v) = m.record(o);
                    assert_eq!(
                        (r.timestamp_ms, r.key.as_deref(), &r.value[..]),
                        (*ts, k.as_deref(), &v[..])
                    );
                }
                assert_eq!(batch.next_offset, at + batch.records.len() as u64);
            }
            Op::Reopen => {
                drop(stream);
                log.take().unwrap().close().unwrap();
                log = Some(Log::open(dir.path(), config()).unwrap());
            }
            Op::TearTail { partition, cut } => {
                drop(stream);
                log.take().unwrap().close().unwrap();
                let pdir = dir.path().join("streams/m").join(partition.to_string());
                let (active_base, path) = active_segment(&pdir);
                let len = std::fs::metadata(&path).unwrap().len();
                let keep = len.saturating_sub(cut);
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_len(keep)
                    .unwrap();
                let m = &mut model[partition as usize];
                let mut pos = 0;
                m.batches.retain(|b| {
                    if b.base < active_base {
                        return true;
                    }
                    pos += b.len;
                    pos <= keep
                });
                log = Some(Log::open(dir.path(), config()).unwrap());
            }
            Op::Retention => {
                l.apply_retention(0).unwrap();
                for (i, m) in model.iter_mut().enumerate() {
                    let p = stream.partition(i as u32).unwrap();
                    let start = p.start_offset();
                    assert!(start >= m.start && start <= m.end());
                    if start > m.start {
                        assert!(
                            p.size_bytes() >= RETENTION_BYTES,
                            "retention deleted below the limit"
                        );
                    }
                    let (gone, kept): (Vec<_>, Vec<_>) = m.batches.drain(..).partition(|b| b.base < start);
                    assert!(
                        kept.first().is_none_or(|b| b.base == start),
                        "start {start} is not a batch boundary"
                    );
                    retained[i].extend(gone.into_iter().filter_map(|b| b.producer));
                    m.batches = kept;
                    m.start = start;
                }
            }
        }
        let l = log.as_ref().unwrap();
        let stream = l.stream("m").unwrap();
        for (i, m) in model.iter().enumerate() {
            let p = stream.partition(i as u32).unwrap();
            assert_eq!(
                (p.start_offset(), p.end_offset()),
                (m.start, m.end()),
                "partition {i}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(ops in proptest::collection::vec(op(), 1..120)) {
        run(ops);
    }
}
