//! One connection of the fast front end: keep-alive, pipelining, bodies, and writing.
//!
//! Requests of a connection take effect in the order they were sent, and are answered in
//! that order. The one overlap is between appends: an append is begun (validated and
//! queued for commit, [`crate::protocol::AppendCall::begin`]) as soon as its body is in,
//! while earlier appends of the connection still wait for their commits, so that one sync
//! covers a whole pipeline of appends in the durable modes. Any other request first waits
//! until every earlier one is answered, so it sees their effects.
//!
//! Answers are gathered in one output buffer and written when the connection would
//! otherwise wait (for bytes, for a commit, for a long-poll), so a pipeline of requests is
//! answered with few writes. An answer that took effect is always written before the
//! connection closes, whatever follows it on the wire.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep};

use super::chunked::Decoder;
use super::head::{self, Framing, Scan};
use super::write::{self, BodyPlan, Reply};
use crate::body::{Received, Share};
use crate::error::ApiError;
use crate::io::WriteTimeout;
use crate::metrics::Observed;
use crate::protocol::{self, PendingAppend, Prepared};
use crate::request::Method;
use crate::response::{Body, Response};
use crate::sse::SseBody;
use crate::state::AppState;

/// Most appends of one connection waiting for their commits; the next request waits for
/// the oldest to be answered.
pub const PIPELINE_DEPTH_MAX: usize = 64;
/// Bytes read ahead of the request being served (pipelined requests); reading pauses beyond.
const READ_AHEAD_BYTES_MAX: usize = 256 * 1024;
/// Bodies up to this size are copied into the output buffer, to go out in one write with
/// the head; larger ones are written from their own buffers.
const INLINE_BODY_BYTES_MAX: usize = 16 * 1024;
/// Answers gathered before the output buffer is written even though more requests wait.
const OUT_BYTES_MAX: usize = 64 * 1024;
/// Largest body of an already refused request that is read and dropped to keep the
/// connection; a larger one is left unread and the connection closed.
const SKIP_BODY_BYTES_MAX: usize = 64 * 1024;
/// A `Content-Length` body at least this large is read into a buffer of its own, sized
/// exactly: the store may keep it by reference, and it must not pin the connection's
/// read buffer (or its spare capacity) with it.
const OWN_BUFFER_BODY_BYTES_MIN: usize = 64 * 1024;
/// After an answer that closes the connection while the client may still be sending, the
/// server reads (and drops) for this long, so the client sees the answer rather than a
/// reset.
const LINGER: std::time::Duration = std::time::Duration::from_millis(500);
/// An empty SETTINGS frame and a GOAWAY with `HTTP_1_1_REQUIRED` (RFC 9113 §6.5, §6.8): the
/// answer to an HTTP/2 preface sent after HTTP/1.1 requests on the same connection, or over
/// TLS that did not choose `h2` (a preface that opens a plain connection is handed over to
/// HTTP/2 instead).
const HTTP2_REFUSAL: &[u8] = &[
    0, 0, 0, 4, 0, 0, 0, 0, 0, // SETTINGS, empty
    0, 0, 8, 7, 0, 0, 0, 0, 0, // GOAWAY, 8 bytes, stream 0
    0, 0, 0, 0, 0, 0, 0, 0x0d, // last stream 0, HTTP_1_1_REQUIRED
];

/// A connection that opened with the HTTP/2 preface (h2c with prior knowledge, RFC 9113
/// §3.3), given back untouched for an HTTP/2 server: the socket, and what was read of it.
#[derive(Debug)]
pub struct Handover<T> {
    /// The connection.
    pub io: T,
    /// Bytes already read from it (the preface, and whatever followed), to be read first.
    pub read: BytesMut,
}

/// Who is at the other end of a connection.
#[derive(Clone, Copy, Debug, Default)]
pub struct Peer {
    /// The client's address, if known (for rate limits and the access log).
    pub ip: Option<std::net::IpAddr>,
    /// Whether the connection is TLS (a created stream's `Location` is then `https`).
    pub secure: bool,
}

