//! SSE reads (§5.8): catch-up data, then live data as the tail moves, as paired `data` and
//! `control` events.
//!
//! Framing, byte for byte (what the official suite's parsers expect):
//! - `event: data\n`, one `data:<line>\n` per line of the payload, `\n`. Lines split on CR,
//!   LF and CRLF, so payload bytes can never end an event or start a new one. A line that
//!   starts with a space gets one extra space, which SSE parsers strip.
//! - binary streams (neither `text/*` nor JSON): one `data:<base64>\n` line.
//! - `event: control\ndata:{...}\n\n` with `streamNextOffset`, `streamCursor` (while open),
//!   `upToDate` and `streamClosed`.
//!
//! A data event and its control event go out in one frame. The response ends after the
//! closing control event, when the stream is deleted, at shutdown, and after the reconnect
//! interval even while data flows (§10.2).

use std::pin::Pin;
use std::time::Duration;

use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use ds_engine::{Offset, ReadChunk, ReadFrom, TailWatch};
use tokio::time::{Instant, Sleep};

use crate::error::ApiError;
use crate::query::ReadQuery;
use crate::response::{Body, Response, Status, Value};
use crate::state::AppState;
use crate::{cursor, headers};

const KEEPALIVE: &[u8] = b": keepalive\n\n";
/// Most stream bytes in one SSE event (a larger JSON message still goes whole). Each reader
/// formats its own events, so this bounds what one SSE connection holds at a time.
pub const SSE_EVENT_BYTES_MAX: usize = 64 * 1024;

/// Starts an SSE response. Errors found before the first event (unknown stream, bad offset)
/// are ordinary error responses.
///
/// # Errors
/// 404, or 400 for an offset the stream does not have.
pub async fn respond(app: AppState, name: String, q: ReadQuery) -> Result<Response, ApiError> {
    let (info, watch) = app.engine.subscribe(&name).await?;
    let first = app.engine.read_at_most(&name, q.from, SSE_EVENT_BYTES_MAX).await?;
    let binary = !info.content_type.is_text();
    let now = Instant::now();
    let reconnect_at = app.config.sse_reconnect_interval.map(|d| now + d);
    let keepalive_every = app.config.sse_keepalive_interval;
    let end = {
        let app = app.clone();
        Box::pin(async move {
            let reconnect = async {
                match reconnect_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = reconnect => {}
                () = app.shutting_down() => {}
            }
        })
    };
    let live = app.metrics.as_ref().map(|m| m.live(crate::metrics::LiveKind::sse));
    let body = SseBody {
        reconnect_at,
        keepalive_every,
        keepalive: Box::pin(tokio::time::sleep(keepalive_every)),
        last_frame: now,
        end,
        app,
        name,
        incarnation: info.incarnation,
        next: first.next,
        pending: Some(first),
        announced: None,
        watch: Some(watch),
        binary,
        client_cursor: q.cursor,
        cursor: 0,
        done: false,
        _live: live,
    };
    let mut resp = Response::empty(Status::OK);
    resp.headers.set("content-type", Value::Static("text/event-stream"));
    resp.headers.set("cache-control", Value::Static("no-cache"));
    resp.headers.set("x-accel-buffering", Value::Static("no"));
    if binary {
        resp.headers.set(headers::STREAM_SSE_DATA_ENCODING, Value::Static("base64"));
    }
    resp.body = Body::Sse(Box::new(body));
    Ok(resp)
}

