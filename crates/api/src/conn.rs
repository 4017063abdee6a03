//! Connections of the API listener: a cap on how many are open at once,
//! and timeouts, so that slow or idle clients (a request line sent a byte
//! at a time, a connection opened and left) cannot hold connections,
//! memory or file descriptors that served clients need.
//!
//! - **Header timeout**: the head of a request (request line and headers)
//!   must arrive within `header_timeout` of its first byte, or of the
//!   connection's opening for the first request.
//! - **Idle timeout**: a connection on which no byte moves either way for
//!   `idle_timeout` is closed (idle keep-alive, a stalled body, a client
//!   that stopped reading its answer). A request being handled is not
//!   affected: nothing is read from its connection meanwhile.
//! - **Body timeout**: a request body must arrive in full within
//!   `body_timeout` (checked where bodies are read, `crate::body`).
//! - **Connection cap**: at `max_connections` open connections, a new one
//!   is closed at once (counted in `switchboard_connections_refused_total`)
//!   instead of waiting in the kernel's backlog.
//!
//! HTTP/2 connections (h2c, or TLS with ALPN `h2`) get the idle timeout
//! only; their heads are small frames that hyper bounds itself.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Allowed header timeouts, ms.
pub const HEADER_TIMEOUT_MS_RANGE: std::ops::RangeInclusive<u64> = 100..=600_000;
/// Allowed idle timeouts, ms: longer than the longest read wait.
pub const IDLE_TIMEOUT_MS_RANGE: std::ops::RangeInclusive<u64> = 31_000..=3_600_000;
/// Allowed body timeouts, ms.
pub const BODY_TIMEOUT_MS_RANGE: std::ops::RangeInclusive<u64> = 100..=3_600_000;
/// Allowed connection caps.
pub const MAX_CONNECTIONS_RANGE: std::ops::RangeInclusive<u64> = 1..=1_000_000;
/// Allowed `max_handshakes`.
pub const MAX_HANDSHAKES_RANGE: std::ops::RangeInclusive<u64> = 1..=100_000;
/// Allowed `body_buffer_bytes`: at least one largest body, at most 1 TiB.
pub const BODY_BUFFER_BYTES_RANGE: std::ops::RangeInclusive<u64> =
    switchboard_proto::wire::limits::MAX_BODY_BYTES as u64..=1 << 40;

/// Bounds on the listener's connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Longest time for a request's head, from its first byte.
    pub header_timeout: Duration,
    /// Longest time without a byte either way.
    pub idle_timeout: Duration,
    /// Longest time for a request body, in full.
    pub body_timeout: Duration,
    /// Most open connections.
    pub max_connections: usize,
    /// Most TLS handshakes in progress; more wait (within the header
    /// timeout) for their turn.
    pub max_handshakes: usize,
    /// Most concurrent requests on one HTTP/2 connection.
    pub max_streams: u32,
    /// Most bytes of request bodies held at once, node-wide.
    pub body_buffer_bytes: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            body_timeout: Duration::from_secs(60),
            max_connections: 4096,
            max_handshakes: 256,
            max_streams: 128,
            body_buffer_bytes: 256 << 20,
        }
    }
}

/// Where an HTTP/1 connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Between requests.
    Idle,
    /// Reading a request head that must be complete by the deadline.
    Head(Instant),
    /// The head is in; the body and the answer follow.
    Request,
    /// HTTP/2: only the idle timeout applies.
    H2,
}

/// A connection's I/O with the header and idle timeouts.
pub struct Guarded<T> {
    io: T,
    limits: ConnLimits,
    phase: Phase,
    /// Bytes of the head seen so far, for the blank line that ends it (the
    /// last 3 are enough).
    tail: [u8; 3],
    first: bool,
    last_io: Instant,
    timer: Pin<Box<Sleep>>,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

impl<T> Guarded<T> {
    /// Wraps a freshly accepted connection.
    pub fn new(io: T, limits: ConnLimits) -> Guarded<T> {
        let now = Instant::now();
        Guarded {
            io,
            limits,
            phase: Phase::Head(now + limits.header_timeout),
            tail: [0; 3],
            first: true,
            last_io: now,
            timer: Box::pin(tokio::time::sleep_until(now + limits.idle_timeout)),
        }
    }

    fn deadline(&self) -> Instant {
        let idle = self.last_io + self.limits.idle_timeout;
        match self.phase {
            Phase::Head(d) => d.min(idle),
            _ => idle,
        }
    }

