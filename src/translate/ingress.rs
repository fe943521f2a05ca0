//! networking.k8s.io/v1 Ingress.
//!
//! Which Ingresses are ours: those whose class (`spec.ingressClassName`, or the older
//! `kubernetes.io/ingress.class` annotation) names an IngressClass with `spec.controller` equal to ours, and those
//! with no class at all when one of our IngressClasses is marked default
//! (`ingressclass.kubernetes.io/is-default-class: "true"`); with `--ingress-nginx-class`, also the Ingresses of
//! the ingress-nginx classes taken over (see `nginx`). Everything else belongs to another controller and is
//! ignored without a word.
//!
//! Path types follow the Kubernetes documentation: `Exact` compares the whole path, case-sensitively; `Prefix`
//! compares element by element split on `/` and ignores a trailing slash; `ImplementationSpecific` is treated as
//! `Prefix` (documented in docs/routing.md). ingress-nginx annotations change that as ingress-nginx does: a host
//! with `use-regex` or `rewrite-target` on any of its Ingresses (of the same profile) has all its paths matched as
//! case-insensitive `^path` prefix regexes.

use super::builder::ModelBuilder;
use super::nginx::annotations::{self, IngressAnnotations};
use super::nginx::{self, Profile, Settings};
use super::refs::{BackendError, PortRef, Resolver};
use super::{Diagnostics, Options, Severity};
use crate::k8s::{Ingress, IngressClass};
use crate::model::policy::{
    BasicAuth, Canary, FixedRedirect, Forwarded, Policy, Rewrite, SourceRanges, SslRedirect,
    TemplatePart, WwwRedirect,
};
use crate::model::ListenerKey;
use crate::model::{
    Action, Backend, BackendGroup, Filter, HostPattern, HttpRule, ListenerCertificate, Origin,
    OriginKind, PathMatch, PathModifier, Protocol, Redirect, RouteMatch, Timeouts, WeightedBackend,
};
use crate::source::{Input, ObjectRef};
use k8s_openapi::api::networking::v1::{HTTPIngressPath, IngressBackend};
use std::collections::{BTreeMap, BTreeSet};

/// Annotation that marks the default IngressClass.
pub(crate) const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// The pre-IngressClass way to pick a class, still common in ingress-nginx manifests.
pub(crate) const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

fn is_ours(class: &IngressClass, opts: &Options) -> bool {
    class.spec.as_ref().and_then(|s| s.controller.as_deref())
        == Some(opts.ingress_controller.as_str())
}

fn is_default(class: &IngressClass) -> bool {
    class
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
        .is_some_and(|v| v == "true")
}

/// The class an Ingress asks for, if any.
fn requested_class(ing: &Ingress) -> Option<&str> {
    ing.spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref())
        .or_else(|| {
            ing.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION))
                .map(String::as_str)
        })
}

/// Is this Ingress ours, given the IngressClasses in the input?
pub(crate) fn ingress_is_ours(ing: &Ingress, input: &Input, opts: &Options) -> bool {
    match requested_class(ing) {
        Some(name) => input
            .ingress_classes
            .iter()
            .any(|c| c.metadata.name.as_deref() == Some(name) && is_ours(c, opts)),
        None => input
            .ingress_classes
            .iter()
            .any(|c| is_ours(c, opts) && is_default(c)),
    }
}

pub(crate) fn translate(
    input: &Input,
    opts: &Options,
    refs: &Resolver<'_>,
    model: &mut ModelBuilder,
    diags: &mut Diagnostics,
) -> Vec<ObjectRef> {
    let nginx_settings = if opts.nginx.classes.is_empty() {
        Settings::ingress_nginx()
    } else {
        nginx::nginx_settings(opts, refs, diags)
    };
    let v1_settings = Settings::ingress_v1();
    // Oldest first, so the oldest Ingress's defaultBackend wins, as ingress-nginx does.
    let mut ours: Vec<(&Ingress, Profile)> = input
        .ingresses
        .iter()
        .filter_map(|i| nginx::profile_of(i, input, opts).map(|p| (i.as_ref(), p)))
        .collect();
    ours.sort_by_key(|(i, _)| created(i).map_or((1, 0), |t| (0, t)));

    // Annotations first: an Ingress whose annotations ingress-nginx would refuse is left out entirely (the caller
    // puts its last good version back).
    let mut rejected = Vec::new();
    let mut entries = Vec::new();
    let no_annotations = BTreeMap::new();
    for (ing, profile) in ours {
        let object = ObjectRef::new("Ingress", &ing.metadata);
        let settings = match profile {
            Profile::IngressV1 => &v1_settings,
            Profile::IngressNginx => &nginx_settings,
        };
        let ns = ing.metadata.namespace.as_deref().unwrap_or("default");
        let name = ing.metadata.name.as_deref().unwrap_or("");
        let map = ing.metadata.annotations.as_ref().unwrap_or(&no_annotations);
        report_controller_annotations(ing, &opts.nginx.annotations_prefix, &object, diags);
        let cx = annotations::Context {
            prefix: &opts.nginx.annotations_prefix,
            namespace: ns,
            name,
            settings,
        };
        let mut anns = annotations::parse(map, &cx);
        let basic = match &anns.basic_auth {
            None => None,
            Some(r) => {
                let data = refs.secret_entries(&r.namespace, &r.name);
                match annotations::basic_auth_policy(r, data.as_ref()) {
                    Ok((b, problems)) => {
                        for p in problems {
                            diags.warning(
                                &object,
                                format!("auth-secret {}: {p}; that entry is skipped", b.secret),
                            );
                        }
                        Some(b)
                    }
                    Err(e) => {
                        anns.findings.push(annotations::Finding::Deny {
                            key: format!("{}/auth-secret", opts.nginx.annotations_prefix),
                            message: format!(
                                "{e}; as in ingress-nginx, the Ingress's paths answer 503"
                            ),
                        });
                        anns.denied.get_or_insert(e);
                        None
                    }
                }
            }
        };
        resolve_backend_tls(&mut anns, refs, &opts.nginx.annotations_prefix);
        for f in &anns.findings {
            let (severity, key, message) = match f {
                annotations::Finding::Reject { key, message }
                | annotations::Finding::Deny { key, message } => (Severity::Error, key, message),
                annotations::Finding::Warn { key, message } => (Severity::Warning, key, message),
            };
            diags.annotation(
                severity,
                &object,
                key,
                format!("annotation {key}: {message}"),
            );
        }
        if anns.rejected() {
            rejected.push(object);
            continue;
        }
        entries.push(Entry {
            ing,
            profile,
            object,
            anns,
            basic,
        });
    }

    // TLS first: the HTTPS listener exists when at least one Ingress has a usable certificate, and then serves
    // every Ingress rule, as ingress-nginx does (hosts without a certificate of their own get the first one).
    let https = ListenerKey::tcp(opts.https_port);
    let mut certificates = Vec::new();
    for e in &entries {
        certificates.extend(tls_certificates(e.ing, refs, diags));
    }
    let tls_hosts: Vec<HostPattern> = certificates.iter().map(|c| c.hostname.clone()).collect();
    let mut keys = vec![ListenerKey::tcp(opts.http_port)];
    if !certificates.is_empty() {
        match model.ensure_listener(https, Protocol::Https) {
            Ok(()) => {
                for c in certificates {
                    model.add_certificate(https, c);
                }
                keys.push(https);
            }
            Err(existing) => {
                if let Some(e) = entries.first() {
                    diags.error(
                        &e.object,
                        format!(
                            "spec.tls: the HTTPS port {} already serves {existing:?}; TLS hosts are not served",
                            opts.https_port
                        ),
                    );
                }
            }
        }
    }

    let hosts = HostFacts::new(&entries, refs, diags);
    let cx = EmitCtx {
        keys: &keys,
        refs,
        hosts: &hosts,
        tls_hosts: &tls_hosts,
        v1: &v1_settings,
        nginx: &nginx_settings,
    };
    for e in entries.iter().filter(|e| e.anns.canary.is_none()) {
        translate_one(e, &cx, model, diags);
    }
    hosts.finish(&cx, model, diags);
    rejected
}

