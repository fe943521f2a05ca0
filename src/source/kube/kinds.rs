//! The kinds the Kubernetes source watches, and the API versions each may be served at.

use super::watched::Served;

/// One kind of object the translator reads.
#[derive(Debug)]
pub struct KindSpec {
    /// The kind as `Input` and the translator name it (`ListenerSet` also when it is served as `XListenerSet`).
    pub kind: &'static str,
    /// Namespaced (watched per `--watch-namespace` when given) or cluster-scoped (always watched cluster-wide).
    pub namespaced: bool,
    /// A Gateway API CRD: present only when discovery finds one of `versions` served.
    pub crd: bool,
    /// The API versions, preferred first. Built-in kinds have exactly one.
    pub versions: &'static [Served],
}

const GW: &str = "gateway.networking.k8s.io";
const GWX: &str = "gateway.networking.x-k8s.io";

const fn v(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
) -> Served {
    Served {
        group,
        version,
        kind,
        plural,
    }
}

/// Every kind the source watches except ConfigMaps (those are watched one by one, see `configmaps`), in the
/// order of [`crate::source::Input`].
///
/// Older Gateway API versions are listed after the one our types are generated from: their objects read into the
/// same types (the schemas only grew), and an object that does not is reported and skipped, never fatal.
pub static KINDS: &[KindSpec] = &[
    KindSpec {
        kind: "Namespace",
        namespaced: false,
        crd: false,
        versions: &[v("", "v1", "Namespace", "namespaces")],
    },
    KindSpec {
        kind: "Service",
        namespaced: true,
        crd: false,
        versions: &[v("", "v1", "Service", "services")],
    },
    KindSpec {
        kind: "EndpointSlice",
        namespaced: true,
        crd: false,
        versions: &[v(
            "discovery.k8s.io",
            "v1",
            "EndpointSlice",
            "endpointslices",
        )],
    },
    KindSpec {
        kind: "Secret",
        namespaced: true,
        crd: false,
        versions: &[v("", "v1", "Secret", "secrets")],
    },
    KindSpec {
        kind: "IngressClass",
        namespaced: false,
        crd: false,
        versions: &[v(
            "networking.k8s.io",
            "v1",
            "IngressClass",
            "ingressclasses",
        )],
    },
    KindSpec {
        kind: "Ingress",
        namespaced: true,
        crd: false,
        versions: &[v("networking.k8s.io", "v1", "Ingress", "ingresses")],
    },
    KindSpec {
        kind: "GatewayClass",
        namespaced: false,
        crd: true,
        versions: &[
            v(GW, "v1", "GatewayClass", "gatewayclasses"),
            v(GW, "v1beta1", "GatewayClass", "gatewayclasses"),
        ],
    },
    KindSpec {
        kind: "Gateway",
        namespaced: true,
        crd: true,
        versions: &[
            v(GW, "v1", "Gateway", "gateways"),
            v(GW, "v1beta1", "Gateway", "gateways"),
        ],
    },
    KindSpec {
        kind: "HTTPRoute",
        namespaced: true,
        crd: true,
        versions: &[
            v(GW, "v1", "HTTPRoute", "httproutes"),
            v(GW, "v1beta1", "HTTPRoute", "httproutes"),
        ],
    },
    KindSpec {
        kind: "GRPCRoute",
        namespaced: true,
        crd: true,
        versions: &[
            v(GW, "v1", "GRPCRoute", "grpcroutes"),
            v(GW, "v1alpha2", "GRPCRoute", "grpcroutes"),
        ],
    },
    KindSpec {
        kind: "TLSRoute",
        namespaced: true,
        crd: true,
        versions: &[
            v(GW, "v1", "TLSRoute", "tlsroutes"),
            v(GW, "v1alpha3", "TLSRoute", "tlsroutes"),
            v(GW, "v1alpha2", "TLSRoute", "tlsroutes"),
        ],
    },
    KindSpec {
        kind: "TCPRoute",
        namespaced: true,
        crd: true,
        versions: &[v(GW, "v1alpha2", "TCPRoute", "tcproutes")],
    },
    KindSpec {
        kind: "UDPRoute",
        namespaced: true,
        crd: true,
        versions: &[v(GW, "v1alpha2", "UDPRoute", "udproutes")],
    },
    KindSpec {
        kind: "ReferenceGrant",
        namespaced: true,
        crd: true,
        versions: &[
            v(GW, "v1", "ReferenceGrant", "referencegrants"),
            v(GW, "v1beta1", "ReferenceGrant", "referencegrants"),
        ],
    },
    KindSpec {
        kind: "ListenerSet",
        namespaced: true,
        crd: true,
        versions: &[
            v(GW, "v1", "ListenerSet", "listenersets"),
            v(GWX, "v1alpha1", "XListenerSet", "xlistenersets"),
        ],
    },
    KindSpec {
        kind: "BackendTLSPolicy",
        namespaced: true,
        crd: true,
        versions: &[
            v(GW, "v1", "BackendTLSPolicy", "backendtlspolicies"),
            v(GW, "v1alpha3", "BackendTLSPolicy", "backendtlspolicies"),
        ],
    },
];

/// ConfigMaps: watched one by one, only those referenced as CA bundles.
pub static CONFIG_MAP: Served = v("", "v1", "ConfigMap", "configmaps");
