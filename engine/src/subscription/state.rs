//! One subscription's state and its transitions (§6.1, §7): links and cursors, wakes,
//! generation fencing, leases and webhook retries. Pure: the caller supplies the time, the
//! current tails of streams, fresh wake ids and random jitter, and carries out what a
//! transition asks for (deliver a webhook, write a wake event); so every rule here is tested
//! without a clock, a disk or a network.
//!
//! Decisions where the protocol is silent (see `docs/design/subscriptions-reference.md` for
//! what the reference server does):
//! - A link made by a stream's first matching append starts at the stream's tail *before* that
//!   append, so the append is pending and nothing older is (a fork's inherited data included).
//! - Deleting (or expiring) a stream drops its glob link; an explicit link stays and restarts
//!   at the beginning, since a stream created later under that name is new data.
//! - Every outcome of a webhook delivery names the wake it delivered: a late answer for an
//!   older wake changes nothing. Retry backoff carries over from one wake to the next until a
//!   delivery succeeds, so a receiver that is down is not called at every lease expiry.

use crate::offset::Offset;
use crate::subscription::glob::Pattern;

/// Default lease (§6.2).
pub const DEFAULT_LEASE_TTL_MS: u64 = 30_000;
/// Shortest lease (§6.2).
pub const MIN_LEASE_TTL_MS: u64 = 1_000;
/// Longest lease (§6.2).
pub const MAX_LEASE_TTL_MS: u64 = 600_000;
/// Most links one subscription holds; an explicit add or a matching stream past it is
/// refused (explicit) or not linked (glob, logged by the caller).
pub const MAX_LINKS: usize = 10_000;
/// Most acks in one callback or ack request.
pub const MAX_ACKS: usize = 1_000;
/// First webhook retry delay.
pub const RETRY_BASE_MS: u64 = 1_000;
/// Longest webhook retry delay.
pub const RETRY_MAX_MS: u64 = 60_000;

/// How wakes reach workers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// POST to this URL (validated by the caller).
    Webhook {
        /// The receiver.
        url: String,
    },
    /// Wake events appended to this stream; workers claim.
    PullWake {
        /// The wake stream's path.
        wake_stream: String,
    },
}

/// A subscription's configuration, normalized: two requests that mean the same thing give
/// equal values (the re-confirmation check of §6.2 compares these).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Webhook or pull-wake.
    pub delivery: Delivery,
    /// Glob over stream paths.
    pub pattern: Option<Pattern>,
    /// Explicit stream paths at creation, normalized, sorted, without duplicates.
    pub streams: Vec<String>,
    /// Lease in milliseconds, within [`MIN_LEASE_TTL_MS`]..=[`MAX_LEASE_TTL_MS`].
    pub lease_ttl_ms: u64,
    /// Free text.
    pub description: Option<String>,
}

/// One linked stream (§6.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Stream path.
    pub path: String,
    /// Added by `streams[]` or the streams endpoint.
    pub explicit: bool,
    /// Matched by the pattern.
    pub glob: bool,
    /// Last processed offset, inclusive.
    pub acked: Offset,
    /// Linked by an append and not acknowledged since: the cursor is where that append
    /// started, and an append that started earlier but reported later (hooks run as
    /// commits finish, not in acceptance order) lowers it, so no data is skipped.
    pub provisional: bool,
}

impl Link {
    /// `explicit` wins over `glob` in responses (§6.1).
    #[must_use]
    pub fn link_type(&self) -> &'static str {
        if self.explicit { "explicit" } else { "glob" }
    }
}

/// A wake in flight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wake {
    /// Unique per wake (`w_` and 24 hex digits, from the caller).
    pub id: String,
    /// The stream whose change caused it.
    pub triggered_by: String,
    /// Every linked stream's tail when the wake was made: what a webhook carries and what
    /// `done` acknowledges.
    pub snapshot: Vec<(String, Offset)>,
    /// The pull-wake worker holding the lease.
    pub holder: Option<String>,
    /// When the lease ends: from the wake for webhooks, from the claim for pull-wake (none
    /// while unclaimed).
    pub lease_deadline_ms: Option<u64>,
}

/// Webhook retry state (§7.1): persisted, so a restart keeps the schedule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Retry {
    /// Failed attempts since the last success.
    pub attempts: u32,
    /// No delivery before this time.
    pub next_attempt_at_ms: Option<u64>,
}

/// A subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// Client-chosen id.
    pub id: String,
    /// Unique per creation: tokens of a deleted subscription never fit a new one of the same
    /// id.
    pub incarnation: u64,
    /// The normalized configuration.
    pub config: Config,
    /// Creation time, Unix milliseconds.
    pub created_ms: u64,
    /// Linked streams in the order they were linked.
    pub links: Vec<Link>,
    /// Fencing counter: +1 per wake.
    pub generation: u64,
    /// The wake in flight, if any.
    pub wake: Option<Wake>,
    /// Webhook retries.
    pub retry: Retry,
    /// Where the server was reached when the subscription was made (`scheme://authority`
    /// and the stream root, e.g. `http://127.0.0.1:4437/v1/stream`): the base of the
    /// callback and JWKS URLs it hands out, unless the server has a public URL configured.
    pub base_url: String,
}

/// What a transition asks the caller to do: a new wake was made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Woke {
    /// Its generation.
    pub generation: u64,
    /// Its id.
    pub wake_id: String,
    /// Webhook: deliver no earlier than this (a retry backoff still running); pull-wake:
    /// `None`, write the wake event now.
    pub deliver_at_ms: Option<u64>,
}

