//! The binary frame of one request or answer between tiers.
//!
//! ```text
//! "SB"  major:u8  minor:u8  fields...
//! ```
//!
//! The fields follow [`crate::codec`]: `1` kind (1 request, 2 answer, 3
//! error), `2` request id, `3` deadline (Unix ms), `4` caller identity,
//! `5` the body (a nested message), `6` the shard an allocation came
//! through. Event payloads (publish and write
//! bodies, read answers) are raw bytes fields: no base64, no JSON inside
//! JSON, and a decoded frame slices them without copying.
//!
//! Compatibility: a different major version is refused; a newer minor may
//! add fields, which older decoders skip. Every decode checks what it
//! reads and answers [`FrameError`], never panics (see the fuzz target).

use bytes::Bytes;
use switchboard_proto::wire::{
    Ack, AckAnswer, Allocate, Allocated, BlockStatus, Commit, CommitAnswer, CreateStream, Disposed, Mode,
    PartitionRange, Read, SessionInfo, StreamDescription, StreamInfo, StreamList, WriteAnswer,
};
use switchboard_proto::ErrorCode;

use crate::codec::{Dec, Enc, Value};
use crate::{Call, Context, Request, Response, RpcError};

/// Major version: frames of another major are refused.
pub const MAJOR: u8 = 1;
/// Minor version written by this build.
pub const MINOR: u8 = 0;
const MAGIC: &[u8; 2] = b"SB";

/// Why a frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not a Switchboard frame.
    #[error("not a switchboard frame")]
    NotAFrame,
    /// A major version this node does not speak.
    #[error("frame version {0} is not supported (this node speaks {MAJOR})")]
    Version(u8),
    /// Damaged or incomplete; names what.
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A request with its context.
    Request(Context, Request),
    /// The answer to request `id`.
    Answer {
        /// The request's id.
        id: u64,
        /// What the backend answered.
        result: Result<Response, RpcError>,
    },
}

const KIND_REQUEST: u64 = 1;
const KIND_ANSWER: u64 = 2;
const KIND_ERROR: u64 = 3;

fn head(out: &mut Vec<u8>) {
    out.extend_from_slice(MAGIC);
    out.push(MAJOR);
    out.push(MINOR);
}

/// Encodes a request.
pub fn encode_request(ctx: &Context, req: &Request) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + payload_len(req));
    head(&mut out);
    let mut e = Enc::new(&mut out);
    e.uint(1, KIND_REQUEST);
    e.uint(2, ctx.request_id);
    e.uint(3, ctx.deadline_ms);
    e.str(4, &ctx.caller);
    e.msg(5, |m| request(m, req));
    e.opt_uint(6, ctx.shard.map(u64::from));
    out
}

/// Encodes an answer to request `id`.
pub fn encode_answer(id: u64, result: &Result<Response, RpcError>) -> Vec<u8> {
    let size = match result {
        Ok(Response::Published(b) | Response::Batch(b)) => b.len(),
        _ => 0,
    };
    let mut out = Vec::with_capacity(64 + size);
    head(&mut out);
    let mut e = Enc::new(&mut out);
    match result {
        Ok(r) => {
            e.uint(1, KIND_ANSWER);
            e.uint(2, id);
            e.msg(5, |m| response(m, r));
        }
        Err(err) => {
            e.uint(1, KIND_ERROR);
            e.uint(2, id);
            e.msg(5, |m| error(m, err));
        }
    }
    out
}

fn payload_len(req: &Request) -> usize {
    match req {
        Request::Publish { body, .. }
        | Request::Session {
            call: Call::Write(body),
            ..
        } => body.len(),
        _ => 0,
    }
}

