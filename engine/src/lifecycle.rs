//! The life of a persistent stream, written once for every persistent store (the file log,
//! acid, and whatever store comes next): looking a stream up (live, soft-deleted, expired),
//! creating it or confirming an identical one, deleting it, soft-deleting it while forks
//! read it, the fork references that keep a source alive and the cascade that removes it
//! when its last fork goes (§4.2), and expiry.
//!
//! A store supplies what is its own through [`Backend`] (its map of streams, its per-shard
//! `writes` lock, how a stream is made, removed and marked soft-deleted durably) and
//! [`LifeStream`] (where a stream keeps its [`Life`]); the rules are here.

use std::ops::Deref;
use std::sync::{Arc, MutexGuard};

use crate::clock::UnixMs;
use crate::error::{Error, Result};
use crate::notify::TailWatch;
use crate::payload::Payload;
use crate::rules;
use crate::store::{CreateRequest, Created, ExpiryCheck, ForkOf, StreamInfo};
use crate::stream_core::{Acquired, Removing, StreamCore};

/// What writes get once a store is poisoned.
pub(crate) const POISONED: &str = "writes are stopped after a storage failure; see the server log";

/// The lifecycle fields of a persistent stream's state.
#[derive(Debug, Default)]
pub(crate) struct Life {
    /// Deleted or expired: refuse everything (once `removing` has settled).
    pub(crate) removed: bool,
    /// Forks whose inherited data this stream serves.
    pub(crate) refs: u64,
    /// Deleted or expired while forks still read it: gone for direct operations (§4.2).
    pub(crate) soft_deleted: bool,
    /// A soft delete is being made durable: appends wait for it (410 once it is).
    pub(crate) soft_deleting: bool,
    /// While a removal is being made durable: appends that find the stream removed wait
    /// here for its outcome (404 once it is durable, its failure if not).
    pub(crate) removing: Option<Removing>,
}

impl Life {
    /// Deleted for good: the removal is durable (while it is not, the stream still reads as
    /// it was, since a crash could still bring it back).
    pub(crate) fn gone(&self) -> bool {
        self.removed && self.removing.is_none()
    }
}

/// A persistent store's stream, as the lifecycle sees it.
pub(crate) trait LifeStream: Deref<Target = StreamCore> + Send + Sync + 'static {
    /// Its state behind its lock.
    type State: Send;
    /// Locks its state.
    fn state(&self) -> MutexGuard<'_, Self::State>;
    /// The lifecycle part of the state.
    fn life(st: &mut Self::State) -> &mut Life;
    /// Whether it is closed, as accepted (the create-idempotency check compares it).
    fn closed(st: &Self::State) -> bool;
    /// Its metadata as of `st`.
    fn info(&self, st: &Self::State) -> StreamInfo;
    /// Tells its readers it is soft-deleted (its forks read on).
    fn publish_soft_deleted(&self, st: &Self::State);
}

/// What a persistent store supplies to the lifecycle.
pub(crate) trait Backend: Send + Sync + Sized + 'static {
    /// Its streams.
    type Stream: LifeStream;
    /// The stream by that name, whatever its state.
    fn get(&self, name: &str) -> Option<Arc<Self::Stream>>;
    /// The lock that orders creates, deletes and expiries of `name`'s shard.
    fn writes(&self, name: &str) -> &tokio::sync::Mutex<()>;
    /// Whether a write failed (every write is refused from then on, until restart).
    fn poisoned(&self) -> bool;
    /// `Ok` unless the store is poisoned.
    ///
    /// # Errors
    /// 503 once a write failed.
    fn writable(&self) -> Result<()> {
        if self.poisoned() { Err(Error::Unavailable(POISONED)) } else { Ok(()) }
    }
    /// The answer to an accepted append dropped with its removed stream: 404, or the
    /// store's failure once it is poisoned.
    fn dropped_answer(&self) -> Error {
        if self.poisoned() { Error::Unavailable(POISONED) } else { Error::NotFound }
    }
    /// Makes a new stream (or fork) durable and adds it to the map (under `writes`).
    fn insert_new(
        self: &Arc<Self>,
        name: &str,
        req: &CreateRequest,
        payload: Payload,
        fork: Option<&ForkOf>,
        now: UnixMs,
    ) -> impl Future<Output = Result<Created>> + Send;
    /// Deletes a stream already marked removed, durably; then forgets it, settles its
    /// `removing` and tells its readers (under `writes`).
    fn remove(
        self: Arc<Self>,
        stream: Arc<Self::Stream>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Makes a soft-delete mark durable (the stream stays for its forks).
    fn mark_soft_deleted(
        self: Arc<Self>,
        stream: Arc<Self::Stream>,
        now: UnixMs,
    ) -> impl Future<Output = Result<()>> + Send;
}

