//! One segment: a `.log` file of batches and its two index files.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::error::{Error, Result};
use crate::format::{BatchHeader, HEADER_LEN};
use crate::index::SegmentIndex;

/// Largest batch a scan accepts: a corrupt length field must not make it
/// allocate gigabytes.
pub(crate) const MAX_BATCH_HARD: u64 = 1 << 30;
/// Read size of recovery scans.
const SCAN_CHUNK: usize = 4 << 20;

pub(crate) fn file_stem(base: u64) -> String {
    format!("{base:020}")
}

pub(crate) fn log_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{}.log", file_stem(base)))
}

pub(crate) fn index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{}.index", file_stem(base)))
}

pub(crate) fn time_index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{}.timeindex", file_stem(base)))
}

/// Read handles of sealed segments, shared by every partition of a log and
/// bounded in number: a node with many partitions and segments holds a
/// fixed number of descriptors for them, whatever its data. The least
/// recently read handle is closed first (it closes for good once its last
/// reader is done with it).
#[derive(Debug)]
pub(crate) struct FileCache {
    cap: usize,
    state: Mutex<CacheState>,
}

#[derive(Debug, Default)]
struct CacheState {
    /// segment id -> (handle, last use)
    files: HashMap<u64, (Arc<File>, u64)>,
    /// last use -> segment id
    by_use: BTreeMap<u64, u64>,
    tick: u64,
}

impl FileCache {
    /// A cache of at most `cap` open handles.
    pub fn new(cap: usize) -> Arc<FileCache> {
        Arc::new(FileCache {
            cap: cap.max(1),
            state: Mutex::new(CacheState::default()),
        })
    }

    /// The open handle of segment `id`, opening `path` if need be.
    fn get(&self, id: u64, path: &Path) -> Result<Arc<File>> {
        {
            let mut st = self.state.lock();
            st.tick += 1;
            let tick = st.tick;
            if let Some((f, used)) = st.files.get_mut(&id) {
                let (f, old) = (f.clone(), std::mem::replace(used, tick));
                st.by_use.remove(&old);
                st.by_use.insert(tick, id);
                return Ok(f);
            }
        }
        // opened outside the lock: a slow open holds up no other reader
        let f = Arc::new(File::open(path).map_err(Error::io("open", path))?);
        metrics::counter!("switchboard_log_segment_opens_total").increment(1);
        let mut st = self.state.lock();
        st.tick += 1;
        let tick = st.tick;
        if let Some((_, used)) = st.files.insert(id, (f.clone(), tick)) {
            // another reader opened it meanwhile: this handle replaces that one
            st.by_use.remove(&used);
        }
        st.by_use.insert(tick, id);
        while st.files.len() > self.cap {
            let Some((_, victim)) = st.by_use.pop_first() else {
                break;
            };
            st.files.remove(&victim);
        }
        metrics::gauge!("switchboard_log_open_segment_files").set(st.files.len() as f64);
        Ok(f)
    }

    /// Closes segment `id`'s handle (it is gone).
    fn forget(&self, id: u64) {
        let mut st = self.state.lock();
        if let Some((_, used)) = st.files.remove(&id) {
            st.by_use.remove(&used);
        }
    }

    /// Handles open now.
    pub fn open_count(&self) -> usize {
        self.state.lock().files.len()
    }
}

/// Ids of segments in this process, for the file cache.
static NEXT_SEGMENT_ID: AtomicU64 = AtomicU64::new(1);

/// A segment as readers and the writer share it.
#[derive(Debug)]
pub(crate) struct Segment {
    pub base: u64,
    pub path: PathBuf,
    /// The active segment's file, open for good (read and write); `None`
    /// once sealed: reads then go through `cache`.
    active_file: RwLock<Option<Arc<File>>>,
    cache: Arc<FileCache>,
    id: u64,
    /// Bytes of complete batches: readers never read past this.
    size: AtomicU64,
    pub index: RwLock<SegmentIndex>,
    /// For a sealed segment whose scan found bad bytes: where and why. The
    /// offsets from there to the next segment are never served.
    pub damage: Option<(u64, String)>,
}

/// How a scan of a segment ended.
#[derive(Debug)]
pub(crate) struct ScanEnd {
    /// Position after the last valid batch.
    pub valid_len: u64,
    /// Why the scan stopped before the end of the file, if it did.
    pub stopped: Option<String>,
}

impl Drop for Segment {
    fn drop(&mut self) {
        self.cache.forget(self.id);
    }
}

