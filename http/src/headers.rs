//! Protocol header names, and typed parsing of every request header the protocol defines.
//! Each parser is strict: a malformed value is a 400 with a short reason, never a guess.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use ds_engine::{
    ContentType, Expiry, ForkRequest, MAX_PRODUCER_NUMBER, ProducerClaim, ProducerRequest,
};

use crate::error::ApiError;
use crate::rfc3339;

/// `Stream-Next-Offset`.
pub const STREAM_NEXT_OFFSET: HeaderName = HeaderName::from_static("stream-next-offset");
/// `Stream-Up-To-Date`.
pub const STREAM_UP_TO_DATE: HeaderName = HeaderName::from_static("stream-up-to-date");
/// `Stream-Closed`.
pub const STREAM_CLOSED: HeaderName = HeaderName::from_static("stream-closed");
/// `Stream-Cursor`.
pub const STREAM_CURSOR: HeaderName = HeaderName::from_static("stream-cursor");
/// `Stream-TTL`.
pub const STREAM_TTL: HeaderName = HeaderName::from_static("stream-ttl");
/// `Stream-Expires-At`.
pub const STREAM_EXPIRES_AT: HeaderName = HeaderName::from_static("stream-expires-at");
/// `Stream-Seq`.
pub const STREAM_SEQ: HeaderName = HeaderName::from_static("stream-seq");
/// `Stream-Forked-From`.
pub const STREAM_FORKED_FROM: HeaderName = HeaderName::from_static("stream-forked-from");
/// `Stream-Fork-Offset`.
pub const STREAM_FORK_OFFSET: HeaderName = HeaderName::from_static("stream-fork-offset");
/// `Stream-Fork-Sub-Offset`.
pub const STREAM_FORK_SUB_OFFSET: HeaderName = HeaderName::from_static("stream-fork-sub-offset");
/// `Stream-SSE-Data-Encoding`.
pub const STREAM_SSE_DATA_ENCODING: HeaderName =
    HeaderName::from_static("stream-sse-data-encoding");
/// `Producer-Id`.
pub const PRODUCER_ID: HeaderName = HeaderName::from_static("producer-id");
/// `Producer-Epoch`.
pub const PRODUCER_EPOCH: HeaderName = HeaderName::from_static("producer-epoch");
/// `Producer-Seq`.
pub const PRODUCER_SEQ: HeaderName = HeaderName::from_static("producer-seq");
/// `Producer-Expected-Seq`.
pub const PRODUCER_EXPECTED_SEQ: HeaderName = HeaderName::from_static("producer-expected-seq");
/// `Producer-Received-Seq`.
pub const PRODUCER_RECEIVED_SEQ: HeaderName = HeaderName::from_static("producer-received-seq");

/// The value `true`, shared by every presence header.
pub const TRUE: HeaderValue = HeaderValue::from_static("true");

/// Longest accepted `Producer-Id`, `Stream-Seq` or `Content-Type`, in bytes.
pub const MAX_TOKEN_BYTES: usize = 256;
/// Longest accepted `Stream-TTL`: 100 years.
pub const MAX_TTL_SECS: u64 = 100 * 365 * 24 * 3600;
/// Content type of a stream created without one.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// The value of a header that must appear at most once, as text.
fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a str>, ApiError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(ApiError::bad_request(format!("{name} must appear only once")));
    }
    first
        .to_str()
        .map(Some)
        .map_err(|_| ApiError::bad_request(format!("{name} must be visible ASCII")))
}

/// A decimal integer with no sign, no leading zeros and nothing else, at most `max`.
fn strict_uint(value: &str, max: u64) -> Option<u64> {
    let b = value.as_bytes();
    if b.is_empty() || b.len() > 20 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if b.len() > 1 && b[0] == b'0' {
        return None;
    }
    value.parse::<u64>().ok().filter(|n| *n <= max)
}

/// `Stream-Closed`: present only when exactly `true`, case-insensitively (§4.1). Any other
/// value means absent and is not an error.
#[must_use]
pub fn stream_closed(headers: &HeaderMap) -> bool {
    headers.get(STREAM_CLOSED).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"))
}

/// `Content-Type`, if present and non-empty; it must look like `type/subtype`.
///
/// # Errors
/// 400 for a malformed or oversized value.
pub fn content_type(headers: &HeaderMap) -> Result<Option<ContentType>, ApiError> {
    let Some(raw) = single(headers, &axum::http::header::CONTENT_TYPE)? else {
        return Ok(None);
    };
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let ct = ContentType::new(raw);
    let essence = ct.essence();
    let shape_ok = raw.len() <= MAX_TOKEN_BYTES
        && essence.split('/').count() == 2
        && essence.split('/').all(|part| {
            !part.is_empty() && part.bytes().all(|c| c.is_ascii_graphic() && c != b'/')
        });
    if !shape_ok {
        return Err(ApiError::bad_request("Content-Type must be a media type like text/plain"));
    }
    Ok(Some(ct))
}

