//! The data-plane side of ingress-nginx annotations ([`crate::model::policy::Policy`]): what a rule's policy does
//! to a request, in nginx's phase order, called from `proxy/http.rs` through small hooks (each marked
//! `ingress-nginx policy hook` there):
//!
//! - [`on_request`] (request phase): `app-root`, denied locations (503), CORS preflights (204), fixed redirects,
//!   https redirects, `from-to-www-redirect`, rate and connection limits, source ranges (403), basic auth (401),
//!   external auth (a subrequest), and the canary decision;
//! - [`peer_options`]: idle read and send timeouts towards the backend;
//! - [`upstream_request`]: rewrite, `Host`, `X-Forwarded-Prefix`, headers from external auth, ingress-nginx's
//!   forwarded headers;
//! - [`response`]: CORS headers and external auth cookies.
//!
//! `proxy-body-size` is not here: it is the request's body limit in `proxy::edge` ([`super::edge::body_limit`]),
//! one limit and one count per request whether it comes from the annotation or from `--max-request-body`.
//!
//! Limits are kept per client address in a fixed number of shards with a bounded number of entries each, shared
//! by every listener and kept across configuration changes (as nginx keeps its zones across reloads).

use crate::model::policy::{
    Canary, ExternalAuth, NginxCors, PasswordHash, Policy, RateLimit, TemplatePart, UrlPart,
};
use base64::Engine as _;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, HOST};
use http::StatusCode;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use regex::Regex;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A policy ready to serve: the model's settings with their regexes compiled.
#[derive(Debug)]
pub struct CompiledPolicy {
    /// The settings.
    pub policy: Policy,
    rewrite: Option<Regex>,
    canary_pattern: Option<Regex>,
    /// Set when a regex that translation checked does not compile here: the rule answers 503.
    broken: Option<String>,
    zone: u64,
}

impl CompiledPolicy {
    /// Compiles a policy. Translation checked every regex, so this does not fail; if one does not compile anyway,
    /// the policy denies (503) rather than serve without it.
    pub fn new(policy: &Policy) -> Self {
        let mut broken = None;
        let mut compile = |p: &str| match Regex::new(p) {
            Ok(r) => Some(r),
            Err(e) => {
                broken = Some(format!("regex {p:?}: {e}"));
                None
            }
        };
        let rewrite = policy.rewrite.as_ref().and_then(|r| compile(&r.pattern));
        let canary_pattern = policy
            .canary
            .as_ref()
            .and_then(|c| c.header_pattern.as_deref())
            .and_then(&mut compile);
        let zone = policy.rate_limit.as_ref().map_or(0, |r| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            r.zone.hash(&mut h);
            h.finish()
        });
        CompiledPolicy {
            policy: policy.clone(),
            rewrite,
            canary_pattern,
            broken,
            zone,
        }
    }
}

/// What one request learned in [`on_request`] for the later phases.
#[derive(Debug, Default)]
pub struct RequestState {
    /// The backend the canary decision forces (0 = main, 1 = canary); `None` draws by weight.
    pub forced_backend: Option<usize>,
    /// The client address as ingress-nginx sees it (the peer, or the first `X-Forwarded-For` entry when trusted).
    client: Option<IpAddr>,
    /// The `Access-Control-Allow-Origin` of an allowed CORS request (the CORS headers go on the response).
    cors: Option<HeaderValue>,
    /// Headers from the external auth response for the upstream request (`None`: remove the header).
    auth_headers: Vec<(HeaderName, Option<HeaderValue>)>,
    /// `Set-Cookie` values of the external auth response.
    auth_cookies: Vec<HeaderValue>,
    /// Holds one slot of `limit-connections` until the request ends.
    _conn: Option<ConnGuard>,
}

/// A response the policy gives instead of forwarding.
#[derive(Debug)]
pub struct Answer {
    status: u16,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// `true` for the short text body of an error status.
    body: bool,
}

impl Answer {
    fn status(status: u16) -> Self {
        Answer {
            status,
            headers: Vec::new(),
            body: true,
        }
    }

    fn redirect(status: u16, location: &str) -> Self {
        match HeaderValue::from_str(location) {
            Ok(v) => Answer {
                status,
                headers: vec![(http::header::LOCATION, v)],
                body: false,
            },
            Err(_) => Answer::status(500),
        }
    }
}

/// The connection a request came in on.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    /// TLS to the client.
    pub tls: bool,
    /// The logical listener port.
    pub port: u16,
}

fn peer_ip(session: &Session) -> Option<IpAddr> {
    match session.client_addr()? {
        PingoraAddr::Inet(a) => Some(a.ip()),
        _ => None,
    }
}

fn header<'r>(req: &'r RequestHeader, name: &str) -> Option<&'r str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

/// The request's scheme as ingress-nginx's `$pass_access_scheme` (the client's `X-Forwarded-Proto` when trusted).
fn scheme(req: &RequestHeader, conn: Conn, trust: bool) -> String {
    let own = if conn.tls { "https" } else { "http" };
    if trust {
        if let Some(p) = header(req, "x-forwarded-proto") {
            return p.to_string();
        }
    }
    own.to_string()
}

