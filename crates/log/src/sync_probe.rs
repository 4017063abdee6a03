//! A seam for crash tests: every `fdatasync` of a segment's data reports
//! the file and how many of its bytes it made durable. A test that kills
//! the process (or drops the log without closing it) then cuts each segment
//! back to what was synced, as a power loss would (the page cache survives
//! a kill, so a kill alone proves nothing about syncs), and checks that
//! everything acknowledged durable is still there.
//!
//! Costs one atomic load per sync when nothing listens.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::RwLock;

type Probe = Box<dyn Fn(&Path, u64) + Send + Sync>;

static SET: AtomicBool = AtomicBool::new(false);
static PROBE: RwLock<Option<Probe>> = RwLock::new(None);

/// Calls `probe(segment file, durable length)` after every sync of a
/// segment's data, in this process, from now on.
pub fn set(probe: impl Fn(&Path, u64) + Send + Sync + 'static) {
    *PROBE.write() = Some(Box::new(probe));
    SET.store(true, Ordering::Release);
}

/// Reports a sync: `len` bytes of `path` are on stable storage.
pub(crate) fn synced(path: &Path, len: u64) {
    if SET.load(Ordering::Acquire) {
        if let Some(p) = PROBE.read().as_ref() {
            p(path, len);
        }
    }
}
