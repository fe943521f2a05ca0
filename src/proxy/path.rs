//! Request path normalization: the one path that route matching, rewrites, redirects and the upstream request
//! all see, so that a route for `/admin` cannot be bypassed with a path that the proxy and the backend read
//! differently (`/public/../admin`, `/public/%2e%2e/admin`, `//admin`, `/%61dmin`).
//!
//! What [`normalize`] does, in order (see `docs/hardening.md`):
//! 1. Percent-decoding of unreserved characters (RFC 3986 §2.3 and §6.2.2.2: `ALPHA DIGIT - . _ ~`, so `%2e`
//!    becomes `.` and `%41` becomes `A`); every other percent-encoding stays encoded, with its hex digits in
//!    upper case (§6.2.2.1). A `%` not followed by two hex digits is refused.
//! 2. Encoded slashes and backslashes (`%2F`, `%5C`) and a raw `\` follow [`EscapedSlashes`].
//! 3. Duplicate slashes are merged (`//a///b` becomes `/a/b`), as Envoy's `merge_slashes` and nginx's
//!    `merge_slashes` do.
//! 4. Dot segments are removed (RFC 3986 §5.2.4 `remove_dot_segments`), after decoding, so `%2e%2e` is a `..`.
//!    A dot segment with path parameters (`..;x`, `.;`, `%2e%2e;`) is refused: servlet containers read it as a
//!    dot segment, RFC 3986 does not, so proxy and backend would disagree.
//!
//! Letter case is kept: paths are case-sensitive (RFC 3986 §6.2.2.1; Gateway API and Ingress match paths
//! case-sensitively), so `/ADMIN` is not `/admin`. The query is not touched.

use std::fmt;
use std::str::FromStr;

/// What to do with `%2F` and `%5C` (an encoded `/` and `\`) and a raw `\` in a request path. Backends disagree
/// about them (many decode `%2F` to `/` before routing; IIS and some servlet containers treat `\` as `/`), so a
/// proxy that keeps them as they are can match a route the backend does not serve (`/public/..%2Fadmin`). The
/// names follow Envoy's `path_with_escaped_slashes_action`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EscapedSlashes {
    /// Keep them: `%2F` and `%5C` stay encoded (and do not separate segments), `\` stays `\`.
    Keep,
    /// Refuse the request with 400.
    Reject,
    /// Decode them to `/` (a segment separator) and forward the normalized path.
    Unescape,
    /// Decode them to `/`, and when the path held any, answer 307 with the normalized path in `Location` instead
    /// of forwarding, so the client, the proxy and the backend all see the same path (Envoy's edge
    /// recommendation, `UNESCAPE_AND_REDIRECT`).
    #[default]
    UnescapeAndRedirect,
}

impl EscapedSlashes {
    /// The flag values, in the order of the variants.
    pub const NAMES: [&'static str; 4] = ["keep", "reject", "unescape", "unescape-and-redirect"];

    fn name(self) -> &'static str {
        match self {
            EscapedSlashes::Keep => Self::NAMES[0],
            EscapedSlashes::Reject => Self::NAMES[1],
            EscapedSlashes::Unescape => Self::NAMES[2],
            EscapedSlashes::UnescapeAndRedirect => Self::NAMES[3],
        }
    }
}

impl fmt::Display for EscapedSlashes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A flag value that is not one of [`EscapedSlashes::NAMES`].
#[derive(Debug, thiserror::Error)]
#[error("{0:?}: expected one of keep, reject, unescape, unescape-and-redirect")]
pub struct UnknownAction(String);

impl FromStr for EscapedSlashes {
    type Err = UnknownAction;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "keep" => Ok(EscapedSlashes::Keep),
            "reject" => Ok(EscapedSlashes::Reject),
            "unescape" => Ok(EscapedSlashes::Unescape),
            "unescape-and-redirect" => Ok(EscapedSlashes::UnescapeAndRedirect),
            other => Err(UnknownAction(other.to_string())),
        }
    }
}

