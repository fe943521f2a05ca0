//! Property: arbitrary Kubernetes objects never break translation.
//!
//! Objects of every kind the translator reads are generated as typed k8s objects (built as JSON of the API's
//! shape, then read into the `src/k8s.rs` types, as both sources do) with hostile field values: empty and odd
//! strings, huge and negative numbers, missing fields, regexes that do not compile or are enormous, hostnames that
//! are not DNS names, IP addresses, durations that do not parse, unknown filter and protocol names, and
//! references between objects drawn from a few names so that some resolve and some do not (classes, Gateways,
//! listeners by section name and port, Services by port number and name, Secrets, ReferenceGrants).
//!
//! For every input: translation does not panic; its output is the same when the objects come in another order
//! (it is pure, and the sources sort); the model keeps the invariants `src/model.rs` states; every diagnostic
//! names an object of the input; the model compiles (translation promises that: `router::Router::compile` only
//! fails on hand-built models) and the snapshot store publishes it; and the compiled router answers requests
//! without panicking.

mod cases;

use http::{HeaderMap, Method};
use portcullis::k8s::gw::{
    BackendTLSPolicy, GRPCRoute, Gateway, GatewayClass, HTTPRoute, ListenerSet, ReferenceGrant,
    TCPRoute, TLSRoute, UDPRoute,
};
use portcullis::k8s::{
    ConfigMap, EndpointSlice, Ingress, IngressClass, Namespace, Secret, Service,
};
use portcullis::model::{
    Action, Backend, BackendGroup, Filter, HttpRule, Listener, ListenerKind, Model, Origin,
    OriginKind, PathMatch, ServiceBackend,
};
use portcullis::router::{RequestParts, Router};
use portcullis::snapshot::Store;
use portcullis::source::Input;
use portcullis::translate::nginx::annotations::{KNOWN, NOT_APPLIED, SNIPPETS};
use portcullis::translate::nginx::NginxOptions;
use portcullis::translate::{translate, Diagnostic, Options, Output, Severity};
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

// ---------------------------------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------------------------------

/// Names objects refer to each other by: most resolve, some never do.
const NAMES: &[&str] = &["a", "web", "gw", "portcullis", "cert"];

/// Strings no field expects.
const HOSTILE: &[&str] = &[
    "",
    " ",
    "-",
    "*",
    "..",
    "UPPER",
    "a b",
    "é",
    "\u{0}",
    "\u{202e}x",
    "../../etc/passwd",
    "%2e%2e",
    "a/b",
    "10.0.0.1",
    "::1",
    "{{ .Values }}",
    "$(echo)",
];

/// A name: usually `preferred` (the name the other objects refer to for this role), sometimes another of
/// [`NAMES`], now and then a name no object has or can have.
fn name(preferred: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        30 => Just(preferred.to_string()),
        4 => prop::sample::select(NAMES).prop_map(str::to_string),
        3 => prop::sample::select(HOSTILE).prop_map(str::to_string),
        1 => Just("x".repeat(300)),
    ]
}

fn namespace() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => Just("default".to_string()),
        2 => Just("other".to_string()),
        1 => prop::sample::select(HOSTILE).prop_map(str::to_string),
    ]
}

fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(HOSTILE).prop_map(str::to_string),
        1 => "[ -~]{0,12}",
        1 => any::<String>().prop_map(|s| s.chars().take(20).collect()),
        1 => Just("y".repeat(70_000)),
    ]
}

fn hostname() -> impl Strategy<Value = String> {
    prop_oneof![
        24 => prop::sample::select(&[
            "example.com", "a.example.com", "*.example.com", "*.a.example.com", "b.example.com",
            "EXAMPLE.com", "example.com.",
        ][..]).prop_map(str::to_string),
        4 => prop::sample::select(&[
            "", "*", "*.", "a.*.com", "*foo.com", "10.0.0.1", "[::1]", "a..b", "-a.com", "a-.com",
            "é.com", "a_b.com", "example.com:80",
        ][..]).prop_map(str::to_string),
        1 => Just(format!("{}.com", "l".repeat(64))),
        1 => Just("a.".repeat(130)),
    ]
}

/// Ports: usual, edge and out of range values.
fn port() -> impl Strategy<Value = i64> {
    prop_oneof![
        12 => prop::sample::select(&[80i64, 443, 8080, 8443][..]),
        2 => prop::sample::select(&[0i64, 1, 65535, 65536, -1, -80][..]),
        1 => any::<i32>().prop_map(i64::from),
    ]
}

/// Counts and weights: usual, zero, negative, the type's extremes.
fn number() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => 0i64..10,
        1 => prop::sample::select(&[-1i64, 100, 1_000_000, 2_147_483_647, -2_147_483_648][..]),
    ]
}

/// Small numbers for 32-bit fields.
fn number32() -> impl Strategy<Value = i64> {
    number().prop_map(|n| n.clamp(i64::from(i32::MIN), i64::from(i32::MAX)))
}

fn path_value() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(&["/", "/a", "/a/", "/a/b", "/api", "/api/v1"][..]).prop_map(str::to_string),
        2 => prop::sample::select(&["", "a", "//", "/a b", "/%2e%2e/", "/../x", "/a?b", "/a#b", "/é", "/\u{0}"][..])
            .prop_map(str::to_string),
        1 => Just(format!("/{}", "p".repeat(70_000))),
    ]
}

/// Regexes: valid ones, ones that do not compile, ones too big for any engine, and ones of odd syntax.
fn regex() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(&["/api/v[0-9]+", ".*", "(?i)/a", "/[^/]+/x", "a|b"][..]).prop_map(str::to_string),
        4 => prop::sample::select(&[
            "(", "[", "\\", "a{1000000}", "(?P<x>", "*", "a**", "(?<!x)a", "\\p{Nope}", "[z-a]", "a{2,1}",
            "(((((((((((((((((((((((((((((((a)))))))))))))))))))))))))))))))",
            "\\w{1000}", "(a|aa)*b", "\\bword\\b", "",
        ][..]).prop_map(str::to_string),
    ]
}

fn duration() -> impl Strategy<Value = String> {
    prop::sample::select(
        &[
            "1s",
            "0s",
            "10ms",
            "1h",
            "1h30m",
            "-1s",
            "abc",
            "",
            "1000000h",
            "1.5s",
            "1d",
            "9999999999999s",
        ][..],
    )
    .prop_map(str::to_string)
}

fn time() -> impl Strategy<Value = Option<String>> {
    prop::option::weighted(
        0.5,
        prop::sample::select(
            &[
                "1970-01-01T00:00:00Z",
                "2024-05-01T10:00:00Z",
                "2024-05-01T10:00:00Z",
                "2099-12-31T23:59:59Z",
            ][..],
        )
        .prop_map(str::to_string),
    )
}

/// A JSON object from fields, leaving out the absent ones (a missing field, not a null).
fn obj(fields: Vec<(&str, Option<Value>)>) -> Value {
    let mut m = Map::new();
    for (k, v) in fields {
        if let Some(v) = v {
            m.insert(k.to_string(), v);
        }
    }
    Value::Object(m)
}

fn opt<T: Strategy>(p: f64, s: T) -> impl Strategy<Value = Option<T::Value>> {
    prop::option::weighted(p, s)
}

fn vec_of<T: Strategy>(s: T, max: usize) -> impl Strategy<Value = Vec<T::Value>> {
    prop::collection::vec(s, 0..=max)
}

// ---------------------------------------------------------------------------------------------------------------
// Annotations: ingress-nginx's on Ingresses, ours on Services
// ---------------------------------------------------------------------------------------------------------------

const NGINX_PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// Values of the types ingress-nginx's annotation parsers read (booleans, numbers, sizes, durations, paths with
/// captures, URLs, CIDR lists, origins, methods, header lists, nginx variables, Secret references, regexes,
/// redirect codes, protocol and balancer names), valid and not.
const NGINX_VALUES: &[&str] = &[
    "true",
    "false",
    "on",
    "off",
    "True",
    "1",
    "0",
    "-1",
    "10",
    "100",
    "1000000",
    "99999999999999999999",
    "8k",
    "1m",
    "10g",
    "1x",
    "10s",
    "1.5",
    "/",
    "/$1",
    "/$2$3",
    "/app",
    "$1",
    "/a b",
    "http://",
    "https://auth.example.com/verify?rd=$escaped_request_uri",
    "http://$host/x",
    "https://a.com, https://*.b.com",
    "*",
    "10.0.0.0/8",
    "10.0.0.1, 192.168.0.0/16",
    "::1/128",
    "10.0.0.0/33",
    "GET, POST",
    "X-A, X-B",
    "X-Canary",
    "always",
    "never",
    "cert",
    "default/cert",
    "other/cert",
    "/cert",
    "basic",
    "digest",
    "auth-file",
    "auth-map",
    "www.example.com",
    "example.com",
    "301",
    "302",
    "307",
    "308",
    "999",
    "error timeout http_502",
    "GRPC",
    "HTTPS",
    "FCGI",
    "AUTO_HTTP",
    "round_robin",
    "ewma",
    "$request_uri",
    "$remote_addr",
    "canary|beta",
    "(",
    "cookie",
    "persistent",
    "Lax",
    "None",
    "TLSv1.2 TLSv1.3",
    "$host",
    "proxy_set_header X-A b;",
    "{{ .Values }}",
];

