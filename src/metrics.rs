//! Prometheus metrics, served at `GET /metrics` on the admin API and on the health port. Every metric name lives
//! in this module, each with the prefix `portcullis_` (the registry adds it).
//!
//! This module holds the control plane's metrics: updated when a configuration round ends, when the leader Lease
//! changes hands, and once at start (build information). Nothing here is touched by a request; the request
//! metrics are in [`request`].
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `portcullis_build_info` | gauge | `version` (and `commit` when the build knew it) | always 1 |
//! | `portcullis_config_rounds_total` | counter | `result`: `ok`, `noop`, `error` | configuration rounds (see [`Round`]) |
//! | `portcullis_config_last_success_timestamp_seconds` | gauge | | end of the last `ok` or `noop` round |
//! | `portcullis_routes` | gauge | `kind`, `state`: `accepted`, `rejected` | route objects of ours (see [`RouteCounts`]) |
//! | `portcullis_leader` | gauge | | 1 while this process holds the leader Lease (Kubernetes mode only) |
//! | `portcullis_tls_certificate_expiry_timestamp_seconds` | gauge | `namespace`, `name` | `notAfter` of the leaf certificate of each Secret the published configuration uses |
//! | `portcullis_backend_ready_endpoints` | gauge | `namespace`, `name`, `port` | ready endpoints of each backend Service port in the published configuration |
//! | `portcullis_open_connections` | gauge | `listener` (`ADDRESS:PORT`, `*` for the default address), `protocol`: `http`, `https`, `tls`, `tcp` | connections open on each listener served over TCP (see [`open_connections`]) |
//! | `portcullis_udp_flows` | gauge | | UDP client flows open on every UDP listener (see [`udp`]) |
//! | `portcullis_udp_datagrams_dropped_total` | counter | `reason`: `no_route`, `flow_table_full`, `queue_full`, `send_failed` | datagrams a UDP listener did not forward |
//! | `portcullis_edge_requests_refused_total` | counter | `status`: `400`, `408`, `413`, `414`, `431`, `505` | requests the edge refused, by the status the client got (`GET /edge`'s `refused`) |
//! | `portcullis_edge_connections_closed_total` | counter | `reason`: `connection_limit`, `header_timeout`, `idle_timeout`, `handshake_timeout`, `h2_rapid_reset` | connections the edge closed |
//! | `portcullis_edge_paths_total` | counter | `action`: `normalized`, `redirected` | request paths normalized before matching, or redirected to their decoded form |
//!
//! The UDP and open-connection metrics are on the data path: their children are resolved once (when first used;
//! when a listener is bound), and a datagram or a connection touches them with a relaxed atomic add.
//!
//! # Per-request metrics
//!
//! [`request`] holds the per-route and per-listener request metrics (`requests_total`,
//! `request_duration_seconds`, upstream results and timings, retries, bytes, active requests), registered in the
//! same [`Registry`]; a request records them through handles resolved when its table is published, without a
//! label lookup or a lock.

pub mod request;

use crate::model::{HttpRule, Model, OriginKind};
use crate::translate::status::Statuses;
use crate::translate::{Diagnostic, Severity};
use prometheus::{Encoder, Gauge, GaugeVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

/// The registry's prefix: every metric name starts with `portcullis_`.
pub const PREFIX: &str = "portcullis";

/// The `Content-Type` of [`Metrics::render`]'s output (the Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// The git commit this binary was built from, when the build set `PORTCULLIS_GIT_COMMIT` (the Containerfile
/// does); local `cargo build`s do not, and then `portcullis_build_info` carries only the version.
pub const GIT_COMMIT: Option<&str> = option_env!("PORTCULLIS_GIT_COMMIT");

/// Route kinds counted by `portcullis_routes`, in the order they are exported. Every kind is exported, with 0
/// when there are none, so a dashboard never sees a series appear or vanish with the first route.
pub const ROUTE_KINDS: [&str; 6] = [
    "Ingress",
    "HTTPRoute",
    "GRPCRoute",
    "TLSRoute",
    "TCPRoute",
    "UDPRoute",
];

/// Why metrics could not be set up (a metric defined twice or with a bad name: a programming error, reported
/// instead of panicking).
#[derive(Debug, thiserror::Error)]
#[error("cannot register metric {name}: {source}")]
pub struct MetricsError {
    name: &'static str,
    #[source]
    source: prometheus::Error,
}

/// How a configuration round ended, as `portcullis_config_rounds_total` counts it. A round is one translation
/// of everything the source holds followed by a publish attempt (one call of `Control::apply`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// A new configuration was published (`result="ok"`).
    Published,
    /// The translation gave the model already served; nothing was swapped (`result="noop"`).
    Unchanged,
    /// The model could not be compiled; the previous one keeps serving (`result="error"`). Objects with
    /// mistakes do not make a round fail: they are reported and skipped, and the round is `ok` or `noop`.
    Refused,
}