/// Why a request on a subscription is refused (mapped to `{"error":{"code"}}` by ds-http).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 409 `FENCED`: stale generation, wake id or token.
    Fenced,
    /// 409 `ALREADY_CLAIMED`.
    AlreadyClaimed {
        /// The worker holding the lease.
        holder: String,
        /// The current generation.
        generation: u64,
    },
    /// 409 `NO_PENDING_WORK`.
    NoPendingWork,
    /// 409 `INVALID_OFFSET`, with why.
    InvalidOffset(&'static str),
    /// 400 `INVALID_REQUEST`, with why.
    Invalid(&'static str),
}

/// The fencing fields a callback, ack or release carries: from its verified token and its
/// body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence<'a> {
    /// The token's subscription incarnation.
    pub token_incarnation: u64,
    /// The token's generation.
    pub token_generation: u64,
    /// The token's wake id.
    pub token_wake_id: &'a str,
    /// The body's `generation` (`None` if missing or not an integer).
    pub generation: Option<u64>,
    /// The body's `wake_id`.
    pub wake_id: Option<&'a str>,
}

/// What a webhook delivery attempt came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivered {
    /// A 2xx answer whose body was `{"done": true}`.
    Done,
    /// Another 2xx answer: the worker calls back.
    Accepted,
    /// Anything else: no connection, a timeout, a redirect, a non-2xx status, a body too
    /// large.
    Failed,
}

/// The result of an ack or callback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acked {
    /// Whether a new wake followed (`next_wake` of §7).
    pub next: Option<Woke>,
}

/// The current tail of a stream; `None` if it does not exist.
pub trait Tails {
    /// The stream's tail.
    fn tail(&self, path: &str) -> Option<Offset>;
}

impl<F: Fn(&str) -> Option<Offset>> Tails for F {
    fn tail(&self, path: &str) -> Option<Offset> {
        self(path)
    }
}

impl Subscription {
    /// A new subscription: explicit links at each stream's tail (the beginning for one that
    /// does not exist yet), then every existing stream the pattern matches (`existing`: path
    /// and tail) at its tail, so creation replays no history (§6.2).
    #[must_use]
    pub fn new(
        id: String,
        incarnation: u64,
        config: Config,
        created_ms: u64,
        tails: &dyn Tails,
        existing: impl IntoIterator<Item = (String, Offset)>,
    ) -> Subscription {
        let mut sub = Subscription {
            id,
            incarnation,
            created_ms,
            links: Vec::new(),
            generation: 0,
            wake: None,
            retry: Retry::default(),
            base_url: String::new(),
            config,
        };
        let explicit: Vec<(String, Offset)> = (sub.config.streams.iter())
            .map(|path| (path.clone(), tails.tail(path).unwrap_or(Offset::ZERO)))
            .collect();
        sub.link_all(explicit.iter().map(|(path, at)| (path.as_str(), true, *at)));
        if let Some(pattern) = sub.config.pattern.clone() {
            let matched: Vec<(String, Offset)> =
                existing.into_iter().filter(|(path, _)| pattern.matches(path)).collect();
            sub.link_all(matched.iter().map(|(path, tail)| (path.as_str(), false, *tail)));
        }
        sub
    }

