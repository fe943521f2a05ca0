//! Session persistence on the request path: reading a session key from a request, and handing a new one to the
//! client (a `Set-Cookie`, or the session header). Which endpoint a key names is the upstream registry's business
//! ([`crate::proxy::upstream::Upstream::find_session`] and [`Upstream::select_balanced`]).
//!
//! A key is 64 bits, written as 16 lowercase hex digits. A value that is not exactly that is no key: the request
//! starts a new session, as a request without one does.
//!
//! [`Upstream::select_balanced`]: crate::proxy::upstream::Upstream::select_balanced

use crate::model::{SameSite, SessionCarrier, SessionCookie};
use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;

/// The session key the request carries, if any.
pub fn request_key(req: &RequestHeader, carrier: &SessionCarrier) -> Option<u64> {
    match carrier {
        SessionCarrier::Header { name } => req
            .headers
            .get(name.as_str())
            .and_then(|v| parse_key(v.as_bytes())),
        SessionCarrier::Cookie(c) => req
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
            .find_map(|pair| {
                let pair = pair.trim_ascii();
                let value = pair.strip_prefix(c.name.as_bytes())?.strip_prefix(b"=")?;
                parse_key(value.trim_ascii())
            }),
    }
}

/// Exactly 16 hex digits (either case).
fn parse_key(v: &[u8]) -> Option<u64> {
    if v.len() != 16 {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &b| {
        let d = (b as char).to_digit(16)?;
        Some(acc << 4 | u64::from(d))
    })
}

/// A key as the client gets it.
fn key_text(key: u64) -> String {
    format!("{key:016x}")
}

/// The header that hands `key` to the client: `Set-Cookie` with the cookie's attributes, or the session header.
/// `tls` says whether the request came over TLS (the cookie is then `Secure`); `user_agent` decides a conditional
/// `SameSite=None`.
pub fn response_header(
    carrier: &SessionCarrier,
    key: u64,
    tls: bool,
    user_agent: Option<&[u8]>,
) -> Option<(HeaderName, HeaderValue)> {
    match carrier {
        SessionCarrier::Header { name } => {
            let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
            let value = HeaderValue::from_str(&key_text(key)).ok()?;
            Some((name, value))
        }
        SessionCarrier::Cookie(c) => {
            let now = jiff::Timestamp::now();
            let value = set_cookie(c, key, tls, user_agent, now);
            Some((
                http::header::SET_COOKIE,
                HeaderValue::from_str(&value).ok()?,
            ))
        }
    }
}

/// The `Set-Cookie` value for `key`, with `now` as the time `Expires` counts from.
fn set_cookie(
    c: &SessionCookie,
    key: u64,
    tls: bool,
    user_agent: Option<&[u8]>,
    now: jiff::Timestamp,
) -> String {
    use std::fmt::Write;
    let mut out = format!("{}={}; Path={}", c.name, key_text(key), c.path);
    if let Some(d) = &c.domain {
        let _ = write!(out, "; Domain={d}");
    }
    if let Some(secs) = c.expires {
        let at = jiff::SignedDuration::from_secs(secs);
        if let Ok(t) = now.checked_add(at) {
            let printer = jiff::fmt::rfc2822::DateTimePrinter::new();
            if let Ok(date) = printer.timestamp_to_rfc9110_string(&t) {
                let _ = write!(out, "; Expires={date}");
            }
        }
    }
    if let Some(secs) = c.max_age {
        let _ = write!(out, "; Max-Age={secs}");
    }
    if c.secure || tls {
        out.push_str("; Secure");
    }
    out.push_str("; HttpOnly");
    let same_site = match c.same_site {
        Some(SameSite::None)
            if c.conditional_same_site_none && !same_site_none_compatible(user_agent) =>
        {
            None
        }
        s => s,
    };
    if let Some(s) = same_site {
        let _ = write!(out, "; SameSite={}", s.as_str());
    }
    out
}

