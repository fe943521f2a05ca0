//! `portcullis migrate` on the annotated ingress-nginx example: golden output (objects and report), the proof,
//! `--only`, the checker catching a broken migration, and the real binary serving a configuration and its
//! migration side by side with the same answers.

mod common;

use anyhow::{bail, Context, Result};
use common::{echo, free_port, service_yaml, Proxy, Response};
use portcullis::migrate::{self, Options, Selector};
use portcullis::source::file::{input_from_str, FileLoader};
use portcullis::translate;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

fn options(only: &[&str]) -> Options {
    let mut t = translate::Options::default();
    t.nginx.classes = vec!["nginx".into()];
    Options {
        gateway: ("default".into(), "portcullis".into()),
        only: only.iter().map(|s| Selector::parse(s).unwrap()).collect(),
        translate: t,
    }
}

fn example() -> portcullis::source::Input {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ingress-nginx");
    let loaded = FileLoader::new(vec![dir]).load();
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    loaded.input
}

/// Compares with the golden file, or writes it with UPDATE_GOLDEN=1.
fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/migrate")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(actual, expected, "{} differs", path.display());
}

#[test]
fn whole_example_golden_and_proven() -> Result<()> {
    let input = example();
    let opts = options(&[]);
    let out = migrate::migrate(&input, &opts);
    let files = migrate::files(&out, &input).map_err(anyhow::Error::msg)?;
    let text: String = files
        .iter()
        .filter(|(n, _)| *n != "other.yaml")
        .map(|(n, t)| format!("# {n}\n{t}"))
        .collect();
    golden("store.out.yaml", &text);
    golden("store.report.txt", &out.to_string());
    let proof = migrate::prove(&input, &files, &opts.translate);
    assert!(proof.errors.is_empty(), "{:?}", proof.errors);
    assert!(proof.report.is_equivalent(), "{}", proof.report);
    // The generated objects read back with the gateway-api crate's own types.
    let routes = &files
        .iter()
        .find(|(n, _)| *n == "httproutes.yaml")
        .unwrap()
        .1;
    for doc in routes.split("---\n").filter(|d| !d.trim().is_empty()) {
        let r: portcullis::k8s::gw::HTTPRoute = serde_saphyr::from_str(doc)?;
        assert!(r.spec.parent_refs.is_some());
    }
    Ok(())
}

#[test]
fn only_one_host_moves_and_the_rest_is_untouched() -> Result<()> {
    let input = example();
    let opts = options(&["www.shop.example.com/static"]);
    let out = migrate::migrate(&input, &opts);
    let moved: Vec<&str> = out
        .report
        .iter()
        .filter(|r| r.moved)
        .map(|r| r.path.as_str())
        .collect();
    assert_eq!(moved, ["/static (Prefix)"]);
    let files = migrate::files(&out, &input).map_err(anyhow::Error::msg)?;
    let proof = migrate::prove(&input, &files, &opts.translate);
    assert!(proof.errors.is_empty(), "{:?}", proof.errors);
    assert!(proof.report.is_equivalent(), "{}", proof.report);
    Ok(())
}

