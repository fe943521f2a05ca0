//! The gRPC client and comparison of the GRPCRoute cases (upstream `conformance/utils/grpc/grpc.go`).
//!
//! One unary RPC per connection (upstream's weight sampler also dials per request), HTTP/2 with prior knowledge
//! (h2c, upstream's `insecure` credentials) or over TLS with ALPN `h2`, the case's `:authority` (else the gateway
//! address, as `grpc.NewClient(address)` sets it), its metadata with lower-case keys (Go's `metadata.New`), and an
//! empty `EchoRequest`. tonic does the gRPC framing; a response that is not gRPC (HTTP status other than 200, or a
//! content type other than `application/grpc`) gets its code from the HTTP status as in grpc-go (404 →
//! `UNIMPLEMENTED`, 503 → `UNAVAILABLE`, other → `UNKNOWN`), whatever its body.
//!
//! A failure to reach the gateway at all (TCP connect, TLS handshake) is not a gRPC status: it is reported as
//! [`RpcOutcome::NoAnswer`], which never satisfies a case (not even an `expect_failure` one), so a proxy that does
//! not listen cannot pass. A failure after the connection is up (the stream or connection reset, an HTTP/2
//! protocol error) is `UNAVAILABLE`, as grpc-go reports transport errors.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::str::FromStr as _;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::PathAndQuery;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::Code;
use tonic_prost::ProstCodec;

use super::client::{connect_tls, error_chain, ClientContext, TlsSpec};
use crate::echo::grpc::pb::{EchoRequest, EchoResponse};

/// One RPC to make.
#[derive(Clone, Debug)]
pub struct RpcSpec {
    /// Address to dial.
    pub connect: SocketAddr,
    /// TLS (ALPN `h2`); `None` = h2c.
    pub tls: Option<TlsSpec>,
    /// `:authority`.
    pub authority: String,
    /// Method path, `/package.Service/Method`.
    pub path: String,
    /// Metadata, keys as given (sent lower case).
    pub metadata: Vec<(String, String)>,
    /// Bound for the whole exchange.
    pub timeout: Duration,
}

/// What an RPC produced.
#[derive(Clone, Debug)]
pub enum RpcOutcome {
    /// A gRPC status (from `grpc-status`, from the HTTP status, or `UNAVAILABLE` for a transport failure after
    /// connecting), with the response message when the status is OK.
    Status {
        /// The status code.
        code: Code,
        /// The status message.
        message: String,
        /// The response (`Some` exactly when `code` is OK).
        response: Option<Box<EchoResponse>>,
    },
    /// The gateway could not be reached (connect, TLS handshake or time limit).
    NoAnswer(String),
}

impl RpcOutcome {
    /// A one-line description.
    pub fn describe(&self) -> String {
        match self {
            RpcOutcome::Status {
                code,
                message,
                response,
            } => {
                let mut s = format!("{} ({})", code_name(*code), *code as i32);
                if !message.is_empty() {
                    s.push_str(&format!(": {message}"));
                }
                if let Some(a) = response.as_ref().and_then(|r| r.assertions.as_ref()) {
                    let ctx = a.context.clone().unwrap_or_default();
                    s.push_str(&format!(
                        ", echo from pod {} (namespace {}): method {}, authority {}",
                        ctx.pod, ctx.namespace, a.fully_qualified_method, a.authority
                    ));
                }
                s
            }
            RpcOutcome::NoAnswer(e) => format!("no answer: {e}"),
        }
    }

    /// The answering pod, when the status is OK.
    pub fn pod(&self) -> Option<&str> {
        match self {
            RpcOutcome::Status {
                response: Some(r), ..
            } => r
                .assertions
                .as_ref()
                .and_then(|a| a.context.as_ref())
                .map(|c| c.pod.as_str()),
            _ => None,
        }
    }
}

/// grpc-go's `codes.Code.String()`.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// A hyper HTTP/2 connection as the tower service tonic's client drives; hyper errors become `UNAVAILABLE`.
struct H2Service(hyper::client::conn::http2::SendRequest<tonic::body::Body>);

