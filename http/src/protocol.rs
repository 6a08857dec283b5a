//! The one mapping of the Durable Streams protocol onto the engine, shared by every front end.
//!
//! A transport parses HTTP its own way, then hands the request head to [`prepare`], which
//! routes it and parses every protocol header and the query into an owned [`Prepared`] call
//! (errors included: a malformed header becomes a ready answer). The transport then reads
//! the body within [`crate::body::BodyLimits`], and runs the call:
//! [`Prepared::run`] for anything, or, for an append, [`AppendCall::begin`] now and
//! [`PendingAppend::finish`] later, so that a pipelining transport can start the next
//! request while this one waits for its commit. Every answer passes through the same CORS
//! and security-header step. Nothing here knows how bytes reach the socket.

use ds_engine::{AppendKind, ReadFrom};

use crate::body::Received;
use crate::config::CorsOrigins;
use crate::error::ApiError;
use crate::headers::visible_ascii;
use crate::metrics::Outcome;
use crate::request::{Field, Method, RequestHead, RequestHeaders};
use crate::response::{Body, Response, Status, Value};
use crate::routes::append::{Append, Begun};
use crate::routes::create::Create;
use crate::routes::read::Read;
use crate::state::AppState;
use crate::{name, query, routes};

/// Methods a stream URL supports (the `Allow` of a 405 or an `OPTIONS`).
const STREAM_METHODS: &str = "GET, HEAD, POST, PUT, DELETE, OPTIONS";
/// Methods the health and readiness probes support.
const PROBE_METHODS: &str = "GET, HEAD, OPTIONS";
/// Response headers a browser script may read.
const EXPOSE: &str = "Stream-Next-Offset, Stream-Cursor, Stream-Up-To-Date, Stream-Closed, \
     Stream-TTL, Stream-Expires-At, Stream-SSE-Data-Encoding, ETag, Location, Content-Type, \
     Producer-Epoch, Producer-Seq, Producer-Expected-Seq, Producer-Received-Seq";
/// Request headers a browser script may send, when the preflight does not list its own.
const ALLOW_HEADERS: &str = "Content-Type, If-None-Match, Stream-Seq, Stream-TTL, \
     Stream-Expires-At, Stream-Closed, Stream-Forked-From, Stream-Fork-Offset, \
     Stream-Fork-Sub-Offset, Producer-Id, Producer-Epoch, Producer-Seq, Authorization";

/// A request routed and parsed, owning everything it needs; only the body is missing.
#[derive(Debug)]
pub enum Prepared {
    /// An append: may begin while earlier appends of its connection wait for their commits.
    Append(AppendCall),
    /// Anything else: runs once every earlier request of its connection is answered.
    Other(OtherCall),
}

/// An append, parsed.
#[derive(Debug)]
pub struct AppendCall {
    append: Append,
    cors: Cors,
}

/// A request other than an append, parsed.
#[derive(Debug)]
pub struct OtherCall {
    call: Call,
    cors: Cors,
}

#[derive(Debug)]
enum Call {
    Create(Create),
    Read(Read),
    Head(String),
    Delete(String),
    /// The subscription control API (`/v1/stream/__ds/…`).
    Control(Box<routes::subscriptions::Control>),
    /// Answered without the engine (health, readiness, a preflight, or a refusal).
    Answer(Box<Response>),
}

/// What the CORS step adds to an answer, decided from the request.
#[derive(Debug, Default)]
struct Cors {
    /// `Access-Control-Allow-Origin`, if the origin may read the answer.
    allow_origin: Option<Value>,
    /// The answer depends on `Origin` (an origin list is configured): add `Vary: Origin`.
    vary: bool,
    /// A preflight answer, already complete.
    preflight: bool,
    /// The request carried an `Origin` (a browser's cross-origin request).
    origin_sent: bool,
}

