//! The hostile edge, against the real binary: smuggling shapes, size limits, slow clients, connection limits,
//! path normalization and HTTP/2 abuse, with raw sockets writing exact bytes and backends that record what they
//! received, so that "nothing was forwarded" is observed, not assumed. Every wait is bounded; the slow-client
//! tests use a bounded number of connections for a bounded time. See docs/hardening.md.

mod common;

use anyhow::{bail, Context, Result};
use common::{free_port, Proxy, CLASSES};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a [`Recorder`] received.
#[derive(Debug, Default)]
struct Received {
    /// Bytes received on all connections.
    bytes: usize,
    /// Request lines of the complete requests (head and body), in order.
    requests: Vec<String>,
}

/// How a [`Recorder`] answers a complete request: `None` answers 200 with the request line as the body.
type Answer = fn(&str) -> Option<Vec<u8>>;

/// A raw HTTP/1.1 backend on 127.0.0.1 that records every byte it receives and every complete request (a head,
/// then a body framed by Content-Length or chunked), and answers each complete request.
struct Recorder {
    port: u16,
    received: Arc<Mutex<Received>>,
    stop: Arc<AtomicBool>,
}

impl Recorder {
    fn start(answer: Option<Answer>) -> Result<Recorder> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let received = Arc::new(Mutex::new(Received::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (received.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let r = r.clone();
                        std::thread::spawn(move || serve_recorded(conn, r, answer));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => return,
                }
            }
        });
        Ok(Recorder {
            port,
            received,
            stop,
        })
    }

    fn bytes(&self) -> usize {
        self.received.lock().map(|r| r.bytes).unwrap_or(0)
    }

    fn requests(&self) -> Vec<String> {
        self.received
            .lock()
            .map(|r| r.requests.clone())
            .unwrap_or_default()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The length of the complete request at the start of `buf` (head and body), if it is all there.
fn complete_request(buf: &[u8]) -> Option<usize> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let body = &buf[head_end..];
    if head.contains("\r\ntransfer-encoding:") {
        // Chunked: walk the chunks; a malformed size means the request never completes.
        let mut at = 0;
        loop {
            let line_end = body[at..].windows(2).position(|w| w == b"\r\n")? + at;
            let size =
                usize::from_str_radix(std::str::from_utf8(&body[at..line_end]).ok()?, 16).ok()?;
            at = line_end + 2;
            if size == 0 {
                // No trailers in these tests: the final CRLF.
                return (body.len() >= at + 2).then_some(head_end + at + 2);
            }
            at += size + 2;
            if body.len() < at {
                return None;
            }
        }
    }
    let length = head
        .split("\r\n")
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(Some(0), |v| v.trim().parse::<usize>().ok())?;
    (body.len() >= length).then_some(head_end + length)
}

fn serve_recorded(mut conn: TcpStream, received: Arc<Mutex<Received>>, answer: Option<Answer>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Ok(mut r) = received.lock() {
            r.bytes += n;
        }
        while let Some(len) = complete_request(&buf) {
            let line =
                String::from_utf8_lossy(&buf[..buf.iter().position(|&b| b == b'\r').unwrap_or(0)])
                    .into_owned();
            buf.drain(..len);
            if let Ok(mut r) = received.lock() {
                r.requests.push(line.clone());
            }
            let reply = answer.and_then(|a| a(&line)).unwrap_or_else(|| {
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{line}",
                    line.len()
                )
                .into_bytes()
            });
            if conn.write_all(&reply).is_err() {
                return;
            }
        }
    }
}

/// Sends `bytes` on a fresh connection and reads until the proxy closes it or `wait` passes. Write errors after
/// the proxy refused part of a large request are expected and ignored.
fn exchange(port: u16, bytes: &[u8], wait: Duration) -> Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(5),
    )?;
    s.set_read_timeout(Some(wait))?;
    s.set_write_timeout(Some(wait))?;
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => break,
            // A reset after the response was read: what was read stands.
            Err(_) => break,
        }
    }
    Ok(out)
}

/// The status code of a raw response, 0 when there is none.
fn status(resp: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(resp);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .filter(|_| text.starts_with("HTTP/1.1 "))
        .unwrap_or(0)
}

/// A header of a raw response.
fn header(resp: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(resp);
    let head = text.split("\r\n\r\n").next()?;
    head.split("\r\n").skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

/// The body of a raw response with a Content-Length.
fn body(resp: &[u8]) -> String {
    let text = String::from_utf8_lossy(resp);
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// The proxy's edge counters (admin API `GET /edge`).
fn edge_stats(proxy: &Proxy) -> Result<serde_json::Value> {
    let r = proxy.admin("/edge")?;
    serde_json::from_slice(&r.body).context("GET /edge is not JSON")
}

fn counter(stats: &serde_json::Value, path: &[&str]) -> u64 {
    path.iter().fold(stats, |v, k| &v[*k]).as_u64().unwrap_or(0)
}

/// A Service named `name` in namespace `edge` whose endpoint is the recorder's port.
fn service(name: &str, port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: edge}}\nspec:\n  ports: [{{name: http, port: 80}}]\n---\n\
apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-0\n  namespace: edge\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{name: http, port: {port}}}]\nendpoints: [{{addresses: [127.0.0.1]}}]\n---\n"
    )
}

/// A Gateway on `port` and an HTTPRoute for host `edge.test`: `/public` to the `public` backend, and `/admin`
/// to the `admin` backend only with the header `x-admin-token: secret` (the route a bypass would get around).
fn manifests(port: u16, public: u16, admin: u16) -> String {
    format!(
        "{CLASSES}{}{}
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: edge}}
spec:
  gatewayClassName: portcullis
  listeners:
  - {{name: http, port: {port}, protocol: HTTP}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: site, namespace: edge}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [edge.test]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /public}}}}]
    backendRefs: [{{name: public, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /admin}}, headers: [{{name: x-admin-token, value: secret}}]}}]
    backendRefs: [{{name: admin, port: 80}}]
",
        service("public", public),
        service("admin", admin)
    )
}

/// A proxy with the two recorders as backends, started with `extra` flags.
struct Edge {
    proxy: Proxy,
    public: Recorder,
    admin: Recorder,
    _dir: tempfile::TempDir,
}

impl Edge {
    fn start(extra: &[&str]) -> Result<Edge> {
        Self::start_with(None, extra)
    }

    fn start_with(answer: Option<Answer>, extra: &[&str]) -> Result<Edge> {
        Self::start_full(answer, "", extra)
    }

    /// The proxy with `more` manifests after the usual ones (objects of namespace `edge` may use the `public`
    /// and `admin` Services).
    fn start_full(answer: Option<Answer>, more: &str, extra: &[&str]) -> Result<Edge> {
        let public = Recorder::start(answer)?;
        let admin = Recorder::start(None)?;
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let text = format!("{}---\n{more}", manifests(port, public.port, admin.port));
        std::fs::write(dir.path().join("edge.yaml"), text.trim_end_matches("---\n"))?;
        let proxy = Proxy::start(dir.path(), port, extra)?;
        Ok(Edge {
            proxy,
            public,
            admin,
            _dir: dir,
        })
    }

    fn port(&self) -> u16 {
        self.proxy.http
    }

    /// Bytes the backends received so far (for [`Edge::nothing_forwarded_since`]).
    fn mark(&self) -> (usize, usize) {
        (self.public.bytes(), self.admin.bytes())
    }

    /// Nothing reached either backend since `mark`.
    fn nothing_forwarded_since(&self, mark: (usize, usize), what: &str) -> Result<()> {
        let (p, a) = (self.public.bytes() - mark.0, self.admin.bytes() - mark.1);
        if p != 0 || a != 0 {
            bail!("{what}: the backends received {p} + {a} bytes; expected none");
        }
        Ok(())
    }

    /// Nothing ever reached either backend.
    fn nothing_forwarded(&self, what: &str) -> Result<()> {
        self.nothing_forwarded_since((0, 0), what)
    }
}

const WAIT: Duration = Duration::from_secs(5);

