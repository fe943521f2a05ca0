//! Shared helpers for the end-to-end tests: the real `portcullis` binary, echo backends and a small raw HTTP/1.1
//! client (so tests control the Host header and the request line byte for byte). Loopback only.
#![allow(dead_code)]

pub mod certs;

use anyhow::{bail, Context, Result};
use proto_conformance::echo::{EchoConfig, EchoServer};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// What the admin API's `GET /rounds` says: configuration rounds run so far and the objects the latest one read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rounds {
    /// Rounds completed (0 before the first).
    pub rounds: u64,
    /// Objects the latest round read.
    pub objects: u64,
}

/// `GET /rounds` on the admin port `admin`.
pub fn rounds(admin: u16) -> Result<Rounds> {
    let r = get(admin, "localhost", "/rounds", &[])?;
    if r.status != 200 {
        bail!("GET /rounds answered {}: {}", r.status, r.text());
    }
    let v: serde_json::Value =
        serde_json::from_slice(&r.body).with_context(|| format!("/rounds: {}", r.text()))?;
    let field = |k: &str| {
        v[k].as_u64()
            .with_context(|| format!("/rounds has no {k}: {v}"))
    };
    Ok(Rounds {
        rounds: field("rounds")?,
        objects: field("objects")?,
    })
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests), never one this process was given
/// before: the kernel may hand a released port out again at once, and two of a test's ports (say its listener
/// and the proxy's admin address) then collide.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("no free port on 127.0.0.1");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A running `portcullis run` process, killed on drop.
pub struct Proxy {
    child: Child,
    /// The HTTP port (Ingress rules, and Gateway listeners that use it).
    pub http: u16,
    /// The admin port.
    pub admin: u16,
    log: PathBuf,
}

