//! Answers made here to gRPC clients: a gRPC client reads the outcome of a call from `grpc-status` (and
//! `grpc-message`), not from the HTTP status, so an HTTP error page would reach the application as a transport
//! error. A gRPC answer is "Trailers-Only" (gRPC over HTTP/2, PROTOCOL-HTTP2.md): HTTP status 200, then
//! `content-type`, `grpc-status` and `grpc-message` in the only header block, which ends the stream.

use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;

/// The gRPC status codes a local answer uses (grpc/doc/statuscodes.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum GrpcCode {
    /// 2
    Unknown = 2,
    /// 4: the route's timeout passed.
    DeadlineExceeded = 4,
    /// 7
    PermissionDenied = 7,
    /// 8
    ResourceExhausted = 8,
    /// 12: no route serves this method.
    Unimplemented = 12,
    /// 13
    Internal = 13,
    /// 14: no backend could take the call (GRPCRoute: "UNAVAILABLE" for invalid backends).
    Unavailable = 14,
    /// 16
    Unauthenticated = 16,
}

impl GrpcCode {
    /// The decimal text of the code, as `grpc-status` carries it.
    pub fn as_str(self) -> &'static str {
        match self {
            GrpcCode::Unknown => "2",
            GrpcCode::DeadlineExceeded => "4",
            GrpcCode::PermissionDenied => "7",
            GrpcCode::ResourceExhausted => "8",
            GrpcCode::Unimplemented => "12",
            GrpcCode::Internal => "13",
            GrpcCode::Unavailable => "14",
            GrpcCode::Unauthenticated => "16",
        }
    }
}

/// The gRPC status (and message) for the HTTP status a local answer would have had. Follows gRPC's "HTTP to gRPC
/// status code mapping" (grpc/doc/http-grpc-status-mapping.md) where it covers the status, with our reasons: no
/// route is `UNIMPLEMENTED` (as the method were unknown), a backend that cannot be used is `UNAVAILABLE` (what
/// GRPCRoute asks for invalid backendRefs), a timeout is `DEADLINE_EXCEEDED`.
pub fn status_for(http: u16) -> (GrpcCode, &'static str) {
    match http {
        404 => (GrpcCode::Unimplemented, "no route for this method"),
        421 => (
            GrpcCode::Unavailable,
            "misdirected request: the TLS server name does not cover this authority",
        ),
        500 => (GrpcCode::Unavailable, "the route's backend cannot be used"),
        502 => (GrpcCode::Unavailable, "the backend connection failed"),
        503 => (GrpcCode::Unavailable, "no backend endpoint is available"),
        504 | 408 => (GrpcCode::DeadlineExceeded, "the route's timeout passed"),
        400 => (GrpcCode::Internal, "bad request"),
        401 => (GrpcCode::Unauthenticated, "unauthenticated"),
        403 => (GrpcCode::PermissionDenied, "forbidden"),
        413 => (GrpcCode::ResourceExhausted, "request too large"),
        429 => (GrpcCode::Unavailable, "too many requests"),
        _ => (GrpcCode::Unknown, "the gateway could not serve the call"),
    }
}

/// Does the client speak gRPC (`content-type: application/grpc`, `application/grpc+proto`, ...)?
pub fn is_grpc_request(req: &RequestHeader) -> bool {
    req.headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| is_grpc_content_type(v.as_bytes()))
}

fn is_grpc_content_type(v: &[u8]) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    v.len() >= GRPC.len()
        && v[..GRPC.len()].eq_ignore_ascii_case(GRPC)
        && matches!(v.get(GRPC.len()), None | Some(b'+' | b';'))
}

/// Answers a gRPC call with the gRPC status for `http`, as one Trailers-Only response.
pub async fn respond(session: &mut Session, http: u16) -> Result<bool> {
    let (code, message) = status_for(http);
    let mut resp = ResponseHeader::build(http::StatusCode::OK, Some(5))?;
    super::http::add_server_header(&mut resp)?;
    resp.insert_header(http::header::CONTENT_TYPE, "application/grpc")?;
    resp.insert_header("grpc-status", code.as_str())?;
    // The messages are plain ASCII without '%': nothing to percent-encode.
    resp.insert_header("grpc-message", message)?;
    if session.req_header().version < http::Version::HTTP_2 {
        // HTTP/1.1 has no empty-stream end of its own: say the body is empty.
        resp.insert_header(http::header::CONTENT_LENGTH, "0")?;
    }
    session.write_response_header(Box::new(resp), true).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_content_types() {
        for ok in [
            "application/grpc",
            "application/grpc+proto",
            "application/GRPC+json",
            "application/grpc;charset=utf-8",
        ] {
            assert!(is_grpc_content_type(ok.as_bytes()), "{ok}");
        }
        for no in [
            "application/grpc-web",
            "application/grpc-web+proto",
            "application/json",
            "application/grp",
            "",
        ] {
            assert!(!is_grpc_content_type(no.as_bytes()), "{no}");
        }
    }

    #[test]
    fn statuses_follow_the_mapping() {
        assert_eq!(status_for(404).0, GrpcCode::Unimplemented);
        assert_eq!(status_for(500).0, GrpcCode::Unavailable);
        assert_eq!(status_for(503).0, GrpcCode::Unavailable);
        assert_eq!(status_for(504).0, GrpcCode::DeadlineExceeded);
        assert_eq!(status_for(403).0, GrpcCode::PermissionDenied);
        assert_eq!(status_for(418).0, GrpcCode::Unknown);
        for s in [400, 401, 403, 404, 413, 421, 429, 500, 502, 503, 504, 599] {
            let (code, msg) = status_for(s);
            assert_eq!(code.as_str(), (code as u8).to_string());
            assert!(msg.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'%'));
        }
    }
}
