//! Gateway listener ports are bound and released at runtime, without a restart and without dropping connections
//! on other listeners; Gateways with `spec.addresses` bind their own IP.

mod common;

use anyhow::{Context, Result};
use common::{echo, free_port, service_yaml, Proxy, CLASSES};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn gateway(name: &str, port: u16, address: Option<&str>) -> String {
    let addresses = address
        .map(|a| format!("  addresses: [{{type: IPAddress, value: \"{a}\"}}]\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: default}}
spec:
  gatewayClassName: portcullis
{addresses}  listeners: [{{name: http, port: {port}, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: default}}
spec:
  parentRefs: [{{name: {name}}}]
  rules: [{{backendRefs: [{{name: web, port: 80}}]}}]
---
"
    )
}

/// One keep-alive request on an open connection; returns the status.
fn keepalive_get(conn: &mut BufReader<TcpStream>, host: &str) -> Result<u16> {
    write!(conn.get_mut(), "GET / HTTP/1.1\r\nHost: {host}\r\n\r\n")?;
    let mut status_line = String::new();
    conn.read_line(&mut status_line)?;
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        conn.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse()?;
        }
    }
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body)?;
    Ok(status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_come_and_go_without_dropping_connections() -> Result<()> {
    let web = echo("web-7d9f8b6c4-aaaaa", "default").await?;
    let dir = tempfile::tempdir()?;
    let http = free_port();
    let extra = free_port();
    let base = format!(
        "{CLASSES}{}{}",
        service_yaml("default", "web", 80, &[&web]),
        gateway("main", http, None)
    );
    std::fs::write(dir.path().join("base.yaml"), &base)?;
    let proxy = Proxy::start(dir.path(), http, &[])?;
    let d = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || -> Result<()> {
        // A keep-alive connection on the main port, used before, during and after the changes.
        let stream = TcpStream::connect(("127.0.0.1", http))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut conn = BufReader::new(stream);
        assert_eq!(keepalive_get(&mut conn, "a.example.com")?, 200);

        // A Gateway on a new port appears: the port is bound without a restart.
        assert!(TcpStream::connect(("127.0.0.1", extra)).is_err());
        std::fs::write(d.join("extra.yaml"), gateway("extra", extra, None))?;
        proxy.wait_for(Duration::from_secs(3), || {
            common::get(extra, "b.example.com", "/", &[]).is_ok_and(|r| r.status == 200)
        })?;
        assert_eq!(keepalive_get(&mut conn, "a.example.com")?, 200);

        // It disappears: the port is released; the main connection is untouched.
        std::fs::remove_file(d.join("extra.yaml"))?;
        proxy.wait_for(Duration::from_secs(3), || {
            TcpStream::connect(("127.0.0.1", extra)).is_err()
        })?;
        assert_eq!(keepalive_get(&mut conn, "a.example.com")?, 200);

        // A Gateway with its own address binds that IP only.
        let port = free_port();
        std::fs::write(
            d.join("addr.yaml"),
            gateway("addressed", port, Some("127.0.0.77")),
        )?;
        proxy.wait_for(Duration::from_secs(3), || {
            TcpStream::connect(("127.0.0.77", port)).is_ok()
        })?;
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
        let st: serde_json::Value = serde_json::from_slice(&proxy.admin("/status")?.body)?;
        let g = st["gateways"]
            .as_array()
            .and_then(|g| g.iter().find(|g| g["name"] == "addressed"))
            .context("status")?;
        assert_eq!(g["status"]["addresses"][0]["value"], "127.0.0.77");
        assert_eq!(keepalive_get(&mut conn, "a.example.com")?, 200);
        Ok(())
    })
    .await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_address_is_reported_in_status() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let http = free_port();
    let port = free_port();
    // 192.0.2.1 (TEST-NET-1) is not an address of this host, so it cannot be bound.
    let yaml = format!("{CLASSES}{}", gateway("far", port, Some("192.0.2.1")));
    std::fs::write(dir.path().join("a.yaml"), yaml)?;
    let proxy = Proxy::start(dir.path(), http, &[])?;
    tokio::task::spawn_blocking(move || -> Result<()> {
        proxy.wait_for(Duration::from_secs(5), || {
            proxy
                .admin("/status")
                .is_ok_and(|r| r.text().contains("AddressNotUsable"))
        })?;
        Ok(())
    })
    .await??;
    Ok(())
}
