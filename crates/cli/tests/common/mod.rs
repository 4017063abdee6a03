//! Test harness: runs the real `switchboard` binary on a loopback port and
//! talks to it over HTTP.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;
use switchboard_client::Client;

pub const TOKEN: &str = "test-token-0123456789abcdef";

pub struct Server {
    /// `serve`, `api` or `backend`.
    role: &'static str,
    child: Option<Child>,
    stdout: Option<std::sync::mpsc::Receiver<String>>,
    pub url: String,
    pub addr: String,
    pub dir: PathBuf,
    extra: Vec<String>,
    /// (soft, hard) open-file limit the server starts with.
    nofile: Option<(u64, u64)>,
}

/// `SWITCHBOARD_TEST_STORE=memory` runs the servers of a test binary on
/// `memory://` instead of the embedded log (scripts/test runs the protocol
/// suite both ways).
pub fn memory_store() -> bool {
    std::env::var("SWITCHBOARD_TEST_STORE").as_deref() == Ok("memory")
}

/// `SWITCHBOARD_TEST_STORE=kafka` runs them on the Kafka at
/// `SWITCHBOARD_KAFKA` (scripts/test starts one), each server directory on
/// topics of its own.
pub fn kafka_store() -> Option<String> {
    if std::env::var("SWITCHBOARD_TEST_STORE").as_deref() != Ok("kafka") {
        return None;
    }
    Some(std::env::var("SWITCHBOARD_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into()))
}

/// The `--store` flags of the store under test (none: the embedded log).
pub fn store_args(dir: &Path) -> Vec<String> {
    if memory_store() {
        return vec!["--store".into(), "memory://".into()];
    }
    match kafka_store() {
        Some(brokers) => {
            // the same directory keeps its topics across restarts
            let prefix = format!(
                "t{:016x}.",
                switchboard_proto::partition::murmur2(dir.to_string_lossy().as_bytes()) as u32 as u64
                    ^ run_salt()
            );
            vec![
                "--store".into(),
                format!("kafka://{brokers}"),
                "--kafka-topic-prefix".into(),
                prefix,
                "--kafka-state-partitions".into(),
                "2".into(),
            ]
        }
        None => Vec::new(),
    }
}

/// Differs between runs of the tests, so that topics of an earlier run
/// on the same broker are never taken up.
fn run_salt() -> u64 {
    static SALT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SALT.get_or_init(|| rand::random::<u64>() << 32)
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_switchboard")
}

impl Server {
    /// Starts a server on `dir` with a free port.
    pub fn start(dir: &Path, extra: &[&str]) -> Server {
        Server::launch("serve", dir, extra, None)
    }

    /// Like [`Server::start`], with a (soft, hard) limit on open files.
    pub fn start_with_file_limit(dir: &Path, extra: &[&str], nofile: (u64, u64)) -> Server {
        Server::launch("serve", dir, extra, Some(nofile))
    }

    /// Starts an API node (`api`) or a backend node (`backend`, which has
    /// no URL) of the tiers behind the phone switch.
    pub fn start_role(role: &'static str, dir: &Path, extra: &[&str]) -> Server {
        Server::launch(role, dir, extra, None)
    }

    fn launch(role: &'static str, dir: &Path, extra: &[&str], nofile: Option<(u64, u64)>) -> Server {
        let mut s = Server {
            role,
            child: None,
            stdout: None,
            url: String::new(),
            addr: "127.0.0.1:0".into(),
            dir: dir.to_path_buf(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            nofile,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.with_extension("server.log"))
            .unwrap();
        let mut cmd = Command::new(bin());
        if let Some(limit) = self.nofile {
            limit_files(&mut cmd, limit);
        }
        cmd.arg(self.role).arg("--data-dir").arg(&self.dir);
        if self.role != "backend" {
            cmd.arg("--listen").arg(&self.addr).arg("--token").arg(TOKEN);
        }
        let own_store = self.role == "api" || self.extra.iter().any(|a| a == "--store");
        let mut child = cmd
            .args(&self.extra)
            .args(if own_store {
                Vec::new()
            } else {
                store_args(&self.dir)
            })
            .env("SWITCHBOARD_LOG_LEVEL", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // every line goes to the test; reading on keeps the pipe open
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| {
            // the log goes with the test's temporary directory: say what it
            // says here
            let path = self.dir.with_extension("server.log");
            let log = std::fs::read_to_string(&path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            panic!(
                "{} did not start; the end of {}:\n{}",
                self.role,
                path.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        });
        if self.role == "backend" {
            assert!(
                line.starts_with("switchboard backend "),
                "unexpected first line {line:?}; see {}",
                self.dir.with_extension("server.log").display()
            );
            self.child = Some(child);
            self.stdout = Some(rx);
            return;
        }
        let url = line
            .trim()
            .strip_prefix("switchboard listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "unexpected first line {line:?}; see {}",
                    self.dir.with_extension("server.log").display()
                )
            })
            .to_string();
        self.addr = url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_string();
        self.url = url;
        self.child = Some(child);
        self.stdout = Some(rx);
    }

    /// The next line the server printed after the address line.
    pub fn next_line(&self) -> Option<String> {
        self.stdout.as_ref()?.recv_timeout(Duration::from_secs(10)).ok()
    }

    pub fn client(&self) -> Client {
        Client::new(&self.url, TOKEN).unwrap()
    }

    pub fn raw(&self) -> Raw {
        Raw {
            http: reqwest::Client::builder().no_gzip().no_zstd().build().unwrap(),
            base: self.url.clone(),
        }
    }

    /// SIGKILL, then wait.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM; the exit status once it exits (panics after 60 s).
    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("not running");
        signal(&c, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "server did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn send_signal(&self, sig: i32) {
        signal(self.child.as_ref().unwrap(), sig);
    }

    /// SIGSTOP, then waits until every thread of the server has stopped:
    /// kill(2) only posts the signal, and a thread that is busy or in an
    /// uninterruptible wait stops a little later.
    pub fn freeze(&self) {
        let pid = self.child.as_ref().unwrap().id();
        self.send_signal(libc::SIGSTOP);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !all_stopped(pid) {
            assert!(Instant::now() < deadline, "pid {pid} did not stop");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Starts again on the same port and data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

#[allow(unsafe_code)]
fn limit_files(cmd: &mut Command, (soft, hard): (u64, u64)) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit(2) only, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[allow(unsafe_code)]
fn signal(c: &Child, sig: i32) {
    // SAFETY: kill(2) on a child we own.
    unsafe {
        libc::kill(c.id() as i32, sig);
    }
}

/// Whether every thread of `pid` is stopped (state `T` in its stat).
fn all_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|t| {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // the state follows the command name, which is in parentheses
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "T")
    })
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Plain HTTP calls, for checking the wire format and errors.
pub struct Raw {
    pub http: reqwest::Client,
    pub base: String,
}

pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub bytes: bytes::Bytes,
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl Raw {
    pub fn clone_ref(&self) -> Raw {
        Raw {
            http: self.http.clone(),
            base: self.base.clone(),
        }
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, String)],
        token: Option<&str>,
    ) -> Answer {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            body,
            bytes,
            headers,
        }
    }

    pub async fn json(&self, method: Method, path: &str, body: Value) -> Answer {
        self.send(
            method,
            path,
            Some(serde_json::to_vec(&body).unwrap()),
            &[],
            Some(TOKEN),
        )
        .await
    }

    /// An authenticated `POST` of raw bytes (not necessarily JSON).
    pub async fn post_bytes(&self, path: &str, body: &[u8]) -> Answer {
        self.send(Method::POST, path, Some(body.to_vec()), &[], Some(TOKEN))
            .await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None, &[], Some(TOKEN)).await
    }

    /// A signed `POST` of `body`.
    pub async fn post_signed(&self, path: &str, secret: &str, body: &[u8]) -> Answer {
        self.signed(Method::POST, path, secret, Some(body.to_vec())).await
    }

    /// A signed session call.
    pub async fn signed(&self, method: Method, path: &str, secret: &str, body: Option<Vec<u8>>) -> Answer {
        let b = body.clone().unwrap_or_default();
        let now = now_ms();
        let sig = switchboard_proto::signing::sign(secret.as_bytes(), now, method.as_str(), path, &b);
        self.send(
            method,
            path,
            body,
            &[("x-switchboard-signature", sig)],
            Some(TOKEN),
        )
        .await
    }
}

