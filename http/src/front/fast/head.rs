//! Request heads, parsed strictly (RFC 9112), since a hand-written server is a security
//! surface: every ambiguity about where a request ends is a refusal, never a guess.
//!
//! `httparse` parses the request line and header lines (it refuses obs-fold, whitespace
//! before a colon, and control bytes in names and values). This module adds what it leaves
//! to the server: where the head ends ([`find_end`], linear however slowly it arrives), the
//! body's framing (`Content-Length` and `Transfer-Encoding` rules), `Host`, the request
//! target's form, `Connection` and `Expect`.
//!
//! Every error here closes the connection after its answer: once framing is in doubt, no
//! byte after this head may be read as a request.

use std::mem::MaybeUninit;

use crate::error::ApiError;
use crate::request::{Field, Method, RequestHead, RequestHeaders};

/// Largest request head (request line and header lines): 431 beyond.
pub const HEAD_BYTES_MAX: usize = 64 * 1024;
/// Longest request target: 414 beyond. Stream names are at most 1 KiB decoded (3 KiB
/// encoded); the query holds an offset and a cursor.
pub const TARGET_BYTES_MAX: usize = 8 * 1024;
/// Most header lines in one head: 431 beyond.
pub const HEADER_LINES_MAX: usize = 100;
/// What an HTTP/2 client with prior knowledge sends first (RFC 9113 §3.4).
pub const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How far [`find_end`] got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scan {
    /// The head is the first `n` bytes.
    Complete(usize),
    /// More bytes are needed.
    Partial,
    /// The connection starts with the HTTP/2 preface.
    Http2,
}

/// Finds the end of the head at the start of `buf` (which starts at a request line: leading
/// empty lines are skipped by [`leading_empty_lines`]). `scanned` remembers how far earlier
/// calls looked, so that a head arriving byte by byte is scanned once.
///
/// # Errors
/// 431 or 414 once the head passes [`HEAD_BYTES_MAX`] without ending.
pub fn find_end(buf: &[u8], scanned: &mut usize) -> Result<Scan, ApiError> {
    if buf.len() < HTTP2_PREFACE.len() && HTTP2_PREFACE.starts_with(buf) {
        return Ok(Scan::Partial);
    }
    if buf.starts_with(HTTP2_PREFACE) {
        return Ok(Scan::Http2);
    }
    let from = scanned.saturating_sub(2);
    let mut i = from;
    let mut end = None;
    while let Some(at) = buf.get(i..).and_then(|rest| memchr::memchr(b'\n', rest)) {
        let lf = i + at;
        match (buf.get(lf + 1), buf.get(lf + 2)) {
            (Some(b'\n'), _) => end = Some(lf + 2),
            (Some(b'\r'), Some(b'\n')) => end = Some(lf + 3),
            _ => i = lf + 1,
        }
        if end.is_some() {
            break;
        }
    }
    if end.unwrap_or(buf.len()) > HEAD_BYTES_MAX {
        let line_ends = buf.iter().take(TARGET_BYTES_MAX + 64).any(|&b| b == b'\n');
        return Err(if line_ends {
            ApiError::head_too_large(HEAD_BYTES_MAX)
        } else {
            ApiError::target_too_long(TARGET_BYTES_MAX)
        });
    }
    match end {
        Some(end) => Ok(Scan::Complete(end)),
        None => {
            *scanned = buf.len();
            Ok(Scan::Partial)
        }
    }
}

/// How many bytes of empty lines (CRLF or LF) start `buf`; a server ignores them before a
/// request line (RFC 9112 §2.2).
#[must_use]
pub fn leading_empty_lines(buf: &[u8]) -> usize {
    let mut i = 0;
    loop {
        match (buf.get(i), buf.get(i + 1)) {
            (Some(b'\n'), _) => i += 1,
            (Some(b'\r'), Some(b'\n')) => i += 2,
            _ => return i,
        }
    }
}

/// How the request's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed head.
#[derive(Debug)]
pub struct Head<'a> {
    /// The request as the protocol sees it.
    pub request: RequestHead<'a>,
    /// An HTTP/1.0 request.
    pub http10: bool,
    /// The body's framing.
    pub framing: Framing,
    /// The connection may serve another request after this one.
    pub keep_alive: bool,
    /// The client waits for `100 Continue` before sending the body.
    pub expect_continue: bool,
}

