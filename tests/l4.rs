//! End-to-end TCPRoute, TLSRoute (Terminate) and UDPRoute: the real binary forwarding to TCP and UDP echo servers
//! on loopback. Weighted backends, half-close, the TCP idle timeout, TLS termination with the listener's
//! certificate, UDP flows (one backend per flow, order kept), the flow-table bound with its drop metric, and flow
//! expiry.

mod common;

use anyhow::{bail, Context, Result};
use common::certs::tls_secret;
use common::{free_port, Proxy, CLASSES};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A TCP echo server on 127.0.0.1: greets each connection with `name\n`, echoes every byte, and half-closes its
/// side once the client has half-closed its own (so a client sees the echo of everything it sent, then EOF).
fn tcp_echo(name: &'static str) -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let port = l.local_addr()?.port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let _ = s.write_all(format!("{name}\n").as_bytes());
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = s.shutdown(Shutdown::Write);
            });
        }
    });
    Ok(port)
}

/// A UDP echo server on 127.0.0.1 answering each datagram with `name:` and the datagram.
fn udp_echo(name: &'static str) -> Result<u16> {
    let s = UdpSocket::bind("127.0.0.1:0")?;
    let port = s.local_addr()?.port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let mut out = format!("{name}:").into_bytes();
            out.extend_from_slice(&buf[..n]);
            let _ = s.send_to(&out, from);
        }
    });
    Ok(port)
}

/// A Service `ns/name` with one port (`protocol`) and an EndpointSlice with one endpoint at 127.0.0.1:`target`.
fn service(ns: &str, name: &str, port: u16, target: u16, protocol: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  ports: [{{name: p, port: {port}, protocol: {protocol}}}]\n---\n\
apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-0\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{name: p, port: {target}, protocol: {protocol}}}]\nendpoints: [{{addresses: [127.0.0.1]}}]\n---\n"
    )
}

fn write_manifests(yaml: &str) -> Result<(tempfile::TempDir, std::path::PathBuf)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("l4.yaml");
    std::fs::write(&path, yaml)?;
    Ok((dir, path))
}

/// Connects to the proxy's `port`, retrying while the listener is not bound yet (bounded).
fn connect(port: u16) -> Result<TcpStream> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(10)))?;
                return Ok(s);
            }
            Err(e) if Instant::now() > deadline => return Err(e.into()),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Connects to the proxy's `port` and reads the backend's greeting line (at most 64 bytes); returns the stream
/// and the name the backend greeted with.
fn connect_greeted(port: u16) -> Result<(TcpStream, String)> {
    let mut s = connect(port)?;
    let mut name = Vec::new();
    let mut byte = [0u8; 1];
    while name.len() < 64 {
        s.read_exact(&mut byte)?;
        if byte[0] == b'\n' {
            return Ok((s, String::from_utf8_lossy(&name).into_owned()));
        }
        name.push(byte[0]);
    }
    bail!("no greeting line in {name:?}")
}

/// Writes `msg` on an open connection and reads its echo back (bounded by the read timeout).
fn echo_round(s: &mut TcpStream, msg: &[u8]) -> Result<()> {
    s.write_all(msg)?;
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back)?;
    if back != msg {
        bail!("sent {msg:?}, got {back:?} back");
    }
    Ok(())
}

/// A self-signed certificate for tls.example.com, and the Secret `l4/cert` that holds it.
fn listener_cert() -> Result<(rcgen::Certificate, String)> {
    let key = rcgen::KeyPair::generate()?;
    let cert =
        rcgen::CertificateParams::new(vec!["tls.example.com".to_string()])?.self_signed(&key)?;
    let secret = tls_secret("l4", "cert", &(cert.pem(), key.serialize_pem()));
    Ok((cert, secret))
}