/// `$http_host`: the Host header as sent (the authority of an HTTP/2 request).
fn http_host(req: &RequestHeader) -> &str {
    header(req, "host")
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or("")
}

/// `$best_http_host` without its port (the client's first `X-Forwarded-Host` when trusted).
fn redirect_host(req: &RequestHeader, trust: bool) -> String {
    let best = match (trust, header(req, "x-forwarded-host")) {
        (true, Some(x)) => x.split(',').next().unwrap_or("").trim(),
        _ => http_host(req),
    };
    best.split(':').next().unwrap_or(best).to_string()
}

/// `$request_uri`: the request target as received.
fn request_uri(req: &RequestHeader) -> &str {
    req.uri
        .path_and_query()
        .map_or_else(|| req.uri.path(), |pq| pq.as_str())
}

/// The client address: the peer, or the first `X-Forwarded-For` entry when `use-forwarded-headers` trusts it
/// (nginx's real-ip module, recursive, every address trusted).
fn client_ip(session: &Session, policy: &Policy) -> Option<IpAddr> {
    let trust = policy
        .forwarded
        .as_ref()
        .is_some_and(|f| f.trust_client_headers);
    if trust {
        let first = session
            .req_header()
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok());
        if first.is_some() {
            return first;
        }
    }
    peer_ip(session)
}

/// Runs the request-phase part of a policy. `Ok(Some(answer))` means the request is answered here.
pub async fn on_request(
    p: &CompiledPolicy,
    session: &mut Session,
    st: &mut RequestState,
    conn: Conn,
) -> Result<Option<Answer>> {
    let pol = &p.policy;
    st.client = client_ip(session, pol);
    let req = session.req_header();

    // Location lookup time: the body limit by `Content-Length` (413) was checked before this, by the edge.
    // Server rewrite phase: app-root applies to `/` before any location.
    if let Some(root) = &pol.app_root {
        if req.uri.path() == "/" {
            let own = if conn.tls { "https" } else { "http" };
            return Ok(Some(Answer::redirect(
                302,
                &format!("{own}://{}{root}", http_host(req)),
            )));
        }
    }
    if let Some(w) = &pol.www_redirect {
        let (scheme, port) = if w.trust_forwarded {
            (
                scheme(req, conn, true),
                header(req, "x-forwarded-port")
                    .map(str::to_string)
                    .unwrap_or_else(|| conn.port.to_string()),
            )
        } else {
            (scheme(req, conn, false), conn.port.to_string())
        };
        let uri = request_uri(req);
        let uri = uri.strip_suffix('/').unwrap_or(uri);
        return Ok(Some(Answer::redirect(
            w.status,
            &format!("{scheme}://{}:{port}{uri}", w.to),
        )));
    }
    // Location rewrite phase, in the order of ingress-nginx's template: denied, CORS, `return` redirects; then
    // its Lua rewrite handler (https redirects).
    if let Some(reason) = pol.denied.as_ref().or(p.broken.as_ref()) {
        tracing::debug!(policy = %pol.source, %reason, "location denied");
        return Ok(Some(Answer::status(503)));
    }
    if let Some(cors) = &pol.cors {
        if cors_allowed(cors, header(req, "origin")) {
            st.cors = Some(cors_origin(cors, req));
            if req.method == http::Method::OPTIONS {
                let mut a = Answer {
                    status: 204,
                    headers: cors_headers(cors, req),
                    body: false,
                };
                a.headers.push((
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain charset=UTF-8"),
                ));
                return Ok(Some(a));
            }
        }
    }
    if let Some(r) = &pol.redirect {
        let location = if r.location.starts_with('/') {
            format!(
                "{}://{}{}",
                if conn.tls { "https" } else { "http" },
                redirect_host(req, false),
                r.location
            )
        } else {
            r.location.clone()
        };
        let location = match (r.keep_query, req.uri.query()) {
            (true, Some(q)) => format!("{location}?{q}"),
            _ => location,
        };
        return Ok(Some(Answer::redirect(r.status, &location)));
    }
    if let Some(s) = &pol.ssl_redirect {
        if scheme(req, conn, s.trust_forwarded_proto) == "http" {
            let mut uri = request_uri(req);
            if !s.preserve_trailing_slash {
                uri = uri.strip_suffix('/').unwrap_or(uri);
            }
            let loc = format!(
                "https://{}{uri}",
                redirect_host(req, s.trust_forwarded_proto)
            );
            return Ok(Some(Answer::redirect(s.status, &loc)));
        }
    }
    // Preaccess phase: rate and connection limits.
    if let Some(rl) = &pol.rate_limit {
        if let Some(ip) = st.client {
            if !rl.allow.iter().any(|c| c.contains(ip)) {
                if let Err(status) = limit_requests(p.zone, rl, ip) {
                    return Ok(Some(Answer::status(status)));
                }
                if rl.connections > 0 {
                    match ConnGuard::acquire(p.zone, ip, rl.connections) {
                        Some(g) => st._conn = Some(g),
                        None => return Ok(Some(Answer::status(rl.conn_status))),
                    }
                }
            }
        }
    }
    // Access phase: source ranges, basic auth, external auth.
    if !pol.source_ranges.is_empty() {
        let allowed = st.client.is_some_and(|ip| {
            !pol.source_ranges.deny.iter().any(|c| c.contains(ip))
                && (pol.source_ranges.allow.is_empty()
                    || pol.source_ranges.allow.iter().any(|c| c.contains(ip)))
        });
        if !allowed {
            return Ok(Some(Answer::status(403)));
        }
    }
    if let Some(b) = &pol.basic_auth {
        let ok = basic_credentials(req).is_some_and(|(user, pass)| {
            b.users
                .iter()
                .any(|(u, h)| *u == user && verify_password(&pass, h))
        });
        if !ok {
            let realm = format!("Basic realm=\"{}\"", b.realm);
            let mut a = Answer::status(401);
            if let Ok(v) = HeaderValue::from_str(&realm) {
                a.headers.push((http::header::WWW_AUTHENTICATE, v));
            }
            return Ok(Some(a));
        }
    }
    if let Some(ext) = &pol.external_auth {
        // Boxed: the subrequest's future (connector, HTTP session) is several KB, and held inline it would grow
        // the request filter's future, which every request allocates and moves, policy or not.
        if let Some(answer) = Box::pin(external_auth(ext, session, st, conn, pol)).await {
            return Ok(Some(answer));
        }
    }
    if let Some(c) = &pol.canary {
        st.forced_backend = canary_choice(c, p.canary_pattern.as_ref(), session.req_header());
    }
    Ok(None)
}

