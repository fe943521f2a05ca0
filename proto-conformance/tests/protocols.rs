//! The non-HTTP echo modes (gRPC, TCP, UDP, the DNS stand-in) answering the harness's own clients directly, on
//! loopback, without a proxy, and the harness's comparisons of those answers with passing and failing
//! expectations.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use proto_conformance::echo::dns::{DnsConfig, DnsServer, RCODE_NOERROR, RCODE_REFUSED};
use proto_conformance::echo::grpc::{method_path, GrpcEchoConfig, GrpcEchoServer};
use proto_conformance::echo::tcp::{TcpEchoConfig, TcpEchoServer, WELCOME};
use proto_conformance::echo::udp::{UdpEchoConfig, UdpEchoServer};
use proto_conformance::echo::{EchoTls, PodIdentity};
use proto_conformance::harness::certs::CertStore;
use proto_conformance::harness::client::{ClientContext, TlsSpec};
use proto_conformance::harness::grpc::{self, check_rpc, GrpcExpectation, RpcOutcome, RpcSpec};
use proto_conformance::harness::l4::{self, TcpExpectation, TlsDial, UdpExpectation};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tonic::Code;

const NS: &str = "gateway-conformance-infra";
const LOCAL: &str = "127.0.0.1:0";

fn local() -> SocketAddr {
    LOCAL.parse().expect("addr")
}

fn identity(pod: &str) -> PodIdentity {
    PodIdentity {
        pod_name: pod.into(),
        namespace: NS.into(),
        ingress_name: String::new(),
        service_name: "svc-a".into(),
    }
}

/// The backend certificate of the suite (`tls-checks-certificate`: abc.example.com, signed by the tls-checks
/// CA), and the CA PEM.
fn backend_tls(certs: &CertStore) -> (EchoTls, String) {
    let get = |r: &str| certs.lookup(r).expect(r).to_string();
    (
        EchoTls {
            addr: local(),
            cert_pem: get("secret:gateway-conformance-infra/tls-checks-certificate:tls.crt"),
            key_pem: get("secret:gateway-conformance-infra/tls-checks-certificate:tls.key"),
            client_ca_pem: None,
        },
        get("configmap:gateway-conformance-infra/tls-checks-ca-certificate:ca.crt"),
    )
}

fn ctx(certs: &CertStore) -> ClientContext {
    ClientContext {
        known_sans: Arc::new(certs.dns_sans.clone()),
    }
}

fn trust(server_name: &str, ca: &str) -> TlsSpec {
    TlsSpec {
        server_name: server_name.into(),
        trust_pems: vec![ca.to_string()],
        client_cert: None,
        cert_requested: Arc::new(AtomicBool::new(false)),
    }
}

fn rpc(connect: SocketAddr, method: &str) -> RpcSpec {
    RpcSpec {
        connect,
        tls: None,
        authority: "grpc.example.com".into(),
        path: method_path(method),
        metadata: vec![("Version".into(), "two".into())],
        timeout: Duration::from_secs(10),
    }
}

fn expect(code: Option<Code>, method: &str, backend: &str) -> GrpcExpectation {
    GrpcExpectation {
        code,
        method: method_path(method),
        backend: backend.into(),
        namespace: NS.into(),
    }
}

