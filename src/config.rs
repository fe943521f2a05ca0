//! Process settings: the command line. Nothing here describes routes; routes come from Kubernetes objects.

use crate::translate::{Options, GATEWAY_CONTROLLER, INGRESS_CONTROLLER};
use clap::{Args, Parser, Subcommand};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// Portcullis: a Kubernetes Ingress and Gateway API proxy built on Pingora.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve traffic for the Ingress and Gateway API objects in the given manifests, reloading them on change.
    Run(RunArgs),
    /// Check manifests: print every error and warning with its location; exit 1 if there are errors.
    Validate(ValidateArgs),
    /// Print the compiled routing table for the given manifests.
    Routes(RoutesArgs),
}

/// Settings that change how objects translate (shared by every subcommand).
#[derive(Debug, Clone, Args)]
pub struct TranslateArgs {
    /// Port Ingress rules are served on (before --port-offset).
    #[arg(long, default_value_t = 80)]
    pub http_port: u16,
    /// Port Ingress TLS hosts are served on (before --port-offset).
    #[arg(long, default_value_t = 443)]
    pub https_port: u16,
    /// IngressClass `spec.controller` value that selects Portcullis.
    #[arg(long, default_value = INGRESS_CONTROLLER)]
    pub ingress_controller: String,
    /// GatewayClass `spec.controllerName` value that selects Portcullis.
    #[arg(long, default_value = GATEWAY_CONTROLLER)]
    pub gateway_controller: String,
}

impl TranslateArgs {
    /// The translation options these flags describe.
    pub fn options(&self) -> Options {
        Options {
            http_port: self.http_port,
            https_port: self.https_port,
            ingress_controller: self.ingress_controller.clone(),
            gateway_controller: self.gateway_controller.clone(),
            default_addresses: Vec::new(),
        }
    }
}

/// `portcullis run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Files or directories of Kubernetes YAML (`*.yaml`, `*.yml`, searched recursively), watched for changes.
    #[arg(long, num_args = 1.., required = true, value_name = "PATH")]
    pub manifests: Vec<PathBuf>,
    /// Translation settings.
    #[command(flatten)]
    pub translate: TranslateArgs,
    /// Added to every port the proxy binds (Ingress ports and Gateway listener ports alike), for tests and
    /// non-root runs.
    #[arg(long, default_value_t = 0)]
    pub port_offset: u16,
    /// Address of the admin API (/healthz, /readyz, /config).
    #[arg(long, default_value = "127.0.0.1:9901")]
    pub admin_addr: SocketAddr,
    /// IP address the proxy listeners bind.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// Data-plane worker threads (default: one per CPU).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seconds to let open connections finish after SIGTERM/SIGINT.
    #[arg(long, default_value_t = 5)]
    pub shutdown_grace: u64,
}

/// `portcullis validate`.
#[derive(Debug, Clone, Args)]
pub struct ValidateArgs {
    /// Files or directories of Kubernetes YAML.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Translation settings.
    #[command(flatten)]
    pub translate: TranslateArgs,
}

/// `portcullis routes`.
#[derive(Debug, Clone, Args)]
pub struct RoutesArgs {
    /// Files or directories of Kubernetes YAML.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Translation settings.
    #[command(flatten)]
    pub translate: TranslateArgs,
}
