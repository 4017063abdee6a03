//! The benchmarks the project ships, run small: each prints one JSON
//! report as its last line, with the figures docs/BENCHMARKS.md quotes,
//! and leaves nothing behind in the directory it was started from.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

/// Runs `switchboard bench ARGS` in `cwd`; its report.
fn bench(cwd: &Path, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("bench")
        .args(args)
        .current_dir(cwd)
        .env_remove("SWITCHBOARD_URL")
        .env_remove("SWITCHBOARD_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench {args:?}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line {last:?}: {e}"))
}

fn positive(report: &Value, field: &str) -> f64 {
    let v = report[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} in {report}"));
    assert!(v > 0.0, "{field} in {report}");
    v
}

fn left_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn bench_log_reports_rates_and_cleans_up() {
    let cwd = tempfile::tempdir().unwrap();
    let r = bench(cwd.path(), &["log", "--records", "2000", "--rounds", "1"]);
    assert_eq!(r["bench"], "log");
    positive(&r, "append_events_s");
    positive(&r, "read_events_s");
    positive(&r, "raw_mb_s");
    assert_eq!(left_in(cwd.path()), Vec::<String>::new());
    // a data directory the user made stays
    std::fs::create_dir(cwd.path().join("mine")).unwrap();
    bench(
        cwd.path(),
        &["log", "--records", "500", "--rounds", "1", "--data-dir", "mine"],
    );
    assert_eq!(left_in(cwd.path()), vec!["mine".to_string()]);
    assert_eq!(left_in(&cwd.path().join("mine")), Vec::<String>::new());
}

#[test]
fn bench_e2e_publishes_and_consumes_every_event() {
    let cwd = tempfile::tempdir().unwrap();
    let r = bench(
        cwd.path(),
        &[
            "e2e",
            "--duration",
            "1",
            "--writers",
            "1",
            "--readers",
            "1",
            "--batch",
            "50",
            "--log-records",
            "2000",
        ],
    );
    assert_eq!(r["bench"], "e2e");
    let published = positive(&r, "published");
    assert_eq!(r["consumed"].as_f64(), Some(published), "{r}");
    for f in [
        "publish_events_s",
        "commit_p99_ms",
        "read_p99_ms",
        "ack_p99_ms",
        "publish_ratio",
    ] {
        positive(&r, f);
    }
    assert_eq!(left_in(cwd.path()), Vec::<String>::new());
}

#[test]
fn bench_sessions_reports_memory_per_session() {
    let cwd = tempfile::tempdir().unwrap();
    let r = bench(cwd.path(), &["sessions", "--sessions", "40", "--events", "2000"]);
    assert_eq!(r["bench"], "sessions");
    assert_eq!(r["sessions"], 40);
    positive(&r, "rss_per_open_session_kib");
    assert!(r["rss"]["peak_mib"].as_f64().unwrap() > 0.0, "{r}");
    assert_eq!(left_in(cwd.path()), Vec::<String>::new());
}
