//! Per-rule policies from ingress-nginx annotations (and its ConfigMap defaults under the ingress-nginx profile):
//! what the proxy does to a request before and around forwarding it, in ingress-nginx's order. Plain data like the
//! rest of the model: every value is parsed and checked by translation (`translate::nginx`), so the proxy
//! (`proxy::policy`) never re-validates it.
//!
//! The order the proxy applies them is nginx's phase order as ingress-nginx configures it:
//! body size by `Content-Length` (413), `denied` (503), CORS preflight (204), `redirect`, `ssl_redirect`, rate
//! limits (503), source ranges (403), basic auth (401), external auth, then forwarding with the upstream changes
//! (`rewrite`, `upstream_host`, `x_forwarded_prefix`, auth response headers).

use serde::Serialize;
use std::fmt;
use std::net::IpAddr;

/// What an ingress-nginx location does besides forwarding. `Default` is "nothing".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// The Ingress the settings came from (`namespace/name`), for logs and rate-limit zones.
    pub source: String,
    /// ingress-nginx denied the location (an annotation referring to something unusable, such as a missing
    /// auth Secret): every request gets 503. The text says why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denied: Option<String>,
    /// `permanent-redirect` / `temporal-redirect`: answer with this status and `Location`, as given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect: Option<FixedRedirect>,
    /// `ssl-redirect` / `force-ssl-redirect`: plain-HTTP requests are redirected to https.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl_redirect: Option<SslRedirect>,
    /// `app-root`: a request for `/` is redirected (302) to this path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_root: Option<String>,
    /// `from-to-www-redirect`, on the host it redirects from: every request goes to the other name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub www_redirect: Option<WwwRedirect>,
    /// `rewrite-target`: the path sent upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Rewrite>,
    /// `x-forwarded-prefix`: sent upstream as `X-Forwarded-Prefix` (only with a rewrite, as ingress-nginx does;
    /// `$1`..`$9` are the rewrite's captures).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x_forwarded_prefix: Option<Vec<TemplatePart>>,
    /// `upstream-vhost`: the `Host` header sent upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_host: Option<String>,
    /// `proxy-body-size`: the largest request body accepted, in bytes (413 beyond); `Some(0)` is no limit. It
    /// replaces the proxy's `--max-request-body` for this rule, larger or smaller, as nginx's location-level
    /// `client_max_body_size` replaces the server's; `None` leaves `--max-request-body`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// `proxy-read-timeout`: the longest wait for the next bytes from the backend, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_timeout_s: Option<u32>,
    /// `proxy-send-timeout`: the longest wait for the backend to take the next bytes, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_timeout_s: Option<u32>,
    /// `denylist-source-range` then `allowlist-source-range` (403).
    #[serde(skip_serializing_if = "SourceRanges::is_empty")]
    pub source_ranges: SourceRanges,
    /// `enable-cors` and `cors-*`, with ingress-nginx's semantics (not Gateway API's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors: Option<NginxCors>,
    /// `auth-type: basic` with `auth-secret`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
    /// `auth-url` and friends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_auth: Option<ExternalAuth>,
    /// `limit-rps`, `limit-rpm`, `limit-connections`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// The canary annotations of a canary Ingress merged into this rule: the rule's backend group then holds the
    /// main backend at index 0 and the canary at index 1, weighted by `canary-weight`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
    /// ingress-nginx's header handling towards the backend (the ingress-nginx profile only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forwarded: Option<Forwarded>,
}

/// A redirect answered as given (`return CODE URL` in nginx: the query string is not added), or nginx's redirect of
/// a prefix location's name without its trailing slash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FixedRedirect {
    /// 300-308.
    pub status: u16,
    /// The `Location`, as written in the annotation; a path (starting with `/`) is made absolute with the
    /// request's scheme and host, without a port (nginx's `absolute_redirect`, `port_in_redirect off`).
    pub location: String,
    /// Append the request's query string (nginx's own redirect of `/dir` to `/dir/` does).
    pub keep_query: bool,
}

/// Redirection of plain-HTTP requests to https.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SslRedirect {
    /// `true` for `force-ssl-redirect` (even without a certificate for the host); `false` redirects only hosts
    /// with a certificate of their own, which translation already checked (the rule has this only then).
    pub force: bool,
    /// The status (ConfigMap `http-redirect-code`, 308 by default).
    pub status: u16,
    /// `preserve-trailing-slash`: without it, one trailing `/` of the request target is dropped, as ingress-nginx
    /// does.
    pub preserve_trailing_slash: bool,
    /// Trust `X-Forwarded-Proto` for the request's scheme (`use-forwarded-headers`).
    pub trust_forwarded_proto: bool,
}

