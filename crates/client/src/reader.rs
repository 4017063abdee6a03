//! The client half of `read -> ack`.

use std::time::Duration;

use bytes::Bytes;
use switchboard_proto::wire::{Allocate, Mode, Read, ReadAnswer};

use crate::{Backoff, Client, Error, Result, Session};

/// How a [`Reader`] reads.
#[derive(Debug, Clone)]
pub struct ReaderOptions {
    /// Events per batch (server default 500).
    pub max_events: Option<u32>,
    /// Bytes per batch (server default 1 MiB).
    pub max_bytes: Option<u64>,
    /// Long-poll wait of each read.
    pub wait_ms: u64,
    /// Only these partitions.
    pub partitions: Option<Vec<u32>>,
    /// Retry policy of each call.
    pub backoff: Backoff,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            max_events: None,
            max_bytes: None,
            wait_ms: 1000,
            partitions: None,
            backoff: Backoff::default(),
        }
    }
}

/// Reads a stream batch by batch: [`Reader::next`], process, [`Reader::ack`].
///
/// The reader keeps the cursor after the last acked batch. When its session
/// is lost (expired, node gone), it allocates a new one from that cursor:
/// events after it are delivered again if their batch was not acked, and
/// never skipped. While a batch is out and not acked, a task renews the
/// session's lease (a third of `lease_ms` apart), so that an application
/// may work on a batch for longer than the lease.
pub struct Reader {
    client: Client,
    stream: String,
    opts: ReaderOptions,
    cursor: String,
    session: Option<Session>,
    pending: Option<u64>,
    lease_ms: u64,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop_heartbeat();
    }
}

impl Reader {
    /// Opens a reader from `from`: `earliest`, `latest` or a saved cursor.
    pub async fn open(client: Client, stream: &str, from: &str, opts: ReaderOptions) -> Result<Reader> {
        let mut r = Reader {
            client,
            stream: stream.to_string(),
            opts,
            cursor: from.to_string(),
            session: None,
            pending: None,
            lease_ms: 30_000,
            heartbeat: None,
        };
        r.allocate().await?;
        Ok(r)
    }

    /// The cursor after the last acked batch: save it to resume later.
    pub fn cursor(&self) -> &str {
        &self.cursor
    }

    /// Changes the batch size of the next reads (a pending batch is still
    /// returned whole).
    pub fn set_max_events(&mut self, max_events: Option<u32>) {
        self.opts.max_events = max_events;
    }

    /// Changes how long the next reads wait for events.
    pub fn set_wait_ms(&mut self, wait_ms: u64) {
        self.opts.wait_ms = wait_ms;
    }

    /// The session in use, if any.
    pub fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    async fn allocate(&mut self) -> Result<()> {
        let req = Allocate {
            stream: self.stream.clone(),
            mode: Mode::Read,
            cursor: Some(self.cursor.clone()),
            partitions: self.opts.partitions.clone(),
            producer: None,
        };
        let mut backoff = self.opts.backoff.clone();
        loop {
            match self.client.allocate(&req).await {
                Ok(a) => {
                    if let Some(c) = &a.cursor {
                        self.cursor = c.clone();
                    }
                    self.stop_heartbeat();
                    self.session = Some(Session::new(&a));
                    self.lease_ms = a.lease_ms;
                    self.pending = None;
                    return Ok(());
                }
                Err(e) => retry_or_fail(&mut backoff, e).await?,
            }
        }
    }

    /// The next batch: the pending one again if it was not acked, else new
    /// events (an empty answer, batch 0, when none came within `wait_ms`).
    pub async fn next(&mut self) -> Result<ReadAnswer> {
        let raw = self.next_raw().await?;
        serde_json::from_slice(&raw.body).map_err(|e| Error::Protocol(format!("invalid read answer: {e}")))
    }

