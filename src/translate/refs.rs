//! References between objects: Service ports to ready endpoints (through EndpointSlices), namespace labels, and
//! ReferenceGrants for cross-namespace references.

use crate::k8s::gw::ReferenceGrant;
use crate::k8s::{ConfigMap, EndpointSlice, Namespace, Secret, Service};
use crate::model::{
    BackendKey, BackendPolicy, BackendProtocol, Endpoint, Redacted, ServiceBackend,
};
use crate::source::{HasMeta, Input, ObjectRef};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

/// The label that ties an EndpointSlice to its Service.
pub(crate) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// How a backend names the Service port it wants.
#[derive(Clone, Copy, Debug)]
pub(crate) enum PortRef<'a> {
    /// `port.number` / `port` (the Service's port, not the target port).
    Number(i32),
    /// `port.name` (Ingress only).
    Name(&'a str),
}

/// Why a Service reference does not give endpoints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BackendError {
    #[error("service {0}/{1} not found")]
    ServiceNotFound(String, String),
    #[error("service {0}/{1} has no port {2}")]
    PortNotFound(String, String, String),
    #[error("service {0}/{1} is of type ExternalName, which is not supported")]
    ExternalName(String, String),
    #[error("service {0}/{1} port {2} has no ready endpoints")]
    NoReadyEndpoints(String, String, u16),
    #[error("service {0}/{1} has no cluster IP (headless), so service-upstream cannot use it")]
    NoClusterIp(String, String),
}

impl BackendError {
    /// `true` when the reference itself is fine and only endpoints are missing (503 rather than 500).
    pub(crate) fn is_unavailable(&self) -> bool {
        matches!(self, BackendError::NoReadyEndpoints(..))
    }
}

/// Indexes over the input for reference lookups. Built once per translation.
pub(crate) struct Resolver<'a> {
    services: HashMap<(&'a str, &'a str), &'a Service>,
    slices: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
    namespaces: HashMap<&'a str, &'a Namespace>,
    grants: HashMap<&'a str, Vec<&'a ReferenceGrant>>,
    secrets: HashMap<(&'a str, &'a str), &'a Secret>,
    config_maps: HashMap<(&'a str, &'a str), &'a ConfigMap>,
    /// The `portcullis.dev/*` policy of each Service that has one.
    policies: HashMap<(&'a str, &'a str), BackendPolicy>,
    /// Problems found in those annotations, to report once per translation.
    policy_problems: Vec<(ObjectRef, String)>,
    /// Every backend a rule refers to, collected as the translators resolve references.
    backends: RefCell<BTreeMap<BackendKey, ServiceBackend>>,
}

/// The text of `key` in a Secret, from `data` (already base64-decoded) or `stringData` (files often use it).
fn secret_value(s: &Secret, key: &str) -> Option<String> {
    if let Some(v) = s.data.as_ref().and_then(|d| d.get(key)) {
        return String::from_utf8(v.0.clone()).ok();
    }
    s.string_data.as_ref().and_then(|d| d.get(key)).cloned()
}

fn ns_name<T: HasMeta>(o: &T) -> (&str, &str) {
    let m = o.meta();
    (
        m.namespace.as_deref().unwrap_or("default"),
        m.name.as_deref().unwrap_or(""),
    )
}

