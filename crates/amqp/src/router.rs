//! The API tier's side of the phone switch: a [`Router`] that publishes
//! each request to the right queue of the right broker and waits for the
//! answer, which comes back by direct reply-to.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, ExchangeKind};
use parking_lot::Mutex;
use switchboard_proto::wire::{BrokerInfo, NodeInfo};
use switchboard_proto::ErrorCode;
use switchboard_router::Router;
use switchboard_rpc::frame::{self, Frame};
use switchboard_rpc::id::SessionId;
use switchboard_rpc::{Call, Context, Request, Response, RpcError};
use tokio::sync::{oneshot, watch};

use crate::backend::declare_work_queue;
use crate::{backoff, AmqpError, Broker, Heartbeat, Names, FORGOTTEN_AFTER, HEARTBEAT_EVERY, SILENT_AFTER};

/// The API tier's phone-switch settings.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// The brokers, in shard order: every API node lists the same brokers
    /// in the same order (a session id names its shard by position), and
    /// new brokers go at the end.
    pub brokers: Vec<Broker>,
    /// This API node's id.
    pub node_id: String,
    /// Where it listens, for `GET /v1/cluster`.
    pub address: String,
    /// How long a call may take on its node before it is `unavailable`
    /// (a long-poll read gets its wait on top).
    pub call_timeout: Duration,
    /// Its cluster's queue names.
    pub names: Names,
}

/// A call waiting for its answer.
struct Pending {
    tx: oneshot::Sender<Result<Response, RpcError>>,
    /// A session call: if its broker goes, its session is gone.
    session: bool,
    /// The node of a session call.
    node: Option<String>,
    since: Instant,
}

/// A call waiting longer than this makes its node's queue checked: a node
/// that died took the queue, and the call in it, along.
const PROBE_AFTER: Duration = Duration::from_secs(1);

/// The pseudo-queue of RabbitMQ's direct reply-to.
const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// A live connection to one broker.
#[derive(Clone)]
struct Link {
    publish: Channel,
}

struct Seen {
    hb: Heartbeat,
    at: Instant,
}

/// The nodes heard on a broker, by id.
#[derive(Default)]
struct Heard {
    backends: HashMap<String, Seen>,
    apis: HashMap<String, Seen>,
}

impl Heard {
    fn retain(&mut self, keep: impl Fn(&Seen) -> bool) {
        self.backends.retain(|_, s| keep(s));
        self.apis.retain(|_, s| keep(s));
    }
}

struct Shard {
    index: u16,
    broker: Broker,
    link: Mutex<Option<Link>>,
    pending: Mutex<HashMap<u64, Pending>>,
    seen: Mutex<Heard>,
    in_flight: AtomicU64,
    label: String,
    /// Attached, with a `ready` backend node heard from lately.
    allocating: AtomicBool,
    /// Attached, with a `ready` or `full` backend node heard from lately.
    serving: AtomicBool,
}

impl Shard {
    fn new(index: u16, broker: &Broker) -> Shard {
        Shard {
            index,
            broker: broker.clone(),
            link: Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
            seen: Mutex::new(Heard::default()),
            in_flight: AtomicU64::new(0),
            label: broker.label().to_string(),
            allocating: AtomicBool::new(false),
            serving: AtomicBool::new(false),
        }
    }

    /// Whether it can take work now: allocations, or calls any node answers.
    fn serves(&self, allocation: bool) -> bool {
        if allocation {
            self.allocating.load(Ordering::Acquire)
        } else {
            self.serving.load(Ordering::Acquire)
        }
    }

    /// Recomputes what it can take, from its link and the heartbeats heard
    /// (on each heartbeat, each second, and when the link changes).
    fn refresh(&self) {
        let up = self.link.lock().is_some();
        let (mut ready, mut full) = (false, false);
        if up {
            for s in self.seen.lock().backends.values() {
                if s.at.elapsed() < SILENT_AFTER {
                    ready |= s.hb.state == "ready";
                    full |= s.hb.state == "full";
                }
            }
        }
        self.allocating.store(ready, Ordering::Release);
        self.serving.store(ready || full, Ordering::Release);
    }

