//! End-to-end: ingress-nginx's `proxy-next-upstream` on Ingresses of our own class. Two endpoints: one always
//! answers 503 (a bare TCP server), the other is an echo backend. A policy naming `http_503` hides the bad
//! endpoint from GETs; POSTs are retried only with `non_idempotent`; `off` retries nothing, not even a refused
//! connection.

mod common;

use anyhow::Result;
use common::{echo, free_port, Proxy, CLASSES};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A keep-alive HTTP/1.1 server on loopback that answers every request 503 (after reading its body); counts
/// the requests it got.
fn always_503() -> Result<(SocketAddr, Arc<AtomicUsize>)> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            let seen = seen.clone();
            std::thread::spawn(move || serve_503(conn, &seen));
        }
    });
    Ok((addr, count))
}

fn serve_503(conn: TcpStream, seen: &AtomicUsize) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(mut w) = conn.try_clone() else { return };
    let mut r = BufReader::new(conn);
    loop {
        let mut len = 0usize;
        let mut first = true;
        loop {
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let line = line.trim_end();
            if line.is_empty() {
                if first {
                    continue;
                }
                break;
            }
            first = false;
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        seen.fetch_add(1, Ordering::Relaxed);
        let resp =
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\nx-from: bad\r\n\r\nbad!";
        if w.write_all(resp).is_err() {
            return;
        }
    }
}

/// A Service `NAME` with one EndpointSlice per port (all on 127.0.0.1).
fn service(name: &str, ports: &[u16]) -> String {
    let mut s = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  ports: [{{name: http, port: 80}}]\n---\n"
    );
    for (i, p) in ports.iter().enumerate() {
        s.push_str(&format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-{i}\n  namespace: default\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{name: http, port: {p}}}]\nendpoints: [{{addresses: [127.0.0.1]}}]\n---\n"
        ));
    }
    s
}

/// An Ingress for `host` to Service `svc` with the `proxy-next-upstream` value given.
fn ingress(host: &str, svc: &str, next_upstream: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {host}
  namespace: default
  annotations: {{nginx.ingress.kubernetes.io/proxy-next-upstream: \"{next_upstream}\"}}
spec:
  rules:
  - host: {host}.example.com
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: {svc}, port: {{number: 80}}}}}}}}
---
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_upstream_retries_what_it_names() -> Result<()> {
    let good = echo("web-good", "default").await?;
    let (bad, bad_count) = always_503()?;
    // A port nothing listens on.
    let dead = free_port();
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let pair = [bad.port(), good.http_addr().port()];
    let manifests = format!(
        "{CLASSES}{}{}{}{}{}{}",
        service("pair", &pair),
        service("dead", &[dead, good.http_addr().port()]),
        ingress("retry", "pair", "error timeout http_503"),
        ingress("anymethod", "pair", "error timeout http_503 non_idempotent"),
        ingress("statusonly", "pair", "http_503"),
        ingress("noretry", "dead", "off"),
    );
    std::fs::write(dir.path().join("all.yaml"), manifests)?;
    let proxy = Proxy::start(dir.path(), port, &[])?;

    // GETs: the 503 endpoint is tried (round robin) and retried on the other, so every answer is 200.
    for _ in 0..8 {
        let r = proxy.get("retry.example.com", "/x")?;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // The status alone is enough.
    for _ in 0..4 {
        let r = proxy.get("statusonly.example.com", "/x")?;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let tried_bad = bad_count.load(Ordering::Relaxed);
    assert!(
        tried_bad >= 3,
        "the 503 endpoint got its share: {tried_bad}"
    );

    // POSTs are not idempotent: a 503 is answered as is, unless the policy says non_idempotent.
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let r = proxy.request("POST", "retry.example.com", "/x", &[], b"body")?;
        statuses.push(r.status);
        if r.status == 503 {
            assert_eq!(r.header("x-from"), Some("bad"));
        }
    }
    assert!(statuses.contains(&503), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
    for _ in 0..8 {
        let r = proxy.request("POST", "anymethod.example.com", "/x", &[], b"body")?;
        assert_eq!(r.status, 200, "{}", r.text());
        // The retry carries the request body (Pingora's retry buffer): the echo backend read all 4 bytes.
        assert_eq!(r.echoed_header("content-length").as_deref(), Some("4"));
    }

    // off: a refused connection is not retried either (nginx answers 502).
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(proxy.get("noretry.example.com", "/x")?.status);
    }
    assert!(statuses.contains(&502), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
    Ok(())
}
