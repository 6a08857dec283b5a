//! Rendering engine results as responses: the headers every read shares, ETags, and bodies
//! made of shared buffers.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use ds_engine::{Expiry, ReadChunk, StreamInfo};
use http_body::{Frame, SizeHint};

use crate::headers;
use crate::rfc3339;

/// Bodies up to this size are joined into one buffer; larger ones are sent part by part.
const JOIN_BODY_BYTES: usize = 64 * 1024;

/// An empty response with a status.
#[must_use]
pub fn empty(status: StatusCode) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = status;
    resp
}

/// `Content-Type` of a stream. Stored values were valid header text when they came in.
#[must_use]
pub fn content_type(info: &StreamInfo) -> HeaderValue {
    HeaderValue::from_str(info.content_type.as_str())
        .unwrap_or(HeaderValue::from_static(headers::DEFAULT_CONTENT_TYPE))
}

/// The metadata headers of `HEAD` (and the TTL/expiry part of them).
pub fn metadata(h: &mut HeaderMap, info: &StreamInfo) {
    h.insert(header::CONTENT_TYPE, content_type(info));
    h.insert(headers::STREAM_NEXT_OFFSET, headers::offset(info.tail));
    match info.expiry {
        Expiry::Never => {}
        Expiry::IdleTtl { secs } => {
            h.insert(headers::STREAM_TTL, headers::number(secs));
        }
        Expiry::At { unix_ms } => {
            if let Ok(v) = HeaderValue::from_str(&rfc3339::format_ms(unix_ms)) {
                h.insert(headers::STREAM_EXPIRES_AT, v);
            }
        }
    }
    if info.closed {
        h.insert(headers::STREAM_CLOSED, headers::TRUE);
    }
}

/// `"{incarnation}:{start}:{end}"`, with `:c` once the chunk reaches a closed stream's end,
/// so that closure always changes the ETag (§10.1).
#[must_use]
pub fn etag(chunk: &ReadChunk) -> HeaderValue {
    let closed = if chunk.reaches_eof() { ":c" } else { "" };
    let tag = format!("\"{:x}:{}:{}{closed}\"", chunk.info.incarnation, chunk.start, chunk.next);
    HeaderValue::from_str(&tag).unwrap_or(HeaderValue::from_static("\"\""))
}

/// Whether an `If-None-Match` header names `etag` (or is `*`).
#[must_use]
pub fn etag_matches(if_none_match: Option<&HeaderValue>, etag: &HeaderValue) -> bool {
    let Some(Ok(list)) = if_none_match.map(HeaderValue::to_str) else { return false };
    let Ok(ours) = etag.to_str() else { return false };
    list.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == ours
    })
}

/// A body from buffers, with an exact length so the response gets a `Content-Length`.
pub fn body_from_parts(parts: Vec<Bytes>) -> Body {
    let total: usize = parts.iter().map(Bytes::len).sum();
    match parts.len() {
        0 => Body::empty(),
        1 => Body::from(parts.into_iter().next().unwrap_or_default()),
        _ if total <= JOIN_BODY_BYTES => {
            let mut joined = BytesMut::with_capacity(total);
            parts.iter().for_each(|p| joined.extend_from_slice(p));
            Body::from(joined.freeze())
        }
        _ => Body::new(PartsBody { parts: parts.into(), remaining: total as u64 }),
    }
}

/// A body that sends shared buffers one after another without copying them.
struct PartsBody {
    parts: VecDeque<Bytes>,
    remaining: u64,
}

impl http_body::Body for PartsBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        Poll::Ready(this.parts.pop_front().map(|part| {
            this.remaining -= part.len() as u64;
            Ok(Frame::data(part))
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.parts.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_forms() {
        let tag = HeaderValue::from_static("\"a:b:c\"");
        let m = |v: &'static str| etag_matches(Some(&HeaderValue::from_static(v)), &tag);
        assert!(m("\"a:b:c\""));
        assert!(m("W/\"a:b:c\""));
        assert!(m("\"x\", \"a:b:c\""));
        assert!(m("*"));
        assert!(!m("\"a:b:c:c\""));
        assert!(!m("a:b:c"));
        assert!(!etag_matches(None, &tag));
    }
}
