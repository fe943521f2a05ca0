//! echo-basic's TCP mode (`TCP_ECHO_SERVER`, gateway-api-conformance-images `echo-basic/tcpserver`): a plain
//! listener (`TCP_PORT`) and, with a certificate, a TLS listener (`TLS_PORT`, no ALPN).
//!
//! Each connection (after the TLS handshake on the TLS listener) first gets the welcome line
//! `Gateway API Test TCP Server\n`; then, per input line (`\n`-terminated, a trailing `\r` dropped):
//!
//! * `PING` → `PONG\n`;
//! * `IS_TLS` → `true\n` / `false\n`;
//! * `TEST` → one compact JSON line `{"namespace","ingress","service","pod","tcpport","tlsport","isTLS"[,"tls"]}`,
//!   where `tls` is `{"version" (Go's "TLS 1.3" form),"serverName","negotiatedProtocol" (omitted if empty),
//!   "curves" (omitted if empty),"cipherSuite"}`;
//! * anything else is ignored. A line longer than 64 KiB ends the connection (Go's `bufio.Scanner` limit).
//!
//! `tlsport` is the TLS listener's port, omitted when there is none (upstream reports its default 8443 even
//! then).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{
    AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, BufReader,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::gojson::write_string;
use super::tls;
use super::{log_line, stopped, EchoTls, PodIdentity, Tasks};

/// The first line every connection receives.
pub const WELCOME: &str = "Gateway API Test TCP Server\n";

/// Go's `bufio.MaxScanTokenSize`.
const MAX_LINE: usize = 64 * 1024;

/// Configuration of one TCP echo pod.
#[derive(Clone, Debug)]
pub struct TcpEchoConfig {
    /// What the server reports.
    pub identity: PodIdentity,
    /// The plain listener (`TCP_PORT`); port 0 picks a free port.
    pub addr: SocketAddr,
    /// The TLS listener (`TLS_PORT` with `TLS_SERVER_CERT` and `TLS_SERVER_PRIV_KEY`); `client_ca_pem` is ignored
    /// (upstream requests no client certificate).
    pub tls: Option<EchoTls>,
    /// Print a line per listener and per `TEST`.
    pub log_to_stdout: bool,
}

/// A running TCP echo server; dropping it stops it.
pub struct TcpEchoServer {
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    tasks: Tasks,
}

impl std::fmt::Debug for TcpEchoServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpEchoServer")
            .field("addr", &self.addr)
            .field("tls_addr", &self.tls_addr)
            .finish_non_exhaustive()
    }
}

struct Shared {
    identity: PodIdentity,
    tcp_port: String,
    tls_port: Option<String>,
    log: bool,
}

/// What one connection reports (upstream `TCPAssertions`).
struct TlsFacts {
    version: String,
    server_name: String,
    negotiated_protocol: String,
    curves: String,
    cipher_suite: String,
}

impl TcpEchoServer {
    /// Binds the listeners and starts serving on the current tokio runtime. Fails, leaving nothing running, if
    /// a listener cannot be bound or the TLS material is unusable.
    pub async fn start(cfg: TcpEchoConfig) -> anyhow::Result<TcpEchoServer> {
        let acceptor = match &cfg.tls {
            Some(t) => {
                let plain_tls = EchoTls {
                    client_ca_pem: None,
                    ..t.clone()
                };
                Some(TlsAcceptor::from(tls::server_config_with_alpn(
                    &plain_tls,
                    &[],
                )?))
            }
            None => None,
        };
        let plain = TcpListener::bind(cfg.addr)
            .await
            .with_context(|| format!("TCP echo: binding {}", cfg.addr))?;
        let addr = plain.local_addr()?;
        let secure = match &cfg.tls {
            Some(t) => Some(
                TcpListener::bind(t.addr)
                    .await
                    .with_context(|| format!("TCP echo: binding TLS listener {}", t.addr))?,
            ),
            None => None,
        };
        let tls_addr = secure.as_ref().map(TcpListener::local_addr).transpose()?;
        let shared = Arc::new(Shared {
            identity: cfg.identity,
            tcp_port: addr.port().to_string(),
            tls_port: tls_addr.map(|a| a.port().to_string()),
            log: cfg.log_to_stdout,
        });
        let mut tasks = Tasks::new();
        log_line(
            shared.log,
            format_args!("Starting server (tcp) protocol=tcp port={}", addr.port()),
        );
        tasks.spawn(accept_loop(
            shared.clone(),
            plain,
            None,
            tasks.shutdown_signal(),
        ));
        if let (Some(listener), Some(acceptor), Some(a)) = (secure, acceptor, tls_addr) {
            log_line(
                shared.log,
                format_args!("Starting server (tcp) protocol=tls port={}", a.port()),
            );
            tasks.spawn(accept_loop(
                shared.clone(),
                listener,
                Some(acceptor),
                tasks.shutdown_signal(),
            ));
        }
        Ok(TcpEchoServer {
            addr,
            tls_addr,
            tasks,
        })
    }

