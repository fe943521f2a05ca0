//! A test world: the base manifests plus a test's manifests, prepared the way the Go suite's applier and a
//! cluster would (placeholders, namespace labels, `metadata.generation`), plus what a cluster adds: one loopback
//! address per Gateway, one echo server per pod and the EndpointSlices that select them, and the TLS material
//! the suite generates. Building a world is pure (no I/O except reading the manifests); running it is
//! `runner`'s job.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use anyhow::Context as _;
use base64::Engine as _;
use serde_json::{json, Value};

use super::certs::CertStore;
use super::util::{pod_name, stable_hash};
use super::yaml::{self, at, at_mut, kind, name, namespace, str_at};

/// The GatewayClass name the worlds use.
pub const CLASS_NAME: &str = "portcullis";
/// The controller name of that class.
pub const CONTROLLER_NAME: &str = "portcullis.dev/gateway-controller";
/// An address this host cannot bind (TEST-NET-1), for `PLACEHOLDER_UNUSABLE_ADDRS`.
pub const UNUSABLE_ADDRESS: &str = "192.0.2.1";
/// The annotation that excludes a Gateway from the suite's readiness checks.
pub const SKIP_READINESS: &str = "gateway-api/skip-this-for-readiness";

/// How to build a world.
#[derive(Clone, Debug)]
pub struct WorldOptions {
    /// Index of the world in this run (picks its loopback addresses).
    pub index: usize,
    /// Give every Gateway its own loopback address in `spec.addresses` (the contract with the proxy).
    pub inject_addresses: bool,
    /// The address Gateways without `spec.addresses` bind (`--bind-address`).
    pub bind_address: Ipv4Addr,
}

/// One YAML file of the world.
#[derive(Clone, Debug)]
pub struct ManifestFile {
    /// File name inside the world directory.
    pub file_name: String,
    /// Its documents.
    pub docs: Vec<Value>,
}

/// A Gateway of the world.
#[derive(Clone, Debug)]
pub struct GatewayPlan {
    /// The address to dial.
    pub ip: IpAddr,
    /// Its listener ports and those of the ListenerSets that name it (manifest ports).
    pub ports: BTreeSet<u16>,
    /// The ports of its UDP listeners (also in `ports`).
    pub udp_ports: BTreeSet<u16>,
    /// Annotated `gateway-api/skip-this-for-readiness: "true"`.
    pub skip_readiness: bool,
}

/// The HTTPS listener of an echo pod.
#[derive(Clone, Debug)]
pub struct EchoTlsPlan {
    /// `HTTPS_PORT` (8443).
    pub port: u16,
    /// `TLS_SERVER_CERT`.
    pub cert_pem: String,
    /// `TLS_SERVER_PRIVKEY`.
    pub key_pem: String,
    /// `TLS_CLIENT_CACERTS`.
    pub client_ca_pem: Option<String>,
}

/// How an echo-basic pod in its HTTP mode is run.
#[derive(Clone, Debug)]
pub struct EchoPlan {
    /// `HTTP_PORT` (3000).
    pub http_port: u16,
    /// `H2C_PORT` (3001).
    pub h2c_port: u16,
    /// HTTPS, when the pod has `TLS_SERVER_CERT` and `TLS_SERVER_PRIVKEY`.
    pub https: Option<EchoTlsPlan>,
}

/// A TLS listener of a gRPC or TCP echo pod (`TLS_SERVER_CERT` + `TLS_SERVER_PRIV_KEY`).
#[derive(Clone, Debug)]
pub struct PodTlsPlan {
    /// `HTTPS_PORT` (gRPC) or `TLS_PORT` (TCP), default 8443.
    pub port: u16,
    /// The certificate chain PEM.
    pub cert_pem: String,
    /// The private key PEM.
    pub key_pem: String,
}

