//! What the data plane says about each request: the `Server` header, and access logs.
//!
//! Both are process-wide settings fixed at start (`--server-header`, `--access-log`), held in `OnceLock`s so that
//! a request reads them with one atomic load.
//!
//! Access logs go to stdout, one line per request, through a bounded queue to a writer thread that writes them
//! in batches every 20 ms: a request never waits for stdout, nor wakes a thread. When the queue is full the line is dropped and `portcullis_access_log_dropped_total`
//! counts it. Formats: `json` (the fields of [`Record`]) and `text` (ingress-nginx's `log-format-upstream`).

use crate::model::BackendKey;
use http::HeaderValue;
use prometheus::IntCounter;
use std::cell::Cell;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

static SERVER: OnceLock<Option<HeaderValue>> = OnceLock::new();
static ACCESS_LOG: OnceLock<AccessLog> = OnceLock::new();
/// Set by [`finish_access_log`]: the writer writes what is queued and stops.
static CLOSING: AtomicBool = AtomicBool::new(false);
static WRITER: Mutex<Option<JoinHandle<()>>> = Mutex::new(None);

/// Access-log format (`--access-log`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AccessLogFormat {
    /// No access log.
    #[default]
    Off,
    /// One JSON object per line.
    Json,
    /// ingress-nginx's upstream log format.
    Text,
}

/// Why the `--server-header` value cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("--server-header {0:?}: not a valid header value")]
pub struct BadServerHeader(String);

/// Sets the `Server` header of this process: a name, or `off` for none. Later calls change nothing.
pub fn set_server_header(value: &str) -> Result<(), BadServerHeader> {
    let v = if value.eq_ignore_ascii_case("off") {
        None
    } else {
        Some(HeaderValue::from_str(value).map_err(|_| BadServerHeader(value.to_string()))?)
    };
    let _ = SERVER.set(v);
    Ok(())
}

/// The `Server` header to add to responses that carry none (local replies, and upstream responses without one).
#[inline]
pub fn server_header() -> Option<&'static HeaderValue> {
    SERVER.get().and_then(Option::as_ref)
}

/// The access log of this process.
pub struct AccessLog {
    format: AccessLogFormat,
    query: bool,
    tx: SyncSender<Vec<u8>>,
    dropped: Option<IntCounter>,
}

/// Starts the access log: lines are written to stdout by a thread of their own; at most `capacity` lines wait.
/// Does nothing when `format` is `off` or a log was started already.
pub fn start_access_log(
    format: AccessLogFormat,
    query: bool,
    capacity: usize,
    dropped: Option<IntCounter>,
) -> std::io::Result<()> {
    if format == AccessLogFormat::Off || ACCESS_LOG.get().is_some() {
        return Ok(());
    }
    let (tx, rx) = sync_channel(capacity.max(1));
    let writer = std::thread::Builder::new()
        .name("portcullis-accesslog".into())
        .spawn(move || write_lines(rx))?;
    if let Ok(mut w) = WRITER.lock() {
        *w = Some(writer);
    }
    let _ = ACCESS_LOG.set(AccessLog {
        format,
        query,
        tx,
        dropped,
    });
    Ok(())
}

/// How long the writer sleeps between batches. While it sleeps, a request's `try_send` is a queue push with no
/// thread to wake (waking a writer blocked in `recv` cost a futex call and a context switch per request), and a
/// batch is one `write`. Lines reach stdout at most this much later.
const BATCH_INTERVAL: Duration = Duration::from_millis(20);

fn write_lines(rx: Receiver<Vec<u8>>) {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    loop {
        std::thread::sleep(BATCH_INTERVAL);
        let mut ok = true;
        let mut open = true;
        loop {
            match rx.try_recv() {
                Ok(line) => ok &= out.write_all(&line).is_ok(),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        // A failed write or flush means stdout is gone (closed pipe): nothing more can be logged.
        if !ok || out.flush().is_err() || !open || CLOSING.load(Ordering::Acquire) {
            return;
        }
    }
}

/// Writes the lines still queued and stops the writer (at exit, after the drain: requests answered last are
/// logged too). Lines logged after this are queued and never written.
pub fn finish_access_log() {
    CLOSING.store(true, Ordering::Release);
    let writer = WRITER.lock().ok().and_then(|mut w| w.take());
    if let Some(w) = writer {
        let _ = w.join();
    }
}

/// The access log, when one is on.
#[inline]
pub fn access_log() -> Option<&'static AccessLog> {
    ACCESS_LOG.get()
}

/// One attempt to a backend, as the access log reports it.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The endpoint.
    pub addr: SocketAddr,
    /// The response status, when a response header arrived.
    pub status: Option<u16>,
    /// From the start of the attempt to its response header (or its failure).
    pub took: Duration,
}

