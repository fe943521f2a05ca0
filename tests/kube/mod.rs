//! Shared by the kube tests: the fake API server and the real `portcullis run --kubernetes` binary pointed at it.
#![allow(dead_code)]

pub mod fake_apiserver;
pub mod rbac;

pub use fake_apiserver::FakeApiServer;

use crate::common::{get, request, Response};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running `portcullis run --kubernetes`, killed on drop.
pub struct KubeProxy {
    child: Child,
    /// HTTP port (Ingress rules).
    pub http: u16,
    /// Admin port.
    pub admin: u16,
    log: PathBuf,
}

impl KubeProxy {
    /// Starts the binary against `kubeconfig` (discovery every 0.5 s, so CRD tests are quick) without waiting.
    pub fn spawn(kubeconfig: &Path, http: u16, extra: &[&str]) -> Result<KubeProxy> {
        Self::spawn_with_binary(
            env!("CARGO_BIN_EXE_portcullis"),
            kubeconfig,
            http,
            extra,
            "info",
        )
    }

    /// [`KubeProxy::spawn`] with another binary and log filter (`RUST_LOG`), for measurements.
    pub fn spawn_with_binary(
        binary: &str,
        kubeconfig: &Path,
        http: u16,
        extra: &[&str],
        rust_log: &str,
    ) -> Result<KubeProxy> {
        let admin = crate::common::free_port();
        let log = kubeconfig.with_file_name(format!("portcullis-{admin}.log"));
        let log_file = std::fs::File::create(&log)?;
        let child = Command::new(binary)
            .arg("run")
            .arg("--kubernetes")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--http-port", &http.to_string()])
            .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
            .args(["--bind-address", "127.0.0.1", "--threads", "2"])
            .args(["--shutdown-grace", "1", "--shutdown-delay", "0"])
            .args(["--discovery-interval", "0.5"])
            .args(extra)
            .env("RUST_LOG", rust_log)
            .env("RUST_BACKTRACE", "1")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT")
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .context("cannot start portcullis")?;
        Ok(KubeProxy {
            child,
            http,
            admin,
            log,
        })
    }

    /// Starts the binary and waits (up to 30 s) until `/readyz` answers 200.
    pub fn start(kubeconfig: &Path, http: u16, extra: &[&str]) -> Result<KubeProxy> {
        let mut p = Self::spawn(kubeconfig, http, extra)?;
        p.wait_ready(Duration::from_secs(30))?;
        Ok(p)
    }

    /// Waits until `/readyz` answers 200; returns how long it took.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            if self.readyz() == Some(200) {
                return Ok(start.elapsed());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!("portcullis exited with {status}:\n{}", self.log_text());
            }
            if start.elapsed() > timeout {
                bail!(
                    "portcullis not ready after {timeout:?}:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The status `/readyz` answers (`None` while the admin port is not up).
    pub fn readyz(&self) -> Option<u16> {
        get(self.admin, "localhost", "/readyz", &[])
            .ok()
            .map(|r| r.status)
    }

    /// What the proxy logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// GET through the HTTP port.
    pub fn get(&self, host: &str, path: &str) -> Result<Response> {
        get(self.http, host, path, &[])
    }

    /// A request through the HTTP port.
    pub fn request(
        &self,
        method: &str,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Response> {
        request(self.http, method, host, path, headers, b"")
    }

    /// GET on the admin API.
    pub fn admin(&self, path: &str) -> Result<Response> {
        get(self.admin, "localhost", path, &[])
    }

    /// The admin API's JSON at `path`.
    pub fn admin_json(&self, path: &str) -> Result<serde_json::Value> {
        let r = self.admin(path)?;
        serde_json::from_slice(&r.body).with_context(|| format!("{path}: {}", r.text()))
    }

    /// The admin API's `GET /rounds`.
    pub fn rounds(&self) -> Result<crate::common::Rounds> {
        crate::common::rounds(self.admin)
    }

    /// Waits (up to 10 s) until the control loop has run a round for which `f` holds, e.g. one that read more
    /// objects than before a change: what a test that expects a change to have *no* effect waits on, so that it
    /// cannot pass only because no round ran.
    pub fn wait_round(
        &self,
        what: &str,
        f: impl Fn(crate::common::Rounds) -> bool,
    ) -> Result<crate::common::Rounds> {
        let mut last = crate::common::Rounds::default();
        self.wait_for(Duration::from_secs(10), || match self.rounds() {
            Ok(r) => {
                last = r;
                f(r)
            }
            Err(_) => false,
        })
        .with_context(|| format!("no configuration round where {what} (last seen: {last:?})"))?;
        Ok(last)
    }

    /// Polls `f` every 20 ms until it holds or `timeout` passes; returns how long it took.
    pub fn wait_for(&self, timeout: Duration, f: impl FnMut() -> bool) -> Result<Duration> {
        wait_for(timeout, f).map_err(|e| anyhow::anyhow!("{e}; proxy log:\n{}", self.log_text()))
    }

    /// Waits until `host` + `path` is answered by the echo pod `pod` (status 200).
    pub fn wait_for_pod(&self, host: &str, path: &str, pod: &str) -> Result<Duration> {
        self.wait_for(Duration::from_secs(10), || {
            self.get(host, path)
                .is_ok_and(|r| r.status == 200 && r.pod() == pod)
        })
        .with_context(|| format!("{host}{path} never reached {pod}"))
    }

    /// Waits until `host` + `path` answers `status`.
    pub fn wait_for_status(&self, host: &str, path: &str, status: u16) -> Result<Duration> {
        self.wait_for(Duration::from_secs(10), || {
            self.get(host, path).is_ok_and(|r| r.status == status)
        })
        .with_context(|| format!("{host}{path} never answered {status}"))
    }

    /// Kills the process at once (SIGKILL): no Lease release, as when a node vanishes.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to 10 s for the exit.
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            if start.elapsed() > Duration::from_secs(10) {
                self.kill();
                bail!("portcullis did not exit within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for KubeProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` every 20 ms until it holds or `timeout` passes; returns how long it took.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> Result<Duration> {
    let start = Instant::now();
    loop {
        if f() {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            bail!("condition not met within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A Service `name` in `ns` with one port named `http` (port 80), and its EndpointSlice listing `ports` of
/// 127.0.0.1 (echo backends). The slice is named `<name>-slice`.
pub fn service_with_endpoints(ns: &str, name: &str, ports: &[u16]) -> String {
    format!("{}{}", service(ns, name), endpoint_slice(ns, name, ports))
}

/// A Service with one port named `http` (port 80).
pub fn service(ns: &str, name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  clusterIP: 10.96.0.10\n  ports: [{{name: http, port: 80}}]\n---\n"
    )
}

/// The EndpointSlice `<name>-slice` of Service `name`: 127.0.0.1 on each of `ports` (one endpoint per port is
/// not expressible in one slice, so each port becomes its own slice `<name>-slice-<i>` after the first).
pub fn endpoint_slice(ns: &str, name: &str, ports: &[u16]) -> String {
    let mut s = String::new();
    for (i, port) in ports.iter().enumerate() {
        let slice = if i == 0 {
            format!("{name}-slice")
        } else {
            format!("{name}-slice-{i}")
        };
        s.push_str(&format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {slice}\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{name: http, port: {port}}}]\nendpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]\n---\n"
        ));
    }
    s
}

/// The IngressClass (default) and GatewayClass that select Portcullis.
pub const CLASSES: &str = crate::common::CLASSES;
