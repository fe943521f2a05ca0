//! `portcullis migrate`: Ingresses in, Gateway API objects out, with a verdict for every Ingress path and a proof.
//!
//! Pure: objects in, objects and a report out. Each Ingress path (of an Ingress we serve) gets one verdict:
//! - **equivalent**: a plain HTTPRoute rule does exactly what the Ingress path does;
//! - **equivalent through the Portcullis extension**: the path carries ingress-nginx behaviour (an annotation, or
//!   the ingress-nginx profile's defaults) that Gateway API has no field for; the HTTPRoute carries the same
//!   annotations and `portcullis.dev/ingress-nginx-profile`, which Portcullis applies (docs/migration.md);
//! - **not expressible**: it stays on the Ingress (host-wide ingress-nginx behaviour, one-label wildcards,
//!   default backends, unresolvable Services...), with the reason.
//!
//! Paths are moved when they are expressible and selected by `--only`; the Ingresses are trimmed to the paths
//! that stay. The result (the generated objects, the trimmed Ingresses, the other input objects) is then
//! translated like any configuration and compared with the input by [`crate::equiv`]: that is the proof.

pub mod objects;

use crate::equiv;
use crate::k8s::Ingress;
use crate::model::{
    Action, Backend, Filter, HostPattern, HttpRule, Model, OriginKind, PathMatch, Protocol,
};
use crate::source::Input;
use crate::translate::{self, nginx, Options as TranslateOptions, Severity};
use objects::*;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Annotation of an HTTPRoute: apply its ingress-nginx annotations with this profile's defaults
/// (`ingress-nginx` or `ingress-v1`).
pub const PROFILE_ANNOTATION: &str = "portcullis.dev/ingress-nginx-profile";
/// Annotation of an HTTPRoute: its hosts have a certificate of their own (ingress-nginx's `ssl-redirect`
/// applies only then).
pub const HOST_TLS_ANNOTATION: &str = "portcullis.dev/ingress-nginx-host-tls";
/// Annotation of an HTTPRoute: the Ingress (same namespace) whose annotation scope it continues (rate-limit
/// zones are per Ingress).
pub const SCOPE_ANNOTATION: &str = "portcullis.dev/ingress-nginx-scope";

/// What to move.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The Gateway to create: namespace and name.
    pub gateway: (String, String),
    /// `--only HOST[/PATH]`; empty moves everything expressible.
    pub only: Vec<Selector>,
    /// How the input translates.
    pub translate: TranslateOptions,
}

/// `--only HOST[/PATH]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    /// The host, as the Ingress writes it (`*` for rules without a host).
    pub host: String,
    /// Only paths that start with this.
    pub path: Option<String>,
}

impl Selector {
    /// Parses `HOST[/PATH]`.
    pub fn parse(s: &str) -> Result<Selector, String> {
        let (host, path) = match s.find('/') {
            Some(i) => (&s[..i], Some(s[i..].to_string())),
            None => (s, None),
        };
        if host.is_empty() {
            return Err(format!("--only {s:?}: expected HOST or HOST/PATH"));
        }
        Ok(Selector {
            host: host.to_ascii_lowercase(),
            path,
        })
    }

    fn selects(&self, host: &str, path: &str) -> bool {
        self.host == host && self.path.as_deref().is_none_or(|p| path.starts_with(p))
    }
}

/// The verdict on one Ingress path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", content = "detail", rename_all = "kebab-case")]
pub enum Verdict {
    /// A plain HTTPRoute rule.
    Equivalent,
    /// An HTTPRoute rule with the Portcullis extension (what it carries).
    Extension(String),
    /// Stays on the Ingress (why).
    NotExpressible(String),
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Equivalent => f.write_str("equivalent"),
            Verdict::Extension(d) => write!(f, "equivalent through the Portcullis extension ({d})"),
            Verdict::NotExpressible(d) => write!(f, "not expressible in Gateway API ({d})"),
        }
    }
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PathReport {
    /// `namespace/name` of the Ingress.
    pub ingress: String,
    /// The host (`*` for none).
    pub host: String,
    /// The path and its type (`defaultBackend` for the default backend).
    pub path: String,
    /// The verdict.
    pub verdict: Verdict,
    /// Moved to an HTTPRoute in this step.
    pub moved: bool,
}

