//! `switchboard bench e2e`: writers and readers driving a server through
//! the Rust client's `Writer` and `Reader` (what users run is what is
//! measured), next to the embedded log's append rate measured in the same
//! run.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;
use switchboard_client::wire::CreateStream;
use switchboard_client::{Client, Reader, ReaderOptions, Writer, WriterOptions};

/// The load of `bench e2e` and `bench kafka-direct`: the same options, so
/// that their figures compare.
#[derive(Debug, Clone, Args)]
pub(super) struct Load {
    /// Concurrent writers (one client `Writer`, or one producer, each).
    #[arg(long, default_value_t = 4)]
    pub writers: usize,
    /// Concurrent readers (one client `Reader`, or one consumer, each, on
    /// disjoint partitions).
    #[arg(long, default_value_t = 4)]
    pub readers: usize,
    /// Bytes of each event's value.
    #[arg(long, default_value_t = 1024)]
    pub event_size: usize,
    /// Events per block.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Blocks each writer has sent but not yet seen durable (with 2, a
    /// block travels while the one before it is made durable). A block's
    /// commit latency runs from its first send to its durable answer.
    #[arg(long, default_value_t = 2)]
    pub window: usize,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Partitions of the benchmark stream [default: max(writers, readers)].
    #[arg(long)]
    pub partitions: Option<u32>,
}

/// Options of `switchboard bench e2e`.
#[derive(Debug, Args)]
pub struct E2eBench {
    /// A running server, or several API nodes of one cluster separated by
    /// commas (writers and readers take them in turn); without it, one
    /// server is started on a temporary data directory under --data-dir.
    #[arg(long)]
    url: Option<String>,
    /// Token for --url.
    #[arg(long, env = "SWITCHBOARD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    load: Load,
    /// Producer id per writer (exactly-once publishing) instead of plain
    /// writers.
    #[arg(long)]
    producers: bool,
    /// Publish at this many events/s in all (the writers share it, each
    /// sending its blocks evenly spaced and waiting for each to be durable)
    /// instead of as fast as they can: latencies at a given share of the
    /// peak rate.
    #[arg(long)]
    rate: Option<u64>,
    /// Events for the side-by-side `bench log` measurement, before and after
    /// (0: skip). The default matches `bench log`'s: runs much smaller than
    /// the page cache's dirty limit measure memory, not the disk.
    #[arg(long, default_value_t = 1_000_000)]
    log_records: u64,
    /// Encrypt events at rest in the started server.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    encryption: bool,
    /// Serve the started server over TLS (self-signed).
    #[arg(long)]
    tls: bool,
    /// CA certificate for an https --url.
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// Measure with a feature off and on, side by side (starts its own
    /// servers; skips the log measurement).
    #[arg(long, value_enum)]
    compare: Option<Toggle>,
    /// Off/on rounds with --compare (the order alternates).
    #[arg(long, default_value_t = 2)]
    rounds: u32,
    /// Where the started server and the log measurement keep their data.
    #[arg(long, default_value = "./switchboard-bench")]
    data_dir: PathBuf,
    /// Storage core of the started server [default: the embedded log under
    /// --data-dir]. With kafka://HOST:PORT, the server runs on topics of its
    /// own, and `bench kafka-direct` runs on the same brokers before and
    /// after, as the baseline of the ratios (instead of `bench log`).
    #[arg(long)]
    store: Option<String>,
}

impl E2eBench {
    /// Flags of the started server for --store.
    fn store_args(&self) -> Vec<String> {
        let Some(url) = &self.store else { return Vec::new() };
        let mut v = vec!["--store".to_string(), url.clone()];
        if url.starts_with("kafka://") {
            v.push("--kafka-topic-prefix".into());
            v.push(format!("bench{:08x}.", rand::random::<u32>()));
        }
        v
    }

    fn kafka_brokers(&self) -> Option<&str> {
        self.store.as_deref().and_then(switchboard_kafka::brokers_of)
    }
}

