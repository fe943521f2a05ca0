//! Status-only tests: the conditions upstream asserts (encoded per test in `expected/status/<Test>.yaml`, each
//! citing its upstream Go file), checked against the proxy's `GET /status` with the upstream helpers'
//! semantics (`conformance/utils/kubernetes/helpers.go`):
//!
//! * a condition matches on `type`, `status` (empty = any) and `reason` (empty = any);
//! * every helper first requires the object's conditions to carry the latest `observedGeneration` (the
//!   harness plays the apiserver: every object starts at `metadata.generation: 1`, a spec change bumps it);
//! * listener lists match by name, with exactly as many listeners as expected, expected `supportedKinds` a
//!   subset of the actual ones (an empty expected list requires an empty actual list), equal `attachedRoutes`;
//! * route parents match by `controllerName`, `group`/`kind` (both set or both unset), `name` and `namespace`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::world::{split_ns_name, WorldPlan, CONTROLLER_NAME};
use super::yaml::{at, str_at};

/// The Gateway API group.
pub const GROUP: &str = "gateway.networking.k8s.io";

/// One status-only test.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatusTestSpec {
    /// ShortName.
    pub test: String,
    /// Upstream Go file the expectations come from.
    pub source: String,
    /// Where this encoding departs from upstream, and why.
    #[serde(default)]
    pub notes: Option<String>,
    /// Set when the test cannot be checked without a cluster (the reason).
    #[serde(default)]
    pub skip: Option<String>,
    /// Upstream's test body returns before any check unless every one of these features is claimed.
    #[serde(default)]
    pub requires_claimed: Vec<String>,
    /// Upstream's test body returns before any check when one of these features is claimed.
    #[serde(default)]
    pub requires_unclaimed: Vec<String>,
    /// Steps, in order.
    #[serde(default)]
    pub steps: Vec<Step>,
}

impl StatusTestSpec {
    /// Why upstream's test body would return before checking anything, given what the implementation claims
    /// (upstream then reports the test passed although nothing was checked).
    pub fn gated_off(&self, claims: impl Fn(&str) -> bool) -> Option<String> {
        if let Some(f) = self.requires_claimed.iter().find(|f| !claims(f)) {
            return Some(format!(
                "upstream checks nothing unless {f} is claimed, and it is not"
            ));
        }
        self.requires_unclaimed
            .iter()
            .find(|f| claims(f))
            .map(|f| format!("upstream checks nothing when {f} is claimed, as it is"))
    }
}

/// Changes to make, then conditions to wait for.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Step {
    /// What the step checks.
    #[serde(default)]
    pub name: String,
    /// World changes before the checks.
    #[serde(default)]
    pub actions: Vec<Action>,
    /// What must hold (all at once, on two consecutive polls).
    #[serde(default)]
    pub expect: Vec<Assertion>,
}

/// A change to the world (the Go test's `Patch`/`Update`/`Delete`).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Action {
    /// JSON merge patch of an object; bumps `metadata.generation` when anything outside `metadata` changed.
    /// String values `$USABLE_ADDR` / `$UNUSABLE_ADDR` stand for the world's static addresses.
    Patch {
        /// Kind.
        kind: String,
        /// `namespace/name` (or `name`).
        name: String,
        /// The patch.
        merge: Value,
    },
    /// Deletes an object.
    Delete {
        /// Kind.
        kind: String,
        /// `namespace/name` (or `name`).
        name: String,
    },
}

/// A condition to find (`status`/`reason` empty = any).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cond {
    /// Type.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`/`False`/empty.
    #[serde(default)]
    pub status: String,
    /// Reason or empty.
    #[serde(default)]
    pub reason: String,
}

/// A route kind in `supportedKinds`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindRef {
    /// Default `gateway.networking.k8s.io`.
    #[serde(default)]
    pub group: Option<String>,
    /// Kind.
    pub kind: String,
}

