//! Route rules: matches, filters, actions and backends.

use super::BackendKey;
use serde::Serialize;
use std::fmt;

/// Which API object a rule came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum OriginKind {
    /// A Gateway API HTTPRoute.
    #[serde(rename = "HTTPRoute")]
    HttpRoute,
    /// A Gateway API GRPCRoute.
    #[serde(rename = "GRPCRoute")]
    GrpcRoute,
    /// A networking.k8s.io/v1 Ingress.
    Ingress,
    /// A Gateway API TLSRoute.
    #[serde(rename = "TLSRoute")]
    TlsRoute,
    /// A Gateway API TCPRoute.
    #[serde(rename = "TCPRoute")]
    TcpRoute,
    /// A Gateway API UDPRoute.
    #[serde(rename = "UDPRoute")]
    UdpRoute,
}

impl OriginKind {
    /// The Kubernetes kind name.
    pub fn as_str(self) -> &'static str {
        match self {
            OriginKind::HttpRoute => "HTTPRoute",
            OriginKind::GrpcRoute => "GRPCRoute",
            OriginKind::Ingress => "Ingress",
            OriginKind::TlsRoute => "TLSRoute",
            OriginKind::TcpRoute => "TCPRoute",
            OriginKind::UdpRoute => "UDPRoute",
        }
    }
}

/// Where a rule came from, for `routes` output, logs, metrics and precedence tie-breaks.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Origin {
    /// The kind of the object.
    pub kind: OriginKind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Index of the rule in the object: `spec.rules[i]` for a route; for an Ingress, the index of the path counted
    /// across all its rules, or [`Origin::DEFAULT_BACKEND`] for `spec.defaultBackend`.
    pub rule: usize,
    /// The rule's `name`, when the route names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule_name: Option<String>,
    /// `metadata.creationTimestamp` as seconds since the epoch, when set; older routes win precedence ties.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<i64>,
}

impl Origin {
    /// The `rule` value that marks an Ingress `spec.defaultBackend`.
    pub const DEFAULT_BACKEND: usize = usize::MAX;
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind.as_str(), self.namespace, self.name)?;
        if self.rule == Origin::DEFAULT_BACKEND {
            f.write_str(" defaultBackend")
        } else {
            write!(f, " rule {}", self.rule)?;
            if let Some(n) = &self.rule_name {
                write!(f, " ({n})")?;
            }
            Ok(())
        }
    }
}

/// One route rule: any of its matches selects it; then its filters run and its action answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HttpRule {
    /// Where it came from.
    pub origin: Origin,
    /// Alternatives (OR). Never empty: a rule without matches gets the spec default (prefix `/`).
    pub matches: Vec<RouteMatch>,
    /// Request/response filters, in the order the rule lists them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Filter>,
    /// What answers the request.
    pub action: Action,
    /// Request and per-attempt timeouts.
    #[serde(skip_serializing_if = "Timeouts::is_empty")]
    pub timeouts: Timeouts,
    /// Retries of failed attempts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// The rule serves gRPC (a GRPCRoute rule, or an Ingress path whose backend speaks gRPC): answers made here
    /// (no backend, timeouts) go to gRPC clients as gRPC statuses instead of HTTP error pages.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub grpc: bool,
    /// Session persistence: the requests of one client session go to one endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<Box<SessionPersistence>>,
}

/// Session persistence (HTTPRoute and GRPCRoute `sessionPersistence`, ingress-nginx `affinity: cookie`). A session
/// key travels in a cookie or a header; the proxy issues one with the first response of a session and routes every
/// request that carries it to the same backend and endpoint while that endpoint is ready. Keys name endpoints in a
/// way every proxy replica computes alike, so a session survives a change of node (DaemonSet) and a restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SessionPersistence {
    /// Where the key travels.
    pub carrier: SessionCarrier,
    /// How a key maps to an endpoint.
    pub mode: StickyMode,
    /// When the session's endpoint fails (or is out of rotation) and the request goes elsewhere, the client gets
    /// a key for the new endpoint (ingress-nginx `session-cookie-change-on-failure`); otherwise it keeps its key and
    /// returns to its endpoint once that is ready again.
    pub change_on_failure: bool,
    /// The key also picks the backend among the rule's weighted backends (Gateway API, and ingress-nginx's
    /// `affinity-canary-behavior: sticky`: a session that went to a canary stays there). `false` (`legacy`): the
    /// weights and canary rules pick the backend on every request, and the key only the endpoint within it.
    #[serde(skip_serializing_if = "is_true")]
    pub pins_backend: bool,
}

fn is_true(b: &bool) -> bool {
    *b
}

/// Where a session key travels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type")]
pub enum SessionCarrier {
    /// A cookie the proxy sets.
    Cookie(SessionCookie),
    /// A header: the proxy sends it on the response that starts a session, the client repeats it on requests.
    Header {
        /// The header name (lowercase).
        name: String,
    },
}

