//! The small part of Go's `encoding/json` that echo-basic's output depends on: string escaping (with the default
//! HTML-safe escaping of `<`, `>`, `&`) and `json.MarshalIndent(v, "", " ")` layout of the echo body.

use std::collections::BTreeMap;

use super::tls::TlsInfo;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `s` to `out` as a Go `encoding/json` string literal, quotes included.
///
/// Like Go, `s` is treated as bytes: invalid UTF-8 becomes `\ufffd` (one per invalid byte), `<`, `>`, `&`,
/// U+2028 and U+2029 are escaped as `\u003c`, `\u003e`, `\u0026`, `\u2028`, `\u2029`, and control characters use
/// `\b`, `\f`, `\n`, `\r`, `\t` or `\u00XX`.
pub(crate) fn write_string(out: &mut String, s: &[u8]) {
    out.push('"');
    for chunk in s.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '<' | '>' | '&' | '\u{0}'..='\u{1f}' => {
                    let b = c as u32;
                    out.push_str("\\u00");
                    out.push(char::from(HEX[((b >> 4) & 0xf) as usize]));
                    out.push(char::from(HEX[(b & 0xf) as usize]));
                }
                '\u{2028}' => out.push_str("\\u2028"),
                '\u{2029}' => out.push_str("\\u2029"),
                c => out.push(c),
            }
        }
        for _ in chunk.invalid() {
            out.push_str("\\ufffd");
        }
    }
    out.push('"');
}

/// Go's `json.Marshal(struct{ Message string `json:"message"` }{msg})`: `{"message":"..."}`, no newline.
pub(crate) fn error_body(message: &[u8]) -> String {
    let mut out = String::with_capacity(message.len() + 16);
    out.push_str("{\"message\":");
    write_string(&mut out, message);
    out.push('}');
    out
}

/// The fields of echo-basic's `RequestAssertions`, in declaration order.
pub(crate) struct EchoBody<'a> {
    pub path: &'a [u8],
    pub host: &'a [u8],
    pub method: &'a [u8],
    pub proto: &'a str,
    pub headers: &'a BTreeMap<String, Vec<Vec<u8>>>,
    pub http_port: &'a str,
    pub namespace: &'a str,
    pub ingress: &'a str,
    pub service: &'a str,
    pub pod: &'a str,
    pub tls: Option<&'a TlsInfo>,
}

fn field(out: &mut String, indent: usize, name: &str) {
    out.push('\n');
    out.extend(std::iter::repeat_n(' ', indent));
    write_string(out, name.as_bytes());
    out.push_str(": ");
}

fn close(out: &mut String, indent: usize, bracket: char) {
    out.push('\n');
    out.extend(std::iter::repeat_n(' ', indent));
    out.push(bracket);
}

fn string_array<'s>(
    out: &mut String,
    indent: usize,
    items: impl ExactSizeIterator<Item = &'s [u8]>,
) {
    if items.len() == 0 {
        out.push_str("[]");
        return;
    }
    out.push('[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('\n');
        out.extend(std::iter::repeat_n(' ', indent + 1));
        write_string(out, item);
    }
    close(out, indent, ']');
}

