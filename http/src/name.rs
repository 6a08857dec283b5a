//! Stream names: the part of the path after the base path (`/v1/stream/` by default),
//! percent-decoded and checked before anything is created (§12.2); and [`BasePath`], where
//! the protocol is mounted.

use crate::error::ApiError;

/// The default base path.
pub const DEFAULT_BASE_PATH: &str = "/v1/stream";

/// Where the protocol is mounted (`DS_HTTP__BASE_PATH`): streams live under `{base}/`, the
/// subscription control API under `{base}/__ds/`. One or more `/`-led segments of URL
/// path characters, no trailing `/`, no `.` or `..` segment, no percent-encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BasePath {
    /// `{base}/`.
    prefix: String,
    /// `{base}/__ds`.
    control: String,
}

impl Default for BasePath {
    fn default() -> BasePath {
        BasePath::new(DEFAULT_BASE_PATH).unwrap_or_else(|_| unreachable!("a valid default"))
    }
}

impl BasePath {
    /// The base path `path` (`/v1/stream`, `/api/streams`).
    ///
    /// # Errors
    /// Why `path` cannot be one.
    pub fn new(path: &str) -> Result<BasePath, String> {
        let Some(rest) = path.strip_prefix('/') else {
            return Err(format!("base path {path:?} must start with '/'"));
        };
        for segment in rest.split('/') {
            if segment.is_empty() || segment == "." || segment == ".." {
                return Err(format!(
                    "base path {path:?} must be '/'-led segments, none empty, '.' or '..', \
                     and no trailing '/'"
                ));
            }
            let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b);
            // axum reads a segment led by ':' or '*' as a parameter (and refuses it).
            if !segment.bytes().all(allowed) || segment.starts_with([':', '*']) {
                return Err(format!(
                    "base path {path:?} may hold letters, digits and -._~!$&'()*+,;=:@ only, \
                     and no segment may start with ':' or '*'"
                ));
            }
        }
        if ["/healthz", "/readyz", "/metrics"].contains(&path) {
            return Err(format!("base path {path:?} is one of the server's own paths"));
        }
        Ok(BasePath { prefix: format!("{path}/"), control: format!("{path}/{RESERVED_SEGMENT}") })
    }

    /// The base path itself (`/v1/stream`).
    #[must_use]
    pub fn root(&self) -> &str {
        &self.prefix[..self.prefix.len() - 1]
    }

    /// `{base}/`.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The root of the subscription control API (`{base}/__ds`).
    #[must_use]
    pub fn control(&self) -> &str {
        &self.control
    }

    /// The still-encoded stream name of a path under the base (`None`: not under it).
    #[must_use]
    pub fn strip<'a>(&self, path: &'a str) -> Option<&'a str> {
        path.strip_prefix(self.prefix.as_str())
    }
}
/// Longest accepted stream name, in decoded bytes.
pub const MAX_NAME_BYTES: usize = 1024;
/// First path segment reserved for subscription control APIs (§6).
pub const RESERVED_SEGMENT: &str = "__ds";

/// Decodes and validates a stream name: the part of a request path after the base path.
///
/// A name is one or more `/`-separated segments of UTF-8 without control characters, with no
/// empty, `.` or `..` segment, at most [`MAX_NAME_BYTES`] long. Percent-encoding must be
/// well-formed.
///
/// # Errors
/// 400 for a name breaking these rules; 404 for the reserved `__ds` namespace.
pub fn parse(raw: &str) -> Result<String, ApiError> {
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
        assert_eq!(parse("a").unwrap(), "a");
        assert_eq!(parse("chats/42/tokens").unwrap(), "chats/42/tokens");
        assert_eq!(parse("a%20b").unwrap(), "a b");
        assert_eq!(parse("caf%C3%A9").unwrap(), "café");
        assert_eq!(parse("a%2Fb").unwrap(), "a/b");
    }

    #[test]
    fn rejects_hostile_names() {
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        for bad in [
            "a%00b",
            "a%0Ab",
            "a%7Fb",
            "%zz",
            "%4",
            "a/../b",
            "..",
            "./a",
            "a//b",
            "a/",
            "%2e%2e/x",
            "%FF",
            long.as_str(),
        ] {
            assert_eq!(parse(bad).unwrap_err().status(), 400, "{bad:?}");
        }
        assert_eq!(parse("__ds/subscriptions/x").unwrap_err().status(), 404);
    }

    #[test]
    fn base_paths_are_plain_segments() {
        let b = BasePath::new("/api/streams").unwrap();
        assert_eq!(
            (b.root(), b.prefix(), b.control()),
            ("/api/streams", "/api/streams/", "/api/streams/__ds")
        );
        assert_eq!(b.strip("/api/streams/a/b"), Some("a/b"));
        assert_eq!(b.strip("/api/streamsx/a"), None);
        assert_eq!(b.strip("/v1/stream/a"), None);
        assert_eq!(BasePath::default().root(), "/v1/stream");
        assert!(BasePath::new("/s").is_ok());
        for bad in [
            "",
            "/",
            "v1/stream",
            "/v1/stream/",
            "/v1//stream",
            "/v1/../x",
            "/a b",
            "/a%20b",
            "/a?b",
            "/a#b",
            "/healthz",
            "/metrics",
            "/:v1",
            "/api/*x",
        ] {
            assert!(BasePath::new(bad).is_err(), "{bad:?}");
        }
    }
}
