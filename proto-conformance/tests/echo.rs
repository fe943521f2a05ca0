//! End-to-end tests of the echo-basic mimic: real sockets on 127.0.0.1, real HTTP/1.1 (written by hand), HTTP/2,
//! TLS and WebSocket clients. Every test is bounded by a timeout.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use proto_conformance::echo::{EchoConfig, EchoListener, EchoServer, EchoTls};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::{self, Message};

const POD: &str = "infra-backend-v1-7f9c8d6b5-x2x9k";
const NS: &str = "gateway-conformance-infra";

fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Runs a test body with a hard time limit.
async fn bounded<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("test timed out");
}

async fn start(h2c: bool) -> EchoServer {
    let mut cfg = EchoConfig::new(POD, NS, localhost());
    if h2c {
        cfg.h2c_addr = Some(localhost());
    }
    EchoServer::start(cfg).await.expect("start echo server")
}

#[derive(Debug)]
struct RawResponse {
    status: u16,
    /// Header names as sent on the wire.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// Reads one HTTP/1.1 response (Content-Length framed, or up to EOF).
async fn read_response<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<RawResponse> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "EOF before response head",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .expect("status code")
        .parse()
        .expect("numeric status");
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').expect("header line");
            (n.to_owned(), v.trim().to_owned())
        })
        .collect();
    let mut body = buf[head_end + 4..].to_vec();
    let length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse::<usize>().expect("numeric content-length"));
    match length {
        Some(len) => {
            while body.len() < len {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        }
        None if status == 101 || status == 204 || status == 304 || (100..200).contains(&status) => {
        }
        None => {
            stream.read_to_end(&mut body).await?;
        }
    }
    Ok(RawResponse {
        status,
        headers,
        body,
    })
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    request: &str,
) -> std::io::Result<RawResponse> {
    stream.write_all(request.as_bytes()).await?;
    read_response(stream).await
}

/// Sends one hand-written HTTP/1.1 request on a new connection.
async fn raw(addr: SocketAddr, request: &str) -> RawResponse {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    exchange(&mut stream, request).await.expect("response")
}

async fn get(addr: SocketAddr, path: &str) -> RawResponse {
    raw(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: example.com\r\n\r\n"),
    )
    .await
}

#[tokio::test]
async fn echo_body_is_byte_for_byte_like_echo_basic() {
    bounded(async {
        let server = start(false).await;
        let addr = server.http_addr();
        let resp = raw(
            addr,
            "GET /v2/example?animal=whale&color=blue HTTP/1.1\r\nHost: example.com\r\nUser-Agent: Go-http-client/1.1\r\n\
             X-Echo-Set-Header: \r\nX-Forwarded-For: 10.0.0.1\r\nAccept-Encoding: gzip\r\n\r\n",
        )
        .await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("Content-Type"), Some("application/json"));
        assert_eq!(resp.header("X-Content-Type-Options"), Some("nosniff"));
        // hyper writes title-case names, like Go's canonical ones.
        assert!(resp.headers.iter().any(|(n, _)| n == "Content-Type"), "{:?}", resp.headers);
        let expected = format!(
            r#"{{
 "path": "/v2/example?animal=whale\u0026color=blue",
 "host": "example.com",
 "method": "GET",
 "proto": "HTTP/1.1",
 "headers": {{
  "Accept-Encoding": [
   "gzip"
  ],
  "User-Agent": [
   "Go-http-client/1.1"
  ],
  "X-Echo-Set-Header": [
   ""
  ],
  "X-Forwarded-For": [
   "10.0.0.1"
  ]
 }},
 "httpPort": "{}",
 "namespace": "gateway-conformance-infra",
 "ingress": "",
 "service": "",
 "pod": "infra-backend-v1-7f9c8d6b5-x2x9k"
}}"#,
            addr.port()
        );
        assert_eq!(String::from_utf8(resp.body).expect("UTF-8"), expected);

        let received = server.received();
        assert_eq!(received.len(), 1);
        let r = &received[0];
        assert_eq!(r.listener, EchoListener::Http);
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/v2/example?animal=whale&color=blue");
        assert_eq!(r.host, "example.com");
        assert_eq!(r.proto, "HTTP/1.1");
        assert_eq!(r.header("x-forwarded-for").as_deref(), Some("10.0.0.1"));
        assert_eq!(r.header("X-Echo-Set-Header").as_deref(), Some(""));
        assert_eq!(r.header("Host"), None);
        assert_eq!(r.remote_addr.ip(), addr.ip());
        assert_eq!(r.tls_server_name, None);
    })
    .await;
}

