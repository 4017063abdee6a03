//! `switchboard bench sessions`: many open sessions on one node, as a
//! central eventing system has them (thousands of mostly idle consumers,
//! some producers), on a stream that holds data. Measures the server's
//! memory (RSS) as sessions are opened and used, how fast allocation
//! answers, and how fast a read answers on any of them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use futures::StreamExt;
use serde::Serialize;
use switchboard_client::wire::{Allocate, CreateStream, Mode, Read};
use switchboard_client::{Client, Session};

use super::e2e::{ms, pct, start_server, ServerOpts};

/// Options of `switchboard bench sessions`.
#[derive(Debug, Args)]
pub struct SessionsBench {
    /// Sessions to open; a tenth of them (see --writer-share) are writers.
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// Share of the sessions that are writers (each with a producer id).
    #[arg(long, default_value_t = 0.1)]
    writer_share: f64,
    /// Partitions of the stream.
    #[arg(long, default_value_t = 16)]
    partitions: u32,
    /// Events stored in the stream before sessions open.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Bytes of each event's value.
    #[arg(long, default_value_t = 256)]
    event_size: usize,
    /// `max_events` of each read.
    #[arg(long, default_value_t = 100)]
    read_events: u32,
    /// Reads on random readers after every reader has read once.
    #[arg(long, default_value_t = 20_000)]
    reads: usize,
    /// Blocks each writer writes and commits durable.
    #[arg(long, default_value_t = 1)]
    writer_blocks: u64,
    /// Events per block, each with its own key (so a block spreads over up
    /// to that many partitions).
    #[arg(long, default_value_t = 10)]
    block_events: usize,
    /// Calls in flight at once (allocations, first reads, commits).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Reads in flight at once in the timed random reads (low, so that
    /// they measure a read's latency, not the queue of a saturated node).
    #[arg(long, default_value_t = 4)]
    read_concurrency: usize,
    /// Encrypt events at rest in the server.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    encryption: bool,
    /// An extra flag for the started server (repeatable), e.g.
    /// `--server-arg=--memory-budget=268435456`.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// The server binary to start (another build, for a side-by-side
    /// comparison) [default: this one].
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Where the started server keeps its data.
    #[arg(long, default_value = "./switchboard-bench")]
    data_dir: PathBuf,
}

