//! The RBAC rules of docs/kubernetes.md as an authorizer for the fake API server's request log: every request a
//! test run made must be allowed by the rules of one scope (`cluster` or `namespace`), read from the YAML blocks
//! of the document (those starting with `# rbac.scope: ...`), so the document, the chart (compared with the same
//! blocks by scripts/test-helm) and the code cannot drift apart.

use super::fake_apiserver::{parse_query, yaml_documents, RequestRecord};
use serde_json::Value;

/// One rule of a Role or ClusterRole, with where it applies.
#[derive(Debug, Clone)]
pub struct Rule {
    /// `None` for a ClusterRole (every namespace and cluster-scoped resources), else the Role's namespace.
    pub namespace: Option<String>,
    groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
    names: Vec<String>,
}

/// What a request asks for, in the authorizer's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: String,
    /// API group (`""` for the core group).
    pub group: String,
    /// Resource, with `/subresource` when there is one.
    pub resource: String,
    /// Namespace of a namespaced request.
    pub namespace: Option<String>,
    /// The object's name: from the path, or from a `metadata.name=` field selector of a list or watch.
    pub name: Option<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The rules of `scope` (`cluster` or `namespace`) in docs/kubernetes.md.
pub fn documented_rules(scope: &str) -> Vec<Rule> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/kubernetes.md"))
        .expect("docs/kubernetes.md");
    let marker = format!("# rbac.scope: {scope}");
    let mut rules = Vec::new();
    let mut blocks = 0;
    for block in doc.split("```yaml\n").skip(1) {
        let Some((yaml, _)) = block.split_once("```") else {
            continue;
        };
        if yaml.lines().next().map(str::trim) != Some(marker.as_str()) {
            continue;
        }
        blocks += 1;
        for obj in yaml_documents(yaml) {
            let namespace = match obj["kind"].as_str() {
                Some("ClusterRole") => None,
                Some("Role") => Some(
                    obj["metadata"]["namespace"]
                        .as_str()
                        .expect("a Role has a namespace")
                        .to_string(),
                ),
                other => panic!("unexpected {other:?} in the RBAC block"),
            };
            for r in obj["rules"].as_array().into_iter().flatten() {
                rules.push(Rule {
                    namespace: namespace.clone(),
                    groups: strings(&r["apiGroups"]),
                    resources: strings(&r["resources"]),
                    verbs: strings(&r["verbs"]),
                    names: strings(&r["resourceNames"]),
                });
            }
        }
    }
    assert_eq!(
        blocks, 1,
        "one YAML block marked {marker:?} in docs/kubernetes.md"
    );
    assert!(!rules.is_empty());
    rules
}

/// The authorizer's view of a request; `None` for discovery (`/api`, `/apis`, `/api/v1`, `/apis/<g>/<v>`), which
/// every authenticated user may read.
pub fn attributes(r: &RequestRecord) -> Option<Attributes> {
    let segs: Vec<&str> = r.path.trim_matches('/').split('/').collect();
    let (group, rest): (&str, &[&str]) = match segs.as_slice() {
        ["api"] | ["apis"] | ["api", _] | ["apis", _, _] => return None,
        ["api", _, rest @ ..] => ("", rest),
        ["apis", g, _, rest @ ..] => (g, rest),
        _ => panic!("unexpected request path {}", r.path),
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, more @ ..] if !more.is_empty() => (Some(ns.to_string()), more),
        _ => (None, rest),
    };
    let (resource, name, sub) = match rest {
        [res] => (res.to_string(), None, None),
        [res, name] => (res.to_string(), Some(name.to_string()), None),
        [res, name, sub] => (res.to_string(), Some(name.to_string()), Some(*sub)),
        _ => panic!("unexpected request path {}", r.path),
    };
    let q = parse_query(&r.query);
    let verb = match (r.method.as_str(), &name) {
        ("GET", None) if q.get("watch").is_some_and(|w| w == "true" || w == "1") => "watch",
        ("GET", None) => "list",
        ("GET", Some(_)) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", None) => "deletecollection",
        ("DELETE", Some(_)) => "delete",
        (m, _) => panic!("unexpected method {m} {}", r.path),
    };
    // A list or watch of one object by a metadata.name field selector is authorized against that name.
    let name = name.or_else(|| {
        q.get("fieldSelector").and_then(|fs| {
            fs.split(',')
                .find_map(|t| t.strip_prefix("metadata.name="))
                .map(str::to_string)
        })
    });
    Some(Attributes {
        verb: verb.to_string(),
        group: group.to_string(),
        resource: match sub {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource,
        },
        namespace,
        name,
    })
}

/// Does any rule allow `a`? A Role allows only requests in its namespace; a rule with `resourceNames` only
/// requests naming one of them (never a create, which has no name yet in RBAC's view).
pub fn allowed(rules: &[Rule], a: &Attributes) -> bool {
    rules.iter().any(|r| {
        let scope = match (&r.namespace, &a.namespace) {
            (None, _) => true,
            (Some(role_ns), Some(ns)) => role_ns == ns,
            (Some(_), None) => false,
        };
        let names = r.names.is_empty()
            || (a.verb != "create" && a.name.as_ref().is_some_and(|n| r.names.contains(n)));
        scope
            && names
            && r.groups.contains(&a.group)
            && r.resources.contains(&a.resource)
            && r.verbs.contains(&a.verb)
    })
}

/// The requests in `requests` (optionally only those sent with `token`) that `scope`'s documented rules do not
/// allow, each once.
pub fn outside(requests: &[RequestRecord], scope: &str, token: Option<&str>) -> Vec<Attributes> {
    let rules = documented_rules(scope);
    let mut out: Vec<Attributes> = Vec::new();
    for r in requests
        .iter()
        .filter(|r| token.is_none() || r.token.as_deref() == token)
    {
        if let Some(a) = attributes(r) {
            if !allowed(&rules, &a) && !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

/// Panics unless every request the fake received (from `token`, when given) is allowed by `scope`'s rules, and
/// there was at least one.
pub fn assert_within(fake: &super::FakeApiServer, scope: &str, token: Option<&str>) {
    let requests = fake.requests();
    assert!(
        requests
            .iter()
            .any(|r| token.is_none() || r.token.as_deref() == token),
        "no request recorded"
    );
    let bad = outside(&requests, scope, token);
    assert!(
        bad.is_empty(),
        "requests outside the {scope}-scope RBAC rules of docs/kubernetes.md: {bad:#?}"
    );
}
