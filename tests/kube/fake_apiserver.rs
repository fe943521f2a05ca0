//! An in-process fake Kubernetes API server that speaks the real protocol over HTTP/1.1, for the kube tests.
//!
//! It serves what kube-rs (watchers, reflectors, discovery, status patches, Leases) uses:
//! - discovery: `GET /api`, `/api/v1`, `/apis`, `/apis/<group>/<version>` (Gateway API CRDs can be installed and
//!   removed at run time);
//! - list with `limit`/`continue` pagination and `resourceVersion`, `fieldSelector` (`metadata.name`,
//!   `metadata.namespace`, `type`, `=`/`==`/`!=`) and `labelSelector` (equality and existence);
//! - `watch=true` streams of `ADDED`/`MODIFIED`/`DELETED`/`BOOKMARK` events from a `resourceVersion`, replaying the
//!   event history after it; an `ERROR` event with code 410 when that version has been compacted away;
//!   `timeoutSeconds`;
//! - `GET`/`POST`/`PUT`/`DELETE` of objects with `resourceVersion` preconditions (409 on conflict), `generation`
//!   bumped on spec changes, `status` kept on main-resource writes (status subresource semantics), `stringData`
//!   folded into `data` for Secrets;
//! - `PATCH .../status` with `application/merge-patch+json` (RFC 7386), with `metadata.resourceVersion` in the
//!   patch as a precondition; a patch that changes nothing does not bump the resourceVersion.
//!
//! One global resourceVersion counter orders everything, as etcd's revision does. Test hooks cut watch streams
//! (abruptly, or as a server timeout would), compact the history (forcing 410 and a relist), change objects
//! without events, make the server answer 500, and record status patches and who sent them.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};

type Body = BoxBody<Bytes, std::io::Error>;

/// A resource the server knows.
#[derive(Debug, Clone, Copy)]
struct ResourceDef {
    group: &'static str,
    versions: &'static [&'static str],
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    /// Has a status subresource (main-resource writes keep `status`).
    status: bool,
    /// A Gateway API CRD (served only while installed).
    crd: bool,
}

const GW: &str = "gateway.networking.k8s.io";

const fn def(
    group: &'static str,
    versions: &'static [&'static str],
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    status: bool,
    crd: bool,
) -> ResourceDef {
    ResourceDef {
        group,
        versions,
        plural,
        kind,
        namespaced,
        status,
        crd,
    }
}

const RESOURCES: &[ResourceDef] = &[
    def("", &["v1"], "namespaces", "Namespace", false, true, false),
    def("", &["v1"], "services", "Service", true, true, false),
    def("", &["v1"], "secrets", "Secret", true, false, false),
    def("", &["v1"], "configmaps", "ConfigMap", true, false, false),
    def(
        "discovery.k8s.io",
        &["v1"],
        "endpointslices",
        "EndpointSlice",
        true,
        false,
        false,
    ),
    def(
        "networking.k8s.io",
        &["v1"],
        "ingresses",
        "Ingress",
        true,
        true,
        false,
    ),
    def(
        "networking.k8s.io",
        &["v1"],
        "ingressclasses",
        "IngressClass",
        false,
        false,
        false,
    ),
    def(
        "coordination.k8s.io",
        &["v1"],
        "leases",
        "Lease",
        true,
        false,
        false,
    ),
    def(
        GW,
        &["v1", "v1beta1"],
        "gatewayclasses",
        "GatewayClass",
        false,
        true,
        true,
    ),
    def(
        GW,
        &["v1", "v1beta1"],
        "gateways",
        "Gateway",
        true,
        true,
        true,
    ),
    def(
        GW,
        &["v1", "v1beta1"],
        "httproutes",
        "HTTPRoute",
        true,
        true,
        true,
    ),
    def(GW, &["v1"], "grpcroutes", "GRPCRoute", true, true, true),
    def(
        GW,
        &["v1", "v1alpha2"],
        "tlsroutes",
        "TLSRoute",
        true,
        true,
        true,
    ),
    def(GW, &["v1alpha2"], "tcproutes", "TCPRoute", true, true, true),
    def(GW, &["v1alpha2"], "udproutes", "UDPRoute", true, true, true),
    def(
        GW,
        &["v1", "v1beta1"],
        "referencegrants",
        "ReferenceGrant",
        true,
        false,
        true,
    ),
    def(GW, &["v1"], "listenersets", "ListenerSet", true, true, true),
    def(
        GW,
        &["v1"],
        "backendtlspolicies",
        "BackendTLSPolicy",
        true,
        true,
        true,
    ),
];

fn resource_by_kind(kind: &str) -> &'static ResourceDef {
    RESOURCES
        .iter()
        .find(|r| r.kind == kind)
        .unwrap_or_else(|| panic!("the fake API server does not know kind {kind}"))
}

