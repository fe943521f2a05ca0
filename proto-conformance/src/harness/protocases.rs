//! Runs the gRPC and L4 cases of a world with upstream's procedures:
//!
//! * gRPC: `MakeRequestAndExpectEventuallyConsistentResponse` (3 consecutive matching RPCs within the
//!   consistency time) or, for `expect_failure`, 3 consecutive non-OK RPCs; a weighted case then samples 500
//!   RPCs (10 at a time) and checks the shares (±0.05, up to 10 attempts);
//! * `tcp`: the whole dialogue until it matches once (upstream's `assert.Eventually`);
//! * `tcp_echo` / `udp_echo`: one echo (any pod, or the expected Service/Namespace) until it answers once; a
//!   weighted case then samples 500 connections or datagrams; in the `*MultipleRoutesAttachment` tests every one
//!   of upstream's sample (100 TCP connections, 20 datagrams) must come from the older route's backend;
//! * `udp_dns`: one DNS `A` query until answered;
//! * `tls_connection_rejected`: a TLS dial until the gateway closes or resets it during the handshake.
//!
//! A failure to reach the gateway never satisfies a case, whatever it expects.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::client::TlsSpec;
use super::compare::{backend_of_pod, check_weights};
use super::data::{GrpcCase, L4Case};
use super::grpc::{self, code_from_i32, GrpcExpectation, RpcSpec};
use super::l4::{self, TcpExpectation, TlsDial, UdpExpectation};
use super::runner::{
    eventually_n, failure_outcome, gateway_target, LastFailure, Outcome, WorldRuntime,
};
use super::util::{excerpt, Rng};

