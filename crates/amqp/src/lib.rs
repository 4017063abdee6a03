//! The phone switch: how the API tier reaches the backend node that holds
//! a session, through independent RabbitMQ brokers (shards, not a
//! cluster).
//!
//! On each broker, under the cluster's namespace (`switchboard` by
//! default, see [`Names`]):
//! - `switchboard.allocate`, a work queue of allocations. Backend nodes
//!   consume it with a small prefetch while they have room, so a full
//!   node takes none and the next one does.
//! - `switchboard.any`, a work queue of calls any node can answer (stream
//!   administration, publishes).
//! - `switchboard.node.<id>`, each backend node's own exclusive queue:
//!   every call of a session goes there, as the session id names the
//!   node and its shard. When the node is gone, so is its queue, and a
//!   mandatory publish comes back unroutable: `session_gone` at once.
//! - `switchboard.heartbeats`, a fanout exchange: every node says once a
//!   second who it is and how loaded; API nodes keep the table that
//!   `GET /v1/cluster` shows and that allocation picks shards from.
//!
//! Requests and answers are [`switchboard_rpc::frame`]s, one message each;
//! answers come back by direct reply-to (straight to the asking channel,
//! no queue in between) and are matched by request id.
//!
//! [`AmqpRouter`] is the API tier's side, [`BackendLink`] the backend's.

use std::time::Duration;

use lapin::tcp::OwnedTLSConfig;
use lapin::uri::{AMQPScheme, AMQPUri};
use serde::{Deserialize, Serialize};

mod backend;
mod router;

pub use backend::{BackendConfig, BackendLink};
pub use router::{AmqpRouter, RouterConfig};

/// The namespace of a cluster's queues when none is configured.
pub const DEFAULT_NAMESPACE: &str = "switchboard";

/// The queue and exchange names of one cluster on its brokers. Every name
/// starts with the cluster's namespace, so that clusters (or test runs)
/// can share brokers without taking each other's calls.
#[derive(Debug, Clone)]
pub struct Names {
    /// The work queue of allocations.
    pub allocate: String,
    /// The work queue of calls any backend node answers.
    pub any: String,
    /// The fanout exchange of heartbeats.
    pub heartbeats: String,
    node_prefix: String,
}

impl Names {
    /// The names under `namespace`.
    pub fn new(namespace: &str) -> Names {
        Names {
            allocate: format!("{namespace}.allocate"),
            any: format!("{namespace}.any"),
            heartbeats: format!("{namespace}.heartbeats"),
            node_prefix: format!("{namespace}.node."),
        }
    }

    /// A backend node's own queue.
    pub fn node(&self, node: &str) -> String {
        format!("{}{node}", self.node_prefix)
    }
}

/// The frame size the nodes ask brokers for, bytes.
pub const FRAME_MAX: u32 = 1 << 20;

/// How often nodes say they are alive.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// A node not heard from for this long is lost: it takes no new work, and
/// its sessions are `session_gone` (their clients move on; a zombie that
/// wakes up later is fenced by the sessions that replaced its own).
pub const SILENT_AFTER: Duration = Duration::from_secs(4);
/// A node not heard from for this long leaves the cluster table.
pub const FORGOTTEN_AFTER: Duration = Duration::from_secs(600);

/// Why the phone switch cannot start or carry a call.
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    /// A broker URL that does not parse.
    #[error("broker URL {url:?}: {why}")]
    Url {
        /// The URL, without its password.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// The broker refused or dropped the connection, or an operation on it.
    #[error("broker {broker}: {source}")]
    Broker {
        /// Host and port.
        broker: String,
        /// The client's error.
        #[source]
        source: lapin::Error,
    },
    /// Another node with this id is attached to the broker.
    #[error(
        "broker {broker}: node id {node:?} is already attached there (node ids must be unique in a cluster)"
    )]
    NodeIdTaken {
        /// Host and port.
        broker: String,
        /// The id.
        node: String,
    },
}

/// One broker: where it is and how to reach it.
#[derive(Clone)]
pub struct Broker {
    uri: AMQPUri,
    tls: OwnedTLSConfig,
    label: String,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label)
    }
}

