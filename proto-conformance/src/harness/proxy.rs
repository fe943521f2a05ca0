//! The `portcullis` process of a world: start, readiness, `/status`, stop. The process is this harness's own
//! child and is killed by its id when the world ends (and on drop).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::Value;
use tokio::process::{Child, Command};

use super::client;

/// Where to find the proxy binary: `PORTCULLIS_BIN`, else `<workspace>/target/release/portcullis`, else
/// `<workspace>/target/debug/portcullis`.
pub fn find_binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("PORTCULLIS_BIN") {
        return Ok(PathBuf::from(p));
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    for profile in ["release", "debug"] {
        let p = workspace.join("target").join(profile).join("portcullis");
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "portcullis binary not found: set PORTCULLIS_BIN or run `cargo build --release -p portcullis` in {}",
        workspace.display()
    )
}

/// The result of `GET /status`.
#[derive(Clone, Debug)]
pub enum StatusFetch {
    /// The JSON document.
    Ok(Value),
    /// 404: the proxy has no status endpoint.
    Missing,
    /// Anything else.
    Error(String),
}

/// A running proxy.
pub struct Proxy {
    child: Child,
    /// The admin API address.
    pub admin: SocketAddr,
    /// Its combined stdout/stderr.
    pub log_path: PathBuf,
}

impl Proxy {
    /// Starts `portcullis run` on the world directory.
    pub fn start(
        binary: &Path,
        manifests: &Path,
        port_offset: u16,
        admin: SocketAddr,
        log_path: &Path,
    ) -> anyhow::Result<Proxy> {
        let log = std::fs::File::create(log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let log2 = log.try_clone().context("duplicating the log file")?;
        let child = Command::new(binary)
            .arg("run")
            .arg("--manifests")
            .arg(manifests)
            .arg("--port-offset")
            .arg(port_offset.to_string())
            .arg("--bind-address")
            .arg("127.0.0.1")
            .arg("--admin-addr")
            .arg(admin.to_string())
            .arg("--threads")
            .arg("2")
            .env(
                "RUST_LOG",
                std::env::var("PORTCULLIS_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Proxy {
            child,
            admin,
            log_path: log_path.to_path_buf(),
        })
    }

    /// Waits until `GET /readyz` answers 200 (or the process exits, or `timeout` passes).
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .context("checking the proxy process")?
            {
                bail!("portcullis exited during startup ({status})");
            }
            if let Ok(res) = client::get(self.admin, "/readyz", Duration::from_secs(2)).await {
                if res.status == 200 {
                    return Ok(());
                }
            }
            if start.elapsed() > timeout {
                bail!(
                    "GET /readyz did not answer 200 within {}s",
                    timeout.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `GET /status`.
    pub async fn status(&self) -> StatusFetch {
        match client::get(self.admin, "/status", Duration::from_secs(5)).await {
            Ok(res) if res.status == 200 => match serde_json::from_slice(&res.body) {
                Ok(v) => StatusFetch::Ok(v),
                Err(e) => StatusFetch::Error(format!("GET /status: not JSON: {e}")),
            },
            Ok(res) if res.status == 404 => StatusFetch::Missing,
            Ok(res) => StatusFetch::Error(format!("GET /status: {}", res.status)),
            Err(e) => StatusFetch::Error(format!("GET /status: {e}")),
        }
    }

    /// The last `lines` lines of the proxy's log, without colour codes and without the warnings about kinds
    /// it does not read (Deployments).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<String> = text
            .lines()
            .map(strip_ansi)
            .filter(|l| !l.contains("is not a kind portcullis reads"))
            .collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Kills the process (by its id) and reaps it.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

/// Removes ANSI escape sequences (`ESC [ ... letter`).
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // Bounded by the line: skip parameters up to the final letter.
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}
