//! The HTTP data plane: Pingora's `ProxyHttp`, reading one snapshot per request.
//!
//! Phases:
//! - `request_filter`: first the edge checks (`proxy::edge`: framing, sizes, path normalization); then load the
//!   snapshot (the only shared-state access of the request), find the route, and answer directly when the route
//!   says so (404, 421, redirects, CORS preflights, 500/503 for invalid backends); otherwise pick the backend and
//!   endpoint, and note the request deadline.
//! - `upstream_peer`: the chosen endpoint (a fresh one on each retry), with the per-attempt timeout.
//! - `upstream_request_filter`: `X-Forwarded-*`, rule and backend filters (header modifiers, URL rewrite), then
//!   the request mirrors start with the headers as sent upstream.
//! - `request_body_filter`: the body size limit (`proxy::edge`); body chunks are copied to the mirrors.
//! - `upstream_response_filter`: retry on the statuses the rule's retry policy names.
//! - `response_filter`: response header modifiers and CORS headers.
//! - `error_while_proxy` / `fail_to_connect` / `fail_to_proxy`: retries of connection errors and timeouts, and
//!   the status the client gets (504 for timeouts).
//! - `logging`: tells the connection (`proxy::edge::EdgeIo`) that its next bytes are a new request head.

use super::edge::{self, EdgeSettings};
use super::mirror::{MirrorBodies, Mirrors};
use super::upstream_tls::TlsConnect;
use crate::model::{BackendProtocol, Cors, Filter, HeaderModifier, PathModifier, Redirect};
use crate::router::{
    normalize_host, CompiledAction, CompiledBackend, Lookup, RequestParts, RouteEntry, Target,
};
use crate::snapshot::{Snapshot, Store};
use crate::tls::HandshakeInfo;
use async_trait::async_trait;
use bytes::Bytes;
use http::header::{HOST, LOCATION};
use http::{HeaderValue, StatusCode};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::proxy::FailToProxy;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long connecting to an endpoint may take before the request fails with 502.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The `ProxyHttp` implementation for one listener (address, port).
pub struct HttpApp {
    store: Arc<Store>,
    address: Option<IpAddr>,
    port: u16,
    tls: bool,
    mirrors: Mirrors,
    /// Limits and checks at the edge (`proxy::edge`).
    edge: Arc<EdgeSettings>,
}

impl HttpApp {
    /// An app serving the listener at (address, logical port) from `store`; `tls` when clients connect with TLS.
    pub fn new(store: Arc<Store>, key: (Option<IpAddr>, u16), tls: bool) -> Self {
        HttpApp {
            store,
            address: key.0,
            port: key.1,
            tls,
            mirrors: Mirrors::default(),
            edge: Arc::new(EdgeSettings::default()),
        }
    }

    /// The app with these edge settings (instead of the defaults).
    pub fn with_edge(mut self, edge: Arc<EdgeSettings>) -> Self {
        self.edge = edge;
        self
    }
}

/// The SNI of a TLS connection, as the handshake recorded it.
fn sni(session: &Session) -> Option<&str> {
    session
        .digest()?
        .ssl_digest
        .as_ref()?
        .extension
        .get::<HandshakeInfo>()?
        .server_name
        .as_deref()
}

/// Per-request state: one snapshot for the whole request.
#[derive(Default)]
pub struct Ctx {
    snap: Option<Arc<Snapshot>>,
    entry: Option<Arc<RouteEntry>>,
    backend: usize,
    peer: Option<SocketAddr>,
    /// Attempts made so far (1 on the first try).
    attempts: u32,
    /// When the request timeout passes.
    deadline: Option<Instant>,
    /// The request's `Origin`, when the rule has CORS and the origin is allowed.
    cors_origin: Option<HeaderValue>,
    mirrors: MirrorBodies,
    mirrors_started: bool,
    /// The edge checks' state (body size so far).
    edge: edge::RequestState,
}

impl Ctx {
    /// May a failed attempt be tried again (retry policy, attempts left, deadline not passed)?
    fn can_retry(&self) -> bool {
        let Some(entry) = &self.entry else {
            return false;
        };
        let Some(r) = &entry.rule.retry else {
            return false;
        };
        self.attempts <= r.attempts && self.deadline.is_none_or(|d| Instant::now() < d)
    }