/// What `migrate` produces.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Output {
    /// The GatewayClass, when the input has none of ours.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_class: Option<GatewayClass>,
    /// The Gateway (absent when nothing moves).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Gateway>,
    /// The HTTPRoutes.
    pub routes: Vec<HttpRoute>,
    /// ReferenceGrants for certificates in other namespaces.
    pub grants: Vec<ReferenceGrant>,
    /// Every Ingress of the input, trimmed to what stays; `None` where nothing stays (delete it).
    #[serde(skip)]
    pub ingresses: Vec<(String, Option<Ingress>)>,
    /// One line per Ingress path.
    pub report: Vec<PathReport>,
}

/// The model rules of each Ingress path, by (namespace, name, path index).
type RulesByPath<'m> = BTreeMap<(String, String, usize), Vec<(&'m HostPattern, &'m HttpRule)>>;

fn rules_by_path(model: &Model) -> RulesByPath<'_> {
    let mut out: RulesByPath<'_> = BTreeMap::new();
    for l in &model.listeners {
        if l.protocol() != Protocol::Http {
            continue;
        }
        for vh in l.http().map_or(&[][..], |h| &h.virtual_hosts[..]) {
            for r in &vh.rules {
                if r.origin.kind == OriginKind::Ingress {
                    out.entry((
                        r.origin.namespace.clone(),
                        r.origin.name.clone(),
                        r.origin.rule,
                    ))
                    .or_default()
                    .push((&vh.hostname, r));
                }
            }
        }
    }
    out
}

fn ns_of(ing: &Ingress) -> &str {
    ing.metadata.namespace.as_deref().unwrap_or("default")
}

fn name_of(ing: &Ingress) -> &str {
    ing.metadata.name.as_deref().unwrap_or("")
}

/// The verdict on one path from the rules the input's translation made of it.
fn judge(rules: &[(&HostPattern, &HttpRule)], host: &HostPattern) -> Verdict {
    use Verdict::NotExpressible as No;
    let Some((_, main)) = rules.iter().find(|(h, _)| *h == host) else {
        return No("the path is not served (see `portcullis validate`)".into());
    };
    if rules.iter().any(|(h, _)| *h != host) {
        return No(
            "ingress-nginx serves it on other hosts too (server-alias or www redirect)".into(),
        );
    }
    if rules.len() > 1 {
        return No("ingress-nginx's redirect of the path without its trailing slash".into());
    }
    if let HostPattern::Wildcard { .. } = host {
        return No(
            "an Ingress wildcard covers one DNS label, a Gateway API wildcard any number".into(),
        );
    }
    if matches!(main.matches[0].path, PathMatch::RegularExpression(_)) {
        return No("ingress-nginx regex location (use-regex or rewrite-target on the host)".into());
    }
    let Action::Forward(group) = &main.action else {
        return No("a redirect".into());
    };
    for b in &group.backends {
        match &b.backend {
            Backend::Service(k) if k.variant.is_empty() => {}
            Backend::Service(k) => return No(variant_reason(&k.variant)),
            Backend::Invalid { status, reason } => {
                return No(format!(
                    "the backend does not resolve ({reason}): an Ingress answers {status}, an HTTPRoute 500"
                ))
            }
        }
    }
    if group.backends.len() != 1 {
        return No("a canary".into());
    }
    if let Some(s) = &main.session {
        if let Err(why) = session_persistence(s, main) {
            return No(why);
        }
    }
    if main
        .filters
        .iter()
        .any(|f| matches!(f, Filter::CustomErrors(_)))
    {
        return No(
            "custom-http-errors (its error backend is the Ingress's default-backend, which a route's annotations \
             do not carry)"
                .into(),
        );
    }
    // ingress-nginx's retry policy and connect timeout travel with the extension's annotations too.
    let retries = main.retry.is_some() || main.timeouts.connect_ms.is_some();
    match main.filters.as_slice() {
        [] if !retries => Verdict::Equivalent,
        [] => Verdict::Extension("ingress-nginx policy: retries".into()),
        [Filter::Policy(p)] => {
            if p.canary.is_some() {
                return No("a canary".into());
            }
            if p.app_root.is_some() {
                return No("app-root (host-wide)".into());
            }
            if p.rewrite.is_some() || p.www_redirect.is_some() {
                return No("host-wide ingress-nginx behaviour".into());
            }
            let mut what: Vec<&str> = Vec::new();
            let named = [
                (p.denied.is_some(), "denied"),
                (p.redirect.is_some(), "redirect"),
                (p.ssl_redirect.is_some(), "ssl-redirect"),
                (p.upstream_host.is_some(), "upstream-vhost"),
                (p.max_body_bytes.is_some(), "body size"),
                (
                    p.read_timeout_s.is_some() || p.send_timeout_s.is_some(),
                    "timeouts",
                ),
                (!p.source_ranges.is_empty(), "source ranges"),
                (p.cors.is_some(), "CORS"),
                (p.basic_auth.is_some(), "basic auth"),
                (p.external_auth.is_some(), "external auth"),
                (p.rate_limit.is_some(), "rate limit"),
                (p.forwarded.is_some(), "forwarded headers"),
                (retries, "retries"),
            ];
            for (on, n) in named {
                if on {
                    what.push(n);
                }
            }
            Verdict::Extension(format!("ingress-nginx policy: {}", what.join(", ")))
        }
        _ => No("filters Gateway API cannot carry".into()),
    }
}

