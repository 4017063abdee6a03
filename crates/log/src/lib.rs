//! Switchboard's embedded log: durable, crash-safe, segmented, append-only
//! storage for streams of records on one machine's disk.
//!
//! It owns files under one directory and nothing else: no async runtime, no
//! network, no knowledge of sessions, cursors or the wire protocol. The store
//! layer adapts it to Switchboard's `Store` trait; the Kafka adapter sits
//! beside it.
//!
//! # Model
//!
//! A [`Log`] holds named streams ([`Stream`]); a stream has a fixed number of
//! partitions ([`Partition`]); a partition is an append-only sequence of
//! records numbered by consecutive offsets from 0. Records are appended in
//! batches ([`BatchBuilder`]); a batch is all-or-nothing on disk. A batch may
//! carry a producer id and block number: the partition then keeps, exactly,
//! the last block of each producer and refuses (as
//! [`AppendOutcome::Duplicate`]) a block at or below it.
//!
//! # On-disk layout
//!
//! ```text
//! <root>/LOCK                      held (flock) by the process using the log
//! <root>/streams/<name>/stream.json  {"format":1,"name","partitions","retention_ms","retention_bytes"}
//! <root>/streams/<name>/<p>/       one directory per partition p = 0, 1, ...
//!     <base>.log                   segment: batches, base = offset of its first record,
//!     <base>.index                 20 decimal digits, zero-padded
//!     <base>.timeindex
//!     <offset>.producers           producer checkpoint covering offsets below <offset>
//! <root>/tmp/, <root>/trash/       staging for create and delete; emptied on open
//! ```
//!
//! A stream's directory is its name, except that the names `.` and `..` are
//! stored as `%2E` and `%2E%2E` (`%` cannot occur in a name).
//!
//! All integers are little-endian.
//!
//! ## Segment (`.log`)
//!
//! A sequence of batches, nothing else. A batch is a 64-byte header, the
//! producer id, then the records:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..4 | magic `SBL1` |
//! | 4..8 | u32 length of the whole batch, header included |
//! | 8..12 | u32 CRC32C, see below |
//! | 12 | u8 version = 1 |
//! | 13 | u8 attributes = 0 |
//! | 14..16 | u16 producer id length (0: no producer) |
//! | 16..24 | u64 base offset |
//! | 24..28 | u32 record count (at least 1) |
//! | 28..32 | u32 block parts: how many partitions the producer block was split over (0 without producer) |
//! | 32..40 | i64 first timestamp (ms since the epoch) |
//! | 40..48 | i64 largest timestamp |
//! | 48..56 | u64 producer block number (0 without producer) |
//! | 56..64 | i64 wall-clock time of the append (ms) |
//! | 64.. | producer id (UTF-8), then the records |
//!
//! The CRC32C (Castagnoli) is computed over bytes `64..length` followed by
//! bytes `12..64`, so it covers everything but the magic, the length and
//! itself; a wrong magic or length is caught by parsing and by the CRC.
//!
//! A record is: u32 length of the rest of the record; i64 timestamp; u32 key
//! length (`0xFFFFFFFF`: no key) and the key; u32 value length and the value;
//! u32 byte length of the headers, then the headers as pairs of (u32 length,
//! bytes) name and value. The records of a batch have offsets `base`,
//! `base + 1`, ... in order.
//!
//! ## Indexes
//!
//! `.index` entries are (u32 offset − base, u32 byte position of a batch that
//! starts at that offset), one at least every `index_interval_bytes` of
//! batches. `.timeindex` entries are (i64 t, u32 offset − base) where t is the
//! largest timestamp of all records before that offset. Both are strictly
//! increasing in offset and position. A sealed segment's files end with a
//! footer: `.index`: magic `SBIX`, u32 entry count, u64 segment length, u64
//! next offset, i64 largest timestamp, u32 CRC32C of everything before it;
//! `.timeindex`: magic `SBTI`, u32 entry count, u32 CRC32C. The active
//! segment's files hold bare entries and are rebuilt on open.
//!
//! ## Producer checkpoints (`.producers`)
//!
//! Magic `SBPS`, u32 version = 2, u64 offset, u32 count, then per producer:
//! u8 id length, id, u64 last block, u64 first offset and u64 last offset of
//! that block's batch, i64 last append time, u32 block parts; then a CRC32C
//! of all before it. A checkpoint of another version is ignored (the state is
//! rebuilt by scanning).
//! It holds the state of every batch below `offset`. One is written when a
//! segment is sealed (at the new segment's base) and on clean close; the two
//! newest are kept, and the newest at or below the active segment's base.
//!
//! # Invariants
//!
//! - Offsets are dense: the first batch of a segment starts at its base; each
//!   batch starts where the previous one ended; segment `n + 1` starts where
//!   segment `n` ends.
//! - Only the last segment (the active one) is ever written, and only at its
//!   end. Sealed segments are never modified, only deleted whole, oldest first.
//! - A segment is synced, and its index written with footer and synced, before
//!   the next segment is created.
//! - No record is returned by a read unless the CRC of its whole batch holds.
//! - With [`Durability::Always`] an append is acknowledged only after
//!   `fdatasync`, and readers see only synced records, so a crash can never
//!   take back a record a reader has seen or an append that was acknowledged.
//!
//! # Recovery
//!
//! On open, for each partition:
//!
//! 1. Stray `*.tmp` files and index files without a segment are removed.
//! 2. Sealed segments are trusted if their index footers check out and agree
//!    with the segment's length; otherwise their indexes are rebuilt by a
//!    scan that validates every batch. A sealed segment with an invalid batch
//!    is not truncated: the bad position is recorded, and any read that
//!    reaches it fails with [`Error::Corrupt`] naming the file and position.
//! 3. The active segment is scanned batch by batch (magic, lengths, CRC,
//!    contiguous offsets). The file is truncated after the last valid batch,
//!    and its indexes are rebuilt.
//! 4. Producer state is the newest valid checkpoint not ahead of the
//!    recovered end, with every producer batch after it applied on top.
//!
//! Nothing in a stored file can make recovery or a read panic: every length
//! and position read from disk is checked before use.

