//! The format of a record at rest, as this layer writes it: which value
//! form it holds and Switchboard's own headers. Shared by the event codec
//! and by sealing. Pure code.
//!
//! Switchboard's own fields are record headers whose names start with
//! `sb.` (clients cannot use the prefix): `sb.f` says which form the value
//! is in (`j` JSON, `b` bytes; a record without it, written by another
//! tool, is bytes); sealed records add `sb.k` (data key id, u64 LE) and
//! `sb.n` (nonce).

use switchboard_store::Record;

/// Header naming the value's form.
pub const FORM_HEADER: &[u8] = b"sb.f";
/// Header carrying a sealed record's data key id (u64 LE).
pub const KEY_ID_HEADER: &[u8] = b"sb.k";
/// Header carrying a sealed record's nonce.
pub const NONCE_HEADER: &[u8] = b"sb.n";

/// Value tag of records written before `sb.f` (the embedded log's older
/// format): JSON text follows.
pub const LEGACY_TAG_JSON: u8 = 1;
/// Value tag of older records: raw bytes follow.
pub const LEGACY_TAG_BYTES: u8 = 2;
/// First byte of a sealed record's value in the older format.
pub const LEGACY_SEALED: u8 = 0xE5;

/// The form of an event's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// JSON text.
    Json,
    /// Raw bytes (`value_b64` on the wire).
    Bytes,
}

impl Form {
    /// The `sb.f` header value.
    pub fn tag(self) -> &'static [u8] {
        match self {
            Form::Json => b"j",
            Form::Bytes => b"b",
        }
    }

    /// The form a `sb.f` value names.
    pub fn of_tag(tag: &[u8]) -> Option<Form> {
        match tag {
            b"j" => Some(Form::Json),
            b"b" => Some(Form::Bytes),
            _ => None,
        }
    }
}

/// The form of a record that is not sealed, and its value without any
/// legacy tag byte. With `legacy`, a record without `sb.f` whose value
/// starts with an older version's tag byte is read as that version wrote
/// it (only stores that can hold such records set it).
pub fn plain_form(r: &mut Record, legacy: bool) -> Form {
    if let Some(f) = r.headers.get(FORM_HEADER).and_then(Form::of_tag) {
        return f;
    }
    if legacy {
        match r.value.first() {
            Some(&LEGACY_TAG_JSON) => {
                r.value = r.value.slice(1..);
                return Form::Json;
            }
            Some(&LEGACY_TAG_BYTES) => {
                r.value = r.value.slice(1..);
                return Form::Bytes;
            }
            _ => {}
        }
    }
    Form::Bytes
}

/// The data key id a sealed record names, if it is sealed (either format).
pub fn sealed_key_id(r: &Record, legacy: bool) -> Option<u64> {
    if let Some(id) = r.headers.get(KEY_ID_HEADER) {
        return Some(id.try_into().map(u64::from_le_bytes).unwrap_or(u64::MAX));
    }
    if legacy && r.value.first() == Some(&LEGACY_SEALED) && r.value.len() >= 5 {
        return Some(u64::from(u32::from_le_bytes([
            r.value[1], r.value[2], r.value[3], r.value[4],
        ])));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_store::Headers;

    #[test]
    fn legacy_tagged_values_are_read_only_where_asked() {
        let mut r = Record {
            offset: 0,
            timestamp_ms: 0,
            key: None,
            value: bytes::Bytes::from_static(b"\x01{}"),
            headers: Headers::default(),
        };
        let mut foreign = r.clone();
        assert_eq!(plain_form(&mut foreign, false), Form::Bytes);
        assert_eq!(&foreign.value[..], b"\x01{}");
        assert_eq!(plain_form(&mut r, true), Form::Json);
        assert_eq!(&r.value[..], b"{}");
    }
}