    /// How long backend `node` has been silent, if it is lost: heard from
    /// once, not for [`SILENT_AFTER`].
    fn lost(&self, node: &str) -> Option<Duration> {
        let seen = self.seen.lock();
        let s = seen.backends.get(node)?;
        let age = s.at.elapsed();
        (age >= SILENT_AFTER).then_some(age)
    }

    /// Forgets backend `node`: its queue is gone, so it is too.
    fn forget(&self, node: &str) {
        self.seen.lock().backends.remove(node);
        self.refresh();
    }

    /// Fails every waiting call: the broker is gone.
    fn fail_pending(&self) {
        let pending: Vec<Pending> = self.pending.lock().drain().map(|(_, p)| p).collect();
        for p in pending {
            let _ = p.tx.send(Err(self.gone(p.session)));
        }
    }

    fn gone(&self, session: bool) -> RpcError {
        if session {
            RpcError::session_gone(format!(
                "the session's broker ({}) is unreachable: allocate a new session from your cursor",
                self.label
            ))
        } else {
            RpcError::unavailable(format!("broker {} is unreachable", self.label)).after(500)
        }
    }
}

struct Inner {
    cfg: RouterConfig,
    /// In shard order; only ever grows (a reload appends brokers).
    shards: parking_lot::RwLock<Vec<Arc<Shard>>>,
    draining: AtomicBool,
    closing: watch::Sender<bool>,
}

/// Routes calls through the phone switch's brokers.
#[derive(Clone)]
pub struct AmqpRouter {
    inner: Arc<Inner>,
}

impl AmqpRouter {
    /// Starts a connection (kept with reconnection and backoff) to every
    /// broker. Returns at once: brokers that are down are retried, and
    /// their shards take no calls until they are up.
    pub fn start(cfg: RouterConfig) -> AmqpRouter {
        let (closing, _) = watch::channel(false);
        let shards: Vec<Arc<Shard>> = cfg
            .brokers
            .iter()
            .enumerate()
            .map(|(i, b)| Arc::new(Shard::new(i as u16, b)))
            .collect();
        let inner = Arc::new(Inner {
            cfg,
            shards: parking_lot::RwLock::new(shards.clone()),
            draining: AtomicBool::new(false),
            closing,
        });
        for shard in shards {
            tokio::spawn(maintain(inner.clone(), shard));
        }
        AmqpRouter { inner }
    }

    /// Takes a reloaded broker list: brokers added at its end become new
    /// shards, connected at once. The brokers already known must stay, in
    /// the same order (session ids name their shard by position); returns
    /// how many were added.
    pub fn reload(&self, brokers: &[Broker]) -> Result<usize, String> {
        let mut shards = self.inner.shards.write();
        if brokers.len() < shards.len() {
            return Err(format!(
                "the broker list lost {} broker(s): brokers cannot be removed (sessions name their shard by position); drain the backends of a broker and keep it listed",
                shards.len() - brokers.len()
            ));
        }
        for (s, b) in shards.iter().zip(brokers) {
            if s.label != b.label() {
                return Err(format!(
                    "shard {} was {} and would be {}: known brokers keep their place, new ones go at the end",
                    s.index,
                    s.label,
                    b.label()
                ));
            }
        }
        let added = brokers.len() - shards.len();
        for b in &brokers[shards.len()..] {
            let shard = Arc::new(Shard::new(shards.len() as u16, b));
            shards.push(shard.clone());
            tokio::spawn(maintain(self.inner.clone(), shard));
        }
        Ok(added)
    }

    /// Tells the other nodes this one is draining.
    pub fn start_draining(&self) {
        self.inner.draining.store(true, Ordering::Release);
    }

    /// Closes the connections.
    pub fn close(&self) {
        let _ = self.inner.closing.send(true);
    }

