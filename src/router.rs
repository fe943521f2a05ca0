//! The compiled routing index the hot path reads.
//!
//! Per listener port: listener hostnames (Gateway listener isolation) in a [`HostIndex`], and inside each, request
//! hostnames in another [`HostIndex`] whose values are rule lists already sorted by precedence
//! ([`crate::model::precedence`]), so matching a request is two hash lookups and a walk down one list.

mod hosts;
mod matcher;

pub use hosts::HostIndex;
pub use matcher::RequestParts;

pub use crate::proxy::upstream::BackendId;

use crate::metrics::request::{Resolver, RouteStats};
use crate::model::{
    precedence, Action, Backend, BackendGroup, BackendKey, Cors, Filter, HostPattern, HttpListener,
    HttpRule, ListenerKey, ListenerKind, Model, Origin, Protocol, Redirect, Retry, Timeouts,
    TlsMode, TlsRoute, Transport,
};
use http::HeaderName;
use matcher::{HeaderHint, Matcher};
use std::collections::HashMap;
use std::sync::Arc;

/// Why a model could not be compiled. Translation validates everything compiled here, so this only happens on a
/// model built by hand.
#[derive(Debug, thiserror::Error)]
#[error("cannot compile {origin}: {reason}")]
pub struct CompileError {
    /// The rule at fault.
    pub origin: String,
    /// What is wrong.
    pub reason: String,
}

/// The compiled index over a whole [`Model`].
#[derive(Debug, Default)]
pub struct Router {
    listeners: Vec<ListenerTable>,
    /// Every regex of the table (paths, header and query values), by pattern, for the next compile to reuse.
    regexes: matcher::CompiledRegexes,
}

/// A host's entries in precedence order, each with an inline [`Quick`] check so that the walk rejects most
/// non-matching entries without following the `Arc` (the walk stays in one contiguous array).
#[derive(Debug)]
struct RuleList {
    candidates: Box<[Candidate]>,
    /// Does the listener's default backend answer when no entry matches? `false` for a host whose search stops at
    /// an ingress-nginx server that the default backend does not belong to ([`precedence::Server`]): 404.
    use_default: bool,
}

/// One entry of a [`RuleList`].
#[derive(Debug)]
struct Candidate {
    quick: Quick,
    /// The entry's path regex, if its path condition is one (the same `Arc` as in its matcher): held here, the
    /// regex's address is known without reading the entry first, so that in a cold table the two are fetched
    /// together rather than one after the other.
    path_regex: Option<Arc<matcher::CompiledRegex>>,
    entry: Arc<RouteEntry>,
}

impl Candidate {
    /// Does the entry match (`quick` having passed)?
    #[inline]
    fn is_match(&self, req: &RequestParts<'_>) -> bool {
        let path_ok = match &self.path_regex {
            Some(re) => re.is_match(req.path),
            None => self.entry.matcher.path_matches(req.path),
        };
        path_ok && self.entry.matcher.is_match_but_path(req)
    }
}

/// Necessary conditions of an entry's match, kept inline: the path must start with `head` (the first bytes of an
/// Exact path, of a Prefix other than `/`, or of a regex's literal prefix) and be at least `min_len` long; and
/// when the entry requires a header to have an exact value, the request's value must hash to `header_value`, or,
/// failing that, when a header's regex requires a literal prefix, the value must start with its first
/// `header_starts` bytes, kept in `header_value` (`header` indexes the listener's `header_names`).
#[derive(Debug)]
struct Quick {
    /// Saturates at `u16::MAX` (a weaker but still necessary condition), so that a [`Candidate`] fits in 48
    /// bytes.
    min_len: u16,
    head_len: u8,
    head: [u8; Quick::HEAD],
    header: u8,
    /// 0: `header_value` is the hash of an exact value; 1-8: the number of prefix bytes in `header_value`.
    header_starts: u8,
    header_value: u64,
}

impl Quick {
    const HEAD: usize = 19;
    /// `header` when the entry has no exact header condition (or the listener has too many header names).
    const NO_HEADER: u8 = u8::MAX;

    fn new(m: &Matcher, header_names: &mut Vec<HeaderName>) -> Quick {
        let (min_len, text) = m.path_hint();
        let n = text.len().min(Quick::HEAD);
        let mut head = [0u8; Quick::HEAD];
        head[..n].copy_from_slice(&text[..n]);
        let (header, header_starts, header_value) = match m.header_hint() {
            Some((name, hint)) => {
                let idx = match header_names.iter().position(|h| h == name) {
                    Some(i) => i,
                    None => {
                        header_names.push(name.clone());
                        header_names.len() - 1
                    }
                };
                match (
                    u8::try_from(idx).ok().filter(|&i| i != Quick::NO_HEADER),
                    hint,
                ) {
                    (Some(i), HeaderHint::Exact(v)) => (i, 0, hosts::bytes_hash(v)),
                    (Some(i), HeaderHint::Starts(head)) => {
                        let n = head.len().min(8);
                        (i, n as u8, first_word(&head[..n]))
                    }
                    (None, _) => (Quick::NO_HEADER, 0, 0),
                }
            }
            None => (Quick::NO_HEADER, 0, 0),
        };
        Quick {
            min_len: u16::try_from(min_len).unwrap_or(u16::MAX),
            head_len: n as u8,
            head,
            header,
            header_starts,
            header_value,
        }
    }

