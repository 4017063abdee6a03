//! Events between their JSON form and stored records. Pure code.
//!
//! A stored record keeps the event's key as the record key and its headers
//! as record headers; its value is the JSON text exactly as the client
//! sent it, or the raw bytes, with Switchboard's own fields as `sb.`
//! headers (see [`crate::record`]). Sealed records (see [`crate::crypto`])
//! carry the headers (and the key, unless the stream keeps keys in the
//! clear) inside the sealed value. A read renders records straight into the answer's
//! buffer: no intermediate values, no re-parsing of stored JSON.

use base64::Engine;
use switchboard_proto::partition::partition_for_key;
use switchboard_proto::time::write_rfc3339_ms;
use switchboard_proto::wire::limits::{
    MAX_EVENTS_PER_BLOCK, MAX_HEADERS, MAX_HEADER_NAME_BYTES, MAX_KEY_BYTES, RESERVED_HEADER_PREFIX,
};
use switchboard_proto::wire::EventIn;
use switchboard_store::{Block, BlockProducer, Record};

use crate::crypto::Sealer;
use crate::error::{Result, SessionError};

pub use crate::record::{Form, FORM_HEADER};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// Bytes a stored record takes beyond its key, value and headers, at most:
/// the log's record framing, `sb.` headers, and when sealed the sealed
/// framing, tag and key id and nonce headers.
const RECORD_SLACK: usize = 160;
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

/// A block of events encoded for the store.
#[derive(Debug)]
pub struct EncodedBlock {
    /// The block, by partition.
    pub block: Block,
    /// Number of events.
    pub events: u64,
    /// Payload bytes (keys, values, headers).
    pub bytes: u64,
    /// Per event, in request order: (partition, index within its part).
    pub placement: Vec<(u32, u32)>,
}

/// How events are sealed: the data key, the stream (bound into each
/// record) and whether keys are sealed too.
pub struct Seal<'a> {
    /// The stream's current data key.
    pub sealer: &'a Sealer,
    /// Stream name.
    pub stream: &'a str,
    /// Seal keys too (else they stay in the clear).
    pub encrypt_keys: bool,
}

/// Bodies parsed and answers rendered from this size on are handled on
/// the blocking pool, so that calls of other sessions on the same runtime
/// thread (acks, small reads) do not wait behind them. (Below it, the hop
/// to another thread costs more than the work: a 500-event block of
/// 520 KB moved to the pool cost about 10 % more server CPU.)
pub const OFF_RUNTIME_BYTES: usize = 1 << 20;