impl Round {
    fn label(self) -> &'static str {
        match self {
            Round::Published => "ok",
            Round::Unchanged => "noop",
            Round::Refused => "error",
        }
    }
}

/// Route objects of ours by kind, as `portcullis_routes` exports them.
///
/// - Gateway API routes (HTTPRoute, GRPCRoute, TLSRoute, TCPRoute, UDPRoute): those with at least one
///   `status.parents` entry of ours (a parentRef naming one of our Gateways or ListenerSets). **accepted** when
///   at least one of those entries has `Accepted=True`, else **rejected**. A route accepted by one parent and
///   refused by another is accepted.
/// - Ingress (no status of its own to read): **accepted** when at least one of its paths or its
///   `defaultBackend` is in the routing table; **rejected** when it has an error diagnostic and nothing of it is
///   in the table. An Ingress of another class is in neither.
///
/// Accepted does not mean every rule works: a refused path, an unresolved backend (answering 500/503) or a
/// shadowed rule leave the object accepted; those are on `/diagnostics` and in the route's status conditions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteCounts {
    /// (kind, accepted, rejected), one entry per kind of [`ROUTE_KINDS`].
    pub by_kind: BTreeMap<&'static str, (i64, i64)>,
}

impl RouteCounts {
    /// Counts from one translation's output.
    pub fn new(model: &Model, diagnostics: &[Diagnostic], statuses: &Statuses) -> Self {
        let mut by_kind: BTreeMap<&'static str, (i64, i64)> =
            ROUTE_KINDS.iter().map(|k| (*k, (0, 0))).collect();
        for r in &statuses.routes {
            let Some(kind) = r
                .kind
                .as_deref()
                .and_then(|k| ROUTE_KINDS.iter().find(|x| **x == k))
            else {
                continue;
            };
            if r.status.parents.is_empty() {
                continue;
            }
            let accepted = r.status.parents.iter().any(|p| {
                p.conditions
                    .iter()
                    .any(|c| c.type_ == "Accepted" && c.status == "True")
            });
            let entry = by_kind.entry(kind).or_default();
            if accepted {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
        }
        let mut served: BTreeSet<(&str, &str)> = BTreeSet::new();
        for rule in model_rules(model) {
            if rule.origin.kind == OriginKind::Ingress {
                served.insert((&rule.origin.namespace, &rule.origin.name));
            }
        }
        let refused: BTreeSet<(&str, &str)> = diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error && d.object.kind == "Ingress")
            .map(|d| {
                (
                    d.object.namespace.as_deref().unwrap_or("default"),
                    d.object.name.as_str(),
                )
            })
            .filter(|key| !served.contains(key))
            .collect();
        let entry = by_kind.entry("Ingress").or_default();
        entry.0 = i64::try_from(served.len()).unwrap_or(i64::MAX);
        entry.1 = i64::try_from(refused.len()).unwrap_or(i64::MAX);
        RouteCounts { by_kind }
    }
}

/// Every HTTP rule of the model: virtual host rules and default backends.
fn model_rules(model: &Model) -> impl Iterator<Item = &HttpRule> {
    model
        .listeners
        .iter()
        .filter_map(|l| l.http())
        .flat_map(|h| {
            h.virtual_hosts
                .iter()
                .flat_map(|v| v.rules.iter())
                .chain(h.default_backend.iter())
        })
}

/// Ready endpoints per backend Service port of `model`: `(namespace, name, port) -> endpoints`. Variants of one
/// Service port (for example with a Gateway's client certificate) share its endpoints and count once. Backends
/// that do not resolve (`Backend::Invalid`, which includes a Service port without ready endpoints) are not in
/// it: the model keeps only the answer (500/503) for them, not the Service they named.
pub fn backend_endpoints(model: &Model) -> BTreeMap<(String, String, u16), i64> {
    model
        .backends
        .values()
        .map(|s| {
            (
                (s.namespace.clone(), s.name.clone(), s.port),
                i64::try_from(s.endpoints.len()).unwrap_or(i64::MAX),
            )
        })
        .collect()
}

