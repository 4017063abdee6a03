//! The embedded store: `switchboard-log` on local disk, one process, no
//! services. Blocking log calls run on tokio's blocking pool; waits for new
//! data use the log's async listeners.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::RwLock;
use switchboard_log::{AppendOutcome, Log, LogConfig};

use crate::{
    Appended, Error, Fetched, ProducerState, RecordBatch, Result, Store, StreamSettings, StreamState,
};

/// [`Store`] over the embedded segmented log.
pub struct EmbeddedStore {
    log: RwLock<Option<Arc<Log>>>,
}

impl EmbeddedStore {
    /// Opens (or creates) the log under `root`. Blocks: call before serving
    /// or from a blocking context.
    pub fn open(root: impl AsRef<Path>, cfg: LogConfig) -> Result<EmbeddedStore> {
        let log = Log::open(root, cfg)?;
        Ok(EmbeddedStore {
            log: RwLock::new(Some(Arc::new(log))),
        })
    }

    fn log(&self) -> Result<Arc<Log>> {
        self.log
            .read()
            .clone()
            .ok_or_else(|| Error::Unavailable("store is closed".into()))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Log) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let log = self.log()?;
        tokio::task::spawn_blocking(move || f(&log))
            .await
            .map_err(|e| Error::Unavailable(format!("store task failed: {e}")))?
    }
}

fn settings_of(s: &switchboard_log::StreamSettings) -> StreamSettings {
    StreamSettings {
        partitions: s.partitions,
        retention_ms: s.retention_ms,
        retention_bytes: s.retention_bytes,
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn create_stream(&self, name: &str, settings: StreamSettings) -> Result<bool> {
        let name = name.to_string();
        self.blocking(move |log| {
            let s = switchboard_log::StreamSettings {
                partitions: settings.partitions,
                retention_ms: settings.retention_ms,
                retention_bytes: settings.retention_bytes,
            };
            Ok(log.create_stream(&name, s)?.1)
        })
        .await
    }

    async fn delete_stream(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        self.blocking(move |log| Ok(log.delete_stream(&name)?)).await
    }

    async fn list_streams(&self) -> Result<Vec<(String, StreamSettings)>> {
        let log = self.log()?;
        let mut out: Vec<_> = log
            .streams()
            .iter()
            .map(|s| (s.name().to_string(), settings_of(&s.settings())))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    async fn stream_settings(&self, name: &str) -> Result<StreamSettings> {
        Ok(settings_of(&self.log()?.stream(name)?.settings()))
    }

    async fn describe_stream(&self, name: &str) -> Result<StreamState> {
        let s = self.log()?.stream(name)?;
        Ok(StreamState {
            name: s.name().to_string(),
            settings: settings_of(&s.settings()),
            start_offsets: s.partitions().iter().map(|p| p.start_offset()).collect(),
            end_offsets: s.partitions().iter().map(|p| p.end_offset()).collect(),
        })
    }

    async fn append(
        &self,
        stream: &str,
        partition: u32,
        mut batch: RecordBatch,
    ) -> (Result<Appended>, RecordBatch) {
        let s = match self.log().and_then(|l| Ok(l.stream(stream)?)) {
            Ok(s) => s,
            Err(e) => return (Err(e), batch),
        };
        let bytes = batch.encoded_len() as u64;
        let started = Instant::now();
        let joined = tokio::task::spawn_blocking(move || {
            let r = s.partition(partition).and_then(|p| p.append(&mut batch));
            (r, batch)
        })
        .await;
        let (outcome, batch) = match joined {
            Ok(r) => r,
            // the closure only panics on a bug; the batch went with it
            Err(e) => {
                return (
                    Err(Error::Unavailable(format!("store task failed: {e}"))),
                    RecordBatch::new(),
                )
            }
        };
        metrics::histogram!("switchboard_log_append_seconds").record(started.elapsed().as_secs_f64());
        let outcome = match outcome {
            Ok(AppendOutcome::Appended(a)) => {
                metrics::counter!("switchboard_log_appended_bytes_total").increment(bytes);
                Ok(Appended::Stored {
                    first: a.base_offset,
                    last: a.last_offset,
                })
            }
            Ok(AppendOutcome::Duplicate(p)) => Ok(Appended::Duplicate(p)),
            Err(e) => Err(e.into()),
        };
        (outcome, batch)
    }

    async fn read(
        &self,
        stream: &str,
        partition: u32,
        offset: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Fetched> {
        let s = self.log()?.stream(stream)?;
        let p = s.partition(partition)?.clone();
        if offset >= p.end_offset() && offset >= p.start_offset() {
            return Ok(Fetched {
                records: Vec::new(),
                next_offset: offset,
            });
        }
        tokio::task::spawn_blocking(move || {
            let r = p.read(offset, max_records, max_bytes)?;
            Ok(Fetched {
                records: r.records,
                next_offset: r.next_offset,
            })
        })
        .await
        .map_err(|e| Error::Unavailable(format!("store task failed: {e}")))?
    }

    async fn wait_any(&self, stream: &str, positions: &[(u32, u64)], timeout: Duration) -> Result<bool> {
        let s = self.log()?.stream(stream)?;
        let mut parts = Vec::with_capacity(positions.len());
        for &(p, o) in positions {
            parts.push((s.partition(p)?.clone(), o));
        }
        let ready =
            |parts: &[(Arc<switchboard_log::Partition>, u64)]| parts.iter().any(|(p, o)| p.end_offset() > *o);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if ready(&parts) {
                return Ok(true);
            }
            let listeners: Vec<_> = parts.iter().map(|(p, _)| p.listen()).collect();
            if ready(&parts) {
                return Ok(true);
            }
            let any = futures_any(listeners);
            if tokio::time::timeout_at(deadline, any).await.is_err() {
                return Ok(ready(&parts));
            }
        }
    }

    async fn producer(&self, stream: &str, partition: u32, producer: &str) -> Result<Option<ProducerState>> {
        let s = self.log()?.stream(stream)?;
        Ok(s.partition(partition)?.producer(producer))
    }

    async fn close(&self) -> Result<()> {
        let Some(log) = self.log.write().take() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || match Arc::try_unwrap(log) {
            Ok(log) => Ok(log.close()?),
            // In-flight calls still hold it: sync now, and the last of them
            // closes it on drop.
            Err(log) => Ok(log.sync_all()?),
        })
        .await
        .map_err(|e| Error::Unavailable(format!("store task failed: {e}")))?
    }
}

/// Resolves when any listener fires.
async fn futures_any(listeners: Vec<switchboard_log::EventListener>) {
    let mut listeners: Vec<_> = listeners.into_iter().map(Box::pin).collect();
    std::future::poll_fn(move |cx| {
        for l in listeners.iter_mut() {
            if l.as_mut().poll(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    })
    .await
}
