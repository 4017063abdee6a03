//! What Switchboard's two tiers say to each other, and what they share.
//!
//! - [`Request`], [`Call`], [`Response`]: the messages a router carries
//!   from the API tier to the backend tier, with a [`Context`] (request
//!   id, deadline, caller identity).
//! - [`RpcError`]: the one error that crosses tiers (code, message,
//!   retryable, retry-after).
//! - [`frame`]: a compact, versioned binary frame for all of them, for
//!   routers that cross a network.
//! - [`id`]: session ids, which name the node and shard holding a session.
//! - [`keys`]: the server keys a cluster shares (cursors, session secrets).
//! - [`Backend`]: what a backend node offers a router.
//!
//! Both tiers depend on this crate; neither depends on the other.

use async_trait::async_trait;

mod codec;
mod error;
pub mod frame;
pub mod id;
pub mod keys;
mod message;

pub use error::RpcError;
pub use message::{Call, Request, Response};

/// Who asks, and until when the answer is useful.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Context {
    /// Unique per request on its sender (matches answers to requests).
    pub request_id: u64,
    /// Unix ms after which the caller no longer waits (0: no deadline).
    pub deadline_ms: u64,
    /// The authenticated identity: sessions are bound to it.
    pub caller: String,
    /// The phone-switch shard an allocation travelled through, which the
    /// new session's id names (none: the node's own).
    pub shard: Option<u16>,
}

impl Context {
    /// Whether the deadline has passed at `now_ms`.
    pub fn expired(&self, now_ms: i64) -> bool {
        self.deadline_ms != 0 && i64::try_from(self.deadline_ms).is_ok_and(|d| now_ms > d)
    }
}

/// A backend node's state, for `GET /v1/cluster` and health checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// Node id (also inside its session ids).
    pub node: String,
    /// Draining: new calls are refused.
    pub draining: bool,
    /// Open sessions.
    pub sessions: u64,
    /// Why the node's store cannot serve now, if it cannot.
    pub store_error: Option<String>,
    /// Most sessions it holds.
    pub max_sessions: u64,
    /// Bytes of its memory budget in use.
    pub memory_used: u64,
    /// Its memory budget, bytes.
    pub memory_budget: u64,
}

impl NodeStatus {
    /// Whether the node should take no new sessions: full, or its memory
    /// budget (if it has one) nearly spent, less than a sixteenth left.
    pub fn at_capacity(&self) -> bool {
        let budget_spent =
            self.memory_budget > 0 && self.memory_used >= self.memory_budget - self.memory_budget / 16;
        self.sessions >= self.max_sessions || budget_spent
    }
}

/// What a backend node offers a router.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Handles one request.
    async fn handle(&self, ctx: Context, req: Request) -> Result<Response, RpcError>;

    /// The node's current state.
    fn status(&self) -> NodeStatus;

    /// Has the node call `wake` when its sessions reach their maximum or
    /// fall below it, so that a router can say so at once instead of at
    /// its next look at [`Backend::status`]. One router per node: the
    /// first to ask is the one woken. The default never calls it.
    fn on_capacity_change(&self, wake: CapacityWake) {
        let _ = wake;
    }
}

/// What [`Backend::on_capacity_change`] calls.
pub type CapacityWake = std::sync::Arc<dyn Fn() + Send + Sync>;