/// Themed sets of ingress-nginx annotations with mostly valid values, so that canaries, rewrites, redirects,
/// CORS, authentication, limits and source ranges are reached together (drawing keys one by one from the ~140
/// ingress-nginx knows rarely gives a canary Ingress its weight).
type NginxGroup = &'static [(&'static str, &'static [&'static str])];
const NGINX_GROUPS: &[NginxGroup] = &[
    &[
        ("canary", &["true", "false", "x"]),
        ("canary-weight", &["0", "10", "100", "-1", "x"]),
        ("canary-weight-total", &["100", "1000", "0"]),
        ("canary-by-header", &["X-Canary", "bad header"]),
        ("canary-by-header-value", &["always", "yes"]),
        ("canary-by-header-pattern", &["canary|beta", "("]),
        ("canary-by-cookie", &["canary"]),
    ],
    &[
        ("rewrite-target", &["/$1", "/", "/$2", "$1$2"]),
        ("use-regex", &["true", "false"]),
        ("x-forwarded-prefix", &["/p", "$1", "a b"]),
        ("app-root", &["/app", "app", "http://x/"]),
        ("preserve-trailing-slash", &["true"]),
    ],
    &[
        (
            "permanent-redirect",
            &["https://example.com/x", "/x", "not a url"],
        ),
        ("permanent-redirect-code", &["301", "308", "200", "x"]),
        ("temporal-redirect", &["https://example.com/t"]),
        ("temporal-redirect-code", &["302", "307", "999"]),
        ("from-to-www-redirect", &["true"]),
        ("ssl-redirect", &["true", "false"]),
        ("force-ssl-redirect", &["true", "false"]),
        (
            "server-alias",
            &["www.example.com, alias.example.com", "*.example.com", "a b"],
        ),
    ],
    &[
        ("enable-cors", &["true", "false"]),
        (
            "cors-allow-origin",
            &[
                "https://a.com, https://*.b.com",
                "*",
                "ftp://x",
                "https://a.com:99999",
            ],
        ),
        ("cors-allow-methods", &["GET, POST", "G E T"]),
        ("cors-allow-headers", &["X-A, X-B", "bad header"]),
        ("cors-expose-headers", &["X-A"]),
        ("cors-allow-credentials", &["true", "false"]),
        ("cors-max-age", &["600", "-1", "x"]),
    ],
    &[
        ("auth-type", &["basic", "digest", "x"]),
        (
            "auth-secret",
            &["cert", "default/cert", "other/cert", "nope"],
        ),
        ("auth-secret-type", &["auth-file", "auth-map", "x"]),
        ("auth-realm", &["realm", ""]),
        (
            "auth-url",
            &[
                "http://auth.default.svc/verify",
                "https://$host/auth",
                "not a url",
            ],
        ),
        (
            "auth-signin",
            &["https://login.example.com/?rd=$escaped_request_uri"],
        ),
        ("auth-method", &["GET", "G ET"]),
        ("auth-response-headers", &["X-User, X-Email", "bad header"]),
        ("auth-cache-key", &["$remote_user"]),
    ],
    &[
        ("limit-rps", &["5", "0", "-1", "x"]),
        ("limit-rpm", &["300", "0"]),
        ("limit-connections", &["10", "x"]),
        ("limit-burst-multiplier", &["5", "0"]),
        ("limit-allowlist", &["10.0.0.0/8", "x"]),
        (
            "allowlist-source-range",
            &["10.0.0.0/8, ::1/128", "10.0.0.0/33"],
        ),
        ("denylist-source-range", &["192.168.0.0/16", "x"]),
        ("whitelist-source-range", &["127.0.0.1"]),
    ],
    &[
        ("proxy-body-size", &["8k", "1m", "0", "1x"]),
        ("proxy-read-timeout", &["30", "0", "x"]),
        ("proxy-send-timeout", &["30", "-5"]),
        ("proxy-buffering", &["on", "off", "x"]),
        ("upstream-vhost", &["internal.example.com", "a b", "$host"]),
        ("backend-protocol", &["GRPC", "HTTPS", "GRPCS", "FCGI", "x"]),
        ("proxy-ssl-secret", &["default/ca", "other/ca", "x;y"]),
        ("proxy-ssl-verify", &["on", "x"]),
        ("proxy-ssl-name", &["backend.example.com", "$host"]),
        (
            "proxy-ssl-ciphers",
            &["HIGH:!aNULL", "ECDHE-RSA-AES128-GCM-SHA256"],
        ),
        ("configuration-snippet", &["more_set_headers \"X: y\";"]),
        ("ssl-passthrough", &["true", "x"]),
    ],
];

fn nginx_value() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(NGINX_VALUES).prop_map(str::to_string),
        2 => hostile_string(),
        1 => "[ -~]{0,16}",
    ]
}

/// An annotation key under the ingress-nginx prefix: one it knows, a typo, an unknown or odd one.
fn nginx_key() -> impl Strategy<Value = String> {
    prop_oneof![
        10 => prop::sample::select(KNOWN).prop_map(|k| format!("{NGINX_PREFIX}{k}")),
        1 => prop::sample::select(&["rewrite-targt", "canary-wieght", "nope", "", "x-snippet", "Rewrite-Target", "a/b"][..])
            .prop_map(|k| format!("{NGINX_PREFIX}{k}")),
    ]
}

fn nginx_group() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::sample::select(NGINX_GROUPS).prop_flat_map(|g| {
        prop::sample::subsequence(g.to_vec(), 1..=g.len()).prop_flat_map(|keys| {
            keys.into_iter()
                .map(|(k, values)| {
                    (
                        Just(format!("{NGINX_PREFIX}{k}")),
                        prop_oneof![
                            5 => prop::sample::select(values).prop_map(str::to_string),
                            1 => nginx_value(),
                        ],
                    )
                })
                .collect::<Vec<_>>()
        })
    })
}

/// The ingress-nginx annotations of one Ingress: a themed set half of the time, plus keys drawn one by one.
fn nginx_annotations() -> impl Strategy<Value = BTreeMap<String, String>> {
    (
        opt(0.5, nginx_group()),
        prop::collection::vec((nginx_key(), nginx_value()), 0..4),
    )
        .prop_map(|(group, single)| group.into_iter().flatten().chain(single).collect())
}

/// `portcullis.dev/*` Service annotations with valid, default-restating and bad values, and unknown keys.
const POLICY_ANNOTATIONS: &[(&str, &[&str])] = &[
    (
        "load-balancer",
        &[
            "round-robin",
            "random",
            "least-request",
            "consistent-hash",
            "fastest",
            "",
        ],
    ),
    (
        "hash-on",
        &[
            "source-ip",
            "uri",
            "header:X-User",
            "header:",
            "header:bad name",
            "cookie:s",
            "query:u",
            "ip",
        ],
    ),
    ("max-failures", &["0", "3", "5", "1000", "1001", "-1", "x"]),
    ("ejection-time", &["5s", "500ms", "1m30s", "0s", "soon"]),
    ("max-ejection-time", &["60s", "1m", "10s", "0s", "x"]),
    (
        "health-check",
        &["tcp", "http:/healthz", "http:healthz", "http:", "udp"],
    ),
    ("health-check-host", &["svc.local", "", "bad\nhost"]),
    ("health-check-interval", &["5s", "2s", "10ms", "x"]),
    ("health-check-timeout", &["1s", "500ms", "0s"]),
    ("healthy-threshold", &["1", "2", "0", "101"]),
    ("unhealthy-threshold", &["2", "3", "0"]),
    ("max-failure", &["3"]),
    ("loadbalancer", &["random"]),
    ("something-else", &["1"]),
];

/// The documented default of a `portcullis.dev/*` key (docs/upstreams.md): a value that changes nothing.
const POLICY_DEFAULTS: &[(&str, &str)] = &[
    ("load-balancer", "round-robin"),
    ("max-failures", "3"),
    ("ejection-time", "5s"),
    ("max-ejection-time", "60s"),
    ("max-ejection-time", "1m"),
    ("health-check-interval", "5s"),
    ("health-check-timeout", "1s"),
    ("healthy-threshold", "1"),
    ("unhealthy-threshold", "2"),
];

fn policy_annotations() -> impl Strategy<Value = BTreeMap<String, String>> {
    let one = prop::sample::select(POLICY_ANNOTATIONS).prop_flat_map(|(k, values)| {
        (
            Just(format!("portcullis.dev/{k}")),
            prop_oneof![
                6 => prop::sample::select(values).prop_map(str::to_string),
                1 => hostile_string(),
            ],
        )
    });
    // Half of the time one setting that takes effect on its own, so that the companions above (thresholds,
    // intervals, hash keys) often have something to apply to.
    let anchor = prop::sample::select(
        &[
            ("health-check", "http:/healthz"),
            ("health-check", "tcp"),
            ("load-balancer", "least-request"),
            ("load-balancer", "consistent-hash"),
            ("max-failures", "5"),
        ][..],
    )
    .prop_map(|(k, v)| (format!("portcullis.dev/{k}"), v.to_string()));
    (opt(0.5, anchor), prop::collection::vec(one, 1..4))
        .prop_map(|(anchor, v)| anchor.into_iter().chain(v).collect())
}

/// The ingress-nginx profile of a run: off, or on for the IngressClass `nginx`, with or without its ConfigMap,
/// and `--ingress-nginx-set` pairs.
#[derive(Clone, Debug)]
struct NginxSetup {
    config_map: bool,
    overrides: Vec<(String, String)>,
}

fn nginx_setting() -> impl Strategy<Value = (String, String)> {
    (
        prop_oneof![
            6 => prop::sample::select(portcullis::translate::nginx::config::KEYS).prop_map(str::to_string),
            1 => Just("no-such-key".to_string()),
        ],
        nginx_value(),
    )
}