    /// `false` only when the entry cannot match `path`.
    #[inline]
    fn may_match(&self, path: &[u8]) -> bool {
        path.len() as u64 >= u64::from(self.min_len)
            && path.get(..usize::from(self.head_len)) == self.head.get(..usize::from(self.head_len))
    }
}

/// What one lookup learned of the request's headers named by the entries it walks, so that each name is looked
/// up once per request, not once per entry.
struct HeaderProbe<'a> {
    names: &'a [HeaderName],
    headers: &'a http::HeaderMap,
    seen: [(u8, Probe); 4],
    len: usize,
}

#[derive(Clone, Copy)]
enum Probe {
    Absent,
    /// One value: its hash, and its first 8 bytes as a little-endian word with the value's length.
    One(u64, u64, usize),
    /// Repeated (compared joined, see `Matcher::is_match_but_path`) or unknown: the inline check cannot tell.
    Unknown,
}

impl<'a> HeaderProbe<'a> {
    fn new(names: &'a [HeaderName], headers: &'a http::HeaderMap) -> Self {
        HeaderProbe {
            names,
            headers,
            seen: [(0, Probe::Unknown); 4],
            len: 0,
        }
    }

    /// `false` only when the entry's header condition (an exact value or a regex's literal prefix) cannot hold.
    #[inline]
    fn may_match(&mut self, q: &Quick) -> bool {
        if q.header == Quick::NO_HEADER {
            return true;
        }
        match self.probe(q.header) {
            Probe::Absent => false,
            Probe::One(hash, _, _) if q.header_starts == 0 => hash == q.header_value,
            Probe::One(_, word, len) => {
                let n = u32::from(q.header_starts);
                let mask = u64::MAX.checked_shr(64 - 8 * n).unwrap_or(0);
                len >= n as usize && word & mask == q.header_value
            }
            Probe::Unknown => true,
        }
    }

    fn probe(&mut self, idx: u8) -> Probe {
        if let Some((_, p)) = self.seen[..self.len].iter().find(|(i, _)| *i == idx) {
            return *p;
        }
        let p = match self.names.get(usize::from(idx)) {
            Some(name) => {
                let mut values = self.headers.get_all(name).iter();
                match (values.next(), values.next()) {
                    (None, _) => Probe::Absent,
                    (Some(v), None) => {
                        let v = v.as_bytes();
                        Probe::One(hosts::bytes_hash(v), first_word(v), v.len())
                    }
                    _ => Probe::Unknown,
                }
            }
            None => Probe::Unknown,
        };
        if self.len < self.seen.len() {
            self.seen[self.len] = (idx, p);
            self.len += 1;
        }
        p
    }
}

/// The first 8 bytes of `v` (fewer if shorter, then zero-padded) as a little-endian word.
fn first_word(v: &[u8]) -> u64 {
    match v.first_chunk::<8>() {
        Some(w) => u64::from_le_bytes(*w),
        None => v
            .iter()
            .enumerate()
            .fold(0, |w, (i, &b)| w | u64::from(b) << (8 * i)),
    }
}

/// Everything served on one port.
#[derive(Debug)]
pub struct ListenerTable {
    /// Address (`None` = the process's bind address).
    pub address: Option<std::net::IpAddr>,
    /// Logical port.
    pub port: u16,
    /// TCP or UDP.
    pub transport: Transport,
    /// Protocol spoken to clients.
    pub protocol: Protocol,
    groups: HostIndex<Arc<HostIndex<RuleList>>>,
    /// The route of a TCP or UDP listener: its oldest attached route.
    l4_route: Option<Arc<L4RouteEntry>>,
    default: Option<Arc<RouteEntry>>,
    tls_routes: HostIndex<Arc<HostIndex<Arc<TlsRouteEntry>>>>,
    /// The header names of the entries' inline checks ([`Quick::header`]).
    header_names: Box<[HeaderName]>,
}

/// A TLS route ready to serve.
#[derive(Debug)]
pub struct TlsRouteEntry {
    /// Where it came from.
    pub origin: Origin,
    /// Pass the TLS bytes through, or terminate TLS here.
    pub mode: TlsMode,
    /// Weighted backends.
    pub backends: WeightedBackends,
}

