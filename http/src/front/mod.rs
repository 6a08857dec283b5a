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

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::FrontEnd;
use crate::request::{Method, RequestHead};
use crate::response::Status;
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

/// One request's line in the access log (`DS_HTTP__ACCESS_LOG`): made when its head is
/// read, written (target `access`, level info) when its response head is, with the time in
/// between; a streamed body (SSE, long catch-up) goes on after the line.
#[derive(Debug)]
pub(crate) struct Access {
    method: Method,
    uri: String,
    peer: Option<IpAddr>,
}

impl Access {
    /// The record of `head`, if the access log is on.
    pub(crate) fn of(app: &AppState, head: &RequestHead<'_>) -> Option<Access> {
        app.config.access_log.then(|| Access {
            method: head.method,
            uri: match head.query {
                Some(q) => format!("{}?{q}", head.path),
                None => head.path.to_owned(),
            },
            peer: head.peer,
        })
    }

    /// The record of a request whose head could not be read as one.
    pub(crate) fn unreadable(app: &AppState, peer: Option<IpAddr>) -> Option<Access> {
        app.config.access_log.then(|| Access { method: Method::Other, uri: "-".to_owned(), peer })
    }

    /// Writes the line of a request whose head was read at `started`.
    pub(crate) fn log(self, status: Status, started: Instant) {
        let method = match self.method {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Other => "-",
        };
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let client = self.peer.map_or_else(|| "-".to_owned(), |ip| ip.to_string());
        tracing::info!(
            target: "access",
            method,
            uri = %self.uri,
            status = status.code(),
            micros,
            client = %client,
        );
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
