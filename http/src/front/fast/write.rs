//! Response heads, rendered straight into the connection's output buffer: no header map, no
//! `String` per value, and the `Date` formatted once a second.

use std::cell::Cell;

use crate::response::{Body, Response, Status, write_decimal};
use crate::rfc3339::imf_fixdate;

/// How a request is answered, as far as framing goes.
#[derive(Clone, Copy, Debug)]
pub struct Reply {
    /// A `HEAD` request: headers only.
    pub head_only: bool,
    /// An HTTP/1.0 client: no chunked responses, keep-alive only if it asked.
    pub http10: bool,
    /// The connection may serve another request after this one.
    pub keep_alive: bool,
}

/// How the body follows the head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyPlan {
    /// No body bytes at all.
    None,
    /// Exactly `Content-Length` bytes.
    Length,
    /// Chunked (an SSE stream to an HTTP/1.1 client).
    Chunked,
    /// Until the connection closes (an SSE stream to an HTTP/1.0 client).
    UntilClose,
}

impl BodyPlan {
    /// Whether the connection closes after this response whatever the request asked.
    #[must_use]
    pub fn closes(self) -> bool {
        self == BodyPlan::UntilClose
    }
}

/// Renders the status line and headers of `resp` into `out`. The connection closes after
/// this response if `resp.close`, if `reply` does not keep it alive, or if the body runs
/// until close; the head says so.
pub fn head(out: &mut Vec<u8>, resp: &Response, reply: Reply) -> BodyPlan {
    let plan = if resp.status.forbids_body() || reply.head_only {
        BodyPlan::None
    } else {
        match resp.body {
            Body::Sse(_) if reply.http10 => BodyPlan::UntilClose,
            Body::Sse(_) => BodyPlan::Chunked,
            _ => BodyPlan::Length,
        }
    };
    status_line(out, resp.status);
    out.extend_from_slice(b"date: ");
    out.extend_from_slice(&date());
    out.extend_from_slice(b"\r\n");
    for (name, value) in resp.headers.iter() {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        value.write_to(out);
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in resp.standard_headers() {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match plan {
        BodyPlan::Length => {
            out.extend_from_slice(b"content-length: ");
            write_decimal(out, resp.body.len().unwrap_or(0));
            out.extend_from_slice(b"\r\n");
        }
        BodyPlan::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        BodyPlan::None | BodyPlan::UntilClose => {}
    }
    if resp.close || !reply.keep_alive || plan.closes() {
        out.extend_from_slice(b"connection: close\r\n");
    } else if reply.http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    plan
}

/// `HTTP/1.1 {code} {reason}\r\n`.
pub fn status_line(out: &mut Vec<u8>, status: Status) {
    out.extend_from_slice(b"HTTP/1.1 ");
    write_decimal(out, u64::from(status.code()));
    out.push(b' ');
    out.extend_from_slice(status.reason().as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The size line of one chunk of a chunked body.
pub fn chunk_size(out: &mut Vec<u8>, len: usize) {
    crate::response::write_hex(out, len as u64);
    out.extend_from_slice(b"\r\n");
}

/// The current `Date` value, formatted at most once a second per thread.
fn date() -> [u8; 29] {
    thread_local! {
        static CACHED: Cell<(u64, [u8; 29])> = const { Cell::new((u64::MAX, [0; 29])) };
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHED.with(|c| {
        let (secs, text) = c.get();
        if secs == now {
            return text;
        }
        let text = imf_fixdate(now);
        c.set((now, text));
        text
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response::Value;
    use bytes::Bytes;

    fn render(resp: &Response, reply: Reply) -> (String, BodyPlan) {
        let mut out = Vec::new();
        let plan = head(&mut out, resp, reply);
        let text = String::from_utf8(out).unwrap();
        // The date changes; everything else is fixed.
        let date_at = text.find("date: ").unwrap();
        let without_date = format!("{}{}", &text[..date_at], &text[date_at + 37..]);
        (without_date, plan)
    }

    const KEEP: Reply = Reply { head_only: false, http10: false, keep_alive: true };

    #[test]
    fn lengths_and_connection() {
        let mut resp = Response::empty(Status::OK);
        resp.headers.set("stream-next-offset", Value::Number(5));
        resp.body = Body::Full(Bytes::from_static(b"hello"));
        let (text, plan) = render(&resp, KEEP);
        assert_eq!(text, "HTTP/1.1 200 OK\r\nstream-next-offset: 5\r\ncontent-length: 5\r\n\r\n");
        assert_eq!(plan, BodyPlan::Length);
        resp.close = true;
        assert!(render(&resp, KEEP).0.ends_with("content-length: 5\r\nconnection: close\r\n\r\n"));
        let old = Reply { http10: true, ..KEEP };
        resp.close = false;
        assert!(render(&resp, old).0.ends_with("connection: keep-alive\r\n\r\n"));
    }

    #[test]
    fn no_body_for_head_204_and_304() {
        let resp = Response::empty(Status::NO_CONTENT);
        assert_eq!(render(&resp, KEEP), ("HTTP/1.1 204 No Content\r\n\r\n".into(), BodyPlan::None));
        let mut ok = Response::text(Status::OK, "ok");
        ok.headers = crate::response::HeaderList::default();
        let head_only = Reply { head_only: true, ..KEEP };
        assert_eq!(render(&ok, head_only), ("HTTP/1.1 200 OK\r\n\r\n".into(), BodyPlan::None));
    }

    #[test]
    fn the_date_is_an_imf_fixdate() {
        let mut out = Vec::new();
        head(&mut out, &Response::empty(Status::NO_CONTENT), KEEP);
        let text = String::from_utf8(out).unwrap();
        let date = text.lines().find_map(|l| l.strip_prefix("date: ")).unwrap();
        assert_eq!(date.len(), 29);
        assert!(date.ends_with(" GMT"));
    }
}