/// A TCPRoute or UDPRoute ready to serve.
#[derive(Debug)]
pub struct L4RouteEntry {
    /// Where it came from.
    pub origin: Origin,
    /// Weighted backends, picked once per connection or flow.
    pub backends: WeightedBackends,
}

/// One (rule, match) pair: what a successful lookup returns.
#[derive(Debug)]
pub struct RouteEntry {
    matcher: Matcher,
    /// The rule this match belongs to.
    pub rule: Arc<CompiledRule>,
}

impl RouteEntry {
    /// The prefix the matched path condition compares with, when it is a prefix match.
    pub fn matched_prefix(&self) -> Option<&str> {
        self.matcher.prefix()
    }
}

/// A rule ready to serve.
#[derive(Debug)]
pub struct CompiledRule {
    /// Where it came from.
    pub origin: Origin,
    /// Rule-level filters in order (mirrors and CORS are also compiled into `mirrors` and `cors`).
    pub filters: Box<[Filter]>,
    /// What answers.
    pub action: CompiledAction,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Retry policy.
    pub retry: Option<Retry>,
    /// Request mirrors of the rule.
    pub mirrors: Box<[CompiledMirror]>,
    /// CORS settings of the rule.
    pub cors: Option<CompiledCors>,
    /// ingress-nginx annotation behaviour of the rule (`proxy::policy`).
    pub policy: Option<Arc<crate::proxy::policy::CompiledPolicy>>,
    /// The rule's request-metric handles, when the table was compiled with request metrics.
    pub stats: Option<RouteStats>,
    /// Local answers go to gRPC clients as gRPC statuses ([`crate::model::HttpRule::grpc`]).
    pub grpc: bool,
    /// Session persistence of the rule.
    pub session: Option<Box<crate::model::SessionPersistence>>,
    /// ingress-nginx `custom-http-errors` of the rule.
    pub custom_errors: Option<Box<CompiledCustomErrors>>,
    /// The route as access logs write it.
    pub log_route: crate::proxy::observe::Rendered,
}

/// ingress-nginx `custom-http-errors` ready to use: the statuses, the error backend, and the headers that name
/// the rule's Ingress and Service (values checked once, here).
#[derive(Debug)]
pub struct CompiledCustomErrors {
    /// The statuses intercepted.
    pub codes: Box<[u16]>,
    /// The error backend.
    pub target: Target,
    /// `X-Namespace`, `X-Ingress-Name`, `X-Service-Name`, `X-Service-Port`.
    pub headers: Box<[(http::HeaderName, http::HeaderValue)]>,
}

fn compile_custom_errors(
    filters: &[Filter],
    ids: &BackendIds<'_>,
) -> Result<Option<Box<CompiledCustomErrors>>, String> {
    let Some(c) = filters.iter().find_map(|f| match f {
        Filter::CustomErrors(c) => Some(c),
        _ => None,
    }) else {
        return Ok(None);
    };
    let mut headers = Vec::with_capacity(4);
    for (name, value) in [
        ("x-namespace", &c.namespace),
        ("x-ingress-name", &c.ingress),
        ("x-service-name", &c.service),
        ("x-service-port", &c.service_port),
    ] {
        let value = http::HeaderValue::from_str(value)
            .map_err(|_| format!("custom-http-errors: {name} {value:?} is not a header value"))?;
        headers.push((http::HeaderName::from_static(name), value));
    }
    Ok(Some(Box::new(CompiledCustomErrors {
        codes: c.codes.clone().into_boxed_slice(),
        target: Target::new(&c.backend, ids)?,
        headers: headers.into_boxed_slice(),
    })))
}

/// A request mirror ready to use.
#[derive(Debug)]
pub struct CompiledMirror {
    /// Where copies go.
    pub target: Target,
    /// Share of requests mirrored, in millionths.
    pub per_million: u32,
}

impl CompiledMirror {
    /// Should this request be mirrored (a random draw against the share)?
    pub fn sample(&self) -> bool {
        self.per_million >= 1_000_000 || fastrand::u32(0..1_000_000) < self.per_million
    }
}

fn compile_mirrors(
    filters: &[Filter],
    ids: &BackendIds<'_>,
) -> Result<Box<[CompiledMirror]>, String> {
    filters
        .iter()
        .filter_map(|f| match f {
            Filter::RequestMirror(m) => {
                Some(Target::new(&m.backend, ids).map(|target| CompiledMirror {
                    target,
                    per_million: m.per_million,
                }))
            }
            _ => None,
        })
        .collect()
}

