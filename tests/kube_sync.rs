//! Kubernetes mode against the fake API server: the real binary, watching, translating and serving; echo backends
//! on loopback. Initial sync and readiness, changes of every kind reaching the routing table, EndpointSlice
//! churn, Secret rotation under a live listener, watch streams cut and resumed, 410 relists, API errors, Gateway
//! API CRDs installed at run time.

mod common;
mod kube;

use anyhow::{Context, Result};
use common::{certs, echo, free_port};
use kube::{endpoint_slice, service, service_with_endpoints, FakeApiServer, KubeProxy, CLASSES};
use std::time::Duration;

fn shop(http: u16) -> String {
    format!(
        "apiVersion: v1
kind: Namespace
metadata: {{name: shop, labels: {{team: shop}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: shop, namespace: shop}}
spec:
  rules:
  - host: shop.example.com
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{name: http}}}}}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: public, namespace: shop}}
spec:
  gatewayClassName: portcullis
  listeners:
  - {{name: http, port: {http}, protocol: HTTP}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: api, namespace: shop}}
spec:
  parentRefs: [{{name: public}}]
  hostnames: [shop.example.com]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /api}}}}]
    backendRefs: [{{name: api, port: 80}}]
---
"
    )
}

/// Nothing is published before every kind has listed: while HTTPRoutes cannot be listed, `/readyz` stays 503;
/// the first table served already has the HTTPRoute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_sync_waits_for_every_kind() -> Result<()> {
    let web = echo("web-1", "shop").await?;
    let api = echo("api-1", "shop").await?;
    let fake = FakeApiServer::start(true);
    fake.apply_yaml(CLASSES);
    let http = free_port();
    fake.apply_yaml(&shop(http));
    fake.apply_yaml(&service_with_endpoints(
        "shop",
        "web",
        &[web.http_addr().port()],
    ));
    fake.apply_yaml(&service_with_endpoints(
        "shop",
        "api",
        &[api.http_addr().port()],
    ));
    fake.set_failing_resource(Some("httproutes"));

    let mut p = KubeProxy::spawn(&fake.kubeconfig(None), http, &[])?;
    p.wait_for(Duration::from_secs(10), || p.readyz().is_some())?;
    // Wait until the source has listed other kinds and tried (and failed) to list HTTPRoutes twice, which gives a
    // source that would publish a partial world the time to do it; then no round may have run.
    p.wait_for(Duration::from_secs(20), || {
        lists_of(&fake, "httproutes") >= 2
            && ["ingresses", "services", "endpointslices", "gateways"]
                .iter()
                .all(|k| lists_of(&fake, k) >= 1)
    })
    .context("the source never listed the other kinds and retried HTTPRoutes")?;
    assert_eq!(
        p.rounds()?,
        common::Rounds::default(),
        "a configuration round ran before HTTPRoutes were listed"
    );
    assert_eq!(p.readyz(), Some(503), "ready before HTTPRoutes listed");
    fake.set_failing_resource(None);
    p.wait_ready(Duration::from_secs(30))?;
    assert!(p.rounds()?.rounds >= 1, "ready without a round");
    // The first published table has both APIs.
    let r = p.get("shop.example.com", "/api/orders")?;
    assert_eq!(
        (r.status, r.pod()),
        (200, "api-1".to_string()),
        "{}",
        r.text()
    );
    let r = p.get("shop.example.com", "/")?;
    assert_eq!((r.status, r.pod()), (200, "web-1".to_string()));
    let log = p.log_text();
    assert!(log.contains("initial sync complete"), "{log}");
    Ok(())
}

/// An Ingress, a Service and its EndpointSlice: added, modified, deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_service_endpointslice_changes() -> Result<()> {
    let web = echo("web-1", "shop").await?;
    let web2 = echo("web-2", "shop").await?;
    let fake = FakeApiServer::start(true);
    fake.apply_yaml(CLASSES);
    let http = free_port();
    let p = KubeProxy::start(&fake.kubeconfig(None), http, &[])?;
    p.wait_for_status("shop.example.com", "/", 404)?;

    fake.apply_yaml(&shop(http));
    // Services missing: an Ingress backend answers 503, an HTTPRoute backendRef 500 (as the specs ask).
    p.wait_for_status("shop.example.com", "/", 503)?;
    p.wait_for_status("shop.example.com", "/api", 500)?;
    fake.apply_yaml(&service("shop", "api"));
    p.wait_for_status("shop.example.com", "/api", 503)?;
    fake.apply_yaml(&service("shop", "web"));
    fake.apply_yaml(&endpoint_slice("shop", "web", &[web.http_addr().port()]));
    p.wait_for_pod("shop.example.com", "/", "web-1")?;
    // EndpointSlice modified: another backend.
    fake.apply_yaml(&endpoint_slice("shop", "web", &[web2.http_addr().port()]));
    p.wait_for_pod("shop.example.com", "/", "web-2")?;
    // EndpointSlice deleted: no endpoints.
    assert!(fake.delete("EndpointSlice", Some("shop"), "web-slice"));
    p.wait_for_status("shop.example.com", "/", 503)?;
    fake.apply_yaml(&endpoint_slice("shop", "web", &[web.http_addr().port()]));
    p.wait_for_pod("shop.example.com", "/", "web-1")?;
    // Ingress modified: another host.
    fake.apply_yaml(
        "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop, namespace: shop}
spec:
  rules:
  - host: moved.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
",
    );
    p.wait_for_pod("moved.example.com", "/", "web-1")?;
    p.wait_for_status("shop.example.com", "/", 404)?;
    // Service deleted.
    assert!(fake.delete("Service", Some("shop"), "web"));
    p.wait_for_status("moved.example.com", "/", 503)?;
    // Ingress deleted.
    assert!(fake.delete("Ingress", Some("shop"), "shop"));
    p.wait_for_status("moved.example.com", "/", 404)?;
    Ok(())
}

