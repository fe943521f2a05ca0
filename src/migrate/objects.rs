//! The Gateway API objects `migrate` writes, as typed serde structs (only the fields it sets). Serialized with
//! serde: no text is ever assembled by hand. Tests read the YAML back with the gateway-api crate's types and our
//! translator.

use serde::Serialize;
use std::collections::BTreeMap;

/// The API version of every object here.
pub const API_VERSION: &str = "gateway.networking.k8s.io/v1";
/// ReferenceGrant's API version (v1beta1 is the version every Gateway API release serves).
pub const GRANT_API_VERSION: &str = "gateway.networking.k8s.io/v1beta1";

/// `metadata`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Meta {
    /// Name.
    pub name: String,
    /// Namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A GatewayClass.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayClass {
    /// `gateway.networking.k8s.io/v1`.
    pub api_version: &'static str,
    /// `GatewayClass`.
    pub kind: &'static str,
    /// Metadata.
    pub metadata: Meta,
    /// Spec.
    pub spec: GatewayClassSpec,
}

/// GatewayClass spec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayClassSpec {
    /// Our controller name.
    pub controller_name: String,
}

/// A Gateway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Gateway {
    /// `gateway.networking.k8s.io/v1`.
    pub api_version: &'static str,
    /// `Gateway`.
    pub kind: &'static str,
    /// Metadata.
    pub metadata: Meta,
    /// Spec.
    pub spec: GatewaySpec,
}

/// Gateway spec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    /// The class.
    pub gateway_class_name: String,
    /// Listeners.
    pub listeners: Vec<GatewayListener>,
}

/// One listener.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayListener {
    /// Section name.
    pub name: String,
    /// Port.
    pub port: u16,
    /// `HTTP` or `HTTPS`.
    pub protocol: &'static str,
    /// Hostname.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// TLS settings (HTTPS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
    /// Routes from every namespace may attach (the Ingresses came from many).
    pub allowed_routes: AllowedRoutes,
}

/// `tls` of a listener.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerTls {
    /// `Terminate`.
    pub mode: &'static str,
    /// Secrets.
    pub certificate_refs: Vec<ObjectRef>,
}

/// A reference to a core object (a Secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// `Secret`.
    pub kind: &'static str,
    /// Name.
    pub name: String,
    /// Namespace, when not the referrer's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// `allowedRoutes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AllowedRoutes {
    /// `from: All`.
    pub namespaces: FromNamespaces,
}

/// `namespaces`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FromNamespaces {
    /// `All`.
    pub from: &'static str,
}

/// An HTTPRoute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoute {
    /// `gateway.networking.k8s.io/v1`.
    pub api_version: &'static str,
    /// `HTTPRoute`.
    pub kind: &'static str,
    /// Metadata.
    pub metadata: Meta,
    /// Spec.
    pub spec: HttpRouteSpec,
}

/// HTTPRoute spec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteSpec {
    /// The Gateway.
    pub parent_refs: Vec<ParentRef>,
    /// Hostnames (none: every host).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// Rules.
    pub rules: Vec<HttpRouteRule>,
}

/// `parentRefs` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentRef {
    /// `Gateway`.
    pub kind: &'static str,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// One rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteRule {
    /// Matches.
    pub matches: Vec<HttpRouteMatch>,
    /// Backends.
    pub backend_refs: Vec<BackendRef>,
    /// Session persistence (from ingress-nginx `affinity: cookie` with `affinity-mode: persistent`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_persistence: Option<SessionPersistence>,
}

/// A rule's cookie session persistence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionPersistence {
    /// The cookie name.
    pub session_name: String,
    /// `Cookie`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// How long a Permanent cookie lives (a Gateway API duration).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub absolute_timeout: Option<String>,
    /// `lifetimeType: Permanent` when the cookie has a Max-Age.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie_config: Option<CookieConfig>,
}

/// A session cookie's lifetime.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CookieConfig {
    /// `Permanent`.
    pub lifetime_type: &'static str,
}

/// One match.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteMatch {
    /// The path condition.
    pub path: PathCondition,
}

/// A path condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PathCondition {
    /// `Exact`, `PathPrefix` or `RegularExpression`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The value.
    pub value: String,
}

/// A Service backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendRef {
    /// Service name (same namespace as the route).
    pub name: String,
    /// Service port number.
    pub port: u16,
    /// Relative weight.
    pub weight: u32,
}

/// A ReferenceGrant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceGrant {
    /// `gateway.networking.k8s.io/v1beta1`.
    pub api_version: &'static str,
    /// `ReferenceGrant`.
    pub kind: &'static str,
    /// Metadata.
    pub metadata: Meta,
    /// Spec.
    pub spec: ReferenceGrantSpec,
}

/// ReferenceGrant spec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceGrantSpec {
    /// Who may refer.
    pub from: Vec<GrantFrom>,
    /// To what.
    pub to: Vec<GrantTo>,
}

/// `from` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GrantFrom {
    /// `gateway.networking.k8s.io`.
    pub group: &'static str,
    /// `Gateway`.
    pub kind: &'static str,
    /// The Gateway's namespace.
    pub namespace: String,
}

/// `to` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GrantTo {
    /// `""` (core).
    pub group: &'static str,
    /// `Secret`.
    pub kind: &'static str,
    /// The Secret.
    pub name: String,
}
