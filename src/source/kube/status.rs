//! Status written back to the API server, by the leader only.
//!
//! Translation computes the Gateway API status of our objects ([`Statuses`], Kubernetes field names, no clock).
//! [`plan`] turns it into JSON merge patches for the `status` subresource: it adds `lastTransitionTime` (keeping
//! the previous time when a condition's status did not change), fills Gateway addresses and Ingress
//! `status.loadBalancer` from `--publish-service` / `--publish-status-address`, and returns a patch only where
//! our part differs from what the object holds. Routes and policies are shared with other controllers: their
//! `status.parents` / `status.ancestors` entries whose `controllerName` is not ours are kept as they are, and the
//! patch carries the `resourceVersion` it was computed from, so a concurrent write by another controller makes
//! the API server refuse ours (409) instead of us erasing theirs; the next round recomputes.
//!
//! Comparisons go through the generated Gateway API types on both sides, so fields the API server fills in
//! (defaults) or that our types do not know never make us patch the same status again and again.

use super::stopped;
use super::watched::Served;
use crate::k8s::gw::types::{
    BackendTlsPolicyStatusAncestors, GatewayClassStatus as GwClassStatus,
    GatewayStatus as GwStatus, HttpRouteStatusParents, ListenerSetStatus as GwListenerSetStatus,
};
use crate::k8s::kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use crate::k8s::kube::runtime::watcher;
use crate::k8s::kube::runtime::WatchStreamExt;
use crate::k8s::kube::{Client, Error as KubeError};
use crate::k8s::{Ingress, Service};
use crate::source::{HasMeta, Input};
use crate::translate::status::Statuses;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Where Ingress `status.loadBalancer` (and the addresses of Gateways without `spec.addresses`) come from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Publish {
    /// Not configured: Ingress status is not written.
    #[default]
    None,
    /// The addresses of this Service (`--publish-service NS/NAME`): its load-balancer ingress, else its external
    /// IPs, else its cluster IP.
    Service {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// Fixed addresses (`--publish-status-address`): IPs, or host names.
    Addresses(Vec<String>),
}

/// What the status writer needs to know about us.
#[derive(Debug, Clone)]
pub struct StatusConfig {
    /// `spec.controllerName` of our GatewayClasses (and the `controllerName` of our status entries).
    pub gateway_controller: String,
    /// `spec.controller` of our IngressClasses.
    pub ingress_controller: String,
    /// Where published addresses come from.
    pub publish: Publish,
}

/// The computed status, as the admin API shows it (translation's, with what only the data plane knows merged in).
pub type StatusSource = Arc<dyn Fn() -> Statuses + Send + Sync>;

/// One translation round, as the status writer sees it.
#[derive(Debug)]
pub struct Round {
    /// The objects translation read (with their current status).
    pub input: Arc<Input>,
    /// The version each Gateway API kind is served at.
    pub served: BTreeMap<&'static str, Served>,
}

/// One merge patch of one object's `status` subresource.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusPatch {
    /// Kind (as `Input` names it).
    pub kind: &'static str,
    /// Namespace (none for GatewayClass).
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// The JSON merge patch (`{"status": ...}`, plus `metadata.resourceVersion` where it is a precondition), as
    /// compact JSON text: thousands of patches may be planned at once, and text is a fraction of a `Value`.
    pub body: String,
    /// A hash of our part in comparable form (no `lastTransitionTime`): equal hashes mean the same write.
    pub ours: u64,
    /// The object's `resourceVersion` the patch was computed from.
    pub resource_version: Option<String>,
}

impl StatusPatch {
    /// The patch as JSON.
    pub fn body(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// What [`plan`] needs besides the objects and the computed status.
#[derive(Debug, Clone, Copy)]
pub struct PlanConfig<'a> {
    /// Our gateway controller name.
    pub gateway_controller: &'a str,
    /// Our ingress controller name.
    pub ingress_controller: &'a str,
    /// Published addresses; `None` when not configured (no Ingress status is written).
    pub addresses: Option<&'a [String]>,
}

/// What [`plan`] remembers between rounds: objects found in sync, with the `resourceVersion` they had and a hash
/// of what we wanted for them. While both stay the same the object is skipped without comparing anything, so a
/// round costs little when thousands of routes are in sync.
#[derive(Debug, Default)]
pub struct PlanCache {
    in_sync: HashMap<Key, (Option<String>, u64)>,
}

impl PlanCache {
    fn fresh(&self, key: &Key, meta: &crate::k8s::ObjectMeta, hash: u64) -> bool {
        self.in_sync.get(key) == Some(&(meta.resource_version.clone(), hash))
    }

