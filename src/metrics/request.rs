//! Per-request metrics: what each route and listener served, recorded without a label lookup or a lock.
//!
//! | metric | type | labels (see [`LabelMode`]) | meaning |
//! |---|---|---|---|
//! | `portcullis_requests_total` | counter | base, `method`, `code` | requests answered (`code` 499: the client left first) |
//! | `portcullis_request_duration_seconds` | histogram | base, `code_class` | from the request head to the end of the response |
//! | `portcullis_upstream_response_duration_seconds` | histogram | base | from an attempt's start to its response head |
//! | `portcullis_upstream_requests_total` | counter | base, `result`: `ok`, `connect_error`, `timeout`, `reset` | attempts to backends |
//! | `portcullis_upstream_retries_total` | counter | base | attempts made again (connection failures, retry policies) |
//! | `portcullis_request_bytes_total` | counter | base | request body bytes read from clients |
//! | `portcullis_response_bytes_total` | counter | base | response body bytes sent to clients |
//! | `portcullis_active_requests` | gauge | `listener` | requests in progress |
//! | `portcullis_access_log_dropped_total` | counter | | access-log lines dropped because the writer fell behind |
//!
//! The base labels are `listener` (`ADDRESS:PORT`, `*` for the default address, logical port), then with
//! `--metrics-labels route` `route_kind`, `route_namespace`, `route_name`, and with `route+backend` also
//! `backend` (`namespace/name:port` of the Service port; empty when no backend answered). Requests that matched
//! no route count under the listener with empty route labels. No label carries a host, a path or a client
//! address: the series are bounded by the configuration, not by the traffic.
//!
//! How a request avoids label lookups: when a snapshot is published, every compiled rule gets its [`RouteStats`]
//! (one [`Handles`] per base label set, shared by the rules of one route and kept across publishes while the
//! label set stays). The request reaches them through the rule it matched and records with atomic adds. The
//! method/code and code-class children are created the first time a combination occurs (one lock then, never
//! again for that combination); series that never occur are not exported. Label sets that leave the
//! configuration are removed from the families at the next publish.

use super::{made, register, MetricsError};
use crate::model::{BackendKey, Origin};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Which labels per-request metrics carry (`--metrics-labels`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LabelMode {
    /// No per-request metrics at all (for measuring what they cost).
    Off,
    /// `listener` only.
    None,
    /// `listener` and the route (kind, namespace, name).
    #[default]
    Route,
    /// `listener`, the route and the backend Service port.
    #[value(name = "route+backend")]
    RouteBackend,
}

impl LabelMode {
    fn base_names(self) -> &'static [&'static str] {
        match self {
            LabelMode::Off | LabelMode::None => &["listener"],
            LabelMode::Route => &["listener", "route_kind", "route_namespace", "route_name"],
            LabelMode::RouteBackend => &[
                "listener",
                "route_kind",
                "route_namespace",
                "route_name",
                "backend",
            ],
        }
    }
}

/// Methods get their own label value; any other method counts as `other` (a client cannot grow the series).
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
];
const METHOD_SLOTS: usize = METHODS.len() + 1;

/// Distinct status codes a handle keeps a direct slot for, per method; more are still counted, through a label
/// lookup.
const CODE_SLOTS: usize = 12;

/// How an attempt to a backend ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamResult {
    /// A response header arrived.
    Ok,
    /// The connection could not be made.
    ConnectError,
    /// The backend did not answer in time.
    Timeout,
    /// The connection broke.
    Reset,
}

impl UpstreamResult {
    const ALL: [UpstreamResult; 4] = [
        UpstreamResult::Ok,
        UpstreamResult::ConnectError,
        UpstreamResult::Timeout,
        UpstreamResult::Reset,
    ];

    fn label(self) -> &'static str {
        match self {
            UpstreamResult::Ok => "ok",
            UpstreamResult::ConnectError => "connect_error",
            UpstreamResult::Timeout => "timeout",
            UpstreamResult::Reset => "reset",
        }
    }
}

/// The metric families of requests, registered in the process's registry.
struct Families {
    requests: IntCounterVec,
    duration: HistogramVec,
    upstream_duration: HistogramVec,
    upstream_results: IntCounterVec,
    retries: IntCounterVec,
    request_bytes: IntCounterVec,
    response_bytes: IntCounterVec,
}

