use super::*;
use crate::source::file::input_from_str;
use crate::translate::{translate, Options};

const OURS: &str = "portcullis.dev/gateway-controller";
const NOW: &str = "2030-01-01T00:00:00Z";

const WORLD: &str = "
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: portcullis
  annotations: {ingressclass.kubernetes.io/is-default-class: \"true\"}
spec: {controller: portcullis.dev/ingress-controller}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: theirs}
spec: {controller: example.com/other}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: portcullis}
spec: {controllerName: portcullis.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: public, namespace: shop, generation: 3}
spec:
  gatewayClassName: portcullis
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec: {ports: [{port: 80}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: default-class, namespace: shop}
spec: {defaultBackend: {service: {name: api, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: legacy-theirs, namespace: shop, annotations: {kubernetes.io/ingress.class: theirs}}
spec: {defaultBackend: {service: {name: api, port: {number: 80}}}}
";

fn route(status: &str) -> String {
    format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: api, namespace: shop, generation: 2, resourceVersion: \"77\"}}
spec:
  parentRefs: [{{name: public}}]
  rules: [{{backendRefs: [{{name: api, port: 80}}]}}]
{status}"
    )
}

fn setup(extra: &str) -> (Input, Statuses) {
    let (input, problems) = input_from_str(&format!("{WORLD}{extra}"));
    assert!(problems.is_empty(), "{problems:?}");
    let out = translate(&input, &Options::default());
    (input, out.statuses)
}

fn cfg(addresses: Option<&[String]>) -> PlanConfig<'_> {
    PlanConfig {
        gateway_controller: OURS,
        ingress_controller: "portcullis.dev/ingress-controller",
        addresses,
    }
}

/// Applies a patch to an input's object the way the API server would (merge patch on status), returning the
/// patched input.
fn apply(input: &Input, patches: &[StatusPatch]) -> Input {
    fn patch<K: Serialize + DeserializeOwned + HasMeta>(list: &mut [Arc<K>], p: &StatusPatch) {
        for o in list.iter_mut() {
            let m = o.meta();
            if m.name.as_deref() == Some(p.name.as_str()) && m.namespace == p.namespace {
                let mut v = serde_json::to_value(o.as_ref()).unwrap();
                let status = v.get("status").cloned().unwrap_or(json!({}));
                let mut merged = status;
                merge(&mut merged, &p.body()["status"]);
                v["status"] = merged;
                *o = Arc::new(serde_json::from_value(v).unwrap());
            }
        }
    }
    fn merge(t: &mut Value, p: &Value) {
        match p {
            Value::Object(pm) => {
                if !t.is_object() {
                    *t = json!({});
                }
                let tm = t.as_object_mut().unwrap();
                for (k, v) in pm {
                    if v.is_null() {
                        tm.remove(k);
                    } else {
                        merge(tm.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
            other => *t = other.clone(),
        }
    }
    let mut out = input.clone();
    for p in patches {
        match p.kind {
            "GatewayClass" => patch(&mut out.gateway_classes, p),
            "Gateway" => patch(&mut out.gateways, p),
            "HTTPRoute" => patch(&mut out.http_routes, p),
            "Ingress" => patch(&mut out.ingresses, p),
            other => panic!("{other}"),
        }
    }
    out
}

#[test]
fn first_plan_writes_everything_then_nothing() {
    let (input, st) = setup(&route(""));
    let addresses = vec!["192.0.2.1".to_string(), "lb.example.net".to_string()];
    let patches = plan(
        &input,
        &st,
        &cfg(Some(&addresses)),
        NOW,
        &mut PlanCache::default(),
    );
    let kinds: Vec<(&str, &str)> = patches.iter().map(|p| (p.kind, p.name.as_str())).collect();
    assert_eq!(
        kinds,
        [
            ("GatewayClass", "portcullis"),
            ("Gateway", "public"),
            ("HTTPRoute", "api"),
            ("Ingress", "default-class"),
        ]
    );
    let gw_body = patches[1].body();
    let gw = &gw_body["status"];
    assert_eq!(
        gw["addresses"],
        json!([{"type": "IPAddress", "value": "192.0.2.1"}, {"type": "Hostname", "value": "lb.example.net"}])
    );
    assert_eq!(gw["conditions"][0]["lastTransitionTime"], NOW);
    assert_eq!(gw["conditions"][0]["observedGeneration"], 3);
    assert_eq!(
        gw["listeners"][0]["conditions"][0]["lastTransitionTime"],
        NOW
    );
    let r = &patches[2].body();
    assert_eq!(
        r["metadata"]["resourceVersion"], "77",
        "route patches carry their precondition"
    );
    assert_eq!(r["status"]["parents"][0]["controllerName"], OURS);
    assert_eq!(
        patches[3].body(),
        json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}, {"hostname": "lb.example.net"}]}}})
    );

    // Once written, the same status plans nothing, even an hour later.
    let written = apply(&input, &patches);
    assert_eq!(
        plan(
            &written,
            &st,
            &cfg(Some(&addresses)),
            "2030-01-01T01:00:00Z",
            &mut PlanCache::default()
        ),
        vec![]
    );
}