#[derive(Debug, Serialize)]
struct Report {
    bench: &'static str,
    /// The target publish rate (`--rate`), if any.
    rate_events_s: Option<u64>,
    writers: usize,
    readers: usize,
    window: usize,
    event_size: usize,
    batch: usize,
    duration_s: f64,
    published: u64,
    consumed: u64,
    publish_events_s: f64,
    consume_events_s: f64,
    publish_mb_s: f64,
    commit_p50_ms: f64,
    commit_p99_ms: f64,
    send_p50_ms: f64,
    read_p50_ms: f64,
    read_p99_ms: f64,
    ack_p50_ms: f64,
    ack_p99_ms: f64,
    e2e_p50_ms: f64,
    e2e_p99_ms: f64,
    log_append_events_s: Option<f64>,
    /// What the ratios compare with: `log` (bench log) or `kafka-direct`.
    baseline: &'static str,
    baseline_publish_events_s: Option<f64>,
    baseline_consume_events_s: Option<f64>,
    publish_ratio: Option<f64>,
    consume_ratio: Option<f64>,
}

/// Every event timestamp of a read answer, found without parsing the
/// values: a full JSON parse of 0.5 MB answers would make the load
/// generator, which shares the machine, the bottleneck. The answer layout
/// is the server's (`..."timestamp":"<RFC 3339>"...`).
fn scan_timestamps(raw: &[u8]) -> Result<Vec<i64>> {
    let mut timestamps = Vec::new();
    let finder = memchr::memmem::Finder::new(b"\"timestamp\":\"");
    for at in finder.find_iter(raw) {
        let from = at + finder.needle().len();
        let ts = raw
            .get(from..from + 24)
            .and_then(|t| std::str::from_utf8(t).ok())
            .and_then(switchboard_proto::time::parse_rfc3339_ms)
            .context("bad timestamp in read answer")?;
        timestamps.push(ts);
    }
    Ok(timestamps)
}

/// A started server, stopped (and its data removed) when dropped.
pub(super) struct Spawned {
    pub child: Child,
    dir: PathBuf,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How a started server runs.
#[derive(Debug, Clone, Copy)]
pub(super) struct ServerOpts {
    pub encryption: bool,
    pub tls: bool,
}

/// Starts `switchboard serve` on a temporary data directory under
/// `parent`, with `extra` flags (`bin`, or this binary); returns it with its
/// URL (and CA with TLS).
pub(super) fn start_server(
    parent: &std::path::Path,
    token: &str,
    opts: ServerOpts,
    extra: &[String],
    bin: Option<&std::path::Path>,
) -> Result<(Spawned, String, Option<PathBuf>)> {
    let dir = parent.join(format!("e2e-{}-{}", std::process::id(), rand::random::<u32>()));
    std::fs::create_dir_all(&dir)?;
    let exe = match bin {
        Some(b) => b.to_path_buf(),
        None => std::env::current_exe().context("finding the switchboard binary")?,
    };
    let mut child = Command::new(exe)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-level",
            "warn",
            "--token",
            token,
            "--encryption",
            if opts.encryption { "true" } else { "false" },
            "--data-dir",
        ])
        .arg(&dir)
        .args(if opts.tls { &["--tls-self-signed"][..] } else { &[] })
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the server")?;
    let stdout = child.stdout.take().context("server stdout")?;
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
    let ca = opts.tls.then(|| dir.join("tls/self-signed.crt"));
    let spawned = Spawned { child, dir };
    let url = line
        .trim()
        .strip_prefix("switchboard listening on ")
        .with_context(|| format!("unexpected server output {line:?}"))?
        .to_string();
    Ok((spawned, url, ca))
}

/// The `p` quantile of `v` (seconds or ms alike), rounded to 3 places.
pub(super) fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    (v[i] * 1000.0).round() / 1000.0
}

