//! Gateway API TLSRoute on TLS listeners: connections are routed by SNI, then passed through unopened
//! (Passthrough listeners) or terminated with the listener's certificate and forwarded as TCP (Terminate listeners).

use super::builder::ModelBuilder;
use super::gateway::Gateways;
use super::httproute::RouteCtx;
use super::routes::{self, BackendRefView, RouteView, RuleReport};
use super::status::Statuses;
use super::{created, recast, Diagnostics};
use crate::k8s::gw::TLSRoute;
use crate::k8s::GATEWAY_GROUP;
use crate::model::{Backend, BackendGroup, Origin, OriginKind, TlsMode, TlsRoute, WeightedBackend};
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
    let Some(hostnames) = routes::parse_hostnames(&route.spec.hostnames, &object, diags) else {
        return;
    };
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
                            mode: l.tls_mode.unwrap_or(TlsMode::Passthrough),
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
    let view = BackendRefView {
        route_kind: ROUTE_KIND,
        route_ns,
        group: b.group.as_deref(),
        kind: b.kind.as_deref(),
        name: &b.name,
        namespace: b.namespace.as_deref(),
        port: b.port,
    };
    routes::resolve_service_ref(&view, field, object, cx.refs, diags, report).map_or_else(
        |answer| answer,
        |s| {
            // Passed-through bytes ignore the port's TLS settings (terminated ones do not: a BackendTLSPolicy
            // makes the proxy open TLS to the backend); one key, one health state per Service port either way.
            let s = cx.policies.apply(s.clone(), cx.refs).unwrap_or(s);
            Backend::Service(cx.refs.register(s))
        },
    )
}
