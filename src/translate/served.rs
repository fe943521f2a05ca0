//! Why objects are not served: what `portcullis validate` adds to the translation's diagnostics.
//!
//! Translation only looks at objects of ours; an Ingress of a class that does not exist, or an HTTPRoute whose
//! parent Gateway does not exist, is silently left out of the table (correct for a proxy that shares a cluster
//! with other controllers, unhelpful for someone checking manifests). [`not_served`] reports each such object
//! with the reason, and checks the fields of routes that attach nowhere as if they attached, so that a bad regex
//! or a negative weight is found before the route is wired to a Gateway.

use super::grpcroute::grpc_match;
use super::httproute::route_match;
use super::recast;
use super::routes::ParentRefView;
use super::status::Statuses;
use super::{Diagnostic, Options, Severity};
use crate::source::Input;
use crate::source::ObjectRef;

fn warning(object: ObjectRef, message: String) -> Diagnostic {
    Diagnostic {
        severity: Severity::Warning,
        object,
        message,
        annotation: None,
    }
}

fn error(object: ObjectRef, message: String) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        object,
        message,
        annotation: None,
    }
}

/// Every Ingress and route of the input that is not served, with the reason; and field errors of routes that
/// attach to nothing of ours.
pub fn not_served(input: &Input, opts: &Options, statuses: &Statuses) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    ingresses(input, opts, &mut out);
    routes(input, opts, statuses, &mut out);
    out
}

fn ingresses(input: &Input, opts: &Options, out: &mut Vec<Diagnostic>) {
    for ing in &input.ingresses {
        if super::nginx::profile_of(ing, input, opts).is_some() {
            continue;
        }
        let object = ObjectRef::new("Ingress", &ing.metadata);
        let by_field = ing
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.as_deref());
        let by_annotation = ing
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(super::ingress::LEGACY_CLASS_ANNOTATION))
            .map(String::as_str);
        let (field, name) = match (by_field, by_annotation) {
            (Some(n), _) => ("spec.ingressClassName", n),
            (None, Some(n)) => ("metadata.annotations[kubernetes.io/ingress.class]", n),
            (None, None) => {
                out.push(warning(
                    object,
                    format!(
                        "not served: no spec.ingressClassName, and no IngressClass with controller {} is marked \
                         as the default class",
                        opts.ingress_controller
                    ),
                ));
                continue;
            }
        };
        let class = input
            .ingress_classes
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(name));
        let message = match class {
            None => format!("{field}: not served: IngressClass {name:?} not found"),
            Some(c) => {
                let controller = c
                    .spec
                    .as_ref()
                    .and_then(|s| s.controller.as_deref())
                    .unwrap_or("");
                format!(
                    "{field}: not served: IngressClass {name:?} belongs to controller {controller:?}, not \
                     {:?}{}",
                    opts.ingress_controller,
                    if controller == "k8s.io/ingress-nginx" {
                        " (run with --ingress-nginx-class to take it over)"
                    } else {
                        ""
                    }
                )
            }
        };
        out.push(warning(object, message));
    }
}

/// A Gateway of the input that is of one of our GatewayClasses.
fn gateway_is_ours(input: &Input, opts: &Options, ns: &str, name: &str) -> Option<bool> {
    let gw = input.gateways.iter().find(|g| {
        g.metadata.name.as_deref() == Some(name) && g.metadata.namespace.as_deref() == Some(ns)
    })?;
    let class = &gw.spec.gateway_class_name;
    Some(input.gateway_classes.iter().any(|c| {
        c.metadata.name.as_deref() == Some(class.as_str())
            && c.spec.controller_name == opts.gateway_controller
    }))
}

/// A parentRef as the route wrote it: (kind, namespace, name).
struct Parent<'a> {
    kind: &'a str,
    namespace: &'a str,
    name: &'a str,
}