    fn record(&mut self, key: Key, meta: &crate::k8s::ObjectMeta, hash: u64, in_sync: bool) {
        if in_sync {
            self.in_sync
                .insert(key, (meta.resource_version.clone(), hash));
        } else {
            self.in_sync.remove(&key);
        }
    }

    /// Forgets objects not seen in the last plan (deleted ones).
    fn retain_seen(&mut self, seen: &HashSet<Key>) {
        self.in_sync.retain(|k, _| seen.contains(k));
    }
}

fn hash_of<T: Serialize>(v: &T, extra: &[String]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_vec(v).unwrap_or_default().hash(&mut h);
    extra.hash(&mut h);
    h.finish()
}

fn key_of(kind: &'static str, meta: &crate::k8s::ObjectMeta) -> Key {
    (
        kind,
        meta.namespace.clone(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// The patches that bring the status of our objects in `input` to `statuses`. Pure but for `cache` (see
/// [`PlanCache`]); `now` is the RFC 3339 time used for conditions that change.
pub fn plan(
    input: &Input,
    statuses: &Statuses,
    cfg: &PlanConfig<'_>,
    now: &str,
    cache: &mut PlanCache,
) -> Vec<StatusPatch> {
    let mut out = Vec::new();
    let mut seen: HashSet<Key> = HashSet::new();
    // Runs `f` for one object unless the cache knows it is in sync; records the outcome.
    let mut check = |out: &mut Vec<StatusPatch>,
                     kind: &'static str,
                     meta: &crate::k8s::ObjectMeta,
                     hash: u64,
                     f: &mut dyn FnMut(&mut Vec<StatusPatch>)| {
        let key = key_of(kind, meta);
        seen.insert(key.clone());
        if cache.fresh(&key, meta, hash) {
            return;
        }
        let before = out.len();
        f(out);
        cache.record(key, meta, hash, out.len() == before);
    };
    let no_addresses: Vec<String> = Vec::new();
    let addresses = cfg.addresses.unwrap_or(&no_addresses);

    for named in &statuses.gateway_classes {
        let Some(obj) = find(&input.gateway_classes, None, &named.name) else {
            continue;
        };
        check(
            &mut out,
            "GatewayClass",
            obj.meta(),
            hash_of(&named.status, &[]),
            &mut |out| {
                let (desired, existing) = desired_and_existing(&named.status, &obj.status, now);
                let keys = ["conditions", "supportedFeatures"];
                whole_status::<GwClassStatus>(
                    out,
                    "GatewayClass",
                    obj.meta(),
                    desired,
                    &existing,
                    &keys,
                );
            },
        );
    }
    for named in &statuses.gateways {
        let Some(obj) = find(&input.gateways, named.namespace.as_deref(), &named.name) else {
            continue;
        };
        let hash = hash_of(&named.status, addresses);
        check(&mut out, "Gateway", obj.meta(), hash, &mut |out| {
            let (mut desired, existing) = desired_and_existing(&named.status, &obj.status, now);
            // A Gateway that asks for no address of its own is reachable where we publish (translation may
            // have put the bind address there; in a cluster the published addresses are the ones that reach it).
            let asks_none = obj.spec.addresses.as_ref().is_none_or(Vec::is_empty);
            if asks_none && !addresses.is_empty() {
                desired["addresses"] = Value::Array(
                    addresses
                        .iter()
                        .map(|a| {
                            let t = if a.parse::<IpAddr>().is_ok() {
                                "IPAddress"
                            } else {
                                "Hostname"
                            };
                            json!({"type": t, "value": a})
                        })
                        .collect(),
                );
            }
            let keys = [
                "addresses",
                "conditions",
                "listeners",
                "attachedListenerSets",
            ];
            whole_status::<GwStatus>(out, "Gateway", obj.meta(), desired, &existing, &keys);
        });
    }
    for named in &statuses.listener_sets {
        let Some(obj) = find(
            &input.listener_sets,
            named.namespace.as_deref(),
            &named.name,
        ) else {
            continue;
        };
        check(
            &mut out,
            "ListenerSet",
            obj.meta(),
            hash_of(&named.status, &[]),
            &mut |out| {
                let (desired, existing) = desired_and_existing(&named.status, &obj.status, now);
                let keys = ["conditions", "listeners"];
                whole_status::<GwListenerSetStatus>(
                    out,
                    "ListenerSet",
                    obj.meta(),
                    desired,
                    &existing,
                    &keys,
                );
            },
        );
    }

    // Routes: our entries of status.parents, merged with everyone else's.
    let mut described: HashSet<(&str, Option<&str>, &str)> = HashSet::new();
    for named in &statuses.routes {
        let kind = named.kind.as_deref().unwrap_or("HTTPRoute");
        let Some((kind, meta, status)) =
            route_status(input, kind, named.namespace.as_deref(), &named.name)
        else {
            continue;
        };
        described.insert((kind, named.namespace.as_deref(), named.name.as_str()));
        check(
            &mut out,
            kind,
            meta,
            hash_of(&named.status, &[]),
            &mut |out| {
                let desired: Vec<Value> = named.status.parents.iter().map(to_value).collect();
                shared_list::<HttpRouteStatusParents>(
                    out,
                    SharedList {
                        kind,
                        meta,
                        list: "parents",
                        reference: "parentRef",
                        controller: cfg.gateway_controller,
                    },
                    desired,
                    &status(),
                    now,
                );
            },
        );
    }
    // Routes that name none of our parents any more: take our stale entries out.
    for (kind, meta, status) in routes_with_entries_of(input, cfg.gateway_controller) {
        let key = (
            kind,
            meta.namespace.as_deref(),
            meta.name.as_deref().unwrap_or(""),
        );
        if described.contains(&key) {
            continue;
        }
        check(&mut out, kind, meta, 0, &mut |out| {
            shared_list::<HttpRouteStatusParents>(
                out,
                SharedList {
                    kind,
                    meta,
                    list: "parents",
                    reference: "parentRef",
                    controller: cfg.gateway_controller,
                },
                Vec::new(),
                &status(),
                now,
            );
        });
    }

    // BackendTLSPolicies: our entries of status.ancestors.
    let mut described_policies: HashSet<(Option<&str>, &str)> = HashSet::new();
    for named in &statuses.backend_tls_policies {
        let Some(obj) = find(
            &input.backend_tls_policies,
            named.namespace.as_deref(),
            &named.name,
        ) else {
            continue;
        };
        described_policies.insert((named.namespace.as_deref(), named.name.as_str()));
        check(
            &mut out,
            "BackendTLSPolicy",
            obj.meta(),
            hash_of(&named.status, &[]),
            &mut |out| {
                let desired: Vec<Value> = named.status.ancestors.iter().map(to_value).collect();
                shared_list::<BackendTlsPolicyStatusAncestors>(
                    out,
                    SharedList {
                        kind: "BackendTLSPolicy",
                        meta: obj.meta(),
                        list: "ancestors",
                        reference: "ancestorRef",
                        controller: cfg.gateway_controller,
                    },
                    desired,
                    &to_value(&obj.status),
                    now,
                );
            },
        );
    }
    for obj in &input.backend_tls_policies {
        let meta = obj.meta();
        let ours = obj.status.as_ref().is_some_and(|s| {
            s.ancestors
                .iter()
                .any(|a| a.controller_name == cfg.gateway_controller)
        });
        let key = (
            meta.namespace.as_deref(),
            meta.name.as_deref().unwrap_or(""),
        );
        if ours && !described_policies.contains(&key) {
            check(&mut out, "BackendTLSPolicy", meta, 0, &mut |out| {
                shared_list::<BackendTlsPolicyStatusAncestors>(
                    out,
                    SharedList {
                        kind: "BackendTLSPolicy",
                        meta,
                        list: "ancestors",
                        reference: "ancestorRef",
                        controller: cfg.gateway_controller,
                    },
                    Vec::new(),
                    &to_value(&obj.status),
                    now,
                );
            });
        }
    }

    // Ingress status.loadBalancer.
    if let Some(addresses) = cfg.addresses {
        let desired: Vec<Value> = addresses
            .iter()
            .map(|a| {
                if a.parse::<IpAddr>().is_ok() {
                    json!({"ip": a})
                } else {
                    json!({"hostname": a})
                }
            })
            .collect();
        let desired = Value::Array(desired);
        let hash = hash_of(&desired, &[]);
        for ing in &input.ingresses {
            if !ingress_is_ours(ing, input, cfg.ingress_controller) {
                continue;
            }
            let meta = ing.meta();
            check(&mut out, "Ingress", meta, hash, &mut |out| {
                let existing = to_value(&ing.status);
                let current = existing
                    .pointer("/loadBalancer/ingress")
                    .cloned()
                    .unwrap_or(Value::Array(Vec::new()));
                if current == desired {
                    return;
                }
                out.push(StatusPatch {
                    kind: "Ingress",
                    namespace: meta.namespace.clone(),
                    name: meta.name.clone().unwrap_or_default(),
                    body: json!({"status": {"loadBalancer": {"ingress": desired}}}).to_string(),
                    ours: hash_of(&desired, &[]),
                    resource_version: meta.resource_version.clone(),
                });
            });
        }
    }
    cache.retain_seen(&seen);
    out
}

/// Mirrors the translator's rule (`translate::ingress`): the class an Ingress asks for (`spec.ingressClassName`,
/// else the legacy annotation) must be one of our IngressClasses; an Ingress that asks for none is ours when one of
/// our IngressClasses is the default.
fn ingress_is_ours(ing: &Ingress, input: &Input, controller: &str) -> bool {
    let ours = |c: &crate::k8s::IngressClass| {
        c.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(controller)
    };
    let requested = ing
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref())
        .or_else(|| {
            ing.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("kubernetes.io/ingress.class"))
                .map(String::as_str)
        });
    match requested {
        Some(name) => input
            .ingress_classes
            .iter()
            .any(|c| c.metadata.name.as_deref() == Some(name) && ours(c)),
        None => input.ingress_classes.iter().any(|c| {
            ours(c)
                && c.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("ingressclass.kubernetes.io/is-default-class"))
                    .is_some_and(|v| v == "true")
        }),
    }
}

fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Finds an object in a list of `Input` (sorted by namespace, then name).
fn find<'a, K: HasMeta>(
    list: &'a [Arc<K>],
    namespace: Option<&str>,
    name: &str,
) -> Option<&'a Arc<K>> {
    list.binary_search_by(|o| {
        let m = o.meta();
        (m.namespace.as_deref(), m.name.as_deref()).cmp(&(namespace, Some(name)))
    })
    .ok()
    .map(|i| &list[i])
}