/// Writes a policy answer, keeping the connection reusable.
pub async fn write_answer(session: &mut Session, a: Answer) -> Result<bool> {
    let code = StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = if a.body {
        Bytes::from(format!(
            "{} {}\n",
            code.as_u16(),
            code.canonical_reason().unwrap_or("")
        ))
    } else {
        Bytes::new()
    };
    let mut resp = ResponseHeader::build(code, Some(5 + a.headers.len()))?;
    super::http::add_server_header(&mut resp)?;
    for (k, v) in a.headers {
        resp.append_header(k, v)?;
    }
    resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    if !body.is_empty() {
        resp.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
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

/// Idle timeouts towards the backend (`proxy-read-timeout`, `proxy-send-timeout`).
pub fn peer_options(p: &CompiledPolicy, peer: &mut HttpPeer) {
    if let Some(s) = p.policy.read_timeout_s {
        peer.options.read_timeout = Some(Duration::from_secs(u64::from(s)));
    }
    if let Some(s) = p.policy.send_timeout_s {
        peer.options.write_timeout = Some(Duration::from_secs(u64::from(s)));
    }
}

/// Expands `$1`..`$9` with the captures of the rewrite regex.
fn expand(parts: &[TemplatePart], caps: Option<&regex::Captures<'_>>) -> String {
    let mut out = String::new();
    for part in parts {
        match part {
            TemplatePart::Text(t) => out.push_str(t),
            TemplatePart::Capture(n) => {
                if let Some(m) = caps.and_then(|c| c.get(usize::from(*n))) {
                    out.push_str(m.as_str());
                }
            }
        }
    }
    out
}

/// Changes the request sent upstream: rewrite (the query string is kept), `Host`, `X-Forwarded-Prefix`, external
/// auth headers, the `Authorization` of basic auth removed, and ingress-nginx's forwarded headers.
pub fn upstream_request(
    p: &CompiledPolicy,
    st: &RequestState,
    upstream: &mut RequestHeader,
    conn: Conn,
) -> Result<()> {
    let pol = &p.policy;
    if let (Some(rw), Some(re)) = (&pol.rewrite, &p.rewrite) {
        let path = upstream.uri.path().to_string();
        if let Some(caps) = re.captures(&path) {
            let mut target = expand(&rw.target, Some(&caps));
            if !target.starts_with('/') {
                target.insert(0, '/');
            }
            if let Some(x) = &pol.x_forwarded_prefix {
                let v = expand(x, Some(&caps));
                if let Ok(v) = HeaderValue::from_str(&v) {
                    upstream.insert_header("x-forwarded-prefix", v)?;
                }
            }
            if let Some(q) = upstream.uri.query() {
                target.push('?');
                target.push_str(q);
            }
            upstream.set_raw_path(target.as_bytes())?;
        }
    }
    if let Some(h) = &pol.upstream_host {
        upstream.insert_header(HOST, h.as_str())?;
    }
    if pol.basic_auth.is_some() {
        upstream.remove_header(&AUTHORIZATION);
    }
    for (name, value) in &st.auth_headers {
        match value {
            Some(v) => upstream.insert_header(name.clone(), v.clone())?,
            None => {
                upstream.remove_header(name);
            }
        }
    }
    if let Some(f) = &pol.forwarded {
        let trust = f.trust_client_headers;
        let original_xff = upstream.headers.get("x-forwarded-for").cloned();
        if let Some(ip) = st.client {
            let ip = HeaderValue::from_str(&ip.to_string())
                .map_err(|e| Error::because(InternalError, "client address", e))?;
            upstream.insert_header("x-forwarded-for", ip.clone())?;
            upstream.insert_header("x-real-ip", ip)?;
        }
        if let Some(v) = original_xff {
            upstream.insert_header("x-original-forwarded-for", v)?;
        }
        let proto = scheme(upstream, conn, trust);
        let port = match (trust, header(upstream, "x-forwarded-port")) {
            (true, Some(p)) => p.to_string(),
            _ => conn.port.to_string(),
        };
        upstream.insert_header("x-forwarded-proto", proto.as_str())?;
        upstream.insert_header("x-forwarded-scheme", proto.as_str())?;
        upstream.insert_header("x-scheme", proto.as_str())?;
        upstream.insert_header("x-forwarded-port", port.as_str())?;
        if !trust || upstream.headers.get("x-forwarded-host").is_none() {
            let host = http_host(upstream).to_string();
            upstream.insert_header("x-forwarded-host", host.as_str())?;
        }
        if upstream.headers.get("x-request-id").is_none() {
            let id = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
            upstream.insert_header("x-request-id", id.as_str())?;
        }
        // httpoxy: the `Proxy` request header is never passed on.
        upstream.remove_header("proxy");
    }
    Ok(())
}

/// Statuses headers-more's `more_set_headers` (what ingress-nginx's CORS uses) applies to.
const MORE_SET_HEADERS_STATUSES: [u16; 10] = [200, 201, 204, 206, 301, 302, 303, 304, 307, 308];

/// Adds the CORS headers and the external auth cookies to the client's response.
pub fn response(p: &CompiledPolicy, st: &RequestState, resp: &mut ResponseHeader) -> Result<()> {
    if let (Some(origin), Some(cors)) = (&st.cors, &p.policy.cors) {
        {
            if MORE_SET_HEADERS_STATUSES.contains(&resp.status.as_u16()) {
                for (k, v) in cors_header_list(cors, origin.clone()) {
                    resp.insert_header(k, v)?;
                }
            }
        }
    }
    if let Some(ext) = &p.policy.external_auth {
        let ok = ext.always_set_cookie || MORE_SET_HEADERS_STATUSES.contains(&resp.status.as_u16());
        if ok {
            for c in &st.auth_cookies {
                resp.append_header(http::header::SET_COOKIE, c.clone())?;
            }
        }
    }
    Ok(())
}

/// Does a CORS origin list accept the request's `Origin`? `*` accepts every request; otherwise the origin must end
/// with an allowed one (case-insensitive; a `*.` stands for one label of letters, digits and `-`).
pub fn cors_allowed(cors: &NginxCors, origin: Option<&str>) -> bool {
    if cors.any {
        return true;
    }
    let Some(origin) = origin else { return false };
    let o = origin.to_ascii_lowercase();
    cors.origins.iter().any(|c| match &c.suffix {
        None => o.ends_with(&c.prefix),
        Some(suffix) => {
            let Some(rest) = o.strip_suffix(suffix.as_str()) else {
                return false;
            };
            let label = rest
                .bytes()
                .rev()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'-')
                .count();
            (1..=label).any(|k| rest[..rest.len() - k].ends_with(&c.prefix))
        }
    })
}

/// `Access-Control-Allow-Origin`: `*` for `cors-allow-origin: *` (ingress-nginx sets `$http_origin` to `*`), else
/// the request's `Origin`.
fn cors_origin(cors: &NginxCors, req: &RequestHeader) -> HeaderValue {
    if cors.any {
        HeaderValue::from_static("*")
    } else {
        req.headers
            .get(http::header::ORIGIN)
            .cloned()
            .unwrap_or(HeaderValue::from_static(""))
    }
}

fn cors_headers(cors: &NginxCors, req: &RequestHeader) -> Vec<(HeaderName, HeaderValue)> {
    cors_header_list(cors, cors_origin(cors, req))
}

fn cors_header_list(cors: &NginxCors, origin: HeaderValue) -> Vec<(HeaderName, HeaderValue)> {
    use http::header::*;
    let mut v = vec![(ACCESS_CONTROL_ALLOW_ORIGIN, origin)];
    if cors.allow_credentials {
        v.push((
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        ));
    }
    let mut text = |name: HeaderName, s: &str| {
        if let Ok(val) = HeaderValue::from_str(s) {
            v.push((name, val));
        }
    };
    text(ACCESS_CONTROL_ALLOW_METHODS, &cors.allow_methods);
    text(ACCESS_CONTROL_ALLOW_HEADERS, &cors.allow_headers);
    if !cors.expose_headers.is_empty() {
        text(ACCESS_CONTROL_EXPOSE_HEADERS, &cors.expose_headers);
    }
    text(ACCESS_CONTROL_MAX_AGE, &cors.max_age.to_string());
    v
}

/// The user and password of a `Basic` `Authorization` header.
fn basic_credentials(req: &RequestHeader) -> Option<(String, String)> {
    let v = header(req, "authorization")?;
    let (scheme, b64) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// Compares two byte strings in time independent of where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks a password against an htpasswd hash.
pub fn verify_password(password: &str, hash: &PasswordHash) -> bool {
    match hash {
        PasswordHash::Bcrypt(h) => bcrypt::verify(password, h).unwrap_or(false),
        PasswordHash::Md5Crypt { magic, salt, hash } => same(
            md5_crypt(password.as_bytes(), magic, salt).as_bytes(),
            hash.as_bytes(),
        ),
        PasswordHash::Sha1(digest) => {
            use sha1::Digest;
            same(&sha1::Sha1::digest(password.as_bytes()), digest)
        }
        PasswordHash::Plain(p) => same(p.as_bytes(), password.as_bytes()),
    }
}

/// The MD5-based crypt of FreeBSD (`$1$`), and Apache's variant (`$apr1$`, the same with another magic string):
/// the 22-character encoded hash of `password` with `salt`.
pub fn md5_crypt(password: &[u8], magic: &str, salt: &str) -> String {
    use md5::{Digest, Md5};
    let salt = salt.as_bytes();
    let mut alt = Md5::new();
    alt.update(password);
    alt.update(salt);
    alt.update(password);
    let alt = alt.finalize();
    let mut ctx = Md5::new();
    ctx.update(password);
    ctx.update(magic.as_bytes());
    ctx.update(salt);
    let mut left = password.len();
    while left > 0 {
        let n = left.min(16);
        ctx.update(&alt[..n]);
        left -= n;
    }
    let mut i = password.len();
    while i > 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        i >>= 1;
    }
    let mut fin = ctx.finalize();
    for round in 0..1000 {
        let mut c = Md5::new();
        if round & 1 == 1 {
            c.update(password);
        } else {
            c.update(fin);
        }
        if round % 3 != 0 {
            c.update(salt);
        }
        if round % 7 != 0 {
            c.update(password);
        }
        if round & 1 == 1 {
            c.update(fin);
        } else {
            c.update(password);
        }
        fin = c.finalize();
    }
    const ITOA64: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(22);
    let mut put = |mut v: u32, n: usize| {
        for _ in 0..n {
            out.push(char::from(ITOA64[(v & 0x3f) as usize]));
            v >>= 6;
        }
    };
    let b = |i: usize| u32::from(fin[i]);
    put((b(0) << 16) | (b(6) << 8) | b(12), 4);
    put((b(1) << 16) | (b(7) << 8) | b(13), 4);
    put((b(2) << 16) | (b(8) << 8) | b(14), 4);
    put((b(3) << 16) | (b(9) << 8) | b(15), 4);
    put((b(4) << 16) | (b(10) << 8) | b(5), 4);
    put(b(11), 2);
    out
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'r>(req: &'r RequestHeader, name: &str) -> Option<&'r str> {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// ingress-nginx's canary decision (`balancer.lua`, `route_to_alternative_balancer`): the header first (its
/// value, or its pattern, or `always`/`never`), then the cookie (`always`/`never`); `None` leaves it to the
/// weights.
pub fn canary_choice(c: &Canary, pattern: Option<&Regex>, req: &RequestHeader) -> Option<usize> {
    if let Some(name) = &c.header {
        if let Some(v) = header(req, name) {
            if let Some(want) = c.header_value.as_deref().filter(|w| !w.is_empty()) {
                if v == want {
                    return Some(1);
                }
            } else if let Some(re) = pattern {
                if re.is_match(v) {
                    return Some(1);
                }
            } else if v == "always" {
                return Some(1);
            } else if v == "never" {
                return Some(0);
            }
        }
    }
    if let Some(name) = &c.cookie {
        match cookie(req, name) {
            Some("always") => return Some(1),
            Some("never") => return Some(0),
            _ => {}
        }
    }
    None
}

/// Entries per limiter shard; the whole table holds at most `SHARDS * SHARD_CAP` clients per kind.
const SHARD_CAP: usize = 4096;
const SHARDS: usize = 32;
/// An entry idle this long is dropped first when its shard is full.
const IDLE_MS: u64 = 60_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// nginx's `excess`, in thousandths of a request.
    excess: i64,
    last_ms: u64,
}

type Key = (u64, u8, IpAddr);

struct Shards<V> {
    shards: Vec<Mutex<HashMap<Key, V>>>,
}

impl<V> Shards<V> {
    fn new() -> Self {
        Shards {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, k: &Key) -> &Mutex<HashMap<Key, V>> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        k.hash(&mut h);
        &self.shards[(h.finish() as usize) % SHARDS]
    }
}

fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn buckets() -> &'static Shards<Bucket> {
    static B: OnceLock<Shards<Bucket>> = OnceLock::new();
    B.get_or_init(Shards::new)
}

