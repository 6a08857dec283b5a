//! The front ends: transports over the one protocol mapping in [`crate::protocol`].
//!
//! - [`fast`]: a hand-written HTTP/1.1 server on `httparse` (the default).
//! - [`axum`]: axum on hyper, which embeds in axum applications, and serves HTTP/2.
//!
//! [`serve`] is the one accept loop: it takes a connection slot, runs the TLS handshake when
//! HTTPS is on ([`crate::tls`]), and gives the connection to a front end: HTTP/2 (ALPN `h2`,
//! or the h2c preface) always to hyper, HTTP/1.1 to the configured one.
//!
//! A front end parses HTTP its own way, builds a [`crate::request::RequestHead`], calls
//! [`crate::protocol::prepare`], reads the body within [`crate::body::BodyLimits`], runs the
//! prepared call and writes the [`crate::response::Response`]. Adding a third (HTTP/2, TLS,
//! io_uring) means writing those steps again for its transport, and nothing else.

pub mod axum;
pub mod fast;
pub(crate) mod hyper_server;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use self::hyper_server::{Hyper, Speaks};
use crate::config::FrontEnd;
use crate::request::{Method, RequestHead};
use crate::response::Status;
use crate::state::AppState;

/// How long open connections get to finish after shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves `state` on `listener` with the configured front end (over TLS when
/// `state.tls` is set) until `state.shutdown` turns true, then stops accepting and waits
/// (up to [`SHUTDOWN_GRACE`]) for open connections: idle ones close at once, live reads
/// end, requests in progress are answered.
///
/// # Errors
/// Never for client behaviour; only if the runtime fails.
pub async fn serve(listener: TcpListener, state: AppState) -> std::io::Result<()> {
    let permits = connection_permits(&state);
    let hyper = Arc::new(Hyper::new(&state));
    while let Some((tcp, peer, permit)) = accept(&listener, &permits, &state).await {
        let (state, hyper) = (state.clone(), hyper.clone());
        tokio::spawn(async move {
            connection(&state, &hyper, tcp, peer).await;
            drop(permit);
        });
    }
    drop(listener);
    let max = state.config.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(SHUTDOWN_GRACE, permits.acquire_many(all)).await.is_err() {
        tracing::warn!("connections still open after the shutdown grace period");
    }
    Ok(())
}

/// Serves one accepted connection: the TLS handshake first when HTTPS is on (it must end
/// within `header_read_timeout`), then the front end its protocol calls for.
async fn connection(state: &AppState, hyper: &Hyper, tcp: TcpStream, peer: SocketAddr) {
    let Some(tls) = &state.tls else {
        return plain(state, hyper, tcp, peer, false).await;
    };
    let handshake = tls.acceptor().accept(tcp);
    let stream = match tokio::time::timeout(state.config.header_read_timeout, handshake).await {
        Ok(Ok(stream)) => stream,
        // A failed or slow handshake: nothing was asked, nothing to answer.
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    if crate::tls::is_h2(&stream) {
        hyper.serve(stream, peer, true, Speaks::Http2, state).await;
    } else {
        plain(state, hyper, stream, peer, true).await;
    }
}

/// Serves a connection that speaks HTTP/1.1, or (not over TLS) h2c: the configured front
/// end; the fast one hands an h2c connection over to hyper.
async fn plain<T>(state: &AppState, hyper: &Hyper, io: T, peer: SocketAddr, secure: bool)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    match state.config.front_end {
        FrontEnd::Fast => {
            let who = fast::conn::Peer { ip: Some(peer.ip()), secure };
            if let Some(h2c) = fast::conn::serve(state.clone(), io, who).await {
                let io = crate::io::Prefixed::new(h2c.read, h2c.io);
                hyper.serve(io, peer, secure, Speaks::Http2, state).await;
            }
        }
        FrontEnd::Axum => {
            let speaks = if secure { Speaks::Http1 } else { Speaks::Plain };
            hyper.serve(io, peer, secure, speaks, state).await;
        }
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