    /// Waits until some shard can take allocations, up to `bound`.
    pub async fn wait_ready(&self, bound: Duration) -> bool {
        let until = Instant::now() + bound;
        while Instant::now() < until {
            if self.inner.shards.read().iter().any(|s| s.serves(true)) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    fn timeout(&self, req: &Request) -> Duration {
        let wait = match req {
            Request::Session {
                call: Call::Read(r), ..
            } => Duration::from_millis(r.wait_ms.unwrap_or(0)),
            _ => Duration::ZERO,
        };
        self.inner.cfg.call_timeout + wait
    }

    /// The shard an allocation of `caller` goes to: the highest of a
    /// rendezvous hash over the shards that take allocations, so that a
    /// caller keeps its shard while it is up, and adding a broker moves
    /// only the callers it wins.
    fn shard_for(&self, caller: &str) -> Option<Arc<Shard>> {
        self.inner
            .shards
            .read()
            .iter()
            .filter(|s| s.serves(true))
            .max_by_key(|s| xxhash_rust::xxh3::xxh3_64_with_seed(caller.as_bytes(), u64::from(s.index)))
            .cloned()
    }

    /// Why no shard takes an allocation: every backend node heard from is
    /// full (`backpressure`, as one full node answers), or none is ready.
    fn no_room(&self) -> RpcError {
        if self.inner.shards.read().iter().any(|s| s.serves(false)) {
            // counted here: no backend node sees these allocations
            metrics::counter!("switchboard_backpressure_total", "reason" => "cluster_full").increment(1);
            RpcError::new(
                ErrorCode::Backpressure,
                "every backend node holds its maximum of sessions or has spent its memory budget: retry shortly",
            )
            .after(1000)
        } else {
            RpcError::unavailable("no backend node is taking sessions: retry shortly")
        }
    }

    fn any_shard(&self, spread: u64) -> Option<Arc<Shard>> {
        let shards = self.inner.shards.read();
        let up = shards.iter().filter(|s| s.serves(false)).count() as u64;
        if up == 0 {
            return None;
        }
        shards
            .iter()
            .filter(|s| s.serves(false))
            .nth((spread % up) as usize)
            .cloned()
    }
}

#[async_trait]
impl Router for AmqpRouter {
    async fn route(&self, mut ctx: Context, req: Request) -> Result<Response, RpcError> {
        let timeout = self.timeout(&req);
        ctx.deadline_ms = start_by(&ctx, &req, timeout, switchboard_proto::time::now_ms());
        let names = &self.inner.cfg.names;
        let (shard, queue, node) = match &req {
            Request::Session { id, .. } => {
                let sid = SessionId::parse(id)
                    .ok_or_else(|| RpcError::session_gone("not a session of this cluster"))?;
                let shard = self.inner.shards.read().get(usize::from(sid.shard)).cloned();
                let shard = shard.ok_or_else(|| {
                    RpcError::session_gone(format!(
                        "the session's shard {} is not one of this node's brokers (every API node must list the same brokers in the same order)",
                        sid.shard
                    ))
                })?;
                if let Some(silent) = shard.lost(&sid.node) {
                    return Err(lost_node(&sid.node, silent));
                }
                (shard, Cow::Owned(names.node(&sid.node)), Some(sid.node))
            }
            Request::Allocate(_) => {
                let shard = self.shard_for(&ctx.caller).ok_or_else(|| self.no_room())?;
                ctx.shard = Some(shard.index);
                (shard, Cow::Borrowed(names.allocate.as_str()), None)
            }
            _ => {
                let shard = self.any_shard(ctx.request_id).ok_or_else(|| {
                    RpcError::unavailable("no backend node is reachable: retry shortly").after(1000)
                })?;
                (shard, Cow::Borrowed(names.any.as_str()), None)
            }
        };
        call(&shard, &ctx, &req, &queue, node, timeout).await
    }

    async fn nodes(&self) -> Vec<NodeInfo> {
        let me = &self.inner.cfg;
        let mut out = vec![NodeInfo {
            id: me.node_id.clone(),
            role: "api".into(),
            state: if self.inner.draining.load(Ordering::Acquire) {
                "draining"
            } else {
                "ready"
            }
            .into(),
            sessions: 0,
            address: me.address.clone(),
            last_seen: switchboard_proto::time::rfc3339_ms(switchboard_proto::time::now_ms()),
            broker: None,
            memory_bytes: 0,
            memory_budget: 0,
            load: self
                .inner
                .shards
                .read()
                .iter()
                .map(|s| s.in_flight.load(Ordering::Relaxed))
                .sum(),
        }];
        // an API node is heard on every broker: show it once, as last heard
        let mut apis: HashMap<String, NodeInfo> = HashMap::new();
        let now_ms = switchboard_proto::time::now_ms();
        let shards = self.inner.shards.read().clone();
        for s in &shards {
            let heard = s.seen.lock();
            let all = heard.backends.iter().chain(heard.apis.iter());
            for (id, seen) in all {
                let role = &seen.hb.role;
                if role == "api" && id == &me.node_id {
                    continue;
                }
                let age = seen.at.elapsed();
                let n = NodeInfo {
                    id: id.clone(),
                    role: role.clone(),
                    state: if age < SILENT_AFTER {
                        seen.hb.state.clone()
                    } else {
                        "lost".into()
                    },
                    sessions: seen.hb.sessions,
                    address: seen.hb.address.clone(),
                    last_seen: switchboard_proto::time::rfc3339_ms(now_ms - age.as_millis() as i64),
                    broker: Some(s.label.clone()),
                    memory_bytes: seen.hb.memory_bytes,
                    memory_budget: seen.hb.memory_budget,
                    load: seen.hb.load,
                };
                if role == "api" {
                    match apis.get(id) {
                        Some(old) if old.last_seen >= n.last_seen => {}
                        _ => {
                            apis.insert(id.clone(), NodeInfo { broker: None, ..n });
                        }
                    }
                } else {
                    out.push(n);
                }
            }
        }
        out.extend(apis.into_values());
        out[1..].sort_by(|a, b| (&a.role, &a.id).cmp(&(&b.role, &b.id)));
        out
    }

    async fn brokers(&self) -> Vec<BrokerInfo> {
        self.inner
            .shards
            .read()
            .iter()
            .map(|s| BrokerInfo {
                shard: s.index,
                address: s.label.clone(),
                state: if s.link.lock().is_some() { "up" } else { "down" }.into(),
                in_flight: s.in_flight.load(Ordering::Relaxed),
            })
            .collect()
    }

    async fn readiness(&self) -> Result<(), String> {
        // a full node still serves its sessions: a full cluster answers
        // allocations `backpressure` and stays in its load balancer, where
        // its clients' sessions are
        let shards = self.inner.shards.read();
        if shards.iter().any(|s| s.serves(false)) {
            return Ok(());
        }
        let up = shards.iter().filter(|s| s.link.lock().is_some()).count();
        Err(if up == 0 {
            "no phone-switch broker is reachable".into()
        } else {
            format!("{up} broker(s) up, but no backend node on them serves (all draining, without their store, or silent)")
        })
    }
}

/// Removes a call's entry when the call ends, however it ends.
struct Waiting<'a> {
    shard: &'a Shard,
    id: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.shard.pending.lock().remove(&self.id);
        self.shard.in_flight.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("switchboard_switch_calls_in_flight", "broker" => self.shard.label.clone())
            .decrement(1.0);
    }
}