/// One Ingress of ours with its parsed annotations.
struct Entry<'a> {
    ing: &'a Ingress,
    profile: Profile,
    object: ObjectRef,
    anns: IngressAnnotations,
    /// The basic-auth policy, its Secret resolved.
    basic: Option<BasicAuth>,
}

impl Entry<'_> {
    fn ns(&self) -> &str {
        self.ing.metadata.namespace.as_deref().unwrap_or("default")
    }

    fn name(&self) -> &str {
        self.ing.metadata.name.as_deref().unwrap_or("")
    }

    /// Every (rule index, host, path) of the Ingress.
    fn paths(&self) -> impl Iterator<Item = (usize, Option<&str>, &HTTPIngressPath)> {
        self.ing
            .spec
            .iter()
            .flat_map(|s| s.rules.iter().flatten())
            .enumerate()
            .flat_map(|(ri, r)| {
                r.http
                    .iter()
                    .flat_map(|h| h.paths.iter())
                    .map(move |p| (ri, r.host.as_deref().filter(|h| !h.is_empty()), p))
            })
    }

    /// Does this path need ingress-nginx's regex location (`use-regex`, or a rewrite target other than the path)?
    fn needs_regex(&self, path: &str) -> bool {
        self.anns.use_regex
            || self
                .anns
                .rewrite_target
                .as_deref()
                .is_some_and(|t| t != path)
    }
}

/// What a canary Ingress asks for that is never served, and would otherwise go without a word (`translate_one`,
/// which reports these for other Ingresses, does not run for canaries): its `spec.defaultBackend` (ingress-nginx
/// merges it into the catch-all server's backends; Portcullis attaches canaries to main paths only) and rules
/// whose host is not valid.
fn report_unserved_canary_parts(e: &Entry<'_>, diags: &mut Diagnostics) {
    let Some(spec) = &e.ing.spec else { return };
    if spec.default_backend.is_some() {
        diags.warning(
            &e.object,
            "spec.defaultBackend of a canary Ingress is not served: Portcullis attaches a canary only to the main \
             Ingress paths with the same host, path and pathType (ingress-nginx would merge it into the catch-all \
             server's backends)",
        );
    }
    for (ri, rule) in spec.rules.iter().flatten().enumerate() {
        if let Some(h) = rule.host.as_deref().filter(|h| !h.is_empty()) {
            if let Err(err) = HostPattern::ingress(h) {
                diags.error(
                    &e.object,
                    format!("spec.rules[{ri}].host: {err}; rule skipped"),
                );
            }
        }
    }
}

/// A (profile, host) pair: ingress-nginx's `server`. Host-wide behaviour is scoped to it, so that Ingresses of our
/// own class keep Ingress v1 semantics whatever the taken-over ones do on the same host.
type ServerKey = (Profile, HostPattern);

/// Host-wide facts gathered over every Ingress before rules are emitted.
#[derive(Default)]
struct HostFacts {
    /// Servers in regex mode: every path becomes a case-insensitive `^path` prefix regex.
    regex: BTreeSet<ServerKey>,
    /// `app-root` of the server (the oldest Ingress that sets it).
    app_root: BTreeMap<ServerKey, (String, Origin)>,
    /// `server-alias` names of the server.
    aliases: BTreeMap<ServerKey, BTreeSet<String>>,
    /// Hosts that have a server.
    exists: BTreeSet<ServerKey>,
    /// The paths of each server, as written.
    paths: BTreeMap<ServerKey, BTreeSet<String>>,
    /// Canary backends by (server, path, pathType).
    canaries: BTreeMap<(ServerKey, String, String), CanaryTarget>,
    /// `from-to-www-redirect`: the host redirected from -> (the host redirected to, origin).
    www: BTreeMap<ServerKey, (String, Origin)>,
}

/// A canary Ingress's backend for one main path.
struct CanaryTarget {
    backend: Backend,
    config: annotations::CanaryAnnotation,
    ingress: String,
    used: std::cell::Cell<bool>,
    object: ObjectRef,
}

fn host_pattern(h: Option<&str>) -> Option<HostPattern> {
    match h {
        None => Some(HostPattern::Any),
        Some(h) => HostPattern::ingress(h).ok(),
    }
}

