//! End-to-end: ingress-nginx `custom-http-errors` with `default-backend` on an Ingress of our own class. A status
//! the annotation lists is replaced by the error backend's answer, which gets ingress-nginx's headers; other
//! statuses pass; a Service without ready endpoints is answered by the default backend.

mod common;

use anyhow::Result;
use common::{echo, free_port, service_yaml, Proxy, CLASSES};

fn ingress(name: &str, svc: &str, annotations: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {name}
  namespace: default
  annotations: {{{annotations}}}
spec:
  rules:
  - host: {name}.example.com
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: {svc}, port: {{number: 80}}}}}}}}
---
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listed_statuses_are_answered_by_the_error_backend() -> Result<()> {
    let app = echo("app-1", "default").await?;
    let errors = echo("errors-1", "default").await?;
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let anns = "nginx.ingress.kubernetes.io/custom-http-errors: \"404,503\", nginx.ingress.kubernetes.io/default-backend: errors";
    let manifests = format!(
        "{CLASSES}{}{}{}{}{}",
        service_yaml("default", "app", 80, &[&app]),
        service_yaml("default", "errors", 80, &[&errors]),
        service_yaml("default", "nopods", 80, &[]),
        ingress("app", "app", anns),
        ingress(
            "empty",
            "nopods",
            "nginx.ingress.kubernetes.io/default-backend: errors"
        ),
    );
    std::fs::write(dir.path().join("all.yaml"), manifests)?;
    let proxy = Proxy::start(dir.path(), port, &[])?;

    // A listed status: the error backend answers (its status and body, unchanged), told what happened.
    let r = common::get(
        port,
        "app.example.com",
        "/status/404",
        &[("accept", "application/json"), ("x-request-id", "req-1")],
    )?;
    assert_eq!(
        r.status,
        200,
        "the error backend's own status: {}",
        r.text()
    );
    assert_eq!(r.pod(), "errors-1");
    let v = r.echo()?;
    assert_eq!(v["path"], "/");
    for (h, want) in [
        ("x-code", "404"),
        ("x-format", "application/json"),
        ("x-original-uri", "/status/404"),
        ("x-namespace", "default"),
        ("x-ingress-name", "app"),
        ("x-service-name", "app"),
        ("x-service-port", "80"),
        ("x-request-id", "req-1"),
    ] {
        assert_eq!(
            r.echoed_header(h).as_deref(),
            Some(want),
            "{h}: {}",
            r.text()
        );
    }
    // Statuses not listed, and successes, pass as the backend sent them.
    let r = proxy.get("app.example.com", "/status/500")?;
    assert_eq!(r.status, 500);
    let r = proxy.get("app.example.com", "/x")?;
    assert_eq!((r.status, r.pod()), (200, "app-1".to_string()));
    // HEAD gets the page's head only.
    let r = proxy.request("HEAD", "app.example.com", "/status/503", &[], b"")?;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());

    // default-backend alone: a Service without ready endpoints is answered by it.
    let r = proxy.get("empty.example.com", "/anything")?;
    assert_eq!(
        (r.status, r.pod()),
        (200, "errors-1".to_string()),
        "{}",
        r.text()
    );
    assert_eq!(r.echo()?["path"], "/anything");

    // The error backend gone: the client gets the original status from the proxy itself.
    errors.shutdown_and_wait().await;
    let r = proxy.get("app.example.com", "/status/404")?;
    assert_eq!(r.status, 404, "{}", proxy.log_text());
    Ok(())
}

/// `service-upstream`: the Service's cluster IP and port are the one endpoint (kube-proxy picks the pod), instead
/// of the EndpointSlice addresses. Here the cluster IP and port lead to one echo backend and the slice to another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_upstream_goes_to_the_cluster_ip() -> Result<()> {
    let via_cluster_ip = echo("kube-proxy-1", "default").await?;
    let pod = echo("pod-1", "default").await?;
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let svc = format!(
        "apiVersion: v1
kind: Service
metadata: {{name: app, namespace: default}}
spec:
  clusterIP: 127.0.0.1
  ports: [{{name: http, port: {}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: app-1
  namespace: default
  labels: {{kubernetes.io/service-name: app}}
addressType: IPv4
ports: [{{name: http, port: {}}}]
endpoints: [{{addresses: [127.0.0.1]}}]
---
",
        via_cluster_ip.http_addr().port(),
        pod.http_addr().port()
    );
    let backend_port = via_cluster_ip.http_addr().port();
    let ingress = |name: &str, annotations: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {name}
  namespace: default
  annotations: {{{annotations}}}
spec:
  rules:
  - host: {name}.example.com
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: app, port: {{number: {backend_port}}}}}}}}}
---
"
        )
    };
    let manifests = format!(
        "{CLASSES}{svc}{}{}",
        ingress("direct", ""),
        ingress(
            "viaservice",
            "nginx.ingress.kubernetes.io/service-upstream: \"true\""
        ),
    );
    std::fs::write(dir.path().join("all.yaml"), manifests)?;
    let proxy = Proxy::start(dir.path(), port, &[])?;
    for _ in 0..3 {
        assert_eq!(proxy.get("direct.example.com", "/")?.pod(), "pod-1");
        assert_eq!(
            proxy.get("viaservice.example.com", "/")?.pod(),
            "kube-proxy-1"
        );
    }
    Ok(())
}

/// The error backend is told the request's id as the access log writes it, also when the client sent an empty
/// `X-Request-ID` (one is made, as ingress-nginx's `$req_id` does) and when it sent its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_error_backend_gets_the_logged_request_id() -> Result<()> {
    let app = echo("app-1", "default").await?;
    let errors = echo("errors-1", "default").await?;
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let anns = "nginx.ingress.kubernetes.io/custom-http-errors: \"404\", nginx.ingress.kubernetes.io/default-backend: errors";
    let manifests = format!(
        "{CLASSES}{}{}{}",
        service_yaml("default", "app", 80, &[&app]),
        service_yaml("default", "errors", 80, &[&errors]),
        ingress("app", "app", anns),
    );
    std::fs::write(dir.path().join("all.yaml"), manifests)?;
    let proxy = Proxy::start(dir.path(), port, &["--access-log", "json"])?;

    for (i, given) in ["", "given-7"].into_iter().enumerate() {
        let r = common::get(
            port,
            "app.example.com",
            "/status/404",
            &[("x-request-id", given)],
        )?;
        assert_eq!(r.pod(), "errors-1", "{}", r.text());
        let sent = r
            .echoed_header("x-request-id")
            .ok_or_else(|| anyhow::anyhow!("no x-request-id at the error backend: {}", r.text()))?;
        if given.is_empty() {
            assert_eq!(sent.len(), 32, "a made id: {sent:?}");
        } else {
            assert_eq!(sent, given);
        }
        // One line per request, written by another thread: wait for line i, for a bounded time.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let logged = loop {
            let out = proxy.stdout_text();
            if let Some(l) = out.lines().nth(i) {
                let v: serde_json::Value = serde_json::from_str(l)?;
                assert_eq!(v["path"], "/status/404", "{l}");
                break v["request_id"].as_str().unwrap_or_default().to_string();
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "no access-log line {i}: {out}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert_eq!(logged, sent);
    }
    Ok(())
}
