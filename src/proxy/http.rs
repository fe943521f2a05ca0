//! The HTTP data plane: Pingora's `ProxyHttp`, reading one snapshot per request.
//!
//! Phases:
//! - `request_filter`: first the edge checks (`proxy::edge`: framing, sizes, path normalization); then load the
//!   snapshot (the only shared-state access of the request), find the route, apply the request's body limit (413
//!   by `Content-Length`) and the rule's ingress-nginx policy, and answer directly when the route says so (404,
//!   421, redirects, CORS preflights, 500/503 for invalid backends); otherwise pick the backend and endpoint, and
//!   note the request deadline.
//! - `upstream_peer`: the chosen endpoint (a fresh one on each retry), with the per-attempt timeout.
//! - `upstream_request_filter`: `X-Forwarded-*`, rule and backend filters (header modifiers, URL rewrite), then
//!   the request mirrors start with the headers as sent upstream.
//! - `request_body_filter`: the body limit (`proxy::edge`, 413 while the body streams); body chunks are copied
//!   to the mirrors.
//! - `upstream_response_filter`: retry on the statuses the rule's retry policy names.
//! - `response_filter`: response header modifiers and CORS headers.
//! - `error_while_proxy` / `fail_to_connect` / `fail_to_proxy`: retries of connection errors and timeouts, and
//!   the status the client gets (504 for timeouts).
//! - `logging`: tells the connection (`proxy::edge::EdgeIo`) that its oldest outstanding request was answered;
//!   request metrics and the access log.