impl SessionCarrier {
    /// The cookie or header name.
    pub fn name(&self) -> &str {
        match self {
            SessionCarrier::Cookie(c) => &c.name,
            SessionCarrier::Header { name } => name,
        }
    }
}

/// How a session key maps to an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum StickyMode {
    /// The key names one endpoint: a session stays on it as long as it exists (ingress-nginx `affinity-mode:
    /// persistent`, and Gateway API session persistence). New endpoints get new sessions only.
    Persistent,
    /// The key is random and placed on the endpoints by consistent hashing (ingress-nginx's default `balanced`):
    /// when endpoints are added, a share of the sessions moves to them; when one goes, only its sessions move.
    Balanced,
}

/// The cookie that carries a session key. Attributes are as written; `HttpOnly` is always set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SessionCookie {
    /// Cookie name.
    pub name: String,
    /// `Path` (set at translation: as written, or the rule's path).
    pub path: String,
    /// `Domain`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// `Max-Age`, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age: Option<i64>,
    /// `Expires`, as seconds from the response's time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
    /// `SameSite`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub same_site: Option<SameSite>,
    /// `Secure` always (else only on responses to TLS requests, as ingress-nginx does).
    pub secure: bool,
    /// `SameSite=None` is left out for user agents known to reject it (ingress-nginx
    /// `session-cookie-conditional-samesite-none`).
    pub conditional_same_site_none: bool,
}

/// A cookie's `SameSite` attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum SameSite {
    /// `SameSite=None`.
    None,
    /// `SameSite=Lax`.
    Lax,
    /// `SameSite=Strict`.
    Strict,
}

impl SameSite {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::None => "None",
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
        }
    }
}

/// HTTPRoute `timeouts`, in milliseconds. `None` means no timeout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Timeouts {
    /// From the start of the request to the end of the response, retries included (504 when it passes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_ms: Option<u64>,
    /// For each attempt to a backend (504 when it passes, and retried if the rule retries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_request_ms: Option<u64>,
    /// Connecting to an endpoint (ingress-nginx `proxy-connect-timeout`); `None`: the proxy's 5 s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_ms: Option<u64>,
}

impl Timeouts {
    /// No timeout set.
    pub fn is_empty(&self) -> bool {
        self.request_ms.is_none() && self.backend_request_ms.is_none() && self.connect_ms.is_none()
    }
}

/// Retries of failed attempts: HTTPRoute `retry`, or ingress-nginx `proxy-next-upstream*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Retry {
    /// How many times a failed attempt is retried (so at most `attempts + 1` attempts).
    pub attempts: u32,
    /// Response statuses that are retried.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub codes: Vec<u16>,
    /// Pause before each retry, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff_ms: Option<u64>,
    /// Failures before a response that are retried (HTTPRoute: all of them).
    #[serde(skip_serializing_if = "RetryOn::is_all")]
    pub on: RetryOn,
    /// A request with a method that is not idempotent (POST, PATCH, ...) is retried only when nothing of it was
    /// sent (a failed connection), as nginx does without `non_idempotent`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub idempotent_only: bool,
    /// Retries stop once every endpoint has been tried (nginx's next upstream); otherwise they go round again.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub distinct_endpoints: bool,
    /// No retry starts once this many milliseconds have passed since the first attempt (ingress-nginx
    /// `proxy-next-upstream-timeout`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub within_ms: Option<u64>,
}

impl Retry {
    /// HTTPRoute's retry: every failure before a response, and `codes`, for any method.
    pub fn gateway(attempts: u32, codes: Vec<u16>, backoff_ms: Option<u64>) -> Retry {
        Retry {
            attempts,
            codes,
            backoff_ms,
            on: RetryOn::ALL,
            idempotent_only: false,
            distinct_endpoints: false,
            within_ms: None,
        }
    }
}

/// Failures before a response that a retry policy retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RetryOn {
    /// Connection refused or reset, or the connection failed while the request was sent or the response header
    /// read (nginx `error`).
    pub error: bool,
    /// Connecting, sending or waiting for the response header timed out (nginx `timeout`).
    pub timeout: bool,
    /// The response header was empty or invalid (nginx `invalid_header`).
    pub invalid_header: bool,
}

impl RetryOn {
    /// Every failure.
    pub const ALL: RetryOn = RetryOn {
        error: true,
        timeout: true,
        invalid_header: true,
    };

    /// Every failure is retried.
    pub fn is_all(&self) -> bool {
        *self == RetryOn::ALL
    }
}