fn resource_by_path(group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.plural == plural && r.versions.contains(&version))
}

/// One watch event as stored in the history.
#[derive(Debug, Clone)]
struct Event {
    rv: u64,
    type_: &'static str,
    object: Value,
}

#[derive(Debug)]
struct Collection {
    objects: BTreeMap<(String, String), Value>,
    history: Vec<Arc<Event>>,
    /// Watches from a resourceVersion below this get 410 Gone.
    compacted: u64,
    tx: broadcast::Sender<Arc<Event>>,
}

impl Collection {
    fn new() -> Self {
        Collection {
            objects: BTreeMap::new(),
            history: Vec::new(),
            compacted: 0,
            tx: broadcast::channel(1 << 16).0,
        }
    }
}

/// A status patch the server accepted (or refused).
#[derive(Debug, Clone)]
pub struct StatusPatchRecord {
    /// Kind of the object.
    pub kind: String,
    /// Namespace.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// The patch body.
    pub body: Value,
    /// The bearer token of the request (tells test instances apart).
    pub token: Option<String>,
    /// HTTP status answered.
    pub code: u16,
    /// `true` when the patch changed the object.
    pub changed: bool,
}

/// A request the server saw.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Query string.
    pub query: String,
    /// Bearer token.
    pub token: Option<String>,
}

struct State {
    rv: u64,
    uid: u64,
    collections: HashMap<(&'static str, &'static str), Collection>,
    crds_installed: bool,
    failing: bool,
    failing_resource: Option<String>,
    patches: Vec<StatusPatchRecord>,
    requests: Vec<RequestRecord>,
    active_watches: usize,
}

struct Shared {
    state: Mutex<State>,
    /// Ends every open watch stream: `true` abruptly (connection error), `false` cleanly (like a timeout).
    cut: broadcast::Sender<bool>,
    bookmark_interval: Duration,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The fake API server. Dropping it stops it.
pub struct FakeApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    dir: tempfile::TempDir,
}

