//! End-to-end TLS: Ingress `spec.tls` and Gateway HTTPS listeners with certificates from Secrets, SNI selection,
//! HTTP/2 by ALPN, 421 for misdirected requests, and frontend client-certificate validation.

mod common;

use anyhow::{Context, Result};
use common::certs::{ca, indent, leaf, tls_secret, Ca};
use common::{echo, free_port, service_yaml, Proxy, CLASSES};
use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

/// The result of one HTTPS request.
struct TlsResponse {
    alpn: Option<Vec<u8>>,
    /// DER of the leaf certificate the server presented.
    server_cert: Vec<u8>,
    status: u16,
    body: String,
}

/// The certificates of `ca_pem` as a client's trust roots.
fn roots_of(ca_pem: &str) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    Ok(roots)
}

/// One HTTP/1.1 request over TLS with `sni`, trusting `ca_pem`, offering ALPN h2 and http/1.1.
fn https_get(
    port: u16,
    sni: &str,
    host: &str,
    path: &str,
    ca_pem: &str,
    client: Option<&(String, String)>,
) -> Result<TlsResponse> {
    let roots = roots_of(ca_pem)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match client {
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<_, _>>()?;
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes())?;
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from(sni.to_string())?)?;
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", port))?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    // Complete the handshake before looking at ALPN.
    tls.flush()?;
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(tls.sock)?;
    }
    let alpn = tls.conn.alpn_protocol().map(<[u8]>::to_vec);
    let server_cert = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .context("no server certificate")?;
    if alpn.as_deref() == Some(b"h2") {
        // Speaking HTTP/2 is not needed to check the negotiation.
        return Ok(TlsResponse {
            alpn,
            server_cert,
            status: 0,
            body: String::new(),
        });
    }
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status line")?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Ok(TlsResponse {
        alpn,
        server_cert,
        status,
        body,
    })
}

/// Same as `https_get` but without ALPN h2, so an HTTP/1.1 exchange happens.
fn https_get_h1(
    port: u16,
    sni: &str,
    host: &str,
    path: &str,
    ca_pem: &str,
    client: Option<&(String, String)>,
) -> Result<TlsResponse> {
    // The server prefers h2 when offered; offer only http/1.1 by asking with a different SNI-less config.
    let roots = roots_of(ca_pem)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match client {
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<_, _>>()?;
            builder.with_client_auth_cert(chain, PrivateKeyDer::from_pem_slice(key.as_bytes())?)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from(sni.to_string())?)?;
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", port))?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    let read = tls.read_to_end(&mut raw);
    if raw.is_empty() {
        read?;
    }
    let alpn = tls.conn.alpn_protocol().map(<[u8]>::to_vec);
    let server_cert = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status line in {text:?}"))?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Ok(TlsResponse {
        alpn,
        server_cert,
        status,
        body,
    })
}

fn der_of(pem: &str) -> Vec<u8> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .and_then(|c| c.ok())
        .map(|c| c.to_vec())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_tls_and_gateway_https() -> Result<()> {
    let web = echo("web-7d9f8b6c4-aaaaa", "shop").await?;
    let api = echo("api-5c6d7e8f9-bbbbb", "shop").await?;
    let ca = ca("test ca")?;
    let shop_cert = leaf(&ca, &["shop.example.com"])?;
    let wild_cert = leaf(&ca, &["*.example.org"])?;
    let client_ca = ca_pem_and_client()?;

    let http = free_port();
    let https = free_port();
    let gw_port = free_port();
    let mtls_port = free_port();
    let yaml = format!(
        "{CLASSES}{}{}{}{}{}
apiVersion: v1
kind: ConfigMap
metadata: {{name: client-ca, namespace: shop}}
data:
  ca.crt: |
{}---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: shop, namespace: shop}}
spec:
  tls:
  - hosts: [shop.example.com]
    secretName: shop-tls
  rules:
  - host: shop.example.com
    http:
      paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: shop}}