/// An expected listener status.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerExp {
    /// Listener name.
    pub name: String,
    /// Must be present (a subset); empty = must be empty.
    #[serde(default)]
    pub supported_kinds: Vec<KindRef>,
    /// Exact.
    pub attached_routes: i64,
    /// Must be present.
    #[serde(default)]
    pub conditions: Vec<Cond>,
}

/// An expected route parent status.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParentExp {
    /// `parentRef.group` (must be set to this, or unset when `None`).
    #[serde(default)]
    pub group: Option<String>,
    /// `parentRef.kind` (same rule).
    #[serde(default)]
    pub kind: Option<String>,
    /// `parentRef.name`.
    pub name: String,
    /// `parentRef.namespace`.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Default: the harness's controller.
    #[serde(default)]
    pub controller_name: Option<String>,
    /// Must be present.
    #[serde(default)]
    pub conditions: Vec<Cond>,
}

/// An expected address.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddrExp {
    /// Address type.
    #[serde(rename = "type")]
    pub type_: String,
    /// Value (`$USABLE_ADDR` allowed).
    pub value: String,
}

fn default_route_kind() -> String {
    "HTTPRoute".to_string()
}

fn yes() -> bool {
    true
}

/// One upstream assertion helper.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Assertion {
    /// `NamespacesMustBeReady`: every Gateway of these namespaces (except those annotated
    /// `gateway-api/skip-this-for-readiness`) is Accepted and Programmed, with the latest generation.
    NamespacesReady(Vec<String>),
    /// `NamespacesMustBeAccepted`: the same without Programmed.
    NamespacesAccepted(Vec<String>),
    /// `GatewayMustHaveLatestConditions`.
    GatewayLatestConditions(String),
    /// `GatewayMustHaveCondition`.
    #[serde(rename_all = "camelCase")]
    GatewayCondition {
        /// `ns/name`.
        gateway: String,
        /// The condition.
        condition: Cond,
    },
    /// `GatewayStatusMustHaveListeners`.
    #[serde(rename_all = "camelCase")]
    GatewayListeners {
        /// `ns/name`.
        gateway: String,
        /// Expected listeners (exactly these).
        listeners: Vec<ListenerExp>,
    },
    /// `GatewayListenersMustHaveConditions` / `GatewayListenerMustHaveConditions`.
    #[serde(rename_all = "camelCase")]
    GatewayListenerConditions {
        /// `ns/name`.
        gateway: String,
        /// Listener names (empty: every listener in status).
        #[serde(default)]
        listeners: Vec<String>,
        /// Conditions each must have.
        conditions: Vec<Cond>,
    },
    /// `GatewayMustHaveZeroRoutes`.
    GatewayZeroRoutes(String),
    /// `GatewayMustHaveAttachedListeners` (`status.attachedListenerSets`).
    #[serde(rename_all = "camelCase")]
    GatewayAttachedListenerSets {
        /// `ns/name`.
        gateway: String,
        /// Expected count.
        count: i64,
    },
    /// `status.addresses` is exactly this list (GatewayStatic­Addresses).
    #[serde(rename_all = "camelCase")]
    GatewayAddresses {
        /// `ns/name`.
        gateway: String,
        /// Expected addresses.
        addresses: Vec<AddrExp>,
    },
    /// `WaitForGatewayAddress`: some address with a type in status.
    GatewayHasAddress(String),
    /// `GWCMustHaveAcceptedConditionTrue` and friends.
    #[serde(rename_all = "camelCase")]
    GatewayClassCondition {
        /// Class name.
        name: String,
        /// The condition.
        condition: Cond,
    },
    /// `HTTPRouteMustHaveCondition`: a parent naming this Gateway/ListenerSet has the condition.
    #[serde(rename_all = "camelCase")]
    RouteCondition {
        /// Route kind (default HTTPRoute).
        #[serde(default = "default_route_kind")]
        kind: String,
        /// `ns/name`.
        route: String,
        /// `ns/name` of the parent.
        parent: String,
        /// The condition.
        condition: Cond,
    },
    /// `HTTPRouteMustHaveParents`: every expected parent is present (`exact`: and nothing else).
    #[serde(rename_all = "camelCase")]
    RouteParents {
        /// Route kind (default HTTPRoute).
        #[serde(default = "default_route_kind")]
        kind: String,
        /// `ns/name`.
        route: String,
        /// Expected parents.
        parents: Vec<ParentExp>,
        /// Namespace must be set (`namespaceRequired`).
        #[serde(default = "yes")]
        namespace_required: bool,
        /// No other parents.
        #[serde(default)]
        exact: bool,
    },
    /// `HTTPRouteMustHaveNoAcceptedParents`.
    #[serde(rename_all = "camelCase")]
    RouteNoAcceptedParents {
        /// Route kind (default HTTPRoute).
        #[serde(default = "default_route_kind")]
        kind: String,
        /// `ns/name`.
        route: String,
    },
    /// `ListenerSetMustHaveCondition`.
    #[serde(rename_all = "camelCase")]
    ListenerSetCondition {
        /// `ns/name`.
        listener_set: String,
        /// The condition.
        condition: Cond,
    },
    /// `ListenerSetListenersMustHaveConditions`.
    #[serde(rename_all = "camelCase")]
    ListenerSetListenerConditions {
        /// `ns/name`.
        listener_set: String,
        /// Listener names (empty: all).
        #[serde(default)]
        listeners: Vec<String>,
        /// Conditions each must have.
        conditions: Vec<Cond>,
    },
    /// `ListenerSetStatusMustHaveListeners`.
    #[serde(rename_all = "camelCase")]
    ListenerSetListeners {
        /// `ns/name`.
        listener_set: String,
        /// Expected listeners (exactly these).
        listeners: Vec<ListenerExp>,
    },
    /// `BackendTLSPolicyMustHaveCondition`.
    #[serde(rename_all = "camelCase")]
    BackendTlsPolicyCondition {
        /// `ns/name`.
        policy: String,
        /// `ns/name` of the ancestor Gateway.
        ancestor: String,
        /// The condition.
        condition: Cond,
    },
    /// `BackendTLSPolicyMustHaveLatestConditions`.
    BackendTlsPolicyLatestConditions(String),
}

