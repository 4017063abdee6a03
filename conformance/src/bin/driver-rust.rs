//! The conformance driver of the Rust client (`crates/client`): reads
//! commands as JSON lines on stdin and answers each with one JSON line on
//! stdout (conformance/README.md describes the commands).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchboard_client::wire::{CreateStream, Event};
use switchboard_client::{
    Client, ClientOptions, Compression, Error, Reader, ReaderOptions, Writer, WriterOptions,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[derive(Default)]
struct Driver {
    client: Option<Client>,
    writers: HashMap<String, Writer>,
    readers: HashMap<String, Reader>,
}

type Answer = Result<Value, Value>;

fn error_value(e: &Error) -> Value {
    let (status, retryable) = match e {
        Error::Api { status, .. } => (Some(*status), e.is_retryable()),
        _ => (None, e.is_retryable()),
    };
    json!({
        "code": e.code().map(|c| c.as_str()),
        "status": status,
        "retryable": retryable,
        "request_id": e.request_id(),
        "message": e.to_string(),
    })
}

fn fail(message: impl std::fmt::Display) -> Value {
    json!({"code": null, "retryable": false, "message": message.to_string()})
}

fn str_arg<'a>(a: &'a Value, k: &str) -> Result<&'a str, Value> {
    a[k].as_str().ok_or_else(|| fail(format!("`{k}` is missing")))
}

fn events_arg(a: &Value) -> Result<Vec<Event>, Value> {
    // values are kept as their JSON text, which only text deserializes to
    serde_json::from_str(&a["events"].to_string()).map_err(|e| fail(format!("bad events: {e}")))
}

impl Driver {
    fn client(&self) -> Result<Client, Value> {
        self.client.clone().ok_or_else(|| fail("connect first"))
    }

    async fn handle(&mut self, cmd: &str, a: &Value) -> Answer {
        match cmd {
            "hello" => Ok(json!({"sdk": "rust", "version": env!("CARGO_PKG_VERSION")})),
            "connect" => {
                let mut opts = ClientOptions::default();
                if let Some(ca) = a["ca_file"].as_str() {
                    opts.ca_cert_pem = Some(std::fs::read(ca).map_err(fail)?);
                }
                let token = str_arg(a, "token")?.to_string();
                let mut c =
                    Client::with_options(str_arg(a, "url")?, &token, opts).map_err(|e| error_value(&e))?;
                c = c.with_compression(match a["compression"].as_str() {
                    Some("gzip") => Compression::Gzip,
                    Some("zstd") => Compression::Zstd,
                    _ => Compression::None,
                });
                if a["token_callback"] == true {
                    c = c.with_token_provider(Arc::new(move || token.clone()));
                }
                self.client = Some(c);
                Ok(json!({}))
            }
            "sign" => {
                let header = sign(a)?;
                Ok(json!({ "header": header }))
            }
            "create_stream" => {
                let req = CreateStream {
                    name: str_arg(a, "name")?.to_string(),
                    partitions: a["partitions"].as_u64().map(|p| p as u32),
                    retention_ms: None,
                    retention_bytes: a["retention_bytes"].as_u64(),
                    encrypt_keys: None,
                };
                let (_, created) = self
                    .client()?
                    .create_stream(&req)
                    .await
                    .map_err(|e| error_value(&e))?;
                Ok(json!({ "created": created }))
            }
            "publish" => {
                let events = events_arg(a)?;
                let ans = self
                    .client()?
                    .publish(str_arg(a, "stream")?, &events, None)
                    .await
                    .map_err(|e| error_value(&e))?;
                Ok(json!({ "offsets": ans.offsets }))
            }
            "writer_open" => {
                let opts = WriterOptions {
                    producer: a["producer"].as_str().map(str::to_string),
                    window: a["window"].as_u64().unwrap_or(8) as usize,
                    ..WriterOptions::default()
                };
                let w = Writer::open(self.client()?, str_arg(a, "stream")?, opts)
                    .await
                    .map_err(|e| error_value(&e))?;
                self.writers.insert(str_arg(a, "writer")?.to_string(), w);
                Ok(json!({}))
            }
            "writer_send" => {
                let events = events_arg(a)?;
                let w = self.writer(a)?;
                let block = w.send(&events).await.map_err(|e| error_value(&e))?;
                Ok(json!({ "block": block }))
            }
            "writer_flush" => {
                let d = self.writer(a)?.flush().await.map_err(|e| error_value(&e))?;
                Ok(json!({ "durable_through": d }))
            }
            "writer_close" => {
                let w = self
                    .writers
                    .remove(str_arg(a, "writer")?)
                    .ok_or_else(|| fail("no such writer"))?;
                let d = w.close().await.map_err(|e| error_value(&e))?;
                Ok(json!({ "durable_through": d }))
            }
            "reader_open" => {
                let opts = ReaderOptions {
                    max_events: a["max_events"].as_u64().map(|m| m as u32),
                    ..ReaderOptions::default()
                };
                let r = Reader::open(self.client()?, str_arg(a, "stream")?, str_arg(a, "from")?, opts)
                    .await
                    .map_err(|e| error_value(&e))?;
                self.readers.insert(str_arg(a, "reader")?.to_string(), r);
                Ok(json!({}))
            }
            "reader_read" => self.read(a).await,
            "reader_cursor" => Ok(json!({ "cursor": self.reader(a)?.cursor() })),
            "reader_close" => {
                let r = self
                    .readers
                    .remove(str_arg(a, "reader")?)
                    .ok_or_else(|| fail("no such reader"))?;
                let c = r.close().await.map_err(|e| error_value(&e))?;
                Ok(json!({ "cursor": c }))
            }
            "bench" => bench(a).await,
            other => Err(
                json!({"code": "unsupported", "retryable": false, "message": format!("unknown command {other}")}),
            ),
        }
    }

