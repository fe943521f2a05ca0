//! TCP listeners (TCPRoute): each connection picks a backend of the listener's route by weight, then an endpoint
//! through the backend's upstream (round robin by default, skipping endpoints out of rotation), and its bytes are
//! forwarded both ways with half-close and an idle timeout.

use super::l4::{connect, forward, pick, StreamListener};
use tokio::net::TcpStream;

/// Serves one connection of a TCP listener. No route, or a backend that cannot be used: the connection is closed.
pub(crate) async fn serve(client: TcpStream, l: &StreamListener) -> std::io::Result<()> {
    let snap = l.store.load();
    let Some(route) = snap
        .router
        .listener_for(l.key)
        .and_then(|t| t.l4_route())
        .cloned()
    else {
        return Ok(());
    };
    let Some(upstream) = pick(&snap, &route.backends) else {
        return Ok(());
    };
    drop(snap);
    let client_ip = client.peer_addr().ok().map(|a| a.ip());
    let backend = connect(&upstream, client_ip).await?;
    forward(client, backend, l.settings.tcp_idle_timeout).await?;
    Ok(())
}
