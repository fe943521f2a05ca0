//! TLS listeners (TLSRoute): read the ClientHello without consuming it, route by SNI, then pass the client's bytes,
//! still encrypted, to a backend endpoint, or terminate TLS here and forward the plain bytes (over TLS again when a
//! BackendTLSPolicy applies to the backend).

use super::edge::ListenerEdge;
use super::l4::{connect, forward, pick, StreamListener};
use crate::model::TlsMode;
use pingora::protocols::l4::stream::Stream;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long a client may take to send its ClientHello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// The most bytes read while looking for the end of the ClientHello.
const MAX_HELLO: usize = 16 * 1024;

/// Reads the SNI of the ClientHello at the start of `stream` without consuming any byte. `Ok(None)` when the
/// client sent no SNI; an error when the bytes are not a TLS ClientHello.
pub async fn peek_sni(stream: &TcpStream) -> std::io::Result<Option<String>> {
    let mut buf = vec![0u8; 2048];
    let deadline = tokio::time::Instant::now() + HELLO_TIMEOUT;
    loop {
        let n = tokio::time::timeout_at(deadline, stream.peek(&mut buf))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no ClientHello"))??;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before ClientHello",
            ));
        }
        let mut acceptor = rustls::server::Acceptor::default();
        let mut data = &buf[..n];
        let _ = acceptor.read_tls(&mut data);
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                return Ok(accepted
                    .client_hello()
                    .server_name()
                    .map(|s| s.to_ascii_lowercase()))
            }
            Ok(None) => {
                // More of the ClientHello is needed.
                if n < buf.len() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                } else if buf.len() < MAX_HELLO {
                    buf.resize(buf.len() * 2, 0);
                } else {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "ClientHello too large",
                    ));
                }
            }
            Err((e, _)) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    e.to_string(),
                ))
            }
        }
    }
}

/// Serves one connection of a TLS listener: routes it by the SNI of its ClientHello, then passes the TLS bytes
/// through to the backend (Passthrough routes) or completes the handshake with the listener's certificate and
/// forwards the plain bytes to the backend over TCP (Terminate routes). No route: the connection is closed. `edge`
/// holds a Terminate handshake to the header timeout, counted from `accepted_at`.
pub(crate) async fn serve(
    client: TcpStream,
    l: &StreamListener,
    edge: &ListenerEdge,
    accepted_at: Instant,
) -> std::io::Result<()> {
    let sni = peek_sni(&client).await?.unwrap_or_default();
    let snap = l.store.load();
    let Some(entry) = snap
        .router
        .listener_for(l.key)
        .and_then(|t| t.find_tls(&sni))
        .cloned()
    else {
        return Ok(());
    };
    let Some(upstream) = pick(&snap, &entry.backends) else {
        return Ok(());
    };
    let client_ip = client.peer_addr().ok().map(|a| a.ip());
    let idle = l.settings.tcp_idle_timeout;
    match entry.mode {
        TlsMode::Passthrough => {
            drop(snap);
            let backend = connect(&upstream, client_ip).await?;
            forward(client, backend, idle).await?;
        }
        TlsMode::Terminate => {
            let acceptor = snap.acceptor(l.key.address, l.key.port).cloned();
            drop(snap);
            let Some(acceptor) = acceptor else {
                return Ok(());
            };
            // Edge hook: the handshake counts against the header timeout, as on HTTPS listeners.
            let handshake = acceptor.tls_handshake(Stream::from(client));
            let Some(tls) = edge.handshake(accepted_at, handshake).await else {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                ));
            };
            let tls = tls.map_err(|e| std::io::Error::other(e.to_string()))?;
            // A BackendTLSPolicy on the backend: TLS again to the backend, verified as for HTTP backends.
            let backend_tls = upstream
                .tls()
                .map_err(|e| std::io::Error::other(format!("backend TLS settings: {e}")))?
                .cloned();
            let backend = connect(&upstream, client_ip).await?;
            match backend_tls {
                None => {
                    forward(tls, backend, idle).await?;
                }
                Some(t) => {
                    let backend = tokio_rustls::TlsConnector::from(t.config.clone())
                        .connect(t.server_name.clone(), backend)
                        .await?;
                    forward(tls, backend, idle).await?;
                }
            }
        }
    }
    Ok(())
}
