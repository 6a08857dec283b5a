//! One handler per protocol operation. Each parses the request, calls the engine once and
//! renders the result; the rules live in the engine.

pub mod append;
pub mod create;
pub mod delete;
pub mod head;
pub mod read;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// `GET /healthz`: the process is up and serving.
pub async fn health() -> Response {
    let mut resp = "ok".into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    *resp.status_mut() = StatusCode::OK;
    resp
}

/// `GET /readyz`: 200 once the engine can serve (recovery of the persistent modes is done),
/// 503 until then.
pub async fn ready(axum::extract::State(app): axum::extract::State<crate::AppState>) -> Response {
    let ready = app.engine.is_ready();
    let (status, body) = if ready {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "recovering")
    };
    let mut resp = body.into_response();
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

/// Any path outside the protocol.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route; streams live under /v1/stream/")
}

/// A method the stream URL does not support; `Allow` lists those it does (RFC 9110 §15.5.6).
pub async fn method_not_allowed() -> Response {
    let mut resp = ApiError::method_not_allowed().into_response();
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, OPTIONS"));
    resp
}