/// Serves one connection (a TCP socket, a TLS stream, or any byte stream in tests) until it
/// closes; or, if it opens with the HTTP/2 preface, gives it back for an HTTP/2 server.
pub async fn serve<T: AsyncRead + AsyncWrite + Unpin>(
    app: AppState,
    io: T,
    peer: Peer,
) -> Option<Handover<T>> {
    let timeout = app.config.write_timeout;
    let mut conn = Conn {
        io: WriteTimeout::new(io, timeout),
        head_timer: Box::pin(tokio::time::sleep(app.config.header_read_timeout)),
        shutdown: Box::pin(app.shutting_down()),
        app: &app,
        rbuf: BytesMut::with_capacity(8 * 1024),
        out: Vec::with_capacity(4 * 1024),
        scanned: 0,
        inflight: VecDeque::new(),
        peer_done: false,
        closing: false,
        served: false,
        handover: false,
        peer,
    };
    // An I/O error means the client is gone (or stopped reading): nothing left to answer.
    if conn.run().await.is_ok() {
        if conn.handover {
            return Some(Handover { io: conn.io.into_inner(), read: conn.rbuf });
        }
        let _ = conn.close().await;
    }
    None
}

struct Conn<'a, T> {
    io: WriteTimeout<T>,
    /// The head timeout, one timer for the connection's life: it is re-armed only when it
    /// fires, to the time the current wait began plus the timeout, so a request costs no
    /// timer operation.
    head_timer: Pin<Box<Sleep>>,
    /// Resolves when the server starts shutting down; one waiter for the connection's life.
    shutdown: Pin<Box<dyn Future<Output = ()> + Send + 'a>>,
    /// Borrowed for the connection's life: a request's call borrows it while the
    /// connection reads on, with no reference count touched per request.
    app: &'a AppState,
    /// Bytes read and not yet used.
    rbuf: BytesMut,
    /// Answers not yet written.
    out: Vec<u8>,
    /// How far the search for the end of the next head got.
    scanned: usize,
    /// Appends begun and not yet answered, in request order.
    inflight: VecDeque<InFlight>,
    /// The client has closed its sending side.
    peer_done: bool,
    /// An answer already queued closes the connection: no further request is read.
    closing: bool,
    /// A request head has been read on this connection.
    served: bool,
    /// The connection opened with the HTTP/2 preface: give it back, untouched.
    handover: bool,
    /// Who the client is.
    peer: Peer,
}

struct InFlight {
    pending: PendingAppend,
    reply: Reply,
    observed: Observed,
}

/// What waiting for the next head found.
enum Wait {
    /// A complete head of this many bytes is at the start of the buffer.
    Head(usize),
    /// The connection is done (closed by the client, idle too long, or shutting down).
    Closed,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Conn<'_, T> {
    async fn run(&mut self) -> io::Result<()> {
        while !self.closing && self.serve_one().await? {}
        self.answer_all().await
    }

    /// Serves one request; `false` once the connection must close.
    async fn serve_one(&mut self) -> io::Result<bool> {
        let end = match self.wait_for_head().await {
            Ok(Wait::Head(end)) => end,
            Ok(Wait::Closed) => return Ok(false),
            Err(Refusal::Io(e)) => return Err(e),
            // Over TLS, HTTP/2 is chosen by ALPN or not at all (RFC 9113 §3.3).
            Err(Refusal::Http2) if !self.served && !self.peer.secure => {
                self.handover = true;
                return Ok(false);
            }
            Err(Refusal::Http2) => {
                self.answer_all().await?;
                self.out.extend_from_slice(HTTP2_REFUSAL);
                return Ok(false);
            }
            Err(Refusal::Api(e)) => return self.refuse(e).await,
        };
        self.served = true;
        let peer = self.peer;
        let parsed = head::parse(&self.rbuf[..end]).map(|mut h| {
            h.request.peer = peer.ip;
            h.request.secure = peer.secure;
            let reply = Reply {
                head_only: h.request.method == Method::Head,
                http10: h.http10,
                keep_alive: h.keep_alive,
            };
            let observed = Observed::of(self.app, &h.request);
            (protocol::prepare(self.app, &h.request), h.framing, reply, h.expect_continue, observed)
        });
        self.rbuf.advance(end);
        self.scanned = 0;
        let (prepared, framing, reply, expect_continue, observed) = match parsed {
            Ok(parsed) => parsed,
            Err(e) => return self.refuse(e).await,
        };
        let answered = prepared.is_answered();
        let (body, skipped) = match self.read_body(framing, answered, expect_continue).await? {
            Ok(read) => read,
            Err(e) => {
                self.answer_all().await?;
                self.respond(prepared.refuse(e), reply, observed).await?;
                return Ok(false);
            }
        };
        let keep = reply.keep_alive && !skipped && !self.shutting_down();
        let reply = Reply { keep_alive: keep, ..reply };
        match prepared {
            Prepared::Append(call) => {
                let pending = call.begin(self.app, body);
                self.inflight.push_back(InFlight { pending, reply, observed });
                self.answer_ready().await?;
                if self.inflight.len() >= PIPELINE_DEPTH_MAX {
                    self.answer_front().await?;
                }
                if self.out.len() >= OUT_BYTES_MAX {
                    self.flush().await?;
                }
                Ok(keep)
            }
            Prepared::Other(call) => {
                self.answer_all().await?;
                let app = self.app;
                let resp = self.until_done(call.run(app, body)).await?;
                // Shutdown may have begun while the call ran (a long-poll, say).
                let keep = keep && !self.shutting_down();
                let reply = Reply { keep_alive: keep, ..reply };
                let closes = self.respond(resp, reply, observed).await?;
                Ok(keep && !closes)
            }
        }
    }

