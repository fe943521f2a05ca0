//! ingress-nginx annotations parsed into typed values with ingress-nginx v1.15's semantics.
//!
//! ingress-nginx treats a bad value in one of three ways, and so do we, annotation by annotation (each parser below
//! says which, in our words, after `internal/ingress/annotations/<group>/main.go`):
//! - rejected: the annotation extractor returns a validation error and the controller keeps the Ingress it had
//!   (its admission webhook refuses the change). Here: an error, and the Ingress keeps its last good version
//!   ([`Finding::Reject`]);
//! - denied: the location answers 503 (`LocationDeniedError`). Here: an error, and the Ingress's rules answer 503
//!   ([`Finding::Deny`]);
//! - corrected: the parser logs a warning and uses its default. Here: a warning naming the value used
//!   ([`Finding::Warn`]).
//!
//! Everything is parsed even when Portcullis does not act on it yet: see [`NOT_APPLIED`] and
//! docs/ingress-nginx.md.

use super::config::Settings;
use super::values::{cidr_list, dns1035_label, go_bool, go_int, normalize, size_syntax, Chars};
use crate::model::policy::{
    BasicAuth, Cidr, CorsOrigin, ExternalAuth, NginxCors, PasswordHash, RateLimit, TemplatePart,
    UrlPart,
};
use base64::Engine as _;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// What a bad or unsupported annotation leads to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Finding {
    /// ingress-nginx refuses the Ingress: it keeps its last good version.
    Reject {
        /// The full annotation name.
        key: String,
        /// Why.
        message: String,
    },
    /// ingress-nginx denies the location: the Ingress's rules answer 503.
    Deny {
        /// The full annotation name.
        key: String,
        /// Why.
        message: String,
    },
    /// Served, but not as written (a corrected value, an unknown key, a setting not applied yet).
    Warn {
        /// The full annotation name.
        key: String,
        /// Why, and what is used instead.
        message: String,
    },
}

impl Finding {
    /// The annotation the finding is about.
    pub fn key(&self) -> &str {
        match self {
            Finding::Reject { key, .. } | Finding::Deny { key, .. } | Finding::Warn { key, .. } => {
                key
            }
        }
    }
}

/// `permanent-redirect` / `temporal-redirect` / `from-to-www-redirect`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RedirectAnnotation {
    /// The target URL (`None` with only `from-to-www-redirect`).
    pub url: Option<String>,
    /// The status.
    pub code: u16,
    /// `from-to-www-redirect`.
    pub from_to_www: bool,
    /// `relative-redirects` (parsed, not applied).
    pub relative: bool,
}

/// `canary-*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CanaryAnnotation {
    /// `canary-weight` (negative never selects).
    pub weight: i64,
    /// `canary-weight-total` (ingress-nginx uses 100 for anything up to 100).
    pub weight_total: i64,
    /// `canary-by-header` (lowercase).
    pub header: Option<String>,
    /// `canary-by-header-value`.
    pub header_value: Option<String>,
    /// `canary-by-header-pattern`.
    pub header_pattern: Option<String>,
    /// `canary-by-cookie`.
    pub cookie: Option<String>,
}

/// `proxy-next-upstream` conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NextUpstream {
    /// `error`.
    Error,
    /// `timeout`.
    Timeout,
    /// `invalid_header`.
    InvalidHeader,
    /// `http_500` .. `http_504`, `http_403`, `http_404`, `http_429`.
    Status(u16),
    /// `non_idempotent`.
    NonIdempotent,
    /// `off`.
    Off,
}

/// `affinity: cookie` and `session-cookie-*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CookieAffinity {
    /// `affinity-mode`: `persistent` (else balanced).
    pub persistent: bool,
    /// `affinity-canary-behavior: legacy` (else sticky).
    pub canary_legacy: bool,
    /// `session-cookie-name` (default `INGRESSCOOKIE`).
    pub name: String,
    /// `session-cookie-expires` (seconds).
    pub expires: Option<i64>,
    /// `session-cookie-max-age` (seconds).
    pub max_age: Option<i64>,
    /// `session-cookie-path`.
    pub path: Option<String>,
    /// `session-cookie-domain`.
    pub domain: Option<String>,
    /// `session-cookie-samesite` (`None`, `Lax`, `Strict`, as written).
    pub same_site: Option<String>,
    /// `session-cookie-secure`.
    pub secure: bool,
    /// `session-cookie-conditional-samesite-none`.
    pub conditional_same_site_none: bool,
    /// `session-cookie-change-on-failure`.
    pub change_on_failure: bool,
}

/// `backend-protocol`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BackendProtocolAnnotation {
    /// `HTTP` (the default).
    #[default]
    Http,
    /// `HTTPS`: TLS, the certificate not verified unless `proxy-ssl-verify: "on"`.
    Https,
    /// `GRPC`: gRPC over h2c.
    Grpc,
    /// `GRPCS`: gRPC over TLS.
    Grpcs,
    /// `AUTO_HTTP`: the client's scheme.
    AutoHttp,
    /// `FCGI`: FastCGI (not supported).
    Fcgi,
}

impl BackendProtocolAnnotation {
    /// `GRPC` or `GRPCS`: the clients of the path speak gRPC.
    pub fn is_grpc(self) -> bool {
        matches!(self, Self::Grpc | Self::Grpcs)
    }
}

/// `proxy-ssl-*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProxySslAnnotation {
    /// `proxy-ssl-secret` (`namespace/name`).
    pub secret: String,
    /// `proxy-ssl-verify: "on"`.
    pub verify: bool,
    /// `proxy-ssl-verify-depth` (default 1).
    pub verify_depth: i64,
    /// `proxy-ssl-name`.
    pub name: Option<String>,
    /// `proxy-ssl-server-name: "on"` (send SNI).
    pub server_name: bool,
    /// `proxy-ssl-protocols`, sorted (default `TLSv1.2`).
    pub protocols: Vec<String>,
    /// `proxy-ssl-ciphers` (default `DEFAULT`).
    pub ciphers: String,
    /// The TLS 1.2 cipher suites of `ciphers` rustls implements (rustls names, in order); empty: all of rustls's.
    pub tls12_cipher_suites: Vec<String>,
}

/// `upstream-hash-by` and its subset settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UpstreamHashBy {
    /// The nginx variable text hashed (e.g. `$request_uri`).
    pub key: String,
    /// `upstream-hash-by-subset`.
    pub subset: bool,
    /// `upstream-hash-by-subset-size` (default 3).
    pub subset_size: i64,
}

/// `load-balance`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalance {
    /// `round_robin`.
    RoundRobin,
    /// `ewma`.
    Ewma,
    /// `chash` (set by `upstream-hash-by` in practice).
    Chash,
    /// `chashsubset`.
    ChashSubset,
    /// `sticky_balanced`.
    StickyBalanced,
    /// `sticky_persistent`.
    StickyPersistent,
}

/// Settings that act on backends: parsed and checked, kept here. `backend-protocol`, `proxy-ssl-*`,
/// `load-balance` and `upstream-hash-by` are applied by the translator to the Service port (as a variant of it);
/// each of the others set on an Ingress gets a warning that it is not applied yet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BackendAnnotations {
    /// `backend-protocol`.
    pub protocol: BackendProtocolAnnotation,
    /// `proxy-ssl-*`.
    pub proxy_ssl: Option<ProxySslAnnotation>,
    /// TLS to the backend from `backend-protocol` and `proxy-ssl-*`: not set by [`parse`], set by the translator
    /// once the `proxy-ssl-secret` Secret is read ([`backend_tls`]).
    #[serde(skip)]
    pub tls: Option<crate::model::BackendTls>,
    /// `affinity: cookie`.
    pub affinity: Option<CookieAffinity>,
    /// `upstream-hash-by`.
    pub upstream_hash_by: Option<UpstreamHashBy>,
    /// `load-balance`.
    pub load_balance: Option<LoadBalance>,
    /// `service-upstream`.
    pub service_upstream: bool,
    /// `proxy-next-upstream` (ingress-nginx's default: `error timeout`).
    pub next_upstream: Vec<NextUpstream>,
    /// The next-upstream settings apply: the ingress-nginx profile, or one of the three annotations is set.
    pub next_upstream_set: bool,
    /// `proxy-next-upstream-tries` (default 3).
    pub next_upstream_tries: i64,
    /// `proxy-next-upstream-timeout` in seconds (default 0: none).
    pub next_upstream_timeout: i64,
    /// `proxy-connect-timeout` in seconds.
    pub connect_timeout: Option<u32>,
    /// `custom-http-errors`.
    pub custom_http_errors: Vec<u16>,
    /// `default-backend` (a Service of the Ingress's namespace).
    pub default_backend: Option<String>,
}

/// A reference to the htpasswd Secret of `auth-type: basic`, resolved by the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BasicAuthRef {
    /// `auth-realm`.
    pub realm: String,
    /// Secret namespace.
    pub namespace: String,
    /// Secret name.
    pub name: String,
    /// `auth-secret-type: auth-map` (else `auth-file`: the htpasswd text under the key `auth`).
    pub map: bool,
}

/// Every annotation of one Ingress, typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngressAnnotations {
    /// `rewrite-target` as written (compared with each path: equal means no rewrite, as ingress-nginx does).
    pub rewrite_target: Option<String>,
    /// `rewrite-target` parsed into text and capture references.
    pub rewrite_template: Option<Vec<TemplatePart>>,
    /// `use-regex`.
    pub use_regex: bool,
    /// `ssl-redirect`.
    pub ssl_redirect: bool,
    /// `force-ssl-redirect`.
    pub force_ssl_redirect: bool,
    /// `preserve-trailing-slash`.
    pub preserve_trailing_slash: bool,
    /// `app-root`.
    pub app_root: Option<String>,
    /// Redirect annotations.
    pub redirect: Option<RedirectAnnotation>,
    /// `server-alias`, sorted and without duplicates.
    pub aliases: Vec<String>,
    /// `x-forwarded-prefix`.
    pub x_forwarded_prefix: Option<String>,
    /// `upstream-vhost`.
    pub upstream_vhost: Option<String>,
    /// `proxy-body-size` in bytes: `None` when neither the annotation nor the profile sets one (the proxy's
    /// `--max-request-body` applies), `Some(0)` for no limit (nginx's `client_max_body_size 0`).
    pub body_size: Option<u64>,
    /// `proxy-read-timeout`.
    pub read_timeout: Option<u32>,
    /// `proxy-send-timeout`.
    pub send_timeout: Option<u32>,
    /// `proxy-buffering` (accepted; Portcullis streams either way).
    pub proxy_buffering: Option<bool>,
    /// `allowlist-source-range` / `whitelist-source-range` (else the global list).
    pub allowlist: Vec<Cidr>,
    /// `denylist-source-range` (else the global list).
    pub denylist: Vec<Cidr>,
    /// `enable-cors` and `cors-*`.
    pub cors: Option<NginxCors>,
    /// `auth-type: basic`.
    pub basic_auth: Option<BasicAuthRef>,
    /// `auth-url`.
    pub external_auth: Option<ExternalAuth>,
    /// `limit-*`.
    pub rate_limit: Option<RateLimit>,
    /// `canary: "true"` and its settings.
    pub canary: Option<CanaryAnnotation>,
    /// `ssl-passthrough`.
    pub ssl_passthrough: bool,
    /// Settings the upstream layer applies.
    pub backend: BackendAnnotations,
    /// Why ingress-nginx would deny the Ingress's locations (the first reason).
    pub denied: Option<String>,
    /// Problems, in annotation order.
    pub findings: Vec<Finding>,
}

