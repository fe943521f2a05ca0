//! Gateway API HTTPRoute: attachment to Gateway listeners (parentRefs, allowedRoutes, hostname intersection) and
//! translation of rules (matches, filters, weighted backendRefs) into model rules.

use super::backendtls::Policies;
use super::builder::ModelBuilder;
use super::gateway::Gateways;
use super::refs::{PortRef, Resolver};
use super::routes::{self, BackendRefView, RouteView, RuleReport};
use super::status::Statuses;
use super::{created, recast, Diagnostics, Options};
use crate::k8s::gw::types::{
    HttpRouteRules, HttpRouteRulesBackendRefs, HttpRouteRulesFilters,
    HttpRouteRulesFiltersRequestHeaderModifier as HeaderMod, HttpRouteRulesFiltersRequestRedirect,
    HttpRouteRulesFiltersRequestRedirectPathType as RedirectPathType,
    HttpRouteRulesFiltersRequestRedirectScheme as Scheme, HttpRouteRulesFiltersType as FilterType,
    HttpRouteRulesFiltersUrlRewrite, HttpRouteRulesFiltersUrlRewritePathType as RewritePathType,
    HttpRouteRulesMatches, HttpRouteRulesMatchesHeadersType as HeaderType,
    HttpRouteRulesMatchesMethod as Method, HttpRouteRulesMatchesPathType as PathType,
    HttpRouteRulesMatchesQueryParamsType as QueryType,
};
use crate::k8s::gw::HTTPRoute;
use crate::k8s::GATEWAY_GROUP;
use crate::model::{
    Action, Backend, BackendGroup, ClientCertificate, Cors, Filter, HeaderMatch, HeaderModifier,
    HttpRule, Mirror, Origin, OriginKind, PathMatch, PathModifier, QueryParamMatch, Redirect,
    Retry, RouteMatch, StringMatch, Timeouts, WeightedBackend,
};
use crate::source::{Input, ObjectRef};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

const ROUTE_KIND: (&str, &str) = (GATEWAY_GROUP, "HTTPRoute");

/// Where Gateway API routes send traffic, for BackendTLSPolicy status: (namespace, Service) to the Gateways
/// (namespace, name) whose routes use it.
pub(crate) type ServiceUsage = BTreeMap<(String, String), BTreeSet<(String, String)>>;

/// Shared inputs of route translation.
pub(crate) struct RouteCtx<'a, 'r> {
    pub refs: &'a Resolver<'r>,
    pub policies: &'a Policies<'r>,
    pub opts: &'a Options,
}

pub(crate) fn translate(
    input: &Input,
    gws: &mut Gateways,
    cx: &RouteCtx<'_, '_>,
    model: &mut ModelBuilder,
    diags: &mut Diagnostics,
    statuses: &mut Statuses,
    usage: &mut ServiceUsage,
) {
    for route in &input.http_routes {
        translate_one(route, gws, cx, model, diags, statuses, usage);
    }
}

/// The rule with the Gateway's backend client certificate set on every TLS backend (each such backend becomes a
/// variant of its Service port: another Gateway may present another certificate, or none).
fn with_client_certificate(
    rule: &HttpRule,
    cc: &ClientCertificate,
    refs: &Resolver<'_>,
) -> HttpRule {
    let mut rule = rule.clone();
    if let Action::Forward(g) = &mut rule.action {
        for b in &mut g.backends {
            if let Backend::Service(key) = &mut b.backend {
                let Some(mut s) = refs.backend(key) else {
                    continue;
                };
                if let Some(t) = &mut s.tls {
                    t.client_certificate = Some(cc.clone());
                    *key = refs.register(s);
                }
            }
        }
    }
    rule
}

