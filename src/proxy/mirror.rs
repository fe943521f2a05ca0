//! Request mirroring: a copy of the request (headers as sent upstream, and the body as it streams) goes to each
//! mirror backend on its own task; the mirror's response is read and discarded and never delays the client.

use super::upstream::{Tried, Upstreams};
use crate::router::{CompiledMirror, Target};
use bytes::Bytes;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Mirror copies in flight beyond which new copies are dropped (mirroring must never exhaust the proxy).
const MAX_IN_FLIGHT: usize = 1024;
/// Body chunks buffered per mirror copy before the copy is abandoned (a slow mirror must not hold memory).
const BODY_QUEUE: usize = 64;
/// How long a mirror copy may take in all.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends mirror copies; one per listener app, with its own upstream connection pool.
pub struct Mirrors {
    connector: Arc<Connector>,
    in_flight: Arc<AtomicUsize>,
}

impl Default for Mirrors {
    fn default() -> Self {
        Mirrors {
            connector: Arc::new(Connector::new(None)),
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }
}

/// The body side of started mirror copies: every request body chunk is offered to each.
#[derive(Default)]
pub struct MirrorBodies(Vec<mpsc::Sender<Bytes>>);

impl MirrorBodies {
    /// Offers a body chunk to every copy; a copy that cannot keep up is dropped.
    pub fn send(&mut self, chunk: &Bytes) {
        self.0.retain(|tx| tx.try_send(chunk.clone()).is_ok());
    }

    /// `true` when no copy is waiting for a body.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Ends every copy's body.
    pub fn finish(&mut self) {
        self.0.clear();
    }
}

struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Mirrors {
    /// Starts a copy of `req` to each sampled mirror. `has_body` says whether a request body will follow (it is
    /// then fed through the returned [`MirrorBodies`]).
    pub fn start(
        &self,
        mirrors: &[CompiledMirror],
        upstreams: &Upstreams,
        req: &RequestHeader,
        has_body: bool,
        bodies: &mut MirrorBodies,
    ) {
        for m in mirrors {
            if !m.sample() {
                continue;
            }
            let Target::Backend(id) = &m.target else {
                continue;
            };
            let Some(upstream) = upstreams.get(*id) else {
                continue;
            };
            let Some(ep) = upstream
                .select(b"", &Tried::default())
                .and_then(|i| upstream.endpoint(i))
            else {
                continue;
            };
            // The same peer a request to that backend gets: h2c and backend TLS included.
            let peer = upstream.peer(ep);
            let addr = ep.addr;
            if self.in_flight.fetch_add(1, Ordering::Relaxed) >= MAX_IN_FLIGHT {
                self.in_flight.fetch_sub(1, Ordering::Relaxed);
                tracing::debug!("too many mirror copies in flight; copy dropped");
                continue;
            }
            let guard = InFlight(self.in_flight.clone());
            let connector = self.connector.clone();
            let header = Box::new(req.clone());
            let rx = if has_body {
                let (tx, rx) = mpsc::channel(BODY_QUEUE);
                bodies.0.push(tx);
                Some(rx)
            } else {
                None
            };
            tokio::spawn(async move {
                let _guard = guard;
                let copy = send_copy(&connector, &peer, header, rx);
                match tokio::time::timeout(MIRROR_TIMEOUT, copy).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::debug!(%addr, error = %e, "mirror copy failed"),
                    Err(_) => tracing::debug!(%addr, "mirror copy timed out"),
                }
            });
        }
    }
}

async fn send_copy(
    connector: &Connector,
    peer: &HttpPeer,
    header: Box<RequestHeader>,
    body: Option<mpsc::Receiver<Bytes>>,
) -> pingora::Result<()> {
    let (mut session, _reused) = connector.get_http_session(peer).await?;
    session.write_request_header(header).await?;
    if let Some(mut rx) = body {
        while let Some(chunk) = rx.recv().await {
            session.write_request_body(chunk, false).await?;
        }
    }
    session.finish_request_body().await?;
    session.read_response_header().await?;
    while session.read_response_body().await?.is_some() {}
    connector
        .release_http_session(session, peer, Some(Duration::from_secs(60)))
        .await;
    Ok(())
}
