//! [`EdgeIo`]: the accepted connection as Pingora reads it, with the checks that need the bytes as they arrive
//! and the clocks that Pingora does not keep.
//!
//! Pingora's HTTP/1 server gives each read of a request head its own 60 s timeout, so a client that sends one
//! byte a minute holds its connection forever; after the first request it waits for the next one with no
//! timeout at all; and it buffers up to 1 MiB of head before refusing it. [`EdgeIo`] sits between the socket (or
//! the TLS stream) and Pingora and keeps, per connection:
//! - the **header timeout**: the whole head of the first request must arrive within `header_timeout` of the
//!   accept (TLS handshake included), the head of a later request within `header_timeout` of its first byte
//!   (nginx's `client_header_timeout`). When it passes, a client that sent part of a head gets 408, and the
//!   connection is closed;
//! - the **idle timeout** between requests on a kept-alive connection (nginx's `keepalive_timeout`);
//! - the strict head check of [`HeadScanner`] on every byte of every request head: a refused head gets its
//!   status (400, 414, 431, 505) from here, its bytes are never handed to Pingora, and nothing is forwarded.
//!
//! Which bytes are a head: the first bytes of the connection, and the first bytes after the application said the
//! previous request is over ([`EdgeIo::next_request`], called when a request ends with its body read in full; a
//! request that ends with its body unread closes its connection instead, so body bytes are never taken for a
//! head). HTTP/2 connections (ALPN `h2`, or the cleartext preface) are passed through once the client preface
//! has arrived within the header timeout; the `h2` crate and the settings of `edge::h2_options` bound them.
//!
//! A refusal (here, or by the application through [`EdgeIo::linger_on_close`]) closes the connection the way
//! nginx's `lingering_close` does: the response is written, the write side shut, and what the client still sends
//! is read and dropped for a short while, so that the client reads the response instead of a reset.

use super::h2::ResetWatch;
use super::head::{HeadLimits, HeadScanner, Refusal, Scan};
use super::Stats;
use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::TlsRef;
use pingora::protocols::Stream;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// How long a refused connection is drained after its response (nginx's `lingering_timeout` is 5 s).
const LINGER_TIME: Duration = Duration::from_secs(5);
/// The most bytes drained from a refused connection before it is closed regardless.
const LINGER_BYTES: usize = 4 << 20;

/// The per-connection settings of [`EdgeIo`].
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// The size limits of a request head.
    pub head: HeadLimits,
    /// How long a request head may take.
    pub header_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// HTTP/2: the streams after which the premature-reset rule applies ([`ResetWatch`]; 0: never).
    pub h2_rapid_reset_streams: u64,
}

#[derive(Debug)]
enum Phase {
    /// Reading a request head; `first` on the first read of a connection that may start with the HTTP/2
    /// cleartext preface.
    Head { scanner: HeadScanner, first: bool },
    /// Between two requests: nothing of the next one has arrived.
    Idle,
    /// A head was accepted: its body or an upgraded stream pass through unchecked.
    Pass,
    /// HTTP/2 by ALPN: the preface has `left` bytes to arrive, within the header timeout.
    H2Preface { left: usize },
    /// HTTP/2 after the preface: frames pass through, their headers watched for rapid reset.
    H2(Box<ResetWatch>),
    /// Answering a refusal, then lingering.
    Refuse(Linger),
    /// Closed by us: reads return end of stream.
    Closed,
}

