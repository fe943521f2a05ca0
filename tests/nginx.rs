//! End-to-end: ingress-nginx Ingresses taken over with `--ingress-nginx-class nginx`, served by the real binary
//! to echo backends, each annotation's behaviour checked on the wire.

mod common;

use anyhow::{Context, Result};
use common::{echo, free_port, service_yaml, Proxy, Response};
use std::path::Path;
use std::time::Duration;

const CLASS: &str = "\
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: nginx}
spec: {controller: k8s.io/ingress-nginx}
---
";

/// The demo certificate for shop.example.com (examples/50-tls.yaml), so that host has TLS of its own.
fn tls_secret() -> Result<String> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/50-tls.yaml"),
    )?;
    Ok(format!("{text}\n---\n"))
}

/// One Ingress of class nginx with `annotations` (YAML lines, indented by 4) and `paths` (Prefix unless given
/// `path:type`), all to `svc`.
fn ingress(
    name: &str,
    host: &str,
    annotations: &[(&str, &str)],
    paths: &[&str],
    svc: &str,
) -> String {
    let mut a = String::new();
    for (k, v) in annotations {
        a.push_str(&format!("    nginx.ingress.kubernetes.io/{k}: {v:?}\n"));
    }
    let anns = if a.is_empty() {
        String::new()
    } else {
        format!("  annotations:\n{a}")
    };
    let mut p = String::new();
    for path in paths {
        let (path, ty) = path.split_once(':').unwrap_or((path, "Prefix"));
        p.push_str(&format!(
            "      - {{path: \"{path}\", pathType: {ty}, backend: {{service: {{name: {svc}, port: {{number: 80}}}}}}}}\n"
        ));
    }
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: shop\n{anns}spec:\n  ingressClassName: nginx\n  rules:\n  - host: {host}\n    http:\n      paths:\n{p}---\n"
    )
}

fn write(dir: &Path, name: &str, text: &str) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join(name))?;
    Ok(())
}

