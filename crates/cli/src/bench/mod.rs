//! `switchboard bench ...`: benchmarks that print one JSON object as their
//! last line, so runs can be compared and recorded in docs/BENCHMARKS.md.
//! `e2e` measures the log's rate beside its own with `log`'s code; `log`
//! knows nothing of `e2e`.

use anyhow::Result;
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