impl FakeApiServer {
    /// Starts a server on 127.0.0.1 (any port). `crds_installed`: whether the Gateway API CRDs are served.
    pub fn start(crds_installed: bool) -> FakeApiServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                rv: 1,
                uid: 0,
                collections: HashMap::new(),
                crds_installed,
                failing: false,
                failing_resource: None,
                patches: Vec::new(),
                requests: Vec::new(),
                active_watches: 0,
            }),
            cut: broadcast::channel(16).0,
            bookmark_interval: Duration::from_secs(1),
        });
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let server_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("fake-apiserver".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("fake API server runtime");
                rt.block_on(serve(listener, server_shared, shutdown_rx));
                rt.shutdown_timeout(Duration::from_millis(100));
            })
            .expect("fake API server thread");
        let dir = tempfile::tempdir().expect("tempdir");
        FakeApiServer {
            addr,
            shared,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
            dir,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig for this server (no TLS, no auth; `token` becomes a bearer token so tests can tell
    /// clients apart) and returns its path. The context's namespace is `portcullis-system`.
    pub fn kubeconfig(&self, token: Option<&str>) -> PathBuf {
        let name = format!("kubeconfig-{}", token.unwrap_or("anonymous"));
        let path = self.dir.path().join(name);
        let user = match token {
            Some(t) => format!("{{token: {t}}}"),
            None => "{}".to_string(),
        };
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: \"{}\"}}\nusers:\n- name: fake\n  user: {user}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: fake, namespace: portcullis-system}}\ncurrent-context: fake\n",
            self.url()
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    /// A scratch directory that lives as long as the server.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    // ---- objects -------------------------------------------------------------------------------------------

    /// Creates or updates each object of a multi-document YAML text (like `kubectl apply`: the status of an
    /// existing object is kept).
    pub fn apply_yaml(&self, text: &str) {
        for v in yaml_documents(text) {
            self.apply(v);
        }
    }

    /// Creates or updates one object (status kept on update).
    pub fn apply(&self, obj: Value) -> Value {
        let kind = obj["kind"].as_str().expect("kind").to_string();
        let r = resource_by_kind(&kind);
        let mut st = self.shared.lock();
        let ns = namespace_of(r, &obj);
        let name = obj["metadata"]["name"]
            .as_str()
            .expect("metadata.name")
            .to_string();
        let exists = st
            .collection(r)
            .objects
            .contains_key(&(ns.clone().unwrap_or_default(), name.clone()));
        let version = r.versions[0];
        if exists {
            let mut obj = obj;
            if let Some(m) = obj["metadata"].as_object_mut() {
                m.remove("resourceVersion");
            }
            st.update(r, version, ns.as_deref(), &name, obj, true)
                .expect("update")
        } else {
            st.create(r, version, ns.as_deref(), obj).expect("create")
        }
    }

    /// Deletes an object; `false` when it did not exist.
    pub fn delete(&self, kind: &str, namespace: Option<&str>, name: &str) -> bool {
        let r = resource_by_kind(kind);
        self.shared
            .lock()
            .delete(r, namespace, name, true)
            .is_some()
    }

    /// The stored object.
    pub fn get(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let r = resource_by_kind(kind);
        let mut st = self.shared.lock();
        st.collection(r)
            .objects
            .get(&(namespace.unwrap_or("").to_string(), name.to_string()))
            .cloned()
    }

    /// Replaces an object's status as another controller would (events are sent).
    pub fn set_status(&self, kind: &str, namespace: Option<&str>, name: &str, status: Value) {
        let r = resource_by_kind(kind);
        let mut st = self.shared.lock();
        let key = (namespace.unwrap_or("").to_string(), name.to_string());
        let prev = st.collection(r).objects.get(&key).cloned().expect("object");
        let mut obj = prev.clone();
        obj["status"] = status;
        st.stamp(r, r.versions[0], &mut obj, Some(&prev));
        st.store(r, &key, obj, "MODIFIED", true);
    }

    /// Changes an object without any watch event (as if the event was lost in a compaction). Use with
    /// [`FakeApiServer::compact`] to force clients to relist.
    pub fn apply_silently(&self, obj: Value) {
        let kind = obj["kind"].as_str().expect("kind").to_string();
        let r = resource_by_kind(&kind);
        let mut st = self.shared.lock();
        let ns = namespace_of(r, &obj);
        let name = obj["metadata"]["name"].as_str().expect("name").to_string();
        let key = (ns.unwrap_or_default(), name);
        let mut obj = obj;
        let prev = st.collection(r).objects.get(&key).cloned();
        st.stamp(r, r.versions[0], &mut obj, prev.as_ref());
        st.store(r, &key, obj, "MODIFIED", false);
    }

    /// Deletes an object without a watch event (see [`FakeApiServer::apply_silently`]).
    pub fn delete_silently(&self, kind: &str, namespace: Option<&str>, name: &str) -> bool {
        let r = resource_by_kind(kind);
        self.shared
            .lock()
            .delete(r, namespace, name, false)
            .is_some()
    }

    // ---- failures ------------------------------------------------------------------------------------------

    /// Ends every open watch stream abruptly (the connection breaks mid-stream).
    pub fn cut_watches(&self) {
        let _ = self.shared.cut.send(true);
    }

    /// Ends every open watch stream cleanly (as the server's watch timeout does).
    pub fn end_watches(&self) {
        let _ = self.shared.cut.send(false);
    }

    /// Forgets the event history: a watch from any resourceVersion before now gets `410 Gone` and must relist.
    /// Also ends open watches cleanly, so clients come back with their (now too old) resourceVersions.
    pub fn compact(&self) {
        {
            let mut st = self.shared.lock();
            let rv = st.rv;
            for c in st.collections.values_mut() {
                c.history.clear();
                c.compacted = rv;
            }
        }
        self.end_watches();
    }

    /// While true, every list, watch, get and write of objects answers 500 (discovery still answers).
    pub fn set_failing(&self, failing: bool) {
        self.shared.lock().failing = failing;
    }

    /// While set, every request for this resource (plural, e.g. `httproutes`) answers 500.
    pub fn set_failing_resource(&self, plural: Option<&str>) {
        self.shared.lock().failing_resource = plural.map(str::to_string);
    }

    /// Installs the Gateway API CRDs (served from now on).
    pub fn install_gateway_api(&self) {
        self.shared.lock().crds_installed = true;
    }

    /// Removes the Gateway API CRDs: their objects are deleted (with events), then they are no longer served.
    pub fn uninstall_gateway_api(&self) {
        let mut st = self.shared.lock();
        for r in RESOURCES.iter().filter(|r| r.crd) {
            let keys: Vec<(String, String)> = st.collection(r).objects.keys().cloned().collect();
            for (ns, name) in keys {
                let ns = (!ns.is_empty()).then_some(ns);
                st.delete(r, ns.as_deref(), &name, true);
            }
        }
        st.crds_installed = false;
        drop(st);
        self.end_watches();
    }

    // ---- observations --------------------------------------------------------------------------------------

    /// Every status patch so far.
    pub fn status_patches(&self) -> Vec<StatusPatchRecord> {
        self.shared.lock().patches.clone()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.lock().requests.clone()
    }

    /// Watch streams open now.
    pub fn active_watches(&self) -> usize {
        self.shared.lock().active_watches
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.cut_watches();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Parses multi-document YAML into JSON values (empty documents skipped).
pub fn yaml_documents(text: &str) -> Vec<Value> {
    let docs: Vec<serde_saphyr::Spanned<Value>> =
        serde_saphyr::from_multiple(text).expect("test YAML parses");
    docs.into_iter()
        .map(|d| d.value)
        .filter(|v| !v.is_null())
        .flat_map(|v| {
            if v["kind"] == "List" {
                v["items"].as_array().cloned().unwrap_or_default()
            } else {
                vec![v]
            }
        })
        .collect()
}

fn namespace_of(r: &ResourceDef, obj: &Value) -> Option<String> {
    r.namespaced.then(|| {
        obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string()
    })
}

fn now_rfc3339() -> String {
    // Seconds since the epoch to a UTC date (civil-from-days, Howard Hinnant).
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().expect("object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// An error answer, as a `metav1.Status`.
#[derive(Debug)]
struct ApiError {
    code: u16,
    reason: &'static str,
    message: String,
}

fn err(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
    ApiError {
        code,
        reason,
        message: message.into(),
    }
}

fn status_json(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code
    })
}

impl State {
    fn collection(&mut self, r: &ResourceDef) -> &mut Collection {
        self.collections
            .entry((r.group, r.plural))
            .or_insert_with(Collection::new)
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Sets server-owned metadata on a new version of an object (`prev`: the stored version, if any).
    fn stamp(&mut self, r: &ResourceDef, version: &str, obj: &mut Value, prev: Option<&Value>) {
        let rv = self.next_rv();
        let api_version = if r.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", r.group)
        };
        obj["apiVersion"] = json!(api_version);
        obj["kind"] = json!(r.kind);
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        if r.kind == "Secret" {
            if let Some(Value::Object(sd)) =
                obj.as_object_mut().and_then(|o| o.remove("stringData"))
            {
                if !obj["data"].is_object() {
                    obj["data"] = json!({});
                }
                for (k, v) in sd {
                    obj["data"][k] = json!(base64(v.as_str().unwrap_or("").as_bytes()));
                }
            }
        }
        let meta = obj["metadata"].as_object_mut().expect("metadata");
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        match prev {
            Some(p) => {
                for k in ["uid", "creationTimestamp"] {
                    if let Some(v) = p["metadata"].get(k) {
                        meta.insert(k.into(), v.clone());
                    }
                }
                let spec_changed = {
                    let strip = |v: &Value| {
                        let mut v = v.clone();
                        if let Some(o) = v.as_object_mut() {
                            o.remove("metadata");
                            o.remove("status");
                            o.remove("apiVersion");
                            o.remove("kind");
                        }
                        v
                    };
                    strip(obj) != strip(p)
                };
                let g = p["metadata"]["generation"].as_i64().unwrap_or(1);
                let meta = obj["metadata"].as_object_mut().expect("metadata");
                meta.insert(
                    "generation".into(),
                    json!(if spec_changed { g + 1 } else { g }),
                );
            }
            None => {
                self.uid += 1;
                meta.insert(
                    "uid".into(),
                    json!(format!("00000000-0000-0000-0000-{:012}", self.uid)),
                );
                meta.entry("creationTimestamp")
                    .or_insert_with(|| json!(now_rfc3339()));
                meta.insert("generation".into(), json!(1));
            }
        }
    }

    /// Stores `obj` (already stamped) and records/broadcasts the event.
    fn store(
        &mut self,
        r: &ResourceDef,
        key: &(String, String),
        obj: Value,
        type_: &'static str,
        announce: bool,
    ) {
        let rv: u64 = obj["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(self.rv);
        let c = self.collection(r);
        c.objects.insert(key.clone(), obj.clone());
        if announce {
            let ev = Arc::new(Event {
                rv,
                type_,
                object: obj,
            });
            c.history.push(ev.clone());
            let _ = c.tx.send(ev);
        }
    }

    fn create(
        &mut self,
        r: &ResourceDef,
        version: &str,
        ns: Option<&str>,
        mut obj: Value,
    ) -> Result<Value, ApiError> {
        let name = obj["metadata"]["name"]
            .as_str()
            .ok_or_else(|| err(422, "Invalid", "metadata.name: Required value"))?
            .to_string();
        if let Some(ns) = ns {
            obj["metadata"]["namespace"] = json!(ns);
        }
        let key = (ns.unwrap_or("").to_string(), name.clone());
        if self.collection(r).objects.contains_key(&key) {
            return Err(err(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", r.plural),
            ));
        }
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("resourceVersion");
            m.remove("uid");
        }
        self.stamp(r, version, &mut obj, None);
        self.store(r, &key, obj.clone(), "ADDED", true);
        Ok(obj)
    }

    /// The stored object at (`ns`, `name`) with its key: 404 when there is none, 409 when `body` carries a
    /// `resourceVersion` other than the stored one.
    fn current(
        &mut self,
        r: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        body: &Value,
    ) -> Result<((String, String), Value), ApiError> {
        let key = (ns.unwrap_or("").to_string(), name.to_string());
        let prev = self
            .collection(r)
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| {
                err(
                    404,
                    "NotFound",
                    format!("{} \"{name}\" not found", r.plural),
                )
            })?;
        if let Some(rv) = body["metadata"]["resourceVersion"].as_str() {
            if Some(rv) != prev["metadata"]["resourceVersion"].as_str() {
                return Err(err(
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                        r.plural
                    ),
                ));
            }
        }
        Ok((key, prev))
    }

    /// PUT: replaces the object (keeping `status` for kinds with a status subresource). A `resourceVersion` in
    /// the body must match.
    fn update(
        &mut self,
        r: &ResourceDef,
        version: &str,
        ns: Option<&str>,
        name: &str,
        mut obj: Value,
        announce: bool,
    ) -> Result<Value, ApiError> {
        let (key, prev) = self.current(r, ns, name, &obj)?;
        if let Some(ns) = ns {
            obj["metadata"]["namespace"] = json!(ns);
        }
        obj["metadata"]["name"] = json!(name);
        if r.status {
            copy_status(&mut obj, &prev);
        }
        self.stamp(r, version, &mut obj, Some(&prev));
        self.store(r, &key, obj.clone(), "MODIFIED", announce);
        Ok(obj)
    }

    fn patch_status(
        &mut self,
        r: &ResourceDef,
        version: &str,
        ns: Option<&str>,
        name: &str,
        patch: &Value,
    ) -> Result<(Value, bool), ApiError> {
        let (key, prev) = self.current(r, ns, name, patch)?;
        let mut patched = prev.clone();
        merge_patch(&mut patched, patch);
        // The status subresource changes status only.
        let mut obj = prev.clone();
        copy_status(&mut obj, &patched);
        if obj == prev {
            return Ok((with_version(prev, r, version), false));
        }
        self.stamp(r, version, &mut obj, Some(&prev));
        self.store(r, &key, obj.clone(), "MODIFIED", true);
        Ok((obj, true))
    }

    fn delete(
        &mut self,
        r: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        announce: bool,
    ) -> Option<Value> {
        let key = (ns.unwrap_or("").to_string(), name.to_string());
        let mut obj = self.collection(r).objects.remove(&key)?;
        let rv = self.next_rv();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        if announce {
            let c = self.collection(r);
            let ev = Arc::new(Event {
                rv,
                type_: "DELETED",
                object: obj.clone(),
            });
            c.history.push(ev.clone());
            let _ = c.tx.send(ev);
        }
        Some(obj)
    }

    fn served(&self, r: &ResourceDef) -> bool {
        !r.crd || self.crds_installed
    }
}

fn with_version(mut obj: Value, r: &ResourceDef, version: &str) -> Value {
    obj["apiVersion"] = json!(if r.group.is_empty() {
        version.to_string()
    } else {
        format!("{}/{version}", r.group)
    });
    obj
}

// ---- selectors ----------------------------------------------------------------------------------------------

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A query string's parameters, percent-decoded (the last of a repeated name wins).
pub fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(kv), String::new()),
        })
        .collect()
}