fn connections() -> &'static Shards<Arc<AtomicU32>> {
    static C: OnceLock<Shards<Arc<AtomicU32>>> = OnceLock::new();
    C.get_or_init(Shards::new)
}

/// nginx's `limit_req` with `nodelay`: each request adds 1000 to the client's excess, which drains at the rate;
/// a request that would take the excess over the burst is refused and does not count.
fn take(kind: u8, zone: u64, ip: IpAddr, rate_milli_per_s: i64, burst: i64, now: u64) -> bool {
    let key = (zone, kind, ip);
    let shard = buckets().shard(&key);
    let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
    if !map.contains_key(&key) && map.len() >= SHARD_CAP {
        map.retain(|_, b| now.saturating_sub(b.last_ms) < IDLE_MS);
        if map.len() >= SHARD_CAP {
            // Still full of active clients: make room by dropping one (bounded memory before exactness).
            if let Some(k) = map.keys().next().copied() {
                map.remove(&k);
            }
        }
    }
    match map.get_mut(&key) {
        None => {
            map.insert(
                key,
                Bucket {
                    excess: 0,
                    last_ms: now,
                },
            );
            true
        }
        Some(b) => {
            let elapsed = i64::try_from(now.saturating_sub(b.last_ms)).unwrap_or(i64::MAX);
            let drained = rate_milli_per_s.saturating_mul(elapsed) / 1000;
            let excess = (b.excess - drained).max(0) + 1000;
            if excess > burst * 1000 {
                return false;
            }
            b.excess = excess;
            b.last_ms = now;
            true
        }
    }
}