impl IngressAnnotations {
    /// Is the Ingress refused as a whole?
    pub fn rejected(&self) -> bool {
        self.findings
            .iter()
            .any(|f| matches!(f, Finding::Reject { .. }))
    }
}

/// The annotations (short names) whose effect is on backends: parsed and checked, not applied yet.
pub const NOT_APPLIED: &[&str] = &["relative-redirects"];

/// Snippet annotations: raw nginx configuration, never executed here.
pub const SNIPPETS: &[&str] = &[
    "configuration-snippet",
    "server-snippet",
    "auth-snippet",
    "stream-snippet",
    "modsecurity-snippet",
];

/// Every annotation ingress-nginx v1.15 knows (short names), for "did you mean" and for the keys it knows that we
/// do not implement at all.
pub const KNOWN: &[&str] = &[
    "affinity",
    "affinity-canary-behavior",
    "affinity-mode",
    "allowlist-source-range",
    "app-root",
    "auth-always-set-cookie",
    "auth-cache-duration",
    "auth-cache-key",
    "auth-keepalive",
    "auth-keepalive-requests",
    "auth-keepalive-share-vars",
    "auth-keepalive-timeout",
    "auth-method",
    "auth-proxy-set-headers",
    "auth-realm",
    "auth-request-redirect",
    "auth-response-headers",
    "auth-secret",
    "auth-secret-type",
    "auth-signin",
    "auth-signin-redirect-param",
    "auth-snippet",
    "auth-tls-error-page",
    "auth-tls-match-cn",
    "auth-tls-pass-certificate-to-upstream",
    "auth-tls-secret",
    "auth-tls-verify-client",
    "auth-tls-verify-depth",
    "auth-type",
    "auth-url",
    "backend-protocol",
    "canary",
    "canary-by-cookie",
    "canary-by-header",
    "canary-by-header-pattern",
    "canary-by-header-value",
    "canary-weight",
    "canary-weight-total",
    "client-body-buffer-size",
    "configuration-snippet",
    "connection-proxy-header",
    "cors-allow-credentials",
    "cors-allow-headers",
    "cors-allow-methods",
    "cors-allow-origin",
    "cors-expose-headers",
    "cors-max-age",
    "custom-headers",
    "custom-http-errors",
    "default-backend",
    "denylist-source-range",
    "disable-proxy-intercept-errors",
    "enable-access-log",
    "enable-cors",
    "enable-global-auth",
    "enable-modsecurity",
    "enable-opentelemetry",
    "enable-owasp-core-rules",
    "enable-rewrite-log",
    "fastcgi-index",
    "fastcgi-params-configmap",
    "force-ssl-redirect",
    "from-to-www-redirect",
    "http2-push-preload",
    "limit-allowlist",
    "limit-burst-multiplier",
    "limit-connections",
    "limit-rate",
    "limit-rate-after",
    "limit-rpm",
    "limit-rps",
    "limit-whitelist",
    "load-balance",
    "mirror-host",
    "mirror-request-body",
    "mirror-target",
    "modsecurity-snippet",
    "modsecurity-transaction-id",
    "opentelemetry-operation-name",
    "opentelemetry-trust-incoming-span",
    "permanent-redirect",
    "permanent-redirect-code",
    "preserve-trailing-slash",
    "proxy-body-size",
    "proxy-buffer-size",
    "proxy-buffering",
    "proxy-buffers-number",
    "proxy-busy-buffers-size",
    "proxy-connect-timeout",
    "proxy-cookie-domain",
    "proxy-cookie-path",
    "proxy-http-version",
    "proxy-max-temp-file-size",
    "proxy-next-upstream",
    "proxy-next-upstream-timeout",
    "proxy-next-upstream-tries",
    "proxy-read-timeout",
    "proxy-redirect-from",
    "proxy-redirect-to",
    "proxy-request-buffering",
    "proxy-send-timeout",
    "proxy-ssl-ciphers",
    "proxy-ssl-name",
    "proxy-ssl-protocols",
    "proxy-ssl-secret",
    "proxy-ssl-server-name",
    "proxy-ssl-verify",
    "proxy-ssl-verify-depth",
    "relative-redirects",
    "rewrite-target",
    "satisfy",
    "server-alias",
    "server-snippet",
    "service-upstream",
    "session-cookie-change-on-failure",
    "session-cookie-conditional-samesite-none",
    "session-cookie-domain",
    "session-cookie-expires",
    "session-cookie-max-age",
    "session-cookie-name",
    "session-cookie-path",
    "session-cookie-samesite",
    "session-cookie-secure",
    "ssl-ciphers",
    "ssl-passthrough",
    "ssl-prefer-server-ciphers",
    "ssl-redirect",
    "stream-snippet",
    "temporal-redirect",
    "temporal-redirect-code",
    "upstream-hash-by",
    "upstream-hash-by-subset",
    "upstream-hash-by-subset-size",
    "upstream-vhost",
    "use-port-in-redirects",
    "use-regex",
    "whitelist-source-range",
    "x-forwarded-prefix",
];

/// The annotations Portcullis acts on (all others it knows are parsed only, or not supported).
const APPLIED: &[&str] = &[
    "rewrite-target",
    "use-regex",
    "app-root",
    "x-forwarded-prefix",
    "upstream-vhost",
    "ssl-redirect",
    "force-ssl-redirect",
    "preserve-trailing-slash",
    "permanent-redirect",
    "permanent-redirect-code",
    "temporal-redirect",
    "temporal-redirect-code",
    "from-to-www-redirect",
    "server-alias",
    "proxy-body-size",
    "proxy-read-timeout",
    "proxy-send-timeout",
    "proxy-buffering",
    "allowlist-source-range",
    "whitelist-source-range",
    "denylist-source-range",
    "enable-cors",
    "cors-allow-origin",
    "cors-allow-methods",
    "cors-allow-headers",
    "cors-expose-headers",
    "cors-allow-credentials",
    "cors-max-age",
    "auth-type",
    "auth-secret",
    "auth-secret-type",
    "auth-realm",
    "auth-url",
    "auth-method",
    "auth-signin",
    "auth-signin-redirect-param",
    "auth-response-headers",
    "auth-request-redirect",
    "auth-always-set-cookie",
    "limit-rps",
    "limit-rpm",
    "limit-connections",
    "limit-burst-multiplier",
    "limit-allowlist",
    "limit-whitelist",
    "canary",
    "canary-by-header",
    "canary-by-header-value",
    "canary-by-header-pattern",
    "canary-by-cookie",
    "canary-weight",
    "canary-weight-total",
    "ssl-passthrough",
    "backend-protocol",
    "upstream-hash-by",
    "load-balance",
    "proxy-ssl-secret",
    "proxy-ssl-verify",
    "proxy-ssl-verify-depth",
    "proxy-ssl-name",
    "proxy-ssl-server-name",
    "proxy-ssl-protocols",
    "proxy-ssl-ciphers",
    "upstream-hash-by-subset",
    "upstream-hash-by-subset-size",
    "service-upstream",
    "custom-http-errors",
    "default-backend",
    "proxy-next-upstream",
    "proxy-next-upstream-tries",
    "proxy-next-upstream-timeout",
    "proxy-connect-timeout",
    "affinity",
    "affinity-mode",
    "affinity-canary-behavior",
    "session-cookie-name",
    "session-cookie-secure",
    "session-cookie-expires",
    "session-cookie-max-age",
    "session-cookie-path",
    "session-cookie-domain",
    "session-cookie-samesite",
    "session-cookie-conditional-samesite-none",
    "session-cookie-change-on-failure",
];

/// What `upstream-hash-by` hashes. The value is read as ingress-nginx's balancer reads it (`parse_complex_value`):
/// text, `$name` and `${name}` in any order, concatenated at request time. The variables Portcullis can evaluate
/// are `$request_uri`, `$uri` / `$document_uri`, `$args` / `$query_string`, `$host`, `$request_method`,
/// `$remote_addr` / `$binary_remote_addr`, `$http_NAME`, `$cookie_NAME` and `$arg_NAME`; `None` when the value
/// names any other variable (the caller then leaves endpoint selection round robin and warns). One variable
/// alone is that property; anything else is [`HashOn::Parts`](crate::model::HashOn::Parts).
pub fn hash_on(key: &str) -> Option<crate::model::HashOn> {
    use crate::model::{HashOn, HashPart};
    let mut parts: Vec<HashPart> = Vec::new();
    let mut rest = key.trim();
    while !rest.is_empty() {
        let (part, after) = match rest.strip_prefix('$') {
            Some(r) => match r.strip_prefix('{').and_then(|r| r.split_once('}')) {
                Some((name, after)) if is_var_name(name) => (HashPart::Var(hash_var(name)?), after),
                _ => {
                    let len = r
                        .bytes()
                        .take_while(|&c| c.is_ascii_alphanumeric() || c == b'_')
                        .count();
                    if len == 0 {
                        // A `$` that starts no name is text.
                        (HashPart::Text("$".into()), r)
                    } else {
                        (HashPart::Var(hash_var(&r[..len])?), &r[len..])
                    }
                }
            },
            None => {
                let len = rest.find('$').unwrap_or(rest.len());
                (HashPart::Text(rest[..len].to_string()), &rest[len..])
            }
        };
        match (parts.last_mut(), part) {
            (Some(HashPart::Text(t)), HashPart::Text(more)) => t.push_str(&more),
            (_, part) => parts.push(part),
        }
        rest = after;
    }
    match parts.as_slice() {
        [HashPart::Var(_)] => match parts.pop() {
            Some(HashPart::Var(on)) => Some(on),
            _ => None,
        },
        [] => None,
        _ => Some(HashOn::Parts(parts)),
    }
}

