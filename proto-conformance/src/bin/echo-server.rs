//! `echo-server`: runs one or more mimics of the Gateway API conformance echo backend (`echo-basic`) until
//! SIGINT or SIGTERM. See `--help`.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context as _};
use proto_conformance::echo::dns::{DnsConfig, DnsServer};
use proto_conformance::echo::grpc::{GrpcEchoConfig, GrpcEchoServer};
use proto_conformance::echo::tcp::{TcpEchoConfig, TcpEchoServer};
use proto_conformance::echo::udp::{UdpEchoConfig, UdpEchoServer};
use proto_conformance::echo::{EchoConfig, EchoServer, EchoTls, PodIdentity};

const HELP: &str = "\
echo-server: mimic of the Gateway API conformance echo backend echo-basic (gateway-api-conformance-images v0.1.0)

USAGE:
    echo-server [--log] [BACKEND OPTIONS] [--listen ADDR [BACKEND OPTIONS]]...

Each --listen starts a new backend (one echo-basic pod) with its own main listener; the backend options that
follow it, up to the next --listen, apply to that backend only. Backend options given before the first --listen
are defaults for every backend. All backends run in this one process until SIGINT or SIGTERM.

A backend's --mode picks what it serves (echo-basic picks it by environment variable):
    http   (default) the HTTP echo: --listen is HTTP/1.1, --h2c-listen h2c, --https-listen HTTPS
    grpc   (GRPC_ECHO_SERVER) the GrpcEcho service: --listen is h2c, --https-listen gRPC over TLS
    tcp    (TCP_ECHO_SERVER) the TCP line dialogue: --listen is plain TCP, --https-listen TLS
    udp    (UDP_ECHO_SERVER) the UDP JSON echo: --listen is a UDP socket
    dns    not echo-basic: a stand-in for the CoreDNS 'whoami' pod of the UDPRoute test; --listen is a UDP
           socket, --dns-zone ZONE (repeatable) the zones it answers (others get REFUSED)

With no --listen at all, echo-server behaves like echo-basic itself: GRPC_ECHO_SERVER, TCP_ECHO_SERVER or
UDP_ECHO_SERVER (non-empty) select the mode (in that order), otherwise HTTP. It reads POD_NAME, NAMESPACE,
INGRESS_NAME, SERVICE_NAME and, per mode:
    http   HTTP_PORT (default 3000), H2C_PORT (default 3001), HTTPS_PORT (default 8443, served only when
           TLS_SERVER_CERT and TLS_SERVER_PRIVKEY name PEM files; TLS_CLIENT_CACERTS optionally names client CAs)
    grpc   HTTP_PORT (default 3000), HTTPS_PORT (default 8443, served only when TLS_SERVER_CERT and
           TLS_SERVER_PRIV_KEY name PEM files)
    tcp    TCP_PORT (default 3000), TLS_PORT (default 8443, served only when TLS_SERVER_CERT and
           TLS_SERVER_PRIV_KEY name PEM files)
    udp    UDP_PORT (default 8080)
It listens on all interfaces and prints echo-basic's log lines.

OPTIONS:
    --log                  Print echo-basic's stdout lines ('Starting server, listening on port N (http)',
                           'Echoing back request made to <RequestURI> to client (<addr>)', ...)
    -h, --help             Print this help