#[test]
fn smuggling_shapes_are_refused_and_nothing_is_forwarded() -> Result<()> {
    let edge = Edge::start(&[])?;
    let h = "Host: edge.test\r\n";
    // (shape, request, refused by Portcullis's own checks; else by Pingora's, which are not counted in /edge).
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("CL+TE", format!("POST /public/a HTTP/1.1\r\n{h}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").into_bytes(), true),
        ("TE+CL", format!("POST /public/a HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n").into_bytes(), true),
        ("two equal Content-Lengths", format!("POST /public/a HTTP/1.1\r\n{h}Content-Length: 1\r\nContent-Length: 1\r\n\r\na").into_bytes(), true),
        ("two differing Content-Lengths", format!("POST /public/a HTTP/1.1\r\n{h}Content-Length: 1\r\nContent-Length: 2\r\n\r\nab").into_bytes(), true),
        ("Content-Length list", format!("POST /public/a HTTP/1.1\r\n{h}Content-Length: 1, 1\r\n\r\na").into_bytes(), true),
        ("Content-Length sign", format!("POST /public/a HTTP/1.1\r\n{h}Content-Length: +1\r\n\r\na").into_bytes(), true),
        ("chunked twice", format!("POST /public/a HTTP/1.1\r\n{h}Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n").into_bytes(), true),
        ("chunked not last", format!("POST /public/a HTTP/1.1\r\n{h}Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n").into_bytes(), false),
        ("HTTP/1.0 with Transfer-Encoding", format!("POST /public/a HTTP/1.0\r\n{h}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n").into_bytes(), false),
        ("obs-fold", format!("GET /public/a HTTP/1.1\r\n{h}X-A: 1\r\n folded\r\n\r\n").into_bytes(), true),
        ("bare LF everywhere", b"GET /public/a HTTP/1.1\nHost: edge.test\n\n".to_vec(), true),
        ("bare LF after the request line", format!("GET /public/a HTTP/1.1\n{h}\r\n").into_bytes(), true),
        ("bare LF ending the head", format!("GET /public/a HTTP/1.1\r\n{h}\n").into_bytes(), true),
        ("bare CR", format!("GET /public/a HTTP/1.1\r\n{h}X-A: 1\rX-B: 2\r\n\r\n").into_bytes(), true),
        ("space before the colon", format!("GET /public/a HTTP/1.1\r\n{h}X-A : 1\r\n\r\n").into_bytes(), true),
        ("invalid header name", format!("GET /public/a HTTP/1.1\r\n{h}X(A): 1\r\n\r\n").into_bytes(), true),
        ("header name with a slash", format!("GET /public/a HTTP/1.1\r\n{h}X/A: 1\r\n\r\n").into_bytes(), true),
        ("NUL in a value", format!("GET /public/a HTTP/1.1\r\n{h}X-A: a\0b\r\n\r\n").into_bytes(), true),
        ("ESC in a value", format!("GET /public/a HTTP/1.1\r\n{h}X-A: a\x1bb\r\n\r\n").into_bytes(), true),
        ("space in the target", format!("GET /public/a b HTTP/1.1\r\n{h}\r\n").into_bytes(), true),
        ("control byte in the target", format!("GET /public/\x01 HTTP/1.1\r\n{h}\r\n").into_bytes(), true),
        ("not UTF-8 in the target", [b"GET /public/\xff HTTP/1.1\r\n".as_slice(), h.as_bytes(), b"\r\n"].concat(), false),
        ("bad percent-encoding", format!("GET /public/%zz HTTP/1.1\r\n{h}\r\n").into_bytes(), true),
    ];
    for (what, raw, _) in &cases {
        let resp = exchange(edge.port(), raw, WAIT)?;
        assert_eq!(
            status(&resp),
            400,
            "{what}: {}",
            String::from_utf8_lossy(&resp)
        );
        edge.nothing_forwarded(what)?;
    }
    // Pingora's own checks answer these after the head was accepted: a body that is not valid chunked coding
    // never reaches the backend as a complete request.
    for (what, raw) in [
        ("bad chunk size", format!("POST /public/a HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n")),
        ("chunk size overflow", format!("POST /public/a HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\nabc\r\n0\r\n\r\n")),
    ] {
        let resp = exchange(edge.port(), raw.as_bytes(), WAIT)?;
        assert!(status(&resp) >= 400, "{what}: {}", String::from_utf8_lossy(&resp));
        assert!(edge.public.requests().is_empty(), "{what}: {:?}", edge.public.requests());
    }
    // The same requests, well-formed, are forwarded.
    let ok = exchange(
        edge.port(),
        format!("POST /public/ok HTTP/1.1\r\n{h}Content-Length: 2\r\nConnection: close\r\n\r\nok")
            .as_bytes(),
        WAIT,
    )?;
    assert_eq!(status(&ok), 200, "{}", String::from_utf8_lossy(&ok));
    assert_eq!(edge.public.requests(), ["POST /public/ok HTTP/1.1"]);
    let ours = cases.iter().filter(|c| c.2).count() as u64;
    let stats = edge_stats(&edge.proxy)?;
    assert_eq!(counter(&stats, &["refused", "400"]), ours, "{stats}");
    // The same counter on /metrics.
    let metrics = edge.proxy.admin("/metrics")?.text();
    let line = format!("portcullis_edge_requests_refused_total{{status=\"400\"}} {ours}");
    assert!(
        metrics.lines().any(|l| l == line),
        "{line} in:\n{}",
        metrics
            .lines()
            .filter(|l| l.contains("edge_"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(())
}

#[test]
fn size_limits_answer_with_the_rfc_statuses() -> Result<()> {
    let edge = Edge::start(&["--max-request-body", "64k"])?;
    let port = edge.port();
    let h = "Host: edge.test\r\n";
    // A 20 KiB request line: 414 (RFC 9112 §3; the default limit is 8 KiB).
    let long = format!("GET /public/{} HTTP/1.1\r\n{h}\r\n", "a".repeat(20 * 1024));
    let resp = exchange(port, long.as_bytes(), WAIT)?;
    assert_eq!(status(&resp), 414, "{}", String::from_utf8_lossy(&resp));
    // Just under the limit is fine.
    let fits = format!(
        "GET /public/{} HTTP/1.1\r\n{h}Connection: close\r\n\r\n",
        "a".repeat(8 * 1024 - 30)
    );
    assert_eq!(status(&exchange(port, fits.as_bytes(), WAIT)?), 200);
    // A 64 KiB header value: 431 (RFC 6585; the default limit is 60 KiB for the head).
    let big = format!(
        "GET /public/a HTTP/1.1\r\n{h}X-Big: {}\r\n\r\n",
        "v".repeat(64 * 1024)
    );
    let resp = exchange(port, big.as_bytes(), WAIT)?;
    assert_eq!(status(&resp), 431, "{}", String::from_utf8_lossy(&resp));
    // 101 and 300 header fields: 431 (the default limit is 100).
    for n in [101, 300] {
        let many: String = (0..n).map(|i| format!("X-{i}: {i}\r\n")).collect();
        let req = format!("GET /public/a HTTP/1.1\r\n{h}{many}\r\n");
        let resp = exchange(port, req.as_bytes(), WAIT)?;
        assert_eq!(
            status(&resp),
            431,
            "{n} headers: {}",
            String::from_utf8_lossy(&resp)
        );
    }
    // A declared body over the limit: 413 before anything is forwarded.
    let mark = edge.mark();
    let req = format!(
        "POST /public/a HTTP/1.1\r\n{h}Content-Length: {}\r\n\r\n{}",
        70 * 1024,
        "b".repeat(70 * 1024)
    );
    let resp = exchange(port, req.as_bytes(), WAIT)?;
    assert_eq!(status(&resp), 413, "{}", String::from_utf8_lossy(&resp));
    edge.nothing_forwarded_since(mark, "Content-Length over the limit")?;

    // A chunked body is counted as it arrives: 413 once it passes the limit, and the backend never gets a
    // complete request (the head went upstream before the body arrived).
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(WAIT))?;
    s.write_all(
        format!("POST /public/chunked HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n")
            .as_bytes(),
    )?;
    let chunk = format!("4000\r\n{}\r\n", "c".repeat(0x4000));
    for _ in 0..8 {
        if s.write_all(chunk.as_bytes()).is_err() {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n");
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    assert_eq!(status(&resp), 413, "{}", String::from_utf8_lossy(&resp));
    assert!(
        !edge.public.requests().iter().any(|r| r.contains("chunked")),
        "{:?}",
        edge.public.requests()
    );
    // At the limit: forwarded whole.
    let req = format!(
        "POST /public/full HTTP/1.1\r\n{h}Content-Length: {}\r\nConnection: close\r\n\r\n{}",
        64 * 1024,
        "b".repeat(64 * 1024)
    );
    let resp = exchange(port, req.as_bytes(), WAIT)?;
    assert_eq!(status(&resp), 200, "{}", String::from_utf8_lossy(&resp));
    assert_eq!(
        edge.public.requests().last().map(String::as_str),
        Some("POST /public/full HTTP/1.1")
    );

    let stats = edge_stats(&edge.proxy)?;
    assert_eq!(counter(&stats, &["refused", "414"]), 1, "{stats}");
    assert_eq!(counter(&stats, &["refused", "431"]), 3, "{stats}");
    assert_eq!(counter(&stats, &["refused", "413"]), 2, "{stats}");
    Ok(())
}

/// An Ingress in namespace `edge` for `host`, of IngressClass `class`, to the `public` Service, with the
/// ingress-nginx annotation `proxy-body-size` when `body_size` is given.
fn body_size_ingress(name: &str, class: &str, host: &str, body_size: Option<&str>) -> String {
    let annotations = body_size.map_or(String::new(), |v| {
        format!("  annotations: {{nginx.ingress.kubernetes.io/proxy-body-size: \"{v}\"}}\n")
    });
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: edge\n{annotations}spec:\n  ingressClassName: {class}\n  rules:\n  - host: {host}\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {{service: {{name: public, port: {{number: 80}}}}}}}}\n---\n"
    )
}