impl Assertion {
    /// A short label for reports.
    pub fn label(&self) -> String {
        match self {
            Assertion::NamespacesReady(ns) => format!("namespaces {ns:?} ready"),
            Assertion::NamespacesAccepted(ns) => format!("namespaces {ns:?} accepted"),
            Assertion::GatewayLatestConditions(g) => format!("Gateway {g} latest conditions"),
            Assertion::GatewayCondition { gateway, condition } => {
                format!("Gateway {gateway} {}", cond_label(condition))
            }
            Assertion::GatewayListeners { gateway, .. } => format!("Gateway {gateway} listeners"),
            Assertion::GatewayListenerConditions {
                gateway,
                listeners,
                conditions,
            } => format!(
                "Gateway {gateway} listeners {listeners:?} {}",
                conds_label(conditions)
            ),
            Assertion::GatewayZeroRoutes(g) => format!("Gateway {g} has zero routes"),
            Assertion::GatewayAttachedListenerSets { gateway, count } => {
                format!("Gateway {gateway} attachedListenerSets = {count}")
            }
            Assertion::GatewayAddresses { gateway, .. } => format!("Gateway {gateway} addresses"),
            Assertion::GatewayHasAddress(g) => format!("Gateway {g} has an address"),
            Assertion::GatewayClassCondition { name, condition } => {
                format!("GatewayClass {name} {}", cond_label(condition))
            }
            Assertion::RouteCondition {
                kind,
                route,
                parent,
                condition,
            } => {
                format!("{kind} {route} parent {parent} {}", cond_label(condition))
            }
            Assertion::RouteParents { kind, route, .. } => format!("{kind} {route} parents"),
            Assertion::RouteNoAcceptedParents { kind, route } => {
                format!("{kind} {route} has no accepted parents")
            }
            Assertion::ListenerSetCondition {
                listener_set,
                condition,
            } => {
                format!("ListenerSet {listener_set} {}", cond_label(condition))
            }
            Assertion::ListenerSetListenerConditions {
                listener_set,
                listeners,
                conditions,
            } => format!(
                "ListenerSet {listener_set} listeners {listeners:?} {}",
                conds_label(conditions)
            ),
            Assertion::ListenerSetListeners { listener_set, .. } => {
                format!("ListenerSet {listener_set} listeners")
            }
            Assertion::BackendTlsPolicyCondition {
                policy,
                ancestor,
                condition,
            } => format!(
                "BackendTLSPolicy {policy} ancestor {ancestor} {}",
                cond_label(condition)
            ),
            Assertion::BackendTlsPolicyLatestConditions(p) => {
                format!("BackendTLSPolicy {p} latest conditions")
            }
        }
    }
}

