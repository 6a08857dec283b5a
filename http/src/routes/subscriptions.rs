//! `/v1/stream/__ds/…`: the subscription control API (§6, §7), routed before any stream
//! operation so that no stream lives under `__ds`.
//!
//! | path under `/v1/stream/__ds/` | methods |
//! |---|---|
//! | `jwks.json` | GET, HEAD |
//! | `subscriptions/{id}` | PUT, GET, DELETE |
//! | `subscriptions/{id}/streams` | POST |
//! | `subscriptions/{id}/streams/{path}` (percent-encoded, may hold `/`) | DELETE |
//! | `subscriptions/{id}/callback`, `/claim`, `/ack`, `/release` | POST |
//!
//! Any other path under `__ds` is 404 `SUBSCRIPTION_NOT_FOUND`; a wrong method 405 in
//! `text/plain`. Errors are `{"error":{"code","message"}}` (§7.4). The rules live in
//! [`ds_engine::subscription`]; this module parses and renders.

use bytes::Bytes;
use ds_engine::subscription::SubError;
use ds_engine::subscription::keys::Use;
use serde_json::{Value, json};

use crate::body::Received;
use crate::name::{self, BasePath};
use crate::request::{Field, Method, RequestHead};
use crate::response::{Body, Response, Status, Value as Header};
use crate::state::AppState;