#[test]
fn the_checker_catches_a_broken_migration() -> Result<()> {
    let input = example();
    let opts = options(&[]);
    let out = migrate::migrate(&input, &opts);
    let files = migrate::files(&out, &input).map_err(anyhow::Error::msg)?;
    // A hand edit: the /static prefix becomes an exact path, and the admin route loses its annotations.
    let broken: Vec<(&'static str, String)> = files
        .iter()
        .map(|(n, t)| {
            let t = if *n == "httproutes.yaml" {
                t.replacen("type: PathPrefix\n        value: /static", "type: Exact\n        value: /static", 1)
                    .replace("portcullis.dev/ingress-nginx-profile: ingress-nginx\n    nginx.ingress.kubernetes.io/auth", "nginx.ingress.kubernetes.io/auth")
            } else {
                t.clone()
            };
            (*n, t)
        })
        .collect();
    assert_ne!(broken, files);
    let proof = migrate::prove(&input, &broken, &opts.translate);
    assert!(!proof.report.is_equivalent());
    let paths: Vec<&str> = proof
        .report
        .differences
        .iter()
        .map(|d| d.request.path.as_str())
        .collect();
    assert!(paths.contains(&"/static/"), "{}", proof.report);
    Ok(())
}

#[test]
fn generated_routes_translate_without_problems() -> Result<()> {
    let input = example();
    let out = migrate::migrate(&input, &options(&[]));
    let files = migrate::files(&out, &input).map_err(anyhow::Error::msg)?;
    let text: String = files.iter().map(|(_, t)| t.as_str()).collect();
    let (new_input, problems) = input_from_str(&text);
    assert!(problems.is_empty(), "{problems:?}");
    let t = translate::translate(&new_input, &options(&[]).translate);
    let generated: Vec<_> = t
        .diagnostics
        .iter()
        .filter(|d| d.object.kind != "Ingress")
        .collect();
    assert!(generated.is_empty(), "{generated:?}");
    // Every route is accepted by the Gateway.
    assert_eq!(new_input.http_routes.len(), out.routes.len());
    Ok(())
}

/// The extension refuses host-wide ingress-nginx annotations on an HTTPRoute: an error, and the rules deny (503).
#[test]
fn host_wide_annotations_on_a_route_deny_it() -> Result<()> {
    let yaml = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: portcullis}
spec: {controllerName: portcullis.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: portcullis
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: r
  namespace: default
  annotations:
    portcullis.dev/ingress-nginx-profile: ingress-nginx
    nginx.ingress.kubernetes.io/use-regex: "true"
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: s, port: 80}]}]
"#;
    let (input, problems) = input_from_str(yaml);
    assert!(problems.is_empty(), "{problems:?}");
    let t = translate::translate(&input, &translate::Options::default());
    assert!(
        t.diagnostics
            .iter()
            .any(|d| d.message.contains("use-regex is host-wide")),
        "{:?}",
        t.diagnostics
    );
    let http = t.model.listeners[0].http().expect("an HTTP listener");
    let rule = &http.virtual_hosts[0].rules[0];
    let denied = rule
        .filters
        .iter()
        .any(|f| matches!(f, portcullis::model::Filter::Policy(p) if p.denied.is_some()));
    assert!(denied, "{rule:?}");
    Ok(())
}

#[test]
fn backend_annotations_on_a_route_are_reported_not_applied() -> Result<()> {
    let yaml = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: portcullis}
spec: {controllerName: portcullis.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: portcullis
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: r
  namespace: default
  annotations:
    portcullis.dev/ingress-nginx-profile: ingress-nginx
    nginx.ingress.kubernetes.io/backend-protocol: HTTPS
    nginx.ingress.kubernetes.io/proxy-ssl-secret: default/ca
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: s, port: 80}]}]
"#;
    let (input, problems) = input_from_str(yaml);
    assert!(problems.is_empty(), "{problems:?}");
    let t = translate::translate(&input, &translate::Options::default());
    for key in ["backend-protocol", "proxy-ssl-secret"] {
        assert!(
            t.diagnostics.iter().any(|d| d.message.contains(&format!(
                "{key}: acts on an Ingress's backends and is not applied on a route"
            ))),
            "{key}: {:?}",
            t.diagnostics
        );
    }
    Ok(())
}

/// Services and EndpointSlices for the session tests: `web` in namespace `shop`.
const SHOP_WEB: &str = r#"
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: nginx}
spec: {controller: k8s.io/ingress-nginx}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: ["10.0.0.1"]}, {addresses: ["10.0.0.2"]}]
"#;

/// An Ingress of class nginx for `host`, path `/cart`, with these annotations (without the prefix).
fn sticky_ingress(name: &str, host: &str, annotations: &[(&str, &str)]) -> String {
    let mut a = String::new();
    for (k, v) in annotations {
        a.push_str(&format!("\n    nginx.ingress.kubernetes.io/{k}: \"{v}\""));
    }
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: shop\n  \
         annotations:{a}\nspec:\n  ingressClassName: nginx\n  rules:\n  - host: {host}\n    http:\n      paths:\n      \
         - {{path: /cart, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}\n"
    )
}