// ---- library level: every kind reaches the Input ---------------------------------------------------------------

use portcullis::control::Control;
use portcullis::snapshot::Store;
use portcullis::source::kube::status::{Publish, Round};
use portcullis::source::kube::{KubeSource, Settings};
use portcullis::source::{HasMeta, Input};
use portcullis::translate::Options;
use std::sync::Arc;
use tokio::sync::watch;

fn settings(kubeconfig: std::path::PathBuf) -> Settings {
    Settings {
        kubeconfig: Some(kubeconfig),
        namespace: None,
        watch_namespaces: Vec::new(),
        leader_elect: false,
        publish: Publish::None,
        discovery_interval: Duration::from_millis(500),
        lease: Default::default(),
        ingress_controller: portcullis::translate::INGRESS_CONTROLLER.into(),
        gateway_controller: portcullis::translate::GATEWAY_CONTROLLER.into(),
        nginx_config_map: None,
    }
}

/// `(namespace/name, labels.rev)` of every object of `kind` in `input`.
fn objects(input: &Input, kind: &str) -> Vec<(String, String)> {
    fn list<K: HasMeta>(v: &[Arc<K>]) -> Vec<(String, String)> {
        v.iter()
            .map(|o| {
                let m = o.meta();
                let key = format!(
                    "{}/{}",
                    m.namespace.as_deref().unwrap_or(""),
                    m.name.as_deref().unwrap_or("")
                );
                let rev = m
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("rev").cloned())
                    .unwrap_or_default();
                (key, rev)
            })
            .collect()
    }
    match kind {
        "Namespace" => list(&input.namespaces),
        "Service" => list(&input.services),
        "EndpointSlice" => list(&input.endpoint_slices),
        "Secret" => list(&input.secrets),
        "ConfigMap" => list(&input.config_maps),
        "IngressClass" => list(&input.ingress_classes),
        "Ingress" => list(&input.ingresses),
        "GatewayClass" => list(&input.gateway_classes),
        "Gateway" => list(&input.gateways),
        "HTTPRoute" => list(&input.http_routes),
        "GRPCRoute" => list(&input.grpc_routes),
        "TLSRoute" => list(&input.tls_routes),
        "TCPRoute" => list(&input.tcp_routes),
        "UDPRoute" => list(&input.udp_routes),
        "ReferenceGrant" => list(&input.reference_grants),
        "ListenerSet" => list(&input.listener_sets),
        "BackendTLSPolicy" => list(&input.backend_tls_policies),
        other => panic!("unknown kind {other}"),
    }
}

/// A minimal valid object of `kind` named `name` (in namespace `kinds` when namespaced) with label `rev`.
fn minimal(kind: &str, name: &str, rev: &str) -> String {
    let (api, namespaced, body) = match kind {
        "Namespace" => ("v1", false, ""),
        "Service" => ("v1", true, "spec: {ports: [{port: 80}]}"),
        "EndpointSlice" => ("discovery.k8s.io/v1", true, "addressType: IPv4\nendpoints: []"),
        "Secret" => ("v1", true, "type: kubernetes.io/tls\nstringData: {tls.crt: x, tls.key: y}"),
        "ConfigMap" => ("v1", true, "data: {ca.crt: x}"),
        "IngressClass" => ("networking.k8s.io/v1", false, "spec: {controller: example.com/other}"),
        "Ingress" => ("networking.k8s.io/v1", true, "spec: {}"),
        "GatewayClass" => ("gateway.networking.k8s.io/v1", false, "spec: {controllerName: example.com/other}"),
        "Gateway" => ("gateway.networking.k8s.io/v1", true,
            "spec: {gatewayClassName: other, listeners: [{name: h, port: 80, protocol: HTTP}]}"),
        "HTTPRoute" => ("gateway.networking.k8s.io/v1", true, "spec: {}"),
        "GRPCRoute" => ("gateway.networking.k8s.io/v1", true, "spec: {}"),
        "TLSRoute" => ("gateway.networking.k8s.io/v1", true,
            "spec: {hostnames: [a.example.com], rules: [{backendRefs: [{name: s, port: 443}]}]}"),
        "TCPRoute" => ("gateway.networking.k8s.io/v1alpha2", true, "spec: {rules: [{backendRefs: [{name: s, port: 80}]}]}"),
        "UDPRoute" => ("gateway.networking.k8s.io/v1alpha2", true, "spec: {rules: [{backendRefs: [{name: s, port: 53}]}]}"),
        "ReferenceGrant" => ("gateway.networking.k8s.io/v1", true,
            "spec: {from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: a}], to: [{group: \"\", kind: Service}]}"),
        "ListenerSet" => ("gateway.networking.k8s.io/v1", true,
            "spec: {parentRef: {name: gw}, listeners: [{name: l, port: 81, protocol: HTTP}]}"),
        "BackendTLSPolicy" => ("gateway.networking.k8s.io/v1", true,
            "spec: {targetRefs: [{group: \"\", kind: Service, name: s}], validation: {caCertificateRefs: [{group: \"\", kind: ConfigMap, name: ca}], hostname: s.example.com}}"),
        other => panic!("unknown kind {other}"),
    };
    let ns = if namespaced { ", namespace: kinds" } else { "" };
    format!("apiVersion: {api}\nkind: {kind}\nmetadata: {{name: {name}{ns}, labels: {{rev: \"{rev}\"}}}}\n{body}\n")
}