/// Requests per weighted-distribution attempt (upstream `totalRequests`).
const WEIGHT_SAMPLES: usize = 500;
/// Attempts of a weighted-distribution check (upstream `MaxTestRetries`).
const WEIGHT_ATTEMPTS: usize = 10;
/// Upper bound on the time one weighted-distribution check may take, all attempts together.
const WEIGHT_DEADLINE: Duration = Duration::from_secs(180);
/// Per-datagram timeout of upstream's UDP samplers.
const UDP_SAMPLE_TIMEOUT: Duration = Duration::from_secs(2);
/// Per-connection timeout of upstream's TCP attachment sampler.
const TCP_SAMPLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Tests whose echo case samples traffic that must all reach one backend (upstream `*MultipleRoutesAttachment`,
/// "only the oldest route receives traffic"): the backend and the number of samples, from the Go source.
fn exclusive_backend(test: &str) -> Option<(&'static str, usize)> {
    match test {
        // tcproute-multiple-routes-attachment.go: sampleCount = 100 EchoSendOnce calls.
        "TCPRouteMultipleRoutesAttachment" => Some(("tcp-attach-backend-1", 100)),
        // udproute-multiple-routes-attachment.go: probes = 20 udpEchoSendOnce calls per poll.
        "UDPRouteMultipleRoutesAttachment" => Some(("udp-attach-backend-1", 20)),
        _ => None,
    }
}

fn fail(reason: impl Into<String>) -> LastFailure {
    let reason = reason.into();
    LastFailure {
        response: reason.clone(),
        reason,
        request: String::new(),
    }
}

/// Sends `n` requests, 10 at a time, and returns the answering pods (an error on the first failed request).
async fn sample_pods<F, Fut>(n: usize, send: F) -> Result<Vec<String>, String>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<String, String>>,
{
    let next = AtomicUsize::new(0);
    let pods: Mutex<Vec<String>> = Mutex::new(Vec::with_capacity(n));
    let worker = || async {
        // Bounded: each worker takes indices until `n` are taken.
        while next.fetch_add(1, Ordering::SeqCst) < n {
            let pod = send().await?;
            if let Ok(mut p) = pods.lock() {
                p.push(pod);
            }
        }
        Ok::<(), String>(())
    };
    let workers: Vec<_> = (0..10).map(|_| worker()).collect();
    for r in futures_util::future::join_all(workers).await {
        r?;
    }
    Ok(pods.into_inner().unwrap_or_else(|e| e.into_inner()))
}

/// Upstream `TestWeightedDistribution`, up to 10 attempts (bounded by [`WEIGHT_DEADLINE`]).
async fn check_distribution<F, Fut>(weights: &BTreeMap<String, f64>, send: F) -> Result<(), String>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<String, String>>,
{
    let deadline = Instant::now() + WEIGHT_DEADLINE;
    let mut last = String::new();
    for attempt in 1..=WEIGHT_ATTEMPTS {
        if Instant::now() >= deadline {
            last = format!("{last} (stopped after {}s)", WEIGHT_DEADLINE.as_secs());
            break;
        }
        let pods = match sample_pods(WEIGHT_SAMPLES, &send).await {
            Ok(p) => p,
            Err(e) => {
                last = format!("attempt {attempt}: error while sending requests: {e}");
                continue;
            }
        };
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for pod in &pods {
            *seen.entry(backend_of_pod(pod)).or_default() += 1;
        }
        match check_weights(&seen, WEIGHT_SAMPLES, weights) {
            Ok(()) => return Ok(()),
            Err(e) => last = format!("attempt {attempt}: {e} (seen {seen:?} of {WEIGHT_SAMPLES})"),
        }
    }
    Err(format!("weighted distribution did not converge: {last}"))
}

/// Runs one gRPC case.
pub(crate) async fn run_grpc_case(rt: &Arc<WorldRuntime>, case: &GrpcCase) -> Outcome {
    let (connect, ip) = match gateway_target(rt, &case.gateway, case.connect_port) {
        Ok(t) => t,
        Err(e) => return Outcome::fail(format!("harness: {e}"), String::new()),
    };
    let code = if case.expect_failure {
        None
    } else {
        let n = case.grpc.expected_code.unwrap_or(0);
        match code_from_i32(n) {
            Some(c) => Some(c),
            None => return Outcome::fail(format!("harness: unknown gRPC code {n}"), String::new()),
        }
    };
    let authority = case.grpc.authority.clone().unwrap_or_else(|| {
        // `grpc.NewClient("ip:port")`: the target address is the authority.
        format!("{ip}:{}", case.gateway_port.unwrap_or(case.connect_port))
    });
    let spec = RpcSpec {
        connect,
        tls: None,
        authority,
        path: case.grpc.method.clone(),
        metadata: case
            .grpc
            .metadata
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        timeout: rt.opts.request_timeout,
    };
    let exp = GrpcExpectation {
        code,
        method: case.grpc.method.clone(),
        backend: case.backend.clone().unwrap_or_default(),
        namespace: case.namespace.clone().unwrap_or_default(),
    };
    let request = format!(
        "gRPC {} to {} (h2c) :authority {}{}",
        spec.path,
        spec.connect,
        spec.authority,
        if spec.metadata.is_empty() {
            String::new()
        } else {
            format!(", metadata {:?}", spec.metadata)
        }
    );
    let expected = match exp.code {
        None => "any non-OK status".to_string(),
        Some(c) => {
            let mut s = format!("status {} ({})", grpc::code_name(c), c as i32);
            if c == tonic::Code::Ok {
                s.push_str(&format!(", method {}", exp.method));
                if !exp.backend.is_empty() {
                    s.push_str(&format!(", pod {}*", exp.backend));
                }
                if !exp.namespace.is_empty() {
                    s.push_str(&format!(", namespace {}", exp.namespace));
                }
            }
            s
        }
    };
    let result = eventually_n(rt, rt.opts.consecutive, || {
        let spec = spec.clone();
        let exp = exp.clone();
        let request = request.clone();
        async move {
            let outcome = grpc::call(&spec, &rt.client).await;
            grpc::check_rpc(&exp, &outcome).map_err(|reason| LastFailure {
                reason,
                request,
                response: outcome.describe(),
            })
        }
    })
    .await;
    if let Err((f, attempts, took)) = result {
        return failure_outcome(f, attempts, took, &expected);
    }
    if let Some(weights) = &case.weights {
        let r = check_distribution(weights, || {
            let spec = spec.clone();
            async move {
                match grpc::call(&spec, &rt.client).await {
                    outcome @ grpc::RpcOutcome::Status {
                        code: tonic::Code::Ok,
                        ..
                    } => Ok(outcome.pod().unwrap_or_default().to_string()),
                    other => Err(format!("expected OK response, got {}", other.describe())),
                }
            }
        })
        .await;
        if let Err(e) = r {
            return Outcome::fail(format!("weighted distribution: {}", excerpt(&e, 120)), e);
        }
    }
    Outcome::Pass
}

/// Runs one L4 case.
pub(crate) async fn run_l4_case(rt: &Arc<WorldRuntime>, case: &L4Case) -> Outcome {
    let (connect, _) = match gateway_target(rt, &case.gateway, case.connect_port) {
        Ok(t) => t,
        Err(e) => return Outcome::fail(format!("harness: {e}"), String::new()),
    };
    match case.kind.as_str() {
        "tcp" => run_tcp(rt, case, connect).await,
        "tcp_echo" => run_tcp_echo(rt, case, connect).await,
        "udp_echo" => run_udp_echo(rt, case, connect).await,
        "udp_dns" => run_udp_dns(rt, case, connect).await,
        "tls_connection_rejected" => run_tls_rejected(rt, case, connect).await,
        other => Outcome::fail(
            format!("harness: unknown L4 case kind {other:?}"),
            String::new(),
        ),
    }
}

async fn run_tcp(rt: &Arc<WorldRuntime>, case: &L4Case, connect: std::net::SocketAddr) -> Outcome {
    let tls = if case.use_tls {
        let trust = match case.trust_ca.as_deref().map(|r| (r, rt.certs.lookup(r))) {
            Some((_, Some(pem))) => pem.to_string(),
            Some((r, None)) => {
                return Outcome::fail(format!("harness has no PEM for {r}"), String::new())
            }
            None => {
                return Outcome::fail("harness: a TLS tcp case without trust_ca", String::new())
            }
        };
        Some(TlsSpec {
            server_name: case.server_name.clone().unwrap_or_default(),
            trust_pems: vec![trust],
            client_cert: None,
            cert_requested: Arc::new(AtomicBool::new(false)),
        })
    } else {
        None
    };
    let l4 = case.l4.clone().unwrap_or_default();
    let exp = TcpExpectation {
        backend_is_tls: l4.backend_is_tls,
        backend: l4.backend.unwrap_or_default(),
        namespace: l4.namespace.unwrap_or_default(),
        hostname: l4.hostname.unwrap_or_default(),
    };
    let request = match &tls {
        None => format!("TCP dialogue with {connect}"),
        Some(t) => format!(
            "TCP dialogue with {connect} over TLS, SNI {}",
            t.server_name
        ),
    };
    let expected = format!(
        "welcome, PONG, IS_TLS {}, pod {}-*, namespace {}{}",
        exp.backend_is_tls,
        exp.backend,
        exp.namespace,
        if exp.hostname.is_empty() {
            String::new()
        } else {
            format!(", backend SNI {}", exp.hostname)
        }
    );
    let result = eventually_n(rt, 1, || {
        let (tls, exp, request) = (tls.clone(), exp.clone(), request.clone());
        async move {
            let d = l4::tcp_dialogue(connect, tls.as_ref(), &rt.client, rt.opts.request_timeout)
                .await
                .map_err(|e| LastFailure {
                    reason: format!("not yet: {}", excerpt(&e, 120)),
                    request: request.clone(),
                    response: e,
                })?;
            l4::check_tcp(&exp, &d)
                .map(|_| ())
                .map_err(|reason| LastFailure {
                    reason,
                    request,
                    response: format!("{d:?}"),
                })
        }
    })
    .await;
    match result {
        Ok(_) => Outcome::Pass,
        Err((f, attempts, took)) => failure_outcome(f, attempts, took, &expected),
    }
}

/// Samples `n` echoes with `send` and requires every answering pod to belong to `backend`.
async fn check_exclusive<F, Fut>(backend: &str, n: usize, send: F) -> Result<(), String>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<String, String>>,
{
    for i in 1..=n {
        let pod = send()
            .await
            .map_err(|e| format!("echo {i}/{n} failed: {e}"))?;
        if backend_of_pod(&pod) != backend {
            return Err(format!(
                "echo {i}/{n} reached {pod:?}; only the oldest route's backend {backend} may answer"
            ));
        }
    }
    Ok(())
}

async fn run_tcp_echo(
    rt: &Arc<WorldRuntime>,
    case: &L4Case,
    connect: std::net::SocketAddr,
) -> Outcome {
    let timeout = rt.opts.request_timeout;
    let request = format!("TCP echo (welcome, TEST) with {connect}");
    let result = eventually_n(rt, 1, || {
        let request = request.clone();
        async move {
            l4::tcp_echo_once(connect, timeout)
                .await
                .map(|_| ())
                .map_err(|e| LastFailure {
                    reason: format!("not yet: {}", excerpt(&e, 120)),
                    request,
                    response: e,
                })
        }
    })
    .await;
    if let Err((f, attempts, took)) = result {
        return failure_outcome(f, attempts, took, "a TCP echo from any pod");
    }
    if let Some(weights) = &case.weights {
        if let Err(e) = check_distribution(weights, || l4::tcp_echo_once(connect, timeout)).await {
            return Outcome::fail(format!("weighted distribution: {}", excerpt(&e, 120)), e);
        }
    } else if let Some((backend, n)) = exclusive_backend(&case.test) {
        if let Err(e) = check_exclusive(backend, n, || {
            l4::tcp_echo_once(connect, TCP_SAMPLE_TIMEOUT)
        })
        .await
        {
            return Outcome::fail(excerpt(&e, 140), e);
        }
    }
    Outcome::Pass
}

async fn run_udp_echo(
    rt: &Arc<WorldRuntime>,
    case: &L4Case,
    connect: std::net::SocketAddr,
) -> Outcome {
    let l4 = case.l4.clone().unwrap_or_default();
    let exp = UdpExpectation {
        service: l4.service.unwrap_or_default(),
        namespace: l4.namespace.unwrap_or_default(),
    };
    let timeout = rt.opts.request_timeout;
    let request = format!(
        "UDP datagram {:?} to {connect}",
        String::from_utf8_lossy(l4::UDP_PROBE)
    );
    let expected = if exp.service.is_empty() && exp.namespace.is_empty() {
        "any UDP answer".to_string()
    } else {
        format!(
            "a UDP echo from service {:?} in namespace {:?}",
            exp.service, exp.namespace
        )
    };
    let result = eventually_n(rt, 1, || {
        let (exp, request) = (exp.clone(), request.clone());
        async move {
            let answer = l4::udp_exchange(connect, l4::UDP_PROBE, timeout)
                .await
                .map_err(|e| LastFailure {
                    reason: format!("not yet: {}", excerpt(&e, 120)),
                    request: request.clone(),
                    response: e,
                })?;
            l4::check_udp(&exp, &answer)
                .map(|_| ())
                .map_err(|reason| LastFailure {
                    reason,
                    request,
                    response: String::from_utf8_lossy(&answer).into_owned(),
                })
        }
    })
    .await;
    if let Err((f, attempts, took)) = result {
        return failure_outcome(f, attempts, took, &expected);
    }
    if let Some(weights) = &case.weights {
        if let Err(e) =
            check_distribution(weights, || l4::udp_echo_once(connect, UDP_SAMPLE_TIMEOUT)).await
        {
            return Outcome::fail(format!("weighted distribution: {}", excerpt(&e, 120)), e);
        }
    } else if let Some((backend, n)) = exclusive_backend(&case.test) {
        // Upstream polls (1 s apart, within the test timeout) until a round of probes gets answers; an answer
        // from another backend fails at once.
        let unexpected: Mutex<Option<String>> = Mutex::new(None);
        let result = eventually_n(rt, 1, || {
            let unexpected = &unexpected;
            async move {
                for i in 1..=n {
                    let pod = l4::udp_echo_once(connect, UDP_SAMPLE_TIMEOUT)
                        .await
                        .map_err(|e| fail(format!("probe {i}/{n} failed, will retry: {e}")))?;
                    if backend_of_pod(&pod) != backend {
                        if let Ok(mut slot) = unexpected.lock() {
                            *slot = Some(format!(
                                "UDP traffic reached unexpected backend {:?} (pod {pod:?}); only {backend} should receive traffic",
                                backend_of_pod(&pod)
                            ));
                        }
                        // Stops the polling: the outcome is decided.
                        return Ok(());
                    }
                }
                Ok(())
            }
        })
        .await;
        if let Some(e) = unexpected.lock().ok().and_then(|mut s| s.take()) {
            return Outcome::fail(excerpt(&e, 140), e);
        }
        if let Err((f, attempts, took)) = result {
            return failure_outcome(f, attempts, took, &format!("{n} UDP echoes from {backend}"));
        }
    }
    Outcome::Pass
}

async fn run_udp_dns(
    rt: &Arc<WorldRuntime>,
    case: &L4Case,
    connect: std::net::SocketAddr,
) -> Outcome {
    let Some(name) = case.l4.as_ref().and_then(|l| l.dns_query_a.clone()) else {
        return Outcome::fail("harness: a udp_dns case without dns_query_A", String::new());
    };
    let timeout = rt.opts.request_timeout;
    let request = format!("DNS A {name} to {connect}");
    let result = eventually_n(rt, 1, || {
        let (name, request) = (name.clone(), request.clone());
        async move {
            let id = (Rng::from_entropy().next_u64() & 0xffff) as u16;
            l4::dns_query(connect, &name, id, timeout)
                .await
                .map(|_| ())
                .map_err(|e| LastFailure {
                    reason: format!("failed to perform a UDP query: {}", excerpt(&e, 120)),
                    request,
                    response: e,
                })
        }
    })
    .await;
    match result {
        Ok(_) => Outcome::Pass,
        Err((f, attempts, took)) => {
            failure_outcome(f, attempts, took, "a DNS response to the query")
        }
    }
}

async fn run_tls_rejected(
    rt: &Arc<WorldRuntime>,
    case: &L4Case,
    connect: std::net::SocketAddr,
) -> Outcome {
    let Some(server_name) = case.tls.as_ref().map(|t| t.server_name.clone()) else {
        return Outcome::fail(
            "harness: a tls_connection_rejected case without tls",
            String::new(),
        );
    };
    let timeout = rt.opts.request_timeout;
    let request = format!("TLS dial to {connect}, SNI {server_name}");
    let result = eventually_n(rt, 1, || {
        let (server_name, request) = (server_name.clone(), request.clone());
        async move {
            match l4::tls_dial(connect, &server_name, timeout).await {
                TlsDial::Rejected(_) => Ok(()),
                TlsDial::NotRejected(why) => Err(LastFailure {
                    reason: excerpt(&why, 120),
                    request,
                    response: why,
                }),
            }
        }
    })
    .await;
    match result {
        Ok(_) => Outcome::Pass,
        Err((f, attempts, took)) => failure_outcome(
            f,
            attempts,
            took,
            "the connection closed or reset during the TLS handshake",
        ),
    }
}