impl Segment {
    fn new(
        base: u64,
        path: PathBuf,
        file: Option<File>,
        cache: &Arc<FileCache>,
        size: u64,
        index: SegmentIndex,
        damage: Option<(u64, String)>,
    ) -> Segment {
        Segment {
            base,
            path,
            active_file: RwLock::new(file.map(Arc::new)),
            cache: cache.clone(),
            id: NEXT_SEGMENT_ID.fetch_add(1, Ordering::Relaxed),
            size: AtomicU64::new(size),
            index: RwLock::new(index),
            damage,
        }
    }

    /// The segment's file: the active one's own handle, or a sealed one's
    /// from the cache.
    pub fn file(&self) -> Result<Arc<File>> {
        if let Some(f) = &*self.active_file.read() {
            return Ok(f.clone());
        }
        self.cache.get(self.id, &self.path)
    }

    /// The segment is sealed: its handle goes (reads open it through the
    /// cache from now on).
    pub fn seal(&self) {
        self.active_file.write().take();
    }

    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    pub fn set_size(&self, size: u64) {
        self.size.store(size, Ordering::Release)
    }

    pub fn next_offset(&self) -> u64 {
        self.index.read().next_offset
    }

    /// Creates an empty segment with empty index files.
    pub fn create(dir: &Path, base: u64, cache: &Arc<FileCache>) -> Result<Segment> {
        let path = log_path(dir, base);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(Error::io("create", &path))?;
        for p in [index_path(dir, base), time_index_path(dir, base)] {
            File::create(&p).map_err(Error::io("create", &p))?;
        }
        Ok(Segment::new(
            base,
            path,
            Some(file),
            cache,
            0,
            SegmentIndex::new(base),
            None,
        ))
    }

    /// Opens a sealed segment. Trusts its index files if their checksums and
    /// lengths hold; otherwise rebuilds them by a full validating scan, and
    /// records (without truncating) any damage that scan finds.
    pub fn open_sealed(dir: &Path, base: u64, interval: u64, cache: &Arc<FileCache>) -> Result<Segment> {
        let path = log_path(dir, base);
        let file = File::open(&path).map_err(Error::io("open", &path))?;
        let len = file.metadata().map_err(Error::io("stat", &path))?.len();
        let ip = index_path(dir, base);
        let tp = time_index_path(dir, base);
        let loaded = match (std::fs::read(&ip), std::fs::read(&tp)) {
            (Ok(o), Ok(t)) => SegmentIndex::decode_sealed(base, &o, &t, len),
            _ => None,
        };
        if let Some(index) = loaded {
            return Ok(Segment::new(base, path, None, cache, index.size, index, None));
        }
        tracing::info!(segment = %path.display(), "rebuilding index of sealed segment");
        let mut index = SegmentIndex::new(base);
        let end = scan(&file, &path, base, len, |h, pos, _| {
            index.on_batch(h, pos, interval);
        })?;
        let damage = end.stopped.map(|why| {
            tracing::error!(segment = %path.display(), position = end.valid_len, reason = %why, "sealed segment is damaged");
            (end.valid_len, why)
        });
        write_index_files(dir, &index, true)?;
        drop(file);
        Ok(Segment::new(
            base,
            path,
            None,
            cache,
            end.valid_len,
            index,
            damage,
        ))
    }

    /// Opens the last segment for appending: validates every batch, truncates
    /// the file after the last valid one, and rewrites its index files.
    /// `on_batch` sees every valid batch (producer-state recovery).
    pub fn open_active(
        dir: &Path,
        base: u64,
        interval: u64,
        cache: &Arc<FileCache>,
        mut on_batch: impl FnMut(&BatchHeader, &[u8]),
    ) -> Result<Segment> {
        let path = log_path(dir, base);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(Error::io("open", &path))?;
        let len = file.metadata().map_err(Error::io("stat", &path))?.len();
        let mut index = SegmentIndex::new(base);
        let end = scan(&file, &path, base, len, |h, pos, batch| {
            index.on_batch(h, pos, interval);
            on_batch(h, batch);
        })?;
        if end.valid_len < len {
            tracing::warn!(
                segment = %path.display(),
                valid = end.valid_len,
                file_len = len,
                reason = end.stopped.as_deref().unwrap_or(""),
                "truncating torn or invalid tail of the active segment"
            );
            file.set_len(end.valid_len)
                .map_err(Error::io("truncate", &path))?;
            file.sync_all().map_err(Error::io("fsync", &path))?;
            crate::sync_probe::synced(&path, end.valid_len);
        }
        write_index_files(dir, &index, false)?;
        Ok(Segment::new(
            base,
            path,
            Some(file),
            cache,
            end.valid_len,
            index,
            None,
        ))
    }