fn header<'r>(r: &'r Response, name: &str) -> &'r str {
    r.header(name).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_nginx_annotations_end_to_end() -> Result<()> {
    let v1 = echo("web-v1-aaaaa", "shop").await?;
    let v2 = echo("web-v2-bbbbb", "shop").await?;
    let auth = echo("auth-ccccc", "shop").await?;
    let auth_port = auth.http_addr().port();
    let svc = [
        service_yaml("shop", "web", 80, &[&v1]),
        service_yaml("shop", "web-v2", 80, &[&v2]),
    ]
    .concat();
    let users = "apiVersion: v1\nkind: Secret\nmetadata: {name: users, namespace: shop}\ntype: Opaque\nstringData:\n  auth: |\n    alice:$apr1$xyz$HXgo9gtz4gpj4JWTLYmjB0\n---\n";
    let ingresses = [
        ingress(
            "rewrite",
            "api.example.com",
            &[("use-regex", "true"), ("rewrite-target", "/v1/$1"), ("x-forwarded-prefix", "/api")],
            &["/api/(.*):ImplementationSpecific"],
            "web",
        ),
        ingress("static", "api.example.com", &[], &["/static:Exact"], "web-v2"),
        // shop.example.com has a certificate: plain HTTP is redirected (308) by default.
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: shop, namespace: shop}\nspec:\n  ingressClassName: nginx\n  tls: [{hosts: [shop.example.com], secretName: shop-tls}]\n  rules:\n  - host: shop.example.com\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}\n---\n"
            .to_string(),
        ingress("moved", "moved.example.com", &[("permanent-redirect", "https://new.example.com/x")], &["/"], "web"),
        ingress(
            "temp",
            "temp.example.com",
            &[("temporal-redirect", "https://t.example.com/"), ("temporal-redirect-code", "307")],
            &["/"],
            "web",
        ),
        ingress("root", "root.example.com", &[("app-root", "/app")], &["/app"], "web"),
        ingress("docs", "docs.example.com", &[], &["/guide/"], "web"),
        ingress(
            "limits",
            "limits.example.com",
            &[("proxy-body-size", "1k"), ("upstream-vhost", "internal.example.com")],
            &["/"],
            "web",
        ),
        ingress("deny", "deny.example.com", &[("denylist-source-range", "127.0.0.0/8")], &["/"], "web"),
        ingress("allow", "allow.example.com", &[("whitelist-source-range", "10.0.0.0/8")], &["/"], "web"),
        ingress("allow-me", "allowme.example.com", &[("allowlist-source-range", "127.0.0.1")], &["/"], "web"),
        ingress(
            "cors",
            "cors.example.com",
            &[("enable-cors", "true"), ("cors-allow-origin", "https://app.example.com")],
            &["/"],
            "web",
        ),
        ingress("main", "canary.example.com", &[], &["/"], "web"),
        ingress(
            "main-canary",
            "canary.example.com",
            &[("canary", "true"), ("canary-by-header", "X-Canary"), ("canary-by-cookie", "beta"), ("canary-weight", "0")],
            &["/"],
            "web-v2",
        ),
        ingress("all", "all.example.com", &[], &["/"], "web"),
        ingress(
            "all-canary",
            "all.example.com",
            &[("canary", "true"), ("canary-weight", "100")],
            &["/"],
            "web-v2",
        ),
        ingress(
            "basic",
            "basic.example.com",
            &[("auth-type", "basic"), ("auth-secret", "users"), ("auth-realm", "Staff only")],
            &["/"],
            "web",
        ),
        ingress(
            "ext",
            "ext.example.com",
            &[
                ("auth-url", &format!("http://127.0.0.1:{auth_port}/check")),
                ("auth-response-headers", "X-User"),
            ],
            &["/"],
            "web",
        ),
        ingress(
            "ext-signin",
            "signin.example.com",
            &[
                ("auth-url", &format!("http://127.0.0.1:{auth_port}/status/401")),
                ("auth-signin", "https://login.example.com/start"),
            ],
            &["/"],
            "web",
        ),
        ingress(
            "ext-forbidden",
            "forbidden.example.com",
            &[("auth-url", &format!("http://127.0.0.1:{auth_port}/status/403"))],
            &["/"],
            "web",
        ),
        ingress(
            "rate",
            "rate.example.com",
            &[("limit-rps", "1"), ("limit-burst-multiplier", "1")],
            &["/"],
            "web",
        ),
        ingress(
            "alias",
            "alias.example.com",
            &[("server-alias", "other-name.example.com"), ("from-to-www-redirect", "true")],
            &["/"],
            "web-v2",
        ),
    ]
    .concat();
    let dir = tempfile::tempdir()?;
    let port = free_port();
    write(
        dir.path(),
        "all.yaml",
        &format!("{CLASS}{}{svc}{users}{ingresses}", tls_secret()?),
    )?;
    let https = free_port();
    let proxy = Proxy::start(
        dir.path(),
        port,
        &[
            "--ingress-nginx-class",
            "nginx",
            "--https-port",
            &https.to_string(),
        ],
    )?;
    let dir_path = dir.path().to_path_buf();

    tokio::task::spawn_blocking(move || -> Result<()> {
        // rewrite-target with captures, in regex mode; the query string is kept; X-Forwarded-Prefix goes with it.
        let r = proxy.get("api.example.com", "/API/users/7?full=1")?;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.echo()?["path"], "/v1/users/7?full=1");
        assert_eq!(r.echoed_header("x-forwarded-prefix").as_deref(), Some("/api"));
        // The other Ingress of the host became a case-insensitive prefix regex, even though it is Exact.
        let r = proxy.get("api.example.com", "/STATIC/more")?;
        assert_eq!(r.pod(), "web-v2-bbbbb");
        assert_eq!(r.echo()?["path"], "/STATIC/more");

        // ssl-redirect (on by default in the profile) for a host with its own certificate: 308, no port, one
        // trailing slash dropped.
        let r = proxy.get("shop.example.com", "/cart/?id=1")?;
        assert_eq!(r.status, 308);
        assert_eq!(header(&r, "location"), "https://shop.example.com/cart/?id=1");
        let r = proxy.get("shop.example.com", "/cart/")?;
        assert_eq!(header(&r, "location"), "https://shop.example.com/cart");
        // No certificate: served.
        assert_eq!(proxy.get("moved.example.com", "/")?.status, 301);

        // permanent-redirect: the URL as given, no query added.
        let r = proxy.get("moved.example.com", "/a?b=c")?;
        assert_eq!((r.status, header(&r, "location")), (301, "https://new.example.com/x"));
        let r = proxy.get("temp.example.com", "/")?;
        assert_eq!((r.status, header(&r, "location")), (307, "https://t.example.com/"));

        // app-root: / only.
        let r = proxy.get("root.example.com", "/")?;
        assert_eq!(r.status, 302);
        assert_eq!(header(&r, "location"), "http://root.example.com/app");
        assert_eq!(proxy.get("root.example.com", "/app/x")?.status, 200);

        // The trailing-slash rule: /guide answers 301 to /guide/.
        let r = proxy.get("docs.example.com", "/guide?x=1")?;
        assert_eq!((r.status, header(&r, "location")), (301, "http://docs.example.com/guide/?x=1"));
        assert_eq!(proxy.get("docs.example.com", "/guide/intro")?.status, 200);

        // proxy-body-size 1k: 413 by Content-Length; upstream-vhost sets Host.
        let r = proxy.request("POST", "limits.example.com", "/", &[], &[b'x'; 2048])?;
        assert_eq!(r.status, 413);
        let r = proxy.request("POST", "limits.example.com", "/", &[], &[b'x'; 512])?;
        assert_eq!(r.status, 200);
        assert_eq!(r.echo()?["host"], "internal.example.com");

        // Source ranges: 403 outside the allowlist or inside the denylist.
        assert_eq!(proxy.get("deny.example.com", "/")?.status, 403);
        assert_eq!(proxy.get("allow.example.com", "/")?.status, 403);
        assert_eq!(proxy.get("allowme.example.com", "/")?.status, 200);

        // CORS as ingress-nginx does it: any OPTIONS from an allowed origin is answered 204 here.
        let r = proxy.request("OPTIONS", "cors.example.com", "/", &[("origin", "https://app.example.com")], b"")?;
        assert_eq!(r.status, 204);
        assert_eq!(header(&r, "access-control-allow-origin"), "https://app.example.com");
        assert_eq!(header(&r, "access-control-allow-credentials"), "true");
        let r = proxy.request("GET", "cors.example.com", "/", &[("origin", "https://app.example.com")], b"")?;
        assert_eq!(r.status, 200);
        assert_eq!(header(&r, "access-control-allow-origin"), "https://app.example.com");
        let r = proxy.request("GET", "cors.example.com", "/", &[("origin", "https://evil.example.com")], b"")?;
        assert_eq!(r.header("access-control-allow-origin"), None);

        // Canary: header first (always / never), then cookie, then weight (0 here, 100 on all.example.com).
        let pod = |h: &[(&str, &str)]| -> Result<String> {
            Ok(proxy.request("GET", "canary.example.com", "/", h, b"")?.pod())
        };
        assert_eq!(pod(&[])?, "web-v1-aaaaa");
        assert_eq!(pod(&[("x-canary", "always")])?, "web-v2-bbbbb");
        assert_eq!(pod(&[("x-canary", "never"), ("cookie", "beta=always")])?, "web-v1-aaaaa");
        assert_eq!(pod(&[("cookie", "a=1; beta=always")])?, "web-v2-bbbbb");
        for _ in 0..5 {
            assert_eq!(proxy.get("all.example.com", "/")?.pod(), "web-v2-bbbbb");
        }

        // Basic auth: 401 with the realm; the right password passes and Authorization is not forwarded.
        let r = proxy.get("basic.example.com", "/")?;
        assert_eq!(r.status, 401);
        assert_eq!(header(&r, "www-authenticate"), "Basic realm=\"Staff only\"");
        let wrong = format!("Basic {}", b64("alice:nope"));
        assert_eq!(proxy.request("GET", "basic.example.com", "/", &[("authorization", &wrong)], b"")?.status, 401);
        let right = format!("Basic {}", b64("alice:secret"));
        let r = proxy.request("GET", "basic.example.com", "/", &[("authorization", &right)], b"")?;
        assert_eq!(r.status, 200);
        assert_eq!(r.echoed_header("authorization"), None);

        // External auth: 2xx passes and the named response header replaces the client's; 401 with sign-in
        // redirects with rd=; 403 denies.
        let r = proxy.request(
            "GET",
            "ext.example.com",
            "/page?q=1",
            &[("x-user", "mallory"), ("x-echo-set-header", "X-User:alice")],
            b"",
        )?;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.echoed_header("x-user").as_deref(), Some("alice"));
        let r = proxy.get("signin.example.com", "/page?q=1")?;
        assert_eq!(r.status, 302);
        assert_eq!(
            header(&r, "location"),
            "https://login.example.com/start?rd=http://signin.example.com%2Fpage%3Fq%3D1"
        );
        assert_eq!(proxy.get("forbidden.example.com", "/")?.status, 403);

        // limit-rps 1 with a burst of 1: the third request at once is refused with 503.
        let statuses: Vec<u16> = (0..3)
            .map(|_| proxy.get("rate.example.com", "/").map(|r| r.status))
            .collect::<Result<_>>()?;
        assert_eq!(statuses, [200, 200, 503]);

        // server-alias serves the host's paths; from-to-www-redirect sends www.alias.example.com to the host.
        assert_eq!(proxy.get("other-name.example.com", "/")?.pod(), "web-v2-bbbbb");
        let r = proxy.get("www.alias.example.com", "/x/")?;
        assert_eq!(r.status, 308);
        assert_eq!(header(&r, "location"), format!("http://alias.example.com:{port}/x"));

        // A refused annotation: the Ingress keeps its last good version; once fixed, the new one serves.
        let text = std::fs::read_to_string(dir_path.join("all.yaml"))?;
        let broken = text.replace(
            "nginx.ingress.kubernetes.io/permanent-redirect: \"https://new.example.com/x\"",
            "nginx.ingress.kubernetes.io/permanent-redirect: \"https://new.example.com/y\"\n    nginx.ingress.kubernetes.io/permanent-redirect-code: \"abc\"",
        );
        assert_ne!(broken, text);
        write(&dir_path, "all.yaml", &broken)?;
        proxy.wait_for(Duration::from_secs(10), || {
            proxy
                .admin("/diagnostics")
                .is_ok_and(|r| r.text().contains("permanent-redirect-code"))
        })?;
        let r = proxy.get("moved.example.com", "/")?;
        assert_eq!((r.status, header(&r, "location")), (301, "https://new.example.com/x"));
        assert!(proxy.admin("/diagnostics")?.text().contains("its last good version keeps serving"));
        let fixed = broken.replace("permanent-redirect-code: \"abc\"", "permanent-redirect-code: \"308\"");
        write(&dir_path, "all.yaml", &fixed)?;
        proxy.wait_for(Duration::from_secs(10), || {
            proxy
                .get("moved.example.com", "/")
                .is_ok_and(|r| r.status == 308 && header(&r, "location") == "https://new.example.com/y")
        })?;
        Ok(())
    })
    .await??;
    Ok(())
}

