//! The objects some upstream tests create at run time (in Go, not in YAML), built from the Go source they cite in
//! `after_state_changes`, and how the harness adds them to a world: with `metadata.creationTimestamp` one second
//! after the objects of the same kind already there (stamped now if they have none), so that "the oldest route
//! wins" holds as it does on an apiserver (the Go tests sleep a second before creating them).

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::world::{apiserver_defaults, split_ns_name, ManifestFile, WorldPlan};
use super::yaml::{at_mut, kind};

/// The file of a world that holds the objects created at run time.
pub const RUNTIME_FILE: &str = "99-runtime-objects.yaml";

/// A route of `kind` with one parentRef (`gateway`, `section`) and one backendRef (`backend`, `port`).
fn l4_route(
    kind: &str,
    ns: &str,
    name: &str,
    gateway: &str,
    section: &str,
    backend: &str,
    port: u16,
) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1alpha2",
        "kind": kind,
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "parentRefs": [{"name": gateway, "sectionName": section}],
            "rules": [{"backendRefs": [{"name": backend, "port": port}]}],
        },
    })
}

/// The object a Go test creates, by kind and `namespace/name`; `None` for objects the harness does not know.
///
/// * `TCPRoute gateway-conformance-infra/tcproute-attach-newer`: `tcproute-multiple-routes-attachment.go`,
///   parent `tcp-multi-route-attach-gateway` section `tcp`, backend `tcp-attach-backend-2:3000`;
/// * `UDPRoute gateway-conformance-infra/udproute-attach-newer`: `udproute-multiple-routes-attachment.go`,
///   parent `udp-multi-route-attach-gateway` section `udp`, backend `udp-attach-backend-2:8080`.
pub fn build(kind: &str, ns_name: &str) -> Option<Value> {
    let (ns, name) = split_ns_name(ns_name);
    match (kind, ns, name) {
        ("TCPRoute", "gateway-conformance-infra", "tcproute-attach-newer") => Some(l4_route(
            "TCPRoute",
            ns,
            name,
            "tcp-multi-route-attach-gateway",
            "tcp",
            "tcp-attach-backend-2",
            3000,
        )),
        ("UDPRoute", "gateway-conformance-infra", "udproute-attach-newer") => Some(l4_route(
            "UDPRoute",
            ns,
            name,
            "udp-multi-route-attach-gateway",
            "udp",
            "udp-attach-backend-2",
            8080,
        )),
        _ => None,
    }
}

/// `secs` since the epoch as RFC 3339 UTC with second precision (`metav1.Time`'s format).
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Adds `obj` to the world as created at `now`: every object of its kind without a creation time gets `now - 1 s`,
/// `obj` gets `now`; an object with the same kind and name is replaced (apply semantics).
pub fn add_newer(plan: &mut WorldPlan, mut obj: Value, now: SystemTime) {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let obj_kind = kind(&obj).to_string();
    for doc in plan.files.iter_mut().flat_map(|f| f.docs.iter_mut()) {
        if kind(doc) == obj_kind
            && doc
                .get("metadata")
                .and_then(|m| m.get("creationTimestamp"))
                .is_none()
        {
            *at_mut(doc, &["metadata", "creationTimestamp"]) = json!(rfc3339(secs - 1));
        }
    }
    *at_mut(&mut obj, &["metadata", "creationTimestamp"]) = json!(rfc3339(secs));
    apiserver_defaults(&mut obj);
    let same = |d: &Value| {
        kind(d) == obj_kind
            && d.get("metadata")
                .map(|m| (m.get("name"), m.get("namespace")))
                == obj
                    .get("metadata")
                    .map(|m| (m.get("name"), m.get("namespace")))
    };
    for f in &mut plan.files {
        f.docs.retain(|d| !same(d));
    }
    match plan.files.iter_mut().find(|f| f.file_name == RUNTIME_FILE) {
        Some(f) => f.docs.push(obj),
        None => plan.files.push(ManifestFile {
            file_name: RUNTIME_FILE.to_string(),
            docs: vec![obj],
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_289_649), "2026-12-03T09:20:49Z");
    }
}
