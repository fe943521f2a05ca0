//! The file source: ordinary Kubernetes YAML (multi-document, `kind: List` too) from files and directories,
//! read into the same [`Input`] the Kubernetes source produces, and watched for changes.
//!
//! A file that fails to parse, a document of a kind we do not read, or an object that does not deserialize is
//! reported with its file and line and skipped. Nothing is lost on a bad edit: when a file stops parsing, the last
//! version of it that parsed keeps serving; when one object in a file stops deserializing, its last good version
//! keeps serving.

mod watch;

pub use watch::{watch, WatchError, Watcher};

use super::{HasMeta, Input, ObjectRef};
use crate::k8s::gw::{
    BackendTLSPolicy, GRPCRoute, Gateway, GatewayClass, HTTPRoute, ListenerSet, ReferenceGrant,
    TCPRoute, TLSRoute, UDPRoute,
};
use crate::k8s::{ConfigMap, EndpointSlice, Ingress, IngressClass, Namespace, Secret, Service};
use crate::translate::Severity;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where an object was read from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Location {
    /// The file.
    pub file: PathBuf,
    /// 1-based line of the document (0 when unknown).
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}", self.file.display(), self.line)
        } else {
            write!(f, "{}", self.file.display())
        }
    }
}

/// A problem found while reading files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LoadProblem {
    /// Error (something was not read) or warning (something was ignored on purpose, e.g. an unknown kind).
    pub severity: Severity,
    /// Where.
    pub location: Location,
    /// The object, when it could be named.
    pub object: Option<ObjectRef>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for LoadProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        match &self.object {
            Some(o) => write!(f, "{}: {sev}: {o}: {}", self.location, self.message),
            None => write!(f, "{}: {sev}: {}", self.location, self.message),
        }
    }
}

/// One object of a kind the translator reads.
#[derive(Clone, Debug)]
pub enum Object {
    Namespace(Arc<Namespace>),
    Service(Arc<Service>),
    EndpointSlice(Arc<EndpointSlice>),
    Secret(Arc<Secret>),
    ConfigMap(Arc<ConfigMap>),
    IngressClass(Arc<IngressClass>),
    Ingress(Arc<Ingress>),
    GatewayClass(Arc<GatewayClass>),
    Gateway(Arc<Gateway>),
    HTTPRoute(Arc<HTTPRoute>),
    GRPCRoute(Arc<GRPCRoute>),
    TLSRoute(Arc<TLSRoute>),
    TCPRoute(Arc<TCPRoute>),
    UDPRoute(Arc<UDPRoute>),
    ReferenceGrant(Arc<ReferenceGrant>),
    ListenerSet(Arc<ListenerSet>),
    BackendTLSPolicy(Arc<BackendTLSPolicy>),
}

/// A parsed object with its name and place.
#[derive(Clone, Debug)]
pub struct Parsed {
    /// `Kind namespace/name`.
    pub object_ref: ObjectRef,
    /// Where it was read.
    pub location: Location,
    /// The object.
    pub object: Object,
    /// The line of each of its annotations (Ingresses only), when found in the text.
    pub annotation_lines: Option<Arc<HashMap<String, usize>>>,
}

/// The API groups (of `apiVersion`, without version) each kind may come from; `""` is the core group.
const KINDS: &[(&str, &[&str], bool)] = &[
    // (kind, groups, namespaced)
    ("Namespace", &[""], false),
    ("Service", &[""], true),
    ("Secret", &[""], true),
    ("ConfigMap", &[""], true),
    ("EndpointSlice", &["discovery.k8s.io"], true),
    ("IngressClass", &["networking.k8s.io"], false),
    ("Ingress", &["networking.k8s.io"], true),
    ("GatewayClass", &["gateway.networking.k8s.io"], false),
    ("Gateway", &["gateway.networking.k8s.io"], true),
    ("HTTPRoute", &["gateway.networking.k8s.io"], true),
    ("GRPCRoute", &["gateway.networking.k8s.io"], true),
    ("TLSRoute", &["gateway.networking.k8s.io"], true),
    ("TCPRoute", &["gateway.networking.k8s.io"], true),
    ("UDPRoute", &["gateway.networking.k8s.io"], true),
    ("ReferenceGrant", &["gateway.networking.k8s.io"], true),
    (
        "ListenerSet",
        &["gateway.networking.k8s.io", "gateway.networking.x-k8s.io"],
        true,
    ),
    ("BackendTLSPolicy", &["gateway.networking.k8s.io"], true),
];

