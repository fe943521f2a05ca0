//! echo-basic's UDP mode (`UDP_ECHO_SERVER`, gateway-api-conformance-images `echo-basic/udpechoserver`): every
//! datagram (its first 1024 bytes, as upstream's read buffer) is answered, to its sender, with one compact JSON
//! envelope `{"request":"<payload>","namespace":"...","ingress":"...","service":"...","pod":"..."}` (Go string
//! escaping: invalid UTF-8 becomes `\ufffd`).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::UdpSocket;

use super::gojson::write_string;
use super::{log_line, stopped, PodIdentity, Tasks};

/// Upstream's read buffer: longer datagrams are truncated to this.
pub const MAX_DATAGRAM: usize = 1024;

/// Configuration of one UDP echo pod.
#[derive(Clone, Debug)]
pub struct UdpEchoConfig {
    /// What the server reports.
    pub identity: PodIdentity,
    /// The UDP socket (`UDP_PORT`, default 8080); port 0 picks a free port.
    pub addr: SocketAddr,
    /// Print upstream's `Received UDP ... from ...` lines.
    pub log_to_stdout: bool,
}

/// A running UDP echo server; dropping it stops it.
pub struct UdpEchoServer {
    addr: SocketAddr,
    tasks: Tasks,
}

impl std::fmt::Debug for UdpEchoServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpEchoServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Upstream's `json.Marshal(EchoResponse)` for one payload.
pub(crate) fn envelope(identity: &PodIdentity, payload: &[u8]) -> String {
    let mut out = String::with_capacity(payload.len() + 128);
    out.push_str("{\"request\":");
    write_string(&mut out, payload);
    for (name, value) in [
        ("namespace", &identity.namespace),
        ("ingress", &identity.ingress_name),
        ("service", &identity.service_name),
        ("pod", &identity.pod_name),
    ] {
        out.push(',');
        write_string(&mut out, name.as_bytes());
        out.push(':');
        write_string(&mut out, value.as_bytes());
    }
    out.push('}');
    out
}

impl UdpEchoServer {
    /// Binds the socket and starts answering on the current tokio runtime.
    pub async fn start(cfg: UdpEchoConfig) -> anyhow::Result<UdpEchoServer> {
        let socket = UdpSocket::bind(cfg.addr)
            .await
            .with_context(|| format!("UDP echo: binding {}", cfg.addr))?;
        let addr = socket.local_addr()?;
        log_line(
            cfg.log_to_stdout,
            format_args!(
                "UDP server listening on :{} with context: {:?}",
                addr.port(),
                cfg.identity
            ),
        );
        let mut tasks = Tasks::new();
        let mut shutdown = tasks.shutdown_signal();
        let identity = Arc::new(cfg.identity);
        let log = cfg.log_to_stdout;
        tasks.spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            loop {
                tokio::select! {
                    received = socket.recv_from(&mut buf) => {
                        // Errors (e.g. ICMP port unreachable reported on Linux) are skipped, as upstream does.
                        let Ok((n, from)) = received else { continue };
                        let payload = &buf[..n];
                        log_line(log, format_args!("Received UDP {} from {from}", String::from_utf8_lossy(payload)));
                        let reply = envelope(&identity, payload);
                        let _ = socket.send_to(reply.as_bytes(), from).await;
                    }
                    () = stopped(&mut shutdown) => break,
                }
            }
        });
        Ok(UdpEchoServer { addr, tasks })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server and returns once its socket is closed.
    pub async fn shutdown_and_wait(self) {
        self.tasks.stop_and_wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_layout() {
        let id = PodIdentity {
            pod_name: "udp-echo-0".into(),
            namespace: "default".into(),
            ingress_name: String::new(),
            service_name: "udp-echo".into(),
        };
        assert_eq!(
            envelope(&id, b"Hello World\n"),
            r#"{"request":"Hello World\n","namespace":"default","ingress":"","service":"udp-echo","pod":"udp-echo-0"}"#
        );
        assert!(envelope(&id, b"a<\xff").starts_with(r#"{"request":"a\u003c\ufffd""#));
    }
}
