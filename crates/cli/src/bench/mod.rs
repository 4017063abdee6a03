//! `switchboard bench ...`: benchmarks that print one JSON object as their
//! last line, so runs can be compared and recorded in docs/BENCHMARKS.md.
//! `e2e` measures the log's rate beside its own with `log`'s code; `log`
//! knows nothing of `e2e`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Subcommand;

pub mod e2e;
pub mod kafka;
pub mod log;
pub mod sessions;

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum Bench {
    /// Embedded log: append then read back N records, and write the same
    /// bytes with plain sequential writes plus fdatasync for comparison.
    Log(log::LogBench),
    /// The whole service over HTTP: writers and readers against a server,
    /// beside the log's append rate measured in the same run.
    E2e(e2e::E2eBench),
    /// Many open sessions on one node (a tenth of them writers) on a stream
    /// with data: the server's memory, allocation and read latency.
    Sessions(sessions::SessionsBench),
    /// Apache Kafka with no Switchboard in between (rdkafka producers and
    /// assign-based consumers), for the Kafka store's comparisons.
    KafkaDirect(kafka::KafkaBench),
}

/// Runs a benchmark.
pub fn run(bench: Bench) -> Result<()> {
    match bench {
        Bench::Log(b) => log::run(&b),
        Bench::E2e(b) => e2e::run(b),
        Bench::Sessions(b) => sessions::run(b),
        Bench::KafkaDirect(b) => kafka::run(b),
    }
}

/// A benchmark's `--data-dir`: made when missing, and removed at the end
/// when the benchmark made it and left it empty (each run works in a
/// directory of its own inside it, which it removes), so that a benchmark
/// leaves nothing behind in the directory it was started from.
pub(crate) struct DataDir {
    path: PathBuf,
    made: bool,
}

impl DataDir {
    pub(crate) fn claim(path: &Path) -> Result<DataDir> {
        let made = !path.exists();
        std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(DataDir {
            path: path.to_path_buf(),
            made,
        })
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if self.made {
            // fails, as it should, when something was left inside
            let _ = std::fs::remove_dir(&self.path);
        }
    }
}