/// The recorder's answer for `/retry-once/...`: 503 the first time, then 200.
fn fails_once(line: &str) -> Option<Vec<u8>> {
    static SEEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    (line.contains(" /retry-once/") && SEEN.fetch_add(1, Ordering::Relaxed) == 0)
        .then(|| b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n".to_vec())
}

/// Ingresses of our class with no `proxy-body-size` (plain.test) and with 1k (small.test), 64k (big.test) and 0
/// (unlimited.test).
fn own_class_body_sizes() -> String {
    [
        body_size_ingress("plain", "portcullis", "plain.test", None),
        body_size_ingress("small", "portcullis", "small.test", Some("1k")),
        body_size_ingress("big", "portcullis", "big.test", Some("64k")),
        body_size_ingress("unlimited", "portcullis", "unlimited.test", Some("0")),
    ]
    .concat()
}

/// The status of a POST of `n` body bytes declared by Content-Length, on a fresh connection.
fn post_body(port: u16, host: &str, path: &str, n: usize) -> Result<u16> {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n{}",
        "b".repeat(n)
    );
    Ok(status(&exchange(port, req.as_bytes(), WAIT)?))
}

#[test]
fn body_limit_ceiling_caps_what_rules_allow() -> Result<()> {
    // --max-request-body-ceiling 16k over --max-request-body 8k: Ingresses with proxy-body-size 1k, 64k and 0.
    let more = own_class_body_sizes();
    let edge = Edge::start_full(
        None,
        &more,
        &[
            "--max-request-body",
            "8k",
            "--max-request-body-ceiling",
            "16k",
        ],
    )?;
    let port = edge.port();
    for (host, n, want) in [
        ("plain.test", 8 * 1024, 200),
        ("plain.test", 8 * 1024 + 1, 413),
        ("small.test", 2 * 1024, 413),
        ("big.test", 16 * 1024, 200),
        ("big.test", 16 * 1024 + 1, 413),
        ("unlimited.test", 16 * 1024, 200),
        ("unlimited.test", 100 * 1024, 413),
    ] {
        let mark = edge.mark();
        assert_eq!(post_body(port, host, "/x", n)?, want, "{host}, {n} bytes");
        if want == 413 {
            edge.nothing_forwarded_since(mark, host)?;
        }
    }
    Ok(())
}

#[test]
fn body_limit_is_the_rules_proxy_body_size_else_the_edge_default() -> Result<()> {
    // --max-request-body 8k for everything without a limit of its own; Ingresses of our class with
    // proxy-body-size 1k, 64k and 0 (none); a taken-over ingress-nginx Ingress without the annotation, whose
    // limit is the ingress-nginx profile's default (here set to 16k); an HTTPRoute that retries on 503.
    let more = [
        own_class_body_sizes(),
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: nginx}\nspec: {controller: k8s.io/ingress-nginx}\n---\n".to_string(),
        body_size_ingress("taken-over", "nginx", "nginx.test", None),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: retrying, namespace: edge}\nspec:\n  parentRefs: [{name: gw}]\n  hostnames: [retry.test]\n  rules:\n  - retry: {attempts: 2, codes: [503]}\n    backendRefs: [{name: public, port: 80}]\n---\n".to_string(),
    ]
    .concat();
    let edge = Edge::start_full(
        Some(fails_once),
        &more,
        &[
            "--max-request-body",
            "8k",
            "--ingress-nginx-class",
            "nginx",
            "--ingress-nginx-set",
            "proxy-body-size=16k",
        ],
    )?;
    let port = edge.port();
    let post = |host: &str, path: &str, n: usize| post_body(port, host, path, n);
    let chunked = |host: &str, path: &str, chunks: usize| -> Result<u16> {
        let chunk = format!("4000\r\n{}\r\n", "c".repeat(0x4000));
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{}0\r\n\r\n",
            chunk.repeat(chunks)
        );
        Ok(status(&exchange(port, req.as_bytes(), WAIT)?))
    };
    // (host, body bytes, status): declared by Content-Length.
    let cases = [
        // No limit of its own: --max-request-body.
        ("plain.test", 8 * 1024, 200),
        ("plain.test", 8 * 1024 + 1, 413),
        // A smaller proxy-body-size wins.
        ("small.test", 1024, 200),
        ("small.test", 2 * 1024, 413),
        // A larger one raises the limit for its rule, as nginx's location-level client_max_body_size does.
        ("big.test", 20 * 1024, 200),
        ("big.test", 64 * 1024 + 1, 413),
        // 0: no limit.
        ("unlimited.test", 100 * 1024, 200),
        // The ingress-nginx profile's default (ConfigMap proxy-body-size) is that Ingress's own limit.
        ("nginx.test", 12 * 1024, 200),
        ("nginx.test", 20 * 1024, 413),
        // Routes without a policy: --max-request-body.
        ("edge.test", 9 * 1024, 413),
    ];
    let before = counter(&edge_stats(&edge.proxy)?, &["refused", "413"]);
    for (host, n, want) in cases {
        let mark = edge.mark();
        let path = if host == "edge.test" {
            "/public/x"
        } else {
            "/x"
        };
        assert_eq!(post(host, path, n)?, want, "{host}, {n} bytes");
        if want == 413 {
            edge.nothing_forwarded_since(mark, host)?;
        }
    }
    // Streamed bodies against the same limits: 3 × 16 KiB passes on big.test, 5 × 16 KiB does not; 1 × 16 KiB
    // is over plain.test's 8 KiB.
    assert_eq!(chunked("big.test", "/chunked", 3)?, 200);
    assert_eq!(chunked("big.test", "/chunked", 5)?, 413);
    assert_eq!(chunked("plain.test", "/chunked", 1)?, 413);
    // One count per request: a 6 KiB body sent twice (the first answer is a 503 the route retries) is 6 KiB
    // against the 8 KiB limit, not 12.
    assert_eq!(post("retry.test", "/retry-once/a", 6 * 1024)?, 200);
    let retried = edge
        .public
        .requests()
        .iter()
        .filter(|r| r.contains("/retry-once/"))
        .count();
    assert_eq!(retried, 2, "{:?}", edge.public.requests());
    // A streamed body over the limit on a route that retries: 413, and no retry that sends the body again
    // without the limit (the backend never gets a complete request).
    assert_eq!(chunked("retry.test", "/retry-stream", 1)?, 413);
    assert!(
        !edge
            .public
            .requests()
            .iter()
            .any(|r| r.contains("/retry-stream")),
        "{:?}",
        edge.public.requests()
    );
    let refused = cases.iter().filter(|c| c.2 == 413).count() as u64 + 3;
    let stats = edge_stats(&edge.proxy)?;
    assert_eq!(
        counter(&stats, &["refused", "413"]) - before,
        refused,
        "{stats}"
    );
    Ok(())
}

/// One GET with `Connection: close`, its status and how long it took.
fn timed_get(port: u16, path: &str) -> Result<(u16, Duration)> {
    let start = Instant::now();
    let req = format!("GET {path} HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n\r\n");
    let resp = exchange(port, req.as_bytes(), WAIT)?;
    Ok((status(&resp), start.elapsed()))
}

