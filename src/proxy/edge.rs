//! The hostile edge: the limits and checks between a client and the routing table (`docs/hardening.md` lists
//! each one, its flag, its default and the test that checks it).
//!
//! - Per connection ([`EdgeIo`], wrapped around every accepted HTTP connection): the header and idle timeouts,
//!   and the strict check of every HTTP/1 request head ([`head::HeadScanner`]: smuggling shapes, 400 / 414 /
//!   431 / 505), before Pingora parses it.
//! - Per listener ([`ListenerEdge`], in the one accept loop of `proxy::listeners`): the connection limit, on
//!   every listener served over TCP (HTTP, HTTPS, TLS, TCP), and the TLS handshake held to the header timeout on
//!   listeners that terminate TLS (HTTPS, and TLS listeners' Terminate routes).
//! - Per request ([`check_request`], [`limit_body`], [`count_body`], [`request_done`], called from
//!   `proxy::http`): HTTP/2 sizes, `Content-Length` and `Transfer-Encoding` as parsed, the path normalization of
//!   [`super::path`] that matching, rewrites and the upstream request see, and after routing the body limit
//!   ([`body_limit`]: `--max-request-body`, or the rule's ingress-nginx `proxy-body-size`; 413 by
//!   `Content-Length` at once, streamed bodies counted as they arrive).
//! - HTTP/2 ([`EdgeSettings::h2_options`]): concurrent streams, header list size, and the `h2` crate's reset
//!   limits; CONTINUATION floods are bounded by the header list size; rapid reset by [`h2::ResetWatch`] in
//!   [`EdgeIo`].
//!
//! Counters of everything refused are in [`STATS`] (admin API `GET /edge`).

mod conn;
pub mod h2;
pub mod head;

pub use conn::{ConnLimits, EdgeIo};

use super::path::{self, EscapedSlashes, Normalized};
use bytes::Bytes;
use head::HeadLimits;
use http::header::{CONTENT_LENGTH, LOCATION, TRANSFER_ENCODING};
use http::StatusCode;
use pingora::apps::HttpServerOptions;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::protocols::http::v2::server::H2Options;
use pingora::protocols::Stream;
use prometheus::IntGauge;
use serde::Serialize;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The limits of the edge, from the command line (`config::EdgeArgs`). The [`Default`] is the documented default
/// of every flag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeSettings {
    /// Longest HTTP/1 request line, or HTTP/2 `:path`, in bytes (414 beyond).
    pub max_request_line: usize,
    /// Largest HTTP/1 request head, or HTTP/2 header list (RFC 9113 SETTINGS_MAX_HEADER_LIST_SIZE), in bytes
    /// (431 beyond).
    pub max_request_headers: usize,
    /// Most header fields in a request (431 beyond).
    pub max_header_count: usize,
    /// Largest request body in bytes, `None` for no limit (413 beyond).
    pub max_body: Option<u64>,
    /// The most any rule's own body limit may allow (`proxy-body-size`, including its `0`), `None` for no cap.
    pub max_body_ceiling: Option<u64>,
    /// How long a request head may take (from the accept for the first request, from its first byte after).
    pub header_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request (HTTP/1), or stay without streams
    /// (HTTP/2).
    pub idle_timeout: Duration,
    /// Most connections open at once on one listener; more are closed at once. 0: no limit.
    pub max_connections: usize,
    /// Most requests on one HTTP/1 connection before it is closed. 0: no limit.
    pub max_requests_per_connection: u32,
    /// HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 streams the client reset before the proxy accepted them, queued at most (rapid reset); beyond,
    /// the connection is closed with ENHANCE_YOUR_CALM.
    pub h2_max_pending_reset_streams: usize,
    /// HTTP/2 streams the proxy may reset for the client's protocol errors before closing the connection.
    pub h2_max_local_error_resets: usize,
    /// HTTP/2 streams a connection opens before the premature-reset rule applies to it (0: never).
    pub h2_rapid_reset_streams: u64,
    /// What to do with `%2F`, `%5C` and `\` in paths.
    pub escaped_slashes: EscapedSlashes,
    /// What to do with request header names that contain `_`.
    pub underscore_headers: UnderscoreHeaders,
    /// HTTP/1.1 `Upgrade` protocols forwarded to backends (lowercase; `*`: any but `h2c`). Others are forwarded
    /// as plain requests, without the upgrade.
    pub upgrade_protocols: Vec<String>,
}