    /// The bound plain address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound TLS address, if configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// Stops the server and returns once its listeners are closed.
    pub async fn shutdown_and_wait(self) {
        self.tasks.stop_and_wait().await;
    }
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    conns.spawn(serve_conn(shared.clone(), tls.clone(), stream));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            () = stopped(&mut shutdown) => break,
        }
    }
}

async fn serve_conn(shared: Arc<Shared>, tls: Option<TlsAcceptor>, stream: TcpStream) {
    match tls {
        None => dialogue(&shared, None, stream).await,
        Some(acceptor) => {
            let Ok(stream) = acceptor.accept(stream).await else {
                return;
            };
            let conn = stream.get_ref().1;
            let info = tls::tls_info(conn);
            let facts = TlsFacts {
                version: tls::go_version_name(conn),
                server_name: info.server_name,
                negotiated_protocol: info.negotiated_protocol,
                curves: info.curve,
                cipher_suite: info.cipher_suite,
            };
            dialogue(&shared, Some(facts), stream).await
        }
    }
}

/// Upstream's `json.Marshal(TCPAssertions)`: compact, fields in declaration order.
fn test_payload(shared: &Shared, tls: Option<&TlsFacts>) -> String {
    let mut out = String::with_capacity(256);
    let field = |out: &mut String, name: &str, value: &str, first: bool| {
        if !first {
            out.push(',');
        }
        write_string(out, name.as_bytes());
        out.push(':');
        write_string(out, value.as_bytes());
    };
    out.push('{');
    let id = &shared.identity;
    field(&mut out, "namespace", &id.namespace, true);
    field(&mut out, "ingress", &id.ingress_name, false);
    field(&mut out, "service", &id.service_name, false);
    field(&mut out, "pod", &id.pod_name, false);
    field(&mut out, "tcpport", &shared.tcp_port, false);
    if let Some(p) = &shared.tls_port {
        field(&mut out, "tlsport", p, false);
    }
    out.push_str(if tls.is_some() {
        ",\"isTLS\":true"
    } else {
        ",\"isTLS\":false"
    });
    if let Some(t) = tls {
        out.push_str(",\"tls\":{");
        field(&mut out, "version", &t.version, true);
        field(&mut out, "serverName", &t.server_name, false);
        if !t.negotiated_protocol.is_empty() {
            field(
                &mut out,
                "negotiatedProtocol",
                &t.negotiated_protocol,
                false,
            );
        }
        if !t.curves.is_empty() {
            field(&mut out, "curves", &t.curves, false);
        }
        field(&mut out, "cipherSuite", &t.cipher_suite, false);
        out.push('}');
    }
    out.push('}');
    out
}

async fn dialogue<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    tls: Option<TlsFacts>,
    stream: S,
) {
    let is_tls = tls.is_some();
    let payload = test_payload(shared, tls.as_ref());
    let (read, mut write) = tokio::io::split(stream);
    if write.write_all(WELCOME.as_bytes()).await.is_err() {
        return;
    }
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    // Bounded by the connection: ends on EOF, an error or an over-long line.
    loop {
        line.clear();
        let mut limited = (&mut reader).take(MAX_LINE as u64 + 1);
        match limited.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let complete = line.last() == Some(&b'\n');
        if !complete && line.len() > MAX_LINE {
            return;
        }
        let mut text: &[u8] = &line;
        text = text.strip_suffix(b"\n").unwrap_or(text);
        text = text.strip_suffix(b"\r").unwrap_or(text);
        let answer = match text {
            b"TEST" => {
                log_line(
                    shared.log,
                    format_args!(
                        "TEST on a {} connection",
                        if is_tls { "TLS" } else { "plain" }
                    ),
                );
                format!("{payload}\n")
            }
            b"IS_TLS" => format!("{is_tls}\n"),
            b"PING" => "PONG\n".to_string(),
            _ => continue,
        };
        if write.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
        if !complete {
            // EOF after a last line without newline (Go's scanner still answers it).
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_layout() {
        let shared = Shared {
            identity: PodIdentity {
                pod_name: "tcp-backend-1-2".into(),
                namespace: "ns".into(),
                ingress_name: String::new(),
                service_name: "svc".into(),
            },
            tcp_port: "3000".into(),
            tls_port: Some("8443".into()),
            log: false,
        };
        assert_eq!(
            test_payload(&shared, None),
            r#"{"namespace":"ns","ingress":"","service":"svc","pod":"tcp-backend-1-2","tcpport":"3000","tlsport":"8443","isTLS":false}"#
        );
        let facts = TlsFacts {
            version: "TLS 1.3".into(),
            server_name: "abc.example.com".into(),
            negotiated_protocol: String::new(),
            curves: "X25519".into(),
            cipher_suite: "TLS_AES_128_GCM_SHA256".into(),
        };
        assert_eq!(
            test_payload(&shared, Some(&facts)),
            r#"{"namespace":"ns","ingress":"","service":"svc","pod":"tcp-backend-1-2","tcpport":"3000","tlsport":"8443","isTLS":true,"tls":{"version":"TLS 1.3","serverName":"abc.example.com","curves":"X25519","cipherSuite":"TLS_AES_128_GCM_SHA256"}}"#
        );
    }
}
