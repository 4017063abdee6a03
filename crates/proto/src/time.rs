//! RFC 3339 timestamps with millisecond precision, in UTC, without a
//! calendar library: event timestamps are formatted on the read path, once
//! per event, into a caller's buffer.

/// Appends `ms` (milliseconds since the Unix epoch) as
/// `YYYY-MM-DDTHH:MM:SS.mmmZ`. Years outside 0..=9999 are clamped to them.
pub fn write_rfc3339_ms(out: &mut Vec<u8>, ms: i64) {
    const MIN: i64 = -62_167_219_200_000; // 0000-01-01T00:00:00Z
    const MAX: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z
    let ms = ms.clamp(MIN, MAX);
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss, mmm) = (
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000,
    );
    let mut b = [0u8; 24];
    put(&mut b[0..4], y as u64);
    b[4] = b'-';
    put(&mut b[5..7], m as u64);
    b[7] = b'-';
    put(&mut b[8..10], d as u64);
    b[10] = b'T';
    put(&mut b[11..13], hh as u64);
    b[13] = b':';
    put(&mut b[14..16], mm as u64);
    b[16] = b':';
    put(&mut b[17..19], ss as u64);
    b[19] = b'.';
    put(&mut b[20..23], mmm as u64);
    b[23] = b'Z';
    out.extend_from_slice(&b);
}

/// Formats `ms` as a `String` (see [`write_rfc3339_ms`]).
pub fn rfc3339_ms(ms: i64) -> String {
    let mut v = Vec::with_capacity(24);
    write_rfc3339_ms(&mut v, ms);
    String::from_utf8(v).unwrap_or_default()
}

/// Parses an RFC 3339 time to ms since the epoch: what
/// [`write_rfc3339_ms`] writes, also without the fraction or with up to 9
/// digits of it (truncated to ms), with `z`, and with a `+HH:MM` or
/// `-HH:MM` offset.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let (body, offset_min) = match b.last()? {
        b'Z' | b'z' => (&b[..b.len() - 1], 0i64),
        _ if b.len() >= 25 && matches!(b[b.len() - 6], b'+' | b'-') && b[b.len() - 3] == b':' => {
            let t = &b[b.len() - 5..];
            let two = |x: &[u8]| -> Option<i64> {
                x.iter()
                    .all(u8::is_ascii_digit)
                    .then(|| i64::from(x[0] - b'0') * 10 + i64::from(x[1] - b'0'))
            };
            let (h, m) = (two(&t[0..2])?, two(&t[3..5])?);
            if h > 23 || m > 59 {
                return None;
            }
            let sign = if b[b.len() - 6] == b'-' { -1 } else { 1 };
            (&b[..b.len() - 6], sign * (h * 60 + m))
        }
        _ => return None,
    };
    if body.len() < 19 || body[4] != b'-' || body[7] != b'-' || !matches!(body[10], b'T' | b't') {
        return None;
    }
    if body[13] != b':' || body[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = body.get(r)?;
        if t.is_empty() || !t.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(t.iter().fold(0i64, |a, c| a * 10 + i64::from(c - b'0')))
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let frac = if body.len() > 19 {
        if body[19] != b'.' {
            return None;
        }
        let digits = &body[20..];
        if digits.is_empty() || digits.len() > 9 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let mut v = 0i64;
        for i in 0..3 {
            v = v * 10 + digits.get(i).map_or(0, |c| i64::from(c - b'0'));
        }
        v
    } else {
        0
    };
    let days = days_from_civil(y, m, d);
    Some(days * 86_400_000 + hh * 3_600_000 + mm * 60_000 + ss * 1000 + frac - offset_min * 60_000)
}

fn put(dst: &mut [u8], mut v: u64) {
    for c in dst.iter_mut().rev() {
        *c = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

// Howard Hinnant's days-from-civil algorithms (public domain).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Milliseconds since the Unix epoch by the system clock (0 before it):
/// the one clock every layer above the log uses for timestamps, leases and
/// signatures. The log keeps its own, as it depends on nothing above it.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(
            parse_rfc3339_ms("2023-11-14T22:13:20.123Z"),
            Some(1_700_000_000_123)
        );
        assert_eq!(parse_rfc3339_ms("2023-11-14T22:13:20Z"), Some(1_700_000_000_000));
        assert_eq!(
            parse_rfc3339_ms("2023-11-14T23:13:20+01:00"),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2023-11-14T17:43:20.5-04:30"),
            Some(1_700_000_000_500)
        );
        for bad in [
            "2023-11-14T22:13:20",
            "2023-11-14T22:13:20+1:00",
            "2023-11-14 22:13:20Z",
            "x",
            "",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn round_trip(ms in -62_167_219_200_000i64..253_402_300_799_999) {
            proptest::prop_assert_eq!(parse_rfc3339_ms(&rfc3339_ms(ms)), Some(ms));
        }
    }
}