impl EdgeSettings {
    /// How a request that asks to upgrade to `protocol` (its `Upgrade` value) goes upstream: WebSocket through
    /// Pingora's own handling, other listed protocols with the handshake preserved, the rest not upgraded.
    /// `h2c` never: a client that upgrades a connection to HTTP/2 cleartext speaks to the backend directly, past
    /// routing and every per-request check (h2c smuggling).
    pub fn upgrade_policy(&self, protocol: &[u8]) -> pingora::upstreams::peer::H1UpgradePolicy {
        use pingora::upstreams::peer::H1UpgradePolicy;
        let listed = |p: &[u8]| {
            self.upgrade_protocols
                .iter()
                .any(|l| l == "*" || l.as_bytes().eq_ignore_ascii_case(p))
        };
        let protocol = protocol.trim_ascii();
        if protocol.eq_ignore_ascii_case(b"h2c") || !listed(protocol) {
            H1UpgradePolicy::Deny
        } else if protocol.eq_ignore_ascii_case(b"websocket") {
            H1UpgradePolicy::WebSocketOnly
        } else {
            H1UpgradePolicy::Preserve
        }
    }
}

/// What to do with a request header whose name contains `_` (`X_Forwarded_For`). CGI, PHP, WSGI and other
/// backends read `_` and `-` alike, so such a header can pass for one the proxy sets or checks. The names follow
/// Envoy's `headers_with_underscores_action`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum UnderscoreHeaders {
    /// Forward them (Envoy's default).
    Allow,
    /// Remove them before routing and forwarding (nginx's default, `underscores_in_headers off`; ingress-nginx's
    /// `enable-underscores-in-headers: "false"`).
    #[default]
    Drop,
    /// Refuse the request with 400 (Envoy's edge recommendation).
    Reject,
}

impl Default for EdgeSettings {
    fn default() -> Self {
        EdgeSettings {
            max_request_line: 8 * 1024,
            max_request_headers: 60 * 1024,
            max_header_count: 100,
            max_body: Some(1024 * 1024),
            max_body_ceiling: None,
            header_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(75),
            max_connections: 10_000,
            max_requests_per_connection: 1000,
            h2_max_concurrent_streams: 100,
            h2_max_pending_reset_streams: 20,
            h2_max_local_error_resets: 1024,
            h2_rapid_reset_streams: 500,
            escaped_slashes: EscapedSlashes::UnescapeAndRedirect,
            underscore_headers: UnderscoreHeaders::Drop,
            upgrade_protocols: vec!["websocket".to_string()],
        }
    }
}

impl EdgeSettings {
    /// The per-connection part.
    pub fn conn_limits(&self) -> ConnLimits {
        ConnLimits {
            head: HeadLimits {
                max_request_line: self.max_request_line,
                max_head: self.max_request_headers,
                max_headers: self.max_header_count,
            },
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
            h2_rapid_reset_streams: self.h2_rapid_reset_streams,
        }
    }

    /// The HTTP/2 settings of downstream connections: Pingora's bounded defaults with our limits.
    pub fn h2_options(&self) -> H2Options {
        let mut o = pingora::protocols::http::v2::server::default_h2_options();
        o.max_concurrent_streams(self.h2_max_concurrent_streams);
        o.max_header_list_size(u32::try_from(self.max_request_headers).unwrap_or(u32::MAX));
        o.max_pending_accept_reset_streams(self.h2_max_pending_reset_streams);
        o.max_local_error_reset_streams(Some(self.h2_max_local_error_resets));
        o
    }