#[test]
fn slow_clients_are_cut_and_do_not_starve_normal_ones() -> Result<()> {
    // 300 clients trickling a head one byte every 400 ms, and 20 that connect and send nothing, against a 2 s
    // header timeout; normal clients meanwhile. Half the trickling clients send their first 44 bytes at once, so
    // that their head is past the 24 bytes Pingora peeks at for the HTTP/2 preface and in the head check
    // (they are told 408); the other half stay within those 24 bytes (they are closed without an answer).
    let edge = Edge::start(&["--header-timeout", "2"])?;
    let port = edge.port();
    let head = b"GET /public/slow HTTP/1.1\r\nHost: edge.test\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    const STARTED: usize = 44;
    let mut slow = Vec::new();
    let mut sent = Vec::new();
    for i in 0..300 {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        let started = if i % 2 == 1 { STARTED } else { 0 };
        s.write_all(&head[..started])?;
        s.set_nonblocking(true)?;
        slow.push(Some(s));
        sent.push(started);
    }
    let silent: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(("127.0.0.1", port)))
        .collect::<std::io::Result<_>>()?;
    let start = Instant::now();
    let mut closed_at = vec![None; slow.len()];
    let mut answers = vec![None; slow.len()];
    let mut normal = Vec::new();
    while start.elapsed() < Duration::from_secs(5) && closed_at.iter().any(Option::is_none) {
        for (i, conn) in slow.iter_mut().enumerate() {
            let Some(s) = conn else { continue };
            let mut buf = [0u8; 512];
            let gone = match s.read(&mut buf) {
                Ok(0) => true,
                Ok(n) => {
                    answers[i] = Some(status(&buf[..n]));
                    true
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    // One more byte, never the last one.
                    let at = sent[i];
                    sent[i] = (at + 1).min(head.len() - 1);
                    at < head.len() - 1 && s.write_all(&head[at..at + 1]).is_err()
                }
                Err(_) => true,
            };
            if gone {
                closed_at[i] = Some(start.elapsed());
                *conn = None;
            }
        }
        // A normal client in between: served at once.
        normal.push(timed_get(port, "/public/normal")?);
        std::thread::sleep(Duration::from_millis(400));
    }
    // Every slow client was cut after the header timeout (2 s), well before it could finish its head.
    for (i, at) in closed_at.iter().enumerate() {
        let at = at.with_context(|| format!("slow client {i} still open after 5 s"))?;
        assert!(
            at >= Duration::from_millis(1500),
            "slow client {i} cut after {at:?}"
        );
    }
    // A client whose head was in the head check is told 408; one still within the preface peek gets no answer.
    for (i, answer) in answers.iter().enumerate() {
        let want = (i % 2 == 1).then_some(408);
        assert_eq!(*answer, want, "slow client {i} (sent {} bytes)", sent[i]);
    }
    // Normal clients never waited.
    assert!(normal.len() >= 5, "{normal:?}");
    for (st, took) in &normal {
        assert_eq!(*st, 200);
        assert!(
            *took < Duration::from_secs(1),
            "a normal request took {took:?}"
        );
    }
    // The silent ones are closed too.
    for mut s in silent {
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => bail!(
                "a silent client got {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                bail!("a silent client is still open")
            }
            Err(_) => {}
        }
    }
    assert_eq!(
        edge.public
            .requests()
            .iter()
            .filter(|r| r.contains("slow"))
            .count(),
        0
    );
    let stats = edge_stats(&edge.proxy)?;
    assert!(counter(&stats, &["header_timeouts"]) >= 320, "{stats}");
    Ok(())
}

#[test]
fn idle_kept_alive_connections_are_closed() -> Result<()> {
    let edge = Edge::start(&["--idle-timeout", "1"])?;
    let mut s = TcpStream::connect(("127.0.0.1", edge.port()))?;
    s.set_read_timeout(Some(WAIT))?;
    let req = b"GET /public/ka HTTP/1.1\r\nHost: edge.test\r\n\r\n";
    // Two requests on one connection, 300 ms apart: kept alive.
    for _ in 0..2 {
        s.write_all(req)?;
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf)?;
        assert_eq!(
            status(&buf[..n]),
            200,
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // Then idle: closed after about a second.
    let start = Instant::now();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    let took = start.elapsed();
    assert_eq!(n, 0);
    assert!(took < Duration::from_millis(2500), "closed after {took:?}");
    assert_eq!(edge.public.requests().len(), 2);
    let stats = edge_stats(&edge.proxy)?;
    assert_eq!(counter(&stats, &["idle_timeouts"]), 1, "{stats}");
    Ok(())
}

#[test]
fn a_connection_serves_at_most_the_request_limit() -> Result<()> {
    let edge = Edge::start(&["--max-requests-per-connection", "3"])?;
    let mut s = TcpStream::connect(("127.0.0.1", edge.port()))?;
    s.set_read_timeout(Some(WAIT))?;
    let mut served = 0;
    for _ in 0..5 {
        if s.write_all(b"GET /public/n HTTP/1.1\r\nHost: edge.test\r\n\r\n")
            .is_err()
        {
            break;
        }
        let mut buf = [0u8; 1024];
        match s.read(&mut buf) {
            Ok(n) if n > 0 && status(&buf[..n]) == 200 => served += 1,
            _ => break,
        }
    }
    assert_eq!(served, 3);
    assert_eq!(edge.public.requests().len(), 3);
    Ok(())
}

#[test]
fn a_later_request_on_a_kept_alive_connection_is_checked_too() -> Result<()> {
    let edge = Edge::start(&[])?;
    let mut s = TcpStream::connect(("127.0.0.1", edge.port()))?;
    s.set_read_timeout(Some(WAIT))?;
    // A POST with a body first, so that the next head follows a body.
    s.write_all(b"POST /public/one HTTP/1.1\r\nHost: edge.test\r\nContent-Length: 3\r\n\r\nabc")?;
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf)?;
    assert_eq!(status(&buf[..n]), 200);
    s.write_all(b"GET /public/two HTTP/1.1\r\nHost: edge.test\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")?;
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    assert_eq!(status(&resp), 400, "{}", String::from_utf8_lossy(&resp));
    assert_eq!(edge.public.requests(), ["POST /public/one HTTP/1.1"]);
    Ok(())
}

/// The admin API and the health port are wrapped by the same edge: a slow head is cut by the header timeout,
/// connections beyond the limit are closed at once, a malformed head is refused.
#[test]
fn admin_and_health_ports_have_the_edge_limits() -> Result<()> {
    let health = free_port();
    let health_addr = format!("127.0.0.1:{health}");
    let edge = Edge::start(&[
        "--max-connections-per-listener",
        "4",
        "--header-timeout",
        "1",
        "--health-addr",
        &health_addr,
    ])?;
    for port in [edge.proxy.admin, health] {
        // A head that never ends: cut by the header timeout (408, then the close).
        let start = Instant::now();
        let resp = exchange(
            port,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
            Duration::from_secs(4),
        )?;
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "port {port}: cut after {:?}",
            start.elapsed()
        );
        assert!(
            resp.is_empty() || status(&resp) == 408,
            "{}",
            String::from_utf8_lossy(&resp)
        );
        // A malformed head: 400.
        let resp = exchange(port, b"GET /healthz HTTP/1.1\nHost: x\n\n", WAIT)?;
        assert_eq!(
            status(&resp),
            400,
            "port {port}: {}",
            String::from_utf8_lossy(&resp)
        );
        // Four held connections fill the port; a fifth is closed at once.
        let held: Vec<TcpStream> = (0..4)
            .map(|_| TcpStream::connect(("127.0.0.1", port)))
            .collect::<std::io::Result<_>>()?;
        std::thread::sleep(Duration::from_millis(300));
        let resp = exchange(
            port,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
            Duration::from_secs(2),
        )?;
        assert!(
            resp.is_empty(),
            "port {port}: {}",
            String::from_utf8_lossy(&resp)
        );
        drop(held);
        // Room again: probes answer.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match exchange(
                port,
                b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                WAIT,
            ) {
                Ok(r) if !r.is_empty() && status(&r) == 200 => break,
                _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
                other => bail!("port {port}: no answer after the held connections went: {other:?}"),
            }
        }
    }
    Ok(())
}

#[test]
fn connections_beyond_the_listener_limit_are_closed_at_once() -> Result<()> {
    let edge = Edge::start(&[
        "--max-connections-per-listener",
        "20",
        "--header-timeout",
        "2",
    ])?;
    let port = edge.port();
    let held: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(("127.0.0.1", port)))
        .collect::<std::io::Result<_>>()?;
    // Let the proxy accept all 20.
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let mut extra = TcpStream::connect(("127.0.0.1", port))?;
    extra.set_read_timeout(Some(Duration::from_secs(3)))?;
    let _ = extra.write_all(b"GET /public/extra HTTP/1.1\r\nHost: edge.test\r\n\r\n");
    let mut buf = [0u8; 64];
    let n = extra.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "got {:?}", String::from_utf8_lossy(&buf[..n]));
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "closed after {:?}",
        start.elapsed()
    );
    let stats = edge_stats(&edge.proxy)?;
    assert!(counter(&stats, &["connections_refused"]) >= 1, "{stats}");
    // The idle ones run out of header time; then there is room again.
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        match timed_get(port, "/public/after") {
            Ok((200, _)) => break,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            other => bail!("no room after the header timeout: {other:?}"),
        }
    }
    drop(held);
    assert_eq!(edge.public.requests(), ["GET /public/after HTTP/1.1"]);
    Ok(())
}

