//! Drain on SIGTERM, against the real binary with an echo backend on loopback: `/readyz` turns 503 at once while
//! the listeners keep serving for `--shutdown-delay`; then HTTP/1.1 answers carry `Connection: close`, HTTP/2
//! connections get GOAWAY, requests in flight finish, no accepted request is lost, and the process exits 0 as
//! soon as nothing is left. Also the health port: only `/healthz`, `/readyz` and `/metrics`.

mod common;

use anyhow::{bail, Context, Result};
use common::{echo, free_port, get, service_yaml, CLASSES};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const HOST: &str = "drain.example.com";

/// A running proxy with a health port, killed on drop.
struct Proxy {
    child: Child,
    http: u16,
    admin: u16,
    health: u16,
    log: PathBuf,
}

impl Proxy {
    fn start(dir: &Path, delay: u64, grace: u64) -> Result<Proxy> {
        let (http, admin, health) = (free_port(), free_port(), free_port());
        let log = dir.join("portcullis.log");
        let child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .arg("run")
            .arg("--manifests")
            .arg(dir.join("manifests"))
            .args(["--http-port", &http.to_string()])
            .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
            .args(["--health-addr", &format!("127.0.0.1:{health}")])
            .args(["--bind-address", "127.0.0.1", "--threads", "2"])
            .args(["--shutdown-delay", &delay.to_string()])
            .args(["--shutdown-grace", &grace.to_string()])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("cannot start portcullis")?;
        let mut p = Proxy {
            child,
            http,
            admin,
            health,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while get(health, "localhost", "/readyz", &[]).map_or(true, |r| r.status != 200) {
            if let Some(status) = p.child.try_wait()? {
                bail!("portcullis exited with {status}:\n{}", p.log_text());
            }
            if Instant::now() > deadline {
                bail!("portcullis not ready after 20 s:\n{}", p.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(p)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn sigterm(&self) -> Result<()> {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?
            .success();
        anyhow::ensure!(ok, "kill -TERM failed");
        Ok(())
    }

    /// Waits up to `timeout` for the exit.
    fn wait_exit(&mut self, timeout: Duration) -> Result<(ExitStatus, Instant)> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok((s, Instant::now()));
            }
            if start.elapsed() > timeout {
                bail!(
                    "portcullis still running {timeout:?} after SIGTERM:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Manifests in `dir/manifests`: an Ingress for [`HOST`] to the echo backend.
fn manifests(dir: &Path, backend: &proto_conformance::echo::EchoServer) -> Result<()> {
    let m = dir.join("manifests");
    std::fs::create_dir_all(&m)?;
    std::fs::write(
        m.join("all.yaml"),
        format!(
            "{CLASSES}{}apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: drain, namespace: default}}
spec:
  rules:
  - host: {HOST}
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: echo, port: {{number: 80}}}}}}}}
",
            service_yaml("default", "echo", 80, &[backend])
        ),
    )?;
    Ok(())
}

/// How one request on a keep-alive connection ended.
#[derive(Debug)]
enum Outcome {
    /// A whole response: status, whether it said `Connection: close`, when it ended.
    Answered {
        status: u16,
        close: bool,
        at: Instant,
    },
    /// The connection could not be opened (the listener is closed): the request was never accepted.
    Refused,
    /// Anything else: a request lost or cut.
    Failed(String),
}

/// Reads one HTTP/1.1 response with a `Content-Length` body.
fn read_response(r: &mut BufReader<TcpStream>) -> std::io::Result<(u16, bool)> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed before a response",
        ));
    }
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let (mut length, mut close) = (0usize, false);
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let v = v.trim();
            if k.eq_ignore_ascii_case("content-length") {
                length = v
                    .parse()
                    .map_err(|_| std::io::Error::other("bad content-length"))?;
            } else if k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close") {
                close = true;
            }
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body)?;
    Ok((status, close))
}

