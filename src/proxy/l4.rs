//! What TCP, TLS and UDP forwarding share: their settings, the choice of a backend and an endpoint through the
//! upstream registry (weights, then the upstream's own selection and passive health), and the byte pump between
//! two streams with an idle timeout and half-close.
//!
//! Pingora 0.9 offers no zero-copy (splice) forwarding; bytes go through one user-space buffer per direction.

use super::upstream::{Tried, Upstream, CONNECT_TIMEOUT};
use crate::model::{HashOn, ListenerKey};
use crate::router::{Target, WeightedBackends};
use crate::snapshot::{Snapshot, Store};
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Endpoints tried for one connection when connections fail.
const CONNECT_ATTEMPTS: usize = 3;
/// The buffer of each direction of a forwarded stream.
const BUFFER: usize = 16 * 1024;

/// Process settings of TCP, TLS-by-SNI and UDP forwarding (the command line; the Gateway API has no field for
/// them).
#[derive(Clone, Debug)]
pub struct L4Settings {
    /// A TCP or TLS connection with no byte in either direction for this long is closed.
    pub tcp_idle_timeout: Duration,
    /// A UDP flow with no datagram in either direction for this long is forgotten (its upstream socket closed).
    pub udp_idle_timeout: Duration,
    /// The most UDP flows one listener keeps; datagrams that would start another are dropped (and counted).
    pub udp_max_flows: usize,
}

impl Default for L4Settings {
    fn default() -> Self {
        L4Settings {
            tcp_idle_timeout: Duration::from_secs(3600),
            udp_idle_timeout: Duration::from_secs(60),
            udp_max_flows: 65_536,
        }
    }
}

/// A TCP or TLS listener's handler state: where its routes are, and the settings.
pub struct StreamListener {
    /// The snapshots.
    pub store: Arc<Store>,
    /// The listener in the model.
    pub key: ListenerKey,
    /// Timeouts.
    pub settings: L4Settings,
}

/// Picks a backend of `backends` by weight and returns its upstream; `None` when every weight is 0 or the picked
/// backend is invalid (the connection or datagram is refused).
pub fn pick(snap: &Snapshot, backends: &WeightedBackends) -> Option<Arc<Upstream>> {
    let (_, b) = backends.pick()?;
    match &b.target {
        Target::Backend(id) => snap.upstreams.get(*id).cloned(),
        Target::Status { reason, .. } => {
            tracing::debug!(%reason, "backend is invalid; connection refused");
            None
        }
    }
}

/// The hash key of a client for upstreams that hash on the source address.
pub fn hash_key(upstream: &Upstream, client_ip: Option<IpAddr>) -> Vec<u8> {
    match (upstream.hash_on(), client_ip) {
        (Some(HashOn::SourceIp), Some(IpAddr::V4(ip))) => ip.octets().to_vec(),
        (Some(HashOn::SourceIp), Some(IpAddr::V6(ip))) => ip.octets().to_vec(),
        _ => Vec::new(),
    }
}

/// Connects to an endpoint of `upstream`, trying others (at most [`CONNECT_ATTEMPTS`] in all) when a connection
/// fails, and keeping the endpoints' passive health up to date.
pub async fn connect(upstream: &Upstream, client_ip: Option<IpAddr>) -> io::Result<TcpStream> {
    let key = hash_key(upstream, client_ip);
    let mut tried = Tried::default();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no endpoints");
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
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) => last = e,
            Err(_) => last = io::Error::new(io::ErrorKind::TimedOut, "connect timeout"),
        }
        upstream.record_failure(i);
    }
    Err(last)
}

/// When either direction of a forwarded stream last moved a byte (milliseconds since the pump started).
struct Activity {
    start: Instant,
    last: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    /// How long nothing moved.
    fn quiet_for(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// Copies `from` to `to` until `from` ends, then half-closes `to` (so the other side sees the end of this
/// direction while the opposite direction goes on). Fails with `TimedOut` once neither direction moved for `idle`.
async fn pump<R, W>(mut from: R, mut to: W, activity: &Activity, idle: Duration) -> io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUFFER];
    let mut total = 0u64;
    loop {
        let wait = idle.saturating_sub(activity.quiet_for());
        let n = match tokio::time::timeout(wait, from.read(&mut buf)).await {
            Ok(r) => r?,
            Err(_) => {
                if activity.quiet_for() >= idle {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "idle timeout"));
                }
                // The other direction moved meanwhile: keep waiting.
                continue;
            }
        };
        if n == 0 {
            to.shutdown().await?;
            return Ok(total);
        }
        activity.touch();
        to.write_all(&buf[..n]).await?;
        to.flush().await?;
        activity.touch();
        total += n as u64;
    }
}

/// Forwards bytes both ways between `client` and `backend` until both directions ended (each end is passed on as
/// a half-close), an error, or `idle` without a byte either way. Returns the bytes sent (to the backend, to the
/// client).
pub async fn forward<A, B>(client: A, backend: B, idle: Duration) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (cr, cw) = tokio::io::split(client);
    let (br, bw) = tokio::io::split(backend);
    let activity = Activity {
        start: Instant::now(),
        last: AtomicU64::new(0),
    };
    tokio::try_join!(pump(cr, bw, &activity, idle), pump(br, cw, &activity, idle))
}