#[derive(Debug, Clone, Default)]
struct Selectors {
    fields: Vec<(String, bool, String)>,
    labels: Vec<(String, Option<(bool, String)>)>,
}

impl Selectors {
    fn parse(q: &HashMap<String, String>) -> Result<Selectors, ApiError> {
        let mut s = Selectors::default();
        for term in q
            .get("fieldSelector")
            .map(String::as_str)
            .unwrap_or("")
            .split(',')
            .filter(|t| !t.is_empty())
        {
            let (k, eq, v) = split_term(term).ok_or_else(|| {
                err(
                    400,
                    "BadRequest",
                    format!("invalid field selector {term:?}"),
                )
            })?;
            if !["metadata.name", "metadata.namespace", "type"].contains(&k.as_str()) {
                return Err(err(
                    400,
                    "BadRequest",
                    format!("field label not supported: {k}"),
                ));
            }
            s.fields.push((k, eq, v));
        }
        for term in q
            .get("labelSelector")
            .map(String::as_str)
            .unwrap_or("")
            .split(',')
            .filter(|t| !t.is_empty())
        {
            match split_term(term) {
                Some((k, eq, v)) => s.labels.push((k, Some((eq, v)))),
                None => s.labels.push((term.trim().to_string(), None)),
            }
        }
        Ok(s)
    }

