//! How watched objects are held: [`Watched`], a typed object or (when the API server sent something our types
//! cannot read) its name, the error and the last version that did read.
//!
//! Watching typed objects directly would make one unreadable object fail the whole list of its kind, so that the
//! kind never syncs; reading each object on its own reports that object and keeps serving the rest, as the file
//! source does.

use crate::k8s::kube::core::DynamicResourceScope;
use crate::k8s::kube::runtime::watcher::Event;
use crate::k8s::kube::Resource;
use crate::k8s::ObjectMeta;
use crate::source::HasMeta;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// One API version of one kind, as the API server serves it (the dynamic type of [`Watched`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Served {
    /// API group (`""` for the core group).
    pub group: &'static str,
    /// Version.
    pub version: &'static str,
    /// Kind as the API server names it.
    pub kind: &'static str,
    /// Resource name (plural) in URLs.
    pub plural: &'static str,
}

impl Served {
    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

impl fmt::Display for Served {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.api_version(), self.kind)
    }
}

/// A watched object.
///
/// Invariant: [`Watched::Unreadable`] keeps the object's metadata (at least its name), so the reflector store can
/// key it and deletions remove it.
pub enum Watched<K> {
    /// The object, read into its type.
    Read(Arc<K>),
    /// The object did not read into its type.
    Unreadable {
        /// Its metadata (boxed: rare, and it would make every stored object as big as itself).
        meta: Box<ObjectMeta>,
        /// Why it did not read (with the field path).
        error: String,
        /// The last version of the same object that did read, which keeps serving.
        last_good: Option<Arc<K>>,
    },
}

impl<K> Clone for Watched<K> {
    fn clone(&self) -> Self {
        match self {
            Watched::Read(k) => Watched::Read(k.clone()),
            Watched::Unreadable {
                meta,
                error,
                last_good,
            } => Watched::Unreadable {
                meta: meta.clone(),
                error: error.clone(),
                last_good: last_good.clone(),
            },
        }
    }
}

impl<K> fmt::Debug for Watched<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Watched::Read(_) => f.write_str("Watched::Read"),
            Watched::Unreadable { meta, error, .. } => f
                .debug_struct("Watched::Unreadable")
                .field("name", &meta.name)
                .field("namespace", &meta.namespace)
                .field("error", error)
                .finish(),
        }
    }
}

impl<K: HasMeta> Watched<K> {
    /// The version that serves: the object, or the last good version of an unreadable one.
    pub fn serving(&self) -> Option<&Arc<K>> {
        match self {
            Watched::Read(k) => Some(k),
            Watched::Unreadable { last_good, .. } => last_good.as_ref(),
        }
    }
}

impl<K: HasMeta + Clone> Resource for Watched<K> {
    type DynamicType = Served;
    type Scope = DynamicResourceScope;

    fn kind(dt: &Served) -> Cow<'_, str> {
        dt.kind.into()
    }
    fn group(dt: &Served) -> Cow<'_, str> {
        dt.group.into()
    }
    fn version(dt: &Served) -> Cow<'_, str> {
        dt.version.into()
    }
    fn plural(dt: &Served) -> Cow<'_, str> {
        dt.plural.into()
    }
    fn meta(&self) -> &ObjectMeta {
        match self {
            Watched::Read(k) => k.meta(),
            Watched::Unreadable { meta, .. } => meta,
        }
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            // Fresh from the decoder the Arc is unique, so this does not copy.
            Watched::Read(k) => Arc::make_mut(k).meta_mut(),
            Watched::Unreadable { meta, .. } => meta,
        }
    }
}

impl<'de, K: DeserializeOwned> Deserialize<'de> for Watched<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Through a `Value`, so a failure is this object's alone. (Not `RawValue`: kube-rs reads watch events as
        // adjacently tagged enums, which buffer the object when `object` comes before `type`, and a buffered
        // object cannot be read as raw text.)
        let v = Value::deserialize(d)?;
        match serde_path_to_error::deserialize::<_, K>(&v) {
            Ok(k) => Ok(Watched::Read(Arc::new(k))),
            Err(e) => {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let error = if path == "." {
                    inner.to_string()
                } else {
                    format!("{path}: {inner}")
                };
                let meta = v
                    .get("metadata")
                    .map(ObjectMeta::deserialize)
                    .transpose()
                    .map_err(serde::de::Error::custom)?
                    .unwrap_or_default();
                if meta.name.is_none() {
                    return Err(serde::de::Error::custom(format!(
                        "object without metadata.name: {error}"
                    )));
                }
                Ok(Watched::Unreadable {
                    meta: Box::new(meta),
                    error,
                    last_good: None,
                })
            }
        }
    }
}

/// Tells a change the translator must see from one it need not: translation never reads `status` (it computes
/// status; it does not consume it), so an update that changed only `status` (and `resourceVersion`) of an object
/// leaves the routing model as it was. Such updates are mostly our own status writes coming back through the
/// watch, one per route; they only concern the status writer.
pub trait StatusOnly {
    /// `true` when `self` equals `previous` except for `status` and `metadata.resourceVersion`.
    fn differs_only_in_status(&self, _previous: &Self) -> bool {
        false
    }
}

fn same_meta(a: &ObjectMeta, b: &ObjectMeta) -> bool {
    let strip = |m: &ObjectMeta| ObjectMeta {
        resource_version: None,
        managed_fields: None,
        ..m.clone()
    };
    strip(a) == strip(b)
}

