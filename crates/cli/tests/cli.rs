//! The CLI against a real server: stream admin, publish, tail with a
//! cursor file, and the token found in the local data directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{Server, TOKEN};

fn cli(s: &Server, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .env("SWITCHBOARD_URL", &s.url)
        .env("SWITCHBOARD_TOKEN", TOKEN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = c.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let out = c.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn stream_admin_publish_and_tail() {
    let d = tempfile::tempdir().unwrap();
    let s = Server::start(&d.path().join("data"), &[]);
    let (ok, out, err) = cli(&s, &["stream", "create", "logs", "--partitions", "3"], None);
    assert!(ok, "{err}");
    assert!(out.contains("\"partitions\":3"));
    let (ok, out, _) = cli(&s, &["stream", "list"], None);
    assert!(ok && out.contains("logs"));
    let (ok, _, err) = cli(&s, &["stream", "create", "logs", "--partitions", "2"], None);
    assert!(!ok && err.contains("conflict"), "{err}");

    let ndjson: String = (0..1234)
        .map(|i| format!("{{\"key\":\"k{}\",\"value\":{{\"n\":{i}}}}}\n", i % 10))
        .collect();
    let (ok, _, err) = cli(&s, &["publish", "logs", "--batch", "100"], Some(&ndjson));
    assert!(ok, "{err}");
    assert!(err.contains("published 1234 events"), "{err}");
    let (ok, out, _) = cli(
        &s,
        &[
            "publish",
            "logs",
            "--value",
            "plain text",
            "--key",
            "x",
            "--header",
            "a=b",
        ],
        None,
    );
    assert!(ok && out.contains("offsets"), "{out}");
    let (ok, _, err) = cli(&s, &["publish", "logs"], Some("not json\n"));
    assert!(!ok && err.contains("stdin line 1"), "{err}");

    let (ok, out, _) = cli(&s, &["stream", "describe", "logs"], None);
    assert!(ok);
    let d: serde_json::Value = serde_json::from_str(&out).unwrap();
    let total: u64 = d["end_offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total, 1235);

    // tail in pieces through a cursor file: every event exactly once
    let cursor = d_path(&s, "cursor");
    let mut seen = Vec::new();
    for _ in 0..10 {
        let (ok, out, err) = cli(
            &s,
            &["tail", "logs", "--cursor-file", &cursor, "--max-events", "400"],
            None,
        );
        assert!(ok, "{err}");
        if out.is_empty() {
            break;
        }
        for line in out.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            seen.push(v["value"].to_string());
        }
    }
    assert_eq!(seen.len(), 1235, "each event once");
    let unique: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), 1235);
    assert!(seen.contains(&"\"plain text\"".to_string()));

    let (ok, _, _) = cli(&s, &["stream", "delete", "logs"], None);
    assert!(ok);
    let (ok, _, err) = cli(&s, &["stream", "describe", "logs"], None);
    assert!(!ok && err.contains("stream_not_found"), "{err}");
}

fn d_path(s: &Server, name: &str) -> String {
    s.dir.with_extension(name).to_string_lossy().into_owned()
}

#[test]
fn token_is_generated_and_found_in_the_data_dir() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let mut c = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(c.stdout.take().unwrap()), &mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("switchboard listening on ")
        .unwrap()
        .to_string();
    let token_file = data.join("admin.token");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&token_file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["stream", "list", "--url", &url, "--data-dir"])
        .arg(&data)
        .env_remove("SWITCHBOARD_TOKEN")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args([
            "stream",
            "list",
            "--url",
            &url,
            "--token",
            "wrong-token-0123456789",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unauthorized"));
    let _ = c.kill();
    let _ = c.wait();
}

#[test]
fn bad_config_names_the_key() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("sb.toml");
    std::fs::write(
        &cfg,
        "[node]\nlisten = \"127.0.0.1:0\"\n[log]\nfsync = \"sometimes\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("`log.fsync`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("SWITCHBOARD_FSYNC", "always")
        .env("SWITCHBOARD_LEASE_MS", "5")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("`session.lease_ms`"),
        "env overrides the file, then validation"
    );
}

