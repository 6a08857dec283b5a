//! `HEAD /v1/stream/{name}`: metadata (§5.5). Never renews a sliding TTL, never cached.

use crate::error::ApiError;
use crate::respond;
use crate::response::{Response, Status};
use crate::state::AppState;

/// 200 with content type, tail, TTL or expiry, and closure.
///
/// # Errors
/// 404, 410.
pub async fn head(app: &AppState, name: &str) -> Result<Response, ApiError> {
    let info = app.engine.head(name).await?;
    let mut resp = Response::empty(Status::OK);
    respond::metadata(&mut resp.headers, &info);
    Ok(resp)
}
