//! ingress-nginx compatibility: the two profiles, the ingress-nginx ConfigMap, and typed annotations.
//!
//! - Ingresses of our own class keep Ingress v1 semantics; their `nginx.ingress.kubernetes.io/*` annotations are
//!   explicit opt-ins, each behaving as in ingress-nginx.
//! - With `--ingress-nginx-class NAME`, Ingresses of that IngressClass (controller `k8s.io/ingress-nginx`), or with
//!   the legacy `kubernetes.io/ingress.class: NAME` annotation, are taken over with ingress-nginx's global defaults
//!   (its ConfigMap, named by `--ingress-nginx-configmap`, and `--ingress-nginx-set KEY=VALUE`).

pub mod annotations;
pub mod config;
mod values;

use super::ingress::{ingress_is_ours, DEFAULT_CLASS_ANNOTATION, LEGACY_CLASS_ANNOTATION};
use super::refs::Resolver;
use super::{Diagnostics, Options};
use crate::k8s::{Ingress, IngressClass};
use crate::source::{Input, ObjectRef};
pub use config::{Profile, Settings};

/// ingress-nginx's default annotation prefix.
pub const DEFAULT_ANNOTATIONS_PREFIX: &str = "nginx.ingress.kubernetes.io";
/// ingress-nginx's IngressClass controller value.
pub const INGRESS_NGINX_CONTROLLER: &str = "k8s.io/ingress-nginx";

/// How ingress-nginx Ingresses are taken over (process settings; see `config.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NginxOptions {
    /// The annotation prefix, without the trailing `/` (both profiles).
    pub annotations_prefix: String,
    /// IngressClass names taken over from ingress-nginx; empty means none (the profile is off).
    pub classes: Vec<String>,
    /// The `spec.controller` those IngressClasses must have.
    pub controller: String,
    /// The ingress-nginx ConfigMap (`namespace/name`), read from the input like any object.
    pub config_map: Option<String>,
    /// ConfigMap keys set on the command line; they win over the ConfigMap.
    pub overrides: Vec<(String, String)>,
}

impl Default for NginxOptions {
    fn default() -> Self {
        NginxOptions {
            annotations_prefix: DEFAULT_ANNOTATIONS_PREFIX.to_string(),
            classes: Vec::new(),
            controller: INGRESS_NGINX_CONTROLLER.to_string(),
            config_map: None,
            overrides: Vec::new(),
        }
    }
}

fn is_default(class: &IngressClass) -> bool {
    class
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
        .is_some_and(|v| v == "true")
}

/// Is this Ingress one of the ingress-nginx classes taken over?
fn is_taken_over(ing: &Ingress, input: &Input, opts: &NginxOptions) -> bool {
    if opts.classes.is_empty() {
        return false;
    }
    let nginx_class = |name: &str| {
        opts.classes.iter().any(|c| c == name)
            && input.ingress_classes.iter().any(|c| {
                c.metadata.name.as_deref() == Some(name)
                    && c.spec.as_ref().and_then(|s| s.controller.as_deref())
                        == Some(opts.controller.as_str())
            })
    };
    if let Some(name) = ing
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref())
    {
        return nginx_class(name);
    }
    if let Some(name) = ing
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION))
    {
        // The legacy annotation predates IngressClass objects: the name given on the command line is enough.
        return opts.classes.iter().any(|c| c == name);
    }
    input.ingress_classes.iter().any(|c| {
        c.metadata
            .name
            .as_deref()
            .is_some_and(|n| opts.classes.iter().any(|x| x == n))
            && c.spec.as_ref().and_then(|s| s.controller.as_deref())
                == Some(opts.controller.as_str())
            && is_default(c)
    })
}

/// The profile an Ingress is translated with, or `None` when it is not ours. Our own class wins when both could
/// claim an Ingress without a class.
pub(crate) fn profile_of(ing: &Ingress, input: &Input, opts: &Options) -> Option<Profile> {
    if ingress_is_ours(ing, input, opts) {
        Some(Profile::IngressV1)
    } else if is_taken_over(ing, input, &opts.nginx) {
        Some(Profile::IngressNginx)
    } else {
        None
    }
}

/// The ingress-nginx profile's settings: its defaults, then the ConfigMap, then `--ingress-nginx-set`. Bad values
/// are reported (on the ConfigMap, or on a `Flag` pseudo-object for the command line) and keep the default.
pub(crate) fn nginx_settings(
    opts: &Options,
    refs: &Resolver<'_>,
    diags: &mut Diagnostics,
) -> Settings {
    let mut s = Settings::ingress_nginx();
    let n = &opts.nginx;
    if let Some(cm) = &n.config_map {
        let (ns, name) = cm.split_once('/').unwrap_or(("default", cm.as_str()));
        let object = ObjectRef {
            kind: "ConfigMap".into(),
            namespace: Some(ns.to_string()),
            name: name.to_string(),
        };
        match refs.config_map_data(ns, name) {
            None => diags.warning(
                &object,
                "the ingress-nginx ConfigMap (--ingress-nginx-configmap) is not found; ingress-nginx's defaults apply",
            ),
            Some(data) => {
                for (k, v) in &data {
                    match s.set(k, v) {
                        Ok(true) => {}
                        Ok(false) => diags.warning(
                            &object,
                            format!("data.{k}: not used by Portcullis (see docs/ingress-nginx.md); ignored"),
                        ),
                        Err(e) => diags.warning(
                            &object,
                            format!("data.{k}: value {v:?} is not valid ({e}); the default is kept"),
                        ),
                    }
                }
            }
        }
    }
    for (k, v) in &n.overrides {
        let object = ObjectRef {
            kind: "Flag".into(),
            namespace: None,
            name: "--ingress-nginx-set".into(),
        };
        match s.set(k, v) {
            Ok(true) => {}
            Ok(false) => diags.error(
                &object,
                format!(
                    "{k}: not a key Portcullis understands ({})",
                    config::KEYS.join(", ")
                ),
            ),
            Err(e) => diags.error(&object, format!("{k}={v}: {e}; the default is kept")),
        }
    }
    s
}