/// A route's kind (as `Input` spells it), metadata, and its status as JSON (computed when asked: most rounds
/// never need it).
type LazyStatus<'a> = Box<dyn Fn() -> Value + 'a>;

fn route_status<'a>(
    input: &'a Input,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
) -> Option<(&'static str, &'a crate::k8s::ObjectMeta, LazyStatus<'a>)> {
    fn get<'a, K: HasMeta, S: Serialize + 'a>(
        list: &'a [Arc<K>],
        namespace: Option<&str>,
        name: &str,
        status: fn(&K) -> &Option<S>,
    ) -> Option<(&'a crate::k8s::ObjectMeta, LazyStatus<'a>)> {
        find(list, namespace, name).map(|o| {
            let o: &'a K = o;
            let lazy: LazyStatus<'a> = Box::new(move || to_value(status(o)));
            (o.meta(), lazy)
        })
    }
    let (k, found) = match kind {
        "HTTPRoute" => (
            "HTTPRoute",
            get(&input.http_routes, namespace, name, |r| &r.status),
        ),
        "GRPCRoute" => (
            "GRPCRoute",
            get(&input.grpc_routes, namespace, name, |r| &r.status),
        ),
        "TLSRoute" => (
            "TLSRoute",
            get(&input.tls_routes, namespace, name, |r| &r.status),
        ),
        "TCPRoute" => (
            "TCPRoute",
            get(&input.tcp_routes, namespace, name, |r| &r.status),
        ),
        "UDPRoute" => (
            "UDPRoute",
            get(&input.udp_routes, namespace, name, |r| &r.status),
        ),
        _ => return None,
    };
    found.map(|(m, v)| (k, m, v))
}

