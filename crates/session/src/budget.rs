//! The node-wide memory budget: every read-ahead buffer, pending batch and
//! staged or in-flight write block draws on it, so that the memory a node
//! holds for its sessions is bounded by one number, however many sessions
//! it has.
//!
//! A [`Lease`] is a claim on the budget, given back when it drops. Writes
//! ask before they take memory and answer `backpressure` when the budget is
//! spent; reads may overdraw by a little, so that a reader whose buffer is
//! empty always gets its next events (fetching on demand).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What a lease holds memory for; each kind has its own gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Events fetched ahead of reads (`switchboard_readahead_bytes`).
    ReadAhead,
    /// Read answers waiting for their ack (`switchboard_pending_batch_bytes`).
    Pending,
    /// Staged and in-flight write blocks (`switchboard_write_buffer_bytes`).
    Write,
}

impl Kind {
    fn gauge(self) -> &'static str {
        match self {
            Kind::ReadAhead => "switchboard_readahead_bytes",
            Kind::Pending => "switchboard_pending_batch_bytes",
            Kind::Write => "switchboard_write_buffer_bytes",
        }
    }

    /// The gauges follow `delta` bytes taken (or given back, negative).
    fn moved(self, delta: f64) {
        metrics::gauge!("switchboard_memory_used_bytes").increment(delta);
        metrics::gauge!(self.gauge()).increment(delta);
    }

    fn label(self) -> &'static str {
        match self {
            Kind::ReadAhead => "readahead",
            Kind::Pending => "pending",
            Kind::Write => "write",
        }
    }
}

/// One node's memory budget.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
}

impl MemoryBudget {
    /// A budget of `limit` bytes; sets the gauges it owns.
    pub fn new(limit: usize) -> Arc<MemoryBudget> {
        metrics::gauge!("switchboard_memory_budget_bytes").set(limit as f64);
        metrics::gauge!("switchboard_memory_used_bytes").set(0.0);
        for k in [Kind::ReadAhead, Kind::Pending, Kind::Write] {
            metrics::gauge!(k.gauge()).set(0.0);
        }
        Arc::new(MemoryBudget {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// The budget, bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held by leases now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// Bytes left before the budget is spent.
    pub fn available(&self) -> usize {
        self.limit.saturating_sub(self.used())
    }

    /// An empty lease, to grow later.
    pub fn empty(self: &Arc<Self>, kind: Kind) -> Lease {
        Lease {
            budget: self.clone(),
            bytes: 0,
            kind,
        }
    }

    /// `bytes` if the budget has them, else `None` (counted as a refusal).
    pub fn try_take(self: &Arc<Self>, kind: Kind, bytes: usize) -> Option<Lease> {
        let mut used = self.used();
        loop {
            let next = used.checked_add(bytes).filter(|&n| n <= self.limit);
            let Some(next) = next else {
                metrics::counter!("switchboard_memory_refusals_total", "kind" => kind.label()).increment(1);
                return None;
            };
            match self
                .used
                .compare_exchange_weak(used, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(now) => used = now,
            }
        }
        kind.moved(bytes as f64);
        Some(Lease {
            budget: self.clone(),
            bytes,
            kind,
        })
    }

    /// `bytes` for a block about to be written or published, or the
    /// `backpressure` a write answers when the budget does not have them.
    pub(crate) fn take_for_write(self: &Arc<Self>, bytes: usize) -> crate::Result<Lease> {
        self.try_take(Kind::Write, bytes).ok_or_else(|| {
            metrics::counter!("switchboard_backpressure_total", "reason" => "memory").increment(1);
            crate::SessionError::Backpressure {
                reason: "the node's memory budget is spent".into(),
                retry_after_ms: 100,
            }
        })
    }

    /// `bytes` whether or not the budget has them: for memory already
    /// taken, or that a read must have to answer at all.
    pub fn force(self: &Arc<Self>, kind: Kind, bytes: usize) -> Lease {
        let mut l = self.empty(kind);
        l.grow(bytes);
        l
    }

    fn add(&self, kind: Kind, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::AcqRel);
        kind.moved(bytes as f64);
    }

    fn sub(&self, kind: Kind, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
        kind.moved(-(bytes as f64));
    }
}

/// A claim on a [`MemoryBudget`], given back when it drops.
#[derive(Debug)]
pub struct Lease {
    budget: Arc<MemoryBudget>,
    bytes: usize,
    kind: Kind,
}

impl Lease {
    /// Bytes claimed.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Claims `n` more bytes, over the budget if need be.
    pub fn grow(&mut self, n: usize) {
        if n > 0 {
            self.budget.add(self.kind, n);
            self.bytes += n;
        }
    }

    /// Gives back up to `n` bytes.
    pub fn shrink(&mut self, n: usize) {
        let n = n.min(self.bytes);
        if n > 0 {
            self.budget.sub(self.kind, n);
            self.bytes -= n;
        }
    }

    /// Claims exactly `n` bytes: grows (over the budget if need be) or
    /// shrinks.
    pub fn resize(&mut self, n: usize) {
        if n > self.bytes {
            self.grow(n - self.bytes);
        } else {
            self.shrink(self.bytes - n);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.shrink(self.bytes);
    }
}

/// The default budget for a machine with `total` bytes of memory: a quarter
/// of it, at least 64 MiB and at most 2 GiB.
pub fn default_budget(total: u64) -> u64 {
    (total / 4).clamp(64 << 20, 2 << 30)
}

/// The machine's memory, bytes, as Linux reports it (`None` elsewhere),
/// lowered to a cgroup's limit when the process has one.
pub fn machine_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let total = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?
        * 1024;
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    Some(cgroup.map_or(total, |c| c.min(total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_take_and_give_back() {
        let b = MemoryBudget::new(100);
        let a = b.try_take(Kind::Write, 60).expect("room");
        assert!(b.try_take(Kind::Write, 41).is_none());
        let mut c = b.try_take(Kind::Write, 40).expect("room");
        assert_eq!(b.available(), 0);
        c.shrink(10);
        assert_eq!(b.used(), 90);
        c.resize(50);
        assert_eq!(b.used(), 110, "a resize may overdraw");
        drop(a);
        drop(c);
        assert_eq!(b.used(), 0);
        let f = b.force(Kind::ReadAhead, 500);
        assert_eq!(b.used(), 500);
        drop(f);
        assert_eq!(b.available(), 100);
    }

    #[test]
    fn default_is_a_quarter_within_bounds() {
        assert_eq!(default_budget(24 << 30), 2 << 30);
        assert_eq!(default_budget(2 << 30), 512 << 20);
        assert_eq!(default_budget(64 << 20), 64 << 20);
    }
}
