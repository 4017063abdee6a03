//! The data and admin commands: thin over `switchboard-client`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use switchboard_client::wire::{CreateStream, Event};
use switchboard_client::{Client, Reader, ReaderOptions, Writer, WriterOptions};

/// Where the server is and how to authenticate.
#[derive(Debug, Args)]
#[command(next_help_heading = "Connection")]
pub struct Conn {
    /// Server URL (`http://` is assumed when no scheme is given).
    #[arg(
        long,
        env = "SWITCHBOARD_URL",
        default_value = "http://127.0.0.1:7700",
        global = true
    )]
    url: String,
    /// Bearer token. Default: the token file of the local data directory.
    #[arg(long, env = "SWITCHBOARD_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// CA certificate (PEM) to trust for an https URL (for a server started
    /// with --tls-self-signed: <data-dir>/tls/self-signed.crt).
    #[arg(long, env = "SWITCHBOARD_CA_CERT", global = true)]
    ca_cert: Option<PathBuf>,
    /// Local data directory, to find admin.token when no token is given.
    #[arg(long, env = "SWITCHBOARD_DATA_DIR", default_value = "./data", global = true)]
    data_dir: PathBuf,
}

impl Conn {
    /// The URL with a scheme: `host:port` means `http://host:port`.
    fn url(&self) -> String {
        let u = self.url.trim().trim_end_matches('/');
        if u.contains("://") {
            u.to_string()
        } else {
            format!("http://{u}")
        }
    }

    /// Adds to a failed command what to check, when the server could not
    /// be reached or did not speak plain HTTP.
    pub fn explain(&self, r: Result<()>) -> Result<()> {
        let Err(e) = r else { return Ok(()) };
        let Some(client_err) = e
            .chain()
            .find_map(|c| c.downcast_ref::<switchboard_client::Error>())
        else {
            return Err(e);
        };
        let url = self.url();
        if client_err.is_connect() {
            return Err(e.context(format!(
                "cannot reach {url}: is `switchboard serve` running there? (set --url or SWITCHBOARD_URL)"
            )));
        }
        if client_err.is_transport() {
            if let Some(rest) = url.strip_prefix("http://") {
                if speaks_tls(rest) {
                    return Err(e.context(format!(
                        "{url} answers with TLS, not plain HTTP: use https://{rest} (and --ca-cert for a self-signed certificate)"
                    )));
                }
            }
        }
        Err(e)
    }

    fn client(&self) -> Result<Client> {
        let token = match &self.token {
            Some(t) => t.clone(),
            None => {
                let path = self.data_dir.join(crate::serve::TOKEN_FILE);
                std::fs::read_to_string(&path)
                    .with_context(|| {
                        format!(
                            "no token: pass --token or SWITCHBOARD_TOKEN, or run where {} exists",
                            path.display()
                        )
                    })?
                    .trim()
                    .to_string()
            }
        };
        let ca_cert_pem = match &self.ca_cert {
            Some(p) => Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?),
            None => None,
        };
        let opts = switchboard_client::ClientOptions {
            ca_cert_pem,
            ..Default::default()
        };
        Ok(Client::with_options(&self.url(), &token, opts)?)
    }
}

/// Whether the server at `authority` (`host:port/...`) answers a plain
/// HTTP request with a TLS record: an alert (21) or a handshake (22)
/// record, TLS 1.0 to 1.3.
fn speaks_tls(authority: &str) -> bool {
    use std::io::Read;
    use std::net::ToSocketAddrs;
    let host = authority.split('/').next().unwrap_or(authority);
    let with_port = if host
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    let Some(addr) = with_port.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
        return false;
    };
    let timeout = std::time::Duration::from_secs(2);
    let Ok(mut tcp) = std::net::TcpStream::connect_timeout(&addr, timeout) else {
        return false;
    };
    let _ = tcp.set_read_timeout(Some(timeout));
    let _ = tcp.set_write_timeout(Some(timeout));
    if tcp.write_all(b"GET / HTTP/1.1\r\nHost: probe\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 2];
    matches!(tcp.read_exact(&mut head), Ok(())) && matches!(head, [21 | 22, 3])
}

