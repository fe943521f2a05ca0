//! Write buffering for accepted connections.
//!
//! Pingora's own listeners give each accepted stream a small write buffer (so a response header and a short body
//! leave in one `write`), but the call that sets it is private to pingora-core; streams made from a `TcpStream`,
//! as our listener manager makes them, write through. [`BufferedIo`] restores the buffer around the stream:
//! writes collect until Pingora flushes (it flushes at the points its own buffered streams need), and writes
//! larger than the buffer go straight through. On a TLS connection the buffer wraps the TLS stream, so what it
//! collects is encrypted as one record. Everything else (peeking, digests, TLS info and ALPN) is the inner
//! stream's.

use async_trait::async_trait;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, UniqueID, UniqueIDType,
    ALPN,
};
use pingora::protocols::{SocketDigest, TimingDigest};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, BufWriter, ReadBuf};

/// The write buffer: room for a typical response header and a small body, so they leave in one segment.
pub const WRITE_BUFFER: usize = 16 * 1024;

/// An accepted stream with a write buffer: the L4 stream of a plain connection, or the TLS stream of a TLS one,
/// where the buffer sits above the encryption so that a response header and a short body become one TLS record
/// (and one `write`), as nginx's `ssl_buffer_size` does.
#[derive(Debug)]
pub struct BufferedIo<S = L4Stream>(BufWriter<S>);

impl<S: AsyncWrite> BufferedIo<S> {
    /// Wraps `stream`.
    pub fn new(stream: S) -> Self {
        BufferedIo(BufWriter::with_capacity(WRITE_BUFFER, stream))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for BufferedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for BufferedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

#[async_trait]
impl<S: Shutdown + AsyncWrite + Unpin + Send> Shutdown for BufferedIo<S> {
    async fn shutdown(&mut self) {
        use tokio::io::AsyncWriteExt;
        // Whatever is buffered goes out first.
        let _ = self.0.flush().await;
        Shutdown::shutdown(self.0.get_mut()).await
    }
}

impl<S: UniqueID + AsyncWrite> UniqueID for BufferedIo<S> {
    fn id(&self) -> UniqueIDType {
        self.0.get_ref().id()
    }
}

impl<S: Ssl + AsyncWrite> Ssl for BufferedIo<S> {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.0.get_ref().get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.0.get_ref().get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.0.get_ref().selected_alpn_proto()
    }
}

impl<S: GetTimingDigest + AsyncWrite> GetTimingDigest for BufferedIo<S> {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.0.get_ref().get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.0.get_ref().get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.0.get_ref().get_write_pending_time()
    }
}

impl<S: GetProxyDigest + AsyncWrite> GetProxyDigest for BufferedIo<S> {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.0.get_ref().get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.0.get_mut().set_proxy_digest(digest)
    }
}

impl<S: GetSocketDigest + AsyncWrite> GetSocketDigest for BufferedIo<S> {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.0.get_ref().get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.0.get_mut().set_socket_digest(digest)
    }
}

#[async_trait]
impl<S: Peek + AsyncWrite + Send> Peek for BufferedIo<S> {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.0.get_mut().try_peek(buf).await
    }
}
