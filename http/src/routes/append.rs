//! `POST /v1/stream/{name}`: append, close, or both (§5.2, §5.3, §5.2.1).
//!
//! In two steps, so that a transport can pipeline: [`Append::begin`] makes the append take
//! effect (or refuses it) at once, and [`Begun::finish`] waits until it is as durable as the
//! mode promises before answering.

use ds_engine::{AppendKind, AppendRequest, AppendTicket, ContentType, ProducerRequest};

use crate::body::Received;
use crate::error::ApiError;
use crate::headers;
use crate::request::RequestHeaders;
use crate::response::{Response, Status};
use crate::state::AppState;

/// A parsed append request, waiting for its body.
#[derive(Debug)]
pub struct Append {
    name: String,
    /// §5.2: with an empty body the Content-Type MUST NOT cause a rejection, so its parse
    /// error only counts once the body turns out to hold data.
    content_type: Result<Option<ContentType>, ApiError>,
    stream_seq: Option<bytes::Bytes>,
    producer: Option<ProducerRequest>,
    close: bool,
}

impl Append {
    /// Parses the headers of an append to `name`.
    ///
    /// # Errors
    /// 400 for a malformed `Stream-Seq` or producer header.
    pub fn parse(name: String, h: &RequestHeaders<'_>) -> Result<Append, ApiError> {
        let content_type = headers::content_type(h);
        let stream_seq = headers::stream_seq(h)?;
        let producer = headers::producer(h)?;
        let close = headers::stream_closed(h)?;
        Ok(Append { name, content_type, stream_seq, producer, close })
    }

    /// Makes the append take effect now, or refuses it. The body's share of the budget is
    /// given back here: the store holds its own copy from now on.
    ///
    /// # Errors
    /// Every refusal of §5.2: 400, 403, 404, 409, 413.
    pub fn begin(self, app: &AppState, body: Received) -> Result<Begun, ApiError> {
        let content_type = if body.bytes.is_empty() {
            self.content_type.ok().flatten()
        } else {
            self.content_type?
        };
        let producer = self.producer.is_some();
        let req = AppendRequest {
            content_type,
            body: body.bytes.clone(),
            stream_seq: self.stream_seq,
            producer: self.producer,
            close: self.close,
        };
        let ticket = app.engine.begin_append(&self.name, req)?;
        drop(body);
        Ok(Begun { ticket, producer })
    }
}

/// An append that has taken effect, waiting for its commit.
#[derive(Debug)]
pub struct Begun {
    ticket: AppendTicket,
    producer: bool,
}

impl Begun {
    /// Whether [`Begun::finish`] still waits for a commit.
    #[must_use]
    pub fn is_pending(&self) -> bool {
        self.ticket.is_pending()
    }

    /// Waits for the commit's outcome (cancel-safe; see [`AppendTicket::settled`]).
    pub async fn settled(&mut self) {
        self.ticket.settled().await;
    }

    /// The answer, and what the append did: plain appends answer 204; producer appends
    /// 200, and 204 for duplicates and close-only requests.
    ///
    /// # Errors
    /// The commit failed (503 or 500).
    pub async fn finish(self) -> Result<(Response, AppendKind), ApiError> {
        let done = self.ticket.durable().await?;
        let status = match (self.producer, done.kind) {
            (true, AppendKind::Appended) => Status::OK,
            _ => Status::NO_CONTENT,
        };
        let mut resp = Response::empty(status);
        let h = &mut resp.headers;
        h.set(headers::STREAM_NEXT_OFFSET, headers::offset(done.tail));
        if done.closed {
            h.set(headers::STREAM_CLOSED, headers::TRUE);
        }
        if let Some(claim) = done.producer {
            h.set(headers::PRODUCER_EPOCH, headers::number(claim.epoch));
            h.set(headers::PRODUCER_SEQ, headers::number(claim.seq));
        }
        Ok((resp, done.kind))
    }
}