/// Conditions a request must meet (AND).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct RouteMatch {
    /// The path condition (always present; "any path" is `Prefix("/")`).
    pub path: PathMatch,
    /// The request method, uppercase, when the match restricts it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Header conditions; names are lowercase and unique (the first entry of a repeated name wins).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
    /// Query parameter conditions; names are case-sensitive and unique.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<QueryParamMatch>,
    /// For a GRPCRoute match: the service and method it names. `path` already holds the condition they make;
    /// this is kept for precedence, which GRPCRoute orders by the service and method, not by the path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcMethodMatch>,
}

/// The service and method of a GRPCRoute match (GRPCMethodMatch), as written.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct GrpcMethodMatch {
    /// The values are regular expressions (type RegularExpression), else exact names.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub regex: bool,
    /// The service (`package.Service`); `None` matches every service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The method; `None` matches every method.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

impl RouteMatch {
    /// The match that accepts every request.
    pub fn any() -> Self {
        RouteMatch {
            path: PathMatch::Prefix("/".into()),
            method: None,
            headers: Vec::new(),
            query_params: Vec::new(),
            grpc: None,
        }
    }
}

impl fmt::Display for RouteMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path)?;
        if let Some(m) = &self.method {
            write!(f, " method={m}")?;
        }
        for h in &self.headers {
            write!(f, " header:{}{}", h.name, h.value)?;
        }
        for q in &self.query_params {
            write!(f, " query:{}{}", q.name, q.value)?;
        }
        if let Some(g) = &self.grpc {
            let any = "*";
            let sep = if g.regex { "~" } else { "=" };
            write!(
                f,
                " grpc{sep}{}/{}",
                g.service.as_deref().unwrap_or(any),
                g.method.as_deref().unwrap_or(any)
            )?;
        }
        Ok(())
    }
}

/// A path condition.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "type", content = "value")]
pub enum PathMatch {
    /// The whole path equals the value (case-sensitive).
    Exact(String),
    /// The path starts with the value element by element: `/foo` matches `/foo` and `/foo/bar`, not `/foobar`.
    /// The value never ends in `/` unless it is `/` itself (a trailing slash is ignored, as both specs say).
    Prefix(String),
    /// The whole path matches the regular expression (anchored at both ends).
    RegularExpression(String),
}

impl PathMatch {
    /// A prefix match, normalized: a trailing slash is dropped (`/foo/` and `/foo` match the same requests, as
    /// both the Ingress and the HTTPRoute specs say), `/` stays `/`.
    pub fn prefix(path: &str) -> PathMatch {
        let trimmed = path.trim_end_matches('/');
        PathMatch::Prefix(if trimmed.is_empty() {
            "/".to_string()
        } else {
            trimmed.to_string()
        })
    }

    /// The value the condition compares with.
    pub fn value(&self) -> &str {
        match self {
            PathMatch::Exact(v) | PathMatch::Prefix(v) | PathMatch::RegularExpression(v) => v,
        }
    }
}

impl fmt::Display for PathMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathMatch::Exact(v) => write!(f, "={v}"),
            PathMatch::Prefix(v) => write!(f, "{v}*"),
            PathMatch::RegularExpression(v) => write!(f, "~{v}"),
        }
    }
}

/// A value condition.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "type", content = "value")]
pub enum StringMatch {
    /// Equal, byte for byte.
    Exact(String),
    /// The whole value matches the regular expression (anchored at both ends).
    RegularExpression(String),
}

impl fmt::Display for StringMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StringMatch::Exact(v) => write!(f, "={v}"),
            StringMatch::RegularExpression(v) => write!(f, "~{v}"),
        }
    }
}

/// A header condition.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct HeaderMatch {
    /// Lowercase header name.
    pub name: String,
    /// The condition on its value.
    pub value: StringMatch,
}

/// A query parameter condition.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct QueryParamMatch {
    /// Parameter name (case-sensitive).
    pub name: String,
    /// The condition on its (first) value.
    pub value: StringMatch,
}

/// A request or response modification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type")]
pub enum Filter {
    /// Change request headers before they go upstream.
    RequestHeaderModifier(HeaderModifier),
    /// Change response headers before they go to the client.
    ResponseHeaderModifier(HeaderModifier),
    /// Rewrite the Host header and/or path sent upstream.
    UrlRewrite {
        /// New Host header value.
        #[serde(skip_serializing_if = "Option::is_none")]
        hostname: Option<String>,
        /// New path.
        #[serde(skip_serializing_if = "Option::is_none")]
        path: Option<PathModifier>,
    },
    /// Send a copy of the request to another backend; its response is discarded.
    RequestMirror(Mirror),
    /// Answer CORS preflight requests and add CORS headers to responses.
    Cors(Cors),
    /// Answer with a redirect (as a backendRef filter: the requests that pick this backend are redirected; a
    /// rule-level redirect is [`Action::Redirect`]).
    RequestRedirect(Redirect),
    /// ingress-nginx annotation behaviour (rule level only): see [`super::policy::Policy`].
    Policy(Box<super::policy::Policy>),
    /// ingress-nginx `custom-http-errors` with `default-backend` (rule level only): responses with these statuses
    /// are replaced by the error backend's answer.
    CustomErrors(Box<CustomErrors>),
}

