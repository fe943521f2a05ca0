//! BackendTLSPolicy: which Service ports the proxy must reach over TLS, with which SNI, trust anchors and names,
//! and the policies' status.
//!
//! A policy targets a Service (optionally one port, by `sectionName`) in its own namespace. For a given Service
//! port the policies that name the port win over those that name the whole Service; among policies of equal
//! specificity the oldest wins, then the first by `namespace/name`, and the others are `Accepted=False` with
//! reason `Conflicted`.

use super::refs::Resolver;
use super::status::{Condition, Named, ParentRef, PolicyAncestorStatus, PolicyStatus};
use crate::k8s::gw::BackendTLSPolicy;
use crate::k8s::GATEWAY_GROUP;
use crate::model::{BackendTls, ServiceBackend, SubjectAltName};
use crate::source::Input;
use gateway_api::apis::standard::backendtlspolicies::BackendTlsPolicyValidationSubjectAltNamesType as SanType;
use std::collections::{BTreeMap, BTreeSet};

/// A policy after validation.
struct Policy<'a> {
    ns: &'a str,
    name: &'a str,
    created: Option<i64>,
    generation: Option<i64>,
    /// (Service name, sectionName).
    targets: Vec<(&'a str, Option<&'a str>)>,
    /// The TLS settings, or why the policy cannot be used: (ResolvedRefs reason, message).
    tls: Result<BackendTls, (&'static str, String)>,
}

/// All BackendTLSPolicies, validated once per translation.
pub(crate) struct Policies<'a> {
    policies: Vec<Policy<'a>>,
}

/// What a Service port needs, after looking at the policies.
pub(crate) enum PortTls {
    /// No policy: plain HTTP.
    None,
    /// TLS as the winning policy says.
    Tls(Box<BackendTls>),
    /// The winning policy cannot be used: requests to the port fail (500).
    Invalid(String),
}

impl<'a> Policies<'a> {
    pub(crate) fn new(input: &'a Input, refs: &Resolver<'_>) -> Self {
        let policies = input
            .backend_tls_policies
            .iter()
            .map(|p| {
                let ns = p.metadata.namespace.as_deref().unwrap_or("default");
                let name = p.metadata.name.as_deref().unwrap_or("");
                Policy {
                    ns,
                    name,
                    created: super::created(&p.metadata),
                    generation: p.metadata.generation,
                    targets: p
                        .spec
                        .target_refs
                        .iter()
                        .filter(|t| t.group.is_empty() && t.kind == "Service")
                        .map(|t| (t.name.as_str(), t.section_name.as_deref()))
                        .collect(),
                    tls: validate(p, ns, name, refs),
                }
            })
            .collect();
        Policies { policies }
    }

