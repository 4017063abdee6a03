//! The backend node's side of the phone switch: it attaches to one broker,
//! answers the calls of its own queue, takes allocations while it has
//! room, and says who it is once a second.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions,
    BasicQosOptions, ExchangeDeclareOptions, QueueDeclareOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Consumer, ExchangeKind};
use switchboard_rpc::frame::{self, Frame};
use switchboard_rpc::{Backend, RpcError};
use tokio::sync::{watch, Semaphore};

use crate::{backoff, AmqpError, Broker, Heartbeat, Names, HEARTBEAT_EVERY};

/// How a backend node attaches to its broker.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// Its broker.
    pub broker: Broker,
    /// Its node id (unique in the cluster).
    pub node_id: String,
    /// What `GET /v1/cluster` shows as its address.
    pub address: String,
    /// Most calls it works on at once; more wait in the broker.
    pub max_calls: usize,
    /// Its cluster's queue names.
    pub names: Names,
}

/// Unacknowledged allocations a node holds: few, so that the next node
/// gets the next one.
const ALLOCATE_PREFETCH: u16 = 4;
/// Calls of its own queue a node holds unanswered: what it takes in stays
/// bounded whatever the API nodes send (the rest waits in the broker,
/// where it expires with its caller's patience).
const NODE_PREFETCH: u16 = 512;
/// Unacknowledged calls any node could answer.
const ANY_PREFETCH: u16 = 32;
/// How long a cancelled consumer may take to hand back what it holds (it
/// is all in memory once the broker has confirmed the cancel).
const GIVE_BACK_WITHIN: Duration = Duration::from_secs(5);

struct Inner {
    backend: Arc<dyn Backend>,
    cfg: BackendConfig,
    /// Calls in progress.
    load: AtomicU64,
    calls: Arc<Semaphore>,
    /// Set by `stop_taking_work`: no more allocations nor stateless calls.
    stopped: AtomicBool,
    /// Wakes the serving loop to look at the node's state now: `stopped`
    /// was set, or the node filled up or has room again.
    recheck: tokio::sync::Notify,
    /// Set by `close`.
    closing: watch::Sender<bool>,
    /// Whether the node is attached to its broker now.
    attached: AtomicBool,
}

/// A backend node's attachment to its broker. It reconnects with backoff
/// until closed.
#[derive(Clone)]
pub struct BackendLink {
    inner: Arc<Inner>,
    task: Arc<parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl BackendLink {
    /// Attaches `backend` to its broker. The first connection is made
    /// here, so that a wrong URL, a refused login or a node id already
    /// attached stops the start; later losses are retried with backoff.
    pub async fn start(backend: Arc<dyn Backend>, cfg: BackendConfig) -> Result<BackendLink, AmqpError> {
        let (closing, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            backend,
            calls: Arc::new(Semaphore::new(cfg.max_calls.max(1))),
            cfg,
            load: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            recheck: tokio::sync::Notify::new(),
            closing,
            attached: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&inner);
        inner.backend.on_capacity_change(Arc::new(move || {
            if let Some(i) = weak.upgrade() {
                i.recheck.notify_one();
            }
        }));
        let first = Attachment::open(&inner).await?;
        let i = inner.clone();
        let task = tokio::spawn(async move { maintain(i, first).await });
        Ok(BackendLink {
            inner,
            task: Arc::new(parking_lot::Mutex::new(Some(task))),
        })
    }

    /// Stops taking allocations and stateless calls (the first step of a
    /// drain); calls of its own sessions are still answered.
    pub fn stop_taking_work(&self) {
        self.inner.stopped.store(true, Ordering::Release);
        self.inner.recheck.notify_one();
    }

    /// Whether it is attached to its broker now.
    pub fn attached(&self) -> bool {
        self.inner.attached.load(Ordering::Acquire)
    }

    /// Finishes the calls in progress (up to `bound`), then detaches: the
    /// node's queue goes with its connection, so that later calls of its
    /// sessions come back as `session_gone` at once.
    pub async fn close(&self, bound: Duration) {
        self.stop_taking_work();
        let max = self.inner.cfg.max_calls.max(1) as u32;
        let _ = tokio::time::timeout(bound, self.inner.calls.acquire_many(max)).await;
        let _ = self.inner.closing.send(true);
        let task = self.task.lock().take();
        if let Some(t) = task {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

async fn maintain(inner: Arc<Inner>, first: Attachment) {
    let mut closing = inner.closing.subscribe();
    let mut next = Some(first);
    let mut attempt = 0u32;
    loop {
        if *closing.borrow() {
            return;
        }
        let a = match next.take() {
            Some(a) => a,
            None => match Attachment::open(&inner).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(broker = inner.cfg.broker.label(), error = %e, "phone switch: cannot attach; retrying");
                    metrics::counter!("switchboard_switch_reconnects_total", "broker" => inner.cfg.broker.label().to_string()).increment(1);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff(attempt)) => {}
                        _ = closing.changed() => return,
                    }
                    attempt = attempt.saturating_add(1);
                    continue;
                }
            },
        };
        attempt = 0;
        inner.attached.store(true, Ordering::Release);
        metrics::gauge!("switchboard_switch_broker_up", "broker" => inner.cfg.broker.label().to_string())
            .set(1.0);
        tracing::info!(broker = inner.cfg.broker.label(), node = %inner.cfg.node_id, "phone switch: attached");
        let mut a = a;
        let result = a.serve(&inner).await;
        let conn = a.conn;
        inner.attached.store(false, Ordering::Release);
        metrics::gauge!("switchboard_switch_broker_up", "broker" => inner.cfg.broker.label().to_string())
            .set(0.0);
        match result {
            Ok(()) => {
                let _ = conn.close(200, "node stopping".into()).await;
                return;
            }
            Err(e) => {
                tracing::warn!(broker = inner.cfg.broker.label(), error = %e, "phone switch: lost the broker; reattaching");
                let _ = conn.close(320, "reattaching".into()).await;
            }
        }
    }
}