fn translate_one(
    route: &HTTPRoute,
    gws: &mut Gateways,
    cx: &RouteCtx<'_, '_>,
    model: &mut ModelBuilder,
    diags: &mut Diagnostics,
    statuses: &mut Statuses,
    usage: &mut ServiceUsage,
) {
    let refs = cx.refs;
    let object = ObjectRef::new("HTTPRoute", &route.metadata);
    let ns = route.metadata.namespace.as_deref().unwrap_or("default");
    let name = route.metadata.name.as_deref().unwrap_or("");

    let Some(hostnames) = routes::parse_hostnames(
        route.spec.hostnames.as_deref().unwrap_or(&[]),
        &object,
        diags,
    ) else {
        return;
    };

    let view = RouteView {
        kind: "HTTPRoute",
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
    let (attachments, outcomes) = routes::attach(&view, gws, refs, diags);
    if outcomes.is_empty() {
        // No parentRef names a parent of ours: another controller's route.
        return;
    }

    let mut report = RuleReport::default();
    let rules: Vec<HttpRule> = route
        .spec
        .rules
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(ri, r)| {
            report.total_rules += 1;
            let origin = Origin {
                kind: OriginKind::HttpRoute,
                namespace: ns.to_string(),
                name: name.to_string(),
                rule: ri,
                rule_name: r.name.clone(),
                created: created(&route.metadata),
            };
            translate_rule(origin, r, &object, cx, diags, &mut report)
        })
        .collect();
    // The Portcullis extension: ingress-nginx annotations on the route (written by `portcullis migrate`).
    let rules: Vec<HttpRule> =
        match super::ingress::route_policy(&route.metadata, &object, cx.opts, refs, diags) {
            None => rules,
            Some(p) => rules
                .into_iter()
                .map(|mut r| {
                    r.filters.insert(0, Filter::Policy(Box::new(p.clone())));
                    r
                })
                .collect(),
        };

    for a in &attachments {
        let l = &gws.listeners[a.listener];
        for svc in &report.services {
            usage
                .entry(svc.clone())
                .or_default()
                .insert(l.gateway.clone());
        }
        for key in &l.keys {
            for host in &a.hostnames {
                for rule in &rules {
                    let rule = match &l.backend_client_cert {
                        Some(cc) => with_client_certificate(rule, cc, cx.refs),
                        None => rule.clone(),
                    };
                    model.add_rule(*key, Some(l.hostname.clone()), host.clone(), rule);
                }
            }
        }
    }
    if let Some(st) = routes::route_status(&view, outcomes, &report, &cx.opts.gateway_controller) {
        statuses.routes.push(st);
    }
}