fn limit_requests(zone: u64, rl: &RateLimit, ip: IpAddr) -> std::result::Result<(), u16> {
    let now = now_ms();
    if rl.rps > 0 {
        let rate = i64::from(rl.rps) * 1000;
        let burst = i64::from(rl.rps) * i64::from(rl.burst_multiplier);
        if !take(0, zone, ip, rate, burst, now) {
            return Err(rl.req_status);
        }
    }
    if rl.rpm > 0 {
        let rate = i64::from(rl.rpm) * 1000 / 60;
        let burst = i64::from(rl.rpm) * i64::from(rl.burst_multiplier);
        if !take(1, zone, ip, rate, burst, now) {
            return Err(rl.req_status);
        }
    }
    Ok(())
}

/// One request counted against `limit-connections` until dropped.
#[derive(Debug)]
struct ConnGuard {
    key: Key,
    count: Arc<AtomicU32>,
}

impl ConnGuard {
    fn acquire(zone: u64, ip: IpAddr, limit: u32) -> Option<ConnGuard> {
        let key = (zone, 2, ip);
        let shard = connections().shard(&key);
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(&key) && map.len() >= SHARD_CAP {
            map.retain(|_, c| c.load(Ordering::Relaxed) > 0);
        }
        let count = map
            .entry(key)
            .or_insert_with(|| Arc::new(AtomicU32::new(0)))
            .clone();
        if count.load(Ordering::Relaxed) >= limit {
            return None;
        }
        count.fetch_add(1, Ordering::Relaxed);
        Some(ConnGuard { key, count })
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if self.count.fetch_sub(1, Ordering::Relaxed) == 1 {
            let shard = connections().shard(&self.key);
            let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
            if map
                .get(&self.key)
                .is_some_and(|c| c.load(Ordering::Relaxed) == 0)
            {
                map.remove(&self.key);
            }
        }
    }
}

