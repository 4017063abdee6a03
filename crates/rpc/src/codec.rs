//! The field encoding of frames: a message is a sequence of fields, each a
//! LEB128 key (`field number << 3 | wire type`) then its value, as in
//! Protocol Buffers. Two wire types are used: `0` (a LEB128 integer) and
//! `2` (a LEB128 length, then that many bytes: text, raw payloads, nested
//! messages). A decoder skips fields it does not know, which is what lets
//! a newer minor version add optional fields without breaking older nodes.
//!
//! Nested messages are written in place: the length goes into a fixed
//! five-byte LEB128 slot reserved before the content (a padded LEB128 is
//! still valid), so a large payload inside a nested message is copied once.

use bytes::Bytes;

use crate::frame::FrameError;

const VARINT: u8 = 0;
const LEN: u8 = 2;
/// Longest nested message: what a padded five-byte length holds.
const MAX_NESTED: usize = (1 << 35) - 1;

/// Writes fields into a buffer.
pub struct Enc<'a> {
    buf: &'a mut Vec<u8>,
}

impl<'a> Enc<'a> {
    /// Fields appended to `buf`.
    pub fn new(buf: &'a mut Vec<u8>) -> Enc<'a> {
        Enc { buf }
    }

    fn key(&mut self, field: u32, wire: u8) {
        put_varint(self.buf, (u64::from(field) << 3) | u64::from(wire));
    }

    /// An integer field.
    pub fn uint(&mut self, field: u32, v: u64) {
        self.key(field, VARINT);
        put_varint(self.buf, v);
    }

    /// An integer field, written only when present.
    pub fn opt_uint(&mut self, field: u32, v: Option<u64>) {
        if let Some(v) = v {
            self.uint(field, v);
        }
    }

    /// A boolean field.
    pub fn bool(&mut self, field: u32, v: bool) {
        self.uint(field, u64::from(v));
    }

    /// A bytes field.
    pub fn bytes(&mut self, field: u32, v: &[u8]) {
        self.key(field, LEN);
        put_varint(self.buf, v.len() as u64);
        self.buf.extend_from_slice(v);
    }

    /// A text field.
    pub fn str(&mut self, field: u32, v: &str) {
        self.bytes(field, v.as_bytes());
    }

    /// A text field, written only when present.
    pub fn opt_str(&mut self, field: u32, v: Option<&str>) {
        if let Some(v) = v {
            self.str(field, v);
        }
    }

    /// A nested message written by `f`.
    pub fn msg(&mut self, field: u32, f: impl FnOnce(&mut Enc<'_>)) {
        self.key(field, LEN);
        let slot = self.buf.len();
        self.buf.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x00]);
        let start = self.buf.len();
        f(&mut Enc { buf: self.buf });
        let len = (self.buf.len() - start).min(MAX_NESTED) as u64;
        for (i, b) in self.buf[slot..start].iter_mut().enumerate() {
            let bits = ((len >> (7 * i)) & 0x7f) as u8;
            *b = if i < 4 { bits | 0x80 } else { bits };
        }
    }
}

/// One field's value as read.
#[derive(Debug, Clone)]
pub enum Value {
    /// Wire type 0.
    Int(u64),
    /// Wire type 2: a slice of the frame (no copy).
    Bytes(Bytes),
}

/// Reads fields from a message.
pub struct Dec {
    buf: Bytes,
    pos: usize,
}

impl Dec {
    /// Fields of `buf`.
    pub fn new(buf: Bytes) -> Dec {
        Dec { buf, pos: 0 }
    }

