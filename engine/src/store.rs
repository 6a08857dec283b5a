//! The storage backend contract, and the request and result types that cross it.
//!
//! Every mutation is one call that either fully happens or does not: a store validates the
//! request against the stream's state and applies it under that stream's write lock, so a
//! refused request leaves no trace and an accepted one is complete before the call returns.
//! An append is acknowledged only once it is as durable as the mode promises: its call
//! returns an [`AppendTicket`] that resolves then.

use std::sync::Arc;

use bytes::Bytes;

use crate::clock::UnixMs;
use crate::error::Result;
use crate::notify::TailWatch;
use crate::offset::{Lineage, Offset, ReadFrom};
use crate::payload::Payload;
use crate::producer::ProducerClaim;

/// How a stream expires (§5.1). `Stream-TTL` and `Stream-Expires-At` are exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Expiry {
    /// Never expires.
    #[default]
    Never,
    /// Expires after this many seconds without a read or a write (HEAD does not count).
    IdleTtl {
        /// The sliding window in seconds.
        secs: u64,
    },
    /// Expires at a fixed instant.
    At {
        /// Milliseconds since the Unix epoch.
        unix_ms: UnixMs,
    },
}

/// A content type and whether it selects JSON mode (§9.1). The media type (the part before
/// any parameters) is located once, when the value is made: every append compares it.
#[derive(Clone, Debug)]
pub struct ContentType {
    raw: Arc<str>,
    /// Where the media type ends and its trimmed start, in `raw`.
    essence: (u32, u32),
}

impl PartialEq for ContentType {
    fn eq(&self, other: &ContentType) -> bool {
        self.raw == other.raw
    }
}

impl Eq for ContentType {}

impl ContentType {
    /// Wraps a client's `Content-Type` value as given.
    #[must_use]
    pub fn new(raw: &str) -> ContentType {
        let raw = raw.trim();
        let media = raw.split_once(';').map_or(raw, |(m, _)| m);
        let start = media.len() - media.trim_start().len();
        let end = media.trim_end().len().max(start);
        let fit = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        ContentType { raw: Arc::from(raw), essence: (fit(start), fit(end)) }
    }

    /// The value as the client set it at creation.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The media type without parameters, e.g. `application/json` for
    /// `Application/JSON; charset=utf-8`. Compare with [`ContentType::matches`].
    #[must_use]
    pub fn essence(&self) -> &str {
        let (start, end) = (self.essence.0 as usize, self.essence.1 as usize);
        self.raw.get(start..end).unwrap_or("")
    }

    /// Whether two content types name the same media type: case-insensitive, parameters
    /// ignored (a `charset` on an append does not make it a different stream type).
    #[must_use]
    pub fn matches(&self, other: &ContentType) -> bool {
        self.essence().eq_ignore_ascii_case(other.essence())
    }

    /// `application/json` streams store messages and read back as arrays.
    #[must_use]
    pub fn is_json(&self) -> bool {
        self.essence().eq_ignore_ascii_case("application/json")
    }

    /// Text types are sent over SSE as UTF-8; everything else as base64 (§5.8).
    #[must_use]
    pub fn is_text(&self) -> bool {
        let essence = self.essence();
        self.is_json() || essence.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("text/"))
    }
}

/// The idempotent-producer headers of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerRequest {
    /// `Producer-Id`, non-empty.
    pub id: Arc<str>,
    /// `Producer-Epoch` and `Producer-Seq`.
    pub claim: ProducerClaim,
}

/// `PUT`: create a stream, or confirm an identical one exists.
#[derive(Clone, Debug)]
pub struct CreateRequest {
    /// The stream's content type.
    pub content_type: ContentType,
    /// TTL or absolute expiry.
    pub expiry: Expiry,
    /// Create the stream already closed (`Stream-Closed: true`).
    pub closed: bool,
    /// Initial content; for JSON streams a JSON value or array (`[]` for none).
    pub body: Bytes,
}