/// A Service `shop/{name}` port 80 whose one endpoint is `addr` (a TLS listener, here).
fn port_service(name: &str, addr: std::net::SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  ports: [{{name: p, port: 80}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}\n  namespace: shop\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{name: p, port: {}}}]\nendpoints: [{{addresses: [{}]}}]\n---\n",
        addr.port(),
        addr.ip()
    )
}

/// A CA: its PEM and its issuer.
struct Ca {
    pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

fn ca(name: &str) -> Result<Ca> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key)?;
    Ok(Ca {
        pem: cert.pem(),
        issuer: rcgen::Issuer::new(params, key),
    })
}

/// A leaf certificate for `names`, signed by `ca`: (cert PEM, key PEM).
fn leaf(ca: &Ca, names: &[&str]) -> Result<(String, String)> {
    let key = rcgen::KeyPair::generate()?;
    let params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
    let cert = params.signed_by(&key, &ca.issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn indent(pem: &str) -> String {
    pem.lines().map(|l| format!("    {l}\n")).collect()
}

/// A Secret of the shop namespace with the given PEM entries (`ca.crt`, `tls.crt`, `tls.key`).
fn pem_secret(name: &str, entries: &[(&str, &str)]) -> String {
    let mut s = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: shop}}\ntype: kubernetes.io/tls\nstringData:\n"
    );
    for (k, v) in entries {
        s.push_str(&format!("  {k}: |\n{}", indent(v)));
    }
    s.push_str("---\n");
    s
}

