//! Status written back by the real binary through the fake API server: Gateway API status (GatewayClass, Gateway
//! listeners with attachedRoutes and addresses, route parents with conditions and observedGeneration) and
//! Ingress `status.loadBalancer`; only what changed, only for our objects, keeping other controllers' entries;
//! and two instances electing one leader that writes, handing over when it vanishes.

mod common;
mod kube;

use anyhow::{Context, Result};
use common::free_port;
use kube::{service_with_endpoints, FakeApiServer, KubeProxy, CLASSES};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn world(http: u16) -> String {
    format!(
        "{CLASSES}apiVersion: v1
kind: Namespace
metadata: {{name: shop}}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {{name: theirs}}
spec: {{controller: example.com/ingress}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: shop, namespace: shop}}
spec:
  rules:
  - host: shop.example.com
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: theirs, namespace: shop}}
spec:
  ingressClassName: theirs
  rules:
  - host: theirs.example.com
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: theirs}}
spec: {{controllerName: example.com/gateway}}
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
kind: Gateway
metadata: {{name: other, namespace: shop}}
spec:
  gatewayClassName: theirs
  listeners:
  - {{name: http, port: 80, protocol: HTTP}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: api, namespace: shop}}
spec:
  parentRefs: [{{name: public}}, {{name: other}}]
  hostnames: [shop.example.com]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /api}}}}]
    backendRefs: [{{name: api, port: 80}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: theirs, namespace: shop}}
spec:
  parentRefs: [{{name: other}}]
  rules:
  - backendRefs: [{{name: api, port: 80}}]
---
{}{}",
        service_with_endpoints("shop", "web", &[1]),
        service_with_endpoints("shop", "api", &[1]),
    )
}

/// The entry of status `list` (`parents`) whose controllerName is `controller`.
fn entry<'a>(status: &'a Value, list: &str, controller: &str) -> Option<&'a Value> {
    status[list]
        .as_array()?
        .iter()
        .find(|p| p["controllerName"] == controller)
}

fn condition<'a>(conds: &'a Value, type_: &str) -> Option<&'a Value> {
    conds.as_array()?.iter().find(|c| c["type"] == type_)
}

const OURS: &str = "portcullis.dev/gateway-controller";
const THEIRS: &str = "example.com/gateway";

fn their_entry() -> Value {
    json!({
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "other"},
        "controllerName": THEIRS,
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "theirs",
                        "lastTransitionTime": "2021-01-01T00:00:00Z", "observedGeneration": 1}]
    })
}

