//! The upstream registry: one [`Upstream`] per backend of the model, owning endpoint selection, health state and
//! the one function that turns an endpoint into a Pingora peer.
//!
//! A configuration change builds a new [`Upstreams`] from the new model and the current one
//! ([`Upstreams::reconcile`]): a backend whose settings and endpoints did not change is the same `Arc` as before,
//! and an endpoint that is still there keeps its [`EndpointState`] (failures, ejection, latency) even when its
//! backend's endpoint set changed. So health and load-balancing state survive table swaps.
//!
//! Selection goes through `pingora-load-balancing`: its weighted round robin and random selections, its Ketama
//! consistent hashing, and (for least-request) a [`BackendSelection`] of ours that picks the less loaded of two
//! random endpoints. Each selection's iterator is walked past endpoints that are out of rotation or were already
//! tried by this request.

mod health;

pub use health::run_active_checks;

use crate::model::{
    BackendKey, BackendProtocol, HashOn, LoadBalancing, Model, PassiveHealth, ServiceBackend,
};
use crate::proxy::upstream_tls::TlsConnect;
use crate::tls::UpstreamTls;
use pingora::lb::selection::consistent::KetamaHashing;
use pingora::lb::selection::{BackendIter, BackendSelection, Random, RoundRobin};
use pingora::lb::Backend as LbBackend;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::upstreams::peer::HttpPeer;
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How long connecting to an endpoint may take before the attempt fails.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Milliseconds since the first call in this process: the clock of ejections (monotonic, fits an atomic).
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The position of a backend in a snapshot: its index in `Model::backends` order, which is also the order of
/// [`Upstreams`]. Compiled routes hold it instead of the backend, so a request finds its upstream with one index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BackendId(pub u32);

/// The upstreams of one snapshot, in `Model::backends` order.
#[derive(Debug, Default)]
pub struct Upstreams {
    list: Box<[Arc<Upstream>]>,
}

impl Upstreams {
    /// The upstreams of `model`, reusing from `previous` every backend whose settings and endpoints are unchanged
    /// and the state of every endpoint that is still there.
    pub fn reconcile(model: &Model, previous: &Upstreams) -> Upstreams {
        let old: HashMap<&BackendKey, &Arc<Upstream>> =
            previous.list.iter().map(|u| (&u.key, u)).collect();
        let list = model
            .backends
            .iter()
            .map(|(key, spec)| match old.get(key) {
                Some(u) if u.spec == *spec => Arc::clone(u),
                prev => Arc::new(Upstream::new(key, spec, prev.map(|u| u.as_ref()))),
            })
            .collect();
        Upstreams { list }
    }

    /// The upstream at `id`.
    #[inline]
    pub fn get(&self, id: BackendId) -> Option<&Arc<Upstream>> {
        self.list.get(id.0 as usize)
    }

    /// All upstreams, in `Model::backends` order.
    pub fn all(&self) -> &[Arc<Upstream>] {
        &self.list
    }
}

/// One backend ready to serve: its endpoints with their state, how one is chosen, and how it is reached.
pub struct Upstream {
    /// The backend's key in the model.
    pub key: BackendKey,
    /// What it was built from (an equal spec in the next model reuses this upstream as is).
    spec: ServiceBackend,
    /// `namespace/name:port`, for logs.
    pub label: Box<str>,
    /// The key as access logs write it.
    pub log_key: super::observe::Rendered,
    endpoints: Box<[Arc<EndpointState>]>,
    selector: Selector,
    /// Each endpoint's persistent session key ([`session_key`]), in endpoint order.
    session_keys: Box<[u64]>,
    /// The endpoints by persistent session key: (key, endpoint index), sorted.
    by_session_key: Box<[(u64, u32)]>,
    /// The Ketama ring balanced sessions are placed on, built at the first such session.
    session_ring: OnceLock<Arc<KetamaHashing>>,
    /// TLS to the endpoints (BackendTLSPolicy), or why it cannot be configured (requests then get 500).
    tls: Result<Option<Arc<UpstreamTls>>, Box<str>>,
    /// Counters since this backend (this key) was first seen.
    pub stats: Arc<UpstreamStats>,
    /// The active health check, when the policy asks for one.
    checker: Option<Arc<health::Checker>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("key", &self.key)
            .field("endpoints", &self.endpoints.len())
            .finish()
    }
}

/// Counters of one backend, kept across configuration changes while its key exists.
#[derive(Debug, Default)]
pub struct UpstreamStats {
    /// Attempts that failed before a response (connection refused or reset, connect or response timeout).
    pub failures: AtomicU64,
    /// Attempts made again, on another endpoint when there is one, after a failure.
    pub retries: AtomicU64,
    /// Times an endpoint was taken out of rotation.
    pub ejections: AtomicU64,
}