macro_rules! status_only {
    (with_status: $($t:ty),*; without: $($u:ty),* $(,)?) => {
        $(impl StatusOnly for $t {
            fn differs_only_in_status(&self, previous: &Self) -> bool {
                self.spec == previous.spec && same_meta(&self.metadata, &previous.metadata)
            }
        })*
        $(impl StatusOnly for $u {})*
    };
}

use crate::k8s::gw::{
    BackendTLSPolicy, GRPCRoute, Gateway, GatewayClass, HTTPRoute, ListenerSet, ReferenceGrant,
    TCPRoute, TLSRoute, UDPRoute,
};
use crate::k8s::{ConfigMap, EndpointSlice, Ingress, IngressClass, Namespace, Secret, Service};

status_only!(
    with_status: Namespace, Service, Ingress, GatewayClass, Gateway, HTTPRoute, GRPCRoute, TLSRoute, TCPRoute,
        UDPRoute, ListenerSet, BackendTLSPolicy;
    without: EndpointSlice, Secret, ConfigMap, IngressClass, ReferenceGrant,
);

/// `true` when `new` is `previous` with only its status changed (both readable).
pub fn status_only_change<K: StatusOnly>(new: &Watched<K>, previous: Option<&Watched<K>>) -> bool {
    match (new, previous) {
        (Watched::Read(n), Some(Watched::Read(p))) => n.differs_only_in_status(p),
        _ => false,
    }
}

/// Annotations the translator reads; every other annotation is dropped when an object arrives (the biggest is
/// usually `kubectl.kubernetes.io/last-applied-configuration`, a full copy of the object).
const KEPT_ANNOTATIONS: &[&str] = &[
    "ingressclass.kubernetes.io/is-default-class",
    "kubernetes.io/ingress.class",
];
/// Annotation prefixes kept for features that read them (ingress-nginx compatibility, our own).
const KEPT_ANNOTATION_PREFIXES: &[&str] = &["nginx.ingress.kubernetes.io/", "portcullis.dev/"];

/// Drops what the translator never reads from an object's metadata: `managedFields`, `ownerReferences` and
/// annotations other than [`KEPT_ANNOTATIONS`] / [`KEPT_ANNOTATION_PREFIXES`].
pub fn strip_metadata(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    meta.owner_references = None;
    if let Some(a) = &mut meta.annotations {
        a.retain(|k, _| {
            KEPT_ANNOTATIONS.contains(&k.as_str())
                || KEPT_ANNOTATION_PREFIXES.iter().any(|p| k.starts_with(p))
        });
        if a.is_empty() {
            meta.annotations = None;
        }
    }
}

/// [`strip_metadata`] for a watched object (the `.modify()` step of the watch stream).
pub fn strip<K: HasMeta + Clone>(w: &mut Watched<K>) {
    strip_metadata(w.meta_mut());
}

/// Gives an unreadable object the last good version of itself found by `lookup` (the store before this event is
/// applied), so a bad edit never takes a working object away.
pub fn with_last_good<K: HasMeta>(
    event: Event<Watched<K>>,
    lookup: impl Fn(&ObjectMeta) -> Option<Arc<Watched<K>>>,
) -> Event<Watched<K>> {
    match event {
        Event::Apply(w) => Event::Apply(fill(w, &lookup)),
        Event::InitApply(w) => Event::InitApply(fill(w, &lookup)),
        other => other,
    }
}

fn fill<K: HasMeta>(
    w: Watched<K>,
    lookup: &impl Fn(&ObjectMeta) -> Option<Arc<Watched<K>>>,
) -> Watched<K> {
    match w {
        Watched::Unreadable {
            meta,
            error,
            last_good: None,
        } => {
            let last_good = lookup(&meta).and_then(|prev| prev.serving().cloned());
            Watched::Unreadable {
                meta,
                error,
                last_good,
            }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::gw::HTTPRoute;

    #[test]
    fn unreadable_objects_keep_their_name_and_error() {
        let v = serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "r", "namespace": "ns"},
            "spec": {"rules": [{"matches": [{"path": {"type": "Sideways", "value": "/"}}]}]}
        });
        let w: Watched<HTTPRoute> = serde_json::from_value(v).unwrap();
        match &w {
            Watched::Unreadable { meta, error, .. } => {
                assert_eq!(meta.name.as_deref(), Some("r"));
                assert!(
                    error.starts_with("spec.rules[0].matches[0].path.type"),
                    "{error}"
                );
            }
            Watched::Read(_) => panic!("read an invalid path type"),
        }
        assert!(w.serving().is_none());
    }

    #[test]
    fn strip_keeps_only_annotations_we_read() {
        let mut meta = ObjectMeta {
            annotations: Some(
                [
                    ("kubectl.kubernetes.io/last-applied-configuration", "{...}"),
                    ("kubernetes.io/ingress.class", "portcullis"),
                    ("nginx.ingress.kubernetes.io/rewrite-target", "/"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ),
            managed_fields: Some(vec![Default::default()]),
            ..Default::default()
        };
        strip_metadata(&mut meta);
        assert!(meta.managed_fields.is_none());
        let keys: Vec<_> = meta.annotations.unwrap().into_keys().collect();
        assert_eq!(
            keys,
            [
                "kubernetes.io/ingress.class",
                "nginx.ingress.kubernetes.io/rewrite-target"
            ]
        );
    }
}