/// Decodes a frame.
pub fn decode(frame: Bytes) -> Result<Frame, FrameError> {
    if frame.len() < 4 || &frame[..2] != MAGIC {
        return Err(FrameError::NotAFrame);
    }
    if frame[2] != MAJOR {
        return Err(FrameError::Version(frame[2]));
    }
    let mut d = Dec::new(frame.slice(4..));
    let (mut kind, mut id, mut deadline, mut caller, mut body) = (None, None, 0, String::new(), None);
    let mut shard = None;
    while let Some((f, v)) = d.next_field()? {
        match f {
            1 => kind = Some(v.int("kind")?),
            2 => id = Some(v.int("request id")?),
            3 => deadline = v.int("deadline")?,
            4 => caller = v.string("caller")?,
            5 => body = Some(v.bytes("body")?),
            6 => {
                let s = v.int("shard")?;
                shard = Some(u16::try_from(s).map_err(|_| FrameError::Malformed("shard out of range"))?);
            }
            _ => {}
        }
    }
    let id = id.ok_or(FrameError::Malformed("no request id"))?;
    let body = body.ok_or(FrameError::Malformed("no body"))?;
    match kind {
        Some(KIND_REQUEST) => Ok(Frame::Request(
            Context {
                request_id: id,
                deadline_ms: deadline,
                caller,
                shard,
            },
            decode_request(body)?,
        )),
        Some(KIND_ANSWER) => Ok(Frame::Answer {
            id,
            result: Ok(decode_response(body)?),
        }),
        Some(KIND_ERROR) => Ok(Frame::Answer {
            id,
            result: Err(decode_error(body)?),
        }),
        _ => Err(FrameError::Malformed("unknown frame kind")),
    }
}

// ---- requests ----

fn request(e: &mut Enc<'_>, req: &Request) {
    match req {
        Request::CreateStream(c) => e.msg(10, |m| {
            m.str(1, &c.name);
            m.opt_uint(2, c.partitions.map(u64::from));
            m.opt_uint(3, c.retention_ms);
            m.opt_uint(4, c.retention_bytes);
            if let Some(e) = c.encrypt_keys {
                m.bool(5, e);
            }
        }),
        Request::ListStreams => e.msg(11, |_| {}),
        Request::DescribeStream(n) => e.msg(12, |m| m.str(1, n)),
        Request::DeleteStream(n) => e.msg(13, |m| m.str(1, n)),
        Request::Publish {
            stream,
            idempotency_key,
            body,
        } => e.msg(14, |m| {
            m.str(1, stream);
            m.opt_str(2, idempotency_key.as_deref());
            m.bytes(3, body);
        }),
        Request::Allocate(a) => e.msg(15, |m| {
            m.str(1, &a.stream);
            m.uint(2, mode_num(a.mode));
            m.opt_str(3, a.cursor.as_deref());
            if let Some(ps) = &a.partitions {
                // present even when empty: `[]` and absent differ
                m.msg(4, |l| ps.iter().for_each(|&p| l.uint(1, u64::from(p))));
            }
            m.opt_str(5, a.producer.as_deref());
        }),
        Request::Session { id, call } => e.msg(16, |m| {
            m.str(1, id);
            match call {
                Call::Get => m.msg(10, |_| {}),
                Call::Read(r) => m.msg(11, |c| {
                    c.opt_uint(1, r.max_events.map(u64::from));
                    c.opt_uint(2, r.max_bytes);
                    c.opt_uint(3, r.wait_ms);
                }),
                Call::Ack(a) => m.msg(12, |c| c.uint(1, a.batch)),
                Call::Write(b) => m.bytes(13, b),
                Call::Commit(c) => m.msg(14, |x| {
                    x.uint(1, c.block);
                    if let Some(d) = c.durable {
                        x.bool(2, d);
                    }
                }),
                Call::Dispose => m.msg(15, |_| {}),
            }
        }),
    }
}

/// Reads the one variant field of a oneof message.
fn one_of(body: Bytes) -> Result<(u32, Value), FrameError> {
    let mut d = Dec::new(body);
    let mut found = None;
    while let Some((f, v)) = d.next_field()? {
        if f >= 10 {
            if found.is_some() {
                return Err(FrameError::Malformed("two variants"));
            }
            found = Some((f, v));
        }
    }
    found.ok_or(FrameError::Malformed("unknown or missing variant"))
}

fn fields(b: Bytes, mut f: impl FnMut(u32, Value) -> Result<(), FrameError>) -> Result<(), FrameError> {
    let mut d = Dec::new(b);
    while let Some((n, v)) = d.next_field()? {
        f(n, v)?;
    }
    Ok(())
}

fn need<T>(v: Option<T>, what: &'static str) -> Result<T, FrameError> {
    v.ok_or(FrameError::Malformed(what))
}