/// What a pod runs.
#[derive(Clone, Debug)]
pub enum BackendPlan {
    /// echo-basic's HTTP echo.
    Http(EchoPlan),
    /// echo-basic with `GRPC_ECHO_SERVER`: h2c on `port` (`HTTP_PORT`, 3000), TLS when configured.
    Grpc {
        /// `HTTP_PORT`.
        port: u16,
        /// `HTTPS_PORT` with the mounted certificate.
        tls: Option<PodTlsPlan>,
    },
    /// echo-basic with `TCP_ECHO_SERVER`: plain on `port` (`TCP_PORT`, 3000), TLS when configured.
    Tcp {
        /// `TCP_PORT`.
        port: u16,
        /// `TLS_PORT` with the mounted certificate.
        tls: Option<PodTlsPlan>,
    },
    /// echo-basic with `UDP_ECHO_SERVER` on `port` (`UDP_PORT`, 8080).
    Udp {
        /// `UDP_PORT`.
        port: u16,
    },
    /// The CoreDNS pod: the `whoami` zones of its Corefile, answered on UDP `port` (53).
    Dns {
        /// The UDP port (53).
        port: u16,
        /// Zones with the `whoami` plugin.
        zones: Vec<String>,
    },
}

/// One pod of a Deployment.
#[derive(Clone, Debug)]
pub struct PodPlan {
    /// `<deployment>-<hash>-<suffix>`.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// The Deployment.
    pub deployment: String,
    /// Its own loopback address.
    pub ip: Ipv4Addr,
    /// Pod template labels.
    pub labels: BTreeMap<String, String>,
    /// Declared container ports: (name, port).
    pub container_ports: Vec<(Option<String>, u16)>,
    /// `SERVICE_NAME` and `INGRESS_NAME` of its container (literal env values), empty when unset.
    pub service_name: String,
    /// `INGRESS_NAME`.
    pub ingress_name: String,
    /// How to run it; `None` when the harness cannot run it (see `note`).
    pub backend: Option<BackendPlan>,
    /// Why it is not run, or what could not be set up.
    pub note: Option<String>,
}

impl PodPlan {
    /// The HTTP echo plan, when the pod runs echo-basic's HTTP mode.
    pub fn http_echo(&self) -> Option<&EchoPlan> {
        match &self.backend {
            Some(BackendPlan::Http(e)) => Some(e),
            _ => None,
        }
    }
}

/// A world ready to be written and run.
#[derive(Clone, Debug)]
pub struct WorldPlan {
    /// The manifests (base first, then the test's), prepared.
    pub files: Vec<ManifestFile>,
    /// GatewayClass, Secrets, ConfigMaps and EndpointSlices (`generated.yaml`).
    pub generated: Vec<Value>,
    /// Gateways by `namespace/name`.
    pub gateways: BTreeMap<String, GatewayPlan>,
    /// Pods, in Deployment order.
    pub pods: Vec<PodPlan>,
    /// The address `PLACEHOLDER_USABLE_ADDRS` became.
    pub usable_address: Ipv4Addr,
}

impl WorldPlan {
    /// Every document of the world (manifests, then generated).
    pub fn all_docs(&self) -> impl Iterator<Item = &Value> {
        self.files
            .iter()
            .flat_map(|f| f.docs.iter())
            .chain(self.generated.iter())
    }

    /// The object of this kind and `namespace/name` (`name` alone for cluster-scoped kinds).
    pub fn find(&self, kind_: &str, ns_name: &str) -> Option<&Value> {
        let (ns, n) = split_ns_name(ns_name);
        self.all_docs()
            .find(|d| kind(d) == kind_ && name(d) == n && namespace(d) == ns)
    }

    /// The same, for changing it; returns the file index too (`None` for generated objects).
    pub fn find_mut(&mut self, kind_: &str, ns_name: &str) -> Option<&mut Value> {
        let (ns, n) = split_ns_name(ns_name);
        let matches = |d: &Value| kind(d) == kind_ && name(d) == n && namespace(d) == ns;
        for f in &mut self.files {
            if let Some(d) = f.docs.iter_mut().find(|d| matches(d)) {
                return Some(d);
            }
        }
        self.generated.iter_mut().find(|d| matches(d))
    }

