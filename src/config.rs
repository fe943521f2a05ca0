//! Process settings: the command line. Nothing here describes routes; routes come from Kubernetes objects.

use crate::proxy::edge::{EdgeSettings, UnderscoreHeaders};
use crate::proxy::path::EscapedSlashes;
use crate::translate::nginx::{
    NginxOptions, Settings, DEFAULT_ANNOTATIONS_PREFIX, INGRESS_NGINX_CONTROLLER,
};
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
    Run(Box<RunArgs>),
    /// Check manifests: print every error and warning with its location; exit 1 if there are errors.
    Validate(ValidateArgs),
    /// Print the compiled routing table for the given manifests.
    Routes(RoutesArgs),
    /// Compare two configurations request by request: `equivalent`, or counter-example requests with what each
    /// configuration does with them (exit 1).
    Diff(DiffArgs),
    /// Turn Ingresses into Gateway API objects (a Gateway, HTTPRoutes, ReferenceGrants), report every rule, and
    /// prove the result routes like the input (exit 1 when it does not).
    Migrate(MigrateArgs),
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
    /// Prefix of ingress-nginx annotations (both profiles), as ingress-nginx's own `--annotations-prefix`.
    #[arg(long, default_value = DEFAULT_ANNOTATIONS_PREFIX, value_name = "PREFIX")]
    pub annotations_prefix: String,
    /// Take over the Ingresses of this ingress-nginx IngressClass (repeatable): its IngressClass must have
    /// `spec.controller` equal to --ingress-nginx-controller; Ingresses naming it in the legacy
    /// `kubernetes.io/ingress.class` annotation are taken over too. They get ingress-nginx's defaults.
    #[arg(long = "ingress-nginx-class", value_name = "NAME")]
    pub ingress_nginx_classes: Vec<String>,
    /// `spec.controller` of the ingress-nginx IngressClasses taken over.
    #[arg(long, default_value = INGRESS_NGINX_CONTROLLER, value_name = "CONTROLLER")]
    pub ingress_nginx_controller: String,
    /// The ingress-nginx ConfigMap whose keys set the taken-over Ingresses' defaults (read from the manifests, or
    /// from the cluster in Kubernetes mode, and followed when it changes).
    #[arg(long, value_name = "NS/NAME", value_parser = parse_ns_name)]
    pub ingress_nginx_configmap: Option<String>,
    /// Set one ingress-nginx ConfigMap key for the taken-over Ingresses (repeatable; wins over the ConfigMap):
    /// ssl-redirect, force-ssl-redirect, preserve-trailing-slash, http-redirect-code, proxy-body-size,
    /// proxy-connect-timeout, proxy-read-timeout, proxy-send-timeout, use-forwarded-headers,
    /// allow-snippet-annotations, limit-req-status-code, limit-conn-status-code, whitelist-source-range,
    /// denylist-source-range.
    #[arg(long = "ingress-nginx-set", value_name = "KEY=VALUE", value_parser = parse_nginx_setting)]
    pub ingress_nginx_settings: Vec<(String, String)>,
}

fn parse_ns_name(s: &str) -> Result<String, String> {
    match s.split_once('/') {
        Some((ns, n)) if !ns.is_empty() && !n.is_empty() && !n.contains('/') => Ok(s.to_string()),
        _ => Err(format!("{s:?}: expected NAMESPACE/NAME")),
    }
}

fn parse_nginx_setting(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected KEY=VALUE"))?;
    match Settings::ingress_nginx().set(k, v) {
        Ok(true) => Ok((k.to_string(), v.to_string())),
        Ok(false) => Err(format!("{k}: not a key Portcullis understands")),
        Err(e) => Err(format!("{k}={v}: {e}")),
    }
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
            nginx: NginxOptions {
                annotations_prefix: self.annotations_prefix.trim_end_matches('/').to_string(),
                classes: self.ingress_nginx_classes.clone(),
                controller: self.ingress_nginx_controller.clone(),
                config_map: self.ingress_nginx_configmap.clone(),
                overrides: self.ingress_nginx_settings.clone(),
            },
        }
    }
}

