//! Frames round-trip every message; damaged frames are errors, never
//! panics; a newer minor version's extra fields are skipped.

use bytes::Bytes;
use proptest::prelude::*;
use switchboard_proto::wire::{
    Ack, AckAnswer, Allocate, Allocated, BlockStatus, Commit, CommitAnswer, CreateStream, Disposed, Mode,
    PartitionRange, Read, SessionInfo, StreamDescription, StreamInfo, StreamList, WriteAnswer,
};
use switchboard_proto::ErrorCode;
use switchboard_rpc::frame::{self, Frame, FrameError};
use switchboard_rpc::{Call, Context, Request, Response, RpcError};

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,24}"
}

fn bytes() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..300).prop_map(Bytes::from)
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![Just(Mode::Read), Just(Mode::Write)]
}

fn info() -> impl Strategy<Value = StreamInfo> {
    (
        text(),
        any::<u32>(),
        any::<Option<u64>>(),
        any::<Option<u64>>(),
        any::<bool>(),
    )
        .prop_map(|(name, partitions, ms, b, encrypt_keys)| StreamInfo {
            name,
            partitions,
            retention_ms: ms,
            retention_bytes: b,
            encrypt_keys,
        })
}

fn call() -> impl Strategy<Value = Call> {
    prop_oneof![
        Just(Call::Get),
        (any::<Option<u32>>(), any::<Option<u64>>(), any::<Option<u64>>()).prop_map(|(e, b, w)| Call::Read(
            Read {
                max_events: e,
                max_bytes: b,
                wait_ms: w
            }
        )),
        any::<u64>().prop_map(|batch| Call::Ack(Ack { batch })),
        bytes().prop_map(Call::Write),
        (any::<u64>(), any::<Option<bool>>())
            .prop_map(|(block, durable)| Call::Commit(Commit { block, durable })),
        Just(Call::Dispose),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (
            text(),
            any::<Option<u32>>(),
            any::<Option<u64>>(),
            any::<Option<u64>>(),
            any::<Option<bool>>()
        )
            .prop_map(|(name, p, ms, b, e)| {
                Request::CreateStream(CreateStream {
                    name,
                    partitions: p,
                    retention_ms: ms,
                    retention_bytes: b,
                    encrypt_keys: e,
                })
            }),
        Just(Request::ListStreams),
        text().prop_map(Request::DescribeStream),
        text().prop_map(Request::DeleteStream),
        (text(), proptest::option::of(text()), bytes()).prop_map(|(stream, idempotency_key, body)| {
            Request::Publish {
                stream,
                idempotency_key,
                body,
            }
        }),
        (
            text(),
            mode(),
            proptest::option::of(text()),
            proptest::option::of(proptest::collection::vec(any::<u32>(), 0..5)),
            proptest::option::of(text())
        )
            .prop_map(
                |(stream, mode, cursor, partitions, producer)| Request::Allocate(Allocate {
                    stream,
                    mode,
                    cursor,
                    partitions,
                    producer
                })
            ),
        (text(), call()).prop_map(|(id, call)| Request::Session { id, call }),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    let ranges = proptest::collection::vec(
        (any::<u32>(), any::<u64>(), any::<u64>()).prop_map(|(partition, first, last)| PartitionRange {
            partition,
            first,
            last,
        }),
        0..4,
    );
    prop_oneof![
        (info(), any::<bool>()).prop_map(|(i, c)| Response::StreamCreated(i, c)),
        proptest::collection::vec(info(), 0..3).prop_map(|streams| Response::Streams(StreamList { streams })),
        (
            info(),
            proptest::collection::vec(any::<u64>(), 0..4),
            proptest::collection::vec(any::<u64>(), 0..4)
        )
            .prop_map(
                |(stream, start_offsets, end_offsets)| Response::Stream(StreamDescription {
                    stream,
                    start_offsets,
                    end_offsets
                })
            ),
        Just(Response::StreamDeleted),
        bytes().prop_map(Response::Published),
        (
            text(),
            text(),
            mode(),
            text(),
            proptest::option::of(text()),
            any::<Option<u64>>(),
            any::<u64>(),
            text()
        )
            .prop_map(
                |(session, secret, mode, stream, cursor, last_block, lease_ms, node)| {
                    Response::Allocated(Allocated {
                        session,
                        secret,
                        mode,
                        stream,
                        cursor,
                        last_block,
                        lease_ms,
                        node,
                    })
                }
            ),
        (
            mode(),
            text(),
            proptest::option::of(text()),
            any::<[Option<u64>; 4]>(),
            any::<u64>()
        )
            .prop_map(|(mode, stream, cursor, o, lease_ms)| Response::Info(SessionInfo {
                mode,
                stream,
                cursor,
                pending_batch: o[0],
                last_block: o[1],
                durable_through_block: o[2],
                blocks_in_flight: o[3],
                lease_ms
            })),
        bytes().prop_map(Response::Batch),
        (any::<u64>(), text()).prop_map(|(batch, cursor)| Response::Acked(AckAnswer { batch, cursor })),
        (any::<u64>(), any::<u64>())
            .prop_map(|(block, events)| Response::Written(WriteAnswer { block, events })),
        (any::<u64>(), any::<bool>(), proptest::option::of(ranges)).prop_map(|(block, d, offsets)| {
            Response::Committed(CommitAnswer {
                block,
                status: if d {
                    BlockStatus::Durable
                } else {
                    BlockStatus::Scheduled
                },
                offsets,
            })
        }),
        (proptest::option::of(text()), any::<Option<u64>>()).prop_map(|(cursor, d)| Response::Disposed(
            Disposed {
                cursor,
                durable_through_block: d
            }
        )),
    ]
}

fn error() -> impl Strategy<Value = RpcError> {
    (
        proptest::sample::select(ErrorCode::ALL.to_vec()),
        text(),
        any::<bool>(),
        any::<Option<u64>>(),
        any::<Option<u64>>(),
    )
        .prop_map(
            |(code, message, retryable, retry_after_ms, fenced_by_epoch)| RpcError {
                code,
                message,
                retryable,
                retry_after_ms,
                fenced_by_epoch,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn requests_round_trip(id in any::<u64>(), deadline in any::<u64>(), caller in text(), shard in any::<Option<u16>>(), req in request()) {
        let ctx = Context { request_id: id, deadline_ms: deadline, caller, shard };
        let f = frame::encode_request(&ctx, &req);
        prop_assert_eq!(frame::decode(Bytes::from(f)).unwrap(), Frame::Request(ctx, req));
    }

    #[test]
    fn answers_round_trip(id in any::<u64>(), result in prop_oneof![response().prop_map(Ok), error().prop_map(Err)]) {
        let f = frame::encode_answer(id, &result);
        prop_assert_eq!(frame::decode(Bytes::from(f)).unwrap(), Frame::Answer { id, result });
    }

    #[test]
    fn damage_is_an_error_not_a_panic(req in request(), cut in any::<prop::sample::Index>(), flip in any::<(prop::sample::Index, u8)>()) {
        let f = frame::encode_request(&Context::default(), &req);
        let _ = frame::decode(Bytes::copy_from_slice(&f[..cut.index(f.len())]));
        let mut g = f.clone();
        let i = flip.0.index(g.len());
        g[i] ^= flip.1 | 1;
        let _ = frame::decode(Bytes::from(g));
    }
}

#[test]
fn a_newer_minor_with_unknown_fields_still_decodes() {
    let ctx = Context {
        request_id: 9,
        deadline_ms: 1_700_000_000_000,
        caller: "svc".into(),
        shard: Some(1),
    };
    let req = Request::Session {
        id: "abc".into(),
        call: Call::Commit(Commit {
            block: 3,
            durable: Some(true),
        }),
    };
    let mut f = frame::encode_request(&ctx, &req);
    f[3] = 7; // minor 7
              // an unknown varint field (number 40) and an unknown bytes field (41)
              // appended at the top level, as a newer sender would add them
    f.extend_from_slice(&[(40 << 3) as u8 | 0x80, 0x02, 0x05]);
    f.extend_from_slice(&[(41 << 3 | 2) as u8 | 0x80, 0x02, 0x03, b'x', b'y', b'z']);
    assert_eq!(frame::decode(Bytes::from(f)).unwrap(), Frame::Request(ctx, req));
}

#[test]
fn other_majors_and_foreign_bytes_are_refused() {
    let mut f = frame::encode_answer(1, &Ok(Response::StreamDeleted));
    f[2] = 2;
    assert_eq!(frame::decode(Bytes::from(f)), Err(FrameError::Version(2)));
    assert_eq!(
        frame::decode(Bytes::from_static(b"{\"a\":1}")),
        Err(FrameError::NotAFrame)
    );
}

#[test]
fn payloads_are_sliced_not_copied() {
    let body = Bytes::from(vec![7u8; 1 << 20]);
    let f = Bytes::from(frame::encode_request(
        &Context::default(),
        &Request::Session {
            id: "s".into(),
            call: Call::Write(body.clone()),
        },
    ));
    let Frame::Request(
        _,
        Request::Session {
            call: Call::Write(b), ..
        },
    ) = frame::decode(f.clone()).unwrap()
    else {
        panic!("not a write")
    };
    assert_eq!(b, body);
    let within = f.as_ptr() as usize..f.as_ptr() as usize + f.len();
    assert!(within.contains(&(b.as_ptr() as usize)));
}

#[test]
fn an_unknown_error_code_arrives_as_internal() {
    let f = frame::encode_answer(2, &Err(RpcError::new(ErrorCode::Conflict, "x")));
    // rewrite the code text "conflict" as "confused"
    let at = f.windows(8).position(|w| w == b"conflict").unwrap();
    let mut g = f.clone();
    g[at..at + 8].copy_from_slice(b"confused");
    let Frame::Answer { result: Err(e), .. } = frame::decode(Bytes::from(g)).unwrap() else {
        panic!()
    };
    assert_eq!(e.code, ErrorCode::Internal);
    assert!(e.message.starts_with("confused"));
}