/// Implements [`LifeStream`] for a store's stream type `$stream` with a `lock()` of its
/// `$state`, an `info(&self, &$state)`, and a `core: StreamCore`, whose state has the
/// fields `life`, `accepted`, `visible_end` and `durable` (both persistent stores' shape).
macro_rules! life_stream {
    ($stream:ty, $state:ty) => {
        impl $crate::lifecycle::LifeStream for $stream {
            type State = $state;

            fn state(&self) -> std::sync::MutexGuard<'_, $state> {
                self.lock()
            }

            fn life(st: &mut $state) -> &mut $crate::lifecycle::Life {
                &mut st.life
            }

            fn closed(st: &$state) -> bool {
                st.accepted.closed
            }

            fn info(&self, st: &$state) -> $crate::store::StreamInfo {
                <$stream>::info(self, st)
            }

            fn publish_soft_deleted(&self, st: &$state) {
                self.core.publish(st.visible_end, st.durable.closed, true);
            }
        }
    };
}
pub(crate) use life_stream;

fn life<S: LifeStream>(st: &mut S::State) -> &mut Life {
    S::life(st)
}

/// The stream by that name, unless it is gone or expired (an expired one is removed in the
/// background).
///
/// # Errors
/// 404, or 410 for a soft-deleted stream.
pub(crate) fn live<B: Backend>(b: &Arc<B>, name: &str, now: UnixMs) -> Result<Arc<B::Stream>> {
    let stream = b.get(name).ok_or(Error::NotFound)?;
    if life::<B::Stream>(&mut stream.state()).soft_deleted {
        return Err(Error::Gone);
    }
    if stream.expired(now) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (b, name, inc) = (b.clone(), stream.name.clone(), stream.incarnation());
            rt.spawn(async move { expire(&b, &name, inc, now).await });
        }
        return Err(Error::NotFound);
    }
    Ok(stream)
}

/// `HEAD`: a live stream's metadata.
///
/// # Errors
/// As [`live`].
pub(crate) fn head<B: Backend>(b: &Arc<B>, name: &str, now: UnixMs) -> Result<StreamInfo> {
    let stream = live(b, name, now)?;
    let mut st = stream.state();
    if life::<B::Stream>(&mut st).gone() {
        return Err(Error::NotFound);
    }
    Ok(stream.info(&st))
}

/// A live stream's metadata and a watch on its tail.
///
/// # Errors
/// As [`live`].
pub(crate) fn subscribe<B: Backend>(
    b: &Arc<B>,
    name: &str,
    now: UnixMs,
) -> Result<(StreamInfo, TailWatch)> {
    let stream = live(b, name, now)?;
    let mut st = stream.state();
    if life::<B::Stream>(&mut st).gone() {
        return Err(Error::NotFound);
    }
    let watch = stream.subscribe();
    Ok((stream.info(&st), watch))
}

/// Renews a sliding TTL.
pub(crate) fn touch<B: Backend>(b: &B, name: &str, now: UnixMs) {
    if let Some(stream) = b.get(name) {
        stream.touch(now);
    }
}

