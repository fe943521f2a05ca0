//! Assembles translated rules into a [`Model`]: listeners by port, virtual hosts by (listener hostname, hostname).

use super::{Diagnostics, Options};
use crate::model::precedence::MatchKey;
use crate::model::{
    Action, Backend, BackendKey, ClientValidation, Filter, HostPattern, HttpListener, HttpRule,
    HttpsListener, L4Listener, L4Route, Listener, ListenerCertificate, ListenerKey, ListenerKind,
    ListenerTls, Model, OriginKind, Protocol, ServiceBackend, TlsListener, TlsRoute, VirtualHost,
};
use crate::source::ObjectRef;
use std::collections::{BTreeMap, HashMap, HashSet};

type VhostKey = (Option<HostPattern>, HostPattern);

struct ListenerBuilder {
    protocol: Protocol,
    tls_routes: Vec<TlsRoute>,
    l4_routes: Vec<L4Route>,
    vhosts: BTreeMap<VhostKey, Vec<HttpRule>>,
    default_backend: Option<HttpRule>,
    certificates: Vec<ListenerCertificate>,
    client_validation: Option<ClientValidation>,
}

/// Collects rules per listener and host while the API translators run.
pub(crate) struct ModelBuilder {
    listeners: BTreeMap<ListenerKey, ListenerBuilder>,
}

impl ModelBuilder {
    /// A builder that already has the Ingress HTTP listener: the HTTP port is always served (404 when empty), as
    /// an ingress controller's is.
    pub(crate) fn new(opts: &Options) -> Self {
        let mut b = ModelBuilder {
            listeners: BTreeMap::new(),
        };
        // A fresh builder has no listener that could conflict.
        let _ = b.ensure_listener(ListenerKey::tcp(opts.http_port), Protocol::Http);
        b
    }

    /// Makes sure a listener exists at `key`. Returns the protocol it already had when that differs (a conflict
    /// the caller must report); the existing protocol is kept.
    pub(crate) fn ensure_listener(
        &mut self,
        key: ListenerKey,
        protocol: Protocol,
    ) -> Result<(), Protocol> {
        let l = self
            .listeners
            .entry(key)
            .or_insert_with(|| ListenerBuilder {
                protocol,
                tls_routes: Vec::new(),
                l4_routes: Vec::new(),
                vhosts: BTreeMap::new(),
                default_backend: None,
                certificates: Vec::new(),
                client_validation: None,
            });
        if l.protocol == protocol {
            Ok(())
        } else {
            Err(l.protocol)
        }
    }

    /// Adds a rule for `hostname` at `key` (the listener must exist).
    pub(crate) fn add_rule(
        &mut self,
        key: ListenerKey,
        listener_hostname: Option<HostPattern>,
        hostname: HostPattern,
        rule: HttpRule,
    ) {
        if let Some(l) = self.listeners.get_mut(&key) {
            l.vhosts
                .entry((listener_hostname, hostname))
                .or_default()
                .push(rule);
        }
    }

    /// Adds a TLS passthrough route at `key` (the listener must exist).
    pub(crate) fn add_tls_route(&mut self, key: ListenerKey, route: TlsRoute) {
        if let Some(l) = self.listeners.get_mut(&key) {
            l.tls_routes.push(route);
        }
    }

    /// Adds a TCPRoute or UDPRoute rule at `key` (the listener must exist).
    pub(crate) fn add_l4_route(&mut self, key: ListenerKey, route: L4Route) {
        if let Some(l) = self.listeners.get_mut(&key) {
            l.l4_routes.push(route);
        }
    }

    /// Adds a certificate to the TLS listener at `key`; the first certificate for a hostname wins.
    pub(crate) fn add_certificate(&mut self, key: ListenerKey, cert: ListenerCertificate) {
        if let Some(l) = self.listeners.get_mut(&key) {
            if !l.certificates.iter().any(|c| c.hostname == cert.hostname) {
                l.certificates.push(cert);
            }
        }
    }