fn is_var_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// The request property an nginx variable names, for the variables Portcullis can evaluate.
fn hash_var(var: &str) -> Option<crate::model::HashOn> {
    use crate::model::HashOn;
    let name = |prefix: &str| var.strip_prefix(prefix).filter(|n| !n.is_empty());
    match var {
        "request_uri" => Some(HashOn::Uri),
        "uri" | "document_uri" => Some(HashOn::Path),
        "args" | "query_string" => Some(HashOn::Query),
        "host" => Some(HashOn::Host),
        "request_method" => Some(HashOn::Method),
        "remote_addr" | "binary_remote_addr" => Some(HashOn::SourceIp),
        _ => {
            if let Some(h) = name("http_") {
                // nginx's $http_NAME: the header with dashes written as underscores, any case.
                Some(HashOn::Header(h.replace('_', "-").to_ascii_lowercase()))
            } else if let Some(c) = name("cookie_") {
                Some(HashOn::Cookie(c.to_string()))
            } else {
                name("arg_").map(|a| HashOn::QueryParam(a.to_string()))
            }
        }
    }
}

/// The known key closest to `short` (Levenshtein distance, ties to the first in [`KNOWN`]).
pub fn closest_known(short: &str) -> &'static str {
    KNOWN
        .iter()
        .min_by_key(|k| strsim::levenshtein(short, k))
        .copied()
        .unwrap_or("rewrite-target")
}

/// What the parser needs besides the annotations.
pub struct Context<'a> {
    /// The annotation prefix (without the `/`).
    pub prefix: &'a str,
    /// The Ingress's namespace.
    pub namespace: &'a str,
    /// The Ingress's name.
    pub name: &'a str,
    /// The profile's settings.
    pub settings: &'a Settings,
}

/// How a bad value of one annotation is handled (see the module documentation).
#[derive(Clone, Copy, PartialEq, Eq)]
enum OnBad {
    Reject,
    Deny,
    Correct,
}

struct P<'a> {
    cx: &'a Context<'a>,
    anns: &'a BTreeMap<String, String>,
    findings: Vec<Finding>,
    denied: Option<String>,
}

impl<'a> P<'a> {
    fn full(&self, short: &str) -> String {
        format!("{}/{short}", self.cx.prefix)
    }

    /// The value of an annotation; an empty value counts as absent (ingress-nginx does not validate empty values
    /// and its parsers then fall back to their defaults), with a warning.
    fn get(&mut self, short: &str) -> Option<&'a str> {
        let v = self.anns.get(&self.full(short))?;
        if v.is_empty() {
            let key = self.full(short);
            self.findings.push(Finding::Warn {
                key,
                message: "the value is empty; the annotation is ignored".into(),
            });
            return None;
        }
        Some(v.as_str())
    }

    fn bad(&mut self, short: &str, value: &str, on: OnBad, reason: &str, fallback: &str) {
        let key = self.full(short);
        match on {
            OnBad::Reject => self.findings.push(Finding::Reject {
                message: format!(
                    "value {value:?} is refused ({reason}), as ingress-nginx refuses it; the Ingress keeps its last good version"
                ),
                key,
            }),
            OnBad::Deny => {
                let message = format!(
                    "value {value:?} is not usable ({reason}); as in ingress-nginx, the Ingress's paths answer 503"
                );
                if self.denied.is_none() {
                    self.denied = Some(format!("{key}: {reason}"));
                }
                self.findings.push(Finding::Deny { key, message });
            }
            OnBad::Correct => self.findings.push(Finding::Warn {
                message: format!("value {value:?} is not valid ({reason}); {fallback}, as in ingress-nginx"),
                key,
            }),
        }
    }

    fn deny(&mut self, short: &str, reason: String) {
        let key = self.full(short);
        if self.denied.is_none() {
            self.denied = Some(format!("{key}: {reason}"));
        }
        self.findings.push(Finding::Deny {
            key,
            message: format!("{reason}; as in ingress-nginx, the Ingress's paths answer 503"),
        });
    }

    fn warn(&mut self, short: &str, message: String) {
        let key = self.full(short);
        self.findings.push(Finding::Warn { key, message });
    }

    fn boolean(&mut self, short: &str, on: OnBad, default: bool) -> Option<bool> {
        let v = self.get(short)?;
        match go_bool(v) {
            Ok(b) => Some(b),
            Err(e) => {
                self.bad(short, v, on, &e, &format!("{default} is used"));
                (on == OnBad::Correct).then_some(default)
            }
        }
    }

    fn int(&mut self, short: &str, on: OnBad, default: i64) -> Option<i64> {
        let v = self.get(short)?;
        match go_int(v) {
            Ok(n) => Some(n),
            Err(e) => {
                self.bad(short, v, on, &e, &format!("{default} is used"));
                (on == OnBad::Correct).then_some(default)
            }
        }
    }

    /// A string annotation checked with a character class, then normalized (lines trimmed), as ingress-nginx's
    /// `GetStringAnnotation` does. A bad value gives `None`.
    fn chars(
        &mut self,
        short: &str,
        class: Chars,
        remove_spaces: bool,
        on: OnBad,
        fallback: &str,
    ) -> Option<String> {
        let v = self.get(short)?;
        match class.check(v, remove_spaces) {
            Ok(()) => Some(normalize(v)),
            Err(e) => {
                self.bad(short, v, on, &e, fallback);
                None
            }
        }
    }

    /// `ValidateOptions`: one of `options`, after trimming (and lowercasing unless case-sensitive).
    fn option(
        &mut self,
        short: &str,
        options: &[&str],
        case_sensitive: bool,
        on: OnBad,
        fallback: &str,
    ) -> Option<String> {
        let v = self.get(short)?;
        let mut t = v.trim().to_string();
        if !case_sensitive {
            t = t.to_lowercase();
        }
        if options.contains(&t.as_str()) {
            Some(t)
        } else {
            self.bad(
                short,
                v,
                on,
                &format!("expected one of {}", options.join(", ")),
                fallback,
            );
            None
        }
    }
}

/// Parses `rewrite-target`/`x-forwarded-prefix` style text: `$1`..`$9` are captures, other text is copied.
/// `Err` for an nginx variable (`$name`), which Portcullis cannot expand.
pub fn capture_template(s: &str) -> Result<Vec<TemplatePart>, String> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            text.push(c);
            continue;
        }
        match chars.peek().copied() {
            Some(d @ '1'..='9') => {
                chars.next();
                if !text.is_empty() {
                    out.push(TemplatePart::Text(std::mem::take(&mut text)));
                }
                out.push(TemplatePart::Capture(d as u8 - b'0'));
            }
            Some(n) if n.is_ascii_alphabetic() || n == '_' || n == '{' => {
                return Err("nginx variables ($name) are not supported, only $1..$9".into());
            }
            _ => text.push('$'),
        }
    }
    if !text.is_empty() {
        out.push(TemplatePart::Text(text));
    }
    Ok(out)
}

/// Parses a URL with nginx variables (`auth-signin`) into text and the variables Portcullis supports.
pub fn url_template(s: &str) -> Result<Vec<UrlPart>, String> {
    let mut out = Vec::new();
    let mut text = String::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            let c = s[i..].chars().next().unwrap_or('$');
            text.push(c);
            i += c.len_utf8();
            continue;
        }
        let (name, next) = if bytes.get(i + 1) == Some(&b'{') {
            match s[i + 2..].find('}') {
                Some(end) => (&s[i + 2..i + 2 + end], i + 3 + end),
                None => return Err("unclosed ${ in a variable".into()),
            }
        } else {
            let len = s[i + 1..]
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            (&s[i + 1..i + 1 + len], i + 1 + len)
        };
        let part = match name {
            "host" => UrlPart::Host,
            "http_host" | "best_http_host" => UrlPart::HttpHost,
            "scheme" | "pass_access_scheme" => UrlPart::Scheme,
            "request_uri" => UrlPart::RequestUri,
            "escaped_request_uri" => UrlPart::EscapedRequestUri,
            "" => {
                text.push('$');
                i = next;
                continue;
            }
            other => return Err(format!("nginx variable ${other} is not supported")),
        };
        if !text.is_empty() {
            out.push(UrlPart::Text(std::mem::take(&mut text)));
        }
        out.push(part);
        i = next;
    }
    if !text.is_empty() {
        out.push(UrlPart::Text(text));
    }
    Ok(out)
}

/// Parses every annotation of one Ingress.
pub fn parse(anns: &BTreeMap<String, String>, cx: &Context<'_>) -> IngressAnnotations {
    let mut p = P {
        cx,
        anns,
        findings: Vec::new(),
        denied: None,
    };
    let s = cx.settings;
    let mut out = IngressAnnotations {
        rewrite_target: None,
        rewrite_template: None,
        use_regex: false,
        ssl_redirect: s.ssl_redirect,
        force_ssl_redirect: s.force_ssl_redirect,
        preserve_trailing_slash: s.preserve_trailing_slash,
        app_root: None,
        redirect: None,
        aliases: Vec::new(),
        x_forwarded_prefix: None,
        upstream_vhost: None,
        body_size: s.body_size,
        read_timeout: s.read_timeout,
        send_timeout: s.send_timeout,
        proxy_buffering: None,
        allowlist: s.allowlist.clone(),
        denylist: s.denylist.clone(),
        cors: None,
        basic_auth: None,
        external_auth: None,
        rate_limit: None,
        canary: None,
        ssl_passthrough: false,
        backend: BackendAnnotations {
            next_upstream: s
                .next_upstream
                .clone()
                .unwrap_or_else(|| vec![NextUpstream::Error, NextUpstream::Timeout]),
            next_upstream_set: s.next_upstream.is_some(),
            next_upstream_tries: s.next_upstream_tries,
            next_upstream_timeout: s.next_upstream_timeout,
            connect_timeout: s.connect_timeout,
            ..Default::default()
        },
        denied: None,
        findings: Vec::new(),
    };

    check_keys(&mut p);
    rewrite(&mut p, &mut out);
    redirect(&mut p, &mut out);
    alias(&mut p, &mut out);
    // x-forwarded-prefix: a rejected value refuses the Ingress (its parser returns the validation error).
    out.x_forwarded_prefix = p.chars(
        "x-forwarded-prefix",
        Chars::PathWithCapture,
        true,
        OnBad::Reject,
        "",
    );
    // upstream-vhost: `ValidateServerName` (trimmed, regex characters); refused when bad.
    if let Some(v) = p.get("upstream-vhost") {
        match Chars::Regex.check(v.trim(), false) {
            Ok(()) => out.upstream_vhost = Some(normalize(v)),
            Err(e) => p.bad("upstream-vhost", v, OnBad::Reject, &e, ""),
        }
    }
    proxy(&mut p, &mut out);
    source_ranges(&mut p, &mut out);
    cors(&mut p, &mut out);
    basic_auth(&mut p, &mut out);
    external_auth(&mut p, &mut out);
    rate_limit(&mut p, &mut out);
    canary(&mut p, &mut out);
    backend(&mut p, &mut out);
    // ssl-passthrough: its parser returns the validation error, so a bad value refuses the Ingress.
    out.ssl_passthrough = p
        .boolean("ssl-passthrough", OnBad::Reject, false)
        .unwrap_or(false);
    if out.ssl_passthrough {
        p.warn(
            "ssl-passthrough",
            "not applied: ingress-nginx ignores it unless started with --enable-ssl-passthrough (off by default), \
             and Portcullis does not pass TLS through on the Ingress HTTPS port"
                .into(),
        );
    }

    out.denied = p.denied;
    out.findings = p.findings;
    out
}

