//! Routing tables for the benches, generated as the Kubernetes YAML a user would write, so that every bench runs
//! the production pipeline: YAML files → [`parse_str`] + [`assemble`] (what the file source does) → [`translate`]
//! → [`Router::compile`].
//!
//! The YAML is split into files of [`HOSTS_PER_FILE`] hosts, as a user must: the file source reads at most 1,024
//! documents (and 250,000 YAML nodes) per file.
//!
//! Shape: `routes` (host, match) pairs spread over `max(1, routes / 10)` hosts `h{K}.bench.test`, ten matches per
//! host (`r0` .. `r9`), in precedence order: `r0` is the host's first rule, `r9` its last. Each host has its own
//! object (Ingress or HTTPRoute) and its own Service with one EndpointSlice, as a cluster would.
#![allow(dead_code)] // Each bench uses part of this module.

use portcullis::model::Model;
use portcullis::router::Router;
use portcullis::source::file::{assemble, parse_str};
use portcullis::source::Input;
use portcullis::translate::{translate, Options, Severity};
use std::fmt::Write;
use std::path::Path;

/// The allocator of the `portcullis` binary (src/main.rs), so that what allocates (a rebuild above all) is
/// measured as it runs in the proxy.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Matches per host.
pub const PER_HOST: usize = 10;

/// What the generated rules look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Ingress, exact host `h{K}.bench.test`, `pathType: Prefix` paths `/r{i}`.
    IngressPrefix,
    /// Ingress, wildcard host `*.h{K}.bench.test`, `pathType: Prefix` paths `/r{i}`.
    IngressWildcard,
    /// HTTPRoute, exact host, `Exact` paths `/r{i}`.
    RouteExact,
    /// HTTPRoute, exact host, `RegularExpression` paths `/r{i}/[a-z]+/[0-9]+(/h{K})?` (a distinct pattern per
    /// rule: the router compiles equal patterns once).
    RouteRegex,
    /// HTTPRoute, exact host, path prefix `/` and header `x-route: r{i}`.
    RouteHeader,
    /// HTTPRoute, exact host, path prefix `/` and a RegularExpression header `x-route: r{i}-[a-z]+(-h{K})?` (a
    /// distinct pattern per rule).
    RouteHeaderRegex,
}

impl Shape {
    /// Every shape, in bench order.
    pub const ALL: [Shape; 6] = [
        Shape::IngressPrefix,
        Shape::IngressWildcard,
        Shape::RouteExact,
        Shape::RouteRegex,
        Shape::RouteHeader,
        Shape::RouteHeaderRegex,
    ];

    /// Bench group name.
    pub fn name(self) -> &'static str {
        match self {
            Shape::IngressPrefix => "exact_host_prefix",
            Shape::IngressWildcard => "wildcard_host_prefix",
            Shape::RouteExact => "exact_path",
            Shape::RouteRegex => "regex_path",
            Shape::RouteHeader => "header",
            Shape::RouteHeaderRegex => "header_regex",
        }
    }

    fn is_ingress(self) -> bool {
        matches!(self, Shape::IngressPrefix | Shape::IngressWildcard)
    }
}

/// Hosts per generated file (each host is three documents: Service, EndpointSlice, route).
pub const HOSTS_PER_FILE: usize = 250;

/// Number of hosts for `routes` routes.
pub fn hosts(routes: usize) -> usize {
    routes.div_ceil(PER_HOST).max(1)
}