/// The event stream of one SSE response: each call to [`SseBody::next_frame`] yields the
/// next bytes to send, until the response ends.
pub struct SseBody {
    app: AppState,
    name: String,
    incarnation: u64,
    /// Where the next read starts.
    next: Offset,
    /// A chunk read before the response started.
    pending: Option<ReadChunk>,
    /// The offset the last `upToDate` control event reported.
    announced: Option<Offset>,
    /// `None` only while dropping, so that the stream sees this reader gone when touched.
    watch: Option<TailWatch>,
    binary: bool,
    client_cursor: Option<u64>,
    /// Highest cursor sent, so cursors never go backwards within a response.
    cursor: u64,
    reconnect_at: Option<Instant>,
    keepalive_every: Duration,
    /// The keep-alive timer. Re-armed only when it fires (to the last frame plus the
    /// interval), not after every frame: an event costs no timer operation.
    keepalive: Pin<Box<Sleep>>,
    /// When the last frame was handed out.
    last_frame: Instant,
    /// Resolves at the reconnect deadline or at shutdown. One future for the whole response,
    /// so waiting for an event registers no timer or waiter besides the tail's.
    end: Pin<Box<dyn Future<Output = ()> + Send>>,
    done: bool,
    /// Counts this response among the live SSE readers while it lives.
    _live: Option<crate::metrics::LiveGuard>,
}

impl std::fmt::Debug for SseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseBody").field("name", &self.name).field("next", &self.next).finish()
    }
}

impl Drop for SseBody {
    /// The reader is leaving: its stream's idle time starts now (§5.1).
    fn drop(&mut self) {
        self.watch = None;
        self.app.engine.touch(&self.name);
    }
}

enum Wake {
    Tail(ds_engine::Tail),
    KeepAlive,
    End,
}

impl SseBody {
    /// The next frame: events, or a keep-alive comment. `None` once the response is over
    /// (the stream closed, was deleted or replaced, the reconnect interval passed, or the
    /// server is shutting down).
    pub async fn next_frame(&mut self) -> Option<Bytes> {
        if self.done || self.reconnect_at.is_some_and(|at| Instant::now() >= at) {
            return None;
        }
        loop {
            let chunk = match self.pending.take() {
                Some(chunk) => chunk,
                None => {
                    let from = ReadFrom::At(self.next);
                    self.app
                        .engine
                        .read_at_most(&self.name, from, SSE_EVENT_BYTES_MAX)
                        .await
                        .ok()?
                }
            };
            if chunk.info.incarnation != self.incarnation {
                return None;
            }
            if !chunk.is_empty() || chunk.reaches_eof() || self.announced != Some(chunk.next) {
                self.last_frame = Instant::now();
                return Some(self.events(chunk));
            }
            match self.wait().await {
                Wake::Tail(tail) if tail.gone => return None,
                Wake::Tail(_) => {}
                Wake::KeepAlive => {
                    self.last_frame = Instant::now();
                    return Some(Bytes::from_static(KEEPALIVE));
                }
                Wake::End => {
                    self.done = true;
                    return None;
                }
            }
        }
    }