/// Snippets, the default prefix under a custom one, keys Portcullis does not act on, and unknown keys.
fn check_keys(p: &mut P<'_>) {
    let prefix = format!("{}/", p.cx.prefix);
    let default_prefix = "nginx.ingress.kubernetes.io/";
    for (key, _) in p.anns.iter() {
        if prefix != default_prefix && key.starts_with(default_prefix) {
            // ingress-nginx's webhook refuses the default prefix when a custom one is configured.
            p.findings.push(Finding::Reject {
                key: key.clone(),
                message: format!(
                    "the annotation prefix is {:?}; annotations under {default_prefix:?} are refused, as ingress-nginx refuses them; the Ingress keeps its last good version",
                    p.cx.prefix
                ),
            });
            continue;
        }
        let Some(short) = key.strip_prefix(&prefix) else {
            continue;
        };
        if SNIPPETS.contains(&short) || short.ends_with("-snippet") {
            if p.cx.settings.allow_snippets {
                p.findings.push(Finding::Warn {
                    key: key.clone(),
                    message: "raw nginx configuration is never executed by Portcullis; the snippet is ignored"
                        .into(),
                });
            } else {
                p.findings.push(Finding::Reject {
                    key: key.clone(),
                    message: "snippet annotations are disabled (allow-snippet-annotations is false, ingress-nginx's default) and Portcullis never executes raw nginx configuration; the Ingress keeps its last good version".into(),
                });
            }
            continue;
        }
        if !KNOWN.contains(&short) {
            p.findings.push(Finding::Warn {
                key: key.clone(),
                message: format!(
                    "unknown annotation; did you mean {}{}?",
                    prefix,
                    closest_known(short)
                ),
            });
            continue;
        }
        if NOT_APPLIED.contains(&short) {
            p.findings.push(Finding::Warn {
                key: key.clone(),
                message: "parsed and checked, but not applied yet (backend settings); requests are served without it".into(),
            });
            continue;
        }
        if !APPLIED.contains(&short) {
            p.findings.push(Finding::Warn {
                key: key.clone(),
                message: "an ingress-nginx annotation Portcullis does not support; the Ingress is served without it (see docs/ingress-nginx.md)".into(),
            });
        }
    }
}

/// The `rewrite` group: every bad value is corrected (its parser logs and uses the default).
fn rewrite(p: &mut P<'_>, out: &mut IngressAnnotations) {
    if let Some(t) = p.chars(
        "rewrite-target",
        Chars::PathWithCapture,
        false,
        OnBad::Correct,
        "no rewrite is done",
    ) {
        match capture_template(&t) {
            Ok(parts) => {
                out.rewrite_target = Some(t);
                out.rewrite_template = Some(parts);
            }
            Err(e) => p.bad("rewrite-target", &t, OnBad::Reject, &e, ""),
        }
    }
    if let Some(b) = p.boolean("ssl-redirect", OnBad::Correct, out.ssl_redirect) {
        out.ssl_redirect = b;
    }
    if let Some(b) = p.boolean(
        "preserve-trailing-slash",
        OnBad::Correct,
        out.preserve_trailing_slash,
    ) {
        out.preserve_trailing_slash = b;
    }
    if let Some(b) = p.boolean("force-ssl-redirect", OnBad::Correct, out.force_ssl_redirect) {
        out.force_ssl_redirect = b;
    }
    out.use_regex = p
        .boolean("use-regex", OnBad::Correct, false)
        .unwrap_or(false);
    if let Some(root) = p.chars(
        "app-root",
        Chars::PathWithCapture,
        false,
        OnBad::Correct,
        "no app-root redirect is done",
    ) {
        // `url.ParseRequestURI` then "absolute paths only": a path starting with `/`, not a URL with a scheme.
        if root.starts_with('/') && !root.contains('$') {
            out.app_root = Some(root);
        } else {
            p.bad(
                "app-root",
                &root,
                OnBad::Correct,
                "must be a path starting with /",
                "no app-root redirect is done",
            );
        }
    }
}

/// The `redirect` group: a bad value refuses the Ingress; out-of-range codes are corrected.
fn redirect(p: &mut P<'_>, out: &mut IngressAnnotations) {
    let www = p.boolean("from-to-www-redirect", OnBad::Reject, false);
    let relative = p
        .boolean("relative-redirects", OnBad::Reject, false)
        .unwrap_or(false);
    let www = www.unwrap_or(false);
    if let Some(url) = p.chars("temporal-redirect", Chars::Url, false, OnBad::Reject, "") {
        let mut code = p
            .int("temporal-redirect-code", OnBad::Reject, 302)
            .unwrap_or(302);
        if !(300..=307).contains(&code) {
            p.warn(
                "temporal-redirect-code",
                format!("{code} is outside 300-307; 302 is used, as in ingress-nginx"),
            );
            code = 302;
        }
        // `isValidURL`: the scheme must start with "http"; otherwise the whole redirect group is dropped.
        let scheme_ok = url
            .split_once("://")
            .is_some_and(|(s, _)| s.starts_with("http"));
        if !scheme_ok {
            p.warn(
                "temporal-redirect",
                format!("{url:?} is not an http(s) URL; as in ingress-nginx, the redirect annotations are ignored"),
            );
            return;
        }
        out.redirect = Some(RedirectAnnotation {
            url: Some(url),
            code: code as u16,
            from_to_www: www,
            relative,
        });
        if p.get("permanent-redirect").is_some() {
            p.warn(
                "permanent-redirect",
                "temporal-redirect is set too and wins, as in ingress-nginx".into(),
            );
        }
        return;
    }
    let url = p.chars("permanent-redirect", Chars::Url, false, OnBad::Reject, "");
    let mut code = p
        .int("permanent-redirect-code", OnBad::Reject, 301)
        .unwrap_or(301);
    if !(300..=308).contains(&code) {
        if p.get("permanent-redirect-code").is_some() {
            p.warn(
                "permanent-redirect-code",
                format!("{code} is outside 300-308; 301 is used, as in ingress-nginx"),
            );
        }
        code = 301;
    }
    if url.is_some() || www || relative {
        out.redirect = Some(RedirectAnnotation {
            url,
            code: code as u16,
            from_to_www: www,
            relative,
        });
    }
}

/// `server-alias`: each comma-separated name must pass `ValidateServerName`; a bad one refuses the Ingress.
fn alias(p: &mut P<'_>, out: &mut IngressAnnotations) {
    let Some(v) = p.get("server-alias") else {
        return;
    };
    let mut set = BTreeSet::new();
    for name in v.split(',') {
        if let Err(e) = Chars::Regex.check(name.trim(), false) {
            p.bad("server-alias", v, OnBad::Reject, &e, "");
            return;
        }
        let name = name.trim();
        if !name.is_empty() {
            set.insert(name.to_string());
        }
    }
    out.aliases = set.into_iter().collect();
}

/// The `proxy` group: every bad value falls back to the global default.
fn proxy(p: &mut P<'_>, out: &mut IngressAnnotations) {
    let s = p.cx.settings;
    if let Some(v) = p.get("proxy-body-size") {
        let fallback = match s.body_size {
            Some(0) => "no limit is set".into(),
            Some(n) => format!("the default ({n} bytes) is used"),
            None => "--max-request-body applies".into(),
        };
        match size_syntax(v) {
            Err(e) => p.bad("proxy-body-size", v, OnBad::Correct, &e, &fallback),
            // Valid for the annotation but not for nginx (`isValidByteSize`): the location inherits the default.
            Ok(()) => match super::values::nginx_size(&normalize(v)) {
                // 0 stays 0: no limit, which also lifts `--max-request-body` (proxy::edge::body_limit).
                Some(n) => out.body_size = Some(n),
                None => p.bad(
                    "proxy-body-size",
                    v,
                    OnBad::Correct,
                    "nginx does not take this size",
                    &fallback,
                ),
            },
        }
    }
    let seconds = |p: &mut P<'_>, short: &str, default: Option<u32>| -> Option<u32> {
        let n = p.int(short, OnBad::Correct, i64::from(default.unwrap_or(0)))?;
        match u32::try_from(n).ok().filter(|&n| n > 0) {
            Some(n) => Some(n),
            None => {
                p.warn(
                    short,
                    format!("{n} is not a positive number of seconds; the default is used"),
                );
                default
            }
        }
    };
    if let Some(n) = seconds(p, "proxy-read-timeout", s.read_timeout) {
        out.read_timeout = Some(n);
    }
    if let Some(n) = seconds(p, "proxy-send-timeout", s.send_timeout) {
        out.send_timeout = Some(n);
    }
    if let Some(n) = seconds(p, "proxy-connect-timeout", s.connect_timeout) {
        out.backend.connect_timeout = Some(n);
    }
    out.proxy_buffering = p
        .option(
            "proxy-buffering",
            &["on", "off"],
            true,
            OnBad::Correct,
            "off is used",
        )
        .map(|v| v == "on");
    if [
        "proxy-next-upstream",
        "proxy-next-upstream-tries",
        "proxy-next-upstream-timeout",
    ]
    .iter()
    .any(|k| p.get(k).is_some())
    {
        out.backend.next_upstream_set = true;
    }
    if let Some(v) = p.get("proxy-next-upstream") {
        match next_upstream(v) {
            Some(list) => out.backend.next_upstream = list,
            None => p.bad(
                "proxy-next-upstream",
                v,
                OnBad::Correct,
                "not a list of error, timeout, invalid_header, http_5xx/403/404/429, non_idempotent, off",
                "error timeout is used",
            ),
        }
    }
    if let Some(n) = p.int("proxy-next-upstream-tries", OnBad::Correct, 3) {
        out.backend.next_upstream_tries = n;
    }
    if let Some(n) = p.int("proxy-next-upstream-timeout", OnBad::Correct, 0) {
        out.backend.next_upstream_timeout = n;
    }
}

