//! The accept loop: HTTP/1.1 over hyper with header-read timeouts, a cap on connections, and a
//! graceful shutdown that stops accepting, ends live reads, and lets in-flight writes finish.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::io::WriteTimeout;
use crate::state::AppState;

/// How long in-flight requests get to finish after shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves `state` on `listener` until `state.shutdown` turns true, then drains.
///
/// # Errors
/// Never for client behaviour; only if the runtime fails.
pub async fn serve(listener: TcpListener, state: AppState) -> std::io::Result<()> {
    let app = crate::app(state.clone());
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(state.config.header_read_timeout)
        .keep_alive(true)
        .pipeline_flush(true);
    let permits = Arc::new(Semaphore::new(state.config.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = state.shutting_down() => break,
        };
        let (tcp, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = state.shutting_down() => break,
        };
        let _ = tcp.set_nodelay(true);
        let io = TokioIo::new(WriteTimeout::new(tcp, state.config.write_timeout));
        let conn = http.serve_connection(io, TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // A client that disconnects or times out is not an error worth logging.
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("connections still open after the shutdown grace period");
        }
    }
    Ok(())
}
