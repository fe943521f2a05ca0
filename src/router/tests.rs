//! Router tests that drive the whole pipeline the proxy runs: Kubernetes YAML text → file source
//! ([`crate::source::file::input_from_str`]) → translation ([`crate::translate::translate`]) → [`Router::compile`]
//! → [`ListenerTable::find`], asserting which rule answers a request (or that none does: 404).
//!
//! Expected outcomes come from the Kubernetes Ingress documentation, the Gateway API spec text quoted in
//! `src/model/precedence.rs`, and the upstream Gateway API conformance tests (copied case by case, with their ids).

use super::*;
use crate::model::OriginKind;
use crate::source::file::input_from_str;
use crate::translate::{translate, Options, Output, Severity};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde_json::{json, Value};
use std::net::SocketAddr;

// ---------------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------------

/// Our IngressClass (the default class) and our GatewayClass, both named `portcullis`.
const CLASSES: &str = r#"
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: portcullis
  annotations:
    ingressclass.kubernetes.io/is-default-class: "true"
spec:
  controller: portcullis.dev/ingress-controller
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: portcullis
spec:
  controllerName: portcullis.dev/gateway-controller
"#;

/// A translated and compiled configuration.
struct Fixture {
    out: Output,
    router: Router,
}

impl Fixture {
    /// Translates `yaml` (with [`CLASSES`] in front) and compiles it. Any problem reading the YAML, and any
    /// error-severity diagnostic, fails the test: a fixture mistake must not pass as a 404.
    fn new(yaml: &str) -> Self {
        let f = Self::lenient(yaml);
        let errors: Vec<String> = f
            .out
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| d.to_string())
            .collect();
        assert!(errors.is_empty(), "translation errors: {errors:#?}");
        f
    }

    /// Like [`Fixture::new`], but translation errors are allowed (fixtures that are wrong on purpose).
    fn lenient(yaml: &str) -> Self {
        Self::lenient_with(yaml, &Options::default())
    }

    /// [`Fixture::lenient`] with these translation options.
    fn lenient_with(yaml: &str, opts: &Options) -> Self {
        let text = format!("{CLASSES}\n---\n{yaml}");
        let (input, problems) = input_from_str(&text);
        let problems: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert!(
            problems.is_empty(),
            "problems reading the YAML: {problems:#?}"
        );
        let out = translate(&input, opts);
        let router = Router::compile(&out.model).expect("translated models always compile");
        Fixture { out, router }
    }

    /// The entry that answers `req` on `port`, as the proxy looks it up (the Host normalized first).
    fn find_on(&self, port: u16, req: &Req) -> Option<&Arc<RouteEntry>> {
        let mut buf = [0u8; 256];
        // The proxy routes an unusable Host as the empty host (only catch-all rules can match it).
        let host = normalize_host(req.host.as_bytes(), &mut buf).unwrap_or("");
        let parts = RequestParts {
            method: &req.method,
            path: &req.path,
            query: req.query.as_deref(),
            headers: &req.headers,
        };
        self.router
            .listener(port)
            .unwrap_or_else(|| panic!("port {port} is not served"))
            .find(host, &parts)
    }

    /// The entry that answers `req` on port 80.
    fn find(&self, req: &Req) -> Option<&Arc<RouteEntry>> {
        self.find_on(80, req)
    }

    /// Who answers `req` on port 80: the rule's origin (`"HTTPRoute default/a rule 0"`,
    /// `"Ingress default/x rule 2"`, `"Ingress default/x defaultBackend"`) or `"404"`.
    fn who(&self, req: &Req) -> String {
        self.find(req)
            .map_or_else(|| "404".to_string(), |e| e.rule.origin.to_string())
    }

    /// The Service (`namespace/name:port`) the answering rule forwards to on port 80, or `"404"`. Panics when the
    /// rule does not forward to exactly one resolved Service.
    fn service(&self, req: &Req) -> String {
        let Some(e) = self.find(req) else {
            return "404".to_string();
        };
        match &e.rule.action {
            CompiledAction::Forward(wb) => match wb.backends() {
                [b] => {
                    let key = service_of(self, b);
                    // The Service port, without a variant.
                    key.split('#').next().unwrap_or_default().to_string()
                }
                other => panic!("{}: {} backends", e.rule.origin, other.len()),
            },
            CompiledAction::Redirect(_) => panic!("{}: redirect", e.rule.origin),
        }
    }
}

/// A request as the router sees it.
#[derive(Debug, Clone)]
struct Req {
    host: String,
    method: Method,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
}

/// `GET http://{host}{path_and_query}`.
fn req(host: &str, path_and_query: &str) -> Req {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (path_and_query, None),
    };
    Req {
        host: host.to_string(),
        method: Method::GET,
        path: path.to_string(),
        query,
        headers: HeaderMap::new(),
    }
}

impl Req {
    fn method(mut self, m: Method) -> Self {
        self.method = m;
        self
    }

    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
        self
    }
}

/// Joins objects (JSON is YAML) into one multi-document text.
fn docs(objects: &[Value]) -> String {
    objects
        .iter()
        .map(|o| serde_json::to_string_pretty(o).unwrap())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// A Service with one port 8080 and an EndpointSlice of ready `ips` (target port 3000).
fn service(ns: &str, name: &str, ips: &[&str]) -> [Value; 2] {
    [
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"ports": [{"port": 8080, "targetPort": 3000}]}
        }),
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{name}-1"), "namespace": ns,
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": [{"port": 3000}],
            "endpoints": ips.iter().map(|ip| json!({"addresses": [ip]})).collect::<Vec<_>>()
        }),
    ]
}

/// A Gateway `default/gw` with one HTTP listener on port 80 without hostname, accepting routes from all
/// namespaces.
fn gateway() -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "default"},
        "spec": {"gatewayClassName": "portcullis", "listeners": [
            {"name": "http", "port": 80, "protocol": "HTTP",
             "allowedRoutes": {"namespaces": {"from": "All"}}}
        ]}
    })
}

/// An HTTPRoute `ns/name` attached to `default/gw`. Each rule is a list of matches; every rule forwards to the
/// Service `backend` of the route's namespace (see [`routes_fixture`]).
fn route(
    ns: &str,
    name: &str,
    created: Option<&str>,
    hostnames: &[&str],
    rules: &[Value],
) -> Value {
    let mut meta = json!({"name": name, "namespace": ns});
    if let Some(t) = created {
        meta["creationTimestamp"] = json!(t);
    }
    let rules: Vec<Value> = rules
        .iter()
        .map(|m| json!({"matches": m, "backendRefs": [{"name": "backend", "port": 8080}]}))
        .collect();
    let mut spec = json!({
        "parentRefs": [{"name": "gw", "namespace": "default"}],
        "rules": rules
    });
    if !hostnames.is_empty() {
        spec["hostnames"] = json!(hostnames);
    }
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": meta, "spec": spec
    })
}

/// `default/gw`, a `backend` Service in every namespace the routes use, and the routes.
fn routes_fixture(routes: &[Value]) -> Fixture {
    let mut objects = vec![gateway()];
    let mut namespaces: Vec<&str> = routes
        .iter()
        .map(|r| r["metadata"]["namespace"].as_str().unwrap())
        .collect();
    namespaces.sort();
    namespaces.dedup();
    for ns in namespaces {
        objects.extend(service(ns, "backend", &["10.0.0.1"]));
    }
    objects.extend(routes.iter().cloned());
    Fixture::new(&docs(&objects))
}

/// Match builders for HTTPRoute rules.
fn path(kind: &str, value: &str) -> Value {
    json!({"path": {"type": kind, "value": value}})
}
fn exact(p: &str) -> Value {
    path("Exact", p)
}
fn prefix(p: &str) -> Value {
    path("PathPrefix", p)
}
fn regex(p: &str) -> Value {
    path("RegularExpression", p)
}

// ---------------------------------------------------------------------------------------------------------------
// 1. Ingress: the pathType examples table of https://kubernetes.io/docs/concepts/services-networking/ingress/#examples
// ---------------------------------------------------------------------------------------------------------------

/// One Ingress `default/table` of the default class, no host, with these `(pathType, path)` paths (path `i` goes
/// to Service `svc-i`) and, when asked, a `spec.defaultBackend`.
fn ingress_table(paths: &[(&str, &str)], default_backend: bool) -> Fixture {
    let paths: Vec<Value> = paths
        .iter()
        .enumerate()
        .map(|(i, (ty, p))| {
            json!({"path": p, "pathType": ty,
                   "backend": {"service": {"name": format!("svc-{i}"), "port": {"number": 80}}}})
        })
        .collect();
    let mut spec = json!({"rules": [{"http": {"paths": paths}}]});
    if default_backend {
        spec["defaultBackend"] = json!({"service": {"name": "fallback", "port": {"number": 80}}});
    }
    Fixture::new(&docs(&[json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "table", "namespace": "default"},
        "spec": spec
    })]))
}

/// Which path of the table Ingress answers `request_path`: its index, `Some(usize::MAX)` for the default backend,
/// `None` for 404.
fn table_answer(f: &Fixture, request_path: &str) -> Option<usize> {
    let e = f.find(&req("example.com", request_path))?;
    assert_eq!(e.rule.origin.kind, OriginKind::Ingress);
    assert_eq!(e.rule.origin.name, "table");
    Some(e.rule.origin.rule)
}

