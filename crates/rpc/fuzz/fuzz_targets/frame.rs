//! The frame decoder on arbitrary bytes: never a panic; whatever decodes
//! encodes again to a frame that decodes to the same thing.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use switchboard_rpc::frame::{self, Frame};

fuzz_target!(|data: &[u8]| {
    let Ok(f) = frame::decode(Bytes::copy_from_slice(data)) else {
        return;
    };
    let again = match &f {
        Frame::Request(ctx, req) => frame::encode_request(ctx, req),
        Frame::Answer { id, result } => frame::encode_answer(*id, result),
    };
    assert_eq!(frame::decode(Bytes::from(again)).ok(), Some(f));
});