/// Per-request metrics of one process.
pub struct RequestMetrics {
    mode: LabelMode,
    families: Arc<Families>,
    active: IntGaugeVec,
    access_log_dropped: IntCounter,
    /// Route label sets of the published configuration.
    live: Mutex<HashMap<Box<[String]>, Arc<Handles>>>,
    /// Listener label sets (requests without a route); never removed.
    listeners: Mutex<HashMap<String, Arc<Handles>>>,
}

impl std::fmt::Debug for RequestMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestMetrics")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

fn counter_vec(
    registry: &Registry,
    name: &'static str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, MetricsError> {
    register(
        registry,
        name,
        made(name, IntCounterVec::new(Opts::new(name, help), labels))?,
    )
}

fn histogram_vec(
    registry: &Registry,
    name: &'static str,
    help: &str,
    labels: &[&str],
) -> Result<HistogramVec, MetricsError> {
    register(
        registry,
        name,
        made(
            name,
            HistogramVec::new(HistogramOpts::new(name, help), labels),
        )?,
    )
}

impl RequestMetrics {
    /// Registers the request families in `registry` with the labels of `mode`.
    pub fn new(registry: &Registry, mode: LabelMode) -> Result<Self, MetricsError> {
        let base = mode.base_names();
        let with = |extra: &'static str| -> Vec<&'static str> {
            let mut v = base.to_vec();
            v.push(extra);
            v
        };
        let mut method_code = base.to_vec();
        method_code.extend(["method", "code"]);
        let families = Families {
            requests: counter_vec(
                registry,
                "requests_total",
                "Requests answered, by method and status code (499: the client closed the connection first).",
                &method_code,
            )?,
            duration: histogram_vec(
                registry,
                "request_duration_seconds",
                "Time from the request head to the end of the response, by status class.",
                &with("code_class"),
            )?,
            upstream_duration: histogram_vec(
                registry,
                "upstream_response_duration_seconds",
                "Time from the start of an attempt to a backend to its response head.",
                base,
            )?,
            upstream_results: counter_vec(
                registry,
                "upstream_requests_total",
                "Attempts to backends, by result: ok, connect_error, timeout, reset.",
                &with("result"),
            )?,
            retries: counter_vec(
                registry,
                "upstream_retries_total",
                "Attempts made again after a failed one (connection failures, retry policies).",
                base,
            )?,
            request_bytes: counter_vec(
                registry,
                "request_bytes_total",
                "Request body bytes read from clients.",
                base,
            )?,
            response_bytes: counter_vec(
                registry,
                "response_bytes_total",
                "Response body bytes sent to clients.",
                base,
            )?,
        };
        let active = register(
            registry,
            "active_requests",
            made(
                "active_requests",
                IntGaugeVec::new(
                    Opts::new("active_requests", "Requests in progress, per listener."),
                    &["listener"],
                ),
            )?,
        )?;
        let access_log_dropped = register(
            registry,
            "access_log_dropped_total",
            made(
                "access_log_dropped_total",
                IntCounter::new(
                    "access_log_dropped_total",
                    "Access-log lines dropped because the writer fell behind (the queue was full).",
                ),
            )?,
        )?;
        Ok(RequestMetrics {
            mode,
            families: Arc::new(families),
            active,
            access_log_dropped,
            live: Mutex::new(HashMap::new()),
            listeners: Mutex::new(HashMap::new()),
        })
    }

    /// The label mode.
    pub fn mode(&self) -> LabelMode {
        self.mode
    }

    /// The counter of dropped access-log lines.
    pub fn access_log_dropped(&self) -> IntCounter {
        self.access_log_dropped.clone()
    }

    /// The handles of requests on `listener` that no route answered, and the listener's active-request gauge.
    pub fn listener(&self, listener: &str) -> (Arc<Handles>, IntGauge) {
        let gauge = self.active.with_label_values(&[listener]);
        let mut map = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        let handles = map
            .entry(listener.to_string())
            .or_insert_with(|| {
                let mut base = vec![listener.to_string()];
                base.resize(self.mode.base_names().len(), String::new());
                Arc::new(Handles::new(self.families.clone(), base.into()))
            })
            .clone();
        (handles, gauge)
    }

    /// Starts resolving the handles of a newly compiled table (call [`Resolver::finish`] when every rule has
    /// its stats).
    pub fn resolver(&self) -> Resolver<'_> {
        Resolver {
            metrics: self,
            seen: HashMap::new(),
        }
    }
}

