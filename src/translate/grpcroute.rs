//! Gateway API GRPCRoute, translated into the same rules as HTTPRoute: a gRPC call is an HTTP/2 POST to
//! `/<service>/<method>`, so a method match is a path match (GEP-1016's table: service and method → Exact
//! `/service/method`, service only → Prefix `/service/`, method only → a regular expression, RegularExpression
//! values → a path regular expression). The match keeps the service and method for precedence, which GRPCRoute
//! orders by them (`model::precedence`). Rules are marked gRPC: their backends (and mirrors) are spoken to in
//! HTTP/2, and answers made by the proxy reach gRPC clients as gRPC statuses.

use super::builder::ModelBuilder;
use super::gateway::Gateways;
use super::httproute::{self, RouteCtx, RuleCx, ServiceUsage};
use super::routes::{self, RouteSource, RuleReport};
use super::status::Statuses;
use super::{created, recast, Diagnostics};
use crate::k8s::gw::types::{
    GrpcRouteRules, GrpcRouteRulesMatches, GrpcRouteRulesMatchesHeadersType as HeaderType,
    GrpcRouteRulesMatchesMethod, GrpcRouteRulesMatchesMethodType as MethodType,
    HttpRouteRulesBackendRefs, HttpRouteRulesFilters,
};
use crate::k8s::gw::GRPCRoute;
use crate::k8s::GATEWAY_GROUP;
use crate::model::{
    GrpcMethodMatch, HeaderMatch, HttpRule, Origin, OriginKind, PathMatch, RouteMatch, StringMatch,
    Timeouts,
};
use crate::source::{Input, ObjectRef};

const ROUTE_KIND: (&str, &str) = (GATEWAY_GROUP, "GRPCRoute");

pub(crate) fn translate(
    input: &Input,
    gws: &mut Gateways,
    cx: &RouteCtx<'_, '_>,
    model: &mut ModelBuilder,
    diags: &mut Diagnostics,
    statuses: &mut Statuses,
    usage: &mut ServiceUsage,
) {
    for route in &input.grpc_routes {
        translate_one(route, gws, cx, model, diags, statuses, usage);
    }
}

fn translate_one(
    route: &GRPCRoute,
    gws: &mut Gateways,
    cx: &RouteCtx<'_, '_>,
    model: &mut ModelBuilder,
    diags: &mut Diagnostics,
    statuses: &mut Statuses,
    usage: &mut ServiceUsage,
) {
    let source = RouteSource {
        kind: ROUTE_KIND.1,
        meta: &route.metadata,
        hostnames: route.spec.hostnames.as_deref().unwrap_or(&[]),
        parent_refs: route.spec.parent_refs.as_deref(),
    };
    let Some(mut attached) = routes::attach_route(&source, gws, cx.refs, diags) else {
        return;
    };
    let (view, attachments, report) = (&attached.view, &attached.attachments, &mut attached.report);
    let rules: Vec<HttpRule> = route
        .spec
        .rules
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(ri, r)| {
            report.total_rules += 1;
            let origin = Origin {
                kind: OriginKind::GrpcRoute,
                namespace: view.ns.to_string(),
                name: view.name.to_string(),
                rule: ri,
                rule_name: r.name.clone(),
                created: created(&route.metadata),
            };
            translate_rule(origin, r, &view.object, cx, diags, report)
        })
        .collect();
    httproute::add_rules(attachments, &rules, report, gws, cx.refs, model, usage);
    attached.finish(&cx.opts.gateway_controller, statuses);
}