/// `POST`: append, optionally closing the stream in the same step.
#[derive(Clone, Debug, Default)]
pub struct AppendRequest {
    /// The request's `Content-Type`; required when `body` is not empty.
    pub content_type: Option<ContentType>,
    /// The data; empty only for a close.
    pub body: Bytes,
    /// `Stream-Seq`, compared byte-wise with the stream's last one.
    pub stream_seq: Option<Bytes>,
    /// Idempotent-producer headers.
    pub producer: Option<ProducerRequest>,
    /// `Stream-Closed: true`.
    pub close: bool,
}

impl AppendRequest {
    /// A plain append of `body` with `content_type`: no sequence, no producer, no close.
    #[must_use]
    pub fn data(content_type: &str, body: impl Into<Bytes>) -> AppendRequest {
        AppendRequest {
            content_type: Some(ContentType::new(content_type)),
            body: body.into(),
            ..AppendRequest::default()
        }
    }

    /// The same request with idempotent-producer headers.
    #[must_use]
    pub fn with_producer(mut self, id: &str, epoch: u64, seq: u64) -> AppendRequest {
        self.producer =
            Some(ProducerRequest { id: id.into(), claim: ProducerClaim { epoch, seq } });
        self
    }
}

/// `PUT` with `Stream-Forked-From` (§4.2): the fork part of a create, as the client sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForkRequest {
    /// The source stream's name.
    pub source: String,
    /// `Stream-Fork-Offset`; the source's tail when absent.
    pub offset: Option<Offset>,
    /// `Stream-Fork-Sub-Offset`: bytes (or JSON messages) past `offset` the fork also inherits;
    /// 0 when absent.
    pub sub: u64,
    /// Whether the request named a content type (else the fork takes the source's).
    pub content_type_given: bool,
}

/// A fork's link to its source: the fork shares the source's offset space, and its reads of
/// positions before `at` are served by the source (whatever the source's own state then:
/// data before `at` never changes, and the source is kept while forks refer to it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForkLink {
    /// The source stream's name.
    pub source: Arc<str>,
    /// Where the fork's own data starts: the source's data before it is the fork's.
    pub at: u64,
    /// The tag the source gives the token of `at` (0: the beginning, or not known because
    /// the fork was created before offsets carried tags), so that the fork stamps it
    /// identically; see [`crate::offset`].
    pub at_tag: u32,
}

/// A fork as the engine resolved it, handed to a store's `create`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForkOf {
    /// Where the fork reads its inherited data.
    pub link: ForkLink,
    /// The `Stream-Fork-Offset` asked for (`None`: the source's tail), kept so that a
    /// re-created fork is compared with what was asked, not with what it resolved to.
    pub requested_offset: Option<Offset>,
    /// The `Stream-Fork-Sub-Offset` asked for (0: none).
    pub requested_sub: u64,
}

impl ForkOf {
    /// Whether a request to create this fork again is the same fork (§4.2: same source, same
    /// fork offset when one is given, same sub-offset).
    #[must_use]
    pub fn same_request(&self, other: &ForkOf) -> bool {
        self.link.source == other.link.source
            && (other.requested_offset.is_none()
                || other.requested_offset == self.requested_offset
                || other.requested_offset.map(Offset::pos) == Some(self.link.at))
            && self.requested_sub == other.requested_sub
    }
}

/// One bounded piece of what a stream stores in a range, for stitching fork reads.
#[derive(Clone, Debug, Default)]
pub struct RangeRead {
    /// The stored bytes of `start..next`.
    pub parts: Vec<Bytes>,
    /// Where the piece ends.
    pub next: Offset,
    /// Set when the range starts before the stream's own data: read the source first.
    pub fork: Option<ForkLink>,
    /// How the stream read tags its offsets.
    pub lineage: Lineage,
}

