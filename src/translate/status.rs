//! Gateway API status, computed by translation (pure data). The field names and shapes are the Kubernetes ones
//! (camelCase), so the admin API can print them as they are and the Kubernetes status writer can patch them.
//! `lastTransitionTime` is not here: translation has no clock; whoever writes status adds it.

use serde::Serialize;

/// `metav1.Condition` without `lastTransitionTime`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, e.g. `Accepted`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `"True"`, `"False"` or `"Unknown"`.
    pub status: String,
    /// CamelCase reason from the Gateway API spec.
    pub reason: String,
    /// Human-readable detail.
    pub message: String,
    /// `metadata.generation` of the object the condition describes, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl Condition {
    /// A condition with status `True` or `False`.
    pub fn new(
        type_: &str,
        ok: bool,
        reason: &str,
        message: impl Into<String>,
        generation: Option<i64>,
    ) -> Self {
        Condition {
            type_: type_.to_string(),
            status: if ok { "True" } else { "False" }.to_string(),
            reason: reason.to_string(),
            message: message.into(),
            observed_generation: generation,
        }
    }
}

/// A group/kind pair (`supportedKinds`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RouteGroupKind {
    /// API group.
    pub group: String,
    /// Kind.
    pub kind: String,
}

/// `GatewayClass.status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayClassStatus {
    /// Conditions (`Accepted`).
    pub conditions: Vec<Condition>,
    /// Features this implementation supports (GEP-2162), sorted.
    pub supported_features: Vec<SupportedFeature>,
}

/// One entry of `supportedFeatures`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SupportedFeature {
    /// Feature name.
    pub name: String,
}

/// `status.addresses[]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GatewayStatusAddress {
    /// `IPAddress` or `Hostname`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The address.
    pub value: String,
}

/// `status.listeners[]` of a Gateway or ListenerSet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerStatus {
    /// Listener name.
    pub name: String,
    /// Route kinds that may attach.
    pub supported_kinds: Vec<RouteGroupKind>,
    /// How many routes are attached.
    pub attached_routes: i32,
    /// `Accepted`, `Programmed`, `ResolvedRefs`, `Conflicted`.
    pub conditions: Vec<Condition>,
}

/// `Gateway.status` (also used for ListenerSet, without addresses).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStatus {
    /// Where the Gateway is reachable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Vec<GatewayStatusAddress>>,
    /// `Accepted`, `Programmed`.
    pub conditions: Vec<Condition>,
    /// Per listener.
    pub listeners: Vec<ListenerStatus>,
    /// ListenerSets attached to this Gateway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attached_listener_sets: Option<i32>,
}

/// A route's reference to a parent, as it appears in `status.parents[].parentRef`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentRef {
    /// Group (as written in the route, defaulted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name.
    pub name: String,
    /// Namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Section name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    /// Port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

/// One `status.parents[]` entry of a route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteParentStatus {
    /// The parent reference exactly as the route wrote it.
    pub parent_ref: ParentRef,
    /// Our controller name.
    pub controller_name: String,
    /// `Accepted`, `ResolvedRefs`, `PartiallyInvalid`.
    pub conditions: Vec<Condition>,
}

/// `status` of a route.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RouteStatus {
    /// One entry per parentRef that names one of our Gateways or ListenerSets.
    pub parents: Vec<RouteParentStatus>,
}

/// `status.ancestors[]` of a policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyAncestorStatus {
    /// The ancestor (a Gateway).
    pub ancestor_ref: ParentRef,
    /// Our controller name.
    pub controller_name: String,
    /// `Accepted`, `ResolvedRefs`.
    pub conditions: Vec<Condition>,
}

/// `status` of a policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PolicyStatus {
    /// Per ancestor.
    pub ancestors: Vec<PolicyAncestorStatus>,
}

/// An object's status with its name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Named<S> {
    /// Kind (for routes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Namespace (absent for cluster-scoped objects).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// The status.
    pub status: S,
}

/// Every status translation computed, sorted by kind, namespace and name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Statuses {
    /// Our GatewayClasses.
    pub gateway_classes: Vec<Named<GatewayClassStatus>>,
    /// Our Gateways.
    pub gateways: Vec<Named<GatewayStatus>>,
    /// ListenerSets attached (or trying to attach) to our Gateways.
    pub listener_sets: Vec<Named<GatewayStatus>>,
    /// Routes with at least one parentRef to one of our Gateways or ListenerSets.
    pub routes: Vec<Named<RouteStatus>>,
    /// BackendTLSPolicies targeting Services our routes use.
    #[serde(rename = "backendTLSPolicies")]
    pub backend_tls_policies: Vec<Named<PolicyStatus>>,
}

impl Statuses {
    /// Sorts every list (translation pushes in input order, which is already sorted; this keeps it so).
    pub fn sort(&mut self) {
        fn key<S>(n: &Named<S>) -> (Option<String>, Option<String>, String) {
            (n.kind.clone(), n.namespace.clone(), n.name.clone())
        }
        self.gateway_classes.sort_by_key(key);
        self.gateways.sort_by_key(key);
        self.listener_sets.sort_by_key(key);
        self.routes.sort_by_key(key);
        self.backend_tls_policies.sort_by_key(key);
    }
}