/// The Gateway API form of an Ingress path's cookie affinity, when the HTTPRoute rule it makes behaves the same
/// (the same cookie, attributes and keys: persistent keys name the endpoint of the same Service port, so cookies
/// issued before the move keep their sessions); otherwise why not.
fn session_persistence(
    s: &crate::model::SessionPersistence,
    rule: &HttpRule,
) -> Result<SessionPersistence, String> {
    use crate::model::{SessionCarrier, StickyMode};
    let SessionCarrier::Cookie(c) = &s.carrier else {
        return Err("a session header".into());
    };
    if s.mode != StickyMode::Persistent {
        return Err(
            "affinity-mode balanced (ingress-nginx's default): Gateway API session persistence pins a session to              its endpoint, as affinity-mode: persistent does"
                .into(),
        );
    }
    let unsupported = [
        (s.change_on_failure, "session-cookie-change-on-failure"),
        (!s.pins_backend, "affinity-canary-behavior: legacy"),
        (c.domain.is_some(), "session-cookie-domain"),
        (c.expires.is_some(), "session-cookie-expires"),
        (c.same_site.is_some(), "session-cookie-samesite"),
        (c.secure, "session-cookie-secure"),
        (
            c.conditional_same_site_none,
            "session-cookie-conditional-samesite-none",
        ),
    ];
    if let Some((_, what)) = unsupported.iter().find(|(on, _)| *on) {
        return Err(format!(
            "affinity with {what}, which Gateway API session persistence cannot express"
        ));
    }
    if c.path != translate::session_cookie_path(&rule.matches) {
        return Err(format!(
            "session-cookie-path {} differs from the path an HTTPRoute's session cookie gets",
            c.path
        ));
    }
    if c.name.is_empty() || c.name.len() > 128 || !c.name.bytes().all(translate::is_token_byte) {
        return Err(format!(
            "session-cookie-name {:?} is not a Gateway API sessionName",
            c.name
        ));
    }
    let lifetime = match c.max_age {
        None => None,
        Some(n) if n > 0 => Some(gateway_duration(n.unsigned_abs())),
        Some(n) => return Err(format!("session-cookie-max-age {n}")),
    };
    Ok(SessionPersistence {
        session_name: c.name.clone(),
        kind: "Cookie",
        cookie_config: lifetime.as_ref().map(|_| CookieConfig {
            lifetime_type: "Permanent",
        }),
        absolute_timeout: lifetime,
    })
}

/// Seconds as a Gateway API duration (`1h2m3s`; each part at most 5 digits).
fn gateway_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    out
}

/// Why a path whose backend is a variant of its Service port (settings from ingress-nginx backend annotations)
/// has no Gateway API equivalent migrate can write. `variant` is the key's label (`apply_nginx_backend`).
fn variant_reason(variant: &str) -> String {
    let parts: Vec<&str> = variant.split(',').collect();
    let has = |p: &str| parts.contains(&p);
    if has("protocol=grpcs") {
        "backend-protocol GRPCS: TLS to the backend without checking its certificate, which Gateway API cannot \
         express (a BackendTLSPolicy always checks it)"
            .into()
    } else if has("protocol=https") && has("verify") {
        "backend-protocol HTTPS with proxy-ssl-verify: not per route; a BackendTLSPolicy on the Service port (the \
         Secret's ca.crt in a ConfigMap, proxy-ssl-name as its hostname, which it always sends as SNI) checks the \
         backend the same way for every route of the port, and migrate does not write one"
            .into()
    } else if has("protocol=https") {
        "backend-protocol HTTPS without proxy-ssl-verify: TLS to the backend without checking its certificate, \
         which Gateway API cannot express (a BackendTLSPolicy always checks it)"
            .into()
    } else {
        "a backend with per-route settings".into()
    }
}

