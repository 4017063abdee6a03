//! Scenarios: steps written as data (scenarios/*.json), run through one
//! SDK's driver, with the harness keeping its own record of what was sent
//! and what each reader received.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::process::{Driver, Server, TOKEN};
use crate::proxy::{Action, Proxy, Rule};

/// A scenario as written in its file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name (the table's column).
    pub name: String,
    /// What it shows.
    pub about: String,
    /// `plain` (through the proxy, the default) or `tls` (straight to a
    /// TLS server).
    #[serde(default)]
    pub server: Option<String>,
    /// The steps, in order.
    pub steps: Vec<Value>,
}

impl Scenario {
    /// Reads every `*.json` of `dir`, sorted by file name.
    pub fn load_all(dir: &Path) -> anyhow::Result<Vec<Scenario>> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| {
                let text = std::fs::read_to_string(f)?;
                serde_json::from_str(&text).with_context(|| format!("parsing {}", f.display()))
            })
            .collect()
    }
}

/// What a scenario run needs from the harness.
pub struct Env<'a> {
    /// The plain server (behind `proxy`).
    pub server: &'a mut Server,
    /// The proxy in front of it.
    pub proxy: &'a Proxy,
    /// The TLS server and its CA file, when a scenario asks for it.
    pub tls: Option<(&'a str, &'a Path)>,
    /// The signing vectors' file.
    pub vectors: &'a Path,
    /// Unique per run, so that stream names never meet.
    pub run_id: &'a str,
}

#[derive(Default)]
struct ReaderLog {
    events: Vec<Value>,
    gaps: Vec<Value>,
    redelivered: u64,
}

/// The state of one scenario run.
pub struct Run<'a, 'e> {
    env: &'a mut Env<'e>,
    driver: Driver,
    prefix: String,
    vars: HashMap<String, String>,
    /// Events sent per logical stream, by their number.
    sent: HashMap<String, Vec<u64>>,
    events: HashMap<u64, (String, Value)>,
    readers: HashMap<String, ReaderLog>,
    next_n: u64,
    /// Steps the SDK declared unsupported (optional ones only).
    pub skipped: Vec<String>,
    http: reqwest::Client,
}

fn s<'v>(step: &'v Value, k: &str) -> anyhow::Result<&'v str> {
    step[k]
        .as_str()
        .ok_or_else(|| anyhow!("step {step} needs a string `{k}`"))
}

fn n(step: &Value, k: &str, default: u64) -> u64 {
    step[k].as_u64().unwrap_or(default)
}

impl<'a, 'e> Run<'a, 'e> {
    /// A run of `scenario` for `sdk` through `driver`.
    pub fn new(env: &'a mut Env<'e>, driver: Driver, sdk: &str, scenario: &str) -> Run<'a, 'e> {
        let prefix = format!("cf-{}-{sdk}-{scenario}", env.run_id);
        Run {
            env,
            driver,
            prefix,
            vars: HashMap::new(),
            sent: HashMap::new(),
            events: HashMap::new(),
            readers: HashMap::new(),
            next_n: 0,
            skipped: Vec::new(),
            http: reqwest::Client::new(),
        }
    }

    /// Ends the run's driver.
    pub async fn finish(self) {
        self.driver.close().await;
    }

    fn stream(&self, logical: &str) -> String {
        format!("{}-{logical}", self.prefix)
    }

    fn var(&self, v: &str) -> anyhow::Result<String> {
        match v.strip_prefix('$') {
            Some(name) => self
                .vars
                .get(name)
                .cloned()
                .ok_or_else(|| anyhow!("no variable {name} saved yet")),
            None => Ok(v.to_string()),
        }
    }

    /// Runs every step of `sc`; the first failure ends it.
    pub async fn run(&mut self, sc: &Scenario) -> anyhow::Result<()> {
        for (i, step) in sc.steps.iter().enumerate() {
            let skipped = self.skipped.len();
            self.step(step, sc)
                .await
                .with_context(|| format!("step {} ({})", i + 1, step["do"].as_str().unwrap_or("?")))?;
            // a feature the scenario needs and the SDK does not have
            if self.skipped.len() > skipped && step["optional"] == "scenario" {
                break;
            }
        }
        Ok(())
    }

