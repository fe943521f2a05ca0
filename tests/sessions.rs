//! End-to-end: session persistence. An HTTPRoute rule's `sessionPersistence` and an Ingress's ingress-nginx
//! `affinity: cookie` pin a client to one of three echo endpoints through a cookie (or a header) the proxy issues;
//! a session whose endpoint dies is served elsewhere without an error, returns to its endpoint once it is back
//! (persistent keys, no change-on-failure), or gets a new cookie (change-on-failure).

mod common;

use anyhow::{Context, Result};
use common::{echo, free_port, ingress_yaml, service_yaml, Proxy, Response, CLASSES};
use proto_conformance::echo::{EchoConfig, EchoServer};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// The `name=value` of a Set-Cookie header for `name`, and its attributes.
fn set_cookie<'r>(r: &'r Response, name: &str) -> Option<(&'r str, &'r str)> {
    let v = r.header("set-cookie")?;
    let (pair, attrs) = v.split_once("; ").unwrap_or((v, ""));
    let value = pair.strip_prefix(name)?.strip_prefix('=')?;
    Some((value, attrs))
}

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
metadata: {{name: web, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [route.example.com]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /cart}}}}]
    sessionPersistence: {{sessionName: shop, absoluteTimeout: 1h, cookieConfig: {{lifetimeType: Permanent}}}}
    backendRefs: [{{name: web, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /api}}}}]
    sessionPersistence: {{type: Header, sessionName: X-Session}}
    backendRefs: [{{name: web, port: 80}}]
  - backendRefs: [{{name: web, port: 80}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: sticky
  namespace: default
  annotations:
    nginx.ingress.kubernetes.io/affinity: cookie
    nginx.ingress.kubernetes.io/session-cookie-change-on-failure: \"true\"
    nginx.ingress.kubernetes.io/session-cookie-max-age: \"600\"
spec:
  rules:
  - host: ingress.example.com
    http:
      paths:
      - {{path: /shop, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_stick_to_their_endpoint_and_survive_its_failure() -> Result<()> {
    let pods = ["web-a-1", "web-b-1", "web-c-1"];
    let mut servers: Vec<EchoServer> = Vec::new();
    for p in pods {
        servers.push(echo(p, "default").await?);
    }
    let addrs: Vec<_> = servers.iter().map(|s| s.http_addr()).collect();
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let refs: Vec<&EchoServer> = servers.iter().collect();
    let svc = service_yaml("default", "web", 80, &refs).replacen(
        "namespace: default}",
        "namespace: default, annotations: {portcullis.dev/ejection-time: 1s}}",
        1,
    );
    std::fs::write(dir.path().join("all.yaml"), manifests(port, &svc))?;
    let proxy = Proxy::start(dir.path(), port, &[])?;
    let get =
        |host: &str, path: &str, headers: &[(&str, &str)]| common::get(port, host, path, headers);

    // A rule without session persistence sets no cookie and spreads requests.
    let r = get("route.example.com", "/plain", &[])?;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("set-cookie"), None);

    // New sessions: each response sets the cookie; the same endpoint always gets the same key.
    let mut key_of: BTreeMap<String, String> = BTreeMap::new();
    for _ in 0..12 {
        let r = get("route.example.com", "/cart", &[])?;
        assert_eq!(r.status, 200, "{}", r.text());
        let (value, attrs) = set_cookie(&r, "shop").context("Set-Cookie shop")?;
        assert_eq!(value.len(), 16, "{value}");
        assert_eq!(attrs, "Path=/cart; Max-Age=3600; HttpOnly");
        let old = key_of.insert(r.pod(), value.to_string());
        assert!(old.is_none() || old.as_deref() == Some(value));
    }
    assert_eq!(
        key_of.len(),
        3,
        "round robin reached every endpoint: {key_of:?}"
    );

    // A session stays on its endpoint, and its responses set no new cookie.
    let (pod, key) = key_of
        .iter()
        .find(|(p, _)| p.starts_with("web-b"))
        .map(|(p, k)| (p.clone(), k.clone()))
        .context("web-b's key")?;
    let cookie = format!("other=1; shop={key}");
    for _ in 0..10 {
        let r = get("route.example.com", "/cart/items", &[("cookie", &cookie)])?;
        assert_eq!(r.status, 200);
        assert_eq!(r.pod(), pod);
        assert_eq!(r.header("set-cookie"), None);
    }
    // A key that names no endpoint starts a new session.
    let r = get(
        "route.example.com",
        "/cart",
        &[("cookie", "shop=00000000000000ff")],
    )?;
    assert!(set_cookie(&r, "shop").is_some());

    // Its endpoint dies: the session is served elsewhere, without an error and without a new cookie (the key
    // still names an endpoint of the backend), then returns once the endpoint is back.
    let b = servers.remove(1);
    b.shutdown_and_wait().await;
    for _ in 0..10 {
        let r = get("route.example.com", "/cart", &[("cookie", &cookie)])?;
        assert_eq!(r.status, 200, "{}\n{}", r.text(), proxy.log_text());
        assert_ne!(r.pod(), pod);
        assert_eq!(r.header("set-cookie"), None);
    }
    let b = EchoServer::start(EchoConfig::new(pods[1], "default", addrs[1])).await?;
    let back = Instant::now();
    proxy.wait_for(Duration::from_secs(15), || {
        get("route.example.com", "/cart", &[("cookie", &cookie)]).is_ok_and(|r| r.pod() == pod)
    })?;
    assert!(back.elapsed() < Duration::from_secs(15));

    // Header sessions: the key comes back in the header and pins the same way.
    let r = get("route.example.com", "/api", &[])?;
    let key = r
        .header("x-session")
        .context("x-session header")?
        .to_string();
    assert_eq!(r.header("set-cookie"), None);
    let pod = r.pod();
    for _ in 0..6 {
        let r = get("route.example.com", "/api", &[("x-session", &key)])?;
        assert_eq!(r.pod(), pod);
        assert_eq!(r.header("x-session"), None);
    }

    // ingress-nginx affinity (balanced, change-on-failure): the cookie Path is the Ingress path, keys are random
    // (two sessions on one endpoint get different keys), a session stays put.
    let mut keys = BTreeSet::new();
    let mut first = None;
    for _ in 0..6 {
        let r = get("ingress.example.com", "/shop", &[])?;
        assert_eq!(r.status, 200);
        let (value, attrs) = set_cookie(&r, "INGRESSCOOKIE").context("INGRESSCOOKIE")?;
        assert_eq!(attrs, "Path=/shop; Max-Age=600; HttpOnly");
        keys.insert(value.to_string());
        first.get_or_insert((value.to_string(), r.pod()));
    }
    assert_eq!(keys.len(), 6, "balanced keys are random: {keys:?}");
    let (key, pod) = first.context("a session")?;
    let cookie = format!("INGRESSCOOKIE={key}");
    for _ in 0..10 {
        let r = get("ingress.example.com", "/shop/x", &[("cookie", &cookie)])?;
        assert_eq!(r.pod(), pod);
        assert_eq!(r.header("set-cookie"), None);
    }
    // Its endpoint dies: the request is retried elsewhere and, with change-on-failure, the client gets a cookie
    // for the endpoint that answered; that cookie then sticks.
    servers.insert(1, b);
    let i = pods
        .iter()
        .position(|p| *p == pod)
        .context("the session's pod")?;
    servers.remove(i).shutdown_and_wait().await;
    let r = get("ingress.example.com", "/shop", &[("cookie", &cookie)])?;
    assert_eq!(r.status, 200, "{}", proxy.log_text());
    assert_ne!(r.pod(), pod);
    let (moved, _) = set_cookie(&r, "INGRESSCOOKIE").context("a new cookie on failure")?;
    assert_ne!(moved, key);
    let new_pod = r.pod();
    let cookie = format!("INGRESSCOOKIE={moved}");
    for _ in 0..6 {
        let r = get("ingress.example.com", "/shop", &[("cookie", &cookie)])?;
        assert_eq!(r.pod(), new_pod);
    }
    Ok(())
}

/// ingress-nginx canaries with cookie affinity: by default (`affinity-canary-behavior: sticky`) a session that
/// went to the canary stays there whatever the weight draws; with `legacy` the weight decides on every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_sessions_stick_unless_legacy() -> Result<()> {
    let main = echo("main-1", "default").await?;
    let canary = echo("canary-1", "default").await?;
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let pair = |host: &str, behavior: &str| {
        let affinity = [
            ("nginx.ingress.kubernetes.io/affinity", "cookie"),
            ("nginx.ingress.kubernetes.io/affinity-mode", "persistent"),
            (
                "nginx.ingress.kubernetes.io/affinity-canary-behavior",
                behavior,
            ),
        ];
        let canary = [
            ("nginx.ingress.kubernetes.io/canary", "true"),
            ("nginx.ingress.kubernetes.io/canary-weight", "50"),
        ];
        let h = format!("{host}.example.com");
        let canary_name = format!("{host}-canary");
        ingress_yaml("default", host, &h, "/", "main", &affinity)
            + &ingress_yaml("default", &canary_name, &h, "/", "canary", &canary)
    };
    let manifests = format!(
        "{CLASSES}{}{}{}{}",
        service_yaml("default", "main", 80, &[&main]),
        service_yaml("default", "canary", 80, &[&canary]),
        pair("sticky", "sticky"),
        pair("legacy", "legacy"),
    );
    std::fs::write(dir.path().join("all.yaml"), manifests)?;
    let _proxy = Proxy::start(dir.path(), port, &[])?;
    // A session that starts on the canary (the weight draws it half the time).
    let canary_cookie = |host: &str| -> Result<String> {
        for _ in 0..60 {
            let r = common::get(port, host, "/", &[])?;
            if r.pod() == "canary-1" {
                let (value, _) = set_cookie(&r, "INGRESSCOOKIE").context("a session cookie")?;
                return Ok(format!("INGRESSCOOKIE={value}"));
            }
        }
        anyhow::bail!("the canary never drew in 60 requests")
    };
    let cookie = canary_cookie("sticky.example.com")?;
    for _ in 0..20 {
        let r = common::get(port, "sticky.example.com", "/", &[("cookie", &cookie)])?;
        assert_eq!(
            r.pod(),
            "canary-1",
            "sticky: the session stays on the canary"
        );
    }
    let cookie = canary_cookie("legacy.example.com")?;
    let pods: BTreeSet<String> = (0..30)
        .map(|_| {
            common::get(port, "legacy.example.com", "/", &[("cookie", &cookie)]).map(|r| r.pod())
        })
        .collect::<Result<_>>()?;
    assert!(
        pods.contains("main-1"),
        "legacy: the weight still sends some to main: {pods:?}"
    );
    Ok(())
}