    /// Removes an object; returns whether it existed.
    pub fn remove(&mut self, kind_: &str, ns_name: &str) -> bool {
        let (ns, n) = split_ns_name(ns_name);
        let mut removed = false;
        for f in &mut self.files {
            let before = f.docs.len();
            f.docs
                .retain(|d| !(kind(d) == kind_ && name(d) == n && namespace(d) == ns));
            removed |= f.docs.len() != before;
        }
        removed
    }

    /// The `metadata.generation` the harness gave an object (the apiserver's role), 0 if unknown.
    pub fn generation(&self, kind_: &str, ns_name: &str) -> i64 {
        self.find(kind_, ns_name)
            .and_then(|d| at(d, &["metadata", "generation"]))
            .and_then(Value::as_i64)
            .unwrap_or(0)
    }
}

/// `ns/name` → (`ns`, `name`); a string without `/` is a cluster-scoped name.
pub fn split_ns_name(s: &str) -> (&str, &str) {
    s.split_once('/').unwrap_or(("", s))
}

/// Loopback address of Gateway number `g` of world `w`.
pub fn gateway_ip(world: usize, g: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, (world % 250 + 1) as u8, (g % 200 + 1) as u8)
}

/// Loopback address of replica `r` of Deployment number `d` of world `w`.
pub fn pod_ip(world: usize, d: usize, r: usize) -> Ipv4Addr {
    Ipv4Addr::new(
        127,
        (16 + d % 200) as u8,
        (world % 250 + 1) as u8,
        (r % 250 + 1) as u8,
    )
}

/// The address `PLACEHOLDER_USABLE_ADDRS` becomes in world `w`.
pub fn usable_static_ip(world: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, (world % 250 + 1) as u8, 250)
}

/// Reads a manifest file of the conformance folder into documents.
pub fn load_manifest(root: &Path, rel: &str) -> anyhow::Result<Vec<Value>> {
    let path = root.join(rel);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    yaml::parse_documents(&text).with_context(|| format!("parsing {}", path.display()))
}

/// What the Go applier does to every object (`utils/kubernetes/apply.go` `prepareResources`): every Gateway's
/// `spec.gatewayClassName` becomes the class under test and every GatewayClass's `spec.controllerName` the
/// controller. Placeholders elsewhere (`{GATEWAY_CLASS_NAME}`) are replaced too.
pub fn fill_placeholders(doc: &mut Value, class: &str, controller: &str) {
    match kind(doc) {
        "Gateway" => *at_mut(doc, &["spec", "gatewayClassName"]) = json!(class),
        "GatewayClass" => *at_mut(doc, &["spec", "controllerName"]) = json!(controller),
        _ => {}
    }
    replace_strings(doc, &|s| {
        s.replace("{GATEWAY_CLASS_NAME}", class)
            .replace("{GATEWAY_CONTROLLER_NAME}", controller)
    });
}

fn replace_strings(v: &mut Value, f: &dyn Fn(&str) -> String) {
    match v {
        Value::String(s) if s.contains('{') => *s = f(s),
        Value::Array(a) => a.iter_mut().for_each(|x| replace_strings(x, f)),
        Value::Object(m) => m.values_mut().for_each(|x| replace_strings(x, f)),
        _ => {}
    }
}

/// What the apiserver adds: the `kubernetes.io/metadata.name` label on Namespaces (since Kubernetes 1.22), and
/// `metadata.generation: 1` on every object that has none (so status `observedGeneration` can be checked).
pub fn apiserver_defaults(doc: &mut Value) {
    if kind(doc) == "Namespace" {
        let n = name(doc).to_string();
        *at_mut(doc, &["metadata", "labels", "kubernetes.io/metadata.name"]) = json!(n);
    }
    let generation = at_mut(doc, &["metadata", "generation"]);
    if generation.is_null() {
        *generation = json!(1);
    }
}