/// `backend-protocol: HTTPS`/`GRPCS` and `proxy-ssl-*`, on the wire: TLS echo backends record the SNI, version,
/// cipher suite and client certificate of the proxy's connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_nginx_backend_tls() -> Result<()> {
    use proto_conformance::echo::grpc::{method_path, GrpcEchoConfig, GrpcEchoServer};
    use proto_conformance::echo::{EchoConfig, EchoServer, EchoTls, PodIdentity};
    use proto_conformance::harness::client::ClientContext;
    use proto_conformance::harness::grpc::{call, code_name, RpcOutcome, RpcSpec};

    let backend_ca = ca("backend ca")?;
    let other_ca = ca("unrelated ca")?;
    let client_ca = ca("client ca")?;
    let server_cert = leaf(&backend_ca, &["backend.example.com"])?;
    let client_cert = leaf(&client_ca, &["proxy.example.com"])?;
    let self_signed = rcgen::generate_simple_self_signed(vec!["self.example.com".to_string()])?;
    let tls_echo = |pod: &str, cert: (String, String), client_ca: Option<String>| {
        let mut cfg = EchoConfig::new(pod, "shop", "127.0.0.1:0".parse().expect("an address"));
        cfg.https = Some(EchoTls {
            addr: "127.0.0.1:0".parse().expect("an address"),
            cert_pem: cert.0,
            key_pem: cert.1,
            client_ca_pem: client_ca,
        });
        EchoServer::start(cfg)
    };
    let unverified = tls_echo(
        "self-signed-aaaaa",
        (
            self_signed.cert.pem(),
            self_signed.signing_key.serialize_pem(),
        ),
        None,
    )
    .await?;
    let secure = tls_echo(
        "secure-bbbbb",
        server_cert.clone(),
        Some(client_ca.pem.clone()),
    )
    .await?;
    let grpcs = GrpcEchoServer::start(GrpcEchoConfig {
        identity: PodIdentity::new("grpcs-ccccc", "shop"),
        addr: "127.0.0.1:0".parse()?,
        tls: Some(EchoTls {
            addr: "127.0.0.1:0".parse()?,
            cert_pem: server_cert.0.clone(),
            key_pem: server_cert.1.clone(),
            client_ca_pem: None,
        }),
        log_to_stdout: false,
    })
    .await?;
    let https_addr = |e: &EchoServer| e.https_addr().context("https listener");
    let svc = [
        port_service("self-signed", https_addr(&unverified)?),
        port_service("secure", https_addr(&secure)?),
        port_service("grpcs", grpcs.tls_addr().context("gRPC TLS listener")?),
        pem_secret(
            "backend-ca",
            &[
                ("ca.crt", &backend_ca.pem),
                ("tls.crt", &client_cert.0),
                ("tls.key", &client_cert.1),
            ],
        ),
        pem_secret("other-ca", &[("ca.crt", &other_ca.pem)]),
    ]
    .concat();
    let checked = [
        ("backend-protocol", "HTTPS"),
        ("proxy-ssl-secret", "shop/backend-ca"),
        ("proxy-ssl-verify", "on"),
        ("proxy-ssl-name", "backend.example.com"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut v = checked.to_vec();
        v.extend_from_slice(extra);
        v
    };
    let ingresses = [
        // The same Service port, plain: cleartext HTTP to a TLS listener fails.
        ingress("plain", "plain.example.com", &[], &["/"], "self-signed"),
        ingress(
            "unverified",
            "unverified.example.com",
            &[("backend-protocol", "HTTPS")],
            &["/"],
            "self-signed",
        ),
        ingress(
            "verified",
            "verified.example.com",
            &with(&[("proxy-ssl-server-name", "on")]),
            &["/"],
            "secure",
        ),
        ingress("no-sni", "nosni.example.com", &checked, &["/"], "secure"),
        ingress(
            "tls13",
            "tls13.example.com",
            &with(&[("proxy-ssl-protocols", "TLSv1.3")]),
            &["/"],
            "secure",
        ),
        ingress(
            "cipher",
            "cipher.example.com",
            &with(&[("proxy-ssl-ciphers", "ECDHE-ECDSA-AES256-GCM-SHA384")]),
            &["/"],
            "secure",
        ),
        ingress(
            "wrong-ca",
            "wrongca.example.com",
            &[
                ("backend-protocol", "HTTPS"),
                ("proxy-ssl-secret", "shop/other-ca"),
                ("proxy-ssl-verify", "on"),
                ("proxy-ssl-name", "backend.example.com"),
            ],
            &["/"],
            "secure",
        ),
        // As in ingress-nginx: without proxy-ssl-name the certificate must carry "upstream_balancer".
        ingress(
            "no-name",
            "noname.example.com",
            &[
                ("backend-protocol", "HTTPS"),
                ("proxy-ssl-secret", "shop/backend-ca"),
                ("proxy-ssl-verify", "on"),
            ],
            &["/"],
            "secure",
        ),
        ingress(
            "missing-secret",
            "missing.example.com",
            &[
                ("backend-protocol", "HTTPS"),
                ("proxy-ssl-secret", "shop/nothing"),
            ],
            &["/"],
            "self-signed",
        ),
        ingress(
            "grpcs",
            "grpcs.example.com",
            &[("backend-protocol", "GRPCS")],
            &["/"],
            "grpcs",
        ),
    ]
    .concat();
    let dir = tempfile::tempdir()?;
    let port = free_port();
    write(dir.path(), "all.yaml", &format!("{CLASS}{svc}{ingresses}"))?;
    let proxy = std::sync::Arc::new(
        tokio::task::spawn_blocking(move || {
            Proxy::start(dir.path(), port, &["--ingress-nginx-class", "nginx"]).map(|p| (p, dir))
        })
        .await??,
    );
    let p = proxy.clone();
    let client_pem = client_cert.0.clone();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let proxy = &p.0;
        let log = || proxy.log_text();
        let tls = |host: &str| -> Result<serde_json::Value> {
            let r = proxy.get(host, "/")?;
            anyhow::ensure!(r.status == 200, "{host}: {} {}\n{}", r.status, r.text(), log());
            Ok(r.echo()?["tls"].clone())
        };
        // HTTPS alone: TLS to a self-signed certificate, not checked, no SNI (nginx's defaults).
        let t = tls("unverified.example.com")?;
        assert_eq!(t["serverName"], "", "{t}");
        assert_eq!(t["version"], "TLSv1.3", "{t}");
        // Other Ingresses naming the same Service port keep its own settings: cleartext, which a TLS listener
        // does not answer.
        assert_eq!(proxy.get("plain.example.com", "/")?.status, 502);

        // Checked against the Secret's ca.crt and proxy-ssl-name, sent as SNI with proxy-ssl-server-name on; the
        // Secret's tls.crt is presented; TLS 1.2 only (proxy-ssl-protocols' default).
        let t = tls("verified.example.com")?;
        assert_eq!(t["serverName"], "backend.example.com", "{t}");
        assert_eq!(t["version"], "TLSv1.2", "{t}");
        let peer = t["peerCertificates"][0].as_str().unwrap_or("");
        assert_eq!(peer.trim(), client_pem.trim());
        // proxy-ssl-server-name off (the default): checked, no SNI.
        let t = tls("nosni.example.com")?;
        assert_eq!(t["serverName"], "", "{t}");
        // proxy-ssl-protocols and proxy-ssl-ciphers.
        assert_eq!(tls("tls13.example.com")?["version"], "TLSv1.3");
        let t = tls("cipher.example.com")?;
        assert_eq!(t["cipherSuite"], "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "{t}");

        // Another CA, or the name nginx checks without proxy-ssl-name: the handshake fails, 502.
        assert_eq!(proxy.get("wrongca.example.com", "/")?.status, 502);
        assert_eq!(proxy.get("noname.example.com", "/")?.status, 502);
        // A proxy-ssl-secret that does not exist denies the Ingress's paths.
        assert_eq!(proxy.get("missing.example.com", "/")?.status, 503);

        // Each setting is a variant of the Service port.
        let ups = proxy.admin("/upstreams")?.text();
        for key in [
            "shop/self-signed:80\"",
            "shop/self-signed:80#protocol=https\"",
            "shop/secure:80#client-cert=Secret shop/backend-ca,protocol=https,proxy-ssl=shop/backend-ca,verify,sni,name=backend.example.com",
        ] {
            assert!(ups.contains(key), "{key} not in {ups}");
        }
        let diags = proxy.admin("/diagnostics")?.text();
        assert!(diags.contains("Secret shop/nothing not found"), "{diags}");
        assert!(diags.contains("upstream_balancer"), "{diags}");
        Ok(())
    })
    .await??;

    // GRPCS: TLS with ALPN h2, not checked, no SNI.
    let o = call(
        &RpcSpec {
            connect: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            tls: None,
            authority: "grpcs.example.com".into(),
            path: method_path("Echo"),
            metadata: Vec::new(),
            timeout: Duration::from_secs(10),
        },
        &ClientContext::default(),
    )
    .await;
    let RpcOutcome::Status {
        code,
        response: Some(resp),
        ..
    } = &o
    else {
        panic!("no answer: {}\n{}", o.describe(), proxy.0.log_text());
    };
    assert_eq!(code_name(*code), "OK", "{}", o.describe());
    let t = resp
        .assertions
        .as_ref()
        .and_then(|a| a.tls_assertions.as_ref())
        .context("the backend saw no TLS")?;
    assert_eq!(t.negotiated_protocol, "h2");
    assert_eq!(t.server_name, "");

    unverified.shutdown();
    secure.shutdown();
    grpcs.shutdown_and_wait().await;
    Ok(())
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}