impl HostFacts {
    fn new(entries: &[Entry<'_>], refs: &Resolver<'_>, diags: &mut Diagnostics) -> Self {
        let mut f = HostFacts::default();
        for e in entries {
            let canary = e.anns.canary.as_ref();
            if canary.is_some() {
                report_unserved_canary_parts(e, diags);
            }
            for (ri, host, path) in e.paths() {
                let Some(hp) = host_pattern(host) else {
                    continue;
                };
                let key = (e.profile, hp.clone());
                let p = path
                    .path
                    .as_deref()
                    .filter(|p| !p.is_empty())
                    .unwrap_or("/");
                if let Some(c) = canary {
                    let be = backend(
                        &path.backend,
                        &e.anns.backend,
                        e.ns(),
                        refs,
                        &e.object,
                        &format!("spec.rules[{ri}].http.paths"),
                        diags,
                    );
                    f.canaries.insert(
                        (key, p.to_string(), path.path_type.clone()),
                        CanaryTarget {
                            backend: be,
                            config: c.clone(),
                            ingress: format!("{}/{}", e.ns(), e.name()),
                            used: std::cell::Cell::new(false),
                            object: e.object.clone(),
                        },
                    );
                    continue;
                }
                f.exists.insert(key.clone());
                if e.needs_regex(p) {
                    f.regex.insert(key.clone());
                }
                f.paths
                    .entry(key.clone())
                    .or_default()
                    .insert(p.to_string());
                if let Some(root) = &e.anns.app_root {
                    f.app_root
                        .entry(key.clone())
                        .or_insert_with(|| (root.clone(), origin(e, 0)));
                }
                if !e.anns.aliases.is_empty() {
                    f.aliases
                        .entry(key.clone())
                        .or_default()
                        .extend(e.anns.aliases.iter().cloned());
                }
                if e.anns.redirect.as_ref().is_some_and(|r| r.from_to_www) {
                    if let Some(h) = host {
                        let h = h.to_ascii_lowercase();
                        let other = match h.strip_prefix("www.") {
                            Some(rest) => rest.to_string(),
                            None => format!("www.{h}"),
                        };
                        if let Ok(op) = HostPattern::ingress(&other) {
                            f.www
                                .entry((e.profile, op))
                                .or_insert_with(|| (h.clone(), origin(e, 0)));
                        }
                    }
                }
            }
        }
        f
    }

    /// The hosts a rule for `key` is also served on (its `server-alias` names that have no server of their own).
    fn alias_hosts(&self, key: &ServerKey) -> Vec<HostPattern> {
        let Some(names) = self.aliases.get(key) else {
            return Vec::new();
        };
        names
            .iter()
            .filter_map(|n| HostPattern::ingress(n).ok())
            .filter(|hp| !self.exists.contains(&(key.0, hp.clone())))
            .collect()
    }

    /// Rules that belong to a server rather than to one path (`app-root`'s `/`, `from-to-www-redirect`), and the
    /// report of canaries that found no main path.
    fn finish(&self, cx: &EmitCtx<'_>, model: &mut ModelBuilder, diags: &mut Diagnostics) {
        for (key, (root, org)) in &self.app_root {
            // ingress-nginx checks `$uri = /` for the whole server before choosing a location: an Exact `/` rule
            // here, and the same check in every rule of the server's policy.
            let policy = Policy {
                source: format!("{}/{}", org.namespace, org.name),
                app_root: Some(root.clone()),
                ..Policy::default()
            };
            let rule = HttpRule {
                origin: org.clone(),
                matches: vec![RouteMatch {
                    path: PathMatch::Exact("/".into()),
                    ..RouteMatch::any()
                }],
                filters: vec![Filter::Policy(Box::new(policy))],
                action: Action::Redirect(Redirect {
                    scheme: None,
                    hostname: None,
                    port: None,
                    path: Some(PathModifier::ReplaceFullPath(root.clone())),
                    status: 302,
                }),
                timeouts: Timeouts::default(),
                retry: None,
                grpc: false,
                session: None,
            };
            let mut hosts = vec![key.1.clone()];
            hosts.extend(self.alias_hosts(key));
            for h in hosts {
                for k in cx.keys {
                    model.add_rule(*k, None, h.clone(), rule.clone());
                }
            }
        }
        for (key, (to, org)) in &self.www {
            // Only when the other name has no server of its own, as ingress-nginx does.
            if self.exists.contains(key) {
                continue;
            }
            let settings = cx.settings(key.0);
            let policy = Policy {
                source: format!("{}/{}", org.namespace, org.name),
                www_redirect: Some(WwwRedirect {
                    to: to.clone(),
                    status: settings.http_redirect_code,
                    trust_forwarded: settings.use_forwarded_headers,
                }),
                ..Policy::default()
            };
            let rule = HttpRule {
                origin: org.clone(),
                matches: vec![RouteMatch::any()],
                filters: vec![Filter::Policy(Box::new(policy))],
                action: Action::Redirect(Redirect {
                    scheme: None,
                    hostname: Some(to.clone()),
                    port: None,
                    path: None,
                    status: settings.http_redirect_code,
                }),
                timeouts: Timeouts::default(),
                retry: None,
                grpc: false,
                session: None,
            };
            for k in cx.keys {
                model.add_rule(*k, None, key.1.clone(), rule.clone());
            }
        }
        for ((key, path, path_type), c) in &self.canaries {
            if !c.used.get() {
                diags.warning(
                    &c.object,
                    format!(
                        "canary path {path} ({path_type}) on host {} matches no path of a main Ingress; as in ingress-nginx, it is not served",
                        key.1
                    ),
                );
            }
        }
    }
}

/// What emitting rules needs besides the Ingress.
struct EmitCtx<'a> {
    keys: &'a [ListenerKey],
    refs: &'a Resolver<'a>,
    hosts: &'a HostFacts,
    tls_hosts: &'a [HostPattern],
    v1: &'a Settings,
    nginx: &'a Settings,
}

impl EmitCtx<'_> {
    fn settings(&self, p: Profile) -> &Settings {
        match p {
            Profile::IngressV1 => self.v1,
            Profile::IngressNginx => self.nginx,
        }
    }

    /// Does the host have a certificate of its own (ingress-nginx redirects to https only then)?
    fn host_has_tls(&self, host: &HostPattern) -> bool {
        self.tls_hosts.iter().any(|t| match (t, host) {
            (HostPattern::Any, HostPattern::Any) => true,
            (HostPattern::Any, _) => false,
            (t, HostPattern::Exact(h)) => t.matches(h),
            (t, h) => t == h,
        })
    }
}

fn origin(e: &Entry<'_>, rule: usize) -> Origin {
    Origin {
        kind: OriginKind::Ingress,
        namespace: e.ns().to_string(),
        name: e.name().to_string(),
        rule,
        rule_name: None,
        created: created(e.ing),
    }
}

/// The policy of one path of a server (or of the default backend when `key` and `path` are `None`).
fn policy_for(
    e: &Entry<'_>,
    cx: &EmitCtx<'_>,
    key: Option<&ServerKey>,
    path: Option<&str>,
) -> Result<Policy, String> {
    let a = &e.anns;
    let settings = cx.settings(e.profile);
    let host_tls = key.is_some_and(|k| cx.host_has_tls(&k.1));
    let rewrite = match (path, &a.rewrite_target, &a.rewrite_template) {
        (Some(p), Some(t), Some(tpl)) if t != p => {
            let pattern = format!("(?i){p}");
            regex::Regex::new(&pattern).map_err(|err| {
                format!("path {p:?} is not a regex Portcullis can use for rewrite-target: {err}")
            })?;
            Some(Rewrite {
                pattern,
                target: tpl.clone(),
            })
        }
        _ => None,
    };
    let x_forwarded_prefix = match (&rewrite, &a.x_forwarded_prefix) {
        (Some(_), Some(x)) => Some(
            annotations::capture_template(x)
                .unwrap_or_else(|_| vec![TemplatePart::Text(x.clone())]),
        ),
        _ => None,
    };
    let app_root = key
        .and_then(|k| cx.hosts.app_root.get(k))
        .map(|(r, _)| r.clone());
    Ok(Policy {
        rewrite,
        x_forwarded_prefix,
        app_root,
        ..location_policy(
            a,
            e.profile,
            settings,
            format!("{}/{}", e.ns(), e.name()),
            e.basic.clone(),
            host_tls,
        )
    })
}