fn metadata(namespaced: bool, preferred: &'static str) -> impl Strategy<Value = Value> {
    (
        name(preferred),
        namespace(),
        time(),
        opt(
            0.3,
            prop::collection::btree_map(
                prop::sample::select(&["team", "app", "kubernetes.io/service-name"][..]),
                prop::sample::select(NAMES),
                1..3,
            ),
        ),
        opt(
            0.3,
            prop::sample::select(
                &[
                    ("kubernetes.io/ingress.class", "portcullis"),
                    ("kubernetes.io/ingress.class", "other"),
                    ("kubernetes.io/ingress.class", "nginx"),
                    ("ingressclass.kubernetes.io/is-default-class", "true"),
                    ("nginx.ingress.kubernetes.io/rewrite-target", "/$1"),
                    ("traefik.ingress.kubernetes.io/router.entrypoints", "web"),
                ][..],
            ),
        ),
        any::<u8>(),
    )
        .prop_map(move |(name, ns, created, labels, annotation, generation)| {
            obj(vec![
                ("name", Some(json!(name))),
                ("namespace", namespaced.then(|| json!(ns))),
                ("creationTimestamp", created.map(|t| json!(t))),
                ("generation", Some(json!(generation))),
                ("labels", labels.map(|l| json!(l))),
                ("annotations", annotation.map(|(k, v)| json!({ k: v }))),
            ])
        })
}

// ---------------------------------------------------------------------------------------------------------------
// Objects, as JSON of the API's shape
// ---------------------------------------------------------------------------------------------------------------

fn object(
    api: &'static str,
    kind: &'static str,
    namespaced: bool,
    preferred: &'static str,
    body: impl Strategy<Value = Value>,
) -> impl Strategy<Value = Value> {
    (metadata(namespaced, preferred), body).prop_map(move |(meta, body)| {
        let mut v = json!({"apiVersion": api, "kind": kind, "metadata": meta});
        if let (Value::Object(m), Value::Object(b)) = (&mut v, body) {
            for (k, x) in b {
                // Labels the body needs (an EndpointSlice's Service) join the generated metadata.
                match (k.as_str(), m.get_mut("metadata"), x) {
                    ("metadata", Some(Value::Object(meta)), Value::Object(extra)) => {
                        for (mk, mv) in extra {
                            match (meta.get_mut(&mk), mv) {
                                (Some(Value::Object(have)), Value::Object(more)) => {
                                    have.extend(more)
                                }
                                (_, mv) => {
                                    meta.insert(mk, mv);
                                }
                            }
                        }
                    }
                    (_, _, x) => {
                        m.insert(k, x);
                    }
                }
            }
        }
        v
    })
}

fn namespace_object() -> impl Strategy<Value = Value> {
    object("v1", "Namespace", false, "other", Just(json!({})))
}

fn service() -> impl Strategy<Value = Value> {
    let svc_port = (
        opt(
            0.7,
            prop::sample::select(&["http", "https", "", "h2c", "HTTP"][..]),
        ),
        port(),
        opt(0.5, port()),
        opt(
            0.3,
            prop::sample::select(&["kubernetes.io/h2c", "kubernetes.io/ws", "http", "bogus"][..]),
        ),
    )
        .prop_map(|(name, port, target, app)| {
            obj(vec![
                ("name", name.map(|n| json!(n))),
                (
                    "port",
                    Some(json!(port.clamp(i64::from(i32::MIN), i64::from(i32::MAX)))),
                ),
                (
                    "targetPort",
                    target.map(|t| json!(t.clamp(i64::from(i32::MIN), i64::from(i32::MAX)))),
                ),
                ("appProtocol", app.map(|a| json!(a))),
            ])
        });
    let body = (
        vec_of(svc_port, 3),
        opt(
            0.2,
            prop::sample::select(&["ClusterIP", "ExternalName", "NodePort", "bogus"][..]),
        ),
        opt(0.2, hostname()),
        opt(0.4, policy_annotations()),
    )
        .prop_map(|(ports, ty, external, annotations)| {
            let mut v = json!({"spec": obj(vec![
                ("ports", Some(json!(ports))),
                ("type", ty.map(|t| json!(t))),
                ("externalName", external.map(|e| json!(e))),
            ])});
            if let Some(a) = annotations {
                v["metadata"] = json!({ "annotations": a });
            }
            v
        });
    object("v1", "Service", true, "web", body)
}

fn endpoint_slice() -> impl Strategy<Value = Value> {
    let address = prop_oneof![
        6 => prop::sample::select(&["127.0.0.1", "10.0.0.1", "::1", "fe80::1"][..]).prop_map(str::to_string),
        1 => hostile_string(),
    ];
    let endpoint = (
        vec_of(address, 2),
        opt(0.5, any::<bool>()),
        opt(0.3, any::<bool>()),
    )
        .prop_map(|(addresses, ready, terminating)| {
            obj(vec![
                ("addresses", Some(json!(addresses))),
                (
                    "conditions",
                    Some(obj(vec![
                        ("ready", ready.map(|r| json!(r))),
                        ("terminating", terminating.map(|t| json!(t))),
                    ])),
                ),
            ])
        });
    let slice_port = (
        opt(
            0.7,
            prop::sample::select(&["http", "https", "", "other"][..]),
        ),
        opt(0.9, port()),
    )
        .prop_map(|(name, port)| {
            obj(vec![
                ("name", name.map(|n| json!(n))),
                (
                    "port",
                    port.map(|p| json!(p.clamp(i64::from(i32::MIN), i64::from(i32::MAX)))),
                ),
            ])
        });
    let body = (
        prop::sample::select(&["IPv4", "IPv6", "FQDN", "bogus"][..]),
        vec_of(endpoint, 3),
        opt(0.9, vec_of(slice_port, 2)),
        name("web"),
    )
        .prop_map(|(ty, endpoints, ports, svc)| {
            json!({
                "addressType": ty, "endpoints": endpoints, "ports": ports,
                "metadata": {"labels": {"kubernetes.io/service-name": svc}},
            })
        });
    object("discovery.k8s.io/v1", "EndpointSlice", true, "a", body)
}

/// A certificate and key for `example.com` and `*.example.com` (PEM), made once per test process.
fn certificate() -> &'static (String, String) {
    static CERT: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    CERT.get_or_init(|| {
        let key = rcgen::KeyPair::generate().expect("a key");
        let cert =
            rcgen::CertificateParams::new(vec!["example.com".into(), "*.example.com".into()])
                .and_then(|p| p.self_signed(&key))
                .expect("a certificate");
        (cert.pem(), key.serialize_pem())
    })
}

fn secret() -> impl Strategy<Value = Value> {
    let garbage = (
        prop::sample::select(&["kubernetes.io/tls", "Opaque", ""][..]),
        opt(0.8, hostile_string()),
        opt(0.8, hostile_string()),
        any::<bool>(),
    )
        .prop_map(|(ty, crt, key, string_data)| {
            let data = obj(vec![("tls.crt", crt.map(|c| json!(c))), ("tls.key", key.map(|k| json!(k)))]);
            if string_data {
                json!({"type": ty, "stringData": data})
            } else {
                // `data` is base64: keep to valid base64 of garbage (text that is not base64 is an error of the
                // source, before translation).
                json!({"type": ty, "data": {"tls.crt": "Z2FyYmFnZQ==", "tls.key": "LS0tLS1CRUdJTg=="}})
            }
        });
    let valid = (any::<u8>(), any::<bool>()).prop_map(|(swap, ca)| {
        let (crt, key) = certificate();
        // Sometimes the key where the certificate belongs, or a CA bundle key as well.
        let (c, k) = if swap % 6 == 0 {
            (key, crt)
        } else {
            (crt, key)
        };
        let mut data = json!({"tls.crt": c, "tls.key": k});
        if ca {
            data["ca.crt"] = json!(crt);
        }
        json!({"type": "kubernetes.io/tls", "stringData": data})
    });
    // What `auth-secret` reads: an htpasswd file under `auth` (auth-file) or users as keys (auth-map).
    let auth = prop::sample::select(
        &[
            "user:$apr1$saltsalt$0123456789abcdefghijkl",
            "user:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=",
            "user:$2y$05$abcdefghijklmnopqrstuv0123456789abcdefghijklmnopqrstu",
            "user:plain",
            "garbage",
            "",
            "a:b\nc:d\n\n:",
        ][..],
    )
    .prop_map(|a| json!({"type": "Opaque", "stringData": {"auth": a, "user": a}}));
    let body = prop_oneof![3 => valid.prop_map(|v| v), 2 => garbage, 1 => auth];
    object("v1", "Secret", true, "cert", body)
}

fn config_map() -> impl Strategy<Value = Value> {
    object(
        "v1",
        "ConfigMap",
        true,
        "cert",
        opt(0.8, hostile_string())
            .prop_map(|ca| json!({"data": obj(vec![("ca.crt", ca.map(|c| json!(c)))])})),
    )
}

fn controller() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        4 => Just(portcullis::translate::INGRESS_CONTROLLER),
        4 => Just(portcullis::translate::GATEWAY_CONTROLLER),
        1 => Just("example.com/other"),
        1 => Just(""),
    ]
}

fn ingress_class() -> impl Strategy<Value = Value> {
    let body = (controller(), opt(0.1, prop::sample::select(NAMES))).prop_map(|(c, params)| {
        json!({"spec": obj(vec![
            ("controller", Some(json!(c))),
            ("parameters", params.map(|p| json!({"kind": "ConfigMap", "name": p}))),
        ])})
    });
    object(
        "networking.k8s.io/v1",
        "IngressClass",
        false,
        "portcullis",
        body,
    )
}