    fn writer(&mut self, a: &Value) -> Result<&mut Writer, Value> {
        let name = str_arg(a, "writer")?;
        self.writers.get_mut(name).ok_or_else(|| fail("no such writer"))
    }

    fn reader(&mut self, a: &Value) -> Result<&mut Reader, Value> {
        let name = str_arg(a, "reader")?;
        self.readers.get_mut(name).ok_or_else(|| fail("no such reader"))
    }

    /// Reads batches until `count` events came or `timeout_ms` passed,
    /// holding each batch `hold_ms` before its ack; a batch whose ack did
    /// not move the cursor (its session was lost) is not counted: it comes
    /// again.
    async fn read(&mut self, a: &Value) -> Answer {
        let count = a["count"].as_u64().unwrap_or(1) as usize;
        let deadline = Instant::now() + Duration::from_millis(a["timeout_ms"].as_u64().unwrap_or(10_000));
        let hold = Duration::from_millis(a["hold_ms"].as_u64().unwrap_or(0));
        let r = self.reader(a)?;
        let (mut events, mut gaps, mut redelivered) = (Vec::new(), Vec::new(), 0u64);
        while events.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            r.set_wait_ms(left.as_millis().min(1000) as u64);
            let batch = r.next().await.map_err(|e| error_value(&e))?;
            if batch.batch == 0 {
                continue;
            }
            tokio::time::sleep(hold).await;
            let before = r.cursor().to_string();
            let after = r.ack().await.map_err(|e| error_value(&e))?.to_string();
            if after == before {
                redelivered += 1;
                continue;
            }
            events.extend(
                batch
                    .events
                    .into_iter()
                    .map(|e| serde_json::to_value(e).unwrap_or_default()),
            );
            gaps.extend(
                batch
                    .gaps
                    .into_iter()
                    .map(|g| serde_json::to_value(g).unwrap_or_default()),
            );
        }
        Ok(json!({"events": events, "gaps": gaps, "redelivered": redelivered, "cursor": r.cursor()}))
    }
}

fn sign(a: &Value) -> Result<String, Value> {
    let t = a["t"].as_u64().ok_or_else(|| fail("`t` is missing"))?;
    Ok(switchboard_client::sign(
        str_arg(a, "secret")?.as_bytes(),
        t,
        str_arg(a, "method")?,
        str_arg(a, "path")?,
        str_arg(a, "body")?.as_bytes(),
    ))
}

/// Publishes `events` 1 KiB events in blocks of `block` through a Writer,
/// then consumes them through a Reader; rates in events/s.
async fn bench(a: &Value) -> Answer {
    let client =
        Client::new_uncompressed(str_arg(a, "url")?, str_arg(a, "token")?).map_err(|e| error_value(&e))?;
    let stream = str_arg(a, "stream")?;
    let total = a["events"].as_u64().unwrap_or(100_000);
    let block = a["block"].as_u64().unwrap_or(500);
    let size = a["size"].as_u64().unwrap_or(1024) as usize;
    let req = CreateStream {
        name: stream.to_string(),
        partitions: Some(4),
        retention_ms: None,
        retention_bytes: None,
        encrypt_keys: None,
    };
    client.create_stream(&req).await.map_err(|e| error_value(&e))?;
    // a value of about `size` bytes as JSON
    let pad = "x".repeat(size.saturating_sub(40));
    let started = Instant::now();
    let mut w = Writer::open(client.clone(), stream, WriterOptions::default())
        .await
        .map_err(|e| error_value(&e))?;
    let mut sent = 0;
    while sent < total {
        let n = block.min(total - sent);
        let events = (sent..sent + n)
            .map(|i| {
                let mut e = Event::json(&json!({"i": i, "pad": pad}))?;
                e.key = Some(format!("k{}", i % 64));
                Ok(e)
            })
            .collect::<serde_json::Result<Vec<Event>>>()
            .map_err(fail)?;
        w.send(&events).await.map_err(|e| error_value(&e))?;
        sent += n;
    }
    w.close().await.map_err(|e| error_value(&e))?;
    let publish = total as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let opts = ReaderOptions {
        max_events: Some(block as u32),
        wait_ms: 1000,
        ..ReaderOptions::default()
    };
    let mut r = Reader::open(client, stream, "earliest", opts)
        .await
        .map_err(|e| error_value(&e))?;
    let mut got = 0;
    while got < total {
        let b = r.next().await.map_err(|e| error_value(&e))?;
        got += b.events.len() as u64;
        r.ack().await.map_err(|e| error_value(&e))?;
    }
    let consume = total as f64 / started.elapsed().as_secs_f64();
    let _ = r.close().await;
    Ok(json!({"publish_events_per_s": publish, "consume_events_per_s": consume}))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut d = Driver::default();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut out = tokio::io::stdout();
    while let Some(line) = lines.next_line().await? {
        let a: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => json!({"cmd": "", "parse_error": e.to_string()}),
        };
        let id = a["id"].clone();
        let r = match a["parse_error"].as_str() {
            Some(e) => Err(fail(format!("not JSON: {e}"))),
            None => d.handle(a["cmd"].as_str().unwrap_or(""), &a).await,
        };
        let mut answer = match r {
            Ok(mut v) => {
                v["ok"] = json!(true);
                v
            }
            Err(e) => json!({"ok": false, "error": e}),
        };
        answer["id"] = id;
        let mut bytes = serde_json::to_vec(&answer).unwrap_or_default();
        bytes.push(b'\n');
        out.write_all(&bytes).await?;
        out.flush().await?;
    }
    Ok(())
}
