//! Portcullis: a Kubernetes Ingress and Gateway API reverse proxy built on Pingora.
//!
//! The pipeline (see `docs/architecture.md`): `source` produces an [`source::Input`] (a bundle of Kubernetes
//! objects), `translate` turns it into a plain-data [`model::Model`], `router` compiles the model into the index
//! the hot path reads, `snapshot` publishes it with one `ArcSwap`, and `proxy` serves traffic from it.
#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod control;
pub mod equiv;
pub mod k8s;
pub mod metrics;
pub mod migrate;
pub mod model;
pub mod proxy;
pub mod report;
pub mod router;
pub mod snapshot;
pub mod source;
pub mod telemetry;
pub mod tls;
pub mod translate;
