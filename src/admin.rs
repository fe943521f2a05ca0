//! The admin HTTP API: health, readiness, metrics, and what the proxy is currently serving.
//!
//! | path | answer |
//! |---|---|
//! | `GET /healthz` | 200 while the process is alive |
//! | `GET /readyz` | 200 once the first configuration is published and its listeners bound, 503 before, and 503 again from the moment a drain begins (SIGTERM) |
//! | `GET /metrics` | Prometheus metrics (`crate::metrics`), when enabled |
//! | `GET /config` | the current model as JSON (`version`, `listeners`) |
//! | `GET /diagnostics` | the problems found in the current configuration sources, as JSON strings |
//! | `GET /listeners` | the listener ports and whether they are bound |
//! | `GET /upstreams` | every backend: retries, failures, ejections, and each endpoint's health and attempts |
//! | `GET /rounds` | how many configuration rounds ran, the objects the latest one read, the version it left |
//! | `GET /status` | Gateway API status of our GatewayClasses, Gateways, ListenerSets and routes (Kubernetes field names) |
//! | `GET /edge` | counters of what the edge refused or changed (`proxy::edge::STATS`, see docs/hardening.md) |
//!
//! The health port (`--health-addr`, [`Admin::probes_only`]) serves the same `/healthz`, `/readyz` and `/metrics`
//! and nothing else (404), so the kubelet and Prometheus can reach the pod IP while `/config` and the rest stay on
//! the loopback admin address.

use crate::metrics::Metrics;
use crate::proxy::ListenerState;
use crate::snapshot::Store;
use crate::translate::status::Statuses;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Whether the process is draining (shutting down). Shared by clones; once started, a drain never ends.
#[derive(Clone, Debug, Default)]
pub struct Draining(Arc<AtomicBool>);

impl Draining {
    /// Marks the process as draining: `/readyz` answers 503 from now on.
    pub fn start(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// `true` once [`Draining::start`] was called.
    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Which paths an [`Admin`] answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    /// Every path (the admin address).
    All,
    /// `/healthz`, `/readyz` and `/metrics` only (the health port).
    Probes,
}

/// The admin application (a Pingora `ServeHttp`). Clones share every state.
#[derive(Clone)]
pub struct Admin {
    store: Arc<Store>,
    diagnostics: Arc<ArcSwap<Vec<String>>>,
    statuses: Arc<ArcSwap<Statuses>>,
    listeners: Arc<Mutex<Vec<ListenerState>>>,
    draining: Draining,
    metrics: Option<Arc<Metrics>>,
    scope: Scope,
}

impl Admin {
    /// An admin API over these shared states.
    pub fn new(
        store: Arc<Store>,
        diagnostics: Arc<ArcSwap<Vec<String>>>,
        statuses: Arc<ArcSwap<Statuses>>,
        listeners: Arc<Mutex<Vec<ListenerState>>>,
    ) -> Self {
        Admin {
            store,
            diagnostics,
            statuses,
            listeners,
            draining: Draining::default(),
            metrics: None,
            scope: Scope::All,
        }
    }

    /// This admin API with `/readyz` answering 503 once `draining` starts.
    pub fn with_draining(mut self, draining: Draining) -> Self {
        self.draining = draining;
        self
    }

    /// This admin API with `GET /metrics` rendering `metrics` (404 without).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The same states, answering only `/healthz`, `/readyz` and `/metrics` (every other path is 404): what the
    /// health port serves on the pod IP.
    pub fn probes_only(&self) -> Admin {
        Admin {
            scope: Scope::Probes,
            ..self.clone()
        }
    }

    /// The computed status, with what only the data plane knows merged in: a Gateway whose address cannot be
    /// bound is `Programmed=False` with reason `AddressNotUsable`.
    pub fn status(&self) -> Statuses {
        let mut st = (*self.statuses.load_full()).clone();
        let states = self.listeners.lock().map(|s| s.clone()).unwrap_or_default();
        for gw in &mut st.gateways {
            let addresses: Vec<String> = gw
                .status
                .addresses
                .iter()
                .flatten()
                .map(|a| a.value.clone())
                .collect();
            let failed = states.iter().find(|s| {
                !s.bound
                    && s.model_address
                        .is_some_and(|ip| addresses.contains(&ip.to_string()))
            });
            if let Some(f) = failed {
                let msg = format!(
                    "address {} cannot be used: {}",
                    f.address.ip(),
                    f.error.as_deref().unwrap_or("not bound")
                );
                for c in &mut gw.status.conditions {
                    if c.type_ == "Programmed" {
                        c.status = "False".into();
                        c.reason = "AddressNotUsable".into();
                        c.message = msg.clone();
                    }
                }
            }
        }
        st
    }