BACKEND OPTIONS:
    --listen ADDR          main listener (see --mode), e.g. 127.0.0.1:9101 (port 0 = any free port); starts
                           a backend
    --mode MODE            http (default), grpc, tcp, udp or dns
    --dns-zone ZONE        dns mode: a zone answered with 'whoami' (repeatable)
    --pod NAME             Pod name reported as \"pod\" (POD_NAME)
    --namespace NS         Namespace reported as \"namespace\" (NAMESPACE)
    --ingress NAME         Reported as \"ingress\" (INGRESS_NAME), default empty
    --service NAME         Reported as \"service\" (SERVICE_NAME), default empty
    --h2c-listen ADDR      http mode: h2c listener (H2C_PORT): HTTP/2 prior knowledge, 400 to plain HTTP/1
    --https-listen ADDR    TLS listener (HTTPS_PORT; TLS_PORT in tcp mode); needs --tls-cert and --tls-key
    --tls-cert FILE        PEM server certificate chain (TLS_SERVER_CERT)
    --tls-key FILE         PEM server private key (TLS_SERVER_PRIVKEY; TLS_SERVER_PRIV_KEY in grpc/tcp mode)
    --tls-client-ca FILE   PEM CAs to verify client certificates against, if a client sends one
                           (TLS_CLIENT_CACERTS)

Options take their value as the next argument or after '=' (--pod=demo-v1-abc-def).

When every backend is listening, one line per backend is printed to stderr, the main listener named after the
mode (http=, grpc=, tcp=, udp=, dns=):
    echo-server: ready pod=<pod> namespace=<ns> http=<addr> [h2c=<addr>] [https=<addr>]
    echo-server: ready pod=<pod> namespace=<ns> tcp=<addr> [tls=<addr>]

EXAMPLE:
    echo-server --namespace default \\
        --listen 127.0.0.1:9101 --pod demo-v1-5d7c9b8f4-abcde --h2c-listen 127.0.0.1:9111 \\
        --listen 127.0.0.1:9102 --pod demo-v2-6c8d9e7f5-fghij \\
        --listen 127.0.0.1:9103 --mode tcp --pod tcp-v1-7d8e9f0a1-klmno \\
        --listen 127.0.0.1:9104 --mode udp --pod udp-v1-8e9f0a1b2-pqrst
";

/// What a backend serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Http,
    Grpc,
    Tcp,
    Udp,
    Dns,
}

