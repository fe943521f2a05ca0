//! echo-basic's gRPC mode (`GRPC_ECHO_SERVER`): the service `gateway_api_conformance.echo_basic.grpcecho.GrpcEcho`
//! of gateway-api-conformance-images `echo-basic/grpcecho.proto`, served over h2c (echo-basic's `HTTP_PORT`) and,
//! with a certificate, over TLS with ALPN `h2` (`HTTPS_PORT`).
//!
//! `Echo` and `EchoTwo` answer an [`pb::EchoResponse`] whose `assertions` carry the fully qualified method, the
//! request metadata as grpc-go's server exposes it (`:authority`, `content-type`, `user-agent` and every other
//! header except the reserved ones; `-bin` values decoded), the `:authority`, the pod context and, on TLS, the
//! TLS facts. `EchoThree` is deliberately unimplemented (`UNIMPLEMENTED`, as grpc-go's generated stub answers),
//! and so is every other method or service. The reflection service echo-basic also registers is not served.
//!
//! The messages are hand-written prost structs with the field numbers of `grpcecho.proto`; tonic provides the
//! gRPC framing and status handling, hyper the HTTP/2 server.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use http::{HeaderMap, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tonic::server::UnaryService;
use tonic_prost::ProstCodec;

use super::tls::{self, TlsInfo};
use super::{log_line, stopped, EchoTls, PodIdentity, Tasks};

/// The fully qualified service name.
pub const SERVICE: &str = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho";

/// The request path of `method` (`/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/<method>`).
pub fn method_path(method: &str) -> String {
    format!("/{SERVICE}/{method}")
}

/// The messages of `grpcecho.proto` (package `gateway_api_conformance.echo_basic.grpcecho`), field numbers as
/// upstream.
pub mod pb {
    /// `Header`: one metadata entry.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Header {
        /// Lower-case metadata key.
        #[prost(string, tag = "1")]
        pub key: String,
        /// Its value.
        #[prost(string, tag = "2")]
        pub value: String,
    }

    /// `Context`: the pod the server runs in.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Context {
        /// `NAMESPACE`.
        #[prost(string, tag = "1")]
        pub namespace: String,
        /// `INGRESS_NAME`.
        #[prost(string, tag = "2")]
        pub ingress: String,
        /// `SERVICE_NAME`.
        #[prost(string, tag = "3")]
        pub service_name: String,
        /// `POD_NAME`.
        #[prost(string, tag = "4")]
        pub pod: String,
    }

    /// `TLSAssertions`: the TLS connection between client and server.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TlsAssertions {
        /// e.g. `TLSv1.3`.
        #[prost(string, tag = "1")]
        pub version: String,
        /// ALPN.
        #[prost(string, tag = "2")]
        pub negotiated_protocol: String,
        /// SNI.
        #[prost(string, tag = "3")]
        pub server_name: String,
        /// Go's cipher suite name.
        #[prost(string, tag = "4")]
        pub cipher_suite: String,
        /// Client certificates, PEM, in the order sent.
        #[prost(string, repeated, tag = "5")]
        pub peer_certificates: Vec<String>,
    }

    /// `Assertions`: what the server saw.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Assertions {
        /// e.g. `/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/Echo`.
        #[prost(string, tag = "1")]
        pub fully_qualified_method: String,
        /// The request metadata.
        #[prost(message, repeated, tag = "2")]
        pub headers: Vec<Header>,
        /// `:authority`.
        #[prost(string, tag = "3")]
        pub authority: String,
        /// The pod.
        #[prost(message, optional, tag = "4")]
        pub context: Option<Context>,
        /// Set on TLS connections only.
        #[prost(message, optional, tag = "5")]
        pub tls_assertions: Option<TlsAssertions>,
    }

    /// `EchoRequest` (empty).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct EchoRequest {}

    /// `EchoResponse`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct EchoResponse {
        /// What the server saw.
        #[prost(message, optional, tag = "1")]
        pub assertions: Option<Assertions>,
        /// The request (always empty).
        #[prost(message, optional, tag = "2")]
        pub request: Option<EchoRequest>,
    }

    impl Assertions {
        /// All values of metadata `key` (lower case), in order.
        pub fn header_values(&self, key: &str) -> Vec<&str> {
            self.headers
                .iter()
                .filter(|h| h.key == key)
                .map(|h| h.value.as_str())
                .collect()
        }
    }
}

