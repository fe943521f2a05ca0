//! Request handling: echo-basic's handlers, its `preserveSlashes` wrapper, the bits of Go's `ServeMux` and
//! HTTP server that change what a client sees, and the h2c listener's check.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use super::gojson::{self, EchoBody};
use super::gourl::{self, atoi, query_get};
use super::{godur, ws, ConnCtx, EchoListener, ReceivedRequest, Shared};

/// Every response body is complete when the handler returns.
pub(crate) type Resp = Response<Full<Bytes>>;

/// Returned to hyper to make it drop the connection (HTTP/1) or reset the stream (HTTP/2) without answering, as
/// Go does when a handler hijacks and closes the connection or panics.
#[derive(Debug)]
pub(crate) struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("echo server dropped the connection")
    }
}

impl std::error::Error for DropConnection {}

/// Go's `maxFormSize`; also the most of a request body that is read and recorded.
const MAX_BODY: usize = 10 << 20;

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// What the handlers need of a request once routing is decided and the body has been read.
pub(crate) struct ReqInfo {
    method: String,
    request_uri: String,
    host: Vec<u8>,
    proto: &'static str,
    is_h2: bool,
    /// Go's `r.Header`: canonical names, values in order, without `Host`.
    headers: BTreeMap<String, Vec<Vec<u8>>>,
    /// Go's `r.URL.Query()`.
    query: Vec<(Vec<u8>, Vec<u8>)>,
    /// Go's `r.PostForm` for url-encoded POST/PUT/PATCH bodies.
    post_form: Vec<(Vec<u8>, Vec<u8>)>,
    body: Bytes,
}

impl ReqInfo {
    /// Go's `r.FormValue(key)`: body form values take precedence over the query.
    fn form_value(&self, key: &str) -> &[u8] {
        match self.post_form.iter().find(|(k, _)| k == key.as_bytes()) {
            Some((_, v)) => v,
            None => query_get(&self.query, key),
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT_PLAIN));
    resp
}

fn empty(status: StatusCode) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = status;
    resp
}

/// Go's HTTP/1 server answer to a request it could not read (`400 Bad Request[: detail]`, then close).
fn go_bad_request(detail: Option<&'static str>) -> Resp {
    let body = match detail {
        Some(d) => format!("400 Bad Request: {d}"),
        None => "400 Bad Request".to_owned(),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = StatusCode::BAD_REQUEST;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT_PLAIN));
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// echo-basic's `processError`: `{"message":"..."}` with JSON headers.
fn process_error(message: &[u8], status: StatusCode) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(gojson::error_body(message))));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// Go's `w.WriteHeader(code)` with no body: codes outside 100..=999 make Go panic, which drops the connection;
/// informational codes (except 101) are sent as interim responses and the final answer is an empty 200.
fn write_header_only(code: i64) -> Result<Resp, DropConnection> {
    let code = u16::try_from(code).map_err(|_| DropConnection)?;
    if !(100..=999).contains(&code) {
        return Err(DropConnection);
    }
    if code < 200 && code != 101 {
        return Ok(empty(StatusCode::OK));
    }
    StatusCode::from_u16(code)
        .map(empty)
        .map_err(|_| DropConnection)
}