#[test]
fn persistent_cookie_affinity_moves_to_session_persistence_with_a_proof() -> Result<()> {
    let persistent = [
        ("affinity", "cookie"),
        ("affinity-mode", "persistent"),
        ("session-cookie-name", "shop"),
        ("session-cookie-max-age", "7200"),
    ];
    let yaml = [
        SHOP_WEB.to_string(),
        sticky_ingress("pinned", "a.shop.test", &persistent),
        sticky_ingress(
            "session",
            "b.shop.test",
            &[("affinity", "cookie"), ("affinity-mode", "persistent")],
        ),
        sticky_ingress("balanced", "c.shop.test", &[("affinity", "cookie")]),
        sticky_ingress(
            "lax",
            "d.shop.test",
            &[
                ("affinity", "cookie"),
                ("affinity-mode", "persistent"),
                ("session-cookie-samesite", "Lax"),
            ],
        ),
        sticky_ingress(
            "elsewhere",
            "e.shop.test",
            &[
                ("affinity", "cookie"),
                ("affinity-mode", "persistent"),
                ("session-cookie-path", "/"),
            ],
        ),
    ]
    .concat();
    let (input, problems) = input_from_str(&yaml);
    assert!(problems.is_empty(), "{problems:?}");
    let opts = options(&[]);
    let out = migrate::migrate(&input, &opts);
    let verdict = |host: &str| {
        out.report
            .iter()
            .find(|r| r.host == host)
            .map(|r| (r.moved, r.verdict.to_string()))
            .unwrap_or_default()
    };
    assert!(verdict("a.shop.test").0, "{:?}", verdict("a.shop.test"));
    assert!(verdict("b.shop.test").0, "{:?}", verdict("b.shop.test"));
    for (host, why) in [
        ("c.shop.test", "affinity-mode balanced"),
        ("d.shop.test", "session-cookie-samesite"),
        ("e.shop.test", "session-cookie-path /"),
    ] {
        let (moved, text) = verdict(host);
        assert!(!moved && text.contains(why), "{host}: {text}");
    }
    let files = migrate::files(&out, &input).map_err(anyhow::Error::msg)?;
    let routes = &files
        .iter()
        .find(|(n, _)| *n == "httproutes.yaml")
        .context("httproutes.yaml")?
        .1;
    assert!(
        routes.contains(
            "sessionPersistence:\n      sessionName: shop\n      type: Cookie\n      absoluteTimeout: 2h\n      \
             cookieConfig:\n        lifetimeType: Permanent\n"
        ),
        "{routes}"
    );
    // ingress-nginx's default cookie name, and a session cookie (no Max-Age): no lifetime.
    assert!(
        routes.contains(
            "sessionPersistence:\n      sessionName: INGRESSCOOKIE\n      type: Cookie\n"
        ),
        "{routes}"
    );
    let proof = migrate::prove(&input, &files, &opts.translate);
    assert!(proof.errors.is_empty(), "{:?}", proof.errors);
    assert!(proof.report.is_equivalent(), "{}", proof.report);
    // The proof sees a session that changed in the move.
    let broken: Vec<(&'static str, String)> = files
        .iter()
        .map(|(n, t)| (*n, t.replace("absoluteTimeout: 2h", "absoluteTimeout: 3h")))
        .collect();
    assert_ne!(broken, files);
    let proof = migrate::prove(&input, &broken, &opts.translate);
    assert!(!proof.report.is_equivalent(), "{}", proof.report);
    Ok(())
}

// The real binary, before and after: `portcullis migrate` on an ingress-nginx configuration, then both
// configurations served side by side and asked the same requests.

/// More Ingresses next to examples/ingress-nginx: redirects and upstream-vhost (they move through the
/// extension), an Exact path, a one-label wildcard (it stays), and an Ingress of our own class (a plain
/// HTTPRoute).
const MORE: &str = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: old-shop
  namespace: store
  annotations:
    nginx.ingress.kubernetes.io/permanent-redirect: https://www.shop.example.com/new
spec:
  ingressClassName: nginx
  rules:
  - host: old.shop.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: promo
  namespace: store
  annotations:
    nginx.ingress.kubernetes.io/temporal-redirect: https://www.shop.example.com/sale
spec:
  ingressClassName: nginx
  rules:
  - host: promo.shop.example.com
    http:
      paths:
      - {path: /sale, pathType: Exact, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: internal
  namespace: store
  annotations:
    nginx.ingress.kubernetes.io/upstream-vhost: backend.internal
spec:
  ingressClassName: nginx
  rules:
  - host: internal.shop.example.com
    http:
      paths:
      - {path: /api, pathType: Exact, backend: {service: {name: api-v1, port: {number: 8080}}}}
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: plain
  namespace: store
spec:
  ingressClassName: portcullis
  rules:
  - host: plain.shop.example.com
    http:
      paths:
      - {path: /a, pathType: Exact, backend: {service: {name: static, port: {number: 80}}}}
      - {path: /b, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: wild
  namespace: store
spec:
  ingressClassName: nginx
  rules:
  - host: "*.shop.example.com"
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: legacy, port: {number: 80}}}}
"#;