/// Waits until the latest round's input satisfies `f`.
async fn wait_round(
    rounds: &mut watch::Receiver<Option<Arc<Round>>>,
    what: &str,
    f: impl Fn(&Input) -> bool,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(r) = rounds.borrow_and_update().clone() {
            if f(&r.input) {
                return Ok(());
            }
        }
        match tokio::time::timeout_at(deadline, rounds.changed()).await {
            Ok(Ok(())) => {}
            _ => anyhow::bail!("no round where {what}"),
        }
    }
}

/// Every kind added, modified and deleted reaches the `Input` the translator reads, through the real source
/// code (kube-rs watchers and reflector stores) and the fake API server. ConfigMaps are watched only while a
/// BackendTLSPolicy references them; only TLS Secrets are read; an object that does not read into its type is
/// reported and its last good version keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_reaches_the_input() -> Result<()> {
    let fake = FakeApiServer::start(true);
    let source = KubeSource::connect(settings(fake.kubeconfig(None))).await?;
    let mut rounds = source.rounds();
    let store = Arc::new(Store::new());
    let control = Control::new(store.clone(), Options::default());
    let diagnostics = control.diagnostics();
    let statuses = control.statuses();
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(source.run(
        control,
        Arc::new(move || (*statuses.load_full()).clone()),
        stop_rx,
    ));
    wait_round(&mut rounds, "the initial sync completed", |_| true).await?;
    assert!(store.is_ready());

    let kinds = [
        "Namespace",
        "Service",
        "EndpointSlice",
        "Secret",
        "IngressClass",
        "Ingress",
        "GatewayClass",
        "Gateway",
        "HTTPRoute",
        "GRPCRoute",
        "TLSRoute",
        "TCPRoute",
        "UDPRoute",
        "ReferenceGrant",
        "ListenerSet",
        "BackendTLSPolicy",
    ];
    for kind in kinds {
        let ns = if ["Namespace", "IngressClass", "GatewayClass"].contains(&kind) {
            ""
        } else {
            "kinds"
        };
        let key = format!("{ns}/x");
        fake.apply_yaml(&minimal(kind, "x", "1"));
        wait_round(&mut rounds, &format!("{kind} x added"), |i| {
            objects(i, kind).contains(&(key.clone(), "1".into()))
        })
        .await?;
        fake.apply_yaml(&minimal(kind, "x", "2"));
        wait_round(&mut rounds, &format!("{kind} x modified"), |i| {
            objects(i, kind) == vec![(key.clone(), "2".into())]
        })
        .await?;
        if kind == "BackendTLSPolicy" {
            // The policy references ConfigMap kinds/ca: it is watched now.
            fake.apply_yaml(&minimal("ConfigMap", "ca", "1"));
            fake.apply_yaml(&minimal("ConfigMap", "unreferenced", "1"));
            wait_round(&mut rounds, "ConfigMap ca read", |i| {
                objects(i, "ConfigMap") == vec![("kinds/ca".into(), "1".into())]
            })
            .await?;
            fake.apply_yaml(&minimal("ConfigMap", "ca", "2"));
            wait_round(&mut rounds, "ConfigMap ca modified", |i| {
                objects(i, "ConfigMap") == vec![("kinds/ca".into(), "2".into())]
            })
            .await?;
        }
        assert!(fake.delete(kind, (!ns.is_empty()).then_some(ns), "x"));
        wait_round(&mut rounds, &format!("{kind} x deleted"), |i| {
            objects(i, kind).is_empty()
        })
        .await?;
        if kind == "BackendTLSPolicy" {
            wait_round(
                &mut rounds,
                "ConfigMap ca dropped with its last reference",
                |i| objects(i, "ConfigMap").is_empty(),
            )
            .await?;
        }
    }

    // Only TLS Secrets are read.
    fake.apply_yaml(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: opaque, namespace: kinds}\ntype: Opaque\nstringData: {password: hunter2}\n",
    );
    fake.apply_yaml(&minimal("Secret", "tls", "1"));
    wait_round(&mut rounds, "TLS Secret read", |i| {
        !objects(i, "Secret").is_empty()
    })
    .await?;
    assert_eq!(
        objects(&rounds.borrow().clone().expect("round").input, "Secret"),
        vec![("kinds/tls".to_string(), "1".to_string())]
    );

    // An object that does not read: reported, its last good version keeps serving.
    fake.apply_yaml(&minimal("HTTPRoute", "r", "1"));
    wait_round(&mut rounds, "HTTPRoute r read", |i| {
        objects(i, "HTTPRoute") == vec![("kinds/r".into(), "1".into())]
    })
    .await?;
    fake.apply_yaml(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: kinds, labels: {rev: \"2\"}}\nspec:\n  rules: [{matches: [{path: {type: Sideways, value: /}}]}]\n",
    );
    kube::wait_for(Duration::from_secs(10), || {
        diagnostics
            .load()
            .iter()
            .any(|d| d.contains("HTTPRoute kinds/r") && d.contains("cannot be read"))
    })?;
    let input = rounds.borrow().clone().expect("round").input.clone();
    assert_eq!(
        objects(&input, "HTTPRoute"),
        vec![("kinds/r".into(), "1".into())]
    );
    let d = diagnostics.load();
    let line = d
        .iter()
        .find(|d| d.contains("HTTPRoute kinds/r"))
        .expect("diagnostic");
    assert!(
        line.contains("spec.rules[0].matches[0].path.type"),
        "{line}"
    );
    assert!(line.contains("last good version keeps serving"), "{line}");

    stop_tx.send(true)?;
    tokio::time::timeout(Duration::from_secs(5), task).await??;
    kube::rbac::assert_within(&fake, "cluster", None);
    Ok(())
}