#[tokio::test]
async fn grpc_echo_answers_echo_echotwo_and_not_echothree() {
    let certs = CertStore::generate().expect("certs");
    let (tls, ca) = backend_tls(&certs);
    let server = GrpcEchoServer::start(GrpcEchoConfig {
        identity: identity("grpc-infra-backend-v1-abc-def"),
        addr: local(),
        tls: Some(tls),
        log_to_stdout: false,
    })
    .await
    .expect("start");
    let cx = ctx(&certs);

    for method in ["Echo", "EchoTwo"] {
        let out = grpc::call(&rpc(server.addr(), method), &cx).await;
        let RpcOutcome::Status {
            code: Code::Ok,
            response: Some(resp),
            ..
        } = &out
        else {
            panic!("{method}: {}", out.describe());
        };
        let a = resp.assertions.as_ref().expect("assertions");
        assert_eq!(a.fully_qualified_method, method_path(method));
        assert_eq!(a.authority, "grpc.example.com");
        assert_eq!(a.header_values(":authority"), ["grpc.example.com"]);
        assert_eq!(
            a.header_values("version"),
            ["two"],
            "metadata keys go lower case"
        );
        assert_eq!(a.header_values("content-type"), ["application/grpc"]);
        assert!(a.header_values("te").is_empty(), "te is reserved");
        let c = a.context.as_ref().expect("context");
        assert_eq!(
            (
                c.namespace.as_str(),
                c.pod.as_str(),
                c.service_name.as_str()
            ),
            (NS, "grpc-infra-backend-v1-abc-def", "svc-a")
        );
        assert!(a.tls_assertions.is_none(), "h2c has no TLS assertions");
        assert_eq!(
            check_rpc(
                &expect(Some(Code::Ok), method, "grpc-infra-backend-v1"),
                &out
            ),
            Ok(())
        );
        assert_eq!(out.pod(), Some("grpc-infra-backend-v1-abc-def"));
        // Failing comparisons: another backend, another namespace, another method, a failure expected.
        let wrong_backend = check_rpc(
            &expect(Some(Code::Ok), method, "grpc-infra-backend-v2"),
            &out,
        );
        assert!(wrong_backend
            .unwrap_err()
            .contains("pod name to start with"));
        let mut wrong_ns = expect(Some(Code::Ok), method, "");
        wrong_ns.namespace = "other".into();
        assert!(check_rpc(&wrong_ns, &out)
            .unwrap_err()
            .contains("namespace"));
        let other = if method == "Echo" { "EchoTwo" } else { "Echo" };
        assert!(check_rpc(&expect(Some(Code::Ok), other, ""), &out)
            .unwrap_err()
            .contains("expected path"));
        assert!(check_rpc(&expect(None, method, ""), &out).is_err());
        assert!(check_rpc(&expect(Some(Code::Unimplemented), method, ""), &out).is_err());
    }

    let three = grpc::call(&rpc(server.addr(), "EchoThree"), &cx).await;
    assert!(
        matches!(
            three,
            RpcOutcome::Status {
                code: Code::Unimplemented,
                ..
            }
        ),
        "{}",
        three.describe()
    );
    assert_eq!(
        check_rpc(&expect(Some(Code::Unimplemented), "EchoThree", ""), &three),
        Ok(())
    );
    assert_eq!(check_rpc(&expect(None, "EchoThree", ""), &three), Ok(()));
    assert!(check_rpc(&expect(Some(Code::Ok), "EchoThree", ""), &three).is_err());
    let mut unknown = rpc(server.addr(), "Echo");
    unknown.path = "/other.Service/Echo".into();
    let out = grpc::call(&unknown, &cx).await;
    assert!(matches!(
        out,
        RpcOutcome::Status {
            code: Code::Unimplemented,
            ..
        }
    ));

    // Over TLS (ALPN h2): the TLS assertions carry the SNI.
    let mut secure = rpc(server.tls_addr().expect("tls"), "Echo");
    secure.tls = Some(trust("abc.example.com", &ca));
    let out = grpc::call(&secure, &cx).await;
    let RpcOutcome::Status {
        code: Code::Ok,
        response: Some(resp),
        ..
    } = &out
    else {
        panic!("TLS: {}", out.describe());
    };
    let t = resp
        .assertions
        .as_ref()
        .and_then(|a| a.tls_assertions.as_ref())
        .expect("TLS assertions");
    assert_eq!(t.server_name, "abc.example.com");
    assert_eq!(t.negotiated_protocol, "h2");
    assert!(t.version.starts_with("TLSv1."));

    // Nobody listening: no answer, which satisfies no expectation, not even a failure.
    let closed = {
        let l = std::net::TcpListener::bind(LOCAL).expect("bind");
        l.local_addr().expect("addr")
    };
    let out = grpc::call(&rpc(closed, "Echo"), &cx).await;
    assert!(matches!(out, RpcOutcome::NoAnswer(_)), "{}", out.describe());
    assert!(check_rpc(&expect(None, "Echo", ""), &out).is_err());
    assert!(check_rpc(&expect(Some(Code::Unimplemented), "Echo", ""), &out).is_err());

    // An HTTP/2 server that is not gRPC and answers 404: grpc-go's HTTP-status mapping (404 -> Unimplemented).
    let plain_h2 = tokio::net::TcpListener::bind(LOCAL).await.expect("bind");
    let plain_addr = plain_h2.local_addr().expect("addr");
    let h2_task = tokio::spawn(async move {
        if let Ok((stream, _)) = plain_h2.accept().await {
            let svc = hyper::service::service_fn(|_req| async {
                let mut resp = http::Response::new(http_body_util::Full::new(
                    bytes::Bytes::from_static(b"404 page not found\n"),
                ));
                *resp.status_mut() = http::StatusCode::NOT_FOUND;
                resp.headers_mut()
                    .insert("content-type", http::HeaderValue::from_static("text/plain"));
                Ok::<_, std::convert::Infallible>(resp)
            });
            let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        }
    });
    let out = grpc::call(&rpc(plain_addr, "Echo"), &cx).await;
    assert!(
        matches!(
            out,
            RpcOutcome::Status {
                code: Code::Unimplemented,
                ..
            }
        ),
        "{}",
        out.describe()
    );
    h2_task.abort();
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn tcp_echo_dialogue_plain_and_tls() {
    let certs = CertStore::generate().expect("certs");
    let (tls, ca) = backend_tls(&certs);
    let server = TcpEchoServer::start(TcpEchoConfig {
        identity: identity("tcp-backend-5d7c9b8f4-abcde"),
        addr: local(),
        tls: Some(tls),
        log_to_stdout: false,
    })
    .await
    .expect("start");
    let cx = ctx(&certs);
    let timeout = Duration::from_secs(10);

    let plain = l4::tcp_dialogue(server.addr(), None, &cx, timeout)
        .await
        .expect("plain dialogue");
    assert_eq!(plain.welcome, WELCOME);
    assert_eq!(plain.pong, "PONG\n");
    assert_eq!(plain.is_tls, "false\n");
    let good = TcpExpectation {
        backend_is_tls: false,
        backend: "tcp-backend".into(),
        namespace: NS.into(),
        hostname: String::new(),
    };
    let payload = l4::check_tcp(&good, &plain).expect("matches");
    assert_eq!(payload.tcpport, server.addr().port().to_string());
    assert!(!payload.is_tls && payload.tls.is_none());
    assert_eq!(payload.service, "svc-a");
    let failing = [
        TcpExpectation {
            backend_is_tls: true,
            ..good.clone()
        },
        TcpExpectation {
            backend: "tcp-back".into(),
            ..good.clone()
        },
        TcpExpectation {
            namespace: "other".into(),
            ..good.clone()
        },
        TcpExpectation {
            hostname: "abc.example.com".into(),
            ..good.clone()
        },
    ];
    for exp in &failing {
        assert!(
            l4::check_tcp(exp, &plain).is_err(),
            "{exp:?} must not match"
        );
    }
    let mut garbled = plain.clone();
    garbled.welcome = "hello\n".into();
    assert!(l4::check_tcp(&good, &garbled).is_err());

    // TLS with SNI and the trusted CA: the backend reports the SNI and IS_TLS true.
    let spec = trust("abc.example.com", &ca);
    let secure = l4::tcp_dialogue(server.tls_addr().expect("tls"), Some(&spec), &cx, timeout)
        .await
        .expect("TLS dialogue");
    let exp = TcpExpectation {
        backend_is_tls: true,
        hostname: "abc.example.com".into(),
        ..good.clone()
    };
    let payload = l4::check_tcp(&exp, &secure).expect("matches");
    let t = payload.tls.expect("tls object");
    assert!(
        t.version.starts_with("TLS 1."),
        "Go's VersionName: {}",
        t.version
    );
    assert!(t.negotiated_protocol.is_empty(), "no ALPN");
    assert!(l4::check_tcp(
        &TcpExpectation {
            hostname: "other.example.com".into(),
            ..exp.clone()
        },
        &secure
    )
    .is_err());
    // A name the certificate does not carry fails the handshake.
    let wrong = trust("tls.example.com", &ca);
    assert!(
        l4::tcp_dialogue(server.tls_addr().expect("tls"), Some(&wrong), &cx, timeout)
            .await
            .is_err()
    );

    // EchoSendOnce, and the raw protocol: unknown lines are ignored, `\r\n` is accepted.
    assert_eq!(
        l4::tcp_echo_once(server.addr(), timeout).await.as_deref(),
        Ok("tcp-backend-5d7c9b8f4-abcde")
    );
    let stream = tokio::net::TcpStream::connect(server.addr())
        .await
        .expect("connect");
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    assert_eq!(
        lines.next_line().await.expect("read").as_deref(),
        Some(WELCOME.trim_end())
    );
    write.write_all(b"HELLO\nPING\r\n").await.expect("write");
    assert_eq!(
        lines.next_line().await.expect("read").as_deref(),
        Some("PONG")
    );
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn udp_echo_and_dns_answers() {
    let server = UdpEchoServer::start(UdpEchoConfig {
        identity: identity("udp-backend-v1-7f9c8d6b5-x2x9k"),
        addr: local(),
        log_to_stdout: false,
    })
    .await
    .expect("start");
    let timeout = Duration::from_secs(5);
    let answer = l4::udp_exchange(server.addr(), l4::UDP_PROBE, timeout)
        .await
        .expect("answer");
    let env = l4::check_udp(
        &UdpExpectation {
            service: "svc-a".into(),
            namespace: NS.into(),
        },
        &answer,
    )
    .expect("matches")
    .expect("decoded");
    assert_eq!(env.request.as_bytes(), l4::UDP_PROBE);
    assert_eq!(env.pod, "udp-backend-v1-7f9c8d6b5-x2x9k");
    assert!(l4::check_udp(
        &UdpExpectation {
            service: "svc-b".into(),
            namespace: String::new(),
        },
        &answer
    )
    .is_err());
    assert!(l4::check_udp(
        &UdpExpectation {
            service: String::new(),
            namespace: "other".into(),
        },
        &answer
    )
    .is_err());
    // With nothing to check any answer passes; with something to check, a non-JSON answer fails.
    assert!(l4::check_udp(&UdpExpectation::default(), b"not json").is_ok());
    assert!(l4::check_udp(
        &UdpExpectation {
            service: "svc-a".into(),
            namespace: String::new(),
        },
        b"not json"
    )
    .is_err());
    assert_eq!(
        l4::udp_echo_once(server.addr(), timeout).await.as_deref(),
        Ok("udp-backend-v1-7f9c8d6b5-x2x9k")
    );
    server.shutdown_and_wait().await;

    let dns = DnsServer::start(DnsConfig {
        addr: local(),
        zones: vec!["foo.bar.com".into()],
        log_to_stdout: false,
    })
    .await
    .expect("dns");
    let reply = l4::dns_query(dns.addr(), "foo.bar.com.", 0x4242, timeout)
        .await
        .expect("answer");
    assert_eq!((reply.rcode, reply.additional), (RCODE_NOERROR, 2));
    let refused = l4::dns_query(dns.addr(), "example.org.", 7, timeout)
        .await
        .expect("an answer, even if refused");
    assert_eq!(refused.rcode, RCODE_REFUSED);
    // Replies that do not answer the query are rejected.
    let query = proto_conformance::echo::dns::build_query(1, "foo.bar.com", 1).expect("query");
    let client: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
    let mut reply = proto_conformance::echo::dns::answer(&query, client, &["foo.bar.com".into()])
        .expect("reply");
    assert!(l4::check_dns_reply(&query, &reply).is_ok());
    reply[1] ^= 1;
    assert!(l4::check_dns_reply(&query, &reply).is_err(), "another id");
    assert!(
        l4::check_dns_reply(&query, &query).is_err(),
        "not a response"
    );
    dns.shutdown_and_wait().await;
}

#[tokio::test]
async fn tls_rejection_needs_a_close_or_reset() {
    let timeout = Duration::from_secs(5);
    // A gateway that accepts and closes: rejected.
    let closer = tokio::net::TcpListener::bind(LOCAL).await.expect("bind");
    let closer_addr = closer.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        for _ in 0..4 {
            if let Ok((s, _)) = closer.accept().await {
                drop(s);
            }
        }
    });
    assert!(matches!(
        l4::tls_dial(closer_addr, "example.com", timeout).await,
        TlsDial::Rejected(_)
    ));
    task.abort();
    // Nothing listening: not a rejection (upstream retries).
    let closed = {
        let l = std::net::TcpListener::bind(LOCAL).expect("bind");
        l.local_addr().expect("addr")
    };
    assert!(matches!(
        l4::tls_dial(closed, "example.com", timeout).await,
        TlsDial::NotRejected(_)
    ));
    // A TLS server that answers the handshake: not a rejection either.
    let certs = CertStore::generate().expect("certs");
    let (tls, _) = backend_tls(&certs);
    let server = TcpEchoServer::start(TcpEchoConfig {
        identity: identity("tcp-backend-1-2"),
        addr: local(),
        tls: Some(tls),
        log_to_stdout: false,
    })
    .await
    .expect("start");
    assert!(matches!(
        l4::tls_dial(server.tls_addr().expect("tls"), "abc.example.com", timeout).await,
        TlsDial::NotRejected(_)
    ));
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn echo_server_binary_runs_every_mode() {
    use tokio::io::AsyncBufReadExt as _;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_echo-server"))
        .args(["--namespace", NS])
        .args(["--listen", LOCAL, "--mode", "tcp", "--pod", "tcp-v1-a-b"])
        .args([
            "--listen",
            LOCAL,
            "--mode",
            "udp",
            "--pod",
            "udp-v1-a-b",
            "--service",
            "u",
        ])
        .args(["--listen", LOCAL, "--mode", "grpc", "--pod", "grpc-v1-a-b"])
        .args([
            "--listen",
            LOCAL,
            "--mode",
            "dns",
            "--dns-zone",
            "foo.bar.com",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn echo-server");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let mut ready = Vec::new();
    let read = async {
        while ready.len() < 4 {
            let line = lines
                .next_line()
                .await
                .expect("read stderr")
                .expect("echo-server exited early");
            if line.starts_with("echo-server: ready") {
                ready.push(line);
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("ready lines");
    let field = |line: &str, key: &str| -> SocketAddr {
        line.split(' ')
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .expect("field")
            .parse()
            .expect("addr")
    };
    let timeout = Duration::from_secs(5);
    assert_eq!(
        l4::tcp_echo_once(field(&ready[0], "tcp"), timeout)
            .await
            .as_deref(),
        Ok("tcp-v1-a-b")
    );
    assert_eq!(
        l4::udp_echo_once(field(&ready[1], "udp"), timeout)
            .await
            .as_deref(),
        Ok("udp-v1-a-b")
    );
    let out = grpc::call(
        &rpc(field(&ready[2], "grpc"), "Echo"),
        &ClientContext::default(),
    )
    .await;
    assert_eq!(out.pod(), Some("grpc-v1-a-b"), "{}", out.describe());
    let dns = l4::dns_query(field(&ready[3], "dns"), "foo.bar.com", 9, timeout)
        .await
        .expect("dns");
    assert_eq!(dns.rcode, RCODE_NOERROR);
    let _ = child.start_kill();
    let _ = child.wait().await;

    let bad = tokio::process::Command::new(env!("CARGO_BIN_EXE_echo-server"))
        .args(["--listen", LOCAL, "--mode", "udp", "--https-listen", LOCAL])
        .output()
        .await
        .expect("run");
    assert_ne!(bad.status.code(), Some(0), "udp mode has no TLS listener");
}