/// Writing a response (possibly empty), shutting the write side, then reading and dropping what arrives.
#[derive(Debug)]
struct Linger {
    response: Vec<u8>,
    written: usize,
    step: LingerStep,
    drained: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LingerStep {
    Write,
    Flush,
    Shutdown,
    Drain,
}

/// An accepted connection with the header and idle timeouts and the request head check (see the module
/// documentation). Invariant: no byte of an HTTP/1 request head reaches the reader before the scanner accepted
/// it, except bytes of a head still incomplete (a refusal then ends the stream before Pingora can parse it).
#[derive(Debug)]
pub struct EdgeIo {
    inner: Stream,
    limits: ConnLimits,
    stats: &'static Stats,
    phase: Phase,
    /// When the current phase's clock runs out, if it has one.
    deadline: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
    /// Set by the application when a request ended with its body read: the next bytes are a new head.
    next_request: AtomicBool,
    /// Set by the application when it refused a request: drain before closing.
    linger: AtomicBool,
    /// The lingering close of [`EdgeIo::linger_on_close`], once started.
    closing: Option<Linger>,
}

impl EdgeIo {
    /// Wraps `inner`, accepted at `accepted_at`. `h2c`: the listener serves HTTP/2 with prior knowledge, so a
    /// connection that starts with the preface is HTTP/2.
    pub fn new(
        inner: Stream,
        limits: ConnLimits,
        stats: &'static Stats,
        accepted_at: Instant,
        h2c: bool,
    ) -> Self {
        let phase = if matches!(inner.selected_alpn_proto(), Some(ALPN::H2)) {
            Phase::H2Preface {
                left: H2_PREFACE.len(),
            }
        } else {
            Phase::Head {
                scanner: HeadScanner::new(limits.head),
                first: h2c,
            }
        };
        EdgeIo {
            inner,
            limits,
            stats,
            phase,
            deadline: Some(accepted_at + limits.header_timeout),
            sleep: None,
            next_request: AtomicBool::new(false),
            linger: AtomicBool::new(false),
            closing: None,
        }
    }

    /// The [`EdgeIo`] under a Pingora stream, if it is one.
    pub fn of(stream: &Stream) -> Option<&EdgeIo> {
        stream.as_any().downcast_ref::<EdgeIo>()
    }

    /// The request whose head was read last has ended and its body was read in full: the next bytes from the
    /// client start a new request head (idle timeout until the first one, then the header timeout).
    pub fn next_request(&self) {
        self.next_request.store(true, Ordering::Relaxed);
    }

    /// The application refused a request: when the connection is shut, drain it first (lingering close).
    pub fn linger_on_close(&self) {
        self.linger.store(true, Ordering::Relaxed);
    }