/// Validates and encodes `events` for a stream of `partitions` partitions.
/// Events without a key all go to `unkeyed`, so that a block stays one
/// part per partition. With `seal`, every event is sealed as it is
/// encoded (see [`crate::crypto`]).
pub fn encode_events(
    events: &[EventIn<'_>],
    partitions: u32,
    unkeyed: u32,
    now_ms: i64,
    producer: Option<BlockProducer>,
    seal: Option<&Seal<'_>>,
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
    let mut block = Block::new(producer).map_err(|e| SessionError::bad(e.to_string()))?;
    // first pass: check every event, place it, and size each partition's
    // part, so that the second pass writes each payload once into buffers
    // that never move
    let mut placed: Vec<u32> = Vec::with_capacity(events.len());
    let mut sizes: Vec<(u32, usize)> = Vec::new();
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
        let mut size = RECORD_SLACK + key.map_or(0, str::len);
        for (n, v) in headers.into_iter().flatten() {
            if n.len() > MAX_HEADER_NAME_BYTES {
                return Err(SessionError::PayloadTooLarge(format!(
                    "events[{i}].headers: name {:?}... is longer than {MAX_HEADER_NAME_BYTES} bytes",
                    n.chars().take(32).collect::<String>()
                )));
            }
            if n.starts_with(RESERVED_HEADER_PREFIX) {
                return Err(SessionError::bad(format!(
                    "events[{i}].headers: {n:?}: names starting with {RESERVED_HEADER_PREFIX:?} are reserved"
                )));
            }
            size += 8 + n.len() + v.len();
        }
        size += match (&e.value, &e.value_b64) {
            (Some(v), None) => {
                let v = v.get().as_bytes();
                switchboard_proto::value::check(v)
                    .map_err(|err| SessionError::bad(format!("events[{i}].value: {err}")))?;
                v.len()
            }
            (None, Some(b)) => b.len() / 4 * 3 + 3,
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
        placed.push(p);
        match sizes.iter_mut().find(|s| s.0 == p) {
            Some(s) => s.1 += size,
            None => sizes.push((p, size)),
        }
    }
    for &(p, size) in &sizes {
        block.records(p).reserve(size);
    }
    let mut placement = Vec::with_capacity(events.len());
    let mut scratch = Vec::new();
    let mut aad = Vec::new();
    let mut hdr_buf = Vec::new();
    let mut bytes = 0u64;
    for (i, (e, &p)) in events.iter().zip(&placed).enumerate() {
        let key = e.key.as_deref();
        let headers = e.headers.as_ref();
        let (form, value): (Form, &[u8]) = match (&e.value, &e.value_b64) {
            (Some(v), _) => (Form::Json, v.get().as_bytes()),
            (_, Some(b)) => {
                scratch.clear();
                B64_IN
                    .decode_vec(b.as_bytes(), &mut scratch)
                    .map_err(|err| SessionError::bad(format!("events[{i}].value_b64: {err}")))?;
                (Form::Bytes, &scratch)
            }
            // checked in the first pass
            (None, None) => unreachable!(),
        };
        let records = block.records(p);
        placement.push((p, records.len()));
        bytes += (value.len() + key.map_or(0, str::len)) as u64;
        match seal {
            Some(seal) => {
                hdr_buf.clear();
                for (n, v) in headers.into_iter().flatten() {
                    bytes += (n.len() + v.len()) as u64;
                    hdr_buf.extend_from_slice(&(n.len() as u32).to_le_bytes());
                    hdr_buf.extend_from_slice(n.as_bytes());
                    hdr_buf.extend_from_slice(&(v.len() as u32).to_le_bytes());
                    hdr_buf.extend_from_slice(v.as_bytes());
                }
                let key = key.map(str::as_bytes);
                seal.sealer.push(
                    records,
                    &mut aad,
                    seal.stream,
                    p,
                    now_ms,
                    key,
                    seal.encrypt_keys,
                    &hdr_buf,
                    form,
                    value,
                );
            }
            None => {
                let user = headers.into_iter().flatten().map(|(n, v)| {
                    bytes += (n.len() + v.len()) as u64;
                    (n.as_bytes(), v.as_bytes())
                });
                let hdrs = std::iter::once((FORM_HEADER, form.tag())).chain(user);
                records.push(now_ms, key.map(str::as_bytes), &[value], hdrs);
            }
        }
    }
    Ok(EncodedBlock {
        block,
        events: events.len() as u64,
        bytes,
        placement,
    })
}

/// Appends one read event as JSON to `out`. Headers of Switchboard's own
/// (`sb.`) are not shown.
pub fn render_event(out: &mut Vec<u8>, partition: u32, form: Form, r: &Record) {
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
    let mut first = true;
    for (n, v) in r
        .headers
        .iter()
        .filter(|(n, _)| !n.starts_with(RESERVED_HEADER_PREFIX.as_bytes()))
    {
        out.extend_from_slice(if first { b",\"headers\":{" } else { b"," });
        first = false;
        write_json_str(out, n);
        out.push(b':');
        write_json_str(out, v);
    }
    if !first {
        out.push(b'}');
    }
    match form {
        Form::Json => {
            out.extend_from_slice(b",\"value\":");
            out.extend_from_slice(&r.value);
        }
        Form::Bytes => write_b64(out, &r.value),
    }
    out.push(b'}');
}

/// Size of a record as rendered, roughly (for read limits).
pub fn rendered_len(r: &Record) -> usize {
    r.payload_len() + 120
}

/// Room a record's rendering takes, unless its key or headers need many
/// escapes: base64 grows bytes by a third.
pub fn rendered_max(form: Form, r: &Record) -> usize {
    let value = match form {
        Form::Json => r.value.len(),
        Form::Bytes => r.value.len().div_ceil(3) * 4,
    };
    160 + value + r.key.as_ref().map_or(0, |k| k.len() + 8) + r.headers.encoded().len() * 2
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
    use crate::record::plain_form;
    use switchboard_proto::wire::{PublishIn, ReadEvent};

    #[tokio::test]
    async fn encode_then_render_gives_back_the_events() {
        use switchboard_store::Store;
        let body = br#"{"events":[
            {"key":"user-1","headers":{"h":"v \"q\""},"value":{"a": [1, 2]}},
            {"value_b64":"AAEC/w=="},
            {"value":"text"}
        ]}"#;
        let p: PublishIn = serde_json::from_slice(body).unwrap();
        let producer = BlockProducer {
            id: "prod".into(),
            epoch: 0,
            block: 3,
        };
        let enc = encode_events(&p.events, 4, 2, 1_700_000_000_000, Some(producer), None).unwrap();
        assert_eq!(enc.events, 3);
        let keyed = partition_for_key(b"user-1", 4);
        assert_eq!(enc.placement[1], (2, if keyed == 2 { 1 } else { 0 }));
        let store = switchboard_store::memory::MemoryStore::new();
        store
            .create_stream(
                "s",
                switchboard_store::StreamSettings {
                    partitions: 4,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        store.append("s", enc.block).await.unwrap();
        let positions: Vec<_> = (0..4).map(|p| (p, 0)).collect();
        let mut reader = store.open_reader("s", &positions).await.unwrap();
        let fetched = reader
            .fetch(100, 1 << 20, std::time::Duration::ZERO)
            .await
            .unwrap();
        let mut rendered = Vec::new();
        for (part, mut r) in fetched.records {
            let form = plain_form(&mut r, false);
            let mut out = Vec::new();
            render_event(&mut out, part, form, &r);
            rendered.push(serde_json::from_slice::<ReadEvent>(&out).unwrap());
        }
        let one = rendered
            .iter()
            .find(|e| e.key.as_deref() == Some("user-1"))
            .unwrap();
        assert_eq!(one.value.as_ref().unwrap().get(), r#"{"a": [1, 2]}"#);
        assert_eq!(one.headers.len(), 1, "sb. headers are not shown");
        assert_eq!(one.headers["h"], "v \"q\"");
        assert_eq!(one.timestamp, "2023-11-14T22:13:20.000Z");
        assert!(rendered
            .iter()
            .any(|e| e.value_b64.as_deref() == Some("AAEC/w==")));
        assert!(rendered
            .iter()
            .any(|e| e.value.as_ref().map(|v| v.get()) == Some("\"text\"")));
    }

    #[test]
    fn bad_events_are_refused() {
        for body in [
            r#"{"events":[]}"#,
            r#"{"events":[{"key":"k"}]}"#,
            r#"{"events":[{"value":1,"value_b64":"AA=="}]}"#,
            r#"{"events":[{"value_b64":"***"}]}"#,
            r#"{"events":[{"value":1,"headers":{"sb.form":"b"}}]}"#,
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
