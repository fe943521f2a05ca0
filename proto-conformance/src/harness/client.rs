//! The conformance client: one request per connection, HTTP/1.1 (cleartext or TLS), HTTP/2 over TLS (ALPN `h2`),
//! HTTP/2 with prior knowledge (h2c), and WebSocket. Every operation is bounded by a timeout.
//!
//! It sends what Go's `net/http` client sends: header names in canonical form (`Title-Case`), `User-Agent:
//! Go-http-client/1.1` (`/2.0` on HTTP/2), `Accept-Encoding: gzip`, the `Host` header given, the path and query
//! exactly as given, and never follows redirects.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;

use super::tlsverify::{GoLikeVerifier, RecordingResolver};

/// Largest response body read.
const MAX_BODY: usize = 16 << 20;

/// The HTTP version to speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// HTTP/1.1 (over TLS when `tls` is set, with ALPN `http/1.1`).
    Http1,
    /// HTTP/2 over TLS (ALPN `h2`, required).
    H2,
    /// Cleartext HTTP/2 with prior knowledge.
    H2cPriorKnowledge,
}

/// TLS settings of a request.
#[derive(Clone, Debug)]
pub struct TlsSpec {
    /// SNI (may differ from the Host header on purpose).
    pub server_name: String,
    /// PEM of the certificates the client trusts.
    pub trust_pems: Vec<String>,
    /// Client certificate and key PEM to present when asked.
    pub client_cert: Option<(String, String)>,
    /// Set when the server asks for a client certificate (readable even when the exchange then fails).
    pub cert_requested: Arc<AtomicBool>,
}

/// One request.
#[derive(Clone, Debug)]
pub struct RequestSpec {
    /// Address to dial.
    pub connect: SocketAddr,
    /// TLS, if any.
    pub tls: Option<TlsSpec>,
    /// HTTP version.
    pub proto: Proto,
    /// Method.
    pub method: String,
    /// Host header / `:authority`.
    pub authority: String,
    /// Path and query, sent as given.
    pub path_and_query: String,
    /// Extra headers, in order (names are sent in canonical form on HTTP/1.1).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Option<Vec<u8>>,
    /// Bound for the whole exchange.
    pub timeout: Duration,
}

/// What came back.
#[derive(Clone, Debug, Default)]
pub struct Captured {
    /// Status code.
    pub status: u16,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// Response headers (lower-case names), in order.
    pub headers: Vec<(String, String)>,
    /// Body (at most 16 MiB).
    pub body: Vec<u8>,
    /// The server asked for a client certificate during the handshake.
    pub client_cert_requested: bool,
}

impl Captured {
    /// All values of a header (any case), in order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The values of a header joined with `,` (as the suite compares them), `None` if absent.
    pub fn header(&self, name: &str) -> Option<String> {
        let values = self.header_values(name);
        (!values.is_empty()).then(|| values.join(","))
    }
}

/// Why a round trip produced no response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RtError {
    /// TCP connect failed (refused, unreachable, ...).
    Connect(String),
    /// The TLS handshake failed.
    Tls(String),
    /// The HTTP exchange failed (reset, closed, malformed response, ALPN mismatch).
    Protocol(String),
    /// The time limit passed.
    Timeout(Duration),
    /// The request itself could not be built (bad header, bad PEM).
    Setup(String),
}

impl std::fmt::Display for RtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RtError::Connect(e) => write!(f, "connect failed: {e}"),
            RtError::Tls(e) => write!(f, "TLS handshake failed: {e}"),
            RtError::Protocol(e) => write!(f, "HTTP exchange failed: {e}"),
            RtError::Timeout(d) => write!(f, "no response within {}s", d.as_secs_f32()),
            RtError::Setup(e) => write!(f, "cannot build the request: {e}"),
        }
    }
}

/// Shared client state: the host names of the generated certificates (for Go-style name checks).
#[derive(Clone, Debug, Default)]
pub struct ClientContext {
    /// DNS SANs by certificate DER.
    pub known_sans: Arc<HashMap<Vec<u8>, Vec<String>>>,
}

/// Sends one request on a fresh connection and reads the whole response.
pub async fn round_trip(spec: &RequestSpec, ctx: &ClientContext) -> Result<Captured, RtError> {
    match tokio::time::timeout(spec.timeout, round_trip_inner(spec, ctx)).await {
        Ok(r) => r,
        Err(_) => Err(RtError::Timeout(spec.timeout)),
    }
}

/// An error and its sources, each once, joined with `: `.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        let msg = inner.to_string();
        if !s.contains(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        cur = inner.source();
    }
    s
}

