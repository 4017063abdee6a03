//! The wire contract of Switchboard (docs/PROTOCOL.md) as pure code: no I/O, no
//! async, so that servers, clients and tests share one implementation and
//! check it against the shared test vectors.
//!
//! - [`wire`]: request and answer bodies, limits, name rules.
//! - [`error`]: error codes, their HTTP statuses and the error body.
//! - [`int`]: whole numbers in request bodies, in any JSON number form.
//! - [`partition`]: which partition a keyed event goes to (Kafka's murmur2,
//!   so that other Kafka clients agree).
//! - [`signing`]: the `X-Switchboard-Signature` header of session calls.
//! - [`time`]: RFC 3339 millisecond timestamps.
//! - [`value`]: bounds on event values (nesting, lone surrogates).

pub mod error;
pub mod int;
pub mod partition;
pub mod signing;
pub mod time;
pub mod value;
pub mod wire;

pub use error::{ErrorBody, ErrorCode, ErrorDetail};