// ---- Gateway API kinds through traffic ----------------------------------------------------------------------

/// GatewayClass, Gateway, HTTPRoute, Namespace (labels for allowedRoutes), ReferenceGrant, IngressClass and
/// ListenerSet: added, modified and deleted while the proxy serves, each change visible in the traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_changes_reach_the_table() -> Result<()> {
    let api = echo("api-1", "shop").await?;
    let web = echo("web-1", "shop").await?;
    let fake = FakeApiServer::start(true);
    let http = free_port();
    let ls_port = free_port();
    fake.apply_yaml(CLASSES);
    fake.apply_yaml(&service_with_endpoints(
        "shop",
        "api",
        &[api.http_addr().port()],
    ));
    fake.apply_yaml(&service_with_endpoints(
        "shop",
        "web",
        &[web.http_addr().port()],
    ));
    fake.apply_yaml(&format!(
        "apiVersion: v1
kind: Namespace
metadata: {{name: shop, labels: {{team: shop}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: public, namespace: shop}}
spec:
  gatewayClassName: portcullis
  allowedListeners: {{namespaces: {{from: Same}}}}
  listeners:
  - name: http
    port: {http}
    protocol: HTTP
    allowedRoutes: {{namespaces: {{from: Selector, selector: {{matchLabels: {{team: shop}}}}}}}}
---
"
    ));
    let p = KubeProxy::start(&fake.kubeconfig(None), http, &[])?;
    let route = |ns: &str, path: &str, backend_ns: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: api, namespace: {ns}}}
spec:
  parentRefs: [{{name: public, namespace: shop}}]
  hostnames: [gw.example.com]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]
    backendRefs: [{{name: api, namespace: {backend_ns}, port: 80}}]