fn ingress_backend() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => (name("web"), prop_oneof![port().prop_map(|p| json!({"number": p.clamp(i64::from(i32::MIN), i64::from(i32::MAX))})), prop::sample::select(&["http", "https", "", "nope"][..]).prop_map(|n| json!({"name": n})), Just(json!({}))])
            .prop_map(|(n, p)| json!({"service": {"name": n, "port": p}})),
        1 => name("web").prop_map(|n| json!({"resource": {"apiGroup": "example.com", "kind": "Bucket", "name": n}})),
        1 => Just(json!({})),
    ]
}

fn ingress() -> impl Strategy<Value = Value> {
    let path = (
        opt(0.9, path_value()),
        prop_oneof![
            6 => prop::sample::select(&["Exact", "Prefix"][..]),
            1 => prop::sample::select(&["ImplementationSpecific", "Regex", ""][..]),
        ],
        ingress_backend(),
    )
        .prop_map(|(p, ty, backend)| {
            obj(vec![
                ("path", p.map(|p| json!(p))),
                ("pathType", Some(json!(ty))),
                ("backend", Some(backend)),
            ])
        });
    let rule = (opt(0.8, hostname()), opt(0.9, vec_of(path, 3))).prop_map(|(host, paths)| {
        obj(vec![
            ("host", host.map(|h| json!(h))),
            ("http", paths.map(|p| json!({"paths": p}))),
        ])
    });
    let tls = (vec_of(hostname(), 2), opt(0.8, name("cert"))).prop_map(|(hosts, secret)| {
        obj(vec![
            ("hosts", Some(json!(hosts))),
            ("secretName", secret.map(|s| json!(s))),
        ])
    });
    let body = (
        opt(
            0.6,
            prop_oneof![3 => name("portcullis"), 1 => Just("nginx".to_string())],
        ),
        opt(0.2, ingress_backend()),
        vec_of(rule, 3),
        opt(0.3, vec_of(tls, 2)),
        opt(0.6, nginx_annotations()),
    )
        .prop_map(|(class, default, rules, tls, annotations)| {
            let mut v = json!({"spec": obj(vec![
                ("ingressClassName", class.map(|c| json!(c))),
                ("defaultBackend", default),
                ("rules", Some(json!(rules))),
                ("tls", tls.map(|t| json!(t))),
            ])});
            if let Some(a) = annotations {
                v["metadata"] = json!({ "annotations": a });
            }
            v
        });
    object("networking.k8s.io/v1", "Ingress", true, "a", body)
}

fn gateway_class() -> impl Strategy<Value = Value> {
    let body = (controller(), opt(0.1, name("a"))).prop_map(|(c, params)| {
        json!({"spec": obj(vec![
            ("controllerName", Some(json!(c))),
            ("parametersRef", params.map(|p| json!({"group": "", "kind": "ConfigMap", "name": p}))),
        ])})
    });
    object(
        "gateway.networking.k8s.io/v1",
        "GatewayClass",
        false,
        "portcullis",
        body,
    )
}

fn object_ref(kinds: &'static [(&'static str, &'static str)]) -> impl Strategy<Value = Value> {
    (
        prop_oneof![4 => Just(kinds[0]), 1 => prop::sample::select(kinds)],
        name("cert"),
        opt(0.3, namespace()),
    )
        .prop_map(|((group, kind), n, ns)| {
            obj(vec![
                ("group", Some(json!(group))),
                ("kind", Some(json!(kind))),
                ("name", Some(json!(n))),
                ("namespace", ns.map(|ns| json!(ns))),
            ])
        })
}

const CERT_KINDS: &[(&str, &str)] = &[("", "Secret"), ("", "ConfigMap"), ("example.com", "Vault")];

fn listener() -> impl Strategy<Value = Value> {
    // The TLS settings: usually those the protocol needs (a certificate for HTTPS, Passthrough for TLS).
    let tls = (
        prop::sample::select(&["Terminate", "Passthrough"][..]),
        any::<u8>(),
        prop::collection::vec(object_ref(CERT_KINDS), 1..=2),
    );
    let from = prop::sample::select(&["All", "Same", "Selector"][..]);
    let allowed = (
        opt(0.7, from),
        opt(
            0.15,
            vec_of(
                prop::sample::select(
                    &[
                        ("gateway.networking.k8s.io", "HTTPRoute"),
                        ("gateway.networking.k8s.io", "TLSRoute"),
                        ("gateway.networking.k8s.io", "TCPRoute"),
                        ("gateway.networking.k8s.io", "UDPRoute"),
                        ("", "Service"),
                        ("gateway.networking.k8s.io", "GRPCRoute"),
                    ][..],
                ),
                2,
            ),
        ),
    )
        .prop_map(|(from, kinds)| {
            obj(vec![
                (
                    "namespaces",
                    from.map(|f| json!({"from": f, "selector": {"matchLabels": {"team": "a"}}})),
                ),
                (
                    "kinds",
                    kinds.map(|k| {
                        json!(k
                            .iter()
                            .map(|(g, k)| json!({"group": g, "kind": k}))
                            .collect::<Vec<_>>())
                    }),
                ),
            ])
        });
    (
        prop::sample::select(&["http", "https", "tls", "h", "", "HTTP"][..]),
        port(),
        prop_oneof![6 => Just("HTTP"), 2 => Just("HTTPS"), 1 => Just("TLS"), 2 => prop::sample::select(&["TCP", "UDP", "TCP", "UDP", "bogus", ""][..])],
        opt(0.5, hostname()),
        tls,
        opt(0.4, allowed),
    )
        .prop_map(|(name, port, protocol, host, (mode, dice, refs), allowed)| {
            let tls = match (protocol, dice % 8) {
                (_, 0) => None,
                ("HTTPS", 1) | ("TLS", 1) => Some(json!({"mode": mode, "certificateRefs": refs})),
                ("HTTPS", _) => Some(json!({"mode": "Terminate", "certificateRefs": refs})),
                ("TLS", _) => Some(json!({"mode": "Passthrough"})),
                (_, 1) => Some(json!({"mode": mode, "certificateRefs": refs})),
                _ => None,
            };
            obj(vec![
            ("name", Some(json!(name))),
            ("port", Some(json!(port.clamp(i64::from(i32::MIN), i64::from(i32::MAX))))),
            ("protocol", Some(json!(protocol))),
            ("hostname", host.map(|h| json!(h))),
            ("tls", tls),
            ("allowedRoutes", allowed),
        ])
        })
}

fn gateway() -> impl Strategy<Value = Value> {
    let address = (
        opt(
            0.8,
            prop::sample::select(&["IPAddress", "Hostname", "example.com/custom"][..]),
        ),
        prop::sample::select(
            &[
                "127.0.0.1",
                "127.0.0.2",
                "::1",
                "not-an-ip",
                "",
                "192.0.2.10",
            ][..],
        ),
    )
        .prop_map(|(ty, v)| {
            obj(vec![
                ("type", ty.map(|t| json!(t))),
                ("value", Some(json!(v))),
            ])
        });
    let body = (name("portcullis"), prop::collection::vec(listener(), 1..=3), opt(0.15, vec_of(address, 2)), opt(0.1, object_ref(CERT_KINDS)), opt(0.2, prop::sample::select(&["All", "Same", "None"][..])), prop::bool::weighted(0.75))
        .prop_map(|(class, mut listeners, addresses, client_ca, allowed, unique)| {
            // Usually distinct listener names, as the CRD's validation requires; sometimes repeated ones.
            if unique {
                for (i, l) in listeners.iter_mut().enumerate() {
                    let n = format!("{}{i}", l["name"].as_str().unwrap_or(""));
                    l["name"] = json!(n);
                }
            }
            json!({"spec": obj(vec![
            ("gatewayClassName", Some(json!(class))),
            ("listeners", Some(json!(listeners))),
            ("addresses", addresses.map(|a| json!(a))),
            ("tls", client_ca.map(|r| json!({"frontend": {"default": {"validation": {"caCertificateRefs": [r]}}}}))),
            ("allowedListeners", allowed.map(|f| json!({"namespaces": {"from": f}}))),
        ])})
        });
    object("gateway.networking.k8s.io/v1", "Gateway", true, "gw", body)
}

fn parent_ref() -> impl Strategy<Value = Value> {
    (
        name("gw"),
        opt(0.2, namespace()),
        opt(
            0.15,
            prop::sample::select(&["http", "https", "tls", "nope"][..]),
        ),
        opt(0.1, port()),
        opt(
            0.1,
            prop::sample::select(&["Gateway", "ListenerSet", "Service"][..]),
        ),
    )
        .prop_map(|(n, ns, section, port, kind)| {
            obj(vec![
                ("name", Some(json!(n))),
                ("namespace", ns.map(|n| json!(n))),
                ("sectionName", section.map(|s| json!(s))),
                (
                    "port",
                    port.map(|p| json!(p.clamp(i64::from(i32::MIN), i64::from(i32::MAX)))),
                ),
                ("kind", kind.map(|k| json!(k))),
            ])
        })
}

fn backend_ref() -> impl Strategy<Value = Value> {
    (
        name("web"),
        opt(0.2, namespace()),
        opt(0.9, port()),
        opt(0.4, number32()),
        opt(
            0.1,
            prop::sample::select(
                &[
                    ("", "Service"),
                    ("example.com", "Bucket"),
                    ("", "ConfigMap"),
                ][..],
            ),
        ),
    )
        .prop_map(|(n, ns, port, weight, kind)| {
            obj(vec![
                ("name", Some(json!(n))),
                ("namespace", ns.map(|n| json!(n))),
                (
                    "port",
                    port.map(|p| json!(p.clamp(i64::from(i32::MIN), i64::from(i32::MAX)))),
                ),
                ("weight", weight.map(|w| json!(w))),
                ("group", kind.map(|(g, _)| json!(g))),
                ("kind", kind.map(|(_, k)| json!(k))),
            ])
        })
}