/// Runs the binary with `env` and no server-derived settings.
fn run(args: &[&str], env: &[(&str, &str)]) -> (std::process::ExitStatus, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .env_remove("SWITCHBOARD_URL")
        .env_remove("SWITCHBOARD_TOKEN")
        .env("RUST_BACKTRACE", "1")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status,
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Errors a person can act on: one message and its causes, no backtrace
/// (even with RUST_BACKTRACE=1), and a hint where the server is missing or
/// speaks TLS.
#[test]
fn errors_guide_the_user() {
    let port = common::free_port().to_string();
    let url = format!("127.0.0.1:{port}");
    let (st, _, err) = run(&["stream", "list", "--url", &url, "--token", TOKEN], &[]);
    assert!(!st.success());
    assert!(
        err.starts_with(&format!(
            "error: cannot reach http://127.0.0.1:{port}: is `switchboard serve` running there?"
        )),
        "{err}"
    );
    assert!(err.contains("caused by:"), "{err}");
    assert!(!err.contains("backtrace") && !err.contains("Stack"), "{err}");
    // tail and publish say so at once, not after their sessions' retries
    for cmd in ["tail", "publish"] {
        let started = std::time::Instant::now();
        let (st, _, err) = run(&[cmd, "s", "--url", &url, "--token", TOKEN], &[]);
        assert!(!st.success());
        assert!(err.starts_with("error: cannot reach"), "{cmd}: {err}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{cmd} took {:?}",
            started.elapsed()
        );
    }

    // bad values are refused before any call: no connection is tried
    for args in [
        &["tail", "s", "--max-events", "0"][..],
        &["tail", "s", "--partitions", "1024"][..],
        &["publish", "s", "--batch", "0"][..],
        &["publish", "s", "--batch", "10001"][..],
        &["stream", "create", "s", "--partitions", "0"][..],
        &["stream", "create", "s", "--retention-ms", "0"][..],
    ] {
        let mut all = args.to_vec();
        all.extend(["--url", &url, "--token", TOKEN]);
        let (st, _, err) = run(&all, &[]);
        assert_eq!(st.code(), Some(2), "{args:?}: {err}");
        assert!(!err.contains("cannot reach"), "{args:?} tried the server: {err}");
    }

    // plain http against a TLS server
    let d = tempfile::tempdir().unwrap();
    let s = Server::start(&d.path().join("data"), &["--tls-self-signed"]);
    let http = format!("http://{}", s.addr);
    let (st, _, err) = run(&["stream", "list", "--url", &http, "--token", TOKEN], &[]);
    assert!(!st.success());
    assert!(
        err.starts_with(&format!(
            "error: {http} answers with TLS, not plain HTTP: use https://{}",
            s.addr
        )),
        "{err}"
    );
    let ca = d.path().join("data/tls/self-signed.crt");
    let (st, out, err) = run(
        &[
            "stream",
            "list",
            "--url",
            &s.url,
            "--token",
            TOKEN,
            "--ca-cert",
            ca.to_str().unwrap(),
        ],
        &[],
    );
    assert!(st.success(), "{err}");
    assert!(out.starts_with("NAME"), "{out}");
}

#[test]
fn serve_on_a_taken_port_creates_nothing() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let (st, _, err) = run(
        &["serve", "--listen", &addr, "--data-dir", data.to_str().unwrap()],
        &[],
    );
    assert!(!st.success());
    assert!(err.contains(&format!("error: listening on {addr}")), "{err}");
    assert!(!data.exists(), "serve created {} before failing", data.display());
}