/// An allowed CORS origin.
#[derive(Debug, Clone)]
enum OriginPattern {
    Any,
    /// Exact origin, lowercase.
    Exact(String),
    /// `scheme://*.suffix` (one or more labels).
    Wildcard {
        scheme: String,
        suffix: String,
    },
}

/// A CORS filter ready to use.
#[derive(Debug)]
pub struct CompiledCors {
    origins: Vec<OriginPattern>,
    /// The settings.
    pub cors: Cors,
}

impl CompiledCors {
    fn new(cors: &Cors) -> Self {
        let origins = cors
            .allow_origins
            .iter()
            .map(|o| {
                let o = o.to_ascii_lowercase();
                if o == "*" {
                    return OriginPattern::Any;
                }
                match o.split_once("://") {
                    Some((scheme, host)) if host.starts_with("*.") => OriginPattern::Wildcard {
                        scheme: scheme.to_string(),
                        suffix: host[1..].to_string(),
                    },
                    _ => OriginPattern::Exact(o),
                }
            })
            .collect();
        CompiledCors {
            origins,
            cors: cors.clone(),
        }
    }

    /// Is `origin` (the request's `Origin` header) allowed?
    pub fn allows(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        self.origins.iter().any(|p| match p {
            OriginPattern::Any => true,
            OriginPattern::Exact(o) => *o == origin,
            OriginPattern::Wildcard { scheme, suffix } => {
                origin.split_once("://").is_some_and(|(s, host)| {
                    s == scheme && host.ends_with(suffix.as_str()) && host.len() > suffix.len()
                })
            }
        })
    }
}

/// What answers a matched request.
#[derive(Debug)]
pub enum CompiledAction {
    /// Proxy to one of the weighted backends.
    Forward(WeightedBackends),
    /// Answer with a redirect.
    Redirect(Redirect),
}

/// Weighted backends with a precomputed cumulative weight table.
#[derive(Debug)]
pub struct WeightedBackends {
    backends: Box<[CompiledBackend]>,
    cumulative: Box<[u64]>,
    total: u64,
}

impl WeightedBackends {
    fn new(group: &BackendGroup, ids: &BackendIds<'_>) -> Result<Self, String> {
        let mut cumulative = Vec::with_capacity(group.backends.len());
        let mut total = 0u64;
        let mut backends = Vec::with_capacity(group.backends.len());
        for b in &group.backends {
            total += u64::from(b.weight);
            cumulative.push(total);
            backends.push(CompiledBackend {
                target: Target::new(&b.backend, ids)?,
                filters: b.filters.clone().into_boxed_slice(),
                mirrors: compile_mirrors(&b.filters, ids)?,
                redirect: b.filters.iter().find_map(|f| match f {
                    Filter::RequestRedirect(r) => Some(r.clone()),
                    _ => None,
                }),
            });
        }
        Ok(WeightedBackends {
            backends: backends.into_boxed_slice(),
            cumulative: cumulative.into_boxed_slice(),
            total,
        })
    }

    /// Picks a backend in proportion to the weights (with its index); `None` when every weight is 0.
    pub fn pick(&self) -> Option<(usize, &CompiledBackend)> {
        self.pick_by(|total| fastrand::u64(0..total))
    }

    /// Picks a backend in proportion to the weights, the same one for the same `key` while the weights are
    /// unchanged (a balanced session's key).
    pub fn pick_for_key(&self, key: u64) -> Option<(usize, &CompiledBackend)> {
        self.pick_by(|total| key % total)
    }

    /// `draw` gets the total weight (never 0) and returns a point below it.
    fn pick_by(&self, draw: impl FnOnce(u64) -> u64) -> Option<(usize, &CompiledBackend)> {
        let i = match self.backends.len() {
            0 => return None,
            1 if self.total > 0 => 0,
            _ if self.total == 0 => return None,
            _ => {
                let r = draw(self.total);
                self.cumulative.partition_point(|&c| c <= r)
            }
        };
        self.backends.get(i).map(|b| (i, b))
    }

    /// All candidates (for tests and display).
    pub fn backends(&self) -> &[CompiledBackend] {
        &self.backends
    }
}

/// One weighted candidate.
#[derive(Debug)]
pub struct CompiledBackend {
    /// Where the request goes.
    pub target: Target,
    /// Backend-level filters.
    pub filters: Box<[Filter]>,
    /// Backend-level request mirrors.
    pub mirrors: Box<[CompiledMirror]>,
    /// A backend-level RequestRedirect: requests that pick this backend are redirected.
    pub redirect: Option<Redirect>,
}

/// A backend target.
#[derive(Debug)]
pub enum Target {
    /// A backend of the model: its place in the snapshot's upstreams, which choose the endpoint.
    Backend(BackendId),
    /// Answer this status instead of proxying.
    Status {
        /// The HTTP status.
        status: u16,
        /// Why (logged).
        reason: Box<str>,
    },
}