    /// Sets the connection options Pingora applies itself: requests per HTTP/1 connection, HTTP/2 idle timeout.
    pub fn apply_server_options(&self, options: &mut HttpServerOptions) {
        // Pingora's limit counts reuses (a connection serves one request more than it says).
        options.keepalive_request_limit = self.max_requests_per_connection.checked_sub(1);
        options.h2_idle_timeout = Some(self.idle_timeout);
    }
}

/// Counters of what the edge refused or changed, since the process started. Invariant: every refusal is counted
/// once, by the status the client got.
#[derive(Debug)]
pub struct Stats {
    connections_refused: AtomicU64,
    header_timeouts: AtomicU64,
    idle_timeouts: AtomicU64,
    handshake_timeouts: AtomicU64,
    h2_rapid_resets: AtomicU64,
    status_400: AtomicU64,
    status_408: AtomicU64,
    status_413: AtomicU64,
    status_414: AtomicU64,
    status_431: AtomicU64,
    status_505: AtomicU64,
    paths_normalized: AtomicU64,
    paths_redirected: AtomicU64,
    underscore_headers_dropped: AtomicU64,
}

/// The process-wide counters.
pub static STATS: Stats = Stats::new();

/// A copy of [`Stats`] for the admin API.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Connections closed at once because their listener had `--max-connections-per-listener` open.
    pub connections_refused: u64,
    /// Connections closed because a request head did not arrive within `--header-timeout`.
    pub header_timeouts: u64,
    /// Kept-alive connections closed after `--idle-timeout` without a request.
    pub idle_timeouts: u64,
    /// TLS handshakes not done within `--header-timeout`.
    pub handshake_timeouts: u64,
    /// HTTP/2 connections closed for cancelling most of their streams as soon as they opened them.
    pub h2_rapid_resets: u64,
    /// Requests refused, by the status they got.
    pub refused: RefusedByStatus,
    /// Requests whose path was normalized before matching.
    pub paths_normalized: u64,
    /// Requests redirected to their path with escaped slashes decoded.
    pub paths_redirected: u64,
    /// Requests that had header names with `_` removed (`--underscore-headers drop`).
    pub underscore_headers_dropped: u64,
}

/// Refused requests by status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RefusedByStatus {
    /// Malformed or ambiguous requests.
    #[serde(rename = "400")]
    pub bad_request: u64,
    /// Heads that started but did not finish within the header timeout.
    #[serde(rename = "408")]
    pub timeout: u64,
    /// Bodies over the limit.
    #[serde(rename = "413")]
    pub body_too_large: u64,
    /// Request lines over the limit.
    #[serde(rename = "414")]
    pub uri_too_long: u64,
    /// Heads over the size or count limit.
    #[serde(rename = "431")]
    pub headers_too_large: u64,
    /// HTTP versions other than 1.0 and 1.1 in a request line.
    #[serde(rename = "505")]
    pub version: u64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Stats {
    const fn new() -> Self {
        Stats {
            connections_refused: AtomicU64::new(0),
            header_timeouts: AtomicU64::new(0),
            idle_timeouts: AtomicU64::new(0),
            handshake_timeouts: AtomicU64::new(0),
            h2_rapid_resets: AtomicU64::new(0),
            status_400: AtomicU64::new(0),
            status_408: AtomicU64::new(0),
            status_413: AtomicU64::new(0),
            status_414: AtomicU64::new(0),
            status_431: AtomicU64::new(0),
            status_505: AtomicU64::new(0),
            paths_normalized: AtomicU64::new(0),
            paths_redirected: AtomicU64::new(0),
            underscore_headers_dropped: AtomicU64::new(0),
        }
    }

    /// Counts a request refused with `status`.
    pub fn refused_head(&self, status: u16) {
        match status {
            408 => bump(&self.status_408),
            413 => bump(&self.status_413),
            414 => bump(&self.status_414),
            431 => bump(&self.status_431),
            505 => bump(&self.status_505),
            _ => bump(&self.status_400),
        }
    }

    /// Counts a connection closed by the header timeout.
    pub fn header_timeout(&self) {
        bump(&self.header_timeouts);
    }

    /// Counts a kept-alive connection closed by the idle timeout.
    pub fn idle_timeout(&self) {
        bump(&self.idle_timeouts);
    }

    /// Counts an HTTP/2 connection closed for rapid reset.
    pub fn h2_rapid_reset(&self) {
        bump(&self.h2_rapid_resets);
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            connections_refused: get(&self.connections_refused),
            header_timeouts: get(&self.header_timeouts),
            idle_timeouts: get(&self.idle_timeouts),
            handshake_timeouts: get(&self.handshake_timeouts),
            h2_rapid_resets: get(&self.h2_rapid_resets),
            refused: RefusedByStatus {
                bad_request: get(&self.status_400),
                timeout: get(&self.status_408),
                body_too_large: get(&self.status_413),
                uri_too_long: get(&self.status_414),
                headers_too_large: get(&self.status_431),
                version: get(&self.status_505),
            },
            paths_normalized: get(&self.paths_normalized),
            paths_redirected: get(&self.paths_redirected),
            underscore_headers_dropped: get(&self.underscore_headers_dropped),
        }
    }
}