/// Sends `msg`, half-closes, and reads everything the proxy sends back until EOF.
fn exchange(port: u16, msg: &str) -> Result<String> {
    let mut s = connect(port)?;
    s.write_all(msg.as_bytes())?;
    s.shutdown(Shutdown::Write)?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[test]
fn tcproute_weights_half_close_and_idle_timeout() -> Result<()> {
    let (a, b, c) = (tcp_echo("a")?, tcp_echo("b")?, tcp_echo("c")?);
    let port = free_port();
    let yaml = format!(
        "{CLASSES}{}{}{}\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: l4}}
spec:
  gatewayClassName: portcullis
  listeners:
  - {{name: tcp, protocol: TCP, port: {port}, allowedRoutes: {{kinds: [{{kind: TCPRoute}}]}}}}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {{name: r, namespace: l4}}
spec:
  parentRefs: [{{name: gw, sectionName: tcp}}]
  rules:
  - backendRefs:
    - {{name: a, port: 3000, weight: 3}}
    - {{name: b, port: 3000, weight: 1}}
    - {{name: c, port: 3000, weight: 0}}
",
        service("l4", "a", 3000, a, "TCP"),
        service("l4", "b", 3000, b, "TCP"),
        service("l4", "c", 3000, c, "TCP"),
    );
    let (_dir, path) = write_manifests(&yaml)?;
    let proxy = Proxy::start(&path, free_port(), &["--tcp-idle-timeout", "1"])?;

    // Half-close: the client's end reaches the backend, and the echo of what it sent still comes back.
    let out = exchange(port, "hello through a half-closed connection")?;
    let (name, echoed) = out.split_once('\n').context("no greeting")?;
    assert!(name == "a" || name == "b", "{out:?}");
    assert_eq!(echoed, "hello through a half-closed connection");

    // Weights 3:1:0 over 200 connections (each picks once).
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for i in 0..200 {
        let msg = format!("m{i}");
        let out = exchange(port, &msg)?;
        let (name, echoed) = out.split_once('\n').context("no greeting")?;
        assert_eq!(echoed, msg);
        *counts.entry(name.to_string()).or_default() += 1;
    }
    let (na, nb) = (
        counts.get("a").copied().unwrap_or(0),
        counts.get("b").copied().unwrap_or(0),
    );
    assert_eq!(
        counts.get("c"),
        None,
        "weight 0 got connections: {counts:?}"
    );
    assert_eq!(na + nb, 200);
    // Expected 150:50; the bounds are more than 4 standard deviations (about 6.1) away.
    assert!((120..=180).contains(&na), "{counts:?}");

    // Idle timeout (1 s): a quiet connection is closed...
    let (mut quiet, _) = connect_greeted(port)?;
    let start = Instant::now();
    let mut rest = Vec::new();
    quiet.read_to_end(&mut rest)?;
    let closed_after = start.elapsed();
    assert!(rest.is_empty(), "{rest:?}");
    assert!(
        closed_after >= Duration::from_millis(700) && closed_after < Duration::from_secs(4),
        "closed after {closed_after:?}"
    );
    // ... and a connection that keeps talking for 2.5 s is not.
    let (mut busy, _) = connect_greeted(port)?;
    for i in 0..10 {
        std::thread::sleep(Duration::from_millis(250));
        echo_round(&mut busy, format!("k{i}").as_bytes())
            .with_context(|| format!("busy connection closed after {i} exchanges"))?;
    }
    drop(proxy);
    Ok(())
}

#[test]
fn tlsroute_terminate() -> Result<()> {
    let backend = tcp_echo("plain")?;
    let port = free_port();
    let (cert, secret) = listener_cert()?;
    let yaml = format!(
        "{CLASSES}{}{secret}\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: l4}}
spec:
  gatewayClassName: portcullis
  listeners:
  - name: tls
    protocol: TLS
    port: {port}
    hostname: tls.example.com
    tls: {{mode: Terminate, certificateRefs: [{{name: cert}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {{name: r, namespace: l4}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [tls.example.com]
  rules:
  - backendRefs: [{{name: plain, port: 3000}}]
",
        service("l4", "plain", 3000, backend, "TCP"),
    );
    let (_dir, path) = write_manifests(&yaml)?;
    let proxy = Proxy::start(&path, free_port(), &[])?;

    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(cert.pem().as_bytes()) {
        roots.add(c?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let config = Arc::new(config);
    let mut conn =
        rustls::ClientConnection::new(config.clone(), ServerName::try_from("tls.example.com")?)?;
    let mut sock = connect(port)?;
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    tls.write_all(b"secret words")?;
    tls.flush()?;
    // The backend speaks plain TCP: it greets and echoes the decrypted bytes, which come back encrypted.
    let mut buf = vec![0u8; "plain\nsecret words".len()];
    tls.read_exact(&mut buf)?;
    assert_eq!(String::from_utf8_lossy(&buf), "plain\nsecret words");
    // Not HTTP: no ALPN protocol is chosen.
    assert_eq!(tls.conn.alpn_protocol(), None);
    let presented = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec());
    assert_eq!(presented.as_deref(), Some(cert.der().as_ref()));

    // An SNI no route serves: the connection is closed before a handshake completes.
    let mut other =
        rustls::ClientConnection::new(config, ServerName::try_from("other.example.com")?)?;
    let mut sock = connect(port)?;
    let mut tls = rustls::Stream::new(&mut other, &mut sock);
    let res = tls.write_all(b"x").and_then(|_| tls.flush());
    let mut one = [0u8; 1];
    assert!(
        res.is_err() || tls.read(&mut one).map(|n| n == 0).unwrap_or(true),
        "a connection for an unrouted SNI was served"
    );
    drop(proxy);
    Ok(())
}

/// Sends `msg` from `sock` to the proxy and waits (bounded) for an answer.
fn udp_ask(sock: &UdpSocket, port: u16, msg: &str, wait: Duration) -> Result<Option<String>> {
    sock.set_read_timeout(Some(wait))?;
    sock.send_to(msg.as_bytes(), ("127.0.0.1", port))?;
    let mut buf = [0u8; 2048];
    match sock.recv_from(&mut buf) {
        Ok((n, _)) => Ok(Some(String::from_utf8_lossy(&buf[..n]).into_owned())),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// The value of the metric line that starts with `series` in the proxy's /metrics.
fn metric(proxy: &Proxy, series: &str) -> Result<f64> {
    let text = proxy.admin("/metrics")?.text();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix(series) {
            return Ok(v.trim().parse()?);
        }
    }
    bail!("{series} not in /metrics:\n{text}")
}

#[test]
fn udproute_flows_bound_and_expiry() -> Result<()> {
    let (u1, u2) = (udp_echo("u1")?, udp_echo("u2")?);
    let port = free_port();
    let yaml = format!(
        "{CLASSES}{}{}\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: l4}}
spec:
  gatewayClassName: portcullis
  listeners:
  - {{name: udp, protocol: UDP, port: {port}}}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: UDPRoute
metadata: {{name: r, namespace: l4}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - backendRefs:
    - {{name: u1, port: 5300, weight: 1}}
    - {{name: u2, port: 5300, weight: 1}}
",
        service("l4", "u1", 5300, u1, "UDP"),
        service("l4", "u2", 5300, u2, "UDP"),
    );
    let (_dir, path) = write_manifests(&yaml)?;
    let proxy = Proxy::start(
        &path,
        free_port(),
        &["--udp-max-flows", "2", "--udp-idle-timeout", "1"],
    )?;
    let listeners = proxy.admin("/listeners")?.text();
    assert!(listeners.contains("\"UDP\""), "{listeners}");

    // One flow: every datagram goes to the backend the flow picked, and the answers keep the order.
    let a = UdpSocket::bind("127.0.0.1:0")?;
    let first = udp_ask(&a, port, "a0", Duration::from_secs(5))?.context("no answer")?;
    let (backend, _) = first.split_once(':').context("bad answer")?;
    let backend = backend.to_string();
    a.set_read_timeout(Some(Duration::from_secs(5)))?;
    for i in 1..=50 {
        a.send_to(format!("a{i}").as_bytes(), ("127.0.0.1", port))?;
    }
    let mut buf = [0u8; 2048];
    for i in 1..=50 {
        let (n, _) = a.recv_from(&mut buf).context("answer lost")?;
        assert_eq!(
            String::from_utf8_lossy(&buf[..n]),
            format!("{backend}:a{i}"),
            "flow moved or reordered"
        );
    }

    // A second client is a second flow; a third exceeds --udp-max-flows 2 and is dropped and counted.
    let b = UdpSocket::bind("127.0.0.1:0")?;
    assert!(udp_ask(&b, port, "b0", Duration::from_secs(5))?.is_some());
    assert_eq!(metric(&proxy, "portcullis_udp_flows")?, 2.0);
    let c = UdpSocket::bind("127.0.0.1:0")?;
    let dropped_before = metric(
        &proxy,
        "portcullis_udp_datagrams_dropped_total{reason=\"flow_table_full\"}",
    )?;
    assert_eq!(
        udp_ask(&c, port, "c0", Duration::from_millis(300))?,
        None,
        "a flow beyond the bound was served"
    );
    let dropped_after = metric(
        &proxy,
        "portcullis_udp_datagrams_dropped_total{reason=\"flow_table_full\"}",
    )?;
    assert!(
        dropped_after >= dropped_before + 1.0,
        "{dropped_before} -> {dropped_after}"
    );

    // After 1 s without traffic the flows expire, and the third client is served.
    let served = proxy.wait_for(Duration::from_secs(6), || {
        matches!(
            udp_ask(&c, port, "c1", Duration::from_millis(200)),
            Ok(Some(ref s)) if s.ends_with(":c1")
        )
    })?;
    assert!(served >= Duration::from_millis(500), "{served:?}");
    drop(proxy);
    Ok(())
}

/// The value of `key` in the proxy's `GET /edge` counters.
fn edge_counter(proxy: &Proxy, key: &str) -> Result<u64> {
    let stats: serde_json::Value = serde_json::from_slice(&proxy.admin("/edge")?.body)?;
    stats[key]
        .as_u64()
        .with_context(|| format!("no {key} in GET /edge: {stats}"))
}

/// Reads from `s` until the proxy closes it (bounded by a 4 s read timeout); returns how long that took.
fn closed_after(s: &mut TcpStream, start: Instant) -> Result<Duration> {
    s.set_read_timeout(Some(Duration::from_secs(4)))?;
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(start.elapsed()),
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                bail!("still open after {:?}", start.elapsed())
            }
            // A reset is a close too.
            Err(_) => return Ok(start.elapsed()),
        }
    }
}

#[test]
fn tcp_and_tls_listeners_keep_the_connection_limit_and_the_handshake_timeout() -> Result<()> {
    // --max-connections-per-listener applies to TCP and TLS listeners as to HTTP ones (per listener); the header
    // timeout holds a TLS Terminate handshake, and does not cut TCP connections (they have --tcp-idle-timeout).
    let backend = tcp_echo("echo")?;
    let (tcp_port, tls_port) = (free_port(), free_port());
    let (_, secret) = listener_cert()?;
    let yaml = format!(
        "{CLASSES}{}{secret}\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: l4}}
spec:
  gatewayClassName: portcullis
  listeners:
  - {{name: tcp, protocol: TCP, port: {tcp_port}, allowedRoutes: {{kinds: [{{kind: TCPRoute}}]}}}}
  - name: tls
    protocol: TLS
    port: {tls_port}
    hostname: tls.example.com
    tls: {{mode: Terminate, certificateRefs: [{{name: cert}}]}}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {{name: tcp, namespace: l4}}
spec:
  parentRefs: [{{name: gw, sectionName: tcp}}]
  rules:
  - backendRefs: [{{name: echo, port: 3000}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {{name: tls, namespace: l4}}
spec:
  parentRefs: [{{name: gw, sectionName: tls}}]
  hostnames: [tls.example.com]
  rules:
  - backendRefs: [{{name: echo, port: 3000}}]
",
        service("l4", "echo", 3000, backend, "TCP"),
    );
    let (_dir, path) = write_manifests(&yaml)?;
    let proxy = Proxy::start(
        &path,
        free_port(),
        &[
            "--max-connections-per-listener",
            "3",
            "--header-timeout",
            "1",
        ],
    )?;

    // Three TCP connections are forwarded (each gets the backend's greeting)...
    let mut held = Vec::new();
    for _ in 0..3 {
        let (s, name) = connect_greeted(tcp_port)?;
        assert_eq!(name, "echo");
        held.push(s);
    }
    // ... a fourth is closed at once, without reaching the backend.
    let start = Instant::now();
    let mut extra = connect(tcp_port)?;
    let took = closed_after(&mut extra, start)?;
    assert!(took < Duration::from_secs(1), "closed after {took:?}");
    assert!(edge_counter(&proxy, "connections_refused")? >= 1);
    // The header timeout (1 s) does not apply to TCP: the held connections still echo after 1.5 s.
    std::thread::sleep(Duration::from_millis(1500));
    for s in &mut held {
        echo_round(s, b"ping").context("a TCP connection was cut by the header timeout")?;
    }
    // Closing one gives its slot back.
    drop(held.pop());
    proxy.wait_for(Duration::from_secs(5), || {
        connect_greeted(tcp_port).is_ok_and(|(_, name)| name == "echo")
    })?;

    // TLS Terminate: a client that sends its ClientHello and never finishes the handshake is closed after the
    // header timeout (it would otherwise hold a connection slot for as long as it likes).
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let mut client =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("tls.example.com")?)?;
    let mut hello = Vec::new();
    client.write_tls(&mut hello)?;
    let timeouts_before = edge_counter(&proxy, "handshake_timeouts")?;
    let start = Instant::now();
    let mut stalled = connect(tls_port)?;
    stalled.write_all(&hello)?;
    let took = closed_after(&mut stalled, start)?;
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
    assert_eq!(
        edge_counter(&proxy, "handshake_timeouts")?,
        timeouts_before + 1
    );
    drop(proxy);
    Ok(())
}
