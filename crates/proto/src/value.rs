//! Checks on an event's JSON value beyond what parsing it as raw JSON text
//! does: values are stored and served as written, so whatever a reader in
//! another language cannot parse must be refused when it is written, or the
//! reader would get the same batch, and fail on it, forever.
//!
//! - Nesting is bounded ([`MAX_DEPTH`] levels): many parsers recurse and
//!   stop (or crash) at a few hundred levels.
//! - Strings hold no lone UTF-16 surrogate escapes (`"\ud800"`): they are
//!   not Unicode, and strict parsers refuse them, as the server already does
//!   for keys and headers.
//!
//! One pass over the bytes, no allocation. The input is JSON text that
//! already parsed (a `RawValue`), so the scan only tracks strings, escapes
//! and brackets.

/// Deepest nesting of arrays and objects in a value.
pub const MAX_DEPTH: usize = 64;

/// Why a value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueError {
    /// Arrays and objects nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// A `\uD800`-`\uDFFF` escape without its pair.
    LoneSurrogate(u16),
}

impl std::fmt::Display for ValueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ValueError::TooDeep => write!(f, "nested deeper than {MAX_DEPTH} levels"),
            ValueError::LoneSurrogate(u) => write!(f, "a string holds the lone surrogate \\u{u:04x}"),
        }
    }
}

fn hex4(b: &[u8]) -> Option<u16> {
    let s = std::str::from_utf8(b.get(..4)?).ok()?;
    u16::from_str_radix(s, 16).ok()
}

/// Checks the JSON text of a value (already known to be valid JSON).
pub fn check(json: &[u8]) -> Result<(), ValueError> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(ValueError::TooDeep);
                }
                i += 1;
            }
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b'"' => i = skip_string(json, i + 1)?,
            _ => i += 1,
        }
    }
    Ok(())
}

/// Skips a string's contents from `i` (just after its opening quote) and
/// returns the position after its closing quote, checking `\u` escapes on
/// the way. Most of a value's bytes are usually string contents: they are
/// skipped with memchr, not byte by byte.
fn skip_string(json: &[u8], mut i: usize) -> Result<usize, ValueError> {
    loop {
        let Some(k) = memchr::memchr2(b'"', b'\\', &json[i..]) else {
            return Ok(json.len());
        };
        i += k;
        if json[i] == b'"' {
            return Ok(i + 1);
        }
        // a backslash: an escape of two bytes, or six for \uXXXX
        if json.get(i + 1) != Some(&b'u') {
            i += 2;
            if i >= json.len() {
                return Ok(json.len());
            }
            continue;
        }
        let Some(u) = hex4(&json[i + 2..]) else {
            i += 2;
            continue;
        };
        i += 6;
        match u {
            0xD800..=0xDBFF => {
                let low = (json.get(i) == Some(&b'\\') && json.get(i + 1) == Some(&b'u'))
                    .then(|| hex4(&json[i + 2..]))
                    .flatten();
                match low {
                    Some(0xDC00..=0xDFFF) => i += 6,
                    _ => return Err(ValueError::LoneSurrogate(u)),
                }
            }
            0xDC00..=0xDFFF => return Err(ValueError::LoneSurrogate(u)),
            _ => {}
        }
        if i >= json.len() {
            return Ok(json.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(check(ok.as_bytes()), Ok(()));
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(check(deep.as_bytes()), Err(ValueError::TooDeep));
        let objects = format!(
            "{}1{}",
            r#"{"a":"#.repeat(MAX_DEPTH + 1),
            "}".repeat(MAX_DEPTH + 1)
        );
        assert_eq!(check(objects.as_bytes()), Err(ValueError::TooDeep));
        // brackets inside strings do not count
        let s = format!("\"{}\"", "[{".repeat(500));
        assert_eq!(check(s.as_bytes()), Ok(()));
        // siblings do not add up
        let wide = format!("[{}[]]", "[],".repeat(1000));
        assert_eq!(check(wide.as_bytes()), Ok(()));
    }

    #[test]
    fn surrogates() {
        assert_eq!(check(br#""\ud83d\ude00""#), Ok(()));
        assert_eq!(check(br#"{"k": "a\u00e9b\\u\"d800"}"#), Ok(()));
        assert_eq!(check(br#""\ud800""#), Err(ValueError::LoneSurrogate(0xd800)));
        assert_eq!(check(br#""\ud800x""#), Err(ValueError::LoneSurrogate(0xd800)));
        assert_eq!(
            check(br#""\ud800\u0041""#),
            Err(ValueError::LoneSurrogate(0xd800))
        );
        assert_eq!(check(br#"["\udc00"]"#), Err(ValueError::LoneSurrogate(0xdc00)));
        assert_eq!(
            check(br#""\\ud800""#),
            Ok(()),
            "an escaped backslash, not an escape"
        );
    }

    #[test]
    fn agrees_with_serde_on_strings() {
        // serde_json refuses lone surrogates when it decodes a string
        for s in [
            r#""\ud800""#,
            r#""\udfff""#,
            r#""\ud83d\ude00""#,
            r#""plain""#,
            r#""\ud800\ud800""#,
        ] {
            let serde_ok = serde_json::from_str::<String>(s).is_ok();
            assert_eq!(check(s.as_bytes()).is_ok(), serde_ok, "{s}");
        }
    }
}