/// Gives Gateways their addresses. Gateways without `spec.addresses` get `{type: IPAddress, value: <fresh
/// loopback>}` (when `inject`); `PLACEHOLDER_USABLE_ADDRS` becomes `usable`, `PLACEHOLDER_UNUSABLE_ADDRS` an
/// address this host cannot bind. Returns the address to dial: the first IPv4 `IPAddress` entry, else
/// `bind_address`.
pub fn prepare_gateway_addresses(
    doc: &mut Value,
    own: Ipv4Addr,
    usable: Ipv4Addr,
    bind_address: Ipv4Addr,
    inject: bool,
) -> IpAddr {
    let has_addresses = at(doc, &["spec", "addresses"])
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    if !has_addresses && inject {
        *at_mut(doc, &["spec", "addresses"]) =
            json!([{"type": "IPAddress", "value": own.to_string()}]);
    }
    if let Some(Value::Array(list)) = doc.get_mut("spec").and_then(|s| s.get_mut("addresses")) {
        for entry in list.iter_mut() {
            match str_at(entry, &["value"]) {
                Some("PLACEHOLDER_USABLE_ADDRS") => {
                    *entry = json!({"type": "IPAddress", "value": usable.to_string()})
                }
                Some("PLACEHOLDER_UNUSABLE_ADDRS") => {
                    *entry = json!({"type": "IPAddress", "value": UNUSABLE_ADDRESS})
                }
                _ => {}
            }
        }
    }
    let dial = at(doc, &["spec", "addresses"])
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|e| matches!(str_at(e, &["type"]), None | Some("IPAddress")))
        .filter_map(|e| str_at(e, &["value"]))
        .filter_map(|v| v.parse::<Ipv4Addr>().ok())
        .find(|ip| ip.is_loopback());
    IpAddr::V4(if inject {
        dial.unwrap_or(bind_address)
    } else {
        bind_address
    })
}

/// Whether a label selector (`matchLabels`-style map) selects these labels.
pub fn selector_matches(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Where the pods of a world find the data of their Secret/ConfigMap volumes.
pub struct VolumeSources<'a> {
    /// Generated TLS material.
    pub certs: &'a CertStore,
    /// Secrets and ConfigMaps in the manifests.
    pub objects: Vec<&'a Value>,
}

impl VolumeSources<'_> {
    fn secret_key(&self, ns: &str, secret: &str, key: &str) -> Option<String> {
        if let Some(pem) = self.certs.secret(ns, secret, key) {
            return Some(pem.to_string());
        }
        let obj = self
            .objects
            .iter()
            .find(|d| kind(d) == "Secret" && name(d) == secret && namespace(d) == ns)?;
        if let Some(s) = str_at(obj, &["stringData", key]) {
            return Some(s.to_string());
        }
        let b64 = str_at(obj, &["data", key])?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok()?;
        String::from_utf8(bytes).ok()
    }

    fn config_map_key(&self, ns: &str, cm: &str, key: &str) -> Option<String> {
        if let Some(pem) = self.certs.config_map(ns, cm, key) {
            return Some(pem.to_string());
        }
        self.objects
            .iter()
            .find(|d| kind(d) == "ConfigMap" && name(d) == cm && namespace(d) == ns)
            .and_then(|d| str_at(d, &["data", key]))
            .map(str::to_string)
    }

    /// The content of file `path` in a pod with this spec, from its Secret/ConfigMap volumes.
    pub fn mounted_file(
        &self,
        pod_spec: &Value,
        container: &Value,
        ns: &str,
        path: &str,
    ) -> Option<String> {
        let mounts = container.get("volumeMounts")?.as_array()?;
        let (mount, rest) = mounts.iter().find_map(|m| {
            let mp = str_at(m, &["mountPath"])?.trim_end_matches('/');
            let rest = path.strip_prefix(mp)?.strip_prefix('/')?;
            Some((m, rest))
        })?;
        let vol_name = str_at(mount, &["name"])?;
        let volume = pod_spec
            .get("volumes")?
            .as_array()?
            .iter()
            .find(|v| str_at(v, &["name"]) == Some(vol_name))?;
        let key_for = |items: Option<&Value>| -> String {
            items
                .and_then(Value::as_array)
                .and_then(|items| {
                    items
                        .iter()
                        .find(|i| str_at(i, &["path"]) == Some(rest))
                        .and_then(|i| str_at(i, &["key"]))
                })
                .unwrap_or(rest)
                .to_string()
        };
        if let Some(secret) = volume.get("secret") {
            let key = key_for(secret.get("items"));
            return self.secret_key(ns, str_at(secret, &["secretName"])?, &key);
        }
        if let Some(cm) = volume.get("configMap") {
            let key = key_for(cm.get("items"));
            return self.config_map_key(ns, str_at(cm, &["name"])?, &key);
        }
        None
    }
}

