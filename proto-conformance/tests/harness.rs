//! Tests of the conformance harness pieces that need no proxy: world preparation (placeholders, addresses,
//! pods, EndpointSlices, certificates), the upstream comparison rules, redirect defaults, weight statistics,
//! status expectations and the expected-results file.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use proto_conformance::harness::certs::CertStore;
use proto_conformance::harness::client::Captured;
use proto_conformance::harness::compare::{
    backend_of_pod, check_location, check_response, check_weights, mirror_count_bounds,
    resolve_location, Expectation, Location, ResolvedRequest, SentRequest,
};
use proto_conformance::harness::data::{ExpectedRedirect, Suite};
use proto_conformance::harness::report::{self, Expected};
use proto_conformance::harness::runner::{
    calculate_host, CaseResult, Outcome, RunResults, StatusResult,
};
use proto_conformance::harness::runtime_objects;
use proto_conformance::harness::status::{self, Assertion, StatusView};
use proto_conformance::harness::tlsverify::go_match_hostname;
use proto_conformance::harness::util::{canonical_header_key, pod_name, uuid_v4, Rng};
use proto_conformance::harness::world::{
    self, apiserver_defaults, endpoint_slice_for, fill_placeholder_slice, fill_placeholders,
    plan_pods, prepare_gateway_addresses, BackendPlan, VolumeSources, WorldOptions, CLASS_NAME,
    CONTROLLER_NAME,
};
use proto_conformance::harness::yaml;
use serde_json::{json, Value};

/// The conformance folder; the tests that read it fail with this message, not a bare file error, when it is
/// missing (they cannot pass without it).
fn data_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/gateway-api");
    assert!(
        root.join("cases.jsonl").is_file(),
        "the Gateway API conformance data is missing: {} has no cases.jsonl; put the shared conformance folder \
         next to the workspace (see docs/conformance.md)",
        root.display()
    );
    root
}

// ---------------------------------------------------------------------------------------------------------
// Placeholders, apiserver defaults, addresses
// ---------------------------------------------------------------------------------------------------------

#[test]
fn placeholders_are_filled_like_the_go_applier() {
    let mut gw = json!({"kind": "Gateway", "metadata": {"name": "g", "namespace": "ns"},
        "spec": {"gatewayClassName": "{GATEWAY_CLASS_NAME}", "listeners": []}});
    fill_placeholders(&mut gw, CLASS_NAME, CONTROLLER_NAME);
    assert_eq!(gw["spec"]["gatewayClassName"], "portcullis");

    // The applier sets the class of every Gateway, whatever it said.
    let mut other = json!({"kind": "Gateway", "spec": {"gatewayClassName": "something-else"}});
    fill_placeholders(&mut other, CLASS_NAME, CONTROLLER_NAME);
    assert_eq!(other["spec"]["gatewayClassName"], "portcullis");

    let mut gwc = json!({"kind": "GatewayClass", "metadata": {"name": "c"},
        "spec": {"controllerName": "{GATEWAY_CONTROLLER_NAME}", "description": "old"}});
    fill_placeholders(&mut gwc, CLASS_NAME, CONTROLLER_NAME);
    assert_eq!(
        gwc["spec"]["controllerName"],
        "portcullis.dev/gateway-controller"
    );
    assert_eq!(gwc["spec"]["description"], "old");

    let mut nested = json!({"kind": "ConfigMap", "data": {"x": "class={GATEWAY_CLASS_NAME}"}});
    fill_placeholders(&mut nested, CLASS_NAME, CONTROLLER_NAME);
    assert_eq!(nested["data"]["x"], "class=portcullis");
}

#[test]
fn apiserver_defaults_label_namespaces_and_set_generation() {
    let mut ns = json!({"kind": "Namespace", "metadata": {"name": "gateway-conformance-infra",
        "labels": {"gateway-conformance": "infra"}}});
    apiserver_defaults(&mut ns);
    assert_eq!(
        ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
        "gateway-conformance-infra"
    );
    assert_eq!(ns["metadata"]["labels"]["gateway-conformance"], "infra");
    assert_eq!(ns["metadata"]["generation"], 1);

    let mut route = json!({"kind": "HTTPRoute", "metadata": {"name": "r", "generation": 4}});
    apiserver_defaults(&mut route);
    assert_eq!(route["metadata"]["generation"], 4);
}

#[test]
fn gateways_get_their_own_loopback_address() {
    let own = Ipv4Addr::new(127, 0, 3, 2);
    let usable = Ipv4Addr::new(127, 0, 3, 250);
    let bind = Ipv4Addr::LOCALHOST;

    let mut gw = json!({"kind": "Gateway", "spec": {"listeners": [{"name": "http", "port": 80}]}});
    let dial = prepare_gateway_addresses(&mut gw, own, usable, bind, true);
    assert_eq!(dial, IpAddr::V4(own));
    assert_eq!(
        gw["spec"]["addresses"],
        json!([{"type": "IPAddress", "value": "127.0.3.2"}])
    );

    // Not injected: nothing changes and the Gateway is dialled on --bind-address.
    let mut gw = json!({"kind": "Gateway", "spec": {"listeners": []}});
    assert_eq!(
        prepare_gateway_addresses(&mut gw, own, usable, bind, false),
        IpAddr::V4(bind)
    );
    assert!(gw["spec"].get("addresses").is_none());

    // GatewayStaticAddresses: placeholders substituted, the other entries kept.
    let mut gw = json!({"kind": "Gateway", "spec": {"addresses": [
        {"type": "test/fake-invalid-type", "value": "fake address teehee!"},
        {"value": "PLACEHOLDER_UNUSABLE_ADDRS"},
        {"value": "PLACEHOLDER_USABLE_ADDRS"}]}});
    let dial = prepare_gateway_addresses(&mut gw, own, usable, bind, true);
    assert_eq!(dial, IpAddr::V4(usable));
    assert_eq!(
        gw["spec"]["addresses"],
        json!([
            {"type": "test/fake-invalid-type", "value": "fake address teehee!"},
            {"type": "IPAddress", "value": world::UNUSABLE_ADDRESS},
            {"type": "IPAddress", "value": "127.0.3.250"}
        ])
    );

    // An address without a value is left for the implementation to fill; the Gateway binds --bind-address.
    let mut gw = json!({"kind": "Gateway", "spec": {"addresses": [{"type": "IPAddress"}]}});
    assert_eq!(
        prepare_gateway_addresses(&mut gw, own, usable, bind, true),
        IpAddr::V4(bind)
    );
    assert_eq!(gw["spec"]["addresses"], json!([{"type": "IPAddress"}]));
}