#[test]
fn a_route_for_admin_cannot_be_bypassed() -> Result<()> {
    let edge = Edge::start(&[])?;
    let port = edge.port();
    let get = |path: &str, token: bool| -> Result<Vec<u8>> {
        let t = if token {
            "X-Admin-Token: secret\r\n"
        } else {
            ""
        };
        let req = format!("GET {path} HTTP/1.1\r\nHost: edge.test\r\n{t}Connection: close\r\n\r\n");
        exchange(port, req.as_bytes(), WAIT)
    };
    // Forms that a backend reads as /admin/x. Without the token none reaches any backend; with it, the admin
    // backend gets the normalized path.
    let forwarded = [
        "/public/../admin/x",
        "/public/%2e%2e/admin/x",
        "/public/%2E%2E/admin/x",
        "/public/.%2e/admin/x",
        "/public/./../admin/x",
        "//admin/x",
        "/public//../admin/x",
        "/public/a/../../admin/x",
        "/%61dmin/x",
        "/%61%64%6d%69%6e/x",
        "/./admin/x",
        "/../admin/x",
    ];
    for path in forwarded {
        let resp = get(path, false)?;
        assert_eq!(
            status(&resp),
            404,
            "{path}: {}",
            String::from_utf8_lossy(&resp)
        );
        edge.nothing_forwarded(path)?;
    }
    for path in forwarded {
        let resp = get(path, true)?;
        assert_eq!(
            status(&resp),
            200,
            "{path}: {}",
            String::from_utf8_lossy(&resp)
        );
        assert_eq!(body(&resp), "GET /admin/x HTTP/1.1", "{path}");
    }
    assert_eq!(edge.admin.requests().len(), forwarded.len());
    // Dot segments with path parameters, which servlet containers read as `..`: refused, nothing forwarded.
    let mark = edge.mark();
    for path in [
        "/public/..;/admin/x",
        "/public/..;jsessionid=1/admin/x",
        "/public/%2e%2e;/admin/x",
        "/public/.;/x",
    ] {
        let resp = get(path, true)?;
        assert_eq!(
            status(&resp),
            400,
            "{path}: {}",
            String::from_utf8_lossy(&resp)
        );
    }
    edge.nothing_forwarded_since(mark, "dot segments with parameters")?;
    // Encoded slashes and backslashes: redirected to the decoded path by default (Envoy's edge setting).
    let mark = edge.mark();
    for (path, location) in [
        ("/public/..%2Fadmin/x", "/admin/x"),
        ("/public/..%2fadmin/x?q=1", "/admin/x?q=1"),
        ("/public/..%5Cadmin/x", "/admin/x"),
        ("/public\\..\\admin/x", "/admin/x"),
        ("/public/a%2Fb", "/public/a/b"),
    ] {
        let resp = get(path, false)?;
        assert_eq!(
            status(&resp),
            307,
            "{path}: {}",
            String::from_utf8_lossy(&resp)
        );
        assert_eq!(
            header(&resp, "location").as_deref(),
            Some(location),
            "{path}"
        );
    }
    edge.nothing_forwarded_since(mark, "encoded slashes")?;
    // Paths are case-sensitive: /ADMIN is not /admin, and not /public either.
    let resp = get("/ADMIN/x", true)?;
    assert_eq!(status(&resp), 404);
    let resp = get("/%41DMIN/x", true)?;
    assert_eq!(status(&resp), 404);
    edge.nothing_forwarded_since(mark, "/ADMIN")?;
    // The public route gets normalized paths too, and keeps its query.
    let resp = get("/public/a/./b//c/../d?x=%2e%2e", false)?;
    assert_eq!(body(&resp), "GET /public/a/b/d?x=%2e%2e HTTP/1.1");
    let stats = edge_stats(&edge.proxy)?;
    assert!(
        counter(&stats, &["paths_normalized"]) >= 2 * forwarded.len() as u64,
        "{stats}"
    );
    assert_eq!(counter(&stats, &["paths_redirected"]), 5, "{stats}");
    Ok(())
}

#[test]
fn escaped_slash_policies() -> Result<()> {
    let reject = Edge::start(&["--escaped-slashes", "reject"])?;
    let req = b"GET /public/..%2Fadmin/x HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n\r\n";
    assert_eq!(status(&exchange(reject.port(), req, WAIT)?), 400);
    reject.nothing_forwarded("reject")?;
    drop(reject);

    let unescape = Edge::start(&["--escaped-slashes", "unescape"])?;
    let req = b"GET /public/a%2Fb HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n\r\n";
    let resp = exchange(unescape.port(), req, WAIT)?;
    assert_eq!(body(&resp), "GET /public/a/b HTTP/1.1");
    let req = b"GET /public/..%2Fadmin/x HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n\r\n";
    assert_eq!(status(&exchange(unescape.port(), req, WAIT)?), 404);
    drop(unescape);

    // keep: %2F is not a separator for matching and is forwarded as it came (the backend must agree).
    let keep = Edge::start(&["--escaped-slashes", "keep"])?;
    let req = b"GET /public/a%2fb HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n\r\n";
    let resp = exchange(keep.port(), req, WAIT)?;
    assert_eq!(body(&resp), "GET /public/a%2Fb HTTP/1.1");
    Ok(())
}

/// The crafted answers of an upstream that smuggles, by request path.
fn smuggling_upstream(line: &str) -> Option<Vec<u8>> {
    let path = line.split(' ').nth(1)?;
    Some(match path {
        // Both framings, and a second response hidden behind the chunked body.
        "/public/clte" => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nevil!".to_vec(),
        "/public/two-lengths" => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 7\r\n\r\nok".to_vec(),
        "/public/bad-chunk" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nevil!\r\n0\r\n\r\n".to_vec(),
        _ => return None,
    })
}

#[test]
fn upstream_responses_that_smuggle_are_not_passed_through() -> Result<()> {
    let edge = Edge::start_with(Some(smuggling_upstream), &[])?;
    let port = edge.port();
    let get = |path: &str| {
        let req = format!("GET {path} HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n\r\n");
        exchange(port, req.as_bytes(), WAIT)
    };
    // Two different lengths: 502.
    let resp = get("/public/two-lengths")?;
    assert_eq!(status(&resp), 502, "{}", String::from_utf8_lossy(&resp));
    // A body that is not chunked coding: the client never gets it as a complete response.
    let resp = get("/public/bad-chunk")?;
    let text = String::from_utf8_lossy(&resp);
    assert!(!text.contains("evil!"), "{text}");
    assert!(
        status(&resp) == 502 || !text.ends_with("0\r\n\r\n"),
        "{text}"
    );
    // Content-Length with Transfer-Encoding: the chunked body is what the client gets (RFC 9112 §6.3), and the
    // response hidden behind it never answers a later request.
    for i in 0..5 {
        let resp = get("/public/clte")?;
        let text = String::from_utf8_lossy(&resp);
        assert!(!text.contains("evil!"), "{text}");
        let resp = get(&format!("/public/after-{i}"))?;
        let text = String::from_utf8_lossy(&resp);
        assert_eq!(status(&resp), 200, "{text}");
        assert!(!text.contains("evil!"), "{text}");
        assert_eq!(body(&resp), format!("GET /public/after-{i} HTTP/1.1"));
    }
    Ok(())
}

/// An HTTP/2 cleartext (prior knowledge) client connection to the proxy, driven in the background once its
/// settings have arrived; returns the client and the server's SETTINGS_MAX_CONCURRENT_STREAMS.
async fn h2_client(port: u16) -> Result<(h2::client::SendRequest<bytes::Bytes>, usize)> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let (client, conn) = h2::client::Builder::new()
        .handshake::<_, bytes::Bytes>(tcp)
        .await?;
    let mut conn = Box::pin(conn);
    // Drive the connection until the server's SETTINGS are in.
    let _ = tokio::time::timeout(Duration::from_millis(300), conn.as_mut()).await;
    let max_streams = conn.max_concurrent_send_streams();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok((client, max_streams))
}

fn h2_get(path: &str) -> Result<http::Request<()>> {
    Ok(http::Request::get(format!("http://edge.test{path}")).body(())?)
}

