//! A Rust mimic of the Gateway API conformance echo backend `echo-basic` (gateway-api-conformance-images
//! v0.1.0), for running the conformance cases and the proxy's end-to-end tests without a cluster.
//!
//! One [`EchoServer`] is one echo-basic pod: an HTTP/1.1 listener (echo-basic's `HTTP_PORT`), an optional h2c
//! listener (`H2C_PORT`) and an optional HTTPS listener (`HTTPS_PORT`). It answers like echo-basic (see
//! `shared/conformance/README.md`, "The echo server contract"):
//!
//! * `GET /health` answers `200 OK`; `/status/NNN` answers status `NNN` with an empty body (400 unless the raw
//!   request URI is exactly `/status/` and three digits); `/retry/...?uuid=U&succeedAfter=N[&responseCode=C]
//!   [&delayRetry=D]` fails the first `N` attempts per `U` (status `C`, else a TCP reset) and then echoes;
//!   `/ws` is a WebSocket that echoes text and binary messages; everything else is echoed.
//! * The echo is a JSON body byte-for-byte like Go's `json.MarshalIndent(v, "", " ")` of echo-basic's
//!   `RequestAssertions`: `path` (raw request URI), `host`, `method`, `proto`, `headers` (canonical names, no
//!   `Host`), `httpPort`, `namespace`, `ingress`, `service`, `pod` and, on TLS connections, `tls`.
//! * `?delay=<Go duration>` delays the echo, `X-Echo-Set-Header: name:value,...` adds response headers.
//! * On the HTTP and HTTPS listeners, `//` is replaced by `/` before routing and Go's `ServeMux` path cleaning
//!   redirects apply; the h2c listener answers `400 Expected h2c request` to HTTP/1 requests without
//!   `Upgrade: h2c` and echoes everything else (it has no routes, like echo-basic's).
//!
//! The other modes of echo-basic (selected there by `GRPC_ECHO_SERVER`, `TCP_ECHO_SERVER`, `UDP_ECHO_SERVER`) are
//! separate servers: [`grpc`] (the `GrpcEcho` service over h2c and TLS), [`tcp`] (the line dialogue with
//! `PING`/`IS_TLS`/`TEST`), [`udp`] (one JSON envelope per datagram). [`dns`] stands in for the CoreDNS pod of the
//! UDPRoute test (its `whoami` answer), which is not echo-basic.
//!
//! Every echoed request is also recorded in memory ([`EchoServer::received`]) so a harness can tell which
//! backend (for example which mirror) received which request; echo-basic's log line
//! `Echoing back request made to <RequestURI> to client (<remote addr>)` is printed only when
//! [`EchoConfig::log_to_stdout`] is set.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod connio;
pub mod dns;
mod godur;
mod gojson;
mod gourl;
pub mod grpc;
mod handler;
pub mod tcp;
mod tls;
pub mod udp;
mod ws;

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use connio::{ConnIo, ResetSwitch};

/// The HTTPS listener of an echo server (echo-basic's `HTTPS_PORT` with `TLS_SERVER_CERT`,
/// `TLS_SERVER_PRIVKEY` and optionally `TLS_CLIENT_CACERTS`).
#[derive(Clone, Debug)]
pub struct EchoTls {
    /// Address to listen on; port 0 picks a free port (see [`EchoServer::https_addr`]).
    pub addr: SocketAddr,
    /// PEM of the server certificate chain, leaf first.
    pub cert_pem: String,
    /// PEM of the server private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key_pem: String,
    /// PEM of the CA certificates that client certificates are verified against. When set, a client
    /// certificate is requested and, if the client sends one, it must chain to one of these CAs (Go's
    /// `tls.VerifyClientCertIfGiven`); clients without a certificate are still accepted. When `None`, no client
    /// certificate is requested.
    pub client_ca_pem: Option<String>,
}