#[test]
fn ingress_path_type_examples_table() {
    const P: &str = "Prefix";
    const E: &str = "Exact";

    // | Prefix | / | (all paths) | Yes |
    let f = ingress_table(&[(P, "/")], false);
    for p in ["/", "/foo", "/foo/", "/aaa/bbb/ccc", "/FOO", "/index.html"] {
        assert_eq!(table_answer(&f, p), Some(0), "{p}");
    }

    // | Exact | /foo | /foo | Yes |
    let f = ingress_table(&[(E, "/foo")], false);
    assert_eq!(table_answer(&f, "/foo"), Some(0));

    // | Exact | /foo | /bar | No |
    assert_eq!(table_answer(&f, "/bar"), None);

    // | Exact | /foo | /foo/ | No |
    assert_eq!(table_answer(&f, "/foo/"), None);

    // | Exact | /foo/ | /foo | No |
    let f = ingress_table(&[(E, "/foo/")], false);
    assert_eq!(table_answer(&f, "/foo"), None);

    // | Prefix | /foo | /foo, /foo/ | Yes |
    let f = ingress_table(&[(P, "/foo")], false);
    assert_eq!(
        (table_answer(&f, "/foo"), table_answer(&f, "/foo/")),
        (Some(0), Some(0))
    );

    // | Prefix | /foo/ | /foo, /foo/ | Yes |
    let f = ingress_table(&[(P, "/foo/")], false);
    assert_eq!(
        (table_answer(&f, "/foo"), table_answer(&f, "/foo/")),
        (Some(0), Some(0))
    );

    // | Prefix | /aaa/bb | /aaa/bbb | No |
    let f = ingress_table(&[(P, "/aaa/bb")], false);
    assert_eq!(table_answer(&f, "/aaa/bbb"), None);

    // | Prefix | /aaa/bbb | /aaa/bbb | Yes |
    let f = ingress_table(&[(P, "/aaa/bbb")], false);
    assert_eq!(table_answer(&f, "/aaa/bbb"), Some(0));

    // | Prefix | /aaa/bbb/ | /aaa/bbb | Yes, ignores trailing slash |
    let f2 = ingress_table(&[(P, "/aaa/bbb/")], false);
    assert_eq!(table_answer(&f2, "/aaa/bbb"), Some(0));

    // | Prefix | /aaa/bbb | /aaa/bbb/ | Yes, matches trailing slash |
    assert_eq!(table_answer(&f, "/aaa/bbb/"), Some(0));

    // | Prefix | /aaa/bbb | /aaa/bbb/ccc | Yes, matches subpath |
    assert_eq!(table_answer(&f, "/aaa/bbb/ccc"), Some(0));

    // | Prefix | /aaa/bbb | /aaa/bbbxyz | No, does not match string prefix |
    assert_eq!(table_answer(&f, "/aaa/bbbxyz"), None);

    // | Prefix | /, /aaa | /aaa/ccc | Yes, matches /aaa prefix |
    let f = ingress_table(&[(P, "/"), (P, "/aaa")], false);
    assert_eq!(table_answer(&f, "/aaa/ccc"), Some(1));

    // | Prefix | /, /aaa, /aaa/bbb | /aaa/bbb | Yes, matches /aaa/bbb prefix |
    let f = ingress_table(&[(P, "/"), (P, "/aaa"), (P, "/aaa/bbb")], false);
    assert_eq!(table_answer(&f, "/aaa/bbb"), Some(2));

    // | Prefix | /, /aaa, /aaa/bbb | /ccc | Yes, matches / prefix |
    assert_eq!(table_answer(&f, "/ccc"), Some(0));

    // | Prefix | /aaa | /ccc | No, uses default backend |
    let f = ingress_table(&[(P, "/aaa")], true);
    assert_eq!(table_answer(&f, "/ccc"), Some(Origin::DEFAULT_BACKEND));
    assert_eq!(
        f.who(&req("example.com", "/ccc")),
        "Ingress default/table defaultBackend"
    );
    // (and without a default backend, that is a 404)
    assert_eq!(
        table_answer(&ingress_table(&[(P, "/aaa")], false), "/ccc"),
        None
    );

    // | Mixed | /foo (Prefix), /foo (Exact) | /foo | Yes, prefers Exact |
    let f = ingress_table(&[(P, "/foo"), (E, "/foo")], false);
    assert_eq!(table_answer(&f, "/foo"), Some(1));
    // (the other order too: the Exact path does not win by being first)
    let f = ingress_table(&[(E, "/foo"), (P, "/foo")], false);
    assert_eq!(table_answer(&f, "/foo"), Some(0));
    assert_eq!(table_answer(&f, "/foo/x"), Some(1));
}

#[test]
fn ingress_paths_are_case_sensitive() {
    // "Exact: Matches the URL path exactly and with case sensitivity." / "Prefix: ... matching is case sensitive"
    let f = ingress_table(&[("Prefix", "/foo"), ("Exact", "/bar")], false);
    assert_eq!(table_answer(&f, "/foo"), Some(0));
    assert_eq!(table_answer(&f, "/FOO"), None);
    assert_eq!(table_answer(&f, "/Foo/bar"), None);
    assert_eq!(table_answer(&f, "/bar"), Some(1));
    assert_eq!(table_answer(&f, "/BAR"), None);
}

/// An Ingress `default/{name}` of the default class with `(host, pathType, path)` rules, each path to Service
/// `svc` port 8080.
fn ingress(name: &str, created: Option<&str>, rules: &[(Option<&str>, &str, &str)]) -> Value {
    let mut meta = json!({"name": name, "namespace": "default"});
    if let Some(t) = created {
        meta["creationTimestamp"] = json!(t);
    }
    let rules: Vec<Value> = rules
        .iter()
        .map(|(host, ty, p)| {
            let mut r = json!({"http": {"paths": [
                {"path": p, "pathType": ty,
                 "backend": {"service": {"name": "svc", "port": {"number": 8080}}}}
            ]}});
            if let Some(h) = host {
                r["host"] = json!(h);
            }
            r
        })
        .collect();
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": meta, "spec": {"rules": rules}
    })
}

#[test]
fn ingress_wildcard_host_covers_exactly_one_label() {
    // Kubernetes Ingress "Hostname wildcards": "*.foo.com" matches "bar.foo.com" but not "baz.bar.foo.com" (the
    // wildcard only covers a single DNS label) nor "foo.com" (no label in front).
    let f = Fixture::new(&docs(&[ingress(
        "wild",
        None,
        &[(Some("*.foo.com"), "Prefix", "/")],
    )]));
    assert_eq!(
        f.who(&req("bar.foo.com", "/")),
        "Ingress default/wild rule 0"
    );
    assert_eq!(f.who(&req("baz.bar.foo.com", "/")), "404");
    assert_eq!(f.who(&req("foo.com", "/")), "404");
    assert_eq!(f.who(&req("barfoo.com", "/")), "404");

    // With a host-less rule too, the hosts the wildcard does not cover fall through to it.
    let f = Fixture::new(&docs(&[ingress(
        "wild",
        None,
        &[(Some("*.foo.com"), "Prefix", "/"), (None, "Prefix", "/")],
    )]));
    assert_eq!(
        f.who(&req("bar.foo.com", "/")),
        "Ingress default/wild rule 0"
    );
    assert_eq!(
        f.who(&req("baz.bar.foo.com", "/")),
        "Ingress default/wild rule 1"
    );
    assert_eq!(f.who(&req("foo.com", "/")), "Ingress default/wild rule 1");
}

#[test]
fn ingress_host_match_ignores_case_port_and_trailing_dot() {
    let f = Fixture::new(&docs(&[ingress(
        "hosts",
        None,
        &[
            (Some("foo.example.com"), "Prefix", "/"),
            (Some("*.wild.example.com"), "Prefix", "/"),
        ],
    )]));
    for host in [
        "foo.example.com",
        "FOO.Example.COM",
        "foo.example.com:8080",
        "Foo.Example.Com:80",
        "foo.example.com.",
        "foo.example.com.:443",
    ] {
        assert_eq!(
            f.who(&req(host, "/x")),
            "Ingress default/hosts rule 0",
            "{host}"
        );
    }
    for host in ["A.WILD.example.com", "a.wild.example.com:31000"] {
        assert_eq!(
            f.who(&req(host, "/x")),
            "Ingress default/hosts rule 1",
            "{host}"
        );
    }
    assert_eq!(f.who(&req("bar.example.com", "/x")), "404");
}

// ---------------------------------------------------------------------------------------------------------------
// 2. HTTPRoute precedence (spec text in src/model/precedence.rs)
// ---------------------------------------------------------------------------------------------------------------
//
// > Proxy or Load Balancer routing configuration generated from HTTPRoutes MUST prioritize matches based on the
// > following criteria, continuing on ties. Across all rules specified on applicable Routes, precedence must be
// > given to the match having:
// > * "Exact" path match.
// > * "Prefix" path match with largest number of characters.
// > * Method match.
// > * Largest number of header matches.
// > * Largest number of query param matches.
//
// In every test the rule that must win sits in the route that would LOSE every later tie-break (newest, last in
// alphabetical order, later rule), so only the criterion under test can explain the result.

const OLD: Option<&str> = Some("2020-01-01T00:00:00Z");
const NEW: Option<&str> = Some("2024-01-01T00:00:00Z");

#[test]
fn httproute_exact_path_beats_prefix() {
    // > * "Exact" path match.
    let f = routes_fixture(&[
        route("default", "a-prefix", OLD, &[], &[json!([prefix("/foo")])]),
        route("default", "z-exact", NEW, &[], &[json!([exact("/foo")])]),
    ]);
    assert_eq!(f.who(&req("h", "/foo")), "HTTPRoute default/z-exact rule 0");
    assert_eq!(
        f.who(&req("h", "/foo/")),
        "HTTPRoute default/a-prefix rule 0"
    );
    assert_eq!(
        f.who(&req("h", "/foo/bar")),
        "HTTPRoute default/a-prefix rule 0"
    );
    assert_eq!(f.who(&req("h", "/foobar")), "404");
}

#[test]
fn httproute_longest_prefix_wins() {
    // > * "Prefix" path match with largest number of characters.
    let f = routes_fixture(&[
        route("default", "a-short", OLD, &[], &[json!([prefix("/foo")])]),
        route("default", "m-root", OLD, &[], &[json!([prefix("/")])]),
        route(
            "default",
            "z-long",
            NEW,
            &[],
            &[json!([prefix("/foo/bar/")])],
        ),
    ]);
    assert_eq!(
        f.who(&req("h", "/foo/bar")),
        "HTTPRoute default/z-long rule 0"
    );
    assert_eq!(
        f.who(&req("h", "/foo/bar/baz")),
        "HTTPRoute default/z-long rule 0"
    );
    assert_eq!(
        f.who(&req("h", "/foo/barbaz")),
        "HTTPRoute default/a-short rule 0"
    );
    assert_eq!(f.who(&req("h", "/foo")), "HTTPRoute default/a-short rule 0");
    assert_eq!(
        f.who(&req("h", "/other")),
        "HTTPRoute default/m-root rule 0"
    );
}