/// The latest a backend node may start a call (the `Context` deadline,
/// which the node checks before it acts): no later than this node stops
/// waiting for the answer, and an allocation within [`SILENT_AFTER`]. A
/// node frozen with allocations it had taken off the queue (a zombie) may
/// wake after the broker handed them to another node, or after the client
/// allocated again elsewhere; were it to act on them then, a producer's
/// stale allocation would fence the session its client writes through now.
fn start_by(ctx: &Context, req: &Request, timeout: Duration, now_ms: i64) -> u64 {
    let now = u64::try_from(now_ms).unwrap_or(0);
    let mut by = now.saturating_add(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
    if matches!(req, Request::Allocate(_)) {
        by = by.min(now.saturating_add(u64::try_from(SILENT_AFTER.as_millis()).unwrap_or(u64::MAX)));
    }
    match ctx.deadline_ms {
        0 => by,
        d => d.min(by),
    }
}

async fn call(
    shard: &Shard,
    ctx: &Context,
    req: &Request,
    queue: &str,
    node: Option<String>,
    timeout: Duration,
) -> Result<Response, RpcError> {
    let label = &shard.label;
    let session = node.is_some();
    let link = shard.link.lock().clone().ok_or_else(|| shard.gone(session))?;
    let started = Instant::now();
    let body = frame::encode_request(ctx, req);
    let (tx, rx) = oneshot::channel();
    shard.pending.lock().insert(
        ctx.request_id,
        Pending {
            tx,
            session,
            node: node.clone(),
            since: Instant::now(),
        },
    );
    shard.in_flight.fetch_add(1, Ordering::Relaxed);
    metrics::gauge!("switchboard_switch_calls_in_flight", "broker" => label.clone()).increment(1.0);
    let _waiting = Waiting {
        shard,
        id: ctx.request_id,
    };
    // the broker drops a request nobody took in time: its asker gave up
    let props = BasicProperties::default()
        .with_reply_to(DIRECT_REPLY_TO.into())
        .with_expiration(timeout.as_millis().to_string().into());
    let deadline = tokio::time::Instant::now() + timeout;
    let confirm = link
        .publish
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            &body,
            props,
        )
        .await
        .map_err(|_| shard.gone(session))?;
    drop(body);
    match tokio::time::timeout_at(deadline, confirm).await {
        Ok(Ok(Confirmation::Ack(None) | Confirmation::NotRequested)) => {}
        Ok(Ok(Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_)))) => {
            metrics::counter!("switchboard_switch_returned_total", "broker" => label.clone()).increment(1);
            if let Some(n) = &node {
                shard.forget(n);
            }
            return Err(if session {
                node_gone()
            } else {
                RpcError::unavailable(format!("no backend node listens on broker {label}")).after(500)
            });
        }
        Ok(Ok(Confirmation::Nack(None))) => {
            return Err(RpcError::unavailable(format!("broker {label} refused the call")).after(500));
        }
        Ok(Err(_)) => return Err(shard.gone(session)),
        Err(_) => return Err(timed_out(label, timeout)),
    }
    let answer = match tokio::time::timeout_at(deadline, rx).await {
        Ok(Ok(answer)) => answer,
        // the link failed: fail_pending answered already, or it was dropped
        Ok(Err(_)) => Err(shard.gone(session)),
        Err(_) => Err(timed_out(label, timeout)),
    };
    metrics::histogram!("switchboard_switch_call_seconds", "broker" => label.clone())
        .record(started.elapsed().as_secs_f64());
    answer
}