/// `portcullis run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Files or directories of Kubernetes YAML (`*.yaml`, `*.yml`, searched recursively), watched for changes.
    #[arg(long, num_args = 1.., required_unless_present = "kubernetes", value_name = "PATH")]
    pub manifests: Vec<PathBuf>,
    /// Kubernetes mode: watch the API server instead of reading manifests.
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Translation settings.
    #[command(flatten)]
    pub translate: TranslateArgs,
    /// Added to every port the proxy binds (Ingress ports and Gateway listener ports alike), for tests and
    /// non-root runs.
    #[arg(long, default_value_t = 0)]
    pub port_offset: u16,
    /// Address of the admin API (/healthz, /readyz, /metrics, /config, /status, ...).
    #[arg(long, default_value = "127.0.0.1:9901")]
    pub admin_addr: SocketAddr,
    /// Address of the health port, serving only /healthz, /readyz and /metrics (for kubelet probes and
    /// Prometheus on the pod IP). Off when not given.
    #[arg(long, value_name = "ADDR")]
    pub health_addr: Option<SocketAddr>,
    /// IP address the proxy listeners bind.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// Data-plane worker threads (default: one per CPU).
    #[arg(long)]
    pub threads: Option<usize>,
    /// TLS session resumption on HTTPS and TLS listeners: `on` (a session cache and two TLS 1.3 tickets after each
    /// full handshake) or `off` (every handshake is a full one).
    #[arg(long, value_enum, default_value_t = crate::tls::Resumption::On, value_name = "on|off")]
    pub tls_resumption: crate::tls::Resumption,
    /// Seconds the listeners keep accepting after SIGTERM while /readyz answers 503, so load balancers take this
    /// instance out before it stops accepting (SIGINT skips it).
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    pub shutdown_delay: u64,
    /// Seconds to let open connections finish once the listeners are closed.
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    pub shutdown_grace: u64,
    /// Limits and checks at the edge (docs/hardening.md).
    #[command(flatten)]
    pub edge: EdgeArgs,
    /// Seconds a TCPRoute or TLSRoute connection may go without a byte either way before it is closed.
    #[arg(long, default_value_t = 3600, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub tcp_idle_timeout: u64,
    /// Seconds a UDPRoute client flow may go without a datagram either way before it is forgotten.
    #[arg(long, default_value_t = 60, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub udp_idle_timeout: u64,
    /// The most client flows one UDP listener keeps; datagrams that would start another are dropped and counted.
    #[arg(long, default_value_t = 65536, value_name = "FLOWS", value_parser = clap::value_parser!(u64).range(1..))]
    pub udp_max_flows: u64,
    /// Request metrics, access logs and the Server header.
    #[command(flatten)]
    pub observe: ObserveArgs,
}

/// What the data plane reports about requests (docs/observability.md).
#[derive(Debug, Clone, Args)]
pub struct ObserveArgs {
    /// Labels of the per-request metrics: `none` (listener only), `route` (and the route's kind, namespace and
    /// name), `route+backend` (and the backend Service port). Each step multiplies the series. `off` records
    /// none (to measure what they cost).
    #[arg(long, value_enum, default_value_t = crate::metrics::request::LabelMode::Route, value_name = "LABELS")]
    pub metrics_labels: crate::metrics::request::LabelMode,
    /// Access log on stdout: `off`, `json` (one object per line) or `text` (ingress-nginx's upstream format).
    #[arg(long, value_enum, default_value_t = crate::proxy::observe::AccessLogFormat::Off, value_name = "FORMAT")]
    pub access_log: crate::proxy::observe::AccessLogFormat,
    /// Log paths with their query string (off by default: queries often carry tokens).
    #[arg(long)]
    pub access_log_query: bool,
    /// Access-log lines that may wait for the writer; when full, lines are dropped and counted
    /// (`portcullis_access_log_dropped_total`) rather than slowing requests down.
    #[arg(long, default_value_t = 16384, value_name = "LINES")]
    pub access_log_buffer: usize,
    /// `Server` header of responses that carry none (local replies, and upstream responses without one): a
    /// name, or `off`.
    #[arg(long, default_value = "portcullis", value_name = "NAME|off")]
    pub server_header: String,
}

