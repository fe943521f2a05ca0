//! Gateway listener ports are bound and released at runtime, without a restart and without dropping connections
//! on other listeners; Gateways with `spec.addresses` bind their own IP; of two Gateways whose listeners collide
//! on a shared address, the older keeps the traffic.

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

/// A Gateway without `spec.addresses` (so on the default address, as on a DaemonSet node), with one HTTP listener
/// on `port` and an HTTPRoute for `app.example.com` `/` to Service `backend`.
fn shared_address_gateway(
    name: &str,
    created: &str,
    route_created: &str,
    port: u16,
    backend: &str,
) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: default, creationTimestamp: \"{created}\"}}
spec:
  gatewayClassName: portcullis
  listeners: [{{name: http, port: {port}, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: default, creationTimestamp: \"{route_created}\"}}
spec:
  parentRefs: [{{name: {name}}}]
  hostnames: [app.example.com]
  rules: [{{backendRefs: [{{name: {backend}, port: 80}}]}}]
---
"
    )
}

/// Two Gateways on one address and port with the same (empty) listener hostname collide: the older Gateway's
/// listener keeps the traffic, the newer one is Conflicted (HostnameConflict) and its route does not answer, even
/// though that route is older and its Gateway's name sorts first (either would win if the two were merged). When
/// the older Gateway goes, the newer one takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colliding_gateways_on_one_address_older_keeps_the_traffic() -> Result<()> {
    let old_pod = echo("old-7d9f8b6c4-aaaaa", "default").await?;
    let new_pod = echo("new-7d9f8b6c4-bbbbb", "default").await?;
    let dir = tempfile::tempdir()?;
    let http = free_port();
    let base = format!(
        "{CLASSES}{}{}{}",
        service_yaml("default", "old", 80, &[&old_pod]),
        service_yaml("default", "new", 80, &[&new_pod]),
        shared_address_gateway(
            "a-newer",
            "2024-06-01T00:00:00Z",
            "2023-01-01T00:00:00Z",
            http,
            "new"
        ),
    );
    std::fs::write(dir.path().join("base.yaml"), &base)?;
    std::fs::write(
        dir.path().join("older.yaml"),
        shared_address_gateway(
            "b-older",
            "2024-01-01T00:00:00Z",
            "2024-01-01T00:00:00Z",
            http,
            "old",
        ),
    )?;
    let proxy = Proxy::start(dir.path(), http, &[])?;
    let d = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || -> Result<()> {
        proxy.wait_for(Duration::from_secs(5), || {
            common::get(http, "app.example.com", "/", &[]).is_ok_and(|r| r.status == 200)
        })?;
        for _ in 0..10 {
            let r = common::get(http, "app.example.com", "/", &[])?;
            assert_eq!(r.status, 200);
            assert_eq!(
                r.pod(),
                "old-7d9f8b6c4-aaaaa",
                "the older Gateway's route answers"
            );
        }

        let st: serde_json::Value = serde_json::from_slice(&proxy.admin("/status")?.body)?;
        let listener = |gw: &str| -> Result<serde_json::Value> {
            st["gateways"]
                .as_array()
                .and_then(|g| g.iter().find(|g| g["name"] == gw))
                .map(|g| g["status"]["listeners"][0].clone())
                .with_context(|| format!("no status for Gateway {gw}"))
        };
        let condition = |l: &serde_json::Value, t: &str| -> (String, String) {
            l["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == t))
                .map(|c| {
                    (
                        c["status"].as_str().unwrap_or("").to_string(),
                        c["reason"].as_str().unwrap_or("").to_string(),
                    )
                })
                .unwrap_or_default()
        };
        let newer = listener("a-newer")?;
        assert_eq!(
            condition(&newer, "Conflicted"),
            ("True".into(), "HostnameConflict".into())
        );
        assert_eq!(condition(&newer, "Accepted").0, "False");
        assert_eq!(condition(&newer, "Programmed").0, "False");
        assert_eq!(newer["attachedRoutes"], 0);
        let older = listener("b-older")?;
        assert_eq!(
            condition(&older, "Conflicted"),
            ("False".into(), "NoConflicts".into())
        );
        assert_eq!(
            condition(&older, "Programmed"),
            ("True".into(), "Programmed".into())
        );
        assert_eq!(older["attachedRoutes"], 1);
        let diags = proxy.admin("/diagnostics")?.text();
        assert!(
            diags.contains("a-newer") && diags.contains("older Gateway default/b-older"),
            "the collision is reported: {diags}"
        );

        // The older Gateway goes: the newer one is no longer in conflict and serves the host.
        std::fs::remove_file(d.join("older.yaml"))?;
        proxy.wait_for(Duration::from_secs(5), || {
            common::get(http, "app.example.com", "/", &[])
                .is_ok_and(|r| r.status == 200 && r.pod() == "new-7d9f8b6c4-bbbbb")
        })?;
        Ok(())
    })
    .await??;
    Ok(())
}
