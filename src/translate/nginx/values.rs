//! The value syntaxes ingress-nginx (v1.15) accepts in annotations and in its ConfigMap, re-implemented from their
//! documented behaviour: Go's `strconv` booleans and integers, nginx sizes, CIDR lists, and the character-class
//! validators of `internal/ingress/annotations/parser/validators.go`. Every function is pure and total: bad input is
//! an `Err` with a short reason, never a panic.

use crate::model::policy::Cidr;
use std::net::IpAddr;

/// Go's `strconv.ParseBool`: `1 t T TRUE true True` and `0 f F FALSE false False`, nothing else (no spaces, no
/// `yes`/`on`).
pub(crate) fn go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err("not a boolean (true or false)".into()),
    }
}

/// Go's `strconv.Atoi` on a 64-bit platform: an optional sign and decimal digits, in range of an `i64`; no
/// spaces, no underscores, no `0x`.
pub(crate) fn go_int(s: &str) -> Result<i64, String> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not an integer".into());
    }
    s.parse::<i64>().map_err(|_| "integer out of range".into())
}

/// ingress-nginx's `normalizeString`: every line trimmed of surrounding white space.
pub(crate) fn normalize(s: &str) -> String {
    s.split('\n').map(str::trim).collect::<Vec<_>>().join("\n")
}

/// The characters of ingress-nginx's `alphaNumericChars` class: ASCII letters and digits and `- . _ ~ / :`.
fn alnum(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '/' | ':')
}

/// `\r` or `\n`, which every regex-based validator refuses ("malicious" in ingress-nginx's words).
fn has_newline(s: &str) -> bool {
    s.contains(['\r', '\n'])
}

/// The validators ingress-nginx attaches to string annotations (`ValidateRegex` with one of its classes), as
/// character sets over the whole value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Chars {
    /// `BasicCharsRegex`: letters, digits, `- . _ ~ / :`.
    Basic,
    /// `CharsWithSpace`: basic plus space.
    WithSpace,
    /// `URLIsValidRegex`: basic plus `, : ? & =`.
    Url,
    /// `URLWithNginxVariableRegex`: extended plus `, : ? & = $`.
    UrlWithVariables,
    /// `RegexPathWithCapture`: basic plus `$` (capture references).
    PathWithCapture,
    /// `HeadersVariable`: letters, digits, `- _ ,` and space.
    Headers,
    /// `IsValidRegex` (server names and regex values): basic plus `^ $ [ ] ( ) { } * + ? | & = \`.
    Regex,
}

impl Chars {
    fn allows(self, c: char) -> bool {
        match self {
            Chars::Basic => alnum(c),
            Chars::WithSpace => alnum(c) || c == ' ',
            Chars::Url => alnum(c) || matches!(c, ',' | '?' | '&' | '='),
            Chars::UrlWithVariables => alnum(c) || matches!(c, ',' | ' ' | '?' | '&' | '=' | '$'),
            Chars::PathWithCapture => alnum(c) || c == '$',
            Chars::Headers => c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ',' | ' '),
            Chars::Regex => {
                alnum(c)
                    || matches!(
                        c,
                        '^' | '$'
                            | '['
                            | ']'
                            | '('
                            | ')'
                            | '{'
                            | '}'
                            | '*'
                            | '+'
                            | '?'
                            | '|'
                            | '&'
                            | '='
                            | '\\'
                    )
            }
        }
    }

    /// Checks `s` as ingress-nginx's `ValidateRegex(class, remove_spaces)` does: spaces removed first when the
    /// annotation says so, then every character must be in the class and there must be no line break.
    pub(crate) fn check(self, s: &str, remove_spaces: bool) -> Result<(), String> {
        let owned;
        let s = if remove_spaces {
            owned = s.replace(' ', "");
            owned.as_str()
        } else {
            s
        };
        if has_newline(s) {
            return Err("contains a line break".into());
        }
        match s.chars().find(|&c| !self.allows(c)) {
            None => Ok(()),
            Some(c) => Err(format!("character {c:?} is not allowed here")),
        }
    }
}

/// nginx's size syntax as ingress-nginx validates it (`SizeRegex`, spaces removed first): digits and an optional
/// unit `b k m g` in either case.
pub(crate) fn size_syntax(s: &str) -> Result<(), String> {
    let s = s.replace(' ', "");
    if has_newline(&s) {
        return Err("contains a line break".into());
    }
    let digits = s.trim_end_matches(['b', 'B', 'k', 'K', 'm', 'M', 'g', 'G']);
    let unit_len = s.len() - digits.len();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || unit_len > 1 {
        return Err("not a size (digits and an optional unit k, m or g)".into());
    }
    Ok(())
}

/// The bytes an nginx size (`client_max_body_size` syntax: digits and an optional `k`, `m` or `g`) stands for;
/// `None` when nginx would not take it (`b`, spaces, overflow). `0` means no limit to nginx.
pub(crate) fn nginx_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (digits, mult) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1u64 << 10),
        b'm' | b'M' => (&s[..s.len() - 1], 1 << 20),
        b'g' | b'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

