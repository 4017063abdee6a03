//! What one run measures: events published and consumed in the measured
//! window, publish-to-ack latency per batch, end-to-end latency of sampled
//! events (the send time travels in each event), and the server's CPU and
//! memory.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::sync::Mutex;

/// Every n-th event consumed gives an end-to-end sample.
pub const SAMPLE_EVERY: u64 = 50;

/// Counters and samples shared by a run's producers and consumers.
#[derive(Default)]
pub struct Stats {
    /// Set after the warm-up: only then is anything counted.
    pub measuring: AtomicBool,
    /// Set at the end of the measured window: producers stop.
    pub stop: AtomicBool,
    pub published: AtomicU64,
    pub consumed: AtomicU64,
    /// Events consumed in all (warm-up included), to know when consumers
    /// have caught up.
    pub consumed_all: AtomicU64,
    pub published_all: AtomicU64,
    pub ack_ms: Samples,
    pub e2e_ms: Samples,
}

impl Stats {
    pub fn measuring(&self) -> bool {
        self.measuring.load(Ordering::Relaxed)
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// A batch of `n` events acknowledged `took` after it was sent.
    pub fn published(&self, n: u64, took: Duration) {
        self.published_all.fetch_add(n, Ordering::Relaxed);
        if self.measuring() {
            self.published.fetch_add(n, Ordering::Relaxed);
            self.ack_ms.push(took.as_secs_f64() * 1e3);
        }
    }

    /// `n` events consumed; `sent_us` the send times of the sampled ones.
    pub fn consumed(&self, n: u64, sent_us: impl IntoIterator<Item = u64>) {
        self.consumed_all.fetch_add(n, Ordering::Relaxed);
        if self.measuring() {
            self.consumed.fetch_add(n, Ordering::Relaxed);
            let now = now_us();
            for s in sent_us {
                self.e2e_ms.push(now.saturating_sub(s) as f64 / 1e3);
            }
        }
    }
}

/// Counts a consumer's events and keeps the send time of every
/// [`SAMPLE_EVERY`]-th, until the batch is acknowledged.
#[derive(Default)]
pub struct Sampler {
    seen: u64,
    batch: u64,
    sent: Vec<u64>,
}

impl Sampler {
    /// One event; `sent` reads its send time, only when it is sampled.
    pub fn see(&mut self, sent: impl FnOnce() -> Option<u64>) {
        self.seen += 1;
        self.batch += 1;
        if self.seen.is_multiple_of(SAMPLE_EVERY) {
            self.sent.extend(sent());
        }
    }

    /// Events since the last acknowledgement.
    pub fn pending(&self) -> u64 {
        self.batch
    }

    /// The batch is acknowledged: counts it.
    pub fn acked(&mut self, stats: &Stats) {
        stats.consumed(self.batch, self.sent.drain(..));
        self.batch = 0;
    }
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A binary event of `size` bytes: its send time (little-endian µs), then
/// filler.
pub fn binary_event(size: usize) -> Vec<u8> {
    let mut v = vec![b'x'; size.max(8)];
    v[..8].copy_from_slice(&now_us().to_le_bytes());
    v
}

/// Writes the send time into the first 8 bytes of a payload made by
/// [`binary_event`], for clients that copy the payload on send (so one
/// buffer serves every event).
pub fn stamp(payload: &mut [u8]) {
    if let Some(head) = payload.get_mut(..8) {
        head.copy_from_slice(&now_us().to_le_bytes());
    }
}

/// The send time of a binary event.
pub fn binary_sent(payload: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(payload.get(..8)?.try_into().ok()?))
}

/// Latency samples, in ms.
#[derive(Default)]
pub struct Samples(Mutex<Vec<f64>>);

impl Samples {
    pub fn push(&self, v: f64) {
        if let Ok(mut s) = self.0.lock() {
            s.push(v);
        }
    }

    /// (p50, p99), or zeros without samples.
    pub fn percentiles(&self) -> (f64, f64) {
        let Ok(mut s) = self.0.lock() else {
            return (0.0, 0.0);
        };
        if s.is_empty() {
            return (0.0, 0.0);
        }
        s.sort_by(f64::total_cmp);
        let at = |q: f64| s[((s.len() - 1) as f64 * q).round() as usize];
        (round3(at(0.5)), round3(at(0.99)))
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// A server process's CPU seconds so far and its peak resident memory.
pub fn process_usage(pid: u32) -> (f64, u64) {
    let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // fields after the command name, which is in parentheses
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some(ticks / clock_ticks())
        })
        .unwrap_or(0.0);
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .unwrap_or(0);
    (cpu, rss * 1024)
}

fn clock_ticks() -> f64 {
    // Linux reports CPU time in USER_HZ, 100 on every supported platform
    100.0
}

/// A producer's batches on their way: at most `window`, each counted when
/// every acknowledgement of it came, oldest first.
pub struct InFlight<F> {
    batches: std::collections::VecDeque<(std::time::Instant, Vec<F>)>,
    window: usize,
    events: u64,
}

impl<F: std::future::Future<Output = anyhow::Result<()>>> InFlight<F> {
    pub fn new(window: usize, events: u64) -> InFlight<F> {
        InFlight {
            batches: std::collections::VecDeque::new(),
            window: window.max(1),
            events,
        }
    }

    /// A batch sent at `sent`; waits while the window is full.
    pub async fn push(
        &mut self,
        sent: std::time::Instant,
        acks: Vec<F>,
        stats: &Stats,
    ) -> anyhow::Result<()> {
        self.batches.push_back((sent, acks));
        while self.batches.len() >= self.window {
            self.settle_oldest(stats).await?;
        }
        Ok(())
    }

    /// Waits for every batch.
    pub async fn drain(&mut self, stats: &Stats) -> anyhow::Result<()> {
        while !self.batches.is_empty() {
            self.settle_oldest(stats).await?;
        }
        Ok(())
    }

    async fn settle_oldest(&mut self, stats: &Stats) -> anyhow::Result<()> {
        if let Some((sent, acks)) = self.batches.pop_front() {
            for a in acks {
                a.await?;
            }
            stats.published(self.events, sent.elapsed());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_samples() {
        let s = Samples::default();
        assert_eq!(s.percentiles(), (0.0, 0.0));
        for v in 1..=100 {
            s.push(f64::from(v));
        }
        assert_eq!(s.percentiles(), (51.0, 99.0));
    }

    #[test]
    fn a_sampler_counts_batches_and_samples_every_nth() {
        let stats = Stats::default();
        stats.measuring.store(true, Ordering::Relaxed);
        let mut s = Sampler::default();
        let mut asked = 0;
        for _ in 0..(SAMPLE_EVERY * 2) {
            s.see(|| {
                asked += 1;
                Some(now_us())
            });
        }
        assert_eq!(asked, 2);
        assert_eq!(s.pending(), SAMPLE_EVERY * 2);
        s.acked(&stats);
        assert_eq!(s.pending(), 0);
        assert_eq!(stats.consumed.load(Ordering::Relaxed), SAMPLE_EVERY * 2);
    }

    #[test]
    fn events_carry_their_send_time() {
        let before = now_us();
        let e = binary_event(1024);
        assert_eq!(e.len(), 1024);
        let sent = binary_sent(&e).unwrap_or(0);
        assert!(sent >= before && sent <= now_us());
        assert_eq!(binary_sent(&[1, 2]), None);
        let mut reused = binary_event(1024);
        let before = now_us();
        stamp(&mut reused);
        assert!(binary_sent(&reused).unwrap_or(0) >= before);
    }
}
