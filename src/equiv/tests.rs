use super::*;
use crate::model::{
    Action, Backend, BackendGroup, BackendKey, HeaderMatch, Origin, OriginKind, RouteMatch,
    Timeouts, VirtualHost, WeightedBackend,
};

fn rule(kind: OriginKind, name: &str, path: PathMatch, backends: &[(&str, u32)]) -> HttpRule {
    HttpRule {
        origin: Origin {
            kind,
            namespace: "ns".into(),
            name: name.into(),
            rule: 0,
            rule_name: None,
            created: None,
        },
        matches: vec![RouteMatch {
            path,
            ..RouteMatch::any()
        }],
        filters: vec![],
        action: Action::Forward(BackendGroup {
            backends: backends
                .iter()
                .map(|(svc, w)| WeightedBackend {
                    weight: *w,
                    backend: Backend::Service(BackendKey::new("ns", *svc, 80)),
                    filters: vec![],
                })
                .collect(),
        }),
        timeouts: Timeouts::default(),
        retry: None,
        grpc: false,
        session: None,
    }
}

fn ing(path: PathMatch, svc: &str) -> HttpRule {
    rule(OriginKind::Ingress, "ing", path, &[(svc, 1)])
}

fn route(path: PathMatch, svc: &str) -> HttpRule {
    rule(OriginKind::HttpRoute, "route", path, &[(svc, 1)])
}

fn model(host: &str, rules: Vec<HttpRule>) -> Model {
    Model {
        listeners: vec![Listener {
            address: None,
            port: 80,
            transport: Default::default(),
            kind: crate::model::ListenerKind::Http(crate::model::HttpListener {
                virtual_hosts: vec![VirtualHost {
                    listener_hostname: None,
                    hostname: HostPattern::ingress(host).unwrap(),
                    rules,
                }],
                default_backend: None,
            }),
        }],
        backends: Default::default(),
    }
}

fn diff(old: Vec<HttpRule>, new: Vec<HttpRule>) -> Report {
    compare(
        &model("a.example", old),
        &model("a.example", new),
        &Limits::default(),
    )
}

fn paths(r: &Report) -> Vec<String> {
    r.differences
        .iter()
        .map(|d| d.request.path.clone())
        .collect()
}

fn prefix(p: &str) -> PathMatch {
    PathMatch::prefix(p)
}
fn exact(p: &str) -> PathMatch {
    PathMatch::Exact(p.into())
}
fn regex(p: &str) -> PathMatch {
    PathMatch::RegularExpression(p.into())
}

#[test]
fn identical_models_are_equivalent() {
    let r = diff(
        vec![ing(prefix("/api"), "a"), ing(exact("/"), "b")],
        vec![ing(prefix("/api"), "a"), ing(exact("/"), "b")],
    );
    assert!(r.is_equivalent(), "{r}");
    assert!(r.hosts_compared >= 2);
}

#[test]
fn trailing_slash_of_a_prefix_is_the_same_prefix() {
    // Both specs ignore a trailing slash of a prefix: PathMatch::prefix normalizes, and the languages agree.
    let r = diff(
        vec![ing(prefix("/api/"), "a")],
        vec![route(prefix("/api"), "a")],
    );
    assert!(r.is_equivalent(), "{r}");
}

#[test]
fn an_ingress_path_moved_to_an_httproute_is_equivalent() {
    let r = diff(
        vec![ing(prefix("/api"), "a"), ing(prefix("/"), "web")],
        vec![route(prefix("/api"), "a"), ing(prefix("/"), "web")],
    );
    assert!(r.is_equivalent(), "{r}");
}

#[test]
fn segment_prefix_as_regex_is_equivalent() {
    let r = diff(
        vec![ing(prefix("/api"), "a")],
        vec![route(regex("/api(/.*)?"), "a")],
    );
    assert!(r.is_equivalent(), "{r}");
}

#[test]
fn exact_trailing_slash_differs() {
    let r = diff(
        vec![ing(exact("/api/"), "a")],
        vec![route(exact("/api"), "a")],
    );
    assert!(!r.is_equivalent());
    let p = paths(&r);
    assert!(p.contains(&"/api".to_string()), "{p:?}");
    assert!(p.contains(&"/api/".to_string()), "{p:?}");
}