fn wait(
    fake: &FakeApiServer,
    p: &KubeProxy,
    what: &str,
    f: impl Fn(&FakeApiServer) -> bool,
) -> Result<Duration> {
    p.wait_for(Duration::from_secs(15), || f(fake))
        .with_context(|| what.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_written_for_our_objects_only() -> Result<()> {
    let fake = FakeApiServer::start(true);
    let http = free_port();
    fake.apply_yaml(&world(http));
    // Another controller already wrote its entry on the shared route.
    fake.set_status(
        "HTTPRoute",
        Some("shop"),
        "api",
        json!({"parents": [their_entry()]}),
    );
    let p = KubeProxy::start(
        &fake.kubeconfig(None),
        http,
        &[
            "--namespace",
            "portcullis-system",
            "--publish-status-address",
            "192.0.2.10",
        ],
    )?;
    let route = |f: &FakeApiServer| f.get("HTTPRoute", Some("shop"), "api").unwrap_or_default();

    // GatewayClass, Gateway (listeners, attachedRoutes, addresses), route parents, Ingress load balancer.
    wait(&fake, &p, "GatewayClass Accepted", |f| {
        let gc = f
            .get("GatewayClass", None, "portcullis")
            .unwrap_or_default();
        condition(&gc["status"]["conditions"], "Accepted").is_some_and(|c| c["status"] == "True")
    })?;
    let gw_now = || {
        fake.get("Gateway", Some("shop"), "public")
            .unwrap_or_default()
    };
    wait(&fake, &p, "Gateway status", |f| {
        let gw = f.get("Gateway", Some("shop"), "public").unwrap_or_default();
        let st = &gw["status"];
        st["listeners"][0]["attachedRoutes"] == 1
            && st["addresses"] == json!([{"type": "IPAddress", "value": "192.0.2.10"}])
            && condition(&st["conditions"], "Programmed").is_some_and(|c| c["status"] == "True")
    })
    .with_context(|| format!("{:#}", gw_now()["status"]))?;
    wait(&fake, &p, "route parents", |f| {
        let r = route(f);
        entry(&r["status"], "parents", OURS).is_some_and(|e| {
            condition(&e["conditions"], "Accepted")
                .is_some_and(|c| c["status"] == "True" && c["observedGeneration"] == 1)
                && condition(&e["conditions"], "ResolvedRefs")
                    .is_some_and(|c| c["status"] == "True")
        })
    })?;
    wait(&fake, &p, "Ingress load balancer", |f| {
        let ing = f.get("Ingress", Some("shop"), "shop").unwrap_or_default();
        ing["status"]["loadBalancer"]["ingress"] == json!([{"ip": "192.0.2.10"}])
    })?;
    let r = route(&fake);
    assert_eq!(
        entry(&r["status"], "parents", THEIRS),
        Some(&their_entry()),
        "{r:#}"
    );
    let ours = entry(&r["status"], "parents", OURS).expect("our entry");
    assert_eq!(ours["parentRef"]["name"], "public", "{ours:#}");
    for c in ours["conditions"].as_array().expect("conditions") {
        assert!(
            c["lastTransitionTime"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z')),
            "{c}"
        );
    }

    // Never other controllers' objects.
    let patched = |kind: &str, ns: Option<&str>, name: &str| {
        fake.status_patches()
            .iter()
            .any(|x| x.kind == kind && x.namespace.as_deref() == ns && x.name == name)
    };
    assert!(!patched("GatewayClass", None, "theirs"));
    assert!(!patched("Gateway", Some("shop"), "other"));
    assert!(!patched("HTTPRoute", Some("shop"), "theirs"));
    assert!(!patched("Ingress", Some("shop"), "theirs"));

    // Only what changed: a round where nothing of ours changes writes nothing. The round must have run (it read
    // one object more); what the status writer did with it shows once the next change of ours (the route's spec,
    // below) is written: from here to there, only that route may be patched.
    let before = fake.status_patches().len();
    let rounds = p.rounds()?;
    fake.apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata: {name: unrelated}\n");
    p.wait_round("the unrelated Namespace was read", |r| {
        r.objects > rounds.objects
    })?;

    // lastTransitionTime is kept while a condition's status stays: pretend ours is old, then bump the generation.
    let mut st = route(&fake)["status"].clone();
    for e in st["parents"].as_array_mut().expect("parents") {
        if e["controllerName"] == OURS {
            for c in e["conditions"].as_array_mut().expect("conditions") {
                c["lastTransitionTime"] = json!("2020-02-02T00:00:00Z");
            }
        }
    }
    fake.set_status("HTTPRoute", Some("shop"), "api", st);
    let mut spec_v2 = route(&fake);
    spec_v2["spec"]["rules"][0]["matches"][0]["path"]["value"] = json!("/api/v2");
    if let Some(m) = spec_v2["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    fake.apply(spec_v2);
    wait(&fake, &p, "observedGeneration 2", |f| {
        let r = route(f);
        entry(&r["status"], "parents", OURS).is_some_and(|e| {
            condition(&e["conditions"], "Accepted").is_some_and(|c| c["observedGeneration"] == 2)
        })
    })?;
    let after = fake.status_patches();
    let since: Vec<_> = after[before..]
        .iter()
        .map(|x| {
            (
                x.kind.as_str(),
                x.namespace.as_deref(),
                x.name.as_str(),
                x.code,
            )
        })
        .collect();
    assert!(
        !since.is_empty()
            && since
                .iter()
                .all(|x| *x == ("HTTPRoute", Some("shop"), "api", 200)),
        "after a round where nothing of ours changed and one where the route changed: {since:?}"
    );
    assert!(after.iter().all(|x| x.code == 200), "{after:#?}");
    let r = route(&fake);
    let ours = entry(&r["status"], "parents", OURS).expect("our entry");
    let accepted = condition(&ours["conditions"], "Accepted").expect("Accepted");
    assert_eq!(
        accepted["lastTransitionTime"], "2020-02-02T00:00:00Z",
        "{ours:#}"
    );
    assert_eq!(entry(&r["status"], "parents", THEIRS), Some(&their_entry()));

    // A condition that changes gets a new time.
    let mut broken = route(&fake);
    broken["spec"]["rules"][0]["backendRefs"][0]["name"] = json!("missing");
    fake.apply(broken);
    wait(&fake, &p, "ResolvedRefs False", |f| {
        let r = route(f);
        entry(&r["status"], "parents", OURS).is_some_and(|e| {
            condition(&e["conditions"], "ResolvedRefs").is_some_and(|c| {
                c["status"] == "False"
                    && c["reason"] == "BackendNotFound"
                    && c["lastTransitionTime"] != "2020-02-02T00:00:00Z"
            })
        })
    })?;

    // Detached from our Gateway: our entry goes, theirs stays.
    let mut detached = route(&fake);
    detached["spec"]["parentRefs"] = json!([{"name": "other"}]);
    fake.apply(detached);
    wait(&fake, &p, "our entry removed", |f| {
        let r = route(f);
        entry(&r["status"], "parents", OURS).is_none()
            && entry(&r["status"], "parents", THEIRS) == Some(&their_entry())
    })?;
    wait(&fake, &p, "attachedRoutes 0", |f| {
        let gw = f.get("Gateway", Some("shop"), "public").unwrap_or_default();
        gw["status"]["listeners"][0]["attachedRoutes"] == 0
    })?;
    kube::rbac::assert_within(&fake, "cluster", None);
    Ok(())
}

/// `--publish-service`: Ingress status follows the Service's load balancer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_service_addresses() -> Result<()> {
    let fake = FakeApiServer::start(false);
    let http = free_port();
    fake.apply_yaml(&world(http));
    fake.apply_yaml(
        "apiVersion: v1\nkind: Service\nmetadata: {name: portcullis, namespace: portcullis-system}\nspec: {type: LoadBalancer, clusterIP: 10.96.0.1, ports: [{port: 80}]}\n",
    );
    fake.set_status(
        "Service",
        Some("portcullis-system"),
        "portcullis",
        json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}),
    );
    let p = KubeProxy::start(
        &fake.kubeconfig(None),
        http,
        &["--publish-service", "portcullis-system/portcullis"],
    )?;
    let lb = |f: &FakeApiServer| {
        f.get("Ingress", Some("shop"), "shop").unwrap_or_default()["status"]["loadBalancer"]
            ["ingress"]
            .clone()
    };
    wait(&fake, &p, "Ingress status from the Service", |f| {
        lb(f) == json!([{"ip": "203.0.113.7"}])
    })?;
    fake.set_status(
        "Service",
        Some("portcullis-system"),
        "portcullis",
        json!({"loadBalancer": {"ingress": [{"hostname": "lb.example.net"}]}}),
    );
    wait(&fake, &p, "Ingress status follows", |f| {
        lb(f) == json!([{"hostname": "lb.example.net"}])
    })?;
    kube::rbac::assert_within(&fake, "cluster", None);
    Ok(())
}

/// `--watch-namespace`: the same kind of run (status written, the published Service followed, the Lease held)
/// stays within the namespace-scope rules of docs/kubernetes.md, which grant namespaced kinds only in the watched
/// namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watched_namespace_run_stays_within_namespace_scope_rbac() -> Result<()> {
    let fake = FakeApiServer::start(true);
    let http = free_port();
    fake.apply_yaml(&world(http));
    fake.apply_yaml(
        "apiVersion: v1\nkind: Service\nmetadata: {name: portcullis, namespace: portcullis-system}\nspec: {type: LoadBalancer, clusterIP: 10.96.0.1, ports: [{port: 80}]}\n",
    );
    fake.set_status(
        "Service",
        Some("portcullis-system"),
        "portcullis",
        json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}),
    );
    let p = KubeProxy::start(
        &fake.kubeconfig(None),
        http,
        &[
            "--watch-namespace",
            "shop",
            "--publish-service",
            "portcullis-system/portcullis",
        ],
    )?;
    wait(&fake, &p, "Ingress status from the Service", |f| {
        f.get("Ingress", Some("shop"), "shop").unwrap_or_default()["status"]["loadBalancer"]
            ["ingress"]
            == json!([{"ip": "203.0.113.7"}])
    })?;
    wait(&fake, &p, "route status written", |f| {
        let r = f.get("HTTPRoute", Some("shop"), "api").unwrap_or_default();
        entry(&r["status"], "parents", OURS).is_some()
    })?;
    wait(&fake, &p, "GatewayClass status written", |f| {
        f.get("GatewayClass", None, "portcullis")
            .unwrap_or_default()["status"]["conditions"]
            .is_array()
    })?;
    assert_eq!(leader_metric(&p), Some(1));
    kube::rbac::assert_within(&fake, "namespace", None);
    Ok(())
}