/// Parses a complete head (the first `n` bytes [`find_end`] reported).
///
/// # Errors
/// 400 for a malformed head, 414, 431, 501 for a transfer coding other than `chunked`, 505
/// for a version other than 1.0 and 1.1, 417 for an unknown expectation.
pub fn parse(buf: &[u8]) -> Result<Head<'_>, ApiError> {
    let mut lines = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; HEADER_LINES_MAX];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(buf, &mut lines) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(ApiError::bad_framing("request head ends too early"));
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ApiError::head_too_large(HEAD_BYTES_MAX));
        }
        Err(httparse::Error::Version) => {
            return Err(if looks_like_http_version(buf) {
                ApiError::version_not_supported()
            } else {
                ApiError::bad_framing("malformed request line")
            });
        }
        Err(e) => return Err(ApiError::bad_framing(format!("malformed request head: {e}"))),
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(ApiError::bad_framing("malformed request line"));
    };
    let http10 = version == 0;
    if target.len() > TARGET_BYTES_MAX {
        return Err(ApiError::target_too_long(TARGET_BYTES_MAX));
    }
    let method = Method::parse(method.as_bytes());
    let target = Target::parse(target, method)?;

    let mut headers = RequestHeaders::default();
    let mut hosts = 0usize;
    let mut length: Option<u64> = None;
    let mut codings = Codings::default();
    let mut close = false;
    let mut keep_alive_token = false;
    let mut expect_continue = false;
    for line in req.headers.iter() {
        let name = line.name.as_bytes();
        let value = line.value;
        headers.add(name, value);
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
            if !valid_authority(value) {
                return Err(ApiError::bad_framing("Host is not a valid host[:port]"));
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            if list(value).next().is_none() {
                return Err(ApiError::bad_framing("Content-Length is empty"));
            }
            for part in list(value) {
                let n = content_length(part)?;
                if length.is_some_and(|m| m != n) {
                    return Err(ApiError::bad_framing("Content-Length values differ"));
                }
                length = Some(n);
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            codings.add(value);
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in list(value) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"expect") && !http10 {
            // An HTTP/1.0 client cannot have meant 100-continue (RFC 9110 §10.1.1).
            if value.eq_ignore_ascii_case(b"100-continue") {
                expect_continue = true;
            } else {
                return Err(ApiError::expectation_failed());
            }
        }
    }
    // RFC 9112 §3.2: exactly one Host in HTTP/1.1, never more than one.
    if hosts > 1 || (hosts == 0 && !http10) {
        return Err(ApiError::bad_framing("an HTTP/1.1 request needs exactly one Host"));
    }
    let framing = match (codings.seen, length) {
        (false, None) => Framing::Empty,
        (false, Some(n)) => Framing::Length(n),
        (true, Some(_)) => {
            return Err(ApiError::bad_framing(
                "Content-Length and Transfer-Encoding must not be sent together",
            ));
        }
        (true, None) if http10 => {
            return Err(ApiError::bad_framing("HTTP/1.0 has no Transfer-Encoding"));
        }
        (true, None) => codings.framing()?,
    };
    let authority = match target.authority {
        Some(authority) => Some(authority),
        None => headers.get(Field::Host).and_then(|h| std::str::from_utf8(h).ok()),
    };
    Ok(Head {
        request: RequestHead {
            method,
            path: target.path,
            query: target.query,
            authority,
            headers,
            peer: None,
            secure: false,
        },
        http10,
        framing,
        keep_alive: !close && (!http10 || keep_alive_token),
        expect_continue,
    })
}

/// Whether a request line httparse refused for its version looks like `METHOD SP target SP
/// HTTP/d[.d]`, so that the answer is 505 rather than 400.
fn looks_like_http_version(buf: &[u8]) -> bool {
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Some(version) = line.rsplit(|&b| b == b' ').next() else { return false };
    match version.strip_prefix(b"HTTP/") {
        Some([major]) => major.is_ascii_digit(),
        Some([major, b'.', minor]) => major.is_ascii_digit() && minor.is_ascii_digit(),
        _ => false,
    }
}

/// The elements of a comma-separated list, trimmed of optional whitespace; empty elements
/// are skipped (RFC 9110 §5.6.1).
fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|e| !e.is_empty())
}

/// One `Content-Length` value: digits only (no sign, no `0x`, no fraction). A number too
/// large to hold is valid syntax and simply over every limit.
fn content_length(value: &[u8]) -> Result<u64, ApiError> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(ApiError::bad_framing("Content-Length must be digits only"));
    }
    Ok(value
        .iter()
        .try_fold(0u64, |n, d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
        .unwrap_or(u64::MAX))
}