/// One connection admitted by a listener; its slot is given back when this is dropped.
#[derive(Debug)]
pub struct Admitted {
    open: Option<Arc<AtomicUsize>>,
    /// The listener's `portcullis_open_connections` child, taken back on drop.
    gauge: Option<IntGauge>,
    at: Instant,
}

impl Admitted {
    /// When the connection was accepted.
    pub fn accepted_at(&self) -> Instant {
        self.at
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(open) = &self.open {
            open.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(g) = &self.gauge {
            g.dec();
        }
    }
}

/// The edge of one listener: its connection limit, its TLS handshake timeout, and (HTTP listeners) the settings
/// its connections are wrapped with. Clones share the count of open connections. [`ListenerEdge::none`] checks
/// nothing (the admin API).
#[derive(Clone, Debug)]
pub struct ListenerEdge {
    settings: Option<Arc<EdgeSettings>>,
    open: Arc<AtomicUsize>,
    h2c: bool,
    gauge: Option<IntGauge>,
}

impl ListenerEdge {
    /// The edge of a listener with `settings`; `h2c` when it accepts HTTP/2 with prior knowledge.
    pub fn new(settings: Arc<EdgeSettings>, h2c: bool) -> Self {
        ListenerEdge {
            settings: Some(settings),
            open: Arc::new(AtomicUsize::new(0)),
            h2c,
            gauge: None,
        }
    }

    /// Also counts the connections open in `gauge` (the listener's `portcullis_open_connections` child), whatever
    /// the limit.
    pub fn counted(mut self, gauge: IntGauge) -> Self {
        self.gauge = Some(gauge);
        self
    }

    /// No limits and no checks.
    pub fn none() -> Self {
        ListenerEdge {
            settings: None,
            open: Arc::new(AtomicUsize::new(0)),
            h2c: false,
            gauge: None,
        }
    }

    /// Connections of this listener open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Admits a just-accepted connection, or `None` (counted) when the listener already has its maximum open:
    /// the caller closes it at once.
    pub fn admit(&self) -> Option<Admitted> {
        let at = Instant::now();
        let max = self.settings.as_ref().map_or(0, |s| s.max_connections);
        let open = if max == 0 {
            None
        } else if self.open.fetch_add(1, Ordering::Relaxed) >= max {
            self.open.fetch_sub(1, Ordering::Relaxed);
            bump(&STATS.connections_refused);
            return None;
        } else {
            Some(self.open.clone())
        };
        if let Some(g) = &self.gauge {
            g.inc();
        }
        Some(Admitted {
            open,
            gauge: self.gauge.clone(),
            at,
        })
    }

    /// Wraps a connection accepted at `accepted_at` (and, for TLS, handshaken) in an [`EdgeIo`].
    pub fn wrap(&self, io: Stream, accepted_at: Instant) -> Stream {
        match &self.settings {
            Some(s) => Box::new(EdgeIo::new(
                io,
                s.conn_limits(),
                &STATS,
                accepted_at,
                self.h2c,
            )),
            None => io,
        }
    }

