//! Gateway API GatewayClass, Gateway, ListenerSet and listeners: which are ours, what each listener serves, which
//! routes it accepts, the listener and Gateway status, and the listeners' places in the model (address, port,
//! protocol, certificates). Route attachment is in `routes.rs`.

use super::builder::ModelBuilder;
use super::refs::Resolver;
use super::shared_address::{by_precedence, Place, SharedSockets};
use super::status::{
    Condition, GatewayClassStatus, GatewayStatus, GatewayStatusAddress, ListenerStatus, Named,
    RouteGroupKind, Statuses, SupportedFeature,
};
use super::{recast, Diagnostics, Options};
use crate::k8s::gw::types::{
    GatewayAllowedListenersNamespacesFrom as ListenersFrom, GatewayListeners,
    GatewayListenersAllowedRoutesNamespacesFrom as From,
    GatewayListenersAllowedRoutesNamespacesSelector as Selector,
    GatewayListenersTlsMode as TlsMode,
};
use crate::k8s::gw::{Gateway, GatewayClass, ListenerSet};
use crate::k8s::GATEWAY_GROUP;
use crate::model::ListenerKey;
use crate::model::{
    ClientCertificate, ClientValidation, HostPattern, ListenerCertificate, Protocol,
    TlsMode as Mode, Transport,
};
use crate::source::{Input, ObjectRef};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// Features we claim in `GatewayClass.status.supportedFeatures` (GEP-2162): exactly those whose conformance cases
/// pass (docs/conformance.md).
pub(crate) const SUPPORTED_FEATURES: &[&str] = &[
    "BackendTLSPolicy",
    "BackendTLSPolicySANValidation",
    "Gateway",
    "GatewayAddressEmpty",
    "GatewayBackendClientCertificate",
    "GatewayFrontendClientCertificateValidation",
    "GatewayFrontendClientCertificateValidationInsecureFallback",
    "GatewayHTTPListenerIsolation",
    "GatewayHTTPSListenerDetectMisdirectedRequests",
    "GatewayInfrastructurePropagation",
    "GatewayPort8080",
    "GatewayStaticAddresses",
    "GRPCRoute",
    "GRPCRouteNamedRouteRule",
    "GRPCRouteRequestHeaderModifier",
    "HTTPRoute",
    "HTTPRoute303RedirectStatusCode",
    "HTTPRoute307RedirectStatusCode",
    "HTTPRoute308RedirectStatusCode",
    "HTTPRouteBackendProtocolH2C",
    "HTTPRouteBackendProtocolWebSocket",
    "HTTPRouteBackendRequestHeaderModification",
    "HTTPRouteBackendRequestRedirect",
    "HTTPRouteBackendTimeout",
    "HTTPRouteBackendURLRewrite",
    "HTTPRouteCORS",
    "HTTPRouteDestinationPortMatching",
    "HTTPRouteHostRewrite",
    "HTTPRouteMethodMatching",
    "HTTPRouteNamedRouteRule",
    "HTTPRouteParentRefPort",
    "HTTPRoutePathRedirect",
    "HTTPRoutePathRewrite",
    "HTTPRoutePortRedirect",
    "HTTPRouteQueryParamMatching",
    "HTTPRouteRequestMirror",
    "HTTPRouteRequestMultipleMirrors",
    "HTTPRouteRequestPercentageMirror",
    "HTTPRouteRequestTimeout",
    "HTTPRouteResponseHeaderModification",
    "HTTPRouteRetry",
    "HTTPRouteRetryBackendTimeout",
    "HTTPRouteRetryConnectionError",
    "HTTPRouteSchemeRedirect",
    "ListenerSet",
    "ReferenceGrant",
    "TCPRoute",
    "TLSRoute",
    "TLSRouteModeMixed",
    "TLSRouteModeTerminate",
    "UDPRoute",
];

/// What a parent reference can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ParentKind {
    Gateway,
    ListenerSet,
}

impl ParentKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ParentKind::Gateway => "Gateway",
            ParentKind::ListenerSet => "ListenerSet",
        }
    }
}

/// A Gateway or ListenerSet of ours: something a route's parentRef can name.
#[derive(Debug)]
pub(crate) struct Parent {
    pub kind: ParentKind,
    pub ns: String,
    pub name: String,
    /// Listeners (indices into [`Gateways::listeners`]).
    pub listeners: Vec<usize>,
    /// `false` for a ListenerSet its Gateway does not allow: routes cannot attach through it.
    pub accepted: bool,
}

/// `allowedRoutes.namespaces`.
#[derive(Debug, Clone)]
pub(crate) enum AllowedNamespaces {
    Same,
    All,
    Selector(Selector),
}

/// One listener of a Gateway or ListenerSet of ours, as routes see it.
#[derive(Debug)]
pub(crate) struct GatewayListener {
    /// The Gateway (namespace, name) it belongs to (for a ListenerSet listener, the ListenerSet's Gateway).
    pub gateway: (String, String),
    /// The client certificate the Gateway presents to TLS backends (`spec.tls.backend.clientCertificateRef`).
    pub backend_client_cert: Option<ClientCertificate>,
    /// Namespace of the Gateway or ListenerSet that declares it (allowedRoutes `Same` means this one).
    pub ns: String,
    pub name: String,
    pub port: u16,
    pub hostname: HostPattern,
    pub from: AllowedNamespaces,
    /// Route kinds (group, kind) that may attach.
    pub kinds: Vec<(String, String)>,
    /// Where it is served; empty when it is not programmed (routes may still attach, but no traffic flows).
    pub keys: Vec<ListenerKey>,
    /// For TLS listeners: whether routes attached here are passed through or terminated.
    pub tls_mode: Option<Mode>,
    /// Accepted and not in conflict: routes attach (and count in attachedRoutes).
    pub attachable: bool,
    status: StatusSlot,
}