#[test]
fn httproute_method_match_comes_next() {
    // > * Method match.
    let post = json!({"path": {"type": "PathPrefix", "value": "/m"}, "method": "POST"});
    let two_headers = json!({"path": {"type": "PathPrefix", "value": "/m"}, "headers": [
        {"name": "x-a", "value": "1"}, {"name": "x-b", "value": "2"}
    ]});
    let f = routes_fixture(&[
        route("default", "a-plain", OLD, &[], &[json!([prefix("/m")])]),
        route("default", "b-headers", OLD, &[], &[json!([two_headers])]),
        route("default", "z-method", NEW, &[], &[json!([post])]),
    ]);
    let r = || req("h", "/m/x");
    assert_eq!(f.who(&r()), "HTTPRoute default/a-plain rule 0");
    assert_eq!(
        f.who(&r().method(Method::POST)),
        "HTTPRoute default/z-method rule 0"
    );
    // Method outranks any number of header matches.
    let both = r()
        .method(Method::POST)
        .header("x-a", "1")
        .header("x-b", "2");
    assert_eq!(f.who(&both), "HTTPRoute default/z-method rule 0");
    let headers_only = r().header("x-a", "1").header("x-b", "2");
    assert_eq!(f.who(&headers_only), "HTTPRoute default/b-headers rule 0");
    // A longer prefix still outranks the method.
    let f = routes_fixture(&[
        route(
            "default",
            "a-method",
            OLD,
            &[],
            &[json!([{"path": {"type": "PathPrefix", "value": "/m"}, "method": "POST"}])],
        ),
        route("default", "z-longer", NEW, &[], &[json!([prefix("/m/x")])]),
    ]);
    assert_eq!(
        f.who(&req("h", "/m/x").method(Method::POST)),
        "HTTPRoute default/z-longer rule 0"
    );
}

#[test]
fn httproute_more_header_matches_win() {
    // > * Largest number of header matches.
    let h = |n: usize| {
        let headers: Vec<Value> = (0..n)
            .map(|i| json!({"name": format!("x-h{i}"), "value": "v"}))
            .collect();
        json!({"path": {"type": "PathPrefix", "value": "/"}, "headers": headers})
    };
    let q2 = json!({"path": {"type": "PathPrefix", "value": "/"}, "queryParams": [
        {"name": "a", "value": "1"}, {"name": "b", "value": "2"}
    ]});
    let f = routes_fixture(&[
        route("default", "a-one", OLD, &[], &[json!([h(1)])]),
        route("default", "b-queries", OLD, &[], &[json!([q2])]),
        route("default", "z-two", NEW, &[], &[json!([h(2)])]),
    ]);
    let r = || req("h", "/x");
    assert_eq!(f.who(&r()), "404");
    assert_eq!(
        f.who(&r().header("x-h0", "v")),
        "HTTPRoute default/a-one rule 0"
    );
    assert_eq!(
        f.who(&r().header("x-h0", "v").header("x-h1", "v")),
        "HTTPRoute default/z-two rule 0"
    );
    // Header names are case-insensitive; values are not.
    assert_eq!(
        f.who(&r().header("X-H0", "v").header("X-h1", "v")),
        "HTTPRoute default/z-two rule 0"
    );
    assert_eq!(
        f.who(&r().header("x-h0", "v").header("x-h1", "V")),
        "HTTPRoute default/a-one rule 0"
    );
    // One header match outranks two query param matches.
    let mut both = req("h", "/x?a=1&b=2");
    both = both.header("x-h0", "v");
    assert_eq!(f.who(&both), "HTTPRoute default/a-one rule 0");
    assert_eq!(
        f.who(&req("h", "/x?a=1&b=2")),
        "HTTPRoute default/b-queries rule 0"
    );
}

#[test]
fn httproute_more_query_param_matches_win() {
    // > * Largest number of query param matches.
    let q = |names: &[&str]| {
        let params: Vec<Value> = names
            .iter()
            .map(|n| json!({"name": n, "value": "1"}))
            .collect();
        json!({"path": {"type": "PathPrefix", "value": "/q"}, "queryParams": params})
    };
    let f = routes_fixture(&[
        route("default", "a-none", OLD, &[], &[json!([prefix("/q")])]),
        route("default", "b-one", OLD, &[], &[json!([q(&["a"])])]),
        route("default", "z-two", NEW, &[], &[json!([q(&["a", "b"])])]),
    ]);
    assert_eq!(f.who(&req("h", "/q")), "HTTPRoute default/a-none rule 0");
    assert_eq!(f.who(&req("h", "/q?a=1")), "HTTPRoute default/b-one rule 0");
    assert_eq!(
        f.who(&req("h", "/q?b=1&a=1")),
        "HTTPRoute default/z-two rule 0"
    );
    assert_eq!(
        f.who(&req("h", "/q?a=1&b=2")),
        "HTTPRoute default/b-one rule 0"
    );
    // Query parameter names are case-sensitive.
    assert_eq!(
        f.who(&req("h", "/q?A=1&B=1")),
        "HTTPRoute default/a-none rule 0"
    );
}

#[test]
fn httproute_ties_go_to_the_oldest_route() {
    // > If ties still exist across multiple Routes, matching precedence MUST be determined in order of the
    // > following criteria, continuing on ties:
    // > * The oldest Route based on creation timestamp.
    let f = routes_fixture(&[
        route("default", "a-new", NEW, &[], &[json!([prefix("/t")])]),
        route("default", "z-old", OLD, &[], &[json!([prefix("/t")])]),
        route(
            "default",
            "b-unknown-age",
            None,
            &[],
            &[json!([prefix("/t")])],
        ),
    ]);
    assert_eq!(f.who(&req("h", "/t")), "HTTPRoute default/z-old rule 0");
    // The namespace does not matter when the ages differ.
    let f = routes_fixture(&[
        route("aaa", "a", NEW, &[], &[json!([prefix("/t")])]),
        route("zzz", "z", OLD, &[], &[json!([prefix("/t")])]),
    ]);
    assert_eq!(f.who(&req("h", "/t")), "HTTPRoute zzz/z rule 0");
}

#[test]
fn httproute_ties_then_go_by_namespace_and_name() {
    // > * The Route appearing first in alphabetical order by "{namespace}/{name}".
    let f = routes_fixture(&[
        route("default", "b", OLD, &[], &[json!([prefix("/t")])]),
        route("default", "a", OLD, &[], &[json!([prefix("/t")])]),
        route("default", "c", OLD, &[], &[json!([prefix("/t")])]),
    ]);
    assert_eq!(f.who(&req("h", "/t")), "HTTPRoute default/a rule 0");

    // The namespace comes first: "ns-a/z" < "ns-b/a".
    let f = routes_fixture(&[
        route("ns-b", "a", OLD, &[], &[json!([prefix("/t")])]),
        route("ns-a", "z", OLD, &[], &[json!([prefix("/t")])]),
    ]);
    assert_eq!(f.who(&req("h", "/t")), "HTTPRoute ns-a/z rule 0");

    // The order is that of the string "{namespace}/{name}": "team-a/x" < "team/x", because '-' sorts before '/'.
    let f = routes_fixture(&[
        route("team", "x", OLD, &[], &[json!([prefix("/t")])]),
        route("team-a", "x", OLD, &[], &[json!([prefix("/t")])]),
    ]);
    assert_eq!(f.who(&req("h", "/t")), "HTTPRoute team-a/x rule 0");
}

#[test]
fn httproute_ties_within_a_route_go_to_the_first_rule() {
    // > If ties still exist within an HTTPRoute, matching precedence MUST be granted to the FIRST matching rule
    // > (in list order) with a match meeting the above criteria.
    let f = routes_fixture(&[route(
        "default",
        "r",
        None,
        &[],
        &[
            json!([prefix("/a")]),
            json!([prefix("/r")]),
            json!([prefix("/r/")]),
            json!([prefix("/r/x")]),
        ],
    )]);
    assert_eq!(f.who(&req("h", "/r/y")), "HTTPRoute default/r rule 1");
    // ... "with a match meeting the above criteria": a later, more specific rule still wins.
    assert_eq!(f.who(&req("h", "/r/x")), "HTTPRoute default/r rule 3");

    // Rule order only breaks ties inside one route: across routes the route-level tie-breaks come first, so an
    // older route's second rule beats a newer route's first rule.
    let f = routes_fixture(&[
        route("default", "a-new", NEW, &[], &[json!([prefix("/t")])]),
        route(
            "default",
            "z-old",
            OLD,
            &[],
            &[json!([prefix("/other")]), json!([prefix("/t")])],
        ),
    ]);
    assert_eq!(f.who(&req("h", "/t")), "HTTPRoute default/z-old rule 1");
}

#[test]
fn httproute_regular_expression_ranks_between_exact_and_prefix() {
    // > Note: The precedence of RegularExpression path matches are implementation-specific.
    // Our documented choice: after Exact, before every Prefix (even a longer one), longer patterns first.
    let f = routes_fixture(&[
        route(
            "default",
            "a-prefix",
            OLD,
            &[],
            &[json!([prefix("/r/xyz/long/prefix")])],
        ),
        route("default", "b-root", OLD, &[], &[json!([prefix("/")])]),
        route("default", "m-regex", OLD, &[], &[json!([regex("/r/.*")])]),
        route(
            "default",
            "n-longer-regex",
            NEW,
            &[],
            &[json!([regex("/r/[a-z]+/.*")])],
        ),
        route(
            "default",
            "z-exact",
            NEW,
            &[],
            &[json!([exact("/r/xyz/long/prefix")])],
        ),
    ]);
    assert_eq!(
        f.who(&req("h", "/r/xyz/long/prefix")),
        "HTTPRoute default/z-exact rule 0"
    );
    assert_eq!(
        f.who(&req("h", "/r/xyz/long/prefix/more")),
        "HTTPRoute default/n-longer-regex rule 0"
    );
    assert_eq!(f.who(&req("h", "/r/x")), "HTTPRoute default/m-regex rule 0");
    assert_eq!(f.who(&req("h", "/r")), "HTTPRoute default/b-root rule 0");
    // Regular expressions match the whole path.
    assert_eq!(
        f.who(&req("h", "/x/r/y")),
        "HTTPRoute default/b-root rule 0"
    );
}