    /// [`Subscription::link`] for many paths, with an index of the links made once: a
    /// pattern can link up to [`MAX_LINKS`] existing streams at creation, and a scan of the
    /// links per path would be quadratic in them.
    fn link_all<'p>(&mut self, paths: impl IntoIterator<Item = (&'p str, bool, Offset)>) {
        let mut index: std::collections::HashMap<String, usize> =
            self.links.iter().enumerate().map(|(i, l)| (l.path.clone(), i)).collect();
        for (path, explicit, at) in paths {
            if let Some(&i) = index.get(path) {
                let link = &mut self.links[i];
                link.explicit |= explicit;
                link.glob |= !explicit;
            } else if self.push_link(path, explicit, at) {
                index.insert(path.to_owned(), self.links.len() - 1);
            }
        }
    }

    fn find(&self, path: &str) -> Option<usize> {
        self.links.iter().position(|l| l.path == path)
    }

    /// Links `path` (explicitly or by glob) at `at` if it is new; an existing link only
    /// gains the type and keeps its cursor. `false` if the link limit stops a new one.
    fn link(&mut self, path: &str, explicit: bool, at: Offset) -> bool {
        if self.is_own_wake_stream(path) {
            // Never linked: its wake events would be pending work, and every done would
            // wake the subscription again (§6.3: wake streams never wake themselves).
            return false;
        }
        if let Some(i) = self.find(path) {
            let link = &mut self.links[i];
            link.explicit |= explicit;
            link.glob |= !explicit;
            return true;
        }
        self.push_link(path, explicit, at)
    }

    /// Links `path`, known not to be linked yet, unless it is the subscription's own wake
    /// stream or the link limit is reached (`false` then).
    fn push_link(&mut self, path: &str, explicit: bool, at: Offset) -> bool {
        if self.is_own_wake_stream(path) || self.links.len() >= MAX_LINKS {
            return false;
        }
        self.links.push(Link {
            path: path.to_owned(),
            explicit,
            glob: !explicit,
            acked: at,
            provisional: false,
        });
        true
    }

    fn is_own_wake_stream(&self, path: &str) -> bool {
        matches!(&self.config.delivery, Delivery::PullWake { wake_stream } if wake_stream == path)
    }

    /// Adds explicit links (§6.4) at each stream's tail; idempotent. Never wakes.
    ///
    /// # Errors
    /// [`Refusal::Invalid`] if the links would pass [`MAX_LINKS`] (nothing is added then).
    pub fn add_streams(&mut self, paths: &[String], tails: &dyn Tails) -> Result<(), Refusal> {
        if paths.iter().any(|p| self.is_own_wake_stream(p)) {
            return Err(Refusal::Invalid("a subscription cannot link its own wake_stream"));
        }
        let linked: std::collections::HashSet<&str> =
            self.links.iter().map(|l| l.path.as_str()).collect();
        let new: std::collections::HashSet<&str> =
            paths.iter().map(String::as_str).filter(|p| !linked.contains(p)).collect();
        if self.links.len() + new.len() > MAX_LINKS {
            return Err(Refusal::Invalid("too many streams in one subscription"));
        }
        let at: Vec<Offset> =
            paths.iter().map(|path| tails.tail(path).unwrap_or(Offset::ZERO)).collect();
        self.link_all(paths.iter().zip(at).map(|(path, at)| (path.as_str(), true, at)));
        Ok(())
    }

    /// Removes an explicit link (§6.4); a glob link of the same stream stays. Idempotent.
    pub fn remove_stream(&mut self, path: &str) {
        let matches = self.config.pattern.as_ref().is_some_and(|p| p.matches(path));
        if let Some(i) = self.find(path) {
            let link = &mut self.links[i];
            link.explicit = false;
            link.glob |= matches;
            if !link.glob {
                self.links.remove(i);
            }
        }
    }

    /// A stream was deleted or expired: its glob link goes, an explicit link restarts at the
    /// beginning (a later stream of that name is new data).
    pub fn stream_removed(&mut self, path: &str) {
        if let Some(i) = self.find(path) {
            if self.links[i].explicit {
                self.links[i].glob = false;
                self.links[i].acked = Offset::ZERO;
            } else {
                self.links.remove(i);
            }
        }
    }

    /// Whether some linked stream has data past its cursor.
    #[must_use]
    pub fn pending(&self, tails: &dyn Tails) -> bool {
        self.first_pending(tails).is_some()
    }

    fn first_pending(&self, tails: &dyn Tails) -> Option<&str> {
        self.links
            .iter()
            .find(|l| tails.tail(&l.path).is_some_and(|t| t > l.acked))
            .map(|l| l.path.as_str())
    }

    /// An append moved `path` from `before` to its current tail: link it first if the
    /// pattern matches it and it is not linked (at `before`), then wake if it is linked and
    /// the subscription is idle. The caller never reports the subscription's own wake-event
    /// writes.
    pub fn appended(
        &mut self,
        path: &str,
        before: Offset,
        tails: &dyn Tails,
        now_ms: u64,
        wake_id: impl FnOnce() -> String,
    ) -> Option<Woke> {
        let matches = self.config.pattern.as_ref().is_some_and(|p| p.matches(path));
        match self.find(path) {
            Some(i) => {
                let link = &mut self.links[i];
                // A matching stream is glob-linked whatever linked it first, so that
                // removing an explicit link keeps it (§6.4).
                link.glob |= matches;
                if link.provisional && before < link.acked {
                    link.acked = before;
                }
            }
            None if matches => {
                if !self.link(path, false, before) {
                    return None;
                }
                if let Some(link) = self.links.last_mut() {
                    link.provisional = true;
                }
            }
            None => return None,
        }
        self.wake_if_pending(tails, now_ms, path, wake_id)
    }

    /// Makes a wake if none is in flight and work is pending, naming the first pending
    /// stream (at start-up: work that arrived while the server was down, or whose wake a
    /// crash lost).
    pub fn wake_if_idle(
        &mut self,
        tails: &dyn Tails,
        now_ms: u64,
        wake_id: impl FnOnce() -> String,
    ) -> Option<Woke> {
        self.wake_if_pending(tails, now_ms, "", wake_id)
    }

    /// Makes a wake if none is in flight and work is pending (`trigger` names the stream
    /// that caused it, else the first pending one is named).
    fn wake_if_pending(
        &mut self,
        tails: &dyn Tails,
        now_ms: u64,
        trigger: &str,
        wake_id: impl FnOnce() -> String,
    ) -> Option<Woke> {
        if self.wake.is_some() {
            return None;
        }
        let first = self.first_pending(tails)?.to_owned();
        let pending_trigger = self
            .find(trigger)
            .is_some_and(|i| tails.tail(trigger).is_some_and(|t| t > self.links[i].acked));
        let triggered_by = if pending_trigger { trigger.to_owned() } else { first };
        self.generation += 1;
        let id = wake_id();
        let snapshot = self
            .links
            .iter()
            .filter_map(|l| tails.tail(&l.path).map(|t| (l.path.clone(), t)))
            .collect();
        let (lease, deliver_at_ms) = match self.config.delivery {
            Delivery::Webhook { .. } => (
                Some(now_ms + self.config.lease_ttl_ms),
                Some(self.retry.next_attempt_at_ms.map_or(now_ms, |at| at.max(now_ms))),
            ),
            Delivery::PullWake { .. } => (None, None),
        };
        self.wake = Some(Wake {
            id: id.clone(),
            triggered_by,
            snapshot,
            holder: None,
            lease_deadline_ms: lease,
        });
        Some(Woke { generation: self.generation, wake_id: id, deliver_at_ms })
    }

    /// Checks a callback, ack or release against the current wake (§7.3).
    ///
    /// # Errors
    /// [`Refusal::Fenced`] unless the token and the body name this subscription's current
    /// incarnation, generation and wake.
    pub fn check_fence(&self, fence: &Fence<'_>) -> Result<(), Refusal> {
        let Some(wake) = &self.wake else { return Err(Refusal::Fenced) };
        let current = fence.token_incarnation == self.incarnation
            && fence.token_generation == self.generation
            && fence.token_wake_id == wake.id
            && fence.generation == Some(self.generation)
            && fence.wake_id == Some(wake.id.as_str());
        if current { Ok(()) } else { Err(Refusal::Fenced) }
    }

    /// Applies acks (§7: last processed, inclusive), all or none: each names a linked stream,
    /// and its offset is neither below that stream's cursor (an equal one is a repeat) nor
    /// past its tail.
    ///
    /// # Errors
    /// [`Refusal::InvalidOffset`] for the first ack that breaks a rule (nothing applied);
    /// [`Refusal::Invalid`] for more than [`MAX_ACKS`].
    pub fn apply_acks(
        &mut self,
        acks: &[(String, Offset)],
        tails: &dyn Tails,
    ) -> Result<(), Refusal> {
        if acks.len() > MAX_ACKS {
            return Err(Refusal::Invalid("too many acks in one request"));
        }
        let mut next: Vec<(usize, Offset)> = Vec::with_capacity(acks.len());
        for (path, offset) in acks {
            let Some(i) = self.find(path) else {
                return Err(Refusal::InvalidOffset(
                    "ack names a stream this subscription does not link",
                ));
            };
            let cursor =
                next.iter().rev().find(|(j, _)| *j == i).map_or(self.links[i].acked, |(_, o)| *o);
            if *offset < cursor {
                return Err(Refusal::InvalidOffset(
                    "ack is before the stream's acknowledged offset",
                ));
            }
            if tails.tail(path).is_none_or(|t| *offset > t) {
                return Err(Refusal::InvalidOffset("ack is beyond the stream's tail"));
            }
            next.push((i, *offset));
        }
        for (i, offset) in next {
            self.links[i].acked = offset;
            self.links[i].provisional = false;
        }
        Ok(())
    }

    /// Ends the wake in flight and makes the next one if work is still pending.
    fn finish_wake(
        &mut self,
        tails: &dyn Tails,
        now_ms: u64,
        wake_id: impl FnOnce() -> String,
    ) -> Option<Woke> {
        let trigger = self.wake.take().map(|w| w.triggered_by).unwrap_or_default();
        self.wake_if_pending(tails, now_ms, &trigger, wake_id)
    }

    /// A webhook callback or a pull-wake ack (§7.1, §7.2), already fenced with
    /// [`Subscription::check_fence`]: applies the acks; with `done`, ends the wake (and
    /// releases the lease), else extends the lease (a heartbeat).
    ///
    /// # Errors
    /// As [`Subscription::apply_acks`]; nothing changes then.
    pub fn ack(
        &mut self,
        acks: &[(String, Offset)],
        done: bool,
        tails: &dyn Tails,
        now_ms: u64,
        wake_id: impl FnOnce() -> String,
    ) -> Result<Acked, Refusal> {
        self.apply_acks(acks, tails)?;
        if done {
            return Ok(Acked { next: self.finish_wake(tails, now_ms, wake_id) });
        }
        let ttl = self.config.lease_ttl_ms;
        if let Some(wake) = &mut self.wake {
            wake.lease_deadline_ms = Some(now_ms + ttl);
        }
        Ok(Acked { next: None })
    }

    /// A pull-wake release (§7.2), already fenced: ends the wake without acks; pending work
    /// makes the next one.
    pub fn release(
        &mut self,
        tails: &dyn Tails,
        now_ms: u64,
        wake_id: impl FnOnce() -> String,
    ) -> Option<Woke> {
        self.finish_wake(tails, now_ms, wake_id)
    }

    /// A pull-wake claim (§7.2): the wake in flight (or a new one, if work is pending and
    /// none is) now belongs to `worker`, under a lease from now. Returns the wake made, if
    /// one was.
    ///
    /// # Errors
    /// [`Refusal::AlreadyClaimed`] while a worker holds the lease; [`Refusal::NoPendingWork`]
    /// when nothing is pending.
    pub fn claim(
        &mut self,
        worker: &str,
        tails: &dyn Tails,
        now_ms: u64,
        wake_id: impl FnOnce() -> String,
    ) -> Result<Option<Woke>, Refusal> {
        if let Some(holder) = self.wake.as_ref().and_then(|w| w.holder.clone()) {
            return Err(Refusal::AlreadyClaimed { holder, generation: self.generation });
        }
        if !self.pending(tails) {
            // An unclaimed wake whose work went away (its stream was deleted) would block
            // every later wake: it ends here.
            self.wake = None;
            return Err(Refusal::NoPendingWork);
        }
        let woke = self.wake_if_pending(tails, now_ms, "", wake_id);
        let ttl = self.config.lease_ttl_ms;
        if let Some(wake) = &mut self.wake {
            wake.holder = Some(worker.to_owned());
            wake.lease_deadline_ms = Some(now_ms + ttl);
        }
        Ok(woke)
    }

    /// The lease of the wake in flight ended at `now_ms` (§7.3): the holder and the wake go,
    /// and pending work makes the next wake. `None` (and no change) if the lease has not
    /// ended or the wake is another one than `wake_id`.
    pub fn lease_expired(
        &mut self,
        expired_wake: &str,
        tails: &dyn Tails,
        now_ms: u64,
        wake_id: impl FnOnce() -> String,
    ) -> Option<Woke> {
        let wake = self.wake.as_ref()?;
        if wake.id != expired_wake || wake.lease_deadline_ms.is_none_or(|d| d > now_ms) {
            return None;
        }
        self.finish_wake(tails, now_ms, wake_id)
    }

    /// The outcome of delivering the wake `(generation, wake id)` by webhook. A late
    /// outcome for another wake changes nothing. `Done` acknowledges the wake's snapshot
    /// (each stream still linked, never past its current tail nor backwards) and ends the
    /// wake; `Accepted` leaves it to the worker's callback; `Failed` schedules a retry with
    /// backoff ([`retry_delay_ms`], `jitter` a random number). Returns the next wake made
    /// after `Done`, or the retry time after `Failed` (as a `Woke` of the same wake).
    pub fn delivered(
        &mut self,
        (generation, delivered_wake): (u64, &str),
        outcome: Delivered,
        tails: &dyn Tails,
        now_ms: u64,
        jitter: u64,
        wake_id: impl FnOnce() -> String,
    ) -> Option<Woke> {
        let current = self.generation == generation
            && self.wake.as_ref().is_some_and(|w| w.id == delivered_wake);
        if !current {
            return None;
        }
        match outcome {
            Delivered::Failed => {
                self.retry.attempts = self.retry.attempts.saturating_add(1);
                let at = now_ms + retry_delay_ms(self.retry.attempts, jitter);
                self.retry.next_attempt_at_ms = Some(at);
                Some(Woke {
                    generation,
                    wake_id: delivered_wake.to_owned(),
                    deliver_at_ms: Some(at),
                })
            }
            Delivered::Accepted => {
                self.retry = Retry::default();
                None
            }
            Delivered::Done => {
                self.retry = Retry::default();
                let snapshot = self.wake.as_ref().map(|w| w.snapshot.clone()).unwrap_or_default();
                for (path, tail) in snapshot {
                    let Some(i) = self.find(&path) else { continue };
                    let link = &mut self.links[i];
                    if tail > link.acked && tails.tail(&path).is_some_and(|t| tail <= t) {
                        link.acked = tail;
                        link.provisional = false;
                    }
                }
                self.finish_wake(tails, now_ms, wake_id)
            }
        }
    }

    /// `active`, or `failed` while a wake's webhook delivery has failed and a retry is
    /// pending (§6.3).
    #[must_use]
    pub fn status(&self) -> &'static str {
        if self.retry.attempts > 0 && self.wake.is_some() { "failed" } else { "active" }
    }
}