use super::edge::{self, EdgeSettings};
use super::errors;
use super::mirror::{MirrorBodies, Mirrors};
use super::observe::{self, Attempt, BackendRef, Failure, Record, RouteRef};
use super::policy;
use super::sticky;
use super::upstream::{BackendId, Tried, Upstream};
use crate::metrics::request::{Handles, UpstreamResult};
use crate::model::{
    Cors, Filter, HashOn, HashPart, HeaderModifier, PathModifier, Redirect, Retry,
    SessionPersistence, StickyMode,
};
use crate::router::{
    normalize_host, CompiledAction, CompiledBackend, Lookup, RequestParts, RouteEntry, Target,
    WeightedBackends,
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
use pingora::upstreams::peer::H1UpgradePolicy;
use prometheus::IntGauge;
use smallvec::SmallVec;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The `ProxyHttp` implementation for one listener (address, port).
pub struct HttpApp {
    store: Arc<Store>,
    address: Option<IpAddr>,
    port: u16,
    tls: bool,
    mirrors: Mirrors,
    /// Limits and checks at the edge (`proxy::edge`).
    edge: Arc<EdgeSettings>,
    /// The listener's metrics label (`ADDRESS:PORT`).
    label: String,
    /// The label as access logs write it.
    label_json: observe::Rendered,
    /// Metric handles of requests no route answered, and the active-request gauge.
    stats: Option<(Arc<Handles>, IntGauge)>,
}

impl HttpApp {
    /// An app serving the listener at (address, logical port) from `store`; `tls` when clients connect with TLS.
    pub fn new(store: Arc<Store>, key: (Option<IpAddr>, u16), tls: bool) -> Self {
        let label = crate::router::listener_label(key.0, key.1);
        let stats = store.request_metrics().map(|m| m.listener(&label));
        HttpApp {
            store,
            address: key.0,
            port: key.1,
            tls,
            mirrors: Mirrors::default(),
            edge: Arc::new(EdgeSettings::default()),
            label,
            label_json: observe::Rendered::default(),
            stats,
        }
    }

    /// The app with these edge settings (instead of the defaults).
    pub fn with_edge(mut self, edge: Arc<EdgeSettings>) -> Self {
        self.edge = edge;
        self
    }

    /// The metric handles to record this request under: its rule's (and chosen backend's), else the listener's.
    fn handles<'a>(&'a self, ctx: &'a Ctx) -> Option<&'a Handles> {
        match ctx.entry.as_ref().and_then(|e| e.rule.stats.as_ref()) {
            Some(s) => Some(s.handles(ctx.upstream.map(|_| ctx.backend))),
            None => self.stats.as_ref().map(|(h, _)| &**h),
        }
    }

    /// Writes the access-log line of a finished request.
    fn access_log(
        &self,
        log: &observe::AccessLog,
        session: &Session,
        ctx: &Ctx,
        status: u16,
        duration: Duration,
    ) {
        let req = session.req_header();
        let header = |name: &http::HeaderName| {
            req.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        };
        let path = if log.with_query() {
            req.uri.path_and_query().map_or("/", |p| p.as_str())
        } else {
            req.uri.path()
        };
        let tls = session.digest().and_then(|d| d.ssl_digest.as_ref());
        // The user agent and referer are written by the text format only.
        let (user_agent, referer) = if log.is_text() {
            (
                header(&http::header::USER_AGENT),
                header(&http::header::REFERER),
            )
        } else {
            ("", "")
        };
        let rule = ctx.entry.as_ref().map(|e| &e.rule);
        let record = Record {
            time: std::time::SystemTime::now(),
            request_id: request_id(req, ctx.request_id.as_ref()).unwrap_or(""),
            trace_id: observe::trace_id(header(&TRACEPARENT)),
            client: session.client_addr().and_then(|a| a.as_inet()).copied(),
            method: req.method.as_str(),
            authority: std::str::from_utf8(request_host(req)).unwrap_or(""),
            path,
            protocol: version_text(req.version),
            tls_sni: if self.tls { sni(session) } else { None },
            tls_version: tls.map(|t| &*t.version),
            status,
            bytes_in: session.body_bytes_read(),
            bytes_out: session.body_bytes_sent(),
            duration,
            listener: &self.label,
            listener_json: &self.label_json,
            route: rule.map(|r| RouteRef {
                kind: r.origin.kind.as_str(),
                namespace: &r.origin.namespace,
                name: &r.origin.name,
                rule: (r.origin.rule != crate::model::Origin::DEFAULT_BACKEND)
                    .then_some(r.origin.rule),
                json: &r.log_route,
            }),
            backend: ctx.upstream().map(|u| BackendRef {
                key: &u.key,
                json: &u.log_key,
            }),
            upstreams: &ctx.log_attempts,
            retries: ctx.attempts.saturating_sub(1),
            reason: ctx.failure,
            user_agent,
            referer,
        };
        log.log(&record);
    }
}

fn version_text(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// A local answer instead of proxying: the status, and the `Location` of a redirect.
type Answer = (u16, Option<HeaderValue>);

impl HttpApp {
    /// Decides what answers a matched request: a redirect, a status, or a backend and its first endpoint (noted
    /// in `ctx`).
    fn choose(
        &self,
        snap: &Snapshot,
        entry: &RouteEntry,
        session: &Session,
        ctx: &mut Ctx,
    ) -> std::result::Result<(), Answer> {
        let req = session.req_header();
        let redirect = |rd: &Redirect| {
            location(rd, req, self.tls, self.port, entry.matched_prefix())
                .map_or((500, None), |l| (rd.status, Some(l)))
        };
        let w = match &entry.rule.action {
            CompiledAction::Redirect(rd) => return Err(redirect(rd)),
            CompiledAction::Forward(w) => w,
        };
        let sticky = entry.rule.session.as_deref();
        let incoming = sticky.and_then(|s| sticky::request_key(req, &s.carrier));
        // ingress-nginx policy hook: a canary decision picks the backend instead of the weights; then a session's
        // key does (the backend of its endpoint, or its place on the weights).
        let picked = match (ctx.policy.forced_backend, sticky, incoming) {
            (Some(i), ..) => w.backends().get(i).map(|b| (i, b)),
            (None, Some(s), Some(key)) if s.pins_backend => match s.mode {
                StickyMode::Persistent => session_backend(snap, w, key).or_else(|| w.pick()),
                StickyMode::Balanced => w.pick_for_key(key),
            },
            _ => w.pick(),
        };
        let (index, b) = picked.ok_or((500, None))?;
        if let Some(rd) = &b.redirect {
            return Err(redirect(rd));
        }
        let id = match &b.target {
            Target::Status { status, .. } => return Err((*status, None)),
            Target::Backend(id) => *id,
        };
        let upstream = snap.upstreams.get(id).ok_or((500, None))?;
        if let Some(reason) = upstream.unusable() {
            tracing::debug!(backend = %upstream.key, reason, "backend unusable");
            return Err((500, None));
        }
        let client = client_ip(session);
        let endpoint = match sticky {
            Some(s) => sticky_endpoint(s, upstream, incoming, req, client, ctx),
            None => with_hash_key(upstream.hash_on(), req, client, |key| {
                upstream.select(key, &Tried::default())
            }),
        }
        .ok_or((503, None))?;
        ctx.backend = index;
        ctx.upstream = Some(id);
        ctx.endpoint = Some(endpoint);
        ctx.tried.add(endpoint);
        Ok(())
    }
}

impl HttpApp {
    /// Answers with the error backend's page for `code` (ingress-nginx `custom-http-errors`), or with the proxy's
    /// own page for `code` when the error backend cannot give one.
    async fn custom_error(&self, session: &mut Session, code: u16, ctx: &mut Ctx) -> FailToProxy {
        let ce = ctx
            .entry
            .as_ref()
            .and_then(|e| e.rule.custom_errors.as_ref());
        let upstream = match ce.map(|c| &c.target) {
            Some(Target::Backend(id)) => ctx.snap.as_ref().and_then(|s| s.upstreams.get(*id)),
            _ => None,
        };
        let request_id = request_id(session.req_header(), ctx.request_id.as_ref());
        let page = match (ce, upstream) {
            (Some(ce), Some(u)) => {
                errors::fetch(ce, u, code, session.req_header(), request_id)
                    .await
                    .map_err(|e| tracing::warn!(error = %e, "custom-http-errors: no page from the error backend"))
                    .ok()
            }
            _ => None,
        };
        let written = match page {
            Some((mut resp, body)) => {
                let status = resp.status.as_u16();
                let head_only = session.req_header().method == http::Method::HEAD;
                let sent = async {
                    add_server_header(&mut resp)?;
                    session
                        .write_response_header(Box::new(resp), body.is_empty() || head_only)
                        .await?;
                    if !body.is_empty() && !head_only {
                        session.write_response_body(Some(body), true).await?;
                    }
                    Ok::<_, Box<Error>>(())
                }
                .await;
                sent.map(|()| status)
            }
            None => {
                let grpc = ctx.entry.as_ref().is_some_and(|e| e.rule.grpc);
                answer(session, grpc, code, None).await.map(|_| code)
            }
        };
        FailToProxy {
            error_code: written.unwrap_or(0),
            can_reuse_downstream: false,
        }
    }
}

/// The candidate of a rule whose upstream has the endpoint a persistent session key names.
fn session_backend<'w>(
    snap: &Snapshot,
    w: &'w WeightedBackends,
    key: u64,
) -> Option<(usize, &'w CompiledBackend)> {
    w.backends()
        .iter()
        .enumerate()
        .find(|(_, b)| match b.target {
            Target::Backend(id) => snap
                .upstreams
                .get(id)
                .is_some_and(|u| u.find_session(key).is_some()),
            Target::Status { .. } => false,
        })
}

/// Chooses the first endpoint of a request under session persistence, and notes in `ctx` the session key in use
/// and the key to hand to the client (a new session, or a session moved because its endpoint is gone or, with
/// `change_on_failure`, out of rotation).
fn sticky_endpoint(
    s: &SessionPersistence,
    upstream: &Upstream,
    incoming: Option<u64>,
    req: &RequestHeader,
    client: Option<IpAddr>,
    ctx: &mut Ctx,
) -> Option<usize> {
    let none = Tried::default();
    match s.mode {
        StickyMode::Persistent => {
            let known = incoming.and_then(|k| upstream.find_session(k));
            if let Some(i) = known.filter(|&i| upstream.endpoint_available(i)) {
                ctx.session_key = incoming;
                return Some(i);
            }
            let i = with_hash_key(upstream.hash_on(), req, client, |key| {
                upstream.select(key, &none)
            })?;
            let key = upstream.endpoint_session_key(i);
            // A session whose endpoint still exists keeps its key (it returns there once the endpoint is back),
            // unless the rule moves sessions on failure.
            if known.is_none() || s.change_on_failure {
                ctx.session_issue = key;
                ctx.session_key = key;
            } else {
                ctx.session_key = incoming;
            }
            Some(i)
        }
        StickyMode::Balanced => {
            let key = incoming.unwrap_or_else(random_key);
            if incoming.is_none() {
                ctx.session_issue = Some(key);
            }
            ctx.session_key = Some(key);
            upstream.select_balanced(key, &none)
        }
    }
}

/// Chooses the endpoint of a retry under session persistence: another endpoint, and, when the rule moves sessions
/// on failure, a key for it handed to the client.
fn sticky_retry(
    s: &SessionPersistence,
    upstream: &Upstream,
    req: &RequestHeader,
    client: Option<IpAddr>,
    ctx: &mut Ctx,
) -> Option<usize> {
    let none = Tried::default();
    match s.mode {
        StickyMode::Persistent => {
            let i = with_hash_key(upstream.hash_on(), req, client, |key| {
                upstream
                    .select(key, &ctx.tried)
                    .or_else(|| upstream.select(key, &none))
            })?;
            if s.change_on_failure || ctx.session_issue.is_some() {
                ctx.session_issue = upstream.endpoint_session_key(i);
                ctx.session_key = ctx.session_issue;
            }
            Some(i)
        }
        StickyMode::Balanced => {
            let key = ctx.session_key.unwrap_or_else(random_key);
            if s.change_on_failure || ctx.session_issue.is_some() {
                // A new key whose own endpoint (its first place on the ring, not a fallback past the failed one)
                // is one this request has not tried: later requests with the key go there too. A few draws; if
                // none lands, the session keeps its key.
                for _ in 0..16 {
                    let k = random_key();
                    if let Some(i) = upstream
                        .select_balanced(k, &none)
                        .filter(|&i| !ctx.tried.contains(i))
                    {
                        ctx.session_issue = Some(k);
                        ctx.session_key = Some(k);
                        return Some(i);
                    }
                }
            }
            upstream
                .select_balanced(key, &ctx.tried)
                .or_else(|| upstream.select_balanced(key, &none))
        }
    }
}

/// A random session key.
fn random_key() -> u64 {
    fastrand::u64(..)
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
    /// The chosen candidate of the rule's weighted backends.
    backend: usize,
    /// The backend's upstream, when the candidate proxies.
    upstream: Option<BackendId>,
    /// The endpoint of the current attempt (an index into the upstream's endpoints).
    endpoint: Option<usize>,
    /// Endpoints tried so far.
    tried: Tried,
    /// The session key in use, under session persistence.
    session_key: Option<u64>,
    /// The session key to hand to the client with the response.
    session_issue: Option<u64>,
    /// The backend's answer had this status, which the rule's `custom-http-errors` replaces.
    intercepted: Option<u16>,
    /// Attempts made so far (1 on the first try).
    attempts: u32,
    /// The current attempt's connection failed (nothing was sent).
    connect_failed: bool,
    /// The current attempt got a response header.
    answered: bool,
    /// When the current attempt started, for backends that select by latency.
    attempt_started: Option<Instant>,
    /// When the request timeout passes.
    deadline: Option<Instant>,
    /// When the first attempt started (rules whose retries stop after a while).
    first_attempt: Option<Instant>,
    /// The request's `Origin`, when the rule has CORS and the origin is allowed.
    cors_origin: Option<HeaderValue>,
    mirrors: MirrorBodies,
    mirrors_started: bool,
    /// The edge checks' state (the request's body limit, body size so far).
    edge: edge::RequestState,
    /// ingress-nginx policy state of the request (`proxy::policy`).
    policy: policy::RequestState,
    /// When the request head was read (set when request metrics or logs are on).
    started: Option<Instant>,
    /// When the current attempt started.
    attempt_clock: Option<Instant>,
    /// Why no backend answered, when none did.
    failure: Option<Failure>,
    /// The `X-Request-ID` made here when the client sent none (access log on only); it goes upstream.
    request_id: Option<observe::RequestId>,
    /// The request's `Upgrade` to a listed protocol other than WebSocket goes upstream as it came
    /// (`--upgrade-protocols`); the filter then drops the other hop-by-hop fields itself.
    upgrade_preserved: bool,
    /// The attempts, for the access log (access log on only); inline up to two.
    log_attempts: SmallVec<[Attempt; 2]>,
}

impl Ctx {
    /// May a failed attempt be tried again under the rule's retry policy (attempts left, deadline not passed)?
    fn can_retry(&self) -> bool {
        let Some(entry) = &self.entry else {
            return false;
        };
        let Some(r) = &entry.rule.retry else {
            return false;
        };
        let within = match (r.within_ms, self.first_attempt) {
            (Some(ms), Some(t)) => t.elapsed() < Duration::from_millis(ms),
            _ => true,
        };
        let endpoints_left = !r.distinct_endpoints
            || self
                .upstream()
                .is_some_and(|u| u.endpoints().len() > self.tried.len());
        self.attempts <= r.attempts && self.before_deadline() && within && endpoints_left
    }

    /// The rule's retry policy, if it has one.
    fn retry_policy(&self) -> Option<&Retry> {
        self.entry.as_ref()?.rule.retry.as_ref()
    }

    fn before_deadline(&self) -> bool {
        self.deadline.is_none_or(|d| Instant::now() < d)
    }

    /// May an attempt whose connection failed (so nothing was sent) be made again on another endpoint?
    fn can_retry_connect(&self, upstream: &Upstream) -> bool {
        self.attempts < CONNECT_ATTEMPTS
            && upstream.endpoints().len() > self.tried.len()
            && self.before_deadline()
    }

    /// May a response with `status` be retried, for a request with `method`?
    fn retries_status(&self, status: u16, method: &http::Method) -> bool {
        self.retry_policy().is_some_and(|r| {
            r.codes.contains(&status) && (!r.idempotent_only || method.is_idempotent())
        }) && self.can_retry()
    }

    fn backend(&self) -> Option<&CompiledBackend> {
        match &self.entry.as_ref()?.rule.action {
            CompiledAction::Forward(w) => w.backends().get(self.backend),
            CompiledAction::Redirect(_) => None,
        }
    }

    fn upstream(&self) -> Option<&Arc<Upstream>> {
        self.snap.as_ref()?.upstreams.get(self.upstream?)
    }

    /// Ends the bookkeeping of the current attempt (in-flight count and latency, for least-request backends).
    fn attempt_done(&mut self, latency: Option<Duration>) {
        if self.attempt_started.take().is_none() {
            return;
        }
        if let (Some(i), Some(u)) = (self.endpoint, self.upstream()) {
            u.on_attempt_done(i, latency);
        }
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        // A request that ends without a response header (client gone, error) still leaves the in-flight count.
        self.attempt_done(None);
    }
}

/// Attempts a request may make when connections fail before anything was sent (each on an endpoint not tried yet).
const CONNECT_ATTEMPTS: u32 = 3;

/// Calls `f` with the bytes consistent hashing uses for this request (empty when the property is absent).
/// A single property is passed as it stands in the request; a host name and a key of several parts are written
/// into a buffer kept per thread, so no request allocates for its key.
fn with_hash_key<R>(
    on: Option<&HashOn>,
    req: &RequestHeader,
    client: Option<IpAddr>,
    f: impl FnOnce(&[u8]) -> R,
) -> R {
    match on {
        None => f(b""),
        Some(on @ (HashOn::Host | HashOn::Parts(_))) => HASH_KEY.with(|cell| {
            // Taken, not borrowed: a nested call (there is none) would get an empty buffer, not a panic.
            let mut buf = cell.take();
            buf.clear();
            if let HashOn::Parts(parts) = on {
                for part in parts {
                    match part {
                        HashPart::Text(t) => buf.extend_from_slice(t.as_bytes()),
                        HashPart::Var(v) => append_hash_property(&mut buf, v, req, client),
                    }
                }
            } else {
                append_hash_property(&mut buf, on, req, client);
            }
            let r = f(&buf);
            cell.set(buf);
            r
        }),
        Some(on) => {
            let mut ip = [0u8; 16];
            f(hash_property(on, req, client, &mut ip))
        }
    }
}

thread_local! {
    /// The buffer [`with_hash_key`] writes keys of several parts into.
    static HASH_KEY: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Appends one property of a key of several parts: the host name lowercased, anything else as it stands.
fn append_hash_property(
    buf: &mut Vec<u8>,
    on: &HashOn,
    req: &RequestHeader,
    client: Option<IpAddr>,
) {
    if let HashOn::Host = on {
        let host = request_host(req);
        buf.extend(host_without_port(host).iter().map(u8::to_ascii_lowercase));
    } else {
        let mut ip = [0u8; 16];
        buf.extend_from_slice(hash_property(on, req, client, &mut ip));
    }
}

/// The host of a Host header or authority without its port (`strip_port`); not UTF-8: as it stands.
fn host_without_port(host: &[u8]) -> &[u8] {
    std::str::from_utf8(host).map_or(host, |h| strip_port(h).as_bytes())
}

/// The bytes of one request property (empty when the request lacks it); `ip` holds an address's octets.
fn hash_property<'r>(
    on: &HashOn,
    req: &'r RequestHeader,
    client: Option<IpAddr>,
    ip: &'r mut [u8; 16],
) -> &'r [u8] {
    match on {
        HashOn::SourceIp => match client {
            Some(IpAddr::V4(a)) => {
                ip[..4].copy_from_slice(&a.octets());
                &ip[..4]
            }
            Some(IpAddr::V6(a)) => {
                *ip = a.octets();
                &ip[..]
            }
            None => b"",
        },
        HashOn::Uri => req
            .uri
            .path_and_query()
            .map_or(&b""[..], |p| p.as_str().as_bytes()),
        HashOn::Path => req.uri.path().as_bytes(),
        HashOn::Query => req.uri.query().map_or(&b""[..], str::as_bytes),
        HashOn::Method => req.method.as_str().as_bytes(),
        HashOn::Header(name) => req
            .headers
            .get(name.as_str())
            .map_or(&b""[..], |v| v.as_bytes()),
        HashOn::Cookie(name) => req
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
            .find_map(|pair| {
                let pair = pair.trim_ascii_start();
                pair.strip_prefix(name.as_bytes())?.strip_prefix(b"=")
            })
            .unwrap_or(b""),
        HashOn::QueryParam(name) => req
            .uri
            .query()
            .and_then(|q| {
                q.split('&').find_map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (k == name).then_some(v)
                })
            })
            .map_or(&b""[..], str::as_bytes),
        // The host is lowercased into the key buffer (`append_hash_property`); keys are never nested.
        HashOn::Host | HashOn::Parts(_) => b"",
    }
}