#[tokio::test]
async fn header_names_are_canonical_and_host_keeps_its_port() {
    bounded(async {
        let server = start(false).await;
        let resp = raw(
            server.http_addr(),
            "POST /p?x=%41 HTTP/1.1\r\nHost: foo.example:8080\r\nx-foo-bar: 1\r\nX-FOO-BAR: 2\r\nsome_header: z\r\n\
             Content-Length: 5\r\n\r\nhello",
        )
        .await;
        assert_eq!(resp.status, 200);
        let json = resp.json();
        assert_eq!(json["host"], "foo.example:8080");
        assert_eq!(json["method"], "POST");
        assert_eq!(json["path"], "/p?x=%41");
        assert_eq!(json["headers"]["X-Foo-Bar"], serde_json::json!(["1", "2"]));
        assert_eq!(json["headers"]["Some_header"], serde_json::json!(["z"]));
        assert_eq!(json["headers"]["Content-Length"], serde_json::json!(["5"]));
        assert!(json["headers"].get("Host").is_none());
        assert!(json.get("tls").is_none());
        let received = server.received();
        assert_eq!(received[0].body, Bytes::from_static(b"hello"));
        assert_eq!(received[0].header_values("x-foo-bar"), ["1", "2"]);

        // HTTP/1.1 without Host is refused like Go's server does.
        let resp = raw(server.http_addr(), "GET / HTTP/1.1\r\n\r\n").await;
        assert_eq!(resp.status, 400);
        assert_eq!(resp.body, b"400 Bad Request: missing required Host header");
    })
    .await;
}

#[tokio::test]
async fn echo_set_header_sets_and_appends() {
    bounded(async {
        let server = start(false).await;
        let resp = raw(
            server.http_addr(),
            "GET /x HTTP/1.1\r\nHost: h\r\nX-Echo-Set-Header: X-Foo: bar, x-baz:1\r\nX-Echo-Set-Header: X-Foo:again\r\n\r\n",
        )
        .await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("X-Foo"), Some("bar,again"));
        assert_eq!(resp.header("X-Baz"), Some("1"));
        assert_eq!(resp.header("Content-Type"), Some("application/json"));
        assert_eq!(
            resp.json()["headers"]["X-Echo-Set-Header"],
            serde_json::json!(["X-Foo: bar, x-baz:1", "X-Foo:again"])
        );
    })
    .await;
}