/// The transfer codings of a request, across all its `Transfer-Encoding` lines.
#[derive(Default)]
struct Codings {
    seen: bool,
    count: usize,
    chunked: usize,
    last_is_chunked: bool,
}

impl Codings {
    fn add(&mut self, value: &[u8]) {
        self.seen = true;
        for coding in list(value) {
            self.count += 1;
            self.last_is_chunked = coding.eq_ignore_ascii_case(b"chunked");
            if self.last_is_chunked {
                self.chunked += 1;
            }
        }
    }

    /// RFC 9112 §6.1 and §6.3: `chunked` must be last and only once; any other coding is
    /// one this server does not implement.
    fn framing(&self) -> Result<Framing, ApiError> {
        if self.count == 0 {
            return Err(ApiError::bad_framing("Transfer-Encoding is empty"));
        }
        if !self.last_is_chunked || self.chunked > 1 {
            return Err(ApiError::bad_framing(
                "Transfer-Encoding must end with chunked, applied once",
            ));
        }
        if self.count > 1 {
            return Err(ApiError::not_implemented(
                "the only transfer coding this server implements is chunked",
            )
            .closing());
        }
        Ok(Framing::Chunked)
    }
}

/// A request target split up.
struct Target<'a> {
    path: &'a str,
    query: Option<&'a str>,
    authority: Option<&'a str>,
}

impl<'a> Target<'a> {
    /// Origin-form (`/path?query`), absolute-form (`http://host/path?query`, §3.2.2), or
    /// asterisk-form for `OPTIONS`.
    fn parse(target: &'a str, method: Method) -> Result<Target<'a>, ApiError> {
        if !target.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ApiError::bad_framing("request target must be printable ASCII"));
        }
        if target.contains('#') {
            return Err(ApiError::bad_framing("request target must not have a fragment"));
        }
        if target == "*" && method == Method::Options {
            return Ok(Target { path: "*", query: None, authority: None });
        }
        let (authority, rest) = if target.starts_with('/') {
            (None, target)
        } else {
            let after_scheme = strip_prefix_ignore_case(target, "http://")
                .or_else(|| strip_prefix_ignore_case(target, "https://"))
                .ok_or_else(|| ApiError::bad_framing("malformed request target"))?;
            let end = after_scheme.find(['/', '?']).unwrap_or(after_scheme.len());
            let (authority, rest) = after_scheme.split_at(end);
            if authority.is_empty() || !valid_authority(authority.as_bytes()) {
                return Err(ApiError::bad_framing("malformed authority in request target"));
            }
            (Some(authority), rest)
        };
        let (path, query) = match rest.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (rest, None),
        };
        let path = if path.is_empty() { "/" } else { path };
        Ok(Target { path, query, authority })
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