/// Translates one rule; `None` when the rule is invalid as a whole (reported).
fn translate_rule(
    origin: Origin,
    r: &GrpcRouteRules,
    object: &ObjectRef,
    cx: &RouteCtx<'_, '_>,
    diags: &mut Diagnostics,
    report: &mut RuleReport,
) -> Option<HttpRule> {
    let field = format!("spec.rules[{}]", origin.rule);
    let rcx = RuleCx {
        // GRPCRoute has no path rewrites.
        all_prefix: false,
        route_kind: ROUTE_KIND,
        route_ns: object.namespace.as_deref().unwrap_or("default"),
        grpc: true,
        object,
        refs: cx.refs,
        policies: cx.policies,
    };
    let parts = grpc_matches(r.matches.as_deref(), &field, object, diags).and_then(|matches| {
        // The gRPC filters and backendRefs are HTTPRoute's with fewer filter types: same JSON shape.
        let filters: Vec<HttpRouteRulesFilters> =
            same_shape(r.filters.as_deref(), &field, "filters")?;
        let brefs: Vec<HttpRouteRulesBackendRefs> =
            same_shape(r.backend_refs.as_deref(), &field, "backendRefs")?;
        Ok((matches, filters, brefs))
    });
    let (matches, filters, brefs) = match parts {
        Ok(p) => p,
        Err(msg) => {
            httproute::refuse_rule(msg, object, diags, report);
            return None;
        }
    };
    let rf = match httproute::rule_filters(&filters, &field, &rcx) {
        Ok(rf) => rf,
        Err(msg) => {
            httproute::refuse_rule(msg, object, diags, report);
            return None;
        }
    };
    httproute::warn_unresolved_mirrors(&rf.filters, &field, object, diags, report);
    let action = httproute::forward_action(rf.unsupported, &brefs, &field, &rcx, diags, report);
    // GRPCRoute's sessionPersistence has HTTPRoute's shape.
    let session = r
        .session_persistence
        .as_ref()
        .map(|sp| recast(sp).ok_or_else(|| format!("{field}.sessionPersistence: unreadable")))
        .transpose()
        .and_then(|sp| {
            httproute::session_persistence(sp.as_ref(), &matches, &field, object, diags)
        });
    let session = match session {
        Ok(s) => s,
        Err(msg) => {
            httproute::refuse_rule(msg, object, diags, report);
            return None;
        }
    };
    Some(HttpRule {
        origin,
        matches,
        filters: rf.filters,
        action,
        timeouts: Timeouts::default(),
        retry: None,
        grpc: true,
        session,
    })
}

/// Re-reads GRPCRoute filters or backendRefs as HTTPRoute's.
fn same_shape<A: serde::Serialize, B: serde::de::DeserializeOwned>(
    items: Option<&[A]>,
    field: &str,
    what: &str,
) -> Result<Vec<B>, String> {
    items
        .unwrap_or(&[])
        .iter()
        .enumerate()
        .map(|(i, a)| recast(a).ok_or_else(|| format!("{field}.{what}[{i}]: unreadable")))
        .collect()
}

/// The matches of a GRPCRoute rule ("If no matches are specified, the implementation MUST match every gRPC
/// request"); invalid matches are skipped (reported), and a rule left without one is refused.
fn grpc_matches(
    ms: Option<&[GrpcRouteRulesMatches]>,
    field: &str,
    object: &ObjectRef,
    diags: &mut Diagnostics,
) -> Result<Vec<RouteMatch>, String> {
    let Some(ms) = ms.filter(|ms| !ms.is_empty()) else {
        return Ok(vec![RouteMatch::any()]);
    };
    let mut matches = Vec::new();
    for (mi, m) in ms.iter().enumerate() {
        match grpc_match(m) {
            Ok(m) => matches.push(m),
            Err(e) => diags.error(object, format!("{field}.matches[{mi}]: {e}; match skipped")),
        }
    }
    if matches.is_empty() {
        return Err(format!("{field}: no valid match"));
    }
    Ok(matches)
}

/// One GRPCRoute match: its method match as a path condition, and its header matches.
pub(super) fn grpc_match(m: &GrpcRouteRulesMatches) -> Result<RouteMatch, String> {
    let (path, grpc) = match &m.method {
        None => (PathMatch::Prefix("/".into()), None),
        Some(mm) => {
            let (path, g) = method_match(mm)?;
            (path, Some(g))
        }
    };
    let mut headers: Vec<HeaderMatch> = Vec::new();
    for h in m.headers.iter().flatten() {
        let name = httproute::valid_header_name(&h.name)?;
        // "If multiple entries specify equivalent header names, only the first entry with an equivalent name
        // MUST be considered for a match."
        if headers.iter().any(|x| x.name == name) {
            continue;
        }
        let value = match h.r#type.as_ref().unwrap_or(&HeaderType::Exact) {
            HeaderType::Exact => StringMatch::Exact(h.value.clone()),
            HeaderType::RegularExpression => {
                httproute::check_regex(&h.value)?;
                StringMatch::RegularExpression(h.value.clone())
            }
        };
        headers.push(HeaderMatch { name, value });
    }
    Ok(RouteMatch {
        path,
        method: None,
        headers,
        query_params: Vec::new(),
        grpc,
    })
}

