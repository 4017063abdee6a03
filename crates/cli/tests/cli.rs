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
    std::fs::write(&cfg, "listen = \"127.0.0.1:0\"\nfsync = \"sometimes\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("`fsync`"),
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
        String::from_utf8_lossy(&out.stderr).contains("`lease_ms`"),
        "env overrides the file, then validation"
    );
}