    async fn call(&mut self, cmd: &str, args: Value, step: &Value) -> anyhow::Result<Option<Value>> {
        let timeout = Duration::from_millis(n(step, "timeout_ms", 0) + 90_000);
        let ans = self.driver.call(cmd, args, timeout).await?;
        let ok = ans["ok"].as_bool() == Some(true);
        let err = &ans["error"];
        if !ok && err["code"] == "unsupported" && (step["optional"] == true || step["optional"] == "scenario")
        {
            let why = err["message"].as_str().unwrap_or("").lines().next().unwrap_or("");
            self.skipped.push(format!("{cmd}: {why}"));
            return Ok(None);
        }
        if let Some(exp) = step.get("expect_error") {
            ensure!(!ok, "{cmd} succeeded; expected the error {exp}");
            if let Some(code) = exp.get("code") {
                ensure!(
                    err["code"] == *code,
                    "{cmd} failed with {err}; expected the code {code}"
                );
            }
            if let Some(r) = exp.get("retryable") {
                ensure!(
                    err["retryable"] == *r,
                    "{cmd} failed with {err}; expected retryable {r}"
                );
            }
            if exp["request_id"] == true {
                ensure!(
                    err["request_id"].as_str().is_some_and(|s| !s.is_empty()),
                    "the error of {cmd} carries no request id: {err}"
                );
            }
            return Ok(Some(ans));
        }
        ensure!(ok, "{cmd} failed: {err}");
        Ok(Some(ans))
    }

    fn generate(&mut self, stream: &str, spec: &Value) -> Vec<Value> {
        let count = n(spec, "count", 10);
        let keys = n(spec, "keys", 4);
        let size = n(spec, "size", 64) as usize;
        let binary = spec["binary"] == true;
        (0..count)
            .map(|_| {
                let i = self.next_n;
                self.next_n += 1;
                let value = json!({"n": i, "pad": "x".repeat(size)});
                let mut e = json!({"headers": {"src": "conformance", "n": i.to_string()}});
                if keys > 0 {
                    e["key"] = json!(format!("k{}", i % keys));
                }
                if binary {
                    let raw = serde_json::to_vec(&value).unwrap_or_default();
                    e["value_b64"] = json!(base64::engine::general_purpose::STANDARD.encode(raw));
                } else {
                    e["value"] = value;
                }
                self.events.insert(i, (stream.to_string(), e.clone()));
                e
            })
            .collect()
    }

    fn record_sent(&mut self, stream: &str, events: &[Value]) {
        let list = self.sent.entry(stream.to_string()).or_default();
        list.extend(
            events
                .iter()
                .filter_map(|e| e["headers"]["n"].as_str()?.parse::<u64>().ok()),
        );
    }

