//! Durable Streams inside an axum application of your own: the protocol under
//! `/api/streams`, beside the application's own routes, on one port.
//!
//! ```sh
//! cargo run --example embed                     # listens on 127.0.0.1:3000 (EMBED_ADDR)
//! curl -i -X PUT localhost:3000/api/streams/chat -H 'content-type: text/plain'
//! curl -X POST localhost:3000/api/streams/chat -H 'content-type: text/plain' -d hello
//! curl 'localhost:3000/api/streams/chat?offset=-1'
//! curl localhost:3000/                          # the application's own route
//! ```
//!
//! The base path comes from [`HttpConfig::base_path`] (the server's `DS_HTTP__BASE_PATH`);
//! `Location` headers, fork sources and subscription URLs all live under it.
//! `tests/embedding.rs` drives this very file.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use ds_engine::{Engine, EngineConfig};
use ds_http::name::BasePath;
use ds_http::{AppState, HttpConfig};
use tokio::sync::watch;

/// Where the streams live in this application.
pub const BASE_PATH: &str = "/api/streams";

/// The application: its own `/`, and Durable Streams under [`BASE_PATH`]. Live reads end
/// when `shutdown` turns true.
pub fn app(engine: Arc<Engine>, shutdown: watch::Receiver<bool>) -> Router {
    let config = HttpConfig {
        base_path: BasePath::new(BASE_PATH).expect("a valid base path"),
        ..HttpConfig::default()
    };
    let streams = AppState::new(engine, config, shutdown);
    Router::new()
        .route("/", get(|| async { "my application\n" }))
        .merge(ds_http::front::axum::routes(streams))
}

/// Serves [`app`] on `listener` until `shutdown` turns true. The client's address reaches
/// the protocol (rate limits, access log) through axum's connect info.
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: Arc<Engine>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut stopping = shutdown.clone();
    let app = app(engine, shutdown).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        })
        .await
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let engine = Arc::new(Engine::open(EngineConfig::default()).map_err(std::io::Error::other)?);
    let addr = std::env::var("EMBED_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("listening on http://{}{BASE_PATH}/", listener.local_addr()?);
    let (stop, shutdown) = watch::channel(false);
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop.send(true);
    });
    serve(listener, engine, shutdown).await
}
