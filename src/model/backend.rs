//! Backends: each Service port is held once in [`super::Model::backends`], keyed by [`BackendKey`]; rules name
//! it by key. Everything the proxy needs to reach its endpoints lives here: endpoints, protocol, TLS, how an
//! endpoint is chosen and when one is taken out of rotation.

use serde::{Serialize, Serializer};
use std::fmt;
use std::net::IpAddr;

/// The name of a backend: a Service port, plus a variant label when two references to the same port need
/// different settings (a Gateway's backend client certificate, an Ingress's load-balancing annotation).
///
/// Invariant: `variant` is empty for the Service port's own settings, and otherwise names what differs, so keys
/// are stable across translations (health and load-balancing state survive a configuration change).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendKey {
    /// Service namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// The Service port.
    pub port: u16,
    /// Empty, or what differs from the Service port's own settings (e.g. `client-cert=ns/secret`).
    pub variant: String,
}

impl BackendKey {
    /// The key of a Service port with its own settings.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>, port: u16) -> Self {
        BackendKey {
            namespace: namespace.into(),
            name: name.into(),
            port,
            variant: String::new(),
        }
    }
}

/// `namespace/name:port`, then `#variant` when there is one.
impl fmt::Display for BackendKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.name, self.port)?;
        if !self.variant.is_empty() {
            write!(f, "#{}", self.variant)?;
        }
        Ok(())
    }
}

/// Serialized as its `Display` text, so that a map keyed by it is a JSON object.
impl Serialize for BackendKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A resolved Service port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceBackend {
    /// Service namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// The Service port that was referenced.
    pub port: u16,
    /// Ready endpoints, sorted and unique. May be empty: requests then get 503.
    pub endpoints: Vec<Endpoint>,
    /// What the backend speaks (from the Service port's `appProtocol`).
    #[serde(skip_serializing_if = "BackendProtocol::is_default")]
    pub protocol: BackendProtocol,
    /// TLS to the backend (from a BackendTLSPolicy), when required.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<Box<BackendTls>>,
    /// How endpoints are chosen, and when one is taken out of rotation.
    #[serde(skip_serializing_if = "BackendPolicy::is_default")]
    pub policy: BackendPolicy,
}

impl ServiceBackend {
    /// The key of this backend: its Service port, with `variant`.
    pub fn key(&self, variant: impl Into<String>) -> BackendKey {
        BackendKey {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            port: self.port,
            variant: variant.into(),
        }
    }
}

/// TLS from the proxy to a backend: from a BackendTLSPolicy, or from an Ingress's ingress-nginx annotations
/// (`backend-protocol: HTTPS`/`GRPCS` with `proxy-ssl-*`). The fields after `client_certificate` are the
/// ingress-nginx settings; their defaults are what a BackendTLSPolicy asks for (verify, send SNI, rustls's TLS
/// versions and cipher suites).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackendTls {
    /// What asks for it: the BackendTLSPolicy (`namespace/name`), or the ingress-nginx annotations that do.
    pub policy: String,
    /// SNI sent (unless `no_sni`), and the name the certificate must carry when `subject_alt_names` is empty.
    pub hostname: String,
    /// PEM CA bundles the backend certificate must chain to.
    #[serde(skip)]
    pub ca_bundles: Vec<String>,
    /// When not empty, the certificate must carry one of these names (instead of `hostname`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<SubjectAltName>,
    /// Client certificate presented to the backend (a Gateway's `spec.tls.backend.clientCertificateRef`, or the
    /// `tls.crt`/`tls.key` of an ingress-nginx `proxy-ssl-secret`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<ClientCertificate>,
    /// Accept any certificate the backend presents (nginx's `proxy_ssl_verify off`, its default): the handshake's
    /// signatures are still checked, the chain and the name are not.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub skip_verify: bool,
    /// Send no SNI (nginx's `proxy_ssl_server_name off`, its default); `hostname` is then only checked.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub no_sni: bool,
    /// At most this many intermediate certificates between the backend's certificate and a trust anchor
    /// (`proxy-ssl-verify-depth`, counted as OpenSSL counts); `None`: no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_depth: Option<u32>,
    /// The TLS versions offered; empty: TLS 1.2 and 1.3.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<TlsVersion>,
    /// The TLS 1.2 cipher suites offered (rustls names), in order; empty: all of rustls's. TLS 1.3 suites are
    /// not restricted (as OpenSSL's cipher list, which `proxy-ssl-ciphers` is, does not restrict them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tls12_cipher_suites: Vec<String>,
}

