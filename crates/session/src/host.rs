//! The session host: every session of one backend node, stream admin and
//! one-shot publishes, against one [`Store`].

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use switchboard_proto::wire::{
    limits, Allocate, Allocated, CreateStream, Disposed, EventOffset, Mode, PartitionRange, PublishAnswer,
    PublishIn, Read, SessionInfo, StreamDescription, StreamInfo, StreamList,
};
use switchboard_store::{Store, StreamSettings};

use crate::budget::MemoryBudget;
use crate::crypto::{Crypto, Sealer};
use crate::cursor::CursorCodec;
use crate::error::{Result, SessionError};
use crate::idempotency::{Begin, Idempotency};
use crate::reader::{ReadLimits, Reader, Start};
use crate::writer::{publish_block, CommitPlan, Writer};
use switchboard_rpc::id::SessionId;
use switchboard_rpc::keys::ServerKeys;
use switchboard_rpc::{Backend, Call, Context, NodeStatus, Request, Response, RpcError};

/// Allowed `lease_ms`.
pub const LEASE_MS_RANGE: RangeInclusive<u64> = 1000..=3_600_000;
/// Allowed `max_sessions`.
pub const MAX_SESSIONS_RANGE: RangeInclusive<u64> = 1..=10_000_000;
/// Allowed `readahead_bytes`.
pub const READAHEAD_BYTES_RANGE: RangeInclusive<u64> = 64 * 1024..=1 << 30;
/// Allowed `memory_budget`: 16 MiB to 1 TiB.
pub const MEMORY_BUDGET_RANGE: RangeInclusive<u64> = 16 << 20..=1 << 40;
/// Allowed `max_blocks_in_flight`.
pub const MAX_BLOCKS_IN_FLIGHT_RANGE: RangeInclusive<u64> = 1..=1024;
/// Allowed `idempotency_max_keys`.
pub const IDEMPOTENCY_MAX_KEYS_RANGE: RangeInclusive<u64> = 1..=100_000_000;
/// Allowed `idempotency_ttl_ms`: a minute to 30 days.
pub const IDEMPOTENCY_TTL_MS_RANGE: RangeInclusive<u64> = 60_000..=30 * 24 * 3_600_000;

/// Settings of a session host.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// This node's id, reported in allocations and inside session ids
    /// (1 to 64 of `A-Z a-z 0-9 . _ -`).
    pub node_id: String,
    /// The phone-switch shard this node listens on, inside session ids.
    pub shard: u16,
    /// Session lease.
    pub lease_ms: u64,
    /// Most open sessions on this node.
    pub max_sessions: usize,
    /// Most read-ahead one reader buffers, bytes (its share of the budget).
    pub readahead_bytes: usize,
    /// The node's memory budget, bytes: read-ahead, pending batches, staged
    /// and in-flight blocks all draw on it.
    pub memory_budget: usize,
    /// A reader not read for this long gives its read-ahead back.
    pub readahead_idle: Duration,
    /// Scheduled-but-not-durable blocks per writer before `backpressure`.
    pub max_blocks_in_flight: usize,
    /// How long a writer's dispose waits for its scheduled blocks.
    pub dispose_timeout: Duration,
    /// How long idempotency keys are remembered.
    pub idempotency_ttl_ms: u64,
    /// Most idempotency keys remembered; the oldest go first.
    pub idempotency_max_keys: usize,
    /// The store may hold records in the previous record format (the
    /// embedded log written by an older version): read them as such.
    pub legacy_records: bool,
    /// Where blocks the store cannot take at shutdown are spilled (none:
    /// they are logged and lost).
    pub spill_dir: Option<std::path::PathBuf>,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            node_id: "local".into(),
            shard: 0,
            lease_ms: limits::LEASE_MS_DEFAULT,
            max_sessions: 10_000,
            readahead_bytes: 4 << 20,
            memory_budget: 256 << 20,
            readahead_idle: Duration::from_secs(5),
            max_blocks_in_flight: 16,
            dispose_timeout: Duration::from_secs(10),
            idempotency_ttl_ms: 24 * 3_600_000,
            idempotency_max_keys: 1_000_000,
            legacy_records: false,
            spill_dir: None,
        }
    }
}

enum State {
    Reader(Reader),
    Writer(Writer),
}