fn decode_request(body: Bytes) -> Result<Request, FrameError> {
    let (variant, v) = one_of(body)?;
    let b = v.bytes("request")?;
    Ok(match variant {
        10 => {
            let mut c = CreateStream {
                name: String::new(),
                partitions: None,
                retention_ms: None,
                retention_bytes: None,
                encrypt_keys: None,
            };
            let mut name = None;
            fields(b, |f, v| {
                match f {
                    1 => name = Some(v.string("name")?),
                    2 => c.partitions = Some(v.u32("partitions")?),
                    3 => c.retention_ms = Some(v.int("retention_ms")?),
                    4 => c.retention_bytes = Some(v.int("retention_bytes")?),
                    5 => c.encrypt_keys = Some(v.bool("encrypt_keys")?),
                    _ => {}
                }
                Ok(())
            })?;
            c.name = need(name, "stream name")?;
            Request::CreateStream(c)
        }
        11 => Request::ListStreams,
        12 | 13 => {
            let mut name = None;
            fields(b, |f, v| {
                if f == 1 {
                    name = Some(v.string("name")?);
                }
                Ok(())
            })?;
            let name = need(name, "stream name")?;
            if variant == 12 {
                Request::DescribeStream(name)
            } else {
                Request::DeleteStream(name)
            }
        }
        14 => {
            let (mut stream, mut key, mut body) = (None, None, None);
            fields(b, |f, v| {
                match f {
                    1 => stream = Some(v.string("stream")?),
                    2 => key = Some(v.string("idempotency key")?),
                    3 => body = Some(v.bytes("body")?),
                    _ => {}
                }
                Ok(())
            })?;
            Request::Publish {
                stream: need(stream, "stream")?,
                idempotency_key: key,
                body: need(body, "publish body")?,
            }
        }
        15 => {
            let (mut stream, mut mode, mut cursor, mut partitions, mut producer) =
                (None, None, None, None, None);
            fields(b, |f, v| {
                match f {
                    1 => stream = Some(v.string("stream")?),
                    2 => mode = Some(mode_of(v.int("mode")?)?),
                    3 => cursor = Some(v.string("cursor")?),
                    4 => {
                        let mut ps = Vec::new();
                        fields(v.bytes("partitions")?, |f, v| {
                            if f == 1 {
                                ps.push(v.u32("partition")?);
                            }
                            Ok(())
                        })?;
                        partitions = Some(ps);
                    }
                    5 => producer = Some(v.string("producer")?),
                    _ => {}
                }
                Ok(())
            })?;
            Request::Allocate(Allocate {
                stream: need(stream, "stream")?,
                mode: need(mode, "mode")?,
                cursor,
                partitions,
                producer,
            })
        }
        16 => {
            let mut id = None;
            fields(b.clone(), |f, v| {
                if f == 1 {
                    id = Some(v.string("session id")?);
                }
                Ok(())
            })?;
            let (variant, v) = one_of(b)?;
            Request::Session {
                id: need(id, "session id")?,
                call: decode_call(variant, v)?,
            }
        }
        _ => return Err(FrameError::Malformed("unknown request")),
    })
}

fn decode_call(variant: u32, v: Value) -> Result<Call, FrameError> {
    if variant == 13 {
        return Ok(Call::Write(v.bytes("write body")?));
    }
    let b = v.bytes("call")?;
    Ok(match variant {
        10 => Call::Get,
        11 => {
            let mut r = Read {
                max_events: None,
                max_bytes: None,
                wait_ms: None,
            };
            fields(b, |f, v| {
                match f {
                    1 => r.max_events = Some(v.u32("max_events")?),
                    2 => r.max_bytes = Some(v.int("max_bytes")?),
                    3 => r.wait_ms = Some(v.int("wait_ms")?),
                    _ => {}
                }
                Ok(())
            })?;
            Call::Read(r)
        }
        12 => {
            let mut batch = None;
            fields(b, |f, v| {
                if f == 1 {
                    batch = Some(v.int("batch")?);
                }
                Ok(())
            })?;
            Call::Ack(Ack {
                batch: need(batch, "batch")?,
            })
        }
        14 => {
            let (mut block, mut durable) = (None, None);
            fields(b, |f, v| {
                match f {
                    1 => block = Some(v.int("block")?),
                    2 => durable = Some(v.bool("durable")?),
                    _ => {}
                }
                Ok(())
            })?;
            Call::Commit(Commit {
                block: need(block, "block")?,
                durable,
            })
        }
        15 => Call::Dispose,
        _ => return Err(FrameError::Malformed("unknown session call")),
    })
}

