//! `switchboard-conformance`: runs the scenarios of `conformance/scenarios`
//! through every SDK's driver against a real `switchboard serve` behind a
//! fault-injecting proxy, prints a table (scenario by SDK) and exits
//! non-zero on any failure. With `--bench`, runs each driver's `bench`
//! side by side instead and prints each SDK's rate against the Rust
//! client's.

mod process;
mod proxy;
mod scenario;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use clap::Parser;
use serde_json::json;

use process::{Driver, Server, TOKEN};
use proxy::Proxy;
use scenario::{Env, Run, Scenario};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Runs the SDK conformance suite (or the SDK benchmark) against a real server"
)]
struct Args {
    /// The `switchboard` binary to serve with.
    #[arg(long, default_value = "target/release/switchboard")]
    server_bin: PathBuf,
    /// An SDK's driver, `NAME=COMMAND` (run by `sh -c` in the working
    /// directory); repeatable, in table order.
    #[arg(long = "driver", value_parser = parse_driver, required_unless_present = "list")]
    drivers: Vec<(String, String)>,
    /// The scenario files.
    #[arg(long, default_value = "conformance/scenarios")]
    scenarios: PathBuf,
    /// The signing vectors.
    #[arg(long, default_value = "crates/proto/tests/vectors/signing.json")]
    vectors: PathBuf,
    /// Only these scenarios (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where servers keep their data and every process its log.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Lists the scenarios and what each shows, and exits.
    #[arg(long)]
    list: bool,
    /// Runs the benchmark instead of the scenarios.
    #[arg(long)]
    bench: bool,
    /// Events each SDK publishes and consumes per benchmark round.
    #[arg(long, default_value_t = 200_000)]
    bench_events: u64,
    /// Benchmark rounds (each SDK once per round, in turn); medians are kept.
    #[arg(long, default_value_t = 3)]
    bench_rounds: u32,
}

fn parse_driver(s: &str) -> Result<(String, String), String> {
    let (name, cmd) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=COMMAND"))?;
    if name.is_empty() || cmd.trim().is_empty() {
        return Err(format!("{s:?} is not NAME=COMMAND"));
    }
    Ok((name.to_string(), cmd.to_string()))
}

enum Outcome {
    Pass(Duration, Vec<String>),
    Fail(Duration, String),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.list {
        for sc in Scenario::load_all(&args.scenarios)? {
            println!("{}: {}", sc.name, sc.about);
        }
        return Ok(());
    }
    let work = match &args.work_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("switchboard-conformance-{}", std::process::id())),
    };
    std::fs::create_dir_all(&work)?;
    let code = if args.bench {
        bench(&args, &work).await?
    } else {
        suite(&args, &work).await?
    };
    if args.work_dir.is_none() && code == 0 {
        let _ = std::fs::remove_dir_all(&work);
    } else {
        eprintln!("logs and data: {}", work.display());
    }
    std::process::exit(code);
}