/// The client side of a TLS handshake the way the conformance client does it: Go's verification rules against
/// `tls.trust_pems` (see `tlsverify`), SNI `tls.server_name`, the client certificate when asked, TLS 1.2+, and
/// the given ALPN protocol (`None`: no ALPN extension, as a Go `tls.Config` without `NextProtos`).
pub(crate) async fn connect_tls(
    tcp: TcpStream,
    tls: &TlsSpec,
    alpn: Option<&[u8]>,
    ctx: &ClientContext,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, RtError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = GoLikeVerifier::new(&tls.trust_pems, ctx.known_sans.clone(), provider.clone())
        .map_err(RtError::Setup)?;
    let resolver = RecordingResolver::new(
        tls.client_cert
            .as_ref()
            .map(|(c, k)| (c.as_str(), k.as_str())),
        tls.cert_requested.clone(),
        &provider,
    )
    .map_err(RtError::Setup)?;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| RtError::Setup(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = alpn.map(|p| vec![p.to_vec()]).unwrap_or_default();
    let server_name = ServerName::try_from(tls.server_name.clone())
        .map_err(|e| RtError::Setup(format!("server name {:?}: {e}", tls.server_name)))?;
    let stream = TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|e| RtError::Tls(error_chain(&e)))?;
    Ok(stream)
}

async fn round_trip_inner(spec: &RequestSpec, ctx: &ClientContext) -> Result<Captured, RtError> {
    let tcp = TcpStream::connect(spec.connect)
        .await
        .map_err(|e| RtError::Connect(format!("{}: {e}", spec.connect)))?;
    let _ = tcp.set_nodelay(true);
    let (io, h2): (Box<dyn IoBox>, bool) = match (&spec.tls, spec.proto) {
        (Some(tls), proto) => {
            let want_h2 = proto == Proto::H2;
            let alpn: &[u8] = if want_h2 { b"h2" } else { b"http/1.1" };
            let stream = connect_tls(tcp, tls, Some(alpn), ctx).await?;
            if want_h2 && stream.get_ref().1.alpn_protocol() != Some(b"h2") {
                return Err(RtError::Protocol(format!(
                    "server did not negotiate h2 (ALPN: {:?})",
                    stream
                        .get_ref()
                        .1
                        .alpn_protocol()
                        .map(|p| String::from_utf8_lossy(p).to_string())
                )));
            }
            (Box::new(stream), want_h2)
        }
        (None, Proto::H2cPriorKnowledge) => (Box::new(tcp), true),
        (None, _) => (Box::new(tcp), false),
    };
    let scheme = if spec.tls.is_some() { "https" } else { "http" };
    let mut captured = if h2 {
        send_h2(io, spec, scheme).await?
    } else {
        send_h1(io, spec).await?
    };
    captured.client_cert_requested = spec
        .tls
        .as_ref()
        .is_some_and(|t| t.cert_requested.load(Ordering::SeqCst));
    Ok(captured)
}

/// Boxed stream for hyper.
trait IoBox: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> IoBox for T {}

fn build_request(
    spec: &RequestSpec,
    uri: &str,
    host_header: bool,
    user_agent: &str,
) -> Result<http::Request<Full<Bytes>>, RtError> {
    let method = http::Method::from_bytes(spec.method.as_bytes())
        .map_err(|e| RtError::Setup(format!("method {:?}: {e}", spec.method)))?;
    let mut builder = http::Request::builder().method(method).uri(uri);
    if host_header {
        builder = builder.header(http::header::HOST, spec.authority.as_str());
    }
    let mut has_ua = false;
    for (name, value) in &spec.headers {
        has_ua |= name.eq_ignore_ascii_case("user-agent");
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| RtError::Setup(format!("header name {name:?}: {e}")))?;
        let value = http::HeaderValue::from_str(value)
            .map_err(|e| RtError::Setup(format!("header {name} value {value:?}: {e}")))?;
        builder = builder.header(name, value);
    }
    if !has_ua {
        builder = builder.header(http::header::USER_AGENT, user_agent);
    }
    builder = builder.header(http::header::ACCEPT_ENCODING, "gzip");
    let body = spec.body.clone().unwrap_or_default();
    builder
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| RtError::Setup(format!("request {uri:?}: {e}")))
}

async fn read_response(resp: http::Response<hyper::body::Incoming>) -> Result<Captured, RtError> {
    let status = resp.status().as_u16();
    let version = match resp.version() {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
    .to_string();
    let headers = resp
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).to_string(),
            )
        })
        .collect();
    let body = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| RtError::Protocol(format!("reading the body: {e}")))?
        .to_bytes()
        .to_vec();
    Ok(Captured {
        status,
        version,
        headers,
        body,
        client_cert_requested: false,
    })
}

