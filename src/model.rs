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
    Endpoint, HashOn, HealthCheck, LoadBalancing, PassiveHealth, ServiceBackend, SubjectAltName,
};
pub use host::{HostPattern, HostPatternError};
pub use rule::{
    Action, Backend, BackendGroup, Cors, Filter, HeaderMatch, HeaderModifier, HttpRule, Mirror,
    Origin, OriginKind, PathMatch, PathModifier, QueryParamMatch, Redirect, Retry, RouteMatch,
    StringMatch, Timeouts, WeightedBackend,
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
    /// The listener on `port` at the default address, if any.
    pub fn listener(&self, port: u16) -> Option<&Listener> {
        self.listeners
            .iter()
            .find(|l| l.port == port && l.address.is_none())
    }

    /// Number of route rules in the whole model (each rule counted once per virtual host it appears in).
    pub fn rule_count(&self) -> usize {
        self.listeners
            .iter()
            .map(|l| l.virtual_hosts.iter().map(|v| v.rules.len()).sum::<usize>())
            .sum()
    }
}

/// The application protocol a listener speaks to clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    /// Plain-text HTTP/1.1 (and HTTP/2 with prior knowledge).
    Http,
    /// HTTP over TLS terminated here (HTTP/2 or HTTP/1.1 by ALPN).
    Https,
    /// TLS passed through to the backend unopened, routed by SNI (TLSRoute).
    #[serde(rename = "TLS")]
    TlsPassthrough,
}

/// Everything served on one (address, port).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Listener {
    /// The IP address to bind: a Gateway's `spec.addresses`; `None` means the process's `--bind-address`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    /// The logical port (what the manifests say, before `--port-offset`).
    pub port: u16,
    /// What clients speak on this port.
    pub protocol: Protocol,
    /// Certificates and client validation, for [`Protocol::Https`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
    /// Virtual hosts, sorted by (listener hostname, hostname). Several entries may share a hostname when they
    /// come from different Gateway listeners; the router keeps them apart (listener isolation).
    pub virtual_hosts: Vec<VirtualHost>,
    /// What answers when no rule matches (Ingress `spec.defaultBackend`); `None` means 404.
    pub default_backend: Option<HttpRule>,
    /// TLS passthrough routes, for [`Protocol::TlsPassthrough`] listeners.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tls_routes: Vec<TlsRoute>,
}

/// A TLS passthrough route: connections whose SNI matches `hostname` go, still encrypted, to `backends`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TlsRoute {
    /// The Gateway listener hostname it attached through (listener isolation, as for HTTP).
    pub listener_hostname: HostPattern,
    /// SNI names it serves (route hostnames intersected with the listener hostname).
    pub hostname: HostPattern,
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