/// Configuration of one echo server (one echo-basic pod).
#[derive(Clone, Debug)]
pub struct EchoConfig {
    /// Reported as `pod` (echo-basic's `POD_NAME`).
    pub pod_name: String,
    /// Reported as `namespace` (echo-basic's `NAMESPACE`).
    pub namespace: String,
    /// Reported as `ingress` (echo-basic's `INGRESS_NAME`, empty in the Gateway API suite).
    pub ingress_name: String,
    /// Reported as `service` (echo-basic's `SERVICE_NAME`, empty in the Gateway API suite).
    pub service_name: String,
    /// The HTTP/1.1-only listener (echo-basic's `HTTP_PORT`); port 0 picks a free port. Its actual port is
    /// what every echo body reports as `httpPort`, whichever listener the request came in on.
    pub http_addr: SocketAddr,
    /// The h2c listener (echo-basic's `H2C_PORT`): HTTP/2 with prior knowledge, or HTTP/1.1 for requests that
    /// carry `Upgrade: h2c`. `None` = no h2c listener.
    pub h2c_addr: Option<SocketAddr>,
    /// The HTTPS listener (HTTP/1.1 and, via ALPN, HTTP/2). `None` = no HTTPS listener.
    pub https: Option<EchoTls>,
    /// Print echo-basic's stdout lines (`Starting server, listening on port ...`, `Echoing back request made to
    /// ... to client (...)`, `established websocket connection ...`). Off keeps tests quiet; recording in
    /// memory happens either way.
    pub log_to_stdout: bool,
}

impl EchoConfig {
    /// A configuration with the given pod name, namespace and HTTP listener, empty ingress and service names,
    /// no h2c or HTTPS listener and no logging.
    pub fn new(
        pod_name: impl Into<String>,
        namespace: impl Into<String>,
        http_addr: SocketAddr,
    ) -> Self {
        EchoConfig {
            pod_name: pod_name.into(),
            namespace: namespace.into(),
            ingress_name: String::new(),
            service_name: String::new(),
            http_addr,
            h2c_addr: None,
            https: None,
            log_to_stdout: false,
        }
    }
}

impl Default for EchoConfig {
    /// Empty names, HTTP on `127.0.0.1:0`, no h2c or HTTPS listener, no logging.
    fn default() -> Self {
        EchoConfig::new("", "", SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
    }
}

/// Who a backend says it is: echo-basic's `POD_NAME`, `NAMESPACE`, `INGRESS_NAME` and `SERVICE_NAME` (empty when
/// unset), as every mode reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodIdentity {
    /// `POD_NAME`.
    pub pod_name: String,
    /// `NAMESPACE`.
    pub namespace: String,
    /// `INGRESS_NAME`.
    pub ingress_name: String,
    /// `SERVICE_NAME`.
    pub service_name: String,
}

impl PodIdentity {
    /// An identity with this pod name and namespace, empty ingress and service names.
    pub fn new(pod_name: impl Into<String>, namespace: impl Into<String>) -> Self {
        PodIdentity {
            pod_name: pod_name.into(),
            namespace: namespace.into(),
            ..PodIdentity::default()
        }
    }
}

/// Prints one line to stdout when `on`; never panics (a closed stdout is ignored).
pub(crate) fn log_line(on: bool, line: std::fmt::Arguments<'_>) {
    if on {
        let mut out = std::io::stdout().lock();
        let _ = out.write_fmt(line);
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    }
}

/// The background tasks of one of the non-HTTP servers and its shutdown signal: dropping it stops them.
pub(crate) struct Tasks {
    shutdown_tx: watch::Sender<bool>,
    shutdown_rx: watch::Receiver<bool>,
    handles: Vec<JoinHandle<()>>,
}

impl Tasks {
    pub(crate) fn new() -> Tasks {
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        Tasks {
            shutdown_tx,
            shutdown_rx,
            handles: Vec::new(),
        }
    }

    /// A receiver that [`stopped`] resolves on once the server shuts down.
    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown_rx.clone()
    }

    pub(crate) fn spawn(&mut self, f: impl std::future::Future<Output = ()> + Send + 'static) {
        self.handles.push(tokio::spawn(f));
    }

    /// Signals shutdown, aborts every task and waits until they have ended (listeners closed).
    pub(crate) async fn stop_and_wait(mut self) {
        let handles = std::mem::take(&mut self.handles);
        drop(self);
        for h in handles {
            let _ = h.await;
        }
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        let _ = self.shutdown_tx.send(true);
        for h in &self.handles {
            h.abort();
        }
    }
}