/// `(namespace, name)` of a certificate source written as `Secret namespace/name` (what translation records in
/// `ListenerCertificate::source` and `ClientCertificate::source`). Kubernetes names contain neither spaces nor
/// slashes, so the split is exact.
fn secret_name(source: &str) -> Option<(String, String)> {
    let (ns, name) = source.strip_prefix("Secret ")?.split_once('/')?;
    (!ns.is_empty() && !name.is_empty() && !name.contains('/'))
        .then(|| (ns.to_string(), name.to_string()))
}

/// `notAfter` (seconds since the epoch) of the first certificate of a PEM chain, the leaf.
pub fn leaf_not_after(pem: &str) -> Option<i64> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let cert = block.parse_x509().ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// A Secret's `(namespace, name)` with the hash of its certificate PEM and the leaf's `notAfter`.
type Expiries = BTreeMap<(String, String), (u64, i64)>;

/// Expiry of the leaf certificate of every Secret the model serves or presents: listener certificates (Ingress
/// `spec.tls`, Gateway listeners) and backend client certificates. A Secret used in several places appears once.
/// Certificates whose PEM hashes as in `known` (the previous publish) are not parsed again.
fn certificate_expiry(model: &Model, known: &Expiries) -> Expiries {
    let mut out = BTreeMap::new();
    let mut add = |source: &str, pem: &str| {
        let Some(key) = secret_name(source) else {
            return;
        };
        if out.contains_key(&key) {
            return;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        pem.hash(&mut h);
        let hash = h.finish();
        let not_after = match known.get(&key) {
            Some((k, t)) if *k == hash => Some(*t),
            _ => leaf_not_after(pem),
        };
        match not_after {
            Some(t) => {
                out.insert(key, (hash, t));
            }
            None => tracing::debug!(secret = %source, "certificate expiry not readable"),
        }
    };
    for l in &model.listeners {
        for c in l.tls().iter().flat_map(|t| t.certificates.iter()) {
            add(&c.source, &c.cert_pem);
        }
    }
    for s in model.backends.values() {
        if let Some(c) = s.tls.as_ref().and_then(|t| t.client_certificate.as_ref()) {
            add(&c.source, &c.cert_pem);
        }
    }
    out
}

/// The label sets currently exported by the families whose label sets follow the configuration, so the ones
/// that left it can be removed.
#[derive(Default)]
struct Exported {
    certificates: Expiries,
    backends: BTreeSet<(String, String, u16)>,
}

/// The metrics of one process. Cheap to share (`Arc`); every method takes `&self`.
pub struct Metrics {
    registry: Registry,
    config_rounds: IntCounterVec,
    config_last_success: Gauge,
    routes: IntGaugeVec,
    certificate_expiry: GaugeVec,
    backend_endpoints: IntGaugeVec,
    leader: OnceLock<IntGauge>,
    exported: Mutex<Exported>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The UDP listeners' metrics, shared by every UDP listener of the process.
pub struct UdpMetrics {
    /// Flows open.
    pub flows: IntGauge,
    dropped: IntCounterVec,
    /// A datagram that starts a flow when no route or usable backend serves the listener.
    pub dropped_no_route: prometheus::IntCounter,
    /// A datagram that would start a flow while the listener's flow table is full.
    pub dropped_table_full: prometheus::IntCounter,
    /// A datagram of a flow whose queue to its backend is full (the backend socket cannot keep up).
    pub dropped_queue_full: prometheus::IntCounter,
    /// A datagram the operating system refused to send (either way).
    pub dropped_send_failed: prometheus::IntCounter,
}

/// The UDP listeners' metrics (made on first use, and registered by every [`Metrics::new`]).
pub fn udp() -> &'static UdpMetrics {
    static UDP: OnceLock<UdpMetrics> = OnceLock::new();
    UDP.get_or_init(|| {
        // Both descriptions are fixed and valid, so making them cannot fail.
        let flows = IntGauge::new(
            "udp_flows",
            "UDP client flows open, over every UDP listener.",
        )
        .unwrap_or_else(|_| unreachable_metric());
        let dropped = IntCounterVec::new(
            Opts::new(
                "udp_datagrams_dropped_total",
                "Datagrams a UDP listener did not forward, by reason.",
            ),
            &["reason"],
        )
        .unwrap_or_else(|_| unreachable_metric());
        UdpMetrics {
            dropped_no_route: dropped.with_label_values(&["no_route"]),
            dropped_table_full: dropped.with_label_values(&["flow_table_full"]),
            dropped_queue_full: dropped.with_label_values(&["queue_full"]),
            dropped_send_failed: dropped.with_label_values(&["send_failed"]),
            flows,
            dropped,
        }
    })
}

/// Connections open on each listener served over TCP (HTTP, HTTPS, TLS, TCP), by listener (`ADDRESS:PORT`, `*`
/// for the default address, as the request metrics label it) and protocol (made on first use, and registered by
/// every [`Metrics::new`]). A listener resolves its child once, when it is bound; a connection adds one when it
/// is admitted and takes it back when it ends. UDP listeners count flows instead ([`udp`]).
pub fn open_connections() -> &'static IntGaugeVec {
    static OPEN: OnceLock<IntGaugeVec> = OnceLock::new();
    OPEN.get_or_init(|| {
        // The description is fixed and valid, so making it cannot fail.
        IntGaugeVec::new(
            Opts::new(
                "open_connections",
                "Connections open on each listener served over TCP, by listener and protocol.",
            ),
            &["listener", "protocol"],
        )
        .unwrap_or_else(|_| unreachable_metric())
    })
}