/// `d` in ms.
pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs the benchmark; prints progress to stderr and the report last.
pub fn run(b: E2eBench) -> Result<()> {
    if b.load.writers == 0 || b.load.batch == 0 || b.load.duration == 0 || b.load.event_size == 0 {
        bail!("--writers, --batch, --duration and --event-size must be positive");
    }
    let _data = super::DataDir::claim(&b.data_dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let opts = ServerOpts {
        encryption: b.encryption,
        tls: b.tls,
    };
    if let Some(what) = b.compare {
        return compare(&b, &rt, what, opts);
    }
    if let Some(brokers) = b.kafka_brokers() {
        // the baseline: the same load on the same brokers, no Switchboard
        let before = rt.block_on(super::kafka::direct(brokers, &b.load))?;
        let mut report = rt.block_on(drive(&b, opts))?;
        let after = rt.block_on(super::kafka::direct(brokers, &b.load))?;
        let (p, c) = ((before.0 + after.0) / 2.0, (before.1 + after.1) / 2.0);
        eprintln!(
            "kafka-direct: publish {:.0} / {:.0} events/s, consume {:.0} / {:.0} (before / after)",
            before.0, after.0, before.1, after.1
        );
        report.baseline = "kafka-direct";
        report.baseline_publish_events_s = Some(p.round());
        report.baseline_consume_events_s = Some(c.round());
        report.publish_ratio = Some((report.publish_events_s / p * 1000.0).round() / 1000.0);
        report.consume_ratio = Some((report.consume_events_s / c * 1000.0).round() / 1000.0);
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let log_before = log_rate(&b)?;
    let mut report = rt.block_on(drive(&b, opts))?;
    let log_after = log_rate(&b)?;
    if let (Some(x), Some(y)) = (log_before, log_after) {
        let log = (x + y) / 2.0;
        eprintln!("log append: {x:.0} events/s before, {y:.0} after");
        report.log_append_events_s = Some(log.round());
        report.publish_ratio = Some((report.publish_events_s / log * 1000.0).round() / 1000.0);
        report.consume_ratio = Some((report.consume_events_s / log * 1000.0).round() / 1000.0);
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// What `--compare` toggles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Toggle {
    /// Encryption at rest off, then on.
    Encryption,
    /// Plain HTTP, then TLS.
    Tls,
}

#[derive(Debug, Serialize)]
struct Side {
    publish_events_s: f64,
    consume_events_s: f64,
    commit_p99_ms: f64,
    ack_p50_ms: f64,
    read_p50_ms: f64,
}

#[derive(Debug, Serialize)]
struct CompareReport {
    bench: &'static str,
    compare: Toggle,
    rounds: u32,
    off: Side,
    on: Side,
    publish_ratio: f64,
    consume_ratio: f64,
}

/// Runs the feature off and on, alternating the order each round (off,
/// on, on, off, ...) so that drift on a shared machine hits both alike.
fn compare(b: &E2eBench, rt: &tokio::runtime::Runtime, what: Toggle, base: ServerOpts) -> Result<()> {
    if b.url.is_some() {
        bail!("--compare starts its own servers: leave out --url");
    }
    let set = |on: bool| match what {
        Toggle::Encryption => ServerOpts {
            encryption: on,
            ..base
        },
        Toggle::Tls => ServerOpts { tls: on, ..base },
    };
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 0..b.rounds.max(1) {
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for flag in order {
            eprintln!("round {round}: {what:?} {}", if flag { "on" } else { "off" });
            let r = rt.block_on(drive(b, set(flag)))?;
            if flag {
                on.push(r)
            } else {
                off.push(r)
            }
        }
    }
    let side = |v: &[Report]| {
        let n = v.len() as f64;
        Side {
            publish_events_s: (v.iter().map(|r| r.publish_events_s).sum::<f64>() / n).round(),
            consume_events_s: (v.iter().map(|r| r.consume_events_s).sum::<f64>() / n).round(),
            commit_p99_ms: v.iter().map(|r| r.commit_p99_ms).fold(0.0, f64::max),
            ack_p50_ms: v.iter().map(|r| r.ack_p50_ms).sum::<f64>() / n,
            read_p50_ms: v.iter().map(|r| r.read_p50_ms).sum::<f64>() / n,
        }
    };
    let (off, on) = (side(&off), side(&on));
    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            (a / b * 1000.0).round() / 1000.0
        } else {
            0.0
        }
    };
    let report = CompareReport {
        bench: "e2e-compare",
        compare: what,
        rounds: b.rounds.max(1),
        publish_ratio: ratio(on.publish_events_s, off.publish_events_s),
        consume_ratio: ratio(on.consume_events_s, off.consume_events_s),
        off,
        on,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn log_rate(b: &E2eBench) -> Result<Option<f64>> {
    if b.log_records == 0 {
        return Ok(None);
    }
    let lb = super::log::LogBench::for_comparison(
        b.log_records,
        b.load.event_size,
        b.load.batch as u64,
        b.data_dir.clone(),
    );
    super::log::append_rate(&lb).map(Some)
}

async fn drive(b: &E2eBench, opts: ServerOpts) -> Result<Report> {
    let token = b
        .token
        .clone()
        .unwrap_or_else(|| format!("bench-{}", rand::random::<u64>()));
    let (_server, url, ca) = match &b.url {
        Some(u) => (None, u.clone(), b.ca_cert.clone()),
        None => {
            let (s, u, ca) = start_server(&b.data_dir, &token, opts, &b.store_args(), None)?;
            (Some(s), u, ca)
        }
    };
    let ca_cert_pem = match &ca {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    // several URLs (API nodes of one cluster): writers and readers take
    // them in turn
    let clients = url
        .split(',')
        .map(|u| {
            Client::with_options(
                u.trim(),
                &token,
                switchboard_client::ClientOptions {
                    accept_compressed: false,
                    ca_cert_pem: ca_cert_pem.clone(),
                },
            )
        })
        .collect::<Result<Vec<Client>, _>>()?;
    let client = clients[0].clone();
    let partitions = b
        .load
        .partitions
        .unwrap_or(b.load.writers.max(b.load.readers) as u32);
    let stream = format!("bench-e2e-{}", rand::random::<u32>());
    client
        .create_stream(&CreateStream {
            name: stream.clone(),
            partitions: Some(partitions),
            retention_ms: None,
            retention_bytes: None,
            encrypt_keys: None,
        })
        .await?;
    let value = format!("\"{}\"", "x".repeat(b.load.event_size.saturating_sub(2)));
    let one = format!("{{\"value\":{value}}}");
    let mut events_json = String::with_capacity((one.len() + 1) * b.load.batch + 2);
    events_json.push('[');
    for i in 0..b.load.batch {
        if i > 0 {
            events_json.push(',');
        }
        events_json.push_str(&one);
    }
    events_json.push(']');
    let events_json = bytes::Bytes::from(events_json);

    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let consumed = Arc::new(AtomicU64::new(0));
    let readers_done = Arc::new(AtomicBool::new(false));

    // readers first, from the start of the empty stream
    let mut readers = Vec::new();
    for r in 0..b.load.readers {
        let parts: Vec<u32> = (0..partitions)
            .filter(|p| *p as usize % b.load.readers == r)
            .collect();
        if parts.is_empty() {
            continue;
        }
        let opts = ReaderOptions {
            partitions: Some(parts),
            ..ReaderOptions::default()
        };
        let c = clients[r % clients.len()].clone();
        let mut reader = Reader::open(c, &stream, "earliest", opts).await?;
        let (consumed, done) = (consumed.clone(), readers_done.clone());
        readers.push(tokio::spawn(async move {
            let (mut reads, mut acks, mut e2e) = (Vec::new(), Vec::new(), Vec::new());
            let mut last = Instant::now();
            // a read that finds events buffered is timed (wait_ms 0); after
            // an empty one, the next read long-polls and is not timed
            let mut waiting = false;
            while !done.load(Ordering::Acquire) {
                reader.set_wait_ms(if waiting { 200 } else { 0 });
                let t = Instant::now();
                let raw = reader.next_raw().await?;
                let took = t.elapsed();
                let timestamps = scan_timestamps(&raw.body)?;
                if timestamps.is_empty() {
                    waiting = true;
                    continue;
                }
                if !waiting {
                    reads.push(ms(took));
                }
                waiting = false;
                let now = switchboard_proto::time::now_ms();
                for ts in &timestamps {
                    e2e.push((now - ts) as f64);
                }
                let t = Instant::now();
                reader.ack().await?;
                acks.push(ms(t.elapsed()));
                consumed.fetch_add(timestamps.len() as u64, Ordering::Relaxed);
                last = Instant::now();
            }
            let _ = reader.close().await;
            anyhow::Ok((reads, acks, e2e, last))
        }));
    }

    let start = Instant::now();
    // with --rate, each writer sends a block every `pace`
    let pace = match b.rate {
        Some(0) => bail!("--rate must be positive"),
        Some(r) => Some(Duration::from_secs_f64(
            (b.load.batch * b.load.writers) as f64 / r as f64,
        )),
        None => None,
    };
    let mut writers = Vec::new();
    for i in 0..b.load.writers {
        let opts = WriterOptions {
            producer: b.producers.then(|| format!("bench-{i}")),
            window: b.load.window.max(1),
            ..WriterOptions::default()
        };
        let mut writer = Writer::open(clients[i % clients.len()].clone(), &stream, opts).await?;
        let (stop, published, events_json, n) = (
            stop.clone(),
            published.clone(),
            events_json.clone(),
            b.load.batch as u64,
        );
        writers.push(tokio::spawn(async move {
            let (mut sends, mut commits) = (Vec::new(), Vec::new());
            let mut counted = 0u64;
            let mut count = |writer: &mut Writer, commits: &mut Vec<f64>| {
                for l in writer.take_commit_latencies() {
                    commits.push(ms(l));
                }
                let d = writer.durable_through();
                published.fetch_add((d - counted) * n, Ordering::Relaxed);
                counted = d;
            };
            let mut next = tokio::time::Instant::now();
            while !stop.load(Ordering::Acquire) {
                if let Some(p) = pace {
                    tokio::time::sleep_until(next).await;
                    next += p;
                }
                let t = Instant::now();
                writer.send_encoded(events_json.clone()).await?;
                sends.push(ms(t.elapsed()));
                if pace.is_some() {
                    // paced: learn at once when the block is durable (the
                    // window would only look when it is full, a pace later)
                    writer.flush().await?;
                }
                count(&mut writer, &mut commits);
            }
            writer.flush().await?;
            count(&mut writer, &mut commits);
            writer.close().await?;
            anyhow::Ok((sends, commits))
        }));
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    while start.elapsed() < Duration::from_secs(b.load.duration) {
        tick.tick().await;
        eprintln!(
            "{:>3}s published {:>9} consumed {:>9}",
            start.elapsed().as_secs(),
            published.load(Ordering::Relaxed),
            consumed.load(Ordering::Relaxed)
        );
    }
    stop.store(true, Ordering::Release);
    let (mut sends, mut commits) = (Vec::new(), Vec::new());
    for w in writers {
        let (a, c) = w.await??;
        sends.extend(a);
        commits.extend(c);
    }
    let publish_time = start.elapsed();
    let total = published.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(30);
    while b.load.readers > 0 && consumed.load(Ordering::Relaxed) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    readers_done.store(true, Ordering::Release);
    let (mut reads, mut acks, mut e2e) = (Vec::new(), Vec::new(), Vec::new());
    let mut last = start;
    for r in readers {
        let (a, b2, c, l) = r.await??;
        reads.extend(a);
        acks.extend(b2);
        e2e.extend(c);
        last = last.max(l);
    }
    let got = consumed.load(Ordering::Relaxed);
    let consume_time = last.duration_since(start).max(Duration::from_millis(1));
    // the benchmark's stream goes (a store like Kafka keeps it otherwise)
    if let Err(e) = client.delete_stream(&stream).await {
        eprintln!("could not delete the benchmark stream {stream}: {e}");
    }
    let publish_events_s = total as f64 / publish_time.as_secs_f64();
    Ok(Report {
        bench: "e2e",
        rate_events_s: b.rate,
        writers: b.load.writers,
        readers: b.load.readers,
        window: b.load.window,
        event_size: b.load.event_size,
        batch: b.load.batch,
        duration_s: publish_time.as_secs_f64(),
        published: total,
        consumed: got,
        publish_events_s: publish_events_s.round(),
        consume_events_s: (got as f64 / consume_time.as_secs_f64()).round(),
        publish_mb_s: (publish_events_s * b.load.event_size as f64 / 1e6 * 10.0).round() / 10.0,
        commit_p50_ms: pct(&mut commits, 0.5),
        commit_p99_ms: pct(&mut commits, 0.99),
        send_p50_ms: pct(&mut sends, 0.5),
        read_p50_ms: pct(&mut reads, 0.5),
        read_p99_ms: pct(&mut reads, 0.99),
        ack_p50_ms: pct(&mut acks, 0.5),
        ack_p99_ms: pct(&mut acks, 0.99),
        e2e_p50_ms: pct(&mut e2e, 0.5),
        e2e_p99_ms: pct(&mut e2e, 0.99),
        log_append_events_s: None,
        baseline: "log",
        baseline_publish_events_s: None,
        baseline_consume_events_s: None,
        publish_ratio: None,
        consume_ratio: None,
    })
}
