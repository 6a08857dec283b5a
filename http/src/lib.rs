//! # ds-http
//!
//! The HTTP surface of ds-server: the Durable Streams protocol mounted at `{base}/{name}`
//! (`/v1/stream/{name}` unless configured otherwise),
//! mapped onto [`ds_engine::Engine`] once, and served by interchangeable front ends. This
//! crate never touches a file.
//!
//! # Layout
//! - Protocol (transport-agnostic): [`protocol`] routes a [`request::RequestHead`] and
//!   parses it into an owned call; [`routes`] holds one module per operation; [`sse`] the
//!   SSE event stream; [`response`] the answer as status, headers and body; [`error`] the
//!   one mapping from errors to problem+json answers. [`headers`], [`query`], [`name`],
//!   [`rfc3339`], [`cursor`]: strict parsing and §10.1 cursors. [`respond`]: rendering.
//!   [`rate`]: per-client rate limits (§12.5), applied by [`protocol::prepare`].
//!   [`compress`]: zstd, br or gzip for catch-up and long-poll answers.
//!   [`routes::subscriptions`]: the subscription control API under `{base}/__ds/`.
//! - [`webhook`]: the webhook client (rustls), which subscriptions deliver wakes with.
//! - [`tls`]: HTTPS (rustls, ALPN `h2` and `http/1.1`, certificate reload).
//! - Transport: [`front`] holds the front ends ([`front::fast`], hand-written HTTP/1.1, and
//!   [`front::axum`], axum on hyper); [`body`] the body limits both apply; [`io`] the write
//!   timeout both use.

pub mod body;
pub mod compress;
pub mod config;
pub mod cursor;
pub mod error;
pub mod front;
pub mod headers;
pub mod io;
pub mod metrics;
pub mod name;
pub mod protocol;
pub mod query;
pub mod rate;
pub mod request;
pub mod respond;
pub mod response;
pub mod rfc3339;
pub mod routes;
pub mod sse;
pub mod state;
pub mod tls;
pub mod webhook;

pub use config::{CachePolicy, CorsOrigins, FrontEnd, HttpConfig};
pub use front::serve;
pub use rate::RateLimit;
pub use state::AppState;
