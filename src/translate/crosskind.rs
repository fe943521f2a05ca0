//! HTTPRoutes and GRPCRoutes on one listener must not share a hostname. GRPCRouteSpec.hostnames:
//!
//! > If a Route (A) of type HTTPRoute or GRPCRoute is attached to a Listener and that listener already has another
//! > Route (B) of the other type attached and the intersection of the hostnames of A and B is non-empty, then the
//! > implementation MUST accept exactly one of these two routes, determined by the following criteria, in order:
//! > * The oldest Route based on creation timestamp.
//! > * The Route appearing first in alphabetical order by "{namespace}/{name}".
//! > The rejected Route MUST raise an 'Accepted' condition with a status of 'False' in the corresponding
//! > RouteParentStatus.
//!
//! Settled per listener before any route is attached: the routes of both kinds are taken in that order, and a
//! route is refused on a listener when a route of the other kind already taken there has an intersecting
//! hostname (a refused route takes nothing, so it cannot refuse a later one). Routes without a creation time
//! count as the newest, as in `model::precedence`. [`routes::attach`] then leaves the refused listeners out.

use super::gateway::Gateways;
use super::refs::Resolver;
use super::routes::{self, RouteSource, RouteView};
use super::{created, Diagnostics};
use crate::k8s::ObjectMeta;
use crate::model::HostPattern;
use crate::source::Input;
use std::collections::BTreeMap;

/// Where routes lost the hostname rule: (kind, namespace, name, listener index) → the route that keeps the
/// listener (`Kind ns/name`).
#[derive(Debug, Default)]
pub(crate) struct KindConflicts(BTreeMap<(&'static str, String, String, usize), String>);

impl KindConflicts {
    /// The route that keeps listener `listener` against this route, when this one lost there.
    pub(crate) fn winner(&self, kind: &str, ns: &str, name: &str, listener: usize) -> Option<&str> {
        if self.0.is_empty() {
            return None;
        }
        let kind = match kind {
            "HTTPRoute" => "HTTPRoute",
            "GRPCRoute" => "GRPCRoute",
            _ => return None,
        };
        self.0
            .get(&(kind, ns.to_string(), name.to_string(), listener))
            .map(String::as_str)
    }
}

/// A route of either kind, as the rule sees it.
struct Contender {
    kind: &'static str,
    ns: String,
    name: String,
    created: Option<i64>,
    /// (listener, effective hostnames) it would attach to.
    listeners: Vec<(usize, Vec<HostPattern>)>,
}

impl Contender {
    fn new<P: serde::Serialize>(
        kind: &'static str,
        meta: &ObjectMeta,
        hostnames: &[String],
        parent_refs: &Option<Vec<P>>,
        gws: &Gateways,
        refs: &Resolver<'_>,
    ) -> Option<Self> {
        let source = RouteSource {
            kind,
            meta,
            hostnames,
            parent_refs: parent_refs.as_deref(),
        };
        // Problems with the hostnames are reported when the route itself is translated.
        let view = RouteView::new(&source, &mut Diagnostics::default())?;
        let listeners = routes::candidates(&view, gws, refs);
        (!listeners.is_empty()).then(|| Contender {
            kind,
            ns: view.ns.to_string(),
            name: view.name.to_string(),
            created: created(meta),
            listeners,
        })
    }

    /// The order of the rule: oldest first (no creation time last), then `namespace/name`.
    fn rank(&self) -> (bool, Option<i64>, String) {
        (
            self.created.is_none(),
            self.created,
            format!("{}/{}", self.ns, self.name),
        )
    }
}

fn intersect(a: &[HostPattern], b: &[HostPattern]) -> bool {
    a.iter().any(|x| b.iter().any(|y| x.intersect(y).is_some()))
}

/// A route that keeps a listener: its kind, its hostnames there, and `Kind ns/name`.
type Taken<'a> = (&'static str, &'a [HostPattern], String);

/// Settles the rule for every listener (see the module docs).
pub(crate) fn resolve(input: &Input, gws: &Gateways, refs: &Resolver<'_>) -> KindConflicts {
    let mut all: Vec<Contender> = Vec::new();
    for r in &input.http_routes {
        let hosts = r.spec.hostnames.as_deref().unwrap_or(&[]);
        all.extend(Contender::new(
            "HTTPRoute",
            &r.metadata,
            hosts,
            &r.spec.parent_refs,
            gws,
            refs,
        ));
    }
    let any_http = !all.is_empty();
    for r in &input.grpc_routes {
        let hosts = r.spec.hostnames.as_deref().unwrap_or(&[]);
        all.extend(Contender::new(
            "GRPCRoute",
            &r.metadata,
            hosts,
            &r.spec.parent_refs,
            gws,
            refs,
        ));
    }
    let mut out = KindConflicts::default();
    if !any_http || all.iter().all(|c| c.kind == "HTTPRoute") {
        return out;
    }
    all.sort_by_cached_key(Contender::rank);
    let mut taken: BTreeMap<usize, Vec<Taken<'_>>> = BTreeMap::new();
    for c in &all {
        for (listener, hosts) in &c.listeners {
            let here = taken.entry(*listener).or_default();
            let lost_to = here
                .iter()
                .find(|(kind, other, _)| *kind != c.kind && intersect(hosts, other));
            match lost_to {
                Some((_, _, winner)) => {
                    out.0.insert(
                        (c.kind, c.ns.clone(), c.name.clone(), *listener),
                        winner.clone(),
                    );
                }
                None => here.push((c.kind, hosts, format!("{} {}/{}", c.kind, c.ns, c.name))),
            }
        }
    }
    out
}