impl Mode {
    fn parse(s: &str) -> anyhow::Result<Mode> {
        Ok(match s {
            "http" => Mode::Http,
            "grpc" => Mode::Grpc,
            "tcp" => Mode::Tcp,
            "udp" => Mode::Udp,
            "dns" => Mode::Dns,
            other => bail!("--mode: '{other}' is not one of http, grpc, tcp, udp, dns"),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Http => "http",
            Mode::Grpc => "grpc",
            Mode::Tcp => "tcp",
            Mode::Udp => "udp",
            Mode::Dns => "dns",
        }
    }
}

/// Backend options; `None` = not given at this level.
#[derive(Clone, Default)]
struct BackendArgs {
    listen: Option<SocketAddr>,
    mode: Option<Mode>,
    dns_zones: Vec<String>,
    pod: Option<String>,
    namespace: Option<String>,
    ingress: Option<String>,
    service: Option<String>,
    h2c_listen: Option<SocketAddr>,
    https_listen: Option<SocketAddr>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    tls_client_ca: Option<String>,
}

impl BackendArgs {
    /// `self` with unset options taken from `defaults`.
    fn or(self, defaults: &BackendArgs) -> BackendArgs {
        BackendArgs {
            listen: self.listen.or(defaults.listen),
            mode: self.mode.or(defaults.mode),
            dns_zones: if self.dns_zones.is_empty() {
                defaults.dns_zones.clone()
            } else {
                self.dns_zones
            },
            pod: self.pod.or_else(|| defaults.pod.clone()),
            namespace: self.namespace.or_else(|| defaults.namespace.clone()),
            ingress: self.ingress.or_else(|| defaults.ingress.clone()),
            service: self.service.or_else(|| defaults.service.clone()),
            h2c_listen: self.h2c_listen.or(defaults.h2c_listen),
            https_listen: self.https_listen.or(defaults.https_listen),
            tls_cert: self.tls_cert.or_else(|| defaults.tls_cert.clone()),
            tls_key: self.tls_key.or_else(|| defaults.tls_key.clone()),
            tls_client_ca: self
                .tls_client_ca
                .or_else(|| defaults.tls_client_ca.clone()),
        }
    }
}

struct Args {
    log: bool,
    backends: Vec<BackendArgs>,
}

enum Parsed {
    Help,
    Run(Args),
}

fn parse_addr(flag: &str, value: &str) -> anyhow::Result<SocketAddr> {
    value
        .parse()
        .with_context(|| format!("{flag}: '{value}' is not an IP:port address"))
}

fn set<T>(slot: &mut Option<T>, flag: &str, value: T) -> anyhow::Result<()> {
    if slot.is_some() {
        bail!("{flag} given twice for the same backend");
    }
    *slot = Some(value);
    Ok(())
}

fn parse_args(args: impl IntoIterator<Item = String>) -> anyhow::Result<Parsed> {
    let mut args = args.into_iter();
    let mut log = false;
    let mut defaults = BackendArgs::default();
    let mut backends: Vec<BackendArgs> = Vec::new();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--log" => {
                if inline.is_some() {
                    bail!("--log takes no value");
                }
                log = true;
                continue;
            }
            _ => {}
        }
        let mut value = || -> anyhow::Result<String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => args.next().ok_or_else(|| anyhow!("{flag} needs a value")),
            }
        };
        if flag == "--listen" {
            let addr = parse_addr(&flag, &value()?)?;
            backends.push(BackendArgs {
                listen: Some(addr),
                ..BackendArgs::default()
            });
            continue;
        }
        let target = backends.last_mut().unwrap_or(&mut defaults);
        match flag.as_str() {
            "--pod" => set(&mut target.pod, &flag, value()?)?,
            "--mode" => {
                let mode = Mode::parse(&value()?)?;
                set(&mut target.mode, &flag, mode)?
            }
            "--dns-zone" => target.dns_zones.push(value()?),
            "--namespace" => set(&mut target.namespace, &flag, value()?)?,
            "--ingress" => set(&mut target.ingress, &flag, value()?)?,
            "--service" => set(&mut target.service, &flag, value()?)?,
            "--h2c-listen" => {
                let addr = parse_addr(&flag, &value()?)?;
                set(&mut target.h2c_listen, &flag, addr)?
            }
            "--https-listen" => {
                let addr = parse_addr(&flag, &value()?)?;
                set(&mut target.https_listen, &flag, addr)?
            }
            "--tls-cert" => set(&mut target.tls_cert, &flag, value()?)?,
            "--tls-key" => set(&mut target.tls_key, &flag, value()?)?,
            "--tls-client-ca" => set(&mut target.tls_client_ca, &flag, value()?)?,
            _ => bail!("unknown argument '{arg}' (see --help)"),
        }
    }
    if backends.is_empty() {
        if defaults.h2c_listen.is_some() || defaults.https_listen.is_some() {
            bail!("--h2c-listen/--https-listen need a --listen before them");
        }
        return Ok(Parsed::Run(Args {
            log: true,
            backends: vec![env_backend(defaults)?],
        }));
    }
    if defaults.h2c_listen.is_some() || defaults.https_listen.is_some() {
        bail!("--h2c-listen/--https-listen must follow the --listen of their backend");
    }
    let backends = backends.into_iter().map(|b| b.or(&defaults)).collect();
    Ok(Parsed::Run(Args { log, backends }))
}