#[test]
fn case_sensitivity_differs() {
    let r = diff(
        vec![ing(regex("(?i)/api(/.*)?"), "a")],
        vec![route(prefix("/api"), "a")],
    );
    assert!(!r.is_equivalent());
    let d = &r.differences[0];
    assert!(d.request.path.eq_ignore_ascii_case("/api"), "{r}");
    assert_ne!(d.request.path, "/api");
    assert_eq!(d.new.does, "404 Not Found");
}

#[test]
fn plain_prefix_is_not_a_segment_prefix() {
    // ingress-nginx's prefix location `/api` also matches `/apix`; the Gateway API PathPrefix does not.
    let r = diff(
        vec![ing(regex("/api.*"), "a")],
        vec![route(prefix("/api"), "a")],
    );
    assert_eq!(paths(&r), ["/apia"], "{r}");
}

#[test]
fn regex_anchoring_differs() {
    // A regex path is anchored at both ends: `/api` is not `/api.*`.
    let r = diff(
        vec![ing(regex("/api.*"), "a")],
        vec![route(regex("/api"), "a")],
    );
    assert_eq!(paths(&r), ["/apia"], "{r}");
}

#[test]
fn weights_compare_in_lowest_terms() {
    let old = rule(OriginKind::Ingress, "i", prefix("/"), &[("a", 1), ("b", 1)]);
    let same = rule(
        OriginKind::HttpRoute,
        "r",
        prefix("/"),
        &[("a", 50), ("b", 50)],
    );
    let other = rule(
        OriginKind::HttpRoute,
        "r",
        prefix("/"),
        &[("a", 90), ("b", 10)],
    );
    assert!(diff(vec![old.clone()], vec![same]).is_equivalent());
    let r = diff(vec![old], vec![other]);
    assert_eq!(r.differences.len(), 1, "{r}");
    assert!(r.differences[0].new.does.contains("(weight 9)"), "{r}");
}

#[test]
fn precedence_decides_who_answers() {
    // The same two rules in both models: order comes from precedence, not from the list.
    let a = ing(prefix("/a"), "a");
    let b = ing(prefix("/"), "b");
    assert!(diff(vec![a.clone(), b.clone()], vec![b, a]).is_equivalent());
}

#[test]
fn header_conditions_are_split_into_classes() {
    let mut canary = route(prefix("/"), "canary");
    canary.matches[0].headers = vec![HeaderMatch {
        name: "x-canary".into(),
        value: StringMatch::RegularExpression("yes|always".into()),
    }];
    let mut canary2 = route(prefix("/"), "canary");
    canary2.matches[0].headers = vec![HeaderMatch {
        name: "x-canary".into(),
        value: StringMatch::Exact("always".into()),
    }];
    let main = route(prefix("/"), "main");
    let r = diff(vec![canary, main.clone()], vec![canary2, main]);
    assert_eq!(r.differences.len(), 1, "{r}");
    let d = &r.differences[0];
    assert_eq!(
        d.request.headers,
        [("x-canary".to_string(), "yes".to_string())]
    );
}

#[test]
fn methods_and_default_backend() {
    let mut get = route(prefix("/"), "a");
    get.matches[0].method = Some("GET".into());
    let any = route(prefix("/"), "a");
    let r = diff(vec![get], vec![any]);
    assert_eq!(r.differences.len(), 1, "{r}");
    assert_ne!(r.differences[0].request.method, "GET");
    assert_eq!(r.differences[0].old.does, "404 Not Found");
}

#[test]
fn hosts_wildcards_and_missing_listeners() {
    let old = model("*.example.com", vec![ing(prefix("/"), "a")]);
    let new = model("a.example.com", vec![ing(prefix("/"), "a")]);
    let r = compare(&old, &new, &Limits::default());
    let hosts: BTreeSet<&str> = r
        .differences
        .iter()
        .map(|d| d.request.host.as_str())
        .collect();
    assert!(hosts.contains("x.example.com"), "{r}");
    assert!(!hosts.contains("a.example.com"), "{r}");
    let mut other = new.clone();
    other.listeners[0].port = 8080;
    let r = compare(&new, &other, &Limits::default());
    assert_eq!(r.differences.len(), 2, "{r}");
}