/// Configuration of one gRPC echo pod.
#[derive(Clone, Debug)]
pub struct GrpcEchoConfig {
    /// What the server reports as its context.
    pub identity: PodIdentity,
    /// The h2c listener (echo-basic's `HTTP_PORT`); port 0 picks a free port.
    pub addr: SocketAddr,
    /// The TLS listener (`HTTPS_PORT` with `TLS_SERVER_CERT` and `TLS_SERVER_PRIV_KEY`), ALPN `h2` only.
    /// `client_ca_pem`, when set, verifies client certificates if given (echo-basic has no such option).
    pub tls: Option<EchoTls>,
    /// Print echo-basic's lines (`plaintext server listening at ...`, `Received over plaintext: ...`).
    pub log_to_stdout: bool,
}

/// A running gRPC echo server; dropping it stops it.
pub struct GrpcEchoServer {
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    tasks: Tasks,
}

impl std::fmt::Debug for GrpcEchoServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcEchoServer")
            .field("addr", &self.addr)
            .field("tls_addr", &self.tls_addr)
            .finish_non_exhaustive()
    }
}

struct Shared {
    identity: PodIdentity,
    log: bool,
}

impl GrpcEchoServer {
    /// Binds the listeners and starts serving on the current tokio runtime. Fails, leaving nothing running, if
    /// a listener cannot be bound or the TLS material is unusable.
    pub async fn start(cfg: GrpcEchoConfig) -> anyhow::Result<GrpcEchoServer> {
        let acceptor = cfg
            .tls
            .as_ref()
            .map(|t| tls::server_config_with_alpn(t, &[b"h2"]).map(TlsAcceptor::from))
            .transpose()?;
        let plain = TcpListener::bind(cfg.addr)
            .await
            .with_context(|| format!("gRPC echo: binding {}", cfg.addr))?;
        let addr = plain.local_addr()?;
        let secure = match &cfg.tls {
            Some(t) => Some(
                TcpListener::bind(t.addr)
                    .await
                    .with_context(|| format!("gRPC echo: binding TLS listener {}", t.addr))?,
            ),
            None => None,
        };
        let tls_addr = secure.as_ref().map(TcpListener::local_addr).transpose()?;
        let shared = Arc::new(Shared {
            identity: cfg.identity,
            log: cfg.log_to_stdout,
        });
        let mut tasks = Tasks::new();
        log_line(
            shared.log,
            format_args!("plaintext server listening at {addr}"),
        );
        tasks.spawn(accept_loop(
            shared.clone(),
            plain,
            None,
            tasks.shutdown_signal(),
        ));
        if let (Some(listener), Some(acceptor), Some(a)) = (secure, acceptor, tls_addr) {
            log_line(shared.log, format_args!("secure server listening at {a}"));
            tasks.spawn(accept_loop(
                shared.clone(),
                listener,
                Some(acceptor),
                tasks.shutdown_signal(),
            ));
        }
        Ok(GrpcEchoServer {
            addr,
            tls_addr,
            tasks,
        })
    }

    /// The bound h2c address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound TLS address, if configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// Stops the server and returns once its listeners are closed.
    pub async fn shutdown_and_wait(self) {
        self.tasks.stop_and_wait().await;
    }
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    // Dropping the set (when this task ends or is aborted) aborts every connection task.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    conns.spawn(serve_conn(shared.clone(), tls.clone(), stream));
                }
                // For example EMFILE: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            () = stopped(&mut shutdown) => break,
        }
    }
}

async fn serve_conn(shared: Arc<Shared>, tls: Option<TlsAcceptor>, stream: TcpStream) {
    let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    match tls {
        None => {
            let svc = hyper::service::service_fn(move |req| handle(shared.clone(), None, req));
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        }
        Some(acceptor) => {
            let Ok(stream) = acceptor.accept(stream).await else {
                return;
            };
            let info = Arc::new(tls::tls_info(stream.get_ref().1));
            let svc = hyper::service::service_fn(move |req| {
                handle(shared.clone(), Some(info.clone()), req)
            });
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        }
    }
}

/// Headers grpc-go's server keeps out of the incoming metadata (`isReservedHeader` minus the whitelisted
/// `user-agent`; `content-type` is added back explicitly, `:authority` from the pseudo-header).
const RESERVED: &[&str] = &[
    "grpc-message-type",
    "grpc-encoding",
    "grpc-message",
    "grpc-status",
    "grpc-timeout",
    "grpc-status-details-bin",
    "grpc-previous-rpc-attempts",
    "grpc-retry-pushback-ms",
    "grpc-tags-bin",
    "grpc-trace-bin",
    "te",
    "host",
];

