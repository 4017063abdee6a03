//! How the API tier reaches the backend node that holds a session.
//!
//! The API tier holds an `Arc<dyn Router>` and nothing else of the backend:
//! [`LocalRouter`] calls a [`Backend`] in the same process, passing
//! requests as they are; the AMQP "phone switch" router (a later adapter)
//! carries the same requests as `switchboard_rpc::frame`s to the node that
//! owns the session, which its id names.

use std::sync::Arc;

use async_trait::async_trait;
use switchboard_proto::wire::{BrokerInfo, NodeInfo};
use switchboard_rpc::{Backend, Context, Request, Response, RpcError};

/// Carries requests to the backend tier.
#[async_trait]
pub trait Router: Send + Sync + 'static {
    /// Delivers `req` to the node that must handle it (the session's node
    /// for session calls, any node otherwise) and returns its answer.
    async fn route(&self, ctx: Context, req: Request) -> Result<Response, RpcError>;

    /// The nodes this router knows, for `GET /v1/cluster`.
    async fn nodes(&self) -> Vec<NodeInfo>;

    /// The brokers it routes through, for `GET /v1/cluster` (none by
    /// default: in one process there are none).
    async fn brokers(&self) -> Vec<BrokerInfo> {
        Vec::new()
    }

    /// Whether calls can be served now, for `/readyz`: by default, when
    /// every node it knows is ready; otherwise why not (`node: state`).
    async fn readiness(&self) -> Result<(), String> {
        match self.nodes().await.into_iter().find(|n| n.state != "ready") {
            Some(n) => Err(format!("{}: {}", n.id, n.state)),
            None => Ok(()),
        }
    }
}

/// A router to a backend in this process.
pub struct LocalRouter {
    backend: Arc<dyn Backend>,
    address: String,
}

impl LocalRouter {
    /// Routes everything to `backend`; `address` is reported by `nodes`.
    pub fn new(backend: Arc<dyn Backend>, address: String) -> LocalRouter {
        LocalRouter { backend, address }
    }
}

#[async_trait]
impl Router for LocalRouter {
    async fn route(&self, ctx: Context, req: Request) -> Result<Response, RpcError> {
        self.backend.handle(ctx, req).await
    }

    async fn nodes(&self) -> Vec<NodeInfo> {
        let s = self.backend.status();
        vec![NodeInfo {
            id: s.node,
            role: "api+backend".into(),
            state: if s.draining {
                "draining"
            } else if s.store_error.is_some() {
                "store_unavailable"
            } else {
                "ready"
            }
            .into(),
            sessions: s.sessions,
            address: self.address.clone(),
            last_seen: switchboard_proto::time::rfc3339_ms(switchboard_proto::time::now_ms()),
            broker: None,
            memory_bytes: s.memory_used,
            memory_budget: s.memory_budget,
            load: 0,
        }]
    }
}