    /// Polls the clock of the current phase; true once it has run out. Registers the waker when it has not.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(at) = self.deadline else {
            return false;
        };
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if sleep.deadline() != at {
            sleep.as_mut().reset(at);
        }
        sleep.as_mut().poll(cx).is_ready()
    }

    fn refuse(&mut self, refusal: Refusal) {
        self.stats.refused_head(refusal.status());
        tracing::debug!(
            status = refusal.status(),
            reason = refusal.reason(),
            "request head refused"
        );
        self.start_linger(response(refusal.status()));
    }

    fn start_linger(&mut self, response: Vec<u8>) {
        self.deadline = Some(Instant::now() + LINGER_TIME);
        self.phase = Phase::Refuse(Linger {
            response,
            written: 0,
            step: LingerStep::Write,
            drained: 0,
        });
    }

    /// Drives a lingering close to its end; `Ready` when the connection is done with.
    fn poll_linger(inner: &mut Stream, linger: &mut Linger, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match linger.step {
                LingerStep::Write => {
                    if linger.written == linger.response.len() {
                        linger.step = LingerStep::Flush;
                        continue;
                    }
                    match ready!(
                        Pin::new(&mut *inner).poll_write(cx, &linger.response[linger.written..])
                    ) {
                        Ok(0) | Err(_) => return Poll::Ready(()),
                        Ok(n) => linger.written += n,
                    }
                }
                LingerStep::Flush => match ready!(Pin::new(&mut *inner).poll_flush(cx)) {
                    Ok(()) => linger.step = LingerStep::Shutdown,
                    Err(_) => return Poll::Ready(()),
                },
                LingerStep::Shutdown => match ready!(Pin::new(&mut *inner).poll_shutdown(cx)) {
                    Ok(()) => linger.step = LingerStep::Drain,
                    Err(_) => return Poll::Ready(()),
                },
                LingerStep::Drain => {
                    let mut scratch = [0u8; 4096];
                    let mut buf = ReadBuf::new(&mut scratch);
                    match ready!(Pin::new(&mut *inner).poll_read(cx, &mut buf)) {
                        Ok(()) if !buf.filled().is_empty() => {
                            linger.drained += buf.filled().len();
                            if linger.drained > LINGER_BYTES {
                                return Poll::Ready(());
                            }
                        }
                        _ => return Poll::Ready(()),
                    }
                }
            }
        }
    }

    /// The preface is in: HTTP/2 frames follow (`rest` are the first of them).
    fn start_h2(&mut self, rest: &[u8]) -> Outcome {
        let mut watch = Box::new(ResetWatch::new(self.limits.h2_rapid_reset_streams));
        let abusive = watch.feed(rest, Instant::now());
        self.phase = Phase::H2(watch);
        self.deadline = None;
        if abusive {
            Outcome::Abort
        } else {
            Outcome::Deliver
        }
    }

    /// New bytes arrived in a checked phase: move the phase on.
    fn on_bytes(&mut self, new: &[u8]) -> Outcome {
        if matches!(self.phase, Phase::Idle) {
            self.phase = Phase::Head {
                scanner: HeadScanner::new(self.limits.head),
                first: false,
            };
            self.deadline = Some(Instant::now() + self.limits.header_timeout);
        }
        match &mut self.phase {
            Phase::Head { first: true, .. } if new.starts_with(H2_PREFACE) => {
                // Pingora saw the whole preface when it peeked, so it speaks HTTP/2 on this connection.
                self.start_h2(&new[H2_PREFACE.len()..])
            }
            Phase::Head { scanner, first } => {
                *first = false;
                match scanner.feed(new) {
                    Scan::More => Outcome::Deliver,
                    Scan::Complete(_) => {
                        self.phase = Phase::Pass;
                        self.deadline = None;
                        Outcome::Deliver
                    }
                    Scan::Refused(r) => Outcome::Refuse(r),
                }
            }
            Phase::H2Preface { left } => {
                let used = (*left).min(new.len());
                *left -= used;
                if *left == 0 {
                    self.start_h2(&new[used..])
                } else {
                    Outcome::Deliver
                }
            }
            Phase::H2(watch) => {
                if watch.feed(new, Instant::now()) {
                    Outcome::Abort
                } else {
                    Outcome::Deliver
                }
            }
            Phase::Idle | Phase::Pass | Phase::Refuse(_) | Phase::Closed => Outcome::Deliver,
        }
    }

    /// The clock of a checked phase ran out.
    fn on_timeout(&mut self) {
        match &self.phase {
            Phase::Idle => {
                self.stats.idle_timeout();
                self.phase = Phase::Closed;
            }
            Phase::Head { scanner, .. } if scanner.started() => {
                self.stats.header_timeout();
                self.stats.refused_head(408);
                self.start_linger(response(408));
            }
            _ => {
                self.stats.header_timeout();
                self.phase = Phase::Closed;
            }
        }
    }
}

/// What to do with bytes just read.
enum Outcome {
    /// Hand them to the reader.
    Deliver,
    /// Refuse the request head they belong to.
    Refuse(Refusal),
    /// Close the connection (HTTP/2 rapid reset).
    Abort,
}

/// The complete response of a refusal: a short text body, and the connection closed.
pub fn response(status: u16) -> Vec<u8> {
    let code = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_REQUEST);
    let body = format!(
        "{} {}\n",
        code.as_u16(),
        code.canonical_reason().unwrap_or("")
    );
    // The `Server` header of local replies (`--server-header`), as Pingora's own answers carry it.
    let server = crate::proxy::observe::server_header()
        .and_then(|v| v.to_str().ok())
        .map(|v| format!("server: {v}\r\n"))
        .unwrap_or_default();
    format!(
        "HTTP/1.1 {} {}\r\n{server}content-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        code.as_u16(),
        code.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes()
}

