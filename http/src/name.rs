//! Stream names: the part of the path after `/v1/stream/`, percent-decoded and checked before
//! anything is created (§12.2).

use crate::error::ApiError;

/// Where the protocol is mounted.
pub const STREAM_PREFIX: &str = "/v1/stream/";
/// Longest accepted stream name, in decoded bytes.
pub const MAX_NAME_BYTES: usize = 1024;
/// First path segment reserved for subscription control APIs (§6).
pub const RESERVED_SEGMENT: &str = "__ds";

/// Extracts and validates the stream name from a request path.
///
/// A name is one or more `/`-separated segments of UTF-8 without control characters, with no
/// empty, `.` or `..` segment, at most [`MAX_NAME_BYTES`] long. Percent-encoding must be
/// well-formed.
///
/// # Errors
/// 400 for a name breaking these rules; 404 for the reserved `__ds` namespace.
pub fn parse(path: &str) -> Result<String, ApiError> {
    let raw = path.strip_prefix(STREAM_PREFIX).unwrap_or(path);
    if raw.len() > MAX_NAME_BYTES * 3 {
        return Err(ApiError::bad_request("stream name is too long"));
    }
    let name = if raw.contains('%') {
        let decoded = percent_decode(raw.as_bytes())
            .ok_or_else(|| ApiError::bad_request("stream name has invalid percent-encoding"))?;
        String::from_utf8(decoded)
            .map_err(|_| ApiError::bad_request("stream name must be UTF-8"))?
    } else {
        raw.to_owned()
    };
    if name.is_empty() {
        return Err(ApiError::bad_request("stream name is empty"));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(ApiError::bad_request("stream name is too long"));
    }
    // One pass: control characters, and the segments between slashes.
    let mut segment_start = 0;
    for (i, c) in name.char_indices().chain(std::iter::once((name.len(), '/'))) {
        if c.is_control() {
            return Err(ApiError::bad_request("stream name contains control characters"));
        }
        if c == '/' {
            let segment = &name[segment_start..i];
            if segment.is_empty() || segment == "." || segment == ".." {
                return Err(ApiError::bad_request("stream name has an empty, '.' or '..' segment"));
            }
            if segment_start == 0 && segment == RESERVED_SEGMENT {
                return Err(ApiError::not_found(
                    "the __ds namespace is reserved for subscriptions",
                ));
            }
            segment_start = i + 1;
        }
    }
    Ok(name)
}

/// Decodes `%XX` escapes; `None` if one is malformed. `+` is left as is (this is a path).
#[must_use]
pub fn percent_decode(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        if b == b'%' {
            let hi = hex(*raw.get(i + 1)?)?;
            let lo = hex(*raw.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(out)
}

/// The value of one hex digit.
pub(crate) fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_nested_and_encoded_names() {
        assert_eq!(parse("/v1/stream/a").unwrap(), "a");
        assert_eq!(parse("/v1/stream/chats/42/tokens").unwrap(), "chats/42/tokens");
        assert_eq!(parse("/v1/stream/a%20b").unwrap(), "a b");
        assert_eq!(parse("/v1/stream/caf%C3%A9").unwrap(), "café");
        assert_eq!(parse("/v1/stream/a%2Fb").unwrap(), "a/b");
    }

    #[test]
    fn rejects_hostile_names() {
        let long = format!("/v1/stream/{}", "x".repeat(MAX_NAME_BYTES + 1));
        for bad in [
            "/v1/stream/a%00b",
            "/v1/stream/a%0Ab",
            "/v1/stream/a%7Fb",
            "/v1/stream/%zz",
            "/v1/stream/%4",
            "/v1/stream/a/../b",
            "/v1/stream/..",
            "/v1/stream/./a",
            "/v1/stream/a//b",
            "/v1/stream/a/",
            "/v1/stream/%2e%2e/x",
            "/v1/stream/%FF",
            long.as_str(),
        ] {
            assert_eq!(parse(bad).unwrap_err().status(), 400, "{bad:?}");
        }
        assert_eq!(parse("/v1/stream/__ds/subscriptions/x").unwrap_err().status(), 404);
    }
}