/// Which queue a delivery came from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    Node,
    Any,
    Allocate,
}

struct Attachment {
    conn: lapin::Connection,
    out: Channel,
    node: Consumer,
    any_ch: Channel,
    alloc_ch: Channel,
}

impl Attachment {
    async fn open(inner: &Arc<Inner>) -> Result<Attachment, AmqpError> {
        let b = &inner.cfg.broker;
        let conn = b
            .connect(&format!("switchboard backend {}", inner.cfg.node_id))
            .await?;
        let node_ch = conn.create_channel().await.map_err(|e| b.err(e))?;
        node_ch
            .basic_qos(NODE_PREFETCH, BasicQosOptions::default())
            .await
            .map_err(|e| b.err(e))?;
        let queue = inner.cfg.names.node(&inner.cfg.node_id);
        let declared = node_ch
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        if let Err(e) = declared {
            // another connection holds the exclusive queue
            if crate::soft_error(&e, lapin::protocol::AMQPSoftError::RESOURCELOCKED) {
                return Err(AmqpError::NodeIdTaken {
                    broker: b.label().to_string(),
                    node: inner.cfg.node_id.clone(),
                });
            }
            return Err(b.err(e));
        }
        let node = node_ch
            .basic_consume(
                queue.as_str().into(),
                "node".into(),
                BasicConsumeOptions {
                    exclusive: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| b.err(e))?;
        let any_ch = conn.create_channel().await.map_err(|e| b.err(e))?;
        any_ch
            .basic_qos(ANY_PREFETCH, BasicQosOptions::default())
            .await
            .map_err(|e| b.err(e))?;
        let alloc_ch = conn.create_channel().await.map_err(|e| b.err(e))?;
        alloc_ch
            .basic_qos(ALLOCATE_PREFETCH, BasicQosOptions::default())
            .await
            .map_err(|e| b.err(e))?;
        for q in [&inner.cfg.names.any, &inner.cfg.names.allocate] {
            declare_work_queue(&any_ch, q).await.map_err(|e| b.err(e))?;
        }
        let out = conn.create_channel().await.map_err(|e| b.err(e))?;
        out.exchange_declare(
            inner.cfg.names.heartbeats.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| b.err(e))?;
        Ok(Attachment {
            conn,
            out,
            node,
            any_ch,
            alloc_ch,
        })
    }

    /// Serves until the connection fails (`Err`) or the link closes.
    async fn serve(&mut self, inner: &Arc<Inner>) -> Result<(), AmqpError> {
        let b = &inner.cfg.broker;
        let mut closing = inner.closing.subscribe();
        let Attachment {
            out,
            node,
            any_ch,
            alloc_ch,
            ..
        } = self;
        let (mut any, mut alloc): (Option<Consumer>, Option<Consumer>) = (None, None);
        let mut tick = tokio::time::interval(HEARTBEAT_EVERY / 4);
        let mut said = "";
        // heartbeats go on while this loop waits for room for a call: a
        // busy node is not a lost one
        let _beats = AbortOnDrop(tokio::spawn(beat(out.clone(), inner.clone())));
        loop {
            tokio::select! {
                d = node.next() => match d {
                    Some(Ok(d)) => dispatch(inner, out, d, Source::Node).await,
                    Some(Err(e)) => return Err(b.err(e)),
                    None => return Err(b.err(lapin::ErrorKind::InvalidConnectionState(lapin::ConnectionState::Closed).into())),
                },
                d = next(&mut any) => match d {
                    Some(Ok(d)) => dispatch(inner, out, d, Source::Any).await,
                    Some(Err(e)) => return Err(b.err(e)),
                    None => any = None,
                },
                d = next(&mut alloc) => match d {
                    Some(Ok(d)) => dispatch(inner, out, d, Source::Allocate).await,
                    Some(Err(e)) => return Err(b.err(e)),
                    None => alloc = None,
                },
                // a drain starts, the node fills or has room: act on it
                // now, not at the next tick
                _ = inner.recheck.notified() => tick.reset_immediately(),
                _ = tick.tick() => {
                    let status = inner.backend.status();
                    let stopped = inner.stopped.load(Ordering::Acquire) || status.draining;
                    let take_any = !stopped && status.store_error.is_none();
                    let take_alloc = take_any && !status.at_capacity();
                    // a change of state is said now, not at the next beat:
                    // before the node stops taking work (API nodes stop
                    // sending it, instead of leaving it in the queue), after
                    // it starts again (they send it as soon as it has room)
                    let state = state_of(&status, stopped);
                    let changed = state != said;
                    if changed && !take_alloc {
                        heartbeat(out, inner, &status, stopped).await.map_err(|e| b.err(e))?;
                    }
                    let requeued = toggle(any_ch, &mut any, &inner.cfg.names.any, take_any).await.map_err(|e| b.err(e))?
                        + toggle(alloc_ch, &mut alloc, &inner.cfg.names.allocate, take_alloc).await.map_err(|e| b.err(e))?;
                    if requeued > 0 {
                        metrics::counter!("switchboard_switch_requeued_total", "broker" => b.label().to_string()).increment(requeued);
                    }
                    if changed && take_alloc {
                        heartbeat(out, inner, &status, stopped).await.map_err(|e| b.err(e))?;
                    }
                    said = state;
                }
                _ = closing.changed() => {
                    // one last word: draining, so that API nodes stop
                    // sending work before the queue goes
                    let status = inner.backend.status();
                    let _ = heartbeat(out, inner, &status, true).await;
                    return Ok(());
                }
            }
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Says who the node is once a second, until the channel fails.
async fn beat(out: Channel, inner: Arc<Inner>) {
    let mut every = tokio::time::interval(HEARTBEAT_EVERY);
    loop {
        every.tick().await;
        let status = inner.backend.status();
        let stopped = inner.stopped.load(Ordering::Acquire) || status.draining;
        if heartbeat(&out, &inner, &status, stopped).await.is_err() {
            return;
        }
    }
}

/// What a heartbeat says the node is.
fn state_of(status: &switchboard_rpc::NodeStatus, stopped: bool) -> &'static str {
    if stopped {
        "draining"
    } else if status.store_error.is_some() {
        "store_unavailable"
    } else if status.at_capacity() {
        "full"
    } else {
        "ready"
    }
}

async fn heartbeat(
    out: &Channel,
    inner: &Arc<Inner>,
    status: &switchboard_rpc::NodeStatus,
    stopped: bool,
) -> Result<(), lapin::Error> {
    let hb = Heartbeat {
        id: inner.cfg.node_id.clone(),
        role: "backend".into(),
        state: state_of(status, stopped).into(),
        address: inner.cfg.address.clone(),
        sessions: status.sessions,
        memory_bytes: status.memory_used,
        memory_budget: status.memory_budget,
        load: inner.load.load(Ordering::Relaxed),
    };
    let body = serde_json::to_vec(&hb).unwrap_or_default();
    // no confirm is asked for: a lost heartbeat is replaced by the next
    // the channel is not in confirm mode: this resolves at once
    let _confirmation = out
        .basic_publish(
            inner.cfg.names.heartbeats.as_str().into(),
            "".into(),
            BasicPublishOptions::default(),
            &body,
            BasicProperties::default().with_expiration("5000".into()),
        )
        .await?
        .await?;
    Ok(())
}

/// Hands a delivery to a task of its own, once there is room.
async fn dispatch(inner: &Arc<Inner>, out: &Channel, mut d: lapin::message::Delivery, source: Source) {
    let Ok(permit) = inner.calls.clone().acquire_owned().await else {
        return;
    };
    // a call any node can answer is taken off the queue at once: were
    // this node to die while working on it, another must not publish
    // the same events again (the client decides about retries)
    if source == Source::Any {
        let _ = d.ack(BasicAckOptions::default()).await;
    }
    let (inner, out) = (inner.clone(), out.clone());
    inner.load.fetch_add(1, Ordering::Relaxed);
    let data = Bytes::from(std::mem::take(&mut d.data));
    let reply_to = d.properties.reply_to().clone();
    tokio::spawn(async move {
        answer(&inner, &out, reply_to, data).await;
        if source != Source::Any {
            let _ = d.ack(BasicAckOptions::default()).await;
        }
        inner.load.fetch_sub(1, Ordering::Relaxed);
        drop(permit);
    });
}

async fn next(c: &mut Option<Consumer>) -> Option<lapin::Result<lapin::message::Delivery>> {
    match c {
        Some(c) => c.next().await,
        None => std::future::pending().await,
    }
}

/// Starts or stops consuming `queue` on `ch`; how many calls stopping
/// gave back to the queue.
async fn toggle(ch: &Channel, c: &mut Option<Consumer>, queue: &str, on: bool) -> Result<u64, lapin::Error> {
    match (c.as_ref(), on) {
        (None, true) => {
            *c = Some(
                ch.basic_consume(
                    queue.into(),
                    ShortString::from(queue),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?,
            );
        }
        (Some(consumer), false) => {
            ch.basic_cancel(consumer.tag(), BasicCancelOptions::default())
                .await?;
            if let Some(consumer) = c.take() {
                return give_back(consumer, queue).await;
            }
        }
        _ => {}
    }
    Ok(0)
}

/// Requeues what a cancelled consumer was handed and has not passed on.
///
/// The broker delivers up to the prefetch until it confirms the cancel;
/// those deliveries wait in the consumer. Dropped, they would stay
/// unacknowledged on the channel until it closes, which a healthy node's
/// never does: no node would answer them, and their callers would wait
/// out their call timeout. The consumer's stream ends once it has handed
/// over the last of them.
async fn give_back(mut consumer: Consumer, queue: &str) -> Result<u64, lapin::Error> {
    let requeue = BasicNackOptions {
        multiple: false,
        requeue: true,
    };
    let drained = async {
        let mut n = 0u64;
        while let Some(d) = consumer.next().await {
            d?.nack(requeue).await?;
            n += 1;
        }
        Ok::<u64, lapin::Error>(n)
    };
    match tokio::time::timeout(GIVE_BACK_WITHIN, drained).await {
        Ok(n) => {
            let n = n?;
            if n > 0 {
                tracing::debug!(
                    queue,
                    calls = n,
                    "phone switch: calls taken just before a pause are requeued"
                );
            }
            Ok(n)
        }
        Err(_) => {
            tracing::warn!(queue, "phone switch: a cancelled consumer did not end; what it holds is requeued when its channel closes");
            Ok(0)
        }
    }
}

/// Declares a shared work queue (API and backend nodes declare it alike).
pub(crate) async fn declare_work_queue(ch: &Channel, queue: &str) -> Result<(), lapin::Error> {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .map(|_| ())
}

/// Works on one request and publishes its answer to the asker's reply
/// queue.
async fn answer(inner: &Arc<Inner>, out: &Channel, reply_to: Option<ShortString>, data: Bytes) {
    let Some(reply_to) = reply_to else {
        tracing::warn!("phone switch: a request without a reply queue; dropped");
        return;
    };
    let (id, result) = match frame::decode(data) {
        Ok(Frame::Request(ctx, req)) => {
            let id = ctx.request_id;
            (id, inner.backend.handle(ctx, req).await)
        }
        Ok(Frame::Answer { id, .. }) => (
            id,
            Err(RpcError::new(
                switchboard_proto::ErrorCode::BadRequest,
                "an answer was sent as a request",
            )),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "phone switch: an undecodable request; dropped");
            metrics::counter!("switchboard_switch_bad_frames_total").increment(1);
            return;
        }
    };
    let body = frame::encode_answer(id, &result);
    let sent = out
        .basic_publish(
            "".into(),
            reply_to,
            BasicPublishOptions::default(),
            &body,
            BasicProperties::default(),
        )
        .await;
    if let Err(e) = sent {
        tracing::debug!(error = %e, "phone switch: an answer could not be sent");
    }
}