/// The request's id, as the access log and the error backend see it: the one made for it, else the client's
/// non-empty `X-Request-ID` (one is made when the client sent none, an empty one or one that is not text, and only
/// when access logs are on; the upstream gets the made one, else the client's header as it came).
fn request_id<'a>(req: &'a RequestHeader, made: Option<&'a observe::RequestId>) -> Option<&'a str> {
    match made {
        Some(m) => Some(m.as_str()),
        None => req
            .headers
            .get(X_REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty()),
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
/// Adds the `Server` header (`--server-header`) unless the response has one.
pub(super) fn add_server_header(resp: &mut ResponseHeader) -> Result<()> {
    if let Some(v) = observe::server_header() {
        if !resp.headers.contains_key(http::header::SERVER) {
            resp.insert_header(http::header::SERVER, v.clone())?;
        }
    }
    Ok(())
}

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
    let mut resp = ResponseHeader::build(code, Some(4))?;
    add_server_header(&mut resp)?;
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

/// Writes a local answer: a gRPC status to a gRPC client when the rule serves gRPC (`grpc_rule`), else the HTTP
/// status (and `Location`).
async fn answer(
    session: &mut Session,
    grpc_rule: bool,
    status: u16,
    location: Option<HeaderValue>,
) -> Result<bool> {
    if grpc_rule && location.is_none() && super::grpc::is_grpc_request(session.req_header()) {
        return super::grpc::respond(session, status).await;
    }
    respond(session, status, location).await
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
            | Filter::RequestRedirect(_)
            | Filter::Policy(_)
            | Filter::CustomErrors(_) => {}
        }
    }
    Ok(())
}