    /// Like [`Reader::next`], the answer's JSON undecoded but for its batch
    /// number: for consumers that parse events their own way (or only
    /// forward them) and should not pay for decoding twice.
    pub async fn next_raw(&mut self) -> Result<RawBatch> {
        #[derive(serde::Deserialize)]
        struct Head {
            batch: u64,
        }
        let req = Read {
            max_events: self.opts.max_events,
            max_bytes: self.opts.max_bytes,
            wait_ms: Some(self.opts.wait_ms),
        };
        let mut backoff = self.opts.backoff.clone();
        loop {
            let Some(s) = self.session.clone() else {
                self.allocate().await?;
                continue;
            };
            match self.client.read_raw(&s, &req).await {
                Ok(body) => {
                    let head: Head = serde_json::from_slice(&body)
                        .map_err(|e| Error::Protocol(format!("invalid read answer: {e}")))?;
                    if head.batch != 0 {
                        self.pending = Some(head.batch);
                        self.start_heartbeat(&s);
                    }
                    return Ok(RawBatch {
                        batch: head.batch,
                        body,
                    });
                }
                Err(e) if e.is_session_gone() => {
                    tracing::info!(stream = %self.stream, "read session gone, allocating again from the cursor");
                    self.stop_heartbeat();
                    self.session = None;
                    self.pending = None;
                }
                Err(e) => retry_or_fail(&mut backoff, e).await?,
            }
        }
    }

    /// Acks the pending batch; returns the new cursor. If the session was
    /// lost before the ack landed, the reader moves to a new session at the
    /// previous cursor and the batch will be delivered again.
    pub async fn ack(&mut self) -> Result<&str> {
        let Some(batch) = self.pending else {
            return Ok(&self.cursor);
        };
        let mut backoff = self.opts.backoff.clone();
        loop {
            let Some(s) = self.session.clone() else {
                self.pending = None;
                return Ok(&self.cursor);
            };
            match self.client.ack(&s, batch).await {
                Ok(a) => {
                    self.stop_heartbeat();
                    self.cursor = a.cursor;
                    self.pending = None;
                    return Ok(&self.cursor);
                }
                Err(e) if e.is_session_gone() => {
                    self.stop_heartbeat();
                    self.session = None;
                    self.pending = None;
                    return Ok(&self.cursor);
                }
                Err(e) => retry_or_fail(&mut backoff, e).await?,
            }
        }
    }

    /// Keeps the session's lease while a batch is out.
    fn start_heartbeat(&mut self, s: &Session) {
        if self.heartbeat.is_some() {
            return;
        }
        let (client, s) = (self.client.clone(), s.clone());
        let every = Duration::from_millis((self.lease_ms / 3).max(100));
        self.heartbeat = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                // a failed renewal shows at the ack, which handles it
                if let Err(e) = client.session_info(&s).await {
                    if e.is_session_gone() {
                        return;
                    }
                }
            }
        }));
    }

    fn stop_heartbeat(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }

    /// Disposes the session; returns the cursor to resume from.
    pub async fn close(mut self) -> Result<String> {
        self.stop_heartbeat();
        if let Some(s) = self.session.take() {
            // best effort: the lease ends it anyway
            let _ = self.client.dispose(&s).await;
        }
        Ok(std::mem::take(&mut self.cursor))
    }
}

/// A read answer as received.
#[derive(Debug, Clone)]
pub struct RawBatch {
    /// Batch number (0: nothing came).
    pub batch: u64,
    /// The answer's JSON, `{"batch", "events", "cursor"}`.
    pub body: Bytes,
}

/// Sleeps per `backoff` if `e` is worth retrying, else returns it.
pub(crate) async fn retry_or_fail(backoff: &mut Backoff, e: Error) -> Result<()> {
    if !e.is_retryable() {
        return Err(e);
    }
    let floor = match &e {
        Error::Api { retry_after_ms, .. } => retry_after_ms.map(Duration::from_millis),
        _ => None,
    };
    match backoff.next_delay(floor) {
        Some(d) => {
            tracing::debug!(error = %e, delay_ms = d.as_millis() as u64, "retrying");
            tokio::time::sleep(d).await;
            Ok(())
        }
        None => Err(Error::GaveUp {
            attempts: backoff.attempts(),
            last: Box::new(e),
        }),
    }
}
