//! Events between their JSON form and stored records. Pure code.
//!
//! A stored record keeps the event's key as the record key, its headers as
//! record headers, and its value behind one tag byte: [`TAG_JSON`] then the
//! JSON text exactly as the client sent it, or [`TAG_BYTES`] then the raw
//! bytes. A read renders records straight into the answer's buffer: no
//! intermediate values, no re-parsing of stored JSON.

use base64::Engine;
use switchboard_proto::partition::partition_for_key;
use switchboard_proto::time::write_rfc3339_ms;
use switchboard_proto::wire::EventIn;
use switchboard_store::{Record, RecordBatch};

use crate::crypto::Sealer;
use crate::error::{Result, SessionError};

/// Value tag: JSON text follows.
pub const TAG_JSON: u8 = 1;
/// Value tag: raw bytes follow.
pub const TAG_BYTES: u8 = 2;
/// Longest event key, bytes.
pub const MAX_KEY_BYTES: usize = 16 * 1024;
/// Most headers on one event.
pub const MAX_HEADERS: usize = 64;
/// Longest header name, bytes.
pub const MAX_HEADER_NAME_BYTES: usize = 256;
/// Most events in one write or publish.
pub const MAX_EVENTS_PER_BLOCK: usize = 10_000;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// Parses a request body of `what` (a publish, a write) whose JSON shape is
/// `shape`. A bare array, the most common mistake, gets a message that
/// shows the expected object.
pub fn parse_body<'a, T: serde::Deserialize<'a>>(body: &'a [u8], what: &str, shape: &str) -> Result<T> {
    // serde would fill a struct from an array of its fields in order
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(SessionError::bad(format!(
            "invalid {what} body: expected an object {shape}, got a JSON array"
        )));
    }
    serde_json::from_slice(body).map_err(|e| SessionError::bad(format!("invalid {what} body: {e}")))
}

/// Decoding takes what common encoders write, padding and all, including
/// final symbols with stray low bits (`"00=="`), as most decoders do.
const B64_IN: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// A block of events encoded for the store: one batch per partition it
/// touches, by partition.
#[derive(Debug)]
pub struct EncodedBlock {
    /// (partition, batch), partitions increasing.
    pub parts: Vec<(u32, RecordBatch)>,
    /// Number of events.
    pub events: u64,
    /// Payload bytes (keys, values, headers).
    pub bytes: u64,
    /// Per event, in request order: (partition, index within its batch).
    pub placement: Vec<(u32, u32)>,
}