"
        )
    };
    // HTTPRoute added, modified, deleted.
    fake.apply_yaml(&route("shop", "/v1", "shop"));
    p.wait_for_pod("gw.example.com", "/v1/x", "api-1")?;
    fake.apply_yaml(&route("shop", "/v2", "shop"));
    p.wait_for_pod("gw.example.com", "/v2/x", "api-1")?;
    p.wait_for_status("gw.example.com", "/v1/x", 404)?;
    // GatewayClass: handed to another controller, back, deleted, added.
    let class = |controller: &str| {
        format!("apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: portcullis}}\nspec: {{controllerName: {controller}}}\n")
    };
    fake.apply_yaml(&class("example.com/other"));
    p.wait_for_status("gw.example.com", "/v2/x", 404)?;
    fake.apply_yaml(&class("portcullis.dev/gateway-controller"));
    p.wait_for_pod("gw.example.com", "/v2/x", "api-1")?;
    assert!(fake.delete("GatewayClass", None, "portcullis"));
    p.wait_for_status("gw.example.com", "/v2/x", 404)?;
    fake.apply_yaml(&class("portcullis.dev/gateway-controller"));
    p.wait_for_pod("gw.example.com", "/v2/x", "api-1")?;
    // Gateway: a listener hostname that excludes the route, then deleted, then back.
    let mut gw = fake
        .get("Gateway", Some("shop"), "public")
        .expect("gateway");
    gw["spec"]["listeners"][0]["hostname"] = serde_json::json!("other.example.com");
    fake.apply(gw.clone());
    p.wait_for_status("gw.example.com", "/v2/x", 404)?;
    gw["spec"]["listeners"][0]
        .as_object_mut()
        .expect("listener")
        .remove("hostname");
    fake.apply(gw.clone());
    p.wait_for_pod("gw.example.com", "/v2/x", "api-1")?;
    // Namespace labels decide allowedRoutes: a route in namespace guest attaches once guest has the label.
    assert!(fake.delete("HTTPRoute", Some("shop"), "api"));
    p.wait_for_status("gw.example.com", "/v2/x", 404)?;
    let before = p.rounds()?;
    fake.apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata: {name: guest}\n");
    fake.apply_yaml(&route("guest", "/v2", "shop"));
    // A round that read both (the Namespace and the route in it), and the route is still not served.
    p.wait_round("the guest Namespace and route were read", |r| {
        r.objects >= before.objects + 2
    })?;
    assert_eq!(p.get("gw.example.com", "/v2/x")?.status, 404);
    fake.apply_yaml(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: guest, labels: {team: shop}}\n",
    );
    // Attached now, but its backend is in another namespace without a ReferenceGrant: 500.
    p.wait_for_status("gw.example.com", "/v2/x", 500)?;
    let grant = "apiVersion: gateway.networking.k8s.io/v1
kind: ReferenceGrant
metadata: {name: guest-to-shop, namespace: shop}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: guest}]
  to: [{group: \"\", kind: Service, name: api}]
";
    fake.apply_yaml(grant);
    p.wait_for_pod("gw.example.com", "/v2/x", "api-1")?;
    // ReferenceGrant modified to another Service, then restored, then deleted.
    fake.apply_yaml(&grant.replace("name: api}", "name: web}"));
    p.wait_for_status("gw.example.com", "/v2/x", 500)?;
    fake.apply_yaml(grant);
    p.wait_for_pod("gw.example.com", "/v2/x", "api-1")?;
    assert!(fake.delete("ReferenceGrant", Some("shop"), "guest-to-shop"));
    p.wait_for_status("gw.example.com", "/v2/x", 500)?;
    // The namespace deleted: its labels are gone, the route detaches.
    assert!(fake.delete("Namespace", None, "guest"));
    p.wait_for_status("gw.example.com", "/v2/x", 404)?;

    // IngressClass: an Ingress asking for class "late" is served once such a class of ours exists.
    let before = p.rounds()?;
    fake.apply_yaml(
        "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: late, namespace: shop}
spec:
  ingressClassName: late
  rules:
  - host: late.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
",
    );
    p.wait_round("the Ingress late was read", |r| r.objects > before.objects)?;
    assert_eq!(p.get("late.example.com", "/")?.status, 404);
    let ingress_class = |controller: &str| {
        format!("apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {{name: late}}\nspec: {{controller: {controller}}}\n")
    };
    fake.apply_yaml(&ingress_class("portcullis.dev/ingress-controller"));
    p.wait_for_pod("late.example.com", "/", "web-1")?;
    fake.apply_yaml(&ingress_class("example.com/other"));
    p.wait_for_status("late.example.com", "/", 404)?;
    fake.apply_yaml(&ingress_class("portcullis.dev/ingress-controller"));
    p.wait_for_pod("late.example.com", "/", "web-1")?;
    assert!(fake.delete("IngressClass", None, "late"));
    p.wait_for_status("late.example.com", "/", 404)?;

    // ListenerSet: a listener on another port, added to the Gateway at run time, then removed.
    let listener_set = |port: u16| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1
kind: ListenerSet
metadata: {{name: extra, namespace: shop}}
spec:
  parentRef: {{name: public}}
  listeners:
  - {{name: extra, port: {port}, protocol: HTTP}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: extra, namespace: shop}}
spec:
  parentRefs: [{{kind: ListenerSet, name: extra}}]
  rules:
  - backendRefs: [{{name: web, port: 80}}]
"
        )
    };
    fake.apply_yaml(&listener_set(ls_port));
    p.wait_for(Duration::from_secs(10), || {
        common::get(ls_port, "any.example.com", "/", &[]).is_ok_and(|r| r.pod() == "web-1")
    })?;
    let ls_port2 = free_port();
    fake.apply_yaml(&listener_set(ls_port2));
    p.wait_for(Duration::from_secs(10), || {
        common::get(ls_port2, "any.example.com", "/", &[]).is_ok_and(|r| r.pod() == "web-1")
    })?;
    assert!(fake.delete("ListenerSet", Some("shop"), "extra"));
    p.wait_for(Duration::from_secs(10), || {
        common::get(ls_port2, "any.example.com", "/", &[]).is_err()
    })?;
    Ok(())
}