/// The incoming metadata as grpc-go's `metadata.FromIncomingContext` has it: `:authority`, then every other
/// header but the reserved ones, keys lower case, `-bin` values base64-decoded; sorted by key (grpc-go's map
/// order is random), values of one key in order.
pub(crate) fn incoming_metadata(authority: &str, headers: &HeaderMap) -> Vec<pb::Header> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if !authority.is_empty() {
        out.entry(":authority".to_string())
            .or_default()
            .push(authority.to_string());
    }
    for (name, value) in headers {
        let key = name.as_str();
        if RESERVED.contains(&key) {
            continue;
        }
        let value = if key.ends_with("-bin") {
            let raw = value.as_bytes();
            let decoded = base64::engine::general_purpose::STANDARD_NO_PAD.decode(
                raw.strip_suffix(b"==")
                    .or(raw.strip_suffix(b"="))
                    .unwrap_or(raw),
            );
            match decoded {
                Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Err(_) => String::from_utf8_lossy(raw).into_owned(),
            }
        } else {
            String::from_utf8_lossy(value.as_bytes()).into_owned()
        };
        out.entry(key.to_string()).or_default().push(value);
    }
    out.into_iter()
        .flat_map(|(key, values)| {
            values.into_iter().map(move |value| pb::Header {
                key: key.clone(),
                value,
            })
        })
        .collect()
}

fn tls_assertions(info: &TlsInfo) -> pb::TlsAssertions {
    pb::TlsAssertions {
        version: info.version.clone(),
        negotiated_protocol: info.negotiated_protocol.clone(),
        server_name: info.server_name.clone(),
        cipher_suite: info.cipher_suite.clone(),
        peer_certificates: info.peer_certificates.clone(),
    }
}

/// The unary handler of `Echo`/`EchoTwo`: the answer is computed from the HTTP request before tonic decodes it.
struct EchoCall(pb::EchoResponse);

impl UnaryService<pb::EchoRequest> for EchoCall {
    type Response = pb::EchoResponse;
    type Future = std::future::Ready<Result<tonic::Response<pb::EchoResponse>, tonic::Status>>;

    fn call(&mut self, _request: tonic::Request<pb::EchoRequest>) -> Self::Future {
        std::future::ready(Ok(tonic::Response::new(self.0.clone())))
    }
}

async fn handle(
    shared: Arc<Shared>,
    tls: Option<Arc<TlsInfo>>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<tonic::body::Body>, Infallible> {
    let is_grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"));
    if req.method() != http::Method::POST || !is_grpc {
        // grpc-go answers non-gRPC requests on its HTTP/2 transport with 415 (wrong content type) or 405.
        let status = if is_grpc {
            StatusCode::METHOD_NOT_ALLOWED
        } else {
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        };
        let mut resp = Response::new(tonic::body::Body::empty());
        *resp.status_mut() = status;
        return Ok(resp);
    }
    let path = req.uri().path().to_string();
    let (service, method) = path
        .strip_prefix('/')
        .and_then(|p| p.rsplit_once('/'))
        .unwrap_or(("", ""));
    if service != SERVICE {
        return Ok(tonic::Status::unimplemented(format!("unknown service {service}")).into_http());
    }
    match method {
        "Echo" | "EchoTwo" => {}
        "EchoThree" => {
            return Ok(tonic::Status::unimplemented("method EchoThree not implemented").into_http())
        }
        other => {
            return Ok(tonic::Status::unimplemented(format!(
                "unknown method {other} for service {service}"
            ))
            .into_http())
        }
    }
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        })
        .unwrap_or_default();
    log_line(
        shared.log,
        format_args!(
            "Received over {}: {path}",
            if tls.is_some() { "TLS" } else { "plaintext" }
        ),
    );
    let response = pb::EchoResponse {
        assertions: Some(pb::Assertions {
            fully_qualified_method: method_path(method),
            headers: incoming_metadata(&authority, req.headers()),
            authority,
            context: Some(pb::Context {
                namespace: shared.identity.namespace.clone(),
                ingress: shared.identity.ingress_name.clone(),
                service_name: shared.identity.service_name.clone(),
                pod: shared.identity.pod_name.clone(),
            }),
            tls_assertions: tls.as_deref().map(tls_assertions),
        }),
        request: None,
    };
    let mut grpc =
        tonic::server::Grpc::new(ProstCodec::<pb::EchoResponse, pb::EchoRequest>::default());
    Ok(grpc.unary(EchoCall(response), req).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_like_grpc_go() {
        let mut h = HeaderMap::new();
        h.insert("content-type", "application/grpc".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("grpc-timeout", "5S".parse().unwrap());
        h.insert("version", "two".parse().unwrap());
        h.append("version", "three".parse().unwrap());
        h.insert("trace-bin", "aGk".parse().unwrap());
        let md = incoming_metadata("example.com", &h);
        let pairs: Vec<(&str, &str)> = md
            .iter()
            .map(|h| (h.key.as_str(), h.value.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                (":authority", "example.com"),
                ("content-type", "application/grpc"),
                ("trace-bin", "hi"),
                ("version", "two"),
                ("version", "three"),
            ]
        );
    }
}
