//! How the API tier reaches the backend node that holds a session.
//!
//! The API tier holds an `Arc<dyn Router>` and nothing else of the backend:
//! [`LocalRouter`] calls a [`SessionHost`] in the same process; the AMQP
//! "phone switch" router (a later adapter) carries the same
//! [`Request`]s to the node that owns the session, chosen by hashing its id.

use async_trait::async_trait;
use switchboard_proto::wire::NodeInfo;
use switchboard_session::rpc::{Request, Response};
use switchboard_session::{Result, SessionHost};

/// Carries requests to the backend tier.
#[async_trait]
pub trait Router: Send + Sync + 'static {
    /// Delivers `req` to the node that must handle it (the session's node
    /// for session calls, any node otherwise) and returns its answer.
    async fn route(&self, req: Request) -> Result<Response>;

    /// The backend nodes this router knows, for `GET /v1/cluster`.
    async fn nodes(&self) -> Vec<NodeInfo>;
}

/// A router to a session host in this process.
pub struct LocalRouter {
    host: SessionHost,
    address: String,
}

impl LocalRouter {
    /// Routes everything to `host`; `address` is reported by `nodes`.
    pub fn new(host: SessionHost, address: String) -> LocalRouter {
        LocalRouter { host, address }
    }
}

#[async_trait]
impl Router for LocalRouter {
    async fn route(&self, req: Request) -> Result<Response> {
        self.host.handle(req).await
    }

    async fn nodes(&self) -> Vec<NodeInfo> {
        vec![NodeInfo {
            id: self.host.node_id().to_string(),
            role: "api+backend".into(),
            state: if self.host.is_draining() {
                "draining"
            } else {
                "ready"
            }
            .into(),
            sessions: self.host.session_count() as u64,
            address: self.address.clone(),
            last_seen: switchboard_proto::time::rfc3339_ms(switchboard_session::host::now_ms()),
        }]
    }
}