/// How long an external auth request may take.
const AUTH_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest auth response body read (and discarded) before the connection is dropped instead of reused.
const AUTH_BODY_MAX: usize = 64 * 1024;

/// `$escaped_request_uri` (nginx's `set_escape_uri`): the request target percent-encoded for a query parameter
/// value, everything but letters, digits and `- . _ ~` escaped.
fn escape_uri(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn expand_url(parts: &[UrlPart], req: &RequestHeader, conn: Conn, trust: bool) -> String {
    let mut out = String::new();
    for p in parts {
        match p {
            UrlPart::Text(t) => out.push_str(t),
            UrlPart::Host => out.push_str(&redirect_host(req, false).to_ascii_lowercase()),
            UrlPart::HttpHost => out.push_str(http_host(req)),
            UrlPart::Scheme => out.push_str(&scheme(req, conn, trust)),
            UrlPart::RequestUri => out.push_str(request_uri(req)),
            UrlPart::EscapedRequestUri => out.push_str(&escape_uri(request_uri(req))),
        }
    }
    out
}

/// The external auth subrequest: 2xx lets the request through (the named response headers go upstream), 401 and
/// 403 are passed to the client (a 401 becomes the sign-in redirect when `auth-signin` is set), anything else is
/// 500 (nginx's `auth_request`).
async fn external_auth(
    ext: &ExternalAuth,
    session: &mut Session,
    st: &mut RequestState,
    conn: Conn,
    pol: &Policy,
) -> Option<Answer> {
    let trust = pol
        .forwarded
        .as_ref()
        .is_some_and(|f| f.trust_client_headers);
    let req = session.req_header();
    let status = match send_auth(ext, req, st.client, conn).await {
        Ok((status, headers)) => {
            if (200..300).contains(&status) {
                for name in &ext.response_headers {
                    let Ok(n) = HeaderName::from_bytes(name.as_bytes()) else {
                        continue;
                    };
                    let v = headers.get(&n).cloned().filter(|v| !v.is_empty());
                    st.auth_headers.push((n, v));
                }
                st.auth_cookies = headers
                    .get_all(http::header::SET_COOKIE)
                    .iter()
                    .cloned()
                    .collect();
                return None;
            }
            status
        }
        Err(e) => {
            tracing::warn!(policy = %pol.source, error = %e, "external auth request failed");
            500
        }
    };
    match status {
        401 => match &ext.signin {
            Some(t) => Some(Answer::redirect(302, &expand_url(t, req, conn, trust))),
            None => Some(Answer::status(401)),
        },
        403 => Some(Answer::status(403)),
        _ => Some(Answer::status(500)),
    }
}

async fn resolve(host: &str, port: u16) -> std::io::Result<SocketAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((host, port))
        .await?
        .next()
        .ok_or_else(|| std::io::Error::other("no address"))
}