/// ingress-nginx `custom-http-errors`: when the backend answers one of `codes`, the request goes (as `GET`-less
/// copy: same method, no body, path `/`) to the error backend with the headers ingress-nginx sends (`X-Code`,
/// `X-Format`, `X-Original-URI`, `X-Namespace`, `X-Ingress-Name`, `X-Service-Name`, `X-Service-Port`,
/// `X-Request-ID`), and its answer goes to the client unchanged, status included.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CustomErrors {
    /// The statuses intercepted.
    pub codes: Vec<u16>,
    /// The error backend (the `default-backend` Service's first port).
    pub backend: Backend,
    /// `X-Namespace`: the Ingress's namespace.
    pub namespace: String,
    /// `X-Ingress-Name`.
    pub ingress: String,
    /// `X-Service-Name`: the Service the rule sends to.
    pub service: String,
    /// `X-Service-Port`: its port, as the Ingress names it.
    pub service_port: String,
}

/// A request mirror.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mirror {
    /// Where copies go.
    pub backend: Backend,
    /// Share of requests mirrored, in millionths (1_000_000 = all).
    pub per_million: u32,
}

/// CORS settings (HTTPRoute `CORS` filter).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Cors {
    /// Allowed origins: `*`, exact origins (`https://a.com`), or with a wildcard host (`https://*.a.com`).
    pub allow_origins: Vec<String>,
    /// Allowed methods (`*` allowed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    /// Allowed request headers (`*` allowed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    /// Response headers exposed to the page.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// `Access-Control-Allow-Credentials: true`.
    pub allow_credentials: bool,
    /// Preflight cache lifetime in seconds.
    pub max_age: u32,
}

/// Header changes, applied in the order set, add, remove (as Gateway API defines them).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HeaderModifier {
    /// Replace (or create) these headers. Names lowercase.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<(String, String)>,
    /// Append these values. Names lowercase.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<(String, String)>,
    /// Remove these headers. Names lowercase.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// How a path is replaced (URL rewrite or redirect).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", content = "value")]
pub enum PathModifier {
    /// Replace the whole path.
    ReplaceFullPath(String),
    /// Replace the part the rule's prefix match matched; only valid on rules whose matches are all prefixes.
    ReplacePrefixMatch(String),
}

/// What answers a matched request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type")]
pub enum Action {
    /// Proxy to one of the weighted backends.
    Forward(BackendGroup),
    /// Answer with a redirect.
    Redirect(Redirect),
}

/// A redirect answer. `None` fields keep the request's value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Redirect {
    /// `http` or `https`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// New hostname.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// New port; `None` follows the Gateway API rules (the scheme's well-known port when the scheme changes,
    /// else the listener port).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// New path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
    /// 301, 302, 303, 307 or 308.
    pub status: u16,
}

/// Weighted backends of one rule. Weight 0 is never chosen; a group whose weights are all 0 answers 500.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackendGroup {
    /// The candidates.
    pub backends: Vec<WeightedBackend>,
}

/// One candidate of a [`BackendGroup`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WeightedBackend {
    /// Relative weight.
    pub weight: u32,
    /// Where requests go.
    pub backend: Backend,
    /// Filters that apply only when this backend is chosen.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Filter>,
}

/// A backend: a Service port held once in [`crate::model::Model::backends`] and named here by its key, or the
/// answer the spec requires when the reference cannot be resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A Service port; the key is always present in the model's `backends`.
    Service(BackendKey),
    /// Requests routed here get `status` (500 for an unresolvable reference, 503 for a Service without the port's
    /// endpoints information).
    Invalid {
        /// The HTTP status to answer.
        status: u16,
        /// Why, for `routes`, logs and status.
        reason: String,
    },
}

/// `{"type": "Service", "key": "ns/name:port"}` or `{"type": "Invalid", "status": 500, "reason": "..."}`.
impl Serialize for Backend {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            Backend::Service(k) => {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("type", "Service")?;
                m.serialize_entry("key", k)?;
                m.end()
            }
            Backend::Invalid { status, reason } => {
                let mut m = s.serialize_map(Some(3))?;
                m.serialize_entry("type", "Invalid")?;
                m.serialize_entry("status", status)?;
                m.serialize_entry("reason", reason)?;
                m.end()
            }
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backend::Service(k) => write!(f, "{k}"),
            Backend::Invalid { status, reason } => write!(f, "{status} ({reason})"),
        }
    }
}
