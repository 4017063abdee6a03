//! Request and answer bodies of docs/PROTOCOL.md, as serde types shared by the
//! server and the clients. Requests refuse unknown fields; answers accept
//! them, so that a newer server can add fields without breaking old clients.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::int;

/// Bounds and defaults of docs/PROTOCOL.md.
pub mod limits {
    /// Default `max_events` of a read.
    pub const MAX_EVENTS_DEFAULT: u32 = 500;
    /// Largest `max_events` of a read.
    pub const MAX_EVENTS_LIMIT: u32 = 10_000;
    /// Default `max_bytes` of a read.
    pub const MAX_BYTES_DEFAULT: u64 = 1 << 20;
    /// Largest `max_bytes` of a read.
    pub const MAX_BYTES_LIMIT: u64 = 16 << 20;
    /// Default `wait_ms` of a read.
    pub const WAIT_MS_DEFAULT: u64 = 0;
    /// Largest `wait_ms` of a read.
    pub const WAIT_MS_LIMIT: u64 = 30_000;
    /// Largest request body, after decompression.
    pub const MAX_BODY_BYTES: usize = 16 << 20;
    /// Default session lease.
    pub const LEASE_MS_DEFAULT: u64 = 30_000;
    /// Most partitions a stream can have.
    pub const MAX_PARTITIONS: u32 = 1024;
    /// Longest stream name.
    pub const MAX_STREAM_NAME: usize = 200;
    /// Longest producer id.
    pub const MAX_PRODUCER_ID: usize = 128;
    /// Longest `retention_ms` (timestamps are i64 milliseconds).
    pub const MAX_RETENTION_MS: u64 = i64::MAX as u64;
    /// Longest `Idempotency-Key`.
    pub const MAX_IDEMPOTENCY_KEY: usize = 255;
    /// Longest event key, bytes.
    pub const MAX_KEY_BYTES: usize = 16 * 1024;
    /// Most headers on one event.
    pub const MAX_HEADERS: usize = 64;
    /// Longest header name, bytes.
    pub const MAX_HEADER_NAME_BYTES: usize = 256;
    /// Most events in one write or publish.
    pub const MAX_EVENTS_PER_BLOCK: usize = 10_000;
    /// Header names starting with this are Switchboard's own (stored beside
    /// the event's headers): clients cannot use them.
    pub const RESERVED_HEADER_PREFIX: &str = "sb.";
}

/// Whether `name` matches `^[A-Za-z0-9._-]{1,max}$`.
pub fn is_valid_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// A field that is present holds a value, even `null`: an event's value
/// may be JSON `null`, which is not the same as no value (serde's default
/// for `Option` reads `null` as none).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// [`present`], borrowed from the body.
fn present_borrowed<'de: 'a, 'a, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<&'a RawValue>, D::Error> {
    <&'a RawValue>::deserialize(d).map(Some)
}

/// A string field that, when present, must be a string.
fn present_str<'de: 'a, 'a, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Cow<'a, str>>, D::Error> {
    #[derive(Deserialize)]
    struct S<'a>(#[serde(borrow)] Cow<'a, str>);
    S::deserialize(d).map(|s| Some(s.0))
}

/// `POST /v1/streams`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateStream {
    /// Stream name, `^[A-Za-z0-9._-]{1,200}$`.
    pub name: String,
    /// Partition count, 1..=1024 (default 1).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "int::opt"
    )]
    pub partitions: Option<u32>,
    /// Delete data older than this (per partition, whole segments).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "int::opt"
    )]
    pub retention_ms: Option<u64>,
    /// Keep each partition under about this many bytes.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "int::opt"
    )]
    pub retention_bytes: Option<u64>,
    /// Encrypt event keys at rest (default true); `false` keeps keys in the
    /// clear for the store (compaction, Kafka tooling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypt_keys: Option<bool>,
}

/// A stream's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    /// Name.
    pub name: String,
    /// Partition count.
    pub partitions: u32,
    /// Retention by age, if any.
    pub retention_ms: Option<u64>,
    /// Retention by size per partition, if any.
    pub retention_bytes: Option<u64>,
    /// Whether event keys are encrypted at rest.
    #[serde(default = "yes")]
    pub encrypt_keys: bool,
}

fn yes() -> bool {
    true
}

/// `GET /v1/streams`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamList {
    /// Every stream, by name.
    pub streams: Vec<StreamInfo>,
}

