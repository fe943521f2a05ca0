//! TLS to backends (BackendTLSPolicy) with our own rustls verification.
//!
//! Pingora's TLS connector verifies the backend certificate against the SNI only; BackendTLSPolicy may ask for
//! other names (subjectAltNames, including URI SANs). So for such backends the L4 connection Pingora asks for is
//! made here, TLS included, through Pingora's `custom_l4` hook, and handed back as a virtual socket; Pingora then
//! speaks HTTP over it as over any connection. `HttpPeer::group_key` keeps these connections in their own pool.

use crate::tls::UpstreamTls;
use async_trait::async_trait;
use pingora::connectors::L4Connect;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::protocols::l4::stream::Stream;
use pingora::protocols::l4::virt::{VirtualSockOpt, VirtualSocket, VirtualSocketStream};
use pingora::{Error, ErrorType, OrErr, Result};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Connects TCP, then TLS with the backend's settings.
#[derive(Debug)]
pub struct TlsConnect(pub Arc<UpstreamTls>);

#[async_trait]
impl L4Connect for TlsConnect {
    async fn connect(&self, addr: &SocketAddr) -> Result<Stream> {
        let inet = addr.as_inet().ok_or_else(|| {
            Error::explain(ErrorType::ConnectError, "backend TLS needs an IP address")
        })?;
        let tcp = TcpStream::connect(inet)
            .await
            .or_err(ErrorType::ConnectRefused, "connecting to the backend")?;
        let _ = tcp.set_nodelay(true);
        let tls = tokio_rustls::TlsConnector::from(self.0.config.clone())
            .connect(self.0.server_name.clone(), tcp)
            .await
            .or_err(
                ErrorType::TLSHandshakeFailure,
                "TLS handshake with the backend",
            )?;
        Ok(VirtualSocketStream::new(Box::new(TlsSocket(tls))).into())
    }
}

/// A client TLS stream as a Pingora virtual socket.
#[derive(Debug)]
struct TlsSocket(tokio_rustls::client::TlsStream<TcpStream>);

impl VirtualSocket for TlsSocket {
    fn set_socket_option(&self, opt: VirtualSockOpt) -> std::io::Result<()> {
        match opt {
            VirtualSockOpt::NoDelay => self.0.get_ref().0.set_nodelay(true),
            _ => Ok(()),
        }
    }
}

impl AsyncRead for TlsSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}