/// A recompile takes the previous router's compiled regexes (paths, header and query values) for unchanged
/// patterns (the same `Arc`), compiles new ones, drops those no longer used, and answers as a fresh compile does.
#[test]
fn recompiling_reuses_unchanged_regexes() {
    let valued = |p: &str, header: &str, query: &str| {
        json!({"path": {"type": "RegularExpression", "value": p},
            "headers": [{"type": "RegularExpression", "name": "x-v", "value": header}],
            "queryParams": [{"type": "RegularExpression", "name": "q", "value": query}]})
    };
    let before = routes_fixture(&[
        route("default", "a", OLD, &[], &[json!([regex("/a/[0-9]+")])]),
        route("default", "b", OLD, &[], &[json!([regex("/b/[a-z]+")])]),
        route(
            "default",
            "v",
            OLD,
            &[],
            &[json!([valued("/v/.*", "v[0-9]+", "(x|y)+")])],
        ),
    ]);
    let after = routes_fixture(&[
        route("default", "a", OLD, &[], &[json!([regex("/a/[0-9]+")])]),
        route("default", "c", OLD, &[], &[json!([regex("/c/.+")])]),
        route(
            "default",
            "v",
            OLD,
            &[],
            &[json!([valued("/v/.*", "v[0-9]+", "z+")])],
        ),
    ]);
    let reused = Router::compile_reusing(&after.out.model, Some(&before.router)).expect("compiles");
    let old = &before.router.regexes;
    for kept in ["/a/[0-9]+", "/v/.*", "v[0-9]+"] {
        assert!(Arc::ptr_eq(&reused.regexes[kept], &old[kept]), "{kept}");
        assert!(
            !Arc::ptr_eq(&after.router.regexes[kept], &old[kept]),
            "{kept}"
        );
    }
    let mut kept: Vec<&str> = reused.regexes.keys().map(|k| &**k).collect();
    kept.sort();
    assert_eq!(kept, ["/a/[0-9]+", "/c/.+", "/v/.*", "v[0-9]+", "z+"]);
    let reused = Fixture {
        out: after.out.clone(),
        router: reused,
    };
    let valued_req =
        |header: &str, query: &str| req("h", &format!("/v/1?q={query}")).header("x-v", header);
    for r in [
        req("h", "/a/12"),
        req("h", "/a/x"),
        req("h", "/b/x"),
        req("h", "/c/x"),
        req("h", "/c/"),
        valued_req("v12", "zz"),
        valued_req("v12", "xy"),
        valued_req("w12", "zz"),
        valued_req("v12x", "z"),
    ] {
        assert_eq!(reused.who(&r), after.who(&r), "{r:?}");
    }
    assert_eq!(reused.who(&req("h", "/c/x")), "HTTPRoute default/c rule 0");
    assert_eq!(reused.who(&req("h", "/b/x")), "404");
    assert_eq!(
        reused.who(&valued_req("v7", "zzz")),
        "HTTPRoute default/v rule 0"
    );
    assert_eq!(reused.who(&valued_req("v7", "x")), "404");
    assert_eq!(reused.who(&valued_req("v7x", "z")), "404");
}

#[test]
fn httproute_more_specific_hostname_comes_first() {
    // > In the event that multiple HTTPRoutes specify intersecting hostnames (e.g. overlapping wildcard matching
    // > and exact matching hostnames), precedence must be given to rules from the HTTPRoute with the largest
    // > number of:
    // > * Characters in a matching non-wildcard hostname.
    // > * Characters in a matching hostname.
    let f = routes_fixture(&[
        route("default", "a-any", OLD, &[], &[json!([exact("/x")])]),
        route(
            "default",
            "b-wild",
            OLD,
            &["*.example.com"],
            &[json!([exact("/x")])],
        ),
        route(
            "default",
            "c-deeper-wild",
            NEW,
            &["*.foo.example.com"],
            &[json!([prefix("/")])],
        ),
        route(
            "default",
            "z-exact",
            NEW,
            &["foo.example.com"],
            &[json!([prefix("/")])],
        ),
    ]);
    assert_eq!(
        f.who(&req("foo.example.com", "/x")),
        "HTTPRoute default/z-exact rule 0"
    );
    assert_eq!(
        f.who(&req("a.foo.example.com", "/x")),
        "HTTPRoute default/c-deeper-wild rule 0"
    );
    assert_eq!(
        f.who(&req("bar.example.com", "/x")),
        "HTTPRoute default/b-wild rule 0"
    );
    assert_eq!(f.who(&req("bar.example.com", "/y")), "404");
    assert_eq!(
        f.who(&req("example.com", "/x")),
        "HTTPRoute default/a-any rule 0"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// 3. Listener isolation (conformance test GatewayHTTPListenerIsolation)
// ---------------------------------------------------------------------------------------------------------------

/// The backends of the conformance infrastructure.
fn conformance_backends() -> String {
    let mut objects = Vec::new();
    for (i, name) in ["infra-backend-v1", "infra-backend-v2", "infra-backend-v3"]
        .iter()
        .enumerate()
    {
        objects.extend(service(
            "gateway-conformance-infra",
            name,
            &[&format!("10.1.0.{}", i + 1)],
        ));
    }
    docs(&objects)
}

/// tests/gateway-http-listener-isolation.yaml, with our GatewayClass.
const LISTENER_ISOLATION: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: http-listener-isolation
  namespace: gateway-conformance-infra
spec:
  gatewayClassName: portcullis
  listeners:
  - name: empty-hostname
    port: 80
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: All
  - name: wildcard-example-com
    port: 80
    protocol: HTTP
    hostname: "*.example.com"
    allowedRoutes:
      namespaces:
        from: All
  - name: wildcard-foo-example-com
    port: 80
    protocol: HTTP
    hostname: "*.foo.example.com"
    allowedRoutes:
      namespaces:
        from: All
  - name: abc-foo-example-com
    port: 80
    protocol: HTTP
    hostname: "abc.foo.example.com"
    allowedRoutes:
      namespaces:
        from: All
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: attaches-to-empty-hostname
  namespace: gateway-conformance-infra
spec:
  parentRefs:
  - name: http-listener-isolation
    namespace: gateway-conformance-infra
    sectionName: empty-hostname
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: /empty-hostname
    backendRefs:
    - name: infra-backend-v1
      port: 8080
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: attaches-to-wildcard-example-com
  namespace: gateway-conformance-infra
spec:
  parentRefs:
  - name: http-listener-isolation
    namespace: gateway-conformance-infra
    sectionName: wildcard-example-com
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: /wildcard-example-com
    backendRefs:
    - name: infra-backend-v1
      port: 8080
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: attaches-to-wildcard-foo-example-com
  namespace: gateway-conformance-infra
spec:
  parentRefs:
  - name: http-listener-isolation
    namespace: gateway-conformance-infra
    sectionName: wildcard-foo-example-com
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: /wildcard-foo-example-com
    backendRefs:
    - name: infra-backend-v1
      port: 8080
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: attaches-to-abc-foo-example-com
  namespace: gateway-conformance-infra
spec:
  parentRefs:
  - name: http-listener-isolation
    namespace: gateway-conformance-infra
    sectionName: abc-foo-example-com
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: /abc-foo-example-com
    backendRefs:
    - name: infra-backend-v1
      port: 8080
"#;

/// The same Gateway, with routes whose hostnames reach into the other listeners' hostnames
/// (tests/gateway-http-listener-isolation-with-hostname-intersection.yaml).
fn listener_isolation_with_intersection() -> String {
    let gw = LISTENER_ISOLATION.split("\n---\n").next().unwrap().replace(
        "name: http-listener-isolation\n",
        "name: http-listener-isolation-with-hostname-intersection\n",
    );
    let mut objects = vec![gw];
    let all = [
        "bar.com",
        "*.example.com",
        "*.foo.example.com",
        "abc.foo.example.com",
    ];
    for section in [
        "empty-hostname",
        "wildcard-example-com",
        "wildcard-foo-example-com",
        "abc-foo-example-com",
    ] {
        objects.push(
            serde_json::to_string_pretty(&json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                "metadata": {"name": format!("attaches-to-{section}-with-hostname-intersection"),
                             "namespace": "gateway-conformance-infra"},
                "spec": {
                    "parentRefs": [{"name": "http-listener-isolation-with-hostname-intersection",
                                    "namespace": "gateway-conformance-infra", "sectionName": section}],
                    "hostnames": all,
                    "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": format!("/{section}")}}],
                               "backendRefs": [{"name": "infra-backend-v1", "port": 8080}]}]
                }
            }))
            .unwrap(),
        );
    }
    objects.join("\n---\n")
}

/// The 16 requests of each GatewayHTTPListenerIsolation subtest (cases.jsonl 001-016 and 017-032): a request to
/// host H for path /L must reach the route of listener L exactly when L is the most specific listener of H.
const ISOLATION_CASES: &[(&str, &str, bool)] = &[
    ("bar.com", "/empty-hostname", true),
    ("bar.com", "/wildcard-example-com", false),
    ("bar.com", "/wildcard-foo-example-com", false),
    ("bar.com", "/abc-foo-example-com", false),
    ("bar.example.com", "/empty-hostname", false),
    ("bar.example.com", "/wildcard-example-com", true),
    ("bar.example.com", "/wildcard-foo-example-com", false),
    ("bar.example.com", "/abc-foo-example-com", false),
    ("bar.foo.example.com", "/empty-hostname", false),
    ("bar.foo.example.com", "/wildcard-example-com", false),
    ("bar.foo.example.com", "/wildcard-foo-example-com", true),
    ("bar.foo.example.com", "/abc-foo-example-com", false),
    ("abc.foo.example.com", "/empty-hostname", false),
    ("abc.foo.example.com", "/wildcard-example-com", false),
    ("abc.foo.example.com", "/wildcard-foo-example-com", false),
    ("abc.foo.example.com", "/abc-foo-example-com", true),
];