/// Routes whose `status.parents` has an entry of `controller`.
fn routes_with_entries_of<'a>(
    input: &'a Input,
    controller: &str,
) -> Vec<(&'static str, &'a crate::k8s::ObjectMeta, LazyStatus<'a>)> {
    let mut out: Vec<(&'static str, &'a crate::k8s::ObjectMeta, LazyStatus<'a>)> = Vec::new();
    macro_rules! scan {
        ($kind:literal, $list:ident) => {
            for r in &input.$list {
                let ours = r
                    .status
                    .as_ref()
                    .is_some_and(|s| s.parents.iter().any(|p| p.controller_name == controller));
                if ours {
                    let r: &'a _ = r.as_ref();
                    out.push(($kind, r.meta(), Box::new(move || to_value(&r.status))));
                }
            }
        };
    }
    scan!("HTTPRoute", http_routes);
    scan!("GRPCRoute", grpc_routes);
    scan!("TLSRoute", tls_routes);
    scan!("TCPRoute", tcp_routes);
    scan!("UDPRoute", udp_routes);
    out
}

/// Re-reads `v` through the generated type `T` (falls back to `v` when it does not read).
fn canon<T: DeserializeOwned + Serialize>(v: &Value) -> Value {
    serde_json::from_value::<T>(v.clone())
        .ok()
        .and_then(|t| serde_json::to_value(t).ok())
        .unwrap_or_else(|| v.clone())
}

/// Removes every `lastTransitionTime` (derived from the rest, never a reason to write).
fn without_times(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("lastTransitionTime");
                m.values_mut().for_each(walk);
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

fn pick(v: &Value, keys: &[&str]) -> Value {
    let mut m = Map::new();
    for k in keys {
        if let Some(x) = v.get(*k).filter(|x| !x.is_null()) {
            m.insert((*k).to_string(), x.clone());
        }
    }
    Value::Object(m)
}

/// `desired` and `existing` as JSON, with `desired`'s condition times filled from `existing` ([`fill_times`]).
fn desired_and_existing<D: Serialize, E: Serialize>(
    desired: &D,
    existing: &E,
    now: &str,
) -> (Value, Value) {
    let existing = to_value(existing);
    let mut desired = to_value(desired);
    fill_times(&mut desired, &existing, now);
    (desired, existing)
}

/// Sets `lastTransitionTime` on every condition of `desired`: the existing time when the existing condition of
/// the same type has the same status, else `now`. Conditions are matched in `conditions` at the top level and,
/// for `listeners`, per listener name.
fn fill_times(desired: &mut Value, existing: &Value, now: &str) {
    if let Some(conds) = desired.get_mut("conditions") {
        set_times(conds, existing.get("conditions"), now);
    }
    if let Some(Value::Array(listeners)) = desired.get_mut("listeners") {
        for l in listeners {
            let name = l.get("name").cloned();
            let prev = existing
                .get("listeners")
                .and_then(Value::as_array)
                .and_then(|ls| ls.iter().find(|x| x.get("name") == name.as_ref()))
                .and_then(|x| x.get("conditions"));
            if let Some(conds) = l.get_mut("conditions") {
                set_times(conds, prev, now);
            }
        }
    }
}

fn set_times(conds: &mut Value, existing: Option<&Value>, now: &str) {
    let Value::Array(conds) = conds else {
        return;
    };
    let existing = existing.and_then(Value::as_array);
    for c in conds {
        let prev = existing.and_then(|e| e.iter().find(|x| x.get("type") == c.get("type")));
        let time = match prev {
            Some(p) if p.get("status") == c.get("status") => p
                .get("lastTransitionTime")
                .cloned()
                .filter(Value::is_string)
                .unwrap_or_else(|| Value::String(now.to_string())),
            _ => Value::String(now.to_string()),
        };
        if let Value::Object(m) = c {
            m.insert("lastTransitionTime".into(), time);
        }
    }
}

/// A status that belongs to us alone (GatewayClass, Gateway, ListenerSet): patched whole when our keys differ.
fn whole_status<T: DeserializeOwned + Serialize>(
    out: &mut Vec<StatusPatch>,
    kind: &'static str,
    meta: &crate::k8s::ObjectMeta,
    desired: Value,
    existing: &Value,
    keys: &[&str],
) {
    let ours = without_times(pick(&canon::<T>(&desired), keys));
    let theirs = without_times(pick(&canon::<T>(existing), keys));
    if ours == theirs {
        return;
    }
    let mut body = Map::new();
    for k in keys {
        body.insert(
            (*k).to_string(),
            desired.get(*k).cloned().unwrap_or(Value::Null),
        );
    }
    out.push(StatusPatch {
        kind,
        namespace: meta.namespace.clone(),
        name: meta.name.clone().unwrap_or_default(),
        body: json!({"status": Value::Object(body)}).to_string(),
        ours: hash_of(&ours, &[]),
        resource_version: meta.resource_version.clone(),
    });
}

/// A status list shared between controllers (`status.parents`, `status.ancestors`).
struct SharedList<'a> {
    kind: &'static str,
    meta: &'a crate::k8s::ObjectMeta,
    list: &'static str,
    reference: &'static str,
    controller: &'a str,
}

fn shared_list<T: DeserializeOwned + Serialize>(
    out: &mut Vec<StatusPatch>,
    s: SharedList<'_>,
    mut desired: Vec<Value>,
    existing: &Value,
    now: &str,
) {
    let entries: Vec<Value> = existing
        .get(s.list)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let is_ours = |e: &Value| e.get("controllerName").and_then(Value::as_str) == Some(s.controller);
    let (mine, others): (Vec<Value>, Vec<Value>) = entries.into_iter().partition(is_ours);
    let mine_canon: Vec<Value> = mine.iter().map(canon::<T>).collect();
    for d in &mut desired {
        let key = canon::<T>(d).get(s.reference).cloned();
        let prev = mine_canon
            .iter()
            .find(|m| m.get(s.reference) == key.as_ref())
            .and_then(|m| m.get("conditions"));
        if let Some(conds) = d.get_mut("conditions") {
            set_times(conds, prev, now);
        }
    }
    let ours = without_times(Value::Array(desired.iter().map(canon::<T>).collect()));
    let theirs = without_times(Value::Array(mine_canon));
    if ours == theirs {
        return;
    }
    let mut merged = others;
    merged.extend(desired);
    let mut body = json!({"status": {s.list: merged}});
    if let Some(rv) = &s.meta.resource_version {
        body["metadata"] = json!({"resourceVersion": rv});
    }
    out.push(StatusPatch {
        kind: s.kind,
        namespace: s.meta.namespace.clone(),
        name: s.meta.name.clone().unwrap_or_default(),
        body: body.to_string(),
        ours: hash_of(&ours, &[]),
        resource_version: s.meta.resource_version.clone(),
    });
}

/// The addresses a Service publishes: its load-balancer ingress (IPs and host names), else its external IPs,
/// else its cluster IPs; the external name of an `ExternalName` Service.
pub fn service_addresses(svc: &Service) -> Vec<String> {
    let spec = svc.spec.clone().unwrap_or_default();
    if spec.type_.as_deref() == Some("ExternalName") {
        return spec.external_name.into_iter().collect();
    }
    let lb: Vec<String> = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.clone().or_else(|| i.hostname.clone()))
        .collect();
    if !lb.is_empty() {
        return lb;
    }
    if let Some(ips) = spec.external_ips.filter(|v| !v.is_empty()) {
        return ips;
    }
    let mut ips: Vec<String> = spec.cluster_ips.unwrap_or_default();
    if ips.is_empty() {
        ips.extend(spec.cluster_ip);
    }
    ips.retain(|ip| !ip.is_empty() && ip != "None");
    ips
}