fn parent_problems(
    input: &Input,
    opts: &Options,
    object: &ObjectRef,
    parents: &[Parent<'_>],
    status: Option<&super::status::RouteStatus>,
    out: &mut Vec<Diagnostic>,
) -> bool {
    let mut attached = false;
    if parents.is_empty() {
        out.push(warning(
            object.clone(),
            "spec.parentRefs: not served: the route names no parent".into(),
        ));
    }
    for (i, p) in parents.iter().enumerate() {
        let field = format!("spec.parentRefs[{i}]");
        match p.kind {
            "Gateway" => match gateway_is_ours(input, opts, p.namespace, p.name) {
                None => out.push(warning(
                    object.clone(),
                    format!(
                        "{field}: not served through this parent: Gateway {}/{} not found",
                        p.namespace, p.name
                    ),
                )),
                Some(false) => out.push(warning(
                    object.clone(),
                    format!(
                        "{field}: not served through this parent: Gateway {}/{} is not of a GatewayClass with \
                         controllerName {}",
                        p.namespace, p.name, opts.gateway_controller
                    ),
                )),
                Some(true) => attached = true,
            },
            // ListenerSets and other parents: their status (below) says whether they attach.
            _ => attached = true,
        }
    }
    // Parents of ours that refused the route: the status says why.
    if let Some(st) = status {
        for ps in &st.parents {
            for c in &ps.conditions {
                if c.type_ == "Accepted" && c.status == "False" {
                    let p = &ps.parent_ref;
                    out.push(warning(
                        object.clone(),
                        format!(
                            "not served through parent {}/{}{}: {}: {}",
                            p.namespace
                                .as_deref()
                                .unwrap_or(&object.namespace.clone().unwrap_or_default()),
                            p.name,
                            p.section_name
                                .as_deref()
                                .map(|s| format!(" (section {s})"))
                                .unwrap_or_default(),
                            c.reason,
                            c.message
                        ),
                    ));
                }
            }
        }
    }
    attached
}

fn route_status<'a>(
    statuses: &'a Statuses,
    kind: &str,
    object: &ObjectRef,
) -> Option<&'a super::status::RouteStatus> {
    statuses
        .routes
        .iter()
        .find(|r| {
            r.kind.as_deref() == Some(kind)
                && r.namespace == object.namespace
                && r.name == object.name
        })
        .map(|r| &r.status)
}

/// The parentRefs of a route, read through the shared [`ParentRefView`] (every route kind writes them alike).
fn parent_views<P: serde::Serialize>(refs: &Option<Vec<P>>) -> Vec<ParentRefView> {
    refs.iter().flatten().filter_map(recast).collect()
}

/// Reports the parent problems of one route; returns whether some parent of ours may serve it.
fn route_parents(
    input: &Input,
    opts: &Options,
    statuses: &Statuses,
    kind: &str,
    meta: &crate::k8s::ObjectMeta,
    refs: &[ParentRefView],
    out: &mut Vec<Diagnostic>,
) -> (ObjectRef, bool) {
    let object = ObjectRef::new(kind, meta);
    let ns = meta.namespace.as_deref().unwrap_or("default");
    let parents: Vec<Parent<'_>> = refs
        .iter()
        .map(|p| Parent {
            kind: p.kind.as_deref().unwrap_or("Gateway"),
            namespace: p.namespace.as_deref().unwrap_or(ns),
            name: &p.name,
        })
        .collect();
    let status = route_status(statuses, kind, &object);
    let attached = parent_problems(input, opts, &object, &parents, status, out);
    (object, attached)
}

fn routes(input: &Input, opts: &Options, statuses: &Statuses, out: &mut Vec<Diagnostic>) {
    for r in &input.http_routes {
        let refs = parent_views(&r.spec.parent_refs);
        let (object, attached) =
            route_parents(input, opts, statuses, "HTTPRoute", &r.metadata, &refs, out);
        if !attached {
            for (ri, rule) in r.spec.rules.iter().flatten().enumerate() {
                let matches = rule.matches.as_deref().unwrap_or(&[]);
                let weights = rule.backend_refs.iter().flatten().map(|b| b.weight);
                rule_fields(ri, matches, route_match, weights, &object, out);
            }
        }
    }
    for r in &input.grpc_routes {
        let refs = parent_views(&r.spec.parent_refs);
        let (object, attached) =
            route_parents(input, opts, statuses, "GRPCRoute", &r.metadata, &refs, out);
        if !attached {
            for (ri, rule) in r.spec.rules.iter().flatten().enumerate() {
                let matches = rule.matches.as_deref().unwrap_or(&[]);
                let weights = rule.backend_refs.iter().flatten().map(|b| b.weight);
                rule_fields(ri, matches, grpc_match, weights, &object, out);
            }
        }
    }
    for r in &input.tls_routes {
        let refs = parent_views(&r.spec.parent_refs);
        route_parents(input, opts, statuses, "TLSRoute", &r.metadata, &refs, out);
    }
}

/// The checks translation makes on the fields of rule `ri` of an attached HTTPRoute or GRPCRoute that do not
/// depend on a listener: its matches (`check`: paths or service and method names, header names, regexes) and its
/// backendRef weights.
fn rule_fields<M, T>(
    ri: usize,
    matches: &[M],
    check: impl Fn(&M) -> Result<T, String>,
    weights: impl Iterator<Item = Option<i32>>,
    object: &ObjectRef,
    out: &mut Vec<Diagnostic>,
) {
    for (mi, m) in matches.iter().enumerate() {
        if let Err(e) = check(m) {
            out.push(error(
                object.clone(),
                format!("spec.rules[{ri}].matches[{mi}]: {e}"),
            ));
        }
    }
    for (bi, w) in weights.enumerate() {
        if let Some(w) = w.filter(|w| *w < 0) {
            out.push(error(
                object.clone(),
                format!("spec.rules[{ri}].backendRefs[{bi}].weight: {w} is negative"),
            ));
        }
    }
}