/// Does the host have a certificate of its own among the Ingress TLS certificates (what ingress-nginx's
/// `ssl-redirect` asks)?
fn host_has_tls(certs: &[HostPattern], host: &HostPattern) -> bool {
    certs.iter().any(|t| match (t, host) {
        (HostPattern::Any, HostPattern::Any) => true,
        (HostPattern::Any, _) => false,
        (t, HostPattern::Exact(h)) => t.matches(h),
        (t, h) => t == h,
    })
}

/// A DNS-1123 name piece of a host.
fn slug(host: &str) -> String {
    host.replace("*.", "wildcard.")
        .replace('.', "-")
        .trim_matches('-')
        .to_string()
}

/// Runs the migration on `input` (no I/O).
pub fn migrate(input: &Input, opts: &Options) -> Output {
    let topts = &opts.translate;
    let translated = translate::translate(input, topts);
    let model = &translated.model;
    let by_path = rules_by_path(model);
    let rejected: BTreeSet<(String, String)> = translated
        .rejected
        .iter()
        .map(|o| (o.namespace.clone().unwrap_or_default(), o.name.clone()))
        .collect();
    let https = model.listeners.iter().find(|l| {
        l.port == topts.https_port && l.address.is_none() && l.protocol() == Protocol::Https
    });
    let cert_hosts: Vec<HostPattern> = https
        .and_then(|l| l.tls())
        .map(|t| t.certificates.iter().map(|c| c.hostname.clone()).collect())
        .unwrap_or_default();

    let mut out = Output::default();
    // HTTPRoutes already in the input (an earlier step's): generated names avoid them.
    let existing_routes: BTreeSet<(String, String)> = input
        .http_routes
        .iter()
        .map(|r| {
            (
                r.metadata.namespace.clone().unwrap_or_default(),
                r.metadata.name.clone().unwrap_or_default(),
            )
        })
        .collect();
    // (namespace, route name) -> route
    let mut routes: BTreeMap<(String, String), HttpRoute> = BTreeMap::new();
    let (gw_ns, gw_name) = opts.gateway.clone();
    // Certificates for the Gateway: (host pattern text or None, namespace, secret), in Ingress order.
    let mut certificates: Vec<(Option<String>, String, String)> = Vec::new();

    for ing in &input.ingresses {
        let ns = ns_of(ing).to_string();
        let name = name_of(ing).to_string();
        let key = format!("{ns}/{name}");
        let profile = nginx::profile_of(ing, input, topts);
        if profile.is_none() {
            out.ingresses.push((key, Some(ing.as_ref().clone())));
            continue;
        }
        let refused = rejected.contains(&(ns.clone(), name.clone()));
        let is_canary = {
            let prefix = format!("{}/canary", topts.nginx.annotations_prefix);
            ing.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(&prefix))
                .is_some_and(|v| v == "true")
        };
        let mut trimmed = ing.as_ref().clone();
        trimmed.status = None;
        let mut moved_any = false;
        let mut index = 0usize;
        let spec = trimmed.spec.get_or_insert_with(Default::default);
        if spec.default_backend.is_some() {
            out.report.push(PathReport {
                ingress: key.clone(),
                host: "*".into(),
                path: "defaultBackend".into(),
                verdict: Verdict::NotExpressible("Gateway API has no default backend".into()),
                moved: false,
            });
        }
        for rule in spec.rules.iter_mut().flatten() {
            let host_text = rule
                .host
                .as_deref()
                .filter(|h| !h.is_empty())
                .map(str::to_ascii_lowercase);
            let host = match &host_text {
                None => Some(HostPattern::Any),
                Some(h) => HostPattern::ingress(h).ok(),
            };
            let Some(http) = rule.http.as_mut() else {
                continue;
            };
            let mut kept = Vec::new();
            for path in std::mem::take(&mut http.paths) {
                let this = index;
                index += 1;
                let raw = path
                    .path
                    .clone()
                    .filter(|p| !p.is_empty())
                    .unwrap_or("/".into());
                let ptype = path.path_type.clone();
                let shown_host = host_text.clone().unwrap_or("*".into());
                let verdict = if refused {
                    Verdict::NotExpressible("its annotations are refused".into())
                } else if is_canary {
                    Verdict::NotExpressible("a canary Ingress".into())
                } else {
                    match (&host, by_path.get(&(ns.clone(), name.clone(), this))) {
                        (Some(h), Some(rules)) => judge(rules, h),
                        _ => Verdict::NotExpressible(
                            "the path is not served (see `portcullis validate`)".into(),
                        ),
                    }
                };
                let selected =
                    opts.only.is_empty() || opts.only.iter().any(|s| s.selects(&shown_host, &raw));
                let movable = !matches!(verdict, Verdict::NotExpressible(_)) && selected;
                if movable {
                    let (Some(h), Some(rules)) =
                        (&host, by_path.get(&(ns.clone(), name.clone(), this)))
                    else {
                        kept.push(path);
                        continue;
                    };
                    let main = rules[0].1;
                    let route_name = if ing
                        .spec
                        .iter()
                        .flat_map(|s| s.rules.iter().flatten())
                        .filter(|r| {
                            r.host.as_deref().unwrap_or("") != host_text.as_deref().unwrap_or("")
                        })
                        .count()
                        == 0
                    {
                        name.clone()
                    } else {
                        format!("{name}-{}", slug(host_text.as_deref().unwrap_or("any")))
                    };
                    let mut route_name = route_name;
                    let mut n = 2;
                    while existing_routes.contains(&(ns.clone(), route_name.clone())) {
                        route_name = format!(
                            "{}-{n}",
                            route_name.trim_end_matches(&format!("-{}", n - 1))
                        );
                        n += 1;
                    }
                    let route = routes
                        .entry((ns.clone(), route_name.clone()))
                        .or_insert_with(|| {
                            let mut annotations = BTreeMap::new();
                            if matches!(verdict, Verdict::Extension(_)) {
                                let prefix = format!("{}/", topts.nginx.annotations_prefix);
                                for (k, v) in ing.metadata.annotations.iter().flatten() {
                                    if k.starts_with(&prefix) {
                                        annotations.insert(k.clone(), v.clone());
                                    }
                                }
                                annotations.insert(
                                    PROFILE_ANNOTATION.into(),
                                    match profile {
                                        Some(nginx::Profile::IngressNginx) => "ingress-nginx",
                                        _ => "ingress-v1",
                                    }
                                    .into(),
                                );
                                annotations.insert(
                                    HOST_TLS_ANNOTATION.into(),
                                    host_has_tls(&cert_hosts, h).to_string(),
                                );
                                annotations.insert(SCOPE_ANNOTATION.into(), name.clone());
                            }
                            HttpRoute {
                                api_version: API_VERSION,
                                kind: "HTTPRoute",
                                metadata: Meta {
                                    name: route_name.clone(),
                                    namespace: Some(ns.clone()),
                                    annotations,
                                },
                                spec: HttpRouteSpec {
                                    parent_refs: vec![ParentRef {
                                        kind: "Gateway",
                                        namespace: gw_ns.clone(),
                                        name: gw_name.clone(),
                                    }],
                                    hostnames: host_text.iter().cloned().collect(),
                                    rules: Vec::new(),
                                },
                            }
                        });
                    let (kind, value) = match &main.matches[0].path {
                        PathMatch::Exact(v) => ("Exact", v.clone()),
                        PathMatch::Prefix(v) => ("PathPrefix", v.clone()),
                        PathMatch::RegularExpression(v) => ("RegularExpression", v.clone()),
                    };
                    let backend_refs = match &main.action {
                        Action::Forward(g) => g
                            .backends
                            .iter()
                            .filter_map(|b| match &b.backend {
                                Backend::Service(k) => Some(BackendRef {
                                    name: k.name.clone(),
                                    port: k.port,
                                    weight: b.weight,
                                }),
                                Backend::Invalid { .. } => None,
                            })
                            .collect(),
                        Action::Redirect(_) => Vec::new(),
                    };
                    route.spec.rules.push(HttpRouteRule {
                        matches: vec![HttpRouteMatch {
                            path: PathCondition { kind, value },
                        }],
                        backend_refs,
                        // Judged expressible above.
                        session_persistence: main
                            .session
                            .as_ref()
                            .and_then(|s| session_persistence(s, main).ok()),
                    });
                    moved_any = true;
                } else {
                    kept.push(path);
                }
                out.report.push(PathReport {
                    ingress: key.clone(),
                    host: shown_host,
                    path: format!("{raw} ({ptype})"),
                    verdict,
                    moved: movable,
                });
            }
            http.paths = kept;
        }
        // Rules whose paths all moved go; an Ingress with nothing left goes.
        if let Some(rules) = spec.rules.as_mut() {
            rules.retain(|r| r.http.as_ref().is_none_or(|h| !h.paths.is_empty()));
        }
        let empty =
            spec.rules.as_ref().is_none_or(|r| r.is_empty()) && spec.default_backend.is_none();
        let _ = moved_any;
        out.ingresses.push((key, (!empty).then_some(trimmed)));
    }
    // The Gateway takes every Ingress certificate (also of Ingresses that keep serving: they share port 443), in
    // the order the Ingress translation uses (oldest Ingress first), so SNI picks the same one.
    for ing in sorted_by_age(&input.ingresses) {
        if nginx::profile_of(ing, input, topts).is_none() {
            continue;
        }
        for t in ing.spec.iter().flat_map(|s| s.tls.iter().flatten()) {
            let Some(secret) = t.secret_name.clone().filter(|s| !s.is_empty()) else {
                continue;
            };
            let hosts = t.hosts.clone().unwrap_or_default();
            if hosts.is_empty() {
                certificates.push((None, ns_of(ing).to_string(), secret.clone()));
            }
            for h in hosts {
                certificates.push((
                    Some(h.to_ascii_lowercase()),
                    ns_of(ing).to_string(),
                    secret.clone(),
                ));
            }
        }
    }

    out.routes = routes.into_values().collect();
    if out.routes.is_empty() {
        return out;
    }
    let class_name = input
        .gateway_classes
        .iter()
        .find(|c| c.spec.controller_name == topts.gateway_controller)
        .and_then(|c| c.metadata.name.clone());
    let class_name = match class_name {
        Some(n) => n,
        None => {
            out.gateway_class = Some(GatewayClass {
                api_version: API_VERSION,
                kind: "GatewayClass",
                metadata: Meta {
                    name: "portcullis".into(),
                    namespace: None,
                    annotations: BTreeMap::new(),
                },
                spec: GatewayClassSpec {
                    controller_name: topts.gateway_controller.clone(),
                },
            });
            "portcullis".into()
        }
    };
    let all = AllowedRoutes {
        namespaces: FromNamespaces { from: "All" },
    };
    let mut listeners = vec![GatewayListener {
        name: "http".into(),
        port: topts.http_port,
        protocol: "HTTP",
        hostname: None,
        tls: None,
        allowed_routes: all.clone(),
    }];
    let secret_ref = |ns: &str, secret: &str| ObjectRef {
        kind: "Secret",
        name: secret.to_string(),
        namespace: (ns != gw_ns).then(|| ns.to_string()),
    };
    if let Some((_, fns, fsecret)) = certificates
        .iter()
        .find(|(h, _, _)| h.is_none())
        .or(certificates.first())
    {
        // The catch-all HTTPS listener: the certificate every other name gets (the Ingress translation's
        // fallback), then one listener per certificate host.
        listeners.push(GatewayListener {
            name: "https".into(),
            port: topts.https_port,
            protocol: "HTTPS",
            hostname: None,
            tls: Some(ListenerTls {
                mode: "Terminate",
                certificate_refs: vec![secret_ref(fns, fsecret)],
            }),
            allowed_routes: all.clone(),
        });
        let mut seen = BTreeSet::new();
        for (h, ns, secret) in &certificates {
            let Some(h) = h else { continue };
            if !seen.insert(h.clone()) {
                continue;
            }
            listeners.push(GatewayListener {
                name: format!("https-{}", slug(h)),
                port: topts.https_port,
                protocol: "HTTPS",
                hostname: Some(h.clone()),
                tls: Some(ListenerTls {
                    mode: "Terminate",
                    certificate_refs: vec![secret_ref(ns, secret)],
                }),
                allowed_routes: all.clone(),
            });
        }
    }
    // ReferenceGrants: the Gateway reads Secrets of other namespaces.
    let mut by_ns: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (_, ns, secret) in &certificates {
        if *ns != gw_ns {
            by_ns.entry(ns.clone()).or_default().insert(secret.clone());
        }
    }
    for (ns, secrets) in by_ns {
        out.grants.push(ReferenceGrant {
            api_version: GRANT_API_VERSION,
            kind: "ReferenceGrant",
            metadata: Meta {
                name: format!("{gw_name}-certificates"),
                namespace: Some(ns),
                annotations: BTreeMap::new(),
            },
            spec: ReferenceGrantSpec {
                from: vec![GrantFrom {
                    group: crate::k8s::GATEWAY_GROUP,
                    kind: "Gateway",
                    namespace: gw_ns.clone(),
                }],
                to: secrets
                    .into_iter()
                    .map(|name| GrantTo {
                        group: "",
                        kind: "Secret",
                        name,
                    })
                    .collect(),
            },
        });
    }
    out.gateway = Some(Gateway {
        api_version: API_VERSION,
        kind: "Gateway",
        metadata: Meta {
            name: gw_name.clone(),
            namespace: Some(gw_ns.clone()),
            annotations: BTreeMap::new(),
        },
        spec: GatewaySpec {
            gateway_class_name: class_name,
            listeners,
        },
    });
    out
}