/// Why a request did not get a backend's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No route matched (404) or the host belongs to another listener (421).
    NoRoute,
    /// Connections to the backend failed.
    UpstreamConnectFailure,
    /// The backend did not answer in time.
    UpstreamTimeout,
    /// The backend has no endpoint that may be tried.
    NoHealthyUpstream,
    /// The client went away before the response was complete.
    DownstreamDisconnect,
}

impl Failure {
    /// The name the access log writes.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::NoRoute => "no_route",
            Failure::UpstreamConnectFailure => "upstream_connect_failure",
            Failure::UpstreamTimeout => "upstream_timeout",
            Failure::NoHealthyUpstream => "no_healthy_upstream",
            Failure::DownstreamDisconnect => "downstream_disconnect",
        }
    }
}

/// The JSON text of one value of an access-log line, written the first time a line needs it and reused after.
/// Route, backend and listener names are the same on every line that names them, so each is escaped once, by
/// the one that owns the name: a compiled rule, an upstream, a listener's app. Empty until then.
#[derive(Debug, Default)]
pub struct Rendered(OnceLock<Box<[u8]>>);

impl Rendered {
    /// The text, written by `render` on first use.
    fn get(&self, render: impl FnOnce(&mut Vec<u8>)) -> &[u8] {
        self.0.get_or_init(|| {
            let mut o = Vec::new();
            render(&mut o);
            o.into_boxed_slice()
        })
    }
}

/// The route a request matched.
#[derive(Debug)]
pub struct RouteRef<'a> {
    /// Object kind.
    pub kind: &'a str,
    /// Namespace.
    pub namespace: &'a str,
    /// Name.
    pub name: &'a str,
    /// Rule index in the object (absent for an Ingress default backend).
    pub rule: Option<usize>,
    /// This route's JSON object, kept by its rule.
    pub json: &'a Rendered,
}

/// The backend a request went to.
#[derive(Debug)]
pub struct BackendRef<'a> {
    /// Its key (`namespace/name:port`, and `#variant` when it has one).
    pub key: &'a BackendKey,
    /// The key's JSON string, kept by its upstream.
    pub json: &'a Rendered,
}

/// The fields of one access-log line. The JSON format writes them in this order, leaving out absent ones; the
/// user agent and referer are in the text format only.
#[derive(Debug)]
pub struct Record<'a> {
    /// When the response ended (written as RFC 3339, UTC).
    pub time: SystemTime,
    /// `X-Request-ID` of the request, or the one made for it.
    pub request_id: &'a str,
    /// The trace id of a W3C `traceparent` header.
    pub trace_id: Option<&'a str>,
    /// Client address and port.
    pub client: Option<SocketAddr>,
    /// Method.
    pub method: &'a str,
    /// Host header (or `:authority`).
    pub authority: &'a str,
    /// Path, and the query when `--access-log-query` is on.
    pub path: &'a str,
    /// `HTTP/1.1`, `HTTP/2.0`, ...
    pub protocol: &'static str,
    /// TLS server name the client sent.
    pub tls_sni: Option<&'a str>,
    /// TLS version.
    pub tls_version: Option<&'a str>,
    /// Status sent (499: the client left before a response was sent).
    pub status: u16,
    /// Request body bytes read.
    pub bytes_in: usize,
    /// Response body bytes sent.
    pub bytes_out: usize,
    /// From the request head to the end of the response.
    pub duration: Duration,
    /// Listener (`ADDRESS:PORT`).
    pub listener: &'a str,
    /// The listener's JSON string, kept by its app.
    pub listener_json: &'a Rendered,
    /// The route that answered.
    pub route: Option<RouteRef<'a>>,
    /// The backend.
    pub backend: Option<BackendRef<'a>>,
    /// The attempts to the backend's endpoints.
    pub upstreams: &'a [Attempt],
    /// Attempts made again.
    pub retries: u32,
    /// Why no backend answered, when none did.
    pub reason: Option<Failure>,
    /// `User-Agent` (text format only: see [`AccessLog::is_text`]).
    pub user_agent: &'a str,
    /// `Referer` (text format only).
    pub referer: &'a str,
}

