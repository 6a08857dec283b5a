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

use tokio::net::TcpListener;

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
