//! UDP listeners (UDPRoute). Pingora has no UDP, so this is a tokio service of its own.
//!
//! One task per listener receives every datagram and keeps a flow table keyed by the client's address. A new
//! client address starts a flow: the listener's route picks a backend by weight, the backend's upstream picks an
//! endpoint, and the flow gets its own connected socket to that endpoint and a task that sends the client's
//! datagrams (in arrival order, through a bounded FIFO queue) and relays the endpoint's answers back from the
//! listener's address. A flow that sees no datagram either way for `--udp-idle-timeout` is forgotten; the table
//! holds at most `--udp-max-flows` flows. Datagrams that are not forwarded are counted by reason in
//! `portcullis_udp_datagrams_dropped_total`.

use super::l4::{hash_key, pick, L4Settings};
use super::upstream::{Tried, Upstream};
use crate::metrics::udp as metrics;
use crate::model::ListenerKey;
use crate::snapshot::Store;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// The largest datagram relayed (the most a UDP payload can be over IPv4).
const MAX_DATAGRAM: usize = 65_535;
/// Datagrams of one flow waiting to be sent to its backend; more are dropped.
const FLOW_QUEUE: usize = 256;

/// Binds a UDP socket at `addr`.
pub fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

/// One client's flow, as the listener task holds it.
struct Flow {
    queue: mpsc::Sender<Vec<u8>>,
    /// Milliseconds since the listener started when a datagram last passed either way.
    last: Arc<AtomicU64>,
}

/// Receives datagrams on `socket` until `stop` turns true, forwarding each client's flow to a backend of the
/// listener's route. Flows end with the loop (their sockets close).
pub async fn serve(
    socket: UdpSocket,
    store: Arc<Store>,
    key: ListenerKey,
    settings: L4Settings,
    mut stop: watch::Receiver<bool>,
) {
    let socket = Arc::new(socket);
    let start = Instant::now();
    let idle = settings.udp_idle_timeout;
    let mut flows: HashMap<SocketAddr, Flow> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut sweep = tokio::time::interval((idle / 4).max(Duration::from_millis(10)));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let m = metrics();
    let now_ms = move || u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    loop {
        tokio::select! {
            _ = stop.changed() => {
                if *stop.borrow() {
                    break;
                }
            }
            _ = sweep.tick() => {
                let now = now_ms();
                let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
                let before = flows.len();
                flows.retain(|_, f| {
                    !f.queue.is_closed()
                        && now.saturating_sub(f.last.load(Ordering::Relaxed)) < idle_ms
                });
                m.flows.sub((before - flows.len()) as i64);
            }
            res = socket.recv_from(&mut buf) => {
                let (n, client) = match res {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::debug!(error = %e, "UDP receive failed");
                        continue;
                    }
                };
                let datagram = buf[..n].to_vec();
                if let Some(flow) = flows.get(&client) {
                    if !flow.queue.is_closed() {
                        flow.last.store(now_ms(), Ordering::Relaxed);
                        if flow.queue.try_send(datagram).is_err() {
                            m.dropped_queue_full.inc();
                        }
                        continue;
                    }
                    flows.remove(&client);
                    m.flows.dec();
                }
                if flows.len() >= settings.udp_max_flows {
                    m.dropped_table_full.inc();
                    continue;
                }
                let Some(flow) = start_flow(&store, key, &socket, client, now_ms(), start).await else {
                    m.dropped_no_route.inc();
                    continue;
                };
                if flow.queue.try_send(datagram).is_err() {
                    m.dropped_queue_full.inc();
                }
                flows.insert(client, flow);
                m.flows.inc();
            }
        }
    }
    m.flows.sub(flows.len() as i64);
}

/// Starts the flow of a new client: picks its backend and endpoint, connects a socket to it and spawns the task
/// that relays both ways. `None` when the listener has no route or no usable backend.
async fn start_flow(
    store: &Store,
    key: ListenerKey,
    listener: &Arc<UdpSocket>,
    client: SocketAddr,
    now_ms: u64,
    start: Instant,
) -> Option<Flow> {
    let upstream = {
        let snap = store.load();
        let route = snap.router.listener_for(key)?.l4_route()?.clone();
        pick(&snap, &route.backends)?
    };
    let i = upstream.select(&hash_key(&upstream, Some(client.ip())), &Tried::default())?;
    let endpoint = upstream.endpoint(i)?.addr;
    let local: SocketAddr = match endpoint.ip() {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = match UdpSocket::bind(local).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot open a UDP socket for a flow");
            return None;
        }
    };
    if let Err(e) = sock.connect(endpoint).await {
        tracing::debug!(error = %e, %endpoint, "cannot connect a UDP flow");
        upstream.record_failure(i);
        return None;
    }
    let (tx, rx) = mpsc::channel(FLOW_QUEUE);
    let last = Arc::new(AtomicU64::new(now_ms));
    tokio::spawn(relay(
        sock,
        rx,
        listener.clone(),
        client,
        last.clone(),
        start,
        upstream,
        i,
    ));
    Some(Flow { queue: tx, last })
}

/// A flow's task: sends the client's datagrams to the endpoint in order, and the endpoint's datagrams back to the
/// client, until the listener forgets the flow (its queue closes).
#[allow(clippy::too_many_arguments)]
async fn relay(
    sock: UdpSocket,
    mut queue: mpsc::Receiver<Vec<u8>>,
    listener: Arc<UdpSocket>,
    client: SocketAddr,
    last: Arc<AtomicU64>,
    start: Instant,
    upstream: Arc<Upstream>,
    endpoint: usize,
) {
    let m = metrics();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let touch = || {
        let ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        last.store(ms, Ordering::Relaxed);
    };
    loop {
        tokio::select! {
            d = queue.recv() => {
                let Some(d) = d else { return };
                if sock.send(&d).await.is_err() {
                    m.dropped_send_failed.inc();
                }
            }
            r = sock.recv(&mut buf) => match r {
                Ok(n) => {
                    touch();
                    if listener.send_to(&buf[..n], client).await.is_err() {
                        m.dropped_send_failed.inc();
                    }
                }
                // The endpoint's host answered a datagram with ICMP port unreachable: nothing listens there.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    upstream.record_failure(endpoint);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "UDP flow receive failed");
                    return;
                }
            }
        }
    }
}