impl AccessLog {
    /// Whether paths are logged with their query.
    pub fn with_query(&self) -> bool {
        self.query
    }

    /// Whether lines are in the text format, the one that writes the user agent and referer (the JSON format
    /// does not, so a request does not look them up).
    pub fn is_text(&self) -> bool {
        self.format == AccessLogFormat::Text
    }

    /// Queues one line (dropped and counted when the writer is behind).
    pub fn log(&self, r: &Record<'_>) {
        let line = match self.format {
            AccessLogFormat::Off => return,
            AccessLogFormat::Json => json_line(r),
            AccessLogFormat::Text => text_line(r),
        };
        if let Err(TrySendError::Full(_)) = self.tx.try_send(line) {
            if let Some(c) = &self.dropped {
                c.inc();
            }
        }
    }
}

/// One JSON object and a newline, written directly: serde's map serializer and `Display` for addresses and times
/// cost about twice as many instructions per request (docs/benchmarks.md, "What the JSON access log costs").
/// A key is written with the quotes around it and the value's opening quote, in one copy; route, backend and
/// listener come from their [`Rendered`] text.
fn json_line(r: &Record<'_>) -> Vec<u8> {
    let mut o = Vec::with_capacity(512);
    let mut n = itoa::Buffer::new();
    o.extend_from_slice(b"{\"time\":\"");
    // RFC 3339 in UTC has no byte that JSON escapes.
    push_time(&mut o, r.time);
    o.extend_from_slice(b"\",\"request_id\":\"");
    json_escape(&mut o, r.request_id);
    if let Some(t) = r.trace_id {
        o.extend_from_slice(b"\",\"trace_id\":\"");
        json_escape(&mut o, t);
    }
    if let Some(c) = r.client {
        o.extend_from_slice(b"\",\"client\":\"");
        json_addr(&mut o, c, &mut n);
    }
    o.extend_from_slice(b"\",\"method\":\"");
    json_escape(&mut o, r.method);
    o.extend_from_slice(b"\",\"authority\":\"");
    json_escape(&mut o, r.authority);
    o.extend_from_slice(b"\",\"path\":\"");
    json_escape(&mut o, r.path);
    o.extend_from_slice(b"\",\"protocol\":\"");
    json_escape(&mut o, r.protocol);
    if let Some(sni) = r.tls_sni {
        o.extend_from_slice(b"\",\"tls_sni\":\"");
        json_escape(&mut o, sni);
    }
    if let Some(v) = r.tls_version {
        o.extend_from_slice(b"\",\"tls_version\":\"");
        json_escape(&mut o, v);
    }
    o.extend_from_slice(b"\",\"status\":");
    o.extend_from_slice(n.format(r.status).as_bytes());
    o.extend_from_slice(b",\"bytes_in\":");
    o.extend_from_slice(n.format(r.bytes_in).as_bytes());
    o.extend_from_slice(b",\"bytes_out\":");
    o.extend_from_slice(n.format(r.bytes_out).as_bytes());
    o.extend_from_slice(b",\"duration\":");
    json_seconds(&mut o, r.duration, &mut n);
    o.extend_from_slice(b",\"listener\":");
    o.extend_from_slice(r.listener_json.get(|o| json_str(o, r.listener)));
    if let Some(route) = &r.route {
        o.extend_from_slice(b",\"route\":");
        o.extend_from_slice(route.json.get(|o| json_route(o, route)));
    }
    if let Some(b) = &r.backend {
        o.extend_from_slice(b",\"backend\":");
        o.extend_from_slice(b.json.get(|o| json_backend(o, b.key)));
    }
    if !r.upstreams.is_empty() {
        o.extend_from_slice(b",\"upstreams\":[");
        for (i, a) in r.upstreams.iter().enumerate() {
            o.extend_from_slice(if i > 0 {
                b",{\"addr\":\""
            } else {
                b"{\"addr\":\""
            });
            json_addr(&mut o, a.addr, &mut n);
            if let Some(s) = a.status {
                o.extend_from_slice(b"\",\"status\":");
                o.extend_from_slice(n.format(s).as_bytes());
                o.extend_from_slice(b",\"seconds\":");
            } else {
                o.extend_from_slice(b"\",\"seconds\":");
            }
            json_seconds(&mut o, a.took, &mut n);
            o.push(b'}');
        }
        o.push(b']');
    }
    o.extend_from_slice(b",\"retries\":");
    o.extend_from_slice(n.format(r.retries).as_bytes());
    if let Some(f) = r.reason {
        o.extend_from_slice(b",\"reason\":\"");
        o.extend_from_slice(f.as_str().as_bytes());
        o.push(b'"');
    }
    o.extend_from_slice(b"}\n");
    o
}