impl Broker {
    /// Parses `amqp://[user:pass@]host:port[/vhost]` or `amqps://...`;
    /// `ca_pem` is the certificate authority for `amqps` (PEM text; none:
    /// the system's roots).
    pub fn parse(url: &str, ca_pem: Option<&str>) -> Result<Broker, AmqpError> {
        let mut uri: AMQPUri = url.parse().map_err(|why: String| AmqpError::Url {
            url: redact(url),
            why,
        })?;
        // a dead peer is noticed within seconds, not the server's minute
        if uri.query.heartbeat.is_none() {
            uri.query.heartbeat = Some(5);
        }
        // a block or a read answer (up to MiBs) in few frames: the broker
        // picks the lower of this and its own `frame_max`
        if uri.query.frame_max.is_none() {
            uri.query.frame_max = Some(FRAME_MAX);
        }
        if uri.query.connection_timeout.is_none() {
            uri.query.connection_timeout = Some(5_000);
        }
        let label = format!("{}:{}", uri.authority.host, uri.authority.port);
        let tls = OwnedTLSConfig {
            identity: None,
            cert_chain: match uri.scheme {
                AMQPScheme::AMQPS => ca_pem.map(str::to_string),
                AMQPScheme::AMQP => None,
            },
        };
        Ok(Broker { uri, tls, label })
    }

    /// Host and port, for logs and metrics.
    pub fn label(&self) -> &str {
        &self.label
    }

    async fn connect(&self, name: &str) -> Result<lapin::Connection, AmqpError> {
        let props = lapin::ConnectionProperties::default().with_connection_name(name.into());
        let runtime = lapin::runtime::default_runtime().map_err(|e| self.err(e))?;
        lapin::Connection::connect_uri_with_config(self.uri.clone(), props, self.tls.clone(), runtime)
            .await
            .map_err(|e| self.err(e))
    }

    fn err(&self, source: lapin::Error) -> AmqpError {
        AmqpError::Broker {
            broker: self.label.clone(),
            source,
        }
    }
}

/// The URL with its password replaced, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].find(':') {
            Some(c) => format!("{}:***{}", &url[..s + 3 + c], &url[at..]),
            None => url.to_string(),
        },
        _ => url.to_string(),
    }
}

/// What a node says of itself once a second.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Node id.
    pub id: String,
    /// `api` or `backend`.
    pub role: String,
    /// `ready`, `draining`, `full` or `store_unavailable`.
    pub state: String,
    /// Where it listens (API nodes) or its host name (backends).
    pub address: String,
    /// Open sessions.
    pub sessions: u64,
    /// Memory budget in use, bytes.
    pub memory_bytes: u64,
    /// Memory budget, bytes.
    pub memory_budget: u64,
    /// Calls in progress.
    pub load: u64,
}

/// Whether the broker answered `err` with this soft (channel) error.
fn soft_error(err: &lapin::Error, which: lapin::protocol::AMQPSoftError) -> bool {
    matches!(err.kind(), lapin::ErrorKind::ProtocolError(e)
        if *e.kind() == lapin::protocol::AMQPErrorKind::Soft(which))
}

/// Exponential backoff with jitter for reconnections: 100 ms doubling to 5 s.
fn backoff(attempt: u32) -> Duration {
    let base = 100u64.saturating_mul(1 << attempt.min(6)).min(5_000);
    Duration::from_millis(base / 2 + rand::random::<u64>() % (base / 2 + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_do_not_reach_messages() {
        assert_eq!(redact("amqp://u:secret@h:5672/%2f"), "amqp://u:***@h:5672/%2f");
        assert_eq!(redact("amqp://h:5672"), "amqp://h:5672");
        let e = Broker::parse("amqp://u:secret@", None)
            .err()
            .map(|e| e.to_string());
        assert!(!e.unwrap_or_default().contains("secret"));
    }

    #[test]
    fn a_broker_is_named_by_host_and_port() {
        let b = Broker::parse("amqp://guest:guest@127.0.0.1:5673/%2f", None).map(|b| b.label().to_string());
        assert_eq!(b.ok().as_deref(), Some("127.0.0.1:5673"));
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        assert!(backoff(0) <= Duration::from_millis(100));
        assert!(backoff(30) <= Duration::from_secs(5));
        assert!(backoff(30) >= Duration::from_millis(2_500));
    }
}