/// The checker of the two tests above must refuse what the rules do not grant, or they prove nothing.
#[test]
fn rbac_checker_refuses_what_the_documented_rules_do_not_grant() {
    use kube::fake_apiserver::RequestRecord;
    use kube::rbac::{allowed, attributes, documented_rules, Rule};
    let cluster = documented_rules("cluster");
    let namespaced = documented_rules("namespace");
    let ok = |rules: &[Rule], method: &str, path: &str, query: &str| {
        let r = RequestRecord {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            token: None,
        };
        allowed(rules, &attributes(&r).expect("not discovery"))
    };
    let discovery = RequestRecord {
        method: "GET".into(),
        path: "/apis/gateway.networking.k8s.io/v1".into(),
        query: String::new(),
        token: None,
    };
    assert!(attributes(&discovery).is_none());
    let tls = "watch=true&fieldSelector=type%3Dkubernetes.io%2Ftls";
    assert!(ok(&cluster, "GET", "/api/v1/secrets", tls));
    assert!(
        !ok(&cluster, "GET", "/api/v1/namespaces/shop/secrets/x", ""),
        "get is not granted"
    );
    let ingress = "/apis/networking.k8s.io/v1/namespaces/shop/ingresses/x";
    assert!(!ok(&cluster, "PUT", ingress, ""), "only status is written");
    assert!(ok(&cluster, "PATCH", &format!("{ingress}/status"), ""));
    let leases = "/apis/coordination.k8s.io/v1/namespaces/portcullis-system/leases";
    assert!(ok(&cluster, "POST", leases, ""));
    assert!(!ok(
        &cluster,
        "POST",
        "/apis/coordination.k8s.io/v1/namespaces/other/leases",
        ""
    ));
    assert!(ok(
        &cluster,
        "PUT",
        &format!("{leases}/portcullis-leader"),
        ""
    ));
    assert!(!ok(&cluster, "PUT", &format!("{leases}/other"), ""));
    // Namespace scope: namespaced kinds only in the watched namespace; cluster-scoped kinds everywhere.
    assert!(ok(
        &namespaced,
        "GET",
        "/api/v1/namespaces/shop/services",
        "watch=true"
    ));
    assert!(!ok(&namespaced, "GET", "/api/v1/services", "watch=true"));
    assert!(!ok(
        &namespaced,
        "GET",
        "/api/v1/namespaces/other/services",
        ""
    ));
    assert!(ok(&namespaced, "GET", "/api/v1/namespaces", "watch=true"));
    let class = "/apis/gateway.networking.k8s.io/v1/gatewayclasses/x/status";
    assert!(ok(&namespaced, "PATCH", class, ""));
    // The published Service, by name only.
    let own = "/api/v1/namespaces/portcullis-system/services";
    assert!(ok(
        &namespaced,
        "GET",
        own,
        "fieldSelector=metadata.name%3Dportcullis&watch=true"
    ));
    assert!(!ok(&namespaced, "GET", own, "watch=true"));
}