impl Proxy {
    /// Starts the proxy on `manifests` with `--http-port http` on 127.0.0.1 and waits until /readyz answers 200.
    pub fn start(manifests: &Path, http: u16, extra: &[&str]) -> Result<Proxy> {
        let admin = free_port();
        let log = manifests.with_extension("log");
        let log_file = std::fs::File::create(&log)?;
        let out_file = std::fs::File::create(log.with_extension("out"))?;
        let child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .arg("run")
            .arg("--manifests")
            .arg(manifests)
            .args(["--http-port", &http.to_string()])
            .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
            .args([
                "--bind-address",
                "127.0.0.1",
                "--threads",
                "2",
                "--shutdown-grace",
                "1",
                "--shutdown-delay",
                "0",
            ])
            .args(extra)
            .env("RUST_LOG", "info")
            .env("RUST_BACKTRACE", "1")
            .stdout(out_file)
            .stderr(log_file)
            .spawn()
            .context("cannot start portcullis")?;
        let mut p = Proxy {
            child,
            http,
            admin,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = get(admin, "localhost", "/readyz", &[]) {
                if r.status == 200 {
                    return Ok(p);
                }
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                bail!("portcullis exited with {status}:\n{}", p.log_text());
            }
            if Instant::now() > deadline {
                bail!("portcullis not ready after 20s:\n{}", p.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the proxy logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// What the proxy wrote to stdout so far (access logs).
    pub fn stdout_text(&self) -> String {
        std::fs::read_to_string(self.log.with_extension("out")).unwrap_or_default()
    }

    /// GET through the proxy's HTTP port.
    pub fn get(&self, host: &str, path: &str) -> Result<Response> {
        get(self.http, host, path, &[])
    }

    /// A request through the proxy's HTTP port.
    pub fn request(
        &self,
        method: &str,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response> {
        request(self.http, method, host, path, headers, body)
    }

    /// GET on the admin API.
    pub fn admin(&self, path: &str) -> Result<Response> {
        get(self.admin, "localhost", path, &[])
    }

    /// Polls `f` every 20 ms until it returns true or `timeout` passes; returns the time it took.
    pub fn wait_for(&self, timeout: Duration, mut f: impl FnMut() -> bool) -> Result<Duration> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if f() {
                return Ok(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "condition not met within {timeout:?}; proxy log:\n{}",
            self.log_text()
        )
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Lowercase names; repeated headers joined with ", ".
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The echo backend's JSON body.
    pub fn echo(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("not echo JSON: {}", self.text()))
    }

    /// The echo backend's pod name.
    pub fn pod(&self) -> String {
        self.echo()
            .ok()
            .and_then(|v| v["pod"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// A request header as the echo backend saw it (first value).
    pub fn echoed_header(&self, name: &str) -> Option<String> {
        let v = self.echo().ok()?;
        let headers = v["headers"].as_object()?;
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v[0].as_str().map(str::to_string))
    }
}

/// GET with `Connection: close`.
pub fn get(port: u16, host: &str, path: &str, headers: &[(&str, &str)]) -> Result<Response> {
    request(port, "GET", host, path, headers, b"")
}

/// One HTTP/1.1 request on a fresh connection, read to the end (`Connection: close`), 10 s timeout.
pub fn request(
    port: u16,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_response(&raw, method == "HEAD")
}

/// Parses a raw HTTP/1.1 response read to the end (`head`: the request was HEAD, so there is no body).
pub fn parse_response(raw: &[u8], head: bool) -> Result<Response> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head_text = std::str::from_utf8(&raw[..end])?;
    let mut lines = head_text.split("\r\n");
    let status_line = lines.next().context("empty response")?;
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .context("no status")?
        .parse()?;
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            let v = v.trim().to_string();
            headers
                .entry(k)
                .and_modify(|e| {
                    e.push_str(", ");
                    e.push_str(&v)
                })
                .or_insert(v);
        }
    }
    let rest = &raw[end + 4..];
    let body = if head {
        Vec::new()
    } else if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.contains("chunked"))
    {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("bad chunk")?;
        let size = usize::from_str_radix(std::str::from_utf8(&b[..line_end])?.trim(), 16)?;
        b = &b[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// Starts an echo backend on 127.0.0.1 (any port).
pub async fn echo(pod: &str, namespace: &str) -> Result<EchoServer> {
    EchoServer::start(EchoConfig::new(pod, namespace, "127.0.0.1:0".parse()?)).await
}

/// A Service with one port and an EndpointSlice listing the given echo backends.
pub fn service_yaml(ns: &str, name: &str, port: u16, backends: &[&EchoServer]) -> String {
    let mut s = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  ports: [{{name: http, port: {port}}}]\n---\n"
    );
    for (i, b) in backends.iter().enumerate() {
        s.push_str(&format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-{i}\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{name: http, port: {}}}]\nendpoints: [{{addresses: [127.0.0.1]}}]\n---\n",
            b.http_addr().port()
        ));
    }
    s
}

/// An Ingress of the default class: `host`, one Prefix `path` to port 80 of Service `service`, with these
/// annotations (full keys; values are quoted), followed by `---`.
pub fn ingress_yaml(
    ns: &str,
    name: &str,
    host: &str,
    path: &str,
    service: &str,
    annotations: &[(&str, &str)],
) -> String {
    let mut a = String::new();
    for (k, v) in annotations {
        a.push_str(&format!("\n    {k}: \"{v}\""));
    }
    let annotations = if a.is_empty() {
        String::new()
    } else {
        format!("\n  annotations:{a}")
    };
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: {ns}{annotations}\n\
         spec:\n  rules:\n  - host: {host}\n    http:\n      paths:\n      - {{path: {path}, pathType: Prefix, \
         backend: {{service: {{name: {service}, port: {{number: 80}}}}}}}}\n---\n"
    )
}

/// The IngressClass (default) and GatewayClass that select Portcullis.
pub const CLASSES: &str = "\
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: portcullis
  annotations: {ingressclass.kubernetes.io/is-default-class: \"true\"}
spec:
  controller: portcullis.dev/ingress-controller
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: portcullis}
spec:
  controllerName: portcullis.dev/gateway-controller
---
";
