//! Expiry: one ordered index of candidate deadlines and one sweeper task for all streams.
//!
//! Reads and writes renew a sliding TTL by bumping an atomic in the stream, never by touching
//! this index. An entry's deadline is therefore a lower bound: when it comes due the sweeper
//! asks the store, which either removes the stream or answers with the real deadline, and the
//! entry is put back for then. Streams are also expired lazily on access, so the sweeper only
//! frees memory; it never decides what a client sees.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::clock::UnixMs;
use crate::store::{Expiry, ExpiryCheck, Store};

/// Candidate deadlines, earliest first.
#[derive(Debug, Default)]
pub struct ExpiryIndex {
    entries: Mutex<BTreeSet<(UnixMs, Arc<str>, u64)>>,
    /// Woken when an entry earlier than every other arrives.
    sooner: Notify,
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
    /// Schedules a check of `(name, incarnation)` at `at`.
    pub fn schedule(&self, at: UnixMs, name: &str, incarnation: u64) {
        let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let sooner = entries.first().is_none_or(|(first, _, _)| at < *first);
        entries.insert((at, Arc::from(name), incarnation));
        drop(entries);
        if sooner {
            self.sooner.notify_one();
        }
    }

    /// The earliest scheduled check.
    #[must_use]
    pub fn next_due(&self) -> Option<UnixMs> {
        let entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.first().map(|(at, _, _)| *at)
    }

    /// Number of scheduled checks.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    /// Whether nothing is scheduled.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks every entry due by `now` against the store; returns how many streams it removed.
    pub fn sweep(&self, store: &dyn Store, now: UnixMs) -> usize {
        let due: Vec<(UnixMs, Arc<str>, u64)> = {
            let mut entries =
                self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let later = entries.split_off(&(now.saturating_add(1), Arc::from(""), 0));
            std::mem::replace(&mut *entries, later).into_iter().collect()
        };
        let mut removed = 0;
        for (_, name, incarnation) in due {
            match store.expire(&name, incarnation, now) {
                ExpiryCheck::Removed => removed += 1,
                ExpiryCheck::Later(at) => self.schedule(at, &name, incarnation),
                ExpiryCheck::Missing => {}
            }
        }
        removed
    }

    /// Waits until an entry sooner than all others is scheduled.
    pub async fn sooner_scheduled(&self) {
        self.sooner.notified().await;
    }
}