struct Slot {
    mode: Mode,
    owner: String,
    stream: String,
    producer_key: Option<(String, String)>,
    last_used_ms: AtomicI64,
    /// Calls in progress: a session is not expired under a call (a long
    /// poll may outlast the lease).
    busy: std::sync::atomic::AtomicU32,
    /// The stream was deleted: every later call answers `stream_not_found`
    /// and ends the session, instead of serving what was buffered.
    deleted: AtomicBool,
    state: tokio::sync::Mutex<State>,
}

struct Inner {
    store: Arc<dyn Store>,
    cfg: HostConfig,
    keys: ServerKeys,
    codec: CursorCodec,
    sessions: Mutex<HashMap<String, Arc<Slot>>>,
    /// Called when the sessions reach `max_sessions` or fall below it (set
    /// once, by the phone switch; `serve` has none).
    capacity_wake: std::sync::OnceLock<switchboard_rpc::CapacityWake>,
    producers: Mutex<HashMap<(String, String), String>>,
    draining: AtomicBool,
    idem: Arc<Idempotency>,
    crypto: Option<Arc<Crypto>>,
    budget: Arc<MemoryBudget>,
}

/// The backend tier of one node. Cheap to clone.
#[derive(Clone)]
pub struct SessionHost {
    inner: Arc<Inner>,
}

use switchboard_proto::time::now_ms;

/// Names that clients cannot use: internal streams start with `__`.
fn check_user_stream(name: &str) -> Result<()> {
    if !switchboard_proto::wire::is_valid_name(name, limits::MAX_STREAM_NAME) {
        return Err(SessionError::bad(format!(
            "name: {name:?} must be 1 to 200 characters of A-Z a-z 0-9 . _ -"
        )));
    }
    if name.starts_with("__") {
        return Err(SessionError::bad(format!(
            "name: {name:?} starts with \"__\", which is reserved for internal streams"
        )));
    }
    Ok(())
}

/// A stream name in a path: internal streams do not exist for clients.
fn visible_stream(name: &str) -> Result<()> {
    if name.starts_with("__") || !switchboard_proto::wire::is_valid_name(name, limits::MAX_STREAM_NAME) {
        return Err(SessionError::StreamNotFound(name.to_string()));
    }
    Ok(())
}

fn info(name: String, s: StreamSettings) -> StreamInfo {
    StreamInfo {
        name,
        partitions: s.partitions,
        retention_ms: s.retention_ms,
        retention_bytes: s.retention_bytes,
        encrypt_keys: s.encrypt_keys,
    }
}