/// One entry of a CIDR list as Go's `net.ParseCIDR` then `net.ParseIP` read it: `10.0.0.0/8`, `2001:db8::/32`, or
/// a single address (a /32 or /128). The network is masked (`10.1.2.3/8` is `10.0.0.0/8`), as Go prints it.
pub(crate) fn cidr(s: &str) -> Result<Cidr, String> {
    let s = s.trim();
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => {
            let len: u8 = l
                .parse()
                .map_err(|_| format!("{s:?} is not an address or a network"))?;
            if !l.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("{s:?} is not an address or a network"));
            }
            (a, Some(len))
        }
        None => (s, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("{s:?} is not an address or a network"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = len.unwrap_or(max);
    if len > max {
        return Err(format!("{s:?}: prefix length {len} is too long"));
    }
    Ok(Cidr::new(ip, len))
}

/// A comma-separated CIDR list (`net.ParseCIDRs`): every entry must parse; duplicates are dropped and the list is
/// sorted, as ingress-nginx does. An empty string is an empty list.
pub(crate) fn cidr_list(s: &str) -> Result<Vec<Cidr>, String> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for part in s.split(',') {
        out.push(cidr(part)?);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The name of a Kubernetes object as `NameIsDNS1035Label` checks it (ingress-nginx's `ValidateServiceName`):
/// at most 63 lowercase letters, digits and `-`, starting with a letter, not ending with `-`.
pub(crate) fn dns1035_label(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.as_bytes()[0].is_ascii_lowercase()
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err("not a valid Service name (a DNS-1035 label)".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_bools() {
        for (s, want) in [
            ("true", Some(true)),
            ("True", Some(true)),
            ("TRUE", Some(true)),
            ("t", Some(true)),
            ("1", Some(true)),
            ("false", Some(false)),
            ("F", Some(false)),
            ("0", Some(false)),
            ("yes", None),
            ("on", None),
            (" true", None),
            ("tRue", None),
            ("", None),
        ] {
            assert_eq!(go_bool(s).ok(), want, "{s:?}");
        }
    }

    #[test]
    fn go_ints() {
        for (s, want) in [
            ("0", Some(0)),
            ("42", Some(42)),
            ("+7", Some(7)),
            ("-3", Some(-3)),
            ("007", Some(7)),
            ("1.5", None),
            ("1_000", None),
            (" 1", None),
            ("0x10", None),
            ("", None),
            ("-", None),
            ("99999999999999999999", None),
        ] {
            assert_eq!(go_int(s).ok(), want, "{s:?}");
        }
    }

    #[test]
    fn sizes() {
        for (s, syntax, bytes) in [
            ("0", true, Some(0)),
            ("1m", true, Some(1 << 20)),
            ("8K", true, Some(8 << 10)),
            ("2g", true, Some(2 << 30)),
            ("100", true, Some(100)),
            ("10b", true, None),
            ("1 m", true, None),
            ("1mb", false, None),
            ("m", false, None),
            ("-1", false, None),
            ("1.5m", false, None),
        ] {
            assert_eq!(size_syntax(s).is_ok(), syntax, "{s:?}");
            assert_eq!(nginx_size(s), bytes, "{s:?}");
        }
    }

    #[test]
    fn cidrs() {
        assert_eq!(cidr("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(cidr(" 192.168.0.1 ").unwrap().to_string(), "192.168.0.1/32");
        assert_eq!(cidr("2001:db8::1/32").unwrap().to_string(), "2001:db8::/32");
        assert!(cidr("10.0.0.0/33").is_err());
        assert!(cidr("10.0.0/8").is_err());
        assert!(cidr("example.com").is_err());
        assert!(cidr("10.0.0.0/+8").is_err());
        let l = cidr_list("10.0.0.0/8, 1.2.3.4,10.0.0.0/8").unwrap();
        assert_eq!(l.len(), 2);
        assert!(cidr_list("10.0.0.0/8,,1.2.3.4").is_err());
        assert_eq!(cidr_list("").unwrap(), vec![]);
    }

    #[test]
    fn char_classes() {
        assert!(Chars::Basic.check("ns/secret-name", true).is_ok());
        assert!(Chars::Basic.check("a b", true).is_ok());
        assert!(Chars::Basic.check("a b", false).is_err());
        assert!(Chars::Basic.check("a;b", true).is_err());
        assert!(Chars::PathWithCapture.check("/$1/x", false).is_ok());
        assert!(Chars::PathWithCapture.check("/a?b", false).is_err());
        assert!(Chars::Url.check("https://a.b/c?d=e&f", false).is_ok());
        assert!(Chars::Url.check("https://a.b/$x", false).is_err());
        assert!(Chars::UrlWithVariables
            .check("https://a.b/?rd=$escaped_request_uri", true)
            .is_ok());
        assert!(Chars::Regex
            .check("~^www\\d+\\.example\\.com$", false)
            .is_ok());
        assert!(Chars::Regex.check("a\nb", false).is_err());
        assert!(Chars::Headers.check("X-User, X-Email", true).is_ok());
        assert!(Chars::Headers.check("X-User:", true).is_err());
    }

    #[test]
    fn service_names() {
        assert!(dns1035_label("errors").is_ok());
        assert!(dns1035_label("custom-errors-1").is_ok());
        assert!(dns1035_label("1errors").is_err());
        assert!(dns1035_label("Errors").is_err());
        assert!(dns1035_label("errors-").is_err());
        assert!(dns1035_label("ns/errors").is_err());
    }
}
