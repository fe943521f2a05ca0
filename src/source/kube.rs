//! The Kubernetes source: kube-rs watchers and reflector stores produce the same [`Input`] the file source does,
//! so both modes run the same translator.
//!
//! - One watch unit per kind (per namespace with `--watch-namespace`), see [`units`]. Secrets are watched with the
//!   field selector `type=kubernetes.io/tls`; ConfigMaps one by one, only those a Gateway or BackendTLSPolicy
//!   references as a CA bundle.
//! - Gateway API kinds are watched only when API discovery finds their CRDs ([`discovery`], re-checked every
//!   `--discovery-interval`): without them Portcullis runs Ingress-only, and picks them up (or drops them) at run
//!   time.
//! - Level-triggered: any store change wakes one debounced task (quiet 50 ms, at most 1 s after the first change)
//!   that rebuilds the whole `Input` from the stores, translates and publishes. Nothing is published before every
//!   unit finished its initial list, so `/readyz` stays 503 until then. A failing watch retries with backoff; its
//!   store keeps the last complete list, so the last good table keeps serving.
//! - The leader ([`lease`]) writes status ([`status`]).

pub mod discovery;
pub mod kinds;
pub mod lease;
pub mod status;
pub mod units;
pub mod watched;

use crate::control::Control;
use crate::k8s::gw::{
    BackendTLSPolicy, GRPCRoute, Gateway, GatewayClass, HTTPRoute, ListenerSet, ReferenceGrant,
    TCPRoute, TLSRoute, UDPRoute,
};
use crate::k8s::kube::config::{KubeConfigOptions, Kubeconfig};
use crate::k8s::kube::runtime::watcher;
use crate::k8s::kube::{Client, Config};
use crate::k8s::{ConfigMap, EndpointSlice, Ingress, IngressClass, Namespace, Secret, Service};
use crate::source::{Input, LoadProblem, Loaded};
use discovery::Discovered;
use kinds::{KindSpec, CONFIG_MAP, KINDS};
use lease::{LeaseConfig, LeaseTimings};
use status::{Publish, Round, StatusConfig, StatusSource};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use units::{Signal, Spawner, Unit};
use watched::Served;

/// How long the stores must be quiet before a rebuild.
pub const QUIET: Duration = Duration::from_millis(50);
/// The longest a rebuild waits while changes keep coming.
pub const MAX_DELAY: Duration = Duration::from_secs(1);
/// After the first publish, a unit that has not finished its initial list (a CRD installed a moment ago, a newly
/// referenced ConfigMap) holds publishing back for at most this long.
pub const LATE_UNIT_GRACE: Duration = Duration::from_secs(5);

/// Settings of the Kubernetes source (from the command line).
#[derive(Debug, Clone)]
pub struct Settings {
    /// A kubeconfig file; `None`: in-cluster configuration, else `KUBECONFIG` / `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// Our namespace (the leader Lease lives there); `None`: the client's default namespace.
    pub namespace: Option<String>,
    /// Namespaces whose namespaced objects are watched; empty: all.
    pub watch_namespaces: Vec<String>,
    /// Compete for the leader Lease; when false this process always writes status.
    pub leader_elect: bool,
    /// Where published addresses come from.
    pub publish: Publish,
    /// How often API discovery re-checks which Gateway API CRDs are installed.
    pub discovery_interval: Duration,
    /// Leader Lease timings.
    pub lease: LeaseTimings,
    /// Our IngressClass controller.
    pub ingress_controller: String,
    /// Our GatewayClass controller.
    pub gateway_controller: String,
    /// The ingress-nginx ConfigMap (`--ingress-nginx-configmap`), watched by name like the CA bundles.
    pub nginx_config_map: Option<(String, String)>,
}