impl SessionHost {
    /// A host over `store`. Loads idempotency keys, starts the lease
    /// sweeper. With `crypto`, events are encrypted before they reach the
    /// store.
    pub async fn start(
        store: Arc<dyn Store>,
        keys: ServerKeys,
        cfg: HostConfig,
        crypto: Option<Arc<Crypto>>,
    ) -> Result<SessionHost> {
        if !switchboard_rpc::id::is_valid_node_id(&cfg.node_id) {
            return Err(SessionError::bad(format!(
                "node id {:?}: must be 1 to 64 of A-Z a-z 0-9 . _ -",
                cfg.node_id
            )));
        }
        let cfg_budget = cfg.memory_budget;
        let idem = Arc::new(
            Idempotency::load(
                store.clone(),
                cfg.idempotency_ttl_ms,
                cfg.idempotency_max_keys,
                now_ms(),
            )
            .await?,
        );
        let inner = Arc::new(Inner {
            codec: CursorCodec::new(keys.clone()),
            store,
            cfg,
            keys,
            sessions: Mutex::new(HashMap::new()),
            capacity_wake: std::sync::OnceLock::new(),
            producers: Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
            idem,
            crypto,
            budget: MemoryBudget::new(cfg_budget),
        });
        for mode in ["read", "write"] {
            metrics::gauge!("switchboard_sessions_open", "mode" => mode).set(0.0);
        }
        let weak = Arc::downgrade(&inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                SessionHost { inner }.expire_sessions();
            }
        });
        Ok(SessionHost { inner })
    }

    /// The server keys (the API tier derives session secrets from them).
    pub fn keys(&self) -> &ServerKeys {
        &self.inner.keys
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.inner.cfg.node_id
    }

    /// Open sessions.
    pub fn session_count(&self) -> usize {
        self.inner.sessions.lock().len()
    }

    /// Bytes its sessions hold against the node's memory budget.
    pub fn memory_used(&self) -> usize {
        self.inner.budget.used()
    }

    /// Whether the host is draining.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }

    fn expire_sessions(&self) {
        let now = now_ms();
        let lease = self.inner.cfg.lease_ms as i64;
        let expired: Vec<(String, Arc<Slot>)> = {
            let mut s = self.inner.sessions.lock();
            let ids: Vec<String> = s
                .iter()
                .filter(|(_, slot)| {
                    slot.busy.load(Ordering::Acquire) == 0
                        && now - slot.last_used_ms.load(Ordering::Acquire) > lease
                })
                .map(|(id, _)| id.clone())
                .collect();
            ids.into_iter()
                .filter_map(|id| s.remove(&id).map(|v| (id, v)))
                .collect()
        };
        for (id, slot) in expired {
            tracing::debug!(session = %id, "session lease expired");
            self.forget(&id, &slot);
        }
    }

    fn forget(&self, id: &str, slot: &Slot) {
        // the phone switch hears when the node has room again
        if let Some(wake) = self.inner.capacity_wake.get() {
            if self.session_count() + 1 >= self.inner.cfg.max_sessions {
                wake();
            }
        }
        if let Some(k) = &slot.producer_key {
            let mut p = self.inner.producers.lock();
            if p.get(k).map(String::as_str) == Some(id) {
                p.remove(k);
            }
        }
        let mode = match slot.mode {
            Mode::Read => "read",
            Mode::Write => "write",
        };
        metrics::gauge!("switchboard_sessions_open", "mode" => mode).decrement(1.0);
    }

    /// Stops taking calls (they answer `unavailable`), waits up to `bound`
    /// for every writer's scheduled blocks to be durable, then closes the
    /// store. Returns how many writers did not finish in time.
    pub async fn drain(&self, bound: Duration) -> usize {
        self.inner.draining.store(true, Ordering::Release);
        let slots: Vec<Arc<Slot>> = self.inner.sessions.lock().drain().map(|(_, s)| s).collect();
        let deadline = tokio::time::Instant::now() + bound;
        let mut unfinished = 0;
        for slot in slots {
            if slot.mode != Mode::Write {
                continue;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Ok(mut st) = tokio::time::timeout(left, slot.state.lock()).await else {
                unfinished += 1;
                continue;
            };
            if let State::Writer(w) = &mut *st {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let back = match &self.inner.cfg.spill_dir {
                    Some(_) => w.finish_or_hand_back(left).await,
                    None => {
                        w.finish(left).await;
                        Vec::new()
                    }
                };
                if let Some(dir) = &self.inner.cfg.spill_dir {
                    spill_blocks(dir, &w.stream, back).await;
                }
                if w.in_flight() > 0 {
                    unfinished += 1;
                    // committed `durable: false` and not stored by the bound:
                    // name them, so that an operator knows what to replay
                    tracing::error!(
                        stream = %w.stream,
                        producer = w.producer.as_deref().unwrap_or("-"),
                        blocks = ?w.scheduled_blocks(),
                        "shutdown bound reached: these scheduled blocks are not stored"
                    );
                }
            }
        }
        if let Err(e) = self.inner.store.close().await {
            tracing::error!(error = %e, "closing the store failed");
        }
        unfinished
    }

    /// Handles one request of `ctx.caller`.
    pub async fn handle(&self, ctx: Context, req: Request) -> Result<Response> {
        if self.is_draining() {
            // a session does not outlive its node's drain: its client
            // allocates anew (elsewhere) from its cursor or `last_block`
            return Err(match req {
                Request::Session { .. } => SessionError::SessionGone,
                _ => SessionError::Unavailable("node is draining: retry on another node".into()),
            });
        }
        if ctx.expired(now_ms()) {
            return Err(SessionError::Unavailable(
                "the request's deadline passed before it reached its node".into(),
            ));
        }
        match req {
            Request::CreateStream(c) => self.create_stream(c).await,
            Request::ListStreams => {
                let streams = self.inner.store.list_streams().await?;
                Ok(Response::Streams(StreamList {
                    streams: streams
                        .into_iter()
                        .filter(|(n, _)| !n.starts_with("__"))
                        .map(|(n, s)| info(n, s))
                        .collect(),
                }))
            }
            Request::DescribeStream(name) => {
                visible_stream(&name)?;
                let s = self.inner.store.describe_stream(&name).await?;
                Ok(Response::Stream(StreamDescription {
                    stream: info(s.name, s.settings),
                    start_offsets: s.start_offsets,
                    end_offsets: s.end_offsets,
                }))
            }
            Request::DeleteStream(name) => {
                visible_stream(&name)?;
                self.inner.store.delete_stream(&name).await?;
                for slot in self.inner.sessions.lock().values() {
                    if slot.stream == name {
                        slot.deleted.store(true, Ordering::Release);
                    }
                }
                Ok(Response::StreamDeleted)
            }
            Request::Publish {
                stream,
                idempotency_key,
                body,
            } => self.publish(stream, idempotency_key, body, &ctx.caller).await,
            Request::Allocate(req) => self.allocate(req, ctx.caller, ctx.shard).await,
            Request::Session { id, call } => self.call(&id, &ctx.caller, call).await,
        }
    }

    async fn create_stream(&self, c: CreateStream) -> Result<Response> {
        check_user_stream(&c.name)?;
        let partitions = c.partitions.unwrap_or(1);
        if !(1..=limits::MAX_PARTITIONS).contains(&partitions) {
            return Err(SessionError::bad(format!(
                "partitions: must be 1 to 1024, got {partitions}"
            )));
        }
        if c.retention_ms
            .is_some_and(|ms| ms == 0 || ms > limits::MAX_RETENTION_MS)
        {
            return Err(SessionError::bad(format!(
                "retention_ms: must be 1 to {}",
                limits::MAX_RETENTION_MS
            )));
        }
        if c.retention_bytes == Some(0) {
            return Err(SessionError::bad("retention_bytes: must be at least 1"));
        }
        let settings = StreamSettings {
            partitions,
            retention_ms: c.retention_ms,
            retention_bytes: c.retention_bytes,
            encrypt_keys: c.encrypt_keys.unwrap_or(true),
        };
        let created = self.inner.store.create_stream(&c.name, settings).await?;
        Ok(Response::StreamCreated(info(c.name, settings), created))
    }

    async fn publish(
        &self,
        stream: String,
        key: Option<String>,
        body: Bytes,
        caller: &str,
    ) -> Result<Response> {
        visible_stream(&stream)?;
        let settings = self.inner.store.stream_settings(&stream).await?;
        let now = now_ms();
        let guard = match &key {
            Some(k) => {
                if k.is_empty()
                    || k.len() > limits::MAX_IDEMPOTENCY_KEY
                    || !k.bytes().all(|c| c.is_ascii_graphic())
                {
                    return Err(SessionError::bad(
                        "Idempotency-Key: must be 1 to 255 printable ASCII characters",
                    ));
                }
                let hash = xxhash_rust::xxh3::xxh3_128(&body);
                match self.inner.idem.begin(caller, &stream, k, hash, now).await? {
                    Begin::Done(answer) => return Ok(Response::Published(answer)),
                    Begin::Go(g) => Some(g),
                }
            }
            None => None,
        };
        let _held = self.inner.budget.take_for_write(body.len())?;
        // a keyed publish is block 1 of a producer named after its key, with
        // its unkeyed events placed by the key: a retry sends the very same
        // parts, and the store keeps each at most once
        let producer = key.as_deref().map(|k| switchboard_store::BlockProducer {
            id: crate::idempotency::producer_id(caller, &stream, k),
            epoch: 0,
            block: 1,
        });
        let unkeyed = match &key {
            Some(k) => (xxhash_rust::xxh3::xxh3_64(k.as_bytes()) % u64::from(settings.partitions)) as u32,
            None => rand::random::<u32>() % settings.partitions,
        };
        let sealer = self.sealer(&stream).await?;
        let encode =
            move |stream: &str, body: &[u8], sealer: Option<&Sealer>| -> Result<crate::codec::EncodedBlock> {
                let req: PublishIn<'_> = crate::codec::parse_body(body, "publish", r#"{"events": [...]}"#)?;
                let seal = sealer.map(|sealer| crate::codec::Seal {
                    sealer,
                    stream,
                    encrypt_keys: settings.encrypt_keys,
                });
                crate::codec::encode_events(
                    &req.events,
                    settings.partitions,
                    unkeyed,
                    now,
                    producer.clone(),
                    seal.as_ref(),
                )
            };
        // a large body is parsed and sealed off the runtime's threads
        let enc = if body.len() < crate::codec::OFF_RUNTIME_BYTES {
            encode(&stream, &body, sealer.as_deref())?
        } else {
            let (stream, body, sealer) = (stream.clone(), body.clone(), sealer.clone());
            tokio::task::spawn_blocking(move || encode(&stream, &body, sealer.as_deref()))
                .await
                .map_err(|e| SessionError::Internal(format!("publish task failed: {e}")))??
        };
        let (events, bytes, placement) = (enc.events, enc.bytes, enc.placement);
        let ranges = publish_block(&*self.inner.store, &stream, enc.block).await?;
        metrics::counter!("switchboard_events_in_total").increment(events);
        metrics::counter!("switchboard_bytes_in_total").increment(bytes);
        let offsets = placement
            .iter()
            .map(|&(p, i)| EventOffset {
                partition: p,
                offset: nth_offset(&ranges, p, u64::from(i)),
            })
            .collect();
        let answer = serde_json::to_vec(&PublishAnswer { offsets })
            .map_err(|e| SessionError::Internal(e.to_string()))?;
        let answer = Bytes::from(answer);
        if let Some(g) = guard {
            g.complete(answer.clone(), now).await?;
        }
        Ok(Response::Published(answer))
    }

    async fn sealer(&self, stream: &str) -> Result<Option<Arc<Sealer>>> {
        match &self.inner.crypto {
            Some(c) => Ok(Some(c.sealer(stream).await?)),
            None => Ok(None),
        }
    }

    async fn allocate(&self, a: Allocate, owner: String, shard: Option<u16>) -> Result<Response> {
        visible_stream(&a.stream)?;
        let settings = self.inner.store.stream_settings(&a.stream).await?;
        if self.session_count() >= self.inner.cfg.max_sessions {
            metrics::counter!("switchboard_backpressure_total", "reason" => "sessions").increment(1);
            return Err(SessionError::Backpressure {
                reason: format!(
                    "this node holds its maximum of {} sessions",
                    self.inner.cfg.max_sessions
                ),
                retry_after_ms: 1000,
            });
        }
        let id = SessionId::generate(
            self.inner.keys.current_id(),
            &self.inner.cfg.node_id,
            shard.unwrap_or(self.inner.cfg.shard),
        )
        .to_text();
        let (state, cursor, last_block, producer_key) = match a.mode {
            Mode::Read => {
                if a.producer.is_some() {
                    return Err(SessionError::bad("producer: only writers have a producer"));
                }
                let (positions, incarnation) = self.start_positions(&a, settings.partitions).await?;
                let r = Reader::start(
                    self.inner.store.clone(),
                    self.inner.crypto.clone(),
                    self.inner.codec.clone(),
                    Start {
                        stream: a.stream.clone(),
                        incarnation,
                        positions,
                    },
                    (self.inner.cfg.readahead_bytes, self.inner.cfg.readahead_idle),
                    &self.inner.budget,
                    self.inner.cfg.legacy_records,
                );
                let c = r.cursor().to_string();
                (State::Reader(r), Some(c), None, None)
            }
            Mode::Write => {
                if a.cursor.is_some() || a.partitions.is_some() {
                    return Err(SessionError::bad("cursor, partitions: only readers have these"));
                }
                let (last, key) = match &a.producer {
                    Some(p) => {
                        if !switchboard_proto::wire::is_valid_name(p, limits::MAX_PRODUCER_ID) {
                            return Err(SessionError::bad(format!(
                                "producer: {p:?} must be 1 to 128 characters of A-Z a-z 0-9 . _ -"
                            )));
                        }
                        let key = (a.stream.clone(), p.clone());
                        // the older session on this node finishes what it
                        // scheduled; then the store fences every older one
                        // (on any node) and answers the last block
                        self.fence_producer(&key).await;
                        let f = self.inner.store.fence_producer(&a.stream, p).await?;
                        (Some((f.last_block, f.epoch)), Some(key))
                    }
                    None => (None, None),
                };
                let w = Writer::start(
                    self.inner.store.clone(),
                    a.stream.clone(),
                    settings,
                    a.producer.clone().zip(last.map(|l| l.1)),
                    last.map(|l| l.0),
                    self.inner.cfg.max_blocks_in_flight,
                    self.inner.budget.clone(),
                );
                (State::Writer(w), None, last.map(|l| l.0), key)
            }
        };
        let slot = Arc::new(Slot {
            mode: a.mode,
            owner,
            stream: a.stream.clone(),
            producer_key: producer_key.clone(),
            last_used_ms: AtomicI64::new(now_ms()),
            busy: std::sync::atomic::AtomicU32::new(0),
            deleted: AtomicBool::new(false),
            state: tokio::sync::Mutex::new(state),
        });
        let open = {
            let mut sessions = self.inner.sessions.lock();
            sessions.insert(id.clone(), slot);
            sessions.len()
        };
        // and when it is full
        if let Some(wake) = self.inner.capacity_wake.get() {
            if open >= self.inner.cfg.max_sessions {
                wake();
            }
        }
        if let Some(k) = producer_key {
            self.inner.producers.lock().insert(k, id.clone());
        }
        let mode = match a.mode {
            Mode::Read => "read",
            Mode::Write => "write",
        };
        metrics::gauge!("switchboard_sessions_open", "mode" => mode).increment(1.0);
        Ok(Response::Allocated(Allocated {
            secret: self
                .inner
                .keys
                .session_secrets()
                .secret(&id)
                .ok_or_else(|| SessionError::Internal("no secret for a new session id".into()))?,
            session: id,
            mode: a.mode,
            stream: a.stream,
            cursor,
            last_block,
            lease_ms: self.inner.cfg.lease_ms,
            node: self.inner.cfg.node_id.clone(),
        }))
    }

    /// Ends the session that holds `key` on this node, after its scheduled
    /// blocks are durable, so that two sessions never publish for one
    /// producer at once here.
    async fn fence_producer(&self, key: &(String, String)) {
        let old = self.inner.producers.lock().remove(key);
        let Some(old) = old else { return };
        let slot = self.inner.sessions.lock().remove(&old);
        if let Some(slot) = slot {
            let mut st = slot.state.lock().await;
            if let State::Writer(w) = &mut *st {
                w.finish(self.inner.cfg.dispose_timeout).await;
            }
            drop(st);
            self.forget(&old, &slot);
            tracing::info!(session = %old, producer = %key.1, "producer moved to a new session");
        }
    }

    /// Where a reader starts, and the stream's incarnation.
    async fn start_positions(&self, a: &Allocate, partitions: u32) -> Result<(Vec<(u32, u64)>, u64)> {
        let wanted: Option<Vec<u32>> = match &a.partitions {
            Some(ps) => {
                if ps.is_empty() {
                    return Err(SessionError::bad("partitions: must not be empty"));
                }
                let mut v = ps.clone();
                v.sort_unstable();
                v.dedup();
                if v.len() != ps.len() {
                    return Err(SessionError::bad("partitions: must not repeat a partition"));
                }
                if let Some(p) = v.iter().find(|&&p| p >= partitions) {
                    return Err(SessionError::bad(format!(
                        "partitions: stream {:?} has no partition {p} (it has {partitions})",
                        a.stream
                    )));
                }
                Some(v)
            }
            None => None,
        };
        let all = || wanted.clone().unwrap_or_else(|| (0..partitions).collect());
        let d = self.inner.store.describe_stream(&a.stream).await?;
        let positions = match a.cursor.as_deref() {
            None | Some("latest") | Some("earliest") => {
                let from = if a.cursor.as_deref() == Some("earliest") {
                    &d.start_offsets
                } else {
                    &d.end_offsets
                };
                all().into_iter().map(|p| (p, from[p as usize])).collect()
            }
            Some(text) if text.starts_with("at:") => {
                let time = &text[3..];
                let ms = switchboard_proto::time::parse_rfc3339_ms(time).ok_or_else(|| {
                    SessionError::bad(format!(
                        "cursor: {time:?} after \"at:\" is not an RFC 3339 time like 2026-11-27T18:00:00Z"
                    ))
                })?;
                let at = self.inner.store.offsets_for_time(&a.stream, ms).await?;
                all()
                    .into_iter()
                    .map(|p| (p, at[p as usize].max(d.start_offsets[p as usize])))
                    .collect()
            }
            Some(text) => {
                let c = self
                    .inner
                    .codec
                    .open(text)
                    .map_err(|e| SessionError::BadCursor(e.to_string()))?;
                if c.stream != a.stream {
                    return Err(SessionError::BadCursor(format!(
                        "cursor is for another stream, not {:?}",
                        a.stream
                    )));
                }
                if c.incarnation != d.incarnation {
                    return Err(SessionError::BadCursor(format!(
                        "cursor is for an earlier stream named {:?}, deleted since: start from earliest, latest or at:<time>",
                        a.stream
                    )));
                }
                if c.positions.iter().any(|&(p, _)| p >= partitions) || c.positions.is_empty() {
                    return Err(SessionError::BadCursor(
                        "cursor does not match the stream's partitions".into(),
                    ));
                }
                if let Some(&(p, o)) = c.positions.iter().find(|&&(p, o)| o > d.end_offsets[p as usize]) {
                    return Err(SessionError::BadCursor(format!(
                        "cursor points past the end of partition {p} (offset {o}, end {}): it is not from this stream's history",
                        d.end_offsets[p as usize]
                    )));
                }
                match wanted {
                    None => c.positions,
                    Some(w) => w
                        .iter()
                        .map(|p| {
                            c.positions.iter().find(|q| q.0 == *p).copied().ok_or_else(|| {
                                SessionError::bad(format!("partitions: partition {p} is not in the cursor"))
                            })
                        })
                        .collect::<Result<_>>()?,
                }
            }
        };
        Ok((positions, d.incarnation))
    }

    async fn call(&self, id: &str, caller: &str, call: Call) -> Result<Response> {
        let slot = self
            .inner
            .sessions
            .lock()
            .get(id)
            .cloned()
            .ok_or(SessionError::SessionGone)?;
        if slot.owner != caller {
            // not renewed, not touched: the owner's session is unaffected
            return Err(SessionError::Forbidden(
                "this session belongs to another identity".into(),
            ));
        }
        if slot.deleted.load(Ordering::Acquire) {
            self.remove(id, &slot);
            return Err(SessionError::StreamNotFound(slot.stream.clone()));
        }
        let lease = self.inner.cfg.lease_ms as i64;
        if now_ms() - slot.last_used_ms.load(Ordering::Acquire) > lease {
            if self.inner.sessions.lock().remove(id).is_some() {
                self.forget(id, &slot);
            }
            return Err(SessionError::SessionGone);
        }
        slot.last_used_ms.store(now_ms(), Ordering::Release);
        let _busy = Busy::enter(&slot);
        let sealer = match &call {
            Call::Write(_) => self.sealer(&slot.stream).await?,
            _ => None,
        };
        let mut st = slot.state.lock().await;
        // disposed while this call waited for the lock
        if !self.inner.sessions.lock().contains_key(id) {
            return Err(SessionError::SessionGone);
        }
        if slot.deleted.load(Ordering::Acquire) {
            drop(st);
            self.remove(id, &slot);
            return Err(SessionError::StreamNotFound(slot.stream.clone()));
        }
        let result = match (call, &mut *st) {
            (Call::Get, State::Reader(r)) => Ok(Response::Info(SessionInfo {
                mode: Mode::Read,
                stream: r.stream.clone(),
                cursor: Some(r.cursor().to_string()),
                pending_batch: r.pending_batch(),
                last_block: None,
                durable_through_block: None,
                blocks_in_flight: None,
                lease_ms: self.inner.cfg.lease_ms,
            })),
            (Call::Get, State::Writer(w)) => Ok(Response::Info(SessionInfo {
                mode: Mode::Write,
                stream: w.stream.clone(),
                cursor: None,
                pending_batch: None,
                last_block: w.last_block,
                durable_through_block: Some(w.durable_through()),
                blocks_in_flight: Some(w.in_flight()),
                lease_ms: self.inner.cfg.lease_ms,
            })),
            (Call::Read(req), State::Reader(r)) => {
                let limits = read_limits(&req)?;
                r.read(limits).await.map(Response::Batch)
            }
            (Call::Ack(a), State::Reader(r)) => r.ack(a.batch).map(Response::Acked),
            (Call::Write(body), State::Writer(w)) => {
                w.write(&body, now_ms(), sealer).await.map(Response::Written)
            }
            (Call::Commit(c), State::Writer(w)) => match w.commit(c.block, c.durable.unwrap_or(false))? {
                CommitPlan::Now(a) => Ok(Response::Committed(a)),
                CommitPlan::Wait(shared, block) => {
                    drop(st);
                    let a = shared.wait_durable(block).await?;
                    slot.last_used_ms.store(now_ms(), Ordering::Release);
                    return Ok(Response::Committed(a));
                }
            },
            (Call::Dispose, State::Reader(r)) => {
                let cursor = r.cursor().to_string();
                self.remove(id, &slot);
                Ok(Response::Disposed(Disposed {
                    cursor: Some(cursor),
                    durable_through_block: None,
                }))
            }
            (Call::Dispose, State::Writer(w)) => {
                let d = w.finish(self.inner.cfg.dispose_timeout).await;
                self.remove(id, &slot);
                Ok(Response::Disposed(Disposed {
                    cursor: None,
                    durable_through_block: Some(d),
                }))
            }
            (Call::Read(_) | Call::Ack(_), State::Writer(_)) => Err(SessionError::Conflict(
                "this is a write session: read and ack need a read session".into(),
            )),
            (Call::Write(_) | Call::Commit(_), State::Reader(_)) => Err(SessionError::Conflict(
                "this is a read session: write and commit need a write session".into(),
            )),
        };
        slot.last_used_ms.store(now_ms(), Ordering::Release);
        result
    }

    fn remove(&self, id: &str, slot: &Slot) {
        if self.inner.sessions.lock().remove(id).is_some() {
            self.forget(id, slot);
        }
    }
}

