//! Gateway API TCPRoute and UDPRoute: routes without matches on TCP and UDP listeners. A connection (TCP) or a
//! client flow (UDP) picks one of the weighted backends of the route's first rule when it starts. When several
//! routes attach to the same listener, the oldest takes the port's traffic (the router serves the first route of
//! the listener, and the builder sorts them oldest first); the others are accepted and warned about.

use super::builder::ModelBuilder;
use super::gateway::Gateways;
use super::httproute::RouteCtx;
use super::routes::{self, RouteSource};
use super::status::Statuses;
use super::{created, recast, Diagnostics};
use crate::k8s::{ObjectMeta, GATEWAY_GROUP};
use crate::model::{Backend, BackendGroup, L4Route, Origin, OriginKind};
use crate::source::Input;
use serde::{Deserialize, Serialize};

/// A TCPRoute or UDPRoute rule (the generated types of the two kinds differ only in name).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct RuleView {
    name: Option<String>,
    #[serde(default)]
    backend_refs: Vec<BackendRef>,
}

/// A backendRef of a TCPRoute or UDPRoute rule.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct BackendRef {
    group: Option<String>,
    kind: Option<String>,
    name: String,
    namespace: Option<String>,
    port: Option<i32>,
    weight: Option<i32>,
}

/// One route, whatever its kind.
struct L4RouteInput<'a, P, R> {
    kind: &'static str,
    origin_kind: OriginKind,
    meta: &'a ObjectMeta,
    parent_refs: &'a Option<Vec<P>>,
    rules: &'a [R],
}

pub(crate) fn translate(
    input: &Input,
    gws: &mut Gateways,
    cx: &RouteCtx<'_, '_>,
    model: &mut ModelBuilder,
    diags: &mut Diagnostics,
    statuses: &mut Statuses,
) {
    for r in &input.tcp_routes {
        let route = L4RouteInput {
            kind: "TCPRoute",
            origin_kind: OriginKind::TcpRoute,
            meta: &r.metadata,
            parent_refs: &r.spec.parent_refs,
            rules: &r.spec.rules,
        };
        translate_one(&route, gws, cx, model, diags, statuses);
    }
    for r in &input.udp_routes {
        let route = L4RouteInput {
            kind: "UDPRoute",
            origin_kind: OriginKind::UdpRoute,
            meta: &r.metadata,
            parent_refs: &r.spec.parent_refs,
            rules: &r.spec.rules,
        };
        translate_one(&route, gws, cx, model, diags, statuses);
    }
}

fn translate_one<P: Serialize, R: Serialize>(
    route: &L4RouteInput<'_, P, R>,
    gws: &mut Gateways,
    cx: &RouteCtx<'_, '_>,
    model: &mut ModelBuilder,
    diags: &mut Diagnostics,
    statuses: &mut Statuses,
) {
    let source = RouteSource {
        kind: route.kind,
        meta: route.meta,
        hostnames: &[],
        parent_refs: route.parent_refs.as_deref(),
    };
    let Some(mut attached) = routes::attach_route(&source, gws, cx.refs, diags) else {
        return;
    };
    let (view, report) = (&attached.view, &mut attached.report);
    let (object, ns, name) = (&view.object, view.ns, view.name);
    let mut first: Option<(usize, Option<String>, BackendGroup)> = None;
    for (ri, rule) in route.rules.iter().enumerate() {
        report.total_rules += 1;
        let Some(rule) = recast::<_, RuleView>(rule) else {
            let msg = format!("spec.rules[{ri}] cannot be read");
            diags.error(object, msg.clone());
            report.invalid_rules.push(msg);
            continue;
        };
        let brefs = rule.backend_refs.iter().map(|b| {
            (
                routes::backend_ref_view!(b, (GATEWAY_GROUP, route.kind), ns),
                b.weight,
            )
        });
        let group = routes::rule_backends(ri, brefs, object, cx.refs, diags, report, |s| {
            Backend::Service(cx.refs.register(s))
        });
        if first.is_none() {
            first = Some((ri, rule.name, group));
        } else {
            diags.warning(
                object,
                format!(
                    "spec.rules[{ri}]: a {} takes its traffic from its first rule only; this rule is not served",
                    route.kind
                ),
            );
        }
    }

    if let Some((ri, rule_name, group)) = first {
        for a in &attached.attachments {
            let l = &gws.listeners[a.listener];
            for key in &l.keys {
                model.add_l4_route(
                    *key,
                    L4Route {
                        origin: Origin {
                            kind: route.origin_kind,
                            namespace: ns.to_string(),
                            name: name.to_string(),
                            rule: ri,
                            rule_name: rule_name.clone(),
                            created: created(route.meta),
                        },
                        backends: group.clone(),
                    },
                );
            }
        }
    }
    attached.finish(&cx.opts.gateway_controller, statuses);
}
