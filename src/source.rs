//! Sources of configuration. Both the file source and the Kubernetes source produce the same [`Input`], so
//! standalone mode, golden tests and the conformance harness all run the production translator.

pub mod file;
pub mod kube;

pub use file::{LoadProblem, Loaded, Location};

use crate::k8s::gw::{
    BackendTLSPolicy, GRPCRoute, Gateway, GatewayClass, HTTPRoute, ListenerSet, ReferenceGrant,
    TCPRoute, TLSRoute, UDPRoute,
};
use crate::k8s::{
    ConfigMap, EndpointSlice, Ingress, IngressClass, Namespace, ObjectMeta, Secret, Service,
};
use serde::Serialize;
use std::fmt;
use std::sync::Arc;

/// Names one Kubernetes object in messages: `Kind namespace/name` (or `Kind name` when cluster-scoped).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ObjectRef {
    /// The object's kind, e.g. `Ingress`.
    pub kind: String,
    /// Its namespace; `None` for cluster-scoped kinds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
}

impl ObjectRef {
    /// A reference to an object of `kind` with this metadata.
    pub fn new(kind: &str, meta: &ObjectMeta) -> Self {
        ObjectRef {
            kind: kind.to_string(),
            namespace: meta.namespace.clone(),
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// Every Kubernetes object the translator reads, as one immutable bundle.
///
/// Invariant after [`Input::normalize`]: every namespaced object has a namespace (the file source fills in
/// `default`, as kubectl does) and every list is sorted by (namespace, name), so translation is deterministic
/// whatever order the source saw the objects in.
#[derive(Clone, Debug, Default)]
pub struct Input {
    /// Namespaces (for labels used by `allowedRoutes` selectors).
    pub namespaces: Vec<Arc<Namespace>>,
    /// Services.
    pub services: Vec<Arc<Service>>,
    /// EndpointSlices (linked to Services by the `kubernetes.io/service-name` label).
    pub endpoint_slices: Vec<Arc<EndpointSlice>>,
    /// Secrets (only `kubernetes.io/tls` ones are ever read).
    pub secrets: Vec<Arc<Secret>>,
    /// ConfigMaps (CA bundles).
    pub config_maps: Vec<Arc<ConfigMap>>,
    /// IngressClasses.
    pub ingress_classes: Vec<Arc<IngressClass>>,
    /// Ingresses.
    pub ingresses: Vec<Arc<Ingress>>,
    /// GatewayClasses.
    pub gateway_classes: Vec<Arc<GatewayClass>>,
    /// Gateways.
    pub gateways: Vec<Arc<Gateway>>,
    /// HTTPRoutes.
    pub http_routes: Vec<Arc<HTTPRoute>>,
    /// GRPCRoutes.
    pub grpc_routes: Vec<Arc<GRPCRoute>>,
    /// TLSRoutes.
    pub tls_routes: Vec<Arc<TLSRoute>>,
    /// TCPRoutes.
    pub tcp_routes: Vec<Arc<TCPRoute>>,
    /// UDPRoutes.
    pub udp_routes: Vec<Arc<UDPRoute>>,
    /// ReferenceGrants.
    pub reference_grants: Vec<Arc<ReferenceGrant>>,
    /// ListenerSets.
    pub listener_sets: Vec<Arc<ListenerSet>>,
    /// BackendTLSPolicies.
    pub backend_tls_policies: Vec<Arc<BackendTLSPolicy>>,
}

/// Access to the metadata of any object in [`Input`].
pub trait HasMeta {
    /// The object's metadata.
    fn meta(&self) -> &ObjectMeta;
    /// Mutable metadata.
    fn meta_mut(&mut self) -> &mut ObjectMeta;
}

macro_rules! has_meta {
    ($($t:ty),* $(,)?) => {$(
        impl HasMeta for $t {
            fn meta(&self) -> &ObjectMeta { &self.metadata }
            fn meta_mut(&mut self) -> &mut ObjectMeta { &mut self.metadata }
        }
    )*};
}

has_meta!(
    Namespace,
    Service,
    EndpointSlice,
    Secret,
    ConfigMap,
    IngressClass,
    Ingress,
    GatewayClass,
    Gateway,
    HTTPRoute,
    GRPCRoute,
    TLSRoute,
    TCPRoute,
    UDPRoute,
    ReferenceGrant,
    ListenerSet,
    BackendTLSPolicy,
);

fn sort_by_key<T: HasMeta>(v: &mut [Arc<T>]) {
    v.sort_by(|a, b| {
        let (a, b) = (a.meta(), b.meta());
        (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name))
    });
}

impl Input {
    /// Sorts every list by (namespace, name). Sources call this before handing the input to translation.
    pub fn normalize(&mut self) {
        sort_by_key(&mut self.namespaces);
        sort_by_key(&mut self.services);
        sort_by_key(&mut self.endpoint_slices);
        sort_by_key(&mut self.secrets);
        sort_by_key(&mut self.config_maps);
        sort_by_key(&mut self.ingress_classes);
        sort_by_key(&mut self.ingresses);
        sort_by_key(&mut self.gateway_classes);
        sort_by_key(&mut self.gateways);
        sort_by_key(&mut self.http_routes);
        sort_by_key(&mut self.grpc_routes);
        sort_by_key(&mut self.tls_routes);
        sort_by_key(&mut self.tcp_routes);
        sort_by_key(&mut self.udp_routes);
        sort_by_key(&mut self.reference_grants);
        sort_by_key(&mut self.listener_sets);
        sort_by_key(&mut self.backend_tls_policies);
    }

    /// Total number of objects.
    pub fn len(&self) -> usize {
        self.namespaces.len()
            + self.services.len()
            + self.endpoint_slices.len()
            + self.secrets.len()
            + self.config_maps.len()
            + self.ingress_classes.len()
            + self.ingresses.len()
            + self.gateway_classes.len()
            + self.gateways.len()
            + self.http_routes.len()
            + self.grpc_routes.len()
            + self.tls_routes.len()
            + self.tcp_routes.len()
            + self.udp_routes.len()
            + self.reference_grants.len()
            + self.listener_sets.len()
            + self.backend_tls_policies.len()
    }

    /// `true` when there are no objects at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