/// The status of one HTTP/2 request, or the stream's reset reason as an error.
async fn h2_status(
    client: &mut h2::client::SendRequest<bytes::Bytes>,
    req: http::Request<()>,
) -> Result<u16> {
    let (resp, _) = client.clone().ready().await?.send_request(req, true)?;
    let resp = tokio::time::timeout(WAIT, resp).await??;
    Ok(resp.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_limits_hold() -> Result<()> {
    let edge = Edge::start(&["--h2-max-concurrent-streams", "50"])?;
    let (mut client, max_streams) = h2_client(edge.port()).await?;
    assert_eq!(max_streams, 50);
    assert_eq!(h2_status(&mut client, h2_get("/public/h2")?).await?, 200);
    // A `:path` longer than the request line limit: 414.
    let long = format!("/public/{}", "a".repeat(9 * 1024));
    assert_eq!(h2_status(&mut client, h2_get(&long)?).await?, 414);
    // More header fields than the limit: 431.
    let mut req = h2_get("/public/many")?;
    for i in 0..101 {
        req.headers_mut()
            .append(format!("x-{i}").parse::<http::HeaderName>()?, "1".parse()?);
    }
    assert_eq!(h2_status(&mut client, req).await?, 431);
    // A header list over the limit: the h2 layer answers 431 and resets the stream (or the client, which was
    // told the limit in SETTINGS, refuses to send it).
    let mut req = h2_get("/public/big")?;
    req.headers_mut()
        .insert("x-big", "v".repeat(64 * 1024).parse()?);
    match h2_status(&mut client, req).await {
        Ok(s) => assert_eq!(s, 431),
        Err(e) => {
            let reason = e.downcast_ref::<h2::Error>().and_then(h2::Error::reason);
            assert!(
                reason == Some(h2::Reason::REFUSED_STREAM) || reason.is_none(),
                "{e:#}"
            );
        }
    }
    // Path normalization applies to HTTP/2 too.
    assert_eq!(
        h2_status(&mut client, h2_get("/public/%2e%2e/admin/x")?).await?,
        404
    );
    assert_eq!(
        edge.public.requests(),
        ["GET /public/h2 HTTP/1.1"],
        "only the plain request went upstream"
    );
    edge.admin
        .requests()
        .is_empty()
        .then_some(())
        .context("admin reached")?;
    Ok(())
}

/// Opens up to `n` streams on one HTTP/2 connection and cancels each (dropping a stream's handles sends
/// RST_STREAM(CANCEL)) after `delay`, or at once; stops when the connection is closed or after 10 s. Returns the
/// streams opened and whether the connection was closed.
async fn cancel_streams(port: u16, n: usize, delay: Duration) -> Result<(usize, bool)> {
    let (mut client, _) = h2_client(port).await?;
    let start = Instant::now();
    let mut opened = 0;
    while opened < n && start.elapsed() < Duration::from_secs(10) {
        client = match tokio::time::timeout(WAIT, client.ready()).await {
            Ok(Ok(c)) => c,
            _ => return Ok((opened, true)),
        };
        match client.send_request(h2_get("/public/rapid")?, true) {
            Ok((resp, stream)) => {
                opened += 1;
                if delay.is_zero() {
                    drop((resp, stream));
                    if opened % 50 == 0 {
                        tokio::task::yield_now().await;
                    }
                } else {
                    // Long enough for the proxy to accept the stream and start its request.
                    tokio::time::sleep(delay).await;
                    drop((resp, stream));
                }
            }
            Err(_) => return Ok((opened, true)),
        }
    }
    // A closed connection shows on the next use.
    let closed = match tokio::time::timeout(Duration::from_secs(2), client.ready()).await {
        Ok(Ok(mut c)) => c.send_request(h2_get("/public/probe")?, true).is_err(),
        _ => true,
    };
    Ok((opened, closed))
}

/// A backend that takes its time: the work a cancelled stream leaves running.
fn slow_upstream(_line: &str) -> Option<Vec<u8>> {
    std::thread::sleep(Duration::from_millis(200));
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_rapid_reset_is_bounded() -> Result<()> {
    // Defaults. Streams cancelled as soon as they are sent: the connection is closed, by the `h2` crate's bound
    // on streams reset before the proxy accepted them (20) or by the premature-reset rule, whichever comes first.
    let edge = Edge::start_with(Some(slow_upstream), &[])?;
    // (The client's count of streams it opened includes streams the h2 client cancelled before sending them; what
    // the proxy did is what reached the backend.)
    let (opened, closed) = cancel_streams(edge.port(), 5000, Duration::ZERO).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reached = edge.public.requests().len();
    eprintln!(
        "rapid reset, at once: {opened} streams, closed: {closed}, {reached} reached the backend"
    );
    assert!(
        closed && reached <= 600,
        "{opened} streams, {reached} upstream, closed: {closed}"
    );
    let (mut other, _) = h2_client(edge.port()).await?;
    assert_eq!(h2_status(&mut other, h2_get("/public/after")?).await?, 200);
    drop(edge);

    // The premature-reset rule alone (the h2 crate's bound set out of reach): streams cancelled after the proxy
    // accepted them and sent their requests upstream, where they take 200 ms. The connection is closed after
    // 500 streams.
    let edge = Edge::start_with(
        Some(slow_upstream),
        &["--h2-max-pending-reset-streams", "100000"],
    )?;
    let (opened, closed) = cancel_streams(edge.port(), 2000, Duration::from_millis(3)).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reached = edge.public.requests().len();
    assert!(reached <= opened, "{reached} upstream");
    eprintln!("rapid reset, accepted first: {opened} streams, closed: {closed}, {reached} reached the backend");
    assert!(
        closed && (500..=600).contains(&opened),
        "{opened} streams, closed: {closed}"
    );
    let stats = edge_stats(&edge.proxy)?;
    assert_eq!(counter(&stats, &["h2_rapid_resets"]), 1, "{stats}");
    let (mut other, _) = h2_client(edge.port()).await?;
    assert_eq!(h2_status(&mut other, h2_get("/public/after")?).await?, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_rapid_reset_rule_can_be_switched_off() -> Result<()> {
    // The control for the test above: without the rule, the same connection outlives 800 cancelled streams.
    let edge = Edge::start_with(
        Some(slow_upstream),
        &[
            "--h2-max-pending-reset-streams",
            "100000",
            "--h2-rapid-reset-streams",
            "0",
        ],
    )?;
    let (opened, closed) = cancel_streams(edge.port(), 800, Duration::from_millis(3)).await?;
    assert!(
        !closed && opened == 800,
        "{opened} streams, closed: {closed}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_continuation_flood_is_cut() -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let edge = Edge::start(&[])?;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", edge.port())).await?;
    let frame = |len: usize, kind: u8, flags: u8, stream: u32| -> Vec<u8> {
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f
    };
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0, 0x4, 0, 0)); // SETTINGS
                                     // HEADERS on stream 1 without END_HEADERS (:method GET, indexed), then CONTINUATION frames that never end.
    out.extend(frame(1, 0x1, 0x1, 1));
    out.push(0x82);
    s.write_all(&out).await?;
    let mut sent = 0;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    let mut eof = false;
    while start.elapsed() < Duration::from_secs(5) && !eof {
        if sent < 100_000 && s.write_all(&frame(0, 0x9, 0, 1)).await.is_ok() {
            sent += 1;
        }
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await {
            match r {
                Ok(0) | Err(_) => eof = true,
                Ok(n) => reply.extend_from_slice(&buf[..n]),
            }
        }
    }
    assert!(
        eof,
        "the connection is still open after {sent} CONTINUATION frames"
    );
    // The server's frames: find its GOAWAY and the error code.
    let mut at = 0;
    let mut goaway = None;
    while at + 9 <= reply.len() {
        let len = usize::from(reply[at]) << 16
            | usize::from(reply[at + 1]) << 8
            | usize::from(reply[at + 2]);
        if reply[at + 3] == 0x7 && at + 9 + 8 <= reply.len() {
            let p = &reply[at + 9..];
            goaway = Some(u32::from_be_bytes([p[4], p[5], p[6], p[7]]));
        }
        at += 9 + len;
    }
    // ENHANCE_YOUR_CALM (0xb), or COMPRESSION_ERROR / PROTOCOL_ERROR for what came with the flood.
    assert!(
        matches!(goaway, Some(0xb | 0x9 | 0x1)),
        "GOAWAY {goaway:?} after {sent} frames"
    );
    edge.nothing_forwarded("CONTINUATION flood")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_pending_reset_bound_closes_the_connection_alone() -> Result<()> {
    // The `h2` crate's bound on streams the client resets before the proxy accepted them
    // (--h2-max-pending-reset-streams, default 20), with the premature-reset rule switched off: streams cancelled
    // as soon as they are sent still get the connection closed.
    let edge = Edge::start_with(Some(slow_upstream), &["--h2-rapid-reset-streams", "0"])?;
    let (opened, closed) = cancel_streams(edge.port(), 5000, Duration::ZERO).await?;
    eprintln!("pending resets: {opened} streams, closed: {closed}");
    assert!(closed, "{opened} streams, still open");
    let stats = edge_stats(&edge.proxy)?;
    assert_eq!(counter(&stats, &["h2_rapid_resets"]), 0, "{stats}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_idle_connections_are_closed() -> Result<()> {
    let edge = Edge::start(&["--idle-timeout", "1"])?;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", edge.port())).await?;
    let (client, conn) = h2::client::handshake(tcp).await?;
    let mut conn = tokio::spawn(conn);
    let mut client = client;
    assert_eq!(
        h2_status(&mut client, h2_get("/public/h2-idle")?).await?,
        200
    );
    let start = Instant::now();
    // Open while it has had a stream within the idle timeout...
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut conn)
            .await
            .is_err(),
        "closed within 500 ms of its last stream"
    );
    // ...and closed (GOAWAY, then the end of the connection) once it has had none for a second.
    tokio::time::timeout(Duration::from_secs(4), &mut conn)
        .await
        .context("the idle HTTP/2 connection is still open after 4.5 s")??
        .ok();
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
    drop(client);
    Ok(())
}

#[test]
fn tls_handshakes_are_held_to_the_header_timeout() -> Result<()> {
    // An HTTPS listener (the demo certificate, an Ingress with spec.tls) and a 1 s header timeout: a client that
    // connects and sends nothing, and one that sends half a TLS record header, are closed after about a second.
    let secret = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/50-tls.yaml"),
    )?
    .replace("namespace: shop", "namespace: edge");
    let ingress = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: tls, namespace: edge}\nspec:\n  tls: [{hosts: [shop.example.com], secretName: shop-tls}]\n  rules:\n  - host: shop.example.com\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: public, port: {number: 80}}}}\n---\n";
    let https = free_port();
    let https_flag = https.to_string();
    let edge = Edge::start_full(
        None,
        &format!("{secret}\n---\n{ingress}"),
        &["--https-port", &https_flag, "--header-timeout", "1"],
    )?;
    for (what, bytes) in [
        ("nothing", &b""[..]),
        ("half a record header", &[0x16, 0x03][..]),
    ] {
        let start = Instant::now();
        let mut s = TcpStream::connect(("127.0.0.1", https))?;
        s.write_all(bytes)?;
        s.set_read_timeout(Some(Duration::from_secs(4)))?;
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => bail!("{what}: got {:?}", &buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                bail!("{what}: the handshake is still open after 4 s")
            }
            Err(_) => {}
        }
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_millis(3000),
            "{what}: closed after {took:?}"
        );
    }
    let stats = edge_stats(&edge.proxy)?;
    assert_eq!(counter(&stats, &["handshake_timeouts"]), 2, "{stats}");
    Ok(())
}

