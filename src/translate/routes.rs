//! Route attachment, shared by every route kind: parentRefs (Gateway or ListenerSet, sectionName, port),
//! allowedRoutes, hostname intersection, attachedRoutes counting, and the route parent status.

use super::gateway::{Gateways, ParentKind};
use super::refs::{PortRef, Resolver};
use super::status::{Condition, Named, ParentRef, RouteParentStatus, RouteStatus, Statuses};
use super::{recast, Diagnostics};
use crate::k8s::{ObjectMeta, GATEWAY_GROUP};
use crate::model::{Backend, BackendGroup, HostPattern, ServiceBackend, WeightedBackend};
use crate::source::ObjectRef;

/// The reasons of a route's `Accepted` and `ResolvedRefs` conditions (RouteConditionReason), plus
/// `HostnameConflict`, ours, for the HTTPRoute/GRPCRoute hostname rule (the spec names no reason for it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RouteReason {
    Accepted,
    NotAllowedByParent,
    NoMatchingParent,
    NotAllowedByListeners,
    NoMatchingListenerHostname,
    HostnameConflict,
    UnsupportedValue,
    ResolvedRefs,
    BackendNotFound,
    InvalidKind,
    RefNotPermitted,
}

impl RouteReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RouteReason::Accepted => "Accepted",
            RouteReason::NotAllowedByParent => "NotAllowedByParent",
            RouteReason::NoMatchingParent => "NoMatchingParent",
            RouteReason::NotAllowedByListeners => "NotAllowedByListeners",
            RouteReason::NoMatchingListenerHostname => "NoMatchingListenerHostname",
            RouteReason::HostnameConflict => "HostnameConflict",
            RouteReason::UnsupportedValue => "UnsupportedValue",
            RouteReason::ResolvedRefs => "ResolvedRefs",
            RouteReason::BackendNotFound => "BackendNotFound",
            RouteReason::InvalidKind => "InvalidKind",
            RouteReason::RefNotPermitted => "RefNotPermitted",
        }
    }
}

/// A parentRef as a route wrote it.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ParentRefView {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub name: String,
    pub namespace: Option<String>,
    pub section_name: Option<String>,
    pub port: Option<i32>,
}

/// A route of any kind, as its object writes it.
pub(crate) struct RouteSource<'a, P> {
    /// `HTTPRoute`, ...
    pub kind: &'static str,
    pub meta: &'a ObjectMeta,
    /// `spec.hostnames` (empty for kinds without them).
    pub hostnames: &'a [String],
    pub parent_refs: Option<&'a [P]>,
}

/// What attachment needs to know about a route.
pub(crate) struct RouteView<'a> {
    /// `HTTPRoute`, ...
    pub kind: &'static str,
    pub object: ObjectRef,
    pub ns: &'a str,
    pub name: &'a str,
    pub generation: Option<i64>,
    /// Valid hostnames (empty = all).
    pub hostnames: Vec<HostPattern>,
    pub parent_refs: Vec<ParentRefView>,
}

impl<'a> RouteView<'a> {
    /// The view of a route; `None` (reported) when it names hostnames and none is valid.
    pub(crate) fn new<P: serde::Serialize>(
        route: &RouteSource<'a, P>,
        diags: &mut Diagnostics,
    ) -> Option<Self> {
        let object = ObjectRef::new(route.kind, route.meta);
        let hostnames = parse_hostnames(route.hostnames, &object, diags)?;
        Some(RouteView {
            kind: route.kind,
            object,
            ns: route.meta.namespace.as_deref().unwrap_or("default"),
            name: route.meta.name.as_deref().unwrap_or(""),
            generation: route.meta.generation,
            hostnames,
            parent_refs: route
                .parent_refs
                .unwrap_or(&[])
                .iter()
                .filter_map(recast)
                .collect(),
        })
    }
}

/// A route attached to parents of ours, while its rules are translated: what every route kind sets up before
/// its rules, and the report they fill in for its status.
pub(crate) struct AttachedRoute<'a> {
    pub view: RouteView<'a>,
    pub attachments: Vec<Attachment>,
    pub report: RuleReport,
    outcomes: Vec<ParentOutcome>,
}

/// Attaches a route to its parents (see [`attach`]). `None` when its hostnames are all invalid (reported), or
/// when no parentRef names a parent of ours: another controller's route.
pub(crate) fn attach_route<'a, P: serde::Serialize>(
    route: &RouteSource<'a, P>,
    gws: &mut Gateways,
    refs: &Resolver<'_>,
    diags: &mut Diagnostics,
) -> Option<AttachedRoute<'a>> {
    let view = RouteView::new(route, diags)?;
    let (attachments, outcomes) = attach(&view, gws, refs, diags);
    if outcomes.is_empty() {
        return None;
    }
    Some(AttachedRoute {
        view,
        attachments,
        report: RuleReport::default(),
        outcomes,
    })
}