/// Translates one rule; `None` when the rule is invalid as a whole (reported).
fn translate_rule(
    origin: Origin,
    r: &HttpRouteRules,
    object: &ObjectRef,
    cx: &RouteCtx<'_, '_>,
    diags: &mut Diagnostics,
    report: &mut RuleReport,
) -> Option<HttpRule> {
    let refs = cx.refs;
    let field = format!("spec.rules[{}]", origin.rule);
    fn refuse(diags: &mut Diagnostics, report: &mut RuleReport, object: &ObjectRef, msg: String) {
        diags.error(object, format!("{msg}; rule skipped"));
        report.invalid_rules.push(msg);
    }
    let mut matches = Vec::new();
    match r.matches.as_deref() {
        None | Some([]) => matches.push(RouteMatch::any()),
        Some(ms) => {
            for (mi, m) in ms.iter().enumerate() {
                match route_match(m) {
                    Ok(m) => matches.push(m),
                    Err(e) => {
                        diags.error(object, format!("{field}.matches[{mi}]: {e}; match skipped"))
                    }
                }
            }
        }
    }
    if matches.is_empty() {
        refuse(diags, report, object, format!("{field}: no valid match"));
        return None;
    }
    let all_prefix = matches
        .iter()
        .all(|m| matches!(m.path, PathMatch::Prefix(_)));

    let mut filters = Vec::new();
    let mut redirect = None;
    let mut unsupported = None;
    let route_ns = object.namespace.as_deref().unwrap_or("default");
    let fcx = FilterCtx {
        all_prefix,
        route_ns,
        refs,
        policies: cx.policies,
    };
    for (fi, f) in r.filters.iter().flatten().enumerate() {
        let ffield = format!("{field}.filters[{fi}]");
        match translate_filter(f, &fcx) {
            Ok(FilterOut::Filter(f)) => filters.push(f),
            Ok(FilterOut::Redirect(rd)) => redirect = Some(rd),
            Ok(FilterOut::Unsupported(name)) => unsupported = Some(name),
            Err(e) => {
                refuse(diags, report, object, format!("{ffield}: {e}"));
                return None;
            }
        }
    }
    for (fi, f) in filters.iter().enumerate() {
        if let Filter::RequestMirror(Mirror {
            backend: Backend::Invalid { reason, .. },
            ..
        }) = f
        {
            diags.warning(
                object,
                format!("{field}.filters: RequestMirror #{fi}: {reason}; no copies are sent"),
            );
            report.unresolved("BackendNotFound", reason.clone());
        }
    }
    if redirect.is_some()
        && filters
            .iter()
            .any(|f| matches!(f, Filter::UrlRewrite { .. }))
    {
        refuse(
            diags,
            report,
            object,
            format!("{field}: RequestRedirect and URLRewrite cannot be combined"),
        );
        return None;
    }
    // Gateway API CEL rule on HTTPRouteRule: "RequestRedirect filter must not be used together with backendRefs".
    if redirect.is_some() && r.backend_refs.as_ref().is_some_and(|b| !b.is_empty()) {
        refuse(
            diags,
            report,
            object,
            format!("{field}: RequestRedirect cannot be used together with backendRefs"),
        );
        return None;
    }

    let action = if let Some(name) = unsupported {
        let reason = format!("filter {name} is not supported");
        diags.error(
            object,
            format!("{field}: {reason}; matching requests get 500"),
        );
        Action::Forward(BackendGroup {
            backends: vec![WeightedBackend {
                weight: 1,
                backend: Backend::Invalid {
                    status: 500,
                    reason,
                },
                filters: vec![],
            }],
        })
    } else if let Some(rd) = redirect {
        Action::Redirect(rd)
    } else {
        Action::Forward(backend_group(
            r.backend_refs.as_deref().unwrap_or(&[]),
            &field,
            all_prefix,
            object,
            cx,
            diags,
            report,
        ))
    };
    let mut timeouts = Timeouts::default();
    if let Some(t) = &r.timeouts {
        for (name, value, slot) in [
            ("request", &t.request, &mut timeouts.request_ms),
            (
                "backendRequest",
                &t.backend_request,
                &mut timeouts.backend_request_ms,
            ),
        ] {
            if let Some(v) = value {
                match parse_duration(v) {
                    // "0s" disables the timeout.
                    Ok(0) => {}
                    Ok(ms) => *slot = Some(ms),
                    Err(e) => {
                        refuse(
                            diags,
                            report,
                            object,
                            format!("{field}.timeouts.{name}: {e}"),
                        );
                        return None;
                    }
                }
            }
        }
        if let (Some(req), Some(be)) = (timeouts.request_ms, timeouts.backend_request_ms) {
            if be > req {
                diags.warning(
                    object,
                    format!(
                        "{field}.timeouts: backendRequest is longer than request; request applies"
                    ),
                );
            }
        }
    }
    let retry = match &r.retry {
        None => None,
        Some(rt) => {
            let backoff_ms = match rt.backoff.as_deref().map(parse_duration).transpose() {
                Ok(b) => b,
                Err(e) => {
                    refuse(diags, report, object, format!("{field}.retry.backoff: {e}"));
                    return None;
                }
            };
            let mut codes = Vec::new();
            for c in rt.codes.iter().flatten() {
                match u16::try_from(*c) {
                    Ok(c) if (400..=599).contains(&c) => codes.push(c),
                    _ => {
                        refuse(
                            diags,
                            report,
                            object,
                            format!("{field}.retry.codes: {c} is not a 4xx/5xx status"),
                        );
                        return None;
                    }
                }
            }
            let attempts = rt.attempts.unwrap_or(1).clamp(0, 100) as u32;
            (attempts > 0).then_some(Retry {
                attempts,
                codes,
                backoff_ms,
            })
        }
    };
    Some(HttpRule {
        origin,
        matches,
        filters,
        action,
        timeouts,
        retry,
    })
}