/// One endpoint and what is known of its health. Shared by every upstream built for the same backend key while
/// the endpoint stays in its endpoint set.
#[derive(Debug)]
pub struct EndpointState {
    /// The address.
    pub addr: SocketAddr,
    /// Consecutive failures since the last success or ejection.
    failures: AtomicU32,
    /// While [`now_ms`] is below this, the endpoint is out of rotation; 0 when it never was or has recovered.
    ejected_until: AtomicU64,
    /// Ejections in a row without a success in between (the back-off doubles with each).
    ejections: AtomicU32,
    /// The verdict of active health checks (true when there are none).
    active_healthy: AtomicBool,
    /// Active checks in a row whose result differs from the current verdict (the checker flips the verdict when
    /// this reaches the policy's threshold).
    active_streak: AtomicU32,
    /// When the next active check is due ([`now_ms`]).
    next_check: AtomicU64,
    /// Requests in flight (least-request selection only).
    in_flight: AtomicU32,
    /// Moving average of the time to the response header, in microseconds (least-request selection only).
    ewma_us: AtomicU64,
    /// Attempts sent to this endpoint.
    attempts: AtomicU64,
}

impl EndpointState {
    fn new(addr: SocketAddr) -> Self {
        EndpointState {
            addr,
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            active_healthy: AtomicBool::new(true),
            active_streak: AtomicU32::new(0),
            next_check: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            ewma_us: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
        }
    }

    /// In rotation: not ejected by passive checks (or its back-off has passed: half-open) and not failing active
    /// checks.
    #[inline]
    pub fn available(&self, now: &mut Option<u64>) -> bool {
        if !self.active_healthy.load(Ordering::Relaxed) {
            return false;
        }
        let until = self.ejected_until.load(Ordering::Relaxed);
        until == 0 || *now.get_or_insert_with(now_ms) >= until
    }

    /// Attempts sent to this endpoint so far.
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }
}

/// Which endpoint indexes a request has tried (at most [`Tried::MAX`]; attempts are bounded below that).
#[derive(Clone, Copy, Debug, Default)]
pub struct Tried {
    ids: [u32; Tried::MAX],
    len: usize,
}

impl Tried {
    /// How many endpoints are remembered.
    pub const MAX: usize = 8;

    /// Remembers `i`.
    pub fn add(&mut self, i: usize) {
        if self.len < Tried::MAX {
            self.ids[self.len] = i as u32;
            self.len += 1;
        }
    }

    /// Has `i` been tried?
    pub fn contains(&self, i: usize) -> bool {
        self.ids[..self.len].contains(&(i as u32))
    }

    /// How many were tried.
    pub fn len(&self) -> usize {
        self.len
    }

    /// None yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The endpoints as pingora-load-balancing backends, each tied to its index and state by its `ext`.
fn lb_set(endpoints: &[Arc<EndpointState>]) -> BTreeSet<LbBackend> {
    endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let mut ext = http::Extensions::new();
            ext.insert(EpRef {
                index: i as u32,
                state: Arc::clone(e),
            });
            LbBackend {
                addr: PingoraAddr::Inet(e.addr),
                weight: 1,
                ext,
            }
        })
        .collect()
}

/// The persistent session key of endpoint `addr` of backend `label` (`namespace/name:port`): FNV-1a (64 bits) of
/// the two. A pure function of the backend and the address, so every replica and every restart computes the same
/// key, and a session follows its endpoint for as long as it exists.
pub fn session_key(label: &str, addr: SocketAddr) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
    };
    eat(label.as_bytes());
    eat(b"|");
    match addr.ip() {
        std::net::IpAddr::V4(ip) => eat(&ip.octets()),
        std::net::IpAddr::V6(ip) => eat(&ip.octets()),
    }
    eat(&addr.port().to_be_bytes());
    h
}

/// What ties a pingora-load-balancing [`LbBackend`] to our endpoint: stored in its `ext`.
#[derive(Clone, Debug)]
struct EpRef {
    index: u32,
    state: Arc<EndpointState>,
}

enum Selector {
    RoundRobin(Arc<RoundRobin>),
    Random(Arc<Random>),
    Hash(Arc<KetamaHashing>, HashOn),
    /// A Ketama ring over subsets of the endpoints (each ring member's `ext` is a [`SubsetRef`]).
    HashSubset(Arc<KetamaHashing>, HashOn, Box<[Box<[u32]>]>),
    LeastRequest(Arc<LeastRequest>),
}

/// Which subset a ring member of [`Selector::HashSubset`] stands for.
#[derive(Clone, Copy, Debug)]
struct SubsetRef(u32);

/// The subsets of ingress-nginx's `upstream-hash-by-subset`: the endpoints in order, cut into groups of `size`,
/// the last group filled up with the first endpoints (as ingress-nginx reuses endpoints when there are too few).
fn subsets(n: usize, size: u32) -> Box<[Box<[u32]>]> {
    let size = (size.max(1) as usize).min(n.max(1));
    if n == 0 {
        return Box::new([]);
    }
    let count = n.div_ceil(size);
    (0..count)
        .map(|s| {
            (0..size)
                .map(|k| ((s * size + k) % n) as u32)
                .collect::<Box<[u32]>>()
        })
        .collect()
}

