//! A thread that reads an internal topic from its start and applies each
//! record to an in-memory view, and lets callers wait until the view has
//! applied a given offset (such as a marker they just wrote).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use switchboard_store::{Error, Result};
use tokio::sync::Notify;

/// Applies records of the tailed topic.
pub(crate) trait Apply: Send + Sync + 'static {
    /// One record (its key, its value: `None` for a tombstone).
    fn apply(&self, partition: u32, offset: u64, key: &[u8], value: Option<&[u8]>);
}

/// A running tail of one topic.
pub(crate) struct Tail {
    topic: String,
    /// Next offset to apply, per partition.
    applied: Mutex<Vec<u64>>,
    progress: Notify,
    stop: AtomicBool,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Tail {
    /// Starts tailing `topic` (of `partitions` partitions) from its start.
    pub(crate) fn start(
        mut cfg: ClientConfig,
        topic: &str,
        partitions: u32,
        view: Arc<dyn Apply>,
    ) -> Result<Arc<Tail>> {
        // librdkafka wants a group for `assign`; it is never joined
        cfg.set("group.id", format!("switchboard.tail.{topic}"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("fetch.wait.max.ms", "50");
        let consumer: BaseConsumer<crate::Quiet> = cfg
            .create_with_context(crate::Quiet)
            .map_err(|e| Error::Unavailable(format!("kafka consumer: {e}")))?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p as i32, Offset::Beginning)
                .map_err(|e| Error::Unavailable(format!("kafka assign: {e}")))?;
        }
        consumer
            .assign(&tpl)
            .map_err(|e| Error::Unavailable(format!("kafka assign: {e}")))?;
        let tail = Arc::new(Tail {
            topic: topic.to_string(),
            applied: Mutex::new(vec![0; partitions as usize]),
            progress: Notify::new(),
            stop: AtomicBool::new(false),
            thread: Mutex::new(None),
        });
        let t = tail.clone();
        let handle = std::thread::Builder::new()
            .name(format!("tail-{topic}"))
            .spawn(move || t.run(consumer, view))
            .map_err(|e| Error::Unavailable(format!("cannot start a thread: {e}")))?;
        *tail.thread.lock() = Some(handle);
        Ok(tail)
    }

    fn run(&self, consumer: BaseConsumer<crate::Quiet>, view: Arc<dyn Apply>) {
        while !self.stop.load(Ordering::Acquire) {
            let mut any = false;
            let mut timeout = Duration::from_millis(100);
            // apply what is there (up to a bound), then wake the waiters
            for _ in 0..4096 {
                let Some(m) = consumer.poll(timeout) else { break };
                timeout = Duration::ZERO;
                match m {
                    Ok(m) => {
                        self.take(&m, &*view);
                        any = true;
                    }
                    Err(e) => tracing::debug!(topic = %self.topic, error = %e, "kafka tail"),
                }
            }
            if any {
                self.progress.notify_waiters();
            }
        }
    }

    fn take(&self, m: &BorrowedMessage<'_>, view: &dyn Apply) {
        let (p, o) = (m.partition() as u32, m.offset() as u64);
        view.apply(p, o, m.key().unwrap_or_default(), m.payload());
        if let Some(a) = self.applied.lock().get_mut(p as usize) {
            *a = (*a).max(o + 1);
        }
    }

    /// Waits until the record at `offset` of `partition` is applied.
    pub(crate) async fn wait_applied(&self, partition: u32, offset: u64, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let n = self.progress.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if self
                .applied
                .lock()
                .get(partition as usize)
                .is_some_and(|&a| a > offset)
            {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, n).await.is_err() {
                return Err(Error::Unavailable(format!(
                    "kafka: {} did not catch up within {timeout:?}",
                    self.topic
                )));
            }
        }
    }

    /// Stops the thread.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.thread.lock().take() {
            let _ = h.join();
        }
    }
}
