//! Active health checks: probes sent in the background to the endpoints of backends whose policy asks for them,
//! with `pingora-load-balancing`'s TCP and HTTP checks. The verdict is kept in each endpoint's state, which
//! survives configuration changes like the passive state does.

use super::{now_ms, EndpointState, Upstream};
use crate::model::{ActiveHealth, HealthCheck as CheckKind};
use crate::snapshot::Store;
use pingora::http::RequestHeader;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::Backend as LbBackend;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};

/// How often the checker looks for probes that are due.
const TICK: Duration = Duration::from_millis(200);
/// Probes in flight at most (a large table must not open thousands of connections at once).
const MAX_CONCURRENT: usize = 64;

/// One backend's probe, built once per backend settings.
pub(crate) struct Checker {
    check: Box<dyn HealthCheck + Send + Sync>,
    settings: ActiveHealth,
}

impl Checker {
    pub(crate) fn new(upstream: &Upstream, settings: &ActiveHealth) -> Self {
        let timeout = Duration::from_millis(settings.timeout_ms);
        let check: Box<dyn HealthCheck + Send + Sync> = match &settings.check {
            CheckKind::Tcp => {
                let mut c = TcpHealthCheck::new();
                c.peer_template.options.connection_timeout = Some(timeout);
                c.peer_template.options.total_connection_timeout = Some(timeout);
                c
            }
            CheckKind::Http { path, host } => {
                let host = host.clone().unwrap_or_else(|| {
                    format!("{}.{}.svc", upstream.spec.name, upstream.spec.namespace)
                });
                let mut c = HttpHealthCheck::new(&host, false);
                // The same peer as requests use (h2c, backend TLS), with the probe's timeouts.
                let mut peer = upstream
                    .endpoints
                    .first()
                    .map(|e| upstream.peer(e))
                    .unwrap_or_else(|| c.peer_template.clone());
                peer.options.connection_timeout = Some(timeout);
                peer.options.read_timeout = Some(timeout);
                peer.options.write_timeout = Some(timeout);
                c.peer_template = peer;
                match RequestHeader::build("GET", path.as_bytes(), None) {
                    Ok(mut req) => {
                        if req.insert_header("host", host.as_str()).is_ok() {
                            c.req = req;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(backend = %upstream.key, error = %e, "health check path rejected; probing /")
                    }
                }
                Box::new(c)
            }
        };
        Checker {
            check,
            settings: settings.clone(),
        }
    }

    /// Probes `ep` once and updates its verdict.
    async fn probe(&self, ep: &EndpointState, backend: &str) {
        let target = LbBackend {
            addr: PingoraAddr::Inet(ep.addr),
            weight: 1,
            ext: http::Extensions::new(),
        };
        let limit = Duration::from_millis(self.settings.timeout_ms.saturating_mul(2).max(1));
        let ok = matches!(
            tokio::time::timeout(limit, self.check.check(&target)).await,
            Ok(Ok(()))
        );
        let healthy = ep.active_healthy.load(Ordering::Relaxed);
        if ok == healthy {
            ep.active_streak.store(0, Ordering::Relaxed);
            return;
        }
        let streak = ep.active_streak.fetch_add(1, Ordering::Relaxed) + 1;
        let threshold = if ok {
            self.settings.healthy_threshold
        } else {
            self.settings.unhealthy_threshold
        };
        if streak >= threshold {
            ep.active_healthy.store(ok, Ordering::Relaxed);
            ep.active_streak.store(0, Ordering::Relaxed);
            if ok {
                tracing::info!(%backend, endpoint = %ep.addr, "endpoint passes its health check again");
            } else {
                tracing::warn!(%backend, endpoint = %ep.addr, "endpoint fails its health check; out of rotation");
            }
        }
    }
}

/// Runs the active checks of the current snapshot's backends until `stop` turns true: each endpoint of a backend
/// with an active check is probed every interval.
pub async fn run_active_checks(store: Arc<Store>, mut stop: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT));
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = stop.changed() => if r.is_err() || *stop.borrow() { return },
        }
        let snap = store.load();
        let now = now_ms();
        for up in snap.upstreams.all() {
            let Some(checker) = &up.checker else { continue };
            for ep in up.endpoints.iter() {
                if ep.next_check.load(Ordering::Relaxed) > now {
                    continue;
                }
                let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                    // Busy: the endpoint is probed at a later tick.
                    continue;
                };
                ep.next_check
                    .store(now + checker.settings.interval_ms, Ordering::Relaxed);
                let checker = Arc::clone(checker);
                let ep = Arc::clone(ep);
                let backend = up.key.to_string();
                tokio::spawn(async move {
                    checker.probe(&ep, &backend).await;
                    drop(permit);
                });
            }
        }
    }
}
