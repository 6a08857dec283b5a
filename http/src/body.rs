//! Reading request bodies with a size limit and a deadline: a declared `Content-Length` over
//! the limit is refused before any byte is read, and a chunked body is cut off as soon as it
//! passes the limit, so memory stays bounded whatever the client sends.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

use crate::error::ApiError;

/// Reads the whole body, at most `limit` bytes, within `timeout`.
///
/// # Errors
/// 413 over the limit, 408 past the deadline, 400 for a malformed `Content-Length` or a
/// broken body.
pub async fn collect(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    let declared = match headers.get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| ApiError::bad_request("invalid Content-Length"))?,
        ),
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::body_too_large(limit));
    }
    if declared == Some(0) {
        return Ok(Bytes::new());
    }
    let deadline = tokio::time::Instant::now() + timeout;
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
        if total > limit {
            return Err(ApiError::body_too_large(limit));
        }
        match (&mut single, &mut joined) {
            (None, None) => single = Some(data),
            (Some(first), None) => {
                let hint = declared.map_or(total, |n| usize::try_from(n).unwrap_or(total));
                let mut buf = BytesMut::with_capacity(hint.max(total));
                buf.extend_from_slice(first);
                buf.extend_from_slice(&data);
                single = None;
                joined = Some(buf);
            }
            (_, Some(buf)) => buf.extend_from_slice(&data),
        }
    }
    Ok(match (single, joined) {
        (_, Some(buf)) => buf.freeze(),
        (Some(one), None) => one,
        (None, None) => Bytes::new(),
    })
}
