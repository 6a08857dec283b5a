//! `DELETE /v1/stream/{name}` (§5.4).

use crate::error::ApiError;
use crate::response::{Response, Status};
use crate::state::AppState;

/// 204 once the stream is gone; its live readers end.
///
/// # Errors
/// 404, 410 for a stream already soft-deleted.
pub async fn delete(app: &AppState, name: &str) -> Result<Response, ApiError> {
    app.engine.delete(name).await?;
    Ok(Response::empty(Status::NO_CONTENT))
}