pub(super) fn route_match(m: &HttpRouteRulesMatches) -> Result<RouteMatch, String> {
    let path = match &m.path {
        None => PathMatch::Prefix("/".into()),
        Some(p) => {
            let value = p.value.as_deref().unwrap_or("/");
            match p.r#type.as_ref().unwrap_or(&PathType::PathPrefix) {
                PathType::Exact | PathType::PathPrefix if !value.starts_with('/') => {
                    return Err(format!("path {value:?} must begin with '/'"));
                }
                PathType::Exact => PathMatch::Exact(value.to_string()),
                PathType::PathPrefix => PathMatch::prefix(value),
                PathType::RegularExpression => {
                    check_regex(value)?;
                    PathMatch::RegularExpression(value.to_string())
                }
            }
        }
    };
    let mut headers: Vec<HeaderMatch> = Vec::new();
    for h in m.headers.iter().flatten() {
        // Lowercase, and a name the router can compile: one bad name must not stop the whole table compiling.
        let name = valid_header_name(&h.name)?;
        // "If multiple entries specify equivalent header names, only the first entry with an equivalent name
        // MUST be considered for a match."
        if headers.iter().any(|x| x.name == name) {
            continue;
        }
        let value = match h.r#type.as_ref().unwrap_or(&HeaderType::Exact) {
            HeaderType::Exact => StringMatch::Exact(h.value.clone()),
            HeaderType::RegularExpression => {
                check_regex(&h.value)?;
                StringMatch::RegularExpression(h.value.clone())
            }
        };
        headers.push(HeaderMatch { name, value });
    }
    let mut query_params: Vec<QueryParamMatch> = Vec::new();
    for q in m.query_params.iter().flatten() {
        if query_params.iter().any(|x| x.name == q.name) {
            continue;
        }
        let value = match q.r#type.as_ref().unwrap_or(&QueryType::Exact) {
            QueryType::Exact => StringMatch::Exact(q.value.clone()),
            QueryType::RegularExpression => {
                check_regex(&q.value)?;
                StringMatch::RegularExpression(q.value.clone())
            }
        };
        query_params.push(QueryParamMatch {
            name: q.name.clone(),
            value,
        });
    }
    let method = m.method.as_ref().map(|m| {
        match m {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Connect => "CONNECT",
            Method::Options => "OPTIONS",
            Method::Trace => "TRACE",
            Method::Patch => "PATCH",
        }
        .to_string()
    });
    Ok(RouteMatch {
        path,
        method,
        headers,
        query_params,
    })
}

/// The regex crate's default limit on a compiled pattern (`RegexBuilder::size_limit`): a pattern over it is refused.
const REGEX_SIZE_LIMIT: usize = 10 * (1 << 20);

/// Checks a RegularExpression match value as the regex crate would compile it, without paying for a whole `Regex`
/// (about 50 µs each, twice per pattern per rebuild: most of a 10k-regex rebuild). The router compiles it anchored,
/// as `^(?:{re})$`, so the pattern is first parsed on its own: `/a)|(/b` is invalid alone but valid once wrapped,
/// and would then escape the anchors (matching any path that starts with `/a` or ends with `/b`). Then the
/// anchored pattern is compiled to the NFA the regex crate builds, under its size limit. Same parser, same
/// defaults and same limit as `regex::Regex::new`, so a pattern that passes here compiles in the router.
fn check_regex(re: &str) -> Result<(), String> {
    if let Some(known) = REGEX_CHECKS
        .lock()
        .ok()
        .and_then(|memo| memo.get(re).cloned())
    {
        return known;
    }
    let result = check_regex_uncached(re);
    if let Ok(mut memo) = REGEX_CHECKS.lock() {
        if memo.len() >= REGEX_CHECKS_MAX {
            memo.clear();
        }
        memo.insert(re.into(), result.clone());
    }
    result
}