impl AttachedRoute<'_> {
    /// Adds the route's status (one entry per parentRef of ours, with what its rules reported).
    pub(crate) fn finish(self, controller: &str, statuses: &mut Statuses) {
        if let Some(st) = route_status(&self.view, self.outcomes, &self.report, controller) {
            statuses.routes.push(st);
        }
    }
}

/// One listener a route attached to, with the hostnames it serves there.
#[derive(Debug, Clone)]
pub(crate) struct Attachment {
    /// Index into [`Gateways::listeners`].
    pub listener: usize,
    /// Effective hostnames (route hostnames intersected with the listener hostname).
    pub hostnames: Vec<HostPattern>,
}

/// The outcome of one parentRef that names a parent of ours.
pub(crate) struct ParentOutcome {
    parent_ref: ParentRef,
    accepted: Result<(), (RouteReason, String)>,
}

/// The listeners one parentRef selects that admit the route, with the hostnames it serves on each; and, when
/// none does, why.
#[derive(Default)]
struct Selection {
    /// (index into [`Gateways::listeners`], effective hostnames).
    admitted: Vec<(usize, Vec<HostPattern>)>,
    kind_refused: bool,
    ns_refused: bool,
    host_refused: bool,
    not_ready: bool,
}

/// The listeners of `parent` that parentRef `p` selects (sectionName, port) and that admit the route (ready,
/// kind, namespace, hostname intersection). No side effects.
fn select(
    route: &RouteView<'_>,
    p: &ParentRefView,
    parent: &super::gateway::Parent,
    gws: &Gateways,
    refs: &Resolver<'_>,
) -> Selection {
    let route_kind = (GATEWAY_GROUP, route.kind);
    let mut out = Selection::default();
    for &i in &parent.listeners {
        let l = &gws.listeners[i];
        if p.section_name.as_deref().is_some_and(|s| s != l.name)
            || p.port.is_some_and(|port| i32::from(l.port) != port)
        {
            continue;
        }
        if !l.attachable {
            out.not_ready = true;
            continue;
        }
        if !l.allows_kind(route_kind) {
            out.kind_refused = true;
            continue;
        }
        if !l.allows_namespace(route.ns, refs) {
            out.ns_refused = true;
            continue;
        }
        let effective: Vec<HostPattern> = if route.hostnames.is_empty() {
            vec![l.hostname.clone()]
        } else {
            route
                .hostnames
                .iter()
                .filter_map(|h| h.intersect(&l.hostname))
                .collect()
        };
        if effective.is_empty() {
            out.host_refused = true;
            continue;
        }
        out.admitted.push((i, effective));
    }
    out
}

/// The parent a parentRef names, when it is one of ours: its kind and namespace.
fn parent_of<'g>(
    route: &RouteView<'_>,
    p: &ParentRefView,
    gws: &'g Gateways,
) -> Option<(ParentKind, &'g str, &'g super::gateway::Parent)> {
    let group = p.group.as_deref().unwrap_or(GATEWAY_GROUP);
    let kind = match (group, p.kind.as_deref().unwrap_or("Gateway")) {
        (GATEWAY_GROUP, "Gateway") => ParentKind::Gateway,
        (GATEWAY_GROUP, "ListenerSet") => ParentKind::ListenerSet,
        _ => return None,
    };
    let pns = p.namespace.as_deref().unwrap_or(route.ns);
    let parent = gws.parent(kind, pns, &p.name)?;
    Some((kind, parent.ns.as_str(), parent))
}

/// The listeners a route would attach to, with the hostnames it would serve on each, before HTTPRoute/GRPCRoute
/// conflicts are settled (see [`super::crosskind`]). No side effects.
pub(crate) fn candidates(
    route: &RouteView<'_>,
    gws: &Gateways,
    refs: &Resolver<'_>,
) -> Vec<(usize, Vec<HostPattern>)> {
    let mut out: Vec<(usize, Vec<HostPattern>)> = Vec::new();
    for p in &route.parent_refs {
        let Some((_, _, parent)) = parent_of(route, p, gws) else {
            continue;
        };
        if !parent.accepted {
            continue;
        }
        for (i, hosts) in select(route, p, parent, gws, refs).admitted {
            match out.iter_mut().find(|(j, _)| *j == i) {
                Some((_, hs)) => {
                    for h in hosts {
                        if !hs.contains(&h) {
                            hs.push(h);
                        }
                    }
                }
                None => out.push((i, hosts)),
            }
        }
    }
    out
}