impl Target {
    fn new(b: &Backend, ids: &BackendIds<'_>) -> Result<Self, String> {
        match b {
            Backend::Service(key) => ids
                .0
                .get(key)
                .map(|&id| Target::Backend(id))
                .ok_or_else(|| format!("backend {key} is not in the model's backends")),
            Backend::Invalid { status, reason } => Ok(Target::Status {
                status: *status,
                reason: reason.as_str().into(),
            }),
        }
    }
}

/// Backend keys to their [`BackendId`]: their position in `Model::backends`.
struct BackendIds<'m>(HashMap<&'m BackendKey, BackendId>);

impl<'m> BackendIds<'m> {
    fn new(model: &'m Model) -> Self {
        BackendIds(
            model
                .backends
                .keys()
                .enumerate()
                .map(|(i, k)| (k, BackendId(i as u32)))
                .collect(),
        )
    }
}

/// Lowercases `raw` into `buf` and strips a `:port` suffix (keeping IPv6 literals in brackets whole). Returns
/// `None` for hosts that cannot be a DNS name we route (too long, not UTF-8).
pub fn normalize_host<'b>(raw: &[u8], buf: &'b mut [u8; 256]) -> Option<&'b str> {
    let host = if raw.first() == Some(&b'[') {
        match raw.iter().position(|&b| b == b']') {
            Some(end) => &raw[..=end],
            None => raw,
        }
    } else {
        match raw.iter().rposition(|&b| b == b':') {
            Some(colon) => &raw[..colon],
            None => raw,
        }
    };
    let host = host.strip_suffix(b".").unwrap_or(host);
    // 255 bytes is the most a DNS name can take (in wire form); a longer Host cannot be one.
    if host.len() > 255 {
        return None;
    }
    let out = buf.get_mut(..host.len())?;
    for (o, b) in out.iter_mut().zip(host) {
        *o = b.to_ascii_lowercase();
    }
    std::str::from_utf8(out).ok()
}

impl Router {
    /// Compiles a model.
    pub fn compile(model: &Model) -> Result<Router, CompileError> {
        Router::compile_reusing(model, None)
    }

    /// [`Router::compile`], taking the compiled regexes of `previous` whose pattern is unchanged (what a
    /// configuration change does: most of a large table is the same as before).
    pub fn compile_reusing(
        model: &Model,
        previous: Option<&Router>,
    ) -> Result<Router, CompileError> {
        Router::compile_with(model, previous, None)
    }

    /// [`Router::compile_reusing`], resolving every rule's request-metric handles through `stats`.
    pub fn compile_with(
        model: &Model,
        previous: Option<&Router>,
        mut stats: Option<&mut Resolver<'_>>,
    ) -> Result<Router, CompileError> {
        let mut compiler = matcher::MatchCompiler::new(previous.map(|r| &r.regexes));
        let ids = BackendIds::new(model);
        let mut listeners = Vec::with_capacity(model.listeners.len());
        for l in &model.listeners {
            listeners.push(compile_listener(
                l,
                &mut compiler,
                &ids,
                stats.as_deref_mut(),
            )?);
        }
        Ok(Router {
            listeners,
            regexes: compiler.finish(),
        })
    }

    /// The table of `port`, if that port is served.
    pub fn listener(&self, port: u16) -> Option<&ListenerTable> {
        self.listener_at(None, port)
    }

    /// The table of the TCP listener at (`address`, `port`), if served.
    pub fn listener_at(
        &self,
        address: Option<std::net::IpAddr>,
        port: u16,
    ) -> Option<&ListenerTable> {
        self.listener_for(ListenerKey {
            address,
            port,
            transport: Transport::Tcp,
        })
    }

    /// The table of the listener at `key`, if served.
    pub fn listener_for(&self, key: ListenerKey) -> Option<&ListenerTable> {
        self.listeners.iter().find(|l| {
            l.port == key.port && l.address == key.address && l.transport == key.transport
        })
    }

    /// All listener tables, sorted by port.
    pub fn listeners(&self) -> &[ListenerTable] {
        &self.listeners
    }
}

impl ListenerTable {
    /// The entry that serves a request for `host` (normalized with [`normalize_host`]), or `None` (404).
    ///
    /// Listener isolation first: only rules attached through the most specific listener hostname that covers the
    /// host take part (Ingress rules take part under every listener hostname). Then the first matching entry of the
    /// host's precedence-sorted list wins; when none matches, the default backend (if any) answers. A host whose
    /// most specific covering hostname is an ingress-nginx server ([`precedence::Server`]) only tries that
    /// hostname's rules, and the default backend answers only if it belongs to that server.
    pub fn find(&self, host: &str, req: &RequestParts<'_>) -> Option<&Arc<RouteEntry>> {
        match self.lookup(host, None, req) {
            Lookup::Route(e) => Some(e),
            Lookup::NotFound | Lookup::Misdirected => None,
        }
    }