/// `validUpstreamAnnotation`: words separated by single spaces.
pub(crate) fn next_upstream(v: &str) -> Option<Vec<NextUpstream>> {
    if v.is_empty() || v.contains("  ") || v.starts_with(' ') {
        return None;
    }
    v.split(' ')
        .filter(|w| !w.is_empty())
        .map(|w| {
            Some(match w {
                "error" => NextUpstream::Error,
                "timeout" => NextUpstream::Timeout,
                "invalid_header" => NextUpstream::InvalidHeader,
                "non_idempotent" => NextUpstream::NonIdempotent,
                "off" => NextUpstream::Off,
                "http_500" => NextUpstream::Status(500),
                "http_502" => NextUpstream::Status(502),
                "http_503" => NextUpstream::Status(503),
                "http_504" => NextUpstream::Status(504),
                "http_403" => NextUpstream::Status(403),
                "http_404" => NextUpstream::Status(404),
                "http_429" => NextUpstream::Status(429),
                _ => return None,
            })
        })
        .collect()
}

/// Allow and deny lists: a bad list denies the location (ingress-nginx's parsers return `LocationDenied`).
fn source_ranges(p: &mut P<'_>, out: &mut IngressAnnotations) {
    let allow = p
        .get("allowlist-source-range")
        .map(|v| ("allowlist-source-range", v))
        .or_else(|| {
            p.get("whitelist-source-range")
                .map(|v| ("whitelist-source-range", v))
        });
    if let Some((short, v)) = allow {
        match cidr_list(v) {
            Ok(l) => out.allowlist = l,
            Err(e) => p.bad(short, v, OnBad::Deny, &e, ""),
        }
    }
    if let Some(v) = p.get("denylist-source-range") {
        match cidr_list(v) {
            Ok(l) => out.denylist = l,
            Err(e) => p.bad("denylist-source-range", v, OnBad::Deny, &e, ""),
        }
    }
}

const DEFAULT_CORS_METHODS: &str = "GET, PUT, POST, DELETE, PATCH, OPTIONS";
const DEFAULT_CORS_HEADERS: &str =
    "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization";
const DEFAULT_CORS_MAX_AGE: i64 = 1_728_000;

/// One origin as `corsOriginRegex` accepts it: `scheme://[*.]host[:port]`, `*` or `null`.
fn cors_origin(o: &str) -> Option<CorsOrigin> {
    if o == "null" {
        return Some(CorsOrigin {
            prefix: "null".into(),
            suffix: None,
        });
    }
    let (scheme, rest) = o.split_once("://")?;
    if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_lowercase()) {
        return None;
    }
    let (wild, host_port) = match rest.strip_prefix("*.") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let (host, port) = match host_port.split_once(':') {
        Some((h, port)) => (h, Some(port)),
        None => (host_port, None),
    };
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return None;
    }
    if port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    let lower = o.to_ascii_lowercase();
    Some(if wild {
        let (pre, post) = lower.split_once("*.").unwrap_or((&lower, ""));
        CorsOrigin {
            prefix: pre.to_string(),
            suffix: Some(format!(".{post}")),
        }
    } else {
        CorsOrigin {
            prefix: lower,
            suffix: None,
        }
    })
}

/// The `cors` group: every bad value falls back to its default.
fn cors(p: &mut P<'_>, out: &mut IngressAnnotations) {
    let enabled = p
        .boolean("enable-cors", OnBad::Correct, false)
        .unwrap_or(false);
    let mut cors = NginxCors {
        origins: Vec::new(),
        any: false,
        allow_methods: DEFAULT_CORS_METHODS.into(),
        allow_headers: DEFAULT_CORS_HEADERS.into(),
        expose_headers: String::new(),
        allow_credentials: true,
        max_age: DEFAULT_CORS_MAX_AGE,
    };
    let origins = p.get("cors-allow-origin");
    match origins {
        None => cors.any = true,
        Some(v) => {
            let compact = v.replace(' ', "");
            if !cors_origin_list_syntax(&compact) {
                p.bad(
                    "cors-allow-origin",
                    v,
                    OnBad::Correct,
                    "not a list of origins",
                    "* is used",
                );
                cors.any = true;
            } else {
                for o in normalize(v).split(',') {
                    let o = o.trim();
                    if o.is_empty() {
                        continue;
                    }
                    if o == "*" {
                        cors.any = true;
                        cors.origins.clear();
                        break;
                    }
                    match cors_origin(o) {
                        Some(c) => cors.origins.push(c),
                        None => p.warn("cors-allow-origin", format!("origin {o:?} is skipped (not scheme://host[:port]), as in ingress-nginx")),
                    }
                }
            }
        }
    }
    if let Some(h) = p.chars(
        "cors-allow-headers",
        Chars::Headers,
        true,
        OnBad::Correct,
        "the default headers are used",
    ) {
        cors.allow_headers = h;
    }
    if let Some(v) = p.get("cors-allow-methods") {
        let compact = v.replace(' ', "");
        let ok = !compact.is_empty()
            && compact.split(',').enumerate().all(|(i, m)| {
                (!m.is_empty() || i + 1 == compact.split(',').count())
                    && m.bytes().all(|b| b.is_ascii_alphabetic())
            });
        if ok {
            cors.allow_methods = normalize(v);
        } else {
            p.bad(
                "cors-allow-methods",
                v,
                OnBad::Correct,
                "only letters separated by commas",
                "the default methods are used",
            );
        }
    }
    if let Some(b) = p.boolean("cors-allow-credentials", OnBad::Correct, true) {
        cors.allow_credentials = b;
    }
    if let Some(v) = p.get("cors-expose-headers") {
        let compact = v.replace(' ', "");
        let ok = !compact.is_empty()
            && compact.split(',').filter(|h| !h.is_empty()).all(|h| {
                h == "*"
                    || h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
            && !compact.contains(",,");
        if ok {
            cors.expose_headers = normalize(v);
        } else {
            p.bad(
                "cors-expose-headers",
                v,
                OnBad::Correct,
                "only header names separated by commas",
                "none are exposed",
            );
        }
    }
    if let Some(n) = p.int("cors-max-age", OnBad::Correct, DEFAULT_CORS_MAX_AGE) {
        cors.max_age = n;
    }
    if enabled {
        out.cors = Some(cors);
    }
}

/// `corsOriginRegexValidator`, spaces removed: origins (`scheme://[*.]host[:port]` or `null`) each followed by an
/// optional comma, or `*` alone.
fn cors_origin_list_syntax(s: &str) -> bool {
    if s == "*" || s.is_empty() {
        return true;
    }
    s.split(',')
        .filter(|o| !o.is_empty())
        .all(|o| o == "null" || cors_origin(o).is_some() || origin_without_scheme(o))
}

/// The validator also takes a bare `[*.]host[:port]` (the scheme part is optional there).
fn origin_without_scheme(o: &str) -> bool {
    cors_origin(&format!("x://{o}")).is_some()
}

/// `auth-type: basic` and its Secret reference. Denials and refusals follow ingress-nginx's `auth` parser.
fn basic_auth(p: &mut P<'_>, out: &mut IngressAnnotations) {
    let Some(raw_type) = p.get("auth-type") else {
        for k in ["auth-secret", "auth-secret-type", "auth-realm"] {
            if p.anns.contains_key(&p.full(k)) {
                p.warn(
                    k,
                    "has no effect without auth-type, as in ingress-nginx".into(),
                );
            }
        }
        return;
    };
    // The validator's regex `basic|digest` is not anchored: it only has to appear somewhere.
    let compact = raw_type.replace(' ', "");
    if !(compact.contains("basic") || compact.contains("digest")) {
        p.bad(
            "auth-type",
            raw_type,
            OnBad::Reject,
            "expected basic or digest",
            "",
        );
        return;
    }
    let auth_type = normalize(raw_type);
    if !(auth_type.contains("basic") || auth_type.contains("digest")) {
        p.deny(
            "auth-type",
            format!("invalid authentication type {auth_type:?}"),
        );
        return;
    }
    let map = match p.get("auth-secret-type") {
        None => false,
        Some(v) => {
            let compact = v.replace(' ', "");
            if !(compact.contains("auth-file") || compact.contains("auth-map")) {
                p.bad(
                    "auth-secret-type",
                    v,
                    OnBad::Reject,
                    "expected auth-file or auth-map",
                    "",
                );
                return;
            }
            match normalize(v).as_str() {
                "auth-file" => false,
                "auth-map" => true,
                other => {
                    p.deny(
                        "auth-secret-type",
                        format!("{other:?} is neither auth-file nor auth-map"),
                    );
                    return;
                }
            }
        }
    };
    let Some(secret) = p.chars("auth-secret", Chars::Basic, true, OnBad::Deny, "") else {
        let key = p.full("auth-secret");
        if !p
            .findings
            .iter()
            .any(|f| matches!(f, Finding::Deny { key: k, .. } if *k == key))
        {
            p.deny(
                "auth-secret",
                "auth-type is set but auth-secret is missing or empty".into(),
            );
        }
        return;
    };
    let (ns, name) = match secret.split('/').collect::<Vec<_>>()[..] {
        [name] => (p.cx.namespace.to_string(), name.to_string()),
        [ns, name] => (ns.to_string(), name.to_string()),
        _ => {
            p.deny(
                "auth-secret",
                format!("{secret:?} is not NAME or NAMESPACE/NAME"),
            );
            return;
        }
    };
    let ns = if ns.is_empty() {
        p.cx.namespace.to_string()
    } else {
        ns
    };
    if ns != p.cx.namespace {
        p.deny(
            "auth-secret",
            format!("Secret {ns}/{name} is in another namespace; cross-namespace Secrets are not allowed"),
        );
        return;
    }
    let realm = match p.get("auth-realm") {
        None => String::new(),
        Some(v) => match Chars::WithSpace.check(v, false) {
            Ok(()) => normalize(v),
            Err(e) => {
                p.bad("auth-realm", v, OnBad::Reject, &e, "");
                return;
            }
        },
    };
    if auth_type != "basic" {
        p.deny(
            "auth-type",
            format!("{auth_type:?} (digest) authentication is not supported by Portcullis"),
        );
        return;
    }
    out.basic_auth = Some(BasicAuthRef {
        realm,
        namespace: ns,
        name,
        map,
    });
}

/// Reads htpasswd text (`user:hash[:comment]` lines, `#` comments) into users and hashes. Lines that cannot be
/// used are reported in the returned list of problems and skipped.
pub fn htpasswd(text: &str) -> (Vec<(String, PasswordHash)>, Vec<String>) {
    let mut users = Vec::new();
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, rest)) = line.split_once(':') else {
            problems.push(format!("line {}: no ':' between user and password", i + 1));
            continue;
        };
        let hash = rest.split(':').next().unwrap_or(rest);
        match password_hash(hash) {
            Ok(h) => users.push((user.to_string(), h)),
            Err(e) => problems.push(format!("line {} (user {user:?}): {e}", i + 1)),
        }
    }
    (users, problems)
}

