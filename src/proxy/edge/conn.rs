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
//! Which bytes are a head: the first bytes of the connection, and the bytes after the end of the previous
//! request. The scanner reads how each request's body is framed ([`Framing`]): after a head without a body, or
//! after `Content-Length` body bytes, the next byte starts the next head, whether the previous request has been
//! answered or not (HTTP/1.1 pipelining, RFC 9112 §9.3.2: the application lets Pingora queue such bytes, see
//! `edge::check_request`). After a head whose body end cannot be told from the head (chunked, `Upgrade`,
//! `CONNECT`), the bytes pass unchecked until the application says the request was answered
//! ([`EdgeIo::request_answered`], called when a request ends with its body read in full; a request that ends with
//! its body unread closes its connection instead, so body bytes are never taken for a head; Pingora does not
//! queue pipelined bytes after such a request but closes the connection). HTTP/2 connections (ALPN `h2`, or the
//! cleartext preface) are passed through once the client preface has arrived within the header timeout; the `h2`
//! crate and the settings of `edge::h2_options` bound them.
//!
//! The clocks between requests: while requests are outstanding (accepted and not yet answered) there is none,
//! the route's timeouts bound them; once all are answered, the idle timeout runs until the next head starts, and
//! a head that started while earlier requests were outstanding has the header timeout from its first byte.
//!
//! A refusal (here, or by the application through [`EdgeIo::linger_on_close`]) closes the connection the way
//! nginx's `lingering_close` does: the response is written, the write side shut, and what the client still sends
//! is read and dropped for a short while, so that the client reads the response instead of a reset. A pipelined
//! head refused while earlier requests are outstanding is held: the bytes before it are delivered, nothing more
//! is read, and its refusal is answered once the earlier responses have been written.