/// `{"kind":..,"namespace":..,"name":..,"rule":N}`, the rule left out when absent.
fn json_route(o: &mut Vec<u8>, route: &RouteRef<'_>) {
    o.extend_from_slice(b"{\"kind\":");
    json_str(o, route.kind);
    o.extend_from_slice(b",\"namespace\":");
    json_str(o, route.namespace);
    o.extend_from_slice(b",\"name\":");
    json_str(o, route.name);
    if let Some(rule) = route.rule {
        o.extend_from_slice(b",\"rule\":");
        o.extend_from_slice(itoa::Buffer::new().format(rule).as_bytes());
    }
    o.push(b'}');
}

/// `"namespace/name:port"`, and `#variant` before the closing quote when the key has one.
fn json_backend(o: &mut Vec<u8>, b: &BackendKey) {
    o.push(b'"');
    json_escape(o, &b.namespace);
    o.push(b'/');
    json_escape(o, &b.name);
    o.push(b':');
    o.extend_from_slice(itoa::Buffer::new().format(b.port).as_bytes());
    if !b.variant.is_empty() {
        o.push(b'#');
        json_escape(o, &b.variant);
    }
    o.push(b'"');
}

/// `s` as a JSON string, quotes included.
fn json_str(o: &mut Vec<u8>, s: &str) {
    o.push(b'"');
    json_escape(o, s);
    o.push(b'"');
}

/// The contents of a JSON string: `"`, `\` and control characters escaped, everything else (UTF-8 included) as is.
fn json_escape(o: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    if is_plain(b) {
        o.extend_from_slice(b);
        return;
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &c in b {
        match c {
            b'"' => o.extend_from_slice(b"\\\""),
            b'\\' => o.extend_from_slice(b"\\\\"),
            b'\n' => o.extend_from_slice(b"\\n"),
            b'\r' => o.extend_from_slice(b"\\r"),
            b'\t' => o.extend_from_slice(b"\\t"),
            0x08 => o.extend_from_slice(b"\\b"),
            0x0c => o.extend_from_slice(b"\\f"),
            c if c < 0x20 => {
                o.extend_from_slice(b"\\u00");
                o.push(HEX[usize::from(c >> 4)]);
                o.push(HEX[usize::from(c & 0xf)]);
            }
            c => o.push(c),
        }
    }
}

/// Whether no byte of `b` needs escaping in a JSON string (none is `"`, `\` or below 0x20). Values are short and
/// nearly always plain, so the check runs eight bytes at a time on a `u64`, the last word padded with a plain
/// byte, without a branch per byte.
fn is_plain(b: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // Non-zero when some byte of `w` is zero, or below `0x20` (exact as a yes/no, for any byte values).
    let has_zero = |w: u64| w.wrapping_sub(ONES) & !w & HIGHS;
    let special = |c: &[u8]| {
        let mut word = [b'a'; 8];
        word[..c.len()].copy_from_slice(c);
        let w = u64::from_ne_bytes(word);
        (w.wrapping_sub(ONES * 0x20) & !w & HIGHS)
            | has_zero(w ^ (ONES * u64::from(b'"')))
            | has_zero(w ^ (ONES * u64::from(b'\\')))
    };
    let mut chunks = b.chunks_exact(8);
    let mut found = 0;
    for c in &mut chunks {
        found |= special(c);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        found |= special(rest);
    }
    found == 0
}

/// `ADDRESS:PORT` (`[ADDRESS]:PORT` for IPv6): no byte that JSON escapes.
fn json_addr(o: &mut Vec<u8>, a: SocketAddr, n: &mut itoa::Buffer) {
    match a {
        SocketAddr::V4(v4) => {
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    o.push(b'.');
                }
                o.extend_from_slice(n.format(octet).as_bytes());
            }
            o.push(b':');
            o.extend_from_slice(n.format(v4.port()).as_bytes());
        }
        SocketAddr::V6(_) => {
            let _ = write!(o, "{a}");
        }
    }
}

