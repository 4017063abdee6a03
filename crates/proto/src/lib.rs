//! The wire contract of Switchboard (PROTOCOL.md) as pure code: no I/O, no
//! async, so that servers, clients and tests share one implementation and
//! check it against the shared test vectors.
//!
//! - [`partition`]: which partition a keyed event goes to (Kafka's murmur2,
//!   so that other Kafka clients agree).
//! - [`signing`]: the `X-Switchboard-Signature` header of session calls.

pub mod partition;
pub mod signing;
