//! Crash test: a child process appends durable batches and reports each
//! acknowledged one; it is killed with SIGKILL at random moments, many times.
//! After every kill the log is reopened and checked: every acknowledged
//! record reads back byte-identical, offsets are contiguous, every producer
//! block is stored exactly once, and appending continues.
//!
//! The child is this test binary itself, re-run on the ignored test
//! `crash_child` with `SWITCHBOARD_CRASH_DIR` set.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::Rng;
use switchboard_log::{AppendOutcome, BatchBuilder, Durability, Log, LogConfig, StreamSettings};

const PARTITIONS: u32 = 2;
const KILLS: usize = 40;

fn config() -> LogConfig {
    LogConfig {
        // small segments, so kills also land around segment rolls
        segment_bytes: 64 * 1024,
        durability: Durability::Always,
        ..LogConfig::default()
    }
}

fn records_in(block: u64) -> u64 {
    1 + block % 7
}

/// The value of record `idx` of `block` in `partition`: self-describing, with
/// a body that differs per record so that misplaced bytes are caught.
fn value(partition: u32, block: u64, idx: u64) -> Vec<u8> {
    let mut v = format!("{partition}:{block}:{idx}:").into_bytes();
    let mut x =
        ((partition as u64 + 1) * 0x9E37_79B9_7F4A_7C15) ^ block.wrapping_mul(0xBF58_476D_1CE4_E5B9) ^ idx;
    let len = 50 + (x % 700) as usize;
    for _ in 0..len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(x as u8);
    }
    v
}

fn parse_value(v: &[u8]) -> Option<(u32, u64, u64)> {
    let mut parts = v.splitn(4, |b| *b == b':');
    let p = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let b = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let i = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    Some((p, b, i))
}

/// The child: append producer blocks to every partition from two threads,
/// printing `ack <partition> <block> <base offset>` once each is durable.
#[test]
#[ignore = "run as a child process by crash_kill_and_recover"]
fn crash_child() {
    let Ok(dir) = std::env::var("SWITCHBOARD_CRASH_DIR") else {
        return;
    };
    let log = Log::open(&dir, config()).unwrap();
    let (stream, _) = log
        .create_stream(
            "crash",
            StreamSettings {
                partitions: PARTITIONS,
                ..StreamSettings::default()
            },
        )
        .unwrap();
    let out = std::sync::Arc::new(std::sync::Mutex::new(std::io::stdout()));
    std::thread::scope(|s| {
        for t in 0..PARTITIONS {
            let p = stream.partition(t).unwrap().clone();
            let out = out.clone();
            s.spawn(move || {
                let producer = format!("w{t}");
                let mut block = p.producer(&producer).map_or(0, |s| s.last_block);
                let mut b = BatchBuilder::new();
                loop {
                    block += 1;
                    b.reset(Some((&producer, block))).unwrap();
                    for idx in 0..records_in(block) {
                        b.push(block as i64, None, &value(t, block, idx), []);
                    }
                    match p.append(&mut b).unwrap() {
                        AppendOutcome::Appended(a) => {
                            assert!(a.durable);
                            let mut o = out.lock().unwrap();
                            writeln!(o, "ack {t} {block} {}", a.base_offset).unwrap();
                            o.flush().unwrap();
                        }
                        AppendOutcome::Duplicate(s) => panic!("fresh block {block} refused: {s:?}"),
                    }
                }
            });
        }
    });
}

#[test]
fn crash_kill_and_recover() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::thread_rng();
    // (partition, block) -> base offset, for every acknowledged block
    let mut acked: HashMap<(u32, u64), u64> = HashMap::new();
    let mut appended_after_reopen = 0;
    for round in 0..KILLS {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("SWITCHBOARD_CRASH_DIR", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let f: Vec<&str> = line.split(' ').collect();
                if f.len() == 4 && f[0] == "ack" {
                    acks.push((
                        f[1].parse::<u32>().unwrap(),
                        f[2].parse::<u64>().unwrap(),
                        f[3].parse::<u64>().unwrap(),
                    ));
                }
            }
            acks
        });
        std::thread::sleep(Duration::from_millis(rng.gen_range(5..200)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let acks = reader.join().unwrap();
        appended_after_reopen += usize::from(!acks.is_empty());
        for (p, block, base) in acks {
            assert!(
                acked.insert((p, block), base).is_none(),
                "block {block} acknowledged twice"
            );
        }

        let log = Log::open(dir.path(), config()).unwrap();
        let Ok(stream) = log.stream("crash") else {
            assert!(acked.is_empty(), "round {round}: stream lost");
            continue;
        };
        for t in 0..PARTITIONS {
            let p = stream.partition(t).unwrap();
            let mut seen: HashMap<u64, u64> = HashMap::new();
            let mut at = p.start_offset();
            loop {
                let batch = p.read(at, 1000, 1 << 20).unwrap();
                if batch.records.is_empty() {
                    break;
                }
                for r in &batch.records {
                    assert_eq!(r.offset, at, "offsets are contiguous");
                    at += 1;
                    let (rp, block, idx) = parse_value(&r.value).expect("well-formed record");
                    assert_eq!(rp, t);
                    assert_eq!(
                        &r.value[..],
                        &value(t, block, idx)[..],
                        "record bytes at offset {}",
                        r.offset
                    );
                    *seen.entry(block).or_default() += 1;
                    if let Some(base) = acked.get(&(t, block)) {
                        assert_eq!(r.offset, base + idx, "acknowledged record moved");
                    }
                }
            }
            assert_eq!(at, p.end_offset());
            for (&(ap, block), _) in acked.iter().filter(|((ap, _), _)| *ap == t) {
                assert_eq!(
                    seen.get(&block),
                    Some(&records_in(block)),
                    "round {round}: partition {ap} block {block} lost"
                );
            }
            for (block, n) in &seen {
                assert_eq!(*n, records_in(*block), "block {block} stored {n} times its size");
            }
            let last = p.producer(&format!("w{t}")).map_or(0, |s| s.last_block);
            assert_eq!(
                Some(last),
                seen.keys().max().copied().or(Some(0)),
                "producer state is exact"
            );
        }
        log.close().unwrap();
    }
    eprintln!(
        "{KILLS} kills, {} blocks acknowledged, appends continued in {appended_after_reopen} rounds",
        acked.len()
    );
    assert!(
        acked.len() > KILLS,
        "too few appends were acknowledged: {}",
        acked.len()
    );
    assert!(
        appended_after_reopen > KILLS / 2,
        "appending did not continue after recovery"
    );
}