/// The responses in `raw`, in order: status and body (each framed by its Content-Length).
fn responses(raw: &[u8]) -> Vec<(u16, String)> {
    let mut out = Vec::new();
    let mut rest = raw;
    while let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = &rest[..end + 4];
        let length = header(head, "content-length").map_or(0, |v| v.parse::<usize>().unwrap_or(0));
        let total = (end + 4 + length).min(rest.len());
        out.push((
            status(head),
            String::from_utf8_lossy(&rest[end + 4..total]).into_owned(),
        ));
        rest = &rest[total..];
    }
    out
}

/// Sends `bytes` on a fresh connection in writes of `step` bytes a millisecond apart, then reads until the proxy
/// closes the connection or [`WAIT`] passes.
fn exchange_spread(port: u16, bytes: &[u8], step: usize) -> Result<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(WAIT))?;
    for part in bytes.chunks(step) {
        // A write error after the proxy refused a head and closed is expected: what it answered is read below.
        if s.write_all(part).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut out = Vec::new();
    let deadline = Instant::now() + WAIT;
    let mut chunk = [0u8; 16 * 1024];
    while Instant::now() < deadline {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
        }
    }
    Ok(out)
}

/// 200 answers from the recorder, whose bodies are the request lines.
fn echoed(lines: &[&str]) -> Vec<(u16, String)> {
    lines.iter().map(|l| (200, l.to_string())).collect()
}

#[test]
fn pipelined_requests_are_answered_in_order() -> Result<()> {
    // RFC 9112 §9.3.2: a client may send requests without waiting for the answers; they are answered in order.
    // Requests without a body and with Content-Length bodies, sent in one write and cut anywhere over many.
    let edge = Edge::start(&[])?;
    let h = "Host: edge.test\r\n";
    let batch = format!(
        "GET /public/p1 HTTP/1.1\r\n{h}\r\n\
         POST /public/p2 HTTP/1.1\r\n{h}Content-Length: 5\r\n\r\nhello\
         GET /public/p3 HTTP/1.1\r\n{h}Content-Length: 0\r\n\r\n\
         PUT /public/p4 HTTP/1.1\r\n{h}Content-Length: 39\r\n\r\nGET /public/not-a-head HTTP/1.1\r\n\r\n....\
         GET /public/p5 HTTP/1.1\r\n{h}Connection: close\r\n\r\n"
    );
    let lines = [
        "GET /public/p1 HTTP/1.1",
        "POST /public/p2 HTTP/1.1",
        "GET /public/p3 HTTP/1.1",
        "PUT /public/p4 HTTP/1.1",
        "GET /public/p5 HTTP/1.1",
    ];
    let mut forwarded = Vec::new();
    for step in [batch.len(), 50, 7, 1] {
        let resp = exchange_spread(edge.port(), batch.as_bytes(), step)?;
        assert_eq!(
            responses(&resp),
            echoed(&lines),
            "writes of {step} bytes: {}",
            String::from_utf8_lossy(&resp)
        );
        forwarded.extend(lines.iter().map(|l| l.to_string()));
        assert_eq!(edge.public.requests(), forwarded, "writes of {step} bytes");
    }
    let stats = edge_stats(&edge.proxy)?;
    assert_eq!(counter(&stats, &["refused", "400"]), 0, "{stats}");
    Ok(())
}