#[derive(Debug, Default, Serialize)]
struct Latency {
    n: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn latency(mut v: Vec<f64>) -> Latency {
    Latency {
        n: v.len(),
        p50_ms: pct(&mut v, 0.50),
        p99_ms: pct(&mut v, 0.99),
        max_ms: pct(&mut v, 1.0),
    }
}

#[derive(Debug, Serialize)]
struct Rss {
    started_mib: f64,
    with_data_mib: f64,
    sessions_open_mib: f64,
    after_first_reads_mib: f64,
    after_all_reads_mib: f64,
    after_idle_mib: f64,
    peak_mib: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    bench: &'static str,
    sessions: usize,
    readers: usize,
    writers: usize,
    partitions: u32,
    events: usize,
    event_size: usize,
    encryption: bool,
    rss: Rss,
    rss_per_open_session_kib: f64,
    /// (budget used, read-ahead) MiB, as the server's gauges say.
    held_after_first_reads_mib: (f64, f64),
    held_after_all_reads_mib: (f64, f64),
    held_after_idle_mib: (f64, f64),
    memory_budget_mib: f64,
    allocate: Latency,
    first_read: Latency,
    read: Latency,
    commit: Latency,
    elapsed_s: f64,
}

/// The server's resident set (and its peak), MiB.
fn rss(pid: u32) -> Result<(f64, f64)> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading the server's status")?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok((kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0))
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Runs the benchmark; prints progress to stderr and the report last.
pub fn run(b: SessionsBench) -> Result<()> {
    if b.sessions == 0 || !(0.0..=1.0).contains(&b.writer_share) || b.concurrency == 0 || b.partitions == 0 {
        bail!("--sessions, --concurrency and --partitions must be positive, --writer-share within 0..=1");
    }
    let _data = super::DataDir::claim(&b.data_dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = rt.block_on(drive(&b))?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Runs `n` calls of `f`, `concurrency` at a time; returns each one's
/// latency, ms, and its value.
async fn timed<T, F, Fut>(n: usize, concurrency: usize, f: F) -> Result<(Vec<f64>, Vec<T>)>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut lat = Vec::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    let mut calls = futures::stream::iter(0..n)
        .map(|i| {
            let call = f(i);
            async move {
                let t = Instant::now();
                let v = call.await;
                (ms(t.elapsed()), v)
            }
        })
        .buffer_unordered(concurrency);
    while let Some((took, v)) = calls.next().await {
        lat.push(took);
        out.push(v?);
    }
    Ok((lat, out))
}

async fn drive(b: &SessionsBench) -> Result<Report> {
    let started = Instant::now();
    let token = format!("bench-{}", rand::random::<u64>());
    let mut extra = vec![
        format!("--max-sessions={}", b.sessions + 1000),
        // no session expires while the benchmark runs
        "--lease-ms=3600000".to_string(),
    ];
    extra.extend(b.server_args.iter().cloned());
    let opts = ServerOpts {
        encryption: b.encryption,
        tls: false,
    };
    let (server, url, _) = start_server(&b.data_dir, &token, opts, &extra, b.server_bin.as_deref())?;
    let pid = server.child.id();
    let client = Client::new(&url, &token)?;
    let (started_mib, _) = rss(pid)?;

    let stream = format!("bench-sessions-{}", rand::random::<u32>());
    client
        .create_stream(&CreateStream {
            name: stream.clone(),
            partitions: Some(b.partitions),
            retention_ms: None,
            retention_bytes: None,
            encrypt_keys: None,
        })
        .await?;
    eprintln!("storing {} events of {} bytes", b.events, b.event_size);
    let value = "x".repeat(b.event_size.saturating_sub(2));
    let chunk = 1000usize;
    let mut stored = 0;
    while stored < b.events {
        let n = chunk.min(b.events - stored);
        let events: Vec<String> = (stored..stored + n)
            .map(|i| format!(r#"{{"key":"k{i}","value":"{value}"}}"#))
            .collect();
        let body = format!(r#"{{"events":[{}]}}"#, events.join(","));
        client
            .publish_raw(&stream, bytes::Bytes::from(body), None)
            .await?;
        stored += n;
    }
    let (with_data_mib, _) = rss(pid)?;

    let writers = ((b.sessions as f64) * b.writer_share).round() as usize;
    let readers = b.sessions - writers;
    eprintln!("allocating {readers} readers and {writers} writers");
    let (alloc_lat, sessions) = timed(b.sessions, b.concurrency, |i| {
        let (client, stream) = (client.clone(), stream.clone());
        async move {
            let writer = i % b.sessions.div_ceil(writers.max(1)) == 0 && writers > 0;
            let req = Allocate {
                stream,
                mode: if writer { Mode::Write } else { Mode::Read },
                cursor: (!writer).then(|| "earliest".to_string()),
                partitions: None,
                producer: writer.then(|| format!("bench-producer-{i}")),
            };
            let a = client.allocate(&req).await?;
            Ok((writer, Session::new(&a)))
        }
    })
    .await?;
    let (writer_sessions, reader_sessions): (Vec<_>, Vec<_>) = sessions.into_iter().partition(|s| s.0);
    let reader_sessions: Arc<Vec<Session>> = Arc::new(reader_sessions.into_iter().map(|s| s.1).collect());
    let writer_sessions: Vec<Session> = writer_sessions.into_iter().map(|s| s.1).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (sessions_open_mib, _) = rss(pid)?;

    let read = Read {
        max_events: Some(b.read_events),
        max_bytes: None,
        wait_ms: Some(0),
    };
    let read_ack = |s: usize| {
        let (client, sessions, read) = (client.clone(), reader_sessions.clone(), read);
        async move {
            let s = &sessions[s];
            let t = Instant::now();
            let a = client.read(s, &read).await?;
            let took = ms(t.elapsed());
            if a.batch > 0 {
                client.ack(s, a.batch).await?;
            }
            Ok(took)
        }
    };
    eprintln!("a first read on every reader");
    let first = timed_reads(reader_sessions.len(), b.concurrency, &read_ack, |i| i).await?;
    let (after_first_reads_mib, _) = rss(pid)?;
    let held_first = gauges(&url).await;
    eprintln!("{} reads on random readers", b.reads);
    let picks: Vec<usize> = (0..b.reads)
        .map(|_| rand::random::<u64>() as usize % reader_sessions.len().max(1))
        .collect();
    let again = if reader_sessions.is_empty() {
        Vec::new()
    } else {
        timed_reads(b.reads, b.read_concurrency.max(1), &read_ack, |i| picks[i]).await?
    };
    eprintln!(
        "{} block(s) of {} events, each committed durable, on every writer",
        b.writer_blocks, b.block_events
    );
    let events_json: Arc<String> = Arc::new(format!(
        "[{}]",
        (0..b.block_events)
            .map(|i| format!(r#"{{"key":"e{i}","value":"{value}"}}"#))
            .collect::<Vec<_>>()
            .join(",")
    ));
    let writer_sessions = Arc::new(writer_sessions);
    let blocks = b.writer_blocks.max(1);
    let (_, commit_lat) = timed(writer_sessions.len(), b.concurrency, |i| {
        let (client, sessions, events) = (client.clone(), writer_sessions.clone(), events_json.clone());
        async move {
            let s = &sessions[i];
            let mut lat = Vec::with_capacity(blocks as usize);
            for block in 1..=blocks {
                let body = switchboard_client::write_body(block, events.as_bytes());
                // a write the node has no memory for is retried when it says
                loop {
                    match client.write(s, body.clone()).await {
                        Err(switchboard_client::Error::Api {
                            retry_after_ms: Some(ms),
                            ..
                        }) => tokio::time::sleep(Duration::from_millis(ms)).await,
                        other => {
                            other?;
                            break;
                        }
                    }
                }
                let t = Instant::now();
                client.commit(s, block, true).await?;
                lat.push(ms(t.elapsed()));
            }
            Ok(lat)
        }
    })
    .await?;
    let commit_lat: Vec<f64> = commit_lat.into_iter().flatten().collect();
    let (after_all_reads_mib, _) = rss(pid)?;
    let held_all = gauges(&url).await;
    // read-ahead of idle readers is given back after 5 s, and jemalloc
    // gives freed memory back to the system within about 10 s more
    eprintln!("idle for 16 s");
    tokio::time::sleep(Duration::from_secs(16)).await;
    let (after_idle_mib, peak_mib) = rss(pid)?;
    let held_idle = gauges(&url).await;
    let budget = budget_of(&b.server_args) as f64;
    drop(server);
    Ok(Report {
        bench: "sessions",
        sessions: b.sessions,
        readers,
        writers,
        partitions: b.partitions,
        events: b.events,
        event_size: b.event_size,
        encryption: b.encryption,
        rss_per_open_session_kib: round1((sessions_open_mib - with_data_mib) * 1024.0 / b.sessions as f64),
        held_after_first_reads_mib: held_first,
        held_after_all_reads_mib: held_all,
        held_after_idle_mib: held_idle,
        rss: Rss {
            started_mib: round1(started_mib),
            with_data_mib: round1(with_data_mib),
            sessions_open_mib: round1(sessions_open_mib),
            after_first_reads_mib: round1(after_first_reads_mib),
            after_all_reads_mib: round1(after_all_reads_mib),
            after_idle_mib: round1(after_idle_mib),
            peak_mib: round1(peak_mib),
        },
        memory_budget_mib: round1(budget / (1 << 20) as f64),
        allocate: latency(alloc_lat),
        first_read: latency(first),
        read: latency(again),
        commit: latency(commit_lat),
        elapsed_s: round1(started.elapsed().as_secs_f64()),
    })
}

/// `n` reads (each followed by its ack, untimed) on the readers `pick`
/// chooses; returns the reads' latencies, ms.
async fn timed_reads<F, Fut>(
    n: usize,
    concurrency: usize,
    read_ack: &F,
    pick: impl Fn(usize) -> usize,
) -> Result<Vec<f64>>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<f64>>,
{
    let (_, reads) = timed(n, concurrency, |i| read_ack(pick(i))).await?;
    Ok(reads)
}

/// The server's memory gauges from `/metrics` (plain HTTP): bytes used
/// against the budget, and held by read-ahead, MiB.
async fn gauges(url: &str) -> (f64, f64) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let text = async {
        let host = url.strip_prefix("http://")?;
        let mut c = tokio::net::TcpStream::connect(host).await.ok()?;
        c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.ok()?;
        let mut out = String::new();
        c.read_to_string(&mut out).await.ok()?;
        Some(out)
    }
    .await
    .unwrap_or_default();
    let gauge = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0.0, |v| round1(v / f64::from(1 << 20)))
    };
    (
        gauge("switchboard_memory_used_bytes"),
        gauge("switchboard_readahead_bytes"),
    )
}

/// The budget the server runs with: the one given, else its default here.
fn budget_of(args: &[String]) -> u64 {
    args.iter()
        .find_map(|a| a.strip_prefix("--memory-budget="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            switchboard_session::budget::default_budget(
                switchboard_session::budget::machine_memory().unwrap_or(4 << 30),
            )
        })
}