/// The flags of the suite's server: a short lease (so that lease renewal
/// is needed), small segments and frequent retention (so that gaps come
/// quickly), and a small bound on blocks in flight (so that writers meet
/// real backpressure).
fn suite_flags() -> Vec<String> {
    [
        "--lease-ms",
        "3000",
        "--segment-bytes",
        "4096",
        "--retention-check-ms",
        "100",
        "--max-blocks-in-flight",
        "4",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

async fn suite(args: &Args, work: &Path) -> anyhow::Result<i32> {
    let mut scenarios = Scenario::load_all(&args.scenarios)?;
    if !args.only.is_empty() {
        scenarios.retain(|s| args.only.contains(&s.name));
    }
    anyhow::ensure!(!scenarios.is_empty(), "no scenarios to run");
    let mut server = Server::start(&args.server_bin, &work.join("server"), &suite_flags()).await?;
    let proxy = Proxy::start(&server.url).await?;
    let mut tls_flags = suite_flags();
    tls_flags.push("--tls-self-signed".into());
    let tls = if scenarios.iter().any(|s| s.server.as_deref() == Some("tls")) {
        Some(Server::start(&args.server_bin, &work.join("server-tls"), &tls_flags).await?)
    } else {
        None
    };
    let ca = tls.as_ref().map(|t| t.dir().join("tls/self-signed.crt"));
    let run_id = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let cwd = std::env::current_dir()?;
    let mut results: Vec<Vec<Outcome>> = Vec::new();
    for (sdk, cmd) in &args.drivers {
        let mut row = Vec::new();
        for sc in &scenarios {
            proxy.reset();
            let started = Instant::now();
            let log = work.join(format!("driver-{sdk}.log"));
            let mut env = Env {
                server: &mut server,
                proxy: &proxy,
                tls: match (&tls, &ca) {
                    (Some(t), Some(c)) => Some((t.url.as_str(), c.as_path())),
                    _ => None,
                },
                vectors: &args.vectors,
                run_id: &run_id,
            };
            let outcome = match Driver::start(cmd, &cwd, &log) {
                Err(e) => Outcome::Fail(started.elapsed(), format!("{e:#}")),
                Ok(driver) => {
                    let mut run = Run::new(&mut env, driver, sdk, &sc.name);
                    let r = run.run(sc).await;
                    let skipped = std::mem::take(&mut run.skipped);
                    run.finish().await;
                    match r {
                        Ok(()) => Outcome::Pass(started.elapsed(), skipped),
                        Err(e) => Outcome::Fail(started.elapsed(), format!("{e:#}")),
                    }
                }
            };
            let mark = match &outcome {
                Outcome::Pass(d, _) => format!("pass ({:.1} s)", d.as_secs_f64()),
                Outcome::Fail(d, e) => format!("FAIL ({:.1} s): {e}", d.as_secs_f64()),
            };
            eprintln!("{sdk} {}: {mark}", sc.name);
            row.push(outcome);
        }
        results.push(row);
    }
    server.stop(true).await.ok();
    if let Some(mut t) = tls {
        t.stop(true).await.ok();
    }
    Ok(print_table(&args.drivers, &scenarios, &results))
}

fn print_table(drivers: &[(String, String)], scenarios: &[Scenario], results: &[Vec<Outcome>]) -> i32 {
    let width = scenarios.iter().map(|s| s.name.len()).max().unwrap_or(8).max(8);
    print!("\n{:width$}", "scenario");
    for (sdk, _) in drivers {
        print!("  {sdk:>10}");
    }
    println!();
    let mut failures = Vec::new();
    let mut notes = Vec::new();
    for (j, sc) in scenarios.iter().enumerate() {
        print!("{:width$}", sc.name);
        for (i, (sdk, _)) in drivers.iter().enumerate() {
            let cell = match &results[i][j] {
                Outcome::Pass(_, skipped) if skipped.is_empty() => "pass".to_string(),
                Outcome::Pass(_, skipped) => {
                    notes.push(format!("{sdk} {}: skipped {}", sc.name, skipped.join("; ")));
                    "pass*".to_string()
                }
                Outcome::Fail(_, e) => {
                    failures.push(format!("{sdk} {}: {e}", sc.name));
                    "FAIL".to_string()
                }
            };
            print!("  {cell:>10}");
        }
        println!();
    }
    for n in &notes {
        println!("* {n}");
    }
    for f in &failures {
        println!("FAIL {f}");
    }
    let total = drivers.len() * scenarios.len();
    println!("{} of {total} passed", total - failures.len());
    i32::from(!failures.is_empty())
}

async fn bench(args: &Args, work: &Path) -> anyhow::Result<i32> {
    // the SDKs are what is measured, not the disk: the server keeps
    // streams in memory
    let flags: Vec<String> = ["--store", "memory://", "--max-blocks-in-flight", "64"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut server = Server::start(&args.server_bin, &work.join("bench-server"), &flags).await?;
    let cwd = std::env::current_dir()?;
    let mut rates: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); args.drivers.len()];
    for round in 0..args.bench_rounds {
        for (i, (sdk, cmd)) in args.drivers.iter().enumerate() {
            let mut driver = Driver::start(cmd, &cwd, &work.join(format!("bench-{sdk}.log")))?;
            // a first, unmeasured run warms up each runtime (JIT compilers,
            // connection pools) as a long-lived service would be
            let mut ans = json!(null);
            for (phase, events) in [
                ("warm-up", args.bench_events / 4),
                ("measured", args.bench_events),
            ] {
                let stream = format!(
                    "bench-{sdk}-{round}-{phase}-{:06x}",
                    rand::random::<u32>() & 0xff_ffff
                );
                ans = driver
                    .call(
                        "bench",
                        json!({"url": server.url, "token": TOKEN, "stream": stream,
                               "events": events, "block": 500, "size": 1024}),
                        Duration::from_secs(900),
                    )
                    .await
                    .with_context(|| format!("{sdk} bench ({phase})"))?;
                if ans["ok"] != true {
                    return Err(anyhow!("{sdk} bench failed: {}", ans["error"]));
                }
            }
            driver.close().await;
            let (p, c) = (
                ans["publish_events_per_s"].as_f64().unwrap_or(0.0),
                ans["consume_events_per_s"].as_f64().unwrap_or(0.0),
            );
            eprintln!("round {round} {sdk}: publish {p:.0} events/s, consume {c:.0} events/s");
            rates[i].0.push(p);
            rates[i].1.push(c);
        }
    }
    server.stop(true).await.ok();
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let medians: Vec<(f64, f64)> = rates.iter_mut().map(|(p, c)| (median(p), median(c))).collect();
    let base = args
        .drivers
        .iter()
        .position(|(n, _)| n == "rust")
        .map(|i| medians[i]);
    println!(
        "\n{} events of 1 KiB in blocks of 500 (after a warm-up of {}), {} rounds, medians",
        args.bench_events,
        args.bench_events / 4,
        args.bench_rounds
    );
    println!(
        "{:<12} {:>14} {:>14} {:>10} {:>10}",
        "sdk", "publish ev/s", "consume ev/s", "pub/rust", "con/rust"
    );
    for ((sdk, _), (p, c)) in args.drivers.iter().zip(&medians) {
        let (rp, rc) = base.map_or((f64::NAN, f64::NAN), |(bp, bc)| (p / bp, c / bc));
        println!("{sdk:<12} {p:>14.0} {c:>14.0} {rp:>10.2} {rc:>10.2}");
        println!(
            "{}",
            json!({"sdk": sdk, "publish_events_per_s": p.round(), "consume_events_per_s": c.round(),
                   "publish_vs_rust": rp, "consume_vs_rust": rc})
        );
    }
    Ok(0)
}