/// The Services of examples/ingress-nginx and their ports.
const SERVICES: [(&str, u16); 7] = [
    ("web", 80),
    ("static", 80),
    ("api-v1", 8080),
    ("api-v2", 8080),
    ("api-v2-canary", 8080),
    ("admin", 80),
    ("legacy", 80),
];

/// `admin:admin` and `admin:nope` as Basic credentials.
const ADMIN: &str = "Basic YWRtaW46YWRtaW4=";
const WRONG: &str = "Basic YWRtaW46bm9wZQ==";
/// The origin the API's CORS allows.
const ORIGIN: (&str, &str) = ("origin", "https://www.shop.example.com");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

/// One request of the table (HTTPS: the SNI is the host).
#[derive(Debug)]
struct Req {
    scheme: Scheme,
    method: &'static str,
    host: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
}

/// Every rule of the example and of `MORE` over HTTP and HTTPS, the redirects (ssl-redirect, the `/docs`
/// trailing-slash redirect, permanent and temporal redirects), the regex rewrite, CORS, basic auth, the body-size
/// limit, upstream-vhost, and requests no rule answers.
fn table() -> Vec<Req> {
    use Scheme::{Http as H, Https as S};
    let r = |scheme, method, host, path, headers| Req {
        scheme,
        method,
        host,
        path,
        headers,
    };
    let www = "www.shop.example.com";
    let api = "api.shop.example.com";
    let admin = "admin.shop.example.com";
    let legacy = "legacy.shop.example.com";
    vec![
        r(H, "GET", www, "/", &[]),
        r(H, "GET", www, "/static/app.css?v=2", &[]),
        r(H, "GET", www, "/docs", &[]),
        r(H, "HEAD", www, "/cart/", &[]),
        r(H, "GET", "WWW.Shop.Example.COM", "/", &[]),
        r(S, "GET", www, "/", &[]),
        r(S, "GET", www, "/cart?id=7", &[]),
        r(S, "GET", www, "/static", &[]),
        r(S, "GET", www, "/static/app.css?v=2", &[]),
        r(S, "GET", www, "/STATIC/app.css", &[]),
        r(S, "GET", www, "/staticfiles", &[]),
        r(S, "GET", www, "/docs", &[]),
        r(S, "GET", www, "/docs/", &[]),
        r(S, "GET", www, "/docs/guide?p=1", &[]),
        r(S, "POST", www, "/upload", &[("content-length", "9000000")]),
        r(H, "GET", api, "/v1/items", &[]),
        r(S, "GET", api, "/v1", &[]),
        r(S, "GET", api, "/v1/items?page=2", &[]),
        r(S, "GET", api, "/v1beta", &[]),
        r(S, "GET", api, "/v2/orders", &[]),
        r(S, "GET", api, "/", &[]),
        r(
            S,
            "OPTIONS",
            api,
            "/v1/items",
            &[ORIGIN, ("access-control-request-method", "POST")],
        ),
        r(S, "GET", api, "/v1/items", &[ORIGIN]),
        r(
            S,
            "GET",
            api,
            "/v1/items",
            &[("origin", "https://evil.example.com")],
        ),
        r(H, "GET", admin, "/", &[]),
        r(H, "GET", admin, "/users", &[("authorization", ADMIN)]),
        r(H, "GET", admin, "/users", &[("authorization", WRONG)]),
        r(S, "GET", admin, "/", &[("authorization", ADMIN)]),
        r(H, "GET", legacy, "/shop/cart?x=1", &[]),
        r(H, "GET", legacy, "/SHOP/Item/9", &[]),
        r(H, "GET", legacy, "/shop", &[]),
        r(H, "GET", legacy, "/elsewhere", &[]),
        r(H, "GET", "old.shop.example.com", "/anything?q=1", &[]),
        r(S, "GET", "old.shop.example.com", "/", &[]),
        r(H, "GET", "promo.shop.example.com", "/sale", &[]),
        r(H, "GET", "promo.shop.example.com", "/sale/", &[]),
        r(H, "GET", "internal.shop.example.com", "/api", &[]),
        r(H, "GET", "internal.shop.example.com", "/api/x", &[]),
        r(H, "GET", "internal.shop.example.com", "/", &[]),
        r(H, "GET", "plain.shop.example.com", "/a", &[]),
        r(H, "GET", "plain.shop.example.com", "/a/", &[]),
        r(H, "GET", "plain.shop.example.com", "/b/c", &[]),
        r(H, "GET", "plain.shop.example.com", "/c", &[]),
        r(S, "GET", "plain.shop.example.com", "/b", &[]),
        r(H, "GET", "anything.shop.example.com", "/x", &[]),
        r(H, "GET", "a.b.shop.example.com", "/x", &[]),
        r(H, "GET", "shop.example.com", "/", &[]),
        r(S, "GET", "shop.example.com", "/x", &[]),
        r(H, "GET", "unknown.example.org", "/", &[]),
        r(S, "GET", "unknown.example.org", "/", &[]),
    ]
}

