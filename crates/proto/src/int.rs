//! Integers in request bodies. JSON has one number type, and JSON Schema
//! (so the OpenAPI document) counts `2.0` and `2e0` as the integer 2, so
//! requests accept any number whose value is a whole number in range.
//! Fractions, and numbers out of the field's range, are refused: never
//! rounded or clamped.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserializer, Error, SeqAccess, Visitor};
use serde::Deserialize;

/// An unsigned integer field type: `u32` or `u64`.
pub trait Unsigned: TryFrom<u64> + Sized {
    /// Name in error messages.
    const NAME: &'static str;
}

impl Unsigned for u32 {
    const NAME: &'static str = "u32";
}

impl Unsigned for u64 {
    const NAME: &'static str = "u64";
}

struct Whole<T>(PhantomData<T>);

impl<T: Unsigned> Whole<T> {
    fn fit<E: Error>(v: u64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::custom(format_args!("{v} is out of range for {}", T::NAME)))
    }
}

impl<'de, T: Unsigned> Visitor<'de> for Whole<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a non-negative whole number ({})", T::NAME)
    }

    fn visit_u64<E: Error>(self, v: u64) -> Result<T, E> {
        Self::fit(v)
    }

    fn visit_i64<E: Error>(self, v: i64) -> Result<T, E> {
        let v = u64::try_from(v).map_err(|_| E::custom(format_args!("{v} is negative")))?;
        Self::fit(v)
    }

    fn visit_f64<E: Error>(self, v: f64) -> Result<T, E> {
        // 2^64 is the first float above u64::MAX; floats below it that are
        // whole convert exactly
        if v.is_finite() && v.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&v) {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            return Self::fit(v as u64);
        }
        if v.is_finite() && v.fract() == 0.0 {
            return Err(E::custom(format_args!("{v} is out of range for {}", T::NAME)));
        }
        Err(E::custom(format_args!("{v} is not a whole number")))
    }
}

/// A whole number, for `#[serde(deserialize_with = "int::whole")]`.
pub fn whole<'de, D: Deserializer<'de>, T: Unsigned>(d: D) -> Result<T, D::Error> {
    d.deserialize_any(Whole(PhantomData))
}

/// An optional whole number (`null` is none), for
/// `#[serde(default, deserialize_with = "int::opt")]`.
pub fn opt<'de, D: Deserializer<'de>, T: Unsigned>(d: D) -> Result<Option<T>, D::Error> {
    #[derive(Deserialize)]
    struct W<T: Unsigned>(#[serde(deserialize_with = "whole")] T);
    Ok(Option::<W<T>>::deserialize(d)?.map(|w| w.0))
}

/// An optional list of whole numbers (`null` is none).
pub fn opt_list<'de, D: Deserializer<'de>, T: Unsigned>(d: D) -> Result<Option<Vec<T>>, D::Error> {
    struct List<T>(PhantomData<T>);
    impl<'de, T: Unsigned> Visitor<'de> for List<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a list of whole numbers")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            #[derive(Deserialize)]
            struct W<T: Unsigned>(#[serde(deserialize_with = "whole")] T);
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
            while let Some(W(v)) = seq.next_element::<W<T>>()? {
                out.push(v);
            }
            Ok(out)
        }
    }
    struct Maybe<T>(PhantomData<T>);
    impl<'de, T: Unsigned> Visitor<'de> for Maybe<T> {
        type Value = Option<Vec<T>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a list of whole numbers or null")
        }
        fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_seq(List(PhantomData)).map(Some)
        }
    }
    d.deserialize_option(Maybe(PhantomData))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct T {
        #[serde(deserialize_with = "super::whole")]
        a: u32,
        #[serde(default, deserialize_with = "super::opt")]
        b: Option<u64>,
        #[serde(default, deserialize_with = "super::opt_list")]
        c: Option<Vec<u32>>,
    }

    fn parse(s: &str) -> Result<T, String> {
        serde_json::from_str(s).map_err(|e| e.to_string())
    }

    #[test]
    fn whole_numbers_in_any_form() {
        let t = parse(r#"{"a": 2.0, "b": 3e2, "c": [1, 2.0, 4e0]}"#).expect("parses");
        assert_eq!(
            t,
            T {
                a: 2,
                b: Some(300),
                c: Some(vec![1, 2, 4])
            }
        );
        let t = parse(r#"{"a": 7, "b": null, "c": null}"#).expect("parses");
        assert_eq!(
            t,
            T {
                a: 7,
                b: None,
                c: None
            }
        );
        let t = parse(r#"{"a": 4294967295}"#).expect("parses");
        assert_eq!(t.a, u32::MAX);
        let t = parse(r#"{"a": 1, "b": 18446744073709551615}"#).expect("parses");
        assert_eq!(t.b, Some(u64::MAX));
        // parsed exactly (serde_json's float_roundtrip): a whole float below
        // 2^53 is not read as its neighbour
        let t = parse(r#"{"a": 1, "b": 4383934112098946.0}"#).expect("parses");
        assert_eq!(t.b, Some(4_383_934_112_098_946));
    }

    #[test]
    fn fractions_negatives_and_overflow_refused() {
        for bad in [
            r#"{"a": 2.5}"#,
            r#"{"a": -1}"#,
            r#"{"a": -0.5}"#,
            r#"{"a": 4294967296}"#,
            r#"{"a": 4294967296.0}"#,
            r#"{"a": 1, "b": 1.8446744073709552e19}"#,
            r#"{"a": 1, "b": 1e400}"#,
            r#"{"a": "1"}"#,
            r#"{"a": 1, "c": [1.5]}"#,
            r#"{"a": 1, "c": 3}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad} was accepted");
        }
        assert!(parse(r#"{"a": 2.5}"#).unwrap_err().contains("not a whole number"));
        assert!(parse(r#"{"a": 4294967296}"#)
            .unwrap_err()
            .contains("out of range"));
    }
}
