//! `PUT /v1/stream/{name}`: create a stream (§5.1), or fork one (§4.2).

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use ds_engine::{ContentType, CreateRequest, Created};

use crate::error::ApiError;
use crate::state::AppState;
use crate::{body, headers, name, respond};

/// Creates a stream: 201 when new, 200 when an identical one exists, 409 otherwise.
///
/// # Errors
/// 400 for malformed headers or name, 404 for a missing fork source, 409 for a different
/// existing stream (or a deleted or mismatched fork source), 413; 501 for a fork in a mode
/// that has none yet.
pub async fn create(State(app): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let name = name::parse(parts.uri.path())?;
    let content_type = headers::content_type(&parts.headers)?;
    let fork = headers::fork(&parts.headers, content_type.is_some())?;
    let content_type =
        content_type.unwrap_or_else(|| ContentType::new(headers::DEFAULT_CONTENT_TYPE));
    let expiry = headers::expiry(&parts.headers)?;
    let closed = headers::stream_closed(&parts.headers);
    let body = body::collect(&parts.headers, body, &app.body_limits).await?;
    let req = CreateRequest { content_type, expiry, closed, body: body.bytes.clone() };
    let created = match fork {
        Some(fork) => app.engine.fork(&name, req, fork).await?,
        None => app.engine.create(&name, req).await?,
    };
    drop(body);
    let (status, info) = match created {
        Created::New(info) => (StatusCode::CREATED, info),
        Created::Existing(info) => (StatusCode::OK, info),
    };
    let mut resp = respond::empty(status);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, respond::content_type(&info));
    h.insert(headers::STREAM_NEXT_OFFSET, headers::offset(info.tail));
    if info.closed {
        h.insert(headers::STREAM_CLOSED, headers::TRUE);
    }
    if status == StatusCode::CREATED
        && let Some(location) = location(&parts.headers, parts.uri.path())
    {
        h.insert(header::LOCATION, location);
    }
    Ok(resp)
}

/// The absolute URL of the new stream, from `Host` (and `X-Forwarded-Proto` behind a proxy).
fn location(h: &HeaderMap, path: &str) -> Option<HeaderValue> {
    let host = h.get(header::HOST).and_then(|v| v.to_str().ok());
    let https = h.get("x-forwarded-proto").is_some_and(|v| v.as_bytes() == b"https");
    let url = match host {
        Some(host) => format!("{}://{host}{path}", if https { "https" } else { "http" }),
        None => path.to_owned(),
    };
    HeaderValue::from_str(&url).ok()
}