async fn send_auth(
    ext: &ExternalAuth,
    req: &RequestHeader,
    client: Option<IpAddr>,
    conn: Conn,
) -> std::result::Result<(u16, http::HeaderMap), Box<dyn std::error::Error + Send + Sync>> {
    let addr = resolve(&ext.host, ext.port).await?;
    let method = ext.method.as_deref().unwrap_or(req.method.as_str());
    let mut auth = RequestHeader::build(method, ext.path_and_query.as_bytes(), None)?;
    for (k, v) in req.headers.iter() {
        auth.append_header(k.clone(), v.clone())?;
    }
    for h in [
        "content-length",
        "transfer-encoding",
        "x-forwarded-proto",
        "connection",
        "upgrade",
    ] {
        auth.remove_header(h);
    }
    let own_scheme = if conn.tls { "https" } else { "http" };
    let uri = request_uri(req);
    auth.insert_header(HOST, ext.host.as_str())?;
    auth.insert_header(
        "x-original-url",
        format!("{own_scheme}://{}{uri}", http_host(req)),
    )?;
    auth.insert_header("x-original-method", req.method.as_str())?;
    auth.insert_header("x-sent-from", "nginx-ingress-controller")?;
    if let Some(ip) = client {
        auth.insert_header("x-real-ip", ip.to_string())?;
        auth.insert_header("x-forwarded-for", ip.to_string())?;
    }
    auth.insert_header(
        "x-auth-request-redirect",
        ext.request_redirect.as_deref().unwrap_or(uri),
    )?;
    if ext.method.is_some() {
        auth.insert_header("x-original-uri", uri)?;
        auth.insert_header("x-scheme", own_scheme)?;
    }
    let tls = ext.scheme == "https";
    let peer = HttpPeer::new(addr, tls, ext.host.clone());
    let work = async {
        let connector = super::side_connector();
        let (mut s, _) = connector.get_http_session(&peer).await?;
        s.write_request_header(Box::new(auth)).await?;
        s.finish_request_body().await?;
        s.read_response_header().await?;
        let (status, headers) = match s.response_header() {
            Some(h) => (h.status.as_u16(), h.headers.clone()),
            None => (500, http::HeaderMap::new()),
        };
        let mut read = 0usize;
        let mut reusable = true;
        while let Some(chunk) = s.read_response_body().await? {
            read += chunk.len();
            if read > AUTH_BODY_MAX {
                reusable = false;
                break;
            }
        }
        if reusable {
            connector
                .release_http_session(s, &peer, Some(Duration::from_secs(60)))
                .await;
        }
        Ok::<_, Box<Error>>((status, headers))
    };
    match tokio::time::timeout(AUTH_TIMEOUT, work).await {
        Ok(r) => Ok(r?),
        Err(_) => Err("external auth timed out".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::policy::CorsOrigin;

    #[test]
    fn md5_crypt_matches_openssl() {
        // `openssl passwd -apr1 -salt xyz secret` and `openssl passwd -1 -salt xyz secret`.
        assert_eq!(md5_crypt(b"secret", "$apr1$", "xyz"), APR1_SECRET_XYZ);
        assert_eq!(md5_crypt(b"secret", "$1$", "xyz"), MD5_SECRET_XYZ);
    }

    const APR1_SECRET_XYZ: &str = "HXgo9gtz4gpj4JWTLYmjB0";
    const MD5_SECRET_XYZ: &str = "Qia9Wq6FxQkYcwNWMk/RM0";

    #[test]
    fn passwords_verify() {
        let bcrypt_hash = bcrypt::hash("pw", 4).unwrap();
        assert!(verify_password(
            "pw",
            &PasswordHash::Bcrypt(bcrypt_hash.clone())
        ));
        assert!(!verify_password("px", &PasswordHash::Bcrypt(bcrypt_hash)));
        use sha1::Digest;
        let d: [u8; 20] = sha1::Sha1::digest(b"pw").into();
        assert!(verify_password("pw", &PasswordHash::Sha1(d)));
        assert!(!verify_password("p", &PasswordHash::Sha1(d)));
        assert!(verify_password("pw", &PasswordHash::Plain("pw".into())));
        let apr = PasswordHash::Md5Crypt {
            magic: "$apr1$".into(),
            salt: "xyz".into(),
            hash: APR1_SECRET_XYZ.into(),
        };
        assert!(verify_password("secret", &apr));
        assert!(!verify_password("Secret", &apr));
    }

    fn cors(origins: &[&str]) -> NginxCors {
        NginxCors {
            origins: origins
                .iter()
                .map(|o| match o.split_once("*.") {
                    Some((pre, post)) => CorsOrigin {
                        prefix: pre.into(),
                        suffix: Some(format!(".{post}")),
                    },
                    None => CorsOrigin {
                        prefix: (*o).into(),
                        suffix: None,
                    },
                })
                .collect(),
            any: origins.is_empty(),
            allow_methods: String::new(),
            allow_headers: String::new(),
            expose_headers: String::new(),
            allow_credentials: true,
            max_age: 1,
        }
    }

    #[test]
    fn cors_origins_match_like_ingress_nginx() {
        let c = cors(&["https://app.example.com", "https://*.example.org"]);
        assert!(cors_allowed(&c, Some("https://app.example.com")));
        assert!(cors_allowed(&c, Some("HTTPS://APP.example.com")));
        assert!(cors_allowed(&c, Some("https://a-b.example.org")));
        assert!(!cors_allowed(&c, Some("https://a.b.example.org")));
        assert!(!cors_allowed(&c, Some("https://example.org")));
        assert!(!cors_allowed(&c, Some("http://app.example.com")));
        assert!(!cors_allowed(&c, None));
        assert!(cors_allowed(&cors(&[]), None));
    }

    #[test]
    fn limit_req_follows_nginx() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let zone = 0xfeed;
        // 1 r/s with a burst of 2: three requests at once pass, the fourth is refused; after a second one more.
        assert!(take(0, zone, ip, 1000, 2, 1_000));
        assert!(take(0, zone, ip, 1000, 2, 1_000));
        assert!(take(0, zone, ip, 1000, 2, 1_000));
        assert!(!take(0, zone, ip, 1000, 2, 1_000));
        assert!(take(0, zone, ip, 1000, 2, 2_000));
        assert!(!take(0, zone, ip, 1000, 2, 2_000));
    }

    #[test]
    fn connection_limit_counts_open_requests() {
        let ip: IpAddr = "192.0.2.2".parse().unwrap();
        let a = ConnGuard::acquire(7, ip, 2).unwrap();
        let b = ConnGuard::acquire(7, ip, 2).unwrap();
        assert!(ConnGuard::acquire(7, ip, 2).is_none());
        drop(a);
        let c = ConnGuard::acquire(7, ip, 2).unwrap();
        drop((b, c));
        assert!(ConnGuard::acquire(7, ip, 1).is_some());
    }

    #[test]
    fn canary_precedence_header_cookie() {
        let c = Canary {
            ingress: "ns/canary".into(),
            header: Some("x-canary".into()),
            header_value: None,
            header_pattern: None,
            cookie: Some("canary".into()),
        };
        let req = |headers: &[(&str, &str)]| {
            let mut r = RequestHeader::build("GET", b"/", None).unwrap();
            for (k, v) in headers {
                r.append_header(k.to_string(), *v).unwrap();
            }
            r
        };
        assert_eq!(
            canary_choice(&c, None, &req(&[("x-canary", "always")])),
            Some(1)
        );
        assert_eq!(
            canary_choice(
                &c,
                None,
                &req(&[("x-canary", "never"), ("cookie", "canary=always")])
            ),
            Some(0)
        );
        assert_eq!(
            canary_choice(
                &c,
                None,
                &req(&[("x-canary", "maybe"), ("cookie", "a=b; canary=always")])
            ),
            Some(1)
        );
        assert_eq!(
            canary_choice(&c, None, &req(&[("cookie", "canary=never")])),
            Some(0)
        );
        assert_eq!(canary_choice(&c, None, &req(&[])), None);
        let v = Canary {
            header_value: Some("v2".into()),
            ..c.clone()
        };
        assert_eq!(
            canary_choice(&v, None, &req(&[("x-canary", "v2")])),
            Some(1)
        );
        assert_eq!(
            canary_choice(&v, None, &req(&[("x-canary", "always")])),
            None
        );
        let re = Regex::new("^v[0-9]$").unwrap();
        let pat = Canary {
            header_pattern: Some("^v[0-9]$".into()),
            ..c
        };
        assert_eq!(
            canary_choice(&pat, Some(&re), &req(&[("x-canary", "v7")])),
            Some(1)
        );
        assert_eq!(
            canary_choice(&pat, Some(&re), &req(&[("x-canary", "never")])),
            None
        );
    }

    #[test]
    fn escaped_request_uri() {
        assert_eq!(escape_uri("/a b?x=1&y"), "%2Fa%20b%3Fx%3D1%26y");
    }
}