#[test]
fn gateway_listener_isolation() {
    let f = Fixture::new(&format!(
        "{LISTENER_ISOLATION}\n---\n{}",
        conformance_backends()
    ));
    for (i, (host, path, ok)) in ISOLATION_CASES.iter().enumerate() {
        let got = f.who(&req(host, path));
        if *ok {
            // e.g. "HTTPRoute gateway-conformance-infra/attaches-to-abc-foo-example-com rule 0"
            let want = format!(
                "HTTPRoute gateway-conformance-infra/attaches-to{} rule 0",
                path.replace('/', "-")
            );
            assert_eq!(
                got,
                want,
                "GatewayHTTPListenerIsolation/{:03}: {host}{path}",
                i + 1
            );
            assert_eq!(
                f.service(&req(host, path)),
                "gateway-conformance-infra/infra-backend-v1:8080"
            );
        } else {
            assert_eq!(
                got,
                "404",
                "GatewayHTTPListenerIsolation/{:03}: {host}{path}",
                i + 1
            );
        }
    }
    // Deeper names under the wildcard listeners are isolated the same way.
    assert_eq!(
        f.who(&req("x.y.foo.example.com", "/wildcard-foo-example-com")),
        "HTTPRoute gateway-conformance-infra/attaches-to-wildcard-foo-example-com rule 0"
    );
    assert_eq!(
        f.who(&req("x.y.foo.example.com", "/wildcard-example-com")),
        "404"
    );
    assert_eq!(
        f.who(&req("ABC.foo.example.com:80", "/empty-hostname")),
        "404"
    );
}

#[test]
fn gateway_listener_isolation_with_hostname_intersection() {
    let f = Fixture::new(&format!(
        "{}\n---\n{}",
        listener_isolation_with_intersection(),
        conformance_backends()
    ));
    for (i, (host, path, ok)) in ISOLATION_CASES.iter().enumerate() {
        let got = f.who(&req(host, path));
        if *ok {
            let want = format!(
                "HTTPRoute gateway-conformance-infra/attaches-to{}-with-hostname-intersection rule 0",
                path.replace('/', "-")
            );
            assert_eq!(
                got,
                want,
                "GatewayHTTPListenerIsolation/{:03}: {host}{path}",
                i + 17
            );
        } else {
            assert_eq!(
                got,
                "404",
                "GatewayHTTPListenerIsolation/{:03}: {host}{path}",
                i + 17
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 4. Hostname intersection (conformance test HTTPRouteHostnameIntersection)
// ---------------------------------------------------------------------------------------------------------------

/// tests/httproute-hostname-intersection.yaml, with our GatewayClass.
const HOSTNAME_INTERSECTION: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: httproute-hostname-intersection
  namespace: gateway-conformance-infra
spec:
  gatewayClassName: portcullis
  listeners:
  - name: listener-1
    port: 80
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: Same
    hostname: very.specific.com
  - name: listener-2
    port: 80
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: Same
    hostname: "*.wildcard.io"
  - name: listener-3
    port: 80
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: Same
    hostname: "*.anotherwildcard.io"
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: httproute-hostname-intersection-all
  namespace: gateway-conformance-infra
spec:
  gatewayClassName: portcullis
  listeners:
  - name: listener-1
    port: 80
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: Same
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: specific-host-matches-listener-specific-host
  namespace: gateway-conformance-infra
spec:
  parentRefs:
  - name: httproute-hostname-intersection
    namespace: gateway-conformance-infra
  hostnames:
  - non.matching.com
  - "*.nonmatchingwildcard.io"
  - very.specific.com  #  matches listener-1's specific host
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: /s1
    backendRefs:
    - name: infra-backend-v1
      port: 8080
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: specific-host-matches-listener-wildcard-host
  namespace: gateway-conformance-infra
spec:
  parentRefs:
  - name: httproute-hostname-intersection
    namespace: gateway-conformance-infra
  hostnames:
  - non.matching.com
  - wildcard.io
  - foo.wildcard.io  #  matches listener-2's wildcard host
  - bar.wildcard.io  #  matches listener-2's wildcard host
  - foo.bar.wildcard.io  #  matches listener-2's wildcard host
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: /s2
    backendRefs:
    - name: infra-backend-v2
      port: 8080
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: wildcard-host-matches-listener-specific-host
  namespace: gateway-conformance-infra
spec:
  parentRefs:
  - name: httproute-hostname-intersection
    namespace: gateway-conformance-infra
  hostnames:
  - non.matching.com
  - "*.specific.com"  # matches listener-1's specific host
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: /s3
    backendRefs:
    - name: infra-backend-v3
      port: 8080
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: wildcard-host-matches-listener-wildcard-host
  namespace: gateway-conformance-infra
spec:
  parentRefs:
  - name: httproute-hostname-intersection
    namespace: gateway-conformance-infra
  hostnames:
  - "*.anotherwildcard.io"  # matches listener-3's wildcard host
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: /s4
    backendRefs:
    - name: infra-backend-v1
      port: 8080
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: no-intersecting-hosts
  namespace: gateway-conformance-infra
spec:
  parentRefs:
  - name: httproute-hostname-intersection
    namespace: gateway-conformance-infra
  hostnames:
  - specific.but.wrong.com
  - wildcard.io
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: /s5
    backendRefs:
    - name: infra-backend-v2
      port: 8080
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: httproute-hostname-intersection-all
  namespace: gateway-conformance-infra
spec:
  parentRefs:
  - name: httproute-hostname-intersection-all
    namespace: gateway-conformance-infra
  hostnames:
  - first.com
  - sub.first.com
  - second.com
  - sub.second.com
  rules:
  - backendRefs:
    - name: infra-backend-v2
      port: 8080
"#;

/// cases.jsonl, "test":"HTTPRouteHostnameIntersection": (id, host, path, backend or None for 404).
const INTERSECTION_CASES: &[(u32, &str, &str, Option<&str>)] = &[
    (1, "very.specific.com", "/s1", Some("infra-backend-v1")),
    (2, "very.specific.com:1234", "/s1", Some("infra-backend-v1")),
    (3, "non.matching.com", "/s1", None),
    (4, "foo.nonmatchingwildcard.io", "/s1", None),
    (5, "foo.wildcard.io", "/s1", None),
    (6, "very.specific.com", "/non-matching-prefix", None),
    (7, "foo.wildcard.io", "/s2", Some("infra-backend-v2")),
    (8, "bar.wildcard.io", "/s2", Some("infra-backend-v2")),
    (9, "foo.bar.wildcard.io", "/s2", Some("infra-backend-v2")),
    (10, "non.matching.com", "/s2", None),
    (11, "wildcard.io", "/s2", None),
    (12, "very.specific.com", "/s2", None),
    (13, "foo.wildcard.io", "/non-matching-prefix", None),
    (14, "very.specific.com", "/s3", Some("infra-backend-v3")),
    (15, "non.matching.com", "/s3", None),
    (16, "foo.specific.com", "/s3", None),
    (17, "foo.wildcard.io", "/s3", None),
    (18, "very.specific.com", "/non-matching-prefix", None),
    (
        19,
        "foo.anotherwildcard.io",
        "/s4",
        Some("infra-backend-v1"),
    ),
    (
        20,
        "bar.anotherwildcard.io",
        "/s4",
        Some("infra-backend-v1"),
    ),
    (
        21,
        "foo.bar.anotherwildcard.io",
        "/s4",
        Some("infra-backend-v1"),
    ),
    (22, "anotherwildcard.io", "/s4", None),
    (23, "foo.wildcard.io", "/s4", None),
    (24, "very.specific.com", "/s4", None),
    (25, "foo.anotherwildcard.io", "/non-matching-prefix", None),
    (26, "specific.but.wrong.com", "/s5", None),
    (27, "wildcard.io", "/s5", None),
    (28, "first.com", "/", Some("infra-backend-v2")),
    (29, "sub.first.com", "/", Some("infra-backend-v2")),
    (30, "second.com", "/", Some("infra-backend-v2")),
    (31, "sub.second.com", "/", Some("infra-backend-v2")),
    (32, "third.com", "/", None),
    (33, "sub.third.com", "/", None),
];

#[test]
fn httproute_hostname_intersection() {
    // The route no-intersecting-hosts is not attached (an error diagnostic), so the fixture is lenient.
    let f = Fixture::lenient(&format!(
        "{HOSTNAME_INTERSECTION}\n---\n{}",
        conformance_backends()
    ));
    let errors: Vec<String> = f
        .out
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| d.to_string())
        .collect();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].contains("no-intersecting-hosts"), "{errors:#?}");

    for (id, host, path, backend) in INTERSECTION_CASES {
        let want = match backend {
            Some(b) => format!("gateway-conformance-infra/{b}:8080"),
            None => "404".to_string(),
        };
        assert_eq!(
            f.service(&req(host, path)),
            want,
            "HTTPRouteHostnameIntersection/{id:03}: {host}{path}"
        );
    }
}

/// Replays every case of GatewayHTTPListenerIsolation and HTTPRouteHostnameIntersection straight from the
/// conformance files in `../shared/conformance/gateway-api` (next to this workspace), so the hand-copied tables
/// above cannot drift from upstream. Without that directory the test fails: it must not pass having checked
/// nothing.
#[test]
fn conformance_cases_replayed_from_shared_files() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/gateway-api");
    let cases = std::fs::read_to_string(dir.join("cases.jsonl")).unwrap_or_else(|e| {
        panic!(
            "the Gateway API conformance data is missing: cannot read {}: {e}. The test replays its cases and \
             cannot pass without them: put the shared conformance folder next to the workspace (see \
             docs/conformance.md)",
            dir.join("cases.jsonl").display()
        )
    });
    for test in [
        "GatewayHTTPListenerIsolation",
        "HTTPRouteHostnameIntersection",
    ] {
        let cases: Vec<Value> = cases
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|c| c["test"] == test)
            .collect();
        assert!(!cases.is_empty(), "no cases for {test}");
        let mut manifests: Vec<&str> = cases
            .iter()
            .flat_map(|c| c["manifests"].as_array().unwrap().iter())
            .map(|m| m.as_str().unwrap())
            .collect();
        manifests.sort();
        manifests.dedup();
        let mut yaml = conformance_backends();
        for m in manifests {
            let text = std::fs::read_to_string(dir.join(m)).unwrap();
            yaml.push_str("\n---\n");
            yaml.push_str(&text.replace("{GATEWAY_CLASS_NAME}", "portcullis"));
        }
        let f = Fixture::lenient(&yaml);
        for c in &cases {
            let r = &c["request"];
            assert_eq!(c["gateway_port"], 80, "{}", c["id"]);
            assert_eq!(r["method"], "GET", "{}", c["id"]);
            assert!(r["headers"].is_null(), "{}", c["id"]);
            let request = req(
                r["host"].as_str().unwrap(),
                r["path_and_query"].as_str().unwrap(),
            );
            let status = &c["response"]["status"];
            let want = if status == &json!([404]) {
                "404".to_string()
            } else {
                assert_eq!(status, &json!([200]), "{}", c["id"]);
                format!(
                    "{}/{}:8080",
                    c["namespace"].as_str().unwrap(),
                    c["backend"].as_str().unwrap()
                )
            };
            assert_eq!(f.service(&request), want, "{}: {}", c["id"], c["subtest"]);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 5. Ingress and HTTPRoute on one host and port
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn ingress_and_httproute_merge_on_one_host() {
    // The Ingress is the older object: the HTTPRoute wins identical matches anyway (documented choice).
    let f = routes_fixture_with(
        &[ingress(
            "legacy",
            Some("2019-01-01T00:00:00Z"),
            &[
                (Some("app.example.com"), "Prefix", "/legacy"),
                (Some("app.example.com"), "Prefix", "/shared"),
                (Some("app.example.com"), "Prefix", "/api/v2"),
                (Some("app.example.com"), "Exact", "/exact"),
            ],
        )],
        &[route(
            "default",
            "modern",
            NEW,
            &["app.example.com"],
            &[
                json!([prefix("/modern")]),
                json!([prefix("/shared")]),
                json!([prefix("/api")]),
                json!([prefix("/exact")]),
            ],
        )],
    );
    let who = |p: &str| f.who(&req("app.example.com", p));
    // Different paths: one table.
    assert_eq!(who("/legacy/x"), "Ingress default/legacy rule 0");
    assert_eq!(who("/modern/x"), "HTTPRoute default/modern rule 0");
    // An identical match: the HTTPRoute rule wins.
    assert_eq!(who("/shared"), "HTTPRoute default/modern rule 1");
    assert_eq!(who("/shared/x"), "HTTPRoute default/modern rule 1");
    // A more specific Ingress path beats a less specific HTTPRoute prefix, and vice versa.
    assert_eq!(who("/api/v2/x"), "Ingress default/legacy rule 2");
    assert_eq!(who("/api/v1"), "HTTPRoute default/modern rule 2");
    // An Ingress Exact path beats an HTTPRoute prefix of the same text.
    assert_eq!(who("/exact"), "Ingress default/legacy rule 3");
    assert_eq!(who("/exact/x"), "HTTPRoute default/modern rule 3");
    assert_eq!(who("/nothing"), "404");
    // Another host is served by neither.
    assert_eq!(f.who(&req("other.example.com", "/legacy")), "404");

    // The shadowed Ingress path is reported.
    assert!(
        f.out
            .diagnostics
            .iter()
            .any(|d| d.severity == Severity::Warning
                && d.object.name == "legacy"
                && d.message.contains("/shared")),
        "{:#?}",
        f.out.diagnostics
    );
}

#[test]
fn ingress_and_httproute_tie_on_a_wildcard_host() {
    // The same wildcard on both sides (Ingress "*.example.com" covers one label, Gateway API any number; for a
    // one-label host both match with the same number of characters): an identical match still goes to the
    // HTTPRoute, as on an exact host.
    let f = routes_fixture_with(
        &[ingress(
            "legacy",
            OLD,
            &[
                (Some("*.example.com"), "Prefix", "/shared"),
                (Some("*.example.com"), "Prefix", "/legacy"),
            ],
        )],
        &[route(
            "default",
            "modern",
            NEW,
            &["*.example.com"],
            &[json!([prefix("/shared")])],
        )],
    );
    assert_eq!(
        f.who(&req("a.example.com", "/shared")),
        "HTTPRoute default/modern rule 0"
    );
    assert_eq!(
        f.who(&req("a.b.example.com", "/shared")),
        "HTTPRoute default/modern rule 0"
    );
    assert_eq!(
        f.who(&req("a.example.com", "/legacy")),
        "Ingress default/legacy rule 1"
    );
    assert_eq!(f.who(&req("a.b.example.com", "/legacy")), "404");
}

#[test]
fn ingress_rules_take_part_under_every_listener_hostname() {
    // A Gateway whose listeners all have hostnames; Ingress rules for hosts under them (and without a host) must
    // still answer: listener isolation only separates Gateway listeners from each other.
    let gw = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "default"},
        "spec": {"gatewayClassName": "portcullis", "listeners": [
            {"name": "app", "port": 80, "protocol": "HTTP", "hostname": "app.example.com"},
            {"name": "wild", "port": 80, "protocol": "HTTP", "hostname": "*.example.com"}
        ]}
    });
    let mut objects = vec![gw];
    objects.extend(service("default", "backend", &["10.0.0.1"]));
    objects.push(route(
        "default",
        "modern",
        NEW,
        &[],
        &[json!([prefix("/modern")])],
    ));
    objects.push(ingress(
        "legacy",
        OLD,
        &[
            (Some("app.example.com"), "Prefix", "/legacy"),
            (Some("other.example.com"), "Prefix", "/legacy"),
            (None, "Prefix", "/anyhost"),
            (Some("app.example.com"), "Prefix", "/"),
        ],
    ));
    let f = Fixture::new(&docs(&objects));

    assert_eq!(
        f.who(&req("app.example.com", "/modern")),
        "HTTPRoute default/modern rule 0"
    );
    assert_eq!(
        f.who(&req("app.example.com", "/legacy/x")),
        "Ingress default/legacy rule 0"
    );
    // (A host's own rules come first: its Prefix "/" beats the host-less "/anyhost".)
    assert_eq!(
        f.who(&req("app.example.com", "/anyhost")),
        "Ingress default/legacy rule 3"
    );
    assert_eq!(
        f.who(&req("app.example.com", "/else")),
        "Ingress default/legacy rule 3"
    );
    assert_eq!(
        f.who(&req("other.example.com", "/modern")),
        "HTTPRoute default/modern rule 0"
    );
    assert_eq!(
        f.who(&req("other.example.com", "/legacy")),
        "Ingress default/legacy rule 1"
    );
    assert_eq!(
        f.who(&req("other.example.com", "/anyhost")),
        "Ingress default/legacy rule 2"
    );
    assert_eq!(f.who(&req("other.example.com", "/else")), "404");
    // No listener covers these hosts: only the Ingress rules answer.
    assert_eq!(
        f.who(&req("elsewhere.org", "/anyhost")),
        "Ingress default/legacy rule 2"
    );
    assert_eq!(f.who(&req("elsewhere.org", "/modern")), "404");
}