/// Why the Kubernetes client could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The kubeconfig file named by `--kubeconfig` could not be read.
    #[error("cannot read kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: crate::k8s::kube::config::KubeconfigError,
    },
    /// Neither in-cluster configuration nor a kubeconfig was found.
    #[error("no Kubernetes configuration: not in a cluster ({incluster}) and no kubeconfig ({kubeconfig}); pass --kubeconfig")]
    NotFound {
        /// Why in-cluster configuration failed.
        incluster: String,
        /// Why the default kubeconfig failed.
        kubeconfig: String,
    },
    /// The client could not be built from the configuration.
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[source] crate::k8s::kube::Error),
}

/// Builds the client: `--kubeconfig` if given; else in-cluster configuration (service account token), else
/// `KUBECONFIG` / `~/.kube/config` as kubectl reads them. Plain `http://` servers work.
pub async fn client(kubeconfig: Option<&std::path::Path>) -> Result<Client, ConnectError> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|source| ConnectError::Kubeconfig {
                path: path.to_path_buf(),
                source,
            })?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|source| ConnectError::Kubeconfig {
                    path: path.to_path_buf(),
                    source,
                })?
        }
        None => match Config::incluster() {
            Ok(c) => c,
            Err(incluster) => Config::from_kubeconfig(&KubeConfigOptions::default())
                .await
                .map_err(|e| ConnectError::NotFound {
                    incluster: incluster.to_string(),
                    kubeconfig: e.to_string(),
                })?,
        },
    };
    // kube-rs builds its TLS configuration with the process's default provider, which rustls cannot pick by
    // itself when both ring and aws-lc-rs are built.
    crate::tls::install_provider();
    Client::try_from(config).map_err(ConnectError::Client)
}

/// A process identity for the leader Lease: `POD_NAME` when set (the Downward API), else the host name; with the
/// process id and a random suffix, so two processes never share one.
pub fn identity() -> String {
    let base = std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "portcullis".into());
    format!("{base}_{}_{:08x}", std::process::id(), fastrand::u32(..))
}