impl BackendTls {
    /// Settings with a BackendTLSPolicy's defaults: verify against `ca_bundles` and `hostname`, send SNI.
    pub fn verified(policy: String, hostname: String, ca_bundles: Vec<String>) -> Self {
        BackendTls {
            policy,
            hostname,
            ca_bundles,
            subject_alt_names: Vec::new(),
            client_certificate: None,
            skip_verify: false,
            no_sni: false,
            verify_depth: None,
            versions: Vec::new(),
            tls12_cipher_suites: Vec::new(),
        }
    }
}

/// A TLS protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum TlsVersion {
    /// TLS 1.2.
    #[serde(rename = "TLSv1.2")]
    Tls12,
    /// TLS 1.3.
    #[serde(rename = "TLSv1.3")]
    Tls13,
}

/// A certificate and key the proxy presents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClientCertificate {
    /// Where it came from.
    pub source: String,
    /// PEM chain.
    #[serde(skip)]
    pub cert_pem: String,
    /// PEM key.
    #[serde(skip)]
    pub key_pem: super::Redacted,
}

/// A subject alternative name a backend certificate may have to carry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "type", content = "value")]
pub enum SubjectAltName {
    /// A DNS name.
    Hostname(String),
    /// A URI, such as a SPIFFE ID.
    #[serde(rename = "URI")]
    Uri(String),
}

/// The application protocol of a backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub enum BackendProtocol {
    /// HTTP/1.1 (upgrades such as WebSocket pass through).
    #[default]
    Http1,
    /// HTTP/2 (`appProtocol: kubernetes.io/h2c`, every GRPCRoute backend, ingress-nginx's `backend-protocol`
    /// `GRPC` and `GRPCS`): over cleartext with prior knowledge, or, when the backend has TLS, inside TLS with ALPN
    /// `h2`.
    H2c,
}

impl BackendProtocol {
    /// `true` for HTTP/1.1.
    pub fn is_default(&self) -> bool {
        *self == BackendProtocol::Http1
    }
}

/// One ready endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Endpoint {
    /// Pod address.
    pub ip: IpAddr,
    /// Target port on the pod.
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            IpAddr::V4(ip) => write!(f, "{ip}:{}", self.port),
            IpAddr::V6(ip) => write!(f, "[{ip}]:{}", self.port),
        }
    }
}

/// How a backend's endpoints are chosen and watched. The default is round robin with passive health checking
/// (see [`PassiveHealth::default`]) and no active checks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BackendPolicy {
    /// Endpoint selection.
    #[serde(skip_serializing_if = "LoadBalancing::is_default")]
    pub load_balancing: LoadBalancing,
    /// Taking endpoints out after consecutive failures.
    #[serde(skip_serializing_if = "PassiveHealth::is_default")]
    pub passive: PassiveHealth,
    /// Probing endpoints in the background.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active: Option<ActiveHealth>,
}

impl BackendPolicy {
    /// The default policy.
    pub fn is_default(&self) -> bool {
        *self == BackendPolicy::default()
    }
}