/// A steady client: requests one after another on a keep-alive connection (a new one after `Connection: close`),
/// one every `pause`, until `stop` is set, the listener refuses a new connection, or 4,000 requests.
fn steady_client(port: u16, path: String, pause: Duration, stop: Arc<AtomicBool>) -> Vec<Outcome> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut out = Vec::new();
    let mut conn: Option<BufReader<TcpStream>> = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !stop.load(Ordering::Relaxed) && out.len() < 4_000 && Instant::now() < deadline {
        let mut r = match conn.take() {
            Some(r) => r,
            None => match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                Ok(s) => {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(15)));
                    BufReader::new(s)
                }
                Err(_) => {
                    out.push(Outcome::Refused);
                    break;
                }
            },
        };
        let req = format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
        if let Err(e) = r.get_mut().write_all(req.as_bytes()) {
            out.push(Outcome::Failed(format!("write: {e}")));
            break;
        }
        match read_response(&mut r) {
            Ok((status, close)) => {
                out.push(Outcome::Answered {
                    status,
                    close,
                    at: Instant::now(),
                });
                if !close {
                    conn = Some(r);
                }
            }
            Err(e) => {
                out.push(Outcome::Failed(format!("read: {e}")));
                break;
            }
        }
        std::thread::sleep(pause);
    }
    out
}

/// Polls `/readyz` on the health port every 20 ms until `stop`; returns (time, status or 0 when unreachable).
fn readyz_monitor(port: u16, stop: Arc<AtomicBool>) -> Vec<(Instant, u16)> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let status = get(port, "localhost", "/readyz", &[]).map_or(0, |r| r.status);
        out.push((Instant::now(), status));
        std::thread::sleep(Duration::from_millis(20));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_port_serves_probes_and_metrics_only() -> Result<()> {
    let backend = echo("echo-0", "default").await?;
    let dir = tempfile::tempdir()?;
    manifests(dir.path(), &backend)?;
    let proxy = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || Proxy::start(&dir, 0, 5)
    })
    .await??;
    let (health, admin) = (proxy.health, proxy.admin);
    let t = tokio::task::spawn_blocking(move || -> Result<String> {
        for path in [
            "/config",
            "/status",
            "/diagnostics",
            "/listeners",
            "/",
            "/x",
        ] {
            let r = get(health, "localhost", path, &[])?;
            anyhow::ensure!(r.status == 404, "health port {path}: {}", r.status);
            anyhow::ensure!(get(admin, "localhost", path, &[])?.status != 500);
        }
        anyhow::ensure!(get(admin, "localhost", "/config", &[])?.status == 200);
        anyhow::ensure!(get(health, "localhost", "/healthz", &[])?.status == 200);
        let m = get(health, "localhost", "/metrics", &[])?;
        anyhow::ensure!(m.status == 200, "{}", m.text());
        anyhow::ensure!(
            m.header("content-type")
                .is_some_and(|c| c.starts_with("text/plain; version=0.0.4")),
            "{:?}",
            m.headers
        );
        let a = get(admin, "localhost", "/metrics", &[])?;
        anyhow::ensure!(a.status == 200);
        Ok(m.text())
    })
    .await??;
    for expected in [
        "portcullis_config_rounds_total{result=\"ok\"} 1".to_string(),
        "portcullis_routes{kind=\"Ingress\",state=\"accepted\"} 1".to_string(),
        "portcullis_routes{kind=\"HTTPRoute\",state=\"accepted\"} 0".to_string(),
        "portcullis_backend_ready_endpoints{name=\"echo\",namespace=\"default\",port=\"80\"} 1"
            .to_string(),
        format!(
            "portcullis_build_info{{version=\"{}\"",
            env!("CARGO_PKG_VERSION")
        ),
    ] {
        assert!(t.contains(&expected), "{expected} not in:\n{t}");
    }
    assert!(
        !t.contains("portcullis_leader"),
        "no Lease in standalone mode"
    );
    Ok(())
}