/// Unit keys: (kind, namespace, name); the name only for ConfigMaps.
type UnitKey = (&'static str, Option<String>, Option<String>);

/// The running units and what discovery found.
struct Registry {
    spawner: Spawner,
    watch_namespaces: Vec<String>,
    units: BTreeMap<UnitKey, Box<dyn Unit>>,
    /// `None` until the first discovery answered.
    discovered: Option<Discovered>,
    /// Late units already reported, so each is logged once.
    reported_late: BTreeSet<UnitKey>,
    /// ConfigMaps watched whatever the input references (the ingress-nginx ConfigMap).
    extra_config_maps: BTreeSet<(String, String)>,
}

/// Starts the watch of one kind at one served version. The match is the one place that ties kind names to types
/// and `Input` fields.
fn spawn_kind(
    spawner: &Spawner,
    kind: &'static str,
    served: Served,
    namespace: Option<&str>,
) -> Box<dyn Unit> {
    let cfg = watcher::Config::default();
    macro_rules! go {
        ($ty:ty, $field:ident, $cfg:expr) => {{
            fn slot(i: &mut Input) -> &mut Vec<Arc<$ty>> {
                &mut i.$field
            }
            spawner.spawn::<$ty>(kind, served, namespace, $cfg, slot)
        }};
    }
    match kind {
        "Namespace" => go!(Namespace, namespaces, cfg),
        "Service" => go!(Service, services, cfg),
        "EndpointSlice" => go!(EndpointSlice, endpoint_slices, cfg),
        // Only TLS Secrets: certificates are all we read, and the rest of a cluster's Secrets stay out of memory.
        "Secret" => go!(Secret, secrets, cfg.fields("type=kubernetes.io/tls")),
        "IngressClass" => go!(IngressClass, ingress_classes, cfg),
        "Ingress" => go!(Ingress, ingresses, cfg),
        "GatewayClass" => go!(GatewayClass, gateway_classes, cfg),
        "Gateway" => go!(Gateway, gateways, cfg),
        "HTTPRoute" => go!(HTTPRoute, http_routes, cfg),
        "GRPCRoute" => go!(GRPCRoute, grpc_routes, cfg),
        "TLSRoute" => go!(TLSRoute, tls_routes, cfg),
        "TCPRoute" => go!(TCPRoute, tcp_routes, cfg),
        "UDPRoute" => go!(UDPRoute, udp_routes, cfg),
        "ReferenceGrant" => go!(ReferenceGrant, reference_grants, cfg),
        "ListenerSet" => go!(ListenerSet, listener_sets, cfg),
        "BackendTLSPolicy" => go!(BackendTLSPolicy, backend_tls_policies, cfg),
        other => unreachable!("kind {other} is not in source::kube::kinds::KINDS"),
    }
}

fn spawn_config_map(spawner: &Spawner, namespace: &str, name: &str) -> Box<dyn Unit> {
    fn slot(i: &mut Input) -> &mut Vec<Arc<ConfigMap>> {
        &mut i.config_maps
    }
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    spawner.spawn::<ConfigMap>("ConfigMap", CONFIG_MAP, Some(namespace), cfg, slot)
}

impl Registry {
    fn new(spawner: Spawner, watch_namespaces: Vec<String>) -> Self {
        Registry {
            spawner,
            watch_namespaces,
            units: BTreeMap::new(),
            discovered: None,
            reported_late: BTreeSet::new(),
            extra_config_maps: BTreeSet::new(),
        }
    }

    fn start(&mut self, spec: &'static KindSpec, served: Served) {
        if spec.namespaced && !self.watch_namespaces.is_empty() {
            for ns in self.watch_namespaces.clone() {
                let unit = spawn_kind(&self.spawner, spec.kind, served, Some(&ns));
                self.units.insert((spec.kind, Some(ns), None), unit);
            }
        } else {
            let unit = spawn_kind(&self.spawner, spec.kind, served, None);
            self.units.insert((spec.kind, None, None), unit);
        }
    }

    fn stop(&mut self, kind: &str) {
        self.units.retain(|k, _| k.0 != kind);
    }

    /// Starts the built-in kinds (always served).
    fn start_builtin(&mut self) {
        for spec in KINDS.iter().filter(|k| !k.crd) {
            self.start(spec, spec.versions[0]);
        }
    }

    /// Starts, restarts or stops the CRD kinds to match what discovery found.
    fn apply_discovery(&mut self, found: &Discovered) {
        let first = self.discovered.is_none();
        let before = self.discovered.take().unwrap_or_default();
        for spec in KINDS.iter().filter(|k| k.crd) {
            match (before.get(spec.kind), found.get(spec.kind)) {
                (old, Some(new)) if old != Some(new) => {
                    if old.is_some() {
                        self.stop(spec.kind);
                    }
                    tracing::info!(kind = spec.kind, version = %new, "watching");
                    self.start(spec, *new);
                }
                (Some(_), None) => {
                    tracing::warn!(
                        kind = spec.kind,
                        "CRD no longer served; its objects are dropped"
                    );
                    self.stop(spec.kind);
                }
                _ => {}
            }
        }
        if found.is_empty() && (first || !before.is_empty()) {
            tracing::warn!("Gateway API CRDs are not installed: running Ingress-only; they are picked up when installed");
        } else if first {
            let missing: Vec<&str> = KINDS
                .iter()
                .filter(|k| k.crd && !found.contains_key(k.kind))
                .map(|k| k.kind)
                .collect();
            if !missing.is_empty() {
                tracing::info!(kinds = ?missing, "Gateway API kinds not installed; picked up when installed");
            }
        }
        self.discovered = Some(found.clone());
    }

    /// Starts a watch for every ConfigMap that `input` references as a CA bundle (and the ingress-nginx ConfigMap)
    /// and stops the others. Returns
    /// `true` when the set changed.
    fn reconcile_config_maps(&mut self, input: &Input) -> bool {
        let mut wanted = ca_config_map_refs(input);
        wanted.extend(self.extra_config_maps.iter().cloned());
        let current: BTreeSet<(String, String)> = self
            .units
            .keys()
            .filter(|k| k.0 == "ConfigMap")
            .filter_map(|k| Some((k.1.clone()?, k.2.clone()?)))
            .collect();
        if wanted == current {
            return false;
        }
        self.units.retain(|k, _| {
            k.0 != "ConfigMap"
                || wanted.contains(&(
                    k.1.clone().unwrap_or_default(),
                    k.2.clone().unwrap_or_default(),
                ))
        });
        for (ns, name) in wanted.difference(&current) {
            let unit = spawn_config_map(&self.spawner, ns, name);
            self.units
                .insert(("ConfigMap", Some(ns.clone()), Some(name.clone())), unit);
        }
        true
    }

    fn collect(&self) -> (Input, Vec<LoadProblem>) {
        let mut input = Input::default();
        let mut problems = Vec::new();
        for unit in self.units.values() {
            unit.collect(&mut input, &mut problems);
        }
        (input, problems)
    }

    /// `Some(when to look again)` when publishing must wait: before discovery answered; before the first publish
    /// while any unit is still listing; after it, while a unit started less than [`LATE_UNIT_GRACE`] ago is.
    fn hold(&mut self, published: bool) -> Option<Duration> {
        if self.discovered.is_none() {
            return Some(Duration::from_secs(1));
        }
        let mut wait: Option<Duration> = None;
        for (key, unit) in &self.units {
            if unit.synced() {
                continue;
            }
            let age = unit.started().elapsed();
            if !published {
                wait = Some(Duration::from_secs(1));
            } else if age < LATE_UNIT_GRACE {
                let left = LATE_UNIT_GRACE - age;
                wait = Some(wait.map_or(left, |w| w.min(left)));
            } else if self.reported_late.insert(key.clone()) {
                tracing::warn!(unit = %unit.served(), namespace = ?key.1, name = ?key.2,
                    "initial list not complete after {LATE_UNIT_GRACE:?}; publishing without it");
            }
        }
        wait
    }

    fn served(&self) -> BTreeMap<&'static str, Served> {
        self.discovered.clone().unwrap_or_default()
    }
}

