//! Sealing and opening records with data keys (ring's AES-256-GCM, several
//! times faster than the portable implementation on this path).
//!
//! A sealed record's value is the sealed plaintext (u32 key length or
//! `u32::MAX`, key, u32 headers length, headers, value) and the 16-byte
//! tag; its headers are `sb.f`, `sb.k` and `sb.n` (see
//! [`crate::record`]). Its record key is empty, unless the stream keeps
//! keys in the clear: then the key is bound into the additional data
//! instead. The additional data binds the stream, the partition, the key
//! id, the form and any clear key. Records of the older format (value
//! `0xE5`, u32 key id, nonce, sealed plaintext with a tag byte before the
//! value, bound to stream, partition and key id) are still opened.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use switchboard_store::{Headers, Record, Records};

use super::{CryptoError, Key32, TAG_LEN};
use crate::record::{plain_form, Form, FORM_HEADER, KEY_ID_HEADER, NONCE_HEADER};

const LEGACY_HEAD_LEN: usize = 1 + 4 + 12;

/// A data key ready for sealing and opening records.
pub(crate) type RecordKey = ring::aead::LessSafeKey;

pub(crate) fn record_key(key: &Key32) -> RecordKey {
    // a 32-byte key always fits AES-256
    let unbound =
        ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &key[..]).unwrap_or_else(|_| unreachable!());
    ring::aead::LessSafeKey::new(unbound)
}

/// The current data key of one stream, as this process uses it: nobody
/// else seals with it, and its nonces count up from 0.
pub struct Sealer {
    pub(crate) id: u64,
    pub(crate) cipher: Arc<RecordKey>,
    pub(crate) counter: AtomicU64,
    pub(crate) created: Instant,
}

impl Sealer {
    /// Data key id.
    pub fn key_id(&self) -> u64 {
        self.id
    }

    /// Records sealed so far.
    pub(crate) fn used(&self) -> u64 {
        self.counter.load(Ordering::Relaxed)
    }

    /// Seals one event into `records`, built and encrypted in place in
    /// their buffer. `aad` is scratch space reused between calls; `headers`
    /// are the event's headers, encoded.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &self,
        records: &mut Records,
        aad: &mut Vec<u8>,
        stream: &str,
        partition: u32,
        ts: i64,
        key: Option<&[u8]>,
        encrypt_keys: bool,
        headers: &[u8],
        form: Form,
        value: &[u8],
    ) {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&n.to_be_bytes());
        let clear_key = if encrypt_keys { None } else { key };
        let kid = self.id.to_le_bytes();
        record_aad(aad, stream, partition, self.id, form, clear_key);
        let record_headers = [
            (FORM_HEADER, form.tag()),
            (KEY_ID_HEADER, &kid[..]),
            (NONCE_HEADER, &nonce[..]),
        ];
        records.push_with(ts, clear_key, record_headers, |buf| {
            let plain_at = buf.len();
            match key.filter(|_| encrypt_keys) {
                Some(k) => {
                    buf.extend_from_slice(&(k.len() as u32).to_le_bytes());
                    buf.extend_from_slice(k);
                }
                None => buf.extend_from_slice(&u32::MAX.to_le_bytes()),
            }
            buf.extend_from_slice(&(headers.len() as u32).to_le_bytes());
            buf.extend_from_slice(headers);
            buf.extend_from_slice(value);
            // sealing in memory cannot fail below GCM's size limit (64 GiB)
            let tag = self.cipher.seal_in_place_separate_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(&aad[..]),
                &mut buf[plain_at..],
            );
            match tag {
                Ok(t) => buf.extend_from_slice(t.as_ref()),
                Err(_) => buf.extend_from_slice(&[0u8; TAG_LEN]),
            }
        });
    }
}

fn record_aad(
    aad: &mut Vec<u8>,
    stream: &str,
    partition: u32,
    id: u64,
    form: Form,
    clear_key: Option<&[u8]>,
) {
    aad.clear();
    aad.extend_from_slice(b"sb record v2\0");
    aad.extend_from_slice(stream.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&partition.to_le_bytes());
    aad.extend_from_slice(&id.to_le_bytes());
    aad.extend_from_slice(form.tag());
    if let Some(k) = clear_key {
        aad.extend_from_slice(&(k.len() as u32).to_le_bytes());
        aad.extend_from_slice(k);
    }
}