/// A stream's metadata, as `HEAD` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    /// Distinguishes this stream from any earlier one of the same name.
    pub incarnation: u64,
    /// Content type as set at creation.
    pub content_type: ContentType,
    /// TTL or absolute expiry.
    pub expiry: Expiry,
    /// The offset after the last byte.
    pub tail: Offset,
    /// Whether the stream is closed.
    pub closed: bool,
    /// For a fork: where its inherited data comes from. Not shown to clients (forks are
    /// transparent); the engine uses it to stitch reads.
    pub fork: Option<ForkLink>,
}

impl StreamInfo {
    /// How this stream tags its offsets.
    #[must_use]
    pub fn lineage(&self) -> Lineage {
        lineage_of(self.incarnation, self.fork.as_ref())
    }
}

/// The lineage of incarnation `incarnation` with fork link `fork`.
#[must_use]
pub fn lineage_of(incarnation: u64, fork: Option<&ForkLink>) -> Lineage {
    Lineage::new(incarnation, fork.map(|l| (l.at, l.at_tag)))
}

/// The result of a create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Created {
    /// A new stream (201).
    New(StreamInfo),
    /// An identical stream already existed (200).
    Existing(StreamInfo),
}

/// What an accepted append did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendKind {
    /// Data was appended (and the stream closed, if asked).
    Appended,
    /// Nothing to append; the stream was closed by this request.
    Closed,
    /// The request repeats one already applied (a producer retry, or a close of a closed
    /// stream); nothing changed.
    Duplicate,
}

/// The acknowledgement of an accepted append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// What happened.
    pub kind: AppendKind,
    /// The stream's tail before the request (as accepted: earlier appends of a pipeline
    /// included): where its data starts. A subscription that first matches the stream
    /// through this append links it here, so that exactly this append and later ones are
    /// pending (§6.2). A duplicate appends nothing: its `start` is its `tail`.
    pub start: Offset,
    /// The stream's tail after the request.
    pub tail: Offset,
    /// Whether the stream is now closed.
    pub closed: bool,
    /// For producer requests: the producer's epoch and highest accepted sequence.
    pub producer: Option<ProducerClaim>,
}

impl Appended {
    /// The answer to a request that repeats one already applied: nothing appended, so it
    /// starts and ends at `tail`.
    #[must_use]
    pub fn duplicate(tail: Offset, closed: bool, producer: Option<ProducerClaim>) -> Appended {
        Appended { kind: AppendKind::Duplicate, start: tail, tail, closed, producer }
    }
}

/// An append the store has accepted, or refused on grounds a crash could still undo. An
/// accepted append has taken effect: the stream's accepted state holds it, so any later
/// request (a later request of the same pipeline included) is checked against it. In the
/// `postgres` mode the ticket is *deciding* instead: the append is queued, and its commit
/// round decides it (in queue order, so a pipeline's later requests still see it) and makes
/// it durable in one step.
/// [`AppendTicket::durable`] resolves once it is as durable as the mode promises; only then
/// may it be acknowledged. Dropping the ticket does not undo the append.
///
/// A refusal computed from accepted state that is not durable yet (a close, an epoch bump,
/// earlier appends still in their commit) is a ticket too: it resolves once that state's
/// commit settles, as the refusal if the commit succeeded, or as the commit's failure (503)
/// if it did not. No answer rests on state a crash can still undo.
#[must_use = "an append is acknowledged only once `durable` resolves"]
pub struct AppendTicket {
    outcome: Result<Appended>,
    commit: Commit,
    /// Runs once the append is durable (subscriptions' append hook), whether or not the
    /// ticket's holder waits for it: a dropped ticket hands it to a task that does.
    on_durable: Option<OnDurable>,
}

/// What [`AppendTicket::on_durable`] runs.
pub(crate) type OnDurable = Box<dyn FnOnce(Appended) + Send>;

impl std::fmt::Debug for AppendTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppendTicket")
            .field("outcome", &self.outcome)
            .field("commit", &self.commit)
            .finish_non_exhaustive()
    }
}