/// `switchboard stream ...`.
#[derive(Debug, Subcommand)]
pub enum StreamCmd {
    /// Create a stream (no change if it exists with the same settings).
    Create {
        /// Stream name.
        name: String,
        /// Partition count (1 to 1024).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
        partitions: u32,
        /// Delete data older than this many ms (at least 1).
        #[arg(long, value_parser = at_least_one)]
        retention_ms: Option<u64>,
        /// Keep each partition under about this many bytes (at least 1).
        #[arg(long, value_parser = at_least_one)]
        retention_bytes: Option<u64>,
        /// Keep event keys in the clear at rest (values and headers stay
        /// encrypted), for compaction and tooling that read keys.
        #[arg(long)]
        keys_in_clear: bool,
    },
    /// List streams.
    List,
    /// Settings and offsets of a stream, as JSON.
    Describe {
        /// Stream name.
        name: String,
    },
    /// Delete a stream and its data.
    Delete {
        /// Stream name.
        name: String,
    },
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Runs a `stream` command.
pub fn stream(conn: &Conn, cmd: StreamCmd) -> Result<()> {
    let client = conn.client()?;
    runtime()?.block_on(async move {
        let mut out = std::io::stdout().lock();
        match cmd {
            StreamCmd::Create {
                name,
                partitions,
                retention_ms,
                retention_bytes,
                keys_in_clear,
            } => {
                let (s, created) = client
                    .create_stream(&CreateStream {
                        name,
                        partitions: Some(partitions),
                        retention_ms,
                        retention_bytes,
                        encrypt_keys: keys_in_clear.then_some(false),
                    })
                    .await?;
                writeln!(out, "{}", serde_json::to_string(&s)?)?;
                if !created {
                    eprintln!("stream {} already existed with these settings", s.name);
                }
            }
            StreamCmd::List => {
                let l = client.list_streams().await?;
                writeln!(
                    out,
                    "{:<40} {:>10} {:>14} {:>16}",
                    "NAME", "PARTITIONS", "RETENTION_MS", "RETENTION_BYTES"
                )?;
                let dash = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
                for s in l.streams {
                    writeln!(
                        out,
                        "{:<40} {:>10} {:>14} {:>16}",
                        s.name,
                        s.partitions,
                        dash(s.retention_ms),
                        dash(s.retention_bytes)
                    )?;
                }
            }
            StreamCmd::Describe { name } => {
                let d = client.describe_stream(&name).await?;
                writeln!(out, "{}", serde_json::to_string_pretty(&d)?)?;
            }
            StreamCmd::Delete { name } => {
                client.delete_stream(&name).await?;
                eprintln!("deleted {name}");
            }
        }
        Ok(())
    })
}

/// `switchboard cluster`: every node and broker the API node knows, as a
/// table (`--json`: as the API answers).
pub fn cluster(conn: &Conn, json: bool) -> Result<()> {
    let client = conn.client()?;
    runtime()?.block_on(async move {
        let c = client.cluster().await?;
        let mut out = std::io::stdout().lock();
        if json {
            writeln!(out, "{}", serde_json::to_string_pretty(&c)?)?;
            return Ok(());
        }
        let mib = |b: u64| format!("{:.1}", b as f64 / (1u64 << 20) as f64);
        writeln!(
            out,
            "{:<24} {:<12} {:<18} {:<22} {:>9} {:>16} {:>6}  LAST SEEN",
            "NODE", "ROLE", "STATE", "BROKER", "SESSIONS", "MEMORY MiB", "LOAD"
        )?;
        for n in &c.nodes {
            let memory = if n.memory_budget > 0 {
                format!("{}/{}", mib(n.memory_bytes), mib(n.memory_budget))
            } else {
                "-".into()
            };
            writeln!(
                out,
                "{:<24} {:<12} {:<18} {:<22} {:>9} {:>16} {:>6}  {}",
                n.id,
                n.role,
                n.state,
                n.broker.as_deref().unwrap_or("-"),
                n.sessions,
                memory,
                n.load,
                n.last_seen
            )?;
        }
        if !c.brokers.is_empty() {
            writeln!(out)?;
            writeln!(
                out,
                "{:<6} {:<22} {:<6} {:>9}",
                "SHARD", "BROKER", "STATE", "IN FLIGHT"
            )?;
            for b in &c.brokers {
                writeln!(
                    out,
                    "{:<6} {:<22} {:<6} {:>9}",
                    b.shard, b.address, b.state, b.in_flight
                )?;
            }
        }
        Ok(())
    })
}

/// Options of `switchboard publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Stream name.
    stream: String,
    /// Publish one event with this value (JSON text; anything that is not
    /// JSON is sent as a string). Without it, NDJSON events are read from
    /// stdin, one `{"key"?, "headers"?, "value" | "value_b64"}` per line.
    #[arg(long)]
    value: Option<String>,
    /// Key of the --value event.
    #[arg(long)]
    key: Option<String>,
    /// Header of the --value event, `name=value` (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Events per block (1 to 10000).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    batch: u32,
    /// Producer id: exactly-once across retries and restarts.
    #[arg(long)]
    producer: Option<String>,
}