/// The limits of the edge (`docs/hardening.md`: each limit, its default and why). Sizes take a `k` or `m`
/// suffix (1024, 1024 * 1024), as nginx's do.
#[derive(Debug, Clone, Args)]
pub struct EdgeArgs {
    /// Longest HTTP/1 request line (HTTP/2: `:path`); longer gets 414.
    #[arg(long, default_value = "8k", value_name = "BYTES", value_parser = parse_size)]
    pub max_request_line: u64,
    /// Largest HTTP/1 request head (HTTP/2: header list); larger gets 431.
    #[arg(long, default_value = "60k", value_name = "BYTES", value_parser = parse_size)]
    pub max_request_headers: u64,
    /// Most header fields in a request; more gets 431.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub max_header_count: usize,
    /// Largest request body (streamed bodies are counted as they arrive); larger gets 413. 0: no limit.
    #[arg(long, default_value = "1m", value_name = "BYTES", value_parser = parse_size)]
    pub max_request_body: u64,
    /// The most any request body may be, whatever a rule's `proxy-body-size` (its `0` included) or
    /// `--max-request-body` allow; larger gets 413. 0: no ceiling.
    #[arg(long, default_value = "0", value_name = "BYTES", value_parser = parse_size)]
    pub max_request_body_ceiling: u64,
    /// Seconds a request head may take (from the accept for the first request, TLS handshake included; from
    /// its first byte for later ones).
    #[arg(long, default_value = "60", value_name = "SECONDS", value_parser = parse_seconds)]
    pub header_timeout: std::time::Duration,
    /// Seconds a kept-alive connection may wait for its next request (HTTP/2: stay without streams).
    #[arg(long, default_value = "75", value_name = "SECONDS", value_parser = parse_seconds)]
    pub idle_timeout: std::time::Duration,
    /// Most connections open at once on one listener; more are closed at once. 0: no limit.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub max_connections_per_listener: usize,
    /// Most requests on one HTTP/1 connection before it is closed. 0: no limit.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub max_requests_per_connection: u32,
    /// HTTP/2 concurrent streams per connection.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 streams reset by the client before they were accepted, queued at most (rapid reset).
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub h2_max_pending_reset_streams: usize,
    /// HTTP/2 streams reset for the client's protocol errors before the connection is closed.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub h2_max_local_error_resets: usize,
    /// HTTP/2 streams a connection opens before it is closed if most were cancelled within a second (rapid
    /// reset). 0: never.
    #[arg(long, default_value_t = 500, value_name = "N")]
    pub h2_rapid_reset_streams: u64,
    /// `%2F`, `%5C` and `\` in paths: keep, reject (400), unescape (to `/`), or unescape-and-redirect (307).
    #[arg(long, default_value = "unescape-and-redirect", value_name = "ACTION")]
    pub escaped_slashes: EscapedSlashes,
    /// Request headers whose name contains `_`: allow (forward), drop (remove, as nginx does), or reject (400).
    #[arg(long, value_enum, default_value_t = UnderscoreHeaders::Drop, value_name = "ACTION")]
    pub underscore_headers: UnderscoreHeaders,
    /// HTTP/1.1 Upgrade protocols forwarded to backends, comma-separated (`*`: any but h2c, which is never
    /// forwarded). Other upgrades go as plain requests.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "websocket",
        value_name = "PROTOCOLS"
    )]
    pub upgrade_protocols: Vec<String>,
}

/// A size in bytes: digits with an optional `k` (KiB) or `m` (MiB) suffix.
fn parse_size(s: &str) -> Result<u64, String> {
    let (digits, unit) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1024),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 1),
    };
    let n: u64 = digits
        .parse()
        .map_err(|e| format!("{s:?}: {e} (expected bytes, e.g. 8192, 8k or 1m)"))?;
    n.checked_mul(unit)
        .ok_or_else(|| format!("{s:?}: too large"))
}