/// `(namespace, name)` of every ConfigMap referenced as a CA bundle: `caCertificateRefs` of Gateway
/// `spec.tls` (client-certificate validation, maybe in another namespace) and of BackendTLSPolicies.
pub fn ca_config_map_refs(input: &Input) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    fn walk(v: &serde_json::Value, default_ns: &str, out: &mut BTreeSet<(String, String)>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    if k == "caCertificateRefs" {
                        for r in x.as_array().into_iter().flatten() {
                            let group = r.get("group").and_then(|g| g.as_str()).unwrap_or("");
                            let kind = r.get("kind").and_then(|g| g.as_str()).unwrap_or("");
                            let name = r.get("name").and_then(|g| g.as_str());
                            if group.is_empty() && kind == "ConfigMap" {
                                if let Some(name) = name {
                                    let ns = r
                                        .get("namespace")
                                        .and_then(|n| n.as_str())
                                        .unwrap_or(default_ns);
                                    out.insert((ns.to_string(), name.to_string()));
                                }
                            }
                        }
                    } else {
                        walk(x, default_ns, out);
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, default_ns, out)),
            _ => {}
        }
    }
    for gw in &input.gateways {
        if let Some(tls) = &gw.spec.tls {
            let ns = gw.metadata.namespace.as_deref().unwrap_or("default");
            walk(&serde_json::to_value(tls).unwrap_or_default(), ns, &mut out);
        }
    }
    for p in &input.backend_tls_policies {
        let ns = p.metadata.namespace.as_deref().unwrap_or("default");
        for r in p.spec.validation.ca_certificate_refs.iter().flatten() {
            if r.group.is_empty() && r.kind == "ConfigMap" {
                out.insert((ns.to_string(), r.name.clone()));
            }
        }
    }
    out
}

