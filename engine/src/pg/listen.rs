//! Live readers across nodes: a node that commits publishes the new tails with `NOTIFY`
//! (after the commit, outside its transaction, coalesced over a few milliseconds), and
//! every node `LISTEN`s and wakes its own long-poll and SSE readers.
//!
//! A notification only wakes readers; they read the data from the database. So a lost one
//! delays a reader and never loses data: after the listening connection is (re)made, and
//! every [`RESYNC`] while it is, the tails of every stream this node's readers watch are read
//! again; while it is down they are read every [`RESYNC_DOWN`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio_postgres::{AsyncMessage, NoTls};

use super::{Shared, describe, u};

/// The notification channel of tails.
const CHANNEL: &str = "ds_tails";
/// The notification channel of subscriptions (see [`super::subs`]).
pub(crate) const SUBS_CHANNEL: &str = "ds_subs";
/// How long a node gathers new tails before it sends them in one notification.
const COALESCE: Duration = Duration::from_millis(2);
/// Largest payload of one notification (PostgreSQL's limit is 8000 bytes).
const PAYLOAD_BYTES: usize = 7000;
/// How often, while the listening connection is up, it is probed (a dead peer is noticed
/// and the connection made again), the database's answer clears a failed round's mark on
/// `/readyz`, and the sliding TTLs of streams watched here are renewed (watched is not idle,
/// §5.1, whichever node sweeps them).
const TICK: Duration = Duration::from_secs(1);
/// Every this many ticks, watched tails are read again (a safety net for a notification its
/// sender never managed to send).
const RESYNC_TICKS: u32 = 5;
/// How often they are read again while it is down.
const RESYNC_DOWN: Duration = Duration::from_millis(500);

/// A stream's new state, as a notification carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Change {
    pub(crate) incarnation: u64,
    pub(crate) tail: u64,
    pub(crate) closed: bool,
    /// Deleted, expired or soft-deleted: its readers stop.
    pub(crate) gone: bool,
    /// Where the stream's own data starts (a fork's fork point, else 0) and the tag the
    /// source gives that point: what subscriptions need to link it and tag its offsets.
    pub(crate) start: u64,
    pub(crate) start_tag: u32,
}

impl Change {
    /// The state `info` describes.
    pub(crate) fn of(info: &crate::store::StreamInfo) -> Change {
        let (start, start_tag) = info.fork.as_ref().map_or((0, 0), |f| (f.at, f.at_tag));
        Change {
            incarnation: info.incarnation,
            tail: info.tail.pos(),
            closed: info.closed,
            gone: false,
            start,
            start_tag,
        }
    }

    /// Incarnation `incarnation` is gone.
    pub(crate) fn gone(incarnation: u64) -> Change {
        Change { incarnation, tail: 0, closed: false, gone: true, start: 0, start_tag: 0 }
    }

    /// How the stream tags its offsets.
    pub(crate) fn lineage(&self) -> crate::offset::Lineage {
        let fork = (self.start > 0).then_some((self.start, self.start_tag));
        crate::offset::Lineage::new(self.incarnation, fork)
    }
}

/// A range of a stream's data: (incarnation, from, to).
type Range = (u64, u64, u64);

/// The byte ranges this node's wake events took in each stream (by incarnation), recorded
/// by the committer before the commit is announced, so before any notification can show
/// them, while this node runs the subscriptions: the data that wakes no subscription.
#[derive(Debug, Default)]
pub(crate) struct QuietRanges {
    ranges: Mutex<HashMap<Arc<str>, Vec<Range>>>,
    /// Recording (this node leads).
    on: std::sync::atomic::AtomicBool,
}