/// Resolves the stats of every rule of one table, sharing handles by label set, then prunes label sets that left.
pub struct Resolver<'a> {
    metrics: &'a RequestMetrics,
    seen: HashMap<Box<[String]>, Arc<Handles>>,
}

impl Resolver<'_> {
    fn handles(&mut self, base: Box<[String]>) -> Arc<Handles> {
        if let Some(h) = self.seen.get(&base) {
            return h.clone();
        }
        let live = self.metrics.live.lock().unwrap_or_else(|p| p.into_inner());
        let h = live
            .get(&base)
            .cloned()
            .unwrap_or_else(|| Arc::new(Handles::new(self.metrics.families.clone(), base.clone())));
        drop(live);
        self.seen.insert(base, h.clone());
        h
    }

    /// The stats of a rule of `origin` on `listener` whose weighted candidates are `backends` (`None` for a
    /// candidate that is not a Service port).
    pub fn route(
        &mut self,
        listener: &str,
        origin: &Origin,
        backends: &[Option<&BackendKey>],
    ) -> RouteStats {
        let mode = self.metrics.mode;
        let base = |backend: Option<&BackendKey>| -> Box<[String]> {
            let mut v = vec![listener.to_string()];
            if mode != LabelMode::None {
                v.push(origin.kind.as_str().to_string());
                v.push(origin.namespace.clone());
                v.push(origin.name.clone());
            }
            if mode == LabelMode::RouteBackend {
                v.push(backend.map(|k| k.to_string()).unwrap_or_default());
            }
            v.into()
        };
        let none = self.handles(base(None));
        let per_backend = if mode == LabelMode::RouteBackend {
            backends.iter().map(|b| self.handles(base(*b))).collect()
        } else {
            Box::default()
        };
        RouteStats { none, per_backend }
    }

    /// Makes the resolved label sets the live ones and removes the series of those that left.
    pub fn finish(self) {
        let mut live = self.metrics.live.lock().unwrap_or_else(|p| p.into_inner());
        for (base, h) in live.iter() {
            if !self.seen.contains_key(base) {
                h.remove_series();
            }
        }
        *live = self.seen;
    }
}

/// The metric handles of one compiled rule.
#[derive(Debug)]
pub struct RouteStats {
    none: Arc<Handles>,
    per_backend: Box<[Arc<Handles>]>,
}

impl RouteStats {
    /// The handles to record a request under: those of the chosen backend candidate when the labels name
    /// backends, else the route's.
    #[inline]
    pub fn handles(&self, backend: Option<usize>) -> &Arc<Handles> {
        backend
            .and_then(|i| self.per_backend.get(i))
            .unwrap_or(&self.none)
    }
}

type CodeSlots = [OnceLock<(u16, IntCounter)>; CODE_SLOTS];

/// The children of one base label set, created on first use.
pub struct Handles {
    families: Arc<Families>,
    base: Box<[String]>,
    requests: [OnceLock<Box<CodeSlots>>; METHOD_SLOTS],
    duration: [OnceLock<Histogram>; 6],
    upstream_duration: OnceLock<Histogram>,
    upstream_results: [OnceLock<IntCounter>; 4],
    retries: OnceLock<IntCounter>,
    request_bytes: OnceLock<IntCounter>,
    response_bytes: OnceLock<IntCounter>,
    /// (method, code) pairs counted past the direct slots, so that their series can be removed too.
    overflow: Mutex<Vec<(usize, u16)>>,
}

impl std::fmt::Debug for Handles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handles")
            .field("labels", &self.base)
            .finish_non_exhaustive()
    }
}

fn method_index(method: &http::Method) -> usize {
    METHODS
        .iter()
        .position(|m| *m == method.as_str())
        .unwrap_or(METHODS.len())
}

fn method_label(i: usize) -> &'static str {
    METHODS.get(i).copied().unwrap_or("other")
}

const CODE_CLASSES: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

fn class_index(code: u16) -> usize {
    match code {
        100..=599 => (code / 100) as usize,
        _ => 0,
    }
}

impl Handles {
    fn new(families: Arc<Families>, base: Box<[String]>) -> Self {
        Handles {
            families,
            base,
            requests: Default::default(),
            duration: Default::default(),
            upstream_duration: OnceLock::new(),
            upstream_results: Default::default(),
            retries: OnceLock::new(),
            request_bytes: OnceLock::new(),
            response_bytes: OnceLock::new(),
            overflow: Mutex::new(Vec::new()),
        }
    }