    fn matches(&self, obj: &Value) -> bool {
        let field = |k: &str| -> String {
            match k {
                "metadata.name" => obj["metadata"]["name"].as_str().unwrap_or("").to_string(),
                "metadata.namespace" => obj["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                "type" => obj["type"].as_str().unwrap_or("").to_string(),
                _ => String::new(),
            }
        };
        let fields_ok = self.fields.iter().all(|(k, eq, v)| (field(k) == *v) == *eq);
        let labels = &obj["metadata"]["labels"];
        let labels_ok = self.labels.iter().all(|(k, cond)| match cond {
            None => labels.get(k).is_some(),
            Some((eq, v)) => (labels.get(k).and_then(Value::as_str) == Some(v.as_str())) == *eq,
        });
        fields_ok && labels_ok
    }
}

fn split_term(term: &str) -> Option<(String, bool, String)> {
    if let Some((k, v)) = term.split_once("!=") {
        return Some((k.trim().into(), false, v.trim().into()));
    }
    if let Some((k, v)) = term.split_once("==") {
        return Some((k.trim().into(), true, v.trim().into()));
    }
    term.split_once('=')
        .map(|(k, v)| (k.trim().into(), true, v.trim().into()))
}

// ---- HTTP ---------------------------------------------------------------------------------------------------

async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(handle(shared, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        }
    }
}