/// Go's `http.Redirect(w, r, location, 301)`.
fn redirect(method: &Method, location: String) -> Resp {
    let body = if method == Method::GET {
        Bytes::from(format!(
            "<a href=\"{}\">Moved Permanently</a>.\n\n",
            gourl::html_escape(&location)
        ))
    } else {
        Bytes::new()
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    if method == Method::GET || method == Method::HEAD {
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
    }
    resp
}

/// Go's `r.RequestURI`: the request target as sent (HTTP/1) or `:path` (HTTP/2).
fn request_uri(uri: &Uri, is_h2: bool) -> String {
    if !is_h2 && uri.scheme().is_some() {
        return uri.to_string();
    }
    match uri.path_and_query() {
        Some(pq) => pq.as_str().to_owned(),
        None => uri.to_string(),
    }
}

fn proto(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// Go's `r.Header` as its HTTP/1 or HTTP/2 server builds it.
fn go_headers(headers: &HeaderMap, version: Version) -> BTreeMap<String, Vec<Vec<u8>>> {
    let h1_chunked = version == Version::HTTP_11 && headers.contains_key(header::TRANSFER_ENCODING);
    let mut out: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for (name, value) in headers {
        if name == header::HOST {
            continue;
        }
        // Go moves Transfer-Encoding out of the header map, and with chunking drops Content-Length and Trailer.
        if h1_chunked
            && (name == header::TRANSFER_ENCODING
                || name == header::CONTENT_LENGTH
                || name == header::TRAILER)
        {
            continue;
        }
        out.entry(gourl::canonical_header_key(name.as_str()))
            .or_default()
            .push(value.as_bytes().to_vec());
    }
    if version == Version::HTTP_2 {
        // Go's HTTP/2 server merges cookies into one value and consumes `Expect: 100-continue`.
        if let Some(cookies) = out.get_mut("Cookie") {
            if cookies.len() > 1 {
                let joined = cookies.join(&b"; "[..]);
                *cookies = vec![joined];
            }
        }
        if out.get("Expect").and_then(|v| v.first()).map(Vec::as_slice) == Some(b"100-continue") {
            out.remove("Expect");
        }
    } else if out.get("Pragma").and_then(|v| v.first()).map(Vec::as_slice) == Some(b"no-cache")
        && !out.contains_key("Cache-Control")
    {
        // Go's fixPragmaCacheControl.
        out.insert("Cache-Control".to_owned(), vec![b"no-cache".to_vec()]);
    }
    out
}

/// Reads the body up to [`MAX_BODY`] bytes; stops quietly at the cap or on a client error.
async fn read_body(mut body: Incoming) -> Bytes {
    let mut buf = BytesMut::new();
    while buf.len() < MAX_BODY {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    let room = MAX_BODY - buf.len();
                    buf.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            Some(Err(_)) | None => break,
        }
    }
    buf.freeze()
}

async fn read_info(req: Request<Incoming>, request_uri: String, host: Vec<u8>) -> ReqInfo {
    let (parts, body) = req.into_parts();
    let is_h2 = parts.version == Version::HTTP_2;
    let headers = go_headers(&parts.headers, parts.version);
    let query = gourl::parse_query(parts.uri.query().unwrap_or("").as_bytes());
    let body = read_body(body).await;
    let form_method = parts.method == Method::POST
        || parts.method == Method::PUT
        || parts.method == Method::PATCH;
    let url_encoded = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|mt| {
            mt.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    let post_form = if form_method && url_encoded {
        gourl::parse_query(&body)
    } else {
        Vec::new()
    };
    ReqInfo {
        method: parts.method.as_str().to_owned(),
        request_uri,
        host,
        proto: proto(parts.version),
        is_h2,
        headers,
        query,
        post_form,
        body,
    }
}

/// What routing decided.
enum Route {
    Done(Result<Resp, DropConnection>),
    Echo,
    Retry,
    WebSocket,
}

/// Go's `r.Host`: the authority of an absolute-form target or `:authority`, else the Host header.
fn go_host(req: &Request<Incoming>) -> Vec<u8> {
    if let Some(authority) = req.uri().authority() {
        let a = authority.as_str();
        let a = a.rsplit_once('@').map_or(a, |(_, host)| host);
        if !a.is_empty() {
            return a.as_bytes().to_vec();
        }
    }
    req.headers()
        .get(header::HOST)
        .map(|v| v.as_bytes().to_vec())
        .unwrap_or_default()
}

fn route(ctx: &ConnCtx, req: &Request<Incoming>, request_uri: &str) -> Route {
    let version = req.version();
    let is_h2 = version == Version::HTTP_2;
    let method = req.method();

    // Go's HTTP/1 request reader.
    if version == Version::HTTP_11 {
        let hosts = req.headers().get_all(header::HOST).iter().count();
        if hosts == 0 && method != Method::CONNECT {
            return Route::Done(Ok(go_bad_request(Some("missing required Host header"))));
        }
        if hosts > 1 {
            return Route::Done(Ok(go_bad_request(None)));
        }
    }
    let raw_path = if request_uri == "*" {
        "*"
    } else {
        req.uri().path()
    };
    let Some(path) = gourl::unescape(raw_path.as_bytes(), false) else {
        // Go cannot parse the request URI: 400 (HTTP/1) or a stream reset (HTTP/2).
        return Route::Done(if is_h2 {
            Err(DropConnection)
        } else {
            Ok(go_bad_request(None))
        });
    };
    // Go's serverHandler: `OPTIONS *` never reaches the handler.
    if request_uri == "*" && method == Method::OPTIONS {
        return Route::Done(Ok(empty(StatusCode::OK)));
    }

    if ctx.listener == EchoListener::H2c {
        let upgrade_h2c = req
            .headers()
            .get(header::UPGRADE)
            .map(HeaderValue::as_bytes)
            == Some(b"h2c");
        if !is_h2 && !upgrade_h2c {
            return Route::Done(Ok(text(StatusCode::BAD_REQUEST, "Expected h2c request")));
        }
        return Route::Echo;
    }

    // Go's ServeMux (behind echo-basic's preserveSlashes).
    if request_uri == "*" {
        let mut resp = empty(StatusCode::BAD_REQUEST);
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Route::Done(Ok(resp));
    }
    let query_suffix = match req.uri().query() {
        Some(q) if !q.is_empty() => format!("?{q}"),
        _ => String::new(),
    };
    let path = gourl::replace_double_slash(&path);
    let routing_path = gourl::clean_path(&path);
    if routing_path == b"/status" || routing_path == b"/retry" {
        let mut target = routing_path;
        target.push(b'/');
        return Route::Done(Ok(redirect(
            method,
            gourl::escape_path(&target) + &query_suffix,
        )));
    }
    // Go's URL.EscapedPath(): the raw path while it still matches, else the re-escaped path.
    let escaped = match gourl::unescape(raw_path.as_bytes(), false) {
        Some(original) if original == path => raw_path.as_bytes().to_vec(),
        _ => gourl::escape_path(&path).into_bytes(),
    };
    let cleaned = gourl::clean_path(&escaped);
    if cleaned != escaped {
        // Go builds the Location from the cleaned escaped path and escapes it again.
        return Route::Done(Ok(redirect(
            method,
            gourl::escape_path(&cleaned) + &query_suffix,
        )));
    }
    match routing_path.as_slice() {
        b"/health" => Route::Done(Ok(text(StatusCode::OK, "OK"))),
        b"/ws" => Route::WebSocket,
        p if p.starts_with(b"/status/") => Route::Done(status(request_uri)),
        p if p.starts_with(b"/retry/") => Route::Retry,
        _ => Route::Echo,
    }
}

/// echo-basic's `statusHandler`: `^/status/(\d\d\d)$` against the raw request URI, else 400.
fn status(request_uri: &str) -> Result<Resp, DropConnection> {
    let code = request_uri
        .strip_prefix("/status/")
        .filter(|d| d.len() == 3 && d.bytes().all(|c| c.is_ascii_digit()))
        .and_then(|d| d.parse::<i64>().ok());
    match code {
        Some(code) => write_header_only(code),
        None => Ok(empty(StatusCode::BAD_REQUEST)),
    }
}

/// Handles one request on any listener.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    ctx: Arc<ConnCtx>,
    req: Request<Incoming>,
) -> Result<Resp, DropConnection> {
    let is_h2 = req.version() == Version::HTTP_2;
    let request_uri = request_uri(req.uri(), is_h2);
    let kind = match route(&ctx, &req, &request_uri) {
        Route::Done(resp) => return resp,
        Route::WebSocket => return ws::handshake(&shared, req),
        Route::Echo => Route::Echo,
        Route::Retry => Route::Retry,
    };
    let host = go_host(&req);
    let info = read_info(req, request_uri, host).await;
    // Like a Go handler goroutine, the handler runs to completion even if the client goes away (the retry
    // counter and its lock depend on that); only the server's shutdown stops it.
    let mut stop = shared.shutdown.clone();
    let task = tokio::spawn(async move {
        let work = async {
            match kind {
                Route::Retry => retry(&shared, &ctx, &info).await,
                _ => Ok(echo(&shared, &ctx, &info).await),
            }
        };
        tokio::select! {
            resp = work => Some(resp),
            () = super::stopped(&mut stop) => None,
        }
    });
    match task.await {
        Ok(Some(resp)) => resp,
        _ => Err(DropConnection),
    }
}

/// Sleeps for the Go duration in form value `key`, if any; `Err` is Go's parse error message.
async fn delay(info: &ReqInfo, key: &str) -> Result<(), String> {
    let value = info.form_value(key);
    if value.is_empty() {
        return Ok(());
    }
    let nanos = godur::parse_duration(value)?;
    if let Ok(nanos) = u64::try_from(nanos) {
        tokio::time::sleep(Duration::from_nanos(nanos)).await;
    }
    Ok(())
}

/// echo-basic's `retrySimulationHandler`.
async fn retry(shared: &Shared, ctx: &ConnCtx, info: &ReqInfo) -> Result<Resp, DropConnection> {
    let uuid = query_get(&info.query, "uuid");
    if uuid.is_empty() {
        return Ok(text(StatusCode::BAD_REQUEST, "uuid is required"));
    }
    let Some(succeed_after) = atoi(query_get(&info.query, "succeedAfter")) else {
        return Ok(text(StatusCode::BAD_REQUEST, "succeedAfter is required"));
    };
    let response_code = atoi(query_get(&info.query, "responseCode"));

    // Held for the rest of the handler, echo included, as in echo-basic.
    let mut attempts = shared.retry_attempts.lock().await;
    let seen = attempts.entry(uuid.to_vec()).or_insert(0);
    if *seen < succeed_after {
        *seen += 1;
        if let Err(message) = delay(info, "delayRetry").await {
            return Ok(process_error(
                message.as_bytes(),
                StatusCode::INTERNAL_SERVER_ERROR,
            ));
        }
        return match response_code {
            Some(code) => write_header_only(code),
            None if info.is_h2 => Ok(process_error(
                b"response writer does not support hijacking",
                StatusCode::INTERNAL_SERVER_ERROR,
            )),
            None => {
                // Hijack and close: with SO_LINGER 0 on TCP (a RST); a TLS connection is just closed.
                if let Some(reset) = &ctx.reset {
                    reset.trip();
                }
                Err(DropConnection)
            }
        };
    }
    let resp = echo(shared, ctx, info).await;
    drop(attempts);
    Ok(resp)
}

fn trim_space(s: &[u8]) -> &[u8] {
    s.trim_ascii()
}

/// echo-basic's `writeEchoResponseHeaders`, then Go's header writing: names keep the case sent (HTTP/1
/// responses are title-cased by hyper), a repeated name appends `,value`, invalid names are dropped.
fn echo_response_headers(info: &ReqInfo) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for list in info
        .headers
        .get("X-Echo-Set-Header")
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        for kv in list.split(|&c| c == b',') {
            let kv = trim_space(kv);
            let (name, value) = match kv.iter().position(|&c| c == b':') {
                Some(i) => (&kv[..i], &kv[i + 1..]),
                None => (kv, &b""[..]),
            };
            match entries.iter_mut().find(|(n, _)| n == name) {
                Some((_, existing)) => {
                    existing.push(b',');
                    existing.extend_from_slice(trim_space(value));
                }
                None => entries.push((name.to_vec(), value.to_vec())),
            }
        }
    }
    entries
}

