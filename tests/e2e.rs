//! End-to-end: the real `portcullis` binary in standalone mode, echo backends on loopback, requests over TCP.

mod common;

use anyhow::Result;
use common::{echo, free_port, service_yaml, Proxy, CLASSES};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

/// The shop: an Ingress and an HTTPRoute on the same port and host, as in a migration.
fn shop_manifests(port: u16, svc: &str) -> String {
    format!(
        "{CLASSES}{svc}
apiVersion: v1
kind: Namespace
metadata: {{name: shop, labels: {{team: shop}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: shop, namespace: shop}}
spec:
  defaultBackend:
    service: {{name: fallback, port: {{number: 80}}}}
  rules:
  - host: shop.example.com
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{name: http}}}}}}}}
      - {{path: /api, pathType: Prefix, backend: {{service: {{name: api-v1, port: {{number: 80}}}}}}}}
      - {{path: /exact, pathType: Exact, backend: {{service: {{name: api-v1, port: {{number: 80}}}}}}}}
      - {{path: /down, pathType: Prefix, backend: {{service: {{name: down, port: {{number: 80}}}}}}}}
      - {{path: /tie, pathType: Prefix, backend: {{service: {{name: api-v1, port: {{number: 80}}}}}}}}
  - host: \"*.shop.example.com\"
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: api-v1, port: {{number: 80}}}}}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: public, namespace: shop}}
spec:
  gatewayClassName: portcullis
  listeners:
  - {{name: http, port: {port}, protocol: HTTP}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: api, namespace: shop}}
spec:
  parentRefs: [{{name: public}}]
  hostnames: [shop.example.com]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /api/v2}}}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{{name: x-api-version, value: \"2\"}}]
        add: [{{name: x-added, value: \"yes\"}}]
        remove: [x-secret]
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        add: [{{name: x-served-by, value: portcullis}}]
    backendRefs: [{{name: api-v2, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /api}}, headers: [{{name: x-canary, value: always}}]}}]
    backendRefs: [{{name: api-v2, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /beta}}}}]
    filters:
    - type: URLRewrite
      urlRewrite:
        hostname: internal.example.com
        path: {{type: ReplacePrefixMatch, replacePrefixMatch: /api}}
    backendRefs:
    - {{name: api-v1, port: 80, weight: 50}}
    - {{name: api-v2, port: 80, weight: 50}}
    - {{name: web, port: 80, weight: 0}}
  - matches: [{{path: {{type: PathPrefix, value: /old-shop}}}}]
    filters:
    - type: RequestRedirect
      requestRedirect:
        path: {{type: ReplacePrefixMatch, replacePrefixMatch: /new-shop}}
        statusCode: 301
  - matches: [{{path: {{type: Exact, value: /secure}}}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {{scheme: https}}
  - matches: [{{path: {{type: PathPrefix, value: /broken}}}}]
    backendRefs: [{{name: does-not-exist, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /tie}}}}]
    backendRefs: [{{name: api-v2, port: 80}}]
  - matches: [{{path: {{type: Exact, value: /search}}, queryParams: [{{name: q, value: rust}}], method: GET}}]
    backendRefs: [{{name: api-v2, port: 80}}]
---
apiVersion: v1
kind: Service
metadata: {{name: down, namespace: shop}}
spec:
  ports: [{{name: http, port: 80}}]
---
"
    )
}