/// A duration as a JSON number of seconds, to the nanosecond, without trailing zeros (`0.0123`, `2`).
fn json_seconds(o: &mut Vec<u8>, d: Duration, n: &mut itoa::Buffer) {
    o.extend_from_slice(n.format(d.as_secs()).as_bytes());
    push_fraction(o, d.subsec_nanos());
}

/// `.` and the nine digits of `nanos` without trailing zeros; nothing when `nanos` is zero (as jiff and Rust's
/// `f64` formatting write fractions).
fn push_fraction(o: &mut Vec<u8>, nanos: u32) {
    if nanos == 0 || nanos >= 1_000_000_000 {
        return;
    }
    // `1` and the nine digits, zero-padded; the `1` becomes the point.
    let mut n = itoa::Buffer::new();
    let digits = n.format(1_000_000_000 + nanos).as_bytes();
    let end = digits.iter().rposition(|&d| d != b'0').map_or(0, |i| i + 1);
    o.push(b'.');
    o.extend_from_slice(digits.get(1..end).unwrap_or_default());
}

thread_local! {
    /// The second of the last time written on this thread, and its `YYYY-MM-DDTHH:MM:SS` text: the calendar
    /// arithmetic runs once a second per thread, not once a line.
    static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
}

/// `t` as RFC 3339 in UTC with as many fraction digits as needed, as jiff writes a `Timestamp`
/// (`2026-12-03T11:00:00.5Z`).
fn push_time(o: &mut Vec<u8>, t: SystemTime) {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (cached, mut text) = SECOND.get();
    if cached != secs {
        let ts = i64::try_from(secs)
            .ok()
            .and_then(|s| jiff::Timestamp::from_second(s).ok())
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let mut w = std::io::Cursor::new(&mut text[..]);
        // Four-digit years (jiff's range ends at 9999) always fill the 19 bytes.
        if write!(w, "{}", ts.strftime("%Y-%m-%dT%H:%M:%S")).is_err() || w.position() != 19 {
            // Not reachable in jiff's range; written the slow way rather than wrong.
            let _ = write!(o, "{}", jiff::Timestamp::try_from(t).unwrap_or_default());
            return;
        }
        SECOND.set((secs, text));
    }
    o.extend_from_slice(&text);
    push_fraction(o, since.subsec_nanos());
    o.push(b'Z');
}

/// Writes `s` as nginx writes variables in a log line: `"` `\` and bytes outside printable ASCII as `\xHH`.
fn escaped(out: &mut Vec<u8>, s: &str) {
    for &b in s.as_bytes() {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = write!(out, "\\x{b:02X}");
        } else {
            out.push(b);
        }
    }
}

fn dash_or(out: &mut Vec<u8>, s: &str) {
    if s.is_empty() {
        out.push(b'-');
    } else {
        escaped(out, s);
    }
}