/// One htpasswd password field.
pub fn password_hash(h: &str) -> Result<PasswordHash, String> {
    if ["$2a$", "$2b$", "$2y$", "$2x$"]
        .iter()
        .any(|m| h.starts_with(m))
    {
        return if h.len() == 60 {
            Ok(PasswordHash::Bcrypt(h.to_string()))
        } else {
            Err("malformed bcrypt hash".into())
        };
    }
    for magic in ["$apr1$", "$1$"] {
        if let Some(rest) = h.strip_prefix(magic) {
            let (salt, hash) = rest.split_once('$').ok_or("malformed MD5 hash")?;
            if salt.len() > 8 || hash.len() != 22 {
                return Err("malformed MD5 hash".into());
            }
            return Ok(PasswordHash::Md5Crypt {
                magic: magic.to_string(),
                salt: salt.to_string(),
                hash: hash.to_string(),
            });
        }
    }
    if let Some(b64) = h.strip_prefix("{SHA}") {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| "malformed {SHA} hash")?;
        let digest: [u8; 20] = bytes.try_into().map_err(|_| "malformed {SHA} hash")?;
        return Ok(PasswordHash::Sha1(digest));
    }
    if let Some(plain) = h.strip_prefix("{PLAIN}") {
        return Ok(PasswordHash::Plain(plain.to_string()));
    }
    if h.starts_with("$5$") || h.starts_with("$6$") || h.starts_with("{SSHA}") {
        return Err(
            "SHA-256/SHA-512 crypt and {SSHA} hashes are not supported (use bcrypt, apr1 or {SHA})"
                .into(),
        );
    }
    Err("DES crypt and unknown hash formats are not supported (use bcrypt, apr1 or {SHA})".into())
}

/// Builds the basic-auth policy from the referenced Secret's contents, or the reason the location is denied.
pub fn basic_auth_policy(
    r: &BasicAuthRef,
    data: Option<&BTreeMap<String, String>>,
) -> Result<(BasicAuth, Vec<String>), String> {
    let data = data.ok_or_else(|| format!("Secret {}/{} not found", r.namespace, r.name))?;
    let text = if r.map {
        data.iter()
            .map(|(u, h)| format!("{u}:{}\n", h.trim_end_matches('\n')))
            .collect::<String>()
    } else {
        data.get("auth")
            .cloned()
            .ok_or_else(|| format!("Secret {}/{} has no key auth", r.namespace, r.name))?
    };
    let (users, problems) = htpasswd(&text);
    Ok((
        BasicAuth {
            realm: r.realm.clone(),
            secret: format!("{}/{}", r.namespace, r.name),
            users,
        },
        problems,
    ))
}

/// `auth-url` and friends; denials and refusals follow ingress-nginx's `authreq` parser, except that settings whose
/// bad value makes ingress-nginx drop external auth altogether (failing open) deny the location instead.
fn external_auth(p: &mut P<'_>, out: &mut IngressAnnotations) {
    let Some(url) = p.chars("auth-url", Chars::UrlWithVariables, true, OnBad::Reject, "") else {
        return;
    };
    if url.contains('$') {
        p.bad(
            "auth-url",
            &url,
            OnBad::Reject,
            "nginx variables in auth-url are not supported",
            "",
        );
        return;
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        p.deny("auth-url", format!("{url:?} has no scheme"));
        return;
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains("..") {
        p.deny("auth-url", format!("{url:?} has no valid host"));
        return;
    }
    let default_port = match scheme {
        "http" => 80,
        "https" => 443,
        other => {
            p.bad(
                "auth-url",
                &url,
                OnBad::Reject,
                &format!("scheme {other} is not http or https"),
                "",
            );
            return;
        }
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, port)) if !h.ends_with(']') || authority.starts_with('[') => {
            match port.parse::<u16>() {
                Ok(n) => (h, n),
                Err(_) => {
                    p.deny("auth-url", format!("{url:?} has an invalid port"));
                    return;
                }
            }
        }
        _ => (authority, default_port),
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let path_and_query = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    let method = match p.get("auth-method") {
        None => None,
        Some(v) => {
            let m = v.replace(' ', "");
            if [
                "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE",
            ]
            .contains(&m.as_str())
            {
                Some(normalize(v))
            } else {
                p.deny("auth-method", format!("invalid HTTP method {v:?}"));
                return;
            }
        }
    };
    let redirect_param = p
        .chars(
            "auth-signin-redirect-param",
            Chars::Url,
            true,
            OnBad::Correct,
            "rd is used",
        )
        .unwrap_or_else(|| "rd".into());
    let signin = match p.chars(
        "auth-signin",
        Chars::UrlWithVariables,
        true,
        OnBad::Correct,
        "no sign-in redirect is done",
    ) {
        None => None,
        Some(s) => {
            // ingress-nginx's buildAuthSignURL: add `?rd=...` (or `&rd=...`) unless the URL already has it.
            let query = s.split_once('?').map(|(_, q)| q);
            let full = match query {
                None => format!(
                    "{s}?{redirect_param}=$pass_access_scheme://$http_host$escaped_request_uri"
                ),
                Some(q)
                    if q.split('&').any(|kv| {
                        kv.split_once('=')
                            .is_some_and(|(k, v)| k == redirect_param && !v.is_empty())
                    }) =>
                {
                    s.clone()
                }
                Some(_) => format!(
                    "{s}&{redirect_param}=$pass_access_scheme://$http_host$escaped_request_uri"
                ),
            };
            match url_template(&full) {
                Ok(t) => Some(t),
                Err(e) => {
                    p.bad("auth-signin", &s, OnBad::Reject, &e, "");
                    return;
                }
            }
        }
    };
    let mut response_headers = Vec::new();
    if let Some(v) = p.get("auth-response-headers") {
        if Chars::Headers.check(v, true).is_err() {
            p.deny(
                "auth-response-headers",
                format!("invalid header list {v:?}"),
            );
            return;
        }
        for h in normalize(v).split(',') {
            let h = h.trim();
            if h.is_empty() {
                continue;
            }
            if !h
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                p.deny(
                    "auth-response-headers",
                    format!("invalid header name {h:?}"),
                );
                return;
            }
            response_headers.push(h.to_ascii_lowercase());
        }
    }
    let request_redirect = match p.get("auth-request-redirect") {
        None => None,
        Some(v) => match Chars::Url.check(v, true) {
            Ok(()) => Some(normalize(v)),
            Err(e) => {
                p.deny("auth-request-redirect", format!("invalid value {v:?} ({e}); ingress-nginx would drop external auth altogether, Portcullis denies instead"));
                return;
            }
        },
    };
    let always_set_cookie = match p.get("auth-always-set-cookie") {
        None => false,
        Some(v) => match go_bool(v) {
            Ok(b) => b,
            Err(e) => {
                p.deny("auth-always-set-cookie", format!("invalid value {v:?} ({e}); ingress-nginx would drop external auth altogether, Portcullis denies instead"));
                return;
            }
        },
    };
    for k in [
        "auth-cache-key",
        "auth-cache-duration",
        "auth-keepalive",
        "auth-keepalive-requests",
        "auth-keepalive-share-vars",
        "auth-keepalive-timeout",
        "auth-proxy-set-headers",
    ] {
        if p.anns.contains_key(&p.full(k)) {
            p.warn(k, "not applied: auth responses are not cached, auth connections are pooled as any upstream's, and no extra headers are set".into());
        }
    }
    out.external_auth = Some(ExternalAuth {
        scheme: scheme.to_string(),
        host,
        port,
        path_and_query,
        method,
        signin,
        redirect_param,
        response_headers,
        request_redirect,
        always_set_cookie,
    });
}

/// `limit-*`: a bad rps, rpm, connections or allowlist refuses the Ingress; a bad burst multiplier is corrected.
fn rate_limit(p: &mut P<'_>, out: &mut IngressAnnotations) {
    let rpm = p.int("limit-rpm", OnBad::Reject, 0);
    let rps = p.int("limit-rps", OnBad::Reject, 0);
    let conn = p.int("limit-connections", OnBad::Reject, 0);
    let burst = p
        .int("limit-burst-multiplier", OnBad::Correct, 5)
        .unwrap_or(5);
    let allow_key = if p.anns.contains_key(&p.full("limit-allowlist")) {
        "limit-allowlist"
    } else {
        "limit-whitelist"
    };
    let allow = match p.get(allow_key) {
        None => Vec::new(),
        Some(v) => match cidr_list(v) {
            Ok(l) => l,
            Err(e) => {
                p.bad(allow_key, v, OnBad::Reject, &e, "");
                return;
            }
        },
    };
    // Zero or negative limits set no limit (nginx's `limit_req`/`limit_conn` are only written for limits > 0).
    let positive = |n: Option<i64>| n.and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
    let (rpm, rps, conn) = (positive(rpm), positive(rps), positive(conn));
    if rpm == 0 && rps == 0 && conn == 0 {
        return;
    }
    let s = p.cx.settings;
    out.rate_limit = Some(RateLimit {
        zone: format!("{}/{}", p.cx.namespace, p.cx.name),
        rps,
        rpm,
        burst_multiplier: u32::try_from(burst).unwrap_or(0),
        connections: conn,
        allow,
        req_status: s.limit_req_status,
        conn_status: s.limit_conn_status,
    });
}

/// The `canary` group: every bad value is corrected; settings without `canary: "true"` are ignored.
fn canary(p: &mut P<'_>, out: &mut IngressAnnotations) {
    let enabled = p.boolean("canary", OnBad::Correct, false).unwrap_or(false);
    let weight = p.int("canary-weight", OnBad::Correct, 0).unwrap_or(0);
    let weight_total = p
        .int("canary-weight-total", OnBad::Correct, 100)
        .unwrap_or(100);
    let header = p.chars(
        "canary-by-header",
        Chars::Basic,
        true,
        OnBad::Correct,
        "it is not used",
    );
    let header_value = p.chars(
        "canary-by-header-value",
        Chars::Basic,
        true,
        OnBad::Correct,
        "it is not used",
    );
    let mut header_pattern = p.chars(
        "canary-by-header-pattern",
        Chars::Regex,
        false,
        OnBad::Correct,
        "it is not used",
    );
    if let Some(pat) = &header_pattern {
        if let Err(e) = regex::Regex::new(pat) {
            p.warn(
                "canary-by-header-pattern",
                format!("{pat:?} does not compile ({e}); it is not used"),
            );
            header_pattern = None;
        }
    }
    let cookie = p.chars(
        "canary-by-cookie",
        Chars::Basic,
        true,
        OnBad::Correct,
        "it is not used",
    );
    if !enabled {
        if weight > 0
            || header.is_some()
            || header_value.is_some()
            || header_pattern.is_some()
            || cookie.is_some()
        {
            p.warn("canary", "canary settings are present but canary is not \"true\"; they are ignored, as in ingress-nginx".into());
        }
        return;
    }
    out.canary = Some(CanaryAnnotation {
        weight,
        weight_total,
        header: header.map(|h| h.to_ascii_lowercase()),
        header_value,
        header_pattern,
        cookie,
    });
}