/// What a client and the backend saw of one request, with the proxy's own ports taken out.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    status: u16,
    /// Response headers that carry routing decisions (Location, CORS, authentication challenges).
    headers: Vec<(&'static str, String)>,
    /// The echo backend's pod (empty when the proxy answered itself).
    backend: String,
    /// The request line path and Host header the backend received.
    backend_path: String,
    backend_host: String,
    /// Request headers as the backend received them.
    backend_headers: Vec<(&'static str, String)>,
    /// A hash of the certificate the server presented (HTTPS).
    certificate: Option<u64>,
}

const RESPONSE_HEADERS: [&str; 6] = [
    "location",
    "www-authenticate",
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-allow-methods",
    "access-control-allow-headers",
];

const BACKEND_HEADERS: [&str; 6] = [
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-prefix",
    "x-forwarded-for",
    "x-real-ip",
    "authorization",
];

/// Accepts the server's certificate: the test compares which certificate each proxy presents instead of
/// validating it (the demo certificate is its own CA, which webpki refuses as a server certificate).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// One HTTP/1.1 request over TLS on 127.0.0.1:`port`, read to the end: the response and the server certificate.
fn https(port: u16, req: &Req) -> Result<(Response, Vec<u8>)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let sni = ServerName::try_from(req.host.to_ascii_lowercase())?;
    let mut conn = rustls::ClientConnection::new(Arc::new(config), sni)?;
    let mut sock = TcpStream::connect(("127.0.0.1", port))?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    sock.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let mut text = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        req.method, req.path, req.host
    );
    for (k, v) in req.headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str("\r\n");
    tls.write_all(text.as_bytes())?;
    let mut raw = Vec::new();
    // A peer that closes without close_notify makes rustls report UnexpectedEof; what was read is the answer.
    if let Err(e) = tls.read_to_end(&mut raw) {
        if e.kind() != std::io::ErrorKind::UnexpectedEof || raw.is_empty() {
            return Err(e.into());
        }
    }
    let cert = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .context("no server certificate")?;
    Ok((common::parse_response(&raw, req.method == "HEAD")?, cert))
}

/// Sends the table to a proxy whose HTTP and HTTPS listeners are on `http` and `https`.
fn observe(http: u16, https_port: u16, rows: &[Req]) -> Result<Vec<Seen>> {
    let ports = [
        (format!(":{http}"), ":HTTP"),
        (format!(":{https_port}"), ":HTTPS"),
    ];
    let unport = |s: &str| {
        ports
            .iter()
            .fold(s.to_string(), |s, (p, name)| s.replace(p.as_str(), name))
    };
    let mut out = Vec::new();
    for req in rows {
        let (r, cert) = match req.scheme {
            Scheme::Http => (
                common::request(http, req.method, req.host, req.path, req.headers, b"")
                    .with_context(|| format!("{req:?}"))?,
                None,
            ),
            Scheme::Https => {
                let (r, cert) = https(https_port, req).with_context(|| format!("{req:?}"))?;
                (r, Some(cert))
            }
        };
        // The echo backend answers JSON; the proxy's own answers are not.
        let echo = r.echo().ok();
        let field = |k: &str| {
            echo.as_ref()
                .and_then(|e| e[k].as_str())
                .map(&unport)
                .unwrap_or_default()
        };
        let mut backend = field("pod");
        // The canary takes 10% of /v2 at random, before and after alike (it stays on the Ingress).
        if backend == "api-v2-canary-0" {
            backend = "api-v2-0".into();
        }
        out.push(Seen {
            status: r.status,
            headers: RESPONSE_HEADERS
                .iter()
                .filter_map(|h| r.header(h).map(|v| (*h, unport(v))))
                .collect(),
            backend,
            backend_path: field("path"),
            backend_host: field("host"),
            backend_headers: BACKEND_HEADERS
                .iter()
                .filter_map(|h| r.echoed_header(h).map(|v| (*h, unport(&v))))
                .collect(),
            certificate: cert.map(|c| {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                c.hash(&mut h);
                h.finish()
            }),
        });
    }
    Ok(out)
}

