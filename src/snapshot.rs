//! The published configuration: one `ArcSwap` that the data plane loads once per request.

use crate::metrics::request::RequestMetrics;
use crate::model::Model;
use crate::proxy::upstream::Upstreams;
use crate::router::{CompileError, Router};
use arc_swap::ArcSwap;
use pingora::listeners::tls::Acceptor;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::watch;

/// A listener's place in the model: (address, logical port); `None` is the process's bind address.
pub type ListenerAddr = (Option<IpAddr>, u16);

/// One consistent configuration version: the model, the router compiled from it, and the TLS acceptors of its
/// TLS listeners.
#[derive(Default)]
pub struct Snapshot {
    /// Increases by one with every publish; 0 is the empty configuration before the first publish.
    pub version: u64,
    /// The model.
    pub model: Arc<Model>,
    /// The compiled index over `model`.
    pub router: Router,
    /// The backends of `model`, in `model.backends` order (the router's `BackendId`s index it).
    pub upstreams: Upstreams,
    acceptors: Vec<(ListenerAddr, Arc<Acceptor>)>,
    /// TLS listeners whose acceptor could not be built, with the reason (their handshakes fail).
    pub tls_errors: Vec<(ListenerAddr, String)>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("version", &self.version)
            .field("model", &self.model)
            .field("tls_listeners", &self.acceptors.len())
            .finish()
    }
}

impl Snapshot {
    /// The TLS acceptor of the listener at (`address`, `port`).
    pub fn acceptor(&self, address: Option<IpAddr>, port: u16) -> Option<&Arc<Acceptor>> {
        self.acceptors
            .iter()
            .find(|(k, _)| *k == (address, port))
            .map(|(_, a)| a)
    }
}

/// How many configuration rounds the control loop has run, and what the latest one read: what an observer (the
/// admin API's `GET /rounds`, tests) waits on to know that a change was seen, whether or not it changed the
/// model. A round is one translation of everything the source holds, published or found unchanged or refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Rounds {
    /// Rounds completed since the process started; 0 until the first one.
    pub rounds: u64,
    /// Objects the latest round read (every kind together).
    pub objects: u64,
    /// The snapshot version current after the latest round.
    pub version: u64,
}

/// Holds the current [`Snapshot`] and readiness.
///
/// Readers call [`Store::load`] once per request and use that snapshot for the whole request, so a request never
/// sees two configuration versions. Writers call [`Store::publish`], which compiles the model first (a model that
/// does not compile is refused and the current snapshot stays) and skips models equal to the current one.
#[derive(Debug)]
pub struct Store {
    current: ArcSwap<Snapshot>,
    ready: AtomicBool,
    /// A listener manager binds this store's listeners: readiness also waits until it has reconciled a published
    /// table (so `/readyz` does not say ready while the ports are still being bound).
    listeners_expected: AtomicBool,
    /// The newest published version whose listeners were reconciled (0: none yet).
    listeners_version: AtomicU64,
    version: AtomicU64,
    noops: AtomicU64,
    rounds: Mutex<Rounds>,
    changed: watch::Sender<u64>,
    /// Per-request metrics: every published table gets its handles resolved here.
    request_metrics: OnceLock<Arc<RequestMetrics>>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    /// An empty, not-ready store.
    pub fn new() -> Self {
        Store {
            current: ArcSwap::from_pointee(Snapshot::default()),
            ready: AtomicBool::new(false),
            listeners_expected: AtomicBool::new(false),
            listeners_version: AtomicU64::new(0),
            version: AtomicU64::new(0),
            noops: AtomicU64::new(0),
            rounds: Mutex::new(Rounds::default()),
            changed: watch::channel(0).0,
            request_metrics: OnceLock::new(),
        }
    }

    /// Records requests in `metrics` from the next publish on (set once, before the first publish).
    pub fn set_request_metrics(&self, metrics: Arc<RequestMetrics>) {
        let _ = self.request_metrics.set(metrics);
    }

    /// The per-request metrics, when on.
    pub fn request_metrics(&self) -> Option<&Arc<RequestMetrics>> {
        self.request_metrics.get()
    }