    /// Runs a TLS handshake within the header timeout, which counts from `accepted_at`; `None` when it ran out.
    pub async fn handshake<T>(
        &self,
        accepted_at: Instant,
        f: impl Future<Output = T>,
    ) -> Option<T> {
        let Some(s) = &self.settings else {
            return Some(f.await);
        };
        // The handshake, which owns the connection, is dropped (and the connection closed) only when this
        // returns, after the timeout is counted: a client that sees the close then sees the count.
        let mut f = std::pin::pin!(f);
        match tokio::time::timeout_at(accepted_at + s.header_timeout, f.as_mut()).await {
            Ok(v) => Some(v),
            Err(_) => {
                bump(&STATS.handshake_timeouts);
                None
            }
        }
    }
}

/// Per-request state of the edge checks (in the proxy's request context).
#[derive(Debug, Default)]
pub struct RequestState {
    /// The declared `Content-Length`, once [`check_request`] has checked it.
    declared: Option<u64>,
    /// The body limit of this request, once routing has chosen it ([`limit_body`]).
    body_limit: Option<BodyLimit>,
    /// The body passed the limit (counted once; every later chunk, of any attempt, is refused too).
    body_refused: bool,
}

/// The largest body one request may send, and which setting said so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyLimit {
    /// The most body bytes.
    pub bytes: u64,
    /// Where the limit comes from.
    pub source: BodyLimitSource,
}

/// The setting a body limit comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyLimitSource {
    /// `--max-request-body`.
    Edge,
    /// The rule's ingress-nginx `proxy-body-size` (an annotation, or the ingress-nginx profile's default).
    Ingress,
    /// `--max-request-body-ceiling`, which capped a larger limit.
    Ceiling,
}

impl BodyLimitSource {
    fn reason(self) -> &'static str {
        match self {
            BodyLimitSource::Edge => "request body larger than --max-request-body",
            BodyLimitSource::Ingress => "request body larger than proxy-body-size",
            BodyLimitSource::Ceiling => "request body larger than --max-request-body-ceiling",
        }
    }
}

/// The body limit of a request whose rule says `rule` (the policy's `proxy-body-size`: `None` when the rule has
/// none, `Some(0)` for no limit). A rule's own value replaces `--max-request-body`, larger or smaller, as nginx's
/// location-level `client_max_body_size` replaces the server-level one (ingress-nginx writes the annotation
/// there); a rule without one gets `--max-request-body`. `--max-request-body-ceiling` then caps whatever came out
/// (a rule's `0` too), so an operator can bound what tenants' annotations allow. `None`: no limit.
pub fn body_limit(settings: &EdgeSettings, rule: Option<u64>) -> Option<BodyLimit> {
    let limit = match rule {
        Some(0) => None,
        Some(bytes) => Some(BodyLimit {
            bytes,
            source: BodyLimitSource::Ingress,
        }),
        None => settings.max_body.map(|bytes| BodyLimit {
            bytes,
            source: BodyLimitSource::Edge,
        }),
    };
    match (limit, settings.max_body_ceiling) {
        (Some(l), Some(c)) if l.bytes <= c => Some(l),
        (_, Some(c)) => Some(BodyLimit {
            bytes: c,
            source: BodyLimitSource::Ceiling,
        }),
        (l, None) => l,
    }
}

