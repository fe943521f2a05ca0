//! Gateway API HTTPRoute: attachment to Gateway listeners (parentRefs, allowedRoutes, hostname intersection) and
//! translation of rules (matches, filters, weighted backendRefs) into model rules.

use super::backendtls::Policies;
use super::builder::ModelBuilder;
use super::gateway::Gateways;
use super::refs::{PortRef, Resolver};
use super::routes::{self, Attachment, RouteSource, RuleReport};
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
    HttpRouteRulesMatchesQueryParamsType as QueryType, HttpRouteRulesSessionPersistence,
    HttpRouteRulesSessionPersistenceCookieConfigLifetimeType as LifetimeType,
    HttpRouteRulesSessionPersistenceType as SessionType,
};
use crate::k8s::gw::HTTPRoute;
use crate::k8s::GATEWAY_GROUP;
use crate::model::{
    Action, Backend, BackendGroup, BackendKey, BackendProtocol, ClientCertificate, Cors, Filter,
    HeaderMatch, HeaderModifier, HttpRule, Mirror, Origin, OriginKind, PathMatch, PathModifier,
    QueryParamMatch, Redirect, Retry, RouteMatch, ServiceBackend, SessionCarrier, SessionCookie,
    SessionPersistence, StickyMode, StringMatch, Timeouts, WeightedBackend,
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
                    // Keeps what else set this reference apart from its Service port (HTTP/2 for gRPC).
                    let extra = if key.variant == H2_VARIANT {
                        H2_VARIANT
                    } else {
                        ""
                    };
                    *key = refs.register_variant(s, extra);
                }
            }
        }
    }
    rule
}

/// Adds a route's rules to every listener it attached to, for each of the hostnames it serves there (with the
/// Gateway's backend client certificate on TLS backends, where the Gateway has one), and notes which Gateways
/// send traffic to which Services (for BackendTLSPolicy status).
pub(super) fn add_rules(
    attachments: &[Attachment],
    rules: &[HttpRule],
    report: &RuleReport,
    gws: &Gateways,
    refs: &Resolver<'_>,
    model: &mut ModelBuilder,
    usage: &mut ServiceUsage,
) {
    for a in attachments {
        let l = &gws.listeners[a.listener];
        for svc in &report.services {
            usage
                .entry(svc.clone())
                .or_default()
                .insert(l.gateway.clone());
        }
        for key in &l.keys {
            for host in &a.hostnames {
                for rule in rules {
                    let rule = match &l.backend_client_cert {
                        Some(cc) => with_client_certificate(rule, cc, refs),
                        None => rule.clone(),
                    };
                    model.add_rule(*key, Some(l.hostname.clone()), host.clone(), rule);
                }
            }
        }
    }
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
    let (object, refs) = (&view.object, cx.refs);
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
                namespace: view.ns.to_string(),
                name: view.name.to_string(),
                rule: ri,
                rule_name: r.name.clone(),
                created: created(&route.metadata),
            };
            translate_rule(origin, r, object, cx, diags, report)
        })
        .collect();
    // The Portcullis extension: ingress-nginx annotations on the route (written by `portcullis migrate`).
    let rules: Vec<HttpRule> =
        match super::ingress::route_policy(&route.metadata, object, cx.opts, refs, diags) {
            None => rules,
            Some(p) => rules
                .into_iter()
                .map(|mut r| {
                    if let Some(policy) = &p.policy {
                        r.filters
                            .insert(0, Filter::Policy(Box::new(policy.clone())));
                    }
                    if r.retry.is_none() {
                        r.retry = p.retry.clone();
                    }
                    r.timeouts.connect_ms = r.timeouts.connect_ms.or(p.timeouts.connect_ms);
                    r
                })
                .collect(),
        };

    add_rules(attachments, &rules, report, gws, refs, model, usage);
    attached.finish(&cx.opts.gateway_controller, statuses);
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
    let field = format!("spec.rules[{}]", origin.rule);
    let built = build_rule(&field, r, object, cx, diags, report);
    match built {
        Ok(parts) => Some(HttpRule {
            origin,
            matches: parts.matches,
            filters: parts.filters,
            action: parts.action,
            timeouts: parts.timeouts,
            retry: parts.retry,
            grpc: false,
            session: parts.session,
        }),
        Err(msg) => {
            refuse_rule(msg, object, diags, report);
            None
        }
    }
}