/// The per-location part of a policy: everything but the host-wide behaviour (rewrites of regex mode, app-root,
/// canaries). Shared by Ingress paths and by HTTPRoutes that carry ingress-nginx annotations (the extension of
/// `route_policy`).
fn location_policy(
    a: &IngressAnnotations,
    profile: Profile,
    settings: &Settings,
    source: String,
    basic_auth: Option<BasicAuth>,
    host_tls: bool,
) -> Policy {
    let ssl_redirect = if a.force_ssl_redirect || (a.ssl_redirect && host_tls) {
        Some(SslRedirect {
            force: a.force_ssl_redirect,
            status: settings.http_redirect_code,
            preserve_trailing_slash: a.preserve_trailing_slash,
            trust_forwarded_proto: settings.use_forwarded_headers,
        })
    } else {
        None
    };
    Policy {
        source,
        denied: a.denied.clone(),
        redirect: a.redirect.as_ref().and_then(|r| {
            r.url.as_ref().map(|u| FixedRedirect {
                status: r.code,
                location: u.clone(),
                keep_query: false,
            })
        }),
        ssl_redirect,
        app_root: None,
        www_redirect: None,
        rewrite: None,
        x_forwarded_prefix: None,
        upstream_host: a.upstream_vhost.clone(),
        max_body_bytes: a.body_size,
        read_timeout_s: a.read_timeout,
        send_timeout_s: a.send_timeout,
        source_ranges: SourceRanges {
            allow: a.allowlist.clone(),
            deny: a.denylist.clone(),
        },
        cors: a.cors.clone(),
        basic_auth,
        external_auth: a.external_auth.clone(),
        rate_limit: a.rate_limit.clone(),
        canary: None,
        forwarded: (profile == Profile::IngressNginx).then_some(Forwarded {
            trust_client_headers: settings.use_forwarded_headers,
        }),
    }
}

/// HTTPRoute annotation: apply the route's ingress-nginx annotations with this profile (`ingress-nginx` or
/// `ingress-v1`) to every rule of the route. A Portcullis extension, written by `portcullis migrate`.
pub const ROUTE_PROFILE_ANNOTATION: &str = "portcullis.dev/ingress-nginx-profile";
/// HTTPRoute annotation: `"true"` when the route's hosts have a certificate of their own (ingress-nginx's
/// `ssl-redirect` applies only then).
pub const ROUTE_HOST_TLS_ANNOTATION: &str = "portcullis.dev/ingress-nginx-host-tls";
/// HTTPRoute annotation: the Ingress name (same namespace) whose annotation scope the route continues; rate-limit
/// zones are named after it. Default: the route's name.
pub const ROUTE_SCOPE_ANNOTATION: &str = "portcullis.dev/ingress-nginx-scope";

/// The ingress-nginx policy of an HTTPRoute that asks for one with [`ROUTE_PROFILE_ANNOTATION`] (the extension
/// `portcullis migrate` uses for paths whose ingress-nginx behaviour Gateway API has no field for). Only
/// per-location annotations apply; host-wide ones (regex mode, rewrites, app-root, aliases, www redirects,
/// canaries) deny the route's rules (503) with an error, as does an annotation ingress-nginx would refuse.
pub(crate) fn route_policy(
    meta: &crate::k8s::ObjectMeta,
    object: &ObjectRef,
    opts: &Options,
    refs: &Resolver<'_>,
    diags: &mut Diagnostics,
) -> Option<RoutePolicy> {
    let map = meta.annotations.as_ref()?;
    let profile_text = map.get(ROUTE_PROFILE_ANNOTATION)?;
    let ns = meta.namespace.as_deref().unwrap_or("default");
    let name = meta.name.as_deref().unwrap_or("");
    let scope = map.get(ROUTE_SCOPE_ANNOTATION).map_or(name, String::as_str);
    let source = format!("{ns}/{scope}");
    let deny = |reason: String, diags: &mut Diagnostics| {
        diags.error(object, format!("{reason}; the route's rules answer 503"));
        Some(RoutePolicy {
            policy: Some(Policy {
                source: source.clone(),
                denied: Some(reason),
                ..Policy::default()
            }),
            retry: None,
            timeouts: Timeouts::default(),
        })
    };
    let profile = match profile_text.as_str() {
        "ingress-nginx" => Profile::IngressNginx,
        "ingress-v1" => Profile::IngressV1,
        other => {
            return deny(
                format!(
                    "annotation {ROUTE_PROFILE_ANNOTATION}: {other:?} is neither \"ingress-nginx\" nor \"ingress-v1\""
                ),
                diags,
            )
        }
    };
    let settings = match profile {
        Profile::IngressV1 => Settings::ingress_v1(),
        Profile::IngressNginx if opts.nginx.classes.is_empty() => Settings::ingress_nginx(),
        Profile::IngressNginx => nginx::nginx_settings(opts, refs, diags),
    };
    let host_tls = map
        .get(ROUTE_HOST_TLS_ANNOTATION)
        .is_some_and(|v| v == "true");
    let cx = annotations::Context {
        prefix: &opts.nginx.annotations_prefix,
        namespace: ns,
        name: scope,
        settings: &settings,
    };
    let mut anns = annotations::parse(map, &cx);
    // Backend annotations act on an Ingress's Service port (a variant of its backend); a route's backends are its
    // backendRefs, which they do not reach.
    let b = &anns.backend;
    let backend_wide = [
        (
            b.protocol != annotations::BackendProtocolAnnotation::Http,
            "backend-protocol",
        ),
        (b.proxy_ssl.is_some(), "proxy-ssl-secret"),
        (b.load_balance.is_some(), "load-balance"),
        (b.upstream_hash_by.is_some(), "upstream-hash-by"),
        (b.service_upstream, "service-upstream"),
        (!b.custom_http_errors.is_empty(), "custom-http-errors"),
        (b.default_backend.is_some(), "default-backend"),
    ];
    if b.affinity.is_some() {
        anns.findings.push(annotations::Finding::Warn {
            key: format!("{}/affinity", opts.nginx.annotations_prefix),
            message: "is not applied on a route: use the rule's sessionPersistence".into(),
        });
    }
    for (_, key) in backend_wide.iter().filter(|(on, _)| *on) {
        anns.findings.push(annotations::Finding::Warn {
            key: format!("{}/{key}", opts.nginx.annotations_prefix),
            message: "acts on an Ingress's backends and is not applied on a route (for TLS to a backend, use a \
                      BackendTLSPolicy)"
                .into(),
        });
    }
    let host_wide = [
        (anns.use_regex, "use-regex"),
        (anns.rewrite_target.is_some(), "rewrite-target"),
        (anns.app_root.is_some(), "app-root"),
        (!anns.aliases.is_empty(), "server-alias"),
        (
            anns.redirect.as_ref().is_some_and(|r| r.from_to_www),
            "from-to-www-redirect",
        ),
        (anns.canary.is_some(), "canary"),
    ];
    if let Some((_, key)) = host_wide.iter().find(|(on, _)| *on) {
        return deny(
            format!("annotation {key} is host-wide in ingress-nginx and has no HTTPRoute form"),
            diags,
        );
    }
    let basic = match &anns.basic_auth {
        None => None,
        Some(r) => {
            let data = refs.secret_entries(&r.namespace, &r.name);
            match annotations::basic_auth_policy(r, data.as_ref()) {
                Ok((b, problems)) => {
                    for p in problems {
                        diags.warning(
                            object,
                            format!("auth-secret {}: {p}; that entry is skipped", b.secret),
                        );
                    }
                    Some(b)
                }
                Err(e) => {
                    diags.error(object, format!("{e}; the route's rules answer 503"));
                    anns.denied.get_or_insert(e);
                    None
                }
            }
        }
    };
    for f in &anns.findings {
        let (severity, key, message) = match f {
            annotations::Finding::Reject { key, message }
            | annotations::Finding::Deny { key, message } => (Severity::Error, key, message),
            annotations::Finding::Warn { key, message } => (Severity::Warning, key, message),
        };
        diags.annotation(
            severity,
            object,
            key,
            format!("annotation {key}: {message}"),
        );
    }
    if anns.rejected() {
        return deny(
            "ingress-nginx would refuse these annotations".to_string(),
            diags,
        );
    }
    let p = location_policy(&anns, profile, &settings, source, basic, host_tls);
    Some(RoutePolicy {
        // As for Ingress paths: a policy that does nothing is no filter.
        policy: (!policy_filters(p.clone()).is_empty()).then_some(p),
        retry: next_upstream(&anns.backend),
        timeouts: nginx_timeouts(&anns.backend),
    })
}