/// Like [`routes_fixture`], with Ingresses too.
fn routes_fixture_with(ingresses: &[Value], routes: &[Value]) -> Fixture {
    let mut objects = vec![gateway()];
    objects.extend(service("default", "backend", &["10.0.0.1"]));
    objects.extend(service("default", "svc", &["10.0.0.2"]));
    objects.extend(ingresses.iter().cloned());
    objects.extend(routes.iter().cloned());
    Fixture::new(&docs(&objects))
}

// ---------------------------------------------------------------------------------------------------------------
// 6. Weighted backends and round-robin endpoints
// ---------------------------------------------------------------------------------------------------------------

/// A route whose rules forward to weighted backendRefs: `/split` to a:1, b:3, zero:0; `/zeros` to a:0, b:0;
/// `/one-zero` to a:0; `/rr` to the three-endpoint Service `rr`.
fn weighted_fixture() -> Fixture {
    let mut objects = vec![gateway()];
    objects.extend(service("default", "a", &["10.0.0.1"]));
    objects.extend(service("default", "b", &["10.0.0.2"]));
    objects.extend(service("default", "zero", &["10.0.0.3"]));
    objects.extend(service(
        "default",
        "rr",
        &["10.0.1.3", "10.0.1.1", "10.0.1.2"],
    ));
    let refs = |pairs: &[(&str, u32)]| -> Value {
        pairs
            .iter()
            .map(|(n, w)| json!({"name": n, "port": 8080, "weight": w}))
            .collect()
    };
    objects.push(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "weights", "namespace": "default"},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": [
            {"matches": [prefix("/split")], "backendRefs": refs(&[("a", 1), ("b", 3), ("zero", 0)])},
            {"matches": [prefix("/zeros")], "backendRefs": refs(&[("a", 0), ("b", 0)])},
            {"matches": [prefix("/one-zero")], "backendRefs": refs(&[("a", 0)])},
            {"matches": [prefix("/rr")], "backendRefs": [{"name": "rr", "port": 8080}]}
        ]}
    }));
    Fixture::new(&docs(&objects))
}

fn forward<'f>(f: &'f Fixture, path: &str) -> &'f WeightedBackends {
    let e = f.find(&req("h", path)).expect("a rule answers");
    match &e.rule.action {
        CompiledAction::Forward(wb) => wb,
        CompiledAction::Redirect(_) => panic!("redirect"),
    }
}

