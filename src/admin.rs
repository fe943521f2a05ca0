//! The admin HTTP API: health, readiness, and what the proxy is currently serving.
//!
//! | path | answer |
//! |---|---|
//! | `GET /healthz` | 200 while the process is alive |
//! | `GET /readyz` | 200 once the first configuration is published, 503 before |
//! | `GET /config` | the current model as JSON (`version`, `listeners`) |
//! | `GET /diagnostics` | the problems found in the current configuration sources, as JSON strings |
//! | `GET /listeners` | the listener ports and whether they are bound |
//! | `GET /status` | Gateway API status of our GatewayClasses, Gateways, ListenerSets and routes (Kubernetes field names) |
//! | `GET /edge` | counters of what the edge refused or changed (`proxy::edge::STATS`, see docs/hardening.md) |

use crate::proxy::ListenerState;
use crate::snapshot::Store;
use crate::translate::status::Statuses;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde::Serialize;
use std::sync::{Arc, Mutex};

/// The admin application (a Pingora `ServeHttp`).
pub struct Admin {
    store: Arc<Store>,
    diagnostics: Arc<ArcSwap<Vec<String>>>,
    statuses: Arc<ArcSwap<Statuses>>,
    listeners: Arc<Mutex<Vec<ListenerState>>>,
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
        if method != http::Method::GET && method != http::Method::HEAD {
            return (StatusCode::METHOD_NOT_ALLOWED, TEXT, b"GET only\n".to_vec());
        }
        match path {
            "/healthz" => (StatusCode::OK, TEXT, b"ok\n".to_vec()),
            "/readyz" => {
                if self.store.is_ready() {
                    (StatusCode::OK, TEXT, b"ready\n".to_vec())
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        TEXT,
                        b"not ready: no configuration published yet\n".to_vec(),
                    )
                }
            }
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
            "/listeners" => {
                let states = self.listeners.lock().map(|s| s.clone()).unwrap_or_default();
                json(&states)
            }
            "/edge" => json(&crate::proxy::edge::STATS.snapshot()),
            _ => (StatusCode::NOT_FOUND, TEXT, b"not found\n".to_vec()),
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