/// Does the user agent understand `SameSite=None`? Chrome 50 to 69 and Safari on iOS 12 and macOS 10.14 reject
/// or misread it (the list ingress-nginx checks for `session-cookie-conditional-samesite-none`).
fn same_site_none_compatible(user_agent: Option<&[u8]>) -> bool {
    let Some(ua) = user_agent.and_then(|u| std::str::from_utf8(u).ok()) else {
        return true;
    };
    let has = |s: &str| ua.contains(s);
    !(has("Chrome/5")
        || has("Chrome/6")
        || has("CPU iPhone OS 12")
        || has("iPad; CPU OS 12")
        || has("Macintosh") && has("Intel Mac OS X 10_14") && has("Safari") && !has("Chrome"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookie() -> SessionCookie {
        SessionCookie {
            name: "INGRESSCOOKIE".into(),
            path: "/shop".into(),
            domain: None,
            max_age: None,
            expires: None,
            same_site: None,
            secure: false,
            conditional_same_site_none: false,
        }
    }

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).expect("request");
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).expect("header");
        }
        r
    }

    #[test]
    fn keys_are_read_from_the_named_cookie_only() {
        let c = SessionCarrier::Cookie(cookie());
        let k = 0x0123_4567_89ab_cdefu64;
        assert_eq!(
            request_key(
                &req(&[("cookie", "a=1; INGRESSCOOKIE=0123456789abcdef; b=2")]),
                &c
            ),
            Some(k)
        );
        // In a second Cookie header, upper case digits.
        assert_eq!(
            request_key(
                &req(&[
                    ("cookie", "a=1"),
                    ("cookie", "INGRESSCOOKIE=0123456789ABCDEF")
                ]),
                &c
            ),
            Some(k)
        );
        // A cookie whose name only starts with the session cookie's, bad lengths, bad digits.
        for bad in [
            "INGRESSCOOKIEX=0123456789abcdef",
            "INGRESSCOOKIE=0123456789abcde",
            "INGRESSCOOKIE=0123456789abcdef0",
            "INGRESSCOOKIE=0123456789abcdeg",
            "INGRESSCOOKIE=+123456789abcdef",
            "INGRESSCOOKIE=",
        ] {
            assert_eq!(request_key(&req(&[("cookie", bad)]), &c), None, "{bad}");
        }
        assert_eq!(request_key(&req(&[]), &c), None);
    }

    #[test]
    fn keys_are_read_from_the_session_header() {
        let c = SessionCarrier::Header {
            name: "x-session".into(),
        };
        assert_eq!(
            request_key(&req(&[("x-session", "00000000000000ff")]), &c),
            Some(255)
        );
        assert_eq!(request_key(&req(&[("x-session", "ff")]), &c), None);
        let (name, value) = response_header(&c, 255, false, None).expect("header");
        assert_eq!(name.as_str(), "x-session");
        assert_eq!(value, "00000000000000ff");
    }

    #[test]
    fn set_cookie_carries_the_attributes() {
        let now: jiff::Timestamp = "2026-12-05T08:00:00Z".parse().expect("time");
        let mut c = cookie();
        assert_eq!(
            set_cookie(&c, 1, false, None, now),
            "INGRESSCOOKIE=0000000000000001; Path=/shop; HttpOnly"
        );
        // Over TLS the cookie is Secure, as ingress-nginx makes it.
        assert_eq!(
            set_cookie(&c, 1, true, None, now),
            "INGRESSCOOKIE=0000000000000001; Path=/shop; Secure; HttpOnly"
        );
        c.domain = Some("example.com".into());
        c.expires = Some(3600);
        c.max_age = Some(3600);
        c.secure = true;
        c.same_site = Some(SameSite::Lax);
        assert_eq!(
            set_cookie(&c, 1, false, None, now),
            "INGRESSCOOKIE=0000000000000001; Path=/shop; Domain=example.com; \
             Expires=Sat, 05 Dec 2026 09:00:00 GMT; Max-Age=3600; Secure; HttpOnly; SameSite=Lax"
        );
    }

    #[test]
    fn conditional_same_site_none_is_left_out_for_old_browsers() {
        let now = jiff::Timestamp::UNIX_EPOCH;
        let mut c = cookie();
        c.same_site = Some(SameSite::None);
        let old = b"Mozilla/5.0 (Windows NT 10.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/65.0.3325.181 Safari/537.36";
        let new = b"Mozilla/5.0 (Windows NT 10.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
        let ios12 = b"Mozilla/5.0 (iPhone; CPU iPhone OS 12_4 like Mac OS X) AppleWebKit/605.1.15";
        // Not conditional: always written.
        assert!(set_cookie(&c, 1, false, Some(old), now).ends_with("; SameSite=None"));
        c.conditional_same_site_none = true;
        assert!(!set_cookie(&c, 1, false, Some(old), now).contains("SameSite"));
        assert!(!set_cookie(&c, 1, false, Some(ios12), now).contains("SameSite"));
        assert!(set_cookie(&c, 1, false, Some(new), now).ends_with("; SameSite=None"));
        assert!(set_cookie(&c, 1, false, None, now).ends_with("; SameSite=None"));
    }
}