/// What [`check_regex`] found for each pattern, kept across translations: the answer depends on the pattern only,
/// and a rebuild of a table of thousands of regex routes would otherwise check them all again (about 14 µs each).
/// Control plane only; cleared when it reaches [`REGEX_CHECKS_MAX`] patterns.
static REGEX_CHECKS: std::sync::LazyLock<Mutex<RegexChecks>> =
    std::sync::LazyLock::new(Mutex::default);
type RegexChecks = HashMap<Box<str>, Result<(), String>>;
const REGEX_CHECKS_MAX: usize = 100_000;

fn check_regex_uncached(re: &str) -> Result<(), String> {
    use regex_automata::nfa::thompson;
    let invalid = |why: String| format!("invalid regular expression {re:?}: {why}");
    regex_syntax::parse(re).map_err(|e| invalid(last_line(&e.to_string())))?;
    thompson::Compiler::new()
        .configure(thompson::Config::new().nfa_size_limit(Some(REGEX_SIZE_LIMIT)))
        .build(&format!("^(?:{re})$"))
        .map(|_| ())
        .map_err(|e| {
            invalid(format!(
                "the compiled pattern is larger than {REGEX_SIZE_LIMIT} bytes ({})",
                last_line(&e.to_string())
            ))
        })
}

/// The last non-empty line of a regex error, without its `error: ` label: syntax errors span several lines (the
/// pattern, a caret, then `error: <what>`), which would break one-line diagnostics and status messages.
fn last_line(text: &str) -> String {
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    last.trim().trim_start_matches("error: ").to_string()
}

enum FilterOut {
    Filter(Filter),
    Redirect(Redirect),
    Unsupported(&'static str),
}

/// What filter translation needs besides the filter itself.
struct FilterCtx<'a, 'r> {
    all_prefix: bool,
    route_ns: &'a str,
    refs: &'a Resolver<'r>,
    policies: &'a Policies<'r>,
}

fn translate_filter(
    f: &HttpRouteRulesFilters,
    cx: &FilterCtx<'_, '_>,
) -> Result<FilterOut, String> {
    let all_prefix = cx.all_prefix;
    match f.r#type {
        FilterType::RequestHeaderModifier => {
            let m = f
                .request_header_modifier
                .as_ref()
                .ok_or("type RequestHeaderModifier needs requestHeaderModifier")?;
            Ok(FilterOut::Filter(Filter::RequestHeaderModifier(
                header_modifier(m)?,
            )))
        }
        FilterType::ResponseHeaderModifier => {
            let m: HeaderMod = f
                .response_header_modifier
                .as_ref()
                .and_then(recast)
                .ok_or("type ResponseHeaderModifier needs responseHeaderModifier")?;
            Ok(FilterOut::Filter(Filter::ResponseHeaderModifier(
                header_modifier(&m)?,
            )))
        }
        FilterType::RequestRedirect => {
            let rd = f
                .request_redirect
                .as_ref()
                .ok_or("type RequestRedirect needs requestRedirect")?;
            Ok(FilterOut::Redirect(redirect(rd, all_prefix)?))
        }
        FilterType::UrlRewrite => {
            let rw = f
                .url_rewrite
                .as_ref()
                .ok_or("type URLRewrite needs urlRewrite")?;
            url_rewrite(rw, all_prefix).map(FilterOut::Filter)
        }
        FilterType::RequestMirror => {
            let m = f
                .request_mirror
                .as_ref()
                .ok_or("type RequestMirror needs requestMirror")?;
            mirror(m, cx).map(|m| FilterOut::Filter(Filter::RequestMirror(m)))
        }
        FilterType::Cors => {
            let c = f.cors.as_ref().ok_or("type CORS needs cors")?;
            Ok(FilterOut::Filter(Filter::Cors(Cors {
                allow_origins: c.allow_origins.clone().unwrap_or_default(),
                allow_methods: c.allow_methods.clone().unwrap_or_default(),
                allow_headers: c.allow_headers.clone().unwrap_or_default(),
                expose_headers: c.expose_headers.clone().unwrap_or_default(),
                allow_credentials: c.allow_credentials.unwrap_or(false),
                // The Gateway API default.
                max_age: c.max_age.and_then(|a| u32::try_from(a).ok()).unwrap_or(5),
            })))
        }
        FilterType::ExtensionRef => Ok(FilterOut::Unsupported("ExtensionRef")),
        FilterType::ExternalAuth => Ok(FilterOut::Unsupported("ExternalAuth")),
    }
}

