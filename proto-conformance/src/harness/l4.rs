//! The clients and comparisons of the L4 cases (upstream `conformance/utils/tcp/tcp.go`, `utils/udp/udp.go`,
//! `utils/tls/tls.go` `MakeTLSConnectionAndExpectEventuallyConnectionRejection`, and the DNS exchange of
//! `tests/udproute-simple.go`). Every operation is bounded by a timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpStream, UdpSocket};
use tokio_rustls::TlsConnector;

use super::client::{connect_tls, ClientContext, TlsSpec};
use crate::echo::dns;
use crate::echo::tcp::WELCOME;

/// The `TEST` answer of the TCP echo (upstream `tcpserver.TCPAssertions`; unknown fields ignored).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct TcpPayload {
    /// `NAMESPACE`.
    pub namespace: String,
    /// `SERVICE_NAME`.
    pub service: String,
    /// `POD_NAME`.
    pub pod: String,
    /// The plain port.
    pub tcpport: String,
    /// The connection was TLS.
    #[serde(rename = "isTLS")]
    pub is_tls: bool,
    /// TLS facts, on TLS connections.
    pub tls: Option<TcpTlsPayload>,
}

/// The `tls` object of the TCP echo's answer.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TcpTlsPayload {
    /// e.g. `TLS 1.3`.
    pub version: String,
    /// SNI the backend saw.
    pub server_name: String,
    /// ALPN.
    pub negotiated_protocol: String,
}

/// What one run of the TCP dialogue read (each line as received, newline included).
#[derive(Clone, Debug, Default)]
pub struct TcpDialogue {
    /// The first line.
    pub welcome: String,
    /// The answer to `PING`.
    pub pong: String,
    /// The answer to `IS_TLS`.
    pub is_tls: String,
    /// The answer to `TEST`.
    pub test_line: String,
}

async fn read_line<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    what: &str,
) -> Result<String, String> {
    let mut line = Vec::new();
    let n = tokio::io::AsyncReadExt::take(&mut *r, 64 * 1024)
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| format!("reading {what}: {e}"))?;
    if n == 0 {
        return Err(format!("reading {what}: EOF"));
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

async fn run_dialogue<S: AsyncRead + AsyncWrite + Unpin>(stream: S) -> Result<TcpDialogue, String> {
    let (read, mut write) = tokio::io::split(stream);
    let mut reader = BufReader::new(read);
    let mut d = TcpDialogue {
        welcome: read_line(&mut reader, "the welcome message").await?,
        ..TcpDialogue::default()
    };
    for (cmd, slot) in [
        ("PING\n", &mut d.pong),
        ("IS_TLS\n", &mut d.is_tls),
        ("TEST\n", &mut d.test_line),
    ] {
        write
            .write_all(cmd.as_bytes())
            .await
            .map_err(|e| format!("sending {}: {e}", cmd.trim_end()))?;
        *slot = read_line(&mut reader, &format!("the answer to {}", cmd.trim_end())).await?;
    }
    Ok(d)
}

/// Dials `connect` (with TLS when `tls` is set: SNI, trusted PEMs, no ALPN) and runs the whole dialogue:
/// welcome, `PING`, `IS_TLS`, `TEST` (upstream `WaitForValidTCPResponse`, one attempt).
pub async fn tcp_dialogue(
    connect: SocketAddr,
    tls: Option<&TlsSpec>,
    ctx: &ClientContext,
    timeout: Duration,
) -> Result<TcpDialogue, String> {
    let attempt = async {
        let tcp = TcpStream::connect(connect)
            .await
            .map_err(|e| format!("connect {connect}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        match tls {
            None => run_dialogue(tcp).await,
            Some(tls) => {
                let stream = connect_tls(tcp, tls, None, ctx)
                    .await
                    .map_err(|e| e.to_string())?;
                run_dialogue(stream).await
            }
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no complete dialogue within {}s",
                timeout.as_secs_f32()
            ))
        })
}

/// What a `tcp` case expects (upstream `tcp.ExpectedResponse`).
#[derive(Clone, Debug, Default)]
pub struct TcpExpectation {
    /// The answer to `IS_TLS`.
    pub backend_is_tls: bool,
    /// The pod name must start with `<backend>-`.
    pub backend: String,
    /// The namespace the backend reports.
    pub namespace: String,
    /// The SNI the backend saw (checked when non-empty).
    pub hostname: String,
}

