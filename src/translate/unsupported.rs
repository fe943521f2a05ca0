//! Route kinds that are parsed but not served yet (GRPCRoute). A route of such a kind that
//! names one of our Gateways is never silently dropped: it is reported, and it gets the status the spec gives a
//! route no listener admits (`Accepted: False`, `NotAllowedByListeners`: our listeners' `supportedKinds` do not
//! list these kinds).

use super::gateway::Gateways;
use super::routes::{self, RouteView, RuleReport};
use super::status::Statuses;
use super::{recast, Diagnostics};
use crate::k8s::ObjectMeta;
use crate::source::{Input, ObjectRef};
use serde::Serialize;

pub(crate) fn translate(
    input: &Input,
    gws: &mut Gateways,
    cx: &super::httproute::RouteCtx<'_, '_>,
    diags: &mut Diagnostics,
    statuses: &mut Statuses,
) {
    for r in &input.grpc_routes {
        one(
            "GRPCRoute",
            &r.metadata,
            &r.spec.parent_refs,
            gws,
            cx,
            diags,
            statuses,
        );
    }
}

fn one<P: Serialize>(
    kind: &'static str,
    meta: &ObjectMeta,
    parent_refs: &Option<Vec<P>>,
    gws: &mut Gateways,
    cx: &super::httproute::RouteCtx<'_, '_>,
    diags: &mut Diagnostics,
    statuses: &mut Statuses,
) {
    let object = ObjectRef::new(kind, meta);
    let view = RouteView {
        kind,
        object: &object,
        ns: meta.namespace.as_deref().unwrap_or("default"),
        name: meta.name.as_deref().unwrap_or(""),
        generation: meta.generation,
        hostnames: &[],
        parent_refs: parent_refs.iter().flatten().filter_map(recast).collect(),
    };
    let mut quiet = Diagnostics::default();
    let (_, outcomes) = routes::attach(&view, gws, cx.refs, &mut quiet);
    if outcomes.is_empty() {
        // Not addressed to any Gateway of ours.
        return;
    }
    diags.warning(
        &object,
        format!("{kind} is not supported yet; the route is not served"),
    );
    let controller = &cx.opts.gateway_controller;
    if let Some(st) = routes::route_status(&view, outcomes, &RuleReport::default(), controller) {
        statuses.routes.push(st);
    }
}