/// ingress-nginx's `log-format-upstream`:
/// `$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer"
/// "$http_user_agent" $request_length $request_time [$proxy_upstream_name] [$proxy_alternative_upstream_name]
/// $upstream_addr $upstream_response_length $upstream_response_time $upstream_status $req_id`.
/// `$remote_user` is `-`, `$request_length` is the body length, `$upstream_response_length` is `-` (not tracked
/// per attempt); lists of attempts are separated by `, ` as nginx does.
fn text_line(r: &Record<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let local = jiff::Zoned::now()
        .strftime("%d/%b/%Y:%H:%M:%S %z")
        .to_string();
    match r.client {
        Some(c) => {
            let _ = write!(out, "{} - - [{local}] \"", c.ip());
        }
        None => {
            let _ = write!(out, "- - - [{local}] \"");
        }
    }
    escaped(&mut out, r.method);
    out.push(b' ');
    escaped(&mut out, r.path);
    let _ = write!(out, " {}\" {} {} \"", r.protocol, r.status, r.bytes_out);
    dash_or(&mut out, r.referer);
    out.extend_from_slice(b"\" \"");
    dash_or(&mut out, r.user_agent);
    let _ = write!(out, "\" {} {:.3} [", r.bytes_in, r.duration.as_secs_f64());
    match &r.backend {
        Some(b) => escaped(&mut out, &b.key.to_string()),
        None => out.push(b'-'),
    }
    out.extend_from_slice(b"] [] ");
    if r.upstreams.is_empty() {
        out.extend_from_slice(b"- - - -");
    } else {
        let list = |out: &mut Vec<u8>, f: &dyn Fn(&Attempt, &mut Vec<u8>)| {
            for (i, a) in r.upstreams.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                f(a, out);
            }
        };
        list(&mut out, &|a, o| {
            let _ = write!(o, "{}", a.addr);
        });
        out.extend_from_slice(b" - ");
        list(&mut out, &|a, o| {
            let _ = write!(o, "{:.3}", a.took.as_secs_f64());
        });
        out.push(b' ');
        list(&mut out, &|a, o| match a.status {
            Some(s) => {
                let _ = write!(o, "{s}");
            }
            None => o.push(b'-'),
        });
    }
    out.push(b' ');
    escaped(&mut out, r.request_id);
    out.push(b'\n');
    out
}

/// A request id made here: 32 lowercase hex digits, as ingress-nginx's `$req_id`. Held inline (no allocation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RequestId([u8; 32]);

impl RequestId {
    /// A new random id.
    pub fn random() -> RequestId {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut id = [0u8; 32];
        for (pair, b) in id.chunks_exact_mut(2).zip(fastrand::u128(..).to_be_bytes()) {
            pair[0] = HEX[usize::from(b >> 4)];
            pair[1] = HEX[usize::from(b & 0xf)];
        }
        RequestId(id)
    }

