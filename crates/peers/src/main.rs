//! `switchboard-peers`: one workload against each system users would pick
//! instead of Switchboard (NATS JetStream, RabbitMQ, Kafka) and against
//! Switchboard itself, on 127.0.0.1, in turn, in one run. A separate binary,
//! so that the server carries no peer clients.
//!
//! The workload, identical for all: N producers and N consumers at once,
//! 1 KiB events in batches of 500 (or the peer's nearest equivalent), every
//! publish acknowledged, every consumed batch acknowledged, measured for a
//! while after a warm-up. Two durability classes: `sync` (acknowledged
//! after fsync) and `async` (acknowledged from memory or the page cache).
//! Each peer is started by the project's scripts and stopped by PID.
#![allow(missing_docs)]

mod chart;
mod kafka;
mod nats;
mod rabbit;
mod sb;
mod stats;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, ValueEnum};
use serde::{Deserialize, Serialize};

use stats::Stats;

/// Switchboard against NATS JetStream, RabbitMQ and Kafka: one workload,
/// one machine, one run.
#[derive(Debug, Parser)]
#[command(name = "switchboard-peers", version)]
struct Cli {
    /// Systems to run, in this order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "nats,rabbitmq,kafka,switchboard,switchboard-kafka"
    )]
    systems: Vec<System>,
    /// Durability classes to run.
    #[arg(long, value_delimiter = ',', default_value = "sync,async")]
    classes: Vec<Class>,
    #[command(flatten)]
    load: Load,
    /// The switchboard binary for the Switchboard rows.
    #[arg(long, default_value = "target/release/switchboard")]
    switchboard_bin: PathBuf,
    /// The project's scripts (nats, rabbitmq, kafka).
    #[arg(long, default_value = "scripts")]
    scripts: PathBuf,
    /// Where the servers keep their data during the run.
    #[arg(long, default_value = "./peers-bench")]
    work: PathBuf,
    /// Where the chart goes (PNG).
    #[arg(long, default_value = "peers.png")]
    chart: PathBuf,
    /// Run nothing: print the table and draw the chart of the JSON lines an
    /// earlier run printed, from this file.
    #[arg(long)]
    replot: Option<PathBuf>,
}

/// The load, the same for every system.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct Load {
    /// Concurrent producers.
    #[arg(long, default_value_t = 4)]
    pub producers: usize,
    /// Concurrent consumers (each on its share of the stream).
    #[arg(long, default_value_t = 4)]
    pub consumers: usize,
    /// Bytes per event.
    #[arg(long, default_value_t = 1024)]
    pub event_size: usize,
    /// Events per batch.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Batches a producer has on their way before it waits (its window).
    #[arg(long, default_value_t = 2)]
    pub window: usize,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
    /// Seconds of warm-up, not measured.
    #[arg(long, default_value_t = 5)]
    pub warmup: u64,
}

impl Load {
    /// Subjects, queues or partitions: one per producer or consumer,
    /// whichever there are more of.
    pub fn lanes(&self) -> usize {
        self.producers.max(self.consumers).max(1)
    }