/// The YAML files of a table of `routes` routes of `shape` (classes and a Gateway in the first).
pub fn manifests(shape: Shape, routes: usize) -> Vec<String> {
    let mut files = Vec::new();
    let mut y = String::with_capacity(HOSTS_PER_FILE * PER_HOST * 150 + 4096);
    y.push_str(CLASSES);
    if !shape.is_ingress() {
        y.push_str(GATEWAY);
    }
    let hosts = hosts(routes);
    let mut left = routes;
    for k in 0..hosts {
        if k > 0 && k % HOSTS_PER_FILE == 0 {
            files.push(std::mem::take(&mut y));
        }
        let n = left.min(PER_HOST);
        left -= n;
        service(&mut y, k);
        match shape {
            Shape::IngressPrefix | Shape::IngressWildcard => {
                let host = if shape == Shape::IngressWildcard {
                    format!("\"*.h{k}.bench.test\"")
                } else {
                    format!("h{k}.bench.test")
                };
                let _ = write!(
                    y,
                    "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: h{k}, namespace: bench}}\n\
                     spec:\n  rules:\n  - host: {host}\n    http:\n      paths:\n"
                );
                for i in 0..n {
                    let _ = writeln!(
                        y,
                        "      - {{path: /r{i}, pathType: Prefix, backend: {{service: {{name: s{k}, port: {{number: 80}}}}}}}}"
                    );
                }
            }
            Shape::RouteExact
            | Shape::RouteRegex
            | Shape::RouteHeader
            | Shape::RouteHeaderRegex => {
                let _ = write!(
                    y,
                    "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: h{k}, namespace: bench}}\n\
                     spec:\n  parentRefs: [{{name: gw}}]\n  hostnames: [h{k}.bench.test]\n  rules:\n"
                );
                for i in 0..n {
                    let m = match shape {
                        Shape::RouteExact => format!("{{path: {{type: Exact, value: /r{i}}}}}"),
                        // Distinct per host, as in a real table (the router shares equal patterns).
                        Shape::RouteRegex => format!(
                            "{{path: {{type: RegularExpression, value: \"/r{i}/[a-z]+/[0-9]+(/h{k})?\"}}}}"
                        ),
                        Shape::RouteHeaderRegex => format!(
                            "{{path: {{type: PathPrefix, value: /}}, headers: [{{type: RegularExpression, name: x-route, value: \"r{i}-[a-z]+(-h{k})?\"}}]}}"
                        ),
                        _ => format!(
                            "{{path: {{type: PathPrefix, value: /}}, headers: [{{name: x-route, value: r{i}}}]}}"
                        ),
                    };
                    let _ = write!(
                        y,
                        "  - matches: [{m}]\n    backendRefs: [{{name: s{k}, port: 80}}]\n"
                    );
                }
            }
        }
    }
    files.push(y);
    files
}

fn service(y: &mut String, k: usize) {
    let _ = write!(
        y,
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{k}, namespace: bench}}\nspec:\n  ports: [{{port: 80}}]\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: s{k}\n  namespace: bench\n  \
         labels: {{kubernetes.io/service-name: s{k}}}\naddressType: IPv4\nports: [{{port: 8080}}]\n\
         endpoints: [{{addresses: [127.0.0.1]}}]\n"
    );
}

const CLASSES: &str = "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: bench}\n---\n\
apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: portcullis\n  annotations:\n    \
ingressclass.kubernetes.io/is-default-class: \"true\"\nspec:\n  controller: portcullis.dev/ingress-controller\n---\n\
apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: portcullis}\n\
spec:\n  controllerName: portcullis.dev/gateway-controller\n";

const GATEWAY: &str = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
metadata: {name: gw, namespace: bench}\nspec:\n  gatewayClassName: portcullis\n  \
listeners: [{name: http, port: 80, protocol: HTTP}]\n";

/// Reads generated YAML files as the file source does, failing loudly on any problem (a generator mistake must not
/// bench an empty table).
pub fn input(files: &[String]) -> Input {
    let mut objects = Vec::new();
    let mut problems = Vec::new();
    for (i, text) in files.iter().enumerate() {
        let parsed = parse_str(text, Path::new(&format!("{i}.yaml")));
        objects.extend(parsed.objects);
        problems.extend(parsed.problems);
    }
    let loaded = assemble(objects, problems);
    assert!(
        loaded.problems.is_empty(),
        "generated YAML: {:?}",
        loaded.problems
    );
    loaded.input
}

/// Translates, failing loudly on any error.
pub fn model(input: &Input) -> Model {
    let out = translate(input, &Options::default());
    let errors: Vec<_> = out
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .collect();
    assert!(errors.is_empty(), "translation errors: {errors:?}");
    out.model
}

/// The compiled router of `routes` routes of `shape`, and its model's rule count.
pub fn router(shape: Shape, routes: usize) -> (Router, usize) {
    let model = model(&input(&manifests(shape, routes)));
    let rules = model.rule_count();
    (Router::compile(&model).expect("compiles"), rules)
}

/// The table sizes to run: `var` (comma-separated) when set; else `full` under `cargo bench`, and only `quick` when
/// the bench binary runs as a test (`cargo test --all-targets` runs each benchmark once, without `--bench`, to
/// check that it works: the big tables would only make the test suite slow, as a debug build).
pub fn sizes(var: &str, full: &[usize], quick: &[usize]) -> Vec<usize> {
    match std::env::var(var) {
        Ok(v) => v.split(',').filter_map(|s| s.trim().parse().ok()).collect(),
        Err(_) if std::env::args().any(|a| a == "--bench") => full.to_vec(),
        Err(_) => quick.to_vec(),
    }
}
