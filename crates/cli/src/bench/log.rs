//! `switchboard bench log`: the embedded log's append and read rates, next
//! to plain sequential writes of the same bytes.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde::Serialize;
use switchboard_log::{AppendOutcome, BatchBuilder, Durability, Log, LogConfig, StreamSettings};

/// When the log benchmark syncs.
#[derive(Debug, Clone, Copy, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// fdatasync before every append is acknowledged (group commit).
    Always,
    /// fdatasync every --interval-ms.
    Interval,
    /// no fdatasync until the end of the run.
    Never,
}

/// Options of `switchboard bench log`.
#[derive(Debug, Args)]
pub struct LogBench {
    /// Records to append.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Value bytes per record.
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// Records per appended batch.
    #[arg(long, default_value_t = 1000)]
    batch: u64,
    /// When to sync.
    #[arg(long, value_enum, default_value_t = Fsync::Always)]
    fsync: Fsync,
    /// Sync period with --fsync interval.
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,
    /// Alternating rounds of log and raw writes; medians are reported (the
    /// ratio is the median of the per-round ratios).
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Directory for the data (a fresh subdirectory is used and removed);
    /// must be on the filesystem being measured.
    #[arg(long, default_value = "./switchboard-bench")]
    data_dir: PathBuf,
}

#[derive(Debug, Serialize)]
struct LogReport {
    bench: &'static str,
    records: u64,
    record_size: usize,
    batch: u64,
    fsync: Fsync,
    rounds: u32,
    append_mb_s: f64,
    append_events_s: f64,
    read_mb_s: f64,
    read_events_s: f64,
    raw_mb_s: f64,
    ratio: f64,
    on_disk_bytes: u64,
}

/// Runs `bench log`.
pub fn run(b: &LogBench) -> Result<()> {
    log_bench(b)
}

impl LogBench {
    /// Settings for the side-by-side measurement of `bench e2e`.
    pub fn for_comparison(records: u64, record_size: usize, batch: u64, data_dir: PathBuf) -> LogBench {
        LogBench {
            records,
            record_size,
            batch,
            fsync: Fsync::Always,
            interval_ms: 100,
            rounds: 1,
            data_dir,
        }
    }
}