/// Upstream's assertions on one dialogue, in its order.
pub fn check_tcp(exp: &TcpExpectation, d: &TcpDialogue) -> Result<TcpPayload, String> {
    if d.welcome != WELCOME {
        return Err(format!(
            "TCPServer welcome message does not match: expected {WELCOME:?}, got {:?}",
            d.welcome
        ));
    }
    if d.pong != "PONG\n" {
        return Err(format!("expected \"PONG\\n\", got {:?}", d.pong));
    }
    let want = exp.backend_is_tls.to_string();
    let got = d.is_tls.strip_suffix('\n').unwrap_or(&d.is_tls);
    if got != want {
        return Err(format!(
            "expected IS_TLS to answer {want} (the backend {} TLS), got {got:?}",
            if exp.backend_is_tls {
                "sees"
            } else {
                "does not see"
            }
        ));
    }
    let payload: TcpPayload = serde_json::from_str(d.test_line.trim_end())
        .map_err(|e| format!("the TEST answer is not JSON ({e}): {:?}", d.test_line))?;
    if payload.namespace != exp.namespace {
        return Err(format!(
            "namespace does not match: expected {:?}, got {:?}",
            exp.namespace, payload.namespace
        ));
    }
    if !payload.pod.starts_with(&format!("{}-", exp.backend)) {
        return Err(format!(
            "backend name does not match with pod prefix. pod={} and backend={}",
            payload.pod, exp.backend
        ));
    }
    if !exp.hostname.is_empty() {
        let seen = payload
            .tls
            .as_ref()
            .map(|t| t.server_name.as_str())
            .ok_or_else(|| {
                format!(
                    "expected the backend to see SNI {}, but it saw no TLS",
                    exp.hostname
                )
            })?;
        if seen != exp.hostname {
            return Err(format!(
                "expected the backend to see SNI {}, got {seen:?}",
                exp.hostname
            ));
        }
    }
    Ok(payload)
}

/// Upstream `tcp.EchoSendOnce`: plain TCP, welcome, `TEST`, the answering pod's name.
pub async fn tcp_echo_once(connect: SocketAddr, timeout: Duration) -> Result<String, String> {
    let attempt = async {
        let tcp = TcpStream::connect(connect)
            .await
            .map_err(|e| format!("dialing TCP {connect}: {e}"))?;
        let (read, mut write) = tokio::io::split(tcp);
        let mut reader = BufReader::new(read);
        let welcome = read_line(&mut reader, "the TCP welcome message").await?;
        if welcome != WELCOME {
            return Err(format!("unexpected TCP welcome message: {welcome:?}"));
        }
        write
            .write_all(b"TEST\n")
            .await
            .map_err(|e| format!("writing TEST: {e}"))?;
        let line = read_line(&mut reader, "the TEST response").await?;
        let payload: TcpPayload = serde_json::from_str(line.trim_end())
            .map_err(|e| format!("decoding TCP echo response {line:?}: {e}"))?;
        if payload.pod.is_empty() {
            return Err(format!("TCP echo response missing pod name: {line:?}"));
        }
        Ok(payload.pod)
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("no TCP echo within {}s", timeout.as_secs_f32())))
}

/// The UDP echo's envelope (upstream `udpechoserver.EchoResponse`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct UdpEnvelope {
    /// The payload the backend received.
    pub request: String,
    /// `NAMESPACE`.
    pub namespace: String,
    /// `SERVICE_NAME`.
    pub service: String,
    /// `POD_NAME`.
    pub pod: String,
}

/// The probe upstream's `ExpectEchoResponseFromBackend` sends.
pub const UDP_PROBE: &[u8] = b"gateway-api-conformance-udp-echo";
/// The probe upstream's weight and attachment samplers send.
pub const UDP_WEIGHT_PROBE: &[u8] = b"gateway-api-conformance-udp-weight\n";

