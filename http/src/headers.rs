//! Protocol header names, and typed parsing of every request header the protocol defines.
//! Each parser is strict: a malformed value is a 400 with a short reason, never a guess.

use std::sync::Arc;

use bytes::Bytes;
use ds_engine::{
    ContentType, Expiry, ForkRequest, MAX_PRODUCER_NUMBER, ProducerClaim, ProducerRequest,
};

use crate::error::ApiError;
use crate::request::{Field, RequestHeaders};
use crate::response::Value;
use crate::rfc3339;

/// `Stream-Next-Offset`.
pub const STREAM_NEXT_OFFSET: &str = "stream-next-offset";
/// `Stream-Up-To-Date`.
pub const STREAM_UP_TO_DATE: &str = "stream-up-to-date";
/// `Stream-Closed`.
pub const STREAM_CLOSED: &str = "stream-closed";
/// `Stream-Cursor`.
pub const STREAM_CURSOR: &str = "stream-cursor";
/// `Stream-TTL`.
pub const STREAM_TTL: &str = "stream-ttl";
/// `Stream-Expires-At`.
pub const STREAM_EXPIRES_AT: &str = "stream-expires-at";
/// `Stream-Seq`.
pub const STREAM_SEQ: &str = "stream-seq";
/// `Stream-Forked-From`.
pub const STREAM_FORKED_FROM: &str = "stream-forked-from";
/// `Stream-Fork-Offset`.
pub const STREAM_FORK_OFFSET: &str = "stream-fork-offset";
/// `Stream-Fork-Sub-Offset`.
pub const STREAM_FORK_SUB_OFFSET: &str = "stream-fork-sub-offset";
/// `Stream-SSE-Data-Encoding`.
pub const STREAM_SSE_DATA_ENCODING: &str = "stream-sse-data-encoding";
/// `Producer-Id`.
pub const PRODUCER_ID: &str = "producer-id";
/// `Producer-Epoch`.
pub const PRODUCER_EPOCH: &str = "producer-epoch";
/// `Producer-Seq`.
pub const PRODUCER_SEQ: &str = "producer-seq";
/// `Producer-Expected-Seq`.
pub const PRODUCER_EXPECTED_SEQ: &str = "producer-expected-seq";
/// `Producer-Received-Seq`.
pub const PRODUCER_RECEIVED_SEQ: &str = "producer-received-seq";

/// The value `true`, shared by every presence header.
pub const TRUE: Value = Value::Static("true");

/// Longest accepted `Producer-Id`, `Stream-Seq` or `Content-Type`, in bytes.
pub const MAX_TOKEN_BYTES: usize = 256;
/// Longest accepted `Stream-TTL`: 100 years.
pub const MAX_TTL_SECS: u64 = 100 * 365 * 24 * 3600;
/// Content type of a stream created without one.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// The value of a header that must appear at most once, as text.
fn single<'a>(headers: &RequestHeaders<'a>, field: Field) -> Result<Option<&'a str>, ApiError> {
    let slot = headers.slot(field);
    let Some(first) = slot.first else { return Ok(None) };
    if slot.repeated {
        return Err(ApiError::bad_request(format!("{} must appear only once", field.name())));
    }
    visible_ascii(first)
        .map(Some)
        .ok_or_else(|| ApiError::bad_request(format!("{} must be visible ASCII", field.name())))
}