    /// The current snapshot.
    #[inline]
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Has a first configuration been published, and (when a listener manager serves this store) have its
    /// listeners been bound?
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
            && (!self.listeners_expected.load(Ordering::Acquire)
                || self.listeners_version.load(Ordering::Acquire) > 0)
    }

    /// A listener manager will bind this store's listeners: [`Store::is_ready`] waits for its first reconcile.
    pub fn expect_listeners(&self) {
        self.listeners_expected.store(true, Ordering::Release);
    }

    /// The listeners of published `version` were reconciled (bound, or reported and retried when a bind failed:
    /// one port in use must not keep the whole proxy unready).
    pub fn listeners_reconciled(&self, version: u64) {
        self.listeners_version.fetch_max(version, Ordering::AcqRel);
    }

    /// How many publishes were skipped because nothing changed.
    pub fn noop_publishes(&self) -> u64 {
        self.noops.load(Ordering::Relaxed)
    }

    /// Publishes `model` if it differs from the current one. Returns the new version, or `None` when the model
    /// was equal to the current one (the store is marked ready either way).
    pub fn publish(&self, model: Model) -> Result<Option<u64>, CompileError> {
        let current = self.current.load();
        if current.version > 0 && *current.model == model {
            self.noops.fetch_add(1, Ordering::Relaxed);
            self.ready.store(true, Ordering::Release);
            return Ok(None);
        }
        let mut resolver = self.request_metrics.get().map(|m| m.resolver());
        let router = Router::compile_with(&model, Some(&current.router), resolver.as_mut())?;
        let upstreams = Upstreams::reconcile(&model, &current.upstreams);
        let mut acceptors = Vec::new();
        let mut tls_errors = Vec::new();
        for l in &model.listeners {
            if let Some(tls) = l.tls() {
                match crate::tls::acceptor(tls, l.protocol() == crate::model::Protocol::Https) {
                    Ok(a) => acceptors.push(((l.address, l.port), Arc::new(a))),
                    Err(e) => {
                        tracing::error!(port = l.port, error = %e, "TLS listener cannot be configured");
                        tls_errors.push(((l.address, l.port), e.to_string()));
                    }
                }
            }
        }
        let version = self.version.fetch_add(1, Ordering::AcqRel) + 1;
        self.current.store(Arc::new(Snapshot {
            version,
            model: Arc::new(model),
            router,
            upstreams,
            acceptors,
            tls_errors,
        }));
        if let Some(r) = resolver {
            // Series of routes that left are removed once the table without them serves.
            r.finish();
        }
        self.ready.store(true, Ordering::Release);
        self.changed.send_replace(version);
        Ok(Some(version))
    }

    /// Records that the control loop finished a round that read `objects` objects (after its
    /// [`Store::publish`], whatever that did). Counts never go down.
    pub fn record_round(&self, objects: usize) {
        let version = self.load().version;
        if let Ok(mut r) = self.rounds.lock() {
            r.rounds += 1;
            r.objects = objects as u64;
            r.version = version;
        }
    }

    /// The rounds recorded so far (all zero before the first).
    pub fn rounds(&self) -> Rounds {
        self.rounds.lock().map(|r| *r).unwrap_or_default()
    }

    /// A receiver that sees the version of every publish.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_waits_for_the_listeners_when_a_manager_binds_them() {
        let store = Store::new();
        store.expect_listeners();
        assert_eq!(store.publish(Model::default()).unwrap(), Some(1));
        assert!(!store.is_ready(), "published, listeners not bound yet");
        store.listeners_reconciled(1);
        assert!(store.is_ready());
    }

    #[test]
    fn publishes_only_changes() {
        let store = Store::new();
        assert!(!store.is_ready());
        assert_eq!(store.load().version, 0);
        assert_eq!(store.publish(Model::default()).unwrap(), Some(1));
        assert!(store.is_ready());
        assert_eq!(store.publish(Model::default()).unwrap(), None);
        assert_eq!(store.noop_publishes(), 1);
        assert_eq!(store.load().version, 1);
    }

    #[test]
    fn rounds_count_every_round() {
        let store = Store::new();
        assert_eq!(store.rounds(), Rounds::default());
        store.record_round(3);
        assert_eq!(store.publish(Model::default()).unwrap(), Some(1));
        store.record_round(5);
        assert_eq!(
            store.rounds(),
            Rounds {
                rounds: 2,
                objects: 5,
                version: 1
            }
        );
    }
}