/// Validates and encodes `events` for a stream of `partitions` partitions.
/// Events without a key all go to `unkeyed`, so that a block stays one
/// batch per partition. With a producer, every batch carries its id, the
/// block and the number of partitions the block spans.
///
/// With `seal` (a data key and the stream's name), every event is sealed
/// before it enters the batch (see [`crate::crypto`]).
pub fn encode_events(
    events: &[EventIn<'_>],
    partitions: u32,
    unkeyed: u32,
    now_ms: i64,
    producer: Option<(&str, u64)>,
    seal: Option<(&Sealer, &str)>,
) -> Result<EncodedBlock> {
    if events.is_empty() {
        return Err(SessionError::bad("events: at least one event is needed"));
    }
    if events.len() > MAX_EVENTS_PER_BLOCK {
        return Err(SessionError::bad(format!(
            "events: at most {MAX_EVENTS_PER_BLOCK} events per request, got {}",
            events.len()
        )));
    }
    let mut slots: Vec<Option<RecordBatch>> = Vec::new();
    slots.resize_with(partitions as usize, || None);
    let mut placement = Vec::with_capacity(events.len());
    let mut scratch = Vec::new();
    let mut aad = Vec::new();
    let mut hdr_buf = Vec::new();
    let mut bytes = 0u64;
    for (i, e) in events.iter().enumerate() {
        let key = e.key.as_deref();
        if key.is_some_and(|k| k.len() > MAX_KEY_BYTES) {
            return Err(SessionError::PayloadTooLarge(format!(
                "events[{i}].key: longer than {MAX_KEY_BYTES} bytes"
            )));
        }
        let headers = e.headers.as_ref();
        if headers.is_some_and(|h| h.len() > MAX_HEADERS) {
            return Err(SessionError::PayloadTooLarge(format!(
                "events[{i}].headers: more than {MAX_HEADERS} headers"
            )));
        }
        if let Some(n) = headers
            .into_iter()
            .flatten()
            .map(|(n, _)| n)
            .find(|n| n.len() > MAX_HEADER_NAME_BYTES)
        {
            return Err(SessionError::PayloadTooLarge(format!(
                "events[{i}].headers: name {:?}... is longer than {MAX_HEADER_NAME_BYTES} bytes",
                n.chars().take(32).collect::<String>()
            )));
        }
        let (tag, value): (u8, &[u8]) = match (&e.value, &e.value_b64) {
            (Some(v), None) => {
                let v = v.get().as_bytes();
                switchboard_proto::value::check(v)
                    .map_err(|err| SessionError::bad(format!("events[{i}].value: {err}")))?;
                (TAG_JSON, v)
            }
            (None, Some(b)) => {
                scratch.clear();
                B64_IN
                    .decode_vec(b.as_bytes(), &mut scratch)
                    .map_err(|err| SessionError::bad(format!("events[{i}].value_b64: {err}")))?;
                (TAG_BYTES, &scratch)
            }
            _ => {
                return Err(SessionError::bad(format!(
                    "events[{i}]: exactly one of value and value_b64 is needed"
                )))
            }
        };
        let p = match key {
            Some(k) => partition_for_key(k.as_bytes(), partitions),
            None => unkeyed,
        };
        let slot = &mut slots[p as usize];
        let batch = match slot {
            Some(b) => b,
            None => {
                let mut b = RecordBatch::with_capacity(64 * 1024);
                b.reset(producer)
                    .map_err(|err| SessionError::bad(err.to_string()))?;
                slot.insert(b)
            }
        };
        placement.push((p, batch.record_count()));
        bytes += (value.len() + key.map_or(0, str::len)) as u64;
        match seal {
            Some((sealer, stream)) => {
                hdr_buf.clear();
                for (n, v) in headers.into_iter().flatten() {
                    bytes += (n.len() + v.len()) as u64;
                    hdr_buf.extend_from_slice(&(n.len() as u32).to_le_bytes());
                    hdr_buf.extend_from_slice(n.as_bytes());
                    hdr_buf.extend_from_slice(&(v.len() as u32).to_le_bytes());
                    hdr_buf.extend_from_slice(v.as_bytes());
                }
                let key = key.map(str::as_bytes);
                sealer.push(batch, &mut aad, stream, p, now_ms, key, &hdr_buf, [&[tag], value]);
            }
            None => {
                let hdrs = headers.into_iter().flatten().map(|(n, v)| {
                    bytes += (n.len() + v.len()) as u64;
                    (n.as_bytes(), v.as_bytes())
                });
                batch.push_parts(now_ms, key.map(str::as_bytes), &[&[tag], value], hdrs);
            }
        }
    }
    let mut parts: Vec<(u32, RecordBatch)> = slots
        .into_iter()
        .enumerate()
        .filter_map(|(p, b)| b.map(|b| (p as u32, b)))
        .collect();
    let n = parts.len() as u32;
    for (_, b) in &mut parts {
        b.set_block_parts(n);
    }
    Ok(EncodedBlock {
        parts,
        events: events.len() as u64,
        bytes,
        placement,
    })
}

/// Appends one read event as JSON to `out`.
pub fn render_event(out: &mut Vec<u8>, partition: u32, r: &Record) {
    use std::io::Write;
    let _ = write!(
        out,
        "{{\"partition\":{partition},\"offset\":{},\"timestamp\":\"",
        r.offset
    );
    write_rfc3339_ms(out, r.timestamp_ms);
    out.push(b'"');
    if let Some(k) = &r.key {
        out.extend_from_slice(b",\"key\":");
        write_json_str(out, k);
    }
    if !r.headers.is_empty() {
        out.extend_from_slice(b",\"headers\":{");
        for (i, (n, v)) in r.headers.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_json_str(out, n);
            out.push(b':');
            write_json_str(out, v);
        }
        out.push(b'}');
    }
    match r.value.split_first() {
        Some((&TAG_JSON, json)) => {
            out.extend_from_slice(b",\"value\":");
            out.extend_from_slice(json);
        }
        Some((&TAG_BYTES, raw)) => write_b64(out, raw),
        // not written by Switchboard: hand it out as bytes
        _ => write_b64(out, &r.value),
    }
    out.push(b'}');
}

