//! End-to-end: what the proxy says about requests. Per-route metrics at /metrics (labels by
//! `--metrics-labels`, series of a removed route gone after the reload), access-log lines on stdout (JSON and
//! ingress-nginx text), and the `Server` header on proxied and local answers (`--server-header`).

mod common;

use anyhow::{bail, Context, Result};
use common::{echo, free_port, service_yaml, Proxy, CLASSES};
use std::time::Duration;

fn manifests(port: u16, svc: &str, routes: &[&str]) -> String {
    let mut s = format!(
        "{CLASSES}{svc}
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: portcullis
  listeners: [{{name: http, port: {port}, protocol: HTTP}}]
---
"
    );
    for r in routes {
        s.push_str(&format!(
            "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {r}, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [{r}.example.com]
  rules:
  - backendRefs: [{{name: web, port: 80}}]
---
"
        ));
    }
    s
}

/// The value of the metric line that starts with `series` (labels in the order the text format sorts them).
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_logs_and_server_header() -> Result<()> {
    let backend = echo("web-1", "default").await?;
    let svc = service_yaml("default", "web", 80, &[&backend]);
    let port = free_port();
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("all.yaml");
    std::fs::write(&file, manifests(port, &svc, &["shop", "blog"]))?;
    let proxy = Proxy::start(
        dir.path(),
        port,
        &["--access-log", "json", "--metrics-labels", "route+backend"],
    )?;

    let mut made = Vec::new();
    for _ in 0..3 {
        let r = proxy.request(
            "GET",
            "shop.example.com",
            "/cart?token=secret",
            &[(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )],
            b"",
        )?;
        assert_eq!(r.status, 200);
        // The echo backend sends no Server header: ours is added.
        assert_eq!(r.header("server"), Some("portcullis"));
        // A request id was made and sent upstream.
        let id = r
            .echoed_header("x-request-id")
            .context("no x-request-id upstream")?;
        assert_eq!(id.len(), 32, "{id}");
        made.push(id);
    }
    let r = proxy.request(
        "POST",
        "blog.example.com",
        "/",
        &[("x-request-id", "given-1")],
        b"hello",
    )?;
    assert_eq!(r.status, 200);
    assert_eq!(r.echoed_header("x-request-id").as_deref(), Some("given-1"));
    let r = proxy.get("nothing.example.com", "/")?;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("server"), Some("portcullis"));

    let m = proxy.admin("/metrics")?.text();
    // Labels are sorted by name in the text format: backend, code, listener, method, route_*.
    let want = format!(
        r#"portcullis_requests_total{{backend="default/web:80",code="200",listener="*:{port}",method="GET",route_kind="HTTPRoute",route_name="shop",route_namespace="default"}}"#
    );
    assert_eq!(metric(&m, &want), Some(3.0), "{m}");
    let no_route = format!(
        r#"portcullis_requests_total{{backend="",code="404",listener="*:{port}",method="GET",route_kind="",route_name="",route_namespace=""}}"#
    );
    assert_eq!(metric(&m, &no_route), Some(1.0), "{m}");
    let bytes = format!(
        r#"portcullis_request_bytes_total{{backend="default/web:80",listener="*:{port}",route_kind="HTTPRoute",route_name="blog",route_namespace="default"}}"#
    );
    assert_eq!(metric(&m, &bytes), Some(5.0), "{m}");
    let ok = format!(
        r#"portcullis_upstream_requests_total{{backend="default/web:80",listener="*:{port}",result="ok",route_kind="HTTPRoute",route_name="shop",route_namespace="default"}}"#
    );
    assert_eq!(metric(&m, &ok), Some(3.0), "{m}");
    let hist = format!(
        r#"portcullis_request_duration_seconds_count{{backend="default/web:80",code_class="2xx",listener="*:{port}",route_kind="HTTPRoute",route_name="shop",route_namespace="default"}}"#
    );
    assert_eq!(metric(&m, &hist), Some(3.0), "{m}");
    assert!(!m.contains("cart"), "no path label: {m}");
    let active = format!(r#"portcullis_active_requests{{listener="*:{port}"}}"#);
    assert_eq!(metric(&m, &active), Some(0.0), "{m}");

    // Access log: one JSON line per request, query left out by default.
    proxy.wait_for(Duration::from_secs(5), || {
        proxy.stdout_text().lines().count() >= 5
    })?;
    let out = proxy.stdout_text();
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .with_context(|| format!("not JSON lines: {out}"))?;
    let first = &lines[0];
    assert_eq!(first["status"], 200, "{first}");
    assert_eq!(first["path"], "/cart", "{first}");
    assert_eq!(first["authority"], "shop.example.com");
    assert_eq!(first["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(first["route"]["kind"], "HTTPRoute");
    assert_eq!(first["route"]["name"], "shop");
    assert_eq!(first["backend"], "default/web:80");
    assert_eq!(first["protocol"], "HTTP/1.1");
    assert_eq!(
        first["upstreams"][0]["addr"],
        backend.http_addr().to_string()
    );
    assert_eq!(first["upstreams"][0]["status"], 200);
    assert_eq!(first["listener"], format!("*:{port}"));
    let post = lines
        .iter()
        .find(|l| l["method"] == "POST")
        .context("no POST line")?;
    assert_eq!(post["request_id"], "given-1");
    // The ids made here are the ones the backend saw.
    let logged: Vec<&str> = lines
        .iter()
        .filter(|l| l["method"] == "GET" && l["status"] == 200)
        .filter_map(|l| l["request_id"].as_str())
        .collect();
    assert_eq!(logged, made, "{out}");
    assert_eq!(post["bytes_in"], 5);
    let missing = lines
        .iter()
        .find(|l| l["status"] == 404)
        .context("no 404 line")?;
    assert_eq!(missing["reason"], "no_route", "{missing}");

    // The blog route goes away: its series go with it, shop's stay.
    std::fs::write(&file, manifests(port, &svc, &["shop"]))?;
    proxy.wait_for(Duration::from_secs(10), || {
        proxy
            .get("blog.example.com", "/")
            .is_ok_and(|r| r.status == 404)
    })?;
    let m = proxy.admin("/metrics")?.text();
    assert!(!m.contains(r#"route_name="blog""#), "{m}");
    assert_eq!(metric(&m, &want), Some(3.0), "{m}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_log_and_server_header_settings() -> Result<()> {
    let backend = echo("web-1", "default").await?;
    let svc = service_yaml("default", "web", 80, &[&backend]);
    let port = free_port();
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("all.yaml"),
        manifests(port, &svc, &["shop"]),
    )?;
    let proxy = Proxy::start(
        dir.path(),
        port,
        &[
            "--access-log",
            "text",
            "--access-log-query",
            "--server-header",
            "off",
            "--metrics-labels",
            "none",
        ],
    )?;
    let r = proxy.request(
        "GET",
        "shop.example.com",
        "/a?b=c",
        &[("user-agent", "test/1")],
        b"",
    )?;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("server"), None);
    let r = proxy.get("nothing.example.com", "/")?;
    assert_eq!(r.header("server"), None);
    proxy.wait_for(Duration::from_secs(5), || {
        proxy.stdout_text().lines().count() >= 2
    })?;
    let out = proxy.stdout_text();
    let line = out.lines().next().context("no line")?;
    // ingress-nginx's upstream format.
    if !line.starts_with("127.0.0.1 - - [") || !line.contains("\"GET /a?b=c HTTP/1.1\" 200 ") {
        bail!("unexpected text line: {line}");
    }
    if !line.contains("\"-\" \"test/1\" 0 ") || !line.contains("[default/web:80] [] ") {
        bail!("unexpected text line: {line}");
    }
    if !line.contains(&format!(" {} - ", backend.http_addr())) {
        bail!("no upstream address in: {line}");
    }
    let m = proxy.admin("/metrics")?.text();
    let series =
        format!(r#"portcullis_requests_total{{code="200",listener="*:{port}",method="GET"}}"#);
    assert_eq!(metric(&m, &series), Some(1.0), "{m}");
    assert!(!m.contains("route_name"), "{m}");
    Ok(())
}

/// `portcullis_open_connections`: connections held open on a listener are counted under its label, and no longer
/// once the client closes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connections_per_listener() -> Result<()> {
    let backend = echo("web-1", "default").await?;
    let svc = service_yaml("default", "web", 80, &[&backend]);
    let port = free_port();
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("all.yaml"),
        manifests(port, &svc, &["shop"]),
    )?;
    let proxy = Proxy::start(dir.path(), port, &[])?;
    proxy.wait_for(Duration::from_secs(10), || {
        proxy
            .get("shop.example.com", "/")
            .is_ok_and(|r| r.status == 200)
    })?;
    let series = format!("portcullis_open_connections{{listener=\"*:{port}\",protocol=\"http\"}}");
    let open = || {
        proxy
            .admin("/metrics")
            .ok()
            .and_then(|r| metric(&r.text(), &series))
    };
    let held = (0..3)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)))
        .collect::<std::io::Result<Vec<_>>>()?;
    proxy
        .wait_for(Duration::from_secs(10), || open() == Some(3.0))
        .with_context(|| format!("open connections: {:?}", open()))?;
    drop(held);
    proxy
        .wait_for(Duration::from_secs(10), || open() == Some(0.0))
        .with_context(|| format!("open connections after close: {:?}", open()))?;
    Ok(())
}