/// The rows whose answers differ, one line each.
fn differences(rows: &[Req], old: &[Seen], new: &[Seen]) -> Vec<String> {
    rows.iter()
        .zip(old.iter().zip(new))
        .filter(|(_, (o, n))| o != n)
        .map(|(req, (o, n))| {
            format!(
                "{:?} {} {}{}: before {o:?}\n    after {n:?}",
                req.scheme, req.method, req.host, req.path
            )
        })
        .collect()
}

/// A port offset that puts logical ports 80 and 443 on free ports of 127.0.0.1.
fn port_offset() -> u16 {
    loop {
        let p = free_port();
        if p > 80 && p < 65535 - 363 && TcpListener::bind(("127.0.0.1", p + 363)).is_ok() {
            return p - 80;
        }
    }
}

/// Runs the proxy on `dir` as the migration assumes (ingress-nginx class `nginx`, ports 80 and 443 moved by an
/// offset) and sends it the table.
fn serve_and_observe(dir: &Path, rows: &[Req]) -> Result<Vec<Seen>> {
    let offset = port_offset();
    let _proxy = Proxy::start(
        dir,
        80,
        &[
            "--https-port",
            "443",
            "--port-offset",
            &offset.to_string(),
            "--ingress-nginx-class",
            "nginx",
        ],
    )?;
    observe(80 + offset, 443 + offset, rows)
}