spec:
  gatewayClassName: portcullis
  listeners:
  - name: exact
    port: {gw_port}
    protocol: HTTPS
    hostname: shop.example.com
    tls: {{certificateRefs: [{{name: shop-tls}}]}}
  - name: wildcard
    port: {gw_port}
    protocol: HTTPS
    hostname: \"*.example.org\"
    tls: {{certificateRefs: [{{name: wild-tls}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: mtls, namespace: shop}}
spec:
  gatewayClassName: portcullis
  tls:
    frontend:
      default:
        validation:
          caCertificateRefs: [{{group: \"\", kind: ConfigMap, name: client-ca}}]
  listeners:
  - name: https
    port: {mtls_port}
    protocol: HTTPS
    tls: {{certificateRefs: [{{name: shop-tls}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: api, namespace: shop}}
spec:
  parentRefs: [{{name: gw}}, {{name: mtls}}]
  rules:
  - backendRefs: [{{name: api, port: 80}}]
",
        service_yaml("shop", "web", 80, &[&web]),
        service_yaml("shop", "api", 80, &[&api]),
        tls_secret("shop", "shop-tls", &shop_cert),
        tls_secret("shop", "wild-tls", &wild_cert),
        "",
        indent(&client_ca.0)
    );
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("all.yaml"), yaml)?;
    let proxy = Proxy::start(dir.path(), http, &["--https-port", &https.to_string()])?;
    let ca_pem = ca.pem.clone();
    tokio::task::spawn_blocking(move || -> Result<()> {
        // Ingress TLS on the HTTPS port, HTTP/2 offered by ALPN.
        let r = https_get(
            https,
            "shop.example.com",
            "shop.example.com",
            "/",
            &ca_pem,
            None,
        )?;
        assert_eq!(r.alpn.as_deref(), Some(&b"h2"[..]));
        assert_eq!(r.server_cert, der_of(&shop_cert.0));
        let r = https_get_h1(
            https,
            "shop.example.com",
            "shop.example.com",
            "/x",
            &ca_pem,
            None,
        )?;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(
            r.body.contains("\"pod\": \"web-7d9f8b6c4-aaaaa\""),
            "{}",
            r.body
        );
        assert!(
            r.body.contains("\"X-Forwarded-Proto\": [\n   \"https\""),
            "{}",
            r.body
        );
        // The same host stays reachable over plain HTTP.
        assert_eq!(proxy.get("shop.example.com", "/x")?.status, 200);

        // Gateway HTTPS listener: the certificate is chosen by SNI, most specific first.
        let r = https_get_h1(
            gw_port,
            "shop.example.com",
            "shop.example.com",
            "/",
            &ca_pem,
            None,
        )?;
        assert_eq!(r.status, 200);
        assert_eq!(r.server_cert, der_of(&shop_cert.0));
        assert!(r.body.contains("api-5c6d7e8f9-bbbbb"));
        let r = https_get_h1(
            gw_port,
            "a.example.org",
            "a.example.org",
            "/",
            &ca_pem,
            None,
        )?;
        assert_eq!(r.status, 200);
        assert_eq!(r.server_cert, der_of(&wild_cert.0));
        // A request whose Host belongs to another listener than its SNI: 421.
        let r = https_get_h1(
            gw_port,
            "a.example.org",
            "shop.example.com",
            "/",
            &ca_pem,
            None,
        )?;
        assert_eq!(r.status, 421);

        // Client-certificate validation: no certificate, no connection; a valid one gets through.
        assert!(https_get_h1(
            mtls_port,
            "shop.example.com",
            "shop.example.com",
            "/",
            &ca_pem,
            None
        )
        .is_err());
        let r = https_get_h1(
            mtls_port,
            "shop.example.com",
            "shop.example.com",
            "/",
            &ca_pem,
            Some(&client_ca.1),
        )?;
        assert_eq!(r.status, 200);

        // Status: the listeners are programmed and the route attached to both Gateways.
        let st: serde_json::Value = serde_json::from_slice(&proxy.admin("/status")?.body)?;
        let gw = st["gateways"]
            .as_array()
            .and_then(|g| g.iter().find(|g| g["name"] == "gw"))
            .context("gateway status")?;
        for l in gw["status"]["listeners"].as_array().context("listeners")? {
            assert_eq!(l["attachedRoutes"], 1, "{l}");
            assert!(l["conditions"].as_array().is_some_and(|c| c
                .iter()
                .any(|c| c["type"] == "Programmed" && c["status"] == "True")));
        }
        Ok(())
    })
    .await??;
    Ok(())
}

/// A client CA (PEM) and a client certificate it signed.
fn ca_pem_and_client() -> Result<(String, (String, String))> {
    let ca = ca("client ca")?;
    let client = leaf(&ca, &["client.example.com"])?;
    Ok((ca.pem, client))
}

/// A leaf certificate with DNS and URI subject alternative names.
fn leaf_with_uri(ca: &Ca, names: &[&str], uris: &[&str]) -> Result<(String, String)> {
    let key = KeyPair::generate()?;
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
    for u in uris {
        params
            .subject_alt_names
            .push(rcgen::SanType::URI(rcgen::string::Ia5String::try_from(*u)?));
    }
    let cert = params.signed_by(&key, &ca.issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn secure_service(name: &str, https_port: u16) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  ports: [{{name: btls, port: 443}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}
  namespace: default
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: btls, port: {https_port}}}]
endpoints: [{{addresses: [127.0.0.1]}}]
---
"
    )
}

fn policy(name: &str, service: &str, ca_map: &str, sans: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {{name: {name}, namespace: default}}
spec:
  targetRefs: [{{group: \"\", kind: Service, name: {service}, sectionName: btls}}]
  validation:
    caCertificateRefs: [{{group: \"\", kind: ConfigMap, name: {ca_map}}}]
    hostname: abc.example.com
{sans}---
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_tls_policy_client_certificate_and_passthrough() -> Result<()> {
    let ca = ca("backend ca")?;
    let other_ca = ca_pem_and_client()?;
    let server = leaf_with_uri(
        &ca,
        &["abc.example.com", "other.example.com"],
        &["spiffe://abc.example.com/test-identity"],
    )?;
    let client_cert = leaf(&ca, &["gateway.example.com"])?;
    let mut cfg = proto_conformance::echo::EchoConfig::new(
        "secure-7d9f8b6c4-aaaaa",
        "default",
        "127.0.0.1:0".parse()?,
    );
    cfg.https = Some(proto_conformance::echo::EchoTls {
        addr: "127.0.0.1:0".parse()?,
        cert_pem: server.0.clone(),
        key_pem: server.1.clone(),
        client_ca_pem: Some(ca.pem.clone()),
    });
    let backend = proto_conformance::echo::EchoServer::start(cfg).await?;
    let https_port = backend.https_addr().context("https listener")?.port();

    let http = free_port();
    let passthrough = free_port();
    let yaml = format!(
        "{CLASSES}{}{}{}{}
apiVersion: v1
kind: ConfigMap
metadata: {{name: backend-ca, namespace: default}}
data:
  ca.crt: |
{}---
apiVersion: v1
kind: ConfigMap
metadata: {{name: unrelated-ca, namespace: default}}
data:
  ca.crt: |
{}---
{}{}{}
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: portcullis
  tls:
    backend:
      clientCertificateRef: {{name: gateway-client}}
  listeners:
  - {{name: http, port: {http}, protocol: HTTP}}
  - name: passthrough
    port: {passthrough}
    protocol: TLS
    hostname: \"*.example.com\"
    tls: {{mode: Passthrough}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: default}}
spec:
  parentRefs: [{{name: gw, sectionName: http}}]
  rules:
  - matches: [{{path: {{type: Exact, value: /san-uri}}}}]
    backendRefs: [{{name: secure, port: 443}}]
  - matches: [{{path: {{type: Exact, value: /san-mismatch}}}}]
    backendRefs: [{{name: secure-mismatch, port: 443}}]
  - matches: [{{path: {{type: Exact, value: /wrong-ca}}}}]
    backendRefs: [{{name: secure-wrong-ca, port: 443}}]
  - matches: [{{path: {{type: Exact, value: /mirror-tls}}}}]
    filters:
    - type: RequestMirror
      requestMirror: {{backendRef: {{name: secure, port: 443}}}}
    backendRefs: [{{name: secure, port: 443}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {{name: pass, namespace: default}}
spec:
  parentRefs: [{{name: gw, sectionName: passthrough}}]
  hostnames: [abc.example.com]
  rules:
  - backendRefs: [{{name: secure, port: 443}}]
",
        secure_service("secure", https_port),
        secure_service("secure-mismatch", https_port),
        secure_service("secure-wrong-ca", https_port),
        tls_secret("default", "gateway-client", &client_cert),
        indent(&ca.pem),
        indent(&other_ca.0),
        policy(
            "san-uri",
            "secure",
            "backend-ca",
            "    subjectAltNames: [{type: URI, uri: \"spiffe://abc.example.com/test-identity\"}]\n"
        ),
        policy(
            "san-mismatch",
            "secure-mismatch",
            "backend-ca",
            "    subjectAltNames: [{type: Hostname, hostname: dce.example.com}]\n"
        ),
        policy("wrong-ca", "secure-wrong-ca", "unrelated-ca", ""),
    );
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("all.yaml"), yaml)?;
    let proxy = Proxy::start(dir.path(), http, &[])?;
    let ca_pem = ca.pem.clone();
    let client_pem = client_cert.0.clone();
    let proxy = std::sync::Arc::new(proxy);
    let p = proxy.clone();
    let mirror_received = {
        let p = proxy.clone();
        tokio::task::spawn_blocking(move || p.get("abc.example.com", "/mirror-tls")).await??
    };
    assert_eq!(mirror_received.status, 200, "{}", proxy.log_text());
    // The mirror copy reaches the TLS backend over TLS, as the request does (the BackendTLSPolicy of the port
    // applies to mirrors too).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let n = backend
            .received()
            .iter()
            .filter(|r| {
                r.path == "/mirror-tls"
                    && r.listener == proto_conformance::echo::EchoListener::Https
            })
            .count();
        if n >= 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the TLS backend got {n} of 2 requests (request + mirror copy); log:\n{}",
            proxy.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let proxy = p;
    tokio::task::spawn_blocking(move || -> Result<()> {
        // TLS to the backend, the certificate checked against the URI SAN; the Gateway's client certificate
        // is presented.
        let r = proxy.get("abc.example.com", "/san-uri")?;
        assert_eq!(r.status, 200, "{}\n{}", r.text(), proxy.log_text());
        let e = r.echo()?;
        assert_eq!(e["tls"]["serverName"], "abc.example.com");
        let peer = e["tls"]["peerCertificates"][0].as_str().unwrap_or("");
        assert_eq!(peer.trim(), client_pem.trim());
        // A SAN the certificate does not carry, or an unrelated CA: the request fails.
        assert!([502, 503].contains(&proxy.get("abc.example.com", "/san-mismatch")?.status));
        assert!([502, 503].contains(&proxy.get("abc.example.com", "/wrong-ca")?.status));

        // TLS passthrough by SNI: the client talks TLS with the backend itself.
        let r = https_get_h1(
            passthrough,
            "abc.example.com",
            "abc.example.com",
            "/",
            &ca_pem,
            None,
        )?;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(
            r.body.contains("\"serverName\": \"abc.example.com\""),
            "{}",
            r.body
        );
        // No TLSRoute for this SNI: the connection is closed.
        assert!(https_get_h1(
            passthrough,
            "zzz.example.com",
            "zzz.example.com",
            "/",
            &ca_pem,
            None
        )
        .is_err());

        // Status: the policy is accepted for the Gateway; the TLSRoute is attached.
        let st: serde_json::Value = serde_json::from_slice(&proxy.admin("/status")?.body)?;
        let p = &st["backendTLSPolicies"];
        let san = p
            .as_array()
            .and_then(|a| a.iter().find(|x| x["name"] == "san-uri"))
            .context("policy status")?;
        assert_eq!(san["status"]["ancestors"][0]["ancestorRef"]["name"], "gw");
        let wrong = p
            .as_array()
            .and_then(|a| a.iter().find(|x| x["name"] == "wrong-ca"))
            .context("policy status")?;
        assert_eq!(
            wrong["status"]["ancestors"][0]["conditions"][1]["status"],
            "True"
        );
        let route = st["routes"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["kind"] == "TLSRoute"))
            .context("TLSRoute status")?;
        assert_eq!(
            route["status"]["parents"][0]["conditions"][0]["status"],
            "True"
        );
        Ok(())
    })
    .await??;
    Ok(())
}

/// An echo backend behind an Ingress for shop.example.com with a certificate from a fresh CA, written to a
/// manifest directory: the backend (kept alive by the caller), the CA and the directory.
async fn shop_over_tls() -> Result<(proto_conformance::echo::EchoServer, Ca, tempfile::TempDir)> {
    let web = echo("web-7d9f8b6c4-aaaaa", "shop").await?;
    let ca = ca("test ca")?;
    let cert = leaf(&ca, &["shop.example.com"])?;
    let yaml = format!(
        "{CLASSES}{}{}
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: shop, namespace: shop}}
spec:
  tls: [{{hosts: [shop.example.com], secretName: shop-tls}}]
  rules:
  - host: shop.example.com
    http:
      paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]
",
        service_yaml("shop", "web", 80, &[&web]),
        tls_secret("shop", "shop-tls", &cert),
    );
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("all.yaml"), yaml)?;
    Ok((web, ca, dir))
}

/// A TLS 1.3 client that trusts `ca_pem` and offers only HTTP/1.1.
fn h1_tls13_client(ca_pem: &str) -> Result<Arc<rustls::ClientConfig>> {
    let roots = roots_of(ca_pem)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Two HTTP/1.1 requests over TLS 1.3 on new connections with one client configuration (so one client session
/// cache): the kind of the second handshake, full or resumed.
fn second_handshake_kind(port: u16, ca_pem: &str) -> Result<rustls::HandshakeKind> {
    let config = h1_tls13_client(ca_pem)?;
    let mut kind = None;
    for _ in 0..2 {
        let mut conn = rustls::ClientConnection::new(
            config.clone(),
            ServerName::try_from("shop.example.com")?,
        )?;
        let mut sock = std::net::TcpStream::connect(("127.0.0.1", port))?;
        sock.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut tls = rustls::Stream::new(&mut conn, &mut sock);
        // The tickets, if any, arrive after the handshake: read the whole answer.
        write!(
            tls,
            "GET / HTTP/1.1\r\nHost: shop.example.com\r\nConnection: close\r\n\r\n"
        )?;
        let mut raw = Vec::new();
        let read = tls.read_to_end(&mut raw);
        anyhow::ensure!(
            String::from_utf8_lossy(&raw).starts_with("HTTP/1.1 200"),
            "no 200 over TLS ({read:?}): {}",
            String::from_utf8_lossy(&raw)
        );
        kind = conn.handshake_kind();
    }
    kind.context("no handshake")
}

#[tokio::test]
async fn tls_session_resumption_can_be_switched_off() -> Result<()> {
    // By default a returning client resumes its TLS 1.3 session (a ticket from the first connection); with
    // `--tls-resumption off` the server sends no ticket and keeps no session, so every handshake is full.
    let (_web, ca, dir) = shop_over_tls().await?;
    for (flags, want) in [
        (&[][..], rustls::HandshakeKind::Resumed),
        (
            &["--tls-resumption", "off"][..],
            rustls::HandshakeKind::Full,
        ),
    ] {
        let https = free_port();
        let https_flag = https.to_string();
        let mut args = vec!["--https-port", &https_flag];
        args.extend_from_slice(flags);
        let proxy = Proxy::start(dir.path(), free_port(), &args)?;
        let ca_pem = ca.pem.clone();
        let kind =
            tokio::task::spawn_blocking(move || second_handshake_kind(https, &ca_pem)).await??;
        assert_eq!(kind, want, "{flags:?}\n{}", proxy.log_text());
    }
    Ok(())
}

/// Whether `plain` holds a whole HTTP/1.1 answer (a `Content-Length` body, or a chunked one to its last chunk).
fn answer_complete(plain: &[u8]) -> bool {
    let text = String::from_utf8_lossy(plain);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())
            .flatten()
    });
    match length {
        Some(n) => body.len() >= n,
        None => body.ends_with("0\r\n\r\n"),
    }
}

/// One HTTP/1.1 request over TLS 1.3 on a keep-alive connection, with the TLS records read off the socket one by
/// one: how many records the answer came in, and the answer.
fn records_of_one_answer(port: u16, ca_pem: &str) -> Result<(usize, String)> {
    let mut conn = rustls::ClientConnection::new(
        h1_tls13_client(ca_pem)?,
        ServerName::try_from("shop.example.com")?,
    )?;
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", port))?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)?;
    }
    conn.writer()
        .write_all(b"GET / HTTP/1.1\r\nHost: shop.example.com\r\n\r\n")?;
    while conn.wants_write() {
        conn.write_tls(&mut sock)?;
    }
    let (mut raw, mut plain, mut records) = (Vec::new(), Vec::new(), 0);
    let mut buf = [0u8; 16 * 1024];
    while !answer_complete(&plain) {
        let n = sock.read(&mut buf)?;
        anyhow::ensure!(n > 0, "connection closed before the answer was complete");
        raw.extend_from_slice(&buf[..n]);
        // Whole records only (5-byte header: type, version, length), each handed to rustls on its own.
        while raw.len() >= 5 {
            let len = 5 + usize::from(u16::from_be_bytes([raw[3], raw[4]]));
            if raw.len() < len {
                break;
            }
            let record: Vec<u8> = raw.drain(..len).collect();
            records += 1;
            conn.read_tls(&mut &record[..])?;
            let state = conn.process_new_packets()?;
            let mut p = vec![0; state.plaintext_bytes_to_read()];
            conn.reader().read_exact(&mut p)?;
            plain.extend_from_slice(&p);
        }
    }
    Ok((records, String::from_utf8_lossy(&plain).into_owned()))
}

#[tokio::test]
async fn a_short_answer_is_one_tls_record() -> Result<()> {
    // The write buffer sits above TLS: a response header and a short body leave as one record (and one write),
    // as nginx's ssl_buffer_size does, instead of a record each.
    let (_web, ca, dir) = shop_over_tls().await?;
    let https = free_port();
    let https_flag = https.to_string();
    // No session tickets: the only records after the handshake are the answer's.
    let args = ["--https-port", &https_flag, "--tls-resumption", "off"];
    let proxy = Proxy::start(dir.path(), free_port(), &args)?;
    let ca_pem = ca.pem.clone();
    let (records, answer) =
        tokio::task::spawn_blocking(move || records_of_one_answer(https, &ca_pem)).await??;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "{answer}\n{}",
        proxy.log_text()
    );
    assert!(
        answer.len() < 8 * 1024,
        "not a short answer: {} bytes",
        answer.len()
    );
    assert_eq!(records, 1, "{answer}\n{}", proxy.log_text());
    Ok(())
}