/// What the ingress-nginx annotations of an HTTPRoute ([`route_policy`]) give each of its rules.
pub(crate) struct RoutePolicy {
    /// The rule's policy filter, unless it would do nothing.
    pub policy: Option<Policy>,
    /// `proxy-next-upstream*` (for rules without a `retry` of their own).
    pub retry: Option<crate::model::Retry>,
    /// `proxy-connect-timeout`.
    pub timeouts: Timeouts,
}

/// The rule's filters: the policy, unless it does nothing.
fn policy_filters(p: Policy) -> Vec<Filter> {
    let empty = Policy {
        source: p.source.clone(),
        ..Policy::default()
    };
    if p == empty {
        Vec::new()
    } else {
        vec![Filter::Policy(Box::new(p))]
    }
}

/// The case-insensitive `^path` prefix regex ingress-nginx writes for every location of a server in regex mode.
fn regex_path(path: &str) -> Result<PathMatch, String> {
    let pattern = format!("(?i:{path})(?s:.*)");
    regex::Regex::new(&pattern).map_err(|e| {
        format!("path {path:?} is not a regex Portcullis can use (its host is in regex mode): {e}")
    })?;
    Ok(PathMatch::RegularExpression(pattern))
}

/// Annotation prefixes of other Ingress controllers whose behaviour Portcullis does not implement.
const FOREIGN_ANNOTATION_PREFIXES: &[&str] = &[
    "nginx.org/",
    "traefik.ingress.kubernetes.io/",
    "haproxy.org/",
];

/// Annotations of other controllers (NGINX Inc.'s, Traefik's, HAProxy's) change what an Ingress means under the
/// controller they were written for. Portcullis does not implement them, so each one is reported (a warning: the
/// Ingress is still served, without that behaviour) instead of being dropped without a word. ingress-nginx's own
/// annotations are parsed by `nginx::annotations`.
fn report_controller_annotations(
    ing: &Ingress,
    prefix: &str,
    object: &ObjectRef,
    diags: &mut Diagnostics,
) {
    let Some(annotations) = &ing.metadata.annotations else {
        return;
    };
    let ours = format!("{prefix}/");
    for key in annotations.keys() {
        if key.starts_with(&ours) {
            continue;
        }
        if FOREIGN_ANNOTATION_PREFIXES
            .iter()
            .any(|p| key.starts_with(p))
        {
            diags.warning(
                object,
                format!("annotation {key} is not supported; the Ingress is served without it"),
            );
        }
    }
}

fn translate_one(
    e: &Entry<'_>,
    cx: &EmitCtx<'_>,
    model: &mut ModelBuilder,
    diags: &mut Diagnostics,
) {
    let object = &e.object;
    let ns = e.ns();
    let Some(spec) = &e.ing.spec else { return };
    let error_backend = error_backend(e, cx.refs, diags);

    if let Some(default) = &spec.default_backend {
        let policy = match policy_for(e, cx, None, None) {
            Ok(p) => p,
            Err(err) => {
                diags.error(object, format!("spec.defaultBackend: {err}"));
                Policy::default()
            }
        };
        let rule = HttpRule {
            origin: origin(e, Origin::DEFAULT_BACKEND),
            matches: vec![RouteMatch::any()],
            filters: with_custom_errors(policy_filters(policy), e, error_backend.as_ref(), default),
            timeouts: nginx_timeouts(&e.anns.backend),
            retry: next_upstream(&e.anns.backend),
            grpc: e.anns.backend.protocol.is_grpc(),
            session: affinity(e, "/"),
            action: Action::Forward(group(backend(
                default,
                &e.anns.backend,
                ns,
                cx.refs,
                object,
                "spec.defaultBackend",
                diags,
            ))),
        };
        for (i, key) in cx.keys.iter().enumerate() {
            if let Err(existing) = model.set_default_backend(*key, rule.clone()) {
                if i == 0 {
                    let msg = format!(
                        "spec.defaultBackend is ignored: {} already sets the default backend (the oldest Ingress wins)",
                        existing.origin
                    );
                    diags.warning(object, msg);
                }
            }
        }
    }

    let mut index = 0usize;
    for (ri, rule) in spec.rules.iter().flatten().enumerate() {
        let host = match rule.host.as_deref() {
            None | Some("") => HostPattern::Any,
            Some(h) => match HostPattern::ingress(h) {
                Ok(p) => p,
                Err(err) => {
                    diags.error(
                        object,
                        format!("spec.rules[{ri}].host: {err}; rule skipped"),
                    );
                    index += rule.http.as_ref().map_or(0, |h| h.paths.len());
                    continue;
                }
            },
        };
        let key: ServerKey = (e.profile, host.clone());
        let regex_mode = cx.hosts.regex.contains(&key);
        let mut hosts = vec![host.clone()];
        hosts.extend(cx.hosts.alias_hosts(&key));
        for (pi, path) in rule.http.iter().flat_map(|h| h.paths.iter()).enumerate() {
            let this = index;
            index += 1;
            let field = format!("spec.rules[{ri}].http.paths[{pi}]");
            let raw = path
                .path
                .as_deref()
                .filter(|p| !p.is_empty())
                .unwrap_or("/");
            let plain = match path_match(path.path.as_deref(), &path.path_type) {
                Ok(m) => m,
                Err(err) => {
                    diags.error(object, format!("{field}: {err}; path skipped"));
                    continue;
                }
            };
            let m = if regex_mode {
                match regex_path(raw) {
                    Ok(m) => m,
                    Err(err) => {
                        diags.error(object, format!("{field}: {err}; path skipped"));
                        continue;
                    }
                }
            } else {
                plain
            };
            let mut policy = match policy_for(e, cx, Some(&key), Some(raw)) {
                Ok(p) => p,
                Err(err) => {
                    diags.error(object, format!("{field}: {err}; path skipped"));
                    continue;
                }
            };
            let be = backend(
                &path.backend,
                &e.anns.backend,
                ns,
                cx.refs,
                object,
                &format!("{field}.backend"),
                diags,
            );
            let canary =
                cx.hosts
                    .canaries
                    .get(&(key.clone(), raw.to_string(), path.path_type.clone()));
            let action = match canary {
                Some(c) => {
                    c.used.set(true);
                    policy.canary = Some(Canary {
                        ingress: c.ingress.clone(),
                        header: c.config.header.clone(),
                        header_value: c.config.header_value.clone(),
                        header_pattern: c.config.header_pattern.clone(),
                        cookie: c.config.cookie.clone(),
                    });
                    Action::Forward(canary_group(be, c.backend.clone(), &c.config))
                }
                None => Action::Forward(group(be)),
            };
            let rule = HttpRule {
                origin: origin(e, this),
                matches: vec![RouteMatch {
                    path: m,
                    method: None,
                    headers: vec![],
                    query_params: vec![],
                    grpc: None,
                }],
                filters: with_custom_errors(
                    policy_filters(policy),
                    e,
                    error_backend.as_ref(),
                    &path.backend,
                ),
                action,
                timeouts: nginx_timeouts(&e.anns.backend),
                retry: next_upstream(&e.anns.backend),
                grpc: e.anns.backend.protocol.is_grpc(),
                session: affinity(e, if regex_mode { "/" } else { raw }),
            };
            // ingress-nginx's trailing-slash rule (its profile only): a Prefix path `/foo/` answers `/foo` with a
            // 301 to `/foo/` (nginx's redirect for a prefix location ending in `/`), unless `/foo` is a path of
            // its own on the host.
            let short = raw.trim_end_matches('/');
            let trailing = (e.profile == Profile::IngressNginx
                && !regex_mode
                && path.path_type != "Exact"
                && !short.is_empty()
                && short.len() < raw.len()
                && !cx.hosts.paths.get(&key).is_some_and(|p| p.contains(short)))
            .then(|| HttpRule {
                origin: origin(e, this),
                matches: vec![RouteMatch {
                    path: PathMatch::Exact(short.to_string()),
                    ..RouteMatch::any()
                }],
                filters: vec![Filter::Policy(Box::new(Policy {
                    source: format!("{}/{}", e.ns(), e.name()),
                    redirect: Some(FixedRedirect {
                        status: 301,
                        location: raw.to_string(),
                        keep_query: true,
                    }),
                    ..Policy::default()
                }))],
                action: Action::Redirect(Redirect {
                    scheme: None,
                    hostname: None,
                    port: None,
                    path: Some(PathModifier::ReplaceFullPath(raw.to_string())),
                    status: 301,
                }),
                timeouts: Timeouts::default(),
                retry: None,
                grpc: false,
                session: None,
            });
            for h in &hosts {
                for k in cx.keys {
                    model.add_rule(*k, None, h.clone(), rule.clone());
                    if let Some(t) = &trailing {
                        model.add_rule(*k, None, h.clone(), t.clone());
                    }
                }
            }
        }
    }
}