fn typed<T: DeserializeOwned>(v: Value) -> Result<Arc<T>, String> {
    serde_path_to_error::deserialize(v)
        .map(Arc::new)
        .map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                e.into_inner().to_string()
            } else {
                format!("{path}: {}", e.into_inner())
            }
        })
}

fn to_object(kind: &str, v: Value) -> Result<Object, String> {
    Ok(match kind {
        "Namespace" => Object::Namespace(typed(v)?),
        "Service" => Object::Service(typed(v)?),
        "Secret" => Object::Secret(typed(v)?),
        "ConfigMap" => Object::ConfigMap(typed(v)?),
        "EndpointSlice" => Object::EndpointSlice(typed(v)?),
        "IngressClass" => Object::IngressClass(typed(v)?),
        "Ingress" => Object::Ingress(typed(v)?),
        "GatewayClass" => Object::GatewayClass(typed(v)?),
        "Gateway" => Object::Gateway(typed(v)?),
        "HTTPRoute" => Object::HTTPRoute(typed(v)?),
        "GRPCRoute" => Object::GRPCRoute(typed(v)?),
        "TLSRoute" => Object::TLSRoute(typed(v)?),
        "TCPRoute" => Object::TCPRoute(typed(v)?),
        "UDPRoute" => Object::UDPRoute(typed(v)?),
        "ReferenceGrant" => Object::ReferenceGrant(typed(v)?),
        "ListenerSet" => Object::ListenerSet(typed(v)?),
        "BackendTLSPolicy" => Object::BackendTLSPolicy(typed(v)?),
        other => return Err(format!("kind {other} is not read")),
    })
}

/// The outcome of parsing one file's text.
#[derive(Clone, Debug, Default)]
pub struct ParsedFile {
    /// Objects that parsed.
    pub objects: Vec<Parsed>,
    /// Objects that were named but did not deserialize (so their last good version may stand in).
    pub failed: Vec<ObjectRef>,
    /// Problems.
    pub problems: Vec<LoadProblem>,
    /// `true` when the YAML itself did not parse (nothing in the file was read).
    pub unreadable: bool,
}

/// Parses the text of one file. Pure: no I/O.
pub fn parse_str(text: &str, file: &Path) -> ParsedFile {
    let mut out = ParsedFile::default();
    let loc = |line: usize| Location {
        file: file.to_path_buf(),
        line,
    };
    // serde-saphyr's default budget (1,024 documents, 250,000 nodes) protects against hostile input but is too
    // small for a real folder of manifests (a `kubectl get -o yaml` dump of a big cluster); these limits keep the
    // alias-expansion protections and allow files of millions of nodes.
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_documents: 1_000_000,
            max_nodes: 50_000_000,
            max_events: 200_000_000,
        },
    };
    let docs: Vec<serde_saphyr::Spanned<Value>> =
        match serde_saphyr::from_multiple_with_options(text, options) {
            Ok(d) => d,
            Err(e) => {
                let line = e.location().map_or(0, |l| l.line() as usize);
                out.unreadable = true;
                out.problems.push(LoadProblem {
                    severity: Severity::Error,
                    location: loc(line),
                    object: None,
                    message: format!("not valid YAML: {}", first_line(&e.to_string())),
                });
                return out;
            }
        };
    let starts: Vec<usize> = docs.iter().map(|d| d.referenced.line() as usize).collect();
    let lines: Vec<&str> = text.lines().collect();
    for (i, doc) in docs.into_iter().enumerate() {
        let line = doc.referenced.line() as usize;
        let before = out.objects.len();
        read_document(doc.value, &loc(line), &mut out);
        let end = starts.get(i + 1).copied().unwrap_or(lines.len() + 1);
        for p in &mut out.objects[before..] {
            if let Object::Ingress(ing) = &p.object {
                if let Some(anns) = &ing.metadata.annotations {
                    p.annotation_lines = Some(Arc::new(key_lines(&lines, line, end, anns.keys())));
                }
            }
        }
    }
    out
}