mod config;
mod error;
mod format;
mod index;
mod partition;
mod producer;
mod segment;
pub mod sync_probe;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};
use serde::{Deserialize, Serialize};

pub use config::{
    is_valid_stream_name, Durability, LogConfig, StreamSettings, MAX_OPEN_SEGMENTS_RANGE, MAX_PARTITIONS,
    RETENTION_CHECK_MS_RANGE, SEGMENT_BYTES_RANGE,
};
pub use error::{Error, Result};
pub use event_listener::EventListener;
pub use format::{BatchBuilder, HeaderIter, Headers, PushedRecord, PushedRecords, Record};
pub use partition::{AppendOutcome, Appended, Partition, ReadBatch};
pub use producer::ProducerState;

/// Entry points for fuzz targets and robustness tests: every decoder of
/// bytes read from disk, run on arbitrary input. Not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    /// Runs the batch, index and checkpoint decoders on `data`; they must
    /// return (an error or a value), never panic.
    pub fn decode_all(data: &[u8]) {
        crate::format::fuzz_batch(data);
        let split = data.first().map_or(0, |b| *b as usize).min(data.len());
        let (a, b) = data.split_at(split);
        let _ = crate::index::SegmentIndex::decode_sealed(0, a, b, data.len() as u64);
        let _ = crate::producer::decode_snapshot(data);
    }
}

const STREAM_FORMAT: u32 = 1;

pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("fsync", dir))
}

