//! What the API tier asks of the backend tier, and what it answers. In
//! process they are passed as they are; between processes they travel as
//! [`crate::frame`]s. Who asks travels beside them, in [`crate::Context`].

use bytes::Bytes;
use switchboard_proto::wire::{
    Ack, AckAnswer, Allocate, Allocated, Commit, CommitAnswer, CreateStream, Disposed, Read, SessionInfo,
    StreamDescription, StreamInfo, StreamList, WriteAnswer,
};

/// A request to the backend tier.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// `POST /v1/streams`.
    CreateStream(CreateStream),
    /// `GET /v1/streams`.
    ListStreams,
    /// `GET /v1/streams/{name}`.
    DescribeStream(String),
    /// `DELETE /v1/streams/{name}`.
    DeleteStream(String),
    /// `POST /v1/streams/{name}/events`, body as received (decompressed).
    Publish {
        /// Stream.
        stream: String,
        /// `Idempotency-Key` header.
        idempotency_key: Option<String>,
        /// Body.
        body: Bytes,
    },
    /// `POST /v1/sessions`: the session is bound to the caller.
    Allocate(Allocate),
    /// A call on one session; the caller must be the session's owner.
    Session {
        /// Session id.
        id: String,
        /// The call.
        call: Call,
    },
}

impl Request {
    /// The session this request must reach, if it is bound to one.
    pub fn session_id(&self) -> Option<&str> {
        match self {
            Request::Session { id, .. } => Some(id),
            _ => None,
        }
    }
}

/// A call on a session.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// `GET /v1/sessions/{id}`.
    Get,
    /// `POST .../read`.
    Read(Read),
    /// `POST .../ack`.
    Ack(Ack),
    /// `POST .../write`, body as received (decompressed).
    Write(Bytes),
    /// `POST .../commit`.
    Commit(Commit),
    /// `DELETE /v1/sessions/{id}`.
    Dispose,
}

/// An answer of the backend tier.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// A stream was created (`true`) or existed with the same settings.
    StreamCreated(StreamInfo, bool),
    /// Stream list.
    Streams(StreamList),
    /// One stream.
    Stream(StreamDescription),
    /// Stream deleted.
    StreamDeleted,
    /// A publish answer, JSON.
    Published(Bytes),
    /// Session allocated.
    Allocated(Allocated),
    /// Session state.
    Info(SessionInfo),
    /// A read answer, JSON, byte-identical on retries.
    Batch(Bytes),
    /// Ack answer.
    Acked(AckAnswer),
    /// Write answer.
    Written(WriteAnswer),
    /// Commit answer.
    Committed(CommitAnswer),
    /// Dispose answer.
    Disposed(Disposed),
}
