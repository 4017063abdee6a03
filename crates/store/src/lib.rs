//! The storage core of Switchboard behind one async trait, [`Store`], so
//! that the session layer does not depend on which one runs.
//!
//! - [`embedded::EmbeddedStore`]: the default, our segmented log on local
//!   disk (`switchboard-log`), driven from a blocking thread pool so that
//!   file I/O and fsync never run on the async runtime's threads.
//!
//! Records travel as [`RecordBatch`]es: the log's own batch encoding, built
//! once by the session layer (each payload copied once) and appended
//! as-is. Producer ids and block numbers ride in the batch, so
//! deduplication of replayed blocks is atomic with the write.
//!
//! This crate knows nothing of HTTP, sessions or cursors.

use std::time::Duration;

use async_trait::async_trait;

pub mod embedded;
mod error;

pub use error::{Error, Result};
pub use switchboard_log::{
    BatchBuilder as RecordBatch, Durability, HeaderIter, Headers, ProducerState, Record,
};

/// A stream's fixed settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamSettings {
    /// Partition count.
    pub partitions: u32,
    /// Retention by age, ms.
    pub retention_ms: Option<u64>,
    /// Retention by size per partition, bytes.
    pub retention_bytes: Option<u64>,
}

/// A stream and its per-partition extent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamState {
    /// Name.
    pub name: String,
    /// Settings.
    pub settings: StreamSettings,
    /// First offset held, per partition.
    pub start_offsets: Vec<u64>,
    /// Next offset readers will see, per partition.
    pub end_offsets: Vec<u64>,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored at `first..=last`.
    Stored {
        /// First offset.
        first: u64,
        /// Last offset.
        last: u64,
    },
    /// The batch's producer already has this block (or a later one) in this
    /// partition: nothing was written. Carries what the partition holds.
    Duplicate(ProducerState),
}

/// Records read from one partition.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    /// Consecutive records.
    pub records: Vec<Record>,
    /// Where the next read starts.
    pub next_offset: u64,
}

/// The storage core. Every method is safe to call concurrently; appends to
/// one partition are ordered, reads never block appends.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates a stream; `Ok(false)` if it existed with the same settings.
    async fn create_stream(&self, name: &str, settings: StreamSettings) -> Result<bool>;

    /// Deletes a stream and its data.
    async fn delete_stream(&self, name: &str) -> Result<()>;

    /// Every stream's name and settings, sorted by name.
    async fn list_streams(&self) -> Result<Vec<(String, StreamSettings)>>;

    /// A stream's settings (cheap; no I/O).
    async fn stream_settings(&self, name: &str) -> Result<StreamSettings>;

    /// A stream's settings and offsets.
    async fn describe_stream(&self, name: &str) -> Result<StreamState>;

    /// Appends `batch` to one partition; returns once it is durable (as far
    /// as the store's durability setting promises). The batch always comes
    /// back, so that a failed append can be retried and a buffer reused.
    async fn append(
        &self,
        stream: &str,
        partition: u32,
        batch: RecordBatch,
    ) -> (Result<Appended>, RecordBatch);

    /// Reads from `offset`, at most `max_records` records and about
    /// `max_bytes` (at least one record if any).
    async fn read(
        &self,
        stream: &str,
        partition: u32,
        offset: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Fetched>;

    /// Waits until any of `positions` (partition, offset) has a readable
    /// record, or `timeout` passes; true if one has.
    async fn wait_any(&self, stream: &str, positions: &[(u32, u64)], timeout: Duration) -> Result<bool>;

    /// What one partition holds of `producer`.
    async fn producer(&self, stream: &str, partition: u32, producer: &str) -> Result<Option<ProducerState>>;

    /// Makes everything appended so far durable and stops taking writes.
    async fn close(&self) -> Result<()>;
}
