//! The client half of `write -> commit`.

use std::collections::VecDeque;

use bytes::Bytes;
use switchboard_proto::wire::{Allocate, BlockStatus, Event, Mode};
use switchboard_proto::ErrorCode;

use crate::reader::retry_or_fail;
use crate::{encode_events, write_body, Backoff, Client, Error, Result, Session};

/// How a [`Writer`] writes.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Producer id: exactly-once publishing across session loss and restarts.
    pub producer: Option<String>,
    /// Blocks committed but not known durable before `send` waits.
    pub window: usize,
    /// Retry policy of each call.
    pub backoff: Backoff,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            producer: None,
            window: 8,
            backoff: Backoff::default(),
        }
    }
}

struct Kept {
    block: u64,
    events: Bytes,
    submitted: bool,
    sent: std::time::Instant,
}

/// Publishes blocks of events through a write session.
///
/// Every block is kept until the server says it is durable. With a
/// producer id, a lost session is replaced and the kept blocks after the
/// new session's `last_block` are replayed with their numbers: the server
/// stores each event exactly once. Without one, kept blocks are re-sent
/// under new numbers after a session loss (at least once).
pub struct Writer {
    client: Client,
    stream: String,
    opts: WriterOptions,
    session: Option<Session>,
    next_block: u64,
    kept: VecDeque<Kept>,
    durable_through: u64,
    latencies: Vec<std::time::Duration>,
}

impl Writer {
    /// Opens a writer (allocates its session).
    pub async fn open(client: Client, stream: &str, opts: WriterOptions) -> Result<Writer> {
        let mut w = Writer {
            client,
            stream: stream.to_string(),
            opts,
            session: None,
            next_block: 1,
            kept: VecDeque::new(),
            durable_through: 0,
            latencies: Vec::new(),
        };
        w.allocate().await?;
        Ok(w)
    }

    /// The highest block known durable with all before it.
    pub fn durable_through(&self) -> u64 {
        self.durable_through
    }

    /// The number the next block gets.
    pub fn next_block(&self) -> u64 {
        self.next_block
    }

    /// The session in use, if any.
    pub fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    /// Blocks sent and not yet known durable.
    pub fn pending_blocks(&self) -> usize {
        self.kept.len()
    }

    /// For each block seen durable since the last call: the time from its
    /// `send` to the server's durable answer (retries and replays
    /// included), in block order.
    pub fn take_commit_latencies(&mut self) -> Vec<std::time::Duration> {
        std::mem::take(&mut self.latencies)
    }

    async fn allocate(&mut self) -> Result<()> {
        let req = Allocate {
            stream: self.stream.clone(),
            mode: Mode::Write,
            cursor: None,
            partitions: None,
            producer: self.opts.producer.clone(),
        };
        let mut backoff = self.opts.backoff.clone();
        let a = loop {
            match self.client.allocate(&req).await {
                Ok(a) => break a,
                Err(e) => retry_or_fail(&mut backoff, e).await?,
            }
        };
        match a.last_block {
            Some(last) => {
                // producer: block numbers continue; drop what is durable
                while self.kept.front().is_some_and(|k| k.block <= last) {
                    self.kept.pop_front();
                }
                self.durable_through = self.durable_through.max(last);
                if self.kept.is_empty() {
                    self.next_block = self.next_block.max(last + 1);
                }
            }
            None => {
                // no producer: numbers restart at 1 in the new session
                for (i, k) in self.kept.iter_mut().enumerate() {
                    k.block = i as u64 + 1;
                }
                self.next_block = self.kept.len() as u64 + 1;
                self.durable_through = 0;
            }
        }
        for k in self.kept.iter_mut() {
            k.submitted = false;
        }
        self.session = Some(Session::new(&a));
        Ok(())
    }

    /// Sends one block: write, then commit without waiting for durability.
    /// Waits first if `window` blocks are not yet known durable. Returns the
    /// block's number.
    pub async fn send(&mut self, events: &[Event]) -> Result<u64> {
        let json = encode_events(events)?;
        self.send_encoded(json).await
    }