/// A RequestMirror: the mirrored Service (same reference rules as backendRefs) and the share of requests.
fn mirror(
    m: &crate::k8s::gw::types::HttpRouteRulesFiltersRequestMirror,
    cx: &FilterCtx<'_, '_>,
) -> Result<Mirror, String> {
    let b = &m.backend_ref;
    let group = b.group.as_deref().unwrap_or("");
    let kind = b.kind.as_deref().unwrap_or("Service");
    if !group.is_empty() || kind != "Service" {
        return Err(format!(
            "mirror backend kind {group}/{kind} is not supported"
        ));
    }
    let ns = b.namespace.as_deref().unwrap_or(cx.route_ns);
    if !cx
        .refs
        .grant_allows(ROUTE_KIND, cx.route_ns, ("", "Service"), ns, &b.name)
    {
        return Err(format!(
            "mirror to Service {ns}/{} is not permitted: no ReferenceGrant allows it",
            b.name
        ));
    }
    let port = b
        .port
        .ok_or_else(|| format!("mirror to Service {ns}/{} needs a port", b.name))?;
    let backend = match cx.refs.service_backend(ns, &b.name, PortRef::Number(port)) {
        // A mirror reaches its Service as a backendRef does: with the BackendTLSPolicy of the port, if any.
        Ok(s) => match cx.policies.apply(s, cx.refs) {
            Ok(s) => Backend::Service(cx.refs.register(s)),
            Err(reason) => return Err(format!("mirror to Service {ns}/{}: {reason}", b.name)),
        },
        Err(e) => Backend::Invalid {
            status: if e.is_unavailable() { 503 } else { 500 },
            reason: e.to_string(),
        },
    };
    // `percent` or `fraction` (numerator / denominator, default denominator 100); neither means all.
    let per_million = match (&m.percent, &m.fraction) {
        (Some(p), _) => (i64::from((*p).clamp(0, 100)) * 10_000) as u32,
        (None, Some(f)) => {
            let den = i64::from(f.denominator.unwrap_or(100).max(1));
            let num = i64::from(f.numerator.clamp(0, i32::MAX)).min(den);
            (num * 1_000_000 / den) as u32
        }
        (None, None) => 1_000_000,
    };
    Ok(Mirror {
        backend,
        per_million,
    })
}

/// A Gateway API duration (GEP-2257): one to four `<number><unit>` parts, units `h`, `m`, `s`, `ms`, e.g.
/// `1h30m`, `500ms`, `0s`. Returns milliseconds.
pub(crate) fn parse_duration(text: &str) -> Result<u64, String> {
    let err = || format!("{text:?} is not a duration like 500ms, 10s, 1m30s");
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return Err(err());
    }
    let (mut i, mut total, mut parts) = (0usize, 0u64, 0);
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == start || i - start > 5 {
            return Err(err());
        }
        let n: u64 = text[start..i].parse().map_err(|_| err())?;
        let unit_ms = if text[i..].starts_with("ms") {
            i += 2;
            1
        } else {
            let u = bytes.get(i).ok_or_else(err)?;
            i += 1;
            match u {
                b'h' => 3_600_000,
                b'm' => 60_000,
                b's' => 1_000,
                _ => return Err(err()),
            }
        };
        total += n * unit_ms;
        parts += 1;
        if parts > 4 {
            return Err(err());
        }
    }
    Ok(total)
}

fn valid_header_name(name: &str) -> Result<String, String> {
    http::HeaderName::from_bytes(name.as_bytes())
        .map(|n| n.as_str().to_string())
        .map_err(|_| format!("{name:?} is not a valid header name"))
}