/// Many EndpointSlice updates in a burst: the debounce coalesces them, and the table ends on the last one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpointslice_churn() -> Result<()> {
    let a = echo("pod-a", "shop").await?;
    let b = echo("pod-b", "shop").await?;
    let fake = FakeApiServer::start(true);
    let http = free_port();
    fake.apply_yaml(CLASSES);
    fake.apply_yaml(&shop(http));
    fake.apply_yaml(&service_with_endpoints(
        "shop",
        "web",
        &[a.http_addr().port()],
    ));
    fake.apply_yaml(&service_with_endpoints(
        "shop",
        "api",
        &[a.http_addr().port()],
    ));
    let p = KubeProxy::start(&fake.kubeconfig(None), http, &[])?;
    p.wait_for_pod("shop.example.com", "/", "pod-a")?;
    let ports = [a.http_addr().port(), b.http_addr().port()];
    let mut failures = Vec::new();
    for i in 0..200 {
        // Flip between a and b, and sometimes between one and two slices.
        let port = ports[i % 2];
        fake.apply_yaml(&endpoint_slice("shop", "web", &[port]));
        if i % 10 == 0 {
            let r = p.get("shop.example.com", "/")?;
            if r.status != 200 {
                failures.push(r.status);
            }
        }
    }
    fake.apply_yaml(&endpoint_slice("shop", "web", &[b.http_addr().port()]));
    let took = p.wait_for_pod("shop.example.com", "/", "pod-b")?;
    assert!(
        failures.is_empty(),
        "requests failed during churn: {failures:?}"
    );
    // Coalesced: far fewer publishes than updates.
    let publishes = p.log_text().matches("configuration published").count();
    assert!(publishes < 100, "{publishes} publishes for 201 updates");
    println!("churn settled {took:?} after the last update; {publishes} publishes");
    Ok(())
}

// ---- TLS Secret rotation --------------------------------------------------------------------------------------

/// A TLS handshake with `sni` on `port` trusting `ca_pem`; returns the DER of the certificate the server showed.
fn server_certificate(port: u16, sni: &str, ca_pem: &str) -> Result<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use std::io::Write;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from(sni.to_string())?)?;
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", port))?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    tls.flush()?;
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(tls.sock)?;
    }
    tls.conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .ok_or_else(|| anyhow::anyhow!("no server certificate"))
}

/// A Secret rotated under a live HTTPS listener: new handshakes get the new certificate, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_rotated_under_a_live_listener() -> Result<()> {
    let web = echo("web-1", "shop").await?;
    let ca = certs::ca("kube test CA")?;
    let first = certs::leaf(&ca, &["secure.example.com"])?;
    let second = certs::leaf(&ca, &["secure.example.com"])?;
    let (first_der, second_der) = (certs::der(&first.0)?, certs::der(&second.0)?);
    let fake = FakeApiServer::start(true);
    let http = free_port();
    let https = free_port();
    fake.apply_yaml(CLASSES);
    fake.apply_yaml(&service_with_endpoints(
        "shop",
        "web",
        &[web.http_addr().port()],
    ));
    fake.apply_yaml(&certs::tls_secret("shop", "secure-cert", &first));
    fake.apply_yaml(&format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: secure, namespace: shop}}
spec:
  gatewayClassName: portcullis
  listeners:
  - name: https
    port: {https}
    protocol: HTTPS
    hostname: secure.example.com
    tls: {{mode: Terminate, certificateRefs: [{{name: secure-cert}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: secure, namespace: shop}}
spec:
  parentRefs: [{{name: secure}}]
  rules:
  - backendRefs: [{{name: web, port: 80}}]
"
    ));
    let p = KubeProxy::start(&fake.kubeconfig(None), http, &[])?;
    p.wait_for(Duration::from_secs(10), || {
        server_certificate(https, "secure.example.com", &ca.pem).is_ok_and(|c| c == first_der)
    })?;
    // Rotate: same Secret, new certificate and key.
    fake.apply_yaml(&certs::tls_secret("shop", "secure-cert", &second));
    let took = p.wait_for(Duration::from_secs(10), || {
        server_certificate(https, "secure.example.com", &ca.pem).is_ok_and(|c| c == second_der)
    })?;
    println!("rotated certificate served after {took:?}");
    // The listener never went away.
    let listeners = p.admin_json("/listeners")?;
    assert!(
        listeners.to_string().contains(&https.to_string()),
        "{listeners}"
    );
    Ok(())
}

// ---- failures of the watch ------------------------------------------------------------------------------------

fn lists_of(fake: &FakeApiServer, plural: &str) -> usize {
    fake.requests()
        .iter()
        .filter(|r| {
            r.method == "GET"
                && r.path.ends_with(&format!("/{plural}"))
                && !r.query.contains("watch=")
        })
        .count()
}

fn route_to(path: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: api, namespace: shop}}
spec:
  parentRefs: [{{name: public}}]
  hostnames: [shop.example.com]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]
    backendRefs: [{{name: api, port: 80}}]