async fn send_h1(io: Box<dyn IoBox>, spec: &RequestSpec) -> Result<Captured, RtError> {
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .title_case_headers(true)
        .handshake::<_, Full<Bytes>>(TokioIo::new(io))
        .await
        .map_err(|e| RtError::Protocol(error_chain(&e)))?;
    let conn_task = tokio::spawn(conn);
    let req = build_request(spec, &spec.path_and_query, true, "Go-http-client/1.1")?;
    let result = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| RtError::Protocol(error_chain(&e)))?;
        read_response(resp).await
    }
    .await;
    conn_task.abort();
    result
}

async fn send_h2(
    io: Box<dyn IoBox>,
    spec: &RequestSpec,
    scheme: &str,
) -> Result<Captured, RtError> {
    let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, Full<Bytes>>(TokioIo::new(io))
        .await
        .map_err(|e| RtError::Protocol(error_chain(&e)))?;
    let conn_task = tokio::spawn(conn);
    let uri = format!("{scheme}://{}{}", spec.authority, spec.path_and_query);
    let req = build_request(spec, &uri, false, "Go-http-client/2.0")?;
    let result = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| RtError::Protocol(error_chain(&e)))?;
        read_response(resp).await
    }
    .await;
    conn_task.abort();
    result
}

/// A plain `GET` (the admin API).
pub async fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<Captured, RtError> {
    let spec = RequestSpec {
        connect: addr,
        tls: None,
        proto: Proto::Http1,
        method: "GET".to_string(),
        authority: addr.to_string(),
        path_and_query: path.to_string(),
        headers: Vec::new(),
        body: None,
        timeout,
    };
    round_trip(&spec, &ClientContext::default()).await
}

/// A WebSocket exchange to check.
#[derive(Clone, Debug)]
pub struct WebsocketCheck {
    /// Address to dial.
    pub connect: SocketAddr,
    /// Host header.
    pub authority: String,
    /// Request path.
    pub path: String,
    /// Extra headers (the echo server requires `Origin`).
    pub headers: Vec<(String, String)>,
    /// Text to send and expect back.
    pub text: Option<(String, String)>,
    /// Binary to send and expect back.
    pub binary: Option<(Vec<u8>, Vec<u8>)>,
    /// Bound for the whole exchange.
    pub timeout: Duration,
}

/// Opens a WebSocket through the proxy and checks the echoes.
pub async fn websocket_round_trip(check: &WebsocketCheck) -> Result<(), String> {
    match tokio::time::timeout(check.timeout, websocket_inner(check)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no complete exchange within {}s",
            check.timeout.as_secs_f32()
        )),
    }
}

async fn websocket_inner(check: &WebsocketCheck) -> Result<(), String> {
    let tcp = TcpStream::connect(check.connect)
        .await
        .map_err(|e| format!("connect failed: {}: {e}", check.connect))?;
    let mut request = format!("ws://{}{}", check.authority, check.path)
        .into_client_request()
        .map_err(|e| format!("building the upgrade request: {e}"))?;
    for (name, value) in &check.headers {
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| format!("header name {name:?}: {e}"))?;
        let value = http::HeaderValue::from_str(value)
            .map_err(|e| format!("header value {value:?}: {e}"))?;
        request.headers_mut().insert(name, value);
    }
    let (mut ws, response) = tokio_tungstenite::client_async(request, tcp)
        .await
        .map_err(|e| format!("WebSocket upgrade failed: {e}"))?;
    let _ = response;
    if let Some((send, expect)) = &check.text {
        ws.send(Message::text(send.clone()))
            .await
            .map_err(|e| format!("sending a text message: {e}"))?;
        match next_data(&mut ws).await? {
            Message::Text(t) if t.as_str() == expect => {}
            other => {
                return Err(format!(
                    "sent text {send:?}, expected {expect:?} back, got {other:?}"
                ))
            }
        }
    }
    if let Some((send, expect)) = &check.binary {
        ws.send(Message::binary(send.clone()))
            .await
            .map_err(|e| format!("sending a binary message: {e}"))?;
        match next_data(&mut ws).await? {
            Message::Binary(b) if b.as_ref() == expect.as_slice() => {}
            other => {
                return Err(format!(
                    "sent binary {send:02x?}, expected {expect:02x?} back, got {other:?}"
                ))
            }
        }
    }
    let _ = ws.close(None).await;
    Ok(())
}

async fn next_data<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> Result<Message, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Bounded: at most a few control frames before the echo.
    for _ in 0..16 {
        match ws.next().await {
            None => return Err("connection closed before the echo".to_string()),
            Some(Err(e)) => return Err(format!("reading the echo: {e}")),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(m)) => return Ok(m),
        }
    }
    Err("no data message among the first 16 frames".to_string())
}

/// Hex string to bytes (`None` if malformed).
pub fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