#[test]
fn no_publish_addresses_no_ingress_status() {
    let (input, st) = setup(&route(""));
    let patches = plan(&input, &st, &cfg(None), NOW, &mut PlanCache::default());
    assert!(patches.iter().all(|p| p.kind != "Ingress"));
    let gw = patches.iter().find(|p| p.kind == "Gateway").unwrap();
    assert_eq!(gw.body()["status"]["addresses"], json!([]));
}

#[test]
fn other_controllers_entries_are_kept_and_times_preserved() {
    let theirs = json!({
        "parentRef": {"name": "elsewhere"}, "controllerName": "example.com/other",
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
                        "lastTransitionTime": "2001-01-01T00:00:00Z"}]
    });
    let (input, st) = setup(&route(""));
    let first = plan(&input, &st, &cfg(None), NOW, &mut PlanCache::default());
    let ours = first.iter().find(|p| p.kind == "HTTPRoute").unwrap().body()["status"]["parents"][0]
        .clone();
    // The object holds their entry and ours (written an hour earlier).
    let mut ours_old = ours.clone();
    for c in ours_old["conditions"].as_array_mut().unwrap() {
        c["lastTransitionTime"] = json!("2029-12-31T23:00:00Z");
    }
    let status = format!(
        "status: {}\n",
        json!({"parents": [theirs.clone(), ours_old.clone()]})
    );
    let (input, st) = setup(&route(&status));
    assert!(
        plan(&input, &st, &cfg(None), NOW, &mut PlanCache::default())
            .iter()
            .all(|p| p.kind != "HTTPRoute")
    );

    // The route's backend goes missing: ResolvedRefs changes (new time), Accepted does not (old time kept),
    // their entry is untouched.
    let broken = route(&status).replace("name: api, port: 80", "name: missing, port: 80");
    let (input, st) = setup(&broken);
    let patches = plan(&input, &st, &cfg(None), NOW, &mut PlanCache::default());
    let p = patches.iter().find(|p| p.kind == "HTTPRoute").unwrap();
    let body = p.body();
    let parents = body["status"]["parents"].as_array().unwrap();
    assert_eq!(parents.len(), 2);
    assert_eq!(parents[0], theirs);
    let cond = |t: &str| {
        parents[1]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == t)
            .unwrap()
            .clone()
    };
    assert_eq!(
        cond("Accepted")["lastTransitionTime"],
        "2029-12-31T23:00:00Z"
    );
    assert_eq!(cond("ResolvedRefs")["status"], "False");
    assert_eq!(cond("ResolvedRefs")["lastTransitionTime"], NOW);
}