impl QuietRanges {
    /// Starts (or stops and forgets) recording.
    pub(crate) fn record_from_now(&self, on: bool) {
        self.on.store(on, std::sync::atomic::Ordering::Release);
        if !on {
            self.lock().clear();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Vec<Range>>> {
        self.ranges.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A wake event took `from..to` of incarnation `incarnation` of `name`.
    pub(crate) fn record(&self, name: &Arc<str>, incarnation: u64, from: u64, to: u64) {
        if from < to && self.on.load(std::sync::atomic::Ordering::Acquire) {
            self.lock().entry(name.clone()).or_default().push((incarnation, from, to));
        }
    }

    /// Whether `from..to` of incarnation `incarnation` of `name` holds only wake events;
    /// forgets the ranges it is done with (below `to`, or of other incarnations).
    pub(crate) fn covers(&self, name: &str, incarnation: u64, from: u64, to: u64) -> bool {
        let mut map = self.lock();
        let Some(ranges) = map.get_mut(name) else { return false };
        ranges.retain(|&(inc, _, _)| inc == incarnation);
        ranges.sort_unstable();
        let mut at = from;
        for &(_, a, b) in ranges.iter() {
            if a > at {
                break;
            }
            at = at.max(b);
        }
        ranges.retain(|&(_, _, b)| b > to);
        if ranges.is_empty() {
            map.remove(name);
        }
        at >= to
    }
}

/// What this node's subscriptions hear of the streams (when they ask to: the subscription
/// leader does): every change any node announced, in the order they arrive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Feed {
    /// A stream's new state.
    Change(Arc<str>, Change),
    /// The listening connection was (re)made: changes may have been missed.
    Resynced,
}

/// The tails committed on this node and not yet announced.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    pending: Mutex<HashMap<Arc<str>, Change>>,
    wake: Notify,
}

impl Outbox {
    /// Queues `change` of `name` for the next notification (a later change of the same
    /// stream replaces it).
    pub(crate) fn push(&self, name: &Arc<str>, change: Change) {
        let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // A removal is never replaced by a state of the same (or an older) incarnation that
        // was committed before it and announced after.
        let keep = pending
            .get(name)
            .is_some_and(|h| h.gone && !change.gone && change.incarnation <= h.incarnation);
        if !keep {
            pending.insert(name.clone(), change);
        }
        drop(pending);
        self.wake.notify_one();
    }