    async fn step(&mut self, step: &Value, sc: &Scenario) -> anyhow::Result<()> {
        let what = s(step, "do")?;
        match what {
            "connect" => {
                let mut args = json!({"token": TOKEN});
                if sc.server.as_deref() == Some("tls") {
                    let (url, ca) = self.env.tls.ok_or_else(|| anyhow!("no TLS server"))?;
                    args["url"] = json!(url);
                    args["ca_file"] = json!(ca.display().to_string());
                } else {
                    args["url"] = json!(self.env.proxy.url);
                }
                for k in ["compression", "token_callback"] {
                    if let Some(v) = step.get(k) {
                        args[k] = v.clone();
                    }
                }
                self.call("connect", args, step).await?;
            }
            "create_stream" => {
                let name = self.stream(s(step, "stream")?);
                let mut args = json!({"name": name, "partitions": n(step, "partitions", 1)});
                if let Some(b) = step.get("retention_bytes") {
                    args["retention_bytes"] = b.clone();
                }
                self.call("create_stream", args, step).await?;
            }
            "publish" => {
                let logical = s(step, "stream")?.to_string();
                let events = self.generate(&logical, &step["events"]);
                let args = json!({"stream": self.stream(&logical), "events": events});
                if let Some(ans) = self.call("publish", args, step).await? {
                    if ans["ok"] == true {
                        let offsets = ans["offsets"].as_array().map_or(0, |o| o.len());
                        ensure!(
                            offsets == events.len(),
                            "publish answered {offsets} offsets for {} events",
                            events.len()
                        );
                        self.record_sent(&logical, &events);
                    }
                }
            }
            "writer_open" => {
                let mut args = json!({
                    "writer": s(step, "writer")?,
                    "stream": self.stream(s(step, "stream")?),
                    "window": n(step, "window", 8),
                });
                if let Some(p) = step["producer"].as_str() {
                    args["producer"] = json!(format!("{}-{p}", self.prefix));
                }
                self.call("writer_open", args, step).await?;
            }
            "writer_send" => {
                let writer = s(step, "writer")?;
                let logical = s(step, "stream")?.to_string();
                for _ in 0..n(step, "blocks", 1) {
                    let events = self.generate(&logical, &step["events"]);
                    let args = json!({"writer": writer, "events": events});
                    if let Some(ans) = self.call("writer_send", args, step).await? {
                        if ans["ok"] == true {
                            self.record_sent(&logical, &events);
                        }
                    }
                }
            }
            "writer_flush" | "writer_close" => {
                let args = json!({"writer": s(step, "writer")?});
                if let Some(ans) = self.call(what, args, step).await? {
                    if let Some(d) = step.get("durable_through") {
                        ensure!(
                            ans["durable_through"] == *d,
                            "durable_through {} is not {d}",
                            ans["durable_through"]
                        );
                    }
                }
            }
            "reader_open" => {
                let from = self.var(step["from"].as_str().unwrap_or("earliest"))?;
                let mut args = json!({
                    "reader": s(step, "reader")?,
                    "stream": self.stream(s(step, "stream")?),
                    "from": from,
                });
                if let Some(m) = step.get("max_events") {
                    args["max_events"] = m.clone();
                }
                if step.get("expect_error").is_none() {
                    self.readers.entry(s(step, "reader")?.to_string()).or_default();
                }
                self.call("reader_open", args, step).await?;
            }
            "reader_read" => {
                let reader = s(step, "reader")?.to_string();
                let args = json!({
                    "reader": reader,
                    "count": n(step, "count", 1),
                    "timeout_ms": n(step, "timeout_ms", 10_000),
                    "hold_ms": n(step, "hold_ms", 0),
                });
                if let Some(ans) = self.call("reader_read", args, step).await? {
                    let log = self.readers.entry(reader).or_default();
                    log.events
                        .extend(ans["events"].as_array().cloned().unwrap_or_default());
                    log.gaps
                        .extend(ans["gaps"].as_array().cloned().unwrap_or_default());
                    log.redelivered += ans["redelivered"].as_u64().unwrap_or(0);
                    if step["exact"] == true {
                        let got = ans["events"].as_array().map_or(0, |e| e.len()) as u64;
                        ensure!(
                            got == n(step, "count", 1),
                            "read {got} events, not {}",
                            n(step, "count", 1)
                        );
                    }
                }
            }
            "reader_close" | "reader_cursor" => {
                let args = json!({"reader": s(step, "reader")?});
                if let Some(ans) = self.call(what, args, step).await? {
                    let c = ans["cursor"]
                        .as_str()
                        .ok_or_else(|| anyhow!("{what} answered no cursor"))?;
                    if let Some(v) = step["save"].as_str() {
                        self.vars.insert(v.to_string(), c.to_string());
                    }
                }
            }
            "sign_vectors" => {
                let text = std::fs::read_to_string(self.env.vectors)?;
                let v: Value = serde_json::from_str(&text)?;
                for case in v["cases"].as_array().ok_or_else(|| anyhow!("no cases"))? {
                    let args = json!({
                        "secret": case["secret"], "t": case["t"], "method": case["method"],
                        "path": case["path"], "body": case["body"],
                    });
                    let ans = self.call("sign", args, step).await?.unwrap_or_default();
                    ensure!(
                        ans["header"] == case["header"],
                        "signed {} as {}, not {}",
                        case["path"],
                        ans["header"],
                        case["header"]
                    );
                }
            }
            "fault" => {
                let action = match s(step, "action")? {
                    "drop" => Action::Drop,
                    "delay" => Action::Delay(Duration::from_millis(n(step, "ms", 500))),
                    "backpressure" => Action::Backpressure(n(step, "ms", 300)),
                    a => bail!("unknown fault action {a}"),
                };
                self.env.proxy.arm(Rule {
                    method: s(step, "method")?.to_string(),
                    path: s(step, "path")?.to_string(),
                    action,
                    times: n(step, "times", 1) as u32,
                    fired: 0,
                });
            }
            "faults_fired" => {
                for r in self.env.proxy.rules() {
                    ensure!(
                        r.fired == r.times,
                        "the fault on {} {} fired {} of {} times: the SDK never made that call",
                        r.method,
                        r.path,
                        r.fired,
                        r.times
                    );
                }
            }
            "check_retry_delay" => self.check_retry_delay()?,
            "restart_server" => {
                let graceful = step["signal"] == "term";
                self.env.server.restart(graceful).await?;
                self.env.proxy.set_upstream(&self.env.server.url);
            }
            "sleep" => tokio::time::sleep(Duration::from_millis(n(step, "ms", 100))).await,
            "tamper" => {
                let c = self.var(&format!("${}", s(step, "var")?))?;
                let mut b = c.into_bytes();
                ensure!(!b.is_empty(), "empty cursor");
                let i = b.len() / 2;
                b[i] = if b[i] == b'A' { b'B' } else { b'A' };
                self.vars
                    .insert(s(step, "into")?.to_string(), String::from_utf8(b)?);
            }
            "check_reader" => self.check_reader(step)?,
            "check_gaps" => self.check_gaps(step).await?,
            other => bail!("unknown step {other:?}"),
        }
        Ok(())
    }