/// Resolves a route's parentRefs against our Gateways and ListenerSets. Returns the attachments (deduplicated
/// per listener) and one outcome per parentRef of ours; counts attachedRoutes. A listener where the route lost an
/// HTTPRoute/GRPCRoute hostname conflict does not take it.
pub(crate) fn attach(
    route: &RouteView<'_>,
    gws: &mut Gateways,
    refs: &Resolver<'_>,
    diags: &mut Diagnostics,
) -> (Vec<Attachment>, Vec<ParentOutcome>) {
    let mut attachments: Vec<Attachment> = Vec::new();
    let mut outcomes = Vec::new();
    for (pi, p) in route.parent_refs.iter().enumerate() {
        let Some((kind, pns, parent)) = parent_of(route, p, gws) else {
            continue;
        };
        let field = format!("spec.parentRefs[{pi}] ({} {pns}/{})", kind.as_str(), p.name);
        let parent_ref = ParentRef {
            group: Some(p.group.clone().unwrap_or_else(|| GATEWAY_GROUP.to_string())),
            kind: Some(kind.as_str().to_string()),
            name: p.name.clone(),
            namespace: Some(pns.to_string()),
            section_name: p.section_name.clone(),
            port: p.port,
        };
        let fail = |reason: RouteReason, msg: String, diags: &mut Diagnostics| {
            diags.error(&route.object, format!("{field}: not attached: {msg}"));
            ParentOutcome {
                parent_ref: parent_ref.clone(),
                accepted: Err((reason, msg)),
            }
        };
        if !parent.accepted {
            outcomes.push(fail(
                RouteReason::NotAllowedByParent,
                "the ListenerSet is not accepted by its Gateway".into(),
                diags,
            ));
            continue;
        }
        let selected_any = parent.listeners.iter().any(|&i| {
            let l = &gws.listeners[i];
            p.section_name.as_deref().is_none_or(|s| s == l.name)
                && p.port.is_none_or(|port| i32::from(l.port) == port)
        });
        if !selected_any {
            outcomes.push(fail(
                RouteReason::NoMatchingParent,
                "no listener matches the sectionName/port".into(),
                diags,
            ));
            continue;
        }
        let sel = select(route, p, parent, gws, refs);
        let mut attached = false;
        let mut lost_to = None;
        for (i, effective) in sel.admitted {
            if let Some(winner) = gws
                .kind_conflicts
                .winner(route.kind, route.ns, route.name, i)
            {
                lost_to.get_or_insert_with(|| (gws.listeners[i].name.clone(), winner.to_string()));
                continue;
            }
            attached = true;
            gws.record_attachment(i, (route.kind, route.ns, route.name));
            match attachments.iter_mut().find(|a| a.listener == i) {
                Some(a) => {
                    for h in effective {
                        if !a.hostnames.contains(&h) {
                            a.hostnames.push(h);
                        }
                    }
                }
                None => attachments.push(Attachment {
                    listener: i,
                    hostnames: effective,
                }),
            }
        }
        let outcome = if attached {
            ParentOutcome {
                parent_ref,
                accepted: Ok(()),
            }
        } else if let Some((listener, winner)) = lost_to {
            fail(
                RouteReason::HostnameConflict,
                format!(
                    "listener {listener} already serves {winner} on an intersecting hostname, which takes \
                     precedence (older, or first by namespace/name); HTTPRoutes and GRPCRoutes cannot share a \
                     hostname on one listener"
                ),
                diags,
            )
        } else if sel.kind_refused {
            fail(
                RouteReason::NotAllowedByListeners,
                format!("no listener allows routes of kind {}", route.kind),
                diags,
            )
        } else if sel.ns_refused {
            fail(
                RouteReason::NotAllowedByListeners,
                format!("no listener's allowedRoutes admits namespace {}", route.ns),
                diags,
            )
        } else if sel.host_refused {
            fail(
                RouteReason::NoMatchingListenerHostname,
                "none of the route's hostnames intersects a listener hostname".into(),
                diags,
            )
        } else if sel.not_ready {
            fail(
                RouteReason::NoMatchingParent,
                "no listener of the parent is ready".into(),
                diags,
            )
        } else {
            fail(
                RouteReason::NoMatchingParent,
                "no listener matches".into(),
                diags,
            )
        };
        outcomes.push(outcome);
    }
    (attachments, outcomes)
}