    fn retry_codes(&self) -> &[u16] {
        self.entry
            .as_ref()
            .and_then(|e| e.rule.retry.as_ref())
            .map_or(&[][..], |r| r.codes.as_slice())
    }

    fn backend(&self) -> Option<&CompiledBackend> {
        match &self.entry.as_ref()?.rule.action {
            CompiledAction::Forward(w) => w.backends().get(self.backend),
            CompiledAction::Redirect(_) => None,
        }
    }
}

fn request_host(req: &RequestHeader) -> &[u8] {
    match req.headers.get(HOST) {
        Some(h) => h.as_bytes(),
        None => req
            .uri
            .authority()
            .map_or(&b""[..], |a| a.as_str().as_bytes()),
    }
}

/// Writes a complete response with a short text body, keeping the connection reusable.
async fn respond(
    session: &mut Session,
    status: u16,
    location: Option<HeaderValue>,
) -> Result<bool> {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = if location.is_some() {
        Bytes::new()
    } else {
        Bytes::from(format!(
            "{} {}\n",
            code.as_u16(),
            code.canonical_reason().unwrap_or("")
        ))
    };
    let mut resp = ResponseHeader::build(code, Some(3))?;
    resp.insert_header("content-length", body.len().to_string())?;
    if !body.is_empty() {
        resp.insert_header("content-type", "text/plain; charset=utf-8")?;
    }
    if let Some(l) = location {
        resp.insert_header(LOCATION, l)?;
    }
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(resp), body.is_empty() || head_only)
        .await?;
    if !body.is_empty() && !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(true)
}

/// Replaces the part of `path` that `prefix` matched with `replacement`, as Gateway API's ReplacePrefixMatch
/// defines it: `/prefix/one` + `/one` turns `/prefix/one/two` into `/one/two`; replacing with `/` turns
/// `/prefix` into `/`.
pub fn replace_prefix(path: &str, prefix: &str, replacement: &str) -> String {
    // What the prefix did not consume: empty, or starting with '/' (prefix matching is element-wise).
    let rest = if prefix == "/" {
        path
    } else {
        path.get(prefix.len()..).unwrap_or("")
    };
    if rest.is_empty() {
        return if replacement.is_empty() {
            "/".to_string()
        } else {
            replacement.to_string()
        };
    }
    format!("{}{rest}", replacement.trim_end_matches('/'))
}

fn new_path(modifier: &PathModifier, path: &str, prefix: Option<&str>) -> String {
    match modifier {
        PathModifier::ReplaceFullPath(p) => p.clone(),
        PathModifier::ReplacePrefixMatch(r) => match prefix {
            Some(prefix) => replace_prefix(path, prefix, r),
            None => path.to_string(),
        },
    }
}

