//! The HTTP data plane: Pingora's `ProxyHttp`, reading one snapshot per request.
//!
//! Phases:
//! - `request_filter`: load the snapshot (the only shared-state access of the request), find the route, and answer
//!   directly when the route says so (404, redirect, 500/503 for invalid backends); otherwise pick the backend and
//!   endpoint.
//! - `upstream_peer`: the chosen endpoint.
//! - `upstream_request_filter`: `X-Forwarded-*`, rule and backend filters (header modifiers, URL rewrite).
//! - `response_filter`: response header modifiers.

use crate::model::{Filter, HeaderModifier, PathModifier, Redirect};
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
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// How long connecting to an endpoint may take before the request fails with 502.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The `ProxyHttp` implementation for one listener (address, port).
pub struct HttpApp {
    store: Arc<Store>,
    address: Option<IpAddr>,
    port: u16,
    tls: bool,
}

impl HttpApp {
    /// An app serving the listener at (address, logical port) from `store`; `tls` when clients connect with TLS.
    pub fn new(store: Arc<Store>, key: (Option<IpAddr>, u16), tls: bool) -> Self {
        HttpApp {
            store,
            address: key.0,
            port: key.1,
            tls,
        }
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
}

impl Ctx {
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
            Filter::ResponseHeaderModifier(_) => {}
        }
    }
    Ok(())
}

fn client_ip(session: &Session) -> Option<std::net::IpAddr> {
    match session.client_addr()? {
        PingoraAddr::Inet(a) => Some(a.ip()),
        _ => None,
    }
}

#[async_trait]
impl ProxyHttp for HttpApp {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
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
        ctx.snap = Some(snap);
        ctx.entry = Some(entry);
        match outcome {
            Ok((index, addr)) => {
                ctx.backend = index;
                ctx.peer = Some(addr);
                Ok(false)
            }
            Err((status, loc)) => respond(session, status, loc).await,
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let addr = ctx
            .peer
            .ok_or_else(|| Error::explain(HTTPStatus(500), "no endpoint chosen"))?;
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(CONNECT_TIMEOUT);
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
            let xff = match upstream.headers.get("x-forwarded-for") {
                Some(prev) => {
                    let mut v = prev.as_bytes().to_vec();
                    v.extend_from_slice(b", ");
                    v.extend_from_slice(ip.to_string().as_bytes());
                    HeaderValue::from_bytes(&v).ok()
                }
                None => HeaderValue::from_str(&ip.to_string()).ok(),
            };
            if let Some(v) = xff {
                upstream.insert_header("x-forwarded-for", v)?;
            }
        }
        upstream.insert_header("x-forwarded-proto", if self.tls { "https" } else { "http" })?;
        if let Some(h) = upstream.headers.get(HOST).cloned() {
            upstream.insert_header("x-forwarded-host", h)?;
        }

        let Some(entry) = ctx.entry.as_ref() else {
            return Ok(());
        };
        let prefix = entry.matched_prefix();
        apply_request_filters(&entry.rule.filters, upstream, prefix)?;
        if let Some(b) = ctx.backend() {
            apply_request_filters(&b.filters, upstream, prefix)?;
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
        Ok(())
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
    fn strips_ports() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }
}