    /// Sets client-certificate validation on the TLS listener at `key` (the first setting wins).
    pub(crate) fn set_client_validation(&mut self, key: ListenerKey, v: ClientValidation) {
        if let Some(l) = self.listeners.get_mut(&key) {
            if l.client_validation.is_none() {
                l.client_validation = Some(v);
            }
        }
    }

    /// Sets the default backend at `key`; returns the one already set (which keeps its place) on conflict.
    pub(crate) fn set_default_backend(
        &mut self,
        key: ListenerKey,
        rule: HttpRule,
    ) -> Result<(), &HttpRule> {
        let Some(l) = self.listeners.get_mut(&key) else {
            return Ok(());
        };
        match l.default_backend {
            Some(ref existing) => Err(existing),
            None => {
                l.default_backend = Some(rule);
                Ok(())
            }
        }
    }

    /// Finishes the model, reporting Ingress paths that another rule makes unreachable. TLS listeners that ended
    /// up without a certificate are dropped (they could not complete a handshake).
    pub(crate) fn finish(
        self,
        diags: &mut Diagnostics,
        backends: BTreeMap<BackendKey, ServiceBackend>,
    ) -> Model {
        let mut listeners = Vec::with_capacity(self.listeners.len());
        for (key, l) in self.listeners {
            report_shadowed_ingress_paths(&l.vhosts, diags);
            let tls = if l.certificates.is_empty() {
                None
            } else {
                let mut certificates = l.certificates;
                // Most specific first; a catch-all certificate, if any, goes first of all so that it answers
                // clients without SNI.
                certificates.sort_by(|a, b| {
                    let any = |c: &ListenerCertificate| c.hostname != HostPattern::Any;
                    any(a)
                        .cmp(&any(b))
                        .then_with(|| a.hostname.cmp(&b.hostname))
                });
                Some(ListenerTls {
                    certificates,
                    client_validation: l.client_validation,
                })
            };
            let http = HttpListener {
                virtual_hosts: l
                    .vhosts
                    .into_iter()
                    .map(|((listener_hostname, hostname), rules)| VirtualHost {
                        listener_hostname,
                        hostname,
                        rules,
                    })
                    .collect(),
                default_backend: l.default_backend,
            };
            let mut l4_routes = l.l4_routes;
            // The oldest route first (it takes the port's traffic), then by namespace, name and rule.
            l4_routes.sort_by(|a, b| {
                let k = |r: &L4Route| {
                    (
                        r.origin.created.is_none(),
                        r.origin.created,
                        r.origin.namespace.clone(),
                        r.origin.name.clone(),
                        r.origin.rule,
                    )
                };
                k(a).cmp(&k(b))
            });
            report_unserved_l4_routes(key, &l4_routes, diags);
            let kind = match l.protocol {
                Protocol::Http => ListenerKind::Http(http),
                // An HTTPS listener without a certificate could not complete a handshake: dropped.
                Protocol::Https => match tls {
                    Some(tls) => ListenerKind::Https(HttpsListener { tls, http }),
                    None => continue,
                },
                Protocol::Tls => ListenerKind::Tls(TlsListener {
                    tls,
                    routes: l.tls_routes,
                }),
                Protocol::Tcp => ListenerKind::Tcp(L4Listener { routes: l4_routes }),
                Protocol::Udp => ListenerKind::Udp(L4Listener { routes: l4_routes }),
            };
            listeners.push(Listener {
                address: key.address,
                port: key.port,
                transport: key.transport,
                kind,
            });
        }
        let mut model = Model {
            listeners,
            backends,
        };
        retain_referenced_backends(&mut model);
        model
    }
}

/// A TCP or UDP port serves its oldest route; the routes attached after it are accepted but get no traffic.
fn report_unserved_l4_routes(key: ListenerKey, routes: &[L4Route], diags: &mut Diagnostics) {
    let Some(first) = routes.first() else {
        return;
    };
    for r in routes.iter().skip(1) {
        if r.origin.namespace == first.origin.namespace && r.origin.name == first.origin.name {
            continue;
        }
        let object = ObjectRef {
            kind: r.origin.kind.as_str().into(),
            namespace: Some(r.origin.namespace.clone()),
            name: r.origin.name.clone(),
        };
        diags.warning(
            &object,
            format!(
                "port {} is served by the older {}; this route gets no traffic there",
                key.port, first.origin
            ),
        );
    }
}