    /// Answers a request whose head could not be read as one: every earlier request first,
    /// then the refusal; the connection closes, since where the next request would start is
    /// unknown.
    async fn refuse(&mut self, e: ApiError) -> io::Result<bool> {
        self.answer_all().await?;
        let reply = Reply { head_only: false, http10: false, keep_alive: false };
        let observed = Observed::unreadable(self.app, self.peer.ip);
        self.respond(protocol::refuse(e), reply, observed).await?;
        Ok(false)
    }

    fn shutting_down(&self) -> bool {
        *self.app.shutdown.borrow()
    }

    /// Waits until the buffer starts with a complete head, answering appends whose commits
    /// finish meanwhile.
    async fn wait_for_head(&mut self) -> Result<Wait, Refusal> {
        let timeout = self.app.config.header_read_timeout;
        // When waiting with nothing else to do began: the head must be in by then + timeout.
        let mut since: Option<Instant> = None;
        loop {
            let skip = head::leading_empty_lines(&self.rbuf);
            if skip > 0 {
                self.rbuf.advance(skip);
                self.scanned = 0;
            }
            match head::find_end(&self.rbuf, &mut self.scanned).map_err(Refusal::Api)? {
                Scan::Complete(end) => return Ok(Wait::Head(end)),
                Scan::Http2 => return Err(Refusal::Http2),
                Scan::Partial => {}
            }
            if self.peer_done {
                return Ok(Wait::Closed);
            }
            if !self.inflight.is_empty() {
                // Work is pending: no head timeout while it lasts.
                self.read_or_answer().await?;
                since = None;
                continue;
            }
            self.flush().await?;
            let since = *since.get_or_insert_with(Instant::now);
            let idle = self.rbuf.is_empty();
            let Conn { io, rbuf, head_timer, shutdown, .. } = self;
            let read = tokio::select! {
                r = io.read_buf(rbuf) => Some(r?),
                () = head_timer.as_mut() => None,
                () = shutdown.as_mut(), if idle => return Ok(Wait::Closed),
            };
            match read {
                Some(0) => self.peer_done = true,
                Some(_) => {}
                None => {
                    let due = since + timeout;
                    if Instant::now() >= due {
                        return Ok(Wait::Closed);
                    }
                    self.head_timer.as_mut().reset(due);
                }
            }
        }
    }

    /// Reads more bytes, or answers the oldest append if its commit finishes first.
    async fn read_or_answer(&mut self) -> io::Result<()> {
        self.flush().await?;
        let Conn { io, rbuf, inflight, .. } = self;
        let Some(front) = inflight.front_mut() else { return Ok(()) };
        let read = tokio::select! {
            biased;
            () = front.pending.settled() => None,
            r = io.read_buf(rbuf) => Some(r?),
        };
        match read {
            None => self.answer_ready().await,
            Some(0) => {
                self.peer_done = true;
                Ok(())
            }
            Some(_) => Ok(()),
        }
    }

