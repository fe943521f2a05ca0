//! The data plane: Pingora applications and the listeners that feed them.
//!
//! Pingora binds its listeners once, when its `Server` starts; Gateways can add and remove ports at any time. So
//! Portcullis owns the sockets ([`listeners::ListenerManager`]): it binds and releases ports as snapshots change,
//! accepts connections itself, wraps them in Pingora streams and hands them to the Pingora application
//! (`HttpProxy<HttpApp>`) of that port, exactly as a Pingora listening service would. TCP and TLS-by-SNI
//! connections are forwarded by `tcp.rs` and `passthrough.rs`, UDP datagrams by `udp.rs` (Pingora has no UDP). See
//! `docs/adr/0001-own-listeners.md`.

pub mod edge;
pub mod errors;
pub mod grpc;
pub mod http;
pub mod io;
pub mod l4;
pub mod listeners;
pub mod mirror;
pub mod observe;
pub mod passthrough;
pub mod path;
pub mod policy;
pub mod sticky;
pub mod tcp;
pub mod udp;
pub mod upstream;
pub mod upstream_tls;

pub use l4::L4Settings;
pub use listeners::{
    accept_loop, bind, serve_connections, Connections, Handshake, ListenerManager, ListenerState,
    Stopped,
};

/// The connector of the proxy's own requests to backends (external auth, custom error pages): one connection pool
/// for the process, apart from the pools of proxied requests.
pub(crate) fn side_connector() -> &'static pingora::connectors::http::Connector {
    static C: std::sync::OnceLock<pingora::connectors::http::Connector> =
        std::sync::OnceLock::new();
    C.get_or_init(|| pingora::connectors::http::Connector::new(None))
}
