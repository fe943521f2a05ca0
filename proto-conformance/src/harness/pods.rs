//! Runs the pods of a world: one in-process server per pod (echo-basic in its HTTP, gRPC, TCP or UDP mode, or
//! the DNS stand-in of the CoreDNS pod), on the pod's own loopback address.

use std::net::{IpAddr, SocketAddr};

use anyhow::Context as _;

use super::world::{BackendPlan, PodPlan, PodTlsPlan};
use crate::echo::dns::{DnsConfig, DnsServer};
use crate::echo::grpc::{GrpcEchoConfig, GrpcEchoServer};
use crate::echo::tcp::{TcpEchoConfig, TcpEchoServer};
use crate::echo::udp::{UdpEchoConfig, UdpEchoServer};
use crate::echo::{EchoConfig, EchoServer, EchoTls, PodIdentity};

/// The server of a running pod.
#[derive(Debug)]
pub enum PodServer {
    /// echo-basic's HTTP echo.
    Http(EchoServer),
    /// The gRPC echo.
    Grpc(GrpcEchoServer),
    /// The TCP echo.
    Tcp(TcpEchoServer),
    /// The UDP echo.
    Udp(UdpEchoServer),
    /// The DNS stand-in.
    Dns(DnsServer),
}

/// A running pod.
pub struct RunningPod {
    /// Its plan (name, namespace, Deployment, address).
    pub plan: PodPlan,
    /// Its server.
    pub server: PodServer,
}

impl RunningPod {
    /// The HTTP echo server, when the pod runs one (mirror checks read what it received).
    pub fn http(&self) -> Option<&EchoServer> {
        match &self.server {
            PodServer::Http(s) => Some(s),
            _ => None,
        }
    }
}

fn tls_of(ip: IpAddr, t: &PodTlsPlan) -> EchoTls {
    EchoTls {
        addr: SocketAddr::new(ip, t.port),
        cert_pem: t.cert_pem.clone(),
        key_pem: t.key_pem.clone(),
        client_ca_pem: None,
    }
}

/// Starts one pod's server.
async fn start_pod(plan: &PodPlan, backend: &BackendPlan) -> anyhow::Result<PodServer> {
    let ip = IpAddr::V4(plan.ip);
    let identity = PodIdentity {
        pod_name: plan.name.clone(),
        namespace: plan.namespace.clone(),
        ingress_name: plan.ingress_name.clone(),
        service_name: plan.service_name.clone(),
    };
    Ok(match backend {
        BackendPlan::Http(echo) => {
            let mut cfg = EchoConfig::new(
                plan.name.clone(),
                plan.namespace.clone(),
                SocketAddr::new(ip, echo.http_port),
            );
            cfg.ingress_name = plan.ingress_name.clone();
            cfg.service_name = plan.service_name.clone();
            cfg.h2c_addr = Some(SocketAddr::new(ip, echo.h2c_port));
            cfg.https = echo.https.as_ref().map(|t| EchoTls {
                addr: SocketAddr::new(ip, t.port),
                cert_pem: t.cert_pem.clone(),
                key_pem: t.key_pem.clone(),
                client_ca_pem: t.client_ca_pem.clone(),
            });
            PodServer::Http(EchoServer::start(cfg).await?)
        }
        BackendPlan::Grpc { port, tls } => PodServer::Grpc(
            GrpcEchoServer::start(GrpcEchoConfig {
                identity,
                addr: SocketAddr::new(ip, *port),
                tls: tls.as_ref().map(|t| tls_of(ip, t)),
                log_to_stdout: false,
            })
            .await?,
        ),
        BackendPlan::Tcp { port, tls } => PodServer::Tcp(
            TcpEchoServer::start(TcpEchoConfig {
                identity,
                addr: SocketAddr::new(ip, *port),
                tls: tls.as_ref().map(|t| tls_of(ip, t)),
                log_to_stdout: false,
            })
            .await?,
        ),
        BackendPlan::Udp { port } => PodServer::Udp(
            UdpEchoServer::start(UdpEchoConfig {
                identity,
                addr: SocketAddr::new(ip, *port),
                log_to_stdout: false,
            })
            .await?,
        ),
        BackendPlan::Dns { port, zones } => PodServer::Dns(
            DnsServer::start(DnsConfig {
                addr: SocketAddr::new(ip, *port),
                zones: zones.clone(),
                log_to_stdout: false,
            })
            .await?,
        ),
    })
}

/// Starts every pod that has a backend plan. Fails (stopping those already started) if one cannot bind.
pub async fn start_pods(plans: &[PodPlan]) -> anyhow::Result<Vec<RunningPod>> {
    let mut running = Vec::new();
    for plan in plans {
        let Some(backend) = &plan.backend else {
            continue;
        };
        let server = start_pod(plan, backend).await.with_context(|| {
            format!(
                "starting pod {}/{} on {}",
                plan.namespace, plan.name, plan.ip
            )
        })?;
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