/// Why a path is refused (the request gets 400).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A `%` not followed by two hex digits.
    #[error("invalid percent-encoding in the path")]
    BadPercentEncoding,
    /// `%2F`, `%5C` or `\` with [`EscapedSlashes::Reject`].
    #[error("encoded slash or backslash in the path")]
    EscapedSlash,
    /// A dot segment with path parameters (`..;x`, `.;x`), which servlet containers read as `..` and `.`.
    #[error("dot segment with path parameters in the path")]
    DotSegmentParameters,
}

/// The outcome of [`normalize`] for a path that is not refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Normalized {
    /// The path is already normal; use it as it is.
    Unchanged,
    /// Use this path instead (for matching, rewrites and upstream).
    Changed(String),
    /// Answer 307 with this path as `Location` ([`EscapedSlashes::UnescapeAndRedirect`] found an escaped slash).
    Redirect(String),
}

/// RFC 3986 §2.3 unreserved characters: decoding them never changes what a URI identifies.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Does `path` need the slow path? True when it has a `%`, a `\`, a `//`, or a segment that starts with `.`
/// (a possible `.` or `..`). Most paths have none, and pay for one pass over their bytes.
fn needs_work(path: &[u8]) -> bool {
    let mut prev = 0u8;
    for &b in path {
        match b {
            b'%' | b'\\' => return true,
            b'/' | b'.' if prev == b'/' => return true,
            _ => {}
        }
        prev = b;
    }
    false
}

