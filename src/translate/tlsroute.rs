//! Gateway API TLSRoute on TLS listeners in Passthrough mode: connections are routed by SNI, unopened.

use super::builder::ModelBuilder;
use super::gateway::Gateways;
use super::httproute::RouteCtx;
use super::refs::PortRef;
use super::routes::{self, RouteView, RuleReport};
use super::status::Statuses;
use super::{created, recast, Diagnostics};
use crate::k8s::gw::TLSRoute;
use crate::k8s::GATEWAY_GROUP;
use crate::model::{
    Backend, BackendGroup, HostPattern, Origin, OriginKind, TlsRoute, WeightedBackend,
};
use crate::source::{Input, ObjectRef};

const ROUTE_KIND: (&str, &str) = (GATEWAY_GROUP, "TLSRoute");

pub(crate) fn translate(
    input: &Input,
    gws: &mut Gateways,
    cx: &RouteCtx<'_, '_>,
    model: &mut ModelBuilder,
    diags: &mut Diagnostics,
    statuses: &mut Statuses,
) {
    for route in &input.tls_routes {
        translate_one(route, gws, cx, model, diags, statuses);
    }
}

fn translate_one(
    route: &TLSRoute,
    gws: &mut Gateways,
    cx: &RouteCtx<'_, '_>,
    model: &mut ModelBuilder,
    diags: &mut Diagnostics,
    statuses: &mut Statuses,
) {
    let object = ObjectRef::new("TLSRoute", &route.metadata);
    let ns = route.metadata.namespace.as_deref().unwrap_or("default");
    let name = route.metadata.name.as_deref().unwrap_or("");
    let mut hostnames = Vec::new();
    for (i, h) in route.spec.hostnames.iter().enumerate() {
        match HostPattern::gateway(h) {
            Ok(p) => hostnames.push(p),
            Err(e) => diags.error(
                &object,
                format!("spec.hostnames[{i}]: {e}; hostname skipped"),
            ),
        }
    }
    if hostnames.is_empty() && !route.spec.hostnames.is_empty() {
        diags.error(
            &object,
            "spec.hostnames: no valid hostname; route not attached",
        );
        return;
    }
    let view = RouteView {
        kind: "TLSRoute",
        object: &object,
        ns,
        name,
        generation: route.metadata.generation,
        hostnames: &hostnames,
        parent_refs: route
            .spec
            .parent_refs
            .iter()
            .flatten()
            .filter_map(recast)
            .collect(),
    };
    let (attachments, outcomes) = routes::attach(&view, gws, cx.refs, diags);
    if outcomes.is_empty() {
        return;
    }

    let mut report = RuleReport::default();
    let mut groups = Vec::new();
    for (ri, rule) in route.spec.rules.iter().enumerate() {
        report.total_rules += 1;
        let mut backends = Vec::new();
        for (bi, b) in rule.backend_refs.iter().enumerate() {
            let field = format!("spec.rules[{ri}].backendRefs[{bi}]");
            let weight = u32::try_from(b.weight.unwrap_or(1)).unwrap_or(0);
            let backend = resolve(b, ns, &field, &object, cx, diags, &mut report);
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
        groups.push((ri, rule.name.clone(), BackendGroup { backends }));
    }

    for a in &attachments {
        let l = &gws.listeners[a.listener];
        for key in &l.keys {
            for host in &a.hostnames {
                // TLSRoute rules have no matches: the first rule takes the connections.
                if let Some((ri, rule_name, group)) = groups.first() {
                    model.add_tls_route(
                        *key,
                        TlsRoute {
                            listener_hostname: l.hostname.clone(),
                            hostname: host.clone(),
                            origin: Origin {
                                kind: OriginKind::TlsRoute,
                                namespace: ns.to_string(),
                                name: name.to_string(),
                                rule: *ri,
                                rule_name: rule_name.clone(),
                                created: created(&route.metadata),
                            },
                            backends: group.clone(),
                        },
                    );
                }
            }
        }
    }
    if let Some(st) = routes::route_status(&view, outcomes, &report, &cx.opts.gateway_controller) {
        statuses.routes.push(st);
    }
}

fn resolve(
    b: &crate::k8s::gw::types::TlsRouteRulesBackendRefs,
    route_ns: &str,
    field: &str,
    object: &ObjectRef,
    cx: &RouteCtx<'_, '_>,
    diags: &mut Diagnostics,
    report: &mut RuleReport,
) -> Backend {
    let invalid = |reason: String| Backend::Invalid {
        status: 500,
        reason,
    };
    let group = b.group.as_deref().unwrap_or("");
    let kind = b.kind.as_deref().unwrap_or("Service");
    if !group.is_empty() || kind != "Service" {
        let reason = format!("backend kind {group}/{kind} is not supported (only core Service)");
        diags.error(object, format!("{field}: {reason}"));
        report.unresolved("InvalidKind", reason.clone());
        return invalid(reason);
    }
    let ns = b.namespace.as_deref().unwrap_or(route_ns);
    if !cx
        .refs
        .grant_allows(ROUTE_KIND, route_ns, ("", "Service"), ns, &b.name)
    {
        let reason = format!(
            "reference to Service {ns}/{} is not permitted: no ReferenceGrant allows it",
            b.name
        );
        diags.warning(object, format!("{field}: {reason}"));
        report.unresolved("RefNotPermitted", reason.clone());
        return invalid(reason);
    }
    let Some(port) = b.port else {
        let reason = format!("port is required for Service {ns}/{}", b.name);
        diags.error(object, format!("{field}: {reason}"));
        report.unresolved("BackendNotFound", reason.clone());
        return invalid(reason);
    };
    match cx.refs.service_backend(ns, &b.name, PortRef::Number(port)) {
        Ok(s) => Backend::Service(s),
        Err(e) if e.is_unavailable() => Backend::Invalid {
            status: 503,
            reason: e.to_string(),
        },
        Err(e) => {
            diags.warning(object, format!("{field}: {e}"));
            report.unresolved("BackendNotFound", e.to_string());
            invalid(e.to_string())
        }
    }
}