/// The delay before webhook attempt `attempts + 1`: 1 s doubling to 60 s, ±20% from
/// `jitter` (any random number).
#[must_use]
pub fn retry_delay_ms(attempts: u32, jitter: u64) -> u64 {
    let doubling = attempts.saturating_sub(1).min(16);
    let base = (RETRY_BASE_MS << doubling).min(RETRY_MAX_MS);
    let spread = base / 5;
    // jitter mod (2 × spread + 1) − spread, in −spread..=spread.
    base - spread + jitter % (2 * spread + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::collections::HashMap;

    fn at(pos: u64) -> Offset {
        Offset::at(pos)
    }

    /// Stream tails a test moves by hand.
    #[derive(Default)]
    struct World(HashMap<String, Offset>);

    impl World {
        fn with(streams: &[(&str, u64)]) -> World {
            World(streams.iter().map(|(p, t)| ((*p).to_owned(), at(*t))).collect())
        }
        fn set(&mut self, path: &str, tail: u64) -> Offset {
            self.0.insert(path.to_owned(), at(tail)).unwrap_or(Offset::ZERO)
        }
    }

    impl Tails for World {
        fn tail(&self, path: &str) -> Option<Offset> {
            self.0.get(path).copied()
        }
    }

    fn config(delivery: Delivery, pattern: Option<&str>, streams: &[&str]) -> Config {
        Config {
            delivery,
            pattern: pattern.map(|p| Pattern::parse(p).unwrap()),
            streams: streams.iter().map(|s| (*s).to_owned()).collect(),
            lease_ttl_ms: 1_000,
            description: None,
        }
    }

    fn webhook() -> Delivery {
        Delivery::Webhook { url: "https://example.com/hook".into() }
    }

    fn pull() -> Delivery {
        Delivery::PullWake { wake_stream: "wake/pool".into() }
    }

    fn ids() -> impl FnMut() -> String {
        let n = Cell::new(0);
        move || {
            n.set(n.get() + 1);
            format!("w_{:024x}", n.get())
        }
    }

    fn sub(
        delivery: Delivery,
        pattern: Option<&str>,
        streams: &[&str],
        world: &World,
    ) -> Subscription {
        let existing: Vec<(String, Offset)> =
            world.0.iter().map(|(p, t)| (p.clone(), *t)).collect();
        Subscription::new("s".into(), 7, config(delivery, pattern, streams), 0, world, existing)
    }

    /// Creation links explicit streams first, then the pattern's, merging the flags of a
    /// stream that is both, up to [`MAX_LINKS`]; adding streams later merges the same way
    /// and counts a path named twice once.
    #[test]
    fn many_links_merge_in_order_up_to_the_limit() {
        let mut streams: Vec<(String, u64)> =
            (0..MAX_LINKS + 5).map(|i| (format!("p/{i:05}"), 3)).collect();
        streams.push(("x".into(), 9));
        let world = World(streams.iter().map(|(p, t)| (p.clone(), at(*t))).collect());
        let mut existing: Vec<(String, Offset)> =
            streams.iter().map(|(p, t)| (p.clone(), at(*t))).collect();
        existing.sort();
        let s = Subscription::new(
            "s".into(),
            7,
            config(webhook(), Some("p/*"), &["p/00001", "x", "y"]),
            0,
            &world,
            existing,
        );
        assert_eq!(s.links.len(), MAX_LINKS);
        let first: Vec<(&str, bool, bool)> =
            s.links[..4].iter().map(|l| (l.path.as_str(), l.explicit, l.glob)).collect();
        assert_eq!(
            first,
            [
                ("p/00001", true, true),
                ("x", true, false),
                ("y", true, false),
                ("p/00000", false, true)
            ]
        );
        assert_eq!(s.links[3].acked, at(3), "at the stream's tail");
        assert_eq!(s.links[2].acked, Offset::ZERO, "y does not exist yet");
        assert_eq!(s.links.iter().filter(|l| l.path == "p/00001").count(), 1);

        let mut small = sub(webhook(), None, &["a"], &World::with(&[("a", 1), ("b", 2)]));
        let paths = ["b".to_owned(), "b".to_owned(), "a".to_owned()];
        small.add_streams(&paths, &World::with(&[("a", 1), ("b", 2)])).unwrap();
        let got: Vec<(&str, Offset)> =
            small.links.iter().map(|l| (l.path.as_str(), l.acked)).collect();
        assert_eq!(got, [("a", at(1)), ("b", at(2))]);
    }

    fn fence(s: &Subscription) -> Fence<'_> {
        let wake = s.wake.as_ref().unwrap();
        Fence {
            token_incarnation: s.incarnation,
            token_generation: s.generation,
            token_wake_id: &wake.id,
            generation: Some(s.generation),
            wake_id: Some(&wake.id),
        }
    }

    /// Regression (review): two first appends to a newly matching stream whose hooks ran
    /// in the other order linked it at the second one's start, skipping the first's data.
    #[test]
    fn first_appends_reported_out_of_order_skip_nothing() {
        let mut world = World::with(&[]);
        let mut s = sub(pull(), Some("e/*"), &[], &world);
        let mut next = ids();
        world.set("e/1", 20);
        // B (10..20) reports before A (0..10).
        s.appended("e/1", at(10), &world, 0, &mut next);
        assert_eq!(s.links[0].acked, at(10));
        s.appended("e/1", at(0), &world, 0, &mut next);
        assert_eq!(s.links[0].acked, at(0), "A's data is pending too");
        // Once acknowledged, a late report never moves the cursor back.
        let claim = s.claim("w", &world, 1, &mut next);
        assert!(claim.is_ok());
        s.apply_acks(&[("e/1".into(), at(15))], &world).unwrap();
        s.appended("e/1", at(5), &world, 2, &mut next);
        assert_eq!(s.links[0].acked, at(15));
    }

    /// Regression (review): a stream linked explicitly before it existed, then matched by
    /// the pattern through appends, lost its link (and cursor) when the explicit link was
    /// removed (§6.4: the glob link remains).
    #[test]
    fn removing_an_explicit_link_keeps_a_matching_stream_linked() {
        let mut world = World::with(&[]);
        let mut s = sub(pull(), Some("e/*"), &["e/1", "x"], &world);
        world.set("e/1", 10);
        s.appended("e/1", at(0), &world, 0, ids());
        s.remove_stream("e/1");
        s.remove_stream("x");
        let links: Vec<(&str, &str)> =
            s.links.iter().map(|l| (l.path.as_str(), l.link_type())).collect();
        assert_eq!(links, [("e/1", "glob")], "the matching stream stays, by glob");
        assert_eq!(s.links[0].acked, Offset::ZERO, "with its cursor");
    }

    /// Regression (review): an unclaimed pull-wake wake whose work went away blocked every
    /// later wake (no lease ends it).
    #[test]
    fn a_claim_with_no_work_ends_a_stale_unclaimed_wake() {
        let mut world = World::with(&[]);
        let mut s = sub(pull(), Some("e/*"), &[], &world);
        let mut next = ids();
        world.set("e/1", 10);
        assert!(s.appended("e/1", at(0), &world, 0, &mut next).is_some());
        world.0.remove("e/1");
        s.stream_removed("e/1");
        assert_eq!(s.claim("w", &world, 1, &mut next), Err(Refusal::NoPendingWork));
        assert!(s.wake.is_none());
        world.set("e/2", 5);
        assert!(s.appended("e/2", at(0), &world, 2, &mut next).is_some(), "new work wakes");
    }

    /// `failed` only while a wake waits for a retry: a wake ending with nothing pending
    /// leaves the subscription `active`.
    #[test]
    fn status_is_failed_only_while_a_retry_is_pending() {
        let mut world = World::with(&[]);
        let mut s = sub(webhook(), Some("e/*"), &[], &world);
        let mut next = ids();
        world.set("e/1", 10);
        let woke = s.appended("e/1", at(0), &world, 0, &mut next).unwrap();
        s.delivered((woke.generation, &woke.wake_id), Delivered::Failed, &world, 1, 0, &mut next);
        assert_eq!(s.status(), "failed");
        s.ack(&[("e/1".into(), at(10))], true, &world, 2, &mut next).unwrap();
        assert_eq!(s.status(), "active", "nothing pending, no retry");
    }

    #[test]
    fn creation_links_matching_streams_and_explicit_ones_at_their_tails() {
        let world =
            World::with(&[("events/a", 40), ("events/b/c", 9), ("other", 5), ("manual/x", 12)]);
        let s =
            sub(webhook(), Some("events/*"), &["manual/x", "manual/missing", "events/a"], &world);
        let links: Vec<(&str, &str, u64)> =
            s.links.iter().map(|l| (l.path.as_str(), l.link_type(), l.acked.pos())).collect();
        assert_eq!(
            links,
            [
                ("manual/x", "explicit", 12),
                ("manual/missing", "explicit", 0),
                ("events/a", "explicit", 40)
            ]
        );
        assert!(s.links[2].glob, "linked both ways, shown as explicit");
        assert!(!s.pending(&world), "creation replays no history");
        assert!(s.wake.is_none() && s.generation == 0);
    }

    #[test]
    fn a_first_matching_append_links_the_stream_before_it_and_wakes_once() {
        let mut world = World::default();
        let mut s = sub(webhook(), Some("events/*"), &[], &world);
        let mut next = ids();
        let before = world.set("events/new", 30);
        let woke = s.appended("events/new", before, &world, 100, &mut next).unwrap();
        assert_eq!((woke.generation, woke.deliver_at_ms), (1, Some(100)));
        assert_eq!(s.links[0].acked, Offset::ZERO, "the append itself is pending");
        let wake = s.wake.clone().unwrap();
        assert_eq!(wake.snapshot, vec![("events/new".to_owned(), at(30))]);
        assert_eq!(wake.lease_deadline_ms, Some(1_100), "a webhook lease starts with the wake");
        let before = world.set("events/new", 50);
        assert_eq!(
            s.appended("events/new", before, &world, 101, &mut next),
            None,
            "one wake in flight"
        );
        let before = world.set("unrelated", 5);
        assert_eq!(s.appended("unrelated", before, &world, 102, &mut next), None);
        assert_eq!(s.links.len(), 1);
    }

    #[test]
    fn a_fork_or_a_late_match_starts_at_its_tail_before_the_append() {
        let mut world = World::with(&[("events/fork", 500)]);
        let mut s = sub(webhook(), Some("other/*"), &[], &world);
        s.config.pattern = Some(Pattern::parse("events/*").unwrap());
        let before = world.set("events/fork", 520);
        s.appended("events/fork", before, &world, 1, ids()).unwrap();
        assert_eq!(s.links[0].acked, at(500), "inherited data is not pending");
    }

    #[test]
    fn fencing_refuses_any_stale_part() {
        let mut world = World::default();
        let mut s = sub(webhook(), Some("e/*"), &[], &world);
        assert_eq!(
            s.check_fence(&Fence {
                token_incarnation: 7,
                token_generation: 0,
                token_wake_id: "",
                generation: Some(0),
                wake_id: None
            }),
            Err(Refusal::Fenced),
            "no wake in flight"
        );
        let before = world.set("e/1", 10);
        s.appended("e/1", before, &world, 0, ids()).unwrap();
        let good = fence(&s);
        assert_eq!(s.check_fence(&good), Ok(()));
        for bad in [
            Fence { token_incarnation: 8, ..good.clone() },
            Fence { token_generation: 0, ..good.clone() },
            Fence { token_wake_id: "w_other", ..good.clone() },
            Fence { generation: Some(2), ..good.clone() },
            Fence { generation: None, ..good.clone() },
            Fence { wake_id: Some("w_other"), ..good.clone() },
            Fence { wake_id: None, ..good.clone() },
        ] {
            assert_eq!(s.check_fence(&bad), Err(Refusal::Fenced), "{bad:?}");
        }
    }

    #[test]
    fn acks_are_inclusive_bounded_and_all_or_nothing() {
        let world = World::with(&[("a", 10), ("b", 20)]);
        let mut s = sub(pull(), None, &["a", "b"], &world);
        s.links[0].acked = at(2);
        s.links[1].acked = at(3);
        let ack = |p: &str, o: u64| (p.to_owned(), at(o));
        for (acks, why) in [
            (vec![ack("c", 1)], "ack names a stream this subscription does not link"),
            (vec![ack("a", 1)], "ack is before the stream's acknowledged offset"),
            (vec![ack("a", 11)], "ack is beyond the stream's tail"),
            (vec![ack("a", 5), ack("a", 4)], "ack is before the stream's acknowledged offset"),
            (vec![ack("a", 5), ack("b", 21)], "ack is beyond the stream's tail"),
        ] {
            assert_eq!(s.apply_acks(&acks, &world), Err(Refusal::InvalidOffset(why)), "{acks:?}");
            assert_eq!((s.links[0].acked, s.links[1].acked), (at(2), at(3)), "nothing applied");
        }
        assert_eq!(s.apply_acks(&[ack("a", 2), ack("b", 20)], &world), Ok(()), "a repeat is fine");
        assert_eq!((s.links[0].acked, s.links[1].acked), (at(2), at(20)));
        let many = vec![ack("a", 2); MAX_ACKS + 1];
        assert!(matches!(s.apply_acks(&many, &world), Err(Refusal::Invalid(_))));
    }

    #[test]
    fn done_ends_the_wake_and_only_newer_data_wakes_again() {
        let mut world = World::default();
        let mut s = sub(webhook(), Some("e/*"), &[], &world);
        let mut next = ids();
        let before = world.set("e/1", 10);
        s.appended("e/1", before, &world, 0, &mut next).unwrap();
        let acked = s.ack(&[("e/1".into(), at(10))], true, &world, 5, &mut next).unwrap();
        assert_eq!(acked.next, None);
        assert!(s.wake.is_none());
        // Data after the snapshot: done brings the next wake at once.
        let before = world.set("e/1", 15);
        let woke = s.appended("e/1", before, &world, 6, &mut next).unwrap();
        world.set("e/1", 25);
        let acked = s.ack(&[("e/1".into(), at(15))], true, &world, 7, &mut next).unwrap();
        let again = acked.next.unwrap();
        assert_eq!(again.generation, woke.generation + 1);
        assert_ne!(again.wake_id, woke.wake_id);
        assert_eq!(s.wake.as_ref().unwrap().snapshot, vec![("e/1".to_owned(), at(25))]);
    }

    #[test]
    fn a_heartbeat_extends_the_lease_and_expiry_wakes_again() {
        let mut world = World::default();
        let mut s = sub(webhook(), Some("e/*"), &[], &world);
        let mut next = ids();
        let before = world.set("e/1", 10);
        let first = s.appended("e/1", before, &world, 0, &mut next).unwrap();
        s.ack(&[], false, &world, 800, &mut next).unwrap();
        assert_eq!(s.wake.as_ref().unwrap().lease_deadline_ms, Some(1_800));
        assert_eq!(s.lease_expired(&first.wake_id, &world, 1_500, &mut next), None, "not yet");
        assert_eq!(s.lease_expired("w_other", &world, 2_000, &mut next), None, "another wake");
        let second = s.lease_expired(&first.wake_id, &world, 1_800, &mut next).unwrap();
        assert_eq!(second.generation, 2, "still pending: a new generation");
    }

    #[test]
    fn claims_hold_the_lease_and_release_hands_the_work_on() {
        let mut world = World::default();
        let mut s = sub(pull(), Some("e/*"), &[], &world);
        let mut next = ids();
        assert_eq!(s.claim("w1", &world, 0, &mut next), Err(Refusal::NoPendingWork));
        let before = world.set("e/1", 10);
        let woke = s.appended("e/1", before, &world, 0, &mut next).unwrap();
        assert_eq!(woke.deliver_at_ms, None, "pull-wake: a wake event, no delivery");
        assert_eq!(s.wake.as_ref().unwrap().lease_deadline_ms, None, "no lease until a claim");
        assert_eq!(s.claim("w1", &world, 50, &mut next), Ok(None), "takes the wake in flight");
        assert_eq!(s.wake.as_ref().unwrap().lease_deadline_ms, Some(1_050));
        assert_eq!(
            s.claim("w2", &world, 60, &mut next),
            Err(Refusal::AlreadyClaimed { holder: "w1".into(), generation: 1 })
        );
        let woke = s.release(&world, 70, &mut next).unwrap();
        assert_eq!(woke.generation, 2, "released with work pending: the next wake");
        assert_eq!(s.wake.as_ref().unwrap().holder, None);
        // A claim with no wake in flight makes one.
        s.ack(&[("e/1".into(), at(10))], true, &world, 80, &mut next).unwrap();
        let before = world.set("e/1", 12);
        s.appended("e/1", before, &world, 90, &mut next).unwrap();
        s.wake = None;
        let made = s.claim("w2", &world, 95, &mut next).unwrap().unwrap();
        assert_eq!(made.generation, s.generation);
        assert_eq!(s.wake.as_ref().unwrap().holder.as_deref(), Some("w2"));
    }

    /// Regression (the reference server): a late `{done:true}` for an older wake finished the
    /// newer one. Outcomes now name their wake.
    #[test]
    fn a_late_delivery_outcome_changes_nothing() {
        let mut world = World::default();
        let mut s = sub(webhook(), Some("e/*"), &[], &world);
        let mut next = ids();
        let before = world.set("e/1", 10);
        let old = s.appended("e/1", before, &world, 0, &mut next).unwrap();
        world.set("e/1", 20);
        let new = s.lease_expired(&old.wake_id, &world, 1_000, &mut next).unwrap();
        let late = s.delivered(
            (old.generation, &old.wake_id),
            Delivered::Done,
            &world,
            1_001,
            0,
            &mut next,
        );
        assert_eq!(late, None);
        assert_eq!(s.wake.as_ref().unwrap().id, new.wake_id, "the newer wake is still in flight");
        assert_eq!(s.links[0].acked, Offset::ZERO, "and nothing was acknowledged");
    }

    #[test]
    fn done_acks_the_snapshot_never_past_the_tail() {
        let mut world = World::default();
        let mut s = sub(webhook(), Some("e/*"), &["x"], &world);
        let mut next = ids();
        let before = world.set("e/1", 10);
        let w = s.appended("e/1", before, &world, 0, &mut next).unwrap();
        world.set("e/1", 30);
        let after =
            s.delivered((w.generation, &w.wake_id), Delivered::Done, &world, 5, 0, &mut next);
        assert_eq!(s.links.iter().find(|l| l.path == "e/1").unwrap().acked, at(10));
        assert_eq!(after.unwrap().generation, 2, "data after the snapshot wakes again");
        // A stream deleted and re-created shorter: its snapshot tail is not applied.
        let w = s.wake.clone().unwrap();
        s.stream_removed("e/1");
        world.set("e/1", 3);
        s.link("e/1", false, Offset::ZERO);
        s.delivered((2, &w.id), Delivered::Done, &world, 6, 0, &mut next);
        assert_eq!(s.links.iter().find(|l| l.path == "e/1").unwrap().acked, Offset::ZERO);
    }

    #[test]
    fn failures_back_off_and_carry_over_until_a_success() {
        let mut world = World::default();
        let mut s = sub(webhook(), Some("e/*"), &[], &world);
        let mut next = ids();
        let before = world.set("e/1", 10);
        let w = s.appended("e/1", before, &world, 0, &mut next).unwrap();
        let r1 =
            s.delivered((1, &w.wake_id), Delivered::Failed, &world, 100, 0, &mut next).unwrap();
        let r2 =
            s.delivered((1, &w.wake_id), Delivered::Failed, &world, 200, 0, &mut next).unwrap();
        assert_eq!((r1.deliver_at_ms, r2.deliver_at_ms), (Some(100 + 800), Some(200 + 1_600)));
        assert_eq!((s.status(), s.retry.attempts), ("failed", 2));
        // The lease ends while retrying: the next wake waits for the backoff too.
        let w2 = s.lease_expired(&w.wake_id, &world, 1_000, &mut next).unwrap();
        assert_eq!(w2.deliver_at_ms, Some(1_800));
        s.delivered((2, &w2.wake_id), Delivered::Accepted, &world, 1_900, 0, &mut next);
        assert_eq!((s.status(), s.retry.next_attempt_at_ms), ("active", None));
    }

    #[test]
    fn removing_links_and_streams() {
        let world = World::with(&[("e/1", 10), ("m", 4)]);
        let mut s = sub(webhook(), Some("e/*"), &["e/1", "m"], &world);
        s.remove_stream("e/1");
        assert_eq!(s.links[0].link_type(), "glob", "the glob link stays");
        s.remove_stream("m");
        s.remove_stream("m");
        assert_eq!(s.links.len(), 1);
        s.add_streams(&["m".into(), "m".into()], &world).unwrap();
        assert_eq!(s.links.len(), 2);
        s.stream_removed("e/1");
        s.stream_removed("m");
        assert_eq!(s.links.len(), 1, "a glob-only link goes with its stream");
        assert_eq!((s.links[0].path.as_str(), s.links[0].acked), ("m", Offset::ZERO));
    }

    #[test]
    fn retry_delays_double_to_a_minute_within_a_fifth() {
        for attempts in 1..40u32 {
            let base = (1_000u64 << (attempts - 1).min(16)).min(60_000);
            for jitter in [0, 1, 7, u64::MAX, 123_456_789] {
                let d = retry_delay_ms(attempts, jitter);
                assert!(d >= base - base / 5 && d <= base + base / 5, "{attempts} {jitter} {d}");
            }
        }
    }
}