/// The 1-based line, within the document's lines `start..end`, where each key is written (`key:`, quoted or not;
/// else the first line that mentions it, for flow mappings).
fn key_lines<'k>(
    lines: &[&str],
    start: usize,
    end: usize,
    keys: impl Iterator<Item = &'k String>,
) -> HashMap<String, usize> {
    let range = start.max(1) - 1..end.saturating_sub(1).min(lines.len());
    let mut out = HashMap::new();
    for key in keys {
        let block = lines
            .get(range.clone())
            .unwrap_or(&[])
            .iter()
            .position(|l| {
                let t = l.trim_start().trim_start_matches(['"', '\'']);
                t.strip_prefix(key.as_str())
                    .is_some_and(|rest| rest.trim_start_matches(['"', '\'']).starts_with(':'))
            });
        let any = || {
            lines
                .get(range.clone())
                .unwrap_or(&[])
                .iter()
                .position(|l| l.contains(key.as_str()))
        };
        if let Some(i) = block.or_else(any) {
            out.insert(key.clone(), range.start + i + 1);
        }
    }
    out
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

fn read_document(v: Value, loc: &Location, out: &mut ParsedFile) {
    let problem = |out: &mut ParsedFile, sev, object: Option<ObjectRef>, message: String| {
        out.problems.push(LoadProblem {
            severity: sev,
            location: loc.clone(),
            object,
            message,
        });
    };
    let Value::Object(map) = &v else {
        if !v.is_null() {
            problem(
                out,
                Severity::Error,
                None,
                "a document must be a Kubernetes object (a mapping)".into(),
            );
        }
        return;
    };
    let api_version = map
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let kind = map
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let (api_version, kind) = (api_version.as_str(), kind.as_str());
    if kind.is_empty() || api_version.is_empty() {
        problem(
            out,
            Severity::Error,
            None,
            "document has no apiVersion/kind".into(),
        );
        return;
    }
    if kind == "List" && api_version == "v1" {
        if let Some(Value::Array(items)) = map.get("items") {
            for item in items.clone() {
                read_document(item, loc, out);
            }
        }
        return;
    }
    let meta = map.get("metadata").and_then(Value::as_object);
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let namespace = meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let (name, namespace) = (name.as_str(), namespace.as_deref());
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let Some(&(_, groups, namespaced)) = KINDS.iter().find(|(k, _, _)| *k == kind) else {
        problem(
            out,
            Severity::Warning,
            Some(ObjectRef {
                kind: kind.to_string(),
                namespace: namespace.map(str::to_string),
                name: name.to_string(),
            }),
            format!("{api_version} {kind} is not a kind portcullis reads; skipped"),
        );
        return;
    };
    let object_ref = ObjectRef {
        kind: kind.to_string(),
        namespace: namespaced.then(|| namespace.unwrap_or("default").to_string()),
        name: name.to_string(),
    };
    if !groups.contains(&group) {
        problem(
            out,
            Severity::Error,
            Some(object_ref),
            format!(
                "apiVersion {api_version} is not supported for {kind} (expected group {:?})",
                groups[0]
            ),
        );
        return;
    }
    // A name or namespace YAML read as something else than a string (an unquoted `off`, `no`, `yes`, `on`, `true`,
    // `false`, a number): say so, rather than that it is missing.
    for field in ["name", "namespace"] {
        if let Some(v) = meta
            .and_then(|m| m.get(field))
            .filter(|v| !v.is_string() && !v.is_null())
        {
            let what = match v {
                Value::Bool(b) => format!(
                    "the boolean {b} (YAML reads unquoted yes, no, on, off, true and false as booleans)"
                ),
                Value::Number(n) => format!("the number {n}"),
                _ => "not text".to_string(),
            };
            problem(
                out,
                Severity::Error,
                Some(object_ref),
                format!("metadata.{field} must be a string, and is {what}: quote it"),
            );
            return;
        }
    }
    if name.is_empty() {
        problem(
            out,
            Severity::Error,
            Some(object_ref),
            "metadata.name is required".into(),
        );
        return;
    }
    let mut v = v;
    if namespaced && namespace.is_none() {
        // kubectl applies namespaced objects without a namespace to "default"; so do we.
        if let Some(Value::Object(m)) = v.get_mut("metadata") {
            m.insert("namespace".into(), Value::String("default".into()));
        }
    }
    match to_object(kind, v) {
        Ok(object) => out.objects.push(Parsed {
            object_ref,
            location: loc.clone(),
            object,
            annotation_lines: None,
        }),
        Err(e) => {
            out.failed.push(object_ref.clone());
            problem(out, Severity::Error, Some(object_ref), e);
        }
    }
}

/// Everything read from the configured paths.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The objects, normalized.
    pub input: Input,
    /// Where each object was read.
    pub locations: HashMap<ObjectRef, Location>,
    /// Problems found while reading, in file order.
    pub problems: Vec<LoadProblem>,
    /// The line of each annotation of the Ingresses read, when found.
    pub field_lines: HashMap<ObjectRef, HashMap<String, usize>>,
}