/// A GRPCMethodMatch as the path condition GEP-1016 gives it. Exact names are checked against the CRD's patterns
/// (which also keep them free of regular expression syntax, so they can be put into one as they are).
fn method_match(m: &GrpcRouteRulesMatchesMethod) -> Result<(PathMatch, GrpcMethodMatch), String> {
    let nonempty = |v: &Option<String>| v.as_deref().filter(|v| !v.is_empty()).map(str::to_string);
    let g = GrpcMethodMatch {
        regex: m.r#type == Some(MethodType::RegularExpression),
        service: nonempty(&m.service),
        method: nonempty(&m.method),
    };
    let path = if g.regex {
        for v in [&g.service, &g.method].into_iter().flatten() {
            httproute::check_regex(v)?;
        }
        match (&g.service, &g.method) {
            (None, None) => PathMatch::Prefix("/".into()),
            (s, m) => {
                let part = |v: &Option<String>| v.as_deref().unwrap_or("[^/]+").to_string();
                let re = format!("/(?:{})/(?:{})", part(s), part(m));
                httproute::check_regex(&re)?;
                PathMatch::RegularExpression(re)
            }
        }
    } else {
        if let Some(s) = &g.service {
            if !valid_service(s) {
                return Err(format!(
                    "method.service {s:?} is not a gRPC service name (letters, digits, '_', dot-separated)"
                ));
            }
        }
        if let Some(m) = &g.method {
            if !valid_method(m) {
                return Err(format!(
                    "method.method {m:?} is not a gRPC method name (letters, digits, '_')"
                ));
            }
        }
        match (&g.service, &g.method) {
            (Some(s), Some(m)) => PathMatch::Exact(format!("/{s}/{m}")),
            (Some(s), None) => PathMatch::prefix(&format!("/{s}/")),
            (None, Some(m)) => PathMatch::RegularExpression(format!("/[^/]+/{m}")),
            (None, None) => {
                return Err("method needs a service or a method (or both)".to_string());
            }
        }
    };
    Ok((path, g))
}

/// The CRD's pattern for an Exact service: `^(?i)\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$`.
fn valid_service(s: &str) -> bool {
    let s = s.strip_prefix('.').unwrap_or(s);
    !s.is_empty() && s.split('.').all(valid_method)
}

/// The CRD's pattern for an Exact method: `^[A-Za-z_][A-Za-z_0-9]*$`.
fn valid_method(m: &str) -> bool {
    let mut bytes = m.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn method(kind: Option<MethodType>, s: Option<&str>, m: Option<&str>) -> GrpcRouteRulesMatches {
        GrpcRouteRulesMatches {
            headers: None,
            method: Some(GrpcRouteRulesMatchesMethod {
                method: m.map(str::to_string),
                service: s.map(str::to_string),
                r#type: kind,
            }),
        }
    }

    fn path(m: &GrpcRouteRulesMatches) -> Result<PathMatch, String> {
        grpc_match(m).map(|m| m.path)
    }

    #[test]
    fn method_matches_follow_the_gep_table() {
        let exact = Some(MethodType::Exact);
        let re = Some(MethodType::RegularExpression);
        assert_eq!(
            path(&method(exact.clone(), Some("pkg.Svc"), Some("Get"))),
            Ok(PathMatch::Exact("/pkg.Svc/Get".into()))
        );
        assert_eq!(
            path(&method(None, Some("pkg.Svc"), None)),
            Ok(PathMatch::Prefix("/pkg.Svc".into()))
        );
        assert_eq!(
            path(&method(None, None, Some("Get"))),
            Ok(PathMatch::RegularExpression("/[^/]+/Get".into()))
        );
        assert_eq!(
            path(&method(re.clone(), Some("pkg\\..*"), None)),
            Ok(PathMatch::RegularExpression(
                "/(?:pkg\\..*)/(?:[^/]+)".into()
            ))
        );
        assert_eq!(
            path(&method(re.clone(), None, None)),
            Ok(PathMatch::Prefix("/".into()))
        );
        assert!(path(&method(exact.clone(), None, None)).is_err());
        assert!(path(&method(exact.clone(), Some("pkg/Svc"), Some("Get"))).is_err());
        assert!(path(&method(exact, Some("pkg.Svc"), Some("G.et"))).is_err());
        assert!(path(&method(re, Some("("), None)).is_err());
        assert_eq!(
            path(&GrpcRouteRulesMatches::default()),
            Ok(PathMatch::Prefix("/".into()))
        );
    }

    #[test]
    fn service_and_method_names() {
        for ok in ["a", "_a.b_2", ".pkg.Svc", "A.B.C"] {
            assert!(valid_service(ok), "{ok}");
        }
        for no in ["", ".", "a..b", "1a", "a.", "a/b", "a-b"] {
            assert!(!valid_service(no), "{no}");
        }
        assert!(valid_method("Echo_2"));
        assert!(!valid_method("2Echo"));
        assert!(!valid_method(""));
    }
}