impl Drop for AppendTicket {
    fn drop(&mut self) {
        let Some(hook) = self.on_durable.take() else { return };
        let rt = tokio::runtime::Handle::try_current();
        match (std::mem::replace(&mut self.commit, Commit::Done), self.outcome.clone()) {
            (Commit::Done, Ok(ack)) => hook(ack),
            (Commit::Waiting(rx), Ok(ack)) => {
                if let Ok(rt) = rt {
                    rt.spawn(async move {
                        if let Ok(Ok(())) = rx.await {
                            hook(ack);
                        }
                    });
                }
            }
            (Commit::Deciding(rx), _) => {
                if let Ok(rt) = rt {
                    rt.spawn(async move {
                        if let Ok(Ok(ack)) = rx.await
                            && ack.kind == AppendKind::Appended
                        {
                            hook(ack);
                        }
                    });
                }
            }
            _ => {}
        }
    }
}

#[derive(Debug)]
enum Commit {
    /// Durable (or nothing to wait for).
    Done,
    /// Waiting for the committer's answer.
    Waiting(tokio::sync::oneshot::Receiver<Result<()>>),
    /// Waiting for the committer, which also decides the outcome (a store whose state of
    /// record is elsewhere validates the append inside its commit).
    Deciding(tokio::sync::oneshot::Receiver<Result<Appended>>),
    /// The commit failed.
    Failed(crate::Error),
}

impl AppendTicket {
    /// An append that needs no wait (memory mode, or a duplicate of a durable append).
    pub(crate) fn done(ack: Appended) -> AppendTicket {
        AppendTicket { outcome: Ok(ack), commit: Commit::Done, on_durable: None }
    }

    /// An append (or a refusal) waiting for the commit that `commit` reports.
    pub(crate) fn pending(
        outcome: Result<Appended>,
        commit: tokio::sync::oneshot::Receiver<Result<()>>,
    ) -> AppendTicket {
        AppendTicket { outcome, commit: Commit::Waiting(commit), on_durable: None }
    }

    /// An append whose outcome its commit decides: accepted or refused against the state
    /// the commit reads, then durable with it.
    pub(crate) fn deciding(
        outcome: tokio::sync::oneshot::Receiver<Result<Appended>>,
    ) -> AppendTicket {
        AppendTicket {
            outcome: Err(crate::Error::Storage("the commit has not decided yet".into())),
            commit: Commit::Deciding(outcome),
            on_durable: None,
        }
    }

    /// Runs `hook` once this ticket's append of data is durable (never for a refusal, a
    /// duplicate or a close without data, nor if the commit fails).
    pub(crate) fn on_durable(&mut self, hook: OnDurable) {
        let deciding = matches!(self.commit, Commit::Deciding(_));
        if deciding || matches!(&self.outcome, Ok(a) if a.kind == AppendKind::Appended) {
            self.on_durable = Some(hook);
        }
    }

    /// Whether the commit's outcome is still unknown.
    #[must_use]
    pub fn is_pending(&self) -> bool {
        matches!(self.commit, Commit::Waiting(_) | Commit::Deciding(_))
    }

    /// Waits for the commit's outcome without consuming the ticket. Cancel-safe: a
    /// transport may select on it beside other work and call it again.
    pub async fn settled(&mut self) {
        // The committer is gone (a panic, a store that stopped): the append's fate is
        // unknown, so the client is told to retry (503), as for a failed database commit.
        let lost = || crate::Error::Unavailable("the commit ended without an answer; retry");
        match &mut self.commit {
            Commit::Waiting(rx) => {
                self.commit = match rx.await {
                    Ok(Ok(())) => Commit::Done,
                    Ok(Err(e)) => Commit::Failed(e),
                    Err(_) => Commit::Failed(lost()),
                };
            }
            Commit::Deciding(rx) => match rx.await {
                Ok(outcome) => {
                    self.outcome = outcome;
                    self.commit = Commit::Done;
                }
                Err(_) => self.commit = Commit::Failed(lost()),
            },
            Commit::Done | Commit::Failed(_) => {}
        }
    }