    /// Reads the body as `framing` says, within the body limits (`answered`: the request is
    /// already refused, so its body is dropped, or left unread and the connection closed).
    /// `Ok(Err)` is a refusal to answer (then the connection closes); the flag says the body
    /// was left unread, so the connection closes.
    async fn read_body(
        &mut self,
        framing: Framing,
        answered: bool,
        expect_continue: bool,
    ) -> io::Result<Result<(Received, bool), ApiError>> {
        let app = self.app;
        let limits = &app.body_limits;
        match framing {
            Framing::Empty => Ok(Ok((Received::empty(), false))),
            Framing::Length(0) => Ok(Ok((Received::empty(), false))),
            Framing::Length(declared) => {
                let n = match limits.check_declared(declared) {
                    Ok(n) => n,
                    // A refused request needs no body: answer it and close.
                    Err(_) if answered => return Ok(Ok((Received::empty(), true))),
                    Err(e) => return Ok(Err(e)),
                };
                // A refused request's body is dropped only while that is cheap: a large one
                // (outside the body budget, since nothing keeps it) is left unread instead.
                if answered && (n > SKIP_BODY_BYTES_MAX || expect_continue && self.rbuf.is_empty())
                {
                    return Ok(Ok((Received::empty(), true)));
                }
                let deadline = Instant::now() + limits.timeout;
                let share = if answered {
                    None
                } else {
                    match limits.take(n, deadline).await {
                        Ok(share) => Some(share),
                        Err(e) => return Ok(Err(e)),
                    }
                };
                // Invited only once there is room for it in the budget.
                if expect_continue && self.rbuf.is_empty() {
                    self.send_continue().await?;
                }
                self.flush().await?;
                if n >= OWN_BUFFER_BODY_BYTES_MIN && self.rbuf.len() < n {
                    // The buffer holds only the start of this body: read the rest into an
                    // exact buffer of its own (reads never go past its capacity, so no byte
                    // of a next request can land in it).
                    let mut own = BytesMut::with_capacity(n);
                    own.extend_from_slice(&self.rbuf);
                    self.rbuf.clear();
                    while own.len() < n {
                        let read = tokio::time::timeout_at(deadline, self.io.read_buf(&mut own));
                        match read.await {
                            Err(_) => return Ok(Err(ApiError::body_timeout())),
                            Ok(Err(e)) => return Err(e),
                            Ok(Ok(0)) => {
                                self.peer_done = true;
                                return Ok(Err(ApiError::bad_framing("request body was cut off")));
                            }
                            Ok(Ok(_)) => {}
                        }
                    }
                    return Ok(Ok((Received::new(own.freeze(), share), false)));
                }
                while self.rbuf.len() < n {
                    self.rbuf.reserve(n - self.rbuf.len());
                    if let Err(e) = self.read_body_bytes(deadline).await? {
                        return Ok(Err(e));
                    }
                }
                let bytes = self.rbuf.split_to(n).freeze();
                Ok(Ok((Received::new(bytes, share), false)))
            }
            Framing::Chunked => {
                if answered {
                    // Decoding a body nobody reads is not worth it: answer and close.
                    return Ok(Ok((Received::empty(), true)));
                }
                if expect_continue && self.rbuf.is_empty() {
                    self.send_continue().await?;
                }
                self.flush().await?;
                self.read_chunked(limits).await
            }
        }
    }

    async fn read_chunked(
        &mut self,
        limits: &crate::body::BodyLimits,
    ) -> io::Result<Result<(Received, bool), ApiError>> {
        let deadline = Instant::now() + limits.timeout;
        let mut decoder = Decoder::default();
        let mut data = BytesMut::new();
        let mut share: Option<Share> = None;
        loop {
            let before = data.len();
            let used = match decoder.decode(&self.rbuf, |chunk| data.extend_from_slice(chunk)) {
                Ok(used) => used,
                Err(e) => return Ok(Err(e)),
            };
            self.rbuf.advance(used);
            if data.len() > limits.max_bytes {
                return Ok(Err(ApiError::body_too_large(limits.max_bytes)));
            }
            if data.len() > before {
                match limits.take(data.len() - before, deadline).await {
                    Ok(more) => match &mut share {
                        Some(s) => s.merge(more),
                        None => share = Some(more),
                    },
                    Err(e) => return Ok(Err(e)),
                }
            }
            if decoder.is_done() {
                return Ok(Ok((Received::new(data.freeze(), share), false)));
            }
            if let Err(e) = self.read_body_bytes(deadline).await? {
                return Ok(Err(e));
            }
        }
    }