fn dir_name(name: &str) -> String {
    if name == "." || name == ".." {
        name.replace('.', "%2E")
    } else {
        name.to_string()
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamFile {
    format: u32,
    name: String,
    partitions: u32,
    retention_ms: Option<u64>,
    retention_bytes: Option<u64>,
    /// Absent in files written before it existed: keys were encrypted.
    #[serde(default = "yes")]
    encrypt_keys: bool,
    /// Random, fixed at creation; 0 in files written before it existed.
    #[serde(default)]
    incarnation: u64,
}

fn yes() -> bool {
    true
}

/// A stream: a name, its settings and its partitions.
#[derive(Debug)]
pub struct Stream {
    name: String,
    settings: StreamSettings,
    incarnation: u64,
    partitions: Vec<Arc<Partition>>,
}

impl Stream {
    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Settings fixed at creation.
    pub fn settings(&self) -> StreamSettings {
        self.settings
    }

    /// Which stream of this name this is: random, fixed at creation, so
    /// a stream deleted and created again under the same name differs (0
    /// for streams created before incarnations existed).
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// All partitions, in order.
    pub fn partitions(&self) -> &[Arc<Partition>] {
        &self.partitions
    }

    /// One partition, or [`Error::PartitionNotFound`].
    pub fn partition(&self, id: u32) -> Result<&Arc<Partition>> {
        self.partitions
            .get(id as usize)
            .ok_or_else(|| Error::PartitionNotFound {
                stream: self.name.clone(),
                partition: id,
            })
    }
}

struct Inner {
    root: PathBuf,
    cfg: Arc<LogConfig>,
    /// Read handles of sealed segments, bounded.
    files: Arc<segment::FileCache>,
    streams: RwLock<BTreeMap<String, Arc<Stream>>>,
    /// Serializes stream creation and deletion.
    admin: Mutex<()>,
    stop: Mutex<bool>,
    stop_cv: Condvar,
    _lock: File,
}

/// The embedded log: every stream under one directory. Opening runs
/// recovery; a background thread applies retention and, with
/// [`Durability::Interval`], syncs. Closing (or dropping) syncs everything and
/// checkpoints producer state.
pub struct Log {
    inner: Arc<Inner>,
    maintenance: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("root", &self.inner.root)
            .finish_non_exhaustive()
    }
}

impl Log {
    /// Opens (creating if needed) the log under `root` and recovers every
    /// stream. Fails if another process holds the directory.
    pub fn open(root: impl AsRef<Path>, cfg: LogConfig) -> Result<Log> {
        cfg.validate()?;
        let root = root.as_ref().to_path_buf();
        for d in [
            root.clone(),
            root.join("streams"),
            root.join("tmp"),
            root.join("trash"),
        ] {
            std::fs::create_dir_all(&d).map_err(Error::io("create", &d))?;
        }
        let lock_path = root.join("LOCK");
        let lock = File::create(&lock_path).map_err(Error::io("create", &lock_path))?;
        lock.try_lock().map_err(|e| Error::Io {
            op: "lock",
            path: lock_path.clone(),
            source: match e {
                std::fs::TryLockError::WouldBlock => std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    "the log is in use by another process",
                ),
                std::fs::TryLockError::Error(e) => e,
            },
        })?;
        for d in [root.join("tmp"), root.join("trash")] {
            empty_dir(&d)?;
        }
        let files = segment::FileCache::new(cfg.max_open_segments);
        let cfg = Arc::new(cfg);
        let mut streams = BTreeMap::new();
        let sdir = root.join("streams");
        for e in std::fs::read_dir(&sdir).map_err(Error::io("list", &sdir))? {
            let e = e.map_err(Error::io("list", &sdir))?;
            if !e.file_type().map_err(Error::io("stat", e.path()))?.is_dir() {
                tracing::warn!(path = %e.path().display(), "ignoring a file that is not a stream directory");
                continue;
            }
            let stream = open_stream(&e.path(), &cfg, &files)?;
            streams.insert(stream.name.clone(), Arc::new(stream));
        }
        let inner = Arc::new(Inner {
            root,
            cfg,
            files,
            streams: RwLock::new(streams),
            admin: Mutex::new(()),
            stop: Mutex::new(false),
            stop_cv: Condvar::new(),
            _lock: lock,
        });
        let bg = inner.clone();
        let maintenance = std::thread::Builder::new()
            .name("switchboard-log".into())
            .spawn(move || maintenance_loop(&bg))
            .map_err(Error::io("spawn", "maintenance thread"))?;
        Ok(Log {
            inner,
            maintenance: Some(maintenance),
        })
    }

    /// The configuration the log runs with.
    pub fn config(&self) -> &LogConfig {
        &self.inner.cfg
    }

    /// Creates a stream. Returns it and `true` if it was created, `false` if
    /// it already existed with the same settings; with other settings it is
    /// [`Error::StreamSettingsConflict`]. Creation is atomic: after a crash
    /// the stream exists whole or not at all.
    pub fn create_stream(&self, name: &str, settings: StreamSettings) -> Result<(Arc<Stream>, bool)> {
        if !is_valid_stream_name(name) {
            return Err(Error::InvalidStreamName(name.to_string()));
        }
        settings.validate()?;
        let _g = self.inner.admin.lock();
        if let Some(s) = self.inner.streams.read().get(name) {
            return if s.settings == settings {
                Ok((s.clone(), false))
            } else {
                Err(Error::StreamSettingsConflict(name.to_string()))
            };
        }
        let root = &self.inner.root;
        let staging = root.join("tmp").join(format!("{:016x}", rand::random::<u64>()));
        std::fs::create_dir(&staging).map_err(Error::io("create", &staging))?;
        let meta = StreamFile {
            format: STREAM_FORMAT,
            name: name.to_string(),
            partitions: settings.partitions,
            retention_ms: settings.retention_ms,
            retention_bytes: settings.retention_bytes,
            encrypt_keys: settings.encrypt_keys,
            incarnation: rand::random::<u64>() | 1,
        };
        let meta_path = staging.join("stream.json");
        let json = serde_json::to_vec_pretty(&meta).map_err(|e| Error::invalid("stream", e.to_string()))?;
        let mut f = File::create(&meta_path).map_err(Error::io("create", &meta_path))?;
        f.write_all(&json).map_err(Error::io("write", &meta_path))?;
        f.sync_all().map_err(Error::io("fsync", &meta_path))?;
        for p in 0..settings.partitions {
            let d = staging.join(p.to_string());
            std::fs::create_dir(&d).map_err(Error::io("create", &d))?;
        }
        fsync_dir(&staging)?;
        let dest = root.join("streams").join(dir_name(name));
        std::fs::rename(&staging, &dest).map_err(Error::io("rename", &staging))?;
        fsync_dir(&root.join("streams"))?;
        let stream = Arc::new(open_stream(&dest, &self.inner.cfg, &self.inner.files)?);
        self.inner
            .streams
            .write()
            .insert(name.to_string(), stream.clone());
        Ok((stream, true))
    }

    /// Deletes a stream and its files. Calls in flight on its partitions fail
    /// with [`Error::Closed`].
    pub fn delete_stream(&self, name: &str) -> Result<()> {
        let _g = self.inner.admin.lock();
        let stream = self
            .inner
            .streams
            .write()
            .remove(name)
            .ok_or_else(|| Error::StreamNotFound(name.to_string()))?;
        for p in &stream.partitions {
            p.mark_deleted();
        }
        let root = &self.inner.root;
        let src = root.join("streams").join(dir_name(name));
        let dest = root.join("trash").join(format!("{:016x}", rand::random::<u64>()));
        std::fs::rename(&src, &dest).map_err(Error::io("rename", &src))?;
        fsync_dir(&root.join("streams"))?;
        std::fs::remove_dir_all(&dest).map_err(Error::io("remove", &dest))?;
        Ok(())
    }

    /// A stream by name.
    pub fn stream(&self, name: &str) -> Result<Arc<Stream>> {
        self.inner
            .streams
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::StreamNotFound(name.to_string()))
    }

    /// All streams, by name.
    pub fn streams(&self) -> Vec<Arc<Stream>> {
        self.inner.streams.read().values().cloned().collect()
    }

    /// Applies every stream's retention as of `now_ms`; returns the number of
    /// segments deleted. The background thread calls this periodically.
    pub fn apply_retention(&self, now_ms: i64) -> Result<usize> {
        self.inner.apply_retention(now_ms)
    }

    /// Sealed segments' files open now (at most `max_open_segments`, plus
    /// any a reader still holds).
    pub fn open_segment_files(&self) -> usize {
        self.inner.files.open_count()
    }

    /// Syncs every partition.
    pub fn sync_all(&self) -> Result<()> {
        for s in self.streams() {
            for p in s.partitions() {
                p.sync()?;
            }
        }
        Ok(())
    }

    /// Stops the background thread, syncs every partition and checkpoints
    /// producer state. Reports the first error; every partition is closed
    /// regardless.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        let Some(handle) = self.maintenance.take() else {
            return Ok(());
        };
        *self.inner.stop.lock() = true;
        self.inner.stop_cv.notify_all();
        let _ = handle.join();
        let mut first = Ok(());
        for s in self.streams() {
            for p in s.partitions() {
                if let Err(e) = p.close() {
                    tracing::error!(stream = %s.name, partition = p.id(), error = %e, "close failed");
                    if first.is_ok() {
                        first = Err(e);
                    }
                }
            }
        }
        first
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