    fn labels<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut v: Vec<&str> = self.base.iter().map(String::as_str).collect();
        v.extend_from_slice(extra);
        v
    }

    /// Counts one request answered with `code`.
    #[inline]
    pub fn request(&self, method: &http::Method, code: u16) {
        let m = method_index(method);
        let slots = self.requests[m].get_or_init(Default::default);
        for slot in slots.iter() {
            let (c, counter) = match slot.get() {
                Some(v) => v,
                None => slot.get_or_init(|| {
                    let code_text = code.to_string();
                    let child = self
                        .families
                        .requests
                        .with_label_values(&self.labels(&[method_label(m), &code_text]));
                    (code, child)
                }),
            };
            if *c == code {
                counter.inc();
                return;
            }
        }
        // More distinct codes than slots: counted through a lookup (and remembered for removal).
        {
            let mut o = self.overflow.lock().unwrap_or_else(|p| p.into_inner());
            if !o.contains(&(m, code)) {
                o.push((m, code));
            }
        }
        let code_text = code.to_string();
        self.families
            .requests
            .with_label_values(&self.labels(&[method_label(m), &code_text]))
            .inc();
    }

    /// Records the duration of a request answered with `code` (0: no response).
    #[inline]
    pub fn duration(&self, code: u16, d: Duration) {
        let i = class_index(code);
        self.duration[i]
            .get_or_init(|| {
                self.families
                    .duration
                    .with_label_values(&self.labels(&[CODE_CLASSES[i]]))
            })
            .observe(d.as_secs_f64());
    }

    /// Records the time an attempt took to its response head.
    #[inline]
    pub fn upstream_duration(&self, d: Duration) {
        self.upstream_duration
            .get_or_init(|| {
                self.families
                    .upstream_duration
                    .with_label_values(&self.labels(&[]))
            })
            .observe(d.as_secs_f64());
    }

    /// Counts how an attempt to a backend ended.
    #[inline]
    pub fn upstream_result(&self, r: UpstreamResult) {
        let i = r as usize;
        self.upstream_results[i]
            .get_or_init(|| {
                self.families
                    .upstream_results
                    .with_label_values(&self.labels(&[r.label()]))
            })
            .inc();
    }

    /// Counts `n` retries.
    #[inline]
    pub fn retries(&self, n: u64) {
        if n > 0 {
            self.retries
                .get_or_init(|| self.families.retries.with_label_values(&self.labels(&[])))
                .inc_by(n);
        }
    }

    /// Adds the body bytes of one request and its response.
    #[inline]
    pub fn bytes(&self, read: u64, sent: u64) {
        if read > 0 {
            self.request_bytes
                .get_or_init(|| {
                    self.families
                        .request_bytes
                        .with_label_values(&self.labels(&[]))
                })
                .inc_by(read);
        }
        if sent > 0 {
            self.response_bytes
                .get_or_init(|| {
                    self.families
                        .response_bytes
                        .with_label_values(&self.labels(&[]))
                })
                .inc_by(sent);
        }
    }

    /// Removes every series this label set created (it left the configuration).
    fn remove_series(&self) {
        let f = &self.families;
        for (m, slots) in self.requests.iter().enumerate() {
            if let Some(slots) = slots.get() {
                for (code, _) in slots.iter().filter_map(OnceLock::get) {
                    let code_text = code.to_string();
                    let _ = f
                        .requests
                        .remove_label_values(&self.labels(&[method_label(m), &code_text]));
                }
            }
        }
        let overflow = self.overflow.lock().unwrap_or_else(|p| p.into_inner());
        for (m, code) in overflow.iter() {
            let code_text = code.to_string();
            let _ = f
                .requests
                .remove_label_values(&self.labels(&[method_label(*m), &code_text]));
        }
        drop(overflow);
        for (i, h) in self.duration.iter().enumerate() {
            if h.get().is_some() {
                let _ = f
                    .duration
                    .remove_label_values(&self.labels(&[CODE_CLASSES[i]]));
            }
        }
        for r in UpstreamResult::ALL {
            if self.upstream_results[r as usize].get().is_some() {
                let _ = f
                    .upstream_results
                    .remove_label_values(&self.labels(&[r.label()]));
            }
        }
        let plain = self.labels(&[]);
        if self.upstream_duration.get().is_some() {
            let _ = f.upstream_duration.remove_label_values(&plain);
        }
        if self.retries.get().is_some() {
            let _ = f.retries.remove_label_values(&plain);
        }
        if self.request_bytes.get().is_some() {
            let _ = f.request_bytes.remove_label_values(&plain);
        }
        if self.response_bytes.get().is_some() {
            let _ = f.response_bytes.remove_label_values(&plain);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::OriginKind;
    use prometheus::Encoder;

    fn origin(name: &str) -> Origin {
        Origin {
            kind: OriginKind::HttpRoute,
            namespace: "shop".into(),
            name: name.into(),
            rule: 0,
            rule_name: None,
            created: None,
        }
    }

    fn text(r: &Registry) -> String {
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&r.gather(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn counts_by_method_and_code_and_prunes_routes_that_left() {
        let r = Registry::new_custom(Some("portcullis".into()), None).unwrap();
        let m = RequestMetrics::new(&r, LabelMode::Route).unwrap();
        let mut res = m.resolver();
        let a = res.route("*:80", &origin("a"), &[]);
        let a2 = res.route("*:80", &origin("a"), &[]);
        res.finish();
        assert!(Arc::ptr_eq(a.handles(None), a2.handles(None)));
        for code in 200..(200 + CODE_SLOTS as u16 + 3) {
            a.handles(None).request(&http::Method::GET, code);
        }
        a.handles(None).request(&http::Method::GET, 200);
        a.handles(None)
            .request(&http::Method::from_bytes(b"BREW").unwrap(), 418);
        let t = text(&r);
        assert!(t.contains(
            r#"portcullis_requests_total{code="200",listener="*:80",method="GET",route_kind="HTTPRoute",route_name="a",route_namespace="shop"} 2"#
        ), "{t}");
        // Past the direct slots, codes are still counted.
        assert!(
            t.contains(r#"code="214",listener="*:80",method="GET""#),
            "{t}"
        );
        assert!(
            t.contains(r#"code="418",listener="*:80",method="other""#),
            "{t}"
        );
        // A publish without route a removes its series; handles of a kept route survive.
        let mut res = m.resolver();
        let b = res.route("*:80", &origin("b"), &[]);
        res.finish();
        b.handles(None).request(&http::Method::POST, 201);
        let t = text(&r);
        assert!(!t.contains(r#"route_name="a""#), "{t}");
        assert!(t.contains(r#"route_name="b""#), "{t}");
        let mut res = m.resolver();
        let b2 = res.route("*:80", &origin("b"), &[]);
        res.finish();
        assert!(Arc::ptr_eq(b.handles(None), b2.handles(None)));
    }

    #[test]
    fn backend_labels_only_in_route_backend_mode() {
        let key = BackendKey {
            namespace: "shop".into(),
            name: "web".into(),
            port: 80,
            variant: String::new(),
        };
        let r = Registry::new_custom(Some("portcullis".into()), None).unwrap();
        let m = RequestMetrics::new(&r, LabelMode::RouteBackend).unwrap();
        let mut res = m.resolver();
        let s = res.route("*:80", &origin("a"), &[Some(&key), None]);
        res.finish();
        s.handles(Some(0)).upstream_result(UpstreamResult::Ok);
        s.handles(Some(1)).duration(503, Duration::from_millis(3));
        s.handles(None).bytes(10, 20);
        let t = text(&r);
        assert!(t.contains(r#"backend="shop/web:80""#), "{t}");
        assert!(t.contains(r#"portcullis_upstream_requests_total{backend="shop/web:80",listener="*:80",result="ok""#), "{t}");
        assert!(t.contains(r#"code_class="5xx""#), "{t}");

        let r = Registry::new_custom(Some("portcullis".into()), None).unwrap();
        let m = RequestMetrics::new(&r, LabelMode::None).unwrap();
        let mut res = m.resolver();
        let s = res.route("*:80", &origin("a"), &[Some(&key)]);
        res.finish();
        s.handles(Some(0)).request(&http::Method::GET, 200);
        let t = text(&r);
        assert!(
            t.contains(r#"portcullis_requests_total{code="200",listener="*:80",method="GET"} 1"#),
            "{t}"
        );
        assert!(!t.contains("route_name"), "{t}");
    }
}