/// Sends one datagram from a fresh socket and returns the first answer (at most 4096 bytes).
pub async fn udp_exchange(
    connect: SocketAddr,
    payload: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let attempt = async {
        let bind: SocketAddr = if connect.is_ipv4() {
            SocketAddr::from(([127, 0, 0, 1], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        let socket = UdpSocket::bind(bind)
            .await
            .map_err(|e| format!("binding a UDP socket: {e}"))?;
        socket
            .connect(connect)
            .await
            .map_err(|e| format!("dialing UDP {connect}: {e}"))?;
        socket
            .send(payload)
            .await
            .map_err(|e| format!("writing the UDP probe: {e}"))?;
        let mut buf = vec![0u8; 4096];
        let n = socket
            .recv(&mut buf)
            .await
            .map_err(|e| format!("reading the UDP answer: {e}"))?;
        buf.truncate(n);
        Ok(buf)
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("no UDP answer within {}s", timeout.as_secs_f32())))
}

/// What a `udp_echo` case expects (upstream `udp.ExpectedResponse`; empty fields are not checked).
#[derive(Clone, Debug, Default)]
pub struct UdpExpectation {
    /// The `service` the backend reports.
    pub service: String,
    /// The `namespace` the backend reports.
    pub namespace: String,
}

/// Upstream `ExpectEchoResponseFromBackend` on one answer: with nothing to check any answer passes; otherwise
/// it must decode and match. Returns the envelope when it decodes.
pub fn check_udp(exp: &UdpExpectation, answer: &[u8]) -> Result<Option<UdpEnvelope>, String> {
    let decoded = serde_json::from_slice::<UdpEnvelope>(answer);
    if exp.service.is_empty() && exp.namespace.is_empty() {
        return Ok(decoded.ok());
    }
    let env = decoded.map_err(|e| {
        format!(
            "failed to decode UDP echo response: {e} ({:?})",
            String::from_utf8_lossy(answer)
        )
    })?;
    if !exp.service.is_empty() && env.service != exp.service {
        return Err(format!(
            "UDP echo response service={:?} did not match expected {:?} (pod={})",
            env.service, exp.service, env.pod
        ));
    }
    if !exp.namespace.is_empty() && env.namespace != exp.namespace {
        return Err(format!(
            "UDP echo response namespace={:?} did not match expected {:?} (pod={})",
            env.namespace, exp.namespace, env.pod
        ));
    }
    Ok(Some(env))
}

/// Upstream `udpEchoSendOnce`: the answering pod's name.
pub async fn udp_echo_once(connect: SocketAddr, timeout: Duration) -> Result<String, String> {
    let answer = udp_exchange(connect, UDP_WEIGHT_PROBE, timeout).await?;
    let env: UdpEnvelope = serde_json::from_slice(&answer).map_err(|e| {
        format!(
            "decoding UDP echo response {:?}: {e}",
            String::from_utf8_lossy(&answer)
        )
    })?;
    if env.pod.is_empty() {
        return Err(format!(
            "UDP echo response missing pod name: {:?}",
            String::from_utf8_lossy(&answer)
        ));
    }
    Ok(env.pod)
}

/// A DNS answer, as far as the case looks at it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsReply {
    /// RCODE.
    pub rcode: u8,
    /// Records in the answer section.
    pub answers: u16,
    /// Records in the additional section.
    pub additional: u16,
}

/// Checks that `reply` answers `query` (miekg/dns `Exchange`: the id matches; and it is a response to the same
/// question). Any RCODE is an answer, as upstream accepts any response.
pub fn check_dns_reply(query: &[u8], reply: &[u8]) -> Result<DnsReply, String> {
    if reply.len() < 12 {
        return Err(format!("DNS answer too short ({} bytes)", reply.len()));
    }
    if reply[0..2] != query[0..2] {
        return Err("DNS answer with another id".to_string());
    }
    if reply[2] & 0x80 == 0 {
        return Err("DNS message is not a response (QR clear)".to_string());
    }
    let (Some(q), Some(r)) = (dns::parse_question(query), dns::parse_question(reply)) else {
        return Err("DNS answer does not carry the question".to_string());
    };
    if (q.name.as_str(), q.qtype, q.qclass) != (r.name.as_str(), r.qtype, r.qclass) {
        return Err(format!(
            "DNS answer is for {} type {}, not {} type {}",
            r.name, r.qtype, q.name, q.qtype
        ));
    }
    Ok(DnsReply {
        rcode: reply[3] & 0x0f,
        answers: u16::from_be_bytes([reply[6], reply[7]]),
        additional: u16::from_be_bytes([reply[10], reply[11]]),
    })
}

/// One DNS `A` query for `name` over UDP.
pub async fn dns_query(
    connect: SocketAddr,
    name: &str,
    id: u16,
    timeout: Duration,
) -> Result<DnsReply, String> {
    let query = dns::build_query(id, name, dns::TYPE_A)
        .ok_or_else(|| format!("harness: {name:?} is not a DNS name"))?;
    let reply = udp_exchange(connect, &query, timeout).await?;
    check_dns_reply(&query, &reply)
}

/// Trusts no certificate (the Go client of the rejection test trusts only the system roots, which do not hold
/// the suite's CAs): a handshake that gets as far as the certificate fails with a certificate error.
#[derive(Debug)]
struct TrustNothing(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for TrustNothing {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ))
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

/// How a TLS dial ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsDial {
    /// The connection was closed (EOF) or reset during the handshake: upstream's `isConnectionRejected`.
    Rejected(String),
    /// Anything else: connect refused, a TLS alert, a certificate error, a completed handshake, a timeout.
    NotRejected(String),
}

/// Whether an I/O error is upstream's "rejected": EOF, unexpected EOF or connection reset.
pub fn is_connection_rejected(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
    ) || e.to_string().contains("connection reset by peer")
}

/// Dials TCP, then starts a TLS handshake with SNI `server_name` (TLS 1.2+, no ALPN).
pub async fn tls_dial(connect: SocketAddr, server_name: &str, timeout: Duration) -> TlsDial {
    let attempt = async {
        let tcp = match TcpStream::connect(connect).await {
            Ok(t) => t,
            Err(e) => return TlsDial::NotRejected(format!("client could not connect: {e}")),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = match ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        {
            Ok(b) => b
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(TrustNothing(provider)))
                .with_no_client_auth(),
            Err(e) => return TlsDial::NotRejected(format!("harness: TLS config: {e}")),
        };
        let name = match ServerName::try_from(server_name.to_string()) {
            Ok(n) => n,
            Err(e) => {
                return TlsDial::NotRejected(format!("harness: server name {server_name:?}: {e}"))
            }
        };
        match TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
        {
            Ok(_) => TlsDial::NotRejected("client could connect (handshake completed)".to_string()),
            Err(e) if is_connection_rejected(&e) => {
                TlsDial::Rejected(format!("connection was rejected during dial: {e}"))
            }
            Err(e) => {
                TlsDial::NotRejected(format!("handshake failed without a close or reset: {e}"))
            }
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| {
            TlsDial::NotRejected(format!("no outcome within {}s", timeout.as_secs_f32()))
        })
}