/// Reports a rule refused as a whole (`msg` starts with the rule's field path).
pub(super) fn refuse_rule(
    msg: String,
    object: &ObjectRef,
    diags: &mut Diagnostics,
    report: &mut RuleReport,
) {
    diags.error(object, format!("{msg}; rule skipped"));
    report.invalid_rules.push(msg);
}

/// An HTTPRoute rule's parts, before its origin is attached.
struct RuleParts {
    matches: Vec<RouteMatch>,
    filters: Vec<Filter>,
    action: Action,
    timeouts: Timeouts,
    retry: Option<Retry>,
    session: Option<Box<SessionPersistence>>,
}

/// The parts of an HTTPRoute rule, or why the rule is refused as a whole.
fn build_rule(
    field: &str,
    r: &HttpRouteRules,
    object: &ObjectRef,
    cx: &RouteCtx<'_, '_>,
    diags: &mut Diagnostics,
    report: &mut RuleReport,
) -> Result<RuleParts, String> {
    let matches = http_matches(r.matches.as_deref(), field, object, diags)?;
    let rcx = RuleCx {
        all_prefix: matches
            .iter()
            .all(|m| matches!(m.path, PathMatch::Prefix(_))),
        route_kind: ROUTE_KIND,
        route_ns: object.namespace.as_deref().unwrap_or("default"),
        grpc: false,
        object,
        refs: cx.refs,
        policies: cx.policies,
    };
    let rf = rule_filters(r.filters.as_deref().unwrap_or(&[]), field, &rcx)?;
    warn_unresolved_mirrors(&rf.filters, field, object, diags, report);
    if let Some(rd) = rf.redirect {
        if rf
            .filters
            .iter()
            .any(|f| matches!(f, Filter::UrlRewrite { .. }))
        {
            return Err(format!(
                "{field}: RequestRedirect and URLRewrite cannot be combined"
            ));
        }
        // Gateway API CEL rule on HTTPRouteRule: "RequestRedirect filter must not be used together with
        // backendRefs".
        if r.backend_refs.as_ref().is_some_and(|b| !b.is_empty()) {
            return Err(format!(
                "{field}: RequestRedirect cannot be used together with backendRefs"
            ));
        }
        if rf.unsupported.is_none() {
            return Ok(RuleParts {
                matches,
                filters: rf.filters,
                action: Action::Redirect(rd),
                timeouts: rule_timeouts(r, field, diags, object)?,
                retry: rule_retry(r, field)?,
                session: None,
            });
        }
    }
    let action = forward_action(
        rf.unsupported,
        r.backend_refs.as_deref().unwrap_or(&[]),
        field,
        &rcx,
        diags,
        report,
    );
    Ok(RuleParts {
        filters: rf.filters,
        timeouts: rule_timeouts(r, field, diags, object)?,
        retry: rule_retry(r, field)?,
        session: session_persistence(
            r.session_persistence.as_ref(),
            &matches,
            field,
            object,
            diags,
        )?,
        matches,
        action,
    })
}

/// The cookie a rule's session persistence sets when `sessionName` does not name one.
pub const DEFAULT_SESSION_COOKIE: &str = "portcullis-session";
/// The header a rule's header-based session persistence uses when `sessionName` does not name one.
pub const DEFAULT_SESSION_HEADER: &str = "x-portcullis-session";