/// One log round's append rate, events per second.
pub fn append_rate(b: &LogBench) -> Result<f64> {
    let work = tempfile_dir(&b.data_dir)?;
    let r = log_round(b, &work.join("log"));
    std::fs::remove_dir_all(&work).ok();
    let (append, _, _) = r?;
    Ok(b.records as f64 / append.as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn log_bench(b: &LogBench) -> Result<()> {
    if b.records == 0 || b.batch == 0 || b.rounds == 0 {
        bail!("--records, --batch and --rounds must be positive");
    }
    let _data = super::DataDir::claim(&b.data_dir)?;
    let work = tempfile_dir(&b.data_dir)?;
    let payload = (b.records * b.record_size as u64) as f64;
    let (mut appends, mut reads, mut raws, mut ratios) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut on_disk = 0;
    // Files are kept until the end: deleting gigabytes mid-run (with online
    // discard) slows whatever writes next. The order alternates per round so
    // that drift on a shared machine hits both sides alike.
    for round in 0..b.rounds {
        let dir = work.join(format!("log-{round}"));
        let raw_path = work.join(format!("raw-{round}"));
        let (raw, (append, read, bytes)) = if round % 2 == 0 {
            let l = log_round(b, &dir)?;
            (raw_round(b, &raw_path)?, l)
        } else {
            let r = raw_round(b, &raw_path)?;
            (r, log_round(b, &dir)?)
        };
        eprintln!(
            "round {round}: append {:.1} MB/s, read {:.1} MB/s, raw {:.1} MB/s",
            payload / append.as_secs_f64() / 1e6,
            payload / read.as_secs_f64() / 1e6,
            payload / raw.as_secs_f64() / 1e6,
        );
        appends.push(append.as_secs_f64());
        reads.push(read.as_secs_f64());
        raws.push(raw.as_secs_f64());
        ratios.push(raw.as_secs_f64() / append.as_secs_f64());
        on_disk = bytes;
    }
    std::fs::remove_dir_all(&work).ok();
    let (append, read, raw) = (median(appends), median(reads), median(raws));
    let report = LogReport {
        bench: "log",
        records: b.records,
        record_size: b.record_size,
        batch: b.batch,
        fsync: b.fsync,
        rounds: b.rounds,
        append_mb_s: payload / append / 1e6,
        append_events_s: b.records as f64 / append,
        read_mb_s: payload / read / 1e6,
        read_events_s: b.records as f64 / read,
        raw_mb_s: payload / raw / 1e6,
        ratio: median(ratios),
        on_disk_bytes: on_disk,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn tempfile_dir(parent: &Path) -> Result<PathBuf> {
    let dir = parent.join(format!(
        "run-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Appends every record, then reads them all back. Returns the append time
/// (including the final sync), the read time, and the bytes on disk.
fn log_round(b: &LogBench, dir: &Path) -> Result<(Duration, Duration, u64)> {
    let durability = match b.fsync {
        Fsync::Always => Durability::Always,
        Fsync::Interval => Durability::Interval { ms: b.interval_ms },
        Fsync::Never => Durability::Never,
    };
    let log = Log::open(
        dir,
        LogConfig {
            durability,
            ..LogConfig::default()
        },
    )?;
    let (stream, _) = log.create_stream("bench", StreamSettings::default())?;
    let p = stream.partition(0)?.clone();
    let value = vec![b'x'; b.record_size];
    let mut builder = BatchBuilder::with_capacity((b.batch as usize) * (b.record_size + 32) + 128);
    let ts = 1_764_115_200_000i64;
    let t0 = Instant::now();
    let mut left = b.records;
    while left > 0 {
        let n = left.min(b.batch);
        builder.reset(None)?;
        for _ in 0..n {
            builder.push(ts, None, &value, []);
        }
        match p.append(&mut builder)? {
            AppendOutcome::Appended(_) => {}
            AppendOutcome::Duplicate(_) => bail!("unexpected duplicate"),
        }
        left -= n;
    }
    p.sync()?;
    let append = t0.elapsed();

    let t0 = Instant::now();
    let (mut at, mut seen, mut bytes) = (0u64, 0u64, 0usize);
    loop {
        let batch = p.read(at, 10_000, 16 << 20)?;
        if batch.records.is_empty() {
            break;
        }
        for r in &batch.records {
            bytes += r.value.len();
        }
        seen += batch.records.len() as u64;
        at = batch.next_offset;
    }
    let read = t0.elapsed();
    if seen != b.records || bytes != b.records as usize * b.record_size {
        bail!(
            "read back {seen} records and {bytes} bytes, expected {}",
            b.records
        );
    }
    let on_disk = p.size_bytes();
    log.close()?;
    Ok((append, read, on_disk))
}

/// Writes the same payload bytes with plain sequential writes at the same
/// batch boundaries, syncing as the log would.
fn raw_round(b: &LogBench, path: &Path) -> Result<Duration> {
    let chunk = vec![b'x'; (b.batch as usize) * b.record_size];
    let f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let interval = Duration::from_millis(b.interval_ms);
    let t0 = Instant::now();
    let mut last_sync = t0;
    let mut left = b.records;
    let mut pos = 0u64;
    while left > 0 {
        let n = left.min(b.batch) as usize;
        let bytes = &chunk[..n * b.record_size];
        f.write_all_at(bytes, pos)?;
        pos += bytes.len() as u64;
        match b.fsync {
            Fsync::Always => f.sync_data()?,
            Fsync::Interval if last_sync.elapsed() >= interval => {
                f.sync_data()?;
                last_sync = Instant::now();
            }
            _ => {}
        }
        left -= n as u64;
    }
    f.sync_data()?;
    let took = t0.elapsed();
    Ok(took)
}
