//! The parts of Go's `net/url`, `path` and `net/http.ServeMux` path handling that decide how echo-basic routes a
//! request and what it answers. Paths and query values are bytes, as in Go.

fn unhex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Go's `url.unescape`: `%XX` must be two hex digits (else `None`); with `plus_is_space` (query mode) `+` is a
/// space.
pub(crate) fn unescape(s: &[u8], plus_is_space: bool) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'%' => {
                let hi = unhex(*s.get(i + 1)?)?;
                let lo = unhex(*s.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(out)
}

/// Go's `url.escape(s, encodePath)`: keeps ASCII alphanumerics, `-_.~` and `$&+,/:;=@`; everything else becomes
/// `%XX` (upper-case hex).
pub(crate) fn escape_path(s: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for &c in s {
        let keep = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'_'
                    | b'.'
                    | b'~'
                    | b'$'
                    | b'&'
                    | b'+'
                    | b','
                    | b'/'
                    | b':'
                    | b';'
                    | b'='
                    | b'@'
            );
        if keep {
            out.push(char::from(c));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(c >> 4)]));
            out.push(char::from(HEX[usize::from(c & 0xf)]));
        }
    }
    out
}

/// Go's `path.Clean`.
pub(crate) fn clean(p: &[u8]) -> Vec<u8> {
    if p.is_empty() {
        return b".".to_vec();
    }
    let rooted = p[0] == b'/';
    let n = p.len();
    let mut out: Vec<u8> = Vec::with_capacity(n);
    let (mut r, mut dotdot) = (0, 0);
    if rooted {
        out.push(b'/');
        r = 1;
        dotdot = 1;
    }
    while r < n {
        if p[r] == b'/' || (p[r] == b'.' && (r + 1 == n || p[r + 1] == b'/')) {
            // empty path element, or a `.` element
            r += 1;
        } else if p[r] == b'.' && p[r + 1] == b'.' && (r + 2 == n || p[r + 2] == b'/') {
            r += 2;
            if out.len() > dotdot {
                // backtrack to the previous '/'
                let mut w = out.len() - 1;
                while w > dotdot && out[w] != b'/' {
                    w -= 1;
                }
                out.truncate(w);
            } else if !rooted {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(b"..");
                dotdot = out.len();
            }
        } else {
            if (rooted && out.len() != 1) || (!rooted && !out.is_empty()) {
                out.push(b'/');
            }
            while r < n && p[r] != b'/' {
                out.push(p[r]);
                r += 1;
            }
        }
    }
    if out.is_empty() {
        return b".".to_vec();
    }
    out
}

/// Go's `net/http.cleanPath`: `path.Clean` on a rooted path, keeping a trailing slash.
pub(crate) fn clean_path(p: &[u8]) -> Vec<u8> {
    if p.is_empty() {
        return b"/".to_vec();
    }
    let mut rooted = Vec::with_capacity(p.len() + 1);
    if p[0] != b'/' {
        rooted.push(b'/');
    }
    rooted.extend_from_slice(p);
    let mut np = clean(&rooted);
    if rooted.last() == Some(&b'/') && np != b"/" {
        if rooted.len() == np.len() + 1 && rooted.starts_with(&np) {
            np = rooted;
        } else {
            np.push(b'/');
        }
    }
    np
}

/// Go's `strings.ReplaceAll(p, "//", "/")` (non-overlapping, left to right: `///` becomes `//`).
pub(crate) fn replace_double_slash(p: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        if p[i] == b'/' && p.get(i + 1) == Some(&b'/') {
            out.push(b'/');
            i += 2;
        } else {
            out.push(p[i]);
            i += 1;
        }
    }
    out
}

/// Go's `url.ParseQuery`, keeping the order of pairs: `&`-separated, pairs containing `;` or with a bad escape are
/// skipped, empty pairs are skipped, `+` is a space.
pub(crate) fn parse_query(q: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for pair in q.split(|&c| c == b'&') {
        if pair.is_empty() || pair.contains(&b';') {
            continue;
        }
        let (k, v) = match pair.iter().position(|&c| c == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        if let (Some(k), Some(v)) = (unescape(k, true), unescape(v, true)) {
            out.push((k, v));
        }
    }
    out
}

/// Go's `url.Values.Get`: the first value for `key`, or empty.
pub(crate) fn query_get<'a>(q: &'a [(Vec<u8>, Vec<u8>)], key: &str) -> &'a [u8] {
    q.iter()
        .find(|(k, _)| k == key.as_bytes())
        .map(|(_, v)| v.as_slice())
        .unwrap_or(b"")
}

/// Go's `strconv.Atoi` (64-bit `int`): optional sign, decimal digits only, no overflow.
pub(crate) fn atoi(s: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(s).ok()?;
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    text.parse::<i64>().ok()
}

/// Go's `html.EscapeString` subset used by `http.Redirect` (`&'<>"`).
pub(crate) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '\'' => out.push_str("&#39;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&#34;"),
            c => out.push(c),
        }
    }
    out
}

/// Go's `textproto.CanonicalMIMEHeaderKey` for a valid header name: upper-case the first letter and every letter
/// after a `-`, lower-case the rest (`x-foo-bar` -> `X-Foo-Bar`). Names with bytes outside the token set are
/// returned unchanged, as in Go.
pub(crate) fn canonical_header_key(name: &str) -> String {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c));
    if !valid {
        return name.to_owned();
    }
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_like_go() {
        for (input, want) in [
            ("", "."),
            ("/", "/"),
            ("abc", "abc"),
            ("/abc/", "/abc"),
            ("/a//b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/../b", "/b"),
            ("a/../..", ".."),
            ("../../x", "../../x"),
            ("/a/b/..", "/a"),
        ] {
            assert_eq!(
                String::from_utf8(clean(input.as_bytes())).unwrap(),
                want,
                "clean({input:?})"
            );
        }
        assert_eq!(clean_path(b"/a/b/"), b"/a/b/");
        assert_eq!(clean_path(b"/a/../b/"), b"/b/");
        assert_eq!(clean_path(b"a"), b"/a");
        assert_eq!(clean_path(b"//x"), b"/x");
    }

    #[test]
    fn slashes_query_and_keys() {
        assert_eq!(replace_double_slash(b"///a//b"), b"//a/b");
        let q = parse_query(b"a=1&a=2&&b=x+y%21&c;d=3&bad=%zz&e");
        assert_eq!(query_get(&q, "a"), b"1");
        assert_eq!(query_get(&q, "b"), b"x y!");
        assert_eq!(query_get(&q, "bad"), b"");
        assert_eq!(query_get(&q, "e"), b"");
        assert_eq!(atoi(b"+12"), Some(12));
        assert_eq!(atoi(b"-3"), Some(-3));
        assert_eq!(atoi(b" 3"), None);
        assert_eq!(atoi(b""), None);
        assert_eq!(canonical_header_key("x-foo-bar"), "X-Foo-Bar");
        assert_eq!(canonical_header_key("x_foo"), "X_foo");
        assert_eq!(canonical_header_key("www-AUTHENTICATE"), "Www-Authenticate");
        assert_eq!(escape_path(b"/a b/%/\xff?"), "/a%20b/%25/%FF%3F");
    }
}