    /// Pending I/O: an error once the deadline has passed, else a wake-up
    /// no later than the deadline. The timer is moved only when the
    /// deadline comes earlier than it is set for (a new request's head);
    /// when it fires early (the connection moved since), it is set again.
    /// So busy connections do not touch the timer wheel on every I/O.
    fn check(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            let deadline = self.deadline();
            if self.timer.deadline() > deadline {
                self.timer.as_mut().reset(deadline);
            }
            match self.timer.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) if Instant::now() < deadline => {
                    self.timer.as_mut().reset(deadline);
                }
                Poll::Ready(()) => {
                    let head =
                        matches!(self.phase, Phase::Head(d) if d <= self.last_io + self.limits.idle_timeout);
                    let (what, reason) = if head {
                        ("request head not received in time", "header")
                    } else {
                        ("connection idle for too long", "idle")
                    };
                    metrics::counter!("switchboard_connections_timed_out_total", "reason" => reason)
                        .increment(1);
                    return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, what));
                }
            }
        }
    }

    fn saw_read(&mut self, bytes: &[u8]) {
        self.last_io = Instant::now();
        if self.first {
            self.first = false;
            if bytes.starts_with(&H2_PREFACE[..bytes.len().min(H2_PREFACE.len())]) && bytes.len() >= 3 {
                self.phase = Phase::H2;
                return;
            }
        }
        match self.phase {
            Phase::H2 | Phase::Request => return,
            Phase::Idle => {
                self.phase = Phase::Head(self.last_io + self.limits.header_timeout);
                self.tail = [0; 3];
            }
            Phase::Head(_) => {}
        }
        // the head ends at the first blank line
        let mut window = [0u8; 4];
        window[..3].copy_from_slice(&self.tail);
        for &b in bytes {
            window.copy_within(1.., 0);
            window[3] = b;
            if &window == b"\r\n\r\n" || window[2..] == *b"\n\n" {
                self.phase = Phase::Request;
                return;
            }
        }
        self.tail.copy_from_slice(&window[1..]);
    }

    /// After a write: progress renews the connection, a stall is timed.
    fn wrote(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match r {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.saw_write();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.check(cx).map(Err),
        }
    }

    fn saw_write(&mut self) {
        self.last_io = Instant::now();
        // an answer is going out: what is read next is the next request
        if self.phase == Phase::Request {
            self.phase = Phase::Idle;
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut me.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                if !new.is_empty() {
                    me.saw_read(new);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => me.check(cx).map(Err),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.io).poll_write(cx, data);
        me.wrote(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.io).poll_write_vectored(cx, bufs);
        me.wrote(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Counts open connections against the cap; one per connection, released
/// when it closes.
#[derive(Clone)]
pub struct Gate {
    slots: Arc<tokio::sync::Semaphore>,
}

/// An open connection's place under the cap.
pub struct Slot {
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        metrics::gauge!("switchboard_connections_open").decrement(1.0);
    }
}

impl Gate {
    /// A gate for `max` connections.
    pub fn new(max: usize) -> Gate {
        metrics::gauge!("switchboard_connections_open").set(0.0);
        Gate {
            slots: Arc::new(tokio::sync::Semaphore::new(max.max(1))),
        }
    }

    /// A place for a new connection, or `None` at the cap (the caller closes
    /// the connection).
    pub fn enter(&self) -> Option<Slot> {
        match self.slots.clone().try_acquire_owned() {
            Ok(p) => {
                metrics::gauge!("switchboard_connections_open").increment(1.0);
                Some(Slot { _permit: p })
            }
            Err(_) => {
                metrics::counter!("switchboard_connections_refused_total").increment(1);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits() -> ConnLimits {
        ConnLimits {
            header_timeout: Duration::from_millis(200),
            idle_timeout: Duration::from_millis(500),
            body_timeout: Duration::from_secs(1),
            max_connections: 2,
            ..ConnLimits::default()
        }
    }

    #[tokio::test]
    async fn a_slow_head_times_out_and_a_complete_one_does_not() {
        let (client, server) = tokio::io::duplex(1024);
        let mut g = Guarded::new(server, limits());
        let (_cr, mut cw) = tokio::io::split(client);
        cw.write_all(b"GET / HT").await.unwrap();
        let mut buf = [0u8; 64];
        let n = g.read(&mut buf).await.unwrap();
        assert_eq!(n, 8);
        let e = g.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("head"), "{e}");

        let (client, server) = tokio::io::duplex(1024);
        let mut g = Guarded::new(server, limits());
        let (mut cr2, mut cw2) = tokio::io::split(client);
        cw2.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let n = g.read(&mut buf).await.unwrap();
        assert!(n > 0);
        // past the header timeout, within the idle timeout: still open
        let t = Instant::now();
        g.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        let e = g.read(&mut buf).await.unwrap_err();
        assert!(e.to_string().contains("idle"), "{e}");
        assert!(t.elapsed() >= Duration::from_millis(450), "{:?}", t.elapsed());
        // the client got the answer
        let n = cr2.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    }

    #[test]
    fn the_gate_refuses_past_the_cap() {
        let g = Gate::new(2);
        let a = g.enter().unwrap();
        let _b = g.enter().unwrap();
        assert!(g.enter().is_none());
        drop(a);
        assert!(g.enter().is_some());
    }
}
