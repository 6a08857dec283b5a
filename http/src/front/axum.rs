//! The axum/hyper front end: the protocol mapping ([`crate::protocol`]) as an axum handler,
//! served by hyper ([`super::hyper_server`]: HTTP/1.1, and HTTP/2 over TLS or as h2c). This
//! is the front end that embeds in an axum application ([`routes`] merges into any
//! `Router`), and the one that carries every HTTP/2 connection, whichever front end is
//! configured.
//!
//! The handler only translates: hyper's request head into a [`RequestHead`], hyper's body
//! into a [`Received`] within the body limits, and the protocol's [`Response`] into axum's.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body as AxumBody;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::routing::any;
use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::time::Instant;

use crate::body::{BodyLimits, Received};
use crate::error::ApiError;
use crate::protocol;
use crate::request::{Method, RequestHead, RequestHeaders};
use crate::response::{Body, Response, Value};
use crate::state::AppState;

/// The protocol's routes, to merge into an axum application: every method on
/// `{base}/{*name}`, the streams and the subscription control API under the configured base
/// path (`state.config.base_path`, `/v1/stream` by default). The application's other routes
/// stay its own: the server's `/healthz`, `/readyz` and `/metrics` are not among these.
///
/// ```no_run
/// # async fn mount(engine: std::sync::Arc<ds_engine::Engine>) {
/// use ds_http::{AppState, HttpConfig};
/// let config = HttpConfig {
///     base_path: ds_http::name::BasePath::new("/api/streams").unwrap(),
///     ..HttpConfig::default()
/// };
/// let (_stop, stopped) = tokio::sync::watch::channel(false);
/// let state = AppState::new(engine, config, stopped);
/// let app = axum::Router::new()
///     .route("/hello", axum::routing::get(|| async { "hello" }))
///     .merge(ds_http::front::axum::routes(state));
/// # }
/// ```
///
/// Merge rather than `nest`: the protocol builds `Location` and subscription URLs from the
/// paths it is asked for, so the base path is the whole prefix.
pub fn routes(state: AppState) -> Router {
    Router::new().route(&stream_route(&state), any(handle)).with_state(state)
}

/// The whole server as an axum `Router`: [`routes`], `/healthz`, `/readyz`, `/metrics`, and
/// every other path answered by the protocol too (a problem+json 404).
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", any(handle))
        .route("/readyz", any(handle))
        .route(&stream_route(&state), any(handle))
        .fallback(handle)
        .with_state(state)
}

/// The route of every path under the base path: `{base}/{*name}`.
fn stream_route(state: &AppState) -> String {
    format!("{}{{*name}}", state.config.base_path.prefix())
}

/// The one handler: translate, prepare, read the body, run, translate back.
async fn handle(State(app): State<AppState>, req: Request) -> axum::response::Response {
    let (parts, body) = req.into_parts();
    let mut headers = RequestHeaders::default();
    for (name, value) in &parts.headers {
        headers.add(name.as_str().as_bytes(), value.as_bytes());
    }
    let host = parts.headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let head = RequestHead {
        method: Method::parse(parts.method.as_str().as_bytes()),
        path: parts.uri.path(),
        query: parts.uri.query(),
        authority: parts.uri.authority().map(axum::http::uri::Authority::as_str).or(host),
        headers,
        // Set by our `serve`, or by axum's `into_make_service_with_connect_info` when the
        // routes are embedded in an application.
        peer: parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()),
        secure: parts.extensions.get::<super::hyper_server::Secure>().is_some()
            || parts.uri.scheme() == Some(&axum::http::uri::Scheme::HTTPS),
    };
    let observed = crate::metrics::Observed::of(&app, &head);
    let prepared = protocol::prepare(&app, &head);
    let body = if prepared.wants_body() {
        collect(&parts.headers, body, &app.body_limits).await
    } else {
        Ok(Received::empty())
    };
    let resp = match body {
        Ok(body) => prepared.run(&app, body).await,
        Err(e) => prepared.refuse(e),
    };
    observed.answered(&app, resp.status);
    let head_only = parts.method == axum::http::Method::HEAD;
    // `Connection` is an HTTP/1.1 header; HTTP/2 has none (RFC 9113 §8.2.2).
    let http1 = parts.version < axum::http::Version::HTTP_2;
    into_axum(resp, head_only, http1)
}