fn cond_label(c: &Cond) -> String {
    let status = if c.status.is_empty() { "*" } else { &c.status };
    let reason = if c.reason.is_empty() { "*" } else { &c.reason };
    format!("{}={status}/{reason}", c.type_)
}

fn conds_label(cs: &[Cond]) -> String {
    cs.iter().map(cond_label).collect::<Vec<_>>().join(",")
}

/// Parses an expectation file.
pub fn parse_spec(text: &str) -> anyhow::Result<StatusTestSpec> {
    // Through JSON values: the files write enums as `{variant: ...}` maps, as serde_json reads them.
    let value: Value = serde_saphyr::from_str(text)?;
    Ok(serde_json::from_value(value)?)
}

/// Where an assertion looks: the `/status` document and the world (generations, readiness annotations).
pub struct StatusView<'a> {
    /// The `/status` JSON.
    pub status: &'a Value,
    /// The world as the harness last wrote it.
    pub world: &'a WorldPlan,
}

fn entries<'a>(status: &'a Value, list: &str) -> impl Iterator<Item = &'a Value> {
    status
        .get(list)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

impl StatusView<'_> {
    fn object_status(
        &self,
        list: &str,
        ns_name: &str,
        kind: Option<&str>,
    ) -> Result<&Value, String> {
        let (ns, name) = split_ns_name(ns_name);
        entries(self.status, list)
            .find(|e| {
                str_at(e, &["name"]) == Some(name)
                    && (ns.is_empty() || str_at(e, &["namespace"]) == Some(ns))
                    && kind.is_none_or(|k| str_at(e, &["kind"]) == Some(k))
            })
            .map(|e| e.get("status").unwrap_or(&Value::Null))
            .ok_or_else(|| {
                format!(
                    "{} {ns_name} is not in /status `{list}`",
                    kind.unwrap_or(list)
                )
            })
    }

    fn latest(&self, kind: &str, ns_name: &str, conditions: &Value) -> Result<(), String> {
        let want = self.world.generation(kind, ns_name);
        let stale: Vec<String> = conditions
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| {
                at(c, &["observedGeneration"])
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
                    != want
            })
            .map(|c| {
                format!(
                    "{} (observedGeneration {})",
                    str_at(c, &["type"]).unwrap_or("?"),
                    at(c, &["observedGeneration"]).map_or("unset".to_string(), |v| v.to_string())
                )
            })
            .collect();
        if stale.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{kind} {ns_name}: expected observedGeneration {want} on every condition, stale: {}",
                stale.join(", ")
            ))
        }
    }

    fn gateway(&self, gw: &str) -> Result<&Value, String> {
        let st = self.object_status("gateways", gw, None)?;
        self.latest("Gateway", gw, st.get("conditions").unwrap_or(&Value::Null))?;
        Ok(st)
    }

    fn listener_set(&self, ls: &str) -> Result<&Value, String> {
        let st = self.object_status("listenerSets", ls, None)?;
        self.latest(
            "ListenerSet",
            ls,
            st.get("conditions").unwrap_or(&Value::Null),
        )?;
        Ok(st)
    }

    fn route(&self, kind: &str, route: &str) -> Result<&Value, String> {
        let st = self.object_status("routes", route, Some(kind))?;
        for parent in entries(st, "parents") {
            self.latest(
                kind,
                route,
                parent.get("conditions").unwrap_or(&Value::Null),
            )?;
        }
        Ok(st)
    }

    /// Checks one assertion.
    pub fn check(&self, a: &Assertion) -> Result<(), String> {
        match a {
            Assertion::NamespacesReady(nss) => self.namespaces(nss, true),
            Assertion::NamespacesAccepted(nss) => self.namespaces(nss, false),
            Assertion::GatewayLatestConditions(gw) => self.gateway(gw).map(|_| ()),
            Assertion::GatewayCondition { gateway, condition } => {
                let st = self.gateway(gateway)?;
                find_condition(st.get("conditions"), condition)
            }
            Assertion::GatewayListeners { gateway, listeners } => {
                let st = self.gateway(gateway)?;
                listeners_match(listeners, st.get("listeners"))
            }
            Assertion::GatewayListenerConditions {
                gateway,
                listeners,
                conditions,
            } => {
                let st = self.object_status("gateways", gateway, None)?;
                listener_conditions(st.get("listeners"), listeners, conditions)
            }
            Assertion::GatewayZeroRoutes(gw) => {
                let st = self.gateway(gw)?;
                let ls: Vec<&Value> = entries(st, "listeners").collect();
                let attached = ls
                    .first()
                    .and_then(|l| l.get("attachedRoutes"))
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                if ls.is_empty() || (ls.len() == 1 && attached == 0) {
                    Ok(())
                } else {
                    Err(format!(
                        "want zero listeners or exactly 1 listener with zero routes, got {} listener(s), attachedRoutes {:?}",
                        ls.len(),
                        ls.iter().map(|l| l.get("attachedRoutes").cloned().unwrap_or(Value::Null)).collect::<Vec<_>>()
                    ))
                }
            }
            Assertion::GatewayAttachedListenerSets { gateway, count } => {
                let st = self.gateway(gateway)?;
                let got = st
                    .get("attachedListenerSets")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                if got == *count {
                    Ok(())
                } else {
                    Err(format!("attachedListenerSets: want {count}, got {got}"))
                }
            }
            Assertion::GatewayAddresses { gateway, addresses } => {
                let st = self.gateway(gateway)?;
                let got: Vec<(String, String)> = entries(st, "addresses")
                    .map(|a| {
                        (
                            str_at(a, &["type"]).unwrap_or("").to_string(),
                            str_at(a, &["value"]).unwrap_or("").to_string(),
                        )
                    })
                    .collect();
                let want: Vec<(String, String)> = addresses
                    .iter()
                    .map(|a| (a.type_.clone(), substitute_token(&a.value, self.world)))
                    .collect();
                if got == want {
                    Ok(())
                } else {
                    Err(format!("status.addresses: want {want:?}, got {got:?}"))
                }
            }
            Assertion::GatewayHasAddress(gw) => {
                let st = self.gateway(gw)?;
                if entries(st, "addresses").any(|a| a.get("type").is_some_and(|t| !t.is_null())) {
                    Ok(())
                } else {
                    Err("no address with a type in status.addresses".to_string())
                }
            }
            Assertion::GatewayClassCondition { name, condition } => {
                let st = self.object_status("gatewayClasses", name, None)?;
                self.latest(
                    "GatewayClass",
                    name,
                    st.get("conditions").unwrap_or(&Value::Null),
                )?;
                find_condition(st.get("conditions"), condition)
            }
            Assertion::RouteCondition {
                kind,
                route,
                parent,
                condition,
            } => {
                let st = self.route(kind, route)?;
                let (pns, pname) = split_ns_name(parent);
                let mut seen = Vec::new();
                for p in entries(st, "parents") {
                    let name_ok = str_at(p, &["parentRef", "name"]) == Some(pname);
                    let ns = str_at(p, &["parentRef", "namespace"]);
                    if name_ok && ns.is_none_or(|n| n == pns) {
                        match find_condition(p.get("conditions"), condition) {
                            Ok(()) => return Ok(()),
                            Err(e) => seen.push(e),
                        }
                    }
                }
                if seen.is_empty() {
                    Err(format!("no status.parents entry for parent {parent}"))
                } else {
                    Err(seen.join("; "))
                }
            }
            Assertion::RouteParents {
                kind,
                route,
                parents,
                namespace_required,
                exact,
            } => {
                let st = self.route(kind, route)?;
                let actual: Vec<&Value> = entries(st, "parents").collect();
                if *exact && actual.len() != parents.len() {
                    return Err(format!(
                        "expected exactly {} parent(s), got {}: {}",
                        parents.len(),
                        actual.len(),
                        describe_parents(&actual)
                    ));
                }
                for e in parents {
                    if !actual
                        .iter()
                        .any(|a| parent_matches(e, a, *namespace_required))
                    {
                        return Err(format!(
                            "no parent matches {}/{} (group {:?}, kind {:?}, namespace {:?}, {}); parents: {}",
                            e.namespace.as_deref().unwrap_or(""),
                            e.name,
                            e.group,
                            e.kind,
                            e.namespace,
                            conds_label(&e.conditions),
                            describe_parents(&actual)
                        ));
                    }
                }
                Ok(())
            }
            Assertion::RouteNoAcceptedParents { kind, route } => {
                let st = self.route(kind, route)?;
                let actual: Vec<&Value> = entries(st, "parents").collect();
                match actual.len() {
                    0 => Ok(()),
                    1 => find_condition(
                        actual[0].get("conditions"),
                        &Cond {
                            type_: "Accepted".into(),
                            status: "False".into(),
                            reason: String::new(),
                        },
                    ),
                    n => Err(format!(
                        "expected at most one (not accepted) parent, got {n}"
                    )),
                }
            }
            Assertion::ListenerSetCondition {
                listener_set,
                condition,
            } => {
                let st = self.listener_set(listener_set)?;
                find_condition(st.get("conditions"), condition)
            }
            Assertion::ListenerSetListenerConditions {
                listener_set,
                listeners,
                conditions,
            } => {
                let st = self.listener_set(listener_set)?;
                listener_conditions(st.get("listeners"), listeners, conditions)
            }
            Assertion::ListenerSetListeners {
                listener_set,
                listeners,
            } => {
                let st = self.listener_set(listener_set)?;
                listeners_match(listeners, st.get("listeners"))
            }
            Assertion::BackendTlsPolicyCondition {
                policy,
                ancestor,
                condition,
            } => {
                let st = self.object_status("backendTLSPolicies", policy, None)?;
                let (ans, aname) = split_ns_name(ancestor);
                let mut seen = Vec::new();
                for a in entries(st, "ancestors") {
                    self.latest(
                        "BackendTLSPolicy",
                        policy,
                        a.get("conditions").unwrap_or(&Value::Null),
                    )?;
                    let ns = str_at(a, &["ancestorRef", "namespace"]);
                    if str_at(a, &["ancestorRef", "name"]) == Some(aname)
                        && ns.is_none_or(|n| n == ans)
                    {
                        match find_condition(a.get("conditions"), condition) {
                            Ok(()) => return Ok(()),
                            Err(e) => seen.push(e),
                        }
                    }
                }
                if seen.is_empty() {
                    Err(format!("no status.ancestors entry for {ancestor}"))
                } else {
                    Err(seen.join("; "))
                }
            }
            Assertion::BackendTlsPolicyLatestConditions(policy) => {
                let st = self.object_status("backendTLSPolicies", policy, None)?;
                for a in entries(st, "ancestors") {
                    self.latest(
                        "BackendTLSPolicy",
                        policy,
                        a.get("conditions").unwrap_or(&Value::Null),
                    )?;
                }
                Ok(())
            }
        }
    }

    fn namespaces(&self, nss: &[String], programmed: bool) -> Result<(), String> {
        for (gw, plan) in &self.world.gateways {
            let (ns, _) = split_ns_name(gw);
            if !nss.iter().any(|n| n == ns) || plan.skip_readiness {
                continue;
            }
            let st = self.gateway(gw)?;
            let accepted = Cond {
                type_: "Accepted".into(),
                status: "True".into(),
                reason: String::new(),
            };
            find_condition(st.get("conditions"), &accepted)
                .map_err(|e| format!("Gateway {gw} not Accepted yet: {e}"))?;
            if programmed {
                let prog = Cond {
                    type_: "Programmed".into(),
                    status: "True".into(),
                    reason: String::new(),
                };
                find_condition(st.get("conditions"), &prog)
                    .map_err(|e| format!("Gateway {gw} not Programmed yet: {e}"))?;
            }
        }
        Ok(())
    }
}