/// examples/ingress-nginx and `MORE` with the Services pointed at echo backends.
fn old_configuration(backends: &[String]) -> Result<String> {
    let store = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ingress-nginx/store.yaml"),
    )?;
    let kept: Vec<&str> = store
        .split("\n---\n")
        .filter(|d| {
            !d.lines()
                .any(|l| l == "kind: Service" || l == "kind: EndpointSlice")
        })
        .collect();
    if kept.len() + 2 * SERVICES.len() != store.split("\n---\n").count() {
        bail!("examples/ingress-nginx/store.yaml no longer has one Service and one EndpointSlice per backend");
    }
    Ok(format!(
        "{}{}\n---\n{}{MORE}",
        common::CLASSES,
        kept.join("\n---\n"),
        backends.concat()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrated_configuration_serves_the_same_answers() -> Result<()> {
    let mut echoes = Vec::new();
    for (name, _) in SERVICES {
        echoes.push(echo(&format!("{name}-0"), "store").await?);
    }
    let services: Vec<String> = SERVICES
        .iter()
        .zip(&echoes)
        .map(|((name, port), e)| service_yaml("store", name, *port, &[e]))
        .collect();
    let tmp = tempfile::tempdir()?;
    let old = tmp.path().join("old");
    let new = tmp.path().join("new");
    let broken = tmp.path().join("broken");
    std::fs::create_dir_all(&old)?;
    std::fs::write(old.join("store.yaml"), old_configuration(&services)?)?;

    let run = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("migrate")
        .arg(&old)
        .args(["--ingress-nginx-class", "nginx", "--http-port", "80"])
        .args(["--https-port", "443", "--out"])
        .arg(&new)
        .output()?;
    let report = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "migrate failed:\n{report}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // What moves: plainly, through the extension, and what stays.
    for line in [
        "moved  Ingress store/storefront host www.shop.example.com path /static (Prefix): equivalent through the Portcullis extension",
        "moved  Ingress store/old-shop host old.shop.example.com path / (Prefix): equivalent through the Portcullis extension (ingress-nginx policy: redirect",
        "moved  Ingress store/internal host internal.shop.example.com path /api (Exact): equivalent through the Portcullis extension (ingress-nginx policy: upstream-vhost",
        "moved  Ingress store/plain host plain.shop.example.com path /b (Prefix): equivalent\n",
        "stays  Ingress store/legacy host",
        "stays  Ingress store/wild host *.shop.example.com",
        "proof: equivalent",
    ] {
        assert!(report.contains(line), "{line:?} not in:\n{report}");
    }

    let rows = table();
    let old_dir = old.clone();
    let new_dir = new.clone();
    let (before, after) = tokio::task::spawn_blocking(move || -> Result<_> {
        let before = serve_and_observe(&old_dir, &rows)?;
        let after = serve_and_observe(&new_dir, &rows)?;
        Ok((before, after))
    })
    .await??;
    let rows = table();
    let diff = differences(&rows, &before, &after);
    assert!(
        diff.is_empty(),
        "{} of {} requests answered differently after the migration:\n{}\nmigrate said:\n{report}",
        diff.len(),
        rows.len(),
        diff.join("\n")
    );

    // The table reaches every backend and every kind of answer the configuration gives.
    let backends: BTreeSet<&str> = before.iter().map(|s| s.backend.as_str()).collect();
    for (name, _) in SERVICES.iter().filter(|(n, _)| *n != "api-v2-canary") {
        assert!(
            backends.contains(format!("{name}-0").as_str()),
            "{name} never answered: {before:?}"
        );
    }
    let statuses: BTreeSet<u16> = before.iter().map(|s| s.status).collect();
    for status in [200, 204, 301, 302, 308, 401, 404, 413] {
        assert!(statuses.contains(&status), "no {status} among {statuses:?}");
    }

    // ingress-nginx answers a path that no location of the host's server matches with its default backend (404),
    // never with the `*.shop.example.com` server (store/wild, Service legacy); a host of our class does fall
    // through to it.
    let seen = |scheme: Scheme, host: &str, path: &str| -> Vec<(u16, String)> {
        let i = rows
            .iter()
            .position(|r| r.scheme == scheme && r.host == host && r.path == path)
            .unwrap_or_else(|| panic!("{host}{path} is not in the table"));
        [&before[i], &after[i]]
            .iter()
            .map(|s| (s.status, s.backend.clone()))
            .collect()
    };
    let not_found = vec![(404, String::new()); 2];
    let wild = vec![(200, "legacy-0".to_string()); 2];
    assert_eq!(
        seen(Scheme::Https, "api.shop.example.com", "/v1beta"),
        not_found
    );
    assert_eq!(seen(Scheme::Https, "api.shop.example.com", "/"), not_found);
    assert_eq!(
        seen(Scheme::Http, "promo.shop.example.com", "/sale/"),
        not_found
    );
    assert_eq!(seen(Scheme::Http, "plain.shop.example.com", "/c"), wild);
    assert_eq!(seen(Scheme::Http, "anything.shop.example.com", "/x"), wild);

    // The comparison sees a wrong migration: the /static rule sent to the front end's Service by hand.
    std::fs::create_dir_all(&broken)?;
    for entry in std::fs::read_dir(&new)? {
        let entry = entry?;
        std::fs::copy(entry.path(), broken.join(entry.file_name()))?;
    }
    let routes = std::fs::read_to_string(broken.join("httproutes.yaml"))?;
    let edited = routes.replacen(
        "value: /static\n    backendRefs:\n    - name: static",
        "value: /static\n    backendRefs:\n    - name: web",
        1,
    );
    assert_ne!(
        edited, routes,
        "the /static rule is not where the test expects it"
    );
    std::fs::write(broken.join("httproutes.yaml"), edited)?;
    let rows = table();
    let wrong = tokio::task::spawn_blocking(move || serve_and_observe(&broken, &rows)).await??;
    let rows = table();
    let diff = differences(&rows, &before, &wrong);
    assert!(
        diff.iter()
            .any(|d| d.starts_with("Https GET www.shop.example.com/static/app.css")),
        "{diff:?}"
    );
    assert!(
        diff.iter()
            .all(|d| d.contains("www.shop.example.com/static")),
        "{diff:?}"
    );
    Ok(())
}