/// A rule's `sessionPersistence` (HTTPRoute and GRPCRoute), or why the rule is refused. Keys name endpoints
/// (persistent mode). A cookie's `Path` is the rule's path when all its matches share one literal path, else `/`.
/// `idleTimeout`, and `absoluteTimeout` of a session cookie or a header, are not enforced (warned).
pub(super) fn session_persistence(
    sp: Option<&HttpRouteRulesSessionPersistence>,
    matches: &[RouteMatch],
    field: &str,
    object: &ObjectRef,
    diags: &mut Diagnostics,
) -> Result<Option<Box<SessionPersistence>>, String> {
    let Some(sp) = sp else { return Ok(None) };
    let field = format!("{field}.sessionPersistence");
    let header = matches!(sp.r#type, Some(SessionType::Header));
    let name = match sp.session_name.as_deref() {
        Some(n) if n.is_empty() || n.len() > 128 || !n.bytes().all(is_token_byte) => {
            return Err(format!(
                "{field}.sessionName: {n:?} is not a cookie or header name (1 to 128 token characters)"
            ))
        }
        Some(n) if header => n.to_ascii_lowercase(),
        Some(n) => n.to_string(),
        None if header => DEFAULT_SESSION_HEADER.to_string(),
        None => DEFAULT_SESSION_COOKIE.to_string(),
    };
    let timeout = |v: Option<&str>, key: &str| -> Result<Option<u64>, String> {
        v.map(|t| parse_duration(t).map_err(|e| format!("{field}.{key}: {e}")))
            .transpose()
    };
    let absolute = timeout(sp.absolute_timeout.as_deref(), "absoluteTimeout")?;
    if timeout(sp.idle_timeout.as_deref(), "idleTimeout")?.is_some() {
        diags.warning(
            object,
            format!("{field}.idleTimeout is not applied: a session ends only by absoluteTimeout or when its endpoint is gone"),
        );
    }
    let permanent = sp
        .cookie_config
        .as_ref()
        .and_then(|c| c.lifetime_type.as_ref())
        .is_some_and(|t| matches!(t, LifetimeType::Permanent));
    if permanent && absolute.is_none() {
        return Err(format!(
            "{field}: absoluteTimeout must be set when cookieConfig.lifetimeType is Permanent"
        ));
    }
    if absolute.is_some() && (header || !permanent) {
        diags.warning(
            object,
            format!(
                "{field}.absoluteTimeout is not enforced for a {} (only a Permanent cookie expires)",
                if header { "session header" } else { "session cookie" }
            ),
        );
    }
    let carrier = if header {
        SessionCarrier::Header { name }
    } else {
        SessionCarrier::Cookie(SessionCookie {
            name,
            path: cookie_path(matches),
            domain: None,
            max_age: absolute
                .filter(|_| permanent)
                .map(|ms| i64::try_from(ms.div_ceil(1000)).unwrap_or(i64::MAX)),
            expires: None,
            same_site: None,
            secure: false,
            conditional_same_site_none: false,
        })
    };
    Ok(Some(Box::new(SessionPersistence {
        carrier,
        mode: StickyMode::Persistent,
        change_on_failure: false,
        pins_backend: true,
    })))
}

/// RFC 9110 token characters (cookie and header names).
pub(crate) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The `Path` of a rule's session cookie: the one literal path all its matches share, else `/`.
pub(crate) fn cookie_path(matches: &[RouteMatch]) -> String {
    fn literal(m: &RouteMatch) -> Option<&str> {
        match &m.path {
            PathMatch::Exact(p) | PathMatch::Prefix(p) => Some(p.as_str()),
            PathMatch::RegularExpression(_) => None,
        }
    }
    let first = matches.first().and_then(literal);
    match first {
        Some(p)
            if matches.iter().all(|m| literal(m) == Some(p))
                && p.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b';' && b != b',') =>
        {
            p.to_string()
        }
        _ => "/".to_string(),
    }
}

/// The matches of an HTTPRoute rule (the spec default when it has none); invalid matches are skipped
/// (reported), and a rule left without one is refused.
fn http_matches(
    ms: Option<&[HttpRouteRulesMatches]>,
    field: &str,
    object: &ObjectRef,
    diags: &mut Diagnostics,
) -> Result<Vec<RouteMatch>, String> {
    let Some(ms) = ms.filter(|ms| !ms.is_empty()) else {
        return Ok(vec![RouteMatch::any()]);
    };
    let mut matches = Vec::new();
    for (mi, m) in ms.iter().enumerate() {
        match route_match(m) {
            Ok(m) => matches.push(m),
            Err(e) => diags.error(object, format!("{field}.matches[{mi}]: {e}; match skipped")),
        }
    }
    if matches.is_empty() {
        return Err(format!("{field}: no valid match"));
    }
    Ok(matches)
}

/// A rule's filters, sorted out: the filters that run, a rule-level redirect, and the first filter type that is
/// not supported.
pub(super) struct RuleFilters {
    pub filters: Vec<Filter>,
    pub redirect: Option<Redirect>,
    pub unsupported: Option<&'static str>,
}