/// `from-to-www-redirect`: `scheme://to:port` plus the request target without one trailing `/`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WwwRedirect {
    /// The host redirected to.
    pub to: String,
    /// The status (`http-redirect-code`, 308 by default).
    pub status: u16,
    /// Take the scheme and port from `X-Forwarded-Proto` / `X-Forwarded-Port` (`use-forwarded-headers`).
    pub trust_forwarded: bool,
}

/// A path rewrite: the regex is searched in the request path (case-insensitively, as nginx's `rewrite
/// "(?i)path"`), and the whole path becomes `target` with `$1`..`$9` replaced by the captures; the query string is
/// kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rewrite {
    /// The Ingress path, used as a regex (checked to compile).
    pub pattern: String,
    /// The new path.
    pub target: Vec<TemplatePart>,
}

/// A piece of a rewrite target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", content = "value")]
pub enum TemplatePart {
    /// Text copied as is.
    Text(String),
    /// The text of capture group `n` (1-9); empty when the group did not take part.
    Capture(u8),
}

/// An IPv4 or IPv6 network. Invariant: the address has no bits set past the prefix length, and the prefix length
/// is at most 32 (IPv4) or 128 (IPv6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    /// The network of `addr` with `len` prefix bits (longer lengths are cut to the address size; host bits are
    /// cleared).
    pub fn new(addr: IpAddr, len: u8) -> Cidr {
        match addr {
            IpAddr::V4(a) => {
                let len = len.min(32);
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                Cidr {
                    addr: IpAddr::V4((u32::from(a) & mask).into()),
                    len,
                }
            }
            IpAddr::V6(a) => {
                let len = len.min(128);
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                Cidr {
                    addr: IpAddr::V6((u128::from(a) & mask).into()),
                    len,
                }
            }
        }
    }

    /// Does the network hold `ip`? An IPv4-mapped IPv6 address counts as the IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        Cidr::new(ip, self.len).addr == self.addr && ip.is_ipv4() == self.addr.is_ipv4()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Source address checks, in nginx's order: a denied address gets 403; then, when `allow` is not empty, an
/// address outside it gets 403.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SourceRanges {
    /// `allowlist-source-range` (or `whitelist-source-range`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<Cidr>,
    /// `denylist-source-range`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<Cidr>,
}

impl SourceRanges {
    /// No check at all.
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

/// CORS as ingress-nginx does it: when the request's `Origin` is allowed (or the origin list is `*`), every
/// response gets the CORS headers, and every `OPTIONS` request is answered 204 here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NginxCors {
    /// Allowed origins; empty with `any` set means `*`.
    pub origins: Vec<CorsOrigin>,
    /// `cors-allow-origin: *` (the default): every request, with or without `Origin`, and the header value `*`.
    pub any: bool,
    /// `Access-Control-Allow-Methods`, as configured.
    pub allow_methods: String,
    /// `Access-Control-Allow-Headers`, as configured.
    pub allow_headers: String,
    /// `Access-Control-Expose-Headers`, when not empty.
    pub expose_headers: String,
    /// `Access-Control-Allow-Credentials: true` (the default).
    pub allow_credentials: bool,
    /// `Access-Control-Max-Age`.
    pub max_age: i64,
}

/// One allowed origin, compared case-insensitively with the end of the request's `Origin` (ingress-nginx's
/// regex is anchored at the end only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CorsOrigin {
    /// Lowercase text before the wildcard label (or the whole origin).
    pub prefix: String,
    /// Lowercase text after the wildcard label; `None` when the origin has no `*.`.
    pub suffix: Option<String>,
}

/// `auth-type: basic`: requests must carry a user and password of the Secret's htpasswd entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BasicAuth {
    /// `auth-realm`, sent in `WWW-Authenticate`.
    pub realm: String,
    /// The Secret the entries came from (`namespace/name`).
    pub secret: String,
    /// Users and their password hashes. Never printed.
    #[serde(skip)]
    pub users: Vec<(String, PasswordHash)>,
}