"
    )
}

/// Watch streams cut mid-stream (and ended as a server timeout would) are resumed from their resourceVersion
/// without a relist; a history compacted away answers 410 Gone, which forces a relist that sees what the
/// watch missed; while the API server fails, the last good table keeps serving, and changes flow again after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_cut_resumed_relisted_and_failing() -> Result<()> {
    let web = echo("web-1", "shop").await?;
    let api = echo("api-1", "shop").await?;
    let fake = FakeApiServer::start(true);
    let http = free_port();
    fake.apply_yaml(CLASSES);
    fake.apply_yaml(&shop(http));
    fake.apply_yaml(&service_with_endpoints(
        "shop",
        "web",
        &[web.http_addr().port()],
    ));
    fake.apply_yaml(&service_with_endpoints(
        "shop",
        "api",
        &[api.http_addr().port()],
    ));
    let p = KubeProxy::start(&fake.kubeconfig(None), http, &[])?;
    p.wait_for_pod("shop.example.com", "/api/x", "api-1")?;
    let watches = fake.active_watches();
    assert!(watches >= 16, "{watches} watches");

    // Cut abruptly: resumed by watch, no new list.
    let lists = lists_of(&fake, "httproutes");
    fake.cut_watches();
    fake.apply_yaml(&route_to("/cut"));
    p.wait_for_pod("shop.example.com", "/cut/x", "api-1")?;
    // Ended cleanly (server timeout): resumed too.
    fake.end_watches();
    fake.apply_yaml(&route_to("/ended"));
    p.wait_for_pod("shop.example.com", "/ended/x", "api-1")?;
    assert_eq!(lists_of(&fake, "httproutes"), lists, "relisted after a cut");
    p.wait_for(Duration::from_secs(10), || fake.active_watches() >= watches)?;

    // 410: changes the watch never announced (lost to compaction) are found by the relist.
    fake.apply_silently(serde_json::to_value(
        kube::fake_apiserver::yaml_documents(&route_to("/relisted")).remove(0),
    )?);
    assert!(fake.delete_silently("Ingress", Some("shop"), "shop"));
    // A change the watch does announce, so that a round runs after the silent ones: it reads one object more
    // (the Ingress deleted in silence must still be there), and the table still has the Ingress and the old
    // route.
    let before = p.rounds()?;
    fake.apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata: {name: announced}\n");
    p.wait_round(
        "the announced Namespace was read and the silently deleted Ingress was not missed",
        |r| r.rounds > before.rounds && r.objects == before.objects + 1,
    )?;
    assert_eq!(
        p.get("shop.example.com", "/")?.pod(),
        "web-1",
        "saw a silent change"
    );
    assert_eq!(
        p.get("shop.example.com", "/relisted/x")?.pod(),
        "web-1",
        "saw a silent change"
    );
    fake.compact();
    p.wait_for_pod("shop.example.com", "/relisted/x", "api-1")?;
    p.wait_for_status("shop.example.com", "/", 404)?;
    assert!(lists_of(&fake, "httproutes") > lists, "no relist after 410");

    // The API server fails: the table keeps serving and /readyz stays 200.
    fake.set_failing(true);
    fake.cut_watches();
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(p.get("shop.example.com", "/relisted/x")?.pod(), "api-1");
        assert_eq!(p.readyz(), Some(200));
    }
    assert!(p.log_text().contains("watch failed; retrying with backoff"));
    fake.set_failing(false);
    fake.apply_yaml(&route_to("/recovered"));
    let took = p.wait_for(Duration::from_secs(40), || {
        p.get("shop.example.com", "/recovered/x")
            .is_ok_and(|r| r.pod() == "api-1")
    })?;
    println!("changes flow again {took:?} after the API server recovered");
    kube::rbac::assert_within(&fake, "cluster", None);
    Ok(())
}

/// Without the Gateway API CRDs the proxy runs Ingress-only; installed later, they are watched without a
/// restart; removed, their objects stop being served while the Ingress keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_crds_installed_at_run_time() -> Result<()> {
    let web = echo("web-1", "shop").await?;
    let api = echo("api-1", "shop").await?;
    let fake = FakeApiServer::start(false);
    let http = free_port();
    fake.apply_yaml(
        "apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: portcullis
  annotations: {ingressclass.kubernetes.io/is-default-class: \"true\"}
spec: {controller: portcullis.dev/ingress-controller}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop, namespace: shop}
spec:
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {name: http}}}}
",
    );
    fake.apply_yaml(&service_with_endpoints(
        "shop",
        "web",
        &[web.http_addr().port()],
    ));
    fake.apply_yaml(&service_with_endpoints(
        "shop",
        "api",
        &[api.http_addr().port()],
    ));
    let p = KubeProxy::start(&fake.kubeconfig(None), http, &[])?;
    p.wait_for_pod("shop.example.com", "/", "web-1")?;
    assert!(
        p.log_text().contains("Gateway API CRDs are not installed"),
        "{}",
        p.log_text()
    );
    let crd_requests: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/httproutes"))
        .collect();
    assert!(
        crd_requests.is_empty(),
        "watched a CRD that is not installed: {crd_requests:?}"
    );

    fake.install_gateway_api();
    fake.apply_yaml(CLASSES);
    fake.apply_yaml(&shop(http));
    let took = p.wait_for_pod("shop.example.com", "/api/x", "api-1")?;
    println!("HTTPRoute served {took:?} after the CRDs were installed");
    assert_eq!(p.get("shop.example.com", "/")?.pod(), "web-1");

    fake.uninstall_gateway_api();
    p.wait_for_pod("shop.example.com", "/api/x", "web-1")?;
    p.wait_for(Duration::from_secs(5), || {
        p.log_text().contains("CRD no longer served")
    })?;
    assert_eq!(p.get("shop.example.com", "/")?.pod(), "web-1");
    kube::rbac::assert_within(&fake, "cluster", None);
    Ok(())
}

