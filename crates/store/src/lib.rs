//! The storage core of Switchboard behind one async trait, [`Store`], so
//! that the session layer does not depend on which one runs.
//!
//! - [`embedded::EmbeddedStore`] (`file://DIR`, the default): our
//!   segmented log on local disk (`switchboard-log`), driven from tokio's
//!   blocking pool so that file I/O and fsync never run on the runtime.
//! - [`memory::MemoryStore`] (`memory://`): everything in memory, with the
//!   same semantics; for tests and demos, and the proof that the trait is
//!   not the embedded log's shape.
//!
//! The trait speaks blocks, not bytes: a [`Block`] is a producer's
//! numbered write, in [`Records`] per partition; appending it answers
//! [`Appended`] (stored with its offsets, a duplicate of what is stored, or
//! fenced by a newer epoch). Readers go through a [`StoreReader`] that the
//! store opens, which keeps its own positions and waits.
//!
//! This crate knows nothing of HTTP, sessions, cursors or encryption.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub mod embedded;
mod error;
pub mod memory;
mod records;

pub use error::{Error, Result};
pub use records::{
    Block, BlockProducer, HeaderIter, Headers, ReadBuffer, Record, RecordRef, Records, MAX_PRODUCER_LEN,
};
pub use switchboard_log::Durability;

/// A stream's fixed settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSettings {
    /// Partition count.
    pub partitions: u32,
    /// Retention by age, ms.
    pub retention_ms: Option<u64>,
    /// Retention by size per partition, bytes.
    pub retention_bytes: Option<u64>,
    /// Whether event keys are encrypted (else they are stored in the clear,
    /// for compaction and tooling). Kept with the stream for the session
    /// layer; stores never look inside records.
    pub encrypt_keys: bool,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            partitions: 1,
            retention_ms: None,
            retention_bytes: None,
            encrypt_keys: true,
        }
    }
}

/// A stream and its per-partition extent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamState {
    /// Name.
    pub name: String,
    /// Settings.
    pub settings: StreamSettings,
    /// Which stream of this name: random, fixed at creation (0 for embedded
    /// streams made before incarnations existed). A stream deleted and
    /// created again has another.
    pub incarnation: u64,
    /// First offset held, per partition.
    pub start_offsets: Vec<u64>,
    /// Next offset readers will see, per partition.
    pub end_offsets: Vec<u64>,
}

/// Offsets a block got in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartRange {
    /// Partition.
    pub partition: u32,
    /// First offset.
    pub first: u64,
    /// Last offset.
    pub last: u64,
}

/// What appending a block did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Stored (or completed, after an earlier partial append of the same
    /// producer block), at these offsets: by partition, each partition's
    /// records in offset order. A partition has several ranges when the
    /// store put other writes between the block's records (Kafka can).
    Stored(Vec<PartRange>),
    /// The producer already has this block or a later one: nothing was
    /// written. `ranges` tells where this very block is, when it is the
    /// producer's last and the store knows.
    Duplicate {
        /// The producer's last block.
        last_block: u64,
        /// Where this block is stored, if known.
        ranges: Option<Vec<PartRange>>,
    },
    /// A newer epoch of the producer wrote to the stream: nothing was
    /// written, and this writer must stop.
    Fenced {
        /// The newer epoch.
        epoch: u64,
    },
}

/// The rest of an append [`Store::submit`] started.
pub type Submitted = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Appended>> + Send>>;

/// What [`Store::fence_producer`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fencing {
    /// The new session's epoch.
    pub epoch: u64,
    /// The producer's last block stored in full (0: none).
    pub last_block: u64,
}

/// Retention removed records a reader was about to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// Partition.
    pub partition: u32,
    /// First offset skipped.
    pub from: u64,
    /// Where reading went on (the first offset still held).
    pub to: u64,
}

/// What one [`StoreReader::fetch`] got.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    /// (partition, record), each partition's records in offset order.
    pub records: Vec<(u32, Record)>,
    /// Ranges skipped because retention removed them.
    pub gaps: Vec<Gap>,
}

/// Reads a set of partitions of one stream from positions it keeps.
#[async_trait]
pub trait StoreReader: Send + Sync {
    /// The next records: at most `max_records` and about `max_bytes` (at
    /// least one record if any), taken round-robin over the partitions.
    /// When nothing is there, waits up to `wait` for something.
    async fn fetch(&mut self, max_records: usize, max_bytes: usize, wait: Duration) -> Result<Fetched>;