fn node_gone() -> RpcError {
    RpcError::session_gone("the session's node is gone: allocate a new session from your cursor")
}

fn lost_node(node: &str, silent: Duration) -> RpcError {
    RpcError::session_gone(format!(
        "the session's node {node} has not been heard from for {} s: allocate a new session from your cursor",
        silent.as_secs()
    ))
}

fn timed_out(label: &str, timeout: Duration) -> RpcError {
    metrics::counter!("switchboard_switch_timeouts_total", "broker" => label.to_string()).increment(1);
    RpcError::new(
        ErrorCode::Unavailable,
        format!(
            "no answer within {} ms through broker {label}: the node is slow or stopped",
            timeout.as_millis()
        ),
    )
    .after(1000)
}

/// Keeps shard `i` connected: connects, serves answers and heartbeats
/// until the connection fails, fails the calls that were waiting, and
/// reconnects with backoff.
async fn maintain(inner: Arc<Inner>, shard: Arc<Shard>) {
    let shard = &*shard;
    let mut closing = inner.closing.subscribe();
    let mut attempt = 0u32;
    let mut logged_down = false;
    loop {
        if *closing.borrow() {
            return;
        }
        match attach(&inner, shard, &mut closing).await {
            Ok(()) => return,
            Err((e, was_up)) => {
                if was_up {
                    tracing::warn!(broker = %shard.label, error = %e, "phone switch: lost a broker; its sessions are gone, allocations go to the others");
                    attempt = 0;
                    logged_down = false;
                } else if !logged_down {
                    tracing::warn!(broker = %shard.label, error = %e, "phone switch: broker unreachable; retrying");
                    logged_down = true;
                }
                metrics::counter!("switchboard_switch_reconnects_total", "broker" => shard.label.clone())
                    .increment(1);
                tokio::select! {
                    _ = tokio::time::sleep(backoff(attempt)) => {}
                    _ = closing.changed() => return,
                }
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

async fn attach(
    inner: &Arc<Inner>,
    shard: &Shard,
    closing: &mut watch::Receiver<bool>,
) -> Result<(), (AmqpError, bool)> {
    let b = &shard.broker;
    let e = |e: lapin::Error| (b.err(e), false);
    let conn = b
        .connect(&format!("switchboard api {}", inner.cfg.node_id))
        .await
        .map_err(|e| (e, false))?;
    let publish = conn.create_channel().await.map_err(e)?;
    publish
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(e)?;
    for q in [&inner.cfg.names.allocate, &inner.cfg.names.any] {
        declare_work_queue(&publish, q).await.map_err(e)?;
    }
    publish
        .exchange_declare(
            inner.cfg.names.heartbeats.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(e)?;
    // answers come by direct reply-to: the backend's channel hands them
    // to this one, with no queue in between (consumed, without acks, on
    // the channel that publishes the calls, before the first call)
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        exclusive: true,
        ..BasicConsumeOptions::default()
    };
    let mut answers = publish
        .basic_consume(
            DIRECT_REPLY_TO.into(),
            "answers".into(),
            no_ack,
            FieldTable::default(),
        )
        .await
        .map_err(e)?;
    let input = conn.create_channel().await.map_err(e)?;
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..QueueDeclareOptions::default()
    };
    let mut args = FieldTable::default();
    args.insert("x-message-ttl".into(), AMQPValue::LongInt(5_000));
    let beats = input.queue_declare("".into(), exclusive, args).await.map_err(e)?;
    input
        .queue_bind(
            beats.name().clone(),
            inner.cfg.names.heartbeats.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(e)?;
    let mut heard = input
        .basic_consume(
            beats.name().clone(),
            "heartbeats".into(),
            no_ack,
            FieldTable::default(),
        )
        .await
        .map_err(e)?;
    *shard.link.lock() = Some(Link {
        publish: publish.clone(),
    });
    shard.refresh();
    metrics::gauge!("switchboard_switch_broker_up", "broker" => shard.label.clone()).set(1.0);
    tracing::info!(broker = %shard.label, shard = shard.index, "phone switch: connected");
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    let mut probe: Option<Channel> = None;
    let result = loop {
        tokio::select! {
            d = answers.next() => match d {
                Some(Ok(d)) => deliver(shard, Bytes::from(d.data)),
                Some(Err(err)) => break Err(b.err(err)),
                None => break Err(b.err(lapin::ErrorKind::InvalidConnectionState(lapin::ConnectionState::Closed).into())),
            },
            d = heard.next() => match d {
                Some(Ok(d)) => {
                    if let Ok(hb) = serde_json::from_slice::<Heartbeat>(&d.data) {
                        let backend = hb.role == "backend";
                        let mut heard = shard.seen.lock();
                        let map = if backend { &mut heard.backends } else { &mut heard.apis };
                        map.insert(hb.id.clone(), Seen { hb, at: Instant::now() });
                        drop(heard);
                        if backend {
                            shard.refresh();
                        }
                    }
                }
                Some(Err(err)) => break Err(b.err(err)),
                None => break Err(b.err(lapin::ErrorKind::InvalidConnectionState(lapin::ConnectionState::Closed).into())),
            },
            _ = tick.tick() => {
                shard.seen.lock().retain(|s| s.at.elapsed() < FORGOTTEN_AFTER);
                shard.refresh();
                probe_gone_nodes(&conn, &mut probe, shard, &inner.cfg.names).await;
                let hb = Heartbeat {
                    id: inner.cfg.node_id.clone(),
                    role: "api".into(),
                    state: if inner.draining.load(Ordering::Acquire) { "draining" } else { "ready" }.into(),
                    address: inner.cfg.address.clone(),
                    sessions: 0,
                    memory_bytes: 0,
                    memory_budget: 0,
                    load: shard.in_flight.load(Ordering::Relaxed),
                };
                let body = serde_json::to_vec(&hb).unwrap_or_default();
                let sent = publish
                    .basic_publish(inner.cfg.names.heartbeats.as_str().into(), "".into(), BasicPublishOptions::default(), &body,
                        BasicProperties::default().with_expiration("5000".into()))
                    .await;
                match sent {
                    // confirms of heartbeats are awaited off this loop
                    Ok(c) => { tokio::spawn(c); }
                    Err(err) => break Err(b.err(err)),
                }
            }
            _ = closing.changed() => break Ok(()),
        }
    };
    *shard.link.lock() = None;
    shard.refresh();
    metrics::gauge!("switchboard_switch_broker_up", "broker" => shard.label.clone()).set(0.0);
    shard.fail_pending();
    // backends this node heard through the broker are not reachable now
    *shard.seen.lock() = Heard::default();
    let _ = conn.close(200, "closing".into()).await;
    result.map_err(|e| (e, true))
}

/// Fails the calls waiting on nodes whose queue is gone (the node died
/// with the calls in its queue) as `session_gone`, instead of letting them
/// run into the call timeout. A node that is only slow keeps its queue.
async fn probe_gone_nodes(
    conn: &lapin::Connection,
    probe: &mut Option<Channel>,
    shard: &Shard,
    names: &Names,
) {
    let suspects: std::collections::HashSet<String> = shard
        .pending
        .lock()
        .values()
        .filter(|p| p.since.elapsed() > PROBE_AFTER)
        .filter_map(|p| p.node.clone())
        .collect();
    for node in suspects {
        if let Some(silent) = shard.lost(&node) {
            fail_calls_of(shard, &node, || lost_node(&node, silent));
            continue;
        }
        // one channel serves the probes until a missing queue closes it
        let ch = match probe.take() {
            Some(ch) => ch,
            None => match conn.create_channel().await {
                Ok(ch) => ch,
                Err(_) => return,
            },
        };
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let declared = ch.queue_declare(names.node(&node).as_str().into(), passive, FieldTable::default());
        match tokio::time::timeout(Duration::from_secs(1), declared).await {
            Ok(Ok(_)) => *probe = Some(ch),
            Ok(Err(e)) if crate::soft_error(&e, lapin::protocol::AMQPSoftError::NOTFOUND) => {
                shard.forget(&node);
                fail_calls_of(shard, &node, node_gone);
            }
            _ => {}
        }
    }
}

/// Answers every call waiting on `node` with `err()`.
fn fail_calls_of(shard: &Shard, node: &str, err: impl Fn() -> RpcError) {
    let gone: Vec<Pending> = {
        let mut pending = shard.pending.lock();
        let ids: Vec<u64> = pending
            .iter()
            .filter(|(_, p)| p.node.as_deref() == Some(node))
            .map(|(id, _)| *id)
            .collect();
        ids.iter().filter_map(|id| pending.remove(id)).collect()
    };
    for p in gone {
        let _ = p.tx.send(Err(err()));
    }
}

/// Hands an answer to the call waiting for it (late answers are dropped).
fn deliver(shard: &Shard, data: Bytes) {
    match frame::decode(data) {
        Ok(Frame::Answer { id, result }) => {
            let waiting = shard.pending.lock().remove(&id);
            if let Some(p) = waiting {
                let _ = p.tx.send(result);
            }
        }
        Ok(Frame::Request(..)) => {
            tracing::warn!(broker = %shard.label, "phone switch: a request among the answers; dropped")
        }
        Err(e) => {
            metrics::counter!("switchboard_switch_bad_frames_total").increment(1);
            tracing::warn!(broker = %shard.label, error = %e, "phone switch: an undecodable answer; dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_proto::wire::{Allocate, Mode};

    fn ctx(deadline_ms: u64) -> Context {
        Context {
            request_id: 1,
            deadline_ms,
            caller: "c".into(),
            shard: None,
        }
    }

    #[test]
    fn calls_start_while_their_asker_waits_and_allocations_within_the_silence_bound() {
        let alloc = Request::Allocate(Allocate {
            stream: "s".into(),
            mode: Mode::Write,
            cursor: None,
            partitions: None,
            producer: Some("p".into()),
        });
        let now = 1_000_000;
        let wait = Duration::from_secs(30);
        assert_eq!(start_by(&ctx(0), &Request::ListStreams, wait, now), 1_030_000);
        assert_eq!(
            start_by(&ctx(1_120_000), &Request::ListStreams, wait, now),
            1_030_000
        );
        assert_eq!(
            start_by(&ctx(1_010_000), &Request::ListStreams, wait, now),
            1_010_000
        );
        assert_eq!(start_by(&ctx(1_120_000), &alloc, wait, now), 1_004_000);
        assert_eq!(start_by(&ctx(0), &alloc, Duration::from_secs(2), now), 1_002_000);
    }
}
