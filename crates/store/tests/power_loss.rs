//! Acknowledged means on stable storage, whatever the fsync policy: blocks
//! appended concurrently under `interval` and `never`, then a "power loss"
//! that keeps of each segment only what the log's own syncs made durable
//! (counted through `switchboard_log::sync_probe`; a kill alone would keep
//! the page cache and prove nothing). Every block the store answered
//! `Stored` must be read back whole after recovery.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard_log::{Durability, LogConfig};
use switchboard_store::embedded::EmbeddedStore;
use switchboard_store::{Appended, Block, Store, StreamSettings};

type Synced = Arc<Mutex<HashMap<PathBuf, u64>>>;

/// One probe per process: it records syncs under every data directory, keyed
/// by path, so the two cases below can share it.
fn probe() -> Synced {
    static SYNCED: std::sync::OnceLock<Synced> = std::sync::OnceLock::new();
    SYNCED
        .get_or_init(|| {
            let synced: Synced = Arc::default();
            let s = synced.clone();
            switchboard_log::sync_probe::set(move |path, len| {
                let mut m = s.lock().unwrap();
                let e = m.entry(path.to_path_buf()).or_insert(0);
                *e = (*e).max(len);
            });
            synced
        })
        .clone()
}

/// Copies `from` to `to`, cutting every segment (`*.log`) back to its
/// synced length (nothing, if it was never synced).
fn copy_as_after_power_loss(from: &Path, to: &Path, synced: &HashMap<PathBuf, u64>) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type().unwrap().is_dir() {
            copy_as_after_power_loss(&src, &dst, synced);
            continue;
        }
        std::fs::copy(&src, &dst).unwrap();
        if src.extension().is_some_and(|x| x == "log") {
            let keep = synced.get(&src).copied().unwrap_or(0);
            let f = std::fs::OpenOptions::new().write(true).open(&dst).unwrap();
            if f.metadata().unwrap().len() > keep {
                f.set_len(keep).unwrap();
            }
        }
    }
}

/// Every record of stream `s` (three partitions), as (partition, value).
async fn read_back(store: &EmbeddedStore) -> std::collections::HashSet<(u32, String)> {
    let d = store.describe_stream("s").await.unwrap();
    let mut reader = store.open_reader("s", &[(0, 0), (1, 0), (2, 0)]).await.unwrap();
    let mut found = std::collections::HashSet::new();
    let total: u64 = d.end_offsets.iter().sum();
    while (found.len() as u64) < total {
        let f = reader.fetch(10_000, 1 << 20, Duration::ZERO).await.unwrap();
        if f.records.is_empty() {
            break;
        }
        for (p, r) in f.records {
            found.insert((p, String::from_utf8(r.value.to_vec()).unwrap()));
        }
    }
    found
}

/// A store under `durability` in a directory of its own, with the stream
/// `s` of 3 partitions.
struct Live {
    dir: tempfile::TempDir,
    live: PathBuf,
    cfg: LogConfig,
    store: Arc<EmbeddedStore>,
}

async fn live(durability: Durability) -> Live {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    let cfg = LogConfig {
        durability,
        ..LogConfig::default()
    };
    let store = Arc::new(EmbeddedStore::open(&live, cfg.clone()).unwrap());
    let settings = StreamSettings {
        partitions: 3,
        ..StreamSettings::default()
    };
    store.create_stream("s", settings).await.unwrap();
    Live {
        dir,
        live,
        cfg,
        store,
    }
}

