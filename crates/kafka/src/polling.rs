//! A producer whose events (delivery reports, errors, logs) are served by a
//! thread of its own that sleeps until librdkafka has some.
//!
//! rdkafka's `ThreadedProducer` serves them with `poll(100 ms)` in a loop,
//! and `BaseProducer::poll` hands librdkafka the time left to its deadline
//! in whole milliseconds, rounded down: the last millisecond of every
//! 100 ms turns into a busy loop of zero-timeout polls. That is about 1% of
//! a core per producer, idle or not: 8% of a core for a node's eight
//! producers, measured on an idle node. Here librdkafka calls back when the
//! queue stops being empty, and the thread waits on a condition variable
//! in between.

use std::ffi::c_void;
use std::ops::Deref;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use rdkafka::bindings as rdsys;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, NoCustomPartitioner, Producer};
use switchboard_store::{Error, Result};

use crate::produce::Ctx;

type Base = BaseProducer<Ctx, NoCustomPartitioner>;

/// How long the serving thread sleeps at most without a wake-up (a guard:
/// librdkafka calls back on every event that finds its queue empty).
const IDLE_WAKE: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Wake {
    state: Mutex<WakeState>,
    cv: Condvar,
}

#[derive(Default)]
struct WakeState {
    /// Events were queued since the thread last looked.
    queued: bool,
    /// The producer is dropping: the thread ends.
    stop: bool,
}

/// A handle of a producer's main queue in librdkafka, destroyed with it.
struct Queue(*mut rdsys::rd_kafka_queue_t);

impl Drop for Queue {
    fn drop(&mut self) {
        // SAFETY: the handle `main_queue` gave, not used after this.
        #[allow(unsafe_code)]
        unsafe {
            rdsys::rd_kafka_queue_destroy(self.0);
        }
    }
}

// SAFETY: librdkafka's queue handles may be used from any thread.
#[allow(unsafe_code)]
unsafe impl Send for Queue {}

/// A librdkafka producer (derefs to rdkafka's `BaseProducer`) with the
/// thread that serves its events.
pub(crate) struct KProducer {
    base: Arc<Base>,
    wake: Arc<Wake>,
    thread: Option<JoinHandle<()>>,
}

/// librdkafka's callback (on one of its threads, holding the queue's lock)
/// when an event lands in an empty queue: it only flags and signals.
#[allow(unsafe_code)]
unsafe extern "C" fn on_event(_rk: *mut rdsys::rd_kafka_t, opaque: *mut c_void) {
    // SAFETY: `opaque` is the `Wake` of a live `KProducer`, which disables
    // this callback before it lets its `Wake` go.
    let wake = unsafe { &*(opaque as *const Wake) };
    wake.state.lock().queued = true;
    wake.cv.notify_one();
}

impl KProducer {
    /// Creates the producer and starts its serving thread.
    pub(crate) fn create(cfg: &ClientConfig) -> Result<KProducer> {
        let base: Base = cfg
            .create_with_context(Ctx)
            .map_err(|e| Error::Unavailable(format!("kafka producer: {e}")))?;
        let base = Arc::new(base);
        let wake = Arc::new(Wake::default());
        let queue = main_queue(&base);
        // SAFETY: a valid queue handle; the opaque pointer stays valid
        // until `drop` disables the callback.
        #[allow(unsafe_code)]
        unsafe {
            rdsys::rd_kafka_queue_cb_event_enable(queue.0, Some(on_event), Arc::as_ptr(&wake) as *mut c_void);
        }
        let (b, w) = (base.clone(), wake.clone());
        let thread = std::thread::Builder::new()
            .name("kafka-producer".into())
            .spawn(move || serve(&b, &w, queue));
        match thread {
            Ok(t) => Ok(KProducer {
                base,
                wake,
                thread: Some(t),
            }),
            Err(e) => {
                disable(&base);
                Err(Error::Unavailable(format!("kafka producer thread: {e}")))
            }
        }
    }
}

impl Deref for KProducer {
    type Target = Base;

    fn deref(&self) -> &Base {
        &self.base
    }
}

impl Drop for KProducer {
    fn drop(&mut self) {
        self.wake.state.lock().stop = true;
        self.wake.cv.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        disable(&self.base);
    }
}

fn main_queue(base: &Base) -> Queue {
    // SAFETY: the client pointer is valid while `base` lives; the handle
    // is destroyed when the `Queue` drops.
    #[allow(unsafe_code)]
    Queue(unsafe { rdsys::rd_kafka_queue_get_main(base.client().native_ptr()) })
}

/// Turns the callback off, so that nothing calls into a `Wake` that is gone.
fn disable(base: &Base) {
    let q = main_queue(base);
    // SAFETY: a valid queue handle.
    #[allow(unsafe_code)]
    unsafe {
        rdsys::rd_kafka_queue_cb_event_enable(q.0, None, std::ptr::null_mut());
    }
}

fn queued(q: &Queue) -> usize {
    // SAFETY: a valid queue handle while the `Queue` lives.
    #[allow(unsafe_code)]
    unsafe {
        rdsys::rd_kafka_queue_length(q.0)
    }
}

/// Serves the producer's events until told to stop.
fn serve(base: &Base, wake: &Wake, q: Queue) {
    loop {
        {
            let mut s = wake.state.lock();
            if !s.queued && !s.stop {
                wake.cv.wait_for(&mut s, IDLE_WAKE);
            }
            if s.stop {
                break;
            }
            s.queued = false;
        }
        drain(base, &q);
    }
}

/// Serves what is queued (a zero-timeout poll serves one event).
fn drain(base: &Base, q: &Queue) {
    loop {
        let n = queued(q);
        if n == 0 {
            return;
        }
        for _ in 0..n {
            base.poll(Duration::ZERO);
        }
        if queued(q) >= n {
            // events come as fast as they are served, or one stays: look
            // again shortly rather than spin
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::produce::Ack;
    use rdkafka::producer::BaseRecord;

    /// A report is served when librdkafka has it, not at the next idle
    /// wake-up: a purged record's report is queued at once, and it
    /// arrives well before a second.
    #[tokio::test]
    async fn reports_are_served_as_they_come_not_on_a_timer() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(9);
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", format!("127.0.0.1:{port}"))
            .set("log_level", "0");
        let p = KProducer::create(&cfg).expect("a producer");
        for _ in 0..3 {
            // let the thread settle in its wait
            tokio::time::sleep(Duration::from_millis(50)).await;
            let ack = Ack::with_capacity(1);
            let rec = BaseRecord::<[u8], [u8], _>::with_opaque_to("t", ack.clone()).payload(&b"v"[..]);
            assert!(p.send(rec).is_ok());
            ack.sent();
            let started = std::time::Instant::now();
            p.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
            let r = tokio::time::timeout(Duration::from_secs(5), ack.wait()).await;
            assert!(matches!(r, Ok(Err(_))), "a purged record fails");
            let took = started.elapsed();
            assert!(took < Duration::from_millis(300), "took {took:?}");
        }
    }
}
