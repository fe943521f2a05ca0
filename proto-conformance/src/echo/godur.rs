//! Go's `time.ParseDuration`, including its exact error messages (echo-basic returns them in its JSON errors).

/// Go's `time.quote`: ASCII printable bytes as-is (`"` and `\` backslash-escaped), every other byte as `\xNN`.
fn quote(s: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for &b in s {
        if !(0x20..0x80).contains(&b) {
            out.push_str("\\x");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            if b == b'"' || b == b'\\' {
                out.push('\\');
            }
            out.push(char::from(b));
        }
    }
    out.push('"');
    out
}

/// `µs` with U+00B5 MICRO SIGN.
const MICRO_SIGN_S: &[u8] = "\u{b5}s".as_bytes();
/// `μs` with U+03BC GREEK SMALL LETTER MU.
const GREEK_MU_S: &[u8] = "\u{3bc}s".as_bytes();

fn unit_nanos(unit: &[u8]) -> Option<u64> {
    Some(match unit {
        b"ns" => 1,
        b"us" | MICRO_SIGN_S | GREEK_MU_S => 1_000,
        b"ms" => 1_000_000,
        b"s" => 1_000_000_000,
        b"m" => 60_000_000_000,
        b"h" => 3_600_000_000_000,
        _ => return None,
    })
}

const LIMIT: u64 = 1 << 63;

/// Parses a Go duration string (`"300ms"`, `"-1.5h"`, `"1m30s"`, `"0"`) into nanoseconds, exactly like Go's
/// `time.ParseDuration`. On failure the error is Go's message, e.g. `time: invalid duration "abc"`.
pub(crate) fn parse_duration(orig: &[u8]) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration {}", quote(orig));
    let mut s = orig;
    let mut neg = false;
    if let Some(&c) = s.first() {
        if c == b'-' || c == b'+' {
            neg = c == b'-';
            s = &s[1..];
        }
    }
    if s == b"0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut d: u64 = 0;
    while !s.is_empty() {
        if !(s[0] == b'.' || s[0].is_ascii_digit()) {
            return Err(invalid());
        }
        // leadingInt
        let mut v: u64 = 0;
        let mut i = 0;
        while i < s.len() && s[i].is_ascii_digit() {
            if v > LIMIT / 10 {
                return Err(invalid());
            }
            v = v * 10 + u64::from(s[i] - b'0');
            if v > LIMIT {
                return Err(invalid());
            }
            i += 1;
        }
        let pre = i > 0;
        s = &s[i..];
        // leadingFraction
        let mut f: u64 = 0;
        let mut scale: f64 = 1.0;
        let mut post = false;
        if s.first() == Some(&b'.') {
            s = &s[1..];
            let mut i = 0;
            let mut overflow = false;
            while i < s.len() && s[i].is_ascii_digit() {
                let c = u64::from(s[i] - b'0');
                i += 1;
                if overflow {
                    continue;
                }
                if f > (LIMIT - 1) / 10 {
                    overflow = true;
                    continue;
                }
                let y = f * 10 + c;
                if y > LIMIT {
                    overflow = true;
                    continue;
                }
                f = y;
                scale *= 10.0;
            }
            post = i > 0;
            s = &s[i..];
        }
        if !pre && !post {
            return Err(invalid());
        }
        let unit_len = s
            .iter()
            .take_while(|&&c| !(c == b'.' || c.is_ascii_digit()))
            .count();
        if unit_len == 0 {
            return Err(format!("time: missing unit in duration {}", quote(orig)));
        }
        let (u, rest) = s.split_at(unit_len);
        s = rest;
        let Some(unit) = unit_nanos(u) else {
            return Err(format!(
                "time: unknown unit {} in duration {}",
                quote(u),
                quote(orig)
            ));
        };
        if v > LIMIT / unit {
            return Err(invalid());
        }
        v *= unit;
        if f > 0 {
            // Go converts float64 -> uint64 here; the value is at most 3.6e12 so `as` is exact enough.
            v += (f as f64 * (unit as f64 / scale)) as u64;
            if v > LIMIT {
                return Err(invalid());
            }
        }
        d = match d.checked_add(v) {
            Some(d) if d <= LIMIT => d,
            _ => return Err(invalid()),
        };
    }
    if neg {
        // d <= 2^63, so -d fits in i64.
        return Ok((-(i128::from(d))) as i64);
    }
    i64::try_from(d).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::parse_duration as p;

    #[test]
    fn valid() {
        assert_eq!(p(b"0"), Ok(0));
        assert_eq!(p(b"-0"), Ok(0));
        assert_eq!(p(b"1s"), Ok(1_000_000_000));
        assert_eq!(p(b"0.1s"), Ok(100_000_000));
        assert_eq!(p(b".5s"), Ok(500_000_000));
        assert_eq!(p(b"1.s"), Ok(1_000_000_000));
        assert_eq!(p(b"500ms"), Ok(500_000_000));
        assert_eq!(p(b"1m30s"), Ok(90_000_000_000));
        assert_eq!(p(b"1h2m3s4ms5us6ns"), Ok(3_723_004_005_006));
        assert_eq!(p("3µs".as_bytes()), Ok(3_000));
        assert_eq!(p("3μs".as_bytes()), Ok(3_000));
        assert_eq!(p(b"-1.5h"), Ok(-5_400_000_000_000));
        assert_eq!(p(b"+2s"), Ok(2_000_000_000));
        assert_eq!(p(b"9223372036854775807ns"), Ok(i64::MAX));
        assert_eq!(p(b"-9223372036854775808ns"), Ok(i64::MIN));
    }

    #[test]
    fn errors_match_go() {
        assert_eq!(p(b"").unwrap_err(), r#"time: invalid duration """#);
        assert_eq!(p(b"abc").unwrap_err(), r#"time: invalid duration "abc""#);
        assert_eq!(
            p(b"1").unwrap_err(),
            r#"time: missing unit in duration "1""#
        );
        assert_eq!(
            p(b"1x").unwrap_err(),
            r#"time: unknown unit "x" in duration "1x""#
        );
        assert_eq!(p(b".s").unwrap_err(), r#"time: invalid duration ".s""#);
        assert_eq!(p(b"-").unwrap_err(), r#"time: invalid duration "-""#);
        assert_eq!(
            p(b"9223372036854775808ns").unwrap_err(),
            r#"time: invalid duration "9223372036854775808ns""#
        );
        assert_eq!(
            p("1\u{e9}".as_bytes()).unwrap_err(),
            r#"time: unknown unit "\xc3\xa9" in duration "1\xc3\xa9""#
        );
        assert_eq!(
            p(b"1\"s").unwrap_err(),
            r#"time: unknown unit "\"s" in duration "1\"s""#
        );
    }
}