    /// Waits until the append is as durable as the mode promises (or, for a refusal, until
    /// the state it rests on is).
    ///
    /// # Errors
    /// The refusal; the commit failed (the store is poisoned), or its committer ended
    /// without answering.
    pub async fn durable(mut self) -> Result<Appended> {
        self.settled().await;
        let hook = self.on_durable.take();
        match &self.commit {
            Commit::Failed(e) => Err(e.clone()),
            Commit::Done | Commit::Waiting(_) | Commit::Deciding(_) => {
                let outcome = self.outcome.clone();
                if let (Some(hook), Ok(ack)) = (hook, &outcome)
                    && ack.kind == AppendKind::Appended
                {
                    hook(*ack);
                }
                outcome
            }
        }
    }
}

/// One bounded chunk of a stream.
#[derive(Clone, Debug)]
pub struct ReadChunk {
    /// The stream read from.
    pub info: StreamInfo,
    /// Where the chunk starts.
    pub start: Offset,
    /// Where the next read should start; the chunk holds exactly `start..next`.
    pub next: Offset,
    /// The stored bytes of `start..next`, in order. For JSON streams these are messages each
    /// followed by `,`; see [`crate::json::wrap_array`].
    pub parts: Vec<Bytes>,
    /// `next` was the tail when the chunk was read.
    pub up_to_date: bool,
}

impl ReadChunk {
    /// Whether the chunk holds no data.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.start == self.next
    }

    /// The stream is closed and this chunk reaches its final offset: EOF.
    #[must_use]
    pub fn reaches_eof(&self) -> bool {
        self.up_to_date && self.info.closed
    }

    /// The protocol body: bytes as stored, or for JSON streams one JSON array.
    #[must_use]
    pub fn into_body(self) -> Vec<Bytes> {
        if self.info.content_type.is_json() {
            crate::json::wrap_array(self.parts)
        } else {
            self.parts
        }
    }
}

/// What the expiry sweeper found for one stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpiryCheck {
    /// The stream had expired and is now removed.
    Removed,
    /// Not yet expired: check again at this time.
    Later(UnixMs),
    /// No such stream (or a different incarnation): nothing to do.
    Missing,
}