/// The main backend (index 0) and the canary (index 1), weighted as ingress-nginx draws: the canary when a
/// number drawn from 1..=total is at most the weight, `total` being `canary-weight-total` or 100, whichever is
/// larger.
fn canary_group(main: Backend, canary: Backend, c: &annotations::CanaryAnnotation) -> BackendGroup {
    let total = c.weight_total.max(100);
    let w = c.weight.clamp(0, total);
    let clamp = |n: i64| u32::try_from(n).unwrap_or(u32::MAX);
    BackendGroup {
        backends: vec![
            WeightedBackend {
                weight: clamp(total - w),
                backend: main,
                filters: vec![],
            },
            WeightedBackend {
                weight: clamp(w),
                backend: canary,
                filters: vec![],
            },
        ],
    }
}

/// The certificates of an Ingress's `spec.tls`, each for the hosts it lists (all hosts when it lists none). The
/// Secret must be in the Ingress's namespace.
fn tls_certificates(
    ing: &Ingress,
    refs: &Resolver<'_>,
    diags: &mut Diagnostics,
) -> Vec<ListenerCertificate> {
    let object = ObjectRef::new("Ingress", &ing.metadata);
    let ns = ing.metadata.namespace.as_deref().unwrap_or("default");
    let mut out = Vec::new();
    for (i, t) in ing
        .spec
        .iter()
        .flat_map(|s| s.tls.iter().flatten())
        .enumerate()
    {
        let Some(secret) = t.secret_name.as_deref().filter(|s| !s.is_empty()) else {
            diags.error(
                &object,
                format!("spec.tls[{i}]: secretName is required; entry skipped"),
            );
            continue;
        };
        let (cert, key) = match refs.tls_secret(ns, secret) {
            Ok(pair) => pair,
            Err(e) => {
                diags.error(
                    &object,
                    format!("spec.tls[{i}]: {e}; these hosts get no certificate"),
                );
                continue;
            }
        };
        let hosts = t.hosts.as_deref().unwrap_or(&[]);
        let patterns: Vec<HostPattern> = if hosts.is_empty() {
            vec![HostPattern::Any]
        } else {
            hosts
                .iter()
                .filter_map(|h| match HostPattern::ingress(h) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        diags.error(&object, format!("spec.tls[{i}].hosts: {e}; host skipped"));
                        None
                    }
                })
                .collect()
        };
        for hostname in patterns {
            out.push(ListenerCertificate {
                hostname,
                source: format!("Secret {ns}/{secret}"),
                cert_pem: cert.clone(),
                key_pem: key.clone(),
            });
        }
    }
    out
}

fn created(ing: &Ingress) -> Option<i64> {
    super::created(&ing.metadata)
}

fn group(backend: Backend) -> BackendGroup {
    BackendGroup {
        backends: vec![WeightedBackend {
            weight: 1,
            backend,
            filters: vec![],
        }],
    }
}

/// Parses an Ingress path into a match, as the Kubernetes documentation defines the path types.
pub(crate) fn path_match(path: Option<&str>, path_type: &str) -> Result<PathMatch, String> {
    let path = path.unwrap_or("/");
    let path = if path.is_empty() { "/" } else { path };
    if !path.starts_with('/') {
        return Err(format!("path {path:?} must begin with '/'"));
    }
    match path_type {
        "Exact" => Ok(PathMatch::Exact(path.to_string())),
        "Prefix" | "ImplementationSpecific" => Ok(PathMatch::prefix(path)),
        "" => Err("pathType is required (Exact, Prefix or ImplementationSpecific)".to_string()),
        other => Err(format!(
            "pathType {other:?} is not one of Exact, Prefix, ImplementationSpecific"
        )),
    }
}

