//! Switchboard, embedded (`serve` on its own log) or on the benchmark's
//! Kafka broker: producers are the Rust client's `Writer` (a batch is a
//! block; its publish-to-ack time runs to its durable answer), consumers
//! the client's `Reader` on their lanes' partitions, acknowledging each
//! batch. Embedded, `sync` is `--fsync always` and a batch is acknowledged
//! when durable; `async` is `--fsync interval` and a batch is acknowledged
//! when the server has taken it (`durable: false`, made durable by the next
//! interval sync; the writer keeps up to 64 such batches before it waits).
//! On Kafka a batch is acknowledged when Kafka acknowledged it (`acks=all`),
//! in both classes; the class is the broker's flush setting. Encryption at
//! rest stays on, as a user would run it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use switchboard_client::wire::CreateStream;
use switchboard_client::{Client, Reader, ReaderOptions, Writer, WriterOptions};

use crate::stats::{self, Sampler, Stats};
use crate::{Class, Load, Peer, Server};

const TOKEN: &str = "peers-bench-token-0123456789abcdef";
const STREAM: &str = "bench";

pub struct Switchboard {
    client: Client,
    load: Load,
    /// Acknowledged when taken, not when durable.
    scheduled: bool,
}

/// Starts `switchboard serve` (on `kafka`'s broker when given) and creates
/// the stream.
pub async fn start(
    bin: &Path,
    kafka: Option<&Server>,
    dir: &Path,
    class: Class,
    load: &Load,
) -> Result<(Server, Arc<dyn Peer>)> {
    let fsync = match class {
        Class::Sync => "always",
        Class::Async => "interval",
    };
    let mut cmd = Command::new(bin);
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--token",
        TOKEN,
        "--fsync",
        fsync,
    ])
    .arg("--data-dir")
    .arg(dir.join("switchboard"));
    if kafka.is_some() {
        cmd.args(["--store", &format!("kafka://{}", crate::kafka::brokers())]);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (build it: cargo build --release -p switchboard)",
                bin.display()
            )
        })?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let line = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .context("switchboard did not start")?;
    let url = line
        .strip_prefix("switchboard listening on ")
        .with_context(|| format!("unexpected first line {line:?}"))?
        .to_string();
    let pid = child.id();
    let config = match (kafka, class) {
        (None, Class::Sync) => {
            "switchboard serve, embedded log, fsync=always (group commit), acknowledged when durable, encryption at rest"
        }
        (None, Class::Async) => "switchboard serve, embedded log, fsync=interval (100 ms), acknowledged when taken (durable: false), encryption at rest",
        (Some(_), _) => "switchboard serve on Kafka, acknowledged when Kafka acknowledged (acks=all), encryption at rest",
    };
    let server = Server::new(vec![pid], config.into(), move || {
        // SIGTERM, then wait: it drains
        let _ = Command::new("kill").arg(pid.to_string()).status();
        let _ = child.wait();
    });
    let client = Client::new(&url, TOKEN)?;
    client
        .create_stream(&CreateStream {
            name: STREAM.into(),
            partitions: Some(load.lanes() as u32),
            retention_ms: None,
            retention_bytes: None,
            encrypt_keys: None,
        })
        .await?;
    Ok((
        server,
        Arc::new(Switchboard {
            client,
            load: load.clone(),
            scheduled: kafka.is_none() && class == Class::Async,
        }),
    ))
}

/// A block of `n` events whose values carry the send time (16 hex digits).
fn block(n: usize, size: usize) -> bytes::Bytes {
    let value = format!(
        "\"{:016x}{}\"",
        stats::now_us(),
        "x".repeat(size.saturating_sub(18))
    );
    let mut s = String::with_capacity((value.len() + 12) * n + 2);
    s.push('[');
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        s.push_str("{\"value\":");
        s.push_str(&value);
        s.push('}');
    }
    s.push(']');
    s.into()
}

impl Peer for Switchboard {
    fn produce(self: Arc<Self>, _p: usize, stats: Arc<Stats>) -> tokio::task::JoinHandle<Result<()>> {
        tokio::spawn(async move {
            let window = if self.scheduled {
                64
            } else {
                self.load.window.max(1)
            };
            let opts = WriterOptions {
                window,
                ..WriterOptions::default()
            };
            let mut w = Writer::open(self.client.clone(), STREAM, opts).await?;
            let n = self.load.batch as u64;
            while !stats.stopped() {
                let t = std::time::Instant::now();
                w.send_encoded(block(self.load.batch, self.load.event_size))
                    .await?;
                if self.scheduled {
                    // written and committed `durable: false`: taken
                    stats.published(n, t.elapsed());
                    drop(w.take_commit_latencies());
                } else {
                    for l in w.take_commit_latencies() {
                        stats.published(n, l);
                    }
                }
            }
            w.flush().await?;
            if !self.scheduled {
                for l in w.take_commit_latencies() {
                    stats.published(n, l);
                }
            }
            w.close().await?;
            Ok(())
        })
    }

    fn consume(
        self: Arc<Self>,
        c: usize,
        stats: Arc<Stats>,
        done: Arc<AtomicBool>,
    ) -> tokio::task::JoinHandle<Result<()>> {
        tokio::spawn(async move {
            let opts = ReaderOptions {
                partitions: Some(self.load.lanes_of(c).iter().map(|l| *l as u32).collect()),
                max_events: Some(self.load.batch as u32),
                wait_ms: 100,
                ..ReaderOptions::default()
            };
            let mut r = Reader::open(self.client.clone(), STREAM, "earliest", opts).await?;
            // the answers are scanned, not parsed: a full JSON parse of
            // 0.5 MB answers would make the load generator the bottleneck
            let finder = memchr::memmem::Finder::new(b"\"value\":\"");
            let mut sampler = Sampler::default();
            while !done.load(Ordering::Relaxed) {
                let b = r.next_raw().await?;
                for at in finder.find_iter(&b.body) {
                    let at = at + finder.needle().len();
                    sampler.see(|| {
                        let hex = std::str::from_utf8(b.body.get(at..at + 16)?).ok()?;
                        u64::from_str_radix(hex, 16).ok()
                    });
                }
                if sampler.pending() > 0 {
                    r.ack().await?;
                    sampler.acked(&stats);
                }
            }
            r.close().await?;
            Ok(())
        })
    }
}