/// echo-basic's environment configuration, with command-line values taking precedence.
fn env_backend(cli: BackendArgs) -> anyhow::Result<BackendArgs> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let port = |name: &str, default: u16| -> anyhow::Result<SocketAddr> {
        let port = match env(name) {
            Some(p) => p
                .parse::<u16>()
                .with_context(|| format!("{name}: '{p}' is not a port"))?,
            None => default,
        };
        Ok(SocketAddr::from(([0, 0, 0, 0], port)))
    };
    let mode = cli.mode.unwrap_or(if env("GRPC_ECHO_SERVER").is_some() {
        Mode::Grpc
    } else if env("TCP_ECHO_SERVER").is_some() {
        Mode::Tcp
    } else if env("UDP_ECHO_SERVER").is_some() {
        Mode::Udp
    } else {
        Mode::Http
    });
    // echo-basic's HTTP server reads TLS_SERVER_PRIVKEY, its gRPC and TCP servers TLS_SERVER_PRIV_KEY.
    let key_var = if mode == Mode::Http {
        "TLS_SERVER_PRIVKEY"
    } else {
        "TLS_SERVER_PRIV_KEY"
    };
    let tls = env("TLS_SERVER_CERT").is_some() && env(key_var).is_some();
    let (listen, tls_port) = match mode {
        Mode::Http | Mode::Grpc => (port("HTTP_PORT", 3000)?, port("HTTPS_PORT", 8443)?),
        Mode::Tcp => (port("TCP_PORT", 3000)?, port("TLS_PORT", 8443)?),
        Mode::Udp => (port("UDP_PORT", 8080)?, port("HTTPS_PORT", 8443)?),
        Mode::Dns => (
            SocketAddr::from(([0, 0, 0, 0], 53)),
            port("HTTPS_PORT", 8443)?,
        ),
    };
    let from_env = BackendArgs {
        listen: Some(listen),
        mode: Some(mode),
        dns_zones: Vec::new(),
        pod: env("POD_NAME"),
        namespace: env("NAMESPACE"),
        ingress: env("INGRESS_NAME"),
        service: env("SERVICE_NAME"),
        h2c_listen: if mode == Mode::Http {
            Some(port("H2C_PORT", 3001)?)
        } else {
            None
        },
        https_listen: (tls && matches!(mode, Mode::Http | Mode::Grpc | Mode::Tcp))
            .then_some(tls_port),
        tls_cert: env("TLS_SERVER_CERT"),
        tls_key: env(key_var),
        tls_client_ca: if mode == Mode::Http {
            env("TLS_CLIENT_CACERTS")
        } else {
            None
        },
    };
    Ok(cli.or(&from_env))
}

fn read(path: &str, what: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {what} {path}"))
}

/// One configured backend.
enum BackendConfig {
    Http(EchoConfig),
    Grpc(GrpcEchoConfig),
    Tcp(TcpEchoConfig),
    Udp(UdpEchoConfig),
    Dns(DnsConfig),
}

/// A running backend.
enum Running {
    Http(EchoServer),
    Grpc(GrpcEchoServer),
    Tcp(TcpEchoServer),
    Udp(UdpEchoServer),
    Dns(DnsServer),
}