fn service_of(f: &Fixture, b: &CompiledBackend) -> String {
    match &b.target {
        Target::Backend(id) => f
            .out
            .model
            .backends
            .keys()
            .nth(id.0 as usize)
            .map(ToString::to_string)
            .expect("the id indexes the model's backends"),
        Target::Status { status, reason } => panic!("backend answers {status} ({reason})"),
    }
}

#[test]
fn weighted_pick_follows_weights() {
    let f = weighted_fixture();
    let wb = forward(&f, "/split");
    assert_eq!(wb.backends().len(), 3);
    fastrand::seed(7);
    const DRAWS: usize = 20_000;
    let (mut a, mut b) = (0usize, 0usize);
    for _ in 0..DRAWS {
        match service_of(&f, wb.pick().expect("weights are not all zero").1).as_str() {
            "default/a:8080" => a += 1,
            "default/b:8080" => b += 1,
            other => panic!("picked {other}, whose weight is 0"),
        }
    }
    // Expected 25% / 75%; the standard deviation of the share is 0.3%, the tolerance 3%.
    let share_a = a as f64 / DRAWS as f64;
    let share_b = b as f64 / DRAWS as f64;
    assert!((share_a - 0.25).abs() < 0.03, "a got {share_a}");
    assert!((share_b - 0.75).abs() < 0.03, "b got {share_b}");
}

#[test]
fn weighted_pick_with_only_zero_weights_is_none() {
    let f = weighted_fixture();
    let zeros = forward(&f, "/zeros");
    assert_eq!(zeros.backends().len(), 2);
    let one_zero = forward(&f, "/one-zero");
    assert_eq!(one_zero.backends().len(), 1);
    for _ in 0..100 {
        assert!(zeros.pick().is_none());
        assert!(one_zero.pick().is_none());
    }
}