    /// The policy that governs port `port_name` of Service `ns/svc`, if any.
    fn winner(&self, ns: &str, svc: &str, port_name: &str) -> Option<&Policy<'a>> {
        let specific = |p: &&Policy<'_>| {
            p.ns == ns
                && p.targets
                    .iter()
                    .any(|(s, sec)| *s == svc && sec.is_some_and(|sec| sec == port_name))
        };
        let general = |p: &&Policy<'_>| {
            p.ns == ns && p.targets.iter().any(|(s, sec)| *s == svc && sec.is_none())
        };
        let oldest = |a: &&Policy<'_>, b: &&Policy<'_>| {
            (a.created.is_none(), a.created, a.ns, a.name).cmp(&(
                b.created.is_none(),
                b.created,
                b.ns,
                b.name,
            ))
        };
        self.policies
            .iter()
            .filter(specific)
            .min_by(oldest)
            .or_else(|| self.policies.iter().filter(general).min_by(oldest))
    }

    /// What TLS port `port_name` of Service `ns/svc` needs.
    /// `s` with TLS to the backend when a BackendTLSPolicy targets its Service port; `Err` with the reason when
    /// the policy that targets it cannot be used.
    pub(crate) fn apply(
        &self,
        mut s: ServiceBackend,
        refs: &Resolver<'_>,
    ) -> Result<ServiceBackend, String> {
        let port_name = refs
            .service_port_name(&s.namespace, &s.name, s.port)
            .unwrap_or_default();
        match self.for_port(&s.namespace, &s.name, &port_name) {
            PortTls::None => Ok(s),
            PortTls::Tls(t) => {
                s.tls = Some(t);
                Ok(s)
            }
            PortTls::Invalid(reason) => Err(reason),
        }
    }

    pub(crate) fn for_port(&self, ns: &str, svc: &str, port_name: &str) -> PortTls {
        match self.winner(ns, svc, port_name) {
            None => PortTls::None,
            Some(p) => match &p.tls {
                Ok(t) => PortTls::Tls(Box::new(t.clone())),
                Err((_, msg)) => {
                    PortTls::Invalid(format!("BackendTLSPolicy {}/{}: {msg}", p.ns, p.name))
                }
            },
        }
    }

    /// Status of every policy that targets a Service our routes use. `usage` maps (namespace, Service) to the
    /// Gateways (namespace, name) whose routes send traffic to it.
    pub(crate) fn statuses(
        &self,
        usage: &BTreeMap<(String, String), BTreeSet<(String, String)>>,
        controller: &str,
    ) -> Vec<Named<PolicyStatus>> {
        let mut out = Vec::new();
        for p in &self.policies {
            let mut ancestors: BTreeSet<(String, String)> = BTreeSet::new();
            let mut conflicted = false;
            for (svc, sec) in &p.targets {
                if let Some(gws) = usage.get(&(p.ns.to_string(), svc.to_string())) {
                    ancestors.extend(gws.iter().cloned());
                }
                // Conflicted when another policy wins for this target.
                let section = sec.unwrap_or("");
                let winner = match sec {
                    Some(_) => self.winner(p.ns, svc, section),
                    None => self
                        .policies
                        .iter()
                        .filter(|q| {
                            q.ns == p.ns && q.targets.iter().any(|(s, s2)| s == svc && s2.is_none())
                        })
                        .min_by(|a, b| {
                            (a.created.is_none(), a.created, a.ns, a.name).cmp(&(
                                b.created.is_none(),
                                b.created,
                                b.ns,
                                b.name,
                            ))
                        }),
                };
                if winner.is_some_and(|w| !(w.ns == p.ns && w.name == p.name)) {
                    conflicted = true;
                }
            }
            if ancestors.is_empty() {
                continue;
            }
            let g = p.generation;
            let accepted = if conflicted {
                Condition::new(
                    "Accepted",
                    false,
                    "Conflicted",
                    "another BackendTLSPolicy targeting the same Service takes precedence",
                    g,
                )
            } else {
                match &p.tls {
                    Ok(_) => Condition::new("Accepted", true, "Accepted", "policy accepted", g),
                    Err((_, m)) => {
                        Condition::new("Accepted", false, "NoValidCACertificate", m.clone(), g)
                    }
                }
            };
            let resolved = match &p.tls {
                Ok(_) => Condition::new(
                    "ResolvedRefs",
                    true,
                    "ResolvedRefs",
                    "all references resolved",
                    g,
                ),
                Err((r, m)) => Condition::new("ResolvedRefs", false, r, m.clone(), g),
            };
            out.push(Named {
                kind: None,
                namespace: Some(p.ns.to_string()),
                name: p.name.to_string(),
                status: PolicyStatus {
                    ancestors: ancestors
                        .into_iter()
                        .map(|(ns, name)| PolicyAncestorStatus {
                            ancestor_ref: ParentRef {
                                group: Some(GATEWAY_GROUP.to_string()),
                                kind: Some("Gateway".to_string()),
                                name,
                                namespace: Some(ns),
                                section_name: None,
                                port: None,
                            },
                            controller_name: controller.to_string(),
                            conditions: vec![accepted.clone(), resolved.clone()],
                        })
                        .collect(),
                },
            });
        }
        out
    }
}

fn validate(
    p: &BackendTLSPolicy,
    ns: &str,
    name: &str,
    refs: &Resolver<'_>,
) -> Result<BackendTls, (&'static str, String)> {
    let v = &p.spec.validation;
    if v.well_known_ca_certificates.is_some() {
        return Err((
            "InvalidCACertificateRef",
            "wellKnownCACertificates is not supported; use caCertificateRefs".into(),
        ));
    }
    let mut ca_bundles = Vec::new();
    let mut last_error = None;
    for r in v.ca_certificate_refs.iter().flatten() {
        if !r.group.is_empty() || r.kind != "ConfigMap" {
            last_error = Some((
                "InvalidKind",
                format!(
                    "CA certificate reference kind {}/{} is not supported; use a ConfigMap",
                    r.group, r.kind
                ),
            ));
            continue;
        }
        match refs.ca_config_map(ns, &r.name) {
            Ok(pem) => ca_bundles.push(pem),
            Err(e) => last_error = Some(("InvalidCACertificateRef", e)),
        }
    }
    if let Some(e) = last_error {
        return Err(e);
    }
    if ca_bundles.is_empty() {
        return Err(("InvalidCACertificateRef", "no caCertificateRefs".into()));
    }
    let mut subject_alt_names = Vec::new();
    for s in v.subject_alt_names.iter().flatten() {
        match (&s.r#type, &s.hostname, &s.uri) {
            (SanType::Hostname, Some(h), _) => {
                subject_alt_names.push(SubjectAltName::Hostname(h.clone()))
            }
            (SanType::Uri, _, Some(u)) => subject_alt_names.push(SubjectAltName::Uri(u.clone())),
            _ => {
                return Err((
                    "InvalidKind",
                    "a subjectAltNames entry lacks the value its type names".into(),
                ))
            }
        }
    }
    Ok(BackendTls {
        subject_alt_names,
        ..BackendTls::verified(format!("{ns}/{name}"), v.hostname.clone(), ca_bundles)
    })
}