#[derive(Debug, Clone, Copy)]
struct StatusSlot {
    listener_set: bool,
    object: usize,
    listener: usize,
}

impl GatewayListener {
    /// May a route of `kind` in namespace `route_ns` attach here?
    pub(crate) fn allows_kind(&self, kind: (&str, &str)) -> bool {
        self.kinds.iter().any(|(g, k)| g == kind.0 && k == kind.1)
    }

    /// May a route in namespace `route_ns` attach here?
    pub(crate) fn allows_namespace(&self, route_ns: &str, refs: &Resolver<'_>) -> bool {
        match &self.from {
            AllowedNamespaces::Same => route_ns == self.ns,
            AllowedNamespaces::All => true,
            AllowedNamespaces::Selector(sel) => {
                selector_matches(sel, &refs.namespace_labels(route_ns))
            }
        }
    }
}

/// Everything the Gateway side produced, for route attachment and status.
#[derive(Debug, Default)]
pub(crate) struct Gateways {
    pub parents: Vec<Parent>,
    pub listeners: Vec<GatewayListener>,
    gateway_status: Vec<Named<GatewayStatus>>,
    listener_set_status: Vec<Named<GatewayStatus>>,
    /// Per listener: the routes attached to it (kind, namespace, name).
    attached: Vec<BTreeSet<(String, String, String)>>,
    /// The sockets the listeners of the Gateways translated so far hold.
    shared: SharedSockets,
    /// Listeners where an HTTPRoute or GRPCRoute lost the hostname rule between the two kinds.
    pub kind_conflicts: super::crosskind::KindConflicts,
}

impl Gateways {
    /// The parent a route's parentRef names, if it is one of ours.
    pub(crate) fn parent(&self, kind: ParentKind, ns: &str, name: &str) -> Option<&Parent> {
        self.parents
            .iter()
            .find(|p| p.kind == kind && p.ns == ns && p.name == name)
    }

    /// Records that a route is attached to listener `index` (counted once per route).
    pub(crate) fn record_attachment(&mut self, index: usize, route: (&str, &str, &str)) {
        if let Some(set) = self.attached.get_mut(index) {
            set.insert((
                route.0.to_string(),
                route.1.to_string(),
                route.2.to_string(),
            ));
        }
    }

    /// Writes attachedRoutes into the listener statuses and hands the statuses over.
    pub(crate) fn finish(mut self, statuses: &mut Statuses) {
        for (i, l) in self.listeners.iter().enumerate() {
            let n = self.attached.get(i).map_or(0, |s| s.len() as i32);
            let list = if l.status.listener_set {
                &mut self.listener_set_status
            } else {
                &mut self.gateway_status
            };
            if let Some(ls) = list
                .get_mut(l.status.object)
                .and_then(|o| o.status.listeners.get_mut(l.status.listener))
            {
                ls.attached_routes = n;
            }
        }
        statuses.gateways.append(&mut self.gateway_status);
        statuses.listener_sets.append(&mut self.listener_set_status);
    }
}

/// Kubernetes label selector semantics: every matchLabels pair and every expression must hold.
pub(crate) fn selector_matches(sel: &Selector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or(&[]);
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

fn class_is_ours(class: &GatewayClass, opts: &Options) -> bool {
    class.spec.controller_name == opts.gateway_controller
}

/// Our Gateways: those whose `gatewayClassName` names a GatewayClass of ours.
pub(crate) fn our_gateways<'a>(input: &'a Input, opts: &Options) -> Vec<&'a Gateway> {
    input
        .gateways
        .iter()
        .filter(|g| {
            input.gateway_classes.iter().any(|c| {
                c.metadata.name.as_deref() == Some(g.spec.gateway_class_name.as_str())
                    && class_is_ours(c, opts)
            })
        })
        .map(|g| g.as_ref())
        .collect()
}

/// GatewayClass status for our classes.
pub(crate) fn class_statuses(input: &Input, opts: &Options, statuses: &mut Statuses) {
    for c in &input.gateway_classes {
        if !class_is_ours(c, opts) {
            continue;
        }
        let generation = c.metadata.generation;
        let accepted = if c.spec.parameters_ref.is_some() {
            Condition::new(
                "Accepted",
                false,
                "InvalidParameters",
                "parametersRef is not supported by portcullis",
                generation,
            )
        } else {
            Condition::new(
                "Accepted",
                true,
                "Accepted",
                "Accepted by portcullis",
                generation,
            )
        };
        statuses.gateway_classes.push(Named {
            kind: None,
            namespace: None,
            name: c.metadata.name.clone().unwrap_or_default(),
            status: GatewayClassStatus {
                conditions: vec![accepted],
                supported_features: {
                    let mut f: Vec<SupportedFeature> = SUPPORTED_FEATURES
                        .iter()
                        .map(|f| SupportedFeature {
                            name: (*f).to_string(),
                        })
                        .collect();
                    f.sort_by(|a, b| a.name.cmp(&b.name));
                    f
                },
            },
        });
    }
}