    /// The TLS passthrough route for a connection whose SNI is `sni` (lowercase; empty when the client sent
    /// none): the most specific listener hostname covering it, then the most specific route hostname, then the
    /// oldest route.
    pub fn find_tls(&self, sni: &str) -> Option<&Arc<TlsRouteEntry>> {
        self.tls_routes.get(sni).and_then(|g| g.get(sni))
    }

    /// The route of a TCP or UDP listener, if one is attached.
    pub fn l4_route(&self) -> Option<&Arc<L4RouteEntry>> {
        self.l4_route.as_ref()
    }

    /// Like [`ListenerTable::find`], for a TLS connection whose SNI was `sni`: when the SNI and the Host header
    /// select different Gateway listeners, the request was sent over a connection meant for another listener and
    /// must be refused with 421 Misdirected Request (RFC 9110 section 15.5.20; Gateway API
    /// GatewayHTTPSListenerDetectMisdirectedRequests).
    pub fn lookup(&self, host: &str, sni: Option<&str>, req: &RequestParts<'_>) -> Lookup<'_> {
        let group = self.groups.get(host);
        if let Some(sni) = sni {
            let by_sni = self.groups.get(sni);
            let same = match (group, by_sni) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            if !same {
                return Lookup::Misdirected;
            }
        }
        let mut use_default = true;
        if let Some(list) = group.and_then(|g| g.get(host)) {
            let path = req.path.as_bytes();
            let mut probe = HeaderProbe::new(&self.header_names, req.headers);
            for c in list.candidates.iter() {
                if c.quick.may_match(path) && probe.may_match(&c.quick) && c.is_match(req) {
                    return Lookup::Route(&c.entry);
                }
            }
            use_default = list.use_default;
        }
        match &self.default {
            Some(d) if use_default => Lookup::Route(d),
            _ => Lookup::NotFound,
        }
    }
}

/// The outcome of a lookup.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// This entry serves the request.
    Route(&'a Arc<RouteEntry>),
    /// No rule matches: 404.
    NotFound,
    /// The Host header belongs to another listener than the TLS SNI: 421.
    Misdirected,
}

struct BuildEntry<'m> {
    listener: Option<&'m HostPattern>,
    host: &'m HostPattern,
    rule: &'m HttpRule,
    index: usize,
    compiled: Arc<RouteEntry>,
}

/// The metrics label of a listener: `ADDRESS:PORT`, `*` for the default address.
pub fn listener_label(address: Option<std::net::IpAddr>, port: u16) -> String {
    match address {
        Some(std::net::IpAddr::V6(a)) => format!("[{a}]:{port}"),
        Some(a) => format!("{a}:{port}"),
        None => format!("*:{port}"),
    }
}

fn rule_stats(rule: &HttpRule, listener: &str, stats: &mut Resolver<'_>) -> RouteStats {
    let backends: Vec<Option<&BackendKey>> = match &rule.action {
        Action::Forward(g) => g
            .backends
            .iter()
            .map(|b| match &b.backend {
                Backend::Service(k) => Some(k),
                _ => None,
            })
            .collect(),
        Action::Redirect(_) => Vec::new(),
    };
    stats.route(listener, &rule.origin, &backends)
}

fn compile_rule(
    rule: &HttpRule,
    ids: &BackendIds<'_>,
    stats: Option<RouteStats>,
) -> Result<Arc<CompiledRule>, CompileError> {
    let error = |reason: String| CompileError {
        origin: rule.origin.to_string(),
        reason,
    };
    let action = match &rule.action {
        Action::Forward(g) => {
            CompiledAction::Forward(WeightedBackends::new(g, ids).map_err(error)?)
        }
        Action::Redirect(r) => CompiledAction::Redirect(r.clone()),
    };
    Ok(Arc::new(CompiledRule {
        origin: rule.origin.clone(),
        filters: rule.filters.clone().into_boxed_slice(),
        action,
        timeouts: rule.timeouts,
        retry: rule.retry.clone(),
        mirrors: compile_mirrors(&rule.filters, ids).map_err(error)?,
        cors: rule.filters.iter().find_map(|f| match f {
            Filter::Cors(c) => Some(CompiledCors::new(c)),
            _ => None,
        }),
        policy: rule.filters.iter().find_map(|f| match f {
            Filter::Policy(p) => Some(Arc::new(crate::proxy::policy::CompiledPolicy::new(p))),
            _ => None,
        }),
        stats,
        grpc: rule.grpc,
        session: rule.session.clone(),
        custom_errors: compile_custom_errors(&rule.filters, ids).map_err(error)?,
        log_route: Default::default(),
    }))
}

