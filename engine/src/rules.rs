//! The write rules every store shares, as pure functions over a stream's writer state:
//! closure (§4.1, §5.3), content-type matching, `Stream-Seq` (§5.2), idempotent producers
//! (§5.2.1) and create idempotency (§5.1). Stores call [`plan_append`] under the stream's
//! write lock and apply the plan with [`WriterState::apply`] once the data is stored.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::offset::Offset;
use crate::payload::Payload;
use crate::producer::{self, ProducerClaim, ProducerState, Verdict};
use crate::store::{AppendKind, AppendRequest, ContentType, CreateRequest, Expiry, ForkOf};

/// Everything about a stream that decides whether a write is accepted, apart from its data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriterState {
    /// The stream is closed.
    pub closed: bool,
    /// The producer request that closed the stream, so that its retry is a duplicate.
    pub closed_by: Option<(Arc<str>, ProducerClaim)>,
    /// Producer states by `Producer-Id`.
    pub producers: HashMap<Arc<str>, ProducerState>,
    /// The last `Stream-Seq` accepted (scope: the whole stream).
    pub last_stream_seq: Option<Bytes>,
}

/// What a store must do with an accepted append request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Append the payload (which may be empty for a close-only request), then apply.
    Write {
        /// Whether the request also closes the stream.
        close: bool,
    },
    /// Change nothing and acknowledge as a duplicate.
    Duplicate {
        /// For producer retries: the producer's epoch and highest accepted sequence.
        producer: Option<ProducerClaim>,
    },
}

/// Decides what an append request does to a stream with `state` and `content_type`.
/// Checks run in the protocol's order of precedence (§5.2): closure first, then content
/// type, body validity, producer fencing and sequencing, and `Stream-Seq`.
///
/// # Errors
/// The first rule the request breaks.
pub fn plan_append(
    state: &WriterState,
    content_type: &ContentType,
    tail: Offset,
    req: &AppendRequest,
    payload: &Result<Payload>,
) -> Result<Plan> {
    let close_only = req.close && req.body.is_empty();
    if state.closed {
        if let Some(p) = &req.producer {
            if state.closed_by.as_ref().is_some_and(|(id, c)| *id == p.id && *c == p.claim) {
                return Ok(Plan::Duplicate { producer: Some(p.claim) });
            }
            // A fenced-off producer is told it is fenced (403, as the suite expects) and,
            // through `closed_tail`, that the stream is closed (§5.2.1 asks for the latter).
            if let Some(s) = state.producers.get(&p.id)
                && p.claim.epoch < s.epoch
            {
                return Err(Error::StaleEpoch { current: s.epoch, closed_tail: Some(tail) });
            }
        }
        if close_only {
            return Ok(Plan::Duplicate { producer: None });
        }
        return Err(Error::StreamClosed { tail });
    }
    if !req.body.is_empty() {
        match &req.content_type {
            Some(ct) if ct.matches(content_type) => {}
            Some(_) => return Err(Error::ContentTypeMismatch),
            None => return Err(Error::MissingContentType),
        }
    } else if !req.close {
        return Err(Error::EmptyBody);
    }
    if let Err(e) = payload {
        return Err(e.clone());
    }
    if let Some(p) = &req.producer {
        match producer::check(state.producers.get(&p.id).copied(), p.claim) {
            Verdict::Accept => {}
            Verdict::Duplicate { last_seq } => {
                let claim = ProducerClaim { epoch: p.claim.epoch, seq: last_seq };
                return Ok(Plan::Duplicate { producer: Some(claim) });
            }
            Verdict::StaleEpoch { current } => {
                return Err(Error::StaleEpoch { current, closed_tail: None });
            }
            Verdict::EpochStartNotZero => return Err(Error::EpochStartNotZero),
            Verdict::SeqGap { expected, received } => {
                return Err(Error::SeqGap { expected, received });
            }
        }
    }
    if let (Some(seq), Some(last)) = (&req.stream_seq, &state.last_stream_seq)
        && seq <= last
    {
        return Err(Error::SeqRegression);
    }
    Ok(Plan::Write { close: req.close })
}

impl WriterState {
    /// Records an accepted [`Plan::Write`]: producer state, `Stream-Seq` and closure.
    /// Returns what kind of acknowledgement the request gets.
    pub fn apply(&mut self, req: &AppendRequest, close: bool, wrote_data: bool) -> AppendKind {
        if let Some(p) = &req.producer {
            self.producers.insert(p.id.clone(), ProducerState::accept(p.claim));
        }
        if let Some(seq) = &req.stream_seq {
            self.last_stream_seq = Some(seq.clone());
        }
        if close {
            self.closed = true;
            self.closed_by = req.producer.as_ref().map(|p| (p.id.clone(), p.claim));
        }
        if wrote_data { AppendKind::Appended } else { AppendKind::Closed }
    }
}

