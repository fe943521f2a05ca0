//! Gateway API TLSRoute on TLS listeners: connections are routed by SNI, then passed through unopened
//! (Passthrough listeners) or terminated with the listener's certificate and forwarded as TCP (Terminate listeners).

use super::builder::ModelBuilder;
use super::gateway::Gateways;
use super::httproute::RouteCtx;
use super::routes::{self, RouteSource};
use super::status::Statuses;
use super::{created, Diagnostics};
use crate::k8s::gw::TLSRoute;
use crate::k8s::GATEWAY_GROUP;
use crate::model::{Backend, Origin, OriginKind, TlsMode, TlsRoute};
use crate::source::Input;

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
    let source = RouteSource {
        kind: ROUTE_KIND.1,
        meta: &route.metadata,
        hostnames: &route.spec.hostnames,
        parent_refs: route.spec.parent_refs.as_deref(),
    };
    let Some(mut attached) = routes::attach_route(&source, gws, cx.refs, diags) else {
        return;
    };
    let (view, report) = (&attached.view, &mut attached.report);
    let (object, ns, name) = (&view.object, view.ns, view.name);
    let mut groups = Vec::new();
    for (ri, rule) in route.spec.rules.iter().enumerate() {
        report.total_rules += 1;
        let brefs = rule
            .backend_refs
            .iter()
            .map(|b| (routes::backend_ref_view!(b, ROUTE_KIND, ns), b.weight));
        let group = routes::rule_backends(ri, brefs, object, cx.refs, diags, report, |s| {
            // Passed-through bytes ignore the port's TLS settings (terminated ones do not: a BackendTLSPolicy
            // makes the proxy open TLS to the backend); one key, one health state per Service port either way.
            let s = cx.policies.apply(s.clone(), cx.refs).unwrap_or(s);
            Backend::Service(cx.refs.register(s))
        });
        groups.push((ri, rule.name.clone(), group));
    }

    for a in &attached.attachments {
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
    attached.finish(&cx.opts.gateway_controller, statuses);
}