fn write(dir: &Path, name: &str, text: &str) -> Result<()> {
    // Write then rename, as editors and kubectl-style tools do, so the watcher never reads half a file.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join(name))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_rewrites_redirects_and_errors() -> Result<()> {
    let web_a = echo("web-7d9f8b6c4-aaaaa", "shop").await?;
    let web_b = echo("web-7d9f8b6c4-bbbbb", "shop").await?;
    let v1 = echo("api-v1-5c6d7e8f9-ccccc", "shop").await?;
    let v2 = echo("api-v2-6f7a8b9c0-ddddd", "shop").await?;
    let fallback = echo("fallback-1a2b3c4d5-eeeee", "shop").await?;
    let svc = [
        service_yaml("shop", "web", 80, &[&web_a, &web_b]),
        service_yaml("shop", "api-v1", 80, &[&v1]),
        service_yaml("shop", "api-v2", 80, &[&v2]),
        service_yaml("shop", "fallback", 80, &[&fallback]),
    ]
    .concat();
    let dir = tempfile::tempdir()?;
    let port = free_port();
    write(dir.path(), "shop.yaml", &shop_manifests(port, &svc))?;
    let proxy = Proxy::start(dir.path(), port, &[])?;

    tokio::task::spawn_blocking(move || -> Result<()> {
        let host = "shop.example.com";

        // Ingress prefix `/`, round-robin over both web pods.
        let pods: BTreeSet<String> = (0..4)
            .map(|_| proxy.get(host, "/catalog?page=2").map(|r| r.pod()))
            .collect::<Result<_>>()?;
        assert_eq!(
            pods,
            BTreeSet::from(["web-7d9f8b6c4-aaaaa".into(), "web-7d9f8b6c4-bbbbb".into()])
        );
        let r = proxy.get(host, "/catalog?page=2")?;
        assert_eq!(r.status, 200);
        let e = r.echo()?;
        assert_eq!(e["path"], "/catalog?page=2");
        assert_eq!(e["host"], "shop.example.com");
        assert_eq!(
            r.echoed_header("x-forwarded-for").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(
            r.echoed_header("x-forwarded-proto").as_deref(),
            Some("http")
        );
        assert_eq!(
            r.echoed_header("x-forwarded-host").as_deref(),
            Some("shop.example.com")
        );

        // Host matching ignores case and port; a wildcard Ingress host covers one label.
        assert!(proxy
            .get("SHOP.Example.COM:8080", "/x")?
            .pod()
            .starts_with("web-"));
        assert!(proxy
            .get("eu.shop.example.com", "/x")?
            .pod()
            .starts_with("api-v1-"));
        // Two labels in front of the wildcard: not covered, so the Ingress default backend answers.
        assert!(proxy
            .get("a.eu.shop.example.com", "/x")?
            .pod()
            .starts_with("fallback-"));
        // Unknown host: default backend.
        assert!(proxy
            .get("other.example.org", "/")?
            .pod()
            .starts_with("fallback-"));

        // Ingress Exact vs Prefix.
        assert!(proxy.get(host, "/exact")?.pod().starts_with("api-v1-"));
        assert!(proxy.get(host, "/exact/more")?.pod().starts_with("web-"));
        // Prefix is segment-wise: /apix is not under /api.
        assert!(proxy.get(host, "/apix")?.pod().starts_with("web-"));
        assert!(proxy.get(host, "/api/items")?.pod().starts_with("api-v1-"));

        // HTTPRoute /api/v2 beats the Ingress /api (longer prefix), with header filters both ways.
        let r = proxy.request(
            "GET",
            host,
            "/api/v2/items",
            &[("x-secret", "s3cr3t"), ("x-added", "first")],
            b"",
        )?;
        assert!(r.pod().starts_with("api-v2-"), "{}", r.text());
        assert_eq!(r.echoed_header("x-api-version").as_deref(), Some("2"));
        assert_eq!(r.echoed_header("x-secret"), None);
        let added = &r.echo()?["headers"]["X-Added"];
        assert_eq!(added, &serde_json::json!(["first", "yes"]));
        assert_eq!(r.header("x-served-by"), Some("portcullis"));

        // A header match outranks the Ingress's plain prefix on the same path.
        let r = proxy.request("GET", host, "/api/items", &[("x-canary", "always")], b"")?;
        assert!(r.pod().starts_with("api-v2-"));

        // Query parameter and method matches.
        assert!(proxy
            .get(host, "/search?q=rust")?
            .pod()
            .starts_with("api-v2-"));
        assert!(proxy.get(host, "/search?q=go")?.pod().starts_with("web-"));
        let r = proxy.request("POST", host, "/search?q=rust", &[], b"x")?;
        assert!(r.pod().starts_with("web-"));

        // Exact tie between the Ingress and the HTTPRoute: the HTTPRoute wins.
        assert!(proxy.get(host, "/tie/x")?.pod().starts_with("api-v2-"));

        // URL rewrite (prefix and host) and a weighted split; weight 0 never chosen.
        let mut seen = BTreeSet::new();
        for _ in 0..60 {
            let r = proxy.get(host, "/beta/items?x=1")?;
            assert_eq!(r.status, 200);
            let e = r.echo()?;
            assert_eq!(e["path"], "/api/items?x=1");
            assert_eq!(e["host"], "internal.example.com");
            seen.insert(r.pod().split('-').take(2).collect::<Vec<_>>().join("-"));
        }
        assert_eq!(
            seen,
            BTreeSet::from(["api-v1".to_string(), "api-v2".to_string()])
        );

        // Redirects.
        let r = proxy.get(host, "/old-shop/cart?id=7")?;
        assert_eq!(r.status, 301);
        assert_eq!(
            r.header("location"),
            Some(
                "http://shop.example.com:{port}/new-shop/cart?id=7"
                    .replace("{port}", &port.to_string())
                    .as_str()
            )
        );
        let r = proxy.get(host, "/secure")?;
        assert_eq!(r.status, 302);
        assert_eq!(
            r.header("location"),
            Some("https://shop.example.com/secure")
        );

        // Errors the specs define: unresolvable backendRef 500, no ready endpoints 503, no route 404.
        assert_eq!(proxy.get(host, "/broken")?.status, 500);
        assert_eq!(proxy.get(host, "/down/x")?.status, 503);

        // Request bodies are streamed to the backend.
        let body = vec![b'z'; 300_000];
        let r = proxy.request("PUT", host, "/upload", &[], &body)?;
        assert_eq!(r.status, 200);
        Ok(())
    })
    .await??;

    let got = web_a
        .received()
        .into_iter()
        .chain(web_b.received())
        .find(|r| r.path == "/upload")
        .map(|r| r.body.len());
    assert_eq!(got, Some(300_000));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_without_default_backend() -> Result<()> {
    let web = echo("web-7d9f8b6c4-aaaaa", "default").await?;
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let yaml = format!(
        "{CLASSES}{}
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: only}}
spec:
  rules:
  - host: a.example.com
    http:
      paths: [{{path: /app, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]
",
        service_yaml("default", "web", 80, &[&web])
    );
    write(dir.path(), "a.yaml", &yaml)?;
    let proxy = Proxy::start(dir.path(), port, &[])?;
    tokio::task::spawn_blocking(move || -> Result<()> {
        assert_eq!(proxy.get("a.example.com", "/app/1")?.status, 200);
        assert_eq!(proxy.get("a.example.com", "/other")?.status, 404);
        assert_eq!(proxy.get("b.example.com", "/app")?.status, 404);
        Ok(())
    })
    .await??;
    // No backend was contacted for the 404s.
    assert_eq!(web.received().len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_reload_and_bad_edits() -> Result<()> {
    let web = echo("web-7d9f8b6c4-aaaaa", "default").await?;
    let api = echo("api-5c6d7e8f9-bbbbb", "default").await?;
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let backends = [
        service_yaml("default", "web", 80, &[&web]),
        service_yaml("default", "api", 80, &[&api]),
    ]
    .concat();
    write(dir.path(), "00-base.yaml", &format!("{CLASSES}{backends}"))?;
    let ingress = |path: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: app}}
spec:
  rules:
  - host: app.example.com
    http:
      paths: [{{path: {path}, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]
"
        )
    };
    write(dir.path(), "10-app.yaml", &ingress("/one"))?;
    let proxy = Proxy::start(dir.path(), port, &[])?;
    let d = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let host = "app.example.com";
        assert_eq!(proxy.get(host, "/one")?.status, 200);
        assert_eq!(proxy.get(host, "/two")?.status, 404);

        // A new file with a new route: served within 2 s.
        write(
            &d,
            "20-new.yaml",
            "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: portcullis
  listeners: [{name: http, port: PORT, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: two}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /two}}]
    backendRefs: [{name: api, port: 80}]
"
            .replace("PORT", &port.to_string())
            .as_str(),
        )?;
        let took = proxy.wait_for(Duration::from_secs(2), || {
            proxy.get(host, "/two").is_ok_and(|r| r.status == 200)
        })?;
        eprintln!("new route served after {took:?}");

        // An edited file: the old path goes, the new one comes.
        write(&d, "10-app.yaml", &ingress("/three"))?;
        proxy.wait_for(Duration::from_secs(2), || {
            proxy.get(host, "/three").is_ok_and(|r| r.status == 200)
        })?;
        assert_eq!(proxy.get(host, "/one")?.status, 404);

        // A broken file: everything keeps serving, and the problem is reported with its file.
        write(&d, "10-app.yaml", "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: app\n")?;
        proxy.wait_for(Duration::from_secs(2), || {
            proxy
                .admin("/diagnostics")
                .is_ok_and(|r| r.text().contains("10-app.yaml"))
        })?;
        assert_eq!(proxy.get(host, "/three")?.status, 200);
        assert_eq!(proxy.get(host, "/two")?.status, 200);

        // An object that no longer deserializes keeps its last good version too.
        let gateway = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: portcullis
  listeners: [{name: http, port: PORT, protocol: HTTP}]
---
"
        .replace("PORT", &port.to_string());
        write(
            &d,
            "20-new.yaml",
            &format!("{gateway}apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: two}}\nspec: {{rules: 7}}\n"),
        )?;
        proxy.wait_for(Duration::from_secs(2), || {
            proxy
                .admin("/diagnostics")
                .is_ok_and(|r| r.text().contains("20-new.yaml"))
        })?;
        assert_eq!(proxy.get(host, "/two")?.status, 200);

        // A deleted file: its routes go.
        std::fs::remove_file(d.join("20-new.yaml"))?;
        proxy.wait_for(Duration::from_secs(2), || {
            proxy.get(host, "/two").is_ok_and(|r| r.status == 404)
        })?;
        let log = proxy.log_text();
        assert!(!log.contains("panicked"), "{log}");
        Ok(())
    })
    .await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let port = free_port();
    write(dir.path(), "a.yaml", CLASSES)?;
    let proxy = Proxy::start(dir.path(), port, &[])?;
    tokio::task::spawn_blocking(move || -> Result<()> {
        assert_eq!(proxy.admin("/healthz")?.status, 200);
        assert_eq!(proxy.admin("/readyz")?.status, 200);
        let c = proxy.admin("/config")?;
        assert_eq!(c.status, 200);
        let v: serde_json::Value = serde_json::from_slice(&c.body)?;
        assert_eq!(v["version"], 1);
        assert_eq!(v["listeners"][0]["port"], port);
        let l: serde_json::Value = serde_json::from_slice(&proxy.admin("/listeners")?.body)?;
        assert_eq!(l[0]["bound"], true);
        // One round at startup read the two classes (the file watcher may add rounds, never fewer objects).
        let r = common::rounds(proxy.admin)?;
        assert!(r.rounds >= 1, "{r:?}");
        assert_eq!(r.objects, 2, "{r:?}");
        assert_eq!(proxy.admin("/nope")?.status, 404);
        Ok(())
    })
    .await??;
    Ok(())
}

