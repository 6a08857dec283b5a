//! hyper's server over the axum app ([`super::axum::app`]), one connection at a time: every
//! HTTP/2 connection (TLS that chose `h2` by ALPN, h2c with prior knowledge, or an h2c
//! connection the fast front end handed over), and every HTTP/1.1 connection of the axum
//! front end.
//!
//! The limits are the fast front end's: the opening bytes (the HTTP/2 preface, or enough of a
//! request line to tell it is not one) must arrive within `header_read_timeout`, HTTP/1.1
//! heads too; a connection with no request in progress for `header_read_timeout` is closed
//! gracefully (HTTP/1.1 keep-alive, and HTTP/2, where hyper has no idle timeout of its own);
//! HTTP/2 connections are pinged after that long without a frame and closed when a ping goes
//! unanswered as long; writes that make no progress for `write_timeout` fail; at shutdown
//! each connection stops taking requests and finishes those in progress.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use bytes::BytesMut;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::time::Instant;
use tower::ServiceExt as _;

use super::fast::head::HTTP2_PREFACE as PREFACE;
use crate::io::{Prefixed, WriteTimeout};
use crate::state::AppState;

/// Streams one HTTP/2 connection may have open at once (a browser page's SSE readers and
/// requests share one connection; 100 is the least RFC 9113 §6.5.2 recommends allowing).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// Largest HTTP/2 header list (as the HTTP/1.1 head limit of the fast front end).
const HEADER_LIST_BYTES_MAX: u32 = 64 * 1024;
/// HTTP/2 flow-control windows the server grants for request bodies (the default 64 KiB
/// would take a round trip per 64 KiB of an upload).
const WINDOW_BYTES: u32 = 1 << 20;
/// Response bytes buffered per HTTP/2 stream before its body is polled again.
const SEND_BUFFER_BYTES: usize = 1 << 20;

/// Marks a request that came over TLS (an extension our connections add).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Secure;

/// What a connection given to [`Hyper::serve`] may speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Speaks {
    /// Plain TCP: HTTP/1.1, or h2c with prior knowledge, told apart by its first bytes.
    Plain,
    /// TLS that did not choose `h2` by ALPN: HTTP/1.1 only (HTTP/2 over TLS is chosen by
    /// ALPN, RFC 9113 §3.3).
    Http1,
    /// TLS that chose `h2`, or h2c that the fast front end handed over.
    Http2,
}

/// The server, its builders made once.
pub(crate) struct Hyper {
    app: Router,
    h1: auto::Builder<TokioExecutor>,
    h2: auto::Builder<TokioExecutor>,
}

impl Hyper {
    /// The server of `state`.
    pub(crate) fn new(state: &AppState) -> Hyper {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(state.config.header_read_timeout)
            .keep_alive(true)
            .pipeline_flush(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
            .max_header_list_size(HEADER_LIST_BYTES_MAX)
            .initial_stream_window_size(WINDOW_BYTES)
            .initial_connection_window_size(WINDOW_BYTES)
            .max_send_buf_size(SEND_BUFFER_BYTES)
            .keep_alive_interval(state.config.header_read_timeout)
            .keep_alive_timeout(state.config.header_read_timeout);
        Hyper {
            app: super::axum::app(state.clone()),
            h1: builder.clone().http1_only(),
            h2: builder.http2_only(),
        }
    }

    /// Serves one connection until it closes, idles out, or shutdown begins and its
    /// requests in progress are answered (HTTP/2: a GOAWAY, then the open streams finish).
    pub(crate) async fn serve<I>(
        &self,
        mut io: I,
        peer: SocketAddr,
        secure: bool,
        speaks: Speaks,
        state: &AppState,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let limit = state.config.header_read_timeout;
        let (read, h2) = match speaks {
            Speaks::Http1 => (BytesMut::new(), false),
            Speaks::Plain | Speaks::Http2 => match opening(&mut io, limit).await {
                Some((read, h2)) => (read, h2 || speaks == Speaks::Http2),
                // Silent, slow or gone before saying what it speaks.
                None => return,
            },
        };
        let io =
            TokioIo::new(WriteTimeout::new(Prefixed::new(read, io), state.config.write_timeout));
        let active = Arc::new(Active::default());
        let service = Counted {
            inner: TowerToHyperService::new(self.app.clone().map_request(
                move |mut req: hyper::Request<Incoming>| {
                    // The client's address travels with each request, as axum's own `serve`
                    // does it.
                    req.extensions_mut().insert(ConnectInfo(peer));
                    if secure {
                        req.extensions_mut().insert(Secure);
                    }
                    req
                },
            )),
            active: active.clone(),
        };
        let builder = if h2 { &self.h2 } else { &self.h1 };
        let conn = builder.serve_connection(io, service);
        tokio::pin!(conn);
        loop {
            // A client that disconnects or times out is not an error worth logging.
            tokio::select! {
                _ = conn.as_mut() => return,
                () = state.shutting_down() => break,
                () = tokio::time::sleep(active.until_idle(limit)) => {
                    if active.until_idle(limit).is_zero() {
                        break;
                    }
                }
            }
        }
        conn.as_mut().graceful_shutdown();
        let _ = conn.await;
    }
}

/// Reads the opening bytes of a connection until they either are the HTTP/2 preface
/// (`true`) or cannot be (`false`), within `limit`; `None` if the client said neither in
/// time or closed. What was read is returned, to be read again.
async fn opening<I: AsyncRead + Unpin>(io: &mut I, limit: Duration) -> Option<(BytesMut, bool)> {
    let deadline = Instant::now() + limit;
    let mut read = BytesMut::with_capacity(PREFACE.len());
    loop {
        let n = read.len().min(PREFACE.len());
        if read[..n] != PREFACE[..n] {
            return Some((read, false));
        }
        if n == PREFACE.len() {
            return Some((read, true));
        }
        match tokio::time::timeout_at(deadline, io.read_buf(&mut read)).await {
            Ok(Ok(0) | Err(_)) | Err(_) => return None,
            Ok(Ok(_)) => {}
        }
    }
}

/// Requests of one connection in progress (from the head until the response body ends or
/// is dropped), and since when there has been none.
#[derive(Debug)]
struct Active {
    now: AtomicUsize,
    /// When `now` last went to 0, in milliseconds since `epoch`.
    idle_since_ms: AtomicU64,
    epoch: Instant,
}

impl Default for Active {
    fn default() -> Active {
        Active { now: AtomicUsize::new(0), idle_since_ms: AtomicU64::new(0), epoch: Instant::now() }
    }
}

impl Active {
    fn enter(self: &Arc<Active>) -> Entered {
        self.now.fetch_add(1, Ordering::AcqRel);
        Entered(self.clone())
    }