/// echo-basic's `echoHandler`.
async fn echo(shared: &Shared, ctx: &ConnCtx, info: &ReqInfo) -> Resp {
    shared.log_line(format_args!(
        "Echoing back request made to {} to client ({})",
        info.request_uri, ctx.remote
    ));
    shared.record(ReceivedRequest {
        listener: ctx.listener,
        remote_addr: ctx.remote,
        method: info.method.clone(),
        path: info.request_uri.clone(),
        host: String::from_utf8_lossy(&info.host).into_owned(),
        proto: info.proto.to_owned(),
        headers: info
            .headers
            .iter()
            .map(|(k, vs)| {
                (
                    k.clone(),
                    vs.iter()
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .collect(),
                )
            })
            .collect(),
        body: info.body.clone(),
        tls_server_name: ctx.tls.as_ref().map(|t| t.server_name.clone()),
        client_certificates: ctx
            .tls
            .as_ref()
            .map(|t| t.peer_certificates.clone())
            .unwrap_or_default(),
    });

    if let Err(message) = delay(info, "delay").await {
        return process_error(message.as_bytes(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    let body = gojson::echo_body(&EchoBody {
        path: info.request_uri.as_bytes(),
        host: &info.host,
        method: info.method.as_bytes(),
        proto: info.proto,
        headers: &info.headers,
        http_port: &shared.http_port,
        namespace: &shared.namespace,
        ingress: &shared.ingress_name,
        service: &shared.service_name,
        pod: &shared.pod_name,
        tls: ctx.tls.as_ref(),
    });
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    let h = resp.headers_mut();
    for (name, value) in echo_response_headers(info) {
        // Go's `w.Header().Set` below replaces these exact names; hyper owns message framing.
        if name == b"Content-Type" || name == b"X-Content-Type-Options" {
            continue;
        }
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&name),
            HeaderValue::from_bytes(trim_space(&value)),
        ) else {
            continue;
        };
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        h.append(name, value);
    }
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes() {
        assert_eq!(
            status("/status/418").map(|r| r.status()).ok(),
            Some(StatusCode::IM_A_TEAPOT)
        );
        assert_eq!(
            status("/status/abc").map(|r| r.status()).ok(),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            status("/status/4180").map(|r| r.status()).ok(),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            status("/status/418?x").map(|r| r.status()).ok(),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            status("/status/102").map(|r| r.status()).ok(),
            Some(StatusCode::OK)
        );
        assert!(status("/status/099").is_err());
        assert_eq!(
            status("/status/999").map(|r| r.status().as_u16()).ok(),
            Some(999)
        );
    }

    #[test]
    fn h2_cookies_are_merged() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        h.append(header::HOST, HeaderValue::from_static("x"));
        let got = go_headers(&h, Version::HTTP_2);
        assert_eq!(got.get("Cookie"), Some(&vec![b"a=1; b=2".to_vec()]));
        assert!(!got.contains_key("Host"));
        let got = go_headers(&h, Version::HTTP_11);
        assert_eq!(got.get("Cookie").map(Vec::len), Some(2));
    }
}