/// Drops backends no rule names (a reference resolved once and then replaced by a variant, such as a Gateway's
/// client-certificate variant).
fn retain_referenced_backends(model: &mut Model) {
    fn note<'m>(b: &'m Backend, used: &mut HashSet<&'m BackendKey>) {
        if let Backend::Service(k) = b {
            used.insert(k);
        }
    }
    fn note_filters<'m>(filters: &'m [Filter], used: &mut HashSet<&'m BackendKey>) {
        for f in filters {
            match f {
                Filter::RequestMirror(m) => note(&m.backend, used),
                Filter::CustomErrors(c) => note(&c.backend, used),
                _ => {}
            }
        }
    }
    fn note_rule<'m>(rule: &'m HttpRule, used: &mut HashSet<&'m BackendKey>) {
        note_filters(&rule.filters, used);
        if let Action::Forward(g) = &rule.action {
            for b in &g.backends {
                note(&b.backend, used);
                note_filters(&b.filters, used);
            }
        }
    }
    let mut used = HashSet::new();
    for l in &model.listeners {
        match &l.kind {
            ListenerKind::Http(h) | ListenerKind::Https(HttpsListener { http: h, .. }) => {
                for vh in &h.virtual_hosts {
                    for rule in &vh.rules {
                        note_rule(rule, &mut used);
                    }
                }
                if let Some(d) = &h.default_backend {
                    note_rule(d, &mut used);
                }
            }
            ListenerKind::Tls(t) => {
                for r in &t.routes {
                    for b in &r.backends.backends {
                        note(&b.backend, &mut used);
                    }
                }
            }
            ListenerKind::Tcp(t) | ListenerKind::Udp(t) => {
                for r in &t.routes {
                    for b in &r.backends.backends {
                        note(&b.backend, &mut used);
                    }
                }
            }
        }
    }
    let used: HashSet<BackendKey> = used.into_iter().cloned().collect();
    model.backends.retain(|k, _| used.contains(k));
}

/// An Ingress path is unreachable when a rule for the same hostname has exactly the same match and wins the tie:
/// any Gateway API rule (so a team can move one path at a time to an HTTPRoute), or an older Ingress.
fn report_shadowed_ingress_paths(
    vhosts: &BTreeMap<VhostKey, Vec<HttpRule>>,
    diags: &mut Diagnostics,
) {
    // For every hostname: the winning rule for each distinct match.
    let mut winners: HashMap<(&HostPattern, MatchKey<'_>), &HttpRule> = HashMap::new();
    let mut all: Vec<(&HostPattern, MatchKey<'_>, &HttpRule)> = Vec::new();
    for ((_, host), rules) in vhosts {
        for rule in rules {
            for m in &rule.matches {
                let key = MatchKey(m);
                all.push((host, key, rule));
                winners
                    .entry((host, key))
                    .and_modify(|w| {
                        if crate::model::precedence::tie_winner(rule, w) {
                            *w = rule;
                        }
                    })
                    .or_insert(rule);
            }
        }
    }
    for (host, key, rule) in all {
        if rule.origin.kind != OriginKind::Ingress {
            continue;
        }
        let Some(winner) = winners.get(&(host, key)) else {
            continue;
        };
        if std::ptr::eq(*winner, rule) {
            continue;
        }
        let object = ObjectRef {
            kind: "Ingress".into(),
            namespace: Some(rule.origin.namespace.clone()),
            name: rule.origin.name.clone(),
        };
        diags.warning(
            &object,
            format!(
                "path {} on host {} is not served: {} routes exactly the same match and takes precedence",
                key.0.path,
                host,
                winner.origin
            ),
        );
    }
}