/// `portcullis_leader` on the instance's health metrics (admin API).
fn leader_metric(p: &KubeProxy) -> Option<i64> {
    let text = p.admin("/metrics").ok()?.text();
    text.lines()
        .find_map(|l| l.strip_prefix("portcullis_leader "))
        .and_then(|v| v.trim().parse().ok())
}

fn lease_holder(fake: &FakeApiServer) -> String {
    fake.get("Lease", Some("portcullis-system"), "portcullis-leader")
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Two instances: one holds the Lease and only it writes status; when it vanishes (SIGKILL, no release) the
/// other takes over within 15 s and writes what changed meanwhile; a leader stopped with SIGTERM releases the
/// Lease at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_elect_one_leader_and_hand_over() -> Result<()> {
    let fake = FakeApiServer::start(true);
    let http_a = free_port();
    let http_b = free_port();
    fake.apply_yaml(&world(http_a));
    let mut a = KubeProxy::start(&fake.kubeconfig(Some("instance-a")), http_a, &[])?;
    let mut b = KubeProxy::start(&fake.kubeconfig(Some("instance-b")), http_b, &[])?;
    kube::wait_for(Duration::from_secs(15), || !lease_holder(&fake).is_empty())?;
    let holder = lease_holder(&fake);
    let a_leads = holder.contains(&format!("_{}_", a.pid()));
    let b_leads = holder.contains(&format!("_{}_", b.pid()));
    assert!(
        a_leads ^ b_leads,
        "holder {holder} is neither {} nor {}",
        a.pid(),
        b.pid()
    );
    // portcullis_leader says the same (each instance sets it when its election loop sees the change).
    kube::wait_for(Duration::from_secs(5), || {
        leader_metric(&a) == Some(i64::from(a_leads))
            && leader_metric(&b) == Some(i64::from(b_leads))
    })
    .context("portcullis_leader 1 on the holder, 0 on the other")?;
    let (leader_token, follower_token) = if a_leads {
        ("instance-a", "instance-b")
    } else {
        ("instance-b", "instance-a")
    };
    let generation_written = |f: &FakeApiServer, g: i64| {
        let r = f.get("HTTPRoute", Some("shop"), "api").unwrap_or_default();
        entry(&r["status"], "parents", OURS).is_some_and(|e| {
            condition(&e["conditions"], "Accepted").is_some_and(|c| c["observedGeneration"] == g)
        })
    };
    wait(&fake, &a, "the leader wrote status", |f| {
        generation_written(f, 1)
    })?;
    // Both run for a while; only the leader writes.
    let bump = |f: &FakeApiServer, path: &str| {
        let mut r = f.get("HTTPRoute", Some("shop"), "api").expect("route");
        r["spec"]["rules"][0]["matches"][0]["path"]["value"] = json!(path);
        f.apply(r);
    };
    let follower_rounds = if a_leads { b.rounds()? } else { a.rounds()? };
    bump(&fake, "/api/v2");
    wait(&fake, &a, "the leader wrote generation 2", |f| {
        generation_written(f, 2)
    })?;
    // The follower has run a round with the change too (and so has had its chance to write).
    let follower = if a_leads { &b } else { &a };
    follower.wait_round("the follower saw the bumped route", |r| {
        r.rounds > follower_rounds.rounds
    })?;
    let patches = fake.status_patches();
    assert!(!patches.is_empty());
    assert!(
        patches
            .iter()
            .all(|p| p.token.as_deref() == Some(leader_token)),
        "a follower wrote status: {:?}",
        patches
            .iter()
            .map(|p| (&p.token, &p.kind, &p.name))
            .collect::<Vec<_>>()
    );

    // The leader vanishes without releasing the Lease; status must change meanwhile.
    let (leader, follower) = if a_leads {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    let vanished = Instant::now();
    leader.kill();
    bump(&fake, "/api/v3");
    follower.wait_for(Duration::from_secs(20), || generation_written(&fake, 3))?;
    let handover = vanished.elapsed();
    assert!(
        handover < Duration::from_secs(15),
        "handover took {handover:?}"
    );
    let holder = lease_holder(&fake);
    assert!(
        holder.contains(&format!("_{}_", follower.pid())),
        "{holder}"
    );
    assert!(fake
        .status_patches()
        .iter()
        .any(|p| p.token.as_deref() == Some(follower_token) && p.code == 200));
    println!("leader handover after SIGKILL: {handover:?}");
    kube::wait_for(Duration::from_secs(5), || {
        leader_metric(follower) == Some(1)
    })
    .context("portcullis_leader 1 on the new holder")?;

    // SIGTERM: the Lease is released on the way out.
    let status = follower.terminate()?;
    assert!(status.success(), "{status}");
    assert_eq!(lease_holder(&fake), "", "{}", follower.log_text());
    kube::rbac::assert_within(&fake, "cluster", None);
    Ok(())
}