/// The running Kubernetes source.
pub struct KubeSource {
    client: Client,
    settings: Settings,
    namespace: String,
    rounds: watch::Sender<Option<Arc<Round>>>,
}

impl KubeSource {
    /// Connects (reads the configuration; the API server is first contacted when the source runs, and an
    /// unreachable one is retried with backoff).
    pub async fn connect(settings: Settings) -> Result<Self, ConnectError> {
        let client = client(settings.kubeconfig.as_deref()).await?;
        let namespace = settings
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        Ok(KubeSource {
            client,
            settings,
            namespace,
            rounds: watch::channel(None).0,
        })
    }

    /// The Kubernetes client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Every translation round's input (the latest one; `None` before the first publish), for observers such as
    /// tests.
    pub fn rounds(&self) -> watch::Receiver<Option<Arc<Round>>> {
        self.rounds.subscribe()
    }

    /// Watches, translates and publishes through `control`; writes status (when leader) from `status_source`.
    /// Returns when `stop` becomes true, after releasing the leader Lease.
    pub async fn run(
        self,
        mut control: Control,
        status_source: StatusSource,
        mut stop: watch::Receiver<bool>,
    ) {
        let KubeSource {
            client,
            settings,
            namespace,
            rounds: round_tx,
        } = self;
        let dirty = Arc::new(Signal::default());
        let status_dirty = Arc::new(Signal::default());
        let mut registry = Registry::new(
            Spawner {
                client: client.clone(),
                dirty: dirty.clone(),
                status_dirty: status_dirty.clone(),
            },
            settings.watch_namespaces.clone(),
        );
        registry
            .extra_config_maps
            .extend(settings.nginx_config_map.clone());
        registry.start_builtin();

        let (disc_tx, mut disc_rx) = watch::channel::<Option<Discovered>>(None);
        let discovery_task = tokio::spawn(discovery_loop(
            client.clone(),
            settings.discovery_interval,
            disc_tx,
        ));

        // Without leader election the sender lives as long as the source: this process is always the writer.
        let mut _always_leader: Option<watch::Sender<bool>> = None;
        let (leader_rx, lease_task) = if settings.leader_elect {
            let identity = identity();
            tracing::info!(namespace = %namespace, lease = lease::LEASE_NAME, identity = %identity, "leader election");
            let (rx, task) = lease::spawn(
                client.clone(),
                LeaseConfig {
                    namespace: namespace.clone(),
                    name: lease::LEASE_NAME.to_string(),
                    identity,
                    timings: settings.lease,
                },
                stop.clone(),
            );
            (rx, Some(task))
        } else {
            tracing::info!("leader election disabled: this process writes status");
            let (tx, rx) = watch::channel(true);
            _always_leader = Some(tx);
            (rx, None)
        };

        if let Some(gauge) = control.metrics().and_then(|m| m.leader()).cloned() {
            // portcullis_leader follows the Lease until the election task ends (it sends false on release).
            let mut leader = leader_rx.clone();
            tokio::spawn(async move {
                loop {
                    gauge.set(i64::from(*leader.borrow_and_update()));
                    if leader.changed().await.is_err() {
                        break;
                    }
                }
            });
        }

        let round_rx = round_tx.subscribe();
        let status_task = tokio::spawn(status::run(
            client.clone(),
            StatusConfig {
                gateway_controller: settings.gateway_controller.clone(),
                ingress_controller: settings.ingress_controller.clone(),
                publish: settings.publish.clone(),
            },
            round_rx,
            leader_rx,
            status_source,
            stop.clone(),
        ));

        let mut published = false;
        let mut recheck: Option<Instant> = None;
        let started = Instant::now();
        loop {
            let mut full = false;
            tokio::select! {
                _ = stopped(&mut stop) => break,
                r = disc_rx.changed() => {
                    if r.is_ok() {
                        let found = disc_rx.borrow_and_update().clone();
                        if let Some(found) = found {
                            if registry.discovered.as_ref() != Some(&found) {
                                registry.apply_discovery(&found);
                            }
                        }
                    }
                    full = true;
                }
                _ = dirty.wait() => debounce(&dirty).await,
                _ = status_dirty.wait() => debounce(&status_dirty).await,
                _ = sleep_until_opt(recheck) => full = true,
            }
            full |= dirty.take();
            let status_changed = status_dirty.take();
            if !full {
                // Only statuses changed (mostly our own writes coming back): translation would produce the same
                // model, so only the status writer gets the new objects.
                if status_changed && published {
                    let (mut input, _) = registry.collect();
                    input.normalize();
                    round_tx.send_replace(Some(Arc::new(Round {
                        input: Arc::new(input),
                        served: registry.served(),
                    })));
                }
                continue;
            }
            recheck = None;
            let round_start = Instant::now();
            let (mut input, mut problems) = registry.collect();
            if registry.reconcile_config_maps(&input) {
                (input, problems) = registry.collect();
            }
            if let Some(wait) = registry.hold(published) {
                recheck = Some(Instant::now() + wait);
                continue;
            }
            input.normalize();
            let objects = input.len();
            let loaded = Loaded {
                input,
                locations: HashMap::new(),
                field_lines: HashMap::new(),
                problems,
            };
            let outcome = control.apply(&loaded);
            tracing::debug!(objects, elapsed = ?round_start.elapsed(), ?outcome, "round");
            if !published {
                tracing::info!(objects, elapsed = ?started.elapsed(), ?outcome, "initial sync complete; ready");
            }
            published = true;
            round_tx.send_replace(Some(Arc::new(Round {
                input: Arc::new(loaded.input),
                served: registry.served(),
            })));
        }
        discovery_task.abort();
        drop(registry);
        let _ = status_task.await;
        if let Some(task) = lease_task {
            let _ = tokio::time::timeout(Duration::from_secs(3), task).await;
        }
    }
}