fn mode_num(m: Mode) -> u64 {
    match m {
        Mode::Read => 1,
        Mode::Write => 2,
    }
}

fn mode_of(n: u64) -> Result<Mode, FrameError> {
    match n {
        1 => Ok(Mode::Read),
        2 => Ok(Mode::Write),
        _ => Err(FrameError::Malformed("mode")),
    }
}

// ---- answers ----

fn stream_info(e: &mut Enc<'_>, s: &StreamInfo) {
    e.str(1, &s.name);
    e.uint(2, u64::from(s.partitions));
    e.opt_uint(3, s.retention_ms);
    e.opt_uint(4, s.retention_bytes);
    e.bool(5, s.encrypt_keys);
}

fn decode_stream_info(b: Bytes) -> Result<StreamInfo, FrameError> {
    let (mut name, mut partitions) = (None, None);
    let (mut retention_ms, mut retention_bytes, mut encrypt_keys) = (None, None, true);
    fields(b, |f, v| {
        match f {
            1 => name = Some(v.string("name")?),
            2 => partitions = Some(v.u32("partitions")?),
            3 => retention_ms = Some(v.int("retention_ms")?),
            4 => retention_bytes = Some(v.int("retention_bytes")?),
            5 => encrypt_keys = v.bool("encrypt_keys")?,
            _ => {}
        }
        Ok(())
    })?;
    Ok(StreamInfo {
        encrypt_keys,
        name: need(name, "stream name")?,
        partitions: need(partitions, "partitions")?,
        retention_ms,
        retention_bytes,
    })
}

fn response(e: &mut Enc<'_>, r: &Response) {
    match r {
        Response::StreamCreated(info, created) => e.msg(10, |m| {
            m.msg(1, |i| stream_info(i, info));
            m.bool(2, *created);
        }),
        Response::Streams(l) => e.msg(11, |m| {
            for s in &l.streams {
                m.msg(1, |i| stream_info(i, s));
            }
        }),
        Response::Stream(d) => e.msg(12, |m| {
            m.msg(1, |i| stream_info(i, &d.stream));
            m.msg(2, |l| d.start_offsets.iter().for_each(|&o| l.uint(1, o)));
            m.msg(3, |l| d.end_offsets.iter().for_each(|&o| l.uint(1, o)));
        }),
        Response::StreamDeleted => e.msg(13, |_| {}),
        Response::Published(b) => e.bytes(14, b),
        Response::Allocated(a) => e.msg(15, |m| {
            m.str(1, &a.session);
            m.str(2, &a.secret);
            m.uint(3, mode_num(a.mode));
            m.str(4, &a.stream);
            m.opt_str(5, a.cursor.as_deref());
            m.opt_uint(6, a.last_block);
            m.uint(7, a.lease_ms);
            m.str(8, &a.node);
        }),
        Response::Info(i) => e.msg(16, |m| {
            m.uint(1, mode_num(i.mode));
            m.str(2, &i.stream);
            m.opt_str(3, i.cursor.as_deref());
            m.opt_uint(4, i.pending_batch);
            m.opt_uint(5, i.last_block);
            m.opt_uint(6, i.durable_through_block);
            m.opt_uint(7, i.blocks_in_flight);
            m.uint(8, i.lease_ms);
        }),
        Response::Batch(b) => e.bytes(17, b),
        Response::Acked(a) => e.msg(18, |m| {
            m.uint(1, a.batch);
            m.str(2, &a.cursor);
        }),
        Response::Written(w) => e.msg(19, |m| {
            m.uint(1, w.block);
            m.uint(2, w.events);
        }),
        Response::Committed(c) => e.msg(20, |m| {
            m.uint(1, c.block);
            m.uint(
                2,
                match c.status {
                    BlockStatus::Scheduled => 1,
                    BlockStatus::Durable => 2,
                },
            );
            if let Some(offsets) = &c.offsets {
                m.msg(3, |l| {
                    for r in offsets {
                        l.msg(1, |x| {
                            x.uint(1, u64::from(r.partition));
                            x.uint(2, r.first);
                            x.uint(3, r.last);
                        });
                    }
                });
            }
        }),
        Response::Disposed(d) => e.msg(21, |m| {
            m.opt_str(1, d.cursor.as_deref());
            m.opt_uint(2, d.durable_through_block);
        }),
    }
}