fn valid_header_value(value: &str) -> Result<String, String> {
    http::HeaderValue::from_str(value)
        .map(|_| value.to_string())
        .map_err(|_| format!("{value:?} is not a valid header value"))
}

/// Gateway API `HTTPHeader`: "If multiple entries specify equivalent header names, the first entry with an
/// equivalent name MUST be considered ... Subsequent entries with an equivalent header name MUST be ignored."
/// Names are lowercase here, so equivalent names are equal.
fn push_first(list: &mut Vec<(String, String)>, name: String, value: String) {
    if !list.iter().any(|(n, _)| *n == name) {
        list.push((name, value));
    }
}

fn header_modifier(m: &HeaderMod) -> Result<HeaderModifier, String> {
    let mut out = HeaderModifier::default();
    for s in m.set.iter().flatten() {
        let (name, value) = (valid_header_name(&s.name)?, valid_header_value(&s.value)?);
        push_first(&mut out.set, name, value);
    }
    for a in m.add.iter().flatten() {
        let (name, value) = (valid_header_name(&a.name)?, valid_header_value(&a.value)?);
        push_first(&mut out.add, name, value);
    }
    for r in m.remove.iter().flatten() {
        out.remove.push(valid_header_name(r)?);
    }
    Ok(out)
}

fn path_modifier(
    full: Option<&String>,
    prefix: Option<&String>,
    is_full: bool,
    all_prefix: bool,
) -> Result<PathModifier, String> {
    if is_full {
        let v = full.ok_or("path type ReplaceFullPath needs replaceFullPath")?;
        Ok(PathModifier::ReplaceFullPath(v.clone()))
    } else {
        let v = prefix.ok_or("path type ReplacePrefixMatch needs replacePrefixMatch")?;
        if !all_prefix {
            return Err(
                "ReplacePrefixMatch needs every match of the rule to be a PathPrefix match".into(),
            );
        }
        Ok(PathModifier::ReplacePrefixMatch(v.clone()))
    }
}

fn redirect(
    rd: &HttpRouteRulesFiltersRequestRedirect,
    all_prefix: bool,
) -> Result<Redirect, String> {
    let status = match rd.status_code.unwrap_or(302) {
        s @ (301 | 302 | 303 | 307 | 308) => s as u16,
        other => return Err(format!("statusCode {other} is not a redirect status")),
    };
    let port = rd
        .port
        .map(|p| u16::try_from(p).map_err(|_| format!("port {p} is out of range")))
        .transpose()?;
    let path = rd
        .path
        .as_ref()
        .map(|p| {
            path_modifier(
                p.replace_full_path.as_ref(),
                p.replace_prefix_match.as_ref(),
                p.r#type == RedirectPathType::ReplaceFullPath,
                all_prefix,
            )
        })
        .transpose()?;
    Ok(Redirect {
        scheme: rd.scheme.as_ref().map(|s| {
            match s {
                Scheme::Http => "http",
                Scheme::Https => "https",
            }
            .to_string()
        }),
        hostname: rd.hostname.clone(),
        port,
        path,
        status,
    })
}

fn url_rewrite(rw: &HttpRouteRulesFiltersUrlRewrite, all_prefix: bool) -> Result<Filter, String> {
    let path = rw
        .path
        .as_ref()
        .map(|p| {
            path_modifier(
                p.replace_full_path.as_ref(),
                p.replace_prefix_match.as_ref(),
                p.r#type == RewritePathType::ReplaceFullPath,
                all_prefix,
            )
        })
        .transpose()?;
    Ok(Filter::UrlRewrite {
        hostname: rw.hostname.clone(),
        path,
    })
}

fn invalid(status: u16, reason: impl Into<String>) -> Backend {
    Backend::Invalid {
        status,
        reason: reason.into(),
    }
}