/// The edge's counters ([`crate::proxy::edge::STATS`]) as Prometheus counters, read when scraped: the edge
/// keeps plain atomics on its path, and a scrape copies them.
#[derive(Clone)]
struct EdgeCollector {
    refused: IntCounterVec,
    closed: IntCounterVec,
    paths: IntCounterVec,
    headers: IntCounterVec,
}

impl EdgeCollector {
    fn new() -> Self {
        let vec = |name: &str, help: &str, label: &str| {
            IntCounterVec::new(Opts::new(name, help), &[label])
                .unwrap_or_else(|_| unreachable_metric())
        };
        EdgeCollector {
            refused: vec(
                "edge_requests_refused_total",
                "Requests the edge refused, by the status the client got.",
                "status",
            ),
            closed: vec(
                "edge_connections_closed_total",
                "Connections the edge closed: over the listener's connection limit, header, idle or TLS handshake \
                 timeout, HTTP/2 rapid reset.",
                "reason",
            ),
            paths: vec(
                "edge_paths_total",
                "Request paths normalized before matching, or redirected to their decoded form.",
                "action",
            ),
            headers: vec(
                "edge_headers_total",
                "Requests whose header names with an underscore were removed.",
                "action",
            ),
        }
    }

    /// Fresh vectors holding the counters now (a counter only goes up, so each scrape builds its own).
    fn fill(&self) -> Self {
        let now = Self::new();
        let s = crate::proxy::edge::STATS.snapshot();
        let r = &s.refused;
        for (status, v) in [
            ("400", r.bad_request),
            ("408", r.timeout),
            ("413", r.body_too_large),
            ("414", r.uri_too_long),
            ("431", r.headers_too_large),
            ("505", r.version),
        ] {
            now.refused.with_label_values(&[status]).inc_by(v);
        }
        for (reason, v) in [
            ("connection_limit", s.connections_refused),
            ("header_timeout", s.header_timeouts),
            ("idle_timeout", s.idle_timeouts),
            ("handshake_timeout", s.handshake_timeouts),
            ("h2_rapid_reset", s.h2_rapid_resets),
        ] {
            now.closed.with_label_values(&[reason]).inc_by(v);
        }
        now.paths
            .with_label_values(&["normalized"])
            .inc_by(s.paths_normalized);
        now.paths
            .with_label_values(&["redirected"])
            .inc_by(s.paths_redirected);
        now.headers
            .with_label_values(&["underscore_dropped"])
            .inc_by(s.underscore_headers_dropped);
        now
    }
}

impl prometheus::core::Collector for EdgeCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        let mut d = self.refused.desc();
        d.extend(self.closed.desc());
        d.extend(self.paths.desc());
        d.extend(self.headers.desc());
        d
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let now = self.fill();
        let mut out = now.refused.collect();
        out.extend(now.closed.collect());
        out.extend(now.paths.collect());
        out.extend(now.headers.collect());
        out
    }
}

#[cold]
fn unreachable_metric() -> ! {
    unreachable!("a fixed metric description is valid")
}

fn register<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    name: &'static str,
    c: C,
) -> Result<C, MetricsError> {
    registry
        .register(Box::new(c.clone()))
        .map_err(|source| MetricsError { name, source })?;
    Ok(c)
}

