//! The processes a run drives: `switchboard serve`, and each SDK's driver.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The token every server of a run accepts.
pub const TOKEN: &str = "conformance-token-0123456789";

/// A `switchboard serve` on a loopback port.
pub struct Server {
    bin: PathBuf,
    dir: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
    /// `http://127.0.0.1:PORT` (or `https://`).
    pub url: String,
}

impl Server {
    /// Starts `bin serve` on `dir` with `extra` flags.
    pub async fn start(bin: &Path, dir: &Path, extra: &[String]) -> anyhow::Result<Server> {
        let mut s = Server {
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            extra: extra.to_vec(),
            child: None,
            url: String::new(),
        };
        s.spawn().await?;
        Ok(s)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.with_extension("log"))?;
        let mut child = Command::new(&self.bin)
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--listen", "127.0.0.1:0", "--token", TOKEN])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .map_err(|_| anyhow!("the server did not start in 60 s"))??
            .ok_or_else(|| {
                anyhow!(
                    "the server exited; see {}",
                    self.dir.with_extension("log").display()
                )
            })?;
        self.url = first
            .trim()
            .strip_prefix("switchboard listening on ")
            .ok_or_else(|| anyhow!("unexpected first line {first:?}"))?
            .to_string();
        // keep reading so that the pipe never fills
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
        Ok(())
    }

    /// The server's data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the server (SIGKILL, or SIGTERM and a wait) and starts it
    /// again on the same data directory, on a new port.
    pub async fn restart(&mut self, graceful: bool) -> anyhow::Result<()> {
        self.stop(graceful).await?;
        self.spawn().await
    }

    /// Stops the server.
    pub async fn stop(&mut self, graceful: bool) -> anyhow::Result<()> {
        let Some(mut c) = self.child.take() else {
            return Ok(());
        };
        if graceful {
            if let Some(pid) = c.id() {
                Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status()
                    .await?;
            }
            if tokio::time::timeout(Duration::from_secs(60), c.wait())
                .await
                .is_err()
            {
                bail!("the server did not stop within 60 s of SIGTERM");
            }
        } else {
            c.kill().await?;
        }
        Ok(())
    }
}

/// An SDK's driver: commands in, results out, one JSON line each.
pub struct Driver {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    next_id: u64,
}

impl Driver {
    /// Starts `command` (run by `sh -c`) in `cwd`; its stderr goes to `log`.
    pub fn start(command: &str, cwd: &Path, log: &Path) -> anyhow::Result<Driver> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("exec {command}"))
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting the driver {command:?}"))?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        Ok(Driver {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            next_id: 1,
        })
    }

    /// Sends `cmd` with `args`; the driver's answer (`ok` true or false),
    /// or an error when the driver broke the driver protocol.
    pub async fn call(&mut self, cmd: &str, mut args: Value, timeout: Duration) -> anyhow::Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        args["id"] = json!(id);
        args["cmd"] = json!(cmd);
        let mut line = serde_json::to_vec(&args)?;
        line.push(b'\n');
        self.stdin
            .write_all(&line)
            .await
            .context("writing to the driver")?;
        self.stdin.flush().await?;
        let answer = tokio::time::timeout(timeout, self.lines.next_line())
            .await
            .map_err(|_| anyhow!("the driver did not answer {cmd} within {} s", timeout.as_secs()))?
            .context("reading from the driver")?
            .ok_or_else(|| anyhow!("the driver exited during {cmd}"))?;
        let v: Value = serde_json::from_str(&answer).with_context(|| {
            format!("the driver answered {cmd} with a line that is not JSON: {answer:.200}")
        })?;
        if v["id"] != json!(id) {
            bail!("the driver answered {cmd} with id {} instead of {id}", v["id"]);
        }
        if !v["ok"].is_boolean() {
            bail!("the driver's answer to {cmd} has no boolean `ok`");
        }
        Ok(v)
    }

    /// Ends the driver (closes its stdin, then kills it after a grace).
    pub async fn close(mut self) {
        drop(self.stdin);
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}