/// Size of a record as rendered, roughly (for read limits).
pub fn rendered_len(r: &Record) -> usize {
    r.encoded_len() + 96
}

fn write_b64(out: &mut Vec<u8>, raw: &[u8]) {
    out.extend_from_slice(b",\"value_b64\":\"");
    let at = out.len();
    out.resize(at + base64::encoded_len(raw.len(), true).unwrap_or(0), 0);
    let n = B64.encode_slice(raw, &mut out[at..]).unwrap_or(0);
    out.truncate(at + n);
    out.push(b'"');
}

fn write_json_str(out: &mut Vec<u8>, b: &[u8]) {
    match std::str::from_utf8(b) {
        Ok(s) => {
            let _ = serde_json::to_writer(&mut *out, s);
        }
        Err(_) => {
            let _ = serde_json::to_writer(&mut *out, &String::from_utf8_lossy(b));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_proto::wire::{PublishIn, ReadEvent};

    #[test]
    fn encode_then_render_gives_back_the_events() {
        let body = br#"{"events":[
            {"key":"user-1","headers":{"h":"v \"q\""},"value":{"a": [1, 2]}},
            {"value_b64":"AAEC/w=="},
            {"value":"text"}
        ]}"#;
        let p: PublishIn = serde_json::from_slice(body).unwrap();
        let enc = encode_events(&p.events, 4, 2, 1_700_000_000_000, Some(("prod", 3)), None).unwrap();
        assert_eq!(enc.events, 3);
        let keyed = partition_for_key(b"user-1", 4);
        assert_eq!(enc.placement[1], (2, if keyed == 2 { 1 } else { 0 }));
        let dir = tempfile::tempdir().unwrap();
        let log = switchboard_log::Log::open(dir.path(), Default::default()).unwrap();
        let (s, _) = log
            .create_stream(
                "s",
                switchboard_log::StreamSettings {
                    partitions: 4,
                    ..Default::default()
                },
            )
            .unwrap();
        let mut rendered = Vec::new();
        for (part, mut b) in enc.parts {
            assert_eq!(b.producer(), Some(("prod", 3)));
            s.partition(part).unwrap().append(&mut b).unwrap();
            for r in s.partition(part).unwrap().read(0, 10, 1 << 20).unwrap().records {
                let mut out = Vec::new();
                render_event(&mut out, part, &r);
                rendered.push(serde_json::from_slice::<ReadEvent>(&out).unwrap());
            }
        }
        let one = rendered
            .iter()
            .find(|e| e.key.as_deref() == Some("user-1"))
            .unwrap();
        assert_eq!(one.value.as_ref().unwrap().get(), r#"{"a": [1, 2]}"#);
        assert_eq!(one.headers["h"], "v \"q\"");
        assert_eq!(one.timestamp, "2023-11-14T22:13:20.000Z");
        assert!(rendered
            .iter()
            .any(|e| e.value_b64.as_deref() == Some("AAEC/w==")));
        assert!(rendered
            .iter()
            .any(|e| e.value.as_ref().map(|v| v.get()) == Some("\"text\"")));
        drop(log);
        dir.close().unwrap();
    }

    #[test]
    fn bad_events_are_refused() {
        for body in [
            r#"{"events":[]}"#,
            r#"{"events":[{"key":"k"}]}"#,
            r#"{"events":[{"value":1,"value_b64":"AA=="}]}"#,
            r#"{"events":[{"value_b64":"***"}]}"#,
        ] {
            let p: PublishIn = serde_json::from_str(body).unwrap();
            assert!(
                matches!(
                    encode_events(&p.events, 1, 0, 0, None, None),
                    Err(SessionError::BadRequest(_))
                ),
                "{body}"
            );
        }
        assert!(serde_json::from_str::<PublishIn>(r#"{"events":[{"value":1,"x":2}]}"#).is_err());
    }
}