/// The weighted backends of a rule. Invalid references become `Backend::Invalid` with 500 (the spec's answer for
/// requests that would have gone to them) and are reported; a Service without ready endpoints answers 503.
fn backend_group(
    brefs: &[HttpRouteRulesBackendRefs],
    field: &str,
    all_prefix: bool,
    object: &ObjectRef,
    cx: &RouteCtx<'_, '_>,
    diags: &mut Diagnostics,
    report: &mut RuleReport,
) -> BackendGroup {
    let refs = cx.refs;
    let route_ns = object.namespace.as_deref().unwrap_or("default");
    if brefs.is_empty() {
        return BackendGroup {
            backends: vec![WeightedBackend {
                weight: 1,
                backend: invalid(500, "rule has no backendRefs"),
                filters: vec![],
            }],
        };
    }
    let mut backends = Vec::new();
    for (bi, b) in brefs.iter().enumerate() {
        let bfield = format!("{field}.backendRefs[{bi}]");
        let weight = match b.weight {
            None => 1,
            Some(w) if w >= 0 => w as u32,
            Some(w) => {
                diags.error(
                    object,
                    format!("{bfield}: weight {w} is negative; backend skipped"),
                );
                continue;
            }
        };
        let mut filters = Vec::new();
        let mut backend = None;
        for (fi, f) in b.filters.iter().flatten().enumerate() {
            let rule_level: Option<HttpRouteRulesFilters> = recast(f);
            let out = rule_level
                .ok_or_else(|| "unreadable filter".to_string())
                .and_then(|f| {
                    translate_filter(
                        &f,
                        &FilterCtx {
                            all_prefix,
                            route_ns,
                            refs,
                            policies: cx.policies,
                        },
                    )
                });
            match out {
                Ok(FilterOut::Filter(f)) => filters.push(f),
                // Requests sent to this backend are answered with the redirect instead.
                Ok(FilterOut::Redirect(rd)) => filters.push(Filter::RequestRedirect(rd)),
                Ok(FilterOut::Unsupported(name)) => {
                    let reason = format!("filter {name} is not supported");
                    diags.error(object, format!("{bfield}.filters[{fi}]: {reason}"));
                    backend = Some(invalid(500, reason));
                }
                Err(e) => {
                    diags.error(object, format!("{bfield}.filters[{fi}]: {e}"));
                    backend = Some(invalid(500, e));
                }
            }
        }
        let backend = backend
            .unwrap_or_else(|| resolve_backend(b, &bfield, route_ns, object, cx, diags, report));
        backends.push(WeightedBackend {
            weight,
            backend,
            filters,
        });
    }
    BackendGroup { backends }
}

fn resolve_backend(
    b: &HttpRouteRulesBackendRefs,
    bfield: &str,
    route_ns: &str,
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
    let s = match routes::resolve_service_ref(&view, bfield, object, cx.refs, diags, report) {
        Ok(s) => s,
        Err(answer) => return answer,
    };
    match cx.policies.apply(s, cx.refs) {
        Ok(s) => Backend::Service(cx.refs.register(s)),
        Err(reason) => {
            diags.warning(
                object,
                format!("{bfield}: {reason}; requests routed to it get 500"),
            );
            invalid(500, reason)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::check_regex;

    /// The check accepts exactly what `regex::Regex::new` compiles, anchored, and rejects what escapes the anchors.
    #[test]
    fn regex_check_agrees_with_the_regex_crate() {
        let patterns = [
            "/api/v[0-9]+/.*",
            "(?i)/Foo",
            "/caf\u{e9}/\\w+",
            "/items/(",
            "[",
            "/a)|(/b",
            "x{2,1}",
            "(?P<n>a)(?P<n>b)",
            "\\p{NoSuchClass}",
            "/\\bx",
            "",
            "\\w{1000}{1000}",
            "[a-z]{100}{100}",
        ];
        for re in patterns {
            let alone = regex::Regex::new(re).is_ok();
            let wrapped = regex::Regex::new(&format!("^(?:{re})$")).is_ok();
            assert_eq!(
                check_regex(re).is_ok(),
                alone && wrapped,
                "{re:?}: {:?}",
                check_regex(re)
            );
        }
        let big = check_regex("\\w{1000}{1000}").expect_err("too big");
        assert!(big.contains("larger than"), "{big}");
        assert!(!big.contains('\n'), "{big}");
    }
}