fn header_list() -> impl Strategy<Value = Value> {
    vec_of((prop_oneof![3 => prop::sample::select(&["x-a", "X-B", "host", "content-length", ""][..]).prop_map(str::to_string), 1 => hostile_string()], hostile_string()), 2)
        .prop_map(|v| json!(v.into_iter().map(|(n, val)| json!({"name": n, "value": val})).collect::<Vec<_>>()))
}

fn path_modifier() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(&["ReplaceFullPath", "ReplacePrefixMatch"][..]),
        opt(0.8, path_value()),
    )
        .prop_map(|(ty, v)| {
            let field = if ty == "ReplaceFullPath" {
                "replaceFullPath"
            } else {
                "replacePrefixMatch"
            };
            obj(vec![
                ("type", Some(json!(ty))),
                (field, v.map(|v| json!(v))),
            ])
        })
}

fn filter() -> impl Strategy<Value = Value> {
    prop_oneof![
        (header_list(), header_list(), vec_of(hostile_string(), 2)).prop_map(|(set, add, remove)| json!({"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": set, "add": add, "remove": remove}})),
        header_list().prop_map(|set| json!({"type": "ResponseHeaderModifier", "responseHeaderModifier": {"set": set}})),
        (opt(0.5, prop::sample::select(&["http", "https"][..])), opt(0.5, hostname()), opt(0.4, port()), opt(0.5, prop::sample::select(&[301i64, 302, 303, 307, 308, 200, 0, -1][..])), opt(0.5, path_modifier()))
            .prop_map(|(scheme, host, port, code, path)| json!({"type": "RequestRedirect", "requestRedirect": obj(vec![
                ("scheme", scheme.map(|s| json!(s))), ("hostname", host.map(|h| json!(h))),
                ("port", port.map(|p| json!(p.clamp(i64::from(i32::MIN), i64::from(i32::MAX))))),
                ("statusCode", code.map(|c| json!(c))), ("path", path),
            ])})),
        (opt(0.5, hostname()), opt(0.6, path_modifier())).prop_map(|(host, path)| json!({"type": "URLRewrite", "urlRewrite": obj(vec![("hostname", host.map(|h| json!(h))), ("path", path)])})),
        (backend_ref(), opt(0.4, number32()), opt(0.3, (number32(), number32()))).prop_map(|(b, percent, fraction)| json!({"type": "RequestMirror", "requestMirror": obj(vec![
            ("backendRef", Some(b)), ("percent", percent.map(|p| json!(p))),
            ("fraction", fraction.map(|(n, d)| json!({"numerator": n, "denominator": d}))),
        ])})),
        (vec_of(prop::sample::select(&["*", "https://a.example.com", "https://*.example.com", "null", "", "http://[::1]:80", "not a url"][..]), 2), any::<bool>(), opt(0.5, number32()))
            .prop_map(|(origins, creds, age)| json!({"type": "CORS", "cors": obj(vec![
                ("allowOrigins", Some(json!(origins))), ("allowCredentials", Some(json!(creds))),
                ("allowMethods", Some(json!(["GET", "*"]))), ("maxAge", age.map(|a| json!(a))),
            ])})),
        name("a").prop_map(|n| json!({"type": "ExtensionRef", "extensionRef": {"group": "example.com", "kind": "Filter", "name": n}})),
        // A filter type without its field.
        prop::sample::select(&["RequestHeaderModifier", "RequestRedirect", "URLRewrite", "RequestMirror", "CORS"][..]).prop_map(|t| json!({"type": t})),
    ]
}

fn http_match() -> impl Strategy<Value = Value> {
    let path = prop_oneof![
        3 => (
            prop::sample::select(&["Exact", "PathPrefix"][..]),
            opt(0.9, path_value())
        )
            .prop_map(|(t, v)| obj(vec![
                ("type", Some(json!(t))),
                ("value", v.map(|v| json!(v)))
            ])),
        1 => regex().prop_map(|r| json!({"type": "RegularExpression", "value": r})),
    ];
    let value_match = prop_oneof![
        (opt(0.5, Just("Exact")), hostile_string()).prop_map(|(t, v)| (t, v)),
        regex().prop_map(|r| (Some("RegularExpression"), r)),
    ];
    let condition = (prop_oneof![6 => prop::sample::select(&["x-a", "X-A", "q", "Q"][..]).prop_map(str::to_string), 1 => hostile_string()], value_match)
        .prop_map(|(n, (t, v))| obj(vec![("type", t.map(|t| json!(t))), ("name", Some(json!(n))), ("value", Some(json!(v)))]));
    (
        opt(0.8, path),
        opt(
            0.2,
            prop::sample::select(&["GET", "POST", "CONNECT", "PATCH"][..]),
        ),
        opt(0.3, vec_of(condition.clone(), 3)),
        opt(0.3, vec_of(condition, 3)),
    )
        .prop_map(|(path, method, headers, query)| {
            obj(vec![
                ("path", path),
                ("method", method.map(|m| json!(m))),
                ("headers", headers.map(|h| json!(h))),
                ("queryParams", query.map(|q| json!(q))),
            ])
        })
}

fn http_rule() -> impl Strategy<Value = Value> {
    let backend = (backend_ref(), opt(0.2, vec_of(filter(), 2))).prop_map(|(mut b, filters)| {
        if let (Value::Object(m), Some(f)) = (&mut b, filters) {
            m.insert("filters".into(), json!(f));
        }
        b
    });
    (
        opt(0.2, name("a")),
        opt(0.8, vec_of(http_match(), 3)),
        opt(0.4, vec_of(filter(), 3)),
        opt(0.9, vec_of(backend, 3)),
        opt(0.2, (opt(0.7, duration()), opt(0.7, duration()))),
        opt(
            0.2,
            (
                opt(0.7, number()),
                opt(
                    0.5,
                    vec_of(
                        prop::sample::select(&[500i64, 503, 200, 0, 99, 600, -1][..]),
                        3,
                    ),
                ),
                opt(0.5, duration()),
            ),
        ),
    )
        .prop_map(|(name, matches, filters, backends, timeouts, retry)| {
            obj(vec![
                ("name", name.map(|n| json!(n))),
                ("matches", matches.map(|m| json!(m))),
                ("filters", filters.map(|f| json!(f))),
                ("backendRefs", backends.map(|b| json!(b))),
                (
                    "timeouts",
                    timeouts.map(|(r, b)| {
                        obj(vec![
                            ("request", r.map(|r| json!(r))),
                            ("backendRequest", b.map(|b| json!(b))),
                        ])
                    }),
                ),
                (
                    "retry",
                    retry.map(|(a, c, b)| {
                        obj(vec![
                            ("attempts", a.map(|a| json!(a))),
                            ("codes", c.map(|c| json!(c))),
                            ("backoff", b.map(|b| json!(b))),
                        ])
                    }),
                ),
            ])
        })
}

fn http_route() -> impl Strategy<Value = Value> {
    let body = (
        vec_of(parent_ref(), 2),
        opt(0.6, vec_of(hostname(), 3)),
        vec_of(http_rule(), 3),
    )
        .prop_map(|(parents, hosts, rules)| {
            json!({"spec": obj(vec![
                ("parentRefs", Some(json!(parents))),
                ("hostnames", hosts.map(|h| json!(h))),
                ("rules", Some(json!(rules))),
            ])})
        });
    object("gateway.networking.k8s.io/v1", "HTTPRoute", true, "a", body)
}

fn tls_route() -> impl Strategy<Value = Value> {
    let body = (
        vec_of(parent_ref(), 2),
        vec_of(hostname(), 2),
        vec_of(vec_of(backend_ref(), 2), 2),
    )
        .prop_map(|(parents, hosts, rules)| {
            json!({"spec": {
                "parentRefs": parents, "hostnames": hosts,
                "rules": rules.into_iter().map(|b| json!({"backendRefs": b})).collect::<Vec<_>>(),
            }})
        });
    object("gateway.networking.k8s.io/v1", "TLSRoute", true, "a", body)
}

/// TCPRoute and UDPRoute: parent refs (often by section name or port), rules of weighted backends.
fn l4_route(kind: &'static str) -> impl Strategy<Value = Value> {
    let body = (vec_of(parent_ref(), 2), vec_of(vec_of(backend_ref(), 2), 2)).prop_map(
        |(parents, rules)| {
            json!({"spec": {
                "parentRefs": parents,
                "rules": rules.into_iter().map(|b| json!({"backendRefs": b})).collect::<Vec<_>>(),
            }})
        },
    );
    object("gateway.networking.k8s.io/v1alpha2", kind, true, "a", body)
}