fn sorted_by_age(ings: &[std::sync::Arc<Ingress>]) -> Vec<&Ingress> {
    let mut v: Vec<&Ingress> = ings.iter().map(|i| i.as_ref()).collect();
    v.sort_by_key(|i| {
        i.metadata
            .creation_timestamp
            .as_ref()
            .map_or((1, 0), |t| (0, t.0.as_second()))
    });
    v
}

/// The files `--out` holds, in order: (file name, YAML text).
pub fn files(out: &Output, input: &Input) -> Result<Vec<(&'static str, String)>, String> {
    let err = |e: serde_saphyr::ser::Error| e.to_string();
    let mut files = Vec::new();
    let mut gw = String::new();
    if let Some(c) = &out.gateway_class {
        gw.push_str(&doc(&serde_saphyr::to_string(c).map_err(err)?));
    }
    if let Some(g) = &out.gateway {
        gw.push_str(&doc(&serde_saphyr::to_string(g).map_err(err)?));
    }
    files.push(("gateway.yaml", gw));
    let mut routes = String::new();
    for r in &out.routes {
        routes.push_str(&doc(&serde_saphyr::to_string(r).map_err(err)?));
    }
    files.push(("httproutes.yaml", routes));
    let mut grants = String::new();
    for g in &out.grants {
        grants.push_str(&doc(&serde_saphyr::to_string(g).map_err(err)?));
    }
    files.push(("referencegrants.yaml", grants));
    let mut ings = String::new();
    for (_, i) in &out.ingresses {
        if let Some(i) = i {
            ings.push_str(&doc(&serde_saphyr::to_string(i).map_err(err)?));
        }
    }
    files.push(("ingresses.yaml", ings));
    files.push(("other.yaml", other_objects(input, out)?));
    Ok(files)
}