/// A password as an htpasswd file holds it.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordHash {
    /// `$2a$`, `$2b$`, `$2y$` (bcrypt), the whole hash string.
    Bcrypt(String),
    /// `$apr1$salt$hash` (Apache MD5) or `$1$salt$hash` (MD5-crypt): the magic, the salt and the encoded hash.
    Md5Crypt {
        /// `$apr1$` or `$1$`.
        magic: String,
        /// At most 8 characters.
        salt: String,
        /// 22 characters of the crypt alphabet.
        hash: String,
    },
    /// `{SHA}` followed by the base64 SHA-1 of the password: the 20 digest bytes.
    Sha1([u8; 20]),
    /// `{PLAIN}` followed by the password.
    Plain(String),
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            PasswordHash::Bcrypt(_) => "bcrypt",
            PasswordHash::Md5Crypt { .. } => "md5-crypt",
            PasswordHash::Sha1(_) => "sha1",
            PasswordHash::Plain(_) => "plain",
        };
        write!(f, "PasswordHash({kind})")
    }
}

/// External authentication (`auth-url`): each request is first sent (headers only) to `url`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExternalAuth {
    /// `http` or `https`.
    pub scheme: String,
    /// Host (a name or an address) of the auth service.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// Path and query of the auth request.
    pub path_and_query: String,
    /// `auth-method`; `None` keeps the request's method.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// `auth-signin`: a 401 from the auth service becomes a 302 to this URL, with the original URL in the
    /// `redirect_param` query parameter unless the URL already has it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signin: Option<Vec<UrlPart>>,
    /// `auth-signin-redirect-param` (default `rd`).
    pub redirect_param: String,
    /// `auth-response-headers`: copied from the auth response to the request sent upstream.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub response_headers: Vec<String>,
    /// `auth-request-redirect`: the `X-Auth-Request-Redirect` value (default: the request target).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<String>,
    /// `auth-always-set-cookie`: pass the auth response's `Set-Cookie` on every response, not only successful
    /// ones.
    pub always_set_cookie: bool,
}

/// A piece of a URL with nginx variables (`auth-signin`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", content = "value")]
pub enum UrlPart {
    /// Text copied as is.
    Text(String),
    /// `$host`: the request's host name, without a port, lowercase.
    Host,
    /// `$http_host` / `$best_http_host`: the `Host` header as sent.
    HttpHost,
    /// `$scheme` / `$pass_access_scheme`: `http` or `https`.
    Scheme,
    /// `$request_uri`: the request target, query included.
    RequestUri,
    /// `$escaped_request_uri`: the request target, percent-encoded for use in a query parameter.
    EscapedRequestUri,
}

/// Request-rate and concurrency limits per client address (nginx's `limit_req` with `nodelay`, and
/// `limit_conn`), shared by every rule of one Ingress (`zone`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RateLimit {
    /// The zone: the Ingress (`namespace/name`); rules of the same Ingress share counters.
    pub zone: String,
    /// `limit-rps` (0 = none).
    pub rps: u32,
    /// `limit-rpm` (0 = none).
    pub rpm: u32,
    /// Requests beyond the rate accepted in a burst: `limit × limit-burst-multiplier`, for each of rps and rpm.
    pub burst_multiplier: u32,
    /// `limit-connections` (0 = none): requests in progress at once.
    pub connections: u32,
    /// `limit-allowlist`: addresses that are not limited.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<Cidr>,
    /// The answer to a request over the rate (`limit-req-status-code`, 503).
    pub req_status: u16,
    /// The answer to a request over the connection limit (`limit-conn-status-code`, 503).
    pub conn_status: u16,
}

/// Which requests a canary takes before its weight is drawn: a header, then a cookie (ingress-nginx's order).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Canary {
    /// The canary Ingress (`namespace/name`).
    pub ingress: String,
    /// `canary-by-header` (lowercase name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// `canary-by-header-value`: this value sends to the canary (instead of `always`/`never`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_value: Option<String>,
    /// `canary-by-header-pattern`: a regex (checked to compile) the value must match, when there is no
    /// `header_value`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_pattern: Option<String>,
    /// `canary-by-cookie`: the cookie name (`always` / `never`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
}

/// ingress-nginx's request headers towards the backend (`X-Forwarded-For` is the client address alone, plus
/// `X-Real-IP`, `X-Forwarded-Port`, `X-Forwarded-Scheme`, `X-Scheme`), and whether the client's own
/// `X-Forwarded-*` are trusted (`use-forwarded-headers`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Forwarded {
    /// `use-forwarded-headers`.
    pub trust_client_headers: bool,
}