    /// The number an event was generated with, from what a reader got.
    fn number_of(&self, e: &Value) -> anyhow::Result<u64> {
        let value = if let Some(b64) = e["value_b64"].as_str() {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|err| anyhow!("value_b64 that is not base64: {err}"))?;
            serde_json::from_slice::<Value>(&raw)?
        } else {
            e["value"].clone()
        };
        value["n"]
            .as_u64()
            .ok_or_else(|| anyhow!("an event that this run did not write: {e:.200}"))
    }

    fn check_reader(&self, step: &Value) -> anyhow::Result<()> {
        let logical = s(step, "stream")?;
        let names: Vec<&str> = match step["readers"].as_array() {
            Some(a) => a.iter().filter_map(|v| v.as_str()).collect(),
            None => vec![s(step, "reader")?],
        };
        let mut got = Vec::new();
        let mut redelivered = 0;
        for r in &names {
            let log = self.readers.get(*r).ok_or_else(|| anyhow!("no reader {r}"))?;
            got.extend(log.events.iter());
            redelivered += log.redelivered;
        }
        let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
        let mut last_by_key: HashMap<String, u64> = HashMap::new();
        let mut last_offset: HashMap<u64, u64> = HashMap::new();
        let exactly = step["delivery"] != "at_least_once";
        for e in &got {
            let i = self.number_of(e)?;
            let (stream, written) = self
                .events
                .get(&i)
                .ok_or_else(|| anyhow!("event {i} was never written"))?;
            ensure!(
                stream == logical,
                "event {i} of stream {stream} read from {logical}"
            );
            for f in ["key", "headers", "value", "value_b64"] {
                ensure!(
                    e.get(f) == written.get(f)
                        || (f == "headers" && e.get(f).is_none() && written[f].is_null()),
                    "event {i} came back with {f} {:.120} instead of {:.120}",
                    e.get(f).map(|v| v.to_string()).unwrap_or_default(),
                    written.get(f).map(|v| v.to_string()).unwrap_or_default()
                );
            }
            let count = seen.entry(i).or_default();
            *count += 1;
            if *count > 1 {
                ensure!(!exactly, "event {i} was delivered twice");
                continue;
            }
            let key = e["key"].as_str().unwrap_or("").to_string();
            if let Some(prev) = last_by_key.insert(key.clone(), i) {
                ensure!(prev < i, "key {key:?}: event {i} came after event {prev}");
            }
            let (Some(p), Some(o)) = (e["partition"].as_u64(), e["offset"].as_u64()) else {
                bail!("event {i} came without partition and offset");
            };
            if let Some(prev) = last_offset.insert(p, o) {
                ensure!(
                    !exactly || prev < o,
                    "partition {p}: offset {o} came after {prev}"
                );
            }
        }
        let sent = self.sent.get(logical).cloned().unwrap_or_default();
        let missing: Vec<u64> = sent.iter().copied().filter(|i| !seen.contains_key(i)).collect();
        ensure!(
            missing.is_empty(),
            "{} of {} events sent were never read (first: {:?})",
            missing.len(),
            sent.len(),
            &missing[..missing.len().min(5)]
        );
        if let Some(max) = step["redelivered_max"].as_u64() {
            ensure!(
                redelivered <= max,
                "{redelivered} batches were delivered again (at most {max} expected)"
            );
        }
        Ok(())
    }

    async fn check_gaps(&self, step: &Value) -> anyhow::Result<()> {
        let reader = s(step, "reader")?;
        let log = self
            .readers
            .get(reader)
            .ok_or_else(|| anyhow!("no reader {reader}"))?;
        ensure!(
            !log.gaps.is_empty(),
            "retention removed events the reader was about to read, and it reported no gap"
        );
        // from the first gap to the end of the partition, every offset is
        // either in a gap or delivered
        let desc: Value = self
            .http
            .get(format!(
                "{}/v1/streams/{}",
                self.env.server.url,
                self.stream(s(step, "stream")?)
            ))
            .bearer_auth(TOKEN)
            .send()
            .await?
            .json()
            .await?;
        let end = desc["end_offsets"][0]
            .as_u64()
            .ok_or_else(|| anyhow!("no end offset in {desc}"))?;
        let mut covered: Vec<(u64, u64)> = log
            .gaps
            .iter()
            .filter_map(|g| Some((g["from"].as_u64()?, g["to"].as_u64()?)))
            .collect();
        for e in &log.events {
            let o = e["offset"]
                .as_u64()
                .ok_or_else(|| anyhow!("event without offset"))?;
            covered.push((o, o + 1));
        }
        covered.sort_unstable();
        let mut at = covered[0].0;
        for (from, to) in covered {
            ensure!(
                from <= at,
                "offsets {at} to {} were skipped without a gap",
                from - 1
            );
            at = at.max(to);
        }
        ensure!(
            at == end,
            "the reader stopped at offset {at}; the partition ends at {end}"
        );
        Ok(())
    }

    fn check_retry_delay(&self) -> anyhow::Result<()> {
        let log = self.env.proxy.log();
        let rules = self.env.proxy.rules();
        let mut checked = 0;
        for (i, seen) in log.iter().enumerate() {
            let Some(r) = seen.rule else { continue };
            let Action::Backpressure(ms) = rules[r].action else {
                continue;
            };
            let next = log[i + 1..]
                .iter()
                .find(|l| l.method == seen.method && l.path == seen.path)
                .ok_or_else(|| {
                    anyhow!(
                        "{} {} was never sent again after backpressure",
                        seen.method,
                        seen.path
                    )
                })?;
            let waited = next.at.duration_since(seen.at);
            ensure!(
                waited + Duration::from_millis(15) >= Duration::from_millis(ms),
                "{} {} was sent again {} ms after backpressure with retry_after_ms {ms}",
                seen.method,
                seen.path,
                waited.as_millis()
            );
            checked += 1;
        }
        ensure!(checked > 0, "no backpressure was injected");
        Ok(())
    }
}