#[test]
fn undecidable_patterns_are_reported() {
    // A Unicode word boundary cannot be determinized: undecided, never equivalent ...
    let r = diff(
        vec![ing(regex("/a\\b.*"), "a")],
        vec![ing(regex("/a\\b.*|/b"), "a")],
    );
    assert!(!r.is_equivalent());
    assert_eq!(r.undecided.len(), 1, "{r}");
    // ... unless both sides try the same patterns in the same order with the same effect (equal without automata).
    let r = diff(
        vec![ing(regex("/a\\b.*"), "a")],
        vec![ing(regex("/a\\b.*"), "a")],
    );
    assert!(r.is_equivalent(), "{r}");
}

/// An ingress-nginx server (a hostname with ingress-nginx-profile rules) answers what its rules do not match with
/// 404, as the router does: what a less specific hostname does cannot change its answers, and the proof must see
/// that. Without ingress-nginx rules on the exact host, the wildcard's rules answer there too.
#[test]
fn an_ingress_nginx_server_does_not_fall_through() {
    let nginx = |mut r: HttpRule| {
        r.filters.push(crate::model::Filter::Policy(Box::new(
            crate::model::policy::Policy {
                source: "ns/ing".into(),
                forwarded: Some(crate::model::policy::Forwarded {
                    trust_client_headers: false,
                }),
                ..Default::default()
            },
        )));
        r
    };
    let two_hosts = |api: HttpRule, wild: HttpRule| {
        let mut m = model("api.example.com", vec![api]);
        if let crate::model::ListenerKind::Http(h) = &mut m.listeners[0].kind {
            h.virtual_hosts.push(VirtualHost {
                listener_hostname: None,
                hostname: HostPattern::ingress("*.example.com").unwrap(),
                rules: vec![wild],
            });
        }
        m
    };
    let hosts = |r: &Report| -> BTreeSet<String> {
        r.differences
            .iter()
            .map(|d| d.request.host.clone())
            .collect()
    };
    let old = two_hosts(nginx(ing(prefix("/v1"), "a")), nginx(ing(prefix("/"), "w")));
    let new = two_hosts(
        nginx(ing(prefix("/v1"), "a")),
        nginx(ing(prefix("/"), "w2")),
    );
    let r = compare(&old, &new, &Limits::default());
    assert!(!r.differences.is_empty(), "{r}");
    assert!(!hosts(&r).contains("api.example.com"), "{r}");

    // The same host without ingress-nginx rules falls through to the wildcard, whose change shows there.
    let old = two_hosts(ing(prefix("/v1"), "a"), nginx(ing(prefix("/"), "w")));
    let new = two_hosts(ing(prefix("/v1"), "a"), nginx(ing(prefix("/"), "w2")));
    let r = compare(&old, &new, &Limits::default());
    assert!(hosts(&r).contains("api.example.com"), "{r}");

    // The listener's default backend answers there only when it belongs to the Ingress that owns the server.
    let with_default = |owner: &str| {
        let mut m = two_hosts(nginx(ing(prefix("/v1"), "a")), nginx(ing(prefix("/"), "w")));
        let mut d = rule(OriginKind::Ingress, owner, prefix("/"), &[("d", 1)]);
        d.origin.rule = Origin::DEFAULT_BACKEND;
        if let crate::model::ListenerKind::Http(h) = &mut m.listeners[0].kind {
            h.default_backend = Some(d);
        }
        m
    };
    let r = compare(
        &with_default("ing"),
        &with_default("other"),
        &Limits::default(),
    );
    assert_eq!(
        hosts(&r),
        BTreeSet::from(["api.example.com".to_string()]),
        "{r}"
    );
    assert_eq!(r.differences[0].new.does, "404 Not Found", "{r}");
}