#[test]
fn a_refused_pipelined_head_is_answered_after_the_requests_before_it() -> Result<()> {
    // Two good requests, then a head the edge refuses, then one more: the good ones are forwarded and answered,
    // then the refusal, and the connection is closed; neither the refused head nor what follows is forwarded.
    let edge = Edge::start(&[])?;
    let h = "Host: edge.test\r\n";
    let good = format!(
        "GET /public/g1 HTTP/1.1\r\n{h}\r\nPOST /public/g2 HTTP/1.1\r\n{h}Content-Length: 2\r\n\r\nok"
    );
    let bad: [(&str, String, u16); 4] = [
        ("bare LF", "GET /public/bad HTTP/1.1\nHost: edge.test\n\n".into(), 400),
        (
            "a 64 KiB header",
            format!("GET /public/bad HTTP/1.1\r\n{h}X-Big: {}\r\n\r\n", "v".repeat(64 * 1024)),
            431,
        ),
        (
            "a Content-Length that is not a number",
            format!("POST /public/bad HTTP/1.1\r\n{h}Content-Length: 1 2\r\n\r\nab"),
            400,
        ),
        (
            "CL+TE",
            format!("POST /public/bad HTTP/1.1\r\n{h}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            400,
        ),
    ];
    let mut forwarded = Vec::new();
    for (what, bad, code) in &bad {
        // Small writes, except for the large head (a few dozen writes).
        let small = if bad.len() > 1024 { 4096 } else { 9 };
        for step in [usize::MAX, small] {
            let raw = format!("{good}{bad}GET /public/never HTTP/1.1\r\n{h}\r\n");
            let resp = exchange_spread(edge.port(), raw.as_bytes(), step.min(raw.len()))?;
            let got = responses(&resp);
            let text = String::from_utf8_lossy(&resp);
            assert_eq!(
                got.iter().map(|r| r.0).collect::<Vec<_>>(),
                [200, 200, *code],
                "{what} (writes of {step}): {text}"
            );
            assert_eq!(
                got[..2],
                echoed(&["GET /public/g1 HTTP/1.1", "POST /public/g2 HTTP/1.1"])[..],
                "{what}: {text}"
            );
            forwarded
                .extend(["GET /public/g1 HTTP/1.1", "POST /public/g2 HTTP/1.1"].map(String::from));
            assert_eq!(
                edge.public.requests(),
                forwarded,
                "{what} (writes of {step})"
            );
        }
    }
    Ok(())
}

#[test]
fn a_pipelined_head_cut_short_gets_the_header_timeout() -> Result<()> {
    // A request, then the start of another that never ends: the first is answered at once, the second gets 408
    // once the header timeout has run from its first byte.
    let edge = Edge::start(&["--header-timeout", "1"])?;
    let start = Instant::now();
    let resp = exchange(
        edge.port(),
        b"GET /public/first HTTP/1.1\r\nHost: edge.test\r\n\r\nGET /public/second HTTP/1.1\r\nHost: ed",
        WAIT,
    )?;
    let took = start.elapsed();
    let got = responses(&resp);
    assert_eq!(
        got.iter().map(|r| r.0).collect::<Vec<_>>(),
        [200, 408],
        "{}",
        String::from_utf8_lossy(&resp)
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(3000),
        "closed after {took:?}"
    );
    assert_eq!(edge.public.requests(), ["GET /public/first HTTP/1.1"]);
    Ok(())
}

#[test]
fn bytes_after_a_chunked_request_close_the_connection_after_its_answer() -> Result<()> {
    // After a chunked body the edge cannot tell where the next head starts without decoding the body, so it does
    // not scan pipelined bytes there: the request is answered, nothing after it is forwarded, and the connection
    // closes (docs/hardening.md). Sent after the answer instead, the next request is served on the same connection.
    let edge = Edge::start(&[])?;
    let h = "Host: edge.test\r\n";
    let chunked = format!(
        "POST /public/c1 HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    );
    let raw = format!("{chunked}GET /public/after HTTP/1.1\r\n{h}\r\n");
    let resp = exchange(edge.port(), raw.as_bytes(), WAIT)?;
    let got = responses(&resp);
    assert_eq!(
        got.first(),
        Some(&(200, "POST /public/c1 HTTP/1.1".to_string())),
        "{}",
        String::from_utf8_lossy(&resp)
    );
    assert!(
        got.iter().skip(1).all(|r| r.0 >= 400),
        "{}",
        String::from_utf8_lossy(&resp)
    );
    assert_eq!(edge.public.requests(), ["POST /public/c1 HTTP/1.1"]);

    let mut s = TcpStream::connect(("127.0.0.1", edge.port()))?;
    s.set_read_timeout(Some(WAIT))?;
    s.write_all(chunked.as_bytes())?;
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf)?;
    assert_eq!(
        status(&buf[..n]),
        200,
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    s.write_all(format!("GET /public/next HTTP/1.1\r\n{h}\r\n").as_bytes())?;
    let n = s.read(&mut buf)?;
    assert_eq!(
        responses(&buf[..n]),
        echoed(&["GET /public/next HTTP/1.1"]),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    Ok(())
}

/// A backend that answers one upgrade request with 101 (naming the protocol the request asked for) and then
/// echoes every byte it receives; returns its port and the request heads it received.
fn upgrade_echo() -> Result<(u16, Arc<Mutex<Vec<String>>>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(4) {
            let Ok(mut conn) = conn else { return };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    match conn.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break p + 4;
                    }
                };
                // The protocol the request asked for (the test's assertion sees it echoed in the 101).
                let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                if let Ok(mut h) = seen.lock() {
                    h.push(head.clone());
                }
                let protocol = head
                    .split("\r\n")
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("upgrade")
                            .then(|| v.trim().to_string())
                    })
                    .unwrap_or_default();
                let reply = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {protocol}\r\n\r\n"
                );
                if conn.write_all(reply.as_bytes()).is_err()
                    || conn.write_all(&buf[head_end..]).is_err()
                {
                    return;
                }
                loop {
                    match conn.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if conn.write_all(&chunk[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    Ok((port, heads))
}

#[test]
fn upgraded_connections_pass_bytes_that_look_like_heads() -> Result<()> {
    // After an Upgrade request the bytes are the new protocol's, not HTTP heads: neither scanned nor refused,
    // however they look. WebSocket by default; another protocol once `--upgrade-protocols` lists it.
    upgrade_round_trip("websocket", &[])?;
    upgrade_round_trip(
        "custom-proto/1",
        &["--upgrade-protocols", "websocket,custom-proto/1"],
    )?;
    upgrade_round_trip("custom-proto/1", &["--upgrade-protocols", "*"])?;
    Ok(())
}

#[test]
fn unlisted_and_h2c_upgrades_go_as_plain_requests() -> Result<()> {
    // h2c never goes upstream, even with `*` (a connection upgraded to HTTP/2 cleartext would reach the backend
    // past routing: h2c smuggling); an unlisted protocol neither. The backend here insists on 101, which Pingora
    // refuses for a request it did not upgrade: 502, and the backend saw no Upgrade field.
    for (protocol, flags) in [
        ("h2c", &["--upgrade-protocols", "*"][..]),
        ("custom-proto/1", &[][..]),
    ] {
        let (backend, heads) = upgrade_echo()?;
        let dir = tempfile::tempdir()?;
        let port = free_port();
        std::fs::write(
            dir.path().join("edge.yaml"),
            manifests(port, backend, backend),
        )?;
        let proxy = Proxy::start(dir.path(), port, flags)?;
        let req = format!(
            "GET /public/up HTTP/1.1\r\nHost: edge.test\r\nConnection: Upgrade, HTTP2-Settings\r\n\
             Upgrade: {protocol}\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n"
        );
        let mut s = TcpStream::connect(("127.0.0.1", proxy.http))?;
        s.set_read_timeout(Some(WAIT))?;
        s.write_all(req.as_bytes())?;
        let mut got = vec![0u8; 4096];
        let n = s.read(&mut got)?;
        got.truncate(n);
        assert_ne!(
            status(&got),
            101,
            "{protocol}: {}",
            String::from_utf8_lossy(&got)
        );
        let heads = heads.lock().map(|h| h.clone()).unwrap_or_default();
        assert_eq!(heads.len(), 1, "{protocol}: {heads:?}");
        let lower = heads[0].to_ascii_lowercase();
        assert!(
            !lower.contains("\r\nupgrade:") && !lower.contains("http2-settings:"),
            "{protocol}: {}",
            heads[0]
        );
    }
    Ok(())
}

fn upgrade_round_trip(protocol: &str, flags: &[&str]) -> Result<()> {
    let (backend, heads) = upgrade_echo()?;
    let dir = tempfile::tempdir()?;
    let port = free_port();
    std::fs::write(
        dir.path().join("edge.yaml"),
        manifests(port, backend, backend),
    )?;
    let proxy = Proxy::start(dir.path(), port, flags)?;
    let mut s = TcpStream::connect(("127.0.0.1", proxy.http))?;
    s.set_read_timeout(Some(WAIT))?;
    s.write_all(
        format!(
            "GET /public/ws HTTP/1.1\r\nHost: edge.test\r\nConnection: Upgrade\r\nUpgrade: {protocol}\r\n\
             Proxy-Authorization: Basic c2VjcmV0\r\nKeep-Alive: timeout=5\r\n\r\n"
        )
        .as_bytes(),
    )?;
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut chunk)?;
        anyhow::ensure!(
            n > 0,
            "closed before the 101: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(
        status(&got),
        101,
        "Upgrade: {protocol}: {}\nproxy log:\n{}",
        String::from_utf8_lossy(&got),
        proxy.log_text()
    );
    let head_end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(0, |p| p + 4);
    let mut echoed = got.split_off(head_end);
    assert_eq!(header(&got, "upgrade").as_deref(), Some(protocol));
    let sent: &[u8] = b"GET /x HTTP/1.1\nbare LF\r\n\0\x1b Content-Length: zz\r\n\r\nTransfer-Encoding: chunked\r\n\r\n";
    for part in sent.chunks(10) {
        s.write_all(part)?;
    }
    let deadline = Instant::now() + WAIT;
    while echoed.len() < sent.len() && Instant::now() < deadline {
        let n = s.read(&mut chunk)?;
        anyhow::ensure!(n > 0, "closed after {:?}", String::from_utf8_lossy(&echoed));
        echoed.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(echoed, sent);
    // The handshake went upstream; the other hop-by-hop fields did not.
    let heads = heads.lock().map(|h| h.clone()).unwrap_or_default();
    let head = heads
        .first()
        .map(|h| h.to_ascii_lowercase())
        .unwrap_or_default();
    assert!(head.contains(&format!("\r\nupgrade: {protocol}")), "{head}");
    assert!(
        !head.contains("proxy-authorization") && !head.contains("keep-alive:"),
        "{head}"
    );
    Ok(())
}

/// An Ingress for `under.test` to an echo backend, behind a proxy started with `extra` flags.
async fn underscore_proxy(
    extra: &[&str],
) -> Result<(
    Proxy,
    proto_conformance::echo::EchoServer,
    tempfile::TempDir,
)> {
    let backend = common::echo("under-1", "default").await?;
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let text = format!(
        "{CLASSES}{}{}",
        common::service_yaml("default", "web", 80, &[&backend]),
        common::ingress_yaml("default", "under", "under.test", "/", "web", &[])
    );
    std::fs::write(dir.path().join("all.yaml"), text)?;
    let proxy = Proxy::start(dir.path(), port, extra)?;
    Ok((proxy, backend, dir))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_with_underscores_are_dropped_refused_or_allowed() -> Result<()> {
    let headers = [("X_Admin_Token", "secret"), ("x-user", "u1"), ("x_b", "1")];
    // The default drops them (nginx's behaviour): the backend sees the request without them.
    let (proxy, _backend, _dir) = underscore_proxy(&[]).await?;
    let r = common::get(proxy.http, "under.test", "/", &headers)?;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.echoed_header("x_admin_token"), None, "{}", r.text());
    assert_eq!(r.echoed_header("x_b"), None);
    assert_eq!(r.echoed_header("x-user").as_deref(), Some("u1"));
    let r = common::get(proxy.http, "under.test", "/", &[("x-user", "u2")])?;
    assert_eq!(r.echoed_header("x-user").as_deref(), Some("u2"));
    let stats = edge_stats(&proxy)?;
    assert_eq!(
        counter(&stats, &["underscore_headers_dropped"]),
        1,
        "{stats}"
    );
    let metrics = proxy.admin("/metrics")?.text();
    assert!(
        metrics.contains("portcullis_edge_headers_total{action=\"underscore_dropped\"} 1"),
        "{metrics}"
    );
    drop(proxy);

    // reject: 400, and the backend gets nothing.
    let (proxy, backend, _dir) = underscore_proxy(&["--underscore-headers", "reject"]).await?;
    let r = common::get(proxy.http, "under.test", "/", &headers)?;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = common::get(proxy.http, "under.test", "/", &[("x-user", "u1")])?;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(backend.received().len(), 1);
    drop(proxy);

    // allow: forwarded as sent.
    let (proxy, _backend, _dir) = underscore_proxy(&["--underscore-headers", "allow"]).await?;
    let r = common::get(proxy.http, "under.test", "/", &headers)?;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.echoed_header("x_admin_token").as_deref(), Some("secret"));
    assert_eq!(r.echoed_header("x_b").as_deref(), Some("1"));
    Ok(())
}