impl Loaded {
    /// `true` when some problem is an error.
    pub fn has_errors(&self) -> bool {
        self.problems.iter().any(|p| p.severity == Severity::Error)
    }
}

/// Reads the configured paths, remembering the last good state of every file so that a bad edit never takes
/// working routes down.
#[derive(Debug)]
pub struct FileLoader {
    paths: Vec<PathBuf>,
    last_good: HashMap<PathBuf, Vec<Parsed>>,
    /// Each file's text as last read and what it parsed to: a file whose text has not changed is not parsed
    /// again (parsing is most of a reload: 10,000 routes take ~0.3 s to parse, ~0.08 s to translate).
    parsed: HashMap<PathBuf, (String, ParsedFile)>,
}

/// `*.yaml` and `*.yml` files under `paths` (files are taken as given, directories walked recursively), sorted,
/// plus problems for paths that cannot be read.
pub fn manifest_files(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<LoadProblem>) {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for p in paths {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => walk(p, &mut files, &mut problems),
            Ok(_) => files.push(p.clone()),
            Err(e) => problems.push(LoadProblem {
                severity: Severity::Error,
                location: Location {
                    file: p.clone(),
                    line: 0,
                },
                object: None,
                message: format!("cannot read: {e}"),
            }),
        }
    }
    files.sort();
    files.dedup();
    (files, problems)
}

/// Is this the name of a manifest file?
pub fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml") | Some("yml")
    )
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>, problems: &mut Vec<LoadProblem>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            problems.push(LoadProblem {
                severity: Severity::Error,
                location: Location {
                    file: dir.to_path_buf(),
                    line: 0,
                },
                object: None,
                message: format!("cannot read directory: {e}"),
            });
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        match entry.file_type() {
            Ok(t) if t.is_dir() => walk(&path, files, problems),
            Ok(_) if is_manifest(&path) => files.push(path),
            _ => {}
        }
    }
}

impl FileLoader {
    /// A loader for these files and directories.
    pub fn new(paths: Vec<PathBuf>) -> Self {
        FileLoader {
            paths,
            last_good: HashMap::new(),
            parsed: HashMap::new(),
        }
    }

    /// The configured paths.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Reads every manifest file now.
    pub fn load(&mut self) -> Loaded {
        let (files, mut problems) = manifest_files(&self.paths);
        let mut objects: Vec<Parsed> = Vec::new();
        let mut next_good = HashMap::new();
        let mut next_parsed = HashMap::new();
        for file in files {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(LoadProblem {
                        severity: Severity::Error,
                        location: Location {
                            file: file.clone(),
                            line: 0,
                        },
                        object: None,
                        message: format!("cannot read: {e}"),
                    });
                    if let Some(prev) = self.last_good.remove(&file) {
                        objects.extend(prev.iter().cloned());
                        next_good.insert(file, prev);
                    }
                    continue;
                }
            };
            let mut parsed = match self.parsed.remove(&file) {
                Some((old, p)) if old == text => {
                    let same = p.clone();
                    next_parsed.insert(file.clone(), (old, p));
                    same
                }
                _ => {
                    let p = parse_str(&text, &file);
                    next_parsed.insert(file.clone(), (text, p.clone()));
                    p
                }
            };
            let previous = self.last_good.remove(&file);
            if parsed.unreadable {
                if let Some(prev) = previous {
                    if let Some(p) = parsed.problems.last_mut() {
                        p.message
                            .push_str("; the last version of this file that parsed keeps serving");
                    }
                    objects.extend(prev.iter().cloned());
                    next_good.insert(file, prev);
                }
                problems.append(&mut parsed.problems);
                continue;
            }
            // Objects that no longer deserialize keep their last good version.
            if let Some(prev) = &previous {
                for failed in &parsed.failed {
                    if let Some(old) = prev.iter().find(|p| &p.object_ref == failed) {
                        parsed.objects.push(old.clone());
                        if let Some(p) = parsed
                            .problems
                            .iter_mut()
                            .find(|p| p.object.as_ref() == Some(failed))
                        {
                            p.message.push_str("; its last good version keeps serving");
                        }
                    }
                }
            }
            problems.append(&mut parsed.problems);
            objects.extend(parsed.objects.iter().cloned());
            next_good.insert(file, parsed.objects);
        }
        self.last_good = next_good;
        self.parsed = next_parsed;
        assemble(objects, problems)
    }
}