#[test]
fn endpoints_round_robin_cycles_through_all_addresses() {
    let f = weighted_fixture();
    let wb = forward(&f, "/rr");
    let Target::Backend(id) = &wb.pick().unwrap().1.target else {
        panic!("rr resolves to a backend")
    };
    let ups = crate::proxy::upstream::Upstreams::reconcile(&f.out.model, &Default::default());
    let up = ups.get(*id).expect("the id indexes the upstreams");
    assert_eq!(up.endpoints().len(), 3);
    let tried = crate::proxy::upstream::Tried::default();
    let next = || up.endpoints()[up.select(b"", &tried).unwrap()].addr;
    let first: Vec<SocketAddr> = (0..3).map(|_| next()).collect();
    let mut sorted = first.clone();
    sorted.sort();
    sorted.dedup();
    let want: Vec<SocketAddr> = ["10.0.1.1:3000", "10.0.1.2:3000", "10.0.1.3:3000"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(sorted, want, "one round visits every address once");
    for round in 0..5 {
        let again: Vec<SocketAddr> = (0..3).map(|_| next()).collect();
        assert_eq!(again, first, "round {round} repeats the order");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 7. Many hosts
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn lookup_is_right_among_ten_thousand_hosts() {
    const HOSTS: usize = 10_000;
    // One Ingress with a rule per host (path index i = host i), then an Ingress one-label wildcard, an exact host
    // that the wildcard also covers, and a host-less catch-all path; plus an HTTPRoute on a Gateway API wildcard.
    let mut rules: Vec<(Option<String>, &str, &str)> = (0..HOSTS)
        .map(|i| (Some(format!("host-{i}.example.com")), "Prefix", "/"))
        .collect();
    rules.push((Some("*.wild.example.com".into()), "Prefix", "/")); // rule HOSTS
    rules.push((Some("exact.wild.example.com".into()), "Exact", "/only")); // rule HOSTS + 1
    rules.push((None, "Exact", "/fallback")); // rule HOSTS + 2
    let rules: Vec<(Option<&str>, &str, &str)> = rules
        .iter()
        .map(|(h, t, p)| (h.as_deref(), *t, *p))
        .collect();
    let f = routes_fixture_with(
        &[ingress("big", None, &rules)],
        &[route(
            "default",
            "deep",
            None,
            &["*.deep.example.com"],
            &[json!([prefix("/")])],
        )],
    );
    let ing = |i: usize| format!("Ingress default/big rule {i}");

    assert_eq!(f.who(&req("host-0.example.com", "/")), ing(0));
    assert_eq!(f.who(&req("host-4711.example.com", "/a/b")), ing(4711));
    assert_eq!(f.who(&req("HOST-9999.example.com:80", "/")), ing(HOSTS - 1));
    assert_eq!(f.who(&req("host-10000.example.com", "/")), "404");
    assert_eq!(
        f.who(&req("host-10000.example.com", "/fallback")),
        ing(HOSTS + 2)
    );
    // A host's own rules come before host-less ones (host specificity first).
    assert_eq!(f.who(&req("host-1.example.com", "/fallback")), ing(1));
    assert_eq!(f.who(&req("x.wild.example.com", "/z")), ing(HOSTS));
    assert_eq!(
        f.who(&req("exact.wild.example.com", "/only")),
        ing(HOSTS + 1)
    );
    assert_eq!(f.who(&req("exact.wild.example.com", "/z")), ing(HOSTS));
    assert_eq!(f.who(&req("x.y.wild.example.com", "/z")), "404");
    assert_eq!(
        f.who(&req("a.b.deep.example.com", "/z")),
        "HTTPRoute default/deep rule 0"
    );
    assert_eq!(f.who(&req("deep.example.com", "/z")), "404");
}

// ---------------------------------------------------------------------------------------------------------------
// 8. normalize_host
// ---------------------------------------------------------------------------------------------------------------

fn norm(raw: &[u8]) -> Option<String> {
    let mut buf = [0u8; 256];
    normalize_host(raw, &mut buf).map(str::to_string)
}

#[test]
fn normalize_host_cases() {
    let some = |s: &str| Some(s.to_string());
    assert_eq!(norm(b"example.com"), some("example.com"));
    assert_eq!(norm(b"EXAMPLE.Com"), some("example.com"));
    assert_eq!(norm(b"example.com:8080"), some("example.com"));
    assert_eq!(norm(b"Example.COM:80"), some("example.com"));
    assert_eq!(norm(b"example.com."), some("example.com"));
    assert_eq!(norm(b"example.com.:443"), some("example.com"));
    assert_eq!(norm(b"10.0.0.1:80"), some("10.0.0.1"));
    assert_eq!(norm(b"[::1]:80"), some("[::1]"));
    assert_eq!(norm(b"[::1]"), some("[::1]"));
    assert_eq!(norm(b"[FE80::1]:8080"), some("[fe80::1]"));
    assert_eq!(norm(b""), some(""));
    assert_eq!(norm(b"\xff.example.com"), None, "not UTF-8");

    // Longest accepted: 255 bytes; anything longer is refused, with or without a port.
    // (Labels of 60 letters, so neither byte 255 nor byte 256 is a dot that would be stripped as a trailing one.)
    let label = "a".repeat(60);
    let long = |n: usize| -> String {
        let mut s = [label.as_str(); 6].join(".");
        s.truncate(n);
        s
    };
    assert_eq!(norm(long(255).as_bytes()), Some(long(255)));
    assert_eq!(
        norm(format!("{}:80", long(255)).as_bytes()),
        Some(long(255))
    );
    assert_eq!(norm(long(256).as_bytes()), None);
    assert_eq!(norm(format!("{}:80", long(256)).as_bytes()), None);
    assert_eq!(norm("b".repeat(1000).as_bytes()), None);
}

/// The walk's inline checks (path literal prefix, exact header value hash) only skip entries that cannot match:
/// more header names than a lookup caches, repeated headers (compared joined), absent headers, regex paths.
#[test]
fn inline_checks_never_skip_a_match() {
    let hm = |name: &str, value: &str| {
        json!({"path": {"type": "PathPrefix", "value": "/"},
        "headers": [{"name": name, "value": value}]})
    };
    let mut rules: Vec<Value> = (0..6)
        .map(|i| json!([hm(&format!("x-n{i}"), "v")]))
        .collect();
    rules.push(json!([hm("x-multi", "a,b")]));
    rules.push(json!([{"path": {"type": "RegularExpression", "value": "/api/v[0-9]+/items"}}]));
    rules.push(json!([{"path": {"type": "RegularExpression", "value": "(?i)/CaSe"}}]));
    let f = routes_fixture(&[route("default", "r", OLD, &[], &rules)]);
    let r = || req("h", "/x");
    assert_eq!(f.who(&r()), "404");
    for i in 0..6 {
        // Earlier rules' headers present with other values: every name is probed, the right rule still wins.
        let mut q = r();
        for j in 0..6 {
            q = q.header(&format!("x-n{j}"), if j == i { "v" } else { "w" });
        }
        assert_eq!(f.who(&q), format!("HTTPRoute default/r rule {i}"), "x-n{i}");
    }
    assert_eq!(
        f.who(&r().header("x-multi", "a").header("x-multi", "b")),
        "HTTPRoute default/r rule 6"
    );
    assert_eq!(
        f.who(&r().header("x-multi", "a,b")),
        "HTTPRoute default/r rule 6"
    );
    assert_eq!(f.who(&r().header("x-multi", "a")), "404");
    assert_eq!(
        f.who(&req("h", "/api/v12/items")),
        "HTTPRoute default/r rule 7"
    );
    assert_eq!(f.who(&req("h", "/api/v/items")), "404");
    assert_eq!(f.who(&req("h", "/case")), "HTTPRoute default/r rule 8");
    assert_eq!(f.who(&req("h", "/CASE")), "HTTPRoute default/r rule 8");
}

/// A path regex is checked from the list (`Candidate::path_regex`) before the entry's other conditions: both must
/// hold. A path longer than the inline check's minimum length (saturated at 65,535 bytes) and a regex head longer
/// than its inline prefix are still decided right.
#[test]
fn path_regex_and_other_conditions_and_long_paths() {
    let long = format!("/{}", "a".repeat(70_000));
    let rules = vec![
        json!([{"path": {"type": "RegularExpression", "value": "/api/v[0-9]+"}, "method": "POST"}]),
        json!([{"path": {"type": "RegularExpression", "value": "/api/v[0-9]+"},
                "headers": [{"name": "x-env", "value": "canary"}]}]),
        json!([{"path": {"type": "RegularExpression", "value": "/api/v[0-9]+"}}]),
        json!([{"path": {"type": "RegularExpression", "value": "/a-very-long-literal-prefix/[0-9]+"}}]),
        json!([exact(&long)]),
    ];
    let f = routes_fixture(&[route("default", "r", OLD, &[], &rules)]);
    let rule = |i: usize| format!("HTTPRoute default/r rule {i}");
    assert_eq!(f.who(&req("h", "/api/v2").method(Method::POST)), rule(0));
    assert_eq!(
        f.who(&req("h", "/api/v2").header("x-env", "canary")),
        rule(1)
    );
    assert_eq!(f.who(&req("h", "/api/v2").header("x-env", "prod")), rule(2));
    assert_eq!(f.who(&req("h", "/api/v2x").method(Method::POST)), "404");
    assert_eq!(f.who(&req("h", "/a-very-long-literal-prefix/42")), rule(3));
    assert_eq!(f.who(&req("h", "/a-very-long-literal-prefiX/42")), "404");
    assert_eq!(f.who(&req("h", &long)), rule(4));
    assert_eq!(f.who(&req("h", &long[..long.len() - 1])), "404");
    assert_eq!(f.who(&req("h", &format!("{long}a"))), "404");
}

/// A precedence-sorted list is walked entry by entry in a big, cold table: each entry's inline checks and its
/// path regex pointer fit in 48 bytes (four entries in three cache lines).
#[test]
#[cfg(target_pointer_width = "64")]
fn list_entries_stay_small() {
    assert_eq!(std::mem::size_of::<Candidate>(), 48);
}

/// A header regex with a literal prefix gets an inline check too (the prefix's first 8 bytes); it only skips
/// entries that cannot match: prefixes longer than the check, repeated headers (compared joined), regexes without
/// a literal prefix, an exact condition next to a regex one.
#[test]
fn inline_header_regex_checks_never_skip_a_match() {
    let hr = |name: &str, value: &str| json!({"type": "RegularExpression", "name": name, "value": value});
    let on = |headers: Value| json!([{"path": {"type": "PathPrefix", "value": "/"}, "headers": headers}]);
    let rules = vec![
        on(json!([hr("x-v", "version-2024\\.[0-9]+")])),
        on(json!([hr("x-v", "v[0-9]")])),
        on(json!([hr("x-m", "a,.*")])),
        on(json!([hr("x-c", "(?i)abc")])),
        on(json!([{"name": "x-e", "value": "1"}, hr("x-r", "id-[0-9]+")])),
    ];
    let f = routes_fixture(&[route("default", "r", OLD, &[], &rules)]);
    let r = || req("h", "/x");
    let rule = |i: usize| format!("HTTPRoute default/r rule {i}");
    assert_eq!(f.who(&r()), "404");
    assert_eq!(f.who(&r().header("x-v", "version-2024.7")), rule(0));
    assert_eq!(f.who(&r().header("x-v", "version-2023.7")), "404");
    assert_eq!(f.who(&r().header("x-v", "v7")), rule(1));
    assert_eq!(f.who(&r().header("x-v", "w7")), "404");
    assert_eq!(f.who(&r().header("x-v", "version")), "404");
    assert_eq!(f.who(&r().header("x-m", "a").header("x-m", "b")), rule(2));
    assert_eq!(f.who(&r().header("x-m", "a,b")), rule(2));
    assert_eq!(f.who(&r().header("x-m", "b").header("x-m", "a")), "404");
    assert_eq!(f.who(&r().header("x-c", "ABC")), rule(3));
    assert_eq!(
        f.who(&r().header("x-e", "1").header("x-r", "id-5")),
        rule(4)
    );
    assert_eq!(f.who(&r().header("x-e", "1").header("x-r", "id-x")), "404");
    assert_eq!(f.who(&r().header("x-e", "2").header("x-r", "id-5")), "404");
}

/// ingress-nginx renders one nginx `server` per host: a request whose host is an ingress-nginx server and that none
/// of the server's locations matches gets the server's default location (the default backend, 404 by default),
/// never a less specific server. Ingresses of the `nginx` class (taken over) against our class and Gateway API.
#[test]
fn an_ingress_nginx_host_does_not_fall_through_to_less_specific_hosts() {
    let nginx_class = json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx"}
    });
    let ingress =
        |name: &str, class: &str, created: &str, host: Option<&str>, paths: &[(&str, &str)]| {
            let paths: Vec<Value> = paths
                .iter()
                .map(|(ty, p)| {
                    json!({"path": p, "pathType": ty,
                       "backend": {"service": {"name": name, "port": {"number": 80}}}})
                })
                .collect();
            let mut rule = json!({"http": {"paths": paths}});
            if let Some(h) = host {
                rule["host"] = json!(h);
            }
            json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": {"name": name, "namespace": "store", "creationTimestamp": created},
                "spec": {"ingressClassName": class, "rules": [rule]}
            })
        };
    let on_api = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "on-api", "namespace": "default", "creationTimestamp": OLD},
        "spec": {"parentRefs": [{"name": "gw"}], "hostnames": ["api.shop.example.com"],
                 "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/v9"}}],
                            "backendRefs": [{"name": "r", "port": 8080}]}]}
    });
    let gw_host = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "gw-host", "namespace": "default", "creationTimestamp": OLD},
        "spec": {"parentRefs": [{"name": "gw"}], "hostnames": ["gw.shop.example.com"],
                 "rules": [{"matches": [{"path": {"type": "Exact", "value": "/x"}}],
                            "backendRefs": [{"name": "r", "port": 8080}]}]}
    });
    let objects = |api_default: Option<&str>| {
        let mut api = ingress(
            "api",
            "nginx",
            "2024-01-02T00:00:00Z",
            Some("api.shop.example.com"),
            &[("Prefix", "/v1")],
        );
        if let Some(d) = api_default {
            api["spec"]["defaultBackend"] = json!({"service": {"name": d, "port": {"number": 80}}});
        }
        docs(&[
            nginx_class.clone(),
            gateway(),
            api,
            ingress(
                "wild",
                "nginx",
                "2024-01-03T00:00:00Z",
                Some("*.shop.example.com"),
                &[("Prefix", "/")],
            ),
            ingress(
                "any",
                "nginx",
                "2024-01-04T00:00:00Z",
                None,
                &[("Prefix", "/")],
            ),
            ingress(
                "plain",
                "portcullis",
                "2024-01-05T00:00:00Z",
                Some("plain.shop.example.com"),
                &[("Exact", "/a")],
            ),
            on_api.clone(),
            gw_host.clone(),
        ])
    };
    let opts = Options {
        nginx: crate::translate::nginx::NginxOptions {
            classes: vec!["nginx".into()],
            ..Default::default()
        },
        ..Options::default()
    };
    let fixture = |yaml: &str| {
        let f = Fixture::lenient_with(yaml, &opts);
        let errors: Vec<String> = f
            .out
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| d.to_string())
            .collect();
        assert!(errors.is_empty(), "translation errors: {errors:#?}");
        f
    };

    let f = fixture(&objects(None));
    let api = "api.shop.example.com";
    assert_eq!(f.who(&req(api, "/v1/x")), "Ingress store/api rule 0");
    // The server's own rules, of every source, still take part...
    assert_eq!(f.who(&req(api, "/v9")), "HTTPRoute default/on-api rule 0");
    // ...and nothing less specific: not `*.shop.example.com`, not the catch-all.
    assert_eq!(f.who(&req(api, "/v1beta")), "404");
    assert_eq!(f.who(&req("API.shop.example.com:8080", "/")), "404");
    // A wildcard server stops too: a host it covers does not reach the catch-all.
    assert_eq!(
        f.who(&req("x.shop.example.com", "/p")),
        "Ingress store/wild rule 0"
    );
    // Hosts whose most specific hostname has no ingress-nginx rule keep the Gateway API ordering: our class and
    // HTTPRoutes fall through to the wildcard server.
    assert_eq!(
        f.who(&req("plain.shop.example.com", "/a")),
        "Ingress store/plain rule 0"
    );
    assert_eq!(
        f.who(&req("plain.shop.example.com", "/c")),
        "Ingress store/wild rule 0"
    );
    assert_eq!(
        f.who(&req("gw.shop.example.com", "/x")),
        "HTTPRoute default/gw-host rule 0"
    );
    assert_eq!(
        f.who(&req("gw.shop.example.com", "/y")),
        "Ingress store/wild rule 0"
    );
    assert_eq!(
        f.who(&req("a.b.shop.example.com", "/")),
        "Ingress store/any rule 0"
    );

    // The server's default location is the spec.defaultBackend of the Ingress that owns it (the oldest with a
    // rule for the host)...
    let f = fixture(&objects(Some("api-default")));
    assert_eq!(
        f.who(&req(api, "/v1beta")),
        "Ingress store/api defaultBackend"
    );
    // ...never that of another Ingress: an older Ingress without rules holds the default backend here.
    let mut yaml = objects(None);
    yaml.push_str("\n---\n");
    yaml.push_str(&docs(&[json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "fallback", "namespace": "store", "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"ingressClassName": "nginx",
                 "defaultBackend": {"service": {"name": "fallback", "port": {"number": 80}}}}
    })]));
    let f = fixture(&yaml);
    assert_eq!(f.who(&req(api, "/v1beta")), "404");
    assert_eq!(
        f.who(&req("x.shop.example.com", "/p")),
        "Ingress store/wild rule 0"
    );
    assert_eq!(
        f.who(&req("plain.shop.example.com", "/c")),
        "Ingress store/wild rule 0"
    );
    assert_eq!(
        f.who(&req("other.example.org", "/")),
        "Ingress store/any rule 0"
    );
}
