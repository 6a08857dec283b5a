//! Rendering engine results as responses: the headers every read shares, ETags, and bodies
//! made of shared buffers.

use bytes::{Bytes, BytesMut};
use ds_engine::{Expiry, ReadChunk, StreamInfo};

use crate::headers;
use crate::response::{Body, ETag, HeaderList, Value};
use crate::rfc3339;

/// Bodies up to this size are joined into one buffer; larger ones are sent part by part.
const JOIN_BODY_BYTES: usize = 64 * 1024;

/// `Content-Type` of a stream (stored values were valid header text when they came in).
#[must_use]
pub fn content_type(info: &StreamInfo) -> Value {
    Value::ContentType(info.content_type.clone())
}

/// The metadata headers of `HEAD` (and the TTL/expiry part of them).
pub fn metadata(h: &mut HeaderList, info: &StreamInfo) {
    h.set("content-type", content_type(info));
    h.set(headers::STREAM_NEXT_OFFSET, headers::offset(info.tail));
    match info.expiry {
        Expiry::Never => {}
        Expiry::IdleTtl { secs } => h.set(headers::STREAM_TTL, headers::number(secs)),
        Expiry::At { unix_ms } => {
            h.set(headers::STREAM_EXPIRES_AT, Value::Text(rfc3339::format_ms(unix_ms)));
        }
    }
    if info.closed {
        h.set(headers::STREAM_CLOSED, headers::TRUE);
    }
}

/// `"{incarnation}:{start}:{end}"`, with `:c` once the chunk reaches a closed stream's end,
/// so that closure always changes the ETag (§10.1).
#[must_use]
pub fn etag(chunk: &ReadChunk) -> Value {
    Value::ETag(Box::new(ETag {
        incarnation: chunk.info.incarnation,
        start: chunk.start,
        next: chunk.next,
        closed: chunk.reaches_eof(),
    }))
}

/// Whether an `If-None-Match` header names `etag` (or is `*`).
#[must_use]
pub fn etag_matches(if_none_match: Option<&str>, etag: &Value) -> bool {
    let Some(list) = if_none_match else { return false };
    let ours = etag.to_bytes();
    list.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate).as_bytes() == ours
    })
}

/// A body from buffers. Small bodies are joined into one buffer (one write with the head);
/// large ones keep their parts, sent without copying.
#[must_use]
pub fn body_from_parts(parts: Vec<Bytes>) -> Body {
    let total: usize = parts.iter().map(Bytes::len).sum();
    match parts.len() {
        0 => Body::Empty,
        1 => Body::Full(parts.into_iter().next().unwrap_or_default()),
        _ if total <= JOIN_BODY_BYTES => {
            let mut joined = BytesMut::with_capacity(total);
            parts.iter().for_each(|p| joined.extend_from_slice(p));
            Body::Full(joined.freeze())
        }
        _ => Body::Parts(parts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ds_engine::Offset;

    #[test]
    fn if_none_match_forms() {
        let tag = Value::ETag(Box::new(ETag {
            incarnation: 0xa,
            start: Offset::at(1),
            next: Offset::at(2),
            closed: false,
        }));
        let ours = String::from_utf8(tag.to_bytes()).unwrap();
        assert_eq!(
            ours,
            "\"a:0000000000000001_0000000000000000:0000000000000002_0000000000000000\""
        );
        let m = |v: &str| etag_matches(Some(v), &tag);
        assert!(m(&ours));
        assert!(m(&format!("W/{ours}")));
        assert!(m(&format!("\"x\", {ours}")));
        assert!(m("*"));
        assert!(!m(&ours.replace("0\"", "0:c\"")));
        assert!(!m(ours.trim_matches('"')));
        assert!(!etag_matches(None, &tag));
    }
}