    /// The response for `method path` (separate from the Pingora plumbing so it can be tested directly).
    pub fn answer(&self, method: &http::Method, path: &str) -> (StatusCode, &'static str, Vec<u8>) {
        const TEXT: &str = "text/plain; charset=utf-8";
        let not_found = || (StatusCode::NOT_FOUND, TEXT, b"not found\n".to_vec());
        if self.scope == Scope::Probes && !matches!(path, "/healthz" | "/readyz" | "/metrics") {
            return not_found();
        }
        if method != http::Method::GET && method != http::Method::HEAD {
            return (StatusCode::METHOD_NOT_ALLOWED, TEXT, b"GET only\n".to_vec());
        }
        match path {
            "/healthz" => (StatusCode::OK, TEXT, b"ok\n".to_vec()),
            "/readyz" => {
                if self.draining.is_draining() {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        TEXT,
                        b"not ready: shutting down\n".to_vec(),
                    )
                } else if self.store.is_ready() {
                    (StatusCode::OK, TEXT, b"ready\n".to_vec())
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        TEXT,
                        b"not ready: no configuration published yet\n".to_vec(),
                    )
                }
            }
            "/metrics" => match &self.metrics {
                Some(m) => (StatusCode::OK, crate::metrics::CONTENT_TYPE, m.render()),
                None => not_found(),
            },
            "/config" => {
                let snap = self.store.load();
                #[derive(Serialize)]
                struct Config<'a> {
                    version: u64,
                    #[serde(flatten)]
                    model: &'a crate::model::Model,
                }
                json(&Config {
                    version: snap.version,
                    model: &snap.model,
                })
            }
            "/diagnostics" => json(&*self.diagnostics.load_full()),
            "/status" => {
                #[derive(Serialize)]
                struct Status {
                    version: u64,
                    #[serde(flatten)]
                    statuses: Statuses,
                }
                json(&Status {
                    version: self.store.load().version,
                    statuses: self.status(),
                })
            }
            "/rounds" => json(&self.store.rounds()),
            "/listeners" => {
                let states = self.listeners.lock().map(|s| s.clone()).unwrap_or_default();
                json(&states)
            }
            "/edge" => json(&crate::proxy::edge::STATS.snapshot()),
            "/upstreams" => {
                let snap = self.store.load();
                let reports: Vec<_> = snap.upstreams.all().iter().map(|u| u.report()).collect();
                json(&reports)
            }
            _ => not_found(),
        }
    }
}

fn json<T: Serialize + ?Sized>(v: &T) -> (StatusCode, &'static str, Vec<u8>) {
    match serde_json::to_vec_pretty(v) {
        Ok(mut body) => {
            body.push(b'\n');
            (StatusCode::OK, "application/json", body)
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            format!("cannot encode: {e}\n").into_bytes(),
        ),
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let (status, content_type, body) = self.answer(&req.method, req.uri.path());
        let len = body.len();
        let body = if req.method == http::Method::HEAD {
            Vec::new()
        } else {
            body
        };
        Response::builder()
            .status(status)
            .header("content-type", content_type)
            .header("content-length", len)
            .body(body)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn admin() -> Admin {
        Admin::new(
            Arc::new(Store::new()),
            Arc::new(ArcSwap::from_pointee(Vec::new())),
            Arc::new(ArcSwap::from_pointee(Statuses::default())),
            Arc::new(Mutex::new(Vec::new())),
        )
    }

    #[test]
    fn readyz_turns_503_when_draining() {
        let draining = Draining::default();
        let a = admin().with_draining(draining.clone());
        assert_eq!(
            a.answer(&Method::GET, "/readyz").0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        a.store.publish(crate::model::Model::default()).unwrap();
        assert_eq!(a.answer(&Method::GET, "/readyz").0, StatusCode::OK);
        draining.start();
        let (status, _, body) = a.answer(&Method::GET, "/readyz");
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, b"not ready: shutting down\n");
        assert_eq!(a.answer(&Method::GET, "/healthz").0, StatusCode::OK);
    }

    #[test]
    fn probes_only_serves_three_paths() {
        let metrics = Arc::new(Metrics::new().unwrap());
        let full = admin().with_metrics(metrics);
        let probes = full.probes_only();
        for path in [
            "/config",
            "/diagnostics",
            "/listeners",
            "/status",
            "/",
            "/metricsx",
        ] {
            assert_eq!(
                probes.answer(&Method::GET, path).0,
                StatusCode::NOT_FOUND,
                "{path}"
            );
            assert_eq!(
                probes.answer(&Method::POST, path).0,
                StatusCode::NOT_FOUND,
                "{path}"
            );
        }
        assert_eq!(full.answer(&Method::GET, "/config").0, StatusCode::OK);
        assert_eq!(probes.answer(&Method::GET, "/healthz").0, StatusCode::OK);
        let (status, content_type, body) = probes.answer(&Method::GET, "/metrics");
        assert_eq!(status, StatusCode::OK);
        assert!(content_type.starts_with("text/plain; version=0.0.4"));
        assert!(String::from_utf8(body)
            .unwrap()
            .contains("portcullis_build_info"));
        assert_eq!(
            admin().answer(&Method::GET, "/metrics").0,
            StatusCode::NOT_FOUND
        );
    }
}