use super::h2::ResetWatch;
use super::head::{Framing, HeadLimits, HeadScanner, Refusal, Scan};
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
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
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
    /// Every request answered, nothing of the next one has arrived.
    Idle,
    /// The body of an accepted head: `left` bytes more, then the next head.
    Body { left: u64 },
    /// A head whose body end cannot be told was accepted: its body or an upgraded stream pass through unchecked
    /// until the request is answered.
    Pass,
    /// A refused head after requests still outstanding: nothing more is read; the refusal (this status) is
    /// answered once they are.
    Held { status: u16 },
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
    /// Request heads accepted so far.
    accepted: u32,
    /// Requests answered so far (with their bodies read), counted by the application.
    answered: AtomicU32,
    /// `answered` as last acted on.
    seen: u32,
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
            accepted: 0,
            answered: AtomicU32::new(0),
            seen: 0,
            linger: AtomicBool::new(false),
            closing: None,
        }
    }

    /// The [`EdgeIo`] under a Pingora stream, if it is one.
    pub fn of(stream: &Stream) -> Option<&EdgeIo> {
        stream.as_any().downcast_ref::<EdgeIo>()
    }

    /// The oldest outstanding request has been answered and its body was read in full. When none is left
    /// outstanding, the idle timeout runs until the next head starts, and a held refusal is answered.
    pub fn request_answered(&self) {
        self.answered.fetch_add(1, Ordering::Relaxed);
    }

    /// Acts on the requests answered since the last poll.
    fn on_answered(&mut self) {
        if self.seen != self.accepted {
            return;
        }
        match &self.phase {
            Phase::Pass => self.start_idle(),
            Phase::Head { scanner, .. } if !scanner.started() => self.start_idle(),
            Phase::Held { status } => {
                let status = *status;
                self.start_linger(response(status));
            }
            _ => {}
        }
    }

    fn start_idle(&mut self) {
        self.phase = Phase::Idle;
        self.deadline = Some(Instant::now() + self.limits.idle_timeout);
    }

    /// A scanner for the head after a complete request; it has no clock until its first byte.
    fn next_head(&mut self) {
        self.phase = Phase::Head {
            scanner: HeadScanner::new(self.limits.head),
            first: false,
        };
        self.deadline = None;
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
        self.answer_or_hold(refusal.status());
    }

    /// Answers `status` and closes now, or once the outstanding requests are answered.
    fn answer_or_hold(&mut self, status: u16) {
        if self.seen == self.accepted {
            self.start_linger(response(status));
        } else {
            self.phase = Phase::Held { status };
            self.deadline = None;
        }
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

    /// New bytes arrived in a checked phase: move the phase on, through every request they hold.
    fn on_bytes(&mut self, new: &[u8]) -> Outcome {
        let mut at = 0;
        // Where the head being scanned began in this read: 0 when it began in an earlier one.
        let mut head_from = 0;
        while at < new.len() {
            let rest = &new[at..];
            match &mut self.phase {
                Phase::Idle => {
                    self.phase = Phase::Head {
                        scanner: HeadScanner::new(self.limits.head),
                        first: false,
                    };
                    self.deadline = Some(Instant::now() + self.limits.header_timeout);
                    head_from = at;
                }
                Phase::Head { first: true, .. } if rest.starts_with(H2_PREFACE) => {
                    // Pingora saw the whole preface when it peeked, so it speaks HTTP/2 on this connection.
                    return self.start_h2(&rest[H2_PREFACE.len()..]);
                }
                Phase::Head { scanner, first } => {
                    *first = false;
                    let started = scanner.started();
                    match scanner.feed(rest) {
                        Scan::More => {
                            if !started && scanner.started() && self.deadline.is_none() {
                                // A pipelined head: the header timeout counts from its first byte.
                                self.deadline = Some(Instant::now() + self.limits.header_timeout);
                            }
                            return Outcome::Deliver;
                        }
                        Scan::Complete(n) => {
                            let framing = scanner.framing();
                            self.accepted = self.accepted.wrapping_add(1);
                            at += n;
                            match framing {
                                Framing::Empty => self.next_head(),
                                Framing::Length(left) => {
                                    self.phase = Phase::Body { left };
                                    self.deadline = None;
                                }
                                Framing::Opaque => {
                                    self.phase = Phase::Pass;
                                    self.deadline = None;
                                    return Outcome::Deliver;
                                }
                            }
                            head_from = at;
                        }
                        Scan::Refused(refusal) => {
                            return Outcome::Refuse {
                                keep: head_from,
                                refusal,
                            }
                        }
                    }
                }
                Phase::Body { left } => {
                    let n = usize::try_from(*left).map_or(rest.len(), |l| l.min(rest.len()));
                    *left -= n as u64;
                    at += n;
                    if *left == 0 {
                        self.next_head();
                        head_from = at;
                    }
                }
                Phase::H2Preface { left } => {
                    let used = (*left).min(rest.len());
                    *left -= used;
                    if *left == 0 {
                        return self.start_h2(&rest[used..]);
                    }
                    return Outcome::Deliver;
                }
                Phase::H2(watch) => {
                    if watch.feed(rest, Instant::now()) {
                        return Outcome::Abort;
                    }
                    return Outcome::Deliver;
                }
                Phase::Pass | Phase::Held { .. } | Phase::Refuse(_) | Phase::Closed => {
                    return Outcome::Deliver
                }
            }
        }
        Outcome::Deliver
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
                self.answer_or_hold(408);
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
    /// Refuse the request head that begins at `keep` (or in an earlier read, when 0): the bytes before it are
    /// handed to the reader.
    Refuse { keep: usize, refusal: Refusal },
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
        let answered = this.answered.load(Ordering::Relaxed);
        if answered != this.seen {
            this.seen = answered;
            this.on_answered();
        }
        loop {
            match &mut this.phase {
                Phase::Pass => return Pin::new(&mut this.inner).poll_read(cx, buf),
                Phase::Closed => return Poll::Ready(Ok(())),
                // Nothing is read until the outstanding requests are answered. Pingora reads here only to see
                // whether the client sent more while a request is proxied, alongside the response it awaits,
                // and reads again in the next request's session, after the answer was counted: no wake-up is
                // needed.
                Phase::Held { .. } => return Poll::Pending,
                Phase::Refuse(linger) => {
                    let done = EdgeIo::poll_linger(&mut this.inner, linger, cx).is_ready();
                    if done || this.expired(cx) {
                        this.phase = Phase::Closed;
                        continue;
                    }
                    return Poll::Pending;
                }
                Phase::Head { .. }
                | Phase::Idle
                | Phase::Body { .. }
                | Phase::H2Preface { .. }
                | Phase::H2(_) => {
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
                                Outcome::Refuse { keep, refusal } => {
                                    // The refused head's bytes in this read are taken back and the stream ends
                                    // after the answer: Pingora never holds a complete head to parse. The
                                    // requests before it in this read are delivered and answered first.
                                    buf.set_filled(before + keep);
                                    this.refuse(refusal);
                                    if keep > 0 {
                                        return Poll::Ready(Ok(()));
                                    }
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