type RespFuture = Pin<
    Box<dyn Future<Output = Result<http::Response<hyper::body::Incoming>, tonic::Status>> + Send>,
>;

fn transport_status(e: &hyper::Error) -> tonic::Status {
    tonic::Status::unavailable(format!("transport: {}", error_chain(e)))
}

impl tower_service::Service<http::Request<tonic::body::Body>> for H2Service {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = tonic::Status;
    type Future = RespFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx).map_err(|e| transport_status(&e))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let fut = self.0.send_request(req);
        Box::pin(async move {
            let resp = fut.await.map_err(|e| transport_status(&e))?;
            match non_grpc_status(resp.status(), resp.headers()) {
                Some(status) => Err(status),
                None => Ok(resp),
            }
        })
    }
}

/// grpc-go's `HTTPStatusConvTab`: the code of a response that is not a gRPC response.
pub fn code_from_http_status(status: http::StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// grpc-go's client on response headers: a status other than 200, or a content type other than
/// `application/grpc[+...]`, ends the RPC with the code of the HTTP status (whatever the body holds; tonic
/// alone would try to decode the body as gRPC messages). `None` for a gRPC response.
fn non_grpc_status(status: http::StatusCode, headers: &http::HeaderMap) -> Option<tonic::Status> {
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let is_grpc = content_type == "application/grpc"
        || content_type.starts_with("application/grpc+")
        || content_type.starts_with("application/grpc;");
    if status == http::StatusCode::OK && is_grpc {
        return None;
    }
    let mut message = String::new();
    if status != http::StatusCode::OK {
        message.push_str(&format!(
            "unexpected HTTP status code received from server: {}",
            status.as_u16()
        ));
    }
    if !is_grpc {
        if !message.is_empty() {
            message.push_str("; ");
        }
        message.push_str(&format!(
            "transport: received unexpected content-type {content_type:?}"
        ));
    }
    Some(tonic::Status::new(code_from_http_status(status), message))
}

/// Makes one RPC on a fresh connection.
pub async fn call(spec: &RpcSpec, ctx: &ClientContext) -> RpcOutcome {
    match tokio::time::timeout(spec.timeout, call_inner(spec, ctx)).await {
        Ok(r) => r,
        Err(_) => RpcOutcome::NoAnswer(format!("no answer within {}s", spec.timeout.as_secs_f32())),
    }
}

async fn call_inner(spec: &RpcSpec, ctx: &ClientContext) -> RpcOutcome {
    let tcp = match TcpStream::connect(spec.connect).await {
        Ok(t) => t,
        Err(e) => return RpcOutcome::NoAnswer(format!("connect {}: {e}", spec.connect)),
    };
    let _ = tcp.set_nodelay(true);
    let builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
    let (sender, conn_task) = match &spec.tls {
        None => match builder.handshake(TokioIo::new(tcp)).await {
            Ok((s, conn)) => (
                s,
                tokio::spawn(async move {
                    let _ = conn.await;
                }),
            ),
            Err(e) => {
                return RpcOutcome::NoAnswer(format!("HTTP/2 handshake: {}", error_chain(&e)))
            }
        },
        Some(tls) => {
            let stream = match connect_tls(tcp, tls, Some(b"h2"), ctx).await {
                Ok(s) => s,
                Err(e) => return RpcOutcome::NoAnswer(e.to_string()),
            };
            match builder.handshake(TokioIo::new(stream)).await {
                Ok((s, conn)) => (
                    s,
                    tokio::spawn(async move {
                        let _ = conn.await;
                    }),
                ),
                Err(e) => {
                    return RpcOutcome::NoAnswer(format!("HTTP/2 handshake: {}", error_chain(&e)))
                }
            }
        }
    };
    let outcome = rpc(spec, H2Service(sender)).await;
    conn_task.abort();
    outcome
}

async fn rpc(spec: &RpcSpec, svc: H2Service) -> RpcOutcome {
    let scheme = if spec.tls.is_some() { "https" } else { "http" };
    let origin = match http::Uri::from_str(&format!("{scheme}://{}", spec.authority)) {
        Ok(u) => u,
        Err(e) => {
            return RpcOutcome::NoAnswer(format!(
                "harness: authority {:?} is not a URI authority: {e}",
                spec.authority
            ))
        }
    };
    let path = match PathAndQuery::from_str(&spec.path) {
        Ok(p) => p,
        Err(e) => {
            return RpcOutcome::NoAnswer(format!("harness: method path {:?}: {e}", spec.path))
        }
    };
    let mut request = tonic::Request::new(EchoRequest {});
    for (key, value) in &spec.metadata {
        let key = key.to_ascii_lowercase();
        let (Ok(k), Ok(v)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) else {
            return RpcOutcome::NoAnswer(format!(
                "harness: metadata {key}: {value:?} is not valid"
            ));
        };
        request.metadata_mut().append(k, v);
    }
    let mut grpc = tonic::client::Grpc::with_origin(svc, origin);
    if let Err(status) = grpc.ready().await {
        return RpcOutcome::Status {
            code: status.code(),
            message: status.message().to_string(),
            response: None,
        };
    }
    match grpc
        .unary(
            request,
            path,
            ProstCodec::<EchoRequest, EchoResponse>::default(),
        )
        .await
    {
        Ok(resp) => RpcOutcome::Status {
            code: Code::Ok,
            message: String::new(),
            response: Some(Box::new(resp.into_inner())),
        },
        Err(status) => RpcOutcome::Status {
            code: status.code(),
            message: status.message().to_string(),
            response: None,
        },
    }
}

/// What one RPC is checked against (upstream `compareResponse` and the failure helper).
#[derive(Clone, Debug)]
pub struct GrpcExpectation {
    /// The expected code; `None` = any non-OK code (`expect_failure`).
    pub code: Option<Code>,
    /// The fully qualified method the echo must report (checked on OK).
    pub method: String,
    /// Pod name prefix (checked on OK; `""` = any).
    pub backend: String,
    /// Namespace (checked on OK when non-empty).
    pub namespace: String,
}

/// Checks one outcome. `Err` words the first mismatch the way upstream does; a [`RpcOutcome::NoAnswer`] never
/// passes.
pub fn check_rpc(exp: &GrpcExpectation, outcome: &RpcOutcome) -> Result<(), String> {
    let (code, response) = match outcome {
        RpcOutcome::NoAnswer(e) => return Err(format!("not yet: no gRPC answer ({e})")),
        RpcOutcome::Status { code, response, .. } => (*code, response),
    };
    let Some(want) = exp.code else {
        return if code == Code::Ok {
            Err("request should have failed, but got status OK".to_string())
        } else {
            Ok(())
        };
    };
    if want != code {
        return Err(format!(
            "expected status code to be {} ({}), but got {} ({})",
            code_name(want),
            want as i32,
            code_name(code),
            code as i32
        ));
    }
    if code != Code::Ok {
        return Ok(());
    }
    let assertions = response
        .as_ref()
        .and_then(|r| r.assertions.clone())
        .unwrap_or_default();
    if assertions.fully_qualified_method != exp.method {
        return Err(format!(
            "expected path to be {}, got {}",
            exp.method, assertions.fully_qualified_method
        ));
    }
    let context = assertions.context.unwrap_or_default();
    if !exp.namespace.is_empty() && exp.namespace != context.namespace {
        return Err(format!(
            "expected namespace to be {}, got {}",
            exp.namespace, context.namespace
        ));
    }
    if !context.pod.starts_with(&exp.backend) {
        return Err(format!(
            "expected pod name to start with {}, got {}",
            exp.backend, context.pod
        ));
    }
    Ok(())
}

/// A gRPC code from its number (`None` outside 0..=16).
pub fn code_from_i32(n: i32) -> Option<Code> {
    (0..=16).contains(&n).then(|| Code::from_i32(n))
}