    /// Waits for the tail to move, a keep-alive tick, the reconnect deadline or shutdown.
    async fn wait(&mut self) -> Wake {
        let next = self.next;
        loop {
            let SseBody { watch, keepalive, end, .. } = self;
            let wait_tail = async {
                match watch.as_mut() {
                    Some(w) => w.wait_beyond(next).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                tail = wait_tail => return Wake::Tail(tail),
                () = keepalive.as_mut() => {}
                () = end.as_mut() => return Wake::End,
            }
            let due = self.last_frame + self.keepalive_every;
            let now = Instant::now();
            if now >= due {
                self.keepalive.as_mut().reset(now + self.keepalive_every);
                return Wake::KeepAlive;
            }
            self.keepalive.as_mut().reset(due);
        }
    }

    /// The data event (if the chunk has data) and its control event, as one frame.
    fn events(&mut self, chunk: ReadChunk) -> Bytes {
        let eof = chunk.reaches_eof();
        let up_to_date = chunk.up_to_date;
        let next = chunk.next;
        let mut out =
            BytesMut::with_capacity(chunk.parts.iter().map(Bytes::len).sum::<usize>() + 160);
        if !chunk.is_empty() {
            let body = chunk.into_body();
            if let Some(metrics) = &self.app.metrics {
                metrics.read(body.iter().map(|b| b.len() as u64).sum());
            }
            data_event(&mut out, &body, self.binary);
        }
        self.next = next;
        if up_to_date {
            self.announced = Some(next);
        }
        self.cursor = self.cursor.max(cursor::next(self.app.engine.now_ms(), self.client_cursor));
        control_event(&mut out, next, (!eof).then_some(self.cursor), up_to_date, eof);
        self.done = eof;
        out.freeze()
    }
}

/// Writes one `data` event.
fn data_event(out: &mut BytesMut, parts: &[Bytes], binary: bool) {
    out.put_slice(b"event: data\n");
    let joined;
    let payload: &[u8] = if let [one] = parts {
        one
    } else {
        joined = parts.concat();
        &joined
    };
    if binary {
        out.put_slice(b"data:");
        let encoded = base64::engine::general_purpose::STANDARD.encode(payload);
        out.put_slice(encoded.as_bytes());
        out.put_u8(b'\n');
    } else {
        for_each_line(payload, |line| {
            out.put_slice(b"data:");
            if line.first() == Some(&b' ') {
                out.put_u8(b' ');
            }
            out.put_slice(line);
            out.put_u8(b'\n');
        });
    }
    out.put_u8(b'\n');
}

/// Writes one `control` event.
fn control_event(
    out: &mut BytesMut,
    next: Offset,
    cursor: Option<u64>,
    up_to_date: bool,
    closed: bool,
) {
    out.put_slice(b"event: control\ndata:{\"streamNextOffset\":\"");
    out.put_slice(&next.encode());
    out.put_u8(b'"');
    if let Some(c) = cursor {
        out.put_slice(b",\"streamCursor\":\"");
        let mut digits = Vec::with_capacity(20);
        crate::response::write_decimal(&mut digits, c);
        out.put_slice(&digits);
        out.put_u8(b'"');
    }
    if up_to_date {
        out.put_slice(b",\"upToDate\":true");
    }
    if closed {
        out.put_slice(b",\"streamClosed\":true");
    }
    out.put_slice(b"}\n\n");
}

/// Calls `f` for each line, splitting on CRLF, CR and LF; an empty payload is one empty line.
fn for_each_line<'a>(payload: &'a [u8], mut f: impl FnMut(&'a [u8])) {
    let mut start = 0;
    let mut i = 0;
    while i < payload.len() {
        match payload[i] {
            b'\n' => {
                f(&payload[start..i]);
                start = i + 1;
            }
            b'\r' => {
                f(&payload[start..i]);
                if payload.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    f(&payload[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_event(payload: &str) -> String {
        let mut out = BytesMut::new();
        data_event(&mut out, &[Bytes::from(payload.to_owned())], false);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn payload_lines_cannot_inject_events() {
        let e = text_event("safe\r\n\r\nevent: control\rdata: {\"x\":1}\n\nend");
        assert_eq!(
            e,
            "event: data\ndata:safe\ndata:\ndata:event: control\ndata:data: {\"x\":1}\ndata:\ndata:end\n\n"
        );
        assert_eq!(e.matches("\n\n").count(), 1, "only the event terminator is a blank line");
    }

    #[test]
    fn leading_space_survives_sse_parsing() {
        assert_eq!(text_event(" x"), "event: data\ndata:  x\n\n");
    }

    #[test]
    fn binary_is_one_base64_line() {
        let mut out = BytesMut::new();
        data_event(&mut out, &[Bytes::from_static(b"Hel"), Bytes::from_static(b"lo")], true);
        assert_eq!(&out[..], b"event: data\ndata:SGVsbG8=\n\n");
    }

    #[test]
    fn control_fields() {
        let mut out = BytesMut::new();
        control_event(&mut out, Offset::at(255), Some(7), true, false);
        assert_eq!(
            &out[..],
            b"event: control\ndata:{\"streamNextOffset\":\"00000000000000ff_0000000000000000\",\"streamCursor\":\"7\",\"upToDate\":true}\n\n"
        );
        out.clear();
        control_event(&mut out, Offset::at(1), None, true, true);
        assert!(String::from_utf8_lossy(&out).contains("\"upToDate\":true,\"streamClosed\":true}"));
    }
}