#[test]
fn validate_and_routes_commands() -> Result<()> {
    let bin = env!("CARGO_BIN_EXE_portcullis");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");

    let out = std::process::Command::new(bin)
        .arg("validate")
        .arg(&examples)
        .output()?;
    let stdout = String::from_utf8(out.stdout)?;
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("0 errors"), "{stdout}");

    let out = std::process::Command::new(bin)
        .args(["routes", "--json"])
        .arg(&examples)
        .output()?;
    assert!(out.status.success());
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let rows = rows.as_array().expect("rows");
    assert!(rows.iter().any(|r| r["origin"]
        .as_str()
        .is_some_and(|o| o.starts_with("HTTPRoute shop/api"))));
    assert!(rows.iter().any(|r| r["origin"]
        .as_str()
        .is_some_and(|o| o.starts_with("Ingress shop/shop"))));

    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("bad.yaml"),
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: bad}\nspec:\n  rules:\n  - host: a.com\n    http:\n      paths: [{path: nope, pathType: Prefix, backend: {service: {name: s, port: {number: 1}}}}]\n",
    )?;
    std::fs::write(dir.path().join("classes.yaml"), CLASSES)?;
    let out = std::process::Command::new(bin)
        .arg("validate")
        .arg(dir.path())
        .output()?;
    let stdout = String::from_utf8(out.stdout)?;
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("bad.yaml:8: error: Ingress default/bad: spec.rules[0].http.paths[0]: path \"nope\" must begin with '/'"),
        "{stdout}"
    );
    Ok(())
}