impl<'a> Resolver<'a> {
    pub(crate) fn new(input: &'a Input) -> Self {
        let services = input
            .services
            .iter()
            .map(|s| (ns_name(s.as_ref()), s.as_ref()))
            .collect();
        let mut slices: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for s in &input.endpoint_slices {
            let label = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL));
            if let Some(svc) = label {
                let (ns, _) = ns_name(s.as_ref());
                slices.entry((ns, svc.as_str())).or_default().push(s);
            }
        }
        let namespaces = input
            .namespaces
            .iter()
            .filter_map(|n| n.metadata.name.as_deref().map(|name| (name, n.as_ref())))
            .collect();
        let mut grants: HashMap<&str, Vec<&ReferenceGrant>> = HashMap::new();
        for g in &input.reference_grants {
            grants.entry(ns_name(g.as_ref()).0).or_default().push(g);
        }
        let secrets = input
            .secrets
            .iter()
            .map(|s| (ns_name(s.as_ref()), s.as_ref()))
            .collect();
        let config_maps = input
            .config_maps
            .iter()
            .map(|c| (ns_name(c.as_ref()), c.as_ref()))
            .collect();
        let mut policies = HashMap::new();
        let mut policy_problems = Vec::new();
        for svc in &input.services {
            let (policy, problems) = super::backendpolicy::parse(svc.metadata.annotations.as_ref());
            let key = ns_name(svc.as_ref());
            if !problems.is_empty() {
                let object = ObjectRef::new("Service", &svc.metadata);
                policy_problems.extend(problems.into_iter().map(|p| (object.clone(), p)));
            }
            if !policy.is_default() {
                policies.insert(key, policy);
            }
        }
        Resolver {
            services,
            slices,
            namespaces,
            grants,
            secrets,
            config_maps,
            policies,
            policy_problems,
            backends: RefCell::new(BTreeMap::new()),
        }
    }

    /// Problems in the `portcullis.dev/*` annotations of Services (warnings: the default is used instead).
    pub(crate) fn policy_problems(&self) -> &[(ObjectRef, String)] {
        &self.policy_problems
    }

    /// Holds `backend` once in the model and returns the key rules use for it. References to the same Service port
    /// with the same settings share one key; settings that differ from the port's own (a Gateway's backend client
    /// certificate) get a variant named after what differs, so keys stay stable from one translation to the next.
    pub(crate) fn register(&self, backend: ServiceBackend) -> BackendKey {
        self.register_variant(backend, "")
    }

    /// [`Resolver::register`] for a backend whose settings differ from its Service port's own in ways the
    /// caller names in `extra` (e.g. `lb=least-request` from an ingress-nginx annotation).
    pub(crate) fn register_variant(&self, backend: ServiceBackend, extra: &str) -> BackendKey {
        let mut variant = String::new();
        if let Some(cc) = backend
            .tls
            .as_ref()
            .and_then(|t| t.client_certificate.as_ref())
        {
            variant = format!("client-cert={}", cc.source);
        }
        if !extra.is_empty() {
            if !variant.is_empty() {
                variant.push(',');
            }
            variant.push_str(extra);
        }
        let mut backends = self.backends.borrow_mut();
        let base = backend.key(variant);
        let mut key = base.clone();
        // Two different settings under one label cannot come from valid input today; numbered variants keep them
        // apart anyway (in input order, which is sorted, so still deterministic).
        for n in 2u32.. {
            match backends.get(&key) {
                None => {
                    backends.insert(key.clone(), backend);
                    break;
                }
                Some(existing) if *existing == backend => break,
                Some(_) => {
                    key = base.clone();
                    key.variant = if base.variant.is_empty() {
                        format!("{n}")
                    } else {
                        format!("{}~{n}", base.variant)
                    };
                }
            }
        }
        key
    }

    /// The backend registered under `key`.
    pub(crate) fn backend(&self, key: &BackendKey) -> Option<ServiceBackend> {
        self.backends.borrow().get(key).cloned()
    }

    /// Every registered backend, leaving none behind.
    pub(crate) fn take_backends(&self) -> BTreeMap<BackendKey, ServiceBackend> {
        std::mem::take(&mut *self.backends.borrow_mut())
    }

    /// Every key of a Secret with its text (`data` and `stringData`; values that are not UTF-8 are left out), or
    /// `None` when there is no such Secret. For ingress-nginx `auth-secret` (htpasswd entries).
    pub(crate) fn secret_entries(&self, ns: &str, name: &str) -> Option<BTreeMap<String, String>> {
        let s = self.secrets.get(&(ns, name))?;
        let mut out = BTreeMap::new();
        for (k, v) in s.string_data.iter().flatten() {
            out.insert(k.clone(), v.clone());
        }
        for (k, v) in s.data.iter().flatten() {
            if let Ok(text) = String::from_utf8(v.0.clone()) {
                out.insert(k.clone(), text);
            }
        }
        Some(out)
    }

    /// The `data` of a ConfigMap, or `None` when there is no such ConfigMap.
    pub(crate) fn config_map_data(&self, ns: &str, name: &str) -> Option<BTreeMap<String, String>> {
        let c = self.config_maps.get(&(ns, name))?;
        Some(c.data.clone().unwrap_or_default().into_iter().collect())
    }

    /// The certificate chain and key of a TLS Secret, checked to parse and to belong together.
    pub(crate) fn tls_secret(&self, ns: &str, name: &str) -> Result<(String, Redacted), String> {
        let s = self
            .secrets
            .get(&(ns, name))
            .ok_or_else(|| format!("Secret {ns}/{name} not found"))?;
        if let Some(t) = s.type_.as_deref() {
            if t != "kubernetes.io/tls" && t != "Opaque" {
                return Err(format!(
                    "Secret {ns}/{name} is of type {t}, not kubernetes.io/tls"
                ));
            }
        }
        let cert = secret_value(s, "tls.crt")
            .ok_or_else(|| format!("Secret {ns}/{name} has no tls.crt"))?;
        let key = secret_value(s, "tls.key")
            .ok_or_else(|| format!("Secret {ns}/{name} has no tls.key"))?;
        crate::tls::parse_certified_key(cert.as_bytes(), key.as_bytes())
            .map_err(|e| format!("Secret {ns}/{name}: {e}"))?;
        Ok((cert, Redacted::new(key)))
    }

    /// The PEM CA bundle under `ca.crt` of a ConfigMap, checked to parse.
    pub(crate) fn ca_config_map(&self, ns: &str, name: &str) -> Result<String, String> {
        let c = self
            .config_maps
            .get(&(ns, name))
            .ok_or_else(|| format!("ConfigMap {ns}/{name} not found"))?;
        let pem = c
            .data
            .as_ref()
            .and_then(|d| d.get("ca.crt"))
            .ok_or_else(|| format!("ConfigMap {ns}/{name} has no ca.crt"))?;
        crate::tls::parse_ca_bundle(pem.as_bytes())
            .map_err(|e| format!("ConfigMap {ns}/{name}: {e}"))?;
        Ok(pem.clone())
    }

    /// The Service, if it exists.
    pub(crate) fn service(&self, ns: &str, name: &str) -> Option<&'a Service> {
        self.services.get(&(ns, name)).copied()
    }

    /// Resolves a Service port to its ready endpoints.
    ///
    /// The Service port is found by number or name; its endpoints are the `ready` addresses of the Service's
    /// EndpointSlices, each with the slice port whose name equals the Service port's name. Endpoints whose ready
    /// condition is unset count as ready, as the EndpointSlice API says.
    pub(crate) fn service_backend(
        &self,
        ns: &str,
        name: &str,
        port: PortRef<'_>,
    ) -> Result<ServiceBackend, BackendError> {
        self.service_backend_via(ns, name, port, false)
    }

    /// As [`Resolver::service_backend`], or, with `cluster_ip` (ingress-nginx `service-upstream`), one endpoint:
    /// the Service's cluster IP and port, leaving the choice of a pod to kube-proxy.
    pub(crate) fn service_backend_via(
        &self,
        ns: &str,
        name: &str,
        port: PortRef<'_>,
        cluster_ip: bool,
    ) -> Result<ServiceBackend, BackendError> {
        let svc = self
            .service(ns, name)
            .ok_or_else(|| BackendError::ServiceNotFound(ns.into(), name.into()))?;
        let spec = svc.spec.as_ref();
        if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
            return Err(BackendError::ExternalName(ns.into(), name.into()));
        }
        let ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or(&[]);
        let svc_port = ports
            .iter()
            .find(|p| match port {
                PortRef::Number(n) => p.port == n,
                PortRef::Name(want) => p.name.as_deref() == Some(want),
            })
            .ok_or_else(|| {
                let what = match port {
                    PortRef::Number(n) => n.to_string(),
                    PortRef::Name(s) => format!("named {s:?}"),
                };
                BackendError::PortNotFound(ns.into(), name.into(), what)
            })?;
        let port_number = u16::try_from(svc_port.port).map_err(|_| {
            BackendError::PortNotFound(ns.into(), name.into(), svc_port.port.to_string())
        })?;
        let port_name = svc_port.name.as_deref().unwrap_or("");

        let mut endpoints = Vec::new();
        if cluster_ip {
            let ip = spec
                .and_then(|s| s.cluster_ip.as_deref())
                .and_then(|ip| ip.parse::<IpAddr>().ok())
                .ok_or_else(|| BackendError::NoClusterIp(ns.into(), name.into()))?;
            endpoints.push(Endpoint {
                ip,
                port: port_number,
            });
        }
        for slice in self
            .slices
            .get(&(ns, name))
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .filter(|_| !cluster_ip)
        {
            if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
                continue;
            }
            let target = slice
                .ports
                .as_deref()
                .unwrap_or(&[])
                .iter()
                .find(|p| p.name.as_deref().unwrap_or("") == port_name)
                .and_then(|p| p.port)
                .and_then(|p| u16::try_from(p).ok());
            let Some(target) = target else { continue };
            for ep in slice.endpoints.iter().flatten() {
                let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                if !ready {
                    continue;
                }
                for addr in &ep.addresses {
                    if let Ok(ip) = addr.parse::<IpAddr>() {
                        endpoints.push(Endpoint { ip, port: target });
                    }
                }
            }
        }
        endpoints.sort();
        endpoints.dedup();
        if endpoints.is_empty() {
            return Err(BackendError::NoReadyEndpoints(
                ns.into(),
                name.into(),
                port_number,
            ));
        }
        let protocol = match svc_port.app_protocol.as_deref() {
            Some("kubernetes.io/h2c") => BackendProtocol::H2c,
            _ => BackendProtocol::Http1,
        };
        Ok(ServiceBackend {
            namespace: ns.to_string(),
            name: name.to_string(),
            port: port_number,
            endpoints,
            protocol,
            tls: None,
            policy: self.policies.get(&(ns, name)).cloned().unwrap_or_default(),
        })
    }

    /// The name of the Service port with this number (empty when the port has no name).
    pub(crate) fn service_port_name(&self, ns: &str, name: &str, port: u16) -> Option<String> {
        self.service(ns, name)?
            .spec
            .as_ref()?
            .ports
            .as_deref()?
            .iter()
            .find(|p| p.port == i32::from(port))
            .map(|p| p.name.clone().unwrap_or_default())
    }

    /// The labels of a namespace (empty when the namespace object is not known).
    pub(crate) fn namespace_labels(&self, ns: &str) -> BTreeMap<String, String> {
        self.namespaces
            .get(ns)
            .and_then(|n| n.metadata.labels.clone())
            .unwrap_or_default()
    }

    /// Does a ReferenceGrant in `to_ns` allow an object of `from` (group, kind) in `from_ns` to reference the object
    /// `to` (group, kind) named `to_name`? Same-namespace references need no grant.
    pub(crate) fn grant_allows(
        &self,
        from: (&str, &str),
        from_ns: &str,
        to: (&str, &str),
        to_ns: &str,
        to_name: &str,
    ) -> bool {
        if from_ns == to_ns {
            return true;
        }
        self.grants.get(to_ns).is_some_and(|grants| {
            grants.iter().any(|g| {
                let from_ok = g
                    .spec
                    .from
                    .iter()
                    .any(|f| f.group == from.0 && f.kind == from.1 && f.namespace == from_ns);
                let to_ok = g.spec.to.iter().any(|t| {
                    t.group == to.0
                        && t.kind == to.1
                        && t.name.as_deref().is_none_or(|n| n == to_name)
                });
                from_ok && to_ok
            })
        })
    }
}
