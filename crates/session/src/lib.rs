//! The backend tier of Switchboard: long-lived, stateful sessions against
//! the storage core.
//!
//! - [`host::SessionHost`]: every session of one node; stream admin and
//!   one-shot publishes; leases; drain on shutdown.
//! - `reader`: the read/ack state machine with its read-ahead buffer.
//! - `writer`: the write/commit state machine with its ordered publisher.
//! - [`codec`]: events between JSON and stored records (pure).
//! - [`cursor`]: opaque authenticated cursors (pure).
//! - [`keys`]: the server key file and what is derived from it.
//! - [`rpc`]: the requests and answers a router carries to this tier.
//!
//! This crate never sees HTTP: the API tier turns requests into
//! [`rpc::Request`]s and [`SessionError`]s into wire errors. It reaches
//! storage only through [`switchboard_store::Store`].

pub mod codec;
pub mod crypto;
pub mod cursor;
mod error;
pub mod host;
mod idempotency;
pub mod keys;
mod reader;
pub mod rpc;
mod writer;

pub use error::{Result, SessionError};
pub use host::{HostConfig, SessionHost};