/// `validate` says why an object is not served (class or parent missing) and checks the fields of a route that
/// attaches nowhere, pointing at the field's line.
#[test]
fn validate_reports_what_is_not_served() -> Result<()> {
    let bin = env!("CARGO_BIN_EXE_portcullis");
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("classes.yaml"), CLASSES)?;
    std::fs::write(
        dir.path().join("lost.yaml"),
        "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: lost, namespace: default}
spec:
  ingressClassName: nope
  rules:
  - host: a.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: orphan, namespace: default}
spec:
  parentRefs: [{name: nogw}]
  rules:
  - matches:
    - path: {type: PathPrefix, value: /ok}
    - path: {type: RegularExpression, value: \"/a([\"}
    backendRefs:
    - name: web
      port: 80
      weight: -1
",
    )?;
    let out = std::process::Command::new(bin)
        .arg("validate")
        .arg(dir.path())
        .output()?;
    let stdout = String::from_utf8(out.stdout)?;
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    for want in [
        "lost.yaml:5: warning: Ingress default/lost: spec.ingressClassName: not served: IngressClass \"nope\" not found",
        "lost.yaml:16: warning: HTTPRoute default/orphan: spec.parentRefs[0]: not served through this parent: Gateway default/nogw not found",
        "lost.yaml:20: error: HTTPRoute default/orphan: spec.rules[0].matches[1]: invalid regular expression",
        "lost.yaml:24: error: HTTPRoute default/orphan: spec.rules[0].backendRefs[0].weight: -1 is negative",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
    Ok(())
}