/// Reads the `proxy-ssl-secret` Secret (only that one, only from the Ingress's namespace: the parser denied any
/// other) and sets the TLS to the backend that `backend-protocol` and `proxy-ssl-*` ask for. A Secret that is
/// missing or unusable denies the Ingress's paths, as in ingress-nginx (whatever the backend protocol).
fn resolve_backend_tls(anns: &mut IngressAnnotations, refs: &Resolver<'_>, prefix: &str) {
    let mut secret = None;
    if let Some(p) = &anns.backend.proxy_ssl {
        let data = p
            .secret
            .split_once('/')
            .and_then(|(ns, name)| refs.secret_entries(ns, name));
        match annotations::proxy_ssl_secret(&p.secret, data.as_ref()) {
            Ok(s) => secret = Some(s),
            Err(e) => {
                anns.findings.push(annotations::Finding::Deny {
                    key: format!("{prefix}/proxy-ssl-secret"),
                    message: format!("{e}; as in ingress-nginx, the Ingress's paths answer 503"),
                });
                anns.denied.get_or_insert(e);
            }
        }
    }
    let (tls, warnings) = annotations::backend_tls(&anns.backend, secret.as_ref());
    for (k, message) in warnings {
        anns.findings.push(annotations::Finding::Warn {
            key: format!("{prefix}/{k}"),
            message,
        });
    }
    if let Some(t) = &tls {
        if !t.skip_verify && t.hostname == annotations::NGINX_UPSTREAM_NAME {
            anns.findings.push(annotations::Finding::Warn {
                key: format!("{prefix}/proxy-ssl-verify"),
                message: format!(
                    "without proxy-ssl-name the backend certificate must carry the name {}, as in ingress-nginx \
                     (nginx's default name for its upstream); set proxy-ssl-name to the name it carries",
                    annotations::NGINX_UPSTREAM_NAME
                ),
            });
        }
    }
    anns.backend.tls = tls;
}

/// The error backend of an Ingress with `custom-http-errors`: its `default-backend` Service (first port, as
/// ingress-nginx takes it). Reported and `None` when there is none or it does not resolve (the errors then reach
/// the client as the backend sent them).
fn error_backend(e: &Entry<'_>, refs: &Resolver<'_>, diags: &mut Diagnostics) -> Option<Backend> {
    let b = &e.anns.backend;
    if b.custom_http_errors.is_empty() {
        return None;
    }
    let Some(name) = b.default_backend.as_deref() else {
        diags.warning(
            &e.object,
            "annotation custom-http-errors needs default-backend (Portcullis has no global default backend \
             Service); not applied"
                .to_string(),
        );
        return None;
    };
    match default_backend_service(e.ns(), name, refs) {
        Ok(key) => Some(Backend::Service(key)),
        Err(err) => {
            diags.warning(
                &e.object,
                format!("annotation default-backend: {err}; custom-http-errors not applied"),
            );
            None
        }
    }
}

/// The `default-backend` Service of an Ingress: its first port.
fn default_backend_service(
    ns: &str,
    name: &str,
    refs: &Resolver<'_>,
) -> Result<crate::model::BackendKey, BackendError> {
    let port = refs
        .service(ns, name)
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.ports.as_deref())
        .and_then(|p| p.first())
        .map(|p| p.port)
        .ok_or_else(|| BackendError::ServiceNotFound(ns.into(), name.into()))?;
    let s = refs.service_backend(ns, name, PortRef::Number(port))?;
    Ok(refs.register_variant(s, ""))
}

/// A rule's filters with `custom-http-errors` added when the Ingress has an error backend.
fn with_custom_errors(
    mut filters: Vec<Filter>,
    e: &Entry<'_>,
    error_backend: Option<&Backend>,
    to: &IngressBackend,
) -> Vec<Filter> {
    let Some(backend) = error_backend else {
        return filters;
    };
    let service = to.service.as_ref();
    let port = service.and_then(|s| s.port.as_ref());
    filters.push(Filter::CustomErrors(Box::new(crate::model::CustomErrors {
        codes: e.anns.backend.custom_http_errors.clone(),
        backend: backend.clone(),
        namespace: e.ns().to_string(),
        ingress: e.name().to_string(),
        service: service.map(|s| s.name.clone()).unwrap_or_default(),
        service_port: port
            .and_then(|p| p.number.map(|n| n.to_string()).or_else(|| p.name.clone()))
            .unwrap_or_default(),
    })));
    filters
}

/// The retry policy of `proxy-next-upstream`, `-tries` and `-timeout` (or the ingress-nginx profile's
/// defaults): the failures named are retried on endpoints not tried yet, non-idempotent requests only when
/// nothing was sent (unless `non_idempotent`), `off` retries nothing. `None` when none of it applies (Ingress v1
/// without the annotations: failed connections are still retried on another endpoint, as for every rule).
fn next_upstream(b: &annotations::BackendAnnotations) -> Option<crate::model::Retry> {
    use crate::model::{Retry, RetryOn};
    use annotations::NextUpstream;
    if !b.next_upstream_set {
        return None;
    }
    let mut on = RetryOn {
        error: false,
        timeout: false,
        invalid_header: false,
    };
    let mut codes = Vec::new();
    let mut idempotent_only = true;
    let mut off = false;
    for n in &b.next_upstream {
        match n {
            NextUpstream::Error => on.error = true,
            NextUpstream::Timeout => on.timeout = true,
            NextUpstream::InvalidHeader => on.invalid_header = true,
            NextUpstream::Status(c) => codes.push(*c),
            NextUpstream::NonIdempotent => idempotent_only = false,
            NextUpstream::Off => off = true,
        }
    }
    // nginx counts tries with the first attempt; 0 is no limit but the endpoints (bounded here).
    let attempts = match b.next_upstream_tries {
        0 => MAX_NEXT_UPSTREAM_RETRIES,
        n => u32::try_from(n - 1)
            .unwrap_or(0)
            .min(MAX_NEXT_UPSTREAM_RETRIES),
    };
    if off {
        codes.clear();
        on = RetryOn {
            error: false,
            timeout: false,
            invalid_header: false,
        };
    }
    Some(Retry {
        attempts: if off { 0 } else { attempts },
        codes,
        backoff_ms: None,
        on,
        idempotent_only,
        distinct_endpoints: true,
        within_ms: u64::try_from(b.next_upstream_timeout)
            .ok()
            .filter(|&s| s > 0)
            .map(|s| s.saturating_mul(1000)),
    })
}

/// The most retries `proxy-next-upstream-tries` gives (its `0`, no limit, included).
const MAX_NEXT_UPSTREAM_RETRIES: u32 = 16;

/// The timeouts of an Ingress's rules: `proxy-connect-timeout` (read and send timeouts are idle timeouts, applied
/// by the rule's policy).
fn nginx_timeouts(b: &annotations::BackendAnnotations) -> Timeouts {
    Timeouts {
        connect_ms: b.connect_timeout.map(|s| u64::from(s) * 1000),
        ..Timeouts::default()
    }
}

/// Session persistence from `affinity: cookie`. The cookie's path is `session-cookie-path`, else the Ingress path
/// (`location_path`, as ingress-nginx sets it), else `/` (a regex path is no cookie path).
fn affinity(e: &Entry<'_>, path: &str) -> Option<Box<crate::model::SessionPersistence>> {
    use crate::model::{SameSite, SessionCarrier, SessionCookie, SessionPersistence, StickyMode};
    let a = e.anns.backend.affinity.as_ref()?;
    let same_site = a
        .same_site
        .as_deref()
        .and_then(|v| match v.to_ascii_lowercase().as_str() {
            "none" => Some(SameSite::None),
            "lax" => Some(SameSite::Lax),
            "strict" => Some(SameSite::Strict),
            _ => None,
        });
    Some(Box::new(SessionPersistence {
        carrier: SessionCarrier::Cookie(SessionCookie {
            name: a.name.clone(),
            path: a.path.clone().unwrap_or_else(|| path.to_string()),
            domain: a.domain.clone(),
            max_age: a.max_age,
            expires: a.expires,
            same_site,
            secure: a.secure,
            conditional_same_site_none: a.conditional_same_site_none,
        }),
        mode: if a.persistent {
            StickyMode::Persistent
        } else {
            StickyMode::Balanced
        },
        change_on_failure: a.change_on_failure,
        pins_backend: !a.canary_legacy,
    }))
}