    /// (partition, next offset) of each partition read.
    fn positions(&self) -> Vec<(u32, u64)>;
}

/// The storage core. Every method is safe to call concurrently; appends to
/// one partition are ordered, reads never block appends.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates a stream; `Ok(false)` if it existed with the same settings,
    /// [`Error::Conflict`] if with others.
    async fn create_stream(&self, name: &str, settings: StreamSettings) -> Result<bool>;

    /// Deletes a stream and its data.
    async fn delete_stream(&self, name: &str) -> Result<()>;

    /// Every stream's name and settings, sorted by name.
    async fn list_streams(&self) -> Result<Vec<(String, StreamSettings)>>;

    /// A stream's settings (cheap).
    async fn stream_settings(&self, name: &str) -> Result<StreamSettings>;

    /// A stream's settings and offsets.
    async fn describe_stream(&self, name: &str) -> Result<StreamState>;

    /// Appends a block; answers once it is as durable as the store's
    /// durability setting promises. A producer block is stored at most
    /// once, however often it is appended.
    async fn append(&self, stream: &str, block: Block) -> Result<Appended>;

    /// Starts appending a block: once this returns, the block has its place
    /// in its producer's order, and the future it returns finishes the
    /// append (answering what [`Store::append`] would). A writer submits
    /// its next block while earlier ones are still on their way, so that a
    /// producer is not held to one round trip per block. Stores that keep
    /// a producer's blocks in order with several in flight override this;
    /// the default appends in full before it returns.
    async fn submit(&self, stream: &str, block: Block) -> Submitted {
        let r = self.append(stream, block).await;
        Box::pin(std::future::ready(r))
    }

    /// The producer's last block stored in full on `stream` (0: none).
    async fn last_block(&self, stream: &str, producer: &str) -> Result<u64>;

    /// Starts a new session of `producer` on `stream`: takes an epoch
    /// higher than any the producer had, so that from now on appends of
    /// older epochs are [`Appended::Fenced`], waits for the appends already
    /// under way, and answers the epoch with the producer's last block
    /// stored in full (which nothing older can change any more).
    async fn fence_producer(&self, stream: &str, producer: &str) -> Result<Fencing>;

    /// Per partition, the first offset whose record's timestamp is at or
    /// after `timestamp_ms` (the end offset if there is none).
    async fn offsets_for_time(&self, stream: &str, timestamp_ms: i64) -> Result<Vec<u64>>;

    /// A reader of `positions` ((partition, offset), partitions distinct).
    async fn open_reader(&self, stream: &str, positions: &[(u32, u64)]) -> Result<Box<dyn StoreReader>>;

    /// Makes everything appended so far durable and stops taking writes.
    async fn close(&self) -> Result<()>;

    /// Why the store cannot serve now (unreachable brokers, say), or `None`
    /// when it can. Cheap: for `/readyz`.
    fn health(&self) -> Option<String> {
        None
    }
}

/// Checks a stream's name and settings as every store does: names of 1 to
/// 200 of `A-Z a-z 0-9 . _ -`, 1 to 1024 partitions, retention of at least
/// 1 when given.
pub fn check_stream(name: &str, s: &StreamSettings) -> Result<()> {
    if !switchboard_log::is_valid_stream_name(name) {
        return Err(Error::Invalid(format!("invalid stream name {name:?}")));
    }
    if !(1..=switchboard_log::MAX_PARTITIONS).contains(&s.partitions) {
        return Err(Error::Invalid(format!(
            "partitions: must be 1 to {}, got {}",
            switchboard_log::MAX_PARTITIONS,
            s.partitions
        )));
    }
    if s.retention_ms == Some(0) || s.retention_bytes == Some(0) {
        return Err(Error::Invalid("retention: must be at least 1".into()));
    }
    Ok(())
}

/// Opens the store a URL names: `file://DIR` (the embedded log in DIR) or
/// `memory://`. Blocks: call before serving or from a blocking context.
pub fn open(url: &str, log: switchboard_log::LogConfig) -> Result<Arc<dyn Store>> {
    if let Some(dir) = url.strip_prefix("file://") {
        if dir.is_empty() {
            return Err(Error::Invalid(
                "file:// needs a directory: file:///var/lib/switchboard".into(),
            ));
        }
        return Ok(Arc::new(embedded::EmbeddedStore::open(dir, log)?));
    }
    if url == "memory://" {
        return Ok(Arc::new(memory::MemoryStore::new()));
    }
    Err(Error::Invalid(format!(
        "store {url:?}: expected file://DIR or memory://"
    )))
}