/// Which listener of an echo server a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EchoListener {
    /// The HTTP/1.1 listener ([`EchoConfig::http_addr`]).
    Http,
    /// The h2c listener ([`EchoConfig::h2c_addr`]).
    H2c,
    /// The HTTPS listener ([`EchoConfig::https`]).
    Https,
}

/// One request that an echo server echoed back (recorded when echo-basic would print its
/// `Echoing back request made to ...` line, i.e. before any `?delay`). Requests that got a `/status`, `/health`,
/// redirect, error, failed `/retry` attempt or WebSocket answer are not recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedRequest {
    /// The listener the request came in on.
    pub listener: EchoListener,
    /// The client's address (the proxy's, when proxied).
    pub remote_addr: SocketAddr,
    /// Request method, as sent.
    pub method: String,
    /// The raw request URI (path and query, not normalised), as echoed in `path`.
    pub path: String,
    /// The Host header or `:authority`, including any port, as echoed in `host`.
    pub host: String,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2.0`, as echoed in `proto`.
    pub proto: String,
    /// The request headers as echoed in `headers`: canonical names (`X-Foo-Bar`), all values in order, no
    /// `Host`. Non-UTF-8 bytes are replaced with U+FFFD.
    pub headers: BTreeMap<String, Vec<String>>,
    /// The request body (at most the first 10 MiB).
    pub body: Bytes,
    /// On the HTTPS listener the SNI server name the client sent (empty if none); `None` on cleartext listeners.
    pub tls_server_name: Option<String>,
    /// On the HTTPS listener the client certificate chain as PEM strings (empty if none was sent).
    pub client_certificates: Vec<String>,
}

impl ReceivedRequest {
    /// All values of the header `name` (any case), in order; empty if absent.
    pub fn header_values(&self, name: &str) -> &[String] {
        self.headers
            .get(&gourl::canonical_header_key(name))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The values of the header `name` (any case) joined with `,` (as the conformance suite compares them), or
    /// `None` if absent.
    pub fn header(&self, name: &str) -> Option<String> {
        let values = self.header_values(name);
        (!values.is_empty()).then(|| values.join(","))
    }
}

/// State shared by all listeners and connections of one echo server.
pub(crate) struct Shared {
    pub pod_name: String,
    pub namespace: String,
    pub ingress_name: String,
    pub service_name: String,
    pub http_port: String,
    pub log: bool,
    received: Mutex<Vec<ReceivedRequest>>,
    received_count: watch::Sender<u64>,
    /// echo-basic's `retrySimulation`: attempts per uuid, behind one lock held for the whole retry handler.
    pub retry_attempts: tokio::sync::Mutex<HashMap<Vec<u8>, i64>>,
    pub shutdown: watch::Receiver<bool>,
}

impl Shared {
    fn received_lock(&self) -> MutexGuard<'_, Vec<ReceivedRequest>> {
        self.received.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn record(&self, req: ReceivedRequest) {
        self.received_lock().push(req);
        self.received_count.send_modify(|n| *n += 1);
    }

    /// Prints one line to stdout if logging is on; never panics (a closed stdout is ignored).
    pub(crate) fn log_line(&self, line: std::fmt::Arguments<'_>) {
        if self.log {
            let mut out = std::io::stdout().lock();
            let _ = out.write_fmt(line);
            let _ = out.write_all(b"\n");
            let _ = out.flush();
        }
    }
}

/// Per-connection facts the handlers need.
pub(crate) struct ConnCtx {
    pub listener: EchoListener,
    pub remote: SocketAddr,
    pub tls: Option<tls::TlsInfo>,
    /// Set on cleartext connections: lets `/retry` reset the TCP connection.
    pub reset: Option<ResetSwitch>,
}

/// A running echo server. Dropping it (or calling [`EchoServer::shutdown`]) stops its listeners, connections,
/// in-flight requests and WebSocket sessions.
pub struct EchoServer {
    shared: Arc<Shared>,
    http_addr: SocketAddr,
    h2c_addr: Option<SocketAddr>,
    https_addr: Option<SocketAddr>,
    shutdown_tx: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for EchoServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EchoServer")
            .field("pod_name", &self.shared.pod_name)
            .field("namespace", &self.shared.namespace)
            .field("http_addr", &self.http_addr)
            .field("h2c_addr", &self.h2c_addr)
            .field("https_addr", &self.https_addr)
            .finish_non_exhaustive()
    }
}

impl EchoServer {
    /// Binds all configured listeners (port 0 allowed) and starts serving them on the current tokio runtime.
    ///
    /// Fails, without leaving anything running, if a listener cannot be bound or the TLS material is unusable.
    /// When this returns `Ok`, the listeners accept connections.
    pub async fn start(cfg: EchoConfig) -> anyhow::Result<EchoServer> {
        let tls_config = cfg.https.as_ref().map(tls::server_config).transpose()?;
        let http = TcpListener::bind(cfg.http_addr)
            .await
            .with_context(|| format!("echo server: binding HTTP listener {}", cfg.http_addr))?;
        let http_addr = http.local_addr()?;
        let h2c = match cfg.h2c_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("echo server: binding h2c listener {addr}"))?,
            ),
            None => None,
        };
        let https = match (&cfg.https, tls_config) {
            (Some(t), Some(config)) => Some((
                TcpListener::bind(t.addr)
                    .await
                    .with_context(|| format!("echo server: binding HTTPS listener {}", t.addr))?,
                TlsAcceptor::from(config),
            )),
            _ => None,
        };
        let h2c_addr = h2c.as_ref().map(TcpListener::local_addr).transpose()?;
        let https_addr = https.as_ref().map(|(l, _)| l.local_addr()).transpose()?;

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            pod_name: cfg.pod_name,
            namespace: cfg.namespace,
            ingress_name: cfg.ingress_name,
            service_name: cfg.service_name,
            http_port: http_addr.port().to_string(),
            log: cfg.log_to_stdout,
            received: Mutex::new(Vec::new()),
            received_count: watch::channel(0).0,
            retry_attempts: tokio::sync::Mutex::new(HashMap::new()),
            shutdown: shutdown_rx,
        });

        let mut tasks = Vec::new();
        shared.log_line(format_args!(
            "Starting server, listening on port {} (http)",
            http_addr.port()
        ));
        tasks.push(tokio::spawn(accept_loop(
            shared.clone(),
            http,
            EchoListener::Http,
            None,
        )));
        if let (Some(listener), Some(addr)) = (h2c, h2c_addr) {
            shared.log_line(format_args!(
                "Starting server, listening on port {} (h2c)",
                addr.port()
            ));
            tasks.push(tokio::spawn(accept_loop(
                shared.clone(),
                listener,
                EchoListener::H2c,
                None,
            )));
        }
        if let (Some((listener, acceptor)), Some(addr)) = (https, https_addr) {
            shared.log_line(format_args!(
                "Starting server, listening on port {} (https)",
                addr.port()
            ));
            tasks.push(tokio::spawn(accept_loop(
                shared.clone(),
                listener,
                EchoListener::Https,
                Some(acceptor),
            )));
        }
        Ok(EchoServer {
            shared,
            http_addr,
            h2c_addr,
            https_addr,
            shutdown_tx,
            tasks,
        })
    }

    /// The bound address of the HTTP/1.1 listener (its port is the echoed `httpPort`).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The bound address of the h2c listener, if configured.
    pub fn h2c_addr(&self) -> Option<SocketAddr> {
        self.h2c_addr
    }

    /// The bound address of the HTTPS listener, if configured.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https_addr
    }

    /// The pod name this server reports.
    pub fn pod_name(&self) -> &str {
        &self.shared.pod_name
    }

    /// The namespace this server reports.
    pub fn namespace(&self) -> &str {
        &self.shared.namespace
    }

    /// A snapshot of every request echoed since start or the last [`EchoServer::clear_received`], oldest first.
    pub fn received(&self) -> Vec<ReceivedRequest> {
        self.shared.received_lock().clone()
    }

    /// Forgets all recorded requests.
    pub fn clear_received(&self) {
        self.shared.received_lock().clear();
    }

    /// Waits until a recorded request (already recorded or arriving later) satisfies `pred` and returns the
    /// first such request, or `None` once `timeout` has elapsed. Useful for mirrors, which receive their copy
    /// asynchronously.
    pub async fn wait_for_request(
        &self,
        timeout: Duration,
        pred: impl Fn(&ReceivedRequest) -> bool,
    ) -> Option<ReceivedRequest> {
        let mut changes = self.shared.received_count.subscribe();
        let wait = async {
            loop {
                changes.borrow_and_update();
                if let Some(found) = self.shared.received_lock().iter().find(|r| pred(r)) {
                    return Some(found.clone());
                }
                if changes.changed().await.is_err() {
                    return None;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.ok().flatten()
    }

    /// Stops the server now: listeners close, open connections, in-flight requests (including delayed ones)
    /// and WebSocket sessions are aborted. The ports are released once the runtime has run the aborted tasks'
    /// drops; use [`EchoServer::shutdown_and_wait`] to wait for that.
    pub fn shutdown(self) {
        drop(self);
    }

    /// Like [`EchoServer::shutdown`], and returns once the listeners have been closed.
    pub async fn shutdown_and_wait(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        drop(self);
        for task in tasks {
            let _ = task.await;
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.shutdown_tx.send(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Resolves once the server is shutting down (or its handle is gone).
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    kind: EchoListener,
    tls: Option<TlsAcceptor>,
) {
    let mut shutdown = shared.shutdown.clone();
    // Dropping the set (when this task ends or is aborted) aborts every connection task.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    let _ = stream.set_nodelay(true);
                    let shared = shared.clone();
                    match &tls {
                        Some(acceptor) => conns.spawn(serve_tls(shared, acceptor.clone(), stream, remote)),
                        None => conns.spawn(serve_plain(shared, kind, stream, remote)),
                    };
                }
                // For example EMFILE: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            () = stopped(&mut shutdown) => break,
        }
    }
}

fn service(
    shared: Arc<Shared>,
    ctx: Arc<ConnCtx>,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = handler::Resp,
    Error = handler::DropConnection,
    Future = impl std::future::Future<Output = Result<handler::Resp, handler::DropConnection>> + Send,
> + Clone {
    hyper::service::service_fn(move |req| handler::handle(shared.clone(), ctx.clone(), req))
}

async fn serve_plain(
    shared: Arc<Shared>,
    kind: EchoListener,
    stream: TcpStream,
    remote: SocketAddr,
) {
    let reset = ResetSwitch::default();
    let ctx = Arc::new(ConnCtx {
        listener: kind,
        remote,
        tls: None,
        reset: Some(reset.clone()),
    });
    let io = TokioIo::new(ConnIo::new(stream, reset));
    let svc = service(shared, ctx);
    if kind == EchoListener::H2c {
        // Go 1.24 `http.Server` with HTTP/1 and unencrypted HTTP/2 (prior knowledge).
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder.http1().title_case_headers(true);
        let _ = builder.serve_connection(io, svc).await;
    } else {
        // Go's `http.ListenAndServe`: HTTP/1.x only.
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.title_case_headers(true);
        let _ = builder.serve_connection(io, svc).with_upgrades().await;
    }
}

async fn serve_tls(
    shared: Arc<Shared>,
    acceptor: TlsAcceptor,
    stream: TcpStream,
    remote: SocketAddr,
) {
    let Ok(stream) = acceptor.accept(stream).await else {
        return;
    };
    let info = tls::tls_info(stream.get_ref().1);
    let h2 = info.negotiated_protocol == "h2";
    let ctx = Arc::new(ConnCtx {
        listener: EchoListener::Https,
        remote,
        tls: Some(info),
        reset: None,
    });
    let io = TokioIo::new(stream);
    let svc = service(shared, ctx);
    if h2 {
        let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        let _ = builder.serve_connection(io, svc).await;
    } else {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.title_case_headers(true);
        let _ = builder.serve_connection(io, svc).with_upgrades().await;
    }
}