/// A storage backend: `memory`, the file log, `acid`, `postgres`. Operations that may
/// wait for I/O return futures; `head`, `subscribe` and `touch` only read or bump state every
/// store keeps in memory. `now` is passed in so that the engine's clock is the only source of
/// time.
pub trait Store: Send + Sync + 'static {
    /// Creates a stream, or confirms an identical one.
    ///
    /// # Errors
    /// [`crate::Error::ConfigMismatch`], payload and limit errors, storage errors.
    fn create(
        &self,
        name: &str,
        req: &CreateRequest,
        payload: Payload,
        fork: Option<&ForkOf>,
        now: UnixMs,
    ) -> impl Future<Output = Result<Created>> + Send;

    /// Appends (and/or closes). `payload` is the parsed body, or the reason it is invalid, so
    /// that the store can report errors in the protocol's order of precedence. Never waits:
    /// the append takes effect (or is refused) before this returns, and the ticket resolves
    /// once it is as durable as the store promises.
    ///
    /// # Errors
    /// Every append refusal in [`crate::Error`].
    fn append(
        &self,
        name: &str,
        req: &AppendRequest,
        payload: Result<Payload>,
        now: UnixMs,
    ) -> Result<AppendTicket>;

    /// Reads at most `max_bytes` from `from` (always at least one whole JSON message).
    ///
    /// # Errors
    /// [`crate::Error::NotFound`], [`crate::Error::OffsetBeyondTail`],
    /// [`crate::Error::OffsetUnknown`], storage errors.
    fn read(
        &self,
        name: &str,
        from: ReadFrom,
        max_bytes: usize,
        now: UnixMs,
    ) -> impl Future<Output = Result<ReadChunk>> + Send;

    /// Reads at most `max_bytes` of what `name` itself stores in `from..end`, for stitching a
    /// fork's view: no TTL renewal, and a stream deleted while forks still refer to it is read
    /// as usual. With `whole`, only whole records that fit (possibly none). A range that
    /// starts before a fork's own data returns nothing but the fork's link.
    ///
    /// # Errors
    /// [`crate::Error::NotFound`], [`crate::Error::OffsetUnknown`], storage errors.
    fn read_range(
        &self,
        name: &str,
        from: Offset,
        end: u64,
        max_bytes: usize,
        whole: bool,
    ) -> impl Future<Output = Result<RangeRead>> + Send;

    /// Metadata, without renewing a sliding TTL, as this process knows it: exact for the
    /// stores whose state of record is this process; the last state this node saw for a
    /// shared one (subscriptions' view of tails).
    ///
    /// # Errors
    /// [`crate::Error::NotFound`].
    fn head(&self, name: &str, now: UnixMs) -> Result<StreamInfo>;

    /// Metadata as the state of record has it now, which requests are answered from: the
    /// same as [`Store::head`] unless other nodes share the store.
    ///
    /// # Errors
    /// As [`Store::head`]; [`crate::Error::Unavailable`] when it cannot be confirmed.
    fn fetch_head(
        &self,
        name: &str,
        now: UnixMs,
    ) -> impl Future<Output = Result<StreamInfo>> + Send {
        std::future::ready(self.head(name, now))
    }

    /// Deletes a stream and wakes its live readers; returns the deleted incarnation.
    ///
    /// # Errors
    /// [`crate::Error::NotFound`], storage errors.
    fn delete(&self, name: &str, now: UnixMs) -> impl Future<Output = Result<u64>> + Send;

    /// Watches the stream's tail, for live reads.
    ///
    /// # Errors
    /// [`crate::Error::NotFound`].
    fn subscribe(&self, name: &str, now: UnixMs) -> Result<(StreamInfo, TailWatch)>;

    /// [`Store::subscribe`] against the state of record (see [`Store::fetch_head`]).
    ///
    /// # Errors
    /// As [`Store::fetch_head`].
    fn watch(
        &self,
        name: &str,
        now: UnixMs,
    ) -> impl Future<Output = Result<(StreamInfo, TailWatch)>> + Send {
        std::future::ready(self.subscribe(name, now))
    }

    /// Removes the stream if it has expired by `now`; `incarnation` guards against removing
    /// a newer stream of the same name.
    fn expire(
        &self,
        name: &str,
        incarnation: u64,
        now: UnixMs,
    ) -> impl Future<Output = ExpiryCheck> + Send;

    /// Renews a sliding TTL as of `now` (a live read just ended); no-op for a missing stream.
    fn touch(&self, name: &str, now: UnixMs);

    /// Names of the streams in memory whose names start with `prefix`, in no order: live
    /// ones, and possibly some deleted, soft-deleted or expired ([`Store::list`] filters).
    fn names(&self, prefix: &str) -> Vec<Arc<str>>;

    /// Every live stream whose name starts with `prefix`, with its metadata, by name. Scans
    /// every name the store holds in memory (each store keeps all of them there).
    fn list(&self, prefix: &str, now: UnixMs) -> Vec<(Arc<str>, StreamInfo)> {
        let mut out: Vec<(Arc<str>, StreamInfo)> = self
            .names(prefix)
            .into_iter()
            .filter_map(|name| self.head(&name, now).ok().map(|info| (name, info)))
            .collect();
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// The names in `maps` that start with `prefix`.
pub(crate) fn names_in<'a, V: 'a>(
    maps: impl IntoIterator<Item = &'a std::sync::RwLock<std::collections::HashMap<Arc<str>, V>>>,
    prefix: &str,
) -> Vec<Arc<str>> {
    let mut out = Vec::new();
    for map in maps {
        let map = map.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        out.extend(map.keys().filter(|k| k.starts_with(prefix)).cloned());
    }
    out
}