/// `GET /v1/streams/{name}`: the settings and, per partition, the offsets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamDescription {
    /// Name and settings.
    #[serde(flatten)]
    pub stream: StreamInfo,
    /// First offset held, per partition.
    pub start_offsets: Vec<u64>,
    /// Next offset to be written, per partition.
    pub end_offsets: Vec<u64>,
}

/// An event as a client writes it (and, with its position, reads it back).
/// Exactly one of `value` and `value_b64` is set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Partitioning key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// String headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// A JSON value, kept as its text (`null` included).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub value: Option<Box<RawValue>>,
    /// Bytes, base64 (standard alphabet, padded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_b64: Option<String>,
}

impl Event {
    /// An event whose value is `value` serialized as JSON.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Event> {
        Ok(Event {
            value: Some(serde_json::value::to_raw_value(value)?),
            ..Event::default()
        })
    }

    /// An event whose value is the JSON text `text` (checked).
    pub fn raw_json(text: impl Into<String>) -> serde_json::Result<Event> {
        Ok(Event {
            value: Some(RawValue::from_string(text.into())?),
            ..Event::default()
        })
    }

    /// An event whose value is `bytes`.
    pub fn bytes(bytes: &[u8]) -> Event {
        use base64::Engine;
        Event {
            value_b64: Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
            ..Event::default()
        }
    }

    /// Sets the key.
    pub fn with_key(mut self, key: impl Into<String>) -> Event {
        self.key = Some(key.into());
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Event {
        self.headers.insert(name.into(), value.into());
        self
    }
}

/// An event as the server parses it from a request body: borrowed from the
/// body, the value kept as its JSON text (never re-encoded).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventIn<'a> {
    /// Partitioning key.
    #[serde(default, borrow)]
    pub key: Option<Cow<'a, str>>,
    /// String headers.
    #[serde(default, borrow)]
    pub headers: Option<BTreeMap<Cow<'a, str>, Cow<'a, str>>>,
    /// A JSON value (`null` included).
    #[serde(default, borrow, deserialize_with = "present_borrowed")]
    pub value: Option<&'a RawValue>,
    /// Bytes, base64 (a string: `null` is refused).
    #[serde(default, borrow, deserialize_with = "present_str")]
    pub value_b64: Option<Cow<'a, str>>,
}

/// `{"events": [...]}`: the body of a one-shot publish.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishIn<'a> {
    /// The events.
    #[serde(borrow)]
    pub events: Vec<EventIn<'a>>,
}

/// `{"block", "events"}`: the body of a session write.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteIn<'a> {
    /// Block number.
    #[serde(deserialize_with = "int::whole")]
    pub block: u64,
    /// The events.
    #[serde(borrow)]
    pub events: Vec<EventIn<'a>>,
}

/// Body of a one-shot publish, as a client sends it.
#[derive(Debug, Clone, Serialize)]
pub struct Publish<'a> {
    /// The events.
    pub events: &'a [Event],
}

/// Where one published event landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventOffset {
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
}

/// Answer of a one-shot publish: one entry per event, in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishAnswer {
    /// Positions, in the order of the request's events.
    pub offsets: Vec<EventOffset>,
}

/// Session mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// A reader.
    Read,
    /// A writer.
    Write,
}

/// `POST /v1/sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allocate {
    /// Stream name.
    pub stream: String,
    /// Reader or writer.
    pub mode: Mode,
    /// Readers: a minted cursor, `earliest` or `latest` (default `latest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Readers: only these partitions (default all).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "int::opt_list"
    )]
    pub partitions: Option<Vec<u32>>,
    /// Writers: producer id for exactly-once publishing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer: Option<String>,
}

/// Answer of `POST /v1/sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocated {
    /// Session id.
    pub session: String,
    /// Signing secret (returned only here).
    pub secret: String,
    /// Mode.
    pub mode: Mode,
    /// Stream.
    pub stream: String,
    /// Readers: the position the session starts from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Producers: highest block durable with all before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_block: Option<u64>,
    /// Idle time after which the session expires.
    pub lease_ms: u64,
    /// Node that holds the session.
    pub node: String,
}

/// `GET /v1/sessions/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// Mode.
    pub mode: Mode,
    /// Stream.
    pub stream: String,
    /// Readers: position after the last acked batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Readers: the batch read but not acked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_batch: Option<u64>,
    /// Producers: `last_block` as of allocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_block: Option<u64>,
    /// Writers: highest block durable with all before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durable_through_block: Option<u64>,
    /// Writers: blocks committed but not yet durable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks_in_flight: Option<u64>,
    /// Lease.
    pub lease_ms: u64,
}