/// The `proxy-ssl-*` settings read together with `proxy-ssl-secret`.
const PROXY_SSL_SETTINGS: &[&str] = &[
    "proxy-ssl-verify",
    "proxy-ssl-verify-depth",
    "proxy-ssl-name",
    "proxy-ssl-server-name",
    "proxy-ssl-protocols",
    "proxy-ssl-ciphers",
];

/// The settings of `proxy-ssl-secret` (already checked), each corrected to its default when bad, as ingress-nginx
/// does.
fn proxy_ssl(p: &mut P<'_>, secret: String) -> ProxySslAnnotation {
    let on_off = |p: &mut P<'_>, k: &str| {
        p.option(k, &["on", "off"], true, OnBad::Correct, "off is used")
            .is_some_and(|v| v == "on")
    };
    let verify = on_off(p, "proxy-ssl-verify");
    let server_name = on_off(p, "proxy-ssl-server-name");
    // `GetIntAnnotation`: not an integer, or 0, is 1. nginx refuses a negative depth in its configuration; here
    // it is corrected to 1 too.
    let depth = match p.int("proxy-ssl-verify-depth", OnBad::Correct, 1) {
        Some(d) if d < 0 => {
            p.bad(
                "proxy-ssl-verify-depth",
                &d.to_string(),
                OnBad::Correct,
                "nginx takes no negative depth",
                "1 is used",
            );
            1
        }
        Some(0) | None => 1,
        Some(d) => d,
    };
    // `ValidateServerName` (trimmed, regex characters); a bad one is dropped with a warning.
    let name = p
        .get("proxy-ssl-name")
        .and_then(|v| match Chars::Regex.check(v.trim(), false) {
            Ok(()) => Some(normalize(v)),
            Err(e) => {
                p.bad("proxy-ssl-name", v, OnBad::Correct, &e, "no name is set");
                None
            }
        });
    // nginx would expand variables in the name per request; the TLS settings here are per backend.
    if let Some(n) = &name {
        if n.contains('$') {
            p.deny(
                "proxy-ssl-name",
                format!(
                    "{n:?} holds an nginx variable, which Portcullis cannot expand in a TLS name"
                ),
            );
        } else if rustls::pki_types::ServerName::try_from(n.as_str()).is_err() {
            p.deny(
                "proxy-ssl-name",
                format!("{n:?} is not a DNS name or IP address a TLS client can check"),
            );
        }
    }
    // `^(TLSv1\.2|TLSv1\.3| )*$` with spaces removed; a bad value is TLSv1.2. Good values are split on spaces,
    // sorted, and empty means TLSv1.2.
    let mut protocols: Vec<String> = p
        .get("proxy-ssl-protocols")
        .and_then(|v| {
            let squeezed: String = v.chars().filter(|c| *c != ' ').collect();
            let mut rest = squeezed.as_str();
            while let Some(r) = rest
                .strip_prefix("TLSv1.2")
                .or_else(|| rest.strip_prefix("TLSv1.3"))
            {
                rest = r;
            }
            if rest.is_empty() {
                Some(
                    v.split(' ')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect(),
                )
            } else {
                p.bad(
                    "proxy-ssl-protocols",
                    v,
                    OnBad::Correct,
                    "only TLSv1.2 and TLSv1.3, separated by spaces",
                    "TLSv1.2 is used",
                );
                None
            }
        })
        .unwrap_or_default();
    if protocols.is_empty() {
        protocols.push("TLSv1.2".into());
    }
    protocols.sort();
    protocols.dedup();
    // `^[A-Za-z0-9+:_\-!]*$` with spaces removed; a bad value is DEFAULT.
    let ciphers = p
        .get("proxy-ssl-ciphers")
        .and_then(|v| {
            let squeezed: String = v.chars().filter(|c| *c != ' ').collect();
            if squeezed
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+:_-!".contains(c))
            {
                Some(squeezed)
            } else {
                p.bad(
                    "proxy-ssl-ciphers",
                    v,
                    OnBad::Correct,
                    "only letters, digits and + : _ - !",
                    "DEFAULT is used",
                );
                None
            }
        })
        .unwrap_or_else(|| "DEFAULT".into());
    let (tls12_cipher_suites, unusable) = openssl_ciphers(&ciphers);
    if !unusable.is_empty() {
        let used = if tls12_cipher_suites.is_empty() {
            "rustls's default TLS 1.2 suites are offered".to_string()
        } else {
            format!(
                "only {} are offered for TLS 1.2",
                tls12_cipher_suites.join(", ")
            )
        };
        p.warn(
            "proxy-ssl-ciphers",
            format!(
                "{ciphers:?}: {} cannot be applied (Portcullis takes OpenSSL cipher names it implements, not \
                 keywords or exclusions); {used}",
                unusable.join(", ")
            ),
        );
    }
    ProxySslAnnotation {
        secret,
        verify,
        verify_depth: depth,
        name,
        server_name,
        protocols,
        ciphers,
        tls12_cipher_suites,
    }
}

/// An OpenSSL cipher list (`proxy-ssl-ciphers`) as rustls TLS 1.2 suites: the suite names rustls implements, in
/// order, and the parts that cannot be applied (keywords such as `HIGH`, exclusions, suites rustls lacks). `DEFAULT`
/// alone is rustls's own list (empty).
pub fn openssl_ciphers(list: &str) -> (Vec<String>, Vec<String>) {
    let mut suites: Vec<String> = Vec::new();
    let mut unusable = Vec::new();
    for part in list.split(':').map(str::trim).filter(|s| !s.is_empty()) {
        if part == "DEFAULT" && list.trim() == "DEFAULT" {
            continue;
        }
        match crate::tls::tls12_suite_for_openssl_name(part) {
            Some(s) if !suites.iter().any(|x| x == s) => suites.push(s.to_string()),
            Some(_) => {}
            None => unusable.push(part.to_string()),
        }
    }
    (suites, unusable)
}

/// The name nginx checks, and sends as SNI, without `proxy-ssl-name`: its default `$proxy_host` is the host of
/// ingress-nginx's `proxy_pass https://upstream_balancer`.
pub const NGINX_UPSTREAM_NAME: &str = "upstream_balancer";

/// What ingress-nginx takes from the `proxy-ssl-secret` Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxySslSecret {
    /// `namespace/name`.
    pub name: String,
    /// `ca.crt`: the CAs the backend certificate is checked against.
    pub ca: Option<String>,
    /// `tls.crt` and `tls.key`, presented to the backend (only with a `ca.crt`, as ingress-nginx writes them out
    /// only then).
    pub client: Option<crate::model::ClientCertificate>,
}

/// Reads the `proxy-ssl-secret` Secret (`data`: its keys, `None` when it does not exist) as ingress-nginx does: a
/// `tls.crt`/`tls.key` pair must belong together, a `ca.crt` must hold certificates, and one of the two is needed.
/// `Err` denies the Ingress's paths (ingress-nginx's `LocationDeniedError`).
pub fn proxy_ssl_secret(
    name: &str,
    data: Option<&BTreeMap<String, String>>,
) -> Result<ProxySslSecret, String> {
    let data = data.ok_or_else(|| format!("Secret {name} not found"))?;
    let get = |k: &str| data.get(k).filter(|v| !v.trim().is_empty());
    let ca = match get("ca.crt") {
        Some(pem) => {
            crate::tls::parse_ca_bundle(pem.as_bytes())
                .map_err(|e| format!("Secret {name}: ca.crt: {e}"))?;
            Some(pem.clone())
        }
        None => None,
    };
    let client = match (get("tls.crt"), get("tls.key")) {
        (Some(cert), Some(key)) => {
            crate::tls::parse_certified_key(cert.as_bytes(), key.as_bytes())
                .map_err(|e| format!("Secret {name}: {e}"))?;
            Some(crate::model::ClientCertificate {
                source: format!("Secret {name}"),
                cert_pem: cert.clone(),
                key_pem: crate::model::Redacted::new(key.clone()),
            })
        }
        _ => None,
    };
    if ca.is_none() && client.is_none() {
        return Err(format!(
            "Secret {name} has neither ca.crt nor tls.crt and tls.key"
        ));
    }
    Ok(ProxySslSecret {
        name: name.to_string(),
        client: client.filter(|_| ca.is_some()),
        ca,
    })
}