/// A loopback port nothing listens on now: bound, then let go.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Milliseconds since the Unix epoch, as signatures carry them.
pub fn now_ms() -> u64 {
    u64::try_from(switchboard_proto::time::now_ms()).unwrap_or(0)
}

/// Polls `f` until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every event of `stream` from the start, read and acked batch by batch.
pub async fn read_all(c: &Client, stream: &str) -> Vec<switchboard_client::wire::ReadEvent> {
    let opts = switchboard_client::ReaderOptions {
        wait_ms: 0,
        max_events: Some(10_000),
        ..Default::default()
    };
    let mut r = switchboard_client::Reader::open(c.clone(), stream, "earliest", opts)
        .await
        .unwrap();
    let mut out = Vec::new();
    loop {
        let b = r.next().await.unwrap();
        if b.events.is_empty() {
            break;
        }
        out.extend(b.events);
        r.ack().await.unwrap();
    }
    r.close().await.unwrap();
    out
}

/// Copies a directory tree (a data directory, a fixture).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// Creates a stream with default settings and `partitions` partitions.
pub async fn create_stream(c: &Client, name: &str, partitions: u32) {
    c.create_stream(&switchboard_client::wire::CreateStream {
        name: name.into(),
        partitions: Some(partitions),
        retention_ms: None,
        retention_bytes: None,
        encrypt_keys: None,
    })
    .await
    .unwrap();
}

/// Every event of a stream, read from its start with the Rust client.
pub async fn read_everything(raw: &Raw, stream: &str) -> Vec<switchboard_client::wire::ReadEvent> {
    let client = Client::new(&raw.base, TOKEN).unwrap();
    let opts = switchboard_client::ReaderOptions {
        wait_ms: 0,
        ..Default::default()
    };
    let mut r = switchboard_client::Reader::open(client, stream, "earliest", opts)
        .await
        .unwrap();
    let mut out = Vec::new();
    loop {
        let a = r.next().await.unwrap();
        if a.events.is_empty() && a.gaps.is_empty() {
            break;
        }
        out.extend(a.events);
        r.ack().await.unwrap();
    }
    r.close().await.unwrap();
    out
}