#[test]
fn calculate_host_drops_default_ports() {
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1));
    assert_eq!(calculate_host(ip, Some(80), "http"), "127.0.1.1");
    assert_eq!(calculate_host(ip, Some(443), "https"), "127.0.1.1");
    assert_eq!(calculate_host(ip, Some(8080), "http"), "127.0.1.1:8080");
    assert_eq!(calculate_host(ip, Some(443), "http"), "127.0.1.1:443");
    assert_eq!(calculate_host(ip, None, "http"), "127.0.1.1");
}

// ---------------------------------------------------------------------------------------------------------
// Pods and EndpointSlices
// ---------------------------------------------------------------------------------------------------------

#[test]
fn pod_names_look_like_deployment_pods() {
    let a = pod_name("infra-backend-v1", 7, 0);
    let b = pod_name("infra-backend-v1", 7, 1);
    for name in [&a, &b] {
        let rest = name
            .strip_prefix("infra-backend-v1-")
            .expect("deployment prefix");
        let (hash, suffix) = rest.split_once('-').expect("two parts");
        assert_eq!(hash.len(), 10, "{name}");
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit()), "{name}");
        assert_eq!(suffix.len(), 5, "{name}");
        assert!(suffix.chars().all(|c| c.is_ascii_alphanumeric()), "{name}");
        assert_eq!(backend_of_pod(name), "infra-backend-v1");
    }
    // Replicas share the template hash and differ in the suffix; names are deterministic.
    assert_eq!(a[..a.len() - 5], b[..b.len() - 5]);
    assert_ne!(a, b);
    assert_eq!(a, pod_name("infra-backend-v1", 7, 0));
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "ns1"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web", "tier": "front"}},
                "spec": {"containers": [{"name": "web",
                    "image": "registry.k8s.io/gateway-api/conformance/echo-basic:v0.1.0",
                    "ports": [{"name": "http", "containerPort": 3000}]}]}}}
    })
}

