//! Expiry: one ordered index of candidate deadlines and one sweeper task for all streams.
//!
//! Reads and writes renew a sliding TTL by bumping an atomic in the stream, never by touching
//! this index. An entry's deadline is therefore a lower bound: when it comes due the sweeper
//! asks the store, which either removes the stream or answers with the real deadline, and the
//! entry is put back for then. Streams are also expired lazily on access, so the sweeper only
//! frees memory; it never decides what a client sees. A deleted stream's entry is removed at
//! once (and a create that races a delete re-checks), so the index holds at most one entry per
//! stream with an expiry, plus, briefly, entries of streams deleted during a sweep.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::clock::UnixMs;
use crate::store::Expiry;

/// Candidate deadlines, earliest first, one per stream incarnation.
#[derive(Debug, Default)]
pub struct ExpiryIndex {
    inner: Mutex<Entries>,
    /// Woken when an entry earlier than every other arrives.
    sooner: Notify,
}

#[derive(Debug, Default)]
struct Entries {
    by_time: BTreeSet<(UnixMs, u64)>,
    by_incarnation: HashMap<u64, (UnixMs, Arc<str>)>,
}

/// The first deadline of a stream with `expiry`, created or last touched at `now`.
#[must_use]
pub fn deadline(expiry: Expiry, now: UnixMs) -> Option<UnixMs> {
    match expiry {
        Expiry::Never => None,
        Expiry::IdleTtl { secs } => Some(now.saturating_add(secs.saturating_mul(1000))),
        Expiry::At { unix_ms } => Some(unix_ms),
    }
}

impl ExpiryIndex {
    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Schedules a check of `(name, incarnation)` at `at`, replacing any earlier schedule.
    pub fn schedule(&self, at: UnixMs, name: &str, incarnation: u64) {
        let mut e = self.entries();
        if let Some((old, _)) = e.by_incarnation.remove(&incarnation) {
            e.by_time.remove(&(old, incarnation));
        }
        let sooner = e.by_time.first().is_none_or(|(first, _)| at < *first);
        e.by_time.insert((at, incarnation));
        e.by_incarnation.insert(incarnation, (at, Arc::from(name)));
        drop(e);
        if sooner {
            self.sooner.notify_one();
        }
    }

    /// Forgets a stream that was deleted.
    pub fn unschedule(&self, incarnation: u64) {
        let mut e = self.entries();
        if let Some((at, _)) = e.by_incarnation.remove(&incarnation) {
            e.by_time.remove(&(at, incarnation));
        }
    }

    /// The earliest scheduled check.
    #[must_use]
    pub fn next_due(&self) -> Option<UnixMs> {
        self.entries().by_time.first().map(|(at, _)| *at)
    }

    /// Number of scheduled checks.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries().by_time.len()
    }

    /// Whether nothing is scheduled.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes every entry due by `now` out of the index. The caller asks the store about each
    /// and reschedules those that are not yet expired.
    pub fn take_due(&self, now: UnixMs) -> Vec<(u64, Arc<str>)> {
        let mut e = self.entries();
        let later = e.by_time.split_off(&(now.saturating_add(1), 0));
        let due = std::mem::replace(&mut e.by_time, later);
        due.into_iter()
            .filter_map(|(_, inc)| e.by_incarnation.remove(&inc).map(|(_, name)| (inc, name)))
            .collect()
    }

    /// Waits until an entry sooner than all others is scheduled.
    pub async fn sooner_scheduled(&self) {
        self.sooner.notified().await;
    }
}

/// A recovered stream that needs an expiry check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiring {
    /// Stream name.
    pub name: Arc<str>,
    /// Its incarnation.
    pub incarnation: u64,
    /// Its expiry.
    pub expiry: Expiry,
    /// Its last read or write, as far as the disk knows.
    pub last_access_ms: UnixMs,
}