/// `uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2); empty is valid (a target
/// without an authority).
fn valid_authority(value: &[u8]) -> bool {
    let (host, port) = if let Some(rest) = value.strip_prefix(b"[") {
        let Some(close) = rest.iter().position(|&b| b == b']') else { return false };
        let literal = &rest[..close];
        if literal.is_empty()
            || !literal.iter().all(|&b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
        {
            return false;
        }
        (&b""[..], &rest[close + 1..])
    } else {
        match value.iter().position(|&b| b == b':') {
            Some(colon) => (&value[..colon], &value[colon..]),
            None => (value, &b""[..]),
        }
    };
    let port_ok = match port {
        [] => true,
        [b':', digits @ ..] => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    port_ok && reg_name(host)
}

/// `*( unreserved / pct-encoded / sub-delims )`.
fn reg_name(host: &[u8]) -> bool {
    let mut i = 0;
    while let Some(&b) = host.get(i) {
        let ok = match b {
            b'%' => {
                let hex =
                    host.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
                i += 2;
                hex
            }
            b'-' | b'.' | b'_' | b'~' => true,
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' => true,
            _ => b.is_ascii_alphanumeric(),
        };
        if !ok {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response::Status;

    fn head(raw: &str) -> Result<Head<'_>, ApiError> {
        let mut scanned = 0;
        match find_end(raw.as_bytes(), &mut scanned)? {
            Scan::Complete(n) => {
                assert_eq!(n, raw.len(), "test heads end at the blank line");
                parse(&raw.as_bytes()[..n])
            }
            other => panic!("{other:?}"),
        }
    }

    fn status(raw: &str) -> u16 {
        match head(raw) {
            Ok(_) => 0,
            Err(e) => e.status().code(),
        }
    }

    #[test]
    fn a_plain_request() {
        let h = head("POST /v1/stream/a?x=1 HTTP/1.1\r\nHost: h:80\r\nContent-Length: 5\r\n\r\n")
            .unwrap();
        assert_eq!(h.request.method, Method::Post);
        assert_eq!((h.request.path, h.request.query), ("/v1/stream/a", Some("x=1")));
        assert_eq!(h.request.authority, Some("h:80"));
        assert_eq!(h.framing, Framing::Length(5));
        assert!(h.keep_alive && !h.http10 && !h.expect_continue);
    }

    #[test]
    fn content_length_must_be_plain_digits_and_agree() {
        for bad in ["+5", "0x5", "5.0", "", " ", "-1", "5 5", "5,6"] {
            let raw = format!("POST / HTTP/1.1\r\nhost: h\r\ncontent-length: {bad}\r\n\r\n");
            assert_eq!(status(&raw), 400, "{bad:?}");
        }
        let twice = "POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n";
        assert_eq!(status(twice), 400);
        let same =
            "POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 5\r\ncontent-length: 5, 5\r\n\r\n";
        assert_eq!(head(same).unwrap().framing, Framing::Length(5));
        let huge = "POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 99999999999999999999999\r\n\r\n";
        assert_eq!(head(huge).unwrap().framing, Framing::Length(u64::MAX));
    }

    #[test]
    fn transfer_encoding_rules() {
        let te = |v: &str| format!("POST / HTTP/1.1\r\nhost: h\r\ntransfer-encoding: {v}\r\n\r\n");
        assert_eq!(head(&te("chunked")).unwrap().framing, Framing::Chunked);
        assert_eq!(head(&te("Chunked")).unwrap().framing, Framing::Chunked);
        assert_eq!(status(&te("gzip, chunked")), 501);
        assert_eq!(status(&te("gzip")), 400);
        assert_eq!(status(&te("chunked, chunked")), 400);
        assert_eq!(status(&te("chunked, gzip")), 400);
        assert_eq!(status(&te("")), 400);
        let both =
            "POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n";
        assert_eq!(status(both), 400);
        let old = "POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n";
        assert_eq!(status(old), 400);
    }

    #[test]
    fn host_is_required_once_and_valid() {
        assert_eq!(status("GET / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nhost: a\r\nhost: a\r\n\r\n"), 400);
        for bad in ["a b", "a/b", "a@b", "a:b:c", "[zz]", "a:123456", "a%2"] {
            assert_eq!(status(&format!("GET / HTTP/1.1\r\nhost: {bad}\r\n\r\n")), 400, "{bad}");
        }
        for good in ["", "a", "a.b:8080", "127.0.0.1:1", "[::1]:4437", "a%20b", "x:"] {
            assert_eq!(status(&format!("GET / HTTP/1.1\r\nhost: {good}\r\n\r\n")), 0, "{good}");
        }
        assert_eq!(status("GET / HTTP/1.0\r\n\r\n"), 0, "HTTP/1.0 may omit Host");
    }

    #[test]
    fn malformed_lines_are_refused() {
        for bad in [
            "GET / HTTP/1.1\r\nhost: h\r\nx : y\r\n\r\n",
            "GET / HTTP/1.1\r\nhost: h\r\nx: y\r\n z\r\n\r\n",
            "GET / HTTP/1.1\r\nhost: h\r\nx: a\0b\r\n\r\n",
            "GET / HTTP/1.1\r\nhost: h\r\nx: a\rb\r\n\r\n",
            "GET / HTTP/1.1\r\nhost: h\r\nx: a\x7fb\r\n\r\n",
            "GET / HTTP/1.1\r\nhost: h\r\nx\0: y\r\n\r\n",
            "GET /\x01 HTTP/1.1\r\nhost: h\r\n\r\n",
            "GET /caf\u{e9} HTTP/1.1\r\nhost: h\r\n\r\n",
            "GET nope HTTP/1.1\r\nhost: h\r\n\r\n",
            "GET /#f HTTP/1.1\r\nhost: h\r\n\r\n",
            "GET * HTTP/1.1\r\nhost: h\r\n\r\n",
            "GET / HTTP/1.1 x\r\nhost: h\r\n\r\n",
        ] {
            assert_eq!(status(bad), 400, "{bad:?}");
        }
    }

    #[test]
    fn versions() {
        assert_eq!(status("GET / HTTP/1.2\r\nhost: h\r\n\r\n"), 505);
        assert_eq!(status("GET / HTTP/2.0\r\nhost: h\r\n\r\n"), 505);
        assert_eq!(status("GET / HTTP/3\r\nhost: h\r\n\r\n"), 505);
        assert_eq!(status("GET / HTTX/1.1\r\nhost: h\r\n\r\n"), 400);
        let old = head("GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(old.http10 && !old.keep_alive);
        let kept = head("GET / HTTP/1.0\r\nconnection: Keep-Alive\r\n\r\n").unwrap();
        assert!(kept.keep_alive);
        let closed = head("GET / HTTP/1.1\r\nhost: h\r\nconnection: foo, close\r\n\r\n").unwrap();
        assert!(!closed.keep_alive);
    }

    #[test]
    fn absolute_form_takes_its_authority_from_the_target() {
        let h =
            head("GET http://example.com:81/v1/stream/a?offset=-1 HTTP/1.1\r\nhost: other\r\n\r\n")
                .unwrap();
        assert_eq!(h.request.authority, Some("example.com:81"));
        assert_eq!((h.request.path, h.request.query), ("/v1/stream/a", Some("offset=-1")));
        let bare = head("GET HTTP://example.com HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
        assert_eq!(bare.request.path, "/");
        assert_eq!(status("GET ftp://x/ HTTP/1.1\r\nhost: x\r\n\r\n"), 400);
        assert_eq!(status("GET http:///a HTTP/1.1\r\nhost: x\r\n\r\n"), 400);
        assert_eq!(status("GET http://u@x/a HTTP/1.1\r\nhost: x\r\n\r\n"), 400);
    }

    #[test]
    fn expectations() {
        let h = head("PUT / HTTP/1.1\r\nhost: h\r\nexpect: 100-Continue\r\n\r\n").unwrap();
        assert!(h.expect_continue);
        assert_eq!(status("PUT / HTTP/1.1\r\nhost: h\r\nexpect: magic\r\n\r\n"), 417);
        let old = head("PUT / HTTP/1.0\r\nexpect: 100-continue\r\n\r\n").unwrap();
        assert!(!old.expect_continue, "never to HTTP/1.0 clients");
    }

    #[test]
    fn limits() {
        let long_target =
            format!("GET /{} HTTP/1.1\r\nhost: h\r\n\r\n", "a".repeat(TARGET_BYTES_MAX));
        assert_eq!(status(&long_target), 414);
        let many: String = (0..=HEADER_LINES_MAX).map(|i| format!("x{i}: y\r\n")).collect();
        assert_eq!(status(&format!("GET / HTTP/1.1\r\nhost: h\r\n{many}\r\n")), 431);
        let mut scanned = 0;
        let endless = format!("GET / HTTP/1.1\r\nx: {}", "a".repeat(HEAD_BYTES_MAX));
        let e = find_end(endless.as_bytes(), &mut scanned).unwrap_err();
        assert_eq!(e.status(), Status::HEADERS_TOO_LARGE);
        let endless_target = format!("GET /{}", "a".repeat(HEAD_BYTES_MAX));
        let e = find_end(endless_target.as_bytes(), &mut 0).unwrap_err();
        assert_eq!(e.status(), Status::URI_TOO_LONG);
        let whole = format!("GET / HTTP/1.1\r\nx: {}\r\n\r\n", "a".repeat(HEAD_BYTES_MAX));
        let e = find_end(whole.as_bytes(), &mut 0).unwrap_err();
        assert_eq!(e.status(), Status::HEADERS_TOO_LARGE, "a complete head over the limit too");
    }

    #[test]
    fn the_end_is_found_however_the_head_arrives() {
        let raw = b"GET / HTTP/1.1\r\nhost: h\r\n\r\nNEXT";
        let mut scanned = 0;
        for len in 0..raw.len() {
            let got = find_end(&raw[..len], &mut scanned).unwrap();
            let want = if len >= 27 { Scan::Complete(27) } else { Scan::Partial };
            assert_eq!(got, want, "{len}");
        }
        assert_eq!(find_end(b"GET / HTTP/1.1\nhost: h\n\n", &mut 0).unwrap(), Scan::Complete(24));
        assert_eq!(leading_empty_lines(b"\r\n\nGET"), 3);
        assert_eq!(leading_empty_lines(b"\r"), 0);
    }

    #[test]
    fn http2_preface_is_recognised() {
        assert_eq!(find_end(&HTTP2_PREFACE[..10], &mut 0).unwrap(), Scan::Partial);
        assert_eq!(find_end(HTTP2_PREFACE, &mut 0).unwrap(), Scan::Http2);
    }
}