/// Builds an [`Input`] from parsed objects; the first definition of an object wins, later ones are errors.
pub fn assemble(objects: Vec<Parsed>, mut problems: Vec<LoadProblem>) -> Loaded {
    let mut input = Input::default();
    let mut locations: HashMap<ObjectRef, Location> = HashMap::new();
    let mut field_lines: HashMap<ObjectRef, HashMap<String, usize>> = HashMap::new();
    let mut seen: BTreeMap<ObjectRef, ()> = BTreeMap::new();
    for p in objects {
        if seen.insert(p.object_ref.clone(), ()).is_some() {
            let first = locations
                .get(&p.object_ref)
                .map(|l| l.to_string())
                .unwrap_or_default();
            problems.push(LoadProblem {
                severity: Severity::Error,
                location: p.location,
                object: Some(p.object_ref),
                message: format!("defined again; the definition at {first} is used"),
            });
            continue;
        }
        if let Some(l) = &p.annotation_lines {
            field_lines.insert(p.object_ref.clone(), l.as_ref().clone());
        }
        locations.insert(p.object_ref, p.location);
        match p.object {
            Object::Namespace(o) => input.namespaces.push(o),
            Object::Service(o) => input.services.push(o),
            Object::EndpointSlice(o) => input.endpoint_slices.push(o),
            Object::Secret(o) => input.secrets.push(o),
            Object::ConfigMap(o) => input.config_maps.push(o),
            Object::IngressClass(o) => input.ingress_classes.push(o),
            Object::Ingress(o) => input.ingresses.push(o),
            Object::GatewayClass(o) => input.gateway_classes.push(o),
            Object::Gateway(o) => input.gateways.push(o),
            Object::HTTPRoute(o) => input.http_routes.push(o),
            Object::GRPCRoute(o) => input.grpc_routes.push(o),
            Object::TLSRoute(o) => input.tls_routes.push(o),
            Object::TCPRoute(o) => input.tcp_routes.push(o),
            Object::UDPRoute(o) => input.udp_routes.push(o),
            Object::ReferenceGrant(o) => input.reference_grants.push(o),
            Object::ListenerSet(o) => input.listener_sets.push(o),
            Object::BackendTLSPolicy(o) => input.backend_tls_policies.push(o),
        }
    }
    input.normalize();
    Loaded {
        input,
        locations,
        problems,
        field_lines,
    }
}

/// Parses YAML text straight into an [`Input`] (for tests and tools); problems are returned alongside.
pub fn input_from_str(text: &str) -> (Input, Vec<LoadProblem>) {
    let parsed = parse_str(text, Path::new("<text>"));
    let loaded = assemble(parsed.objects, parsed.problems);
    (loaded.input, loaded.problems)
}