// ---- the same manifests in file mode and in kube mode -----------------------------------------------------------

/// The bundled examples (mixed Ingress + HTTPRoute on one port) loaded from files and through the API server give
/// the same model, the same status and the same answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_and_kube_modes_route_identically() -> Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut docs = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&root)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    for f in files {
        docs.extend(kube::fake_apiserver::yaml_documents(
            &std::fs::read_to_string(f)?,
        ));
    }
    // Echo backends for the EndpointSlices (pod = slice name); one creation time for all, as if applied at once,
    // and generation 1, as the API server sets it.
    let mut backends = Vec::new();
    for d in &mut docs {
        d["metadata"]["creationTimestamp"] = serde_json::json!("2024-05-01T10:00:00Z");
        d["metadata"]["generation"] = serde_json::json!(1);
        if d["kind"] == "EndpointSlice" {
            let name = d["metadata"]["name"].as_str().unwrap_or("").to_string();
            let e = echo(&name, "shop").await?;
            d["ports"][0]["port"] = serde_json::json!(e.http_addr().port());
            backends.push(e);
        }
    }
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("examples.yaml");
    let text: Vec<String> = docs
        .iter()
        .map(|d| serde_json::to_string(d).unwrap_or_default())
        .collect();
    std::fs::write(&file, text.join("\n---\n"))?;

    let fake = FakeApiServer::start(true);
    for d in &docs {
        fake.apply(d.clone());
    }
    let file_port = free_port();
    let kube_port = free_port();
    // The examples listen on port 80: an offset moves that to a free port.
    let file_mode =
        common::Proxy::start(&file, 80, &["--port-offset", &(file_port - 80).to_string()])?;
    let kube_mode = KubeProxy::start(
        &fake.kubeconfig(None),
        80,
        &["--port-offset", &(kube_port - 80).to_string()],
    )?;
    let strip_version = |mut v: serde_json::Value| {
        if let Some(o) = v.as_object_mut() {
            o.remove("version");
        }
        v
    };
    let file_config = strip_version(serde_json::from_slice(&file_mode.admin("/config")?.body)?);
    let kube_config = strip_version(kube_mode.admin_json("/config")?);
    assert_eq!(file_config, kube_config, "models differ");
    let file_status = strip_version(serde_json::from_slice(&file_mode.admin("/status")?.body)?);
    let kube_status = strip_version(kube_mode.admin_json("/status")?);
    assert_eq!(file_status, kube_status, "statuses differ");

    type Request<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);
    let requests: &[Request] = &[
        ("shop.example.com", "/", &[]),
        ("shop.example.com", "/api/orders", &[]),
        ("shop.example.com", "/api/v2/orders", &[]),
        ("shop.example.com", "/api/orders", &[("x-canary", "always")]),
        ("shop.example.com", "/old-shop/cart", &[]),
        ("eu.shop.example.com", "/", &[]),
        ("shop.example.com", "/status", &[]),
        ("shop.example.com", "/broken", &[]),
        ("nothing.example.org", "/", &[]),
    ];
    #[derive(Debug, PartialEq)]
    struct Answer {
        status: u16,
        deployment: String,
        location: Option<String>,
        served_by: Option<String>,
        api_version: Option<String>,
    }
    for (host, path, headers) in requests {
        let answer = |port: u16| -> Result<Answer> {
            let r = common::get(port, host, path, headers)?;
            // Round-robin over two pods of one Service is not part of the comparison: the Deployment is.
            let pod = r.pod();
            Ok(Answer {
                status: r.status,
                deployment: pod
                    .rsplit_once('-')
                    .map_or(pod.clone(), |(d, _)| d.to_string()),
                location: r.header("location").map(str::to_string),
                served_by: r.header("x-served-by").map(str::to_string),
                api_version: r.echoed_header("x-api-version"),
            })
        };
        let f = answer(file_port)?;
        let k = answer(kube_port)?;
        assert_eq!(f, k, "{host}{path} {headers:?}");
    }
    Ok(())
}