fn grpc_route() -> impl Strategy<Value = Value> {
    let body = vec_of(parent_ref(), 2).prop_map(|parents| json!({"spec": {"parentRefs": parents, "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}}));
    object("gateway.networking.k8s.io/v1", "GRPCRoute", true, "a", body)
}

fn reference_grant() -> impl Strategy<Value = Value> {
    let from = (
        prop::sample::select(&["HTTPRoute", "TLSRoute", "Gateway", "Bogus"][..]),
        namespace(),
    )
        .prop_map(
            |(k, ns)| json!({"group": "gateway.networking.k8s.io", "kind": k, "namespace": ns}),
        );
    let to = (
        prop::sample::select(&["Service", "Secret", "ConfigMap"][..]),
        opt(0.5, name("web")),
    )
        .prop_map(|(k, n)| {
            obj(vec![
                ("group", Some(json!(""))),
                ("kind", Some(json!(k))),
                ("name", n.map(|n| json!(n))),
            ])
        });
    let body = (vec_of(from, 2), vec_of(to, 2))
        .prop_map(|(from, to)| json!({"spec": {"from": from, "to": to}}));
    object(
        "gateway.networking.k8s.io/v1",
        "ReferenceGrant",
        true,
        "a",
        body,
    )
}

fn listener_set() -> impl Strategy<Value = Value> {
    let body = (name("gw"), opt(0.5, namespace()), vec_of(listener(), 2))
        .prop_map(|(gw, ns, listeners)| json!({"spec": {"parentRef": obj(vec![("name", Some(json!(gw))), ("namespace", ns.map(|n| json!(n)))]), "listeners": listeners}}));
    object(
        "gateway.networking.k8s.io/v1",
        "ListenerSet",
        true,
        "ls",
        body,
    )
}

fn backend_tls_policy() -> impl Strategy<Value = Value> {
    let target = (
        name("web"),
        opt(0.4, prop::sample::select(&["http", "https", ""][..])),
    )
        .prop_map(|(n, s)| {
            obj(vec![
                ("group", Some(json!(""))),
                ("kind", Some(json!("Service"))),
                ("name", Some(json!(n))),
                ("sectionName", s.map(|s| json!(s))),
            ])
        });
    let body = (
        vec_of(target, 2),
        vec_of(object_ref(CERT_KINDS), 2),
        hostname(),
        opt(0.3, prop::sample::select(&["System", "Bogus"][..])),
    )
        .prop_map(|(targets, cas, host, well_known)| {
            json!({"spec": {"targetRefs": targets, "validation": obj(vec![
                ("caCertificateRefs", Some(json!(cas))),
                ("hostname", Some(json!(host))),
                ("wellKnownCACertificates", well_known.map(|w| json!(w))),
            ])}})
        });
    object(
        "gateway.networking.k8s.io/v1",
        "BackendTLSPolicy",
        true,
        "a",
        body,
    )
}

// ---------------------------------------------------------------------------------------------------------------
// Input
// ---------------------------------------------------------------------------------------------------------------

/// Reads generated JSON into its typed object; a generator that writes something the type cannot hold is a bug
/// of this test, reported with the field path.
fn typed<T: DeserializeOwned>(v: &Value) -> Result<Arc<T>, TestCaseError> {
    serde_path_to_error::deserialize(v.clone())
        .map(Arc::new)
        .map_err(|e| {
            TestCaseError::fail(format!(
                "generated {} does not read at {}: {}\n{v:#}",
                v["kind"],
                e.path(),
                e.inner()
            ))
        })
}

/// Adds `objects` to `list`.
fn add<T: DeserializeOwned>(
    list: &mut Vec<Arc<T>>,
    objects: &[Value],
) -> Result<(), TestCaseError> {
    for v in objects {
        list.push(typed(v)?);
    }
    Ok(())
}

#[derive(Clone, Debug)]
struct Objects {
    core: Vec<Value>,
    routes: Vec<Value>,
    nginx: Option<NginxSetup>,
}

/// The translation options of a run: the defaults, plus the ingress-nginx profile when it is on.
fn options(o: &Objects) -> Options {
    let mut opts = Options::default();
    if let Some(n) = &o.nginx {
        opts.nginx = NginxOptions {
            classes: vec!["nginx".into()],
            config_map: n.config_map.then(|| "default/ingress-nginx".into()),
            overrides: n.overrides.clone(),
            ..NginxOptions::default()
        };
    }
    opts
}

/// Classes of ours (usually) and a few objects of every kind.
fn objects() -> impl Strategy<Value = Objects> {
    // Our classes, usually (without them nothing is ours and translation has little to do).
    let classes = (any::<u8>(), any::<u8>()).prop_map(|(i, g)| {
        let mut v = Vec::new();
        if i % 8 != 0 {
            v.push(json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                "metadata": {"name": "portcullis", "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
                "spec": {"controller": portcullis::translate::INGRESS_CONTROLLER}}));
        }
        if g % 8 != 0 {
            v.push(json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
                "metadata": {"name": "portcullis"},
                "spec": {"controllerName": portcullis::translate::GATEWAY_CONTROLLER}}));
        }
        v
    });
    let core = (
        vec_of(namespace_object(), 2),
        vec_of(service(), 3),
        vec_of(endpoint_slice(), 3),
        vec_of(secret(), 2),
        vec_of(config_map(), 1),
        vec_of(ingress_class(), 2),
        vec_of(gateway_class(), 2),
        prop::collection::vec(gateway(), 1..=2),
        vec_of(reference_grant(), 2),
        vec_of(listener_set(), 1),
        vec_of(backend_tls_policy(), 1),
    )
        .prop_map(|(a, b, c, d, e, f, g, h, i, j, k)| [a, b, c, d, e, f, g, h, i, j, k].concat());
    // Half of the time, a well-formed Gateway and Service next to the generated ones (which come after, so a
    // generated object of the same name loses: objects are unique by name), so that generated routes often have
    // somewhere to attach and something to forward to.
    // Its Service sometimes carries `portcullis.dev/*` annotations (a generated Service named `web` loses to it).
    let base = (any::<bool>(), opt(0.7, policy_annotations())).prop_map(|(yes, annotations)| {
        if !yes {
            return Vec::new();
        }
        let mut svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}]}});
        if let Some(a) = annotations {
            svc["metadata"]["annotations"] = json!(a);
        }
        vec![
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                "metadata": {"name": "gw", "namespace": "default"},
                "spec": {"gatewayClassName": "portcullis", "listeners": [
                    {"name": "http", "port": 80, "protocol": "HTTP", "allowedRoutes": {"namespaces": {"from": "All"}}},
                    {"name": "tls", "port": 8443, "protocol": "TLS", "tls": {"mode": "Passthrough"}},
                    {"name": "tcp", "port": 9000, "protocol": "TCP", "allowedRoutes": {"namespaces": {"from": "All"}}},
                    {"name": "udp", "port": 9000, "protocol": "UDP", "allowedRoutes": {"namespaces": {"from": "All"}}}]}}),
            svc,
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "web-base", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}, {"name": "https", "port": 8443}],
                "endpoints": [{"addresses": ["10.0.0.1"]}]}),
        ]
    });
    let core = (classes, base, core).prop_map(|(c, b, rest)| [c, b, rest].concat());
    let routes = (
        vec_of(ingress(), 3),
        prop::collection::vec(http_route(), 1..=3),
        vec_of(tls_route(), 1),
        vec_of(grpc_route(), 1),
        vec_of(l4_route("TCPRoute"), 1),
        vec_of(l4_route("UDPRoute"), 1),
    )
        .prop_map(|(a, b, c, d, e, f)| [a, b, c, d, e, f].concat());
    // Half of the time the ingress-nginx profile is on: the `nginx` IngressClass of ingress-nginx's controller
    // (sometimes the default class), its ConfigMap with settings valid and not, and command-line settings.
    let nginx = opt(
        0.5,
        (
            any::<bool>(),
            any::<bool>(),
            prop::collection::btree_map(
                prop::sample::select(portcullis::translate::nginx::config::KEYS),
                nginx_value(),
                0..4,
            ),
            vec_of(nginx_setting(), 2),
        ),
    );
    // Now and then a canary of the first Ingress: the same rules (so its paths find their main paths), another
    // name, the canary annotations.
    let canary = opt(
        0.3,
        (
            prop::sample::select(&["0", "10", "100", "-1", "x"][..]),
            any::<bool>(),
        ),
    );
    (core, routes, nginx, canary).prop_map(|(mut core, mut routes, nginx, canary)| {
        if let (Some((weight, by_header)), Some(main)) =
            (canary, routes.iter().find(|v| v["kind"] == "Ingress"))
        {
            let mut c = main.clone();
            c["metadata"]["name"] = json!("a-canary");
            let mut a = json!({"nginx.ingress.kubernetes.io/canary": "true",
                "nginx.ingress.kubernetes.io/canary-weight": weight});
            if by_header {
                a["nginx.ingress.kubernetes.io/canary-by-header"] = json!("X-Canary");
            }
            c["metadata"]["annotations"] = a;
            routes.push(c);
        }
        let nginx = nginx.map(|(default, config_map, data, overrides)| {
            let mut class = json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                "metadata": {"name": "nginx"},
                "spec": {"controller": portcullis::translate::nginx::INGRESS_NGINX_CONTROLLER}});
            if default {
                class["metadata"]["annotations"] =
                    json!({"ingressclass.kubernetes.io/is-default-class": "true"});
            }
            core.insert(0, class);
            if config_map {
                core.insert(
                    0,
                    json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "ingress-nginx", "namespace": "default"}, "data": data}),
                );
            }
            NginxSetup {
                config_map,
                overrides,
            }
        });
        Objects {
            core,
            routes,
            nginx,
        }
    })
}