    /// Reads more of a body before `deadline`: 408 past it, 400 if the client closes first.
    async fn read_body_bytes(&mut self, deadline: Instant) -> io::Result<Result<(), ApiError>> {
        match tokio::time::timeout_at(deadline, self.io.read_buf(&mut self.rbuf)).await {
            Err(_) => Ok(Err(ApiError::body_timeout())),
            Ok(Err(e)) => Err(e),
            Ok(Ok(0)) => {
                self.peer_done = true;
                Ok(Err(ApiError::bad_framing("request body was cut off")))
            }
            Ok(Ok(_)) => Ok(Ok(())),
        }
    }

    /// `100 Continue`, after every earlier answer (answers go out in order).
    async fn send_continue(&mut self) -> io::Result<()> {
        self.answer_all().await?;
        self.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        self.flush().await
    }

    /// Runs `call` to its answer. Meanwhile the connection keeps reading (pipelined
    /// requests wait in the buffer), so that a client that resets is noticed and its call
    /// dropped; a client that only closes its sending side still gets its answer.
    async fn until_done(&mut self, call: impl Future<Output = Response>) -> io::Result<Response> {
        self.flush().await?;
        let mut call = std::pin::pin!(call);
        loop {
            let reading = !self.peer_done && self.rbuf.len() < READ_AHEAD_BYTES_MAX;
            let Conn { io, rbuf, .. } = self;
            let read = tokio::select! {
                biased;
                resp = &mut call => return Ok(resp),
                r = io.read_buf(rbuf), if reading => r?,
            };
            if read == 0 {
                self.peer_done = true;
            }
        }
    }

    /// Answers the appends at the front whose commits are done, in order.
    async fn answer_ready(&mut self) -> io::Result<()> {
        while self.inflight.front().is_some_and(|f| !f.pending.is_pending()) {
            self.answer_front().await?;
        }
        Ok(())
    }

    /// Answers the oldest append, waiting for its commit (earlier answers are written
    /// first, so they do not wait with it).
    async fn answer_front(&mut self) -> io::Result<()> {
        let Some(InFlight { pending, reply, observed }) = self.inflight.pop_front() else {
            return Ok(());
        };
        if pending.is_pending() {
            self.flush().await?;
        }
        let resp = pending.finish(self.app).await;
        let (closes, rest) = self.render(resp, reply, observed);
        self.closing |= closes;
        if let Some((plan, body)) = rest {
            self.send_body(plan, body).await?;
        }
        Ok(())
    }

    /// Answers every append still waiting.
    async fn answer_all(&mut self) -> io::Result<()> {
        while !self.inflight.is_empty() {
            self.answer_front().await?;
        }
        Ok(())
    }

    /// Writes one answer (into the output buffer, or out at once for large and streamed
    /// bodies); `true` if the connection must close after it.
    async fn respond(
        &mut self,
        resp: Response,
        reply: Reply,
        observed: Observed,
    ) -> io::Result<bool> {
        let (closes, rest) = self.render(resp, reply, observed);
        if let Some((plan, body)) = rest {
            self.send_body(plan, body).await?;
        }
        Ok(closes || self.closing)
    }

    /// The synchronous part of [`Conn::respond`]: the head and a small body go into the
    /// output buffer; a large or streamed body is returned to be sent. Kept apart so that the
    /// answer (a header list held in place) is not moved into a future on the common path.
    fn render(
        &mut self,
        resp: Response,
        reply: Reply,
        observed: Observed,
    ) -> (bool, Option<(BodyPlan, Body)>) {
        observed.answered(self.app, resp.status);
        let plan = write::head(&mut self.out, &resp, reply);
        let closes = resp.close || !reply.keep_alive || plan.closes();
        let rest = match (plan, resp.body) {
            (BodyPlan::None, _) | (_, Body::Empty) => None,
            (_, Body::Full(bytes)) if bytes.len() <= INLINE_BODY_BYTES_MAX => {
                self.out.extend_from_slice(&bytes);
                None
            }
            (plan, body) => Some((plan, body)),
        };
        (closes, rest)
    }