#[test]
fn endpoint_slices_select_the_deployment_pods() {
    let certs = CertStore::default();
    let sources = VolumeSources {
        certs: &certs,
        objects: Vec::new(),
    };
    let pods = plan_pods(&deployment(), 3, 5, &sources);
    assert_eq!(pods.len(), 2);
    assert_eq!(pods[0].ip, Ipv4Addr::new(127, 19, 6, 1));
    assert_eq!(pods[1].ip, Ipv4Addr::new(127, 19, 6, 2));
    let echo = pods[0].http_echo().expect("an echo pod");
    assert_eq!((echo.http_port, echo.h2c_port), (3000, 3001));
    assert!(echo.https.is_none());

    let service = json!({"kind": "Service", "metadata": {"name": "web-svc", "namespace": "ns1"},
        "spec": {"selector": {"app": "web"}, "ports": [
            {"name": "first", "port": 8080, "targetPort": 3000, "protocol": "TCP"},
            {"name": "by-name", "port": 8081, "targetPort": "http", "appProtocol": "kubernetes.io/h2c"},
            {"port": 9000}]}});
    let slice = endpoint_slice_for(&service, &pods).expect("a slice");
    assert_eq!(
        slice["metadata"]["labels"]["kubernetes.io/service-name"],
        "web-svc"
    );
    assert_eq!(slice["metadata"]["namespace"], "ns1");
    assert_eq!(slice["addressType"], "IPv4");
    let addrs: Vec<&str> = slice["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["addresses"][0].as_str().unwrap())
        .collect();
    assert_eq!(addrs, ["127.19.6.1", "127.19.6.2"]);
    assert!(slice["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["conditions"]["ready"] == true));
    assert_eq!(
        slice["ports"],
        json!([
        {"name": "first", "port": 3000, "protocol": "TCP"},
        {"name": "by-name", "port": 3000, "protocol": "TCP", "appProtocol": "kubernetes.io/h2c"},
        {"name": "", "port": 9000, "protocol": "TCP"}])
    );

    // Another namespace, or a selector that does not match: no endpoints.
    let other_ns = json!({"kind": "Service", "metadata": {"name": "s", "namespace": "ns2"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}});
    assert_eq!(
        endpoint_slice_for(&other_ns, &pods).unwrap()["endpoints"],
        json!([])
    );
    let no_match = json!({"kind": "Service", "metadata": {"name": "s", "namespace": "ns1"},
        "spec": {"selector": {"app": "web", "tier": "back"}, "ports": [{"port": 80}]}});
    assert_eq!(
        endpoint_slice_for(&no_match, &pods).unwrap()["endpoints"],
        json!([])
    );
    // No selector: the controller makes no slice.
    let manual = json!({"kind": "Service", "metadata": {"name": "m", "namespace": "ns1"},
        "spec": {"ports": [{"port": 80}]}});
    assert!(endpoint_slice_for(&manual, &pods).is_none());
}

#[test]
fn echo_basic_modes_are_chosen_like_upstream() {
    let certs = CertStore::default();
    let plan_with_env = |env: Value, image: &str| {
        let mut dep = deployment();
        dep["spec"]["template"]["spec"]["containers"][0]["env"] = env;
        dep["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image);
        plan_pods(
            &dep,
            0,
            0,
            &VolumeSources {
                certs: &certs,
                objects: Vec::new(),
            },
        )
    };
    let echo = "registry.k8s.io/gateway-api/conformance/echo-basic:v0.1.0";
    // GRPC_ECHO_SERVER wins over TCP_ECHO_SERVER (echo-basic's main checks it first); HTTP_PORT applies.
    let pods = plan_with_env(
        json!([{"name": "TCP_ECHO_SERVER", "value": "1"}, {"name": "GRPC_ECHO_SERVER", "value": "1"},
               {"name": "HTTP_PORT", "value": "4000"}, {"name": "SERVICE_NAME", "value": "svc"}]),
        echo,
    );
    assert_eq!(pods.len(), 2);
    assert!(pods.iter().all(|p| matches!(
        p.backend,
        Some(BackendPlan::Grpc {
            port: 4000,
            tls: None
        })
    )));
    assert_eq!(pods[0].service_name, "svc");
    let pods = plan_with_env(
        json!([{"name": "TCP_ECHO_SERVER", "value": "1"}, {"name": "TCP_PORT", "value": "3100"}]),
        echo,
    );
    assert!(matches!(
        pods[0].backend,
        Some(BackendPlan::Tcp {
            port: 3100,
            tls: None
        })
    ));
    let pods = plan_with_env(json!([{"name": "UDP_ECHO_SERVER", "value": "1"}]), echo);
    assert!(matches!(
        pods[0].backend,
        Some(BackendPlan::Udp { port: 8080 })
    ));
    // TLS variables that name files the pod does not mount: no TLS, and a note saying so.
    let pods = plan_with_env(
        json!([{"name": "TCP_ECHO_SERVER", "value": "1"},
               {"name": "TLS_SERVER_CERT", "value": "/etc/x/crt"},
               {"name": "TLS_SERVER_PRIV_KEY", "value": "/etc/x/key"}]),
        echo,
    );
    assert!(matches!(
        pods[0].backend,
        Some(BackendPlan::Tcp { tls: None, .. })
    ));
    assert!(pods[0].note.as_deref().unwrap_or("").contains("not found"));
    // Other images are not run.
    let pods = plan_with_env(json!([]), "nginx:1");
    assert!(pods.iter().all(|p| p.backend.is_none() && p.note.is_some()));
}

#[test]
fn tls_backends_get_the_mounted_certificates() {
    let certs = CertStore::generate().expect("certificates");
    let base = world::load_manifest(&data_root(), "base/manifests.yaml").expect("base manifests");
    let tls_backend = base
        .iter()
        .find(|d| {
            yaml::kind(d) == "Deployment"
                && yaml::name(d) == "tls-backend"
                && yaml::namespace(d) == "gateway-conformance-infra"
        })
        .expect("tls-backend");
    let pods = plan_pods(
        tls_backend,
        0,
        0,
        &VolumeSources {
            certs: &certs,
            objects: Vec::new(),
        },
    );
    let https = pods[0]
        .http_echo()
        .and_then(|e| e.https.as_ref())
        .expect("HTTPS");
    assert_eq!(https.port, 8443);
    assert_eq!(
        Some(https.cert_pem.as_str()),
        certs.secret(
            "gateway-conformance-infra",
            "tls-checks-certificate",
            "tls.crt"
        )
    );
    assert!(https.client_ca_pem.is_none());
}

#[test]
fn placeholder_endpoint_slices_get_the_infra_backend_v1_pods() {
    let mut dep = deployment();
    dep["metadata"]["name"] = json!("infra-backend-v1");
    dep["metadata"]["namespace"] = json!("gateway-conformance-infra");
    let certs = CertStore::default();
    let pods = plan_pods(
        &dep,
        0,
        0,
        &VolumeSources {
            certs: &certs,
            objects: Vec::new(),
        },
    );
    let mut v4 = json!({"kind": "EndpointSlice", "metadata": {"name": "m-ip4",
        "namespace": "gateway-conformance-infra"}, "addressType": "IPv4",
        "ports": [{"name": "first-port", "port": 3000}]});
    let mut v6 = json!({"kind": "EndpointSlice", "metadata": {"name": "m-ip6",
        "namespace": "gateway-conformance-infra"}, "addressType": "IPv6", "ports": []});
    assert!(fill_placeholder_slice(&mut v4, &pods));
    assert!(fill_placeholder_slice(&mut v6, &pods));
    assert_eq!(v4["endpoints"].as_array().unwrap().len(), 2);
    assert_eq!(v6["endpoints"], json!([]));
    // A slice with endpoints is left alone.
    assert!(!fill_placeholder_slice(&mut v4, &[]));
}

#[test]
fn the_base_world_is_complete() {
    let certs = CertStore::generate().expect("certificates");
    let opts = WorldOptions {
        index: 4,
        inject_addresses: true,
        bind_address: Ipv4Addr::LOCALHOST,
    };
    let plan = world::build_world(
        &data_root(),
        &["tests/httproute-simple-same-namespace.yaml".into()],
        &certs,
        &opts,
    )
    .expect("world");
    assert_eq!(plan.gateways.len(), 4);
    let ips: std::collections::BTreeSet<IpAddr> = plan.gateways.values().map(|g| g.ip).collect();
    assert_eq!(ips.len(), 4, "every Gateway has its own address");
    assert!(ips
        .iter()
        .all(|ip| ip.is_loopback() && *ip != IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let https = &plan.gateways["gateway-conformance-infra/same-namespace-with-https-listener"];
    assert_eq!(https.ports.iter().copied().collect::<Vec<_>>(), [443]);
    // The class, the generated TLS material and one slice per Service with a selector.
    assert!(plan
        .generated
        .iter()
        .any(|d| yaml::kind(d) == "GatewayClass" && yaml::name(d) == "portcullis"));
    assert!(plan
        .generated
        .iter()
        .any(|d| yaml::kind(d) == "Secret" && yaml::name(d) == "tls-validity-checks-certificate"));
    let slice = plan
        .generated
        .iter()
        .find(|d| {
            yaml::kind(d) == "EndpointSlice"
                && d["metadata"]["labels"]["kubernetes.io/service-name"] == "infra-backend-v1"
        })
        .expect("infra-backend-v1 slice");
    assert_eq!(slice["endpoints"].as_array().unwrap().len(), 2);
    let names: Vec<&str> = slice["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["first-port", "second-port", "third-port"]);
    // Every Gateway uses the class, every object has a generation; the YAML round-trips.
    for doc in plan.all_docs() {
        assert!(doc["metadata"]["generation"].is_i64(), "{doc}");
        if yaml::kind(doc) == "Gateway" {
            assert_eq!(doc["spec"]["gatewayClassName"], "portcullis");
        }
    }
    let text = yaml::to_yaml(&plan.files[0].docs).expect("yaml");
    assert_eq!(
        yaml::parse_documents(&text).expect("parse"),
        plan.files[0].docs
    );
    // Pods: every one runs; gRPC v1 and tcp-backend with their mounted certificates, coredns as the whoami
    // stand-in for the zone of its Corefile.
    let pod = |dep: &str| {
        plan.pods
            .iter()
            .find(|p| p.deployment == dep)
            .unwrap_or_else(|| panic!("a pod of {dep}"))
    };
    match &pod("grpc-infra-backend-v1").backend {
        Some(BackendPlan::Grpc {
            port: 3000,
            tls: Some(t),
        }) => {
            assert_eq!(t.port, 8443);
            assert_eq!(
                Some(t.cert_pem.as_str()),
                certs.secret(
                    "gateway-conformance-infra",
                    "tls-checks-certificate",
                    "tls.crt"
                )
            );
        }
        other => panic!("grpc-infra-backend-v1: {other:?}"),
    }
    assert!(matches!(
        pod("grpc-infra-backend-v2").backend,
        Some(BackendPlan::Grpc { tls: None, .. })
    ));
    match &pod("tcp-backend").backend {
        Some(BackendPlan::Tcp {
            port: 3000,
            tls: Some(t),
        }) => assert_eq!(
            Some(t.cert_pem.as_str()),
            certs.secret(
                "gateway-conformance-infra",
                "tls-passthrough-checks-certificate",
                "tls.crt"
            )
        ),
        other => panic!("tcp-backend: {other:?}"),
    }
    match &pod("coredns").backend {
        Some(BackendPlan::Dns { port: 53, zones }) => assert_eq!(zones, &["foo.bar.com"]),
        other => panic!("coredns: {other:?}"),
    }
    assert!(pod("web-backend").http_echo().is_some());
    assert!(
        plan.pods.iter().all(|p| p.backend.is_some()),
        "every base pod runs"
    );
}

// ---------------------------------------------------------------------------------------------------------
// Comparison rules
// ---------------------------------------------------------------------------------------------------------

fn echo_response(
    status: u16,
    pod: &str,
    ns: &str,
    path: &str,
    method: &str,
    headers: Value,
) -> Captured {
    let body = json!({"path": path, "host": "example.com", "method": method, "proto": "HTTP/1.1",
        "headers": headers, "httpPort": "3000", "namespace": ns, "ingress": "", "service": "",
        "pod": pod});
    Captured {
        status,
        version: "HTTP/1.1".into(),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-resp".into(), "a".into()),
            ("x-resp".into(), "b".into()),
        ],
        body: serde_json::to_vec(&body).unwrap(),
        client_cert_requested: false,
    }
}

fn plain(status: u16, headers: Vec<(&str, &str)>) -> Captured {
    Captured {
        status,
        version: "HTTP/1.1".into(),
        headers: headers
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: b"fault filter abort".to_vec(),
        client_cert_requested: false,
    }
}

fn expectation(path: &str) -> Expectation {
    Expectation {
        statuses: vec![200],
        expected: ResolvedRequest {
            method: "GET".into(),
            path_and_query: path.into(),
            ..Default::default()
        },
        backend: "infra-backend-v1".into(),
        namespace: "gateway-conformance-infra".into(),
        ..Default::default()
    }
}

fn sent(path: &str) -> SentRequest {
    SentRequest {
        scheme: "http".into(),
        url_host: "127.0.1.1".into(),
        path: path.into(),
    }
}

#[test]
fn echo_checks_pass_and_fail_like_the_suite() {
    let res = echo_response(
        200,
        "infra-backend-v1-abcdef0123-xyz12",
        "gateway-conformance-infra",
        "/v2?a=b",
        "GET",
        json!({"X-Header-Set": ["v"], "X-Multi": ["1", "2"]}),
    );
    let mut exp = expectation("/v2?a=b");
    assert_eq!(check_response(&exp, &sent("/v2"), &res), Ok(()));

    exp.expected.headers = vec![
        ("x-header-set".into(), "v".into()),
        ("X-Multi".into(), "1,2".into()),
    ];
    exp.response_headers = vec![("X-Resp".into(), "a,b".into())];
    assert_eq!(check_response(&exp, &sent("/v2"), &res), Ok(()));

    let mut wrong = exp.clone();
    wrong.expected.headers = vec![("X-Header-Set".into(), "other".into())];
    assert!(check_response(&wrong, &sent("/v2"), &res)
        .unwrap_err()
        .contains("X-Header-Set"));

    let mut absent = exp.clone();
    absent.expected.absent_headers = vec!["x-multi".into()];
    assert!(check_response(&absent, &sent("/v2"), &res)
        .unwrap_err()
        .contains("not be set"));

    let mut pod = exp.clone();
    pod.backend = "infra-backend-v2".into();
    assert!(check_response(&pod, &sent("/v2"), &res)
        .unwrap_err()
        .contains("pod name"));

    let mut path = exp.clone();
    path.expected.path_and_query = "/v2".into();
    assert!(check_response(&path, &sent("/v2"), &res)
        .unwrap_err()
        .contains("path"));

    let mut method = exp.clone();
    method.expected.method = "POST".into();
    assert!(check_response(&method, &sent("/v2"), &res)
        .unwrap_err()
        .contains("method"));

    let mut host = exp.clone();
    host.expected.host = Some("other.com".into());
    assert!(check_response(&host, &sent("/v2"), &res)
        .unwrap_err()
        .contains("host"));

    let mut status = exp.clone();
    status.statuses = vec![404];
    assert!(check_response(&status, &sent("/v2"), &res)
        .unwrap_err()
        .contains("status"));
}

#[test]
fn non_json_bodies_have_empty_echo_fields() {
    // A 200 that is not an echo body fails a case that expects a backend...
    let res = plain(200, vec![("content-type", "text/plain")]);
    assert!(check_response(&expectation("/"), &sent("/"), &res)
        .unwrap_err()
        .contains("path"));
    // ...and passes a case that expects the gateway to answer (CORS preflight: empty path and namespace).
    let mut exp = Expectation {
        statuses: vec![200, 204],
        expected: ResolvedRequest {
            method: "OPTIONS".into(),
            ..Default::default()
        },
        valid_header_values: vec![(
            "access-control-allow-methods".into(),
            vec!["GET, OPTIONS".into(), "OPTIONS, GET".into()],
        )],
        response_absent: vec!["Access-Control-Allow-Credentials".into()],
        ignore_whitespace: true,
        ..Default::default()
    };
    let preflight = plain(204, vec![("access-control-allow-methods", "OPTIONS,GET")]);
    assert_eq!(check_response(&exp, &sent("/cors"), &preflight), Ok(()));
    exp.ignore_whitespace = false;
    assert!(check_response(&exp, &sent("/cors"), &preflight).is_err());
    // A content type with parameters is not "exactly application/json": no echo parsing.
    let mut res = echo_response(200, "p-1-2", "ns", "/", "GET", json!({}));
    res.headers[0].1 = "application/json; charset=utf-8".into();
    let mut e = expectation("");
    e.backend = String::new();
    e.namespace = String::new();
    assert_eq!(check_response(&e, &sent("/"), &res), Ok(()));
}

#[test]
fn timeout_statuses_pass_when_any_timeout_is_allowed() {
    let mut exp = expectation("/");
    exp.statuses = vec![504];
    assert_eq!(
        check_response(&exp, &sent("/"), &plain(408, vec![])),
        Ok(())
    );
    assert_eq!(
        check_response(&exp, &sent("/"), &plain(504, vec![])),
        Ok(())
    );
    assert!(check_response(&exp, &sent("/"), &plain(500, vec![])).is_err());
    exp.statuses = vec![200];
    assert!(check_response(&exp, &sent("/"), &plain(504, vec![])).is_err());
}

#[test]
fn backend_tls_expectations() {
    let mut res = echo_response(
        200,
        "tls-backend-0123456789-abcde",
        "gateway-conformance-infra",
        "/",
        "GET",
        json!({}),
    );
    let mut body: Value = serde_json::from_slice(&res.body).unwrap();
    body["tls"] = json!({"version": "TLSv1.3", "serverName": "abc.example.com",
        "peerCertificates": ["-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n"]});
    res.body = serde_json::to_vec(&body).unwrap();
    let mut exp = expectation("/");
    exp.backend = String::new();
    exp.expected.sni = Some("abc.example.com".into());
    exp.expected.client_cert_pem =
        Some("-----BEGIN CERTIFICATE-----\r\nQUJD\r\n-----END CERTIFICATE-----".into());
    assert_eq!(check_response(&exp, &sent("/"), &res), Ok(()));
    exp.expected.sni = Some("other.example.com".into());
    assert!(check_response(&exp, &sent("/"), &res)
        .unwrap_err()
        .contains("SNI"));
    let cleartext = echo_response(200, "x", "gateway-conformance-infra", "/", "GET", json!({}));
    exp.expected.sni = Some("abc.example.com".into());
    assert!(check_response(&exp, &sent("/"), &cleartext)
        .unwrap_err()
        .contains("cleartext"));
}

// ---------------------------------------------------------------------------------------------------------
// Redirects
// ---------------------------------------------------------------------------------------------------------

fn redirect(
    scheme: Option<&str>,
    host: Option<&str>,
    port: Option<&str>,
    path: Option<&str>,
) -> ExpectedRedirect {
    ExpectedRedirect {
        scheme: scheme.map(str::to_string),
        hostname: host.map(str::to_string),
        port: port.map(str::to_string),
        path: path.map(str::to_string),
        status: vec![302],
    }
}

#[test]
fn locations_resolve_like_go() {
    assert_eq!(
        resolve_location(
            "http",
            "127.0.1.1",
            "/orig",
            "https://example.org:8443/a%20b?q=1"
        )
        .unwrap(),
        Location {
            scheme: "https".into(),
            hostname: "example.org".into(),
            port: "8443".into(),
            path: "/a b".into()
        }
    );
    assert_eq!(
        resolve_location("http", "127.0.1.1:8080", "/orig", "/new?x").unwrap(),
        Location {
            scheme: "http".into(),
            hostname: "127.0.1.1".into(),
            port: "8080".into(),
            path: "/new".into()
        }
    );
    assert_eq!(
        resolve_location("https", "127.0.1.1", "/orig", "//example.org/p").unwrap(),
        Location {
            scheme: "https".into(),
            hostname: "example.org".into(),
            port: "".into(),
            path: "/p".into()
        }
    );
    assert_eq!(
        resolve_location("http", "h", "/a/b", "c").unwrap().path,
        "/a/c"
    );
    assert!(resolve_location("http", "h", "/", "").is_err());
}

#[test]
fn redirect_defaults() {
    let s = sent("/scheme");
    let got = |scheme: &str, host: &str, port: &str, path: &str| Location {
        scheme: scheme.into(),
        hostname: host.into(),
        port: port.into(),
        path: path.into(),
    };
    // Nothing expected but the defaults: same scheme, same path, default port, any host.
    let exp = redirect(None, None, None, None);
    assert_eq!(
        check_location(&exp, &s, &got("http", "anything", "", "/scheme")),
        Ok(())
    );
    assert_eq!(
        check_location(&exp, &s, &got("http", "anything", "80", "/scheme")),
        Ok(())
    );
    assert!(check_location(&exp, &s, &got("http", "anything", "8080", "/scheme")).is_err());
    assert!(check_location(&exp, &s, &got("https", "anything", "", "/scheme")).is_err());
    assert!(check_location(&exp, &s, &got("http", "anything", "", "/other")).is_err());
    // https with no expected port: absent or 443.
    let exp = redirect(Some("https"), Some("example.org"), None, None);
    assert_eq!(
        check_location(&exp, &s, &got("https", "example.org", "443", "/scheme")),
        Ok(())
    );
    assert!(check_location(&exp, &s, &got("https", "example.org", "80", "/scheme")).is_err());
    assert!(check_location(&exp, &s, &got("https", "example.com", "", "/scheme")).is_err());
    // An explicit port must be there exactly.
    let exp = redirect(None, None, Some("8083"), None);
    assert_eq!(
        check_location(&exp, &s, &got("http", "h", "8083", "/scheme")),
        Ok(())
    );
    assert!(check_location(&exp, &s, &got("http", "h", "", "/scheme")).is_err());
    // Expected path replaces the default.
    let exp = redirect(None, None, None, Some("/replacement-prefix/lemon"));
    assert_eq!(
        check_location(
            &exp,
            &sent("/original-prefix/lemon"),
            &got("http", "h", "", "/replacement-prefix/lemon")
        ),
        Ok(())
    );
}

#[test]
fn redirect_responses_are_checked_on_location() {
    let mut exp = expectation("/");
    exp.statuses = vec![301];
    exp.redirect = Some(redirect(Some("https"), Some("example.org"), None, None));
    let ok = plain(
        301,
        vec![("location", "https://example.org/scheme-and-status")],
    );
    assert_eq!(
        check_response(&exp, &sent("/scheme-and-status"), &ok),
        Ok(())
    );
    let bad = plain(
        301,
        vec![("location", "http://example.org/scheme-and-status")],
    );
    assert!(check_response(&exp, &sent("/scheme-and-status"), &bad)
        .unwrap_err()
        .contains("scheme"));
    let missing = plain(301, vec![]);
    assert!(check_response(&exp, &sent("/x"), &missing)
        .unwrap_err()
        .contains("Location"));
}

// ---------------------------------------------------------------------------------------------------------
// Weights and mirrors
// ---------------------------------------------------------------------------------------------------------

fn weights(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[test]
fn weight_tolerance() {
    let w = weights(&[
        ("infra-backend-v1", 0.7),
        ("infra-backend-v2", 0.3),
        ("infra-backend-v3", 0.0),
    ]);
    assert_eq!(
        check_weights(
            &counts(&[("infra-backend-v1", 350), ("infra-backend-v2", 150)]),
            500,
            &w
        ),
        Ok(())
    );
    // Just inside the tolerance passes; 0.75 is outside in floating point (|0.75 - 0.7| > 0.05), as in Go.
    assert_eq!(
        check_weights(
            &counts(&[("infra-backend-v1", 374), ("infra-backend-v2", 126)]),
            500,
            &w
        ),
        Ok(())
    );
    assert!(check_weights(
        &counts(&[("infra-backend-v1", 375), ("infra-backend-v2", 125)]),
        500,
        &w
    )
    .is_err());
    let e = check_weights(
        &counts(&[("infra-backend-v1", 380), ("infra-backend-v2", 120)]),
        500,
        &w,
    )
    .unwrap_err();
    assert!(e.contains("not within tolerance"), "{e}");
    // A weight-0 backend must get nothing.
    let e = check_weights(
        &counts(&[
            ("infra-backend-v1", 350),
            ("infra-backend-v2", 140),
            ("infra-backend-v3", 10),
        ]),
        500,
        &w,
    )
    .unwrap_err();
    assert!(
        e.contains("expected 2 backends to receive traffic, but got 3"),
        "{e}"
    );
    // A backend with weight must get something.
    let e = check_weights(&counts(&[("infra-backend-v1", 500)]), 500, &w).unwrap_err();
    assert!(e.contains("none was received"), "{e}");
    // Unexpected backends are rejected.
    let e = check_weights(
        &counts(&[
            ("infra-backend-v1", 350),
            ("infra-backend-v2", 140),
            ("web", 10),
        ]),
        500,
        &w,
    )
    .unwrap_err();
    assert!(e.contains("unexpected"), "{e}");
}

#[test]
fn pods_map_to_backends() {
    assert_eq!(
        backend_of_pod("infra-backend-v1-7f9c8d6b5-x2x9k"),
        "infra-backend-v1"
    );
    assert_eq!(
        backend_of_pod("web-backend-1234567890-abcde"),
        "web-backend"
    );
    assert_eq!(backend_of_pod("a-b"), "a-b");
}

#[test]
fn percentage_mirror_bounds() {
    let (lo, hi) = mirror_count_bounds(500, 20.0);
    // mean 100, sd sqrt(80) ≈ 8.94.
    assert!(
        (lo - 73.17).abs() < 0.1 && (hi - 126.83).abs() < 0.1,
        "{lo} {hi}"
    );
    assert_eq!(mirror_count_bounds(500, 100.0), (500.0, 500.0));
    assert_eq!(mirror_count_bounds(500, 0.0), (0.0, 0.0));
}

// ---------------------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------------------

#[test]
fn uuids_and_header_names() {
    let mut rng = Rng::new(42);
    let u = uuid_v4(&mut rng);
    assert_eq!(u.len(), 36);
    let parts: Vec<&str> = u.split('-').collect();
    assert_eq!(
        parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
        [8, 4, 4, 4, 12]
    );
    assert!(parts[2].starts_with('4'));
    assert!(matches!(
        parts[3].chars().next(),
        Some('8' | '9' | 'a' | 'b')
    ));
    assert_ne!(u, uuid_v4(&mut rng));

    assert_eq!(
        canonical_header_key("access-control-request-method"),
        "Access-Control-Request-Method"
    );
    assert_eq!(canonical_header_key("version"), "Version");
    assert_eq!(
        canonical_header_key("X-ECHO-set-header"),
        "X-Echo-Set-Header"
    );
    assert_eq!(canonical_header_key("bad header"), "bad header");
}

#[test]
fn go_host_name_matching() {
    assert!(go_match_hostname("*.org", "example.org"));
    assert!(go_match_hostname(
        "*.wildcard.org",
        "fourth-example.wildcard.org"
    ));
    assert!(!go_match_hostname("*.org", "a.b.org"));
    assert!(!go_match_hostname("*.wildcard.org", "wildcard.org"));
    assert!(go_match_hostname("abc.example.com", "ABC.example.com."));
    assert!(!go_match_hostname("abc.example.com", "other.example.com"));
}

// ---------------------------------------------------------------------------------------------------------
// Status expectations
// ---------------------------------------------------------------------------------------------------------

#[test]
fn every_status_expectation_parses_and_names_objects_of_its_world() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("expected/status");
    let conf = proto_conformance::harness::data::Conformance::load(&data_root()).expect("data");
    let certs = CertStore::generate().expect("certificates");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("status dir") {
        let path = entry.expect("entry").path();
        let spec = status::parse_spec(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(path.file_stem().unwrap().to_str().unwrap(), spec.test);
        let test = conf
            .test(&spec.test)
            .unwrap_or_else(|| panic!("unknown test {}", spec.test));
        assert!(
            conf.status_only.contains(&spec.test),
            "{} is not status-only",
            spec.test
        );
        assert!(
            test.file.ends_with(spec.source.rsplit('/').next().unwrap())
                || spec.source.contains("gateway-with-attached-routes"),
            "{}: source {} vs {}",
            spec.test,
            spec.source,
            test.file
        );
        let opts = WorldOptions {
            index: 0,
            inject_addresses: true,
            bind_address: Ipv4Addr::LOCALHOST,
        };
        let plan = world::build_world(&data_root(), &test.manifests, &certs, &opts).expect("world");
        for step in &spec.steps {
            for a in &step.expect {
                for (kind, name) in referenced(a) {
                    assert!(
                        plan.find(kind, &name).is_some(),
                        "{}: {kind} {name} is not in the manifests",
                        spec.test
                    );
                }
            }
        }
        n += 1;
    }
    assert_eq!(
        n,
        conf.status_only.len(),
        "one expectation file per status-only test"
    );
}

fn referenced(a: &Assertion) -> Vec<(&str, String)> {
    match a {
        Assertion::GatewayLatestConditions(g)
        | Assertion::GatewayZeroRoutes(g)
        | Assertion::GatewayHasAddress(g) => vec![("Gateway", g.clone())],
        Assertion::GatewayCondition { gateway, .. }
        | Assertion::GatewayListeners { gateway, .. }
        | Assertion::GatewayListenerConditions { gateway, .. }
        | Assertion::GatewayAttachedListenerSets { gateway, .. }
        | Assertion::GatewayAddresses { gateway, .. } => vec![("Gateway", gateway.clone())],
        Assertion::GatewayClassCondition { name, .. } => vec![("GatewayClass", name.clone())],
        Assertion::RouteCondition { kind, route, .. }
        | Assertion::RouteParents { kind, route, .. }
        | Assertion::RouteNoAcceptedParents { kind, route } => vec![(kind.as_str(), route.clone())],
        Assertion::ListenerSetCondition { listener_set, .. }
        | Assertion::ListenerSetListenerConditions { listener_set, .. }
        | Assertion::ListenerSetListeners { listener_set, .. } => {
            vec![("ListenerSet", listener_set.clone())]
        }
        Assertion::BackendTlsPolicyCondition { policy, .. }
        | Assertion::BackendTlsPolicyLatestConditions(policy) => {
            vec![("BackendTLSPolicy", policy.clone())]
        }
        Assertion::NamespacesReady(_) | Assertion::NamespacesAccepted(_) => Vec::new(),
    }
}

fn status_world() -> world::WorldPlan {
    let certs = CertStore::default();
    let opts = WorldOptions {
        index: 1,
        inject_addresses: true,
        bind_address: Ipv4Addr::LOCALHOST,
    };
    world::build_world(
        &data_root(),
        &["tests/gateway-invalid-route-kind.yaml".into()],
        &certs,
        &opts,
    )
    .expect("world")
}

#[test]
fn status_assertions_follow_the_upstream_helpers() {
    let plan = status_world();
    let gw_status = |conds: Value, listeners: Value| {
        json!({"gateways": [{"namespace": "gateway-conformance-infra",
        "name": "gateway-supported-and-invalid-route-kind", "status": {"conditions": conds, "listeners": listeners}}]})
    };
    let listeners = vec![status::ListenerExp {
        name: "http".into(),
        supported_kinds: vec![status::KindRef {
            group: None,
            kind: "HTTPRoute".into(),
        }],
        attached_routes: 0,
        conditions: vec![status::Cond {
            type_: "ResolvedRefs".into(),
            status: "False".into(),
            reason: "InvalidRouteKinds".into(),
        }],
    }];
    let a = Assertion::GatewayListeners {
        gateway: "gateway-conformance-infra/gateway-supported-and-invalid-route-kind".into(),
        listeners,
    };
    let good = gw_status(
        json!([{"type": "Accepted", "status": "True", "reason": "Accepted", "observedGeneration": 1}]),
        json!([{"name": "http", "attachedRoutes": 0,
            "supportedKinds": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}, {"kind": "GRPCRoute"}],
            "conditions": [{"type": "ResolvedRefs", "status": "False", "reason": "InvalidRouteKinds"}]}]),
    );
    let view = StatusView {
        status: &good,
        world: &plan,
    };
    assert_eq!(view.check(&a), Ok(()));

    // Stale observedGeneration on the Gateway's conditions fails.
    let stale = gw_status(
        json!([{"type": "Accepted", "status": "True", "reason": "Accepted", "observedGeneration": 0}]),
        good["gateways"][0]["status"]["listeners"].clone(),
    );
    assert!(StatusView {
        status: &stale,
        world: &plan
    }
    .check(&a)
    .unwrap_err()
    .contains("observedGeneration"));
    // A wrong reason fails; a missing kind fails; an extra listener fails.
    let mut wrong = good.clone();
    wrong["gateways"][0]["status"]["listeners"][0]["conditions"][0]["reason"] = json!("Invalid");
    assert!(StatusView {
        status: &wrong,
        world: &plan
    }
    .check(&a)
    .is_err());
    let mut kinds = good.clone();
    kinds["gateways"][0]["status"]["listeners"][0]["supportedKinds"] = json!([]);
    assert!(StatusView {
        status: &kinds,
        world: &plan
    }
    .check(&a)
    .is_err());
    let mut extra = good.clone();
    extra["gateways"][0]["status"]["listeners"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "other", "attachedRoutes": 0}));
    assert!(StatusView {
        status: &extra,
        world: &plan
    }
    .check(&a)
    .unwrap_err()
    .contains("listener status"));
    // Missing from /status.
    let empty = json!({"gateways": []});
    assert!(StatusView {
        status: &empty,
        world: &plan
    }
    .check(&a)
    .unwrap_err()
    .contains("not in /status"));
}

#[test]
fn route_parent_assertions() {
    let plan = status_world();
    let route = |parents: Value| {
        json!({"routes": [{"kind": "HTTPRoute", "namespace": "gateway-conformance-infra",
        "name": "r", "status": {"parents": parents}}]})
    };
    let cond = |t: &str, s: &str, r: &str| json!({"type": t, "status": s, "reason": r, "observedGeneration": 0});
    // The route is not in the world: its generation is 0, which the conditions above carry.
    let not_accepted = route(json!([{"parentRef": {"name": "same-namespace"},
        "controllerName": "portcullis.dev/gateway-controller",
        "conditions": [cond("Accepted", "False", "NotAllowedByListeners"), cond("ResolvedRefs", "True", "ResolvedRefs")]}]));
    let view = StatusView {
        status: &not_accepted,
        world: &plan,
    };
    let rc = |t: &str, s: &str, r: &str| Assertion::RouteCondition {
        kind: "HTTPRoute".into(),
        route: "gateway-conformance-infra/r".into(),
        parent: "gateway-conformance-infra/same-namespace".into(),
        condition: status::Cond {
            type_: t.into(),
            status: s.into(),
            reason: r.into(),
        },
    };
    assert_eq!(
        view.check(&rc("Accepted", "False", "NotAllowedByListeners")),
        Ok(())
    );
    assert_eq!(view.check(&rc("ResolvedRefs", "True", "")), Ok(()));
    assert!(view.check(&rc("Accepted", "True", "")).is_err());
    let none = Assertion::RouteNoAcceptedParents {
        kind: "HTTPRoute".into(),
        route: "gateway-conformance-infra/r".into(),
    };
    assert_eq!(view.check(&none), Ok(()));

    let parents = Assertion::RouteParents {
        kind: "HTTPRoute".into(),
        route: "gateway-conformance-infra/r".into(),
        parents: vec![status::ParentExp {
            group: Some("gateway.networking.k8s.io".into()),
            kind: Some("Gateway".into()),
            name: "same-namespace".into(),
            namespace: Some("gateway-conformance-infra".into()),
            controller_name: None,
            conditions: vec![status::Cond {
                type_: "Accepted".into(),
                status: "True".into(),
                reason: String::new(),
            }],
        }],
        namespace_required: true,
        exact: true,
    };
    let accepted = route(
        json!([{"parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway",
        "name": "same-namespace", "namespace": "gateway-conformance-infra"},
        "controllerName": "portcullis.dev/gateway-controller", "conditions": [cond("Accepted", "True", "Accepted")]}]),
    );
    assert_eq!(
        StatusView {
            status: &accepted,
            world: &plan
        }
        .check(&parents),
        Ok(())
    );
    // Group left unset where it was expected set: no match (upstream compares the pointers' values).
    let unset = route(
        json!([{"parentRef": {"kind": "Gateway", "name": "same-namespace",
        "namespace": "gateway-conformance-infra"}, "controllerName": "portcullis.dev/gateway-controller",
        "conditions": [cond("Accepted", "True", "Accepted")]}]),
    );
    assert!(StatusView {
        status: &unset,
        world: &plan
    }
    .check(&parents)
    .is_err());
    // exact: another parent is too many.
    let mut two = accepted.clone();
    let p = two["routes"][0]["status"]["parents"][0].clone();
    two["routes"][0]["status"]["parents"]
        .as_array_mut()
        .unwrap()
        .push(p);
    assert!(StatusView {
        status: &two,
        world: &plan
    }
    .check(&parents)
    .unwrap_err()
    .contains("exactly"));
}

// ---------------------------------------------------------------------------------------------------------
// Expected-results file
// ---------------------------------------------------------------------------------------------------------

fn result(id: &str, outcome: Outcome) -> CaseResult {
    CaseResult {
        id: id.into(),
        test: id.split('/').next().unwrap().into(),
        suite: Suite::Http,
        features: vec!["Gateway".into()],
        outcome,
        duration: std::time::Duration::ZERO,
    }
}

#[test]
fn expected_file_round_trip_and_check() {
    let run = RunResults {
        cases: vec![
            result("A/001", Outcome::Pass),
            result(
                "A/002",
                Outcome::Fail {
                    reason: "expected status code to be one of [200], got 404".into(),
                    detail: String::new(),
                },
            ),
            result(
                "B/001",
                Outcome::Skip("state change not supported: x".into()),
            ),
        ],
        status: Vec::new(),
    };
    let text = report::write_expected(&run);
    let parsed = report::parse_expected(&text).expect("parse");
    assert_eq!(parsed["A/001"], Expected::Pass);
    assert!(
        matches!(&parsed["A/002"], Expected::Skip(r) if r.starts_with("fails: expected status code"))
    );
    assert!(matches!(&parsed["B/001"], Expected::Skip(r) if r.contains("state change")));
    assert!(
        report::parse_expected("X/001 skip").is_err(),
        "a skip needs a reason"
    );
    assert!(report::parse_expected("X/001 maybe").is_err());

    // A case expected to pass that fails is a regression; a skipped case that passes is newly passing.
    let expected = report::parse_expected("A/001 pass\nA/002 pass\nB/001 skip because\n").unwrap();
    let later = RunResults {
        cases: vec![
            result("A/001", Outcome::Pass),
            result(
                "A/002",
                Outcome::Fail {
                    reason: "r".into(),
                    detail: String::new(),
                },
            ),
            result("B/001", Outcome::Pass),
            result("C/001", Outcome::Pass),
        ],
        status: Vec::new(),
    };
    let check = report::check(&later, &expected);
    assert_eq!(
        check
            .regressions
            .iter()
            .map(|r| r.0.as_str())
            .collect::<Vec<_>>(),
        ["A/002"]
    );
    assert_eq!(check.newly_passing, ["B/001", "C/001"]);
    assert_eq!(check.unlisted, ["C/001"]);
    assert_eq!(
        report::headline(&later),
        "conformance: 3 passed, 1 failed, 0 skipped"
    );
    // The headline counts the status-only tests too.
    let status = |outcome| StatusResult {
        test: "T".into(),
        features: Vec::new(),
        source: String::new(),
        outcome,
    };
    let with_status = RunResults {
        status: vec![status(Outcome::Pass), status(Outcome::Skip("why".into()))],
        ..later
    };
    assert_eq!(
        report::headline(&with_status),
        "conformance: 4 passed, 1 failed, 1 skipped"
    );
}

// ---------------------------------------------------------------------------------------------------------
// Suites, gRPC and L4 case files, objects created at run time
// ---------------------------------------------------------------------------------------------------------

#[test]
fn suites_parse() {
    assert_eq!(Suite::parse_list("http"), Ok(vec![Suite::Http]));
    assert_eq!(
        Suite::parse_list("l4, grpc,l4"),
        Ok(vec![Suite::Grpc, Suite::L4])
    );
    assert_eq!(Suite::parse_list("all"), Ok(Suite::ALL.to_vec()));
    assert!(Suite::parse_list("tcp").is_err());
    assert!(Suite::parse_list(" , ").is_err());
}

#[test]
fn every_grpc_and_l4_case_is_understood() {
    let conf = proto_conformance::harness::data::Conformance::load(&data_root()).expect("data");
    assert_eq!(conf.count(Suite::Http), 400);
    assert_eq!(conf.count(Suite::Grpc), 36);
    assert_eq!(conf.count(Suite::L4), 34);
    for c in &conf.grpc_cases {
        assert!(
            c.grpc
                .method
                .starts_with(&format!("/{}/", proto_conformance::echo::grpc::SERVICE)),
            "{}",
            c.id
        );
        assert!(
            c.expect_failure || c.grpc.expected_code.is_some(),
            "{}",
            c.id
        );
    }
    for c in &conf.l4_cases {
        match c.kind.as_str() {
            "tcp" => assert!(
                c.l4.as_ref().and_then(|l| l.backend.as_ref()).is_some(),
                "{}",
                c.id
            ),
            "tcp_echo" | "udp_echo" => {}
            "udp_dns" => assert!(c.l4.as_ref().and_then(|l| l.dns_query_a.as_ref()).is_some()),
            "tls_connection_rejected" => assert!(c.tls.is_some(), "{}", c.id),
            other => panic!("{}: unknown kind {other}", c.id),
        }
        if c.use_tls {
            assert!(c.trust_ca.is_some() && c.server_name.is_some(), "{}", c.id);
        }
        for change in &c.after_state_changes {
            let words: Vec<&str> = change
                .split_whitespace()
                .map(|w| w.trim_matches(|ch| ch == '[' || ch == ']'))
                .collect();
            assert_eq!(words[0], "MustApplyObjectsWithCleanup", "{change}");
            assert!(
                runtime_objects::build(words[1], words[2]).is_some(),
                "the harness builds {change}"
            );
        }
    }
    // A test with HTTP and L4 cases gets both, in id order, only from the selected suites.
    let both = conf.all_cases_of("TLSRouteHostnameIntersection", &Suite::ALL);
    assert_eq!(both.len(), 11);
    assert!(both.windows(2).all(|w| w[0].id() < w[1].id()));
    assert_eq!(both[10].suite(), Suite::L4);
    assert_eq!(
        conf.all_cases_of("TLSRouteHostnameIntersection", &[Suite::Http])
            .len(),
        7
    );
}

#[test]
fn runtime_routes_are_newer_than_the_world() {
    let certs = CertStore::generate().expect("certificates");
    let opts = WorldOptions {
        index: 2,
        inject_addresses: true,
        bind_address: Ipv4Addr::LOCALHOST,
    };
    let mut plan = world::build_world(
        &data_root(),
        &["tests/tcproute-multiple-routes-attachment.yaml".into()],
        &certs,
        &opts,
    )
    .expect("world");
    let obj = runtime_objects::build(
        "TCPRoute",
        "gateway-conformance-infra/tcproute-attach-newer",
    )
    .expect("known object");
    assert_eq!(
        obj["spec"]["rules"][0]["backendRefs"][0]["name"],
        "tcp-attach-backend-2"
    );
    assert_eq!(obj["spec"]["parentRefs"][0]["sectionName"], "tcp");
    let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_289_649);
    runtime_objects::add_newer(&mut plan, obj, now);
    let older = plan
        .find(
            "TCPRoute",
            "gateway-conformance-infra/tcproute-attach-older",
        )
        .expect("older");
    let newer = plan
        .find(
            "TCPRoute",
            "gateway-conformance-infra/tcproute-attach-newer",
        )
        .expect("newer");
    assert_eq!(
        older["metadata"]["creationTimestamp"],
        "2026-12-03T09:20:48Z"
    );
    assert_eq!(
        newer["metadata"]["creationTimestamp"],
        "2026-12-03T09:20:49Z"
    );
    assert_eq!(newer["metadata"]["generation"], 1);
    assert!(runtime_objects::build("TCPRoute", "x/unknown").is_none());
    // Gateways of the L4 tests record their UDP listener ports.
    let udp = world::build_world(
        &data_root(),
        &["tests/udproute-parentref-attach-all-listeners.yaml".into()],
        &certs,
        &opts,
    )
    .expect("world");
    let gw = &udp.gateways["gateway-conformance-infra/udp-attach-all-listeners-gateway"];
    assert_eq!(
        gw.udp_ports.iter().copied().collect::<Vec<_>>(),
        [5310, 5311, 5312]
    );
    let pod = udp
        .pods
        .iter()
        .find(|p| p.deployment == "udp-echo-attach-all")
        .expect("pod");
    assert_eq!(pod.service_name, "udp-echo-attach-all");
    assert!(matches!(pod.backend, Some(BackendPlan::Udp { port: 8080 })));
}
