//! The normalized routing model: plain data that both APIs (Ingress and Gateway API) translate into.
//!
//! Invariants every value here keeps (translation establishes them, the router relies on them):
//! - no Kubernetes, gateway-api or Pingora types: this is what `GET /config` prints and golden tests compare;
//! - spec defaults are already applied (a rule always has at least one match, a match always has a path, weights
//!   are explicit, header names are lowercase), so the data plane never re-derives them;
//! - invalid input is data too ([`Backend::Invalid`]), so the proxy answers what the spec requires;
//! - collections are sorted deterministically, so two translations of the same input compare equal.

mod backend;
mod host;
pub mod policy;
pub mod precedence;
mod rule;
mod tls;

pub use backend::{
    ActiveHealth, BackendKey, BackendPolicy, BackendProtocol, BackendTls, ClientCertificate,
    Endpoint, HashOn, HashPart, HealthCheck, LoadBalancing, PassiveHealth, ServiceBackend,
    SubjectAltName, TlsVersion,
};
pub use host::{HostPattern, HostPatternError};
pub use rule::{
    Action, Backend, BackendGroup, Cors, CustomErrors, Filter, GrpcMethodMatch, HeaderMatch,
    HeaderModifier, HttpRule, Mirror, Origin, OriginKind, PathMatch, PathModifier, QueryParamMatch,
    Redirect, Retry, RetryOn, RouteMatch, SameSite, SessionCarrier, SessionCookie,
    SessionPersistence, StickyMode, StringMatch, Timeouts, WeightedBackend,
};

pub use tls::{ClientValidation, ListenerCertificate, ListenerTls, Redacted};

use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The whole routing configuration at one point in time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Model {
    /// One entry per (address, port) the proxy serves, sorted by address then port. Ports are logical (before
    /// `--port-offset`).
    pub listeners: Vec<Listener>,
    /// Every backend the rules name, each once. Invariant: every [`Backend::Service`] key in a rule, mirror or
    /// TLS route is present here.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub backends: BTreeMap<BackendKey, ServiceBackend>,
}

impl Model {
    /// The TCP listener on `port` at the default address, if any.
    pub fn listener(&self, port: u16) -> Option<&Listener> {
        self.listeners
            .iter()
            .find(|l| l.port == port && l.address.is_none() && l.transport == Transport::Tcp)
    }

    /// Number of route rules in the whole model (each rule counted once per virtual host it appears in).
    pub fn rule_count(&self) -> usize {
        self.listeners
            .iter()
            .filter_map(Listener::http)
            .map(|h| h.virtual_hosts.iter().map(|v| v.rules.len()).sum::<usize>())
            .sum()
    }
}

/// The transport a listener's socket uses: the same port number may be served once over each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Transport {
    /// A TCP listening socket (HTTP, HTTPS, TLS, TCP).
    #[default]
    Tcp,
    /// A UDP socket (UDPRoute).
    Udp,
}

impl Transport {
    fn is_tcp(&self) -> bool {
        *self == Transport::Tcp
    }
}

/// Where a listener is bound: an address (`None` = the process's `--bind-address`), a logical port (before
/// `--port-offset`) and a transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ListenerKey {
    /// A Gateway's `spec.addresses` entry, or `None` for the default address.
    pub address: Option<IpAddr>,
    /// The logical port.
    pub port: u16,
    /// TCP or UDP.
    pub transport: Transport,
}

impl ListenerKey {
    /// A TCP listener on `port` at the default address.
    pub fn tcp(port: u16) -> Self {
        ListenerKey {
            address: None,
            port,
            transport: Transport::Tcp,
        }
    }
}

/// The protocol a listener serves: what [`ListenerKind`] a listener is, without its tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    /// Plain-text HTTP/1.1 (and HTTP/2 with prior knowledge).
    Http,
    /// HTTP over TLS terminated here (HTTP/2 or HTTP/1.1 by ALPN).
    Https,
    /// TLS routed by SNI (TLSRoute): passed through unopened, or terminated here and forwarded as TCP, per
    /// route (Gateway API allows both modes on one port for different hostnames).
    Tls,
    /// TCP streams forwarded as they are (TCPRoute).
    Tcp,
    /// UDP datagrams forwarded per client flow (UDPRoute).
    Udp,
}

impl Protocol {
    /// Its name in metrics labels: `http`, `https`, `tls`, `tcp`, `udp`.
    pub fn metric_label(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
            Protocol::Tls => "tls",
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    /// The transport this protocol is served over.
    pub fn transport(self) -> Transport {
        match self {
            Protocol::Udp => Transport::Udp,
            _ => Transport::Tcp,
        }
    }
}

/// Everything served on one (address, port, transport).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Listener {
    /// The IP address to bind: a Gateway's `spec.addresses`; `None` means the process's `--bind-address`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    /// The logical port (what the manifests say, before `--port-offset`).
    pub port: u16,
    /// TCP or UDP (shown only for UDP).
    #[serde(skip_serializing_if = "Transport::is_tcp")]
    pub transport: Transport,
    /// What is served, with the tables of that protocol.
    #[serde(flatten)]
    pub kind: ListenerKind,
}