fn env_value<'a>(container: &'a Value, var: &str) -> Option<&'a str> {
    container
        .get("env")?
        .as_array()?
        .iter()
        .find(|e| str_at(e, &["name"]) == Some(var))
        .and_then(|e| str_at(e, &["value"]))
}

/// The pods of a Deployment: `replicas` (default 1) echo servers, each on its own loopback address.
pub fn plan_pods(
    deployment: &Value,
    deployment_index: usize,
    world: usize,
    sources: &VolumeSources<'_>,
) -> Vec<PodPlan> {
    let dep_name = name(deployment).to_string();
    let ns = namespace(deployment).to_string();
    let replicas = at(deployment, &["spec", "replicas"])
        .and_then(Value::as_u64)
        .unwrap_or(1) as usize;
    let pod_spec = at(deployment, &["spec", "template", "spec"])
        .cloned()
        .unwrap_or(Value::Null);
    let labels = string_map(at(deployment, &["spec", "template", "metadata", "labels"]));
    let containers: Vec<Value> = pod_spec
        .get("containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let container_ports: Vec<(Option<String>, u16)> = containers
        .iter()
        .flat_map(|c| {
            c.get("ports")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|p| {
            let port = p.get("containerPort")?.as_u64()?;
            Some((
                str_at(&p, &["name"]).map(str::to_string),
                u16::try_from(port).ok()?,
            ))
        })
        .collect();
    let (backend, note) = match containers.first() {
        None => (None, Some("no containers".to_string())),
        Some(c) => plan_backend(&pod_spec, c, &ns, sources),
    };
    let env_of = |var: &str| {
        containers
            .first()
            .and_then(|c| env_value(c, var))
            .unwrap_or("")
            .to_string()
    };
    let (service_name, ingress_name) = (env_of("SERVICE_NAME"), env_of("INGRESS_NAME"));
    let seed = stable_hash(&format!("{world}/{ns}"));
    (0..replicas)
        .map(|r| PodPlan {
            name: pod_name(&dep_name, seed, r),
            namespace: ns.clone(),
            deployment: dep_name.clone(),
            ip: pod_ip(world, deployment_index, r),
            labels: labels.clone(),
            container_ports: container_ports.clone(),
            service_name: service_name.clone(),
            ingress_name: ingress_name.clone(),
            backend: backend.clone(),
            note: note.clone(),
        })
        .collect()
}

/// A mounted certificate and key (`cert_var`, `key_var` name the file paths in the container's env), or why not.
fn mounted_tls(
    pod_spec: &Value,
    container: &Value,
    ns: &str,
    sources: &VolumeSources<'_>,
    cert_var: &str,
    key_var: &str,
) -> Result<Option<(String, String)>, String> {
    let (Some(cert_path), Some(key_path)) = (
        env_value(container, cert_var),
        env_value(container, key_var),
    ) else {
        return Ok(None);
    };
    let cert = sources.mounted_file(pod_spec, container, ns, cert_path);
    let key = sources.mounted_file(pod_spec, container, ns, key_path);
    match (cert, key) {
        (Some(c), Some(k)) => Ok(Some((c, k))),
        _ => Err(format!(
            "TLS files {cert_path} / {key_path} not found in the pod's volumes: TLS not served"
        )),
    }
}

fn plan_backend(
    pod_spec: &Value,
    container: &Value,
    ns: &str,
    sources: &VolumeSources<'_>,
) -> (Option<BackendPlan>, Option<String>) {
    let image = str_at(container, &["image"]).unwrap_or("");
    let port = |var: &str, default: u16| {
        env_value(container, var)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    if image.contains("coredns") {
        return plan_dns(pod_spec, container, ns, sources);
    }
    if !image.contains("echo-basic") {
        return (
            None,
            Some(format!("not an echo-basic pod (image {image}): not run")),
        );
    }
    // echo-basic's main(): GRPC_ECHO_SERVER, then TCP_ECHO_SERVER, then UDP_ECHO_SERVER (non-empty values).
    let mode_set = |var: &str| env_value(container, var).is_some_and(|v| !v.is_empty());
    if mode_set("GRPC_ECHO_SERVER") || mode_set("TCP_ECHO_SERVER") {
        let grpc = mode_set("GRPC_ECHO_SERVER");
        let (tls, note) = match mounted_tls(
            pod_spec,
            container,
            ns,
            sources,
            "TLS_SERVER_CERT",
            "TLS_SERVER_PRIV_KEY",
        ) {
            Ok(t) => (t, None),
            Err(e) => (None, Some(e)),
        };
        let tls_port = if grpc {
            port("HTTPS_PORT", 8443)
        } else {
            port("TLS_PORT", 8443)
        };
        let tls = tls.map(|(cert_pem, key_pem)| PodTlsPlan {
            port: tls_port,
            cert_pem,
            key_pem,
        });
        let plan = if grpc {
            BackendPlan::Grpc {
                port: port("HTTP_PORT", 3000),
                tls,
            }
        } else {
            BackendPlan::Tcp {
                port: port("TCP_PORT", 3000),
                tls,
            }
        };
        return (Some(plan), note);
    }
    if mode_set("UDP_ECHO_SERVER") {
        return (
            Some(BackendPlan::Udp {
                port: port("UDP_PORT", 8080),
            }),
            None,
        );
    }
    let (https, note) = match mounted_tls(
        pod_spec,
        container,
        ns,
        sources,
        "TLS_SERVER_CERT",
        "TLS_SERVER_PRIVKEY",
    ) {
        Ok(t) => (
            t.map(|(cert_pem, key_pem)| EchoTlsPlan {
                port: port("HTTPS_PORT", 8443),
                cert_pem,
                key_pem,
                client_ca_pem: env_value(container, "TLS_CLIENT_CACERTS")
                    .and_then(|p| sources.mounted_file(pod_spec, container, ns, p)),
            }),
            None,
        ),
        Err(e) => (None, Some(e.replace("TLS not served", "HTTPS not served"))),
    };
    (
        Some(BackendPlan::Http(EchoPlan {
            http_port: port("HTTP_PORT", 3000),
            h2c_port: port("H2C_PORT", 3001),
            https,
        })),
        note,
    )
}

/// The CoreDNS pod: its Corefile (the file named by `-conf`, default `Corefile` in the working directory, read
/// from the pod's volumes) must have at least one `whoami` server block; the harness answers those zones.
fn plan_dns(
    pod_spec: &Value,
    container: &Value,
    ns: &str,
    sources: &VolumeSources<'_>,
) -> (Option<BackendPlan>, Option<String>) {
    let args: Vec<&str> = container
        .get("args")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let conf = args
        .iter()
        .position(|a| *a == "-conf")
        .and_then(|i| args.get(i + 1))
        .copied()
        .unwrap_or("Corefile");
    let Some(corefile) = sources.mounted_file(pod_spec, container, ns, conf) else {
        return (
            None,
            Some(format!(
                "CoreDNS pod: {conf} not found in its volumes: not run"
            )),
        );
    };
    let zones = crate::echo::dns::whoami_zones(&corefile);
    if zones.is_empty() {
        return (
            None,
            Some("CoreDNS pod: its Corefile has no whoami block: not run".to_string()),
        );
    }
    (Some(BackendPlan::Dns { port: 53, zones }), None)
}

/// The EndpointSlice the EndpointSlice controller would make for a Service with a selector: every selected
/// pod (ready), one slice port per Service port (`name` = the Service port's name, `port` = `targetPort`, by
/// number or by container port name; no `targetPort` = `port`). `None` for Services without a selector.
pub fn endpoint_slice_for(service: &Value, pods: &[PodPlan]) -> Option<Value> {
    let svc = name(service);
    let ns = namespace(service);
    let selector = string_map(at(service, &["spec", "selector"]));
    if selector.is_empty() {
        return None;
    }
    let selected: Vec<&PodPlan> = pods
        .iter()
        .filter(|p| p.namespace == ns && selector_matches(&selector, &p.labels))
        .collect();
    let mut ports = Vec::new();
    for sp in at(service, &["spec", "ports"])
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(port) = sp.get("port").and_then(Value::as_u64) else {
            continue;
        };
        let target = match sp.get("targetPort") {
            None | Some(Value::Null) => Some(port),
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.parse::<u64>().ok().or_else(|| {
                selected.first().and_then(|p| {
                    p.container_ports
                        .iter()
                        .find(|(n, _)| n.as_deref() == Some(s.as_str()))
                        .map(|(_, port)| u64::from(*port))
                })
            }),
            Some(_) => None,
        };
        let Some(target) = target else { continue };
        let mut entry = json!({
            "name": str_at(sp, &["name"]).unwrap_or(""),
            "port": target,
            "protocol": str_at(sp, &["protocol"]).unwrap_or("TCP"),
        });
        if let Some(ap) = str_at(sp, &["appProtocol"]) {
            entry["appProtocol"] = json!(ap);
        }
        ports.push(entry);
    }
    let endpoints: Vec<Value> = selected
        .iter()
        .map(|p| {
            json!({
                "addresses": [p.ip.to_string()],
                "conditions": {"ready": true, "serving": true, "terminating": false},
                "targetRef": {"kind": "Pod", "name": p.name, "namespace": p.namespace},
            })
        })
        .collect();
    Some(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{svc}-harness"),
            "namespace": ns,
            "generation": 1,
            "labels": {
                "kubernetes.io/service-name": svc,
                "endpointslice.kubernetes.io/managed-by": "proto-conformance",
            },
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports,
    }))
}

