//! End-to-end: backends on their bad days. One of three endpoints is killed under a steady keep-alive client and
//! later restarted; another never answers. Clients must see no error, the dead endpoint must be taken out of
//! rotation (passive health) and must get traffic again once it is back.

mod common;

use anyhow::{bail, Context, Result};
use common::{echo, free_port, Proxy, CLASSES};
use proto_conformance::echo::{EchoConfig, EchoServer};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A Service `web` (port 80) with one EndpointSlice endpoint per port, and Service annotations.
fn service(ports: &[u16], annotations: &str) -> String {
    let mut s = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: default\n  annotations: {{{annotations}}}\nspec:\n  ports: [{{name: http, port: 80}}]\n---\n"
    );
    for (i, p) in ports.iter().enumerate() {
        s.push_str(&format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-{i}\n  namespace: default\n  labels: {{kubernetes.io/service-name: web}}\naddressType: IPv4\nports: [{{name: http, port: {p}}}]\nendpoints: [{{addresses: [127.0.0.1]}}]\n---\n"
        ));
    }
    s
}

fn manifests(port: u16, svc: &str, rule_extra: &str) -> String {
    format!(
        "{CLASSES}{svc}
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: portcullis
  listeners: [{{name: http, port: {port}, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - backendRefs: [{{name: web, port: 80}}]
{rule_extra}
"
    )
}

/// What a steady client saw.
#[derive(Debug, Default)]
struct Seen {
    statuses: BTreeMap<u16, usize>,
    /// Requests that got no response (connection refused, reset, closed early, timeout).
    socket_errors: usize,
    /// Keep-alive connections the proxy closed although the response did not say `Connection: close`.
    unannounced_closes: usize,
    /// (time since start, pod) of every 200.
    pods: Vec<(Duration, String)>,
}

/// A keep-alive HTTP/1.1 client sending GETs one after another, a few milliseconds apart, until `stop` or
/// `max_requests`.
/// Times in `seen` are measured from `start`, the caller's clock, so that they compare with the caller's events.
fn steady_client(
    port: u16,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    max_requests: usize,
    start: Instant,
) {
    let mut conn: Option<(TcpStream, BufReader<TcpStream>)> = None;
    for _ in 0..max_requests {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if conn.is_none() {
            match TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))) {
                Ok(s) => {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    let r = BufReader::new(s.try_clone().expect("clone"));
                    conn = Some((s, r));
                }
                Err(_) => {
                    seen.lock().unwrap().socket_errors += 1;
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            }
        }
        let Some((w, r)) = conn.as_mut() else {
            continue;
        };
        let outcome = (|| -> Result<(u16, bool, String)> {
            w.write_all(b"GET /x HTTP/1.1\r\nHost: web.example.com\r\n\r\n")?;
            let mut line = String::new();
            r.read_line(&mut line)?;
            let status: u16 = line.split(' ').nth(1).context("no status line")?.parse()?;
            let mut len = 0usize;
            let mut close = false;
            loop {
                let mut h = String::new();
                if r.read_line(&mut h)? == 0 {
                    bail!("closed in headers");
                }
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                let (k, v) = h.split_once(':').unwrap_or((h, ""));
                match k.to_ascii_lowercase().as_str() {
                    "content-length" => len = v.trim().parse()?,
                    "connection" => close = v.trim().eq_ignore_ascii_case("close"),
                    _ => {}
                }
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body)?;
            let pod = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["pod"].as_str().map(str::to_string))
                .unwrap_or_default();
            Ok((status, close, pod))
        })();
        let mut s = seen.lock().unwrap();
        match outcome {
            Ok((status, close, pod)) => {
                *s.statuses.entry(status).or_default() += 1;
                if status == 200 {
                    s.pods.push((start.elapsed(), pod));
                }
                if close {
                    conn = None;
                } else {
                    // Check that the connection is still usable: the next request will tell; a close the
                    // response did not announce shows up as a socket error then.
                }
            }
            Err(_) => {
                s.socket_errors += 1;
                conn = None;
            }
        }
        drop(s);
        std::thread::sleep(Duration::from_millis(4));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_endpoint_is_invisible_to_clients_and_comes_back() -> Result<()> {
    let a = echo("web-a-7d9f8b6c4-aaaaa", "default").await?;
    let b = echo("web-b-7d9f8b6c4-bbbbb", "default").await?;
    let c = echo("web-c-7d9f8b6c4-ccccc", "default").await?;
    let b_addr = b.http_addr();
    let ports = [a.http_addr().port(), b_addr.port(), c.http_addr().port()];
    let dir = tempfile::tempdir()?;
    let port = free_port();
    // A short first back-off keeps the test short; the default is 5 s.
    let svc = service(&ports, "portcullis.dev/ejection-time: 1s");
    std::fs::write(dir.path().join("all.yaml"), manifests(port, &svc, ""))?;
    let proxy = Arc::new(Proxy::start(dir.path(), port, &[])?);

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let started = Instant::now();
    let client = {
        let (stop, seen) = (stop.clone(), seen.clone());
        std::thread::spawn(move || steady_client(port, stop, seen, 20_000, started))
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    b.shutdown_and_wait().await;
    let killed_at = started.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let b = EchoServer::start(EchoConfig::new("web-b-7d9f8b6c4-bbbbb", "default", b_addr)).await?;
    let restarted_at = started.elapsed();

    // Wait (bounded) until the restarted endpoint answers requests again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let back = seen
            .lock()
            .unwrap()
            .pods
            .iter()
            .any(|(t, p)| *t > restarted_at && p.starts_with("web-b"));
        if back || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    client.join().expect("client thread");
    drop(b);

    let seen = seen.lock().unwrap();
    let total: usize = seen.statuses.values().sum();
    assert!(total > 200, "the client ran: {total} requests");
    assert_eq!(
        seen.statuses.keys().copied().collect::<Vec<_>>(),
        vec![200],
        "every request answered 200: {:?}; log:\n{}",
        seen.statuses,
        proxy.log_text()
    );
    assert_eq!(seen.socket_errors, 0, "no socket errors");
    assert_eq!(seen.unannounced_closes, 0);
    let served_by_b_while_dead = seen
        .pods
        .iter()
        // A response b sent just before it stopped may be read a moment later on a loaded machine.
        .filter(|(t, p)| {
            *t > killed_at + Duration::from_millis(100)
                && *t < restarted_at
                && p.starts_with("web-b")
        })
        .count();
    assert_eq!(served_by_b_while_dead, 0);
    let b_after = seen
        .pods
        .iter()
        .filter(|(t, p)| *t > restarted_at && p.starts_with("web-b"))
        .count();
    assert!(b_after > 0, "the restarted endpoint gets traffic again");
    // Both other endpoints kept serving while b was down.
    for pod in ["web-a", "web-c"] {
        assert!(seen
            .pods
            .iter()
            .any(|(t, p)| *t > killed_at && *t < restarted_at && p.starts_with(pod)));
    }

    // The admin API shows what happened: failures, retries and an ejection, all on this backend.
    let up: serde_json::Value = proxy.admin("/upstreams")?.echo()?;
    let web = up
        .as_array()
        .and_then(|a| a.iter().find(|u| u["backend"] == "default/web:80"))
        .context("default/web:80 in /upstreams")?;
    assert!(web["failures"].as_u64() >= Some(1), "{web}");
    assert!(web["retries"].as_u64() >= Some(1), "{web}");
    assert!(web["ejections"].as_u64() >= Some(1), "{web}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_that_never_answers_is_bounded_by_timeouts_and_ejected() -> Result<()> {
    let a = echo("web-a-7d9f8b6c4-aaaaa", "default").await?;
    let c = echo("web-c-7d9f8b6c4-ccccc", "default").await?;
    // Accepts connections and never answers.
    let hang = TcpListener::bind("127.0.0.1:0")?;
    let hang_port = hang.local_addr()?.port();
    let accepted = Arc::new(AtomicUsize::new(0));
    {
        let accepted = accepted.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in hang.incoming().flatten().take(500) {
                accepted.fetch_add(1, Ordering::Relaxed);
                held.push(s);
            }
        });
    }
    let ports = [a.http_addr().port(), hang_port, c.http_addr().port()];
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let svc = service(&ports, "portcullis.dev/ejection-time: 30s");
    let rule = "    timeouts: {request: 3s, backendRequest: 200ms}\n    retry: {attempts: 2}\n";
    std::fs::write(dir.path().join("all.yaml"), manifests(port, &svc, rule))?;
    let proxy = Proxy::start(dir.path(), port, &[])?;

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let client = {
        let (stop, seen) = (stop.clone(), seen.clone());
        std::thread::spawn(move || steady_client(port, stop, seen, 600, Instant::now()))
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    client.join().expect("client thread");

    let seen = seen.lock().unwrap();
    let total: usize = seen.statuses.values().sum();
    assert!(total > 50, "the client ran: {total} requests");
    assert_eq!(
        seen.statuses.keys().copied().collect::<Vec<_>>(),
        vec![200],
        "every request answered 200 (the timed-out attempts were retried elsewhere): {:?}; log:\n{}",
        seen.statuses,
        proxy.log_text()
    );
    assert_eq!(seen.socket_errors, 0);
    // Three timeouts take the endpoint out for 30 s: it saw only the first few attempts, not a third of them.
    let n = accepted.load(Ordering::Relaxed);
    assert!(
        (1..=4).contains(&n),
        "the silent endpoint got {n} connections out of {total} requests"
    );
    Ok(())
}
