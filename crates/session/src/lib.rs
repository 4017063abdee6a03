//! The backend tier of Switchboard: long-lived, stateful sessions against
//! the storage core.
//!
//! - [`host::SessionHost`]: every session of one node; stream admin and
//!   one-shot publishes; leases; drain on shutdown.
//! - `reader`: the read/ack state machine with its read-ahead buffer.
//! - `writer`: the write/commit state machine with its ordered publisher.
//! - [`codec`]: events between JSON and stored records (pure).
//! - [`cursor`]: opaque authenticated cursors (pure).
//!
//! This crate never sees HTTP: it answers `switchboard_rpc` requests as a
//! [`switchboard_rpc::Backend`], and maps its [`SessionError`]s to
//! [`switchboard_rpc::RpcError`] in one place. It reaches storage only
//! through [`switchboard_store::Store`].

pub mod budget;
pub mod codec;
pub mod crypto;
pub mod cursor;
mod error;
pub mod host;
mod idempotency;
mod reader;
pub mod record;
pub mod spill;
mod writer;

pub use error::{Result, SessionError};
pub use host::{HostConfig, SessionHost};
pub use idempotency::producer_id as idempotency_producer_id;