/// What rule translation found, for the route's conditions.
#[derive(Debug, Default)]
pub(crate) struct RuleReport {
    /// The first unresolved reference: (reason, message) for `ResolvedRefs=False`.
    pub unresolved: Option<(RouteReason, String)>,
    /// Rules that were refused (messages).
    pub invalid_rules: Vec<String>,
    /// How many rules there are in total.
    pub total_rules: usize,
    /// Services (namespace, name) the rules send traffic to.
    pub services: std::collections::BTreeSet<(String, String)>,
}

impl RuleReport {
    /// Records an unresolved reference (the first one is reported in status).
    pub(crate) fn unresolved(&mut self, reason: RouteReason, message: impl Into<String>) {
        if self.unresolved.is_none() {
            self.unresolved = Some((reason, message.into()));
        }
    }
}

/// The route's status: one parent entry per parentRef of ours.
pub(crate) fn route_status(
    route: &RouteView<'_>,
    outcomes: Vec<ParentOutcome>,
    report: &RuleReport,
    controller: &str,
) -> Option<Named<RouteStatus>> {
    if outcomes.is_empty() {
        return None;
    }
    let g = route.generation;
    let all_invalid = report.total_rules > 0 && report.invalid_rules.len() == report.total_rules;
    let parents = outcomes
        .into_iter()
        .map(|o| {
            let mut conditions = Vec::with_capacity(3);
            conditions.push(match (&o.accepted, all_invalid) {
                (Err((r, m)), _) => Condition::new("Accepted", false, r.as_str(), m.clone(), g),
                (Ok(()), true) => Condition::new(
                    "Accepted",
                    false,
                    RouteReason::UnsupportedValue.as_str(),
                    format!("every rule is invalid: {}", report.invalid_rules.join("; ")),
                    g,
                ),
                (Ok(()), false) => Condition::new(
                    "Accepted",
                    true,
                    RouteReason::Accepted.as_str(),
                    "route accepted",
                    g,
                ),
            });
            conditions.push(match &report.unresolved {
                None => Condition::new(
                    "ResolvedRefs",
                    true,
                    RouteReason::ResolvedRefs.as_str(),
                    "all references resolved",
                    g,
                ),
                Some((r, m)) => Condition::new("ResolvedRefs", false, r.as_str(), m.clone(), g),
            });
            if !report.invalid_rules.is_empty() && !all_invalid {
                conditions.push(Condition::new(
                    "PartiallyInvalid",
                    true,
                    RouteReason::UnsupportedValue.as_str(),
                    report.invalid_rules.join("; "),
                    g,
                ));
            }
            RouteParentStatus {
                parent_ref: o.parent_ref,
                controller_name: controller.to_string(),
                conditions,
            }
        })
        .collect();
    Some(Named {
        kind: Some(route.kind.to_string()),
        namespace: Some(route.ns.to_string()),
        name: route.name.to_string(),
        status: RouteStatus { parents },
    })
}

/// A route's backendRef, as every route kind writes it, and where it is written.
pub(crate) struct BackendRefView<'a> {
    /// (group, kind) of the route that holds the reference (for ReferenceGrants).
    pub route_kind: (&'a str, &'a str),
    /// The route's namespace.
    pub route_ns: &'a str,
    pub group: Option<&'a str>,
    pub kind: Option<&'a str>,
    pub name: &'a str,
    pub namespace: Option<&'a str>,
    pub port: Option<i32>,
}

/// The [`BackendRefView`] of a backendRef `$b` of any route kind: the generated types of HTTPRoute, TLSRoute,
/// TCPRoute and UDPRoute backendRefs are distinct but have these same fields.
macro_rules! backend_ref_view {
    ($b:expr, $route_kind:expr, $route_ns:expr) => {
        $crate::translate::routes::BackendRefView {
            route_kind: $route_kind,
            route_ns: $route_ns,
            group: $b.group.as_deref(),
            kind: $b.kind.as_deref(),
            name: &$b.name,
            namespace: $b.namespace.as_deref(),
            port: $b.port,
        }
    };
}
pub(crate) use backend_ref_view;