/// What one accepted write changes in the writer state, kept beside its data so that a
/// store can apply it again: to its durable state once the write is committed, or to a
/// rebuilt state at recovery.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Effect {
    /// The producer that wrote it, and its claim.
    pub producer: Option<(Arc<str>, ProducerClaim)>,
    /// Its `Stream-Seq`.
    pub stream_seq: Option<Bytes>,
    /// Whether it closed the stream.
    pub closes: bool,
}

impl Effect {
    /// The effect of an accepted request.
    #[must_use]
    pub fn of_request(req: &AppendRequest, closes: bool) -> Effect {
        Effect {
            producer: req.producer.as_ref().map(|p| (p.id.clone(), p.claim)),
            stream_seq: req.stream_seq.clone(),
            closes,
        }
    }

    /// Applies it to a writer state, exactly as [`WriterState::apply`] did when accepted.
    pub fn replay(&self, writer: &mut WriterState) {
        if let Some((id, claim)) = &self.producer {
            writer.producers.insert(id.clone(), ProducerState::accept(*claim));
        }
        if let Some(seq) = &self.stream_seq {
            writer.last_stream_seq = Some(seq.clone());
        }
        if self.closes {
            writer.closed = true;
            writer.closed_by = self.producer.clone();
        }
    }
}

/// Whether a create request matches an existing stream's configuration (§5.1): content type,
/// expiry and closure status. The initial body is not compared.
#[must_use]
pub fn same_config(
    content_type: &ContentType,
    expiry: Expiry,
    closed: bool,
    req: &CreateRequest,
) -> bool {
    content_type.matches(&req.content_type) && expiry == req.expiry && closed == req.closed
}

/// Whether a create request (`req`, forking as `fork`) asks for exactly the existing
/// stream, which has `content_type`, `expiry`, closure `closed` and fork `had_fork`: the same
/// configuration (§5.1) and, for forks, the same fork request (§4.2).
#[must_use]
pub fn same_stream(
    content_type: &ContentType,
    expiry: Expiry,
    closed: bool,
    had_fork: Option<&ForkOf>,
    req: &CreateRequest,
    fork: Option<&ForkOf>,
) -> bool {
    let same_fork = match (had_fork, fork) {
        (None, None) => true,
        (Some(had), Some(asked)) => had.same_request(asked),
        _ => false,
    };
    same_fork && same_config(content_type, expiry, closed, req)
}

/// Whether a refusal may rest on what earlier appends did: such a refusal waits for the
/// commit of any accepted state that is not durable yet. The others depend only on the
/// request and the stream's fixed configuration.
pub(crate) fn rests_on_state(e: &Error) -> bool {
    !matches!(
        e,
        Error::InvalidJson(_)
            | Error::EmptyJsonArray
            | Error::EmptyBody
            | Error::ContentTypeMismatch
            | Error::MissingContentType
    )
}

