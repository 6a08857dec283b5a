//! `DELETE /v1/stream/{name}` (§5.4).

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;

use crate::error::ApiError;
use crate::state::AppState;
use crate::{name, respond};

/// 204 once the stream is gone; its live readers end.
///
/// # Errors
/// 400 for a malformed name, 404.
pub async fn delete(State(app): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let name = name::parse(req.uri().path())?;
    app.engine.delete(&name).await?;
    Ok(respond::empty(StatusCode::NO_CONTENT))
}
