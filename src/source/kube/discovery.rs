//! Which Gateway API kinds the API server serves, and at which version (API discovery: `GET /apis`, then
//! `GET /apis/<group>/<version>` for the groups that exist). Needs no RBAC beyond what every authenticated user
//! has (`system:discovery`).

use super::kinds::KINDS;
use super::watched::Served;
use crate::k8s::kube::{Client, Error as KubeError};
use std::collections::{BTreeMap, HashMap, HashSet};

/// The served version of every CRD kind that is installed, by kind.
pub type Discovered = BTreeMap<&'static str, Served>;

/// Asks the API server which CRD kinds it serves. An error means "unknown" (the caller keeps what it had).
pub async fn discover(client: &Client) -> Result<Discovered, KubeError> {
    let groups = client.list_api_groups().await?;
    let served: HashSet<String> = groups
        .groups
        .iter()
        .flat_map(|g| g.versions.iter().map(|v| v.group_version.clone()))
        .collect();
    let mut resources: HashMap<String, HashSet<String>> = HashMap::new();
    let mut out = Discovered::new();
    for spec in KINDS.iter().filter(|k| k.crd) {
        for candidate in spec.versions {
            let gv = candidate.api_version();
            if !served.contains(&gv) {
                continue;
            }
            if !resources.contains_key(&gv) {
                let names = match client.list_api_group_resources(&gv).await {
                    Ok(list) => list.resources.into_iter().map(|r| r.name).collect(),
                    // Listed in /apis but gone now (being uninstalled): not served.
                    Err(KubeError::Api(s)) if s.code == 404 => HashSet::new(),
                    Err(e) => return Err(e),
                };
                resources.insert(gv.clone(), names);
            }
            if resources[&gv].contains(candidate.plural) {
                out.insert(spec.kind, *candidate);
                break;
            }
        }
    }
    Ok(out)
}
