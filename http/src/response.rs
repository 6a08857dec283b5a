//! A response as the protocol produces it, whatever transport carries it: a status, a short
//! list of headers whose values are rendered only by the transport (numbers and offsets are
//! never formatted into a `String` first), a body, and whether the connection must close.

use bytes::Bytes;
use ds_engine::{ContentType, Offset};

use crate::sse::SseBody;

/// An HTTP status code the protocol answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status(u16);

impl Status {
    /// 100.
    pub const CONTINUE: Status = Status(100);
    /// 200.
    pub const OK: Status = Status(200);
    /// 201.
    pub const CREATED: Status = Status(201);
    /// 204.
    pub const NO_CONTENT: Status = Status(204);
    /// 304.
    pub const NOT_MODIFIED: Status = Status(304);
    /// 400.
    pub const BAD_REQUEST: Status = Status(400);
    /// 401.
    pub const UNAUTHORIZED: Status = Status(401);
    /// 403.
    pub const FORBIDDEN: Status = Status(403);
    /// 404.
    pub const NOT_FOUND: Status = Status(404);
    /// 405.
    pub const METHOD_NOT_ALLOWED: Status = Status(405);
    /// 408.
    pub const REQUEST_TIMEOUT: Status = Status(408);
    /// 409.
    pub const CONFLICT: Status = Status(409);
    /// 410.
    pub const GONE: Status = Status(410);
    /// 413.
    pub const PAYLOAD_TOO_LARGE: Status = Status(413);
    /// 414.
    pub const URI_TOO_LONG: Status = Status(414);
    /// 417.
    pub const EXPECTATION_FAILED: Status = Status(417);
    /// 429.
    pub const TOO_MANY_REQUESTS: Status = Status(429);
    /// 431.
    pub const HEADERS_TOO_LARGE: Status = Status(431);
    /// 500.
    pub const INTERNAL_SERVER_ERROR: Status = Status(500);
    /// 501.
    pub const NOT_IMPLEMENTED: Status = Status(501);
    /// 503.
    pub const SERVICE_UNAVAILABLE: Status = Status(503);
    /// 505.
    pub const VERSION_NOT_SUPPORTED: Status = Status(505);

    /// The numeric code.
    #[must_use]
    pub const fn code(self) -> u16 {
        self.0
    }

    /// The reason phrase.
    #[must_use]
    pub const fn reason(self) -> &'static str {
        match self.0 {
            100 => "Continue",
            200 => "OK",
            201 => "Created",
            204 => "No Content",
            304 => "Not Modified",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            409 => "Conflict",
            410 => "Gone",
            413 => "Payload Too Large",
            414 => "URI Too Long",
            417 => "Expectation Failed",
            429 => "Too Many Requests",
            431 => "Request Header Fields Too Large",
            500 => "Internal Server Error",
            501 => "Not Implemented",
            503 => "Service Unavailable",
            505 => "HTTP Version Not Supported",
            _ => "Unknown",
        }
    }

    /// Whether a response with this status never has a body (RFC 9110 §6.4.1).
    #[must_use]
    pub const fn forbids_body(self) -> bool {
        self.0 < 200 || self.0 == 204 || self.0 == 304
    }
}

impl PartialEq<u16> for Status {
    fn eq(&self, other: &u16) -> bool {
        self.0 == *other
    }
}

/// A header value, rendered by the transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// A constant.
    Static(&'static str),
    /// A decimal number.
    Number(u64),
    /// An offset token.
    Offset(Offset),
    /// A stream's content type (valid header text: it was one when the stream was created).
    ContentType(ContentType),
    /// A read's ETag (boxed: it is the largest value, and every answer's header list holds
    /// room for the largest).
    ETag(Box<ETag>),
    /// Text made for this response (an echoed origin, a `Location`). Always valid header
    /// text: no control characters.
    Text(String),
}

impl Value {
    /// Appends the value's bytes to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        match self {
            Value::Static(s) => out.extend_from_slice(s.as_bytes()),
            Value::Number(n) => write_decimal(out, *n),
            Value::Offset(o) => out.extend_from_slice(&o.encode()),
            Value::ContentType(ct) => out.extend_from_slice(ct.as_str().as_bytes()),
            Value::ETag(tag) => {
                out.push(b'"');
                write_hex(out, tag.incarnation);
                out.push(b':');
                out.extend_from_slice(&tag.start.encode());
                out.push(b':');
                out.extend_from_slice(&tag.next.encode());
                if tag.closed {
                    out.extend_from_slice(b":c");
                }
                out.push(b'"');
            }
            Value::Text(s) => out.extend_from_slice(s.as_bytes()),
        }
    }

    /// The value's bytes in a fresh buffer.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(40);
        self.write_to(&mut out);
        out
    }
}

/// A read's ETag: `"{incarnation:x}:{start}:{next}"`, with `:c` once the read reaches a
/// closed stream's end (§10.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ETag {
    /// The stream's incarnation.
    pub incarnation: u64,
    /// Where the read started.
    pub start: Offset,
    /// Where it ended.
    pub next: Offset,
    /// It reached the end of a closed stream.
    pub closed: bool,
}