impl EdgeArgs {
    /// The edge settings these flags describe.
    pub fn settings(&self) -> Result<EdgeSettings, String> {
        let size = |flag: &str, v: u64| {
            usize::try_from(v)
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("--{flag} {v}: expected 1 to {} bytes", usize::MAX))
        };
        Ok(EdgeSettings {
            max_request_line: size("max-request-line", self.max_request_line)?,
            max_request_headers: size("max-request-headers", self.max_request_headers)?,
            max_header_count: self.max_header_count,
            max_body: (self.max_request_body > 0).then_some(self.max_request_body),
            max_body_ceiling: (self.max_request_body_ceiling > 0)
                .then_some(self.max_request_body_ceiling),
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections_per_listener,
            max_requests_per_connection: self.max_requests_per_connection,
            h2_max_concurrent_streams: self.h2_max_concurrent_streams,
            h2_max_pending_reset_streams: self.h2_max_pending_reset_streams,
            h2_max_local_error_resets: self.h2_max_local_error_resets,
            h2_rapid_reset_streams: self.h2_rapid_reset_streams,
            escaped_slashes: self.escaped_slashes,
            underscore_headers: self.underscore_headers,
            upgrade_protocols: self.upgrade_protocols()?,
        })
    }

    /// `--upgrade-protocols`, lowercased and checked: tokens (RFC 9110 §7.8 protocol names) or `*`, never h2c.
    fn upgrade_protocols(&self) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        for p in &self.upgrade_protocols {
            let p = p.trim().to_ascii_lowercase();
            if p == "h2c" {
                return Err("--upgrade-protocols h2c: never forwarded (a connection upgraded to HTTP/2 \
                            cleartext reaches the backend past routing and every check: h2c smuggling)"
                    .into());
            }
            // A protocol name is a token, optionally `/version`.
            let token = |b: u8| b == b'/' || crate::translate::is_token_byte(b);
            if p.is_empty() || !p.bytes().all(token) {
                return Err(format!(
                    "--upgrade-protocols {p:?}: expected protocol names (e.g. websocket) or *"
                ));
            }
            out.push(p);
        }
        Ok(out)
    }
}

/// Kubernetes mode: `portcullis run --kubernetes ...`.
#[derive(Debug, Clone, Args)]
pub struct KubeArgs {
    /// Watch the Kubernetes API (Ingress and Gateway API objects) instead of reading manifests.
    #[arg(long, conflicts_with = "manifests")]
    pub kubernetes: bool,
    /// Kubeconfig file (default: in-cluster configuration, else KUBECONFIG or ~/.kube/config, as kubectl).
    #[arg(long, requires = "kubernetes", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Our namespace, where the leader Lease lives (default: the pod's namespace, or the kubeconfig context's).
    #[arg(long, requires = "kubernetes", value_name = "NS")]
    pub namespace: Option<String>,
    /// Watch namespaced objects only in these namespaces (default: all namespaces).
    #[arg(long, num_args = 1.., requires = "kubernetes", value_name = "NS")]
    pub watch_namespace: Vec<String>,
    /// Elect one leader (Lease `portcullis-leader`) to write status; with `--leader-elect=false` this process
    /// always writes status.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true",
          action = clap::ArgAction::Set, value_name = "BOOL")]
    pub leader_elect: bool,
    /// Publish the addresses of this Service (its load balancer) in Ingress and Gateway status.
    #[arg(
        long,
        requires = "kubernetes",
        conflicts_with = "publish_status_address",
        value_name = "NS/NAME"
    )]
    pub publish_service: Option<String>,
    /// Publish these addresses (IPs or host names) in Ingress and Gateway status.
    #[arg(long, num_args = 1.., requires = "kubernetes", value_name = "ADDRESS")]
    pub publish_status_address: Vec<String>,
    /// Seconds between checks for Gateway API CRDs installed (or removed) at run time.
    #[arg(long, default_value = "10", value_name = "SECONDS", value_parser = parse_seconds)]
    pub discovery_interval: std::time::Duration,
}