fn input(objects: &[Value]) -> Result<Input, TestCaseError> {
    let mut input = Input::default();
    let of = |kind: &str| -> Vec<Value> {
        objects
            .iter()
            .filter(|v| v["kind"] == kind)
            .cloned()
            .collect()
    };
    add::<Namespace>(&mut input.namespaces, &of("Namespace"))?;
    add::<Service>(&mut input.services, &of("Service"))?;
    add::<EndpointSlice>(&mut input.endpoint_slices, &of("EndpointSlice"))?;
    add::<Secret>(&mut input.secrets, &of("Secret"))?;
    add::<ConfigMap>(&mut input.config_maps, &of("ConfigMap"))?;
    add::<IngressClass>(&mut input.ingress_classes, &of("IngressClass"))?;
    add::<Ingress>(&mut input.ingresses, &of("Ingress"))?;
    add::<GatewayClass>(&mut input.gateway_classes, &of("GatewayClass"))?;
    add::<Gateway>(&mut input.gateways, &of("Gateway"))?;
    add::<HTTPRoute>(&mut input.http_routes, &of("HTTPRoute"))?;
    add::<GRPCRoute>(&mut input.grpc_routes, &of("GRPCRoute"))?;
    add::<TLSRoute>(&mut input.tls_routes, &of("TLSRoute"))?;
    add::<TCPRoute>(&mut input.tcp_routes, &of("TCPRoute"))?;
    add::<UDPRoute>(&mut input.udp_routes, &of("UDPRoute"))?;
    add::<ReferenceGrant>(&mut input.reference_grants, &of("ReferenceGrant"))?;
    add::<ListenerSet>(&mut input.listener_sets, &of("ListenerSet"))?;
    add::<BackendTLSPolicy>(&mut input.backend_tls_policies, &of("BackendTLSPolicy"))?;
    input.normalize();
    Ok(input)
}