/// Waits until the stores have been quiet for [`QUIET`], or [`MAX_DELAY`] has passed.
async fn debounce(dirty: &Signal) {
    let deadline = Instant::now() + MAX_DELAY;
    loop {
        let quiet = (Instant::now() + QUIET).min(deadline);
        tokio::select! {
            _ = dirty.wait() => {
                if Instant::now() >= deadline {
                    return;
                }
            }
            _ = tokio::time::sleep_until(quiet) => return,
        }
    }
}

/// Resolves once `stop` is true (without holding the channel's lock across an await, so futures stay `Send`).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Runs discovery now and then every `interval`; failures retry sooner, with a growing delay.
async fn discovery_loop(client: Client, interval: Duration, tx: watch::Sender<Option<Discovered>>) {
    let mut failures: u32 = 0;
    loop {
        match discovery::discover(&client).await {
            Ok(found) => {
                if failures > 0 {
                    tracing::info!("API discovery works again");
                }
                failures = 0;
                tx.send_if_modified(|cur| {
                    if cur.as_ref() == Some(&found) {
                        false
                    } else {
                        *cur = Some(found);
                        true
                    }
                });
                tokio::time::sleep(interval).await;
            }
            Err(e) => {
                if failures == 0 || failures.is_power_of_two() {
                    tracing::warn!(error = %e, "API discovery failed; retrying (not ready until it answers)");
                }
                failures = failures.saturating_add(1);
                let delay = Duration::from_millis(250)
                    .saturating_mul(2u32.saturating_pow(failures.min(7)))
                    .min(interval.max(Duration::from_secs(1)));
                tokio::time::sleep(delay).await;
            }
        }
    }
}