fn full(code: StatusCode, body: &Value) -> Response<Body> {
    let bytes = Bytes::from(serde_json::to_vec(body).expect("json"));
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(bytes).map_err(|never| match never {}).boxed())
        .expect("response")
}

fn error_response(e: ApiError) -> Response<Body> {
    full(
        StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &status_json(e.code, e.reason, &e.message),
    )
}

/// What a request path names.
struct Target {
    r: &'static ResourceDef,
    version: String,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

enum Route {
    Discovery(Value),
    Target(Target),
}

fn route(st: &State, path: &str) -> Result<Route, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let not_found = || {
        err(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    };
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["api"] => {
            return Ok(Route::Discovery(json!({
                "kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]
            })))
        }
        ["apis"] => return Ok(Route::Discovery(group_list(st))),
        ["api", "v1"] => {
            return Ok(Route::Discovery(
                resource_list(st, "", "v1").ok_or_else(not_found)?,
            ))
        }
        ["apis", g, v] => {
            return Ok(Route::Discovery(
                resource_list(st, g, v).ok_or_else(not_found)?,
            ))
        }
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", g, v, rest @ ..] => (g, v, rest),
        _ => return Err(not_found()),
    };
    let find = |plural: &str| {
        resource_by_path(group, version, plural)
            .filter(|r| st.served(r))
            .ok_or_else(not_found)
    };
    let t = |r, ns: Option<&str>, name: Option<&str>, status| Target {
        r,
        version: version.to_string(),
        namespace: ns.map(str::to_string),
        name: name.map(str::to_string),
        status,
    };
    let target = match rest {
        [plural] => t(find(plural)?, None, None, false),
        ["namespaces", ns, "status"] => t(find("namespaces")?, None, Some(ns), true),
        ["namespaces", ns, plural] => {
            let r = find(plural)?;
            if !r.namespaced {
                return Err(not_found());
            }
            t(r, Some(ns), None, false)
        }
        ["namespaces", ns, plural, name] => t(find(plural)?, Some(ns), Some(name), false),
        ["namespaces", ns, plural, name, "status"] => t(find(plural)?, Some(ns), Some(name), true),
        [plural, name] => {
            let r = find(plural)?;
            if r.namespaced {
                return Err(not_found());
            }
            t(r, None, Some(name), false)
        }
        [plural, name, "status"] => t(find(plural)?, None, Some(name), true),
        _ => return Err(not_found()),
    };
    Ok(Route::Target(target))
}