async fn acknowledged_blocks_survive(durability: Durability) {
    let synced = probe();
    let Live {
        dir,
        live,
        cfg,
        store,
    } = live(durability).await;
    // writers append blocks until stopped; each remembers what was stored
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..4u32 {
        let (store, stop) = (store.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for b in 0u32.. {
                if stop.load(std::sync::atomic::Ordering::Acquire) {
                    break;
                }
                let mut block = Block::new(None).unwrap();
                for p in 0..3 {
                    let v = format!("w{w}-b{b}-p{p}");
                    block.records(p).push(1, None, &[v.as_bytes()], []);
                }
                match store.append("s", block).await.unwrap() {
                    Appended::Stored(_) => acked.push((w, b)),
                    other => panic!("{other:?}"),
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, std::sync::atomic::Ordering::Release);
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    assert!(acked.len() > 20, "the writers got going: {}", acked.len());
    // the power goes out: what the log synced is all there is
    let after = dir.path().join("after");
    {
        let synced = synced.lock().unwrap();
        copy_as_after_power_loss(&live, &after, &synced);
    }
    drop(store);
    let store = EmbeddedStore::open(&after, cfg).unwrap();
    let found = read_back(&store).await;
    for (w, b) in &acked {
        for p in 0..3 {
            let v = format!("w{w}-b{b}-p{p}");
            assert!(
                found.contains(&(p, v.clone())),
                "{durability:?}: block {b} of writer {w} was acknowledged, and {v} is lost"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_blocks_survive_a_power_loss_under_every_fsync_policy() {
    for durability in [
        Durability::Interval { ms: 50 },
        Durability::Never,
        Durability::Always,
    ] {
        acknowledged_blocks_survive(durability).await;
    }
}

/// Producers that submit blocks with several on their way (as a session's
/// writer does): some to one partition, which the store writes before the
/// earlier are durable, some to several. After the power loss, every block
/// answered `Stored` is whole, and `last_block` names a block whose every
/// predecessor is whole too, so a producer replaying after it loses
/// nothing.
async fn pipelined_producers_stay_exact(durability: Durability) {
    use switchboard_store::BlockProducer;
    let synced = probe();
    let Live {
        dir,
        live,
        cfg,
        store,
    } = live(durability).await;
    // block b of producer w: in partition b % 3 alone, except every fifth,
    // which spans all three; runs of same-partition blocks come in fours
    let parts = |b: u64| -> Vec<u32> {
        if b.is_multiple_of(5) {
            vec![0, 1, 2]
        } else {
            vec![((b / 4) % 3) as u32]
        }
    };
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    let mut acks = Vec::new();
    for w in 0..3u32 {
        let (store, stop) = (store.clone(), stop.clone());
        let producer = format!("w{w}");
        let epoch = store.fence_producer("s", &producer).await.unwrap().epoch;
        let acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
        acks.push((producer.clone(), acked.clone()));
        tasks.push(tokio::spawn(async move {
            let mut pending = std::collections::VecDeque::new();
            for b in 1u64.. {
                if stop.load(std::sync::atomic::Ordering::Acquire) {
                    break;
                }
                let mut block = Block::new(Some(BlockProducer {
                    id: producer.clone(),
                    epoch,
                    block: b,
                }))
                .unwrap();
                for p in parts(b) {
                    let v = format!("{producer}-b{b}-p{p}");
                    block.records(p).push(1, None, &[v.as_bytes()], []);
                }
                pending.push_back((b, store.submit("s", block).await));
                while pending.len() >= 8 {
                    let (b, f) = pending.pop_front().unwrap();
                    assert!(matches!(f.await.unwrap(), Appended::Stored(_)));
                    acked.store(b, std::sync::atomic::Ordering::Release);
                }
            }
            for (b, f) in pending {
                assert!(matches!(f.await.unwrap(), Appended::Stored(_)));
                acked.store(b, std::sync::atomic::Ordering::Release);
            }
        }));
    }
    // the power goes out while blocks are on their way: what was
    // acknowledged by then, and what the log had synced by then
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acked: Vec<(String, u64)> = acks
        .iter()
        .map(|(p, a)| (p.clone(), a.load(std::sync::atomic::Ordering::Acquire)))
        .collect();
    let at_loss: HashMap<PathBuf, u64> = synced.lock().unwrap().clone();
    let after = dir.path().join("after");
    copy_as_after_power_loss(&live, &after, &at_loss);
    stop.store(true, std::sync::atomic::Ordering::Release);
    for t in tasks {
        t.await.unwrap();
    }
    drop(store);
    let store = EmbeddedStore::open(&after, cfg).unwrap();
    let found: std::collections::HashSet<String> =
        read_back(&store).await.into_iter().map(|(_, v)| v).collect();
    for (producer, acked) in acked {
        assert!(acked > 8, "{durability:?}: {producer} got going: {acked}");
        let last = store.last_block("s", &producer).await.unwrap();
        assert!(
            last >= acked,
            "{durability:?}: {producer}: last_block {last} below acknowledged {acked}"
        );
        for b in 1..=last {
            for p in parts(b) {
                let v = format!("{producer}-b{b}-p{p}");
                assert!(
                    found.contains(&v),
                    "{durability:?}: last_block is {last}, and {v} is lost"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_producer_blocks_stay_exact_after_a_power_loss() {
    for durability in [Durability::Interval { ms: 50 }, Durability::Never] {
        pipelined_producers_stay_exact(durability).await;
    }
}