/// Routes `head` and parses what the protocol needs from it.
#[must_use]
pub fn prepare(app: &AppState, head: &RequestHead<'_>) -> Prepared {
    let h = &head.headers;
    let cors_origins = &app.config.cors_origins;
    if let Err(e) = admit(app, head) {
        let cors = Cors {
            allow_origin: allowed_origin(cors_origins, h),
            origin_sent: h.get(Field::Origin).is_some(),
            vary: matches!(cors_origins, CorsOrigins::List(_)),
            preflight: false,
        };
        return Prepared::Other(OtherCall {
            call: Call::Answer(Box::new(e.into_response())),
            cors,
        });
    }
    if head.method == Method::Options && h.get(Field::AccessControlRequestMethod).is_some() {
        let resp = preflight(cors_origins, h);
        let cors = Cors { preflight: true, ..Cors::default() };
        return Prepared::Other(OtherCall { call: Call::Answer(Box::new(resp)), cors });
    }
    let cors = Cors {
        allow_origin: allowed_origin(cors_origins, h),
        vary: matches!(cors_origins, CorsOrigins::List(_)),
        preflight: false,
        origin_sent: h.get(Field::Origin).is_some(),
    };
    let call = match route(app, head) {
        Ok(Routed::Append(append)) => return Prepared::Append(AppendCall { append, cors }),
        Ok(Routed::Call(call)) => call,
        Err(e) => Call::Answer(Box::new(e.into_response())),
    };
    Prepared::Other(OtherCall { call, cors })
}

/// The rate limit (§12.5): one token per request from the client's address. Health and
/// readiness probes are never limited: a load balancer must not see a busy client as a
/// dead server.
fn admit(app: &AppState, head: &RequestHead<'_>) -> Result<(), ApiError> {
    let (Some(limiter), Some(peer)) = (&app.rate_limiter, head.peer) else {
        return Ok(());
    };
    if matches!(head.path, "/healthz" | "/readyz") {
        return Ok(());
    }
    limiter.check(peer, tokio::time::Instant::now()).map_err(ApiError::too_many_requests)
}

enum Routed {
    Append(Append),
    Call(Call),
}

fn route(app: &AppState, head: &RequestHead<'_>) -> Result<Routed, ApiError> {
    let get = matches!(head.method, Method::Get | Method::Head);
    if app.config.metrics_only && head.path != "/metrics" {
        return Err(ApiError::not_found("this listener serves /metrics only"));
    }
    let call = match head.path {
        "/metrics" if get && app.metrics.is_some() && !app.config.metrics_elsewhere => {
            let body = app.metrics.as_ref().map(|m| m.encode()).unwrap_or_default();
            let mut resp = Response::empty(Status::OK);
            resp.body = Body::Full(bytes::Bytes::from(body));
            resp.headers.set("content-type", Value::Static(crate::metrics::CONTENT_TYPE));
            Call::Answer(Box::new(resp))
        }
        "/healthz" if get => Call::Answer(Box::new(Response::text(Status::OK, "ok"))),
        "/readyz" if get => Call::Answer(Box::new(if app.is_ready() {
            Response::text(Status::OK, "ready")
        } else {
            // Recovery not finished, or (postgres) the database unreachable: ask again soon.
            let mut resp = Response::text(Status::SERVICE_UNAVAILABLE, "recovering");
            resp.headers.set("retry-after", Value::Static("1"));
            resp
        })),
        "/healthz" | "/readyz" if head.method == Method::Options => options(PROBE_METHODS),
        "/healthz" | "/readyz" => return Err(method_not_allowed(PROBE_METHODS)),
        path if routes::subscriptions::is_control_path(&app.config.base_path, path) => {
            match routes::subscriptions::parse(app, head) {
                Ok(control) => Call::Control(Box::new(control)),
                Err(resp) => Call::Answer(Box::new(resp)),
            }
        }
        path if app.config.base_path.strip(path).is_some() => {
            if head.method == Method::Other {
                return Err(method_not_allowed(STREAM_METHODS));
            }
            let name = name::parse(app.config.base_path.strip(path).unwrap_or_default())?;
            if head.method == Method::Options {
                // A plain OPTIONS (not a CORS preflight) asks what the resource supports.
                return Ok(Routed::Call(options(STREAM_METHODS)));
            }
            match head.method {
                Method::Post => return Ok(Routed::Append(Append::parse(name, &head.headers)?)),
                Method::Put => Call::Create(Create::parse(name, head, &app.config.base_path)?),
                Method::Get => {
                    let q = query::parse(head.query)?;
                    let if_none_match = match q.from {
                        ReadFrom::Tail => None,
                        _ => head
                            .headers
                            .get(Field::IfNoneMatch)
                            .and_then(visible_ascii)
                            .map(str::to_owned),
                    };
                    let read = Read::new(name, q, if_none_match);
                    Call::Read(if app.config.compression {
                        // Several differing `Accept-Encoding` lines would have to be read
                        // as one list (RFC 9110 §5.3); identity is acceptable to all.
                        let slot = head.headers.slot(Field::AcceptEncoding);
                        let accept = if slot.differs { None } else { slot.first };
                        read.compressed(crate::compress::negotiate(accept))
                    } else {
                        read
                    })
                }
                Method::Head => Call::Head(name),
                _ => Call::Delete(name),
            }
        }
        _ => {
            let base = app.config.base_path.prefix();
            return Err(ApiError::not_found(format!("no such route; streams live under {base}")));
        }
    };
    Ok(Routed::Call(call))
}