fn compile_listener(
    l: &crate::model::Listener,
    compiler: &mut matcher::MatchCompiler<'_>,
    ids: &BackendIds<'_>,
    mut stats: Option<&mut Resolver<'_>>,
) -> Result<ListenerTable, CompileError> {
    let label = stats.as_ref().map(|_| listener_label(l.address, l.port));
    static NO_HTTP: HttpListener = HttpListener {
        virtual_hosts: Vec::new(),
        default_backend: None,
    };
    let http = l.http().unwrap_or(&NO_HTTP);
    let mut entries: Vec<BuildEntry<'_>> = Vec::new();
    for vh in &http.virtual_hosts {
        for rule in &vh.rules {
            let rs = match (stats.as_deref_mut(), &label) {
                (Some(r), Some(label)) => Some(rule_stats(rule, label, r)),
                _ => None,
            };
            let compiled = compile_rule(rule, ids, rs)?;
            for (index, m) in rule.matches.iter().enumerate() {
                let matcher = Matcher::new(m, compiler).map_err(|reason| CompileError {
                    origin: rule.origin.to_string(),
                    reason,
                })?;
                entries.push(BuildEntry {
                    listener: vh.listener_hostname.as_ref(),
                    host: &vh.hostname,
                    rule,
                    index,
                    compiled: Arc::new(RouteEntry {
                        matcher,
                        rule: compiled.clone(),
                    }),
                });
            }
        }
    }

    // Listener groups: the Gateway listener hostnames; Ingress entries (no listener) join every group, and make
    // sure a catch-all group exists.
    let listener_patterns: Vec<&HostPattern> = {
        let mut v: Vec<&HostPattern> = entries.iter().filter_map(|e| e.listener).collect();
        v.sort();
        v.dedup();
        v
    };
    let has_ingress = entries.iter().any(|e| e.listener.is_none());
    // One group per listener hostname, shared by every index slot of that hostname, so that two hosts select
    // "the same listener" exactly when they get the same Arc (the misdirected-request check relies on it).
    let mut by_key: HashMap<HostPattern, Arc<HostIndex<RuleList>>> = HashMap::new();
    let mut header_names: Vec<HeaderName> = Vec::new();
    let groups = HostIndex::build(listener_patterns, has_ingress, |key, _| {
        by_key
            .entry(key.clone())
            .or_insert_with(|| {
                let members: Vec<&BuildEntry<'_>> = entries
                    .iter()
                    .filter(|e| e.listener.is_none_or(|lh| lh == key))
                    .collect();
                Arc::new(host_index(
                    &members,
                    http.default_backend.as_ref(),
                    &mut header_names,
                ))
            })
            .clone()
    });

    let default = match &http.default_backend {
        Some(rule) => {
            let rs = match (stats, &label) {
                (Some(r), Some(label)) => Some(rule_stats(rule, label, r)),
                _ => None,
            };
            let compiled = compile_rule(rule, ids, rs)?;
            let m = rule
                .matches
                .first()
                .cloned()
                .unwrap_or_else(crate::model::RouteMatch::any);
            let matcher = Matcher::new(&m, compiler).map_err(|reason| CompileError {
                origin: rule.origin.to_string(),
                reason,
            })?;
            Some(Arc::new(RouteEntry {
                matcher,
                rule: compiled,
            }))
        }
        None => None,
    };

    let tls_routes = match &l.kind {
        ListenerKind::Tls(t) => compile_tls_routes(&t.routes, ids)?,
        _ => compile_tls_routes(&[], ids)?,
    };
    let l4_route = match &l.kind {
        ListenerKind::Tcp(t) | ListenerKind::Udp(t) => match t.routes.first() {
            Some(r) => Some(Arc::new(L4RouteEntry {
                origin: r.origin.clone(),
                backends: WeightedBackends::new(&r.backends, ids).map_err(|reason| {
                    CompileError {
                        origin: r.origin.to_string(),
                        reason,
                    }
                })?,
            })),
            None => None,
        },
        _ => None,
    };

    Ok(ListenerTable {
        tls_routes,
        l4_route,
        address: l.address,
        port: l.port,
        transport: l.transport,
        protocol: l.protocol(),
        groups,
        default,
        header_names: header_names.into_boxed_slice(),
    })
}