fn parse_seconds(s: &str) -> Result<std::time::Duration, String> {
    let secs: f64 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if !(0.05..=86400.0).contains(&secs) {
        return Err(format!("{s}: expected 0.05 to 86400 seconds"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

impl KubeArgs {
    /// The settings of the Kubernetes source these flags describe.
    pub fn settings(
        &self,
        translate: &TranslateArgs,
    ) -> Result<crate::source::kube::Settings, String> {
        use crate::source::kube::status::Publish;
        let publish = match (&self.publish_service, &self.publish_status_address) {
            (Some(svc), _) => {
                let (namespace, name) = svc
                    .split_once('/')
                    .filter(|(ns, n)| !ns.is_empty() && !n.is_empty() && !n.contains('/'))
                    .ok_or_else(|| format!("--publish-service {svc:?}: expected NAMESPACE/NAME"))?;
                Publish::Service {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                }
            }
            (None, a) if !a.is_empty() => Publish::Addresses(a.clone()),
            _ => Publish::None,
        };
        Ok(crate::source::kube::Settings {
            kubeconfig: self.kubeconfig.clone(),
            namespace: self.namespace.clone(),
            watch_namespaces: self.watch_namespace.clone(),
            leader_elect: self.leader_elect,
            publish,
            discovery_interval: self.discovery_interval,
            lease: Default::default(),
            ingress_controller: translate.ingress_controller.clone(),
            gateway_controller: translate.gateway_controller.clone(),
            nginx_config_map: translate.ingress_nginx_configmap.as_ref().and_then(|c| {
                c.split_once('/')
                    .map(|(ns, n)| (ns.to_string(), n.to_string()))
            }),
        })
    }
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

/// `portcullis diff OLD... -- NEW...`.
#[derive(Debug, Clone, Args)]
pub struct DiffArgs {
    /// Files or directories of the old configuration.
    #[arg(required = true, value_name = "OLD")]
    pub old: Vec<PathBuf>,
    /// Files or directories of the new configuration (after `--`).
    #[arg(last = true, required = true, value_name = "NEW")]
    pub new: Vec<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Counter-examples listed per host (the others are counted).
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub max_examples: usize,
    /// Translation settings (both configurations).
    #[command(flatten)]
    pub translate: TranslateArgs,
}

/// `portcullis migrate PATH... [--gateway NS/NAME] [--only HOST[/PATH]]... [--out DIR]`.
#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// Files or directories of Kubernetes YAML (the Ingresses and everything they refer to).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// The Gateway to create (or reuse, when it is among the input) and attach the HTTPRoutes to.
    #[arg(long, default_value = "default/portcullis", value_name = "NS/NAME", value_parser = parse_ns_name)]
    pub gateway: String,
    /// Move only this host, or only the paths of this host starting with PATH (repeatable); default: everything.
    #[arg(long = "only", value_name = "HOST[/PATH]")]
    pub only: Vec<String>,
    /// Write the whole routing configuration after the step here: the generated objects and the Ingresses,
    /// trimmed to the rules that stay (`ingresses.yaml`, `gateway.yaml`, `httproutes.yaml`,
    /// `referencegrants.yaml`), plus the other input objects (`other.yaml`).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Translation settings.
    #[command(flatten)]
    pub translate: TranslateArgs,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_flag_defaults_are_the_documented_settings() {
        let cli = Cli::parse_from(["portcullis", "run", "--manifests", "x"]);
        let Command::Run(args) = cli.command else {
            panic!("not run");
        };
        assert_eq!(args.edge.settings(), Ok(EdgeSettings::default()));
    }

    #[test]
    fn sizes_take_suffixes() {
        assert_eq!(parse_size("8192"), Ok(8192));
        assert_eq!(parse_size("8k"), Ok(8192));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("0"), Ok(0));
        assert!(parse_size("1g").is_err());
        assert!(parse_size("k").is_err());
        assert!(parse_size("99999999999999999999m").is_err());
    }

    #[test]
    fn edge_flags_reach_the_settings() {
        let cli = Cli::parse_from([
            "portcullis",
            "run",
            "--manifests",
            "x",
            "--max-request-body",
            "0",
            "--escaped-slashes",
            "reject",
            "--header-timeout",
            "2.5",
        ]);
        let Command::Run(args) = cli.command else {
            panic!("not run");
        };
        let s = args.edge.settings().unwrap();
        assert_eq!(s.max_body, None);
        assert_eq!(s.escaped_slashes, EscapedSlashes::Reject);
        assert_eq!(s.header_timeout, std::time::Duration::from_millis(2500));
        let bad = Cli::try_parse_from([
            "portcullis",
            "run",
            "--manifests",
            "x",
            "--escaped-slashes",
            "maybe",
        ]);
        assert!(bad.is_err());
    }
}