fn group_list(st: &State) -> Value {
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for r in RESOURCES
        .iter()
        .filter(|r| !r.group.is_empty() && st.served(r))
    {
        let vs = groups.entry(r.group).or_default();
        for v in r.versions {
            if !vs.contains(v) {
                vs.push(v);
            }
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(g, vs)| {
            let versions: Vec<Value> = vs
                .iter()
                .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                .collect();
            json!({"name": g, "versions": versions, "preferredVersion": versions[0].clone()})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn resource_list(st: &State, group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.versions.contains(&version) && st.served(r))
    {
        resources.push(json!({
            "name": r.plural, "singularName": r.kind.to_lowercase(), "namespaced": r.namespaced,
            "kind": r.kind, "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]
        }));
        if r.status {
            resources.push(json!({
                "name": format!("{}/status", r.plural), "singularName": "", "namespaced": r.namespaced,
                "kind": r.kind, "verbs": ["get", "patch", "update"]
            }));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return error_response(err(400, "BadRequest", "cannot read body")),
    };
    let q = parse_query(&query);
    let routed = {
        let mut st = shared.lock();
        st.requests.push(RequestRecord {
            method: method.to_string(),
            path: path.clone(),
            query: query.clone(),
            token: token.clone(),
        });
        route(&st, &path)
    };
    let target = match routed {
        Ok(Route::Discovery(v)) => return full(StatusCode::OK, &v),
        Ok(Route::Target(t)) => t,
        Err(e) => return error_response(e),
    };
    let failing = {
        let st = shared.lock();
        st.failing || st.failing_resource.as_deref() == Some(target.r.plural)
    };
    if failing {
        return error_response(err(500, "InternalError", "etcdserver: request timed out"));
    }
    let parsed: Option<Value> = if body.is_empty() {
        None
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => Some(v),
            Err(e) => return error_response(err(400, "BadRequest", format!("invalid JSON: {e}"))),
        }
    };
    let r = target.r;
    let ns = target.namespace.as_deref();
    let result: Result<(StatusCode, Value), ApiError> = match (&method, &target.name) {
        (&Method::GET, None) if q.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            return watch(shared, &target, &q);
        }
        (&Method::GET, None) => list(&shared, &target, &q).map(|v| (StatusCode::OK, v)),
        (&Method::GET, Some(name)) => {
            let mut st = shared.lock();
            st.collection(r)
                .objects
                .get(&(ns.unwrap_or("").to_string(), name.clone()))
                .cloned()
                .map(|o| (StatusCode::OK, with_version(o, r, &target.version)))
                .ok_or_else(|| {
                    err(
                        404,
                        "NotFound",
                        format!("{} \"{name}\" not found", r.plural),
                    )
                })
        }
        (&Method::POST, None) => {
            let obj = parsed.unwrap_or(Value::Null);
            shared
                .lock()
                .create(r, &target.version, ns, obj)
                .map(|o| (StatusCode::CREATED, o))
        }
        (&Method::PUT, Some(name)) if !target.status => {
            let obj = parsed.unwrap_or(Value::Null);
            shared
                .lock()
                .update(r, &target.version, ns, name, obj, true)
                .map(|o| (StatusCode::OK, o))
        }
        (&Method::PATCH, Some(name)) if target.status => {
            let patch = parsed.unwrap_or(Value::Null);
            let mut st = shared.lock();
            let res = st.patch_status(r, &target.version, ns, name, &patch);
            let (code, changed) = match &res {
                Ok((_, changed)) => (200, *changed),
                Err(e) => (e.code, false),
            };
            st.patches.push(StatusPatchRecord {
                kind: r.kind.to_string(),
                namespace: ns.map(str::to_string),
                name: name.clone(),
                body: patch,
                token: token.clone(),
                code,
                changed,
            });
            res.map(|(o, _)| (StatusCode::OK, o))
        }
        (&Method::DELETE, Some(name)) => shared
            .lock()
            .delete(r, ns, name, true)
            .map(|o| (StatusCode::OK, o))
            .ok_or_else(|| {
                err(
                    404,
                    "NotFound",
                    format!("{} \"{name}\" not found", r.plural),
                )
            }),
        _ => Err(err(
            405,
            "MethodNotAllowed",
            format!("{method} {path} is not supported by the fake"),
        )),
    };
    match result {
        Ok((code, v)) => full(code, &v),
        Err(e) => error_response(e),
    }
}

fn list(shared: &Shared, target: &Target, q: &HashMap<String, String>) -> Result<Value, ApiError> {
    let sel = Selectors::parse(q)?;
    let limit: usize = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    // continue = "<rv>|<namespace>|<name>": the list's resourceVersion and the last key of the previous page.
    let cont = q.get("continue").filter(|c| !c.is_empty());
    let mut st = shared.lock();
    let (rv, after): (u64, Option<(String, String)>) = match cont {
        Some(c) => {
            let mut parts = c.splitn(3, '|');
            let rv = parts.next().and_then(|s| s.parse().ok());
            let ns = parts.next();
            let name = parts.next();
            match (rv, ns, name) {
                (Some(rv), Some(ns), Some(name)) => (rv, Some((ns.to_string(), name.to_string()))),
                _ => return Err(err(400, "BadRequest", "invalid continue token")),
            }
        }
        None => (st.rv, None),
    };
    let r = target.r;
    let ns_filter = target.namespace.clone();
    let c = st.collection(r);
    let mut items = Vec::new();
    let mut last_key = None;
    let mut more = false;
    for (key, obj) in c.objects.iter() {
        if let Some(a) = &after {
            if key <= a {
                continue;
            }
        }
        if let Some(ns) = &ns_filter {
            if &key.0 != ns {
                continue;
            }
        }
        if !sel.matches(obj) {
            continue;
        }
        if items.len() == limit {
            more = true;
            break;
        }
        items.push(with_version(obj.clone(), r, &target.version));
        last_key = Some(key.clone());
    }
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if more {
        if let Some((ns, name)) = last_key {
            meta["continue"] = json!(format!("{rv}|{ns}|{name}"));
        }
    }
    let api_version = if r.group.is_empty() {
        target.version.clone()
    } else {
        format!("{}/{}", r.group, target.version)
    };
    Ok(json!({
        "kind": format!("{}List", r.kind), "apiVersion": api_version,
        "metadata": meta, "items": items
    }))
}

fn watch_line(type_: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": type_, "object": object})).expect("json");
    line.push(b'\n');
    Bytes::from(line)
}

struct WatchGuard(Arc<Shared>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.lock().active_watches -= 1;
    }
}

fn watch(shared: Arc<Shared>, target: &Target, q: &HashMap<String, String>) -> Response<Body> {
    let sel = match Selectors::parse(q) {
        Ok(s) => s,
        Err(e) => return error_response(e),
    };
    let bookmarks = q
        .get("allowWatchBookmarks")
        .is_some_and(|b| b == "true" || b == "1");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let from: Option<u64> = q
        .get("resourceVersion")
        .filter(|s| !s.is_empty() && *s != "0")
        .and_then(|s| s.parse().ok());
    let r = target.r;
    let version = target.version.clone();
    let ns_filter = target.namespace.clone();
    let keep = move |obj: &Value| {
        ns_filter
            .as_deref()
            .is_none_or(|ns| obj["metadata"]["namespace"].as_str() == Some(ns))
            && sel.matches(obj)
    };
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1024);
    let mut cut_rx = shared.cut.subscribe();
    // Under the lock: the replay and the subscription see the same moment, so no event is lost or doubled.
    let (mut live, replay, gone, start_rv) = {
        let mut st = shared.lock();
        st.active_watches += 1;
        let current = st.rv;
        let c = st.collection(r);
        let live = c.tx.subscribe();
        match from {
            Some(rv) if rv < c.compacted => (live, Vec::new(), Some((rv, c.compacted)), rv),
            Some(rv) => {
                let replay: Vec<Arc<Event>> =
                    c.history.iter().filter(|e| e.rv > rv).cloned().collect();
                (live, replay, None, rv)
            }
            None => {
                // No version: the current objects as ADDED events, then changes.
                let replay = c
                    .objects
                    .values()
                    .map(|o| {
                        Arc::new(Event {
                            rv: current,
                            type_: "ADDED",
                            object: o.clone(),
                        })
                    })
                    .collect();
                (live, replay, None, current)
            }
        }
    };
    let guard = WatchGuard(shared.clone());
    let interval = shared.bookmark_interval;
    tokio::spawn(async move {
        let _guard = guard;
        let send = |b: Bytes| tx.send(Ok(Frame::data(b)));
        if let Some((rv, compacted)) = gone {
            let status = status_json(
                410,
                "Expired",
                &format!("too old resource version: {rv} ({compacted})"),
            );
            let _ = send(watch_line("ERROR", &status)).await;
            return;
        }
        let mut last = start_rv;
        for ev in replay {
            if keep(&ev.object)
                && send(watch_line(
                    ev.type_,
                    &with_version(ev.object.clone(), r, &version),
                ))
                .await
                .is_err()
            {
                return;
            }
            last = last.max(ev.rv);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        loop {
            tokio::select! {
                ev = live.recv() => match ev {
                    Ok(ev) => {
                        if ev.rv <= last {
                            continue;
                        }
                        last = ev.rv;
                        if keep(&ev.object)
                            && send(watch_line(ev.type_, &with_version(ev.object.clone(), r, &version))).await.is_err()
                        {
                            return;
                        }
                    }
                    // Lagging far behind or closed: end cleanly, the client re-watches from its last version.
                    Err(_) => return,
                },
                cut = cut_rx.recv() => {
                    if matches!(cut, Ok(true)) {
                        let _ = tx.send(Err(std::io::Error::other("connection cut by the test"))).await;
                    }
                    return;
                }
                _ = tick.tick(), if bookmarks => {
                    let bookmark = json!({
                        "kind": r.kind,
                        "apiVersion": if r.group.is_empty() { version.clone() } else { format!("{}/{version}", r.group) },
                        "metadata": {"resourceVersion": last.to_string()}
                    });
                    if send(watch_line("BOOKMARK", &bookmark)).await.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("transfer-encoding", "chunked")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .expect("watch response")
}

/// Sets `obj`'s status to `from`'s (removing it when `from` has none).
fn copy_status(obj: &mut Value, from: &Value) {
    match from.get("status") {
        Some(s) => obj["status"] = s.clone(),
        None => {
            if let Some(o) = obj.as_object_mut() {
                o.remove("status");
            }
        }
    }
}
