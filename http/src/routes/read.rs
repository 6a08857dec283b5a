//! `GET /v1/stream/{name}`: catch-up (§5.6), long-poll (§5.7) and SSE (§5.8, in `sse`).

use ds_engine::{Expiry, ReadChunk, ReadFrom, StreamInfo, Tail};

use crate::compress::Encoding;
use crate::error::ApiError;
use crate::query::{Live, ReadQuery};
use crate::response::{Response, Status};
use crate::state::AppState;
use crate::{cursor, headers, respond, sse};

/// A parsed read request.
#[derive(Debug)]
pub struct Read {
    name: String,
    query: ReadQuery,
    if_none_match: Option<String>,
    encoding: Option<Option<Encoding>>,
}

impl Read {
    /// A read of `name` as `query` asks, with the request's `If-None-Match`.
    #[must_use]
    pub fn new(name: String, query: ReadQuery, if_none_match: Option<String>) -> Read {
        Read { name, query, if_none_match, encoding: None }
    }

    /// What [`Read::compressed`] set: `None` if the answer is sent as it is, unmarked.
    #[must_use]
    pub fn encoding(&self) -> Option<Option<Encoding>> {
        self.encoding
    }

    /// The same read answered compressed in `encoding` when worth it (`None`: identity),
    /// and marked `Vary: Accept-Encoding`; SSE reads are never compressed.
    #[must_use]
    pub fn compressed(mut self, encoding: Option<Encoding>) -> Read {
        if self.query.live != Live::Sse {
            self.encoding = Some(encoding);
        }
        self
    }

    /// Reads from the query's offset, in the mode `live` asks for.
    ///
    /// # Errors
    /// 404, 410, 400 for an offset the stream does not have.
    pub async fn run(self, app: &AppState) -> Result<Response, ApiError> {
        let Read { name, query, if_none_match, .. } = self;
        match query.live {
            Live::No => catch_up(app, &name, &query, if_none_match.as_deref()).await,
            Live::LongPoll => long_poll(app, &name, &query).await,
            Live::Sse => sse::respond(app.clone(), name, query).await,
        }
    }
}

async fn catch_up(
    app: &AppState,
    name: &str,
    q: &ReadQuery,
    if_none_match: Option<&str>,
) -> Result<Response, ApiError> {
    let chunk = app.engine.read(name, q.from).await?;
    // Catch-up reads carry a cursor too (§5.6, MAY), so a client that goes live next can
    // echo it from the start.
    let cursor = Some(cursor::next(app.engine.now_ms(), q.cursor));
    if q.from == ReadFrom::Tail {
        // `offset=now`: never cached and no ETag (§8), the body is empty (`[]` for JSON).
        return Ok(chunk_response(app, chunk, cursor, false));
    }
    let etag = respond::etag(&chunk);
    if respond::etag_matches(if_none_match, &etag) {
        let mut resp = Response::empty(Status::NOT_MODIFIED);
        let cacheable = !chunk.is_empty();
        read_headers(app, &mut resp, &chunk, cursor, cacheable);
        resp.headers.set("etag", etag);
        return Ok(resp);
    }
    let mut resp = chunk_response(app, chunk, cursor, true);
    resp.headers.set("etag", etag);
    Ok(resp)
}

async fn long_poll(app: &AppState, name: &str, q: &ReadQuery) -> Result<Response, ApiError> {
    let _renew_when_done = TouchOnDrop { app, name };
    // Subscribe before reading, so an append between the two still wakes us; if the stream
    // was replaced in between, the watch belongs to the wrong stream: take both again.
    let mut attempts = 0;
    let (mut watch, first) = loop {
        let (info, watch) = app.engine.subscribe(name).await?;
        let first = app.engine.read(name, q.from).await?;
        attempts += 1;
        if first.info.incarnation == info.incarnation || attempts == 3 {
            break (watch, first);
        }
    };
    let cursor = cursor::next(app.engine.now_ms(), q.cursor);
    if !first.is_empty() {
        return Ok(live_chunk(app, first, cursor));
    }
    if first.reaches_eof() {
        return Ok(no_content(first.next, true, None));
    }
    let at = first.next;
    // The client may ask for a shorter wait (§5.7 `timeout`), never a longer one.
    let wait =
        q.timeout.map_or(app.config.long_poll_timeout, |t| t.min(app.config.long_poll_timeout));
    let _waiting = app.metrics.as_ref().map(|m| m.live(crate::metrics::LiveKind::long_poll));
    let woke = tokio::select! {
        tail = watch.wait_beyond(at) => Some(tail),
        () = tokio::time::sleep(wait) => None,
        () = app.shutting_down() => None,
    };
    match woke {
        None => Ok(no_content(at, false, Some(cursor))),
        Some(Tail { gone: true, .. }) => Err(ApiError::not_found("stream was deleted")),
        Some(_) => {
            let chunk = app.engine.read(name, ReadFrom::At(at)).await?;
            if chunk.is_empty() {
                let closed = chunk.reaches_eof();
                return Ok(no_content(chunk.next, closed, (!closed).then_some(cursor)));
            }
            Ok(live_chunk(app, chunk, cursor))
        }
    }
}