impl Inner {
    /// Applies retention everywhere; a failing partition does not stop the
    /// others, and the first error is reported.
    fn apply_retention(&self, now_ms: i64) -> Result<usize> {
        let streams: Vec<_> = self.streams.read().values().cloned().collect();
        let mut deleted = 0;
        let mut first = None;
        for s in streams {
            for p in &s.partitions {
                match p.apply_retention(&s.settings, now_ms) {
                    Ok(n) => deleted += n,
                    Err(Error::Closed) => {}
                    Err(e) => {
                        tracing::error!(stream = %s.name, partition = p.id(), error = %e, "retention failed");
                        first.get_or_insert(e);
                    }
                }
            }
        }
        first.map_or(Ok(deleted), Err)
    }
}

fn maintenance_loop(inner: &Inner) {
    let retention_every = Duration::from_millis(inner.cfg.retention_check_ms);
    let tick = match inner.cfg.durability {
        Durability::Interval { ms } => Duration::from_millis(ms).min(retention_every),
        _ => retention_every,
    };
    let mut next_retention = Instant::now() + retention_every;
    loop {
        {
            let mut stop = inner.stop.lock();
            if !*stop {
                inner.stop_cv.wait_for(&mut stop, tick);
            }
            if *stop {
                return;
            }
        }
        if matches!(inner.cfg.durability, Durability::Interval { .. }) {
            let streams: Vec<_> = inner.streams.read().values().cloned().collect();
            for s in streams {
                for p in s.partitions.iter().filter(|p| p.is_dirty()) {
                    match p.sync() {
                        Ok(()) | Err(Error::Closed) => {}
                        Err(e) => {
                            tracing::error!(stream = %s.name, partition = p.id(), error = %e, "interval sync failed")
                        }
                    }
                }
            }
        }
        if Instant::now() >= next_retention {
            next_retention = Instant::now() + retention_every;
            if let Err(e) = inner.apply_retention(partition::now_ms()) {
                tracing::error!(error = %e, "retention failed");
            }
        }
    }
}

