//! Binding, accepting and releasing listener ports as the published configuration changes: one accept loop
//! ([`serve_connections`]: stop, back-off, connection guard) with a handler per protocol (HTTP and HTTPS through
//! Pingora's HTTP proxy, TLS by SNI in `passthrough.rs`, TCP in `tcp.rs`), and the UDP loop of `udp.rs`. The
//! loop also admits connections within the listener's connection limit (`proxy::edge::ListenerEdge`).

use super::edge::{EdgeSettings, ListenerEdge};
use super::http::HttpApp;
use super::io::BufferedIo;
use super::l4::{L4Settings, StreamListener};
use crate::model::{ListenerKey, Protocol, Transport};
use crate::snapshot::Store;
use futures::FutureExt;
use pingora::apps::{HttpServerOptions, ServerApp};
use pingora::protocols::l4::stream::Stream;
use pingora::protocols::{GetSocketDigest, SocketDigest};
use pingora::server::configuration::ServerConf;
use pingora::server::ShutdownWatch;
use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How often ports that could not be bound are tried again.
const RETRY_BIND: Duration = Duration::from_secs(5);

/// Binds a TCP listening socket with `SO_REUSEADDR`, so a restarted proxy can bind at once.
pub fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Counts open connections (for a graceful shutdown that waits for them).
#[derive(Clone, Debug, Default)]
pub struct Connections(Arc<AtomicUsize>);

impl Connections {
    /// Connections currently open.
    pub fn open(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Counts one more open connection until the guard is dropped.
    pub fn guard(&self) -> ConnectionGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(self.0.clone())
    }
}

