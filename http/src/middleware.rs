//! [`Protocol`]: the outermost service. It answers CORS preflights itself and puts the
//! brief's security headers and the CORS headers on every response, errors included.
//! Hand-written rather than a stack of tower layers: it runs on every request, and here it
//! costs a handful of header inserts and no allocation.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::Response;
use tower::Service;

use crate::config::CorsOrigins;

const NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");
const CROSS_ORIGIN: HeaderValue = HeaderValue::from_static("cross-origin");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
const ANY_ORIGIN: HeaderValue = HeaderValue::from_static("*");
const CORP: header::HeaderName = header::HeaderName::from_static("cross-origin-resource-policy");
/// Response headers a browser script may read.
const EXPOSE: HeaderValue = HeaderValue::from_static(
    "Stream-Next-Offset, Stream-Cursor, Stream-Up-To-Date, Stream-Closed, Stream-TTL, \
     Stream-Expires-At, Stream-SSE-Data-Encoding, ETag, Location, Content-Type, \
     Producer-Epoch, Producer-Seq, Producer-Expected-Seq, Producer-Received-Seq",
);
/// Request headers a browser script may send, when the preflight does not list its own.
const ALLOW_HEADERS: HeaderValue = HeaderValue::from_static(
    "Content-Type, If-None-Match, Stream-Seq, Stream-TTL, Stream-Expires-At, Stream-Closed, \
     Stream-Forked-From, Stream-Fork-Offset, Stream-Fork-Sub-Offset, Producer-Id, \
     Producer-Epoch, Producer-Seq, Authorization",
);
const ALLOW_METHODS: HeaderValue =
    HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, OPTIONS");
const PREFLIGHT_MAX_AGE: HeaderValue = HeaderValue::from_static("86400");
const VARY_PREFLIGHT: HeaderValue = HeaderValue::from_static(
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
);

/// Wraps the router: security headers, CORS, and `Cache-Control: no-store` by default.
#[derive(Clone, Debug)]
pub struct Protocol<S> {
    inner: S,
    cors: Arc<CorsOrigins>,
}

impl<S> Protocol<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, cors: CorsOrigins) -> Protocol<S> {
        Protocol { inner, cors: Arc::new(cors) }
    }
}

/// The `Access-Control-Allow-Origin` value for a request, if any origin may see the response.
fn allowed_origin(cors: &CorsOrigins, headers: &HeaderMap) -> Option<HeaderValue> {
    match cors {
        CorsOrigins::Any => Some(ANY_ORIGIN),
        CorsOrigins::List(list) => {
            let origin = headers.get(header::ORIGIN)?;
            list.iter().any(|o| o == origin).then(|| origin.clone())
        }
    }
}

fn decorate(resp: &mut Response, allow_origin: Option<HeaderValue>, echo: bool) {
    let h = resp.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, NOSNIFF);
    h.insert(CORP, CROSS_ORIGIN);
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, NO_STORE);
    }
    if echo {
        // The answer depends on the Origin, allowed or not: a shared cache must key on it.
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    if let Some(origin) = allow_origin {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSE);
    }
}

fn preflight(cors: &CorsOrigins, headers: &HeaderMap) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let origin = allowed_origin(cors, headers);
    if origin.is_some() {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS);
        let requested = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned();
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested.unwrap_or(ALLOW_HEADERS));
        h.insert(header::ACCESS_CONTROL_MAX_AGE, PREFLIGHT_MAX_AGE);
        h.insert(header::VARY, VARY_PREFLIGHT);
    }
    decorate(&mut resp, origin, false);
    resp
}

impl<S, B> Service<Request<B>> for Protocol<S>
where
    S: Service<Request<B>, Response = Response, Error = Infallible>,
    S::Future: Unpin,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ProtocolFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let is_preflight = req.method() == Method::OPTIONS
            && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if is_preflight {
            return ProtocolFuture::Ready(Some(preflight(&self.cors, req.headers())));
        }
        let origin = allowed_origin(&self.cors, req.headers());
        let echo = matches!(*self.cors, CorsOrigins::List(_));
        ProtocolFuture::Inner { fut: self.inner.call(req), origin, echo }
    }
}

/// The future of [`Protocol`].
#[derive(Debug)]
pub enum ProtocolFuture<F> {
    /// Answered without the inner service (a preflight).
    Ready(Option<Response>),
    /// Waiting for the inner service.
    Inner {
        /// The inner service's future.
        fut: F,
        /// `Access-Control-Allow-Origin` to add, if any.
        origin: Option<HeaderValue>,
        /// Whether the origin is echoed (then `Vary: Origin` is added).
        echo: bool,
    },
}

impl<F> Future for ProtocolFuture<F>
where
    F: Future<Output = Result<Response, Infallible>> + Unpin,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            ProtocolFuture::Ready(resp) => {
                Poll::Ready(Ok(resp.take().unwrap_or_else(|| Response::new(Body::empty()))))
            }
            ProtocolFuture::Inner { fut, origin, echo } => {
                let Ok(mut resp) = std::task::ready!(Pin::new(fut).poll(cx));
                decorate(&mut resp, origin.take(), *echo);
                Poll::Ready(Ok(resp))
            }
        }
    }
}