/// Appends `n` in decimal.
pub fn write_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends `n` in lower-case hexadecimal, without leading zeros.
pub fn write_hex(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Most headers one response carries besides the standard ones (a read with every CORS
/// header has 9, a refusal with its protocol headers 8); debug builds check it.
pub const HEADERS_MAX: usize = 12;

/// The brief's security headers, on every answer.
pub const SECURITY_HEADERS: [(&str, &str); 2] =
    [("x-content-type-options", "nosniff"), ("cross-origin-resource-policy", "cross-origin")];

/// `Cache-Control` of an answer that sets none: nothing may be cached unless said otherwise.
pub const DEFAULT_CACHE_CONTROL: &str = "no-store";

/// A response's headers in insertion order. One small allocation per answer: an answer
/// passes through a few futures on its way out, and a list held in place would be copied
/// whole at each step. Names are lower-case constants. Only the transport adds framing
/// headers (`Content-Length`, `Connection`, `Transfer-Encoding`, `Date`) and the standard
/// ones ([`Response::standard_headers`]).
#[derive(Debug, Default)]
pub struct HeaderList {
    items: Vec<(&'static str, Value)>,
}

impl HeaderList {
    /// Sets `name` to `value`, replacing any earlier value of it.
    pub fn set(&mut self, name: &'static str, value: Value) {
        match self.items.iter_mut().find(|(n, _)| *n == name) {
            Some((_, slot)) => *slot = value,
            None => self.append(name, value),
        }
    }

    /// Adds a value of `name`, keeping earlier ones.
    pub fn append(&mut self, name: &'static str, value: Value) {
        debug_assert!(self.items.len() < HEADERS_MAX, "more response headers than expected");
        if self.items.capacity() == 0 {
            self.items.reserve_exact(HEADERS_TYPICAL);
        }
        self.items.push((name, value));
    }

    /// Whether `name` is set.
    #[must_use]
    pub fn contains(&self, name: &str) -> bool {
        self.iter().any(|(n, _)| n == name)
    }

    /// The first value of `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The headers in order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Value)> {
        self.items.iter().map(|(n, v)| (*n, v))
    }
}

/// Room reserved at an answer's first header: enough for all but reads with CORS headers.
const HEADERS_TYPICAL: usize = 6;

/// A response body.
#[derive(Debug, Default)]
pub enum Body {
    /// No body.
    #[default]
    Empty,
    /// One buffer.
    Full(Bytes),
    /// Shared buffers sent one after another (a catch-up read of many records).
    Parts(Vec<Bytes>),
    /// An SSE event stream of unknown length.
    Sse(Box<SseBody>),
}

impl Body {
    /// The exact length, if known in advance (everything but SSE).
    #[must_use]
    pub fn len(&self) -> Option<u64> {
        match self {
            Body::Empty => Some(0),
            Body::Full(b) => Some(b.len() as u64),
            Body::Parts(parts) => Some(parts.iter().map(|p| p.len() as u64).sum()),
            Body::Sse(_) => None,
        }
    }

    /// Whether the body is known to be empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }
}

/// A complete response.
#[derive(Debug)]
pub struct Response {
    /// The status.
    pub status: Status,
    /// The headers.
    pub headers: HeaderList,
    /// The body.
    pub body: Body,
    /// The connection must close after this response (the rest of a refused body may still
    /// be in flight, or the request's framing cannot be trusted).
    pub close: bool,
    /// The answer carries the standard headers ([`Response::standard_headers`]): set by the
    /// protocol's last step on every answer; kept out of the header list so that transports
    /// can render them as constants.
    pub standard: bool,
}

impl Response {
    /// A response with no headers and no body.
    #[must_use]
    pub fn empty(status: Status) -> Response {
        Response {
            status,
            headers: HeaderList::default(),
            body: Body::Empty,
            close: false,
            standard: false,
        }
    }

    /// The standard headers this answer carries besides its list: the security headers, and
    /// `Cache-Control: no-store` unless the list sets one.
    pub fn standard_headers(&self) -> impl Iterator<Item = (&'static str, &'static str)> {
        let default_cache = (!self.headers.contains("cache-control"))
            .then_some(("cache-control", DEFAULT_CACHE_CONTROL));
        SECURITY_HEADERS.into_iter().chain(default_cache).filter(|_| self.standard)
    }

    /// A `text/plain` response.
    #[must_use]
    pub fn text(status: Status, text: &'static str) -> Response {
        let mut resp = Response::empty(status);
        resp.headers.set("content-type", Value::Static("text/plain"));
        resp.body = Body::Full(Bytes::from_static(text.as_bytes()));
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals() {
        for n in [0u64, 7, 10, 99, 1_000_001, u64::MAX] {
            let mut out = Vec::new();
            write_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    #[test]
    fn hex() {
        for n in [0u64, 9, 10, 255, 0xdead_beef, u64::MAX] {
            let mut out = Vec::new();
            write_hex(&mut out, n);
            assert_eq!(out, format!("{n:x}").as_bytes());
        }
    }

    #[test]
    fn set_replaces_and_append_keeps() {
        let mut h = HeaderList::default();
        h.set("a", Value::Number(1));
        h.append("vary", Value::Static("Origin"));
        h.append("vary", Value::Static("Accept"));
        h.set("a", Value::Number(2));
        let all: Vec<_> = h.iter().map(|(n, v)| (n, v.to_bytes())).collect();
        assert_eq!(
            all,
            [("a", b"2".to_vec()), ("vary", b"Origin".to_vec()), ("vary", b"Accept".to_vec())]
        );
        assert!(h.contains("vary") && !h.contains("b"));
    }
}