    /// The id as a header value (`X-Request-ID` sent upstream), made from the bytes without a UTF-8 check.
    pub fn header_value(&self) -> HeaderValue {
        // Hex digits only: always a valid header value.
        HeaderValue::from_bytes(&self.0).unwrap_or(HeaderValue::from_static(""))
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        // Hex digits only: always UTF-8.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The trace id of a W3C `traceparent` value (`00-<32 hex>-<16 hex>-<2 hex>`), when well formed and not all zero.
pub fn trace_id(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.trim().split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex(version, 2) || version == "ff" || !hex(trace, 32) || !hex(parent, 16) || !hex(flags, 2)
    {
        return None;
    }
    if trace.bytes().all(|b| b == b'0') {
        return None;
    }
    Some(trace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend() -> BackendKey {
        BackendKey::new("shop", "web", 80)
    }

    /// An empty [`Rendered`] for one test record.
    fn leak() -> &'static Rendered {
        Box::leak(Box::default())
    }

    fn record<'a>(upstreams: &'a [Attempt], backend: &'a BackendKey) -> Record<'a> {
        Record {
            time: SystemTime::from("2026-12-03T11:00:00.5Z".parse::<jiff::Timestamp>().unwrap()),
            request_id: "abc",
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736"),
            client: Some("127.0.0.1:5555".parse().unwrap()),
            method: "GET",
            authority: "shop.example",
            path: "/a\"b",
            protocol: "HTTP/1.1",
            tls_sni: None,
            tls_version: None,
            status: 200,
            bytes_in: 0,
            bytes_out: 12,
            duration: Duration::from_micros(12_300),
            listener: "*:80",
            listener_json: leak(),
            route: Some(RouteRef {
                kind: "HTTPRoute",
                namespace: "shop",
                name: "web",
                rule: Some(0),
                json: leak(),
            }),
            backend: Some(BackendRef {
                key: backend,
                json: leak(),
            }),
            upstreams,
            retries: 1,
            reason: None,
            user_agent: "curl/8",
            referer: "",
        }
    }

    #[test]
    fn text_line_follows_the_ingress_nginx_format() {
        let a = [
            Attempt {
                addr: "10.0.0.1:8080".parse().unwrap(),
                status: None,
                took: Duration::from_millis(1),
            },
            Attempt {
                addr: "10.0.0.2:8080".parse().unwrap(),
                status: Some(200),
                took: Duration::from_millis(10),
            },
        ];
        let line = String::from_utf8(text_line(&record(&a, &backend()))).unwrap();
        assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
        assert!(
            line.ends_with(
                "] \"GET /a\\x22b HTTP/1.1\" 200 12 \"-\" \"curl/8\" 0 0.012 [shop/web:80] [] \
                 10.0.0.1:8080, 10.0.0.2:8080 - 0.001, 0.010 -, 200 abc\n"
            ),
            "{line}"
        );
        let none = String::from_utf8(text_line(&record(&[], &backend()))).unwrap();
        assert!(none.ends_with("[shop/web:80] [] - - - - abc\n"), "{none}");
    }

    fn json(r: &Record<'_>) -> serde_json::Value {
        let line = json_line(r);
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
        serde_json::from_slice(&line)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&line)))
    }

    #[test]
    fn json_has_the_fields() {
        let b = backend();
        let v = json(&record(&[], &b));
        assert_eq!(
            v,
            serde_json::json!({
                "time": "2026-12-03T11:00:00.5Z",
                "request_id": "abc",
                "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
                "client": "127.0.0.1:5555",
                "method": "GET",
                "authority": "shop.example",
                "path": "/a\"b",
                "protocol": "HTTP/1.1",
                "status": 200,
                "bytes_in": 0,
                "bytes_out": 12,
                "duration": 0.0123,
                "listener": "*:80",
                "route": {"kind": "HTTPRoute", "namespace": "shop", "name": "web", "rule": 0},
                "backend": "shop/web:80",
                "retries": 1
            })
        );
        let a = [
            Attempt {
                addr: "[::1]:8080".parse().unwrap(),
                status: None,
                took: Duration::from_millis(250),
            },
            Attempt {
                addr: "10.0.0.2:65535".parse().unwrap(),
                status: Some(503),
                took: Duration::from_nanos(100),
            },
        ];
        let mut variant = backend();
        variant.variant = "client-cert=shop/c".into();
        let mut r = record(&a, &variant);
        r.client = None;
        r.trace_id = None;
        r.tls_sni = Some("shop.example");
        r.tls_version = Some("TLSv1.3");
        r.route = Some(RouteRef {
            kind: "Ingress",
            namespace: "shop",
            name: "web",
            rule: None,
            json: leak(),
        });
        r.reason = Some(Failure::UpstreamTimeout);
        r.duration = Duration::from_secs(2);
        let v = json(&r);
        assert!(v.get("client").is_none() && v.get("trace_id").is_none());
        assert_eq!(v["tls_sni"], "shop.example");
        assert_eq!(v["tls_version"], "TLSv1.3");
        assert_eq!(
            v["route"],
            serde_json::json!({"kind": "Ingress", "namespace": "shop", "name": "web"})
        );
        assert_eq!(v["backend"], "shop/web:80#client-cert=shop/c");
        assert_eq!(
            v["upstreams"],
            serde_json::json!([
                {"addr": "[::1]:8080", "seconds": 0.25},
                {"addr": "10.0.0.2:65535", "status": 503, "seconds": 1e-7}
            ])
        );
        assert_eq!(v["reason"], "upstream_timeout");
        assert_eq!(v["duration"], 2);
        assert!(v.get("user_agent").is_none() && v.get("referer").is_none());
    }

    #[test]
    fn rendered_text_is_written_once() {
        let r = Rendered::default();
        let calls = Cell::new(0);
        let render = |o: &mut Vec<u8>| {
            calls.set(calls.get() + 1);
            o.extend_from_slice(b"\"x\"");
        };
        assert_eq!(r.get(render), b"\"x\"");
        assert_eq!(r.get(render), b"\"x\"");
        assert_eq!(calls.get(), 1);
    }

    #[test]
    fn json_strings_are_escaped() {
        let b = backend();
        let nasty = [
            "plain",
            "",
            "quote \" and backslash \\",
            "controls \u{0}\u{1}\u{8}\t\n\u{b}\u{c}\r\u{1f} end",
            "unicode é ✓ 😀 and DEL \u{7f}",
            "a long value without anything to escape, longer than one vector of bytes: 0123456789abcdef",
        ];
        for s in nasty {
            let mut r = record(&[], &b);
            r.path = s;
            r.authority = s;
            r.request_id = s;
            // Route, backend and listener are rendered once per value: fresh ones for each value here.
            r.listener = s;
            r.listener_json = leak();
            r.route = Some(RouteRef {
                kind: "HTTPRoute",
                namespace: s,
                name: s,
                rule: Some(3),
                json: leak(),
            });
            let mut key = backend();
            key.name = s.into();
            key.variant = s.into();
            r.backend = Some(BackendRef {
                key: &key,
                json: leak(),
            });
            let v = json(&r);
            assert_eq!(v["path"], s);
            assert_eq!(v["authority"], s);
            assert_eq!(v["request_id"], s);
            assert_eq!(v["listener"], s);
            assert_eq!(
                v["route"],
                serde_json::json!({"kind": "HTTPRoute", "namespace": s, "name": s, "rule": 3})
            );
            let with_variant = if s.is_empty() {
                "shop/:80".to_string()
            } else {
                format!("shop/{s}:80#{s}")
            };
            assert_eq!(v["backend"], with_variant.as_str());
        }
    }

    #[test]
    fn special_bytes_are_found_at_every_offset() {
        for len in 0..20 {
            let plain = "a".repeat(len);
            assert!(is_plain(plain.as_bytes()));
            for at in 0..len {
                for special in [b'"', b'\\', 0, 0x1f, b'\n'] {
                    let mut b = plain.clone().into_bytes();
                    b[at] = special;
                    assert!(!is_plain(&b), "{len} {at} {special}");
                }
                // Bytes just around the special ones, and UTF-8, are plain.
                for ok in [0x20, b'!', b'#', b'[', b']', 0x7f, 0x80, 0xff] {
                    let mut b = plain.clone().into_bytes();
                    b[at] = ok;
                    assert!(is_plain(&b), "{len} {at} {ok}");
                }
            }
        }
    }

    #[test]
    fn times_are_written_as_jiff_writes_them() {
        let base: jiff::Timestamp = "2026-12-31T23:59:58Z".parse().unwrap();
        let mut last = None;
        for nanos in [
            0u64,
            1,
            500_000_000,
            123_456_789,
            999_999_999,
            1_000_000_000,
            1_000_000_010,
            2_070_368_330,
        ] {
            let t = SystemTime::from(base) + Duration::from_nanos(nanos);
            let mut o = Vec::new();
            push_time(&mut o, t);
            let want = jiff::Timestamp::try_from(t).unwrap().to_string();
            assert_eq!(String::from_utf8(o).unwrap(), want);
            last = Some(want);
        }
        assert_eq!(last.as_deref(), Some("2027-01-01T00:00:00.07036833Z"));
    }

    #[test]
    fn seconds_are_exact() {
        let text = |d: Duration| {
            let mut o = Vec::new();
            json_seconds(&mut o, d, &mut itoa::Buffer::new());
            String::from_utf8(o).unwrap()
        };
        assert_eq!(text(Duration::ZERO), "0");
        assert_eq!(text(Duration::from_nanos(20_759_728)), "0.020759728");
        assert_eq!(text(Duration::from_millis(1500)), "1.5");
        assert_eq!(text(Duration::from_nanos(100)), "0.0000001");
        assert_eq!(text(Duration::from_secs(86_400)), "86400");
    }

    #[test]
    fn trace_ids() {
        assert_eq!(
            trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            trace_id("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(trace_id("00-4bf92f35-00f067aa0ba902b7-01"), None);
        assert_eq!(trace_id("garbage"), None);
        let id = RequestId::random();
        assert_eq!(id.as_str().len(), 32);
        assert!(
            id.as_str()
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
            "{id:?}"
        );
        assert_ne!(id, RequestId::random());
        assert_eq!(id.header_value().to_str().ok(), Some(id.as_str()));
        // The digits are the random number's, most significant first.
        fastrand::seed(7);
        let n = fastrand::u128(..);
        fastrand::seed(7);
        assert_eq!(RequestId::random().as_str(), format!("{n:032x}"));
    }
}