/// A `Content-Length` value as RFC 9110 §8.6 writes it: one or more digits, nothing else.
fn content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// The checks of a request whose head has been parsed, before it is routed: answers the request itself (and
/// returns `Ok(true)`) when it is refused or redirected; otherwise leaves the normalized path in the request.
pub async fn check_request(
    settings: &EdgeSettings,
    session: &mut Session,
    state: &mut RequestState,
) -> Result<bool> {
    if !session.is_http2() {
        // HTTP/1.1 pipelining (RFC 9112 §9.3.2): Pingora keeps bytes the client sent after this request, to
        // parse as the next one, only where EdgeIo scanned them as the next head, that is after a request
        // whose body end the head tells (not chunked, not an upgrade or CONNECT: EdgeIo's `Framing::Opaque`).
        // Otherwise such bytes close the connection after the response.
        let req = session.req_header();
        let opaque = req.headers.contains_key(TRANSFER_ENCODING)
            || req.headers.contains_key(http::header::UPGRADE)
            || req.method == http::Method::CONNECT;
        let scanned = session.stream().and_then(EdgeIo::of).is_some();
        session.set_pipelining_enabled(scanned && !opaque);
    }
    let req = session.req_header();
    if session.is_http2() {
        // HTTP/1 heads were measured byte by byte in EdgeIo; HTTP/2 header lists are bounded by the h2 crate
        // (which answers 431 itself), the count and the path here.
        let target = req.uri.path_and_query().map_or(0, |p| p.as_str().len());
        if target > settings.max_request_line {
            return refuse(session, 414, "request target too long").await;
        }
        if req.headers.len() > settings.max_header_count {
            return refuse(session, 431, "too many header fields").await;
        }
    }
    if !req.raw_path_is_utf8() {
        return refuse(session, 400, "request target is not UTF-8").await;
    }
    // One Content-Length, a plain number (Pingora accepts "1, 1" and repeated equal values).
    let mut lengths = req.headers.get_all(CONTENT_LENGTH).iter();
    let length = match (lengths.next(), lengths.next()) {
        (None, _) => None,
        (Some(v), None) => match content_length(v.as_bytes()) {
            Some(n) => Some(n),
            None => return refuse(session, 400, "invalid Content-Length").await,
        },
        (Some(_), Some(_)) => return refuse(session, 400, "Content-Length more than once").await,
    };
    // `chunked` at most once (RFC 9112 §6.1; Pingora checks that it is the last coding).
    let chunked = req
        .headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"))
        .count();
    if chunked > 1 {
        return refuse(session, 400, "chunked applied more than once").await;
    }
    state.declared = length;

    match settings.underscore_headers {
        UnderscoreHeaders::Allow => {}
        _ if !req.headers.keys().any(|k| k.as_str().contains('_')) => {}
        UnderscoreHeaders::Reject => {
            return refuse(session, 400, "header name with an underscore").await;
        }
        UnderscoreHeaders::Drop => {
            let names: Vec<http::HeaderName> = req
                .headers
                .keys()
                .filter(|k| k.as_str().contains('_'))
                .cloned()
                .collect();
            let head = session.req_header_mut();
            for name in &names {
                head.remove_header(name);
            }
            bump(&STATS.underscore_headers_dropped);
        }
    }

    match path::normalize(session.req_header().uri.path(), settings.escaped_slashes) {
        Ok(Normalized::Unchanged) => Ok(false),
        Ok(Normalized::Changed(p)) => {
            bump(&STATS.paths_normalized);
            if set_path(session, &p).is_err() {
                return refuse(session, 400, "invalid path").await;
            }
            Ok(false)
        }
        Ok(Normalized::Redirect(p)) => {
            bump(&STATS.paths_redirected);
            let mut location = p;
            if let Some(q) = session.req_header().uri.query() {
                location.push('?');
                location.push_str(q);
            }
            redirect(session, &location).await
        }
        Err(e) => refuse(session, 400, &e.to_string()).await,
    }
}

/// Replaces the path of the request (keeping scheme, authority and query).
fn set_path(session: &mut Session, p: &str) -> std::result::Result<(), http::Error> {
    let req = session.req_header_mut();
    let pq = match req.uri.query() {
        Some(q) => format!("{p}?{q}"),
        None => p.to_string(),
    };
    let mut parts = req.uri.clone().into_parts();
    parts.path_and_query = Some(http::uri::PathAndQuery::try_from(pq)?);
    let uri = http::Uri::from_parts(parts)?;
    req.set_uri(uri);
    Ok(())
}