/// Translates a rule's filters; an invalid filter refuses the rule.
pub(super) fn rule_filters(
    fs: &[HttpRouteRulesFilters],
    field: &str,
    rcx: &RuleCx<'_, '_>,
) -> Result<RuleFilters, String> {
    let mut out = RuleFilters {
        filters: Vec::new(),
        redirect: None,
        unsupported: None,
    };
    for (fi, f) in fs.iter().enumerate() {
        match translate_filter(f, rcx) {
            Ok(FilterOut::Filter(f)) => out.filters.push(f),
            Ok(FilterOut::Redirect(rd)) => out.redirect = Some(rd),
            Ok(FilterOut::Unsupported(name)) => out.unsupported = Some(name),
            Err(e) => return Err(format!("{field}.filters[{fi}]: {e}")),
        }
    }
    Ok(out)
}

/// Reports the mirrors whose Service cannot be reached (no copies are sent; `ResolvedRefs` turns false).
pub(super) fn warn_unresolved_mirrors(
    filters: &[Filter],
    field: &str,
    object: &ObjectRef,
    diags: &mut Diagnostics,
    report: &mut RuleReport,
) {
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
            report.unresolved(routes::RouteReason::BackendNotFound, reason.clone());
        }
    }
}

/// What a forwarding rule does: its weighted backends, or 500 when one of its filters is not supported (the spec:
/// requests such a filter would have processed get an error, the filter is never skipped).
pub(super) fn forward_action(
    unsupported: Option<&'static str>,
    brefs: &[HttpRouteRulesBackendRefs],
    field: &str,
    rcx: &RuleCx<'_, '_>,
    diags: &mut Diagnostics,
    report: &mut RuleReport,
) -> Action {
    if let Some(name) = unsupported {
        let reason = format!("filter {name} is not supported");
        diags.error(
            rcx.object,
            format!("{field}: {reason}; matching requests get 500"),
        );
        return Action::Forward(BackendGroup {
            backends: vec![WeightedBackend {
                weight: 1,
                backend: invalid(500, reason),
                filters: vec![],
            }],
        });
    }
    Action::Forward(backend_group(brefs, field, rcx, diags, report))
}

/// The rule's `timeouts`.
fn rule_timeouts(
    r: &HttpRouteRules,
    field: &str,
    diags: &mut Diagnostics,
    object: &ObjectRef,
) -> Result<Timeouts, String> {
    let mut timeouts = Timeouts::default();
    let Some(t) = &r.timeouts else {
        return Ok(timeouts);
    };
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
                Err(e) => return Err(format!("{field}.timeouts.{name}: {e}")),
            }
        }
    }
    if let (Some(req), Some(be)) = (timeouts.request_ms, timeouts.backend_request_ms) {
        if be > req {
            diags.warning(
                object,
                format!("{field}.timeouts: backendRequest is longer than request; request applies"),
            );
        }
    }
    Ok(timeouts)
}