fn doc(text: &str) -> String {
    let mut s = String::from("---\n");
    s.push_str(text);
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// Every input object that is not an Ingress, as YAML, but for the Gateway, GatewayClass and ReferenceGrants the
/// output writes anew (an earlier step's).
fn other_objects(input: &Input, out: &Output) -> Result<String, String> {
    let mut s = String::new();
    let mut replaced: BTreeSet<(Option<String>, String)> = BTreeSet::new();
    let metas = out
        .gateway
        .iter()
        .map(|g| &g.metadata)
        .chain(out.gateway_class.iter().map(|c| &c.metadata))
        .chain(out.grants.iter().map(|g| &g.metadata));
    for m in metas {
        replaced.insert((m.namespace.clone(), m.name.clone()));
    }
    let add = |s: &mut String, items: Vec<(&crate::k8s::ObjectMeta, String)>| {
        for (m, text) in items {
            if replaced.contains(&(m.namespace.clone(), m.name.clone().unwrap_or_default())) {
                continue;
            }
            s.push_str(&doc(&text));
        }
    };
    fn texts<T: Serialize + kube::Resource>(
        items: &[std::sync::Arc<T>],
    ) -> Result<Vec<(&crate::k8s::ObjectMeta, String)>, String> {
        items
            .iter()
            .map(|i| {
                serde_saphyr::to_string(i.as_ref())
                    .map(|t| (i.meta(), t))
                    .map_err(|e| e.to_string())
            })
            .collect()
    }
    add(&mut s, texts(&input.namespaces)?);
    add(&mut s, texts(&input.services)?);
    add(&mut s, texts(&input.endpoint_slices)?);
    add(&mut s, texts(&input.secrets)?);
    add(&mut s, texts(&input.config_maps)?);
    add(&mut s, texts(&input.ingress_classes)?);
    add(&mut s, texts(&input.gateway_classes)?);
    add(&mut s, texts(&input.gateways)?);
    add(&mut s, texts(&input.http_routes)?);
    add(&mut s, texts(&input.tls_routes)?);
    add(&mut s, texts(&input.reference_grants)?);
    add(&mut s, texts(&input.listener_sets)?);
    add(&mut s, texts(&input.backend_tls_policies)?);
    Ok(s)
}

/// The proof: the configuration after the step (the files) is translated and compared with the input.
pub struct Proof {
    /// The comparison.
    pub report: equiv::Report,
    /// Errors the translation of the new configuration reported (the generated objects must have none).
    pub errors: Vec<String>,
}

/// Translates the files and compares them with the input.
pub fn prove(input: &Input, files: &[(&'static str, String)], opts: &TranslateOptions) -> Proof {
    let old = translate::translate(input, opts);
    let text: String = files.iter().map(|(_, t)| t.as_str()).collect();
    let (new_input, problems) = crate::source::file::input_from_str(&text);
    let new = translate::translate(&new_input, opts);
    let old_errors: BTreeSet<String> = old
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| d.message.clone())
        .collect();
    let mut errors: Vec<String> = problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .map(|p| p.to_string())
        .collect();
    errors.extend(
        new.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error && !old_errors.contains(&d.message))
            .map(|d| d.to_string()),
    );
    Proof {
        report: equiv::compare(&old.model, &new.model, &equiv::Limits::default()),
        errors,
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.report {
            let mark = if r.moved { "moved" } else { "stays" };
            writeln!(
                f,
                "{mark:5}  Ingress {} host {} path {}: {}",
                r.ingress, r.host, r.path, r.verdict
            )?;
        }
        let moved = self.report.iter().filter(|r| r.moved).count();
        writeln!(
            f,
            "{} paths: {moved} moved to {} HTTPRoutes, {} stay on Ingresses",
            self.report.len(),
            self.routes.len(),
            self.report.len() - moved
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse() {
        assert_eq!(
            Selector::parse("Shop.example.com/api").unwrap(),
            Selector {
                host: "shop.example.com".into(),
                path: Some("/api".into())
            }
        );
        assert!(Selector::parse("/api").is_err());
        let s = Selector::parse("a.com").unwrap();
        assert!(s.selects("a.com", "/x"));
        assert!(!s.selects("b.com", "/x"));
    }

    #[test]
    fn tls_to_backends_stays_on_the_ingress_with_the_reason() {
        let ingress = |name: &str, anns: &str| {
            format!(
                "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: shop\n  annotations: {{{anns}}}\nspec:\n  ingressClassName: nginx\n  rules:\n  - host: {name}.example.com\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}\n"
            )
        };
        let p = "nginx.ingress.kubernetes.io";
        let yaml = [
            "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: nginx}\nspec: {controller: k8s.io/ingress-nginx}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec:\n  ports: [{name: http, port: 80}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\nports: [{name: http, port: 8443}]\nendpoints: [{addresses: [\"10.0.0.1\"]}]\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: ca, namespace: shop}\ntype: kubernetes.io/tls\nstringData:\n  ca.crt: |\n".to_string(),
            include_str!("../examples/demo-ca.crt")
                .lines()
                .map(|l| format!("    {l}\n"))
                .collect(),
            ingress("plain", ""),
            ingress("unchecked", &format!("{p}/backend-protocol: HTTPS")),
            ingress(
                "checked",
                &format!("{p}/backend-protocol: HTTPS, {p}/proxy-ssl-secret: shop/ca, {p}/proxy-ssl-verify: \"on\""),
            ),
            ingress("grpcs", &format!("{p}/backend-protocol: GRPCS")),
        ]
        .concat();
        let (input, problems) = crate::source::file::input_from_str(&yaml);
        assert!(problems.is_empty(), "{problems:?}");
        let mut opts = Options {
            gateway: ("default".into(), "portcullis".into()),
            only: Vec::new(),
            translate: TranslateOptions::default(),
        };
        opts.translate.nginx.classes = vec!["nginx".into()];
        let out = migrate(&input, &opts);
        let verdict = |ing: &str| {
            out.report
                .iter()
                .find(|r| r.ingress == format!("shop/{ing}"))
                .map(|r| r.verdict.to_string())
                .unwrap_or_default()
        };
        assert!(!verdict("plain").is_empty() && !verdict("plain").contains("backend-protocol"));
        assert!(
            verdict("unchecked").contains("HTTPS without proxy-ssl-verify"),
            "{}",
            verdict("unchecked")
        );
        assert!(
            verdict("checked").contains("BackendTLSPolicy on the Service port"),
            "{}",
            verdict("checked")
        );
        assert!(verdict("grpcs").contains("GRPCS"), "{}", verdict("grpcs"));
    }
}