    /// The next field, `None` at the end.
    pub fn next_field(&mut self) -> Result<Option<(u32, Value)>, FrameError> {
        if self.pos == self.buf.len() {
            return Ok(None);
        }
        let key = get_varint(&self.buf, &mut self.pos)?;
        let field = u32::try_from(key >> 3).map_err(|_| FrameError::Malformed("field number"))?;
        if field == 0 {
            return Err(FrameError::Malformed("field number 0"));
        }
        match (key & 7) as u8 {
            VARINT => Ok(Some((field, Value::Int(get_varint(&self.buf, &mut self.pos)?)))),
            LEN => {
                let len = get_varint(&self.buf, &mut self.pos)?;
                let end = usize::try_from(len)
                    .ok()
                    .and_then(|l| self.pos.checked_add(l))
                    .filter(|&e| e <= self.buf.len())
                    .ok_or(FrameError::Malformed("length past the end"))?;
                let v = self.buf.slice(self.pos..end);
                self.pos = end;
                Ok(Some((field, Value::Bytes(v))))
            }
            _ => Err(FrameError::Malformed("unknown wire type")),
        }
    }
}

impl Value {
    /// The integer, or an error naming `what`.
    pub fn int(self, what: &'static str) -> Result<u64, FrameError> {
        match self {
            Value::Int(v) => Ok(v),
            Value::Bytes(_) => Err(FrameError::Malformed(what)),
        }
    }

    /// An integer that must fit a u32.
    pub fn u32(self, what: &'static str) -> Result<u32, FrameError> {
        u32::try_from(self.int(what)?).map_err(|_| FrameError::Malformed(what))
    }

    /// A boolean (0 or 1).
    pub fn bool(self, what: &'static str) -> Result<bool, FrameError> {
        match self.int(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(FrameError::Malformed(what)),
        }
    }

    /// The bytes, or an error naming `what`.
    pub fn bytes(self, what: &'static str) -> Result<Bytes, FrameError> {
        match self {
            Value::Bytes(b) => Ok(b),
            Value::Int(_) => Err(FrameError::Malformed(what)),
        }
    }

    /// UTF-8 text.
    pub fn string(self, what: &'static str) -> Result<String, FrameError> {
        let b = self.bytes(what)?;
        String::from_utf8(b.to_vec()).map_err(|_| FrameError::Malformed(what))
    }
}

/// Appends `v` as LEB128.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a LEB128 of at most ten bytes at `*pos`.
pub fn get_varint(b: &[u8], pos: &mut usize) -> Result<u64, FrameError> {
    let mut v = 0u64;
    for i in 0..10 {
        let byte = *b.get(*pos).ok_or(FrameError::Malformed("integer past the end"))?;
        *pos += 1;
        if i == 9 && byte > 1 {
            return Err(FrameError::Malformed("integer overflows 64 bits"));
        }
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(FrameError::Malformed("integer longer than ten bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_messages_and_unknown_fields() {
        let mut buf = Vec::new();
        let mut e = Enc::new(&mut buf);
        e.uint(1, 300);
        e.msg(2, |m| {
            m.str(1, "inner");
            m.uint(99, 7);
        });
        e.bytes(3, &[0xff; 200]);
        let mut d = Dec::new(Bytes::from(buf));
        let (f, v) = d.next_field().unwrap().unwrap();
        assert_eq!((f, v.int("a").unwrap()), (1, 300));
        let (f, v) = d.next_field().unwrap().unwrap();
        assert_eq!(f, 2);
        let mut inner = Dec::new(v.bytes("b").unwrap());
        let (f, v) = inner.next_field().unwrap().unwrap();
        assert_eq!((f, v.string("s").unwrap().as_str()), (1, "inner"));
        assert_eq!(inner.next_field().unwrap().unwrap().0, 99);
        assert!(inner.next_field().unwrap().is_none());
        let (f, v) = d.next_field().unwrap().unwrap();
        assert_eq!((f, v.bytes("c").unwrap().len()), (3, 200));
        assert!(d.next_field().unwrap().is_none());
    }

    #[test]
    fn truncated_input_is_an_error() {
        for bad in [
            &[0x0a, 0x05, 1][..],
            &[0x08][..],
            &[0x08, 0xff, 0xff][..],
            &[0x0b, 0][..],
        ] {
            let mut d = Dec::new(Bytes::copy_from_slice(bad));
            assert!(d.next_field().is_err(), "{bad:?}");
        }
    }
}