/// Creates a stream or a fork, or confirms an identical one (§5.1, §4.2). A fork takes its
/// reference on the source before the target's `writes` lock (the two may share a shard),
/// and gives it back unless the fork is new.
///
/// # Errors
/// 409 for another configuration (or a soft-deleted name), the source's refusals, storage
/// errors.
pub(crate) async fn create<B: Backend>(
    b: &Arc<B>,
    name: &str,
    req: &CreateRequest,
    payload: Payload,
    fork: Option<&ForkOf>,
    now: UnixMs,
) -> Result<Created> {
    if let Some(f) = fork {
        acquire(b.as_ref(), &f.link.source, now).result().await?;
    }
    let (created, release_after) = create_locked(b, name, req, payload, fork, now).await;
    if let Some(source) = release_after {
        release(b.clone(), source).await;
    }
    if let Some(f) = fork
        && !matches!(created, Ok(Created::New(_)))
    {
        release(b.clone(), f.link.source.clone()).await;
    }
    created
}

/// `create` under the shard's `writes` lock; also returns a fork source to release once the
/// lock is dropped (an expired fork removed from the name).
async fn create_locked<B: Backend>(
    b: &Arc<B>,
    name: &str,
    req: &CreateRequest,
    payload: Payload,
    fork: Option<&ForkOf>,
    now: UnixMs,
) -> (Result<Created>, Option<Arc<str>>) {
    let _writes = b.writes(name).lock().await;
    let mut released = None;
    if let Some(existing) = b.get(name) {
        let expired = {
            let mut st = existing.state();
            let l = life::<B::Stream>(&mut st);
            if l.removed {
                false
            } else if l.soft_deleted {
                // Its forks still read it: the name is not free (§4.2).
                return (Err(Error::ConfigMismatch), None);
            } else if existing.expired(now) {
                true
            } else {
                let same = rules::same_stream(
                    &existing.meta.content_type,
                    existing.meta.expiry,
                    B::Stream::closed(&st),
                    existing.fork.as_ref(),
                    req,
                    fork,
                );
                let answer = if same {
                    Ok(Created::Existing(existing.info(&st)))
                } else {
                    Err(Error::ConfigMismatch)
                };
                return (answer, None);
            }
        };
        if expired {
            // Removing it is a write: a poisoned store answers 503, not 500.
            if let Err(e) = b.writable() {
                return (Err(e), None);
            }
            match delete_or_soft_delete(b.clone(), existing.clone(), now).await {
                Ok(source) => released = source,
                Err(e) => return (Err(e), None),
            }
            if life::<B::Stream>(&mut existing.state()).soft_deleted {
                return (Err(Error::ConfigMismatch), released);
            }
        }
    }
    (b.insert_new(name, req, payload, fork, now).await, released)
}

/// `DELETE` (§5.4): removes the stream, or soft-deletes it while forks read it; returns its
/// incarnation.
///
/// # Errors
/// 404, 410, storage errors.
pub(crate) async fn delete<B: Backend>(b: &Arc<B>, name: &str, now: UnixMs) -> Result<u64> {
    let writes = b.writes(name).lock().await;
    let stream = live(b, name, now)?;
    b.writable()?;
    let incarnation = stream.incarnation();
    let source = delete_or_soft_delete(b.clone(), stream, now).await?;
    drop(writes);
    if let Some(source) = source {
        release(b.clone(), source).await;
    }
    Ok(incarnation)
}

/// The expiry sweeper's check of one stream: removes it (or soft-deletes it) if its expiry
/// has passed.
pub(crate) async fn expire<B: Backend>(
    b: &Arc<B>,
    name: &str,
    incarnation: u64,
    now: UnixMs,
) -> ExpiryCheck {
    let Some(stream) = b.get(name).filter(|s| s.incarnation() == incarnation) else {
        return ExpiryCheck::Missing;
    };
    match stream.deadline(now) {
        None => return ExpiryCheck::Missing,
        Some(deadline) if now < deadline => return ExpiryCheck::Later(deadline),
        Some(_) => {}
    }
    if b.writable().is_err() {
        // Nothing is removed from a poisoned store; the restart will expire it.
        return ExpiryCheck::Later(now.saturating_add(60_000));
    }
    let writes = b.writes(name).lock().await;
    {
        let mut st = stream.state();
        let l = life::<B::Stream>(&mut st);
        if l.removed || l.soft_deleted {
            return ExpiryCheck::Missing;
        }
        // Decided under the lock: an append that renewed the TTL holds it while it does.
        if !stream.expired(now) {
            return stream.deadline(now).map_or(ExpiryCheck::Missing, ExpiryCheck::Later);
        }
    }
    let done = delete_or_soft_delete(b.clone(), stream, now).await;
    drop(writes);
    match done {
        Ok(source) => {
            if let Some(source) = source {
                release(b.clone(), source).await;
            }
            ExpiryCheck::Removed
        }
        Err(e) => {
            tracing::error!(stream = %name, error = %e, "could not remove expired stream");
            ExpiryCheck::Missing
        }
    }
}