/// Renews the stream's sliding TTL when a long-poll ends, however it ends: a stream with a
/// reader waiting on it is in use (§5.1), and its idle time starts when the reader leaves.
struct TouchOnDrop<'a> {
    app: &'a AppState,
    name: &'a str,
}

impl Drop for TouchOnDrop<'_> {
    fn drop(&mut self) {
        self.app.engine.touch(self.name);
    }
}

/// A long-poll 200: the chunk with a cursor and an ETag.
fn live_chunk(app: &AppState, chunk: ReadChunk, cursor: u64) -> Response {
    let etag = respond::etag(&chunk);
    let mut resp = chunk_response(app, chunk, Some(cursor), true);
    resp.headers.set("etag", etag);
    resp
}

/// 200 with the chunk. `cacheable` says whether a chunk with data may be cached under the
/// configured policy; empty chunks and `offset=now` never are.
fn chunk_response(
    app: &AppState,
    chunk: ReadChunk,
    cursor: Option<u64>,
    cacheable: bool,
) -> Response {
    let mut resp = Response::empty(Status::OK);
    let cacheable = cacheable && !chunk.is_empty();
    read_headers(app, &mut resp, &chunk, cursor, cacheable);
    resp.body = respond::body_from_parts(chunk.into_body());
    resp
}

fn read_headers(
    app: &AppState,
    resp: &mut Response,
    chunk: &ReadChunk,
    cursor: Option<u64>,
    cacheable: bool,
) {
    let h = &mut resp.headers;
    h.set("content-type", respond::content_type(&chunk.info));
    h.set(headers::STREAM_NEXT_OFFSET, headers::offset(chunk.next));
    if chunk.up_to_date {
        h.set(headers::STREAM_UP_TO_DATE, headers::TRUE);
    }
    if chunk.reaches_eof() {
        h.set(headers::STREAM_CLOSED, headers::TRUE);
    } else if let Some(c) = cursor {
        h.set(headers::STREAM_CURSOR, headers::number(c));
    }
    if cacheable {
        let lifetime = lifetime_secs(&chunk.info, app.engine.now_ms());
        h.set("cache-control", app.config.cache_control.cacheable_value(lifetime));
    }
}

/// Seconds until the stream ends if nobody touches it again: a cached copy of a read does
/// not renew a sliding TTL (§5.1), so a cache must not keep it longer.
fn lifetime_secs(info: &StreamInfo, now_ms: u64) -> Option<u64> {
    match info.expiry {
        Expiry::Never => None,
        Expiry::IdleTtl { secs } => Some(secs),
        Expiry::At { unix_ms } => Some(unix_ms.saturating_sub(now_ms) / 1000),
    }
}

/// A long-poll 204: caught up at `next` (and at EOF if `closed`).
fn no_content(next: ds_engine::Offset, closed: bool, cursor: Option<u64>) -> Response {
    let mut resp = Response::empty(Status::NO_CONTENT);
    let h = &mut resp.headers;
    h.set(headers::STREAM_NEXT_OFFSET, headers::offset(next));
    h.set(headers::STREAM_UP_TO_DATE, headers::TRUE);
    if closed {
        h.set(headers::STREAM_CLOSED, headers::TRUE);
    }
    if let Some(c) = cursor {
        h.set(headers::STREAM_CURSOR, headers::number(c));
    }
    resp
}
