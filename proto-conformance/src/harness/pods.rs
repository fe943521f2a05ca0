//! Runs the pods of a world: one in-process echo server per echo-basic pod, on the pod's own loopback address.

use std::net::{IpAddr, SocketAddr};

use anyhow::Context as _;

use super::world::PodPlan;
use crate::echo::{EchoConfig, EchoServer, EchoTls};

/// A running pod.
pub struct RunningPod {
    /// Its plan (name, namespace, Deployment, address).
    pub plan: PodPlan,
    /// The echo server.
    pub server: EchoServer,
}

/// Starts every pod that has an echo plan. Fails (stopping those already started) if one cannot bind.
pub async fn start_pods(plans: &[PodPlan]) -> anyhow::Result<Vec<RunningPod>> {
    let mut running = Vec::new();
    for plan in plans {
        let Some(echo) = &plan.echo else { continue };
        let ip = IpAddr::V4(plan.ip);
        let mut cfg = EchoConfig::new(
            plan.name.clone(),
            plan.namespace.clone(),
            SocketAddr::new(ip, echo.http_port),
        );
        cfg.h2c_addr = Some(SocketAddr::new(ip, echo.h2c_port));
        cfg.https = echo.https.as_ref().map(|t| EchoTls {
            addr: SocketAddr::new(ip, t.port),
            cert_pem: t.cert_pem.clone(),
            key_pem: t.key_pem.clone(),
            client_ca_pem: t.client_ca_pem.clone(),
        });
        let server = EchoServer::start(cfg)
            .await
            .with_context(|| format!("starting pod {}/{} on {ip}", plan.namespace, plan.name))?;
        running.push(RunningPod {
            plan: plan.clone(),
            server,
        });
    }
    Ok(running)
}

/// The running pods of a Deployment (= backend).
pub fn pods_of<'a>(
    pods: &'a [RunningPod],
    namespace: &str,
    deployment: &str,
) -> Vec<&'a RunningPod> {
    pods.iter()
        .filter(|p| p.plan.namespace == namespace && p.plan.deployment == deployment)
        .collect()
}
