//! TLS passthrough (TLSRoute): read the ClientHello without consuming it, route by SNI, and splice the client's
//! bytes, still encrypted, to a backend endpoint.

use super::edge::ListenerEdge;
use super::listeners::{ConnectionGuard, Connections};
use super::upstream::{Tried, Upstream, CONNECT_TIMEOUT};
use crate::model::HashOn;
use crate::router::Target;
use crate::snapshot::{ListenerAddr, Store};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How long a client may take to send its ClientHello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// The most bytes read while looking for the end of the ClientHello.
const MAX_HELLO: usize = 16 * 1024;
/// Endpoints tried for one connection when connections fail.
const CONNECT_ATTEMPTS: usize = 3;

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

/// Accepts connections on `listener` until `stop` turns true and passes each through by SNI. `edge` limits the
/// connections open at once.
pub async fn accept_loop(
    listener: TcpListener,
    store: Arc<Store>,
    key: ListenerAddr,
    mut stop: watch::Receiver<bool>,
    connections: Connections,
    edge: ListenerEdge,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => {
                if *stop.borrow() {
                    return;
                }
            }
            res = listener.accept() => match res {
                Ok((stream, _)) => {
                    // Edge hook: over the listener's connection limit, the connection is closed at once.
                    let Some(admitted) = edge.admit() else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let guard = connections.guard();
                    let store = store.clone();
                    tokio::spawn(async move {
                        let _guard: ConnectionGuard = guard;
                        let _admitted = admitted;
                        if let Err(e) = serve(stream, &store, key).await {
                            tracing::debug!(error = %e, "TLS passthrough connection ended");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}

async fn serve(mut client: TcpStream, store: &Store, key: ListenerAddr) -> std::io::Result<()> {
    let sni = peek_sni(&client).await?.unwrap_or_default();
    let snap = store.load();
    let entry = snap
        .router
        .listener_at(key.0, key.1)
        .and_then(|l| l.find_tls(&sni))
        .cloned();
    // No route: close the connection (a TLS client sees the handshake fail).
    let Some(entry) = entry else {
        return Ok(());
    };
    let Some((_, Target::Backend(id))) = entry.backends.pick().map(|(i, b)| (i, &b.target)) else {
        return Ok(());
    };
    let Some(upstream) = snap.upstreams.get(*id).cloned() else {
        return Ok(());
    };
    drop(snap);
    let client_ip = client.peer_addr().ok().map(|a| a.ip());
    let mut backend = connect(&upstream, client_ip).await?;
    let _ = backend.set_nodelay(true);
    tokio::io::copy_bidirectional(&mut client, &mut backend).await?;
    Ok(())
}

/// Connects to an endpoint of `upstream`, trying others (at most [`CONNECT_ATTEMPTS`] in all) when a connection
/// fails, and keeping the endpoints' passive health up to date.
async fn connect(
    upstream: &Upstream,
    client_ip: Option<std::net::IpAddr>,
) -> std::io::Result<TcpStream> {
    let key: Vec<u8> = match (upstream.hash_on(), client_ip) {
        (Some(HashOn::SourceIp), Some(IpAddr::V4(ip))) => ip.octets().to_vec(),
        (Some(HashOn::SourceIp), Some(IpAddr::V6(ip))) => ip.octets().to_vec(),
        _ => Vec::new(),
    };
    let mut tried = Tried::default();
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no endpoints");
    for attempt in 0..CONNECT_ATTEMPTS {
        let Some(i) = upstream.select(&key, &tried) else {
            break;
        };
        tried.add(i);
        let Some(ep) = upstream.endpoint(i) else {
            break;
        };
        if attempt > 0 {
            upstream.record_retry();
        }
        upstream.on_attempt(i);
        let res = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(ep.addr)).await;
        upstream.on_attempt_done(i, None);
        match res {
            Ok(Ok(stream)) => {
                upstream.record_success(i);
                return Ok(stream);
            }
            Ok(Err(e)) => last = e,
            Err(_) => last = std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timeout"),
        }
        upstream.record_failure(i);
    }
    Err(last)
}
