//! What a stream of either persistent store (file log, acid) keeps beside its write state:
//! its name and metadata, its last access (for sliding TTLs, in memory only: reads never
//! write) and its tail signal. Each store's stream wraps one and derefs to it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::oneshot;

use crate::clock::UnixMs;
use crate::error::{Error, Result};
use crate::meta::Meta;
use crate::notify::{Tail, TailSignal, TailWatch};
use crate::offset::{Lineage, Offset};
use crate::store::AppendTicket;
use crate::store::{Expiry, ForkOf, StreamInfo, lineage_of};

/// A persistent stream's identity, expiry clock and tail signal.
pub(crate) struct StreamCore {
    pub(crate) name: Arc<str>,
    pub(crate) meta: Meta,
    /// For a fork: its source and where it diverges.
    pub(crate) fork: Option<ForkOf>,
    /// How its offsets are tagged.
    pub(crate) lineage: Lineage,
    last_access_ms: AtomicU64,
    signal: TailSignal,
}

impl StreamCore {
    /// A stream whose visible tail is `end`.
    pub(crate) fn new(
        meta: Meta,
        fork: Option<ForkOf>,
        end: u64,
        closed: bool,
        last_access_ms: UnixMs,
    ) -> StreamCore {
        StreamCore {
            name: Arc::from(meta.name.as_str()),
            lineage: lineage_of(meta.incarnation, fork.as_ref().map(|f| &f.link)),
            meta,
            fork,
            last_access_ms: AtomicU64::new(last_access_ms),
            signal: TailSignal::new(Tail { next: Offset::at(end), closed, gone: false }),
        }
    }

    pub(crate) fn incarnation(&self) -> u64 {
        self.meta.incarnation
    }

    /// When the stream expires; a stream with live readers watching counts as accessed now.
    pub(crate) fn deadline(&self, now: UnixMs) -> Option<UnixMs> {
        if matches!(self.meta.expiry, Expiry::IdleTtl { .. }) && self.signal.has_watchers() {
            self.last_access_ms.fetch_max(now, Ordering::Relaxed);
        }
        crate::ttl::deadline(self.meta.expiry, self.last_access_ms())
    }

    pub(crate) fn expired(&self, now: UnixMs) -> bool {
        self.deadline(now).is_some_and(|d| now >= d)
    }

    /// Renews a sliding TTL (reads and writes; HEAD does not).
    pub(crate) fn touch(&self, now: UnixMs) {
        if matches!(self.meta.expiry, Expiry::IdleTtl { .. }) {
            self.last_access_ms.fetch_max(now, Ordering::Relaxed);
        }
    }

    /// Where the stream's own data starts: 0, or a fork's divergence point.
    pub(crate) fn base(&self) -> u64 {
        self.fork.as_ref().map_or(0, |f| f.link.at)
    }

    pub(crate) fn last_access_ms(&self) -> UnixMs {
        self.last_access_ms.load(Ordering::Relaxed)
    }

    /// `HEAD`'s answer for a visible tail at `end`.
    pub(crate) fn info(&self, end: u64, closed: bool) -> StreamInfo {
        StreamInfo {
            incarnation: self.meta.incarnation,
            content_type: self.meta.content_type.clone(),
            expiry: self.meta.expiry,
            tail: self.lineage.at(end),
            closed,
            fork: self.fork.as_ref().map(|f| f.link.clone()),
        }
    }

    /// Wakes live readers with the new visible tail.
    pub(crate) fn publish(&self, end: u64, closed: bool, gone: bool) {
        self.signal.publish(Tail { next: Offset::at(end), closed, gone });
    }

    pub(crate) fn has_watchers(&self) -> bool {
        self.signal.has_watchers()
    }

    pub(crate) fn subscribe(&self) -> TailWatch {
        self.signal.subscribe()
    }
}

/// What taking a reference on a fork's source found.
pub(crate) enum Acquired {
    /// The reference is taken.
    Taken,
    /// Refused at once.
    Refused(Error),
    /// The source is removed or being removed: 404, once [`Removing::refusal_after`] says.
    Removed(Option<oneshot::Receiver<Result<()>>>),
}