/// The `Location` of a redirect, following the HTTPRoute RequestRedirect rules for scheme, host and port.
fn location(
    rd: &Redirect,
    req: &RequestHeader,
    tls: bool,
    listener_port: u16,
    prefix: Option<&str>,
) -> Option<HeaderValue> {
    let req_scheme = if tls { "https" } else { "http" };
    let scheme = rd.scheme.as_deref().unwrap_or(req_scheme);
    let raw_host = std::str::from_utf8(request_host(req)).ok()?;
    let host = match &rd.hostname {
        Some(h) => h.as_str(),
        None => strip_port(raw_host),
    };
    // "If no port is specified, the redirect port MUST be derived using the following rules: If redirect scheme is
    // not-empty, the redirect port MUST be the well-known port associated with the redirect scheme. [...] If
    // redirect scheme is empty, the redirect port MUST be the Gateway Listener port."
    let port = match (rd.port, &rd.scheme) {
        (Some(p), _) => p,
        (None, Some(s)) if s == "https" => 443,
        (None, Some(_)) => 80,
        (None, None) => listener_port,
    };
    let default_port = (scheme == "http" && port == 80) || (scheme == "https" && port == 443);
    let path = req.uri.path();
    let path = match &rd.path {
        Some(m) => new_path(m, path, prefix),
        None => path.to_string(),
    };
    let mut loc = format!("{scheme}://{host}");
    if !default_port {
        loc.push(':');
        loc.push_str(&port.to_string());
    }
    loc.push_str(&path);
    if let Some(q) = req.uri.query() {
        loc.push('?');
        loc.push_str(q);
    }
    HeaderValue::from_str(&loc).ok()
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

fn apply_headers_request(req: &mut RequestHeader, m: &HeaderModifier) -> Result<()> {
    for (k, v) in &m.set {
        req.insert_header(k.clone(), v.as_str())?;
    }
    for (k, v) in &m.add {
        req.append_header(k.clone(), v.as_str())?;
    }
    for k in &m.remove {
        req.remove_header(k.as_str());
    }
    Ok(())
}

fn apply_headers_response(resp: &mut ResponseHeader, m: &HeaderModifier) -> Result<()> {
    for (k, v) in &m.set {
        resp.insert_header(k.clone(), v.as_str())?;
    }
    for (k, v) in &m.add {
        resp.append_header(k.clone(), v.as_str())?;
    }
    for k in &m.remove {
        resp.remove_header(k.as_str());
    }
    Ok(())
}

fn apply_request_filters(
    filters: &[Filter],
    req: &mut RequestHeader,
    prefix: Option<&str>,
) -> Result<()> {
    for f in filters {
        match f {
            Filter::RequestHeaderModifier(m) => apply_headers_request(req, m)?,
            Filter::UrlRewrite { hostname, path } => {
                if let Some(h) = hostname {
                    req.insert_header(HOST, h.as_str())?;
                }
                if let Some(p) = path {
                    let mut target = new_path(p, req.uri.path(), prefix);
                    if let Some(q) = req.uri.query() {
                        target.push('?');
                        target.push_str(q);
                    }
                    req.set_raw_path(target.as_bytes())?;
                }
            }
            Filter::ResponseHeaderModifier(_)
            | Filter::RequestMirror(_)
            | Filter::Cors(_)
            | Filter::RequestRedirect(_) => {}
        }
    }
    Ok(())
}

/// `x-forwarded-for`, for lookups without parsing the name on every request.
const X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");

/// `ip` as text in `buf` (IPv4 written by hand, IPv6 through `Display`), without allocating.
fn ip_text(ip: IpAddr, buf: &mut [u8; 64]) -> &[u8] {
    match ip {
        IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if o >= 100 {
                    buf[n] = b'0' + o / 100;
                    n += 1;
                }
                if o >= 10 {
                    buf[n] = b'0' + (o / 10) % 10;
                    n += 1;
                }
                buf[n] = b'0' + o % 10;
                n += 1;
            }
            &buf[..n]
        }
        IpAddr::V6(_) => {
            use std::io::Write;
            let mut cur = std::io::Cursor::new(&mut buf[..]);
            // At most 45 bytes: always fits.
            let _ = write!(cur, "{ip}");
            let n = usize::try_from(cur.position()).unwrap_or(0);
            &buf[..n]
        }
    }
}

fn client_ip(session: &Session) -> Option<std::net::IpAddr> {
    match session.client_addr()? {
        PingoraAddr::Inet(a) => Some(a.ip()),
        _ => None,
    }
}