#[async_trait::async_trait]
impl Backend for SessionHost {
    async fn handle(&self, ctx: Context, req: Request) -> std::result::Result<Response, RpcError> {
        SessionHost::handle(self, ctx, req).await.map_err(RpcError::from)
    }

    fn status(&self) -> NodeStatus {
        NodeStatus {
            node: self.inner.cfg.node_id.clone(),
            draining: self.is_draining(),
            sessions: self.session_count() as u64,
            store_error: self.inner.store.health(),
            max_sessions: self.inner.cfg.max_sessions as u64,
            memory_used: self.inner.budget.used() as u64,
            memory_budget: self.inner.budget.limit() as u64,
        }
    }

    fn on_capacity_change(&self, wake: switchboard_rpc::CapacityWake) {
        if self.inner.capacity_wake.set(wake).is_err() {
            tracing::warn!(
                "a second phone-switch link asked to hear of capacity changes; the first keeps hearing them"
            );
        }
    }
}

/// Writes blocks the store could not take at shutdown to spill files (on
/// the blocking pool: they are fsynced).
async fn spill_blocks(dir: &std::path::Path, stream: &str, blocks: Vec<(u64, switchboard_store::Block)>) {
    for (block, data) in blocks {
        let producer = data.producer().map(|p| p.id.clone());
        let (dir, s) = (dir.to_path_buf(), stream.to_string());
        let r = tokio::task::spawn_blocking(move || crate::spill::write(&dir, &s, data)).await;
        match r {
            Ok(Ok(path)) => {
                metrics::counter!("switchboard_spilled_blocks_total").increment(1);
                tracing::warn!(%stream, block, producer = producer.as_deref().unwrap_or("-"), file = %path.display(),
                    "the store cannot take a scheduled block: spilled to disk, to be appended at the next start");
            }
            Ok(Err(e)) => {
                tracing::error!(%stream, block, error = %e, "spilling a scheduled block failed: it is lost")
            }
            Err(e) => {
                tracing::error!(%stream, block, error = %e, "spilling a scheduled block failed: it is lost")
            }
        }
    }
}