fn legacy_record_aad(aad: &mut Vec<u8>, stream: &str, partition: u32, id: u32) {
    aad.clear();
    aad.extend_from_slice(stream.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&partition.to_le_bytes());
    aad.extend_from_slice(&id.to_le_bytes());
}

/// Opens sealed records read from `stream`/`partition` with the keys
/// `key_of` gives; records that are not sealed pass through. Decrypts into
/// one buffer; the records returned are slices of it.
pub(crate) fn open(
    key_of: &dyn Fn(u64) -> Result<Arc<RecordKey>, CryptoError>,
    stream: &str,
    partition: u32,
    records: Vec<Record>,
    legacy: bool,
) -> Result<Vec<(Form, Record)>, CryptoError> {
    let total: usize = records.iter().map(|r| r.value.len()).sum();
    let mut buf = Vec::with_capacity(total);
    // per record: (key id, plaintext span, form, older format) when sealed
    let mut spans = Vec::with_capacity(records.len());
    let mut aad = Vec::with_capacity(stream.len() + 40);
    for r in &records {
        let Some(id) = crate::record::sealed_key_id(r, legacy) else {
            spans.push(None);
            continue;
        };
        let bad = || CryptoError::Corrupt { id, offset: r.offset };
        let cipher = key_of(id)?;
        let start = buf.len();
        let (nonce, form, is_legacy): ([u8; 12], Form, bool) = match r.headers.get(KEY_ID_HEADER) {
            Some(_) => {
                let nonce = r
                    .headers
                    .get(NONCE_HEADER)
                    .and_then(|n| <[u8; 12]>::try_from(n).ok())
                    .ok_or_else(bad)?;
                let form = r
                    .headers
                    .get(FORM_HEADER)
                    .and_then(Form::of_tag)
                    .ok_or_else(bad)?;
                record_aad(&mut aad, stream, partition, id, form, r.key.as_deref());
                buf.extend_from_slice(&r.value);
                (nonce, form, false)
            }
            None => {
                if r.value.len() < LEGACY_HEAD_LEN + TAG_LEN {
                    return Err(bad());
                }
                let mut nonce = [0u8; 12];
                nonce.copy_from_slice(&r.value[5..LEGACY_HEAD_LEN]);
                legacy_record_aad(&mut aad, stream, partition, id as u32);
                buf.extend_from_slice(&r.value[LEGACY_HEAD_LEN..]);
                // the form is the tag byte before the value, read below
                (nonce, Form::Bytes, true)
            }
        };
        // ciphertext and tag, opened in place; the tag is cut off after
        let plain_len = cipher
            .open_in_place(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(&aad[..]),
                &mut buf[start..],
            )
            .map_err(|_| bad())?
            .len();
        buf.truncate(start + plain_len);
        spans.push(Some((id, start, buf.len(), form, is_legacy)));
    }
    let buf = Bytes::from(buf);
    let mut out = Vec::with_capacity(records.len());
    for (mut r, span) in records.into_iter().zip(spans) {
        let Some((id, start, end, form, is_legacy)) = span else {
            let form = plain_form(&mut r, legacy);
            out.push((form, r));
            continue;
        };
        let bad = || CryptoError::Corrupt { id, offset: r.offset };
        let p = buf.slice(start..end);
        let klen = u32::from_le_bytes(p.get(0..4).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
        let mut at = 4;
        let key = if klen == u32::MAX {
            r.key.take()
        } else {
            let k = p.get(at..at + klen as usize).ok_or_else(bad)?;
            at += k.len();
            Some(p.slice(at - k.len()..at))
        };
        let hlen =
            u32::from_le_bytes(p.get(at..at + 4).ok_or_else(bad)?.try_into().map_err(|_| bad())?) as usize;
        at += 4;
        let headers = Headers::from_encoded(p.slice(at..(at + hlen).min(p.len()))).ok_or_else(bad)?;
        at += hlen;
        if at > p.len() {
            return Err(bad());
        }
        let mut rec = Record {
            offset: r.offset,
            timestamp_ms: r.timestamp_ms,
            key,
            value: p.slice(at..),
            headers,
        };
        let form = if is_legacy {
            plain_form(&mut rec, true)
        } else {
            form
        };
        out.push((form, rec));
    }
    Ok(out)
}