/// Reads the whole body within the limits.
///
/// # Errors
/// 413 over the limit, 408 past the deadline (also while waiting for budget), 400 for a
/// malformed `Content-Length` or a broken body.
async fn collect(
    headers: &HeaderMap,
    body: AxumBody,
    limits: &BodyLimits,
) -> Result<Received, ApiError> {
    let declared = match headers.get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| ApiError::bad_request("invalid Content-Length"))?,
        ),
    };
    let declared = declared.map(|n| limits.check_declared(n)).transpose()?;
    if declared == Some(0) {
        return Ok(Received::empty());
    }
    let deadline = Instant::now() + limits.timeout;
    let mut share = match declared {
        Some(n) => Some(limits.take(n, deadline).await?),
        None => None,
    };
    let mut body = body;
    let mut single: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    let mut total = 0usize;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(ApiError::body_timeout()),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(ApiError::bad_request("request body was cut off")),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else { continue };
        total = total.saturating_add(data.len());
        if total > limits.max_bytes {
            return Err(ApiError::body_too_large(limits.max_bytes));
        }
        if declared.is_none() {
            let more = limits.take(data.len(), deadline).await?;
            match &mut share {
                Some(s) => s.merge(more),
                None => share = Some(more),
            }
        }
        match (&mut single, &mut joined) {
            (None, None) => single = Some(data),
            (Some(first), None) => {
                let mut buf = BytesMut::with_capacity(declared.unwrap_or(total).max(total));
                buf.extend_from_slice(first);
                buf.extend_from_slice(&data);
                single = None;
                joined = Some(buf);
            }
            (_, Some(buf)) => buf.extend_from_slice(&data),
        }
    }
    let bytes = match (single, joined) {
        (_, Some(buf)) => buf.freeze(),
        (Some(one), None) => one,
        (None, None) => Bytes::new(),
    };
    Ok(Received::new(bytes, share))
}

/// The protocol's response as axum's.
fn into_axum(mut resp: Response, head_only: bool, http1: bool) -> axum::response::Response {
    let standard: Vec<(&str, &str)> = resp.standard_headers().collect();
    let body = match std::mem::take(&mut resp.body) {
        // The answer to a `HEAD` has no body, and its length is not known here (it is what
        // a `GET` would send, RFC 9110 §8.6): a body of unknown size keeps axum from
        // claiming `Content-Length: 0`.
        Body::Empty if head_only => {
            AxumBody::from_stream(futures_util::stream::empty::<Result<Bytes, Infallible>>())
        }
        Body::Empty => AxumBody::empty(),
        Body::Full(bytes) => AxumBody::from(bytes),
        Body::Parts(parts) => {
            let remaining = parts.iter().map(|p| p.len() as u64).sum();
            AxumBody::new(PartsBody { parts: parts.into(), remaining })
        }
        Body::Sse(sse) => {
            AxumBody::from_stream(futures_util::stream::unfold(sse, |mut sse| async move {
                sse.next_frame().await.map(|frame| (Ok::<_, Infallible>(frame), sse))
            }))
        }
    };
    let mut out = axum::response::Response::new(body);
    *out.status_mut() =
        StatusCode::from_u16(resp.status.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = out.headers_mut();
    for (name, value) in resp.headers.iter() {
        let value = match value {
            Value::Static(s) => HeaderValue::from_static(s),
            Value::Number(n) => HeaderValue::from(*n),
            other => match HeaderValue::from_bytes(&other.to_bytes()) {
                Ok(v) => v,
                Err(_) => continue,
            },
        };
        h.append(HeaderName::from_static(name), value);
    }
    for (name, value) in standard {
        h.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
    }
    if resp.close && http1 {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    out
}

/// A body that sends shared buffers one after another without copying them.
struct PartsBody {
    parts: VecDeque<Bytes>,
    remaining: u64,
}

impl http_body::Body for PartsBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        Poll::Ready(this.parts.pop_front().map(|part| {
            this.remaining -= part.len() as u64;
            Ok(Frame::data(part))
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.parts.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}