    /// Reads exactly `len` bytes at `pos` into a fresh buffer: the one copy on
    /// the read path.
    #[allow(clippy::slow_vector_initialization)] // on purpose: see below
    pub fn read_exact(&self, pos: u64, len: usize) -> Result<bytes::Bytes> {
        // allocated, then zeroed in place: `vec![0; len]` asks the allocator
        // for zeroed memory, which jemalloc provides for large sizes by
        // handing pages back to the kernel and faulting them in again, at
        // several times the cost of the memset
        let mut buf = Vec::with_capacity(len);
        buf.resize(len, 0u8);
        self.file()?
            .read_exact_at(&mut buf, pos)
            .map_err(Error::io("read", &self.path))?;
        Ok(bytes::Bytes::from(buf))
    }
}

/// Writes both index files of a segment. Sealed files end in a checked footer;
/// the active segment's files hold bare entries, appended to as it grows.
pub(crate) fn write_index_files(dir: &Path, index: &SegmentIndex, sealed: bool) -> Result<()> {
    let (o, t) = if sealed {
        (index.encode_offsets(), index.encode_times())
    } else {
        let mut o = Vec::new();
        let mut t = Vec::new();
        for e in &index.offsets {
            crate::index::push_offset_entry(&mut o, *e);
        }
        for e in &index.times {
            crate::index::push_time_entry(&mut t, *e);
        }
        (o, t)
    };
    for (p, bytes) in [
        (index_path(dir, index.base), o),
        (time_index_path(dir, index.base), t),
    ] {
        let mut f = File::create(&p).map_err(Error::io("create", &p))?;
        f.write_all(&bytes).map_err(Error::io("write", &p))?;
        if sealed {
            f.sync_data().map_err(Error::io("fsync", &p))?;
        }
    }
    Ok(())
}

/// Walks the batches of a segment file from its start, checking each one
/// (magic, lengths, CRC, contiguous offsets starting at `base`), and calls
/// `f(header, position, bytes)` for every valid batch. Stops at the end of
/// the file or at the first invalid batch, and says which.
pub(crate) fn scan(
    file: &File,
    path: &Path,
    base: u64,
    file_len: u64,
    mut f: impl FnMut(&BatchHeader, u64, &[u8]),
) -> Result<ScanEnd> {
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_pos = 0u64;
    let mut pos = 0u64;
    let mut expected = base;
    let ensure = |buf: &mut Vec<u8>, buf_pos: &mut u64, at: u64, n: u64| -> Result<()> {
        if at >= *buf_pos && at + n <= *buf_pos + buf.len() as u64 {
            return Ok(());
        }
        let want = n.max(SCAN_CHUNK as u64).min(file_len - at) as usize;
        buf.resize(want, 0);
        file.read_exact_at(buf, at).map_err(Error::io("read", path))?;
        *buf_pos = at;
        Ok(())
    };
    let stopped = loop {
        if pos == file_len {
            break None;
        }
        if file_len - pos < HEADER_LEN as u64 {
            break Some("torn batch header at end of file".to_string());
        }
        ensure(&mut buf, &mut buf_pos, pos, HEADER_LEN as u64)?;
        let at = (pos - buf_pos) as usize;
        let h = match BatchHeader::parse(&buf[at..at + HEADER_LEN]) {
            Ok(h) => h,
            Err(why) => break Some(why.to_string()),
        };
        if h.len as u64 > MAX_BATCH_HARD {
            break Some("batch length beyond limit".to_string());
        }
        if h.len as u64 > file_len - pos {
            break Some("torn batch at end of file".to_string());
        }
        if h.base_offset != expected {
            break Some(format!(
                "batch base offset {} where {} was expected",
                h.base_offset, expected
            ));
        }
        ensure(&mut buf, &mut buf_pos, pos, h.len as u64)?;
        let at = (pos - buf_pos) as usize;
        let batch = &buf[at..at + h.len as usize];
        if !h.verify_crc(batch) {
            break Some("batch checksum mismatch".to_string());
        }
        f(&h, pos, batch);
        expected = h.next_offset();
        pos += h.len as u64;
    };
    Ok(ScanEnd {
        valid_len: pos,
        stopped,
    })
}