/// Sets the body limit of a routed request ([`body_limit`]); answers 413 itself (and returns `Ok(true)`) when
/// the declared `Content-Length` is already over it, before anything is forwarded.
pub async fn limit_body(
    session: &mut Session,
    state: &mut RequestState,
    limit: Option<BodyLimit>,
) -> Result<bool> {
    state.body_limit = limit;
    match (limit, state.declared) {
        (Some(l), Some(n)) if n > l.bytes => refuse(session, 413, l.source.reason()).await,
        _ => Ok(false),
    }
}

/// Checks the body against the request's limit as it arrives; an error (the client gets 413) once it is passed.
/// The bytes are Pingora's count of body bytes read from the client, so a body sent again to another endpoint
/// (a retry) is not counted twice. The error is the client's ([`ErrorSource::Downstream`]), which
/// `proxy::http` never retries; and a request over its limit stays refused on any later attempt. The bytes of
/// an upgraded connection (WebSocket) are not a body and are not counted.
pub fn count_body(
    session: &mut Session,
    state: &mut RequestState,
    chunk: Option<&Bytes>,
) -> Result<()> {
    let (Some(limit), Some(_)) = (state.body_limit, chunk) else {
        return Ok(());
    };
    if session.was_upgraded() {
        return Ok(());
    }
    if state.body_refused || session.body_bytes_read() as u64 > limit.bytes {
        if !state.body_refused {
            state.body_refused = true;
            STATS.refused_head(413);
            linger(session);
        }
        let mut e = Error::explain(HTTPStatus(413), limit.source.reason());
        e.esource = ErrorSource::Downstream;
        e.set_retry(false);
        return Err(e);
    }
    Ok(())
}

/// A request is over (its response sent or failed). With its body read in full, [`EdgeIo`] counts it answered;
/// otherwise the connection is not reused, so that body bytes are never read as a head.
pub fn request_done(session: &mut Session) {
    if session.is_http2() {
        return;
    }
    let body_done = session.is_body_done();
    match session.stream().and_then(EdgeIo::of) {
        Some(io) if body_done => io.request_answered(),
        Some(_) => session.set_keepalive(None),
        None => {}
    }
}

/// Asks the connection to drain before it closes, so the client reads the refusal.
fn linger(session: &Session) {
    if let Some(io) = session.stream().and_then(EdgeIo::of) {
        io.linger_on_close();
    }
}

/// Answers `status` with a short text body and closes the connection.
async fn refuse(session: &mut Session, status: u16, reason: &str) -> Result<bool> {
    STATS.refused_head(status);
    tracing::debug!(status, reason, "request refused");
    session.set_keepalive(None);
    linger(session);
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let body = Bytes::from(format!(
        "{} {}\n",
        code.as_u16(),
        code.canonical_reason().unwrap_or("")
    ));
    let mut resp = ResponseHeader::build(code, Some(4))?;
    super::http::add_server_header(&mut resp)?;
    resp.insert_header("content-type", "text/plain; charset=utf-8")?;
    resp.insert_header("content-length", body.len().to_string())?;
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(resp), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(true)
}

