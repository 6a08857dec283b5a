//! # ds-http
//!
//! The HTTP surface of ds-server: the Durable Streams protocol mounted at `/v1/stream/{name}`,
//! mapped onto [`ds_engine::Engine`]. Handlers parse, call the engine once, and render; the
//! protocol's rules live in the engine. This crate never touches a file.
//!
//! # Layout
//! - [`app`]: the router wrapped in [`middleware::Protocol`] (security headers, CORS).
//! - [`server::serve`]: the accept loop, timeouts and graceful shutdown.
//! - [`routes`]: one handler per operation; [`sse`] for SSE reads.
//! - [`headers`], [`query`], [`name`], [`rfc3339`]: strict request parsing.
//! - [`body`]: bounded body reading. [`respond`]: response rendering. [`cursor`]: §10.1.
//! - [`error`]: the one mapping from errors to problem+json responses.

pub mod body;
pub mod config;
pub mod cursor;
pub mod error;
pub mod headers;
pub mod io;
pub mod middleware;
pub mod name;
pub mod query;
pub mod respond;
pub mod rfc3339;
pub mod routes;
pub mod server;
pub mod sse;
pub mod state;

use axum::Router;
use axum::routing::{get, put};

pub use config::{CachePolicy, CorsOrigins, HttpConfig};
pub use middleware::Protocol;
pub use state::AppState;

/// The protocol router, without the outer [`Protocol`] layer.
pub fn router(state: AppState) -> Router {
    let stream = put(routes::create::create)
        .post(routes::append::append)
        .get(routes::read::read)
        .head(routes::head::head)
        .delete(routes::delete::delete)
        .fallback(routes::method_not_allowed);
    Router::new()
        .route("/healthz", get(routes::health))
        .route("/readyz", get(routes::ready))
        .route("/v1/stream/{*name}", stream)
        .fallback(routes::not_found)
        .with_state(state)
}

/// The complete service: router plus security and CORS headers.
pub fn app(state: AppState) -> Protocol<Router> {
    let cors = state.config.cors_origins.clone();
    Protocol::new(router(state), cors)
}