/// `POST /v1/sessions/{id}/read`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Read {
    /// At most this many events (1..=10 000, default 500).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "int::opt"
    )]
    pub max_events: Option<u32>,
    /// At most about this many bytes of events (1..=16 MiB, default 1 MiB;
    /// a single larger event is still delivered alone).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "int::opt"
    )]
    pub max_bytes: Option<u64>,
    /// Wait up to this long for events (0..=30 000, default 0).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "int::opt"
    )]
    pub wait_ms: Option<u64>,
}

/// An event as read.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ReadEvent {
    /// Partition.
    pub partition: u32,
    /// Offset in the partition.
    pub offset: u64,
    /// RFC 3339 with milliseconds, UTC.
    pub timestamp: String,
    /// Key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// JSON value (`null` included).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub value: Option<Box<RawValue>>,
    /// Byte value, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_b64: Option<String>,
}

/// Answer of a read.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ReadAnswer {
    /// Batch number; 0 when nothing came.
    pub batch: u64,
    /// Events.
    pub events: Vec<ReadEvent>,
    /// Position after this batch.
    pub cursor: String,
    /// Ranges retention removed before they could be read: the batch's
    /// cursor moves past them. A batch may hold gaps and no events; ack it
    /// like any other.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gaps: Vec<Gap>,
}

/// Events of one partition that retention removed before a reader got them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub struct Gap {
    /// Partition.
    pub partition: u32,
    /// First offset skipped.
    pub from: u64,
    /// Where reading went on: the first offset still held.
    pub to: u64,
}

/// `POST /v1/sessions/{id}/ack`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    /// The pending batch.
    #[serde(deserialize_with = "int::whole")]
    pub batch: u64,
}

/// Answer of an ack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckAnswer {
    /// The acked batch.
    pub batch: u64,
    /// Position after it.
    pub cursor: String,
}

/// Answer of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteAnswer {
    /// Block number.
    pub block: u64,
    /// Number of events staged.
    pub events: u64,
}

/// `POST /v1/sessions/{id}/commit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Commit {
    /// Block number.
    #[serde(deserialize_with = "int::whole")]
    pub block: u64,
    /// Answer only once the block is durable (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durable: Option<bool>,
}

/// Status of a committed block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockStatus {
    /// The session owns it; it will be published.
    Scheduled,
    /// Stored durably.
    Durable,
}

/// Offsets a block got in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRange {
    /// Partition.
    pub partition: u32,
    /// First offset.
    pub first: u64,
    /// Last offset.
    pub last: u64,
}

/// Answer of a commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitAnswer {
    /// Block number.
    pub block: u64,
    /// Current status.
    pub status: BlockStatus,
    /// Once durable: where the block's events are, by partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offsets: Option<Vec<PartitionRange>>,
}

/// Answer of `DELETE /v1/sessions/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disposed {
    /// Readers: position after the last acked batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Writers: highest block durable with all before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durable_through_block: Option<u64>,
}

/// One node of `GET /v1/cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Node id.
    pub id: String,
    /// `api`, `backend` or `api+backend`.
    pub role: String,
    /// `ready`, `draining` or `store_unavailable`.
    pub state: String,
    /// Open sessions.
    pub sessions: u64,
    /// Where it listens.
    pub address: String,
    /// RFC 3339.
    pub last_seen: String,
    /// The phone-switch broker it was heard on (none in one process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    /// Bytes of its memory budget in use (backends).
    #[serde(default)]
    pub memory_bytes: u64,
    /// Its memory budget, bytes (backends).
    #[serde(default)]
    pub memory_budget: u64,
    /// Calls in progress.
    #[serde(default)]
    pub load: u64,
}

/// One phone-switch broker of `GET /v1/cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    /// Its shard number (its place in the API tier's broker list).
    pub shard: u16,
    /// Host and port.
    pub address: String,
    /// `up` or `down`.
    pub state: String,
    /// Calls waiting for an answer through it.
    pub in_flight: u64,
}

/// `GET /v1/cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// Nodes.
    pub nodes: Vec<NodeInfo>,
    /// The phone switch's brokers (none in one process).
    #[serde(default)]
    pub brokers: Vec<BrokerInfo>,
}
