//! `HEAD /v1/stream/{name}`: metadata (§5.5). Never renews a sliding TTL, never cached.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;

use crate::error::ApiError;
use crate::state::AppState;
use crate::{name, respond};

/// 200 with content type, tail, TTL or expiry, and closure.
///
/// # Errors
/// 400 for a malformed name, 404.
pub async fn head(State(app): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let name = name::parse(req.uri().path())?;
    let info = app.engine.head(&name).await?;
    let mut resp = respond::empty(StatusCode::OK);
    respond::metadata(resp.headers_mut(), &info);
    Ok(resp)
}
