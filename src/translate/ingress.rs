//! networking.k8s.io/v1 Ingress.
//!
//! Which Ingresses are ours: those whose class (`spec.ingressClassName`, or the older
//! `kubernetes.io/ingress.class` annotation) names an IngressClass with `spec.controller` equal to ours, and those
//! with no class at all when one of our IngressClasses is marked default
//! (`ingressclass.kubernetes.io/is-default-class: "true"`). Everything else belongs to another controller and is
//! ignored without a word.
//!
//! Path types follow the Kubernetes documentation: `Exact` compares the whole path, case-sensitively; `Prefix`
//! compares element by element split on `/` and ignores a trailing slash; `ImplementationSpecific` is treated as
//! `Prefix` (documented in docs/routing.md).

use super::builder::{ListenerKey, ModelBuilder};
use super::refs::{BackendError, PortRef, Resolver};
use super::{Diagnostics, Options};
use crate::k8s::{Ingress, IngressClass};
use crate::model::{
    Action, Backend, BackendGroup, HostPattern, HttpRule, ListenerCertificate, Origin, OriginKind,
    PathMatch, Protocol, RouteMatch, Timeouts, WeightedBackend,
};
use crate::source::{Input, ObjectRef};
use k8s_openapi::api::networking::v1::IngressBackend;

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
) {
    // Oldest first, so the oldest Ingress's defaultBackend wins, as ingress-nginx does.
    let mut ours: Vec<&Ingress> = input
        .ingresses
        .iter()
        .map(|i| i.as_ref())
        .filter(|i| ingress_is_ours(i, input, opts))
        .collect();
    ours.sort_by_key(|i| created(i).map_or((1, 0), |t| (0, t)));

    // TLS first: the HTTPS listener exists when at least one Ingress has a usable certificate, and then serves
    // every Ingress rule, as ingress-nginx does (hosts without a certificate of their own get the first one).
    let https = ListenerKey::port(opts.https_port);
    let mut certificates = Vec::new();
    for ing in &ours {
        certificates.extend(tls_certificates(ing, refs, diags));
    }
    let mut keys = vec![ListenerKey::port(opts.http_port)];
    if !certificates.is_empty() {
        match model.ensure_listener(https, Protocol::Https) {
            Ok(()) => {
                for c in certificates {
                    model.add_certificate(https, c);
                }
                keys.push(https);
            }
            Err(existing) => {
                if let Some(ing) = ours.first() {
                    diags.error(
                        &ObjectRef::new("Ingress", &ing.metadata),
                        format!(
                            "spec.tls: the HTTPS port {} already serves {existing:?}; TLS hosts are not served",
                            opts.https_port
                        ),
                    );
                }
            }
        }
    }

    for ing in ours {
        translate_one(ing, &keys, refs, model, diags);
    }
}

/// Annotation prefixes of other Ingress controllers whose behaviour Portcullis does not implement.
const FOREIGN_ANNOTATION_PREFIXES: &[&str] = &[
    "nginx.ingress.kubernetes.io/",
    "nginx.org/",
    "traefik.ingress.kubernetes.io/",
    "haproxy.org/",
];

/// Controller-specific annotations (ingress-nginx's `rewrite-target`, `ssl-redirect`, ...) change what an
/// Ingress means under the controller they were written for. Portcullis does not implement them yet, so each
/// one is reported (a warning: the Ingress is still served, without that behaviour) instead of being dropped
/// without a word.
fn report_controller_annotations(ing: &Ingress, object: &ObjectRef, diags: &mut Diagnostics) {
    let Some(annotations) = &ing.metadata.annotations else {
        return;
    };
    for key in annotations.keys() {
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

fn translate_one(
    ing: &Ingress,
    keys: &[ListenerKey],
    refs: &Resolver<'_>,
    model: &mut ModelBuilder,
    diags: &mut Diagnostics,
) {
    let object = ObjectRef::new("Ingress", &ing.metadata);
    let ns = ing.metadata.namespace.as_deref().unwrap_or("default");
    let name = ing.metadata.name.as_deref().unwrap_or("");
    report_controller_annotations(ing, &object, diags);
    let Some(spec) = &ing.spec else { return };
    let origin = |rule: usize| Origin {
        kind: OriginKind::Ingress,
        namespace: ns.to_string(),
        name: name.to_string(),
        rule,
        rule_name: None,
        created: created(ing),
    };

    if let Some(default) = &spec.default_backend {
        let rule = HttpRule {
            origin: origin(Origin::DEFAULT_BACKEND),
            matches: vec![RouteMatch::any()],
            filters: vec![],
            timeouts: Timeouts::default(),
            retry: None,
            action: Action::Forward(group(backend(
                default,
                ns,
                refs,
                &object,
                "spec.defaultBackend",
                diags,
            ))),
        };
        for (i, key) in keys.iter().enumerate() {
            if let Err(existing) = model.set_default_backend(*key, rule.clone()) {
                if i == 0 {
                    let msg = format!(
                        "spec.defaultBackend is ignored: {} already sets the default backend (the oldest Ingress wins)",
                        existing.origin
                    );
                    diags.warning(&object, msg);
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
                Err(e) => {
                    diags.error(&object, format!("spec.rules[{ri}].host: {e}; rule skipped"));
                    index += rule.http.as_ref().map_or(0, |h| h.paths.len());
                    continue;
                }
            },
        };
        for (pi, path) in rule.http.iter().flat_map(|h| h.paths.iter()).enumerate() {
            let this = index;
            index += 1;
            let field = format!("spec.rules[{ri}].http.paths[{pi}]");
            let m = match path_match(path.path.as_deref(), &path.path_type) {
                Ok(m) => m,
                Err(e) => {
                    diags.error(&object, format!("{field}: {e}; path skipped"));
                    continue;
                }
            };
            let be = backend(
                &path.backend,
                ns,
                refs,
                &object,
                &format!("{field}.backend"),
                diags,
            );
            let rule = HttpRule {
                origin: origin(this),
                matches: vec![RouteMatch {
                    path: m,
                    method: None,
                    headers: vec![],
                    query_params: vec![],
                }],
                filters: vec![],
                action: Action::Forward(group(be)),
                timeouts: Timeouts::default(),
                retry: None,
            };
            for key in keys {
                model.add_rule(*key, None, host.clone(), rule.clone());
            }
        }
    }
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

/// Resolves an Ingress backend. An unresolvable Service answers 503, as ingress-nginx does.
fn backend(
    b: &IngressBackend,
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
    match refs.service_backend(ns, &svc.name, port) {
        Ok(s) => Backend::Service(refs.register(s)),
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