#[test]
fn stale_entries_of_ours_are_removed() {
    let stale = json!({
        "parentRef": {"name": "public"}, "controllerName": OURS,
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
                        "lastTransitionTime": "2001-01-01T00:00:00Z"}]
    });
    let theirs = json!({"parentRef": {"name": "x"}, "controllerName": "example.com/other", "conditions": []});
    // The route now names a Gateway that is not ours.
    let text = route(&format!(
        "status: {}\n",
        json!({"parents": [stale, theirs.clone()]})
    ))
    .replace(
        "parentRefs: [{name: public}]",
        "parentRefs: [{name: not-ours}]",
    );
    let (input, st) = setup(&text);
    let patches = plan(&input, &st, &cfg(None), NOW, &mut PlanCache::default());
    let p = patches
        .iter()
        .find(|p| p.kind == "HTTPRoute")
        .expect("a patch removing our entry");
    assert_eq!(p.body()["status"]["parents"], json!([theirs]));
}

#[test]
fn ingress_ownership_mirrors_translation() {
    let (input, _) = setup("");
    let ours: Vec<&str> = input
        .ingresses
        .iter()
        .filter(|i| ingress_is_ours(i, &input, "portcullis.dev/ingress-controller"))
        .map(|i| i.metadata.name.as_deref().unwrap())
        .collect();
    assert_eq!(ours, ["default-class"]);
}

#[test]
fn service_addresses_by_type() {
    let svc = |spec: Value, status: Value| -> Service {
        serde_json::from_value(json!({"metadata": {"name": "s"}, "spec": spec, "status": status}))
            .unwrap()
    };
    assert_eq!(
        service_addresses(&svc(
            json!({"type": "LoadBalancer", "clusterIP": "10.0.0.1"}),
            json!({"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}, {"hostname": "h.example"}]}})
        )),
        ["1.2.3.4", "h.example"]
    );
    assert_eq!(
        service_addresses(&svc(
            json!({"type": "LoadBalancer", "clusterIP": "10.0.0.1"}),
            json!({})
        )),
        ["10.0.0.1"]
    );
    assert_eq!(
        service_addresses(&svc(
            json!({"type": "NodePort", "clusterIP": "10.0.0.1", "externalIPs": ["5.6.7.8"]}),
            json!({})
        )),
        ["5.6.7.8"]
    );
    assert_eq!(
        service_addresses(&svc(
            json!({"type": "ExternalName", "externalName": "x.example"}),
            json!({})
        )),
        ["x.example"]
    );
    assert!(service_addresses(&svc(json!({"clusterIP": "None"}), json!({}))).is_empty());
}

#[test]
fn cache_skips_objects_in_sync_and_notices_changes() {
    let (input, st) = setup(&route(""));
    let mut cache = PlanCache::default();
    let patches = plan(&input, &st, &cfg(None), NOW, &mut cache);
    assert_eq!(patches.len(), 3);
    let written = apply(&input, &patches);
    assert_eq!(plan(&written, &st, &cfg(None), NOW, &mut cache), vec![]);
    assert_eq!(cache.in_sync.len(), 3);
    // Translation now wants something else for the route: the cache does not hide it.
    let mut st2 = st.clone();
    st2.routes[0].status.parents[0].conditions[0].message = "changed".into();
    let patches = plan(&written, &st2, &cfg(None), NOW, &mut cache);
    assert_eq!(
        patches.iter().map(|p| p.kind).collect::<Vec<_>>(),
        ["HTTPRoute"]
    );
    // So does a write by someone else (a new resourceVersion with other contents).
    let mut other = written.clone();
    let mut gw = (*other.gateways[0]).clone();
    gw.metadata.resource_version = Some("99".into());
    gw.status = None;
    other.gateways[0] = Arc::new(gw);
    let patches = plan(&other, &st, &cfg(None), NOW, &mut cache);
    assert_eq!(
        patches.iter().map(|p| p.kind).collect::<Vec<_>>(),
        ["Gateway"]
    );
}
