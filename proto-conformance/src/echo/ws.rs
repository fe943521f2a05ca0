//! echo-basic's `/ws` handler: `golang.org/x/net/websocket`'s server handshake (including its `Origin` check)
//! and an echo of every message.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::handler::{DropConnection, Resp};
use super::Shared;

/// x/net/websocket writes a bare status line, optional headers, then the error text, and closes.
fn refuse(status: StatusCode, body: &'static str, version_header: bool) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    if version_header {
        resp.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
    }
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// Go's `url.ParseRequestURI` acceptance, roughly: an absolute path or a URI with a scheme, no control bytes.
fn parses_as_request_uri(origin: &[u8]) -> bool {
    if origin.is_empty() || origin.iter().any(|&c| c < 0x20 || c == 0x7f) {
        return false;
    }
    if origin[0] == b'/' {
        return true;
    }
    for (i, &c) in origin.iter().enumerate() {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' if i > 0 => {}
            b':' => return i > 0,
            _ => return false,
        }
    }
    false
}

/// Answers the WebSocket upgrade on `/ws` and, on success, echoes messages on the upgraded connection.
pub(crate) fn handshake(
    shared: &Arc<Shared>,
    mut req: Request<Incoming>,
) -> Result<Resp, DropConnection> {
    // x/net/websocket hijacks the connection, which Go's HTTP/2 server cannot do: the handler panics and the
    // stream is reset.
    if req.version() == Version::HTTP_2 {
        return Err(DropConnection);
    }
    let first = |name: header::HeaderName| -> Vec<u8> {
        req.headers()
            .get(name)
            .map(|v| v.as_bytes().to_vec())
            .unwrap_or_default()
    };
    if req.method() != Method::GET {
        return Ok(refuse(StatusCode::METHOD_NOT_ALLOWED, "bad method", false));
    }
    let upgrade = first(header::UPGRADE).to_ascii_lowercase();
    let connection = String::from_utf8_lossy(&first(header::CONNECTION)).to_ascii_lowercase();
    if upgrade != b"websocket" || !connection.contains("upgrade") {
        return Ok(refuse(
            StatusCode::BAD_REQUEST,
            "not websocket protocol",
            false,
        ));
    }
    let key = first(header::SEC_WEBSOCKET_KEY);
    if key.is_empty() {
        return Ok(refuse(
            StatusCode::BAD_REQUEST,
            "mismatch challenge/response",
            false,
        ));
    }
    if first(header::SEC_WEBSOCKET_VERSION) != b"13" {
        return Ok(refuse(
            StatusCode::BAD_REQUEST,
            "missing or bad WebSocket Version",
            true,
        ));
    }
    let protocol_header = first(header::SEC_WEBSOCKET_PROTOCOL);
    let protocol_header = protocol_header.trim_ascii();
    let protocols: Vec<&[u8]> = if protocol_header.is_empty() {
        Vec::new()
    } else {
        protocol_header
            .split(|&c| c == b',')
            .map(<[u8]>::trim_ascii)
            .collect()
    };
    // websocket.Handler's checkOrigin: a missing or unparsable Origin is refused with 403 and no body.
    let origin = first(header::ORIGIN);
    if !parses_as_request_uri(&origin) {
        return Ok(refuse(StatusCode::FORBIDDEN, "", false));
    }
    // The server must pick one subprotocol; websocket.Handler does not, so several are refused.
    if protocols.len() > 1 {
        return Ok(refuse(StatusCode::BAD_REQUEST, "", false));
    }
    let protocol = match protocols.first() {
        Some(p) => Some(HeaderValue::from_bytes(p).map_err(|_| DropConnection)?),
        None => None,
    };

    let on_upgrade = hyper::upgrade::on(&mut req);
    let shared_for_task = shared.clone();
    let mut stop = shared.shutdown.clone();
    let origin_text = String::from_utf8_lossy(&origin).into_owned();
    tokio::spawn(async move {
        let session = async {
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            shared_for_task.log_line(format_args!(
                "established websocket connection {origin_text}"
            ));
            let mut ws =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            while let Some(Ok(msg)) = ws.next().await {
                let sent = match msg {
                    Message::Text(_) | Message::Binary(_) => ws.send(msg).await,
                    // Pongs and the closing handshake are queued by tungstenite; push them out.
                    Message::Ping(_) | Message::Pong(_) | Message::Close(_) => ws.flush().await,
                    Message::Frame(_) => Ok(()),
                };
                if sent.is_err() {
                    break;
                }
            }
        };
        tokio::select! {
            () = session => {}
            () = super::stopped(&mut stop) => {}
        }
    });

    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    let accept = HeaderValue::from_str(&derive_accept_key(&key)).map_err(|_| DropConnection)?;
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    if let Some(protocol) = protocol {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    #[test]
    fn origin_check() {
        use super::parses_as_request_uri as ok;
        assert!(ok(b"ws://gateway/TestConformance"));
        assert!(ok(b"http://localhost"));
        assert!(ok(b"/path"));
        assert!(!ok(b""));
        assert!(!ok(b"null"));
        assert!(!ok(b":foo"));
        assert!(!ok(b"1http://x"));
    }
}