fn config(b: BackendArgs, log: bool) -> anyhow::Result<BackendConfig> {
    let addr = b
        .listen
        .ok_or_else(|| anyhow!("a backend has no --listen"))?;
    let mode = b.mode.unwrap_or(Mode::Http);
    if mode != Mode::Http && b.h2c_listen.is_some() {
        bail!("--h2c-listen is only for --mode http");
    }
    if matches!(mode, Mode::Udp | Mode::Dns) && b.https_listen.is_some() {
        bail!("--https-listen is not for --mode {}", mode.name());
    }
    if mode != Mode::Dns && !b.dns_zones.is_empty() {
        bail!("--dns-zone is only for --mode dns");
    }
    let tls = match b.https_listen {
        None => None,
        Some(tls_addr) => {
            let (Some(cert), Some(key)) = (&b.tls_cert, &b.tls_key) else {
                bail!("--https-listen {tls_addr} needs --tls-cert and --tls-key");
            };
            Some(EchoTls {
                addr: tls_addr,
                cert_pem: read(cert, "TLS certificate")?,
                key_pem: read(key, "TLS private key")?,
                client_ca_pem: b
                    .tls_client_ca
                    .as_deref()
                    .map(|p| read(p, "client CA"))
                    .transpose()?,
            })
        }
    };
    let identity = PodIdentity {
        pod_name: b.pod.unwrap_or_default(),
        namespace: b.namespace.unwrap_or_default(),
        ingress_name: b.ingress.unwrap_or_default(),
        service_name: b.service.unwrap_or_default(),
    };
    Ok(match mode {
        Mode::Http => BackendConfig::Http(EchoConfig {
            pod_name: identity.pod_name,
            namespace: identity.namespace,
            ingress_name: identity.ingress_name,
            service_name: identity.service_name,
            http_addr: addr,
            h2c_addr: b.h2c_listen,
            https: tls,
            log_to_stdout: log,
        }),
        Mode::Grpc => BackendConfig::Grpc(GrpcEchoConfig {
            identity,
            addr,
            tls,
            log_to_stdout: log,
        }),
        Mode::Tcp => BackendConfig::Tcp(TcpEchoConfig {
            identity,
            addr,
            tls,
            log_to_stdout: log,
        }),
        Mode::Udp => BackendConfig::Udp(UdpEchoConfig {
            identity,
            addr,
            log_to_stdout: log,
        }),
        Mode::Dns => {
            if b.dns_zones.is_empty() {
                bail!("--mode dns needs at least one --dns-zone");
            }
            BackendConfig::Dns(DnsConfig {
                addr,
                zones: b.dns_zones,
                log_to_stdout: log,
            })
        }
    })
}

async fn wait_for_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut servers = Vec::new();
    for backend in args.backends {
        let (pod, namespace) = (
            backend.pod.clone().unwrap_or_default(),
            backend.namespace.clone().unwrap_or_default(),
        );
        let running = match config(backend, args.log)? {
            BackendConfig::Http(c) => Running::Http(EchoServer::start(c).await?),
            BackendConfig::Grpc(c) => Running::Grpc(GrpcEchoServer::start(c).await?),
            BackendConfig::Tcp(c) => Running::Tcp(TcpEchoServer::start(c).await?),
            BackendConfig::Udp(c) => Running::Udp(UdpEchoServer::start(c).await?),
            BackendConfig::Dns(c) => Running::Dns(DnsServer::start(c).await?),
        };
        servers.push((pod, namespace, running));
    }
    for (pod, namespace, s) in &servers {
        // The main listener is named after the mode (`http=`, `grpc=`, `tcp=`, `udp=`, `dns=`).
        let (mode, listen, h2c, tls) = match s {
            Running::Http(s) => ("http", s.http_addr(), s.h2c_addr(), s.https_addr()),
            Running::Grpc(s) => ("grpc", s.addr(), None, s.tls_addr()),
            Running::Tcp(s) => ("tcp", s.addr(), None, s.tls_addr()),
            Running::Udp(s) => ("udp", s.addr(), None, None),
            Running::Dns(s) => ("dns", s.addr(), None, None),
        };
        let mut line =
            format!("echo-server: ready pod={pod} namespace={namespace} {mode}={listen}");
        if let Some(a) = h2c {
            line.push_str(&format!(" h2c={a}"));
        }
        if let Some(a) = tls {
            let key = if mode == "http" { "https" } else { "tls" };
            line.push_str(&format!(" {key}={a}"));
        }
        eprintln!("{line}");
    }
    wait_for_signal().await?;
    for (_, _, s) in servers {
        match s {
            Running::Http(s) => s.shutdown_and_wait().await,
            Running::Grpc(s) => s.shutdown_and_wait().await,
            Running::Tcp(s) => s.shutdown_and_wait().await,
            Running::Udp(s) => s.shutdown_and_wait().await,
            Running::Dns(s) => s.shutdown_and_wait().await,
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Parsed::Help) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Run(args)) => args,
        Err(e) => {
            eprintln!("echo-server: {e:#}\n(see echo-server --help)");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("echo-server: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}