/// How long a failed write waits before the writer tries again without a new round.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// Status is re-checked this often even when nothing changes (data-plane facts such as unbindable addresses
/// change without a translation round).
const RESYNC: Duration = Duration::from_secs(30);
/// Patches in flight at once.
const CONCURRENCY: usize = 8;

/// Writes status while `leader` is true: after every round, when leadership is gained, when the published
/// addresses change, and every [`RESYNC`]. Returns when `stop` becomes true.
pub async fn run(
    client: Client,
    cfg: StatusConfig,
    mut rounds: watch::Receiver<Option<Arc<Round>>>,
    mut leader: watch::Receiver<bool>,
    source: StatusSource,
    mut stop: watch::Receiver<bool>,
) {
    let (addr_tx, mut addr_rx) = watch::channel::<Option<Vec<String>>>(match &cfg.publish {
        Publish::None => None,
        Publish::Addresses(a) => Some(a.clone()),
        Publish::Service { .. } => None,
    });
    let _publish_task = match &cfg.publish {
        Publish::Service { namespace, name } => Some(AbortOnDrop(tokio::spawn(
            watch_publish_service(client.clone(), namespace.clone(), name.clone(), addr_tx),
        ))),
        _ => None,
    };
    let mut writer = Writer {
        client,
        pending: HashMap::new(),
        errors: HashMap::new(),
    };
    let mut cache = Some(PlanCache::default());
    let mut retry_at: Option<Instant> = None;
    let mut resync = tokio::time::interval(RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            r = rounds.changed() => if r.is_err() { return },
            r = leader.changed() => if r.is_err() { return },
            r = addr_rx.changed() => if r.is_err() { return },
            _ = resync.tick() => {}
            _ = sleep_until_opt(retry_at) => {}
        }
        retry_at = None;
        if !*leader.borrow_and_update() {
            // What we knew may be overwritten by the next leader: start afresh when we lead again.
            writer.pending.clear();
            cache = Some(PlanCache::default());
            continue;
        }
        let Some(round) = rounds.borrow_and_update().clone() else {
            continue;
        };
        let addresses = addr_rx.borrow_and_update().clone();
        let statuses = source();
        let gateway_controller = cfg.gateway_controller.clone();
        let ingress_controller = cfg.ingress_controller.clone();
        let input = round.input.clone();
        let mut plan_cache = cache.take().unwrap_or_default();
        // Comparing thousands of statuses can take a while: off the control-plane thread.
        let planned = tokio::task::spawn_blocking(move || {
            let now = crate::k8s::k8s_openapi::jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string();
            let patches = plan(
                &input,
                &statuses,
                &PlanConfig {
                    gateway_controller: &gateway_controller,
                    ingress_controller: &ingress_controller,
                    addresses: addresses.as_deref(),
                },
                &now,
                &mut plan_cache,
            );
            (patches, plan_cache)
        })
        .await;
        let Ok((planned, plan_cache)) = planned else {
            continue;
        };
        cache = Some(plan_cache);
        if !*leader.borrow() {
            continue;
        }
        if writer.write(&round, planned).await {
            retry_at = Some(Instant::now() + RETRY_AFTER_FAILURE);
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type Key = (&'static str, Option<String>, String);

struct Writer {
    client: Client,
    /// Writes made and not yet seen back through the watch: (resourceVersion they were computed from, hash of our
    /// part).
    pending: HashMap<Key, (Option<String>, u64)>,
    /// The last error logged per object, so a failing object is logged once, not every round.
    errors: HashMap<Key, String>,
}

impl Writer {
    /// Applies `patches`; returns `true` when some failed for a reason worth retrying.
    async fn write(&mut self, round: &Round, patches: Vec<StatusPatch>) -> bool {
        let keys: HashSet<Key> = patches
            .iter()
            .map(|p| (p.kind, p.namespace.clone(), p.name.clone()))
            .collect();
        // A write that no longer shows up in the plan was seen back (or made moot).
        self.pending.retain(|k, _| keys.contains(k));
        let todo: Vec<StatusPatch> = patches
            .into_iter()
            .filter(|p| {
                let k = (p.kind, p.namespace.clone(), p.name.clone());
                self.pending.get(&k) != Some(&(p.resource_version.clone(), p.ours))
            })
            .collect();
        if todo.is_empty() {
            return false;
        }
        tracing::debug!(patches = todo.len(), "writing status");
        let client = self.client.clone();
        let results: Vec<(StatusPatch, Result<(), KubeError>)> = futures::stream::iter(todo)
            .map(|p| {
                let client = client.clone();
                let served = served_for(round, p.kind);
                async move {
                    let r = match served {
                        Some(served) => patch_status(client, served, &p).await,
                        None => Ok(()),
                    };
                    (p, r)
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut retry = false;
        for (p, r) in results {
            let k: Key = (p.kind, p.namespace.clone(), p.name.clone());
            let what = match &p.namespace {
                Some(ns) => format!("{} {ns}/{}", p.kind, p.name),
                None => format!("{} {}", p.kind, p.name),
            };
            match r {
                Ok(()) => {
                    tracing::debug!(object = %what, "status written");
                    self.errors.remove(&k);
                    self.pending.insert(k, (p.resource_version, p.ours));
                }
                // Someone else wrote first, or the object is gone: the watch brings the news and a new round.
                Err(KubeError::Api(s)) if s.code == 409 || s.code == 404 => {
                    tracing::debug!(object = %what, code = s.code, "status write refused; retried after the next change");
                    retry |= s.code == 409;
                }
                Err(e) => {
                    let msg = e.to_string();
                    if self.errors.get(&k) != Some(&msg) {
                        tracing::warn!(object = %what, error = %msg, "cannot write status");
                        self.errors.insert(k, msg);
                    }
                    retry = true;
                }
            }
        }
        retry
    }
}

fn served_for(round: &Round, kind: &str) -> Option<Served> {
    if kind == "Ingress" {
        return Some(Served {
            group: "networking.k8s.io",
            version: "v1",
            kind: "Ingress",
            plural: "ingresses",
        });
    }
    round.served.get(kind).copied()
}

async fn patch_status(client: Client, served: Served, p: &StatusPatch) -> Result<(), KubeError> {
    let ar = ApiResource {
        group: served.group.to_string(),
        version: served.version.to_string(),
        api_version: served.api_version(),
        kind: served.kind.to_string(),
        plural: served.plural.to_string(),
    };
    let api: Api<DynamicObject> = match &p.namespace {
        Some(ns) => Api::namespaced_with(client, ns, &ar),
        None => Api::all_with(client, &ar),
    };
    api.patch_status(&p.name, &PatchParams::default(), &Patch::Merge(p.body()))
        .await
        .map(|_| ())
}

/// Follows the `--publish-service` Service and sends its addresses whenever they change.
async fn watch_publish_service(
    client: Client,
    namespace: String,
    name: String,
    tx: watch::Sender<Option<Vec<String>>>,
) {
    let api: Api<Service> = Api::namespaced(client, &namespace);
    let stream = watcher::watch_object(api, &name).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut warned = false;
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(svc) => {
                let addresses = svc.as_ref().map(service_addresses).unwrap_or_default();
                if svc.is_none() && !warned {
                    tracing::warn!(service = %format!("{namespace}/{name}"), "the --publish-service Service does not exist; publishing no address");
                    warned = true;
                }
                tx.send_if_modified(|cur| {
                    if cur.as_ref() == Some(&addresses) {
                        false
                    } else {
                        *cur = Some(addresses);
                        true
                    }
                });
            }
            Err(e) => {
                tracing::warn!(service = %format!("{namespace}/{name}"), error = %e, "cannot watch the --publish-service Service");
            }
        }
    }
}

#[cfg(test)]
mod tests;
