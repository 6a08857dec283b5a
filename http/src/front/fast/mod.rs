//! The fast front end: HTTP/1.1 by hand on `httparse`, over tokio.
//!
//! - [`head`]: request heads, parsed strictly (RFC 9112): framing, `Host`, target forms.
//! - [`chunked`]: the incremental decoder of chunked request bodies.
//! - [`conn`]: one connection: keep-alive, pipelining with overlapped commits, bodies,
//!   `100-continue`, timeouts, writing answers in order.
//! - [`write`]: response heads rendered straight into the output buffer.
//! - [`checks`]: the properties the fuzz targets check.
//!
//! Limits are the same as the axum front end's: `header_read_timeout` (a head must arrive
//! within it, and an idle keep-alive connection closes after it), `body_read_timeout` and
//! the body limits of [`crate::body`], `write_timeout` ([`crate::io::WriteTimeout`]),
//! `max_connections`, and a graceful shutdown.

pub mod checks;
pub mod chunked;
pub mod conn;
pub mod head;
pub mod write;

use std::time::Duration;

use tokio::net::TcpListener;

use crate::state::AppState;

/// How long open connections get to finish after shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves `state` on `listener` until `state.shutdown` turns true, then stops accepting and
/// waits (up to [`SHUTDOWN_GRACE`]) for open connections: idle ones close at once, live
/// reads end, requests in progress are answered.
///
/// # Errors
/// Never for client behaviour; only if the runtime fails.
pub async fn serve(listener: TcpListener, state: AppState) -> std::io::Result<()> {
    let permits = super::connection_permits(&state);
    while let Some((tcp, peer, permit)) = super::accept(&listener, &permits, &state).await {
        let app = state.clone();
        tokio::spawn(async move {
            conn::serve(app, tcp, Some(peer.ip())).await;
            drop(permit);
        });
    }
    drop(listener);
    let max = state.config.max_connections.clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(SHUTDOWN_GRACE, permits.acquire_many(all)).await.is_err() {
        tracing::warn!("connections still open after the shutdown grace period");
    }
    Ok(())
}