    /// Sends a body [`Conn::render`] left: large buffers with vectored writes, SSE frame
    /// by frame.
    async fn send_body(&mut self, plan: BodyPlan, body: Body) -> io::Result<()> {
        match body {
            Body::Empty => Ok(()),
            Body::Full(bytes) => self.write_parts(&[bytes]).await,
            Body::Parts(parts) => self.write_parts(&parts).await,
            Body::Sse(sse) => self.stream_sse(sse, plan == BodyPlan::Chunked).await,
        }
    }

    /// Writes the output buffer and then `parts`, with vectored writes.
    async fn write_parts(&mut self, parts: &[Bytes]) -> io::Result<()> {
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(parts.len() + 1);
        slices.push(IoSlice::new(&self.out));
        slices.extend(parts.iter().map(|p| IoSlice::new(p)));
        write_all_vectored(&mut self.io, &mut slices).await?;
        self.out.clear();
        Ok(())
    }

    /// Streams an SSE body, each frame written as soon as it is ready. Ends when the body
    /// does, or when the client goes away.
    async fn stream_sse(&mut self, mut sse: Box<SseBody>, chunked: bool) -> io::Result<()> {
        self.flush().await?;
        loop {
            let frame = {
                let mut next = std::pin::pin!(sse.next_frame());
                loop {
                    let reading = !self.peer_done && self.rbuf.len() < READ_AHEAD_BYTES_MAX;
                    let Conn { io, rbuf, .. } = self;
                    let read = tokio::select! {
                        biased;
                        frame = &mut next => break frame,
                        r = io.read_buf(rbuf), if reading => r?,
                    };
                    if read == 0 {
                        // The client is gone: an SSE stream has no one to go to, and its
                        // chunked body is left unterminated, so nothing may follow it.
                        self.peer_done = true;
                        self.closing = true;
                        return Ok(());
                    }
                }
            };
            let Some(frame) = frame else { break };
            if chunked {
                write::chunk_size(&mut self.out, frame.len());
            }
            if frame.len() <= INLINE_BODY_BYTES_MAX {
                // One plain write of a small event rather than a vector of three.
                self.out.extend_from_slice(&frame);
                if chunked {
                    self.out.extend_from_slice(b"\r\n");
                }
                self.flush().await?;
            } else if chunked {
                self.write_parts(&[frame, Bytes::from_static(b"\r\n")]).await?;
            } else {
                self.write_parts(&[frame]).await?;
            }
        }
        if chunked {
            self.out.extend_from_slice(b"0\r\n\r\n");
        }
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.io.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Writes what is left and closes. The client may still be sending (the rest of a
    /// refused body, requests pipelined at shutdown): read and drop for a moment, so that
    /// closing with unread bytes does not reset the connection before the client has read
    /// the answers.
    async fn close(&mut self) -> io::Result<()> {
        self.flush().await?;
        self.io.shutdown().await?;
        // Unread bytes (a refused body, pipelined requests at shutdown) would make the
        // close a reset, which can destroy answers already sent but not yet read.
        if !self.peer_done {
            let until = Instant::now() + LINGER;
            let mut scratch = [0u8; 16 * 1024];
            let mut budget = 1usize << 20;
            while budget > 0 {
                match tokio::time::timeout_at(until, self.io.read(&mut scratch)).await {
                    Ok(Ok(n)) if n > 0 => budget = budget.saturating_sub(n),
                    _ => break,
                }
            }
        }
        Ok(())
    }
}

/// Why no request head could be read.
enum Refusal {
    Io(io::Error),
    Http2,
    Api(ApiError),
}

impl From<io::Error> for Refusal {
    fn from(e: io::Error) -> Refusal {
        Refusal::Io(e)
    }
}

/// Writes every slice, however the socket splits the writes.
async fn write_all_vectored<T: AsyncWrite + Unpin>(
    io: &mut WriteTimeout<T>,
    mut slices: &mut [IoSlice<'_>],
) -> io::Result<()> {
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        let n = io.write_vectored(slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, n);
    }
    Ok(())
}