/// Steady HTTP/1.1 clients on keep-alive connections and one slow request in flight across the close: during
/// the delay `/readyz` is 503 and requests still succeed; after it every connection is told `Connection: close`,
/// new connections are refused, the slow request completes, nothing accepted is lost, and the process exits 0
/// as soon as the last connection is gone, far inside the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_http1_keepalive_without_losing_requests() -> Result<()> {
    const DELAY: Duration = Duration::from_secs(2);
    const GRACE: Duration = Duration::from_secs(20);
    let backend = echo("echo-0", "default").await?;
    let dir = tempfile::tempdir()?;
    manifests(dir.path(), &backend)?;
    let result = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || -> Result<()> {
            let mut proxy = Proxy::start(&dir, DELAY.as_secs(), GRACE.as_secs())?;
            let stop = Arc::new(AtomicBool::new(false));
            let clients: Vec<_> = (0..4)
                .map(|i| {
                    let stop = stop.clone();
                    let port = proxy.http;
                    std::thread::spawn(move || {
                        steady_client(port, format!("/steady/{i}"), Duration::from_millis(5), stop)
                    })
                })
                .collect();
            let monitor = {
                let stop = stop.clone();
                let port = proxy.health;
                std::thread::spawn(move || readyz_monitor(port, stop))
            };
            // An idle keep-alive connection: one request, then nothing.
            let mut idle = {
                let s = TcpStream::connect(("127.0.0.1", proxy.http))?;
                s.set_read_timeout(Some(Duration::from_secs(15)))?;
                let mut r = BufReader::new(s);
                r.get_mut()
                    .write_all(format!("GET /idle HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())?;
                assert_eq!(read_response(&mut r)?, (200, false));
                r
            };
            std::thread::sleep(Duration::from_millis(500));
            let sigterm = Instant::now();
            proxy.sigterm()?;
            // A slow request on its own connection, read by the proxy before the listeners close and answered
            // after: it must complete.
            std::thread::sleep(DELAY - Duration::from_millis(500));
            let slow_port = proxy.http;
            let slow = std::thread::spawn(move || {
                let addr = SocketAddr::from(([127, 0, 0, 1], slow_port));
                let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
                s.set_read_timeout(Some(Duration::from_secs(15)))?;
                let mut r = BufReader::new(s);
                r.get_mut().write_all(
                    format!("GET /slow?delay=2s HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes(),
                )?;
                let answered = read_response(&mut r);
                Ok::<_, anyhow::Error>((answered, Instant::now()))
            });
            // The server closes the idle connection (no answer, nothing was asked) about a second after the
            // listeners close, not at the end of the grace.
            let mut rest = Vec::new();
            let idle_read = idle.read_to_end(&mut rest);
            let idle_closed = Instant::now() - sigterm;
            let (exit, exited) = proxy.wait_exit(GRACE + Duration::from_secs(10))?;
            stop.store(true, Ordering::Relaxed);
            let log = proxy.log_text();
            let outcomes: Vec<Outcome> = clients
                .into_iter()
                .flat_map(|c| c.join().unwrap_or_default())
                .collect();
            let readyz = monitor.join().unwrap_or_default();
            let (slow, slow_at) = slow
                .join()
                .map_err(|_| anyhow::anyhow!("slow client panicked"))??;

            assert!(exit.success(), "exit status {exit}\n{log}");
            let took = exited - sigterm;
            eprintln!(
                "exit {took:?} after SIGTERM; {} outcomes; slow request answered {:?} after SIGTERM",
                outcomes.len(),
                slow_at - sigterm
            );
            // Delay 2 s + the slow request's remaining ~1.5 s + at most 1 s for idle connections; the grace
            // (20 s) is far away.
            assert!(
                took < DELAY + Duration::from_secs(4),
                "exited {took:?} after SIGTERM\n{log}"
            );
            assert!(
                matches!(idle_read, Ok(0)) && rest.is_empty(),
                "idle connection: {idle_read:?} {rest:?}"
            );
            assert!(
                idle_closed > DELAY && idle_closed < DELAY + Duration::from_millis(2500),
                "idle connection closed {idle_closed:?} after SIGTERM"
            );
            let (status, _) = slow.map_err(|e| anyhow::anyhow!("slow request lost: {e}\n{log}"))?;
            assert_eq!(status, 200, "slow request");
            assert!(slow_at > sigterm + DELAY, "the slow request was answered after the close");

            let failed: Vec<&String> = outcomes
                .iter()
                .filter_map(|o| match o {
                    Outcome::Failed(e) => Some(e),
                    _ => None,
                })
                .collect();
            assert!(failed.is_empty(), "requests lost: {failed:?}\n{log}");
            let answered: Vec<(u16, bool, Instant)> = outcomes
                .iter()
                .filter_map(|o| match o {
                    Outcome::Answered { status, close, at } => Some((*status, *close, *at)),
                    _ => None,
                })
                .collect();
            assert!(
                answered.iter().all(|a| a.0 == 200),
                "every accepted request answered 200"
            );
            // Requests kept succeeding during the delay ...
            let during = answered
                .iter()
                .filter(|a| {
                    a.2 > sigterm + Duration::from_millis(300)
                        && a.2 < sigterm + DELAY - Duration::from_millis(300)
                })
                .count();
            assert!(during > 20, "only {during} requests answered during the delay\n{log}");
            // ... on keep-alive connections, none told to close before the delay was over ...
            assert!(
                !answered
                    .iter()
                    .any(|a| a.1 && a.2 < sigterm + DELAY - Duration::from_millis(100)),
                "Connection: close before the listeners closed"
            );
            // ... and afterwards every client was told to close, then refused.
            let closes = answered.iter().filter(|a| a.1).count();
            let refused = outcomes
                .iter()
                .filter(|o| matches!(o, Outcome::Refused))
                .count();
            assert_eq!(closes, 4, "each keep-alive client got one Connection: close");
            assert_eq!(refused, 4, "each client was refused a new connection");

            // /readyz: 200 before SIGTERM, 503 within 100 ms of it and while requests still succeed.
            assert!(readyz.iter().any(|(t, s)| *t < sigterm && *s == 200));
            let after: Vec<&(Instant, u16)> = readyz
                .iter()
                .filter(|(t, s)| *t > sigterm + Duration::from_millis(100) && *s != 0)
                .collect();
            assert!(!after.is_empty(), "the health port answered during the drain");
            assert!(
                after.iter().all(|(_, s)| *s == 503),
                "readyz after SIGTERM: {:?}",
                after.iter().map(|x| x.1).collect::<Vec<_>>()
            );
            assert!(
                after.iter().any(|(t, _)| *t < sigterm + DELAY),
                "readyz seen during the delay"
            );
            Ok(())
        }
    })
    .await?;
    result
}