/// Applies the backend annotations of an Ingress (`load-balance`, `upstream-hash-by`, `backend-protocol` with
/// `proxy-ssl-*`) to its Service port; returns the variant label of what differs from the port's own settings
/// (empty when nothing does; `service-upstream`, whose cluster-IP endpoint the caller resolved, is labelled too). Values Portcullis does not apply were reported when the annotations were parsed.
fn apply_nginx_backend(
    s: &mut crate::model::ServiceBackend,
    a: &annotations::BackendAnnotations,
) -> String {
    use crate::model::LoadBalancing;
    let before = (s.policy.load_balancing.clone(), s.protocol);
    if let Some(on) = a
        .upstream_hash_by
        .as_ref()
        .and_then(|h| annotations::hash_on(&h.key))
    {
        s.policy.load_balancing = match a.upstream_hash_by.as_ref() {
            Some(h) if h.subset => LoadBalancing::ConsistentHashSubset {
                on,
                size: u32::try_from(h.subset_size).unwrap_or(3).max(1),
            },
            _ => LoadBalancing::ConsistentHash(on),
        };
    } else {
        match a.load_balance {
            Some(annotations::LoadBalance::Ewma) => {
                s.policy.load_balancing = LoadBalancing::LeastRequest;
            }
            Some(annotations::LoadBalance::RoundRobin) => {
                s.policy.load_balancing = LoadBalancing::RoundRobin;
            }
            _ => {}
        }
    }
    if a.protocol.is_grpc() {
        s.protocol = crate::model::BackendProtocol::H2c;
    }
    if let Some(t) = &a.tls {
        s.tls = Some(Box::new(t.clone()));
    }
    let mut parts = Vec::new();
    if s.policy.load_balancing != before.0 {
        let lb = match &s.policy.load_balancing {
            LoadBalancing::RoundRobin => "round-robin".to_string(),
            LoadBalancing::Random => "random".to_string(),
            LoadBalancing::LeastRequest => "ewma".to_string(),
            LoadBalancing::ConsistentHash(on) => format!("hash:{}", hash_label(on)),
            LoadBalancing::ConsistentHashSubset { on, size } => {
                format!("hash-subset{size}:{}", hash_label(on))
            }
        };
        parts.push(format!("lb={lb}"));
    }
    if a.service_upstream {
        parts.push("service-upstream".to_string());
    }
    match (&a.tls, a.protocol) {
        (Some(_), annotations::BackendProtocolAnnotation::Grpcs) => {
            parts.push("protocol=grpcs".to_string())
        }
        (Some(t), _) => {
            parts.push("protocol=https".to_string());
            if let Some(p) = &a.proxy_ssl {
                parts.push(format!("proxy-ssl={}", p.secret));
            }
            if !t.skip_verify {
                parts.push("verify".to_string());
            }
            if !t.no_sni {
                parts.push("sni".to_string());
            }
            if t.hostname != annotations::NGINX_UPSTREAM_NAME {
                parts.push(format!("name={}", t.hostname));
            }
        }
        (None, _) if s.protocol != before.1 => parts.push("protocol=h2c".to_string()),
        (None, _) => {}
    }
    parts.join(",")
}

/// What a consistent hash hashes, in a variant label.
fn hash_label(on: &crate::model::HashOn) -> String {
    use crate::model::HashOn;
    match on {
        HashOn::SourceIp => "source-ip".to_string(),
        HashOn::Uri => "uri".to_string(),
        HashOn::Header(h) => format!("header:{h}"),
        HashOn::Cookie(c) => format!("cookie:{c}"),
        HashOn::QueryParam(q) => format!("query:{q}"),
        HashOn::Host => "host".to_string(),
        HashOn::Path => "path".to_string(),
        HashOn::Query => "query".to_string(),
        HashOn::Method => "method".to_string(),
        HashOn::Parts(parts) => parts
            .iter()
            .map(|p| match p {
                crate::model::HashPart::Text(t) => format!("text:{t}"),
                crate::model::HashPart::Var(on) => hash_label(on),
            })
            .collect::<Vec<_>>()
            .join("+"),
    }
}

/// Resolves an Ingress backend. An unresolvable Service answers 503, as ingress-nginx does.
fn backend(
    b: &IngressBackend,
    nginx: &annotations::BackendAnnotations,
    ns: &str,
    refs: &Resolver<'_>,
    object: &ObjectRef,
    field: &str,
    diags: &mut Diagnostics,
) -> Backend {
    let Some(svc) = &b.service else {
        let reason = if b.resource.is_some() {
            "resource backends are not supported; use a service backend"
        } else {
            "backend names no service"
        };
        diags.error(object, format!("{field}: {reason}"));
        return Backend::Invalid {
            status: 503,
            reason: reason.to_string(),
        };
    };
    let port = match svc.port.as_ref() {
        Some(p) => match (p.number, p.name.as_deref()) {
            (Some(n), _) => PortRef::Number(n),
            (None, Some(name)) => PortRef::Name(name),
            (None, None) => {
                let reason = "service.port needs a number or a name".to_string();
                diags.error(object, format!("{field}: {reason}"));
                return Backend::Invalid {
                    status: 503,
                    reason,
                };
            }
        },
        None => {
            let reason = "service.port is required".to_string();
            diags.error(object, format!("{field}: {reason}"));
            return Backend::Invalid {
                status: 503,
                reason,
            };
        }
    };
    match refs.service_backend_via(ns, &svc.name, port, nginx.service_upstream) {
        Ok(mut s) => {
            let variant = apply_nginx_backend(&mut s, nginx);
            Backend::Service(refs.register_variant(s, &variant))
        }
        // ingress-nginx's `default-backend`: it also answers for a Service without ready endpoints.
        Err(BackendError::NoReadyEndpoints(..)) if nginx.default_backend.is_some() => {
            let name = nginx.default_backend.as_deref().unwrap_or_default();
            match default_backend_service(ns, name, refs) {
                Ok(key) => Backend::Service(key),
                Err(e) => {
                    diags.warning(
                        object,
                        format!("{field}: no ready endpoints, and annotation default-backend: {e}; requests get 503"),
                    );
                    Backend::Invalid {
                        status: 503,
                        reason: e.to_string(),
                    }
                }
            }
        }
        Err(e) => {
            if !matches!(e, BackendError::NoReadyEndpoints(..)) {
                diags.warning(object, format!("{field}: {e}; requests get 503"));
            }
            Backend::Invalid {
                status: 503,
                reason: e.to_string(),
            }
        }
    }
}