/// TLS to the backend as ingress-nginx sets it up from `backend-protocol` and `proxy-ssl-*` (`secret`: the
/// `proxy-ssl-secret` Secret, read), and warnings (annotation short name, message) for settings that have no
/// effect, as in ingress-nginx. `None` for cleartext backends.
///
/// - `HTTPS`: TLS with HTTP/1.1. nginx's defaults: the certificate is not checked, no SNI. With the Secret:
///   `proxy-ssl-server-name: on` sends SNI, `proxy-ssl-name` (else [`NGINX_UPSTREAM_NAME`]) is the name sent and
///   checked; with a `ca.crt` in it, `proxy-ssl-verify: on` checks the certificate against it,
///   `-verify-depth`, `-protocols` and `-ciphers` apply, and its `tls.crt`/`tls.key` are presented.
/// - `GRPCS`: TLS with ALPN `h2`, not checked, no SNI: ingress-nginx's `grpc_pass` ignores the `proxy_ssl_*`
///   directives its template writes.
pub fn backend_tls(
    b: &BackendAnnotations,
    secret: Option<&ProxySslSecret>,
) -> (
    Option<crate::model::BackendTls>,
    Vec<(&'static str, String)>,
) {
    use crate::model::{BackendTls, TlsVersion};
    let mut warnings = Vec::new();
    let unchecked = |policy: String| BackendTls {
        skip_verify: true,
        no_sni: true,
        ..BackendTls::verified(policy, NGINX_UPSTREAM_NAME.to_string(), Vec::new())
    };
    match b.protocol {
        BackendProtocolAnnotation::Https => {}
        BackendProtocolAnnotation::Grpcs => {
            if b.proxy_ssl.is_some() {
                warnings.push((
                    "proxy-ssl-secret",
                    "has no effect with backend-protocol GRPCS (ingress-nginx writes proxy_ssl_* directives, which \
                     nginx's grpc_pass ignores): TLS to the backend without checking its certificate, without SNI \
                     and without a client certificate"
                        .to_string(),
                ));
            }
            return (
                Some(unchecked("ingress-nginx backend-protocol GRPCS".into())),
                warnings,
            );
        }
        _ => {
            if b.proxy_ssl.is_some() {
                warnings.push((
                    "proxy-ssl-secret",
                    "has no effect: backend-protocol is not HTTPS (nginx's proxy_ssl_* act on https:// upstreams \
                     only)"
                        .to_string(),
                ));
            }
            return (None, warnings);
        }
    }
    let (Some(p), Some(secret)) = (&b.proxy_ssl, secret) else {
        return (
            Some(unchecked("ingress-nginx backend-protocol HTTPS".into())),
            warnings,
        );
    };
    let mut tls = unchecked(format!(
        "ingress-nginx backend-protocol HTTPS, proxy-ssl-secret {}",
        secret.name
    ));
    if let Some(n) = &p.name {
        tls.hostname = n.clone();
    }
    tls.no_sni = !p.server_name;
    match &secret.ca {
        Some(ca) => {
            tls.ca_bundles = vec![ca.clone()];
            tls.skip_verify = !p.verify;
            if p.verify {
                tls.verify_depth = Some(u32::try_from(p.verify_depth).unwrap_or(u32::MAX));
            }
            tls.versions = p
                .protocols
                .iter()
                .filter_map(|v| match v.as_str() {
                    "TLSv1.2" => Some(TlsVersion::Tls12),
                    "TLSv1.3" => Some(TlsVersion::Tls13),
                    _ => None,
                })
                .collect();
            tls.tls12_cipher_suites = p.tls12_cipher_suites.clone();
            tls.client_certificate = secret.client.clone();
        }
        None => {
            if p.verify {
                warnings.push((
                    "proxy-ssl-verify",
                    format!(
                        "has no effect: Secret {} has no ca.crt (ingress-nginx writes proxy_ssl_verify, \
                         -verify-depth, -protocols, -ciphers and the client certificate only with one); the \
                         backend certificate is not checked",
                        secret.name
                    ),
                ));
            }
        }
    }
    (Some(tls), warnings)
}

/// Backend settings: `backend-protocol`, `proxy-ssl-*` and the load-balancing ones are applied by the
/// translator; the others are parsed and checked only.
fn backend(p: &mut P<'_>, out: &mut IngressAnnotations) {
    let b = &mut out.backend;
    if let Some(v) = p.option(
        "backend-protocol",
        &["auto_http", "http", "https", "grpc", "grpcs", "fcgi"],
        false,
        OnBad::Correct,
        "HTTP is used",
    ) {
        b.protocol = match v.as_str() {
            "https" => BackendProtocolAnnotation::Https,
            "grpc" => BackendProtocolAnnotation::Grpc,
            "grpcs" => BackendProtocolAnnotation::Grpcs,
            "auto_http" => BackendProtocolAnnotation::AutoHttp,
            "fcgi" => BackendProtocolAnnotation::Fcgi,
            _ => BackendProtocolAnnotation::Http,
        };
        match b.protocol {
            BackendProtocolAnnotation::Http
            | BackendProtocolAnnotation::Grpc
            | BackendProtocolAnnotation::Https
            | BackendProtocolAnnotation::Grpcs => {}
            BackendProtocolAnnotation::AutoHttp => p.warn(
                "backend-protocol",
                "AUTO_HTTP is served as HTTP: backends are spoken to in cleartext HTTP/1.1 whatever the client's \
                 scheme"
                    .into(),
            ),
            BackendProtocolAnnotation::Fcgi => p.warn(
                "backend-protocol",
                "FCGI is not supported; requests go to the backend in cleartext HTTP/1.1".into(),
            ),
        }
    }
    // proxy-ssl (`proxyssl/main.go`): a bad secret name refuses the Ingress; a name that is not NAMESPACE/NAME or a
    // Secret of another namespace denies; the rest is corrected. Without the Secret, ingress-nginx's parser stops
    // before reading the others, so they have no effect at all.
    if let Some(secret) = p.chars("proxy-ssl-secret", Chars::Basic, true, OnBad::Reject, "") {
        match secret.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                if ns != p.cx.namespace {
                    p.deny("proxy-ssl-secret", format!("Secret {secret} is in another namespace; cross-namespace Secrets are not allowed"));
                } else {
                    b.proxy_ssl = Some(proxy_ssl(p, secret));
                }
            }
            _ => p.deny(
                "proxy-ssl-secret",
                format!("{secret:?} is not NAMESPACE/NAME"),
            ),
        }
    } else {
        for k in PROXY_SSL_SETTINGS {
            if p.anns.contains_key(&p.full(k)) {
                p.warn(
                    k,
                    "has no effect without proxy-ssl-secret (ingress-nginx reads the proxy-ssl settings only with \
                     it); ignored"
                        .into(),
                );
            }
        }
    }
    // affinity: everything is lenient; an unknown type means no affinity.
    if let Some(t) = p.option(
        "affinity",
        &["cookie"],
        true,
        OnBad::Correct,
        "no affinity is used",
    ) {
        if t == "cookie" {
            let mode = p.option(
                "affinity-mode",
                &["balanced", "persistent"],
                true,
                OnBad::Correct,
                "balanced is used",
            );
            let canary_behavior = p.option(
                "affinity-canary-behavior",
                &["sticky", "legacy"],
                true,
                OnBad::Correct,
                "sticky is used",
            );
            let seconds = |p: &mut P<'_>, k: &str| -> Option<i64> {
                let v = p.get(k)?;
                go_int(v.trim())
                    .ok()
                    .filter(|_| v.trim() == "0" || !v.trim().starts_with('0'))
            };
            let name = p
                .chars(
                    "session-cookie-name",
                    Chars::Basic,
                    true,
                    OnBad::Correct,
                    "INGRESSCOOKIE is used",
                )
                .unwrap_or_else(|| "INGRESSCOOKIE".into());
            let expires = seconds(p, "session-cookie-expires");
            let max_age = seconds(p, "session-cookie-max-age");
            let path = p.chars(
                "session-cookie-path",
                Chars::Url,
                true,
                OnBad::Correct,
                "no path is set",
            );
            let domain = p.chars(
                "session-cookie-domain",
                Chars::Basic,
                true,
                OnBad::Correct,
                "no domain is set",
            );
            let same_site = p.option(
                "session-cookie-samesite",
                &["none", "lax", "strict"],
                false,
                OnBad::Correct,
                "no SameSite is set",
            );
            let secure = p
                .boolean("session-cookie-secure", OnBad::Correct, false)
                .unwrap_or(false);
            let cond = p
                .boolean(
                    "session-cookie-conditional-samesite-none",
                    OnBad::Correct,
                    false,
                )
                .unwrap_or(false);
            let change = p
                .boolean("session-cookie-change-on-failure", OnBad::Correct, false)
                .unwrap_or(false);
            b.affinity = Some(CookieAffinity {
                persistent: mode.as_deref() == Some("persistent"),
                canary_legacy: canary_behavior.as_deref() == Some("legacy"),
                name,
                expires,
                max_age,
                path,
                domain,
                same_site,
                secure,
                conditional_same_site_none: cond,
                change_on_failure: change,
            });
        }
    }
    // upstream-hash-by: a bad value refuses the Ingress.
    if let Some(v) = p.get("upstream-hash-by") {
        let compact = v.replace(' ', "");
        if compact
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_${}".contains(&c))
        {
            let subset = p
                .boolean("upstream-hash-by-subset", OnBad::Reject, false)
                .unwrap_or(false);
            let size = p
                .int("upstream-hash-by-subset-size", OnBad::Reject, 3)
                .filter(|&n| n > 0)
                .unwrap_or(3);
            if hash_on(v).is_none() {
                p.warn(
                    "upstream-hash-by",
                    "not applied: Portcullis hashes on text and the variables $request_uri, $uri, $args, $host, \
                     $request_method, $remote_addr, $binary_remote_addr, $http_NAME, $cookie_NAME and $arg_NAME; \
                     endpoints are chosen round robin"
                        .into(),
                );
            }
            b.upstream_hash_by = Some(UpstreamHashBy {
                key: normalize(v),
                subset,
                subset_size: size,
            });
        } else {
            p.bad(
                "upstream-hash-by",
                v,
                OnBad::Reject,
                "only letters, digits and - _ $ { }",
                "",
            );
        }
    }
    // load-balance: its parser returns the validation error, so a bad value refuses the Ingress.
    if let Some(v) = p.option(
        "load-balance",
        &[
            "round_robin",
            "chash",
            "chashsubset",
            "sticky_balanced",
            "sticky_persistent",
            "ewma",
        ],
        true,
        OnBad::Reject,
        "",
    ) {
        b.load_balance = Some(match v.as_str() {
            "ewma" => LoadBalance::Ewma,
            "chash" => LoadBalance::Chash,
            "chashsubset" => LoadBalance::ChashSubset,
            "sticky_balanced" => LoadBalance::StickyBalanced,
            "sticky_persistent" => LoadBalance::StickyPersistent,
            _ => LoadBalance::RoundRobin,
        });
        let applied = matches!(v.as_str(), "round_robin" | "ewma")
            || (v == "chash" && b.upstream_hash_by.is_some())
            || (v == "chashsubset" && b.upstream_hash_by.as_ref().is_some_and(|h| h.subset));
        if !applied {
            p.warn(
                "load-balance",
                format!("{v} is not applied (round_robin, ewma, and chash with upstream-hash-by are); endpoints are chosen round robin"),
            );
        }
    }
    b.service_upstream = p
        .boolean("service-upstream", OnBad::Correct, false)
        .unwrap_or(false);
    // custom-http-errors: `^(?:[4,5]\d{2},?)*$` with spaces removed; a bad list refuses the Ingress.
    if let Some(v) = p.get("custom-http-errors") {
        let compact = v.replace(' ', "");
        let mut codes = Vec::new();
        let mut ok = true;
        for part in compact.split(',') {
            if part.is_empty() {
                continue;
            }
            let b0 = part.as_bytes()[0];
            if part.len() != 3
                || !(b0 == b'4' || b0 == b'5' || b0 == b',')
                || !part.bytes().all(|c| c.is_ascii_digit())
            {
                ok = false;
                break;
            }
            codes.push(part.parse().unwrap_or(0));
        }
        if ok {
            b.custom_http_errors = codes;
        } else {
            p.bad(
                "custom-http-errors",
                v,
                OnBad::Reject,
                "a list of 4xx and 5xx codes",
                "",
            );
        }
    }
    // default-backend: a DNS-1035 Service name of the Ingress's namespace; a bad name refuses the Ingress.
    if let Some(v) = p.get("default-backend") {
        match dns1035_label(v) {
            Ok(()) => b.default_backend = Some(normalize(v)),
            Err(e) => p.bad("default-backend", v, OnBad::Reject, &e, ""),
        }
    }
}

#[cfg(test)]
mod tests;