/// The invariants `src/model.rs` states for every model translation makes.
fn check_model(model: &Model) -> Result<(), TestCaseError> {
    let keys: Vec<_> = model.listeners.iter().map(|l| l.key()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    sorted.dedup();
    prop_assert_eq!(
        &keys,
        &sorted,
        "listeners sorted by address, port and transport, each once"
    );
    // Every backend is held under its own Service port's key.
    for (k, b) in &model.backends {
        prop_assert!(
            k.namespace == b.namespace && k.name == b.name && k.port == b.port,
            "backend {} holds {}/{}:{}",
            k,
            b.namespace,
            b.name,
            b.port
        );
    }
    // Every key a rule, mirror or TLS route names is in the backends.
    let held = |b: &Backend, what: &dyn std::fmt::Display| -> Result<(), TestCaseError> {
        if let Backend::Service(k) = b {
            prop_assert!(
                model.backends.contains_key(k),
                "{}: backend {} is not in the model's backends",
                what,
                k
            );
        }
        Ok(())
    };
    let mirrors = |filters: &[Filter]| -> Vec<Backend> {
        filters
            .iter()
            .filter_map(|f| match f {
                Filter::RequestMirror(m) => Some(m.backend.clone()),
                _ => None,
            })
            .collect()
    };
    for l in &model.listeners {
        for (origin, group) in routes_of(l) {
            for b in &group.backends {
                held(&b.backend, origin)?;
            }
        }
        for r in http_rules(l) {
            for b in mirrors(&r.filters) {
                held(&b, &r.origin)?;
            }
            if let Action::Forward(g) = &r.action {
                for wb in &g.backends {
                    held(&wb.backend, &r.origin)?;
                    for b in mirrors(&wb.filters) {
                        held(&b, &r.origin)?;
                    }
                }
            }
            prop_assert!(
                !r.matches.is_empty(),
                "{}: a rule without matches",
                r.origin
            );
            for m in &r.matches {
                if let PathMatch::Prefix(p) = &m.path {
                    prop_assert!(
                        p == "/" || (p.starts_with('/') && !p.ends_with('/')),
                        "{}: prefix {:?}",
                        r.origin,
                        p
                    );
                }
                let names: Vec<&str> = m.headers.iter().map(|h| h.name.as_str()).collect();
                let unique: BTreeSet<&str> = names.iter().copied().collect();
                prop_assert_eq!(
                    names.len(),
                    unique.len(),
                    "{}: repeated header names",
                    r.origin
                );
                for n in names {
                    prop_assert_eq!(
                        n,
                        n.to_ascii_lowercase(),
                        "{}: header names are lowercase",
                        r.origin
                    );
                }
                let q: Vec<&str> = m.query_params.iter().map(|q| q.name.as_str()).collect();
                let uq: BTreeSet<&str> = q.iter().copied().collect();
                prop_assert_eq!(q.len(), uq.len(), "{}: repeated query names", r.origin);
                if let Some(method) = &m.method {
                    prop_assert_eq!(method, &method.to_ascii_uppercase());
                }
            }
        }
    }
    Ok(())
}

/// A few requests on every listener: looked up without a panic, whatever the table holds.
fn ask(router: &Router) {
    let headers = HeaderMap::new();
    for table in router.listeners() {
        for host in [
            "example.com",
            "a.example.com",
            "x.a.example.com",
            "",
            "other.org",
        ] {
            for path in ["/", "/a", "/a/b", "/api/v1", "//", "/p"] {
                let parts = RequestParts {
                    method: &Method::GET,
                    path,
                    query: Some("q=1&Q=%41"),
                    headers: &headers,
                };
                let _ = table.lookup(host, Some(host), &parts);
                let _ = table.find_tls(host);
            }
        }
    }
}

/// The generated objects, one per (kind, namespace, name) as in a cluster: the first of each wins.
fn unique(objects: &Objects) -> Vec<Value> {
    let mut seen = BTreeSet::new();
    objects
        .core
        .iter()
        .chain(&objects.routes)
        .filter(|v| {
            seen.insert((
                v["kind"].to_string(),
                v["metadata"]["namespace"].to_string(),
                v["metadata"]["name"].to_string(),
            ))
        })
        .cloned()
        .collect()
}

fn pretty(out: &portcullis::translate::Output) -> String {
    serde_json::to_string_pretty(out).unwrap_or_default()
}

fn check(objects: &Objects) -> Result<(), TestCaseError> {
    let all = unique(objects);
    let input = input(&all)?;
    let opts = options(objects);
    let out = translate(&input, &opts);

    // Pure and order-independent: the same objects in the reverse order, normalized as the sources do.
    let reversed: Vec<Value> = all.iter().rev().cloned().collect();
    let again = translate(&self::input(&reversed)?, &opts);
    if again != out {
        let (a, b) = (pretty(&out), pretty(&again));
        let diff: Vec<String> = a
            .lines()
            .zip(b.lines())
            .filter(|(x, y)| x != y)
            .take(20)
            .map(|(x, y)| format!("- {x}\n+ {y}"))
            .collect();
        return Err(TestCaseError::fail(format!(
            "translation depends on the order of the objects (first differing lines, in order / reversed):\n{}",
            diff.join("\n")
        )));
    }

    check_model(&out.model)?;

    // Every diagnostic names an object of the input.
    let mut known: BTreeSet<(String, Option<String>, String)> = BTreeSet::new();
    for v in &all {
        known.insert((
            v["kind"].as_str().unwrap_or("").to_string(),
            v["metadata"]["namespace"].as_str().map(str::to_string),
            v["metadata"]["name"].as_str().unwrap_or("").to_string(),
        ));
    }
    // Problems with `--ingress-nginx-set` are reported on the flag.
    if objects
        .nginx
        .as_ref()
        .is_some_and(|n| !n.overrides.is_empty())
    {
        known.insert(("Flag".into(), None, "--ingress-nginx-set".into()));
    }
    for d in &out.diagnostics {
        let key = (
            d.object.kind.clone(),
            d.object.namespace.clone(),
            d.object.name.clone(),
        );
        prop_assert!(
            known.contains(&key),
            "diagnostic about an object that is not in the input: {}",
            d
        );
    }

    // The model compiles and publishes; the router answers.
    let router = Router::compile(&out.model)
        .map_err(|e| TestCaseError::fail(format!("a translated model does not compile: {e}")))?;
    ask(&router);
    let store = Store::new();
    let published = store.publish(out.model.clone());
    prop_assert!(
        matches!(published, Ok(Some(1))),
        "publish: {:?}",
        published.map_err(|e| e.to_string())
    );
    prop_assert_eq!(&*store.load().model, &out.model);
    // Status and the model print (the admin API's /status and /config).
    prop_assert!(serde_json::to_string(&out).is_ok());

    ingresses_accounted_for(&all, &opts, &out)?;
    service_annotations_accounted_for(&all, &opts, &out)?;
    Ok(())
}

/// (namespace, name) of a generated object.
fn id_of(v: &Value) -> (String, String) {
    (
        v["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        v["metadata"]["name"].as_str().unwrap_or("").to_string(),
    )
}

/// The Ingresses that route in `model`: the origin of a rule, a default backend or a TLS route, or the canary
/// Ingress merged into another Ingress's rule.
fn routing_ingresses(model: &Model) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for l in &model.listeners {
        for r in http_rules(l) {
            if r.origin.kind == OriginKind::Ingress {
                out.insert((r.origin.namespace.clone(), r.origin.name.clone()));
            }
            for f in &r.filters {
                if let Filter::Policy(p) = f {
                    if let Some((ns, name)) =
                        p.canary.as_ref().and_then(|c| c.ingress.split_once('/'))
                    {
                        out.insert((ns.to_string(), name.to_string()));
                    }
                }
            }
        }
        for (origin, _) in routes_of(l) {
            if origin.kind == OriginKind::Ingress {
                out.insert((origin.namespace.clone(), origin.name.clone()));
            }
        }
    }
    out
}

/// The HTTP rules of a listener (HTTP and HTTPS), default backend included.
fn http_rules(l: &Listener) -> impl Iterator<Item = &HttpRule> {
    l.http().into_iter().flat_map(|h| {
        h.virtual_hosts
            .iter()
            .flat_map(|v| &v.rules)
            .chain(&h.default_backend)
    })
}

/// The TLS, TCP and UDP routes of a listener: where each came from and its backends.
fn routes_of(l: &Listener) -> Vec<(&Origin, &BackendGroup)> {
    match &l.kind {
        ListenerKind::Tls(t) => t.routes.iter().map(|r| (&r.origin, &r.backends)).collect(),
        ListenerKind::Tcp(t) | ListenerKind::Udp(t) => {
            t.routes.iter().map(|r| (&r.origin, &r.backends)).collect()
        }
        ListenerKind::Http(_) | ListenerKind::Https(_) => Vec::new(),
    }
}

/// Does `message` name the annotation `key` (not merely a longer key that starts with it)?
fn names_key(message: &str, key: &str) -> bool {
    message.match_indices(key).any(|(i, _)| {
        !message[i + key.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
    })
}

/// Table or diagnostic, for Ingresses and their ingress-nginx annotations. An Ingress that routes when its
/// `nginx.ingress.kubernetes.io/*` annotations are taken away still routes with them (its own rules, or merged
/// into another Ingress's rule as its canary), or a diagnostic names it: whatever the annotations say, the
/// Ingress does not vanish from the table in silence. And every annotation of such an Ingress that Portcullis
/// does not act on (an unknown key, a snippet, a key parsed but not applied) is named by a diagnostic about it.
fn ingresses_accounted_for(
    all: &[Value],
    opts: &Options,
    out: &Output,
) -> Result<(), TestCaseError> {
    let stripped: Vec<Value> = all
        .iter()
        .cloned()
        .map(|mut v| {
            if v["kind"] == "Ingress" {
                if let Some(Value::Object(a)) = v["metadata"].get_mut("annotations") {
                    a.retain(|k, _| !k.starts_with(NGINX_PREFIX));
                }
            }
            v
        })
        .collect();
    let plain = translate(&input(&stripped)?, opts);
    let routes_plain = routing_ingresses(&plain.model);
    let routes = routing_ingresses(&out.model);
    let about = |id: &(String, String)| -> Vec<&Diagnostic> {
        out.diagnostics
            .iter()
            .filter(|d| {
                d.object.kind == "Ingress"
                    && d.object.namespace.as_deref() == Some(id.0.as_str())
                    && d.object.name == id.1
            })
            .collect()
    };
    for id in &routes_plain {
        prop_assert!(
            routes.contains(id) || !about(id).is_empty(),
            "Ingress {}/{} routes without its ingress-nginx annotations; with them it neither routes nor has a \
             diagnostic",
            id.0,
            id.1
        );
    }
    for v in all.iter().filter(|v| v["kind"] == "Ingress") {
        let id = id_of(v);
        if !routes_plain.contains(&id) && !routes.contains(&id) {
            continue;
        }
        let Some(Value::Object(anns)) = v["metadata"].get("annotations") else {
            continue;
        };
        for key in anns.keys() {
            let Some(short) = key.strip_prefix(NGINX_PREFIX) else {
                continue;
            };
            let inert = !KNOWN.contains(&short)
                || NOT_APPLIED.contains(&short)
                || SNIPPETS.contains(&short)
                || short.ends_with("-snippet");
            if inert {
                prop_assert!(
                    about(&id)
                        .iter()
                        .any(|d| d.annotation.as_deref() == Some(key.as_str())),
                    "Ingress {}/{}: annotation {} is not acted on, and no diagnostic names it",
                    id.0,
                    id.1,
                    key
                );
            }
        }
    }
    Ok(())
}

/// Table or diagnostic, for Services and their `portcullis.dev/*` annotations: every such annotation of a
/// Service whose backend is in the table shows in that backend (translating without it gives another backend),
/// or a diagnostic about the Service names it, or its value is the documented default (or restates what another
/// annotation implies: `consistent-hash` next to `hash-on`). At most six annotations
/// per input are taken away (each costs a translation).
fn service_annotations_accounted_for(
    all: &[Value],
    opts: &Options,
    out: &Output,
) -> Result<(), TestCaseError> {
    let backends_of = |m: &Model, id: &(String, String)| -> Vec<ServiceBackend> {
        m.backends
            .values()
            .filter(|b| b.namespace == id.0 && b.name == id.1)
            .cloned()
            .collect()
    };
    let mut budget = 6;
    for (i, v) in all.iter().enumerate() {
        if v["kind"] != "Service" {
            continue;
        }
        let id = id_of(v);
        let mine = backends_of(&out.model, &id);
        if mine.is_empty() {
            continue;
        }
        let Some(Value::Object(anns)) = v["metadata"].get("annotations") else {
            continue;
        };
        for (key, value) in anns {
            let Some(short) = key.strip_prefix("portcullis.dev/") else {
                continue;
            };
            let value = value.as_str().unwrap_or("").trim();
            if POLICY_DEFAULTS.contains(&(short, value)) {
                continue;
            }
            // `hash-on` implies consistent hashing (docs/upstreams.md): saying so as well restates it.
            if short == "load-balancer"
                && value == "consistent-hash"
                && anns.contains_key("portcullis.dev/hash-on")
            {
                continue;
            }
            let reported = out.diagnostics.iter().any(|d| {
                d.object.kind == "Service"
                    && d.object.namespace.as_deref() == Some(id.0.as_str())
                    && d.object.name == id.1
                    && names_key(&d.message, key)
            });
            if reported {
                continue;
            }
            if budget == 0 {
                return Ok(());
            }
            budget -= 1;
            let mut without = all.to_vec();
            if let Some(a) = without[i]["metadata"]["annotations"].as_object_mut() {
                a.remove(key);
            }
            let other = translate(&input(&without)?, opts);
            prop_assert!(
                backends_of(&other.model, &id) != mine,
                "Service {}/{}: annotation {}: {:?} changes nothing, and no diagnostic names it (all of its \
                 annotations: {:?})",
                id.0,
                id.1,
                key,
                value,
                anns
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases::config(128))]

    /// Arbitrary objects of every kind: no panic, a deterministic output, a model that compiles and publishes.
    #[test]
    fn translation_survives_arbitrary_objects(objects in objects()) {
        check(&objects)?;
    }
}

/// The generators reach what the property is about: many inputs translate into models with HTTP rules (from
/// both APIs) and listeners of several kinds, and many get diagnostics. Without this, a generator that drifted
/// into producing only objects that are not ours would let the property pass while translating nothing.
#[test]
fn generated_objects_reach_the_translator() {
    use portcullis::model::Protocol;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Default::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[11; 32]),
    );
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    let strategy = objects();
    let n = 100;
    for _ in 0..n {
        let o = strategy.new_tree(&mut runner).expect("objects").current();
        let all = unique(&o);
        let out = translate(&input(&all).expect("input"), &options(&o));
        let rules: Vec<_> = out
            .model
            .listeners
            .iter()
            .flat_map(|l| {
                l.http()
                    .into_iter()
                    .flat_map(|h| h.virtual_hosts.iter().flat_map(|v| &v.rules))
            })
            .collect();
        let mut note = |k: &'static str, yes: bool| {
            if yes {
                *counts.entry(k).or_default() += 1;
            }
        };
        note(
            "httproute rules",
            rules.iter().any(|r| r.origin.kind == OriginKind::HttpRoute),
        );
        note(
            "ingress rules",
            rules.iter().any(|r| r.origin.kind == OriginKind::Ingress),
        );
        note(
            "https listener",
            out.model
                .listeners
                .iter()
                .any(|l| l.protocol() == Protocol::Https),
        );
        note(
            "tls routes",
            out.model
                .listeners
                .iter()
                .any(|l| matches!(&l.kind, ListenerKind::Tls(t) if !t.routes.is_empty())),
        );
        note(
            "errors",
            out.diagnostics
                .iter()
                .any(|d| d.severity == portcullis::translate::Severity::Error),
        );
        note("gateway status", !out.statuses.gateways.is_empty());
        note(
            "tcp or udp routes",
            out.model.listeners.iter().any(|l| {
                matches!(&l.kind, ListenerKind::Tcp(t) | ListenerKind::Udp(t) if !t.routes.is_empty())
            }),
        );
        let policies: Vec<_> = rules
            .iter()
            .flat_map(|r| &r.filters)
            .filter_map(|f| match f {
                Filter::Policy(p) => Some(p),
                _ => None,
            })
            .collect();
        note("ingress-nginx policies", !policies.is_empty());
        note("canary", policies.iter().any(|p| p.canary.is_some()));
        note(
            "ingress-nginx profile rules",
            o.nginx.is_some() && policies.iter().any(|p| p.forwarded.is_some()),
        );
        note(
            "annotation diagnostics",
            out.diagnostics.iter().any(|d| {
                d.annotation
                    .as_deref()
                    .is_some_and(|a| a.starts_with(NGINX_PREFIX))
            }),
        );
        note(
            "annotation errors",
            out.diagnostics.iter().any(|d| {
                d.severity == Severity::Error
                    && d.annotation
                        .as_deref()
                        .is_some_and(|a| a.starts_with(NGINX_PREFIX))
            }),
        );
        note(
            "service policies",
            out.model.backends.values().any(|b| !b.policy.is_default()),
        );
        note(
            "service annotation warnings",
            out.diagnostics
                .iter()
                .any(|d| d.object.kind == "Service" && d.message.contains("portcullis.dev/")),
        );
    }
    eprintln!("{counts:?} of {n}");
    for (k, min) in [
        ("httproute rules", 10),
        ("ingress rules", 15),
        ("errors", 40),
        ("gateway status", 40),
        ("https listener", 2),
        ("tcp or udp routes", 5),
        ("ingress-nginx policies", 5),
        ("canary", 2),
        ("ingress-nginx profile rules", 2),
        ("annotation diagnostics", 20),
        ("annotation errors", 10),
        ("service policies", 2),
        ("service annotation warnings", 20),
    ] {
        assert!(
            counts.get(k).copied().unwrap_or(0) >= min,
            "{k}: {counts:?} of {n}"
        );
    }
}