/// The ring members of the subsets: one pingora-load-balancing backend per subset, at a made-up address that
/// only names the subset (the ring hashes addresses), with its [`SubsetRef`].
fn subset_ring(count: usize) -> BTreeSet<LbBackend> {
    (0..count)
        .map(|i| {
            let mut ext = http::Extensions::new();
            ext.insert(SubsetRef(i as u32));
            LbBackend {
                addr: PingoraAddr::Inet(SocketAddr::from((std::net::Ipv4Addr::from(i as u32), 1))),
                weight: 1,
                ext,
            }
        })
        .collect()
}

impl Upstream {
    fn new(key: &BackendKey, spec: &ServiceBackend, previous: Option<&Upstream>) -> Self {
        let old: HashMap<SocketAddr, &Arc<EndpointState>> = previous
            .map(|p| p.endpoints.iter().map(|e| (e.addr, e)).collect())
            .unwrap_or_default();
        let endpoints: Box<[Arc<EndpointState>]> = spec
            .endpoints
            .iter()
            .map(|e| {
                let addr = SocketAddr::new(e.ip, e.port);
                old.get(&addr)
                    .map(|s| Arc::clone(s))
                    .unwrap_or_else(|| Arc::new(EndpointState::new(addr)))
            })
            .collect();
        // Without active checks an endpoint is never held out by them (a policy change may have removed them).
        if spec.policy.active.is_none() {
            for e in endpoints.iter() {
                e.active_healthy.store(true, Ordering::Relaxed);
            }
        }
        let set = lb_set(&endpoints);
        let selector = match &spec.policy.load_balancing {
            LoadBalancing::RoundRobin => {
                Selector::RoundRobin(Arc::new(BackendSelection::build(&set)))
            }
            LoadBalancing::Random => Selector::Random(Arc::new(BackendSelection::build(&set))),
            LoadBalancing::LeastRequest => {
                Selector::LeastRequest(Arc::new(LeastRequest::build(&set)))
            }
            LoadBalancing::ConsistentHash(on) => {
                Selector::Hash(Arc::new(KetamaHashing::build(&set)), on.clone())
            }
            LoadBalancing::ConsistentHashSubset { on, size } => {
                let groups = subsets(endpoints.len(), *size);
                let ring = KetamaHashing::build(&subset_ring(groups.len()));
                Selector::HashSubset(Arc::new(ring), on.clone(), groups)
            }
        };
        let h2 = spec.protocol == BackendProtocol::H2c;
        let tls = match spec
            .tls
            .as_deref()
            .map(|t| crate::tls::upstream(t, h2))
            .transpose()
        {
            Ok(t) => Ok(t.map(Arc::new)),
            Err(e) => Err(format!("backend TLS cannot be configured: {e}").into()),
        };
        let label: Box<str> = format!("{}/{}:{}", spec.namespace, spec.name, spec.port).into();
        let session_keys: Box<[u64]> = endpoints
            .iter()
            .map(|e| session_key(&label, e.addr))
            .collect();
        let mut by_session_key: Vec<(u64, u32)> = session_keys
            .iter()
            .enumerate()
            .map(|(i, &k)| (k, i as u32))
            .collect();
        by_session_key.sort_unstable();
        Upstream {
            key: key.clone(),
            spec: spec.clone(),
            label,
            log_key: Default::default(),
            endpoints,
            selector,
            session_keys,
            by_session_key: by_session_key.into_boxed_slice(),
            session_ring: OnceLock::new(),
            tls,
            stats: previous.map(|p| Arc::clone(&p.stats)).unwrap_or_default(),
            checker: None,
        }
        .with_checker()
    }

    fn with_checker(mut self) -> Self {
        self.checker = self
            .spec
            .policy
            .active
            .as_ref()
            .map(|a| Arc::new(health::Checker::new(&self, a)));
        self
    }

    /// The endpoints, in the model's order (an endpoint's index is its position here).
    pub fn endpoints(&self) -> &[Arc<EndpointState>] {
        &self.endpoints
    }

    /// The TLS the backend asks for (BackendTLSPolicy), or why its settings could not be built.
    pub fn tls(&self) -> Result<Option<&Arc<UpstreamTls>>, &str> {
        match &self.tls {
            Ok(t) => Ok(t.as_ref()),
            Err(e) => Err(e),
        }
    }

    /// The backend settings this upstream was built from.
    pub fn spec(&self) -> &ServiceBackend {
        &self.spec
    }

    /// Why requests to this backend cannot be sent (its TLS settings do not build), if so.
    pub fn unusable(&self) -> Option<&str> {
        self.tls.as_ref().err().map(|e| e.as_ref())
    }

    /// The request property consistent hashing uses, when the backend hashes.
    pub fn hash_on(&self) -> Option<&HashOn> {
        match &self.selector {
            Selector::Hash(_, on) | Selector::HashSubset(_, on, _) => Some(on),
            _ => None,
        }
    }

    /// Does the selection read in-flight counts and latencies (so the proxy must keep them)?
    pub fn tracks_load(&self) -> bool {
        matches!(self.selector, Selector::LeastRequest(_))
    }