fn ints(b: Bytes, what: &'static str) -> Result<Vec<u64>, FrameError> {
    let mut out = Vec::new();
    fields(b, |f, v| {
        if f == 1 {
            out.push(v.int(what)?);
        }
        Ok(())
    })?;
    Ok(out)
}

fn decode_response(body: Bytes) -> Result<Response, FrameError> {
    let (variant, v) = one_of(body)?;
    Ok(match variant {
        14 => Response::Published(v.bytes("publish answer")?),
        17 => Response::Batch(v.bytes("read answer")?),
        _ => {
            let b = v.bytes("answer")?;
            match variant {
                10 => {
                    let (mut info, mut created) = (None, None);
                    fields(b, |f, v| {
                        match f {
                            1 => info = Some(decode_stream_info(v.bytes("stream")?)?),
                            2 => created = Some(v.bool("created")?),
                            _ => {}
                        }
                        Ok(())
                    })?;
                    Response::StreamCreated(need(info, "stream")?, need(created, "created")?)
                }
                11 => {
                    let mut streams = Vec::new();
                    fields(b, |f, v| {
                        if f == 1 {
                            streams.push(decode_stream_info(v.bytes("stream")?)?);
                        }
                        Ok(())
                    })?;
                    Response::Streams(StreamList { streams })
                }
                12 => {
                    let (mut stream, mut start, mut end) = (None, None, None);
                    fields(b, |f, v| {
                        match f {
                            1 => stream = Some(decode_stream_info(v.bytes("stream")?)?),
                            2 => start = Some(ints(v.bytes("start offsets")?, "offset")?),
                            3 => end = Some(ints(v.bytes("end offsets")?, "offset")?),
                            _ => {}
                        }
                        Ok(())
                    })?;
                    Response::Stream(StreamDescription {
                        stream: need(stream, "stream")?,
                        start_offsets: need(start, "start offsets")?,
                        end_offsets: need(end, "end offsets")?,
                    })
                }
                13 => Response::StreamDeleted,
                15 => {
                    let mut a = Allocated {
                        session: String::new(),
                        secret: String::new(),
                        mode: Mode::Read,
                        stream: String::new(),
                        cursor: None,
                        last_block: None,
                        lease_ms: 0,
                        node: String::new(),
                    };
                    let (mut session, mut mode, mut stream) = (None, None, None);
                    fields(b, |f, v| {
                        match f {
                            1 => session = Some(v.string("session")?),
                            2 => a.secret = v.string("secret")?,
                            3 => mode = Some(mode_of(v.int("mode")?)?),
                            4 => stream = Some(v.string("stream")?),
                            5 => a.cursor = Some(v.string("cursor")?),
                            6 => a.last_block = Some(v.int("last_block")?),
                            7 => a.lease_ms = v.int("lease_ms")?,
                            8 => a.node = v.string("node")?,
                            _ => {}
                        }
                        Ok(())
                    })?;
                    a.session = need(session, "session")?;
                    a.mode = need(mode, "mode")?;
                    a.stream = need(stream, "stream")?;
                    Response::Allocated(a)
                }
                16 => {
                    let mut i = SessionInfo {
                        mode: Mode::Read,
                        stream: String::new(),
                        cursor: None,
                        pending_batch: None,
                        last_block: None,
                        durable_through_block: None,
                        blocks_in_flight: None,
                        lease_ms: 0,
                    };
                    let (mut mode, mut stream) = (None, None);
                    fields(b, |f, v| {
                        match f {
                            1 => mode = Some(mode_of(v.int("mode")?)?),
                            2 => stream = Some(v.string("stream")?),
                            3 => i.cursor = Some(v.string("cursor")?),
                            4 => i.pending_batch = Some(v.int("pending_batch")?),
                            5 => i.last_block = Some(v.int("last_block")?),
                            6 => i.durable_through_block = Some(v.int("durable_through_block")?),
                            7 => i.blocks_in_flight = Some(v.int("blocks_in_flight")?),
                            8 => i.lease_ms = v.int("lease_ms")?,
                            _ => {}
                        }
                        Ok(())
                    })?;
                    i.mode = need(mode, "mode")?;
                    i.stream = need(stream, "stream")?;
                    Response::Info(i)
                }
                18 => {
                    let (mut batch, mut cursor) = (None, None);
                    fields(b, |f, v| {
                        match f {
                            1 => batch = Some(v.int("batch")?),
                            2 => cursor = Some(v.string("cursor")?),
                            _ => {}
                        }
                        Ok(())
                    })?;
                    Response::Acked(AckAnswer {
                        batch: need(batch, "batch")?,
                        cursor: need(cursor, "cursor")?,
                    })
                }
                19 => {
                    let (mut block, mut events) = (None, None);
                    fields(b, |f, v| {
                        match f {
                            1 => block = Some(v.int("block")?),
                            2 => events = Some(v.int("events")?),
                            _ => {}
                        }
                        Ok(())
                    })?;
                    Response::Written(WriteAnswer {
                        block: need(block, "block")?,
                        events: need(events, "events")?,
                    })
                }
                20 => {
                    let (mut block, mut status, mut offsets) = (None, None, None);
                    fields(b, |f, v| {
                        match f {
                            1 => block = Some(v.int("block")?),
                            2 => {
                                status = Some(match v.int("status")? {
                                    1 => BlockStatus::Scheduled,
                                    2 => BlockStatus::Durable,
                                    _ => return Err(FrameError::Malformed("block status")),
                                })
                            }
                            3 => {
                                let mut list = Vec::new();
                                fields(v.bytes("offsets")?, |f, v| {
                                    if f == 1 {
                                        let (mut p, mut first, mut last) = (None, None, None);
                                        fields(v.bytes("range")?, |f, v| {
                                            match f {
                                                1 => p = Some(v.u32("partition")?),
                                                2 => first = Some(v.int("first")?),
                                                3 => last = Some(v.int("last")?),
                                                _ => {}
                                            }
                                            Ok(())
                                        })?;
                                        list.push(PartitionRange {
                                            partition: need(p, "partition")?,
                                            first: need(first, "first")?,
                                            last: need(last, "last")?,
                                        });
                                    }
                                    Ok(())
                                })?;
                                offsets = Some(list);
                            }
                            _ => {}
                        }
                        Ok(())
                    })?;
                    Response::Committed(CommitAnswer {
                        block: need(block, "block")?,
                        status: need(status, "status")?,
                        offsets,
                    })
                }
                21 => {
                    let mut d = Disposed {
                        cursor: None,
                        durable_through_block: None,
                    };
                    fields(b, |f, v| {
                        match f {
                            1 => d.cursor = Some(v.string("cursor")?),
                            2 => d.durable_through_block = Some(v.int("durable_through_block")?),
                            _ => {}
                        }
                        Ok(())
                    })?;
                    Response::Disposed(d)
                }
                _ => return Err(FrameError::Malformed("unknown answer")),
            }
        }
    })
}