/// The rule's `retry`.
fn rule_retry(r: &HttpRouteRules, field: &str) -> Result<Option<Retry>, String> {
    let Some(rt) = &r.retry else {
        return Ok(None);
    };
    let backoff_ms = rt
        .backoff
        .as_deref()
        .map(parse_duration)
        .transpose()
        .map_err(|e| format!("{field}.retry.backoff: {e}"))?;
    let mut codes = Vec::new();
    for c in rt.codes.iter().flatten() {
        match u16::try_from(*c) {
            Ok(c) if (400..=599).contains(&c) => codes.push(c),
            _ => return Err(format!("{field}.retry.codes: {c} is not a 4xx/5xx status")),
        }
    }
    let attempts = rt.attempts.unwrap_or(1).clamp(0, 100) as u32;
    Ok((attempts > 0).then(|| Retry::gateway(attempts, codes, backoff_ms)))
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
        grpc: None,
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
pub(super) fn check_regex(re: &str) -> Result<(), String> {
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

/// What translating the filters and backends of one rule needs besides them.
pub(super) struct RuleCx<'a, 'r> {
    /// Every match of the rule is a path prefix (ReplacePrefixMatch is allowed).
    pub all_prefix: bool,
    /// (group, kind) of the route, for ReferenceGrants.
    pub route_kind: (&'static str, &'static str),
    pub route_ns: &'a str,
    /// The rule serves gRPC: its backends and mirrors are spoken to in HTTP/2.
    pub grpc: bool,
    pub object: &'a ObjectRef,
    pub refs: &'a Resolver<'r>,
    pub policies: &'a Policies<'r>,
}

impl RuleCx<'_, '_> {
    /// Holds a resolved backend in the model (with its BackendTLSPolicy applied), as this rule speaks to it: a
    /// gRPC rule's backend speaks HTTP/2 whatever its Service port's `appProtocol` says, as a variant `h2` of the
    /// port when the port's own protocol differs.
    fn register(&self, s: ServiceBackend) -> Result<BackendKey, String> {
        let mut s = self.policies.apply(s, self.refs)?;
        if self.grpc && s.protocol != BackendProtocol::H2c {
            s.protocol = BackendProtocol::H2c;
            return Ok(self.refs.register_variant(s, H2_VARIANT));
        }
        Ok(self.refs.register(s))
    }
}

/// The variant label of a Service port spoken to in HTTP/2 by a gRPC rule although its `appProtocol` does not say
/// so.
pub(super) const H2_VARIANT: &str = "h2";

fn translate_filter(f: &HttpRouteRulesFilters, cx: &RuleCx<'_, '_>) -> Result<FilterOut, String> {
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
    cx: &RuleCx<'_, '_>,
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
        .grant_allows(cx.route_kind, cx.route_ns, ("", "Service"), ns, &b.name)
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
        Ok(s) => match cx.register(s) {
            Ok(key) => Backend::Service(key),
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

pub(super) fn valid_header_name(name: &str) -> Result<String, String> {
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
    rcx: &RuleCx<'_, '_>,
    diags: &mut Diagnostics,
    report: &mut RuleReport,
) -> BackendGroup {
    if brefs.is_empty() {
        return BackendGroup {
            backends: vec![WeightedBackend {
                weight: 1,
                backend: invalid(500, "rule has no backendRefs"),
                filters: vec![],
            }],
        };
    }
    let object = rcx.object;
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
        let (filters, refused) = backend_filters(b, &bfield, rcx, diags);
        let backend = refused.unwrap_or_else(|| resolve_backend(b, &bfield, rcx, diags, report));
        backends.push(WeightedBackend {
            weight,
            backend,
            filters,
        });
    }
    BackendGroup { backends }
}

/// The filters of one backendRef; and the answer its requests get instead when one of them is invalid or not
/// supported (reported).
fn backend_filters(
    b: &HttpRouteRulesBackendRefs,
    bfield: &str,
    rcx: &RuleCx<'_, '_>,
    diags: &mut Diagnostics,
) -> (Vec<Filter>, Option<Backend>) {
    let mut filters = Vec::new();
    let mut refused = None;
    for (fi, f) in b.filters.iter().flatten().enumerate() {
        let rule_level: Option<HttpRouteRulesFilters> = recast(f);
        let out = rule_level
            .ok_or_else(|| "unreadable filter".to_string())
            .and_then(|f| translate_filter(&f, rcx));
        match out {
            Ok(FilterOut::Filter(f)) => filters.push(f),
            // Requests sent to this backend are answered with the redirect instead.
            Ok(FilterOut::Redirect(rd)) => filters.push(Filter::RequestRedirect(rd)),
            Ok(FilterOut::Unsupported(name)) => {
                let reason = format!("filter {name} is not supported");
                diags.error(rcx.object, format!("{bfield}.filters[{fi}]: {reason}"));
                refused = Some(invalid(500, reason));
            }
            Err(e) => {
                diags.error(rcx.object, format!("{bfield}.filters[{fi}]: {e}"));
                refused = Some(invalid(500, e));
            }
        }
    }
    (filters, refused)
}

fn resolve_backend(
    b: &HttpRouteRulesBackendRefs,
    bfield: &str,
    rcx: &RuleCx<'_, '_>,
    diags: &mut Diagnostics,
    report: &mut RuleReport,
) -> Backend {
    let view = routes::backend_ref_view!(b, rcx.route_kind, rcx.route_ns);
    let s = match routes::resolve_service_ref(&view, bfield, rcx.object, rcx.refs, diags, report) {
        Ok(s) => s,
        Err(answer) => return answer,
    };
    match rcx.register(s) {
        Ok(key) => Backend::Service(key),
        Err(reason) => {
            diags.warning(
                rcx.object,
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