/// `Stream-TTL` and `Stream-Expires-At` (§5.1); both at once is a 400.
///
/// # Errors
/// 400 for a malformed value or for both headers together.
pub fn expiry(headers: &HeaderMap) -> Result<Expiry, ApiError> {
    let ttl = single(headers, &STREAM_TTL)?;
    let at = single(headers, &STREAM_EXPIRES_AT)?;
    match (ttl, at) {
        (Some(_), Some(_)) => {
            Err(ApiError::bad_request("send Stream-TTL or Stream-Expires-At, not both"))
        }
        // A TTL of 0 would expire the stream as it is created: refuse it rather than create
        // a stream no request could ever see.
        (Some(ttl), None) => strict_uint(ttl, MAX_TTL_SECS)
            .filter(|secs| *secs > 0)
            .map(|secs| Expiry::IdleTtl { secs })
            .ok_or_else(|| {
                ApiError::bad_request(
                    "Stream-TTL must be whole seconds from 1 to 3153600000, \
                     without sign or leading zeros",
                )
            }),
        (None, Some(at)) => {
            rfc3339::parse_ms(at).map(|unix_ms| Expiry::At { unix_ms }).ok_or_else(|| {
                ApiError::bad_request("Stream-Expires-At must be an RFC 3339 timestamp")
            })
        }
        (None, None) => Ok(Expiry::Never),
    }
}

/// `Stream-Seq`: an opaque, non-empty token of at most [`MAX_TOKEN_BYTES`].
///
/// # Errors
/// 400 for an empty or oversized value.
pub fn stream_seq(headers: &HeaderMap) -> Result<Option<Bytes>, ApiError> {
    let mut values = headers.get_all(STREAM_SEQ).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(ApiError::bad_request("Stream-Seq must appear only once"));
    }
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_TOKEN_BYTES {
        return Err(ApiError::bad_request("Stream-Seq must be 1 to 256 bytes"));
    }
    Ok(Some(Bytes::copy_from_slice(bytes)))
}

/// The producer headers (§5.2.1): all three or none.
///
/// # Errors
/// 400 when only some are present, the id is empty or oversized, or a number is malformed
/// or above 2^53-1.
pub fn producer(headers: &HeaderMap) -> Result<Option<ProducerRequest>, ApiError> {
    let id = single(headers, &PRODUCER_ID)?;
    let epoch = single(headers, &PRODUCER_EPOCH)?;
    let seq = single(headers, &PRODUCER_SEQ)?;
    let (id, epoch, seq) = match (id, epoch, seq) {
        (None, None, None) => return Ok(None),
        (Some(id), Some(epoch), Some(seq)) => (id, epoch, seq),
        _ => {
            return Err(ApiError::bad_request(
                "Producer-Id, Producer-Epoch and Producer-Seq must be sent together",
            ));
        }
    };
    if id.is_empty() || id.len() > MAX_TOKEN_BYTES {
        return Err(ApiError::bad_request("Producer-Id must be 1 to 256 bytes"));
    }
    let number = |value: &str, name: &str| {
        strict_uint(value, MAX_PRODUCER_NUMBER).ok_or_else(|| {
            ApiError::bad_request(format!(
                "{name} must be an integer from 0 to 2^53-1 without sign or leading zeros"
            ))
        })
    };
    let claim = ProducerClaim {
        epoch: number(epoch, "Producer-Epoch")?,
        seq: number(seq, "Producer-Seq")?,
    };
    Ok(Some(ProducerRequest { id: Arc::from(id), claim }))
}