// ---- errors ----

fn error(e: &mut Enc<'_>, err: &RpcError) {
    e.str(1, err.code.as_str());
    e.str(2, &err.message);
    e.bool(3, err.retryable);
    e.opt_uint(4, err.retry_after_ms);
    e.opt_uint(5, err.fenced_by_epoch);
}

fn decode_error(b: Bytes) -> Result<RpcError, FrameError> {
    let (mut code, mut message, mut retryable, mut after, mut fenced) =
        (None, String::new(), None, None, None);
    fields(b, |f, v| {
        match f {
            1 => code = Some(v.string("code")?),
            2 => message = v.string("message")?,
            3 => retryable = Some(v.bool("retryable")?),
            4 => after = Some(v.int("retry_after_ms")?),
            5 => fenced = Some(v.int("fenced_by_epoch")?),
            _ => {}
        }
        Ok(())
    })?;
    let code = need(code, "error code")?;
    // a code from a newer node that this one does not know is still an
    // error the client must see: as `internal`, with the code in the text
    let (code, message) = match ErrorCode::ALL.iter().find(|c| c.as_str() == code) {
        Some(&c) => (c, message),
        None => (ErrorCode::Internal, format!("{code}: {message}")),
    };
    Ok(RpcError {
        code,
        message,
        retryable: retryable.unwrap_or(code.retryable()),
        retry_after_ms: after,
        fenced_by_epoch: fenced,
    })
}