fn empty_dir(dir: &Path) -> Result<()> {
    for e in std::fs::read_dir(dir).map_err(Error::io("list", dir))? {
        let p = e.map_err(Error::io("list", dir))?.path();
        let r = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        r.map_err(Error::io("remove", &p))?;
    }
    Ok(())
}

fn open_stream(dir: &Path, cfg: &Arc<LogConfig>, files: &Arc<segment::FileCache>) -> Result<Stream> {
    let meta_path = dir.join("stream.json");
    let bytes = std::fs::read(&meta_path).map_err(Error::io("read", &meta_path))?;
    let meta: StreamFile = serde_json::from_slice(&bytes)
        .map_err(|e| Error::corrupt(&meta_path, e.column() as u64, e.to_string()))?;
    let settings = StreamSettings {
        partitions: meta.partitions,
        retention_ms: meta.retention_ms,
        retention_bytes: meta.retention_bytes,
        encrypt_keys: meta.encrypt_keys,
    };
    let valid = meta.format == STREAM_FORMAT
        && is_valid_stream_name(&meta.name)
        && dir.file_name().and_then(|n| n.to_str()) == Some(dir_name(&meta.name).as_str())
        && settings.validate().is_ok();
    if !valid {
        return Err(Error::corrupt(
            &meta_path,
            0,
            "stream metadata does not match its directory or bounds",
        ));
    }
    let mut partitions = Vec::with_capacity(meta.partitions as usize);
    for p in 0..meta.partitions {
        let pdir = dir.join(p.to_string());
        if !pdir.is_dir() {
            return Err(Error::corrupt(&pdir, 0, "partition directory is missing"));
        }
        partitions.push(Arc::new(Partition::open(
            &meta.name,
            p,
            pdir,
            cfg.clone(),
            files.clone(),
        )?));
    }
    Ok(Stream {
        name: meta.name,
        settings,
        incarnation: meta.incarnation,
        partitions,
    })
}