fn made<C>(name: &'static str, c: prometheus::Result<C>) -> Result<C, MetricsError> {
    c.map_err(|source| MetricsError { name, source })
}

impl Metrics {
    /// A registry with every control-plane metric registered: build info set, round counters at 0 for every
    /// result, `portcullis_routes` at 0 for every kind and state.
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new_custom(Some(PREFIX.to_string()), None).map_err(|source| {
            MetricsError {
                name: PREFIX,
                source,
            }
        })?;
        let help = "Always 1; the labels say which build is running.";
        let build_info = match GIT_COMMIT {
            Some(commit) => {
                let g = made(
                    "build_info",
                    IntGaugeVec::new(Opts::new("build_info", help), &["version", "commit"]),
                )?;
                g.with_label_values(&[env!("CARGO_PKG_VERSION"), commit])
                    .set(1);
                g
            }
            None => {
                let g = made(
                    "build_info",
                    IntGaugeVec::new(Opts::new("build_info", help), &["version"]),
                )?;
                g.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
                g
            }
        };
        register(&registry, "build_info", build_info)?;
        let config_rounds = register(
            &registry,
            "config_rounds_total",
            made(
                "config_rounds_total",
                IntCounterVec::new(
                    Opts::new(
                        "config_rounds_total",
                        "Configuration rounds (translate and publish), by result: ok (published), noop (nothing \
                         changed), error (the model did not compile; the previous one keeps serving).",
                    ),
                    &["result"],
                ),
            )?,
        )?;
        for r in [Round::Published, Round::Unchanged, Round::Refused] {
            config_rounds.with_label_values(&[r.label()]).reset();
        }
        let config_last_success = register(
            &registry,
            "config_last_success_timestamp_seconds",
            made(
                "config_last_success_timestamp_seconds",
                Gauge::new(
                    "config_last_success_timestamp_seconds",
                    "When the last ok or noop configuration round ended (seconds since the epoch); 0 before the \
                     first.",
                ),
            )?,
        )?;
        let routes = register(
            &registry,
            "routes",
            made(
                "routes",
                IntGaugeVec::new(
                    Opts::new(
                        "routes",
                        "Route objects of ours in the current configuration, by kind and state (accepted: at least \
                         part of it is served; rejected: nothing of it is).",
                    ),
                    &["kind", "state"],
                ),
            )?,
        )?;
        for kind in ROUTE_KINDS {
            for state in ["accepted", "rejected"] {
                routes.with_label_values(&[kind, state]).set(0);
            }
        }
        let certificate_expiry = register(
            &registry,
            "tls_certificate_expiry_timestamp_seconds",
            made(
                "tls_certificate_expiry_timestamp_seconds",
                GaugeVec::new(
                    Opts::new(
                        "tls_certificate_expiry_timestamp_seconds",
                        "notAfter of the leaf certificate of each TLS Secret the published configuration uses \
                         (seconds since the epoch).",
                    ),
                    &["namespace", "name"],
                ),
            )?,
        )?;
        let backend_endpoints = register(
            &registry,
            "backend_ready_endpoints",
            made(
                "backend_ready_endpoints",
                IntGaugeVec::new(
                    Opts::new(
                        "backend_ready_endpoints",
                        "Ready endpoints of each backend Service port the published configuration routes to. A \
                         Service port without ready endpoints is not listed (its routes answer 503).",
                    ),
                    &["namespace", "name", "port"],
                ),
            )?,
        )?;
        registry
            .register(Box::new(EdgeCollector::new()))
            .map_err(|source| MetricsError {
                name: "edge",
                source,
            })?;
        register(&registry, "open_connections", open_connections().clone())?;
        register(&registry, "udp_flows", udp().flows.clone())?;
        register(
            &registry,
            "udp_datagrams_dropped_total",
            udp().dropped.clone(),
        )?;
        Ok(Metrics {
            registry,
            config_rounds,
            config_last_success,
            routes,
            certificate_expiry,
            backend_endpoints,
            leader: OnceLock::new(),
            exported: Mutex::new(Exported::default()),
        })
    }

    /// Counts one configuration round; `ok` and `noop` rounds also set the last-success time to now.
    pub fn round(&self, round: Round) {
        self.config_rounds.with_label_values(&[round.label()]).inc();
        if round != Round::Refused {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            self.config_last_success.set(now);
        }
    }

    /// Sets `portcullis_routes` to `counts`.
    pub fn set_routes(&self, counts: &RouteCounts) {
        for (kind, (accepted, rejected)) in &counts.by_kind {
            self.routes
                .with_label_values(&[kind, "accepted"])
                .set(*accepted);
            self.routes
                .with_label_values(&[kind, "rejected"])
                .set(*rejected);
        }
    }

    /// Sets the gauges that follow the published model (certificate expiry, backend endpoints), removing the label
    /// sets of Secrets and backends that are no longer in it.
    pub fn set_model(&self, model: &Model) {
        let backends = backend_endpoints(model);
        let mut exported = self
            .exported
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let certs = certificate_expiry(model, &exported.certificates);
        for (ns, name) in exported.certificates.keys() {
            if !certs.contains_key(&(ns.clone(), name.clone())) {
                let _ = self.certificate_expiry.remove_label_values(&[ns, name]);
            }
        }
        for ((ns, name), (_, t)) in &certs {
            // Seconds since the epoch fit a f64 exactly for any real date.
            self.certificate_expiry
                .with_label_values(&[ns, name])
                .set(*t as f64);
        }
        exported.certificates = certs;
        for (ns, name, port) in &exported.backends {
            if !backends.contains_key(&(ns.clone(), name.clone(), *port)) {
                let _ = self
                    .backend_endpoints
                    .remove_label_values(&[ns, name, &port.to_string()]);
            }
        }
        for ((ns, name, port), n) in &backends {
            self.backend_endpoints
                .with_label_values(&[ns, name, &port.to_string()])
                .set(*n);
        }
        exported.backends = backends.into_keys().collect();
    }

    /// `portcullis_leader`, registered on first use (Kubernetes mode only: standalone mode has no Lease, and an
    /// always-0 gauge there would read as "not the leader").
    pub fn leader(&self) -> Option<&IntGauge> {
        if let Some(g) = self.leader.get() {
            return Some(g);
        }
        let g = IntGauge::new(
            "leader",
            "1 while this process holds the leader Lease and writes status, else 0.",
        )
        .ok()?;
        if self.leader.set(g.clone()).is_ok() {
            if let Err(e) = self.registry.register(Box::new(g)) {
                tracing::warn!(error = %e, "cannot register portcullis_leader");
            }
        }
        self.leader.get()
    }

    /// The registry every metric of this process is registered in (the request metrics join it).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Everything, in the Prometheus text format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Err(e) = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        Action, Backend, BackendGroup, Endpoint, Filter, HttpListener, HttpsListener, Listener,
        ListenerCertificate, ListenerKind, ListenerTls, Origin, Redacted, RouteMatch,
        ServiceBackend, Timeouts, VirtualHost, WeightedBackend,
    };
    use crate::source::ObjectRef;
    use crate::translate::status::{Condition, Named, ParentRef, RouteParentStatus, RouteStatus};

    fn text(m: &Metrics) -> String {
        String::from_utf8(m.render()).unwrap()
    }

    fn rule(kind: OriginKind, ns: &str, name: &str, backend: Backend) -> HttpRule {
        HttpRule {
            origin: Origin {
                kind,
                namespace: ns.into(),
                name: name.into(),
                rule: 0,
                rule_name: None,
                created: None,
            },
            matches: vec![RouteMatch::any()],
            filters: vec![],
            action: Action::Forward(BackendGroup {
                backends: vec![WeightedBackend {
                    weight: 1,
                    backend,
                    filters: vec![],
                }],
            }),
            timeouts: Timeouts::default(),
            retry: None,
            grpc: false,
            session: None,
        }
    }

    thread_local! {
        /// Backends made by `service` since the last `model` (which takes them).
        static BACKENDS: std::cell::RefCell<std::collections::BTreeMap<crate::model::BackendKey, ServiceBackend>> =
            Default::default();
    }

    fn service(ns: &str, name: &str, port: u16, endpoints: usize) -> Backend {
        let s = ServiceBackend {
            namespace: ns.into(),
            name: name.into(),
            port,
            endpoints: (0..endpoints)
                .map(|i| Endpoint {
                    ip: [10, 0, 0, u8::try_from(i).unwrap()].into(),
                    port: 8080,
                })
                .collect(),
            protocol: Default::default(),
            tls: None,
            policy: Default::default(),
        };
        let key = s.key("");
        BACKENDS.with(|b| b.borrow_mut().insert(key.clone(), s));
        Backend::Service(key)
    }

    fn model(rules: Vec<HttpRule>, certs: Vec<ListenerCertificate>) -> Model {
        Model {
            backends: BACKENDS.with(|b| std::mem::take(&mut *b.borrow_mut())),
            listeners: vec![Listener {
                address: None,
                port: 443,
                transport: Default::default(),
                kind: {
                    let http = HttpListener {
                        virtual_hosts: vec![VirtualHost {
                            listener_hostname: None,
                            hostname: crate::model::HostPattern::ingress("a.example").unwrap(),
                            rules,
                        }],
                        default_backend: None,
                    };
                    if certs.is_empty() {
                        ListenerKind::Http(http)
                    } else {
                        ListenerKind::Https(HttpsListener {
                            tls: ListenerTls {
                                certificates: certs,
                                client_validation: None,
                            },
                            http,
                        })
                    }
                },
            }],
        }
    }

    fn cert_pem(not_after: (i32, u8, u8)) -> String {
        let mut params = rcgen::CertificateParams::new(vec!["a.example".into()]).unwrap();
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn every_name_has_the_prefix_and_rounds_start_at_zero() {
        let m = Metrics::new().unwrap();
        let t = text(&m);
        for line in t.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("portcullis_"), "{line}");
        }
        assert!(t.contains("portcullis_build_info{version=\""), "{t}");
        for r in ["ok", "noop", "error"] {
            assert!(
                t.contains(&format!(
                    "portcullis_config_rounds_total{{result=\"{r}\"}} 0"
                )),
                "{t}"
            );
        }
        assert!(t.contains("portcullis_routes{kind=\"HTTPRoute\",state=\"rejected\"} 0"));
        assert!(
            !t.contains("portcullis_leader"),
            "leader only in Kubernetes mode"
        );
        m.leader().unwrap().set(1);
        assert!(text(&m).contains("portcullis_leader 1"));
    }

    #[test]
    fn rounds_count_by_result_and_success_time_moves() {
        let m = Metrics::new().unwrap();
        m.round(Round::Refused);
        assert!(text(&m).contains("portcullis_config_last_success_timestamp_seconds 0"));
        m.round(Round::Published);
        m.round(Round::Unchanged);
        m.round(Round::Unchanged);
        let t = text(&m);
        assert!(t.contains("portcullis_config_rounds_total{result=\"ok\"} 1"));
        assert!(t.contains("portcullis_config_rounds_total{result=\"noop\"} 2"));
        assert!(t.contains("portcullis_config_rounds_total{result=\"error\"} 1"));
        assert!(!t.contains("portcullis_config_last_success_timestamp_seconds 0\n"));
    }

    #[test]
    fn backends_and_certificates_follow_the_model() {
        let m = Metrics::new().unwrap();
        let pem = cert_pem((2031, 5, 17));
        let cert = ListenerCertificate {
            hostname: crate::model::HostPattern::ingress("a.example").unwrap(),
            source: "Secret shop/shop-tls".into(),
            cert_pem: pem.clone(),
            key_pem: Redacted::new(""),
        };
        let mut mirrored = rule(
            OriginKind::HttpRoute,
            "shop",
            "api",
            service("shop", "api", 80, 2),
        );
        mirrored
            .filters
            .push(Filter::RequestMirror(crate::model::Mirror {
                backend: service("shop", "shadow", 8080, 1),
                per_million: 1_000_000,
            }));
        let first = model(
            vec![
                rule(
                    OriginKind::Ingress,
                    "shop",
                    "web",
                    service("shop", "web", 80, 3),
                ),
                mirrored,
                rule(
                    OriginKind::Ingress,
                    "shop",
                    "down",
                    Backend::Invalid {
                        status: 503,
                        reason: "no ready endpoints".into(),
                    },
                ),
            ],
            vec![cert.clone(), cert],
        );
        m.set_model(&first);
        let t = text(&m);
        assert!(t.contains(
            "portcullis_backend_ready_endpoints{name=\"web\",namespace=\"shop\",port=\"80\"} 3"
        ));
        assert!(t.contains(
            "portcullis_backend_ready_endpoints{name=\"shadow\",namespace=\"shop\",port=\"8080\"} 1"
        ));
        assert!(!t.contains("name=\"down\""));
        // 2031-05-17T00:00:00Z
        assert!(
            t.contains(
                "portcullis_tls_certificate_expiry_timestamp_seconds{name=\"shop-tls\",namespace=\"shop\"} 1936742400"
            ),
            "{t}"
        );

        // The Secret rotated: same name, a new certificate, a new expiry (not the remembered one).
        let rotated = ListenerCertificate {
            cert_pem: cert_pem((2032, 1, 1)),
            ..first.listeners[0].tls().unwrap().certificates[0].clone()
        };
        let mut renewed = first.clone();
        match &mut renewed.listeners[0].kind {
            ListenerKind::Https(h) => h.tls.certificates = vec![rotated],
            _ => panic!("the test model has an HTTPS listener"),
        }
        m.set_model(&renewed);
        // 2032-01-01T00:00:00Z
        assert!(text(&m).contains(
            "portcullis_tls_certificate_expiry_timestamp_seconds{name=\"shop-tls\",namespace=\"shop\"} 1956528000"
        ));

        // The next model drops the certificate and the web backend: their series go.
        let second = model(
            vec![rule(
                OriginKind::HttpRoute,
                "shop",
                "api",
                service("shop", "api", 80, 1),
            )],
            vec![],
        );
        m.set_model(&second);
        let t = text(&m);
        assert!(!t.contains("shop-tls"), "{t}");
        assert!(!t.contains("name=\"web\""), "{t}");
        assert!(t.contains(
            "portcullis_backend_ready_endpoints{name=\"api\",namespace=\"shop\",port=\"80\"} 1"
        ));
    }

    #[test]
    fn route_counts_use_status_for_gateway_api_and_the_table_for_ingress() {
        let accepted = |ok: bool| RouteParentStatus {
            parent_ref: ParentRef {
                group: None,
                kind: None,
                name: "gw".into(),
                namespace: None,
                section_name: None,
                port: None,
            },
            controller_name: "portcullis.dev/gateway-controller".into(),
            conditions: vec![Condition::new("Accepted", ok, "x", "", None)],
        };
        let route = |kind: &str, name: &str, parents: Vec<RouteParentStatus>| Named {
            kind: Some(kind.into()),
            namespace: Some("shop".into()),
            name: name.into(),
            status: RouteStatus { parents },
        };
        let statuses = Statuses {
            routes: vec![
                route("HTTPRoute", "a", vec![accepted(false), accepted(true)]),
                route("HTTPRoute", "b", vec![accepted(false)]),
                route("GRPCRoute", "c", vec![accepted(false)]),
                route("HTTPRoute", "no-parent-of-ours", vec![]),
            ],
            ..Default::default()
        };
        let error = |name: &str| Diagnostic {
            severity: Severity::Error,
            object: ObjectRef {
                kind: "Ingress".into(),
                namespace: Some("shop".into()),
                name: name.into(),
            },
            message: "bad".into(),
            annotation: None,
        };
        let model = model(
            vec![
                rule(
                    OriginKind::Ingress,
                    "shop",
                    "web",
                    service("shop", "web", 80, 1),
                ),
                rule(
                    OriginKind::Ingress,
                    "shop",
                    "web",
                    service("shop", "web", 80, 1),
                ),
                rule(
                    OriginKind::Ingress,
                    "shop",
                    "half",
                    service("shop", "web", 80, 1),
                ),
                rule(
                    OriginKind::HttpRoute,
                    "shop",
                    "a",
                    service("shop", "web", 80, 1),
                ),
            ],
            vec![],
        );
        let counts = RouteCounts::new(&model, &[error("half"), error("broken")], &statuses);
        assert_eq!(counts.by_kind["HTTPRoute"], (1, 1));
        assert_eq!(counts.by_kind["GRPCRoute"], (0, 1));
        assert_eq!(counts.by_kind["Ingress"], (2, 1));
        assert_eq!(counts.by_kind["UDPRoute"], (0, 0));
        let m = Metrics::new().unwrap();
        m.set_routes(&counts);
        let t = text(&m);
        assert!(t.contains("portcullis_routes{kind=\"Ingress\",state=\"accepted\"} 2"));
        assert!(t.contains("portcullis_routes{kind=\"Ingress\",state=\"rejected\"} 1"));
    }

    #[test]
    fn secret_names_parse_exactly() {
        assert_eq!(
            secret_name("Secret shop/tls"),
            Some(("shop".into(), "tls".into()))
        );
        assert_eq!(secret_name("Secret shop"), None);
        assert_eq!(secret_name("ConfigMap shop/tls"), None);
        assert_eq!(secret_name("Secret /tls"), None);
        assert_eq!(leaf_not_after("not a certificate"), None);
    }
}
