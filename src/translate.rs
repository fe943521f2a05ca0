//! Translation: [`Input`] (Kubernetes objects) to [`Model`] (plain routing data).
//!
//! Pure functions: no I/O, no clock, no randomness; the same input always gives the same output. User mistakes
//! become [`Diagnostic`]s (and, for Gateway API, the status the spec requires), never an `Err` or a panic: one bad
//! object never stops the others from being served.

mod backendpolicy;
mod backendtls;
mod builder;
mod crosskind;
mod gateway;
mod grpcroute;
mod httproute;
/// What an HTTPRoute rule's session cookie `Path` is (`migrate` writes sessionPersistence only where the route gets
/// the Ingress's cookie), and which bytes an HTTP token may hold (cookie names, protocol names).
pub(crate) use httproute::{cookie_path as session_cookie_path, is_token_byte};
mod ingress;
mod l4route;
pub mod nginx;
mod refs;
mod routes;
pub mod served;
mod shared_address;
pub mod status;
mod tlsroute;

use crate::model::Model;
use crate::source::{Input, ObjectRef};
use serde::{de::DeserializeOwned, Serialize};
use status::Statuses;
use std::fmt;

/// Process settings that change how objects translate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The port Ingress rules are served on (logical, before `--port-offset`).
    pub http_port: u16,
    /// The port Ingress TLS hosts are served on (logical).
    pub https_port: u16,
    /// `spec.controller` of the IngressClasses that are ours.
    pub ingress_controller: String,
    /// `spec.controllerName` of the GatewayClasses that are ours.
    pub gateway_controller: String,
    /// Addresses reported in the status of Gateways that do not ask for their own (the bind address in
    /// standalone mode, the published addresses in a cluster).
    pub default_addresses: Vec<String>,
    /// ingress-nginx compatibility: the annotation prefix and the IngressClasses taken over.
    pub nginx: nginx::NginxOptions,
}

/// Re-reads a value as another generated type with the same JSON shape (the gateway-api crate generates separate,
/// identical types for rule-level and backend-level filters, for request and response header modifiers, and for
/// Gateway and ListenerSet listeners).
pub(crate) fn recast<A: Serialize, B: DeserializeOwned>(a: &A) -> Option<B> {
    serde_json::to_value(a)
        .ok()
        .and_then(|v| serde_json::from_value(v).ok())
}

/// The IngressClass controller value Portcullis answers to.
pub const INGRESS_CONTROLLER: &str = "portcullis.dev/ingress-controller";
/// The GatewayClass controllerName Portcullis answers to.
pub const GATEWAY_CONTROLLER: &str = "portcullis.dev/gateway-controller";

impl Default for Options {
    fn default() -> Self {
        Options {
            http_port: 80,
            https_port: 443,
            ingress_controller: INGRESS_CONTROLLER.to_string(),
            gateway_controller: GATEWAY_CONTROLLER.to_string(),
            default_addresses: Vec::new(),
            nginx: nginx::NginxOptions::default(),
        }
    }
}

/// How bad a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Something was refused (an object, a rule, a path); `portcullis validate` exits 1.
    Error,
    /// Something works, but probably not as its author meant (shadowed paths, unsupported options).
    Warning,
}

/// A problem found in one object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The object it is about.
    pub object: ObjectRef,
    /// What is wrong and, where it helps, how to fix it. Starts with the field path when there is one.
    pub message: String,
    /// The annotation the problem is about, when it is one (file mode then points at its line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotation: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{sev}: {}: {}", self.object, self.message)
    }
}

/// Everything translation produces.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Output {
    /// The routing model.
    pub model: Model,
    /// Problems, sorted by object then message.
    pub diagnostics: Vec<Diagnostic>,
    /// Gateway API status of our objects.
    pub statuses: Statuses,
    /// Ingresses refused as a whole (an annotation value ingress-nginx refuses): nothing of them is in `model`;
    /// the caller may translate again with their last good version (see `control`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<ObjectRef>,
}

/// Collects diagnostics while translating.
#[derive(Debug, Default)]
pub(crate) struct Diagnostics(Vec<Diagnostic>);

impl Diagnostics {
    pub(crate) fn error(&mut self, object: &ObjectRef, message: impl Into<String>) {
        self.0.push(Diagnostic {
            severity: Severity::Error,
            object: object.clone(),
            message: message.into(),
            annotation: None,
        });
    }

    pub(crate) fn warning(&mut self, object: &ObjectRef, message: impl Into<String>) {
        self.0.push(Diagnostic {
            severity: Severity::Warning,
            object: object.clone(),
            message: message.into(),
            annotation: None,
        });
    }

    /// A problem with one annotation of `object`.
    pub(crate) fn annotation(
        &mut self,
        severity: Severity,
        object: &ObjectRef,
        annotation: &str,
        message: impl Into<String>,
    ) {
        self.0.push(Diagnostic {
            severity,
            object: object.clone(),
            message: message.into(),
            annotation: Some(annotation.to_string()),
        });
    }
}

/// `metadata.creationTimestamp` in seconds since the epoch.
pub(crate) fn created(meta: &crate::k8s::ObjectMeta) -> Option<i64> {
    meta.creation_timestamp.as_ref().map(|t| t.0.as_second())
}

/// Translates every object of ours in `input` into one routing model.
pub fn translate(input: &Input, opts: &Options) -> Output {
    let mut diags = Diagnostics::default();
    let refs = refs::Resolver::new(input);
    let mut model = builder::ModelBuilder::new(opts);

    let mut statuses = Statuses::default();

    let rejected = ingress::translate(input, opts, &refs, &mut model, &mut diags);
    gateway::class_statuses(input, opts, &mut statuses);
    let mut gws = gateway::translate(input, opts, &refs, &mut model, &mut diags);
    gws.kind_conflicts = crosskind::resolve(input, &gws, &refs);
    let policies = backendtls::Policies::new(input, &refs);
    let cx = httproute::RouteCtx {
        refs: &refs,
        policies: &policies,
        opts,
    };
    let mut usage = httproute::ServiceUsage::new();
    httproute::translate(
        input,
        &mut gws,
        &cx,
        &mut model,
        &mut diags,
        &mut statuses,
        &mut usage,
    );
    grpcroute::translate(
        input,
        &mut gws,
        &cx,
        &mut model,
        &mut diags,
        &mut statuses,
        &mut usage,
    );
    tlsroute::translate(input, &mut gws, &cx, &mut model, &mut diags, &mut statuses);
    l4route::translate(input, &mut gws, &cx, &mut model, &mut diags, &mut statuses);
    statuses.backend_tls_policies = policies.statuses(&usage, &opts.gateway_controller);
    gws.finish(&mut statuses);
    statuses.sort();

    for (object, problem) in refs.policy_problems() {
        diags.warning(object, problem.clone());
    }
    let model = model.finish(&mut diags, refs.take_backends());
    let mut diagnostics = diags.0;
    diagnostics.sort();
    diagnostics.dedup();
    Output {
        model,
        diagnostics,
        statuses,
        rejected,
    }
}