/// Whether `path` (still percent-encoded) is under the control prefix (`{base}/__ds`).
#[must_use]
pub fn is_control_path(base: &BasePath, path: &str) -> bool {
    path.strip_prefix(base.control()).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[derive(Debug)]
enum Route {
    Jwks,
    Subscription(String),
    Streams(String),
    Stream(String, String),
    Callback(String),
    Claim(String),
    Ack(String),
    Release(String),
}

/// A control request, parsed; only the body is missing.
#[derive(Debug)]
pub struct Control {
    route: Route,
    method: Method,
    /// The bearer token, if `Authorization: Bearer …` was sent.
    bearer: Option<String>,
    /// `Authorization` was sent, but not as `Bearer …`.
    bad_authorization: bool,
    /// The stream root's URL as the client reached it.
    base: String,
}

/// A JSON answer.
fn json_response(status: Status, body: &Value) -> Response {
    let mut resp = Response::empty(status);
    resp.headers.set("content-type", Header::Static("application/json"));
    resp.body = Body::Full(Bytes::from(body.to_string()));
    resp
}

fn error(status: Status, code: &str, message: &str) -> Response {
    json_response(status, &json!({"error": {"code": code, "message": message}}))
}

fn not_found_route() -> Response {
    error(Status::NOT_FOUND, "SUBSCRIPTION_NOT_FOUND", "Durable Streams control route not found")
}

fn method_not_allowed(allow: &'static str) -> Response {
    let mut resp = Response::text(Status::METHOD_NOT_ALLOWED, "Method not allowed");
    resp.headers.set("allow", Header::Static(allow));
    resp
}

/// The answer to a refusal.
#[must_use]
pub fn refusal(e: SubError) -> Response {
    match e {
        SubError::Invalid(why) => error(Status::BAD_REQUEST, "INVALID_REQUEST", &why),
        SubError::UrlRejected(why) => error(Status::BAD_REQUEST, "WEBHOOK_URL_REJECTED", &why),
        SubError::NotFound => {
            error(Status::NOT_FOUND, "SUBSCRIPTION_NOT_FOUND", "Subscription not found")
        }
        SubError::TokenInvalid(why) => error(Status::UNAUTHORIZED, "TOKEN_INVALID", why),
        SubError::TokenExpired => error(Status::UNAUTHORIZED, "TOKEN_EXPIRED", "Token has expired"),
        SubError::Exists => error(
            Status::CONFLICT,
            "SUBSCRIPTION_ALREADY_EXISTS",
            "A subscription with this id and a different configuration exists",
        ),
        SubError::Fenced => error(Status::CONFLICT, "FENCED", "Wake generation is stale"),
        SubError::AlreadyClaimed { holder, generation } => json_response(
            Status::CONFLICT,
            &json!({"error": {"code": "ALREADY_CLAIMED", "current_holder": holder, "generation": generation}}),
        ),
        SubError::NoPendingWork => {
            error(Status::CONFLICT, "NO_PENDING_WORK", "Subscription has no pending work")
        }
        SubError::InvalidOffset(why) => error(Status::CONFLICT, "INVALID_OFFSET", &why),
        SubError::Unavailable(why) => {
            let mut resp = error(Status::SERVICE_UNAVAILABLE, "UNAVAILABLE", &why);
            resp.headers.set("retry-after", Header::Static("1"));
            resp
        }
    }
}

fn decode(segment: &str) -> Option<String> {
    String::from_utf8(name::percent_decode(segment.as_bytes())?).ok()
}

/// The stream root's URL: `DS_HTTP__PUBLIC_URL` if set, else the request's scheme (TLS, or
/// `X-Forwarded-Proto` behind a proxy) and authority.
fn base_url(app: &AppState, head: &RequestHead<'_>) -> String {
    let root = app.config.base_path.root();
    if let Some(public) = &app.config.public_url {
        return format!("{}{root}", public.trim_end_matches('/'));
    }
    let host = head
        .authority
        .filter(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or("localhost");
    format!("{}://{host}{root}", head.scheme())
}

/// Routes a request under the control prefix (`{base}/__ds`).
///
/// # Errors
/// The answer for a path that names nothing (404), a wrong method (405) or a malformed
/// percent-encoding (400).
pub fn parse(app: &AppState, head: &RequestHead<'_>) -> Result<Control, Response> {
    let rest = head.path.strip_prefix(app.config.base_path.control()).unwrap_or_default();
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    let method = head.method;
    let (route, allow) = if rest == "jwks.json" {
        (Route::Jwks, "GET, HEAD, OPTIONS")
    } else if let Some(sub) = rest.strip_prefix("subscriptions/") {
        let mut segments = sub.splitn(2, '/');
        let id_raw = segments.next().unwrap_or_default();
        let id = decode(id_raw).ok_or_else(|| {
            error(Status::BAD_REQUEST, "INVALID_REQUEST", "malformed percent-encoding in the path")
        })?;
        if id.is_empty() {
            return Err(not_found_route());
        }
        match segments.next() {
            None => (Route::Subscription(id), "GET, PUT, DELETE, OPTIONS"),
            Some("streams") => (Route::Streams(id), "POST, OPTIONS"),
            Some(action) => match action.strip_prefix("streams/") {
                Some(path) => {
                    let path = decode(path).ok_or_else(|| {
                        error(
                            Status::BAD_REQUEST,
                            "INVALID_REQUEST",
                            "malformed percent-encoding in the stream path",
                        )
                    })?;
                    (Route::Stream(id, path), "DELETE, OPTIONS")
                }
                None => match action {
                    "callback" => (Route::Callback(id), "POST, OPTIONS"),
                    "claim" => (Route::Claim(id), "POST, OPTIONS"),
                    "ack" => (Route::Ack(id), "POST, OPTIONS"),
                    "release" => (Route::Release(id), "POST, OPTIONS"),
                    _ => return Err(not_found_route()),
                },
            },
        }
    } else {
        return Err(not_found_route());
    };
    let allowed = match route {
        Route::Jwks => matches!(method, Method::Get | Method::Head),
        Route::Subscription(_) => matches!(method, Method::Get | Method::Put | Method::Delete),
        Route::Stream(..) => method == Method::Delete,
        _ => method == Method::Post,
    };
    if method == Method::Options {
        let mut resp = Response::empty(Status::NO_CONTENT);
        resp.headers.set("allow", Header::Static(allow));
        return Err(resp);
    }
    if !allowed {
        return Err(method_not_allowed(allow));
    }
    let authorization = head.headers.get(Field::Authorization);
    let bearer = authorization
        .and_then(|v| v.strip_prefix(b"Bearer "))
        .and_then(|t| std::str::from_utf8(t).ok())
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty());
    Ok(Control {
        route,
        method,
        bad_authorization: authorization.is_some() && bearer.is_none(),
        bearer,
        base: base_url(app, head),
    })
}

impl Control {
    /// Whether the request carries a body to read (PUT and POST).
    #[must_use]
    pub fn wants_body(&self) -> bool {
        matches!(self.method, Method::Put | Method::Post)
    }

    /// Runs the request to its answer.
    pub async fn run(self, app: &AppState, body: Received) -> Response {
        let Some(subs) = app.subscriptions.clone() else {
            return error(
                Status::NOT_FOUND,
                "SUBSCRIPTION_NOT_FOUND",
                "subscriptions are not enabled on this server",
            );
        };
        // Token-bearing actions check the header before anything else (§7.3).
        let needs_token =
            matches!(self.route, Route::Callback(_) | Route::Ack(_) | Route::Release(_));
        if needs_token && self.bearer.is_none() {
            return error(
                Status::UNAUTHORIZED,
                "TOKEN_INVALID",
                "Missing or malformed Authorization header",
            );
        }
        if matches!(self.route, Route::Claim(_)) && self.bad_authorization {
            return error(Status::UNAUTHORIZED, "TOKEN_INVALID", "Malformed Authorization header");
        }
        let json = if self.wants_body() {
            if body.bytes.iter().all(u8::is_ascii_whitespace) {
                json!({})
            } else {
                match serde_json::from_slice::<Value>(&body.bytes) {
                    Ok(v @ Value::Object(_)) => v,
                    Ok(_) => {
                        return error(
                            Status::BAD_REQUEST,
                            "INVALID_REQUEST",
                            "Request body must be a JSON object",
                        );
                    }
                    Err(_) => {
                        return error(Status::BAD_REQUEST, "INVALID_REQUEST", "Invalid JSON body");
                    }
                }
            }
        } else {
            Value::Null
        };
        drop(body);
        let token = self.bearer.as_deref().unwrap_or_default();
        let result = match self.route {
            Route::Jwks => subs.jwks().await.map(|keys| {
                let mut resp = json_response(Status::OK, &keys);
                resp.headers.set("content-type", Header::Static("application/jwk-set+json"));
                resp.headers.set("cache-control", Header::Static("public, max-age=300"));
                if self.method == Method::Head {
                    resp.body = Body::Empty;
                }
                resp
            }),
            Route::Subscription(id) => match self.method {
                Method::Put => subs.put(&id, &json, &self.base).await.map(|(created, view)| {
                    json_response(if created { Status::CREATED } else { Status::OK }, &view)
                }),
                Method::Get => subs.get(&id).await.map(|view| json_response(Status::OK, &view)),
                _ => subs.delete(&id).await.map(|()| Response::empty(Status::NO_CONTENT)),
            },
            Route::Streams(id) => {
                subs.add_streams(&id, &json).await.map(|()| Response::empty(Status::NO_CONTENT))
            }
            Route::Stream(id, path) => {
                subs.remove_stream(&id, &path).await.map(|()| Response::empty(Status::NO_CONTENT))
            }
            Route::Callback(id) => subs.ack(&id, Use::Callback, token, &json).await.map(next_wake),
            Route::Ack(id) => subs.ack(&id, Use::Claim, token, &json).await.map(next_wake),
            Route::Release(id) => {
                subs.release(&id, token, &json).await.map(|()| Response::empty(Status::NO_CONTENT))
            }
            Route::Claim(id) => subs
                .claim(&id, self.bearer.as_deref(), &json)
                .await
                .map(|claimed| json_response(Status::OK, &claimed.body)),
        };
        result.unwrap_or_else(refusal)
    }
}

fn next_wake(next: bool) -> Response {
    json_response(Status::OK, &json!({"ok": true, "next_wake": next}))
}