impl Acquired {
    /// The outcome, after waiting for a removal in flight.
    pub(crate) async fn result(self) -> Result<()> {
        match self {
            Acquired::Taken => Ok(()),
            Acquired::Refused(e) => Err(e),
            Acquired::Removed(waiter) => {
                Err(Removing::refusal_after(waiter, Error::NotFound).await)
            }
        }
    }
}

/// A removal (delete or expiry) on its way to disk. Until it is durable, nothing may be told
/// the stream is gone: a crash could still bring it back. Appends that find the stream
/// removed, and batches a committer finds removed before writing them, wait here and are
/// answered 404 once the removal is durable, or with its failure.
#[derive(Debug, Default)]
pub(crate) struct Removing {
    /// Refused appends: their tickets already hold the 404.
    refusals: Vec<oneshot::Sender<Result<()>>>,
    /// Accepted appends whose batch was never written: their tickets hold an acknowledgement,
    /// so they are sent the 404 itself.
    dropped: Vec<oneshot::Sender<Result<()>>>,
}

impl Removing {
    /// The answer (`refusal`: 404, or 410 for a soft delete) to an append that finds the
    /// stream removed: at once if the removal is durable (`removing` is `None`), else once
    /// it is.
    pub(crate) fn refuse(removing: &mut Option<Removing>, refusal: Error) -> Result<AppendTicket> {
        match Removing::wait(removing) {
            None => Err(refusal),
            Some(rx) => Ok(AppendTicket::pending(Err(refusal), rx)),
        }
    }

    /// For a request refused because the stream is removed (a fork of it, say): `None` if the
    /// removal is durable (refuse at once), else what resolves once it is (`Ok`: refuse;
    /// `Err`: the removal failed, answer that).
    pub(crate) fn wait(removing: &mut Option<Removing>) -> Option<oneshot::Receiver<Result<()>>> {
        let r = removing.as_mut()?;
        let (tx, rx) = oneshot::channel();
        r.refusals.push(tx);
        Some(rx)
    }

    /// Waits as [`Removing::wait`] says, then gives the answer: `refusal`, or the failure.
    pub(crate) async fn refusal_after(
        waiter: Option<oneshot::Receiver<Result<()>>>,
        refusal: Error,
    ) -> Error {
        match waiter {
            None => refusal,
            Some(rx) => match rx.await {
                Ok(Ok(())) => refusal,
                Ok(Err(e)) => e,
                Err(_) => Error::Storage("a removal ended without an answer".into()),
            },
        }
    }

    /// Fails accepted appends whose batch a committer found removed: with 404 once the
    /// removal is durable. `settled` is the answer if the removal already ended: 404, or the
    /// store's failure if it is poisoned (the removal may have failed).
    pub(crate) fn drop_batch(
        removing: &mut Option<Removing>,
        waiters: Vec<oneshot::Sender<Result<()>>>,
        settled: &Error,
    ) {
        match removing {
            Some(r) => r.dropped.extend(waiters),
            None => {
                for w in waiters {
                    let _ = w.send(Err(settled.clone()));
                }
            }
        }
    }

    /// The removal's outcome is known: empties `removing` and answers everything that
    /// waited for it (nothing if another path settled it already).
    ///
    /// Dropped appends get `dropped` if the removal succeeded: the answer the committer gives
    /// a dropped batch at the time of settling (404, or the store's failure once it is
    /// poisoned, as [`Removing::drop_batch`]'s `settled`), so that no append is answered 404
    /// after the store has failed under it.
    pub(crate) fn settle(removing: &mut Option<Removing>, outcome: &Result<()>, dropped: &Error) {
        let Some(r) = removing.take() else { return };
        for w in r.refusals {
            let _ = w.send(outcome.clone());
        }
        for w in r.dropped {
            let _ = w.send(outcome.clone().and(Err(dropped.clone())));
        }
    }
}
