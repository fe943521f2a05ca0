//! `echo-server`: runs one or more mimics of the Gateway API conformance echo backend (`echo-basic`) until
//! SIGINT or SIGTERM. See `--help`.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context as _};
use proto_conformance::echo::{EchoConfig, EchoServer, EchoTls};

const HELP: &str = "\
echo-server: mimic of the Gateway API conformance echo backend echo-basic (gateway-api-conformance-images v0.1.0)

USAGE:
    echo-server [--log] [BACKEND OPTIONS] [--listen ADDR [BACKEND OPTIONS]]...

Each --listen starts a new backend (one echo-basic pod) with its own HTTP/1.1 listener; the backend options that
follow it, up to the next --listen, apply to that backend only. Backend options given before the first --listen
are defaults for every backend. All backends run in this one process until SIGINT or SIGTERM.

With no --listen at all, echo-server behaves like echo-basic itself: it reads POD_NAME, NAMESPACE, INGRESS_NAME,
SERVICE_NAME, HTTP_PORT (default 3000), H2C_PORT (default 3001), HTTPS_PORT (default 8443, served only when
TLS_SERVER_CERT and TLS_SERVER_PRIVKEY name PEM files; TLS_CLIENT_CACERTS optionally names client CA PEMs),
listens on all interfaces and prints echo-basic's log lines.

OPTIONS:
    --log                  Print echo-basic's stdout lines ('Starting server, listening on port N (http)',
                           'Echoing back request made to <RequestURI> to client (<addr>)', ...)
    -h, --help             Print this help

BACKEND OPTIONS:
    --listen ADDR          HTTP/1.1 listener, e.g. 127.0.0.1:9101 (port 0 = any free port); starts a backend
    --pod NAME             Pod name reported as \"pod\" (POD_NAME)
    --namespace NS         Namespace reported as \"namespace\" (NAMESPACE)
    --ingress NAME         Reported as \"ingress\" (INGRESS_NAME), default empty
    --service NAME         Reported as \"service\" (SERVICE_NAME), default empty
    --h2c-listen ADDR      h2c listener (H2C_PORT): HTTP/2 prior knowledge, 400 to plain HTTP/1
    --https-listen ADDR    HTTPS listener (HTTPS_PORT); needs --tls-cert and --tls-key
    --tls-cert FILE        PEM server certificate chain (TLS_SERVER_CERT)
    --tls-key FILE         PEM server private key (TLS_SERVER_PRIVKEY)
    --tls-client-ca FILE   PEM CAs to verify client certificates against, if a client sends one
                           (TLS_CLIENT_CACERTS)

Options take their value as the next argument or after '=' (--pod=demo-v1-abc-def).

When every backend is listening, one line per backend is printed to stderr:
    echo-server: ready pod=<pod> namespace=<ns> http=<addr> [h2c=<addr>] [https=<addr>]

EXAMPLE:
    echo-server --namespace default \\
        --listen 127.0.0.1:9101 --pod demo-v1-5d7c9b8f4-abcde --h2c-listen 127.0.0.1:9111 \\
        --listen 127.0.0.1:9102 --pod demo-v2-6c8d9e7f5-fghij
";

/// Backend options; `None` = not given at this level.
#[derive(Clone, Default)]
struct BackendArgs {
    listen: Option<SocketAddr>,
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
    let tls = env("TLS_SERVER_CERT").is_some() && env("TLS_SERVER_PRIVKEY").is_some();
    let from_env = BackendArgs {
        listen: Some(port("HTTP_PORT", 3000)?),
        pod: env("POD_NAME"),
        namespace: env("NAMESPACE"),
        ingress: env("INGRESS_NAME"),
        service: env("SERVICE_NAME"),
        h2c_listen: Some(port("H2C_PORT", 3001)?),
        https_listen: if tls {
            Some(port("HTTPS_PORT", 8443)?)
        } else {
            None
        },
        tls_cert: env("TLS_SERVER_CERT"),
        tls_key: env("TLS_SERVER_PRIVKEY"),
        tls_client_ca: env("TLS_CLIENT_CACERTS"),
    };
    Ok(cli.or(&from_env))
}

fn read(path: &str, what: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {what} {path}"))
}

fn config(b: BackendArgs, log: bool) -> anyhow::Result<EchoConfig> {
    let http_addr = b
        .listen
        .ok_or_else(|| anyhow!("a backend has no --listen"))?;
    let https = match b.https_listen {
        None => None,
        Some(addr) => {
            let (Some(cert), Some(key)) = (&b.tls_cert, &b.tls_key) else {
                bail!("--https-listen {addr} needs --tls-cert and --tls-key");
            };
            Some(EchoTls {
                addr,
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
    Ok(EchoConfig {
        pod_name: b.pod.unwrap_or_default(),
        namespace: b.namespace.unwrap_or_default(),
        ingress_name: b.ingress.unwrap_or_default(),
        service_name: b.service.unwrap_or_default(),
        http_addr,
        h2c_addr: b.h2c_listen,
        https,
        log_to_stdout: log,
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
        let cfg = config(backend, args.log)?;
        let server = EchoServer::start(cfg).await?;
        servers.push(server);
    }
    for s in &servers {
        let mut line = format!(
            "echo-server: ready pod={} namespace={} http={}",
            s.pod_name(),
            s.namespace(),
            s.http_addr()
        );
        if let Some(a) = s.h2c_addr() {
            line.push_str(&format!(" h2c={a}"));
        }
        if let Some(a) = s.https_addr() {
            line.push_str(&format!(" https={a}"));
        }
        eprintln!("{line}");
    }
    wait_for_signal().await?;
    for s in servers {
        s.shutdown_and_wait().await;
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
