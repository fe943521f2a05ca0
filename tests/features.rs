//! End-to-end: HTTPRoute mirrors, CORS, timeouts and retries against echo backends (which implement `?delay=`
//! and `/retry/?uuid=..&succeedAfter=..` as the conformance echo server does).

mod common;

use anyhow::Result;
use common::{echo, free_port, service_yaml, Proxy, CLASSES};
use std::time::Duration;

fn manifests(port: u16, svc: &str) -> String {
    format!(
        "{CLASSES}{svc}
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: portcullis
  listeners: [{{name: http, port: {port}, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: features, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /mirror}}}}]
    filters:
    - type: RequestMirror
      requestMirror: {{backendRef: {{name: shadow, port: 80}}}}
    backendRefs: [{{name: main, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /mirror-h2c}}}}]
    filters:
    - type: RequestMirror
      requestMirror: {{backendRef: {{name: shadow-h2c, port: 80}}}}
    backendRefs: [{{name: main, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /cors}}}}]
    filters:
    - type: CORS
      cors:
        allowOrigins: [\"https://app.example.com\", \"https://*.example.org\"]
        allowMethods: [GET, PUT]
        allowHeaders: [x-token]
        exposeHeaders: [x-trace]
        allowCredentials: true
        maxAge: 600
    backendRefs: [{{name: main, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /slow}}}}]
    timeouts: {{request: 300ms}}
    backendRefs: [{{name: main, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /retry/codes}}}}]
    retry: {{attempts: 2, codes: [500]}}
    backendRefs: [{{name: main, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /retry/resets}}}}]
    retry: {{attempts: 2}}
    backendRefs: [{{name: main, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /retry/no-policy}}}}]
    backendRefs: [{{name: main, port: 80}}]
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_cors_timeouts_and_retries() -> Result<()> {
    let main = echo("main-7d9f8b6c4-aaaaa", "default").await?;
    let shadow = echo("shadow-5c6d7e8f9-bbbbb", "default").await?;
    let mut h2c_cfg = proto_conformance::echo::EchoConfig::new(
        "shadow-h2c-5c6d7e8f9-ccccc",
        "default",
        "127.0.0.1:0".parse()?,
    );
    h2c_cfg.h2c_addr = Some("127.0.0.1:0".parse()?);
    let shadow_h2c = proto_conformance::echo::EchoServer::start(h2c_cfg).await?;
    let h2c_port = shadow_h2c.h2c_addr().expect("h2c listener").port();
    let svc = [
        service_yaml("default", "main", 80, &[&main]),
        service_yaml("default", "shadow", 80, &[&shadow]),
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: shadow-h2c, namespace: default}}\nspec:\n  ports: [{{name: h2c, port: 80, appProtocol: kubernetes.io/h2c}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: shadow-h2c\n  namespace: default\n  labels: {{kubernetes.io/service-name: shadow-h2c}}\naddressType: IPv4\nports: [{{name: h2c, port: {h2c_port}}}]\nendpoints: [{{addresses: [127.0.0.1]}}]\n---\n"
        ),
    ]
    .concat();
    let dir = tempfile::tempdir()?;
    let port = free_port();
    std::fs::write(dir.path().join("all.yaml"), manifests(port, &svc))?;
    let proxy = Proxy::start(dir.path(), port, &[])?;
    let proxy = std::sync::Arc::new(proxy);

    // Mirror: the client gets the main backend's answer; the shadow receives a copy, body included.
    let p = proxy.clone();
    let r = tokio::task::spawn_blocking(move || {
        p.request(
            "POST",
            "a.example.com",
            "/mirror/items?id=1",
            &[("x-test", "1")],
            b"hello",
        )
    })
    .await??;
    assert_eq!(r.status, 200);
    assert!(r.pod().starts_with("main-"));
    let copy = shadow
        .wait_for_request(Duration::from_secs(5), |q| q.path == "/mirror/items?id=1")
        .await;
    let copy = copy.expect("the mirror received the request");
    assert_eq!(copy.method, "POST");
    assert_eq!(&copy.body[..], b"hello");
    assert_eq!(copy.header("x-test").as_deref(), Some("1"));

    // A mirror to an h2c backend speaks HTTP/2 with prior knowledge to it, as a request would.
    let p = proxy.clone();
    let r = tokio::task::spawn_blocking(move || p.get("a.example.com", "/mirror-h2c/x")).await??;
    assert_eq!(r.status, 200);
    let copy = shadow_h2c
        .wait_for_request(Duration::from_secs(5), |q| q.path == "/mirror-h2c/x")
        .await
        .expect("the h2c mirror received the request");
    assert_eq!(copy.listener, proto_conformance::echo::EchoListener::H2c);
    assert_eq!(copy.proto, "HTTP/2.0");

    let p = proxy.clone();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let proxy = p;
        let host = "a.example.com";
        // CORS preflight from an allowed origin: answered by the proxy.
        let r = proxy.request(
            "OPTIONS",
            host,
            "/cors/x",
            &[
                ("Origin", "https://eu.example.org"),
                ("Access-Control-Request-Method", "PUT"),
                ("Access-Control-Request-Headers", "x-token"),
            ],
            b"",
        )?;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some("https://eu.example.org")
        );
        assert_eq!(r.header("access-control-allow-methods"), Some("GET, PUT"));
        assert_eq!(r.header("access-control-allow-headers"), Some("x-token"));
        assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
        assert_eq!(r.header("access-control-max-age"), Some("600"));
        assert!(r.body.is_empty());
        // A preflight from another origin is refused by the proxy, without CORS headers.
        let r = proxy.request(
            "OPTIONS",
            host,
            "/cors/x",
            &[
                ("Origin", "https://evil.test"),
                ("Access-Control-Request-Method", "PUT"),
            ],
            b"",
        )?;
        assert_eq!(r.status, 403);
        assert_eq!(r.header("access-control-allow-origin"), None);
        // An actual request from an allowed origin gets the CORS response headers.
        let r = proxy.request(
            "GET",
            host,
            "/cors/x",
            &[("Origin", "https://app.example.com")],
            b"",
        )?;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some("https://app.example.com")
        );
        assert_eq!(r.header("access-control-expose-headers"), Some("x-trace"));

        // Request timeout: a backend that takes 1 s gets a 504 after about 300 ms.
        let start = std::time::Instant::now();
        let r = proxy.get(host, "/slow?delay=1s")?;
        assert_eq!(r.status, 504);
        assert!(
            start.elapsed() < Duration::from_millis(900),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(proxy.get(host, "/slow?delay=10ms")?.status, 200);

        // Retries on a named status: two failures then success, within 2 retries.
        let r = proxy.get(host, "/retry/codes?uuid=u1&succeedAfter=2&responseCode=500")?;
        assert_eq!(r.status, 200, "{}", r.text());
        // Three failures: the retries run out and the client sees the backend's 500.
        let r = proxy.get(host, "/retry/codes?uuid=u2&succeedAfter=3&responseCode=500")?;
        assert_eq!(r.status, 500);
        // Connection resets are retried too, without a status list.
        let r = proxy.get(host, "/retry/resets?uuid=u3&succeedAfter=2")?;
        assert_eq!(r.status, 200, "{}", r.text());
        let r = proxy.get(host, "/retry/resets?uuid=u4&succeedAfter=3")?;
        assert_eq!(r.status, 503);
        // Without a retry policy the first failure is the answer.
        let r = proxy.get(
            host,
            "/retry/no-policy?uuid=u5&succeedAfter=1&responseCode=500",
        )?;
        assert_eq!(r.status, 500);
        Ok(())
    })
    .await??;
    Ok(())
}
