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
//! `max_connections`, and a graceful shutdown. A connection that opens with the HTTP/2
//! preface (h2c) is handed to hyper ([`conn::Handover`]); so is a TLS connection that chose
//! `h2` by ALPN (see [`super::serve`]).

pub mod checks;
pub mod chunked;
pub mod conn;
pub mod head;
pub mod write;