    /// How long until the connection has been idle for `limit`; `limit` while a request is
    /// in progress (checked again then), zero once it is idle that long.
    fn until_idle(&self, limit: Duration) -> Duration {
        if self.now.load(Ordering::Acquire) > 0 {
            return limit;
        }
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        let idle = self.epoch.elapsed().saturating_sub(since);
        limit.saturating_sub(idle)
    }
}

/// One request in progress; dropped with its response body (or its handler, if the client
/// gave up first).
#[derive(Debug)]
struct Entered(Arc<Active>);

impl Drop for Entered {
    fn drop(&mut self) {
        let ms = u64::try_from(self.0.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.idle_since_ms.store(ms, Ordering::Release);
        self.0.now.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A service that counts its requests in progress in [`Active`].
#[derive(Clone)]
struct Counted<S> {
    inner: S,
    active: Arc<Active>,
}

impl<S, B> hyper::service::Service<hyper::Request<Incoming>> for Counted<S>
where
    S: hyper::service::Service<hyper::Request<Incoming>, Response = hyper::Response<B>>,
    S::Future: Send + 'static,
    B: http_body::Body + Unpin,
{
    type Response = hyper::Response<Tracked<B>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        let entered = self.active.enter();
        let answer = self.inner.call(req);
        Box::pin(async move {
            let resp = answer.await?;
            Ok(resp.map(|body| Tracked { body, _entered: entered }))
        })
    }
}

/// A response body that keeps its request counted until it ends or is dropped.
struct Tracked<B> {
    body: B,
    _entered: Entered,
}

impl<B: http_body::Body + Unpin> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test]
    async fn the_opening_tells_http2_from_http1_and_keeps_what_it_read() {
        let limit = Duration::from_secs(5);
        let (mut client, mut server) = tokio::io::duplex(256);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let (read, h2) = opening(&mut server, limit).await.unwrap();
        assert!(!h2);
        assert!(b"GET / HTTP/1.1\r\n".starts_with(&read), "only what was sent");
        let (mut client, mut server) = tokio::io::duplex(256);
        client.write_all(PREFACE).await.unwrap();
        client.write_all(b"\0\0\0\x04").await.unwrap();
        let (read, h2) = opening(&mut server, limit).await.unwrap();
        assert!(h2 && read.starts_with(PREFACE));
        // Half a preface, then silence: no answer, within the limit.
        let (mut client, mut server) = tokio::io::duplex(256);
        client.write_all(&PREFACE[..10]).await.unwrap();
        let started = Instant::now();
        assert!(opening(&mut server, Duration::from_millis(200)).await.is_none());
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_with_no_request_in_progress() {
        let active = Arc::new(Active::default());
        let limit = Duration::from_secs(10);
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(active.until_idle(limit), Duration::from_secs(6));
        let entered = active.enter();
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(active.until_idle(limit), limit, "busy: never idle");
        drop(entered);
        assert_eq!(active.until_idle(limit), limit, "idle from now");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(active.until_idle(limit).is_zero());
    }
}