/// Runs `publish`.
pub fn publish(conn: &Conn, a: PublishArgs) -> Result<()> {
    let client = conn.client()?;
    runtime()?.block_on(async move {
        if let Some(v) = &a.value {
            let mut e = match Event::raw_json(v.clone()) {
                Ok(e) => e,
                Err(_) => Event::json(v)?,
            };
            e.key = a.key.clone();
            for h in &a.headers {
                let (n, v) = h
                    .split_once('=')
                    .with_context(|| format!("--header {h:?}: expected name=value"))?;
                e.headers.insert(n.to_string(), v.to_string());
            }
            let answer = client.publish(&a.stream, &[e], None).await?;
            println!("{}", serde_json::to_string(&answer)?);
            return Ok(());
        }
        let opts = WriterOptions {
            producer: a.producer.clone(),
            ..WriterOptions::default()
        };
        if std::io::stdin().is_terminal() {
            eprintln!(
                "reading events from stdin as NDJSON, one {{\"key\"?, \"headers\"?, \"value\" | \"value_b64\"}} per line; \
                 end with Ctrl-D (or pass --value to publish one event)"
            );
        }
        // one plain call first: a server that is not there, or a stream
        // that does not exist, is said at once instead of after the
        // session's retries
        client.describe_stream(&a.stream).await?;
        let mut w = Writer::open(client, &a.stream, opts).await?;
        let progress = std::io::stderr().is_terminal().then(|| {
            let p = indicatif::ProgressBar::new_spinner();
            p.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {pos} events published ({per_sec})")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            p
        });
        let stdin = std::io::stdin().lock();
        let mut block: Vec<Event> = Vec::with_capacity(a.batch as usize);
        let mut total = 0u64;
        for (i, line) in stdin.lines().enumerate() {
            let line = line.context("reading stdin")?;
            if line.trim().is_empty() {
                continue;
            }
            let e: Event = serde_json::from_str(&line).with_context(|| {
                format!(
                    "stdin line {}: not an event: each line is one {{\"key\"?, \"headers\"?, \"value\" | \"value_b64\"}} object",
                    i + 1
                )
            })?;
            block.push(e);
            if block.len() == a.batch as usize {
                w.send(&block).await?;
                total += block.len() as u64;
                block.clear();
                if let Some(p) = &progress {
                    p.set_position(total);
                }
            }
        }
        if !block.is_empty() {
            w.send(&block).await?;
            total += block.len() as u64;
        }
        w.close().await?;
        if let Some(p) = progress {
            p.finish_and_clear();
        }
        eprintln!("published {total} events to {}", a.stream);
        Ok(())
    })
}

