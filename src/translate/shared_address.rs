//! Listeners of different Gateways on one socket.
//!
//! Every Gateway without `spec.addresses` is served on the default address (`--bind-address`; on a DaemonSet, the
//! node's address), and Gateways that name the same IPs share those: their listeners land on the same sockets
//! (address, port, transport). The Gateway API lets an implementation merge Gateways onto one set of addresses,
//! and its rules for the listeners of one Gateway then apply to the merged set: each listener must be distinct
//! (same protocol: a different port or hostname; TCP and UDP: a different port), and a listener that is not is
//! Conflicted. Two listeners of different Gateways on one socket therefore *collide* when their protocols differ
//! (`ProtocolConflict`: one socket serves one protocol) or when they have the same protocol and the same hostname
//! (`HostnameConflict`; two hostless listeners count as the same hostname, and TCP and UDP listeners have none).
//! Listeners whose hostnames merely overlap (`*.example.com`, `a.example.com`) are distinct: a request goes to
//! the most specific listener hostname, as within one Gateway.
//!
//! Of two colliding listeners the older Gateway's keeps the socket, by the precedence the spec gives the
//! listeners merged into one Gateway from ListenerSets: oldest `creationTimestamp` first, then `namespace/name`.
//! The newer listener is Conflicted (and so neither Accepted nor Programmed): no route attaches to it and none of
//! its routes reach the socket.

use crate::k8s::gw::Gateway;
use crate::model::{HostPattern, ListenerKey};

/// A socket place held by an accepted listener.
#[derive(Debug)]
struct Claim {
    key: ListenerKey,
    /// The protocol as written (`HTTP`, `HTTPS`, `TLS`, `TCP`, `UDP`).
    protocol: String,
    hostname: HostPattern,
    /// (namespace, name) of the Gateway.
    gateway: (String, String),
    listener: String,
}

/// A listener about to take its sockets.
pub(crate) struct Place<'a> {
    /// (namespace, name) of its Gateway.
    pub gateway: &'a (String, String),
    pub listener: &'a str,
    /// The protocol as written.
    pub protocol: &'a str,
    pub hostname: &'a HostPattern,
    /// Its sockets (one per Gateway address).
    pub keys: &'a [ListenerKey],
}

/// The sockets taken so far by the listeners of the Gateways already translated (older ones first).
#[derive(Debug, Default)]
pub(crate) struct SharedSockets {
    claims: Vec<Claim>,
}

impl SharedSockets {
    /// The collision of `place` with a listener of another, older Gateway: (reason, message).
    pub(crate) fn conflict(&self, place: &Place<'_>) -> Option<(&'static str, String)> {
        for c in &self.claims {
            if c.gateway == *place.gateway || !place.keys.contains(&c.key) {
                continue;
            }
            let socket = describe(&c.key);
            let older = format!(
                "listener {} of the older Gateway {}/{}",
                c.listener, c.gateway.0, c.gateway.1
            );
            if c.protocol != place.protocol {
                return Some((
                    "ProtocolConflict",
                    format!(
                        "{socket} is already served as {} by {older}; this listener is not served",
                        c.protocol
                    ),
                ));
            }
            if c.hostname == *place.hostname {
                let what = match &c.hostname {
                    HostPattern::Any => format!("{} without a hostname", c.protocol),
                    h => format!("hostname {h} over {}", c.protocol),
                };
                return Some((
                    "HostnameConflict",
                    format!(
                        "{older} already serves {what} on {socket}; this listener is not served"
                    ),
                ));
            }
        }
        None
    }

    /// Records that an accepted listener holds its sockets.
    pub(crate) fn hold(&mut self, place: &Place<'_>) {
        for key in place.keys {
            self.claims.push(Claim {
                key: *key,
                protocol: place.protocol.to_string(),
                hostname: place.hostname.clone(),
                gateway: place.gateway.clone(),
                listener: place.listener.to_string(),
            });
        }
    }
}

fn describe(key: &ListenerKey) -> String {
    let address = key
        .address
        .map_or_else(|| "the default address".to_string(), |a| a.to_string());
    format!("port {} ({:?}) on {address}", key.port, key.transport)
}

/// Orders Gateways by listener precedence: oldest `creationTimestamp` first (Gateways without one last), then
/// `namespace/name`.
pub(crate) fn by_precedence(gateways: &mut [&Gateway]) {
    gateways.sort_by(|a, b| {
        let rank = |g: &Gateway| {
            (
                super::created(&g.metadata).map_or((1, 0), |t| (0, t)),
                g.metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into()),
                g.metadata.name.clone().unwrap_or_default(),
            )
        };
        rank(a).cmp(&rank(b))
    });
}