fn compile_tls_routes(
    routes: &[TlsRoute],
    ids: &BackendIds<'_>,
) -> Result<HostIndex<Arc<HostIndex<Arc<TlsRouteEntry>>>>, CompileError> {
    let compiled = routes
        .iter()
        .map(|r| {
            let backends =
                WeightedBackends::new(&r.backends, ids).map_err(|reason| CompileError {
                    origin: r.origin.to_string(),
                    reason,
                })?;
            Ok((
                r,
                Arc::new(TlsRouteEntry {
                    origin: r.origin.clone(),
                    mode: r.mode,
                    backends,
                }),
            ))
        })
        .collect::<Result<Vec<(&TlsRoute, Arc<TlsRouteEntry>)>, CompileError>>()?;
    let listener_patterns: Vec<&HostPattern> = {
        let mut v: Vec<&HostPattern> = routes.iter().map(|r| &r.listener_hostname).collect();
        v.sort();
        v.dedup();
        v
    };
    let mut by_key: HashMap<HostPattern, Arc<HostIndex<Arc<TlsRouteEntry>>>> = HashMap::new();
    Ok(HostIndex::build(listener_patterns, false, |key, _| {
        by_key
            .entry(key.clone())
            .or_insert_with(|| {
                let members: Vec<&(&TlsRoute, Arc<TlsRouteEntry>)> = compiled
                    .iter()
                    .filter(|(r, _)| &r.listener_hostname == key)
                    .collect();
                let patterns: Vec<&HostPattern> =
                    members.iter().map(|(r, _)| &r.hostname).collect();
                let has_any = patterns.iter().any(|p| **p == HostPattern::Any);
                let inner = HostIndex::build(patterns, has_any, |_, rep| {
                    let covering = members.iter().filter(|(r, _)| match rep {
                        Some(rep) => r.hostname.matches(rep),
                        None => r.hostname == HostPattern::Any,
                    });
                    let best = covering.min_by(|(a, _), (b, _)| {
                        b.hostname
                            .specificity()
                            .cmp(&a.hostname.specificity())
                            .then_with(|| {
                                (
                                    a.origin.created.is_none(),
                                    a.origin.created,
                                    &a.origin.namespace,
                                    &a.origin.name,
                                )
                                    .cmp(&(
                                        b.origin.created.is_none(),
                                        b.origin.created,
                                        &b.origin.namespace,
                                        &b.origin.name,
                                    ))
                            })
                    });
                    // Every key has at least its own route, so `best` is always found.
                    best.map(|(_, e)| e.clone())
                        .unwrap_or_else(|| members[0].1.clone())
                });
                Arc::new(inner)
            })
            .clone()
    }))
}

/// The per-hostname index of one listener group: each key's list holds every entry whose hostname covers the key,
/// sorted by precedence.
fn host_index(
    members: &[&BuildEntry<'_>],
    default: Option<&HttpRule>,
    header_names: &mut Vec<HeaderName>,
) -> HostIndex<RuleList> {
    // Buckets, so that building a list costs the entries that can match, not all entries.
    let mut exact: HashMap<&str, Vec<&BuildEntry<'_>>> = HashMap::new();
    let mut wild: HashMap<&str, Vec<&BuildEntry<'_>>> = HashMap::new();
    let mut any: Vec<&BuildEntry<'_>> = Vec::new();
    for e in members {
        match e.host {
            HostPattern::Exact(h) => exact.entry(h).or_default().push(e),
            HostPattern::Wildcard { suffix, .. } => wild.entry(suffix).or_default().push(e),
            HostPattern::Any => any.push(e),
        }
    }
    let patterns: Vec<&HostPattern> = {
        let mut v: Vec<&HostPattern> = members.iter().map(|e| e.host).collect();
        v.sort();
        v.dedup();
        v
    };
    HostIndex::build(patterns, !any.is_empty(), |_, rep| {
        let mut list: Vec<&BuildEntry<'_>> = Vec::new();
        if let Some(rep) = rep {
            if let Some(v) = exact.get(rep) {
                list.extend(v.iter().copied());
            }
            for (i, b) in rep.bytes().enumerate() {
                if b == b'.' {
                    if let Some(v) = wild.get(&rep[i + 1..]) {
                        list.extend(v.iter().copied().filter(|e| e.host.matches(rep)));
                    }
                }
            }
        }
        list.extend(any.iter().copied());
        let server = precedence::Server::of(list.iter().map(|e| (e.host, e.rule)));
        if let Some(s) = &server {
            list.retain(|e| s.includes(e.host));
        }
        list.sort_by(|a, b| {
            precedence::compare((a.host, a.rule, a.index), (b.host, b.rule, b.index))
        });
        RuleList {
            candidates: list
                .iter()
                .map(|e| Candidate {
                    quick: Quick::new(&e.compiled.matcher, header_names),
                    path_regex: e.compiled.matcher.path_regex().cloned(),
                    entry: e.compiled.clone(),
                })
                .collect(),
            use_default: server.is_none_or(|s| default.is_some_and(|d| s.default_serves(d))),
        }
    })
}

#[cfg(test)]
mod tests;