/// Whether an append's `outcome` is answered at once: when nothing the stream accepted is
/// still waiting for its commit (`settled`), or when it is a refusal that does not rest on
/// accepted state. Otherwise a duplicate waits until what it duplicates is durable, and a
/// refusal until the state it rests on is.
pub(crate) fn answer_now(
    outcome: &crate::error::Result<crate::store::Appended>,
    settled: bool,
) -> bool {
    settled || outcome.as_ref().is_err_and(|e| !rests_on_state(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(s: &str) -> ContentType {
        ContentType::new(s)
    }

    fn append(body: &str) -> AppendRequest {
        AppendRequest::data("text/plain", body.to_owned())
    }

    fn with_producer(req: AppendRequest, id: &str, epoch: u64, seq: u64) -> AppendRequest {
        req.with_producer(id, epoch, seq)
    }

    fn plan(state: &WriterState, req: &AppendRequest) -> Result<Plan> {
        let payload = Ok(Payload::opaque(req.body.clone()));
        plan_append(state, &ct("text/plain"), Offset::at(7), req, &payload)
    }

    fn closed_by(id: &str, epoch: u64, seq: u64) -> WriterState {
        let mut s = WriterState::default();
        let req = with_producer(append("x"), id, epoch, seq);
        s.apply(&req, true, true);
        s
    }

    #[test]
    fn closed_stream_error_precedes_content_type_mismatch() {
        let state = WriterState { closed: true, ..WriterState::default() };
        let mut req = append("x");
        req.content_type = Some(ct("application/json"));
        assert!(matches!(plan(&state, &req), Err(Error::StreamClosed { .. })));
    }

    #[test]
    fn close_only_on_closed_stream_is_idempotent() {
        let state = WriterState { closed: true, ..WriterState::default() };
        let mut req = append("");
        req.close = true;
        req.content_type = Some(ct("application/x-anything"));
        assert_eq!(plan(&state, &req), Ok(Plan::Duplicate { producer: None }));
    }

    #[test]
    fn retry_of_closing_producer_request_is_a_duplicate() {
        let state = closed_by("p", 0, 3);
        let mut retry = with_producer(append("different body"), "p", 0, 3);
        retry.close = true;
        let claim = ProducerClaim { epoch: 0, seq: 3 };
        assert_eq!(plan(&state, &retry), Ok(Plan::Duplicate { producer: Some(claim) }));
        let other = with_producer(append("x"), "p", 0, 4);
        assert!(matches!(plan(&state, &other), Err(Error::StreamClosed { .. })));
        let stranger = with_producer(append("x"), "q", 0, 3);
        assert!(matches!(plan(&state, &stranger), Err(Error::StreamClosed { .. })));
    }

    #[test]
    fn stale_epoch_on_closed_stream_is_fenced_not_closed() {
        let mut state = closed_by("p", 2, 0);
        state.producers.insert("p".into(), ProducerState { epoch: 2, last_seq: 0 });
        let zombie = with_producer(append("x"), "p", 1, 5);
        let fenced = Error::StaleEpoch { current: 2, closed_tail: Some(Offset::at(7)) };
        assert_eq!(plan(&state, &zombie), Err(fenced));
    }

    #[test]
    fn content_type_ignores_case_and_parameters() {
        let state = WriterState::default();
        let mut req = append("x");
        req.content_type = Some(ct("TEXT/Plain; charset=utf-8"));
        assert_eq!(plan(&state, &req), Ok(Plan::Write { close: false }));
        req.content_type = Some(ct("text/html"));
        assert_eq!(plan(&state, &req), Err(Error::ContentTypeMismatch));
        req.content_type = None;
        assert_eq!(plan(&state, &req), Err(Error::MissingContentType));
    }

    #[test]
    fn empty_body_needs_close() {
        let state = WriterState::default();
        assert_eq!(plan(&state, &append("")), Err(Error::EmptyBody));
        let mut close = append("");
        close.close = true;
        close.content_type = None;
        assert_eq!(plan(&state, &close), Ok(Plan::Write { close: true }));
    }

    #[test]
    fn producer_duplicate_wins_over_stream_seq() {
        let mut state = WriterState::default();
        let mut first = with_producer(append("a"), "p", 0, 0);
        first.stream_seq = Some(Bytes::from_static(b"5"));
        assert_eq!(plan(&state, &first), Ok(Plan::Write { close: false }));
        state.apply(&first, false, true);
        let claim = ProducerClaim { epoch: 0, seq: 0 };
        assert_eq!(plan(&state, &first), Ok(Plan::Duplicate { producer: Some(claim) }));
    }

    #[test]
    fn stream_seq_is_bytewise_and_strict() {
        let mut state = WriterState::default();
        let mut req = append("a");
        for (seq, ok) in [("2", true), ("10", false), ("2", false), ("3", true), ("a", true)] {
            req.stream_seq = Some(Bytes::from(seq.to_owned()));
            let verdict = plan(&state, &req);
            assert_eq!(verdict.is_ok(), ok, "seq {seq}");
            if ok {
                state.apply(&req, false, true);
            }
        }
    }

    #[test]
    fn create_config_compares_type_expiry_and_closure() {
        let req = CreateRequest {
            content_type: ct("Text/Plain"),
            expiry: Expiry::IdleTtl { secs: 5 },
            closed: false,
            body: Bytes::new(),
        };
        let ttl = Expiry::IdleTtl { secs: 5 };
        assert!(same_config(&ct("text/plain"), ttl, false, &req));
        assert!(!same_config(&ct("text/plain"), ttl, true, &req));
        assert!(!same_config(&ct("text/plain"), Expiry::Never, false, &req));
        assert!(!same_config(&ct("application/json"), ttl, false, &req));
    }
}