/// Marks a session busy for the length of a call.
struct Busy<'a>(&'a Slot);

impl<'a> Busy<'a> {
    fn enter(slot: &'a Slot) -> Busy<'a> {
        slot.busy.fetch_add(1, Ordering::AcqRel);
        Busy(slot)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        // the lease runs from the end of the call
        self.0.last_used_ms.store(now_ms(), Ordering::Release);
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Checks a read's limits against docs/PROTOCOL.md's bounds: out of range is
/// an error, never clamped.
pub fn read_limits(r: &Read) -> Result<ReadLimits> {
    let max_events = r.max_events.unwrap_or(limits::MAX_EVENTS_DEFAULT);
    if !(1..=limits::MAX_EVENTS_LIMIT).contains(&max_events) {
        return Err(SessionError::bad(format!(
            "max_events: must be 1 to 10000, got {max_events}"
        )));
    }
    let max_bytes = r.max_bytes.unwrap_or(limits::MAX_BYTES_DEFAULT);
    if !(1..=limits::MAX_BYTES_LIMIT).contains(&max_bytes) {
        return Err(SessionError::bad(format!(
            "max_bytes: must be 1 to 16777216, got {max_bytes}"
        )));
    }
    let wait_ms = r.wait_ms.unwrap_or(limits::WAIT_MS_DEFAULT);
    if wait_ms > limits::WAIT_MS_LIMIT {
        return Err(SessionError::bad(format!(
            "wait_ms: must be 0 to 30000, got {wait_ms}"
        )));
    }
    Ok(ReadLimits {
        max_events: max_events as usize,
        max_bytes: max_bytes as usize,
        wait: Duration::from_millis(wait_ms),
    })
}

/// The offset of the `i`-th record a block put in `partition`, from the
/// ranges it got there (several when the store interleaved other writes).
fn nth_offset(ranges: &[PartitionRange], partition: u32, mut i: u64) -> u64 {
    let mut last = 0;
    for r in ranges.iter().filter(|r| r.partition == partition) {
        let n = r.last - r.first + 1;
        if i < n {
            return r.first + i;
        }
        i -= n;
        last = r.last;
    }
    last
}