/// Normalizes the path of a request target (the part before `?`), as the module documentation describes.
/// Paths that do not start with `/` (the asterisk-form `*`, an empty path) are left as they are.
///
/// Invariants: the result starts with `/`, holds no `//`, no `.` or `..` segment, no percent-encoded unreserved
/// character, and (unless the policy is [`EscapedSlashes::Keep`]) no `%2F`, `%5C` or `\`; normalizing it again
/// gives [`Normalized::Unchanged`].
pub fn normalize(path: &str, slashes: EscapedSlashes) -> Result<Normalized, PathError> {
    let raw = path.as_bytes();
    if raw.first() != Some(&b'/') || !needs_work(raw) {
        return Ok(Normalized::Unchanged);
    }

    // 1 and 2: decode into `dec`; '/' in `dec` is always a segment separator.
    let mut dec: Vec<u8> = Vec::with_capacity(raw.len());
    let mut escaped_slash = false;
    let mut slash = |dec: &mut Vec<u8>, kept: &[u8]| -> Result<(), PathError> {
        match slashes {
            EscapedSlashes::Keep => dec.extend_from_slice(kept),
            EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
            EscapedSlashes::Unescape | EscapedSlashes::UnescapeAndRedirect => {
                escaped_slash = true;
                dec.push(b'/');
            }
        }
        Ok(())
    };
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        match b {
            b'%' => {
                let (h, l) = match (raw.get(i + 1), raw.get(i + 2)) {
                    (Some(&h), Some(&l)) => (h, l),
                    _ => return Err(PathError::BadPercentEncoding),
                };
                let (Some(hv), Some(lv)) = (hex_value(h), hex_value(l)) else {
                    return Err(PathError::BadPercentEncoding);
                };
                let v = hv * 16 + lv;
                if is_unreserved(v) {
                    dec.push(v);
                } else if v == b'/' {
                    slash(&mut dec, b"%2F")?;
                } else if v == b'\\' {
                    slash(&mut dec, b"%5C")?;
                } else {
                    dec.extend_from_slice(&[b'%', h.to_ascii_uppercase(), l.to_ascii_uppercase()]);
                }
                i += 3;
            }
            b'\\' => {
                slash(&mut dec, b"\\")?;
                i += 1;
            }
            _ => {
                dec.push(b);
                i += 1;
            }
        }
    }

    // 3 and 4: merge slashes and remove dot segments, segment by segment. `dec` starts with '/'.
    let mut kept: Vec<&[u8]> = Vec::new();
    let mut trailing_slash = false;
    for seg in dec[1..].split(|&b| b == b'/') {
        match seg {
            b"" => trailing_slash = true,
            b"." => trailing_slash = true,
            b".." => {
                kept.pop();
                trailing_slash = true;
            }
            // Tomcat and other servlet containers drop `;parameters` from each segment before they resolve dot
            // segments, so `/public/..;/admin` is `/admin` to them and `/public/..;` here: refused.
            s if s.starts_with(b".")
                && matches!(s.split(|&b| b == b';').next(), Some(b"." | b"..")) =>
            {
                return Err(PathError::DotSegmentParameters);
            }
            s => {
                kept.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = Vec::with_capacity(dec.len());
    for s in &kept {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if kept.is_empty() || trailing_slash {
        out.push(b'/');
    }
    // Only ASCII bytes were decoded or inserted, and only at character boundaries: still UTF-8.
    let out = String::from_utf8(out).map_err(|_| PathError::BadPercentEncoding)?;
    if escaped_slash && slashes == EscapedSlashes::UnescapeAndRedirect {
        return Ok(Normalized::Redirect(out));
    }
    if out == path {
        Ok(Normalized::Unchanged)
    } else {
        Ok(Normalized::Changed(out))
    }
}

#[cfg(test)]
mod tests {
    use super::EscapedSlashes::*;
    use super::*;

    fn norm(path: &str, s: EscapedSlashes) -> Result<String, PathError> {
        Ok(match normalize(path, s)? {
            Normalized::Unchanged => path.to_string(),
            Normalized::Changed(p) => p,
            Normalized::Redirect(p) => format!("redirect {p}"),
        })
    }

    #[test]
    fn table() {
        let cases: &[(&str, EscapedSlashes, Result<&str, PathError>)] = &[
            // Already normal.
            ("/", Keep, Ok("/")),
            ("/admin", Keep, Ok("/admin")),
            ("/admin/", Keep, Ok("/admin/")),
            ("/a/b.txt", Keep, Ok("/a/b.txt")),
            ("/a/.well-known/x", Keep, Ok("/a/.well-known/x")),
            ("/a/...", Keep, Ok("/a/...")),
            ("/a/..b/c", Keep, Ok("/a/..b/c")),
            // Dot segments with path parameters; other segments with parameters are ordinary.
            (
                "/public/..;/admin",
                Keep,
                Err(PathError::DotSegmentParameters),
            ),
            (
                "/public/..;jsessionid=1/admin",
                Keep,
                Err(PathError::DotSegmentParameters),
            ),
            (
                "/public/.;/admin",
                Keep,
                Err(PathError::DotSegmentParameters),
            ),
            (
                "/public/%2e%2e;/admin",
                Keep,
                Err(PathError::DotSegmentParameters),
            ),
            ("/public/..%3B/admin", Keep, Ok("/public/..%3B/admin")),
            ("/a/b;v=1/./c", Keep, Ok("/a/b;v=1/c")),
            ("/a/...;x/c", Keep, Ok("/a/...;x/c")),
            ("*", Keep, Ok("*")),
            ("", Keep, Ok("")),
            // Dot segments (RFC 3986 §5.2.4, including its examples' shapes).
            ("/public/../admin/x", Keep, Ok("/admin/x")),
            ("/a/b/c/./../../g", Keep, Ok("/a/g")),
            ("/mid/content=5/../6", Keep, Ok("/mid/6")),
            ("/a/b/..", Keep, Ok("/a/")),
            ("/a/b/.", Keep, Ok("/a/b/")),
            ("/..", Keep, Ok("/")),
            ("/../../admin", Keep, Ok("/admin")),
            ("/.", Keep, Ok("/")),
            ("/./admin", Keep, Ok("/admin")),
            // Duplicate slashes.
            ("//admin", Keep, Ok("/admin")),
            ("/a//b///c", Keep, Ok("/a/b/c")),
            ("/a//", Keep, Ok("/a/")),
            ("//", Keep, Ok("/")),
            ("/public//..//admin", Keep, Ok("/admin")),
            // Unreserved characters are decoded, hex of the rest goes upper case.
            ("/public/%2e%2e/admin/x", Keep, Ok("/admin/x")),
            ("/public/%2E%2E/admin", Keep, Ok("/admin")),
            ("/public/.%2e/admin", Keep, Ok("/admin")),
            ("/%61dmin", Keep, Ok("/admin")),
            ("/%41DMIN", Keep, Ok("/ADMIN")),
            ("/a%7Eb%2d%5f", Keep, Ok("/a~b-_")),
            ("/a%20b", Keep, Ok("/a%20b")),
            ("/a%3fb%3F", Keep, Ok("/a%3Fb%3F")),
            ("/%252e%252e/admin", Keep, Ok("/%252e%252e/admin")),
            ("/caf%C3%A9/\u{e9}", Keep, Ok("/caf%C3%A9/\u{e9}")),
            // Case is kept.
            ("/ADMIN/../Admin", Keep, Ok("/Admin")),
            // Invalid percent-encodings.
            ("/a%", Keep, Err(PathError::BadPercentEncoding)),
            ("/a%2", Keep, Err(PathError::BadPercentEncoding)),
            ("/a%zz", Keep, Err(PathError::BadPercentEncoding)),
            ("/a%%41", Keep, Err(PathError::BadPercentEncoding)),
            // Encoded slashes and backslashes, per policy.
            ("/public/..%2Fadmin", Keep, Ok("/public/..%2Fadmin")),
            ("/a%2fb", Keep, Ok("/a%2Fb")),
            ("/a%5cb\\c", Keep, Ok("/a%5Cb\\c")),
            ("/a%2Fb", Reject, Err(PathError::EscapedSlash)),
            ("/a%5Cb", Reject, Err(PathError::EscapedSlash)),
            ("/a\\b", Reject, Err(PathError::EscapedSlash)),
            ("/a/b", Reject, Ok("/a/b")),
            ("/public/..%2Fadmin", Unescape, Ok("/admin")),
            ("/public/..%5Cadmin", Unescape, Ok("/admin")),
            ("/public\\..\\admin", Unescape, Ok("/admin")),
            ("/a%2F%2Fb", Unescape, Ok("/a/b")),
            (
                "/public/..%2Fadmin",
                UnescapeAndRedirect,
                Ok("redirect /admin"),
            ),
            ("/a%2Fb", UnescapeAndRedirect, Ok("redirect /a/b")),
            ("/a\\b", UnescapeAndRedirect, Ok("redirect /a/b")),
            // No escaped slash: normalized and forwarded, no redirect.
            ("/public/../admin", UnescapeAndRedirect, Ok("/admin")),
        ];
        for (path, policy, want) in cases {
            let got = norm(path, *policy);
            assert_eq!(
                got.as_deref().map_err(|e| *e),
                *want,
                "{path:?} with {policy}"
            );
        }
    }

    #[test]
    fn normal_paths_are_a_fixed_point() {
        for path in [
            "/public/../admin/x",
            "//a//b/./c/..",
            "/%2e%2E/%61%2f%5C\\",
            "/a/b/",
            "/a%20b/%C3%A9",
        ] {
            for policy in [Keep, Unescape] {
                let once = norm(path, policy).unwrap();
                assert_eq!(
                    normalize(&once, policy),
                    Ok(Normalized::Unchanged),
                    "{path:?} -> {once:?} with {policy}"
                );
                assert!(once.starts_with('/') && !once.contains("//"), "{once:?}");
            }
        }
    }

    #[test]
    fn action_names_round_trip() {
        for name in EscapedSlashes::NAMES {
            let a: EscapedSlashes = name.parse().unwrap();
            assert_eq!(a.to_string(), name);
        }
        assert!("nope".parse::<EscapedSlashes>().is_err());
    }
}
