//! The one place that names the Kubernetes crates. Everything else imports Kubernetes and Gateway API types from
//! here, so a version bump of `kube` / `k8s-openapi` / `gateway-api` (which must move together: gateway-api 0.22 is
//! built on exactly kube 4.2 and k8s-openapi 0.28) touches one file.
//!
//! Gateway API types come from the experimental channel where it has them: it is a superset of the standard
//! channel (it adds HTTPRoute retries, TCPRoute, UDPRoute, ...), so one set of types reads manifests of either
//! channel. BackendTLSPolicy exists only in the standard module of the crate.

pub use k8s_openapi;
pub use kube;

pub use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServicePort};
pub use k8s_openapi::api::discovery::v1::EndpointSlice;
pub use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
// Kubernetes mode (source::kube): the leader Lease and its timestamps.
pub use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

/// Gateway API resources (experimental channel types, see the module docs).
pub mod gw {
    pub use gateway_api::apis::experimental::gatewayclasses::GatewayClass;
    pub use gateway_api::apis::experimental::gateways::{Gateway, GatewayListeners};
    pub use gateway_api::apis::experimental::grpcroutes::GrpcRoute as GRPCRoute;
    pub use gateway_api::apis::experimental::httproutes::HttpRoute as HTTPRoute;
    pub use gateway_api::apis::experimental::listenersets::ListenerSet;
    pub use gateway_api::apis::experimental::referencegrants::ReferenceGrant;
    pub use gateway_api::apis::experimental::tcproutes::TcpRoute as TCPRoute;
    pub use gateway_api::apis::experimental::tlsroutes::TlsRoute as TLSRoute;
    pub use gateway_api::apis::experimental::udproutes::UdpRoute as UDPRoute;
    pub use gateway_api::apis::standard::backendtlspolicies::BackendTlsPolicy as BackendTLSPolicy;

    /// The generated per-field types, for code that needs to name them.
    pub mod types {
        pub use gateway_api::apis::experimental::gatewayclasses::*;
        pub use gateway_api::apis::experimental::gateways::*;
        pub use gateway_api::apis::experimental::grpcroutes::*;
        pub use gateway_api::apis::experimental::httproutes::*;
        pub use gateway_api::apis::experimental::listenersets::*;
        pub use gateway_api::apis::experimental::referencegrants::*;
        pub use gateway_api::apis::experimental::tlsroutes::*;
        // Status types the Kubernetes status writer normalizes through (source::kube::status).
        pub use gateway_api::apis::standard::backendtlspolicies::BackendTlsPolicyStatusAncestors;
    }
}

/// The API group of Gateway API resources.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
