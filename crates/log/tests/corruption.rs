//! Corruption tests: flipped bytes and truncated files at many positions in
//! segment, index and checkpoint files. Opening and reading must never panic
//! and never return a record that differs from what was written at its
//! offset; damage shows as an error or as a shorter log.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use switchboard_log::{AppendOutcome, BatchBuilder, Durability, Error, Log, LogConfig, StreamSettings};

type Original = HashMap<u64, (i64, Option<Vec<u8>>, Vec<u8>)>;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 128,
        durability: Durability::Never,
        ..LogConfig::default()
    }
}

fn build(dir: &Path) -> Original {
    let log = Log::open(dir, config()).unwrap();
    let (s, _) = log.create_stream("c", StreamSettings::default()).unwrap();
    let p = s.partition(0).unwrap();
    let mut orig = Original::new();
    let mut offset = 0;
    for i in 0..90u64 {
        let mut b = if i % 3 == 0 {
            BatchBuilder::for_producer("prod", i + 1).unwrap()
        } else {
            BatchBuilder::new()
        };
        for j in 0..(1 + i % 4) {
            let key = (j % 2 == 0).then(|| format!("k{i}.{j}").into_bytes());
            let value = format!("value {i}.{j} {}", "x".repeat((i * 7 % 90) as usize)).into_bytes();
            b.push(
                i as i64 * 10 + j as i64,
                key.as_deref(),
                &value,
                [(&b"h"[..], &b"v"[..])],
            );
            orig.insert(offset, (i as i64 * 10 + j as i64, key, value));
            offset += 1;
        }
        assert!(matches!(p.append(&mut b).unwrap(), AppendOutcome::Appended(_)));
    }
    log.close().unwrap();
    orig
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// Opens the damaged copy and reads every offset; returns how many offsets
/// failed with an error.
fn check(dir: &Path, orig: &Original, what: &str) -> usize {
    let log = match Log::open(dir, config()) {
        Ok(l) => l,
        Err(e) => {
            assert!(
                matches!(e, Error::Corrupt { .. } | Error::Io { .. }),
                "{what}: {e}"
            );
            return orig.len();
        }
    };
    let p = log.stream("c").unwrap().partition(0).unwrap().clone();
    let end = p.end_offset();
    assert!(
        end <= orig.len() as u64,
        "{what}: end {end} beyond what was written"
    );
    let mut errors = 0;
    let mut at = p.start_offset();
    while at < end {
        match p.read(at, 50, 4096) {
            Ok(batch) => {
                assert!(!batch.records.is_empty(), "{what}: empty read below end");
                for r in &batch.records {
                    let (ts, key, value) = &orig[&r.offset];
                    assert_eq!(
                        (r.timestamp_ms, r.key.as_deref(), &r.value[..]),
                        (*ts, key.as_deref(), &value[..]),
                        "{what}: wrong record at offset {}",
                        r.offset
                    );
                }
                at = batch.next_offset;
            }
            Err(Error::Corrupt { path, .. }) => {
                assert!(path.starts_with(dir), "{what}: error names {path:?}");
                errors += 1;
                at += 1;
            }
            Err(e) => panic!("{what}: unexpected error {e}"),
        }
    }
    // the log still takes appends, and they read back
    let mut b = BatchBuilder::new();
    b.push(1, None, b"after", []);
    if let Ok(AppendOutcome::Appended(a)) = p.append(&mut b) {
        let r = p.read(a.base_offset, 1, 100).unwrap();
        assert_eq!(&r.records[0].value[..], b"after", "{what}");
    }
    errors
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn positions(len: u64) -> Vec<u64> {
    let step = (len / 40).max(1);
    let mut v: Vec<u64> = (0..len).step_by(step as usize).collect();
    v.extend([len.saturating_sub(1), len.saturating_sub(4), len / 2 + 1]);
    v.sort_unstable();
    v.dedup();
    v.retain(|p| *p < len);
    v
}

#[test]
fn damaged_files_never_panic_or_serve_wrong_records() {
    let tmp = tempfile::tempdir().unwrap();
    let pristine = tmp.path().join("pristine");
    let orig = build(&pristine);
    let part = Path::new("streams/c/0");
    let targets = files(&pristine.join(part));
    assert!(targets.iter().filter(|p| p.extension().unwrap() == "log").count() >= 4);
    assert!(targets.iter().any(|p| p.extension().unwrap() == "producers"));
    let (mut cases, mut with_errors) = (0, 0);
    for (n, target) in targets.iter().enumerate() {
        let name = target.file_name().unwrap().to_str().unwrap().to_string();
        let len = std::fs::metadata(target).unwrap().len();
        for pos in positions(len) {
            for truncate in [false, true] {
                let case = tmp.path().join(format!("case-{n}-{pos}-{truncate}"));
                copy_dir(&pristine, &case);
                let f = case.join(part).join(&name);
                if truncate {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&f)
                        .unwrap()
                        .set_len(pos)
                        .unwrap();
                } else {
                    let mut bytes = std::fs::read(&f).unwrap();
                    bytes[pos as usize] ^= 0xA5;
                    std::fs::write(&f, bytes).unwrap();
                }
                let what = format!(
                    "{} {name} at {pos}",
                    if truncate { "truncated" } else { "flipped" }
                );
                with_errors += usize::from(check(&case, &orig, &what) > 0);
                cases += 1;
                std::fs::remove_dir_all(&case).unwrap();
            }
        }
    }
    eprintln!("{cases} damaged copies checked; {with_errors} reported corrupt reads");
    assert!(cases > 300);
    assert!(with_errors > 0, "damage to sealed segments must be reported");
}

#[test]
fn sealed_damage_names_file_and_position() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let orig = build(&dir);
    let pdir = dir.join("streams/c/0");
    let sealed = files(&pdir)
        .into_iter()
        .find(|p| p.extension().unwrap() == "log")
        .unwrap();
    // damage the middle of the first sealed segment and drop its index, so
    // that recovery has to scan it
    let mut bytes = std::fs::read(&sealed).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&sealed, bytes).unwrap();
    std::fs::remove_file(sealed.with_extension("index")).unwrap();
    let log = Log::open(&dir, config()).unwrap();
    let p = log.stream("c").unwrap().partition(0).unwrap().clone();
    assert_eq!(
        p.end_offset(),
        orig.len() as u64,
        "sealed segments are never truncated"
    );
    let mut found = None;
    for at in 0..p.end_offset() {
        if let Err(Error::Corrupt { path, position, .. }) = p.read(at, 1, 100) {
            found = Some((path, position));
            break;
        }
    }
    let (path, position) = found.expect("some offset must report the damage");
    assert_eq!(path, sealed);
    assert!(position <= mid as u64);
    let msg = p.read(0, 10_000, 1 << 20).map(|_| ()).unwrap_err().to_string();
    assert!(msg.contains(&sealed.display().to_string()), "{msg}");
}
