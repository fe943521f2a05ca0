//! ingress-nginx `custom-http-errors`: when a backend answers one of the rule's statuses, the proxy asks the
//! Ingress's error backend (`default-backend`) for the page instead, with the headers ingress-nginx sends, and the
//! client gets that answer unchanged (status included), as nginx's `error_page` with `proxy_intercept_errors`
//! gives it. The backend's own response is dropped unread (its connection is closed rather than reused).

use super::upstream::{Tried, Upstream};
use crate::router::CompiledCustomErrors;
use bytes::{Bytes, BytesMut};
use pingora::http::{RequestHeader, ResponseHeader};
use std::time::Duration;

/// How long asking the error backend may take in all.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest error page passed on; a larger one fails the interception (the client gets the proxy's own page).
const MAX_BODY: usize = 1 << 20;

/// Headers of the client's request that do not go to the error backend: the body is not sent, and hop-by-hop
/// headers are the proxy's business.
const DROPPED: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "expect",
];

/// Headers of the error backend's answer that do not go to the client as they are (the body is sent whole, with
/// its length).
const DROPPED_RESPONSE: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
];

/// The request the error backend gets: the client's method and headers (no body), path `/`, and ingress-nginx's
/// `X-Code`, `X-Format` (the client's `Accept`), `X-Original-URI`, `X-Request-ID` and the rule's
/// `X-Namespace`, `X-Ingress-Name`, `X-Service-Name`, `X-Service-Port`.
pub fn error_request(
    ce: &CompiledCustomErrors,
    code: u16,
    req: &RequestHeader,
    request_id: Option<&str>,
) -> pingora::Result<RequestHeader> {
    let mut out = RequestHeader::build(req.method.clone(), b"/", Some(req.headers.len() + 8))?;
    for (k, v) in req.headers.iter() {
        if !DROPPED.contains(&k.as_str()) {
            out.append_header(k.clone(), v.clone())?;
        }
    }
    out.insert_header("x-code", code.to_string())?;
    let accept = req
        .headers
        .get(http::header::ACCEPT)
        .cloned()
        .unwrap_or_else(|| http::HeaderValue::from_static(""));
    out.insert_header("x-format", accept)?;
    let uri = req
        .uri
        .path_and_query()
        .map_or_else(|| req.uri.path(), |p| p.as_str());
    out.insert_header("x-original-uri", uri)?;
    if let Some(id) = request_id {
        out.insert_header("x-request-id", id)?;
    }
    for (k, v) in ce.headers.iter() {
        out.insert_header(k.clone(), v.clone())?;
    }
    Ok(out)
}

/// Asks the error backend (`upstream`) for the page of `code`: its response header (hop-by-hop headers removed,
/// `Content-Length` set) and body.
pub async fn fetch(
    ce: &CompiledCustomErrors,
    upstream: &Upstream,
    code: u16,
    req: &RequestHeader,
    request_id: Option<&str>,
) -> Result<(ResponseHeader, Bytes), Box<dyn std::error::Error + Send + Sync>> {
    if let Some(reason) = upstream.unusable() {
        return Err(reason.into());
    }
    let i = upstream
        .select(b"", &Tried::default())
        .ok_or("the error backend has no endpoints")?;
    let ep = upstream.endpoint(i).ok_or("no endpoint")?;
    let peer = upstream.peer(ep);
    let request = error_request(ce, code, req, request_id)?;
    let work = async {
        let (mut s, _) = super::side_connector().get_http_session(&peer).await?;
        s.write_request_header(Box::new(request)).await?;
        s.finish_request_body().await?;
        s.read_response_header().await?;
        let mut resp = s.response_header().cloned().ok_or_else(|| {
            pingora::Error::explain(pingora::ErrorType::InvalidHTTPHeader, "no header")
        })?;
        let mut body = BytesMut::new();
        while let Some(chunk) = s.read_response_body().await? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(pingora::Error::explain(
                    pingora::ErrorType::InternalError,
                    "error page too large",
                ));
            }
            body.extend_from_slice(&chunk);
        }
        super::side_connector()
            .release_http_session(s, &peer, Some(Duration::from_secs(60)))
            .await;
        for h in DROPPED_RESPONSE {
            resp.remove_header(*h);
        }
        resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
        Ok::<_, Box<pingora::Error>>((resp, body.freeze()))
    };
    match tokio::time::timeout(TIMEOUT, work).await {
        Ok(r) => Ok(r?),
        Err(_) => Err("the error backend did not answer in time".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::Target;

    #[test]
    fn the_error_request_carries_ingress_nginx_headers() {
        let ce = CompiledCustomErrors {
            codes: vec![404].into_boxed_slice(),
            target: Target::Status {
                status: 503,
                reason: "test".into(),
            },
            headers: vec![(
                http::HeaderName::from_static("x-namespace"),
                http::HeaderValue::from_static("shop"),
            )]
            .into_boxed_slice(),
        };
        let mut req = RequestHeader::build("POST", b"/cart/items?x=1", None).expect("request");
        req.append_header("accept", "application/json").expect("h");
        req.append_header("content-length", "12").expect("h");
        req.append_header("host", "shop.example.com").expect("h");
        let out = error_request(&ce, 404, &req, Some("abc")).expect("error request");
        assert_eq!(out.method, http::Method::POST);
        assert_eq!(out.uri.path(), "/");
        let h = |n: &str| out.headers.get(n).and_then(|v| v.to_str().ok());
        assert_eq!(h("x-code"), Some("404"));
        assert_eq!(h("x-format"), Some("application/json"));
        assert_eq!(h("x-original-uri"), Some("/cart/items?x=1"));
        assert_eq!(h("x-request-id"), Some("abc"));
        assert_eq!(h("x-namespace"), Some("shop"));
        assert_eq!(h("host"), Some("shop.example.com"));
        assert_eq!(h("content-length"), None);
    }
}
