//! The front ends: transports over the one protocol mapping in [`crate::protocol`].
//!
//! - [`fast`]: a hand-written HTTP/1.1 server on `httparse` (the default).
//! - [`axum`]: axum on hyper, which embeds in axum applications.
//!
//! A front end parses HTTP its own way, builds a [`crate::request::RequestHead`], calls
//! [`crate::protocol::prepare`], reads the body within [`crate::body::BodyLimits`], runs the
//! prepared call and writes the [`crate::response::Response`]. Adding a third (HTTP/2, TLS,
//! io_uring) means writing those steps again for its transport, and nothing else.

pub mod axum;
pub mod fast;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::FrontEnd;
use crate::state::AppState;

/// Serves `state` on `listener` with the configured front end until `state.shutdown` turns
/// true, then drains.
///
/// # Errors
/// Never for client behaviour; only if the runtime fails.
pub async fn serve(listener: TcpListener, state: AppState) -> std::io::Result<()> {
    match state.config.front_end {
        FrontEnd::Fast => fast::serve(listener, state).await,
        FrontEnd::Axum => axum::serve(listener, state).await,
    }
}

/// One permit per connection allowed at once (`max_connections`).
fn connection_permits(state: &AppState) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(state.config.max_connections.clamp(1, Semaphore::MAX_PERMITS)))
}

/// Waits for a connection slot, then for the next client (`TCP_NODELAY` set) and its address; `None` once
/// the server shuts down. Failed accepts (out of descriptors and the like) back off instead
/// of spinning.
async fn accept(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
    state: &AppState,
) -> Option<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    let permit = tokio::select! {
        p = permits.clone().acquire_owned() => p.ok()?,
        () = state.shutting_down() => return None,
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    return Some((tcp, peer, permit));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = state.shutting_down() => return None,
        }
    }
}