/// Takes a reference on a fork's source, so that it outlives a delete while the fork reads
/// it.
pub(crate) fn acquire<B: Backend>(b: &B, source: &str, now: UnixMs) -> Acquired {
    let Some(stream) = b.get(source) else { return Acquired::Removed(None) };
    let mut st = stream.state();
    let l = life::<B::Stream>(&mut st);
    if l.removed {
        // Refused only once the delete is durable: it could still fail.
        return Acquired::Removed(Removing::wait(&mut l.removing));
    }
    if stream.expired(now) {
        return Acquired::Removed(None);
    }
    if l.soft_deleted {
        return Acquired::Refused(Error::SourceDeleted);
    }
    l.refs += 1;
    Acquired::Taken
}

/// Gives a fork's reference on its source back: a soft-deleted source left without forks is
/// removed, and so on up the chain (§4.2). Call without holding a `writes` lock.
pub(crate) async fn release<B: Backend>(b: Arc<B>, source: Arc<str>) {
    let mut next = Some(source);
    while let Some(name) = next.take() {
        // A name with forks is never removed nor re-created: this is the source.
        let Some(stream) = b.get(&name) else { return };
        let _writes = b.writes(&name).lock().await;
        {
            let mut st = stream.state();
            let l = life::<B::Stream>(&mut st);
            l.refs = l.refs.saturating_sub(1);
            if l.refs > 0 || !l.soft_deleted || l.removed {
                return;
            }
            l.removed = true;
            l.removing = Some(Removing::default());
        }
        if let Err(e) = b.clone().remove(stream.clone()).await {
            // The next start finishes it: a soft-deleted stream without forks is removed.
            tracing::error!(stream = %name, error = %e, "could not remove a deleted fork source");
            return;
        }
        next = stream.fork.as_ref().map(|f| f.link.source.clone());
    }
}

/// Deletes a stream (checked live, under its shard's `writes` lock): removes it, returning
/// its fork source to release, or soft-deletes it (durably) if forks still read it.
///
/// # Errors
/// 404 if it is already removed or soft-deleted; storage errors.
pub(crate) async fn delete_or_soft_delete<B: Backend>(
    b: Arc<B>,
    stream: Arc<B::Stream>,
    now: UnixMs,
) -> Result<Option<Arc<str>>> {
    let soft = {
        let mut st = stream.state();
        let l = life::<B::Stream>(&mut st);
        if l.removed || l.soft_deleted {
            return Err(Error::NotFound);
        }
        if l.refs == 0 {
            l.removed = true;
        } else {
            l.soft_deleting = true;
        }
        l.removing = Some(Removing::default());
        l.refs > 0
    };
    if !soft {
        b.clone().remove(stream.clone()).await?;
        return Ok(stream.fork.as_ref().map(|f| f.link.source.clone()));
    }
    let outcome = b.clone().mark_soft_deleted(stream.clone(), now).await;
    let mut st = stream.state();
    let l = life::<B::Stream>(&mut st);
    l.soft_deleting = false;
    Removing::settle(&mut l.removing, &outcome, &b.dropped_answer());
    outcome?;
    l.soft_deleted = true;
    // Its own readers stop; its forks read its data without it.
    stream.publish_soft_deleted(&st);
    drop(st);
    Ok(None)
}