/// Renders the echo body exactly as Go's `json.MarshalIndent(requestAssertions, "", " ")` does (no trailing
/// newline): struct fields in declaration order, map keys sorted bytewise, one space of indent per level,
/// `tls` omitted when `None`, `peerCertificates` and `negotiatedProtocol` omitted when empty.
pub(crate) fn echo_body(b: &EchoBody<'_>) -> String {
    let mut out = String::with_capacity(512);
    out.push('{');
    field(&mut out, 1, "path");
    write_string(&mut out, b.path);
    out.push(',');
    field(&mut out, 1, "host");
    write_string(&mut out, b.host);
    out.push(',');
    field(&mut out, 1, "method");
    write_string(&mut out, b.method);
    out.push(',');
    field(&mut out, 1, "proto");
    write_string(&mut out, b.proto.as_bytes());
    out.push(',');
    field(&mut out, 1, "headers");
    if b.headers.is_empty() {
        out.push_str("{}");
    } else {
        out.push('{');
        for (i, (name, values)) in b.headers.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            field(&mut out, 2, name);
            string_array(&mut out, 2, values.iter().map(Vec::as_slice));
        }
        close(&mut out, 1, '}');
    }
    out.push(',');
    field(&mut out, 1, "httpPort");
    write_string(&mut out, b.http_port.as_bytes());
    out.push(',');
    field(&mut out, 1, "namespace");
    write_string(&mut out, b.namespace.as_bytes());
    out.push(',');
    field(&mut out, 1, "ingress");
    write_string(&mut out, b.ingress.as_bytes());
    out.push(',');
    field(&mut out, 1, "service");
    write_string(&mut out, b.service.as_bytes());
    out.push(',');
    field(&mut out, 1, "pod");
    write_string(&mut out, b.pod.as_bytes());
    if let Some(tls) = b.tls {
        out.push(',');
        field(&mut out, 1, "tls");
        out.push('{');
        field(&mut out, 2, "version");
        write_string(&mut out, tls.version.as_bytes());
        if !tls.peer_certificates.is_empty() {
            out.push(',');
            field(&mut out, 2, "peerCertificates");
            string_array(
                &mut out,
                2,
                tls.peer_certificates.iter().map(String::as_bytes),
            );
        }
        out.push(',');
        field(&mut out, 2, "serverName");
        write_string(&mut out, tls.server_name.as_bytes());
        if !tls.negotiated_protocol.is_empty() {
            out.push(',');
            field(&mut out, 2, "negotiatedProtocol");
            write_string(&mut out, tls.negotiated_protocol.as_bytes());
        }
        out.push(',');
        field(&mut out, 2, "cipherSuite");
        write_string(&mut out, tls.cipher_suite.as_bytes());
        close(&mut out, 1, '}');
    }
    close(&mut out, 0, '}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(b: &[u8]) -> String {
        let mut out = String::new();
        write_string(&mut out, b);
        out
    }

    #[test]
    fn escapes_like_go() {
        assert_eq!(
            s(b"/v2/example?animal=whale&color=blue"),
            r#""/v2/example?animal=whale\u0026color=blue""#
        );
        assert_eq!(s(b"<a>"), r#""\u003ca\u003e""#);
        assert_eq!(s(b"q\"b\\s"), r#""q\"b\\s""#);
        assert_eq!(
            s(b"\x08\x0c\n\r\t\x01\x1f\x7f"),
            "\"\\b\\f\\n\\r\\t\\u0001\\u001f\x7f\""
        );
        assert_eq!(s("é\u{2028}\u{2029}".as_bytes()), "\"é\\u2028\\u2029\"");
        assert_eq!(s(b"a\xe2\x82b\xff"), r#""a\ufffd\ufffdb\ufffd""#);
    }

    #[test]
    fn error_body_is_compact() {
        assert_eq!(
            error_body(b"time: invalid duration \"x\""),
            r#"{"message":"time: invalid duration \"x\""}"#
        );
    }

    #[test]
    fn empty_headers_and_no_tls() {
        let headers = BTreeMap::new();
        let body = echo_body(&EchoBody {
            path: b"/",
            host: b"h",
            method: b"GET",
            proto: "HTTP/1.1",
            headers: &headers,
            http_port: "3000",
            namespace: "ns",
            ingress: "",
            service: "",
            pod: "p",
            tls: None,
        });
        assert_eq!(
            body,
            "{\n \"path\": \"/\",\n \"host\": \"h\",\n \"method\": \"GET\",\n \"proto\": \"HTTP/1.1\",\n \"headers\": {},\n \"httpPort\": \"3000\",\n \"namespace\": \"ns\",\n \"ingress\": \"\",\n \"service\": \"\",\n \"pod\": \"p\"\n}"
        );
    }
}