/// README exception (HTTPRouteServiceTypes): EndpointSlices in the manifests without `endpoints` are
/// placeholders that the Go test overwrites with the addresses of the `infra-backend-v1` pods of their
/// namespace (IPv4 slices; IPv6 slices stay empty, the pods being IPv4).
pub fn fill_placeholder_slice(slice: &mut Value, pods: &[PodPlan]) -> bool {
    if kind(slice) != "EndpointSlice" || slice.get("endpoints").is_some() {
        return false;
    }
    let ns = namespace(slice).to_string();
    let endpoints: Vec<Value> = if str_at(slice, &["addressType"]) == Some("IPv4") {
        pods.iter()
            .filter(|p| p.namespace == ns && p.deployment == "infra-backend-v1")
            .map(|p| {
                json!({
                    "addresses": [p.ip.to_string()],
                    "conditions": {"ready": true, "serving": true, "terminating": false},
                    "targetRef": {"kind": "Pod", "name": p.name, "namespace": p.namespace},
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    slice["endpoints"] = json!(endpoints);
    true
}

/// The GatewayClass the suite creates (not in the manifests).
pub fn gateway_class() -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GatewayClass",
        "metadata": {"name": CLASS_NAME, "generation": 1},
        "spec": {"controllerName": CONTROLLER_NAME},
    })
}

fn file_name_for(rel: &str, index: usize) -> String {
    let base = Path::new(rel)
        .file_name()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| format!("manifest-{index}.yaml"));
    format!("{:02}-{base}", index)
}

/// Builds a world from the base manifests and a test's manifests (paths relative to `root`).
pub fn build_world(
    root: &Path,
    manifests: &[String],
    certs: &CertStore,
    opts: &WorldOptions,
) -> anyhow::Result<WorldPlan> {
    let mut files = Vec::new();
    let mut rels = vec!["base/manifests.yaml".to_string()];
    rels.extend(manifests.iter().cloned());
    for (i, rel) in rels.iter().enumerate() {
        files.push(ManifestFile {
            file_name: file_name_for(rel, i),
            docs: load_manifest(root, rel)?,
        });
    }
    for doc in files.iter_mut().flat_map(|f| f.docs.iter_mut()) {
        fill_placeholders(doc, CLASS_NAME, CONTROLLER_NAME);
        apiserver_defaults(doc);
    }

    // Gateways: addresses and ports.
    let usable = usable_static_ip(opts.index);
    let mut gateways = BTreeMap::new();
    let mut g = 0;
    for doc in files.iter_mut().flat_map(|f| f.docs.iter_mut()) {
        if kind(doc) != "Gateway" {
            continue;
        }
        let ip = prepare_gateway_addresses(
            doc,
            gateway_ip(opts.index, g),
            usable,
            opts.bind_address,
            opts.inject_addresses,
        );
        g += 1;
        let ports = listener_ports(doc);
        let udp_ports = udp_listener_ports(doc);
        let skip = str_at(doc, &["metadata", "annotations", SKIP_READINESS]) == Some("true");
        gateways.insert(
            format!("{}/{}", namespace(doc), name(doc)),
            GatewayPlan {
                ip,
                ports,
                udp_ports,
                skip_readiness: skip,
            },
        );
    }
    for doc in files.iter().flat_map(|f| f.docs.iter()) {
        if kind(doc) != "ListenerSet" {
            continue;
        }
        let parent_ns = str_at(doc, &["spec", "parentRef", "namespace"]).unwrap_or(namespace(doc));
        let parent = format!(
            "{parent_ns}/{}",
            str_at(doc, &["spec", "parentRef", "name"]).unwrap_or("")
        );
        let ports = listener_ports(doc);
        let udp_ports = udp_listener_ports(doc);
        if let Some(gw) = gateways.get_mut(&parent) {
            gw.ports.extend(ports);
            gw.udp_ports.extend(udp_ports);
        }
    }

    // Pods and EndpointSlices.
    let mut pods = Vec::new();
    {
        let all: Vec<&Value> = files.iter().flat_map(|f| f.docs.iter()).collect();
        let sources = VolumeSources {
            certs,
            objects: all
                .iter()
                .copied()
                .filter(|d| matches!(kind(d), "Secret" | "ConfigMap"))
                .collect(),
        };
        for (d, dep) in all.iter().filter(|d| kind(d) == "Deployment").enumerate() {
            pods.extend(plan_pods(dep, d, opts.index, &sources));
        }
    }
    let mut generated = vec![gateway_class()];
    generated.extend(certs.objects.iter().cloned());
    for doc in files.iter().flat_map(|f| f.docs.iter()) {
        if kind(doc) == "Service" {
            if let Some(slice) = endpoint_slice_for(doc, &pods) {
                generated.push(slice);
            }
        }
    }
    for doc in files.iter_mut().flat_map(|f| f.docs.iter_mut()) {
        fill_placeholder_slice(doc, &pods);
    }
    generated.iter_mut().for_each(apiserver_defaults);
    Ok(WorldPlan {
        files,
        generated,
        gateways,
        pods,
        usable_address: usable,
    })
}

/// The `spec.listeners[].port` values of a Gateway or ListenerSet.
pub fn listener_ports(doc: &Value) -> BTreeSet<u16> {
    at(doc, &["spec", "listeners"])
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|l| l.get("port").and_then(Value::as_u64))
        .filter_map(|p| u16::try_from(p).ok())
        .collect()
}

/// The ports of the `protocol: UDP` listeners of a Gateway or ListenerSet.
pub fn udp_listener_ports(doc: &Value) -> BTreeSet<u16> {
    at(doc, &["spec", "listeners"])
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|l| str_at(l, &["protocol"]) == Some("UDP"))
        .filter_map(|l| l.get("port").and_then(Value::as_u64))
        .filter_map(|p| u16::try_from(p).ok())
        .collect()
}
