//! `POST /v1/stream/{name}`: append, close, or both (§5.2, §5.3, §5.2.1).

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use ds_engine::{AppendKind, AppendRequest};

use crate::error::ApiError;
use crate::state::AppState;
use crate::{body, headers, name, respond};

/// Appends. Plain appends answer 204; producer appends 200, and 204 for duplicates and
/// close-only requests.
///
/// # Errors
/// Every refusal of §5.2: 400, 403, 404, 409, 413.
pub async fn append(State(app): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let name = name::parse(parts.uri.path())?;
    // §5.2: with an empty body the Content-Type MUST NOT cause a rejection, so its parse
    // error only counts once the body turns out to hold data.
    let content_type = headers::content_type(&parts.headers);
    let stream_seq = headers::stream_seq(&parts.headers)?;
    let producer = headers::producer(&parts.headers)?;
    let close = headers::stream_closed(&parts.headers);
    let body = body::collect(&parts.headers, body, &app.body_limits).await?;
    let content_type =
        if body.bytes.is_empty() { content_type.ok().flatten() } else { content_type? };
    let req = AppendRequest { content_type, body: body.bytes.clone(), stream_seq, producer, close };
    let done = app.engine.append(&name, req).await?;
    drop(body);
    let status = match (done.producer.is_some(), done.kind) {
        (true, AppendKind::Appended) => StatusCode::OK,
        _ => StatusCode::NO_CONTENT,
    };
    let mut resp = respond::empty(status);
    let h = resp.headers_mut();
    h.insert(headers::STREAM_NEXT_OFFSET, headers::offset(done.tail));
    if done.closed {
        h.insert(headers::STREAM_CLOSED, headers::TRUE);
    }
    if let Some(claim) = done.producer {
        h.insert(headers::PRODUCER_EPOCH, headers::number(claim.epoch));
        h.insert(headers::PRODUCER_SEQ, headers::number(claim.seq));
    }
    Ok(resp)
}