    fn take(&self) -> HashMap<Arc<str>, Change> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

/// Encodes changes as notification payloads of at most [`PAYLOAD_BYTES`]: JSON arrays of
/// `[incarnation, tail, closed, gone, name, start, start_tag]`. A name too long for one
/// payload is left out (its readers find out at the next resync).
pub(crate) fn encode(changes: &HashMap<Arc<str>, Change>) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::from("[");
    for (name, c) in changes {
        let entry = serde_json::json!([
            c.incarnation,
            c.tail,
            c.closed,
            c.gone,
            &**name,
            c.start,
            c.start_tag
        ])
        .to_string();
        if entry.len() + 2 > PAYLOAD_BYTES {
            continue;
        }
        if current.len() + entry.len() + 2 > PAYLOAD_BYTES {
            current.push(']');
            out.push(std::mem::replace(&mut current, String::from("[")));
        }
        if current.len() > 1 {
            current.push(',');
        }
        current.push_str(&entry);
    }
    if current.len() > 1 {
        current.push(']');
        out.push(current);
    }
    out
}

/// Decodes a payload; `None` for one this build does not understand. Entries without
/// start (as the first postgres-mode build wrote them: a node of that build may still run
/// during an upgrade) read as starting at 0.
pub(crate) fn decode(payload: &str) -> Option<Vec<(String, Change)>> {
    use serde_json::Value;
    let entries: Vec<Vec<Value>> = serde_json::from_str(payload).ok()?;
    entries
        .into_iter()
        .map(|e| {
            if e.len() != 5 && e.len() != 7 {
                return None;
            }
            let (start, start_tag) = if e.len() == 7 {
                (e[5].as_u64()?, u32::try_from(e[6].as_u64()?).ok()?)
            } else {
                (0, 0)
            };
            let change = Change {
                incarnation: e[0].as_u64()?,
                tail: e[1].as_u64()?,
                closed: e[2].as_bool()?,
                gone: e[3].as_bool()?,
                start,
                start_tag,
            };
            Some((e[4].as_str()?.to_owned(), change))
        })
        .collect()
}

/// Sends the outbox's changes until the store is dropped.
pub(crate) async fn send(shared: std::sync::Weak<Shared>, outbox: Arc<Outbox>) {
    loop {
        outbox.wake.notified().await;
        tokio::time::sleep(COALESCE).await;
        let Some(shared) = shared.upgrade() else { return };
        let changes = outbox.take();
        if changes.is_empty() {
            continue;
        }
        let sent = async {
            let client = shared.pool.get().await.map_err(|e| e.to_string())?;
            for payload in encode(&changes) {
                client
                    .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
                    .await
                    .map_err(|e| describe(&e))?;
            }
            Ok::<(), String>(())
        };
        if let Err(e) = sent.await {
            tracing::debug!(error = %e, "tail notification not sent; readers elsewhere resync");
        }
    }
}

/// Listens for other nodes' tails until the store is dropped, reconnecting as needed.
pub(crate) async fn listen(shared: std::sync::Weak<Shared>, config: tokio_postgres::Config) {
    let config = super::named(config, "listen");
    let mut delay = Duration::from_millis(100);
    loop {
        let Some(strong) = shared.upgrade() else { return };
        drop(strong);
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let (tx, mut rx) = mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    loop {
                        let message = std::future::poll_fn(|cx| connection.poll_message(cx)).await;
                        match message {
                            Some(Ok(AsyncMessage::Notification(n))) => {
                                let subs = n.channel() == SUBS_CHANNEL;
                                if tx.send((subs, n.payload().to_owned())).is_err() {
                                    return;
                                }
                            }
                            Some(Ok(_)) => {}
                            Some(Err(e)) => {
                                tracing::warn!(error = %describe(&e), "listening connection lost");
                                return;
                            }
                            None => return,
                        }
                    }
                });
                let listening = format!("LISTEN {CHANNEL}; LISTEN {SUBS_CHANNEL}");
                if let Err(e) = client.batch_execute(&listening).await {
                    tracing::warn!(error = %describe(&e), "LISTEN failed");
                    driver.abort();
                } else {
                    delay = Duration::from_millis(100);
                    set_listening(&shared, true);
                    // Anything committed elsewhere while nobody listened.
                    resync(&shared).await;
                    if let Some(shared) = shared.upgrade() {
                        shared.feed(Feed::Resynced);
                    }
                    let mut tick = tokio::time::interval(TICK);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    let mut ticks = 0u32;
                    loop {
                        tokio::select! {
                            next = rx.recv() => {
                                let Some(shared) = shared.upgrade() else { return };
                                match next {
                                    Some((true, payload)) => {
                                        let _ = shared.signals.send(payload);
                                    }
                                    Some((false, payload)) => apply(&shared, &payload),
                                    None => break,
                                }
                            }
                            _ = tick.tick() => {
                                let probe = client.simple_query("SELECT 1");
                                let alive = tokio::time::timeout(Duration::from_secs(5), probe)
                                    .await
                                    .is_ok_and(|r| r.is_ok());
                                if !alive {
                                    tracing::warn!("listening connection stopped answering");
                                    break;
                                }
                                let Some(shared) = shared.upgrade() else { return };
                                shared.failing.store(false, std::sync::atomic::Ordering::Relaxed);
                                renew_watched(&shared).await;
                                ticks += 1;
                                if ticks.is_multiple_of(RESYNC_TICKS) {
                                    resync_with(&shared).await;
                                }
                            }
                        }
                    }
                    driver.abort();
                    set_listening(&shared, false);
                }
            }
            Err(e) => {
                tracing::warn!(error = %describe(&e), "cannot open the listening connection");
            }
        }
        // Down: readers here re-check their tails until the connection is back.
        let until = tokio::time::Instant::now() + delay;
        while tokio::time::Instant::now() < until {
            tokio::time::sleep(RESYNC_DOWN.min(delay)).await;
            resync(&shared).await;
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

fn set_listening(shared: &std::sync::Weak<Shared>, up: bool) {
    if let Some(shared) = shared.upgrade() {
        shared.listening.store(up, std::sync::atomic::Ordering::Relaxed);
    }
}

fn apply(shared: &Shared, payload: &str) {
    let Some(changes) = decode(payload) else {
        tracing::debug!("ignoring a tail notification this build does not understand");
        return;
    };
    for (name, change) in changes {
        shared.advance(&name, &change);
        shared.feed(Feed::Change(Arc::from(name), change));
    }
}

/// Renews the sliding TTL of every stream this node's live readers watch.
async fn renew_watched(shared: &Shared) {
    let watched = shared.watched_names();
    if watched.is_empty() {
        return;
    }
    let names: Vec<&str> = watched.iter().map(|(n, _)| &**n).collect();
    let now = super::i(shared.clock.now_ms());
    let renewed = async {
        let client = shared.pool.get().await.map_err(|e| e.to_string())?;
        client
            .execute(
                "UPDATE ds_streams SET last_access_ms = $2 \
                 WHERE name = ANY($1) AND ttl_secs IS NOT NULL AND last_access_ms < $2",
                &[&names, &now],
            )
            .await
            .map_err(|e| describe(&e))
    };
    if let Err(e) = renewed.await {
        tracing::debug!(error = %e, "watched streams' TTLs not renewed");
    }
}

async fn resync(shared: &std::sync::Weak<Shared>) {
    if let Some(shared) = shared.upgrade() {
        resync_with(&shared).await;
    }
}

/// Reads the tails of every stream this node's readers watch, and wakes them if they moved.
async fn resync_with(shared: &Shared) {
    let watched = shared.watched_names();
    if watched.is_empty() {
        return;
    }
    let read = async {
        let client = shared.pool.get().await.map_err(|e| e.to_string())?;
        let names: Vec<&str> = watched.iter().map(|(n, _)| &**n).collect();
        let rows = client
            .query(
                "SELECT name, incarnation, tail, closed, soft_deleted FROM ds_streams \
                 WHERE name = ANY($1)",
                &[&names],
            )
            .await
            .map_err(|e| describe(&e))?;
        Ok::<_, String>(rows)
    };
    let rows = match read.await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::debug!(error = %e, "tail resync failed");
            return;
        }
    };
    let mut seen: HashMap<String, Change> = HashMap::new();
    for r in rows {
        let change = Change {
            incarnation: u(r.get(1)),
            tail: u(r.get(2)),
            closed: r.get(3),
            gone: r.get(4),
            ..Change::gone(0)
        };
        seen.insert(r.get(0), change);
    }
    for (name, incarnation) in watched {
        match seen.get(&*name) {
            Some(change) => shared.advance(&name, change),
            None => {
                shared.advance(&name, &Change::gone(incarnation));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(incarnation: u64, tail: u64, gone: bool) -> Change {
        Change { incarnation, tail, closed: false, gone, start: 0, start_tag: 0 }
    }

    /// Review finding: a round that committed just before a delete announced its tail after
    /// the delete's removal, replacing it; other nodes never heard the stream was gone.
    #[test]
    fn a_removal_is_not_replaced_by_an_older_state() {
        let outbox = Outbox::default();
        let name: Arc<str> = Arc::from("s");
        outbox.push(&name, change(7, 0, true));
        outbox.push(&name, change(7, 40, false));
        assert_eq!(outbox.take()[&name], change(7, 0, true));
        // A new incarnation of the name is news.
        outbox.push(&name, change(7, 0, true));
        outbox.push(&name, change(8, 3, false));
        assert_eq!(outbox.take()[&name], change(8, 3, false));
    }

    #[test]
    fn payloads_round_trip_and_stay_under_the_limit() {
        let mut changes = HashMap::new();
        for i in 0..400u64 {
            changes.insert(
                Arc::from(format!("stream/{i}/\"quoted\"\n").as_str()),
                change(i, i * 3, i % 2 == 0),
            );
        }
        let payloads = encode(&changes);
        assert!(payloads.len() > 1, "split into several notifications");
        let mut back = HashMap::new();
        for p in &payloads {
            assert!(p.len() <= PAYLOAD_BYTES);
            for (name, c) in decode(p).expect("decodes") {
                back.insert(Arc::from(name.as_str()), c);
            }
        }
        assert_eq!(back, changes);
        assert_eq!(decode("not json"), None);
    }
}