impl Listener {
    /// Where it is bound.
    pub fn key(&self) -> ListenerKey {
        ListenerKey {
            address: self.address,
            port: self.port,
            transport: self.transport,
        }
    }

    /// The protocol served.
    pub fn protocol(&self) -> Protocol {
        match &self.kind {
            ListenerKind::Http(_) => Protocol::Http,
            ListenerKind::Https(_) => Protocol::Https,
            ListenerKind::Tls(_) => Protocol::Tls,
            ListenerKind::Tcp(_) => Protocol::Tcp,
            ListenerKind::Udp(_) => Protocol::Udp,
        }
    }

    /// The HTTP tables, for HTTP and HTTPS listeners.
    pub fn http(&self) -> Option<&HttpListener> {
        match &self.kind {
            ListenerKind::Http(h) => Some(h),
            ListenerKind::Https(h) => Some(&h.http),
            _ => None,
        }
    }

    /// The certificates terminated here (HTTPS, and TLS listeners with Terminate routes).
    pub fn tls(&self) -> Option<&ListenerTls> {
        match &self.kind {
            ListenerKind::Https(h) => Some(&h.tls),
            ListenerKind::Tls(t) => t.tls.as_ref(),
            _ => None,
        }
    }
}

/// A listener's protocol and what it routes by.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "protocol")]
pub enum ListenerKind {
    /// HTTP: virtual hosts and rules.
    #[serde(rename = "HTTP")]
    Http(HttpListener),
    /// HTTPS: certificates, then the same tables as HTTP.
    #[serde(rename = "HTTPS")]
    Https(HttpsListener),
    /// TLS routed by SNI (TLSRoute), each route passed through or terminated.
    #[serde(rename = "TLS")]
    Tls(TlsListener),
    /// TCP (TCPRoute).
    #[serde(rename = "TCP")]
    Tcp(L4Listener),
    /// UDP (UDPRoute).
    #[serde(rename = "UDP")]
    Udp(L4Listener),
}

/// The tables of an HTTP (or HTTPS) listener.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HttpListener {
    /// Virtual hosts, sorted by (listener hostname, hostname). Several entries may share a hostname when they
    /// come from different Gateway listeners; the router keeps them apart (listener isolation).
    pub virtual_hosts: Vec<VirtualHost>,
    /// What answers when no rule matches (Ingress `spec.defaultBackend`); `None` means 404.
    pub default_backend: Option<HttpRule>,
}

/// An HTTPS listener: its certificates and its HTTP tables.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HttpsListener {
    /// Certificates and client validation.
    pub tls: ListenerTls,
    /// What is served inside TLS.
    #[serde(flatten)]
    pub http: HttpListener,
}

/// A TLS listener (TLSRoute).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TlsListener {
    /// Certificates for the hostnames of Terminate-mode Gateway listeners on this port; `None` when every route
    /// is passed through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
    /// Routes by SNI.
    pub routes: Vec<TlsRoute>,
}

/// A TCP or UDP listener: its routes, in the order they take traffic (the oldest route first: only the first
/// serves, as Gateway API gives a port's traffic to the oldest of the routes attached to it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct L4Listener {
    /// Attached routes, oldest first.
    pub routes: Vec<L4Route>,
}

/// A TCPRoute or UDPRoute rule attached to a listener.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct L4Route {
    /// Where it came from.
    pub origin: Origin,
    /// Weighted backends; a connection (or UDP flow) picks one when it starts.
    pub backends: BackendGroup,
}

/// What a TLS route does with the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub enum TlsMode {
    /// The TLS bytes go to the backend unopened.
    Passthrough,
    /// TLS ends here with the listener's certificate; the plain bytes go to the backend over TCP.
    Terminate,
}

/// A TLS route: connections whose SNI matches `hostname` go to `backends`, passed through or terminated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TlsRoute {
    /// The Gateway listener hostname it attached through (listener isolation, as for HTTP).
    pub listener_hostname: HostPattern,
    /// SNI names it serves (route hostnames intersected with the listener hostname).
    pub hostname: HostPattern,
    /// Passthrough or Terminate: the mode of the Gateway listener it attached through.
    pub mode: TlsMode,
    /// Where it came from.
    pub origin: Origin,
    /// Weighted backends.
    pub backends: BackendGroup,
}

/// The rules reachable for one hostname pattern through one Gateway listener (or through Ingress).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VirtualHost {
    /// The hostname of the Gateway listener these rules were attached through, which decides listener isolation:
    /// a request is served only by rules of the most specific listener hostname that matches its Host.
    /// `None` for Ingress rules: they belong to no Gateway listener and take part under every listener hostname.
    pub listener_hostname: Option<HostPattern>,
    /// The hostnames this virtual host answers (the intersection of route and listener hostnames).
    pub hostname: HostPattern,
    /// Rules in source order; the router sorts them by precedence.
    pub rules: Vec<HttpRule>,
}