/// How an endpoint is chosen for a request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "type", content = "on")]
pub enum LoadBalancing {
    /// In turn.
    #[default]
    RoundRobin,
    /// At random.
    Random,
    /// The endpoint with the fewest requests in flight, weighted by its recent latency (an exponentially weighted
    /// moving average), out of two chosen at random.
    LeastRequest,
    /// Ketama consistent hashing of a request property: the same value goes to the same endpoint while the
    /// endpoint set is unchanged, and few values move when it changes.
    ConsistentHash(HashOn),
    /// ingress-nginx's `upstream-hash-by-subset`: the endpoints (in address order) are cut into subsets of `size`
    /// (the last one filled up from the first endpoints), the property's hash picks a subset on a Ketama ring,
    /// and a random endpoint of that subset serves.
    ConsistentHashSubset {
        /// What is hashed.
        on: HashOn,
        /// Endpoints per subset.
        size: u32,
    },
}

impl LoadBalancing {
    /// Round robin.
    pub fn is_default(&self) -> bool {
        *self == LoadBalancing::RoundRobin
    }
}

/// The request property consistent hashing uses. A request without it hashes the empty string.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", content = "name")]
pub enum HashOn {
    /// The client's IP address.
    SourceIp,
    /// The path and query.
    Uri,
    /// A request header (lowercase name).
    Header(String),
    /// A cookie.
    Cookie(String),
    /// A query parameter.
    QueryParam(String),
    /// The request's host name (the Host header or the authority, without the port, lowercased).
    Host,
    /// The path, without the query.
    Path,
    /// The query string, without the `?`.
    Query,
    /// The request method.
    Method,
    /// Text and request properties, concatenated in order (ingress-nginx's `upstream-hash-by:
    /// "$host$request_uri"`). Never nested.
    Parts(Vec<HashPart>),
}

/// One piece of a [`HashOn::Parts`] key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", content = "value")]
pub enum HashPart {
    /// Literal text.
    Text(String),
    /// A request property (any [`HashOn`] but `Parts`).
    Var(HashOn),
}

/// Passive health checking: an endpoint that fails `max_failures` times in a row (connection refused or reset
/// before a response, connect or response timeout) is taken out of rotation for a back-off period, then tried
/// again half-open: one more failure takes it out again for twice as long (up to `max_ejection_ms`), one success
/// puts it back for good. When every endpoint is out, all are tried anyway (better than certain failure).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PassiveHealth {
    /// Consecutive failures that take an endpoint out; 0 turns passive checking off.
    pub max_failures: u32,
    /// The first back-off, in milliseconds.
    pub ejection_ms: u64,
    /// The longest back-off, in milliseconds.
    pub max_ejection_ms: u64,
}

impl Default for PassiveHealth {
    /// 3 failures, 5 s doubling up to 60 s (nginx takes a server out after 1 failure for 10 s; Envoy's outlier
    /// detection after 5 for 30 s times the number of ejections: this sits between, and a retry on another
    /// endpoint hides the failures from clients).
    fn default() -> Self {
        PassiveHealth {
            max_failures: 3,
            ejection_ms: 5_000,
            max_ejection_ms: 60_000,
        }
    }
}

impl PassiveHealth {
    /// The default settings.
    pub fn is_default(&self) -> bool {
        *self == PassiveHealth::default()
    }
}

/// Active health checking: every `interval_ms`, each endpoint is probed; `unhealthy_threshold` failed probes in
/// a row take it out until `healthy_threshold` probes in a row succeed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ActiveHealth {
    /// What a probe is.
    pub check: HealthCheck,
    /// Time between probes of one endpoint, in milliseconds.
    pub interval_ms: u64,
    /// How long a probe may take, in milliseconds.
    pub timeout_ms: u64,
    /// Consecutive successes that bring an endpoint back.
    pub healthy_threshold: u32,
    /// Consecutive failures that take an endpoint out.
    pub unhealthy_threshold: u32,
}

/// A probe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type")]
pub enum HealthCheck {
    /// A TCP connection can be opened.
    Tcp,
    /// `GET path` answers 200.
    Http {
        /// Request path.
        path: String,
        /// `Host` header; `None` sends the Service's cluster name (`name.namespace.svc`).
        #[serde(skip_serializing_if = "Option::is_none")]
        host: Option<String>,
    },
}