/// `x-forwarded-for`, for lookups without parsing the name on every request.
const X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");
const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");
const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

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
    let mut resp = ResponseHeader::build(StatusCode::OK, Some(9))?;
    add_server_header(&mut resp)?;
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
        if let Some((_, active)) = &self.stats {
            ctx.started = Some(Instant::now());
            active.inc();
        }
        if observe::access_log().is_some() {
            ctx.started.get_or_insert_with(Instant::now);
            // The client's id is read again when the line is written; one is made only when it sent none.
            let given = session
                .req_header()
                .headers
                .get(X_REQUEST_ID)
                .is_some_and(|v| !v.is_empty() && v.to_str().is_ok());
            if !given {
                ctx.request_id = Some(observe::RequestId::random());
            }
        }
        // Edge hook: framing, sizes and path normalization before anything reads the request (proxy::edge). After
        // the metrics clock starts, so that refusals are counted and logged under the listener.
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
            Lookup::NotFound | Lookup::Misdirected => {
                ctx.failure = Some(Failure::NoRoute);
                let status = if matches!(lookup, Lookup::NotFound) {
                    404
                } else {
                    421
                };
                // No rule to ask: a gRPC client gets a gRPC answer whatever the listener serves.
                return answer(session, true, status, None).await;
            }
        };
        // Noted now so that every answer, local ones too, is counted under its route.
        ctx.entry = Some(entry.clone());
        // Edge hook, and ingress-nginx policy hook: the body limit is the rule's `proxy-body-size` when it has
        // one, else `--max-request-body`; a declared `Content-Length` over it is answered 413 here, as nginx does
        // when it has found the location (proxy::edge::body_limit).
        let rule_limit = entry
            .rule
            .policy
            .as_ref()
            .and_then(|p| p.policy.max_body_bytes);
        let limit = edge::body_limit(&self.edge, rule_limit);
        if edge::limit_body(session, &mut ctx.edge, limit).await? {
            return Ok(true);
        }
        // ingress-nginx policy hook: redirects, limits, access checks, auth, canary choice.
        if let Some(p) = entry.rule.policy.clone() {
            let conn = policy::Conn {
                tls: self.tls,
                port: self.port,
            };
            if let Some(answer) = policy::on_request(&p, session, &mut ctx.policy, conn).await? {
                return policy::write_answer(session, answer).await;
            }
        }
        let req = session.req_header();
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
        let outcome = self.choose(&snap, &entry, session, ctx);
        if let Some(ms) = entry.rule.timeouts.request_ms {
            ctx.deadline = Some(Instant::now() + Duration::from_millis(ms));
        }
        let retries = entry.rule.retry.is_some();
        ctx.snap = Some(snap);
        match outcome {
            Ok(()) => {
                if retries {
                    // Keep the request body so that a retry can send it again.
                    session.enable_retry_buffering();
                }
                Ok(false)
            }
            Err((status, loc)) => {
                if status == 503 {
                    ctx.failure = Some(Failure::NoHealthyUpstream);
                }
                answer(session, entry.rule.grpc, status, loc).await
            }
        }
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        ctx.attempts += 1;
        if ctx.attempts == 1 && ctx.retry_policy().is_some_and(|r| r.within_ms.is_some()) {
            ctx.first_attempt = Some(Instant::now());
        }
        ctx.connect_failed = false;
        ctx.answered = false;
        let upstream = ctx
            .upstream()
            .cloned()
            .ok_or_else(|| Error::explain(HTTPStatus(500), "no backend chosen"))?;
        if ctx.attempts > 1 {
            // A retry: back off if the policy says so, and move to an endpoint not tried yet (the same ones again
            // when every endpoint was tried and the route's policy still retries).
            ctx.attempt_done(None);
            let backoff = ctx
                .entry
                .as_ref()
                .and_then(|e| e.rule.retry.as_ref())
                .and_then(|r| r.backoff_ms);
            if let Some(ms) = backoff {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            let client = client_ip(session);
            let entry = ctx.entry.clone();
            let next = match entry.as_ref().and_then(|e| e.rule.session.as_deref()) {
                Some(s) => sticky_retry(s, &upstream, session.req_header(), client, ctx),
                None => with_hash_key(upstream.hash_on(), session.req_header(), client, |key| {
                    upstream
                        .select(key, &ctx.tried)
                        .or_else(|| upstream.select(key, &Tried::default()))
                }),
            };
            if let Some(i) = next {
                ctx.endpoint = Some(i);
                ctx.tried.add(i);
            }
            upstream.record_retry();
        }
        let ep = ctx
            .endpoint
            .and_then(|i| upstream.endpoint(i))
            .ok_or_else(|| Error::explain(HTTPStatus(503), "no endpoint"))?;
        let mut peer = upstream.peer(ep);
        if let Some(protocol) = session.req_header().headers.get(http::header::UPGRADE) {
            let policy = self.edge.upgrade_policy(protocol.as_bytes());
            ctx.upgrade_preserved = policy == H1UpgradePolicy::Preserve;
            peer.options.http_upstream_request_policy.h1_upgrade = policy;
        }
        if let Some(ms) = ctx.entry.as_ref().and_then(|e| e.rule.timeouts.connect_ms) {
            peer.options.connection_timeout = Some(Duration::from_millis(ms));
        }
        // One clock read for the attempt's log time, its load-tracking start and the request deadline.
        let now = Instant::now();
        ctx.attempt_clock = Some(now);
        if observe::access_log().is_some() {
            ctx.log_attempts.push(Attempt {
                addr: ep.addr,
                status: None,
                took: Duration::ZERO,
            });
        }
        if let Some(i) = ctx.endpoint {
            upstream.on_attempt(i);
            if upstream.tracks_load() {
                ctx.attempt_started = Some(now);
            }
        }
        // The attempt may last the backend timeout, and no longer than what is left of the request timeout.
        let mut limit = ctx
            .entry
            .as_ref()
            .and_then(|e| e.rule.timeouts.backend_request_ms)
            .map(Duration::from_millis);
        if let Some(deadline) = ctx.deadline {
            let left = deadline.saturating_duration_since(now);
            if left.is_zero() {
                return Err(Error::explain(HTTPStatus(504), "request timeout"));
            }
            limit = Some(limit.map_or(left, |l| l.min(left)));
        }
        if let Some(l) = limit {
            peer.options.read_timeout = Some(l);
            peer.options.write_timeout = Some(l);
        }
        // ingress-nginx policy hook: idle read and send timeouts.
        if let Some(p) = ctx.entry.as_ref().and_then(|e| e.rule.policy.as_ref()) {
            policy::peer_options(p, &mut peer);
        }
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if ctx.upgrade_preserved {
            // Pingora forwards a preserved upgrade's head whole; the standard hop-by-hop fields other than the
            // handshake's own (`Connection`, `Upgrade`) and the body's framing still stop here (RFC 9110 §7.6.1).
            for name in [
                "keep-alive",
                "proxy-connection",
                "proxy-authenticate",
                "proxy-authorization",
                "te",
                "trailer",
                "http2-settings",
            ] {
                upstream.remove_header(name);
            }
        }
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
        if let Some(id) = &ctx.request_id {
            upstream.insert_header("x-request-id", id.header_value())?;
        }
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
        // ingress-nginx policy hook: rewrite, Host, auth headers, forwarded headers.
        if let Some(p) = &entry.rule.policy {
            let conn = policy::Conn {
                tls: self.tls,
                port: self.port,
            };
            policy::upstream_request(p, &ctx.policy, upstream, conn)?;
        }
        // Mirrors get the request as it goes upstream, once (not again on retries).
        if !ctx.mirrors_started {
            ctx.mirrors_started = true;
            if let Some(snap) = ctx.snap.clone() {
                let body = has_body(upstream);
                let ups = &snap.upstreams;
                self.mirrors
                    .start(&entry.rule.mirrors, ups, upstream, body, &mut ctx.mirrors);
                if let CompiledAction::Forward(w) = &entry.rule.action {
                    if let Some(b) = w.backends().get(ctx.backend) {
                        self.mirrors
                            .start(&b.mirrors, ups, upstream, body, &mut ctx.mirrors);
                    }
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
        // Edge hook: the request's body limit (`--max-request-body`, or the rule's `proxy-body-size`), counted as
        // the body arrives (proxy::edge).
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
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.answered = true;
        if let (Some(i), Some(u)) = (ctx.endpoint, ctx.upstream()) {
            u.record_success(i);
        }
        let took = ctx.attempt_clock.map(|t| t.elapsed());
        if let (Some(h), Some(took)) = (self.handles(ctx), took) {
            h.upstream_result(UpstreamResult::Ok);
            h.upstream_duration(took);
        }
        if let Some(a) = ctx.log_attempts.last_mut() {
            a.status = Some(resp.status.as_u16());
            a.took = took.unwrap_or_default();
        }
        let latency = ctx.attempt_started.map(|t| t.elapsed());
        ctx.attempt_done(latency);
        let status = resp.status.as_u16();
        if ctx.retries_status(status, &session.req_header().method) {
            let mut e = Error::explain(
                HTTPStatus(status),
                "retrying: the retry policy names this status",
            );
            e.set_retry(true);
            return Err(e);
        }
        // ingress-nginx custom-http-errors: the error backend answers instead (in fail_to_proxy).
        if ctx
            .entry
            .as_ref()
            .and_then(|e| e.rule.custom_errors.as_ref())
            .is_some_and(|c| c.codes.contains(&status))
        {
            ctx.intercepted = Some(status);
            let mut e = Error::explain(HTTPStatus(status), "custom-http-errors: intercepted");
            e.set_retry(false);
            return Err(e);
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        add_server_header(resp)?;
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
        // ingress-nginx policy hook: CORS headers, external auth cookies.
        if let Some(p) = &entry.rule.policy {
            policy::response(p, &ctx.policy, resp)?;
        }
        if let (Some(key), Some(s)) = (ctx.session_issue, entry.rule.session.as_deref()) {
            let ua = session
                .req_header()
                .headers
                .get(http::header::USER_AGENT)
                .map(|v| v.as_bytes());
            if let Some((name, value)) = sticky::response_header(&s.carrier, key, self.tls, ua) {
                resp.append_header(name, value)?;
            }
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Nothing was sent: the endpoint is at fault, and the request can go to another one.
        ctx.connect_failed = true;
        ctx.attempt_done(None);
        self.attempt_failed(ctx, UpstreamResult::ConnectError);
        if let Some(u) = ctx.upstream().cloned() {
            if let Some(i) = ctx.endpoint {
                u.record_failure(i);
            }
            // The rule's policy, when it names this failure; the proxy's own retry of failed connections, unless
            // the policy names failures of its own (ingress-nginx's `proxy-next-upstream`).
            let timeout = matches!(e.etype(), ConnectTimedout);
            let by_policy =
                ctx.retry_policy()
                    .is_some_and(|r| if timeout { r.on.timeout } else { r.on.error })
                    && ctx.can_retry();
            let by_default =
                ctx.retry_policy().is_none_or(|r| r.on.is_all()) && ctx.can_retry_connect(&u);
            if by_policy || by_default {
                e.set_retry(true);
            }
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
        ctx.attempt_done(None);
        if !ctx.answered && e.esource() == &ErrorSource::Upstream {
            let result = if matches!(e.etype(), ReadTimedout | WriteTimedout) {
                UpstreamResult::Timeout
            } else {
                UpstreamResult::Reset
            };
            self.attempt_failed(ctx, result);
        }
        // Before any response: a timeout, or a connection the endpoint broke (a reused idle connection that turns
        // out closed is not the endpoint's fault), counts against the endpoint.
        if !ctx.answered && e.esource() == &ErrorSource::Upstream {
            let endpoint_fault = matches!(e.etype(), ReadTimedout | WriteTimedout)
                || (!client_reused
                    && matches!(e.etype(), ConnectionClosed | ReadError | WriteError));
            if endpoint_fault {
                if let (Some(i), Some(u)) = (ctx.endpoint, ctx.upstream()) {
                    u.record_failure(i);
                }
            }
        }
        let mut e = e.more_context(format!("Peer: {peer}"));
        if ctx.intercepted.is_some() {
            // The answer is replaced, not retried.
            e.set_retry(false);
        } else if e.esource() == &ErrorSource::Downstream {
            // The client's fault (it left, or its body passed the limit: proxy::edge::count_body): another
            // attempt would not do better, and must not send the body again without its limit.
            e.set_retry(false);
        } else if let Some(r) = ctx.retry_policy() {
            // The route's policy decides: the failures it names are retried while attempts last (a request
            // that is not idempotent only if the policy allows), unless the request body could not be kept.
            let named = match e.etype() {
                // A status the policy retries (upstream_response_filter decided, the method included).
                HTTPStatus(_) => e.retry(),
                ReadTimedout | WriteTimedout => r.on.timeout,
                InvalidHTTPHeader => r.on.invalid_header,
                _ => r.on.error,
            };
            let method_ok = !r.idempotent_only || session.req_header().method.is_idempotent();
            let retry =
                named && method_ok && ctx.can_retry() && !session.as_ref().retry_buffer_truncated();
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
        if let Some(code) = ctx.intercepted {
            return self.custom_error(session, code, ctx).await;
        }
        let code = match e.etype() {
            HTTPStatus(code) => *code,
            ConnectTimedout | ReadTimedout | WriteTimedout => 504,
            _ => match e.esource() {
                // Retries used up on connection errors: the backend is unavailable.
                ErrorSource::Upstream
                    if ctx.retry_policy().is_some_and(|r| !r.distinct_endpoints) =>
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
        ctx.failure = match code {
            0 => Some(Failure::DownstreamDisconnect),
            504 => Some(Failure::UpstreamTimeout),
            502 | 503 if ctx.connect_failed => Some(Failure::UpstreamConnectFailure),
            _ => ctx.failure,
        };
        // Edge fix: once a response header went out (an upstream that broke its own framing mid-body), an error
        // page written now would become that response's body; the connection is closed instead.
        if code > 0 && session.response_written().is_none() {
            if ctx.connect_failed {
                // Pingora does not keep a client connection after a failed upstream connect: say so.
                session.set_keepalive(None);
            }
            let grpc = ctx.entry.as_ref().is_some_and(|e| e.rule.grpc);
            let _ = answer(session, grpc, code, None).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        // Edge hook: the request is over; the connection counts it answered (proxy::edge).
        edge::request_done(session);
        let Some(started) = ctx.started else {
            return;
        };
        let duration = started.elapsed();
        // No response sent: the client left first (nginx's 499).
        let status = session
            .response_written()
            .map_or(499, |r| r.status.as_u16());
        if let Some((_, active)) = &self.stats {
            active.dec();
        }
        if let Some(h) = self.handles(ctx) {
            h.request(&session.req_header().method, status);
            h.duration(status, duration);
            h.retries(u64::from(ctx.attempts.saturating_sub(1)));
            h.bytes(
                session.body_bytes_read() as u64,
                session.body_bytes_sent() as u64,
            );
        }
        if let Some(log) = observe::access_log() {
            self.access_log(log, session, ctx, status, duration);
        }
    }
}

impl HttpApp {
    /// Counts a failed attempt and notes its time for the access log.
    fn attempt_failed(&self, ctx: &mut Ctx, result: UpstreamResult) {
        let took = ctx.attempt_clock.take().map(|t| t.elapsed());
        if let Some(h) = self.handles(ctx) {
            h.upstream_result(result);
        }
        if let Some(a) = ctx.log_attempts.last_mut() {
            a.took = took.unwrap_or_default();
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
    fn hash_keys_concatenate_their_parts() {
        use crate::model::HashPart;
        let mut req = RequestHeader::build("GET", b"/cart/1?id=7&x=y", None).unwrap();
        req.insert_header("host", "Shop.Example.com:8443").unwrap();
        req.insert_header("cookie", "a=1; sid=abc").unwrap();
        req.insert_header("x-user", "u9").unwrap();
        let client = Some(IpAddr::from([10, 1, 2, 3]));
        let key = |on: HashOn| with_hash_key(Some(&on), &req, client, <[u8]>::to_vec);
        assert_eq!(key(HashOn::Host), b"shop.example.com");
        assert_eq!(key(HashOn::Path), b"/cart/1");
        assert_eq!(key(HashOn::Query), b"id=7&x=y");
        assert_eq!(key(HashOn::Method), b"GET");
        assert_eq!(key(HashOn::SourceIp), [10, 1, 2, 3]);
        let parts = HashOn::Parts(vec![
            HashPart::Var(HashOn::Host),
            HashPart::Text("|".into()),
            HashPart::Var(HashOn::Uri),
            HashPart::Text("|".into()),
            HashPart::Var(HashOn::Cookie("sid".into())),
            HashPart::Var(HashOn::Header("x-user".into())),
            HashPart::Var(HashOn::QueryParam("id".into())),
            HashPart::Var(HashOn::Header("absent".into())),
        ]);
        assert_eq!(
            key(parts.clone()),
            b"shop.example.com|/cart/1?id=7&x=y|abcu97"
        );
        // The per-thread buffer is cleared between keys.
        assert_eq!(key(parts), b"shop.example.com|/cart/1?id=7&x=y|abcu97");
        assert_eq!(with_hash_key(None, &req, client, <[u8]>::to_vec), b"");
        let mut v6 = RequestHeader::build("GET", b"/", None).unwrap();
        v6.insert_header("host", "[::1]:80").unwrap();
        assert_eq!(
            with_hash_key(Some(&HashOn::Host), &v6, None, <[u8]>::to_vec),
            b"[::1]"
        );
    }

    #[test]
    fn strips_ports() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }
}