impl AsyncRead for EdgeIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.next_request.load(Ordering::Relaxed) {
            this.next_request.store(false, Ordering::Relaxed);
            if matches!(this.phase, Phase::Pass) {
                this.phase = Phase::Idle;
                this.deadline = Some(Instant::now() + this.limits.idle_timeout);
            }
        }
        loop {
            match &mut this.phase {
                Phase::Pass => return Pin::new(&mut this.inner).poll_read(cx, buf),
                Phase::Closed => return Poll::Ready(Ok(())),
                Phase::Refuse(linger) => {
                    let done = EdgeIo::poll_linger(&mut this.inner, linger, cx).is_ready();
                    if done || this.expired(cx) {
                        this.phase = Phase::Closed;
                        continue;
                    }
                    return Poll::Pending;
                }
                Phase::Head { .. } | Phase::Idle | Phase::H2Preface { .. } | Phase::H2(_) => {
                    let before = buf.filled().len();
                    match Pin::new(&mut this.inner).poll_read(cx, buf) {
                        Poll::Ready(Ok(())) => {
                            let outcome = match buf.filled().get(before..) {
                                Some(new) if !new.is_empty() => this.on_bytes(new),
                                // End of stream: Pingora sees it as the client closing.
                                _ => return Poll::Ready(Ok(())),
                            };
                            match outcome {
                                Outcome::Deliver => return Poll::Ready(Ok(())),
                                Outcome::Refuse(refusal) => {
                                    // This read's bytes are taken back and the stream ends after the answer:
                                    // Pingora never holds a complete head to parse.
                                    buf.set_filled(before);
                                    this.refuse(refusal);
                                }
                                Outcome::Abort => {
                                    buf.set_filled(before);
                                    this.stats.h2_rapid_reset();
                                    this.phase = Phase::Closed;
                                    return Poll::Ready(Err(io::Error::new(
                                        io::ErrorKind::ConnectionAborted,
                                        "HTTP/2 rapid reset: too many streams cancelled as soon as opened",
                                    )));
                                }
                            }
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => {
                            if !this.expired(cx) {
                                return Poll::Pending;
                            }
                            this.on_timeout();
                        }
                    }
                }
            }
        }
    }
}

impl AsyncWrite for EdgeIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.linger.load(Ordering::Relaxed) {
            return Pin::new(&mut this.inner).poll_shutdown(cx);
        }
        // A request the application refused: flush, shut the write side, drain, then report done.
        if this.closing.is_none() {
            this.closing = Some(Linger {
                response: Vec::new(),
                written: 0,
                step: LingerStep::Flush,
                drained: 0,
            });
            this.deadline = Some(Instant::now() + LINGER_TIME);
        }
        let done = match this.closing.as_mut() {
            Some(linger) => EdgeIo::poll_linger(&mut this.inner, linger, cx).is_ready(),
            None => true,
        };
        if done || this.expired(cx) {
            this.linger.store(false, Ordering::Relaxed);
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }
}

#[async_trait]
impl Shutdown for EdgeIo {
    async fn shutdown(&mut self) {
        let _ = tokio::io::AsyncWriteExt::shutdown(self).await;
    }
}

impl UniqueID for EdgeIo {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for EdgeIo {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for EdgeIo {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for EdgeIo {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for EdgeIo {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for EdgeIo {
    /// Pingora peeks for the HTTP/2 preface before reading anything; a client that connects and sends nothing
    /// is held to the header timeout here.
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        let deadline = match self.phase {
            Phase::Head { .. } => self.deadline,
            _ => None,
        };
        let Some(at) = deadline else {
            return self.inner.try_peek(buf).await;
        };
        match tokio::time::timeout_at(at, self.inner.try_peek(buf)).await {
            Ok(r) => r,
            Err(_) => {
                self.stats.header_timeout();
                self.phase = Phase::Closed;
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request within the header timeout",
                ))
            }
        }
    }
}
