//! Gateway API GatewayClass, Gateway and listeners: which Gateways are ours, what each listener serves and which
//! routes it accepts. Route attachment itself is in `httproute.rs`.

use super::builder::ModelBuilder;
use super::refs::Resolver;
use super::{httproute, Diagnostics, Options};
use crate::k8s::gw::types::{
    GatewayListenersAllowedRoutesNamespacesFrom as From,
    GatewayListenersAllowedRoutesNamespacesSelector as Selector,
};
use crate::k8s::gw::{Gateway, GatewayClass};
use crate::k8s::GATEWAY_GROUP;
use crate::model::{HostPattern, Protocol};
use crate::source::{Input, ObjectRef};
use std::collections::BTreeMap;

/// One listener of one of our Gateways, as routes see it.
#[derive(Debug)]
pub(crate) struct GatewayListener<'a> {
    /// Gateway namespace.
    pub gateway_ns: &'a str,
    /// Gateway name.
    pub gateway_name: &'a str,
    /// Listener name (`sectionName` in parentRefs).
    pub name: &'a str,
    /// Listener port.
    pub port: u16,
    /// Hostname the listener is restricted to (`Any` when unset).
    pub hostname: HostPattern,
    /// Which namespaces may attach routes.
    pub from: AllowedNamespaces<'a>,
    /// Route kinds (group, kind) that may attach.
    pub kinds: Vec<(String, String)>,
}

/// `allowedRoutes.namespaces`.
#[derive(Debug)]
pub(crate) enum AllowedNamespaces<'a> {
    Same,
    All,
    Selector(&'a Selector),
}

impl GatewayListener<'_> {
    /// May a route of `kind` in namespace `route_ns` attach here?
    pub(crate) fn allows(&self, kind: (&str, &str), route_ns: &str, refs: &Resolver<'_>) -> bool {
        let kind_ok = self.kinds.iter().any(|(g, k)| g == kind.0 && k == kind.1);
        let ns_ok = match self.from {
            AllowedNamespaces::Same => route_ns == self.gateway_ns,
            AllowedNamespaces::All => true,
            AllowedNamespaces::Selector(sel) => {
                selector_matches(sel, &refs.namespace_labels(route_ns))
            }
        };
        kind_ok && ns_ok
    }
}

/// Kubernetes label selector semantics: every matchLabels pair and every expression must hold.
fn selector_matches(sel: &Selector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or(&[]);
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

fn class_is_ours(class: &GatewayClass, opts: &Options) -> bool {
    class.spec.controller_name == opts.gateway_controller
}

/// Our Gateways: those whose `gatewayClassName` names a GatewayClass of ours.
pub(crate) fn our_gateways<'a>(input: &'a Input, opts: &Options) -> Vec<&'a Gateway> {
    input
        .gateways
        .iter()
        .filter(|g| {
            input.gateway_classes.iter().any(|c| {
                c.metadata.name.as_deref() == Some(g.spec.gateway_class_name.as_str())
                    && class_is_ours(c, opts)
            })
        })
        .map(|g| g.as_ref())
        .collect()
}

pub(crate) fn translate(
    input: &Input,
    opts: &Options,
    refs: &Resolver<'_>,
    model: &mut ModelBuilder,
    diags: &mut Diagnostics,
) {
    let mut listeners = Vec::new();
    for gw in our_gateways(input, opts) {
        listeners.extend(gateway_listeners(gw, model, diags));
    }
    httproute::translate(input, &listeners, refs, model, diags);
}

/// The usable listeners of one Gateway; unusable ones are reported.
fn gateway_listeners<'a>(
    gw: &'a Gateway,
    model: &mut ModelBuilder,
    diags: &mut Diagnostics,
) -> Vec<GatewayListener<'a>> {
    let object = ObjectRef::new("Gateway", &gw.metadata);
    let ns = gw.metadata.namespace.as_deref().unwrap_or("default");
    let name = gw.metadata.name.as_deref().unwrap_or("");
    let mut out = Vec::new();
    for (i, l) in gw.spec.listeners.iter().enumerate() {
        let field = format!("spec.listeners[{i}] ({})", l.name);
        let Ok(port) = u16::try_from(l.port) else {
            diags.error(&object, format!("{field}: port {} is out of range", l.port));
            continue;
        };
        if port == 0 {
            diags.error(&object, format!("{field}: port 0 is not allowed"));
            continue;
        }
        let protocol = match l.protocol.as_str() {
            "HTTP" => Protocol::Http,
            other => {
                diags.warning(
                    &object,
                    format!("{field}: protocol {other} is not supported yet; listener skipped"),
                );
                continue;
            }
        };
        let hostname = match l.hostname.as_deref() {
            None | Some("") => HostPattern::Any,
            Some(h) => match HostPattern::gateway(h) {
                Ok(p) => p,
                Err(e) => {
                    diags.error(&object, format!("{field}.hostname: {e}; listener skipped"));
                    continue;
                }
            },
        };
        if let Err(existing) = model.ensure_listener(port, protocol) {
            diags.error(
                &object,
                format!(
                    "{field}: port {port} already serves {existing:?}; a port serves one protocol; listener skipped"
                ),
            );
            continue;
        }
        let allowed = l.allowed_routes.as_ref();
        let from = match allowed
            .and_then(|a| a.namespaces.as_ref())
            .map(|n| (n.from.as_ref(), n.selector.as_ref()))
        {
            None | Some((None, _)) | Some((Some(From::Same), _)) => AllowedNamespaces::Same,
            Some((Some(From::All), _)) => AllowedNamespaces::All,
            Some((Some(From::Selector), Some(sel))) => AllowedNamespaces::Selector(sel),
            Some((Some(From::Selector), None)) => {
                diags.error(
                    &object,
                    format!("{field}.allowedRoutes.namespaces: from Selector needs a selector; no routes may attach"),
                );
                continue;
            }
        };
        let supported = supported_kinds(protocol);
        let kinds = match allowed.and_then(|a| a.kinds.as_ref()) {
            None => supported.clone(),
            Some(k) if k.is_empty() => supported.clone(),
            Some(kinds) => {
                let mut ok = Vec::new();
                for k in kinds {
                    let group = k.group.clone().unwrap_or_else(|| GATEWAY_GROUP.to_string());
                    let pair = (group, k.kind.clone());
                    if supported.contains(&pair) {
                        ok.push(pair);
                    } else {
                        diags.error(
                            &object,
                            format!(
                                "{field}.allowedRoutes.kinds: {}/{} cannot attach to a listener of protocol {}",
                                pair.0, pair.1, l.protocol
                            ),
                        );
                    }
                }
                ok
            }
        };
        out.push(GatewayListener {
            gateway_ns: ns,
            gateway_name: name,
            name: &l.name,
            port,
            hostname,
            from,
            kinds,
        });
    }
    out
}

/// The route kinds a listener of this protocol accepts.
fn supported_kinds(protocol: Protocol) -> Vec<(String, String)> {
    match protocol {
        Protocol::Http => vec![(GATEWAY_GROUP.to_string(), "HTTPRoute".to_string())],
    }
}