    /// Chooses an endpoint for a request: the selection's choice for `hash_key` (ignored by round robin, random
    /// and least-request), skipping endpoints out of rotation and those in `tried`. When every endpoint not yet
    /// tried is out of rotation, one of them is chosen anyway (failing over to an endpoint that may have
    /// recovered beats a certain error). `None` when there are no endpoints, or every one was tried.
    pub fn select(&self, hash_key: &[u8], tried: &Tried) -> Option<usize> {
        match &self.selector {
            Selector::RoundRobin(s) => self.walk(s.iter(hash_key), tried),
            Selector::Random(s) => self.walk(s.iter(hash_key), tried),
            Selector::Hash(s, _) => self.walk(s.iter(hash_key), tried),
            Selector::HashSubset(s, _, groups) => {
                self.walk_subsets(s.iter(hash_key), groups, tried)
            }
            Selector::LeastRequest(s) => self.walk(s.iter(hash_key), tried),
        }
    }

    /// [`Upstream::walk`] for subsets: the first subset on the ring with an endpoint in rotation and not tried
    /// gives one of those at random; when none has, any endpoint not tried (as `walk` falls back).
    fn walk_subsets(
        &self,
        mut it: impl BackendIter,
        groups: &[Box<[u32]>],
        tried: &Tried,
    ) -> Option<usize> {
        let n = self.endpoints.len();
        let mut now = None;
        for _ in 0..(2 * groups.len() + 4) {
            let Some(b) = it.next() else { break };
            let Some(&SubsetRef(g)) = b.ext.get::<SubsetRef>() else {
                continue;
            };
            let Some(group) = groups.get(g as usize) else {
                continue;
            };
            // Two passes over the (small) subset rather than a list: no allocation per request.
            let mut ready = |i: usize| {
                !tried.contains(i) && self.endpoints.get(i).is_some_and(|e| e.available(&mut now))
            };
            let count = group.iter().filter(|&&i| ready(i as usize)).count();
            if count > 0 {
                let pick = fastrand::usize(..count);
                return group
                    .iter()
                    .map(|&i| i as usize)
                    .filter(|&i| ready(i))
                    .nth(pick);
            }
        }
        (0..n).find(|&i| !tried.contains(i))
    }

    /// The persistent session key of endpoint `i`.
    #[inline]
    pub fn endpoint_session_key(&self, i: usize) -> Option<u64> {
        self.session_keys.get(i).copied()
    }

    /// The endpoint a persistent session key names, if it is one of this backend's.
    #[inline]
    pub fn find_session(&self, key: u64) -> Option<usize> {
        let i = self
            .by_session_key
            .binary_search_by_key(&key, |&(k, _)| k)
            .ok()?;
        self.by_session_key.get(i).map(|&(_, e)| e as usize)
    }

    /// Is endpoint `i` in rotation?
    #[inline]
    pub fn endpoint_available(&self, i: usize) -> bool {
        self.endpoints
            .get(i)
            .is_some_and(|e| e.available(&mut None))
    }

    /// Places a balanced session's key on the endpoints by Ketama consistent hashing (the same key gives the same
    /// endpoint while the endpoint set is unchanged, on every replica), skipping endpoints out of rotation and
    /// those in `tried` as [`Upstream::select`] does.
    pub fn select_balanced(&self, key: u64, tried: &Tried) -> Option<usize> {
        let ring = self
            .session_ring
            .get_or_init(|| Arc::new(KetamaHashing::build(&lb_set(&self.endpoints))));
        self.walk(ring.iter(&key.to_be_bytes()), tried)
    }

    fn walk(&self, mut it: impl BackendIter, tried: &Tried) -> Option<usize> {
        let n = self.endpoints.len();
        if n == 0 || tried.len() >= n && (0..n).all(|i| tried.contains(i)) {
            return None;
        }
        let mut now = None;
        let mut fallback = None;
        // Every selection visits every endpoint within a few rounds; the bound keeps a pathological iterator from
        // spinning.
        for _ in 0..(4 * n + 8) {
            let Some(b) = it.next() else { break };
            let Some(ep) = b.ext.get::<EpRef>() else {
                continue;
            };
            let i = ep.index as usize;
            if tried.contains(i) {
                continue;
            }
            if ep.state.available(&mut now) {
                return Some(i);
            }
            fallback.get_or_insert(i);
        }
        fallback.or_else(|| (0..n).find(|&i| !tried.contains(i)))
    }

    /// The endpoint at `i`.
    #[inline]
    pub fn endpoint(&self, i: usize) -> Option<&Arc<EndpointState>> {
        self.endpoints.get(i)
    }

    /// The one place a peer for an endpoint of this backend is built (requests, retries, mirrors, active
    /// checks): plain HTTP/1.1, HTTP/2 with prior knowledge for h2c backends, or TLS as its BackendTLSPolicy says
    /// (then HTTP/2 backends get HTTP/2 inside TLS, offered by ALPN `h2`).
    pub fn peer(&self, ep: &EndpointState) -> HttpPeer {
        let mut peer = HttpPeer::new(ep.addr, false, String::new());
        peer.options.connection_timeout = Some(CONNECT_TIMEOUT);
        if self.spec.protocol == BackendProtocol::H2c {
            peer.options.set_http_version(2, 2);
        }
        if let Ok(Some(tls)) = &self.tls {
            peer.options.custom_l4 = Some(Arc::new(TlsConnect(Arc::clone(tls))));
            peer.group_key = tls.group_key;
        }
        peer
    }