/// `value` as text if it holds only visible ASCII, spaces and tabs.
#[must_use]
pub fn visible_ascii(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
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
/// value means absent and is not an error. Repeating the same value is harmless.
///
/// # Errors
/// 400 when two `Stream-Closed` lines disagree: whether the request closes the stream must
/// not depend on which line an intermediary kept.
pub fn stream_closed(headers: &RequestHeaders<'_>) -> Result<bool, ApiError> {
    let slot = headers.slot(Field::StreamClosed);
    if slot.differs {
        return Err(ApiError::bad_request("Stream-Closed lines disagree"));
    }
    Ok(slot.first.is_some_and(|v| v.eq_ignore_ascii_case(b"true")))
}

/// `Content-Type`, if present and non-empty; it must look like `type/subtype`.
///
/// # Errors
/// 400 for a malformed or oversized value.
pub fn content_type(headers: &RequestHeaders<'_>) -> Result<Option<ContentType>, ApiError> {
    let Some(raw) = single(headers, Field::ContentType)? else {
        return Ok(None);
    };
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let ct = ContentType::new(raw);
    if raw.len() > MAX_TOKEN_BYTES || !media_type_shape(ct.essence().as_bytes()) {
        return Err(ApiError::bad_request("Content-Type must be a media type like text/plain"));
    }
    Ok(Some(ct))
}

/// `type/subtype`: two non-empty runs of visible ASCII around exactly one `/`.
fn media_type_shape(essence: &[u8]) -> bool {
    let mut slash = None;
    for (i, &c) in essence.iter().enumerate() {
        if !c.is_ascii_graphic() {
            return false;
        }
        if c == b'/' {
            if slash.is_some() {
                return false;
            }
            slash = Some(i);
        }
    }
    slash.is_some_and(|i| i > 0 && i + 1 < essence.len())
}

/// `Stream-TTL` and `Stream-Expires-At` (§5.1); both at once is a 400.
///
/// # Errors
/// 400 for a malformed value or for both headers together.
pub fn expiry(headers: &RequestHeaders<'_>) -> Result<Expiry, ApiError> {
    let ttl = single(headers, Field::StreamTtl)?;
    let at = single(headers, Field::StreamExpiresAt)?;
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
pub fn stream_seq(headers: &RequestHeaders<'_>) -> Result<Option<Bytes>, ApiError> {
    let slot = headers.slot(Field::StreamSeq);
    let Some(bytes) = slot.first else { return Ok(None) };
    if slot.repeated {
        return Err(ApiError::bad_request("Stream-Seq must appear only once"));
    }
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
pub fn producer(headers: &RequestHeaders<'_>) -> Result<Option<ProducerRequest>, ApiError> {
    let id = single(headers, Field::ProducerId)?;
    let epoch = single(headers, Field::ProducerEpoch)?;
    let seq = single(headers, Field::ProducerSeq)?;
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
/// stream path on this server (under `base`); the fork offset a token this server minted;
/// the sub-offset a decimal integer without sign or leading zeros.
///
/// # Errors
/// 400 for a malformed value, or a fork offset or sub-offset without `Stream-Forked-From`.
pub fn fork(
    headers: &RequestHeaders<'_>,
    content_type_given: bool,
    base: &crate::name::BasePath,
) -> Result<Option<ForkRequest>, ApiError> {
    let from = single(headers, Field::StreamForkedFrom)?;
    let offset = single(headers, Field::StreamForkOffset)?;
    let sub = single(headers, Field::StreamForkSubOffset)?;
    let Some(from) = from else {
        if offset.is_some() || sub.is_some() {
            return Err(ApiError::bad_request(
                "Stream-Fork-Offset and Stream-Fork-Sub-Offset need Stream-Forked-From",
            ));
        }
        return Ok(None);
    };
    let Some(source) = base.strip(from) else {
        return Err(ApiError::bad_request(format!(
            "Stream-Forked-From must be the path of a stream on this server, like {}name",
            base.prefix()
        )));
    };
    let source = crate::name::parse(source)?;
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

/// A header value from a number.
#[must_use]
pub fn number(n: u64) -> Value {
    Value::Number(n)
}

/// A header value from an offset token.
#[must_use]
pub fn offset(offset: ds_engine::Offset) -> Value {
    Value::Offset(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map<'a>(pairs: &[(&'static str, &'a str)]) -> RequestHeaders<'a> {
        let mut h = RequestHeaders::default();
        for (k, v) in pairs {
            h.add(k.as_bytes(), v.as_bytes());
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
        assert_eq!(producer(&RequestHeaders::default()).unwrap(), None);
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
        assert!(stream_closed(&map(&[("stream-closed", "TRUE")])).unwrap());
        for v in ["false", "yes", "1", "", "true "] {
            assert!(!stream_closed(&map(&[("stream-closed", v)])).unwrap(), "{v:?}");
        }
    }

    /// Regression: with two `Stream-Closed` lines the first one won, so `true` then `false`
    /// closed the stream and `false` then `true` did not.
    #[test]
    fn stream_closed_lines_that_disagree_are_refused() {
        for lines in [["true", "false"], ["false", "true"], ["true", ""]] {
            let h = map(&[("stream-closed", lines[0]), ("stream-closed", lines[1])]);
            assert_eq!(stream_closed(&h).unwrap_err().status(), 400, "{lines:?}");
        }
        let same = map(&[("stream-closed", "true"), ("stream-closed", "TRUE")]);
        assert!(stream_closed(&same).unwrap());
    }

    #[test]
    fn content_type_shape() {
        assert_eq!(content_type(&RequestHeaders::default()).unwrap(), None);
        let ct = content_type(&map(&[("content-type", "Application/JSON; charset=utf-8")]))
            .unwrap()
            .unwrap();
        assert!(ct.is_json());
        for bad in ["json", "a/b/c", "/x", "x/", "te xt/plain"] {
            assert!(content_type(&map(&[("content-type", bad)])).is_err(), "{bad:?}");
        }
    }
}