/// The answer to a plain `OPTIONS`: 204 with `Allow` (RFC 9110 §9.3.7).
fn options(allow: &'static str) -> Call {
    let mut resp = Response::empty(Status::NO_CONTENT);
    resp.headers.set("allow", Value::Static(allow));
    Call::Answer(Box::new(resp))
}

/// A 405 whose `Allow` lists the methods the path supports (RFC 9110 §15.5.6).
fn method_not_allowed(allow: &'static str) -> ApiError {
    ApiError::method_not_allowed().with("allow", Value::Static(allow))
}

impl Prepared {
    /// Whether the call reads the request body (`PUT` and `POST`); the transport still
    /// consumes any other request's body to find the next request.
    #[must_use]
    pub fn wants_body(&self) -> bool {
        match self {
            Prepared::Append(_) => true,
            Prepared::Other(other) => match &other.call {
                Call::Create(_) => true,
                Call::Control(control) => control.wants_body(),
                _ => false,
            },
        }
    }

    /// Whether the request was refused before its body was read: a transport that has not
    /// read the body yet need not (it closes the connection if the body cannot be skipped).
    #[must_use]
    pub fn is_answered(&self) -> bool {
        matches!(self, Prepared::Other(OtherCall { call: Call::Answer(_), .. }))
    }

    /// The answer when the transport could not read the body (too large, too slow, cut
    /// off): the error, with the CORS headers this request would have had.
    #[must_use]
    pub fn refuse(self, e: ApiError) -> Response {
        let cors = match self {
            Prepared::Append(call) => call.cors,
            Prepared::Other(call) => call.cors,
        };
        finish(Err(e), cors)
    }

    /// Runs the call to its answer.
    pub async fn run(self, app: &AppState, body: Received) -> Response {
        match self {
            Prepared::Append(append) => append.begin(app, body).finish(app).await,
            Prepared::Other(other) => other.run(app, body).await,
        }
    }
}

impl AppendCall {
    /// Makes the append take effect now (or refuses it); the answer comes from
    /// [`PendingAppend::finish`] once the append is as durable as the mode promises.
    #[must_use]
    pub fn begin(self, app: &AppState, body: Received) -> PendingAppend {
        let bytes = body.bytes.len() as u64;
        PendingAppend { begun: self.append.begin(app, body), cors: self.cors, bytes }
    }
}

/// An append that has taken effect (or been refused), waiting to be answered.
#[derive(Debug)]
pub struct PendingAppend {
    begun: Result<Begun, ApiError>,
    cors: Cors,
    /// The body's size (for the metrics).
    bytes: u64,
}

impl PendingAppend {
    /// Whether [`PendingAppend::finish`] still waits for a commit.
    #[must_use]
    pub fn is_pending(&self) -> bool {
        self.begun.as_ref().is_ok_and(Begun::is_pending)
    }

    /// Waits for the commit's outcome without answering yet. Cancel-safe: a transport may
    /// select on it beside reading the next request.
    pub async fn settled(&mut self) {
        if let Ok(begun) = &mut self.begun {
            begun.settled().await;
        }
    }

    /// The answer, once the append is as durable as the mode promises (counted in `app`'s
    /// metrics).
    pub async fn finish(self, app: &AppState) -> Response {
        let resp = match self.begun {
            Ok(begun) => begun.finish().await,
            Err(e) => Err(e),
        };
        if let Some(metrics) = &app.metrics {
            let outcome = match &resp {
                Ok((_, AppendKind::Appended | AppendKind::Closed)) => Outcome::appended,
                Ok((_, AppendKind::Duplicate)) => Outcome::duplicate,
                Err(_) => Outcome::refused,
            };
            metrics.append(outcome, self.bytes);
        }
        finish(resp.map(|(resp, _)| resp), self.cors)
    }
}