fn substitute_token(v: &str, world: &WorldPlan) -> String {
    v.replace("$USABLE_ADDR", &world.usable_address.to_string())
        .replace("$UNUSABLE_ADDR", super::world::UNUSABLE_ADDRESS)
}

/// Replaces `$USABLE_ADDR`/`$UNUSABLE_ADDR` in every string of a patch.
pub fn substitute_tokens(v: &Value, world: &WorldPlan) -> Value {
    match v {
        Value::String(s) => Value::String(substitute_token(s, world)),
        Value::Array(a) => Value::Array(a.iter().map(|x| substitute_tokens(x, world)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| (k.clone(), substitute_tokens(x, world)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// `findConditionInList`.
pub fn find_condition(conditions: Option<&Value>, want: &Cond) -> Result<(), String> {
    let list: Vec<&Value> = conditions
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let mut found = Vec::new();
    for c in &list {
        if str_at(c, &["type"]) != Some(want.type_.as_str()) {
            continue;
        }
        let status = str_at(c, &["status"]).unwrap_or("");
        let reason = str_at(c, &["reason"]).unwrap_or("");
        if (want.status.is_empty() || status == want.status)
            && (want.reason.is_empty() || reason == want.reason)
        {
            return Ok(());
        }
        found.push(format!("{}={status}/{reason}", want.type_));
    }
    if found.is_empty() {
        Err(format!(
            "condition {} not present (conditions: {})",
            cond_label(want),
            describe_conditions(&list)
        ))
    } else {
        Err(format!(
            "expected {}, got {}",
            cond_label(want),
            found.join(", ")
        ))
    }
}

fn describe_conditions(list: &[&Value]) -> String {
    if list.is_empty() {
        return "none".to_string();
    }
    list.iter()
        .map(|c| {
            format!(
                "{}={}/{}",
                str_at(c, &["type"]).unwrap_or("?"),
                str_at(c, &["status"]).unwrap_or("?"),
                str_at(c, &["reason"]).unwrap_or("?")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `conditionsMatch`.
pub fn conditions_match(expected: &[Cond], actual: Option<&Value>) -> Result<(), String> {
    let n = actual.and_then(Value::as_array).map_or(0, Vec::len);
    if n < expected.len() {
        return Err(format!(
            "expected at least {} condition(s), got {n}",
            expected.len()
        ));
    }
    for c in expected {
        find_condition(actual, c)?;
    }
    Ok(())
}

fn kind_group(k: &Value) -> (String, String) {
    (
        str_at(k, &["group"]).unwrap_or(GROUP).to_string(),
        str_at(k, &["kind"]).unwrap_or("").to_string(),
    )
}

/// `gatewayListenersMatch` / `listenerSetListenersMatch`.
pub fn listeners_match(expected: &[ListenerExp], actual: Option<&Value>) -> Result<(), String> {
    let actual: Vec<&Value> = actual
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    if actual.len() != expected.len() {
        return Err(format!(
            "expected {} listener status(es), got {} ({:?})",
            expected.len(),
            actual.len(),
            actual
                .iter()
                .map(|l| str_at(l, &["name"]).unwrap_or("?"))
                .collect::<Vec<_>>()
        ));
    }
    for e in expected {
        let Some(a) = actual
            .iter()
            .find(|a| str_at(a, &["name"]) == Some(e.name.as_str()))
        else {
            return Err(format!(
                "expected status for listener {} to be present",
                e.name
            ));
        };
        let kinds: Vec<(String, String)> = a
            .get("supportedKinds")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(kind_group)
            .collect();
        if e.supported_kinds.is_empty() && !kinds.is_empty() {
            return Err(format!(
                "listener {}: expected empty supportedKinds, got {kinds:?}",
                e.name
            ));
        }
        for k in &e.supported_kinds {
            let want = (
                k.group.clone().unwrap_or_else(|| GROUP.to_string()),
                k.kind.clone(),
            );
            if !kinds.contains(&want) {
                return Err(format!(
                    "listener {}: expected {}/{} in supportedKinds, got {kinds:?}",
                    e.name, want.0, want.1
                ));
            }
        }
        let attached = a.get("attachedRoutes").and_then(Value::as_i64).unwrap_or(0);
        if attached != e.attached_routes {
            return Err(format!(
                "listener {}: expected attachedRoutes {}, got {attached}",
                e.name, e.attached_routes
            ));
        }
        conditions_match(&e.conditions, a.get("conditions"))
            .map_err(|err| format!("listener {}: {err}", e.name))?;
    }
    Ok(())
}

fn listener_conditions(
    listeners: Option<&Value>,
    names: &[String],
    conditions: &[Cond],
) -> Result<(), String> {
    let actual: Vec<&Value> = listeners
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let mut missing: BTreeMap<&str, ()> = names.iter().map(|n| (n.as_str(), ())).collect();
    for l in &actual {
        let name = str_at(l, &["name"]).unwrap_or("");
        if !names.is_empty() && !names.iter().any(|n| n == name) {
            continue;
        }
        for c in conditions {
            find_condition(l.get("conditions"), c).map_err(|e| format!("listener {name}: {e}"))?;
        }
        missing.remove(name);
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "listener(s) {:?} not in status (have {:?})",
            missing.keys().collect::<Vec<_>>(),
            actual
                .iter()
                .map(|l| str_at(l, &["name"]).unwrap_or("?"))
                .collect::<Vec<_>>()
        ))
    }
}

fn parent_matches(e: &ParentExp, a: &Value, namespace_required: bool) -> bool {
    let controller = e.controller_name.as_deref().unwrap_or(CONTROLLER_NAME);
    if str_at(a, &["controllerName"]) != Some(controller) {
        return false;
    }
    if str_at(a, &["parentRef", "group"]) != e.group.as_deref() {
        return false;
    }
    if str_at(a, &["parentRef", "kind"]) != e.kind.as_deref() {
        return false;
    }
    if str_at(a, &["parentRef", "name"]) != Some(e.name.as_str()) {
        return false;
    }
    let ns = str_at(a, &["parentRef", "namespace"]);
    if ns != e.namespace.as_deref() && (namespace_required || ns.is_some()) {
        return false;
    }
    conditions_match(&e.conditions, a.get("conditions")).is_ok()
}

fn describe_parents(actual: &[&Value]) -> String {
    if actual.is_empty() {
        return "none".to_string();
    }
    actual
        .iter()
        .map(|p| {
            let conds: Vec<&Value> = p
                .get("conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .collect();
            format!(
                "[{} {:?}/{:?} {}/{} ({})]",
                str_at(p, &["controllerName"]).unwrap_or("?"),
                str_at(p, &["parentRef", "group"]),
                str_at(p, &["parentRef", "kind"]),
                str_at(p, &["parentRef", "namespace"]).unwrap_or(""),
                str_at(p, &["parentRef", "name"]).unwrap_or("?"),
                describe_conditions(&conds)
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}