    /// The lanes consumer `c` reads.
    pub fn lanes_of(&self, c: usize) -> Vec<usize> {
        (0..self.lanes()).filter(|l| l % self.consumers == c).collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum System {
    Nats,
    Rabbitmq,
    Kafka,
    Switchboard,
    SwitchboardKafka,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// Acknowledged only after fsync.
    Sync,
    /// Acknowledged from memory or the page cache.
    Async,
}

/// A started server: stopped when dropped.
pub struct Server {
    /// Processes whose CPU and memory count as the server's.
    pub pids: Vec<u32>,
    /// How it is configured for the class, for the report.
    pub config: String,
    stop: Option<Box<dyn FnOnce() + Send>>,
}

impl Server {
    pub fn new(pids: Vec<u32>, config: String, stop: impl FnOnce() + Send + 'static) -> Server {
        Server {
            pids,
            config,
            stop: Some(Box::new(stop)),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop();
        }
    }
}

/// What every system's driver offers.
pub trait Peer: Send + Sync + 'static {
    /// Publishes batches until `stats.stop`, counting each acknowledged one.
    fn produce(self: Arc<Self>, p: usize, stats: Arc<Stats>) -> tokio::task::JoinHandle<Result<()>>;
    /// Consumes and acknowledges batches until `done`.
    fn consume(
        self: Arc<Self>,
        c: usize,
        stats: Arc<Stats>,
        done: Arc<std::sync::atomic::AtomicBool>,
    ) -> tokio::task::JoinHandle<Result<()>>;
}

/// One system's figures in one class.
#[derive(Debug, Serialize, Deserialize)]
struct Row {
    system: System,
    class: Class,
    config: String,
    publish_events_s: f64,
    consume_events_s: f64,
    ack_p50_ms: f64,
    ack_p99_ms: f64,
    e2e_p50_ms: f64,
    e2e_p99_ms: f64,
    server_cpu_s: f64,
    server_peak_rss_mib: f64,
    load: Load,
}

/// Runs `peer`'s load on `server` and measures it.
async fn measure(
    system: System,
    class: Class,
    load: &Load,
    server: &Server,
    peer: Arc<dyn Peer>,
) -> Result<Row> {
    let stats = Arc::new(Stats::default());
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let consumers: Vec<_> = (0..load.consumers)
        .map(|c| peer.clone().consume(c, stats.clone(), done.clone()))
        .collect();
    let producers: Vec<_> = (0..load.producers)
        .map(|p| peer.clone().produce(p, stats.clone()))
        .collect();
    tokio::time::sleep(Duration::from_secs(load.warmup)).await;
    let cpu0: f64 = server.pids.iter().map(|p| stats::process_usage(*p).0).sum();
    stats.measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    for s in 1..=load.duration {
        tokio::time::sleep_until((t0 + Duration::from_secs(s)).into()).await;
        eprintln!(
            "  {system:?} {class:?} {s:>3}s published {:>9} consumed {:>9}",
            stats.published.load(Ordering::Relaxed),
            stats.consumed.load(Ordering::Relaxed)
        );
    }
    stats.measuring.store(false, Ordering::Relaxed);
    let window = t0.elapsed().as_secs_f64();
    let usage: Vec<(f64, u64)> = server.pids.iter().map(|p| stats::process_usage(*p)).collect();
    let cpu = usage.iter().map(|u| u.0).sum::<f64>() - cpu0;
    let rss = usage.iter().map(|u| u.1).sum::<u64>();
    stats.stop.store(true, Ordering::Relaxed);
    for p in producers {
        p.await.context("producer task")??;
    }
    // consumers catch up, then stop
    let until = Instant::now() + Duration::from_secs(20);
    while stats.consumed_all.load(Ordering::Relaxed) < stats.published_all.load(Ordering::Relaxed)
        && Instant::now() < until
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done.store(true, Ordering::Relaxed);
    for c in consumers {
        c.await.context("consumer task")??;
    }
    let (ack_p50, ack_p99) = stats.ack_ms.percentiles();
    let (e2e_p50, e2e_p99) = stats.e2e_ms.percentiles();
    Ok(Row {
        system,
        class,
        config: server.config.clone(),
        publish_events_s: (stats.published.load(Ordering::Relaxed) as f64 / window).round(),
        consume_events_s: (stats.consumed.load(Ordering::Relaxed) as f64 / window).round(),
        ack_p50_ms: ack_p50,
        ack_p99_ms: ack_p99,
        e2e_p50_ms: e2e_p50,
        e2e_p99_ms: e2e_p99,
        server_cpu_s: (cpu * 100.0).round() / 100.0,
        server_peak_rss_mib: (rss as f64 / (1 << 20) as f64 * 10.0).round() / 10.0,
        load: load.clone(),
    })
}

async fn run_one(cli: &Cli, system: System, class: Class) -> Result<Row> {
    let dir = cli.work.join(format!("{system:?}-{class:?}").to_lowercase());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let load = &cli.load;
    let (server, peer): (Server, Arc<dyn Peer>) = match system {
        System::Nats => nats::start(&cli.scripts, &dir, class, load).await?,
        System::Rabbitmq => rabbit::start(&cli.scripts, &dir, class, load).await?,
        System::Kafka => kafka::start(&cli.scripts, &dir, class, load).await?,
        System::Switchboard => sb::start(&cli.switchboard_bin, None, &dir, class, load).await?,
        System::SwitchboardKafka => {
            let k = kafka::start_broker(&cli.scripts, &dir, class)?;
            let (s, p) = sb::start(&cli.switchboard_bin, Some(&k), &dir, class, load).await?;
            // the broker's process counts as the server's too
            let mut pids = s.pids.clone();
            pids.extend(k.pids.iter().copied());
            let config = format!("{}; {}", s.config, k.config);
            (Server::new(pids, config, move || drop((s, k))), p)
        }
    };
    let row = measure(system, class, load, &server, peer).await;
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    row
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if cli.load.producers == 0 || cli.load.consumers == 0 || cli.load.batch == 0 || cli.load.event_size < 24 {
        bail!("--producers, --consumers and --batch must be positive, --event-size at least 24");
    }
    if let Some(file) = &cli.replot {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let rows: Vec<Row> = text
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()
            .with_context(|| format!("{}: not the JSON lines of a run", file.display()))?;
        print_table(&rows);
        print_verdict(&rows);
        chart::draw(&rows, &cli.systems, &cli.classes, &cli.chart)?;
        eprintln!("chart: {}", cli.chart.display());
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut rows = Vec::new();
    for class in &cli.classes {
        for system in &cli.systems {
            eprintln!("== {system:?}, {class:?}");
            match rt.block_on(run_one(&cli, *system, *class)) {
                Ok(row) => {
                    println!("{}", serde_json::to_string(&row)?);
                    rows.push(row);
                }
                Err(e) => eprintln!("{system:?} {class:?} failed: {e:#}"),
            }
        }
    }
    print_table(&rows);
    print_verdict(&rows);
    if !rows.is_empty() {
        chart::draw(&rows, &cli.systems, &cli.classes, &cli.chart)?;
        eprintln!("chart: {}", cli.chart.display());
    }
    Ok(())
}

/// Switchboard embedded against the best peer of each class.
fn print_verdict(rows: &[Row]) {
    for class in [Class::Sync, Class::Async] {
        let sb = rows
            .iter()
            .find(|r| r.class == class && r.system == System::Switchboard);
        let best = rows
            .iter()
            .filter(|r| {
                r.class == class && !matches!(r.system, System::Switchboard | System::SwitchboardKafka)
            })
            .max_by(|a, b| a.publish_events_s.total_cmp(&b.publish_events_s));
        if let (Some(sb), Some(best)) = (sb, best) {
            eprintln!(
                "{class:?}: Switchboard {:.0} events/s is {:.2}x the best peer ({}, {:.0}); ack p99 {:.1} ms against {:.1}",
                sb.publish_events_s,
                sb.publish_events_s / best.publish_events_s.max(1.0),
                chart::name(best.system),
                best.publish_events_s,
                sb.ack_p99_ms,
                best.ack_p99_ms
            );
        }
    }
}

fn print_table(rows: &[Row]) {
    eprintln!();
    eprintln!(
        "{:<18} {:<6} {:>12} {:>12} {:>14} {:>14} {:>8} {:>9}",
        "SYSTEM",
        "CLASS",
        "PUBLISH EV/S",
        "CONSUME EV/S",
        "ACK P50/P99 MS",
        "E2E P50/P99 MS",
        "CPU S",
        "RSS MIB"
    );
    for r in rows {
        eprintln!(
            "{:<18} {:<6} {:>12.0} {:>12.0} {:>14} {:>14} {:>8.1} {:>9.1}",
            format!("{:?}", r.system).to_lowercase(),
            format!("{:?}", r.class).to_lowercase(),
            r.publish_events_s,
            r.consume_events_s,
            format!("{:.1}/{:.1}", r.ack_p50_ms, r.ack_p99_ms),
            format!("{:.1}/{:.1}", r.e2e_p50_ms, r.e2e_p99_ms),
            r.server_cpu_s,
            r.server_peak_rss_mib
        );
    }
    for r in rows {
        eprintln!("{:?} {:?}: {}", r.system, r.class, r.config);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(producers: usize, consumers: usize) -> Load {
        Load {
            producers,
            consumers,
            event_size: 1024,
            batch: 500,
            window: 2,
            duration: 1,
            warmup: 0,
        }
    }

    #[test]
    fn every_lane_has_exactly_one_consumer() {
        for (p, c) in [(4, 4), (4, 2), (1, 3), (5, 2)] {
            let l = load(p, c);
            let mut seen: Vec<usize> = (0..c).flat_map(|c| l.lanes_of(c)).collect();
            seen.sort_unstable();
            assert_eq!(
                seen,
                (0..l.lanes()).collect::<Vec<_>>(),
                "{p} producers, {c} consumers"
            );
        }
    }
}