/// Is this a CORS preflight (an OPTIONS request with `Origin` and `Access-Control-Request-Method`)?
fn is_preflight(req: &RequestHeader) -> bool {
    req.method == http::Method::OPTIONS
        && req.headers.contains_key(http::header::ORIGIN)
        && req
            .headers
            .contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// Answers an allowed CORS preflight without contacting a backend.
async fn respond_preflight(
    session: &mut Session,
    cors: &Cors,
    origin: HeaderValue,
) -> Result<bool> {
    let req = session.req_header();
    let mut resp = ResponseHeader::build(StatusCode::OK, Some(8))?;
    resp.insert_header(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin)?;
    // A wildcard is answered with what was asked for, which is valid with and without credentials.
    let requested_method = req
        .headers
        .get(http::header::ACCESS_CONTROL_REQUEST_METHOD)
        .cloned();
    if cors.allow_methods.iter().any(|m| m == "*") {
        if let Some(m) = requested_method {
            resp.insert_header(http::header::ACCESS_CONTROL_ALLOW_METHODS, m)?;
        }
    } else if !cors.allow_methods.is_empty() {
        resp.insert_header(
            http::header::ACCESS_CONTROL_ALLOW_METHODS,
            cors.allow_methods.join(", "),
        )?;
    }
    let requested_headers = req
        .headers
        .get(http::header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned();
    if cors.allow_headers.iter().any(|h| h == "*") {
        if let Some(h) = requested_headers {
            resp.insert_header(http::header::ACCESS_CONTROL_ALLOW_HEADERS, h)?;
        }
    } else if !cors.allow_headers.is_empty() {
        resp.insert_header(
            http::header::ACCESS_CONTROL_ALLOW_HEADERS,
            cors.allow_headers.join(", "),
        )?;
    }
    if !cors.expose_headers.is_empty() {
        resp.insert_header(
            http::header::ACCESS_CONTROL_EXPOSE_HEADERS,
            cors.expose_headers.join(", "),
        )?;
    }
    resp.insert_header(
        http::header::ACCESS_CONTROL_MAX_AGE,
        cors.max_age.to_string(),
    )?;
    if cors.allow_credentials {
        resp.insert_header(http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true")?;
    }
    resp.insert_header(http::header::VARY, "Origin")?;
    resp.insert_header(http::header::CONTENT_LENGTH, "0")?;
    session.write_response_header(Box::new(resp), true).await?;
    Ok(true)
}

/// Does the request carry a body (so mirrors must wait for it)?
fn has_body(req: &RequestHeader) -> bool {
    req.headers
        .get(http::header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() != b"0")
        || req.headers.contains_key(http::header::TRANSFER_ENCODING)
}

#[async_trait]
impl ProxyHttp for HttpApp {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    /// No downstream modules. Pingora's default adds its response-compression module switched off, which still
    /// costs a boxed context and two filter calls per request; Portcullis does not compress responses.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        // Edge hook: framing, sizes and path normalization before anything reads the request (proxy::edge).
        if edge::check_request(&self.edge, session, &mut ctx.edge).await? {
            return Ok(true);
        }
        let snap = self.store.load();
        let req = session.req_header();
        let mut buf = [0u8; 256];
        let host = normalize_host(request_host(req), &mut buf).unwrap_or("");
        let parts = RequestParts {
            method: &req.method,
            path: req.uri.path(),
            query: req.uri.query(),
            headers: &req.headers,
        };
        let sni = if self.tls { sni(session) } else { None };
        let lookup = match snap.router.listener_at(self.address, self.port) {
            Some(l) => l.lookup(host, sni, &parts),
            None => Lookup::NotFound,
        };
        let entry = match lookup {
            Lookup::Route(e) => e.clone(),
            Lookup::NotFound => return respond(session, 404, None).await,
            Lookup::Misdirected => return respond(session, 421, None).await,
        };
        // CORS: answer allowed preflights here; remember allowed origins for the response.
        if let Some(cors) = &entry.rule.cors {
            let origin = req.headers.get(http::header::ORIGIN).cloned();
            let allowed = origin.filter(|o| o.to_str().is_ok_and(|o| cors.allows(o)));
            match (allowed, is_preflight(req)) {
                (Some(origin), true) => {
                    return respond_preflight(session, &cors.cors, origin).await
                }
                // A preflight from an origin the rule does not allow is refused here, not sent to a backend.
                (None, true) => return respond(session, 403, None).await,
                (Some(origin), false) => ctx.cors_origin = Some(origin),
                (None, false) => {}
            }
        }
        let outcome = match &entry.rule.action {
            CompiledAction::Redirect(rd) => {
                let loc = location(rd, req, self.tls, self.port, entry.matched_prefix());
                match loc {
                    Some(l) => Err((rd.status, Some(l))),
                    None => Err((500, None)),
                }
            }
            CompiledAction::Forward(w) => match w.pick() {
                None => Err((500, None)),
                Some(b) if b.redirect.is_some() => {
                    let loc = b.redirect.as_ref().and_then(|rd| {
                        location(rd, req, self.tls, self.port, entry.matched_prefix())
                            .map(|l| (rd.status, l))
                    });
                    match loc {
                        Some((status, l)) => Err((status, Some(l))),
                        None => Err((500, None)),
                    }
                }
                Some(b) => match &b.target {
                    Target::Status { status, .. } => Err((*status, None)),
                    Target::Endpoints(eps) => match eps.next() {
                        Some(addr) => {
                            let index = w
                                .backends()
                                .iter()
                                .position(|x| std::ptr::eq(x, b))
                                .unwrap_or(0);
                            Ok((index, addr))
                        }
                        None => Err((503, None)),
                    },
                },
            },
        };
        if let Some(ms) = entry.rule.timeouts.request_ms {
            ctx.deadline = Some(Instant::now() + Duration::from_millis(ms));
        }
        let retries = entry.rule.retry.is_some();
        ctx.snap = Some(snap);
        ctx.entry = Some(entry);
        match outcome {
            Ok((index, addr)) => {
                ctx.backend = index;
                ctx.peer = Some(addr);
                if retries {
                    // Keep the request body so that a retry can send it again.
                    session.enable_retry_buffering();
                }
                Ok(false)
            }
            Err((status, loc)) => respond(session, status, loc).await,
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        ctx.attempts += 1;
        if ctx.attempts > 1 {
            // A retry: back off if the policy says so, and move to the next endpoint.
            let backoff = ctx
                .entry
                .as_ref()
                .and_then(|e| e.rule.retry.as_ref())
                .and_then(|r| r.backoff_ms);
            if let Some(ms) = backoff {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            if let Some(Target::Endpoints(eps)) = ctx.backend().map(|b| &b.target) {
                if let Some(next) = eps.next() {
                    ctx.peer = Some(next);
                }
            }
        }
        let addr = ctx
            .peer
            .ok_or_else(|| Error::explain(HTTPStatus(500), "no endpoint chosen"))?;
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(CONNECT_TIMEOUT);
        if let Some(Target::Endpoints(eps)) = ctx.backend().map(|b| &b.target) {
            if eps.protocol == BackendProtocol::H2c {
                peer.options.set_http_version(2, 2);
            }
            if let Some(tls) = &eps.tls {
                peer.options.custom_l4 = Some(Arc::new(TlsConnect(tls.clone())));
                peer.group_key = tls.group_key;
            }
        }
        // The attempt may last the backend timeout, and no longer than what is left of the request timeout.
        let mut limit = ctx
            .entry
            .as_ref()
            .and_then(|e| e.rule.timeouts.backend_request_ms)
            .map(Duration::from_millis);
        if let Some(deadline) = ctx.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::explain(HTTPStatus(504), "request timeout"));
            }
            limit = Some(limit.map_or(left, |l| l.min(left)));
        }
        if let Some(l) = limit {
            peer.options.read_timeout = Some(l);
            peer.options.write_timeout = Some(l);
        }
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // X-Forwarded-*: the client address is appended, proto and host describe this hop.
        if let Some(ip) = client_ip(session) {
            // The address is formatted on the stack: no String per request.
            let mut buf = [0u8; 64];
            let addr = ip_text(ip, &mut buf);
            let xff = match upstream.headers.get(&X_FORWARDED_FOR) {
                Some(prev) => {
                    let mut v = Vec::with_capacity(prev.len() + 2 + addr.len());
                    v.extend_from_slice(prev.as_bytes());
                    v.extend_from_slice(b", ");
                    v.extend_from_slice(addr);
                    HeaderValue::from_bytes(&v).ok()
                }
                None => HeaderValue::from_bytes(addr).ok(),
            };
            if let Some(v) = xff {
                upstream.insert_header("x-forwarded-for", v)?;
            }
        }
        let proto = HeaderValue::from_static(if self.tls { "https" } else { "http" });
        upstream.insert_header("x-forwarded-proto", proto)?;
        if let Some(h) = upstream.headers.get(HOST).cloned() {
            upstream.insert_header("x-forwarded-host", h)?;
        }

        let Some(entry) = ctx.entry.clone() else {
            return Ok(());
        };
        let prefix = entry.matched_prefix();
        apply_request_filters(&entry.rule.filters, upstream, prefix)?;
        if let Some(b) = ctx.backend() {
            apply_request_filters(&b.filters, upstream, prefix)?;
        }
        // Mirrors get the request as it goes upstream, once (not again on retries).
        if !ctx.mirrors_started {
            ctx.mirrors_started = true;
            let body = has_body(upstream);
            self.mirrors
                .start(&entry.rule.mirrors, upstream, body, &mut ctx.mirrors);
            if let CompiledAction::Forward(w) = &entry.rule.action {
                if let Some(b) = w.backends().get(ctx.backend) {
                    self.mirrors
                        .start(&b.mirrors, upstream, body, &mut ctx.mirrors);
                }
            }
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // Edge hook: the body size limit, counted as the body arrives (proxy::edge).
        edge::count_body(session, &mut ctx.edge, body.as_ref())?;
        if !ctx.mirrors.is_empty() {
            if let Some(chunk) = body.as_ref() {
                ctx.mirrors.send(chunk);
            }
            if end_of_stream {
                ctx.mirrors.finish();
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let status = resp.status.as_u16();
        if ctx.retry_codes().contains(&status) && ctx.can_retry() {
            let mut e = Error::explain(
                HTTPStatus(status),
                "retrying: the retry policy names this status",
            );
            e.set_retry(true);
            return Err(e);
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some(entry) = ctx.entry.as_ref() else {
            return Ok(());
        };
        for f in entry.rule.filters.iter() {
            if let Filter::ResponseHeaderModifier(m) = f {
                apply_headers_response(resp, m)?;
            }
        }
        if let Some(b) = ctx.backend() {
            for f in b.filters.iter() {
                if let Filter::ResponseHeaderModifier(m) = f {
                    apply_headers_response(resp, m)?;
                }
            }
        }
        if let (Some(origin), Some(cors)) = (ctx.cors_origin.clone(), entry.rule.cors.as_ref()) {
            let cors = &cors.cors;
            resp.insert_header(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin)?;
            if cors.allow_credentials {
                resp.insert_header(http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true")?;
            }
            if !cors.expose_headers.is_empty() {
                resp.insert_header(
                    http::header::ACCESS_CONTROL_EXPOSE_HEADERS,
                    cors.expose_headers.join(", "),
                )?;
            }
            resp.append_header(http::header::VARY, "Origin")?;
        }
        Ok(())
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, _ctx: &mut Ctx) {
        // Edge hook: the request is over; the connection's next bytes are a new head (proxy::edge).
        edge::request_done(session);
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if ctx.can_retry() {
            e.set_retry(true);
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if ctx.entry.as_ref().is_some_and(|en| en.rule.retry.is_some()) {
            // The route's policy decides: connection errors and timeouts are retried while attempts last,
            // unless the request body could not be kept for a retry.
            let retry = ctx.can_retry() && !session.as_ref().retry_buffer_truncated();
            e.set_retry(retry);
        } else if !session.req_header().method.is_idempotent()
            || session.as_ref().retry_buffer_truncated()
        {
            e.set_retry(false);
        } else {
            // Pingora's default: a reused upstream connection that failed may be retried once.
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let code = match e.etype() {
            HTTPStatus(code) => *code,
            ConnectTimedout | ReadTimedout | WriteTimedout => 504,
            _ => match e.esource() {
                // Retries used up on connection errors: the backend is unavailable.
                ErrorSource::Upstream
                    if ctx.entry.as_ref().is_some_and(|en| en.rule.retry.is_some()) =>
                {
                    503
                }
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    WriteError | ReadError | ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        // Edge fix: once a response header went out (an upstream that broke its own framing mid-body), an error
        // page written now would become that response's body; the connection is closed instead.
        if code > 0 && session.response_written().is_none() {
            let _ = respond(session, code, None).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_prefix_follows_the_spec_examples() {
        assert_eq!(
            replace_prefix("/prefix/one/two", "/prefix/one", "/one"),
            "/one/two"
        );
        assert_eq!(replace_prefix("/prefix/one", "/prefix/one", "/one"), "/one");
        assert_eq!(
            replace_prefix("/strip-prefix/three", "/strip-prefix", "/"),
            "/three"
        );
        assert_eq!(replace_prefix("/strip-prefix", "/strip-prefix", "/"), "/");
        assert_eq!(replace_prefix("/foo", "/", "/v2"), "/v2/foo");
        assert_eq!(replace_prefix("/prefix/", "/prefix", "/one"), "/one/");
    }

    #[test]
    fn ip_text_is_display() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.255.9",
            "192.168.100.1",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:1.2.3.4",
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut buf = [0u8; 64];
            assert_eq!(ip_text(ip, &mut buf), ip.to_string().as_bytes());
        }
    }

    #[test]
    fn strips_ports() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }
}
