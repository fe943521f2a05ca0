//! End-to-end GRPCRoute: the real `portcullis` binary, gRPC echo backends (proto-conformance's `GrpcEchoServer`,
//! the service of upstream's echo-basic), and real unary gRPC calls (the conformance harness's client, tonic over
//! hyper's HTTP/2): h2c with prior knowledge to an HTTP listener, HTTP/2 over TLS (ALPN) to an HTTPS listener,
//! h2c and TLS (BackendTLSPolicy, ALPN h2) to backends, header modifiers, and the gRPC answers the proxy makes
//! itself (Trailers-Only, `grpc-status`), which must reach gRPC clients only.

mod common;

use anyhow::{Context, Result};
use common::certs::{ca, indent, leaf, tls_secret};
use common::{free_port, Proxy, CLASSES};
use proto_conformance::echo::grpc::{method_path, GrpcEchoConfig, GrpcEchoServer};
use proto_conformance::echo::{EchoTls, PodIdentity};
use proto_conformance::harness::client::{ClientContext, TlsSpec};
use proto_conformance::harness::grpc::{call, code_name, RpcOutcome, RpcSpec};
use std::net::SocketAddr;
use std::time::Duration;

/// A Service port (without appProtocol: GRPCRoute backends are spoken to in HTTP/2 anyway) and the
/// EndpointSlice of one backend address.
fn service(name: &str, port: u16, backend: Option<SocketAddr>) -> String {
    let endpoints = match backend {
        Some(a) => format!(
            "ports: [{{name: p, port: {}}}]\nendpoints: [{{addresses: [{}]}}]\n",
            a.port(),
            a.ip()
        ),
        None => "ports: [{name: p, port: 1}]\nendpoints: []\n".to_string(),
    };
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: shop}}
spec:
  ports: [{{name: p, port: {port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}
  namespace: shop
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
{endpoints}---
"
    )
}

fn rpc(connect: u16, tls: Option<TlsSpec>, authority: &str, path: &str) -> RpcSpec {
    RpcSpec {
        connect: SocketAddr::from(([127, 0, 0, 1], connect)),
        tls,
        authority: authority.to_string(),
        path: path.to_string(),
        metadata: Vec::new(),
        timeout: Duration::from_secs(10),
    }
}

/// The code (grpc-go's name), message and answering pod of an RPC.
fn outcome(o: &RpcOutcome) -> (Option<&'static str>, String, String) {
    match o {
        RpcOutcome::Status { code, message, .. } => (
            Some(code_name(*code)),
            message.clone(),
            o.pod().unwrap_or_default().to_string(),
        ),
        RpcOutcome::NoAnswer(e) => (None, e.clone(), String::new()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_routes_over_h2c_and_tls() -> Result<()> {
    let ca = ca("grpc test ca")?;
    let gateway_cert = leaf(&ca, &["grpc.example.com"])?;
    let backend_cert = leaf(&ca, &["backend.example.com"])?;
    let plain = GrpcEchoServer::start(GrpcEchoConfig {
        identity: PodIdentity::new("grpc-v1-5d8f7c9b4-aaaaa", "shop"),
        addr: "127.0.0.1:0".parse()?,
        tls: None,
        log_to_stdout: false,
    })
    .await?;
    let secure = GrpcEchoServer::start(GrpcEchoConfig {
        identity: PodIdentity::new("grpc-tls-6c7d8e9f0-bbbbb", "shop"),
        addr: "127.0.0.1:0".parse()?,
        tls: Some(EchoTls {
            addr: "127.0.0.1:0".parse()?,
            cert_pem: backend_cert.0.clone(),
            key_pem: backend_cert.1.clone(),
            client_ca_pem: None,
        }),
        log_to_stdout: false,
    })
    .await?;
    let secure_tls = secure.tls_addr().context("TLS listener")?;

    let http = free_port();
    let https = free_port();
    let yaml = format!(
        "{CLASSES}{}{}{}
{}apiVersion: v1
kind: ConfigMap
metadata: {{name: backend-ca, namespace: shop}}
data:
  ca.crt: |
{}---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {{name: secure, namespace: shop}}
spec:
  targetRefs: [{{group: \"\", kind: Service, name: secure}}]
  validation:
    caCertificateRefs: [{{group: \"\", kind: ConfigMap, name: backend-ca}}]
    hostname: backend.example.com
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: shop}}
spec:
  gatewayClassName: portcullis
  listeners:
  - {{name: http, port: {http}, protocol: HTTP}}
  - name: https
    port: {https}
    protocol: HTTPS
    hostname: grpc.example.com
    tls: {{certificateRefs: [{{name: gw-tls}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: echo, namespace: shop}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches:
    - method: {{service: gateway_api_conformance.echo_basic.grpcecho.GrpcEcho, method: Echo}}
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{{name: X-Via, value: portcullis}}]
    backendRefs: [{{name: plain, port: 8080}}]
  - matches:
    - method: {{service: gateway_api_conformance.echo_basic.grpcecho.GrpcEcho, method: EchoTwo}}
    backendRefs: [{{name: secure, port: 443}}]
  - matches:
    - method: {{service: gateway_api_conformance.echo_basic.grpcecho.GrpcEcho, method: EchoThree}}
    backendRefs: [{{name: plain, port: 8080}}]
  - matches:
    - method: {{service: shop.v1.Empty}}
    backendRefs: [{{name: empty, port: 8080}}]
",
        service("plain", 8080, Some(plain.addr())),
        service("secure", 443, Some(secure_tls)),
        service("empty", 8080, None),
        tls_secret("shop", "gw-tls", &gateway_cert),
        indent(&ca.pem),
    );
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("all.yaml"), yaml)?;
    let (proxy, _dir) =
        tokio::task::spawn_blocking(move || Proxy::start(dir.path(), http, &[]).map(|p| (p, dir)))
            .await??;
    let cx = ClientContext::default();
    let log = || proxy.log_text();

    // h2c with prior knowledge to the HTTP listener; the rule's header modifier reaches the backend.
    let o = call(
        &rpc(http, None, "grpc.example.com", &method_path("Echo")),
        &cx,
    )
    .await;
    let (code, msg, pod) = outcome(&o);
    assert_eq!(code, Some("OK"), "{msg}\n{}", log());
    assert!(pod.starts_with("grpc-v1-"), "{}", o.describe());
    let RpcOutcome::Status {
        response: Some(resp),
        ..
    } = &o
    else {
        panic!("no response: {}", o.describe());
    };
    let a = resp.assertions.as_ref().context("assertions")?;
    assert_eq!(a.header_values("x-via"), ["portcullis"], "{a:?}");
    assert_eq!(a.authority, "grpc.example.com");
    assert_eq!(a.fully_qualified_method, method_path("Echo"));

    // A backend behind a BackendTLSPolicy: TLS with the policy's CA and name, HTTP/2 negotiated by ALPN.
    let o = call(
        &rpc(http, None, "grpc.example.com", &method_path("EchoTwo")),
        &cx,
    )
    .await;
    let (code, msg, pod) = outcome(&o);
    assert_eq!(code, Some("OK"), "{msg}\n{}", log());
    assert!(pod.starts_with("grpc-tls-"), "{}", o.describe());
    if let RpcOutcome::Status {
        response: Some(resp),
        ..
    } = &o
    {
        let tls = resp
            .assertions
            .as_ref()
            .and_then(|a| a.tls_assertions.as_ref())
            .context("the backend saw no TLS")?;
        assert_eq!(tls.negotiated_protocol, "h2");
        assert_eq!(tls.server_name, "backend.example.com");
    }

    // A status the backend answers (EchoThree is unimplemented there) passes through, trailers and all.
    let o = call(
        &rpc(http, None, "grpc.example.com", &method_path("EchoThree")),
        &cx,
    )
    .await;
    let (code, msg, _) = outcome(&o);
    assert_eq!(code, Some("Unimplemented"), "{msg}");
    assert!(!msg.contains("HTTP status"), "{msg}");

    // Answers made by the proxy are gRPC statuses: no route, and no endpoint.
    let o = call(
        &rpc(http, None, "grpc.example.com", "/shop.v1.Nothing/Get"),
        &cx,
    )
    .await;
    let (code, msg, _) = outcome(&o);
    assert_eq!(code, Some("Unimplemented"), "{msg}");
    assert_eq!(msg, "no route for this method");
    let o = call(
        &rpc(http, None, "grpc.example.com", "/shop.v1.Empty/Get"),
        &cx,
    )
    .await;
    let (code, msg, _) = outcome(&o);
    assert_eq!(code, Some("Unavailable"), "{msg}\n{}", log());
    assert_eq!(msg, "no backend endpoint is available");

    // HTTP/2 over TLS to the HTTPS listener (ALPN h2), the same route.
    let tls = TlsSpec {
        server_name: "grpc.example.com".into(),
        trust_pems: vec![ca.pem.clone()],
        client_cert: None,
        cert_requested: Default::default(),
    };
    let o = call(
        &rpc(https, Some(tls), "grpc.example.com", &method_path("Echo")),
        &cx,
    )
    .await;
    let (code, msg, pod) = outcome(&o);
    assert_eq!(code, Some("OK"), "{msg}\n{}", log());
    assert!(pod.starts_with("grpc-v1-"), "{}", o.describe());

    // A client that does not speak gRPC still gets HTTP answers; a gRPC client over HTTP/1.1 gets a gRPC one.
    let port = http;
    let (plain_404, grpc_404) = tokio::task::spawn_blocking(move || -> Result<_> {
        let a = common::request(
            port,
            "POST",
            "grpc.example.com",
            "/shop.v1.Nothing/Get",
            &[],
            b"",
        )?;
        let b = common::request(
            port,
            "POST",
            "grpc.example.com",
            "/shop.v1.Nothing/Get",
            &[("content-type", "application/grpc")],
            b"",
        )?;
        Ok((a, b))
    })
    .await??;
    assert_eq!(plain_404.status, 404);
    assert_eq!(grpc_404.status, 200);
    assert_eq!(grpc_404.header("grpc-status"), Some("12"));
    assert_eq!(grpc_404.header("content-type"), Some("application/grpc"));

    plain.shutdown_and_wait().await;
    secure.shutdown_and_wait().await;
    Ok(())
}