/// Answers 307 to `location` (the path with its escaped slashes decoded).
async fn redirect(session: &mut Session, location: &str) -> Result<bool> {
    let mut resp = ResponseHeader::build(StatusCode::TEMPORARY_REDIRECT, Some(3))?;
    super::http::add_server_header(&mut resp)?;
    resp.insert_header(LOCATION, location)?;
    resp.insert_header("content-length", "0")?;
    session.write_response_header(Box::new(resp), true).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_is_digits_only() {
        assert_eq!(content_length(b"0"), Some(0));
        assert_eq!(content_length(b"1234"), Some(1234));
        for bad in [
            &b""[..],
            b"1, 1",
            b" 1",
            b"+1",
            b"-1",
            b"1a",
            b"99999999999999999999",
        ] {
            assert_eq!(
                content_length(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_rules_body_size_replaces_the_edge_default() {
        let s = EdgeSettings {
            max_body: Some(8192),
            ..EdgeSettings::default()
        };
        let edge = |bytes| {
            Some(BodyLimit {
                bytes,
                source: BodyLimitSource::Edge,
            })
        };
        let ingress = |bytes| {
            Some(BodyLimit {
                bytes,
                source: BodyLimitSource::Ingress,
            })
        };
        assert_eq!(body_limit(&s, None), edge(8192));
        assert_eq!(body_limit(&s, Some(1024)), ingress(1024));
        assert_eq!(body_limit(&s, Some(65536)), ingress(65536));
        assert_eq!(body_limit(&s, Some(0)), None);
        let unlimited = EdgeSettings {
            max_body: None,
            ..s.clone()
        };
        assert_eq!(body_limit(&unlimited, None), None);
        assert_eq!(body_limit(&unlimited, Some(10)), ingress(10));
        // The ceiling caps rules' limits, their `0` and the edge default, and leaves smaller ones alone.
        let capped = EdgeSettings {
            max_body_ceiling: Some(16384),
            ..s
        };
        let ceiling = Some(BodyLimit {
            bytes: 16384,
            source: BodyLimitSource::Ceiling,
        });
        assert_eq!(body_limit(&capped, None), edge(8192));
        assert_eq!(body_limit(&capped, Some(1024)), ingress(1024));
        assert_eq!(body_limit(&capped, Some(16384)), ingress(16384));
        assert_eq!(body_limit(&capped, Some(65536)), ceiling);
        assert_eq!(body_limit(&capped, Some(0)), ceiling);
        let capped_unlimited = EdgeSettings {
            max_body: None,
            ..capped
        };
        assert_eq!(body_limit(&capped_unlimited, None), ceiling);
    }

    #[test]
    fn upgrades_are_forwarded_only_when_listed_and_never_h2c() {
        use pingora::upstreams::peer::H1UpgradePolicy::*;
        let default = EdgeSettings::default();
        assert_eq!(default.upgrade_policy(b"websocket"), WebSocketOnly);
        assert_eq!(default.upgrade_policy(b"WebSocket "), WebSocketOnly);
        assert_eq!(default.upgrade_policy(b"custom/1"), Deny);
        assert_eq!(default.upgrade_policy(b"h2c"), Deny);
        let listed = EdgeSettings {
            upgrade_protocols: vec!["custom/1".into()],
            ..EdgeSettings::default()
        };
        assert_eq!(listed.upgrade_policy(b"Custom/1"), Preserve);
        assert_eq!(listed.upgrade_policy(b"websocket"), Deny);
        let any = EdgeSettings {
            upgrade_protocols: vec!["*".into()],
            ..EdgeSettings::default()
        };
        assert_eq!(any.upgrade_policy(b"anything"), Preserve);
        assert_eq!(any.upgrade_policy(b"websocket"), WebSocketOnly);
        assert_eq!(any.upgrade_policy(b"H2C"), Deny);
    }

    #[test]
    fn admission_stops_at_the_limit_and_gives_slots_back() {
        let settings = Arc::new(EdgeSettings {
            max_connections: 2,
            ..EdgeSettings::default()
        });
        let edge = ListenerEdge::new(settings, false);
        let before = STATS.snapshot().connections_refused;
        let a = edge.admit().unwrap();
        let b = edge.admit().unwrap();
        assert!(edge.admit().is_none());
        assert!(STATS.snapshot().connections_refused > before);
        assert_eq!(edge.open(), 2);
        drop(a);
        assert_eq!(edge.open(), 1);
        let c = edge.admit();
        assert!(c.is_some());
        drop((b, c));
        assert_eq!(edge.open(), 0);
        // No limit: nothing is counted.
        let free = ListenerEdge::new(
            Arc::new(EdgeSettings {
                max_connections: 0,
                ..EdgeSettings::default()
            }),
            false,
        );
        let all: Vec<_> = (0..100).map(|_| free.admit()).collect();
        assert!(all.iter().all(Option::is_some));
    }
}