#[tokio::test]
async fn status_health_and_path_handling() {
    bounded(async {
        let server = start(false).await;
        let addr = server.http_addr();

        let resp = get(addr, "/status/418").await;
        assert_eq!(resp.status, 418);
        assert!(resp.body.is_empty());
        assert_eq!(get(addr, "/status/abc").await.status, 400);
        assert_eq!(get(addr, "/status/4180").await.status, 400);
        // The status regexp runs on the raw request URI, so a query (or `//`) makes it a 400.
        assert_eq!(get(addr, "/status/200?x=1").await.status, 400);
        assert_eq!(get(addr, "//status/200").await.status, 400);
        let resp = get(addr, "/status").await;
        assert_eq!(resp.status, 301);
        assert_eq!(resp.header("Location"), Some("/status/"));

        let resp = get(addr, "/health").await;
        assert_eq!((resp.status, resp.body.as_slice()), (200, &b"OK"[..]));
        assert_eq!(
            resp.header("Content-Type"),
            Some("text/plain; charset=utf-8")
        );
        // `//` becomes `/` before routing.
        assert_eq!(get(addr, "//health").await.body, b"OK");
        // Go's ServeMux redirects unclean paths.
        let resp = get(addr, "/a/../health?q=1").await;
        assert_eq!(resp.status, 301);
        assert_eq!(resp.header("Location"), Some("/health?q=1"));

        // None of these were echoed.
        assert!(server.received().is_empty());
        let resp = get(addr, "//echo//me").await;
        assert_eq!(resp.json()["path"], "//echo//me");
        assert_eq!(server.received().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn retry_parameters_are_required() {
    bounded(async {
        let server = start(false).await;
        let addr = server.http_addr();
        let resp = get(addr, "/retry/x?succeedAfter=1").await;
        assert_eq!(
            (resp.status, resp.body.as_slice()),
            (400, &b"uuid is required"[..])
        );
        let resp = get(addr, "/retry/x?uuid=u1").await;
        assert_eq!(
            (resp.status, resp.body.as_slice()),
            (400, &b"succeedAfter is required"[..])
        );
        let resp = get(addr, "/retry/x?uuid=u1&succeedAfter=two").await;
        assert_eq!(resp.status, 400);
        assert_eq!(get(addr, "/retry").await.status, 301);
    })
    .await;
}

#[tokio::test]
async fn retry_counts_attempts_per_uuid_with_response_code() {
    bounded(async {
        let server = start(false).await;
        let addr = server.http_addr();
        let path = "/retry/code?responseCode=503&succeedAfter=2&uuid=aaaa";
        // Several attempts on one keep-alive connection, as a proxy's pool would send them.
        let mut conn = TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(
            exchange(&mut conn, &request).await.expect("1st").status,
            503
        );
        assert_eq!(
            get(
                addr,
                "/retry/code?responseCode=503&succeedAfter=2&uuid=bbbb"
            )
            .await
            .status,
            503
        );
        assert_eq!(
            exchange(&mut conn, &request).await.expect("2nd").status,
            503
        );
        let ok = exchange(&mut conn, &request).await.expect("3rd");
        assert_eq!(ok.status, 200);
        assert_eq!(ok.json()["path"], path);
        // Once succeeded, it keeps succeeding.
        assert_eq!(get(addr, path).await.status, 200);
        // Only the echoed attempts are recorded.
        assert_eq!(server.received().len(), 2);
    })
    .await;
}

#[tokio::test]
async fn retry_without_response_code_resets_the_connection() {
    bounded(async {
        let server = start(false).await;
        let addr = server.http_addr();
        let request = "GET /retry/reset?succeedAfter=1&uuid=cccc HTTP/1.1\r\nHost: h\r\n\r\n";
        let mut conn = TcpStream::connect(addr).await.expect("connect");
        conn.write_all(request.as_bytes()).await.expect("write");
        let mut buf = [0u8; 64];
        let err = conn
            .read(&mut buf)
            .await
            .expect_err("the connection must be reset, not answered");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
        let resp = raw(addr, request).await;
        assert_eq!(resp.status, 200);

        // delayRetry waits before failing.
        let started = Instant::now();
        let resp = get(
            addr,
            "/retry/slow?delayRetry=200ms&responseCode=500&succeedAfter=1&uuid=dddd",
        )
        .await;
        assert_eq!(resp.status, 500);
        assert!(started.elapsed() >= Duration::from_millis(200));
    })
    .await;
}

#[tokio::test]
async fn delay_query_delays_and_bad_delay_is_a_500() {
    bounded(async {
        let server = start(false).await;
        let addr = server.http_addr();
        let started = Instant::now();
        let resp = get(addr, "/slow?delay=0.2s").await;
        assert_eq!(resp.status, 200);
        assert!(started.elapsed() >= Duration::from_millis(200), "{:?}", started.elapsed());

        let resp = get(addr, "/slow?delay=abc").await;
        assert_eq!(resp.status, 500);
        assert_eq!(resp.header("Content-Type"), Some("application/json"));
        assert_eq!(String::from_utf8_lossy(&resp.body), r#"{"message":"time: invalid duration \"abc\""}"#);

        // Form values in a url-encoded body count too (Go's FormValue).
        let started = Instant::now();
        let body = "delay=150ms";
        let resp = raw(
            addr,
            &format!(
                "POST /form HTTP/1.1\r\nHost: h\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        )
        .await;
        assert_eq!(resp.status, 200);
        assert!(started.elapsed() >= Duration::from_millis(150));
    })
    .await;
}

#[tokio::test]
async fn h2c_port_wants_http2() {
    bounded(async {
        let server = start(true).await;
        let h2c = server.h2c_addr().expect("h2c listener");

        let resp = get(h2c, "/").await;
        assert_eq!(resp.status, 400);
        assert_eq!(resp.body, b"Expected h2c request");

        let resp = raw(
            h2c,
            "GET /up HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
        )
        .await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.json()["proto"], "HTTP/1.1");

        // HTTP/2 with prior knowledge.
        let tcp = TcpStream::connect(h2c).await.expect("connect");
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .expect("h2");
        tokio::spawn(conn);
        let req = http::Request::builder()
            .uri("http://grpc.example:8081/h2/path?a=b")
            .header("x-custom", "v")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let resp = sender.send_request(req).await.expect("h2 response");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/json");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        let json: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(json["proto"], "HTTP/2.0");
        assert_eq!(json["path"], "/h2/path?a=b");
        assert_eq!(json["host"], "grpc.example:8081");
        assert_eq!(json["headers"]["X-Custom"], serde_json::json!(["v"]));
        assert_eq!(json["httpPort"], server.http_addr().port().to_string());
        let last = server.received().pop().expect("recorded");
        assert_eq!(
            (last.listener, last.proto.as_str()),
            (EchoListener::H2c, "HTTP/2.0")
        );

        // The HTTP port is HTTP/1.1 only, like echo-basic's.
        let tcp = TcpStream::connect(server.http_addr())
            .await
            .expect("connect");
        let attempt = async {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                    .await?;
            tokio::spawn(conn);
            let req = http::Request::builder()
                .uri("http://h/")
                .body(Empty::<Bytes>::new())
                .expect("request");
            sender.send_request(req).await
        };
        assert!(attempt.await.is_err());
    })
    .await;
}

#[tokio::test]
async fn websocket_echoes_text_and_binary() {
    bounded(async {
        let server = start(false).await;
        let addr = server.http_addr();
        let mut request = format!("ws://{addr}/ws")
            .into_client_request()
            .expect("ws request");
        request.headers_mut().insert(
            "Origin",
            http::HeaderValue::from_static("ws://gateway/test"),
        );
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let (mut ws, resp) = tokio_tungstenite::client_async(request, tcp)
            .await
            .expect("handshake");
        assert_eq!(resp.status(), 101);
        ws.send(Message::text("Websocket Support!"))
            .await
            .expect("send text");
        assert_eq!(
            ws.next().await.expect("frame").expect("ok"),
            Message::text("Websocket Support!")
        );
        let binary = Bytes::from_static(&[1, 2, 3, 4, 5, 6, 7]);
        ws.send(Message::Binary(binary.clone()))
            .await
            .expect("send binary");
        assert_eq!(
            ws.next().await.expect("frame").expect("ok"),
            Message::Binary(binary)
        );
        ws.close(None).await.expect("close");

        // x/net/websocket refuses a handshake without Origin.
        let request = format!("ws://{addr}/ws")
            .into_client_request()
            .expect("ws request");
        let tcp = TcpStream::connect(addr).await.expect("connect");
        match tokio_tungstenite::client_async(request, tcp).await {
            Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
            other => panic!("expected a 403, got {other:?}"),
        }
        // A plain GET /ws is not a WebSocket handshake.
        let resp = get(addr, "/ws").await;
        assert_eq!(
            (resp.status, resp.body.as_slice()),
            (400, &b"not websocket protocol"[..])
        );
    })
    .await;
}

struct Pki {
    ca_pem: String,
    /// A client certificate from a CA the server does not trust.
    rogue_client_cert_pem: String,
    rogue_client_key_pem: String,
    server_cert_pem: String,
    server_key_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
}

fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "echo test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).expect("CA cert");
    let issuer = Issuer::new(ca, ca_key);

    let server_key = KeyPair::generate().expect("server key");
    let mut server =
        CertificateParams::new(vec!["echo.example".to_owned()]).expect("server params");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server.signed_by(&server_key, &issuer).expect("server cert");

    let client_key = KeyPair::generate().expect("client key");
    let mut client =
        CertificateParams::new(vec!["client.example".to_owned()]).expect("client params");
    client
        .distinguished_name
        .push(DnType::CommonName, "echo test client");
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client.signed_by(&client_key, &issuer).expect("client cert");

    let rogue_key = KeyPair::generate().expect("rogue key");
    let mut rogue = CertificateParams::new(vec!["rogue.example".to_owned()]).expect("rogue params");
    rogue.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let rogue_cert = rogue.self_signed(&rogue_key).expect("rogue cert");

    Pki {
        ca_pem: ca_cert.pem(),
        rogue_client_cert_pem: rogue_cert.pem(),
        rogue_client_key_pem: rogue_key.serialize_pem(),
        server_cert_pem: server_cert.pem(),
        server_key_pem: server_key.serialize_pem(),
        client_cert_pem: client_cert.pem(),
        client_key_pem: client_key.serialize_pem(),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum ClientCert {
    None,
    Trusted,
    Rogue,
}

async fn tls_connect(
    addr: SocketAddr,
    pki: &Pki,
    client_cert: ClientCert,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).expect("CA PEM"))
        .expect("root");
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let (cert_pem, key_pem) = match client_cert {
        ClientCert::None => (None, None),
        ClientCert::Trusted => (Some(&pki.client_cert_pem), Some(&pki.client_key_pem)),
        ClientCert::Rogue => (
            Some(&pki.rogue_client_cert_pem),
            Some(&pki.rogue_client_key_pem),
        ),
    };
    let mut config = match (cert_pem, key_pem) {
        (Some(cert), Some(key)) => {
            let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).expect("client PEM")];
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("client key PEM");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client auth")
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.expect("connect");
    connector
        .connect(
            ServerName::try_from("echo.example").expect("server name"),
            tcp,
        )
        .await
        .expect("TLS handshake")
}

#[tokio::test]
async fn https_reports_tls_and_client_certificates() {
    bounded(async {
        let pki = pki();
        let mut cfg = EchoConfig::new("tls-backend-5d7c9b8f4-abcde", NS, localhost());
        cfg.https = Some(EchoTls {
            addr: localhost(),
            cert_pem: pki.server_cert_pem.clone(),
            key_pem: pki.server_key_pem.clone(),
            client_ca_pem: Some(pki.ca_pem.clone()),
        });
        let server = EchoServer::start(cfg).await.expect("start");
        let https = server.https_addr().expect("https listener");

        // HTTP/1.1 (no ALPN) with a client certificate.
        let mut tls = tls_connect(https, &pki, ClientCert::Trusted, &[]).await;
        let resp = exchange(&mut tls, "GET /tls HTTP/1.1\r\nHost: echo.example\r\n\r\n")
            .await
            .expect("response");
        assert_eq!(resp.status, 200);
        let body = String::from_utf8(resp.body.clone()).expect("UTF-8");
        let json = resp.json();
        let t = &json["tls"];
        assert_eq!(t["version"], "TLSv1.3");
        assert_eq!(t["serverName"], "echo.example");
        assert_eq!(t["cipherSuite"], "TLS_AES_128_GCM_SHA256");
        assert_eq!(
            t["peerCertificates"],
            serde_json::json!([pki.client_cert_pem])
        );
        assert!(t.get("negotiatedProtocol").is_none());
        assert_eq!(json["httpPort"], server.http_addr().port().to_string());
        // Key order of the tls object.
        let order = [
            "\"version\"",
            "\"peerCertificates\"",
            "\"serverName\"",
            "\"cipherSuite\"",
        ]
        .map(|k| body.find(k).expect("key present"));
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{body}");
        let r = server.received().pop().expect("recorded");
        assert_eq!(r.listener, EchoListener::Https);
        assert_eq!(r.tls_server_name.as_deref(), Some("echo.example"));
        assert_eq!(r.client_certificates, vec![pki.client_cert_pem.clone()]);

        // HTTP/2 via ALPN, without a client certificate (accepted: verified only if given).
        let tls = tls_connect(https, &pki, ClientCert::None, &[b"h2", b"http/1.1"]).await;
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .expect("h2");
        tokio::spawn(conn);
        let req = http::Request::builder()
            .uri("https://echo.example/h2")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let resp = sender.send_request(req).await.expect("response");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        let json: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(json["proto"], "HTTP/2.0");
        assert_eq!(json["tls"]["negotiatedProtocol"], "h2");
        assert!(json["tls"].get("peerCertificates").is_none());

        // A retry "reset" over HTTP/2 cannot hijack: echo-basic answers 500.
        let req = http::Request::builder()
            .uri("https://echo.example/retry/x?succeedAfter=1&uuid=h2")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let resp = sender.send_request(req).await.expect("response");
        assert_eq!(resp.status(), 500);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(
            &body[..],
            br#"{"message":"response writer does not support hijacking"}"#
        );

        // A client certificate that does not chain to the client CA is refused (TLS 1.3: after the
        // client's side of the handshake, so the exchange fails).
        let mut tls = tls_connect(https, &pki, ClientCert::Rogue, &[]).await;
        let refused = exchange(&mut tls, "GET /tls HTTP/1.1\r\nHost: echo.example\r\n\r\n").await;
        assert!(refused.is_err(), "{refused:?}");
        assert_eq!(server.received().len(), 2);
    })
    .await;
}

#[tokio::test]
async fn received_can_be_awaited_and_cleared() {
    bounded(async {
        let server = start(false).await;
        let addr = server.http_addr();
        let waiter = server.wait_for_request(Duration::from_secs(5), |r| r.path == "/mirror?id=7");
        let send = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            get(addr, "/other").await;
            get(addr, "/mirror?id=7").await;
        };
        let (found, ()) = tokio::join!(waiter, send);
        assert_eq!(found.expect("mirrored request").host, "example.com");
        assert_eq!(server.received().len(), 2);
        server.clear_received();
        assert!(server.received().is_empty());
        assert!(server
            .wait_for_request(Duration::from_millis(100), |_| true)
            .await
            .is_none());

        // Shutting down closes the listener.
        server.shutdown_and_wait().await;
        assert!(TcpStream::connect(addr).await.is_err());
    })
    .await;
}

#[tokio::test]
async fn binary_runs_several_backends() {
    use tokio::io::AsyncBufReadExt as _;
    bounded(async {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_echo-server"))
            .args(["--namespace", "default"])
            .args([
                "--listen",
                "127.0.0.1:0",
                "--pod",
                "demo-v1-5d7c9b8f4-abcde",
                "--h2c-listen",
                "127.0.0.1:0",
            ])
            .args([
                "--listen=127.0.0.1:0",
                "--pod=demo-v2-6c8d9e7f5-fghij",
                "--namespace",
                "other",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn echo-server");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let mut ready = Vec::new();
        while ready.len() < 2 {
            let line = lines
                .next_line()
                .await
                .expect("read stderr")
                .expect("echo-server exited early");
            if line.starts_with("echo-server: ready") {
                ready.push(line);
            }
        }
        let field = |line: &str, key: &str| -> String {
            line.split(' ')
                .find_map(|kv| kv.strip_prefix(&format!("{key}=")).map(str::to_owned))
                .expect("field")
        };
        assert_eq!(field(&ready[0], "pod"), "demo-v1-5d7c9b8f4-abcde");
        assert!(ready[0].contains(" h2c="));
        assert_eq!(field(&ready[1], "namespace"), "other");
        for (line, pod, ns) in [
            (&ready[0], "demo-v1-5d7c9b8f4-abcde", "default"),
            (&ready[1], "demo-v2-6c8d9e7f5-fghij", "other"),
        ] {
            let addr: SocketAddr = field(line, "http").parse().expect("addr");
            let json = get(addr, "/").await.json();
            assert_eq!(json["pod"], pod);
            assert_eq!(json["namespace"], ns);
        }
        let h2c: SocketAddr = field(&ready[0], "h2c").parse().expect("addr");
        assert_eq!(get(h2c, "/").await.status, 400);

        let help = tokio::process::Command::new(env!("CARGO_BIN_EXE_echo-server"))
            .arg("--help")
            .output()
            .await
            .expect("run --help");
        assert!(help.status.success());
        assert!(String::from_utf8_lossy(&help.stdout).contains("--listen ADDR"));
        let bad = tokio::process::Command::new(env!("CARGO_BIN_EXE_echo-server"))
            .args(["--listen", "nonsense"])
            .output()
            .await
            .expect("run with a bad address");
        assert_eq!(bad.status.code(), Some(2));
    })
    .await;
}