/// Resolves a backendRef of a route of kind `route_kind` in `route_ns` to a Service port with ready endpoints.
/// Problems are reported (with the `ResolvedRefs` reason the spec gives them) and become the answer the spec
/// requires for the requests that pick this backend: 500, or 503 when the Service has no ready endpoints.
pub(crate) fn resolve_service_ref(
    b: &BackendRefView<'_>,
    field: &str,
    object: &ObjectRef,
    refs: &Resolver<'_>,
    diags: &mut Diagnostics,
    report: &mut RuleReport,
) -> Result<ServiceBackend, Backend> {
    let invalid = |status: u16, reason: String| Backend::Invalid { status, reason };
    let (route_kind, route_ns) = (b.route_kind, b.route_ns);
    let group = b.group.unwrap_or("");
    let kind = b.kind.unwrap_or("Service");
    if !group.is_empty() || kind != "Service" {
        let reason = format!("backend kind {group}/{kind} is not supported (only core Service)");
        diags.error(object, format!("{field}: {reason}"));
        report.unresolved(RouteReason::InvalidKind, reason.clone());
        return Err(invalid(500, reason));
    }
    let ns = b.namespace.unwrap_or(route_ns);
    if !refs.grant_allows(route_kind, route_ns, ("", "Service"), ns, b.name) {
        let reason = format!(
            "reference to Service {ns}/{} is not permitted: no ReferenceGrant in {ns} allows it",
            b.name
        );
        diags.warning(
            object,
            format!("{field}: {reason}; requests routed to it get 500"),
        );
        report.unresolved(RouteReason::RefNotPermitted, reason.clone());
        return Err(invalid(500, reason));
    }
    let Some(port) = b.port else {
        let reason = format!("port is required for Service {ns}/{}", b.name);
        diags.error(object, format!("{field}: {reason}"));
        report.unresolved(RouteReason::BackendNotFound, reason.clone());
        return Err(invalid(500, reason));
    };
    match refs.service_backend(ns, b.name, PortRef::Number(port)) {
        Ok(s) => {
            report.services.insert((ns.to_string(), b.name.to_string()));
            Ok(s)
        }
        Err(e) if e.is_unavailable() => {
            report.services.insert((ns.to_string(), b.name.to_string()));
            Err(invalid(503, e.to_string()))
        }
        Err(e) => {
            diags.warning(
                object,
                format!("{field}: {e}; requests routed to it get 500"),
            );
            report.unresolved(RouteReason::BackendNotFound, e.to_string());
            Err(invalid(500, e.to_string()))
        }
    }
}

/// The weighted backends of rule `ri` of a route without filters on its backendRefs (TLSRoute, TCPRoute,
/// UDPRoute): each backendRef is resolved (see [`resolve_service_ref`]; a Service port found becomes the backend
/// `service` makes of it), a negative weight counts as 0, and a rule without backendRefs gets one backend that
/// answers 500.
pub(crate) fn rule_backends<'b>(
    ri: usize,
    brefs: impl IntoIterator<Item = (BackendRefView<'b>, Option<i32>)>,
    object: &ObjectRef,
    refs: &Resolver<'_>,
    diags: &mut Diagnostics,
    report: &mut RuleReport,
    service: impl Fn(ServiceBackend) -> Backend,
) -> BackendGroup {
    let mut backends = Vec::new();
    for (bi, (b, weight)) in brefs.into_iter().enumerate() {
        let field = format!("spec.rules[{ri}].backendRefs[{bi}]");
        let weight = u32::try_from(weight.unwrap_or(1)).unwrap_or(0);
        let backend = resolve_service_ref(&b, &field, object, refs, diags, report)
            .map_or_else(|answer| answer, &service);
        backends.push(WeightedBackend {
            weight,
            backend,
            filters: vec![],
        });
    }
    if backends.is_empty() {
        backends.push(WeightedBackend {
            weight: 1,
            backend: Backend::Invalid {
                status: 500,
                reason: "rule has no backendRefs".into(),
            },
            filters: vec![],
        });
    }
    BackendGroup { backends }
}

/// A route's `spec.hostnames` parsed. `None` (reported) when names were given but none is valid: dropping them
/// must not turn a route meant for some hostnames into one for every hostname.
pub(crate) fn parse_hostnames(
    names: &[String],
    object: &ObjectRef,
    diags: &mut Diagnostics,
) -> Option<Vec<HostPattern>> {
    let mut out = Vec::new();
    for (i, h) in names.iter().enumerate() {
        match HostPattern::gateway(h) {
            Ok(p) => out.push(p),
            Err(e) => diags.error(
                object,
                format!("spec.hostnames[{i}]: {e}; hostname skipped"),
            ),
        }
    }
    if out.is_empty() && !names.is_empty() {
        diags.error(
            object,
            "spec.hostnames: no valid hostname; route not attached",
        );
        return None;
    }
    Some(out)
}