impl OtherCall {
    /// Runs the call to its answer.
    pub async fn run(self, app: &AppState, body: Received) -> Response {
        let resp = match self.call {
            Call::Create(create) => create.run(app, body).await,
            Call::Read(read) => {
                let encoding = read.encoding();
                let mut resp = read.run(app).await;
                if let (Some(metrics), Ok(resp)) = (&app.metrics, &resp)
                    && resp.status == Status::OK
                    && let Some(bytes) = resp.body.len()
                {
                    metrics.read(bytes);
                }
                if let (Some(encoding), Ok(resp)) = (encoding, &mut resp) {
                    crate::compress::apply(resp, encoding).await;
                }
                resp
            }
            Call::Head(name) => {
                let mut resp = routes::head::head(app, &name).await;
                if let (true, Ok(resp)) = (app.config.compression, &mut resp) {
                    // The fields a GET would carry (RFC 9110 §9.3.2).
                    resp.headers.append("vary", Value::Static("Accept-Encoding"));
                }
                resp
            }
            Call::Delete(name) => routes::delete::delete(app, &name).await,
            Call::Control(control) => Ok(control.run(app, body).await),
            Call::Answer(resp) => Ok(*resp),
        };
        finish(resp, self.cors)
    }
}

/// An error found by the transport (framing, limits, timeouts), as an answer with the same
/// headers every other answer has. CORS headers are left out: the request could not be read.
#[must_use]
pub fn refuse(e: ApiError) -> Response {
    finish(Err(e), Cors::default())
}

/// The last step of every answer: the standard headers (security, default `Cache-Control`),
/// CORS.
fn finish(resp: Result<Response, ApiError>, cors: Cors) -> Response {
    let mut resp = resp.unwrap_or_else(ApiError::into_response);
    // The security headers and the default `Cache-Control: no-store`.
    resp.standard = true;
    let h = &mut resp.headers;
    if cors.preflight {
        return resp;
    }
    if cors.vary {
        // The answer depends on the Origin, allowed or not: a shared cache must key on it.
        h.append("vary", Value::Static("Origin"));
    }
    // A request without `Origin` is not a browser's cross-origin one: CORS headers would be
    // bytes nobody reads. A cacheable answer gets them anyway, since a cache may hand it to
    // a browser later.
    let cacheable = h
        .get("cache-control")
        .is_some_and(|v| !matches!(v, Value::Static("no-store" | "no-cache")));
    // (An answer without `Cache-Control` gets `no-store`: not cacheable.)
    if let Some(origin) = cors.allow_origin.filter(|_| cors.origin_sent || cacheable) {
        h.set("access-control-allow-origin", origin);
        h.set("access-control-expose-headers", Value::Static(EXPOSE));
    }
    resp
}

/// The `Access-Control-Allow-Origin` value for a request, if its origin may see the answer.
fn allowed_origin(cors: &CorsOrigins, h: &RequestHeaders<'_>) -> Option<Value> {
    match cors {
        CorsOrigins::Any => Some(Value::Static("*")),
        CorsOrigins::List(list) => {
            let origin = h.get(Field::Origin)?;
            list.iter().find(|o| o.as_bytes() == origin).map(|o| Value::Text(o.clone()))
        }
    }
}

/// The answer to a CORS preflight.
fn preflight(cors: &CorsOrigins, h: &RequestHeaders<'_>) -> Response {
    let mut resp = Response::empty(Status::NO_CONTENT);
    let origin = allowed_origin(cors, h);
    if let Some(origin) = origin {
        let out = &mut resp.headers;
        out.set("access-control-allow-methods", Value::Static(STREAM_METHODS));
        let requested = h
            .get(Field::AccessControlRequestHeaders)
            .and_then(visible_ascii)
            .map(|v| Value::Text(v.to_owned()));
        out.set("access-control-allow-headers", requested.unwrap_or(Value::Static(ALLOW_HEADERS)));
        out.set("access-control-max-age", Value::Static("86400"));
        out.set(
            "vary",
            Value::Static("Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
        );
        out.set("access-control-allow-origin", origin);
        out.set("access-control-expose-headers", Value::Static(EXPOSE));
    }
    resp
}