    /// An attempt is about to go to endpoint `i`.
    #[inline]
    pub fn on_attempt(&self, i: usize) {
        if let Some(ep) = self.endpoints.get(i) {
            ep.attempts.fetch_add(1, Ordering::Relaxed);
            if self.tracks_load() {
                ep.in_flight.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The attempt to endpoint `i` is over (answered or failed); `latency` is the time to the response header when
    /// there was one.
    #[inline]
    pub fn on_attempt_done(&self, i: usize, latency: Option<Duration>) {
        if !self.tracks_load() {
            return;
        }
        if let Some(ep) = self.endpoints.get(i) {
            let _ = ep
                .in_flight
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            if let Some(l) = latency {
                let sample = u64::try_from(l.as_micros()).unwrap_or(u64::MAX).max(1);
                let _ = ep
                    .ewma_us
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                        // An average over about the last 8 responses; the first sample is taken as is.
                        Some(if old == 0 {
                            sample
                        } else {
                            old - old / 8 + sample / 8
                        })
                    });
            }
        }
    }

    /// Endpoint `i` answered: it is healthy again if it was on probation.
    #[inline]
    pub fn record_success(&self, i: usize) {
        let Some(ep) = self.endpoints.get(i) else {
            return;
        };
        // Loads first: a healthy endpoint's state is only read, so its cache line stays shared between workers.
        if ep.failures.load(Ordering::Relaxed) != 0 {
            ep.failures.store(0, Ordering::Relaxed);
        }
        if ep.ejections.load(Ordering::Relaxed) != 0 {
            ep.ejections.store(0, Ordering::Relaxed);
            ep.ejected_until.store(0, Ordering::Relaxed);
        }
    }

    /// Endpoint `i` failed before answering (refused, reset, timed out). Returns `true` when this took it out of
    /// rotation.
    pub fn record_failure(&self, i: usize) -> bool {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        let Some(ep) = self.endpoints.get(i) else {
            return false;
        };
        let p: PassiveHealth = self.spec.policy.passive;
        if p.max_failures == 0 {
            return false;
        }
        let failures = ep.failures.fetch_add(1, Ordering::Relaxed) + 1;
        // Half-open: an endpoint back from an ejection goes out again at its first failure.
        let probation = ep.ejections.load(Ordering::Relaxed) > 0;
        if failures < p.max_failures && !probation {
            return false;
        }
        let now = now_ms();
        if ep.ejected_until.load(Ordering::Relaxed) > now {
            // Already out (another request saw the same failure).
            return false;
        }
        let n = ep.ejections.fetch_add(1, Ordering::Relaxed).min(16);
        let backoff = p
            .ejection_ms
            .saturating_mul(1u64 << n)
            .min(p.max_ejection_ms);
        ep.ejected_until.store(now + backoff, Ordering::Relaxed);
        ep.failures.store(0, Ordering::Relaxed);
        self.stats.ejections.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(backend = %self.key, endpoint = %ep.addr, backoff_ms = backoff, "endpoint taken out of rotation");
        true
    }

    /// A retry is being made after a failed attempt.
    pub fn record_retry(&self) {
        self.stats.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// What the admin API shows of this backend.
    pub fn report(&self) -> UpstreamReport {
        let now = now_ms();
        UpstreamReport {
            backend: self.key.to_string(),
            failures: self.stats.failures.load(Ordering::Relaxed),
            retries: self.stats.retries.load(Ordering::Relaxed),
            ejections: self.stats.ejections.load(Ordering::Relaxed),
            endpoints: self
                .endpoints
                .iter()
                .map(|e| {
                    let until = e.ejected_until.load(Ordering::Relaxed);
                    EndpointReport {
                        address: e.addr.to_string(),
                        available: e.available(&mut Some(now)),
                        ejected_for_ms: until.saturating_sub(now),
                        consecutive_failures: e.failures.load(Ordering::Relaxed),
                        active_healthy: e.active_healthy.load(Ordering::Relaxed),
                        attempts: e.attempts.load(Ordering::Relaxed),
                    }
                })
                .collect(),
        }
    }
}

/// A backend as `GET /upstreams` shows it.
#[derive(Debug, Serialize)]
pub struct UpstreamReport {
    /// The backend key.
    pub backend: String,
    /// Attempts that failed before a response.
    pub failures: u64,
    /// Attempts made again after a failure.
    pub retries: u64,
    /// Times an endpoint was taken out of rotation.
    pub ejections: u64,
    /// Its endpoints.
    pub endpoints: Vec<EndpointReport>,
}

/// An endpoint as `GET /upstreams` shows it.
#[derive(Debug, Serialize)]
pub struct EndpointReport {
    /// `ip:port`.
    pub address: String,
    /// In rotation now.
    pub available: bool,
    /// How much longer it is out of rotation (0 when it is not).
    pub ejected_for_ms: u64,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// The active checks' verdict (true without active checks).
    pub active_healthy: bool,
    /// Attempts sent to it.
    pub attempts: u64,
}

/// Least-request selection (a `pingora-load-balancing` [`BackendSelection`]): of two endpoints drawn at random,
/// the one with the lower load, where load is (requests in flight + 1) times its latency average; then the others
/// in turn (for retries and for skipping endpoints out of rotation).
pub struct LeastRequest {
    backends: Box<[LbBackend]>,
    states: Box<[Arc<EndpointState>]>,
}

impl LeastRequest {
    fn load(&self, i: usize) -> u64 {
        self.states.get(i).map_or(u64::MAX, |s| {
            let flight = u64::from(s.in_flight.load(Ordering::Relaxed)) + 1;
            flight.saturating_mul(s.ewma_us.load(Ordering::Relaxed).max(1))
        })
    }
}

impl BackendSelection for LeastRequest {
    type Iter = LeastRequestIter;
    type Config = ();

    fn build(backends: &BTreeSet<LbBackend>) -> Self {
        let backends: Box<[LbBackend]> = backends.iter().cloned().collect();
        let states = backends
            .iter()
            .filter_map(|b| b.ext.get::<EpRef>().map(|e| Arc::clone(&e.state)))
            .collect();
        LeastRequest { backends, states }
    }

    fn iter(self: &Arc<Self>, _key: &[u8]) -> LeastRequestIter {
        let n = self.backends.len();
        let first = match n {
            0 => 0,
            1 => 0,
            _ => {
                let a = fastrand::usize(0..n);
                let b = (a + 1 + fastrand::usize(0..n - 1)) % n;
                if self.load(b) < self.load(a) {
                    b
                } else {
                    a
                }
            }
        };
        LeastRequestIter {
            sel: Arc::clone(self),
            first,
            step: 0,
        }
    }
}

/// The iterator of [`LeastRequest`].
pub struct LeastRequestIter {
    sel: Arc<LeastRequest>,
    first: usize,
    step: usize,
}

impl BackendIter for LeastRequestIter {
    fn next(&mut self) -> Option<&LbBackend> {
        let n = self.sel.backends.len();
        if n == 0 || self.step >= n {
            return None;
        }
        let i = (self.first + self.step) % n;
        self.step += 1;
        self.sel.backends.get(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BackendPolicy, Endpoint};

    fn spec(ports: &[u16], policy: BackendPolicy) -> (BackendKey, ServiceBackend) {
        let s = ServiceBackend {
            namespace: "ns".into(),
            name: "svc".into(),
            port: 80,
            endpoints: ports
                .iter()
                .map(|&port| Endpoint {
                    ip: "127.0.0.1".parse().unwrap(),
                    port,
                })
                .collect(),
            protocol: BackendProtocol::Http1,
            tls: None,
            policy,
        };
        (s.key(""), s)
    }

    fn model(backends: Vec<(BackendKey, ServiceBackend)>) -> Model {
        Model {
            listeners: Vec::new(),
            backends: backends.into_iter().collect(),
        }
    }

    #[test]
    fn persistent_session_keys_name_endpoints_across_rebuilds() {
        let (k, s) = spec(&[1, 2, 3], BackendPolicy::default());
        let a = Upstream::new(&k, &s, None);
        // The key is a pure function of backend and address: pinned, so replicas and versions agree.
        let addr: SocketAddr = "127.0.0.1:2".parse().unwrap();
        assert_eq!(
            session_key("ns/svc:80", addr),
            session_key("ns/svc:80", addr)
        );
        assert_ne!(
            session_key("ns/svc:80", addr),
            session_key("ns/other:80", addr)
        );
        for i in 0..3 {
            let key = a.endpoint_session_key(i).unwrap();
            assert_eq!(a.find_session(key), Some(i));
        }
        assert_eq!(a.find_session(12345), None);
        // Endpoint 2 gone, one added: the others keep their keys, the gone one's key names nothing.
        let key_of_2 = a.endpoint_session_key(1).unwrap();
        let key_of_3 = a.endpoint_session_key(2).unwrap();
        let (k2, s2) = spec(&[3, 1, 4], BackendPolicy::default());
        let b = Upstream::new(&k2, &s2, Some(&a));
        assert_eq!(b.find_session(key_of_3), Some(0));
        assert_eq!(b.find_session(key_of_2), None);
    }

    #[test]
    fn balanced_sessions_move_only_when_their_endpoint_goes() {
        let (k, s) = spec(&[1, 2, 3, 4], BackendPolicy::default());
        let a = Upstream::new(&k, &s, None);
        let keys: Vec<u64> = (0..400u64)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        let port = |u: &Upstream, key: u64| {
            let i = u.select_balanced(key, &Tried::default()).unwrap();
            u.endpoint(i).unwrap().addr.port()
        };
        let before: Vec<u16> = keys.iter().map(|&k| port(&a, k)).collect();
        // Stable for the same endpoints, spread over all of them.
        assert_eq!(
            before,
            keys.iter().map(|&k| port(&a, k)).collect::<Vec<_>>()
        );
        for p in 1..=4 {
            let n = before.iter().filter(|&&b| b == p).count();
            assert!(n > 40, "endpoint {p} got {n} of 400 sessions");
        }
        // Endpoint 4 goes: only its sessions move.
        let (k3, s3) = spec(&[1, 2, 3], BackendPolicy::default());
        let b = Upstream::new(&k3, &s3, Some(&a));
        for (&key, &was) in keys.iter().zip(&before) {
            let now = port(&b, key);
            if was != 4 {
                assert_eq!(now, was, "a session on a remaining endpoint moved");
            }
        }
        // A tried endpoint is skipped.
        let first = a.select_balanced(keys[0], &Tried::default()).unwrap();
        let mut tried = Tried::default();
        tried.add(first);
        assert_ne!(a.select_balanced(keys[0], &tried), Some(first));
    }

    #[test]
    fn hash_subsets_keep_a_key_within_its_subset() {
        // Subsets as ingress-nginx cuts them: in order, the last one filled up from the start.
        assert_eq!(
            subsets(7, 3).iter().map(|g| g.to_vec()).collect::<Vec<_>>(),
            vec![vec![0, 1, 2], vec![3, 4, 5], vec![6, 0, 1]]
        );
        assert_eq!(subsets(2, 3).len(), 1);
        assert!(subsets(0, 3).is_empty());
        let policy = BackendPolicy {
            load_balancing: LoadBalancing::ConsistentHashSubset {
                on: HashOn::Uri,
                size: 2,
            },
            ..BackendPolicy::default()
        };
        let (k, s) = spec(&[1, 2, 3, 4, 5, 6], policy);
        let u = Upstream::new(&k, &s, None);
        let mut seen_subsets = BTreeSet::new();
        for key in 0..40u32 {
            let key = format!("/item/{key}");
            let picks: BTreeSet<usize> = (0..30)
                .map(|_| u.select(key.as_bytes(), &Tried::default()).unwrap())
                .collect();
            // One subset of two endpoints per key, both used (random within the subset).
            assert_eq!(picks.len(), 2, "{key}: {picks:?}");
            let first = *picks.iter().next().unwrap();
            assert_eq!(first % 2, 0, "{key}: {picks:?}");
            assert!(picks.contains(&(first + 1)), "{key}: {picks:?}");
            seen_subsets.insert(first / 2);
        }
        assert_eq!(seen_subsets.len(), 3, "keys spread over the subsets");
        // Both endpoints of a key's subset tried: another subset serves.
        let key = b"/item/1";
        let mut tried = Tried::default();
        for _ in 0..2 {
            let i = u.select(key, &tried).unwrap();
            tried.add(i);
        }
        let other = u.select(key, &tried).unwrap();
        assert!(!tried.contains(other));
    }

    #[test]
    fn round_robin_visits_every_endpoint() {
        let u = Upstreams::reconcile(
            &model(vec![spec(&[1, 2, 3], BackendPolicy::default())]),
            &Upstreams::default(),
        );
        let up = u.get(BackendId(0)).unwrap();
        let mut seen = [0; 3];
        for _ in 0..30 {
            let i = up.select(b"", &Tried::default()).unwrap();
            seen[i] += 1;
        }
        assert_eq!(seen, [10, 10, 10]);
    }

    #[test]
    fn tried_and_ejected_endpoints_are_skipped() {
        let u = Upstreams::reconcile(
            &model(vec![spec(&[1, 2, 3], BackendPolicy::default())]),
            &Upstreams::default(),
        );
        let up = u.get(BackendId(0)).unwrap();
        // Three failures in a row take endpoint 0 out.
        assert!(!up.record_failure(0));
        assert!(!up.record_failure(0));
        assert!(up.record_failure(0));
        for _ in 0..20 {
            assert_ne!(up.select(b"", &Tried::default()), Some(0));
        }
        let mut tried = Tried::default();
        tried.add(1);
        for _ in 0..20 {
            assert_eq!(up.select(b"", &tried), Some(2));
        }
        // Everything else tried: the ejected endpoint is still better than nothing.
        tried.add(2);
        assert_eq!(up.select(b"", &tried), Some(0));
        tried.add(0);
        assert_eq!(up.select(b"", &tried), None);
        assert_eq!(up.stats.ejections.load(Ordering::Relaxed), 1);
        assert_eq!(up.stats.failures.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn half_open_endpoint_goes_out_again_at_its_first_failure() {
        let policy = BackendPolicy {
            passive: PassiveHealth {
                max_failures: 2,
                ejection_ms: 1,
                max_ejection_ms: 1_000,
            },
            ..Default::default()
        };
        let u = Upstreams::reconcile(&model(vec![spec(&[1, 2], policy)]), &Upstreams::default());
        let up = u.get(BackendId(0)).unwrap();
        up.record_failure(0);
        assert!(up.record_failure(0));
        std::thread::sleep(Duration::from_millis(5));
        let ep = up.endpoint(0).unwrap();
        assert!(ep.available(&mut None), "back-off over: half-open");
        assert!(
            up.record_failure(0),
            "one failure on probation ejects again"
        );
        assert!(!ep.available(&mut None));
        // The second ejection in a row: the back-off doubles.
        assert_eq!(ep.ejections.load(Ordering::Relaxed), 2);
        std::thread::sleep(Duration::from_millis(5));
        up.record_success(0);
        assert_eq!(ep.ejections.load(Ordering::Relaxed), 0);
        assert!(
            !up.record_failure(0),
            "healthy again: one failure is not enough"
        );
    }

    #[test]
    fn passive_checks_can_be_off() {
        let policy = BackendPolicy {
            passive: PassiveHealth {
                max_failures: 0,
                ..Default::default()
            },
            ..Default::default()
        };
        let u = Upstreams::reconcile(&model(vec![spec(&[1], policy)]), &Upstreams::default());
        let up = u.get(BackendId(0)).unwrap();
        for _ in 0..10 {
            assert!(!up.record_failure(0));
        }
        assert!(up.endpoint(0).unwrap().available(&mut None));
    }

    #[test]
    fn reconcile_keeps_unchanged_backends_and_endpoint_state() {
        let first = Upstreams::reconcile(
            &model(vec![spec(&[1, 2, 3], BackendPolicy::default()), {
                let (mut k, mut s) = spec(&[9], BackendPolicy::default());
                k.name = "other".into();
                s.name = "other".into();
                (k, s)
            }]),
            &Upstreams::default(),
        );
        // Keys sort by name: "other" is backend 0, "svc" backend 1.
        let a = first.get(BackendId(1)).unwrap().clone();
        assert_eq!(a.key.name, "svc");
        for _ in 0..3 {
            a.record_failure(1);
        }
        // Endpoint 3 goes away, 4 comes: the backend is rebuilt, endpoints 1 and 2 keep their state.
        let second = Upstreams::reconcile(
            &model(vec![spec(&[1, 2, 4], BackendPolicy::default()), {
                let (mut k, mut s) = spec(&[9], BackendPolicy::default());
                k.name = "other".into();
                s.name = "other".into();
                (k, s)
            }]),
            &first,
        );
        let b = second.get(BackendId(1)).unwrap();
        assert!(!Arc::ptr_eq(&a, b));
        assert!(Arc::ptr_eq(&a.endpoints[0], &b.endpoints[0]));
        assert!(Arc::ptr_eq(&a.endpoints[1], &b.endpoints[1]));
        assert!(!b.endpoints[1].available(&mut None), "still ejected");
        assert_eq!(b.endpoints[2].addr.port(), 4);
        assert!(Arc::ptr_eq(&a.stats, &b.stats));
        // The unchanged backend is the same object.
        assert!(Arc::ptr_eq(
            first.get(BackendId(0)).unwrap(),
            second.get(BackendId(0)).unwrap()
        ));
    }

    #[test]
    fn consistent_hash_is_stable_per_key() {
        let policy = BackendPolicy {
            load_balancing: LoadBalancing::ConsistentHash(HashOn::Header("x-user".into())),
            ..Default::default()
        };
        let u = Upstreams::reconcile(
            &model(vec![spec(&[1, 2, 3, 4], policy)]),
            &Upstreams::default(),
        );
        let up = u.get(BackendId(0)).unwrap();
        let mut distinct = BTreeSet::new();
        for user in 0..50 {
            let key = format!("user-{user}");
            let first = up.select(key.as_bytes(), &Tried::default()).unwrap();
            for _ in 0..5 {
                assert_eq!(up.select(key.as_bytes(), &Tried::default()), Some(first));
            }
            distinct.insert(first);
        }
        assert_eq!(distinct.len(), 4, "keys spread over every endpoint");
        // An ejected endpoint's keys move elsewhere, and only those.
        let moved_from = up.select(b"user-7", &Tried::default()).unwrap();
        for _ in 0..3 {
            up.record_failure(moved_from);
        }
        assert_ne!(up.select(b"user-7", &Tried::default()), Some(moved_from));
    }

    #[test]
    fn least_request_prefers_idle_endpoints() {
        let policy = BackendPolicy {
            load_balancing: LoadBalancing::LeastRequest,
            ..Default::default()
        };
        let u = Upstreams::reconcile(&model(vec![spec(&[1, 2], policy)]), &Upstreams::default());
        let up = u.get(BackendId(0)).unwrap();
        // Endpoint 0 is busy and slow.
        for _ in 0..10 {
            up.on_attempt(0);
        }
        up.on_attempt(1);
        up.on_attempt_done(1, Some(Duration::from_millis(1)));
        up.on_attempt(0);
        up.on_attempt_done(0, Some(Duration::from_millis(50)));
        for _ in 0..20 {
            assert_eq!(up.select(b"", &Tried::default()), Some(1));
        }
    }

    #[test]
    fn peers_follow_the_backend_protocol() {
        let (k, mut s) = spec(&[1], BackendPolicy::default());
        s.protocol = BackendProtocol::H2c;
        let u = Upstreams::reconcile(&model(vec![(k, s)]), &Upstreams::default());
        let up = u.get(BackendId(0)).unwrap();
        let peer = up.peer(up.endpoint(0).unwrap());
        assert_eq!(peer.options.alpn, pingora::protocols::ALPN::H2);
        assert_eq!(peer.options.connection_timeout, Some(CONNECT_TIMEOUT));
    }
}