/// HTTP/2 (h2c prior knowledge): a client sending request after request on one connection keeps being served
/// during the delay, then gets GOAWAY: every request it got an answer for is a 200, the connection ends
/// cleanly, and the process exits 0 at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_sends_goaway_to_http2_clients() -> Result<()> {
    const DELAY: Duration = Duration::from_secs(1);
    let backend = echo("echo-0", "default").await?;
    let dir = tempfile::tempdir()?;
    manifests(dir.path(), &backend)?;
    let mut proxy = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || Proxy::start(&dir, DELAY.as_secs(), 20)
    })
    .await??;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", proxy.http)).await?;
    let (client, connection) = h2::client::handshake(tcp).await?;
    let conn_task = tokio::spawn(connection);
    let requests = tokio::spawn({
        let mut client = client;
        async move {
            let mut answered: Vec<(u16, Instant)> = Vec::new();
            // The path of a request the server answered with a GOAWAY that does not cover its stream.
            let mut unprocessed: Option<String> = None;
            let deadline = Instant::now() + Duration::from_secs(20);
            let end = loop {
                if answered.len() >= 2_000 || Instant::now() > deadline {
                    break "bounded".to_string();
                }
                client = match client.ready().await {
                    Ok(c) => c,
                    Err(e) => break format!("ready: {e}"),
                };
                let path = format!("/h2/{}", answered.len());
                let req = http::Request::builder()
                    .uri(format!("http://{HOST}{path}"))
                    .body(())
                    .context("request")?;
                let (resp, _) = match client.send_request(req, true) {
                    Ok(r) => r,
                    Err(e) => break format!("send: {e}"),
                };
                match resp.await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let mut body = r.into_body();
                        while let Some(chunk) = body.data().await {
                            let chunk = chunk?;
                            let _ = body.flow_control().release_capacity(chunk.len());
                        }
                        answered.push((status, Instant::now()));
                    }
                    // Streams the server refused (above its GOAWAY's last stream id) were never accepted.
                    Err(e) if e.reason() == Some(h2::Reason::REFUSED_STREAM) => {
                        break format!("refused: {e}")
                    }
                    // h2 fails a stream above the last stream id of the GOAWAY it received with that GOAWAY's
                    // error: the server never processed it (checked against the backend below). A stream the
                    // server accepted and then dropped at EOF looks the same here, hence that check.
                    Err(e)
                        if e.is_go_away()
                            && e.is_remote()
                            && e.reason() == Some(h2::Reason::NO_ERROR) =>
                    {
                        unprocessed = Some(path);
                        break format!("goaway: {e}");
                    }
                    Err(e) => bail!("request lost after {} answers: {e}", answered.len()),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            Ok::<_, anyhow::Error>((answered, end, unprocessed))
        }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let t0 = Instant::now();
    proxy.sigterm()?;
    let (answered, end, unprocessed) = requests.await??;
    let conn_end = tokio::time::timeout(Duration::from_secs(10), conn_task).await??;
    let (exit, exited) = tokio::task::spawn_blocking(move || {
        let r = proxy.wait_exit(Duration::from_secs(15));
        (r, proxy)
    })
    .await
    .map(|(r, p)| r.map_err(|e| anyhow::anyhow!("{e}\n{}", p.log_text())))??;

    eprintln!(
        "HTTP/2: {} answers, client ended with {end:?}, connection {conn_end:?}, exit {:?} after SIGTERM",
        answered.len(),
        exited - t0
    );
    assert!(exit.success(), "exit status {exit}");
    assert!(
        exited - t0 < DELAY + Duration::from_secs(3),
        "exited {:?} after SIGTERM",
        exited - t0
    );
    assert!(answered.iter().all(|(s, _)| *s == 200), "{answered:?}");
    let during = answered
        .iter()
        .filter(|(_, t)| *t > t0 + Duration::from_millis(200) && *t < t0 + DELAY)
        .count();
    assert!(during > 10, "only {during} HTTP/2 answers during the delay");
    assert!(
        ["ready:", "send:", "refused:", "goaway:"]
            .iter()
            .any(|p| end.starts_with(p)),
        "the client stopped because the server went away, not {end}"
    );
    if let Some(path) = unprocessed {
        let seen = backend.received().iter().filter(|r| r.path == path).count();
        assert_eq!(
            seen, 0,
            "{path} failed with the server's GOAWAY, yet the backend received it: a request was lost"
        );
    }
    // GOAWAY with NO_ERROR: the h2 connection future ends without error (or with a GOAWAY NO_ERROR).
    if let Err(e) = conn_end {
        assert!(
            e.is_go_away() && e.reason() == Some(h2::Reason::NO_ERROR),
            "connection ended with {e}"
        );
    }
    Ok(())
}

#[test]
fn read_response_reads_one_keepalive_answer() -> Result<()> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = l.local_addr()?.port();
    let server = std::thread::spawn(move || -> Result<()> {
        let (mut s, _) = l.accept()?;
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")?;
        Ok(())
    });
    let s = TcpStream::connect(("127.0.0.1", port))?;
    let mut r = BufReader::new(s);
    assert_eq!(read_response(&mut r)?, (200, true));
    server.join().map_err(|_| anyhow::anyhow!("panicked"))??;
    Ok(())
}