/// One open connection (see [`Connections::guard`]).
pub struct ConnectionGuard(Arc<AtomicUsize>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How accepted connections are set up before the application sees them.
#[derive(Clone)]
pub enum Handshake {
    /// Plain TCP.
    Plain,
    /// TLS, with the acceptor the current snapshot has for this listener (so certificate changes apply to new
    /// connections at once, and connections keep the configuration they started with).
    Tls {
        /// Where the acceptor comes from.
        store: Arc<Store>,
        /// The listener's (address, port) in the model.
        key: (Option<IpAddr>, u16),
    },
}

/// Accepts connections on `listener` until `stop` turns true, handing each to `handle` on its own task (counted
/// in `connections` while it runs) with the time it was accepted. Connections already accepted keep running after
/// the loop stops. Every protocol served over TCP goes through this loop. `edge` admits at most its listener's
/// connection limit open at once: a connection beyond it is closed at once, before any handler sees it
/// ([`ListenerEdge::none`]: no limit).
pub async fn serve_connections<H, F>(
    listener: tokio::net::TcpListener,
    handle: H,
    mut stop: watch::Receiver<bool>,
    connections: Connections,
    edge: ListenerEdge,
) where
    H: Fn(tokio::net::TcpStream, SocketAddr, Instant) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    loop {
        tokio::select! {
            _ = stop.changed() => {
                if *stop.borrow() {
                    return;
                }
            }
            res = listener.accept() => match res {
                Ok((stream, peer)) => {
                    // Edge hook: over the listener's connection limit, the connection is closed at once.
                    let Some(admitted) = edge.admit() else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let guard = connections.guard();
                    // The guard and the admission are dropped when the connection's task ends. `map` keeps them
                    // next to the task's future: an `async` block awaiting `task` holds the future twice (as its
                    // capture and as its awaitee), which doubled the task allocated and copied on every accept
                    // (11 KB for HTTP and HTTPS, 39 KB for TCP; docs/benchmarks.md).
                    let task = handle(stream, peer, admitted.accepted_at())
                        .map(move |()| drop((guard, admitted)));
                    tokio::spawn(task);
                }
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}

/// A Pingora stream of an accepted TCP connection, with the peer address Pingora's own listener would record.
fn pingora_stream(tcp: tokio::net::TcpStream, peer: SocketAddr) -> Stream {
    let mut stream: Stream = tcp.into();
    let digest = SocketDigest::from_raw_fd(stream.as_raw_fd());
    let _ = digest.peer_addr.set(Some(peer.into()));
    stream.set_socket_digest(digest);
    stream
}

/// Accepts connections on `listener` until `stop` turns true, handing each to the Pingora application `app`
/// (HTTP, HTTPS, the admin API). `shutdown` tells accepted connections to finish (no more keep-alive). `edge`
/// limits the connections open at once, holds the TLS handshake to the header timeout and wraps each connection
/// in its checks (`proxy::edge::EdgeIo`); [`ListenerEdge::none`]: none of these.
pub async fn accept_loop<A: ServerApp + Send + Sync + 'static>(
    listener: tokio::net::TcpListener,
    app: Arc<A>,
    handshake: Handshake,
    stop: watch::Receiver<bool>,
    shutdown: ShutdownWatch,
    connections: Connections,
    edge: ListenerEdge,
) {
    let loop_edge = edge.clone();
    let handle = move |tcp, peer, accepted_at| {
        let stream = pingora_stream(tcp, peer);
        let app = app.clone();
        let shutdown = shutdown.clone();
        let handshake = handshake.clone();
        let edge = edge.clone();
        async move {
            match handshake {
                Handshake::Plain => {
                    // Edge hook: header/idle timeouts and the request head check.
                    let io = edge.wrap(Box::new(BufferedIo::new(stream)), accepted_at);
                    app.process_new(io, &shutdown).await;
                }
                Handshake::Tls { store, key } => {
                    let acceptor = store.load().acceptor(key.0, key.1).cloned();
                    let Some(acceptor) = acceptor else {
                        tracing::debug!(port = key.1, "no TLS configuration; connection closed");
                        return;
                    };
                    // Edge hook: the handshake counts against the header timeout. Its future (7 KB, the rustls
                    // connection inside) is on the heap, so the connection's task stays small. Its result (the
                    // TLS stream) is boxed within the `let`: matched in the statement that awaits the
                    // connection, it kept a 4.8 KB slot in the task for as long as the connection was served.
                    // The write buffer goes above the TLS stream: a response's header and body are one record.
                    let tls = Box::pin(acceptor.tls_handshake(stream));
                    let io = match edge.handshake(accepted_at, tls).await {
                        Some(Ok(tls)) => edge.wrap(Box::new(BufferedIo::new(tls)), accepted_at),
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            return;
                        }
                        None => {
                            tracing::debug!("TLS handshake timed out");
                            return;
                        }
                    };
                    app.process_new(io, &shutdown).await;
                }
            }
        }
    };
    serve_connections(listener, handle, stop, connections, loop_edge).await;
}

/// What happened to one listener port, for logs and the admin API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ListenerState {
    /// The address from the model (a Gateway's `spec.addresses`), absent for the default bind address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_address: Option<IpAddr>,
    /// Logical port (from the manifests).
    pub port: u16,
    /// TCP or UDP.
    pub transport: Transport,
    /// The protocol served.
    pub protocol: Protocol,
    /// The address actually bound (`port + --port-offset`).
    pub address: SocketAddr,
    /// `true` while accepting connections.
    pub bound: bool,
    /// Why binding failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The Pingora application of one HTTP or HTTPS listener.
type HttpProxyApp = pingora::proxy::HttpProxy<HttpApp>;

struct Bound {
    protocol: Protocol,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    /// `None` for TLS, TCP and UDP (no HTTP inside).
    app: Option<Arc<HttpProxyApp>>,
}

/// What the listeners leave when they stop accepting: the HTTP applications whose accepted connections may still
/// be open (those of listeners released earlier too, while any of their connections lives).
pub struct Stopped {
    apps: Vec<Arc<HttpProxyApp>>,
}

impl Stopped {
    /// Closes the HTTP/1.1 connections that are idle between two requests (keep-alive) at once, through Pingora's
    /// application cleanup; requests already being read or answered finish. Call it once the clients of busy
    /// connections have had time to get a `Connection: close` answer: a request still on the wire when its idle
    /// connection closes is not read (the client may retry it, as HTTP/1.1 clients do on a closed idle connection).
    pub async fn close_idle(&self) {
        for app in &self.apps {
            app.cleanup().await;
        }
    }
}

/// Keeps the set of bound ports equal to the set of listener ports in the current snapshot.
pub struct ListenerManager {
    store: Arc<Store>,
    bind_ip: IpAddr,
    port_offset: u16,
    conf: Arc<ServerConf>,
    bound: BTreeMap<ListenerKey, Bound>,
    l4: L4Settings,
    shutdown: ShutdownWatch,
    states: Arc<Mutex<Vec<ListenerState>>>,
    connections: Connections,
    /// The edge's limits, for every listener served over TCP.
    edge: Arc<EdgeSettings>,
    /// Applications of released listeners, while connections they accepted still hold them.
    retired: Vec<Weak<HttpProxyApp>>,
}

impl ListenerManager {
    /// A manager binding `bind_ip:(port + port_offset)` for every listener port of `store`'s snapshots.
    /// `shutdown` is handed to every connection (true = finish up, no more keep-alive).
    pub fn new(
        store: Arc<Store>,
        bind_ip: IpAddr,
        port_offset: u16,
        shutdown: ShutdownWatch,
    ) -> Self {
        store.expect_listeners();
        ListenerManager {
            store,
            bind_ip,
            port_offset,
            conf: Arc::new(ServerConf::default()),
            bound: BTreeMap::new(),
            shutdown,
            states: Arc::new(Mutex::new(Vec::new())),
            connections: Connections::default(),
            retired: Vec::new(),
            l4: L4Settings::default(),
            edge: Arc::new(EdgeSettings::default()),
        }
    }

    /// Sets the edge's limits (`proxy::edge`) for listeners bound from now: the connection limit of every
    /// listener served over TCP, and the checks of HTTP and HTTPS listeners.
    pub fn with_edge(mut self, edge: EdgeSettings) -> Self {
        self.edge = Arc::new(edge);
        self
    }

    /// Sets the TCP and UDP forwarding settings (idle timeouts, UDP flow table size) for listeners bound from now.
    pub fn with_l4(mut self, l4: L4Settings) -> Self {
        self.l4 = l4;
        self
    }

    /// The open-connection counter of every listener this manager binds.
    pub fn connections(&self) -> Connections {
        self.connections.clone()
    }

    /// A handle on the listener states, updated after every reconcile.
    pub fn states(&self) -> Arc<Mutex<Vec<ListenerState>>> {
        self.states.clone()
    }

    fn address(&self, key: ListenerKey) -> Option<SocketAddr> {
        key.port
            .checked_add(self.port_offset)
            .map(|p| SocketAddr::new(key.address.unwrap_or(self.bind_ip), p))
    }

    /// Binds listeners that appeared, releases listeners that disappeared or changed protocol. Returns `true`
    /// when every listener is bound.
    pub fn reconcile(&mut self) -> bool {
        let snap = self.store.load();
        let wanted: BTreeMap<ListenerKey, Protocol> = snap
            .model
            .listeners
            .iter()
            .map(|l| (l.key(), l.protocol()))
            .collect();

        // Release what is gone or changed protocol. Accepted connections finish on their own.
        let gone: Vec<ListenerKey> = self
            .bound
            .iter()
            .filter(|(key, b)| wanted.get(key) != Some(&b.protocol))
            .map(|(key, _)| *key)
            .collect();
        for key in gone {
            if let Some(b) = self.bound.remove(&key) {
                let _ = b.stop.send(true);
                drop(b.task);
                if let Some(app) = &b.app {
                    self.retired.push(Arc::downgrade(app));
                }
                tracing::info!(port = key.port, address = ?key.address, transport = ?key.transport, "listener released");
            }
        }
        self.retired.retain(|app| app.strong_count() > 0);

        let mut states = Vec::new();
        let mut all_bound = true;
        for (&key, &protocol) in &wanted {
            let port = key.port;
            let state = |address: SocketAddr, error: Option<String>| ListenerState {
                model_address: key.address,
                port,
                transport: key.transport,
                protocol,
                address,
                bound: error.is_none(),
                error,
            };
            let Some(addr) = self.address(key) else {
                all_bound = false;
                states.push(state(
                    SocketAddr::new(key.address.unwrap_or(self.bind_ip), 0),
                    Some(format!(
                        "port {port} + offset {} exceeds 65535",
                        self.port_offset
                    )),
                ));
                continue;
            };
            if self.bound.contains_key(&key) {
                states.push(state(addr, None));
                continue;
            }
            match self.bind_one(key, protocol, addr) {
                Ok(b) => {
                    tracing::info!(port, %addr, ?protocol, "listener bound");
                    self.bound.insert(key, b);
                    states.push(state(addr, None));
                }
                Err(e) => {
                    all_bound = false;
                    tracing::error!(port, %addr, ?protocol, error = %e, "cannot bind listener; retrying every 5s");
                    states.push(state(addr, Some(e.to_string())));
                }
            }
        }
        if let Ok(mut s) = self.states.lock() {
            *s = states;
        }
        if snap.version > 0 {
            self.store.listeners_reconciled(snap.version);
        }
        all_bound
    }

    /// Binds `addr` and starts serving `protocol` on it.
    fn bind_one(
        &self,
        key: ListenerKey,
        protocol: Protocol,
        addr: SocketAddr,
    ) -> std::io::Result<Bound> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let tcp_key = (key.address, key.port);
        let open_gauge = || {
            crate::metrics::open_connections().with_label_values(&[
                crate::router::listener_label(key.address, key.port).as_str(),
                protocol.metric_label(),
            ])
        };
        let (task, app) = match protocol {
            Protocol::Udp => {
                let socket = super::udp::bind(addr)?;
                let task = tokio::spawn(super::udp::serve(
                    socket,
                    self.store.clone(),
                    key,
                    self.l4.clone(),
                    stop_rx,
                ));
                (task, None)
            }
            Protocol::Tls | Protocol::Tcp => {
                let listener = bind(addr)?;
                let handler = Arc::new(StreamListener {
                    store: self.store.clone(),
                    key,
                    settings: self.l4.clone(),
                });
                // Edge hook: the connection limit applies as on HTTP listeners; the head checks do not (no
                // HTTP inside), TLS-terminating routes hold their handshake to the header timeout.
                let edge = ListenerEdge::new(self.edge.clone(), false).counted(open_gauge());
                let tls_edge = edge.clone();
                let handle = move |tcp, _peer, accepted_at| {
                    let handler = handler.clone();
                    let edge = tls_edge.clone();
                    async move {
                        let res = if protocol == Protocol::Tls {
                            super::passthrough::serve(tcp, &handler, &edge, accepted_at).await
                        } else {
                            super::tcp::serve(tcp, &handler).await
                        };
                        if let Err(e) = res {
                            tracing::debug!(error = %e, ?protocol, "connection ended");
                        }
                    }
                };
                let task = tokio::spawn(serve_connections(
                    listener,
                    handle,
                    stop_rx,
                    self.connections.clone(),
                    edge,
                ));
                (task, None)
            }
            Protocol::Http | Protocol::Https => {
                let listener = bind(addr)?;
                let tls = protocol == Protocol::Https;
                let mut proxy: HttpProxyApp = pingora::proxy::http_proxy(
                    &self.conf,
                    HttpApp::new(self.store.clone(), tcp_key, tls).with_edge(self.edge.clone()),
                );
                // Cleartext HTTP/2 with prior knowledge (gRPC, h2c clients) next to HTTP/1.1: Pingora peeks for
                // the HTTP/2 preface once per connection. TLS listeners negotiate by ALPN instead.
                let mut options = HttpServerOptions::default();
                options.h2c = !tls;
                // Edge hook: requests per connection, HTTP/2 idle timeout and HTTP/2 limits.
                self.edge.apply_server_options(&mut options);
                proxy.h2_options = Some(self.edge.h2_options());
                proxy.server_options = Some(options);
                let handshake = if tls {
                    Handshake::Tls {
                        store: self.store.clone(),
                        key: tcp_key,
                    }
                } else {
                    Handshake::Plain
                };
                let app = Arc::new(proxy);
                let task = tokio::spawn(accept_loop(
                    listener,
                    app.clone(),
                    handshake,
                    stop_rx,
                    self.shutdown.clone(),
                    self.connections.clone(),
                    ListenerEdge::new(self.edge.clone(), !tls).counted(open_gauge()),
                ));
                (task, Some(app))
            }
        };
        Ok(Bound {
            protocol,
            stop: stop_tx,
            task,
            app,
        })
    }

    /// Reconciles after every publish (and retries failed binds) until `stop` turns true; then stops accepting
    /// and returns what is needed to close the connections still open.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> Stopped {
        let mut changes = self.store.subscribe();
        loop {
            let all_bound = self.reconcile();
            let retry = async {
                if all_bound {
                    std::future::pending::<()>().await
                } else {
                    tokio::time::sleep(RETRY_BIND).await
                }
            };
            tokio::select! {
                r = changes.changed() => if r.is_err() { break },
                _ = retry => {}
                _ = stop.changed() => if *stop.borrow() { break },
            }
        }
        let mut apps: Vec<Arc<HttpProxyApp>> =
            self.retired.iter().filter_map(Weak::upgrade).collect();
        for (_, b) in std::mem::take(&mut self.bound) {
            let _ = b.stop.send(true);
            apps.extend(b.app);
        }
        Stopped { apps }
    }
}