#[test]
fn tail_says_what_it_did() {
    let d = tempfile::tempdir().unwrap();
    let s = Server::start(&d.path().join("data"), &[]);
    let host_port = s.addr.clone();
    let (ok, _, err) = cli(&s, &["stream", "create", "quiet"], None);
    assert!(ok, "{err}");
    // an empty stream is said on stderr; stdout stays clean NDJSON; a URL
    // without a scheme is http
    let (st, out, err) = run(&["tail", "quiet", "--url", &host_port, "--token", TOKEN], &[]);
    assert!(st.success(), "{err}");
    assert_eq!(out, "");
    assert!(err.contains("no events in quiet from its start"), "{err}");
    let (ok, _, err) = cli(&s, &["publish", "quiet", "--value", "1"], None);
    assert!(ok, "{err}");

    // Ctrl-C on --follow disposes the session and prints where to resume
    let child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["tail", "quiet", "--follow", "--url", &s.url, "--token", TOKEN])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let raw = s.raw();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let open = |raw: &common::Raw| {
        rt.block_on(async {
            let m = raw.send(reqwest::Method::GET, "/metrics", None, &[], None).await;
            let text = String::from_utf8(m.bytes.to_vec()).unwrap();
            text.lines()
                .find(|l| l.starts_with("switchboard_sessions_open{mode=\"read\"}"))
                .and_then(|l| l.rsplit(' ').next())
                .map(|v| v.to_string())
                .unwrap_or_default()
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while open(&raw) != "1" {
        assert!(std::time::Instant::now() < deadline, "tail never allocated");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let pid = child.id() as i32;
    // SIGINT, as Ctrl-C sends it
    let status = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let cursor = stderr
        .split("resume with --from ")
        .nth(1)
        .map(str::trim)
        .unwrap_or_else(|| panic!("no cursor in {stderr:?}"));
    assert!(stderr.contains("stopped after 1 event(s)"), "{stderr}");
    assert_eq!(open(&raw), "0", "the session was not disposed");
    // the printed cursor resumes after the event already shown
    let (st, out, err) = run(
        &[
            "tail", "quiet", "--from", cursor, "--url", &s.url, "--token", TOKEN,
        ],
        &[],
    );
    assert!(st.success(), "{err}");
    assert_eq!(out, "");
}

/// The drain delay is part of the shutdown bound: the process is gone
/// within shutdown_timeout_ms of SIGTERM, and a delay as long as the bound
/// is refused at start.
#[test]
fn drain_delay_is_part_of_the_shutdown_bound() {
    let d = tempfile::tempdir().unwrap();
    let mut s = Server::start(
        &d.path().join("data"),
        &["--drain-delay-ms", "1200", "--shutdown-timeout-ms", "1500"],
    );
    let started = std::time::Instant::now();
    let st = s.terminate();
    let took = started.elapsed();
    assert!(st.success(), "{st:?}");
    assert!(
        took >= std::time::Duration::from_millis(1200),
        "the delay was skipped: {took:?}"
    );
    assert!(
        took < std::time::Duration::from_millis(2500),
        "the delay was added to the bound: {took:?}"
    );

    let data = d.path().join("data2");
    let (st, _, err) = run(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
            "--drain-delay-ms",
            "2000",
            "--shutdown-timeout-ms",
            "2000",
        ],
        &[],
    );
    assert!(!st.success());
    assert!(err.contains("config key `node.drain_delay_ms`"), "{err}");
}

/// `serve --print-config` shows the effective configuration (file, then
/// environment, then flags) with secrets redacted, and starts nothing.
#[test]
fn print_config_shows_the_effective_settings_redacted() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("sb.toml");
    std::fs::write(&file, "[session]\nlease_ms = 45000\nmax_sessions = 7\n").unwrap();
    let data = d.path().join("data");
    let secret_token = "print-config-token-0123456789";
    let (st, out, err) = run(
        &[
            "serve",
            "--print-config",
            "--config",
            file.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--max-sessions",
            "9",
            "--token",
            &format!("{secret_token}:switchboard:read"),
        ],
        &[("SWITCHBOARD_LEASE_MS", "50000")],
    );
    assert!(st.success(), "{err}");
    assert!(
        out.contains("lease_ms = 50000"),
        "the environment wins over the file: {out}"
    );
    assert!(out.contains("max_sessions = 9"), "flags win over the file: {out}");
    assert!(
        out.contains(r#"tokens = ["<redacted>:switchboard:read"]"#),
        "{out}"
    );
    assert!(!out.contains(secret_token), "{out}");
    assert!(!data.exists(), "--print-config created the data directory");
    let parsed: toml::Value = toml::from_str(&out).unwrap();
    assert_eq!(parsed["log"]["fsync"].as_str(), Some("always"));
    assert_eq!(parsed["session"]["lease_ms"].as_integer(), Some(50000));
}