/// The fork headers of a `PUT` (§4.2): `None` without `Stream-Forked-From`. The source is a
/// stream path on this server (`/v1/stream/...`); the fork offset a token this server minted;
/// the sub-offset a decimal integer without sign or leading zeros.
///
/// # Errors
/// 400 for a malformed value, or a fork offset or sub-offset without `Stream-Forked-From`.
pub fn fork(
    headers: &HeaderMap,
    content_type_given: bool,
) -> Result<Option<ForkRequest>, ApiError> {
    let from = single(headers, &STREAM_FORKED_FROM)?;
    let offset = single(headers, &STREAM_FORK_OFFSET)?;
    let sub = single(headers, &STREAM_FORK_SUB_OFFSET)?;
    let Some(from) = from else {
        if offset.is_some() || sub.is_some() {
            return Err(ApiError::bad_request(
                "Stream-Fork-Offset and Stream-Fork-Sub-Offset need Stream-Forked-From",
            ));
        }
        return Ok(None);
    };
    if !from.starts_with(crate::name::STREAM_PREFIX) {
        return Err(ApiError::bad_request(
            "Stream-Forked-From must be the path of a stream on this server, like /v1/stream/name",
        ));
    }
    let source = crate::name::parse(from)?;
    let offset = offset
        .map(|o| {
            ds_engine::Offset::parse(o).ok_or_else(|| {
                ApiError::bad_request("Stream-Fork-Offset must be an offset this server returned")
            })
        })
        .transpose()?;
    let sub = sub
        .map(|v| {
            strict_uint(v, u64::MAX).ok_or_else(|| {
                ApiError::bad_request(
                    "Stream-Fork-Sub-Offset must be a non-negative integer without sign or \
                     leading zeros",
                )
            })
        })
        .transpose()?
        .unwrap_or(0);
    Ok(Some(ForkRequest { source, offset, sub, content_type_given }))
}

/// A header value from a number, without going through a `String`.
#[must_use]
pub fn number(n: u64) -> HeaderValue {
    HeaderValue::from(n)
}

/// A header value from an offset token.
#[must_use]
pub fn offset(offset: ds_engine::Offset) -> HeaderValue {
    // Tokens are ASCII hex and `_`, always a valid header value.
    HeaderValue::from_bytes(&offset.encode()).unwrap_or(HeaderValue::from_static("invalid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_static(k), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn ttl_grammar_is_strict() {
        assert_eq!(
            expiry(&map(&[("stream-ttl", "3600")])).unwrap(),
            Expiry::IdleTtl { secs: 3600 }
        );
        for bad in [
            "0",
            "",
            "abc",
            "-1",
            "00060",
            "+60",
            "60.5",
            "1e3",
            " 60",
            "60 ",
            "18446744073709551616",
            "18446744073709551615",
            "3153600001",
        ] {
            assert!(expiry(&map(&[("stream-ttl", bad)])).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ttl_and_expires_at_together_is_an_error() {
        let h = map(&[("stream-ttl", "5"), ("stream-expires-at", "2030-01-01T00:00:00Z")]);
        assert!(expiry(&h).is_err());
        assert!(expiry(&map(&[("stream-ttl", "5"), ("stream-ttl", "5")])).is_err());
    }

    #[test]
    fn producer_headers_all_or_nothing() {
        assert_eq!(producer(&HeaderMap::new()).unwrap(), None);
        let ok = producer(&map(&[
            ("producer-id", "p"),
            ("producer-epoch", "0"),
            ("producer-seq", "9007199254740991"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(ok.claim, ProducerClaim { epoch: 0, seq: MAX_PRODUCER_NUMBER });
        for pairs in [
            &[("producer-id", "p")][..],
            &[("producer-id", "p"), ("producer-epoch", "0")],
            &[("producer-epoch", "0"), ("producer-seq", "0")],
            &[("producer-id", ""), ("producer-epoch", "0"), ("producer-seq", "0")],
        ] {
            assert!(producer(&map(pairs)).is_err(), "{pairs:?}");
        }
        for bad in [
            "1abc",
            "0xyz",
            "1e3",
            "-1",
            "+1",
            "01",
            "",
            " 1",
            "9007199254740992",
            "18446744073709551615",
            "99999999999999999999999",
        ] {
            let h = map(&[("producer-id", "p"), ("producer-epoch", bad), ("producer-seq", "0")]);
            assert!(producer(&h).is_err(), "epoch {bad:?}");
            let h = map(&[("producer-id", "p"), ("producer-epoch", "0"), ("producer-seq", bad)]);
            assert!(producer(&h).is_err(), "seq {bad:?}");
        }
    }

    #[test]
    fn stream_closed_only_when_true() {
        assert!(stream_closed(&map(&[("stream-closed", "TRUE")])));
        for v in ["false", "yes", "1", "", "true "] {
            assert!(!stream_closed(&map(&[("stream-closed", v)])), "{v:?}");
        }
    }

    #[test]
    fn content_type_shape() {
        assert_eq!(content_type(&HeaderMap::new()).unwrap(), None);
        let ct = content_type(&map(&[("content-type", "Application/JSON; charset=utf-8")]))
            .unwrap()
            .unwrap();
        assert!(ct.is_json());
        for bad in ["json", "a/b/c", "/x", "x/", "te xt/plain"] {
            assert!(content_type(&map(&[("content-type", bad)])).is_err(), "{bad:?}");
        }
    }
}