// Keep HasMeta in scope for users of `Object` that want metadata.
impl Object {
    /// The object's metadata.
    pub fn meta(&self) -> &crate::k8s::ObjectMeta {
        match self {
            Object::Namespace(o) => o.meta(),
            Object::Service(o) => o.meta(),
            Object::EndpointSlice(o) => o.meta(),
            Object::Secret(o) => o.meta(),
            Object::ConfigMap(o) => o.meta(),
            Object::IngressClass(o) => o.meta(),
            Object::Ingress(o) => o.meta(),
            Object::GatewayClass(o) => o.meta(),
            Object::Gateway(o) => o.meta(),
            Object::HTTPRoute(o) => o.meta(),
            Object::GRPCRoute(o) => o.meta(),
            Object::TLSRoute(o) => o.meta(),
            Object::TCPRoute(o) => o.meta(),
            Object::UDPRoute(o) => o.meta(),
            Object::ReferenceGrant(o) => o.meta(),
            Object::ListenerSet(o) => o.meta(),
            Object::BackendTLSPolicy(o) => o.meta(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_multiple_documents_with_lines() {
        let text = "\
apiVersion: v1
kind: Service
metadata:
  name: a
spec:
  ports: [{port: 80}]
---
# comment
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  namespace: shop
spec: {}
---
";
        let p = parse_str(text, Path::new("x.yaml"));
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        assert_eq!(p.objects.len(), 2);
        assert_eq!(p.objects[0].object_ref.to_string(), "Service default/a");
        assert_eq!(p.objects[0].location.line, 1);
        assert_eq!(p.objects[1].object_ref.to_string(), "Ingress shop/web");
        assert_eq!(p.objects[1].location.line, 9);
    }

    #[test]
    fn reports_bad_objects_by_name_and_line() {
        let text = "\
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: bad}
spec:
  rules:
  - http:
      paths:
      - path: /x
        pathType: Prefix
        backend: {service: {name: s, port: {number: eighty}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
";
        let p = parse_str(text, Path::new("x.yaml"));
        assert_eq!(p.objects.len(), 0);
        assert_eq!(p.failed.len(), 1);
        let msgs: Vec<String> = p.problems.iter().map(|p| p.to_string()).collect();
        assert!(
            msgs[0].starts_with(
                "x.yaml:1: error: Ingress default/bad: spec.rules[0].http.paths[0].backend.service.port.number: invalid type"
            ),
            "{msgs:?}"
        );
        assert!(
            msgs[1].contains("x.yaml:12: warning: Deployment d"),
            "{msgs:?}"
        );
    }

    #[test]
    fn finds_the_line_of_each_ingress_annotation() {
        let text = "\
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  namespace: shop
  annotations:
    nginx.ingress.kubernetes.io/rewrite-target: /
    \"nginx.ingress.kubernetes.io/ssl-redirect\": \"false\"
spec: {}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: flow, namespace: shop, annotations: {a/b: c}}
spec: {}
";
        let p = parse_str(text, Path::new("x.yaml"));
        let lines = |i: usize| p.objects[i].annotation_lines.clone().expect("lines");
        let web = lines(1);
        assert_eq!(
            web.get("nginx.ingress.kubernetes.io/rewrite-target"),
            Some(&11)
        );
        assert_eq!(
            web.get("nginx.ingress.kubernetes.io/ssl-redirect"),
            Some(&12)
        );
        assert_eq!(lines(2).get("a/b"), Some(&17));
        assert!(p.objects[0].annotation_lines.is_none());
    }

    #[test]
    fn reports_yaml_errors_with_a_line() {
        let p = parse_str("kind: Service\nmetadata: {name: [\n", Path::new("y.yaml"));
        assert!(p.unreadable);
        assert!(p.problems[0].location.line >= 1, "{:?}", p.problems);
    }

    #[test]
    fn reads_files_with_thousands_of_documents() {
        let text: String = (0..3000)
            .map(|i| format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: ns{i}}}\n---\n"))
            .collect();
        let p = parse_str(&text, Path::new("big.yaml"));
        assert!(p.problems.is_empty(), "{:?}", p.problems.first());
        assert_eq!(p.objects.len(), 3000);
    }

    #[test]
    fn lists_are_flattened_and_duplicates_reported() {
        let text = "\
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: a}}
- {apiVersion: v1, kind: Namespace, metadata: {name: a}}
";
        let (input, problems) = input_from_str(text);
        assert_eq!(input.namespaces.len(), 1);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].message.contains("defined again"));
    }

    /// A reload parses only the files whose text changed; the others keep their parsed objects (the same
    /// `Arc`s), and a changed file's new objects are served.
    #[test]
    fn reload_parses_only_changed_files() {
        let dir = std::env::temp_dir().join(format!("portcullis-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let svc = |name: &str, port: u16| {
            format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: ns}}\nspec:\n  ports: [{{port: {port}}}]\n")
        };
        std::fs::write(dir.join("a.yaml"), svc("a", 80)).expect("write a");
        std::fs::write(dir.join("b.yaml"), svc("b", 80)).expect("write b");
        let mut loader = FileLoader::new(vec![dir.clone()]);
        let first = loader.load();
        std::fs::write(dir.join("b.yaml"), svc("b", 81)).expect("rewrite b");
        let second = loader.load();
        let _ = std::fs::remove_dir_all(&dir);
        let by_name = |l: &Loaded, n: &str| {
            l.input
                .services
                .iter()
                .find(|s| s.metadata.name.as_deref() == Some(n))
                .cloned()
                .expect("service")
        };
        assert!(
            Arc::ptr_eq(&by_name(&first, "a"), &by_name(&second, "a")),
            "a.yaml was parsed again"
        );
        assert!(!Arc::ptr_eq(&by_name(&first, "b"), &by_name(&second, "b")));
        let port = |l: &Loaded| {
            by_name(l, "b")
                .spec
                .as_ref()
                .and_then(|s| s.ports.as_ref())
                .map(|p| p[0].port)
        };
        assert_eq!(port(&first), Some(80));
        assert_eq!(port(&second), Some(81));
    }
}