    /// Like [`Writer::send`] with the events' JSON array already encoded.
    pub async fn send_encoded(&mut self, events_json: Bytes) -> Result<u64> {
        while self.kept.len() >= self.opts.window.max(1) {
            let oldest = self.kept.front().map_or(0, |k| k.block);
            self.wait_durable(oldest).await?;
        }
        let block = self.next_block;
        self.next_block += 1;
        self.kept.push_back(Kept {
            block,
            events: events_json,
            submitted: false,
            sent: std::time::Instant::now(),
        });
        self.submit_all().await?;
        Ok(block)
    }

    /// Writes and commits every kept block not yet submitted to the current
    /// session, re-allocating when the session is lost.
    async fn submit_all(&mut self) -> Result<()> {
        let mut backoff = self.opts.backoff.clone();
        if self.session.is_none() {
            // the session was lost after every kept block was submitted to
            // it: a new one takes them all again
            self.allocate().await?;
        }
        let mut i = 0;
        while i < self.kept.len() {
            if self.kept[i].submitted {
                i += 1;
                continue;
            }
            let Some(s) = self.session.clone() else {
                self.allocate().await?;
                i = 0;
                continue;
            };
            let (block, body) = (
                self.kept[i].block,
                write_body(self.kept[i].block, &self.kept[i].events),
            );
            let r = match self.client.write(&s, body).await {
                Ok(_) => self.client.commit(&s, block, false).await.map(|_| ()),
                Err(e) => Err(e),
            };
            match r {
                Ok(()) => {
                    self.kept[i].submitted = true;
                    backoff.reset();
                    i += 1;
                }
                Err(e) if e.is_fenced() => return Err(e),
                Err(e) if e.is_session_gone() => {
                    tracing::info!(stream = %self.stream, "write session gone, allocating again and replaying");
                    self.session = None;
                }
                Err(e) if e.code() == Some(ErrorCode::Conflict) && self.opts.producer.is_some() => {
                    // at or below last_block after a race with another
                    // session of this producer: find out where it stands
                    self.session = None;
                }
                Err(e) => retry_or_fail(&mut backoff, e).await?,
            }
        }
        Ok(())
    }

    async fn wait_durable(&mut self, block: u64) -> Result<()> {
        let mut backoff = self.opts.backoff.clone();
        loop {
            if self.kept.front().is_none_or(|k| k.block > block) {
                return Ok(());
            }
            self.submit_all().await?;
            // a new session's last_block may have covered the block
            if self.kept.front().is_none_or(|k| k.block > block) {
                return Ok(());
            }
            let Some(s) = self.session.clone() else { continue };
            match self.client.commit(&s, block, true).await {
                Ok(a) if a.status == BlockStatus::Durable => {
                    while self.kept.front().is_some_and(|k| k.block <= block) {
                        if let Some(k) = self.kept.pop_front() {
                            self.latencies.push(k.sent.elapsed());
                        }
                    }
                    self.durable_through = self.durable_through.max(block);
                    return Ok(());
                }
                Ok(_) => {}
                Err(e) if e.is_fenced() => return Err(e),
                Err(e) if e.is_session_gone() => self.session = None,
                Err(e) => retry_or_fail(&mut backoff, e).await?,
            }
        }
    }

    /// Waits until every block sent is durable; returns the last block.
    pub async fn flush(&mut self) -> Result<u64> {
        if let Some(last) = self.kept.back().map(|k| k.block) {
            self.wait_durable(last).await?;
        }
        Ok(self.durable_through)
    }

    /// Flushes, then disposes the session.
    pub async fn close(mut self) -> Result<u64> {
        let d = self.flush().await?;
        if let Some(s) = self.session.take() {
            let _ = self.client.dispose(&s).await;
        }
        Ok(d)
    }
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        std::io::Error::other(e.to_string())
    }
}