/// The route kinds a listener of this protocol accepts.
fn supported_kinds(protocol: Protocol) -> Vec<(String, String)> {
    match protocol {
        Protocol::Http | Protocol::Https => vec![
            (GATEWAY_GROUP.to_string(), "HTTPRoute".to_string()),
            (GATEWAY_GROUP.to_string(), "GRPCRoute".to_string()),
        ],
        Protocol::Tls => vec![(GATEWAY_GROUP.to_string(), "TLSRoute".to_string())],
        Protocol::Tcp => vec![(GATEWAY_GROUP.to_string(), "TCPRoute".to_string())],
        Protocol::Udp => vec![(GATEWAY_GROUP.to_string(), "UDPRoute".to_string())],
    }
}

/// A listener before validation: from a Gateway, or from a ListenerSet (recast to the Gateway listener type,
/// which has the same shape).
struct Candidate {
    parent: usize,
    ns: String,
    spec: GatewayListeners,
    slot: StatusSlot,
}

/// Conditions being gathered for one listener.
struct ListenerConds {
    accepted: Option<(&'static str, String)>,
    resolved: Option<(&'static str, String)>,
    conflicted: Option<(&'static str, String)>,
    programmed: bool,
}

impl ListenerConds {
    fn new() -> Self {
        ListenerConds {
            accepted: None,
            resolved: None,
            conflicted: None,
            programmed: true,
        }
    }

    fn conditions(&self, generation: Option<i64>) -> Vec<Condition> {
        let g = generation;
        let mut out = Vec::with_capacity(4);
        // A conflicted listener is not accepted either; both conditions carry the conflict's reason.
        out.push(match (&self.accepted, &self.conflicted) {
            (Some((r, m)), _) | (None, Some((r, m))) => {
                Condition::new("Accepted", false, r, m.clone(), g)
            }
            (None, None) => Condition::new("Accepted", true, "Accepted", "listener accepted", g),
        });
        out.push(match &self.conflicted {
            None => Condition::new("Conflicted", false, "NoConflicts", "no conflicts", g),
            Some((r, m)) => Condition::new("Conflicted", true, r, m.clone(), g),
        });
        out.push(match (&self.accepted, &self.conflicted) {
            (Some((r, m)), _) | (None, Some((r, m))) => {
                Condition::new("Programmed", false, r, m.clone(), g)
            }
            (None, None) if self.programmed => {
                Condition::new("Programmed", true, "Programmed", "listener programmed", g)
            }
            (None, None) => Condition::new(
                "Programmed",
                false,
                "Invalid",
                "listener is not programmed: its references do not resolve",
                g,
            ),
        });
        out.push(match &self.resolved {
            None => Condition::new(
                "ResolvedRefs",
                true,
                "ResolvedRefs",
                "all references resolved",
                g,
            ),
            Some((r, m)) => Condition::new("ResolvedRefs", false, r, m.clone(), g),
        });
        out
    }

    /// Routes may attach (the listener is accepted and not in conflict), even if it cannot be programmed.
    fn attachable(&self) -> bool {
        self.accepted.is_none() && self.conflicted.is_none()
    }

    /// Traffic flows: attachable and programmed.
    fn ready(&self) -> bool {
        self.programmed && self.attachable()
    }
}

/// The Gateway side of translation: listeners into the model, statuses, and what routes attach to.
pub(crate) fn translate(
    input: &Input,
    opts: &Options,
    refs: &Resolver<'_>,
    model: &mut ModelBuilder,
    diags: &mut Diagnostics,
) -> Gateways {
    let mut out = Gateways::default();
    // Older Gateways first: of two listeners of different Gateways that collide on a shared socket, the older
    // one keeps it (`shared_address`).
    let mut ours = our_gateways(input, opts);
    by_precedence(&mut ours);
    for gw in &ours {
        gateway(gw, input, opts, refs, model, diags, &mut out);
    }
    out.attached = vec![BTreeSet::new(); out.listeners.len()];
    out
}

fn gateway(
    gw: &Gateway,
    input: &Input,
    opts: &Options,
    refs: &Resolver<'_>,
    model: &mut ModelBuilder,
    diags: &mut Diagnostics,
    out: &mut Gateways,
) {
    let object = ObjectRef::new("Gateway", &gw.metadata);
    let ns = gw
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = gw.metadata.name.clone().unwrap_or_default();
    let generation = gw.metadata.generation;

    let (ips, unsupported_address) = gateway_addresses(gw);
    let keys_for = |port: u16, transport: Transport| -> Vec<ListenerKey> {
        if ips.is_empty() {
            vec![ListenerKey {
                address: None,
                port,
                transport,
            }]
        } else {
            ips.iter()
                .map(|ip| ListenerKey {
                    address: Some(*ip),
                    port,
                    transport,
                })
                .collect()
        }
    };

    let (backend_client_cert, backend_cert_problem) =
        match backend_client_certificate(gw, &ns, refs, &object, diags) {
            Ok(c) => (c, None),
            Err(p) => (None, Some(p)),
        };

    let gw_index = out.parents.len();
    out.parents.push(Parent {
        kind: ParentKind::Gateway,
        ns: ns.clone(),
        name: name.clone(),
        listeners: Vec::new(),
        accepted: true,
    });
    let gw_status_index = out.gateway_status.len();
    out.gateway_status.push(Named {
        kind: None,
        namespace: Some(ns.clone()),
        name: name.clone(),
        status: GatewayStatus::default(),
    });

    let mut candidates: Vec<Candidate> = gw
        .spec
        .listeners
        .iter()
        .enumerate()
        .map(|(i, l)| Candidate {
            parent: gw_index,
            ns: ns.clone(),
            spec: l.clone(),
            slot: StatusSlot {
                listener_set: false,
                object: gw_status_index,
                listener: i,
            },
        })
        .collect();

    // ListenerSets that name this Gateway, oldest first (older ones win conflicts).
    let mut sets: Vec<&ListenerSet> = input
        .listener_sets
        .iter()
        .map(|l| l.as_ref())
        .filter(|ls| {
            let p = &ls.spec.parent_ref;
            let ls_ns = ls.metadata.namespace.as_deref().unwrap_or("default");
            p.group.as_deref().unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP
                && p.kind.as_deref().unwrap_or("Gateway") == "Gateway"
                && p.name == name
                && p.namespace.as_deref().unwrap_or(ls_ns) == ns
        })
        .collect();
    sets.sort_by_key(|ls| {
        (
            super::created(&ls.metadata).map_or((1, 0), |t| (0, t)),
            ls.metadata.namespace.clone(),
            ls.metadata.name.clone(),
        )
    });
    let mut set_outcomes: Vec<(usize, bool)> = Vec::new();
    for ls in sets {
        let ls_ns = ls
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let allowed = listener_set_allowed(gw, &ns, &ls_ns, refs);
        let idx = out.parents.len();
        out.parents.push(Parent {
            kind: ParentKind::ListenerSet,
            ns: ls_ns.clone(),
            name: ls.metadata.name.clone().unwrap_or_default(),
            listeners: Vec::new(),
            accepted: allowed,
        });
        let status_index = out.listener_set_status.len();
        let conditions = if allowed {
            vec![]
        } else {
            let msg = "the parent Gateway's allowedListeners do not admit this ListenerSet";
            vec![
                Condition::new("Accepted", false, "NotAllowed", msg, ls.metadata.generation),
                Condition::new(
                    "Programmed",
                    false,
                    "NotAllowed",
                    msg,
                    ls.metadata.generation,
                ),
            ]
        };
        out.listener_set_status.push(Named {
            kind: None,
            namespace: Some(ls_ns.clone()),
            name: ls.metadata.name.clone().unwrap_or_default(),
            status: GatewayStatus {
                addresses: None,
                conditions,
                listeners: Vec::new(),
                attached_listener_sets: None,
            },
        });
        set_outcomes.push((status_index, allowed));
        if !allowed {
            continue;
        }
        for (i, l) in ls.spec.listeners.iter().enumerate() {
            let Some(spec) = recast::<_, GatewayListeners>(l) else {
                continue;
            };
            candidates.push(Candidate {
                parent: idx,
                ns: ls_ns.clone(),
                spec,
                slot: StatusSlot {
                    listener_set: true,
                    object: status_index,
                    listener: i,
                },
            });
        }
    }

    // Validate every listener; the first listener on a (port, hostname) wins conflicts.
    let mut taken: Vec<(u16, String, HostPattern)> = Vec::new();
    let mut any_programmed = false;
    for c in candidates {
        let generation_of = if c.slot.listener_set {
            input
                .listener_sets
                .iter()
                .find(|ls| {
                    ls.metadata.namespace.as_deref() == Some(c.ns.as_str())
                        && Some(out.parents[c.parent].name.as_str()) == ls.metadata.name.as_deref()
                })
                .and_then(|ls| ls.metadata.generation)
        } else {
            generation
        };
        let l = &c.spec;
        let owner = if c.slot.listener_set {
            ObjectRef {
                kind: "ListenerSet".into(),
                namespace: Some(c.ns.clone()),
                name: out.parents[c.parent].name.clone(),
            }
        } else {
            object.clone()
        };
        let field = format!("spec.listeners[{}] ({})", c.slot.listener, l.name);
        let mut conds = ListenerConds::new();

        let (protocol, tls_mode) = listener_protocol(l);
        if protocol.is_none() {
            let msg = format!("protocol {} is not supported", l.protocol);
            diags.warning(&owner, format!("{field}: {msg}; listener not served"));
            conds.accepted = Some(("UnsupportedProtocol", msg));
        }
        let port = match u16::try_from(l.port) {
            Ok(p) if p > 0 => Some(p),
            _ => {
                let msg = format!("port {} is out of range", l.port);
                diags.error(&owner, format!("{field}: {msg}"));
                conds.accepted = Some(("PortUnavailable", msg));
                None
            }
        };
        let hostname = match l.hostname.as_deref() {
            None | Some("") => HostPattern::Any,
            Some(h) => match HostPattern::gateway(h) {
                Ok(p) => p,
                Err(e) => {
                    diags.error(&owner, format!("{field}.hostname: {e}"));
                    conds.accepted = Some(("UnsupportedValue", e.to_string()));
                    HostPattern::Any
                }
            },
        };

        // allowedRoutes.
        let allowed = l.allowed_routes.as_ref();
        let from = match allowed
            .and_then(|a| a.namespaces.as_ref())
            .map(|n| (n.from.as_ref(), n.selector.as_ref()))
        {
            None | Some((None, _)) | Some((Some(From::Same), _)) => AllowedNamespaces::Same,
            Some((Some(From::All), _)) => AllowedNamespaces::All,
            Some((Some(From::Selector), Some(sel))) => AllowedNamespaces::Selector(sel.clone()),
            Some((Some(From::Selector), None)) => {
                diags.error(
                    &owner,
                    format!("{field}.allowedRoutes.namespaces: from Selector needs a selector"),
                );
                AllowedNamespaces::Selector(Selector::default())
            }
        };
        let supported = protocol.map(supported_kinds).unwrap_or_default();
        let kinds = match allowed.and_then(|a| a.kinds.as_ref()) {
            None => supported.clone(),
            Some(k) if k.is_empty() => supported.clone(),
            Some(kinds) => {
                let mut ok = Vec::new();
                for k in kinds {
                    let group = k.group.clone().unwrap_or_else(|| GATEWAY_GROUP.to_string());
                    let pair = (group, k.kind.clone());
                    if supported.contains(&pair) {
                        if !ok.contains(&pair) {
                            ok.push(pair);
                        }
                    } else {
                        let msg = format!(
                            "route kind {}/{} is not supported on this listener",
                            pair.0, pair.1
                        );
                        diags.error(&owner, format!("{field}.allowedRoutes.kinds: {msg}"));
                        conds.resolved = Some(("InvalidRouteKinds", msg));
                    }
                }
                ok
            }
        };

        // TLS: HTTPS listeners and TLS listeners in Terminate mode take their certificates from Secrets.
        let certificates = if protocol == Some(Protocol::Https) || tls_mode == Some(Mode::Terminate)
        {
            let cx = CertCx {
                owner: &owner,
                field: &field,
                ns: &c.ns,
                listener_set: c.slot.listener_set,
                hostname: &hostname,
            };
            listener_certificates(l, &cx, refs, &mut conds, diags)
        } else {
            Vec::new()
        };

        let validation = match (protocol, port) {
            (Some(Protocol::Https), Some(port)) => {
                client_validation(gw, &ns, port, refs, &owner, &mut conds, diags)
            }
            _ => None,
        };

        let keys = match (port, protocol) {
            (Some(port), Some(p)) => keys_for(port, p.transport()),
            _ => Vec::new(),
        };
        let gateway_id = (ns.clone(), name.clone());
        let place = Place {
            gateway: &gateway_id,
            listener: &l.name,
            protocol: l.protocol.as_str(),
            hostname: &hostname,
            keys: &keys,
        };
        if let Some(port) = port {
            if let Some(msg) = listener_conflict(&mut taken, &out.shared, port, &place, &mut conds)
            {
                diags.error(&owner, format!("{field}: {msg}"));
            }
        }

        // Into the model.
        if conds.ready() {
            if let (Some(port), Some(protocol)) = (port, protocol) {
                for key in &keys {
                    if let Err(existing) = model.ensure_listener(*key, protocol) {
                        let msg = format!(
                            "port {port} is already served as {existing:?} by another object"
                        );
                        diags.error(&owner, format!("{field}: {msg}"));
                        conds.conflicted = Some(("ProtocolConflict", msg));
                        break;
                    }
                }
                if conds.ready() {
                    for key in &keys {
                        for cert in &certificates {
                            model.add_certificate(*key, cert.clone());
                        }
                        if let Some(v) = &validation {
                            model.set_client_validation(*key, v.clone());
                        }
                    }
                }
            }
        }
        if conds.attachable() && protocol.is_some() {
            out.shared.hold(&place);
        }

        let ready = conds.ready();
        any_programmed |= ready;
        let attachable = conds.attachable();
        let keys = if ready { keys } else { Vec::new() };
        let listener_status = ListenerStatus {
            name: l.name.clone(),
            supported_kinds: kinds
                .iter()
                .map(|(g, k)| RouteGroupKind {
                    group: g.clone(),
                    kind: k.clone(),
                })
                .collect(),
            attached_routes: 0,
            conditions: conds.conditions(generation_of),
        };
        let list = if c.slot.listener_set {
            &mut out.listener_set_status
        } else {
            &mut out.gateway_status
        };
        if let Some(o) = list.get_mut(c.slot.object) {
            // Slots are filled in listener order; pad if an earlier listener was skipped by recasting.
            while o.status.listeners.len() < c.slot.listener {
                o.status.listeners.push(ListenerStatus {
                    name: String::new(),
                    supported_kinds: vec![],
                    attached_routes: 0,
                    conditions: vec![],
                });
            }
            o.status.listeners.push(listener_status);
        }
        let index = out.listeners.len();
        out.parents[c.parent].listeners.push(index);
        out.listeners.push(GatewayListener {
            gateway: (ns.clone(), name.clone()),
            backend_client_cert: backend_client_cert.clone(),
            ns: c.ns,
            name: l.name.clone(),
            port: port.unwrap_or(0),
            hostname,
            from,
            kinds,
            keys,
            tls_mode,
            attachable,
            status: c.slot,
        });
    }

    // ListenerSet conditions once their listeners are known: accepted when at least one listener is valid.
    let accepted_listener = |l: &ListenerStatus| {
        l.conditions
            .iter()
            .any(|c| c.type_ == "Accepted" && c.status == "True")
    };
    let mut attached_sets = 0;
    for (idx, allowed) in set_outcomes {
        if !allowed {
            continue;
        }
        if let Some(o) = out.listener_set_status.get_mut(idx) {
            let g = input
                .listener_sets
                .iter()
                .find(|ls| {
                    ls.metadata.namespace == o.namespace
                        && ls.metadata.name.as_deref() == Some(&o.name)
                })
                .and_then(|ls| ls.metadata.generation);
            let programmed = o.status.listeners.iter().any(|l| {
                l.conditions
                    .iter()
                    .any(|c| c.type_ == "Programmed" && c.status == "True")
            });
            // A ListenerSet is accepted when at least one of its listeners can be served.
            let valid = programmed;
            o.status.conditions = if valid {
                attached_sets += 1;
                vec![
                    Condition::new("Accepted", true, "Accepted", "ListenerSet accepted", g),
                    if programmed {
                        Condition::new(
                            "Programmed",
                            true,
                            "Programmed",
                            "ListenerSet programmed",
                            g,
                        )
                    } else {
                        Condition::new(
                            "Programmed",
                            false,
                            "Invalid",
                            "no listener is programmed",
                            g,
                        )
                    },
                ]
            } else {
                let msg = "no listener of this ListenerSet is valid";
                vec![
                    Condition::new("Accepted", false, "ListenersNotValid", msg, g),
                    Condition::new("Programmed", false, "ListenersNotValid", msg, g),
                ]
            };
        }
    }

    // Gateway conditions.
    let st = &mut out.gateway_status[gw_status_index].status;
    st.attached_listener_sets = Some(attached_sets);
    let addresses: Vec<String> = if ips.is_empty() {
        opts.default_addresses.clone()
    } else {
        ips.iter().map(IpAddr::to_string).collect()
    };
    st.addresses = Some(
        addresses
            .into_iter()
            .map(|value| GatewayStatusAddress {
                type_: "IPAddress".into(),
                value,
            })
            .collect(),
    );
    let params = gw
        .spec
        .infrastructure
        .as_ref()
        .and_then(|i| i.parameters_ref.as_ref());
    let own_valid = st.listeners.iter().filter(|l| accepted_listener(l)).count();
    let own_total = st.listeners.len();
    let accepted = if let Some(msg) = &unsupported_address {
        diags.error(&object, msg.clone());
        Condition::new(
            "Accepted",
            false,
            "UnsupportedAddress",
            msg.clone(),
            generation,
        )
    } else if params.is_some() {
        let msg = "spec.infrastructure.parametersRef is not supported";
        diags.error(&object, msg);
        Condition::new("Accepted", false, "InvalidParameters", msg, generation)
    } else if own_total > 0 && own_valid == 0 {
        Condition::new(
            "Accepted",
            false,
            "ListenersNotValid",
            "no listener is valid",
            generation,
        )
    } else if own_valid < own_total {
        Condition::new(
            "Accepted",
            true,
            "ListenersNotValid",
            "some listeners are not valid; the others are served",
            generation,
        )
    } else {
        Condition::new("Accepted", true, "Accepted", "Gateway accepted", generation)
    };
    let programmed =
        if accepted.status == "True" && (any_programmed || gw.spec.listeners.is_empty()) {
            Condition::new(
                "Programmed",
                true,
                "Programmed",
                "Gateway programmed",
                generation,
            )
        } else {
            Condition::new(
                "Programmed",
                false,
                "Invalid",
                "Gateway is not programmed",
                generation,
            )
        };
    st.conditions = vec![accepted, programmed];
    if let Some((reason, msg)) = backend_cert_problem {
        st.conditions.push(Condition::new(
            "ResolvedRefs",
            false,
            reason,
            msg,
            generation,
        ));
    } else if gw
        .spec
        .tls
        .as_ref()
        .and_then(|t| t.backend.as_ref())
        .is_some()
    {
        st.conditions.push(Condition::new(
            "ResolvedRefs",
            true,
            "ResolvedRefs",
            "all references resolved",
            generation,
        ));
    }
}

/// The first conflict of a listener, recorded in `conds` (the message is returned for the diagnostics): with an
/// earlier listener of its own Gateway and ListenerSets (one protocol per port, one listener per hostname), then
/// with a listener of an older Gateway on the same socket (`shared_address`). Within the Gateway the protocol is
/// compared as written, so a valid but unsupported protocol (TCP, say) that collides with an HTTP listener is
/// reported as the conflict, which is what keeps it from being served. UDP ports are a separate space.
fn listener_conflict(
    taken: &mut Vec<(u16, String, HostPattern)>,
    shared: &SharedSockets,
    port: u16,
    place: &Place<'_>,
    conds: &mut ListenerConds,
) -> Option<String> {
    let protocol = place.protocol;
    let udp = |p: &str| p == "UDP";
    if let Some((_, p, _)) = taken
        .iter()
        .find(|(tp, p, _)| *tp == port && p != protocol && udp(p) == udp(protocol))
    {
        let msg = format!("port {port} is already used by a {p} listener");
        conds.conflicted = Some(("ProtocolConflict", msg.clone()));
        conds.accepted = None;
        return Some(msg);
    }
    if conds.accepted.is_none()
        && taken
            .iter()
            .any(|(tp, p, h)| *tp == port && p == protocol && h == place.hostname)
    {
        let msg = format!(
            "another listener on port {port} already has hostname {}",
            place.hostname
        );
        conds.conflicted = Some(("HostnameConflict", msg.clone()));
        return Some(msg);
    }
    taken.push((port, protocol.to_string(), place.hostname.clone()));
    if conds.accepted.is_some() {
        return None;
    }
    let (reason, msg) = shared.conflict(place)?;
    conds.conflicted = Some((reason, msg.clone()));
    Some(msg)
}

/// The client certificate a Gateway presents to backends (`spec.tls.backend.clientCertificateRef`), or the
/// reason it cannot be used (for the Gateway's `ResolvedRefs` condition).
fn backend_client_certificate(
    gw: &Gateway,
    gw_ns: &str,
    refs: &Resolver<'_>,
    object: &ObjectRef,
    diags: &mut Diagnostics,
) -> Result<Option<ClientCertificate>, (&'static str, String)> {
    let Some(r) = gw
        .spec
        .tls
        .as_ref()
        .and_then(|t| t.backend.as_ref())
        .and_then(|b| b.client_certificate_ref.as_ref())
    else {
        return Ok(None);
    };
    let field = "spec.tls.backend.clientCertificateRef";
    let group = r.group.as_deref().unwrap_or("");
    let kind = r.kind.as_deref().unwrap_or("Secret");
    if !group.is_empty() || kind != "Secret" {
        let msg = format!("{group}/{kind} is not supported; use a Secret");
        diags.error(object, format!("{field}: {msg}"));
        return Err(("InvalidClientCertificateRef", msg));
    }
    let sns = r.namespace.as_deref().unwrap_or(gw_ns);
    if !refs.grant_allows(
        (GATEWAY_GROUP, "Gateway"),
        gw_ns,
        ("", "Secret"),
        sns,
        &r.name,
    ) {
        let msg = format!(
            "Secret {sns}/{} is in another namespace and no ReferenceGrant allows it",
            r.name
        );
        diags.error(object, format!("{field}: {msg}"));
        return Err(("RefNotPermitted", msg));
    }
    match refs.tls_secret(sns, &r.name) {
        Ok((cert_pem, key_pem)) => Ok(Some(ClientCertificate {
            source: format!("Secret {sns}/{}", r.name),
            cert_pem,
            key_pem,
        })),
        Err(e) => {
            diags.error(object, format!("{field}: {e}"));
            Err(("InvalidClientCertificateRef", e))
        }
    }
}

/// Does the Gateway's `spec.allowedListeners` admit a ListenerSet in `ls_ns`? The default is to admit none.
fn listener_set_allowed(gw: &Gateway, gw_ns: &str, ls_ns: &str, refs: &Resolver<'_>) -> bool {
    let Some(n) = gw
        .spec
        .allowed_listeners
        .as_ref()
        .and_then(|a| a.namespaces.as_ref())
    else {
        return false;
    };
    match n.from.as_ref() {
        None | Some(ListenersFrom::None) => false,
        Some(ListenersFrom::Same) => gw_ns == ls_ns,
        Some(ListenersFrom::All) => true,
        Some(ListenersFrom::Selector) => n.selector.as_ref().is_some_and(|s| {
            let sel: Option<Selector> = recast(s);
            sel.is_some_and(|sel| selector_matches(&sel, &refs.namespace_labels(ls_ns)))
        }),
    }
}

/// Frontend client-certificate validation for HTTPS listeners on `port` (`spec.tls.frontend`: the per-port
/// entry, else the default).
fn client_validation(
    gw: &Gateway,
    gw_ns: &str,
    port: u16,
    refs: &Resolver<'_>,
    owner: &ObjectRef,
    conds: &mut ListenerConds,
    diags: &mut Diagnostics,
) -> Option<ClientValidation> {
    let frontend = gw.spec.tls.as_ref()?.frontend.as_ref()?;
    #[derive(serde::Deserialize, serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct CaRef {
        group: String,
        kind: String,
        name: String,
        namespace: Option<String>,
    }
    #[derive(serde::Deserialize, serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Validation {
        #[serde(rename = "caCertificateRefs")]
        ca_certificate_refs: Vec<CaRef>,
        mode: Option<String>,
    }
    let per_port = frontend
        .per_port
        .iter()
        .flatten()
        .find(|p| p.port == i32::from(port))
        .and_then(|p| p.tls.validation.as_ref())
        .and_then(recast::<_, Validation>);
    let v = match per_port {
        Some(v) => v,
        None => frontend
            .default
            .validation
            .as_ref()
            .and_then(recast::<_, Validation>)?,
    };
    let mut bundles = Vec::new();
    let mut sources = Vec::new();
    for r in &v.ca_certificate_refs {
        if !r.group.is_empty() || r.kind != "ConfigMap" {
            let msg = format!(
                "CA certificate reference kind {}/{} is not supported",
                r.group, r.kind
            );
            diags.error(owner, format!("spec.tls.frontend: {msg}"));
            conds.resolved = Some(("InvalidCACertificateKind", msg));
            continue;
        }
        let ns = r.namespace.as_deref().unwrap_or(gw_ns);
        if !refs.grant_allows(
            (GATEWAY_GROUP, "Gateway"),
            gw_ns,
            ("", "ConfigMap"),
            ns,
            &r.name,
        ) {
            let msg = format!(
                "ConfigMap {ns}/{} is in another namespace and no ReferenceGrant allows it",
                r.name
            );
            diags.error(owner, format!("spec.tls.frontend: {msg}"));
            conds.resolved = Some(("RefNotPermitted", msg));
            continue;
        }
        match refs.ca_config_map(ns, &r.name) {
            Ok(pem) => {
                bundles.push(pem);
                sources.push(format!("ConfigMap {ns}/{}", r.name));
            }
            Err(e) => {
                diags.error(owner, format!("spec.tls.frontend: {e}"));
                conds.resolved = Some(("InvalidCACertificateRef", e));
            }
        }
    }
    if bundles.is_empty() {
        conds.accepted = Some((
            "NoValidCACertificate",
            "no valid CA certificate for client validation".to_string(),
        ));
        return None;
    }
    Some(ClientValidation {
        ca_bundles: bundles,
        sources,
        insecure_fallback: v.mode.as_deref() == Some("AllowInsecureFallback"),
    })
}

/// A Gateway's `spec.addresses`: the IP addresses to bind (IPAddress entries), and the problem with the first
/// entry that cannot be served, if any.
fn gateway_addresses(gw: &Gateway) -> (Vec<IpAddr>, Option<String>) {
    let mut ips: Vec<IpAddr> = Vec::new();
    let mut unsupported_address = None;
    for (i, a) in gw.spec.addresses.iter().flatten().enumerate() {
        let t = a.r#type.as_deref().unwrap_or("IPAddress");
        let value = a.value.as_deref().unwrap_or("");
        match (t, value.parse::<IpAddr>()) {
            ("IPAddress", Ok(ip)) => {
                if !ips.contains(&ip) {
                    ips.push(ip);
                }
            }
            // An address without a value asks the implementation to choose one: the default address.
            ("IPAddress", Err(_)) if value.is_empty() => {}
            ("IPAddress", Err(_)) => {
                unsupported_address = Some(format!(
                    "spec.addresses[{i}]: {value:?} is not an IP address"
                ));
            }
            (other, _) => {
                unsupported_address = Some(format!(
                    "spec.addresses[{i}]: address type {other} is not supported"
                ));
            }
        }
    }
    (ips, unsupported_address)
}

/// The protocol a listener serves and, for TLS, its mode (Terminate when `tls.mode` is not given, as the spec
/// defaults it). `None` for a protocol we do not serve.
fn listener_protocol(l: &GatewayListeners) -> (Option<Protocol>, Option<Mode>) {
    match l.protocol.as_str() {
        "HTTP" => (Some(Protocol::Http), None),
        "HTTPS" => (Some(Protocol::Https), None),
        "TLS" => {
            let mode = match l.tls.as_ref().and_then(|t| t.mode.as_ref()) {
                Some(TlsMode::Passthrough) => Mode::Passthrough,
                _ => Mode::Terminate,
            };
            (Some(Protocol::Tls), Some(mode))
        }
        "TCP" => (Some(Protocol::Tcp), None),
        "UDP" => (Some(Protocol::Udp), None),
        _ => (None, None),
    }
}

/// What the certificate loading of one listener needs to know about it.
struct CertCx<'a> {
    owner: &'a ObjectRef,
    field: &'a str,
    /// Namespace of the Gateway or ListenerSet that declares the listener.
    ns: &'a str,
    listener_set: bool,
    hostname: &'a HostPattern,
}