/// Options of `switchboard tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// Stream name.
    stream: String,
    /// Where to start: earliest, latest or a cursor. A cursor file, when it
    /// exists, takes precedence.
    #[arg(long, default_value = "earliest")]
    from: String,
    /// Keep waiting for new events instead of stopping at the end.
    #[arg(long)]
    follow: bool,
    /// Resume from and save the cursor to this file (after every batch).
    #[arg(long)]
    cursor_file: Option<PathBuf>,
    /// Only these partitions (comma-separated).
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(..1024), num_args = 1..)]
    partitions: Option<Vec<u32>>,
    /// Stop after this many events (at least 1).
    #[arg(long, value_parser = at_least_one)]
    max_events: Option<u64>,
}

/// Runs `tail`: NDJSON on stdout.
pub fn tail(conn: &Conn, a: TailArgs) -> Result<()> {
    let client = conn.client()?;
    runtime()?.block_on(async move {
        let from = match &a.cursor_file {
            Some(f) if f.exists() => std::fs::read_to_string(f)
                .with_context(|| format!("reading {}", f.display()))?
                .trim()
                .to_string(),
            _ => a.from.clone(),
        };
        let opts = ReaderOptions {
            wait_ms: if a.follow { 10_000 } else { 500 },
            partitions: a.partitions.clone(),
            ..ReaderOptions::default()
        };
        // Ctrl-C (from here on) ends the tail cleanly: the session is disposed and the
        // place to resume from is printed (events printed but not yet
        // acked come again on a resume)
        let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .context("installing the Ctrl-C handler")?;
        client.describe_stream(&a.stream).await?;
        let mut r = Reader::open(client, &a.stream, &from, opts).await?;
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let mut seen = 0u64;
        let mut interrupted = false;
        loop {
            if let Some(m) = a.max_events {
                r.set_max_events(Some((m - seen).min(10_000) as u32));
            }
            let batch = tokio::select! {
                b = r.next() => b?,
                _ = interrupt.recv() => {
                    interrupted = true;
                    break;
                }
            };
            for g in &batch.gaps {
                eprintln!(
                    "warning: partition {}: offsets {} to {} were removed by retention before they were read",
                    g.partition,
                    g.from,
                    g.to.saturating_sub(1)
                );
            }
            if batch.events.is_empty() && batch.gaps.is_empty() {
                if a.follow {
                    continue;
                }
                break;
            }
            let room = a.max_events.map_or(u64::MAX, |m| m - seen);
            let take = (batch.events.len() as u64).min(room) as usize;
            for e in &batch.events[..take] {
                serde_json::to_writer(&mut out, e)?;
                out.write_all(b"\n")?;
            }
            out.flush()?;
            seen += take as u64;
            if take < batch.events.len() {
                // the rest of the batch stays unacked: a resume sees it again
                break;
            }
            let cursor = r.ack().await?.to_string();
            if let Some(f) = &a.cursor_file {
                save_cursor(f, &cursor)?;
            }
            if a.max_events.is_some_and(|m| seen >= m) {
                break;
            }
        }
        let cursor = r.close().await?;
        if seen == 0 && !a.follow && !interrupted {
            eprintln!("no events in {} {}", a.stream, describe_start(&from));
        }
        if interrupted || a.follow {
            match &a.cursor_file {
                Some(f) => eprintln!(
                    "stopped after {seen} event(s); the cursor is saved in {}",
                    f.display()
                ),
                None => eprintln!("stopped after {seen} event(s); resume with --from {cursor}"),
            }
        }
        Ok(())
    })
}

fn at_least_one(s: &str) -> std::result::Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a whole number")),
    }
}

/// Where a tail started, for a person.
fn describe_start(from: &str) -> &str {
    match from {
        "earliest" => "from its start",
        "latest" => "after its current end (--from earliest shows older ones)",
        _ => "after the cursor given",
    }
}

fn save_cursor(path: &std::path::Path, cursor: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{cursor}\n")).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