/// The certificates of an HTTPS or Terminate-mode TLS listener (`tls.certificateRefs`); problems set the
/// listener's conditions. An HTTPS listener without a usable certificate is not programmed.
fn listener_certificates(
    l: &GatewayListeners,
    cx: &CertCx<'_>,
    refs: &Resolver<'_>,
    conds: &mut ListenerConds,
    diags: &mut Diagnostics,
) -> Vec<ListenerCertificate> {
    let (owner, field, hostname) = (cx.owner, cx.field, cx.hostname);
    let mut certificates = Vec::new();
    match &l.tls {
        None => {
            let msg = "this listener needs tls.certificateRefs".to_string();
            diags.error(owner, format!("{field}: {msg}"));
            conds.resolved = Some(("InvalidCertificateRef", msg));
            conds.programmed = false;
        }
        Some(tls) => {
            if tls.mode == Some(TlsMode::Passthrough) {
                let msg = "tls.mode Passthrough is not valid on an HTTPS listener".to_string();
                diags.error(owner, format!("{field}: {msg}"));
                conds.accepted = Some(("UnsupportedValue", msg));
            }
            for (ri, r) in tls.certificate_refs.iter().flatten().enumerate() {
                let rfield = format!("{field}.tls.certificateRefs[{ri}]");
                let group = r.group.as_deref().unwrap_or("");
                let kind = r.kind.as_deref().unwrap_or("Secret");
                if !group.is_empty() || kind != "Secret" {
                    let msg = format!("{group}/{kind} is not supported; only core Secrets");
                    diags.error(owner, format!("{rfield}: {msg}"));
                    conds.resolved = Some(("InvalidCertificateRef", msg));
                    continue;
                }
                let sns = r.namespace.as_deref().unwrap_or(cx.ns);
                let from_kind = if cx.listener_set {
                    "ListenerSet"
                } else {
                    "Gateway"
                };
                if !refs.grant_allows(
                    (GATEWAY_GROUP, from_kind),
                    cx.ns,
                    ("", "Secret"),
                    sns,
                    &r.name,
                ) {
                    let msg = format!(
                        "Secret {sns}/{} is in another namespace and no ReferenceGrant allows it",
                        r.name
                    );
                    diags.error(owner, format!("{rfield}: {msg}"));
                    conds.resolved = Some(("RefNotPermitted", msg));
                    continue;
                }
                match refs.tls_secret(sns, &r.name) {
                    Ok((cert, key)) => certificates.push(ListenerCertificate {
                        hostname: hostname.clone(),
                        source: format!("Secret {sns}/{}", r.name),
                        cert_pem: cert,
                        key_pem: key,
                    }),
                    Err(e) => {
                        diags.error(owner, format!("{rfield}: {e}"));
                        conds.resolved = Some(("InvalidCertificateRef", e));
                    }
                }
            }
            if certificates.is_empty() {
                conds.programmed = false;
                if conds.resolved.is_none() {
                    diags.error(
                        owner,
                        format!("{field}: no tls.certificateRefs; listener not served"),
                    );
                    conds.resolved =
                        Some(("InvalidCertificateRef", "no certificateRefs".to_string()));
                }
            }
        }
    }
    certificates
}
